//! AnomalyDINO: memory-bank anomaly scoring on the backbone's patch tokens.
//!
//! A [`MemoryBank`] holds L2-normalised patch tokens of normal images (`features [N, C]`). For a
//! frame, every patch token is L2-normalised and compared with the whole bank by cosine
//! similarity; the patch distance is `1 - max cosine`, the image score the mean of the top
//! `top_percent` % patch distances (`ceil`, at least one patch), and the map the patch distances
//! upsampled to camera pixels like segmentation logits ([`Upsampler`]).
//!
//! The nearest-neighbour search is a blocked matrix product (queries `[P, C]` times a block of
//! bank rows transposed, `[C, B]`, with a running maximum per query), split over threads by bank
//! rows for large banks; [`naive_max_cosine`] is the per-patch loop it replaces, kept as the
//! reference for tests and the benchmark (`examples/anomaly_bench.rs`).
//!
//! Large collections are reduced with greedy k-center coreset subsampling
//! ([`greedy_coreset`], as in PatchCore) before they are saved. Banks are stored as
//! `<name>.bank.npz` + `<name>.bank.json` (see `models/HEADS.md`, "Anomaly memory bank"); loading
//! checks every field and names the file and the fix. References can be added while running:
//! [`MemoryBank::add_references`], [`AnomalyHead::add_references`], or from another thread
//! through the head's [`ReferenceLearner`].

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::tract_ndarray::linalg::general_mat_mul;
use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayViewMut2};

use super::upsample::UpsamplerCache;
use super::{
    AnomalyResult, BackboneRef, FloatImage, HeadError, HeadInput, HeadOutput, Task, TaskHead,
};
use crate::model::Manifest;
use crate::npz::{write_npz, NamedArray};

/// Value of the bank manifest's `format` field.
pub const BANK_FORMAT: &str = "dinov3_perception/bank";
/// Supported bank `format_version`.
pub const BANK_FORMAT_VERSION: u32 = 1;
/// Default share of the patch distances averaged into the image score (AnomalyDINO: 1 %).
pub const DEFAULT_TOP_PERCENT: f32 = 1.0;
/// Default dimension of the random projection used by the coreset search.
pub const DEFAULT_PROJECTION_DIM: usize = 128;
/// A row of the bank file counts as L2-normalised if its norm is within this of 1.
pub const NORM_TOLERANCE: f32 = 1e-3;
/// Name of the array in the bank `.npz`.
pub const FEATURES_ARRAY: &str = "features";

/// Bank rows per block of the blocked nearest-neighbour product.
const BLOCK_ROWS: usize = 2048;
/// Below this many multiply-adds a frame is scored on one thread (thread start-up dominates).
const PARALLEL_MIN_WORK: usize = 1 << 24;
/// Below this many projected values per coreset step the update runs on one thread.
const CORESET_PARALLEL_MIN_WORK: usize = 1 << 18;

const BUILD_COMMAND: &str =
    "dinov3_perception bank build --model MODEL.onnx --images NORMAL_IMAGES_DIR --out BANK";

fn rebuild_fix() -> String {
    format!("rebuild it from normal images with `{BUILD_COMMAND}`")
}

/// Errors in patch features handed to a bank (not files): wrong length or non-finite values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BankDataError {
    /// The values are not whole rows.
    #[error("{values} values are not a whole number of {dim}-dimensional patch tokens")]
    Length {
        /// Number of values given.
        values: usize,
        /// Feature dimension of the bank.
        dim: usize,
    },
    /// A row holds NaN or infinity.
    #[error("patch token {row} holds a non-finite value (NaN or infinity)")]
    NonFinite {
        /// Row index within the given values.
        row: usize,
    },
    /// `top_percent` is outside (0, 100].
    #[error("top_percent {0} is invalid: give a percentage in (0, 100] (AnomalyDINO uses 1)")]
    TopPercent(f32),
}

/// How a bank was subsampled: `target` rows asked for, `from` rows collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoresetInfo {
    /// Rows asked for (`--max-patches`, or all collected rows when no limit was given).
    pub target: usize,
    /// Rows collected before subsampling.
    pub from: usize,
}

