//! The seeded synthetic scene: coloured solids on a textured ground plane, with exact ground truth.
//!
//! # What it shows
//!
//! A flat ground plane (a 1 m checker in earthy tones with per-tile and fine-grain variation,
//! faded with distance so it does not alias, and a soft contact shadow under each object) below a
//! sky gradient, fading into haze towards the horizon. `num_objects` solids stand on the ground
//! 4–18 m ahead of the camera (each keeps to its own distance band, so they seldom meet):
//!
//! | class id | name     | solid                                              |
//! |----------|----------|----------------------------------------------------|
//! | 0        | `ground` | ground plane and sky (background)                  |
//! | 1        | `box`    | red cuboid, turning slowly about the vertical      |
//! | 2        | `ball`   | blue sphere with a specular highlight              |
//! | 3        | `cone`   | yellow traffic cone with a white band              |
//!
//! Objects drift side to side and back and forth along smooth periodic paths. Their placement,
//! sizes, colours, paths, the sun direction and the ground tones all come from the seed; the pose
//! at a frame is a closed-form function of the seed and the frame index, so any frame can be
//! rendered on its own, in any order, and is byte-identical every time ([`render`]). Scene time of
//! frame `n` is `n / fps` seconds (`n / 15` when `fps` is 0), so speeds are physical (m/s).
//! Determinism holds for a given build and platform: the scene uses `f64` `sin`/`cos`/`exp`.
//!
//! # Geometry
//!
//! World frame: origin on the ground below the camera, x right, y forward, z up, metres. The
//! camera ([`SyntheticCamera`]) sits at `(0, 0, height_above_ground_m)`, looks along +y pitched
//! down by `pitch_rad`, without roll. Pixel `(u, v)` (column, row) is seen along the ray through
//! image point `(u, v)` in the OpenCV / ROS `camera_info` convention (integer coordinates are
//! pixel centres): in camera (optical) coordinates the ray is `((u - cx) / fx, (v - cy) / fy, 1)`.
//!
//! Every object is a true solid (cuboid, sphere, cone) ray-cast per pixel; nothing is a billboard.
//! Depth is the z (optical axis) camera coordinate of the first surface the pixel's ray hits:
//!
//! * ground: ray/plane intersection, `z = h / (sin(pitch) + cos(pitch) * (v - cy) / fy)`;
//! * objects: the nearest ray/solid intersection;
//! * sky (the ray never meets the ground): `f32::INFINITY`.
//!
//! Objects are drawn far to near (painter's order) and each pixel also keeps a depth test, so
//! occlusion is right even where painter's order alone would fail (two objects passing through
//! each other, which can happen when there are many).
//!
//! # Ground truth
//!
//! Per frame: the class mask (class id per pixel, 0 = ground/sky), depth per pixel as above, and a
//! box per object with at least one visible pixel: the tight box around its visible pixels
//! (modal, after occlusion, so always inside the image). Boxes are listed in object order, which
//! is the same from frame to frame.
//!
//! # Pacing
//!
//! With `fps > 0`, frame `n` of [`SyntheticSource`] is due `n / fps` after the first frame on the
//! injected clock; the source sleeps until then, so it neither drifts nor runs ahead. If the
//! consumer falls more than one period behind, the schedule restarts from now instead of
//! delivering a burst to catch up. Each frame is stamped with the clock's time after the wait.

use std::f64::consts::TAU;
use std::ops::{Add, Mul, Sub};
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use super::pacing::SleepFn;
use super::pacing::{thread_sleep, Pacer, RunState};
use super::{FrameSource, SourceError, SourceStats};
use crate::frame::{Clock, Frame, GroundTruth, GroundTruthBox, SystemClock};

/// Class names indexed by class id; 0 is the background (ground and sky).
pub const CLASS_NAMES: [&str; 4] = ["ground", "box", "ball", "cone"];
/// Class id of the background (ground and sky).
pub const CLASS_GROUND: u8 = 0;
/// Class id of the red cuboids.
pub const CLASS_BOX: u8 = 1;
/// Class id of the blue spheres.
pub const CLASS_BALL: u8 = 2;
/// Class id of the yellow cones.
pub const CLASS_CONE: u8 = 3;

/// Largest accepted `num_objects`.
pub const MAX_OBJECTS: usize = 64;
/// Largest accepted image side, pixels.
pub const MAX_SIDE: usize = 8_192;
/// Frame rate that sets scene time when `fps` is 0 (frames as fast as asked).
pub const DEFAULT_SCENE_RATE_HZ: f64 = 15.0;

/// Settings of the synthetic scene and source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Image width, pixels (default 640).
    pub width: usize,
    /// Image height, pixels (default 480).
    pub height: usize,
    /// Target frame rate; 0 = a frame as soon as one is asked for (default 15).
    pub fps: f64,
    /// Seed of everything random in the scene (default 0).
    pub seed: u64,
    /// `frame_id` of the frames (default `camera_optical_frame`).
    pub frame_id: String,
    /// Number of objects on the ground (default 6, at most [`MAX_OBJECTS`]).
    pub num_objects: usize,
    /// End the stream after this many frames (default: never).
    pub max_frames: Option<u64>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            width: 640,
            height: 480,
            fps: 15.0,
            seed: 0,
            frame_id: "camera_optical_frame".to_string(),
            num_objects: 6,
            max_frames: None,
        }
    }
}

