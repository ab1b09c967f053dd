#!/usr/bin/env python3
"""Quantise an exported backbone (``NAME.onnx`` + ``NAME.json`` from ``export_backbone.py``)
to ``NAME_int8.onnx`` + ``NAME_int8.json`` without exporting it again.

The same as ``export_backbone.py --quantize int8-dynamic``: the linear layers get per-channel
s8 weights, activations are quantised per tensor at run time (onnxruntime ``quantize_dynamic``);
the manifest's ``quantization`` names the float model, which stays beside it (the node's parity
reference, and the identity the heads are checked against). Run it with ``--backend onnxruntime``.

    python models/quantize_backbone.py --model models/dinov3_vits16.onnx

Exit codes: 0 ok, 2 bad arguments or input, 1 quantisation or fidelity failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import export_backbone as eb


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quantize_backbone.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="float backbone .onnx (its .json beside it)")
    p.add_argument("--height", type=int, help="size of the fidelity check input (default: the model's, else 224)")
    p.add_argument("--width", type=int, help="size of the fidelity check input (default: the model's, else 224)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fidelity check input (default 0)")
    p.add_argument("--tolerance", type=float, default=1e-2, help="largest 1 - mean patch cosine vs the float model")
    args = p.parse_args(argv)
    manifest_path = args.model.with_suffix(".json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        print(f"error: {manifest_path}: {e}; export the model with models/export_backbone.py", file=sys.stderr)
        return 2
    if manifest.get("quantization"):
        print(f"error: {args.model} is already quantised; give its float model", file=sys.stderr)
        return 2
    if eb.sha256_of(args.model) != manifest.get("onnx_sha256"):
        print(f"error: {args.model} does not match the sha256 in {manifest_path}", file=sys.stderr)
        return 2
    height = args.height or manifest.get("input_height") or 224
    width = args.width or manifest.get("input_width") or 224
    return eb.write_int8(args.model, manifest, height, width, args.seed, args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
