//! `predict`'s output folder read back as frames:
//!
//! ```text
//! PRED/detections.json        COCO results (image and category ids): scored as a results file
//! PRED/masks/<stem>.png       class id per pixel
//! PRED/depth/<stem>.npy       float32 metres
//! PRED/anomaly.json           {"<stem>": image anomaly score}
//! PRED/anomaly/<stem>.npy     float32 anomaly map (optional)
//! ```
//!
//! Frames are keyed by stem and read one at a time, in stem order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::error::EvalError;
use super::files::{list_by_stem, read_class_png, read_json, read_map, Plane};
use super::frame_prediction::FramePrediction;
use super::truth::FrameKey;

/// An indexed `predict` output folder.
#[derive(Debug, Clone)]
pub struct PredictionsDir {
    /// The folder.
    pub dir: PathBuf,
    /// `detections.json`, when present.
    pub detections: Option<PathBuf>,
    masks: BTreeMap<String, PathBuf>,
    depth: BTreeMap<String, PathBuf>,
    maps: BTreeMap<String, PathBuf>,
    scores: BTreeMap<String, f32>,
    stems: Vec<String>,
}

impl PredictionsDir {
    /// Index a folder.
    pub fn open(dir: &Path) -> Result<Self, EvalError> {
        if !dir.is_dir() {
            return Err(EvalError::Read {
                path: dir.to_path_buf(),
                reason: "not a directory (--predictions takes the folder `predict --out` wrote)"
                    .into(),
            });
        }
        let det = dir.join("detections.json");
        let anomaly = dir.join("anomaly.json");
        let scores = if anomaly.is_file() {
            read_json(&anomaly, "{\"<stem>\": score, ...}")?
        } else {
            BTreeMap::new()
        };
        let masks = list_by_stem(&dir.join("masks"), &["png"])?;
        let depth = list_by_stem(&dir.join("depth"), &["npy"])?;
        let maps = list_by_stem(&dir.join("anomaly"), &["npy"])?;
        let mut stems: BTreeSet<String> = masks.keys().cloned().collect();
        stems.extend(depth.keys().cloned());
        stems.extend(maps.keys().cloned());
        stems.extend(scores.keys().cloned());
        Ok(Self {
            dir: dir.to_path_buf(),
            detections: det.is_file().then_some(det),
            masks,
            depth,
            maps,
            scores,
            stems: stems.into_iter().collect(),
        })
    }

    /// Number of frames (stems with a mask, depth map, anomaly score or map).
    pub fn len(&self) -> usize {
        self.stems.len()
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.stems.is_empty()
    }

    /// The frames, read lazily in stem order.
    pub fn frames(&self) -> impl Iterator<Item = Result<FramePrediction, EvalError>> + '_ {
        self.stems.iter().map(|s| self.frame(s))
    }

    fn frame(&self, stem: &str) -> Result<FramePrediction, EvalError> {
        let mut size: Option<(usize, usize, PathBuf)> = None;
        let mut fits = |path: &Path, w: usize, h: usize| -> Result<(), EvalError> {
            match &size {
                None => {
                    size = Some((w, h, path.to_path_buf()));
                    Ok(())
                }
                Some((sw, sh, first)) if (*sw, *sh) != (w, h) => Err(EvalError::Format {
                    path: path.to_path_buf(),
                    reason: format!(
                        "is {w}x{h} but {} of the same frame is {sw}x{sh}",
                        first.display()
                    ),
                }),
                Some(_) => Ok(()),
            }
        };
        let segmentation = match self.masks.get(stem) {
            Some(p) => {
                let Plane {
                    width,
                    height,
                    data,
                } = read_class_png(p)?;
                fits(p, width, height)?;
                Some(data)
            }
            None => None,
        };
        let mut float_map =
            |map: &BTreeMap<String, PathBuf>| -> Result<Option<Vec<f32>>, EvalError> {
                match map.get(stem) {
                    Some(p) => {
                        let m = read_map(p)?;
                        fits(p, m.width, m.height)?;
                        Ok(Some(m.data))
                    }
                    None => Ok(None),
                }
            };
        let depth = float_map(&self.depth)?;
        let anomaly_map = float_map(&self.maps)?;
        let (width, height) = size.map_or((0, 0), |(w, h, _)| (w, h));
        Ok(FramePrediction {
            key: FrameKey::Name(stem.to_string()),
            width,
            height,
            detections: None,
            segmentation,
            depth,
            anomaly_score: self.scores.get(stem).copied(),
            anomaly_map,
        })
    }
}
