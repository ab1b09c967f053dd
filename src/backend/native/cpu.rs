//! Every `unsafe` block of the native engine: the instruction set chosen at run time and the
//! kernels of [`super::kernels`] and [`super::gemm`] compiled for it (calling a
//! `#[target_feature]` function), the attention's output shared by its worker threads, and the
//! checkpoint's memory map. Each block says why it is sound; the kernels themselves are safe
//! code with checked indexing.

use std::sync::OnceLock;

use super::gemm::{self, Epilogue};
use super::kernels;

/// The widest instruction set the kernels were compiled for that this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, BW, DQ, VL) with FMA.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// The baseline the binary was compiled for.
    Baseline,
}

impl Isa {
    /// Name for logs and the benchmark table.
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2+fma",
            Isa::Baseline => "baseline",
        }
    }
}

/// The instruction set detected once at first use.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    let v4 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl");
    let v3 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    if v4 && v3 {
        Isa::Avx512
    } else if v3 {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Baseline
}

/// Defines a safe function that runs `$body` compiled for the detected [`Isa`].
macro_rules! dispatched {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    generic($($arg),*)
                }
                match isa() {
                    // SAFETY: `isa()` found AVX-512 F/BW/DQ/VL, AVX2 and FMA on this CPU.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `isa()` found AVX2 and FMA on this CPU.
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            generic($($arg),*)
        }
    };
}

dispatched! {
    /// [`kernels::layer_norm_rows`].
    pub fn layer_norm_rows(x: &[f32], out: &mut [f32], cols: usize, w: &[f32], b: &[f32], eps: f32) {
        kernels::layer_norm_rows(x, out, cols, w, b, eps)
    }
}

dispatched! {
    /// [`kernels::silu_mul_rows`].
    pub fn silu_mul_rows(gate_up: &[f32], out: &mut [f32], cols: usize) {
        kernels::silu_mul_rows(gate_up, out, cols)
    }
}

dispatched! {
    /// [`kernels::softmax_rows`].
    pub fn softmax_rows(x: &mut [f32], cols: usize) {
        kernels::softmax_rows(x, cols)
    }
}

dispatched! {
    /// [`kernels::rope`] on `count` consecutive head vectors `stride` apart, starting at
    /// `x[0]`, with `cos`/`sin` rows `head_dim` wide (one row per vector).
    pub fn rope_rows(x: &mut [f32], stride: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
        for ((row, c), s) in x
            .chunks_mut(stride)
            .zip(cos.chunks_exact(head_dim))
            .zip(sin.chunks_exact(head_dim))
        {
            kernels::rope(&mut row[..head_dim], c, s)
        }
    }
}

/// Memory-map `file` read-only (the checkpoint's tensors are converted from the map at load).
pub fn map_read_only(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: memmap2 requires that the file is not changed while mapped. The map is only read
    // while the model loads and is dropped afterwards; a checkpoint rewritten in that window
    // gives wrong weights (its sha256 is checked against the manifest), never unsafety in
    // our code, which copies the values out.
    unsafe { memmap2::Mmap::map(file) }
}

