//! The native engine's matrix product, written for ViT shapes: a few hundred rows of
//! activations (`M`) against weights packed once at load.
//!
//! * The right-hand matrix is packed in panels of [`NR`] columns (`k` rows of `NR` values,
//!   zero-padded), once at load for weights, into a reused buffer for attention's K and V.
//! * The left-hand matrix (activations) is read in place, row-major: no per-call packing.
//! * A register tile of `R x NR` accumulators (`R` = 6 rows for AVX2, 12 for AVX-512; `NR` = 16)
//!   runs over a `KC`-deep slice of one panel, with bias, residual add, scale and GELU fused
//!   into the store.
//!
//! Everything here is safe generic code; [`super::cpu`] compiles it per instruction set. The
//! caller splits rows between threads (each thread owns its rows of C).

use super::kernels;

/// Columns per packed panel (two AVX2 registers, one AVX-512 register).
pub const NR: usize = 16;
/// Depth of one pass over a panel: a `KC x NR` slice of B (24 KiB) stays in L1.
const KC: usize = 384;

/// A hand-written `6 x NR` register tile (the AVX2 kernel of [`super::cpu`]): the
/// accumulators of six rows of A (each `bp.len()` long) against one panel slice.
pub type FullTile = fn(&[&[f32]; 6], &[[f32; NR]]) -> [[f32; NR]; 6];

/// What the store of a product does besides writing `alpha * A B`.
#[derive(Clone, Copy)]
pub enum Epilogue<'a> {
    /// Nothing.
    None,
    /// Add a per-column bias.
    Bias(&'a [f32]),
    /// Add a per-column bias, then exact-erf GELU.
    BiasGelu(&'a [f32]),
    /// Exact-erf GELU (a layer without bias).
    Gelu,
}

/// A right-hand matrix `k x n` packed in [`NR`]-column panels.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedB {
    /// Rows (the product's depth).
    pub k: usize,
    /// Columns.
    pub n: usize,
    /// `ceil(n / NR)` panels of `k * NR` values.
    pub data: Vec<f32>,
}

/// Values a packed `k x n` matrix takes.
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k * NR
}

/// Pack `b` (element `(r, c)` at `b[r * row_stride + c * col_stride]`, `k x n`) into `out`.
pub fn pack_into(
    b: &[f32],
    k: usize,
    n: usize,
    row_stride: usize,
    col_stride: usize,
    out: &mut [f32],
) {
    for (panel, dst) in out[..packed_len(k, n)].chunks_exact_mut(k * NR).enumerate() {
        let c0 = panel * NR;
        let cols = NR.min(n - c0);
        for (r, row) in dst.chunks_exact_mut(NR).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if j < cols {
                    b[r * row_stride + (c0 + j) * col_stride]
                } else {
                    0.0
                };
            }
        }
    }
}

impl PackedB {
    /// Pack a dense row-major `k x n` matrix.
    pub fn pack(b: &[f32], k: usize, n: usize) -> Self {
        let mut data = vec![0.0; packed_len(k, n)];
        pack_into(b, k, n, n, 1, &mut data);
        Self { k, n, data }
    }
}

/// `C[rows x n] = (accumulate ? C : 0) + alpha * A[rows x k] B + epilogue`, with `A` rows `lda`
/// apart and `C` rows `ldc` apart, on this thread, in tiles of `R` rows.
///
/// # Panics
/// If a slice is shorter than the shapes say (the engine sizes its buffers from the
/// architecture, so this is a bug, never bad input).
#[allow(
    clippy::too_many_arguments,
    reason = "one matrix product: its operands and shapes"
)]
#[inline(always)]
pub fn gemm<const R: usize>(
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
    full_tile: Option<FullTile>,
) {
    if rows == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= (rows - 1) * lda + k, "gemm: A too small");
    assert!(b.len() >= packed_len(k, n), "gemm: B too small");
    assert!(c.len() >= (rows - 1) * ldc + n, "gemm: C too small");
    let panels = n.div_ceil(NR);
    let mut k0 = 0;
    loop {
        let kc = KC.min(k - k0);
        let first = k0 == 0;
        let last = k0 + kc == k;
        for panel in 0..panels {
            let (chunks, _) = b[panel * k * NR..(panel + 1) * k * NR].as_chunks::<NR>();
            let bp = &chunks[k0..k0 + kc];
            let c0 = panel * NR;
            let cols = NR.min(n - c0);
            let store = Store {
                col0: c0,
                cols,
                load: accumulate || !first,
                alpha,
                epilogue: if last { epilogue } else { Epilogue::None },
            };
            let mut r0 = 0;
            while r0 < rows {
                let left = rows - r0;
                macro_rules! go {
                    ($($m:literal)*) => {
                        match left.min(R) {
                            $($m => tile::<$m>(a, lda, r0, k0, bp, c, ldc, &store, full_tile),)*
                            _ => tile::<1>(a, lda, r0, k0, bp, c, ldc, &store, full_tile),
                        }
                    };
                }
                let done = left.min(R);
                go!(12 11 10 9 8 7 6 5 4 3 2);
                r0 += done;
            }
        }
        k0 += kc;
        if k0 >= k {
            break;
        }
    }
}

