//! Backbone model files: the ONNX graph and its JSON manifest, checked against each other.
//!
//! `models/export_backbone.py` writes `NAME.onnx` and `NAME.json` side by side. Loading reads
//! both, verifies the manifest's sha256 against the ONNX bytes, and checks that the graph's real
//! inputs and outputs agree with what the manifest promises (names, ranks, fixed sizes, hidden
//! size, grid), so a mismatch is reported at start-up, naming the file and the fix, instead of as
//! a shape error deep inside the backend.

pub mod hf;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

/// Manifest `format` value written by `models/export_backbone.py`.
pub const MANIFEST_FORMAT: &str = "dinov3_perception/backbone";
/// Manifest `format_version` this build understands.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Names of the three outputs every backbone has.
pub const CORE_OUTPUTS: [&str; 3] = ["cls", "registers", "patch_tokens"];

const FIX_EXPORT: &str = "re-export the model with models/export_backbone.py, which writes the .onnx and its .json manifest together";

/// Errors loading or validating a backbone model. Every variant names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file does not exist or cannot be read.
    #[error("cannot read {path}: {source}; check the path (the model is a .onnx file with a .json manifest beside it)")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The ONNX file does not decode (truncated, not ONNX, corrupt).
    #[error("{path} is not a valid ONNX model ({reason}); the file is truncated or corrupt: {FIX_EXPORT}")]
    CorruptOnnx {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The manifest is not valid JSON of the expected schema.
    #[error("{path} is not a valid backbone manifest ({reason}); {FIX_EXPORT}")]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest and the ONNX graph disagree.
    #[error("manifest {manifest} does not match {onnx}: {reason}; {FIX_EXPORT}")]
    Mismatch {
        /// The manifest file.
        manifest: PathBuf,
        /// The ONNX file.
        onnx: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The ONNX bytes do not hash to the manifest's sha256.
    #[error("{onnx} has sha256 {actual} but its manifest {manifest} says {expected}; the file was modified or truncated: {FIX_EXPORT}")]
    Checksum {
        /// The ONNX file.
        onnx: PathBuf,
        /// The manifest file.
        manifest: PathBuf,
        /// The manifest's value.
        expected: String,
        /// The file's value.
        actual: String,
    },
    /// A requested input size is not usable with this model.
    #[error("input size {height}x{width} (HxW) for {path} is invalid: {reason}")]
    BadInputSize {
        /// The model file.
        path: PathBuf,
        /// Requested height.
        height: usize,
        /// Requested width.
        width: usize,
        /// Why, and the fix.
        reason: String,
    },
    /// A Hugging Face checkpoint folder is incomplete or not a DINOv3 ViT.
    #[error("{path}: {reason}; a checkpoint folder holds config.json and model.safetensors of a DINOv3 ViT as transformers saves it (e.g. facebook/dinov3-vits16-pretrain-lvd1689m), or re-export with models/export_backbone.py")]
    BadCheckpoint {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong (names the tensor where one is).
        reason: String,
    },
    /// tract could not turn the graph into a model.
    #[error("tract cannot load {path}: {reason}; {FIX_EXPORT} (dynamo exporter, opset 18)")]
    Unsupported {
        /// The model file.
        path: PathBuf,
        /// tract's error chain.
        reason: String,
    },
}

impl ModelError {
    /// Every model error is caused by input from outside (a file or a requested size).
    pub fn is_bad_input(&self) -> bool {
        true
    }
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSource {
    /// `random-init`, `huggingface` or `meta-pth`.
    pub kind: String,
    /// The checkpoint path the exporter read, if any.
    pub path: Option<String>,
    /// The seed of a random-init model.
    pub seed: Option<u64>,
}

/// The manifest written next to each backbone ONNX (see DESIGN.md, "Backbone model").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Always [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u32,
    /// `vits16`, `vits16plus`, `vitb16`, `vitl16` or `tiny`.
    pub variant: String,
    /// Patch size in pixels (16).
    pub patch_size: usize,
    /// Feature dimension C.
    pub hidden_size: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Register tokens between CLS and the patch tokens (4).
    pub num_register_tokens: usize,
    /// Name of the image input (`pixel_values`).
    pub input_name: String,
    /// Fixed input height, `None` for a dynamic export.
    pub input_height: Option<usize>,
    /// Fixed input width, `None` for a dynamic export.
    pub input_width: Option<usize>,
    /// Whether H and W are symbolic in the graph.
    pub dynamic: bool,
    /// 1-based block indices exported as `layer_<i>`.
    pub layers: Vec<usize>,
    /// Output names in graph order.
    pub outputs: Vec<String>,
    /// Per-channel mean (RGB, on 0..1 pixel values).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub image_std: [f32; 3],
    /// Checkpoint the weights came from.
    pub source: ManifestSource,
    /// File name of the ONNX this manifest describes.
    pub onnx_file: String,
    /// Hex sha256 of the ONNX bytes.
    pub onnx_sha256: String,
    /// ONNX opset of the default domain.
    pub opset: i64,
    /// Parameters of the PyTorch model.
    pub parameter_count: u64,
    /// Versions of the tools that exported it.
    pub exporter: BTreeMap<String, String>,
    /// Set for a quantised model (`export_backbone.py --quantize`): how, and the float model it
    /// was made from (the parity reference, and the identity its heads were trained on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// The same weights as a Hugging Face checkpoint folder (`config.json` +
    /// `model.safetensors`) beside the ONNX, which the native engine reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_dir: Option<String>,
    /// Hex sha256 of that folder's `model.safetensors`: the weights' identity, the same
    /// whether they run from this ONNX or from the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
}

/// How a quantised backbone was made from its float model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// `int8-dynamic`: per-channel s8 weights of the linear layers, activations quantised per
    /// tensor at run time (onnxruntime `quantize_dynamic`).
    pub method: String,
    /// File name of the float ONNX, in the same directory.
    pub float_onnx_file: String,
    /// Its sha256.
    pub float_onnx_sha256: String,
}

