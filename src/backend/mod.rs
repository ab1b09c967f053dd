//! Inference backends, split the way deployment needs it:
//!
//! * [`Backend::check`] says whether the backend can run on this machine at all;
//! * [`Backend::prepare`] compiles a model once for one static input size (the slow part;
//!   the result is shared, `Send + Sync`);
//! * [`PreparedModel::session`] makes a per-thread [`Session`] holding its own scratch state and
//!   buffers, and [`Session::run`] is the hot path.
//!
//! Static shapes per prepared model and named outputs are what a TensorRT engine needs too
//! (one engine per resolution, named device buffers), so a `tensorrt` backend slots in behind the
//! same traits.

pub mod tract;

use std::sync::Arc;

use crate::model::{BackboneModel, InputSize, ModelError};

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

/// An inference backend (tract on CPU, TensorRT on Jetson).
pub trait Backend: Send + Sync {
    /// Short name used in configuration and logs (`tract`, `tensorrt`).
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

/// Available backends, by name.
pub const BACKEND_NAMES: &[&str] = &["tract", "tensorrt"];

/// Choose a backend by name. `tensorrt` is an error until its runtime layer lands; the caller
/// may fall back to tract.
pub fn backend_by_name(name: &str, threads: usize) -> Result<Box<dyn Backend>, BackendError> {
    match name {
        "tract" => Ok(Box::new(tract::TractBackend::new(threads))),
        "tensorrt" => Err(BackendError::Unavailable {
            backend: "tensorrt",
            reason: "the TensorRT backend is not part of this build yet; use backend tract".into(),
        }),
        other => Err(BackendError::Unavailable {
            backend: "unknown",
            reason: format!("no backend named {other:?}; choose one of {BACKEND_NAMES:?}"),
        }),
    }
}

/// A backbone loaded, checked and compiled for one input size: how every command that runs the
/// backbone starts.
pub struct LoadedBackbone {
    /// The model file and its manifest.
    pub model: BackboneModel,
    /// The input size it was prepared for.
    pub size: InputSize,
    /// The compiled model.
    pub prepared: Arc<dyn PreparedModel>,
    /// Name of the backend that prepared it.
    pub backend: &'static str,
}

impl LoadedBackbone {
    /// Load `path` (manifest and sha256 checked), resolve the input size (`input_size` for a
    /// dynamic model), check the backend named `backend` and prepare the model on it.
    pub fn load(
        path: &std::path::Path,
        input_size: Option<InputSize>,
        backend: &str,
        threads: usize,
    ) -> Result<Self, BackendError> {
        let model = BackboneModel::load(path)?;
        let size = model.resolve_size(input_size)?;
        let backend = backend_by_name(backend, threads)?;
        backend.check()?;
        let prepared = backend.prepare(&model, size)?;
        Ok(Self {
            model,
            size,
            prepared,
            backend: backend.name(),
        })
    }

    /// The patch grid (rows, columns) at the prepared size.
    pub fn grid(&self) -> (usize, usize) {
        let p = self.model.manifest.patch_size;
        (self.size.height / p, self.size.width / p)
    }
}
