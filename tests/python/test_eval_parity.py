"""`dinov3_perception eval` against independent references: pycocotools (all 12 COCO stats and
per-class AP on seeded random cases with crowd regions, empty images, empty results, >100
results per image, duplicates and score ties), scikit-learn (image and pixel AUROC with ties),
NumPy (mIoU, pixel accuracy, depth errors), the demo set end to end, and bad input (exit 2, the
message names the file).

The binary is the debug build `cargo test` leaves in target/debug (see binaries.py); a missing binary fails the tests, it does not skip them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from binaries import perception_binary
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))

# Tolerances: COCO stats vs pycocotools (the brief's bar; the port agrees to ~1e-15), AUROC vs
# sklearn, pixel metrics vs NumPy (f64 sums in another order).
COCO_TOL = 1e-4
AUROC_TOL = 1e-9
PIXEL_TOL = 1e-9
STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
DEMO = ROOT / "models" / "demo"


def binary() -> Path:
    return perception_binary()


@pytest.fixture(scope="module")
def bin_path() -> Path:
    b = binary()
    if not b.is_file():
        pytest.fail(f"{b} is missing: build it first (`cargo build` or `cargo test`)")
    return b


def run(bin_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([str(bin_path), *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


# ------------------------------------------------------------------------------------------------
# COCO detection vs pycocotools
# ------------------------------------------------------------------------------------------------


def random_case(seed: int, images: int = 120, empty_results: bool = False):
    """A COCO ground truth and results exercising what COCOeval distinguishes."""
    rng = np.random.default_rng(seed)
    cat_ids = [1, 3, 7, 8]  # 8 has no ground truth at all
    coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    dets = []
    ann_id = 1
    for i in range(images):
        img_id = int(1000 + 3 * i)  # sparse, not from 1
        coco["images"].append({"id": img_id, "file_name": f"{img_id}.png", "width": 640, "height": 480})
        n = 0 if rng.random() < 0.15 else int(rng.integers(1, 9))
        for _ in range(n):
            cat = int(rng.choice(cat_ids[:3]))
            # Log-uniform sizes: small, medium and large boxes all occur.
            w, h = float(np.exp(rng.uniform(np.log(3), np.log(300)))), float(np.exp(rng.uniform(np.log(3), np.log(300))))
            x, y = float(rng.uniform(0, 640 - min(w, 600))), float(rng.uniform(0, 480 - min(h, 460)))
            crowd = int(rng.random() < 0.08)
            # The area field (e.g. of a segmentation) need not be w*h: it decides the area range.
            area = w * h * float(rng.uniform(0.6, 1.0)) if rng.random() < 0.5 else w * h
            ann = {"id": ann_id, "image_id": img_id, "category_id": cat,
                   "bbox": [x, y, w, h], "area": area, "iscrowd": crowd}
            if rng.random() < 0.05:
                ann["ignore"] = 1  # pycocotools overwrites it with iscrowd: no effect
            coco["annotations"].append(ann)
            ann_id += 1
            for _copy in range(int(rng.choice([0, 1, 1, 1, 2]))):  # misses and duplicates
                jit = rng.normal(0, 0.12, 4) * [w, h, w, h]
                dcat = cat if rng.random() < 0.9 else int(rng.choice(cat_ids))
                dets.append({"image_id": img_id, "category_id": dcat,
                             "bbox": [x + jit[0], y + jit[1], max(w + jit[2], 1.0), max(h + jit[3], 1.0)],
                             # Two decimals: many score ties.
                             "score": round(float(rng.random()), 2)})
        for _ in range(int(rng.integers(0, 4))):  # false positives
            w, h = float(rng.uniform(2, 200)), float(rng.uniform(2, 200))
            dets.append({"image_id": img_id, "category_id": int(rng.choice(cat_ids)),
                         "bbox": [float(rng.uniform(0, 500)), float(rng.uniform(0, 400)), w, h],
                         "score": round(float(rng.random()), 2)})
    # One image with more than 100 results of one category (maxDets truncation).
    crowded = coco["images"][1]["id"]
    for _ in range(130):
        dets.append({"image_id": crowded, "category_id": 1,
                     "bbox": [float(rng.uniform(0, 600)), float(rng.uniform(0, 440)), 30.0, 30.0],
                     "score": round(float(rng.random()), 1)})
    # A category the ground truth lacks: pycocotools does not score it.
    dets.append({"image_id": crowded, "category_id": 99, "bbox": [1.0, 1.0, 5.0, 5.0], "score": 0.5})
    if seed % 2 == 1 and coco["annotations"]:
        # Annotation id 0: pycocotools stores matched ids and tests them for truth, so a match
        # to this box counts as none.
        coco["annotations"][0]["id"] = 0
    if empty_results:
        dets = []
    return coco, dets


def pycocotools_eval(coco: dict, dets: list):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        gt = COCO()
        gt.dataset = copy.deepcopy(coco)
        gt.createIndex()
        if dets:
            dt = gt.loadRes(copy.deepcopy(dets))
        else:  # loadRes cannot take an empty list; an empty result set is what it means
            dt = COCO()
            dt.dataset = {"images": coco["images"], "categories": coco["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith(" Average")]
    return ev, lines


def ours(bin_path: Path, tmp: Path, coco: dict, dets: list):
    ann, res, out = tmp / "ann.json", tmp / "dets.json", tmp / "out"
    ann.write_text(json.dumps(coco))
    res.write_text(json.dumps(dets))
    p = run(bin_path, "eval", "--coco", ann, "--detections", res, "--out", out)
    report = json.loads((out / "report.json").read_text())
    return report["detection"], p.stdout


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_coco_stats_match_pycocotools(bin_path: Path, tmp_path: Path, seed: int) -> None:
    coco, dets = random_case(seed, images=60 + 40 * seed)
    ev, lines = pycocotools_eval(coco, dets)
    det, stdout = ours(bin_path, tmp_path, coco, dets)
    for name, want in zip(STATS, ev.stats):
        assert abs(det["stats"][name] - want) <= COCO_TOL, (seed, name, det["stats"][name], want)
    # Per-class AP from pycocotools' precision array (area all, maxDets 100).
    prec = ev.eval["precision"]
    for k, cls in enumerate(det["per_class"]):
        p = prec[:, :, k, 0, 2]
        want = float(np.mean(p[p > -1])) if np.any(p > -1) else None
        if want is None:
            assert cls["ap"] is None, cls["name"]
        else:
            assert abs(cls["ap"] - want) <= COCO_TOL, (cls["name"], cls["ap"], want)
            assert np.allclose(cls["pr_iou50"], prec[0, :, k, 0, 2], atol=COCO_TOL)
    assert det["per_class"][-1]["ap"] is None, "category 8 has no ground truth"
    # The printed summary is pycocotools' own.
    assert [ln for ln in stdout.splitlines() if ln.startswith(" Average")] == lines
    assert (tmp_path / "out" / "report.md").is_file()
    assert list((tmp_path / "out" / "plots").glob("pr_*.png")), "PR curve plots"


def test_empty_results_match_pycocotools(bin_path: Path, tmp_path: Path) -> None:
    coco, dets = random_case(7, images=30, empty_results=True)
    ev, _ = pycocotools_eval(coco, dets)
    det, _ = ours(bin_path, tmp_path, coco, dets)
    for name, want in zip(STATS, ev.stats):
        assert abs(det["stats"][name] - want) <= COCO_TOL, (name, det["stats"][name], want)


def test_matches_faster_coco_eval_too(bin_path: Path, tmp_path: Path) -> None:
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster

    coco, dets = random_case(11, images=80)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = FCOCO(copy.deepcopy(coco))
        ev = COCOeval_faster(gt, gt.loadRes(copy.deepcopy(dets)), "bbox", print_function=lambda *a: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    det, _ = ours(bin_path, tmp_path, coco, dets)
    for name, want in zip(STATS, ev.stats[:12]):
        assert abs(det["stats"][name] - want) <= COCO_TOL, (name, det["stats"][name], want)


# ------------------------------------------------------------------------------------------------
# Segmentation, depth and anomaly vs NumPy / scikit-learn
# ------------------------------------------------------------------------------------------------

MIN_PRED_DEPTH = 1e-3  # predictions are clamped to at least this (as eval does)


def depth_reference(pairs, max_depth=None) -> dict:
    """What eval computes: truth finite, > 0 (and <= max_depth); NaN/inf predictions skipped;
    predictions clamped to >= 1e-3."""
    ts, ps = [], []
    for t, p in pairs:
        t = t.astype(np.float64).ravel()
        p = p.astype(np.float64).ravel()
        valid = np.isfinite(t) & (t > 0)
        if max_depth is not None:
            valid &= t <= max_depth
        valid &= np.isfinite(p)
        ts.append(t[valid])
        ps.append(np.maximum(p[valid], MIN_PRED_DEPTH))
    t, p = np.concatenate(ts), np.concatenate(ps)
    ratio = np.maximum(p / t, t / p)
    return {
        "abs_rel": np.mean(np.abs(p - t) / t),
        "sq_rel": np.mean((p - t) ** 2 / t),
        "rmse": np.sqrt(np.mean((p - t) ** 2)),
        "log_rmse": np.sqrt(np.mean((np.log(p) - np.log(t)) ** 2)),
        "delta1": np.mean(ratio < 1.25),
        "delta2": np.mean(ratio < 1.25**2),
        "delta3": np.mean(ratio < 1.25**3),
        "pixels": t.size,
    }


def seg_reference(pairs, ignore=255) -> dict:
    k = 256
    conf = np.zeros((k, k), np.int64)
    for t, p in pairs:
        t, p = t.astype(np.int64).ravel(), p.astype(np.int64).ravel()
        keep = t != ignore
        conf += np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    present = union > 0
    return {"miou": float(np.mean(tp[present] / union[present])),
            "pixel_accuracy": float(tp.sum() / conf.sum()),
            "iou": {int(c): float(v) for c, v in zip(np.nonzero(present)[0], tp[present] / union[present])}}


def make_pixel_case(root: Path, seed: int, png_depth: bool = False):
    rng = np.random.default_rng(seed)
    truth, pred = root / "truth", root / "pred"
    for d in (truth / "masks", truth / "depth", truth / "anomaly" / "masks", pred / "masks", pred / "depth", pred / "anomaly"):
        d.mkdir(parents=True)
    (truth / "masks" / "class_names.json").write_text(json.dumps(["bg", "box", "ball", "cone", "tree"]))
    h, w = 24, 32
    seg, depth, labels, scores, maps, amasks = [], [], {}, {}, [], []
    for i in range(12):
        stem = f"{i:06d}"
        t = rng.integers(0, 5, (h, w)).astype(np.uint8)
        t[rng.random((h, w)) < 0.05] = 255  # ignored pixels
        p = np.where(rng.random((h, w)) < 0.6, np.minimum(t, 4), rng.integers(0, 6, (h, w))).astype(np.uint8)
        Image.fromarray(t).save(truth / "masks" / f"{stem}.png")
        Image.fromarray(p).save(pred / "masks" / f"{stem}.png")
        seg.append((t, p))
        td = rng.uniform(0.5, 120.0, (h, w)).astype(np.float32)
        td[rng.random((h, w)) < 0.1] = 0.0  # no depth
        if png_depth:
            mm = np.round(td * 1000).clip(0, 65535).astype(np.uint16)
            Image.fromarray(mm).save(truth / "depth" / f"{stem}.png")
            td = mm.astype(np.float32) / np.float32(1000.0)
        else:
            td[0, 0] = np.nan
            td[0, 1] = np.inf
            np.save(truth / "depth" / f"{stem}.npy", td)
        pd = (td * rng.uniform(0.6, 1.5, (h, w))).astype(np.float32)
        pd[rng.random((h, w)) < 0.03] = -1.0  # clamped to 1e-3
        pd[1, 1] = np.nan  # skipped
        np.save(pred / "depth" / f"{stem}.npy", pd)
        depth.append((td, pd))
        anomalous = i % 3 == 0
        labels[stem] = int(anomalous)
        scores[stem] = round(float(rng.random() + 0.4 * anomalous), 1)  # ties
        m = np.zeros((h, w), np.uint8)
        if anomalous:
            m[4:12, 6:20] = 255
            Image.fromarray(m).save(truth / "anomaly" / "masks" / f"{stem}.png")
        amap = np.round(rng.random((h, w)) + 0.5 * (m > 0), 1).astype(np.float32)  # ties
        np.save(pred / "anomaly" / f"{stem}.npy", amap)
        maps.append(amap)
        amasks.append(m > 0)
    (truth / "anomaly" / "labels.json").write_text(json.dumps(labels))
    (pred / "anomaly.json").write_text(json.dumps(scores))
    return truth, pred, seg, depth, labels, scores, maps, amasks


@pytest.mark.parametrize("png_depth", [False, True])
def test_pixel_metrics_match_numpy_and_sklearn(bin_path: Path, tmp_path: Path, png_depth: bool) -> None:
    from sklearn.metrics import roc_auc_score

    truth, pred, seg, depth, labels, scores, maps, amasks = make_pixel_case(tmp_path, 5, png_depth)
    # predict always writes detections.json; without COCO annotations it is not scored.
    (pred / "detections.json").write_text("[]")
    out = tmp_path / "out"
    p = run(bin_path, "eval", "--truth", truth, "--predictions", pred, "--max-depth", "80", "--out", out)
    r = json.loads((out / "report.json").read_text())
    want = seg_reference(seg)
    s = r["segmentation"]
    assert abs(s["miou"] - want["miou"]) <= PIXEL_TOL
    assert abs(s["pixel_accuracy"] - want["pixel_accuracy"]) <= PIXEL_TOL
    assert {c["id"]: c["iou"] for c in s["per_class"]} == pytest.approx(want["iou"], abs=PIXEL_TOL)
    assert s["per_class"][1]["name"] == "box"
    d, want = r["depth"], depth_reference(depth, 80.0)
    for key in ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta1", "delta2", "delta3"):
        assert abs(d[key] - want[key]) <= PIXEL_TOL * max(1.0, abs(want[key])), (key, d[key], want[key])
    assert d["pixels"] == want["pixels"]
    # The NaN prediction at (1, 1) of every frame counts where the truth there is scored.
    assert d["nonfinite_predictions"] == sum(1 for t, _ in depth if 0 < t[1, 1] <= 80)
    a = r["anomaly"]
    stems = sorted(labels)
    image_auc = roc_auc_score([labels[s] for s in stems], [scores[s] for s in stems])
    assert abs(a["image_auroc"] - image_auc) <= AUROC_TOL
    pixel_auc = roc_auc_score(np.concatenate([m.ravel() for m in amasks]), np.concatenate([m.ravel() for m in maps]))
    assert abs(a["pixel_auroc"] - pixel_auc) <= AUROC_TOL
    assert "segmentation: mIoU" in p.stdout and "anomaly: image AUROC" in p.stdout
    for plot in ("confusion_matrix.png", "depth_error_histogram.png", "depth_error_vs_distance.png"):
        assert Image.open(out / "plots" / plot).size == (800, 600)


def test_pixel_auroc_of_many_pixels_with_ties(bin_path: Path, tmp_path: Path) -> None:
    """A million pixels with heavy ties, against sklearn."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    (truth / "anomaly" / "masks").mkdir(parents=True)
    (pred / "anomaly").mkdir(parents=True)
    labels, scores, maps, masks = {}, {}, [], []
    for i in range(4):
        stem = f"f{i}"
        m = (rng.random((500, 500)) < 0.2).astype(np.uint8)
        Image.fromarray(m).save(truth / "anomaly" / "masks" / f"{stem}.png")
        amap = (rng.integers(0, 50, (500, 500)) + 10 * m).astype(np.float32) / np.float32(7.0)
        np.save(pred / "anomaly" / f"{stem}.npy", amap)
        labels[stem], scores[stem] = i % 2, float(i)
        maps.append(amap.ravel())
        masks.append(m.ravel() > 0)
    (truth / "anomaly" / "labels.json").write_text(json.dumps(labels))
    (pred / "anomaly.json").write_text(json.dumps(scores))
    out = tmp_path / "out"
    run(bin_path, "eval", "--truth", truth, "--predictions", pred, "--out", out)
    a = json.loads((out / "report.json").read_text())["anomaly"]
    want = roc_auc_score(np.concatenate(masks), np.concatenate(maps))
    assert abs(a["pixel_auroc"] - want) <= AUROC_TOL
    assert a["pixels"] == 1_000_000


