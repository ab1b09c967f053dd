"""Recorder throughput benchmark (issue #11): our recorder and bag writer vs Python `mcap`, one invocation.

    python benches/bench_record.py [--seconds 10] [--burst 240] [--profile release|dev]

1. Builds examples/record_bench.rs (`cargo build --example record_bench`, in --profile; the
   target directory is $CARGO_TARGET_DIR or target/).
2. Runs it (one process: frame results computed once with the bundled demo model and all heads,
   then fed to fresh recorders at 30 Hz and back to back, then `BagWriter` alone on the messages
   read back from the paced zstd bag); the bags go to a scratch directory under the target
   directory, removed at the end.
3. Runs benches/record_peer.py (Python `mcap` Writer, the same messages, same chunk size) on
   that bag.
Prints Markdown tables to paste into benches/RESULTS.md (--json: the raw reports too). Fails if a 30 Hz run dropped anything.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each 30 Hz run")
    ap.add_argument("--burst", type=int, default=240, help="frames of each back-to-back run (at most 300)")
    ap.add_argument("--profile", choices=["release", "dev"], default="release")
    ap.add_argument("--json", type=Path, help="also write both raw reports here")
    a = ap.parse_args()

    cmd = ["cargo", "build", "--example", "record_bench"] + (["--release"] if a.profile == "release" else [])
    subprocess.run(cmd, cwd=ROOT, check=True)
    exe = target_dir() / ("release" if a.profile == "release" else "debug") / "examples" / "record_bench"
    scratch = Path(tempfile.mkdtemp(prefix="bench-record-", dir=target_dir()))
    try:
        out = scratch / "bags"
        # Exit status 1 with a report: a 30 Hz run dropped messages (listed in "failures").
        p = subprocess.run([str(exe), str(out), str(a.seconds), str(a.burst)], stdout=subprocess.PIPE, text=True)
        lines = p.stdout.strip().splitlines()
        if p.returncode not in (0, 1) or not lines:
            sys.exit(f"{exe} failed with status {p.returncode}")
        ours = json.loads(lines[-1])
        p = subprocess.run([PY, str(ROOT / "benches/record_peer.py"), ours["peer_bag"], str(scratch / "peer"),
                            "--chunk-size", str(ours["chunk_size"])], check=True, stdout=subprocess.PIPE, text=True)
        peer = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    peer_by = {w["compression"]: w for w in peer["writer"]}
    print(f"model {ours['model']}, heads: {', '.join(ours['heads'])}; {ours['distinct_frames']} distinct 640x480 "
          f"frame results cycled; chunk size {ours['chunk_size']} B; profile {a.profile}; "
          f"Python mcap {peer['mcap_version']}\n")
    print("| run | compression | input frames | ground truth | frames | fps | messages written | dropped "
          "| payload MB/s | bag MB/s | disk MB/s (bag + truth) | compression ratio | CPU ms/frame: all "
          "| consume (sink thread) | rest (writer thread, zstd workers) | payload MB/s / peer writer |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    failed = ours["failures"]
    for r in ours["runs"]:
        paced = r["rate_hz"] is not None
        vs = "" if paced else f"{r['payload_mb_s'] / peer_by[r['compression']]['payload_mb_s']:.2f}"
        print(f"| {'30 Hz' if paced else 'back to back'} | {r['compression']} | {r['images']} "
              f"| {'yes' if r['ground_truth'] else 'no'} | {r['frames']} | {r['fps']:.1f} | {r['written']} "
              f"| {r['dropped']} | {r['payload_mb_s']:.1f} | {r['bag_mb_s']:.1f} | {r['disk_mb_s']:.1f} "
              f"| {r['ratio']:.2f} | {r['cpu_ms_per_frame']:.1f} | {r['consume_cpu_ms_per_frame']:.1f} "
              f"| {r['writer_cpu_ms_per_frame']:.1f} | {vs} |")
    print()
    print("| writer alone, same messages | messages | payload MB | ours MB/s | peer MB/s | ours/peer time "
          "| ours CPU s | peer CPU s | ours/peer CPU | ours / peer file MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for w in ours["writer"]:
        q = peer_by[w["compression"]]
        print(f"| {w['compression']} | {w['messages']} | {w['payload_bytes'] / 1e6:.1f} | {w['payload_mb_s']:.1f} "
              f"| {q['payload_mb_s']:.1f} | {w['wall_s'] / q['wall_s']:.2f} | {w['cpu_s']:.3f} | {q['cpu_s']:.3f} "
              f"| {w['cpu_s'] / q['cpu_s']:.2f} | {w['bag_bytes'] / 1e6:.1f} / {q['bag_bytes'] / 1e6:.1f} |")
    print("\n| zstd, `mcap` crate directly, same messages | wall s | CPU s | payload MB/s |")
    print("|---|---:|---:|---:|")
    for t in ours["mcap_zstd_threads"]:
        print(f"| compression_threads({t['compression_threads']}) | {t['wall_s']:.3f} | {t['cpu_s']:.3f} "
              f"| {t['payload_mb_s']:.1f} |")
    frames = ours["runs"][0]["frames"]
    total = sum(t["bytes"] for t in ours["topics"])
    print("\n| topic (30 Hz zstd bag) | messages | bytes per message | share of payload |")
    print("|---|---:|---:|---:|")
    for t in sorted(ours["topics"], key=lambda t: -t["bytes"]):
        if t["messages"]:
            print(f"| {t['topic']} | {t['messages']} | {t['bytes'] // t['messages']} | {t['bytes'] / total:.1%} |")
    print(f"| all ({frames} frames) | {sum(t['messages'] for t in ours['topics'])} | {total // frames} per frame | |")
    if a.json:
        a.json.write_text(json.dumps({"ours": ours, "peer": peer}, indent=1) + "\n")
    if failed:
        sys.exit("; ".join(failed))


if __name__ == "__main__":
    main()
