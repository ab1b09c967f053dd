//! rosbag2 directories with MCAP storage: what `ros2 bag info` / `ros2 bag play` and the
//! independent readers (`mcap`, `rosbags`, `@mcap/core`) accept.
//!
//! ```text
//! DIR/metadata.yaml     rosbag2 metadata, version 9
//! DIR/<name>_0.mcap     profile ros2: ros2msg schemas, cdr channels (offered_qos_profiles),
//! DIR/<name>_1.mcap     chunks (zstd / lz4), statistics, summary, the `rosbag2` metadata record
//! ```
//!
//! * [`metadata`]: `metadata.yaml` and QoS profiles.
//! * [`writer`]: [`writer::BagWriter`], chunked and split by size or duration.
//! * [`reader`]: topics and messages of a bag directory or a single `.mcap`, up to the last
//!   complete chunk of a file cut short (killed writer, full disk).
//! * [`reindex`]: rebuilds each file's summary and `metadata.yaml` (`ros2 bag reindex`).

use std::path::{Path, PathBuf};

pub mod metadata;
pub mod reader;
pub mod reindex;
pub mod writer;

/// Errors reading or writing a bag; each names the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BagError {
    /// The record directory is already there.
    #[error("{path} already exists: choose another --record directory (or remove this one)")]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {error}{}", if is_disk_full(.error) { " (the disk is full: free space, then `dinov3_perception reindex` the bag)" } else { "" })]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {reason}; {fix}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// What to do.
        fix: String,
    },
    /// The bag has no image topic to replay.
    #[error("{path} has no sensor_msgs/msg/Image or CompressedImage topic (topics: {topics}); record the camera (record.images) or replay another bag")]
    NoImageTopic {
        /// The bag.
        path: PathBuf,
        /// What it has.
        topics: String,
    },
    /// The topic asked for is not in the bag, or is not an image topic.
    #[error("{path}: {reason}; image topics in the bag: {available}")]
    Topic {
        /// The bag.
        path: PathBuf,
        /// What is wrong with the topic asked for.
        reason: String,
        /// The image topics it has.
        available: String,
    },
    /// A bug: something that cannot fail did.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whether `e` says the disk (or the quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl BagError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        BagError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    /// An MCAP error on `path` (I/O errors keep their kind).
    pub fn mcap(path: &Path, error: mcap::McapError) -> Self {
        match error {
            mcap::McapError::Io(error) => BagError::io(path, error),
            other => BagError::Corrupt {
                path: path.to_path_buf(),
                reason: other.to_string(),
                fix: "the file is not a complete MCAP; `dinov3_perception reindex DIR` recovers a bag cut short".into(),
            },
        }
    }

    /// Whether the user's input (a path, a file) is at fault rather than the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            BagError::Io { error, .. } => !is_disk_full(error),
            BagError::Internal(_) => false,
            _ => true,
        }
    }
}
