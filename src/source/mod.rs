//! Frame sources: where camera frames come from.
//!
//! Every source has the same small lifecycle ([`FrameSource`]: start / next frame / stop), hands
//! out packed RGB8 [`Frame`]s stamped with their capture time on the injected [`Clock`], and
//! counts what it had to skip. Sources: `synthetic` (seeded scene with ground truth), `dir:PATH`
//! (image files), `v4l2:/dev/videoN` (cameras), `ros:TOPIC` (through the node) and `mcap:PATH`
//! (a recording replayed).

pub mod convert;
pub mod files;
pub mod mcap;
pub mod pacing;
pub mod ros_image;
pub mod synthetic;
// V4L2 capture: Linux only; the crate builds elsewhere without it.
#[cfg(target_os = "linux")]
pub mod v4l2;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::frame::{Clock, Frame};

/// One source's settings as the configuration resolved them (see `config`).
#[derive(Debug, Clone)]
pub enum SourceSettings {
    /// The synthetic scene.
    Synthetic(synthetic::SyntheticConfig),
    /// A directory of images.
    Files(files::FilesConfig),
    /// A V4L2 camera.
    #[cfg(target_os = "linux")]
    V4l2(v4l2::V4l2Config),
    /// A ROS image topic (read through the node: see [`ros_image::RosImageSource`]).
    Ros {
        /// The topic.
        topic: String,
    },
    /// A recording replayed.
    Mcap(mcap::McapConfig),
}

impl SourceSettings {
    /// Open the source, its frames named `frame_id`. A `ros:` topic is read through the ROS
    /// node, which this cannot reach: it is refused here.
    pub fn open(
        self,
        frame_id: String,
        clock: Arc<dyn Clock>,
        stop: Arc<AtomicBool>,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        Ok(match self {
            SourceSettings::Synthetic(c) => Box::new(synthetic::SyntheticSource::new(
                synthetic::SyntheticConfig { frame_id, ..c },
                clock,
            )?),
            SourceSettings::Files(c) => Box::new(files::FilesSource::new(
                files::FilesConfig { frame_id, ..c },
                clock,
            )?),
            #[cfg(target_os = "linux")]
            SourceSettings::V4l2(c) => Box::new(
                v4l2::V4l2Source::new(v4l2::V4l2Config { frame_id, ..c }, clock)?
                    .with_stop_flag(stop),
            ),
            SourceSettings::Mcap(c) => {
                let _ = (frame_id, clock);
                Box::new(mcap::McapSource::open(c, stop)?)
            }
            SourceSettings::Ros { topic } => {
                let _ = stop;
                return Err(SourceError::BadSpec {
                    spec: format!("ros:{topic}"),
                    reason: "an image topic is read by the ROS node (run without --no-ros)".into(),
                });
            }
        })
    }
}

/// Errors from a source. Each names the device or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source specification cannot be parsed.
    #[error("source {spec:?} is not understood: {reason}")]
    BadSpec {
        /// What the user wrote.
        spec: String,
        /// Why, and what is accepted.
        reason: String,
    },
    /// The device or file does not exist.
    #[error("{path} does not exist: {fix}")]
    Missing {
        /// The device or file.
        path: PathBuf,
        /// What to do.
        fix: String,
    },
    /// Permission denied.
    #[error("permission denied opening {path}: {fix}")]
    PermissionDenied {
        /// The device or file.
        path: PathBuf,
        /// What to do.
        fix: String,
    },
    /// The device cannot deliver what was asked.
    #[error("{path} cannot deliver {requested}; it offers: {offered}")]
    FormatNotOffered {
        /// The device.
        path: PathBuf,
        /// The request, e.g. `YUYV 1280x720 @ 30 fps`.
        requested: String,
        /// What the device lists.
        offered: String,
    },
    /// A directory holds no usable images.
    #[error("{path} holds no .png/.jpg/.jpeg images; point dir: at a folder of images")]
    NoImages {
        /// The directory.
        path: PathBuf,
    },
    /// Any other I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The device or file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A recording to replay cannot be read.
    #[error(transparent)]
    Bag(#[from] crate::bag::BagError),
    /// A parameter of the source is out of range.
    #[error("source parameter {name} = {value} is invalid: {reason}")]
    BadParameter {
        /// Parameter name.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why, and the fix.
        reason: String,
    },
}

