//! Run-time probes for the TensorRT engine cache key: TensorRT's version (`libnvinfer`) and
//! the GPU's name (`libcuda`), both opened with `dlopen` so nothing of CUDA or TensorRT is
//! needed to build. ONNX Runtime's TensorRT provider loads the same libraries.

use crate::backend::tensorrt::TensorRtVersion;

const NVINFER: [&str; 4] = [
    "libnvinfer.so.10",
    "libnvinfer.so.8",
    "libnvinfer.so.9",
    "libnvinfer.so",
];
const CUDA: [&str; 2] = ["libcuda.so.1", "libcuda.so"];

fn open_first(names: &[&str]) -> Result<libloading::Library, String> {
    let mut errors = Vec::new();
    for name in names {
        // SAFETY: these are NVIDIA's own driver and TensorRT libraries, whose initialisers
        // only register themselves; ONNX Runtime's providers load them the same way.
        match unsafe { libloading::Library::new(*name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// TensorRT's version, from `getInferLibVersion()`.
pub fn tensorrt_version() -> Result<TensorRtVersion, String> {
    let lib = open_first(&NVINFER).map_err(|e| {
        format!("TensorRT's library was not found ({e}); install TensorRT (JetPack ships it) or put its lib directory on LD_LIBRARY_PATH")
    })?;
    // SAFETY: `getInferLibVersion` is TensorRT's stable C entry point `int32_t
    // getInferLibVersion()` (NvInferRuntime.h), with no arguments and no preconditions.
    let v = unsafe {
        let f: libloading::Symbol<unsafe extern "C" fn() -> i32> =
            lib.get(b"getInferLibVersion")
                .map_err(|e| format!("libnvinfer has no getInferLibVersion: {e}"))?;
        f()
    };
    Ok(TensorRtVersion::from_lib_version(v.max(0) as u32))
}

/// The name CUDA gives GPU `device` (`Orin`, `NVIDIA H200`).
pub fn gpu_name(device: u32) -> Result<String, String> {
    let lib = open_first(&CUDA).map_err(|e| {
        format!("the CUDA driver library was not found ({e}); on a Jetson it comes with JetPack, in a container with the NVIDIA runtime")
    })?;
    let mut name = [0u8; 256];
    // SAFETY: the driver API's `cuInit(0)`, `cuDeviceGet(&dev, ordinal)` and
    // `cuDeviceGetName(buf, len, dev)` (cuda.h, stable since CUDA 2); `name` outlives the call
    // and its length is passed, `dev` is written by `cuDeviceGet` before use.
    unsafe {
        let init: libloading::Symbol<unsafe extern "C" fn(u32) -> i32> =
            lib.get(b"cuInit").map_err(|e| e.to_string())?;
        let get: libloading::Symbol<unsafe extern "C" fn(*mut i32, i32) -> i32> =
            lib.get(b"cuDeviceGet").map_err(|e| e.to_string())?;
        let get_name: libloading::Symbol<unsafe extern "C" fn(*mut u8, i32, i32) -> i32> =
            lib.get(b"cuDeviceGetName").map_err(|e| e.to_string())?;
        let rc = init(0);
        if rc != 0 {
            return Err(format!(
                "cuInit failed with CUDA error {rc} (no GPU visible?)"
            ));
        }
        let mut dev = 0i32;
        let rc = get(&mut dev, i32::try_from(device).unwrap_or(i32::MAX));
        if rc != 0 {
            return Err(format!("no CUDA device {device} (CUDA error {rc})"));
        }
        let rc = get_name(name.as_mut_ptr(), name.len() as i32, dev);
        if rc != 0 {
            return Err(format!("cuDeviceGetName failed with CUDA error {rc}"));
        }
    }
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).trim().to_string())
}
