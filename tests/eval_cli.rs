//! `eval` end to end on small hand-made inputs: the printed COCO summary, the report files, and
//! bad input (exit 2, the message names the file). Parity with pycocotools, scikit-learn and
//! NumPy on random cases is tests/python/test_eval_parity.py.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::path::Path;

use common::{assert_bad_input, bin};

const ANNOTATIONS: &str = r#"{"images": [{"id": 1, "file_name": "000001.png"}, {"id": 2, "file_name": "000002.png"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
                    {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 200, 100], "area": 20000, "iscrowd": 0}],
    "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "ball"}]}"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn prints_the_coco_summary_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let ann = write(dir.path(), "ann.json", ANNOTATIONS);
    // Image 1: found; image 2: a box of the wrong class.
    let dets = write(
        dir.path(),
        "dets.json",
        r#"[{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 200, 100], "score": 0.8}]"#,
    );
    let out = dir.path().join("out");
    let o = bin(&[
        "eval",
        "--coco",
        &ann,
        "--detections",
        &dets,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // box: AP 1 (less pycocotools' eps, printed as 1.000); ball: AP 0 -> mean 0.5.
    assert!(
        stdout.contains(
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000"
        ),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let ap = report["detection"]["stats"]["AP"].as_f64().unwrap();
    assert!((ap - 0.5).abs() < 1e-12, "{ap}");
    assert_eq!(report["detection"]["per_class"][1]["name"], "ball");
    assert!(out.join("report.md").is_file());
    assert!(out.join("plots/pr_1_box.png").is_file());
    let cmp = bin(&[
        "eval",
        "--compare",
        out.join("report.json").to_str().unwrap(),
        out.join("report.json").to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert!(
        table.contains("| detection.stats.AP | 0.500000 | 0.500000 | +0.000000 |"),
        "{table}"
    );
}

#[test]
fn bad_input_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ann = write(dir.path(), "ann.json", ANNOTATIONS);
    let unknown = write(
        dir.path(),
        "unknown.json",
        r#"[{"image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]"#,
    );
    let o = bin(&["eval", "--coco", &ann, "--detections", &unknown]);
    assert_bad_input(&o, &["unknown.json", "ids 9", "ann.json"]);
    let broken = write(dir.path(), "broken.json", "[{");
    let o = bin(&["eval", "--coco", &ann, "--detections", &broken]);
    assert_bad_input(&o, &["broken.json"]);
    let o = bin(&["eval", "--coco", &broken, "--detections", &unknown]);
    assert_bad_input(&o, &["broken.json", "COCO instances"]);
    let o = bin(&["eval", "--coco", &ann]);
    assert_bad_input(&o, &["--detections", "--predictions"]);
    let o = bin(&["eval", "--compare", &ann, &ann]);
    assert_bad_input(&o, &["ann.json", "report.json"]);
}

#[test]
fn a_mask_of_another_size_names_both_files_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (truth, pred) = (dir.path().join("truth"), dir.path().join("pred"));
    std::fs::create_dir_all(truth.join("masks")).unwrap();
    std::fs::create_dir_all(pred.join("masks")).unwrap();
    let mask = |p: &Path, w: u32, h: u32| {
        image::save_buffer(p, &vec![0u8; (w * h) as usize], w, h, image::ColorType::L8).unwrap()
    };
    mask(&truth.join("masks/a.png"), 8, 6);
    mask(&pred.join("masks/a.png"), 6, 8);
    let o = bin(&[
        "eval",
        "--truth",
        truth.to_str().unwrap(),
        "--predictions",
        pred.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["pred/masks/a.png", "truth/masks/a.png", "6x8", "8x6"]);
}

#[test]
fn running_the_model_over_an_image_folder_scores_what_predict_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pred = dir.path().join("pred");
    let d = data.display().to_string();
    let images = data.join("images").display().to_string();
    let demo = |f: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/demo")
            .join(f)
            .display()
            .to_string()
    };
    let o = bin(&[
        "dataset",
        "synthetic",
        "--out",
        &d,
        "--scenes",
        "1",
        "--frames-per-scene",
        "3",
        "--width",
        "160",
        "--height",
        "120",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bin(&[
        "predict",
        "--model",
        &demo("dinov3_tiny_240x320.onnx"),
        "--heads",
        &demo(""),
        "--images",
        &images,
        "--out",
        &pred.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let via_predict = bin(&[
        "eval",
        "--truth",
        &d,
        "--predictions",
        &pred.display().to_string(),
        "--max-depth",
        "80",
    ]);
    let src = format!("dir:{images}");
    let via_source = bin(&["eval", "--truth", &d, "--source", &src, "--max-depth", "80"]);
    assert!(
        via_source.status.success(),
        "{}",
        String::from_utf8_lossy(&via_source.stderr)
    );
    let text = String::from_utf8_lossy(&via_source.stdout).into_owned();
    assert!(text.contains("detection: 3 images"), "{text}");
    assert!(text.contains("segmentation: mIoU"), "{text}");
    // The same numbers (predict writes no anomaly maps, so only the "not scored" line differs).
    let scored = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("not scored"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        scored(&text),
        scored(&String::from_utf8_lossy(&via_predict.stdout))
    );
}
