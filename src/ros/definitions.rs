//! The `.msg` definitions of the messages the node writes, in the form rosbag2 stores them in
//! MCAP schemas and Foxglove reads them (`ros2msg`): the type's own fields, then each type it
//! depends on (depth first, each once) after a line of 80 `=` and `MSG: package/Type`.
//!
//! The field lists follow the structs in [`super::msg`] exactly (Jazzy; vision_msgs 4.x): a
//! reader decodes the recorded CDR with these, so a mismatch is a decoding error there (the
//! interop tests read every message back with independent decoders).

/// The separator rosbag2 writes between a definition and each of its dependencies.
pub const SEPARATOR: &str =
    "================================================================================";

/// `package/Type` and its own fields, for every type used by a written message.
const DEFINITIONS: &[(&str, &str)] = &[
    ("builtin_interfaces/Time", "int32 sec\nuint32 nanosec\n"),
    (
        "std_msgs/Header",
        "builtin_interfaces/Time stamp\nstring frame_id\n",
    ),
    ("std_msgs/Float32", "float32 data\n"),
    (
        "sensor_msgs/Image",
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n\
         uint8 is_bigendian\nuint32 step\nuint8[] data\n",
    ),
    (
        "sensor_msgs/CompressedImage",
        "std_msgs/Header header\nstring format\nuint8[] data\n",
    ),
    (
        "sensor_msgs/RegionOfInterest",
        "uint32 x_offset\nuint32 y_offset\nuint32 height\nuint32 width\nbool do_rectify\n",
    ),
    (
        "sensor_msgs/CameraInfo",
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring distortion_model\n\
         float64[] d\nfloat64[9] k\nfloat64[9] r\nfloat64[12] p\nuint32 binning_x\n\
         uint32 binning_y\nsensor_msgs/RegionOfInterest roi\n",
    ),
    (
        "sensor_msgs/PointField",
        "uint8 INT8=1\nuint8 UINT8=2\nuint8 INT16=3\nuint8 UINT16=4\nuint8 INT32=5\n\
         uint8 UINT32=6\nuint8 FLOAT32=7\nuint8 FLOAT64=8\n\
         string name\nuint32 offset\nuint8 datatype\nuint32 count\n",
    ),
    (
        "sensor_msgs/PointCloud2",
        "std_msgs/Header header\nuint32 height\nuint32 width\nsensor_msgs/PointField[] fields\n\
         bool is_bigendian\nuint32 point_step\nuint32 row_step\nuint8[] data\nbool is_dense\n",
    ),
    ("geometry_msgs/Point", "float64 x\nfloat64 y\nfloat64 z\n"),
    (
        "geometry_msgs/Quaternion",
        "float64 x\nfloat64 y\nfloat64 z\nfloat64 w\n",
    ),
    (
        "geometry_msgs/Pose",
        "geometry_msgs/Point position\ngeometry_msgs/Quaternion orientation\n",
    ),
    (
        "geometry_msgs/PoseWithCovariance",
        "geometry_msgs/Pose pose\nfloat64[36] covariance\n",
    ),
    ("vision_msgs/Point2D", "float64 x\nfloat64 y\n"),
    (
        "vision_msgs/Pose2D",
        "vision_msgs/Point2D position\nfloat64 theta\n",
    ),
    (
        "vision_msgs/BoundingBox2D",
        "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    ),
    (
        "vision_msgs/ObjectHypothesis",
        "string class_id\nfloat64 score\n",
    ),
    (
        "vision_msgs/ObjectHypothesisWithPose",
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    ),
    (
        "vision_msgs/Detection2D",
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n\
         vision_msgs/BoundingBox2D bbox\nstring id\n",
    ),
    (
        "vision_msgs/Detection2DArray",
        "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    ),
    (
        "vision_msgs/Classification",
        "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n",
    ),
    (
        "vision_msgs/VisionInfo",
        "std_msgs/Header header\nstring method\nstring database_location\n\
         int32 database_version\n",
    ),
    ("diagnostic_msgs/KeyValue", "string key\nstring value\n"),
    (
        "diagnostic_msgs/DiagnosticStatus",
        "byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\n\
         byte level\nstring name\nstring message\nstring hardware_id\n\
         diagnostic_msgs/KeyValue[] values\n",
    ),
    (
        "diagnostic_msgs/DiagnosticArray",
        "std_msgs/Header header\ndiagnostic_msgs/DiagnosticStatus[] status\n",
    ),
];

fn own_fields(name: &str) -> Option<&'static str> {
    DEFINITIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, body)| *body)
}

/// The complex types `body`'s fields use (`package/Type`), in field order.
fn dependencies(body: &str) -> impl Iterator<Item = &str> {
    body.lines().filter_map(|line| {
        let ty = line.split_whitespace().next()?;
        let ty = ty.split('[').next().unwrap_or(ty);
        ty.contains('/').then_some(ty)
    })
}

/// The full `ros2msg` schema of `package/Type` (e.g. `sensor_msgs/Image`), or `None` for a type
/// this table does not hold.
pub fn schema(name: &str) -> Option<String> {
    let mut out = own_fields(name)?.to_string();
    let mut seen = vec![name.to_string()];
    let mut stack: Vec<&str> = dependencies(own_fields(name)?).collect();
    stack.reverse();
    while let Some(dep) = stack.pop() {
        if seen.iter().any(|s| s == dep) {
            continue;
        }
        seen.push(dep.to_string());
        let body = own_fields(dep)?;
        out.push_str(SEPARATOR);
        out.push_str("\nMSG: ");
        out.push_str(dep);
        out.push('\n');
        out.push_str(body);
        let mut more: Vec<&str> = dependencies(body).collect();
        more.reverse();
        stack.extend(more);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dependency_has_a_definition() {
        for (name, _) in DEFINITIONS {
            assert!(schema(name).is_some(), "{name}");
        }
    }

    #[test]
    fn dependencies_follow_the_type_once_each() {
        let s = schema("sensor_msgs/Image").unwrap();
        let blocks: Vec<&str> = s.split(SEPARATOR).collect();
        assert_eq!(blocks.len(), 3, "{s}");
        assert!(blocks[1].starts_with("\nMSG: std_msgs/Header\n"));
        assert!(blocks[2].starts_with("\nMSG: builtin_interfaces/Time\n"));
        let d = schema("vision_msgs/Detection2DArray").unwrap();
        assert_eq!(d.matches("MSG: std_msgs/Header\n").count(), 1);
        assert_eq!(d.matches("MSG: geometry_msgs/Point\n").count(), 1);
    }
}
