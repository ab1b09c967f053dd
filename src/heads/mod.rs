//! Task heads: everything computed from the one backbone pass of a frame.
//!
//! Each head reads the shared [`Features`] and the [`Letterbox`] mapping back to camera pixels,
//! and returns a typed [`HeadOutput`] in camera pixels. Heads are pure computation (no I/O after
//! loading). A [`HeadSet`] runs the enabled heads of a frame; each head has a [`HeadControl`] so
//! it can be switched on or off and rate-limited at run time without reloading anything.
//!
//! File contracts (head ONNX + manifest, anomaly memory bank) are in `models/HEADS.md`.

pub mod anomaly;
pub mod classification;
pub mod depth;
pub mod detection;
pub mod loader;
pub mod manifest;
pub mod onnx;
pub mod pca;
pub mod segmentation;
pub mod upsample;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::features::Features;
pub use crate::image_io::RgbImage;
use crate::model::Manifest;
use crate::preprocess::Letterbox;

pub use manifest::{BackboneRef, HeadManifest, Task};

/// Errors of loading or running a head. They name the file and say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// A file could not be read or written.
    #[error("{path}: {source}; check the path and permissions")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A manifest or bank file is malformed or incomplete.
    #[error("{path}: {reason}; {fix}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// How to fix it.
        fix: String,
    },
    /// The head was made for another backbone.
    #[error("{path} was made for another backbone: {what} is {head} in the head but {backbone} in the backbone; {fix}")]
    BackboneMismatch {
        /// The head or bank file.
        path: PathBuf,
        /// Which property differs.
        what: String,
        /// The head's value.
        head: String,
        /// The backbone's value.
        backbone: String,
        /// How to fix it.
        fix: String,
    },
    /// tract could not load or optimise the head graph.
    #[error(
        "{path}: cannot prepare the head graph: {reason}; re-export it with models/train_heads.py"
    )]
    Prepare {
        /// The ONNX file.
        path: PathBuf,
        /// tract's error chain.
        reason: String,
    },
    /// Running a head failed on a frame.
    #[error("head {head}: {reason}")]
    Run {
        /// The head's name.
        head: String,
        /// What failed.
        reason: String,
    },
}

impl HeadError {
    /// Whether the error comes from a file or setting given by the user (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, HeadError::Run { .. })
    }

    /// An [`HeadError::Invalid`] for `path`.
    pub fn invalid(path: &Path, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        HeadError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

/// What a head reads: the features of one backbone pass and the mapping to camera pixels.
#[derive(Debug, Clone, Copy)]
pub struct HeadInput<'a> {
    /// Views over the backbone outputs.
    pub features: Features<'a>,
    /// Model-input <-> camera pixel mapping.
    pub letterbox: &'a Letterbox,
}

impl HeadInput<'_> {
    /// Camera image width.
    pub fn image_width(&self) -> usize {
        self.letterbox.image_width
    }

    /// Camera image height.
    pub fn image_height(&self) -> usize {
        self.letterbox.image_height
    }
}

/// One detected object, in camera pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Class index into the head's class names.
    pub class_id: usize,
    /// Class name.
    pub class_name: String,
    /// Confidence, 0..1.
    pub score: f32,
    /// Left edge (pixels, continuous coordinates: the image spans 0..width).
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

/// A class id per camera pixel, with a colour image for display.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMap {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Class id per pixel, row-major.
    pub class_ids: Vec<u8>,
    /// Packed RGB8 colour per pixel (palette from the manifest).
    pub color: Vec<u8>,
    /// Class names indexed by id.
    pub class_names: Arc<Vec<String>>,
}

/// A float image in camera pixels (depth in metres, anomaly distance).
#[derive(Debug, Clone, PartialEq)]
pub struct FloatImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// One label and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScore {
    /// Class index.
    pub class_id: usize,
    /// Class name.
    pub class_name: String,
    /// Softmax probability.
    pub score: f32,
}

/// AnomalyDINO result of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyResult {
    /// Image score: mean of the top percent of patch distances.
    pub score: f32,
    /// Patch distances (1 - best cosine similarity) upsampled to camera pixels.
    pub map: FloatImage,
}

