//! What stands on the ground: the classes, the solids (cuboid, sphere, cone) with their seeded
//! sizes, colours and paths, and the ray/solid intersections the renderer casts.

use std::f64::consts::TAU;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::camera::V3;
use super::look::{jitter, Rgb};

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

/// An object's solid, in metres.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
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
    pub(super) fn footprint(&self) -> f64 {
        match *self {
            Shape::Cuboid { half_x, half_y, .. } => half_x.hypot(half_y),
            Shape::Ball { radius } | Shape::Cone { radius, .. } => radius,
        }
    }

    pub(super) fn height(&self) -> f64 {
        match *self {
            Shape::Cuboid { height, .. } | Shape::Cone { height, .. } => height,
            Shape::Ball { radius } => 2.0 * radius,
        }
    }
}

/// A seeded object: what it is and how it moves.
#[derive(Debug, Clone)]
pub(super) struct ObjectSpec {
    pub(super) class_id: u8,
    pub(super) shape: Shape,
    pub(super) albedo: Rgb,
    pub(super) specular: f64,
    /// Lateral path: `x0 + ax * sin(wx * t + px)`.
    pub(super) x0: f64,
    pub(super) ax: f64,
    pub(super) wx: f64,
    pub(super) px: f64,
    /// Forward path: `y0 + ay * sin(wy * t + py)`.
    pub(super) y0: f64,
    pub(super) ay: f64,
    pub(super) wy: f64,
    pub(super) py: f64,
    /// Heading: `yaw0 + yaw_rate * t`.
    pub(super) yaw0: f64,
    pub(super) yaw_rate: f64,
}

/// An object at one instant.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed {
    /// Index in the scene's object list.
    pub(super) index: usize,
    pub(super) class_id: u8,
    pub(super) shape: Shape,
    pub(super) albedo: Rgb,
    pub(super) specular: f64,
    pub(super) x: f64,
    pub(super) y: f64,
    /// (cos, sin) of the heading.
    pub(super) yaw: (f64, f64),
}

/// A ray/solid hit.
pub(super) struct Hit {
    pub(super) t: f64,
    pub(super) normal: V3,
    /// Point on the cone's white band.
    pub(super) band: bool,
}

impl Placed {
    /// Nearest hit with `t > 0` of the ray `o + t d`.
    pub(super) fn intersect(&self, o: V3, d: V3) -> Option<Hit> {
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
    pub(super) fn corners(&self) -> [V3; 8] {
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

pub(super) fn seeded_objects(rng: &mut ChaCha8Rng, count: usize) -> Vec<ObjectSpec> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
