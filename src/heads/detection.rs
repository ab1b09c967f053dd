//! Detection head: anchor-free (FCOS-style) outputs on the patch grid -> class-wise NMS -> boxes
//! in camera pixels.
//!
//! The graph gives per-cell class probabilities `scores [1,K,h,w]` and `l,t,r,b` distances
//! `boxes [1,4,h,w]` in model-input pixels from the cell centre. Candidates are the (cell, class)
//! pairs at or above the score threshold; NMS follows the tie rule in `models/HEADS.md` so that
//! Rust and the Python reference keep identical boxes.

use super::manifest::DetectionParams;
use super::onnx::{expect_shape, HeadGraph, OnnxHead, OutputShape};
use super::{Detection, HeadError, HeadInput, HeadOutput, Task, TaskHead};
use crate::model::Manifest;

/// A box candidate in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Class index.
    pub class_id: usize,
    /// Score.
    pub score: f32,
    /// Box `[x0, y0, x1, y1]`.
    pub bbox: [f32; 4],
}

/// Intersection over union of two `[x0, y0, x1, y1]` boxes (0 for empty boxes).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Class-wise NMS. Candidates are ranked by score descending, then by their index in
/// `candidates` ascending; a candidate is dropped when a kept candidate of the same class
/// overlaps it with IoU (computed in f32) strictly above `iou_threshold` (compared in f64, as
/// the Python reference does). At most `pre_nms_top_k` candidates are
/// considered and at most `max_detections` kept. Returns indices into `candidates`, best first.
pub fn nms(
    candidates: &[Candidate],
    iou_threshold: f64,
    pre_nms_top_k: usize,
    max_detections: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].score.is_finite())
        .collect();
    // Stable sort keeps index order among equal scores.
    order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
    order.truncate(pre_nms_top_k);
    let mut kept: Vec<usize> = Vec::new();
    for &i in &order {
        if kept.len() >= max_detections {
            break;
        }
        let c = &candidates[i];
        let suppressed = kept.iter().any(|&k| {
            candidates[k].class_id == c.class_id
                && f64::from(iou(&candidates[k].bbox, &c.bbox)) > iou_threshold
        });
        if !suppressed {
            kept.push(i);
        }
    }
    kept
}

/// Candidates from the raw outputs (`scores [K,h,w]`, `boxes [4,h,w]`), in the HEADS.md order:
/// index `(i * w + j) * K + k`.
pub fn decode(
    scores: &[f32],
    boxes: &[f32],
    classes: usize,
    grid: (usize, usize),
    patch: usize,
    score_threshold: f64,
) -> Vec<Candidate> {
    let (h, w) = grid;
    let n = h * w;
    let mut out = Vec::new();
    for i in 0..h {
        for j in 0..w {
            let cell = i * w + j;
            let cx = (j as f32 + 0.5) * patch as f32;
            let cy = (i as f32 + 0.5) * patch as f32;
            let (l, t, r, b) = (
                boxes[cell],
                boxes[n + cell],
                boxes[2 * n + cell],
                boxes[3 * n + cell],
            );
            for k in 0..classes {
                let score = scores[k * n + cell];
                if f64::from(score) >= score_threshold {
                    out.push(Candidate {
                        class_id: k,
                        score,
                        bbox: [cx - l, cy - t, cx + r, cy + b],
                    });
                }
            }
        }
    }
    out
}

/// The detection head.
#[derive(Debug)]
pub struct DetectionHead {
    name: String,
    graph: HeadGraph,
    params: DetectionParams,
    grid: (usize, usize),
    patch: usize,
}

impl OnnxHead for DetectionHead {
    const OUTPUTS: &'static [(&'static str, OutputShape)] = &[
        ("scores", OutputShape::ClassGrid),
        ("boxes", OutputShape::Grid(4)),
    ];

    fn from_graph(
        name: &str,
        graph: HeadGraph,
        backbone: &Manifest,
        grid: (usize, usize),
    ) -> Result<Self, HeadError> {
        let params = graph.manifest.detection.clone().ok_or_else(|| {
            HeadError::invalid(&graph.path, "no detection section", "see models/HEADS.md")
        })?;
        Ok(Self {
            name: name.to_string(),
            graph,
            params,
            grid,
            patch: backbone.patch_size,
        })
    }
}

impl DetectionHead {
    /// Current post-processing settings.
    pub fn params(&self) -> &DetectionParams {
        &self.params
    }

    /// Change the score threshold at run time.
    pub fn set_score_threshold(&mut self, t: f64) {
        self.params.score_threshold = t;
    }

