//! Which backend runs the backbone, decided once at start-up.
//!
//! tract runs when asked for. An accelerated backend (onnxruntime on CPU, CUDA or TensorRT) is
//! checked, prepared, then put through the parity gate against tract on the float model; if
//! any step fails the node falls back to tract or exits, as `on_backend_failure` says, and the
//! outcome is kept in [`BackendStatus`] for the log and `/diagnostics`.

use std::path::Path;
use std::sync::Arc;

use super::native::NativeBackend;
use super::parity::{self, Arithmetic, ParityReport};
use super::settings::{
    BackendKind, BackendSettings, OnBackendFailure, Provider, TensorRtPrecision,
};
use super::tract::TractBackend;
use super::{Backend, BackendError, PreparedModel};
use crate::model::{BackboneModel, InputSize, ModelError, ModelFormat};

/// Called with a status line while a slow start-up step runs (the first TensorRT engine build).
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

/// How the backend choice came out.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    /// What the configuration asked for (`onnxruntime (tensorrt, fp16)`).
    pub requested: String,
    /// The backend that runs.
    pub in_use: &'static str,
    /// The parity gate's verdict, when one ran.
    pub parity: Option<ParityReport>,
    /// Why the requested backend is not the one in use.
    pub fallback: Option<String>,
}

impl BackendStatus {
    /// Key-value pairs for `/diagnostics`.
    pub fn diagnostics(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("backend".to_string(), self.in_use.to_string()),
            ("backend_requested".to_string(), self.requested.clone()),
        ];
        match &self.parity {
            Some(p) => out.extend([
                (
                    "parity".to_string(),
                    if p.passed { "passed" } else { "failed" }.to_string(),
                ),
                (
                    "parity_patch_cosine".to_string(),
                    format!("{:.7}", p.figures.patch_cosine),
                ),
                (
                    "parity_cls_cosine".to_string(),
                    format!("{:.7}", p.figures.cls_cosine),
                ),
                (
                    "parity_max_abs".to_string(),
                    format!("{:.3e}", p.figures.max_abs),
                ),
                (
                    "parity_threshold".to_string(),
                    format!("{} {}", p.arithmetic.as_str(), p.threshold),
                ),
            ]),
            None => out.push((
                "parity".to_string(),
                "not run (native and tract run ungated; tract is the reference)".into(),
            )),
        }
        if let Some(reason) = &self.fallback {
            out.push(("backend_fallback".to_string(), reason.clone()));
        }
        out
    }
}

/// A backbone loaded, checked and compiled for one input size: how every command that runs the
/// backbone starts.
pub struct LoadedBackbone {
    /// The model file and its manifest (the float model when tract took over from a quantised
    /// one).
    pub model: BackboneModel,
    /// The input size it was prepared for.
    pub size: InputSize,
    /// The compiled model.
    pub prepared: Arc<dyn PreparedModel>,
    /// Name of the backend that prepared it.
    pub backend: &'static str,
    /// How the choice came out.
    pub status: BackendStatus,
}

/// What `settings` asks for, in words.
pub fn describe(settings: &BackendSettings) -> String {
    match settings.kind {
        BackendKind::Tract => "tract".to_string(),
        BackendKind::Native => "native".to_string(),
        BackendKind::OnnxRuntime => match settings.onnxruntime.provider {
            Provider::TensorRt => format!(
                "onnxruntime (tensorrt, {})",
                settings.tensorrt.precision.as_str()
            ),
            p => format!("onnxruntime ({p})"),
        },
    }
}

/// The arithmetic the gate judges `model` on `settings` by.
pub fn arithmetic(settings: &BackendSettings, model: &BackboneModel) -> Arithmetic {
    if model.manifest.quantization.is_some() {
        Arithmetic::Int8
    } else if settings.onnxruntime.provider == Provider::TensorRt
        && settings.tensorrt.precision == TensorRtPrecision::Fp16
    {
        Arithmetic::Fp16
    } else {
        Arithmetic::Fp32
    }
}

