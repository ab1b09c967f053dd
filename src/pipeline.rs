//! The threaded pipeline: capture -> (newest frame wins) -> inference -> bounded fan-out to sinks.
//!
//! ```text
//! capture thread --[capacity 1, newest wins]--> inference thread --+--[bounded]--> sink thread 1
//!                                                                  +--[bounded]--> sink thread 2
//! ```
//!
//! * A slow model never builds a backlog: the capture thread replaces a frame the inference thread
//!   has not taken yet, and counts the drop.
//! * A slow sink never stalls inference or the other sinks: each has its own bounded queue; when
//!   one is full the result is dropped for that sink only, counted and reported.
//! * Stopping (SIGINT/SIGTERM, `max_frames`, end of stream): the source is stopped, the frame
//!   still queued is processed, each sink drains its queue and is closed, then `run` returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use crate::backend::{BackendError, InputTensor, PreparedModel, Session};
use crate::features::{Features, FeaturesError};
use crate::frame::{Clock, Frame};
use crate::heads::{HeadInput, HeadSet};
use crate::model::Manifest;
use crate::preprocess::{PreprocessError, Preprocessor, ResizeMode};
use crate::result::{FrameResult, FrameTimings};
use crate::sink::Sink;
use crate::source::{FrameSource, SourceError, SourceStats};
use crate::telemetry::{RateLimit, StageTimings};

/// Stage names used in timings and the status line, in pipeline order.
pub const STAGES: &[&str] = &["capture", "queue", "preprocess", "backbone", "heads", "e2e"];

/// Errors that stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed to start or failed for good.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The backend could not make a session.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Preprocessing could not be set up.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// A pipeline thread panicked (a bug).
    #[error("pipeline thread {0} panicked")]
    Panicked(&'static str),
    /// The operating system would not start a pipeline thread (out of memory or threads).
    #[error("cannot start the {thread} thread: {error}; the system is out of threads or memory")]
    Spawn {
        /// Which thread.
        thread: &'static str,
        /// Why.
        error: std::io::Error,
    },
}

impl PipelineError {
    /// Whether this is the user's input to fix.
    pub fn is_bad_input(&self) -> bool {
        match self {
            PipelineError::Source(e) => e.is_bad_input(),
            PipelineError::Backend(e) => e.is_bad_input(),
            PipelineError::Preprocess(_) => true,
            PipelineError::Panicked(_) | PipelineError::Spawn { .. } => false,
        }
    }
}

/// Why one frame could not be processed (the pipeline goes on with the next).
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The frame could not be fitted to the model input.
    #[error("frame {seq}: {error}")]
    Preprocess {
        /// Frame sequence number.
        seq: u64,
        /// What failed.
        error: PreprocessError,
    },
    /// The backbone pass failed.
    #[error("frame {seq}: {error}")]
    Backbone {
        /// Frame sequence number.
        seq: u64,
        /// What failed.
        error: BackendError,
    },
    /// The backbone's outputs do not match its manifest.
    #[error("frame {seq}: {error}")]
    Features {
        /// Frame sequence number.
        seq: u64,
        /// What failed.
        error: FeaturesError,
    },
}

impl InferenceError {
    /// Whether the input (the image, or a model that disagrees with its manifest) is at fault
    /// rather than the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            InferenceError::Preprocess { .. } | InferenceError::Features { .. } => true,
            InferenceError::Backbone { error, .. } => error.is_bad_input(),
        }
    }
}

/// Preprocessing, one backbone pass per frame, then every enabled head on its features.
pub struct InferenceStage {
    session: Box<dyn Session>,
    preprocessor: Preprocessor,
    manifest: Arc<Manifest>,
    input: InputTensor,
    backbone_passes: Arc<AtomicU64>,
    heads: HeadSet,
}

