"""tests/node/read_bag.mjs (the MCAP and ROS 2 libraries the Foxglove app is built on) reads
MCAP files written by independent Python writers: `mcap` + `mcap-ros2-support` (zstd, lz4 and
uncompressed chunks) and `rosbags` (a rosbag2 bag in MCAP storage). The recorder's tests read
its bags with the same helper, node_reader.read_bag_with_node.

Node.js and tests/node/node_modules are required (scripts/test.sh runs `npm ci`); missing ones
fail the tests with the fix.

Run: .venv/bin/python -m pytest tests/python/test_bag_readers_node.py -q
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mcap.writer import CompressionType, Writer as McapWriter
from mcap_ros2.writer import Writer as Ros2Writer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from node_reader import FRAME_TOPICS, perception_binary, read_bag_with_node  # noqa: E402

SEP = "=" * 80
IMAGE_MSGDEF = f"""std_msgs/Header header
uint32 height
uint32 width
string encoding
uint8 is_bigendian
uint32 step
uint8[] data
{SEP}
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
{SEP}
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""
T0 = 1_764_000_000_000_000_000  # ns


def stamp(i: int):
    ns = T0 + i * 66_666_667
    return ns, (ns // 1_000_000_000, ns % 1_000_000_000)


def write_ros2_mcap(path: Path, compression: CompressionType, frames: int = 12) -> None:
    with open(path, "wb") as f:
        w = Ros2Writer(f, chunk_size=64 * 1024, compression=compression)
        image = w.register_msgdef("sensor_msgs/msg/Image", IMAGE_MSGDEF)
        score = w.register_msgdef("std_msgs/msg/Float32", "float32 data")
        for i in range(frames):
            ns, (sec, nanosec) = stamp(i)
            data = (np.arange(8 * 6 * 3) + i).astype(np.uint8).tobytes()
            w.write_message("/dinov3/input/image", image, {
                "header": {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": "camera"},
                "height": 6, "width": 8, "encoding": "rgb8", "is_bigendian": 0, "step": 24,
                "data": data}, log_time=ns, publish_time=ns, sequence=i)
            w.write_message("/dinov3/anomaly/score", score, {"data": 0.5 + i}, log_time=ns,
                            publish_time=ns, sequence=i)
        w.finish()


@pytest.mark.parametrize("compression", [CompressionType.ZSTD, CompressionType.LZ4,
                                         CompressionType.NONE], ids=["zstd", "lz4", "none"])
def test_reads_every_message_of_an_mcap_ros2_file(tmp_path, compression):
    path = tmp_path / "bag.mcap"
    write_ros2_mcap(path, compression)
    out = read_bag_with_node(path)
    assert out["reader"] == "indexed", out["indexed_error"]
    assert out["profile"] == "ros2"
    assert out["statistics_message_count"] == "24"
    image = out["topics"]["/dinov3/input/image"]
    assert (image["schema"], image["schema_encoding"], image["message_encoding"]) == (
        "sensor_msgs/msg/Image", "ros2msg", "cdr")
    assert image["count"] == 12 and image["decode_failures"] == 0, image["errors"]
    assert image["trailing_bytes"] == 0
    assert [tuple(s) for s in image["stamps"]] == [stamp(i)[1] for i in range(12)]
    assert (int(image["first_log_time"]), int(image["last_log_time"])) == (stamp(0)[0], stamp(11)[0])
    score = out["topics"]["/dinov3/anomaly/score"]
    assert score["count"] == 12 and score["decode_failures"] == 0 and score["stamps"] == []


def test_a_bag_cut_short_is_read_front_to_back(tmp_path):
    path = tmp_path / "cut.mcap"
    write_ros2_mcap(path, CompressionType.ZSTD, frames=40)
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # no footer: as a recorder killed before it finished
    out = read_bag_with_node(path)
    assert out["reader"] == "stream" and out["indexed_error"]
    image = out["topics"]["/dinov3/input/image"]
    assert image["count"] == 40 and image["decode_failures"] == 0
    assert [tuple(s) for s in image["stamps"]] == [stamp(i)[1] for i in range(40)]


def test_a_message_that_does_not_fit_its_schema_is_a_decode_failure(tmp_path):
    path = tmp_path / "bad.mcap"
    with open(path, "wb") as f:
        w = McapWriter(f)
        w.start(profile="ros2", library="test")
        schema = w.register_schema("sensor_msgs/msg/Image", "ros2msg", IMAGE_MSGDEF.encode())
        channel = w.register_channel("/broken", "cdr", schema)
        # Encapsulation header + the start of a Time: the rest of the Image is missing.
        w.add_message(channel, log_time=T0, data=b"\x00\x01\x00\x00\x01\x00", publish_time=T0)
        w.finish()
    topic = read_bag_with_node(path)["topics"]["/broken"]
    assert topic["count"] == 1 and topic["decode_failures"] == 1, topic


def test_reads_a_rosbag2_bag_written_by_rosbags(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    bag = tmp_path / "bag"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/dinov3/segmentation", Image.__msgtype__, typestore=store)
        for i in range(5):
            ns, (sec, nanosec) = stamp(i)
            msg = Image(header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="camera"),
                        height=2, width=3, encoding="mono8", is_bigendian=0, step=3,
                        data=np.arange(6, dtype=np.uint8) + i)
            w.write(conn, ns, store.serialize_cdr(msg, Image.__msgtype__))
    files = list(bag.glob("*.mcap"))
    assert len(files) == 1, files
    out = read_bag_with_node(files[0])
    topic = out["topics"]["/dinov3/segmentation"]
    assert topic["schema"] == "sensor_msgs/msg/Image" and topic["schema_error"] is None
    assert topic["count"] == 5 and topic["decode_failures"] == 0, topic["errors"]
    assert [tuple(s) for s in topic["stamps"]] == [stamp(i)[1] for i in range(5)]


# The node's own recordings (run --record), read by the Foxglove libraries.
RECORDED_FRAMES = 6
RECORDED_PER_FRAME = FRAME_TOPICS


@pytest.mark.parametrize("params", [[], ["record.compression:=lz4", "record.images:=jpeg"]],
                         ids=["zstd-raw", "lz4-jpeg"])
def test_reads_the_nodes_own_recording(tmp_path, params):
    binary = perception_binary()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: build it first (`cargo build` or `cargo test`)")
    bag = tmp_path / "rec"
    ros_args = [a for p in params for a in ("-p", p)]
    done = subprocess.run(
        [str(binary), "run", "--no-ros", "--max-frames", str(RECORDED_FRAMES), "--fps", "0",
         "--width", "160", "--height", "120", "--record", str(bag),
         *(["--ros-args", *ros_args] if ros_args else [])],
        capture_output=True, text=True, timeout=300, env={"RUST_LOG": "info"})
    assert done.returncode == 0, done.stderr[-4000:]
    files = sorted(bag.glob("*.mcap"))
    assert len(files) == 1, files
    out = read_bag_with_node(files[0])
    assert out["reader"] == "indexed", out["indexed_error"]
    assert out["profile"] == "ros2"
    topics = out["topics"]
    jpeg = "record.images:=jpeg" in params
    inputs = {"/dinov3/input/image/compressed": "sensor_msgs/msg/CompressedImage"} if jpeg \
        else {"/dinov3/input/image": "sensor_msgs/msg/Image"}
    for name, schema in {**RECORDED_PER_FRAME, **inputs}.items():
        t = topics.get(name)
        assert t is not None, (name, sorted(topics))
        assert (t["schema"], t["schema_encoding"], t["message_encoding"]) == (schema, "ros2msg", "cdr")
        assert t["schema_error"] is None, (name, t["schema_error"])
        assert t["count"] == RECORDED_FRAMES, (name, t["count"])
        assert t["decode_failures"] == 0 and t["trailing_bytes"] == 0, (name, t["errors"])
        stamps = [s * 1_000_000_000 + ns for s, ns in t["stamps"]]
        assert len(stamps) == RECORDED_FRAMES and stamps == sorted(set(stamps)), name
    frames = topics["/dinov3/detections"]["stamps"]
    for name in (*RECORDED_PER_FRAME, *inputs):
        assert topics[name]["stamps"] == frames, f"{name}: not the frames' stamps"
    for name, t in topics.items():
        assert t["decode_failures"] == 0, (name, t["errors"])
