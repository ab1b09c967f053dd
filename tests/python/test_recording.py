"""The node's recordings read by independent implementations, and an independent writer's bag
replayed by the node.

* Python `mcap` + `mcap-ros2-support` (Foxglove's reader and ros2msg/CDR decoder) and
  `rosbags` (an independent rosbag2 implementation, directory reader) decode every message of
  a bag the node recorded; counts and stamps equal what the node published (one message per
  processed frame on every per-frame topic, stamped with the frame's capture stamp).
* A bag written by `rosbags` replays through `--source mcap:`.
* After SIGKILL the bag reads up to its last complete chunk, and `reindex` makes it whole.
* A full disk (a small tmpfs in a user+mount namespace) stops recording cleanly: the node
  keeps running, and what was written stays readable.

The node is the debug build that `cargo test` leaves (see binaries.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from mcap.exceptions import EndOfFile
from mcap.reader import NonSeekingReader, make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from binaries import perception_binary
from node_reader import FRAME_TOPICS

REPO = Path(__file__).resolve().parents[2]
BINARY = perception_binary()
SMALL = ["--width", "160", "--height", "120", "--fps", "0"]
PER_FRAME = ["/dinov3/input/image", *FRAME_TOPICS]


def node(*args, timeout=300, check=True):
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} is missing: build it first (`cargo build` or `cargo test`)")
    p = subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "RUST_LOG": "info"})
    if check:
        assert p.returncode == 0, p.stderr[-4000:]
    return p


def record(bag: Path, frames: int, *extra: str):
    return node("run", "--no-ros", "--max-frames", str(frames), "--record", str(bag),
                "--status-interval", "0.2", *SMALL, *extra)


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def read_with_mcap(path: Path) -> dict:
    """Topic -> list of (log_time, decoded message), every message decoded."""
    out: dict = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        assert header.profile == "ros2"
        summary = reader.get_summary()
        for schema in summary.schemas.values():
            assert schema.encoding == "ros2msg"
            assert "=" * 80 in schema.data.decode() or "/" not in schema.data.decode()
        for ch in summary.channels.values():
            assert ch.message_encoding == "cdr"
            assert "offered_qos_profiles" in ch.metadata
        meta = [m for m in reader.iter_metadata() if m.name == "rosbag2"]
        assert meta and "serialized_metadata" in meta[0].metadata
        for _schema, channel, message, decoded in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((message.log_time, decoded))
        assert sum(len(v) for v in out.values()) == summary.statistics.message_count
    return out


def read_with_rosbags(bag: Path) -> dict:
    out: dict = {}
    with AnyReader([bag]) as reader:
        for conn, timestamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((timestamp, reader.deserialize(raw, conn.msgtype)))
    return out


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_both_readers_decode_every_message_with_the_published_stamps(tmp_path, compression):
    bag = tmp_path / "rec"
    p = record(bag, 6, "--ros-args", "-p", f"record.compression:={compression}")
    processed = int(re.search(r"(\d+) processed", p.stderr.splitlines()[-1]).group(1))
    assert processed == 6
    by_mcap = read_with_mcap(bag / "rec_0.mcap")
    by_rosbags = read_with_rosbags(bag)
    assert {t: len(v) for t, v in by_mcap.items()} == {t: len(v) for t, v in by_rosbags.items()}
    stamps = [stamp_ns(m.header) for _, m in by_mcap["/dinov3/input/image"]]
    assert len(stamps) == processed and stamps == sorted(stamps)
    for topic in PER_FRAME:
        for reader in (by_mcap, by_rosbags):
            got = [stamp_ns(m.header) for _, m in reader[topic]]
            assert got == stamps, topic
    assert len(by_mcap["/dinov3/anomaly/score"]) == processed
    img = by_rosbags["/dinov3/input/image"][0][1]
    assert (img.width, img.height, img.encoding) == (160, 120, "rgb8")
    assert np.asarray(img.data).size == 160 * 120 * 3
    dets = by_rosbags["/dinov3/detections"]
    assert all(d.header.frame_id for _, d in dets)
    cloud = by_mcap["/dinov3/points"][0][1]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
    assert len(cloud.data) == cloud.row_step * cloud.height
    diag = by_rosbags["/diagnostics"]
    assert diag and diag[-1][1].status[0].name.endswith(": pipeline")
    # The bytes both readers decoded are the same messages.
    a = [m.data for _, m in by_mcap["/dinov3/depth"]]
    b = [bytes(np.asarray(m.data, dtype=np.uint8)) for _, m in by_rosbags["/dinov3/depth"]]
    assert [bytes(x) for x in a] == b


def write_rosbags_bag(path: Path, frames: int) -> list[int]:
    """A bag of `frames` 96x64 rgb8 images on /cam/image_raw, written by rosbags (version 9)."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    rng = np.random.default_rng(3)
    stamps = []
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        for i in range(frames):
            ns = 1_700_000_000_000_000_000 + i * 50_000_000
            stamps.append(ns)
            pixels = rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8)
            msg = Image(header=Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9),
                                      frame_id="cam"),
                        height=64, width=96, encoding="rgb8", is_bigendian=0, step=96 * 3,
                        data=pixels.reshape(-1))
            w.write(conn, ns, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return stamps


def test_a_bag_written_by_rosbags_replays_through_mcap(tmp_path):
    src = tmp_path / "theirs"
    stamps = write_rosbags_bag(src, 5)
    out = tmp_path / "ours"
    p = node("run", "--no-ros", "--source", f"mcap:{src}", "--rate", "0", "--record", str(out))
    assert "5 processed" in p.stderr.splitlines()[-1]
    got = read_with_rosbags(out)
    assert [stamp_ns(m.header) for _, m in got["/dinov3/detections"]] == stamps
    assert [m.header.frame_id for _, m in got["/dinov3/detections"]] == ["cam"] * 5
    assert {(m.width, m.height) for _, m in got["/dinov3/input/image"]} == {(96, 64)}
    # The single .mcap file replays too.
    p = node("run", "--no-ros", "--source", f"mcap:{src / 'theirs.mcap'}", "--rate", "0",
             "--no-heads")
    assert "5 processed" in p.stderr.splitlines()[-1]


def test_sigkill_leaves_the_bag_readable_and_reindex_completes_it(tmp_path):
    bag = tmp_path / "killed"
    proc = subprocess.Popen([str(BINARY), "run", "--no-ros", "--record", str(bag), "--width", "160",
                             "--height", "120", "--fps", "20", "--ros-args", "-p",
                             "record.flush_interval:=0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mcap_file = bag / "killed_0.mcap"
    deadline = time.time() + 120
    while (not mcap_file.exists() or mcap_file.stat().st_size < 400_000) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (bag / "metadata.yaml").exists()
    # The independent reader reads every message up to the last complete chunk.
    seen = Counter()
    with open(mcap_file, "rb") as f:
        try:
            reader = NonSeekingReader(f, decoder_factories=[DecoderFactory()])
            for _s, ch, _m, _d in reader.iter_decoded_messages(log_time_order=False):
                seen[ch.topic] += 1
        except EndOfFile:  # where the file was cut: the chunk being written
            pass
    assert sum(seen.values()) > 10
    node("reindex", str(bag))
    after = read_with_mcap(mcap_file)
    assert {t: len(v) for t, v in after.items()} == dict(seen)
    theirs = read_with_rosbags(bag)
    assert {t: len(v) for t, v in theirs.items()} == dict(seen)


def test_full_disk_stops_recording_cleanly_and_the_node_goes_on(tmp_path):
    """Recording into a 3 MB tmpfs (in a mount namespace of this test) runs out of space."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for the full-disk test")
    mnt = tmp_path / "small"
    mnt.mkdir()
    keep = tmp_path / "copy"
    script = (f"mount -t tmpfs -o size=3m tmpfs {mnt} && "
              f"{BINARY} run --no-ros --max-frames 40 --record {mnt}/bag --width 320 --height 240 "
              f"--fps 0 --ros-args -p record.compression:=none -p record.flush_interval:=0.05; "
              f"rc=$?; cp -r {mnt}/bag {keep}; exit $rc")
    # A mount namespace of our own (as root directly; otherwise inside a user namespace).
    ns = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    p = subprocess.run(["unshare", *ns, "sh", "-c", script],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RUST_LOG": "info"})
    assert p.returncode == 0, p.stderr[-3000:]
    last = p.stderr.splitlines()[-1]
    # The node processed every frame it was asked for ...
    assert "40 processed" in last, p.stderr[-3000:]
    # ... and said why recording stopped, naming the disk and the fix.
    assert "recording stopped" in p.stderr, p.stderr[-3000:]
    assert "disk is full" in p.stderr or "No space left on device" in p.stderr, p.stderr[-3000:]
    assert "reindex" in p.stderr
    # What was written reads up to the last complete chunk, and reindex (with space) completes it.
    node("reindex", str(keep))
    got = read_with_rosbags(keep)
    assert sum(len(v) for v in got.values()) > 0


STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
COCO_TOL = 1e-4  # eval's 12 COCO stats vs pycocotools on the same detections


def test_closed_loop_run_record_eval_equals_pycocotools_on_the_recorded_detections(tmp_path):
    """run --record on the synthetic scene -> eval --recording; the same numbers as pycocotools
    scoring the detections an independent reader decodes from the bag against the ground truth
    the recorder wrote beside it, and anomaly AUROC as scikit-learn computes it from the recorded
    scores and maps. eval --source mcap: (the model run again over the recorded frames) gives
    the same report."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    bag = tmp_path / "demo"
    record(bag, 12, "--anomaly-rate", "0.5")
    out = tmp_path / "report"
    node("eval", "--recording", str(bag), "--max-depth", "80", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 12
    gt_file = bag / "ground_truth" / "annotations.json"
    gt = json.loads(gt_file.read_text())
    by_stem = {Path(im["file_name"]).stem: im["id"] for im in gt["images"]}
    cats = {c["name"]: c["id"] for c in gt["categories"]}
    results = []
    for _, msg in read_with_mcap(bag / "demo_0.mcap")["/dinov3/detections"]:
        image_id = by_stem[str(stamp_ns(msg.header))]
        for d in msg.detections:
            h = d.results[0].hypothesis
            w, hh = d.bbox.size_x, d.bbox.size_y
            x0 = d.bbox.center.position.x - w / 2
            y0 = d.bbox.center.position.y - hh / 2
            results.append({"image_id": image_id, "category_id": cats[h.class_id],
                            "bbox": [x0, y0, w, hh], "score": h.score})
    assert results
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for name, want in zip(STATS, ev.stats):
        assert abs(report["detection"]["stats"][name] - want) <= COCO_TOL, (name, want)
    # Anomaly: image AUROC of the recorded scores and pixel AUROC of the recorded maps against
    # the recorder's labels and masks, as scikit-learn computes them.
    from PIL import Image as PILImage
    from sklearn.metrics import roc_auc_score

    decoded = read_with_mcap(bag / "demo_0.mcap")
    maps = decoded["/dinov3/anomaly/map"]
    scores = [m.data for _, m in decoded["/dinov3/anomaly/score"]]
    labels = json.loads((bag / "ground_truth" / "anomaly" / "labels.json").read_text())
    stems = [str(stamp_ns(m.header)) for _, m in maps]
    y = [labels[s] for s in stems]
    assert 0 < sum(y) < len(y), y
    want = roc_auc_score(y, scores)
    assert abs(report["anomaly"]["image_auroc"] - want) <= 1e-9, (report["anomaly"], want)
    pixel_truth, pixel_score = [], []
    for stem, (_, m) in zip(stems, maps):
        mask = np.asarray(PILImage.open(bag / "ground_truth" / "anomaly" / "masks" / f"{stem}.png"))
        pixel_truth.append(mask.reshape(-1) > 0)
        pixel_score.append(np.frombuffer(bytes(m.data), dtype="<f4"))
    want_px = roc_auc_score(np.concatenate(pixel_truth), np.concatenate(pixel_score))
    assert abs(report["anomaly"]["pixel_auroc"] - want_px) <= 1e-9, (report["anomaly"], want_px)
    assert 0.0 < report["segmentation"]["miou"] <= 1.0
    assert report["depth"]["abs_rel"] > 0.0
    # The model run again over the recorded frames predicts the same.
    again = tmp_path / "again"
    node("eval", "--source", f"mcap:{bag}", "--max-depth", "80", "--out", str(again))
    rerun = json.loads((again / "report.json").read_text())
    assert rerun["detection"]["stats"] == report["detection"]["stats"]
    assert rerun["segmentation"]["miou"] == report["segmentation"]["miou"]
    assert rerun["depth"]["abs_rel"] == report["depth"]["abs_rel"]
    assert rerun["anomaly"] == report["anomaly"]
