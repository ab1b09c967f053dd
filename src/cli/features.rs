//! `features`: the backbone on one image; `cls`, `registers`, `patch_tokens` (and intermediate
//! layers) written as float32 `.npz`.

use std::path::PathBuf;
use std::time::Instant;

use super::CommandError;
use crate::backend::LoadedBackbone;
use crate::config::{BackboneConfig, BackboneFlags};
use crate::features::Features;
use crate::image_io::load_rgb;
use crate::npz::{write_npz, NamedArray};
use crate::preprocess::Preprocessor;

/// Arguments of `features`.
#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    /// Backbone .onnx file.
    #[arg(long)]
    pub model: PathBuf,
    /// PNG or JPEG image.
    #[arg(long)]
    pub image: PathBuf,
    /// Output .npz file.
    #[arg(long)]
    pub out: PathBuf,
    /// How the backbone runs.
    #[command(flatten)]
    pub backbone: BackboneFlags,
}

/// Write the features and log what was written.
pub fn run(args: &FeaturesArgs) -> Result<(), CommandError> {
    let config = BackboneConfig::from_flags(args.model.clone(), &args.backbone)?;
    let start = Instant::now();
    let image = load_rgb(&args.image)?;
    let LoadedBackbone {
        model,
        size,
        prepared,
        ..
    } = LoadedBackbone::load(&config.model, config.input_size, &config.backend)?;
    let mut session = prepared.session()?;
    let prepare_seconds = start.elapsed().as_secs_f64();

    let mut pre = Preprocessor::new(&model.manifest, size, config.resize)?;
    let (input, _letterbox) = pre.run(&image.view())?;
    let t = Instant::now();
    let outputs = session.run(&input)?;
    let run_seconds = t.elapsed().as_secs_f64();
    // Validates every shape against the manifest before anything is written.
    Features::new(&outputs, &model.manifest, size)?;

    let arrays: Vec<NamedArray> = outputs
        .tensors
        .iter()
        .map(|t| NamedArray {
            name: &t.name,
            shape: &t.shape,
            data: t.data(),
        })
        .collect();
    write_npz(&args.out, &arrays)?;
    let names: Vec<&str> = outputs.tensors.iter().map(|t| t.name.as_str()).collect();
    log::info!(
        "wrote {} ({}) at input {size}; prepare {prepare_seconds:.2} s, backbone {:.1} ms",
        args.out.display(),
        names.join(", "),
        run_seconds * 1e3
    );
    Ok(())
}
