//! The bodies of the command-line subcommands (`main.rs` only parses arguments).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{BackendError, LoadedBackbone};
use crate::dataset::DatasetError;
use crate::features::{Features, FeaturesError};
use crate::frame::{Clock, Frame, Stamp, SystemClock};
use crate::heads::loader::{load_heads, HeadsConfig};
use crate::heads::{HeadError, HeadOutput, HeadSet};
use crate::image_io::{load_rgb, ImageFileError};
use crate::model::{BackboneModel, InputSize, ModelError};
use crate::npz::{write_npy_f32, write_npz, NamedArray, NpyError};
use crate::pipeline::{InferenceStage, PipelineError, PipelineReport};
use crate::preprocess::{PreprocessError, Preprocessor, ResizeMode};
use crate::source::convert::PixelFormat;
use crate::source::files::{FilesConfig, FilesSource};
use crate::source::synthetic::{SyntheticConfig, SyntheticSource};
use crate::source::v4l2::{V4l2Config, V4l2Source};
use crate::source::{FrameSource, SourceError, SourceSpec};

/// Any error of a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Model file problem.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Backend problem.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Image file problem.
    #[error(transparent)]
    Image(#[from] ImageFileError),
    /// Preprocessing problem.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// Output file problem.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// Outputs do not match the manifest.
    #[error(transparent)]
    Features(#[from] FeaturesError),
    /// A frame source problem.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A head or memory bank problem (boxed: the variant is large).
    #[error(transparent)]
    Head(Box<HeadError>),
    /// Writing a dataset failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Building an anomaly memory bank failed (boxed: the variant is large).
    #[error(transparent)]
    Bank(Box<crate::bank::BankError>),
    /// Writing an output failed.
    #[error("cannot write {path}: {reason}; check the directory and free space")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// ROS arguments, parameters, names or DDS (boxed: the variant is large).
    #[error(transparent)]
    Ros(Box<crate::ros::RosError>),
    /// A camera calibration problem.
    #[error(transparent)]
    Calibration(Box<crate::calibration::CalibrationError>),
}

impl From<crate::ros::RosError> for CommandError {
    fn from(e: crate::ros::RosError) -> Self {
        CommandError::Ros(Box::new(e))
    }
}

impl From<crate::ros::params::ParamError> for CommandError {
    fn from(e: crate::ros::params::ParamError) -> Self {
        CommandError::Ros(Box::new(e.into()))
    }
}

impl From<crate::calibration::CalibrationError> for CommandError {
    fn from(e: crate::calibration::CalibrationError) -> Self {
        CommandError::Calibration(Box::new(e))
    }
}

impl From<HeadError> for CommandError {
    fn from(e: HeadError) -> Self {
        CommandError::Head(Box::new(e))
    }
}

impl From<crate::bank::BankError> for CommandError {
    fn from(e: crate::bank::BankError) -> Self {
        CommandError::Bank(Box::new(e))
    }
}

impl CommandError {
    /// Process exit code (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandError::Backend(e) if !e.is_bad_input() => crate::exit::FAILURE,
            CommandError::Source(e) if !e.is_bad_input() => crate::exit::FAILURE,
            CommandError::Head(e) if !e.is_bad_input() => crate::exit::FAILURE,
            CommandError::Bank(e) => e.exit_code(),
            CommandError::Write { .. } => crate::exit::FAILURE,
            CommandError::Ros(e) if !e.is_bad_input() => crate::exit::FAILURE,
            CommandError::Calibration(e) if !e.is_bad_input() => crate::exit::FAILURE,
            CommandError::Pipeline(PipelineError::Source(e)) if e.is_bad_input() => {
                crate::exit::BAD_INPUT
            }
            CommandError::Pipeline(PipelineError::Backend(e)) if e.is_bad_input() => {
                crate::exit::BAD_INPUT
            }
            CommandError::Pipeline(_) => crate::exit::FAILURE,
            _ => crate::exit::BAD_INPUT,
        }
    }
}

