//! Camera calibration (camera_info YAML), undistortion maps and depth back-projection.
//!
//! # Files
//!
//! A calibration is the YAML file that ROS `camera_calibration` (`cameracalibrator`) and
//! `camera_info_manager` write (see `calibration/README.md`). It is read in two stages: the serde
//! struct [`CalibrationFile`] (unknown fields rejected), then [`CalibrationFile::validate`] into a
//! [`CameraCalibration`], with an error that names the file, the field and the fix.
//!
//! # Conventions
//!
//! Those of OpenCV and ROS `sensor_msgs/CameraInfo`: pixel `(u, v)` is (column, row) and integer
//! coordinates are pixel centres; the camera optical frame has x right, y down, z forward; depth
//! is the z coordinate (metres along the optical axis, not along the ray). `K` maps the raw
//! (distorted) image, `D` holds the distortion coefficients of `distortion_model`, `R` rotates the
//! camera frame into the rectified frame and `P` maps the rectified frame to the rectified
//! (undistorted) image. The camera matrix skew `K[0][1]` is ignored, as ROS `image_geometry` does.
//!
//! Distortion models (OpenCV conventions), for a point with normalised coordinates
//! `x = X / Z`, `y = Y / Z`:
//!
//! * `plumb_bob` (`k1, k2, p1, p2, k3`): with `r² = x² + y²`,
//!   `x' = x (1 + k1 r² + k2 r⁴ + k3 r⁶) + 2 p1 x y + p2 (r² + 2 x²)`, and `y'` likewise with
//!   `p1 (r² + 2 y²) + 2 p2 x y`; then `u = fx x' + cx`, `v = fy y' + cy`.
//! * `equidistant` (OpenCV fisheye, `k1..k4`): `θ = atan(r)`,
//!   `θd = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)`, `x' = (θd / r) x`, `y' = (θd / r) y`.
//!
//! # Geometry computed once
//!
//! * [`Undistorter`]: for every pixel of the rectified image, where to sample the raw image
//!   (like OpenCV `initUndistortRectifyMap`), stored in fixed point; [`Undistorter::apply`] is a
//!   bilinear remap without allocation.
//! * [`RayTable`]: the normalised ray of every pixel (of the raw image, by inverting the distortion
//!   model iteratively like `cv::undistortPoints`, or of the rectified image, from `P`);
//!   [`RayTable::back_project`] turns a depth image into an organised [`PointCloud`].

use std::fmt;
use std::path::{Path, PathBuf};

use nalgebra::{Matrix3, Vector3};
use serde::{Deserialize, Serialize};

use crate::synthetic::SyntheticCamera;

/// Largest accepted image side, pixels. Keeps every byte offset of an RGB8 image of that size in
/// the `u32` entries of the undistortion map (16384² × 3 < 2³²).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Most Newton iterations of the inverse distortion (per pixel, at construction).
pub const UNDISTORT_MAX_ITERATIONS: usize = 20;

/// The inverse distortion stops once the model reproduces the distorted point to this
/// (normalised image units; 1e-9 is about 5e-7 px at a 500 px focal length).
pub const UNDISTORT_TOLERANCE: f64 = 1e-9;

/// A pixel whose inverse distortion did not get below this residual (normalised units, about
/// 5e-4 px at 500 px focal length) within [`UNDISTORT_MAX_ITERATIONS`] has no ray: it lies where
/// the model folds over (beyond the calibrated field of view), and any ray would be a guess.
const UNDISTORT_ACCEPT: f64 = 1e-6;

/// Tolerance on the fixed entries (0 and 1) of `K` and `P`: files carry them as written constants.
const FIXED_ENTRY_TOLERANCE: f64 = 1e-6;

/// Tolerance on `R Rᵀ = I` and `det R = 1`: `camera_calibration` writes R with 6-9 decimals.
const ROTATION_TOLERANCE: f64 = 1e-3;

/// Fractional bits of the undistortion map: source positions in 1/256 pixel.
const MAP_FRACTION_BITS: u32 = 8;
/// 1.0 in map fixed point.
const MAP_ONE: u32 = 1 << MAP_FRACTION_BITS;
/// Map entry offset that marks an output pixel whose source lies outside the raw image.
const MAP_OUTSIDE: u32 = u32::MAX;

/// The supported models, as listed in errors.
const SUPPORTED_MODELS: &str = "plumb_bob (5 coefficients k1, k2, p1, p2, k3, or none), \
     equidistant (4 coefficients k1, k2, k3, k4: the OpenCV fisheye model)";

/// Row-major layout of the camera matrix, for messages.
const K_LAYOUT: &str = "[fx, 0, cx, 0, fy, cy, 0, 0, 1]";
/// Row-major layout of the projection matrix, for messages.
const P_LAYOUT: &str = "[fx', 0, cx', Tx, 0, fy', cy', Ty, 0, 0, 1, 0]";

