//! Where the bundled demo model, demo heads and calibration files are installed.

use std::path::{Path, PathBuf};

/// The model `run` uses when none is given: a tiny architecture-exact DINOv3 (random weights,
/// 240x320 input) shipped in `models/demo/` with heads trained on the synthetic scene.
pub fn bundled_model() -> PathBuf {
    bundled_heads().join("dinov3_tiny_240x320.onnx")
}

/// The demo heads trained for [`bundled_model`] on the synthetic scene.
pub fn bundled_heads() -> PathBuf {
    share_dir().join("models/demo")
}

/// `$DINOV3_PERCEPTION_SHARE_DIR`, else the colcon install layout next to the executable
/// (`<prefix>/lib/dinov3_perception/<exe>` -> `<prefix>/share/dinov3_perception`), else the
/// install directory CMake passed at build time, else the source tree.
pub fn share_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DINOV3_PERCEPTION_SHARE_DIR") {
        return PathBuf::from(dir);
    }
    let installed = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe
            .parent()?
            .parent()?
            .parent()?
            .join("share/dinov3_perception");
        dir.join("models/demo").is_dir().then_some(dir)
    });
    if let Some(dir) = installed {
        return dir;
    }
    if let Some(dir) = option_env!("DINOV3_PERCEPTION_SHARE_DIR") {
        if Path::new(dir).join("models/demo").is_dir() {
            return PathBuf::from(dir);
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
