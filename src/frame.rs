//! A camera frame: RGB8 pixels, capture stamp, sequence number and frame_id; the borrowed image
//! view ([`RgbImageView`]) that frames, decoded files and preprocessing share; the node's clock.
//!
//! Sources convert whatever the camera delivers (YUYV, MJPEG, GREY, ...) to packed RGB8 before
//! handing a frame on, so everything downstream sees one layout. The capture stamp is the time
//! the sensor captured the image on the node's clock (ROS time: nanoseconds since the Unix
//! epoch), not the time we got around to processing it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Image width of the sources that take a size (synthetic scene, v4l2) unless told otherwise.
pub const DEFAULT_WIDTH: usize = 640;
/// Image height the sources that take a size use unless told otherwise.
pub const DEFAULT_HEIGHT: usize = 480;
/// frame_id of frames when nothing names the camera.
pub const DEFAULT_FRAME_ID: &str = "camera_optical_frame";

/// Nanoseconds since the Unix epoch on the node's clock (what ROS `builtin_interfaces/Time` holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp(pub u64);

impl Stamp {
    /// From a duration since the Unix epoch.
    pub fn from_duration(d: Duration) -> Self {
        Stamp(d.as_nanos().min(u64::MAX as u128) as u64)
    }

    /// Seconds part (ROS `sec`).
    pub fn sec(&self) -> i32 {
        (self.0 / 1_000_000_000).min(i32::MAX as u64) as i32
    }

    /// Nanoseconds part (ROS `nanosec`).
    pub fn nanosec(&self) -> u32 {
        (self.0 % 1_000_000_000) as u32
    }

    /// Difference `self - earlier`, saturating at zero.
    pub fn since(&self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// The node's clock, injected so tests and replays can use a mock one.
pub trait Clock: Send + Sync {
    /// Now, on the node's clock.
    fn now(&self) -> Stamp;
}

/// Wall-clock time (ROS time without simulation).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Stamp {
        Stamp::from_duration(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

/// Per-pixel ground truth of a synthetic frame (for training and evaluating the demo heads).
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// Objects in the image.
    pub boxes: Vec<GroundTruthBox>,
    /// Class id per pixel, row-major `height * width`; 0 is the ground/background.
    pub class_mask: Vec<u8>,
    /// Depth along the optical axis in metres per pixel, row-major; `f32::INFINITY` where
    /// nothing was hit (sky).
    pub depth: Vec<f32>,
    /// Class names indexed by class id (0 = background).
    pub class_names: Vec<String>,
    /// Anomalous pixels (255) and normal ones (0), row-major; `None` when the scene draws no
    /// anomalies (`anomaly_rate` 0). A frame is anomalous when any pixel is.
    pub anomaly_mask: Option<Vec<u8>>,
}

/// One ground-truth object box in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruthBox {
    /// Class id (>= 1).
    pub class_id: u8,
    /// Left edge, pixels.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge (exclusive).
    pub x1: f32,
    /// Bottom edge (exclusive).
    pub y1: f32,
}

/// Borrowed packed RGB8 pixels.
#[derive(Debug, Clone, Copy)]
pub struct RgbImageView<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes from one row to the next (>= 3 * width).
    pub stride: usize,
    /// Pixel bytes.
    pub data: &'a [u8],
}

impl<'a> RgbImageView<'a> {
    /// A tightly packed image.
    pub fn packed(width: usize, height: usize, data: &'a [u8]) -> Self {
        Self {
            width,
            height,
            stride: width * 3,
            data,
        }
    }
}

/// A captured frame in packed RGB8.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes, packed RGB.
    pub rgb: Vec<u8>,
    /// Capture time on the node's clock.
    pub stamp: Stamp,
    /// Sequence number from the source (gaps mean the source dropped frames).
    pub seq: u64,
    /// Coordinate frame of the camera (from the calibration), e.g. `camera_optical_frame`.
    pub frame_id: String,
    /// Ground truth, for synthetic frames.
    pub ground_truth: Option<Arc<GroundTruth>>,
}

impl Frame {
    /// The pixels as a borrowed view (what preprocessing reads).
    pub fn view(&self) -> RgbImageView<'_> {
        RgbImageView::packed(self.width, self.height, &self.rgb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_splits_into_ros_time() {
        let s = Stamp(1_700_000_000_123_456_789);
        assert_eq!(s.sec(), 1_700_000_000);
        assert_eq!(s.nanosec(), 123_456_789);
        assert_eq!(Stamp(5).since(Stamp(9)), Duration::ZERO);
    }
}
