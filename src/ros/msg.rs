//! ROS 2 messages as serde structs, laid out field by field as the `.msg` files define them
//! (Jazzy; vision_msgs 4.x). ros2-client serialises them as little-endian CDR, which is what
//! every ROS 2 middleware puts on the wire: the struct order here IS the wire format.
//!
//! `TYPE` on each published message is the ROS type name (`package/msg/Type`); the DDS type
//! name (`package::msg::dds_::Type_`) is derived from it by ros2-client.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::frame::Stamp;

/// A message type with its ROS package and name.
pub trait RosMessage: Serialize {
    /// ROS package, e.g. `sensor_msgs`.
    const PACKAGE: &'static str;
    /// Type name in the package, e.g. `Image`.
    const NAME: &'static str;
    /// `package/msg/Type`, the name rosbag2 and ROS 2 tools show.
    const ROS_NAME: &'static str;
    /// `package/Type`, the name of its `.msg` definition.
    const MSG_NAME: &'static str;
}

macro_rules! ros_type {
    ($t:ty, $pkg:literal, $name:literal) => {
        impl RosMessage for $t {
            const PACKAGE: &'static str = $pkg;
            const NAME: &'static str = $name;
            const ROS_NAME: &'static str = concat!($pkg, "/msg/", $name);
            const MSG_NAME: &'static str = concat!($pkg, "/", $name);
        }
    };
}

/// builtin_interfaces/Time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Time {
    /// Seconds since the epoch.
    pub sec: i32,
    /// Nanoseconds within the second.
    pub nanosec: u32,
}

impl From<Stamp> for Time {
    fn from(s: Stamp) -> Self {
        Time {
            sec: s.sec(),
            nanosec: s.nanosec(),
        }
    }
}

impl From<Time> for Stamp {
    fn from(t: Time) -> Self {
        Stamp((t.sec.max(0) as u64) * 1_000_000_000 + u64::from(t.nanosec.min(999_999_999)))
    }
}

/// std_msgs/Header.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Header {
    /// Capture time of the data.
    pub stamp: Time,
    /// Coordinate frame.
    pub frame_id: String,
}

/// sensor_msgs/Image.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Image {
    /// Stamp and frame.
    pub header: Header,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// Pixel encoding (`rgb8`, `mono8`, `32FC1`, ...).
    pub encoding: String,
    /// 1 if multi-byte values are big-endian.
    pub is_bigendian: u8,
    /// Bytes per row.
    pub step: u32,
    /// `step * height` bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
ros_type!(Image, "sensor_msgs", "Image");

impl Image {
    /// Packed 8-bit image with `channels` per pixel.
    pub fn from_u8(
        header: Header,
        width: usize,
        height: usize,
        encoding: &str,
        channels: usize,
        data: Vec<u8>,
    ) -> Self {
        Image {
            header,
            height: height as u32,
            width: width as u32,
            encoding: encoding.to_string(),
            is_bigendian: 0,
            step: (width * channels) as u32,
            data,
        }
    }

    /// A packed `rgb8` image.
    pub fn rgb8(header: Header, width: usize, height: usize, data: Vec<u8>) -> Self {
        Image::from_u8(header, width, height, "rgb8", 3, data)
    }

    /// A packed `mono8` image.
    pub fn mono8(header: Header, width: usize, height: usize, data: Vec<u8>) -> Self {
        Image::from_u8(header, width, height, "mono8", 1, data)
    }

    /// Single-channel float image (`32FC1`, little-endian).
    pub fn from_f32(header: Header, width: usize, height: usize, values: &[f32]) -> Self {
        Image {
            header,
            height: height as u32,
            width: width as u32,
            encoding: "32FC1".to_string(),
            is_bigendian: 0,
            step: (width * 4) as u32,
            data: bytemuck::cast_slice(values).to_vec(),
        }
    }
}

/// sensor_msgs/CompressedImage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompressedImage {
    /// Stamp and frame.
    pub header: Header,
    /// `jpeg` or `png` (image_transport also writes e.g. `rgb8; jpeg compressed bgr8`).
    pub format: String,
    /// The compressed bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