    /// Change the NMS IoU threshold at run time.
    pub fn set_nms_iou_threshold(&mut self, t: f64) {
        self.params.nms_iou_threshold = t;
    }

    /// Class names.
    pub fn class_names(&self) -> &[String] {
        &self.graph.manifest.class_names
    }
}

impl TaskHead for DetectionHead {
    fn name(&self) -> &str {
        &self.name
    }

    fn task(&self) -> Task {
        Task::Detection
    }

    fn settings(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("score_threshold", self.params.score_threshold),
            ("nms_iou_threshold", self.params.nms_iou_threshold),
        ]
    }

    fn apply_setting(&mut self, name: &str, value: f64) -> Result<(), String> {
        match name {
            "score_threshold" => self.set_score_threshold(value),
            "nms_iou_threshold" => self.set_nms_iou_threshold(value),
            other => return Err(format!("detection head has no setting {other:?}")),
        }
        Ok(())
    }

    fn run(&mut self, input: &HeadInput) -> Result<HeadOutput, HeadError> {
        let outputs = self.graph.run(input, &self.name)?;
        let (h, w) = self.grid;
        let k = self.graph.manifest.class_names.len();
        let (scores, boxes) = (&outputs[0], &outputs[1]);
        expect_shape(scores, &[1, k, h, w], &self.name)?;
        expect_shape(boxes, &[1, 4, h, w], &self.name)?;
        let candidates = decode(
            &scores.data,
            &boxes.data,
            k,
            self.grid,
            self.patch,
            self.params.score_threshold,
        );
        let keep = nms(
            &candidates,
            self.params.nms_iou_threshold,
            self.params.pre_nms_top_k,
            self.params.max_detections,
        );
        let lb = input.letterbox;
        let (iw, ih) = (lb.image_width as f32, lb.image_height as f32);
        let names = &self.graph.manifest.class_names;
        let detections = keep
            .into_iter()
            .map(|i| {
                let c = &candidates[i];
                let (x0, y0) = lb.to_image(c.bbox[0] as f64, c.bbox[1] as f64);
                let (x1, y1) = lb.to_image(c.bbox[2] as f64, c.bbox[3] as f64);
                Detection {
                    class_id: c.class_id,
                    class_name: names[c.class_id].clone(),
                    score: c.score,
                    x0: (x0 as f32).clamp(0.0, iw),
                    y0: (y0 as f32).clamp(0.0, ih),
                    x1: (x1 as f32).clamp(0.0, iw),
                    y1: (y1 as f32).clamp(0.0, ih),
                }
            })
            .collect();
        Ok(HeadOutput::Detections(detections))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(class_id: usize, score: f32, bbox: [f32; 4]) -> Candidate {
        Candidate {
            class_id,
            score,
            bbox,
        }
    }

    /// A naive reference: repeatedly take the best remaining, drop what it suppresses.
    fn naive(c: &[Candidate], thr: f64, max: usize) -> Vec<usize> {
        let mut alive: Vec<usize> = (0..c.len()).collect();
        let mut kept = Vec::new();
        while !alive.is_empty() && kept.len() < max {
            let best = *alive
                .iter()
                .max_by(|&&a, &&b| c[a].score.total_cmp(&c[b].score).then(b.cmp(&a)))
                .unwrap();
            kept.push(best);
            alive.retain(|&i| {
                i != best
                    && !(c[i].class_id == c[best].class_id
                        && f64::from(iou(&c[i].bbox, &c[best].bbox)) > thr)
            });
        }
        kept
    }

    #[test]
    fn ties_keep_the_lower_index_and_other_classes_survive() {
        let b = [0.0, 0.0, 10.0, 10.0];
        let c = [cand(0, 0.9, b), cand(0, 0.9, b), cand(1, 0.9, b)];
        assert_eq!(nms(&c, 0.5, 100, 100), vec![0, 2]);
        assert!(nms(&[], 0.5, 100, 100).is_empty());
    }

    proptest! {
        #[test]
        fn greedy_nms_equals_the_naive_reference(
            raw in prop::collection::vec((0usize..3, 0u8..5, 0u8..20, 0u8..20, 1u8..15, 1u8..15), 0..40),
            thr in 0.0f64..1.0,
        ) {
            let c: Vec<Candidate> = raw
                .iter()
                .map(|&(k, s, x, y, w, h)| {
                    let (x, y) = (x as f32, y as f32);
                    cand(k, s as f32 / 4.0, [x, y, x + w as f32, y + h as f32])
                })
                .collect();
            prop_assert_eq!(nms(&c, thr, usize::MAX, 7), naive(&c, thr, 7));
        }
    }
}
