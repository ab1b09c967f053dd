//! The pinhole camera that renders the scene ([`SyntheticCamera`]): intrinsics, pose above the
//! ground, projection and rays; and the small vector type the ray caster computes with.

use std::ops::{Add, Mul, Sub};

use serde::{Deserialize, Serialize};

use super::config::{bad, SceneConfigError};
use crate::frame::{DEFAULT_HEIGHT, DEFAULT_WIDTH};

/// The pinhole camera that renders the scene: no distortion, no roll, looking forward and
/// `pitch_rad` down at a flat ground plane (see the module docs for frames and conventions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticCamera {
    /// Focal length in pixels, horizontal.
    pub fx: f64,
    /// Focal length in pixels, vertical.
    pub fy: f64,
    /// Principal point column (pixel centres at integers).
    pub cx: f64,
    /// Principal point row.
    pub cy: f64,
    /// Height of the optical centre above the ground, metres.
    pub height_above_ground_m: f64,
    /// Downward pitch of the optical axis, radians (positive looks down).
    pub pitch_rad: f64,
}

impl Default for SyntheticCamera {
    fn default() -> Self {
        SyntheticCamera::for_image(DEFAULT_WIDTH, DEFAULT_HEIGHT)
    }
}

impl SyntheticCamera {
    /// The default camera for an image size: 65° horizontal field of view (fx = fy = 500 at
    /// 640 px), centred principal point, 1.2 m above the ground, pitched 0.15 rad (8.6°) down.
    pub fn for_image(width: usize, height: usize) -> Self {
        let f = width as f64 * (500.0 / 640.0);
        SyntheticCamera {
            fx: f,
            fy: f,
            cx: (width as f64 - 1.0) / 2.0,
            cy: (height as f64 - 1.0) / 2.0,
            height_above_ground_m: 1.2,
            pitch_rad: 0.15,
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SceneConfigError> {
        for (name, value) in [("fx", self.fx), ("fy", self.fy)] {
            if !value.is_finite() || value <= 0.0 {
                return Err(bad(name, value, "focal length must be > 0 pixels".into()));
            }
        }
        for (name, value) in [("cx", self.cx), ("cy", self.cy)] {
            if !value.is_finite() {
                return Err(bad(name, value, "principal point must be finite".into()));
            }
        }
        let h = self.height_above_ground_m;
        if !h.is_finite() || h <= 0.0 {
            return Err(bad(
                "height_above_ground_m",
                h,
                "the camera must be above the ground (> 0 m)".into(),
            ));
        }
        let limit = std::f64::consts::FRAC_PI_2 - 0.01;
        if !self.pitch_rad.is_finite() || self.pitch_rad.abs() > limit {
            return Err(bad(
                "pitch_rad",
                self.pitch_rad,
                format!("must be between -{limit:.2} and {limit:.2} rad (no looking straight up or down)"),
            ));
        }
        Ok(())
    }

    /// Image row of the horizon (rows above it see sky). May lie outside the image.
    pub fn horizon_row(&self) -> f64 {
        self.cy - self.fy * self.pitch_rad.tan()
    }

    /// Depth along the optical axis (metres) of the ground seen at image row `v`, or `None` for
    /// rows at or above the horizon. Without roll this does not depend on the column.
    pub fn ground_depth_at_row(&self, v: f64) -> Option<f64> {
        let (s, c) = self.pitch_rad.sin_cos();
        let denom = s + c * (v - self.cy) / self.fy;
        (denom > 0.0).then(|| self.height_above_ground_m / denom)
    }

    /// Project a world point (x right, y forward, z up, metres) to `[u, v, depth]`; `None` if it
    /// is not in front of the camera.
    pub fn project(&self, world: [f64; 3]) -> Option<[f64; 3]> {
        let basis = Basis::new(self);
        let rel = V3::from(world) - basis.origin;
        let z = rel.dot(basis.zc);
        if z <= 1e-9 {
            return None;
        }
        Some([
            self.cx + self.fx * rel.dot(basis.xc) / z,
            self.cy + self.fy * rel.dot(basis.yc) / z,
            z,
        ])
    }

    /// Direction in the world frame of the ray through image point `(u, v)`, scaled so that its
    /// optical-axis component is 1 (a point `origin + t * ray` has depth `t`).
    pub fn world_ray(&self, u: f64, v: f64) -> [f64; 3] {
        let basis = Basis::new(self);
        basis
            .ray((u - self.cx) / self.fx, (v - self.cy) / self.fy)
            .into()
    }
}

/// Minimal 3-vector for the ray caster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct V3 {
    pub(super) x: f64,
    pub(super) y: f64,
    pub(super) z: f64,
}

impl V3 {
    pub(super) const fn new(x: f64, y: f64, z: f64) -> Self {
        V3 { x, y, z }
    }
    pub(super) fn dot(self, o: V3) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    pub(super) fn normalized(self) -> V3 {
        let n = self.dot(self).sqrt();
        if n > 0.0 {
            self * (1.0 / n)
        } else {
            self
        }
    }
}

impl Add for V3 {
    type Output = V3;
    fn add(self, o: V3) -> V3 {
        V3::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

impl Sub for V3 {
    type Output = V3;
    fn sub(self, o: V3) -> V3 {
        V3::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}

impl Mul<f64> for V3 {
    type Output = V3;
    fn mul(self, k: f64) -> V3 {
        V3::new(self.x * k, self.y * k, self.z * k)
    }
}

impl From<[f64; 3]> for V3 {
    fn from(a: [f64; 3]) -> Self {
        V3::new(a[0], a[1], a[2])
    }
}

impl From<V3> for [f64; 3] {
    fn from(v: V3) -> Self {
        [v.x, v.y, v.z]
    }
}

/// Camera position and axes in the world frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct Basis {
    pub(super) origin: V3,
    pub(super) xc: V3,
    pub(super) yc: V3,
    pub(super) zc: V3,
}

impl Basis {
    pub(super) fn new(cam: &SyntheticCamera) -> Self {
        let (s, c) = cam.pitch_rad.sin_cos();
        Basis {
            origin: V3::new(0.0, 0.0, cam.height_above_ground_m),
            xc: V3::new(1.0, 0.0, 0.0),
            yc: V3::new(0.0, -s, -c),
            zc: V3::new(0.0, c, -s),
        }
    }

    /// World ray for normalised image coordinates `(a, b)`, optical-axis component 1.
    pub(super) fn ray(&self, a: f64, b: f64) -> V3 {
        self.xc * a + self.yc * b + self.zc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_and_ground_depth_agree() {
        let cam = SyntheticCamera::default();
        // A point on the ground 7 m ahead and 1.5 m to the right.
        let [u, v, z] = cam.project([1.5, 7.0, 0.0]).unwrap();
        let t = cam.ground_depth_at_row(v).unwrap();
        assert!((t - z).abs() < 1e-9 * z, "{t} vs {z}");
        // And the ray through that pixel reaches the point at depth z.
        let d = cam.world_ray(u, v);
        let p = [d[0] * z, d[1] * z, cam.height_above_ground_m + d[2] * z];
        assert!((p[0] - 1.5).abs() < 1e-9 && (p[1] - 7.0).abs() < 1e-9 && p[2].abs() < 1e-9);
        // The horizon row separates ground from sky.
        let hz = cam.horizon_row();
        assert!(cam.ground_depth_at_row(hz - 0.01).is_none());
        assert!(cam.ground_depth_at_row(hz + 0.01).is_some());
    }

    #[test]
    fn camera_validation_names_the_parameter() {
        let name = |cam: SyntheticCamera| match cam.validate() {
            Err(SceneConfigError { name, .. }) => name,
            other => panic!("{other:?}"),
        };
        let ok = SyntheticCamera::default();
        assert!(ok.validate().is_ok());
        assert_eq!(name(SyntheticCamera { fy: -1.0, ..ok }), "fy");
        assert_eq!(name(SyntheticCamera { cx: f64::NAN, ..ok }), "cx");
        assert_eq!(
            name(SyntheticCamera {
                height_above_ground_m: 0.0,
                ..ok
            }),
            "height_above_ground_m"
        );
        assert_eq!(
            name(SyntheticCamera {
                pitch_rad: 2.0,
                ..ok
            }),
            "pitch_rad"
        );
    }
}
