//! AnomalyDINO: memory-bank anomaly scoring on the backbone's patch tokens.
//!
//! A [`MemoryBank`] holds L2-normalised patch tokens of normal images (`features [N, C]`). For a
//! frame, every patch token is L2-normalised and compared with the whole bank by cosine
//! similarity; the patch distance is `1 - max cosine`, the image score the mean of the top
//! `top_percent` % patch distances (`ceil`, at least one patch), and the map the patch distances
//! upsampled to camera pixels like segmentation logits ([`Upsampler`](crate::heads::upsample::Upsampler)).
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
//!
//! # Files
//!
//! * `mod.rs`: the head ([`AnomalyHead`]) and its [`ReferenceLearner`].
//! * `memory_bank.rs`: [`MemoryBank`] in memory.
//! * `bank_file.rs`: the bank's `.bank.json` + `.bank.npz` files, read and written.
//! * `search.rs`: nearest-neighbour search ([`max_cosine`]) and the image score.
//! * `coreset.rs`: greedy coreset subsampling ([`greedy_coreset`]).

mod bank_file;
mod coreset;
mod memory_bank;
mod search;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::upsample::UpsamplerCache;
use super::{AnomalyResult, FloatImage, HeadError, HeadInput, HeadOutput, Task, TaskHead};
use crate::model::Manifest;

pub use bank_file::{
    bank_paths, check_bank_backbone, BankManifest, BANK_FORMAT, BANK_FORMAT_VERSION,
    FEATURES_ARRAY, NORM_TOLERANCE,
};
pub use coreset::{
    greedy_coreset, greedy_coreset_with_progress, CoresetInfo, CoresetOptions,
    DEFAULT_PROJECTION_DIM,
};
pub use memory_bank::MemoryBank;
pub use search::{
    l2_normalize_rows, max_cosine, naive_max_cosine, top_percent_mean, BankDataError,
    DEFAULT_TOP_PERCENT,
};

use bank_file::BUILD_COMMAND;

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
