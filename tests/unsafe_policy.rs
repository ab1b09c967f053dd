//! The `unsafe` policy, checked on every test run.
//!
//! The compiler and clippy do the enforcing: `Cargo.toml` denies `unsafe_code` everywhere and
//! `clippy::undocumented_unsafe_blocks` makes every `unsafe` block and `unsafe impl` carry a
//! `// SAFETY:` comment (`cargo clippy -- -D warnings` is in the test command). A module that
//! needs `unsafe` opts in with `#[allow(unsafe_code, reason = "...")]`. This test pins both: the
//! lints must stay in `Cargo.toml`, and the opt-ins must be exactly the list below, so a new one is
//! a reviewed change to this file.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::fs;
use std::path::{Path, PathBuf};

/// Where `unsafe` is allowed, and why (the same reason the attribute gives).
const ALLOWED: &[(&str, &str)] = &[
    (
        "src/backend/native/mod.rs",
        "the native engine's `cpu` module: SIMD",
    ),
    (
        "src/source/v4l2/mod.rs",
        "the V4L2 `device` module: ioctl, mmap, poll",
    ),
    ("src/backend/onnxruntime/mod.rs", "`gpu` and `library`: FFI"),
    (
        "src/source/ros_image.rs",
        "a counting allocator in its tests",
    ),
    ("tests/native_alloc.rs", "a counting global allocator"),
    ("examples/record_bench.rs", "getrusage and sync"),
    ("examples/gemm_bench.rs", "the gemm crate's raw-pointer API"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `allow(unsafe_code ...)` / `expect(unsafe_code ...)` attribute, per file (relative
/// path), as the attribute's text without whitespace (rustfmt may spread it over lines);
/// comments excluded.
fn opt_ins() -> Vec<(String, String)> {
    let root = root();
    let mut files = Vec::new();
    for dir in ["src", "tests", "examples", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut found = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "tests/unsafe_policy.rs" {
            continue;
        }
        let code: String = text
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .flat_map(|code| code.chars().filter(|c| !c.is_whitespace()))
            .collect();
        for key in ["allow(unsafe_code", "expect(unsafe_code"] {
            let mut rest = code.as_str();
            while let Some(at) = rest.find(key) {
                let attr = &rest[at..];
                let end = attr.find(")]").map_or(attr.len(), |e| e + 2);
                found.push((rel.clone(), attr[..end].to_string()));
                rest = &attr[key.len()..];
            }
        }
    }
    found.sort();
    found
}

#[test]
fn cargo_toml_denies_unsafe_and_undocumented_unsafe_blocks() {
    let toml = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let section = |name: &str| -> String {
        let start = toml
            .find(&format!("[{name}]"))
            .unwrap_or_else(|| panic!("no [{name}] in Cargo.toml"));
        let rest = &toml[start + name.len() + 2..];
        let end = rest.find("\n[").unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let rust = section("lints.rust");
    assert!(
        rust.contains("unsafe_code = \"deny\""),
        "[lints.rust] must deny unsafe_code:\n{rust}"
    );
    assert!(
        rust.contains("unsafe_op_in_unsafe_fn = \"deny\""),
        "[lints.rust] must deny unsafe_op_in_unsafe_fn:\n{rust}"
    );
    let clippy = section("lints.clippy");
    assert!(
        clippy.contains("undocumented_unsafe_blocks = \"deny\""),
        "[lints.clippy] must deny undocumented_unsafe_blocks:\n{clippy}"
    );
}

#[test]
fn unsafe_is_allowed_only_where_listed() {
    let found = opt_ins();
    let mut files: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
    files.dedup();
    let mut allowed: Vec<&str> = ALLOWED.iter().map(|(f, _)| *f).collect();
    allowed.sort();
    let unlisted: Vec<_> = found
        .iter()
        .filter(|(f, _)| !allowed.contains(&f.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "`allow(unsafe_code)` outside the modules that need it (move the code into one of them, or \
         add the file to ALLOWED in tests/unsafe_policy.rs with a reason): {unlisted:?}"
    );
    let stale: Vec<_> = allowed.iter().filter(|f| !files.contains(f)).collect();
    assert!(
        stale.is_empty(),
        "listed in ALLOWED but no longer opting in (remove them): {stale:?}"
    );
}

#[test]
fn every_opt_in_gives_a_reason() {
    for (file, attr) in opt_ins() {
        assert!(
            attr.contains("reason=\""),
            "{file}: {attr}: allow(unsafe_code) without a reason"
        );
    }
}
