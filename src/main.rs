//! `dinov3_perception` command line: argument parsing, logging set-up and exit codes only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use dinov3_perception::bank::{build_bank, BuildBankOptions};
use dinov3_perception::commands::{
    self, CommandError, FeaturesOptions, PredictOptions, RunOptions,
};
use dinov3_perception::dataset::{self, SyntheticDatasetOptions};
use dinov3_perception::exit;
use dinov3_perception::preprocess::ResizeMode;
use dinov3_perception::ros::args::{split_ros_args, RosArgs};
use dinov3_perception::ros::node::DEFAULT_NODE_NAME;
use dinov3_perception::run::{run_node, NodeEnv};
use dinov3_perception::source::convert::PixelFormat;
use dinov3_perception::source::synthetic::SyntheticConfig;
use dinov3_perception::source::SourceSpec;

/// One DINOv3 backbone pass per camera frame, feeding every perception task.
#[derive(Debug, Parser)]
#[command(name = "dinov3_perception", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Resize {
    /// Scale x and y independently (transformers' DINOv3 processor does this).
    Stretch,
    /// Keep the aspect ratio and pad.
    Letterbox,
}

/// Options of every subcommand that runs the backbone.
#[derive(Debug, clap::Args)]
struct BackboneArgs {
    /// Input size HEIGHTxWIDTH for a dynamic model (fixed models use their own).
    #[arg(long)]
    input_size: Option<String>,
    /// How the image is fitted to the model input.
    #[arg(long, value_enum, default_value = "stretch")]
    resize: Resize,
    /// Inference backend.
    #[arg(long, default_value = "tract")]
    backend: String,
    /// Threads for matrix products (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl BackboneArgs {
    fn input_size(&self) -> Result<Option<dinov3_perception::InputSize>, CommandError> {
        self.input_size
            .as_deref()
            .map(commands::parse_input_size)
            .transpose()
    }
}

