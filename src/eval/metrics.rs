//! Pixel metrics: segmentation confusion (mIoU, pixel accuracy), depth errors (AbsRel, SqRel,
//! RMSE, log RMSE, delta1..3) and box recall, accumulated over frames. The default run's quality
//! line and the `eval` subcommand both use these, so the two never disagree.

use crate::frame::GroundTruthBox;
use crate::heads::detection::iou;
use crate::heads::Detection;

/// Confusion counts of class ids, accumulated over frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    classes: usize,
    /// `counts[truth * classes + predicted]`.
    counts: Vec<u64>,
}

impl Confusion {
    /// For `classes` class ids (0..classes).
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Add one frame; pixels whose truth or prediction is out of range (e.g. 255 = ignore) are
    /// skipped. The two slices must be the same image.
    pub fn add(&mut self, truth: &[u8], predicted: &[u8]) {
        self.add_ignoring(truth, predicted, None);
    }

    /// Add one frame, also skipping pixels whose truth is `ignore`.
    pub fn add_ignoring(&mut self, truth: &[u8], predicted: &[u8], ignore: Option<u8>) {
        let k = self.classes;
        for (&t, &p) in truth.iter().zip(predicted) {
            if Some(t) == ignore {
                continue;
            }
            let (t, p) = (t as usize, p as usize);
            if t < k && p < k {
                self.counts[t * k + p] += 1;
            }
        }
    }