impl Manifest {
    /// The weights' identity that heads and banks are checked against: the float model's
    /// sha256 for a quantised model (heads trained on the float model work on it), else this
    /// ONNX's.
    pub fn identity_sha256(&self) -> &str {
        if let Some(w) = &self.weights_sha256 {
            return w;
        }
        self.quantization
            .as_ref()
            .map_or(&self.onnx_sha256, |q| &q.float_onnx_sha256)
    }

    /// Whether `sha256` (recorded by a head or bank) names these weights: the weights'
    /// sha256, or the ONNX's (heads trained before the weights had their own identity).
    pub fn is_identity(&self, sha256: &str) -> bool {
        let float = self
            .quantization
            .as_ref()
            .map(|q| q.float_onnx_sha256.as_str());
        [
            self.weights_sha256.as_deref(),
            float,
            Some(self.onnx_sha256.as_str()),
        ]
        .into_iter()
        .flatten()
        .any(|s| !s.is_empty() && s.eq_ignore_ascii_case(sha256))
    }
}

/// Model input size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSize {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl fmt::Display for InputSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}

/// One dimension of a graph input or output as declared in the ONNX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named symbolic size.
    Symbol(String),
    /// Not declared.
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Symbol(s) => write!(f, "{s}"),
            Dim::Unknown => write!(f, "?"),
        }
    }
}

/// Name, element type and declared shape of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSignature {
    /// Tensor name.
    pub name: String,
    /// ONNX element type name (`float32`, ...).
    pub elem_type: String,
    /// Declared dimensions.
    pub dims: Vec<Dim>,
}

impl fmt::Display for TensorSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(ToString::to_string).collect();
        write!(f, "{} {} [{}]", self.name, self.elem_type, dims.join(", "))
    }
}

/// Facts read from the ONNX graph itself (empty for a checkpoint folder).
#[derive(Debug, Clone, Default)]
pub struct GraphFacts {
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorSignature>,
    /// Graph outputs.
    pub outputs: Vec<TensorSignature>,
    /// Default-domain opset.
    pub opset: Option<i64>,
    /// Total elements of all initializers (the stored weights).
    pub initializer_elements: u64,
    /// Number of nodes in the main graph.
    pub node_count: usize,
    /// Op types that appear in the main graph, with counts, sorted by name.
    pub op_counts: BTreeMap<String, usize>,
    /// Producer name and version.
    pub producer: String,
}