ros_type!(CompressedImage, "sensor_msgs", "CompressedImage");

/// sensor_msgs/RegionOfInterest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegionOfInterest {
    /// Left edge.
    pub x_offset: u32,
    /// Top edge.
    pub y_offset: u32,
    /// Rows (0 = full image).
    pub height: u32,
    /// Columns (0 = full image).
    pub width: u32,
    /// Whether the ROI should be rectified.
    pub do_rectify: bool,
}

/// sensor_msgs/CameraInfo.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CameraInfo {
    /// Stamp and frame.
    pub header: Header,
    /// Image rows the calibration is for.
    pub height: u32,
    /// Image columns.
    pub width: u32,
    /// `plumb_bob` or `equidistant`.
    pub distortion_model: String,
    /// Distortion coefficients.
    pub d: Vec<f64>,
    /// Intrinsic matrix, row-major 3x3.
    pub k: [f64; 9],
    /// Rectification rotation, row-major 3x3.
    pub r: [f64; 9],
    /// Projection matrix, row-major 3x4.
    pub p: [f64; 12],
    /// Horizontal binning.
    pub binning_x: u32,
    /// Vertical binning.
    pub binning_y: u32,
    /// Region of interest.
    pub roi: RegionOfInterest,
}
ros_type!(CameraInfo, "sensor_msgs", "CameraInfo");

/// sensor_msgs/PointField.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PointField {
    /// Field name (`x`, `y`, `z`, `rgb`).
    pub name: String,
    /// Byte offset in the point.
    pub offset: u32,
    /// Data type (see the `POINT_FIELD_*` constants).
    pub datatype: u8,
    /// Elements.
    pub count: u32,
}

/// sensor_msgs/PointField FLOAT32.
pub const POINT_FIELD_FLOAT32: u8 = 7;

/// sensor_msgs/PointCloud2.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PointCloud2 {
    /// Stamp and frame.
    pub header: Header,
    /// Rows (1 for an unorganised cloud).
    pub height: u32,
    /// Points per row.
    pub width: u32,
    /// Layout of one point.
    pub fields: Vec<PointField>,
    /// Byte order of `data`.
    pub is_bigendian: bool,
    /// Bytes per point.
    pub point_step: u32,
    /// Bytes per row.
    pub row_step: u32,
    /// The points.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// False if some points are invalid (NaN).
    pub is_dense: bool,
}
ros_type!(PointCloud2, "sensor_msgs", "PointCloud2");

/// geometry_msgs/Point.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
    /// z.
    pub z: f64,
}

/// geometry_msgs/Quaternion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quaternion {
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
    /// z.
    pub z: f64,
    /// w.
    pub w: f64,
}

impl Default for Quaternion {
    /// The identity rotation.
    fn default() -> Self {
        Quaternion {
            x: 0.0,
            y: 0.0,
            z: 0.0,
            w: 1.0,
        }
    }
}

/// geometry_msgs/Pose.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pose {
    /// Position.
    pub position: Point,
    /// Orientation.
    pub orientation: Quaternion,
}

/// A `float64[36]` (serde's derives stop at 32 elements).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Covariance36(pub [f64; 36]);

impl Default for Covariance36 {
    fn default() -> Self {
        Covariance36([0.0; 36])
    }
}

impl Serialize for Covariance36 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(36)?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Covariance36 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Covariance36;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("36 float64 values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Covariance36, A::Error> {
                let mut out = [0.0; 36];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Covariance36(out))
            }
        }
        d.deserialize_tuple(36, V)
    }
}

/// geometry_msgs/PoseWithCovariance.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PoseWithCovariance {
    /// Pose.
    pub pose: Pose,
    /// Row-major 6x6 covariance.
    pub covariance: Covariance36,
}

/// vision_msgs/Point2D.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point2D {
    /// x (pixels).
    pub x: f64,
    /// y (pixels).
    pub y: f64,
}