/// The bank manifest (`<name>.bank.json`), as `models/HEADS.md` defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankManifest {
    /// Always [`BANK_FORMAT`].
    pub format: String,
    /// Always [`BANK_FORMAT_VERSION`].
    pub format_version: u32,
    /// The backbone whose patch tokens the bank holds.
    pub backbone: BackboneRef,
    /// The `.npz` file name, relative to the manifest's directory.
    pub npz_file: String,
    /// Hex sha256 of the `.npz` bytes.
    pub npz_sha256: String,
    /// Rows of `features`.
    pub patches: usize,
    /// Normal images the rows came from.
    pub images: usize,
    /// Coreset subsampling record.
    pub coreset: CoresetInfo,
    /// Share of patch distances (percent) averaged into the image score.
    pub top_percent: f32,
}

/// The two files of a bank: `(<name>.bank.json, <name>.bank.npz)` for a path naming either file
/// or the bare `<name>` (or `<name>.bank`).
pub fn bank_paths(path: &Path) -> (PathBuf, PathBuf) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        let mut json = path.as_os_str().to_owned();
        json.push(".bank.json");
        let mut npz = path.as_os_str().to_owned();
        npz.push(".bank.npz");
        return (json.into(), npz.into());
    };
    let stem = name
        .strip_suffix(".bank.json")
        .or_else(|| name.strip_suffix(".bank.npz"))
        .or_else(|| name.strip_suffix(".bank"))
        .unwrap_or(name);
    (
        path.with_file_name(format!("{stem}.bank.json")),
        path.with_file_name(format!("{stem}.bank.npz")),
    )
}

