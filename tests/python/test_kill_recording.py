"""Fault suite: SIGINT, SIGTERM and SIGKILL at random points of a recording, 50 times.

Seeded (the seed, the signal and the delay of every round are in the failure message), each
round starts `run --record` with splitting on (a new file every 0.4 s, so signals also land
during a split), waits a random time from before the first file exists to a few seconds in,
and sends one signal. Then:

* SIGINT / SIGTERM: the node exits 0, `metadata.yaml` is written, and both independent readers
  (`rosbags`, and Python `mcap` on every file) read every message the summary counts.
* SIGKILL: no `metadata.yaml`; every file reads with `mcap`'s streaming reader up to where it
  was cut (only the chunk being written may be missing, and only in the last file); `reindex`
  writes the summaries and `metadata.yaml`, after which `rosbags` reads exactly the messages
  the streaming reader found.

The node is the debug build that `cargo test` leaves (see binaries.py).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mcap.exceptions import EndOfFile
from mcap.reader import NonSeekingReader, make_reader
from rosbags.highlevel import AnyReader

from binaries import perception_binary

BINARY = perception_binary()
ROUNDS = 50
SEED = 14
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


def start(bag: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BINARY), "run", "--no-ros", "--record", str(bag), "--width", "160", "--height", "120",
         "--fps", "30", "--ros-args", "-p", "record.flush_interval:=0.1",
         "-p", "record.split_duration:=0.4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RUST_LOG": "warn"})


def stream_count(path: Path) -> tuple[int, bool]:
    """Messages the streaming reader decodes, and whether the file ended cleanly."""
    n = 0
    with open(path, "rb") as f:
        try:
            # Not in log-time order: that would hold every message back until the end of the file.
            for _ in NonSeekingReader(f).iter_messages(log_time_order=False):
                n += 1
        except EndOfFile:
            return n, False
    return n, True


def summary_count(path: Path) -> int:
    with open(path, "rb") as f:
        summary = make_reader(f).get_summary()
        assert summary is not None, f"{path}: no summary"
        return summary.statistics.message_count


def rosbags_count(bag: Path) -> int:
    with AnyReader([bag]) as reader:
        return sum(1 for _ in reader.messages())


def files(bag: Path) -> list[Path]:
    return sorted(bag.glob("*.mcap"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))


def test_signals_at_random_points_leave_every_bag_readable(tmp_path):
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} is missing: build it first (`cargo build` or `cargo test`)")
    rng = random.Random(SEED)
    outcomes = {s.name: 0 for s in SIGNALS}
    cut_files = 0
    for k in range(ROUNDS):
        sig = SIGNALS[k % 3] if k < 3 else rng.choice(SIGNALS)
        delay = rng.uniform(0.05, 3.0)
        where = f"round {k} (seed {SEED}): {sig.name} after {delay:.2f} s"
        bag = tmp_path / f"bag{k}"
        proc = start(bag)
        time.sleep(delay)
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{where}: the node did not exit within 60 s of the signal")
        assert "panicked" not in err, f"{where}:\n{err[-3000:]}"
        if not bag.exists():
            # Signalled before the recorder opened the bag: nothing to read, nothing lost (a
            # signal before the handler is installed ends the process the default way).
            assert proc.returncode in (0, -sig), f"{where}: exit {proc.returncode}\n{err[-3000:]}"
            outcomes[sig.name] += 1
            continue
        if sig != signal.SIGKILL:
            assert proc.returncode == 0, f"{where}: exit {proc.returncode}\n{err[-3000:]}"
        mcaps = files(bag)
        if sig != signal.SIGKILL:
            assert (bag / "metadata.yaml").is_file(), f"{where}: no metadata.yaml"
            total = 0
            for f in mcaps:
                n, clean = stream_count(f)
                assert clean, f"{where}: {f.name} does not end cleanly"
                assert n == summary_count(f), f"{where}: {f.name}: summary disagrees"
                total += n
            assert rosbags_count(bag) == total, where
        else:
            assert not (bag / "metadata.yaml").exists(), where
            total = 0
            before = []
            for i, f in enumerate(mcaps):
                n, clean = stream_count(f)
                before.append((f.name, f.stat().st_size, n, clean))
                if not clean:
                    assert i == len(mcaps) - 1, f"{where}: {f.name} is cut but is not the last file"
                    cut_files += 1
                total += n
            r = subprocess.run([str(BINARY), "reindex", str(bag)], capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, f"{where}: reindex failed:\n{r.stderr[-3000:]}"
            assert (bag / "metadata.yaml").is_file(), f"{where}: reindex wrote no metadata.yaml"
            for f in files(bag):
                assert stream_count(f)[1], f"{where}: {f.name} still cut after reindex"
            after = [(f.name, f.stat().st_size, summary_count(f)) for f in files(bag)]
            assert rosbags_count(bag) == total, (
                f"{where}: rosbags after reindex; before {before}, after {after}")
        outcomes[sig.name] += 1
    # Every signal was exercised, and some SIGKILLs did cut a file mid-write.
    assert all(v > 0 for v in outcomes.values()), outcomes
    print(f"outcomes {outcomes}, SIGKILLs that cut a file: {cut_files}")
