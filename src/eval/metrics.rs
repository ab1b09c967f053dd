//! Pixel metrics: segmentation confusion (mIoU), depth errors (AbsRel, RMSE, delta1) and box
//! recall, accumulated over frames.

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
        let k = self.classes;
        for (&t, &p) in truth.iter().zip(predicted) {
            let (t, p) = (t as usize, p as usize);
            if t < k && p < k {
                self.counts[t * k + p] += 1;
            }
        }
    }

    /// IoU per class (`None` for a class absent from both truth and prediction).
    pub fn iou(&self) -> Vec<Option<f64>> {
        let k = self.classes;
        (0..k)
            .map(|c| {
                let tp = self.counts[c * k + c];
                let truth: u64 = (0..k).map(|p| self.counts[c * k + p]).sum();
                let pred: u64 = (0..k).map(|t| self.counts[t * k + c]).sum();
                let union = truth + pred - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over classes that occur.
    pub fn miou(&self) -> Option<f64> {
        let ious: Vec<f64> = self.iou().into_iter().flatten().collect();
        (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
    }
}

/// Depth error sums over valid pixels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DepthErrors {
    pixels: u64,
    abs_rel: f64,
    sq: f64,
    delta1: u64,
}

impl DepthErrors {
    /// Add one frame: pixels with finite, positive truth within `range` and a finite prediction.
    pub fn add(&mut self, truth: &[f32], predicted: &[f32], range: (f32, f32)) {
        for (&t, &p) in truth.iter().zip(predicted) {
            if !(t.is_finite()
                && t > 0.0
                && t >= range.0
                && t <= range.1
                && p.is_finite()
                && p > 0.0)
            {
                continue;
            }
            let (t, p) = (t as f64, p as f64);
            self.pixels += 1;
            self.abs_rel += (p - t).abs() / t;
            self.sq += (p - t) * (p - t);
            if (p / t).max(t / p) < 1.25 {
                self.delta1 += 1;
            }
        }
    }

    /// Mean |p - t| / t.
    pub fn abs_rel(&self) -> Option<f64> {
        (self.pixels > 0).then(|| self.abs_rel / self.pixels as f64)
    }

    /// Root mean squared error, metres.
    pub fn rmse(&self) -> Option<f64> {
        (self.pixels > 0).then(|| (self.sq / self.pixels as f64).sqrt())
    }

    /// Fraction of pixels with max(p/t, t/p) < 1.25.
    pub fn delta1(&self) -> Option<f64> {
        (self.pixels > 0).then(|| self.delta1 as f64 / self.pixels as f64)
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
    }
}
