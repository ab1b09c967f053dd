#!/usr/bin/env python3
"""Score head predictions against a dataset's ground truth, with independent reference tools.

    dinov3_perception predict --model M.onnx --heads HEADS/ --images DATA/images --out PRED/
    python models/eval_heads.py --dataset DATA --predictions PRED [--json report.json]

DATA follows the layout in models/HEADS.md (``dinov3_perception dataset synthetic`` writes it);
PRED is what ``predict`` writes. Metrics:

* detection: COCO mAP@[.5:.95] and mAP@.5 by pycocotools' COCOeval on ``detections.json``;
* segmentation: mIoU over classes present in truth or prediction (confusion matrix over all
  pixels of all images; 255 in the truth = ignore);
* depth: AbsRel, RMSE and delta1 over pixels with valid truth (finite, > 0, and at most
  ``--max-depth`` metres when given);
* classification: top-1 accuracy against the ImageFolder labels.

Only what PRED contains is scored. Exit status 2 with a message naming the file on bad input.

``dinov3_perception eval --truth DATA --predictions PRED`` computes the same figures (and more:
all 12 COCO stats, pixel accuracy, SqRel / log RMSE / delta2-3, anomaly AUROC, reports and plots)
in Rust; this script stays as an independent cross-check. One difference: eval clamps depth
predictions to >= 1e-3 m where this script drops pixels whose prediction is <= 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def detection_map(dataset: Path, pred: Path) -> dict | None:
    results = pred / "detections.json"
    if not results.exists():
        return None
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = dataset / "annotations.json"
    if not ann.exists():
        fail(f"{ann} is missing: detection needs the COCO annotations of the dataset")
    dets = json.loads(results.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        if not dets:
            return {"mAP": 0.0, "mAP50": 0.0, "detections": 0}
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP": float(ev.stats[0]), "mAP50": float(ev.stats[1]), "detections": len(dets)}


def segmentation_miou(dataset: Path, pred: Path) -> dict | None:
    pdir = pred / "masks"
    files = sorted(pdir.glob("*.png")) if pdir.is_dir() else []
    if not files:
        return None
    k = 256
    conf = np.zeros((k, k), np.int64)
    for f in files:
        t = dataset / "masks" / f.name
        if not t.exists():
            fail(f"{t} is missing: every predicted mask needs a ground-truth mask of the same name")
        truth = np.asarray(Image.open(t)).astype(np.int64)
        p = np.asarray(Image.open(f)).astype(np.int64)
        if truth.shape != p.shape:
            fail(f"{f}: shape {p.shape} differs from the ground truth {truth.shape}")
        valid = truth != 255
        conf += np.bincount(truth[valid] * k + p[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    present = union > 0
    iou = tp[present] / union[present]
    return {
        "mIoU": float(iou.mean()),
        "IoU": {int(c): float(v) for c, v in zip(np.nonzero(present)[0], iou)},
        "images": len(files),
    }


def depth_errors(dataset: Path, pred: Path, max_depth: float | None = None) -> dict | None:
    pdir = pred / "depth"
    files = sorted(pdir.glob("*.npy")) if pdir.is_dir() else []
    if not files:
        return None
    abs_rel = sq = d1 = 0.0
    n = 0
    for f in files:
        t = dataset / "depth" / f.name
        if not t.exists():
            fail(f"{t} is missing: every predicted depth needs a ground-truth depth of the same name")
        truth = np.load(t).astype(np.float64)
        p = np.load(f).astype(np.float64)
        if truth.shape != p.shape:
            fail(f"{f}: shape {p.shape} differs from the ground truth {truth.shape}")
        valid = np.isfinite(truth) & (truth > 0) & np.isfinite(p) & (p > 0)
        if max_depth is not None:
            valid &= truth <= max_depth
        tv, pv = truth[valid], p[valid]
        abs_rel += float(np.sum(np.abs(pv - tv) / tv))
        sq += float(np.sum((pv - tv) ** 2))
        d1 += float(np.sum(np.maximum(pv / tv, tv / pv) < 1.25))
        n += int(valid.sum())
    if n == 0:
        fail(f"{pdir}: no pixel has valid ground truth and prediction")
    return {"AbsRel": abs_rel / n, "RMSE": (sq / n) ** 0.5, "delta1": d1 / n, "images": len(files)}


def classification_accuracy(dataset: Path, pred: Path) -> dict | None:
    f = pred / "classification.json"
    if not f.exists():
        return None
    labels = json.loads(f.read_text())
    if not labels:
        return None
    truth = {}
    for d in sorted((dataset / "classes").glob("*")):
        for img in d.iterdir():
            truth[img.stem] = d.name
    hits = total = 0
    for stem, top in labels.items():
        if stem not in truth:
            fail(f"{f}: image {stem} has no ImageFolder label under {dataset / 'classes'}")
        total += 1
        hits += int(bool(top) and top[0][0] == truth[stem])
    return {"top1": hits / total, "images": total}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--predictions", type=Path, required=True)
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--max-depth", type=float, help="score depth only where the truth is <= this many metres (KITTI-style cap, e.g. 80)")
    args = ap.parse_args(argv)
    for d, what in ((args.dataset, "--dataset"), (args.predictions, "--predictions")):
        if not d.is_dir():
            fail(f"{what} {d} is not a directory")
    report = {
        "detection": detection_map(args.dataset, args.predictions),
        "segmentation": segmentation_miou(args.dataset, args.predictions),
        "depth": depth_errors(args.dataset, args.predictions, args.max_depth),
        "classification": classification_accuracy(args.dataset, args.predictions),
    }
    report = {k: v for k, v in report.items() if v is not None}
    if not report:
        fail(f"{args.predictions} holds no predictions (run `dinov3_perception predict` first)")
    for task, m in report.items():
        figures = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
        print(f"{task}: {figures}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    main()
