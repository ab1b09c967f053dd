//! AnomalyDINO head and memory bank: NumPy reference, coreset, bank files and their errors,
//! references added while running, and `bank build` on the tiny backbone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::path::{Path, PathBuf};

use dinov3_perception::backend::{BackboneOutputs, Backend, OutputTensor};
use dinov3_perception::bank::{build_bank, BankError, BuildBankOptions};
use dinov3_perception::heads::anomaly::{
    bank_paths, greedy_coreset, l2_normalize_rows, max_cosine, naive_max_cosine, top_percent_mean,
    AnomalyHead, CoresetOptions, MemoryBank,
};
use dinov3_perception::heads::{BackboneRef, HeadError, HeadInput, HeadOutput, TaskHead};
use dinov3_perception::model::sha256_file;
use dinov3_perception::npz::{write_npz, NamedArray};
use dinov3_perception::{Features, InputSize, Letterbox, Manifest, ResizeMode};

use common::{fixture, npy};

/// Patch distances and scores against the NumPy float64 reference: float32 sgemm over C=64
/// accumulates ~1e-7 relative error per product, so 1e-5 is two orders of margin.
const NUMPY_TOL: f32 = 1e-5;
/// A patch identical to a bank row (up to normalisation rounding) has distance below this.
const SAME_PATCH_TOL: f32 = 1e-5;

