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
//!
//! # Files
//!
//! * `camera.rs`: [`CameraCalibration`] (intrinsics, projection, pixel rays), [`CalibrationError`].
//! * `file.rs`: the camera_calibration YAML ([`CalibrationFile`]) and its validation.
//! * `lens.rs`: [`DistortionModel`] and the plumb_bob / equidistant maths and inverses.
//! * `undistort.rs`: [`Undistorter`], the undistortion maps and remap.
//! * `rays.rs`: [`RayTable`] and depth -> [`PointCloud`].

mod camera;
mod file;
mod lens;
mod rays;
mod undistort;

pub use camera::{
    CalibrationError, CameraCalibration, Intrinsics, MAX_IMAGE_SIDE, SYNTHETIC_ORIGIN,
};
pub use file::{CalibrationFile, YamlMatrix};
pub use lens::{DistortionModel, UNDISTORT_MAX_ITERATIONS, UNDISTORT_TOLERANCE};
pub use rays::{PointCloud, RayTable};
pub use undistort::Undistorter;
