//! The start-up parity gate's decisions, through a stand-in accelerated backend that returns
//! tract's outputs plus a controlled error: pass, fail -> fallback to tract, fail -> exit 2;
//! the thresholds by arithmetic; NaN; an unavailable backend. Runs in every build (no ONNX
//! Runtime needed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::sync::Arc;

use common::fixture;
use dinov3_perception::backend::parity::Arithmetic;
use dinov3_perception::backend::settings::{BackendSettings, OnBackendFailure};
use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::{
    BackboneOutputs, Backend, BackendError, InputTensor, LoadedBackbone, OutputTensor,
    PreparedModel, Session,
};
use dinov3_perception::{BackboneModel, InputSize};

/// What the stand-in does to tract's outputs.
#[derive(Clone, Copy)]
enum Error {
    /// Add `scale * rms * u`, `u` a fixed pseudo-random pattern in [-1, 1].
    Noise(f32),
    /// One NaN in the patch tokens.
    Nan,
}

struct StandIn {
    error: Error,
}

impl Backend for StandIn {
    fn name(&self) -> &'static str {
        "stand-in"
    }
    fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn prepare(
        &self,
        model: &BackboneModel,
        size: InputSize,
    ) -> Result<Arc<dyn PreparedModel>, BackendError> {
        Ok(Arc::new(StandInPrepared {
            inner: TractBackend::new(1).prepare(model, size)?,
            error: self.error,
        }))
    }
}

struct StandInPrepared {
    inner: Arc<dyn PreparedModel>,
    error: Error,
}

impl PreparedModel for StandInPrepared {
    fn backend_name(&self) -> &'static str {
        "stand-in"
    }
    fn input_size(&self) -> InputSize {
        self.inner.input_size()
    }
    fn output_names(&self) -> &[String] {
        self.inner.output_names()
    }
    fn session(&self) -> Result<Box<dyn Session>, BackendError> {
        Ok(Box::new(StandInSession {
            inner: self.inner.session()?,
            error: self.error,
        }))
    }
}

struct StandInSession {
    inner: Box<dyn Session>,
    error: Error,
}

impl Session for StandInSession {
    fn run(&mut self, input: &InputTensor) -> Result<BackboneOutputs, BackendError> {
        let out = self.inner.run(input)?;
        let tensors = out
            .tensors
            .into_iter()
            .map(|t| {
                let mut data = t.data().to_vec();
                let rms = (data.iter().map(|v| v * v).sum::<f32>() / data.len() as f32).sqrt();
                match self.error {
                    Error::Noise(scale) => {
                        for (i, v) in data.iter_mut().enumerate() {
                            let u = ((i as f32 * 12.9898).sin() * 43758.547).fract() * 2.0 - 1.0;
                            *v += scale * rms * u;
                        }
                    }
                    Error::Nan if t.name == "patch_tokens" => data[5] = f32::NAN,
                    Error::Nan => {}
                }
                OutputTensor::new(t.name.clone(), t.shape.clone(), Box::new(data)).unwrap()
            })
            .collect();
        Ok(BackboneOutputs { tensors })
    }
}

fn tiny() -> (BackboneModel, InputSize) {
    let model = BackboneModel::load(&fixture("tiny/dinov3_tiny.onnx")).unwrap();
    let size = model.fixed_input_size().unwrap();
    (model, size)
}

fn settings(on_failure: OnBackendFailure) -> BackendSettings {
    let mut s = BackendSettings::tract(1);
    s.on_failure = on_failure;
    s
}

fn gated(
    error: Error,
    arithmetic: Arithmetic,
    s: &BackendSettings,
) -> Result<LoadedBackbone, BackendError> {
    let (model, size) = tiny();
    LoadedBackbone::gated(model, size, Ok(Box::new(StandIn { error })), arithmetic, s)
}

#[test]
fn a_close_backend_passes_and_runs() {
    let loaded = gated(
        Error::Noise(1e-4),
        Arithmetic::Fp32,
        &settings(OnBackendFailure::Exit),
    )
    .unwrap();
    assert_eq!(loaded.backend, "stand-in");
    let p = loaded.status.parity.as_ref().unwrap();
    assert!(p.passed, "{}", p.summary());
    assert!(p.figures.min_cosine() > 0.9999 && p.figures.min_cosine() < 1.0);
    assert!(p.figures.max_abs > 0.0);
    assert!(loaded.status.fallback.is_none());
    let diag = loaded.status.diagnostics();
    assert!(diag.contains(&("backend".into(), "stand-in".into())));
    assert!(diag.contains(&("parity".into(), "passed".into())));
}

#[test]
fn a_wrong_backend_falls_back_to_tract_with_both_figures() {
    let loaded = gated(
        Error::Noise(0.5),
        Arithmetic::Fp32,
        &settings(OnBackendFailure::Fallback),
    )
    .unwrap();
    assert_eq!(loaded.backend, "tract");
    assert_eq!(loaded.prepared.backend_name(), "tract");
    let p = loaded.status.parity.as_ref().unwrap();
    assert!(!p.passed);
    assert!(p.figures.min_cosine() < 0.99, "{}", p.summary());
    let reason = loaded.status.fallback.as_ref().unwrap();
    assert!(
        reason.contains("parity gate failed") && reason.contains("patch cosine"),
        "{reason}"
    );
    // The tract model it fell back to runs.
    let input = InputTensor::zeros(loaded.size);
    loaded.prepared.session().unwrap().run(&input).unwrap();
    let diag = loaded.status.diagnostics();
    assert!(diag.contains(&("parity".into(), "failed".into())));
    assert!(diag.iter().any(|(k, _)| k == "backend_fallback"));
}