/// [`gemm::gemm`] with the tile height of the detected [`Isa`]: 12 rows on AVX-512 (12 of
/// its 32 registers accumulate), 6 on AVX2 (12 of 16), 4 on the baseline.
#[allow(
    clippy::too_many_arguments,
    reason = "one matrix product: its operands and shapes"
)]
pub fn gemm_packed(
    a: &[f32],
    lda: usize,
    rows: usize,
    b: &[f32],
    k: usize,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    alpha: f32,
    epilogue: Epilogue<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        #[allow(clippy::too_many_arguments, reason = "forwarded")]
        fn avx512(
            a: &[f32],
            lda: usize,
            rows: usize,
            b: &[f32],
            k: usize,
            n: usize,
            c: &mut [f32],
            ldc: usize,
            accumulate: bool,
            alpha: f32,
            epilogue: Epilogue<'_>,
        ) {
            gemm::gemm::<12>(a, lda, rows, b, k, n, c, ldc, accumulate, alpha, epilogue)
        }
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments, reason = "forwarded")]
        fn avx2(
            a: &[f32],
            lda: usize,
            rows: usize,
            b: &[f32],
            k: usize,
            n: usize,
            c: &mut [f32],
            ldc: usize,
            accumulate: bool,
            alpha: f32,
            epilogue: Epilogue<'_>,
        ) {
            gemm::gemm::<6>(a, lda, rows, b, k, n, c, ldc, accumulate, alpha, epilogue)
        }
        match isa() {
            // SAFETY: `isa()` found AVX-512 F/BW/DQ/VL, AVX2 and FMA on this CPU.
            Isa::Avx512 => {
                return unsafe {
                    avx512(a, lda, rows, b, k, n, c, ldc, accumulate, alpha, epilogue)
                }
            }
            // SAFETY: `isa()` found AVX2 and FMA on this CPU.
            Isa::Avx2 => {
                return unsafe { avx2(a, lda, rows, b, k, n, c, ldc, accumulate, alpha, epilogue) }
            }
            Isa::Baseline => {}
        }
    }
    gemm::gemm::<4>(a, lda, rows, b, k, n, c, ldc, accumulate, alpha, epilogue)
}

/// The destination of attention outputs, shared by the worker threads: each (image, head)
/// task writes its own head's `head_dim` values of each of its image's rows.
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks write disjoint elements (see `attention`), and the buffer outlives the
// parallel loop that uses the pointer (it is borrowed mutably for the whole call).
unsafe impl Sync for SharedOut {}

/// Per-worker buffers of [`attention`]: a block of scores and the packed K^T and V of a head.
pub struct AttentionScratch {
    scores: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    context: Vec<f32>,
}

impl AttentionScratch {
    /// Buffers for `tokens` tokens, `head_dim` channels per head and query blocks of `block`.
    pub fn new(tokens: usize, head_dim: usize, block: usize) -> Self {
        Self {
            scores: vec![0.0; block.min(tokens) * tokens],
            keys: vec![0.0; gemm::packed_len(head_dim, tokens)],
            values: vec![0.0; gemm::packed_len(tokens, head_dim)],
            context: vec![0.0; block.min(tokens) * head_dim],
        }
    }
}

