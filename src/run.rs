//! `run`: the node. Parameters (command line, parameter files, `-p`), the calibration, the
//! backbone and heads, the ROS 2 node with its topics and parameter services, the frame source,
//! then the pipeline until the source ends, `max_frames` are processed or SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::backend::LoadedBackbone;
use crate::calibration::{CameraCalibration, Undistorter};
use crate::commands::{
    bundled_heads, bundled_model, make_source, run_heads, CommandError, RunOptions,
};
use crate::display::HeadLogSink;
use crate::frame::{Clock, Frame, SystemClock};
use crate::heads::{HeadControl, HeadSet};
use crate::pipeline::{self, InferenceStage, PipelineOptions, PipelineReport};
use crate::ros::args::RosArgs;
use crate::ros::node::NodeSettings;
use crate::ros::node_params::{self, HEAD_NAMES};
use crate::ros::params::{ParamStore, ParameterValue};
use crate::ros::publish::{DiagnosticsPublisher, LiveSettings, PublishPlan, RosSink};
use crate::ros::services::ParameterServices;
use crate::ros::RosNode;
use crate::source::ros_image::RosImageSource;
use crate::source::{FrameSource, SourceError, SourceSpec, SourceStats};

/// The process environment the node reads, injectable for tests.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    /// `ROS_DOMAIN_ID`, `ROS_LOCALHOST_ONLY`, `ROS_AUTOMATIC_DISCOVERY_RANGE`.
    pub vars: BTreeMap<String, String>,
    /// Join the ROS graph (false: `run --no-ros`, offline processing only).
    pub ros: bool,
}

impl NodeEnv {
    /// From this process's environment, ROS on.
    pub fn from_process() -> Self {
        let vars = [
            "ROS_DOMAIN_ID",
            "ROS_LOCALHOST_ONLY",
            "ROS_AUTOMATIC_DISCOVERY_RANGE",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
        NodeEnv { vars, ros: true }
    }
}

/// Frames checked against the calibration (size) and optionally undistorted.
struct CalibratedSource {
    inner: Box<dyn FrameSource>,
    calibration: CameraCalibration,
    undistorter: Option<Undistorter>,
}

impl FrameSource for CalibratedSource {
    fn describe(&self) -> String {
        let u = if self.undistorter.is_some() {
            ", undistorted"
        } else {
            ""
        };
        format!(
            "{} (calibration {}{u})",
            self.inner.describe(),
            self.calibration.camera_name
        )
    }

    fn start(&mut self) -> Result<(), SourceError> {
        self.inner.start()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(mut frame) = self.inner.next_frame()? else {
            return Ok(None);
        };
        let bad = |reason: String| SourceError::BadParameter {
            name: "calibration_file",
            value: self.calibration.camera_name.clone(),
            reason,
        };
        self.calibration
            .check_image_size(frame.width, frame.height)
            .map_err(|e| bad(e.to_string()))?;
        if let Some(u) = &self.undistorter {
            let mut out = vec![0u8; frame.rgb.len()];
            u.apply(&frame.rgb, &mut out)
                .map_err(|e| bad(e.to_string()))?;
            frame.rgb = out;
        }
        Ok(Some(frame))
    }

    fn stop(&mut self) {
        self.inner.stop()
    }