/// Errors reading or using a calibration. Each names the file and says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The file cannot be read.
    #[error(
        "cannot read calibration file {path}: {source}; check the path and its permissions, or \
         make a calibration with `ros2 run camera_calibration cameracalibrator` \
         (see calibration/README.md)"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The YAML does not parse, or a field is unknown, missing or of the wrong type.
    #[error(
        "{path}: not a camera_calibration YAML file: {reason}; the file needs exactly the fields \
         image_width, image_height, camera_name, camera_matrix, distortion_model, \
         distortion_coefficients, rectification_matrix and projection_matrix (each matrix as \
         {{rows, cols, data}}), as camera_calibration writes them"
    )]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// `image_width` or `image_height` is zero or too large.
    #[error(
        "{path}: image_width {width} x image_height {height} is not a usable image size: both \
         must be between 1 and {max} pixels; write the size of the images the camera was \
         calibrated with",
        max = MAX_IMAGE_SIDE
    )]
    ImageSize {
        /// The file.
        path: PathBuf,
        /// `image_width`.
        width: u32,
        /// `image_height`.
        height: u32,
    },
    /// A matrix field has the wrong shape, or its data length is not rows × cols.
    #[error(
        "{path}: {field} has rows {rows}, cols {cols} and {values} values in data, but {required} \
         is required; fix {field} (data holds rows x cols values, row by row)"
    )]
    MatrixSize {
        /// The file.
        path: PathBuf,
        /// The YAML field, e.g. `camera_matrix`.
        field: &'static str,
        /// Its `rows`.
        rows: usize,
        /// Its `cols`.
        cols: usize,
        /// Length of its `data`.
        values: usize,
        /// What the field needs, e.g. `a 3x3 matrix (9 values)`.
        required: String,
    },
    /// A focal length is zero, negative or not finite.
    #[error(
        "{path}: {field} has {name} = {value}, but a focal length must be a finite number of \
         pixels > 0; recalibrate, or fix {field} (row-major {layout})"
    )]
    FocalLength {
        /// The file.
        path: PathBuf,
        /// `camera_matrix` or `projection_matrix`.
        field: &'static str,
        /// `fx` or `fy` (`fx'`, `fy'` in the projection matrix).
        name: &'static str,
        /// The value.
        value: f64,
        /// The matrix layout, for the fix.
        layout: &'static str,
    },
    /// A value is NaN or infinite.
    #[error(
        "{path}: {field} data[{index}] ({name}) is {value}, but every calibration value must be a \
         finite number; recalibrate, or fix that value"
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The YAML field.
        field: &'static str,
        /// Index in `data`.
        index: usize,
        /// What the entry is, e.g. `k1` or `R[1][2]`.
        name: String,
        /// The value.
        value: f64,
    },
    /// `K` or `P` is not an upper-triangular pinhole matrix.
    #[error(
        "{path}: {field} is not a pinhole camera matrix: {reason}; it must read {layout} row by \
         row (a matrix written column by column has cx, cy in the last row)"
    )]
    MatrixForm {
        /// The file.
        path: PathBuf,
        /// `camera_matrix` or `projection_matrix`.
        field: &'static str,
        /// Which entry is wrong.
        reason: String,
        /// The required layout.
        layout: &'static str,
    },
    /// The principal point lies outside the image.
    #[error(
        "{path}: {field} has its principal point (cx, cy) = ({cx}, {cy}) outside the \
         {width}x{height} image; check that image_width and image_height are the size the camera \
         was calibrated at, or recalibrate"
    )]
    PrincipalPoint {
        /// The file.
        path: PathBuf,
        /// `camera_matrix` or `projection_matrix`.
        field: &'static str,
        /// Principal point column.
        cx: f64,
        /// Principal point row.
        cy: f64,
        /// `image_width`.
        width: u32,
        /// `image_height`.
        height: u32,
    },
    /// `R` is not a rotation.
    #[error(
        "{path}: rectification_matrix is not a rotation ({reason}); a single camera uses the \
         identity [1, 0, 0, 0, 1, 0, 0, 0, 1], a stereo pair the R that stereo calibration wrote"
    )]
    NotARotation {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the numbers.
        reason: String,
    },
    /// `distortion_model` names a model this crate does not implement.
    #[error(
        "{path}: distortion_model {model:?} is not supported; use one of: {supported}; \
         recalibrate with that model",
        supported = SUPPORTED_MODELS
    )]
    UnknownDistortionModel {
        /// The file.
        path: PathBuf,
        /// What the file says.
        model: String,
    },
    /// The number of distortion coefficients does not fit the model.
    #[error(
        "{path}: distortion_model {model} takes {expected} distortion_coefficients, but {count} \
         are given; fix distortion_coefficients or distortion_model"
    )]
    CoefficientCount {
        /// The file.
        path: PathBuf,
        /// The model.
        model: DistortionModel,
        /// How many the file has.
        count: usize,
        /// How many the model takes, in words.
        expected: &'static str,
    },
    /// Images from the camera are not the size the calibration is for.
    #[error(
        "camera delivers {width}x{height} but {path} is for {calibrated_width}x{calibrated_height}; \
         recalibrate or set the camera to {calibrated_width}x{calibrated_height}"
    )]
    ImageSizeMismatch {
        /// The calibration file.
        path: PathBuf,
        /// Width of the camera's images.
        width: usize,
        /// Height of the camera's images.
        height: usize,
        /// `image_width` of the calibration.
        calibrated_width: u32,
        /// `image_height` of the calibration.
        calibrated_height: u32,
    },
    /// An image buffer does not have the length the calibration's image size needs.
    #[error(
        "{what} has {len} values but the {width}x{height} image of {path} needs {expected}; \
         give images of the calibrated size"
    )]
    BufferSize {
        /// The calibration file.
        path: PathBuf,
        /// Which buffer, e.g. `depth image`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length needed.
        expected: usize,
        /// Calibrated width.
        width: usize,
        /// Calibrated height.
        height: usize,
    },
    /// A point cloud stride of 0 was asked for.
    #[error("point cloud stride must be at least 1 (1 = every pixel, 2 = every other one)")]
    ZeroStride,
}