/// Parse `HxW` (e.g. `224x224`).
pub fn parse_input_size(text: &str) -> Result<InputSize, CommandError> {
    let usage = || {
        CommandError::Usage(format!(
            "input size {text:?} is not HEIGHTxWIDTH (e.g. 224x224, multiples of 16)"
        ))
    };
    let (h, w) = text.split_once(['x', 'X']).ok_or_else(usage)?;
    Ok(InputSize {
        height: h.trim().parse().map_err(|_| usage())?,
        width: w.trim().parse().map_err(|_| usage())?,
    })
}

/// `inspect MODEL`: manifest, graph inputs/outputs, parameter count, FLOP estimate.
pub fn inspect(path: &Path) -> Result<String, CommandError> {
    let model = BackboneModel::load(path)?;
    let m = &model.manifest;
    let g = &model.graph;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "model      {}", model.onnx_path.display());
    let _ = writeln!(out, "manifest   {}", model.manifest_path.display());
    let _ = writeln!(out, "sha256     {} (verified)", m.onnx_sha256);
    let _ = writeln!(
        out,
        "variant    {} (patch {}, hidden {}, {} layers, {} heads, {} registers)",
        m.variant, m.patch_size, m.hidden_size, m.num_layers, m.num_heads, m.num_register_tokens
    );
    let size = model.fixed_input_size();
    let _ = writeln!(
        out,
        "input size {}",
        size.map_or(
            "dynamic (any multiple of the patch size)".to_string(),
            |s| s.to_string()
        )
    );
    let _ = writeln!(out, "mean/std   {:?} / {:?}", m.image_mean, m.image_std);
    let _ = writeln!(
        out,
        "source     {}{}{}",
        m.source.kind,
        m.source
            .path
            .as_ref()
            .map_or(String::new(), |p| format!(" {p}")),
        m.source
            .seed
            .map_or(String::new(), |s| format!(" seed {s}"))
    );
    let exporter: Vec<String> = m.exporter.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        out,
        "exporter   {}; opset {}; producer {}",
        exporter.join(", "),
        m.opset,
        g.producer
    );
    let _ = writeln!(out, "inputs");
    for i in &g.inputs {
        let _ = writeln!(out, "  {i}");
    }
    let _ = writeln!(out, "outputs");
    for o in &g.outputs {
        let _ = writeln!(out, "  {o}");
    }
    let _ = writeln!(
        out,
        "parameters {} (manifest), {} stored weight values (ONNX initializers)",
        group_digits(m.parameter_count),
        group_digits(g.initializer_elements)
    );
    let flops_size = size.unwrap_or(InputSize {
        height: 224,
        width: 224,
    });
    let _ = writeln!(
        out,
        "FLOPs      {:.2} G per frame at {} (2 x multiply-accumulates of the matrix products)",
        model.flops(flops_size) as f64 / 1e9,
        flops_size
    );
    let ops: Vec<String> = g
        .op_counts
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    let _ = writeln!(out, "graph      {} nodes; {}", g.node_count, ops.join(" "));
    Ok(out)
}

/// Options of the `features` subcommand.
#[derive(Debug, Clone)]
pub struct FeaturesOptions {
    /// Backbone ONNX.
    pub model: PathBuf,
    /// Image file.
    pub image: PathBuf,
    /// Output `.npz`.
    pub out: PathBuf,
    /// Input size for dynamic models (fixed models use their own).
    pub input_size: Option<InputSize>,
    /// How the image is fitted to the input.
    pub resize: ResizeMode,
    /// Backend name.
    pub backend: String,
    /// Threads (0 = all cores).
    pub threads: usize,
}

/// What `features` did, for the log line.
#[derive(Debug, Clone)]
pub struct FeaturesReport {
    /// Input size used.
    pub input_size: InputSize,
    /// Arrays written.
    pub arrays: Vec<String>,
    /// Seconds to load and prepare the model.
    pub prepare_seconds: f64,
    /// Seconds of the backbone pass.
    pub run_seconds: f64,
}