impl From<Resize> for ResizeMode {
    fn from(r: Resize) -> Self {
        match r {
            Resize::Stretch => ResizeMode::Stretch,
            Resize::Letterbox => ResizeMode::Letterbox,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the ROS 2 node: frames from a source, one backbone pass per frame, every head output
    /// published as ROS topics, live status line. With no options: the synthetic scene and the
    /// bundled tiny model. Accepts `--ros-args ...` as `ros2 launch` / `ros2 run` pass it.
    Run {
        /// Frame source: synthetic | v4l2:/dev/videoN (or /dev/v4l/by-id/...) | dir:PATH | ros:TOPIC
        #[arg(long, default_value = "synthetic")]
        source: SourceSpec,
        /// Backbone .onnx file (default: the bundled tiny fixture model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Stop after this many processed frames.
        #[arg(long)]
        max_frames: Option<u64>,
        /// Source frame rate (synthetic/dir: target, 0 = as fast as possible; v4l2: requested).
        #[arg(long)]
        fps: Option<f64>,
        /// Source image width (synthetic, v4l2).
        #[arg(long)]
        width: Option<usize>,
        /// Source image height (synthetic, v4l2).
        #[arg(long)]
        height: Option<usize>,
        /// Camera pixel format (v4l2): yuyv | mjpeg | rgb24 | grey.
        #[arg(long)]
        pixel_format: Option<PixelFormat>,
        /// Seed of the synthetic scene.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Loop over the images of a dir: source.
        #[arg(long)]
        loop_files: bool,
        /// frame_id of the published headers (default: the calibration's camera_name, else
        /// the image messages' frame_id for ros: sources, else camera_optical_frame).
        #[arg(long, default_value = "")]
        frame_id: String,
        #[command(flatten)]
        backbone: BackboneArgs,
        /// Seconds between status lines.
        #[arg(long, default_value_t = 1.0)]
        status_interval: f64,
        /// Directory of task heads (detection.onnx, segmentation.onnx, depth.onnx,
        /// classification.onnx, anomaly.bank.json, pca.json). Default: the demo heads with the
        /// bundled model; none (only the PCA image) with --model.
        #[arg(long)]
        heads: Option<PathBuf>,
        /// Run the backbone only, no heads.
        #[arg(long)]
        no_heads: bool,
        /// Switch a head off at start (repeatable): detection, segmentation, depth,
        /// classification, anomaly, pca.
        #[arg(long = "disable-head", value_name = "NAME")]
        disable_heads: Vec<String>,
        /// Limit a head to a rate, NAME=HZ (repeatable; 0 = every frame).
        #[arg(long = "head-rate", value_name = "NAME=HZ", value_parser = parse_head_rate)]
        head_rates: Vec<(String, f64)>,
        /// Frames the PCA feature image fits its basis on.
        #[arg(long, default_value_t = 30)]
        pca_fit_frames: usize,
        /// ROS 2 parameter file (repeatable; later files win; `--ros-args -p` wins over all).
        #[arg(long = "params-file", value_name = "FILE")]
        params_files: Vec<PathBuf>,
        /// Do not join the ROS graph (offline processing: no topics, no parameter services).
        #[arg(long)]
        no_ros: bool,
    },
    /// Run the backbone and every head on a directory of images; write COCO detections,
    /// class-id masks, depth .npy, labels and anomaly scores (for models/eval_heads.py).
    Predict {
        /// Backbone .onnx file.
        #[arg(long)]
        model: PathBuf,
        /// Heads directory.
        #[arg(long)]
        heads: PathBuf,
        /// Directory of PNG/JPEG images.
        #[arg(long)]
        images: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        backbone: BackboneArgs,
    },
    /// Anomaly memory banks (AnomalyDINO).
    Bank {
        #[command(subcommand)]
        action: BankAction,
    },
    /// Write datasets in standard formats (COCO JSON, PNG masks, depth .npy, ImageFolder).
    Dataset {
        #[command(subcommand)]
        kind: DatasetKind,
    },
    /// Print a backbone model's manifest, inputs/outputs, parameter count and FLOP estimate.
    Inspect {
        /// Backbone .onnx file (its .json manifest must sit beside it).
        model: PathBuf,
    },
    /// Run the backbone on one image and write cls, registers, patch_tokens (and layers) as .npz.
    Features {
        /// Backbone .onnx file.
        #[arg(long)]
        model: PathBuf,
        /// PNG or JPEG image.
        #[arg(long)]
        image: PathBuf,
        /// Output .npz file.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        backbone: BackboneArgs,
    },
}

#[derive(Debug, Subcommand)]
enum BankAction {
    /// Build a bank of L2-normalised patch features from a directory of normal images.
    Build {
        /// Backbone .onnx file.
        #[arg(long)]
        model: PathBuf,
        /// Directory of normal PNG/JPEG images.
        #[arg(long)]
        images: PathBuf,
        /// Output NAME: writes NAME.bank.json and NAME.bank.npz (name it `anomaly` inside a
        /// heads directory for `run --heads`).
        #[arg(long)]
        out: PathBuf,
        /// Keep at most this many patches (greedy coreset subsampling).
        #[arg(long)]
        max_patches: Option<usize>,
        /// Image score: mean of the top PERCENT of patch distances.
        #[arg(long, default_value_t = 1.0)]
        top_percent: f32,
        /// Seed of the coreset.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        backbone: BackboneArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DatasetKind {
    /// Frames of the synthetic scene with their exact ground truth.
    Synthetic {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Number of scenes (seeds seed, seed+1, ...).
        #[arg(long, default_value_t = 8)]
        scenes: u64,
        /// Frames per scene.
        #[arg(long, default_value_t = 16)]
        frames_per_scene: u64,
        /// Scene frames between dataset frames.
        #[arg(long, default_value_t = 9)]
        stride: u64,
        /// Seed of the first scene.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Image width.
        #[arg(long, default_value_t = 640)]
        width: usize,
        /// Image height.
        #[arg(long, default_value_t = 480)]
        height: usize,
        /// Objects per scene.
        #[arg(long, default_value_t = 6)]
        objects: usize,
    },
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

/// A ROS log level (`debug`, `info`, `warn`, `error`, `fatal`, any case).
fn parse_log_level(text: &str) -> Result<log::LevelFilter, CommandError> {
    match text.to_ascii_lowercase().as_str() {
        "debug" => Ok(log::LevelFilter::Debug),
        "info" => Ok(log::LevelFilter::Info),
        "warn" => Ok(log::LevelFilter::Warn),
        "error" | "fatal" => Ok(log::LevelFilter::Error),
        _ => Err(CommandError::Usage(format!(
            "--log-level {text}: give debug, info, warn, error or fatal"
        ))),
    }
}

fn run(cli: Cli, ros_tokens: Vec<String>) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            source,
            model,
            max_frames,
            fps,
            width,
            height,
            pixel_format,
            seed,
            loop_files,
            frame_id,
            backbone,
            status_interval,
            heads,
            no_heads,
            disable_heads,
            head_rates,
            pca_fit_frames,
            params_files,
            no_ros,
        } => {
            let input_size = backbone.input_size()?;
            if !(status_interval.is_finite() && status_interval > 0.0) {
                return Err(CommandError::Usage(format!(
                    "--status-interval {status_interval} must be a positive number of seconds"
                ))
                .into());
            }
            let opts = RunOptions {
                model,
                source,
                input_size,
                resize: backbone.resize.into(),
                backend: backbone.backend,
                threads: backbone.threads,
                max_frames,
                fps,
                width,
                height,
                pixel_format,
                seed,
                loop_files,
                frame_id,
                status_interval: Duration::from_secs_f64(status_interval),
                heads,
                no_heads,
                disabled_heads: disable_heads,
                head_rates,
                pca_fit_frames,
            };
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = stop.clone();
                // SIGINT and SIGTERM (the `termination` feature): stop, drain, close, exit 0.
                ctrlc::set_handler(move || {
                    if stop.swap(true, Ordering::SeqCst) {
                        // A second signal while draining: leave at once.
                        std::process::exit(exit::FAILURE);
                    }
                })
                .context("installing the SIGINT/SIGTERM handler")?;
            }
            let mut ros = RosArgs::parse(&ros_tokens, DEFAULT_NODE_NAME)
                .map_err(|e| CommandError::from(dinov3_perception::ros::RosError::from(e)))?;
            ros.params_files.splice(0..0, params_files);
            if let Some(level) = &ros.log_level {
                log::set_max_level(parse_log_level(level)?);
            }
            let mut env = NodeEnv::from_process();
            env.ros = !no_ros;
            let report = run_node(opts, &ros, &env, stop)?;
            let sink_drops: u64 = report.sink_drops.values().sum();
            log::info!(
                "stopped after {:.1} s: {} frames captured, {} processed ({:.1} fps), {} dropped (newest wins), {} failed, {} sink drops; source: {} skipped, {} reconnects",
                report.elapsed.as_secs_f64(),
                report.captured,
                report.processed,
                report.processed as f64 / report.elapsed.as_secs_f64().max(1e-9),
                report.dropped,
                report.failed,
                sink_drops,
                report.source.skipped,
                report.source.reconnects
            );
            if let Some(e) = report.source_error {
                anyhow::bail!("the source failed: {e}");
            }
        }
        Command::Predict {
            model,
            heads,
            images,
            out,
            backbone,
        } => {
            let opts = PredictOptions {
                model,
                heads,
                images,
                out: out.clone(),
                input_size: backbone.input_size()?,
                resize: backbone.resize.into(),
                backend: backbone.backend,
                threads: backbone.threads,
            };
            let report = commands::predict(&opts)?;
            log::info!(
                "wrote predictions of {} images to {} (heads: {}); mean backbone {:.1} ms, heads {:.1} ms",
                report.images,
                out.display(),
                report.heads.join(", "),
                report.backbone_ms,
                report.heads_ms
            );
        }
        Command::Bank {
            action:
                BankAction::Build {
                    model,
                    images,
                    out,
                    max_patches,
                    top_percent,
                    seed,
                    backbone,
                },
        } => {
            let mut opts = BuildBankOptions::new(model, images, out);
            opts.max_patches = max_patches;
            opts.top_percent = top_percent;
            opts.seed = seed;
            opts.input_size = backbone.input_size()?;
            opts.resize = backbone.resize.into();
            opts.backend = backbone.backend;
            opts.threads = backbone.threads;
            let summary = build_bank(&opts).map_err(CommandError::from)?;
            log::info!("{}", summary.line());
        }
        Command::Dataset {
            kind:
                DatasetKind::Synthetic {
                    out,
                    scenes,
                    frames_per_scene,
                    stride,
                    seed,
                    width,
                    height,
                    objects,
                },
        } => {
            let opts = SyntheticDatasetOptions {
                out: out.clone(),
                scene: SyntheticConfig {
                    width,
                    height,
                    seed,
                    num_objects: objects,
                    ..SyntheticConfig::default()
                },
                scenes,
                frames_per_scene,
                stride,
            };
            let summary = dataset::write_synthetic(&opts).map_err(CommandError::from)?;
            log::info!(
                "wrote {} images with {} boxes to {} (labels: {})",
                summary.images,
                summary.boxes,
                out.display(),
                summary
                    .labels
                    .iter()
                    .map(|(l, n)| format!("{l} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Command::Inspect { model } => {
            let text = commands::inspect(&model)?;
            print!("{text}");
        }
        Command::Features {
            model,
            image,
            out,
            backbone,
        } => {
            let input_size = backbone.input_size()?;
            let opts = FeaturesOptions {
                model,
                image,
                out: out.clone(),
                input_size,
                resize: backbone.resize.into(),
                backend: backbone.backend,
                threads: backbone.threads,
            };
            let report = commands::features(&opts)
                .with_context(|| format!("features for {}", opts.image.display()))?;
            log::info!(
                "wrote {} ({}) at input {}; prepare {:.2} s, backbone {:.1} ms",
                out.display(),
                report.arrays.join(", "),
                report.input_size,
                report.prepare_seconds,
                report.run_seconds * 1e3
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    dinov3_perception::telemetry::init_logging(
        "info,rustdds=error,ros2_client=warn,rustdds::network::udp_listener=off",
    );
    // `ros2 launch` appends `--ros-args ...`: split it off before clap sees the argv.
    let (plain, ros_tokens) = split_ros_args(std::env::args());
    let cli = Cli::parse_from(plain);
    match run(cli, ros_tokens) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<CommandError>())
                .map_or(exit::FAILURE, CommandError::exit_code);
            ExitCode::from(code as u8)
        }
    }
}