/// The accelerated backend `settings` asks for.
#[cfg(feature = "onnxruntime")]
fn accelerated(
    settings: &BackendSettings,
    notify: Notify,
) -> Result<Box<dyn Backend>, BackendError> {
    use super::onnxruntime::{OnnxRuntimeBackend, SessionFactory};
    Ok(Box::new(OnnxRuntimeBackend::new(SessionFactory::new(
        settings, notify,
    ))))
}

/// The accelerated backend `settings` asks for: not in this build.
#[cfg(not(feature = "onnxruntime"))]
fn accelerated(
    _settings: &BackendSettings,
    _notify: Notify,
) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::Unavailable {
        backend: "onnxruntime",
        reason: "this build has no onnxruntime backend: rebuild with `cargo build --release --features onnxruntime` (ONNX Runtime itself is loaded at run time, nothing is needed to build)".into(),
    })
}

/// The float model a quantised `model` was made from (the parity reference and what tract
/// runs); `None` for a float model.
pub fn float_model(model: &BackboneModel) -> Result<Option<BackboneModel>, BackendError> {
    let Some(q) = &model.manifest.quantization else {
        return Ok(None);
    };
    let dir = model.onnx_path.parent().unwrap_or(Path::new("."));
    let path = dir.join(&q.float_onnx_file);
    let float = BackboneModel::load(&path)?;
    if float.manifest.onnx_sha256 != q.float_onnx_sha256 {
        return Err(BackendError::Model(ModelError::Mismatch {
            manifest: model.manifest_path.clone(),
            onnx: path,
            reason: format!(
                "the quantised model was made from a float model of sha256 {}, this file has {}",
                &q.float_onnx_sha256.chars().take(12).collect::<String>(),
                &float
                    .manifest
                    .onnx_sha256
                    .chars()
                    .take(12)
                    .collect::<String>()
            ),
        }));
    }
    Ok(Some(float))
}

impl LoadedBackbone {
    /// Load `path` (manifest and sha256 checked), resolve the input size (`input_size` for a
    /// dynamic model) and prepare it on the backend `settings` ask for (gated, with fallback).
    /// Slow start-up steps are logged as warnings.
    pub fn load(
        path: &Path,
        input_size: Option<InputSize>,
        settings: &BackendSettings,
    ) -> Result<Self, BackendError> {
        Self::load_notified(
            path,
            input_size,
            settings,
            Arc::new(|line: &str| log::warn!("{line}")),
        )
    }

    /// [`LoadedBackbone::load`], with `notify` told about slow start-up steps.
    pub fn load_notified(
        path: &Path,
        input_size: Option<InputSize>,
        settings: &BackendSettings,
        notify: Notify,
    ) -> Result<Self, BackendError> {
        let model = BackboneModel::load(path)?;
        let size = model.resolve_size(input_size)?;
        match settings.kind {
            BackendKind::Tract => {
                let backend = TractBackend::new(settings.threads);
                let prepared = backend.prepare(&model, size)?;
                Ok(Self::released(Self {
                    model,
                    size,
                    prepared,
                    backend: backend.name(),
                    status: BackendStatus {
                        requested: describe(settings),
                        in_use: backend.name(),
                        parity: None,
                        fallback: None,
                    },
                }))
            }
            BackendKind::Native => Self::native(model, size, settings),
            BackendKind::OnnxRuntime => {
                let arithmetic = arithmetic(settings, &model);
                let candidate = accelerated(settings, notify);
                Self::gated(model, size, candidate, arithmetic, settings)
            }
        }
    }

