//! Every subcommand's error, and the process exit codes scripts rely on.

use crate::bag::BagError;
use crate::sink::record::RecordError;
use std::path::PathBuf;

use crate::backend::BackendError;
use crate::bank::BankError;
use crate::calibration::CalibrationError;
use crate::config::ConfigError;
use crate::dataset::DatasetError;
use crate::eval::EvalError;
use crate::features::FeaturesError;
use crate::heads::HeadError;
use crate::image_io::{ImageDirError, ImageFileError};
use crate::model::ModelError;
use crate::npz::NpyError;
use crate::pipeline::{InferenceError, PipelineError};
use crate::preprocess::PreprocessError;
use crate::ros::RosError;
use crate::sink::foxglove::LiveViewError;
use crate::source::SourceError;

/// Process exit codes: 0 ok, 2 bad input or configuration, 1 anything else.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A failure that is not the user's input.
    pub const FAILURE: i32 = 1;
    /// Bad input or configuration: the message says what to fix.
    pub const BAD_INPUT: i32 = 2;
}

/// Any error of a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Flags, parameters, ROS names or environment.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Model file problem.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Backend problem.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Image file problem.
    #[error(transparent)]
    Image(#[from] ImageFileError),
    /// A directory of images cannot be listed or holds none.
    #[error(transparent)]
    ImageDir(#[from] ImageDirError),
    /// Preprocessing problem.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// Output file problem.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// Outputs do not match the manifest.
    #[error(transparent)]
    Features(#[from] FeaturesError),
    /// A frame source problem.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// One image could not be processed (`predict`).
    #[error("{image}: {error}")]
    Inference {
        /// The image.
        image: PathBuf,
        /// What failed (boxed: the variant is large).
        error: Box<InferenceError>,
    },
    /// A head failed on one image (`predict`).
    #[error("{image}: head {head}: {error}")]
    HeadFailed {
        /// The image.
        image: PathBuf,
        /// The head.
        head: String,
        /// What failed (boxed: the variant is large).
        error: Box<HeadError>,
    },
    /// A head or memory bank problem (boxed: the variant is large).
    #[error(transparent)]
    Head(Box<HeadError>),
    /// Writing a dataset failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Building an anomaly memory bank failed (boxed: the variant is large).
    #[error(transparent)]
    Bank(Box<BankError>),
    /// Writing an output failed.
    #[error("cannot write {path}: {reason}; check the directory and free space")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// The process could not set itself up (not the input's fault).
    #[error("{0}")]
    Startup(String),
    /// ROS node or DDS (boxed: the variant is large).
    #[error(transparent)]
    Ros(Box<RosError>),
    /// A camera calibration problem.
    #[error(transparent)]
    Calibration(Box<CalibrationError>),
    /// The live view cannot start (boxed: the variant is large).
    #[error(transparent)]
    LiveView(Box<LiveViewError>),
    /// The source failed while the node ran (after it had started).
    #[error("the source failed: {0}")]
    SourceFailed(Box<SourceError>),
    /// The recorder could not start (boxed: the variant is large).
    #[error(transparent)]
    Record(Box<RecordError>),
    /// A bag could not be read or repaired (boxed: the variant is large).
    #[error(transparent)]
    Bag(Box<BagError>),
    /// Offline evaluation: ground truth, predictions or reports (boxed: the variant is large).
    #[error(transparent)]
    Eval(Box<EvalError>),
}

impl From<RecordError> for CommandError {
    fn from(e: RecordError) -> Self {
        CommandError::Record(Box::new(e))
    }
}

impl From<BagError> for CommandError {
    fn from(e: BagError) -> Self {
        CommandError::Bag(Box::new(e))
    }
}

impl From<EvalError> for CommandError {
    fn from(e: EvalError) -> Self {
        CommandError::Eval(Box::new(e))
    }
}

impl From<RosError> for CommandError {
    fn from(e: RosError) -> Self {
        CommandError::Ros(Box::new(e))
    }
}

impl From<CalibrationError> for CommandError {
    fn from(e: CalibrationError) -> Self {
        CommandError::Calibration(Box::new(e))
    }
}

impl From<LiveViewError> for CommandError {
    fn from(e: LiveViewError) -> Self {
        CommandError::LiveView(Box::new(e))
    }
}

impl From<HeadError> for CommandError {
    fn from(e: HeadError) -> Self {
        CommandError::Head(Box::new(e))
    }
}

impl From<BankError> for CommandError {
    fn from(e: BankError) -> Self {
        CommandError::Bank(Box::new(e))
    }
}

impl CommandError {
    /// Process exit code (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        let bad = |is_bad_input: bool| {
            if is_bad_input {
                exit::BAD_INPUT
            } else {
                exit::FAILURE
            }
        };
        match self {
            CommandError::Backend(e) => bad(e.is_bad_input()),
            CommandError::Source(e) => bad(e.is_bad_input()),
            CommandError::Head(e) => bad(e.is_bad_input()),
            CommandError::Bank(e) => bad(e.is_bad_input()),
            CommandError::Write { .. } | CommandError::Startup(_) => exit::FAILURE,
            CommandError::ImageDir(e) => bad(e.is_bad_input()),
            CommandError::Ros(e) => bad(e.is_bad_input()),
            CommandError::Calibration(e) => bad(e.is_bad_input()),
            CommandError::LiveView(e) => bad(e.is_bad_input()),
            CommandError::Pipeline(e) => bad(e.is_bad_input()),
            CommandError::Inference { error, .. } => bad(error.is_bad_input()),
            CommandError::HeadFailed { error, .. } => bad(error.is_bad_input()),
            // Mid-run: the cause decides (a camera that vanished: 1; frames that do not fit
            // the calibration: 2).
            CommandError::SourceFailed(e) => bad(e.is_bad_input()),
            CommandError::Record(e) => bad(e.is_bad_input()),
            CommandError::Bag(e) => bad(e.is_bad_input()),
            CommandError::Eval(e) => bad(e.is_bad_input()),
            CommandError::Config(_)
            | CommandError::Model(_)
            | CommandError::Image(_)
            | CommandError::Preprocess(_)
            | CommandError::Npy(_)
            | CommandError::Features(_)
            | CommandError::Dataset(_)
            | CommandError::Usage(_) => exit::BAD_INPUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_failures_are_not_bad_input() {
        let spawn = CommandError::Pipeline(PipelineError::Spawn {
            thread: "capture",
            error: std::io::Error::other("EAGAIN"),
        });
        assert_eq!(spawn.exit_code(), exit::FAILURE);
        assert!(!spawn.to_string().contains("panicked"), "{spawn}");
        let lost = CommandError::SourceFailed(Box::new(SourceError::Io {
            path: "/dev/video0".into(),
            source: std::io::Error::other("EIO"),
        }));
        assert_eq!(lost.exit_code(), exit::FAILURE);
        let misfit = CommandError::SourceFailed(Box::new(SourceError::BadParameter {
            name: "calibration_file",
            value: "cam".into(),
            reason: "640x480 frames, 320x240 calibration".into(),
        }));
        assert_eq!(misfit.exit_code(), exit::BAD_INPUT);
        let usage = CommandError::Usage("--x".into());
        assert_eq!(usage.exit_code(), exit::BAD_INPUT);
    }
}
