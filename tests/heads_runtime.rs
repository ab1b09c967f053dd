//! Heads in the pipeline: one backbone pass per frame whatever the number of heads; heads
//! switched on and off and rate-limited at run time without reloading anything.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fixture;
use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::Backend;
use dinov3_perception::frame::{Clock, SystemClock};
use dinov3_perception::heads::pca::PcaHead;
use dinov3_perception::heads::{HeadError, HeadInput, HeadOutput, HeadSet, Task, TaskHead};
use dinov3_perception::pipeline::{self, InferenceStage, PipelineOptions};
use dinov3_perception::preprocess::ResizeMode;
use dinov3_perception::result::FrameResult;
use dinov3_perception::sink::{Sink, SinkError};
use dinov3_perception::source::synthetic::{SyntheticConfig, SyntheticSource};
use dinov3_perception::BackboneModel;

/// Counts its runs and returns the mean of the CLS token as a one-label classification.
struct CountingHead {
    name: String,
    runs: Arc<AtomicU64>,
}

impl TaskHead for CountingHead {
    fn name(&self) -> &str {
        &self.name
    }
    fn task(&self) -> Task {
        Task::Classification
    }
    fn run(&mut self, input: &HeadInput) -> Result<HeadOutput, HeadError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let cls = input.features.cls();
        let mean = cls.iter().sum::<f32>() / cls.len() as f32;
        Ok(HeadOutput::Classification(vec![
            dinov3_perception::heads::ClassScore {
                class_id: 0,
                class_name: "mean".into(),
                score: mean,
            },
        ]))
    }
}

/// Records which heads ran on each frame.
struct Recorder(Arc<Mutex<Vec<Vec<String>>>>);

impl Sink for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    fn consume(&mut self, r: &FrameResult) -> Result<(), SinkError> {
        let names = r.heads.iter().map(|h| h.head.clone()).collect();
        self.0.lock().unwrap().push(names);
        Ok(())
    }
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn stage_with(heads: HeadSet) -> InferenceStage {
    let model = BackboneModel::load(&fixture("tiny/dinov3_tiny.onnx")).unwrap();
    let size = model.resolve_size(None).unwrap();
    let prepared = TractBackend::new(1).prepare(&model, size).unwrap();
    InferenceStage::new(
        prepared.as_ref(),
        Arc::new(model.manifest.clone()),
        ResizeMode::Stretch,
    )
    .unwrap()
    .with_heads(heads)
}

fn counting(set: &mut HeadSet, name: &str) -> Arc<AtomicU64> {
    let runs = Arc::new(AtomicU64::new(0));
    set.add(Box::new(CountingHead {
        name: name.into(),
        runs: runs.clone(),
    }))
    .unwrap();
    runs
}

/// An endless synthetic stream, as fast as asked (the pipeline's `max_frames` ends the run; the
/// newest-wins queue drops frames the inference thread has no time for).
fn synthetic() -> Box<SyntheticSource> {
    let config = SyntheticConfig {
        width: 160,
        height: 120,
        fps: 0.0,
        ..SyntheticConfig::default()
    };
    Box::new(SyntheticSource::with_system_clock(config).unwrap())
}

