"""Where the Python tests find the node's binaries (one place for every test module).

The debug build `cargo test` leaves: $DINOV3_PERCEPTION_BINARY when set, else
$CARGO_TARGET_DIR/debug (relative to the repository when relative), else target/debug. The
Humble build that scripts/test.sh makes sits beside it in `<target>/humble/`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def target_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target if target.is_absolute() else REPO / target


def perception_binary() -> Path:
    """The default (Jazzy) debug binary."""
    given = os.environ.get("DINOV3_PERCEPTION_BINARY")
    return Path(given) if given else target_dir() / "debug" / "dinov3_perception"


def humble_binary() -> Path:
    """The `humble` feature build scripts/test.sh copies to `<target>/humble/`."""
    return target_dir() / "humble" / "dinov3_perception"
