//! `--source mcap:PATH`: a recording replayed (a rosbag2 directory or one `.mcap`).
//!
//! Frames come from one sensor_msgs/Image or CompressedImage topic — `replay.topic`, else the
//! node's own recorded input (`dinov3/input/image[/compressed]`), else the bag's only image
//! topic — with their recorded header stamps and frame_ids, paced at the recorded speed times
//! `replay.rate`, or (`replay.rate` 0) as fast as the pipeline takes them with no frame dropped
//! (the pipeline runs lossless: what `eval` and the determinism test use). The node clock of a
//! replay is the [`ReplayClock`]: the stamp of the frame last read, so everything stamped from
//! the clock is reproducible too.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ros_image::{decode_compressed, decode_image, DecodedImage};
use super::{FrameSource, SourceError, SourceStats};
use crate::bag::reader::{bag_files, topics, Messages, Topic};
use crate::bag::BagError;
use crate::frame::{Clock, Frame, Stamp};
use crate::ros::cdr;
use crate::ros::msg::{CompressedImage, Image, RosMessage};
use crate::sink::outputs::topics as node_topics;
use crate::telemetry::RateLimit;

/// The clock of a replay: the recorded stamp of the latest frame.
#[derive(Debug, Default)]
pub struct ReplayClock {
    now: AtomicU64,
}

impl ReplayClock {
    /// A clock at 0 until the first frame.
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&self, stamp: Stamp) {
        self.now.fetch_max(stamp.0, Ordering::Relaxed);
    }
}

impl Clock for ReplayClock {
    fn now(&self) -> Stamp {
        Stamp(self.now.load(Ordering::Relaxed))
    }
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct McapConfig {
    /// The bag directory or `.mcap` file.
    pub path: PathBuf,
    /// The image topic (`None`: chosen as the module docs say).
    pub topic: Option<String>,
    /// Speed relative to the recording; 0: as fast as the pipeline takes frames, none dropped.
    pub rate: f64,
    /// Replaces the messages' frame_id when set.
    pub frame_id: Option<String>,
    /// Advanced to each frame's stamp.
    pub clock: Arc<ReplayClock>,
}

/// The replay source.
pub struct McapSource {
    config: McapConfig,
    topic: Topic,
    messages: Option<Messages>,
    stats: SourceStats,
    seq: u64,
    start: Option<(Instant, u64)>,
    stop: Arc<AtomicBool>,
    warn: RateLimit,
}

impl std::fmt::Debug for McapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McapSource")
            .field("path", &self.config.path)
            .field("topic", &self.topic.name)
            .finish_non_exhaustive()
    }
}

fn is_image(t: &Topic) -> bool {
    t.ros_type == Image::ROS_NAME || t.ros_type == CompressedImage::ROS_NAME
}

