//! The node's declared parameters: name, type, default, range, description. Every default of
//! the node is written here once; a command-line flag that was given replaces its parameter's
//! default, so a flag and a parameter mean the same thing (a parameter file or `-p` wins).

use std::path::Path;

use super::flags::{BackboneFlags, RunFlags};
use super::ConfigError;
use crate::backend::settings::{
    BackendKind, OnBackendFailure, Provider, TensorRtPrecision, DEFAULT_PARITY,
};
use crate::heads::manifest::Task;
use crate::heads::HeadControl;
use crate::preprocess::ResizeMode;
use crate::ros::params::{ParamSpec, ParamTable, ParameterValue, Range};
use crate::source::SourceSpec;

/// Default backend.
pub const DEFAULT_BACKEND: &str = "native";
/// Default onnxruntime execution provider.
pub const DEFAULT_PROVIDER: &str = "cpu";
/// Default TensorRT engine precision (what Jetson deployments use).
pub const DEFAULT_TENSORRT_PRECISION: &str = "fp16";
/// Default reaction to an unusable accelerated backend.
pub const DEFAULT_ON_BACKEND_FAILURE: &str = "fallback";
/// Default matrix-product threads (0 = all cores).
pub const DEFAULT_THREADS: usize = 0;
/// Default resize mode name.
pub const DEFAULT_RESIZE: &str = "stretch";
/// Default seconds between status lines.
pub const DEFAULT_STATUS_INTERVAL: f64 = 1.0;
/// Default frames the PCA basis is fitted on.
pub const DEFAULT_PCA_FIT_FRAMES: usize = 30;
/// Default point cloud pixel stride.
pub const DEFAULT_POINTS_STRIDE: i64 = 4;
/// Recorder: bytes its queue holds at most (MiB).
pub const DEFAULT_RECORD_QUEUE_MB: i64 = 256;
/// Recorder: target uncompressed chunk size (KiB).
pub const DEFAULT_RECORD_CHUNK_KB: i64 = 1024;
/// Recorder: a chunk is closed at least this often (seconds): what a kill can lose.
pub const DEFAULT_RECORD_FLUSH_INTERVAL: f64 = 1.0;

/// Run-time settings of heads exposed as `<head>.<setting>` parameters (range 0..1).
pub const HEAD_SETTINGS: [(Task, &str, &str); 2] = [
    (
        Task::Detection,
        "score_threshold",
        "minimum class score of a detection (default: the head manifest's)",
    ),
    (
        Task::Detection,
        "nms_iou_threshold",
        "IoU above which non-maximum suppression removes the weaker box of a class (default: the head manifest's)",
    ),
];

/// `stretch` | `letterbox`.
pub fn parse_resize(text: &str) -> Result<ResizeMode, String> {
    match text {
        "stretch" => Ok(ResizeMode::Stretch),
        "letterbox" => Ok(ResizeMode::Letterbox),
        _ => Err(format!("{text:?}: give stretch or letterbox")),
    }
}

fn s(v: &str) -> ParameterValue {
    ParameterValue::String(v.to_string())
}

fn path_text(p: Option<&Path>) -> ParameterValue {
    s(&p.map(|p| p.display().to_string()).unwrap_or_default())
}

fn usage(flag: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Usage(format!("{flag}: {reason}"))
}

/// A head named on the command line (`what` is the flag and its value), checked against
/// [`Task::ALL`].
fn head_of(what: &str, name: &str) -> Result<Task, ConfigError> {
    name.parse::<Task>().map_err(|_| {
        usage(
            what,
            format!("no such head (heads: {})", Task::names().join(", ")),
        )
    })
}

/// Check a flag's value with the parser its parameter is validated with.
fn check_flag<T: std::str::FromStr<Err = String>>(
    flag: &str,
    value: Option<&str>,
) -> Result<(), ConfigError> {
    match value {
        Some(text) => text.parse::<T>().map(|_| ()).map_err(|e| usage(flag, e)),
        None => Ok(()),
    }
}