/// Multi-head self-attention without masking.
///
/// `qkv` holds `batch * tokens` rows of `[q | k | v]` (`3 * heads * head_dim` wide, RoPE
/// already applied); `out` receives `batch * tokens` rows of the heads' outputs side by side
/// (`heads * head_dim` wide). Each (image, head) task packs its K^T and V once, then goes
/// through the queries in blocks of `block` rows so the score block stays in cache. `scratch`
/// holds one [`AttentionScratch`] per worker of the current rayon pool (indexed by
/// `rayon::current_thread_index`, the last for a caller outside the pool).
#[allow(clippy::too_many_arguments, reason = "one attention call: its shapes")]
pub fn attention(
    qkv: &[f32],
    out: &mut [f32],
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    block: usize,
    scratch: &[std::sync::Mutex<AttentionScratch>],
) {
    use rayon::prelude::*;
    let width = heads * head_dim;
    let ld = 3 * width;
    assert!(qkv.len() >= batch * tokens * ld, "attention: qkv too small");
    assert!(
        out.len() >= batch * tokens * width,
        "attention: out too small"
    );
    assert!(!scratch.is_empty() && block > 0, "attention: no scratch");
    let scale = 1.0 / (head_dim as f32).sqrt();
    let shared = SharedOut {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    let shared = &shared;
    (0..batch * heads).into_par_iter().for_each(|task| {
        let (image, head) = (task / heads, task % heads);
        let slot = rayon::current_thread_index()
            .unwrap_or(scratch.len() - 1)
            .min(scratch.len() - 1);
        let Ok(mut guard) = scratch[slot].lock() else {
            return;
        };
        let AttentionScratch {
            scores,
            keys,
            values,
            context,
        } = &mut *guard;
        let base = image * tokens * ld;
        let q = &qkv[base + head * head_dim..];
        // B = K^T (head_dim x tokens): element (r, c) = K[c][r].
        gemm::pack_into(
            &qkv[base + width + head * head_dim..],
            head_dim,
            tokens,
            1,
            ld,
            keys,
        );
        // B = V (tokens x head_dim).
        gemm::pack_into(
            &qkv[base + 2 * width + head * head_dim..],
            tokens,
            head_dim,
            ld,
            1,
            values,
        );
        let mut q0 = 0;
        while q0 < tokens {
            let rows = block.min(tokens - q0);
            let s = &mut scores[..rows * tokens];
            gemm_packed(
                &q[q0 * ld..],
                ld,
                rows,
                keys,
                head_dim,
                tokens,
                s,
                tokens,
                false,
                scale,
                Epilogue::None,
            );
            softmax_rows(s, tokens);
            gemm_packed(
                s,
                tokens,
                rows,
                values,
                tokens,
                head_dim,
                context,
                head_dim,
                false,
                1.0,
                Epilogue::None,
            );
            for (r, src) in context.chunks_exact(head_dim).take(rows).enumerate() {
                let at = (image * tokens + q0 + r) * width + head * head_dim;
                assert!(
                    at + head_dim <= shared.len,
                    "attention: output outside the buffer"
                );
                // SAFETY: `at..at + head_dim` lies inside `out` (checked above): row
                // `q0 + r` of this task's image, this task's head. No other task has the same
                // (image, head), so no two tasks ever form a slice over the same elements,
                // and nothing reads `out` until the parallel loop has finished.
                let dst = unsafe { std::slice::from_raw_parts_mut(shared.ptr.add(at), head_dim) };
                dst.copy_from_slice(src);
            }
            q0 += rows;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_matches_a_naive_implementation() {
        let (batch, tokens, heads, d) = (2, 9, 3, 4);
        let width = heads * d;
        let qkv: Vec<f32> = (0..batch * tokens * 3 * width)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let mut out = vec![0.0; batch * tokens * width];
        let scratch: Vec<_> = (0..4)
            .map(|_| std::sync::Mutex::new(AttentionScratch::new(tokens, d, 4)))
            .collect();
        attention(&qkv, &mut out, batch, tokens, heads, d, 4, &scratch);
        let at = |b: usize, t: usize, part: usize, h: usize, j: usize| {
            qkv[(b * tokens + t) * 3 * width + part * width + h * d + j]
        };
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..tokens {
                    let s: Vec<f64> = (0..tokens)
                        .map(|t| {
                            (0..d)
                                .map(|j| (at(b, i, 0, h, j) * at(b, t, 1, h, j)) as f64)
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for j in 0..d {
                        let want: f64 = (0..tokens)
                            .map(|t| e[t] / z * at(b, t, 2, h, j) as f64)
                            .sum();
                        let got = out[(b * tokens + i) * width + h * d + j] as f64;
                        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_dispatched_kernels_agree_with_the_baseline() {
        let x: Vec<f32> = (0..96).map(|i| (i as f32 * 0.21).sin() * 4.0).collect();
        let mut a = x.clone();
        softmax_rows(&mut a, 32);
        let mut b = x.clone();
        kernels::softmax_rows(&mut b, 32);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-7);
        }
        // The dispatched product against the baseline tile height.
        let (m, k, n) = (23, 70, 40);
        let av: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let bv: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
        let packed = gemm::PackedB::pack(&bv, k, n);
        let mut c1 = vec![0.0; m * n];
        let mut c2 = vec![0.0; m * n];
        gemm_packed(
            &av,
            k,
            m,
            &packed.data,
            k,
            n,
            &mut c1,
            n,
            false,
            1.0,
            Epilogue::None,
        );
        gemm::gemm::<4>(
            &av,
            k,
            m,
            &packed.data,
            k,
            n,
            &mut c2,
            n,
            false,
            1.0,
            Epilogue::None,
        );
        for (p, q) in c1.iter().zip(&c2) {
            assert!((p - q).abs() < 1e-4);
        }
    }
}
