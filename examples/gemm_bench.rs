//! The native engine's matrix product against the `gemm` crate on the linear layers of
//! ViT-S/16 and ViT-B/16 (M = tokens of a 224 or 448 frame), same threads, same process.
//!
//! `cargo run --release --example gemm_bench -- THREADS [ITERS]` prints one Markdown row per
//! shape: milliseconds and GFLOP/s of each, and ours / crate.

#![allow(unsafe_code, reason = "the gemm crate's product takes raw pointers")]

use std::time::Instant;

use dinov3_perception::backend::native::cpu;
use dinov3_perception::backend::native::gemm::{Epilogue, PackedB};
use rayon::prelude::*;

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = args.first().map_or(Ok(2), |s| s.parse())?;
    let iters: usize = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    println!("isa: {}, threads: {threads}", cpu::isa().as_str());
    println!("| M x K x N | ours ms | gemm crate ms | ours GFLOP/s | crate GFLOP/s | ours / crate time |");
    println!("|---|---|---|---|---|---|");
    for &(m, k, n) in &[
        (201, 384, 1152),
        (201, 384, 384),
        (201, 384, 1536),
        (201, 1536, 384),
        (789, 384, 1536),
        (789, 1536, 384),
        (201, 768, 2304),
        (201, 768, 3072),
        (201, 3072, 768),
    ] {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let packed = PackedB::pack(&b, k, n);
        let mut c = vec![0.0f32; m * n];
        let mut c2 = vec![0.0f32; m * n];
        let flop = 2.0 * (m * k * n) as f64;
        let ours = || {
            let per = m.div_ceil(threads);
            c.par_chunks_mut(per * n)
                .zip(a.par_chunks(per * k))
                .for_each(|(c, a)| {
                    cpu::gemm_packed(
                        a,
                        k,
                        c.len() / n,
                        &packed.data,
                        k,
                        n,
                        c,
                        n,
                        false,
                        1.0,
                        Epilogue::None,
                    )
                });
        };
        let mut ours = ours;
        let mut t_ours = Vec::new();
        let mut t_crate = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            pool.install(&mut ours);
            t_ours.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            pool.install(|| {
                // SAFETY: dense row-major buffers of exactly m*k, k*n and m*n values.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c2.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        if threads > 1 {
                            gemm::Parallelism::Rayon(threads)
                        } else {
                            gemm::Parallelism::None
                        },
                    )
                }
            });
            t_crate.push(t.elapsed().as_secs_f64());
        }
        let worst = c
            .iter()
            .zip(&c2)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        if worst > 1e-2 {
            return Err(format!("{m}x{k}x{n}: results differ by {worst}").into());
        }
        let (o, g) = (median(t_ours), median(t_crate));
        println!(
            "| {m} x {k} x {n} | {:.3} | {:.3} | {:.0} | {:.0} | {:.2} |",
            o * 1e3,
            g * 1e3,
            flop / o / 1e9,
            flop / g / 1e9,
            o / g
        );
    }
    Ok(())
}
