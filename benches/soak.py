#!/usr/bin/env python3
"""Soak: the node on the synthetic scene with every demo head, publishing on ROS 2 (loopback),
recording with splitting and serving the live view to a Foxglove client, for a set time.

Every second it samples the node's resident set (VmRSS), open file descriptors, threads and the
recording's size on disk. At the end it stops the node with SIGINT and checks:

* RSS growth after warm-up < 1 % (mean of the last tenth of the samples after warm-up against
  the mean of the first tenth);
* file descriptors and threads constant after warm-up: the usual count (the mode) of the last
  tenth equals that of the first, and short-lived extras stay within 2 (a split holds the old
  and the new file for a moment; the recorder and the live view's runtime start short-lived
  workers);
* the node exits 0 and never panicked; the live-view client received messages throughout;
* every split file of the bag is readable: `mcap` reads each file's summary and every message,
  `rosbags` reads the whole bag, and the counts agree.

    benches/soak.py --seconds 3600 --out /tmp/soak          # the long form (release build)
    benches/soak.py --seconds 45 --warmup 15 --width 320 --height 240   # the test command's

Writes OUT/samples.csv, OUT/soak.json (figures and verdicts) and OUT/rss.png (RSS over time);
exits 1 when a criterion fails. The binary: --binary, else $DINOV3_PERCEPTION_BINARY, else
$CARGO_TARGET_DIR (or target)/release, else /debug.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benches"))
from node_binary import default_binary  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_sample(pid: int) -> tuple[int, int, int]:
    """(VmRSS in KiB, open fds, threads) of a live process."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


