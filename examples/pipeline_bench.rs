//! Pipeline benchmark (issue #3): 640x480 synthetic frames through the threaded pipeline
//! compared with the backbone alone on the same model, and latency under overload.
//!
//! `cargo run --release --example pipeline_bench -- [MODEL.onnx] [THREADS] [FRAMES]`
//! (defaults: the bundled tiny model, all cores, 60 frames). Prints a Markdown table:
//! 1. backbone alone: ms per pass on a preprocessed frame (`Session::run` in a loop);
//! 2. pipeline fed by a camera-like replay source (pre-rendered 640x480 synthetic frames, paced
//!    like a camera, so producing pixels costs no CPU, as with a real camera's DMA) offering
//!    frames at twice the backbone's rate: throughput, per-frame time as a ratio of (1),
//!    end-to-end latency p50/p99 (capture stamp -> results ready) and the share of frames
//!    dropped (newest wins). This is both the throughput and the 2x-overload measurement;
//! 3. the same offered at half the measured throughput (no queueing expected);
//! 4. the live synthetic source (rendering on the capture thread, competing for the cores)
//!    at 2x, for honesty about what the default demo costs.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::{Backend, PreparedModel};
use dinov3_perception::config::share::bundled_model;
use dinov3_perception::frame::{Clock, Frame, SystemClock};
use dinov3_perception::pipeline::{self, InferenceStage, PipelineOptions, PipelineReport};
use dinov3_perception::preprocess::{Preprocessor, ResizeMode};
use dinov3_perception::source::synthetic::{SyntheticConfig, SyntheticSource};
use dinov3_perception::source::{FrameSource, SourceError, SourceStats};
use dinov3_perception::synthetic::{SyntheticCamera, SyntheticScene};
use dinov3_perception::{BackboneModel, Manifest};

/// Replays pre-rendered frames at a fixed rate, like a camera (no CPU spent making pixels).
struct ReplaySource {
    frames: Vec<Vec<u8>>,
    period: Duration,
    start: Option<Instant>,
    seq: u64,
    clock: Arc<dyn Clock>,
}