    /// Number of class ids (the matrix is `classes x classes`).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Pixels of truth class `truth` predicted as `predicted`.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        if truth >= self.classes || predicted >= self.classes {
            return 0;
        }
        self.counts[truth * self.classes + predicted]
    }

    /// Pixels counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Fraction of counted pixels whose class is right (`None` before any pixel).
    pub fn pixel_accuracy(&self) -> Option<f64> {
        let total = self.total();
        let right: u64 = (0..self.classes).map(|c| self.count(c, c)).sum();
        (total > 0).then(|| right as f64 / total as f64)
    }

    /// IoU per class (`None` for a class absent from both truth and prediction).
    pub fn iou(&self) -> Vec<Option<f64>> {
        let k = self.classes;
        let mut truth = vec![0u64; k];
        let mut pred = vec![0u64; k];
        for (t, row) in self.counts.chunks_exact(k.max(1)).enumerate() {
            for (p, &n) in row.iter().enumerate() {
                truth[t] += n;
                pred[p] += n;
            }
        }
        (0..k)
            .map(|c| {
                let tp = self.counts[c * k + c];
                let union = truth[c] + pred[c] - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over classes that occur (in truth or prediction).
    pub fn miou(&self) -> Option<f64> {
        let ious: Vec<f64> = self.iou().into_iter().flatten().collect();
        (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
    }
}

/// Predictions are clamped to at least this many metres before ratios and logarithms.
pub const MIN_PREDICTED_DEPTH: f64 = 1e-3;

/// The delta thresholds: max(p/t, t/p) < 1.25, 1.25^2, 1.25^3.
pub const DELTA_THRESHOLDS: [f64; 3] = [1.25, 1.25 * 1.25, 1.25 * 1.25 * 1.25];

/// Depth error sums over valid pixels.
///
/// A pixel is scored when its truth `t` is finite, > 0 and within the range (inclusive); its
/// prediction is then clamped to `p = max(p, 1e-3)` ([`MIN_PREDICTED_DEPTH`]). A non-finite
/// prediction at such a pixel is not scored but counted ([`DepthErrors::nonfinite_predictions`]).
/// Sums are in f64 of the f32 inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DepthErrors {
    pixels: u64,
    nonfinite: u64,
    abs_rel: f64,
    sq_rel: f64,
    sq: f64,
    log_sq: f64,
    delta: [u64; 3],
}

impl DepthErrors {
    /// Add one frame: pixels with finite, positive truth within `range` (inclusive).
    pub fn add(&mut self, truth: &[f32], predicted: &[f32], range: (f32, f32)) {
        self.add_each(
            truth,
            predicted,
            (range.0 as f64, range.1 as f64),
            |_, _| {},
        );
    }

    /// [`DepthErrors::add`] with the range in f64 (compared with the truth widened to f64),
    /// calling `visit(truth, clamped prediction)` for each scored pixel.
    pub fn add_each(
        &mut self,
        truth: &[f32],
        predicted: &[f32],
        range: (f64, f64),
        mut visit: impl FnMut(f64, f64),
    ) {
        for (&t, &p) in truth.iter().zip(predicted) {
            let tf = t as f64;
            if !(t.is_finite() && t > 0.0 && tf >= range.0 && tf <= range.1) {
                continue;
            }
            if !p.is_finite() {
                self.nonfinite += 1;
                continue;
            }
            let (t, p) = (t as f64, (p as f64).max(MIN_PREDICTED_DEPTH));
            let e = p - t;
            self.pixels += 1;
            self.abs_rel += e.abs() / t;
            self.sq_rel += e * e / t;
            self.sq += e * e;
            let l = p.ln() - t.ln();
            self.log_sq += l * l;
            visit(t, p);
            let ratio = (p / t).max(t / p);
            for (n, &thr) in self.delta.iter_mut().zip(&DELTA_THRESHOLDS) {
                if ratio < thr {
                    *n += 1;
                }
            }
        }
    }

    /// Pixels scored.
    pub fn pixels(&self) -> u64 {
        self.pixels
    }

    /// Pixels with valid truth whose prediction was NaN or infinite (not scored).
    pub fn nonfinite_predictions(&self) -> u64 {
        self.nonfinite
    }

    fn mean(&self, sum: f64) -> Option<f64> {
        (self.pixels > 0).then(|| sum / self.pixels as f64)
    }

    /// Mean |p - t| / t.
    pub fn abs_rel(&self) -> Option<f64> {
        self.mean(self.abs_rel)
    }

    /// Mean (p - t)^2 / t.
    pub fn sq_rel(&self) -> Option<f64> {
        self.mean(self.sq_rel)
    }

    /// Root mean squared error, metres.
    pub fn rmse(&self) -> Option<f64> {
        self.mean(self.sq).map(f64::sqrt)
    }

    /// Root mean squared error of ln p - ln t.
    pub fn log_rmse(&self) -> Option<f64> {
        self.mean(self.log_sq).map(f64::sqrt)
    }

    /// Fraction of pixels with max(p/t, t/p) < 1.25.
    pub fn delta1(&self) -> Option<f64> {
        self.delta(0)
    }

    /// Fraction of pixels with max(p/t, t/p) < [`DELTA_THRESHOLDS`]`[i]` (i = 0, 1, 2).
    pub fn delta(&self, i: usize) -> Option<f64> {
        let n = *self.delta.get(i)?;
        self.mean(n as f64)
    }
}

/// Ground-truth boxes found by a same-class detection with IoU >= threshold (greedy, each
/// detection used once).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoxRecall {
    truths: u64,
    found: u64,
}

impl BoxRecall {
    /// Add one frame. `class_offset` maps a detection class id to a ground-truth class id
    /// (the synthetic scene's ids start at 1 for objects, detection heads at 0).
    pub fn add(
        &mut self,
        truth: &[GroundTruthBox],
        detections: &[Detection],
        class_offset: usize,
        threshold: f32,
    ) {
        let mut used = vec![false; detections.len()];
        for t in truth {
            self.truths += 1;
            let tb = [t.x0, t.y0, t.x1, t.y1];
            let best = detections
                .iter()
                .enumerate()
                .filter(|(i, d)| !used[*i] && d.class_id + class_offset == t.class_id as usize)
                .map(|(i, d)| (i, iou(&tb, &[d.x0, d.y0, d.x1, d.y1])))
                .filter(|&(_, v)| v >= threshold)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, _)) = best {
                used[i] = true;
                self.found += 1;
            }
        }
    }

    /// Found / total.
    pub fn recall(&self) -> Option<f64> {
        (self.truths > 0).then(|| self.found as f64 / self.truths as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miou_of_a_half_right_mask() {
        let mut c = Confusion::new(2);
        c.add(&[0, 0, 1, 1], &[0, 1, 1, 1]);
        // class 0: tp 1, union 2 -> 0.5; class 1: tp 2, union 3 -> 2/3.
        let m = c.miou().unwrap();
        assert!((m - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        c.add(&[255], &[0]);
        assert!((c.miou().unwrap() - m).abs() < 1e-12);
    }

    #[test]
    fn depth_errors() {
        let mut d = DepthErrors::default();
        d.add(
            &[2.0, 4.0, f32::INFINITY, 0.0],
            &[3.0, 4.0, 1.0, 1.0],
            (0.1, 80.0),
        );
        assert_eq!(d.abs_rel(), Some(0.25));
        assert_eq!(d.delta1(), Some(0.5));
        assert!((d.rmse().unwrap() - (0.5f64).sqrt()).abs() < 1e-12);
        // (3-2)^2/2 / 2 pixels.
        assert_eq!(d.sq_rel(), Some(0.25));
        assert!((d.log_rmse().unwrap() - ((1.5f64).ln().powi(2) / 2.0).sqrt()).abs() < 1e-12);
        // 3/2 = 1.5 < 1.5625: both pixels within delta2.
        assert_eq!(d.delta(1), Some(1.0));
        assert_eq!(d.delta(3), None);
    }

    #[test]
    fn depth_clamps_predictions_and_counts_nonfinite_ones() {
        let mut d = DepthErrors::default();
        d.add(
            &[1.0, 1.0, 1.0],
            &[-5.0, f32::NAN, 1.0],
            (0.0, f32::INFINITY),
        );
        assert_eq!(d.pixels(), 2);
        assert_eq!(d.nonfinite_predictions(), 1);
        // -5 -> 1e-3: |1e-3 - 1| / 1 = 0.999, over 2 pixels.
        assert!((d.abs_rel().unwrap() - 0.999 / 2.0).abs() < 1e-12);
        assert_eq!(d.delta(2), Some(0.5));
    }

    #[test]
    fn pixel_accuracy_and_ignore_index() {
        let mut c = Confusion::new(256);
        c.add_ignoring(&[0, 1, 1, 7, 255], &[0, 1, 0, 7, 3], Some(7));
        // 255 counts (only 7 is ignored here): 2 right of 4.
        assert_eq!(c.total(), 4);
        assert_eq!(c.pixel_accuracy(), Some(0.5));
        assert_eq!(c.count(1, 0), 1);
        // Classes present: 0 (tp 1, union 2), 1 (tp 1, union 2), 3 (pred only), 255 (truth only).
        assert!((c.miou().unwrap() - 0.25).abs() < 1e-12);
    }
}
