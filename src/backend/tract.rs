//! CPU backend on `tract` (pure Rust ONNX).
//!
//! tract runs single-threaded unless matrix products get a multithreaded executor: this crate
//! enables `tract-linalg`'s `multithread-mm` feature and gives each prepared plan its own rayon
//! pool of `threads` workers (no global state, so two models can use different counts).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_core::tract_linalg::multithread::Executor;

use super::{
    default_threads, BackboneOutputs, Backend, BackendError, InputTensor, OutputStorage,
    OutputTensor, PreparedModel, Session,
};
use crate::model::{BackboneModel, InputSize};

const NAME: &str = "tract";

/// The tract CPU backend.
#[derive(Debug, Clone)]
pub struct TractBackend {
    threads: usize,
}

impl TractBackend {
    /// A backend whose matrix products use `threads` threads (0 = all available cores).
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        Self { threads }
    }

    /// Threads used for matrix products.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self) -> Result<(), BackendError> {
        // Pure Rust: runs wherever the binary runs.
        Ok(())
    }

    fn prepare(
        &self,
        model: &BackboneModel,
        size: InputSize,
    ) -> Result<Arc<dyn PreparedModel>, BackendError> {
        model.validate_size(size)?;
        if let Some(q) = &model.manifest.quantization {
            return Err(BackendError::Unavailable {
                backend: NAME,
                reason: format!(
                    "{} is quantised ({}) and runs on backend onnxruntime; tract runs its float model {} (beside it)",
                    model.onnx_path.display(),
                    q.method,
                    q.float_onnx_file
                ),
            });
        }
        let prepare_err = |e: TractError| BackendError::Prepare {
            backend: NAME,
            model: model.onnx_path.display().to_string(),
            reason: format!("{e:#}"),
        };
        let inference = model.tract_model()?;
        let inference = inference
            .with_input_fact(0, f32::fact([1, 3, size.height, size.width]).into())
            .map_err(prepare_err)?;
        let typed = inference.into_optimized().map_err(prepare_err)?;
        let output_names = model.manifest.outputs.clone();
        if typed.outputs.len() != output_names.len() {
            return Err(BackendError::Prepare {
                backend: NAME,
                model: model.onnx_path.display().to_string(),
                reason: format!(
                    "the optimised graph has {} outputs, the manifest names {}",
                    typed.outputs.len(),
                    output_names.len()
                ),
            });
        }
        let executor = if self.threads > 1 {
            Executor::multithread_with_name(self.threads, "dinov3-mm")
        } else {
            Executor::SingleThread
        };
        let options = RunOptions {
            executor: Some(executor),
            ..RunOptions::default()
        };
        let plan = typed
            .into_runnable_with_options(&options)
            .map_err(prepare_err)?;
        Ok(Arc::new(TractPrepared {
            plan,
            size,
            output_names,
        }))
    }
}

/// A tract plan compiled for one input size.
#[derive(Debug)]
pub struct TractPrepared {
    plan: Arc<TypedRunnableModel>,
    size: InputSize,
    output_names: Vec<String>,
}

impl PreparedModel for TractPrepared {
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
        let state = self.plan.spawn().map_err(run_err)?;
        Ok(Box::new(TractSession {
            state,
            shape: [1, 3, self.size.height, self.size.width],
            output_names: self.output_names.clone(),
        }))
    }
}

struct TractSession {
    state: TypedSimpleState,
    shape: [usize; 4],
    output_names: Vec<String>,
}

fn run_err(e: TractError) -> BackendError {
    BackendError::Run {
        backend: NAME,
        reason: format!("{e:#}"),
    }
}

/// A tract tensor known to hold plain f32 values in host memory.
struct TractOutput(Tensor);

impl OutputStorage for TractOutput {
    fn as_f32(&self) -> &[f32] {
        // `TractOutput` is only built from plain f32 tensors (see `into_output`), so the
        // fallback is unreachable.
        self.0
            .as_plain_ram()
            .and_then(|v| v.as_slice::<f32>().ok())
            .unwrap_or(&[])
    }
}

fn into_output(name: &str, value: TValue) -> Result<OutputTensor, BackendError> {
    let mut tensor = value.into_tensor();
    if tensor.datum_type() != f32::datum_type() {
        tensor = tensor.cast_to::<f32>().map_err(run_err)?.into_owned();
    }
    if tensor.as_plain_ram().is_none() {
        tensor = tensor.into_plain_ram().map_err(run_err)?;
    }
    let shape = tensor.shape().to_vec();
    OutputTensor::new(name.to_string(), shape, Box::new(TractOutput(tensor))).map_err(|reason| {
        BackendError::Run {
            backend: NAME,
            reason,
        }
    })
}

impl Session for TractSession {
    fn run(&mut self, input: &InputTensor) -> Result<BackboneOutputs, BackendError> {
        if input.shape != self.shape {
            return Err(BackendError::InputShape {
                expected: self.shape,
                actual: input.shape,
            });
        }
        let tensor = Tensor::from_shape::<f32>(&input.shape, &input.data).map_err(run_err)?;
        let outputs = self.state.run(tvec![tensor.into()]).map_err(run_err)?;
        let tensors = outputs
            .into_iter()
            .zip(&self.output_names)
            .map(|(value, name)| into_output(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BackboneOutputs { tensors })
    }
}