fn tiny_manifest() -> Manifest {
    let path = fixture("tiny/dinov3_tiny.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tiny_size() -> InputSize {
    InputSize {
        height: 64,
        width: 96,
    }
}

fn tiny_ref(m: &Manifest) -> BackboneRef {
    MemoryBank::backbone_ref(m, (4, 6))
}

/// Backbone outputs for the tiny manifest with the given patch tokens `[24, 64]`.
fn outputs(m: &Manifest, patch: &[f32]) -> BackboneOutputs {
    let c = m.hidden_size;
    let p = 24;
    let t = |name: &str, shape: Vec<usize>, data: Vec<f32>| {
        OutputTensor::new(name.into(), shape, Box::new(data)).unwrap()
    };
    let mut tensors = vec![
        t("cls", vec![1, c], vec![0.0; c]),
        t(
            "registers",
            vec![1, m.num_register_tokens, c],
            vec![0.0; m.num_register_tokens * c],
        ),
        t("patch_tokens", vec![1, p, c], patch.to_vec()),
    ];
    for l in &m.layers {
        tensors.push(t(&format!("layer_{l}"), vec![1, p, c], vec![0.0; p * c]));
    }
    BackboneOutputs { tensors }
}

/// Run `head` on one frame of `patch` tokens seen by a `w x h` camera.
fn run_head(
    head: &mut AnomalyHead,
    m: &Manifest,
    patch: &[f32],
    w: usize,
    h: usize,
) -> (f32, Vec<f32>, usize, usize) {
    let outs = outputs(m, patch);
    let features = Features::new(&outs, m, tiny_size()).unwrap();
    let letterbox = Letterbox::plan(w, h, tiny_size(), ResizeMode::Stretch);
    let input = HeadInput {
        features,
        letterbox: &letterbox,
    };
    match head.run(&input).unwrap() {
        HeadOutput::Anomaly(r) => (r.score, r.map.data, r.map.width, r.map.height),
        other => panic!("not an anomaly output: {other:?}"),
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (tol {tol})");
    }
}

fn random_rows(n: usize, c: usize, seed: u64) -> Vec<f32> {
    // Small LCG: the tests need arbitrary data, not a particular generator.
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n * c)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn scores_match_numpy_reference() {
    let dir = fixture("heads/anomaly");
    let (bank_shape, bank_data) = npy(&dir.join("bank.npy"));
    let (tok_shape, tokens) = npy(&dir.join("patch_tokens.npy"));
    let (_, want_d) = npy(&dir.join("distances.npy"));
    let (_, want_scores) = npy(&dir.join("scores.npy"));
    let (_, percents) = npy(&dir.join("top_percents.npy"));
    assert_eq!(bank_shape, vec![300, 64]);
    assert_eq!(tok_shape, vec![1, 24, 64]);

    let m = tiny_manifest();
    let bank = MemoryBank::from_features(tiny_ref(&m), &bank_data).unwrap();
    for threads in [1, 2] {
        let d = bank.patch_distances(&tokens, threads).unwrap();
        assert_close(&d, &want_d, NUMPY_TOL, "patch distances");
        for (p, want) in percents.iter().zip(&want_scores) {
            let got = top_percent_mean(&d, *p);
            assert!(
                (got - want).abs() <= NUMPY_TOL,
                "top {p} %: {got} vs {want}"
            );
        }
    }
    // The planted exact copy (3 x bank row 17) and near copy (row 42 + noise).
    let d = bank.patch_distances(&tokens, 1).unwrap();
    assert!(d[5] < SAME_PATCH_TOL, "exact copy distance {}", d[5]);
    assert!(d[11] < 0.01, "near copy distance {}", d[11]);

    // Through the head: score with the default top 1 % and the map in camera pixels.
    let mut head = AnomalyHead::with_bank("anomaly", bank, m.patch_size, (4, 6));
    let (score, map, w, h) = run_head(&mut head, &m, &tokens, 120, 80);
    assert!(
        (score - want_scores[0]).abs() <= NUMPY_TOL,
        "{score} vs {}",
        want_scores[0]
    );
    assert_eq!((w, h), (120, 80));
    assert_eq!(map.len(), 120 * 80);
    let (lo, hi) = want_d
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    assert!(map
        .iter()
        .all(|&v| v >= lo - NUMPY_TOL && v <= hi + NUMPY_TOL));
    // Corner pixels clamp to the corner patches (bilinear, align_corners=False).
    assert!((map[0] - want_d[0]).abs() <= NUMPY_TOL);
    assert!((map[120 * 80 - 1] - want_d[23]).abs() <= NUMPY_TOL);
}

#[test]
fn blocked_search_matches_the_per_patch_loop() {
    let c = 48;
    let mut bank = random_rows(5000, c, 1);
    let mut q = random_rows(196, c, 2);
    l2_normalize_rows(&mut bank, c);
    l2_normalize_rows(&mut q, c);
    let naive = naive_max_cosine(&bank, &q, c);
    for threads in [1, 2, 0] {
        let blocked = max_cosine(&bank, &q, c, threads).unwrap();
        assert_close(&blocked, &naive, 1e-5, "max cosine");
    }
    assert!(max_cosine(&bank, &q[..c + 1], c, 1).is_err());
}

#[test]
fn coreset_picks_farthest_points() {
    // Two near-duplicates at the origin, far points at (10, 0), (0, 5) and one next to (10, 0).
    let pts = [0.0, 0.0, 0.1, 0.0, 10.0, 0.0, 0.0, 5.0, 9.9, 0.1];
    let opts = CoresetOptions {
        seed: 0,
        projection_dim: None,
        threads: 1,
        start: Some(0),
    };
    // From (0,0): (10,0) is farthest (100 > 98.02); then (0,5) (25 vs 0.02 and 0.01).
    assert_eq!(greedy_coreset(&pts, 2, 3, &opts), vec![0, 2, 3]);
    assert_eq!(greedy_coreset(&pts, 2, 5, &opts), vec![0, 1, 2, 3, 4]);
    // Exact duplicates stop the search instead of being picked twice.
    let dup = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
    assert_eq!(greedy_coreset(&dup, 2, 2, &opts), vec![0, 2]);
    // Same seed, same picks; the start is random but seeded.
    let random_start = CoresetOptions {
        start: None,
        ..opts
    };
    assert_eq!(
        greedy_coreset(&pts, 2, 3, &random_start),
        greedy_coreset(&pts, 2, 3, &random_start)
    );
}

#[test]
fn coreset_with_projection_covers_every_cluster() {
    // Four tight clusters of 50 normalised 384-d vectors; projected to 128 dims, a 4-point
    // coreset takes one point of each cluster.
    let c = 384;
    let centres = random_rows(4, c, 7);
    let noise = random_rows(200, c, 8);
    let mut pts = Vec::with_capacity(200 * c);
    for i in 0..200 {
        let k = i % 4;
        for j in 0..c {
            pts.push(centres[k * c + j] + 0.01 * noise[i * c + j]);
        }
    }
    l2_normalize_rows(&mut pts, c);
    for seed in 0..3 {
        let opts = CoresetOptions {
            seed,
            ..CoresetOptions::default()
        };
        let picked = greedy_coreset(&pts, c, 4, &opts);
        let mut clusters: Vec<usize> = picked.iter().map(|i| i % 4).collect();
        clusters.sort_unstable();
        assert_eq!(clusters, vec![0, 1, 2, 3], "seed {seed}: {picked:?}");
    }
    let mut bank = MemoryBank::from_features(
        BackboneRef {
            hidden_size: c,
            ..tiny_ref(&tiny_manifest())
        },
        &pts,
    )
    .unwrap();
    assert_eq!(bank.subsample(10, &CoresetOptions::default()), 10);
    assert_eq!(bank.coreset().target, 10);
    assert_eq!(bank.coreset().from, 200);
}

#[test]
fn bank_round_trips_through_files() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny_manifest();
    let mut bank = MemoryBank::from_features(tiny_ref(&m), &random_rows(40, 64, 3)).unwrap();
    bank.set_images(2);
    bank.set_top_percent(5.0).unwrap();
    let manifest = bank.save(&tmp.path().join("normal")).unwrap();
    assert_eq!(manifest.npz_file, "normal.bank.npz");
    assert_eq!(manifest.patches, 40);
    for p in ["normal", "normal.bank.json", "normal.bank.npz"] {
        let loaded = MemoryBank::load(&tmp.path().join(p), &m).unwrap();
        assert_eq!(loaded, bank, "{p}");
    }
    // The JSON follows models/HEADS.md field for field.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("normal.bank.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["format"], "dinov3_perception/bank");
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["backbone"]["grid"], serde_json::json!([4, 6]));
    assert_eq!(
        json["coreset"],
        serde_json::json!({"target": 40, "from": 40})
    );
    assert_eq!(json["top_percent"], 5.0);
    assert_eq!(
        json["npz_sha256"],
        sha256_file(&tmp.path().join("normal.bank.npz")).unwrap()
    );
}