    /// The native engine; tract instead when it cannot run an ONNX model (no checkpoint folder
    /// beside it) and `on_backend_failure` is `fallback`. The engine is checked against
    /// PyTorch by the tests, not gated against tract at start-up (a folder has no graph).
    fn native(
        model: BackboneModel,
        size: InputSize,
        settings: &BackendSettings,
    ) -> Result<Self, BackendError> {
        let native = NativeBackend::new(settings.threads);
        let status = |in_use: &'static str, fallback: Option<String>| BackendStatus {
            requested: describe(settings),
            in_use,
            parity: None,
            fallback,
        };
        match native.prepare(&model, size) {
            Ok(prepared) => Ok(Self::released(Self {
                model,
                size,
                prepared,
                backend: native.name(),
                status: status(native.name(), None),
            })),
            Err(e)
                if settings.on_failure == OnBackendFailure::Fallback
                    && model.format == ModelFormat::Onnx
                    && matches!(e, BackendError::Unavailable { .. }) =>
            {
                log::warn!(
                    "native cannot run {}: {e}; running on tract instead",
                    model.onnx_path.display()
                );
                let tract = TractBackend::new(settings.threads);
                let prepared = tract.prepare(&model, size)?;
                Ok(Self::released(Self {
                    model,
                    size,
                    prepared,
                    backend: tract.name(),
                    status: status(tract.name(), Some(e.to_string())),
                }))
            }
            Err(e) => Err(e),
        }
    }

    /// Prepare `model` on `candidate`, gate it against tract, and fall back or fail as
    /// `settings.on_failure` says. `candidate` is an error when the backend does not exist here.
    pub fn gated(
        model: BackboneModel,
        size: InputSize,
        candidate: Result<Box<dyn Backend>, BackendError>,
        arithmetic: Arithmetic,
        settings: &BackendSettings,
    ) -> Result<Self, BackendError> {
        let requested = describe(settings);
        let float = float_model(&model)?;
        let reference_model = float.as_ref().unwrap_or(&model);
        let attempt = candidate.and_then(|backend| {
            backend.check()?;
            let prepared = backend.prepare(&model, size)?;
            Ok((backend.name(), prepared))
        });
        let tract = TractBackend::new(settings.threads);
        let (reason, error, report, reference) = match attempt {
            Err(e) => (e.to_string(), e, None, None),
            Ok((name, prepared)) => {
                let reference = tract.prepare(reference_model, size)?;
                let probe = parity::probe_input(
                    size,
                    reference_model.manifest.image_mean,
                    reference_model.manifest.image_std,
                );
                match parity::gate(
                    reference.as_ref(),
                    prepared.as_ref(),
                    &probe,
                    arithmetic,
                    &settings.parity,
                ) {
                    Ok(report) if report.passed => {
                        log::info!(
                            "parity gate of {requested} against tract: {}",
                            report.summary()
                        );
                        return Ok(Self::released(Self {
                            model,
                            size,
                            prepared,
                            backend: name,
                            status: BackendStatus {
                                requested,
                                in_use: name,
                                parity: Some(report),
                                fallback: None,
                            },
                        }));
                    }
                    Ok(report) => {
                        let summary = report.summary();
                        log::error!("parity gate of {requested} against tract: {summary}");
                        (
                            format!("parity gate failed: {summary}"),
                            BackendError::ParityFailed {
                                backend: name,
                                summary,
                            },
                            Some(report),
                            Some(reference),
                        )
                    }
                    Err(e) => (e.to_string(), e, None, Some(reference)),
                }
            }
        };
        match settings.on_failure {
            OnBackendFailure::Exit => Err(error),
            OnBackendFailure::Fallback => {
                log::error!(
                    "{requested} cannot be used: {reason}; running on tract instead (on_backend_failure:=exit stops the node instead)"
                );
                let prepared = match reference {
                    Some(r) => r,
                    None => tract.prepare(reference_model, size)?,
                };
                Ok(Self::released(Self {
                    model: float.unwrap_or(model),
                    size,
                    prepared,
                    backend: tract.name(),
                    status: BackendStatus {
                        requested,
                        in_use: tract.name(),
                        parity: report,
                        fallback: Some(reason),
                    },
                }))
            }
        }
    }

    /// `self` with the model's decoded graph dropped: every backend has prepared it by now, and
    /// it holds about the model's size in memory for the rest of the run.
    fn released(mut self) -> Self {
        self.model.release_graph();
        self
    }

    /// The patch grid (rows, columns) at the prepared size.
    pub fn grid(&self) -> (usize, usize) {
        let p = self.model.manifest.patch_size;
        (self.size.height / p, self.size.width / p)
    }
}