#[test]
fn a_wrong_backend_exits_when_configured() {
    let e = gated(
        Error::Noise(0.5),
        Arithmetic::Fp32,
        &settings(OnBackendFailure::Exit),
    )
    .err()
    .unwrap();
    assert!(matches!(e, BackendError::ParityFailed { .. }), "{e}");
    assert!(e.is_bad_input(), "exit code 2");
    assert!(
        e.to_string().contains("on_backend_failure:=fallback"),
        "{e}"
    );
}

#[test]
fn the_threshold_follows_the_arithmetic_and_the_parameters() {
    // ~1e-4 off in cosine: inside FP16's 0.999, outside FP32's 0.9999.
    let noise = Error::Noise(0.02);
    let s = settings(OnBackendFailure::Exit);
    let fp16 = gated(noise, Arithmetic::Fp16, &s).unwrap();
    let p = fp16.status.parity.unwrap();
    assert!(p.passed && p.threshold == 0.999, "{}", p.summary());
    assert!(p.figures.min_cosine() < 0.9999, "{}", p.summary());
    assert!(gated(noise, Arithmetic::Fp32, &s).is_err());
    let mut lenient = s.clone();
    lenient.parity.fp32 = 0.99;
    assert!(gated(noise, Arithmetic::Fp32, &lenient).is_ok());
    let mut strict = s;
    strict.parity.int8 = 0.99999;
    assert!(gated(noise, Arithmetic::Int8, &strict).is_err());
}

#[test]
fn nan_fails_at_any_threshold() {
    let mut s = settings(OnBackendFailure::Fallback);
    s.parity.fp32 = 0.0;
    let loaded = gated(Error::Nan, Arithmetic::Fp32, &s).unwrap();
    assert_eq!(loaded.backend, "tract");
    assert!(loaded.status.parity.unwrap().figures.min_cosine().is_nan());
}

#[test]
fn an_unavailable_backend_falls_back_or_exits() {
    let (model, size) = tiny();
    let missing = || {
        Err(BackendError::Unavailable {
            backend: "onnxruntime",
            reason: "the tensorrt execution provider is missing".into(),
        })
    };
    let loaded = LoadedBackbone::gated(
        model,
        size,
        missing(),
        Arithmetic::Fp16,
        &settings(OnBackendFailure::Fallback),
    )
    .unwrap();
    assert_eq!(loaded.backend, "tract");
    assert!(loaded.status.parity.is_none());
    assert!(loaded
        .status
        .fallback
        .unwrap()
        .contains("tensorrt execution provider is missing"));
    let (model, size) = tiny();
    let e = LoadedBackbone::gated(
        model,
        size,
        missing(),
        Arithmetic::Fp16,
        &settings(OnBackendFailure::Exit),
    )
    .err()
    .unwrap();
    assert!(e.is_bad_input() && e.to_string().contains("missing"), "{e}");
}

/// Without the feature, asking for onnxruntime says how to rebuild.
#[cfg(not(feature = "onnxruntime"))]
#[test]
fn the_default_build_names_the_feature() {
    use dinov3_perception::backend::settings::BackendKind;
    let mut s = settings(OnBackendFailure::Exit);
    s.kind = BackendKind::OnnxRuntime;
    let e = LoadedBackbone::load(&fixture("tiny/dinov3_tiny.onnx"), None, &s)
        .err()
        .unwrap();
    assert!(e.to_string().contains("--features onnxruntime"), "{e}");
    s.on_failure = OnBackendFailure::Fallback;
    let loaded = LoadedBackbone::load(&fixture("tiny/dinov3_tiny.onnx"), None, &s).unwrap();
    assert_eq!(loaded.backend, "tract");
}

/// `run --no-ros --max-frames 1` with `extra` arguments.
fn run_once(extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--no-ros", "--max-frames", "1"];
    args.extend_from_slice(extra);
    common::bin(&args)
}

#[test]
fn backend_flags_and_parameters_are_checked_naming_them() {
    use common::assert_bad_input;
    for (extra, mention) in [
        (
            &["--backend", "tensorrt"][..],
            &["--backend", "onnxruntime.provider tensorrt"][..],
        ),
        (
            &["--provider", "npu"],
            &["--provider", "cpu, cuda or tensorrt"],
        ),
        (
            &["--on-backend-failure", "retry"],
            &["--on-backend-failure", "fallback or exit"],
        ),
        (
            &["--ros-args", "-p", "tensorrt.precision:=int4"],
            &["tensorrt.precision", "fp16 or fp32"],
        ),
        (
            &["--ros-args", "-p", "parity.min_cosine_fp16:=1.5"],
            &["parity.min_cosine_fp16"],
        ),
    ] {
        assert_bad_input(&run_once(extra), mention);
    }
    // Offline commands take the same flags.
    let model = fixture("tiny/dinov3_tiny.onnx");
    let o = common::bin(&[
        "features",
        "--model",
        model.to_str().unwrap(),
        "--image",
        "x.png",
        "--out",
        "x.npz",
        "--provider",
        "npu",
    ]);
    assert_bad_input(&o, &["--provider"]);
}

/// Without the feature, `--backend onnxruntime` runs on tract and says how to rebuild.
#[cfg(not(feature = "onnxruntime"))]
#[test]
fn the_default_build_falls_back_naming_the_feature() {
    let o = run_once(&["--no-heads", "--backend", "onnxruntime"]);
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("--features onnxruntime") && err.contains("prepared on tract"),
        "{err}"
    );
}
