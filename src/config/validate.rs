//! `validate()`: the resolved parameter values -> the typed sections of [`NodeConfig`]. Values
//! that need parsing (source, pixel format, input size, resize) and rules between parameters
//! are checked here; every error names the parameter and where its value came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::params::{backbone_specs, parse_resize, DEFAULT_RESIZE, HEAD_SETTINGS};
use super::share::{bundled_heads, bundled_model};
use super::{
    BackboneConfig, BackboneFlags, CalibrationConfig, ConfigError, HeadSetting, HeadsSection,
    NodeConfig, ResolvedParams, RosConfig, SinksConfig,
};
use crate::backend::settings::{
    default_engine_cache_dir, BackendKind, BackendSettings, OnBackendFailure, OnnxRuntimeSettings,
    ParityThresholds, Provider, TensorRtPrecision, TensorRtSettings,
};
use crate::bag::writer::{BagOptions, ChunkCompression};
use crate::heads::loader::HeadsConfig;
use crate::heads::manifest::Task;
use crate::model::InputSize;
use crate::pipeline::PipelineOptions;
use crate::ros::node::NodeSettings;
use crate::ros::params::{value_text, ParamError, ParameterValue};
use crate::sink::outputs::InputImageFormat;
use crate::sink::record::RecordSettings;
use crate::source::convert::PixelFormat;
use crate::source::files::FilesConfig;
use crate::source::mcap::{McapConfig, ReplayClock};
use crate::source::synthetic::SyntheticConfig;
use crate::source::{SourceSettings, SourceSpec};

/// Parse `HxW` (e.g. `224x224`).
pub fn parse_input_size(text: &str) -> Result<InputSize, String> {
    let usage =
        || format!("input size {text:?} is not HEIGHTxWIDTH (e.g. 224x224, multiples of 16)");
    let (h, w) = text.split_once(['x', 'X']).ok_or_else(usage)?;
    Ok(InputSize {
        height: h.trim().parse().map_err(|_| usage())?,
        width: w.trim().parse().map_err(|_| usage())?,
    })
}

/// Parse the live view's `IP:PORT` (an IP address, not a host name: no name lookup at start-up).
pub fn parse_foxglove_address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        format!(
            "{text:?} is not IP:PORT: give an IP address and a port, e.g. 127.0.0.1:8765 (this machine only) or 0.0.0.0:8765 (every interface)"
        )
    })
}

/// The backbone of an offline command.
pub(super) fn backbone_from_flags(
    model: PathBuf,
    flags: &BackboneFlags,
) -> Result<BackboneConfig, ConfigError> {
    let usage = |flag: &str, e: String| ConfigError::Usage(format!("{flag}: {e}"));
    Ok(BackboneConfig {
        model,
        bundled: false,
        input_size: flags
            .input_size
            .as_deref()
            .map(parse_input_size)
            .transpose()
            .map_err(|e| usage("--input-size", e))?,
        resize: parse_resize(flags.resize.as_deref().unwrap_or(DEFAULT_RESIZE))
            .map_err(|e| usage("--resize", e))?,
        backend: {
            // The same parameters as the node's, with the flags as their values: one reading.
            let values: BTreeMap<String, ParameterValue> = backbone_specs(flags)?
                .into_iter()
                .map(|spec| (spec.name, spec.default))
                .collect();
            backend_settings(&Values(&values))?
        },
    })
}

/// The `backend`, `threads`, `onnxruntime.*`, `tensorrt.*`, `on_backend_failure` and
/// `parity.*` parameters -> [`BackendSettings`].
fn backend_settings(v: &Values) -> Result<BackendSettings, ConfigError> {
    let parse = |name: &str| v.string(name);
    let kind: BackendKind = parse("backend")
        .parse()
        .map_err(|e: String| v.invalid("backend", e))?;
    let provider: Provider = parse("onnxruntime.provider")
        .parse()
        .map_err(|e: String| v.invalid("onnxruntime.provider", e))?;
    let precision: TensorRtPrecision = parse("tensorrt.precision")
        .parse()
        .map_err(|e: String| v.invalid("tensorrt.precision", e))?;
    let on_failure: OnBackendFailure = parse("on_backend_failure")
        .parse()
        .map_err(|e: String| v.invalid("on_backend_failure", e))?;
    Ok(BackendSettings {
        kind,
        threads: v.int("threads") as usize,
        onnxruntime: OnnxRuntimeSettings {
            library: v.path("onnxruntime.library"),
            provider,
            device_id: v.int("onnxruntime.device_id") as u32,
            heads: v.boolean("onnxruntime.heads"),
        },
        tensorrt: TensorRtSettings {
            precision,
            cache_dir: v
                .path("tensorrt.cache_dir")
                .unwrap_or_else(default_engine_cache_dir),
        },
        parity: ParityThresholds {
            fp32: v.double("parity.min_cosine_fp32"),
            fp16: v.double("parity.min_cosine_fp16"),
            int8: v.double("parity.min_cosine_int8"),
        },
        on_failure,
    })
}

