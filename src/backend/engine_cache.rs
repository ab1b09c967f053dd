//! TensorRT engine and timing caches: one directory per model, input size and precision under
//! `tensorrt.cache_dir`, with a `key.json` naming everything the engine depends on.
//!
//! An engine is only valid for the model bytes, ONNX Runtime, TensorRT, GPU, precision and
//! input shape it was built with. The directory name says which model, size and precision it is
//! for; `key.json` holds the full key. A cache whose key differs (TensorRT upgraded with
//! JetPack, the volume moved to another GPU, the model file replaced) is refused with the fix
//! (delete it to rebuild), so a start never silently uses an engine of another build, and never
//! silently spends minutes rebuilding either.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::InputSize;

/// File in each cache directory holding its [`EngineCacheKey`].
pub const KEY_FILE: &str = "key.json";

/// Everything an engine depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineCacheKey {
    /// Hex sha256 of the model's ONNX bytes.
    pub model_sha256: String,
    /// ONNX Runtime version (`1.25.1`).
    pub onnxruntime: String,
    /// TensorRT version (`10.3.0`).
    pub tensorrt: String,
    /// GPU name as CUDA reports it (`Orin`, `NVIDIA H200`).
    pub gpu: String,
    /// `fp16` or `fp32`.
    pub precision: String,
    /// Input shapes, `1x3xHxW` for the backbone (`name:shape,...` for graphs of several inputs).
    pub input_shape: String,
}

impl EngineCacheKey {
    /// The key of a model of `model_sha256` with inputs of `input_shape`.
    pub fn new(
        model_sha256: &str,
        onnxruntime: &str,
        tensorrt: &str,
        gpu: &str,
        precision: &str,
        input_shape: &str,
    ) -> Self {
        Self {
            model_sha256: model_sha256.to_string(),
            onnxruntime: onnxruntime.to_string(),
            tensorrt: tensorrt.to_string(),
            gpu: gpu.to_string(),
            precision: precision.to_string(),
            input_shape: input_shape.to_string(),
        }
    }

    /// `(field, this key's value, other's value)` for every field that differs.
    pub fn differences(&self, other: &EngineCacheKey) -> Vec<(&'static str, String, String)> {
        let fields = [
            ("model sha256", &self.model_sha256, &other.model_sha256),
            ("ONNX Runtime", &self.onnxruntime, &other.onnxruntime),
            ("TensorRT", &self.tensorrt, &other.tensorrt),
            ("GPU", &self.gpu, &other.gpu),
            ("precision", &self.precision, &other.precision),
            ("input shape", &self.input_shape, &other.input_shape),
        ];
        fields
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .map(|(n, a, b)| (n, a.clone(), b.clone()))
            .collect()
    }
}

/// What `key.json` holds: the key, and whether the engine build it announces finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key: EngineCacheKey,
    complete: bool,
}

/// A cache directory that may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCache {
    /// The directory (engine and timing caches go here).
    pub dir: PathBuf,
    /// Whether an engine built with this key is already there (else the first build runs,
    /// which takes minutes on a Jetson).
    pub built: bool,
}

/// A cache that must not be used, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TensorRT engine cache {dir} {reason}; delete it to rebuild the engine (rm -r {dir}: the next start builds a new one, which takes minutes on a Jetson), or set tensorrt.cache_dir to another directory")]
pub struct StaleCache {
    /// The directory.
    pub dir: String,
    /// What is wrong with it.
    pub reason: String,
}

/// `1x3xHxW`, the backbone's input shape in a key.
pub fn image_shape(size: InputSize) -> String {
    format!("1x3x{}x{}", size.height, size.width)
}

/// The directory of `key` under `root`: `<label>_<precision>`, the label naming the graph and
/// its size (`vits16_224x448`, `heads/depth_14x28`).
pub fn cache_dir_for(root: &Path, label: &str, key: &EngineCacheKey) -> PathBuf {
    root.join(format!("{label}_{}", key.precision))
}

