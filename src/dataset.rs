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

use crate::npz::write_npy_f32;
use crate::synthetic::SceneConfigError;
use crate::synthetic::{SyntheticCamera, SyntheticConfig, SyntheticScene, CLASS_NAMES};

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

#[derive(Serialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    width: usize,
    height: usize,
}

#[derive(Serialize)]
struct CocoAnnotation {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f32; 4],
    area: f32,
    iscrowd: u8,
}

#[derive(Serialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

#[derive(Serialize)]
struct Coco {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
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
    for sub in ["images", "masks", "depth", "classes"] {
        mkdir(&out.join(sub))?;
    }
    let (w, h) = (options.scene.width, options.scene.height);
    let camera = SyntheticCamera::for_image(w, h);
    let mut coco = Coco {
        images: Vec::new(),
        annotations: Vec::new(),
        categories: CLASS_NAMES
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, n)| CocoCategory {
                id: i as u64,
                name: n.to_string(),
            })
            .collect(),
    };
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
            let mask_path = out.join("masks").join(format!("{stem}.png"));
            image::save_buffer(
                &mask_path,
                &gt.class_mask,
                w as u32,
                h as u32,
                image::ColorType::L8,
            )
            .map_err(|e| write_err(&mask_path, e))?;
            let depth: Vec<f32> = gt
                .depth
                .iter()
                .map(|&d| if d.is_finite() { d } else { 0.0 })
                .collect();
            let depth_path = out.join("depth").join(format!("{stem}.npy"));
            write_npy_f32(&depth_path, &[h, w], &depth).map_err(|e| write_err(&depth_path, e))?;
            let mut largest: Option<(f32, u8)> = None;
            for b in &gt.boxes {
                let (bw, bh) = (b.x1 - b.x0, b.y1 - b.y0);
                coco.annotations.push(CocoAnnotation {
                    id: coco.annotations.len() as u64 + 1,
                    image_id,
                    category_id: b.class_id as u64,
                    bbox: [b.x0, b.y0, bw, bh],
                    area: bw * bh,
                    iscrowd: 0,
                });
                if largest.is_none_or(|(a, _)| bw * bh > a) {
                    largest = Some((bw * bh, b.class_id));
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
            coco.images.push(CocoImage {
                id: image_id,
                file_name: format!("{stem}.png"),
                width: w,
                height: h,
            });
            image_id += 1;
        }
    }
    // Segmentation class names, background first (train_heads.py reads this file).
    let names_path = out.join("masks").join("class_names.json");
    let names = serde_json::to_string(&CLASS_NAMES).map_err(|e| write_err(&names_path, e))?;
    std::fs::write(&names_path, names).map_err(|e| write_err(&names_path, e))?;
    let ann_path = out.join("annotations.json");
    let text = serde_json::to_string(&coco).map_err(|e| write_err(&ann_path, e))?;
    std::fs::write(&ann_path, text).map_err(|e| write_err(&ann_path, e))?;
    Ok(DatasetSummary {
        images: coco.images.len(),
        boxes: coco.annotations.len(),
        labels: labels.into_iter().collect(),
    })
}