/// The backbone's declared parameters with the flags' values as defaults.
pub(super) fn backbone_specs(b: &BackboneFlags) -> Result<Vec<ParamSpec>, ConfigError> {
    use ParameterValue::*;
    if let Some(text) = &b.resize {
        parse_resize(text).map_err(|e| usage("--resize", e))?;
    }
    check_flag::<BackendKind>("--backend", b.backend.as_deref())?;
    check_flag::<Provider>("--provider", b.provider.as_deref())?;
    check_flag::<TensorRtPrecision>("--tensorrt-precision", b.tensorrt_precision.as_deref())?;
    check_flag::<OnBackendFailure>("--on-backend-failure", b.on_backend_failure.as_deref())?;
    let cosine = |name: &str, default: f64, what: &str| {
        ParamSpec::new(
            name,
            Double(default),
            &format!("parity gate: minimum cosine to tract of {what}"),
        )
        .read_only()
        .range(Range::Double { from: 0.0, to: 1.0 })
    };
    Ok(vec![
        ParamSpec::new(
            "backend",
            s(b.backend.as_deref().unwrap_or(DEFAULT_BACKEND)),
            "inference backend: native (pure-Rust DINOv3 engine; tract when an ONNX has no checkpoint folder) | tract | onnxruntime (build feature onnxruntime; ONNX Runtime loaded at run time)",
        )
        .read_only(),
        ParamSpec::new(
            "onnxruntime.library",
            path_text(b.onnxruntime_library.as_deref()),
            "libonnxruntime.so to load ('' = ORT_DYLIB_PATH, then the usual install paths)",
        )
        .read_only(),
        ParamSpec::new(
            "onnxruntime.provider",
            s(b.provider.as_deref().unwrap_or(DEFAULT_PROVIDER)),
            "onnxruntime execution provider: cpu | cuda | tensorrt (whole graph, no CPU fallback)",
        )
        .read_only(),
        ParamSpec::new(
            "onnxruntime.heads",
            Boolean(b.onnxruntime_heads),
            "run the head graphs on the same provider as the backbone (false = on tract, on the CPU)",
        )
        .read_only(),
        ParamSpec::new(
            "onnxruntime.device_id",
            Integer(0),
            "GPU index for the cuda and tensorrt providers",
        )
        .read_only()
        .range(Range::Integer { from: 0, to: 64 }),
        ParamSpec::new(
            "tensorrt.precision",
            s(b.tensorrt_precision.as_deref().unwrap_or(DEFAULT_TENSORRT_PRECISION)),
            "TensorRT engine precision: fp16 | fp32",
        )
        .read_only(),
        ParamSpec::new(
            "tensorrt.cache_dir",
            path_text(b.engine_cache.as_deref()),
            "TensorRT engine and timing caches ('' = $XDG_CACHE_HOME or ~/.cache, then dinov3_perception/tensorrt)",
        )
        .read_only(),
        ParamSpec::new(
            "on_backend_failure",
            s(b.on_backend_failure.as_deref().unwrap_or(DEFAULT_ON_BACKEND_FAILURE)),
            "when the requested backend cannot be used (library, provider, engine build, parity gate): fallback (run on tract) | exit (code 2)",
        )
        .read_only(),
        cosine("parity.min_cosine_fp32", DEFAULT_PARITY.fp32, "fp32 engines"),
        cosine("parity.min_cosine_fp16", DEFAULT_PARITY.fp16, "TensorRT fp16 engines"),
        cosine("parity.min_cosine_int8", DEFAULT_PARITY.int8, "int8-dynamic models (against the float model)"),
        ParamSpec::new(
            "threads",
            Integer(b.threads.unwrap_or(DEFAULT_THREADS) as i64),
            "threads for matrix products (0 = all cores)",
        )
        .read_only()
        .range(Range::Integer { from: 0, to: 1024 }),
        ParamSpec::new(
            "input_size",
            s(b.input_size.as_deref().unwrap_or("")),
            "HEIGHTxWIDTH model input for dynamic models (empty = the model's)",
        )
        .read_only(),
        ParamSpec::new(
            "resize",
            s(b.resize.as_deref().unwrap_or(DEFAULT_RESIZE)),
            "fit frames to the model input: stretch | letterbox",
        )
        .read_only(),
    ])
}

