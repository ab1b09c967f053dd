//! [`MemoryBank`]: the L2-normalised patch tokens of normal images in memory, with the record of
//! where they came from; adding references, coreset subsampling and patch distances. Its files
//! are read and written in `bank_file.rs`.

use super::super::BackboneRef;
use super::coreset::{greedy_coreset_with_progress, CoresetInfo, CoresetOptions};
use super::search::{
    check_rows, check_top_percent, l2_normalize_rows, max_cosine, BankDataError,
    DEFAULT_TOP_PERCENT,
};
use crate::model::Manifest;

/// L2-normalised patch tokens of normal images, with the record of where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBank {
    backbone: BackboneRef,
    features: Vec<f32>,
    images: usize,
    coreset: CoresetInfo,
    top_percent: f32,
}

impl MemoryBank {
    /// An empty bank for patch tokens of `backbone` (dimension `backbone.hidden_size`).
    pub fn new(backbone: BackboneRef) -> Self {
        Self {
            backbone,
            features: Vec::new(),
            images: 0,
            coreset: CoresetInfo { target: 0, from: 0 },
            top_percent: DEFAULT_TOP_PERCENT,
        }
    }

    /// The [`BackboneRef`] of a backbone manifest running at `grid` (recorded, not enforced:
    /// a bank works at any grid).
    pub fn backbone_ref(manifest: &Manifest, grid: (usize, usize)) -> BackboneRef {
        BackboneRef {
            variant: manifest.variant.clone(),
            hidden_size: manifest.hidden_size,
            patch_size: manifest.patch_size,
            grid: [grid.0, grid.1],
            onnx_sha256: manifest.identity_sha256().to_string(),
        }
    }

    /// A bank of `features` (`[N, C]` row-major, any norm: rows are normalised here).
    pub fn from_features(backbone: BackboneRef, features: &[f32]) -> Result<Self, BankDataError> {
        let mut bank = Self::new(backbone);
        let n = bank.add_references(features)?;
        bank.coreset = CoresetInfo { target: n, from: n };
        Ok(bank)
    }

    /// Add patch tokens (`[n, C]` row-major, any norm) of normal content; returns `n`. A patch
    /// identical to an added one then scores distance ~0.
    pub fn add_references(&mut self, features: &[f32]) -> Result<usize, BankDataError> {
        let dim = self.dim();
        let n = check_rows(features, dim)?;
        let start = self.features.len();
        self.features.extend_from_slice(features);
        l2_normalize_rows(&mut self.features[start..], dim);
        Ok(n)
    }

    /// The backbone the bank belongs to.
    pub fn backbone(&self) -> &BackboneRef {
        &self.backbone
    }

    /// Feature dimension C.
    pub fn dim(&self) -> usize {
        self.backbone.hidden_size
    }

    /// Number of rows N.
    pub fn len(&self) -> usize {
        if self.dim() == 0 {
            0
        } else {
            self.features.len() / self.dim()
        }
    }

    /// Whether the bank has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All rows, `[N, C]` row-major, each L2-normalised.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        let c = self.dim();
        self.features.get(i * c..(i + 1) * c)
    }

    /// Normal images the rows came from.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Record the number of normal images.
    pub fn set_images(&mut self, images: usize) {
        self.images = images;
    }

    /// The coreset record.
    pub fn coreset(&self) -> CoresetInfo {
        self.coreset
    }

    /// Set the coreset record.
    pub fn set_coreset(&mut self, coreset: CoresetInfo) {
        self.coreset = coreset;
    }

    /// Percent of patch distances averaged into the image score.
    pub fn top_percent(&self) -> f32 {
        self.top_percent
    }

    /// Set the percent of patch distances averaged into the image score, in (0, 100].
    pub fn set_top_percent(&mut self, top_percent: f32) -> Result<(), BankDataError> {
        check_top_percent(top_percent)?;
        self.top_percent = top_percent;
        Ok(())
    }

    /// Keep at most `target` rows, chosen by [`greedy_coreset`](super::greedy_coreset); records
    /// `coreset = {target, from: rows before}`. Returns the rows kept.
    pub fn subsample(&mut self, target: usize, options: &CoresetOptions) -> usize {
        self.subsample_with_progress(target, options, &mut |_, _| {})
    }

    /// [`MemoryBank::subsample`] calling `progress(picked, target)` after each pick.
    pub fn subsample_with_progress(
        &mut self,
        target: usize,
        options: &CoresetOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> usize {
        let from = self.len();
        self.coreset = CoresetInfo { target, from };
        if from <= target {
            return from;
        }
        let c = self.dim();
        let picked = greedy_coreset_with_progress(&self.features, c, target, options, progress);
        let mut kept = Vec::with_capacity(picked.len() * c);
        for &i in &picked {
            kept.extend_from_slice(&self.features[i * c..(i + 1) * c]);
        }
        self.features = kept;
        self.len()
    }

    /// Best cosine similarity to the bank of each row of `queries` (`[P, C]`, L2-normalised by
    /// the caller), by blocked matrix products on up to `threads` threads (0 = all cores).
    pub fn max_cosine(&self, queries: &[f32], threads: usize) -> Result<Vec<f32>, BankDataError> {
        max_cosine(&self.features, queries, self.dim(), threads)
    }

    /// AnomalyDINO patch distances `1 - max cosine` of raw patch tokens `tokens` (`[P, C]`,
    /// normalised here), clamped at 0 (rounding can push an exact match slightly below).
    pub fn patch_distances(
        &self,
        tokens: &[f32],
        threads: usize,
    ) -> Result<Vec<f32>, BankDataError> {
        let mut queries = tokens.to_vec();
        check_rows(&queries, self.dim())?;
        l2_normalize_rows(&mut queries, self.dim());
        let mut best = self.max_cosine(&queries, threads)?;
        for d in best.iter_mut() {
            *d = (1.0 - *d).max(0.0);
        }
        Ok(best)
    }

    /// A bank from parts read back from its files (rows already checked and normalised).
    pub(super) fn from_parts(
        backbone: BackboneRef,
        features: Vec<f32>,
        images: usize,
        coreset: CoresetInfo,
        top_percent: f32,
    ) -> Self {
        Self {
            backbone,
            features,
            images,
            coreset,
            top_percent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bref(c: usize) -> BackboneRef {
        BackboneRef {
            variant: "test".into(),
            hidden_size: c,
            patch_size: 16,
            grid: [2, 2],
            onnx_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn data_errors() {
        let mut bank = MemoryBank::new(bref(3));
        assert_eq!(
            bank.add_references(&[1.0, 2.0]),
            Err(BankDataError::Length { values: 2, dim: 3 })
        );
        assert_eq!(
            bank.add_references(&[1.0, 2.0, 3.0, 0.0, f32::NAN, 1.0]),
            Err(BankDataError::NonFinite { row: 1 })
        );
        assert!(bank.is_empty());
        assert!(bank.set_top_percent(0.0).is_err());
        assert!(bank.set_top_percent(f32::NAN).is_err());
        assert!(bank.set_top_percent(100.0).is_ok());
    }
}