/// The typed output of one head.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadOutput {
    /// Boxes after NMS, highest score first.
    Detections(Vec<Detection>),
    /// Semantic segmentation.
    Segmentation(ClassMap),
    /// Metric depth in metres per camera pixel.
    Depth(FloatImage),
    /// Top-k labels, best first.
    Classification(Vec<ClassScore>),
    /// Anomaly score and map.
    Anomaly(AnomalyResult),
    /// Three PCA components of the patch tokens as colours.
    Pca(RgbImage),
}

/// A head: reads the features of a frame, returns its output in camera pixels.
pub trait TaskHead: Send {
    /// Unique name (also the parameter prefix, e.g. `detection`).
    fn name(&self) -> &str;
    /// What it computes.
    fn task(&self) -> Task;
    /// Compute the output for one frame.
    fn run(&mut self, input: &HeadInput) -> Result<HeadOutput, HeadError>;
    /// Post-processing settings that may change at run time, with their current values
    /// (e.g. `score_threshold`). Default: none.
    fn settings(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// Change one of [`TaskHead::settings`]. The caller has checked the range.
    fn apply_setting(&mut self, name: &str, value: f64) -> Result<(), String> {
        Err(format!(
            "head {} has no setting {name:?} (value {value})",
            self.name()
        ))
    }
}

/// Run-time switches of one head, shared with whoever changes them (parameters, tests).
#[derive(Debug)]
pub struct HeadControl {
    enabled: AtomicBool,
    /// Minimum time between runs in nanoseconds; 0 = every frame.
    min_period_ns: AtomicU64,
    /// Setting changes waiting for the head's next run (applied on the inference thread).
    pending: Mutex<Vec<(String, f64)>>,
}

impl HeadControl {
    /// Enabled, every frame.
    pub fn new() -> Self {
        Self {
            enabled: AtomicBool::new(true),
            min_period_ns: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Whether the head runs at all.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Switch the head on or off (takes effect at the next frame).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Maximum rate in Hz; 0 = every frame.
    pub fn rate_hz(&self) -> f64 {
        let ns = self.min_period_ns.load(Ordering::Relaxed);
        if ns == 0 {
            0.0
        } else {
            1e9 / ns as f64
        }
    }

    /// Limit the head to `hz` runs per second (0 = every frame). Rejects negative or NaN rates.
    pub fn set_rate_hz(&self, hz: f64) -> Result<(), String> {
        if !hz.is_finite() || hz < 0.0 {
            return Err(format!(
                "rate {hz} Hz is invalid: give a finite rate >= 0 (0 = every frame)"
            ));
        }
        let ns = if hz == 0.0 { 0 } else { (1e9 / hz) as u64 };
        self.min_period_ns.store(ns, Ordering::Relaxed);
        Ok(())
    }

    /// Queue a change of one of the head's [`TaskHead::settings`]; it takes effect before the
    /// head's next run.
    pub fn request_setting(&self, name: &str, value: f64) {
        if let Ok(mut p) = self.pending.lock() {
            p.push((name.to_string(), value));
        }
    }

    fn take_pending(&self) -> Vec<(String, f64)> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    fn min_period(&self) -> Duration {
        Duration::from_nanos(self.min_period_ns.load(Ordering::Relaxed))
    }
}

impl Default for HeadControl {
    fn default() -> Self {
        Self::new()
    }
}

/// Output of one head for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedOutput {
    /// The head's name.
    pub head: String,
    /// What it computed.
    pub output: HeadOutput,
    /// Time the head took.
    pub elapsed: Duration,
}

struct Slot {
    head: Box<dyn TaskHead>,
    control: Arc<HeadControl>,
    last_run: Option<Instant>,
}

/// The heads of a pipeline, run one after another on the inference thread.
#[derive(Default)]
pub struct HeadSet {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for HeadSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl HeadSet {
    /// No heads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a head; returns its control. Names must be unique.
    pub fn add(&mut self, head: Box<dyn TaskHead>) -> Result<Arc<HeadControl>, String> {
        if self.slots.iter().any(|s| s.head.name() == head.name()) {
            return Err(format!(
                "two heads are named {:?}: give each head its own name",
                head.name()
            ));
        }
        let control = Arc::new(HeadControl::new());
        self.slots.push(Slot {
            head,
            control: control.clone(),
            last_run: None,
        });
        Ok(control)
    }

    /// Head names in run order.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| s.head.name().to_string())
            .collect()
    }

