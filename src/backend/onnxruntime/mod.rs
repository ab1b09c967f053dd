//! The onnxruntime backend (feature `onnxruntime`): ONNX Runtime loaded at run time through
//! the `ort` crate, on one execution provider for the whole graph.
//!
//! * `cpu`: ONNX Runtime's own kernels (MLAS), `threads` intra-op threads.
//! * `cuda`: the CUDA provider on GPU `device_id` (ONNX Runtime may place shape arithmetic on
//!   the CPU, as it does for every CUDA model).
//! * `tensorrt`: only the TensorRT provider is registered and CPU fallback is disabled
//!   (`session.disable_cpu_ep_fallback`), so a graph TensorRT cannot take whole fails at
//!   start-up instead of running half on the CPU. Engine and timing caches live in a directory
//!   keyed by model, ONNX Runtime, TensorRT, GPU, precision and input shape
//!   ([`crate::backend::engine_cache`]).
//!
//! The prepared model holds one ONNX Runtime session (an engine build is minutes on a Jetson;
//! a second session would build a second engine); sessions handed to threads share it.

#[allow(
    unsafe_code,
    reason = "FFI: libcuda and libnvinfer probes loaded at run time"
)]
pub mod gpu;
pub mod graph;
#[allow(
    unsafe_code,
    reason = "FFI: the ONNX Runtime library loaded at run time"
)]
pub mod library;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::ep::{TensorRT, CUDA};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::TensorRef;

use super::engine_cache::{self, EngineCacheKey};
use super::settings::{
    BackendSettings, OnnxRuntimeSettings, Provider, TensorRtPrecision, TensorRtSettings,
};
use super::tensorrt::known_reports;
use super::{
    default_threads, BackboneOutputs, Backend, BackendError, InputTensor, Notify, OutputTensor,
    PreparedModel, Session,
};
use crate::model::{BackboneModel, InputSize};

const NAME: &str = "onnxruntime";

/// How sessions are opened: library, provider, threads; shared by the backbone and the head
/// graphs (`onnxruntime.heads`).
#[derive(Clone)]
pub struct SessionFactory {
    settings: OnnxRuntimeSettings,
    tensorrt: TensorRtSettings,
    threads: usize,
    notify: Notify,
}

impl std::fmt::Debug for SessionFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionFactory")
            .field("settings", &self.settings)
            .field("tensorrt", &self.tensorrt)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// A graph to open a session for.
#[derive(Debug, Clone)]
pub struct GraphTarget<'a> {
    /// The ONNX file.
    pub path: &'a Path,
    /// Its sha256 (part of the engine cache key).
    pub sha256: &'a str,
    /// Engine cache directory label: graph and size (`vits16_224x448`, `heads/depth_14x28`).
    pub label: String,
    /// Every input with the static shape it will be given.
    pub inputs: Vec<(String, Vec<usize>)>,
    /// Symbolic input dimensions to fix (`height`, `width` of a dynamic backbone).
    pub dim_overrides: Vec<(String, usize)>,
    /// Whether the graph's inputs have symbolic dimensions (TensorRT then needs a profile).
    pub dynamic: bool,
    /// The backbone variant, for the warnings about TensorRT versions (`None` for heads).
    pub variant: Option<&'a str>,
}

fn unavailable(reason: String) -> BackendError {
    BackendError::Unavailable {
        backend: NAME,
        reason,
    }
}