/// L2-normalise `dim`-sized rows in place (`x / max(|x|, 1e-12)`, as `F.normalize`: a zero row
/// stays zero).
pub fn l2_normalize_rows(data: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    for row in data.chunks_exact_mut(dim) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let inv = (1.0 / norm.max(1e-12)) as f32;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

fn check_rows(values: &[f32], dim: usize) -> Result<usize, BankDataError> {
    if dim == 0 || !values.len().is_multiple_of(dim) {
        return Err(BankDataError::Length {
            values: values.len(),
            dim,
        });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(BankDataError::NonFinite { row: i / dim });
    }
    Ok(values.len() / dim)
}

fn check_top_percent(p: f32) -> Result<(), BankDataError> {
    if p.is_finite() && p > 0.0 && p <= 100.0 {
        Ok(())
    } else {
        Err(BankDataError::TopPercent(p))
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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
            onnx_sha256: manifest.onnx_sha256.clone(),
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

    /// Keep at most `target` rows, chosen by [`greedy_coreset`]; records
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

    /// Write `<name>.bank.npz` and `<name>.bank.json` for `path` (see [`bank_paths`]); returns
    /// the manifest written. An empty bank is refused (it could not be loaded).
    pub fn save(&self, path: &Path) -> Result<BankManifest, HeadError> {
        let (json_path, npz_path) = bank_paths(path);
        if self.is_empty() {
            return Err(HeadError::invalid(
                &json_path,
                "refusing to write an empty memory bank (0 patches)",
                "collect patch tokens of normal images first",
            ));
        }
        check_top_percent(self.top_percent).map_err(|e| {
            HeadError::invalid(&json_path, e.to_string(), "set a valid top_percent")
        })?;
        write_npz(
            &npz_path,
            &[NamedArray {
                name: FEATURES_ARRAY,
                shape: &[self.len(), self.dim()],
                data: &self.features,
            }],
        )
        .map_err(|e| {
            HeadError::invalid(&npz_path, e.to_string(), "check the path and free space")
        })?;
        let bytes = std::fs::read(&npz_path).map_err(|source| HeadError::Io {
            path: npz_path.clone(),
            source,
        })?;
        let npz_file = npz_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = BankManifest {
            format: BANK_FORMAT.into(),
            format_version: BANK_FORMAT_VERSION,
            backbone: self.backbone.clone(),
            npz_file,
            npz_sha256: hex_sha256(&bytes),
            patches: self.len(),
            images: self.images,
            coreset: self.coreset,
            top_percent: self.top_percent,
        };
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| {
            HeadError::invalid(
                &json_path,
                format!("cannot encode the manifest: {e}"),
                "report this bug",
            )
        })?;
        std::fs::write(&json_path, text + "\n").map_err(|source| HeadError::Io {
            path: json_path.clone(),
            source,
        })?;
        Ok(manifest)
    }

    /// Read and validate a bank (`path` names either file or the bare `<name>`): manifest
    /// fields, the `.npz` sha256, shape `[patches, hidden_size]`, finite unit-norm rows.
    /// Does not check which backbone is running; see [`MemoryBank::load`].
    pub fn read(path: &Path) -> Result<Self, HeadError> {
        let (json_path, _) = bank_paths(path);
        let text = std::fs::read_to_string(&json_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                HeadError::invalid(
                    &json_path,
                    "the memory bank manifest does not exist",
                    format!(
                        "check the path, or build a bank from normal images with `{BUILD_COMMAND}`"
                    ),
                )
            } else {
                HeadError::Io {
                    path: json_path.clone(),
                    source,
                }
            }
        })?;
        let manifest: BankManifest = serde_json::from_str(&text).map_err(|e| {
            HeadError::invalid(
                &json_path,
                format!("not a memory bank manifest ({e})"),
                format!("{} (format in models/HEADS.md)", rebuild_fix()),
            )
        })?;
        let bad = |reason: String| HeadError::invalid(&json_path, reason, rebuild_fix());
        if manifest.format != BANK_FORMAT || manifest.format_version != BANK_FORMAT_VERSION {
            return Err(bad(format!(
                "format {:?} version {} is not {BANK_FORMAT:?} version {BANK_FORMAT_VERSION}",
                manifest.format, manifest.format_version
            )));
        }
        if manifest.patches == 0 {
            return Err(HeadError::invalid(
                &json_path,
                "the memory bank is empty (0 patches)",
                format!("build it from normal images with `{BUILD_COMMAND}`"),
            ));
        }
        if manifest.backbone.hidden_size == 0 {
            return Err(bad("backbone hidden_size is 0".into()));
        }
        if let Err(e) = check_top_percent(manifest.top_percent) {
            return Err(HeadError::invalid(
                &json_path,
                e.to_string(),
                "set \"top_percent\" in (0, 100] (1.0 is AnomalyDINO's choice)",
            ));
        }
        if manifest.npz_file.trim().is_empty() {
            return Err(bad("npz_file is empty".into()));
        }
        let npz_path = json_path
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(&manifest.npz_file);
        let bytes = std::fs::read(&npz_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                HeadError::invalid(
                    &npz_path,
                    format!(
                        "the memory bank features named by {} do not exist",
                        json_path.display()
                    ),
                    format!(
                        "keep the .bank.npz beside its .bank.json, or {}",
                        rebuild_fix()
                    ),
                )
            } else {
                HeadError::Io {
                    path: npz_path.clone(),
                    source,
                }
            }
        })?;
        let actual = hex_sha256(&bytes);
        if !actual.eq_ignore_ascii_case(manifest.npz_sha256.trim()) {
            return Err(HeadError::invalid(
                &npz_path,
                format!(
                    "sha256 is {actual} but {} says {}; the file was modified, truncated or replaced",
                    json_path.display(),
                    manifest.npz_sha256
                ),
                rebuild_fix(),
            ));
        }
        let features = read_features(&npz_path, bytes, &manifest)?;
        Ok(Self {
            backbone: manifest.backbone,
            features,
            images: manifest.images,
            coreset: manifest.coreset,
            top_percent: manifest.top_percent,
        })
    }

    /// [`MemoryBank::read`], then check that the bank was built with `backbone` (hidden size,
    /// patch size, ONNX sha256; not the grid: patch features work at any grid).
    pub fn load(path: &Path, backbone: &Manifest) -> Result<Self, HeadError> {
        let bank = Self::read(path)?;
        check_bank_backbone(&bank_paths(path).0, &bank.backbone, backbone)?;
        Ok(bank)
    }
}

