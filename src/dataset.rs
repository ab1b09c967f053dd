//! Writing the synthetic scene as a training / evaluation dataset in standard formats
//! (`dinov3_perception dataset synthetic`), the layout `models/HEADS.md` describes:
//!
//! ```text
//! DIR/images/000001.png            RGB frames (file stem = COCO image id, from 1)
//! DIR/annotations.json             COCO instances (bbox [x, y, w, h]; category ids from 1)
//! DIR/masks/000001.png             8-bit class id per pixel (0 = ground/sky)
//! DIR/masks/class_names.json       ["ground", "box", "ball", "cone"]
//! DIR/depth/000001.npy             float32 metres (0 = no depth: sky)
//! DIR/classes/<label>/000001.png   ImageFolder: the class of the largest visible object
//! ```
//!
//! Frames come from `scenes` seeds (`seed`, `seed + 1`, ...), `frames_per_scene` from each, `stride`
//! scene frames apart, so a dataset mixes layouts, colours and lighting. Held-out sets use other
//! seeds.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::synthetic::SceneConfigError;
use crate::synthetic::{SyntheticCamera, SyntheticConfig, SyntheticScene, CLASS_NAMES};
use crate::truth_writer::{TruthWriteError, TruthWriter};

/// Label of a classification image with no visible object.
pub const NO_OBJECT_LABEL: &str = "none";

/// Errors writing a dataset; they name the path or the setting.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(#[from] SceneConfigError),
    /// A count is zero.
    #[error("{name} is 0: ask for at least one")]
    Empty {
        /// The setting.
        name: &'static str,
    },
    /// Writing a ground-truth file failed.
    #[error(transparent)]
    Truth(#[from] TruthWriteError),
    /// Writing failed.
    #[error("cannot write {path}: {reason}; check the directory and free space")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// What to write.
#[derive(Debug, Clone)]
pub struct SyntheticDatasetOptions {
    /// Output directory (created).
    pub out: PathBuf,
    /// Scene settings (size, objects; `seed` is the first scene's seed).
    pub scene: SyntheticConfig,
    /// Number of scenes (seeds).
    pub scenes: u64,
    /// Frames per scene.
    pub frames_per_scene: u64,
    /// Scene frames between two dataset frames.
    pub stride: u64,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetSummary {
    /// Images written.
    pub images: usize,
    /// Object boxes written.
    pub boxes: usize,
    /// Images per classification label, sorted by label.
    pub labels: Vec<(String, usize)>,
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> DatasetError {
    DatasetError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn mkdir(path: &Path) -> Result<(), DatasetError> {
    std::fs::create_dir_all(path).map_err(|e| write_err(path, e))
}

/// Render and write the dataset.
pub fn write_synthetic(options: &SyntheticDatasetOptions) -> Result<DatasetSummary, DatasetError> {
    if options.scenes == 0 {
        return Err(DatasetError::Empty { name: "scenes" });
    }
    if options.frames_per_scene == 0 {
        return Err(DatasetError::Empty {
            name: "frames_per_scene",
        });
    }
    options.scene.validate()?;
    let out = &options.out;
    for sub in ["images", "classes"] {
        mkdir(&out.join(sub))?;
    }
    let (w, h) = (options.scene.width, options.scene.height);
    let camera = SyntheticCamera::for_image(w, h);
    let class_names: Vec<String> = CLASS_NAMES.iter().map(|n| n.to_string()).collect();
    let mut truth = TruthWriter::create(out, &class_names)?;
    let mut labels: std::collections::BTreeMap<String, usize> = Default::default();
    let mut image_id = 1u64;
    for s in 0..options.scenes {
        let config = SyntheticConfig {
            seed: options.scene.seed + s,
            ..options.scene.clone()
        };
        let scene = SyntheticScene::new(&config, &camera)?;
        for f in 0..options.frames_per_scene {
            let (rgb, gt) = scene.render(f * options.stride.max(1));
            let stem = format!("{image_id:06}");
            let image_path = out.join("images").join(format!("{stem}.png"));
            image::save_buffer(
                &image_path,
                &rgb,
                w as u32,
                h as u32,
                image::ColorType::Rgb8,
            )
            .map_err(|e| write_err(&image_path, e))?;
            truth.add(&stem, w, h, &gt)?;
            let mut largest: Option<(f32, u8)> = None;
            for b in &gt.boxes {
                let area = (b.x1 - b.x0) * (b.y1 - b.y0);
                if largest.is_none_or(|(a, _)| area > a) {
                    largest = Some((area, b.class_id));
                }
            }
            let label = largest
                .and_then(|(_, c)| CLASS_NAMES.get(c as usize))
                .map_or(NO_OBJECT_LABEL, |n| n)
                .to_string();
            let class_dir = out.join("classes").join(&label);
            mkdir(&class_dir)?;
            let link = class_dir.join(format!("{stem}.png"));
            if std::fs::hard_link(&image_path, &link).is_err() {
                std::fs::copy(&image_path, &link).map_err(|e| write_err(&link, e))?;
            }
            *labels.entry(label).or_default() += 1;
            image_id += 1;
        }
    }
    // Segmentation class names, background first (train_heads.py reads masks/class_names.json).
    truth.write_index()?;
    Ok(DatasetSummary {
        images: truth.frames(),
        boxes: truth.boxes(),
        labels: labels.into_iter().collect(),
    })
}
