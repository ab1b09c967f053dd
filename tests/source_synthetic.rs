//! The synthetic source: determinism, geometry of the ground truth, stamps and pacing, limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

use std::sync::Arc;
use std::time::Duration;

use dinov3_perception::frame::{Clock, Frame, GroundTruth, Stamp};
use dinov3_perception::source::synthetic::{SyntheticConfig, SyntheticSource};
use dinov3_perception::source::{FrameSource, SourceError};
use dinov3_perception::synthetic::{
    render, SceneConfigError, SyntheticCamera, SyntheticScene, CLASS_NAMES,
};

mod support;
use support::clock::ManualClock;

const T0: u64 = 1_700_000_000_000_000_000;

fn source(config: SyntheticConfig) -> (SyntheticSource, Arc<ManualClock>) {
    let clock = ManualClock::at(T0);
    let src = SyntheticSource::new(config, clock.clone())
        .unwrap()
        .with_sleep(clock.sleeper());
    (src, clock)
}

fn small(seed: u64) -> SyntheticConfig {
    SyntheticConfig {
        width: 320,
        height: 240,
        fps: 0.0,
        seed,
        ..SyntheticConfig::default()
    }
}

fn frames(config: SyntheticConfig, n: usize) -> Vec<Frame> {
    let (mut src, _) = source(config);
    src.start().unwrap();
    (0..n).map(|_| src.next_frame().unwrap().unwrap()).collect()
}

fn truth(f: &Frame) -> &GroundTruth {
    f.ground_truth
        .as_deref()
        .expect("synthetic frames carry ground truth")
}

#[test]
fn same_seed_gives_identical_frames_and_different_seeds_differ() {
    let a = frames(small(7), 4);
    let b = frames(small(7), 4);
    for (fa, fb) in a.iter().zip(&b) {
        assert_eq!(fa.rgb, fb.rgb, "frame {}", fa.seq);
        assert_eq!(truth(fa), truth(fb), "frame {}", fa.seq);
    }
    let c = frames(small(8), 4);
    for (fa, fc) in a.iter().zip(&c) {
        assert_ne!(fa.rgb, fc.rgb, "frame {}", fa.seq);
        assert_ne!(
            truth(fa).class_mask,
            truth(fc).class_mask,
            "frame {}",
            fa.seq
        );
    }
}

#[test]
fn render_is_what_the_source_delivers_in_any_order() {
    let config = small(3);
    let cam = SyntheticCamera::for_image(config.width, config.height);
    let fs = frames(config.clone(), 3);
    for i in [2u64, 0, 1] {
        let (rgb, gt) = render(&config, &cam, i).unwrap();
        assert_eq!(rgb, fs[i as usize].rgb);
        assert_eq!(&gt, truth(&fs[i as usize]));
    }
}

#[test]
fn frame_layout_and_class_names() {
    let f = &frames(small(1), 1)[0];
    let gt = truth(f);
    assert_eq!((f.width, f.height), (320, 240));
    assert_eq!(f.rgb.len(), 320 * 240 * 3);
    assert_eq!(gt.class_mask.len(), 320 * 240);
    assert_eq!(gt.depth.len(), 320 * 240);
    assert_eq!(gt.class_names, CLASS_NAMES.map(String::from).to_vec());
    assert_eq!(gt.class_names[0], "ground");
    assert_eq!(f.frame_id, "camera_optical_frame");
}

/// Relative tolerance on a depth of the ground truth against one computed here in f64. The
/// truth stores depth as f32, so even an exact depth is off by its rounding to f32: at most half
/// an ulp, `f32::EPSILON / 2` relative. Two f64 evaluations of the same geometry by different
/// formulas differ by ~1e-15 relative, far below that (for pixels at least a few pixels below
/// the horizon, where `1 / (distance to the horizon)` does not amplify it). Two ulps.
const DEPTH_REL_TOLERANCE: f64 = 2.0 * f32::EPSILON as f64;