    /// Number of heads.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no heads.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The control of head `name`.
    pub fn control(&self, name: &str) -> Option<Arc<HeadControl>> {
        self.slots
            .iter()
            .find(|s| s.head.name() == name)
            .map(|s| s.control.clone())
    }

    /// Every head's name, task and control, in run order.
    pub fn controls(&self) -> Vec<(String, Task, Arc<HeadControl>)> {
        self.slots
            .iter()
            .map(|s| (s.head.name().to_string(), s.head.task(), s.control.clone()))
            .collect()
    }

    /// Every head's run-time settings: (head, setting, current value).
    pub fn settings(&self) -> Vec<(String, &'static str, f64)> {
        self.slots
            .iter()
            .flat_map(|s| {
                let name = s.head.name().to_string();
                s.head
                    .settings()
                    .into_iter()
                    .map(move |(k, v)| (name.clone(), k, v))
            })
            .collect()
    }

    /// Run every enabled head that is due at `now`. A failing head is reported in the second
    /// list and does not stop the others.
    pub fn run(
        &mut self,
        input: &HeadInput,
        now: Instant,
    ) -> (Vec<NamedOutput>, Vec<(String, HeadError)>) {
        let mut outputs = Vec::new();
        let mut errors = Vec::new();
        for slot in &mut self.slots {
            for (name, value) in slot.control.take_pending() {
                match slot.head.apply_setting(&name, value) {
                    Ok(()) => log::info!("head {}: {name} = {value}", slot.head.name()),
                    Err(e) => log::warn!("{e}"),
                }
            }
            if !slot.control.enabled() {
                continue;
            }
            let period = slot.control.min_period();
            if let Some(last) = slot.last_run {
                if !period.is_zero() && now.saturating_duration_since(last) < period {
                    continue;
                }
            }
            slot.last_run = Some(now);
            let t0 = Instant::now();
            match slot.head.run(input) {
                Ok(output) => outputs.push(NamedOutput {
                    head: slot.head.name().to_string(),
                    output,
                    elapsed: t0.elapsed(),
                }),
                Err(e) => errors.push((slot.head.name().to_string(), e)),
            }
        }
        (outputs, errors)
    }
}

/// Check that a head or bank made for `reference` fits the backbone `manifest` at grid `grid`.
pub fn check_backbone(
    path: &Path,
    reference: &BackboneRef,
    manifest: &Manifest,
    grid: (usize, usize),
    needed_layers: &[usize],
) -> Result<(), HeadError> {
    let mismatch = |what: &str, head: String, backbone: String, fix: &str| {
        Err(HeadError::BackboneMismatch {
            path: path.to_path_buf(),
            what: what.into(),
            head,
            backbone,
            fix: fix.into(),
        })
    };
    let retrain = "retrain it on this backbone with models/train_heads.py (or run the backbone it was made for)";
    if reference.hidden_size != manifest.hidden_size {
        return mismatch(
            "the feature dimension",
            reference.hidden_size.to_string(),
            manifest.hidden_size.to_string(),
            retrain,
        );
    }
    if reference.patch_size != manifest.patch_size {
        return mismatch(
            "the patch size",
            reference.patch_size.to_string(),
            manifest.patch_size.to_string(),
            retrain,
        );
    }
    if (reference.grid[0], reference.grid[1]) != grid {
        return mismatch(
            "the patch grid (rows x columns)",
            format!("{}x{}", reference.grid[0], reference.grid[1]),
            format!("{}x{}", grid.0, grid.1),
            &format!(
                "run the backbone at {}x{} pixels (--input-size) or retrain the head at this size",
                reference.grid[0] * manifest.patch_size,
                reference.grid[1] * manifest.patch_size
            ),
        );
    }
    for layer in needed_layers {
        if !manifest.layers.contains(layer) {
            return mismatch(
                "an intermediate layer",
                format!("layer_{layer} needed"),
                format!("layers {:?} exported", manifest.layers),
                &format!("re-export the backbone with --layers including {layer}"),
            );
        }
    }
    if !manifest.is_identity(&reference.onnx_sha256) {
        return mismatch(
            "the backbone sha256",
            short_sha(&reference.onnx_sha256),
            short_sha(manifest.identity_sha256()),
            retrain,
        );
    }
    Ok(())
}

fn short_sha(s: &str) -> String {
    s.chars().take(12).collect()
}
