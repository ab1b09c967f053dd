//! The node's output messages, built once per frame for every sink that sends or writes them
//! (ROS topics, the recorder, the live view): [`OutputBuilder`] turns a [`FrameResult`] into
//! [`Outgoing`] messages (topic, stamp, [`Message`]), and [`OutputBuilder::offered`] lists the
//! topics and types before the first frame (publishers, bag channels, live-view channels).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::calibration::{CameraCalibration, PointCloud, RayTable};
use crate::frame::{Frame, Stamp};
use crate::heads::manifest::Task;
use crate::heads::{Detection, HeadOutput};
use crate::result::FrameResult;
use crate::ros::cdr::{self, CdrError};
use crate::ros::msg::*;

/// Topic names (relative: they move with the node's namespace; each can be remapped).
pub mod topics {
    /// vision_msgs/Detection2DArray.
    pub const DETECTIONS: &str = "dinov3/detections";
    /// vision_msgs/VisionInfo (latched).
    pub const VISION_INFO: &str = "dinov3/vision_info";
    /// sensor_msgs/Image mono8 class ids.
    pub const SEGMENTATION: &str = "dinov3/segmentation";
    /// sensor_msgs/Image rgb8 palette colours.
    pub const SEGMENTATION_COLOR: &str = "dinov3/segmentation/color";
    /// sensor_msgs/Image 32FC1 metres.
    pub const DEPTH: &str = "dinov3/depth";
    /// sensor_msgs/PointCloud2.
    pub const POINTS: &str = "dinov3/points";
    /// std_msgs/Float32.
    pub const ANOMALY_SCORE: &str = "dinov3/anomaly/score";
    /// sensor_msgs/Image 32FC1.
    pub const ANOMALY_MAP: &str = "dinov3/anomaly/map";
    /// vision_msgs/Classification.
    pub const CLASSIFICATION: &str = "dinov3/classification";
    /// sensor_msgs/Image rgb8.
    pub const PCA: &str = "dinov3/features/pca";
    /// sensor_msgs/CameraInfo.
    pub const CAMERA_INFO: &str = "dinov3/camera_info";
    /// sensor_msgs/Image rgb8 (frame with detections drawn).
    pub const DEBUG_IMAGE: &str = "dinov3/debug_image";
    /// diagnostic_msgs/DiagnosticArray (absolute).
    pub const DIAGNOSTICS: &str = "/diagnostics";
    /// sensor_msgs/Image rgb8: the input frames, as the recorder writes them.
    pub const INPUT_IMAGE: &str = "dinov3/input/image";
    /// sensor_msgs/CompressedImage jpeg: the input frames, compressed by the recorder.
    pub const INPUT_IMAGE_COMPRESSED: &str = "dinov3/input/image/compressed";

    use crate::heads::manifest::Task;
    use crate::ros::node::TopicQos;

    /// The QoS a topic always has, whatever `qos.reliable_topics` says (`None`: sensor data
    /// unless listed as reliable).
    pub fn fixed_qos(topic: &str) -> Option<TopicQos> {
        match topic {
            VISION_INFO => Some(TopicQos::Latched),
            DIAGNOSTICS => Some(TopicQos::Reliable),
            _ => None,
        }
    }

    /// The topic table: where each head's output is published (depth's points also need a
    /// calibration).
    pub fn of_head(task: Task) -> &'static [&'static str] {
        match task {
            Task::Detection => &[DETECTIONS, VISION_INFO],
            Task::Segmentation => &[SEGMENTATION, SEGMENTATION_COLOR],
            Task::Depth => &[DEPTH, POINTS],
            Task::Classification => &[CLASSIFICATION],
            Task::Anomaly => &[ANOMALY_SCORE, ANOMALY_MAP],
            Task::Pca => &[PCA],
        }
    }
}

