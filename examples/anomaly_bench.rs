//! AnomalyDINO scoring benchmark: time per frame of the nearest-neighbour search for memory
//! banks of 1k, 10k and 100k patches at C=384 (ViT-S/16) with a 14x14 grid (196 query patches,
//! 224x224 input), blocked matrix products on one thread and on all cores, and as the peer in
//! the same run the naive per-patch loop (1k and 10k only; at 100k it takes seconds per frame).
//!
//! `cargo run --release --example anomaly_bench -- [FRAMES]` (default 20 frames per size).
//! Prints a Markdown table; "naive / blocked" is the speed-up of the blocked search on one
//! thread over the per-patch loop on the same data. Both include normalising the queries and
//! `1 - max cosine`; upsampling the map is not included (it does not depend on the bank).

use std::time::Instant;

use dinov3_perception::heads::anomaly::{
    l2_normalize_rows, naive_max_cosine, top_percent_mean, MemoryBank,
};
use dinov3_perception::heads::BackboneRef;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const C: usize = 384;
const QUERIES: usize = 14 * 14;

fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Median milliseconds of `frames` runs of `f`, after one warm-up run.
fn time_ms(frames: usize, mut f: impl FnMut() -> f32) -> (f64, f32) {
    let mut keep = f();
    let mut times: Vec<f64> = (0..frames)
        .map(|_| {
            let t = Instant::now();
            keep = f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], keep)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 20,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let backbone = BackboneRef {
        variant: "vits16".into(),
        hidden_size: C,
        patch_size: 16,
        grid: [14, 14],
        onnx_sha256: String::new(),
    };
    let tokens = random(QUERIES * C, &mut rng);
    println!(
        "AnomalyDINO scoring, C={C}, {QUERIES} query patches (14x14), median of {frames} frames, {cores} cores"
    );
    println!();
    println!("| bank patches | blocked, 1 thread (ms/frame) | blocked, {cores} threads (ms/frame) | naive per-patch loop (ms/frame) | naive / blocked |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [1_000usize, 10_000, 100_000] {
        let bank = MemoryBank::from_features(backbone.clone(), &random(n * C, &mut rng))?;
        let (one, s1) = time_ms(frames, || {
            let d = bank.patch_distances(&tokens, 1).unwrap_or_default();
            top_percent_mean(&d, 1.0)
        });
        let (all, s2) = time_ms(frames, || {
            let d = bank.patch_distances(&tokens, 0).unwrap_or_default();
            top_percent_mean(&d, 1.0)
        });
        assert!(
            (s1 - s2).abs() < 1e-5,
            "thread counts disagree: {s1} vs {s2}"
        );
        let naive = if n <= 10_000 {
            let (ms, s3) = time_ms(frames.min(5), || {
                let mut q = tokens.clone();
                l2_normalize_rows(&mut q, C);
                let d: Vec<f32> = naive_max_cosine(bank.features(), &q, C)
                    .iter()
                    .map(|m| (1.0 - m).max(0.0))
                    .collect();
                top_percent_mean(&d, 1.0)
            });
            assert!((s1 - s3).abs() < 1e-5, "naive disagrees: {s1} vs {s3}");
            Some(ms)
        } else {
            None
        };
        match naive {
            Some(ms) => println!("| {n} | {one:.2} | {all:.2} | {ms:.2} | {:.1}x |", ms / one),
            None => println!("| {n} | {one:.2} | {all:.2} | (not run) | |"),
        }
    }
    Ok(())
}