/// Write a bank whose npz holds `features [rows, cols]` and whose JSON is `edit`ed afterwards;
/// the JSON's sha256 matches the npz unless `edit` changes it.
fn write_bank(
    dir: &Path,
    rows: usize,
    cols: usize,
    data: &[f32],
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let (json, npz) = bank_paths(&dir.join("b"));
    write_npz(
        &npz,
        &[NamedArray {
            name: "features",
            shape: &[rows, cols],
            data,
        }],
    )
    .unwrap();
    let m = tiny_manifest();
    let mut v = serde_json::json!({
        "format": "dinov3_perception/bank",
        "format_version": 1,
        "backbone": tiny_ref(&m),
        "npz_file": "b.bank.npz",
        "npz_sha256": sha256_file(&npz).unwrap(),
        "patches": rows,
        "images": 1,
        "coreset": {"target": rows, "from": rows},
        "top_percent": 1.0
    });
    edit(&mut v);
    std::fs::write(&json, serde_json::to_string(&v).unwrap()).unwrap();
    json
}

fn load_err(path: &Path) -> String {
    let m = tiny_manifest();
    let e = AnomalyHead::load("anomaly", path, &m, (4, 6)).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    e.to_string()
}

fn normalised(rows: usize, c: usize, seed: u64) -> Vec<f32> {
    let mut v = random_rows(rows, c, seed);
    l2_normalize_rows(&mut v, c);
    v
}

