//! Reading a calibration file: the YAML that ROS `camera_calibration` (`cameracalibrator`) and
//! `camera_info_manager` write, parsed into [`CalibrationFile`] (unknown fields rejected), then
//! validated field by field into a [`CameraCalibration`].

use std::path::Path;

use nalgebra::Matrix3;
use serde::{Deserialize, Serialize};

use super::camera::{CalibrationError, CameraCalibration, MAX_IMAGE_SIDE};
use super::lens::DistortionModel;

/// Tolerance on the fixed entries (0 and 1) of `K` and `P`: files carry them as written constants.
pub(super) const FIXED_ENTRY_TOLERANCE: f64 = 1e-6;

/// Tolerance on `R Rᵀ = I` and `det R = 1`: `camera_calibration` writes R with 6-9 decimals.
pub(super) const ROTATION_TOLERANCE: f64 = 1e-3;

/// Row-major layout of the camera matrix, for messages.
pub(super) const K_LAYOUT: &str = "[fx, 0, cx, 0, fy, cy, 0, 0, 1]";
/// Row-major layout of the projection matrix, for messages.
pub(super) const P_LAYOUT: &str = "[fx', 0, cx', Tx, 0, fy', cy', Ty, 0, 0, 1, 0]";

/// A matrix as `camera_calibration` writes it: shape and row-major data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YamlMatrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values, row by row.
    pub data: Vec<f64>,
}

/// A calibration file as written, before validation. Every field is required; unknown fields are
/// rejected (a misspelt field must not silently fall back to something).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    /// Width of the calibrated images, pixels.
    pub image_width: u32,
    /// Height of the calibrated images, pixels.
    pub image_height: u32,
    /// Name of the camera (camera_info_manager checks it against the camera's name).
    pub camera_name: String,
    /// `K`, 3x3.
    pub camera_matrix: YamlMatrix,
    /// `plumb_bob` or `equidistant`.
    pub distortion_model: String,
    /// `D`, 1xN.
    pub distortion_coefficients: YamlMatrix,
    /// `R`, 3x3.
    pub rectification_matrix: YamlMatrix,
    /// `P`, 3x4.
    pub projection_matrix: YamlMatrix,
}

