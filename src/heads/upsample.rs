//! Bilinear upsampling of patch-resolution maps to camera pixels.
//!
//! Camera pixel centre `u + 0.5` maps to model-input `x = (u + 0.5) * scale_x + pad_x` through
//! the letterbox, then to grid coordinate `x / patch - 0.5`, clamped to the grid: for a stretched
//! input this is exactly PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` to the
//! camera size, which is what the heads were trained against. The weights are separable, so
//! they are computed once per axis and reused for every channel.

use crate::preprocess::Letterbox;

/// Per-output-position source indices and weight of the second one.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisWeights {
    /// First source index.
    pub i0: Vec<u32>,
    /// Second source index (== i0 at the border).
    pub i1: Vec<u32>,
    /// Weight of i1 (i0 gets 1 - w).
    pub w: Vec<f32>,
}

impl AxisWeights {
    /// Weights for `out` output pixels sampling `len` grid cells, where output pixel centre
    /// `p + 0.5` lies at model-input coordinate `(p + 0.5) * scale + pad` and a cell is `patch`
    /// model pixels wide.
    pub fn new(out: usize, len: usize, scale: f64, pad: f64, patch: usize) -> Self {
        let mut i0 = Vec::with_capacity(out);
        let mut i1 = Vec::with_capacity(out);
        let mut w = Vec::with_capacity(out);
        let last = len.saturating_sub(1) as f64;
        for p in 0..out {
            let g = (((p as f64 + 0.5) * scale + pad) / patch as f64 - 0.5).clamp(0.0, last);
            let a = g.floor();
            let b = (a + 1.0).min(last);
            i0.push(a as u32);
            i1.push(b as u32);
            w.push((g - a) as f32);
        }
        Self { i0, i1, w }
    }
}

/// Upsampling plan from a `grid_h x grid_w` map to the camera image of a letterbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsampler {
    /// Output width (camera pixels).
    pub width: usize,
    /// Output height.
    pub height: usize,
    grid_w: usize,
    grid_h: usize,
    x: AxisWeights,
    y: AxisWeights,
}

impl Upsampler {
    /// Plan for `letterbox`'s camera image and a `grid` of `patch`-pixel cells.
    pub fn new(letterbox: &Letterbox, grid: (usize, usize), patch: usize) -> Self {
        let (gh, gw) = grid;
        Self {
            width: letterbox.image_width,
            height: letterbox.image_height,
            grid_w: gw,
            grid_h: gh,
            x: AxisWeights::new(
                letterbox.image_width,
                gw,
                letterbox.scale_x,
                letterbox.pad_x,
                patch,
            ),
            y: AxisWeights::new(
                letterbox.image_height,
                gh,
                letterbox.scale_y,
                letterbox.pad_y,
                patch,
            ),
        }
    }

    /// Upsample one `[grid_h, grid_w]` plane into `out` (`height * width`, row-major).
    pub fn plane(&self, plane: &[f32], out: &mut [f32]) {
        let gw = self.grid_w;
        // Horizontal pass per grid row, then blend two rows per output row.
        let mut rows = vec![0.0f32; self.grid_h * self.width];
        for gy in 0..self.grid_h {
            let src = &plane[gy * gw..(gy + 1) * gw];
            let dst = &mut rows[gy * self.width..(gy + 1) * self.width];
            for (u, d) in dst.iter_mut().enumerate() {
                let (a, b, w) = (self.x.i0[u] as usize, self.x.i1[u] as usize, self.x.w[u]);
                *d = src[a] + (src[b] - src[a]) * w;
            }
        }
        for (v, dst) in out.chunks_exact_mut(self.width).enumerate() {
            let (a, b, w) = (self.y.i0[v] as usize, self.y.i1[v] as usize, self.y.w[v]);
            let ra = &rows[a * self.width..(a + 1) * self.width];
            let rb = &rows[b * self.width..(b + 1) * self.width];
            for ((d, &pa), &pb) in dst.iter_mut().zip(ra).zip(rb) {
                *d = pa + (pb - pa) * w;
            }
        }
    }

    /// Upsample `channels` planes (`[channels, grid_h, grid_w]`) to `[channels, height, width]`.
    pub fn planes(&self, planes: &[f32], channels: usize) -> Vec<f32> {
        let n_in = self.grid_h * self.grid_w;
        let n_out = self.height * self.width;
        let mut out = vec![0.0f32; channels * n_out];
        for (src, dst) in planes
            .chunks_exact(n_in)
            .zip(out.chunks_exact_mut(n_out))
            .take(channels)
        {
            self.plane(src, dst);
        }
        out
    }

