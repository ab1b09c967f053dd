//! Fault suite, start-up: every file the node reads at start-up — backbone ONNX and manifest,
//! the Hugging Face weights folder, head ONNX and manifest, anomaly bank, calibration, parameter
//! file — replaced by garbage, truncated or emptied. `run` must refuse to start with exit code 2
//! and an error that names the file, never panic and never run on what is left.
//!
//! The same run with the files intact succeeds first, so each failure is the corruption's.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_bad_input, bin, stderr};
use rand::{RngExt, SeedableRng};

/// How a file is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Same length, every byte random (seeded).
    Garbage,
    /// The first half only (a copy cut short).
    Truncated,
    /// Zero bytes.
    Empty,
}

const DAMAGES: [Damage; 3] = [Damage::Garbage, Damage::Truncated, Damage::Empty];

fn damage(path: &Path, how: Damage, seed: u64) {
    let bytes = fs::read(path).unwrap();
    let out = match how {
        Damage::Garbage => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (0..bytes.len()).map(|_| rng.random::<u8>()).collect()
        }
        Damage::Truncated => bytes[..bytes.len() / 2].to_vec(),
        Damage::Empty => Vec::new(),
    };
    fs::write(path, out).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A private copy of the demo model, heads and bank, the synthetic calibration and a parameter
/// file that points at it.
struct Install {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Install {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let crate_root = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_dir(&crate_root.join("models/demo"), &root.join("demo"));
        fs::copy(
            crate_root.join("calibration/synthetic_640x480.yaml"),
            root.join("camera.yaml"),
        )
        .unwrap();
        let params = format!(
            "dinov3_perception:\n  ros__parameters:\n    calibration_file: \"{}\"\n    max_frames: 1\n",
            root.join("camera.yaml").display()
        );
        fs::write(root.join("params.yaml"), params).unwrap();
        Install { _dir: dir, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn run(&self) -> Output {
        let model = self.path("demo/dinov3_tiny_240x320.onnx");
        let heads = self.path("demo");
        let params = self.path("params.yaml");
        bin(&[
            "run",
            "--no-ros",
            "--model",
            model.to_str().unwrap(),
            "--heads",
            heads.to_str().unwrap(),
            "--params-file",
            params.to_str().unwrap(),
            "--fps",
            "0",
            // So that a damaged file the node wrongly accepts ends the run (and fails the test
            // on its exit code) instead of running forever.
            "--max-frames",
            "1",
        ])
    }
}

/// Every start-up file, relative to the install, with what its error must name besides the file.
const FILES: &[&str] = &[
    "demo/dinov3_tiny_240x320.onnx",
    "demo/dinov3_tiny_240x320.json",
    "demo/dinov3_tiny_240x320.hf/model.safetensors",
    "demo/dinov3_tiny_240x320.hf/config.json",
    "demo/detection.onnx",
    "demo/detection.json",
    "demo/segmentation.json",
    "demo/anomaly.bank.json",
    "demo/anomaly.bank.npz",
    "camera.yaml",
    "params.yaml",
];

#[test]
fn intact_files_start_and_run() {
    let install = Install::new();
    let o = install.run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

fn check_file(rel: &str) {
    for (k, how) in DAMAGES.into_iter().enumerate() {
        let install = Install::new();
        let path = install.path(rel);
        damage(&path, how, k as u64 + 1);
        let o = install.run();
        let file_name = path.file_name().unwrap().to_str().unwrap();
        let err = stderr(&o);
        assert!(
            o.status.code() == Some(2),
            "{rel} {how:?}: exit code {:?}, want 2; stderr:\n{err}",
            o.status.code()
        );
        // The file or, for a weights-folder file, the folder it sits in.
        let parent = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            err.contains(file_name) || (parent.ends_with(".hf") && err.contains(parent)),
            "{rel} {how:?}: the error does not name the file:\n{err}"
        );
        assert_bad_input(&o, &[]);
    }
}

#[test]
fn backbone_onnx() {
    check_file(FILES[0]);
}

#[test]
fn backbone_manifest() {
    check_file(FILES[1]);
}

#[test]
fn backbone_weights() {
    check_file(FILES[2]);
}

#[test]
fn backbone_config() {
    check_file(FILES[3]);
}

#[test]
fn head_onnx() {
    check_file(FILES[4]);
}

#[test]
fn head_manifests() {
    check_file(FILES[5]);
    check_file(FILES[6]);
}

#[test]
fn anomaly_bank() {
    check_file(FILES[7]);
    check_file(FILES[8]);
}

#[test]
fn calibration() {
    check_file(FILES[9]);
}

#[test]
fn parameter_file() {
    check_file(FILES[10]);
}