/// `features`: one image -> `cls`, `registers`, `patch_tokens` (+ layers) as float32 `.npz`.
pub fn features(opts: &FeaturesOptions) -> Result<FeaturesReport, CommandError> {
    let start = Instant::now();
    let image = load_rgb(&opts.image)?;
    let LoadedBackbone {
        model,
        size,
        prepared,
        ..
    } = LoadedBackbone::load(&opts.model, opts.input_size, &opts.backend, opts.threads)?;
    let mut session = prepared.session()?;
    let prepare_seconds = start.elapsed().as_secs_f64();

    let mut pre = Preprocessor::new(&model.manifest, size, opts.resize)?;
    let (input, _letterbox) = pre.run(&image.view())?;
    let t = Instant::now();
    let outputs = session.run(&input)?;
    let run_seconds = t.elapsed().as_secs_f64();
    // Validates every shape against the manifest before anything is written.
    Features::new(&outputs, &model.manifest, size)?;

    let arrays: Vec<NamedArray> = outputs
        .tensors
        .iter()
        .map(|t| NamedArray {
            name: &t.name,
            shape: &t.shape,
            data: t.data(),
        })
        .collect();
    write_npz(&opts.out, &arrays)?;
    Ok(FeaturesReport {
        input_size: size,
        arrays: outputs.tensors.iter().map(|t| t.name.clone()).collect(),
        prepare_seconds,
        run_seconds,
    })
}

/// The model `run` uses when none is given: a tiny architecture-exact DINOv3 (random weights,
/// 240x320 input) shipped in `models/demo/` with heads trained on the synthetic scene.
pub fn bundled_model() -> PathBuf {
    bundled_heads().join("dinov3_tiny_240x320.onnx")
}

/// The demo heads trained for [`bundled_model`] on the synthetic scene.
pub fn bundled_heads() -> PathBuf {
    share_dir().join("models/demo")
}

/// Where the bundled model, demo heads and calibration files are: `$DINOV3_PERCEPTION_SHARE_DIR`,
/// else the colcon install layout next to the executable
/// (`<prefix>/lib/dinov3_perception/<exe>` -> `<prefix>/share/dinov3_perception`), else the
/// install directory CMake passed at build time, else the source tree.
pub fn share_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DINOV3_PERCEPTION_SHARE_DIR") {
        return PathBuf::from(dir);
    }
    let installed = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe
            .parent()?
            .parent()?
            .parent()?
            .join("share/dinov3_perception");
        dir.join("models/demo").is_dir().then_some(dir)
    });
    if let Some(dir) = installed {
        return dir;
    }
    if let Some(dir) = option_env!("DINOV3_PERCEPTION_SHARE_DIR") {
        if Path::new(dir).join("models/demo").is_dir() {
            return PathBuf::from(dir);
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Options of the `run` subcommand (the node).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Backbone ONNX; `None` = [`bundled_model`].
    pub model: Option<PathBuf>,
    /// Where frames come from.
    pub source: SourceSpec,
    /// Input size for dynamic models.
    pub input_size: Option<InputSize>,
    /// How frames are fitted to the model input.
    pub resize: ResizeMode,
    /// Backend name.
    pub backend: String,
    /// Threads for matrix products (0 = all cores).
    pub threads: usize,
    /// Stop after this many processed frames.
    pub max_frames: Option<u64>,
    /// Source frame rate (synthetic, files: target rate, 0 = as fast as possible; v4l2: requested).
    pub fps: Option<f64>,
    /// Source image width (synthetic, v4l2).
    pub width: Option<usize>,
    /// Source image height (synthetic, v4l2).
    pub height: Option<usize>,
    /// Camera pixel format (v4l2).
    pub pixel_format: Option<PixelFormat>,
    /// Seed of the synthetic scene.
    pub seed: u64,
    /// Loop over an image directory.
    pub loop_files: bool,
    /// frame_id of the frames ("" = decided by the node: calibration camera_name, image
    /// messages' frame_id, else `camera_optical_frame`).
    pub frame_id: String,
    /// Status line interval.
    pub status_interval: Duration,
    /// Heads directory; `None` = the demo heads with the bundled model, no heads otherwise
    /// (PCA aside).
    pub heads: Option<PathBuf>,
    /// Run no heads at all.
    pub no_heads: bool,
    /// Heads switched off at start.
    pub disabled_heads: Vec<String>,
    /// Per-head rate limits in Hz.
    pub head_rates: Vec<(String, f64)>,
    /// Frames the PCA basis is fitted on.
    pub pca_fit_frames: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            model: None,
            source: SourceSpec::Synthetic,
            input_size: None,
            resize: ResizeMode::Stretch,
            backend: "tract".into(),
            threads: 0,
            max_frames: None,
            fps: None,
            width: None,
            height: None,
            pixel_format: None,
            seed: 0,
            loop_files: false,
            frame_id: String::new(),
            status_interval: Duration::from_secs(1),
            heads: None,
            no_heads: false,
            disabled_heads: Vec::new(),
            head_rates: Vec::new(),
            pca_fit_frames: HeadsConfig::default().pca_fit_frames,
        }
    }
}

