//! The ground truth of a frame as it is drawn: depth, class and owning object per pixel, and
//! the modal box of each visible object.

use std::ops::Range;

use super::objects::{ObjectSpec, Placed, CLASS_GROUND, CLASS_NAMES};
use crate::frame::{GroundTruth, GroundTruthBox};

/// Per-pixel truth while a frame is drawn: what the nearest surface so far is, and how far.
pub(super) struct TruthBuffers {
    /// Depth (optical-axis z) per pixel; `f32::INFINITY` until something is hit (sky).
    depth: Vec<f32>,
    /// Class id per pixel.
    mask: Vec<u8>,
    /// Object index + 1 per pixel (0 = none); MAX_OBJECTS < 255.
    owner: Vec<u8>,
    /// 255 where the nearest surface is the anomalous one (when the scene draws anomalies).
    anomaly: Option<Vec<u8>>,
}

impl TruthBuffers {
    /// `pixels` of sky: infinite depth, background class, no object.
    /// With `anomalies`, an anomaly mask too (all normal).
    pub(super) fn new(pixels: usize, anomalies: bool) -> Self {
        TruthBuffers {
            depth: vec![f32::INFINITY; pixels],
            mask: vec![CLASS_GROUND; pixels],
            owner: vec![0u8; pixels],
            anomaly: anomalies.then(|| vec![0u8; pixels]),
        }
    }

    /// The ground at depth `t` covers `pixels` (one image row).
    pub(super) fn ground_row(&mut self, pixels: Range<usize>, t: f64) {
        self.depth[pixels].fill(t as f32);
    }

    /// Depth of the nearest surface drawn at pixel `i` so far (for the depth test).
    pub(super) fn depth(&self, i: usize) -> f64 {
        f64::from(self.depth[i])
    }

    /// Object `obj` is the nearest surface at pixel `i`, at depth `t`.
    /// Object `obj` is the nearest surface at pixel `i`, `anomalous` or not.
    pub(super) fn hit(&mut self, i: usize, t: f64, obj: &Placed, anomalous: bool) {
        self.depth[i] = t as f32;
        self.mask[i] = obj.class_id;
        self.owner[i] = obj.index as u8 + 1;
        if let Some(a) = self.anomaly.as_mut() {
            a[i] = if anomalous { 255 } else { 0 };
        }
    }

    /// The frame's ground truth, with boxes in the order of `objects`.
    pub(super) fn finish(self, width: usize, objects: &[ObjectSpec]) -> GroundTruth {
        GroundTruth {
            boxes: visible_boxes(&self.owner, width, objects),
            class_mask: self.mask,
            depth: self.depth,
            class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            anomaly_mask: self.anomaly,
        }
    }
}

/// Tight boxes around each object's visible pixels, in object order.
fn visible_boxes(owner: &[u8], width: usize, objects: &[ObjectSpec]) -> Vec<GroundTruthBox> {
    // (u0, v0, u1, v1) inclusive, per object.
    let mut extent = vec![(usize::MAX, usize::MAX, 0usize, 0usize); objects.len()];
    let mut seen = vec![false; objects.len()];
    for (v, row) in owner.chunks_exact(width).enumerate() {
        for (u, &o) in row.iter().enumerate() {
            if o == 0 {
                continue;
            }
            let k = usize::from(o - 1);
            let e = &mut extent[k];
            *e = (e.0.min(u), e.1.min(v), e.2.max(u), e.3.max(v));
            seen[k] = true;
        }
    }
    objects
        .iter()
        .zip(extent.iter().zip(&seen))
        .filter(|(_, (_, &seen))| seen)
        .map(|(o, (e, _))| GroundTruthBox {
            class_id: o.class_id,
            x0: e.0 as f32,
            y0: e.1 as f32,
            x1: (e.2 + 1) as f32,
            y1: (e.3 + 1) as f32,
        })
        .collect()
}
