//! The recorder (`run --record DIR`, parameters `record.*`): every output topic, the input
//! frames and `/diagnostics` written to a rosbag2 MCAP directory ([`crate::bag`]), with the
//! synthetic scene's ground truth beside it (`DIR/ground_truth/`, the layout `eval` reads).
//!
//! ```text
//! sink thread: FrameResult -> messages -> CDR --[own bounded queue, bytes]--> writer thread
//! status callback: /diagnostics ------------------------------^               (BagWriter)
//! ```
//!
//! The writer thread closes a chunk at least every `record.flush_interval` seconds, so a kill
//! loses at most that much. When a write fails (disk full) recording stops: what was written
//! stays readable, the error is on `/diagnostics` (level ERROR) and in the log, and the node
//! keeps publishing. SIGINT/SIGTERM close the pipeline, which closes this sink: the bag is
//! finished (summaries, `metadata.yaml`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use super::outputs::{input_image, topics, InputImageFormat, Outgoing, OutputBuilder};
use super::{MessageTap, Sink, SinkError};
use crate::bag::metadata::QosProfile;
use crate::bag::writer::{BagOptions, BagWriter, TopicSpec};
use crate::bag::BagError;
use crate::frame::{Clock, GroundTruth};
use crate::result::FrameResult;
use crate::ros::definitions;
use crate::ros::node::NodeSettings;
use crate::truth_writer::TruthWriter;

/// Directory of the ground truth inside a bag directory.
pub const GROUND_TRUTH_DIR: &str = "ground_truth";

/// What to record and how, as the configuration resolved it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSettings {
    /// The bag directory (must not exist).
    pub dir: PathBuf,
    /// Topics to record, as the README lists them (relative or absolute); empty: all.
    pub topics: Vec<String>,
    /// How the input frames are written (`None`: not recorded).
    pub images: Option<InputImageFormat>,
    /// Compression, chunk size, splitting.
    pub bag: BagOptions,
    /// Bytes the queue in front of the writer holds at most; beyond, messages are dropped and
    /// counted.
    pub queue_bytes: u64,
    /// A chunk is closed at least this often.
    pub flush_interval: Duration,
}

/// Counters the status line and `/diagnostics` show.
#[derive(Debug, Default)]
pub struct RecordStats {
    /// Messages written.
    pub written: AtomicU64,
    /// Messages dropped because the queue was full (or after recording stopped).
    pub dropped: AtomicU64,
    /// Payload bytes written.
    pub bytes: AtomicU64,
    /// Why recording stopped early.
    pub error: Mutex<Option<String>>,
    failed: AtomicBool,
}

impl RecordStats {
    /// The error that stopped recording, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    fn fail(&self, message: String) {
        log::error!("{message}");
        self.failed.store(true, Ordering::Relaxed);
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(message);
        }
    }
}

enum Item {
    Message {
        topic: usize,
        log_time: u64,
        publish_time: u64,
        data: Vec<u8>,
    },
    Truth {
        stem: String,
        width: usize,
        height: usize,
        truth: Arc<GroundTruth>,
    },
}

impl Item {
    fn bytes(&self) -> u64 {
        match self {
            Item::Message { data, .. } => data.len() as u64,
            Item::Truth { width, height, .. } => (width * height * 5) as u64,
        }
    }
}

/// The queue shared by the sink and the `/diagnostics` tap.
struct Queue {
    tx: Mutex<Option<Sender<Item>>>,
    queued_bytes: Arc<AtomicU64>,
    capacity: u64,
    stats: Arc<RecordStats>,
}