impl CalibrationError {
    /// Whether this is the user's input to fix (everything but an unexpected I/O error).
    pub fn is_bad_input(&self) -> bool {
        match self {
            CalibrationError::Unreadable { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::InvalidData
            ),
            _ => true,
        }
    }
}

/// Lens distortion models, named as in `sensor_msgs/CameraInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DistortionModel {
    /// Brown-Conrady radial + tangential (`k1, k2, p1, p2, k3`), OpenCV's default model.
    PlumbBob,
    /// Fisheye (`k1, k2, k3, k4`), OpenCV's `cv::fisheye` model.
    Equidistant,
}

impl DistortionModel {
    /// The `distortion_model` string of `sensor_msgs/CameraInfo`.
    pub fn as_str(self) -> &'static str {
        match self {
            DistortionModel::PlumbBob => "plumb_bob",
            DistortionModel::Equidistant => "equidistant",
        }
    }

    /// The model for a `distortion_model` string (exact, as ROS writes it).
    pub fn from_ros_name(name: &str) -> Option<Self> {
        match name {
            "plumb_bob" => Some(DistortionModel::PlumbBob),
            "equidistant" => Some(DistortionModel::Equidistant),
            _ => None,
        }
    }

    /// Names of the coefficients, in file order.
    fn coefficient_names(self) -> &'static [&'static str] {
        match self {
            DistortionModel::PlumbBob => &["k1", "k2", "p1", "p2", "k3"],
            DistortionModel::Equidistant => &["k1", "k2", "k3", "k4"],
        }
    }
}

impl fmt::Display for DistortionModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Pinhole intrinsics: focal lengths and principal point, pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    /// Horizontal focal length.
    pub fx: f64,
    /// Vertical focal length.
    pub fy: f64,
    /// Principal point column.
    pub cx: f64,
    /// Principal point row.
    pub cy: f64,
}

/// A validated camera calibration (the contents of `sensor_msgs/CameraInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct CameraCalibration {
    /// The file it was read from (named in errors), or `(synthetic camera)`.
    pub origin: PathBuf,
    /// Width of the calibrated images, pixels.
    pub image_width: u32,
    /// Height of the calibrated images, pixels.
    pub image_height: u32,
    /// Name of the camera.
    pub camera_name: String,
    /// Camera matrix of the raw image, row-major 3x3.
    pub k: [f64; 9],
    /// Distortion model of `d`.
    pub distortion_model: DistortionModel,
    /// Distortion coefficients: 5 or none for plumb_bob, 4 for equidistant.
    pub d: Vec<f64>,
    /// Rectification rotation (camera frame -> rectified frame), row-major 3x3.
    pub r: [f64; 9],
    /// Projection matrix of the rectified image, row-major 3x4.
    pub p: [f64; 12],
}

