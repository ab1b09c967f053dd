//! Tensors of a checkpoint folder's `model.safetensors`, read from a memory map and looked up
//! by their transformers names with shape checks.
//!
//! transformers 5 names the blocks `model.layer.<i>.…`; checkpoints saved by transformers 4
//! (as published on the Hugging Face hub) call them `layer.<i>.…`. Both are accepted.

use std::fmt::Write;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::model::hf::WEIGHTS_FILE;
use crate::model::ModelError;

/// Bytes hashed between releases of the mapped pages.
const HASH_CHUNK: usize = 16 << 20;

/// A memory-mapped `model.safetensors`.
pub struct Checkpoint {
    path: PathBuf,
    map: Mmap,
}

impl Checkpoint {
    /// Map `dir/model.safetensors`; when `sha256` is given, check the file hashes to it.
    pub fn open(dir: &Path, sha256: Option<&str>) -> Result<Self, ModelError> {
        let path = dir.join(WEIGHTS_FILE);
        let file = File::open(&path).map_err(|source| ModelError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let map = super::cpu::map_read_only(&file).map_err(|source| ModelError::Unreadable {
            path: path.clone(),
            source,
        })?;
        if let Some(expected) = sha256 {
            let mut h = Sha256::new();
            let mut offset = 0;
            for chunk in map.chunks(HASH_CHUNK) {
                h.update(chunk);
                super::cpu::release_pages(&map, offset, chunk.len());
                offset += chunk.len();
            }
            let mut actual = String::with_capacity(64);
            for b in h.finalize() {
                let _ = write!(actual, "{b:02x}");
            }
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(ModelError::BadCheckpoint {
                    path,
                    reason: format!(
                        "sha256 {actual} differs from the manifest's {expected}: the file was modified or truncated"
                    ),
                });
            }
        }
        Ok(Self { path, map })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header over the mapped bytes.
    pub fn tensors(&self) -> Result<Tensors<'_>, ModelError> {
        let st = SafeTensors::deserialize(&self.map).map_err(|e| ModelError::BadCheckpoint {
            path: self.path.clone(),
            reason: format!("not a readable safetensors file ({e}); it is truncated or corrupt"),
        })?;
        Ok(Tensors {
            path: &self.path,
            map: &self.map,
            st,
        })
    }
}

/// Lookup of named tensors, converted to f32.
pub struct Tensors<'a> {
    path: &'a Path,
    map: &'a Mmap,
    st: SafeTensors<'a>,
}

impl Tensors<'_> {
    /// The file the tensors come from.
    pub fn path(&self) -> &Path {
        self.path
    }

    fn bad(&self, reason: String) -> ModelError {
        ModelError::BadCheckpoint {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// The first of `names` present (alternative spellings of one tensor).
    fn find<'n>(
        &self,
        names: &'n [String],
    ) -> Option<(&'n str, safetensors::tensor::TensorView<'_>)> {
        names
            .iter()
            .find_map(|n| self.st.tensor(n).ok().map(|t| (n.as_str(), t)))
    }

    /// Tensor `name` (or a block tensor under either prefix) with shape `shape`, as f32.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.get_opt(name, shape)?
            .ok_or_else(|| self.bad(format!("tensor {name} is missing")))
    }

    /// [`Tensors::get`], `None` when absent.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>, ModelError> {
        let mut names = vec![name.to_string()];
        if let Some(rest) = name.strip_prefix("model.") {
            names.push(rest.to_string());
        }
        let Some((found, view)) = self.find(&names) else {
            return Ok(None);
        };
        if view.shape() != shape {
            return Err(self.bad(format!(
                "tensor {found} has shape {:?}, the config implies {shape:?}",
                view.shape()
            )));
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(self.bad(format!(
                    "tensor {found} is {other:?}; give float32, float16 or bfloat16 weights"
                )))
            }
        };
        // The values are copied out: the mapped pages can go.
        let offset = data.as_ptr() as usize - self.map.as_ptr() as usize;
        super::cpu::release_pages(self.map, offset, data.len());
        if values.iter().any(|v| !v.is_finite()) {
            return Err(self.bad(format!("tensor {found} holds NaN or infinite values")));
        }
        Ok(Some(values))
    }

    /// Total number of parameters in the file.
    pub fn parameter_count(&self) -> u64 {
        self.st
            .tensors()
            .iter()
            .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
            .sum()
    }
}
