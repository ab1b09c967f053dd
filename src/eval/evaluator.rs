//! Streaming evaluation: predicted frames go in one at a time ([`Evaluator::add`]), the
//! [`Report`] comes out at the end ([`Evaluator::finish`]). Whoever produces the frames (a
//! `predict` folder, a recording, a live pipeline run) only builds [`FramePrediction`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::auroc::AurocSamples;
use super::coco::{self, CocoDetection};
use super::depth::DepthAnalysis;
use super::error::{list_some, EvalError};
use super::frame_prediction::FramePrediction;
use super::metrics::Confusion;
use super::report::{
    tool_version, AnomalyReport, DepthReport, DetectionReport, Report, SegmentationReport,
};
use super::truth::{FrameKey, GroundTruth};
use crate::heads::Detection;

/// Default truth value that segmentation does not score.
pub const DEFAULT_IGNORE_INDEX: u8 = 255;

/// How to score.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Score depth only where the truth is at most this many metres.
    pub max_depth: Option<f64>,
    /// Truth value segmentation does not score.
    pub ignore_index: Option<u8>,
    /// Where streamed predictions were read from (a `predict` folder), so errors can name the
    /// file (`<dir>/masks/<stem>.png`, `<dir>/depth/<stem>.npy`); `None` names the frame.
    pub predictions_dir: Option<PathBuf>,
    /// The report's `inputs` (paths and options, as the caller describes them).
    pub inputs: BTreeMap<String, serde_json::Value>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            max_depth: None,
            ignore_index: Some(DEFAULT_IGNORE_INDEX),
            predictions_dir: None,
            inputs: BTreeMap::new(),
        }
    }
}

/// Accumulates frames against one ground truth.
#[derive(Debug)]
pub struct Evaluator<'a> {
    truth: &'a GroundTruth,
    options: EvalOptions,
    frames: usize,
    seen: BTreeSet<String>,
    no_truth: Vec<String>,
    twice: Vec<String>,
    missing: BTreeMap<&'static str, Vec<String>>,
    detections: Vec<CocoDetection>,
    has_detections: bool,
    results_source: Option<PathBuf>,
    confusion: Option<Confusion>,
    depth: Option<DepthAnalysis>,
    image_scores: AurocSamples,
    pixel_scores: AurocSamples,
    has_maps: bool,
    skipped: BTreeSet<&'static str>,
}

/// Evaluate a stream of frames (e.g. a recording read lazily); `progress` is told each frame.
pub fn evaluate<E: From<EvalError>>(
    truth: &GroundTruth,
    frames: impl Iterator<Item = Result<FramePrediction, E>>,
    options: EvalOptions,
    mut progress: impl FnMut(&FrameKey),
) -> Result<Report, E> {
    let mut ev = Evaluator::new(truth, options);
    for frame in frames {
        let frame = frame?;
        progress(&frame.key);
        ev.add(frame)?;
    }
    Ok(ev.finish()?)
}

fn size_check(
    path: PathBuf,
    truth: &Path,
    what: &'static str,
    predicted: (usize, usize),
    truth_size: (usize, usize),
) -> Result<(), EvalError> {
    if predicted == truth_size {
        return Ok(());
    }
    Err(EvalError::SizeMismatch {
        path,
        truth: truth.to_path_buf(),
        what,
        predicted_width: predicted.0,
        predicted_height: predicted.1,
        truth_width: truth_size.0,
        truth_height: truth_size.1,
    })
}

impl<'a> Evaluator<'a> {
    /// Empty.
    pub fn new(truth: &'a GroundTruth, options: EvalOptions) -> Self {
        Self {
            truth,
            depth: None,
            options,
            frames: 0,
            seen: BTreeSet::new(),
            no_truth: Vec::new(),
            twice: Vec::new(),
            missing: BTreeMap::new(),
            detections: Vec::new(),
            has_detections: false,
            results_source: None,
            confusion: None,
            image_scores: AurocSamples::default(),
            pixel_scores: AurocSamples::default(),
            has_maps: false,
            skipped: BTreeSet::new(),
        }
    }

    /// Detection results already in COCO form (a results file: image and category ids).
    pub fn add_coco_results(&mut self, results: Vec<CocoDetection>, source: &Path) {
        self.has_detections = true;
        self.detections.extend(results);
        self.results_source = Some(source.to_path_buf());
    }

    /// What a prediction of `stem` is called in errors.
    fn prediction_path(&self, sub: &str, stem: &str, ext: &str, key: &FrameKey) -> PathBuf {
        match &self.options.predictions_dir {
            Some(d) => d.join(sub).join(format!("{stem}.{ext}")),
            None => PathBuf::from(format!("frame {key}")),
        }
    }

