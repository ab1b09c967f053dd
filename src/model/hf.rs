//! Hugging Face checkpoint folders: `config.json` (a transformers `DINOv3ViTConfig`),
//! `model.safetensors` and optionally `preprocessor_config.json`, as
//! `facebook/dinov3-vits16-pretrain-lvd1689m` ships them and as `models/export_backbone.py`
//! writes them beside every ONNX (`NAME.hf/`).
//!
//! This module reads the architecture and the preprocessing; the native engine reads the
//! tensors (`backend/native/checkpoint.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ModelError;

/// The config file of a checkpoint folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a checkpoint folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The image processor's settings (mean and std), optional.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
/// ImageNet mean, the DINOv3 default when a folder has no `preprocessor_config.json`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet std.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Whether `path` is a checkpoint folder (a directory with a `config.json`).
pub fn is_checkpoint_folder(path: &Path) -> bool {
    path.is_dir() && path.join(CONFIG_FILE).is_file()
}

/// The fields of transformers' `DINOv3ViTConfig` that decide the forward pass, with its
/// defaults. Training-only fields (drop path, RoPE augmentation) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ViTConfig {
    /// `dinov3_vit` (checked when present).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Patch size in pixels.
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    /// C.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// `gelu` (exact erf) or `silu` (with the gated MLP: SwiGLU).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Square training size (the default input size of a folder).
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Input channels (3).
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// Bias on the query projection.
    #[serde(default = "yes")]
    pub query_bias: bool,
    /// Bias on the key projection (DINOv3: none).
    #[serde(default)]
    pub key_bias: bool,
    /// Bias on the value projection.
    #[serde(default = "yes")]
    pub value_bias: bool,
    /// Bias on the attention output projection.
    #[serde(default = "yes")]
    pub proj_bias: bool,
    /// Bias on the MLP projections.
    #[serde(default = "yes")]
    pub mlp_bias: bool,
    /// SwiGLU MLP (S+/16, H+/16).
    #[serde(default)]
    pub use_gated_mlp: bool,
    /// Register tokens after CLS.
    #[serde(default)]
    pub num_register_tokens: usize,
}

fn default_patch() -> usize {
    16
}
fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    100.0
}
fn default_image_size() -> usize {
    224
}
fn default_channels() -> usize {
    3
}
fn yes() -> bool {
    true
}

/// The MLP of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(gelu(up(x)))`, exact erf GELU.
    Gelu,
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu,
}

impl ViTConfig {
    /// Read and check `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join(CONFIG_FILE);
        let text = fs::read_to_string(&path).map_err(|source| ModelError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|e| ModelError::BadCheckpoint {
            path: path.clone(),
            reason: format!("not a DINOv3 ViT config.json: {e}"),
        })?;
        config
            .check()
            .map_err(|reason| ModelError::BadCheckpoint { path, reason })?;
        Ok(config)
    }

    /// Refuse architectures the engine does not compute.
    fn check(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "dinov3_vit" {
                return Err(format!(
                    "model_type is {t:?}; only DINOv3 ViT checkpoints (\"dinov3_vit\") are supported (ConvNeXt variants are not)"
                ));
            }
        }
        if self.num_channels != 3 {
            return Err(format!(
                "num_channels {} (RGB models only)",
                self.num_channels
            ));
        }
        if self.patch_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return Err("patch_size, hidden_size and num_hidden_layers must be positive".into());
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(4) {
            return Err(format!(
                "head dimension {} is not a multiple of 4 (2-D RoPE needs it)",
                self.head_dim()
            ));
        }
        self.mlp_kind()?;
        if !(self.layer_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err("layer_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Channels per head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The MLP, from `use_gated_mlp` and `hidden_act`.
    pub fn mlp_kind(&self) -> Result<MlpKind, String> {
        match (self.use_gated_mlp, self.hidden_act.as_str()) {
            (false, "gelu") => Ok(MlpKind::Gelu),
            (true, "silu" | "swish") => Ok(MlpKind::SwiGlu),
            (gated, act) => Err(format!(
                "hidden_act {act:?} with use_gated_mlp {gated} is not a DINOv3 MLP (gelu, or silu with the gated MLP)"
            )),
        }
    }

    /// The variant name our exports use, `custom` for other shapes.
    pub fn variant(&self) -> &'static str {
        match (
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.use_gated_mlp,
        ) {
            (384, 12, 6, false) => "vits16",
            (384, 12, 6, true) => "vits16plus",
            (768, 12, 12, false) => "vitb16",
            (1024, 24, 16, false) => "vitl16",
            (64, 2, 4, false) => "tiny",
            _ => "custom",
        }
    }

    /// The intermediate blocks a folder exposes as `layer_<i>`: four evenly spaced, ending
    /// with the last (ViT-S/B: 3, 6, 9, 12), as DINOv3's dense heads read them.
    pub fn default_layers(&self) -> Vec<usize> {
        let n = self.num_hidden_layers;
        let mut layers: Vec<usize> = (1..=4).map(|k| (k * n / 4).max(1)).collect();
        layers.dedup();
        layers
    }
}