/// Publishing switches that parameters change while the node runs.
#[derive(Debug)]
pub struct LiveSettings {
    /// Publish the debug image.
    pub debug_image: AtomicBool,
    /// Publish the point cloud.
    pub points_enabled: AtomicBool,
    /// Pixel stride of the point cloud (>= 1).
    pub points_stride: AtomicUsize,
    /// Colour the points from the frame.
    pub points_rgb: AtomicBool,
}

impl LiveSettings {
    /// Initial switches.
    pub fn new(
        debug_image: bool,
        points_enabled: bool,
        points_stride: usize,
        points_rgb: bool,
    ) -> Self {
        LiveSettings {
            debug_image: AtomicBool::new(debug_image),
            points_enabled: AtomicBool::new(points_enabled),
            points_stride: AtomicUsize::new(points_stride.max(1)),
            points_rgb: AtomicBool::new(points_rgb),
        }
    }
}

impl Default for LiveSettings {
    /// The parameters' defaults: no debug image, points on, stride 4, coloured.
    fn default() -> Self {
        LiveSettings::new(false, true, 4, true)
    }
}

/// The task heads whose topics the node offers.
#[derive(Debug, Clone, Default)]
pub struct PublishPlan {
    /// The heads loaded.
    pub heads: Vec<Task>,
    /// The calibration (camera_info and points need it).
    pub calibration: Option<CameraCalibration>,
    /// Frames reach the backbone undistorted (the rectified intrinsics apply).
    pub rectified: bool,
    /// `vision_info` contents: method and the class list's location.
    pub vision_method: String,
    /// Where the detection class names are (the head manifest).
    pub vision_database: String,
}

/// A CameraInfo from a calibration (header filled per frame).
pub fn camera_info(cal: &CameraCalibration) -> CameraInfo {
    CameraInfo {
        header: Header::default(),
        height: cal.image_height,
        width: cal.image_width,
        distortion_model: cal.distortion_model.as_str().to_string(),
        d: cal.d.clone(),
        k: cal.k,
        r: cal.r,
        p: cal.p,
        binning_x: 0,
        binning_y: 0,
        roi: RegionOfInterest::default(),
    }
}

fn header(frame: &Frame) -> Header {
    Header {
        stamp: Time::from(frame.stamp),
        frame_id: frame.frame_id.clone(),
    }
}

/// Detections as a vision_msgs array (class name as class_id, box centre and size in pixels).
pub fn detection_array(h: &Header, dets: &[Detection]) -> Detection2DArray {
    Detection2DArray {
        header: h.clone(),
        detections: dets
            .iter()
            .enumerate()
            .map(|(i, d)| Detection2D {
                header: h.clone(),
                results: vec![ObjectHypothesisWithPose {
                    hypothesis: ObjectHypothesis {
                        class_id: d.class_name.clone(),
                        score: f64::from(d.score),
                    },
                    pose: PoseWithCovariance::default(),
                }],
                bbox: BoundingBox2D {
                    center: Pose2D {
                        position: Point2D {
                            x: f64::from(d.x0 + d.x1) / 2.0,
                            y: f64::from(d.y0 + d.y1) / 2.0,
                        },
                        theta: 0.0,
                    },
                    size_x: f64::from(d.x1 - d.x0),
                    size_y: f64::from(d.y1 - d.y0),
                },
                id: i.to_string(),
            })
            .collect(),
    }
}

