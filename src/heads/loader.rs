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

use std::path::PathBuf;

use super::anomaly::AnomalyHead;
use super::classification::ClassificationHead;
use super::depth::DepthHead;
use super::detection::DetectionHead;
use super::pca::{PcaBasis, PcaHead};
use super::segmentation::SegmentationHead;
use super::{HeadError, HeadSet, TaskHead};
use crate::model::Manifest;

/// Head file names in a heads directory, in run order.
pub const HEAD_FILES: &[(&str, &str)] = &[
    ("detection", "detection.onnx"),
    ("segmentation", "segmentation.onnx"),
    ("depth", "depth.onnx"),
    ("classification", "classification.onnx"),
    ("anomaly", "anomaly.bank.json"),
];

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
        for &(name, file) in HEAD_FILES {
            let path = dir.join(file);
            if !path.exists() {
                continue;
            }
            found += 1;
            let head: Box<dyn TaskHead> = match name {
                "detection" => Box::new(DetectionHead::load(name, &path, backbone, grid)?),
                "segmentation" => Box::new(SegmentationHead::load(name, &path, backbone, grid)?),
                "depth" => Box::new(DepthHead::load(name, &path, backbone, grid)?),
                "classification" => {
                    Box::new(ClassificationHead::load(name, &path, backbone, grid)?)
                }
                _ => Box::new(AnomalyHead::load(name, &path, backbone, grid)?),
            };
            add(&mut set, head);
        }
        let pca_file = dir.join("pca.json");
        if config.pca && pca_file.exists() {
            let basis = PcaBasis::load(&pca_file, backbone.hidden_size)?;
            add(
                &mut set,
                Box::new(PcaHead::with_basis("pca", basis, backbone.patch_size)),
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
                        .map(|(_, f)| *f)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if config.pca && set.control("pca").is_none() {
        add(
            &mut set,
            Box::new(PcaHead::fitting(
                "pca",
                config.pca_fit_frames,
                backbone.patch_size,
            )),
        );
    }
    Ok(set)
}
