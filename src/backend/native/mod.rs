//! The native backend: a DINOv3 ViT forward pass written for this one architecture, in pure
//! Rust, reading Hugging Face checkpoints (`config.json` + `model.safetensors`) directly.
//!
//! * [`checkpoint`] maps `model.safetensors` and looks tensors up by name with shape checks;
//! * [`vit`] is the forward pass (one struct per block part) and its [`vit::Workspace`];
//! * [`gemm`] is the matrix product (weights packed once at load, activations read in place,
//!   bias / residual / GELU fused into the store), [`kernels`] the element-wise and row kernels,
//!   both safe code; [`cpu`] holds every `unsafe` block: run-time instruction-set dispatch of
//!   those kernels, the attention's shared output and the checkpoint's memory map.
//!
//! Each prepared model owns a [`cpu::Team`] of `threads` threads (the caller and `threads - 1`
//! workers); a session owns the buffers of its input size. A pass of the engine allocates
//! nothing; [`Session::run`] allocates only the output tensors it hands back.

pub mod checkpoint;
#[allow(
    unsafe_code,
    reason = "SIMD intrinsics, the thread team's shared buffers, madvise"
)]
pub mod cpu;
pub mod gemm;
pub mod kernels;
pub mod vit;

use std::sync::Arc;

use super::{
    default_threads, BackboneOutputs, Backend, BackendError, InputTensor, OutputTensor,
    PreparedModel, Session,
};
use crate::model::hf::ViTConfig;
use crate::model::{BackboneModel, InputSize, ModelError};
use checkpoint::Checkpoint;
use vit::{Vit, Workspace};

const NAME: &str = "native";

/// The native CPU backend.
#[derive(Debug, Clone)]
pub struct NativeBackend {
    threads: usize,
}

impl NativeBackend {
    /// A backend on `threads` threads (0 = all available cores).
    pub fn new(threads: usize) -> Self {
        Self {
            threads: if threads == 0 {
                default_threads()
            } else {
                threads
            },
        }
    }
}

/// The model's weights, converted, with the team that runs them: what a batch caller (the
/// benchmark, several cameras) uses directly.
pub struct NativeEngine {
    vit: Vit,
    team: cpu::Team,
}

impl NativeEngine {
    /// Load the checkpoint folder of `model` for `threads` threads.
    pub fn load(model: &BackboneModel, threads: usize) -> Result<Self, BackendError> {
        if let Some(q) = &model.manifest.quantization {
            return Err(BackendError::Unavailable {
                backend: NAME,
                reason: format!(
                    "{} is quantised ({}) for onnxruntime; the native engine runs the float weights (its float model {}, or the checkpoint folder)",
                    model.onnx_path.display(),
                    q.method,
                    q.float_onnx_file
                ),
            });
        }
        let Some((dir, sha256)) = model.weights_folder() else {
            return Err(BackendError::Unavailable {
                backend: NAME,
                reason: format!(
                    "{} has no checkpoint folder beside it (its manifest names no weights_dir): export it again with models/export_backbone.py, which writes NAME.hf/ beside the ONNX, or give the Hugging Face folder as the model",
                    model.onnx_path.display()
                ),
            });
        };
        let config = ViTConfig::read(&dir)?;
        let m = &model.manifest;
        let bad = |reason: String| {
            BackendError::Model(ModelError::BadCheckpoint {
                path: dir.clone(),
                reason,
            })
        };
        if (
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
        ) != (m.hidden_size, m.num_layers, m.num_heads)
            || config.num_register_tokens != m.num_register_tokens
            || config.patch_size != m.patch_size
        {
            return Err(bad(format!(
                "config.json (C {}, {} blocks, {} heads, {} registers, patch {}) does not match the manifest {} (C {}, {} blocks, {} heads, {} registers, patch {})",
                config.hidden_size,
                config.num_hidden_layers,
                config.num_attention_heads,
                config.num_register_tokens,
                config.patch_size,
                model.manifest_path.display(),
                m.hidden_size,
                m.num_layers,
                m.num_heads,
                m.num_register_tokens,
                m.patch_size
            )));
        }
        let checkpoint = Checkpoint::open(&dir, sha256)?;
        let tensors = checkpoint.tensors()?;
        let vit = Vit::load(&config, &tensors, &m.layers)?;
        let team = cpu::Team::new(threads).map_err(|e| BackendError::Unavailable {
            backend: NAME,
            reason: format!("cannot start {threads} worker threads: {e}"),
        })?;
        Ok(Self { vit, team })
    }

    /// Buffers for `batch` images of `size`.
    pub fn workspace(&self, size: InputSize, batch: usize) -> Workspace {
        Workspace::new(&self.vit, size, batch, self.team.threads())
    }

    /// One pass over up to `ws.batch()` images (`[3, H, W]` each) on the engine's team.
    /// Allocates nothing.
    pub fn forward(&self, ws: &mut Workspace, images: &[&[f32]]) {
        self.vit.forward(ws, images, &self.team);
    }

    /// Output `name` of image `b` after [`NativeEngine::forward`].
    pub fn output<'w>(
        &self,
        ws: &'w Workspace,
        name: &str,
        b: usize,
    ) -> Option<(Vec<usize>, &'w [f32])> {
        ws.output(&self.vit, name, b)
    }

    /// The instruction set the kernels run with.
    pub fn isa(&self) -> cpu::Isa {
        cpu::isa()
    }
}

impl Backend for NativeBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn prepare(
        &self,
        model: &BackboneModel,
        size: InputSize,
    ) -> Result<Arc<dyn PreparedModel>, BackendError> {
        model.validate_size(size)?;
        let engine = NativeEngine::load(model, self.threads)?;
        log::info!(
            "native engine: {} on {} threads ({} kernels)",
            model.manifest.variant,
            self.threads,
            cpu::isa().as_str()
        );
        Ok(Arc::new(NativePrepared {
            engine: Arc::new(engine),
            size,
            outputs: model.manifest.outputs.clone(),
        }))
    }
}

struct NativePrepared {
    engine: Arc<NativeEngine>,
    size: InputSize,
    outputs: Vec<String>,
}

impl PreparedModel for NativePrepared {
    fn backend_name(&self) -> &'static str {
        NAME
    }

    fn input_size(&self) -> InputSize {
        self.size
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn session(&self) -> Result<Box<dyn Session>, BackendError> {
        Ok(Box::new(NativeSession {
            engine: self.engine.clone(),
            workspace: self.engine.workspace(self.size, 1),
            outputs: self.outputs.clone(),
        }))
    }
}

struct NativeSession {
    engine: Arc<NativeEngine>,
    workspace: Workspace,
    outputs: Vec<String>,
}

impl Session for NativeSession {
    fn run(&mut self, input: &InputTensor) -> Result<BackboneOutputs, BackendError> {
        let size = self.workspace.size();
        let expected = [1, 3, size.height, size.width];
        if input.shape != expected || input.data.len() != 3 * size.height * size.width {
            return Err(BackendError::InputShape {
                expected,
                actual: input.shape,
            });
        }
        self.engine.forward(&mut self.workspace, &[&input.data]);
        let mut tensors = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let Some((shape, values)) = self.engine.output(&self.workspace, name, 0) else {
                return Err(BackendError::Run {
                    backend: NAME,
                    reason: format!("the engine has no output {name}"),
                });
            };
            let t = OutputTensor::new(name.clone(), shape, Box::new(values.to_vec())).map_err(
                |reason| BackendError::Run {
                    backend: NAME,
                    reason,
                },
            )?;
            tensors.push(t);
        }
        Ok(BackboneOutputs { tensors })
    }
}