/// The node's declared parameters, defaults replaced by the flags that were given. A flag value
/// that breaks its parameter's rules is an error naming the flag.
pub fn declare(flags: &RunFlags) -> Result<ParamTable, ConfigError> {
    use ParameterValue::*;
    let mut disabled = Vec::new();
    for name in &flags.disable_heads {
        disabled.push(head_of(&format!("--disable-head {name}"), name)?);
    }
    let mut rates = Vec::new();
    for (name, hz) in &flags.head_rates {
        let task = head_of(&format!("--head-rate {name}={hz}"), name)?;
        HeadControl::new()
            .set_rate_hz(*hz)
            .map_err(|e| usage(&format!("--head-rate {name}={hz}"), e))?;
        rates.push((task, *hz));
    }
    let source = flags.source.clone().unwrap_or(SourceSpec::Synthetic);
    let mut specs = vec![
        ParamSpec::new("source", s(&source.to_string()), "frame source: synthetic | v4l2:/dev/videoN | dir:PATH | ros:TOPIC (a topic ending in /compressed is sensor_msgs/CompressedImage)").read_only(),
        ParamSpec::new("model", path_text(flags.model.as_deref()), "backbone .onnx (empty = the bundled tiny demo model)").read_only(),
        ParamSpec::new("heads_dir", path_text(flags.heads.as_deref()), "task heads directory (empty = the demo heads with the bundled model)").read_only(),
        ParamSpec::new("heads_enabled", Boolean(!flags.no_heads), "load the task heads at all (false = backbone only)").read_only(),
        ParamSpec::new("max_frames", Integer(flags.max_frames.unwrap_or(0) as i64), "stop after this many processed frames (0 = run until stopped)").read_only().range(Range::Integer { from: 0, to: i64::MAX }),
        ParamSpec::new("fps", Double(flags.fps.unwrap_or(0.0)), "source frame rate (0 = the source's default)").read_only().range(Range::Double { from: 0.0, to: 1000.0 }),
        ParamSpec::new("width", Integer(flags.width.unwrap_or(crate::frame::DEFAULT_WIDTH) as i64), "requested image width (synthetic, v4l2)").read_only().range(Range::Integer { from: 16, to: 16384 }),
        ParamSpec::new("height", Integer(flags.height.unwrap_or(crate::frame::DEFAULT_HEIGHT) as i64), "requested image height (synthetic, v4l2)").read_only().range(Range::Integer { from: 16, to: 16384 }),
        ParamSpec::new("pixel_format", s(&flags.pixel_format.map(|f| f.to_string().to_ascii_lowercase()).unwrap_or_default()), "v4l2 pixel format: yuyv | mjpeg | rgb24 | grey (empty = pick automatically)").read_only(),
        ParamSpec::new("seed", Integer(flags.seed.unwrap_or(0) as i64), "synthetic scene seed").read_only().range(Range::Integer { from: 0, to: i64::MAX }),
        ParamSpec::new("anomaly_rate", Double(flags.anomaly_rate.unwrap_or(0.0)), "synthetic scene: share of frames with an anomalous object (its pixels are the anomaly ground truth)").read_only().range(Range::Double { from: 0.0, to: 1.0 }),
        ParamSpec::new("loop_files", Boolean(flags.loop_files), "loop over the images of a dir: source").read_only(),
    ];
    specs.extend(backbone_specs(&flags.backbone)?);
    specs.extend([
        ParamSpec::new("frame_id", s(flags.frame_id.as_deref().unwrap_or("")), "frame_id of published headers (empty = the calibration's camera_name, else the image messages' or camera_optical_frame)").read_only(),
        ParamSpec::new("calibration_file", s(""), "camera_info YAML (empty = the synthetic camera for the synthetic source, none otherwise)").read_only(),
        ParamSpec::new("undistort", Boolean(false), "undistort frames before the backbone with the calibration (maps computed once)").read_only(),
        ParamSpec::new("points.enabled", Boolean(true), "publish dinov3/points from depth and the calibration"),
        ParamSpec::new("points.stride", Integer(DEFAULT_POINTS_STRIDE), "pixel stride of the organised point cloud").range(Range::Integer { from: 1, to: 64 }),
        ParamSpec::new("points.rgb", Boolean(true), "colour the points from the frame"),
        ParamSpec::new("debug_image", Boolean(false), "publish dinov3/debug_image (the frame with detections drawn)"),
        ParamSpec::new("qos.reliable_topics", s(""), "comma-separated topics (as listed in the README) published reliable instead of best effort").read_only(),
        ParamSpec::new("status_interval", Double(flags.status_interval.unwrap_or(DEFAULT_STATUS_INTERVAL)), "seconds between status lines and /diagnostics messages").read_only().range(Range::Double { from: 0.05, to: 3600.0 }),
        ParamSpec::new("foxglove.address", s(flags.foxglove.as_deref().unwrap_or("")), "live view: IP:PORT of the Foxglove WebSocket server (empty = off; --foxglove sets 127.0.0.1:8765)").read_only(),
        ParamSpec::new("record.dir", path_text(flags.record.as_deref()), "rosbag2 directory to record to (MCAP; must not exist; empty = do not record)").read_only(),
        ParamSpec::new("record.topics", s(""), "comma-separated topics to record, as listed in the README (empty = every topic the node publishes, the input frames and /diagnostics)").read_only(),
        ParamSpec::new("record.images", s("raw"), "input frames in the recording: raw (sensor_msgs/Image rgb8) | jpeg (CompressedImage) | none").read_only(),
        ParamSpec::new("record.jpeg_quality", Integer(90), "JPEG quality of record.images:=jpeg").read_only().range(Range::Integer { from: 1, to: 100 }),
        ParamSpec::new("record.compression", s("zstd"), "MCAP chunk compression: zstd | lz4 | none").read_only(),
        ParamSpec::new("record.chunk_size_kb", Integer(DEFAULT_RECORD_CHUNK_KB), "target uncompressed MCAP chunk size in KiB").read_only().range(Range::Integer { from: 1, to: 1 << 20 }),
        ParamSpec::new("record.split_size_mb", Integer(0), "start a new .mcap file after this many MB (0 = never)").read_only().range(Range::Integer { from: 0, to: i64::MAX }),
        ParamSpec::new("record.split_duration", Double(0.0), "start a new .mcap file after this many seconds (0 = never)").read_only().range(Range::Double { from: 0.0, to: 1e9 }),
        ParamSpec::new("record.queue_mb", Integer(DEFAULT_RECORD_QUEUE_MB), "MiB the recorder queues before dropping (drops are counted in /diagnostics)").read_only().range(Range::Integer { from: 1, to: 1 << 20 }),
        ParamSpec::new("record.flush_interval", Double(DEFAULT_RECORD_FLUSH_INTERVAL), "seconds between chunk flushes: the most a kill can lose").read_only().range(Range::Double { from: 0.01, to: 3600.0 }),
        ParamSpec::new("replay.rate", Double(flags.rate.unwrap_or(1.0)), "mcap: source speed relative to the recording (0 = as fast as the pipeline takes frames, none dropped)").read_only().range(Range::Double { from: 0.0, to: 1000.0 }),
        ParamSpec::new("replay.topic", s(flags.replay_topic.as_deref().unwrap_or("")), "mcap: source image topic (empty = the node's recorded input, else the only image topic)").read_only(),
        ParamSpec::new("pca_fit_frames", Integer(flags.pca_fit_frames.unwrap_or(DEFAULT_PCA_FIT_FRAMES) as i64), "frames the PCA feature image fits its basis on").read_only().range(Range::Integer { from: 1, to: 100_000 }),
    ]);
    for task in Task::ALL {
        let head = task.as_str();
        let rate = rates
            .iter()
            .rev()
            .find(|(t, _)| *t == task)
            .map_or(0.0, |(_, r)| *r);
        specs.push(ParamSpec::new(
            format!("heads.{head}.enabled"),
            Boolean(!disabled.contains(&task)),
            &format!("run the {head} head"),
        ));
        specs.push(
            ParamSpec::new(
                format!("heads.{head}.rate_hz"),
                Double(rate),
                &format!("most {head} runs per second (0 = every frame)"),
            )
            .range(Range::Double {
                from: 0.0,
                to: 1000.0,
            }),
        );
    }
    for (task, setting, text) in HEAD_SETTINGS {
        // NaN = not given: the head manifest's value is filled in once the heads are loaded.
        specs.push(
            ParamSpec::new(
                format!("{}.{setting}", task.as_str()),
                Double(f64::NAN),
                text,
            )
            .range(Range::Double { from: 0.0, to: 1.0 }),
        );
    }
    let table = ParamTable::new(specs);
    // The flags' values obey the same rules as the parameters they set.
    let given: [(&str, bool, &str); 6] = [
        (
            "--status-interval",
            flags.status_interval.is_some(),
            "status_interval",
        ),
        ("--fps", flags.fps.is_some(), "fps"),
        ("--width", flags.width.is_some(), "width"),
        ("--height", flags.height.is_some(), "height"),
        (
            "--pca-fit-frames",
            flags.pca_fit_frames.is_some(),
            "pca_fit_frames",
        ),
        ("--threads", flags.backbone.threads.is_some(), "threads"),
    ];
    for (flag, is_given, name) in given {
        if let (true, Some(spec)) = (is_given, table.spec(name)) {
            table
                .check(name, spec.default.clone())
                .map_err(|e| usage(flag, e))?;
        }
    }
    Ok(table)
}