/// What a backbone model was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// An ONNX graph with its JSON manifest (`models/export_backbone.py`).
    Onnx,
    /// A Hugging Face checkpoint folder (no graph: the native engine runs it).
    HuggingFace,
}

/// A backbone model: the ONNX graph, its manifest, and the facts checked between them; or a
/// Hugging Face checkpoint folder with the manifest that describes it.
#[derive(Debug, Clone)]
pub struct BackboneModel {
    /// The `.onnx` file (the folder, for a Hugging Face checkpoint).
    pub onnx_path: PathBuf,
    /// What it was loaded from.
    pub format: ModelFormat,
    /// The `.json` manifest.
    pub manifest_path: PathBuf,
    /// The manifest, validated against the graph.
    pub manifest: Manifest,
    /// Facts read from the graph.
    pub graph: GraphFacts,
    /// The decoded graph, kept so backends do not read the file twice; `None` once released.
    proto: Option<pb::ModelProto>,
    /// The size a dynamic model runs at when none is asked for (a folder's `image_size`).
    default_size: Option<InputSize>,
    /// Whether the weights folder's sha256 was already checked (a folder is hashed at load).
    weights_verified: bool,
}

/// How thoroughly to load a model.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Hash the ONNX and compare with the manifest (costs ~0.1 s per 100 MB).
    pub verify_sha256: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            verify_sha256: true,
        }
    }
}

/// Path of the manifest belonging to an ONNX file: same path, `.json` extension.
pub fn manifest_path_for(onnx: &Path) -> PathBuf {
    onnx.with_extension("json")
}

impl BackboneModel {
    /// Load `onnx` and the manifest beside it, and check them against each other.
    pub fn load(onnx: &Path) -> Result<Self, ModelError> {
        Self::load_with(onnx, LoadOptions::default())
    }

