//! Camera calibration: the files under `calibration/`, depth back-projection against planes at
//! known poses (which checks the inverse distortion against the forward model), the undistortion
//! maps against an ideal pinhole rendering, and one test per bad-calibration case.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use dinov3_perception::calibration::*;
use nalgebra::{Matrix3, Vector3};
use proptest::prelude::*;

/// Fronto-parallel plane: max |x - (u - cx) / fx * z| (and y), metres. Points are f32: at
/// z = 2.5 m, |x| <= 1.6 m has an ulp of 1.2e-7 m, and the f32 ray adds as much again, so 1e-5 m
/// leaves a wide margin while still catching any off-by-half-pixel (1.6e-3 m here).
const FRONTO_TOL_M: f32 = 1e-5;

/// Tilted plane: max |n·X - d|, metres. Points are f32 and lie up to ~15 m away (fisheye
/// corners), where an ulp is ~1e-6 m; 1e-4 m is far above rounding and far below any ray error
/// that matters (a 0.01 px ray error at 15 m moves a point by ~5e-4 m).
const PLANE_TOL_M: f64 = 1e-4;

/// Back-projected point re-projected with the forward model onto its own pixel centre, pixels.
/// The inverse distortion converges to 1e-9 normalised (~5e-7 px); storing rays and points as
/// f32 adds ~1e-5 px. 1e-3 px is well below anything visible and far above rounding.
const REPROJECTION_TOL_PX: f64 = 1e-3;

/// `undistort_pixel` then `project`, all in f64, pixels: only the iteration's tolerance
/// (1e-9 normalised, ~6e-7 px at these focal lengths) and f64 rounding remain.
const UNDISTORT_PIXEL_TOL_PX: f64 = 1e-5;

/// Undistorted image vs the ideal pinhole rendering of the same pattern: mean absolute error per
/// channel, grey levels (0-255). Rounding to 8 bits twice (raw image, output) alone gives about
/// 0.2 after bilinear averaging, and interpolating this smooth pattern adds little. The pattern
/// changes by up to ~20 levels per pixel, so a map off by 0.1 px would already cost about 0.5;
/// leaving the image distorted costs tens of levels (checked below).
const UNDISTORT_MEAN_ABS_TOL: f64 = 0.5;

/// Same comparison, worst single value: rounding twice (1) plus the bilinear interpolation error
/// at the steepest edges of the pattern (about 1).
const UNDISTORT_MAX_ABS_TOL: u8 = 3;

/// Side of one cell of the test pattern, rectified pixels.
const PATTERN_CELL_PX: f64 = 32.0;

/// Name given to the YAML of the bad-calibration tests.
const BAD_FILE: &str = "calibration/bad.yaml";

fn calibration_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("calibration")
        .join(name)
}

