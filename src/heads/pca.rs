//! PCA feature image: the first three principal components of the patch tokens as RGB.
//!
//! The basis (mean, three components and a per-component display range) is fitted on the patch
//! tokens of the first `fit_frames` frames, or loaded from a JSON file written by
//! [`PcaBasis::save`]. Colours come from mapping each component's 1st..99th percentile (over a
//! uniform sample of the fitting tokens) to 0..255; the patch colours are upsampled bilinearly
//! to camera pixels.
//!
//! Fitting holds a running mean and covariance (`C x C`) and a fixed-size token sample, not the
//! tokens, and refits (one eigen-decomposition) on frames 1, 2, 4, 8, ... and the last one:
//! memory and time stay bounded however large `fit_frames` is.

use std::path::Path;

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::upsample::UpsamplerCache;
use super::{HeadError, HeadInput, HeadOutput, RgbImage, Task, TaskHead};

/// Components shown (R, G, B).
pub const COMPONENTS: usize = 3;

/// A fitted 3-component PCA basis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcaBasis {
    /// Feature dimension C.
    pub hidden_size: usize,
    /// Mean token, `[C]`.
    pub mean: Vec<f32>,
    /// Components, `[3][C]`, unit length, largest variance first.
    pub components: Vec<Vec<f32>>,
    /// Per-component value mapped to 0.
    pub low: [f32; COMPONENTS],
    /// Per-component value mapped to 255.
    pub high: [f32; COMPONENTS],
    /// Tokens the basis was fitted on.
    pub fitted_tokens: usize,
}

