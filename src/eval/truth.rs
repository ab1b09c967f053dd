//! Ground truth on disk and how predicted frames find theirs.
//!
//! A truth directory has the layout `dataset synthetic` writes (every part optional):
//!
//! ```text
//! DIR/annotations.json          COCO instances (boxes; image file_name stems name the frames)
//! DIR/masks/<stem>.png          8-bit class id per pixel (0 = background)
//! DIR/masks/class_names.json    class names, index = class id
//! DIR/depth/<stem>.npy|.png     float32 metres, or uint16 millimetres (0 = no depth)
//! DIR/anomaly/labels.json       {"<stem>": 0 | 1}
//! DIR/anomaly/masks/<stem>.png  nonzero = anomalous pixel
//! ```
//!
//! A frame is keyed by [`FrameKey`]: a name (an image's file stem, as `predict` writes) or a
//! capture stamp, which matches the stem that is the stamp in nanoseconds as a decimal string
//! (how the recorder writes ground truth of recorded synthetic frames).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::coco::CocoGroundTruth;
use super::error::EvalError;
use super::files::{list_by_stem, read_class_png, read_depth, read_json, Plane};
use crate::frame::Stamp;

/// How a predicted frame names itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKey {
    /// Capture stamp: matches the ground truth whose stem is the stamp in nanoseconds.
    Stamp(Stamp),
    /// File stem (e.g. `000012` of `000012.png`).
    Name(String),
}

impl FrameKey {
    /// The file stem this key matches.
    pub fn stem(&self) -> String {
        match self {
            FrameKey::Stamp(s) => s.0.to_string(),
            FrameKey::Name(n) => n.clone(),
        }
    }
}

impl std::fmt::Display for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameKey::Stamp(s) => write!(f, "stamp {} ns", s.0),
            FrameKey::Name(n) => f.write_str(n),
        }
    }
}

/// Ground truth: what exists, indexed by stem; per-frame arrays are read when asked for.
#[derive(Debug, Clone, Default)]
pub struct GroundTruth {
    /// The directory or file it came from (named in errors).
    pub source: PathBuf,
    /// COCO boxes, when there are any.
    pub coco: Option<CocoGroundTruth>,
    /// Segmentation class names (index = class id), when given.
    pub class_names: Option<Vec<String>>,
    stem_to_image: HashMap<String, i64>,
    masks: BTreeMap<String, PathBuf>,
    depth: BTreeMap<String, PathBuf>,
    anomaly_labels: Option<(PathBuf, BTreeMap<String, bool>)>,
    anomaly_masks: Option<BTreeMap<String, PathBuf>>,
    frames: BTreeSet<String>,
}

/// A frame's anomaly mask file and pixels (`None`: a normal frame without a mask file: no
/// anomalous pixel).
pub type AnomalyMask = (PathBuf, Option<Plane<u8>>);

/// The stem of a file name (`a/000001.png` -> `000001`).
pub fn stem_of(name: &str) -> String {
    Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(name)
        .to_string()
}

impl GroundTruth {
    /// Boxes only, from a COCO instances file.
    pub fn from_coco_file(path: &Path) -> Result<Self, EvalError> {
        let coco = CocoGroundTruth::load(path)?;
        Ok(Self::with_coco(path, Some(coco)))
    }

    fn with_coco(source: &Path, coco: Option<CocoGroundTruth>) -> Self {
        let stem_to_image = coco
            .as_ref()
            .map(|c| {
                c.images
                    .iter()
                    .map(|i| (stem_of(&i.file_name), i.id))
                    .collect()
            })
            .unwrap_or_default();
        let mut truth = Self {
            source: source.to_path_buf(),
            coco,
            stem_to_image,
            ..Self::default()
        };
        truth.index_frames();
        truth
    }

    fn index_frames(&mut self) {
        let mut s: BTreeSet<String> = self.stem_to_image.keys().cloned().collect();
        s.extend(self.masks.keys().cloned());
        s.extend(self.depth.keys().cloned());
        if let Some((_, l)) = &self.anomaly_labels {
            s.extend(l.keys().cloned());
        }
        self.frames = s;
    }

    /// A truth directory in the layout of the module docs.
    pub fn from_dir(dir: &Path) -> Result<Self, EvalError> {
        if !dir.is_dir() {
            return Err(EvalError::Read {
                path: dir.to_path_buf(),
                reason: "not a directory (--truth takes a dataset directory; use --coco for an \
                         annotations file)"
                    .into(),
            });
        }
        let ann = dir.join("annotations.json");
        let coco = if ann.is_file() {
            Some(CocoGroundTruth::load(&ann)?)
        } else {
            None
        };
        let mut truth = Self::with_coco(dir, coco);
        let names = dir.join("masks").join("class_names.json");
        if names.is_file() {
            truth.class_names = Some(read_json(&names, "a JSON list of class names")?);
        }
        truth.masks = list_by_stem(&dir.join("masks"), &["png"])?;
        truth.depth = list_by_stem(&dir.join("depth"), &["npy", "png"])?;
        let labels = dir.join("anomaly").join("labels.json");
        if labels.is_file() {
            let raw: BTreeMap<String, u8> =
                read_json(&labels, "{\"<stem>\": 0 or 1, ...} (1 = anomalous)")?;
            if let Some((stem, v)) = raw.iter().find(|(_, &v)| v > 1) {
                return Err(EvalError::Format {
                    path: labels,
                    reason: format!("label of {stem} is {v}; use 0 (normal) or 1 (anomalous)"),
                });
            }
            let map = raw.into_iter().map(|(k, v)| (k, v == 1)).collect();
            truth.anomaly_labels = Some((labels, map));
        }
        let amask_dir = dir.join("anomaly").join("masks");
        if amask_dir.is_dir() {
            truth.anomaly_masks = Some(list_by_stem(&amask_dir, &["png"])?);
        }
        truth.index_frames();
        Ok(truth)
    }

