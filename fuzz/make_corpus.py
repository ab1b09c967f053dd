#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/<target>/ from the repository's own fixtures (valid
inputs of every parser) plus a few hand-made edge cases. Small on purpose (a few hundred KB in
all): libFuzzer grows its own corpus from these.

    .venv/bin/python fuzz/make_corpus.py            # rewrites fuzz/corpus/
    .venv/bin/python fuzz/make_corpus.py --mcap BAG.mcap   # adds a recorded MCAP seed

The CDR seeds are serialised by Python cyclonedds (tests/python/ros2_idl.py), an independent
implementation of the encoding the node receives.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
sys.path.insert(0, str(REPO / "tests" / "python"))
import ros2_idl as r  # noqa: E402

CORPUS = FUZZ / "corpus"


def put(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def layout(fmt: int, w: int, h: int, bpl: int, flags: int = 0) -> bytes:
    return bytes([fmt | flags]) + struct.pack("<HHH", w, h, bpl)


def frame_conversion() -> None:
    cam = REPO / "tests/fixtures/camera"
    yuyv = (cam / "chelsea_320x240.yuyv").read_bytes()
    # YUYV 32x8 cut from the fixture's first rows; BT.709 full range; a short buffer.
    rows = b"".join(yuyv[y * 640:y * 640 + 64] for y in range(8))
    put("frame_conversion", "yuyv_32x8", layout(0, 32, 8, 64) + rows)
    put("frame_conversion", "yuyv_32x8_bt709_full", layout(0, 32, 8, 64, 4 | 8) + rows)
    put("frame_conversion", "yuyv_short_buffer", layout(0, 32, 8, 64) + rows[:100])
    put("frame_conversion", "mjpeg_320x240", layout(1, 320, 240, 0) + (cam / "chelsea_320x240.mjpg").read_bytes())
    put("frame_conversion", "mjpeg_no_huffman_tables", layout(1, 320, 240, 0)
        + (cam / "chelsea_320x240_nodht.mjpg").read_bytes())
    put("frame_conversion", "rgb24_4x4_padded", layout(2, 4, 4, 16) + bytes(range(64)))
    put("frame_conversion", "grey_8x2", layout(3, 8, 2, 8) + bytes(range(16)))
    put("frame_conversion", "zero_size", layout(0, 0, 0, 0))


def camera_info_yaml() -> None:
    for p in sorted((REPO / "calibration").glob("*.yaml")):
        put("camera_info_yaml", p.stem, p.read_bytes())
    put("camera_info_yaml", "empty_mapping", b"{}\n")


def params_yaml() -> None:
    put("params_yaml", "launch_params", (REPO / "launch/dinov3_perception.params.yaml").read_bytes())
    put("params_yaml", "wildcard_and_nested", b"/**:\n  ros__parameters:\n    fps: 5.0\n    heads:\n"
        b"      detection:\n        enabled: false\n    record:\n      topics: [a, b]\n")
    put("params_yaml", "namespaced_node", b"/robot1/dinov3_perception:\n  ros__parameters:\n"
        b"    source: synthetic\n    width: 320\n")


def ros_args() -> None:
    put("ros_args", "remaps_and_params", b"run\n--ros-args\n-r\n__node:=cam\n-r\n__ns:=/robot1\n-p\n"
        b"fps:=5.0\n-p\nheads.detection.enabled:=false\n--log-level\nwarn")
    put("ros_args", "topic_remap", b"run\x00--ros-args\x00-r\x00dinov3/detections:=/det\x00--")
    put("ros_args", "param_list", b"--ros-args\n-p\nrecord.topics:=[a, b]\n-p\nqos.reliable_topics:=x")


def image_cdr() -> None:
    hdr = r.Header(stamp=r.Time(sec=12, nanosec=34), frame_id="camera_optical_frame")
    for enc, ch in (("rgb8", 3), ("bgr8", 3), ("mono8", 1), ("rgba8", 4)):
        w, h = 4, 3
        step = w * ch + 2  # padded rows
        data = list(range(step * h))
        msg = r.Image(header=hdr, height=h, width=w, encoding=enc, is_bigendian=0, step=step,
                      data=[d % 256 for d in data])
        put("image_cdr", f"{enc}_4x3_padded", msg.serialize())
    lying = r.Image(header=hdr, height=1000, width=1000, encoding="rgb8", step=3000, data=[1, 2, 3])
    put("image_cdr", "step_claims_more_than_data", lying.serialize())


def jpeg_bytes() -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)).save(buf, "JPEG")
    return buf.getvalue()