impl SourceError {
    /// Whether this is the user's input to fix (everything but unexpected I/O).
    pub fn is_bad_input(&self) -> bool {
        match self {
            SourceError::Io { .. } => false,
            SourceError::Bag(e) => e.is_bad_input(),
            _ => true,
        }
    }
}

/// Counters every source keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceStats {
    /// Frames delivered.
    pub frames: u64,
    /// Frames skipped because they were corrupt or truncated.
    pub skipped: u64,
    /// Times the device was lost and came back.
    pub reconnects: u64,
    /// Total time without a device.
    pub outage: Duration,
}

/// A source of camera frames.
pub trait FrameSource: Send {
    /// Human-readable description for logs (`v4l2:/dev/video0 YUYV 640x480@30`).
    fn describe(&self) -> String;
    /// Open the device or files.
    fn start(&mut self) -> Result<(), SourceError>;
    /// Block until the next frame. `Ok(None)`: the stream has ended (e.g. files without looping).
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// Release the device.
    fn stop(&mut self);
    /// Counters so far.
    fn stats(&self) -> SourceStats;
}

/// A parsed `--source` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The seeded synthetic scene.
    Synthetic,
    /// A V4L2 device path (`/dev/video0` or `/dev/v4l/by-id/...`).
    V4l2(PathBuf),
    /// A directory of image files.
    Dir(PathBuf),
    /// A ROS 2 image topic (`/compressed` suffix: sensor_msgs/CompressedImage).
    Ros(String),
    /// A recording to replay: a rosbag2 directory or an `.mcap` file.
    Mcap(PathBuf),
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Synthetic => write!(f, "synthetic"),
            SourceSpec::V4l2(p) => write!(f, "v4l2:{}", p.display()),
            SourceSpec::Dir(p) => write!(f, "dir:{}", p.display()),
            SourceSpec::Ros(t) => write!(f, "ros:{t}"),
            SourceSpec::Mcap(p) => write!(f, "mcap:{}", p.display()),
        }
    }
}

impl std::str::FromStr for SourceSpec {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| SourceError::BadSpec {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let accepted = "use synthetic, v4l2:/dev/videoN, dir:PATH, ros:TOPIC or mcap:PATH";
        if s == "synthetic" {
            return Ok(SourceSpec::Synthetic);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad(accepted))?;
        if rest.is_empty() {
            return Err(bad(&format!("{kind}: needs a path; {accepted}")));
        }
        match kind {
            "v4l2" => Ok(SourceSpec::V4l2(PathBuf::from(rest))),
            "dir" => Ok(SourceSpec::Dir(PathBuf::from(rest))),
            "ros" => Ok(SourceSpec::Ros(rest.to_string())),
            "mcap" => Ok(SourceSpec::Mcap(PathBuf::from(rest))),
            _ => Err(bad(accepted)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_source_specs() {
        assert_eq!(
            "synthetic".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic
        );
        assert_eq!(
            "v4l2:/dev/video0".parse::<SourceSpec>().unwrap(),
            SourceSpec::V4l2("/dev/video0".into())
        );
        assert_eq!(
            "dir:/data/imgs".parse::<SourceSpec>().unwrap(),
            SourceSpec::Dir("/data/imgs".into())
        );
        assert_eq!(
            "ros:/camera/image_raw".parse::<SourceSpec>().unwrap(),
            SourceSpec::Ros("/camera/image_raw".into())
        );
        assert_eq!(
            "mcap:/bags/run1".parse::<SourceSpec>().unwrap(),
            SourceSpec::Mcap("/bags/run1".into())
        );
        for bad in ["", "camera", "v4l2:", "usb:/dev/x", "ros:", "mcap:"] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
    }
}