#[test]
fn empty_bank_is_refused_with_build_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let json = write_bank(tmp.path(), 0, 64, &[], |_| {});
    let msg = load_err(&json);
    assert!(msg.contains("b.bank.json"), "{msg}");
    assert!(msg.contains("empty (0 patches)"), "{msg}");
    assert!(msg.contains("dinov3_perception bank build"), "{msg}");
    // Saving an empty bank is refused too.
    let e = MemoryBank::new(tiny_ref(&tiny_manifest()))
        .save(&tmp.path().join("e"))
        .unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn bank_of_another_backbone_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = normalised(10, 64, 4);
    let json = write_bank(tmp.path(), 10, 64, &data, |v| {
        v["backbone"]["onnx_sha256"] = "0123456789ab".repeat(5).into();
    });
    let msg = load_err(&json);
    assert!(
        msg.contains("b.bank.json was made for another backbone"),
        "{msg}"
    );
    assert!(msg.contains("sha256"), "{msg}");
    assert!(msg.contains("0123456789ab"), "{msg}");
    assert!(msg.contains("bank build"), "{msg}");
    assert!(matches!(
        MemoryBank::load(&json, &tiny_manifest()),
        Err(HeadError::BackboneMismatch { .. })
    ));

    // A bank of 32-dimensional rows against the 64-dimensional tiny backbone.
    let tmp = tempfile::tempdir().unwrap();
    let data = normalised(10, 32, 4);
    let json = write_bank(tmp.path(), 10, 32, &data, |v| {
        v["backbone"]["hidden_size"] = 32.into();
    });
    let msg = load_err(&json);
    assert!(
        msg.contains("the feature dimension is 32 in the head but 64"),
        "{msg}"
    );
}

#[test]
fn bank_works_at_another_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let data = normalised(10, 64, 5);
    let json = write_bank(tmp.path(), 10, 64, &data, |v| {
        v["backbone"]["grid"] = serde_json::json!([14, 14]);
    });
    let m = tiny_manifest();
    let mut head = AnomalyHead::load("anomaly", &json, &m, (4, 6)).unwrap();
    let (score, _, _, _) = run_head(&mut head, &m, &random_rows(24, 64, 6), 96, 64);
    assert!(score.is_finite());
}

#[test]
fn corrupt_bank_files_are_refused() {
    let good = normalised(10, 64, 9);
    let case = |rows: usize,
                cols: usize,
                data: &[f32],
                edit: &dyn Fn(&mut serde_json::Value),
                after: &dyn Fn(&Path),
                want: &[&str]| {
        let tmp = tempfile::tempdir().unwrap();
        let json = write_bank(tmp.path(), rows, cols, data, edit);
        after(tmp.path());
        let msg = load_err(&json);
        for w in want {
            assert!(msg.contains(w), "expected {w:?} in: {msg}");
        }
    };
    let none = |_: &mut serde_json::Value| {};
    let nothing = |_: &Path| {};

    // Missing manifest.
    let tmp = tempfile::tempdir().unwrap();
    let msg = load_err(&tmp.path().join("missing.bank.json"));
    assert!(
        msg.contains("missing.bank.json") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(msg.contains("bank build"), "{msg}");

    // Manifest that is not JSON / has unknown fields / wrong format.
    case(
        10,
        64,
        &good,
        &none,
        &|d| std::fs::write(d.join("b.bank.json"), "{\"format\": ").unwrap(),
        &["b.bank.json", "not a memory bank manifest", "bank build"],
    );
    case(
        10,
        64,
        &good,
        &|v| v["extra"] = 1.into(),
        &nothing,
        &["unknown field", "extra"],
    );
    case(
        10,
        64,
        &good,
        &|v| v["format"] = "dinov3_perception/head".into(),
        &nothing,
        &["is not \"dinov3_perception/bank\""],
    );
    case(
        10,
        64,
        &good,
        &|v| v["top_percent"] = 0.0.into(),
        &nothing,
        &["top_percent 0"],
    );

    // Missing npz.
    case(
        10,
        64,
        &good,
        &none,
        &|d| std::fs::remove_file(d.join("b.bank.npz")).unwrap(),
        &["b.bank.npz", "do not exist"],
    );
    // Truncated npz: sha256 mismatch names both files.
    case(
        10,
        64,
        &good,
        &none,
        &|d| {
            let p = d.join("b.bank.npz");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        },
        &[
            "b.bank.npz: sha256 is",
            "b.bank.json says",
            "modified, truncated or replaced",
            "bank build",
        ],
    );
    // Garbage npz whose sha256 is recorded: not an archive.
    case(
        10,
        64,
        &good,
        &|v| v["npz_sha256"] = sha256_of(b"not a zip").into(),
        &|d| std::fs::write(d.join("b.bank.npz"), b"not a zip").unwrap(),
        &["not a valid .npz archive"],
    );
    // Rows of the wrong dimension.
    case(
        10,
        63,
        &normalised(10, 63, 1),
        &none,
        &nothing,
        &["rows have dimension 63", "hidden size 64"],
    );
    // Row count differs from the manifest.
    case(
        10,
        64,
        &good,
        &|v| v["patches"] = 11.into(),
        &nothing,
        &["has 10 rows but the manifest says 11"],
    );
    // Non-finite values.
    let mut nan = good.clone();
    nan[3 * 64 + 5] = f32::NAN;
    case(
        10,
        64,
        &nan,
        &none,
        &nothing,
        &["row 3 holds a non-finite value"],
    );
    // Rows that are not normalised.
    let mut big = good.clone();
    big[2 * 64] += 1.0;
    case(
        10,
        64,
        &big,
        &none,
        &nothing,
        &["row 2 has L2 norm", "L2-normalised"],
    );
}

fn sha256_of(bytes: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), bytes).unwrap();
    sha256_file(tmp.path()).unwrap()
}

