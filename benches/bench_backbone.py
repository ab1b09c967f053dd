"""Backbone benchmark: our backends vs Python onnxruntime, same ONNX, same threads, one invocation.

    .venv/bin/python benches/bench_backbone.py [--threads 2] [--rounds 3] [--iters 10] [--no-int8]
        [--models vits16_224x224,vits16_448x448,vitb16_224x224]

1. Generates (once; cached under target/bench-models/) full-size random-weight DINOv3 models with
   models/export_backbone.py: ViT-S/16 @224 and @448, ViT-B/16 @224, plus PyTorch references, and
   their int8-dynamic quantisations (models/quantize_backbone.py).
2. Builds examples/backbone_timing.rs in release mode with the onnxruntime feature.
3. For each model runs, in fresh processes and rotating order (--rounds times each, so machine
   noise hits all alike): the native engine (reading the checkpoint folder export_backbone.py
   writes beside the ONNX; also at batch 2 and 4); tract; our onnxruntime backend (CPU provider, the venv's own
   libonnxruntime through ORT_DYLIB_PATH, so both wrappers run the same library); Python
   onnxruntime; and for the int8 model our onnxruntime backend and Python onnxruntime again.
   Reports median ms/frame, GFLOP/s, ratios to Python onnxruntime fp32 (our wrapper must add no
   overhead: ours/python <= 1.05), start-up (load + prepare + first frame) and peak RSS (wait4).
4. Prints tract's parity against PyTorch on the full-size ViT-S/16 @224, and each int8 model's
   fidelity (1 - mean patch cosine, max abs) against PyTorch's float outputs.
Prints Markdown tables to paste into benches/RESULTS.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CACHE = ROOT / "target" / "bench-models"
PY = sys.executable
MODELS = [("vits16", 224, 224), ("vits16", 448, 448), ("vitb16", 224, 224)]
BATCHES = (2, 4)


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


def quantized(onnx: Path) -> Path:
    q = onnx.with_name(f"{onnx.stem}_int8.onnx")
    if not (q.exists() and q.with_suffix(".json").exists()):
        print(f"quantising {onnx.name} (int8-dynamic)...", flush=True)
        subprocess.run([PY, str(ROOT / "models/quantize_backbone.py"), "--model", str(onnx)],
                       check=True, cwd=ROOT / "models")
    return q
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
    out = subprocess.run([str(TARGET / "release/dinov3_perception"), "inspect", str(onnx)],
                         check=True, capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("FLOPs"))
    return float(line.split()[1]) * 1e9


def ort_library() -> str:
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libs = sorted(glob.glob(str(capi / "libonnxruntime.so.*")))
    if not libs:
        raise SystemExit(f"no libonnxruntime.so.* in {capi}")
    return libs[0]


def summarise(rs: list[dict]) -> dict:
    per_round = [statistics.median(x["times_ms"]) for x in rs]
    return {
        "ms": statistics.median(per_round),
        "ms_all": per_round,
        "startup_s": statistics.median(x["load_s"] + x["prepare_s"] + x["first_ms"] / 1e3 for x in rs),
        "rss": max(x["peak_rss_mib"] for x in rs),
        "parity": next((x["parity"] for x in rs if x.get("parity")), None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--no-int8", action="store_true", help="skip the int8-dynamic rows")
    ap.add_argument("--models", default="", help="comma-separated subset, e.g. vits16_448x448 (default: all)")
    args = ap.parse_args()

    global MODELS
    if args.models:
        wanted = set(args.models.split(","))
        MODELS = [m for m in MODELS if f"{m[0]}_{m[1]}x{m[2]}" in wanted]
        if not MODELS:
            raise SystemExit(f"--models {args.models}: none of vits16_224x224, vits16_448x448, vitb16_224x224")
    models = [export(*m) for m in MODELS]
    int8 = {onnx: quantized(onnx) for onnx, _ in models} if not args.no_int8 else {}
    subprocess.run(["cargo", "build", "--release", "--quiet", "--features", "onnxruntime",
                    "--example", "backbone_timing", "--bin", "dinov3_perception"], cwd=ROOT, check=True)
    timing = str(TARGET / "release/examples/backbone_timing")
    os.environ["ORT_DYLIB_PATH"] = ort_library()
    py_ort = [PY, str(ROOT / "benches/ort_timing.py")]
    t, n = str(args.threads), str(args.iters)

    rows = []
    parity = None
    for (variant, h, w), (onnx, ref) in zip(MODELS, models):
        f = flops(onnx)
        want_parity = variant == "vits16" and h == 224
        engines = {
            "native": [timing, "native", str(onnx), t, n, str(ref)],
            "tract": [timing, "tract", str(onnx), t, n] + ([str(ref)] if want_parity else []),
            "ours": [timing, "onnxruntime", str(onnx), t, n],
            "python": py_ort + [str(onnx), t, n],
        }
        for b in BATCHES:
            engines[f"native_b{b}"] = [timing, "native", str(onnx), t, n, str(ref), "--batch", str(b)]
        if onnx in int8:
            engines["ours_int8"] = [timing, "onnxruntime", str(int8[onnx]), t, n, str(ref)]
            engines["python_int8"] = py_ort + [str(int8[onnx]), t, n]
        names = list(engines)
        runs: dict[str, list[dict]] = {e: [] for e in names}
        for r in range(args.rounds):
            # Rotate which engine goes first so drift favours none.
            for engine in names[r % len(names):] + names[:r % len(names)]:
                runs[engine].append(run_measured(engines[engine]))
        summary = {e: summarise(rs) for e, rs in runs.items()}
        if want_parity:
            parity = summary["tract"]["parity"]
        rows.append((f"{variant} @{h}x{w}", f / 1e9, summary))
        line = ", ".join(f"{e} {s['ms']:.1f} ms" for e, s in summary.items())
        print(f"{variant} {h}x{w}: {line}", flush=True)

    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = ""
    try:
        fl = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
        flags = " ".join(x for x in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16") if x in fl)
    except (OSError, StopIteration):
        pass
    import onnxruntime
    print()
    print(f"machine: {cpu} ({flags}), {os.cpu_count()} cores; {platform.platform()}; onnxruntime {onnxruntime.__version__}")
    print(f"command: .venv/bin/python benches/bench_backbone.py --threads {args.threads} --rounds {args.rounds} --iters {args.iters}"
          + (" --no-int8" if args.no_int8 else "") + (f" --models {args.models}" if args.models else ""))
    print()
    print("| model | GFLOP/frame | tract ms | ours-ort ms | py-ort ms | tract/py-ort | ours-ort/py-ort (median; per round) | tract / ort GFLOP/s | start-up tract / ours-ort / py-ort (s) | peak RSS tract / ours-ort / py-ort (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, gf, s in rows:
        tr, ours, py = s["tract"], s["ours"], s["python"]
        per = ", ".join(f"{a / b:.2f}" for a, b in zip(ours["ms_all"], py["ms_all"]))
        print(f"| {name} | {gf:.1f} | {tr['ms']:.1f} | {ours['ms']:.1f} | {py['ms']:.1f} | {tr['ms'] / py['ms']:.2f} "
              f"| {ours['ms'] / py['ms']:.2f} ({per}) | {gf / tr['ms'] * 1e3:.0f} / {gf / py['ms'] * 1e3:.0f} "
              f"| {tr['startup_s']:.2f} / {ours['startup_s']:.2f} / {py['startup_s']:.2f} "
              f"| {tr['rss']:.0f} / {ours['rss']:.0f} / {py['rss']:.0f} |")
    if int8:
        print()
        print("| model (int8-dynamic) | ours-ort int8 ms | py-ort int8 ms | ours int8 / py-ort fp32 | ours/py int8 | patch_tokens vs PyTorch fp32: 1 - mean cos, max abs |")
        print("|---|---|---|---|---|---|")
        for name, gf, s in rows:
            if "ours_int8" not in s:
                continue
            q, pq, py = s["ours_int8"], s["python_int8"], s["python"]
            p = (q["parity"] or {}).get("patch_tokens", {})
            fid = f"{1 - p['mean_cosine']:.2e}, {p['max_abs']:.2e}" if p else "n/a"
            print(f"| {name} | {q['ms']:.1f} | {pq['ms']:.1f} | {q['ms'] / py['ms']:.2f} | {q['ms'] / pq['ms']:.2f} | {fid} |")
    print()
    print("| model | native ms | py-ort ms | native/py-ort | native GFLOP/s | start-up native (s) | peak RSS native (MiB) | native vs PyTorch patch_tokens: mean cos, max abs |")
    print("|---|---|---|---|---|---|---|---|")
    for name, gf, s in rows:
        nat, py = s["native"], s["python"]
        p = (nat["parity"] or {}).get("patch_tokens", {})
        fid = f"{p['mean_cosine']:.8f}, {p['max_abs']:.2e}" if p else "n/a"
        print(f"| {name} | {nat['ms']:.1f} | {py['ms']:.1f} | {nat['ms'] / py['ms']:.2f} | {gf / nat['ms'] * 1e3:.0f} "
              f"| {nat['startup_s']:.2f} | {nat['rss']:.0f} | {fid} |")
    print()
    print("| model | native ms/frame at batch 1 / " + " / ".join(str(b) for b in BATCHES) + " | per frame vs py-ort batch 1 |")
    print("|---|---|---|")
    for name, gf, s in rows:
        per = [s["native"]["ms"]] + [s[f"native_b{b}"]["ms"] / b for b in BATCHES]
        py_ms = s["python"]["ms"]
        ms = " / ".join(f"{x:.1f}" for x in per)
        ratio = " / ".join(f"{x / py_ms:.2f}" for x in per)
        print(f"| {name} | {ms} | {ratio} |")
    if parity:
        print()
        print("tract vs PyTorch, full-size ViT-S/16 @224 (random weights, seeded input):")
        for k, v in parity.items():
            print(f"  {k}: max abs {v['max_abs']:.2e}, mean cosine {v['mean_cosine']:.9f}")


if __name__ == "__main__":
    main()