impl InferenceStage {
    /// A stage running `prepared` with the manifest's normalisation.
    pub fn new(
        prepared: &dyn PreparedModel,
        manifest: Arc<Manifest>,
        resize: ResizeMode,
    ) -> Result<Self, PipelineError> {
        let size = prepared.input_size();
        Ok(Self {
            session: prepared.session()?,
            preprocessor: Preprocessor::new(&manifest, size, resize)?,
            manifest,
            input: InputTensor::zeros(size),
            backbone_passes: Arc::new(AtomicU64::new(0)),
            heads: HeadSet::new(),
        })
    }

    /// Run `heads` on every frame's features (replacing any heads set before).
    pub fn with_heads(mut self, heads: HeadSet) -> Self {
        self.heads = heads;
        self
    }

    /// The heads (their controls switch them on and off at run time).
    pub fn heads(&self) -> &HeadSet {
        &self.heads
    }

    /// Counter of backbone passes (one per processed frame, whatever the heads).
    pub fn backbone_passes(&self) -> Arc<AtomicU64> {
        self.backbone_passes.clone()
    }

    /// Process one frame outside a pipeline run (offline tools): the same preprocessing,
    /// backbone pass and heads as the node.
    pub fn run_frame(
        &mut self,
        frame: Frame,
        clock: &dyn Clock,
    ) -> Result<FrameResult, InferenceError> {
        self.process(frame, Duration::ZERO, clock)
    }

    fn process(
        &mut self,
        frame: Frame,
        queued: Duration,
        clock: &dyn Clock,
    ) -> Result<FrameResult, InferenceError> {
        let seq = frame.seq;
        let t0 = Instant::now();
        let letterbox = self
            .preprocessor
            .run_into(&frame.view(), &mut self.input)
            .map_err(|error| InferenceError::Preprocess { seq, error })?;
        let t1 = Instant::now();
        let outputs = self
            .session
            .run(&self.input)
            .map_err(|error| InferenceError::Backbone { seq, error })?;
        self.backbone_passes.fetch_add(1, Ordering::Relaxed);
        let t2 = Instant::now();
        let (heads, head_errors) = if self.heads.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let size = self.preprocessor.input_size();
            let features = Features::new(&outputs, &self.manifest, size)
                .map_err(|error| InferenceError::Features { seq, error })?;
            let input = HeadInput {
                features,
                letterbox: &letterbox,
            };
            self.heads.run(&input, t2)
        };
        let t3 = Instant::now();
        Ok(FrameResult {
            frame,
            input_size: self.preprocessor.input_size(),
            letterbox,
            outputs,
            manifest: self.manifest.clone(),
            heads,
            head_errors,
            timings: FrameTimings {
                queue: queued,
                preprocess: t1 - t0,
                backbone: t2 - t1,
                heads: t3 - t2,
            },
            ready: clock.now(),
        })
    }
}

/// Options of a pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Stop after this many processed frames.
    pub max_frames: Option<u64>,
    /// Queue capacity in front of each sink.
    pub sink_capacity: usize,
    /// How often to report status (`None`: never).
    pub status_interval: Option<Duration>,
    /// Offline processing (replaying a recording as fast as it goes): the capture thread waits
    /// for inference to take each frame and inference waits for each sink's queue, so no frame
    /// and no result is dropped. Live sources keep the newest-wins queues.
    pub lossless: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            max_frames: None,
            sink_capacity: 4,
            status_interval: Some(Duration::from_secs(1)),
            lossless: false,
        }
    }
}

/// A snapshot for the status line.
#[derive(Debug, Clone)]
pub struct Status {
    /// Seconds since start.
    pub elapsed: Duration,
    /// Processed frames per second over the last interval.
    pub fps: f64,
    /// Frames captured so far.
    pub captured: u64,
    /// Frames processed so far.
    pub processed: u64,
    /// Frames replaced in the queue before inference took them (newest wins).
    pub dropped: u64,
    /// Results dropped per sink because its queue was full.
    pub sink_drops: BTreeMap<String, u64>,
    /// Stage latencies over the last interval.
    pub timings: StageTimings,
    /// The source's counters so far (skipped corrupt frames, reconnects).
    pub source: SourceStats,
}