def png_bytes() -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)).save(buf, "PNG")
    return buf.getvalue()


def compressed_image_cdr() -> None:
    hdr = r.Header(stamp=r.Time(sec=1, nanosec=2), frame_id="cam")
    put("compressed_image_cdr", "jpeg_8x8", r.CompressedImage(header=hdr, format="jpeg", data=list(jpeg_bytes())).serialize())
    put("compressed_image_cdr", "png_4x4", r.CompressedImage(header=hdr, format="rgb8; png compressed bgr8",
                                                            data=list(png_bytes())).serialize())
    put("compressed_image_cdr", "unknown_format", r.CompressedImage(header=hdr, format="webp", data=[1, 2]).serialize())


def parameter_request() -> None:
    head = r.RequestHeader(guid=0x1122334455667788, seq=7)
    cyclone = [
        ("get_parameters", r.GetParameters_Request(header=head, names=["source", "fps"])),
        ("list_parameters", r.ListParameters_Request(header=head, prefixes=["heads"], depth=0)),
    ]
    for name, req in cyclone:
        payload = req.serialize()[4:]  # after the encapsulation header
        put("parameter_request", f"cyclone_{name}", bytes([0]) + payload)
    # The enhanced layout: the bare request, flagged as carrying a related_sample_identity.
    bare = r.GetParameters_Request(header=head, names=["source"]).serialize()[4 + 16:]
    put("parameter_request", "enhanced_get_parameters", bytes([2]) + bare)
    put("parameter_request", "empty", b"\x00")


def manifests() -> None:
    put("manifests", "backbone_tiny", b"\x00" + (REPO / "tests/fixtures/tiny/dinov3_tiny.json").read_bytes())
    put("manifests", "backbone_demo", b"\x00" + (REPO / "models/demo/dinov3_tiny_240x320.json").read_bytes())
    for head in ("detection", "segmentation", "depth", "classification"):
        put("manifests", f"head_{head}", b"\x01" + (REPO / "models/demo" / f"{head}.json").read_bytes())
    # A 4-patch bank with the demo bank's manifest (the harness writes the npz's sha256).
    bank = json.loads((REPO / "models/demo/anomaly.bank.json").read_text())
    bank["patches"] = 4
    bank["coreset"] = {"target": 4, "from": 8}
    feats = np.eye(4, bank["backbone"]["hidden_size"], dtype=np.float32)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        npy = io.BytesIO()
        np.save(npy, feats)
        z.writestr("features.npy", npy.getvalue())
    put("manifests", "bank_4_patches", b"\x02" + json.dumps(bank).encode() + b"\x00" + buf.getvalue())


def mcap_replay(mcap: Path | None) -> None:
    if mcap is None:
        binary = REPO / "target/debug/dinov3_perception"
        if not binary.is_file():
            sys.exit("give --mcap FILE or build target/debug/dinov3_perception first")
        with tempfile.TemporaryDirectory() as tmp:
            bag = Path(tmp) / "bag"
            subprocess.run([str(binary), "run", "--no-ros", "--no-heads", "--max-frames", "2",
                            "--width", "32", "--height", "24", "--fps", "0", "--record", str(bag),
                            "--ros-args", "-p", "record.images:=jpeg"], check=True,
                           capture_output=True)
            data = next(bag.glob("*.mcap")).read_bytes()
    else:
        data = mcap.read_bytes()
    put("mcap_replay", "recorded_2_frames", data)
    put("mcap_replay", "recorded_cut_in_half", data[: len(data) // 2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mcap", type=Path, default=None)
    args = ap.parse_args()
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    frame_conversion()
    camera_info_yaml()
    params_yaml()
    ros_args()
    image_cdr()
    compressed_image_cdr()
    parameter_request()
    manifests()
    mcap_replay(args.mcap)
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"{sum(1 for p in CORPUS.rglob('*') if p.is_file())} seed files, {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
