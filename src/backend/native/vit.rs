//! The DINOv3 ViT forward pass, as transformers' `DINOv3ViTModel` computes it (eval mode):
//!
//! * patch embedding (a 16x16 stride-16 convolution, done as one matrix product over the
//!   image's patches), then `[CLS, 4 registers, patches]`;
//! * per block: `x += ls1 * attn(norm1(x))`, `x += ls2 * mlp(norm2(x))`; attention with 2-D
//!   RoPE on the patch tokens' queries and keys (patch centres normalised to [-1, 1], θ=100),
//!   no key bias; MLP `down(gelu(up))` or SwiGLU `down(silu(gate) * up)`;
//! * the final LayerNorm on every token; `layer_<i>` is the final norm of block i's patch
//!   tokens (DINOv3's `get_intermediate_layers(norm=True)`).
//!
//! Weights are converted once at load: linear layers transposed to `[in, out]`, q/k/v fused
//! into one `[C, 3C]` matrix, the layer-scale gains folded into the output projections (so the
//! residual add happens inside the matrix product). A [`Workspace`] holds every buffer of one
//! input size and batch, so a pass allocates nothing of its own.

use super::checkpoint::Tensors;
use super::cpu::{self, AttentionScratch, Team};
use super::gemm::{pack_into, packed_len, Epilogue, PackedB};
use crate::model::hf::{MlpKind, ViTConfig};
use crate::model::{InputSize, ModelError};

/// Query rows per attention block: a block's scores (`64 x tokens`) stay in L2 even at 448.
const QUERY_BLOCK: usize = 64;

/// A linear layer as `y = x W + b` in transformers' layout (`weight` `[outputs, inputs]`),
/// while it is loaded and folded; [`Linear::pack`] makes it a [`PackedLinear`].
struct Linear {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    inputs: usize,
    outputs: usize,
}

/// A linear layer with its weights packed for [`gemm`](super::gemm).
struct PackedLinear {
    packed: PackedB,
    bias: Option<Vec<f32>>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    fn load(
        t: &Tensors<'_>,
        name: &str,
        outputs: usize,
        inputs: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let weight = t.get(&format!("{name}.weight"), &[outputs, inputs])?;
        let bias = if bias {
            Some(t.get(&format!("{name}.bias"), &[outputs])?)
        } else {
            t.get_opt(&format!("{name}.bias"), &[outputs])?
        };
        Ok(Self {
            weight,
            bias,
            inputs,
            outputs,
        })
    }

    /// Several layers of the same input stacked along the outputs (q, k, v), absent biases as
    /// zeros.
    fn concat(parts: Vec<Linear>) -> Self {
        let inputs = parts[0].inputs;
        let outputs: usize = parts.iter().map(|p| p.outputs).sum();
        let any_bias = parts.iter().any(|p| p.bias.is_some());
        let mut weight = Vec::with_capacity(inputs * outputs);
        let mut bias = Vec::with_capacity(outputs);
        for p in parts {
            weight.extend_from_slice(&p.weight);
            match &p.bias {
                Some(b) => bias.extend_from_slice(b),
                None => bias.resize(bias.len() + p.outputs, 0.0),
            }
        }
        Self {
            weight,
            bias: any_bias.then_some(bias),
            inputs,
            outputs,
        }
    }

    /// Fold a per-output gain into the weights and bias (`g * (x W + b)`).
    fn scale_outputs(&mut self, gain: &[f32]) {
        for (row, g) in self.weight.chunks_exact_mut(self.inputs).zip(gain) {
            for w in row {
                *w *= *g;
            }
        }
        if let Some(b) = &mut self.bias {
            for (v, g) in b.iter_mut().zip(gain) {
                *v *= *g;
            }
        }
    }

    /// Pack the weights for the product (`B = W^T`, read from `W` with swapped strides).
    fn pack(self) -> PackedLinear {
        let (k, n) = (self.inputs, self.outputs);
        let mut data = vec![0.0; packed_len(k, n)];
        pack_into(&self.weight, k, n, 1, k, &mut data);
        PackedLinear {
            packed: PackedB { k, n, data },
            bias: self.bias,
            inputs: k,
            outputs: n,
        }
    }
}