impl Status {
    /// One line: fps, p50/p99 per stage in ms, drops.
    pub fn line(&self) -> String {
        let sink_drops: u64 = self.sink_drops.values().sum();
        format!(
            "{:.1} fps | frames {} processed, {} dropped, {} sink drops | p50/p99 ms:{}",
            self.fps,
            self.processed,
            self.dropped,
            sink_drops,
            self.timings.summary(STAGES)
        )
    }
}

/// What happened in a run.
#[derive(Debug)]
pub struct PipelineReport {
    /// Wall time.
    pub elapsed: Duration,
    /// Frames the source delivered.
    pub captured: u64,
    /// Frames processed.
    pub processed: u64,
    /// Frames dropped by the newest-wins queue.
    pub dropped: u64,
    /// Frames that failed in inference.
    pub failed: u64,
    /// Backbone passes (equals `processed`).
    pub backbone_passes: u64,
    /// Results dropped per sink.
    pub sink_drops: BTreeMap<String, u64>,
    /// Results each sink consumed.
    pub sink_consumed: BTreeMap<String, u64>,
    /// Stage latencies over the whole run.
    pub timings: StageTimings,
    /// The source's counters.
    pub source: SourceStats,
    /// A source failure that ended the run early, if any.
    pub source_error: Option<SourceError>,
}

/// The sending half of a capacity-1 queue where the newest item wins.
#[derive(Debug, Clone)]
pub struct LatestSender<T> {
    tx: Sender<T>,
    /// The sender's own receiver, to evict a waiting item (it keeps the channel connected, so
    /// whether anyone else still receives is told by `receivers`).
    rx: Receiver<T>,
    /// Alive while any [`LatestReceiver`] is.
    receivers: Weak<()>,
    dropped: Arc<AtomicU64>,
}

/// The receiving half of a [`latest_wins`] queue. Once every clone is dropped, the sender's
/// `send` fails, so the producer learns that nobody takes its items any more.
#[derive(Debug, Clone)]
pub struct LatestReceiver<T> {
    rx: Receiver<T>,
    _alive: Arc<()>,
}

impl<T> LatestReceiver<T> {
    /// Wait up to `timeout` for an item.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// The waiting item, if any.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }
}

/// A capacity-1 queue whose sender replaces an item not yet taken (counting the drop).
pub fn latest_wins<T>() -> (LatestSender<T>, LatestReceiver<T>) {
    let (tx, rx) = bounded(1);
    let alive = Arc::new(());
    (
        LatestSender {
            tx,
            rx: rx.clone(),
            receivers: Arc::downgrade(&alive),
            dropped: Arc::new(AtomicU64::new(0)),
        },
        LatestReceiver { rx, _alive: alive },
    )
}

impl<T> LatestSender<T> {
    /// Offer `item`, replacing a waiting one. `Err(item)` if every receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        if self.receivers.strong_count() == 0 {
            return Err(item);
        }
        let mut item = item;
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    if self.rx.try_recv().is_ok() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    item = back;
                }
                Err(TrySendError::Disconnected(back)) => return Err(back),
            }
        }
    }

    /// Offer `item` and wait until there is room for it (nothing is replaced), or until `stop`
    /// is set or every receiver is gone (`Err(item)`).
    pub fn send_waiting(&self, item: T, stop: &AtomicBool) -> Result<(), T> {
        let mut item = item;
        loop {
            if self.receivers.strong_count() == 0 || stop.load(Ordering::SeqCst) {
                return Err(item);
            }
            match self.tx.send_timeout(item, Duration::from_millis(20)) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => item = back,
                Err(crossbeam_channel::SendTimeoutError::Disconnected(back)) => return Err(back),
            }
        }
    }

    /// Items replaced so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Shared drop counter.
    pub fn drop_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