fn read_features(
    npz_path: &Path,
    bytes: Vec<u8>,
    manifest: &BankManifest,
) -> Result<Vec<f32>, HeadError> {
    let bad = |reason: String| HeadError::invalid(npz_path, reason, rebuild_fix());
    let mut archive = npyz::npz::NpzArchive::new(Cursor::new(bytes)).map_err(|e| {
        bad(format!(
            "not a valid .npz archive ({e}); the file is truncated or corrupt"
        ))
    })?;
    let npy = archive
        .by_name(FEATURES_ARRAY)
        .map_err(|e| {
            bad(format!(
                "cannot read array {FEATURES_ARRAY:?} ({e}); the file is corrupt"
            ))
        })?
        .ok_or_else(|| bad(format!("has no array {FEATURES_ARRAY:?}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad(format!(
            "array {FEATURES_ARRAY:?} is in Fortran order, expected C order"
        )));
    }
    let shape: Vec<u64> = npy.shape().to_vec();
    let c = manifest.backbone.hidden_size;
    if shape.len() != 2 {
        return Err(bad(format!(
            "array {FEATURES_ARRAY:?} has shape {shape:?}, expected [patches, {c}]"
        )));
    }
    if shape[0] == 0 {
        return Err(HeadError::invalid(
            npz_path,
            "the memory bank is empty (0 patches)",
            format!("build it from normal images with `{BUILD_COMMAND}`"),
        ));
    }
    if shape[1] != c as u64 {
        return Err(bad(format!(
            "rows have dimension {} but the bank's backbone ({}) has hidden size {c}",
            shape[1], manifest.backbone.variant
        )));
    }
    if shape[0] != manifest.patches as u64 {
        return Err(bad(format!(
            "has {} rows but the manifest says {} patches",
            shape[0], manifest.patches
        )));
    }
    let data = npy.into_vec::<f32>().map_err(|e| {
        bad(format!(
            "array {FEATURES_ARRAY:?} is not readable float32 ({e})"
        ))
    })?;
    if data.len() != manifest.patches * c {
        return Err(bad(format!(
            "array {FEATURES_ARRAY:?} holds {} values, expected {}",
            data.len(),
            manifest.patches * c
        )));
    }
    for (r, row) in data.chunks_exact(c).enumerate() {
        if row.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!(
                "row {r} holds a non-finite value (NaN or infinity)"
            )));
        }
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if (norm as f32 - 1.0).abs() > NORM_TOLERANCE {
            return Err(bad(format!(
                "row {r} has L2 norm {norm:.6}, but bank rows must be L2-normalised"
            )));
        }
    }
    Ok(data)
}

/// Check that a bank built for `reference` fits the backbone `manifest`: hidden size, patch
/// size and ONNX sha256 (not the grid, unlike [`super::check_backbone`]: a bank of patch
/// features works at any input size).
pub fn check_bank_backbone(
    path: &Path,
    reference: &BackboneRef,
    manifest: &Manifest,
) -> Result<(), HeadError> {
    let fix = format!(
        "rebuild the bank with this backbone (`{BUILD_COMMAND}`), or run the backbone it was built with ({})",
        reference.variant
    );
    let mismatch = |what: &str, head: String, backbone: String| {
        Err(HeadError::BackboneMismatch {
            path: path.to_path_buf(),
            what: what.into(),
            head,
            backbone,
            fix: fix.clone(),
        })
    };
    if reference.hidden_size != manifest.hidden_size {
        return mismatch(
            "the feature dimension",
            reference.hidden_size.to_string(),
            manifest.hidden_size.to_string(),
        );
    }
    if reference.patch_size != manifest.patch_size {
        return mismatch(
            "the patch size",
            reference.patch_size.to_string(),
            manifest.patch_size.to_string(),
        );
    }
    if !reference
        .onnx_sha256
        .eq_ignore_ascii_case(&manifest.onnx_sha256)
    {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        return mismatch(
            "the backbone sha256",
            short(&reference.onnx_sha256),
            short(&manifest.onnx_sha256),
        );
    }
    Ok(())
}

fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// Running max of the cosine of `queries` `[P, C]` against `bank` rows `[n, C]`, into `best`.
fn max_cosine_shard(bank: &[f32], queries: &ArrayView2<f32>, dim: usize, best: &mut [f32]) {
    let p = queries.nrows();
    let mut scratch = vec![0.0f32; p * BLOCK_ROWS.min(bank.len() / dim.max(1)).max(1)];
    for block in bank.chunks(BLOCK_ROWS * dim) {
        let b = block.len() / dim;
        let (Ok(rows), Ok(mut out)) = (
            ArrayView2::from_shape((b, dim), block),
            ArrayViewMut2::from_shape((p, b), &mut scratch[..p * b]),
        ) else {
            // Unreachable: every block is whole rows and the scratch is sized for the largest.
            continue;
        };
        general_mat_mul(1.0, queries, &rows.t(), 0.0, &mut out);
        for (bq, row) in best.iter_mut().zip(scratch[..p * b].chunks_exact(b)) {
            let m = row
                .iter()
                .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
            if m > *bq {
                *bq = m;
            }
        }
    }
}