fn load(name: &str) -> CameraCalibration {
    let path = calibration_file(name);
    CameraCalibration::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Largest error over a set of checks, with where it happened and the first one over tolerance.
struct Worst {
    what: &'static str,
    tolerance: f64,
    max: f64,
    max_at: (usize, usize),
    first_outlier: Option<(usize, usize, f64)>,
    count: usize,
}

impl Worst {
    fn new(what: &'static str, tolerance: f64) -> Self {
        Worst {
            what,
            tolerance,
            max: 0.0,
            max_at: (0, 0),
            first_outlier: None,
            count: 0,
        }
    }

    fn add(&mut self, u: usize, v: usize, err: f64) {
        self.count += 1;
        // NaN counts as the worst possible error.
        let err = if err.is_nan() { f64::INFINITY } else { err };
        if err > self.max {
            self.max = err;
            self.max_at = (u, v);
        }
        if err > self.tolerance && self.first_outlier.is_none() {
            self.first_outlier = Some((u, v, err));
        }
    }

    fn check(&self, context: &str) {
        eprintln!(
            "{context}: {} max {:.3e} at pixel {:?} over {} points (tolerance {:.0e})",
            self.what, self.max, self.max_at, self.count, self.tolerance
        );
        if let Some((u, v, err)) = self.first_outlier {
            panic!(
                "{context}: {} {err:.3e} at pixel ({u}, {v}) is over {:.0e}; max {:.3e} at {:?}",
                self.what, self.tolerance, self.max, self.max_at
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The files.

#[test]
fn loads_the_three_calibration_files() {
    let synthetic = load("synthetic_640x480.yaml");
    assert_eq!((synthetic.image_width, synthetic.image_height), (640, 480));
    assert_eq!(synthetic.camera_name, "synthetic_camera");
    assert_eq!(synthetic.distortion_model, DistortionModel::PlumbBob);
    assert!(!synthetic.has_distortion());
    let k = synthetic.intrinsics();
    assert_eq!((k.fx, k.fy, k.cx, k.cy), (500.0, 500.0, 319.5, 239.5));
    assert_eq!(synthetic.rectified_intrinsics(), k);

    let webcam = load("example_plumb_bob.yaml");
    assert_eq!(webcam.distortion_model, DistortionModel::PlumbBob);
    assert_eq!(webcam.distortion_model.as_str(), "plumb_bob");
    assert_eq!(webcam.d.len(), 5);
    assert!(webcam.has_distortion());

    let fisheye = load("example_equidistant.yaml");
    assert_eq!(fisheye.distortion_model, DistortionModel::Equidistant);
    assert_eq!(fisheye.distortion_model.as_str(), "equidistant");
    assert_eq!(fisheye.d.len(), 4);
    assert!(fisheye.has_distortion());

    for (cal, name) in [
        (&synthetic, "synthetic_640x480.yaml"),
        (&webcam, "example_plumb_bob.yaml"),
        (&fisheye, "example_equidistant.yaml"),
    ] {
        cal.check_image_size(640, 480).expect("calibrated size");
        assert_eq!(cal.origin, calibration_file(name));
    }
}

#[test]
fn synthetic_calibration_equals_its_file() {
    let mut loaded = load("synthetic_640x480.yaml");
    let synthetic = CameraCalibration::synthetic(640, 480);
    loaded.origin = synthetic.origin.clone();
    assert_eq!(loaded, synthetic);
}

#[test]
fn example_projection_matrices_keep_every_rectified_pixel_inside_the_raw_image() {
    // The files say P is an alpha = 0 camera matrix: no black borders after undistortion.
    for name in ["example_plumb_bob.yaml", "example_equidistant.yaml"] {
        let coverage = Undistorter::new(&load(name)).coverage();
        assert_eq!(coverage, 1.0, "{name}");
    }
}

#[test]
fn empty_plumb_bob_coefficients_mean_no_distortion() {
    let text = good_yaml().replace(
        "  cols: 5\n  data: [-0.1, 0.01, 0.0, 0.0, 0.0]",
        "  cols: 0\n  data: []",
    );
    let cal = CameraCalibration::from_yaml_str(&text, Path::new(BAD_FILE)).expect("valid");
    assert!(cal.d.is_empty());
    assert!(!cal.has_distortion());
}

/// Forward model: at most this far from OpenCV's formulas evaluated independently, pixels (the
/// snapshots carry 9 decimals).
const FORWARD_SNAPSHOT_TOL_PX: f64 = 1e-6;

#[test]
fn project_follows_the_opencv_models() {
    // Snapshots of OpenCV's projectPoints (plumb_bob) and fisheye::projectPoints (equidistant)
    // formulas, evaluated outside this crate (Python, f64) for the two examples. The inverse is
    // tested against `project` below, so this pins both to the OpenCV / ROS conventions.
    let cases = [
        (
            "example_plumb_bob.yaml",
            [0.3, -0.2, 1.5],
            (442.141659209, 157.953392019),
        ),
        (
            "example_plumb_bob.yaml",
            [-1.1, 0.7, 2.0],
            (19.728236426, 430.158162833),
        ),
        (
            "example_plumb_bob.yaml",
            [0.05, 0.4, 0.9],
            (353.831302926, 495.714288545),
        ),
        (
            "example_equidistant.yaml",
            [0.3, -0.2, 1.5],
            (384.466458072, 197.505891948),
        ),
        (
            "example_equidistant.yaml",
            [-2.5, 1.4, 1.2],
            (-18.101026918, 429.695289178),
        ),
        (
            "example_equidistant.yaml",
            [0.05, 0.4, 0.9],
            (336.732786108, 379.237529781),
        ),
    ];
    for (name, point, (u, v)) in cases {
        let (pu, pv) = load(name).project(point);
        let err = (pu - u).hypot(pv - v);
        assert!(
            err <= FORWARD_SNAPSHOT_TOL_PX,
            "{name} {point:?}: ({pu}, {pv}) vs ({u}, {v}), {err:e} px"
        );
    }
    // Behind the camera: no pixel.
    let (u, v) = load("example_plumb_bob.yaml").project([0.1, 0.1, -1.0]);
    assert!(u.is_nan() && v.is_nan());
}

// ---------------------------------------------------------------------------------------------
// Back-projection: planes at known poses.

#[test]
fn fronto_parallel_plane_at_2_5_m() {
    let cal = CameraCalibration::synthetic(640, 480);
    let k = cal.intrinsics();
    let z = 2.5f32;
    for rectified in [false, true] {
        let table = RayTable::new(&cal, rectified);
        let cloud = table
            .back_project(&vec![z; 640 * 480], 1, None)
            .expect("sizes match");
        assert_eq!((cloud.width, cloud.height), (640, 480));
        assert!(cloud.dense);
        assert!(cloud.rgb.is_none());
        let mut worst = Worst::new(
            "|x - (u-cx)/fx z|, |y - (v-cy)/fy z| (m)",
            FRONTO_TOL_M as f64,
        );
        for v in 0..480 {
            for u in 0..640 {
                let p = cloud.get(v, u).expect("inside");
                assert_eq!(p[2], z, "z at ({u}, {v})");
                let x = ((u as f64 - k.cx) / k.fx * z as f64) as f32;
                let y = ((v as f64 - k.cy) / k.fy * z as f64) as f32;
                worst.add(u, v, (p[0] - x).abs().max((p[1] - y).abs()) as f64);
            }
        }
        worst.check(&format!("fronto-parallel plane, rectified = {rectified}"));
    }
}

/// The tilted plane `n·X = d` of the tests: normal mostly along the optical axis, tilted so
/// depth changes across the image, and in front of every pixel of both examples.
fn tilted_plane() -> (Vector3<f64>, f64) {
    (Vector3::new(0.05, -0.15, 1.0).normalize(), 2.0)
}

fn tilted_plane_through_raw_rays(name: &str) {
    let cal = load(name);
    let table = RayTable::new(&cal, false);
    let (w, h) = (cal.width(), cal.height());
    let (n, d) = tilted_plane();

    // Depth image of the plane: each pixel's ray (x, y, 1) meets it at z = d / n·(x, y, 1).
    let mut depth = Vec::with_capacity(w * h);
    for v in 0..h {
        for u in 0..w {
            let [x, y] = table
                .ray(u, v)
                .unwrap_or_else(|| panic!("{name}: pixel ({u}, {v}) has no ray"));
            let z = d / n.dot(&Vector3::new(x as f64, y as f64, 1.0));
            assert!(
                z > 0.0 && z.is_finite(),
                "{name}: plane behind pixel ({u}, {v})"
            );
            depth.push(z as f32);
        }
    }

    for stride in [1, 4, 7] {
        let cloud = table
            .back_project(&depth, stride, None)
            .expect("sizes match");
        assert_eq!(cloud.width, w.div_ceil(stride), "{name} stride {stride}");
        assert_eq!(cloud.height, h.div_ceil(stride), "{name} stride {stride}");
        assert_eq!(cloud.points.len(), cloud.width * cloud.height);
        assert!(cloud.dense, "{name} stride {stride}");
        let mut plane = Worst::new("plane residual |n·X - d| (m)", PLANE_TOL_M);
        let mut reprojection = Worst::new("reprojection error (px)", REPROJECTION_TOL_PX);
        for r in 0..cloud.height {
            for c in 0..cloud.width {
                let (u, v) = (c * stride, r * stride);
                let p = cloud.get(r, c).expect("inside");
                let p = Vector3::new(p[0] as f64, p[1] as f64, p[2] as f64);
                plane.add(u, v, (n.dot(&p) - d).abs());
                let (pu, pv) = cal.project([p.x, p.y, p.z]);
                reprojection.add(u, v, (pu - u as f64).hypot(pv - v as f64));
            }
        }
        let context = format!("{name}, raw rays, stride {stride}");
        plane.check(&context);
        reprojection.check(&context);
    }
}

#[test]
fn tilted_plane_plumb_bob_raw() {
    tilted_plane_through_raw_rays("example_plumb_bob.yaml");
}

#[test]
fn tilted_plane_equidistant_raw() {
    tilted_plane_through_raw_rays("example_equidistant.yaml");
}

#[test]
fn tilted_plane_rectified_rays_use_p() {
    // Rectified rays: pixel (u, v) of the rectified image looks along ((u-cx')/fx', (v-cy')/fy').
    let cal = load("example_plumb_bob.yaml");
    let rect = cal.rectified_intrinsics();
    let table = RayTable::new(&cal, true);
    assert!(table.rectified());
    let (n, d) = tilted_plane();
    let (w, h) = (cal.width(), cal.height());
    let mut depth = Vec::with_capacity(w * h);
    for v in 0..h {
        for u in 0..w {
            let ray = Vector3::new(
                (u as f64 - rect.cx) / rect.fx,
                (v as f64 - rect.cy) / rect.fy,
                1.0,
            );
            depth.push((d / n.dot(&ray)) as f32);
        }
    }
    let cloud = table.back_project(&depth, 4, None).expect("sizes match");
    let mut plane = Worst::new("plane residual |n·X - d| (m)", PLANE_TOL_M);
    let mut reprojection = Worst::new("rectified reprojection error (px)", REPROJECTION_TOL_PX);
    for r in 0..cloud.height {
        for c in 0..cloud.width {
            let (u, v) = (c * 4, r * 4);
            let p = cloud.get(r, c).expect("inside");
            let p = Vector3::new(p[0] as f64, p[1] as f64, p[2] as f64);
            plane.add(u, v, (n.dot(&p) - d).abs());
            let (pu, pv) = (rect.fx * p.x / p.z + rect.cx, rect.fy * p.y / p.z + rect.cy);
            reprojection.add(u, v, (pu - u as f64).hypot(pv - v as f64));
        }
    }
    plane.check("example_plumb_bob.yaml, rectified rays, stride 4");
    reprojection.check("example_plumb_bob.yaml, rectified rays, stride 4");
}

#[test]
fn invalid_depths_give_nan_points_and_a_sparse_cloud() {
    let cal = CameraCalibration::synthetic(640, 480);
    let table = RayTable::new(&cal, false);
    let mut depth = vec![2.5f32; 640 * 480];
    let invalid = [
        (0, 0, -1.0),
        (10, 10, f32::NAN),
        (30, 20, f32::INFINITY),
        (31, 20, f32::NEG_INFINITY),
        (639, 479, 0.0),
        (100, 200, -0.0),
    ];
    for &(u, v, z) in &invalid {
        depth[v * 640 + u] = z;
    }
    let rgb: Vec<u8> = (0..640 * 480 * 3).map(|i| (i % 251) as u8).collect();
    let cloud = table
        .back_project(&depth, 1, Some(&rgb))
        .expect("sizes match");
    assert!(!cloud.dense);
    let colours = cloud.rgb.as_ref().expect("colours asked for");
    assert_eq!(colours.len(), cloud.points.len());
    let mut nan_points = 0;
    for v in 0..480 {
        for u in 0..640 {
            let p = cloud.get(v, u).expect("inside");
            let i = v * 640 + u;
            assert_eq!(colours[i], [rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]]);
            let bad = invalid.iter().any(|&(iu, iv, _)| (iu, iv) == (u, v));
            if bad {
                assert!(p.iter().all(|c| c.is_nan()), "({u}, {v}): {p:?}");
                nan_points += 1;
            } else {
                assert!(p.iter().all(|c| c.is_finite()), "({u}, {v}): {p:?}");
            }
        }
    }
    assert_eq!(nan_points, invalid.len());

    // Stride 2 samples even columns and rows: (0, 0), (10, 10), (30, 20) and (100, 200) are
    // among them, so the cloud is sparse; an invalid depth at a skipped pixel leaves it dense.
    let cloud = table.back_project(&depth, 2, None).expect("sizes match");
    assert!(!cloud.dense);
    let mut ok = vec![2.5f32; 640 * 480];
    ok[479 * 640 + 639] = f32::NAN;
    assert!(table.back_project(&ok, 2, None).expect("sizes match").dense);
}

#[test]
fn back_project_rejects_wrong_sizes_and_zero_stride() {
    let cal = load("example_plumb_bob.yaml");
    let table = RayTable::new(&cal, false);
    let e = table
        .back_project(&vec![1.0; 640 * 480 - 1], 1, None)
        .expect_err("short depth image");
    let msg = e.to_string();
    for needle in [
        "depth image",
        "307199",
        "640x480",
        "307200",
        "example_plumb_bob.yaml",
    ] {
        assert!(msg.contains(needle), "{needle:?} in {msg}");
    }
    assert!(e.is_bad_input());

    let e = table
        .back_project(&vec![1.0; 640 * 480], 1, Some(&[0u8; 640 * 480]))
        .expect_err("rgb without 3 channels");
    assert!(e.to_string().contains("rgb image"), "{e}");

    let e = table
        .back_project(&vec![1.0; 640 * 480], 0, None)
        .expect_err("stride 0");
    assert!(matches!(e, CalibrationError::ZeroStride), "{e}");
}

/// The tables the property tests share: (calibration, raw-image rays) of both examples.
fn example_tables() -> &'static [(CameraCalibration, RayTable); 2] {
    static TABLES: OnceLock<[(CameraCalibration, RayTable); 2]> = OnceLock::new();
    TABLES.get_or_init(|| {
        ["example_plumb_bob.yaml", "example_equidistant.yaml"].map(|name| {
            let cal = load(name);
            let table = RayTable::new(&cal, false);
            (cal, table)
        })
    })
}

proptest! {
    #[test]
    fn back_projected_pixels_project_back(
        which in 0usize..2,
        u in 0usize..640,
        v in 0usize..480,
        z in 0.05f32..50.0,
    ) {
        let (cal, table) = &example_tables()[which];
        let p = table.point(u, v, z).expect("every pixel of the examples has a ray");
        prop_assert_eq!(p[2], z);
        let (pu, pv) = cal.project([p[0] as f64, p[1] as f64, p[2] as f64]);
        let err = (pu - u as f64).hypot(pv - v as f64);
        prop_assert!(err <= REPROJECTION_TOL_PX, "{} ({u}, {v}) z {z}: {err:e} px", cal.camera_name);
    }

    #[test]
    fn undistorted_subpixels_project_back(
        which in 0usize..2,
        u in -0.5f64..639.5,
        v in -0.5f64..479.5,
        z in 0.05f64..50.0,
    ) {
        let (cal, _) = &example_tables()[which];
        let (x, y) = cal.undistort_pixel(u, v).expect("inside the image");
        let (pu, pv) = cal.project([x * z, y * z, z]);
        let err = (pu - u).hypot(pv - v);
        prop_assert!(err <= UNDISTORT_PIXEL_TOL_PX, "{} ({u}, {v}): {err:e} px", cal.camera_name);
    }
}

// ---------------------------------------------------------------------------------------------
// Undistortion maps.

/// A deterministic noise image (every byte different from its neighbours).
fn noise_image(width: usize, height: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..width * height * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn undistorter_is_the_identity_without_distortion() {
    let cal = CameraCalibration::synthetic(640, 480);
    let undistorter = Undistorter::new(&cal);
    assert_eq!((undistorter.width(), undistorter.height()), (640, 480));
    assert_eq!(undistorter.coverage(), 1.0);
    let src = noise_image(640, 480);
    let mut dst = vec![0u8; src.len()];
    undistorter.apply(&src, &mut dst).expect("sizes match");
    // Every pixel, the border included: each one samples exactly itself.
    if let Some(i) = (0..src.len()).find(|&i| src[i] != dst[i]) {
        let p = i / 3;
        panic!(
            "pixel ({}, {}) channel {} differs: {} vs {}",
            p % 640,
            p / 640,
            i % 3,
            dst[i],
            src[i]
        );
    }
    for (u, v) in [(0, 0), (639, 0), (0, 479), (639, 479), (320, 240)] {
        assert_eq!(undistorter.source_of(u, v), Some((u as f32, v as f32)));
    }
}

#[test]
fn undistorter_identity_on_odd_sizes() {
    // One-pixel rows and columns have no bilinear neighbour: still exact, no panic.
    for (w, h) in [(1, 1), (1, 7), (7, 1), (3, 2)] {
        let undistorter = Undistorter::new(&CameraCalibration::synthetic(w, h));
        let src = noise_image(w as usize, h as usize);
        let mut dst = vec![0u8; src.len()];
        undistorter.apply(&src, &mut dst).expect("sizes match");
        assert_eq!(dst, src, "{w}x{h}");
    }
}

#[test]
fn undistorter_rejects_wrong_buffer_sizes() {
    let cal = load("example_plumb_bob.yaml");
    let undistorter = Undistorter::new(&cal);
    let src = vec![0u8; 640 * 480 * 3];
    let mut short = vec![0u8; 640 * 480 * 3 - 1];
    let e = undistorter
        .apply(&src, &mut short)
        .expect_err("short output");
    let msg = e.to_string();
    assert!(
        msg.contains("output image") && msg.contains("640x480"),
        "{msg}"
    );
    let mut dst = vec![0u8; 640 * 480 * 3];
    let e = undistorter
        .apply(&src[1..], &mut dst)
        .expect_err("short input");
    assert!(e.to_string().contains("source image"), "{e}");
}

/// The test pattern at rectified pixel `(u, v)`: a smooth checker (tanh-shaped edges, cells of
/// [`PATTERN_CELL_PX`]) in red, its negative in green, diagonal stripes in blue.
fn pattern(u: f64, v: f64) -> [f64; 3] {
    let s = (PI * u / PATTERN_CELL_PX).sin() * (PI * v / PATTERN_CELL_PX).sin();
    let checker = 128.0 + 100.0 * (2.0 * s).tanh();
    let stripes = 128.0 + 80.0 * (2.0 * PI * (u + v) / (3.0 * PATTERN_CELL_PX)).sin();
    [checker, 255.0 - checker, stripes]
}

fn to_u8(x: f64) -> u8 {
    x.round().clamp(0.0, 255.0) as u8
}

/// Reference inverse of the camera model, independent of the crate's: Newton on `project` with
/// a finite-difference Jacobian. Raw pixel -> (x/z, y/z).
fn reference_ray(cal: &CameraCalibration, u: f64, v: f64) -> (f64, f64) {
    let k = cal.intrinsics();
    let (mut x, mut y) = ((u - k.cx) / k.fx, (v - k.cy) / k.fy);
    for _ in 0..50 {
        let (pu, pv) = cal.project([x, y, 1.0]);
        let (eu, ev) = (pu - u, pv - v);
        if eu.hypot(ev) < 1e-7 {
            return (x, y);
        }
        let h = 1e-7;
        let (au, av) = cal.project([x + h, y, 1.0]);
        let (bu, bv) = cal.project([x, y + h, 1.0]);
        let j = Matrix3::new(
            (au - pu) / h,
            (bu - pu) / h,
            0.0,
            (av - pv) / h,
            (bv - pv) / h,
            0.0,
            0.0,
            0.0,
            1.0,
        );
        let step =
            j.try_inverse().expect("model invertible inside the image") * Vector3::new(eu, ev, 0.0);
        x -= step.x;
        y -= step.y;
    }
    panic!(
        "{}: reference inverse did not converge at ({u}, {v})",
        cal.camera_name
    );
}

fn undistorts_like_an_ideal_pinhole(cal: &CameraCalibration, name: &str) {
    let (w, h) = (cal.width(), cal.height());
    let rect = cal.rectified_intrinsics();
    let r = Matrix3::from_row_slice(&cal.r);

    // The raw image: what the distorted camera sees of the pattern, which lives on the
    // rectified image plane.
    let mut raw = Vec::with_capacity(w * h * 3);
    for v in 0..h {
        for u in 0..w {
            let (x, y) = reference_ray(cal, u as f64, v as f64);
            let q = r * Vector3::new(x, y, 1.0);
            let (ur, vr) = (rect.fx * q.x / q.z + rect.cx, rect.fy * q.y / q.z + rect.cy);
            raw.extend(pattern(ur, vr).map(to_u8));
        }
    }
    // The ideal rendering: the pattern seen by the rectified pinhole camera.
    let mut ideal = Vec::with_capacity(w * h * 3);
    for v in 0..h {
        for u in 0..w {
            ideal.extend(pattern(u as f64, v as f64).map(to_u8));
        }
    }

    let undistorter = Undistorter::new(cal);
    let mut out = vec![0u8; w * h * 3];
    let start = Instant::now();
    undistorter.apply(&raw, &mut out).expect("sizes match");
    let elapsed = start.elapsed();

    let mean_abs = |a: &[u8], b: &[u8]| {
        let mut sum = 0.0;
        let mut n = 0usize;
        let mut max = 0u8;
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let p = i / 3;
            if undistorter.source_of(p % w, p / w).is_some() {
                sum += x.abs_diff(*y) as f64;
                max = max.max(x.abs_diff(*y));
                n += 1;
            }
        }
        (sum / n.max(1) as f64, max, n)
    };
    let (err, max, n) = mean_abs(&out, &ideal);
    let (raw_err, _, _) = mean_abs(&raw, &ideal);
    eprintln!(
        "{name}: undistorted vs ideal mean abs {err:.3} (max {max}) over {n} values; left \
         distorted {raw_err:.2}; coverage {:.4}; apply took {elapsed:?}",
        undistorter.coverage()
    );
    assert!(
        max <= UNDISTORT_MAX_ABS_TOL,
        "{name}: max abs {max} > {UNDISTORT_MAX_ABS_TOL}"
    );
    assert!(
        err <= UNDISTORT_MEAN_ABS_TOL,
        "{name}: mean abs {err:.3} > {UNDISTORT_MEAN_ABS_TOL}"
    );
    // The test has teeth: without undistortion the error is far above the tolerance.
    assert!(
        raw_err > 5.0 * UNDISTORT_MEAN_ABS_TOL,
        "{name}: distorted image too close ({raw_err:.2})"
    );
}

#[test]
fn undistorts_plumb_bob_like_an_ideal_pinhole() {
    undistorts_like_an_ideal_pinhole(&load("example_plumb_bob.yaml"), "example_plumb_bob.yaml");
}

#[test]
fn undistorts_equidistant_like_an_ideal_pinhole() {
    undistorts_like_an_ideal_pinhole(
        &load("example_equidistant.yaml"),
        "example_equidistant.yaml",
    );
}

#[test]
fn undistorts_and_rectifies_with_a_rotation() {
    // A stereo-style R (the rectified frame turned 2° about y and 1° about x): the maps must
    // apply Rᵀ to each output ray, as OpenCV's initUndistortRectifyMap does.
    let r = nalgebra::Rotation3::from_euler_angles(1f64.to_radians(), 2f64.to_radians(), 0.0);
    let data: Vec<String> = r
        .matrix()
        .transpose() // column-major storage: the transpose's columns are R's rows
        .iter()
        .map(|x| format!("{x:.12}"))
        .collect();
    let identity = "data: [1.000000, 0.000000, 0.000000, 0.000000, 1.000000, 0.000000, 0.000000, 0.000000, 1.000000]";
    let text =
        std::fs::read_to_string(calibration_file("example_plumb_bob.yaml")).expect("example");
    assert_eq!(text.matches(identity).count(), 1);
    let text = text.replace(identity, &format!("data: [{}]", data.join(", ")));
    let cal = CameraCalibration::from_yaml_str(&text, Path::new("rotated.yaml")).expect("valid");
    assert!((Matrix3::from_row_slice(&cal.r) - r.matrix()).abs().max() < 1e-12);
    undistorts_like_an_ideal_pinhole(&cal, "example_plumb_bob.yaml with R rotated");
}

// ---------------------------------------------------------------------------------------------
// Bad calibrations: one test per case; each message names the file and the field.

/// A valid calibration the bad cases edit.
fn good_yaml() -> &'static str {
    "\
image_width: 640
image_height: 480
camera_name: test_camera
camera_matrix:
  rows: 3
  cols: 3
  data: [500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.1, 0.01, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [480.0, 0.0, 319.5, 0.0, 0.0, 480.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
"
}

/// The error for `good_yaml()` with `from` (which must occur once) replaced by `to`.
fn bad(from: &str, to: &str) -> CalibrationError {
    let good = good_yaml();
    assert_eq!(good.matches(from).count(), 1, "{from:?} must occur once");
    CameraCalibration::from_yaml_str(good, Path::new(BAD_FILE)).expect("the base file is valid");
    let text = good.replacen(from, to, 1);
    CameraCalibration::from_yaml_str(&text, Path::new(BAD_FILE))
        .expect_err("the edited file must be rejected")
}

/// The message names the file and every needle, and the error is the user's to fix.
fn assert_message(e: &CalibrationError, needles: &[&str]) {
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(msg.contains(BAD_FILE), "file name in {msg}");
    for needle in needles {
        assert!(msg.contains(needle), "{needle:?} in {msg}");
    }
    assert!(e.is_bad_input(), "{msg}");
}

#[test]
fn bad_missing_file() {
    let path = calibration_file("does_not_exist.yaml");
    let e = CameraCalibration::load(&path).expect_err("no such file");
    assert!(matches!(e, CalibrationError::Unreadable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("cameracalibrator"), "{msg}");
    assert!(e.is_bad_input());
}

#[test]
fn bad_directory_instead_of_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = CameraCalibration::load(dir.path()).expect_err("a directory");
    assert!(matches!(e, CalibrationError::Unreadable { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&dir.path().display().to_string()),
        "{e}"
    );
}

#[test]
fn bad_yaml_syntax() {
    // An unterminated quoted string.
    let e = bad("camera_name: test_camera", "camera_name: \"test_camera");
    assert!(matches!(e, CalibrationError::Yaml { .. }), "{e:?}");
    assert_message(&e, &["not a camera_calibration YAML file", "line"]);
}

#[test]
fn bad_unknown_field() {
    let e = bad(
        "camera_name: test_camera\n",
        "camera_name: test_camera\nframe_rate: 30\n",
    );
    assert!(matches!(e, CalibrationError::Yaml { .. }), "{e:?}");
    assert_message(&e, &["unknown field `frame_rate`"]);
}

#[test]
fn bad_camera_model_instead_of_distortion_model() {
    let e = bad("distortion_model: plumb_bob", "camera_model: plumb_bob");
    assert_message(
        &e,
        &["camera_model", "rename camera_model to distortion_model"],
    );
}

#[test]
fn bad_missing_field() {
    let e = bad("camera_name: test_camera\n", "");
    assert!(matches!(e, CalibrationError::Yaml { .. }), "{e:?}");
    assert_message(&e, &["missing field `camera_name`"]);
}

#[test]
fn bad_field_type() {
    let e = bad("image_width: 640", "image_width: wide");
    assert!(matches!(e, CalibrationError::Yaml { .. }), "{e:?}");
    assert_message(&e, &["image_width", "wide"]);
}

#[test]
fn bad_matrix_shape() {
    let e = bad(
        "camera_matrix:\n  rows: 3\n  cols: 3",
        "camera_matrix:\n  rows: 3\n  cols: 4",
    );
    assert!(matches!(e, CalibrationError::MatrixSize { .. }), "{e:?}");
    assert_message(
        &e,
        &[
            "camera_matrix has rows 3, cols 4",
            "a 3x3 matrix (9 values) is required",
        ],
    );
}

#[test]
fn bad_matrix_data_length() {
    let e = bad("0.0, 0.0, 1.0, 0.0]\n", "0.0, 0.0, 1.0]\n");
    assert!(matches!(e, CalibrationError::MatrixSize { .. }), "{e:?}");
    assert_message(
        &e,
        &["projection_matrix", "11 values", "a 3x4 matrix (12 values)"],
    );
}

#[test]
fn bad_distortion_shape() {
    let e = bad("  rows: 1\n  cols: 5", "  rows: 5\n  cols: 5");
    assert!(matches!(e, CalibrationError::MatrixSize { .. }), "{e:?}");
    assert_message(
        &e,
        &["distortion_coefficients has rows 5, cols 5 and 5 values"],
    );
}

#[test]
fn bad_zero_focal_length() {
    let e = bad("data: [500.0, 0.0, 319.5", "data: [0.0, 0.0, 319.5");
    assert!(matches!(e, CalibrationError::FocalLength { .. }), "{e:?}");
    assert_message(&e, &["camera_matrix has fx = 0", "> 0"]);
}

#[test]
fn bad_negative_focal_length() {
    let e = bad("0.0, 500.0, 239.5", "0.0, -500.0, 239.5");
    assert!(matches!(e, CalibrationError::FocalLength { .. }), "{e:?}");
    assert_message(&e, &["camera_matrix has fy = -500"]);
}

#[test]
fn bad_non_finite_focal_length() {
    let e = bad("data: [500.0, 0.0, 319.5", "data: [.nan, 0.0, 319.5");
    assert!(matches!(e, CalibrationError::FocalLength { .. }), "{e:?}");
    assert_message(&e, &["camera_matrix has fx = NaN", "finite"]);
}

#[test]
fn bad_projection_focal_length() {
    let e = bad("0.0, 480.0, 239.5", "0.0, -480.0, 239.5");
    assert!(matches!(e, CalibrationError::FocalLength { .. }), "{e:?}");
    assert_message(&e, &["projection_matrix has fy' = -480"]);
}

#[test]
fn bad_principal_point_outside_the_image() {
    let e = bad("data: [500.0, 0.0, 319.5", "data: [500.0, 0.0, 700.0");
    assert!(
        matches!(e, CalibrationError::PrincipalPoint { .. }),
        "{e:?}"
    );
    assert_message(&e, &["camera_matrix", "(700, 239.5)", "640x480"]);
}

#[test]
fn bad_projection_principal_point_outside_the_image() {
    let e = bad("0.0, 480.0, 239.5", "0.0, 480.0, -12.0");
    assert!(
        matches!(e, CalibrationError::PrincipalPoint { .. }),
        "{e:?}"
    );
    assert_message(&e, &["projection_matrix", "(319.5, -12)"]);
}

#[test]
fn bad_non_finite_coefficient() {
    let e = bad("data: [-0.1, 0.01", "data: [.inf, 0.01");
    assert!(matches!(e, CalibrationError::NonFinite { .. }), "{e:?}");
    assert_message(&e, &["distortion_coefficients data[0] (k1) is inf"]);
}

#[test]
fn bad_non_finite_rotation() {
    let e = bad(
        "data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]",
        "data: [1.0, 0.0, 0.0, 0.0, 1.0, .nan, 0.0, 0.0, 1.0]",
    );
    assert!(matches!(e, CalibrationError::NonFinite { .. }), "{e:?}");
    assert_message(&e, &["rectification_matrix data[5] (R[1][2]) is NaN"]);
}

#[test]
fn bad_column_major_camera_matrix() {
    let e = bad(
        "data: [500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0]",
        "data: [500.0, 0.0, 0.0, 0.0, 500.0, 0.0, 319.5, 239.5, 1.0]",
    );
    assert!(matches!(e, CalibrationError::MatrixForm { .. }), "{e:?}");
    assert_message(
        &e,
        &["camera_matrix", "data[6]", "319.5", "column by column"],
    );
}

#[test]
fn bad_rectification_not_a_rotation() {
    let e = bad(
        "data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]",
        "data: [2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0]",
    );
    assert!(matches!(e, CalibrationError::NotARotation { .. }), "{e:?}");
    assert_message(&e, &["rectification_matrix", "det R = 8"]);
}

#[test]
fn bad_unknown_distortion_model() {
    let e = bad(
        "distortion_model: plumb_bob",
        "distortion_model: rational_polynomial",
    );
    assert!(
        matches!(e, CalibrationError::UnknownDistortionModel { .. }),
        "{e:?}"
    );
    assert_message(
        &e,
        &[
            "distortion_model \"rational_polynomial\"",
            "plumb_bob",
            "equidistant",
        ],
    );
}

#[test]
fn bad_coefficient_count_plumb_bob() {
    let e = bad(
        "  cols: 5\n  data: [-0.1, 0.01, 0.0, 0.0, 0.0]",
        "  cols: 4\n  data: [-0.1, 0.01, 0.0, 0.0]",
    );
    assert!(
        matches!(e, CalibrationError::CoefficientCount { .. }),
        "{e:?}"
    );
    assert_message(
        &e,
        &[
            "distortion_model plumb_bob takes 5",
            "but 4 are given",
            "distortion_coefficients",
        ],
    );
}

#[test]
fn bad_coefficient_count_equidistant() {
    let e = bad(
        "distortion_model: plumb_bob",
        "distortion_model: equidistant",
    );
    assert!(
        matches!(e, CalibrationError::CoefficientCount { .. }),
        "{e:?}"
    );
    assert_message(
        &e,
        &[
            "distortion_model equidistant takes exactly 4",
            "but 5 are given",
        ],
    );
}

#[test]
fn bad_zero_image_size() {
    let e = bad("image_height: 480", "image_height: 0");
    assert!(matches!(e, CalibrationError::ImageSize { .. }), "{e:?}");
    assert_message(&e, &["image_width 640 x image_height 0", "between 1 and"]);
}

#[test]
fn bad_image_size_for_the_camera() {
    let cal = CameraCalibration::from_yaml_str(good_yaml(), Path::new(BAD_FILE)).expect("valid");
    cal.check_image_size(640, 480).expect("same size");
    let e = cal.check_image_size(1280, 720).expect_err("other size");
    assert!(
        matches!(e, CalibrationError::ImageSizeMismatch { .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "camera delivers 1280x720 but calibration/bad.yaml is for 640x480; recalibrate or set the \
         camera to 640x480"
    );
    assert!(e.is_bad_input());
}
