//! The command line on good and bad input: exit codes (0 ok, 2 bad input) and messages that
//! name the file and the fix, never a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_bad_input, bin, fixture, stderr};

/// Copy the tiny fixture (onnx + manifest) into a temp dir, optionally altering either.
fn tiny_copy(
    dir: &Path,
    onnx: impl FnOnce(Vec<u8>) -> Vec<u8>,
    manifest: impl FnOnce(serde_json::Value) -> serde_json::Value,
) -> PathBuf {
    let src = fixture("tiny/dinov3_tiny.onnx");
    let bytes = std::fs::read(&src).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.with_extension("json")).unwrap())
            .unwrap();
    let dst = dir.join("dinov3_tiny.onnx");
    std::fs::write(&dst, onnx(bytes)).unwrap();
    std::fs::write(dst.with_extension("json"), manifest(json).to_string()).unwrap();
    dst
}

fn photo() -> String {
    fixture("preprocess/chelsea.png").display().to_string()
}

#[test]
fn inspect_prints_manifest_io_parameters_and_flops() {
    let o = bin(&[
        "inspect",
        fixture("tiny/dinov3_tiny.onnx").to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    for needle in [
        "variant    tiny",
        "pixel_values float32 [1, 3, 64, 96]",
        "patch_tokens float32 [1, 24, 64]",
        "parameters",
        "FLOPs",
        "(verified)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[test]
fn features_writes_an_npz_numpy_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.npz");
    let o = bin(&[
        "features",
        "--model",
        fixture("tiny/dinov3_tiny.onnx").to_str().unwrap(),
        "--image",
        &photo(),
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut npz = npyz::npz::NpzArchive::open(&out).unwrap();
    let mut names: Vec<String> = npz.array_names().map(String::from).collect();
    names.sort();
    assert_eq!(
        names,
        ["cls", "layer_1", "layer_2", "patch_tokens", "registers"]
    );
    let patch = npz.by_name("patch_tokens").unwrap().unwrap();
    assert_eq!(patch.shape(), &[1, 24, 64]);
    let values = patch.into_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|v| v.abs() > 1e-3));
}

#[test]
fn missing_model_file() {
    let o = bin(&["inspect", "/nonexistent/model.onnx"]);
    assert_bad_input(&o, &["/nonexistent/model.json", "check the path"]);
}

#[test]
fn truncated_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_copy(dir.path(), |b| b[..b.len() / 2].to_vec(), |j| j);
    let o = bin(&["inspect", m.to_str().unwrap()]);
    assert_bad_input(&o, &[m.to_str().unwrap(), "export_backbone.py"]);
}

#[test]
fn corrupt_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_copy(
        dir.path(),
        |b| {
            b.iter()
                .enumerate()
                .map(|(i, v)| v ^ (i as u8).wrapping_mul(31) | 1)
                .collect()
        },
        |j| j,
    );
    let o = bin(&["inspect", m.to_str().unwrap()]);
    assert_bad_input(&o, &[m.to_str().unwrap(), "corrupt"]);
}

#[test]
fn flipped_byte_fails_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    // Flip a byte near the end (inside the weights): still decodes, hash differs.
    let m = tiny_copy(
        dir.path(),
        |mut b| {
            let i = b.len() - 100;
            b[i] ^= 0x55;
            b
        },
        |j| j,
    );
    let o = bin(&["inspect", m.to_str().unwrap()]);
    assert_bad_input(&o, &[m.to_str().unwrap(), "sha256"]);
}

#[test]
fn manifest_that_disagrees_with_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_copy(
        dir.path(),
        |b| b,
        |mut j| {
            j["hidden_size"] = 128.into();
            j
        },
    );
    let o = bin(&["inspect", m.to_str().unwrap()]);
    assert_bad_input(
        &o,
        &[
            "does not match",
            "cls float32 [1, 64]",
            "expected [1, 128]",
            "export_backbone.py",
        ],
    );

    let m = tiny_copy(
        dir.path(),
        |b| b,
        |mut j| {
            j["input_height"] = 80.into();
            j
        },
    );
    let o = bin(&["inspect", m.to_str().unwrap()]);
    assert_bad_input(&o, &["does not match", "pixel_values"]);
}

#[test]
fn manifest_with_unknown_field_or_bad_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_copy(
        dir.path(),
        |b| b,
        |mut j| {
            j["colour"] = "blue".into();
            j
        },
    );
    assert_bad_input(
        &bin(&["inspect", m.to_str().unwrap()]),
        &["unknown field", "manifest"],
    );
    std::fs::write(m.with_extension("json"), "{").unwrap();
    assert_bad_input(
        &bin(&["inspect", m.to_str().unwrap()]),
        &["dinov3_tiny.json"],
    );
}

