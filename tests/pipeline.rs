//! The threaded pipeline: newest-wins drop policy, one backbone pass per processed frame, slow
//! sinks that do not stall others, clean shutdown on a stop request, source failures.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fixture;
use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::Backend;
use dinov3_perception::frame::{Clock, Frame, SystemClock};
use dinov3_perception::pipeline::{
    self, FrameResult, InferenceStage, PipelineOptions, PipelineReport, Sink, SinkError,
};
use dinov3_perception::preprocess::ResizeMode;
use dinov3_perception::source::{FrameSource, SourceError, SourceStats};
use dinov3_perception::BackboneModel;

/// Delivers copies of one 640x480 frame as fast as asked, optionally failing after `fail_after`.
struct FastSource {
    seq: u64,
    limit: Option<u64>,
    fail_after: Option<u64>,
    clock: Arc<dyn Clock>,
    stopped: Arc<AtomicBool>,
    pixels: Vec<u8>,
    delay: Duration,
}

impl FastSource {
    fn new(limit: Option<u64>) -> Self {
        Self {
            seq: 0,
            limit,
            fail_after: None,
            clock: Arc::new(SystemClock),
            stopped: Arc::new(AtomicBool::new(false)),
            pixels: (0..640 * 480 * 3).map(|i| (i % 251) as u8).collect(),
            delay: Duration::ZERO,
        }
    }
}

impl FrameSource for FastSource {
    fn describe(&self) -> String {
        "fast test source".into()
    }
    fn start(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.limit.is_some_and(|l| self.seq >= l) {
            return Ok(None);
        }
        if self.fail_after.is_some_and(|l| self.seq >= l) {
            return Err(SourceError::Io {
                path: "/dev/video9".into(),
                source: std::io::Error::other("device vanished"),
            });
        }
        std::thread::sleep(self.delay);
        let frame = Frame {
            width: 640,
            height: 480,
            rgb: self.pixels.clone(),
            stamp: self.clock.now(),
            seq: self.seq,
            frame_id: "camera".into(),
            ground_truth: None,
        };
        self.seq += 1;
        Ok(Some(frame))
    }
    fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
    fn stats(&self) -> SourceStats {
        SourceStats {
            frames: self.seq,
            ..SourceStats::default()
        }
    }
}

/// Counts results; optionally slow; records that it was closed and the sequence numbers seen.
struct TestSink {
    name: String,
    delay: Duration,
    seen: Arc<Mutex<Vec<u64>>>,
    closed: Arc<AtomicBool>,
}

impl Sink for TestSink {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn consume(&mut self, result: &FrameResult) -> Result<(), SinkError> {
        // Every result carries valid features.
        let f = result.features().map_err(|e| SinkError {
            sink: self.name.clone(),
            reason: e.to_string(),
        })?;
        assert_eq!(f.channels(), 64);
        std::thread::sleep(self.delay);
        self.seen.lock().unwrap().push(result.frame.seq);
        Ok(())
    }
    fn close(&mut self) -> Result<(), SinkError> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn test_sink(name: &str, delay: Duration) -> (TestSink, Arc<Mutex<Vec<u64>>>, Arc<AtomicBool>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(AtomicBool::new(false));
    (
        TestSink {
            name: name.into(),
            delay,
            seen: seen.clone(),
            closed: closed.clone(),
        },
        seen,
        closed,
    )
}

fn stage() -> InferenceStage {
    let model = BackboneModel::load(&fixture("tiny/dinov3_tiny.onnx")).unwrap();
    let size = model.fixed_input_size().unwrap();
    let prepared = TractBackend::new(1).prepare(&model, size).unwrap();
    InferenceStage::new(
        prepared.as_ref(),
        Arc::new(model.manifest.clone()),
        ResizeMode::Stretch,
    )
    .unwrap()
}

fn run(
    source: FastSource,
    sinks: Vec<Box<dyn Sink>>,
    options: PipelineOptions,
    stop: Arc<AtomicBool>,
) -> PipelineReport {
    let mut statuses = 0;
    pipeline::run(
        Box::new(source),
        stage(),
        sinks,
        &options,
        Arc::new(SystemClock),
        stop,
        &mut |_s| statuses += 1,
    )
    .expect("pipeline runs")
}

#[test]
fn newest_frame_wins_and_every_frame_is_accounted_for() {
    let (sink, seen, closed) = test_sink("counter", Duration::ZERO);
    let report = run(
        FastSource::new(Some(300)),
        vec![Box::new(sink)],
        PipelineOptions {
            status_interval: None,
            ..PipelineOptions::default()
        },
        Arc::new(AtomicBool::new(false)),
    );
    assert_eq!(report.captured, 300);
    // A frame is processed, replaced (dropped) or was still queued at the end of the stream
    // (the inference thread drains it, so nothing is left).
    assert_eq!(
        report.processed + report.dropped,
        report.captured,
        "{report:?}"
    );
    assert!(
        report.dropped > 0,
        "a source far faster than the model must cause drops: {report:?}"
    );
    assert_eq!(report.backbone_passes, report.processed);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, report.processed);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "frames stay in order");
    assert_eq!(
        *seen.last().unwrap(),
        299,
        "the newest frame is the last one processed"
    );
    assert!(closed.load(Ordering::SeqCst));
    assert!(report.timings.get("backbone").unwrap().count() == report.processed);
}

