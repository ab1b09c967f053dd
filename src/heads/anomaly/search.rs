//! Nearest-neighbour search of patch tokens against a bank: L2 normalisation, the blocked
//! (multi-threaded) max-cosine product, the naive reference loop, the top-percent image score,
//! and the checks on the rows handed in.

use tract_onnx::prelude::tract_ndarray::linalg::general_mat_mul;
use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayViewMut2};

/// Default share of the patch distances averaged into the image score (AnomalyDINO: 1 %).
pub const DEFAULT_TOP_PERCENT: f32 = 1.0;

/// Bank rows per block of the blocked nearest-neighbour product.
const BLOCK_ROWS: usize = 2048;
/// Below this many multiply-adds a frame is scored on one thread (thread start-up dominates).
const PARALLEL_MIN_WORK: usize = 1 << 24;

/// Errors in patch features handed to a bank (not files): wrong length or non-finite values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BankDataError {
    /// The values are not whole rows.
    #[error("{values} values are not a whole number of {dim}-dimensional patch tokens")]
    Length {
        /// Number of values given.
        values: usize,
        /// Feature dimension of the bank.
        dim: usize,
    },
    /// A row holds NaN or infinity.
    #[error("patch token {row} holds a non-finite value (NaN or infinity)")]
    NonFinite {
        /// Row index within the given values.
        row: usize,
    },
    /// `top_percent` is outside (0, 100].
    #[error("top_percent {0} is invalid: give a percentage in (0, 100] (AnomalyDINO uses 1)")]
    TopPercent(f32),
}