impl FrameSource for ReplaySource {
    fn describe(&self) -> String {
        format!(
            "replay of {} frames every {:?}",
            self.frames.len(),
            self.period
        )
    }
    fn start(&mut self) -> Result<(), SourceError> {
        self.start = Some(Instant::now());
        Ok(())
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = start + self.period.mul_f64(self.seq as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let i = (self.seq as usize) % self.frames.len();
        let frame = Frame {
            width: 640,
            height: 480,
            rgb: self.frames[i].clone(),
            stamp: self.clock.now(),
            seq: self.seq,
            frame_id: "camera_optical_frame".into(),
            ground_truth: None,
        };
        self.seq += 1;
        Ok(Some(frame))
    }
    fn stop(&mut self) {}
    fn stats(&self) -> SourceStats {
        SourceStats {
            frames: self.seq,
            ..SourceStats::default()
        }
    }
}

fn run_pipeline(
    prepared: &dyn PreparedModel,
    manifest: &Arc<Manifest>,
    source: Box<dyn FrameSource>,
    clock: Arc<dyn Clock>,
    frames: u64,
) -> Result<PipelineReport, Box<dyn std::error::Error>> {
    let stage = InferenceStage::new(prepared, manifest.clone(), ResizeMode::Stretch)?;
    let options = PipelineOptions {
        max_frames: Some(frames),
        status_interval: None,
        ..PipelineOptions::default()
    };
    Ok(pipeline::run(
        source,
        stage,
        Vec::new(),
        &options,
        clock,
        Arc::new(AtomicBool::new(false)),
        &mut |_| {},
    )?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_path = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(bundled_model);
    let threads: usize = args.get(1).map_or(Ok(0), |s| s.parse())?;
    let frames: u64 = args.get(2).map_or(Ok(60), |s| s.parse())?;

    let model = BackboneModel::load(&model_path)?;
    let size = model.fixed_input_size().ok_or("use a fixed-size model")?;
    let backend = TractBackend::new(threads);
    let prepared = backend.prepare(&model, size)?;
    let manifest = Arc::new(model.manifest.clone());

    // 1. Backbone alone on one preprocessed 640x480 synthetic frame.
    let scene = SyntheticScene::new(&SyntheticConfig::default(), &SyntheticCamera::default())?;
    let rendered: Vec<Vec<u8>> = (0..30).map(|i| scene.render(i).0).collect();
    let mut pre = Preprocessor::new(&manifest, size, ResizeMode::Stretch)?;
    let view = dinov3_perception::RgbImageView::packed(640, 480, &rendered[0]);
    let (input, _) = pre.run(&view)?;
    let mut session = prepared.session()?;
    session.run(&input)?; // warm-up
    let t = Instant::now();
    for _ in 0..frames {
        std::hint::black_box(session.run(&input)?);
    }
    let backbone_ms = t.elapsed().as_secs_f64() * 1e3 / frames as f64;
    drop(session);

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let replay = |rate_hz: f64| -> Box<dyn FrameSource> {
        Box::new(ReplaySource {
            frames: rendered.clone(),
            period: Duration::from_secs_f64(1.0 / rate_hz),
            start: None,
            seq: 0,
            clock: clock.clone(),
        })
    };
    let backbone_hz = 1e3 / backbone_ms;

    // 2. Saturated: offered at twice the backbone's rate.
    let over = run_pipeline(
        prepared.as_ref(),
        &manifest,
        replay(2.0 * backbone_hz),
        clock.clone(),
        frames,
    )?;
    let fps = over.processed as f64 / over.elapsed.as_secs_f64();
    let pipeline_ms = 1e3 / fps;
    // 3. Under-loaded: half the measured throughput.
    let under = run_pipeline(
        prepared.as_ref(),
        &manifest,
        replay(0.5 * fps),
        clock.clone(),
        frames / 2,
    )?;
    // 4. The live synthetic source at 2x (renders on the capture thread).
    let live_source = SyntheticSource::new(
        SyntheticConfig {
            fps: 2.0 * backbone_hz,
            ..SyntheticConfig::default()
        },
        clock.clone(),
    )?;
    let live = run_pipeline(
        prepared.as_ref(),
        &manifest,
        Box::new(live_source),
        clock.clone(),
        frames,
    )?;
    let live_fps = live.processed as f64 / live.elapsed.as_secs_f64();

    let e2e = |r: &PipelineReport, q: f64| r.timings.get("e2e").map_or(0.0, |h| h.quantile_ms(q));
    let drop_rate = |r: &PipelineReport| r.dropped as f64 / r.captured.max(1) as f64;
    println!(
        "model {} ({}), input {size}, {} threads, {frames} frames of 640x480",
        model_path.display(),
        model.manifest.variant,
        backend.threads()
    );
    println!();
    println!("| measurement | value |");
    println!("|---|---|");
    println!("| backbone alone, ms/frame | {backbone_ms:.2} |");
    println!(
        "| pipeline, camera-like source at 2x backbone rate ({:.1} fps offered): ms/frame = 1/throughput | {pipeline_ms:.2} ({fps:.2} fps) |",
        2.0 * backbone_hz
    );
    println!(
        "| **ratio pipeline/backbone** (goal <= 1.10) | **{:.3}** |",
        pipeline_ms / backbone_ms
    );
    println!(
        "| 2x overload: e2e latency p50/p99 ms, drop rate | {:.1} / {:.1}, {:.0} % |",
        e2e(&over, 0.5),
        e2e(&over, 0.99),
        100.0 * drop_rate(&over)
    );
    println!(
        "| offered at 0.5x throughput ({:.1} fps): e2e p50/p99 ms, drop rate | {:.1} / {:.1}, {:.0} % |",
        0.5 * fps,
        e2e(&under, 0.5),
        e2e(&under, 0.99),
        100.0 * drop_rate(&under)
    );
    println!(
        "| live synthetic source at 2x (rendering on the capture thread): fps, ratio, e2e p50/p99 ms, drop rate | {live_fps:.2}, {:.3}, {:.1} / {:.1}, {:.0} % |",
        (1e3 / live_fps) / backbone_ms,
        e2e(&live, 0.5),
        e2e(&live, 0.99),
        100.0 * drop_rate(&live)
    );
    for (name, r) in [
        ("2x overload", &over),
        ("0.5x", &under),
        ("live synthetic 2x", &live),
    ] {
        println!(
            "{name}: stage p50/p99 ms:{}",
            r.timings.summary(pipeline::STAGES)
        );
    }
    Ok(())
}
