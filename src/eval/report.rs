//! The evaluation report: every number, per-class values, PR curves and counts, serialised as
//! `report.json` (and read back by `eval --compare`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::coco::{recall_thresholds, CocoEvaluation, STAT_NAMES};
use super::depth::DepthAnalysis;
use super::metrics::{Confusion, MIN_PREDICTED_DEPTH};

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The program and version that wrote it.
    pub tool: String,
    /// What was evaluated (paths, options), as the caller describes it.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Predicted frames scored (streamed frames; COCO results files count 0).
    pub frames: usize,
    /// Box detection (COCO).
    pub detection: Option<DetectionReport>,
    /// Semantic segmentation.
    pub segmentation: Option<SegmentationReport>,
    /// Monocular depth.
    pub depth: Option<DepthReport>,
    /// Anomaly detection.
    pub anomaly: Option<AnomalyReport>,
    /// Predictions that were not scored because the ground truth has none of their kind.
    #[serde(default)]
    pub not_scored: Vec<String>,
}

/// The tool string of reports.
pub fn tool_version() -> String {
    format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}

/// COCO detection figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionReport {
    /// The 12 pycocotools stats by name (AP, AP50, ..., ARl); -1 where undefined.
    pub stats: BTreeMap<String, f64>,
    /// The summary exactly as pycocotools prints it.
    pub summary: Vec<String>,
    /// Images of the ground truth.
    pub images: usize,
    /// Ground-truth boxes scored (crowd included).
    pub ground_truth_boxes: usize,
    /// Results scored.
    pub results: usize,
    /// Results of categories the ground truth lacks (not scored, as in pycocotools).
    pub results_unknown_category: usize,
    /// The recall axis of the PR curves.
    pub recall_thresholds: Vec<f64>,
    /// Per category, in id order.
    pub per_class: Vec<ClassDetection>,
}

/// One category's detection figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassDetection {
    /// Category id.
    pub id: i64,
    /// Category name.
    pub name: String,
    /// AP@[.5:.95], area all, maxDets 100 (`None`: no ground truth).
    pub ap: Option<f64>,
    /// AP@.5.
    pub ap50: Option<f64>,
    /// AR@100.
    pub ar100: Option<f64>,
    /// Precision at the recall thresholds, IoU 0.5.
    pub pr_iou50: Option<Vec<f64>>,
    /// Precision at the recall thresholds, mean over IoU 0.5:0.95.
    pub pr_iou50_95: Option<Vec<f64>>,
}

impl DetectionReport {
    /// From a COCO evaluation.
    pub fn new(ev: &CocoEvaluation) -> Self {
        let per_class = ev
            .category_ids
            .iter()
            .zip(&ev.category_names)
            .enumerate()
            .map(|(k, (&id, name))| {
                let pr = ev.category_pr_curve(k);
                ClassDetection {
                    id,
                    name: name.clone(),
                    ap: ev.category_ap(k),
                    ap50: ev.category_ap50(k),
                    ar100: ev.category_ar100(k),
                    pr_iou50: pr.as_ref().map(|p| p.0.clone()),
                    pr_iou50_95: pr.map(|p| p.1),
                }
            })
            .collect();
        Self {
            stats: STAT_NAMES
                .iter()
                .zip(ev.stats)
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            summary: ev.summary_lines(),
            images: ev.images,
            ground_truth_boxes: ev.ground_truth_boxes,
            results: ev.results,
            results_unknown_category: ev.results_unknown_category,
            recall_thresholds: recall_thresholds().to_vec(),
            per_class,
        }
    }

    /// A stat by name (-1 when undefined or unknown).
    pub fn stat(&self, name: &str) -> f64 {
        self.stats.get(name).copied().unwrap_or(-1.0)
    }
}

/// Segmentation figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationReport {
    /// Mean IoU over classes present in truth or prediction.
    pub miou: Option<f64>,
    /// Fraction of scored pixels whose class is right.
    pub pixel_accuracy: Option<f64>,
    /// Pixels scored (truth not the ignore index).
    pub pixels: u64,
    /// Truth value that is not scored.
    pub ignore_index: Option<u8>,
    /// Per class present in truth or prediction, by id.
    pub per_class: Vec<ClassIou>,
    /// Confusion matrix over the classes of `per_class`: `counts[truth][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// One class's segmentation figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassIou {
    /// Class id.
    pub id: usize,
    /// Class name, when the truth names its classes.
    pub name: String,
    /// Intersection over union.
    pub iou: f64,
    /// Pixels of this class in the truth.
    pub truth_pixels: u64,
    /// Pixels predicted as this class.
    pub predicted_pixels: u64,
}

