#!/usr/bin/env bash
# Rebuilds the demo model set in models/demo/ that `dinov3_perception run` uses by default:
# a tiny architecture-exact DINOv3 (random weights, 240x320 input) and heads trained on frozen
# features of the synthetic scene. Then scores the heads on held-out synthetic frames.
# Needs the venv of models/requirements.txt (.venv or $PYTHON) and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
BIN=target/release/dinov3_perception
DEMO=models/demo
WORK="${DEMO_WORK:-target/demo-data}"
cargo build --release --bin dinov3_perception

if [[ "${REEXPORT_BACKBONE:-0}" == 1 ]]; then
  "$PY" models/export_backbone.py --random-init --variant tiny --seed 0 \
      --height 240 --width 320 --layers 1,2 --out "$DEMO/dinov3_tiny_240x320.onnx"
fi

rm -rf "$WORK"
# Training frames (scenes seeded 100..), held-out frames from other scenes (seeded 1000..).
"$BIN" dataset synthetic --out "$WORK/train" --seed 100 --scenes 24 --frames-per-scene 16 --stride 9
"$BIN" dataset synthetic --out "$WORK/heldout" --seed 1000 --scenes 6 --frames-per-scene 8 --stride 13

"$PY" models/train_heads.py --backbone "$DEMO/dinov3_tiny_240x320.onnx" \
    --dataset "$WORK/train" --val "$WORK/heldout" \
    --tasks detection,segmentation,classification --epochs 30 \
    --cache "$WORK/cache" --out "$DEMO"
# Depth: metric range capped at 80 m (the ground reaches kilometres near the horizon).
"$PY" models/train_heads.py --backbone "$DEMO/dinov3_tiny_240x320.onnx" \
    --dataset "$WORK/train" --val "$WORK/heldout" \
    --tasks depth --min-depth 1 --max-depth 80 --label-stride 4 \
    --cache "$WORK/cache" --out "$DEMO"

# AnomalyDINO memory bank of normal frames (64 frames of other scenes, coreset to 10k patches).
"$BIN" dataset synthetic --out "$WORK/normal" --seed 500 --scenes 8 --frames-per-scene 8 --stride 11
"$BIN" bank build --model "$DEMO/dinov3_tiny_240x320.onnx" --images "$WORK/normal/images" \
    --out "$DEMO/anomaly" --max-patches 10000

# Quality on held-out frames, by the Rust heads and independent metric code.
"$BIN" predict --model "$DEMO/dinov3_tiny_240x320.onnx" --heads "$DEMO" \
    --images "$WORK/heldout/images" --out "$WORK/pred"
"$PY" models/eval_heads.py --dataset "$WORK/heldout" --predictions "$WORK/pred" \
    --max-depth 80 --json "$DEMO/quality.json"
