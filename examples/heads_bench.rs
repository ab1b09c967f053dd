//! Cost of each task head as a ratio of the backbone pass it reads, measured in one process on
//! the same frames (the backbone is the peer):
//!
//!     cargo run --release --example heads_bench -- BACKBONE.onnx HEADS_DIR [THREADS] [FRAMES] [BANK_PATCHES]
//!
//! HEADS_DIR holds head ONNX files for BACKBONE (e.g. `models/train_heads.py export-random`);
//! an anomaly bank of BANK_PATCHES random patch features (default 10000) is added, and the PCA
//! head with a basis fitted on the first frame. Frames: the synthetic scene at 640x480. Prints a
//! Markdown table: median ms per frame of the backbone, each head and all heads, and ratios.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use dinov3_perception::frame::SystemClock;
use dinov3_perception::heads::anomaly::MemoryBank;
use dinov3_perception::BackboneModel;
use rand::{RngExt, SeedableRng};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        anyhow::bail!(
            "usage: heads_bench BACKBONE.onnx HEADS_DIR [THREADS] [FRAMES] [BANK_PATCHES]"
        );
    }
    let model_path = PathBuf::from(&args[1]);
    let heads_src = PathBuf::from(&args[2]);
    let threads: usize = args.get(3).map_or(Ok(2), |s| s.parse())?;
    let frames: usize = args.get(4).map_or(Ok(20), |s| s.parse())?;
    let bank_patches: usize = args.get(5).map_or(Ok(10_000), |s| s.parse())?;

    let model = BackboneModel::load(&model_path)?;
    let size = model.resolve_size(None)?;
    let m = &model.manifest;
    let grid = (size.height / m.patch_size, size.width / m.patch_size);

    // The heads directory plus a random anomaly bank, in a scratch copy.
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(&heads_src)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "onnx" || e == "json") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap_or_default()))?;
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let features: Vec<f32> = (0..bank_patches * m.hidden_size)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    MemoryBank::from_features(MemoryBank::backbone_ref(m, grid), &features)?
        .save(&dir.path().join("anomaly"))?;
    let (mut stage, names) = common::stage_with_heads(&model, dir.path(), threads)?;

    let scene = common::scene()?;
    let clock = SystemClock;
    let mut backbone = Vec::new();
    let mut all = Vec::new();
    let mut per_head: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // One warm-up frame (also fits the PCA basis), then the measured frames.
    for i in 0..=frames {
        let frame = common::frame(&scene, i, "camera");
        let r = stage.run_frame(frame, &clock).map_err(anyhow::Error::msg)?;
        if let Some((h, e)) = r.head_errors.first() {
            anyhow::bail!("head {h}: {e}");
        }
        if i == 0 {
            continue;
        }
        backbone.push(r.timings.backbone.as_secs_f64() * 1e3);
        all.push(r.timings.heads.as_secs_f64() * 1e3);
        for h in &r.heads {
            per_head
                .entry(h.head.clone())
                .or_default()
                .push(h.elapsed.as_secs_f64() * 1e3);
        }
    }
    let b = common::median(&mut backbone);
    println!(
        "{} {}x{} ({} threads, {frames} frames of 640x480, anomaly bank {bank_patches} patches)\n",
        m.variant, size.height, size.width, threads
    );
    println!("| stage | median ms | ratio to backbone |\n|---|---|---|");
    println!("| backbone | {b:.2} | 1.000 |");
    for name in &names {
        if let Some(v) = per_head.get_mut(name) {
            let t = common::median(v);
            println!("| {name} | {t:.2} | {:.3} |", t / b);
        }
    }
    let a = common::median(&mut all);
    println!("| all heads | {a:.2} | {:.3} |", a / b);
    Ok(())
}
