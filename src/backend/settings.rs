//! Where the backbone runs: the backend section of the configuration, resolved once (in
//! `config/validate.rs`) and handed to [`super::LoadedBackbone::load`].
//!
//! Every type here exists in every build, so a configuration that asks for the onnxruntime
//! backend parses everywhere and a build without the `onnxruntime` feature says how to rebuild.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which inference backend runs the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// tract, pure Rust on the CPU (the reference).
    Tract,
    /// ONNX Runtime loaded at run time (feature `onnxruntime`), on one [`Provider`].
    OnnxRuntime,
    /// The native DINOv3 engine, pure Rust, reading the checkpoint folder.
    Native,
}

impl BackendKind {
    /// Every backend, by configuration name.
    pub const ALL: [BackendKind; 3] = [
        BackendKind::Tract,
        BackendKind::OnnxRuntime,
        BackendKind::Native,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::OnnxRuntime => "onnxruntime",
            BackendKind::Native => "native",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tract" => Ok(BackendKind::Tract),
            "onnxruntime" => Ok(BackendKind::OnnxRuntime),
            "native" => Ok(BackendKind::Native),
            "tensorrt" => Err(
                "\"tensorrt\" is an execution provider of the onnxruntime backend: give backend onnxruntime with onnxruntime.provider tensorrt (flags: --backend onnxruntime --provider tensorrt)".into(),
            ),
            other => Err(format!("{other:?}: give native, tract or onnxruntime")),
        }
    }
}

/// The ONNX Runtime execution provider the whole graph runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// ONNX Runtime's own CPU kernels (MLAS).
    Cpu,
    /// CUDA (cuDNN / cuBLAS).
    Cuda,
    /// TensorRT, whole graph, with engine and timing caches.
    TensorRt,
}

impl Provider {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
        }
    }

    /// ONNX Runtime's name of the provider (as `GetAvailableProviders` lists it).
    pub fn onnxruntime_name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::TensorRt => "TensorrtExecutionProvider",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda),
            "tensorrt" => Ok(Provider::TensorRt),
            other => Err(format!("{other:?}: give cpu, cuda or tensorrt")),
        }
    }
}

/// Arithmetic a TensorRT engine is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRtPrecision {
    /// FP16 kernels where TensorRT chooses them (the Jetson default).
    Fp16,
    /// FP32 throughout.
    Fp32,
}

impl TensorRtPrecision {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            TensorRtPrecision::Fp16 => "fp16",
            TensorRtPrecision::Fp32 => "fp32",
        }
    }
}

impl FromStr for TensorRtPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp16" => Ok(TensorRtPrecision::Fp16),
            "fp32" => Ok(TensorRtPrecision::Fp32),
            other => Err(format!("{other:?}: give fp16 or fp32")),
        }
    }
}

/// What the node does when the backend it was asked for cannot be used: its library or
/// provider is missing, the engine does not build, or the start-up parity gate fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendFailure {
    /// Log both figures (or the error) and run on tract.
    Fallback,
    /// Stop with exit code 2.
    Exit,
}

impl OnBackendFailure {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnBackendFailure::Fallback => "fallback",
            OnBackendFailure::Exit => "exit",
        }
    }
}

impl FromStr for OnBackendFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fallback" => Ok(OnBackendFailure::Fallback),
            "exit" => Ok(OnBackendFailure::Exit),
            other => Err(format!("{other:?}: give fallback or exit")),
        }
    }
}

/// Minimum cosine similarity between an accelerated backend's outputs and tract's, per
/// arithmetic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParityThresholds {
    /// FP32 engines (onnxruntime CPU and CUDA, TensorRT fp32).
    pub fp32: f64,
    /// TensorRT FP16 engines.
    pub fp16: f64,
    /// Dynamically quantised INT8 models (against the float model on tract).
    pub int8: f64,
}

/// The onnxruntime backend's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxRuntimeSettings {
    /// `libonnxruntime.so` to load; `None`: `ORT_DYLIB_PATH`, then the usual install paths.
    pub library: Option<PathBuf>,
    /// Execution provider of the whole graph.
    pub provider: Provider,
    /// GPU index for cuda / tensorrt.
    pub device_id: u32,
    /// Run the head graphs on the same provider too (else on tract, on the CPU).
    pub heads: bool,
}

/// The TensorRT provider's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRtSettings {
    /// Engine arithmetic.
    pub precision: TensorRtPrecision,
    /// Directory of the engine and timing caches (one subdirectory per cache key).
    pub cache_dir: PathBuf,
}

/// Everything that decides where and how the backbone runs.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSettings {
    /// The backend asked for.
    pub kind: BackendKind,
    /// CPU threads (tract's matrix products, onnxruntime's intra-op pool); 0 = all cores.
    pub threads: usize,
    /// The onnxruntime backend.
    pub onnxruntime: OnnxRuntimeSettings,
    /// Its TensorRT provider.
    pub tensorrt: TensorRtSettings,
    /// The start-up parity gate.
    pub parity: ParityThresholds,
    /// What an unusable accelerated backend leads to.
    pub on_failure: OnBackendFailure,
}

/// Where engine caches go when `tensorrt.cache_dir` is empty: `$XDG_CACHE_HOME`, else
/// `~/.cache`, then `dinov3_perception/tensorrt`.
pub fn default_engine_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("dinov3_perception").join("tensorrt")
}

impl BackendSettings {
    /// tract with `threads`, every other setting at its default.
    pub fn tract(threads: usize) -> Self {
        Self {
            kind: BackendKind::Tract,
            threads,
            onnxruntime: OnnxRuntimeSettings {
                library: None,
                provider: Provider::Cpu,
                device_id: 0,
                heads: false,
            },
            tensorrt: TensorRtSettings {
                precision: TensorRtPrecision::Fp16,
                cache_dir: default_engine_cache_dir(),
            },
            parity: DEFAULT_PARITY,
            on_failure: OnBackendFailure::Fallback,
        }
    }
}

/// Default gate thresholds: FP32 0.9999, FP16 0.999, INT8 0.999.
pub const DEFAULT_PARITY: ParityThresholds = ParityThresholds {
    fp32: 0.9999,
    fp16: 0.999,
    int8: 0.999,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in BackendKind::ALL {
            assert_eq!(k.as_str().parse::<BackendKind>().unwrap(), k);
        }
        for p in [Provider::Cpu, Provider::Cuda, Provider::TensorRt] {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        }
        for p in [TensorRtPrecision::Fp16, TensorRtPrecision::Fp32] {
            assert_eq!(p.as_str().parse::<TensorRtPrecision>().unwrap(), p);
        }
        for f in [OnBackendFailure::Fallback, OnBackendFailure::Exit] {
            assert_eq!(f.as_str().parse::<OnBackendFailure>().unwrap(), f);
        }
    }

    #[test]
    fn tensorrt_as_a_backend_name_points_at_the_provider() {
        let e = "tensorrt".parse::<BackendKind>().unwrap_err();
        assert!(e.contains("onnxruntime.provider tensorrt"), "{e}");
        let e = "trt".parse::<Provider>().unwrap_err();
        assert!(e.contains("cpu, cuda or tensorrt"), "{e}");
    }
}