/// Check the cache directory `dir` against `key`: a missing or empty directory is a first
/// build; one whose `key.json` matches is used; anything else is refused.
pub fn open(dir: &Path, key: &EngineCacheKey) -> Result<EngineCache, StaleCache> {
    let stale = |reason: String| StaleCache {
        dir: dir.display().to_string(),
        reason,
    };
    let key_path = dir.join(KEY_FILE);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(Result::ok).count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(stale(format!("cannot be read ({e})"))),
    };
    if !key_path.exists() {
        if entries == 0 {
            return Ok(EngineCache {
                dir: dir.to_path_buf(),
                built: false,
            });
        }
        return Err(stale(format!(
            "holds {entries} files but no {KEY_FILE}, so what they were built for is unknown"
        )));
    }
    let text = fs::read_to_string(&key_path)
        .map_err(|e| stale(format!("has an unreadable {KEY_FILE} ({e})")))?;
    let file: KeyFile = serde_json::from_str(&text)
        .map_err(|e| stale(format!("has a {KEY_FILE} that does not parse ({e})")))?;
    let diffs = file.key.differences(key);
    if !diffs.is_empty() {
        let what: Vec<String> = diffs
            .iter()
            .map(|(n, cached, now)| format!("{n} {cached} (this start: {now})"))
            .collect();
        return Err(stale(format!("was built for {}", what.join(", "))));
    }
    Ok(EngineCache {
        dir: dir.to_path_buf(),
        built: file.complete,
    })
}

fn write_key(dir: &Path, key: &EngineCacheKey, complete: bool) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let file = KeyFile {
        key: key.clone(),
        complete,
    };
    let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(tmp, dir.join(KEY_FILE))
}

/// Claim `dir` for `key` before the engine build starts (`complete: false`, so an interrupted
/// build is built again on the next start rather than refused).
pub fn claim(dir: &Path, key: &EngineCacheKey) -> std::io::Result<()> {
    write_key(dir, key, false)
}

/// Mark the engine of `key` in `dir` as built.
pub fn mark_built(dir: &Path, key: &EngineCacheKey) -> std::io::Result<()> {
    write_key(dir, key, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EngineCacheKey {
        EngineCacheKey::new(
            "ab12",
            "1.25.1",
            "10.3.0",
            "Orin",
            "fp16",
            &image_shape(InputSize {
                height: 224,
                width: 448,
            }),
        )
    }

    #[test]
    fn a_new_directory_is_a_first_build_then_used() {
        let root = tempfile::tempdir().unwrap();
        let k = key();
        let dir = cache_dir_for(root.path(), "vits16_224x448", &k);
        assert!(dir.ends_with("vits16_224x448_fp16"));
        assert_eq!(k.input_shape, "1x3x224x448");
        assert!(!open(&dir, &k).unwrap().built);
        claim(&dir, &k).unwrap();
        assert!(
            !open(&dir, &k).unwrap().built,
            "an unfinished build is built again"
        );
        mark_built(&dir, &k).unwrap();
        assert!(open(&dir, &k).unwrap().built);
    }

    #[test]
    fn a_cache_of_another_build_is_refused_naming_what_changed() {
        let root = tempfile::tempdir().unwrap();
        let k = key();
        let dir = cache_dir_for(root.path(), "vits16_224x448", &k);
        mark_built(&dir, &k).unwrap();
        let mut upgraded = k.clone();
        upgraded.tensorrt = "10.4.0".into();
        upgraded.gpu = "NVIDIA H200".into();
        let e = open(&dir, &upgraded).unwrap_err().to_string();
        assert!(
            e.contains("TensorRT 10.3.0 (this start: 10.4.0)")
                && e.contains("GPU Orin (this start: NVIDIA H200)")
                && e.contains("rm -r"),
            "{e}"
        );
    }

    #[test]
    fn files_without_a_key_or_a_broken_key_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("x");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("engine.bin"), b"?").unwrap();
        let e = open(&dir, &key()).unwrap_err().to_string();
        assert!(e.contains("no key.json"), "{e}");
        fs::write(dir.join(KEY_FILE), b"{").unwrap();
        let e = open(&dir, &key()).unwrap_err().to_string();
        assert!(e.contains("does not parse"), "{e}");
    }
}
