//! A recording made by the node read back as predicted frames (`eval --recording BAG`): each
//! frame's `dinov3/detections`, `dinov3/segmentation`, `dinov3/depth` and
//! `dinov3/anomaly/{score,map}` messages, keyed by their header stamp (which matches the ground
//! truth the recorder wrote beside the bag, `BAG/ground_truth/`).
//!
//! The recorder writes a frame's messages together, in a fixed order, so frames are assembled
//! as the bag is streamed: a message with a new stamp closes the frame before it. The anomaly
//! score (std_msgs/Float32, no header) belongs to the frame being assembled.

use std::path::{Path, PathBuf};

use super::error::EvalError;
use super::frame_prediction::FramePrediction;
use super::truth::FrameKey;
use crate::bag::reader::{bag_files, BagMessage, Messages};
use crate::bag::BagError;
use crate::frame::Stamp;
use crate::heads::Detection;
use crate::ros::cdr;
use crate::ros::msg::{Detection2DArray, Float32, Image};

/// The topics read, as the node names them (any namespace: matched by suffix).
const DETECTIONS: &str = "/dinov3/detections";
const SEGMENTATION: &str = "/dinov3/segmentation";
const DEPTH: &str = "/dinov3/depth";
const ANOMALY_SCORE: &str = "/dinov3/anomaly/score";
const ANOMALY_MAP: &str = "/dinov3/anomaly/map";

fn bag_error(e: BagError) -> EvalError {
    EvalError::Read {
        path: match &e {
            BagError::Io { path, .. } | BagError::Corrupt { path, .. } => path.clone(),
            _ => PathBuf::new(),
        },
        reason: e.to_string(),
    }
}

/// Predicted frames streamed from a bag.
pub struct RecordingFrames {
    bag: PathBuf,
    messages: Messages,
    current: Option<FramePrediction>,
    done: bool,
}

impl std::fmt::Debug for RecordingFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingFrames")
            .field("bag", &self.bag)
            .finish_non_exhaustive()
    }
}

impl RecordingFrames {
    /// Open the bag (a directory or one `.mcap`).
    pub fn open(bag: &Path) -> Result<Self, EvalError> {
        let files = bag_files(bag).map_err(bag_error)?;
        Ok(RecordingFrames {
            bag: bag.to_path_buf(),
            messages: Messages::new(files),
            current: None,
            done: false,
        })
    }

    /// Fold one message into the frame being assembled; a finished frame comes back.
    fn fold(&mut self, m: &BagMessage) -> Result<Option<FramePrediction>, EvalError> {
        let Some((stamp, payload)) = decode(&self.bag, m)? else {
            return Ok(None);
        };
        let Some(stamp) = stamp else {
            // The anomaly score: the frame being assembled.
            if let (Some(f), Payload::Score(s)) = (self.current.as_mut(), payload) {
                f.anomaly_score = Some(s);
            }
            return Ok(None);
        };
        let finished = match &self.current {
            Some(f) if f.key != FrameKey::Stamp(stamp) => self.current.take(),
            _ => None,
        };
        let frame = self.current.get_or_insert(FramePrediction {
            key: FrameKey::Stamp(stamp),
            width: 0,
            height: 0,
            detections: None,
            segmentation: None,
            depth: None,
            anomaly_score: None,
            anomaly_map: None,
        });
        match payload {
            Payload::Detections(d) => frame.detections = Some(d),
            Payload::Score(s) => frame.anomaly_score = Some(s),
            Payload::Segmentation(w, h, v) => {
                (frame.width, frame.height) = (w, h);
                frame.segmentation = Some(v);
            }
            Payload::Depth(w, h, v) => {
                (frame.width, frame.height) = (w, h);
                frame.depth = Some(v);
            }
            Payload::AnomalyMap(w, h, v) => {
                (frame.width, frame.height) = (w, h);
                frame.anomaly_map = Some(v);
            }
        }
        Ok(finished)
    }
}

/// What one message contributes to its frame.
enum Payload {
    Detections(Vec<Detection>),
    Segmentation(usize, usize, Vec<u8>),
    Depth(usize, usize, Vec<f32>),
    AnomalyMap(usize, usize, Vec<f32>),
    Score(f32),
}

/// The message's stamp (`None`: a headerless score) and contribution; `None` for a topic eval
/// does not read.
fn decode(bag: &Path, m: &BagMessage) -> Result<Option<(Option<Stamp>, Payload)>, EvalError> {
    let topic = &*m.topic;
    let is = |suffix: &str| topic.ends_with(suffix);
    let bad = |reason: String| EvalError::Format {
        path: bag.to_path_buf(),
        reason: format!("{topic} message {}: {reason}", m.sequence),
    };
    if is(ANOMALY_SCORE) {
        let s: Float32 = cdr::decode(&m.data).map_err(|e| bad(e.to_string()))?;
        return Ok(Some((None, Payload::Score(s.data))));
    }
    if is(DETECTIONS) {
        let d: Detection2DArray = cdr::decode(&m.data).map_err(|e| bad(e.to_string()))?;
        let dets = d.detections.iter().map(detection).collect();
        return Ok(Some((
            Some(Stamp::from(d.header.stamp)),
            Payload::Detections(dets),
        )));
    }
    if !(is(SEGMENTATION) || is(DEPTH) || is(ANOMALY_MAP)) {
        return Ok(None);
    }
    let img: Image = cdr::decode(&m.data).map_err(|e| bad(e.to_string()))?;
    let (w, h) = (img.width as usize, img.height as usize);
    let stamp = Some(Stamp::from(img.header.stamp));
    if is(SEGMENTATION) {
        if img.encoding != "mono8" || img.data.len() < w * h {
            return Err(bad(format!(
                "{} with {} bytes, not {w}x{h} mono8 class ids",
                img.encoding,
                img.data.len()
            )));
        }
        return Ok(Some((
            stamp,
            Payload::Segmentation(w, h, img.data[..w * h].to_vec()),
        )));
    }
    if img.encoding != "32FC1" || img.data.len() < w * h * 4 {
        return Err(bad(format!(
            "{} with {} bytes, not {w}x{h} 32FC1",
            img.encoding,
            img.data.len()
        )));
    }
    let values: Vec<f32> = img.data[..w * h * 4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Some((
        stamp,
        if is(DEPTH) {
            Payload::Depth(w, h, values)
        } else {
            Payload::AnomalyMap(w, h, values)
        },
    )))
}

/// A vision_msgs detection as a head detection (class by name; the box from centre and size).
fn detection(d: &crate::ros::msg::Detection2D) -> Detection {
    let (class_name, score) = d
        .results
        .first()
        .map(|r| (r.hypothesis.class_id.clone(), r.hypothesis.score as f32))
        .unwrap_or_default();
    let (cx, cy) = (d.bbox.center.position.x, d.bbox.center.position.y);
    let (w, h) = (d.bbox.size_x, d.bbox.size_y);
    Detection {
        class_id: 0,
        class_name,
        score,
        x0: (cx - w / 2.0) as f32,
        y0: (cy - h / 2.0) as f32,
        x1: (cx + w / 2.0) as f32,
        y1: (cy + h / 2.0) as f32,
    }
}

impl Iterator for RecordingFrames {
    type Item = Result<FramePrediction, EvalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let Some(next) = self.messages.next() else {
                self.done = true;
                return self.current.take().map(Ok);
            };
            let m = match next {
                Ok(m) => m,
                Err(e) => {
                    self.done = true;
                    return Some(Err(bag_error(e)));
                }
            };
            match self.fold(&m) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
