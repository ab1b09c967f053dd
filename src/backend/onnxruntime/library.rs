//! Finding and loading `libonnxruntime.so` at run time (ort's `load-dynamic`): nothing of ONNX
//! Runtime is needed to build the node, and the library a Jetson already has is the one used.
//!
//! Search order: the `onnxruntime.library` setting (only that, when given), `ORT_DYLIB_PATH`,
//! then the usual install places: `/usr/local/lib`, `/usr/lib`, the multiarch directories,
//! `/opt/onnxruntime/lib`, and the `onnxruntime/capi/` directory of a Python `onnxruntime` /
//! `onnxruntime-gpu` wheel (in `$VIRTUAL_ENV`, `/usr/local/lib/python3*/dist-packages`,
//! `/usr/lib/python3/dist-packages`), then the dynamic loader's own search path. The error of a
//! failed search lists every place tried.
//!
//! ONNX Runtime allows one environment per process, so the first successful load is kept for
//! the process's lifetime.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::backend::BackendError;

const NAME: &str = "onnxruntime";

/// The loaded runtime: its environment, file and version.
pub struct Runtime {
    /// ONNX Runtime's process-wide environment.
    pub environment: Environment,
    /// The library file loaded.
    pub path: PathBuf,
    /// Its version (`1.31.1`).
    pub version: String,
    /// Execution providers this build of the library has (`CPUExecutionProvider`, ...).
    pub providers: Vec<String>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
/// Serialises first loads (two threads must not both build an environment).
static LOADING: Mutex<()> = Mutex::new(());

fn unavailable(reason: String) -> BackendError {
    BackendError::Unavailable {
        backend: NAME,
        reason,
    }
}

/// Entries of `dir` whose names start with `prefix`, sorted (none if `dir` cannot be read).
fn entries_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    out.sort();
    out
}

/// The places searched when no library is configured, in order: `ORT_DYLIB_PATH`, then files
/// that exist in the usual install places, then the bare name for the dynamic loader.
pub fn candidates(env_path: Option<&str>, virtual_env: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = env_path.filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    let dirs = [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt/onnxruntime/lib",
    ];
    for dir in dirs {
        out.push(Path::new(dir).join("libonnxruntime.so"));
    }
    let mut wheel_dirs: Vec<PathBuf> = Vec::new();
    let mut python_roots: Vec<PathBuf> = Vec::new();
    if let Some(venv) = virtual_env.filter(|v| !v.as_os_str().is_empty()) {
        python_roots.push(venv.join("lib"));
    }
    python_roots.push(PathBuf::from("/usr/local/lib"));
    for root in python_roots {
        for py in entries_named(&root, "python3") {
            for sub in ["site-packages", "dist-packages"] {
                wheel_dirs.push(py.join(sub).join("onnxruntime/capi"));
            }
        }
    }
    wheel_dirs.push(PathBuf::from(
        "/usr/lib/python3/dist-packages/onnxruntime/capi",
    ));
    for dir in wheel_dirs {
        // The wheel ships `libonnxruntime.so.<version>` only.
        out.extend(entries_named(&dir, "libonnxruntime.so"));
    }
    out.push(PathBuf::from("libonnxruntime.so"));
    out
}

