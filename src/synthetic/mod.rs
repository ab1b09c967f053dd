//! The seeded synthetic scene: coloured solids on a textured ground plane, ray-cast per pixel,
//! with exact ground truth (depth, class mask, boxes). The frame source
//! ([`crate::source::synthetic::SyntheticSource`]), the dataset writer ([`crate::dataset`]) and
//! the synthetic calibration ([`crate::calibration::CameraCalibration::synthetic`]) all use it.
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
//! # Files
//!
//! * `config.rs`: [`SyntheticConfig`] and its limits.
//! * `camera.rs`: [`SyntheticCamera`] (intrinsics, pose, projection, rays) and the vector type.
//! * `look.rs`: seeded sun, sky, ground colours and haze; shading.
//! * `objects.rs`: the classes, the solids with their seeded paths, ray/solid intersection.
//! * `ground.rs`: per-row ground and sky constants, the checker texture, contact shadows.
//! * `scene.rs`: [`SyntheticScene`] and the renderer ([`SyntheticScene::render`], [`render`]).
//! * `truth.rs`: per-pixel depth and class, and the visible boxes, as a frame is drawn.

mod camera;
mod config;
mod ground;
mod look;
mod objects;
mod scene;
mod truth;

pub use camera::SyntheticCamera;
pub use config::{SceneConfigError, SyntheticConfig, DEFAULT_SCENE_RATE_HZ, MAX_OBJECTS, MAX_SIDE};
pub use objects::{CLASS_BALL, CLASS_BOX, CLASS_CONE, CLASS_GROUND, CLASS_NAMES};
pub use scene::{render, SyntheticScene};