    /// [`BackboneModel::load`] with options. `onnx` may also be a Hugging Face checkpoint
    /// folder.
    pub fn load_with(onnx: &Path, options: LoadOptions) -> Result<Self, ModelError> {
        if onnx.is_dir() {
            return Self::load_folder(onnx);
        }
        let manifest_path = manifest_path_for(onnx);
        if onnx.extension().and_then(|e| e.to_str()) != Some("onnx") {
            return Err(ModelError::Unreadable {
                path: onnx.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "expected a .onnx file",
                ),
            });
        }
        let manifest = read_manifest(&manifest_path)?;
        let proto = read_proto(onnx)?;
        if options.verify_sha256 {
            let actual = sha256_file(onnx)?;
            if !actual.eq_ignore_ascii_case(&manifest.onnx_sha256) {
                return Err(ModelError::Checksum {
                    onnx: onnx.to_path_buf(),
                    manifest: manifest_path,
                    expected: manifest.onnx_sha256.clone(),
                    actual,
                });
            }
        }
        let graph = graph_facts(&proto);
        let model = Self {
            onnx_path: onnx.to_path_buf(),
            format: ModelFormat::Onnx,
            manifest_path,
            manifest,
            graph,
            proto: Some(proto),
            default_size: None,
            weights_verified: false,
        };
        model.check_consistency()?;
        Ok(model)
    }

    /// A Hugging Face checkpoint folder: the manifest follows from `config.json` (dynamic
    /// size, default [`hf::ViTConfig::default_layers`]) and the weights' sha256.
    fn load_folder(dir: &Path) -> Result<Self, ModelError> {
        if !hf::is_checkpoint_folder(dir) {
            return Err(ModelError::BadCheckpoint {
                path: dir.to_path_buf(),
                reason: format!("the folder has no {}", hf::CONFIG_FILE),
            });
        }
        let config = hf::ViTConfig::read(dir)?;
        let (image_mean, image_std) = hf::read_normalisation(dir)?;
        let weights = dir.join(hf::WEIGHTS_FILE);
        let weights_sha256 = sha256_file(&weights)?;
        let layers = config.default_layers();
        let mut outputs: Vec<String> = CORE_OUTPUTS.iter().map(|s| s.to_string()).collect();
        outputs.extend(layers.iter().map(|l| format!("layer_{l}")));
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            format_version: MANIFEST_FORMAT_VERSION,
            variant: config.variant().into(),
            patch_size: config.patch_size,
            hidden_size: config.hidden_size,
            num_layers: config.num_hidden_layers,
            num_heads: config.num_attention_heads,
            num_register_tokens: config.num_register_tokens,
            input_name: "pixel_values".into(),
            input_height: None,
            input_width: None,
            dynamic: true,
            layers,
            outputs,
            image_mean,
            image_std,
            source: ManifestSource {
                kind: "huggingface".into(),
                path: Some(dir.display().to_string()),
                seed: None,
            },
            onnx_file: String::new(),
            onnx_sha256: String::new(),
            opset: 0,
            parameter_count: 0,
            exporter: BTreeMap::new(),
            quantization: None,
            weights_dir: Some(".".into()),
            weights_sha256: Some(weights_sha256),
        };
        let size = config.image_size - config.image_size % config.patch_size.max(1);
        Ok(Self {
            onnx_path: dir.to_path_buf(),
            format: ModelFormat::HuggingFace,
            manifest_path: dir.join(hf::CONFIG_FILE),
            manifest,
            graph: GraphFacts::default(),
            proto: None,
            default_size: (size > 0).then_some(InputSize {
                height: size,
                width: size,
            }),
            weights_verified: true,
        })
    }

    /// The checkpoint folder holding these weights for the native engine, and the sha256 its
    /// `model.safetensors` must have (`None`: already checked at load).
    pub fn weights_folder(&self) -> Option<(PathBuf, Option<&str>)> {
        let rel = self.manifest.weights_dir.as_ref()?;
        let dir = match self.format {
            ModelFormat::HuggingFace => self.onnx_path.clone(),
            ModelFormat::Onnx => self.onnx_path.parent().unwrap_or(Path::new(".")).join(rel),
        };
        let sha = if self.weights_verified {
            None
        } else {
            self.manifest.weights_sha256.as_deref()
        };
        Some((dir, sha))
    }

    /// The decoded ONNX graph.
    fn mismatch(&self, reason: String) -> ModelError {
        ModelError::Mismatch {
            manifest: self.manifest_path.clone(),
            onnx: self.onnx_path.clone(),
            reason,
        }
    }

    fn check_consistency(&self) -> Result<(), ModelError> {
        let m = &self.manifest;
        let bad = |reason: String| {
            Err(ModelError::BadManifest {
                path: self.manifest_path.clone(),
                reason,
            })
        };
        if m.format != MANIFEST_FORMAT {
            return bad(format!(
                "format is {:?}, expected {MANIFEST_FORMAT:?}",
                m.format
            ));
        }
        if m.format_version != MANIFEST_FORMAT_VERSION {
            return bad(format!(
                "format_version {} is not supported (this build reads {MANIFEST_FORMAT_VERSION})",
                m.format_version
            ));
        }
        if m.patch_size == 0 || m.hidden_size == 0 {
            return bad("patch_size and hidden_size must be positive".into());
        }
        if m.image_std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || m.image_mean.iter().any(|v| !v.is_finite())
        {
            return bad("image_std must be finite and positive, image_mean finite".into());
        }
        if m.dynamic != (m.input_height.is_none() && m.input_width.is_none()) {
            return bad(
                "dynamic models have null input_height/input_width, fixed models have both".into(),
            );
        }
        if let (Some(h), Some(w)) = (m.input_height, m.input_width) {
            self.validate_size(InputSize {
                height: h,
                width: w,
            })?;
        }
        let onnx_name = self
            .onnx_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if m.onnx_file != onnx_name {
            return Err(self.mismatch(format!(
                "the manifest describes {:?}, not {onnx_name:?}",
                m.onnx_file
            )));
        }
        let mut expected_outputs: Vec<String> =
            CORE_OUTPUTS.iter().map(|s| s.to_string()).collect();
        for layer in &m.layers {
            if *layer == 0 || *layer > m.num_layers {
                return bad(format!(
                    "layer {layer} is outside 1..={} (the model's blocks)",
                    m.num_layers
                ));
            }
            expected_outputs.push(format!("layer_{layer}"));
        }
        if m.outputs != expected_outputs {
            return bad(format!(
                "outputs {:?} do not follow from layers {:?} (expected {:?})",
                m.outputs, m.layers, expected_outputs
            ));
        }
        if let Some(opset) = self.graph.opset {
            if opset != m.opset {
                return Err(self.mismatch(format!(
                    "the graph uses opset {opset}, the manifest says {}",
                    m.opset
                )));
            }
        }

        // Inputs: exactly the image input, [1, 3, H, W].
        let [input] = self.graph.inputs.as_slice() else {
            return Err(self.mismatch(format!(
                "the graph has {} inputs ({}), expected one named {:?}",
                self.graph.inputs.len(),
                names(&self.graph.inputs),
                m.input_name
            )));
        };
        if input.name != m.input_name {
            return Err(self.mismatch(format!(
                "the graph input is {:?}, the manifest says {:?}",
                input.name, m.input_name
            )));
        }
        self.check_dims(
            input,
            &[
                Some(1),
                Some(3),
                m.input_height.map(|v| v as i64),
                m.input_width.map(|v| v as i64),
            ],
        )?;
        if !m.dynamic
            && input
                .dims
                .iter()
                .skip(2)
                .any(|d| !matches!(d, Dim::Fixed(_)))
        {
            return Err(self.mismatch(format!(
                "the manifest says fixed size but the graph input is {input}"
            )));
        }

        // Outputs: the manifest's names, in order, with the right shapes.
        let graph_names: Vec<&str> = self.graph.outputs.iter().map(|o| o.name.as_str()).collect();
        if graph_names != m.outputs.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(self.mismatch(format!(
                "the graph outputs are {graph_names:?}, the manifest says {:?}",
                m.outputs
            )));
        }
        let c = Some(m.hidden_size as i64);
        let tokens = self.fixed_grid().map(|(h, w)| (h * w) as i64);
        for out in &self.graph.outputs {
            let expected: Vec<Option<i64>> = match out.name.as_str() {
                "cls" => vec![Some(1), c],
                "registers" => vec![Some(1), Some(m.num_register_tokens as i64), c],
                _ => vec![Some(1), tokens, c],
            };
            self.check_dims(out, &expected)?;
        }
        Ok(())
    }

    fn check_dims(
        &self,
        sig: &TensorSignature,
        expected: &[Option<i64>],
    ) -> Result<(), ModelError> {
        if sig.elem_type != "float32" {
            return Err(self.mismatch(format!("{sig}: expected float32")));
        }
        if sig.dims.len() != expected.len() {
            return Err(self.mismatch(format!("{sig}: expected rank {}", expected.len())));
        }
        for (dim, want) in sig.dims.iter().zip(expected) {
            if let (Dim::Fixed(have), Some(want)) = (dim, want) {
                if have != want {
                    let want: Vec<String> = expected
                        .iter()
                        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                        .collect();
                    return Err(self.mismatch(format!(
                        "{sig}: expected [{}] from the manifest",
                        want.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Patch grid (h, w) of a fixed-size model; `None` when dynamic.
    pub fn fixed_grid(&self) -> Option<(usize, usize)> {
        let m = &self.manifest;
        Some((
            m.input_height? / m.patch_size,
            m.input_width? / m.patch_size,
        ))
    }

    /// The fixed input size, `None` for a dynamic model.
    pub fn fixed_input_size(&self) -> Option<InputSize> {
        Some(InputSize {
            height: self.manifest.input_height?,
            width: self.manifest.input_width?,
        })
    }

    /// Check that `size` can be fed to this model.
    pub fn validate_size(&self, size: InputSize) -> Result<(), ModelError> {
        let p = self.manifest.patch_size;
        let err = |reason: String| ModelError::BadInputSize {
            path: self.onnx_path.clone(),
            height: size.height,
            width: size.width,
            reason,
        };
        if size.height == 0
            || size.width == 0
            || !size.height.is_multiple_of(p)
            || !size.width.is_multiple_of(p)
        {
            let round = |v: usize| (v.max(p).div_ceil(p)) * p;
            return Err(err(format!(
                "height and width must be positive multiples of the patch size {p}; use {}x{}",
                round(size.height),
                round(size.width)
            )));
        }
        if let Some(fixed) = self.fixed_input_size() {
            if fixed != size {
                return Err(err(format!(
                    "the model was exported for {fixed} only; use that size, or export again with --height {} --width {} (or --dynamic)",
                    size.height, size.width
                )));
            }
        }
        Ok(())
    }

    /// Resolve the input size: the fixed size, or `requested` for a dynamic model.
    pub fn resolve_size(&self, requested: Option<InputSize>) -> Result<InputSize, ModelError> {
        match (self.fixed_input_size().or(self.default_size), requested) {
            (_, Some(size)) => {
                self.validate_size(size)?;
                Ok(size)
            }
            (Some(size), None) => Ok(size),
            (None, None) => Err(ModelError::BadInputSize {
                path: self.onnx_path.clone(),
                height: 0,
                width: 0,
                reason: "the model is dynamic; give an input size (e.g. --input-size 224x224)"
                    .into(),
            }),
        }
    }

    /// Estimated floating-point operations of one forward pass at `size`
    /// (2 x multiply-accumulates of the patch embedding, attention and MLP matrix products).
    pub fn flops(&self, size: InputSize) -> u64 {
        vit_flops(&self.manifest, size)
    }

    /// Drop the decoded graph (about the model's size in memory) once every backend that needs
    /// it has prepared the model; the manifest and graph facts stay.
    pub fn release_graph(&mut self) {
        self.proto = None;
    }

    /// Build the tract inference model from the decoded graph.
    pub(crate) fn tract_model(&self) -> Result<tract_onnx::prelude::InferenceModel, ModelError> {
        let Some(proto) = &self.proto else {
            let reason = match self.format {
                ModelFormat::HuggingFace => "it is a Hugging Face checkpoint folder, not an ONNX graph: run it on backend native, or export it with models/export_backbone.py --checkpoint FOLDER for tract and onnxruntime",
                ModelFormat::Onnx => "its decoded graph was released after preparation; load the model again",
            };
            return Err(ModelError::Unsupported {
                path: self.onnx_path.clone(),
                reason: reason.into(),
            });
        };
        let dir = self.onnx_path.parent().and_then(|d| d.to_str());
        tract_onnx::onnx()
            .parse(proto, dir)
            .map(|r| r.model)
            .map_err(|e| ModelError::Unsupported {
                path: self.onnx_path.clone(),
                reason: format!("{e:#}"),
            })
    }
}

/// Estimated FLOPs (2 x MACs) of a DINOv3 ViT forward pass.
pub fn vit_flops(m: &Manifest, size: InputSize) -> u64 {
    let c = m.hidden_size as u64;
    let p = m.patch_size as u64;
    let patches = (size.height as u64 / p) * (size.width as u64 / p);
    let n = 1 + m.num_register_tokens as u64 + patches;
    // MLP width: 4C (GELU) for S/B/L; S+ uses a gated MLP, whose width we do not know here,
    // so this is an estimate for it.
    let mlp = 4 * c;
    let embed = patches * (3 * p * p) * c;
    let qkv_proj = n * c * 4 * c;
    let attention = 2 * n * n * c;
    let mlp_macs = 2 * n * c * mlp;
    2 * (embed + m.num_layers as u64 * (qkv_proj + attention + mlp_macs))
}

fn names(sigs: &[TensorSignature]) -> String {
    sigs.iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_manifest(path: &Path) -> Result<Manifest, ModelError> {
    let text = fs::read_to_string(path).map_err(|source| ModelError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    Manifest::parse(&text, path)
}

impl Manifest {
    /// Parse a backbone manifest's JSON (what [`BackboneModel::load`] reads beside the ONNX);
    /// `origin` names it in errors. The checks against the graph come later, at load.
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest, ModelError> {
        serde_json::from_str(text).map_err(|e| ModelError::BadManifest {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

fn read_proto(path: &Path) -> Result<pb::ModelProto, ModelError> {
    // Open first so a missing file is reported as such, not as a decode error.
    fs::metadata(path).map_err(|source| ModelError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let proto =
        tract_onnx::onnx()
            .proto_model_for_path(path)
            .map_err(|e| ModelError::CorruptOnnx {
                path: path.to_path_buf(),
                reason: format!("{e:#}"),
            })?;
    if proto.graph.is_none() {
        return Err(ModelError::CorruptOnnx {
            path: path.to_path_buf(),
            reason: "no graph".into(),
        });
    }
    Ok(proto)
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let unreadable = |source| ModelError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(unreadable)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn elem_type_name(t: i32) -> String {
    use pb::tensor_proto::DataType;
    match DataType::try_from(t) {
        Ok(DataType::Float) => "float32".into(),
        Ok(DataType::Float16) => "float16".into(),
        Ok(DataType::Double) => "float64".into(),
        Ok(DataType::Bfloat16) => "bfloat16".into(),
        Ok(other) => format!("{other:?}").to_lowercase(),
        Err(_) => format!("type{t}"),
    }
}

fn signature(v: &pb::ValueInfoProto) -> TensorSignature {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TypeValue;
    let (elem_type, dims) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => (
            elem_type_name(t.elem_type),
            t.shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Value::DimValue(v)) => Dim::Fixed(*v),
                            Some(Value::DimParam(p)) => Dim::Symbol(p.clone()),
                            None => Dim::Unknown,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ("unknown".into(), Vec::new()),
    };
    TensorSignature {
        name: v.name.clone(),
        elem_type,
        dims,
    }
}

fn graph_facts(proto: &pb::ModelProto) -> GraphFacts {
    let empty = pb::GraphProto::default();
    let graph = proto.graph.as_ref().unwrap_or(&empty);
    let initializer_names: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let initializer_elements = graph
        .initializer
        .iter()
        .map(|t| t.dims.iter().map(|d| (*d).max(0) as u64).product::<u64>())
        .sum();
    let mut op_counts = BTreeMap::new();
    for node in &graph.node {
        *op_counts.entry(node.op_type.clone()).or_insert(0) += 1;
    }
    GraphFacts {
        inputs: graph
            .input
            .iter()
            .filter(|i| !initializer_names.contains(i.name.as_str()))
            .map(signature)
            .collect(),
        outputs: graph.output.iter().map(signature).collect(),
        opset: proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version),
        initializer_elements,
        node_count: graph.node.len(),
        op_counts,
        producer: format!("{} {}", proto.producer_name, proto.producer_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            format_version: 1,
            variant: "vits16".into(),
            patch_size: 16,
            hidden_size: 384,
            num_layers: 12,
            num_heads: 6,
            num_register_tokens: 4,
            input_name: "pixel_values".into(),
            input_height: Some(224),
            input_width: Some(224),
            dynamic: false,
            layers: vec![],
            outputs: vec![],
            image_mean: [0.485, 0.456, 0.406],
            image_std: [0.229, 0.224, 0.225],
            source: ManifestSource {
                kind: "random-init".into(),
                path: None,
                seed: Some(0),
            },
            onnx_file: "x.onnx".into(),
            onnx_sha256: String::new(),
            opset: 18,
            parameter_count: 0,
            exporter: BTreeMap::new(),
            quantization: None,
            weights_dir: None,
            weights_sha256: None,
        }
    }

    #[test]
    fn a_released_graph_is_not_compiled_again() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/dinov3_tiny.onnx");
        let mut model = BackboneModel::load(&path).unwrap();
        assert!(model.tract_model().is_ok());
        model.release_graph();
        let e = model.tract_model().unwrap_err().to_string();
        assert!(e.contains("released"), "{e}");
        // The manifest and the graph facts stay.
        assert_eq!(model.manifest.variant, "tiny");
        assert!(!model.graph.outputs.is_empty());
    }

    #[test]
    fn vit_s_flops_match_the_published_figure() {
        // ViT-S/16 at 224 is commonly quoted at ~4.6 GMACs (~9.2 GFLOPs) for 197 tokens;
        // DINOv3 adds 4 registers, so a little more.
        let f = vit_flops(
            &manifest(),
            InputSize {
                height: 224,
                width: 224,
            },
        ) as f64;
        assert!((9.0e9..10.0e9).contains(&f), "{f}");
    }

    #[test]
    fn manifest_path_replaces_extension() {
        assert_eq!(
            manifest_path_for(Path::new("/a/b/model.onnx")),
            PathBuf::from("/a/b/model.json")
        );
    }
}
