//! Greedy k-center coreset subsampling (as in PatchCore) of a bank's rows, with an optional
//! seeded random projection, and the record a bank keeps of it ([`CoresetInfo`]).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tract_onnx::prelude::tract_ndarray::linalg::general_mat_mul;
use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayViewMut2};

use super::search::resolve_threads;

/// Default dimension of the random projection used by the coreset search.
pub const DEFAULT_PROJECTION_DIM: usize = 128;

/// Below this many projected values per coreset step the update runs on one thread.
const CORESET_PARALLEL_MIN_WORK: usize = 1 << 18;

/// How a bank was subsampled: `target` rows asked for, `from` rows collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoresetInfo {
    /// Rows asked for (`--max-patches`, or all collected rows when no limit was given).
    pub target: usize,
    /// Rows collected before subsampling.
    pub from: usize,
}

/// Settings of [`greedy_coreset`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoresetOptions {
    /// Seed of the random start point and the random projection.
    pub seed: u64,
    /// Project to this many dimensions first (when smaller than the feature dimension) with a
    /// seeded random ±1/sqrt(k) matrix, which keeps distances approximately (Johnson-Lindenstrauss);
    /// `None` = exact distances.
    pub projection_dim: Option<usize>,
    /// Threads for the distance updates (0 = all cores).
    pub threads: usize,
    /// Start from this row instead of a seeded random one.
    pub start: Option<usize>,
}

impl Default for CoresetOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            projection_dim: Some(DEFAULT_PROJECTION_DIM),
            threads: 0,
            start: None,
        }
    }
}

/// Greedy k-center coreset (PatchCore): indices of at most `target` rows of `features`
/// (`[N, dim]`), in pick order. Starts from a seeded random row, then repeatedly takes the row
/// farthest (squared L2; on L2-normalised rows this orders like cosine distance) from every row
/// picked so far; ties go to the lowest index. Stops early when every remaining row duplicates a
/// picked one. `target >= N` returns all rows in order.
pub fn greedy_coreset(
    features: &[f32],
    dim: usize,
    target: usize,
    options: &CoresetOptions,
) -> Vec<usize> {
    greedy_coreset_with_progress(features, dim, target, options, &mut |_, _| {})
}

/// [`greedy_coreset`] calling `progress(picked, target)` after each pick.
pub fn greedy_coreset_with_progress(
    features: &[f32],
    dim: usize,
    target: usize,
    options: &CoresetOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<usize> {
    if dim == 0 {
        return Vec::new();
    }
    let n = features.len() / dim;
    if target >= n {
        return (0..n).collect();
    }
    if target == 0 {
        return Vec::new();
    }
    let features = &features[..n * dim];
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let projected;
    let (points, k) = match options.projection_dim {
        Some(k) if k > 0 && k < dim => {
            projected = random_projection(features, dim, k, &mut rng);
            (projected.as_slice(), k)
        }
        _ => (features, dim),
    };
    let start = options
        .start
        .filter(|&s| s < n)
        .unwrap_or_else(|| rng.random_range(0..n));
    let threads = resolve_threads(options.threads);
    let mut min_d = vec![f32::INFINITY; n];
    let mut picked = Vec::with_capacity(target);
    picked.push(start);
    progress(1, target);
    while picked.len() < target {
        let last = picked[picked.len() - 1];
        let centre = &points[last * k..(last + 1) * k];
        let (best, best_d) = update_min_distances(points, k, centre, &mut min_d, threads);
        if best_d <= 0.0 {
            break;
        }
        picked.push(best);
        progress(picked.len(), target);
    }
    picked
}

fn random_projection(features: &[f32], dim: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = features.len() / dim;
    let s = 1.0 / (k as f32).sqrt();
    let r: Vec<f32> = (0..dim * k)
        .map(|_| if rng.random_bool(0.5) { s } else { -s })
        .collect();
    let mut out = vec![0.0f32; n * k];
    let (Ok(x), Ok(rm), Ok(mut y)) = (
        ArrayView2::from_shape((n, dim), features),
        ArrayView2::from_shape((dim, k), &r[..]),
        ArrayViewMut2::from_shape((n, k), &mut out[..]),
    ) else {
        // Unreachable: the shapes are built from the lengths above.
        return features.to_vec();
    };
    general_mat_mul(1.0, &x, &rm, 0.0, &mut y);
    out
}

#[inline]
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        for j in 0..8 {
            let d = x[j] - y[j];
            acc[j] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

/// Lower `min_d` with the distances to `centre`; returns the row with the largest `min_d`
/// (lowest index among ties) and that distance.
fn update_chunk(
    points: &[f32],
    k: usize,
    centre: &[f32],
    min_d: &mut [f32],
    offset: usize,
) -> (usize, f32) {
    let mut best = (offset, f32::NEG_INFINITY);
    for (i, (row, d)) in points.chunks_exact(k).zip(min_d.iter_mut()).enumerate() {
        let dist = squared_distance(row, centre);
        if dist < *d {
            *d = dist;
        }
        if *d > best.1 {
            best = (offset + i, *d);
        }
    }
    best
}

fn update_min_distances(
    points: &[f32],
    k: usize,
    centre: &[f32],
    min_d: &mut [f32],
    threads: usize,
) -> (usize, f32) {
    let n = min_d.len();
    if threads <= 1 || n * k < CORESET_PARALLEL_MIN_WORK {
        return update_chunk(points, k, centre, min_d, 0);
    }
    let rows_per = n.div_ceil(threads);
    let results: Vec<(usize, f32)> = std::thread::scope(|s| {
        let handles: Vec<_> = points
            .chunks(rows_per * k)
            .zip(min_d.chunks_mut(rows_per))
            .enumerate()
            .map(|(t, (pts, md))| s.spawn(move || update_chunk(pts, k, centre, md, t * rows_per)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    // Chunks are in index order: strictly greater keeps the lowest index among ties.
    results
        .into_iter()
        .fold((0, f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coreset_parallel_update_matches_serial() {
        let k = 16;
        let n = CORESET_PARALLEL_MIN_WORK / k + 101;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let pts: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let opts = |threads| CoresetOptions {
            seed: 1,
            projection_dim: None,
            threads,
            start: None,
        };
        let serial = greedy_coreset(&pts, k, 20, &opts(1));
        let parallel = greedy_coreset(&pts, k, 20, &opts(3));
        assert_eq!(serial, parallel);
        assert_eq!(serial.len(), 20);
    }
}
