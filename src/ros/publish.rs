//! Publishing: every head output of a frame as its ROS message (one pipeline sink), camera_info,
//! the point cloud from depth, the optional debug image, and `/diagnostics` at the status rate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use ros2_client::Publisher;

use super::msg::*;
use super::node::{RosError, RosNode, TopicQos};
use crate::calibration::{CameraCalibration, PointCloud, RayTable};
use crate::frame::{Frame, Stamp};
use crate::heads::manifest::Task;
use crate::heads::{Detection, HeadOutput};
use crate::pipeline::{FrameResult, Sink, SinkError, Status, STAGES};

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

    use crate::heads::manifest::Task;

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

/// One pipeline sink that publishes every result of a frame.
pub struct RosSink {
    detections: Option<Publisher<Detection2DArray>>,
    segmentation: Option<(Publisher<Image>, Publisher<Image>)>,
    depth: Option<Publisher<Image>>,
    points: Option<(Publisher<PointCloud2>, RayTable)>,
    anomaly: Option<(Publisher<Float32>, Publisher<Image>)>,
    classification: Option<Publisher<Classification>>,
    pca: Option<Publisher<Image>>,
    camera_info: Option<(Publisher<CameraInfo>, CameraInfo)>,
    debug: Publisher<Image>,
    /// Kept alive: the latched message stays available to late joiners.
    _vision_info: Option<Publisher<VisionInfo>>,
    live: Arc<LiveSettings>,
}

impl std::fmt::Debug for RosSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RosSink").finish_non_exhaustive()
    }
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

impl RosSink {
    /// Create the publishers for what `plan` says is there.
    pub fn new(
        node: &mut RosNode,
        plan: &PublishPlan,
        live: Arc<LiveSettings>,
    ) -> Result<RosSink, RosError> {
        use topics::*;
        let has = |task: Task| plan.heads.contains(&task);
        let detections = if has(Task::Detection) {
            Some(node.publisher(DETECTIONS, None)?)
        } else {
            None
        };
        let vision_info = if has(Task::Detection) {
            let p: Publisher<VisionInfo> = node.publisher(VISION_INFO, Some(TopicQos::Latched))?;
            let msg = VisionInfo {
                header: Header::default(),
                method: plan.vision_method.clone(),
                database_location: plan.vision_database.clone(),
                database_version: 0,
            };
            if let Err(e) = p.publish(msg) {
                log::warn!("publishing {VISION_INFO}: {e:?}");
            }
            Some(p)
        } else {
            None
        };
        let segmentation = if has(Task::Segmentation) {
            Some((
                node.publisher(SEGMENTATION, None)?,
                node.publisher(SEGMENTATION_COLOR, None)?,
            ))
        } else {
            None
        };
        let depth = if has(Task::Depth) {
            Some(node.publisher(DEPTH, None)?)
        } else {
            None
        };
        let points = match (&plan.calibration, has(Task::Depth)) {
            (Some(cal), true) => Some((
                node.publisher(POINTS, None)?,
                RayTable::new(cal, plan.rectified),
            )),
            _ => None,
        };
        let anomaly = if has(Task::Anomaly) {
            Some((
                node.publisher(ANOMALY_SCORE, None)?,
                node.publisher(ANOMALY_MAP, None)?,
            ))
        } else {
            None
        };
        let classification = if has(Task::Classification) {
            Some(node.publisher(CLASSIFICATION, None)?)
        } else {
            None
        };
        let pca = if has(Task::Pca) {
            Some(node.publisher(PCA, None)?)
        } else {
            None
        };
        let camera_info = match &plan.calibration {
            Some(cal) => Some((node.publisher(CAMERA_INFO, None)?, camera_info(cal))),
            None => None,
        };
        let debug = node.publisher(DEBUG_IMAGE, None)?;
        Ok(RosSink {
            detections,
            segmentation,
            depth,
            points,
            anomaly,
            classification,
            pca,
            camera_info,
            debug,
            _vision_info: vision_info,
            live,
        })
    }
}

