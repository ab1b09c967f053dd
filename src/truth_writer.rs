//! Ground truth of synthetic frames written in the dataset layout `eval` reads: COCO
//! instances, 8-bit class masks and float32 depth, one file per frame named by its stem.
//!
//! ```text
//! DIR/annotations.json        COCO instances (bbox [x, y, w, h]; category ids from 1)
//! DIR/masks/<stem>.png        8-bit class id per pixel (0 = ground/sky)
//! DIR/masks/class_names.json  class names, background first
//! DIR/depth/<stem>.npy        float32 metres (0 = no depth: sky)
//! DIR/anomaly/labels.json     {"<stem>": 0 | 1} (scenes that draw anomalies)
//! DIR/anomaly/masks/<stem>.png  255 = anomalous pixel
//! ```
//!
//! `dataset synthetic` names frames `000001`, ...; the recorder names them by capture stamp in
//! nanoseconds, which is how `eval` matches them to recorded frames.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::frame::GroundTruth;
use crate::npz::write_npy_f32;

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {reason}; check the directory and free space")]
pub struct TruthWriteError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> TruthWriteError {
    TruthWriteError {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
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

/// Writes frames' ground truth into one directory.
pub struct TruthWriter {
    dir: PathBuf,
    class_names: Vec<String>,
    coco: Coco,
    /// Per stem: whether the frame is anomalous (frames with an anomaly mask).
    anomaly_labels: std::collections::BTreeMap<String, u8>,
}

impl std::fmt::Debug for TruthWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TruthWriter")
            .field("dir", &self.dir)
            .field("images", &self.coco.images.len())
            .finish_non_exhaustive()
    }
}

impl TruthWriter {
    /// Create `dir/masks` and `dir/depth`; `class_names` are indexed by class id (0 =
    /// background, not a COCO category).
    pub fn create(dir: &Path, class_names: &[String]) -> Result<Self, TruthWriteError> {
        for sub in ["masks", "depth"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| write_err(&d, e))?;
        }
        Ok(TruthWriter {
            dir: dir.to_path_buf(),
            class_names: class_names.to_vec(),
            coco: Coco {
                images: Vec::new(),
                annotations: Vec::new(),
                categories: class_names
                    .iter()
                    .enumerate()
                    .skip(1)
                    .map(|(i, n)| CocoCategory {
                        id: i as u64,
                        name: n.clone(),
                    })
                    .collect(),
            },
            anomaly_labels: Default::default(),
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.coco.images.len()
    }

    /// Boxes written so far.
    pub fn boxes(&self) -> usize {
        self.coco.annotations.len()
    }

    /// Write one frame's mask and depth as `<stem>.png` / `<stem>.npy` and add its boxes.
    pub fn add(
        &mut self,
        stem: &str,
        width: usize,
        height: usize,
        gt: &GroundTruth,
    ) -> Result<(), TruthWriteError> {
        let image_id = self.coco.images.len() as u64 + 1;
        let mask_path = self.dir.join("masks").join(format!("{stem}.png"));
        image::save_buffer(
            &mask_path,
            &gt.class_mask,
            width as u32,
            height as u32,
            image::ColorType::L8,
        )
        .map_err(|e| write_err(&mask_path, e))?;
        let depth: Vec<f32> = gt
            .depth
            .iter()
            .map(|&d| if d.is_finite() { d } else { 0.0 })
            .collect();
        let depth_path = self.dir.join("depth").join(format!("{stem}.npy"));
        write_npy_f32(&depth_path, &[height, width], &depth)
            .map_err(|e| write_err(&depth_path, e))?;
        if let Some(mask) = &gt.anomaly_mask {
            let d = self.dir.join("anomaly").join("masks");
            std::fs::create_dir_all(&d).map_err(|e| write_err(&d, e))?;
            let path = d.join(format!("{stem}.png"));
            image::save_buffer(
                &path,
                mask,
                width as u32,
                height as u32,
                image::ColorType::L8,
            )
            .map_err(|e| write_err(&path, e))?;
            let label = u8::from(mask.iter().any(|&m| m != 0));
            self.anomaly_labels.insert(stem.to_string(), label);
        }
        for b in &gt.boxes {
            let (bw, bh) = (b.x1 - b.x0, b.y1 - b.y0);
            self.coco.annotations.push(CocoAnnotation {
                id: self.coco.annotations.len() as u64 + 1,
                image_id,
                category_id: u64::from(b.class_id),
                bbox: [b.x0, b.y0, bw, bh],
                area: bw * bh,
                iscrowd: 0,
            });
        }
        self.coco.images.push(CocoImage {
            id: image_id,
            file_name: format!("{stem}.png"),
            width,
            height,
        });
        Ok(())
    }

    /// Write `annotations.json` and `masks/class_names.json` as they stand (through temporary
    /// files: a crash leaves the previous version whole). Call it again after more frames.
    pub fn write_index(&self) -> Result<(), TruthWriteError> {
        let names_path = self.dir.join("masks").join("class_names.json");
        let names =
            serde_json::to_string(&self.class_names).map_err(|e| write_err(&names_path, e))?;
        replace(&names_path, names.as_bytes())?;
        if !self.anomaly_labels.is_empty() {
            let path = self.dir.join("anomaly").join("labels.json");
            let text =
                serde_json::to_string(&self.anomaly_labels).map_err(|e| write_err(&path, e))?;
            replace(&path, text.as_bytes())?;
        }
        let ann_path = self.dir.join("annotations.json");
        let text = serde_json::to_string(&self.coco).map_err(|e| write_err(&ann_path, e))?;
        replace(&ann_path, text.as_bytes())
    }
}

fn replace(path: &Path, bytes: &[u8]) -> Result<(), TruthWriteError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| write_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| write_err(path, e))
}
