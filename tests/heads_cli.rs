//! Heads from the command line: a run with a heads directory, and every kind of bad head file
//! giving exit code 2 and a message naming the file and the fix (never a panic).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_bad_input, bin, fixture, stderr};
use serde_json::Value;

fn tiny_model() -> String {
    fixture("tiny/dinov3_tiny.onnx").display().to_string()
}

/// Copy one fixture head (onnx + manifest) into `dir`, editing the manifest.
fn head_copy(dir: &Path, task: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let src = fixture("heads/tiny").join(format!("{task}.onnx"));
    let dst = dir.join(format!("{task}.onnx"));
    std::fs::copy(&src, &dst).unwrap();
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(src.with_extension("json")).unwrap())
            .unwrap();
    edit(&mut json);
    std::fs::write(dst.with_extension("json"), json.to_string()).unwrap();
    dst
}

fn run_with_heads(dir: &Path) -> Output {
    bin(&[
        "run",
        "--model",
        &tiny_model(),
        "--heads",
        dir.to_str().unwrap(),
        "--max-frames",
        "3",
        "--fps",
        "0",
        "--width",
        "160",
        "--height",
        "120",
    ])
}

#[test]
fn run_with_every_fixture_head_reports_their_outputs() {
    let o = run_with_heads(&fixture("heads/tiny"));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("heads: detection, segmentation, depth, classification, pca"),
        "{err}"
    );
    for needle in [
        "detection: ",
        "segmentation: 160x120",
        "depth: ",
        "pca: 160x120",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in\n{err}");
    }
    // Ground truth of the synthetic scene is scored as the run goes.
    assert!(err.contains("vs ground truth over"), "{err}");
}

#[test]
fn head_with_another_feature_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = head_copy(dir.path(), "segmentation", |j| {
        j["backbone"]["hidden_size"] = 384.into()
    });
    let o = run_with_heads(dir.path());
    assert_bad_input(
        &o,
        &[
            onnx.with_extension("json").to_str().unwrap(),
            "feature dimension is 384 in the head but 64",
            "train_heads.py",
        ],
    );
}

#[test]
fn head_trained_at_another_grid() {
    let dir = tempfile::tempdir().unwrap();
    head_copy(dir.path(), "depth", |j| {
        j["backbone"]["grid"] = serde_json::json!([14, 14])
    });
    let o = run_with_heads(dir.path());
    assert_bad_input(
        &o,
        &[
            "patch grid",
            "14x14",
            "4x6",
            "224x224 pixels (--input-size)",
        ],
    );
}

#[test]
fn head_needing_a_layer_the_backbone_does_not_export() {
    let dir = tempfile::tempdir().unwrap();
    head_copy(dir.path(), "depth", |j| {
        j["inputs"] = serde_json::json!(["patch_tokens", "layer_7"])
    });
    let o = run_with_heads(dir.path());
    assert_bad_input(&o, &["layer_7 needed", "--layers including 7"]);
}

#[test]
fn head_of_another_backbone_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    head_copy(dir.path(), "classification", |j| {
        j["backbone"]["onnx_sha256"] = "0".repeat(64).into()
    });
    let o = run_with_heads(dir.path());
    assert_bad_input(&o, &["backbone sha256", "retrain it on this backbone"]);
}

#[test]
fn head_without_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = head_copy(dir.path(), "detection", |j| {
        j["class_names"] = serde_json::json!([])
    });
    let o = run_with_heads(dir.path());
    assert_bad_input(
        &o,
        &[
            onnx.with_extension("json").to_str().unwrap(),
            "needs class_names",
            "\"class_names\"",
        ],
    );
}

#[test]
fn head_whose_class_count_disagrees_with_its_graph() {
    let dir = tempfile::tempdir().unwrap();
    head_copy(dir.path(), "segmentation", |j| {
        j["class_names"] = serde_json::json!(["a", "b"]);
    });
    let o = run_with_heads(dir.path());
    assert_bad_input(
        &o,
        &[
            "segmentation.onnx",
            "lists 2 class names",
            "outputs 4 classes",
        ],
    );
}

#[test]
fn head_onnx_replaced_or_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = head_copy(dir.path(), "detection", |_| {});
    let mut bytes = std::fs::read(&onnx).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&onnx, bytes).unwrap();
    let o = run_with_heads(dir.path());
    assert_bad_input(
        &o,
        &[
            onnx.to_str().unwrap(),
            "sha256",
            "copy the head ONNX and its .json together",
        ],
    );
}

#[test]
fn head_manifest_with_unknown_field_or_wrong_task_section() {
    let dir = tempfile::tempdir().unwrap();
    head_copy(dir.path(), "depth", |j| j["depth_scale"] = 2.into());
    let o = run_with_heads(dir.path());
    assert_bad_input(
        &o,
        &[
            "depth.json",
            "unknown field `depth_scale`",
            "train_heads.py",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    head_copy(dir.path(), "depth", |j| j["depth"] = Value::Null);
    let o = run_with_heads(dir.path());
    assert_bad_input(&o, &["task depth needs a \"depth\" section"]);
}

#[test]
fn heads_directory_empty_or_missing() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_with_heads(dir.path());
    assert_bad_input(&o, &["holds no head files", "detection.onnx"]);
    let o = run_with_heads(Path::new("/nonexistent/heads"));
    assert_bad_input(&o, &["/nonexistent/heads", "is not a directory"]);
}

#[test]
fn unknown_head_switch_or_bad_rate() {
    let o = bin(&[
        "run",
        "--model",
        &tiny_model(),
        "--max-frames",
        "1",
        "--disable-head",
        "segmentaton",
    ]);
    assert_bad_input(&o, &["segmentaton", "no such head"]);
    let o = bin(&[
        "run",
        "--model",
        &tiny_model(),
        "--max-frames",
        "1",
        "--head-rate",
        "pca=-2",
    ]);
    assert_bad_input(&o, &["pca=-2", "finite rate >= 0"]);
}
