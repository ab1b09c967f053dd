//! Helpers shared by the integration tests.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Run the binary with `args` (log level info).
pub fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dinov3_perception"))
        .args(args)
        .env("RUST_LOG", "info,rustdds=error")
        // The node joins the ROS graph: keep test traffic on loopback, in a domain of its own.
        .env("ROS_LOCALHOST_ONLY", "1")
        .env("ROS_DOMAIN_ID", test_domain().to_string())
        .output()
        .expect("binary runs")
}

/// A DDS domain for this test process (100..199), so parallel test binaries do not meet.
pub fn test_domain() -> u16 {
    100 + (std::process::id() % 100) as u16
}

/// The process's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, no panic, and every needle in stderr.
pub fn assert_bad_input(o: &Output, must_mention: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    for m in must_mention {
        assert!(err.contains(m), "stderr should mention {m:?}:\n{err}");
    }
}