/// L2-normalise `dim`-sized rows in place (`x / max(|x|, 1e-12)`, as `F.normalize`: a zero row
/// stays zero).
pub fn l2_normalize_rows(data: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    for row in data.chunks_exact_mut(dim) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let inv = (1.0 / norm.max(1e-12)) as f32;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

pub(super) fn check_rows(values: &[f32], dim: usize) -> Result<usize, BankDataError> {
    if dim == 0 || !values.len().is_multiple_of(dim) {
        return Err(BankDataError::Length {
            values: values.len(),
            dim,
        });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(BankDataError::NonFinite { row: i / dim });
    }
    Ok(values.len() / dim)
}

pub(super) fn check_top_percent(p: f32) -> Result<(), BankDataError> {
    if p.is_finite() && p > 0.0 && p <= 100.0 {
        Ok(())
    } else {
        Err(BankDataError::TopPercent(p))
    }
}

pub(super) fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// Running max of the cosine of `queries` `[P, C]` against `bank` rows `[n, C]`, into `best`.
pub(super) fn max_cosine_shard(
    bank: &[f32],
    queries: &ArrayView2<f32>,
    dim: usize,
    best: &mut [f32],
) {
    let p = queries.nrows();
    let mut scratch = vec![0.0f32; p * BLOCK_ROWS.min(bank.len() / dim.max(1)).max(1)];
    for block in bank.chunks(BLOCK_ROWS * dim) {
        let b = block.len() / dim;
        let (Ok(rows), Ok(mut out)) = (
            ArrayView2::from_shape((b, dim), block),
            ArrayViewMut2::from_shape((p, b), &mut scratch[..p * b]),
        ) else {
            // Unreachable: every block is whole rows and the scratch is sized for the largest.
            continue;
        };
        general_mat_mul(1.0, queries, &rows.t(), 0.0, &mut out);
        for (bq, row) in best.iter_mut().zip(scratch[..p * b].chunks_exact(b)) {
            let m = row
                .iter()
                .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
            if m > *bq {
                *bq = m;
            }
        }
    }
}

/// Best cosine similarity of each row of `queries` (`[P, dim]`) to the rows of `bank`
/// (`[N, dim]`), both already L2-normalised, by blocked matrix products (`BLOCK_ROWS` bank rows
/// at a time, running max per query) on up to `threads` threads (0 = all cores). An empty bank
/// gives `-inf` for every query.
pub fn max_cosine(
    bank: &[f32],
    queries: &[f32],
    dim: usize,
    threads: usize,
) -> Result<Vec<f32>, BankDataError> {
    let p = check_rows(queries, dim)?;
    let n = check_rows(bank, dim)?;
    let mut best = vec![f32::NEG_INFINITY; p];
    if p == 0 || n == 0 {
        return Ok(best);
    }
    let Ok(q) = ArrayView2::from_shape((p, dim), queries) else {
        return Err(BankDataError::Length {
            values: queries.len(),
            dim,
        });
    };
    let threads = resolve_threads(threads).min(n.div_ceil(BLOCK_ROWS / 4).max(1));
    if threads <= 1 || p * n * dim < PARALLEL_MIN_WORK {
        max_cosine_shard(bank, &q, dim, &mut best);
        return Ok(best);
    }
    let rows_per = n.div_ceil(threads);
    let partial: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = bank
            .chunks(rows_per * dim)
            .map(|shard| {
                let q = q.view();
                s.spawn(move || {
                    let mut local = vec![f32::NEG_INFINITY; p];
                    max_cosine_shard(shard, &q, dim, &mut local);
                    local
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    for local in partial {
        for (b, l) in best.iter_mut().zip(local) {
            if l > *b {
                *b = l;
            }
        }
    }
    Ok(best)
}

/// The per-patch loop [`max_cosine`] replaces: for each query, a dot product with every bank
/// row. Same result up to rounding; the reference for tests and the benchmark.
pub fn naive_max_cosine(bank: &[f32], queries: &[f32], dim: usize) -> Vec<f32> {
    if dim == 0 {
        return Vec::new();
    }
    queries
        .chunks_exact(dim)
        .map(|q| {
            bank.chunks_exact(dim)
                .map(|b| q.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect()
}

/// AnomalyDINO image score: the mean of the `ceil(len * top_percent / 100)` largest distances
/// (at least one, at most all). `NaN` for no distances.
pub fn top_percent_mean(distances: &[f32], top_percent: f32) -> f32 {
    let n = distances.len();
    if n == 0 {
        return f32::NAN;
    }
    let k = ((n as f64 * f64::from(top_percent) / 100.0).ceil() as usize).clamp(1, n);
    let mut sorted = distances.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let sum: f64 = sorted[..k].iter().map(|&v| f64::from(v)).sum();
    (sum / k as f64) as f32
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn blocked_matches_naive_across_blocks_and_threads() {
        let c = 24;
        let n = BLOCK_ROWS * 2 + 37;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut bank: Vec<f32> = (0..n * c).map(|_| rng.random_range(-1.0..1.0)).collect();
        l2_normalize_rows(&mut bank, c);
        let mut q: Vec<f32> = (0..50 * c).map(|_| rng.random_range(-1.0..1.0)).collect();
        l2_normalize_rows(&mut q, c);
        let naive = naive_max_cosine(&bank, &q, c);
        for threads in [1, 3] {
            let got = max_cosine(&bank, &q, c, threads).unwrap();
            for (a, b) in got.iter().zip(&naive) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        // The multithreaded path proper (above the work threshold).
        let got = max_cosine_sharded_for_test(&bank, &q, c);
        for (a, b) in got.iter().zip(&naive) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    fn max_cosine_sharded_for_test(bank: &[f32], q: &[f32], c: usize) -> Vec<f32> {
        let p = q.len() / c;
        let qv = ArrayView2::from_shape((p, c), q).unwrap();
        let mut best = vec![f32::NEG_INFINITY; p];
        for shard in bank.chunks(1000 * c) {
            let mut local = vec![f32::NEG_INFINITY; p];
            max_cosine_shard(shard, &qv, c, &mut local);
            for (b, l) in best.iter_mut().zip(local) {
                *b = b.max(l);
            }
        }
        best
    }

    #[test]
    fn top_percent_uses_ceil_and_at_least_one() {
        let d: Vec<f32> = (0..196).map(|i| i as f32).collect();
        // ceil(1.96) = 2 -> mean of 195 and 194.
        assert_eq!(top_percent_mean(&d, 1.0), 194.5);
        assert_eq!(top_percent_mean(&d[..10], 1.0), 9.0);
        assert_eq!(top_percent_mean(&d[..10], 100.0), 4.5);
    }
}