/// `origin` of [`CameraCalibration::synthetic`].
pub const SYNTHETIC_ORIGIN: &str = "(synthetic camera)";

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

    /// The camera that renders the synthetic scene at this size
    /// ([`SyntheticCamera::for_image`]): no distortion (five zero plumb_bob coefficients),
    /// `R = I`, `P = [K | 0]`.
    pub fn synthetic(width: u32, height: u32) -> Self {
        let cam = SyntheticCamera::for_image(width as usize, height as usize);
        let (fx, fy, cx, cy) = (cam.fx, cam.fy, cam.cx, cam.cy);
        CameraCalibration {
            origin: PathBuf::from(SYNTHETIC_ORIGIN),
            image_width: width,
            image_height: height,
            camera_name: "synthetic_camera".to_string(),
            k: [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
            distortion_model: DistortionModel::PlumbBob,
            d: vec![0.0; 5],
            r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p: [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        }
    }

    /// Image width as a size.
    pub fn width(&self) -> usize {
        self.image_width as usize
    }

    /// Image height as a size.
    pub fn height(&self) -> usize {
        self.image_height as usize
    }

    /// Fail unless the camera's images are the calibrated size.
    pub fn check_image_size(&self, width: usize, height: usize) -> Result<(), CalibrationError> {
        if width == self.width() && height == self.height() {
            Ok(())
        } else {
            Err(CalibrationError::ImageSizeMismatch {
                path: self.origin.clone(),
                width,
                height,
                calibrated_width: self.image_width,
                calibrated_height: self.image_height,
            })
        }
    }

    /// Intrinsics of the raw (distorted) image, from `K`.
    pub fn intrinsics(&self) -> Intrinsics {
        Intrinsics {
            fx: self.k[0],
            fy: self.k[4],
            cx: self.k[2],
            cy: self.k[5],
        }
    }

    /// Intrinsics of the rectified (undistorted) image, from `P`.
    pub fn rectified_intrinsics(&self) -> Intrinsics {
        Intrinsics {
            fx: self.p[0],
            fy: self.p[5],
            cx: self.p[2],
            cy: self.p[6],
        }
    }

    /// Whether images need undistorting: false only for plumb_bob with all coefficients zero.
    pub fn has_distortion(&self) -> bool {
        !matches!(Lens::of(self), Lens::Pinhole)
    }

    /// Where a point in the camera optical frame appears in the raw (distorted) image:
    /// `(u, v)`, or NaNs for a point not in front of the camera (`z <= 0`).
    pub fn project(&self, point: [f64; 3]) -> (f64, f64) {
        let [x, y, z] = point;
        if !positive(z) {
            return (f64::NAN, f64::NAN);
        }
        let (xd, yd) = Lens::of(self).distort(x / z, y / z);
        let k = self.intrinsics();
        (k.fx * xd + k.cx, k.fy * yd + k.cy)
    }

    /// The ray through raw image point `(u, v)` as normalised coordinates `(x / z, y / z)` in the
    /// camera optical frame: the distortion model inverted by Newton iteration (to
    /// [`UNDISTORT_TOLERANCE`], at most [`UNDISTORT_MAX_ITERATIONS`] steps). `None` where the
    /// model has no unique inverse (beyond the calibrated field of view).
    pub fn undistort_pixel(&self, u: f64, v: f64) -> Option<(f64, f64)> {
        let k = self.intrinsics();
        Lens::of(self).undistort((u - k.cx) / k.fx, (v - k.cy) / k.fy)
    }
}

/// The distortion model with its coefficients, resolved for computation.
#[derive(Debug, Clone, Copy)]
enum Lens {
    /// No distortion (plumb_bob with all coefficients zero, or none).
    Pinhole,
    /// `k1, k2, p1, p2, k3`.
    PlumbBob([f64; 5]),
    /// `k1, k2, k3, k4`.
    Equidistant([f64; 4]),
}

impl Lens {
    fn of(cal: &CameraCalibration) -> Self {
        match cal.distortion_model {
            DistortionModel::PlumbBob => match <[f64; 5]>::try_from(cal.d.as_slice()) {
                Ok(d) if d.iter().any(|&c| c != 0.0) => Lens::PlumbBob(d),
                // Validation allows only 5 or 0 coefficients; none means no distortion.
                _ => Lens::Pinhole,
            },
            DistortionModel::Equidistant => {
                let mut k = [0.0; 4];
                for (k, d) in k.iter_mut().zip(&cal.d) {
                    *k = *d;
                }
                Lens::Equidistant(k)
            }
        }
    }

    /// Normalised undistorted point -> normalised distorted point.
    fn distort(self, x: f64, y: f64) -> (f64, f64) {
        match self {
            Lens::Pinhole => (x, y),
            Lens::PlumbBob(d) => {
                let (xd, yd, _) = plumb_bob(d, x, y);
                (xd, yd)
            }
            Lens::Equidistant(k) => {
                let r = x.hypot(y);
                let theta = r.atan();
                let (theta_d, _) = fisheye_theta_d(k, theta);
                // theta_d / r -> 1 as r -> 0.
                let scale = if r > 1e-12 { theta_d / r } else { 1.0 };
                (x * scale, y * scale)
            }
        }
    }

    /// Normalised distorted point -> normalised undistorted point (`None`: no unique inverse).
    fn undistort(self, xd: f64, yd: f64) -> Option<(f64, f64)> {
        if !xd.is_finite() || !yd.is_finite() {
            return None;
        }
        match self {
            Lens::Pinhole => Some((xd, yd)),
            Lens::PlumbBob(d) => {
                let (mut x, mut y) = (xd, yd);
                for step in 0..=UNDISTORT_MAX_ITERATIONS {
                    let (fx, fy, j) = plumb_bob(d, x, y);
                    let (ex, ey) = (fx - xd, fy - yd);
                    let det = j[0] * j[3] - j[1] * j[2];
                    let residual = ex.hypot(ey);
                    // A solution where the Jacobian is not positive lies where the model folds
                    // over: that is not the pixel's ray.
                    if residual < UNDISTORT_TOLERANCE
                        || step == UNDISTORT_MAX_ITERATIONS
                        || !positive(det)
                    {
                        return (residual <= UNDISTORT_ACCEPT && det > 0.0).then_some((x, y));
                    }
                    x -= (j[3] * ex - j[1] * ey) / det;
                    y -= (j[0] * ey - j[2] * ex) / det;
                }
                None
            }
            Lens::Equidistant(k) => {
                let theta_d = xd.hypot(yd);
                if theta_d < 1e-12 {
                    return Some((xd, yd));
                }
                let mut theta = theta_d;
                for step in 0..=UNDISTORT_MAX_ITERATIONS {
                    let (value, slope) = fisheye_theta_d(k, theta);
                    let residual = (value - theta_d).abs();
                    if residual < UNDISTORT_TOLERANCE
                        || step == UNDISTORT_MAX_ITERATIONS
                        || !positive(slope)
                    {
                        let ok = residual <= UNDISTORT_ACCEPT
                            && slope > 0.0
                            && (0.0..std::f64::consts::FRAC_PI_2).contains(&theta);
                        if !ok {
                            return None;
                        }
                        let scale = theta.tan() / theta_d;
                        return Some((xd * scale, yd * scale));
                    }
                    theta -= (value - theta_d) / slope;
                }
                None
            }
        }
    }
}

/// `x > 0`, false for NaN.
fn positive(x: f64) -> bool {
    x > 0.0
}

/// plumb_bob: distorted point and its Jacobian `[dxd/dx, dxd/dy, dyd/dx, dyd/dy]`.
fn plumb_bob(d: [f64; 5], x: f64, y: f64) -> (f64, f64, [f64; 4]) {
    let [k1, k2, p1, p2, k3] = d;
    let r2 = x * x + y * y;
    let radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3));
    // d(radial)/d(r2)
    let g = k1 + r2 * (2.0 * k2 + 3.0 * r2 * k3);
    let xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x);
    let yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y;
    let j = [
        radial + 2.0 * x * x * g + 2.0 * p1 * y + 6.0 * p2 * x,
        2.0 * x * y * g + 2.0 * p1 * x + 2.0 * p2 * y,
        2.0 * x * y * g + 2.0 * p1 * x + 2.0 * p2 * y,
        radial + 2.0 * y * y * g + 6.0 * p1 * y + 2.0 * p2 * x,
    ];
    (xd, yd, j)
}