    /// Per-pixel argmax over `channels` upsampled planes (ties to the lower class id, as
    /// `torch.argmax`), without upsampling every plane.
    ///
    /// Each output pixel interpolates the four grid cells around it, so within one such quad a
    /// class can only win if its largest corner value reaches the best smallest corner value of
    /// any class. Classes below that bound (with a rounding margin) are skipped for the whole
    /// quad: the result equals the argmax of the fully upsampled logits, at a fraction of the
    /// cost when there are many classes.
    pub fn argmax(&self, planes: &[f32], channels: usize) -> Vec<u8> {
        let (gh, gw) = (self.grid_h, self.grid_w);
        let n_in = gh * gw;
        let k = channels.min(planes.len() / n_in.max(1));
        let mut ids = vec![0u8; self.height * self.width];
        if k == 0 || n_in == 0 {
            return ids;
        }
        let at = |c: usize, y: usize, x: usize| planes[c * n_in + y * gw + x];
        // Candidate classes per quad, indexed by the quad's first cell (i0 of y, i0 of x).
        let mut candidates: Vec<Vec<u16>> = Vec::with_capacity(n_in);
        for y0 in 0..gh {
            let y1 = (y0 + 1).min(gh - 1);
            for x0 in 0..gw {
                let x1 = (x0 + 1).min(gw - 1);
                let corners = |c: usize| {
                    let v = [at(c, y0, x0), at(c, y0, x1), at(c, y1, x0), at(c, y1, x1)];
                    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    (lo, hi)
                };
                let bound = (0..k)
                    .map(|c| corners(c).0)
                    .fold(f32::NEG_INFINITY, f32::max);
                let margin = 1e-5 * (bound.abs() + 1.0);
                let list: Vec<u16> = (0..k)
                    // Keep NaN corners (never provably losing), like the full argmax would see them.
                    .filter(|&c| {
                        corners(c).1.partial_cmp(&(bound - margin))
                            != Some(std::cmp::Ordering::Less)
                    })
                    .map(|c| c as u16)
                    .collect();
                candidates.push(list);
            }
        }
        for (v, row) in ids.chunks_exact_mut(self.width).enumerate() {
            let (a, b, wy) = (self.y.i0[v] as usize, self.y.i1[v] as usize, self.y.w[v]);
            for (u, id) in row.iter_mut().enumerate() {
                let (c0, c1, wx) = (self.x.i0[u] as usize, self.x.i1[u] as usize, self.x.w[u]);
                let mut best = f32::NEG_INFINITY;
                let mut best_id = 0u16;
                for &cls in &candidates[a * gw + c0] {
                    let c = cls as usize;
                    // Same arithmetic as `plane`: horizontal lerps, then vertical.
                    let (pa, qa) = (at(c, a, c0), at(c, a, c1));
                    let (pb, qb) = (at(c, b, c0), at(c, b, c1));
                    let ra = pa + (qa - pa) * wx;
                    let rb = pb + (qb - pb) * wx;
                    let val = ra + (rb - ra) * wy;
                    if val > best {
                        best = val;
                        best_id = cls;
                    }
                }
                *id = best_id as u8;
            }
        }
        ids
    }

    /// Reference argmax: upsample every plane, then compare (for tests).
    pub fn argmax_full(&self, planes: &[f32], channels: usize) -> Vec<u8> {
        let n_in = self.grid_h * self.grid_w;
        let n_out = self.height * self.width;
        let mut best = vec![f32::NEG_INFINITY; n_out];
        let mut ids = vec![0u8; n_out];
        let mut plane = vec![0.0f32; n_out];
        for (k, src) in planes.chunks_exact(n_in).take(channels).enumerate() {
            self.plane(src, &mut plane);
            for ((b, id), &v) in best.iter_mut().zip(ids.iter_mut()).zip(&plane) {
                if v > *b {
                    *b = v;
                    *id = k as u8;
                }
            }
        }
        ids
    }
}

/// The upsampling plan of the last frame's geometry, reused while the letterbox, grid and patch
/// size stay the same (every frame of a camera), so the weights are not recomputed per frame.
#[derive(Debug, Clone, Default)]
pub struct UpsamplerCache {
    key: Option<(Letterbox, (usize, usize), usize)>,
    plan: Option<Upsampler>,
}

impl UpsamplerCache {
    /// The plan for this geometry, computed only when it differs from the last one.
    pub fn get(&mut self, letterbox: &Letterbox, grid: (usize, usize), patch: usize) -> &Upsampler {
        let key = (*letterbox, grid, patch);
        if self.key != Some(key) {
            self.key = Some(key);
            self.plan = None;
        }
        self.plan
            .get_or_insert_with(|| Upsampler::new(letterbox, grid, patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InputSize;
    use crate::preprocess::ResizeMode;

    #[test]
    fn constant_plane_stays_constant_and_edges_clamp() {
        let lb = Letterbox::plan(
            40,
            30,
            InputSize {
                height: 32,
                width: 48,
            },
            ResizeMode::Letterbox,
        );
        let up = Upsampler::new(&lb, (2, 3), 16);
        let out = up.planes(&[7.0; 6], 1);
        assert!(out.iter().all(|&v| (v - 7.0).abs() < 1e-6));
        // A ramp along x: the leftmost pixel clamps to cell 0, the rightmost to the last cell.
        let out = up.planes(&[0.0, 1.0, 2.0, 0.0, 1.0, 2.0], 1);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[39], 2.0);
        assert!(out.windows(2).take(39).all(|p| p[1] >= p[0]));
    }

    proptest::proptest! {
        #[test]
        fn pruned_argmax_equals_the_full_argmax(
            logits in proptest::collection::vec(-4i8..4, 3 * 4 * 7),
            iw in 5usize..60, ih in 5usize..40, letterbox in proptest::bool::ANY,
        ) {
            // Small integer logits make ties common: ties must go to the lower class id too.
            let planes: Vec<f32> = logits.iter().map(|&v| v as f32 * 0.5).collect();
            let mode = if letterbox { ResizeMode::Letterbox } else { ResizeMode::Stretch };
            let lb = Letterbox::plan(iw, ih, InputSize { height: 48, width: 112 }, mode);
            let up = Upsampler::new(&lb, (3, 7), 16);
            proptest::prop_assert_eq!(up.argmax(&planes[..4 * 21], 4), up.argmax_full(&planes[..4 * 21], 4));
        }
    }
}
