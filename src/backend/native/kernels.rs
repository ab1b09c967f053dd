//! The native engine's element-wise and row kernels (LayerNorm, exact-erf GELU, SiLU, softmax,
//! RoPE), written as plain safe loops over slices.
//!
//! Each kernel is `#[inline(always)]` generic code; [`super::cpu`] compiles it once more inside
//! functions with AVX2+FMA or AVX-512 enabled and picks one at run time, so the same loops
//! vectorise to the widest registers the CPU has. Reductions keep [`LANES`] partial sums so
//! the compiler can vectorise them without reassociating a single running sum.

/// Partial sums kept by reductions (one AVX-512 register of f32, two AVX2 registers).
pub const LANES: usize = 16;

/// Sum of `x`, in [`LANES`] partial sums.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += *v;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// Sum of `(x - mean)^2`.
#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            let d = *v - mean;
            *a += d * d;
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Maximum of `x` (`-inf` when empty).
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    acc.iter().fold(tail, |m, v| m.max(*v))
}

/// LayerNorm of each row of `x` (`cols` wide) into `out`: `(x - mean) / sqrt(var + eps) * w + b`
/// with the biased variance, as `torch.nn.LayerNorm` computes it.
#[inline(always)]
pub fn layer_norm_rows(x: &[f32], out: &mut [f32], cols: usize, w: &[f32], b: &[f32], eps: f32) {
    for (row, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let n = cols as f32;
        let mean = sum(row) / n;
        let var = sum_sq_dev(row, mean) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((o, v), w), b) in dst.iter_mut().zip(row).zip(w).zip(b) {
            *o = (*v - mean) * rstd * *w + *b;
        }
    }
}

/// `exp(x)` for f32, within 2 ulp over the whole range; vectorises (no libm call).
///
/// `x = n ln2 + r` with `|r| <= ln2 / 2`; `exp(r)` by its degree-6 Taylor polynomial (remainder
/// below 1.2e-7 relative); `2^n` built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p: f32 = 1.0 / 720.0;
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// `erf(x)` for f32: the rational approximation Eigen and XLA use (odd degree-13 numerator over
/// even degree-8 denominator on `[-4, 4]`, `+-1` outside), within a few ulp.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p: f32 = -2.726_142_3e-10;
    p = x2.mul_add(p, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_600_5e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    p *= x;
    let mut q: f32 = -1.456_607_2e-5;
    q = x2.mul_add(q, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    p / q
}

/// Exact (erf) GELU, `x * 0.5 * (1 + erf(x / sqrt(2)))` as `nn.GELU()` computes it.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// SwiGLU's gate: `out = silu(gate) * up`, row by row; `gate_up` rows hold the gate's
/// `cols` values then the up projection's.
#[inline(always)]
pub fn silu_mul_rows(gate_up: &[f32], out: &mut [f32], cols: usize) {
    for (row, dst) in gate_up
        .chunks_exact(2 * cols)
        .zip(out.chunks_exact_mut(cols))
    {
        let (gate, up) = row.split_at(cols);
        for ((o, g), u) in dst.iter_mut().zip(gate).zip(up) {
            *o = *g / (1.0 + exp(-*g)) * *u;
        }
    }
}

/// Softmax of each row of `x` (`cols` wide) in place, with the row maximum subtracted first.
#[inline(always)]
pub fn softmax_rows(x: &mut [f32], cols: usize) {
    for row in x.chunks_exact_mut(cols) {
        let m = max(row);
        for v in row.iter_mut() {
            *v = exp(*v - m);
        }
        let inv = 1.0 / sum(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// Rotary embedding of one head vector in place: `x * cos + rotate_half(x) * sin`, where
/// `rotate_half(x) = [-x2, x1]` for the halves `x1`, `x2` (transformers' `rotate_half`).
#[inline(always)]
pub fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (x1, x2) = x.split_at_mut(half);
    let (c1, c2) = cos.split_at(half);
    let (s1, s2) = sin.split_at(half);
    for i in 0..half {
        let a = x1[i];
        let b = x2[i];
        x1[i] = a * c1[i] + -b * s1[i];
        x2[i] = b * c2[i] + a * s2[i];
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (converges for |x| <= 4 with enough terms).
    pub(crate) fn erf_f64(x: f64) -> f64 {
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_the_series() {
        let mut worst = 0.0f64;
        for i in -4000..=4000 {
            let x = i as f64 / 1000.0;
            let err = (erf(x as f32) as f64 - erf_f64(x)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
        assert_eq!(erf(9.0), 1.0);
        assert_eq!(erf(-9.0), -1.0);
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            let rel = ((got - want) / want).abs();
            assert!(rel < 2.5e-7, "exp({x}) = {got}, want {want} (rel {rel:e})");
        }
    }

    #[test]
    fn layer_norm_matches_the_definition() {
        let x: Vec<f32> = (0..40)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
            .collect();
        let w: Vec<f32> = (0..20).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..20).map(|i| i as f32 * -0.02).collect();
        let mut out = vec![0.0; 40];
        layer_norm_rows(&x, &mut out, 20, &w, &b, 1e-5);
        for r in 0..2 {
            let row: Vec<f64> = x[r * 20..(r + 1) * 20].iter().map(|v| *v as f64).collect();
            let mean = row.iter().sum::<f64>() / 20.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 20.0;
            for c in 0..20 {
                let want = (row[c] - mean) / (var + 1e-5).sqrt() * w[c] as f64 + b[c] as f64;
                assert!((out[r * 20 + c] as f64 - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_order() {
        let mut x: Vec<f32> = (0..35).map(|i| (i as f32 * 0.7).cos() * 20.0).collect();
        let orig = x.clone();
        softmax_rows(&mut x, 35);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let m = orig.iter().cloned().fold(f32::MIN, f32::max);
        let denom: f64 = orig.iter().map(|v| ((v - m) as f64).exp()).sum();
        for (got, v) in x.iter().zip(&orig) {
            let want = ((v - m) as f64).exp() / denom;
            assert!((*got as f64 - want).abs() < 1e-7, "{got} vs {want}");
        }
    }

    #[test]
    fn rope_rotates_pairs_of_halves() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        let (a, b) = (0.3f32, 1.1f32);
        let cos = [a.cos(), b.cos(), a.cos(), b.cos()];
        let sin = [a.sin(), b.sin(), a.sin(), b.sin()];
        rope(&mut x, &cos, &sin);
        let want = [
            1.0 * a.cos() - 3.0 * a.sin(),
            2.0 * b.cos() - 4.0 * b.sin(),
            3.0 * a.cos() + 1.0 * a.sin(),
            4.0 * b.cos() + 2.0 * b.sin(),
        ];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-6);
        }
    }

    #[test]
    fn silu_mul_and_gelu_match_their_definitions() {
        let gate_up = [-2.0f32, 0.5, 3.0, -1.0];
        let mut out = [0.0f32; 2];
        silu_mul_rows(&gate_up, &mut out, 2);
        for i in 0..2 {
            let g = gate_up[i] as f64;
            let want = g / (1.0 + (-g).exp()) * gate_up[2 + i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-6);
        }
        for v in [-3.0f32, -0.5, 0.0, 0.7, 2.5] {
            let g = gelu(v);
            let v = v as f64;
            let want = v * 0.5 * (1.0 + erf_f64(v / 2f64.sqrt()));
            assert!((g as f64 - want).abs() < 1e-6, "{g} vs {want}");
        }
    }
}