fn prepare_err(path: &Path, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Prepare {
        backend: NAME,
        model: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn shapes_text(inputs: &[(String, Vec<usize>)]) -> String {
    inputs
        .iter()
        .map(|(name, dims)| {
            let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
            format!("{name}:{}", dims.join("x"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl SessionFactory {
    /// Sessions as `settings` configure them (library, provider, TensorRT, threads; 0 threads =
    /// all cores); `notify` hears about slow steps (the first TensorRT engine build).
    pub fn new(settings: &BackendSettings, notify: Notify) -> Self {
        let threads = if settings.threads == 0 {
            default_threads()
        } else {
            settings.threads
        };
        Self {
            settings: settings.onnxruntime.clone(),
            tensorrt: settings.tensorrt.clone(),
            threads,
            notify,
        }
    }

    /// The provider this factory opens sessions on.
    pub fn provider(&self) -> Provider {
        self.settings.provider
    }

    /// The loaded runtime, with the configured provider present.
    pub fn check(&self) -> Result<&'static library::Runtime, BackendError> {
        let runtime = library::runtime(self.settings.library.as_deref())?;
        require_provider(runtime, self.settings.provider)?;
        Ok(runtime)
    }

    /// The TensorRT provider for `target`, its cache directory checked or claimed.
    fn tensorrt_provider(
        &self,
        target: &GraphTarget,
        runtime: &library::Runtime,
    ) -> Result<(TensorRT, PathBuf, EngineCacheKey), BackendError> {
        let version = gpu::tensorrt_version().map_err(unavailable)?;
        let gpu = gpu::gpu_name(self.settings.device_id).map_err(unavailable)?;
        let precision = self.tensorrt.precision;
        if let Some(variant) = target.variant {
            for report in known_reports(version, precision, variant) {
                log::warn!("{report}; the start-up parity gate checks this engine against tract");
            }
        }
        let shapes = shapes_text(&target.inputs);
        let key = EngineCacheKey::new(
            target.sha256,
            &runtime.version,
            &version.to_string(),
            &gpu,
            precision.as_str(),
            &shapes,
        );
        let dir = engine_cache::cache_dir_for(&self.tensorrt.cache_dir, &target.label, &key);
        let cache = engine_cache::open(&dir, &key).map_err(|e| unavailable(e.to_string()))?;
        if !cache.built {
            (self.notify)(&format!(
                "building the TensorRT {version} {} engine for {} ({shapes}) on {gpu} (first start with this graph; this takes minutes on a Jetson); cache {}",
                precision.as_str(),
                target.path.display(),
                dir.display()
            ));
            engine_cache::claim(&dir, &key).map_err(|e| {
                unavailable(format!(
                    "cannot write the engine cache {}: {e}; set tensorrt.cache_dir to a writable directory",
                    dir.display()
                ))
            })?;
        }
        let dir_text = dir.display().to_string();
        let mut trt = TensorRT::default()
            .with_device_id(i32::try_from(self.settings.device_id).unwrap_or(0))
            .with_fp16(precision == TensorRtPrecision::Fp16)
            .with_engine_cache(true)
            .with_engine_cache_path(&dir_text)
            .with_timing_cache(true)
            .with_timing_cache_path(&dir_text);
        if target.dynamic {
            trt = trt
                .with_profile_min_shapes(&shapes)
                .with_profile_opt_shapes(&shapes)
                .with_profile_max_shapes(&shapes);
        }
        Ok((trt, dir, key))
    }

    /// A session for `target` on the configured provider.
    pub fn open(&self, target: &GraphTarget) -> Result<ort::session::Session, BackendError> {
        let runtime = self.check()?;
        let path = target.path;
        let builder_err = |e: ort::Error<SessionBuilder>| prepare_err(path, e);
        let mut builder = ort::session::Session::builder(&runtime.environment)
            .map_err(|e| prepare_err(path, e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(builder_err)?
            .with_intra_threads(self.threads)
            .map_err(builder_err)?
            .with_inter_threads(1)
            .map_err(builder_err)?;
        for (dim, value) in &target.dim_overrides {
            builder = builder
                .with_dimension_override(dim, *value as i64)
                .map_err(builder_err)?;
        }
        let mut cache = None;
        match self.settings.provider {
            Provider::Cpu => {}
            Provider::Cuda => {
                let cuda = CUDA::default()
                    .with_device_id(i32::try_from(self.settings.device_id).unwrap_or(0));
                builder = builder
                    .with_execution_providers([cuda.build().error_on_failure()])
                    .map_err(|e| unavailable(format!("the CUDA provider failed to start: {e}")))?;
            }
            Provider::TensorRt => {
                let (trt, dir, key) = self.tensorrt_provider(target, runtime)?;
                let failed = |e: ort::Error<SessionBuilder>| {
                    unavailable(format!("the TensorRT provider failed to start: {e}"))
                };
                builder = builder
                    .with_execution_providers([trt.build().error_on_failure()])
                    .map_err(failed)?
                    .with_disable_cpu_fallback()
                    .map_err(failed)?;
                cache = Some((dir, key));
            }
        }
        let session = builder.commit_from_file(path).map_err(|e| {
            let hint = if self.settings.provider == Provider::TensorRt {
                " (with the TensorRT provider the whole graph must run on TensorRT: export with models/export_backbone.py, which refuses If nodes, opsets below 17 and non-static shapes)"
            } else {
                ""
            };
            prepare_err(path, format!("{e}{hint}"))
        })?;
        if let Some((dir, key)) = cache {
            if let Err(e) = engine_cache::mark_built(&dir, &key) {
                log::warn!(
                    "engine cache {}: cannot record the finished build ({e}); the next start checks it again",
                    dir.display()
                );
            }
        }
        Ok(session)
    }
}

/// The onnxruntime backend.
#[derive(Debug, Clone)]
pub struct OnnxRuntimeBackend {
    factory: SessionFactory,
}

impl OnnxRuntimeBackend {
    /// The backend opening its session through `factory`.
    pub fn new(factory: SessionFactory) -> Self {
        Self { factory }
    }

    /// How its sessions are opened (the head graphs use the same).
    pub fn factory(&self) -> &SessionFactory {
        &self.factory
    }
}

/// Whether the loaded library has `provider`, with the fix when it has not.
fn require_provider(runtime: &library::Runtime, provider: Provider) -> Result<(), BackendError> {
    let name = provider.onnxruntime_name();
    if runtime.providers.iter().any(|p| p == name) {
        return Ok(());
    }
    let fix = match provider {
        Provider::TensorRt => "install an ONNX Runtime built with --use_tensorrt (on Jetson: the jetson-containers / Jetson AI Lab onnxruntime-gpu wheel for your JetPack) and point onnxruntime.library at it, or choose onnxruntime.provider cpu",
        Provider::Cuda => "install onnxruntime-gpu (a CUDA build of ONNX Runtime) and point onnxruntime.library at it, or choose onnxruntime.provider cpu",
        Provider::Cpu => "the library is not a usable ONNX Runtime",
    };
    Err(unavailable(format!(
        "the {provider} execution provider is missing: ONNX Runtime {} at {} has only {}; {fix}",
        runtime.version,
        runtime.path.display(),
        runtime.providers.join(", ")
    )))
}

impl Backend for OnnxRuntimeBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self) -> Result<(), BackendError> {
        self.factory.check().map(|_| ())
    }

    fn prepare(
        &self,
        model: &BackboneModel,
        size: InputSize,
    ) -> Result<Arc<dyn PreparedModel>, BackendError> {
        model.validate_size(size)?;
        let m = &model.manifest;
        let stem = model
            .onnx_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model");
        let dim_overrides = if m.dynamic {
            vec![
                ("height".to_string(), size.height),
                ("width".to_string(), size.width),
            ]
        } else {
            Vec::new()
        };
        let target = GraphTarget {
            path: &model.onnx_path,
            sha256: &m.onnx_sha256,
            label: format!("{stem}_{size}"),
            inputs: vec![(m.input_name.clone(), vec![1, 3, size.height, size.width])],
            dim_overrides,
            dynamic: m.dynamic,
            variant: Some(&m.variant),
        };
        let session = self.factory.open(&target)?;
        let output_names = m.outputs.clone();
        let graph_outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        if graph_outputs != output_names {
            return Err(prepare_err(
                &model.onnx_path,
                format!("the graph outputs {graph_outputs:?}, the manifest names {output_names:?}"),
            ));
        }
        Ok(Arc::new(OrtPrepared {
            inner: Arc::new(Shared {
                session: Mutex::new(session),
                input_name: m.input_name.clone(),
            }),
            size,
            output_names,
        }))
    }
}

struct Shared {
    session: Mutex<ort::session::Session>,
    input_name: String,
}

/// A model prepared on ONNX Runtime for one input size.
pub struct OrtPrepared {
    inner: Arc<Shared>,
    size: InputSize,
    output_names: Vec<String>,
}

impl PreparedModel for OrtPrepared {
    fn backend_name(&self) -> &'static str {
        NAME
    }

    fn input_size(&self) -> InputSize {
        self.size
    }

    fn output_names(&self) -> &[String] {
        &self.output_names
    }

    fn session(&self) -> Result<Box<dyn Session>, BackendError> {
        Ok(Box::new(OrtSession {
            inner: self.inner.clone(),
            shape: [1, 3, self.size.height, self.size.width],
            output_names: self.output_names.clone(),
        }))
    }
}

struct OrtSession {
    inner: Arc<Shared>,
    shape: [usize; 4],
    output_names: Vec<String>,
}

fn run_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Run {
        backend: NAME,
        reason: e.to_string(),
    }
}

impl Session for OrtSession {
    fn run(&mut self, input: &InputTensor) -> Result<BackboneOutputs, BackendError> {
        if input.shape != self.shape {
            return Err(BackendError::InputShape {
                expected: self.shape,
                actual: input.shape,
            });
        }
        let tensor =
            TensorRef::from_array_view((self.shape, input.data.as_slice())).map_err(run_err)?;
        let mut session = self
            .inner
            .session
            .lock()
            .map_err(|_| run_err("a previous run panicked while holding the session"))?;
        let outputs = session
            .run(ort::inputs![self.inner.input_name.as_str() => tensor])
            .map_err(run_err)?;
        let mut tensors = Vec::with_capacity(self.output_names.len());
        for name in &self.output_names {
            let value = outputs
                .get(name)
                .ok_or_else(|| run_err(format!("the session gave no output {name}")))?;
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(run_err)?;
            let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            tensors.push(
                OutputTensor::new(name.clone(), shape, Box::new(data.to_vec())).map_err(run_err)?,
            );
        }
        Ok(BackboneOutputs { tensors })
    }
}