impl CalibrationFile {
    /// Check every field and resolve the calibration; the error names `origin` and the first bad
    /// field.
    pub fn validate(self, origin: &Path) -> Result<CameraCalibration, CalibrationError> {
        let path = || origin.to_path_buf();
        let (width, height) = (self.image_width, self.image_height);
        if !(1..=MAX_IMAGE_SIDE).contains(&width) || !(1..=MAX_IMAGE_SIDE).contains(&height) {
            return Err(CalibrationError::ImageSize {
                path: path(),
                width,
                height,
            });
        }

        let k: [f64; 9] = fixed_matrix(origin, "camera_matrix", &self.camera_matrix, 3, 3)?;
        let r: [f64; 9] = fixed_matrix(
            origin,
            "rectification_matrix",
            &self.rectification_matrix,
            3,
            3,
        )?;
        let p: [f64; 12] =
            fixed_matrix(origin, "projection_matrix", &self.projection_matrix, 3, 4)?;
        let d = coefficient_vector(origin, &self.distortion_coefficients)?;

        let model = DistortionModel::from_ros_name(&self.distortion_model).ok_or_else(|| {
            CalibrationError::UnknownDistortionModel {
                path: path(),
                model: self.distortion_model.clone(),
            }
        })?;
        let count_ok = match model {
            DistortionModel::PlumbBob => d.is_empty() || d.len() == 5,
            DistortionModel::Equidistant => d.len() == 4,
        };
        if !count_ok {
            return Err(CalibrationError::CoefficientCount {
                path: path(),
                model,
                count: d.len(),
                expected: match model {
                    DistortionModel::PlumbBob => "5 (k1, k2, p1, p2, k3) or no",
                    DistortionModel::Equidistant => "exactly 4 (k1, k2, k3, k4)",
                },
            });
        }

        for (field, layout, fx, fy, names) in [
            ("camera_matrix", K_LAYOUT, k[0], k[4], ["fx", "fy"]),
            ("projection_matrix", P_LAYOUT, p[0], p[5], ["fx'", "fy'"]),
        ] {
            for (name, value) in names.into_iter().zip([fx, fy]) {
                if !value.is_finite() || value <= 0.0 {
                    return Err(CalibrationError::FocalLength {
                        path: path(),
                        field,
                        name,
                        value,
                        layout,
                    });
                }
            }
        }

        let coefficient_names = model.coefficient_names();
        let non_finite = [
            first_non_finite("camera_matrix", &k, |i| entry_name(&K_NAMES, 3, i)),
            first_non_finite("distortion_coefficients", &d, |i| {
                coefficient_names
                    .get(i)
                    .map_or(format!("D[{i}]"), |n| n.to_string())
            }),
            first_non_finite("rectification_matrix", &r, |i| {
                format!("R[{}][{}]", i / 3, i % 3)
            }),
            first_non_finite("projection_matrix", &p, |i| entry_name(&P_NAMES, 4, i)),
        ];
        if let Some((field, index, name, value)) = non_finite.into_iter().flatten().next() {
            return Err(CalibrationError::NonFinite {
                path: path(),
                field,
                index,
                name,
                value,
            });
        }

        check_fixed_entries(
            origin,
            "camera_matrix",
            K_LAYOUT,
            &k,
            &[(3, 0.0), (6, 0.0), (7, 0.0), (8, 1.0)],
        )?;
        check_fixed_entries(
            origin,
            "projection_matrix",
            P_LAYOUT,
            &p,
            &[(4, 0.0), (8, 0.0), (9, 0.0), (10, 1.0), (11, 0.0)],
        )?;
        if k[1] != 0.0 {
            log::warn!(
                "{}: camera_matrix skew {} is ignored (as ROS image_geometry does)",
                origin.display(),
                k[1]
            );
        }

        // Pixel centres are at integers, so the image spans [-0.5, size - 0.5].
        let inside = |c: f64, size: u32| (-0.5..=size as f64 - 0.5).contains(&c);
        for (field, cx, cy) in [
            ("camera_matrix", k[2], k[5]),
            ("projection_matrix", p[2], p[6]),
        ] {
            if !inside(cx, width) || !inside(cy, height) {
                return Err(CalibrationError::PrincipalPoint {
                    path: path(),
                    field,
                    cx,
                    cy,
                    width,
                    height,
                });
            }
        }

        check_rotation(origin, &r)?;

        Ok(CameraCalibration {
            origin: path(),
            image_width: width,
            image_height: height,
            camera_name: self.camera_name,
            k,
            distortion_model: model,
            d,
            r,
            p,
        })
    }
}

/// What each entry of `K` is, for messages.
const K_NAMES: [&str; 9] = [
    "fx", "skew", "cx", "K[1][0]", "fy", "cy", "K[2][0]", "K[2][1]", "K[2][2]",
];
/// What each entry of `P` is, for messages.
const P_NAMES: [&str; 12] = [
    "fx'", "skew", "cx'", "Tx", "P[1][0]", "fy'", "cy'", "Ty", "P[2][0]", "P[2][1]", "P[2][2]",
    "P[2][3]",
];

/// Name of entry `i` of a matrix with `cols` columns.
fn entry_name(names: &[&str], cols: usize, i: usize) -> String {
    names
        .get(i)
        .map_or(format!("[{}][{}]", i / cols, i % cols), |n| n.to_string())
}

/// The first NaN or infinite value of a field: (field, index, what the entry is, value).
fn first_non_finite(
    field: &'static str,
    values: &[f64],
    name: impl Fn(usize) -> String,
) -> Option<(&'static str, usize, String, f64)> {
    let (index, &value) = values.iter().enumerate().find(|(_, v)| !v.is_finite())?;
    Some((field, index, name(index), value))
}

