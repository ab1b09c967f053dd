"""Tests of models/train_heads.py, models/heads_lib.py and the NMS cases fixture.

Everything runs on a tiny synthetic dataset made on the fly against the committed tiny backbone
(tests/fixtures/tiny/dinov3_tiny.onnx: 64x96 input, grid 4x6, C=64, layers [1, 2]).

Run: .venv/bin/python -m pytest tests/python -q
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
sys.path.insert(0, str(REPO / "models"))

import export_backbone as eb  # noqa: E402
import heads_lib as hl  # noqa: E402
import make_nms_cases  # noqa: E402
import train_heads  # noqa: E402

TINY = FIXTURES / "tiny" / "dinov3_tiny.onnx"
TINY_MANIFEST = json.loads(TINY.with_suffix(".json").read_text())
GRID = (4, 6)
C = 64
CLASSES = ["box", "ball", "cone"]
COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 70, 230)}
MANIFEST_KEYS = {
    "format", "format_version", "task", "onnx_file", "onnx_sha256", "backbone", "inputs", "class_names",
    "detection", "segmentation", "depth", "classification", "training",
}
ALL_TASKS = "detection,segmentation,depth,classification"


# --------------------------------------------------------------------------------------------
# Synthetic dataset (HEADS.md layout)
# --------------------------------------------------------------------------------------------


def make_dataset(root: Path, n: int, seed: int, size: tuple[int, int] = (56, 84)) -> Path:
    """``n`` images with 1-3 coloured rectangles: images/, annotations.json (category ids 1..3),
    masks/ (class ids, a 255 border), depth/ (.npy for even, 16-bit .png for odd stems, some
    invalid pixels) and classes/{reddish,bluish}/."""
    rng = np.random.default_rng(seed)
    h, w = size
    for sub in ("images", "masks", "depth", "classes/reddish", "classes/bluish"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}
    ann_id = 1
    for k in range(n):
        stem = f"{k:06d}"
        img = np.full((h, w, 3), 90, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        depth = np.full((h, w), 8.0, np.float32) + np.linspace(0, 2, w, dtype=np.float32)[None]
        for _ in range(int(rng.integers(1, 4))):
            cls = int(rng.integers(1, 4))
            bw, bh = int(rng.integers(6, 30)), int(rng.integers(6, 24))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            img[y0:y0 + bh, x0:x0 + bw] = COLOURS[cls]
            mask[y0:y0 + bh, x0:x0 + bw] = cls
            depth[y0:y0 + bh, x0:x0 + bw] = 1.0 + cls
            coco["annotations"].append(
                {"id": ann_id, "image_id": k + 1, "category_id": cls, "bbox": [x0, y0, bw, bh], "area": bw * bh, "iscrowd": 0}
            )
            ann_id += 1
        mask[0, :] = 255
        depth[-1, :5] = 0.0
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
        if k % 2 == 0:
            np.save(root / "depth" / f"{stem}.npy", depth)
        else:
            Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(root / "depth" / f"{stem}.png")
        coco["images"].append({"id": k + 1, "file_name": f"{stem}.png", "height": h, "width": w})
        label = "reddish" if k % 2 == 0 else "bluish"
        tint = np.zeros((h, w, 3), np.uint8)
        tint[..., 0 if label == "reddish" else 2] = 200
        tint += rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        Image.fromarray(tint).save(root / "classes" / label / f"{stem}.png")
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to busy-waiting when other jobs
    (cargo) share the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("heads")
    return {
        "base": base,
        "train": make_dataset(base / "train", 8, seed=1),
        "val": make_dataset(base / "val", 3, seed=2),
    }


@pytest.fixture(scope="module")
def trained(data: dict[str, Path]) -> dict[str, Path]:
    out, ref, cache = data["base"] / "out", data["base"] / "ref", data["base"] / "cache"
    rc = train_heads.main([
        "--backbone", str(TINY), "--dataset", str(data["train"]), "--val", str(data["val"]),
        "--tasks", ALL_TASKS, "--out", str(out), "--epochs", "3", "--cache", str(cache),
        "--reference", str(ref), "--reference-size", "48x80", "--depth-bins", "32", "--det-width", "32",
    ])
    assert rc == 0
    return {"out": out, "ref": ref, "cache": cache}


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {i.name: feeds[i.name] for i in sess.get_inputs()})))


def dims(v: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in v.type.tensor_type.shape.dim]


# --------------------------------------------------------------------------------------------
# Trained heads: files, graphs, manifests, references
# --------------------------------------------------------------------------------------------


EXPECTED = {
    # task: (inputs, {output: shape})
    "detection": (["patch_tokens"], {"scores": [1, 3, 4, 6], "boxes": [1, 4, 4, 6]}),
    "segmentation": (["patch_tokens"], {"logits": [1, 4, 4, 6]}),
    "depth": (["patch_tokens", "layer_1"], {"depth": [1, 1, 4, 6]}),
    "classification": (["cls", "patch_tokens"], {"logits": [1, 2]}),
}


@pytest.mark.parametrize("task", list(EXPECTED))
def test_exported_graph(trained: dict[str, Path], task: str) -> None:
    model = onnx.load(str(trained["out"] / f"{task}.onnx"))
    onnx.checker.check_model(model)
    assert eb.count_if_nodes(model) == 0
    assert [(o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] == [("", 18)]
    inputs, outputs = EXPECTED[task]
    assert [i.name for i in model.graph.input] == inputs
    for i in model.graph.input:
        assert dims(i) == ([1, C] if i.name == "cls" else [1, C, *GRID])
    assert {o.name: dims(o) for o in model.graph.output} == outputs
    assert [o.name for o in model.graph.output] == list(outputs)
    ops = {n.op_type for n in model.graph.node}
    assert "Identity" not in ops
    if task == "detection":
        assert "Sigmoid" in ops
    if task == "depth":
        assert "Softmax" in ops
    if task == "classification":
        assert {"ReduceMean", "Concat"} <= ops


@pytest.mark.parametrize("task", list(EXPECTED))
def test_manifest(trained: dict[str, Path], task: str) -> None:
    path = trained["out"] / f"{task}.json"
    text = path.read_text()
    m = json.loads(text)
    assert set(m) == MANIFEST_KEYS
    assert text == json.dumps(m, indent=2, sort_keys=True) + "\n"
    assert m["format"] == "dinov3_perception/head" and m["format_version"] == 1
    assert m["task"] == task and m["onnx_file"] == f"{task}.onnx"
    assert m["onnx_sha256"] == hashlib.sha256((trained["out"] / f"{task}.onnx").read_bytes()).hexdigest()
    assert m["backbone"] == {
        "variant": "tiny", "hidden_size": 64, "patch_size": 16, "grid": [4, 6],
        "onnx_sha256": TINY_MANIFEST["weights_sha256"],
    }
    assert m["inputs"] == EXPECTED[task][0]
    for other in ("detection", "segmentation", "depth", "classification"):
        assert (m[other] is not None) == (other == task)
    assert isinstance(m["training"], dict) and m["training"]["mode"] == "frozen-features"
    assert m["training"]["validation"] is not None
    section = m[task]
    if task == "detection":
        assert m["class_names"] == CLASSES
        assert set(section) == {"score_threshold", "nms_iou_threshold", "max_detections", "pre_nms_top_k"}
    elif task == "segmentation":
        assert m["class_names"] == ["background", *CLASSES]  # from annotations.json (ids 1..3)
        assert len(section["palette"]) == 4 and all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in section["palette"])
        assert set(section) == {"palette"}
    elif task == "depth":
        assert m["class_names"] == []
        assert set(section) == {"min_depth_m", "max_depth_m"}
        assert 0 < section["min_depth_m"] <= 0.8 * 2.0 + 1e-6 and section["max_depth_m"] >= 10.0
    else:
        assert m["class_names"] == ["bluish", "reddish"]
        assert section == {"top_k": 2, "use_mean_patch": True}


@pytest.mark.parametrize("task", list(EXPECTED))
def test_reference_matches_onnxruntime(trained: dict[str, Path], task: str) -> None:
    """The reference holds PyTorch outputs; onnxruntime on the same inputs agrees within 1e-5."""
    d = trained["ref"] / task
    meta = json.loads((d / "reference.json").read_text())
    inputs, outputs = EXPECTED[task]
    assert meta["inputs"] == inputs and meta["outputs"] == list(outputs)
    assert meta["source"].endswith(".png")  # real features from a validation image
    feeds = {n: np.load(d / f"{n}.npy") for n in inputs}
    for n, v in feeds.items():
        assert v.dtype == np.float32 and list(v.shape) == ([1, C] if n == "cls" else [1, C, *GRID])
    got = run_ort(trained["out"] / f"{task}.onnx", feeds)
    for n in outputs:
        ref = np.load(d / f"{n}.npy")
        assert ref.dtype == np.float32 and list(ref.shape) == outputs[n]
        np.testing.assert_allclose(got[n], ref, rtol=1e-5, atol=1e-5)
    if task in ("segmentation", "depth"):
        name = outputs and list(outputs)[0]
        up = np.load(d / f"{name}_upsampled.npy")
        assert meta["upsampled_size"] == [48, 80] and up.shape[2:] == (48, 80)
        expect = F.interpolate(torch.from_numpy(np.load(d / f"{name}.npy")), size=(48, 80), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(up, expect.numpy(), atol=1e-6)
    if task == "depth":
        m = json.loads((trained["out"] / "depth.json").read_text())["depth"]
        dep = np.load(d / "depth.npy")
        assert dep.min() >= m["min_depth_m"] - 1e-5 and dep.max() <= m["max_depth_m"] + 1e-5
    if task == "detection":
        det = json.loads((d / "detections.json").read_text())
        m = json.loads((trained["out"] / "detection.json").read_text())["detection"]
        assert det["config"] == m
        scores, boxes = np.load(d / "scores.npy"), np.load(d / "boxes.npy")
        assert 0 <= scores.min() and scores.max() <= 1 and boxes.min() >= 0
        again = hl.decode_detections(scores, boxes, m, CLASSES)
        assert det["detections"] == again
        for x in det["detections"]:
            i, j = x["cell"]
            assert x["candidate"] == (i * GRID[1] + j) * 3 + x["class_id"]
            assert x["score"] >= m["score_threshold"]


def test_feature_cache_and_determinism(data: dict[str, Path], trained: dict[str, Path]) -> None:
    """A second run reads every feature from the cache and yields byte-identical heads."""
    cache_files = sorted((trained["cache"] / TINY_MANIFEST["onnx_sha256"]).glob("*.npz"))
    # 8 dataset images + 8 classification images + 3 + 3 validation ones
    assert len(cache_files) == 22
    with np.load(cache_files[0]) as z:
        assert set(z.files) == {"cls", "patch_tokens", "layer_1", "layer_2"}
        assert z["cls"].shape == (C,) and z["patch_tokens"].shape == (C, *GRID)
    mtimes = [p.stat().st_mtime_ns for p in cache_files]
    out2 = data["base"] / "out2"
    assert train_heads.main([
        "--backbone", str(TINY), "--dataset", str(data["train"]), "--tasks", "classification,segmentation",
        "--out", str(out2), "--epochs", "3", "--cache", str(trained["cache"]),
    ]) == 0
    assert [p.stat().st_mtime_ns for p in cache_files] == mtimes
    for task in ("classification", "segmentation"):
        assert (out2 / f"{task}.onnx").read_bytes() == (trained["out"] / f"{task}.onnx").read_bytes()


def test_features_equal_backbone_on_preprocessed_image(data: dict[str, Path]) -> None:
    """Cached features are the backbone outputs of the Rust-style preprocessed image."""
    bb = hl.load_backbone(TINY)
    img = data["train"] / "images" / "000000.png"
    feats = hl.FeatureExtractor(bb, None)(img)
    rgb = np.array(Image.open(img).convert("RGB"))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(64, 96), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(eb.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(eb.IMAGENET_STD).view(1, 3, 1, 1)
    out = dict(zip(TINY_MANIFEST["outputs"], ort.InferenceSession(str(TINY)).run(None, {"pixel_values": x.numpy()})))
    np.testing.assert_allclose(feats["cls"], out["cls"][0], atol=1e-4)
    np.testing.assert_allclose(feats["layer_1"], out["layer_1"][0].reshape(4, 6, C).transpose(2, 0, 1), atol=1e-4)


def test_preprocess_matches_hf_processor_fixture() -> None:
    rgb = np.asarray(Image.open(FIXTURES / "preprocess" / "chelsea.png").convert("RGB"))
    got = hl.preprocess(rgb, 448, 320, eb.IMAGENET_MEAN, eb.IMAGENET_STD)
    ref = np.load(FIXTURES / "preprocess" / "chelsea_hf_448x320.npy")
    assert got.shape == ref.shape and float(np.max(np.abs(got - ref))) < 1e-4


# --------------------------------------------------------------------------------------------
# Untrained heads for benchmarks
# --------------------------------------------------------------------------------------------


def test_export_random(tmp_path: Path) -> None:
    out, ref = tmp_path / "heads", tmp_path / "ref"
    assert train_heads.main([
        "export-random", "--backbone", str(TINY), "--out", str(out), "--reference", str(ref),
        "--num-classes", "detection=5,segmentation=7,classification=11", "--depth-bins", "16",
        "--depth-layers", "1,2",
    ]) == 0
    shapes = {
        "detection": {"scores": (1, 5, 4, 6), "boxes": (1, 4, 4, 6)},
        "segmentation": {"logits": (1, 7, 4, 6)},
        "depth": {"depth": (1, 1, 4, 6)},
        "classification": {"logits": (1, 11)},
    }
    for task, outs in shapes.items():
        m = json.loads((out / f"{task}.json").read_text())
        assert set(m) == MANIFEST_KEYS and m["training"]["mode"] == "random-init"
        model = onnx.load(str(out / f"{task}.onnx"))
        assert eb.count_if_nodes(model) == 0
        feeds = {n: np.load(ref / task / f"{n}.npy") for n in m["inputs"]}
        got = run_ort(out / f"{task}.onnx", feeds)
        for n, shape in outs.items():
            assert got[n].shape == shape
            np.testing.assert_allclose(got[n], np.load(ref / task / f"{n}.npy"), rtol=1e-5, atol=1e-5)
            assert float(np.std(got[n])) > 1e-3  # not a constant graph
    assert json.loads((out / "depth.json").read_text())["inputs"] == ["patch_tokens", "layer_1", "layer_2"]
    dets = json.loads((ref / "detection" / "detections.json").read_text())["detections"]
    assert len(dets) > 0


def test_dynamo_exporter(tmp_path: Path) -> None:
    """The torch.export-based exporter gives the same kind of graph (detection: the richest head)."""
    out, ref = tmp_path / "heads", tmp_path / "ref"
    assert train_heads.main([
        "export-random", "--backbone", str(TINY), "--out", str(out), "--reference", str(ref), "--tasks", "detection",
        "--num-classes", "detection=5", "--det-width", "32", "--exporter", "dynamo",
    ]) == 0
    model = onnx.load(str(out / "detection.onnx"))
    assert eb.count_if_nodes(model) == 0
    assert {o.name: dims(o) for o in model.graph.output} == {"scores": [1, 5, 4, 6], "boxes": [1, 4, 4, 6]}
    got = run_ort(out / "detection.onnx", {"patch_tokens": np.load(ref / "detection" / "patch_tokens.npy")})
    for n in ("scores", "boxes"):
        np.testing.assert_allclose(got[n], np.load(ref / "detection" / f"{n}.npy"), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# NMS, decoding, targets
# --------------------------------------------------------------------------------------------


NMS_CASES = FIXTURES / "heads" / "nms_cases.json"


def test_nms_cases_fixture_is_current() -> None:
    committed = json.loads(NMS_CASES.read_text())
    assert committed == make_nms_cases.build()
    names = {c["name"] for c in committed["cases"]}
    assert len(names) == len(committed["cases"]) >= 10


@pytest.mark.parametrize("case", json.loads(NMS_CASES.read_text())["cases"], ids=lambda c: c["name"])
def test_nms_cases(case: dict) -> None:
    keep = hl.nms_reference(
        case["scores"], case["boxes"], case["classes"], case["score_threshold"], case["iou_threshold"],
        case["pre_nms_top_k"], case["max_detections"],
    )
    assert keep == case["expected_keep"]
    if not case["has_ties"]:
        assert keep == make_nms_cases.torchvision_keep(case)


def test_nms_random_against_torchvision() -> None:
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(0, 60))
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(1, 40, (n, 2))
        case = {
            "scores": rng.uniform(0, 1, n).astype(np.float32).tolist(),
            "boxes": np.concatenate([xy, xy + wh], 1).astype(np.float32).tolist(),
            "classes": rng.integers(0, 3, n).tolist(),
            "score_threshold": 0.2, "iou_threshold": float(rng.uniform(0.2, 0.7)),
            "pre_nms_top_k": int(rng.integers(1, 80)), "max_detections": int(rng.integers(1, 80)),
        }
        assert len(set(case["scores"])) == n
        keep = hl.nms_reference(case["scores"], case["boxes"], case["classes"], case["score_threshold"],
                                case["iou_threshold"], case["pre_nms_top_k"], case["max_detections"])
        assert keep == make_nms_cases.torchvision_keep(case), trial


def test_decode_candidate_order_and_boxes() -> None:
    k, h, w = 2, 2, 3
    scores = np.zeros((1, k, h, w), np.float32)
    scores[0, 1, 0, 2] = 0.9  # candidate (0*3+2)*2+1 = 5
    scores[0, 0, 1, 0] = 0.9  # candidate (1*3+0)*2+0 = 6: same score, later index
    boxes = np.ones((1, 4, h, w), np.float32) * 4
    cfg = {"score_threshold": 0.5, "nms_iou_threshold": 0.5, "max_detections": 10, "pre_nms_top_k": 10}
    dets = hl.decode_detections(scores, boxes, cfg)
    assert [d["candidate"] for d in dets] == [5, 6]
    assert dets[0]["box"] == [40 - 4, 8 - 4, 40 + 4, 8 + 4] and dets[0]["cell"] == [0, 2] and dets[0]["class_id"] == 1
    assert dets[1]["box"] == [8 - 4, 24 - 4, 8 + 4, 24 + 4]


def test_detection_targets() -> None:
    # model input 64x96 (grid 4x6), image 32x48: scale 2
    boxes = np.array([[0, 0, 24, 16], [40, 24, 43, 27]], np.float32)  # a big box and a tiny one
    cls_t, box_t, pos = hl.assign_detection_targets(boxes, np.array([0, 2]), (32, 48), 64, 96, 3)
    # big box -> [0,0,48,32] model px: cells with centres (8|24|40, 8|24) inside
    assert pos[:2, :3].all() and cls_t[0, :2, :3].all()
    np.testing.assert_array_equal(box_t[:, 1, 1], [0, 0, 48, 32])
    # tiny box [80,48,86,54] contains no cell centre; its centre (83,51) is in cell (3,5)
    assert pos[3, 5] and cls_t[2, 3, 5] == 1 and cls_t[:, 3, 5].sum() == 1
    assert pos.sum() == 7


def test_plain_group_norm_equals_torch() -> None:
    torch.manual_seed(0)
    mine, ref = hl.PlainGroupNorm(8, 32), nn.GroupNorm(8, 32)
    with torch.no_grad():
        mine.weight.normal_()
        mine.bias.normal_()
        ref.weight.copy_(mine.weight)
        ref.bias.copy_(mine.bias)
    x = torch.randn(3, 32, 4, 6) * 3 + 1
    torch.testing.assert_close(mine(x), ref(x), atol=1e-5, rtol=1e-5)


def test_depth_bins_and_softplus() -> None:
    c = hl.depth_bin_centres(0.5, 20.0, 9)
    assert c[0].item() == pytest.approx(0.5) and c[-1].item() == pytest.approx(20.0)
    assert torch.allclose(c[1:] / c[:-1], (c[1] / c[0]).expand(8), rtol=1e-5)  # log-uniform
    x = torch.linspace(-50, 50, 101)
    torch.testing.assert_close(hl.softplus(x), F.softplus(x))


def test_losses_decrease_quickly() -> None:
    torch.manual_seed(0)
    spec = hl.HeadSpec("segmentation", ["patch_tokens"], ["bg", "a"], {"palette": hl.palette(2)})
    head = hl.build_head(spec, 8)
    x = torch.randn(4, 8, 4, 6)
    mask = (x[:, :1].repeat_interleave(16, 2).repeat_interleave(16, 3)[:, 0] > 0).long()
    opt = torch.optim.AdamW(head.parameters(), lr=5e-2)
    first = None
    for _ in range(30):
        loss = hl.segmentation_loss(head(x), mask)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------


def test_finetune_smoke(data: dict[str, Path], tmp_path: Path) -> None:
    """Tiny random-init backbone (the fixture's weights), 2 epochs: head only, then the last block."""
    out = tmp_path / "ft"
    assert train_heads.main([
        "--finetune", "--random-init", "--variant", "tiny", "--backbone-seed", "0", "--backbone", str(TINY),
        "--dataset", str(data["train"]), "--tasks", "segmentation,detection", "--out", str(out),
        "--epochs", "2", "--batch-size", "4", "--crop-sizes", "32,64", "--det-width", "32", "--label-stride", "2",
        "--head-only-epochs", "1", "--unfreeze-every", "1", "--cache", str(tmp_path / "cache"),
    ]) == 0
    bb_onnx = out / "backbone" / "dinov3_tiny_finetuned.onnx"
    bb = json.loads(bb_onnx.with_suffix(".json").read_text())
    assert bb["input_height"] == 64 and bb["input_width"] == 96 and bb["layers"] == [1, 2]
    assert bb["onnx_sha256"] == hashlib.sha256(bb_onnx.read_bytes()).hexdigest()
    assert bb["source"]["kind"] == "huggingface"
    assert bb["onnx_sha256"] != TINY_MANIFEST["onnx_sha256"]  # the last block changed
    from transformers import DINOv3ViTModel

    tuned = DINOv3ViTModel.from_pretrained(str(out / "finetuned_backbone_hf"), local_files_only=True).state_dict()
    orig = eb.load_model(eb.build_parser().parse_args(["--random-init", "--variant", "tiny", "--out", "x.onnx"])).model
    sd = orig.state_dict()
    assert set(tuned) == set(sd)
    assert torch.equal(tuned["model.layer.0.mlp.up_proj.weight"], sd["model.layer.0.mlp.up_proj.weight"])
    assert not torch.equal(tuned["model.layer.1.mlp.up_proj.weight"], sd["model.layer.1.mlp.up_proj.weight"])
    assert not torch.equal(tuned["norm.weight"], sd["norm.weight"])
    assert torch.equal(tuned["embeddings.patch_embeddings.weight"], sd["embeddings.patch_embeddings.weight"])
    hf_weights = (out / "finetuned_backbone_hf" / "model.safetensors").read_bytes()
    assert bb["weights_sha256"] == hashlib.sha256(hf_weights).hexdigest()
    assert (bb_onnx.with_suffix(".hf") / "model.safetensors").read_bytes() == hf_weights
    for task in ("segmentation", "detection"):
        m = json.loads((out / f"{task}.json").read_text())
        # Heads record the weights' identity: the sha256 of the adapted backbone's checkpoint
        # folder, copied byte for byte beside its ONNX.
        assert m["backbone"]["onnx_sha256"] == bb["weights_sha256"]
        assert m["training"]["mode"] == "finetune"
        assert run_ort(out / f"{task}.onnx", {"patch_tokens": np.zeros((1, C, 4, 6), np.float32)})


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def expect_error(argv: list[str], *fragments: str) -> str:
    with pytest.raises(SystemExit) as e:
        train_heads.main(argv)
    msg = str(e.value.code)
    for f in fragments:
        assert f in msg, msg
    return msg


def test_missing_segmentation_class_names(data: dict[str, Path], tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    for sub in ("images", "masks"):
        (ds / sub).symlink_to(data["train"] / sub)
    expect_error(
        ["--backbone", str(TINY), "--dataset", str(ds), "--tasks", "segmentation", "--out", str(tmp_path / "o")],
        str(ds / "masks"), "--class-names", "class_names.json",
    )
    # too few names for the mask ids
    expect_error(
        ["--backbone", str(TINY), "--dataset", str(ds), "--tasks", "segmentation", "--out", str(tmp_path / "o"),
         "--class-names", "background,box"],
        "class id", "--class-names",
    )


def test_mismatched_dataset(data: dict[str, Path], tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "masks").mkdir()
    for k in range(3):
        Image.open(data["train"] / "images" / f"{k:06d}.png").save(ds / "images" / f"{k:06d}.png")
        Image.open(data["train"] / "masks" / f"{k:06d}.png").save(ds / "masks" / f"{k:06d}.png")
    Image.fromarray(np.zeros((56, 84), np.uint8)).save(ds / "masks" / "extra.png")
    argv = ["--backbone", str(TINY), "--dataset", str(ds), "--tasks", "segmentation", "--out", str(tmp_path / "o"),
            "--class-names", "background,box,ball,cone"]
    expect_error(argv, str(ds / "masks" / "extra.png"), "no image")
    (ds / "masks" / "extra.png").unlink()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(ds / "masks" / "000001.png")
    expect_error(argv, str(ds / "masks" / "000001.png"), "10x10", "56x84")
    (ds / "masks" / "000001.png").unlink()
    expect_error(argv, str(ds / "images" / "000001.png"), "no mask file")


def test_other_bad_input(data: dict[str, Path], tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    expect_error(["--backbone", str(tmp_path / "nope.onnx"), "--dataset", str(data["train"]), "--out", out], "nope.onnx")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(TINY.read_bytes())
    expect_error(["--backbone", str(lonely), "--dataset", str(data["train"]), "--out", out], "lonely.json", "manifest")
    expect_error(["--backbone", str(TINY), "--dataset", str(data["train"]), "--out", out, "--tasks", "detection,pose"], "--tasks")
    expect_error(["--backbone", str(TINY), "--dataset", str(tmp_path), "--out", out, "--tasks", "detection"],
                 str(tmp_path / "annotations.json"), "--coco")
    expect_error(["--backbone", str(TINY), "--dataset", str(data["train"]), "--out", out, "--tasks", "depth",
                  "--depth-layers", "3"], "--depth-layers", "export_backbone.py --layers 3")
    expect_error(["--backbone", str(TINY), "--random-init", "--out", out], "export-random")
    bad_coco = tmp_path / "bad.json"
    coco = json.loads((data["train"] / "annotations.json").read_text())
    coco["annotations"][0]["category_id"] = 9
    bad_coco.write_text(json.dumps(coco))
    expect_error(["--backbone", str(TINY), "--coco", str(bad_coco), "--coco-images", str(data["train"] / "images"),
                  "--out", out, "--tasks", "detection"], str(bad_coco), "category_id 9")
