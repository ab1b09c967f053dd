//! `bank build`: an AnomalyDINO memory bank from a directory of normal images.

use std::path::PathBuf;

use super::CommandError;
use crate::bank::{build_bank, BuildBankOptions};
use crate::config::{BackboneConfig, BackboneFlags};

/// `bank` actions.
#[derive(Debug, clap::Subcommand)]
pub enum BankAction {
    /// Build a bank of L2-normalised patch features from a directory of normal images.
    Build(BuildArgs),
}

/// Arguments of `bank build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Backbone .onnx file.
    #[arg(long)]
    pub model: PathBuf,
    /// Directory of normal PNG/JPEG images.
    #[arg(long)]
    pub images: PathBuf,
    /// Output NAME: writes NAME.bank.json and NAME.bank.npz (name it `anomaly` inside a
    /// heads directory for `run --heads`).
    #[arg(long)]
    pub out: PathBuf,
    /// Keep at most this many patches (greedy coreset subsampling).
    #[arg(long)]
    pub max_patches: Option<usize>,
    /// Image score: mean of the top PERCENT of patch distances.
    #[arg(long, default_value_t = 1.0)]
    pub top_percent: f32,
    /// Seed of the coreset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How the backbone runs.
    #[command(flatten)]
    pub backbone: BackboneFlags,
}

/// Run a `bank` action.
pub fn run(action: &BankAction) -> Result<(), CommandError> {
    let BankAction::Build(args) = action;
    let backbone = BackboneConfig::from_flags(args.model.clone(), &args.backbone)?;
    let mut opts = BuildBankOptions::new(backbone.model, args.images.clone(), args.out.clone());
    opts.max_patches = args.max_patches;
    opts.top_percent = args.top_percent;
    opts.seed = args.seed;
    opts.input_size = backbone.input_size;
    opts.resize = backbone.resize;
    opts.backend = backbone.backend;
    let summary = build_bank(&opts)?;
    log::info!("{}", summary.line());
    Ok(())
}