/// Where the ray through pixel `(u, v)` meets the ground, built here from the camera's pose and
/// not from the renderer's formula: `Some(depth)` (the hit point's coordinate along the optical
/// axis), or `None` when the ray does not descend (sky).
///
/// Conventions (those of `camera_info`, which the scene documents): integer pixel coordinates
/// are pixel centres, so the ray in camera coordinates (x right, y down, z forward) is
/// `((u - cx) / fx, (v - cy) / fy, 1)`. World: x right, y forward, z up, ground `z = 0`, camera
/// at `(0, 0, h)` looking along +y pitched down by `p`, no roll.
fn ground_depth_by_ray_plane(cam: &SyntheticCamera, u: usize, v: usize) -> Option<f64> {
    let ray = [
        (u as f64 - cam.cx) / cam.fx,
        (v as f64 - cam.cy) / cam.fy,
        1.0,
    ];
    // The camera's axes in the world: x is world x; the optical axis is +y tilted down by p;
    // image "down" is perpendicular to both, i.e. world down tilted forward by p.
    let (sp, cp) = cam.pitch_rad.sin_cos();
    let x_axis = [1.0, 0.0, 0.0];
    let y_axis = [0.0, -sp, -cp];
    let z_axis = [0.0, cp, -sp];
    let dir: Vec<f64> = (0..3)
        .map(|k| ray[0] * x_axis[k] + ray[1] * y_axis[k] + ray[2] * z_axis[k])
        .collect();
    let origin = [0.0, 0.0, cam.height_above_ground_m];
    // Plane n . p = 0 with n = (0, 0, 1): o + t d meets it at t = -(n . o) / (n . d).
    let descent = dir[2];
    if descent >= 0.0 {
        return None;
    }
    let t = -origin[2] / descent;
    let hit: Vec<f64> = (0..3).map(|k| origin[k] + t * dir[k]).collect();
    assert!(
        hit[2].abs() < 1e-9 * t.max(1.0),
        "not on the ground: {hit:?}"
    );
    // Depth: the hit point relative to the camera, along the (unit) optical axis.
    let depth: f64 = (0..3).map(|k| (hit[k] - origin[k]) * z_axis[k]).sum();
    // Sanity of the construction: the point projects back onto the pixel centre.
    let along = |axis: [f64; 3]| -> f64 { (0..3).map(|k| (hit[k] - origin[k]) * axis[k]).sum() };
    let (pu, pv) = (
        cam.cx + cam.fx * along(x_axis) / depth,
        cam.cy + cam.fy * along(y_axis) / depth,
    );
    assert!((pu - u as f64).abs() < 1e-6 && (pv - v as f64).abs() < 1e-6);
    Some(depth)
}

/// The cameras the geometry tests render with: the default one, and one with a principal point
/// off the image centre, unequal focal lengths, another height and pitch.
fn test_cameras(config: &SyntheticConfig) -> [SyntheticCamera; 2] {
    [
        SyntheticCamera::for_image(config.width, config.height),
        SyntheticCamera {
            fx: 300.0,
            fy: 280.0,
            cx: 150.25,
            cy: 130.75,
            height_above_ground_m: 2.0,
            pitch_rad: 0.3,
        },
    ]
}