/// A matrix field that must be exactly `rows` x `cols`.
fn fixed_matrix<const N: usize>(
    origin: &Path,
    field: &'static str,
    m: &YamlMatrix,
    rows: usize,
    cols: usize,
) -> Result<[f64; N], CalibrationError> {
    let shape_ok = m.rows == rows && m.cols == cols;
    match <[f64; N]>::try_from(m.data.as_slice()) {
        Ok(values) if shape_ok => Ok(values),
        _ => Err(CalibrationError::MatrixSize {
            path: origin.to_path_buf(),
            field,
            rows: m.rows,
            cols: m.cols,
            values: m.data.len(),
            required: format!("a {rows}x{cols} matrix ({N} values)"),
        }),
    }
}

/// The distortion coefficients: a row (or column) vector whose data length matches its shape.
fn coefficient_vector(origin: &Path, m: &YamlMatrix) -> Result<Vec<f64>, CalibrationError> {
    let is_vector = m.rows == 1 || m.cols == 1 || m.data.is_empty();
    if is_vector && m.rows.checked_mul(m.cols) == Some(m.data.len()) {
        Ok(m.data.clone())
    } else {
        Err(CalibrationError::MatrixSize {
            path: origin.to_path_buf(),
            field: "distortion_coefficients",
            rows: m.rows,
            cols: m.cols,
            values: m.data.len(),
            required: "a 1xN row (N = 5 for plumb_bob, 4 for equidistant, N values)".to_string(),
        })
    }
}

/// The constant entries of `K` or `P` (`(index, value)`).
fn check_fixed_entries(
    origin: &Path,
    field: &'static str,
    layout: &'static str,
    m: &[f64],
    fixed: &[(usize, f64)],
) -> Result<(), CalibrationError> {
    let cols = if m.len() == 12 { 4 } else { 3 };
    for &(i, want) in fixed {
        let have = m.get(i).copied().unwrap_or(f64::NAN);
        if (have - want).abs() > FIXED_ENTRY_TOLERANCE || have.is_nan() {
            return Err(CalibrationError::MatrixForm {
                path: origin.to_path_buf(),
                field,
                reason: format!(
                    "data[{i}] (row {}, column {}) is {have} where it must be {want}",
                    i / cols,
                    i % cols
                ),
                layout,
            });
        }
    }
    Ok(())
}

/// `R` must be orthonormal with determinant +1.
fn check_rotation(origin: &Path, r: &[f64; 9]) -> Result<(), CalibrationError> {
    let m = Matrix3::from_row_slice(r);
    let off = (m * m.transpose() - Matrix3::identity()).abs().max();
    let det = m.determinant();
    if off > ROTATION_TOLERANCE || (det - 1.0).abs() > ROTATION_TOLERANCE {
        return Err(CalibrationError::NotARotation {
            path: origin.to_path_buf(),
            reason: format!(
                "R Rᵀ differs from the identity by up to {off:.3e} and det R = {det:.6}; both must \
                 be within {ROTATION_TOLERANCE:e} of a rotation"
            ),
        });
    }
    Ok(())
}

impl CameraCalibration {
    /// Read and validate a calibration file.
    pub fn load(path: &Path) -> Result<Self, CalibrationError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CalibrationError::Unreadable {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_yaml_str(&text, path)
    }

    /// Parse and validate calibration YAML; `origin` names it in errors.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self, CalibrationError> {
        let file: CalibrationFile = serde_yaml_ng::from_str(text).map_err(|e| {
            let mut reason = e.to_string();
            if reason.contains("unknown field `camera_model`") {
                // Some hand-written files use this name; ROS's own parser ignores it and falls
                // back to plumb_bob, which would hide a fisheye model.
                reason.push_str(" (rename camera_model to distortion_model)");
            }
            CalibrationError::Yaml {
                path: origin.to_path_buf(),
                reason,
            }
        })?;
        file.validate(origin)
    }
}