impl SyntheticConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SourceError> {
        for (name, value) in [("width", self.width), ("height", self.height)] {
            if value == 0 || value > MAX_SIDE {
                return Err(bad(
                    name,
                    value,
                    format!("must be between 1 and {MAX_SIDE} pixels"),
                ));
            }
        }
        if !self.fps.is_finite() || self.fps < 0.0 {
            return Err(bad(
                "fps",
                self.fps,
                "must be a finite number of frames per second >= 0 (0 = as fast as asked)".into(),
            ));
        }
        if self.num_objects > MAX_OBJECTS {
            return Err(bad(
                "num_objects",
                self.num_objects,
                format!("must be at most {MAX_OBJECTS}"),
            ));
        }
        if self.frame_id.is_empty() {
            return Err(bad(
                "frame_id",
                "\"\"",
                "must name the camera's coordinate frame, e.g. camera_optical_frame".into(),
            ));
        }
        Ok(())
    }

    /// Scene rate: `fps`, or [`DEFAULT_SCENE_RATE_HZ`] when `fps` is 0.
    fn scene_rate(&self) -> f64 {
        if self.fps > 0.0 {
            self.fps
        } else {
            DEFAULT_SCENE_RATE_HZ
        }
    }
}

/// A `BadParameter` error.
fn bad(name: &'static str, value: impl std::fmt::Display, reason: String) -> SourceError {
    SourceError::BadParameter {
        name,
        value: value.to_string(),
        reason,
    }
}

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
        SyntheticCamera::for_image(640, 480)
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
    pub fn validate(&self) -> Result<(), SourceError> {
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
struct V3 {
    x: f64,
    y: f64,
    z: f64,
}

impl V3 {
    const fn new(x: f64, y: f64, z: f64) -> Self {
        V3 { x, y, z }
    }
    fn dot(self, o: V3) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    fn normalized(self) -> V3 {
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
struct Basis {
    origin: V3,
    xc: V3,
    yc: V3,
    zc: V3,
}

impl Basis {
    fn new(cam: &SyntheticCamera) -> Self {
        let (s, c) = cam.pitch_rad.sin_cos();
        Basis {
            origin: V3::new(0.0, 0.0, cam.height_above_ground_m),
            xc: V3::new(1.0, 0.0, 0.0),
            yc: V3::new(0.0, -s, -c),
            zc: V3::new(0.0, c, -s),
        }
    }

    /// World ray for normalised image coordinates `(a, b)`, optical-axis component 1.
    fn ray(&self, a: f64, b: f64) -> V3 {
        self.xc * a + self.yc * b + self.zc
    }
}

/// Linear RGB in 0..1.
type Rgb = [f64; 3];

fn lerp3(a: Rgb, b: Rgb, t: f64) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// 0..1 to 0..255, rounded; out-of-range values saturate (`as` casts from floats saturate and
/// send NaN to 0).
fn to_u8(x: f64) -> u8 {
    (x * 255.0 + 0.5) as u8
}

/// `x.floor() as i64` without a libm call (baseline x86-64 has no SSE4.1 `roundsd`); saturates
/// like `as` for huge values.
fn floor_i64(x: f64) -> i64 {
    let i = x as i64;
    if (i as f64) > x {
        i - 1
    } else {
        i
    }
}

/// Deterministic hash of a grid cell to `[0, 1)` (splitmix64 finaliser).
fn hash2(ix: i64, iy: i64, seed: u64) -> f64 {
    let mut h = seed
        ^ (ix as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (iy as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^= h >> 33;
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Ground tile size, metres.
const TILE_M: f64 = 1.0;
/// Fine-grain texture cell, metres.
const GRAIN_M: f64 = 0.25;
/// Share of the darkening at the centre of a contact shadow.
const SHADOW_STRENGTH: f64 = 0.5;

/// Seeded lighting and palette.
#[derive(Debug, Clone)]
struct Look {
    /// Unit vector towards the sun.
    sun: V3,
    ambient: f64,
    sun_colour: Rgb,
    sky_horizon: Rgb,
    sky_zenith: Rgb,
    ground_a: Rgb,
    ground_b: Rgb,
    /// Distance over which haze reaches 63 %.
    haze_m: f64,
    texture_seed: u64,
}

impl Look {
    fn shade(&self, albedo: Rgb, normal: V3, to_eye: V3, specular: f64) -> Rgb {
        let diffuse = normal.dot(self.sun).max(0.0);
        let light = self.ambient + (1.0 - self.ambient) * diffuse;
        let spec = if specular > 0.0 && diffuse > 0.0 {
            specular
                * normal
                    .dot((self.sun + to_eye).normalized())
                    .max(0.0)
                    .powi(40)
        } else {
            0.0
        };
        [
            albedo[0] * light * self.sun_colour[0] + spec,
            albedo[1] * light * self.sun_colour[1] + spec,
            albedo[2] * light * self.sun_colour[2] + spec,
        ]
    }

    fn haze(&self, colour: Rgb, depth: f64) -> Rgb {
        lerp3(colour, self.sky_horizon, 1.0 - (-depth / self.haze_m).exp())
    }
}

/// An object's solid, in metres.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Cuboid standing on the ground: half extents along its own x and y, full height.
    Cuboid {
        half_x: f64,
        half_y: f64,
        height: f64,
    },
    /// Sphere resting on the ground.
    Ball { radius: f64 },
    /// Cone standing on its base.
    Cone { radius: f64, height: f64 },
}

impl Shape {
    /// Radius of the footprint's bounding circle.
    fn footprint(&self) -> f64 {
        match *self {
            Shape::Cuboid { half_x, half_y, .. } => half_x.hypot(half_y),
            Shape::Ball { radius } | Shape::Cone { radius, .. } => radius,
        }
    }

    fn height(&self) -> f64 {
        match *self {
            Shape::Cuboid { height, .. } | Shape::Cone { height, .. } => height,
            Shape::Ball { radius } => 2.0 * radius,
        }
    }
}

/// A seeded object: what it is and how it moves.
#[derive(Debug, Clone)]
struct ObjectSpec {
    class_id: u8,
    shape: Shape,
    albedo: Rgb,
    specular: f64,
    /// Lateral path: `x0 + ax * sin(wx * t + px)`.
    x0: f64,
    ax: f64,
    wx: f64,
    px: f64,
    /// Forward path: `y0 + ay * sin(wy * t + py)`.
    y0: f64,
    ay: f64,
    wy: f64,
    py: f64,
    /// Heading: `yaw0 + yaw_rate * t`.
    yaw0: f64,
    yaw_rate: f64,
}

/// An object at one instant.
#[derive(Debug, Clone, Copy)]
struct Placed {
    /// Index in the scene's object list.
    index: usize,
    class_id: u8,
    shape: Shape,
    albedo: Rgb,
    specular: f64,
    x: f64,
    y: f64,
    /// (cos, sin) of the heading.
    yaw: (f64, f64),
}

/// A ray/solid hit.
struct Hit {
    t: f64,
    normal: V3,
    /// Point on the cone's white band.
    band: bool,
}

impl Placed {
    /// Nearest hit with `t > 0` of the ray `o + t d`.
    fn intersect(&self, o: V3, d: V3) -> Option<Hit> {
        match self.shape {
            Shape::Ball { radius } => {
                let oc = o - V3::new(self.x, self.y, radius);
                let a = d.dot(d);
                let b = oc.dot(d);
                let c = oc.dot(oc) - radius * radius;
                let disc = b * b - a * c;
                if disc < 0.0 {
                    return None;
                }
                let t = (-b - disc.sqrt()) / a;
                (t > 0.0).then(|| Hit {
                    t,
                    normal: (oc + d * t) * (1.0 / radius),
                    band: false,
                })
            }
            Shape::Cuboid {
                half_x,
                half_y,
                height,
            } => {
                // Into the cuboid's frame (rotate by -yaw about z), then the slab test.
                let (cy, sy) = self.yaw;
                let px = o.x - self.x;
                let py = o.y - self.y;
                let lo = [cy * px + sy * py, -sy * px + cy * py, o.z];
                let ld = [cy * d.x + sy * d.y, -sy * d.x + cy * d.y, d.z];
                let lower = [-half_x, -half_y, 0.0];
                let upper = [half_x, half_y, height];
                let mut t_near = f64::NEG_INFINITY;
                let mut t_far = f64::INFINITY;
                let mut axis = 0;
                for k in 0..3 {
                    if ld[k].abs() < 1e-12 {
                        if lo[k] < lower[k] || lo[k] > upper[k] {
                            return None;
                        }
                        continue;
                    }
                    let t1 = (lower[k] - lo[k]) / ld[k];
                    let t2 = (upper[k] - lo[k]) / ld[k];
                    let (t1, t2) = if t1 < t2 { (t1, t2) } else { (t2, t1) };
                    if t1 > t_near {
                        t_near = t1;
                        axis = k;
                    }
                    t_far = t_far.min(t2);
                }
                if t_near > t_far || t_near <= 0.0 {
                    return None;
                }
                let sign = if ld[axis] > 0.0 { -1.0 } else { 1.0 };
                let normal = match axis {
                    0 => V3::new(cy * sign, sy * sign, 0.0),
                    1 => V3::new(-sy * sign, cy * sign, 0.0),
                    _ => V3::new(0.0, 0.0, sign),
                };
                Some(Hit {
                    t: t_near,
                    normal,
                    band: false,
                })
            }
            Shape::Cone { radius, height } => {
                // Relative to the apex: x² + y² = k² z² with -height <= z <= 0.
                let k2 = (radius / height).powi(2);
                let q = o - V3::new(self.x, self.y, height);
                let a = d.x * d.x + d.y * d.y - k2 * d.z * d.z;
                let b = q.x * d.x + q.y * d.y - k2 * q.z * d.z;
                let c = q.x * q.x + q.y * q.y - k2 * q.z * q.z;
                let roots = if a.abs() < 1e-12 {
                    if b.abs() < 1e-12 {
                        return None;
                    }
                    let t = -c / (2.0 * b);
                    [t, t]
                } else {
                    let disc = b * b - a * c;
                    if disc < 0.0 {
                        return None;
                    }
                    let r = disc.sqrt();
                    let (t1, t2) = ((-b - r) / a, (-b + r) / a);
                    if t1 < t2 {
                        [t1, t2]
                    } else {
                        [t2, t1]
                    }
                };
                roots.into_iter().find_map(|t| {
                    let p = q + d * t;
                    (t > 0.0 && p.z <= 0.0 && p.z >= -height).then(|| {
                        let up = (height + p.z) / height;
                        Hit {
                            t,
                            normal: V3::new(p.x, p.y, -k2 * p.z).normalized(),
                            band: (0.45..0.62).contains(&up),
                        }
                    })
                })
            }
        }
    }

    /// World-space bounding box corners.
    fn corners(&self) -> [V3; 8] {
        let r = self.shape.footprint();
        let h = self.shape.height();
        let mut out = [V3::new(0.0, 0.0, 0.0); 8];
        for (i, c) in out.iter_mut().enumerate() {
            let sx = if i & 1 == 0 { -r } else { r };
            let sy = if i & 2 == 0 { -r } else { r };
            let z = if i & 4 == 0 { 0.0 } else { h };
            *c = V3::new(self.x + sx, self.y + sy, z);
        }
        out
    }
}

/// Per-row constants of the ground and sky.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// Normalised image coordinate `(v - cy) / fy`.
    b: f64,
    /// Ground depth (optical-axis z), or `None` for sky.
    ground: Option<f64>,
    /// Forward (world y) distance of the ground seen on this row.
    forward: f64,
    /// Texture fade from the footprint of a pixel on the ground (1 = full contrast).
    fade_tile: f64,
    fade_grain: f64,
    /// Colour of the sky on this row.
    sky: Rgb,
}

/// A validated scene: config, camera, seeded look and objects, per-row and per-column tables.
/// Rendering a frame is a pure function of this and the frame index.
#[derive(Debug, Clone)]
pub struct SyntheticScene {
    config: SyntheticConfig,
    camera: SyntheticCamera,
    basis: Basis,
    look: Look,
    objects: Vec<ObjectSpec>,
    cols: Vec<f64>,
    rows: Vec<Row>,
}

impl SyntheticScene {
    /// Validate the config and camera and draw the seeded scene.
    pub fn new(config: &SyntheticConfig, camera: &SyntheticCamera) -> Result<Self, SourceError> {
        config.validate()?;
        camera.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let look = seeded_look(&mut rng);
        let objects = seeded_objects(&mut rng, config.num_objects);
        let basis = Basis::new(camera);
        let cols = (0..config.width)
            .map(|u| (u as f64 - camera.cx) / camera.fx)
            .collect();
        let rows = (0..config.height)
            .map(|v| scene_row(camera, &look, v as f64))
            .collect();
        Ok(SyntheticScene {
            config: config.clone(),
            camera: *camera,
            basis,
            look,
            objects,
            cols,
            rows,
        })
    }

    /// The config the scene was drawn from.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// The camera that renders it.
    pub fn camera(&self) -> &SyntheticCamera {
        &self.camera
    }

    /// Scene time of a frame, seconds.
    pub fn time_s(&self, frame_index: u64) -> f64 {
        frame_index as f64 / self.config.scene_rate()
    }

    /// Objects at a frame, far to near.
    fn placed(&self, frame_index: u64) -> Vec<Placed> {
        let t = self.time_s(frame_index);
        let mut placed: Vec<Placed> = self
            .objects
            .iter()
            .enumerate()
            .map(|(index, o)| Placed {
                index,
                class_id: o.class_id,
                shape: o.shape,
                albedo: o.albedo,
                specular: o.specular,
                x: o.x0 + o.ax * (o.wx * t + o.px).sin(),
                y: o.y0 + o.ay * (o.wy * t + o.py).sin(),
                yaw: {
                    let (s, c) = (o.yaw0 + o.yaw_rate * t).sin_cos();
                    (c, s)
                },
            })
            .collect();
        placed.sort_by(|a, b| {
            let da = a.x * a.x + a.y * a.y;
            let db = b.x * b.x + b.y * b.y;
            db.total_cmp(&da).then(a.index.cmp(&b.index))
        });
        placed
    }

    /// Pixel rectangle `[u0, u1) x [v0, v1)` that holds the projection of world points.
    fn screen_rect(&self, points: &[V3]) -> Option<(usize, usize, usize, usize)> {
        let (w, h) = (self.config.width as f64, self.config.height as f64);
        let mut lo = (f64::INFINITY, f64::INFINITY);
        let mut hi = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for p in points {
            match self.camera.project((*p).into()) {
                Some([u, v, z]) if z > 1e-3 => {
                    lo = (lo.0.min(u), lo.1.min(v));
                    hi = (hi.0.max(u), hi.1.max(v));
                }
                // Part of it is behind the camera: search the whole image.
                _ => return Some((0, self.config.width, 0, self.config.height)),
            }
        }
        let u0 = (lo.0 - 1.0).floor().clamp(0.0, w) as usize;
        let u1 = (hi.0 + 2.0).ceil().clamp(0.0, w) as usize;
        let v0 = (lo.1 - 1.0).floor().clamp(0.0, h) as usize;
        let v1 = (hi.1 + 2.0).ceil().clamp(0.0, h) as usize;
        (u0 < u1 && v0 < v1).then_some((u0, u1, v0, v1))
    }

    /// Render frame `frame_index`: packed RGB8 pixels and the ground truth.
    pub fn render(&self, frame_index: u64) -> (Vec<u8>, GroundTruth) {
        let (w, h) = (self.config.width, self.config.height);
        let n = w * h;
        let mut rgb = vec![0u8; n * 3];
        let mut depth = vec![f32::INFINITY; n];
        let mut mask = vec![CLASS_GROUND; n];
        // Object index + 1 per pixel (0 = none); MAX_OBJECTS < 255.
        let mut owner = vec![0u8; n];
        let placed = self.placed(frame_index);
        let shadows: Vec<Shadow> = placed.iter().map(|p| Shadow::new(p, &self.look)).collect();
        let look = &self.look;
        let mut shade = vec![1.0f64; w];

        for (v, row) in self.rows.iter().enumerate() {
            let line = &mut rgb[v * w * 3..(v + 1) * w * 3];
            let Some(t) = row.ground else {
                let px = row.sky.map(to_u8);
                for p in line.chunks_exact_mut(3) {
                    p.copy_from_slice(&px);
                }
                continue;
            };
            depth[v * w..(v + 1) * w].fill(t as f32);
            shade.fill(1.0);
            for s in &shadows {
                s.darken_row(&mut shade, row.forward, t, &self.camera);
            }
            // Per row: out = tile * gain * variation * shadow + haze term, per channel.
            let haze = 1.0 - (-t / look.haze_m).exp();
            let light = look.ambient + (1.0 - look.ambient) * look.sun.z.max(0.0);
            let gain: Rgb = std::array::from_fn(|c| light * look.sun_colour[c] * (1.0 - haze));
            let hazed: Rgb = std::array::from_fn(|c| look.sky_horizon[c] * haze);
            let mean = lerp3(look.ground_a, look.ground_b, 0.5);
            let tiles = [
                lerp3(mean, look.ground_a, row.fade_tile),
                lerp3(mean, look.ground_b, row.fade_tile),
            ];
            let (tile_k, grain_k) = (0.25 * row.fade_tile, 0.2 * row.fade_grain);
            let iy = floor_i64(row.forward / TILE_M);
            let gy = floor_i64(row.forward / GRAIN_M);
            let mut tile_cache = (i64::MIN, 0.0);
            let mut grain_cache = (i64::MIN, 0.0);
            for ((p, a), s) in line.chunks_exact_mut(3).zip(&self.cols).zip(&shade) {
                let x = t * a;
                let ix = floor_i64(x / TILE_M);
                let mut m = *s;
                if tile_k > 0.0 {
                    if tile_cache.0 != ix {
                        tile_cache = (ix, hash2(ix, iy, look.texture_seed) - 0.5);
                    }
                    m *= 1.0 + tile_k * tile_cache.1;
                }
                if grain_k > 0.0 {
                    let gx = floor_i64(x / GRAIN_M);
                    if grain_cache.0 != gx {
                        grain_cache = (gx, hash2(gx, gy, !look.texture_seed) - 0.5);
                    }
                    m *= 1.0 + grain_k * grain_cache.1;
                }
                let tile = &tiles[((ix + iy) & 1) as usize];
                p[0] = to_u8(tile[0] * gain[0] * m + hazed[0]);
                p[1] = to_u8(tile[1] * gain[1] * m + hazed[1]);
                p[2] = to_u8(tile[2] * gain[2] * m + hazed[2]);
            }
        }

        for obj in &placed {
            let Some((u0, u1, v0, v1)) = self.screen_rect(&obj.corners()) else {
                continue;
            };
            for v in v0..v1 {
                let b = self.rows[v].b;
                for u in u0..u1 {
                    let i = v * w + u;
                    let d = self.basis.ray(self.cols[u], b);
                    let Some(hit) = obj.intersect(self.basis.origin, d) else {
                        continue;
                    };
                    if hit.t >= f64::from(depth[i]) {
                        continue;
                    }
                    let albedo = if hit.band {
                        [0.92, 0.92, 0.88]
                    } else {
                        obj.albedo
                    };
                    let to_eye = (d * -1.0).normalized();
                    let colour =
                        look.haze(look.shade(albedo, hit.normal, to_eye, obj.specular), hit.t);
                    rgb[i * 3] = to_u8(colour[0]);
                    rgb[i * 3 + 1] = to_u8(colour[1]);
                    rgb[i * 3 + 2] = to_u8(colour[2]);
                    depth[i] = hit.t as f32;
                    mask[i] = obj.class_id;
                    owner[i] = obj.index as u8 + 1;
                }
            }
        }

        let boxes = visible_boxes(&owner, w, &self.objects);
        let truth = GroundTruth {
            boxes,
            class_mask: mask,
            depth,
            class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        };
        (rgb, truth)
    }
}

/// Tight boxes around each object's visible pixels, in object order.
fn visible_boxes(owner: &[u8], width: usize, objects: &[ObjectSpec]) -> Vec<GroundTruthBox> {
    // (u0, v0, u1, v1) inclusive, per object.
    let mut extent = vec![(usize::MAX, usize::MAX, 0usize, 0usize); objects.len()];
    let mut seen = vec![false; objects.len()];
    for (v, row) in owner.chunks_exact(width).enumerate() {
        for (u, &o) in row.iter().enumerate() {
            if o == 0 {
                continue;
            }
            let k = usize::from(o - 1);
            let e = &mut extent[k];
            *e = (e.0.min(u), e.1.min(v), e.2.max(u), e.3.max(v));
            seen[k] = true;
        }
    }
    objects
        .iter()
        .zip(extent.iter().zip(&seen))
        .filter(|(_, (_, &seen))| seen)
        .map(|(o, (e, _))| GroundTruthBox {
            class_id: o.class_id,
            x0: e.0 as f32,
            y0: e.1 as f32,
            x1: (e.2 + 1) as f32,
            y1: (e.3 + 1) as f32,
        })
        .collect()
}

/// Soft contact shadow of an object on the ground.
struct Shadow {
    x: f64,
    y: f64,
    radius: f64,
}

impl Shadow {
    fn new(p: &Placed, look: &Look) -> Self {
        // Pushed a little away from the sun so the light direction reads.
        let horizontal = V3::new(look.sun.x, look.sun.y, 0.0).normalized();
        let push = (0.4 * p.shape.height()).min(0.6);
        Shadow {
            x: p.x - horizontal.x * push,
            y: p.y - horizontal.y * push,
            radius: 1.25 * p.shape.footprint() + 0.1,
        }
    }

    /// Darken the pixels of a ground row (forward distance `forward`, depth `t`) it covers.
    fn darken_row(&self, shade: &mut [f64], forward: f64, t: f64, cam: &SyntheticCamera) {
        let dy = forward - self.y;
        let r2 = self.radius * self.radius;
        if dy * dy >= r2 {
            return;
        }
        let half = (r2 - dy * dy).sqrt();
        // Ground x = t * (u - cx) / fx on this row.
        let to_u = |x: f64| cam.cx + cam.fx * x / t;
        let u0 = to_u(self.x - half).floor().max(0.0);
        let u1 = (to_u(self.x + half).ceil() + 1.0).min(shade.len() as f64);
        if u0 >= u1 {
            return;
        }
        let (u0, u1) = (u0 as usize, u1 as usize);
        for (u, s) in shade.iter_mut().enumerate().take(u1).skip(u0) {
            let x = t * (u as f64 - cam.cx) / cam.fx;
            let q = ((x - self.x).powi(2) + dy * dy) / r2;
            if q < 1.0 {
                *s *= 1.0 - SHADOW_STRENGTH * (1.0 - q) * (1.0 - q);
            }
        }
    }
}

/// Ground and sky constants of image row `v`.
fn scene_row(cam: &SyntheticCamera, look: &Look, v: f64) -> Row {
    let (s, c) = cam.pitch_rad.sin_cos();
    let b = (v - cam.cy) / cam.fy;
    let forward_at = |v: f64| {
        cam.ground_depth_at_row(v).map(|t| {
            let b = (v - cam.cy) / cam.fy;
            t * (c - b * s)
        })
    };
    let ground = cam.ground_depth_at_row(v);
    let forward = forward_at(v).unwrap_or(f64::INFINITY);
    let (fade_tile, fade_grain) = match (ground, forward_at(v - 0.5), forward_at(v + 0.5)) {
        (Some(t), Some(far), Some(near)) => {
            // World size of one pixel on the ground: along the view and across it.
            let footprint = (far - near).abs().max(t / cam.fx);
            let fade = |cell: f64| (1.0 - footprint / (0.5 * cell)).clamp(0.0, 1.0);
            (fade(TILE_M), fade(GRAIN_M))
        }
        _ => (0.0, 0.0),
    };
    // Sky: from haze at the horizon to blue overhead, by the ray's elevation.
    let dir = V3::new(0.0, c - b * s, -(s + b * c)).normalized();
    let elevation = dir.z.max(0.0);
    let sky = lerp3(
        look.sky_horizon,
        look.sky_zenith,
        (elevation / 0.6).min(1.0).powf(0.7),
    );
    Row {
        b,
        ground,
        forward,
        fade_tile,
        fade_grain,
        sky,
    }
}

/// Multiply each channel by a seeded factor in `1 ± jitter`.
fn jitter(rng: &mut ChaCha8Rng, c: Rgb, jitter: f64) -> Rgb {
    c.map(|x| x * (1.0 + rng.random_range(-jitter..=jitter)))
}

fn seeded_look(rng: &mut ChaCha8Rng) -> Look {
    let azimuth = rng.random_range(0.0..TAU);
    let elevation: f64 = rng.random_range(0.5..1.1);
    let sun = V3::new(
        elevation.cos() * azimuth.sin(),
        elevation.cos() * azimuth.cos(),
        elevation.sin(),
    );
    let warmth = rng.random_range(-0.04..0.04);
    Look {
        sun,
        ambient: rng.random_range(0.35..0.45),
        sun_colour: [1.0 + warmth, 1.0, 1.0 - warmth],
        sky_horizon: jitter(rng, [0.80, 0.85, 0.90], 0.03),
        sky_zenith: jitter(rng, [0.30, 0.50, 0.85], 0.05),
        ground_a: jitter(rng, [0.47, 0.50, 0.33], 0.06),
        ground_b: jitter(rng, [0.38, 0.42, 0.28], 0.06),
        haze_m: rng.random_range(90.0..140.0),
        texture_seed: rng.random::<u64>(),
    }
}

fn seeded_objects(rng: &mut ChaCha8Rng, count: usize) -> Vec<ObjectSpec> {
    // Distance bands (4-18 m) shuffled over the objects, so they rarely pass through each other.
    let mut bands: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        let j = rng.random_range(0..=i);
        bands.swap(i, j);
    }
    let band_m = 14.0 / count.max(1) as f64;
    let first_class = rng.random_range(0..3usize);
    bands
        .into_iter()
        .enumerate()
        .map(|(i, band)| {
            let class_id = [CLASS_BOX, CLASS_BALL, CLASS_CONE][(first_class + i) % 3];
            let (shape, albedo, specular) = match class_id {
                CLASS_BOX => (
                    Shape::Cuboid {
                        half_x: rng.random_range(0.3..0.6),
                        half_y: rng.random_range(0.3..0.6),
                        height: rng.random_range(0.5..1.0),
                    },
                    jitter(rng, [0.78, 0.13, 0.10], 0.08),
                    0.08,
                ),
                CLASS_BALL => (
                    Shape::Ball {
                        radius: rng.random_range(0.25..0.5),
                    },
                    jitter(rng, [0.12, 0.26, 0.82], 0.08),
                    0.35,
                ),
                _ => (
                    Shape::Cone {
                        radius: rng.random_range(0.18..0.3),
                        height: rng.random_range(0.5..0.9),
                    },
                    jitter(rng, [0.95, 0.80, 0.10], 0.05),
                    0.1,
                ),
            };
            let y0 = 4.0 + band_m * (band as f64 + rng.random_range(0.3..0.7));
            let period_x: f64 = rng.random_range(4.0..12.0);
            let period_y: f64 = rng.random_range(5.0..15.0);
            ObjectSpec {
                class_id,
                shape,
                albedo,
                specular,
                x0: rng.random_range(-0.35..0.35) * y0,
                ax: rng.random_range(0.3..(0.5 + 0.2 * y0)),
                wx: TAU / period_x,
                px: rng.random_range(0.0..TAU),
                y0,
                ay: rng.random_range(0.0..(0.3 * band_m).min(2.0)),
                wy: TAU / period_y,
                py: rng.random_range(0.0..TAU),
                yaw0: rng.random_range(0.0..TAU),
                yaw_rate: rng.random_range(-0.5..0.5),
            }
        })
        .collect()
}

/// Render frame `frame_index` of the scene a config and camera describe, without a clock: packed
/// RGB8 pixels (`height * width * 3`) and the ground truth. For dataset tools; the source uses the
/// same renderer. Drawing the scene is cheap but not free: to render many frames, build a
/// [`SyntheticScene`] once and call [`SyntheticScene::render`].
pub fn render(
    config: &SyntheticConfig,
    camera: &SyntheticCamera,
    frame_index: u64,
) -> Result<(Vec<u8>, GroundTruth), SourceError> {
    Ok(SyntheticScene::new(config, camera)?.render(frame_index))
}

/// The synthetic scene as a [`FrameSource`]: frame `n` is [`SyntheticScene::render`]`(n)`, with
/// seq `n`, stamped on the injected clock and paced at `fps` (see the module docs).
///
/// `next_frame` before `start` starts the source; after `stop` it returns `Ok(None)` until
/// `start` is called again, which resumes the sequence where it stopped.
pub struct SyntheticSource {
    scene: SyntheticScene,
    clock: Arc<dyn Clock>,
    sleep: SleepFn,
    pacer: Pacer,
    next_index: u64,
    state: RunState,
    stats: SourceStats,
}

impl std::fmt::Debug for SyntheticSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSource")
            .field("config", &self.scene.config)
            .field("camera", &self.scene.camera)
            .field("next_index", &self.next_index)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SyntheticSource {
    /// A source with the default camera for the config's image size
    /// ([`SyntheticCamera::for_image`]).
    pub fn new(config: SyntheticConfig, clock: Arc<dyn Clock>) -> Result<Self, SourceError> {
        let camera = SyntheticCamera::for_image(config.width, config.height);
        Self::with_camera(config, camera, clock)
    }

    /// A source with a given camera.
    pub fn with_camera(
        config: SyntheticConfig,
        camera: SyntheticCamera,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SourceError> {
        let scene = SyntheticScene::new(&config, &camera)?;
        Ok(SyntheticSource {
            pacer: Pacer::new(config.fps),
            scene,
            clock,
            sleep: thread_sleep(),
            next_index: 0,
            state: RunState::Idle,
            stats: SourceStats::default(),
        })
    }

    /// A source on wall-clock time ([`SystemClock`]) with the default camera.
    pub fn with_system_clock(config: SyntheticConfig) -> Result<Self, SourceError> {
        Self::new(config, Arc::new(SystemClock))
    }

    /// Replace how the source waits for a frame's due time (tests, simulated time).
    pub fn with_sleep(mut self, sleep: SleepFn) -> Self {
        self.sleep = sleep;
        self
    }

    /// The scene it renders.
    pub fn scene(&self) -> &SyntheticScene {
        &self.scene
    }
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> String {
        let c = &self.scene.config;
        let rate = if c.fps > 0.0 {
            format!("{} fps", c.fps)
        } else {
            "as fast as asked".to_string()
        };
        format!(
            "synthetic seed={} {}x{} @ {rate}, {} objects",
            c.seed, c.width, c.height, c.num_objects
        )
    }

    fn start(&mut self) -> Result<(), SourceError> {
        if self.state != RunState::Running {
            self.pacer.restart();
            self.state = RunState::Running;
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        match self.state {
            RunState::Stopped => return Ok(None),
            RunState::Idle => self.start()?,
            RunState::Running => {}
        }
        if self
            .scene
            .config
            .max_frames
            .is_some_and(|max| self.stats.frames >= max)
        {
            return Ok(None);
        }
        self.pacer.wait(self.clock.as_ref(), self.sleep.as_ref());
        let stamp = self.clock.now();
        let index = self.next_index;
        let (rgb, truth) = self.scene.render(index);
        self.next_index += 1;
        self.stats.frames += 1;
        log::trace!("synthetic frame {index} at {stamp:?}");
        Ok(Some(Frame {
            width: self.scene.config.width,
            height: self.scene.config.height,
            rgb,
            stamp,
            seq: index,
            frame_id: self.scene.config.frame_id.clone(),
            ground_truth: Some(Arc::new(truth)),
        }))
    }

    fn stop(&mut self) {
        self.state = RunState::Stopped;
    }

    fn stats(&self) -> SourceStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

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

    fn placed(shape: Shape, x: f64, y: f64) -> Placed {
        Placed {
            index: 0,
            class_id: 1,
            shape,
            albedo: [1.0; 3],
            specular: 0.0,
            x,
            y,
            yaw: (1.0, 0.0),
        }
    }

    #[test]
    fn ray_casts_hit_the_near_surface() {
        let o = V3::new(0.0, 0.0, 0.5);
        let d = V3::new(0.0, 1.0, 0.0);
        let ball = placed(Shape::Ball { radius: 0.5 }, 0.0, 10.0);
        assert!((ball.intersect(o, d).unwrap().t - 9.5).abs() < 1e-9);
        let cuboid = placed(
            Shape::Cuboid {
                half_x: 0.5,
                half_y: 0.25,
                height: 1.0,
            },
            0.0,
            10.0,
        );
        let hit = cuboid.intersect(o, d).unwrap();
        assert!((hit.t - 9.75).abs() < 1e-9);
        assert!((hit.normal.y + 1.0).abs() < 1e-9);
        let cone = placed(
            Shape::Cone {
                radius: 0.5,
                height: 1.0,
            },
            0.0,
            10.0,
        );
        // At half height the cone's radius is 0.25.
        assert!((cone.intersect(o, d).unwrap().t - 9.75).abs() < 1e-9);
        // Looking away misses everything.
        let back = V3::new(0.0, -1.0, 0.0);
        assert!(ball.intersect(o, back).is_none());
        assert!(cuboid.intersect(o, back).is_none());
        assert!(cone.intersect(o, back).is_none());
    }

    struct FakeTime(AtomicU64);
    impl Clock for FakeTime {
        fn now(&self) -> crate::frame::Stamp {
            crate::frame::Stamp(self.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn pacer_keeps_schedule_and_restarts_when_late() {
        let clock = FakeTime(AtomicU64::new(1_000));
        let slept = Mutex::new(Vec::new());
        let sleep = |d: Duration| {
            slept.lock().unwrap().push(d);
            clock.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
        };
        let mut pacer = Pacer::new(100.0); // 10 ms
        pacer.wait(&clock, &sleep);
        clock.0.fetch_add(4_000_000, Ordering::SeqCst);
        pacer.wait(&clock, &sleep);
        assert_eq!(clock.0.load(Ordering::SeqCst), 1_000 + 10_000_000);
        clock.0.fetch_add(25_000_000, Ordering::SeqCst); // 2.5 periods late
        pacer.wait(&clock, &sleep);
        pacer.wait(&clock, &sleep);
        assert_eq!(clock.0.load(Ordering::SeqCst), 1_000 + 45_000_000);
        assert_eq!(
            *slept.lock().unwrap(),
            vec![Duration::from_millis(6), Duration::from_millis(10)]
        );
        let mut free = Pacer::new(0.0);
        free.wait(&clock, &|_| panic!("fps 0 never sleeps"));
    }

    #[test]
    fn camera_validation_names_the_parameter() {
        let name = |cam: SyntheticCamera| match cam.validate() {
            Err(SourceError::BadParameter { name, .. }) => name,
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
