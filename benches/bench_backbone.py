"""Backbone benchmark: our tract backend vs onnxruntime, same ONNX, same threads, one invocation.

    .venv/bin/python benches/bench_backbone.py [--threads 2] [--rounds 3] [--iters 10]

1. Generates (once; cached under target/bench-models/) full-size random-weight DINOv3 models with
   models/export_backbone.py: ViT-S/16 @224 and @448, ViT-B/16 @224, plus PyTorch references.
2. Builds examples/backbone_timing.rs in release mode.
3. For each model, runs tract and onnxruntime alternately (--rounds times each, fresh processes),
   so machine noise hits both alike; reports median ms/frame, GFLOP/s, the ratio tract/ort,
   start-up time (load + prepare + first frame) and peak RSS (wait4 of each process).
4. Prints tract's parity against PyTorch on the full-size ViT-S/16 @224.
Prints a Markdown table to paste into benches/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "target" / "bench-models"
PY = sys.executable
MODELS = [("vits16", 224, 224), ("vits16", 448, 448), ("vitb16", 224, 224)]


def export(variant: str, h: int, w: int) -> tuple[Path, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    onnx = CACHE / f"{variant}_{h}x{w}.onnx"
    ref = CACHE / f"{variant}_{h}x{w}_reference"
    if not (onnx.exists() and onnx.with_suffix(".json").exists() and (ref / "patch_tokens.npy").exists()):
        print(f"exporting {onnx.name} (random weights, seed 0)...", flush=True)
        subprocess.run([PY, str(ROOT / "models/export_backbone.py"), "--random-init", "--variant", variant,
                        "--seed", "0", "--height", str(h), "--width", str(w), "--out", str(onnx),
                        "--reference", str(ref)], check=True)
    return onnx, ref


def run_measured(cmd: list[str]) -> dict:
    pid = os.fork()
    if pid == 0:  # child
        fd = os.open(str(CACHE / "last.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execvp(cmd[0], cmd)
    _, status, rusage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with {status}")
    result = json.loads((CACHE / "last.json").read_text().strip().splitlines()[-1])
    result["peak_rss_mib"] = rusage.ru_maxrss / 1024.0  # Linux reports KiB
    return result


def flops(onnx: Path) -> float:
    out = subprocess.run([str(ROOT / "target/release/dinov3_perception"), "inspect", str(onnx)],
                         check=True, capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("FLOPs"))
    return float(line.split()[1]) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()

    models = [export(*m) for m in MODELS]
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "backbone_timing",
                    "--bin", "dinov3_perception"], cwd=ROOT, check=True)
    tract_bin = ROOT / "target/release/examples/backbone_timing"

    rows = []
    parity = None
    for (variant, h, w), (onnx, ref) in zip(MODELS, models):
        f = flops(onnx)
        runs: dict[str, list[dict]] = {"tract": [], "onnxruntime": []}
        for r in range(args.rounds):
            # Alternate which engine goes first so drift does not favour one.
            order = ["tract", "onnxruntime"] if r % 2 == 0 else ["onnxruntime", "tract"]
            for engine in order:
                if engine == "tract":
                    cmd = [str(tract_bin), str(onnx), str(args.threads), str(args.iters)]
                    if parity is None and variant == "vits16" and h == 224:
                        cmd.append(str(ref))
                else:
                    cmd = [PY, str(ROOT / "benches/ort_timing.py"), str(onnx), str(args.threads), str(args.iters)]
                res = run_measured(cmd)
                if res.get("parity"):
                    parity = res["parity"]
                runs[engine].append(res)
        summary = {}
        for engine, rs in runs.items():
            per_round = [statistics.median(x["times_ms"]) for x in rs]
            summary[engine] = {
                "ms": statistics.median(per_round),
                "ms_all": per_round,
                "startup_s": statistics.median(x["load_s"] + x["prepare_s"] + x["first_ms"] / 1e3 for x in rs),
                "rss": max(x["peak_rss_mib"] for x in rs),
            }
        t, o = summary["tract"], summary["onnxruntime"]
        ratios = [a / b for a, b in zip(t["ms_all"], o["ms_all"])]
        rows.append((f"{variant} @{h}x{w}", f / 1e9, t, o, ratios))
        print(f"{variant} {h}x{w}: tract {t['ms']:.1f} ms, ort {o['ms']:.1f} ms, ratio {t['ms']/o['ms']:.2f}", flush=True)

    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime
    print()
    print(f"machine: {cpu}, {os.cpu_count()} cores; {platform.platform()}; onnxruntime {onnxruntime.__version__}")
    print(f"command: .venv/bin/python benches/bench_backbone.py --threads {args.threads} --rounds {args.rounds} --iters {args.iters}")
    print()
    print("| model | GFLOP/frame | tract ms | ort ms | tract/ort (median; per round) | tract GFLOP/s | ort GFLOP/s | start-up tract / ort (s) | peak RSS tract / ort (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, gf, t, o, ratios in rows:
        print(f"| {name} | {gf:.1f} | {t['ms']:.1f} | {o['ms']:.1f} | {t['ms']/o['ms']:.2f} ({', '.join(f'{r:.2f}' for r in ratios)}) "
              f"| {gf / t['ms'] * 1e3:.0f} | {gf / o['ms'] * 1e3:.0f} | {t['startup_s']:.2f} / {o['startup_s']:.2f} "
              f"| {t['rss']:.0f} / {o['rss']:.0f} |")
    if parity:
        print()
        print("tract vs PyTorch, full-size ViT-S/16 @224 (random weights, seeded input):")
        for k, v in parity.items():
            print(f"  {k}: max abs {v['max_abs']:.2e}, mean cosine {v['mean_cosine']:.9f}")


if __name__ == "__main__":
    main()
