//! The head manifest (JSON beside each head ONNX), as `models/HEADS.md` defines it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HeadError;

/// Value of the manifest's `format` field.
pub const HEAD_FORMAT: &str = "dinov3_perception/head";
/// Supported `format_version`.
pub const HEAD_FORMAT_VERSION: u32 = 1;

/// What a head computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Boxes with classes.
    Detection,
    /// Class per pixel.
    Segmentation,
    /// Metric depth per pixel.
    Depth,
    /// Labels of the whole image.
    Classification,
    /// AnomalyDINO memory-bank scoring.
    Anomaly,
    /// PCA colour image of the patch tokens.
    Pca,
}

impl Task {
    /// Every head, in run order: the one list the parameters, the loader, the command line and
    /// the topic table use.
    pub const ALL: [Task; 6] = [
        Task::Detection,
        Task::Segmentation,
        Task::Depth,
        Task::Classification,
        Task::Anomaly,
        Task::Pca,
    ];

    /// The names of [`Task::ALL`].
    pub fn names() -> Vec<&'static str> {
        Task::ALL.iter().map(|t| t.as_str()).collect()
    }

    /// The snake_case name used in manifests and parameters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Task::Detection => "detection",
            Task::Segmentation => "segmentation",
            Task::Depth => "depth",
            Task::Classification => "classification",
            Task::Anomaly => "anomaly",
            Task::Pca => "pca",
        }
    }
}

/// A name that is not one of [`Task::ALL`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0:?} is not a head; heads: detection, segmentation, depth, classification, anomaly, pca")]
pub struct UnknownTask(pub String);

impl std::str::FromStr for Task {
    type Err = UnknownTask;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTask(s.to_string()))
    }
}

/// The backbone a head or bank was made for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneRef {
    /// Backbone variant (`vits16`, `tiny`, ...).
    pub variant: String,
    /// Feature dimension C.
    pub hidden_size: usize,
    /// Patch size in pixels.
    pub patch_size: usize,
    /// Patch grid `[rows, columns]` the head was trained at.
    pub grid: [usize; 2],
    /// sha256 of the backbone ONNX.
    pub onnx_sha256: String,
}

/// Detection post-processing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionParams {
    /// Candidates below this score are dropped.
    pub score_threshold: f64,
    /// A kept box suppresses same-class boxes with IoU strictly above this.
    pub nms_iou_threshold: f64,
    /// At most this many boxes per frame.
    pub max_detections: usize,
    /// At most this many candidates enter NMS (highest scores).
    #[serde(default = "default_pre_nms_top_k")]
    pub pre_nms_top_k: usize,
}

fn default_pre_nms_top_k() -> usize {
    1000
}

/// Segmentation display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationParams {
    /// One RGB colour per class.
    pub palette: Vec<[u8; 3]>,
}

/// Depth range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthParams {
    /// Smallest depth reported, metres.
    pub min_depth_m: f32,
    /// Largest depth reported, metres.
    pub max_depth_m: f32,
}

/// Classification output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationParams {
    /// Labels reported per frame.
    pub top_k: usize,
    /// Whether the graph concatenates the mean patch token to CLS (informational).
    #[serde(default)]
    pub use_mean_patch: bool,
}

/// The manifest of a head ONNX.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadManifest {
    /// Always [`HEAD_FORMAT`].
    pub format: String,
    /// Always [`HEAD_FORMAT_VERSION`].
    pub format_version: u32,
    /// What the head computes (not `anomaly` or `pca`: those have no ONNX).
    pub task: Task,
    /// The ONNX file name, beside the manifest.
    pub onnx_file: String,
    /// sha256 of the ONNX bytes.
    pub onnx_sha256: String,
    /// The backbone it was trained on.
    pub backbone: BackboneRef,
    /// Graph inputs: `patch_tokens`, `layer_<i>`, `cls`.
    pub inputs: Vec<String>,
    /// Class names (detection: objects; segmentation: with background at 0; classification: labels).
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Detection settings (task `detection`).
    #[serde(default)]
    pub detection: Option<DetectionParams>,
    /// Segmentation settings.
    #[serde(default)]
    pub segmentation: Option<SegmentationParams>,
    /// Depth settings.
    #[serde(default)]
    pub depth: Option<DepthParams>,
    /// Classification settings.
    #[serde(default)]
    pub classification: Option<ClassificationParams>,
    /// How it was trained (free-form, informational).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// The manifest path of a head ONNX: same stem, `.json`.
pub fn manifest_path_for(onnx: &Path) -> PathBuf {
    onnx.with_extension("json")
}

