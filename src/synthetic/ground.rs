//! The ground plane and the sky: per-row constants (depth, forward distance, texture fade, sky
//! colour), the checker texture's hashing, and the objects' soft contact shadows.

use super::camera::{SyntheticCamera, V3};
use super::look::{lerp3, Look, Rgb};
use super::objects::Placed;

/// `x.floor() as i64` without a libm call (baseline x86-64 has no SSE4.1 `roundsd`); saturates
/// like `as` for huge values.
pub(super) fn floor_i64(x: f64) -> i64 {
    let i = x as i64;
    if (i as f64) > x {
        i - 1
    } else {
        i
    }
}

/// Deterministic hash of a grid cell to `[0, 1)` (splitmix64 finaliser).
pub(super) fn hash2(ix: i64, iy: i64, seed: u64) -> f64 {
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
pub(super) const TILE_M: f64 = 1.0;
/// Fine-grain texture cell, metres.
pub(super) const GRAIN_M: f64 = 0.25;
/// Share of the darkening at the centre of a contact shadow.
pub(super) const SHADOW_STRENGTH: f64 = 0.5;

/// Per-row constants of the ground and sky.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    /// Normalised image coordinate `(v - cy) / fy`.
    pub(super) b: f64,
    /// Ground depth (optical-axis z), or `None` for sky.
    pub(super) ground: Option<f64>,
    /// Forward (world y) distance of the ground seen on this row.
    pub(super) forward: f64,
    /// Texture fade from the footprint of a pixel on the ground (1 = full contrast).
    pub(super) fade_tile: f64,
    pub(super) fade_grain: f64,
    /// Colour of the sky on this row.
    pub(super) sky: Rgb,
}

/// Soft contact shadow of an object on the ground.
pub(super) struct Shadow {
    pub(super) x: f64,
    pub(super) y: f64,
    pub(super) radius: f64,
}

impl Shadow {
    pub(super) fn new(p: &Placed, look: &Look) -> Self {
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
    pub(super) fn darken_row(
        &self,
        shade: &mut [f64],
        forward: f64,
        t: f64,
        cam: &SyntheticCamera,
    ) {
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
pub(super) fn scene_row(cam: &SyntheticCamera, look: &Look, v: f64) -> Row {
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
