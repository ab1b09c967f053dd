//! [`SyntheticScene`]: a validated config and camera with the seeded look and objects and the
//! per-row / per-column tables, and the ray-cast renderer that draws a frame of it.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::camera::{Basis, SyntheticCamera, V3};
use super::config::{SceneConfigError, SyntheticConfig};
use super::ground::{floor_i64, hash2, scene_row, Row, Shadow, GRAIN_M, TILE_M};
use super::look::{lerp3, seeded_look, to_u8, Look, Rgb};
use super::objects::{seeded_objects, ObjectSpec, Placed};
use super::truth::TruthBuffers;
use crate::frame::GroundTruth;

/// Render frame `frame_index` of the scene a config and camera describe, without a clock: packed
/// RGB8 pixels (`height * width * 3`) and the ground truth. For dataset tools; the source uses the
/// same renderer. Drawing the scene is cheap but not free: to render many frames, build a
/// [`SyntheticScene`] once and call [`SyntheticScene::render`].
pub fn render(
    config: &SyntheticConfig,
    camera: &SyntheticCamera,
    frame_index: u64,
) -> Result<(Vec<u8>, GroundTruth), SceneConfigError> {
    Ok(SyntheticScene::new(config, camera)?.render(frame_index))
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
    pub fn new(
        config: &SyntheticConfig,
        camera: &SyntheticCamera,
    ) -> Result<Self, SceneConfigError> {
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
        let rate = self.config.anomaly_rate;
        let mut truth = TruthBuffers::new(n, rate > 0.0);
        let placed = self.placed(frame_index);
        // The object (by scene index) that wears the anomalous surface in this frame, if any.
        let frame = frame_index as i64;
        let anomalous_object =
            (rate > 0.0 && !self.objects.is_empty() && hash2(frame, 1, self.config.seed) < rate)
                .then(|| {
                    let pick = hash2(frame, 2, self.config.seed) * self.objects.len() as f64;
                    (pick as usize).min(self.objects.len() - 1)
                });
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
            truth.ground_row(v * w..(v + 1) * w, t);
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
                    if hit.t >= truth.depth(i) {
                        continue;
                    }
                    let anomalous = anomalous_object == Some(obj.index);
                    let albedo = if anomalous {
                        // A surface no normal object has: a fine magenta / green checkerboard.
                        if ((u / 3) + (v / 3)) % 2 == 0 {
                            [0.95, 0.05, 0.85]
                        } else {
                            [0.1, 0.9, 0.2]
                        }
                    } else if hit.band {
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
                    truth.hit(i, hit.t, obj, anomalous);
                }
            }
        }

        (rgb, truth.finish(w, &self.objects))
    }
}