/// A point cloud as PointCloud2: x, y, z float32 (+ rgb packed in a float32, the PCL
/// convention RViz and Foxglove read), organised rows.
pub fn point_cloud2(h: &Header, cloud: &PointCloud) -> PointCloud2 {
    let mut fields = vec![
        PointField {
            name: "x".into(),
            offset: 0,
            datatype: POINT_FIELD_FLOAT32,
            count: 1,
        },
        PointField {
            name: "y".into(),
            offset: 4,
            datatype: POINT_FIELD_FLOAT32,
            count: 1,
        },
        PointField {
            name: "z".into(),
            offset: 8,
            datatype: POINT_FIELD_FLOAT32,
            count: 1,
        },
    ];
    if cloud.rgb.is_some() {
        fields.push(PointField {
            name: "rgb".into(),
            offset: 12,
            datatype: POINT_FIELD_FLOAT32,
            count: 1,
        });
    }
    let point_step = if cloud.rgb.is_some() { 16 } else { 12 };
    let mut data = Vec::with_capacity(cloud.points.len() * point_step);
    for (i, p) in cloud.points.iter().enumerate() {
        for v in p {
            data.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(rgb) = &cloud.rgb {
            let [r, g, b] = rgb[i];
            let packed = (u32::from(r) << 16) | (u32::from(g) << 8) | u32::from(b);
            data.extend_from_slice(&packed.to_le_bytes());
        }
    }
    PointCloud2 {
        header: h.clone(),
        height: cloud.height as u32,
        width: cloud.width as u32,
        fields,
        is_bigendian: false,
        point_step: point_step as u32,
        row_step: (point_step * cloud.width) as u32,
        data,
        is_dense: cloud.dense,
    }
}

/// Colour of class `id` on the debug image.
fn class_colour(id: usize) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [255, 64, 64],
        [64, 255, 64],
        [64, 128, 255],
        [255, 200, 0],
        [255, 0, 255],
        [0, 255, 255],
        [255, 128, 0],
        [255, 255, 255],
    ];
    PALETTE[id % PALETTE.len()]
}

/// The frame with each detection's box drawn (2-pixel outline in its class colour).
pub fn draw_detections(frame: &Frame, dets: &[Detection]) -> Vec<u8> {
    let (w, h) = (frame.width, frame.height);
    let mut rgb = frame.rgb.clone();
    if w == 0 || h == 0 {
        return rgb;
    }
    let clamp_x = |v: f32| (v.max(0.0) as usize).min(w - 1);
    let clamp_y = |v: f32| (v.max(0.0) as usize).min(h - 1);
    for d in dets {
        let c = class_colour(d.class_id);
        let (x0, x1) = (clamp_x(d.x0), clamp_x(d.x1 - 1.0));
        let (y0, y1) = (clamp_y(d.y0), clamp_y(d.y1 - 1.0));
        let mut put = |x: usize, y: usize| {
            let i = (y * w + x) * 3;
            rgb[i..i + 3].copy_from_slice(&c);
        };
        for t in 0..2 {
            for x in x0..=x1 {
                put(x, (y0 + t).min(h - 1));
                put(x, y1.saturating_sub(t));
            }
            for y in y0..=y1 {
                put((x0 + t).min(w - 1), y);
                put(x1.saturating_sub(t), y);
            }
        }
    }
    rgb
}

/// One message of any type the node sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// sensor_msgs/Image.
    Image(Image),
    /// sensor_msgs/CompressedImage.
    CompressedImage(CompressedImage),
    /// sensor_msgs/CameraInfo (boxed: ten times the size of the other variants).
    CameraInfo(Box<CameraInfo>),
    /// sensor_msgs/PointCloud2.
    PointCloud2(PointCloud2),
    /// vision_msgs/Detection2DArray.
    Detections(Detection2DArray),
    /// vision_msgs/Classification.
    Classification(Classification),
    /// vision_msgs/VisionInfo.
    VisionInfo(VisionInfo),
    /// std_msgs/Float32.
    Float32(Float32),
    /// diagnostic_msgs/DiagnosticArray.
    Diagnostics(DiagnosticArray),
}

/// A message type: the ROS type name and its schema name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageType {
    /// `package/msg/Type`, as rosbag2 and ROS 2 name it.
    pub ros_name: &'static str,
    /// `package/Type`, the key of its `.msg` definition.
    pub msg_name: &'static str,
}

