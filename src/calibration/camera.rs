//! [`CameraCalibration`]: a validated calibration (the contents of `sensor_msgs/CameraInfo`), its
//! intrinsics, projection of points and rays of pixels; and [`CalibrationError`], the errors of
//! reading or using one.

use std::path::{Path, PathBuf};

use super::lens::{positive, DistortionModel, Lens, SUPPORTED_MODELS};
use crate::synthetic::SyntheticCamera;

/// Largest accepted image side, pixels. Keeps every byte offset of an RGB8 image of that size in
/// the `u32` entries of the undistortion map (16384² × 3 < 2³²).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

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

/// `Ok` when a buffer for an image of the calibrated size (`width` x `height` of the calibration
/// at `origin`) has the `expected` length; else [`CalibrationError::BufferSize`].
pub(super) fn check_buffer_len(
    origin: &Path,
    (width, height): (usize, usize),
    what: &'static str,
    len: usize,
    expected: usize,
) -> Result<(), CalibrationError> {
    if len == expected {
        return Ok(());
    }
    Err(CalibrationError::BufferSize {
        path: origin.to_path_buf(),
        what,
        len,
        expected,
        width,
        height,
    })
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

impl CameraCalibration {
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
        !matches!(self.lens(), Lens::Pinhole)
    }

    /// Where a point in the camera optical frame appears in the raw (distorted) image:
    /// `(u, v)`, or NaNs for a point not in front of the camera (`z <= 0`).
    pub fn project(&self, point: [f64; 3]) -> (f64, f64) {
        let [x, y, z] = point;
        if !positive(z) {
            return (f64::NAN, f64::NAN);
        }
        let (xd, yd) = self.lens().distort(x / z, y / z);
        let k = self.intrinsics();
        (k.fx * xd + k.cx, k.fy * yd + k.cy)
    }

    /// The resolved distortion model.
    pub(super) fn lens(&self) -> Lens {
        Lens::new(self.distortion_model, &self.d)
    }

    /// The ray through raw image point `(u, v)` as normalised coordinates `(x / z, y / z)` in the
    /// camera optical frame: the distortion model inverted by Newton iteration (to
    /// [`UNDISTORT_TOLERANCE`](super::UNDISTORT_TOLERANCE), at most [`UNDISTORT_MAX_ITERATIONS`](super::UNDISTORT_MAX_ITERATIONS) steps). `None` where the
    /// model has no unique inverse (beyond the calibrated field of view).
    pub fn undistort_pixel(&self, u: f64, v: f64) -> Option<(f64, f64)> {
        let k = self.intrinsics();
        self.lens().undistort((u - k.cx) / k.fx, (v - k.cy) / k.fy)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
}
