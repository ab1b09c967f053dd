//! Reading the per-frame arrays of ground truth and predictions: class-id PNGs, depth `.npy` or
//! 16-bit PNG, float maps, and small JSON files. Errors name the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::EvalError;
use crate::npz::read_npy_f32;

/// A row-major single-channel image.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane<T> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` values.
    pub data: Vec<T>,
}

fn format_err(path: &Path, reason: impl std::fmt::Display) -> EvalError {
    EvalError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn open_image(path: &Path) -> Result<image::DynamicImage, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    image::load_from_memory(&bytes)
        .map_err(|e| format_err(path, format!("not a readable image: {e}")))
}

/// An 8-bit grayscale PNG of class ids (or 0 / nonzero flags).
pub fn read_class_png(path: &Path) -> Result<Plane<u8>, EvalError> {
    match open_image(path)? {
        image::DynamicImage::ImageLuma8(img) => Ok(Plane {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.into_raw(),
        }),
        other => Err(format_err(
            path,
            format!(
                "is {:?}, not an 8-bit grayscale PNG of class ids; write one value per pixel (mode L)",
                other.color()
            ),
        )),
    }
}

/// Depth in metres: a float32 `.npy` of shape (H, W) (or (1, H, W)), or a 16-bit PNG in
/// millimetres (0 = no depth, read as 0 m).
pub fn read_depth(path: &Path) -> Result<Plane<f32>, EvalError> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return read_map(path);
    }
    match open_image(path)? {
        image::DynamicImage::ImageLuma16(img) => Ok(Plane {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img
                .into_raw()
                .into_iter()
                .map(|mm| mm as f32 / 1000.0)
                .collect(),
        }),
        other => Err(format_err(
            path,
            format!(
                "is {:?}, not a 16-bit grayscale PNG of millimetres; write depth as uint16 mm or \
                 float32 .npy metres",
                other.color()
            ),
        )),
    }
}

/// A float32 `.npy` map of shape (H, W) or (1, H, W).
pub fn read_map(path: &Path) -> Result<Plane<f32>, EvalError> {
    let (shape, data) = read_npy_f32(path).map_err(|e| format_err(path, e))?;
    let (height, width) = match shape.as_slice() {
        [h, w] | [1, h, w] => (*h, *w),
        _ => {
            return Err(format_err(
                path,
                format!("has shape {shape:?}; expected (height, width)"),
            ))
        }
    };
    if data.len() != width * height {
        return Err(format_err(path, "holds fewer values than its shape says"));
    }
    Ok(Plane {
        width,
        height,
        data,
    })
}

/// Parse a JSON file into `T`; `expected` says what the file should hold.
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    expected: &str,
) -> Result<T, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| format_err(path, format!("{e}; expected {expected}")))
}

/// Files of `dir` with one of `extensions`, by stem (a missing directory is empty).
pub fn list_by_stem(
    dir: &Path,
    extensions: &[&str],
) -> Result<BTreeMap<String, PathBuf>, EvalError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(EvalError::Read {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    for entry in entries {
        let path = entry
            .map_err(|e| EvalError::Read {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?
            .path();
        let ext_ok = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)));
        if let (true, Some(stem)) = (ext_ok, path.file_stem().and_then(|s| s.to_str())) {
            if let Some(previous) = out.insert(stem.to_string(), path.clone()) {
                return Err(EvalError::Format {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "{} and {} have the same stem; keep one",
                        previous.display(),
                        path.display()
                    ),
                });
            }
        }
    }
    Ok(out)
}
