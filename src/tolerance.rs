//! Named numeric tolerances and a comparison that reports the worst element.

/// Backbone outputs of tract vs PyTorch (issue #2): max abs error.
pub const BACKBONE_MAX_ABS: f32 = 1e-4;
/// Backbone outputs of tract vs PyTorch: minimum mean cosine similarity over patch tokens.
pub const BACKBONE_MIN_MEAN_COSINE: f64 = 0.99999;

/// An int8-dynamic backbone (`export_backbone.py --quantize int8-dynamic`) vs PyTorch's float
/// model (issue #12): largest 1 - mean patch cosine. onnxruntime's int8 kernels differ by CPU:
/// measured 4.2e-5 on the tiny fixture with AVX-512 VNNI (Intel), 1.18e-3 on an AVX2-only AMD
/// EPYC (u8 x s8 products without VNNI); 8e-5 to 2.8e-4 on ViT-S/16 (Intel).
pub const INT8_MAX_ONE_MINUS_COSINE: f64 = 2e-3;

/// Task heads in Rust vs PyTorch on the same features (issue #4): max abs error of logits and
/// depth (metres), raw and upsampled to camera pixels.
pub const HEAD_MAX_ABS: f32 = 1e-4;

/// Result of comparing two float arrays element by element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Largest absolute difference.
    pub max_abs: f32,
    /// Index of the largest difference.
    pub worst_index: usize,
    /// Value of `actual` there.
    pub actual: f32,
    /// Value of `expected` there.
    pub expected: f32,
    /// Number of non-finite values in `actual`.
    pub non_finite: usize,
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max abs {:.3e} at index {} (actual {}, expected {}), {} non-finite",
            self.max_abs, self.worst_index, self.actual, self.expected, self.non_finite
        )
    }
}

/// Compare `actual` against `expected`; `None` if the lengths differ.
pub fn compare(actual: &[f32], expected: &[f32]) -> Option<Comparison> {
    if actual.len() != expected.len() {
        return None;
    }
    let mut c = Comparison {
        max_abs: 0.0,
        worst_index: 0,
        actual: actual.first().copied().unwrap_or(0.0),
        expected: expected.first().copied().unwrap_or(0.0),
        non_finite: 0,
    };
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        if !a.is_finite() {
            c.non_finite += 1;
        }
        let d = (a - e).abs();
        if d > c.max_abs || d.is_nan() {
            c = Comparison {
                max_abs: if d.is_nan() { f32::INFINITY } else { d },
                worst_index: i,
                actual: a,
                expected: e,
                non_finite: c.non_finite,
            };
        }
    }
    Some(c)
}

/// Mean over rows of the cosine similarity between matching rows of length `dim`.
pub fn mean_row_cosine(actual: &[f32], expected: &[f32], dim: usize) -> Option<f64> {
    if dim == 0
        || actual.len() != expected.len()
        || !actual.len().is_multiple_of(dim)
        || actual.is_empty()
    {
        return None;
    }
    let rows = actual.len() / dim;
    let sum: f64 = actual
        .chunks_exact(dim)
        .zip(expected.chunks_exact(dim))
        .map(|(a, e)| {
            let (mut ab, mut aa, mut ee) = (0f64, 0f64, 0f64);
            for (&x, &y) in a.iter().zip(e) {
                ab += x as f64 * y as f64;
                aa += x as f64 * x as f64;
                ee += y as f64 * y as f64;
            }
            ab / (aa.sqrt() * ee.sqrt()).max(1e-30)
        })
        .sum();
    Some(sum / rows as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_finds_worst_and_nan() {
        let c = compare(&[1.0, 2.0, 3.5], &[1.0, 2.1, 3.0]).unwrap();
        assert_eq!(c.worst_index, 2);
        assert!((c.max_abs - 0.5).abs() < 1e-6);
        let c = compare(&[f32::NAN, 0.0], &[0.0, 0.0]).unwrap();
        assert!(c.max_abs.is_infinite() && c.non_finite == 1);
        assert!(compare(&[1.0], &[1.0, 2.0]).is_none());
    }

    #[test]
    fn cosine_of_scaled_rows_is_one_and_of_opposite_rows_minus_one() {
        let a = [1.0, 2.0, 3.0, 1.0, 0.0, 0.0];
        let b = [2.0, 4.0, 6.0, -1.0, 0.0, 0.0];
        let m = mean_row_cosine(&a, &b, 3).unwrap();
        assert!((m - 0.0).abs() < 1e-12, "{m}");
        assert!((mean_row_cosine(&a, &a, 3).unwrap() - 1.0).abs() < 1e-12);
    }
}