macro_rules! message_types {
    ($($variant:ident => $t:ty),* $(,)?) => {
        impl Message {
            /// The message's type.
            pub fn message_type(&self) -> MessageType {
                match self {
                    $(Message::$variant(_) => type_of::<$t>(),)*
                }
            }

            /// Encapsulated little-endian CDR, as rosbag2 and Foxglove store it.
            pub fn encode(&self) -> Result<Vec<u8>, CdrError> {
                match self {
                    $(Message::$variant(m) => cdr::encode(m),)*
                }
            }
        }
    };
}

message_types! {
    Image => Image,
    CompressedImage => CompressedImage,
    CameraInfo => CameraInfo,
    PointCloud2 => PointCloud2,
    Detections => Detection2DArray,
    Classification => Classification,
    VisionInfo => VisionInfo,
    Float32 => Float32,
    Diagnostics => DiagnosticArray,
}

/// The type of message struct `T`.
pub fn type_of<T: RosMessage>() -> MessageType {
    MessageType {
        ros_name: T::ROS_NAME,
        msg_name: T::MSG_NAME,
    }
}

/// One message on its way out.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Topic name (relative names are the node's, before its namespace).
    pub topic: String,
    /// When it was made: the capture stamp of its frame, or the node clock for diagnostics.
    pub stamp: Stamp,
    /// The message.
    pub message: Message,
}

/// How the recorder and the live view write the input frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputImageFormat {
    /// sensor_msgs/Image rgb8, as captured.
    Raw,
    /// sensor_msgs/CompressedImage jpeg at this quality (1..=100).
    Jpeg(u8),
}

/// The input frame as a message on `topic`.
pub fn input_image(
    frame: &Frame,
    format: InputImageFormat,
    topic: &str,
) -> Result<Outgoing, String> {
    let h = header(frame);
    let message = match format {
        InputImageFormat::Raw => {
            Message::Image(Image::rgb8(h, frame.width, frame.height, frame.rgb.clone()))
        }
        InputImageFormat::Jpeg(quality) => {
            let mut data = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut data, quality)
                .encode(
                    &frame.rgb,
                    frame.width as u32,
                    frame.height as u32,
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(|e| format!("{topic}: cannot encode frame {} as JPEG: {e}", frame.seq))?;
            Message::CompressedImage(CompressedImage {
                header: h,
                format: "rgb8; jpeg compressed bgr8".into(),
                data,
            })
        }
    };
    Ok(Outgoing {
        topic: topic.to_string(),
        stamp: frame.stamp,
        message,
    })
}

/// Builds every output message of a frame, as the plan and the live switches say.
#[derive(Debug)]
pub struct OutputBuilder {
    heads: Vec<Task>,
    camera_info: Option<CameraInfo>,
    rays: Option<RayTable>,
    vision_info: Option<VisionInfo>,
    live: Arc<LiveSettings>,
}

impl OutputBuilder {
    /// A builder for what `plan` says is there.
    pub fn new(plan: &PublishPlan, live: Arc<LiveSettings>) -> Self {
        let has = |task: Task| plan.heads.contains(&task);
        OutputBuilder {
            heads: plan.heads.clone(),
            camera_info: plan.calibration.as_ref().map(camera_info),
            rays: match (&plan.calibration, has(Task::Depth)) {
                (Some(cal), true) => Some(RayTable::new(cal, plan.rectified)),
                _ => None,
            },
            vision_info: has(Task::Detection).then(|| VisionInfo {
                header: Header::default(),
                method: plan.vision_method.clone(),
                database_location: plan.vision_database.clone(),
                database_version: 0,
            }),
            live,
        }
    }