#[test]
fn add_references_makes_identical_patch_distance_zero() {
    let m = tiny_manifest();
    let bank = MemoryBank::from_features(tiny_ref(&m), &random_rows(50, 64, 10)).unwrap();
    let mut head = AnomalyHead::with_bank("anomaly", bank, m.patch_size, (4, 6));
    head.set_threads(1);
    let frame = random_rows(24, 64, 11);
    let before = head.patch_distances(&frame).unwrap();
    assert!(before.iter().all(|&d| d > 0.1), "{before:?}");
    // Patch 7 of this frame, at another scale, becomes a reference.
    let reference: Vec<f32> = frame[7 * 64..8 * 64].iter().map(|v| v * 4.0).collect();
    assert_eq!(head.add_references(&reference).unwrap(), 1);
    assert_eq!(head.bank().len(), 51);
    let after = head.patch_distances(&frame).unwrap();
    assert!(after[7] < SAME_PATCH_TOL, "{}", after[7]);
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        assert!(a <= b, "patch {i}: {a} > {b}");
    }
    // Wrong-sized references are an error naming the head.
    let e = head.add_references(&[1.0; 65]).unwrap_err();
    assert!(e.to_string().starts_with("head anomaly:"), "{e}");
    // An empty bank cannot score.
    let mut empty = AnomalyHead::with_bank("anomaly", MemoryBank::new(tiny_ref(&m)), 16, (4, 6));
    assert!(empty
        .patch_distances(&frame)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    empty.add_references(&frame).unwrap();
    assert!(empty
        .patch_distances(&frame)
        .unwrap()
        .iter()
        .all(|&d| d < SAME_PATCH_TOL));
}

#[test]
fn learner_adds_frames_while_running() {
    let m = tiny_manifest();
    let bank = MemoryBank::from_features(tiny_ref(&m), &random_rows(50, 64, 12)).unwrap();
    let mut head = AnomalyHead::with_bank("anomaly", bank, m.patch_size, (4, 6));
    let learner = head.learner();
    let frame = random_rows(24, 64, 13);
    let (first, _, _, _) = run_head(&mut head, &m, &frame, 96, 64);
    assert!(first > 0.1);
    // Learn the next frame: it is scored against the old bank, then added.
    learner.learn_next_frames(1);
    let (second, _, _, _) = run_head(&mut head, &m, &frame, 96, 64);
    assert!((second - first).abs() < 1e-6);
    assert_eq!(learner.pending_frames(), 0);
    assert_eq!(head.bank().len(), 74);
    let (third, map, _, _) = run_head(&mut head, &m, &frame, 96, 64);
    assert!(third < SAME_PATCH_TOL, "{third}");
    assert!(map.iter().all(|&v| v < SAME_PATCH_TOL));
    // Tokens queued from another thread are added before the next frame is scored.
    let other = random_rows(24, 64, 14);
    let l = learner.clone();
    let queued = other.clone();
    std::thread::spawn(move || l.queue(&queued)).join().unwrap();
    let (fourth, _, _, _) = run_head(&mut head, &m, &other, 96, 64);
    assert!(fourth < SAME_PATCH_TOL, "{fourth}");
    assert_eq!(head.bank().len(), 98);
}

