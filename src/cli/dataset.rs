//! `dataset synthetic`: frames of the synthetic scene with their exact ground truth, written as
//! COCO JSON, PNG masks, depth .npy and an ImageFolder.

use std::path::PathBuf;

use super::CommandError;
use crate::dataset::{self, SyntheticDatasetOptions};
use crate::frame::{DEFAULT_HEIGHT, DEFAULT_WIDTH};
use crate::source::synthetic::SyntheticConfig;

/// Dataset kinds.
#[derive(Debug, clap::Subcommand)]
pub enum DatasetKind {
    /// Frames of the synthetic scene with their exact ground truth.
    Synthetic(SyntheticArgs),
}

/// Arguments of `dataset synthetic`.
#[derive(Debug, clap::Args)]
pub struct SyntheticArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of scenes (seeds seed, seed+1, ...).
    #[arg(long, default_value_t = 8)]
    pub scenes: u64,
    /// Frames per scene.
    #[arg(long, default_value_t = 16)]
    pub frames_per_scene: u64,
    /// Scene frames between dataset frames.
    #[arg(long, default_value_t = 9)]
    pub stride: u64,
    /// Seed of the first scene.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image width.
    #[arg(long, default_value_t = DEFAULT_WIDTH)]
    pub width: usize,
    /// Image height.
    #[arg(long, default_value_t = DEFAULT_HEIGHT)]
    pub height: usize,
    /// Objects per scene.
    #[arg(long, default_value_t = 6)]
    pub objects: usize,
    /// Share of frames with an anomalous object (writes anomaly/labels.json and
    /// anomaly/masks/; 0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub anomaly_rate: f64,
}

/// Write a dataset.
pub fn run(kind: &DatasetKind) -> Result<(), CommandError> {
    let DatasetKind::Synthetic(a) = kind;
    let opts = SyntheticDatasetOptions {
        out: a.out.clone(),
        scene: SyntheticConfig {
            width: a.width,
            height: a.height,
            seed: a.seed,
            num_objects: a.objects,
            anomaly_rate: a.anomaly_rate,
            ..SyntheticConfig::default()
        },
        scenes: a.scenes,
        frames_per_scene: a.frames_per_scene,
        stride: a.stride,
    };
    let summary = dataset::write_synthetic(&opts)?;
    log::info!(
        "wrote {} images with {} boxes to {} (labels: {})",
        summary.images,
        summary.boxes,
        a.out.display(),
        summary
            .labels
            .iter()
            .map(|(l, n)| format!("{l} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