    fn missing(&mut self, what: &'static str, stem: &str) {
        self.missing.entry(what).or_default().push(stem.to_string());
    }

    /// Score one frame. Frames without ground truth are collected and reported by
    /// [`Evaluator::finish`]; a size that differs from the truth is an error at once.
    pub fn add(&mut self, frame: FramePrediction) -> Result<(), EvalError> {
        let stem = frame.key.stem();
        let truth = self.truth;
        if !truth.frames().contains(&stem) {
            self.no_truth.push(frame.key.to_string());
            return Ok(());
        }
        if !self.seen.insert(stem.clone()) {
            self.twice.push(frame.key.to_string());
            return Ok(());
        }
        self.frames += 1;
        let size = (frame.width, frame.height);
        if let Some(dets) = &frame.detections {
            self.add_detections(&frame.key, &stem, dets)?;
        }
        if frame.segmentation.is_some() && !truth.has_masks() {
            self.skipped
                .insert("segmentation (the ground truth has no masks/)");
        } else if let Some(mask) = &frame.segmentation {
            match truth.load_mask(&stem)? {
                None => self.missing("segmentation masks", &stem),
                Some((tpath, t)) => {
                    let ppath = self.prediction_path("masks", &stem, "png", &frame.key);
                    size_check(
                        ppath.clone(),
                        &tpath,
                        "the segmentation mask",
                        size,
                        (t.width, t.height),
                    )?;
                    if mask.len() != t.data.len() {
                        return Err(EvalError::Format {
                            path: ppath,
                            reason: format!(
                                "holds {} class ids for a {}x{} frame",
                                mask.len(),
                                frame.width,
                                frame.height
                            ),
                        });
                    }
                    self.confusion
                        .get_or_insert_with(|| Confusion::new(256))
                        .add_ignoring(&t.data, mask, self.options.ignore_index);
                }
            }
        }
        if frame.depth.is_some() && !truth.has_depth() {
            self.skipped
                .insert("depth (the ground truth has no depth/)");
        } else if let Some(depth) = &frame.depth {
            match truth.load_depth(&stem)? {
                None => self.missing("depth maps", &stem),
                Some((tpath, t)) => {
                    let ppath = self.prediction_path("depth", &stem, "npy", &frame.key);
                    size_check(
                        ppath.clone(),
                        &tpath,
                        "the depth map",
                        size,
                        (t.width, t.height),
                    )?;
                    if depth.len() != t.data.len() {
                        return Err(EvalError::Format {
                            path: ppath,
                            reason: format!(
                                "holds {} values for a {}x{} frame",
                                depth.len(),
                                frame.width,
                                frame.height
                            ),
                        });
                    }
                    let max_depth = self.options.max_depth;
                    self.depth
                        .get_or_insert_with(|| DepthAnalysis::new(max_depth))
                        .add(&t.data, depth);
                }
            }
        }
        if frame.anomaly_score.is_some() && !truth.has_anomaly_labels() {
            self.skipped
                .insert("anomaly scores (the ground truth has no anomaly/labels.json)");
        } else if let Some(score) = frame.anomaly_score {
            match truth.anomaly_label(&stem) {
                None => self.missing("anomaly labels", &stem),
                Some(label) => self.image_scores.push(score, label),
            }
        }
        if frame.anomaly_map.is_some() && !truth.has_anomaly_masks() {
            self.skipped
                .insert("anomaly maps (the ground truth has no anomaly/masks/)");
        }
        if let Some(map) = &frame.anomaly_map {
            if truth.has_anomaly_masks() {
                self.has_maps = true;
                match truth.load_anomaly_mask(&stem)? {
                    None => self.missing("anomaly masks", &stem),
                    Some((tpath, mask)) => {
                        let ppath = self.prediction_path("anomaly", &stem, "npy", &frame.key);
                        if map.len() != frame.width * frame.height {
                            return Err(EvalError::Format {
                                path: ppath,
                                reason: format!(
                                    "holds {} values for a {}x{} frame",
                                    map.len(),
                                    frame.width,
                                    frame.height
                                ),
                            });
                        }
                        match mask {
                            Some(m) => {
                                size_check(
                                    ppath,
                                    &tpath,
                                    "the anomaly map",
                                    size,
                                    (m.width, m.height),
                                )?;
                                self.pixel_scores
                                    .extend(map, m.data.iter().map(|&v| v != 0));
                            }
                            None => self.pixel_scores.extend(map, std::iter::repeat(false)),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn add_detections(
        &mut self,
        key: &FrameKey,
        stem: &str,
        dets: &[Detection],
    ) -> Result<(), EvalError> {
        self.has_detections = true;
        let Some(coco) = &self.truth.coco else {
            self.skipped
                .insert("detections (the ground truth has no annotations.json)");
            return Ok(());
        };
        self.has_detections = true;
        let Some(image_id) = self.truth.image_id(stem) else {
            self.missing("COCO images", stem);
            return Ok(());
        };
        for d in dets {
            let Some(category_id) = coco.category_id(&d.class_name) else {
                return Err(EvalError::UnknownClass {
                    frame: key.to_string(),
                    name: d.class_name.clone(),
                    truth: coco.source.clone(),
                    known: coco
                        .categories
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            // Width and height in f32 as `predict` writes them, then widened.
            self.detections.push(CocoDetection {
                image_id,
                category_id,
                bbox: [
                    d.x0 as f64,
                    d.y0 as f64,
                    (d.x1 - d.x0) as f64,
                    (d.y1 - d.y0) as f64,
                ],
                score: d.score as f64,
            });
        }
        Ok(())
    }

    /// Check that frames and truth correspond, then compute every metric with input.
    pub fn finish(mut self) -> Result<Report, EvalError> {
        let mut problems = Vec::new();
        if !self.no_truth.is_empty() {
            problems.push(format!(
                "{} predicted frame(s) have no ground truth: {}",
                self.no_truth.len(),
                list_some(&self.no_truth)
            ));
        }
        if !self.twice.is_empty() {
            problems.push(format!(
                "{} frame(s) were predicted twice: {}",
                self.twice.len(),
                list_some(&self.twice)
            ));
        }
        for (what, stems) in &self.missing {
            problems.push(format!(
                "{} predicted frame(s) have no ground-truth {what}: {}",
                stems.len(),
                list_some(stems)
            ));
        }
        if self.frames > 0 {
            let unseen: Vec<String> = self
                .truth
                .frames()
                .iter()
                .filter(|s| !self.seen.contains(*s))
                .cloned()
                .collect();
            if !unseen.is_empty() {
                problems.push(format!(
                    "{} ground-truth frame(s) have no prediction: {}",
                    unseen.len(),
                    list_some(&unseen)
                ));
            }
        }
        if !problems.is_empty() {
            return Err(EvalError::Unmatched {
                truth: self.truth.source.clone(),
                details: problems.join("; "),
            });
        }
        if let (None, Some(results)) = (&self.truth.coco, &self.results_source) {
            return Err(EvalError::Format {
                path: self.truth.source.clone(),
                reason: format!(
                    "has no COCO annotations (annotations.json) to score {} against; give a \
                     dataset directory with annotations.json or --coco FILE",
                    results.display()
                ),
            });
        }
        let detection = match (&self.truth.coco, self.has_detections) {
            (Some(c), true) => {
                let source = self
                    .results_source
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("the streamed detections"));
                Some(DetectionReport::new(&coco::evaluate(
                    c,
                    &self.detections,
                    &source,
                )?))
            }
            _ => None,
        };
        let segmentation = self.confusion.as_ref().map(|c| {
            SegmentationReport::new(
                c,
                self.truth.class_names.as_deref(),
                self.options.ignore_index,
            )
        });
        let depth = self.depth.as_ref().map(DepthReport::new);
        let anomaly = self.anomaly_report()?;
        if detection.is_none() && segmentation.is_none() && depth.is_none() && anomaly.is_none() {
            return Err(EvalError::Nothing(format!(
                "nothing to score against {}: give detections, segmentation masks, depth maps or \
                 anomaly scores whose ground truth exists",
                self.truth.source.display()
            )));
        }
        Ok(Report {
            tool: tool_version(),
            inputs: self.options.inputs.clone(),
            frames: self.frames,
            detection,
            segmentation,
            depth,
            anomaly,
            not_scored: self.skipped.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn anomaly_report(&mut self) -> Result<Option<AnomalyReport>, EvalError> {
        if self.image_scores.is_empty() && !self.has_maps {
            return Ok(None);
        }
        let labels = self
            .truth
            .anomaly_labels_path()
            .map_or_else(|| self.truth.source.clone(), Path::to_path_buf);
        let undefined = |what: &str, e: super::auroc::AurocError| EvalError::Undefined {
            what: format!("{what} AUROC against {}", labels.display()),
            reason: e.to_string(),
        };
        let image_auroc = if self.image_scores.is_empty() {
            None
        } else {
            Some(
                self.image_scores
                    .auroc()
                    .map_err(|e| undefined("image", e))?,
            )
        };
        let pixel_auroc = if self.has_maps {
            Some(
                self.pixel_scores
                    .auroc()
                    .map_err(|e| undefined("pixel", e))?,
            )
        } else {
            None
        };
        Ok(Some(AnomalyReport {
            image_auroc,
            images: self.image_scores.len(),
            anomalous_images: self.image_scores.positives(),
            pixel_auroc,
            pixels: self.pixel_scores.len(),
            anomalous_pixels: self.pixel_scores.positives(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("masks")).unwrap();
        std::fs::create_dir_all(d.join("anomaly")).unwrap();
        std::fs::write(
            d.join("annotations.json"),
            r#"{"images": [{"id": 1, "file_name": "000001.png"}, {"id": 2, "file_name": "000002.png"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 1], "area": 2}],
                "categories": [{"id": 1, "name": "box"}]}"#,
        )
        .unwrap();
        for s in ["000001", "000002"] {
            image::save_buffer(
                d.join(format!("masks/{s}.png")),
                &[0, 1],
                2,
                1,
                image::ColorType::L8,
            )
            .unwrap();
        }
        std::fs::write(
            d.join("anomaly/labels.json"),
            r#"{"000001": 0, "000002": 1}"#,
        )
        .unwrap();
        dir
    }

    fn frame(name: &str) -> FramePrediction {
        FramePrediction {
            key: FrameKey::Name(name.into()),
            width: 2,
            height: 1,
            detections: Some(Vec::new()),
            segmentation: Some(vec![0, 1]),
            depth: None,
            anomaly_score: Some(if name == "000002" { 0.9 } else { 0.1 }),
            anomaly_map: None,
        }
    }

    #[test]
    fn frames_stream_into_every_metric() {
        let dir = dataset();
        let truth = GroundTruth::from_dir(dir.path()).unwrap();
        let mut f1 = frame("000001");
        f1.detections = Some(vec![Detection {
            class_id: 0,
            class_name: "box".into(),
            score: 0.8,
            x0: 0.0,
            y0: 0.0,
            x1: 2.0,
            y1: 1.0,
        }]);
        let frames = vec![Ok::<_, EvalError>(f1), Ok(frame("000002"))];
        let mut seen = 0;
        let r = evaluate(&truth, frames.into_iter(), EvalOptions::default(), |_| {
            seen += 1
        })
        .unwrap();
        assert_eq!(seen, 2);
        assert_eq!(r.frames, 2);
        assert!((r.detection.unwrap().stat("AP") - 1.0).abs() < 1e-12);
        assert_eq!(r.segmentation.unwrap().miou, Some(1.0));
        assert_eq!(r.anomaly.unwrap().image_auroc, Some(1.0));
    }

    #[test]
    fn stamped_frames_match_nanosecond_stems() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("masks")).unwrap();
        image::save_buffer(
            d.join("masks/1700000000000000042.png"),
            &[0, 1],
            2,
            1,
            image::ColorType::L8,
        )
        .unwrap();
        let truth = GroundTruth::from_dir(d).unwrap();
        let mut f = frame("x");
        f.key = FrameKey::Stamp(crate::frame::Stamp(1_700_000_000_000_000_042));
        f.segmentation = Some(vec![0, 0]);
        let r = evaluate(
            &truth,
            std::iter::once(Ok::<_, EvalError>(f)),
            EvalOptions::default(),
            |_| {},
        )
        .unwrap();
        // Class 0: tp 1, union 2; class 1: tp 0, union 1.
        assert_eq!(r.segmentation.unwrap().miou, Some(0.25));
        assert_eq!(
            r.not_scored,
            vec![
                "anomaly scores (the ground truth has no anomaly/labels.json)".to_string(),
                "detections (the ground truth has no annotations.json)".to_string()
            ]
        );
    }

    #[test]
    fn mismatches_are_listed_on_both_sides() {
        let dir = dataset();
        let truth = GroundTruth::from_dir(dir.path()).unwrap();
        let mut ev = Evaluator::new(&truth, EvalOptions::default());
        ev.add(frame("000001")).unwrap();
        ev.add(frame("999")).unwrap();
        let msg = ev.finish().unwrap_err().to_string();
        assert!(msg.contains("have no ground truth: 999"), "{msg}");
        assert!(msg.contains("have no prediction: 000002"), "{msg}");
    }

    #[test]
    fn sizes_and_class_names_are_checked() {
        let dir = dataset();
        let truth = GroundTruth::from_dir(dir.path()).unwrap();
        let mut ev = Evaluator::new(&truth, EvalOptions::default());
        let mut f = frame("000001");
        f.width = 1;
        f.height = 2;
        let msg = ev.add(f).unwrap_err().to_string();
        assert!(
            msg.contains("1x2") && msg.contains("2x1") && msg.contains("000001.png"),
            "{msg}"
        );
        let mut f = frame("000002");
        f.detections = Some(vec![Detection {
            class_id: 0,
            class_name: "cat".into(),
            score: 0.8,
            x0: 0.0,
            y0: 0.0,
            x1: 2.0,
            y1: 1.0,
        }]);
        let msg = ev.add(f).unwrap_err().to_string();
        assert!(msg.contains("\"cat\"") && msg.contains("box"), "{msg}");
    }
}
