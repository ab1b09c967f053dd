#!/usr/bin/env python3
"""Write ``tests/fixtures/heads/nms_cases.json``: fixed NMS cases with the expected kept indices.

The rule is the one of models/HEADS.md, implemented plainly in ``heads_lib.nms_reference``:
candidates with ``score >= score_threshold`` are ordered by score descending, then by candidate
index ascending; the first ``pre_nms_top_k`` enter NMS; walking that order a candidate is dropped
when an already kept candidate of the same class has IoU strictly greater than
``iou_threshold`` with it; at most ``max_detections`` are kept. ``expected_keep`` lists the kept
candidate indices in output order. Boxes are ``[x1, y1, x2, y2]``; every score and coordinate is
exactly representable in float32, and no score equals its case's threshold.

Cases without score ties are cross-checked against ``torchvision.ops.batched_nms`` (the script
fails if they disagree); ``has_ties`` marks the others, where only the index rule decides.

File format::

    {"format": "dinov3_perception/nms_cases", "format_version": 1, "rule": "...",
     "cases": [{"name", "description", "scores": [N], "boxes": [N x 4], "classes": [N],
                "score_threshold", "iou_threshold", "pre_nms_top_k", "max_detections",
                "has_ties", "expected_keep": [indices]}]}

Usage::

    python models/make_nms_cases.py [--out tests/fixtures/heads/nms_cases.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heads_lib import nms_reference  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "heads" / "nms_cases.json"
RULE = (
    "candidates with score >= score_threshold, ordered by score descending then candidate index "
    "ascending; the first pre_nms_top_k enter NMS; a candidate is suppressed by a kept candidate of "
    "the same class with IoU strictly greater than iou_threshold; at most max_detections are kept; "
    "expected_keep is in output order"
)


def case(name: str, description: str, scores: list[float], boxes: list[list[float]], classes: list[int], *,
         score_threshold: float = 0.25, iou_threshold: float = 0.5, pre_nms_top_k: int = 1000,
         max_detections: int = 100) -> dict[str, Any]:
    assert len(scores) == len(boxes) == len(classes), name
    for v in [*scores, *(c for b in boxes for c in b), score_threshold, iou_threshold]:
        assert float(np.float32(v)) == v, f"{name}: {v} is not exact in float32"
    assert score_threshold not in scores, f"{name}: a score equals the threshold"
    above = [s for s in scores if s >= score_threshold]
    c = {
        "name": name,
        "description": description,
        "scores": scores,
        "boxes": boxes,
        "classes": classes,
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
        "pre_nms_top_k": pre_nms_top_k,
        "max_detections": max_detections,
        "has_ties": len(set(above)) != len(above),
    }
    c["expected_keep"] = nms_reference(scores, boxes, classes, score_threshold, iou_threshold, pre_nms_top_k, max_detections)
    return c


def torchvision_keep(c: dict[str, Any]) -> list[int]:
    """The same selection done with torchvision's batched_nms (valid when scores do not tie)."""
    from torchvision.ops import batched_nms

    scores = np.asarray(c["scores"], np.float32)
    idx = np.nonzero(scores >= np.float32(c["score_threshold"]))[0]
    idx = idx[np.argsort(-scores[idx], kind="stable")][: c["pre_nms_top_k"]]
    if len(idx) == 0:
        return []
    boxes = torch.tensor(np.asarray(c["boxes"], np.float32)[idx].reshape(-1, 4))
    kept = batched_nms(boxes, torch.from_numpy(scores[idx]), torch.tensor(np.asarray(c["classes"])[idx]), c["iou_threshold"])
    return [int(idx[k]) for k in kept.tolist()][: c["max_detections"]]


def build() -> dict[str, Any]:
    sq = [0.0, 0.0, 10.0, 10.0]
    cases = [
        case("basic", "two overlapping boxes of one class and a separate one: the lower-scored overlap goes",
             [0.75, 0.875, 0.5], [sq, [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]], [0, 0, 0]),
        case("score_ties_overlapping", "equal scores, overlapping boxes: the lower candidate index wins",
             [0.75, 0.75, 0.75], [[2.0, 0.0, 12.0, 10.0], sq, [40.0, 40.0, 50.0, 50.0]], [1, 1, 1]),
        case("score_ties_order", "equal scores, disjoint boxes: output in candidate index order",
             [0.5, 0.875, 0.5, 0.5], [[60.0, 0.0, 70.0, 10.0], sq, [20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0]],
             [2, 0, 0, 1]),
        case("identical_boxes", "the same box three times, distinct scores: only the best stays",
             [0.5, 0.875, 0.75], [sq, sq, sq], [0, 0, 0]),
        case("identical_boxes_tied_scores", "the same box and score twice: index 0 stays",
             [0.625, 0.625], [sq, sq], [3, 3]),
        case("iou_at_threshold", "IoU exactly 0.5 does not suppress (strictly greater); IoU 0.6 does",
             [0.875, 0.75, 0.625], [sq, [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 6.0]], [0, 0, 0]),
        case("different_classes", "identical boxes of different classes are all kept",
             [0.875, 0.75, 0.625], [sq, sq, sq], [0, 1, 2]),
        case("empty", "no candidates", [], [], []),
        case("all_below_threshold", "every score is below the threshold",
             [0.125, 0.25, 0.375], [sq, [20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0]], [0, 0, 0],
             score_threshold=0.5),
        case("max_detections", "six disjoint boxes, at most three kept (the best three)",
             [0.5, 0.875, 0.625, 0.9375, 0.75, 0.8125],
             [[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in range(6)], [0, 1, 0, 1, 0, 1], max_detections=3),
        case("pre_nms_top_k", "only the two best candidates enter NMS",
             [0.5, 0.875, 0.625, 0.75], [[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in range(4)], [0, 0, 0, 0],
             pre_nms_top_k=2),
        case("suppressed_do_not_suppress", "A suppresses B; B would suppress C but is not kept, so C stays",
             [0.875, 0.75, 0.625], [sq, [3.0, 0.0, 13.0, 10.0], [6.0, 0.0, 16.0, 10.0]], [0, 0, 0]),
        case("top_k_after_threshold", "the threshold applies before the top-k cut",
             [0.125, 0.5, 0.0625, 0.75], [[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in range(4)], [0, 0, 0, 0],
             pre_nms_top_k=2, score_threshold=0.25),
        case("mixed_classes_ties", "ties across classes plus same-class overlaps, low IoU threshold",
             [0.5, 0.5, 0.75, 0.5, 0.75], [sq, sq, [4.0, 4.0, 14.0, 14.0], [5.0, 0.0, 15.0, 10.0], [30.0, 30.0, 40.0, 40.0]],
             [0, 1, 0, 0, 1], iou_threshold=0.125),
    ]
    return {"format": "dinov3_perception/nms_cases", "format_version": 1, "rule": RULE, "cases": cases}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output JSON (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    data = build()
    checked = 0
    for c in data["cases"]:
        if not c["has_ties"]:
            tv = torchvision_keep(c)
            if tv != c["expected_keep"]:
                print(f"error: case {c['name']}: reference {c['expected_keep']} != torchvision {tv}", file=sys.stderr)
                return 1
            checked += 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.out}: {len(data['cases'])} cases, {checked} without ties agree with torchvision batched_nms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
