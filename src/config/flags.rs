//! The command-line flags of `run` and of every command that runs the backbone, as clap parses
//! them. Every value is optional: a flag that is not given leaves the parameter's declared
//! default (see [`super::params`]), so defaults are written once, there.

use std::path::PathBuf;

use clap::Args;

use crate::source::convert::PixelFormat;
use crate::source::SourceSpec;

/// How the backbone runs: the options of `run`, `predict`, `features` and `bank build`.
#[derive(Debug, Clone, Default, Args)]
pub struct BackboneFlags {
    /// Input size HEIGHTxWIDTH for a dynamic model (fixed models use their own).
    #[arg(long, value_name = "HxW")]
    pub input_size: Option<String>,
    /// How the image is fitted to the model input: stretch (default; what transformers' DINOv3
    /// processor does) or letterbox (keep the aspect ratio and pad).
    #[arg(long)]
    pub resize: Option<String>,
    /// Inference backend: native (default; our DINOv3 engine) | tract | onnxruntime (needs the
    /// `onnxruntime` build feature; ONNX Runtime is loaded at run time).
    #[arg(long)]
    pub backend: Option<String>,
    /// Threads for matrix products (default 0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// onnxruntime execution provider: cpu (default) | cuda | tensorrt.
    #[arg(long)]
    pub provider: Option<String>,
    /// libonnxruntime.so to load (default: ORT_DYLIB_PATH, then the usual install paths).
    #[arg(long, value_name = "PATH")]
    pub onnxruntime_library: Option<PathBuf>,
    /// TensorRT engine precision: fp16 (default) | fp32.
    #[arg(long)]
    pub tensorrt_precision: Option<String>,
    /// Directory of TensorRT engine and timing caches (default ~/.cache/dinov3_perception/tensorrt).
    #[arg(long, value_name = "DIR")]
    pub engine_cache: Option<PathBuf>,
    /// Run the head graphs on the onnxruntime backend's provider too (default: on tract).
    #[arg(long)]
    pub onnxruntime_heads: bool,
    /// When the requested backend cannot be used (missing library or provider, failed engine
    /// build, failed parity gate): fallback (default; run on tract) | exit (exit code 2).
    #[arg(long)]
    pub on_backend_failure: Option<String>,
}

/// The flags of `run` (the node). Parameter files and `--ros-args -p` override them.
#[derive(Debug, Clone, Default, Args)]
pub struct RunFlags {
    /// Frame source: synthetic (default) | v4l2:/dev/videoN (or /dev/v4l/by-id/...) | dir:PATH |
    /// ros:TOPIC | mcap:PATH (a rosbag2 directory or .mcap file)
    #[arg(long)]
    pub source: Option<SourceSpec>,
    /// Backbone .onnx file (default: the bundled tiny demo model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Stop after this many processed frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Source frame rate (synthetic/dir: target, 0 = as fast as possible; v4l2: requested).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Source image width (synthetic, v4l2; default 640).
    #[arg(long)]
    pub width: Option<usize>,
    /// Source image height (synthetic, v4l2; default 480).
    #[arg(long)]
    pub height: Option<usize>,
    /// Camera pixel format (v4l2): yuyv | mjpeg | rgb24 | grey.
    #[arg(long)]
    pub pixel_format: Option<PixelFormat>,
    /// Seed of the synthetic scene (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Synthetic scene: share of frames with an anomalous object (ground truth for the anomaly
    /// head; default 0).
    #[arg(long)]
    pub anomaly_rate: Option<f64>,
    /// Loop over the images of a dir: source.
    #[arg(long)]
    pub loop_files: bool,
    /// frame_id of the published headers (default: the calibration's camera_name, else the
    /// image messages' frame_id for ros: sources, else camera_optical_frame).
    #[arg(long)]
    pub frame_id: Option<String>,
    /// How the backbone runs.
    #[command(flatten)]
    pub backbone: BackboneFlags,
    /// Seconds between status lines and /diagnostics messages (default 1).
    #[arg(long)]
    pub status_interval: Option<f64>,
    /// Directory of task heads (detection.onnx, segmentation.onnx, depth.onnx,
    /// classification.onnx, anomaly.bank.json, pca.json). Default: the demo heads with the
    /// bundled model; none (only the PCA image) with --model.
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// Run the backbone only, no heads.
    #[arg(long)]
    pub no_heads: bool,
    /// Switch a head off at start (repeatable): detection, segmentation, depth,
    /// classification, anomaly, pca.
    #[arg(long = "disable-head", value_name = "NAME")]
    pub disable_heads: Vec<String>,
    /// Limit a head to a rate, NAME=HZ (repeatable; 0 = every frame).
    #[arg(long = "head-rate", value_name = "NAME=HZ", value_parser = parse_head_rate)]
    pub head_rates: Vec<(String, f64)>,
    /// Frames the PCA feature image fits its basis on (default 30).
    #[arg(long)]
    pub pca_fit_frames: Option<usize>,
    /// Record every output topic and the input frames to this rosbag2 directory (MCAP; it
    /// must not exist). The `record.*` parameters choose topics, compression and splitting.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// mcap: sources: replay speed relative to the recording (default 1; 0 = as fast as the
    /// pipeline takes frames, none dropped).
    #[arg(long)]
    pub rate: Option<f64>,
    /// mcap: sources: the image topic to replay (default: the node's recorded input, else the
    /// only image topic).
    #[arg(long, value_name = "TOPIC")]
    pub replay_topic: Option<String>,
    /// ROS 2 parameter file (repeatable; later files win; `--ros-args -p` wins over all).
    #[arg(long = "params-file", value_name = "FILE")]
    pub params_files: Vec<PathBuf>,
    /// Do not join the ROS graph (offline processing: no topics, no parameter services).
    #[arg(long)]
    pub no_ros: bool,
    /// Live view: serve every output topic to the Foxglove app over WebSocket on IP:PORT
    /// (without a value: 127.0.0.1:8765, loopback only). Works with --no-ros.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = crate::sink::foxglove::DEFAULT_ADDRESS)]
    pub foxglove: Option<String>,
}

/// `NAME=HZ`.
fn parse_head_rate(text: &str) -> Result<(String, f64), String> {
    let (name, hz) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=HZ (e.g. depth=2)"))?;
    let hz: f64 = hz
        .parse()
        .map_err(|_| format!("{text:?}: {hz:?} is not a number of Hz"))?;
    Ok((name.to_string(), hz))
}
