//! Heads in Rust vs PyTorch on the same features: raw head outputs and upsampled logits / depth
//! within `HEAD_MAX_ABS`; detection boxes after decode + NMS identical to the Python reference
//! (same candidates in the same order, coordinates within the tolerance); NMS on fixed cases
//! (ties, identical boxes, IoU at the threshold, empty input) equal to the reference rule.
//!
//! Fixtures: `tests/fixtures/heads/tiny/` (heads for the tiny fixture backbone, made by
//! `models/train_heads.py export-random ... --reference`) and `tests/fixtures/heads/nms_cases.json`
//! (`models/make_nms_cases.py`); see `tests/fixtures/regen.sh`.
//!
//! Each head runs on tract and, in a build with the `onnxruntime` feature, on ONNX Runtime too
//! (`onnxruntime.heads:=true`), against the same references.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, npy};
use dinov3_perception::backend::{BackboneOutputs, OutputTensor};
use dinov3_perception::heads::classification::ClassificationHead;
use dinov3_perception::heads::depth::DepthHead;
use dinov3_perception::heads::detection::{decode, nms, Candidate, DetectionHead};
use dinov3_perception::heads::onnx::{load_onnx_head, GraphRuntime, HeadGraph};
use dinov3_perception::heads::segmentation::SegmentationHead;
use dinov3_perception::heads::upsample::Upsampler;
use dinov3_perception::heads::{HeadInput, HeadOutput, TaskHead};
use dinov3_perception::model::{InputSize, Manifest};
use dinov3_perception::preprocess::{Letterbox, ResizeMode};
use dinov3_perception::tolerance::{compare, HEAD_MAX_ABS};
use dinov3_perception::{BackboneModel, Features};
use serde_json::Value;

/// Where the head graphs run: tract, and with the `onnxruntime` feature also ONNX Runtime's CPU
/// provider (`onnxruntime.heads:=true`; the library from `ORT_DYLIB_PATH`).
fn runtimes() -> Vec<GraphRuntime> {
    #[allow(unused_mut, reason = "one entry without the onnxruntime feature")]
    let mut out = vec![GraphRuntime::Tract];
    #[cfg(feature = "onnxruntime")]
    {
        use dinov3_perception::backend::onnxruntime::SessionFactory;
        use dinov3_perception::backend::settings::BackendSettings;
        out.push(GraphRuntime::OnnxRuntime(SessionFactory::new(
            &BackendSettings::tract(1),
            std::sync::Arc::new(|_: &str| {}),
        )));
    }
    out
}

fn heads_dir() -> PathBuf {
    fixture("heads/tiny")
}

fn reference(task: &str) -> PathBuf {
    heads_dir().join("reference").join(task)
}