    /// Every frame stem the truth describes (COCO images, masks, depth, anomaly labels).
    pub fn frames(&self) -> &BTreeSet<String> {
        &self.frames
    }

    /// The COCO image id of a frame.
    pub fn image_id(&self, stem: &str) -> Option<i64> {
        self.stem_to_image.get(stem).copied()
    }

    /// Whether the truth has segmentation masks at all.
    pub fn has_masks(&self) -> bool {
        !self.masks.is_empty()
    }

    /// Whether the truth has depth maps at all.
    pub fn has_depth(&self) -> bool {
        !self.depth.is_empty()
    }

    /// Whether the truth has anomaly labels at all.
    pub fn has_anomaly_labels(&self) -> bool {
        self.anomaly_labels.is_some()
    }

    /// The truth mask file of a frame.
    pub fn mask_path(&self, stem: &str) -> Option<&Path> {
        self.masks.get(stem).map(PathBuf::as_path)
    }

    /// The truth class mask of a frame.
    pub fn load_mask(&self, stem: &str) -> Result<Option<(PathBuf, Plane<u8>)>, EvalError> {
        self.masks
            .get(stem)
            .map(|p| Ok((p.clone(), read_class_png(p)?)))
            .transpose()
    }

    /// The truth depth of a frame, metres.
    pub fn load_depth(&self, stem: &str) -> Result<Option<(PathBuf, Plane<f32>)>, EvalError> {
        self.depth
            .get(stem)
            .map(|p| Ok((p.clone(), read_depth(p)?)))
            .transpose()
    }

    /// The anomaly labels file, when there is one.
    pub fn anomaly_labels_path(&self) -> Option<&Path> {
        self.anomaly_labels.as_ref().map(|(p, _)| p.as_path())
    }

    /// Whether a frame is anomalous (`None`: not labelled).
    pub fn anomaly_label(&self, stem: &str) -> Option<bool> {
        self.anomaly_labels.as_ref()?.1.get(stem).copied()
    }

    /// Whether anomaly masks exist (pixel AUROC is scored only then).
    pub fn has_anomaly_masks(&self) -> bool {
        self.anomaly_masks.is_some()
    }

    /// The anomalous pixels of a frame: its mask, or none for a frame labelled normal without
    /// one. `Ok(None)`: no mask and not labelled normal.
    pub fn load_anomaly_mask(&self, stem: &str) -> Result<Option<AnomalyMask>, EvalError> {
        let Some(masks) = &self.anomaly_masks else {
            return Ok(None);
        };
        if let Some(p) = masks.get(stem) {
            return Ok(Some((p.clone(), Some(read_class_png(p)?))));
        }
        if self.anomaly_label(stem) == Some(false) {
            return Ok(Some((self.source.join("anomaly").join("masks"), None)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_match_their_nanosecond_stem() {
        let k = FrameKey::Stamp(Stamp(1_700_000_000_123_456_789));
        assert_eq!(k.stem(), "1700000000123456789");
        assert_eq!(FrameKey::Name("000001".into()).stem(), "000001");
        assert_eq!(stem_of("images/000001.png"), "000001");
    }

    #[test]
    fn a_truth_directory_is_indexed_by_stem() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("masks")).unwrap();
        std::fs::create_dir_all(d.join("anomaly")).unwrap();
        std::fs::write(
            d.join("annotations.json"),
            r#"{"images": [{"id": 5, "file_name": "123.png"}], "annotations": [], "categories": []}"#,
        )
        .unwrap();
        image::save_buffer(d.join("masks/7.png"), &[0, 1], 2, 1, image::ColorType::L8).unwrap();
        std::fs::write(d.join("masks/class_names.json"), r#"["bg", "box"]"#).unwrap();
        std::fs::write(d.join("anomaly/labels.json"), r#"{"123": 1}"#).unwrap();
        let t = GroundTruth::from_dir(d).unwrap();
        assert_eq!(t.image_id("123"), Some(5));
        assert_eq!(
            t.frames().iter().cloned().collect::<Vec<_>>(),
            vec!["123".to_string(), "7".to_string()]
        );
        let (_, m) = t.load_mask("7").unwrap().unwrap();
        assert_eq!((m.width, m.height, m.data), (2, 1, vec![0, 1]));
        assert_eq!(t.anomaly_label("123"), Some(true));
        assert_eq!(t.class_names.as_deref().map(<[String]>::len), Some(2));
        std::fs::write(d.join("anomaly/labels.json"), r#"{"123": 3}"#).unwrap();
        let e = GroundTruth::from_dir(d).unwrap_err().to_string();
        assert!(e.contains("labels.json") && e.contains("use 0"), "{e}");
    }
}
