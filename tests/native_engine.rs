//! The native engine beyond single-image parity (which `backbone_parity.rs` checks against
//! PyTorch): batches, agreement with tract on the same exported weights, checkpoints as users
//! have them (transformers 4 and 5 names, bf16), and bad checkpoints refused with the tensor or
//! file named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{fixture, npy};
use dinov3_perception::backend::native::{NativeBackend, NativeEngine};
use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::{Backend, BackendError, InputTensor};
use dinov3_perception::tolerance::{
    compare, mean_row_cosine, BACKBONE_MAX_ABS, BACKBONE_MIN_MEAN_COSINE,
};
use dinov3_perception::{BackboneModel, InputSize};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const FOLDER: &str = "tiny/dinov3_tiny.hf";

/// A different image per batch slot: the reference input, scaled, shifted, mirrored.
fn batch_images(reference: &[f32], size: InputSize) -> Vec<Vec<f32>> {
    let w = size.width;
    let mirrored: Vec<f32> = reference
        .chunks_exact(w)
        .flat_map(|row| row.iter().rev().copied())
        .collect();
    vec![
        reference.to_vec(),
        reference.iter().map(|v| v * 0.5).collect(),
        reference.iter().map(|v| v + 0.25).collect(),
        mirrored,
    ]
}

#[test]
fn a_batch_of_four_gives_each_image_its_own_single_image_result() {
    let model = BackboneModel::load(&fixture(FOLDER)).unwrap();
    let (shape, input) = npy(&fixture("tiny/reference/input.npy"));
    let size = InputSize {
        height: shape[2],
        width: shape[3],
    };
    let images = batch_images(&input, size);
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    for threads in [1, 2] {
        let engine = NativeEngine::load(&model, threads).unwrap();
        let mut batch = engine.workspace(size, 4);
        engine.forward(&mut batch, &refs);
        let mut single = engine.workspace(size, 1);
        for (b, image) in refs.iter().enumerate() {
            engine.forward(&mut single, &[image]);
            for name in &model.manifest.outputs {
                let (_, one) = engine.output(&single, name, 0).unwrap();
                let (_, many) = engine.output(&batch, name, b).unwrap();
                let cmp = compare(many, one).unwrap();
                assert!(cmp.max_abs <= 1e-5, "image {b} {name}: {cmp}");
            }
        }
        // Slot 0 is the reference input: PyTorch's numbers, from inside the batch.
        let (_, expected) = npy(&fixture("tiny/reference/patch_tokens.npy"));
        let (_, got) = engine.output(&batch, "patch_tokens", 0).unwrap();
        let cmp = compare(got, &expected).unwrap();
        assert!(cmp.max_abs <= BACKBONE_MAX_ABS, "{cmp}");
        // And the slots differ: a batch that repeated image 0 would fail here.
        let (_, other) = engine.output(&batch, "patch_tokens", 3).unwrap();
        assert!(compare(other, got).unwrap().max_abs > 1e-2);
    }
}

#[test]
fn native_equals_tract_on_the_same_exported_weights() {
    let model = BackboneModel::load(&fixture("tiny/dinov3_tiny.onnx")).unwrap();
    let size = model.fixed_input_size().unwrap();
    let (_, data) = npy(&fixture("tiny/reference/input.npy"));
    let input = InputTensor {
        shape: [1, 3, size.height, size.width],
        data: data.iter().map(|v| v * 0.8 - 0.1).collect(),
    };
    let run = |backend: &dyn Backend| {
        backend
            .prepare(&model, size)
            .unwrap()
            .session()
            .unwrap()
            .run(&input)
            .unwrap()
    };
    let native = run(&NativeBackend::new(2));
    let tract = run(&TractBackend::new(2));
    for name in &model.manifest.outputs {
        let a = native.get(name).unwrap().data();
        let b = tract.get(name).unwrap().data();
        let cmp = compare(a, b).unwrap();
        let cos = mean_row_cosine(a, b, model.manifest.hidden_size).unwrap();
        assert!(cmp.max_abs <= BACKBONE_MAX_ABS, "{name}: {cmp}");
        assert!(cos >= BACKBONE_MIN_MEAN_COSINE, "{name}: cosine {cos}");
    }
}