/// Typed reads of the resolved values (their types were checked when they were resolved).
struct Values<'a>(&'a BTreeMap<String, ParameterValue>);

impl Values<'_> {
    fn get(&self, n: &str) -> ParameterValue {
        self.0.get(n).cloned().unwrap_or(ParameterValue::NotSet)
    }
    fn string(&self, n: &str) -> String {
        match self.get(n) {
            ParameterValue::String(v) => v,
            _ => String::new(),
        }
    }
    fn int(&self, n: &str) -> i64 {
        match self.get(n) {
            ParameterValue::Integer(v) => v,
            _ => 0,
        }
    }
    fn double(&self, n: &str) -> f64 {
        match self.get(n) {
            ParameterValue::Double(v) => v,
            _ => f64::NAN,
        }
    }
    fn boolean(&self, n: &str) -> bool {
        matches!(self.get(n), ParameterValue::Boolean(true))
    }
    fn path(&self, n: &str) -> Option<PathBuf> {
        let v = self.string(n);
        (!v.is_empty()).then(|| PathBuf::from(v))
    }
    fn invalid(&self, name: &str, reason: impl Into<String>) -> ParamError {
        ParamError::Invalid {
            name: name.to_string(),
            origin: format!("value {}", value_text(&self.get(name))),
            reason: reason.into(),
        }
    }
}

fn source_settings(v: &Values) -> Result<(SourceSpec, SourceSettings), ConfigError> {
    let spec = v
        .string("source")
        .parse::<SourceSpec>()
        .map_err(|e| v.invalid("source", e.to_string()))?;
    let fps = Some(v.double("fps")).filter(|f| *f > 0.0);
    let width = v.int("width") as usize;
    let height = v.int("height") as usize;
    let pixel_format = match v.string("pixel_format").as_str() {
        "" => None,
        other => Some(
            other
                .parse::<PixelFormat>()
                .map_err(|e| v.invalid("pixel_format", e.to_string()))?,
        ),
    };
    let settings = match spec.clone() {
        SourceSpec::Synthetic => {
            let d = SyntheticConfig::default();
            SourceSettings::Synthetic(SyntheticConfig {
                width,
                height,
                fps: fps.unwrap_or(d.fps),
                seed: v.int("seed") as u64,
                anomaly_rate: v.double("anomaly_rate"),
                ..d
            })
        }
        SourceSpec::Dir(dir) => {
            let mut c = FilesConfig::new(dir);
            c.loop_forever = v.boolean("loop_files");
            if let Some(fps) = fps {
                c.fps = fps;
            }
            SourceSettings::Files(c)
        }
        #[cfg(target_os = "linux")]
        SourceSpec::V4l2(path) => {
            let mut c = crate::source::v4l2::V4l2Config::new(path);
            if let Some(f) = pixel_format {
                c.format = f;
            }
            // The parameter ranges (16..16384) fit u32.
            c.width = width as u32;
            c.height = height as u32;
            if let Some(fps) = fps {
                if fps < 1.0 {
                    return Err(v
                        .invalid("fps", "a camera rate is 1..1000 frames per second")
                        .into());
                }
                c.fps = fps.round() as u32;
            }
            SourceSettings::V4l2(c)
        }
        #[cfg(not(target_os = "linux"))]
        SourceSpec::V4l2(path) => {
            let _ = (pixel_format, path);
            return Err(v
                .invalid(
                    "source",
                    "V4L2 cameras are read on 64-bit Linux only; use a ros: image topic or dir: images here",
                )
                .into());
        }
        SourceSpec::Ros(topic) => SourceSettings::Ros { topic },
        SourceSpec::Mcap(path) => SourceSettings::Mcap(McapConfig {
            path,
            topic: Some(v.string("replay.topic")).filter(|t| !t.is_empty()),
            rate: v.double("replay.rate"),
            frame_id: None,
            clock: Arc::new(ReplayClock::new()),
        }),
    };
    Ok((spec, settings))
}