/// equidistant: `θd(θ)` and `dθd/dθ`.
fn fisheye_theta_d(k: [f64; 4], theta: f64) -> (f64, f64) {
    let [k1, k2, k3, k4] = k;
    let t2 = theta * theta;
    let value = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))));
    let slope = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)));
    (value, slope)
}

/// One output pixel of the undistortion map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MapEntry {
    /// Byte offset of the top-left source pixel, or [`MAP_OUTSIDE`].
    offset: u32,
    /// Weight of the right column, 0..=[`MAP_ONE`].
    wx: u16,
    /// Weight of the lower row, 0..=[`MAP_ONE`].
    wy: u16,
}

/// Undistorts (and rectifies) packed RGB8 images with maps computed once, like OpenCV's
/// `initUndistortRectifyMap` + `remap` (bilinear): output pixel `(u, v)` of the rectified image
/// (intrinsics from `P`, rotation `R`) samples the raw image where the camera model puts its ray.
/// Output pixels whose source lies outside the raw image are black.
#[derive(Debug, Clone)]
pub struct Undistorter {
    width: usize,
    height: usize,
    origin: PathBuf,
    /// Byte step to the right neighbour (0 for a one-column image).
    step_x: u32,
    /// Byte step to the lower neighbour (0 for a one-row image).
    step_y: u32,
    map: Vec<MapEntry>,
}