fn backbone() -> Manifest {
    BackboneModel::load(&fixture("tiny/dinov3_tiny.onnx"))
        .expect("tiny fixture backbone")
        .manifest
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Backbone outputs rebuilt from the reference inputs of a head (grids `[1,C,h,w]` back to
/// tokens `[1,h*w,C]`); outputs the head does not read are zeros.
fn outputs_for(task: &str, m: &Manifest) -> BackboneOutputs {
    let (h, w) = (
        m.input_height.unwrap() / m.patch_size,
        m.input_width.unwrap() / m.patch_size,
    );
    let c = m.hidden_size;
    let dir = reference(task);
    let tokens = |name: &str| -> Vec<f32> {
        let path = dir.join(format!("{name}.npy"));
        if !path.exists() {
            return vec![0.0; h * w * c];
        }
        let (shape, chw) = npy(&path);
        assert_eq!(shape, [1, c, h, w], "{}", path.display());
        let mut out = vec![0.0; h * w * c];
        for ch in 0..c {
            for p in 0..h * w {
                out[p * c + ch] = chw[ch * h * w + p];
            }
        }
        out
    };
    let cls = {
        let path = dir.join("cls.npy");
        if path.exists() {
            npy(&path).1
        } else {
            vec![0.0; c]
        }
    };
    let mut tensors = vec![
        OutputTensor::new("cls".into(), vec![1, c], Box::new(cls)).unwrap(),
        OutputTensor::new(
            "registers".into(),
            vec![1, m.num_register_tokens, c],
            Box::new(vec![0.0f32; m.num_register_tokens * c]),
        )
        .unwrap(),
        OutputTensor::new(
            "patch_tokens".into(),
            vec![1, h * w, c],
            Box::new(tokens("patch_tokens")),
        )
        .unwrap(),
    ];
    for layer in &m.layers {
        let name = format!("layer_{layer}");
        tensors.push(
            OutputTensor::new(name.clone(), vec![1, h * w, c], Box::new(tokens(&name))).unwrap(),
        );
    }
    BackboneOutputs { tensors }
}

fn size(m: &Manifest) -> InputSize {
    InputSize {
        height: m.input_height.unwrap(),
        width: m.input_width.unwrap(),
    }
}

fn grid(m: &Manifest) -> (usize, usize) {
    (
        m.input_height.unwrap() / m.patch_size,
        m.input_width.unwrap() / m.patch_size,
    )
}

/// The letterbox of the reference's upsampled size (stretched, as the heads were trained).
fn letterbox(task: &str, m: &Manifest) -> Letterbox {
    let meta = json(&reference(task).join("reference.json"));
    let up = meta["upsampled_size"]
        .as_array()
        .map(|a| {
            (
                a[0].as_u64().unwrap() as usize,
                a[1].as_u64().unwrap() as usize,
            )
        })
        .unwrap_or((480, 640));
    Letterbox::plan(up.1, up.0, size(m), ResizeMode::Stretch)
}

fn check(name: &str, rust: &[f32], torch_path: &Path) {
    let (_, torch) = npy(torch_path);
    let r = compare(rust, &torch).unwrap_or_else(|| {
        panic!(
            "{name}: {} values vs {} in PyTorch",
            rust.len(),
            torch.len()
        )
    });
    println!("{name}: {r} over {} values", torch.len());
    assert!(
        r.max_abs <= HEAD_MAX_ABS && r.non_finite == 0,
        "{name}: {r} (tolerance {HEAD_MAX_ABS})"
    );
}

#[test]
fn segmentation_logits_and_upsampled_logits_match_pytorch() {
    for rt in runtimes() {
        eprintln!("head graphs on {}", rt.name());
        segmentation_logits_and_upsampled_logits_match_pytorch_on(&rt);
    }
}

fn segmentation_logits_and_upsampled_logits_match_pytorch_on(rt: &GraphRuntime) {
    let m = backbone();
    let outputs = outputs_for("segmentation", &m);
    let features = Features::new(&outputs, &m, size(&m)).unwrap();
    let lb = letterbox("segmentation", &m);
    let input = HeadInput {
        features,
        letterbox: &lb,
    };
    let mut head: SegmentationHead = load_onnx_head(
        "segmentation",
        &heads_dir().join("segmentation.onnx"),
        &m,
        grid(&m),
        rt,
    )
    .unwrap();
    let logits = head.logits(&input).unwrap();
    check(
        "segmentation logits",
        &logits,
        &reference("segmentation").join("logits.npy"),
    );
    let k = head.class_names().len();
    let up = Upsampler::new(&lb, grid(&m), m.patch_size).planes(&logits, k);
    check(
        "segmentation logits upsampled",
        &up,
        &reference("segmentation").join("logits_upsampled.npy"),
    );
    // The class map is the argmax of the upsampled logits.
    let (_, torch_up) = npy(&reference("segmentation").join("logits_upsampled.npy"));
    let n = lb.image_width * lb.image_height;
    let HeadOutput::Segmentation(map) = head.run(&input).unwrap() else {
        panic!("not a class map")
    };
    let mut disagree = 0;
    for p in 0..n {
        let best = (0..k)
            .max_by(|&a, &b| {
                torch_up[a * n + p]
                    .total_cmp(&torch_up[b * n + p])
                    .then(b.cmp(&a))
            })
            .unwrap();
        let margin = (0..k)
            .filter(|&c| c != best)
            .map(|c| torch_up[best * n + p] - torch_up[c * n + p])
            .fold(f32::INFINITY, f32::min);
        // Only pixels whose top two logits are closer than the tolerance may differ.
        if map.class_ids[p] as usize != best && margin > 2.0 * HEAD_MAX_ABS {
            disagree += 1;
        }
    }
    assert_eq!(
        disagree, 0,
        "class ids differ from the argmax of PyTorch's logits"
    );
    assert_eq!(map.color.len(), n * 3);
}

#[test]
fn depth_matches_pytorch() {
    for rt in runtimes() {
        eprintln!("head graphs on {}", rt.name());
        depth_matches_pytorch_on(&rt);
    }
}

fn depth_matches_pytorch_on(rt: &GraphRuntime) {
    let m = backbone();
    let outputs = outputs_for("depth", &m);
    let features = Features::new(&outputs, &m, size(&m)).unwrap();
    let lb = letterbox("depth", &m);
    let input = HeadInput {
        features,
        letterbox: &lb,
    };
    let mut head: DepthHead =
        load_onnx_head("depth", &heads_dir().join("depth.onnx"), &m, grid(&m), rt).unwrap();
    let depth = head.patch_depth(&input).unwrap();
    check("depth", &depth, &reference("depth").join("depth.npy"));
    let HeadOutput::Depth(img) = head.run(&input).unwrap() else {
        panic!("not a depth image")
    };
    check(
        "depth upsampled",
        &img.data,
        &reference("depth").join("depth_upsampled.npy"),
    );
}

#[test]
fn classification_logits_match_pytorch() {
    for rt in runtimes() {
        eprintln!("head graphs on {}", rt.name());
        classification_logits_match_pytorch_on(&rt);
    }
}

fn classification_logits_match_pytorch_on(rt: &GraphRuntime) {
    let m = backbone();
    let outputs = outputs_for("classification", &m);
    let features = Features::new(&outputs, &m, size(&m)).unwrap();
    let lb = letterbox("classification", &m);
    let input = HeadInput {
        features,
        letterbox: &lb,
    };
    let mut head: ClassificationHead = load_onnx_head(
        "classification",
        &heads_dir().join("classification.onnx"),
        &m,
        grid(&m),
        rt,
    )
    .unwrap();
    let logits = head.logits(&input).unwrap();
    check(
        "classification logits",
        &logits,
        &reference("classification").join("logits.npy"),
    );
    let HeadOutput::Classification(top) = head.run(&input).unwrap() else {
        panic!("not labels")
    };
    let best = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(top[0].class_id, best);
    assert!(top.windows(2).all(|p| p[0].score >= p[1].score));
}

#[test]
fn detection_boxes_after_nms_are_identical_to_pytorch() {
    for rt in runtimes() {
        eprintln!("head graphs on {}", rt.name());
        detection_boxes_after_nms_are_identical_to_pytorch_on(&rt);
    }
}

fn detection_boxes_after_nms_are_identical_to_pytorch_on(rt: &GraphRuntime) {
    let m = backbone();
    let outputs = outputs_for("detection", &m);
    let features = Features::new(&outputs, &m, size(&m)).unwrap();
    // Boxes are compared in model-input pixels: an identity letterbox.
    let lb = Letterbox::plan(
        size(&m).width,
        size(&m).height,
        size(&m),
        ResizeMode::Stretch,
    );
    let input = HeadInput {
        features,
        letterbox: &lb,
    };
    let onnx = heads_dir().join("detection.onnx");
    let mut graph = HeadGraph::load_on(&onnx, &m, grid(&m), &["scores", "boxes"], rt).unwrap();
    let raw = graph.run(&input, "detection").unwrap();
    check(
        "detection scores",
        &raw[0].data,
        &reference("detection").join("scores.npy"),
    );
    check(
        "detection boxes",
        &raw[1].data,
        &reference("detection").join("boxes.npy"),
    );
    let reference = json(&reference("detection").join("detections.json"));
    let cfg = &reference["config"];
    let k = graph.manifest.class_names.len();
    let cands = decode(
        &raw[0].data,
        &raw[1].data,
        k,
        grid(&m),
        m.patch_size,
        cfg["score_threshold"].as_f64().unwrap(),
    );
    let keep = nms(
        &cands,
        cfg["nms_iou_threshold"].as_f64().unwrap(),
        cfg["pre_nms_top_k"].as_u64().unwrap() as usize,
        cfg["max_detections"].as_u64().unwrap() as usize,
    );
    let expected = reference["detections"].as_array().unwrap();
    println!("detection: {} candidates, {} kept", cands.len(), keep.len());
    assert_eq!(keep.len(), expected.len(), "number of boxes after NMS");
    assert!(!expected.is_empty(), "the fixture should keep some boxes");
    for (i, e) in keep.iter().zip(expected) {
        let c = &cands[*i];
        assert_eq!(c.class_id as u64, e["class_id"].as_u64().unwrap());
        let eb: Vec<f32> = e["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (a, b) in c.bbox.iter().zip(&eb) {
            assert!(
                (a - b).abs() <= HEAD_MAX_ABS * 100.0,
                "box {:?} vs {eb:?}",
                c.bbox
            );
        }
        assert!((c.score - e["score"].as_f64().unwrap() as f32).abs() <= HEAD_MAX_ABS);
    }
    // The full head maps the same boxes to camera pixels (identity here).
    let mut head: DetectionHead = load_onnx_head("detection", &onnx, &m, grid(&m), rt).unwrap();
    let HeadOutput::Detections(dets) = head.run(&input).unwrap() else {
        panic!("not detections")
    };
    assert_eq!(dets.len(), expected.len());
}

#[test]
fn nms_fixed_cases_equal_the_reference_rule() {
    let cases = json(&fixture("heads/nms_cases.json"));
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let thr = case["score_threshold"].as_f64().unwrap();
        let scores = case["scores"].as_array().unwrap();
        let boxes = case["boxes"].as_array().unwrap();
        let classes = case["classes"].as_array().unwrap();
        // Keep the original indices of the candidates above the threshold.
        let mut index = Vec::new();
        let mut cands = Vec::new();
        for (i, ((s, b), k)) in scores.iter().zip(boxes).zip(classes).enumerate() {
            let score = s.as_f64().unwrap() as f32;
            if f64::from(score) < thr {
                continue;
            }
            let b: Vec<f32> = b
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            index.push(i as u64);
            cands.push(Candidate {
                class_id: k.as_u64().unwrap() as usize,
                score,
                bbox: [b[0], b[1], b[2], b[3]],
            });
        }
        let keep: Vec<u64> = nms(
            &cands,
            case["iou_threshold"].as_f64().unwrap(),
            case["pre_nms_top_k"].as_u64().unwrap() as usize,
            case["max_detections"].as_u64().unwrap() as usize,
        )
        .into_iter()
        .map(|i| index[i])
        .collect();
        let expected: Vec<u64> = case["expected_keep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(keep, expected, "case {name}");
    }
}
