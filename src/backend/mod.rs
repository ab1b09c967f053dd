//! Inference backends, split the way deployment needs it:
//!
//! * [`Backend::check`] says whether the backend can run on this machine at all;
//! * [`Backend::prepare`] compiles a model once for one static input size (the slow part;
//!   the result is shared, `Send + Sync`);
//! * [`PreparedModel::session`] makes a per-thread [`Session`] holding its own scratch state and
//!   buffers, and [`Session::run`] is the hot path.
//!
//! Static shapes per prepared model and named outputs are what a TensorRT engine needs too
//! (one engine per resolution, named device buffers): the onnxruntime backend (feature
//! `onnxruntime`, with CPU, CUDA and TensorRT providers) sits behind the same traits. An
//! accelerated backend is only used after the start-up parity gate ([`parity`]) found its
//! outputs equal to tract's; [`LoadedBackbone::load`] decides which backend runs.

pub mod engine_cache;
mod loaded;
pub mod native;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
pub mod parity;
pub mod settings;
pub mod tensorrt;
pub mod tract;

pub use loaded::{describe, BackendStatus, LoadedBackbone, Notify};

use std::sync::Arc;

use crate::model::{BackboneModel, InputSize, ModelError};

/// Available cores, or 1 when unknown: the default thread count of every CPU backend.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Errors from a backend. Each names what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run here.
    #[error("backend {backend} is not available: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Why, and the fix.
        reason: String,
    },
    /// The model could not be prepared.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The backend failed to compile the model.
    #[error("backend {backend} cannot prepare {model}: {reason}")]
    Prepare {
        /// Backend name.
        backend: &'static str,
        /// Model file.
        model: String,
        /// The backend's error chain.
        reason: String,
    },
    /// The input tensor does not have the prepared shape.
    #[error("input tensor has shape {actual:?}, the prepared model takes {expected:?}")]
    InputShape {
        /// Prepared shape.
        expected: [usize; 4],
        /// Offered shape.
        actual: [usize; 4],
    },
    /// The accelerated backend's outputs differ from tract's beyond the threshold
    /// (`on_backend_failure: exit`).
    #[error("backend {backend} failed the start-up parity gate against tract: {summary}; fix the engine (another precision, TensorRT version or export), or set on_backend_failure:=fallback to run on tract")]
    ParityFailed {
        /// Backend name.
        backend: &'static str,
        /// The figures and threshold.
        summary: String,
    },
    /// Running the model failed.
    #[error("backend {backend} failed to run: {reason}")]
    Run {
        /// Backend name.
        backend: &'static str,
        /// The backend's error chain.
        reason: String,
    },
}

impl BackendError {
    /// Whether the error comes from input the user can fix (model file, size, configuration).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            BackendError::Model(_)
                | BackendError::InputShape { .. }
                | BackendError::Unavailable { .. }
                | BackendError::ParityFailed { .. }
        )
    }
}

/// A dense NCHW float32 image tensor, batch 1.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    /// `[1, 3, H, W]`.
    pub shape: [usize; 4],
    /// Row-major values.
    pub data: Vec<f32>,
}

impl InputTensor {
    /// A zero tensor of `size`.
    pub fn zeros(size: InputSize) -> Self {
        Self {
            shape: [1, 3, size.height, size.width],
            data: vec![0.0; 3 * size.height * size.width],
        }
    }

    /// Spatial size.
    pub fn size(&self) -> InputSize {
        InputSize {
            height: self.shape[2],
            width: self.shape[3],
        }
    }
}

/// One named float32 output, owned by the backend's buffer type (no copy on the way out).
pub struct OutputTensor {
    /// Output name (`cls`, `registers`, `patch_tokens`, `layer_<i>`).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    storage: Box<dyn OutputStorage>,
}

impl std::fmt::Debug for OutputTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputTensor")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Host memory holding an output's values. Backends implement it for their own buffers.
pub trait OutputStorage: Send + Sync {
    /// The values, row-major.
    fn as_f32(&self) -> &[f32];
}

impl OutputStorage for Vec<f32> {
    fn as_f32(&self) -> &[f32] {
        self
    }
}

impl OutputTensor {
    /// Wrap backend storage. Fails if the storage's length does not match the shape.
    pub fn new(
        name: String,
        shape: Vec<usize>,
        storage: Box<dyn OutputStorage>,
    ) -> Result<Self, String> {
        let expected: usize = shape.iter().product();
        let len = storage.as_f32().len();
        if expected != len {
            return Err(format!(
                "output {name} has {len} values for shape {shape:?} ({expected})"
            ));
        }
        Ok(Self {
            name,
            shape,
            storage,
        })
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        self.storage.as_f32()
    }
}

/// All outputs of one backbone pass, in the model's output order.
#[derive(Debug, Default)]
pub struct BackboneOutputs {
    /// Outputs in graph order.
    pub tensors: Vec<OutputTensor>,
}

impl BackboneOutputs {
    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&OutputTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// An inference backend (tract on CPU; onnxruntime on CPU, CUDA or TensorRT).
pub trait Backend: Send + Sync {
    /// Short name used in configuration and logs (`tract`, `onnxruntime`).
    fn name(&self) -> &'static str;
    /// Whether this backend can run on this machine.
    fn check(&self) -> Result<(), BackendError>;
    /// Compile `model` for one input size. Slow; do it once at start-up.
    fn prepare(
        &self,
        model: &BackboneModel,
        size: InputSize,
    ) -> Result<Arc<dyn PreparedModel>, BackendError>;
}

/// A model compiled for one input size, shared between threads.
pub trait PreparedModel: Send + Sync {
    /// The backend that prepared it.
    fn backend_name(&self) -> &'static str;
    /// The input size it was compiled for.
    fn input_size(&self) -> InputSize;
    /// Output names in order.
    fn output_names(&self) -> &[String];
    /// A new session (per thread; holds scratch buffers between runs).
    fn session(&self) -> Result<Box<dyn Session>, BackendError>;
}

/// Per-thread execution state of a [`PreparedModel`].
pub trait Session: Send {
    /// Run one backbone pass.
    fn run(&mut self, input: &InputTensor) -> Result<BackboneOutputs, BackendError>;
}
