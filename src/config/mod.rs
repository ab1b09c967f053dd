//! The node's configuration, resolved in one place and handed to each stage in its own section.
//!
//! ```text
//! command-line flags (flags.rs) -> declared parameters with those as defaults (params.rs)
//!   -> parameter files -> `--ros-args -p` overrides (ros::params) -> validate() (validate.rs)
//!   -> NodeConfig: source | calibration | backbone | heads | ros | sinks | pipeline
//! ```
//!
//! Only the composition root (`cli/run.rs`) sees the whole [`NodeConfig`]; each stage is built
//! from its own section and never reads flags or parameters itself. What a parameter change
//! does while the node runs is in [`live`].

pub mod flags;
pub mod live;
pub mod params;
pub mod share;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use flags::{BackboneFlags, RunFlags};

use crate::backend::settings::BackendSettings;
use crate::heads::loader::HeadsConfig;
use crate::heads::manifest::Task;
use crate::model::InputSize;
use crate::pipeline::PipelineOptions;
use crate::preprocess::ResizeMode;
use crate::ros::args::RosArgs;
use crate::ros::node::{NodeSettings, RosError};
use crate::ros::params::{ParamError, ParamTable, ParameterValue};
use crate::source::{SourceSettings, SourceSpec};

/// A configuration that cannot run; the message names the flag, parameter or variable and the
/// fix. Always bad input (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A command-line flag or a combination of settings.
    #[error("{0}")]
    Usage(String),
    /// A parameter (file, `-p`, or a flag's value as its default).
    #[error(transparent)]
    Param(#[from] ParamError),
    /// ROS names, remaps or environment (boxed: the variant is large).
    #[error(transparent)]
    Ros(Box<RosError>),
}

impl From<RosError> for ConfigError {
    fn from(e: RosError) -> Self {
        ConfigError::Ros(Box::new(e))
    }
}

/// The process environment the node reads, injectable for tests.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    /// `ROS_DOMAIN_ID`, `ROS_LOCALHOST_ONLY`, `ROS_AUTOMATIC_DISCOVERY_RANGE`,
    /// `ROS_SECURITY_ENABLE`, `ROS_SECURITY_STRATEGY`.
    pub vars: BTreeMap<String, String>,
}

impl NodeEnv {
    /// From this process's environment.
    pub fn from_process() -> Self {
        let vars = [
            "ROS_DOMAIN_ID",
            "ROS_LOCALHOST_ONLY",
            "ROS_AUTOMATIC_DISCOVERY_RANGE",
            "ROS_SECURITY_ENABLE",
            "ROS_SECURITY_STRATEGY",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
        NodeEnv { vars }
    }
}

/// The backbone: which model, how frames are fitted to it, where it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneConfig {
    /// Backbone ONNX (the bundled demo model when none was given).
    pub model: PathBuf,
    /// Whether `model` is the bundled demo model.
    pub bundled: bool,
    /// Input size for dynamic models (fixed models use their own).
    pub input_size: Option<InputSize>,
    /// How frames are fitted to the input.
    pub resize: ResizeMode,
    /// Where and how it runs.
    pub backend: BackendSettings,
}

impl BackboneConfig {
    /// The backbone of an offline command (`predict`, `features`, `bank build`): `model` with
    /// the flags, defaults as the node's.
    pub fn from_flags(model: PathBuf, flags: &BackboneFlags) -> Result<Self, ConfigError> {
        validate::backbone_from_flags(model, flags)
    }
}

/// The camera calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationConfig {
    /// camera_info YAML; `None`: the synthetic camera for the synthetic source, else none.
    pub file: Option<PathBuf>,
    /// Undistort frames before the backbone.
    pub undistort: bool,
}

/// One run-time setting of a head given by the user (e.g. `detection.score_threshold`).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSetting {
    /// The head.
    pub task: Task,
    /// Setting name.
    pub name: &'static str,
    /// Value.
    pub value: f64,
}

/// The task heads.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadsSection {
    /// What to load; `None`: no heads at all (`heads_enabled:=false`, `--no-heads`).
    pub load: Option<HeadsConfig>,
    /// `heads.<name>.enabled` at start.
    pub enabled: BTreeMap<Task, bool>,
    /// `heads.<name>.rate_hz` at start.
    pub rate_hz: BTreeMap<Task, f64>,
    /// `<head>.<setting>` values the user gave.
    pub settings: Vec<HeadSetting>,
}

/// The ROS 2 node and its publishing switches.
#[derive(Debug, Clone, PartialEq)]
pub struct RosConfig {
    /// Join the ROS graph (false: `--no-ros`).
    pub enabled: bool,
    /// Name, namespace, remaps, domain, QoS choices.
    pub node: NodeSettings,
    /// Publish dinov3/debug_image.
    pub debug_image: bool,
    /// Publish dinov3/points.
    pub points_enabled: bool,
    /// Point cloud pixel stride.
    pub points_stride: usize,
    /// Colour the points.
    pub points_rgb: bool,
}

/// The sinks besides ROS.
#[derive(Debug, Clone, PartialEq)]
pub struct SinksConfig {
    /// Interval of the status line, the head log line and /diagnostics.
    pub status_interval: Duration,
    /// The recorder (`None`: not recording).
    pub record: Option<crate::sink::record::RecordSettings>,
    /// Where the Foxglove live view listens (`None`: no live view).
    pub foxglove: Option<SocketAddr>,
}

/// The declared parameters and their start-up values (for the parameter services).
#[derive(Debug, Clone)]
pub struct ResolvedParams {
    /// Declarations.
    pub table: ParamTable,
    /// Values after files and overrides.
    pub values: BTreeMap<String, ParameterValue>,
}

/// Everything `run` needs, one section per stage.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The `source` parameter as given (for logs and /diagnostics).
    pub source_spec: SourceSpec,
    /// Where frames come from (frame_id still to be decided with the calibration).
    pub source: SourceSettings,
    /// The `frame_id` parameter, if given.
    pub frame_id: Option<String>,
    /// Camera calibration.
    pub calibration: CalibrationConfig,
    /// The backbone.
    pub backbone: BackboneConfig,
    /// The heads.
    pub heads: HeadsSection,
    /// The ROS node.
    pub ros: RosConfig,
    /// The other sinks.
    pub sinks: SinksConfig,
    /// Threads and queues.
    pub pipeline: PipelineOptions,
    /// The parameters, for the parameter services.
    pub params: ResolvedParams,
}

/// Resolve `run`'s flags, the ROS arguments and the environment into one [`NodeConfig`].
pub fn resolve(flags: &RunFlags, ros: &RosArgs, env: &NodeEnv) -> Result<NodeConfig, ConfigError> {
    let node = NodeSettings::from_args(
        ros.node_name.as_deref(),
        ros.namespace.as_deref(),
        &ros.remaps,
        &|k| env.vars.get(k).cloned(),
    )?;
    if !flags.no_ros {
        node.check_security()?;
    }
    let table = params::declare(flags)?;
    let files: Vec<PathBuf> = flags
        .params_files
        .iter()
        .chain(&ros.params_files)
        .cloned()
        .collect();
    let values = table.resolve(&files, &ros.params, &node.node_name, &node.namespace)?;
    validate::validate(ResolvedParams { table, values }, node, !flags.no_ros)
}

#[cfg(test)]
mod tests;
