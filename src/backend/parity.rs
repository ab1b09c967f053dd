//! The start-up parity gate: before an accelerated backend is trusted, it runs one probe frame
//! and its `patch_tokens` and `cls` are compared with tract's on the same input.
//!
//! TensorRT has computed DINOv3 wrongly on versions fleets run (see [`super::tensorrt`]), and
//! a wrong engine gives plausible-looking numbers, so the comparison is made on every start and
//! decides (the caller falls back to tract or exits, as configured).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::settings::ParityThresholds;
use super::{BackboneOutputs, BackendError, InputTensor, PreparedModel};
use crate::model::InputSize;

/// The arithmetic an accelerated backend runs in, which sets the threshold it must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arithmetic {
    /// Float32 throughout.
    Fp32,
    /// TensorRT FP16 kernels.
    Fp16,
    /// Dynamically quantised INT8 matrix products.
    Int8,
}

impl Arithmetic {
    /// Name for logs and `/diagnostics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arithmetic::Fp32 => "fp32",
            Arithmetic::Fp16 => "fp16",
            Arithmetic::Int8 => "int8",
        }
    }

    /// The minimum cosine this arithmetic must reach.
    pub fn threshold(self, t: &ParityThresholds) -> f64 {
        match self {
            Arithmetic::Fp32 => t.fp32,
            Arithmetic::Fp16 => t.fp16,
            Arithmetic::Int8 => t.int8,
        }
    }
}

/// How far a candidate's outputs are from the reference's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParityFigures {
    /// Mean over patches of the cosine between candidate and reference patch tokens.
    pub patch_cosine: f64,
    /// Cosine between the CLS tokens.
    pub cls_cosine: f64,
    /// Largest absolute difference over both outputs (NaN if any value is not finite).
    pub max_abs: f64,
}

impl ParityFigures {
    /// The figure the gate decides on: the smaller cosine (NaN when any value was NaN).
    pub fn min_cosine(&self) -> f64 {
        if self.patch_cosine.is_nan() || self.cls_cosine.is_nan() {
            f64::NAN
        } else {
            self.patch_cosine.min(self.cls_cosine)
        }
    }
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityReport {
    /// The measured figures.
    pub figures: ParityFigures,
    /// The candidate's arithmetic.
    pub arithmetic: Arithmetic,
    /// The threshold applied.
    pub threshold: f64,
    /// Whether the candidate passed (`min_cosine >= threshold`; NaN fails).
    pub passed: bool,
}

impl ParityReport {
    /// One line for the log: the figures, the threshold and the verdict.
    pub fn summary(&self) -> String {
        format!(
            "patch cosine {:.7}, cls cosine {:.7}, max abs {:.3e} ({} threshold {}): {}",
            self.figures.patch_cosine,
            self.figures.cls_cosine,
            self.figures.max_abs,
            self.arithmetic.as_str(),
            self.threshold,
            if self.passed { "passed" } else { "FAILED" }
        )
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 && nb == 0.0 {
        return 1.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    let mut m = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = (f64::from(x) - f64::from(y)).abs();
        if d.is_nan() {
            return f64::NAN;
        }
        m = m.max(d);
    }
    m
}

/// Compare `candidate` with `reference` on `patch_tokens` (mean per-patch cosine) and `cls`.
pub fn compare(
    reference: &BackboneOutputs,
    candidate: &BackboneOutputs,
) -> Result<ParityFigures, String> {
    let pair = |name: &str| {
        let r = reference
            .get(name)
            .ok_or_else(|| format!("the reference gave no {name}"))?;
        let c = candidate
            .get(name)
            .ok_or_else(|| format!("the accelerated backend gave no {name}"))?;
        if r.shape != c.shape {
            return Err(format!(
                "{name} has shape {:?} on the accelerated backend, {:?} on tract",
                c.shape, r.shape
            ));
        }
        Ok((r, c))
    };
    let (rp, cp) = pair("patch_tokens")?;
    let (rc, cc) = pair("cls")?;
    let channels = rp.shape.last().copied().unwrap_or(1).max(1);
    let mut sum = 0.0;
    let mut tokens = 0usize;
    for (a, b) in rp
        .data()
        .chunks_exact(channels)
        .zip(cp.data().chunks_exact(channels))
    {
        sum += cosine(a, b);
        tokens += 1;
    }
    let patch_cosine = if tokens == 0 {
        f64::NAN
    } else {
        sum / tokens as f64
    };
    let abs = max_abs(rp.data(), cp.data());
    let abs_cls = max_abs(rc.data(), cc.data());
    Ok(ParityFigures {
        patch_cosine,
        cls_cosine: cosine(rc.data(), cc.data()),
        max_abs: if abs.is_nan() || abs_cls.is_nan() {
            f64::NAN
        } else {
            abs.max(abs_cls)
        },
    })
}

/// The probe frame: a fixed, image-like input (smooth colour gradients, a few flat rectangles
/// with hard edges, mild noise), normalised with the model's mean and std, so the same input
/// reaches both backends on every start.
pub fn probe_input(size: InputSize, mean: [f32; 3], std: [f32; 3]) -> InputTensor {
    let (h, w) = (size.height, size.width);
    let mut rng = ChaCha8Rng::seed_from_u64(0x0D1A_0003);
    let rects: Vec<[f32; 7]> = (0..6)
        .map(|_| {
            let x0 = rng.random::<f32>() * 0.8;
            let y0 = rng.random::<f32>() * 0.8;
            [
                x0,
                y0,
                x0 + 0.1 + rng.random::<f32>() * 0.3,
                y0 + 0.1 + rng.random::<f32>() * 0.3,
                rng.random(),
                rng.random(),
                rng.random(),
            ]
        })
        .collect();
    let mut input = InputTensor::zeros(size);
    let plane = h * w;
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let mut rgb = [
                0.2 + 0.6 * u,
                0.3 + 0.4 * (6.0 * v).sin().abs(),
                0.8 - 0.6 * v,
            ];
            for r in &rects {
                if u >= r[0] && u < r[2] && v >= r[1] && v < r[3] {
                    rgb = [r[4], r[5], r[6]];
                }
            }
            for (c, value) in rgb.iter().enumerate() {
                let noisy = (value + (rng.random::<f32>() - 0.5) * 0.04).clamp(0.0, 1.0);
                input.data[c * plane + y * w + x] = (noisy - mean[c]) / std[c];
            }
        }
    }
    input
}

