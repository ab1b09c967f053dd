"""Runs the Node.js interop scripts of tests/node (the libraries the Foxglove app is built on)
and returns their JSON output.

Node.js 20 and the packages of tests/node/package-lock.json are required: scripts/test.sh runs
`npm ci` there before pytest. A missing `node` or `node_modules` fails the calling test with the
fix; nothing is skipped.

    from node_reader import read_bag_with_node
    summary = read_bag_with_node(path_to_mcap)   # {"topics": {topic: {...}}, ...}
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from binaries import perception_binary  # noqa: F401  (re-exported for the tests)

# The topics the node publishes once per frame with the demo heads and a calibration (each
# message has a header stamped with the frame's capture stamp), with their types.
FRAME_TOPICS = {
    "/dinov3/detections": "vision_msgs/msg/Detection2DArray",
    "/dinov3/segmentation": "sensor_msgs/msg/Image",
    "/dinov3/segmentation/color": "sensor_msgs/msg/Image",
    "/dinov3/depth": "sensor_msgs/msg/Image",
    "/dinov3/points": "sensor_msgs/msg/PointCloud2",
    "/dinov3/anomaly/map": "sensor_msgs/msg/Image",
    "/dinov3/classification": "vision_msgs/msg/Classification",
    "/dinov3/features/pca": "sensor_msgs/msg/Image",
    "/dinov3/camera_info": "sensor_msgs/msg/CameraInfo",
}

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NODE_DIR = REPO / "tests" / "node"


def node_binary() -> str:
    """The `node` executable; fails the test with the fix when Node.js or the packages are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed (`node` is not on PATH): install Node.js 20 and npm, "
                    "then run `(cd tests/node && npm ci)`")
    if not (NODE_DIR / "node_modules" / "@foxglove" / "rosmsg").is_dir():
        pytest.fail(f"{NODE_DIR}/node_modules is missing: run `(cd tests/node && npm ci)`")
    return node


def run_node_script(script: str, args, timeout: float) -> dict:
    """Run tests/node/SCRIPT with `args`; its stdout is one JSON object."""
    node = node_binary()
    done = subprocess.run([node, str(NODE_DIR / script), *map(str, args)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"node {script} exited {done.returncode}:\n{done.stderr[-4000:]}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as e:
        pytest.fail(f"node {script} printed no JSON ({e}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def start_node_script(script: str, args) -> subprocess.Popen:
    """Start tests/node/SCRIPT in the background (stdout: its JSON summary)."""
    node = node_binary()
    return subprocess.Popen([node, str(NODE_DIR / script), *map(str, args)], cwd=NODE_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_bag_with_node(path, timeout: float = 120) -> dict:
    """Decode every message of the MCAP file at `path` with @mcap/core, @foxglove/rosmsg and
    @foxglove/rosmsg2-serialization (tests/node/read_bag.mjs); returns its summary:
    {"path", "profile", "topics": {topic: {"schema", "schema_encoding", "message_encoding",
    "count", "first_log_time", "last_log_time", "stamps": [[sec, nanosec], ...],
    "decode_failures", "errors"}}} (log times as strings of nanoseconds)."""
    return run_node_script("read_bag.mjs", [Path(path).resolve()], timeout)