impl Undistorter {
    /// Compute the maps for the calibration's image size.
    pub fn new(cal: &CameraCalibration) -> Self {
        let (width, height) = (cal.width(), cal.height());
        let lens = Lens::of(cal);
        let k = cal.intrinsics();
        let rect = cal.rectified_intrinsics();
        // R maps the camera frame to the rectified frame; output rays go back with Rᵀ.
        let r_t = Matrix3::from_row_slice(&cal.r).transpose();
        let mut map = Vec::with_capacity(width * height);
        for v in 0..height {
            for u in 0..width {
                let ray = r_t
                    * Vector3::new(
                        (u as f64 - rect.cx) / rect.fx,
                        (v as f64 - rect.cy) / rect.fy,
                        1.0,
                    );
                let entry = if ray.z > 0.0 {
                    let (xd, yd) = lens.distort(ray.x / ray.z, ray.y / ray.z);
                    map_entry(k.fx * xd + k.cx, k.fy * yd + k.cy, width, height)
                } else {
                    None
                };
                map.push(entry.unwrap_or(MapEntry {
                    offset: MAP_OUTSIDE,
                    wx: 0,
                    wy: 0,
                }));
            }
        }
        Undistorter {
            width,
            height,
            origin: cal.origin.clone(),
            step_x: if width > 1 { 3 } else { 0 },
            // Fits: width <= MAX_IMAGE_SIDE.
            step_y: if height > 1 { (width * 3) as u32 } else { 0 },
            map,
        }
    }

    /// Image width, pixels (input and output).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Image height, pixels (input and output).
    pub fn height(&self) -> usize {
        self.height
    }

    /// Where output pixel `(u, v)` samples the raw image (as stored, to 1/256 px), or `None` if
    /// outside the raw image (or `(u, v)` outside the output).
    pub fn source_of(&self, u: usize, v: usize) -> Option<(f32, f32)> {
        if u >= self.width || v >= self.height {
            return None;
        }
        let e = self.map.get(v * self.width + u)?;
        if e.offset == MAP_OUTSIDE {
            return None;
        }
        let pixel = e.offset as usize / 3;
        let one = MAP_ONE as f32;
        Some((
            (pixel % self.width) as f32 + e.wx as f32 / one,
            (pixel / self.width) as f32 + e.wy as f32 / one,
        ))
    }

    /// Fraction of output pixels that see the raw image.
    pub fn coverage(&self) -> f64 {
        let inside = self.map.iter().filter(|e| e.offset != MAP_OUTSIDE).count();
        inside as f64 / self.map.len().max(1) as f64
    }

    /// Undistort `src_rgb` (raw image, packed RGB8, `width * height * 3` bytes) into `dst_rgb`
    /// (same size). Fails only on a buffer of the wrong length.
    pub fn apply(&self, src_rgb: &[u8], dst_rgb: &mut [u8]) -> Result<(), CalibrationError> {
        let expected = self.width * self.height * 3;
        for (what, len) in [
            ("source image", src_rgb.len()),
            ("output image", dst_rgb.len()),
        ] {
            if len != expected {
                return Err(CalibrationError::BufferSize {
                    path: self.origin.clone(),
                    what,
                    len,
                    expected,
                    width: self.width,
                    height: self.height,
                });
            }
        }
        // The right-neighbour step as a constant lets the compiler drop the bounds checks
        // inside each 2x2 neighbourhood.
        if self.step_x == 3 {
            remap::<3>(&self.map, self.step_y as usize, src_rgb, dst_rgb);
        } else {
            remap::<0>(&self.map, self.step_y as usize, src_rgb, dst_rgb);
        }
        Ok(())
    }
}

/// Bilinear remap of packed RGB8 by `map`; `SX` and `sy` are the byte steps to the right and
/// lower neighbours (0 where the image is one pixel wide or high).
fn remap<const SX: usize>(map: &[MapEntry], sy: usize, src: &[u8], dst: &mut [u8]) {
    for (e, out) in map.iter().zip(dst.chunks_exact_mut(3)) {
        let o = e.offset as usize;
        // Offsets were built inside the image (see `map_entry`); MAP_OUTSIDE, or anything that
        // is not there, reads as black.
        let neighbours = (e.offset != MAP_OUTSIDE)
            .then(|| Some((src.get(o..o + SX + 3)?, src.get(o + sy..o + sy + SX + 3)?)))
            .flatten();
        let Some((top, bottom)) = neighbours else {
            out.fill(0);
            continue;
        };
        let (wx, wy) = (u32::from(e.wx), u32::from(e.wy));
        let w00 = (MAP_ONE - wx) * (MAP_ONE - wy);
        let w01 = wx * (MAP_ONE - wy);
        let w10 = (MAP_ONE - wx) * wy;
        let w11 = wx * wy;
        for c in 0..3 {
            let sum = u32::from(top[c]) * w00
                + u32::from(top[SX + c]) * w01
                + u32::from(bottom[c]) * w10
                + u32::from(bottom[SX + c]) * w11;
            // The weights sum to MAP_ONE², so this rounds to nearest.
            out[c] = ((sum + (1 << (2 * MAP_FRACTION_BITS - 1))) >> (2 * MAP_FRACTION_BITS)) as u8;
        }
    }
}