    fn stats(&self) -> SourceStats {
        self.inner.stats()
    }
}

fn check_cli_head_switches(opts: &RunOptions) -> Result<(), CommandError> {
    for name in &opts.disabled_heads {
        if !HEAD_NAMES.contains(&name.as_str()) {
            return Err(CommandError::Usage(format!(
                "--disable-head {name}: no such head (heads: {})",
                HEAD_NAMES.join(", ")
            )));
        }
    }
    for (name, hz) in &opts.head_rates {
        if !HEAD_NAMES.contains(&name.as_str()) {
            return Err(CommandError::Usage(format!(
                "--head-rate {name}={hz}: no such head (heads: {})",
                HEAD_NAMES.join(", ")
            )));
        }
        HeadControl::new()
            .set_rate_hz(*hz)
            .map_err(|e| CommandError::Usage(format!("--head-rate {name}={hz}: {e}")))?;
    }
    Ok(())
}

/// Run the node with the command-line options `opts` as parameter defaults and the ROS
/// arguments `ros` (parameter files, `-p`, names, remaps).
pub fn run_node(
    opts: RunOptions,
    ros: &RosArgs,
    env: &NodeEnv,
    stop: Arc<AtomicBool>,
) -> Result<PipelineReport, CommandError> {
    check_cli_head_switches(&opts)?;
    let mut settings = NodeSettings::from_args(
        ros.node_name.as_deref(),
        ros.namespace.as_deref(),
        &ros.remaps,
        &|k| env.vars.get(k).cloned(),
    )?;
    let mut table = node_params::declare(&opts);
    let mut values = table.resolve(
        &ros.params_files,
        &ros.params,
        &settings.node_name,
        &settings.namespace,
    )?;
    let cfg = node_params::configure(&values, &opts)?;
    settings.reliable_topics = cfg.reliable_topics.iter().cloned().collect();
    let mut opts = cfg.run.clone();

    // Calibration: the given file, the synthetic camera for the synthetic scene, else none.
    let calibration = match (&cfg.calibration_file, &opts.source) {
        (Some(path), _) => Some(CameraCalibration::load(path)?),
        (None, SourceSpec::Synthetic) => Some(CameraCalibration::synthetic(
            opts.width.unwrap_or(640) as u32,
            opts.height.unwrap_or(480) as u32,
        )),
        _ => None,
    };
    if cfg.undistort && calibration.is_none() {
        return Err(CommandError::Usage(
            "undistort:=true needs a calibration: set calibration_file to a camera_info YAML (see calibration/README.md)".into(),
        ));
    }
    if let (Some(cal), SourceSpec::Synthetic) = (&calibration, &opts.source) {
        // The synthetic image size is known now: a mismatch is a start-up error.
        cal.check_image_size(opts.width.unwrap_or(640), opts.height.unwrap_or(480))?;
    }
    let frame_id_param = (!cfg.frame_id.is_empty()).then(|| cfg.frame_id.clone());
    let calibrated_frame_id = cfg
        .calibration_file
        .as_ref()
        .and(calibration.as_ref())
        .map(|c| c.camera_name.clone());
    opts.frame_id = frame_id_param
        .clone()
        .or_else(|| calibration.as_ref().map(|c| c.camera_name.clone()))
        .unwrap_or_else(|| "camera_optical_frame".into());

    // Backbone and heads.
    let model_path = opts.model.clone().unwrap_or_else(bundled_model);
    let start = Instant::now();
    let LoadedBackbone {
        model,
        size,
        prepared,
        backend,
    } = LoadedBackbone::load(&model_path, opts.input_size, &opts.backend, opts.threads)?;
    log::info!(
        "model {} ({}, input {size}) loaded and prepared on {backend} in {:.2} s",
        model_path.display(),
        model.manifest.variant,
        start.elapsed().as_secs_f64()
    );
    let heads = if cfg.heads_enabled {
        run_heads(&opts, &model, size)?
    } else {
        HeadSet::new()
    };
    for (name, hz) in &cfg.head_rate_hz {
        if let Some(c) = heads.control(name) {
            c.set_rate_hz(*hz)
                .map_err(|e| CommandError::Usage(format!("heads.{name}.rate_hz: {e}")))?;
        }
    }
    for (head, setting, v) in &cfg.head_settings {
        match heads.control(head) {
            Some(c) => c.request_setting(setting, *v),
            None => log::warn!("{head}.{setting} is set but the {head} head is not loaded"),
        }
    }
    // Threshold parameters the user left unset show the head manifest's values.
    for (head, setting, v) in heads.settings() {
        let key = format!("{head}.{setting}");
        table.set_default(&key, ParameterValue::Double(v));
        if matches!(values.get(&key), Some(ParameterValue::Double(x)) if x.is_nan()) {
            values.insert(key, ParameterValue::Double(v));
        }
    }
    let controls: BTreeMap<String, Arc<HeadControl>> = heads
        .controls()
        .into_iter()
        .map(|(n, _, c)| (n, c))
        .collect();
    let live = Arc::new(LiveSettings::new(
        cfg.debug_image,
        cfg.points_enabled,
        cfg.points_stride,
        cfg.points_rgb,
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // The ROS node, its parameter services and publishers.
    let mut node = if env.ros {
        Some(RosNode::start(settings)?)
    } else {
        None
    };
    let store = Arc::new(ParamStore::new(
        table,
        values,
        node_params::set_action(controls, live.clone()),
    ));
    let services = node
        .as_mut()
        .map(|n| ParameterServices::start(n, store.clone()))
        .transpose()?;

    let source: Box<dyn FrameSource> = match &opts.source {
        SourceSpec::Ros(topic) => {
            let node = node.as_mut().ok_or_else(|| {
                CommandError::Usage(format!(
                    "source ros:{topic} needs the ROS node: drop --no-ros"
                ))
            })?;
            Box::new(RosImageSource::new(
                node,
                topic,
                frame_id_param.clone().or(calibrated_frame_id),
                stop.clone(),
            )?)
        }
        _ => make_source(&opts, clock.clone(), stop.clone())?,
    };
    let source: Box<dyn FrameSource> = match &calibration {
        Some(cal) => Box::new(CalibratedSource {
            inner: source,
            undistorter: cfg.undistort.then(|| Undistorter::new(cal)),
            calibration: cal.clone(),
        }),
        None => source,
    };

    let mut sinks: Vec<Box<dyn pipeline::Sink>> = Vec::new();
    if !heads.is_empty() {
        log::info!("heads: {}", heads.names().join(", "));
        sinks.push(Box::new(HeadLogSink::new(
            opts.status_interval,
            (0.0, f32::MAX),
        )));
    }
    let heads_dir = match (&opts.heads, &opts.model) {
        (Some(dir), _) => Some(dir.clone()),
        (None, None) => Some(bundled_heads()),
        (None, Some(_)) => None,
    };
    let diagnostics = match node.as_mut() {
        Some(node) => {
            let plan = PublishPlan {
                heads: heads.names(),
                calibration: calibration.clone(),
                rectified: cfg.undistort,
                vision_method: format!(
                    "DINOv3 {} backbone ({}) + linear detection head",
                    model.manifest.variant,
                    model_path.display()
                ),
                vision_database: heads_dir
                    .as_deref()
                    .map(|d| d.join("detection.json").display().to_string())
                    .unwrap_or_default(),
            };
            sinks.push(Box::new(RosSink::new(node, &plan, live.clone())?));
            let statics = BTreeMap::from([
                ("backend".to_string(), backend.to_string()),
                ("model".to_string(), model_path.display().to_string()),
                ("model_variant".to_string(), model.manifest.variant.clone()),
                ("input_size".to_string(), size.to_string()),
                ("source".to_string(), opts.source.to_string()),
                ("heads".to_string(), heads.names().join(",")),
            ]);
            Some(DiagnosticsPublisher::new(node, statics)?)
        }
        None => None,
    };

    let stage = InferenceStage::new(
        prepared.as_ref(),
        Arc::new(model.manifest.clone()),
        opts.resize,
    )?
    .with_heads(heads);
    let options = PipelineOptions {
        max_frames: opts.max_frames,
        status_interval: Some(opts.status_interval),
        ..PipelineOptions::default()
    };
    let status_clock = clock.clone();
    let report = pipeline::run(source, stage, sinks, &options, clock, stop, &mut |status| {
        log::info!("{}", status.line());
        if let Some(d) = &diagnostics {
            d.publish(status, status_clock.now());
        }
    })?;
    // Publishers and services go before the node and its participant.
    drop(diagnostics);
    drop(services);
    drop(node);
    Ok(report)
}