/// The resolved values -> [`NodeConfig`].
pub(super) fn validate(
    params: ResolvedParams,
    mut node: NodeSettings,
    ros_enabled: bool,
) -> Result<NodeConfig, ConfigError> {
    let v = Values(&params.values);
    let (source_spec, source) = source_settings(&v)?;

    let given_model = v.path("model");
    let backbone = BackboneConfig {
        bundled: given_model.is_none(),
        model: given_model.clone().unwrap_or_else(bundled_model),
        input_size: match v.string("input_size").as_str() {
            "" => None,
            text => Some(parse_input_size(text).map_err(|e| v.invalid("input_size", e))?),
        },
        resize: parse_resize(&v.string("resize")).map_err(|e| v.invalid("resize", e))?,
        backend: backend_settings(&v)?,
    };

    let enabled: BTreeMap<Task, bool> = Task::ALL
        .iter()
        .map(|t| (*t, v.boolean(&format!("heads.{}.enabled", t.as_str()))))
        .collect();
    let rate_hz: BTreeMap<Task, f64> = Task::ALL
        .iter()
        .map(|t| (*t, v.double(&format!("heads.{}.rate_hz", t.as_str()))))
        .collect();
    let dir = match (v.path("heads_dir"), &given_model) {
        (Some(dir), _) => Some(dir),
        (None, None) => Some(bundled_heads()),
        (None, Some(_)) => None,
    };
    let heads = HeadsSection {
        load: v.boolean("heads_enabled").then(|| HeadsConfig {
            dir,
            pca: enabled.get(&Task::Pca).copied().unwrap_or(true),
            pca_fit_frames: v.int("pca_fit_frames") as usize,
        }),
        enabled,
        rate_hz,
        settings: HEAD_SETTINGS
            .iter()
            .filter_map(|(task, name, _)| {
                let value = v.double(&format!("{}.{name}", task.as_str()));
                (!value.is_nan()).then_some(HeadSetting {
                    task: *task,
                    name,
                    value,
                })
            })
            .collect(),
    };

    let calibration = CalibrationConfig {
        file: v.path("calibration_file"),
        undistort: v.boolean("undistort"),
    };
    let is_synthetic = matches!(source, SourceSettings::Synthetic(_));
    if calibration.undistort && calibration.file.is_none() && !is_synthetic {
        return Err(ConfigError::Usage(
            "undistort:=true needs a calibration: set calibration_file to a camera_info YAML (see calibration/README.md)".into(),
        ));
    }

    node.reliable_topics = v
        .string("qos.reliable_topics")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let ros = RosConfig {
        enabled: ros_enabled,
        node,
        debug_image: v.boolean("debug_image"),
        points_enabled: v.boolean("points.enabled"),
        points_stride: v.int("points.stride").max(1) as usize,
        points_rgb: v.boolean("points.rgb"),
    };
    if let SourceSettings::Ros { topic } = &source {
        if !ros.enabled {
            return Err(ConfigError::Usage(format!(
                "source ros:{topic} needs the ROS node: drop --no-ros"
            )));
        }
    }
    let status_interval = Duration::from_secs_f64(v.double("status_interval"));
    let pipeline = PipelineOptions {
        max_frames: Some(v.int("max_frames") as u64).filter(|n| *n > 0),
        status_interval: Some(status_interval),
        // A recording replayed as fast as it goes is offline processing: nothing dropped.
        lossless: matches!(&source, SourceSettings::Mcap(c) if c.rate == 0.0),
        ..PipelineOptions::default()
    };
    let record = record_settings(&v)?;
    let frame_id = Some(v.string("frame_id")).filter(|f| !f.is_empty());
    let foxglove = match v.string("foxglove.address").as_str() {
        "" => None,
        text => Some(parse_foxglove_address(text).map_err(|e| v.invalid("foxglove.address", e))?),
    };
    Ok(NodeConfig {
        source_spec,
        source,
        frame_id,
        calibration,
        backbone,
        heads,
        ros,
        sinks: SinksConfig {
            status_interval,
            record,
            foxglove,
        },
        pipeline,
        params,
    })
}

/// The `record.*` parameters -> the recorder's settings (`None`: `record.dir` is empty).
fn record_settings(v: &Values) -> Result<Option<RecordSettings>, ConfigError> {
    let Some(dir) = v.path("record.dir") else {
        return Ok(None);
    };
    let images = match v.string("record.images").as_str() {
        "raw" => Some(InputImageFormat::Raw),
        "jpeg" => Some(InputImageFormat::Jpeg(v.int("record.jpeg_quality") as u8)),
        "none" => None,
        other => {
            return Err(v
                .invalid(
                    "record.images",
                    format!("{other:?}: give raw, jpeg or none"),
                )
                .into())
        }
    };
    let compression = v
        .string("record.compression")
        .parse::<ChunkCompression>()
        .map_err(|e| v.invalid("record.compression", e))?;
    let split_size = Some(v.int("record.split_size_mb") as u64 * 1_000_000).filter(|s| *s > 0);
    let split_duration = Some((v.double("record.split_duration") * 1e9) as u64).filter(|d| *d > 0);
    Ok(Some(RecordSettings {
        dir,
        topics: v
            .string("record.topics")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        images,
        bag: BagOptions {
            compression,
            chunk_size: v.int("record.chunk_size_kb") as u64 * 1024,
            split_size,
            split_duration,
            ..BagOptions::default()
        },
        queue_bytes: v.int("record.queue_mb") as u64 * (1 << 20),
        flush_interval: Duration::from_secs_f64(v.double("record.flush_interval")),
    }))
}