/// The map entry sampling raw image point `(us, vs)`, or `None` outside `[0, size - 1]`.
fn map_entry(us: f64, vs: f64, width: usize, height: usize) -> Option<MapEntry> {
    let one = MAP_ONE as f64;
    let (qx, qy) = ((us * one).round(), (vs * one).round());
    let (max_x, max_y) = ((width - 1) as f64 * one, (height - 1) as f64 * one);
    if !(0.0..=max_x).contains(&qx) || !(0.0..=max_y).contains(&qy) {
        return None;
    }
    let (qx, qy) = (qx as u32, qy as u32);
    let split = |q: u32, size: usize| {
        let (mut i, mut w) = (q >> MAP_FRACTION_BITS, q & (MAP_ONE - 1));
        // On the last column / row, use the previous one with full weight on this one, so the
        // bilinear neighbours stay inside the image.
        if i as usize == size - 1 && size > 1 {
            i -= 1;
            w = MAP_ONE;
        }
        (i as usize, w as u16)
    };
    let (ix, wx) = split(qx, width);
    let (iy, wy) = split(qy, height);
    Some(MapEntry {
        offset: ((iy * width + ix) * 3) as u32,
        wx,
        wy,
    })
}

/// An organised point cloud in the camera optical frame (x right, y down, z forward), metres.
#[derive(Debug, Clone, PartialEq)]
pub struct PointCloud {
    /// Points per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height` points, row by row; invalid ones are NaN.
    pub points: Vec<[f32; 3]>,
    /// Colour of each point, if an image was given.
    pub rgb: Option<Vec<[u8; 3]>>,
    /// True if every point is valid (the `is_dense` of `sensor_msgs/PointCloud2`).
    pub dense: bool,
}

impl PointCloud {
    /// The point at `(row, col)`, `None` outside the cloud.
    pub fn get(&self, row: usize, col: usize) -> Option<[f32; 3]> {
        if col >= self.width {
            return None;
        }
        self.points.get(row * self.width + col).copied()
    }
}

/// The normalised ray `(x / z, y / z)` of every pixel, computed once, for back-projecting depth.
#[derive(Debug, Clone)]
pub struct RayTable {
    width: usize,
    height: usize,
    rectified: bool,
    origin: PathBuf,
    /// Row by row; NaN where the pixel has no ray.
    rays: Vec<[f32; 2]>,
}

impl RayTable {
    /// Rays of the rectified image (`rectified`: from `P`; the points are then in the rectified
    /// frame, which is the camera frame rotated by `R`) or of the raw image (the distortion model
    /// inverted per pixel, see [`CameraCalibration::undistort_pixel`]; pixels without an inverse
    /// get no ray, and their points are NaN).
    pub fn new(cal: &CameraCalibration, rectified: bool) -> Self {
        let (width, height) = (cal.width(), cal.height());
        let rect = cal.rectified_intrinsics();
        let mut rays = Vec::with_capacity(width * height);
        let mut without_ray = 0usize;
        for v in 0..height {
            for u in 0..width {
                let ray = if rectified {
                    Some((
                        (u as f64 - rect.cx) / rect.fx,
                        (v as f64 - rect.cy) / rect.fy,
                    ))
                } else {
                    cal.undistort_pixel(u as f64, v as f64)
                };
                rays.push(match ray {
                    Some((x, y)) => [x as f32, y as f32],
                    None => {
                        without_ray += 1;
                        [f32::NAN; 2]
                    }
                });
            }
        }
        if without_ray > 0 {
            log::warn!(
                "{}: {without_ray} of {} pixels lie where the distortion model cannot be \
                 inverted (beyond the calibrated field of view); their points will be NaN",
                cal.origin.display(),
                width * height
            );
        }
        RayTable {
            width,
            height,
            rectified,
            origin: cal.origin.clone(),
            rays,
        }
    }

    /// Image width, pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Image height, pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Whether the table is for rectified images.
    pub fn rectified(&self) -> bool {
        self.rectified
    }

    /// The ray `(x / z, y / z)` of pixel `(u, v)`; `None` outside the image or where the pixel
    /// has no ray.
    pub fn ray(&self, u: usize, v: usize) -> Option<[f32; 2]> {
        if u >= self.width {
            return None;
        }
        let ray = *self.rays.get(v * self.width + u)?;
        ray[0].is_finite().then_some(ray)
    }

    /// The 3-D point of pixel `(u, v)` at `depth` (metres along the optical axis); `None` for an
    /// invalid depth (NaN, infinite, <= 0), a pixel without a ray or outside the image.
    pub fn point(&self, u: usize, v: usize, depth: f32) -> Option<[f32; 3]> {
        let [x, y] = self.ray(u, v)?;
        valid_depth(depth).then_some([x * depth, y * depth, depth])
    }