#[test]
fn ground_depth_matches_ray_plane_intersection() {
    let config = small(11);
    for cam in test_cameras(&config) {
        let (_, gt) = render(&config, &cam, 5).unwrap();
        let horizon = cam.cy - cam.fy * cam.pitch_rad.tan();
        let mut checked = 0;
        for v in 0..config.height {
            for u in 0..config.width {
                let i = v * config.width + u;
                let d = gt.depth[i];
                match ground_depth_by_ray_plane(&cam, u, v) {
                    None => {
                        assert_eq!(gt.class_mask[i], 0, "({u}, {v}) is sky");
                        assert!(d.is_infinite(), "({u}, {v}) is sky but depth {d}");
                    }
                    Some(want) => {
                        if gt.class_mask[i] != 0 {
                            // An object: in front of the ground behind it.
                            assert!(f64::from(d) < want, "({u}, {v}): object {d} >= {want}");
                            continue;
                        }
                        if (v as f64) < horizon + 3.0 {
                            continue; // see DEPTH_REL_TOLERANCE
                        }
                        let rel = (f64::from(d) - want).abs() / want;
                        assert!(
                            rel <= DEPTH_REL_TOLERANCE,
                            "({u}, {v}): depth {d}, ray/plane {want} (relative error {rel:.2e})"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > config.width * config.height / 3, "{checked}");
    }
}

#[test]
fn shifting_the_principal_point_shifts_the_image() {
    // Moving (cx, cy) by whole pixels moves every ray, and so depth and class, by those pixels:
    // the renderer uses the principal point for objects as well as the ground. (Integers and
    // halves are exact in f64, so the shifted rays are the same bits.)
    let config = SyntheticConfig {
        num_objects: 10,
        ..small(6)
    };
    let (w, h) = (config.width, config.height);
    let cam = SyntheticCamera::for_image(w, h);
    let (du, dv) = (23usize, 9usize);
    let shifted = SyntheticCamera {
        cx: cam.cx + du as f64,
        cy: cam.cy + dv as f64,
        ..cam
    };
    let (_, a) = render(&config, &cam, 3).unwrap();
    let (_, b) = render(&config, &shifted, 3).unwrap();
    let mut objects = 0;
    for v in 0..h - dv {
        for u in 0..w - du {
            let (i, j) = (v * w + u, (v + dv) * w + u + du);
            assert_eq!(a.class_mask[i], b.class_mask[j], "class at ({u}, {v})");
            assert_eq!(
                a.depth[i].to_bits(),
                b.depth[j].to_bits(),
                "depth at ({u}, {v}): {} vs {}",
                a.depth[i],
                b.depth[j]
            );
            objects += usize::from(a.class_mask[i] != 0);
        }
    }
    assert!(objects > 500, "only {objects} object pixels compared");
}

#[test]
fn ground_depth_increases_towards_the_horizon_and_sky_is_infinite() {
    let config = small(5);
    let cam = SyntheticCamera::for_image(config.width, config.height);
    let (_, gt) = render(&config, &cam, 0).unwrap();
    let w = config.width;
    let horizon = cam.horizon_row();
    assert!(horizon > 1.0 && horizon < config.height as f64 - 1.0);
    for u in (0..w).step_by(7) {
        // Walk up the column through ground pixels.
        let mut last = 0.0f32;
        for v in (0..config.height).rev() {
            let i = v * w + u;
            if gt.class_mask[i] != 0 || gt.depth[i].is_infinite() {
                continue;
            }
            assert!(
                gt.depth[i] > last,
                "column {u} row {v}: {} <= {last}",
                gt.depth[i]
            );
            last = gt.depth[i];
        }
        // Everything above the horizon row is sky: class 0, infinite depth.
        for v in 0..horizon.floor() as usize {
            let i = v * w + u;
            assert_eq!(gt.class_mask[i], 0);
            assert_eq!(gt.depth[i], f32::INFINITY, "({u}, {v})");
        }
    }
}

#[test]
fn mask_and_boxes_agree() {
    let mut classes_seen = [false; 4];
    for seed in 0..4 {
        let config = SyntheticConfig {
            num_objects: 8,
            ..small(seed)
        };
        for f in frames(config, 6).iter().step_by(5) {
            let gt = truth(f);
            let (w, h) = (f.width, f.height);
            for b in &gt.boxes {
                assert!((1..=3).contains(&b.class_id), "{b:?}");
                assert!(b.x0 >= 0.0 && b.y0 >= 0.0, "{b:?}");
                assert!(b.x1 <= w as f32 && b.y1 <= h as f32, "{b:?}");
                assert!(b.x0 < b.x1 && b.y0 < b.y1, "{b:?}");
                let holds_class = (b.y0 as usize..b.y1 as usize).any(|v| {
                    (b.x0 as usize..b.x1 as usize).any(|u| gt.class_mask[v * w + u] == b.class_id)
                });
                assert!(holds_class, "box {b:?} holds no pixel of its class");
                classes_seen[b.class_id as usize] = true;
            }
            for v in 0..h {
                for u in 0..w {
                    let k = gt.class_mask[v * w + u];
                    if k == 0 {
                        continue;
                    }
                    let (x, y) = (u as f32, v as f32);
                    let inside = gt
                        .boxes
                        .iter()
                        .any(|b| b.class_id == k && x >= b.x0 && x < b.x1 && y >= b.y0 && y < b.y1);
                    assert!(
                        inside,
                        "pixel ({u}, {v}) of class {k} is in no box of its class"
                    );
                    let d = gt.depth[v * w + u];
                    assert!(d.is_finite() && d > 1.0 && d < 40.0, "object depth {d}");
                }
            }
        }
    }
    assert_eq!(classes_seen, [false, true, true, true]);
}

#[test]
fn objects_are_nearer_than_the_ground_behind_them() {
    // Where an object hides the ground, its depth is less than the ground's at that pixel.
    let config = small(2);
    let cam = SyntheticCamera::for_image(config.width, config.height);
    let (_, gt) = render(&config, &cam, 0).unwrap();
    let mut objects = 0;
    for (i, &k) in gt.class_mask.iter().enumerate() {
        if k == 0 {
            continue;
        }
        objects += 1;
        let (u, v) = (i % config.width, i / config.width);
        if let Some(ground) = ground_depth_by_ray_plane(&cam, u, v) {
            assert!(f64::from(gt.depth[i]) < ground, "pixel ({u}, {v})");
        }
    }
    assert!(objects > 0);
}

#[test]
fn objects_move_between_frames() {
    let fs = frames(small(4), 16);
    let (first, last) = (truth(&fs[0]), truth(&fs[15]));
    assert_ne!(first.class_mask, last.class_mask);
    assert_ne!(first.boxes, last.boxes);
    assert_ne!(fs[0].rgb, fs[15].rgb);
}

#[test]
fn scene_time_follows_fps() {
    let at = |fps: f64| {
        let config = SyntheticConfig { fps, ..small(0) };
        SyntheticScene::new(&config, &SyntheticCamera::for_image(320, 240))
            .unwrap()
            .time_s(30)
    };
    assert_eq!(at(30.0), 1.0);
    assert_eq!(at(0.0), 2.0); // 15 Hz scene time when unpaced
}

#[test]
fn stamps_come_from_the_clock_and_seq_counts_from_zero() {
    let (mut src, clock) = source(small(0));
    src.start().unwrap();
    let mut want = Vec::new();
    let mut got = Vec::new();
    for i in 0..4u64 {
        clock.advance(Duration::from_millis(3 + i));
        want.push((i, clock.now()));
        let f = src.next_frame().unwrap().unwrap();
        got.push((f.seq, f.stamp));
    }
    assert_eq!(got, want);
    assert!(clock.slept().is_empty(), "fps 0 never waits");
    assert_eq!(src.stats().frames, 4);
}

#[test]
fn paced_frames_keep_their_schedule() {
    let config = SyntheticConfig {
        fps: 10.0,
        ..small(0)
    };
    let (mut src, clock) = source(config);
    src.start().unwrap();
    let ms = |n: u64| Stamp(T0 + n * 1_000_000);
    let mut stamps = Vec::new();
    for _ in 0..3 {
        stamps.push(src.next_frame().unwrap().unwrap().stamp);
        clock.advance(Duration::from_millis(30)); // consumer work
    }
    assert_eq!(stamps, vec![ms(0), ms(100), ms(200)]);
    assert_eq!(clock.slept(), vec![Duration::from_millis(70); 2]);
    // A consumer 250 ms late gets a frame at once, then the schedule resumes from there.
    clock.advance(Duration::from_millis(250));
    assert_eq!(src.next_frame().unwrap().unwrap().stamp, ms(480));
    assert_eq!(src.next_frame().unwrap().unwrap().stamp, ms(580));
}

#[test]
fn max_frames_ends_the_stream() {
    let config = SyntheticConfig {
        max_frames: Some(3),
        ..small(0)
    };
    let (mut src, _) = source(config);
    src.start().unwrap();
    for i in 0..3 {
        assert_eq!(src.next_frame().unwrap().unwrap().seq, i);
    }
    assert!(src.next_frame().unwrap().is_none());
    assert!(src.next_frame().unwrap().is_none());
    assert_eq!(src.stats().frames, 3);
}

#[test]
fn stop_ends_the_stream_until_started_again() {
    let (mut src, _) = source(small(0));
    // next_frame starts an idle source.
    assert_eq!(src.next_frame().unwrap().unwrap().seq, 0);
    src.stop();
    assert!(src.next_frame().unwrap().is_none());
    src.start().unwrap();
    assert_eq!(src.next_frame().unwrap().unwrap().seq, 1);
    assert!(src.describe().contains("synthetic seed=0 320x240"));
}

fn bad_parameter(result: Result<SyntheticSource, SourceError>) -> &'static str {
    match result {
        Err(SourceError::BadParameter { name, .. }) => name,
        Err(other) => panic!("expected BadParameter, got {other}"),
        Ok(_) => panic!("expected BadParameter, got a source"),
    }
}

#[test]
fn invalid_config_names_the_parameter() {
    let clock = ManualClock::at(0);
    let cfg = |f: fn(&mut SyntheticConfig)| {
        let mut c = SyntheticConfig::default();
        f(&mut c);
        bad_parameter(SyntheticSource::new(c, clock.clone()))
    };
    assert_eq!(cfg(|c| c.width = 0), "width");
    assert_eq!(cfg(|c| c.height = 0), "height");
    assert_eq!(cfg(|c| c.width = 1 << 20), "width");
    assert_eq!(cfg(|c| c.fps = -1.0), "fps");
    assert_eq!(cfg(|c| c.fps = f64::NAN), "fps");
    assert_eq!(cfg(|c| c.fps = f64::INFINITY), "fps");
    assert_eq!(cfg(|c| c.num_objects = 1000), "num_objects");
    assert_eq!(cfg(|c| c.frame_id.clear()), "frame_id");

    let cam = |f: fn(&mut SyntheticCamera)| {
        let mut cam = SyntheticCamera::default();
        f(&mut cam);
        bad_parameter(SyntheticSource::with_camera(
            SyntheticConfig::default(),
            cam,
            clock.clone(),
        ))
    };
    assert_eq!(cam(|c| c.fx = 0.0), "fx");
    assert_eq!(cam(|c| c.fy = 0.0), "fy");
    assert_eq!(cam(|c| c.fx = f64::NAN), "fx");
    assert_eq!(
        cam(|c| c.height_above_ground_m = -1.0),
        "height_above_ground_m"
    );
    assert_eq!(cam(|c| c.pitch_rad = f64::NAN), "pitch_rad");

    // The pure renderer reports the same, without panicking.
    let zero = SyntheticConfig {
        height: 0,
        ..SyntheticConfig::default()
    };
    assert!(matches!(
        render(&zero, &SyntheticCamera::default(), 0),
        Err(SceneConfigError { name: "height", .. })
    ));
}

#[test]
fn no_objects_and_tiny_images_render() {
    let config = SyntheticConfig {
        num_objects: 0,
        ..small(0)
    };
    let (_, gt) = render(&config, &SyntheticCamera::for_image(320, 240), 0).unwrap();
    assert!(gt.boxes.is_empty());
    assert!(gt.class_mask.iter().all(|&k| k == 0));
    let tiny = SyntheticConfig {
        width: 1,
        height: 1,
        ..SyntheticConfig::default()
    };
    let (rgb, gt) = render(&tiny, &SyntheticCamera::for_image(1, 1), 99).unwrap();
    assert_eq!((rgb.len(), gt.depth.len()), (3, 1));
}

#[test]
fn anomalies_are_off_by_default_and_masked_where_drawn() {
    // Off: no anomaly ground truth, and the pixels are those of a scene without the setting.
    for f in frames(small(3), 3) {
        assert!(truth(&f).anomaly_mask.is_none());
    }
    let with = |rate| SyntheticConfig {
        anomaly_rate: rate,
        ..small(3)
    };
    let plain = frames(with(0.0), 12);
    let all = frames(with(1.0), 12);
    let mut anomalous_frames = 0;
    for (p, a) in plain.iter().zip(&all) {
        let mask = truth(a)
            .anomaly_mask
            .as_ref()
            .expect("a mask when anomalies are drawn");
        assert_eq!(mask.len(), a.width * a.height);
        assert!(mask.iter().all(|&m| m == 0 || m == 255));
        // Anomalous pixels are object pixels, drawn differently; every other pixel is as before.
        for (i, &m) in mask.iter().enumerate() {
            let same = p.rgb[i * 3..i * 3 + 3] == a.rgb[i * 3..i * 3 + 3];
            if m == 0 {
                assert!(same, "pixel {i} changed outside the anomaly");
            } else {
                assert_ne!(truth(a).class_mask[i], 0, "anomaly on the ground at {i}");
            }
        }
        anomalous_frames += usize::from(mask.iter().any(|&m| m != 0));
        assert_eq!(truth(p).class_mask, truth(a).class_mask);
    }
    assert!(
        anomalous_frames >= 6,
        "{anomalous_frames} of 12 frames show the anomaly"
    );
    // A share of the frames: some anomalous, some not.
    let half = frames(with(0.5), 24);
    let n = half
        .iter()
        .filter(|f| {
            truth(f)
                .anomaly_mask
                .as_ref()
                .unwrap()
                .iter()
                .any(|&m| m != 0)
        })
        .count();
    assert!((3..=21).contains(&n), "{n} of 24");
    assert!(SyntheticConfig {
        anomaly_rate: 1.5,
        ..small(3)
    }
    .validate()
    .is_err());
}