    /// Every topic this builder can produce, with its type (diagnostics not included), in a
    /// fixed order.
    pub fn offered(&self) -> Vec<(&'static str, MessageType)> {
        use topics::*;
        let mut out = Vec::new();
        for task in &self.heads {
            match task {
                Task::Detection => {
                    out.push((DETECTIONS, type_of::<Detection2DArray>()));
                    out.push((VISION_INFO, type_of::<VisionInfo>()));
                }
                Task::Segmentation => {
                    out.push((SEGMENTATION, type_of::<Image>()));
                    out.push((SEGMENTATION_COLOR, type_of::<Image>()));
                }
                Task::Depth => {
                    out.push((DEPTH, type_of::<Image>()));
                    if self.rays.is_some() {
                        out.push((POINTS, type_of::<PointCloud2>()));
                    }
                }
                Task::Classification => out.push((CLASSIFICATION, type_of::<Classification>())),
                Task::Anomaly => {
                    out.push((ANOMALY_SCORE, type_of::<Float32>()));
                    out.push((ANOMALY_MAP, type_of::<Image>()));
                }
                Task::Pca => out.push((PCA, type_of::<Image>())),
            }
        }
        if self.camera_info.is_some() {
            out.push((CAMERA_INFO, type_of::<CameraInfo>()));
        }
        out.push((DEBUG_IMAGE, type_of::<Image>()));
        out
    }

    /// The messages sent once and kept for late joiners (vision_info), stamped `now`.
    pub fn latched(&self, now: Stamp) -> Vec<Outgoing> {
        self.vision_info
            .iter()
            .map(|v| Outgoing {
                topic: topics::VISION_INFO.into(),
                stamp: now,
                message: Message::VisionInfo(v.clone()),
            })
            .collect()
    }