/// vision_msgs/Pose2D (4.x).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pose2D {
    /// Position.
    pub position: Point2D,
    /// Rotation (radians).
    pub theta: f64,
}

/// vision_msgs/BoundingBox2D.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BoundingBox2D {
    /// Box centre.
    pub center: Pose2D,
    /// Width (pixels).
    pub size_x: f64,
    /// Height (pixels).
    pub size_y: f64,
}

/// vision_msgs/ObjectHypothesis.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ObjectHypothesis {
    /// Class (we publish the class name).
    pub class_id: String,
    /// Confidence.
    pub score: f64,
}

/// vision_msgs/ObjectHypothesisWithPose.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ObjectHypothesisWithPose {
    /// Class and score.
    pub hypothesis: ObjectHypothesis,
    /// Pose (unused for 2-D detections: identity).
    pub pose: PoseWithCovariance,
}

/// vision_msgs/Detection2D.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Detection2D {
    /// Stamp and frame (same as the array's).
    pub header: Header,
    /// Class hypotheses, best first.
    pub results: Vec<ObjectHypothesisWithPose>,
    /// Box in image pixels.
    pub bbox: BoundingBox2D,
    /// Identifier within the frame.
    pub id: String,
}

/// vision_msgs/Detection2DArray.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Detection2DArray {
    /// Stamp and frame.
    pub header: Header,
    /// The detections.
    pub detections: Vec<Detection2D>,
}
ros_type!(Detection2DArray, "vision_msgs", "Detection2DArray");

/// vision_msgs/Classification.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Classification {
    /// Stamp and frame.
    pub header: Header,
    /// Labels, best first.
    pub results: Vec<ObjectHypothesis>,
}
ros_type!(Classification, "vision_msgs", "Classification");

/// vision_msgs/VisionInfo.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VisionInfo {
    /// Stamp and frame.
    pub header: Header,
    /// The method that produced the detections.
    pub method: String,
    /// Where the class names are (the detection head manifest).
    pub database_location: String,
    /// Version of the class list.
    pub database_version: i32,
}
ros_type!(VisionInfo, "vision_msgs", "VisionInfo");

/// std_msgs/Float32.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Float32 {
    /// The value.
    pub data: f32,
}
ros_type!(Float32, "std_msgs", "Float32");

/// diagnostic_msgs/KeyValue.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// diagnostic_msgs/DiagnosticStatus.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiagnosticStatus {
    /// OK = 0, WARN = 1, ERROR = 2, STALE = 3.
    pub level: u8,
    /// Name of the component.
    pub name: String,
    /// Human-readable summary.
    pub message: String,
    /// Hardware identifier.
    pub hardware_id: String,
    /// Measurements.
    pub values: Vec<KeyValue>,
}

/// DiagnosticStatus levels.
pub mod diagnostic_level {
    /// Everything is fine.
    pub const OK: u8 = 0;
    /// Degraded.
    pub const WARN: u8 = 1;
    /// Failed.
    pub const ERROR: u8 = 2;
}

/// diagnostic_msgs/DiagnosticArray.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiagnosticArray {
    /// Stamp.
    pub header: Header,
    /// Components.
    pub status: Vec<DiagnosticStatus>,
}
ros_type!(DiagnosticArray, "diagnostic_msgs", "DiagnosticArray");
ros_type!(
    ros2_client::parameters::raw::ParameterEvent,
    "rcl_interfaces",
    "ParameterEvent"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_stamp() {
        let s = Stamp(1_700_000_000_123_456_789);
        let t = Time::from(s);
        assert_eq!((t.sec, t.nanosec), (1_700_000_000, 123_456_789));
        assert_eq!(Stamp::from(t), s);
    }

    #[test]
    fn float_image_is_little_endian_32fc1() {
        let img = Image::from_f32(Header::default(), 2, 1, &[1.0, -2.5]);
        assert_eq!(img.step, 8);
        assert_eq!(img.encoding, "32FC1");
        assert_eq!(&img.data[4..8], &(-2.5f32).to_le_bytes());
    }
}
