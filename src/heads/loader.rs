//! Loading a directory of heads by their standard file names.
//!
//! | file                         | head             |
//! |------------------------------|------------------|
//! | `detection.onnx` (+ `.json`) | detection        |
//! | `segmentation.onnx`          | segmentation     |
//! | `depth.onnx`                 | depth            |
//! | `classification.onnx`        | classification   |
//! | `anomaly.bank.json` (+ npz)  | anomaly          |
//! | `pca.json` (optional)        | PCA basis; without it the PCA head fits on the first frames |
//!
//! The PCA head needs no file and is always added unless switched off.

use std::path::{Path, PathBuf};

use super::anomaly::AnomalyHead;
use super::classification::ClassificationHead;
use super::depth::DepthHead;
use super::detection::DetectionHead;
use super::manifest::Task;
use super::onnx::{load_onnx_head, GraphRuntime, OnnxHead};
use super::pca::{PcaBasis, PcaHead};
use super::segmentation::SegmentationHead;
use super::{HeadError, HeadSet, TaskHead};
use crate::backend::settings::BackendSettings;
use crate::backend::LoadedBackbone;
use crate::model::Manifest;

/// Loads head `name` from its file, checked against the backbone running at the grid.
type LoadHead = fn(
    &str,
    &Path,
    &Manifest,
    (usize, usize),
    &GraphRuntime,
) -> Result<Box<dyn TaskHead>, HeadError>;

/// One head file of a heads directory.
#[derive(Debug, Clone, Copy)]
pub struct HeadFile {
    /// The head's task (its name is the task's name).
    pub task: Task,
    /// File name in the directory.
    pub file: &'static str,
    load: LoadHead,
}

/// Head files in a heads directory, in run order, with how each is loaded.
pub const HEAD_FILES: &[HeadFile] = &[
    HeadFile {
        task: Task::Detection,
        file: "detection.onnx",
        load: onnx_head::<DetectionHead>,
    },
    HeadFile {
        task: Task::Segmentation,
        file: "segmentation.onnx",
        load: onnx_head::<SegmentationHead>,
    },
    HeadFile {
        task: Task::Depth,
        file: "depth.onnx",
        load: onnx_head::<DepthHead>,
    },
    HeadFile {
        task: Task::Classification,
        file: "classification.onnx",
        load: onnx_head::<ClassificationHead>,
    },
    HeadFile {
        task: Task::Anomaly,
        file: "anomaly.bank.json",
        load: anomaly_head,
    },
];

/// The four ONNX heads all load through [`load_onnx_head`].
fn onnx_head<H: OnnxHead>(
    name: &str,
    path: &Path,
    backbone: &Manifest,
    grid: (usize, usize),
    runtime: &GraphRuntime,
) -> Result<Box<dyn TaskHead>, HeadError> {
    Ok(Box::new(load_onnx_head::<H>(
        name, path, backbone, grid, runtime,
    )?))
}

/// The anomaly head loads a memory bank instead (its search runs on the CPU).
fn anomaly_head(
    name: &str,
    path: &Path,
    backbone: &Manifest,
    grid: (usize, usize),
    _runtime: &GraphRuntime,
) -> Result<Box<dyn TaskHead>, HeadError> {
    Ok(Box::new(AnomalyHead::load(name, path, backbone, grid)?))
}

/// Which heads to load.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadsConfig {
    /// Directory with head files (see the module docs); `None`: only PCA.
    pub dir: Option<PathBuf>,
    /// Add the PCA feature image head.
    pub pca: bool,
    /// Frames the PCA basis is fitted on (when the directory has no `pca.json`).
    pub pca_fit_frames: usize,
}

impl Default for HeadsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            pca: true,
            pca_fit_frames: 30,
        }
    }
}

/// Load the heads `config` asks for, checked against `backbone` running at `grid`.
pub fn load_heads(
    config: &HeadsConfig,
    backbone: &Manifest,
    grid: (usize, usize),
) -> Result<HeadSet, HeadError> {
    load_heads_on(config, backbone, grid, &GraphRuntime::Tract)
}

/// The heads `config` asks for, for `backbone` as it was loaded: its manifest and grid, and
/// the backend it runs on (the head graphs follow it onto ONNX Runtime when
/// `settings.onnxruntime.heads` is set).
pub fn load_heads_for(
    config: &HeadsConfig,
    backbone: &LoadedBackbone,
    settings: &BackendSettings,
) -> Result<HeadSet, HeadError> {
    let runtime = GraphRuntime::for_backbone(settings, backbone.backend);
    let (manifest, grid) = (&backbone.model.manifest, backbone.grid());
    if matches!(runtime, GraphRuntime::Tract) {
        return load_heads_on(config, manifest, grid, &runtime);
    }
    match load_heads_on(config, manifest, grid, &runtime) {
        Ok(set) => {
            log::info!("head graphs run on {}", runtime.name());
            Ok(set)
        }
        // The graph loaded on tract's checks but the provider could not take it.
        Err(e @ HeadError::Prepare { .. })
            if settings.on_failure == crate::backend::settings::OnBackendFailure::Fallback =>
        {
            log::error!(
                "head graphs cannot run on {}: {e}; running them on tract (on_backend_failure:=exit stops the node instead)",
                runtime.name()
            );
            load_heads_on(config, manifest, grid, &GraphRuntime::Tract)
        }
        Err(e) => Err(e),
    }
}

/// [`load_heads`], the head graphs run by `runtime`.
pub fn load_heads_on(
    config: &HeadsConfig,
    backbone: &Manifest,
    grid: (usize, usize),
    runtime: &GraphRuntime,
) -> Result<HeadSet, HeadError> {
    let mut set = HeadSet::new();
    let add = |set: &mut HeadSet, head: Box<dyn TaskHead>| {
        // Names in HEAD_FILES are distinct, so adding cannot fail.
        let _ = set.add(head);
    };
    if let Some(dir) = &config.dir {
        if !dir.is_dir() {
            return Err(HeadError::invalid(
                dir,
                "is not a directory",
                "give the directory that holds detection.onnx, segmentation.onnx, ... (models/demo/ is an example)",
            ));
        }
        let mut found = 0;
        for head in HEAD_FILES {
            let path = dir.join(head.file);
            if !path.exists() {
                continue;
            }
            found += 1;
            add(
                &mut set,
                (head.load)(head.task.as_str(), &path, backbone, grid, runtime)?,
            );
        }
        let pca_file = dir.join("pca.json");
        if config.pca && pca_file.exists() {
            let basis = PcaBasis::load(&pca_file, backbone.hidden_size)?;
            add(
                &mut set,
                Box::new(PcaHead::with_basis(
                    Task::Pca.as_str(),
                    basis,
                    backbone.patch_size,
                )),
            );
            found += 1;
        }
        if found == 0 {
            return Err(HeadError::invalid(
                dir,
                "holds no head files",
                format!(
                    "put heads there named {} (train them with models/train_heads.py)",
                    HEAD_FILES
                        .iter()
                        .map(|h| h.file)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if config.pca && set.control(Task::Pca.as_str()).is_none() {
        add(
            &mut set,
            Box::new(PcaHead::fitting(
                Task::Pca.as_str(),
                config.pca_fit_frames,
                backbone.patch_size,
            )),
        );
    }
    Ok(set)
}