#[test]
fn undecodable_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("photo.png");
    std::fs::write(&img, b"this is not a png").unwrap();
    let o = bin(&[
        "features",
        "--model",
        fixture("tiny/dinov3_tiny.onnx").to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--out",
        dir.path().join("o.npz").to_str().unwrap(),
    ]);
    assert_bad_input(
        &o,
        &["cannot decode image", img.to_str().unwrap(), "PNG or JPEG"],
    );
    assert!(!dir.path().join("o.npz").exists());
}

#[test]
fn input_size_not_a_multiple_of_16() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny_dynamic/dinov3_tiny_dynamic.onnx");
    let o = bin(&[
        "features",
        "--model",
        model.to_str().unwrap(),
        "--image",
        &photo(),
        "--out",
        dir.path().join("o.npz").to_str().unwrap(),
        "--input-size",
        "70x96",
    ]);
    assert_bad_input(
        &o,
        &["70x96", "multiples of the patch size 16", "use 80x96"],
    );

    // A fixed-size model refuses any other size, naming the export option that fixes it.
    let o = bin(&[
        "features",
        "--model",
        fixture("tiny/dinov3_tiny.onnx").to_str().unwrap(),
        "--image",
        &photo(),
        "--out",
        dir.path().join("o.npz").to_str().unwrap(),
        "--input-size",
        "32x32",
    ]);
    assert_bad_input(&o, &["exported for 64x96", "--dynamic"]);

    // A manifest claiming a size that is not a multiple of 16.
    let m = tiny_copy(
        dir.path(),
        |b| b,
        |mut j| {
            j["input_height"] = 70.into();
            j
        },
    );
    assert_bad_input(
        &bin(&["inspect", m.to_str().unwrap()]),
        &["multiples of the patch size"],
    );
}

#[test]
fn dynamic_model_without_size_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny_dynamic/dinov3_tiny_dynamic.onnx");
    let o = bin(&[
        "features",
        "--model",
        model.to_str().unwrap(),
        "--image",
        &photo(),
        "--out",
        dir.path().join("o.npz").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["--input-size"]);
}

#[test]
fn run_default_shows_status_lines_on_the_synthetic_scene() {
    let o = bin(&[
        "run",
        "--max-frames",
        "15",
        "--status-interval",
        "0.1",
        "--fps",
        "30",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("source synthetic"), "{err}");
    assert!(err.contains("fps | frames"), "status line missing:\n{err}");
    assert!(err.contains("backbone"), "{err}");
    assert!(
        err.contains("stopped after") && err.contains("15 processed"),
        "{err}"
    );
}

#[test]
fn sigint_stops_drains_and_exits_zero() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_dinov3_perception"))
        .args(["run", "--status-interval", "0.2", "--fps", "30"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Wait for the first status line: the pipeline is running.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("fps | frames") {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("fps | frames")), "{seen:?}");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped after")), "{rest:?}");
}

#[test]
fn run_with_a_missing_camera_or_directory_is_bad_input() {
    assert_bad_input(
        &bin(&[
            "run",
            "--source",
            "v4l2:/dev/video-does-not-exist",
            "--max-frames",
            "1",
        ]),
        &["/dev/video-does-not-exist"],
    );
    assert_bad_input(
        &bin(&[
            "run",
            "--source",
            "dir:/nonexistent/images",
            "--max-frames",
            "1",
        ]),
        &["/nonexistent/images"],
    );
    let o = bin(&["run", "--source", "webcam"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("synthetic, v4l2:/dev/videoN, dir:PATH, ros:TOPIC or mcap:PATH"));
}

#[test]
fn predict_writes_every_head_output_and_names_a_bad_images_dir() {
    let out = tempfile::tempdir().unwrap();
    let predict = |images: &Path| {
        bin(&[
            "predict",
            "--model",
            "models/demo/dinov3_tiny_240x320.onnx",
            "--heads",
            "models/demo",
            "--images",
            images.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ])
    };
    let images = fixture("camera");
    let o = predict(&images);
    assert!(o.status.success(), "{}", stderr(&o));
    let pngs = std::fs::read_dir(&images)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(pngs >= 3, "fixture images: {pngs}");
    for sub in ["masks", "depth"] {
        let n = std::fs::read_dir(out.path().join(sub)).unwrap().count();
        assert_eq!(n, pngs, "{sub}");
    }
    let anomaly: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("anomaly.json")).unwrap())
            .unwrap();
    assert_eq!(anomaly.as_object().map(|m| m.len()), Some(pngs));
    let dets: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("detections.json")).unwrap())
            .unwrap();
    assert!(dets.is_array(), "{dets}");

    let empty = tempfile::tempdir().unwrap();
    let o = predict(empty.path());
    assert_bad_input(&o, &[empty.path().to_str().unwrap()]);
}