/// The process's ONNX Runtime: loaded from `library` (or found by [`candidates`]) on the first
/// call, the same one after. Asking for another file once one is loaded is an error.
pub fn runtime(library: Option<&Path>) -> Result<&'static Runtime, BackendError> {
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        if let Some(want) = library {
            if want != rt.path {
                return Err(unavailable(format!(
                    "ONNX Runtime is already loaded from {} in this process; onnxruntime.library {} cannot be loaded beside it (one runtime per process)",
                    rt.path.display(),
                    want.display()
                )));
            }
        }
        return Ok(rt);
    }
    let tried: Vec<PathBuf> = match library {
        Some(p) => vec![p.to_path_buf()],
        None => candidates(
            std::env::var("ORT_DYLIB_PATH").ok().as_deref(),
            std::env::var_os("VIRTUAL_ENV")
                .map(PathBuf::from)
                .as_deref(),
        ),
    };
    let mut failures = Vec::new();
    for path in &tried {
        // An absolute path that does not exist is not worth a dlopen error.
        if path.is_absolute() && !path.exists() {
            failures.push(format!("{} (no such file)", path.display()));
            continue;
        }
        match ort::init_from(path) {
            Ok(builder) => {
                let environment = builder
                    .with_name("dinov3_perception")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| {
                        unavailable(format!(
                            "ONNX Runtime from {} loaded but its environment failed: {e}",
                            path.display()
                        ))
                    })?;
                let version = version_string(path)
                    .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
                let providers = available_providers();
                log::info!(
                    "ONNX Runtime {version} loaded from {} (providers: {})",
                    path.display(),
                    providers.join(", ")
                );
                let rt = Runtime {
                    environment,
                    path: path.clone(),
                    version,
                    providers,
                };
                return Ok(RUNTIME.get_or_init(|| rt));
            }
            Err(e) => failures.push(format!("{} ({e})", path.display())),
        }
    }
    let fix = if library.is_some() {
        "check onnxruntime.library (--onnxruntime-library): it must be a libonnxruntime.so of ONNX Runtime 1.17 or newer"
    } else {
        "install ONNX Runtime 1.17 or newer (on Jetson: the jetson-containers / Jetson AI Lab onnxruntime-gpu wheel; elsewhere `pip install onnxruntime`), then set onnxruntime.library or ORT_DYLIB_PATH to its libonnxruntime.so"
    };
    Err(unavailable(format!(
        "no loadable ONNX Runtime library; tried {}; {fix}",
        failures.join(", ")
    )))
}

/// The library's version (ONNX Runtime's `OrtGetApiBase()->GetVersionString()`).
fn version_string(path: &Path) -> Result<String, String> {
    // SAFETY: `path` was just loaded by `ort::init_from`, so this opens the same library
    // again (a reference count, no second copy); `OrtGetApiBase` has this signature in every
    // ONNX Runtime release, returns a pointer to a static struct, and `GetVersionString`
    // returns a static NUL-terminated string.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").map_err(|e| e.to_string())?;
        let base = get();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        let text = ((*base).GetVersionString)();
        if text.is_null() {
            return Err("GetVersionString returned null".into());
        }
        Ok(CStr::from_ptr(text).to_string_lossy().into_owned())
    }
}

/// Execution providers compiled into the loaded library.
fn available_providers() -> Vec<String> {
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: `GetAvailableProviders` fills `list` with `count` C strings owned by ONNX
    // Runtime; they are read before `ReleaseAvailableProviders` frees them, and a null list or
    // an error status leaves nothing to read or free.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut count);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Vec::new();
        }
        if list.is_null() {
            return Vec::new();
        }
        let names = (0..usize::try_from(count).unwrap_or(0))
            .map(|i| CStr::from_ptr(*list.add(i)).to_string_lossy().into_owned())
            .collect();
        let _ = (api.ReleaseAvailableProviders)(list, count);
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_variable_comes_first_and_the_bare_name_last() {
        let c = candidates(Some("/x/libonnxruntime.so.1.31.1"), None);
        assert_eq!(c[0], PathBuf::from("/x/libonnxruntime.so.1.31.1"));
        assert_eq!(c.last().unwrap(), &PathBuf::from("libonnxruntime.so"));
        assert!(c.contains(&PathBuf::from("/usr/local/lib/libonnxruntime.so")));
        assert_eq!(
            candidates(Some(""), None)[0],
            PathBuf::from("/usr/local/lib/libonnxruntime.so")
        );
    }

    #[test]
    fn a_virtual_environments_wheel_is_found() {
        let venv = tempfile::tempdir().unwrap();
        let capi = venv
            .path()
            .join("lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.1"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        let c = candidates(None, Some(venv.path()));
        let wheel = capi.join("libonnxruntime.so.1.31.1");
        let at = c
            .iter()
            .position(|p| p == &wheel)
            .expect("the wheel's library");
        // After the system directories, before the loader's bare name.
        assert!(at > c.iter().position(|p| p.starts_with("/opt")).unwrap());
        assert_eq!(c.last().unwrap(), &PathBuf::from("libonnxruntime.so"));
        assert!(!c.contains(&capi.join("libonnxruntime_providers_shared.so")));
    }
}