impl PackedLinear {
    /// `dst (+)= x W + b` (then GELU when `gelu`) for the `rows` rows of `x`, the rows split
    /// between the members of `team`.
    fn forward(
        &self,
        x: &[f32],
        rows: usize,
        dst: &mut [f32],
        accumulate: bool,
        gelu: bool,
        team: &Team,
    ) {
        let (n, k) = (self.outputs, self.inputs);
        let packed = &self.packed;
        let epilogue = match (&self.bias, gelu) {
            (Some(b), false) => Epilogue::Bias(b),
            (Some(b), true) => Epilogue::BiasGelu(b),
            (None, false) => Epilogue::None,
            (None, true) => Epilogue::Gelu,
        };
        let x = &x[..rows * k];
        team.rows(&mut dst[..rows * n], n, &|first, c| {
            let r = c.len() / n;
            let a = &x[first * k..];
            cpu::gemm_packed(a, k, r, &packed.data, k, n, c, n, accumulate, 1.0, epilogue);
        });
    }
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(t: &Tensors<'_>, name: &str, c: usize, eps: f64) -> Result<Self, ModelError> {
        Ok(Self {
            weight: t.get(&format!("{name}.weight"), &[c])?,
            bias: t.get(&format!("{name}.bias"), &[c])?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &[f32], out: &mut [f32], team: &Team) {
        let c = self.weight.len();
        let n = x.len().min(out.len()) / c * c;
        let x = &x[..n];
        team.rows(&mut out[..n], c, &|first, o| {
            let x = &x[first * c..first * c + o.len()];
            cpu::layer_norm_rows(x, o, c, &self.weight, &self.bias, self.eps);
        });
    }
}

struct Attention {
    qkv: PackedLinear,
    out: PackedLinear,
}

enum Mlp {
    Gelu {
        up: PackedLinear,
        down: PackedLinear,
    },
    SwiGlu {
        gate_up: PackedLinear,
        down: PackedLinear,
    },
}

struct Block {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

/// The architecture numbers a pass needs.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Patch size.
    pub patch: usize,
    /// C.
    pub hidden: usize,
    /// Heads.
    pub heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Register tokens.
    pub registers: usize,
    /// Blocks.
    pub blocks: usize,
    rope_theta: f64,
    gated: bool,
}

impl Shape {
    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// A DINOv3 ViT with its weights converted for the engine.
pub struct Vit {
    shape: Shape,
    patch_embed: PackedLinear,
    cls: Vec<f32>,
    registers: Vec<f32>,
    blocks: Vec<Block>,
    norm: LayerNorm,
    /// 1-based blocks whose normed patch tokens are outputs.
    layers: Vec<usize>,
}

impl Vit {
    /// Convert the weights of `config` from `t`, exposing the blocks in `layers`.
    pub fn load(config: &ViTConfig, t: &Tensors<'_>, layers: &[usize]) -> Result<Self, ModelError> {
        let c = config.hidden_size;
        let p = config.patch_size;
        let inter = config.intermediate_size;
        let eps = config.layer_norm_eps;
        let kind = config
            .mlp_kind()
            .map_err(|reason| ModelError::BadCheckpoint {
                path: t_path(t),
                reason,
            })?;
        let pe_w = t.get("embeddings.patch_embeddings.weight", &[c, 3, p, p])?;
        let pe_b = t.get_opt("embeddings.patch_embeddings.bias", &[c])?;
        let patch_embed = Linear {
            weight: pe_w,
            bias: pe_b,
            inputs: 3 * p * p,
            outputs: c,
        }
        .pack();
        let cls = t.get("embeddings.cls_token", &[1, 1, c])?;
        let registers = if config.num_register_tokens > 0 {
            t.get(
                "embeddings.register_tokens",
                &[1, config.num_register_tokens, c],
            )?
        } else {
            Vec::new()
        };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let pre = format!("model.layer.{i}");
            let q = Linear::load(
                t,
                &format!("{pre}.attention.q_proj"),
                c,
                c,
                config.query_bias,
            )?;
            let k = Linear::load(t, &format!("{pre}.attention.k_proj"), c, c, config.key_bias)?;
            let v = Linear::load(
                t,
                &format!("{pre}.attention.v_proj"),
                c,
                c,
                config.value_bias,
            )?;
            let mut out = Linear::load(
                t,
                &format!("{pre}.attention.o_proj"),
                c,
                c,
                config.proj_bias,
            )?;
            out.scale_outputs(&t.get(&format!("{pre}.layer_scale1.lambda1"), &[c])?);
            let ls2 = t.get(&format!("{pre}.layer_scale2.lambda1"), &[c])?;
            let mlp_linear = |name: &str, outputs: usize, inputs: usize| {
                Linear::load(
                    t,
                    &format!("{pre}.mlp.{name}"),
                    outputs,
                    inputs,
                    config.mlp_bias,
                )
            };
            let up = mlp_linear("up_proj", inter, c)?;
            let mut down = mlp_linear("down_proj", c, inter)?;
            down.scale_outputs(&ls2);
            let down = down.pack();
            let mlp = match kind {
                MlpKind::Gelu => Mlp::Gelu {
                    up: up.pack(),
                    down,
                },
                MlpKind::SwiGlu => Mlp::SwiGlu {
                    gate_up: Linear::concat(vec![mlp_linear("gate_proj", inter, c)?, up]).pack(),
                    down,
                },
            };
            blocks.push(Block {
                norm1: LayerNorm::load(t, &format!("{pre}.norm1"), c, eps)?,
                attention: Attention {
                    qkv: Linear::concat(vec![q, k, v]).pack(),
                    out: out.pack(),
                },
                norm2: LayerNorm::load(t, &format!("{pre}.norm2"), c, eps)?,
                mlp,
            });
        }
        Ok(Self {
            shape: Shape {
                patch: p,
                hidden: c,
                heads: config.num_attention_heads,
                intermediate: inter,
                registers: config.num_register_tokens,
                blocks: config.num_hidden_layers,
                rope_theta: config.rope_theta,
                gated: kind == MlpKind::SwiGlu,
            },
            patch_embed,
            cls,
            registers,
            blocks,
            norm: LayerNorm::load(t, "norm", c, eps)?,
            layers: layers.to_vec(),
        })
    }

    /// The architecture.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Run `images` (each `[3, H, W]` row-major at the workspace's size) through the model;
    /// the outputs are left in `ws` ([`Workspace::output`]). Runs on `team`; allocates
    /// nothing.
    pub fn forward(&self, ws: &mut Workspace, images: &[&[f32]], team: &Team) {
        let s = self.shape;
        let (c, d, heads) = (s.hidden, s.head_dim(), s.heads);
        let batch = images.len().min(ws.batch);
        let (t, prefix, patches) = (ws.tokens, 1 + s.registers, ws.patches);
        let rows = batch * t;

        // Patch embedding into the patch rows of x; CLS and registers before them.
        for (b, image) in images.iter().take(batch).enumerate() {
            im2col(image, ws.size, s.patch, &mut ws.columns);
            let x_img = &mut ws.x[b * t * c..(b + 1) * t * c];
            x_img[..c].copy_from_slice(&self.cls);
            x_img[c..prefix * c].copy_from_slice(&self.registers);
            self.patch_embed.forward(
                &ws.columns,
                patches,
                &mut x_img[prefix * c..],
                false,
                false,
                team,
            );
        }

        for (index, block) in self.blocks.iter().enumerate() {
            // Attention.
            block
                .norm1
                .forward(&ws.x[..rows * c], &mut ws.normed[..rows * c], team);
            block
                .attention
                .qkv
                .forward(&ws.normed, rows, &mut ws.qkv, false, false, team);
            for b in 0..batch {
                let first = (b * t + prefix) * 3 * c;
                for h in 0..heads {
                    for part in 0..2 {
                        let start = first + part * c + h * d;
                        cpu::rope_rows(&mut ws.qkv[start..], 3 * c, d, &ws.cos, &ws.sin);
                    }
                }
            }
            cpu::attention(
                team,
                &ws.qkv,
                &mut ws.attended,
                batch,
                t,
                heads,
                d,
                QUERY_BLOCK,
                &mut ws.scores,
            );
            block
                .attention
                .out
                .forward(&ws.attended, rows, &mut ws.x, true, false, team);

            // MLP.
            block
                .norm2
                .forward(&ws.x[..rows * c], &mut ws.normed[..rows * c], team);
            match &block.mlp {
                Mlp::Gelu { up, down } => {
                    up.forward(&ws.normed, rows, &mut ws.hidden, false, true, team);
                    down.forward(&ws.hidden, rows, &mut ws.x, true, false, team);
                }
                Mlp::SwiGlu { gate_up, down } => {
                    gate_up.forward(&ws.normed, rows, &mut ws.hidden, false, false, team);
                    let i = s.intermediate;
                    let hidden = &ws.hidden[..rows * 2 * i];
                    team.rows(&mut ws.gated[..rows * i], i, &|first, o| {
                        let gu = &hidden[first * 2 * i..first * 2 * i + 2 * o.len()];
                        cpu::silu_mul_rows(gu, o, i);
                    });
                    down.forward(&ws.gated, rows, &mut ws.x, true, false, team);
                }
            }

            if let Some(slot) = self.layers.iter().position(|l| *l == index + 1) {
                for b in 0..batch {
                    let src = &ws.x[(b * t + prefix) * c..(b + 1) * t * c];
                    let dst = &mut ws.layer_out[slot][b * patches * c..(b + 1) * patches * c];
                    self.norm.forward(src, dst, team);
                }
            }
        }

        // Final norm: CLS, registers and patch tokens of each image.
        self.norm
            .forward(&ws.x[..rows * c], &mut ws.normed[..rows * c], team);
        for b in 0..batch {
            let img = &ws.normed[b * t * c..(b + 1) * t * c];
            ws.cls_out[b * c..(b + 1) * c].copy_from_slice(&img[..c]);
            ws.registers_out[b * s.registers * c..(b + 1) * s.registers * c]
                .copy_from_slice(&img[c..prefix * c]);
            ws.patch_out[b * patches * c..(b + 1) * patches * c]
                .copy_from_slice(&img[prefix * c..]);
        }
    }
}

fn t_path(t: &Tensors<'_>) -> std::path::PathBuf {
    t.path().to_path_buf()
}

/// The patches of a `[3, H, W]` image as rows of `3 * p * p` values in the convolution
/// weight's order (channel, row, column).
fn im2col(image: &[f32], size: InputSize, p: usize, out: &mut [f32]) {
    let (h, w) = (size.height, size.width);
    let (gh, gw) = (h / p, w / p);
    let cols = 3 * p * p;
    for gy in 0..gh {
        for gx in 0..gw {
            let row = &mut out[(gy * gw + gx) * cols..(gy * gw + gx + 1) * cols];
            for ch in 0..3 {
                for ky in 0..p {
                    let src = ch * h * w + (gy * p + ky) * w + gx * p;
                    let dst = ch * p * p + ky * p;
                    row[dst..dst + p].copy_from_slice(&image[src..src + p]);
                }
            }
        }
    }
}

/// RoPE cos and sin for a `gh x gw` patch grid, `[gh * gw, head_dim]` each, computed in f32
/// as transformers does: patch centres `((i + 0.5) / n) * 2 - 1`, angles
/// `2π · coord · θ^(-k / (head_dim / 4))`, `[y freqs, x freqs]` tiled twice.
fn rope_tables(gh: usize, gw: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let quarter = head_dim / 4;
    // torch.arange(0, 1, 4 / head_dim) in f32, then 1 / theta ** that.
    let inv_freq: Vec<f32> = (0..quarter)
        .map(|k| {
            let e = k as f32 * (4.0 / head_dim as f32);
            1.0 / (theta as f32).powf(e)
        })
        .collect();
    let mut cos = Vec::with_capacity(gh * gw * head_dim);
    let mut sin = Vec::with_capacity(gh * gw * head_dim);
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let mut angles = vec![0.0f32; head_dim / 2];
    for y in 0..gh {
        for x in 0..gw {
            let cy = 2.0 * ((y as f32 + 0.5) / gh as f32) - 1.0;
            let cx = 2.0 * ((x as f32 + 0.5) / gw as f32) - 1.0;
            for (k, f) in inv_freq.iter().enumerate() {
                angles[k] = two_pi * cy * f;
                angles[quarter + k] = two_pi * cx * f;
            }
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
    }
    (cos, sin)
}

/// Every buffer a pass of [`Vit::forward`] uses, for one input size and batch.
pub struct Workspace {
    size: InputSize,
    batch: usize,
    tokens: usize,
    patches: usize,
    columns: Vec<f32>,
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attended: Vec<f32>,
    hidden: Vec<f32>,
    gated: Vec<f32>,
    scores: Vec<AttentionScratch>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    cls_out: Vec<f32>,
    registers_out: Vec<f32>,
    patch_out: Vec<f32>,
    layer_out: Vec<Vec<f32>>,
}

impl Workspace {
    /// Buffers for `batch` images of `size` on a team of `workers` threads.
    pub fn new(vit: &Vit, size: InputSize, batch: usize, workers: usize) -> Self {
        let s = vit.shape;
        let (gh, gw) = (size.height / s.patch, size.width / s.patch);
        let patches = gh * gw;
        let tokens = 1 + s.registers + patches;
        let rows = batch * tokens;
        let c = s.hidden;
        let (cos, sin) = rope_tables(gh, gw, s.head_dim(), s.rope_theta);
        let mlp_width = if s.gated { 2 } else { 1 } * s.intermediate;
        Self {
            size,
            batch,
            tokens,
            patches,
            columns: vec![0.0; patches * 3 * s.patch * s.patch],
            x: vec![0.0; rows * c],
            normed: vec![0.0; rows * c],
            qkv: vec![0.0; rows * 3 * c],
            attended: vec![0.0; rows * c],
            hidden: vec![0.0; rows * mlp_width],
            gated: vec![0.0; if s.gated { rows * s.intermediate } else { 0 }],
            scores: (0..workers.max(1))
                .map(|_| AttentionScratch::new(tokens, s.head_dim(), QUERY_BLOCK))
                .collect(),
            cos,
            sin,
            cls_out: vec![0.0; batch * c],
            registers_out: vec![0.0; batch * s.registers * c],
            patch_out: vec![0.0; batch * patches * c],
            layer_out: vit
                .layers
                .iter()
                .map(|_| vec![0.0; batch * patches * c])
                .collect(),
        }
    }

    /// The batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The input size.
    pub fn size(&self) -> InputSize {
        self.size
    }

    /// Output `name` (`cls`, `registers`, `patch_tokens`, `layer_<i>`) of image `b`, with its
    /// shape for batch 1; `None` for an unknown name.
    pub fn output(&self, vit: &Vit, name: &str, b: usize) -> Option<(Vec<usize>, &[f32])> {
        let c = vit.shape.hidden;
        let r = vit.shape.registers;
        let p = self.patches;
        let (shape, buf, n) = match name {
            "cls" => (vec![1, c], &self.cls_out, c),
            "registers" => (vec![1, r, c], &self.registers_out, r * c),
            "patch_tokens" => (vec![1, p, c], &self.patch_out, p * c),
            other => {
                let layer: usize = other.strip_prefix("layer_")?.parse().ok()?;
                let slot = vit.layers.iter().position(|l| *l == layer)?;
                (vec![1, p, c], &self.layer_out[slot], p * c)
            }
        };
        buf.get(b * n..(b + 1) * n).map(|s| (shape, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_tables_follow_transformers_layout() {
        // head_dim 8: quarter 2, inv_freq = [1, 1/sqrt(100)] (theta^-(0), theta^-(0.5)).
        let (cos, sin) = rope_tables(2, 3, 8, 100.0);
        assert_eq!(cos.len(), 6 * 8);
        // Patch (y=0, x=2): cy = -0.5, cx = 2 * (2.5/3) - 1.
        let row = 2;
        let cy = -0.5f32;
        let cx = 2.0 * (2.5f32 / 3.0) - 1.0;
        let tp = 2.0 * std::f32::consts::PI;
        let want = [tp * cy, tp * cy * 0.1, tp * cx, tp * cx * 0.1];
        for (k, a) in want.iter().enumerate() {
            assert!((cos[row * 8 + k] - a.cos()).abs() < 1e-6);
            assert!((cos[row * 8 + 4 + k] - a.cos()).abs() < 1e-6);
            assert!((sin[row * 8 + k] - a.sin()).abs() < 1e-6);
        }
    }

    #[test]
    fn im2col_orders_channel_row_column() {
        let size = InputSize {
            height: 4,
            width: 4,
        };
        let image: Vec<f32> = (0..48).map(|i| i as f32).collect();
        let mut out = vec![0.0; 4 * 12];
        im2col(&image, size, 2, &mut out);
        // Patch 1 (gy 0, gx 1): channel 0 rows 0-1 cols 2-3, then channel 1 ...
        assert_eq!(&out[12..16], &[2.0, 3.0, 6.0, 7.0]);
        assert_eq!(&out[16..20], &[18.0, 19.0, 22.0, 23.0]);
    }
}