def test_compare_prints_the_differences(bin_path: Path, tmp_path: Path) -> None:
    coco, dets = random_case(2, images=40)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, _ = ours(bin_path, tmp_path / "a", coco, dets)
    b, _ = ours(bin_path, tmp_path / "b", coco, dets[: len(dets) // 2])
    p = run(bin_path, "eval", "--compare", tmp_path / "a" / "out" / "report.json", tmp_path / "b" / "out" / "report.json")
    row = next(ln for ln in p.stdout.splitlines() if ln.startswith("| detection.stats.AP |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(a["stats"]["AP"], abs=1e-6)
    assert float(cells[2]) == pytest.approx(b["stats"]["AP"], abs=1e-6)
    assert float(cells[3]) == pytest.approx(b["stats"]["AP"] - a["stats"]["AP"], abs=2e-6)


# ------------------------------------------------------------------------------------------------
# The demo set end to end
# ------------------------------------------------------------------------------------------------


def test_demo_set_matches_the_references(bin_path: Path, tmp_path: Path) -> None:
    import eval_heads

    data, pred, out = tmp_path / "data", tmp_path / "pred", tmp_path / "out"
    run(bin_path, "dataset", "synthetic", "--out", data, "--seed", "1000", "--scenes", "2",
        "--frames-per-scene", "3", "--stride", "13")
    run(bin_path, "predict", "--model", DEMO / "dinov3_tiny_240x320.onnx", "--heads", DEMO,
        "--images", data / "images", "--out", pred)
    run(bin_path, "eval", "--truth", data, "--predictions", pred, "--max-depth", "80", "--out", out)
    r = json.loads((out / "report.json").read_text())
    coco = json.loads((data / "annotations.json").read_text())
    dets = json.loads((pred / "detections.json").read_text())
    ev, _ = pycocotools_eval(coco, dets)
    for name, want in zip(STATS, ev.stats):
        assert abs(r["detection"]["stats"][name] - want) <= COCO_TOL, name
    ref = eval_heads.segmentation_miou(data, pred)
    assert abs(r["segmentation"]["miou"] - ref["mIoU"]) <= PIXEL_TOL
    stems = sorted(f.stem for f in (pred / "depth").glob("*.npy"))
    want = depth_reference([(np.load(data / "depth" / f"{s}.npy"), np.load(pred / "depth" / f"{s}.npy")) for s in stems], 80.0)
    for key in ("abs_rel", "rmse", "delta1", "log_rmse"):
        assert abs(r["depth"][key] - want[key]) <= PIXEL_TOL * max(1.0, want[key]), key
    assert r["frames"] == 6


# ------------------------------------------------------------------------------------------------
# Bad input: exit 2, and the message names the file
# ------------------------------------------------------------------------------------------------


def bad(bin_path: Path, *args) -> str:
    p = run(bin_path, "eval", *args, check=False)
    assert p.returncode == 2, f"exit {p.returncode}: {p.stderr}"
    return p.stderr


def test_results_naming_unknown_images(bin_path: Path, tmp_path: Path) -> None:
    coco, dets = random_case(1, images=10)
    dets += [{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},
             {"image_id": 6, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    err = bad(bin_path, "--coco", tmp_path / "ann.json", "--detections", tmp_path / "dets.json")
    assert "dets.json" in err and "5, 6" in err, err


def test_malformed_json(bin_path: Path, tmp_path: Path) -> None:
    coco, dets = random_case(1, images=5)
    (tmp_path / "ann.json").write_text(json.dumps(coco)[:-5])
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    err = bad(bin_path, "--coco", tmp_path / "ann.json", "--detections", tmp_path / "dets.json")
    assert "ann.json" in err, err
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "dets.json").write_text('{"image_id": 1}')
    err = bad(bin_path, "--coco", tmp_path / "ann.json", "--detections", tmp_path / "dets.json")
    assert "dets.json" in err and "results list" in err, err


def test_sizes_that_differ(bin_path: Path, tmp_path: Path) -> None:
    truth, pred, *_ = make_pixel_case(tmp_path, 1)
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(pred / "masks" / "000003.png")
    err = bad(bin_path, "--truth", truth, "--predictions", pred)
    assert "000003.png" in err and "30x20" in err and "32x24" in err, err
    # Detections given explicitly need COCO annotations.
    (pred / "detections.json").write_text("[]")
    err = bad(bin_path, "--truth", truth, "--detections", pred / "detections.json")
    assert "annotations.json" in err and "detections.json" in err, err


def test_frames_without_truth_and_truth_without_frames(bin_path: Path, tmp_path: Path) -> None:
    truth, pred, *_ = make_pixel_case(tmp_path, 1)
    (pred / "masks" / "000002.png").rename(pred / "masks" / "777777.png")
    (pred / "depth" / "000002.npy").unlink()
    (pred / "anomaly" / "000002.npy").unlink()
    scores = json.loads((pred / "anomaly.json").read_text())
    del scores["000002"]
    (pred / "anomaly.json").write_text(json.dumps(scores))
    err = bad(bin_path, "--truth", truth, "--predictions", pred)
    assert "777777" in err and "no prediction: 000002" in err and str(truth) in err, err


def test_missing_paths(bin_path: Path, tmp_path: Path) -> None:
    err = bad(bin_path, "--truth", tmp_path / "nope", "--predictions", tmp_path)
    assert "nope" in err, err
    err = bad(bin_path, "--coco", tmp_path / "ann.json", "--detections", tmp_path / "d.json")
    assert "ann.json" in err, err