/// Copy the fixture folder to `dst`, passing every tensor through `edit` (rename, retype, drop).
fn rewrite(
    dst: &Path,
    mut edit: impl FnMut(&str, Dtype, &[usize], &[u8]) -> Option<(String, Dtype, Vec<usize>, Vec<u8>)>,
) {
    let src = fixture(FOLDER);
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        if let Some(t) = edit(&name, view.dtype(), view.shape(), view.data()) {
            owned.push(t);
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(
        views,
        None::<HashMap<String, String>>,
        &dst.join("model.safetensors"),
    )
    .unwrap();
}

fn keep(n: &str, d: Dtype, s: &[usize], b: &[u8]) -> Option<(String, Dtype, Vec<usize>, Vec<u8>)> {
    Some((n.to_string(), d, s.to_vec(), b.to_vec()))
}

fn run_folder(dir: &Path) -> Result<Vec<f32>, BackendError> {
    let model = BackboneModel::load(dir).map_err(BackendError::Model)?;
    let (shape, data) = npy(&fixture("tiny/reference/input.npy"));
    let size = InputSize {
        height: shape[2],
        width: shape[3],
    };
    let prepared = NativeBackend::new(1).prepare(&model, size)?;
    let out = prepared.session()?.run(&InputTensor {
        shape: [1, 3, size.height, size.width],
        data,
    })?;
    Ok(out.get("patch_tokens").unwrap().data().to_vec())
}

#[test]
fn transformers_5_names_and_bf16_weights_load() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, expected) = npy(&fixture("tiny/reference/patch_tokens.npy"));

    // transformers 5 keeps the blocks under `model.layer.<i>`.
    let renamed = tmp.path().join("renamed");
    rewrite(&renamed, |n, d, s, b| {
        let n = if n.starts_with("layer.") {
            format!("model.{n}")
        } else {
            n.to_string()
        };
        Some((n, d, s.to_vec(), b.to_vec()))
    });
    let got = run_folder(&renamed).unwrap();
    assert!(compare(&got, &expected).unwrap().max_abs <= BACKBONE_MAX_ABS);

    // bf16 checkpoints (as many published checkpoints are) are widened at load: only the
    // weights' rounding separates the result from the float32 reference.
    let bf16 = tmp.path().join("bf16");
    rewrite(&bf16, |n, d, s, b| {
        assert_eq!(d, Dtype::F32);
        let halves: Vec<u8> = b
            .chunks_exact(4)
            .flat_map(|c| {
                half::bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
            })
            .collect();
        Some((n.to_string(), Dtype::BF16, s.to_vec(), halves))
    });
    let got = run_folder(&bf16).unwrap();
    let cos = mean_row_cosine(&got, &expected, 64).unwrap();
    assert!(cos > 0.999 && cos < 1.0, "bf16 weights: cosine {cos}");
}

fn assert_refused(e: BackendError, must_mention: &[&str]) {
    let text = e.to_string();
    assert!(e.is_bad_input(), "{text}");
    for m in must_mention {
        assert!(text.contains(m), "{text:?} does not mention {m:?}");
    }
}

#[test]
fn bad_checkpoints_are_refused_naming_the_tensor_or_file() {
    let tmp = tempfile::tempdir().unwrap();

    let missing = tmp.path().join("missing");
    rewrite(&missing, |n, d, s, b| {
        (n != "layer.1.mlp.up_proj.weight")
            .then(|| keep(n, d, s, b))
            .flatten()
    });
    assert_refused(
        run_folder(&missing).unwrap_err(),
        &["layer.1.mlp.up_proj.weight", "missing", "model.safetensors"],
    );

    let wrong = tmp.path().join("wrong_shape");
    rewrite(&wrong, |n, d, s, b| {
        if n == "norm.weight" {
            Some((n.to_string(), d, vec![32], b[..128].to_vec()))
        } else {
            keep(n, d, s, b)
        }
    });
    assert_refused(
        run_folder(&wrong).unwrap_err(),
        &["norm.weight", "[32]", "[64]"],
    );

    let truncated = tmp.path().join("truncated");
    rewrite(&truncated, keep);
    let file = truncated.join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_refused(
        run_folder(&truncated).unwrap_err(),
        &["model.safetensors", "truncated"],
    );

    let convnext = tmp.path().join("convnext");
    rewrite(&convnext, keep);
    let cfg = std::fs::read_to_string(convnext.join("config.json"))
        .unwrap()
        .replace("\"dinov3_vit\"", "\"dinov3_convnext\"");
    std::fs::write(convnext.join("config.json"), cfg).unwrap();
    assert_refused(
        run_folder(&convnext).unwrap_err(),
        &["config.json", "ConvNeXt"],
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_refused(run_folder(&empty).unwrap_err(), &["config.json"]);
}

#[test]
fn an_export_whose_folder_was_modified_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["dinov3_tiny.onnx", "dinov3_tiny.json"] {
        std::fs::copy(fixture(&format!("tiny/{f}")), tmp.path().join(f)).unwrap();
    }
    // The folder's weights change (one tensor rewritten): the manifest's sha256 no longer holds.
    rewrite(&tmp.path().join("dinov3_tiny.hf"), |n, d, s, b| {
        let mut b = b.to_vec();
        if n == "norm.bias" {
            b[0] ^= 1;
        }
        Some((n.to_string(), d, s.to_vec(), b))
    });
    let model = BackboneModel::load(&tmp.path().join("dinov3_tiny.onnx")).unwrap();
    let e = NativeBackend::new(1)
        .prepare(&model, model.fixed_input_size().unwrap())
        .err()
        .unwrap();
    assert_refused(e, &["sha256", "model.safetensors", "modified"]);
}
