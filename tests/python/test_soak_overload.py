"""The short forms of the soak and overload benchmarks (benches/soak.py, benches/overload.py),
run on the debug build `cargo test` leaves. Their long forms (an hour; 10 minutes per factor)
are README commands; figures in benches/RESULTS.md.

* soak: every demo head, ROS on loopback, recording split every 5 s, the live view with a
  Foxglove client; RSS growth < 1 % after warm-up, constant fds and threads, no panic, every
  split file readable by `mcap` and the bag by `rosbags`.
* overload: input at 2x and 5x the processing rate; frames in = processed + dropped + failed
  exactly, p99 end-to-end <= 2x the time a frame takes to process, recorded inputs = processed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from binaries import perception_binary

REPO = Path(__file__).resolve().parents[2]


def bench(script: str, out: Path, *args: str, timeout: float) -> dict:
    binary = perception_binary()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: build it first (`cargo build` or `cargo test`)")
    p = subprocess.run([sys.executable, str(REPO / "benches" / script), "--binary", str(binary),
                        "--out", str(out), *args], capture_output=True, text=True, timeout=timeout)
    name = script.removesuffix(".py")
    figures = json.loads((out / f"{name}.json").read_text()) if (out / f"{name}.json").exists() else {}
    assert p.returncode == 0, f"{script} failed:\n{p.stdout[-4000:]}\n{p.stderr[-3000:]}"
    return figures


def test_soak_short(tmp_path):
    r = bench("soak.py", tmp_path, "--seconds", "50", "--warmup", "20", "--fps", "8",
              "--width", "320", "--height", "240", "--split-seconds", "5", timeout=400)
    assert r["ok"] and r["bag"]["files"] >= 5, r
    assert (tmp_path / "rss.png").stat().st_size > 0


def test_overload_short(tmp_path):
    r = bench("overload.py", tmp_path, "--seconds", "15", "--width", "320", "--height", "240",
              timeout=600)
    assert [row["factor"] for row in r["rows"]] == [2.0, 5.0]
    assert all(row["dropped"] > 0 for row in r["rows"]), r
