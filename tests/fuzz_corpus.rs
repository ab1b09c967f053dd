//! Every committed fuzz input replayed through its target on every `cargo test` (stable): the
//! seed corpora (`fuzz/corpus/<target>/`) and the inputs that once crashed a target
//! (`fuzz/regressions/<target>/`). The targets are the functions of `dinov3_perception::fuzz`
//! that `fuzz/fuzz_targets/*.rs` hand to libFuzzer (`scripts/fuzz.sh`), so a panic here is a
//! crash the fuzzer would report. A target with no seeds, or a `[[bin]]` in `fuzz/Cargo.toml`
//! missing from the list below, fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use dinov3_perception::fuzz;

/// A fuzz target: arbitrary bytes in, nothing out (a panic is the failure).
type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("frame_conversion", fuzz::frame_conversion),
    ("camera_info_yaml", fuzz::camera_info_yaml),
    ("params_yaml", fuzz::params_yaml),
    ("ros_args", fuzz::ros_args),
    ("image_cdr", fuzz::image_cdr),
    ("compressed_image_cdr", fuzz::compressed_image_cdr),
    ("parameter_request", fuzz::parameter_request),
    ("manifests", fuzz::manifests),
    ("mcap_replay", fuzz::mcap_replay),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_is_replayed() {
    let toml = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut bins: Vec<String> = toml
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            let line = section
                .lines()
                .find(|l| l.trim_start().starts_with("name"))?;
            Some(line.split('"').nth(1)?.to_string())
        })
        .collect();
    bins.sort();
    let mut ours: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    ours.sort();
    assert_eq!(
        bins, ours,
        "fuzz/Cargo.toml's targets and this test's list differ"
    );
}

#[test]
fn corpora_and_regressions_replay_without_a_panic() {
    // Keep the expected panics' messages out of the test output; report them below instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(
            !seeds.is_empty(),
            "fuzz/corpus/{name}/ holds no seed: run fuzz/make_corpus.py"
        );
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for file in seeds.iter().chain(&regressions) {
            let data = fs::read(file).unwrap();
            replayed += 1;
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name}: {}: {why}", file.display()));
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(
        failures.is_empty(),
        "fuzz inputs that panic:\n{}",
        failures.join("\n")
    );
    assert!(replayed >= TARGETS.len());
}
