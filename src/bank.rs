//! `bank build`: an AnomalyDINO memory bank from a directory of normal images.
//!
//! Every `.png`/`.jpg`/`.jpeg` of the directory (sorted by name) goes through the backbone once;
//! its patch tokens are L2-normalised and collected. Images that cannot be decoded are skipped
//! and counted (an empty directory, or one where no image decodes, is an error). When more
//! patches were collected than `max_patches`, greedy k-center coreset subsampling
//! ([`crate::heads::anomaly::greedy_coreset`]) keeps the most spread-out ones. The bank is written
//! as `<name>.bank.npz` + `<name>.bank.json` (`models/HEADS.md`, "Anomaly memory bank"), and an
//! indicatif progress bar on stderr shows both phases (drawn only when stderr is a terminal).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::settings::BackendSettings;
use crate::backend::{BackendError, LoadedBackbone};
use crate::features::{Features, FeaturesError};
use crate::heads::anomaly::{
    bank_paths, BankDataError, BankManifest, CoresetOptions, MemoryBank, DEFAULT_PROJECTION_DIM,
    DEFAULT_TOP_PERCENT,
};
use crate::heads::HeadError;
use crate::image_io::{list_images, load_rgb, ImageDirError};
use crate::model::{InputSize, ModelError};
use crate::preprocess::{PreprocessError, Preprocessor, ResizeMode};

/// Errors of `bank build`. Each names the file or directory and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The backbone model cannot be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The backend cannot prepare or run the backbone.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The preprocessor cannot be set up.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// The backbone outputs do not match its manifest.
    #[error(transparent)]
    Features(#[from] FeaturesError),
    /// The images directory cannot be used.
    #[error("images directory {dir}: {reason}")]
    ImagesDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong and the fix.
        reason: String,
    },
    /// Listing the images directory failed.
    #[error(transparent)]
    ListImages(ImageDirError),
    /// The directory holds no image files.
    #[error("{dir} holds no .png/.jpg/.jpeg images; point --images at a folder of normal images")]
    NoImages {
        /// The directory.
        dir: PathBuf,
    },
    /// No image of the directory could be used.
    #[error("none of the {count} images in {dir} could be used (first: {first}); give PNG or JPEG images of normal scenes")]
    NoUsableImages {
        /// The directory.
        dir: PathBuf,
        /// Images tried.
        count: usize,
        /// The first image's error.
        first: String,
    },
    /// Writing the bank failed.
    #[error(transparent)]
    Bank(#[from] HeadError),
    /// An option is invalid.
    #[error("{0}")]
    Usage(String),
}

impl BankError {
    /// Whether the user's input caused it (exit code 2) rather than a failure here (1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            BankError::Backend(e) => e.is_bad_input(),
            BankError::ListImages(e) => e.is_bad_input(),
            BankError::Bank(e) => e.is_bad_input(),
            _ => true,
        }
    }
}

/// Options of `bank build`.
#[derive(Debug, Clone)]
pub struct BuildBankOptions {
    /// Backbone ONNX (its `.json` manifest beside it).
    pub model: PathBuf,
    /// Directory of normal images.
    pub images: PathBuf,
    /// Output: `<name>`, `<name>.bank.json` or `<name>.bank.npz` (both files are written).
    pub out: PathBuf,
    /// Keep at most this many patches (greedy coreset); `None` keeps all.
    pub max_patches: Option<usize>,
    /// Input size for dynamic models (fixed models use their own).
    pub input_size: Option<InputSize>,
    /// How images are fitted to the input.
    pub resize: ResizeMode,
    /// Where the backbone runs; its `threads` also run the coreset search (0 = all cores).
    pub backend: BackendSettings,
    /// Seed of the coreset's start point and random projection.
    pub seed: u64,
    /// Coreset random projection dimension (`None` = exact distances).
    pub projection_dim: Option<usize>,
    /// Image score: mean of the top this-many percent of patch distances (recorded in the bank).
    pub top_percent: f32,
    /// Show the progress bar (it is drawn only when stderr is a terminal anyway).
    pub progress: bool,
}

impl BuildBankOptions {
    /// Defaults for everything but the three paths: no patch limit, the model's own input
    /// size, stretch, tract on all cores, seed 0, projection to 128 dimensions, top 1 %.
    pub fn new(
        model: impl Into<PathBuf>,
        images: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        Self {
            model: model.into(),
            images: images.into(),
            out: out.into(),
            max_patches: None,
            input_size: None,
            resize: ResizeMode::Stretch,
            backend: BackendSettings::tract(0),
            seed: 0,
            projection_dim: Some(DEFAULT_PROJECTION_DIM),
            top_percent: DEFAULT_TOP_PERCENT,
            progress: true,
        }
    }
}

/// What `bank build` did.
#[derive(Debug, Clone)]
pub struct BankSummary {
    /// The manifest written.
    pub json: PathBuf,
    /// The features written.
    pub npz: PathBuf,
    /// Its contents.
    pub manifest: BankManifest,
    /// Input size the backbone ran at.
    pub input_size: InputSize,
    /// Images whose patches are in the bank.
    pub images_used: usize,
    /// Images skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Patches collected before subsampling.
    pub patches_collected: usize,
    /// Patches kept.
    pub patches_kept: usize,
    /// Time in the backbone loop (loading, preprocessing, backbone passes).
    pub extract_time: Duration,
    /// Time of the coreset subsampling.
    pub coreset_time: Duration,
    /// Total time.
    pub total_time: Duration,
}

