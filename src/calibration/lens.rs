//! Lens distortion models (OpenCV conventions): [`DistortionModel`] as files name it, and the
//! resolved model that distorts normalised points (plumb_bob, equidistant) and inverts the
//! distortion by Newton iteration.

use std::fmt;

/// Most Newton iterations of the inverse distortion (per pixel, at construction).
pub const UNDISTORT_MAX_ITERATIONS: usize = 20;

/// The inverse distortion stops once the model reproduces the distorted point to this
/// (normalised image units; 1e-9 is about 5e-7 px at a 500 px focal length).
pub const UNDISTORT_TOLERANCE: f64 = 1e-9;

/// A pixel whose inverse distortion did not get below this residual (normalised units, about
/// 5e-4 px at 500 px focal length) within [`UNDISTORT_MAX_ITERATIONS`] has no ray: it lies where
/// the model folds over (beyond the calibrated field of view), and any ray would be a guess.
const UNDISTORT_ACCEPT: f64 = 1e-6;

/// The supported models, as listed in errors.
pub(super) const SUPPORTED_MODELS: &str =
    "plumb_bob (5 coefficients k1, k2, p1, p2, k3, or none), \
     equidistant (4 coefficients k1, k2, k3, k4: the OpenCV fisheye model)";

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
    pub(super) fn coefficient_names(self) -> &'static [&'static str] {
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

/// The distortion model with its coefficients, resolved for computation.
#[derive(Debug, Clone, Copy)]
pub(super) enum Lens {
    /// No distortion (plumb_bob with all coefficients zero, or none).
    Pinhole,
    /// `k1, k2, p1, p2, k3`.
    PlumbBob([f64; 5]),
    /// `k1, k2, k3, k4`.
    Equidistant([f64; 4]),
}

impl Lens {
    /// The model `model` with coefficients `d` (as validated: 5 or none for plumb_bob, 4 for
    /// equidistant).
    pub(super) fn new(model: DistortionModel, d: &[f64]) -> Self {
        match model {
            DistortionModel::PlumbBob => match <[f64; 5]>::try_from(d) {
                Ok(d) if d.iter().any(|&c| c != 0.0) => Lens::PlumbBob(d),
                // Validation allows only 5 or 0 coefficients; none means no distortion.
                _ => Lens::Pinhole,
            },
            DistortionModel::Equidistant => {
                let mut k = [0.0; 4];
                for (k, d) in k.iter_mut().zip(d) {
                    *k = *d;
                }
                Lens::Equidistant(k)
            }
        }
    }

    /// Normalised undistorted point -> normalised distorted point.
    pub(super) fn distort(self, x: f64, y: f64) -> (f64, f64) {
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
    pub(super) fn undistort(self, xd: f64, yd: f64) -> Option<(f64, f64)> {
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
pub(super) fn positive(x: f64) -> bool {
    x > 0.0
}

/// plumb_bob: distorted point and its Jacobian `[dxd/dx, dxd/dy, dyd/dx, dyd/dy]`.
pub(super) fn plumb_bob(d: [f64; 5], x: f64, y: f64) -> (f64, f64, [f64; 4]) {
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
pub(super) fn fisheye_theta_d(k: [f64; 4], theta: f64) -> (f64, f64) {
    let [k1, k2, k3, k4] = k;
    let t2 = theta * theta;
    let value = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))));
    let slope = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)));
    (value, slope)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