def disk_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def check_bag(bag: Path) -> dict:
    """Every split file read by mcap (summary + messages) and the bag by rosbags; counts."""
    from mcap.reader import make_reader
    from rosbags.highlevel import AnyReader

    files = sorted(bag.glob("*.mcap"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    per_file = []
    for path in files:
        with open(path, "rb") as f:
            reader = make_reader(f)
            summary = reader.get_summary()
            if summary is None:
                raise AssertionError(f"{path}: no summary")
            n = sum(1 for _ in reader.iter_messages())
            if n != summary.statistics.message_count:
                raise AssertionError(f"{path}: {n} messages, summary says "
                                     f"{summary.statistics.message_count}")
            per_file.append(n)
    with AnyReader([bag]) as reader:
        theirs = sum(1 for _ in reader.messages())
    if theirs != sum(per_file):
        raise AssertionError(f"rosbags reads {theirs} messages, mcap {sum(per_file)}")
    return {"files": len(files), "messages": theirs, "per_file": per_file}


def mode(values: list[int]) -> int:
    return max(set(values), key=values.count)


def verdicts(samples: list[dict], warmup: float) -> dict:
    after = [s for s in samples if s["t"] >= warmup]
    if len(after) < 10:
        raise SystemExit(f"only {len(after)} samples after the {warmup} s warm-up: run longer")
    tenth = max(1, len(after) // 10)
    first = sum(s["rss_kib"] for s in after[:tenth]) / tenth
    last = sum(s["rss_kib"] for s in after[-tenth:]) / tenth
    fds = [s["fds"] for s in after]
    threads = [s["threads"] for s in after]
    growth = (last - first) / first
    return {
        "rss_first_mib": first / 1024,
        "rss_last_mib": last / 1024,
        "rss_max_mib": max(s["rss_kib"] for s in after) / 1024,
        "rss_growth": growth,
        "rss_ok": growth < 0.01,
        "fds_min": min(fds), "fds_max": max(fds), "fds_first": fds[0], "fds_last": fds[-1],
        "fds_ok": max(fds) - min(fds) <= 2 and mode(fds[:tenth]) == mode(fds[-tenth:]),
        "threads_min": min(threads), "threads_max": max(threads),
        "threads_ok": max(threads) - min(threads) <= 2
                      and mode(threads[:tenth]) == mode(threads[-tenth:]),
    }


def plot(samples: list[dict], warmup: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    ax.plot(t, [s["rss_kib"] / 1024 for s in samples], lw=1, label="VmRSS")
    ax.axvline(warmup / 60, color="grey", ls="--", lw=1, label="end of warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(t, [s["fds"] for s in samples], color="tab:orange", lw=0.8, alpha=0.6)
    ax2.set_ylabel("open fds", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the criteria apply (default: a quarter, at most 600)")
    ap.add_argument("--fps", type=float, default=15)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--split-seconds", type=float, default=None,
                    help="record.split_duration (default: a tenth of the run, at least 5 s)")
    ap.add_argument("--record-images", default="jpeg", choices=["raw", "jpeg", "none"],
                    help="record.images (default jpeg: an hour of raw 640x480 frames is ~100 GB)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dinov3_soak"))
    ap.add_argument("--binary", type=Path, default=None)
    ap.add_argument("--no-ros", action="store_true", help="do not join the ROS graph")
    args = ap.parse_args()

    binary = args.binary or default_binary()
    warmup = args.warmup if args.warmup is not None else min(600.0, args.seconds / 4)
    split = args.split_seconds or max(5.0, args.seconds / 10)
    args.out.mkdir(parents=True, exist_ok=True)
    bag = args.out / "bag"
    if bag.exists():
        sys.exit(f"{bag} exists: remove it or pick another --out")
    port = free_port()
    cmd = [str(binary), "run", "--fps", str(args.fps), "--width", str(args.width),
           "--height", str(args.height), "--record", str(bag), "--status-interval", "10",
           "--foxglove", f"127.0.0.1:{port}"]
    if args.no_ros:
        cmd.append("--no-ros")
    cmd += ["--ros-args", "-p", f"record.split_duration:={split}",
            "-p", f"record.images:={args.record_images}"]
    env = {**os.environ, "RUST_LOG": "info,rustdds=error", "ROS_LOCALHOST_ONLY": "1",
           "ROS_DOMAIN_ID": str(random.Random(os.getpid()).randrange(150, 200))}
    log_path = args.out / "node.log"
    print(f"soak: {args.seconds:.0f} s, warm-up {warmup:.0f} s, split every {split:.0f} s, "
          f"{args.width}x{args.height} @ {args.fps} fps, {binary}", flush=True)
    with open(log_path, "w") as log:
        node = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        viewer = subprocess.Popen(
            ["node", str(REPO / "tests/node/live_view.mjs"), f"ws://127.0.0.1:{port}",
             "--seconds", str(args.seconds + 120), "--connect-seconds", "120", "--counts-only"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples = []
        start = time.monotonic()
        try:
            while (t := time.monotonic() - start) < args.seconds:
                if node.poll() is not None:
                    raise SystemExit(f"the node exited early ({node.returncode}): see {log_path}")
                rss, fds, threads = proc_sample(node.pid)
                samples.append({"t": round(t, 2), "rss_kib": rss, "fds": fds,
                                "threads": threads, "disk_bytes": disk_bytes(bag)})
                time.sleep(max(0.0, 1.0 - (time.monotonic() - start - t)))
        finally:
            node.send_signal(signal.SIGINT)
            try:
                rc = node.wait(timeout=120)
            except subprocess.TimeoutExpired:
                node.kill()
                rc = "hung"
        viewer_out, viewer_err = viewer.communicate(timeout=180)

    with open(args.out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[0]))
        w.writeheader()
        w.writerows(samples)
    log_text = log_path.read_text(errors="replace")
    result = {"seconds": args.seconds, "warmup": warmup, "split_seconds": split, "fps": args.fps,
              "size": f"{args.width}x{args.height}", "binary": str(binary),
              "samples": len(samples), "exit": rc, "panics": log_text.count("panicked"),
              "disk_mib": samples[-1]["disk_bytes"] / 2**20}
    result.update(verdicts(samples, warmup))
    last_status = [ln for ln in log_text.splitlines() if "stopped after" in ln]
    result["final_line"] = last_status[-1] if last_status else None
    try:
        summary = json.loads(viewer_out.strip().splitlines()[-1])
        counts = {t: v["count"] for t, v in summary["topics"].items()}
        failures = sum(v["decode_failures"] for v in summary["topics"].values())
        result["live_view_messages"] = sum(counts.values())
        result["live_view_decode_failures"] = failures
        result["live_view_ok"] = result["live_view_messages"] > 0 and failures == 0
    except (IndexError, KeyError, ValueError):
        result["live_view_messages"] = None
        result["live_view_ok"] = False
        result["live_view_error"] = viewer_err[-2000:]
    try:
        result["bag"] = check_bag(bag)
        result["bag_ok"] = result["bag"]["files"] >= 2
    except Exception as e:  # noqa: BLE001 - any reader failure is the verdict
        result["bag"] = repr(e)
        result["bag_ok"] = False
    result["ok"] = bool(result["rss_ok"] and result["fds_ok"] and result["threads_ok"]
                        and rc == 0 and result["panics"] == 0 and result["bag_ok"]
                        and result["live_view_ok"])
    (args.out / "soak.json").write_text(json.dumps(result, indent=2))
    plot(samples, warmup, args.out / "rss.png",
         f"soak {args.seconds / 60:.0f} min, {args.width}x{args.height} @ {args.fps:g} fps, all heads, "
         f"ROS + record (split) + live view")
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
