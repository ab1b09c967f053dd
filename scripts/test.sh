#!/usr/bin/env bash
# Runs every test: formatting, lints, the Rust tests (parity against committed PyTorch
# references included) and the Python tests of the export tools.
# Creates .venv from models/requirements.txt on first use (PyTorch: a multi-GB download).
set -euo pipefail
cd "$(dirname "$0")/.."

# The v4l crate generates its bindings with bindgen, which needs libclang.
# (libclang-cpp, which a fresh machine may have, is not what bindgen loads.)
if ! ldconfig -p | grep -E 'libclang(-[0-9.]+)?\.so' > /dev/null; then
    echo "== installing libclang (for the v4l crate's bindgen)"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang1-14
    else
        echo "libclang is missing: run 'sudo apt-get install libclang1-14' (Debian/Ubuntu)" >&2
        exit 2
    fi
fi

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

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo build --features humble (ROS 2 Humble: 24-byte GIDs; the interop tests run it)"
cargo build --quiet --bin dinov3_perception --no-default-features --features humble
mkdir -p target/humble
cp target/debug/dinov3_perception target/humble/dinov3_perception
cargo build --quiet --bin dinov3_perception   # target/debug/ holds the default (Jazzy) build again
echo "== cargo test"
cargo test --all-targets
echo "== pytest tests/python"
"$VENV/bin/python" -m pytest -q tests/python