fn usize_to_u32(name: &'static str, v: usize) -> Result<u32, CommandError> {
    u32::try_from(v).map_err(|_| {
        CommandError::Source(SourceError::BadParameter {
            name,
            value: v.to_string(),
            reason: "too large".into(),
        })
    })
}

/// Build the frame source `opts.source` names.
pub fn make_source(
    opts: &RunOptions,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
) -> Result<Box<dyn FrameSource>, CommandError> {
    Ok(match &opts.source {
        SourceSpec::Synthetic => {
            let mut c = SyntheticConfig {
                seed: opts.seed,
                frame_id: opts.frame_id.clone(),
                ..SyntheticConfig::default()
            };
            if let Some(fps) = opts.fps {
                c.fps = fps;
            }
            if let Some(w) = opts.width {
                c.width = w;
            }
            if let Some(h) = opts.height {
                c.height = h;
            }
            Box::new(SyntheticSource::new(c, clock)?)
        }
        SourceSpec::Dir(dir) => {
            let mut c = FilesConfig::new(dir.clone());
            c.loop_forever = opts.loop_files;
            c.frame_id = opts.frame_id.clone();
            if let Some(fps) = opts.fps {
                c.fps = fps;
            }
            Box::new(FilesSource::new(c, clock)?)
        }
        SourceSpec::V4l2(path) => {
            let mut c = V4l2Config::new(path.clone());
            c.frame_id = opts.frame_id.clone();
            if let Some(f) = opts.pixel_format {
                c.format = f;
            }
            if let Some(w) = opts.width {
                c.width = usize_to_u32("width", w)?;
            }
            if let Some(h) = opts.height {
                c.height = usize_to_u32("height", h)?;
            }
            if let Some(fps) = opts.fps {
                if !(fps.is_finite() && (1.0..=1000.0).contains(&fps)) {
                    return Err(SourceError::BadParameter {
                        name: "fps",
                        value: fps.to_string(),
                        reason: "a camera rate is 1..1000 frames per second".into(),
                    }
                    .into());
                }
                c.fps = fps.round() as u32;
            }
            Box::new(V4l2Source::new(c, clock)?.with_stop_flag(stop))
        }
        SourceSpec::Ros(topic) => {
            return Err(CommandError::Usage(format!(
                "source ros:{topic} is read by the ROS node (run), not here"
            )))
        }
    })
}