    /// Back-project a depth image (`width * height` values, metres along the optical axis, row
    /// by row) into an organised cloud of `ceil(height / stride)` rows by `ceil(width / stride)`
    /// points, sampling pixels `(c * stride, r * stride)`. Invalid depths (NaN, infinite, <= 0)
    /// give NaN points and `dense = false`. `rgb` (packed RGB8 of the same image) colours the
    /// points.
    pub fn back_project(
        &self,
        depth: &[f32],
        stride: usize,
        rgb: Option<&[u8]>,
    ) -> Result<PointCloud, CalibrationError> {
        if stride == 0 {
            return Err(CalibrationError::ZeroStride);
        }
        let pixels = self.width * self.height;
        let size_error = |what, len, expected| CalibrationError::BufferSize {
            path: self.origin.clone(),
            what,
            len,
            expected,
            width: self.width,
            height: self.height,
        };
        if depth.len() != pixels {
            return Err(size_error("depth image", depth.len(), pixels));
        }
        if let Some(rgb) = rgb {
            if rgb.len() != pixels * 3 {
                return Err(size_error("rgb image", rgb.len(), pixels * 3));
            }
        }
        let (out_w, out_h) = (self.width.div_ceil(stride), self.height.div_ceil(stride));
        let mut points = Vec::with_capacity(out_w * out_h);
        let mut colours = rgb.map(|_| Vec::with_capacity(out_w * out_h));
        let mut dense = true;
        for v in (0..self.height).step_by(stride) {
            for u in (0..self.width).step_by(stride) {
                let i = v * self.width + u;
                let [x, y] = self.rays[i];
                let z = depth[i];
                if valid_depth(z) && x.is_finite() {
                    points.push([x * z, y * z, z]);
                } else {
                    points.push([f32::NAN; 3]);
                    dense = false;
                }
                if let (Some(colours), Some(rgb)) = (colours.as_mut(), rgb) {
                    colours.push([rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]]);
                }
            }
        }
        Ok(PointCloud {
            width: out_w,
            height: out_h,
            points,
            rgb: colours,
            dense,
        })
    }
}

/// A usable depth: finite and > 0.
fn valid_depth(z: f32) -> bool {
    z.is_finite() && z > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    #[test]
    fn synthetic_640x480_matches_its_file() {
        let path = repo_file("calibration/synthetic_640x480.yaml");
        let mut loaded = CameraCalibration::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
        let synthetic = CameraCalibration::synthetic(640, 480);
        loaded.origin = synthetic.origin.clone();
        assert_eq!(loaded, synthetic);
    }

    #[test]
    fn synthetic_matches_the_scene_camera_at_other_sizes() {
        for (w, h) in [(320, 240), (1280, 720), (97, 31)] {
            let cal = CameraCalibration::synthetic(w, h);
            let cam = SyntheticCamera::for_image(w as usize, h as usize);
            let k = cal.intrinsics();
            assert_eq!((k.fx, k.fy, k.cx, k.cy), (cam.fx, cam.fy, cam.cx, cam.cy));
            assert_eq!(cal.rectified_intrinsics(), k);
            assert!(!cal.has_distortion());
        }
    }

    #[test]
    fn plumb_bob_jacobian_matches_finite_differences() {
        let d = [-0.28, 0.09, 4e-4, -7e-4, -0.012];
        let h = 1e-7;
        for &(x, y) in &[(0.1, -0.2), (-0.5, 0.35), (0.6, 0.45)] {
            let (a, b, j) = plumb_bob(d, x, y);
            let (ax, bx, _) = plumb_bob(d, x + h, y);
            let (ay, by, _) = plumb_bob(d, x, y + h);
            let numeric = [(ax - a) / h, (ay - a) / h, (bx - b) / h, (by - b) / h];
            for (n, a) in numeric.iter().zip(j) {
                assert!((n - a).abs() < 1e-5, "{numeric:?} vs {j:?}");
            }
        }
    }

    #[test]
    fn map_entry_keeps_neighbours_inside() {
        let e = map_entry(9.0, 4.0, 10, 5).expect("inside");
        // Last column and row: the previous pixel with full weight on the last.
        assert_eq!(
            (e.offset, e.wx, e.wy),
            (((3 * 10 + 8) * 3) as u32, 256, 256)
        );
        assert!(map_entry(9.003, 0.0, 10, 5).is_none());
        assert!(map_entry(-0.003, 0.0, 10, 5).is_none());
        // Rounds up into the next pixel.
        let e = map_entry(2.9999999, 1.0, 10, 5).expect("inside");
        assert_eq!((e.offset, e.wx, e.wy), (((10 + 3) * 3) as u32, 0, 0));
    }
}
