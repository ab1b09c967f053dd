//! [`RayTable`]: the normalised ray of every pixel, computed once, and the back-projection of a
//! depth image into an organised [`PointCloud`].

use std::path::PathBuf;

use super::camera::{check_buffer_len, CalibrationError, CameraCalibration};

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
        let size = (self.width, self.height);
        check_buffer_len(&self.origin, size, "depth image", depth.len(), pixels)?;
        if let Some(rgb) = rgb {
            check_buffer_len(&self.origin, size, "rgb image", rgb.len(), pixels * 3)?;
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
