//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `tests/fixtures/...` under the crate root.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Read a float32 .npy fixture.
pub fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    dinov3_perception::npz::read_npy_f32(path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}