/// Best cosine similarity of each row of `queries` (`[P, dim]`) to the rows of `bank`
/// (`[N, dim]`), both already L2-normalised, by blocked matrix products (`BLOCK_ROWS` bank rows
/// at a time, running max per query) on up to `threads` threads (0 = all cores). An empty bank
/// gives `-inf` for every query.
pub fn max_cosine(
    bank: &[f32],
    queries: &[f32],
    dim: usize,
    threads: usize,
) -> Result<Vec<f32>, BankDataError> {
    let p = check_rows(queries, dim)?;
    let n = check_rows(bank, dim)?;
    let mut best = vec![f32::NEG_INFINITY; p];
    if p == 0 || n == 0 {
        return Ok(best);
    }
    let Ok(q) = ArrayView2::from_shape((p, dim), queries) else {
        return Err(BankDataError::Length {
            values: queries.len(),
            dim,
        });
    };
    let threads = resolve_threads(threads).min(n.div_ceil(BLOCK_ROWS / 4).max(1));
    if threads <= 1 || p * n * dim < PARALLEL_MIN_WORK {
        max_cosine_shard(bank, &q, dim, &mut best);
        return Ok(best);
    }
    let rows_per = n.div_ceil(threads);
    let partial: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = bank
            .chunks(rows_per * dim)
            .map(|shard| {
                let q = q.view();
                s.spawn(move || {
                    let mut local = vec![f32::NEG_INFINITY; p];
                    max_cosine_shard(shard, &q, dim, &mut local);
                    local
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    for local in partial {
        for (b, l) in best.iter_mut().zip(local) {
            if l > *b {
                *b = l;
            }
        }
    }
    Ok(best)
}

/// The per-patch loop [`max_cosine`] replaces: for each query, a dot product with every bank
/// row. Same result up to rounding; the reference for tests and the benchmark.
pub fn naive_max_cosine(bank: &[f32], queries: &[f32], dim: usize) -> Vec<f32> {
    if dim == 0 {
        return Vec::new();
    }
    queries
        .chunks_exact(dim)
        .map(|q| {
            bank.chunks_exact(dim)
                .map(|b| q.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect()
}

/// AnomalyDINO image score: the mean of the `ceil(len * top_percent / 100)` largest distances
/// (at least one, at most all). `NaN` for no distances.
pub fn top_percent_mean(distances: &[f32], top_percent: f32) -> f32 {
    let n = distances.len();
    if n == 0 {
        return f32::NAN;
    }
    let k = ((n as f64 * f64::from(top_percent) / 100.0).ceil() as usize).clamp(1, n);
    let mut sorted = distances.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let sum: f64 = sorted[..k].iter().map(|&v| f64::from(v)).sum();
    (sum / k as f64) as f32
}

/// Settings of [`greedy_coreset`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoresetOptions {
    /// Seed of the random start point and the random projection.
    pub seed: u64,
    /// Project to this many dimensions first (when smaller than the feature dimension) with a
    /// seeded random ±1/sqrt(k) matrix, which keeps distances approximately (Johnson-Lindenstrauss);
    /// `None` = exact distances.
    pub projection_dim: Option<usize>,
    /// Threads for the distance updates (0 = all cores).
    pub threads: usize,
    /// Start from this row instead of a seeded random one.
    pub start: Option<usize>,
}

impl Default for CoresetOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            projection_dim: Some(DEFAULT_PROJECTION_DIM),
            threads: 0,
            start: None,
        }
    }
}

/// Greedy k-center coreset (PatchCore): indices of at most `target` rows of `features`
/// (`[N, dim]`), in pick order. Starts from a seeded random row, then repeatedly takes the row
/// farthest (squared L2; on L2-normalised rows this orders like cosine distance) from every row
/// picked so far; ties go to the lowest index. Stops early when every remaining row duplicates a
/// picked one. `target >= N` returns all rows in order.
pub fn greedy_coreset(
    features: &[f32],
    dim: usize,
    target: usize,
    options: &CoresetOptions,
) -> Vec<usize> {
    greedy_coreset_with_progress(features, dim, target, options, &mut |_, _| {})
}

/// [`greedy_coreset`] calling `progress(picked, target)` after each pick.
pub fn greedy_coreset_with_progress(
    features: &[f32],
    dim: usize,
    target: usize,
    options: &CoresetOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<usize> {
    if dim == 0 {
        return Vec::new();
    }
    let n = features.len() / dim;
    if target >= n {
        return (0..n).collect();
    }
    if target == 0 {
        return Vec::new();
    }
    let features = &features[..n * dim];
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let projected;
    let (points, k) = match options.projection_dim {
        Some(k) if k > 0 && k < dim => {
            projected = random_projection(features, dim, k, &mut rng);
            (projected.as_slice(), k)
        }
        _ => (features, dim),
    };
    let start = options
        .start
        .filter(|&s| s < n)
        .unwrap_or_else(|| rng.random_range(0..n));
    let threads = resolve_threads(options.threads);
    let mut min_d = vec![f32::INFINITY; n];
    let mut picked = Vec::with_capacity(target);
    picked.push(start);
    progress(1, target);
    while picked.len() < target {
        let last = picked[picked.len() - 1];
        let centre = &points[last * k..(last + 1) * k];
        let (best, best_d) = update_min_distances(points, k, centre, &mut min_d, threads);
        if best_d <= 0.0 {
            break;
        }
        picked.push(best);
        progress(picked.len(), target);
    }
    picked
}

fn random_projection(features: &[f32], dim: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = features.len() / dim;
    let s = 1.0 / (k as f32).sqrt();
    let r: Vec<f32> = (0..dim * k)
        .map(|_| if rng.random_bool(0.5) { s } else { -s })
        .collect();
    let mut out = vec![0.0f32; n * k];
    let (Ok(x), Ok(rm), Ok(mut y)) = (
        ArrayView2::from_shape((n, dim), features),
        ArrayView2::from_shape((dim, k), &r[..]),
        ArrayViewMut2::from_shape((n, k), &mut out[..]),
    ) else {
        // Unreachable: the shapes are built from the lengths above.
        return features.to_vec();
    };
    general_mat_mul(1.0, &x, &rm, 0.0, &mut y);
    out
}

#[inline]
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        for j in 0..8 {
            let d = x[j] - y[j];
            acc[j] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

/// Lower `min_d` with the distances to `centre`; returns the row with the largest `min_d`
/// (lowest index among ties) and that distance.
fn update_chunk(
    points: &[f32],
    k: usize,
    centre: &[f32],
    min_d: &mut [f32],
    offset: usize,
) -> (usize, f32) {
    let mut best = (offset, f32::NEG_INFINITY);
    for (i, (row, d)) in points.chunks_exact(k).zip(min_d.iter_mut()).enumerate() {
        let dist = squared_distance(row, centre);
        if dist < *d {
            *d = dist;
        }
        if *d > best.1 {
            best = (offset + i, *d);
        }
    }
    best
}

fn update_min_distances(
    points: &[f32],
    k: usize,
    centre: &[f32],
    min_d: &mut [f32],
    threads: usize,
) -> (usize, f32) {
    let n = min_d.len();
    if threads <= 1 || n * k < CORESET_PARALLEL_MIN_WORK {
        return update_chunk(points, k, centre, min_d, 0);
    }
    let rows_per = n.div_ceil(threads);
    let results: Vec<(usize, f32)> = std::thread::scope(|s| {
        let handles: Vec<_> = points
            .chunks(rows_per * k)
            .zip(min_d.chunks_mut(rows_per))
            .enumerate()
            .map(|(t, (pts, md))| s.spawn(move || update_chunk(pts, k, centre, md, t * rows_per)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    // Chunks are in index order: strictly greater keeps the lowest index among ties.
    results
        .into_iter()
        .fold((0, f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a })
}

/// Queue of normal references for a running [`AnomalyHead`], shared with other threads (a
/// parameter service, a "this is normal" button): queued tokens and frames to learn are added
/// to the bank on the inference thread at the head's next run.
#[derive(Debug, Default)]
pub struct ReferenceLearner {
    frames: AtomicU64,
    queued: Mutex<Vec<f32>>,
}

impl ReferenceLearner {
    /// Add the patch tokens of the next `frames` scored frames to the bank (after scoring
    /// them). Adds to any count still pending.
    pub fn learn_next_frames(&self, frames: u64) {
        self.frames.fetch_add(frames, Ordering::Relaxed);
    }

    /// Frames still to be learned.
    pub fn pending_frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Queue patch tokens (`[n, C]`, any norm) to add before the next frame is scored.
    pub fn queue(&self, tokens: &[f32]) {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        q.extend_from_slice(tokens);
    }

    fn take_queued(&self) -> Vec<f32> {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *q)
    }

    fn take_frame(&self) -> bool {
        self.frames
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| f.checked_sub(1))
            .is_ok()
    }
}

/// The AnomalyDINO head: scores each frame's patch tokens against a [`MemoryBank`].
#[derive(Debug)]
pub struct AnomalyHead {
    name: String,
    bank: MemoryBank,
    patch: usize,
    grid: (usize, usize),
    threads: usize,
    upsampler: UpsamplerCache,
    learner: Arc<ReferenceLearner>,
}

impl AnomalyHead {
    /// Load the bank at `bank_path` (either file or the bare name) for `backbone` running at
    /// `grid`. The bank must come from the same backbone (hidden size, patch size, sha256); the
    /// grid may differ from the one it was built at (patch features work at any grid).
    pub fn load(
        name: &str,
        bank_path: &Path,
        backbone: &Manifest,
        grid: (usize, usize),
    ) -> Result<Self, HeadError> {
        let bank = MemoryBank::load(bank_path, backbone)?;
        Ok(Self::with_bank(name, bank, backbone.patch_size, grid))
    }

    /// A head over an in-memory bank (possibly empty, to be filled with
    /// [`AnomalyHead::add_references`]; scoring an empty bank is an error). `patch` is the
    /// backbone's patch size, `grid` the patch grid it runs at.
    pub fn with_bank(name: &str, bank: MemoryBank, patch: usize, grid: (usize, usize)) -> Self {
        Self {
            name: name.to_string(),
            bank,
            patch,
            grid,
            threads: 0,
            upsampler: UpsamplerCache::default(),
            learner: Arc::new(ReferenceLearner::default()),
        }
    }

    /// The bank (e.g. to save it after learning references).
    pub fn bank(&self) -> &MemoryBank {
        &self.bank
    }

    /// Threads for the nearest-neighbour search (0 = all cores, the default).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
    }

    /// The shared queue through which other threads add references while the head runs.
    pub fn learner(&self) -> Arc<ReferenceLearner> {
        self.learner.clone()
    }

    /// Add patch tokens (`[n, C]`, any norm) of normal content to the bank; returns `n`.
    pub fn add_references(&mut self, tokens: &[f32]) -> Result<usize, HeadError> {
        self.bank
            .add_references(tokens)
            .map_err(|e| self.run_error(e))
    }

    /// Add every patch token of the current frame to the bank (the frame shows normal
    /// content); returns the number added.
    pub fn add_frame_references(&mut self, input: &HeadInput) -> Result<usize, HeadError> {
        let tokens = input.features.patch_grid().as_slice();
        self.add_references(tokens)
    }

    /// Patch distances (`1 - max cosine` to the bank) of raw patch tokens `[P, C]`.
    pub fn patch_distances(&self, tokens: &[f32]) -> Result<Vec<f32>, HeadError> {
        if self.bank.is_empty() {
            return Err(HeadError::Run {
                head: self.name.clone(),
                reason: format!(
                    "the memory bank is empty: load one built with `{BUILD_COMMAND}` or add normal references first"
                ),
            });
        }
        let c = self.bank.dim();
        if c == 0 || !tokens.len().is_multiple_of(c) {
            return Err(self.run_error(format!(
                "{} patch token values are not whole {c}-dimensional tokens (the bank's dimension)",
                tokens.len()
            )));
        }
        self.bank
            .patch_distances(tokens, self.threads)
            .map_err(|e| self.run_error(e))
    }

    fn run_error(&self, e: impl ToString) -> HeadError {
        HeadError::Run {
            head: self.name.clone(),
            reason: e.to_string(),
        }
    }
}

impl TaskHead for AnomalyHead {
    fn name(&self) -> &str {
        &self.name
    }

    fn task(&self) -> Task {
        Task::Anomaly
    }

    fn run(&mut self, input: &HeadInput) -> Result<HeadOutput, HeadError> {
        let queued = self.learner.take_queued();
        if !queued.is_empty() {
            self.add_references(&queued)?;
        }
        let grid = input.features.patch_grid();
        if grid.channels != self.bank.dim() {
            return Err(self.run_error(format!(
                "patch tokens have dimension {} but the bank holds {}-dimensional features",
                grid.channels,
                self.bank.dim()
            )));
        }
        let tokens = grid.as_slice();
        let distances = self.patch_distances(tokens)?;
        let score = top_percent_mean(&distances, self.bank.top_percent());
        let dims = (grid.height, grid.width);
        if dims != self.grid {
            self.grid = dims;
        }
        let up = self.upsampler.get(input.letterbox, dims, self.patch);
        let mut data = vec![0.0f32; up.width * up.height];
        up.plane(&distances, &mut data);
        let map = FloatImage {
            width: up.width,
            height: up.height,
            data,
        };
        if self.learner.take_frame() {
            self.add_references(tokens)?;
        }
        Ok(HeadOutput::Anomaly(AnomalyResult { score, map }))
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
    fn bank_paths_accept_either_file_or_the_name() {
        let want = (
            PathBuf::from("d/normal.bank.json"),
            PathBuf::from("d/normal.bank.npz"),
        );
        for p in [
            "d/normal",
            "d/normal.bank",
            "d/normal.bank.json",
            "d/normal.bank.npz",
        ] {
            assert_eq!(bank_paths(Path::new(p)), want, "{p}");
        }
    }

    #[test]
    fn blocked_matches_naive_across_blocks_and_threads() {
        let c = 24;
        let n = BLOCK_ROWS * 2 + 37;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut bank: Vec<f32> = (0..n * c).map(|_| rng.random_range(-1.0..1.0)).collect();
        l2_normalize_rows(&mut bank, c);
        let mut q: Vec<f32> = (0..50 * c).map(|_| rng.random_range(-1.0..1.0)).collect();
        l2_normalize_rows(&mut q, c);
        let naive = naive_max_cosine(&bank, &q, c);
        for threads in [1, 3] {
            let got = max_cosine(&bank, &q, c, threads).unwrap();
            for (a, b) in got.iter().zip(&naive) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        // The multithreaded path proper (above the work threshold).
        let got = max_cosine_sharded_for_test(&bank, &q, c);
        for (a, b) in got.iter().zip(&naive) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    fn max_cosine_sharded_for_test(bank: &[f32], q: &[f32], c: usize) -> Vec<f32> {
        let p = q.len() / c;
        let qv = ArrayView2::from_shape((p, c), q).unwrap();
        let mut best = vec![f32::NEG_INFINITY; p];
        for shard in bank.chunks(1000 * c) {
            let mut local = vec![f32::NEG_INFINITY; p];
            max_cosine_shard(shard, &qv, c, &mut local);
            for (b, l) in best.iter_mut().zip(local) {
                *b = b.max(l);
            }
        }
        best
    }

    #[test]
    fn top_percent_uses_ceil_and_at_least_one() {
        let d: Vec<f32> = (0..196).map(|i| i as f32).collect();
        // ceil(1.96) = 2 -> mean of 195 and 194.
        assert_eq!(top_percent_mean(&d, 1.0), 194.5);
        assert_eq!(top_percent_mean(&d[..10], 1.0), 9.0);
        assert_eq!(top_percent_mean(&d[..10], 100.0), 4.5);
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

    #[test]
    fn coreset_parallel_update_matches_serial() {
        let k = 16;
        let n = CORESET_PARALLEL_MIN_WORK / k + 101;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let pts: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let opts = |threads| CoresetOptions {
            seed: 1,
            projection_dim: None,
            threads,
            start: None,
        };
        let serial = greedy_coreset(&pts, k, 20, &opts(1));
        let parallel = greedy_coreset(&pts, k, 20, &opts(3));
        assert_eq!(serial, parallel);
        assert_eq!(serial.len(), 20);
    }
}