/// `run` without ROS arguments: the node with default parameters (see [`crate::run`]).
pub fn run(opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<PipelineReport, CommandError> {
    crate::run::run_node(
        opts.clone(),
        &crate::ros::args::RosArgs::default(),
        &crate::run::NodeEnv::from_process(),
        stop,
    )
}

/// The heads of a `run`: the given directory, the demo heads with the bundled model, then the
/// start-up switches and rates.
pub(crate) fn run_heads(
    opts: &RunOptions,
    model: &BackboneModel,
    size: InputSize,
) -> Result<HeadSet, CommandError> {
    if opts.no_heads {
        return Ok(HeadSet::new());
    }
    let dir = match (&opts.heads, &opts.model) {
        (Some(dir), _) => Some(dir.clone()),
        (None, None) => Some(bundled_heads()),
        (None, Some(_)) => None,
    };
    let config = HeadsConfig {
        dir,
        pca: !opts.disabled_heads.iter().any(|h| h == "pca"),
        pca_fit_frames: opts.pca_fit_frames,
    };
    let p = model.manifest.patch_size;
    let heads = load_heads(&config, &model.manifest, (size.height / p, size.width / p))?;
    for name in &opts.disabled_heads {
        match heads.control(name) {
            Some(c) => c.set_enabled(false),
            None if crate::ros::node_params::HEAD_NAMES.contains(&name.as_str()) => {}
            None => {
                return Err(CommandError::Usage(format!(
                    "--disable-head {name}: no such head (loaded: {})",
                    heads.names().join(", ")
                )))
            }
        }
    }
    for (name, hz) in &opts.head_rates {
        let control = heads.control(name).ok_or_else(|| {
            CommandError::Usage(format!(
                "--head-rate {name}={hz}: no such head (loaded: {})",
                heads.names().join(", ")
            ))
        })?;
        control
            .set_rate_hz(*hz)
            .map_err(|e| CommandError::Usage(format!("--head-rate {name}={hz}: {e}")))?;
    }
    Ok(heads)
}

/// Options of `predict`: backbone + heads over a directory of images, outputs written in the
/// formats `models/eval_heads.py` reads.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Backbone ONNX.
    pub model: PathBuf,
    /// Heads directory.
    pub heads: PathBuf,
    /// Image directory (PNG/JPEG, sorted by name).
    pub images: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Input size for dynamic models.
    pub input_size: Option<InputSize>,
    /// How images are fitted to the model input.
    pub resize: ResizeMode,
    /// Backend name.
    pub backend: String,
    /// Threads.
    pub threads: usize,
}

/// What `predict` did.
#[derive(Debug, Clone)]
pub struct PredictReport {
    /// Images processed.
    pub images: usize,
    /// Heads that ran.
    pub heads: Vec<String>,
    /// Mean backbone time per image, ms.
    pub backbone_ms: f64,
    /// Mean time of all heads per image, ms.
    pub heads_ms: f64,
}

#[derive(serde::Serialize)]
struct CocoResult {
    image_id: u64,
    category_id: usize,
    bbox: [f32; 4],
    score: f32,
}

/// COCO image id of an image file: its stem as a number (`000012.png` -> 12), else its 1-based
/// position.
fn image_id(path: &Path, index: usize) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(index as u64 + 1)
}

