//! The [`CaptureDevice`] trait: the part of [`V4l2Source`](super::V4l2Source) that talks to
//! hardware, with the types it hands over ([`OpenedDevice`], [`CapturedBuffer`],
//! [`DeviceError`]). [`V4l2Device`](super::V4l2Device) is the real device; the integration
//! tests implement a fake one.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CaptureRequest, OfferedFormat};
use crate::source::convert::FrameLayout;

/// Why a device could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device node does not exist (or its device is gone).
    #[error("no such device")]
    NotFound,
    /// We may not open it.
    #[error("permission denied")]
    PermissionDenied,
    /// It does not offer what was asked.
    #[error("format not offered")]
    FormatNotOffered {
        /// What it offers.
        offered: Vec<OfferedFormat>,
    },
    /// It was open and stopped working (unplugged, I/O error, stalled).
    #[error("device lost: {reason}")]
    Lost {
        /// What happened.
        reason: String,
    },
    /// Any other I/O failure while opening.
    #[error(transparent)]
    Io(io::Error),
}

/// What an opened device reports.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedDevice {
    /// The device node the path leads to (`/dev/video2` for a `/dev/v4l/by-id/...` link).
    pub resolved_path: PathBuf,
    /// The negotiated buffer layout.
    pub layout: FrameLayout,
    /// The frame rate the driver accepted, if it says.
    pub fps: Option<f64>,
}

/// One filled buffer.
#[derive(Debug, Clone, Copy)]
pub struct CapturedBuffer<'a> {
    /// The bytes the driver filled (`bytesused`).
    pub data: &'a [u8],
    /// Capture time on `CLOCK_MONOTONIC`, if the driver stamps buffers with it.
    pub timestamp: Option<Duration>,
    /// The driver's frame counter (restarts at each open; gaps are frames the driver dropped).
    pub sequence: u32,
    /// The driver flagged the buffer as corrupt (`V4L2_BUF_FLAG_ERROR`).
    pub error_flag: bool,
}

/// A capture device: the part of [`V4l2Source`](super::V4l2Source) that talks to hardware.
pub trait CaptureDevice: Send {
    /// Opens `path` (closing whatever was open), negotiates `request` and starts streaming.
    fn open(&mut self, path: &Path, request: &CaptureRequest) -> Result<OpenedDevice, DeviceError>;

    /// Waits up to about `wait` for the next buffer; `Ok(None)` if none came (try again).
    /// After an error the device must be reopened.
    fn next_buffer(&mut self, wait: Duration) -> Result<Option<CapturedBuffer<'_>>, DeviceError>;

    /// Stops streaming and releases the device.
    fn close(&mut self);
}