#[derive(Deserialize)]
struct Preprocessor {
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
}

/// Mean and std from `dir/preprocessor_config.json`, ImageNet's when the file is absent.
pub fn read_normalisation(dir: &Path) -> Result<([f32; 3], [f32; 3]), ModelError> {
    let path: PathBuf = dir.join(PREPROCESSOR_FILE);
    if !path.exists() {
        return Ok((IMAGENET_MEAN, IMAGENET_STD));
    }
    let text = fs::read_to_string(&path).map_err(|source| ModelError::Unreadable {
        path: path.clone(),
        source,
    })?;
    let p: Preprocessor = serde_json::from_str(&text).map_err(|e| ModelError::BadCheckpoint {
        path: path.clone(),
        reason: format!("not an image processor config: {e}"),
    })?;
    Ok((
        p.image_mean.unwrap_or(IMAGENET_MEAN),
        p.image_std.unwrap_or(IMAGENET_STD),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ViTConfig, String> {
        let c: ViTConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        c.check().map(|_| c)
    }

    #[test]
    fn the_published_vits16_config_parses() {
        // The fields of facebook/dinov3-vits16-pretrain-lvd1689m's config.json.
        let c = parse(
            r#"{"architectures":["DINOv3ViTModel"],"attention_dropout":0.0,"drop_path_rate":0.0,
            "hidden_act":"gelu","hidden_size":384,"image_size":224,"initializer_range":0.02,
            "intermediate_size":1536,"key_bias":false,"layer_norm_eps":1e-05,"layerscale_value":1.0,
            "mlp_bias":true,"model_type":"dinov3_vit","num_attention_heads":6,"num_channels":3,
            "num_hidden_layers":12,"num_register_tokens":4,"patch_size":16,"pos_embed_jitter":null,
            "pos_embed_rescale":2.0,"pos_embed_shift":null,"proj_bias":true,"query_bias":true,
            "rope_theta":100.0,"torch_dtype":"float32","transformers_version":"4.56.0.dev0",
            "use_gated_mlp":false,"value_bias":true}"#,
        )
        .unwrap();
        assert_eq!(c.variant(), "vits16");
        assert_eq!(c.head_dim(), 64);
        assert_eq!(c.default_layers(), vec![3, 6, 9, 12]);
        assert_eq!(c.mlp_kind().unwrap(), MlpKind::Gelu);
    }

    #[test]
    fn other_architectures_are_refused_with_the_reason() {
        let base = r#""hidden_size":384,"intermediate_size":1536,"num_hidden_layers":12,"num_attention_heads":6"#;
        let e = parse(&format!(r#"{{"model_type":"dinov3_convnext",{base}}}"#)).unwrap_err();
        assert!(e.contains("ConvNeXt"), "{e}");
        let e = parse(&format!(r#"{{"hidden_act":"relu",{base}}}"#)).unwrap_err();
        assert!(e.contains("relu"), "{e}");
        let e = parse(r#"{"hidden_size":380,"intermediate_size":1,"num_hidden_layers":1,"num_attention_heads":6}"#)
            .unwrap_err();
        assert!(e.contains("multiple of num_attention_heads"), "{e}");
        assert!(parse(r#"{"hidden_size":384}"#).is_err());
    }
}