impl Queue {
    fn push(&self, item: Item) {
        let n = item.bytes();
        let over = self.queued_bytes.load(Ordering::Relaxed) + n > self.capacity;
        if over || self.stats.failed.load(Ordering::Relaxed) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(guard) = self.tx.lock() else {
            return;
        };
        let Some(tx) = guard.as_ref() else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.queued_bytes.fetch_add(n, Ordering::Relaxed);
        if let Err(TrySendError::Full(i) | TrySendError::Disconnected(i)) = tx.try_send(item) {
            self.queued_bytes.fetch_sub(i.bytes(), Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Which bag topic index each node topic goes to.
#[derive(Debug, Clone)]
struct TopicTable {
    /// (node topic name, bag topic index).
    entries: Vec<(String, usize)>,
}

impl TopicTable {
    fn index(&self, topic: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, i)| *i)
    }
}

/// The recorder's pipeline sink.
pub struct RecordSink {
    builder: OutputBuilder,
    table: TopicTable,
    images: Option<(InputImageFormat, &'static str)>,
    queue: Arc<Queue>,
    clock: Option<Arc<dyn Clock>>,
    latched_sent: bool,
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
    stats: Arc<RecordStats>,
}

impl std::fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSink")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Hands `/diagnostics` to the recorder.
pub struct RecordTap {
    queue: Arc<Queue>,
    index: Option<usize>,
}

impl MessageTap for RecordTap {
    fn offer(&self, message: &Outgoing) {
        let Some(topic) = self.index else {
            return;
        };
        match message.message.encode() {
            Ok(data) => self.queue.push(Item::Message {
                topic,
                log_time: message.stamp.0,
                publish_time: message.stamp.0,
                data,
            }),
            Err(e) => log::warn!("recording {}: {e}", message.topic),
        }
    }
}

/// Every topic the recorder can write, node name and type, in a fixed order.
fn recordable(
    builder: &OutputBuilder,
    images: Option<InputImageFormat>,
) -> Vec<(&'static str, super::outputs::MessageType)> {
    use crate::ros::msg::{CompressedImage, DiagnosticArray, Image};
    let mut all = Vec::new();
    match images {
        Some(InputImageFormat::Raw) => {
            all.push((topics::INPUT_IMAGE, super::outputs::type_of::<Image>()))
        }
        Some(InputImageFormat::Jpeg(_)) => all.push((
            topics::INPUT_IMAGE_COMPRESSED,
            super::outputs::type_of::<CompressedImage>(),
        )),
        None => {}
    }
    all.extend(builder.offered());
    all.push((
        topics::DIAGNOSTICS,
        super::outputs::type_of::<DiagnosticArray>(),
    ));
    all
}

/// Errors starting the recorder.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bag could not be created.
    #[error(transparent)]
    Bag(#[from] BagError),
    /// `record.topics` names a topic the node does not publish.
    #[error("record.topics: {topic} is not a topic the node publishes with this configuration; it publishes: {available}")]
    UnknownTopic {
        /// The name given.
        topic: String,
        /// What can be recorded.
        available: String,
    },
    /// The writer thread could not start.
    #[error("cannot start the recorder thread: {0}")]
    Spawn(std::io::Error),
}

impl RecordError {
    /// Whether the user's input is at fault.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RecordError::Bag(e) => e.is_bad_input(),
            RecordError::UnknownTopic { .. } => true,
            RecordError::Spawn(_) => false,
        }
    }
}

/// Start recording: create the bag directory and the writer thread. `names` gives each topic
/// its absolute name and QoS, as the node publishes it.
pub fn start(
    settings: &RecordSettings,
    builder: OutputBuilder,
    names: &NodeSettings,
) -> Result<(RecordSink, RecordTap, Arc<RecordStats>), RecordError> {
    let all = recordable(&builder, settings.images);
    let absolute = |t: &str| names.resolve(&names.remapped(t));
    for wanted in &settings.topics {
        if !all
            .iter()
            .any(|(t, _)| t == wanted || absolute(t) == *wanted)
        {
            return Err(RecordError::UnknownTopic {
                topic: wanted.clone(),
                available: all
                    .iter()
                    .map(|(t, _)| absolute(t))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut specs = Vec::new();
    let mut entries = Vec::new();
    for (topic, ty) in &all {
        let selected = settings.topics.is_empty()
            || settings
                .topics
                .iter()
                .any(|w| w == topic || *w == absolute(topic));
        if !selected {
            continue;
        }
        let definition = definitions::schema(ty.msg_name)
            .ok_or_else(|| BagError::Internal(format!("no .msg definition of {}", ty.msg_name)))?;
        let qos = names.qos_for(topic, topics::fixed_qos(topic));
        entries.push((topic.to_string(), specs.len()));
        specs.push(TopicSpec {
            name: absolute(topic),
            ros_type: ty.ros_name.to_string(),
            definition,
            qos: vec![QosProfile::of(qos)],
        });
    }
    let table = TopicTable { entries };
    let writer = BagWriter::create(&settings.dir, specs, settings.bag.clone())?;
    let stats = Arc::new(RecordStats::default());
    // A message count bound as well as the byte bound: small messages cannot pile up either.
    let (tx, rx) = bounded(4096);
    let queue = Arc::new(Queue {
        tx: Mutex::new(Some(tx)),
        queued_bytes: Arc::new(AtomicU64::new(0)),
        capacity: settings.queue_bytes.max(1),
        stats: stats.clone(),
    });
    let writer = {
        let stats = stats.clone();
        let queued = queue.queued_bytes.clone();
        let flush = settings.flush_interval;
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || write_loop(writer, rx, queued, stats, flush))
            .map_err(RecordError::Spawn)?
    };
    let images = settings.images.map(|f| {
        let topic = match f {
            InputImageFormat::Raw => topics::INPUT_IMAGE,
            InputImageFormat::Jpeg(_) => topics::INPUT_IMAGE_COMPRESSED,
        };
        (f, topic)
    });
    let tap = RecordTap {
        queue: queue.clone(),
        index: table.index(topics::DIAGNOSTICS),
    };
    let sink = RecordSink {
        builder,
        table,
        images,
        queue,
        clock: None,
        latched_sent: false,
        writer: Some(writer),
        dir: settings.dir.clone(),
        stats: stats.clone(),
    };
    Ok((sink, tap, stats))
}

/// The writer thread: messages to the bag, ground truth to files, a chunk closed every
/// `flush`; on the first failure recording stops (the queue is drained and counted).
fn write_loop(
    mut bag: BagWriter,
    rx: Receiver<Item>,
    queued: Arc<AtomicU64>,
    stats: Arc<RecordStats>,
    flush: Duration,
) {
    let dir = bag.dir().to_path_buf();
    let mut truth: Option<TruthWriter> = None;
    let mut last_flush = Instant::now();
    let mut failed = false;
    loop {
        let item = match rx.recv_timeout(flush) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Some(item) = item {
            queued.fetch_sub(item.bytes(), Ordering::Relaxed);
            if failed {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match item {
                Item::Message {
                    topic,
                    log_time,
                    publish_time,
                    data,
                } => match bag.write(topic, log_time, publish_time, &data) {
                    Ok(()) => {
                        stats.written.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed = true;
                        stats.fail(format!("recording stopped: {e}"));
                    }
                },
                Item::Truth {
                    stem,
                    width,
                    height,
                    truth: gt,
                } => {
                    if let Err(e) = write_truth(&mut truth, &dir, &stem, width, height, &gt) {
                        failed = true;
                        stats.fail(format!("recording stopped: {e}"));
                    }
                }
            }
        }
        if !failed && last_flush.elapsed() >= flush {
            last_flush = Instant::now();
            if let Err(e) = bag.flush() {
                failed = true;
                stats.fail(format!("recording stopped: {e}"));
            }
            if let Some(t) = &truth {
                if let Err(e) = t.write_index() {
                    failed = true;
                    stats.fail(format!("recording stopped: {e}"));
                }
            }
        }
    }
    if failed {
        // What was written stays readable up to the last complete chunk; the summary and
        // metadata.yaml need the space that ran out.
        log::error!(
            "bag {} is incomplete: free space, then run `dinov3_perception reindex {}`",
            dir.display(),
            dir.display()
        );
        return;
    }
    if let Some(t) = &truth {
        if let Err(e) = t.write_index() {
            stats.fail(format!("recording: {e}"));
        }
    }
    match bag.finish() {
        Ok(info) => log::info!(
            "bag {} finished: {} messages in {} file(s), {:.1} s",
            dir.display(),
            info.message_count,
            info.relative_file_paths.len(),
            info.duration.nanoseconds as f64 / 1e9
        ),
        Err(e) => stats.fail(format!("finishing the bag: {e}")),
    }
}

fn write_truth(
    truth: &mut Option<TruthWriter>,
    dir: &Path,
    stem: &str,
    width: usize,
    height: usize,
    gt: &GroundTruth,
) -> Result<(), crate::truth_writer::TruthWriteError> {
    let writer = match truth {
        Some(w) => w,
        None => truth.insert(TruthWriter::create(
            &dir.join(GROUND_TRUTH_DIR),
            &gt.class_names,
        )?),
    };
    writer.add(stem, width, height, gt)
}

impl RecordSink {
    fn offer(&self, m: &Outgoing, now: u64) -> Result<(), String> {
        let Some(topic) = self.table.index(&m.topic) else {
            return Ok(());
        };
        let data = m
            .message
            .encode()
            .map_err(|e| format!("{}: {e}", m.topic))?;
        self.queue.push(Item::Message {
            topic,
            log_time: now,
            publish_time: m.stamp.0,
            data,
        });
        Ok(())
    }
}

impl Sink for RecordSink {
    fn name(&self) -> String {
        "record".into()
    }

    fn start(&mut self, clock: Arc<dyn Clock>) -> Result<(), SinkError> {
        self.clock = Some(clock);
        Ok(())
    }

    fn consume(&mut self, result: &FrameResult) -> Result<(), SinkError> {
        let now = self.clock.as_ref().map_or(result.ready.0, |c| c.now().0);
        let frame = &result.frame;
        let mut errors = Vec::new();
        if !self.latched_sent {
            // Latched messages go in with the first frame: a replay's clock starts there.
            self.latched_sent = true;
            for m in self.builder.latched(frame.stamp) {
                if let Err(e) = self.offer(&m, now) {
                    errors.push(e);
                }
            }
        }
        if let Some((format, topic)) = self.images {
            match input_image(frame, format, topic) {
                Ok(m) => {
                    if let Err(e) = self.offer(&m, now) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let (messages, built) = self.builder.frame_messages(result);
        errors.extend(built);
        for m in &messages {
            if let Err(e) = self.offer(m, now) {
                errors.push(e);
            }
        }
        if let Some(gt) = &frame.ground_truth {
            self.queue.push(Item::Truth {
                stem: frame.stamp.0.to_string(),
                width: frame.width,
                height: frame.height,
                truth: gt.clone(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SinkError {
                sink: "record".into(),
                reason: errors.join("; "),
            })
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        // Closing the queue ends the writer thread, which finishes the bag.
        if let Ok(mut tx) = self.queue.tx.lock() {
            tx.take();
        }
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                return Err(SinkError {
                    sink: "record".into(),
                    reason: "the writer thread panicked".into(),
                });
            }
        }
        let s = &self.stats;
        log::info!(
            "recorded {} messages ({:.1} MB) to {}, {} dropped",
            s.written.load(Ordering::Relaxed),
            s.bytes.load(Ordering::Relaxed) as f64 / 1e6,
            self.dir.display(),
            s.dropped.load(Ordering::Relaxed)
        );
        match s.error() {
            Some(e) => Err(SinkError {
                sink: "record".into(),
                reason: e,
            }),
            None => Ok(()),
        }
    }
}