impl BankSummary {
    /// Images skipped.
    pub fn images_skipped(&self) -> usize {
        self.skipped.len()
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        format!(
            "bank {} ({}): {} images used, {} skipped; {} patches collected, {} kept; input {}; {:.1} s ({:.1} s backbone, {:.1} s coreset)",
            self.json.display(),
            self.npz.display(),
            self.images_used,
            self.images_skipped(),
            self.patches_collected,
            self.patches_kept,
            self.input_size,
            self.total_time.as_secs_f64(),
            self.extract_time.as_secs_f64(),
            self.coreset_time.as_secs_f64()
        )
    }
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, BankError> {
    list_images(dir).map_err(|e| match e {
        ImageDirError::NoImages { dir } => BankError::NoImages { dir },
        ImageDirError::Missing { dir } => BankError::ImagesDir {
            dir,
            reason: "does not exist; check the path given to --images".into(),
        },
        ImageDirError::NotADirectory { dir } => BankError::ImagesDir {
            dir,
            reason: "is a file, not a directory; point --images at a folder of normal images"
                .into(),
        },
        other => BankError::ListImages(other),
    })
}

fn bar(progress: bool, len: u64, template: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// `bank build`: run the backbone over every image of `options.images`, collect the
/// L2-normalised patch tokens, coreset-subsample to `max_patches` when there are more, and write
/// the bank. Corrupt images are skipped and counted.
pub fn build_bank(options: &BuildBankOptions) -> Result<BankSummary, BankError> {
    let start = Instant::now();
    if options.max_patches == Some(0) {
        return Err(BankError::Usage(
            "--max-patches 0 would make an empty bank: give at least 1 (or leave it out to keep every patch)".into(),
        ));
    }
    if !(options.top_percent.is_finite()
        && options.top_percent > 0.0
        && options.top_percent <= 100.0)
    {
        return Err(BankError::Usage(
            BankDataError::TopPercent(options.top_percent).to_string(),
        ));
    }
    let files = list(&options.images)?;
    let (json_path, npz_path) = bank_paths(&options.out);
    if let Some(parent) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| HeadError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }

    let backbone = LoadedBackbone::load(&options.model, options.input_size, &options.backend)?;
    let grid = backbone.grid();
    let LoadedBackbone {
        model,
        size,
        prepared,
        ..
    } = backbone;
    let mut session = prepared.session()?;
    let mut pre = Preprocessor::new(&model.manifest, size, options.resize)?;
    let mut bank = MemoryBank::new(MemoryBank::backbone_ref(&model.manifest, grid));
    bank.set_top_percent(options.top_percent)
        .map_err(|e| BankError::Usage(e.to_string()))?;
    log::info!(
        "bank build: {} images from {}, backbone {} at {size} ({}x{} patches per image)",
        files.len(),
        options.images.display(),
        model.manifest.variant,
        grid.0,
        grid.1
    );

    let pb = bar(
        options.progress,
        files.len() as u64,
        "{spinner} backbone [{bar:30}] {pos}/{len} images {elapsed_precise} eta {eta} {msg}",
    );
    let mut skipped: Vec<(PathBuf, String)> = Vec::new();
    let mut used = 0usize;
    for file in &files {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        pb.set_message(name);
        let reason = match load_rgb(file) {
            Err(e) => Some(e.to_string()),
            Ok(image) => match pre.run(&image.view()) {
                Err(e) => Some(format!("{}: {e}", file.display())),
                Ok((input, _)) => {
                    let outputs = session.run(&input)?;
                    let features = Features::new(&outputs, &model.manifest, size)?;
                    match bank.add_references(features.patch_grid().as_slice()) {
                        Ok(_) => None,
                        Err(e) => Some(format!("{}: backbone output: {e}", file.display())),
                    }
                }
            },
        };
        match reason {
            None => used += 1,
            Some(reason) => {
                pb.suspend(|| log::warn!("skipping {}: {reason}", file.display()));
                skipped.push((file.clone(), reason));
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let extract_time = start.elapsed();
    if used == 0 {
        return Err(BankError::NoUsableImages {
            dir: options.images.clone(),
            count: files.len(),
            first: skipped.first().map(|s| s.1.clone()).unwrap_or_default(),
        });
    }
    bank.set_images(used);

    let collected = bank.len();
    let target = options.max_patches.unwrap_or(collected);
    let t = Instant::now();
    if collected > target {
        let pb = bar(
            options.progress,
            target as u64,
            "{spinner} coreset  [{bar:30}] {pos}/{len} patches {elapsed_precise} eta {eta}",
        );
        let coreset = CoresetOptions {
            seed: options.seed,
            projection_dim: options.projection_dim,
            threads: options.backend.threads,
            start: None,
        };
        let mut last = Instant::now();
        bank.subsample_with_progress(target, &coreset, &mut |picked, _| {
            // Redraw at most every 50 ms: picking is fast, drawing is not free.
            if last.elapsed() >= Duration::from_millis(50) {
                pb.set_position(picked as u64);
                last = Instant::now();
            }
        });
        pb.finish_and_clear();
    } else {
        bank.set_coreset(crate::heads::anomaly::CoresetInfo {
            target,
            from: collected,
        });
    }
    let coreset_time = t.elapsed();
    let manifest = bank.save(&json_path)?;
    Ok(BankSummary {
        json: json_path,
        npz: npz_path,
        patches_kept: manifest.patches,
        manifest,
        input_size: size,
        images_used: used,
        skipped,
        patches_collected: collected,
        extract_time,
        coreset_time,
        total_time: start.elapsed(),
    })
}
