//! PCA feature image: the first three principal components of the patch tokens as RGB.
//!
//! The basis (mean, three components and a per-component display range) is fitted on the patch
//! tokens of the first `fit_frames` frames, or loaded from a JSON file written by
//! [`PcaBasis::save`]. Colours come from mapping each component's 1st..99th percentile (over the
//! fitting tokens) to 0..255; the patch colours are upsampled bilinearly to camera pixels.

use std::path::Path;

use nalgebra::{DMatrix, SymmetricEigen};
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
            fitted_tokens: n,
        };
        let projected = basis.project(tokens);
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
        Ok(basis)
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

/// The PCA feature image head.
#[derive(Debug)]
pub struct PcaHead {
    name: String,
    fit_frames: usize,
    collected: Vec<f32>,
    seen: usize,
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
            collected: Vec::new(),
            seen: 0,
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
            self.collected.extend_from_slice(grid.as_slice());
            self.seen += 1;
            // Until the basis exists, fit on what has been collected so far (the first frame
            // already shows something); the basis is frozen after `fit_frames` frames.
            let basis = PcaBasis::fit(&self.collected, c).map_err(|reason| HeadError::Run {
                head: self.name.clone(),
                reason,
            })?;
            if self.seen >= self.fit_frames {
                self.basis = Some(basis.clone());
                self.collected = Vec::new();
            }
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