fn publish<M: serde::Serialize + std::fmt::Debug>(
    p: &Publisher<M>,
    topic: &str,
    msg: M,
    errors: &mut Vec<String>,
) {
    if let Err(e) = p.publish(msg) {
        errors.push(format!("{topic}: {e:?}"));
    }
}

impl Sink for RosSink {
    fn name(&self) -> String {
        "ros".into()
    }

    fn consume(&mut self, result: &FrameResult) -> Result<(), SinkError> {
        use topics::*;
        let frame = &result.frame;
        let h = header(frame);
        let mut errors = Vec::new();
        if let Some((p, info)) = &self.camera_info {
            let mut msg = info.clone();
            msg.header = h.clone();
            publish(p, CAMERA_INFO, msg, &mut errors);
        }
        let mut drawn = false;
        for out in &result.heads {
            match &out.output {
                HeadOutput::Detections(dets) => {
                    if let Some(p) = &self.detections {
                        publish(p, DETECTIONS, detection_array(&h, dets), &mut errors);
                    }
                    if self.live.debug_image.load(Ordering::Relaxed) {
                        let rgb = draw_detections(frame, dets);
                        let img =
                            Image::from_u8(h.clone(), frame.width, frame.height, "rgb8", 3, rgb);
                        publish(&self.debug, DEBUG_IMAGE, img, &mut errors);
                        drawn = true;
                    }
                }
                HeadOutput::Segmentation(map) => {
                    if let Some((ids, colour)) = &self.segmentation {
                        let m = Image::from_u8(
                            h.clone(),
                            map.width,
                            map.height,
                            "mono8",
                            1,
                            map.class_ids.clone(),
                        );
                        publish(ids, SEGMENTATION, m, &mut errors);
                        let c = Image::from_u8(
                            h.clone(),
                            map.width,
                            map.height,
                            "rgb8",
                            3,
                            map.color.clone(),
                        );
                        publish(colour, SEGMENTATION_COLOR, c, &mut errors);
                    }
                }
                HeadOutput::Depth(depth) => {
                    if let Some(p) = &self.depth {
                        let img =
                            Image::from_f32(h.clone(), depth.width, depth.height, &depth.data);
                        publish(p, DEPTH, img, &mut errors);
                    }
                    if let Some((p, rays)) = &self.points {
                        if self.live.points_enabled.load(Ordering::Relaxed) {
                            let stride = self.live.points_stride.load(Ordering::Relaxed).max(1);
                            let rgb = self
                                .live
                                .points_rgb
                                .load(Ordering::Relaxed)
                                .then_some(frame.rgb.as_slice());
                            match rays.back_project(&depth.data, stride, rgb) {
                                Ok(cloud) => {
                                    publish(p, POINTS, point_cloud2(&h, &cloud), &mut errors)
                                }
                                Err(e) => errors.push(format!("{POINTS}: {e}")),
                            }
                        }
                    }
                }
                HeadOutput::Classification(labels) => {
                    if let Some(p) = &self.classification {
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
                        publish(p, CLASSIFICATION, msg, &mut errors);
                    }
                }
                HeadOutput::Anomaly(a) => {
                    if let Some((score, map)) = &self.anomaly {
                        publish(score, ANOMALY_SCORE, Float32 { data: a.score }, &mut errors);
                        let img =
                            Image::from_f32(h.clone(), a.map.width, a.map.height, &a.map.data);
                        publish(map, ANOMALY_MAP, img, &mut errors);
                    }
                }
                HeadOutput::Pca(img) => {
                    if let Some(p) = &self.pca {
                        let msg = Image::from_u8(
                            h.clone(),
                            img.width,
                            img.height,
                            "rgb8",
                            3,
                            img.data.clone(),
                        );
                        publish(p, PCA, msg, &mut errors);
                    }
                }
            }
        }
        if !drawn && self.live.debug_image.load(Ordering::Relaxed) && self.detections.is_none() {
            // No detection head: the debug image is the frame as the backbone saw it.
            let img = Image::from_u8(h, frame.width, frame.height, "rgb8", 3, frame.rgb.clone());
            publish(&self.debug, DEBUG_IMAGE, img, &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SinkError {
                sink: "ros".into(),
                reason: errors.join("; "),
            })
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Key of the source's skipped-frame counter in the diagnostics (malformed image messages,
/// corrupt camera buffers).
pub const DIAG_SOURCE_SKIPPED: &str = "source_skipped";

/// `/diagnostics` publisher: one DiagnosticStatus per status interval.
pub struct DiagnosticsPublisher {
    publisher: Publisher<DiagnosticArray>,
    name: String,
    static_values: Vec<KeyValue>,
}

impl std::fmt::Debug for DiagnosticsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiagnosticsPublisher")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DiagnosticsPublisher {
    /// Publisher on `/diagnostics` (reliable, as diagnostic_updater publishes).
    pub fn new(
        node: &mut RosNode,
        static_values: BTreeMap<String, String>,
    ) -> Result<Self, RosError> {
        let name = format!("{}: pipeline", node.settings().node_name);
        Ok(DiagnosticsPublisher {
            publisher: node.publisher(topics::DIAGNOSTICS, Some(TopicQos::Reliable))?,
            name,
            static_values: static_values
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
        })
    }

    /// The message for one status snapshot.
    /// `node_counters` are the node's own counters (`/rosout` lines dropped, malformed
    /// parameter requests), added as they are.
    pub fn message(
        &self,
        status: &Status,
        now: Stamp,
        node_counters: &[(&str, u64)],
    ) -> DiagnosticArray {
        let sink_drops: u64 = status.sink_drops.values().sum();
        let mut values = vec![
            kv("fps", format!("{:.2}", status.fps)),
            kv("frames_captured", status.captured.to_string()),
            kv("frames_processed", status.processed.to_string()),
            kv("frames_dropped", status.dropped.to_string()),
            kv("sink_drops", sink_drops.to_string()),
            kv(DIAG_SOURCE_SKIPPED, status.source.skipped.to_string()),
            kv("source_reconnects", status.source.reconnects.to_string()),
        ];
        for stage in STAGES {
            if let Some(h) = status.timings.get(stage) {
                if h.count() > 0 {
                    values.push(kv(
                        &format!("latency_{stage}_p50_ms"),
                        format!("{:.2}", h.quantile_ms(0.5)),
                    ));
                    values.push(kv(
                        &format!("latency_{stage}_p99_ms"),
                        format!("{:.2}", h.quantile_ms(0.99)),
                    ));
                }
            }
        }
        values.extend(node_counters.iter().map(|(k, v)| kv(k, v.to_string())));
        values.extend(self.static_values.iter().cloned());
        let (level, message) = if status.processed == 0 {
            (diagnostic_level::WARN, "no frame processed yet".to_string())
        } else if status.fps <= 0.0 {
            (
                diagnostic_level::WARN,
                "no frame in the last interval".to_string(),
            )
        } else {
            (
                diagnostic_level::OK,
                format!("{:.1} fps, {} dropped", status.fps, status.dropped),
            )
        };
        DiagnosticArray {
            header: Header {
                stamp: Time::from(now),
                frame_id: String::new(),
            },
            status: vec![DiagnosticStatus {
                level,
                name: self.name.clone(),
                message,
                hardware_id: "dinov3_perception".into(),
                values,
            }],
        }
    }

    /// Publish one status snapshot.
    pub fn publish(&self, status: &Status, now: Stamp, node_counters: &[(&str, u64)]) {
        if let Err(e) = self
            .publisher
            .publish(self.message(status, now, node_counters))
        {
            log::warn!("publishing /diagnostics: {e:?}");
        }
    }
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
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
