//! Zero-copy views over one backbone pass: CLS token, register tokens, the patch grid and any
//! intermediate layers. Shapes are checked once in [`Features::new`]; the accessors then slice.

use crate::backend::BackboneOutputs;
use crate::model::{InputSize, Manifest};

/// The outputs do not have the shapes the manifest promises.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("backbone output {output}: {reason}")]
pub struct FeaturesError {
    /// Output name.
    pub output: String,
    /// What is wrong.
    pub reason: String,
}

/// Patch tokens laid out as an `h x w` grid of `C`-dimensional features (row-major, y first).
#[derive(Debug, Clone, Copy)]
pub struct PatchGrid<'a> {
    data: &'a [f32],
    /// Grid rows.
    pub height: usize,
    /// Grid columns.
    pub width: usize,
    /// Feature dimension.
    pub channels: usize,
}

impl<'a> PatchGrid<'a> {
    /// All tokens, `[h * w, C]` row-major.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// The feature of patch (`y`, `x`), or `None` outside the grid.
    pub fn token(&self, y: usize, x: usize) -> Option<&'a [f32]> {
        if y >= self.height || x >= self.width {
            return None;
        }
        let start = (y * self.width + x) * self.channels;
        self.data.get(start..start + self.channels)
    }

    /// Iterate tokens in row-major order.
    pub fn tokens(&self) -> impl Iterator<Item = &'a [f32]> + 'a {
        self.data.chunks_exact(self.channels)
    }
}

/// Views over one backbone pass.
#[derive(Debug, Clone, Copy)]
pub struct Features<'a> {
    outputs: &'a BackboneOutputs,
    cls: &'a [f32],
    registers: &'a [f32],
    patch: PatchGrid<'a>,
    num_registers: usize,
}

impl<'a> Features<'a> {
    /// Check `outputs` against the manifest for an input of `size`, then view them.
    pub fn new(
        outputs: &'a BackboneOutputs,
        manifest: &Manifest,
        size: InputSize,
    ) -> Result<Self, FeaturesError> {
        let c = manifest.hidden_size;
        let (gh, gw) = (
            size.height / manifest.patch_size,
            size.width / manifest.patch_size,
        );
        let r = manifest.num_register_tokens;
        let view = |name: &str, shape: &[usize]| -> Result<&'a [f32], FeaturesError> {
            let t = outputs.get(name).ok_or_else(|| FeaturesError {
                output: name.into(),
                reason: "missing".into(),
            })?;
            if t.shape != shape {
                return Err(FeaturesError {
                    output: name.into(),
                    reason: format!("shape {:?}, expected {shape:?}", t.shape),
                });
            }
            Ok(t.data())
        };
        let cls = view("cls", &[1, c])?;
        let registers = view("registers", &[1, r, c])?;
        let patch = view("patch_tokens", &[1, gh * gw, c])?;
        for layer in &manifest.layers {
            view(&format!("layer_{layer}"), &[1, gh * gw, c])?;
        }
        Ok(Self {
            outputs,
            cls,
            registers,
            patch: PatchGrid {
                data: patch,
                height: gh,
                width: gw,
                channels: c,
            },
            num_registers: r,
        })
    }

    /// The CLS token, `[C]`.
    pub fn cls(&self) -> &'a [f32] {
        self.cls
    }

    /// All register tokens, `[R * C]`.
    pub fn registers(&self) -> &'a [f32] {
        self.registers
    }

    /// Register token `i`.
    pub fn register(&self, i: usize) -> Option<&'a [f32]> {
        if i >= self.num_registers {
            return None;
        }
        let c = self.patch.channels;
        self.registers.get(i * c..(i + 1) * c)
    }

    /// The final-layer patch grid (after the final norm).
    pub fn patch_grid(&self) -> PatchGrid<'a> {
        self.patch
    }

    /// Patch grid of block `index` (1-based), if the model exports it.
    pub fn layer(&self, index: usize) -> Option<PatchGrid<'a>> {
        let t = self.outputs.get(&format!("layer_{index}"))?;
        Some(PatchGrid {
            data: t.data(),
            ..self.patch
        })
    }

    /// Feature dimension C.
    pub fn channels(&self) -> usize {
        self.patch.channels
    }
}
