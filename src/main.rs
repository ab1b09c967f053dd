//! `dinov3_perception` command line: argument parsing and dispatch to [`cli`]; logging set-up
//! and the exit code. Nothing else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dinov3_perception::cli::{self, exit, CommandError};
use dinov3_perception::config::RunFlags;
use dinov3_perception::ros::args::split_ros_args;

/// One DINOv3 backbone pass per camera frame, feeding every perception task.
#[derive(Debug, Parser)]
#[command(name = "dinov3_perception", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the ROS 2 node: frames from a source, one backbone pass per frame, every head output
    /// published as ROS topics, live status line. With no options: the synthetic scene and the
    /// bundled tiny model. Accepts `--ros-args ...` as `ros2 launch` / `ros2 run` pass it.
    Run(Box<RunFlags>),
    /// Run the backbone and every head on a directory of images; write COCO detections,
    /// class-id masks, depth .npy, labels and anomaly scores (for models/eval_heads.py).
    Predict(cli::predict::PredictArgs),
    /// Anomaly memory banks (AnomalyDINO).
    Bank {
        #[command(subcommand)]
        action: cli::bank::BankAction,
    },
    /// Write datasets in standard formats (COCO JSON, PNG masks, depth .npy, ImageFolder).
    Dataset {
        #[command(subcommand)]
        kind: cli::dataset::DatasetKind,
    },
    /// Print a backbone model's manifest, inputs/outputs, parameter count and FLOP estimate.
    Inspect(cli::inspect::InspectArgs),
    /// Run the backbone on one image and write cls, registers, patch_tokens (and layers) as .npz.
    Features(cli::features::FeaturesArgs),
    /// Rebuild a recording's MCAP summaries and metadata.yaml after the recorder was killed or
    /// the disk filled up (as `ros2 bag reindex` does).
    Reindex(cli::reindex::ReindexArgs),
}

fn dispatch(command: &Command, ros_tokens: &[String]) -> Result<(), CommandError> {
    match command {
        Command::Run(flags) => cli::run::run(flags, ros_tokens),
        Command::Predict(args) => cli::predict::run(args),
        Command::Bank { action } => cli::bank::run(action),
        Command::Dataset { kind } => cli::dataset::run(kind),
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Features(args) => cli::features::run(args),
        Command::Reindex(args) => cli::reindex::run(args),
    }
}

fn main() -> ExitCode {
    dinov3_perception::telemetry::init_logging(
        "info,rustdds=error,ros2_client=warn,rustdds::network::udp_listener=off",
    );
    // `ros2 launch` appends `--ros-args ...`: split it off before clap sees the argv.
    let (plain, ros_tokens) = split_ros_args(std::env::args());
    let cli = Cli::parse_from(plain);
    match dispatch(&cli.command, &ros_tokens) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