struct Shared {
    timings: Mutex<StageTimings>,
    window: Mutex<StageTimings>,
    captured: AtomicU64,
    processed: AtomicU64,
    failed: AtomicU64,
    source: Mutex<SourceStats>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            timings: Mutex::new(StageTimings::default()),
            window: Mutex::new(StageTimings::default()),
            captured: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            source: Mutex::new(SourceStats::default()),
        }
    }

    fn record(&self, stage: &str, d: Duration) {
        if let Ok(mut t) = self.timings.lock() {
            t.record(stage, d);
        }
        if let Ok(mut t) = self.window.lock() {
            t.record(stage, d);
        }
    }
}

struct SinkLane {
    name: String,
    tx: Sender<Arc<FrameResult>>,
    drops: Arc<AtomicU64>,
}

/// The capture thread: frames from `source` into the newest-wins queue until the source ends
/// or fails, `stop` is set, or the inference side is gone (every receiver dropped). Stops the
/// source; returns its counters and the failure that ended it, if any.
fn capture(
    mut source: Box<dyn FrameSource>,
    frame_tx: &LatestSender<(Frame, Instant)>,
    shared: &Shared,
    stop: &AtomicBool,
    lossless: bool,
) -> (SourceStats, Option<SourceError>) {
    let mut error = None;
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        let next = source.next_frame();
        if let Ok(mut s) = shared.source.lock() {
            *s = source.stats();
        }
        match next {
            Ok(Some(frame)) => {
                shared.record("capture", t.elapsed());
                shared.captured.fetch_add(1, Ordering::Relaxed);
                log::trace!("captured frame {}", frame.seq);
                let item = (frame, Instant::now());
                let sent = if lossless {
                    frame_tx.send_waiting(item, stop)
                } else {
                    frame_tx.send(item)
                };
                if sent.is_err() {
                    log::debug!("inference is gone; capture stops");
                    break;
                }
            }
            Ok(None) => {
                log::info!("source {} ended", source.describe());
                break;
            }
            Err(e) => {
                // Returned in the report (the caller reports it), not logged here.
                error = Some(e);
                break;
            }
        }
    }
    source.stop();
    (source.stats(), error)
}

