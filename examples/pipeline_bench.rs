//! Pipeline benchmark (issue #3): 640x480 synthetic frames through the threaded pipeline
//! compared with the backbone alone on the same model, and latency under overload.
//!
//! `cargo run --release --example pipeline_bench -- [MODEL.onnx] [THREADS] [FRAMES]`
//! (defaults: the bundled tiny model, all cores, 60 frames). Prints a Markdown table:
//! 1. backbone alone: ms per pass on a preprocessed frame (`Session::run` in a loop);
//! 2. pipeline, source as fast as possible: throughput and per-frame time as a ratio of (1);
//! 3. pipeline, frames offered at 2x the measured throughput: end-to-end latency p50/p99
//!    (capture stamp -> results ready) and the share of frames dropped (newest wins);
//! 4. the same at 0.5x the throughput, for comparison (no backlog expected).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::{Backend, PreparedModel};
use dinov3_perception::commands::bundled_model;
use dinov3_perception::frame::{Clock, SystemClock};
use dinov3_perception::pipeline::{self, InferenceStage, PipelineOptions, PipelineReport};
use dinov3_perception::preprocess::{Preprocessor, ResizeMode};
use dinov3_perception::source::synthetic::{SyntheticConfig, SyntheticSource};
use dinov3_perception::{BackboneModel, Manifest};

fn run_pipeline(
    prepared: &dyn PreparedModel,
    manifest: &Arc<Manifest>,
    fps: f64,
    frames: u64,
) -> Result<PipelineReport, Box<dyn std::error::Error>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = SyntheticSource::new(
        SyntheticConfig {
            fps,
            ..SyntheticConfig::default()
        },
        clock.clone(),
    )?;
    let stage = InferenceStage::new(prepared, manifest.clone(), ResizeMode::Stretch)?;
    let options = PipelineOptions {
        max_frames: Some(frames),
        status_interval: None,
        ..PipelineOptions::default()
    };
    Ok(pipeline::run(
        Box::new(source),
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
    let model_path = args.first().map(PathBuf::from).unwrap_or_else(bundled_model);
    let threads: usize = args.get(1).map_or(Ok(0), |s| s.parse())?;
    let frames: u64 = args.get(2).map_or(Ok(60), |s| s.parse())?;

    let model = BackboneModel::load(&model_path)?;
    let size = model.fixed_input_size().ok_or("use a fixed-size model")?;
    let backend = TractBackend::new(threads);
    let prepared = backend.prepare(&model, size)?;
    let manifest = Arc::new(model.manifest.clone());

    // 1. Backbone alone on one preprocessed 640x480 synthetic frame.
    let (rgb, _) = dinov3_perception::source::synthetic::render(
        &SyntheticConfig::default(),
        &dinov3_perception::source::synthetic::SyntheticCamera::default(),
        0,
    )?;
    let mut pre = Preprocessor::new(&manifest, size, ResizeMode::Stretch)?;
    let view = dinov3_perception::RgbImageView::packed(640, 480, &rgb);
    let (input, _) = pre.run(&view)?;
    let mut session = prepared.session()?;
    session.run(&input)?; // warm-up
    let t = Instant::now();
    for _ in 0..frames {
        std::hint::black_box(session.run(&input)?);
    }
    let backbone_ms = t.elapsed().as_secs_f64() * 1e3 / frames as f64;
    drop(session);

    // 2. Pipeline, source as fast as possible.
    let fast = run_pipeline(prepared.as_ref(), &manifest, 0.0, frames)?;
    let fast_fps = fast.processed as f64 / fast.elapsed.as_secs_f64();
    let pipeline_ms = 1e3 / fast_fps;

    // 3. Overload: offered at twice the throughput. 4. Under-load: half.
    let over = run_pipeline(prepared.as_ref(), &manifest, 2.0 * fast_fps, frames)?;
    let under = run_pipeline(prepared.as_ref(), &manifest, 0.5 * fast_fps, frames / 2)?;

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
        "| pipeline (source unthrottled), ms/frame = 1/throughput | {pipeline_ms:.2} ({fast_fps:.1} fps) |"
    );
    println!(
        "| **ratio pipeline/backbone** (goal <= 1.10) | **{:.3}** |",
        pipeline_ms / backbone_ms
    );
    println!(
        "| unthrottled: e2e latency p50/p99 ms, drop rate | {:.1} / {:.1}, {:.0} % |",
        e2e(&fast, 0.5),
        e2e(&fast, 0.99),
        100.0 * drop_rate(&fast)
    );
    println!(
        "| offered at 2x throughput ({:.1} fps): e2e p50/p99 ms, drop rate | {:.1} / {:.1}, {:.0} % |",
        2.0 * fast_fps,
        e2e(&over, 0.5),
        e2e(&over, 0.99),
        100.0 * drop_rate(&over)
    );
    println!(
        "| offered at 0.5x throughput ({:.1} fps): e2e p50/p99 ms, drop rate | {:.1} / {:.1}, {:.0} % |",
        0.5 * fast_fps,
        e2e(&under, 0.5),
        e2e(&under, 0.99),
        100.0 * drop_rate(&under)
    );
    for (name, r) in [("unthrottled", &fast), ("2x", &over), ("0.5x", &under)] {
        println!("{name}: stage p50/p99 ms:{}", r.timings.summary(pipeline::STAGES));
    }
    Ok(())
}
