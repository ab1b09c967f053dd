"""COCO bbox evaluation speed: `dinov3_perception eval` vs pycocotools vs faster-coco-eval on the
same seeded random case, interleaved in one invocation; also checks the 12 stats agree.

    .venv/bin/python benches/bench_eval.py [--images 5000] [--rounds 3] [--bin target/release/dinov3_perception]

Each tool is timed from the files to the 12 stats (reading the JSON included): pycocotools and
faster-coco-eval in this process, ours as a fresh process. Prints a Markdown table of the
median seconds and the ratios ours / pycocotools and ours / faster-coco-eval.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

from test_eval_parity import STATS, random_case  # noqa: E402


def pycocotools_stats(ann: Path, res: Path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(res)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats)


def faster_stats(ann: Path, res: Path):
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval_faster(gt, gt.loadRes(str(res)), "bbox", print_function=lambda *a: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:12])


def ours_stats(binary: Path, ann: Path, res: Path, out: Path):
    subprocess.run([str(binary), "eval", "--coco", str(ann), "--detections", str(res), "--out", str(out)],
                   check=True, capture_output=True)
    stats = json.loads((out / "report.json").read_text())["detection"]["stats"]
    return [stats[n] for n in STATS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "dinov3_perception")
    args = ap.parse_args()
    coco, dets = random_case(args.seed, images=args.images)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ann, res = d / "ann.json", d / "dets.json"
        ann.write_text(json.dumps(coco))
        res.write_text(json.dumps(dets))
        tools = {
            "pycocotools": lambda: pycocotools_stats(ann, res),
            "faster-coco-eval": lambda: faster_stats(ann, res),
            "dinov3_perception eval": lambda: ours_stats(args.bin, ann, res, d / "out"),
        }
        times = {k: [] for k in tools}
        stats = {}
        for r in range(args.rounds):
            order = list(tools) if r % 2 == 0 else list(reversed(tools))
            for name in order:
                t0 = time.perf_counter()
                stats[name] = tools[name]()
                times[name].append(time.perf_counter() - t0)
    ref = stats["pycocotools"]
    worst = max(abs(a - b) for a, b in zip(stats["dinov3_perception eval"], ref))
    med = {k: statistics.median(v) for k, v in times.items()}
    ours = med["dinov3_perception eval"]
    print(f"{args.images} images, {len(coco['annotations'])} boxes, {len(dets)} results; "
          f"max |ours - pycocotools| over the 12 stats: {worst:.2e}\n")
    print("| tool | median s | ours / tool |\n|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {ours / v:.3f} |")


if __name__ == "__main__":
    main()