struct Store<'a> {
    col0: usize,
    cols: usize,
    load: bool,
    alpha: f32,
    epilogue: Epilogue<'a>,
}

/// One `M x NR` tile: `M` rows of A from `r0`, depth `bp.len()` from `k0`.
#[allow(clippy::too_many_arguments, reason = "the tile's operands")]
#[inline(always)]
fn tile<const M: usize>(
    a: &[f32],
    lda: usize,
    r0: usize,
    k0: usize,
    bp: &[[f32; NR]],
    c: &mut [f32],
    ldc: usize,
    s: &Store<'_>,
    full_tile: Option<FullTile>,
) {
    let kc = bp.len();
    let rows: [&[f32]; M] = std::array::from_fn(|i| {
        let start = (r0 + i) * lda + k0;
        &a[start..start + kc]
    });
    let mut acc = [[0.0f32; NR]; M];
    let six: Option<&[&[f32]; 6]> = rows.as_slice().try_into().ok();
    if let (Some(f), Some(six)) = (full_tile, six) {
        let got = f(six, bp);
        for (dst, src) in acc.iter_mut().zip(got) {
            *dst = src;
        }
    } else {
        for p in 0..kc {
            let bv = &bp[p];
            for i in 0..M {
                let av = rows[i][p];
                for j in 0..NR {
                    acc[i][j] = av.mul_add(bv[j], acc[i][j]);
                }
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate() {
        let start = (r0 + i) * ldc + s.col0;
        let dst = &mut c[start..start + s.cols];
        for (j, v) in dst.iter_mut().enumerate() {
            let mut x = s.alpha * acc_row[j];
            if s.load {
                x += *v;
            }
            match s.epilogue {
                Epilogue::None => {}
                Epilogue::Bias(b) => x += b[s.col0 + j],
                Epilogue::BiasGelu(b) => x = kernels::gelu(x + b[s.col0 + j]),
                Epilogue::Gelu => x = kernels::gelu(x),
            }
            *v = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum();
            }
        }
        c
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0)
            .collect()
    }

    #[test]
    fn products_of_every_edge_shape_match_the_naive_product() {
        // Row counts around the tile heights, column counts around the panel width, depths
        // across the KC boundary.
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 5, 17),
            (13, 385, 33),
            (25, 800, 16),
            (6, 64, 48),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let bias = values(n, 3);
            let packed = PackedB::pack(&b, k, n);
            let want = naive(&a, &b, m, k, n);
            for (accumulate, epi) in [(false, 0), (true, 1), (false, 2)] {
                let mut c = vec![0.5f32; m * n];
                let epilogue = match epi {
                    0 => Epilogue::None,
                    1 => Epilogue::Bias(&bias),
                    _ => Epilogue::BiasGelu(&bias),
                };
                gemm::<6>(
                    &a,
                    k,
                    m,
                    &packed.data,
                    k,
                    n,
                    &mut c,
                    n,
                    accumulate,
                    2.0,
                    epilogue,
                    None,
                );
                for i in 0..m {
                    for j in 0..n {
                        let mut x = 2.0 * want[i * n + j];
                        if accumulate {
                            x += 0.5;
                        }
                        if epi >= 1 {
                            x += bias[j] as f64;
                        }
                        if epi == 2 {
                            x = x * 0.5 * (1.0 + erf_f64(x / 2f64.sqrt()));
                        }
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - x).abs() < 1e-4 * (1.0 + x.abs()),
                            "{m}x{k}x{n} [{i},{j}]: {got} vs {x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn strided_packing_reads_a_transpose() {
        // K^T of attention: B(r, c) = K[c][r], K stored rows of 3 values.
        let kmat: Vec<f32> = (0..20 * 3).map(|v| v as f32).collect();
        let mut out = vec![0.0; packed_len(3, 20)];
        pack_into(&kmat, 3, 20, 1, 3, &mut out);
        // Panel 0, row 1, column 5 = K[5][1].
        assert_eq!(out[NR + 5], kmat[5 * 3 + 1]);
        // Panel 1 (columns 16..), row 2, column 16+3 = K[19][2]; padding after column 19.
        assert_eq!(out[3 * NR + 2 * NR + 3], kmat[19 * 3 + 2]);
        assert_eq!(out[3 * NR + 2 * NR + 4], 0.0);
    }

    /// erf where the series converges well, +-1 beyond 3 (off by < 2.3e-5 there).
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            return x.signum();
        }
        super::kernels::tests::erf_f64(x)
    }
}