#[test]
fn a_slow_sink_does_not_stall_inference_or_other_sinks() {
    let (slow, slow_seen, slow_closed) = test_sink("slow", Duration::from_millis(30));
    let (fast, fast_seen, _) = test_sink("fast", Duration::ZERO);
    let mut source = FastSource::new(Some(80));
    source.delay = Duration::from_millis(2);
    let report = run(
        source,
        vec![Box::new(slow), Box::new(fast)],
        PipelineOptions {
            // Room for a scheduling hiccup of the fast sink's thread on a busy machine (it must
            // never drop); the slow one (30 ms per result, ~3 ms per frame) overflows it anyway.
            sink_capacity: 16,
            status_interval: None,
            ..PipelineOptions::default()
        },
        Arc::new(AtomicBool::new(false)),
    );
    let fast_n = fast_seen.lock().unwrap().len() as u64;
    let slow_n = slow_seen.lock().unwrap().len() as u64;
    assert_eq!(fast_n, report.processed, "{report:?}");
    assert_eq!(report.sink_drops["fast"], 0);
    assert!(report.sink_drops["slow"] > 0, "{report:?}");
    assert_eq!(slow_n + report.sink_drops["slow"], report.processed);
    assert!(
        report.processed >= 2 * slow_n,
        "inference ran ahead of the slow sink: {report:?}"
    );
    assert!(
        slow_closed.load(Ordering::SeqCst),
        "slow sink drained and closed"
    );
}

#[test]
fn stop_request_drains_and_closes_everything() {
    let (sink, seen, closed) = test_sink("s", Duration::ZERO);
    let source = FastSource::new(None);
    let source_stopped = source.stopped.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        let seen = seen.clone();
        std::thread::spawn(move || {
            while seen.lock().unwrap().len() < 5 {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let report = run(
        source,
        vec![Box::new(sink)],
        PipelineOptions::default(),
        stop,
    );
    stopper.join().unwrap();
    assert!(report.processed >= 5);
    assert!(source_stopped.load(Ordering::SeqCst), "source stopped");
    assert!(closed.load(Ordering::SeqCst), "sink closed");
    assert_eq!(
        seen.lock().unwrap().len() as u64,
        report.processed,
        "every processed result reached the sink"
    );
}

#[test]
fn max_frames_bounds_the_run_with_one_backbone_pass_each() {
    let (sink, seen, _) = test_sink("s", Duration::ZERO);
    let mut source = FastSource::new(None);
    source.delay = Duration::from_millis(5);
    let report = run(
        source,
        vec![Box::new(sink)],
        PipelineOptions {
            max_frames: Some(7),
            status_interval: None,
            ..PipelineOptions::default()
        },
        Arc::new(AtomicBool::new(false)),
    );
    assert_eq!(report.processed, 7);
    assert_eq!(report.backbone_passes, 7);
    assert_eq!(seen.lock().unwrap().len(), 7);
}

#[test]
fn a_failing_source_ends_the_run_with_its_error() {
    let mut source = FastSource::new(None);
    source.fail_after = Some(3);
    source.delay = Duration::from_millis(5);
    let report = run(
        source,
        vec![],
        PipelineOptions {
            status_interval: None,
            ..PipelineOptions::default()
        },
        Arc::new(AtomicBool::new(false)),
    );
    assert_eq!(report.captured, 3);
    assert!(
        report
            .source_error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("device vanished")),
        "{report:?}"
    );
}

#[test]
fn status_lines_report_fps_stages_and_drops() {
    let mut lines = Vec::new();
    let mut source = FastSource::new(Some(40));
    source.delay = Duration::from_millis(10);
    let counter = Arc::new(AtomicU64::new(0));
    let report = pipeline::run(
        Box::new(source),
        stage(),
        vec![],
        &PipelineOptions {
            status_interval: Some(Duration::from_millis(100)),
            ..PipelineOptions::default()
        },
        Arc::new(SystemClock),
        Arc::new(AtomicBool::new(false)),
        &mut |s| {
            counter.fetch_add(1, Ordering::Relaxed);
            lines.push(s.line());
        },
    )
    .unwrap();
    assert_eq!(report.processed + report.dropped, 40);
    assert!(!lines.is_empty());
    let line = &lines[lines.len() - 1];
    for needle in ["fps", "dropped", "backbone", "preprocess", "e2e"] {
        assert!(line.contains(needle), "{needle} missing in {line}");
    }
}
