//! The seeded look of a scene: sun, sky and ground colours, haze, and how a surface is shaded.

use std::f64::consts::TAU;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::camera::V3;

/// Linear RGB in 0..1.
pub(super) type Rgb = [f64; 3];

pub(super) fn lerp3(a: Rgb, b: Rgb, t: f64) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// 0..1 to 0..255, rounded; out-of-range values saturate (`as` casts from floats saturate and
/// send NaN to 0).
pub(super) fn to_u8(x: f64) -> u8 {
    (x * 255.0 + 0.5) as u8
}

/// Seeded lighting and palette.
#[derive(Debug, Clone)]
pub(super) struct Look {
    /// Unit vector towards the sun.
    pub(super) sun: V3,
    pub(super) ambient: f64,
    pub(super) sun_colour: Rgb,
    pub(super) sky_horizon: Rgb,
    pub(super) sky_zenith: Rgb,
    pub(super) ground_a: Rgb,
    pub(super) ground_b: Rgb,
    /// Distance over which haze reaches 63 %.
    pub(super) haze_m: f64,
    pub(super) texture_seed: u64,
}

impl Look {
    pub(super) fn shade(&self, albedo: Rgb, normal: V3, to_eye: V3, specular: f64) -> Rgb {
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

    pub(super) fn haze(&self, colour: Rgb, depth: f64) -> Rgb {
        lerp3(colour, self.sky_horizon, 1.0 - (-depth / self.haze_m).exp())
    }
}

/// Multiply each channel by a seeded factor in `1 ± jitter`.
pub(super) fn jitter(rng: &mut ChaCha8Rng, c: Rgb, jitter: f64) -> Rgb {
    c.map(|x| x * (1.0 + rng.random_range(-jitter..=jitter)))
}

pub(super) fn seeded_look(rng: &mut ChaCha8Rng) -> Look {
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