/// Run the pipeline until the source ends, `max_frames` are processed or `stop` is set.
/// `on_status` is called from the calling thread every `status_interval`.
pub fn run(
    mut source: Box<dyn FrameSource>,
    mut inference: InferenceStage,
    sinks: Vec<Box<dyn Sink>>,
    options: &PipelineOptions,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    on_status: &mut dyn FnMut(&Status),
) -> Result<PipelineReport, PipelineError> {
    source.start()?;
    log::info!("source {} started", source.describe());
    let started = Instant::now();
    let shared = Arc::new(Shared::new());
    let passes = inference.backbone_passes();
    let (frame_tx, frame_rx) = latest_wins::<(Frame, Instant)>();
    let dropped = frame_tx.drop_counter();

    // Sinks, each on its own thread behind a bounded queue.
    let mut lanes = Vec::new();
    let mut sink_threads = Vec::new();
    let consumed: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    for mut sink in sinks {
        let name = sink.name();
        let (tx, rx) = bounded::<Arc<FrameResult>>(options.sink_capacity.max(1));
        lanes.push(SinkLane {
            name: name.clone(),
            tx,
            drops: Arc::new(AtomicU64::new(0)),
        });
        let shared = shared.clone();
        let consumed = consumed.clone();
        let stage = format!("sink:{name}");
        let sink_clock = clock.clone();
        sink_threads.push(
            thread::Builder::new()
                .name(format!("sink-{name}"))
                .spawn(move || {
                    let mut limit = RateLimit::new(Duration::from_secs(5));
                    let mut count = 0u64;
                    let started = sink.start(sink_clock);
                    if let Err(e) = &started {
                        // The sink cannot work; its queue is still drained (and counted).
                        log::error!("{e}");
                    }
                    for result in rx {
                        let t = Instant::now();
                        if started.is_err() {
                            continue;
                        }
                        if let Err(e) = sink.consume(&result) {
                            if let Some(n) = limit.allow() {
                                log::error!(
                                    "{e} (result of frame {} lost; {n} more suppressed)",
                                    result.frame.seq
                                );
                            }
                        }
                        shared.record(&stage, t.elapsed());
                        count += 1;
                    }
                    if let Err(e) = sink.close() {
                        log::error!("{e}");
                    }
                    if let Ok(mut c) = consumed.lock() {
                        c.insert(name, count);
                    }
                })
                .map_err(|error| PipelineError::Spawn {
                    thread: "sink",
                    error,
                })?,
        );
    }
    let sink_drop_counters: Vec<(String, Arc<AtomicU64>)> = lanes
        .iter()
        .map(|l| (l.name.clone(), l.drops.clone()))
        .collect();

    // Capture thread.
    let lossless = options.lossless;
    let capture = {
        let shared = shared.clone();
        let stop = stop.clone();
        thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture(source, &frame_tx, &shared, &stop, lossless))
            .map_err(|error| PipelineError::Spawn {
                thread: "capture",
                error,
            })?
    };

    // Inference thread.
    let inference_thread = {
        let shared = shared.clone();
        let stop = stop.clone();
        let clock = clock.clone();
        let max_frames = options.max_frames;
        thread::Builder::new()
            .name("inference".into())
            .spawn(move || {
                let mut limit = RateLimit::new(Duration::from_secs(5));
                let mut limit_drop = RateLimit::new(Duration::from_secs(5));
                let mut limit_head = RateLimit::new(Duration::from_secs(5));
                loop {
                    let (frame, queued_at) = match frame_rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(item) => item,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    let stamp = frame.stamp;
                    match inference.process(frame, queued_at.elapsed(), clock.as_ref()) {
                        Ok(result) => {
                            shared.record("queue", result.timings.queue);
                            shared.record("preprocess", result.timings.preprocess);
                            shared.record("backbone", result.timings.backbone);
                            shared.record("heads", result.timings.heads);
                            shared.record("e2e", result.ready.since(stamp));
                            for (head, error) in &result.head_errors {
                                if let Some(n) = limit_head.allow() {
                                    log::warn!("head {head} failed on frame {}: {error} ({n} more suppressed)", result.frame.seq);
                                }
                            }
                            let result = Arc::new(result);
                            for lane in &lanes {
                                if lossless {
                                    // Blocks while the sink works through its queue; fails only
                                    // if the sink thread is gone.
                                    let _ = lane.tx.send(result.clone());
                                } else if let Err(TrySendError::Full(_)) = lane.tx.try_send(result.clone()) {
                                    lane.drops.fetch_add(1, Ordering::Relaxed);
                                    if let Some(n) = limit_drop.allow() {
                                        log::warn!("sink {} is behind; dropping results ({n} more suppressed)", lane.name);
                                    }
                                }
                            }
                            let n = shared.processed.fetch_add(1, Ordering::Relaxed) + 1;
                            if max_frames.is_some_and(|m| n >= m) {
                                stop.store(true, Ordering::SeqCst);
                                break;
                            }
                        }
                        Err(e) => {
                            shared.failed.fetch_add(1, Ordering::Relaxed);
                            if let Some(n) = limit.allow() {
                                log::error!("inference failed: {e} ({n} more suppressed)");
                            }
                        }
                    }
                }
                // Dropping `lanes` closes the sink queues; sinks drain and close.
            })
            .map_err(|error| PipelineError::Spawn {
                    thread: "inference",
                    error,
                })?
    };

    // Status reporting on the calling thread while the workers run.
    let mut last = Instant::now();
    let mut last_processed = 0u64;
    while !inference_thread.is_finished() {
        thread::sleep(Duration::from_millis(20));
        if let Some(interval) = options.status_interval {
            if last.elapsed() >= interval {
                let processed = shared.processed.load(Ordering::Relaxed);
                let window = shared
                    .window
                    .lock()
                    .map(|mut w| {
                        let snapshot = w.clone();
                        w.clear();
                        snapshot
                    })
                    .unwrap_or_default();
                let status = Status {
                    elapsed: started.elapsed(),
                    fps: (processed - last_processed) as f64 / last.elapsed().as_secs_f64(),
                    captured: shared.captured.load(Ordering::Relaxed),
                    processed,
                    dropped: dropped.load(Ordering::Relaxed),
                    sink_drops: sink_drop_counters
                        .iter()
                        .map(|(n, c)| (n.clone(), c.load(Ordering::Relaxed)))
                        .collect(),
                    timings: window,
                    source: shared.source.lock().map(|s| s.clone()).unwrap_or_default(),
                };
                on_status(&status);
                last = Instant::now();
                last_processed = processed;
            }
        }
    }
    // The inference thread ended (end of stream, max frames, stop, or capture gone): stop capture.
    stop.store(true, Ordering::SeqCst);
    inference_thread
        .join()
        .map_err(|_| PipelineError::Panicked("inference"))?;
    let (source_stats, source_error) = capture
        .join()
        .map_err(|_| PipelineError::Panicked("capture"))?;
    for t in sink_threads {
        t.join().map_err(|_| PipelineError::Panicked("sink"))?;
    }
    let timings = shared.timings.lock().map(|t| t.clone()).unwrap_or_default();
    let sink_consumed = consumed.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(PipelineReport {
        elapsed: started.elapsed(),
        captured: shared.captured.load(Ordering::Relaxed),
        processed: shared.processed.load(Ordering::Relaxed),
        dropped: dropped.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        backbone_passes: passes.load(Ordering::Relaxed),
        sink_drops: sink_drop_counters
            .iter()
            .map(|(n, c)| (n.clone(), c.load(Ordering::Relaxed)))
            .collect(),
        sink_consumed,
        timings,
        source: source_stats,
        source_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_wins_and_drops_are_counted() {
        let (tx, rx) = latest_wins::<u32>();
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        assert_eq!(rx.try_recv().unwrap(), 9);
        assert!(rx.try_recv().is_err());
        assert_eq!(tx.dropped(), 9);
    }

    #[test]
    fn sender_reports_gone_receiver() {
        let (tx, rx) = latest_wins::<u32>();
        let other = rx.clone();
        drop(rx);
        // One receiver is left: sends go through (replacing the waiting item).
        assert!(tx.send(1).is_ok());
        assert!(tx.send(2).is_ok());
        assert_eq!(tx.dropped(), 1);
        drop(other);
        // Every receiver is gone: the item comes back and nothing is counted as dropped.
        assert_eq!(tx.send(3), Err(3));
        assert_eq!(tx.dropped(), 1);
    }

    /// Endless 2x2 frames (up to a safety limit), counting how many were asked for.
    struct CountingSource {
        pulled: u64,
        stopped: bool,
    }

    impl FrameSource for CountingSource {
        fn describe(&self) -> String {
            "counting".into()
        }
        fn start(&mut self) -> Result<(), SourceError> {
            Ok(())
        }
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            if self.pulled >= 1000 {
                return Ok(None);
            }
            self.pulled += 1;
            Ok(Some(Frame {
                width: 2,
                height: 2,
                rgb: vec![0; 12],
                stamp: crate::frame::SystemClock.now(),
                seq: self.pulled,
                frame_id: "camera".into(),
                ground_truth: None,
            }))
        }
        fn stop(&mut self) {
            self.stopped = true;
        }
        fn stats(&self) -> SourceStats {
            SourceStats {
                frames: self.pulled,
                ..SourceStats::default()
            }
        }
    }

    #[test]
    fn capture_stops_when_inference_is_gone() {
        let (tx, rx) = latest_wins::<(Frame, Instant)>();
        drop(rx);
        let shared = Shared::new();
        // `stop` is never set: only the gone receiver can end the capture before the source's
        // safety limit.
        let stop = AtomicBool::new(false);
        let source = CountingSource {
            pulled: 0,
            stopped: false,
        };
        let (stats, error) = capture(Box::new(source), &tx, &shared, &stop, false);
        assert!(error.is_none());
        assert_eq!(
            stats.frames, 1,
            "capture went on pulling frames nobody takes"
        );
    }
}