    /// Every output message of one frame, in a fixed order; a message that cannot be made is
    /// left out and described in the second list.
    pub fn frame_messages(&self, result: &FrameResult) -> (Vec<Outgoing>, Vec<String>) {
        use topics::*;
        let frame = &result.frame;
        let h = header(frame);
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut push = |topic: &str, message: Message| {
            out.push(Outgoing {
                topic: topic.to_string(),
                stamp: frame.stamp,
                message,
            })
        };
        if let Some(info) = &self.camera_info {
            let mut msg = info.clone();
            msg.header = h.clone();
            push(CAMERA_INFO, Message::CameraInfo(Box::new(msg)));
        }
        let debug = self.live.debug_image.load(Ordering::Relaxed);
        let mut drawn = false;
        for named in &result.heads {
            match &named.output {
                HeadOutput::Detections(dets) => {
                    if self.heads.contains(&Task::Detection) {
                        push(DETECTIONS, Message::Detections(detection_array(&h, dets)));
                    }
                    if debug {
                        let rgb = draw_detections(frame, dets);
                        let img = Image::rgb8(h.clone(), frame.width, frame.height, rgb);
                        push(DEBUG_IMAGE, Message::Image(img));
                        drawn = true;
                    }
                }
                HeadOutput::Segmentation(map) if self.heads.contains(&Task::Segmentation) => {
                    let (w, hh) = (map.width, map.height);
                    let ids = Image::mono8(h.clone(), w, hh, map.class_ids.clone());
                    push(SEGMENTATION, Message::Image(ids));
                    let colour = Image::rgb8(h.clone(), w, hh, map.color.clone());
                    push(SEGMENTATION_COLOR, Message::Image(colour));
                }
                HeadOutput::Depth(depth) if self.heads.contains(&Task::Depth) => {
                    let img = Image::from_f32(h.clone(), depth.width, depth.height, &depth.data);
                    push(DEPTH, Message::Image(img));
                    if let Some(rays) = &self.rays {
                        if self.live.points_enabled.load(Ordering::Relaxed) {
                            let stride = self.live.points_stride.load(Ordering::Relaxed).max(1);
                            let rgb = self
                                .live
                                .points_rgb
                                .load(Ordering::Relaxed)
                                .then_some(frame.rgb.as_slice());
                            match rays.back_project(&depth.data, stride, rgb) {
                                Ok(cloud) => {
                                    push(POINTS, Message::PointCloud2(point_cloud2(&h, &cloud)))
                                }
                                Err(e) => errors.push(format!("{POINTS}: {e}")),
                            }
                        }
                    }
                }
                HeadOutput::Classification(labels)
                    if self.heads.contains(&Task::Classification) =>
                {
                    let msg = Classification {
                        header: h.clone(),
                        results: labels
                            .iter()
                            .map(|l| ObjectHypothesis {
                                class_id: l.class_name.clone(),
                                score: f64::from(l.score),
                            })
                            .collect(),
                    };
                    push(CLASSIFICATION, Message::Classification(msg));
                }
                HeadOutput::Anomaly(a) if self.heads.contains(&Task::Anomaly) => {
                    push(ANOMALY_SCORE, Message::Float32(Float32 { data: a.score }));
                    let img = Image::from_f32(h.clone(), a.map.width, a.map.height, &a.map.data);
                    push(ANOMALY_MAP, Message::Image(img));
                }
                HeadOutput::Pca(img) if self.heads.contains(&Task::Pca) => {
                    let msg = Image::rgb8(h.clone(), img.width, img.height, img.data.clone());
                    push(PCA, Message::Image(msg));
                }
                _ => {}
            }
        }
        if !drawn && debug && !self.heads.contains(&Task::Detection) {
            // No detection head: the debug image is the frame as the backbone saw it.
            let img = Image::rgb8(h, frame.width, frame.height, frame.rgb.clone());
            push(DEBUG_IMAGE, Message::Image(img));
        }
        (out, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_head_has_its_own_topics() {
        let mut seen = std::collections::BTreeSet::new();
        for task in Task::ALL {
            let t = topics::of_head(task);
            assert!(!t.is_empty(), "{task:?}");
            for name in t {
                assert!(seen.insert(*name), "{name} listed twice");
            }
        }
    }

    #[test]
    fn every_offered_type_has_a_schema() {
        let plan = PublishPlan {
            heads: Task::ALL.to_vec(),
            calibration: Some(CameraCalibration::synthetic(64, 48)),
            ..PublishPlan::default()
        };
        let b = OutputBuilder::new(&plan, Arc::new(LiveSettings::default()));
        let offered = b.offered();
        assert!(offered.iter().any(|(t, _)| *t == topics::POINTS));
        for (_, ty) in offered.iter().chain([&("", type_of::<DiagnosticArray>())]) {
            assert!(
                crate::ros::definitions::schema(ty.msg_name).is_some(),
                "{ty:?}"
            );
            assert_eq!(ty.ros_name.replace("/msg/", "/"), ty.msg_name, "{ty:?}");
        }
    }

    #[test]
    fn detection_boxes_become_centre_and_size() {
        let d = Detection {
            class_id: 1,
            class_name: "cone".into(),
            score: 0.5,
            x0: 10.0,
            y0: 20.0,
            x1: 30.0,
            y1: 60.0,
        };
        let a = detection_array(&Header::default(), &[d]);
        let b = &a.detections[0].bbox;
        assert_eq!((b.center.position.x, b.center.position.y), (20.0, 40.0));
        assert_eq!((b.size_x, b.size_y), (20.0, 40.0));
        assert_eq!(a.detections[0].results[0].hypothesis.class_id, "cone");
        assert_eq!(a.detections[0].results[0].pose.pose.orientation.w, 1.0);
    }

    #[test]
    fn point_cloud_layout_packs_rgb() {
        let cloud = PointCloud {
            width: 2,
            height: 1,
            points: vec![[1.0, 2.0, 3.0], [f32::NAN, f32::NAN, f32::NAN]],
            rgb: Some(vec![[1, 2, 3], [0, 0, 0]]),
            dense: false,
        };
        let m = point_cloud2(&Header::default(), &cloud);
        assert_eq!((m.point_step, m.row_step, m.data.len()), (16, 32, 32));
        assert_eq!(&m.data[8..12], &3.0f32.to_le_bytes());
        assert_eq!(&m.data[12..16], &0x0001_0203u32.to_le_bytes());
        assert!(!m.is_dense);
    }
}