/// The image topic to replay among `all` (see the module docs).
pub fn choose_topic(
    path: &std::path::Path,
    all: &[Topic],
    wanted: Option<&str>,
) -> Result<Topic, BagError> {
    let images: Vec<&Topic> = all.iter().filter(|t| is_image(t)).collect();
    let listed = || {
        images
            .iter()
            .map(|t| format!("{} ({})", t.name, t.ros_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(w) = wanted {
        let absolute = if w.starts_with('/') {
            w.to_string()
        } else {
            format!("/{w}")
        };
        let found = all.iter().find(|t| t.name == w || t.name == absolute);
        return match found {
            Some(t) if is_image(t) => Ok(t.clone()),
            Some(t) => Err(BagError::Topic {
                path: path.to_path_buf(),
                reason: format!("{} is a {}, not an image topic", t.name, t.ros_type),
                available: listed(),
            }),
            None => Err(BagError::Topic {
                path: path.to_path_buf(),
                reason: format!("there is no topic {w}"),
                available: listed(),
            }),
        };
    }
    let ours = images.iter().find(|t| {
        t.name.ends_with(node_topics::INPUT_IMAGE)
            || t.name.ends_with(node_topics::INPUT_IMAGE_COMPRESSED)
    });
    match (ours, images.as_slice()) {
        (Some(t), _) => Ok((*t).clone()),
        (None, [only]) => Ok((*only).clone()),
        (None, []) => Err(BagError::NoImageTopic {
            path: path.to_path_buf(),
            topics: all
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        (None, _) => Err(BagError::Topic {
            path: path.to_path_buf(),
            reason: "it has several image topics: choose one with replay.topic (--replay-topic)"
                .into(),
            available: listed(),
        }),
    }
}

/// A recorded image message (encapsulated CDR of `ros_type`: sensor_msgs/msg/CompressedImage,
/// else sensor_msgs/msg/Image) as replay decodes it: pixels, header stamp, frame_id.
pub fn decode_recorded(
    ros_type: &str,
    data: &[u8],
) -> Result<(DecodedImage, Stamp, String), String> {
    if ros_type == CompressedImage::ROS_NAME {
        let msg: CompressedImage = cdr::decode(data).map_err(|e| e.to_string())?;
        Ok((
            decode_compressed(&msg)?,
            Stamp::from(msg.header.stamp),
            msg.header.frame_id,
        ))
    } else {
        let msg: Image = cdr::decode(data).map_err(|e| e.to_string())?;
        Ok((
            decode_image(&msg)?,
            Stamp::from(msg.header.stamp),
            msg.header.frame_id,
        ))
    }
}

impl McapSource {
    /// Open the bag and choose the image topic (errors name the file and the fix).
    pub fn open(config: McapConfig, stop: Arc<AtomicBool>) -> Result<Self, SourceError> {
        if !(config.rate >= 0.0 && config.rate.is_finite()) {
            return Err(SourceError::BadParameter {
                name: "replay.rate",
                value: config.rate.to_string(),
                reason: "give a speed factor >= 0 (1 = as recorded, 0 = as fast as processed)"
                    .into(),
            });
        }
        let files = bag_files(&config.path)?;
        let all = topics(&files)?;
        let topic = choose_topic(&config.path, &all, config.topic.as_deref())?;
        Ok(McapSource {
            config,
            topic,
            messages: Some(Messages::new(files)),
            stats: SourceStats::default(),
            seq: 0,
            start: None,
            stop,
            warn: RateLimit::new(Duration::from_secs(5)),
        })
    }

    /// The topic replayed.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    fn decode(&self, data: &[u8]) -> Result<(DecodedImage, Stamp, String), String> {
        decode_recorded(&self.topic.ros_type, data)
    }

    /// Wait until `stamp` is due at the replay rate (the first frame is due at once).
    fn pace(&mut self, stamp: u64) {
        if self.config.rate <= 0.0 {
            return;
        }
        let (t0, s0) = *self.start.get_or_insert((Instant::now(), stamp));
        let due = Duration::from_secs_f64(stamp.saturating_sub(s0) as f64 / 1e9 / self.config.rate);
        loop {
            let elapsed = t0.elapsed();
            if elapsed >= due || self.stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep((due - elapsed).min(Duration::from_millis(50)));
        }
    }
}

impl FrameSource for McapSource {
    fn describe(&self) -> String {
        format!(
            "mcap:{} topic {} ({} messages, rate {})",
            self.config.path.display(),
            self.topic.name,
            self.topic.message_count,
            if self.config.rate > 0.0 {
                format!("x{}", self.config.rate)
            } else {
                "as fast as processed".into()
            }
        )
    }

    fn start(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                return Ok(None);
            };
            let Some(next) = messages.next() else {
                self.messages = None;
                return Ok(None);
            };
            let m = next?;
            if *m.topic != *self.topic.name {
                continue;
            }
            match self.decode(&m.data) {
                Ok((img, stamp, frame_id)) => {
                    self.pace(stamp.0);
                    self.config.clock.set(stamp);
                    self.seq += 1;
                    self.stats.frames += 1;
                    let frame_id = self.config.frame_id.clone().unwrap_or(frame_id);
                    return Ok(Some(img.into_frame(stamp, self.seq, frame_id)));
                }
                Err(e) => {
                    self.stats.skipped += 1;
                    if let Some(n) = self.warn.allow() {
                        log::warn!(
                            "{}: skipping message {} of {}: {e} ({n} more suppressed)",
                            self.config.path.display(),
                            m.sequence,
                            self.topic.name
                        );
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        self.messages = None;
    }

    fn stats(&self) -> SourceStats {
        self.stats.clone()
    }
}