#[test]
fn one_backbone_pass_per_frame_whatever_the_number_of_heads() {
    for n_heads in [0usize, 1, 6] {
        let mut set = HeadSet::new();
        let runs: Vec<_> = (0..n_heads)
            .map(|i| counting(&mut set, &format!("head{i}")))
            .collect();
        let stage = stage_with(set);
        let passes = stage.backbone_passes();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let report = pipeline::run(
            synthetic(),
            stage,
            vec![Box::new(Recorder(seen.clone()))],
            &PipelineOptions {
                max_frames: Some(12),
                status_interval: None,
                ..PipelineOptions::default()
            },
            clock,
            Arc::new(AtomicBool::new(false)),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(report.processed, 12);
        assert_eq!(passes.load(Ordering::SeqCst), 12, "{n_heads} heads");
        for r in &runs {
            assert_eq!(
                r.load(Ordering::SeqCst),
                12,
                "each head runs once per frame"
            );
        }
        let seen = seen.lock().unwrap();
        assert!(seen.iter().all(|names| names.len() == n_heads));
    }
}

#[test]
fn heads_switch_and_rate_limit_at_run_time() {
    let mut set = HeadSet::new();
    let fast = counting(&mut set, "fast");
    let slow = counting(&mut set, "slow");
    let off = counting(&mut set, "off");
    let slow_control = set.control("slow").unwrap();
    let off_control = set.control("off").unwrap();
    slow_control.set_rate_hz(1e-3).unwrap();
    off_control.set_enabled(false);
    assert!(slow_control.set_rate_hz(-1.0).is_err());
    assert!(slow_control.set_rate_hz(f64::NAN).is_err());
    let mut stage = stage_with(set);
    let clock = SystemClock;
    let frame = |seq| dinov3_perception::frame::Frame {
        width: 96,
        height: 64,
        rgb: vec![(seq * 10) as u8; 96 * 64 * 3],
        stamp: clock.now(),
        seq,
        frame_id: "camera".into(),
        ground_truth: None,
    };
    for seq in 0..5 {
        let r = stage.run_frame(frame(seq), &clock).unwrap();
        let names: Vec<_> = r.heads.iter().map(|h| h.head.as_str()).collect();
        let expected: &[&str] = if seq == 0 {
            &["fast", "slow"]
        } else {
            &["fast"]
        };
        assert_eq!(names, expected, "frame {seq}");
    }
    // Switch on, lift the rate limit: both run from the next frame, nothing reloaded.
    off_control.set_enabled(true);
    slow_control.set_rate_hz(0.0).unwrap();
    let r = stage.run_frame(frame(5), &clock).unwrap();
    let names: Vec<_> = r.heads.iter().map(|h| h.head.as_str()).collect();
    assert_eq!(names, ["fast", "slow", "off"]);
    assert_eq!(fast.load(Ordering::SeqCst), 6);
    assert_eq!(slow.load(Ordering::SeqCst), 2);
    assert_eq!(off.load(Ordering::SeqCst), 1);
    assert_eq!(stage.backbone_passes().load(Ordering::SeqCst), 6);
    // A rate limit lets a head run again once its period has passed. The heads run on
    // injected instants (`HeadSet::run` takes the frame's time), so the schedule is exact.
    let mut set = HeadSet::new();
    let every = counting(&mut set, "every");
    let limited = counting(&mut set, "limited");
    let limited_control = set.control("limited").unwrap();
    limited_control.set_rate_hz(50.0).unwrap(); // a 20 ms period
    let result = stage_with(HeadSet::new())
        .run_frame(frame(100), &clock)
        .unwrap();
    let input = HeadInput {
        features: result.features().unwrap(),
        letterbox: &result.letterbox,
    };
    let t0 = Instant::now();
    let mut run_at = |ms: u64| {
        let (outputs, errors) = set.run(&input, t0 + Duration::from_millis(ms));
        assert!(errors.is_empty(), "{errors:?}");
        outputs.iter().any(|o| o.head == "limited")
    };
    // Frames every 5 ms for 200 ms: the 50 Hz head runs on every 4th, from the first.
    let ran: Vec<u64> = (0..=200).step_by(5).filter(|&ms| run_at(ms)).collect();
    assert_eq!(ran, (0..=200).step_by(20).collect::<Vec<u64>>());
    assert_eq!(
        every.load(Ordering::SeqCst),
        41,
        "the unlimited head ran on every frame"
    );
    assert_eq!(limited.load(Ordering::SeqCst), 11);
    // Irregular frames: due once 20 ms have passed since its last run, not since the last frame.
    let ran: Vec<u64> = [219, 220, 239, 241, 260, 261, 1000]
        .into_iter()
        .filter(|&ms| run_at(ms))
        .collect();
    assert_eq!(ran, [220, 241, 261, 1000]);
    // Lifting the limit: every frame again.
    limited_control.set_rate_hz(0.0).unwrap();
    assert!((1001..=1003).all(&mut run_at));
}

#[test]
fn pca_head_gives_a_camera_sized_colour_image() {
    let mut set = HeadSet::new();
    set.add(Box::new(PcaHead::fitting("pca", 3, 16))).unwrap();
    let mut stage = stage_with(set);
    let clock = SystemClock;
    let (rgb, _) = dinov3_perception::synthetic::render(
        &SyntheticConfig {
            width: 200,
            height: 150,
            ..SyntheticConfig::default()
        },
        &dinov3_perception::synthetic::SyntheticCamera::for_image(200, 150),
        0,
    )
    .unwrap();
    let frame = dinov3_perception::frame::Frame {
        width: 200,
        height: 150,
        rgb,
        stamp: clock.now(),
        seq: 0,
        frame_id: "camera".into(),
        ground_truth: None,
    };
    let r = stage.run_frame(frame, &clock).unwrap();
    match &r.heads[0].output {
        HeadOutput::Pca(img) => {
            assert_eq!(
                (img.width, img.height, img.data.len()),
                (200, 150, 200 * 150 * 3)
            );
            let distinct: std::collections::BTreeSet<_> = img.data.chunks(3).collect();
            assert!(distinct.len() > 10, "the PCA image is nearly flat");
        }
        other => panic!("expected a PCA image, got {other:?}"),
    }
}
