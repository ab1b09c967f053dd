//! `inspect MODEL`: a backbone model's manifest, inputs/outputs, parameter count and FLOPs.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::CommandError;
use crate::model::{BackboneModel, InputSize};

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Backbone .onnx file (its .json manifest must sit beside it).
    pub model: PathBuf,
}

/// Print the report.
pub fn run(args: &InspectArgs) -> Result<(), CommandError> {
    print!("{}", report(&BackboneModel::load(&args.model)?));
    Ok(())
}

/// The report `inspect` prints.
pub fn report(model: &BackboneModel) -> String {
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
        size.map_or(
            "dynamic (any multiple of the patch size)".to_string(),
            |s| s.to_string()
        )
    );
    let _ = writeln!(out, "mean/std   {:?} / {:?}", m.image_mean, m.image_std);
    let _ = writeln!(
        out,
        "source     {}{}{}",
        m.source.kind,
        m.source
            .path
            .as_ref()
            .map_or(String::new(), |p| format!(" {p}")),
        m.source
            .seed
            .map_or(String::new(), |s| format!(" seed {s}"))
    );
    let exporter: Vec<String> = m.exporter.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        out,
        "exporter   {}; opset {}; producer {}",
        exporter.join(", "),
        m.opset,
        g.producer
    );
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
    let ops: Vec<String> = g
        .op_counts
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    let _ = writeln!(out, "graph      {} nodes; {}", g.node_count, ops.join(" "));
    out
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
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
    fn groups_digits() {
        assert_eq!(group_digits(21_600_000), "21_600_000");
        assert_eq!(group_digits(12), "12");
    }
}