impl PcaBasis {
    /// Fit on `tokens` (`[n, c]` row-major). Needs at least 4 tokens.
    pub fn fit(tokens: &[f32], c: usize) -> Result<Self, String> {
        if c == 0 || !tokens.len().is_multiple_of(c) || tokens.len() / c < COMPONENTS + 1 {
            return Err(format!(
                "need at least {} tokens of dimension {c} to fit a PCA basis, got {} values",
                COMPONENTS + 1,
                tokens.len()
            ));
        }
        let n = tokens.len() / c;
        let mut mean = vec![0f64; c];
        for t in tokens.chunks_exact(c) {
            for (m, &v) in mean.iter_mut().zip(t) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred = DMatrix::<f64>::from_fn(n, c, |i, j| tokens[i * c + j] as f64 - mean[j]);
        let cov = centred.transpose() * &centred / (n as f64 - 1.0).max(1.0);
        Ok(Self::from_moments(&mean, cov, tokens, n))
    }

    /// The basis of tokens with mean `mean` and covariance `cov` (`[c, c]`): the three
    /// eigenvectors of largest eigenvalue, and the display range from the projections of
    /// `range_tokens` (all the tokens, or a sample of them). `fitted_tokens` is recorded.
    fn from_moments(
        mean: &[f64],
        cov: DMatrix<f64>,
        range_tokens: &[f32],
        fitted_tokens: usize,
    ) -> Self {
        let c = mean.len();
        let eigen = SymmetricEigen::new(cov);
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let mut components = Vec::with_capacity(COMPONENTS);
        for &k in order.iter().take(COMPONENTS) {
            let v = eigen.eigenvectors.column(k);
            // Fix the sign so the largest-magnitude entry is positive: colours do not flip
            // between fits on similar data.
            let big = v
                .iter()
                .copied()
                .fold(0f64, |a, x| if x.abs() > a.abs() { x } else { a });
            let s = if big < 0.0 { -1.0 } else { 1.0 };
            components.push(v.iter().map(|&x| (x * s) as f32).collect::<Vec<f32>>());
        }
        while components.len() < COMPONENTS {
            components.push(vec![0.0; c]);
        }
        let mut basis = Self {
            hidden_size: c,
            mean: mean.iter().map(|&m| m as f32).collect(),
            components,
            low: [0.0; COMPONENTS],
            high: [1.0; COMPONENTS],
            fitted_tokens,
        };
        let projected = basis.project(range_tokens);
        if projected.is_empty() {
            return basis;
        }
        for k in 0..COMPONENTS {
            let mut values: Vec<f32> = projected
                .iter()
                .skip(k)
                .step_by(COMPONENTS)
                .copied()
                .collect();
            values.sort_by(f32::total_cmp);
            let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
            let (lo, hi) = (at(0.01), at(0.99));
            basis.low[k] = lo;
            basis.high[k] = if hi > lo { hi } else { lo + 1.0 };
        }
        basis
    }

    /// Project `[n, c]` tokens: `[n, 3]` row-major.
    pub fn project(&self, tokens: &[f32]) -> Vec<f32> {
        let c = self.hidden_size;
        let mut out = Vec::with_capacity(tokens.len() / c * COMPONENTS);
        for t in tokens.chunks_exact(c) {
            for comp in &self.components {
                let mut acc = 0f32;
                for ((&v, &m), &w) in t.iter().zip(&self.mean).zip(comp) {
                    acc += (v - m) * w;
                }
                out.push(acc);
            }
        }
        out
    }

    /// Write the basis as JSON.
    pub fn save(&self, path: &Path) -> Result<(), HeadError> {
        let text = serde_json::to_string(self)
            .map_err(|e| HeadError::invalid(path, e.to_string(), "report a bug"))?;
        std::fs::write(path, text).map_err(|source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Read a basis written by [`PcaBasis::save`], for a backbone of dimension `hidden_size`.
    pub fn load(path: &Path, hidden_size: usize) -> Result<Self, HeadError> {
        let text = std::fs::read_to_string(path).map_err(|source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let basis: PcaBasis = serde_json::from_str(&text).map_err(|e| {
            HeadError::invalid(
                path,
                format!("not a PCA basis: {e}"),
                "delete it and let the node fit a new one (pca fit_frames)",
            )
        })?;
        let c = basis.hidden_size;
        if c != hidden_size {
            return Err(HeadError::BackboneMismatch {
                path: path.to_path_buf(),
                what: "the feature dimension".into(),
                head: c.to_string(),
                backbone: hidden_size.to_string(),
                fix: "fit a new basis on this backbone".into(),
            });
        }
        if basis.mean.len() != c
            || basis.components.len() != COMPONENTS
            || basis.components.iter().any(|v| v.len() != c)
            || basis
                .mean
                .iter()
                .chain(basis.components.iter().flatten())
                .any(|v| !v.is_finite())
        {
            return Err(HeadError::invalid(
                path,
                format!(
                    "mean and components must be finite with {c} values each (and 3 components)"
                ),
                "delete it and let the node fit a new one",
            ));
        }
        Ok(basis)
    }

    /// Colour `[n, 3]` projections to RGB8 planes `[3, n]` as f32 0..255.
    fn colour_planes(&self, projected: &[f32]) -> Vec<f32> {
        let n = projected.len() / COMPONENTS;
        let mut planes = vec![0f32; COMPONENTS * n];
        for (i, p) in projected.chunks_exact(COMPONENTS).enumerate() {
            for k in 0..COMPONENTS {
                let t = (p[k] - self.low[k]) / (self.high[k] - self.low[k]);
                planes[k * n + i] = t.clamp(0.0, 1.0) * 255.0;
            }
        }
        planes
    }
}

/// Tokens kept to place the display range (1st..99th percentile of each component): a uniform
/// sample of every token fitted on (reservoir sampling), so memory does not grow with frames.
pub const RANGE_SAMPLE_TOKENS: usize = 4096;

/// What fitting holds: running mean and covariance of every token seen (merged batch by batch,
/// Chan et al.; `[c, c]` whatever the frame count) and a fixed-size token sample for the range.
#[derive(Debug)]
struct Fitting {
    c: usize,
    /// Tokens seen.
    n: usize,
    mean: DVector<f64>,
    /// Sum of squared deviations from the mean (`n - 1` times the covariance).
    m2: DMatrix<f64>,
    /// Up to [`RANGE_SAMPLE_TOKENS`] tokens, `[k, c]` row-major.
    sample: Vec<f32>,
    rng: ChaCha8Rng,
}

impl Fitting {
    fn new(c: usize) -> Self {
        Fitting {
            c,
            n: 0,
            mean: DVector::zeros(c),
            m2: DMatrix::zeros(c, c),
            sample: Vec::new(),
            // Fixed seed: the same frames give the same basis.
            rng: ChaCha8Rng::seed_from_u64(0x9ca_5eed),
        }
    }

    /// Merge one frame's tokens (`[m, c]` row-major).
    fn add(&mut self, tokens: &[f32]) {
        let c = self.c;
        let m = tokens.len() / c;
        if m == 0 {
            return;
        }
        let batch = DMatrix::<f64>::from_row_iterator(m, c, tokens.iter().map(|&v| v as f64));
        let batch_mean =
            DVector::<f64>::from_iterator(c, batch.column_iter().map(|col| col.mean()));
        let mut centred = batch;
        for mut row in centred.row_iter_mut() {
            row -= batch_mean.transpose();
        }
        let batch_m2 = centred.transpose() * &centred;
        let (na, nb) = (self.n as f64, m as f64);
        let total = na + nb;
        let delta = &batch_mean - &self.mean;
        self.m2 += batch_m2 + &delta * delta.transpose() * (na * nb / total);
        self.mean += &delta * (nb / total);
        // Reservoir sampling (Algorithm R) over the tokens, in order.
        for (i, t) in tokens.chunks_exact(c).enumerate() {
            let seen = self.n + i;
            if seen < RANGE_SAMPLE_TOKENS {
                self.sample.extend_from_slice(t);
            } else {
                let j = self.rng.random_range(0..=seen);
                if j < RANGE_SAMPLE_TOKENS {
                    self.sample[j * c..(j + 1) * c].copy_from_slice(t);
                }
            }
        }
        self.n += m;
    }

    /// The basis of everything merged so far (one eigen-decomposition of `[c, c]`).
    fn basis(&self) -> Result<PcaBasis, String> {
        if self.n < COMPONENTS + 1 {
            return Err(format!(
                "need at least {} tokens of dimension {} to fit a PCA basis, got {}",
                COMPONENTS + 1,
                self.c,
                self.n
            ));
        }
        let cov = &self.m2 / (self.n as f64 - 1.0).max(1.0);
        Ok(PcaBasis::from_moments(
            self.mean.as_slice(),
            cov,
            &self.sample,
            self.n,
        ))
    }

    /// Values held.
    fn values(&self) -> usize {
        self.m2.len() + self.mean.len() + self.sample.len()
    }
}

/// The PCA feature image head.
#[derive(Debug)]
pub struct PcaHead {
    name: String,
    fit_frames: usize,
    /// While fitting: the running statistics (`None` before the first frame and once frozen).
    fitting: Option<Fitting>,
    /// While fitting: the basis of the last refit, which frames are rendered with.
    current: Option<PcaBasis>,
    seen: usize,
    refits: usize,
    basis: Option<PcaBasis>,
    upsampler: UpsamplerCache,
    patch: usize,
}

impl PcaHead {
    /// A head that fits its basis on the first `fit_frames` frames (at least 1).
    pub fn fitting(name: &str, fit_frames: usize, patch: usize) -> Self {
        Self {
            name: name.to_string(),
            fit_frames: fit_frames.max(1),
            fitting: None,
            current: None,
            seen: 0,
            refits: 0,
            basis: None,
            upsampler: UpsamplerCache::default(),
            patch,
        }
    }

    /// A head with a fixed basis.
    pub fn with_basis(name: &str, basis: PcaBasis, patch: usize) -> Self {
        Self {
            basis: Some(basis),
            ..Self::fitting(name, 1, patch)
        }
    }

    /// Values (floats) held for fitting: the running covariance `[c, c]` and mean, and the
    /// range sample (at most [`RANGE_SAMPLE_TOKENS`] tokens); 0 once the basis is frozen.
    pub fn fitting_values(&self) -> usize {
        self.fitting.as_ref().map_or(0, Fitting::values)
    }

    /// Eigen-decompositions done so far while fitting.
    pub fn refits(&self) -> usize {
        self.refits
    }

    /// One fitting frame's tokens (`[n, c]`): returns the basis to render this frame with.
    ///
    /// The tokens are merged into running statistics (bounded memory); the basis is refitted
    /// on frames 1, 2, 4, 8, ... and on the last fitting frame (about log2(`fit_frames`)
    /// eigen-decompositions in all), then frozen.
    fn fit_step(&mut self, tokens: &[f32], c: usize) -> Result<PcaBasis, HeadError> {
        let run_error = |reason: String| HeadError::Run {
            head: self.name.clone(),
            reason,
        };
        let fitting = self.fitting.get_or_insert_with(|| Fitting::new(c));
        if fitting.c != c {
            return Err(run_error(format!(
                "features changed dimension from {} to {c} while fitting",
                fitting.c
            )));
        }
        fitting.add(tokens);
        self.seen += 1;
        let last = self.seen >= self.fit_frames;
        if self.current.is_none() || self.seen.is_power_of_two() || last {
            let basis = fitting.basis().map_err(run_error)?;
            self.refits += 1;
            self.current = Some(basis);
        }
        let basis = self
            .current
            .clone()
            .unwrap_or_else(|| unreachable!("set just above"));
        if last {
            self.basis = Some(basis.clone());
            self.fitting = None;
            self.current = None;
        }
        Ok(basis)
    }

    /// The basis, once fitted or loaded.
    pub fn basis(&self) -> Option<&PcaBasis> {
        self.basis.as_ref()
    }
}

impl TaskHead for PcaHead {
    fn name(&self) -> &str {
        &self.name
    }

    fn task(&self) -> Task {
        Task::Pca
    }

    fn run(&mut self, input: &HeadInput) -> Result<HeadOutput, HeadError> {
        let grid = input.features.patch_grid();
        let c = grid.channels;
        if self.basis.is_none() {
            let basis = self.fit_step(grid.as_slice(), c)?;
            return Ok(HeadOutput::Pca(self.render(&basis, input)));
        }
        let basis = self
            .basis
            .clone()
            .unwrap_or_else(|| unreachable!("checked above"));
        if basis.hidden_size != c {
            return Err(HeadError::Run {
                head: self.name.clone(),
                reason: format!("basis has dimension {}, features {c}", basis.hidden_size),
            });
        }
        Ok(HeadOutput::Pca(self.render(&basis, input)))
    }
}

impl PcaHead {
    fn render(&mut self, basis: &PcaBasis, input: &HeadInput) -> RgbImage {
        let grid = input.features.patch_grid();
        let dims = (grid.height, grid.width);
        let up = self.upsampler.get(input.letterbox, dims, self.patch);
        let planes = basis.colour_planes(&basis.project(grid.as_slice()));
        let big = up.planes(&planes, COMPONENTS);
        let n = up.width * up.height;
        let mut data = vec![0u8; n * 3];
        for (i, px) in data.chunks_exact_mut(3).enumerate() {
            for k in 0..COMPONENTS {
                // Values are already in 0..=255; +0.5 and truncation rounds them (f32::round
                // is a libm call on baseline x86-64 and was most of this loop's time).
                px[k] = (big[k * n + i].clamp(0.0, 255.0) + 0.5) as u8;
            }
        }
        RgbImage {
            width: up.width,
            height: up.height,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `frames` frames of `per_frame` tokens of dimension 8: three latent factors of variance
    /// 9, 4 and 1 along fixed directions, small noise, and a mean that is not zero.
    fn factor_tokens(frames: usize, per_frame: usize) -> Vec<Vec<f32>> {
        let c = 8;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = move || {
            // xorshift64*: deterministic, good enough for test data.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let dirs: [[f64; 8]; 3] = [
            [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        ];
        let scale = [3.0, 2.0, 1.0];
        (0..frames)
            .map(|_| {
                let mut t = Vec::with_capacity(per_frame * c);
                for _ in 0..per_frame {
                    // Uniform(-0.5, 0.5) has variance 1/12: scale to unit variance.
                    let z: Vec<f64> = (0..3).map(|_| uniform() * 12f64.sqrt()).collect();
                    for j in 0..c {
                        let mut v = 5.0 + j as f64 + 0.01 * uniform();
                        for k in 0..3 {
                            let norm = dirs[k].iter().map(|d| d * d).sum::<f64>().sqrt();
                            v += scale[k] * z[k] * dirs[k][j] / norm;
                        }
                        t.push(v as f32);
                    }
                }
                t
            })
            .collect()
    }

    #[test]
    fn fitting_holds_bounded_state_refits_rarely_and_matches_batch_pca() {
        const FRAMES: usize = 300;
        const PER_FRAME: usize = 48;
        let frames = factor_tokens(FRAMES, PER_FRAME);
        let mut head = PcaHead::fitting("pca", FRAMES, 16);
        let mut held = Vec::new();
        for t in &frames {
            head.fit_step(t, 8).unwrap();
            held.push(head.fitting_values());
        }
        // Held state: the same after 150 frames as after 299 (the last frame frees it).
        assert_eq!(
            held[149],
            held[FRAMES - 2],
            "fitting state grows with the frames: {} values after 150 frames, {} after {}",
            held[149],
            held[FRAMES - 2],
            FRAMES - 1
        );
        // Eigen-decompositions: frames 1, 2, 4, ..., 256 and the last one.
        assert!(
            head.refits() <= 10,
            "{} refits in {FRAMES} frames",
            head.refits()
        );
        let streamed = head.basis().expect("frozen after the fit frames").clone();
        let all: Vec<f32> = frames.concat();
        let batch = PcaBasis::fit(&all, 8).unwrap();
        assert_eq!(streamed.fitted_tokens, FRAMES * PER_FRAME);
        // Tolerances: f64 accumulation, f32 storage; the display range comes from a sample.
        const MEAN_TOL: f32 = 1e-4;
        const COMPONENT_TOL: f32 = 1e-3;
        const RANGE_TOL: f32 = 0.05; // of the batch range's width
        for (a, b) in streamed.mean.iter().zip(&batch.mean) {
            assert!((a - b).abs() <= MEAN_TOL, "mean {a} vs {b}");
        }
        for k in 0..COMPONENTS {
            for (a, b) in streamed.components[k].iter().zip(&batch.components[k]) {
                assert!(
                    (a - b).abs() <= COMPONENT_TOL,
                    "component {k}: {:?} vs {:?}",
                    streamed.components[k],
                    batch.components[k]
                );
            }
            let width = batch.high[k] - batch.low[k];
            assert!(
                (streamed.low[k] - batch.low[k]).abs() <= RANGE_TOL * width
                    && (streamed.high[k] - batch.high[k]).abs() <= RANGE_TOL * width,
                "component {k} range {}..{} vs batch {}..{}",
                streamed.low[k],
                streamed.high[k],
                batch.low[k],
                batch.high[k]
            );
        }
        // The first component is the variance-9 direction (1, 1, 0, ...) / sqrt(2).
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!(
            (batch.components[0][0] - s).abs() < 0.02,
            "{:?}",
            batch.components[0]
        );
    }

    #[test]
    fn finds_the_dominant_direction() {
        // Tokens spread along (1, 1, 0, 0) with small noise in the other directions.
        let mut tokens = Vec::new();
        for i in 0..50 {
            let t = i as f32 - 25.0;
            let e = ((i * 7919) % 13) as f32 * 0.01;
            tokens.extend_from_slice(&[t, t, e, -e]);
        }
        let basis = PcaBasis::fit(&tokens, 4).unwrap();
        let first = &basis.components[0];
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!(
            (first[0] - s).abs() < 1e-3 && (first[1] - s).abs() < 1e-3,
            "{first:?}"
        );
        assert!(PcaBasis::fit(&tokens[..8], 4).is_err());
    }
}