impl HeadManifest {
    /// Read and validate the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, HeadError> {
        let text = std::fs::read_to_string(path).map_err(|source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse and validate a manifest's JSON text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, HeadError> {
        let manifest: HeadManifest = serde_json::from_str(text).map_err(|e| {
            HeadError::invalid(
                path,
                format!("not a head manifest: {e}"),
                "write it with models/train_heads.py (format in models/HEADS.md)",
            )
        })?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// Check the fields that serde cannot.
    pub fn validate(&self, path: &Path) -> Result<(), HeadError> {
        let bad = |reason: String, fix: &str| Err(HeadError::invalid(path, reason, fix));
        let reexport = "re-export the head with models/train_heads.py";
        if self.format != HEAD_FORMAT || self.format_version != HEAD_FORMAT_VERSION {
            return bad(
                format!(
                    "format {:?} version {} is not {HEAD_FORMAT:?} version {HEAD_FORMAT_VERSION}",
                    self.format, self.format_version
                ),
                reexport,
            );
        }
        if matches!(self.task, Task::Anomaly | Task::Pca) {
            return bad(
                format!(
                    "task {:?} has no head ONNX (anomaly uses a memory bank, pca fits itself)",
                    self.task.as_str()
                ),
                "use `bank build` for anomaly banks; pca needs no file",
            );
        }
        if self.inputs.is_empty() {
            return bad("lists no inputs".into(), reexport);
        }
        for input in &self.inputs {
            if input != "patch_tokens" && input != "cls" && self.layer_index(input).is_none() {
                return bad(
                    format!("input {input:?} is not patch_tokens, cls or layer_<i>"),
                    reexport,
                );
            }
        }
        let needs_names = self.task != Task::Depth;
        if needs_names && self.class_names.is_empty() {
            return bad(
                format!("a {} head needs class_names", self.task.as_str()),
                "add the class names in model output order to \"class_names\" (or retrain with models/train_heads.py, which writes them)",
            );
        }
        if let Some(i) = self.class_names.iter().position(|n| n.trim().is_empty()) {
            return bad(
                format!("class_names[{i}] is empty"),
                "give every class a name",
            );
        }
        let section = |present: bool, name: &str| {
            if present {
                Ok(())
            } else {
                Err(HeadError::invalid(
                    path,
                    format!("task {name} needs a \"{name}\" section"),
                    "add it (see models/HEADS.md)",
                ))
            }
        };
        match self.task {
            Task::Detection => {
                section(self.detection.is_some(), "detection")?;
                if let Some(d) = &self.detection {
                    if !(0.0..=1.0).contains(&d.score_threshold)
                        || !(0.0..=1.0).contains(&d.nms_iou_threshold)
                        || d.max_detections == 0
                        || d.pre_nms_top_k == 0
                    {
                        return bad(
                            format!("detection settings out of range: {d:?}"),
                            "use thresholds in 0..1 and counts >= 1",
                        );
                    }
                }
            }
            Task::Segmentation => {
                section(self.segmentation.is_some(), "segmentation")?;
                if let Some(s) = &self.segmentation {
                    if s.palette.len() < self.class_names.len() {
                        return bad(
                            format!(
                                "palette has {} colours for {} classes",
                                s.palette.len(),
                                self.class_names.len()
                            ),
                            "give one [r, g, b] per class",
                        );
                    }
                }
                if self.class_names.len() > 256 {
                    return bad(
                        format!(
                            "{} classes do not fit a mono8 class-id image",
                            self.class_names.len()
                        ),
                        "use at most 256 classes",
                    );
                }
            }
            Task::Depth => {
                section(self.depth.is_some(), "depth")?;
                if let Some(d) = &self.depth {
                    if !(d.min_depth_m > 0.0
                        && d.max_depth_m > d.min_depth_m
                        && d.max_depth_m.is_finite())
                    {
                        return bad(
                            format!(
                                "depth range {}..{} m is invalid",
                                d.min_depth_m, d.max_depth_m
                            ),
                            "use 0 < min_depth_m < max_depth_m",
                        );
                    }
                }
            }
            Task::Classification => {
                section(self.classification.is_some(), "classification")?;
                if let Some(c) = &self.classification {
                    if c.top_k == 0 {
                        return bad("classification top_k is 0".into(), "use top_k >= 1");
                    }
                }
            }
            Task::Anomaly | Task::Pca => {}
        }
        Ok(())
    }

    /// `Some(i)` for an input named `layer_<i>`.
    pub fn layer_index(&self, input: &str) -> Option<usize> {
        input.strip_prefix("layer_")?.parse().ok()
    }

    /// Intermediate layers the head reads.
    pub fn needed_layers(&self) -> Vec<usize> {
        self.inputs
            .iter()
            .filter_map(|i| self.layer_index(i))
            .collect()
    }
}
