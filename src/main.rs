//! `dinov3_perception` command line: argument parsing, logging set-up and exit codes only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use dinov3_perception::commands::{self, CommandError, FeaturesOptions};
use dinov3_perception::exit;
use dinov3_perception::preprocess::ResizeMode;

/// One DINOv3 backbone pass per camera frame, feeding every perception task.
#[derive(Debug, Parser)]
#[command(name = "dinov3_perception", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Resize {
    /// Scale x and y independently (transformers' DINOv3 processor does this).
    Stretch,
    /// Keep the aspect ratio and pad.
    Letterbox,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a backbone model's manifest, inputs/outputs, parameter count and FLOP estimate.
    Inspect {
        /// Backbone .onnx file (its .json manifest must sit beside it).
        model: PathBuf,
    },
    /// Run the backbone on one image and write cls, registers, patch_tokens (and layers) as .npz.
    Features {
        /// Backbone .onnx file.
        #[arg(long)]
        model: PathBuf,
        /// PNG or JPEG image.
        #[arg(long)]
        image: PathBuf,
        /// Output .npz file.
        #[arg(long)]
        out: PathBuf,
        /// Input size HEIGHTxWIDTH for a dynamic model (fixed models use their own).
        #[arg(long)]
        input_size: Option<String>,
        /// How the image is fitted to the model input.
        #[arg(long, value_enum, default_value = "stretch")]
        resize: Resize,
        /// Inference backend.
        #[arg(long, default_value = "tract")]
        backend: String,
        /// Threads for matrix products (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { model } => {
            let text = commands::inspect(&model)?;
            print!("{text}");
        }
        Command::Features {
            model,
            image,
            out,
            input_size,
            resize,
            backend,
            threads,
        } => {
            let input_size = input_size
                .as_deref()
                .map(commands::parse_input_size)
                .transpose()?;
            let opts = FeaturesOptions {
                model,
                image,
                out: out.clone(),
                input_size,
                resize: match resize {
                    Resize::Stretch => ResizeMode::Stretch,
                    Resize::Letterbox => ResizeMode::Letterbox,
                },
                backend,
                threads,
            };
            let report = commands::features(&opts)
                .with_context(|| format!("features for {}", opts.image.display()))?;
            log::info!(
                "wrote {} ({}) at input {}; prepare {:.2} s, backbone {:.1} ms",
                out.display(),
                report.arrays.join(", "),
                report.input_size,
                report.prepare_seconds,
                report.run_seconds * 1e3
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<CommandError>())
                .map_or(exit::FAILURE, CommandError::exit_code);
            ExitCode::from(code as u8)
        }
    }
}