fn write_images(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([
                (x * 2 + i as u32 * 40) as u8,
                (y * 3) as u8,
                ((x + y) * (i as u32 + 1)) as u8,
            ])
        });
        img.save(dir.join(format!("{i:03}.png"))).unwrap();
    }
}

#[test]
fn build_bank_from_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("normal");
    write_images(&images, 3);
    std::fs::write(images.join("002_corrupt.png"), b"not a png").unwrap();
    std::fs::write(images.join("notes.txt"), b"ignored").unwrap();
    let model = fixture("tiny/dinov3_tiny.onnx");

    // All patches: a training image then scores ~0 everywhere.
    let mut opts = BuildBankOptions::new(&model, &images, tmp.path().join("out/normal"));
    opts.progress = false;
    opts.backend.threads = 1;
    let s = build_bank(&opts).unwrap();
    assert_eq!(s.images_used, 3);
    assert_eq!(s.images_skipped(), 1);
    assert!(s.skipped[0].0.ends_with("002_corrupt.png"));
    assert_eq!(s.patches_collected, 72);
    assert_eq!(s.patches_kept, 72);
    assert_eq!(s.json, tmp.path().join("out/normal.bank.json"));
    assert!(s.npz.exists());
    assert!(!s.line().is_empty());
    let m = tiny_manifest();
    let bank = MemoryBank::load(&s.json, &m).unwrap();
    assert_eq!(bank.images(), 3);
    assert_eq!(bank.coreset().target, 72);

    // Score 001.png through the real backbone: every patch is in the bank.
    let model_file = dinov3_perception::BackboneModel::load(&model).unwrap();
    let backend = dinov3_perception::backend::tract::TractBackend::new(1);
    let prepared = backend.prepare(&model_file, tiny_size()).unwrap();
    let mut session = prepared.session().unwrap();
    let img = dinov3_perception::image_io::load_rgb(&images.join("001.png")).unwrap();
    let mut pre =
        dinov3_perception::Preprocessor::new(&m, tiny_size(), ResizeMode::Stretch).unwrap();
    let (input, _) = pre.run(&img.view()).unwrap();
    let outs = session.run(&input).unwrap();
    let features = Features::new(&outs, &m, tiny_size()).unwrap();
    let d = bank
        .patch_distances(features.patch_grid().as_slice(), 1)
        .unwrap();
    assert!(d.iter().all(|&v| v < 1e-4), "{d:?}");

    // With a limit: coreset keeps 30 of 72.
    opts.out = tmp.path().join("small.bank.json");
    opts.max_patches = Some(30);
    let s = build_bank(&opts).unwrap();
    assert_eq!((s.patches_collected, s.patches_kept), (72, 30));
    let bank = MemoryBank::load(&s.json, &m).unwrap();
    assert_eq!(bank.len(), 30);
    assert_eq!((bank.coreset().target, bank.coreset().from), (30, 72));
}

#[test]
fn build_bank_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny/dinov3_tiny.onnx");
    let out = tmp.path().join("b");
    let run = |images: &Path, max: Option<usize>| {
        let mut o = BuildBankOptions::new(&model, images, &out);
        o.progress = false;
        o.backend.threads = 1;
        o.max_patches = max;
        build_bank(&o).unwrap_err()
    };
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = run(&empty, None);
    assert!(matches!(e, BankError::NoImages { .. }), "{e}");
    assert!(e.to_string().contains("--images"), "{e}");
    assert!(e.is_bad_input(), "{e}");

    let corrupt = tmp.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("a.png"), b"nope").unwrap();
    std::fs::write(corrupt.join("b.jpg"), b"nope").unwrap();
    let e = run(&corrupt, None);
    assert!(
        matches!(e, BankError::NoUsableImages { count: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("a.png"), "{e}");

    let e = run(&tmp.path().join("nowhere"), None);
    assert!(e.to_string().contains("does not exist"), "{e}");

    let e = run(&empty, Some(0));
    assert!(e.to_string().contains("--max-patches 0"), "{e}");
    assert!(!out.with_extension("bank.json").exists());
}
