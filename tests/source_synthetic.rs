//! The synthetic source: determinism, geometry of the ground truth, stamps and pacing, limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dinov3_perception::frame::{Clock, Frame, GroundTruth, Stamp};
use dinov3_perception::source::synthetic::{SyntheticConfig, SyntheticSource};
use dinov3_perception::source::{FrameSource, SourceError};
use dinov3_perception::synthetic::{render, SyntheticCamera, SyntheticScene, CLASS_NAMES};

/// A clock the test sets; sleeping advances it instead of waiting.
#[derive(Default)]
struct MockClock {
    now: AtomicU64,
    slept: Mutex<Vec<Duration>>,
}

impl MockClock {
    fn at(ns: u64) -> Arc<Self> {
        let c = Arc::new(MockClock::default());
        c.now.store(ns, Ordering::SeqCst);
        c
    }
    fn advance(&self, d: Duration) {
        self.now.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
    fn sleeper(self: &Arc<Self>) -> Arc<dyn Fn(Duration) + Send + Sync> {
        let me = Arc::clone(self);
        Arc::new(move |d| {
            me.slept.lock().unwrap().push(d);
            me.advance(d);
        })
    }
}

impl Clock for MockClock {
    fn now(&self) -> Stamp {
        Stamp(self.now.load(Ordering::SeqCst))
    }
}

const T0: u64 = 1_700_000_000_000_000_000;

fn source(config: SyntheticConfig) -> (SyntheticSource, Arc<MockClock>) {
    let clock = MockClock::at(T0);
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

/// Depth of the ground at row v, computed here from first principles: the ray
/// `((u-cx)/fx, (v-cy)/fy, 1)` in camera coordinates, rotated by the pitch, meets the plane
/// `h` below the camera at `t = h / (sin p + cos p (v-cy)/fy)`, and `t` is the camera z.
fn analytic_ground_depth(cam: &SyntheticCamera, v: usize) -> Option<f64> {
    let b = (v as f64 - cam.cy) / cam.fy;
    let down = cam.pitch_rad.sin() + cam.pitch_rad.cos() * b;
    (down > 0.0).then(|| cam.height_above_ground_m / down)
}

#[test]
fn ground_depth_matches_ray_plane_intersection() {
    for cam in [
        SyntheticCamera::for_image(320, 240),
        SyntheticCamera {
            fx: 300.0,
            fy: 280.0,
            cx: 150.0,
            cy: 130.0,
            height_above_ground_m: 2.0,
            pitch_rad: 0.3,
        },
    ] {
        let config = small(11);
        let (_, gt) = render(&config, &cam, 5).unwrap();
        let mut checked = 0;
        for v in 0..config.height {
            for u in 0..config.width {
                let i = v * config.width + u;
                if gt.class_mask[i] != 0 {
                    continue;
                }
                let d = gt.depth[i];
                match analytic_ground_depth(&cam, v) {
                    Some(want) => {
                        let rel = (f64::from(d) - want).abs() / want;
                        assert!(rel < 1e-3, "({u}, {v}): depth {d}, analytic {want}");
                        checked += 1;
                    }
                    None => assert!(d.is_infinite(), "({u}, {v}) is sky but depth {d}"),
                }
            }
        }
        assert!(checked > config.width * config.height / 3, "{checked}");
    }
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
        let v = i / config.width;
        if let Some(ground) = analytic_ground_depth(&cam, v) {
            assert!(f64::from(gt.depth[i]) < ground + 1e-3, "pixel {i}");
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
    assert!(clock.slept.lock().unwrap().is_empty(), "fps 0 never waits");
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
    assert_eq!(
        *clock.slept.lock().unwrap(),
        vec![Duration::from_millis(70); 2]
    );
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
    let clock = MockClock::at(0);
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
        Err(SourceError::BadParameter { name: "height", .. })
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
