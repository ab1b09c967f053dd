"""Which dinov3_perception binary the Python benchmarks run (soak.py, overload.py): --binary,
else $DINOV3_PERCEPTION_BINARY, else $CARGO_TARGET_DIR (or target)/release, else /debug."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_binary() -> Path:
    if os.environ.get("DINOV3_PERCEPTION_BINARY"):
        return Path(os.environ["DINOV3_PERCEPTION_BINARY"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        b = target / profile / "dinov3_perception"
        if b.is_file():
            return b
    sys.exit(f"no dinov3_perception binary under {target}: build it (cargo build --release)")