/// `predict`: every head on every image; writes `detections.json` (COCO results, category ids
/// from 1), `masks/<stem>.png`, `depth/<stem>.npy`, `classification.json`, `anomaly.json`.
pub fn predict(opts: &PredictOptions) -> Result<PredictReport, CommandError> {
    let backbone = LoadedBackbone::load(&opts.model, opts.input_size, &opts.backend, opts.threads)?;
    let config = HeadsConfig {
        dir: Some(opts.heads.clone()),
        pca: false,
        ..HeadsConfig::default()
    };
    let heads = load_heads(&config, &backbone.model.manifest, backbone.grid())?;
    let names = heads.names();
    let mut stage = InferenceStage::new(
        backbone.prepared.as_ref(),
        Arc::new(backbone.model.manifest.clone()),
        opts.resize,
    )?
    .with_heads(heads);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&opts.images)
        .map_err(|e| {
            CommandError::Usage(format!(
                "--images {}: {e}; give a directory of PNG or JPEG files",
                opts.images.display()
            ))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CommandError::Usage(format!(
            "--images {}: no PNG or JPEG files",
            opts.images.display()
        )));
    }
    let write = |path: &Path, e: &dyn std::fmt::Display| CommandError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    for sub in ["masks", "depth"] {
        let d = opts.out.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| write(&d, &e))?;
    }
    let clock = SystemClock;
    let mut coco = Vec::new();
    let mut classes = serde_json::Map::new();
    let mut anomaly = serde_json::Map::new();
    let (mut backbone_s, mut heads_s) = (0.0, 0.0);
    for (i, path) in files.iter().enumerate() {
        let img = load_rgb(path)?;
        let id = image_id(path, i);
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("image")
            .to_string();
        let frame = Frame {
            width: img.width,
            height: img.height,
            rgb: img.data,
            stamp: Stamp(0),
            seq: i as u64,
            frame_id: "camera".into(),
            ground_truth: None,
        };
        let result = stage
            .run_frame(frame, &clock)
            .map_err(|e| CommandError::Usage(format!("{}: {e}", path.display())))?;
        if let Some((head, e)) = result.head_errors.first() {
            return Err(HeadError::Run {
                head: head.clone(),
                reason: format!("{}: {e}", path.display()),
            }
            .into());
        }
        backbone_s += result.timings.backbone.as_secs_f64();
        heads_s += result.timings.heads.as_secs_f64();
        for h in &result.heads {
            match &h.output {
                HeadOutput::Detections(dets) => coco.extend(dets.iter().map(|d| CocoResult {
                    image_id: id,
                    category_id: d.class_id + 1,
                    bbox: [d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0],
                    score: d.score,
                })),
                HeadOutput::Segmentation(m) => {
                    let f = opts.out.join("masks").join(format!("{stem}.png"));
                    image::save_buffer(
                        &f,
                        &m.class_ids,
                        m.width as u32,
                        m.height as u32,
                        image::ColorType::L8,
                    )
                    .map_err(|e| write(&f, &e))?;
                }
                HeadOutput::Depth(d) => {
                    let f = opts.out.join("depth").join(format!("{stem}.npy"));
                    write_npy_f32(&f, &[d.height, d.width], &d.data)?;
                }
                HeadOutput::Classification(c) => {
                    let labels: Vec<serde_json::Value> = c
                        .iter()
                        .map(|l| serde_json::json!([l.class_name, l.score]))
                        .collect();
                    classes.insert(stem.clone(), labels.into());
                }
                HeadOutput::Anomaly(a) => {
                    anomaly.insert(stem.clone(), serde_json::json!(a.score));
                }
                HeadOutput::Pca(_) => {}
            }
        }
    }
    let files_out = [
        (
            "detections.json",
            serde_json::to_value(&coco).unwrap_or_default(),
        ),
        ("classification.json", classes.into()),
        ("anomaly.json", anomaly.into()),
    ];
    for (name, value) in files_out {
        let f = opts.out.join(name);
        std::fs::write(&f, value.to_string()).map_err(|e| write(&f, &e))?;
    }
    let n = files.len() as f64;
    Ok(PredictReport {
        images: files.len(),
        heads: names,
        backbone_ms: backbone_s / n * 1e3,
        heads_ms: heads_s / n * 1e3,
    })
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(
            parse_input_size("224x320").unwrap(),
            InputSize {
                height: 224,
                width: 320
            }
        );
        assert!(parse_input_size("224").is_err());
        assert!(parse_input_size("ax2").is_err());
    }

    #[test]
    fn groups_digits() {
        assert_eq!(group_digits(21_600_000), "21_600_000");
        assert_eq!(group_digits(12), "12");
    }
}