impl SegmentationReport {
    /// From a confusion matrix; `names[id]` names the classes when given.
    pub fn new(c: &Confusion, names: Option<&[String]>, ignore_index: Option<u8>) -> Self {
        let ious = c.iou();
        let present: Vec<usize> = (0..c.classes()).filter(|&i| ious[i].is_some()).collect();
        let per_class = present
            .iter()
            .map(|&id| ClassIou {
                id,
                name: names
                    .and_then(|n| n.get(id).cloned())
                    .unwrap_or_else(|| format!("class {id}")),
                iou: ious[id].unwrap_or(0.0),
                truth_pixels: (0..c.classes()).map(|p| c.count(id, p)).sum(),
                predicted_pixels: (0..c.classes()).map(|t| c.count(t, id)).sum(),
            })
            .collect();
        let confusion = present
            .iter()
            .map(|&t| present.iter().map(|&p| c.count(t, p)).collect())
            .collect();
        Self {
            miou: c.miou(),
            pixel_accuracy: c.pixel_accuracy(),
            pixels: c.total(),
            ignore_index,
            per_class,
            confusion,
        }
    }
}

/// Depth figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthReport {
    /// Mean |p - t| / t.
    pub abs_rel: Option<f64>,
    /// Mean (p - t)^2 / t.
    pub sq_rel: Option<f64>,
    /// Root mean squared error, metres.
    pub rmse: Option<f64>,
    /// Root mean squared error of ln p - ln t.
    pub log_rmse: Option<f64>,
    /// Fraction with max(p/t, t/p) < 1.25.
    pub delta1: Option<f64>,
    /// ... < 1.25^2.
    pub delta2: Option<f64>,
    /// ... < 1.25^3.
    pub delta3: Option<f64>,
    /// Pixels scored.
    pub pixels: u64,
    /// Pixels with valid truth and a NaN or infinite prediction (not scored).
    pub nonfinite_predictions: u64,
    /// Truth above this many metres was not scored.
    pub max_depth: Option<f64>,
    /// Predictions were clamped to at least this many metres.
    pub min_predicted_depth: f64,
    /// Histogram of (p - t) / t: lower bin edges over [-1, 1].
    pub error_bins: Vec<f64>,
    /// Counts per error bin.
    pub error_counts: Vec<u64>,
    /// Pixels with (p - t) / t > 1.
    pub error_overflow: u64,
    /// Errors by true distance.
    pub by_distance: Vec<DistanceErrors>,
}

/// Errors of one true-distance bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistanceErrors {
    /// Bin centre, metres (the last bin also holds truth beyond the range).
    pub distance: f64,
    /// Pixels.
    pub pixels: u64,
    /// AbsRel of these pixels.
    pub abs_rel: Option<f64>,
    /// RMSE of these pixels, metres.
    pub rmse: Option<f64>,
}

impl DepthReport {
    /// From an accumulated analysis.
    pub fn new(d: &DepthAnalysis) -> Self {
        let e = &d.errors;
        Self {
            abs_rel: e.abs_rel(),
            sq_rel: e.sq_rel(),
            rmse: e.rmse(),
            log_rmse: e.log_rmse(),
            delta1: e.delta(0),
            delta2: e.delta(1),
            delta3: e.delta(2),
            pixels: e.pixels(),
            nonfinite_predictions: e.nonfinite_predictions(),
            max_depth: d.max_depth,
            min_predicted_depth: MIN_PREDICTED_DEPTH,
            error_bins: (0..d.error_histogram.len())
                .map(DepthAnalysis::error_bin_start)
                .collect(),
            error_counts: d.error_histogram.clone(),
            error_overflow: d.error_overflow,
            by_distance: d
                .by_distance
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    let n = b.pixels as f64;
                    DistanceErrors {
                        distance: d.distance_bin_centre(j),
                        pixels: b.pixels,
                        abs_rel: (b.pixels > 0).then(|| b.abs_rel_sum / n),
                        rmse: (b.pixels > 0).then(|| (b.sq_sum / n).sqrt()),
                    }
                })
                .collect(),
        }
    }
}

/// Anomaly figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyReport {
    /// ROC AUC of image scores against image labels.
    pub image_auroc: Option<f64>,
    /// Images scored.
    pub images: usize,
    /// Of which anomalous.
    pub anomalous_images: usize,
    /// ROC AUC of anomaly-map pixels against mask pixels (only with truth masks and maps).
    pub pixel_auroc: Option<f64>,
    /// Pixels scored.
    pub pixels: usize,
    /// Of which anomalous.
    pub anomalous_pixels: usize,
}