/// Run `probe` through both prepared models and judge `candidate` against `reference`.
pub fn gate(
    reference: &dyn PreparedModel,
    candidate: &dyn PreparedModel,
    probe: &InputTensor,
    arithmetic: Arithmetic,
    thresholds: &ParityThresholds,
) -> Result<ParityReport, BackendError> {
    let expected = reference.session()?.run(probe)?;
    let actual = candidate.session()?.run(probe)?;
    let figures = compare(&expected, &actual).map_err(|reason| BackendError::Run {
        backend: candidate.backend_name(),
        reason,
    })?;
    let threshold = arithmetic.threshold(thresholds);
    Ok(ParityReport {
        figures,
        arithmetic,
        threshold,
        // NaN compares false: a NaN output fails.
        passed: figures.min_cosine() >= threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::OutputTensor;

    fn outputs(patch: Vec<f32>, cls: Vec<f32>) -> BackboneOutputs {
        let n = patch.len() / 2;
        BackboneOutputs {
            tensors: vec![
                OutputTensor::new("cls".into(), vec![1, cls.len()], Box::new(cls)).unwrap(),
                OutputTensor::new("patch_tokens".into(), vec![1, n, 2], Box::new(patch)).unwrap(),
            ],
        }
    }

    #[test]
    fn identical_outputs_have_cosine_one() {
        let a = outputs(vec![1.0, 2.0, 3.0, -1.0], vec![0.5, 0.5]);
        let b = outputs(vec![1.0, 2.0, 3.0, -1.0], vec![0.5, 0.5]);
        let f = compare(&a, &b).unwrap();
        assert!((f.patch_cosine - 1.0).abs() < 1e-12);
        assert!((f.cls_cosine - 1.0).abs() < 1e-12);
        assert_eq!(f.max_abs, 0.0);
    }

    #[test]
    fn a_flipped_token_halves_the_mean_and_nan_fails() {
        let a = outputs(vec![1.0, 0.0, 0.0, 1.0], vec![1.0, 0.0]);
        let b = outputs(vec![1.0, 0.0, 0.0, -1.0], vec![1.0, 0.0]);
        let f = compare(&a, &b).unwrap();
        assert!(f.patch_cosine.abs() < 1e-12, "{f:?}");
        assert_eq!(f.max_abs, 2.0);
        let c = outputs(vec![1.0, 0.0, f32::NAN, 1.0], vec![1.0, 0.0]);
        let f = compare(&a, &c).unwrap();
        assert!(f.min_cosine().is_nan() && f.max_abs.is_nan(), "{f:?}");
        assert!(f.min_cosine().partial_cmp(&0.5).is_none());
    }

    #[test]
    fn shape_mismatch_is_an_error_naming_the_output() {
        let a = outputs(vec![1.0, 0.0, 0.0, 1.0], vec![1.0, 0.0]);
        let b = outputs(vec![1.0, 0.0], vec![1.0, 0.0]);
        assert!(compare(&a, &b).unwrap_err().contains("patch_tokens"));
    }

    #[test]
    fn probe_is_deterministic_and_normalised() {
        let size = InputSize {
            height: 32,
            width: 48,
        };
        let a = probe_input(size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let b = probe_input(size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        assert_eq!(a, b);
        assert_eq!(a.shape, [1, 3, 32, 48]);
        assert!(a.data.iter().all(|v| v.is_finite() && v.abs() < 3.0));
    }
}
