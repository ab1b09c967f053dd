//! The bodies of the command-line subcommands (`main.rs` only parses arguments).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::{backend_by_name, BackendError};
use crate::features::{Features, FeaturesError};
use crate::image_io::{load_rgb, ImageFileError};
use crate::model::{BackboneModel, InputSize, ModelError};
use crate::npz::{write_npz, NamedArray, NpyError};
use crate::preprocess::{PreprocessError, Preprocessor, ResizeMode};

/// Any error of a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Model file problem.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Backend problem.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Image file problem.
    #[error(transparent)]
    Image(#[from] ImageFileError),
    /// Preprocessing problem.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// Output file problem.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// Outputs do not match the manifest.
    #[error(transparent)]
    Features(#[from] FeaturesError),
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
}

impl CommandError {
    /// Process exit code (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandError::Backend(e) if !e.is_bad_input() => crate::exit::FAILURE,
            _ => crate::exit::BAD_INPUT,
        }
    }
}

/// Parse `HxW` (e.g. `224x224`).
pub fn parse_input_size(text: &str) -> Result<InputSize, CommandError> {
    let usage = || {
        CommandError::Usage(format!(
            "input size {text:?} is not HEIGHTxWIDTH (e.g. 224x224, multiples of 16)"
        ))
    };
    let (h, w) = text.split_once(['x', 'X']).ok_or_else(usage)?;
    Ok(InputSize {
        height: h.trim().parse().map_err(|_| usage())?,
        width: w.trim().parse().map_err(|_| usage())?,
    })
}

/// `inspect MODEL`: manifest, graph inputs/outputs, parameter count, FLOP estimate.
pub fn inspect(path: &Path) -> Result<String, CommandError> {
    let model = BackboneModel::load(path)?;
    let m = &model.manifest;
    let g = &model.graph;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "model      {}", model.onnx_path.display());
    let _ = writeln!(out, "manifest   {}", model.manifest_path.display());
    let _ = writeln!(out, "sha256     {} (verified)", m.onnx_sha256);
    let _ = writeln!(
        out,
        "variant    {} (patch {}, hidden {}, {} layers, {} heads, {} registers)",
        m.variant, m.patch_size, m.hidden_size, m.num_layers, m.num_heads, m.num_register_tokens
    );
    let size = model.fixed_input_size();
    let _ = writeln!(
        out,
        "input size {}",
        size.map_or("dynamic (any multiple of the patch size)".to_string(), |s| s.to_string())
    );
    let _ = writeln!(out, "mean/std   {:?} / {:?}", m.image_mean, m.image_std);
    let _ = writeln!(
        out,
        "source     {}{}{}",
        m.source.kind,
        m.source.path.as_ref().map_or(String::new(), |p| format!(" {p}")),
        m.source.seed.map_or(String::new(), |s| format!(" seed {s}"))
    );
    let exporter: Vec<String> = m.exporter.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "exporter   {}; opset {}; producer {}", exporter.join(", "), m.opset, g.producer);
    let _ = writeln!(out, "inputs");
    for i in &g.inputs {
        let _ = writeln!(out, "  {i}");
    }
    let _ = writeln!(out, "outputs");
    for o in &g.outputs {
        let _ = writeln!(out, "  {o}");
    }
    let _ = writeln!(
        out,
        "parameters {} (manifest), {} stored weight values (ONNX initializers)",
        group_digits(m.parameter_count),
        group_digits(g.initializer_elements)
    );
    let flops_size = size.unwrap_or(InputSize {
        height: 224,
        width: 224,
    });
    let _ = writeln!(
        out,
        "FLOPs      {:.2} G per frame at {} (2 x multiply-accumulates of the matrix products)",
        model.flops(flops_size) as f64 / 1e9,
        flops_size
    );
    let ops: Vec<String> = g.op_counts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let _ = writeln!(out, "graph      {} nodes; {}", g.node_count, ops.join(" "));
    Ok(out)
}

/// Options of the `features` subcommand.
#[derive(Debug, Clone)]
pub struct FeaturesOptions {
    /// Backbone ONNX.
    pub model: PathBuf,
    /// Image file.
    pub image: PathBuf,
    /// Output `.npz`.
    pub out: PathBuf,
    /// Input size for dynamic models (fixed models use their own).
    pub input_size: Option<InputSize>,
    /// How the image is fitted to the input.
    pub resize: ResizeMode,
    /// Backend name.
    pub backend: String,
    /// Threads (0 = all cores).
    pub threads: usize,
}

/// What `features` did, for the log line.
#[derive(Debug, Clone)]
pub struct FeaturesReport {
    /// Input size used.
    pub input_size: InputSize,
    /// Arrays written.
    pub arrays: Vec<String>,
    /// Seconds to load and prepare the model.
    pub prepare_seconds: f64,
    /// Seconds of the backbone pass.
    pub run_seconds: f64,
}

/// `features`: one image -> `cls`, `registers`, `patch_tokens` (+ layers) as float32 `.npz`.
pub fn features(opts: &FeaturesOptions) -> Result<FeaturesReport, CommandError> {
    let start = Instant::now();
    let image = load_rgb(&opts.image)?;
    let model = BackboneModel::load(&opts.model)?;
    let size = model.resolve_size(opts.input_size)?;
    let backend = backend_by_name(&opts.backend, opts.threads)?;
    backend.check()?;
    let prepared = backend.prepare(&model, size)?;
    let mut session = prepared.session()?;
    let prepare_seconds = start.elapsed().as_secs_f64();

    let mut pre = Preprocessor::new(&model.manifest, size, opts.resize)?;
    let (input, _letterbox) = pre.run(&image.view())?;
    let t = Instant::now();
    let outputs = session.run(&input)?;
    let run_seconds = t.elapsed().as_secs_f64();
    // Validates every shape against the manifest before anything is written.
    Features::new(&outputs, &model.manifest, size)?;

    let arrays: Vec<NamedArray> = outputs
        .tensors
        .iter()
        .map(|t| NamedArray {
            name: &t.name,
            shape: &t.shape,
            data: t.data(),
        })
        .collect();
    write_npz(&opts.out, &arrays)?;
    Ok(FeaturesReport {
        input_size: size,
        arrays: outputs.tensors.iter().map(|t| t.name.clone()).collect(),
        prepare_seconds,
        run_seconds,
    })
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('_');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(
            parse_input_size("224x320").unwrap(),
            InputSize {
                height: 224,
                width: 320
            }
        );
        assert!(parse_input_size("224").is_err());
        assert!(parse_input_size("ax2").is_err());
    }

    #[test]
    fn groups_digits() {
        assert_eq!(group_digits(21_600_000), "21_600_000");
        assert_eq!(group_digits(12), "12");
    }
}
