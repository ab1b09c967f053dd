"""The live view (`run --foxglove`) against the libraries the Foxglove app is built on:
tests/node/live_view.mjs connects with @foxglove/ws-protocol over `ws`, parses every advertised
ros2msg schema with @foxglove/rosmsg and decodes every message with
@foxglove/rosmsg2-serialization. No ROS: the node runs with --no-ros.

The node is the debug binary (see node_reader.perception_binary); a missing binary, Node.js or
tests/node/node_modules fails the test with the fix, it does not skip.

Run: .venv/bin/python -m pytest tests/python/test_live_view.py -q
"""

import base64
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from node_reader import FRAME_TOPICS, perception_binary, start_node_script  # noqa: E402

WIDTH, HEIGHT = 640, 480  # the synthetic source's default frame size
POINT_STRIDE = 4
FRAMES = 40
NODE_NAME = "dinov3_perception"
# Every topic the node offers with the demo heads, the synthetic camera and debug_image on.
PER_FRAME = {
    **FRAME_TOPICS,
    "/dinov3/debug_image": "sensor_msgs/msg/Image",
    "/dinov3/input/image/compressed": "sensor_msgs/msg/CompressedImage",
}
OTHERS = {
    "/dinov3/anomaly/score": "std_msgs/msg/Float32",  # no header
    "/dinov3/vision_info": "vision_msgs/msg/VisionInfo",  # latched: once per subscriber
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> Path:
    b = perception_binary()
    if not b.is_file():
        pytest.fail(f"{b} is missing: build it first (`cargo build` or `cargo test`)")
    return b


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """One node run of FRAMES frames with the live view, and the Node.js client's summary."""
    port = free_port()
    log = tmp_path_factory.mktemp("live") / "node.log"
    with open(log, "w") as out:
        node = subprocess.Popen(
            [str(binary()), "run", "--no-ros", "--foxglove", f"127.0.0.1:{port}",
             "--max-frames", str(FRAMES), "--status-interval", "0.5",
             "--ros-args", "-p", "debug_image:=true"],
            stdout=out, stderr=subprocess.STDOUT, env={"RUST_LOG": "info"})
        client = start_node_script("live_view.mjs", [f"ws://127.0.0.1:{port}", "--seconds", "120",
                                                     "--connect-seconds", "60"])
        try:
            stdout, stderr = client.communicate(timeout=150)
            code = node.wait(timeout=60)
        finally:
            for p in (client, node):
                if p.poll() is None:
                    p.kill()
    text = log.read_text()
    assert code == 0, f"the node exited {code}:\n{text[-4000:]}"
    assert client.returncode == 0, f"live_view.mjs exited {client.returncode}:\n{stderr[-4000:]}"
    return json.loads(stdout), text


def test_every_topic_is_advertised_with_its_ros2msg_schema_and_cdr(live_run):
    summary, _ = live_run
    assert summary["server"] == NODE_NAME
    assert summary["reason"] == "closed", "the node's end closes the connection"
    topics = summary["topics"]
    assert {t: v["schema_name"] for t, v in topics.items()} == {**PER_FRAME, **OTHERS}
    for name, t in topics.items():
        assert t["schema_encoding"] == "ros2msg", name
        assert t["encoding"] == "cdr", name
        assert t["schema_error"] is None, (name, t["schema_error"])


def test_every_channel_decodes(live_run):
    summary, log = live_run
    for name, t in summary["topics"].items():
        assert t["count"] >= 1, f"{name}: nothing received"
        assert t["decode_failures"] == 0, (name, t["errors"])
        assert t["trailing_bytes"] == 0, f"{name}: messages longer than their schema"
    for name in PER_FRAME:
        # The client subscribes while the model loads: it sees most of the run.
        assert summary["topics"][name]["count"] >= FRAMES // 2, name
    assert summary["topics"]["/dinov3/vision_info"]["count"] == 1
    # The node counts what it sent through its queue (vision_info goes to each subscriber apart).
    sent = int(log.split("live view: ")[-1].split(" messages sent")[0])
    assert sent >= sum(t["count"] for n, t in summary["topics"].items() if n != "/dinov3/vision_info")


def test_images_are_frame_sized(live_run):
    topics = live_run[0]["topics"]
    encodings = {"/dinov3/segmentation": "mono8", "/dinov3/segmentation/color": "rgb8",
                 "/dinov3/depth": "32FC1", "/dinov3/anomaly/map": "32FC1",
                 "/dinov3/features/pca": "rgb8", "/dinov3/debug_image": "rgb8"}
    bytes_per_pixel = {"mono8": 1, "rgb8": 3, "32FC1": 4}
    for name, encoding in encodings.items():
        images = topics[name]["images"]
        assert images, name
        for im in images:
            assert (im["width"], im["height"], im["encoding"]) == (WIDTH, HEIGHT, encoding), name
            assert im["step"] == WIDTH * bytes_per_pixel[encoding], name
            assert im["bytes"] == im["step"] * HEIGHT, name
    compressed = topics["/dinov3/input/image/compressed"]["compressed"]
    assert all("jpeg" in c["format"] for c in compressed)
    jpeg = PILImage.open(io.BytesIO(base64.b64decode(compressed[0]["first_base64"])))
    assert (jpeg.format, jpeg.size) == ("JPEG", (WIDTH, HEIGHT))
    for cloud in topics["/dinov3/points"]["clouds"]:
        assert (cloud["width"], cloud["height"]) == (WIDTH // POINT_STRIDE, HEIGHT // POINT_STRIDE)
        assert cloud["fields"] == ["x", "y", "z", "rgb"] and cloud["point_step"] == 16


def test_detections_have_boxes(live_run):
    t = live_run[0]["topics"]["/dinov3/detections"]
    assert sum(t["boxes"]) > 0, t["boxes"]
    box = t["first_box"]
    assert box["class_id"] and 0.0 < box["score"] <= 1.0 and box["size_x"] > 0 and box["size_y"] > 0


def test_stamps_increase_and_are_the_log_times(live_run):
    topics = live_run[0]["topics"]
    for name in PER_FRAME:
        stamps = [s * 1_000_000_000 + ns for s, ns in topics[name]["stamps"]]
        assert len(stamps) == topics[name]["count"], name
        assert all(a < b for a, b in zip(stamps, stamps[1:])), f"{name}: stamps not increasing"
        # The live view logs each message at its frame's capture stamp.
        assert [int(t) for t in topics[name]["log_times"]] == stamps, name
    # One frame's messages go out together: the input frame and its detections share stamps
    # (from the frame on which the client had subscribed to both; it subscribes one by one).
    dets, frames = ([tuple(s) for s in topics[t]["stamps"]]
                    for t in ("/dinov3/detections", "/dinov3/input/image/compressed"))
    start = max(dets[0], frames[0])
    assert [s for s in dets if s >= start] == [s for s in frames if s >= start]


def test_diagnostics_carry_the_pipeline_status_and_the_live_view_drops(live_run):
    statuses = live_run[0]["topics"]["/diagnostics"]["statuses"]
    pipeline = [s for s in statuses if s["name"] == f"{NODE_NAME}: pipeline"]
    assert pipeline, statuses
    for s in pipeline:
        assert {"fps", "frames_processed", "live_view_dropped"} <= set(s["keys"]), s["keys"]
        assert int(s["values"]["live_view_dropped"]) >= 0
