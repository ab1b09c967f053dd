"""ROS 2 interoperability of the `dinov3_perception` node against an independent peer: Python
`cyclonedds` (what a ROS 2 system on rmw_cyclonedds sees), with the ROS 2 message types written
as IDL in ros2_idl.py from the ROS 2 Jazzy definitions.

All DDS traffic stays on loopback: the Cyclone side uses ros2_idl.cyclone_loopback_config()
(127.0.0.1 only, no multicast, unicast discovery), and the node runs with ROS_LOCALHOST_ONLY=1.
Every test picks its own random ROS_DOMAIN_ID so that tests and other runs cannot cross-talk.

The node is the debug build that `cargo test` leaves in target/debug (CI runs `cargo test`
first); a missing binary fails the node tests, it does not skip them.

Run: .venv/bin/python -m pytest tests/python/test_ros_interop.py -q
"""

import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from binaries import humble_binary, perception_binary
import yaml
from PIL import Image as PILImage

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import ros2_idl as r  # noqa: E402

# Must precede the first DomainParticipant of this process.
r.use_loopback_config()
r.install_fast_octet_sequences()

from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication, BuiltinTopicDcpsSubscription  # noqa: E402
from cyclonedds.core import InstanceState, Policy  # noqa: E402
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

# ------------------------------------------------------------------------------------------------
# The contract (one place to change it)
# ------------------------------------------------------------------------------------------------

BINARY = perception_binary()
# Built with `--no-default-features --features humble` by scripts/test.sh.
HUMBLE_BINARY = humble_binary()
CALIBRATION = REPO / "calibration" / "synthetic_640x480.yaml"
DEMO = REPO / "models" / "demo"

NODE_NAME = "dinov3_perception"
# Diagnostics: the pipeline status and its keys.
PIPELINE_STATUS_NAME = "dinov3_perception: pipeline"
DIAG_REQUIRED_KEYS = ("fps", "frames_processed", "frames_dropped", "backend", "backend_requested",
                      "parity", "model", "rosout_dropped", "parameter_requests_malformed")
LATENCY_KEY = re.compile(r"latency|_ms$")  # per-stage latency keys match this
# Counter of source frames that were skipped as malformed (ROS image source).
SOURCE_SKIPPED_KEY = "source_skipped"

WIDTH, HEIGHT = 640, 480
POINT_STRIDE = 4  # dinov3/points is organised, one point per 4x4 pixels
SYNTHETIC_FPS = 10
SYNTHETIC_FRAMES = 60  # 6 s of frames: room for discovery + every topic + diagnostics at 1 Hz

# relative topic -> (type, QoS the node offers)
SENSOR, LATCHED, RELIABLE = "sensor", "latched", "reliable"
PER_FRAME_TOPICS = {
    "dinov3/detections": r.Detection2DArray,
    "dinov3/segmentation": r.Image,
    "dinov3/segmentation/color": r.Image,
    "dinov3/depth": r.Image,
    "dinov3/points": r.PointCloud2,
    "dinov3/anomaly/map": r.Image,
    "dinov3/classification": r.Classification,
    "dinov3/features/pca": r.Image,
    "dinov3/camera_info": r.CameraInfo,
    "dinov3/debug_image": r.Image,
}
TOPICS = {
    **{k: (v, SENSOR) for k, v in PER_FRAME_TOPICS.items()},
    "dinov3/anomaly/score": (r.Float32, SENSOR),
    "dinov3/vision_info": (r.VisionInfo, LATCHED),
    "/diagnostics": (r.DiagnosticArray, RELIABLE),
}

REQUIRED_PARAMETERS = ("heads.detection.enabled", "detection.score_threshold", "source")

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

_used_domains: set = set()


def fresh_domain() -> int:
    """A random ROS_DOMAIN_ID in 1..100 not used yet by this session (ports stay below 32768)."""
    rng = random.SystemRandom()
    while True:
        d = rng.randint(1, 100)
        if d not in _used_domains:
            _used_domains.add(d)
            return d


def stamp_ns(header: r.Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def node_args(source="synthetic", max_frames=SYNTHETIC_FRAMES, fps=SYNTHETIC_FPS, ros_args=()):
    args = ["run", "--source", source, "--max-frames", str(max_frames)]
    if fps is not None:
        args += ["--fps", str(fps)]
    if ros_args:
        args += ["--ros-args", *ros_args]
    return args


class Node:
    """The node under test, as a child process with its own log file."""

    def __init__(self, args, domain: int, log_path: Path, env_extra=None, binary=BINARY):
        self.args = args
        self.domain = domain
        self.log_path = log_path
        env = dict(os.environ)
        env.pop("CYCLONEDDS_URI", None)
        env.update({"ROS_DOMAIN_ID": str(domain), "ROS_LOCALHOST_ONLY": "1", "RUST_LOG": "info"})
        env.update(env_extra or {})
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()

    def describe(self, lines: int = 40) -> str:
        """Command, exit code and the log's tail without RustDDS' per-datagram warnings and the
        per-frame head summaries (counted instead)."""
        all_lines = self.log().splitlines()
        noise = re.compile(r"rustdds::rtps::writer\] send_message_to_readers|dinov3_perception::sink::log\] frame ")
        kept = [ln for ln in all_lines if not noise.search(ln)]
        tail = "\n".join(ln[:400] for ln in kept[-lines:])
        return (f"node {' '.join(self.args)} (domain {self.domain}, rc {self.proc.poll()}, log "
                f"{self.log_path}: {len(all_lines)} lines, {len(all_lines) - len(kept)} noise), tail:\n{tail}")


@pytest.fixture
def launch(tmp_path):
    """launch(args, domain, env_extra=None) -> Node; every node is stopped at teardown and its
    log tail printed (pytest shows it for failing tests)."""
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} is missing: build it first (`cargo build` or `cargo test`); "
                    "the ROS interop tests run the debug binary")
    nodes = []

    def start(args, domain, env_extra=None, binary=BINARY):
        node = Node(args, domain, tmp_path / f"node{len(nodes)}.log", env_extra, binary)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
        print(node.describe())


class Peer:
    """One Cyclone participant of the test process, with a builtin-topic view of the graph."""

    def __init__(self, domain: int):
        self.domain = domain
        self.dp = DomainParticipant(domain)
        self._topics = {}
        self._pub_reader = BuiltinDataReader(self.dp, BuiltinTopicDcpsPublication)
        self._sub_reader = BuiltinDataReader(self.dp, BuiltinTopicDcpsSubscription)
        self.publications = {}  # key -> DcpsEndpoint
        self.subscriptions = {}

    def topic(self, name, typ):
        key = (name, typ)
        if key not in self._topics:
            self._topics[key] = Topic(self.dp, name, typ)
        return self._topics[key]

    def reader(self, name, typ, kind=SENSOR, depth=None):
        q = {SENSOR: r.SENSOR_QOS, LATCHED: r.LATCHED_QOS, RELIABLE: r.SERVICE_QOS}[kind]
        q = dict(q)
        if depth is not None:
            q["depth"] = depth
        return DataReader(self.dp, self.topic(name, typ), qos=r.qos(**q))

    def writer(self, name, typ, reliable=True, depth=10):
        return DataWriter(self.dp, self.topic(name, typ), qos=r.qos(reliable=reliable, depth=depth))

    def refresh_graph(self):
        for reader, known in ((self._pub_reader, self.publications), (self._sub_reader, self.subscriptions)):
            for s in reader.take(N=256):
                info = getattr(s, "sample_info", None)
                if info is not None and info.instance_state != InstanceState.Alive:
                    known.pop(s.key, None)
                elif info is None or info.valid_data:
                    known[s.key] = s

    def remote_publications(self, topic_name=None):
        self.refresh_graph()
        own = self.dp.get_guid()
        return [p for p in self.publications.values()
                if p.participant_key != own and (topic_name is None or p.topic_name == topic_name)]

    def remote_subscriptions(self, topic_name=None):
        self.refresh_graph()
        own = self.dp.get_guid()
        return [p for p in self.subscriptions.values()
                if p.participant_key != own and (topic_name is None or p.topic_name == topic_name)]

    def wait_publications(self, topic_names, timeout) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = {t: self.remote_publications(t) for t in topic_names}
            if all(found.values()) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def collect(readers: dict, seconds: float, until=None, node: Node = None) -> dict:
    """Take from every reader for `seconds` (or until `until(out)`); name -> list of samples."""
    out = {k: [] for k in readers}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = False
        for k, rd in readers.items():
            typ = rd.topic.data_type
            for s in rd.take(N=64):
                if isinstance(s, typ):
                    out[k].append(s)
                    got = True
        if until is not None and until(out):
            break
        if not got:
            if node is not None and not node.alive():
                # one more sweep for what was in flight, then stop
                time.sleep(0.2)
                for k, rd in readers.items():
                    out[k].extend(s for s in rd.take(N=64) if isinstance(s, rd.topic.data_type))
                break
            time.sleep(0.005)
    return out


def wait_for(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def load_calibration() -> dict:
    assert CALIBRATION.is_file(), f"{CALIBRATION} is missing (the synthetic camera's calibration)"
    cal = yaml.safe_load(CALIBRATION.read_text())
    return {
        "camera_name": cal["camera_name"],
        "width": int(cal["image_width"]),
        "height": int(cal["image_height"]),
        "K": [float(x) for x in cal["camera_matrix"]["data"]],
        "D": [float(x) for x in cal["distortion_coefficients"]["data"]],
        "R": [float(x) for x in cal["rectification_matrix"]["data"]],
        "P": [float(x) for x in cal["projection_matrix"]["data"]],
        "distortion_model": cal["distortion_model"],
    }


def manifest(name: str) -> dict:
    return json.loads((DEMO / f"{name}.json").read_text())


def image_array(msg: r.Image) -> np.ndarray:
    """An Image's pixels as (H, W[, C]) numpy, honouring step and the encoding's dtype."""
    dtype, channels = {
        "mono8": (np.uint8, 1), "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3),
        "32FC1": (np.float32, 1), "16UC1": (np.uint16, 1), "mono16": (np.uint16, 1),
    }[msg.encoding]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * channels * dt.itemsize
    assert msg.step >= row_bytes, (msg.encoding, msg.step, row_bytes)
    assert len(msg.data) == msg.step * msg.height, (len(msg.data), msg.step, msg.height)
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)[:, :row_bytes]
    arr = np.ascontiguousarray(buf).view(dt).reshape(msg.height, msg.width, channels)
    return arr[:, :, 0] if channels == 1 else arr


def pipeline_status(diags) -> list:
    """[(stamp_ns, {key: value}, status)] of the pipeline status in DiagnosticArrays."""
    out = []
    for arr in diags:
        for st in arr.status:
            if st.name == PIPELINE_STATUS_NAME:
                out.append((stamp_ns(arr.header), {kv.key: kv.value for kv in st.values}, st))
    return out


def reliability_of(qos):
    p = qos[Policy.Reliability]
    return "best_effort" if p == Policy.Reliability.BestEffort else "reliable"


def durability_of(qos):
    p = qos[Policy.Durability]
    if p is None or p == Policy.Durability.Volatile:
        return "volatile"
    return "transient_local" if p == Policy.Durability.TransientLocal else repr(p)


def packet_capture_error():
    """None if this process can open an AF_PACKET socket (needs CAP_NET_RAW), else why not."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except (PermissionError, OSError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    sock.close()
    return None


class RtpsLeakWatch:
    """Watches every interface while active (AF_PACKET capture, needs CAP_NET_RAW): RTPS packets
    on interfaces other than loopback are leaks; on loopback the GUID prefixes of their senders
    are counted, so a test can check that the watch saw the traffic it vouches for. Use it
    through `leak_watch()`, which fails the test when it cannot watch."""

    def __init__(self):
        self.leaks = []
        self.loopback = {}  # RTPS GUID prefix -> packets seen on lo
        self.error = packet_capture_error()
        self.available = self.error is None
        self._stop = threading.Event()
        self._sock = None
        if self.available:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            self._sock.settimeout(0.1)

    def __enter__(self):
        if self._sock is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._sock is not None:
            self._thread.join(timeout=2)
            self._sock.close()

    def saw_on_loopback(self, prefix: bytes) -> bool:
        return self.loopback.get(bytes(prefix), 0) > 0

    def _run(self):
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            ifname = addr[0]
            if len(data) < 14 + 20 + 8 + 4:
                continue
            if data[12:14] != b"\x08\x00":  # IPv4 only (the node binds IPv4)
                continue
            ihl = (data[14] & 0x0F) * 4
            if data[14 + 9] != 17:  # UDP
                continue
            payload = data[14 + ihl + 8:]
            if payload[:4] != b"RTPS":
                continue
            if ifname == "lo":
                prefix = bytes(payload[8:20])
                self.loopback[prefix] = self.loopback.get(prefix, 0) + 1
                continue
            dst = socket.inet_ntoa(data[14 + 16:14 + 20])
            dport = struct.unpack(">H", data[14 + ihl + 2:14 + ihl + 4])[0]
            self.leaks.append((ifname, dst, dport))


# Set in the environment: "inside" in the private network namespace rerun_in_private_netns()
# makes; "force" to use one even where this process could capture packets itself.
NETNS_ENV = "DINOV3_INTEROP_NETNS"

# Inside the namespace: loopback up, and a veth pair with an address and the multicast route,
# so that RTPS which does not stay on loopback has an interface to leave on (and be seen on).
NETNS_SETUP = """set -e
ip link set lo up
ip link add dinov3veth0 type veth peer name dinov3veth1
ip addr add 10.211.0.1/24 dev dinov3veth0
ip link set dinov3veth1 up
ip link set dinov3veth0 up
ip route add 224.0.0.0/4 dev dinov3veth0
exec "$@"
"""


def rerun_in_private_netns(request) -> bool:
    """The leak checks need to capture packets. Where this process cannot (no CAP_NET_RAW), run
    the calling test again in a private network namespace (`unshare -rn`: a user namespace in
    which we hold CAP_NET_RAW, and a network namespace of our own; see NETNS_SETUP), and report
    its result here. Returns True when the test ran (and passed) there; fails the test, saying
    what is missing, when neither way works. Never skips."""
    mode = os.environ.get(NETNS_ENV, "")
    if mode == "inside":
        return False
    error = packet_capture_error()
    if error is None and mode != "force":
        return False
    why = f"cannot capture packets here ({error})" if error else f"{NETNS_ENV}=force"
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the loopback leak check {why} and cannot make a private network namespace: "
                    f"{' and '.join(missing)} not found (util-linux, iproute2). Give the test "
                    "CAP_NET_RAW (run as root) or install them.", pytrace=False)
    test_id = f"{Path(__file__).resolve()}::{request.node.name}"
    cmd = ["unshare", "-rn", "sh", "-c", NETNS_SETUP, "sh",
           sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_id]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, NETNS_ENV: "inside"},
                          capture_output=True, text=True, timeout=300)
    out = f"--- stdout\n{proc.stdout[-8000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    if proc.returncode != 0:
        pytest.fail(f"the loopback leak check {why}; in a private network namespace "
                    f"(`unshare -rn`, then {NETNS_SETUP.splitlines()[1:-1]}) it failed with "
                    f"rc {proc.returncode} (if unshare or ip failed: unprivileged user namespaces "
                    f"or veth are not available; give the test CAP_NET_RAW instead):\n{out}",
                    pytrace=False)
    if not re.search(r"\b1 passed\b", proc.stdout):
        pytest.fail(f"{test_id} did not pass in the private network namespace:\n{out}", pytrace=False)
    return True


def leak_watch() -> RtpsLeakWatch:
    """A started-on-entry RtpsLeakWatch; fails the test (not a skip) if it cannot watch."""
    watch = RtpsLeakWatch()
    if not watch.available:
        pytest.fail(f"cannot capture packets for the loopback leak check ({watch.error}) "
                    f"{'inside the private network namespace' if os.environ.get(NETNS_ENV) == 'inside' else ''}",
                    pytrace=False)
    return watch


# ------------------------------------------------------------------------------------------------
# 0. The IDL itself: hand-written CDR, independent of Cyclone's serialiser
# ------------------------------------------------------------------------------------------------


def _cdr():
    """A tiny XCDR1 little-endian writer (alignment relative to the body, after the 4-byte
    encapsulation header)."""

    class W:
        def __init__(self):
            self.b = bytearray()

        def align(self, n):
            self.b += bytes((-len(self.b)) % n)
            return self

        def p(self, fmt, *v):
            self.align(struct.calcsize("<" + fmt.lstrip("0123456789")))
            self.b += struct.pack("<" + fmt, *v)
            return self

        def s(self, text):
            raw = text.encode() + b"\0"
            self.p("I", len(raw))
            self.b += raw
            return self

        def raw(self, data):
            self.b += data
            return self

        def done(self):
            return b"\x00\x01\x00\x00" + bytes(self.b)

    return W()


def test_idl_matches_hand_written_cdr():
    hdr = r.Header(stamp=r.Time(sec=1_700_000_000, nanosec=123), frame_id="cam")

    img = r.Image(header=hdr, height=2, width=3, encoding="rgb8", is_bigendian=0, step=9, data=bytes(range(18)))
    want = (_cdr().p("i", 1_700_000_000).p("I", 123).s("cam").p("I", 2).p("I", 3).s("rgb8").p("B", 0)
            .p("I", 9).p("I", 18).raw(bytes(range(18))).done())
    assert img.serialize() == want

    ci = r.CameraInfo(header=hdr, height=480, width=640, distortion_model="plumb_bob", d=[0.1, 0.2],
                      k=[float(i) for i in range(9)], r=[1.0] * 9, p=[2.0] * 12, binning_x=1, binning_y=2,
                      roi=r.RegionOfInterest(1, 2, 3, 4, True))
    w = _cdr().p("i", 1_700_000_000).p("I", 123).s("cam").p("I", 480).p("I", 640).s("plumb_bob")
    w.p("I", 2).p("2d", 0.1, 0.2).p("9d", *[float(i) for i in range(9)]).p("9d", *[1.0] * 9).p("12d", *[2.0] * 12)
    w.p("I", 1).p("I", 2).p("4I", 1, 2, 3, 4).p("?", True)
    assert ci.serialize() == w.done()

    pc = r.PointCloud2(header=hdr, height=1, width=1, fields=[r.PointField("x", 0, 7, 1), r.PointField("rgb", 12, 7, 1)],
                       is_bigendian=False, point_step=16, row_step=16, data=bytes(16), is_dense=True)
    w = _cdr().p("i", 1_700_000_000).p("I", 123).s("cam").p("I", 1).p("I", 1).p("I", 2)
    w.s("x").p("I", 0).p("B", 7).p("I", 1).s("rgb").p("I", 12).p("B", 7).p("I", 1)
    w.p("?", False).p("I", 16).p("I", 16).p("I", 16).raw(bytes(16)).p("?", True)
    assert pc.serialize() == w.done()

    det = r.Detection2DArray(header=hdr, detections=[r.Detection2D(
        header=hdr,
        results=[r.ObjectHypothesisWithPose(hypothesis=r.ObjectHypothesis("cone", 0.75))],
        bbox=r.BoundingBox2D(center=r.Pose2D(r.Point2D(10.0, 20.0), 0.0), size_x=4.0, size_y=6.0), id="0")])
    w = _cdr().p("i", 1_700_000_000).p("I", 123).s("cam").p("I", 1)
    w.p("i", 1_700_000_000).p("I", 123).s("cam").p("I", 1).s("cone").p("d", 0.75)
    w.p("3d", 0, 0, 0).p("4d", 0, 0, 0, 1).p("36d", *[0.0] * 36)
    w.p("d", 10.0).p("d", 20.0).p("d", 0.0).p("d", 4.0).p("d", 6.0).s("0")
    assert det.serialize() == w.done()

    diag = r.DiagnosticArray(header=hdr, status=[r.DiagnosticStatus(
        level=1, name="n", message="m", hardware_id="h", values=[r.KeyValue("fps", "9.5")])])
    w = _cdr().p("i", 1_700_000_000).p("I", 123).s("cam").p("I", 1).p("B", 1).s("n").s("m").s("h")
    w.p("I", 1).s("fps").s("9.5")
    assert diag.serialize() == w.done()

    gid = bytes(range(16))
    pei = r.ParticipantEntitiesInfo(gid=r.Gid(gid), node_entities_info_seq=[r.NodeEntitiesInfo(
        node_namespace="/", node_name="n", reader_gid_seq=[], writer_gid_seq=[r.Gid(gid)])])
    w = _cdr().raw(gid).p("I", 1).s("/").s("n").p("I", 0).p("I", 1).raw(gid)
    assert pei.serialize() == w.done()

    req = r.ListParameters_Request(header=r.RequestHeader(guid=0x1122334455667788, seq=5), prefixes=["a"], depth=3)
    w = _cdr().p("Q", 0x1122334455667788).p("q", 5).p("I", 1).s("a").p("Q", 3)
    assert req.serialize() == w.done()

    pv = r.pvalue([1.5, 2.5])
    w = _cdr().p("B", 8).p("?", False).p("q", 0).p("d", 0.0).s("").p("I", 0).p("I", 0).p("I", 0)
    w.p("I", 2).p("2d", 1.5, 2.5).p("I", 0)
    assert pv.serialize() == w.done()

    desc = r.ParameterDescriptor(name="t", type=3, description="d", additional_constraints="",
                                 read_only=True, dynamic_typing=False,
                                 floating_point_range=[r.FloatingPointRange(0.0, 1.0, 0.0)])
    w = _cdr().s("t").p("B", 3).s("d").s("").p("?", True).p("?", False).p("I", 1).p("3d", 0.0, 1.0, 0.0).p("I", 0)
    assert desc.serialize() == w.done()


def test_idl_round_trips():
    samples = [
        r.Float32(1.5), r.VisionInfo(method="m", database_location="/x.json", database_version=2),
        r.Classification(results=[r.ObjectHypothesis("box", 0.5)]),
        r.CompressedImage(format="jpeg", data=b"\xff\xd8"),
        r.SetParameters_Request(parameters=[r.Parameter("a", r.pvalue(True)), r.Parameter("b", r.pvalue("s")),
                                            r.Parameter("c", r.pvalue(3)), r.Parameter("d", r.pvalue(["x", "y"]))]),
        r.SetParameters_Response(results=[r.SetParametersResult(False, "out of range [0, 1]")]),
        r.GetParameterTypes_Response(types=b"\x01\x03"),
        r.DescribeParameters_Response(descriptors=[r.ParameterDescriptor(
            name="n", type=2, integer_range=[r.IntegerRange(0, 10, 1)])]),
        r.GetParameters_Response(values=[r.pvalue(b"\x00\x01"), r.pvalue([True, False]), r.pvalue([1, 2])]),
    ]
    for s in samples:
        back = type(s).deserialize(s.serialize())
        assert back.serialize() == s.serialize(), type(s).__name__


def test_wire_names():
    assert r.Image.__idl_typename__ == "sensor_msgs::msg::dds_::Image_"
    assert r.Detection2DArray.__idl_typename__ == "vision_msgs::msg::dds_::Detection2DArray_"
    assert r.ListParameters_Request.__idl_typename__ == "rcl_interfaces::srv::dds_::ListParameters_Request_"
    assert r.dds_topic(r.join_name("/", "dinov3/detections")) == "rt/dinov3/detections"
    assert r.dds_topic(r.join_name("/robot1", "dinov3/detections")) == "rt/robot1/dinov3/detections"
    assert r.dds_topic(r.join_name("/robot1", "/diagnostics")) == "rt/diagnostics"
    assert r.dds_service_topics("/robot1/cam0", "list_parameters") == (
        "rq/robot1/cam0/list_parametersRequest", "rr/robot1/cam0/list_parametersReply")


# ------------------------------------------------------------------------------------------------
# 1. The Cyclone configuration, Python to Python (no Rust involved)
# ------------------------------------------------------------------------------------------------


def test_cyclone_loopback_config_two_processes(request):
    """Two processes discover each other over the loopback-only config and move 20 fragmented
    640x480 rgb8 Images intact; no RTPS packet leaves on another interface, while the watch
    saw both participants' RTPS on loopback."""
    import cyclone_peer

    if rerun_in_private_netns(request):
        return

    domain = fresh_domain()
    peer = Peer(domain)
    rd = peer.reader("rt/interop/image", r.Image, kind=RELIABLE, depth=50)
    with leak_watch() as watch:
        proc = subprocess.Popen([sys.executable, str(HERE / "cyclone_peer.py"), "pub", str(domain),
                                 "rt/interop/image", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            got = collect({"img": rd}, 25, until=lambda o: len(o["img"]) >= 20)["img"]
            out = proc.communicate(timeout=15)[0].decode(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
    assert len(got) == 20, (len(got), out)
    for s in got:
        i = s.header.stamp.sec - 1000
        assert (s.height, s.width, s.step, s.encoding, s.header.frame_id) == (480, 640, 1920, "rgb8", "peer")
        assert s.header.stamp.nanosec == i
        assert bytes(s.data) == cyclone_peer.pattern(i)
    ours = peer.dp.get_guid().bytes[:12]
    assert watch.saw_on_loopback(ours), f"the watch saw no RTPS of this process on lo: {watch.loopback}"
    others = [p for p in watch.loopback if p != bytes(ours)]
    assert others, f"the watch saw no RTPS of the publisher process on lo: {watch.loopback}"
    assert not watch.leaks, f"RTPS left the loopback interface: {watch.leaks[:5]}"


def test_service_client_against_python_server():
    """call_service / ServiceClient against an rmw_cyclonedds-layout server in another process;
    two clients on the same service only see their own replies."""
    domain = fresh_domain()
    peer = Peer(domain)
    proc = subprocess.Popen([sys.executable, str(HERE / "cyclone_peer.py"), "echo", str(domain)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        a = r.ServiceClient(peer.dp, "/peer_node", "list_parameters")
        b = r.ServiceClient(peer.dp, "/peer_node", "list_parameters")
        assert a.request_topic == "rq/peer_node/list_parametersRequest"
        assert a.reply_topic == "rr/peer_node/list_parametersReply"
        assert a.wait_for_service(15), "mock service never matched"
        ra = a.call(r.ListParameters_Request(prefixes=["heads"], depth=1), timeout=5)
        rb = b.call(r.ListParameters_Request(prefixes=["x", "y"], depth=2), timeout=5)
        ra2 = a.call(r.ListParameters_Request(prefixes=[], depth=0), timeout=5)
        assert (ra.header.guid, ra.header.seq) == (a.guid, 1)
        assert (ra2.header.guid, ra2.header.seq) == (a.guid, 2)
        assert (rb.header.guid, rb.header.seq) == (b.guid, 1)
        assert ra.result.names == ["heads.x", "depth=1"] and ra.result.prefixes == ["heads"]
        assert rb.result.names == ["x.x", "y.x", "depth=2"]
        assert ra2.result.names == ["depth=0"]
        one_shot = r.call_service(peer.dp, "/peer_node", "list_parameters",
                                  r.ListParameters_Request(prefixes=["z"]), timeout=5)
        assert one_shot.result.names == ["z.x", "depth=0"]
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_request_header_bytes():
    """The 16 bytes rmw_cyclonedds puts first: uint64 client id, int64 sequence number (LE)."""
    req = r.GetParameters_Request(header=r.RequestHeader(guid=0x0102030405060708, seq=-2 + 2**32), names=["a"])
    raw = req.serialize()
    assert raw[:4] == b"\x00\x01\x00\x00"
    assert raw[4:12] == struct.pack("<Q", 0x0102030405060708)
    assert raw[12:20] == struct.pack("<q", 2**32 - 2)
    assert raw[20:24] == struct.pack("<I", 1)


# ------------------------------------------------------------------------------------------------
# 2. The node: every topic, field by field
# ------------------------------------------------------------------------------------------------


def check_detections(msgs, frame_id, det_classes):
    n_boxes = 0
    for m in msgs:
        assert m.header.frame_id == frame_id
        for i, d in enumerate(m.detections):
            n_boxes += 1
            assert d.header == m.header, "each Detection2D carries the array's header"
            assert d.id == str(i)
            assert len(d.results) >= 1
            h = d.results[0].hypothesis
            assert h.class_id in det_classes, f"class_id {h.class_id!r} is not a class name of {det_classes}"
            scores = [x.hypothesis.score for x in d.results]
            assert all(0.0 < s <= 1.0 for s in scores), scores
            for res in d.results:
                p = res.pose
                assert (p.pose.position.x, p.pose.position.y, p.pose.position.z) == (0.0, 0.0, 0.0)
                o = p.pose.orientation
                assert (o.x, o.y, o.z, o.w) == (0.0, 0.0, 0.0, 1.0)
                assert all(c == 0.0 for c in p.covariance)
            b = d.bbox
            assert b.center.theta == 0.0
            assert b.size_x > 0 and b.size_y > 0
            cx, cy = b.center.position.x, b.center.position.y
            eps = 0.51
            assert -eps <= cx - b.size_x / 2 and cx + b.size_x / 2 <= WIDTH + eps, (cx, b.size_x)
            assert -eps <= cy - b.size_y / 2 and cy + b.size_y / 2 <= HEIGHT + eps, (cy, b.size_y)
    return n_boxes


def check_camera_info(m: r.CameraInfo, cal: dict):
    assert (m.width, m.height) == (cal["width"], cal["height"]) == (WIDTH, HEIGHT)
    assert m.header.frame_id == cal["camera_name"]
    assert m.distortion_model == cal["distortion_model"] == "plumb_bob"
    if all(x == 0.0 for x in cal["D"]):
        assert list(m.d) in ([], [0.0] * 5), m.d
    else:
        assert np.allclose(m.d, cal["D"]), (m.d, cal["D"])
    assert np.allclose(m.k, cal["K"], rtol=0, atol=1e-9), (m.k, cal["K"])
    fx, _, cx, _, fy, cy, _, _, _ = m.k
    assert list(m.k) == [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    assert list(m.r) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert np.allclose(m.r, cal["R"])
    assert list(m.p) == [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert np.allclose(m.p, cal["P"])
    assert (m.binning_x, m.binning_y) == (0, 0)
    assert m.roi == r.RegionOfInterest()


def check_points(pc: r.PointCloud2, depth: r.Image, k):
    assert pc.header == depth.header
    assert (pc.height, pc.width) == (HEIGHT // POINT_STRIDE, WIDTH // POINT_STRIDE)
    assert pc.point_step == 16 and pc.row_step == pc.width * pc.point_step
    assert len(pc.data) == pc.row_step * pc.height
    assert pc.is_bigendian is False
    fields = [(f.name, f.offset, f.datatype, f.count) for f in pc.fields]
    assert fields[:3] == [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], fields
    assert ("rgb", 12, 7, 1) in fields[3:], fields
    pts = np.frombuffer(bytes(pc.data), dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")]))
    pts = pts.reshape(pc.height, pc.width)
    d = image_array(depth)
    fx, cx, fy, cy = k[0], k[2], k[4], k[5]
    z_want = d[::POINT_STRIDE, ::POINT_STRIDE]
    assert np.allclose(pts["z"], z_want, rtol=1e-6, atol=1e-6, equal_nan=True)
    u = (np.arange(pc.width) * POINT_STRIDE).astype(np.float64)[None, :]
    v = (np.arange(pc.height) * POINT_STRIDE).astype(np.float64)[:, None]
    assert np.allclose(pts["x"], (u - cx) / fx * z_want, rtol=1e-4, atol=1e-4, equal_nan=True)
    assert np.allclose(pts["y"], (v - cy) / fy * z_want, rtol=1e-4, atol=1e-4, equal_nan=True)
    if pc.is_dense:
        assert np.isfinite(pts["x"]).all() and np.isfinite(pts["y"]).all() and np.isfinite(pts["z"]).all()


def test_field_checks_on_an_emulated_frame():
    """The checkers above accept a frame built to the contract and reject broken ones (so a
    failure against the node is the node's, not the checker's)."""
    cal = load_calibration()
    hdr = r.Header(stamp=r.Time(sec=1, nanosec=2), frame_id=cal["camera_name"])
    K = cal["K"]
    ci = r.CameraInfo(header=hdr, height=HEIGHT, width=WIDTH, distortion_model="plumb_bob", d=[0.0] * 5, k=K,
                      r=cal["R"], p=cal["P"])
    check_camera_info(ci, cal)
    with pytest.raises(AssertionError):
        check_camera_info(r.CameraInfo(**{**ci.__dict__, "p": K + [0.0] * 3}), cal)

    depth = np.random.default_rng(0).uniform(1, 80, (HEIGHT, WIDTH)).astype("<f4")
    dmsg = r.Image(header=hdr, height=HEIGHT, width=WIDTH, encoding="32FC1", is_bigendian=0, step=4 * WIDTH,
                   data=depth.tobytes())
    assert np.array_equal(image_array(dmsg), depth)
    z = depth[::POINT_STRIDE, ::POINT_STRIDE]
    v, u = np.mgrid[0:HEIGHT:POINT_STRIDE, 0:WIDTH:POINT_STRIDE].astype(np.float64)
    pts = np.zeros(z.shape, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])
    pts["x"], pts["y"], pts["z"] = (u - K[2]) / K[0] * z, (v - K[5]) / K[4] * z, z
    fields = [r.PointField(n, 4 * i, r.POINTFIELD_FLOAT32, 1) for i, n in enumerate(["x", "y", "z", "rgb"])]
    pc = r.PointCloud2(header=hdr, height=z.shape[0], width=z.shape[1], fields=fields, is_bigendian=False,
                       point_step=16, row_step=16 * z.shape[1], data=pts.tobytes(), is_dense=True)
    check_points(pc, dmsg, K)
    bad = pts.copy()
    bad["x"] = (u - K[2] - 0.5) / K[0] * z  # pixel centre at +0.5: wrong by the contract
    with pytest.raises(AssertionError):
        check_points(r.PointCloud2(**{**pc.__dict__, "data": bad.tobytes()}), dmsg, K)

    det = r.Detection2D(header=hdr, results=[r.ObjectHypothesisWithPose(r.ObjectHypothesis("cone", 0.8))],
                        bbox=r.BoundingBox2D(r.Pose2D(r.Point2D(100.0, 50.0), 0.0), 20.0, 30.0), id="0")
    arr = r.Detection2DArray(header=hdr, detections=[det])
    assert check_detections([arr], cal["camera_name"], ["box", "ball", "cone"]) == 1
    for broken in (r.Detection2D(**{**det.__dict__, "id": "1"}),
                   r.Detection2D(**{**det.__dict__, "bbox": r.BoundingBox2D(r.Pose2D(r.Point2D(635.0, 50.0), 0.0), 20.0, 30.0)}),
                   r.Detection2D(**{**det.__dict__, "results": [r.ObjectHypothesisWithPose(r.ObjectHypothesis("2", 0.8))]})):
        with pytest.raises(AssertionError):
            check_detections([r.Detection2DArray(header=hdr, detections=[broken])], cal["camera_name"], ["box", "ball", "cone"])

    for enc in ("rgb8", "bgr8", "mono8", "yuv422_yuy2"):
        data, step = to_encoding(scene_picture(0), enc)
        assert len(data) == step * SRC_H


def test_node_publishes_every_topic(launch):
    cal = load_calibration()
    det_classes = manifest("detection")["class_names"]
    seg_classes = manifest("segmentation")["class_names"]
    palette = manifest("segmentation")["segmentation"]["palette"]
    cls_classes = manifest("classification")["class_names"]
    depth_cfg = manifest("depth")["depth"]

    domain = fresh_domain()
    peer = Peer(domain)
    readers = {name: peer.reader(r.dds_topic(r.join_name("/", name)), typ, kind=kind, depth=100)
               for name, (typ, kind) in TOPICS.items() if kind != LATCHED}
    t_start = time.time()
    node = launch(node_args(ros_args=["-p", "debug_image:=true"]), domain)

    # A late joiner to the transient-local vision_info: made once the node is clearly running.
    first = collect(readers, 30, until=lambda o: len(o["dinov3/detections"]) >= 1, node=node)
    assert first["dinov3/detections"], "no dinov3/detections within 30 s\n" + node.describe()
    late = peer.reader(r.dds_topic("/dinov3/vision_info"), r.VisionInfo, kind=LATCHED)
    vis = collect({"vi": late}, 5, until=lambda o: o["vi"])["vi"]

    # QoS and type names the node offers, as discovered over SEDP (while it runs).
    for name, (typ, kind) in TOPICS.items():
        pubs = peer.remote_publications(r.dds_topic(r.join_name("/", name)))
        assert len(pubs) == 1, (name, pubs)
        assert pubs[0].type_name == typ.__idl_typename__, (name, pubs[0].type_name)
        want_rel = "best_effort" if kind == SENSOR else "reliable"
        want_dur = "transient_local" if kind == LATCHED else "volatile"
        assert (reliability_of(pubs[0].qos), durability_of(pubs[0].qos)) == (want_rel, want_dur), name

    rest = collect(readers, 30, node=node)
    got = {k: first[k] + rest[k] for k in readers}
    t_end = time.time()
    rc = node.wait(timeout=20)
    assert rc == 0, node.describe()

    missing = [k for k, v in got.items() if not v]
    assert not missing, f"no message on {missing}\n" + node.describe()

    # vision_info, to a late joiner
    assert vis, "a late-joining transient-local reader got no dinov3/vision_info"
    vi = vis[-1]
    assert vi.method
    loc = Path(vi.database_location)
    loc = loc if loc.is_absolute() else REPO / loc
    assert loc.is_file() and loc.name == "detection.json", vi.database_location
    assert json.loads(loc.read_text())["class_names"] == det_classes

    # Every stamp is a capture time of this run, and one frame's stamp is the same everywhere.
    stamps = {k: {stamp_ns(m.header): m for m in got[k]} for k in PER_FRAME_TOPICS}
    for k, by_stamp in stamps.items():
        for s in by_stamp:
            assert t_start - 5 <= s / 1e9 <= t_end + 5, (k, s / 1e9, t_start, t_end)
    common = set.intersection(*(set(v) for v in stamps.values()))
    assert common, "no frame stamp is common to all topics: " + repr({k: sorted(v)[:5] for k, v in stamps.items()})

    # detections
    n_boxes = check_detections(got["dinov3/detections"], cal["camera_name"], det_classes)
    assert n_boxes > 0, "no detection in any frame of the synthetic scene"

    # camera_info
    for m in got["dinov3/camera_info"]:
        check_camera_info(m, cal)

    # segmentation, and its colour version for the same frames
    for m in got["dinov3/segmentation"]:
        assert (m.encoding, m.width, m.height, m.step, m.is_bigendian) == ("mono8", WIDTH, HEIGHT, WIDTH, 0)
        assert m.header.frame_id == cal["camera_name"]
        assert image_array(m).max() < len(seg_classes)
    pal = np.array(palette, dtype=np.uint8)
    for m in got["dinov3/segmentation/color"]:
        assert (m.encoding, m.width, m.height, m.step) == ("rgb8", WIDTH, HEIGHT, 3 * WIDTH)
        seg = stamps["dinov3/segmentation"].get(stamp_ns(m.header))
        if seg is not None:
            same = (image_array(m) == pal[image_array(seg)]).all(axis=2).mean()
            assert same > 0.99, f"segmentation/color is palette[class] on only {same:.3f} of pixels"

    # depth
    for m in got["dinov3/depth"]:
        assert (m.encoding, m.width, m.height, m.step, m.is_bigendian) == ("32FC1", WIDTH, HEIGHT, 4 * WIDTH, 0)
        d = image_array(m)
        assert np.isfinite(d).all() and (d > 0).all()
        assert d.max() <= depth_cfg["max_depth_m"] * 1.001

    # points against the depth of the same frame
    k = list(got["dinov3/camera_info"][0].k)
    checked = 0
    for pc in got["dinov3/points"]:
        dm = stamps["dinov3/depth"].get(stamp_ns(pc.header))
        if dm is not None:
            check_points(pc, dm, k)
            checked += 1
    assert checked, "no dinov3/points message with a dinov3/depth of the same stamp"

    # anomaly
    for m in got["dinov3/anomaly/score"]:
        assert math.isfinite(m.data) and m.data >= 0
    for m in got["dinov3/anomaly/map"]:
        assert (m.encoding, m.width, m.height, m.step) == ("32FC1", WIDTH, HEIGHT, 4 * WIDTH)
        assert np.isfinite(image_array(m)).all()

    # classification
    for m in got["dinov3/classification"]:
        scores = [h.score for h in m.results]
        assert m.results and scores == sorted(scores, reverse=True)
        assert sum(scores) <= 1.0 + 1e-5 and all(0.0 <= s <= 1.0 for s in scores)
        assert all(h.class_id in cls_classes for h in m.results)

    # PCA features and the debug image
    for m in got["dinov3/features/pca"]:
        assert m.encoding == "rgb8" and m.width > 0 and m.height > 0 and m.step == 3 * m.width
        assert len(m.data) == m.step * m.height
    for m in got["dinov3/debug_image"]:
        assert (m.encoding, m.width, m.height, m.step) == ("rgb8", WIDTH, HEIGHT, 3 * WIDTH)

    # diagnostics at about 1 Hz
    ps = pipeline_status(got["/diagnostics"])
    assert ps, f"no {PIPELINE_STATUS_NAME!r} status in /diagnostics"
    for _, kv, st in ps:
        assert 0 <= st.level <= 3
        missing_keys = [k for k in DIAG_REQUIRED_KEYS if k not in kv]
        assert not missing_keys, (missing_keys, sorted(kv))
        assert any(LATENCY_KEY.search(k) for k in kv), sorted(kv)
    assert len(ps) >= 2, f"only {len(ps)} diagnostics in the run"
    gaps = np.diff(sorted(s for s, _, _ in ps)) / 1e9
    assert ((gaps > 0.5) & (gaps < 2.0)).all(), gaps
    assert int(ps[-1][1]["frames_processed"]) > 0
    # The native engine (the default) runs ungated: no gate ran, nothing fell back.
    assert (ps[-1][1]["backend"], ps[-1][1]["backend_requested"]) == ("native", "native"), ps[-1][1]
    assert ps[-1][1]["parity"].startswith("not run"), ps[-1][1]
    assert "backend_fallback" not in ps[-1][1]
    # Nothing floods /rosout or the parameter services in this run: both counters stay at 0.
    assert int(ps[-1][1]["rosout_dropped"]) == 0, ps[-1][1]
    assert int(ps[-1][1]["parameter_requests_malformed"]) == 0, ps[-1][1]
    print(f"received {({k: len(v) for k, v in got.items()})}; {len(common)} frames on every topic, "
          f"{checked} point clouds checked against depth, {n_boxes} boxes")


# ------------------------------------------------------------------------------------------------
# 3. Graph: ros_discovery_info, namespaces and remapping
# ------------------------------------------------------------------------------------------------


def discovery_reader(peer):
    return peer.reader("ros_discovery_info", r.ParticipantEntitiesInfo, kind=LATCHED, depth=1)


def find_node(infos, name, namespace):
    for pei in infos:
        for n in pei.node_entities_info_seq:
            if n.node_name == name and n.node_namespace == namespace:
                return pei, n
    return None


def check_graph(peer, node, name, namespace, topics, timeout=30):
    """The node is in ros_discovery_info as namespace/name, and its writers on `topics` (DDS
    names) are listed among its writer gids."""
    rd = discovery_reader(peer)
    infos = []
    found = wait_for(lambda: (infos.extend(s for s in rd.take(N=32) if isinstance(s, r.ParticipantEntitiesInfo))
                              or find_node(infos, name, namespace)), timeout)
    assert found, (f"node {namespace}/{name} not in ros_discovery_info; seen: "
                   f"{[(n.node_namespace, n.node_name) for p in infos for n in p.node_entities_info_seq]}\n"
                   + node.describe())
    pei, entry = found
    assert entry.writer_gid_seq, "no writer gids"
    pubs = peer.wait_publications(topics, timeout=15)
    # The node announces its entities as it creates them (as rclcpp does): its writers appear in
    # a later ros_discovery_info than the first. Use the newest one that lists every writer.
    wanted = {p.key.bytes for t in topics for p in pubs[t]}

    def newest():
        infos.extend(s for s in rd.take(N=32) if isinstance(s, r.ParticipantEntitiesInfo))
        latest = find_node(list(reversed(infos)), name, namespace)
        if latest and wanted <= {bytes(g.data) for g in latest[1].writer_gid_seq}:
            return latest
        return None

    pei, entry = wait_for(newest, timeout) or (pei, entry)
    writer_gids = {bytes(g.data) for g in entry.writer_gid_seq}
    for t in topics:
        assert pubs[t], f"no publication on {t}\n" + node.describe()
        for p in pubs[t]:
            assert p.key.bytes in writer_gids, f"writer of {t} ({p.key}) is not among the node's writer gids"
            assert p.participant_key.bytes == bytes(pei.gid.data), "ros_discovery_info gid is not the participant"
    return pei, entry


class _NoNode:
    def describe(self):
        return "(python emulation)"


def test_graph_helpers_against_python_node():
    """check_graph() against a node emulated in Python the way rmw announces one: a participant
    with a writer, listed in ros_discovery_info with its participant gid and writer gid."""
    domain = fresh_domain()
    peer = Peer(domain)
    other = DomainParticipant(domain)
    w = DataWriter(other, Topic(other, "rt/emu/dinov3/detections", r.Detection2DArray), qos=r.qos(**r.SENSOR_QOS))
    info_w = DataWriter(other, Topic(other, "ros_discovery_info", r.ParticipantEntitiesInfo),
                        qos=r.qos(**r.DISCOVERY_INFO_QOS))
    gid = lambda guid: r.Gid(data=guid.bytes)  # noqa: E731
    info_w.write(r.ParticipantEntitiesInfo(gid=gid(other.get_guid()), node_entities_info_seq=[
        r.NodeEntitiesInfo(node_namespace="/emu", node_name="fake", reader_gid_seq=[],
                           writer_gid_seq=[gid(w.get_guid()), gid(info_w.get_guid())])]))
    pei, entry = check_graph(peer, _NoNode(), "fake", "/emu", ["rt/emu/dinov3/detections"], timeout=10)
    assert len(entry.writer_gid_seq) == 2
    pubs = peer.remote_publications("rt/emu/dinov3/detections")
    assert len(pubs) == 1 and pubs[0].type_name == "vision_msgs::msg::dds_::Detection2DArray_"
    assert (reliability_of(pubs[0].qos), durability_of(pubs[0].qos)) == ("best_effort", "volatile")
    latched = peer.remote_publications("ros_discovery_info")
    assert (reliability_of(latched[0].qos), durability_of(latched[0].qos)) == ("reliable", "transient_local")
    del w, info_w, other


def test_node_in_ros_discovery_info(launch):
    domain = fresh_domain()
    peer = Peer(domain)
    node = launch(node_args(max_frames=300), domain)
    check_graph(peer, node, NODE_NAME, "/",
                [r.dds_topic(t) for t in ("/dinov3/detections", "/dinov3/camera_info", "/diagnostics")])


def test_node_logs_to_rosout(launch):
    """The node's own log lines also go to /rosout under its logger name (namespace.node)."""
    domain = fresh_domain()
    peer = Peer(domain)
    node = launch(node_args(max_frames=300, ros_args=["-r", "__ns:=/robot1", "-r", "__node:=cam0"]), domain)
    rd = peer.reader("rt/rosout", r.Log, kind=LATCHED, depth=100)
    logs = collect({"l": rd}, 20, until=lambda o: any("fps" in m.msg for m in o["l"]), node=node)["l"]
    ours = [m for m in logs if m.name == "robot1.cam0"]
    assert any("fps" in m.msg and m.level == r.LOG_INFO for m in ours), \
        f"no status line from robot1.cam0 on /rosout: {[(m.name, m.msg[:60]) for m in logs][:10]}\n" + node.describe()
    m = next(m for m in ours if "fps" in m.msg)
    assert m.file.endswith(".rs") and m.line > 0 and m.function.startswith("dinov3_perception"), m
    assert m.stamp.sec > 1_600_000_000


def humble_view(domain, name, namespace, seconds=20):
    out = subprocess.run([sys.executable, str(HERE / "humble_discovery.py"), str(domain), str(seconds), name, namespace],
                         capture_output=True, text=True, timeout=seconds + 30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_humble_build_announces_24_byte_gids(launch):
    """The `humble` build announces the node in ros_discovery_info with Humble's 24-byte GIDs
    (what `ros2 node list` on Humble decodes); the default (Jazzy) build's 16-byte GIDs do not
    decode as Humble's layout."""
    if not HUMBLE_BINARY.is_file():
        pytest.fail(f"{HUMBLE_BINARY} is missing: scripts/test.sh builds it "
                    "(cargo build --no-default-features --features humble)")
    domain = fresh_domain()
    node = launch(node_args(max_frames=400), domain, binary=HUMBLE_BINARY)
    seen = humble_view(domain, NODE_NAME, "/")
    assert seen["found"], "Humble peer does not see the node\n" + node.describe()
    assert seen["all_padded"] and seen["writers"] > 0, seen
    node.stop()
    domain = fresh_domain()
    jazzy = launch(node_args(max_frames=400), domain)
    seen = humble_view(domain, NODE_NAME, "/", seconds=8)
    assert not (seen["found"] and seen["all_padded"]), f"Jazzy GIDs decoded as Humble's: {seen}\n" + jazzy.describe()


def test_node_namespace_and_name_remap(launch):
    domain = fresh_domain()
    peer = Peer(domain)
    node = launch(node_args(max_frames=300, ros_args=["-r", "__ns:=/robot1", "-r", "__node:=cam0"]), domain)
    check_graph(peer, node, "cam0", "/robot1",
                ["rt/robot1/dinov3/detections", "rt/robot1/dinov3/camera_info", "rt/diagnostics"])
    det = peer.reader("rt/robot1/dinov3/detections", r.Detection2DArray)
    assert collect({"d": det}, 15, until=lambda o: o["d"], node=node)["d"], node.describe()
    assert not peer.remote_publications(r.dds_topic("/dinov3/detections"))
    # the parameter services move with the node
    rq, _ = r.dds_service_topics("/robot1/cam0", "list_parameters")
    assert wait_for(lambda: peer.remote_subscriptions(rq), 10), f"no {rq} reader (parameter service of /robot1/cam0)"
    names = r.call_service(peer.dp, "/robot1/cam0", "list_parameters", r.ListParameters_Request(), 10).result.names
    assert "source" in names, names


def test_node_topic_remap(launch):
    domain = fresh_domain()
    peer = Peer(domain)
    node = launch(node_args(max_frames=300, ros_args=["-r", "dinov3/detections:=objects"]), domain)
    objects, camera_info = r.dds_topic("/objects"), r.dds_topic("/dinov3/camera_info")
    pubs = peer.wait_publications([objects, camera_info], timeout=30)
    assert pubs[objects], f"no publication on {objects}\n" + node.describe()
    assert pubs[objects][0].type_name == r.Detection2DArray.__idl_typename__
    assert pubs[camera_info], f"no publication on {camera_info}\n" + node.describe()
    assert not peer.remote_publications(r.dds_topic("/dinov3/detections"))
    rd = peer.reader(objects, r.Detection2DArray)
    assert collect({"d": rd}, 15, until=lambda o: o["d"], node=node)["d"], node.describe()


def test_node_reliable_topics_on_request(launch):
    """qos.reliable_topics makes the listed topics reliable (a reliable reader then matches and
    receives); the others stay best effort."""
    domain = fresh_domain()
    peer = Peer(domain)
    node = launch(node_args(max_frames=300, ros_args=["-p", "qos.reliable_topics:=dinov3/detections, /dinov3/depth"]),
                  domain)
    det, depth, seg = (r.dds_topic(t) for t in ("/dinov3/detections", "/dinov3/depth", "/dinov3/segmentation"))
    pubs = peer.wait_publications([det, depth, seg], timeout=30)
    assert all(pubs.values()), f"missing publications {pubs}\n" + node.describe()
    assert reliability_of(pubs[det][0].qos) == "reliable"
    assert reliability_of(pubs[depth][0].qos) == "reliable"
    assert reliability_of(pubs[seg][0].qos) == "best_effort"
    rd = peer.reader(det, r.Detection2DArray, kind=RELIABLE)
    assert collect({"d": rd}, 15, until=lambda o: o["d"], node=node)["d"], node.describe()


# ------------------------------------------------------------------------------------------------
# 4. Parameter services, rmw_cyclonedds request layout
# ------------------------------------------------------------------------------------------------


def test_node_parameter_services(launch):
    domain = fresh_domain()
    peer = Peer(domain)
    node = launch(node_args(max_frames=400), domain)
    fqn = "/" + NODE_NAME
    clients = {s: r.ServiceClient(peer.dp, fqn, s) for s in r.PARAMETER_SERVICES}
    for s, c in clients.items():
        assert c.wait_for_service(30), f"service {fqn}/{s} never became available\n" + node.describe()

    def call(service, req, timeout=5.0):
        try:
            return clients[service].call(req, timeout)
        except r.ServiceTimeout as e:
            raise AssertionError(f"{e}\n{node.describe()}") from None

    def get(*names):
        return [v.python_value() for v in call("get_parameters", r.GetParameters_Request(names=list(names))).values]

    def set1(name, value):
        res = call("set_parameters", r.SetParameters_Request(parameters=[r.Parameter(name, r.pvalue(value))])).results
        assert len(res) == 1
        return res[0]

    names = call("list_parameters", r.ListParameters_Request(prefixes=[], depth=0)).result.names
    for n in REQUIRED_PARAMETERS:
        assert n in names, (n, names)
    heads_only = call("list_parameters", r.ListParameters_Request(prefixes=["heads"], depth=0)).result.names
    assert "heads.detection.enabled" in heads_only and all(n.startswith("heads.") for n in heads_only), heads_only

    values = call("get_parameters", r.GetParameters_Request(names=list(REQUIRED_PARAMETERS))).values
    assert [v.type for v in values] == [r.PARAMETER_BOOL, r.PARAMETER_DOUBLE, r.PARAMETER_STRING]
    enabled, threshold, source = (v.python_value() for v in values)
    assert enabled is True and 0.0 <= threshold <= 1.0 and source == "synthetic"
    types = call("get_parameter_types", r.GetParameterTypes_Request(names=list(REQUIRED_PARAMETERS))).types
    assert list(types) == [r.PARAMETER_BOOL, r.PARAMETER_DOUBLE, r.PARAMETER_STRING]

    descs = call("describe_parameters", r.DescribeParameters_Request(names=names)).descriptors
    assert [d.name for d in descs] == names
    all_types = call("get_parameter_types", r.GetParameterTypes_Request(names=names)).types
    for d, ty in zip(descs, all_types):
        assert d.description, f"{d.name} has no description"
        assert d.type == ty, (d.name, d.type, ty)
        if "threshold" in d.name and d.type == r.PARAMETER_DOUBLE:
            assert len(d.floating_point_range) == 1, f"{d.name} has no floating-point range"
            rng = d.floating_point_range[0]
            assert rng.from_value < rng.to_value
    by_name = {d.name: d for d in descs}
    assert by_name["source"].read_only is True
    thr = by_name["detection.score_threshold"].floating_point_range[0]
    assert (thr.from_value, thr.to_value) == (0.0, 1.0)

    # rejected: out of range, unknown, read-only, wrong type; values unchanged
    res = set1("detection.score_threshold", 2.0)
    assert res.successful is False and re.search(r"range|\b0(\.0)?\b.*\b1(\.0)?\b", res.reason, re.I), res
    res = set1("no.such.parameter", 1)
    assert res.successful is False and res.reason, res
    res = set1("source", "synthetic")
    assert res.successful is False and res.reason, res
    res = set1("detection.score_threshold", "high")
    assert res.successful is False and res.reason, res
    assert get("detection.score_threshold", "source") == [threshold, "synthetic"]

    # accepted, and announced on /parameter_events
    events = peer.reader("rt/parameter_events", r.ParameterEvent, kind=RELIABLE, depth=100)
    assert wait_for(lambda: peer.remote_publications("rt/parameter_events"), 10), "no /parameter_events writer"
    res = set1("detection.score_threshold", 0.5)
    assert res.successful is True, res
    assert get("detection.score_threshold") == [0.5]
    ev = collect({"e": events}, 5, until=lambda o: o["e"], node=node)["e"]
    ours = [e for e in ev if e.node == fqn]
    assert ours, f"no /parameter_events from {fqn}: {ev}"
    changed = ours[-1].changed_parameters
    assert [(p.name, p.value.python_value()) for p in changed] == [("detection.score_threshold", 0.5)], changed

    # switch detection off: detections stop, the other outputs go on
    readers = {n: peer.reader(r.dds_topic("/" + n), PER_FRAME_TOPICS[n], depth=100)
               for n in ("dinov3/detections", "dinov3/camera_info", "dinov3/segmentation")}
    before = collect(readers, 15, until=lambda o: o["dinov3/detections"] and o["dinov3/camera_info"], node=node)
    assert before["dinov3/detections"], "no detections before switching the head off\n" + node.describe()
    res = set1("heads.detection.enabled", False)
    assert res.successful is True, res
    assert get("heads.detection.enabled") == [False]
    collect(readers, 1.0, node=node)  # frames in flight
    after = collect(readers, 3.0, node=node)
    assert node.alive(), node.describe()
    assert not after["dinov3/detections"], f"{len(after['dinov3/detections'])} detections after disabling the head"
    assert after["dinov3/camera_info"] and after["dinov3/segmentation"], {k: len(v) for k, v in after.items()}


# ------------------------------------------------------------------------------------------------
# 5. The ROS image source
# ------------------------------------------------------------------------------------------------

SRC_W, SRC_H = 320, 240


def scene_picture(seed: int) -> np.ndarray:
    """A 320x240 rgb test picture with some objects on it."""
    rng = np.random.default_rng(seed)
    img = np.zeros((SRC_H, SRC_W, 3), np.uint8)
    img[: SRC_H // 2] = (110, 160, 220)
    img[SRC_H // 2:] = (90, 120, 70)
    for _ in range(3):
        x, y = rng.integers(20, SRC_W - 60), rng.integers(SRC_H // 2, SRC_H - 40)
        img[y:y + 30, x:x + 40] = rng.integers(0, 255, 3)
    return img


def to_encoding(rgb: np.ndarray, encoding: str) -> tuple:
    """(data, step) of an rgb picture in a ROS encoding."""
    h, w, _ = rgb.shape
    if encoding == "rgb8":
        return rgb.tobytes(), 3 * w
    if encoding == "bgr8":
        return rgb[:, :, ::-1].tobytes(), 3 * w
    if encoding == "mono8":
        return rgb.mean(axis=2).astype(np.uint8).tobytes(), w
    if encoding in ("yuv422_yuy2", "yuyv"):  # Y0 U Y1 V
        f = rgb.astype(np.float32)
        y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
        u = (f[..., 2] - y) * 0.564 + 128
        v = (f[..., 0] - y) * 0.713 + 128
        out = np.empty((h, w * 2), np.uint8)
        out[:, 0::4] = y[:, 0::2].clip(0, 255)
        out[:, 1::4] = u[:, 0::2].clip(0, 255)
        out[:, 2::4] = y[:, 1::2].clip(0, 255)
        out[:, 3::4] = v[:, 0::2].clip(0, 255)
        return out.tobytes(), 2 * w
    raise ValueError(encoding)


def diag_skipped(diags) -> int:
    ps = pipeline_status(diags)
    vals = [int(float(kv[SOURCE_SKIPPED_KEY])) for _, kv, _ in ps if SOURCE_SKIPPED_KEY in kv]
    return max(vals) if vals else -1


def run_ros_source(launch, topic, typ, frames, malformed):
    """Start the node on `--source ros:<topic>`, publish `frames` one at a time (each waits for
    outputs stamped with its own stamp), then the malformed ones, then one more good frame.
    Returns nothing; asserts as it goes."""
    domain = fresh_domain()
    peer = Peer(domain)
    node = launch(node_args(source=f"ros:{topic}", max_frames=1000, fps=None), domain)
    w = peer.writer(r.dds_topic(topic), typ, reliable=True, depth=20)
    outs = {n: peer.reader(r.dds_topic("/" + n), PER_FRAME_TOPICS[n], depth=100)
            for n in ("dinov3/detections", "dinov3/segmentation")}
    diag = peer.reader(r.dds_topic("/diagnostics"), r.DiagnosticArray, kind=RELIABLE, depth=100)
    assert wait_for(lambda: w.get_matched_subscriptions(), 30), \
        f"the node never subscribed to {r.dds_topic(topic)}\n" + node.describe()
    # the node's subscription must be of the right type
    subs = peer.remote_subscriptions(r.dds_topic(topic))
    assert subs and subs[0].type_name == typ.__idl_typename__, subs

    base = time.time_ns() // 1_000_000_000 * 1_000_000_000
    seen = {n: [] for n in outs}
    diags = []

    def publish_and_wait(i, msg, label):
        msg.header = r.Header(stamp=r.Time.from_ns(base + i * 1_000_000 + 7), frame_id="test_cam")
        want = stamp_ns(msg.header)
        w.write(msg)
        got = collect(outs, 15, until=lambda o: any(stamp_ns(m.header) == want for m in o["dinov3/detections"])
                      and any(stamp_ns(m.header) == want for m in o["dinov3/segmentation"]), node=node)
        for n in outs:
            seen[n].extend(got[n])
        dets = [m for m in got["dinov3/detections"] if stamp_ns(m.header) == want]
        segs = [m for m in got["dinov3/segmentation"] if stamp_ns(m.header) == want]
        assert dets and segs, f"no output stamped with the {label} frame's stamp\n" + node.describe()
        assert dets[0].header.frame_id == "test_cam"
        assert (segs[0].width, segs[0].height) == (SRC_W, SRC_H)

    i = 0
    for label, msg in frames:
        i += 1
        publish_and_wait(i, msg, label)
    for label, msg in malformed:
        i += 1
        msg.header = r.Header(stamp=r.Time.from_ns(base + i * 1_000_000 + 7), frame_id="test_cam")
        w.write(msg)
        time.sleep(0.3)
    i += 1
    publish_and_wait(i, frames[0][1], "final good")

    valid = {base + j * 1_000_000 + 7 for j in range(1, len(frames) + 1)} | {base + i * 1_000_000 + 7}
    for n in outs:
        for m in seen[n]:
            assert stamp_ns(m.header) in valid, f"{n} stamped {stamp_ns(m.header)}, not a good frame's stamp"

    skipped = wait_for(lambda: (diags.extend(collect({"d": diag}, 0.5)["d"]) or
                                diag_skipped(diags) >= len(malformed)), 5)
    assert skipped, (f"diagnostics {SOURCE_SKIPPED_KEY!r} = {diag_skipped(diags)}, want >= {len(malformed)}; "
                     f"keys: {sorted(pipeline_status(diags)[-1][1]) if pipeline_status(diags) else None}\n"
                     + node.describe())
    assert node.alive(), node.describe()


def test_node_ros_image_source(launch):
    frames = []
    for j, enc in enumerate(["rgb8", "bgr8", "mono8", "yuv422_yuy2", "yuyv"]):
        data, step = to_encoding(scene_picture(j), enc)
        frames.append((enc, r.Image(height=SRC_H, width=SRC_W, encoding=enc, is_bigendian=0, step=step, data=data)))
    good, step = to_encoding(scene_picture(9), "rgb8")
    malformed = [
        ("step too small", r.Image(height=SRC_H, width=SRC_W, encoding="rgb8", step=3 * SRC_W - 1, data=good)),
        ("data too short", r.Image(height=SRC_H, width=SRC_W, encoding="rgb8", step=step, data=good[:-1])),
        ("unknown encoding", r.Image(height=SRC_H, width=SRC_W, encoding="bayer_foo", step=SRC_W,
                                     data=good[:SRC_W * SRC_H])),
    ]
    run_ros_source(launch, "/camera/image_raw", r.Image, frames, malformed)


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 baseline JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(encode(np.full((16, 16, 3), 128, np.uint8), "JPEG"))
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "PIL wrote no baseline SOF0"
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_node_ros_compressed_source(launch):
    frames = [
        ("jpeg", r.CompressedImage(format="jpeg", data=encode(scene_picture(1), "JPEG"))),
        ("png", r.CompressedImage(format="png", data=encode(scene_picture(2), "PNG"))),
        # what compressed_image_transport sends
        ("image_transport jpeg", r.CompressedImage(format="bgr8; jpeg compressed bgr8",
                                                   data=encode(scene_picture(3), "JPEG"))),
    ]
    png = encode(scene_picture(4), "PNG")
    malformed = [
        ("garbage jpeg", r.CompressedImage(format="jpeg", data=b"\xff\xd8\xff" + bytes(500))),
        ("truncated png", r.CompressedImage(format="png", data=png[: len(png) // 2])),
        # A few hundred bytes whose header claims 12000x12000 (432 MB as RGB): refused on the
        # header, before decoding.
        ("huge jpeg header", r.CompressedImage(format="jpeg", data=jpeg_claiming(12000, 12000))),
    ]
    run_ros_source(launch, "/camera/image_raw/compressed", r.CompressedImage, frames, malformed)


# ------------------------------------------------------------------------------------------------
# 6. ROS_LOCALHOST_ONLY: the node announces loopback locators only, and nothing leaves lo
# ------------------------------------------------------------------------------------------------

PID_SENTINEL, PID_PARTICIPANT_GUID = 0x0001, 0x0050
LOCATOR_PIDS = {0x0031: "default_unicast", 0x0048: "default_multicast",
                0x0032: "metatraffic_unicast", 0x0033: "metatraffic_multicast"}
SPDP_WRITER = b"\x00\x01\x00\xc2"


def parse_spdp(packet: bytes):
    """Locators of the SPDP DATA submessages in an RTPS packet: [(guid_prefix, {kind: [(ip, port)]})]."""
    if packet[:4] != b"RTPS" or len(packet) < 20:
        return []
    prefix = packet[8:20]
    out = []
    pos = 20
    while pos + 4 <= len(packet):
        sid, flags = packet[pos], packet[pos + 1]
        le = "<" if flags & 1 else ">"
        (length,) = struct.unpack(le + "H", packet[pos + 2:pos + 4])
        body = packet[pos + 4: pos + 4 + length] if length else packet[pos + 4:]
        if sid == 0x15 and body[8:12] == SPDP_WRITER and flags & 0x04:
            (to_qos,) = struct.unpack(le + "H", body[2:4])
            p = 4 + to_qos
            if flags & 0x02:  # skip inline QoS
                while True:
                    pid, plen = struct.unpack(le + "HH", body[p:p + 4])
                    p += 4 + plen
                    if pid == PID_SENTINEL:
                        break
            enc = body[p:p + 2]
            ple = "<" if enc in (b"\x00\x03", b"\x00\x01") else ">"
            p += 4
            locs = {}
            while p + 4 <= len(body):
                pid, plen = struct.unpack(ple + "HH", body[p:p + 4])
                val = body[p + 4:p + 4 + plen]
                p += 4 + plen
                if pid == PID_SENTINEL:
                    break
                if pid in LOCATOR_PIDS:
                    kind, port = struct.unpack(ple + "iI", val[:8])
                    addr = socket.inet_ntoa(val[20:24]) if kind == 1 else socket.inet_ntop(socket.AF_INET6, val[8:24])
                    locs.setdefault(LOCATOR_PIDS[pid], []).append((addr, port))
            out.append((prefix, locs))
        if length == 0:
            break
        pos += 4 + length
    return out


def spdp_listener(domain: int, participant_index: int = 11) -> socket.socket:
    port = 7400 + 250 * domain + 10 + 2 * participant_index
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.2)
    return sock


def receive_spdp(sock, timeout, exclude=()) -> list:
    found = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not found:
        try:
            data, _ = sock.recvfrom(65535)
        except socket.timeout:
            continue
        found += [a for a in parse_spdp(data) if a[0] not in exclude]
    return found


def test_spdp_parser_against_cyclone():
    """parse_spdp() on the SPDP of a Cyclone participant (loopback config: 127.0.0.1 unicast
    locators only, no multicast ones)."""
    domain = fresh_domain()
    sock = spdp_listener(domain)
    try:
        dp = DomainParticipant(domain)
        found = receive_spdp(sock, 10)
    finally:
        sock.close()
    assert found, "no SPDP from the Cyclone participant"
    prefix, locs = found[0]
    assert prefix == dp.get_guid().bytes[:12]
    assert {a for a, _ in locs["metatraffic_unicast"]} == {"127.0.0.1"}
    assert {a for a, _ in locs["default_unicast"]} == {"127.0.0.1"}
    assert "metatraffic_multicast" not in locs and "default_multicast" not in locs, locs


def test_node_localhost_only_locators(launch, request):
    """With ROS_LOCALHOST_ONLY=1 the node's SPDP announcements carry 127.0.0.1 unicast locators
    only, and no RTPS packet leaves on another interface. Seen from a plain UDP socket at the
    well-known discovery port of participant index 11, to which RustDDS sends its unicast SPDP.
    The watch must have seen the node's own RTPS on loopback, so that "no leak" means it was
    watching the node's traffic."""
    if rerun_in_private_netns(request):
        return
    domain = fresh_domain()
    sock = spdp_listener(domain)
    with leak_watch() as watch:
        node = launch(node_args(max_frames=50), domain)
        announcements = receive_spdp(sock, 20)
        time.sleep(2)  # keep watching the wire a little while the node runs
    sock.close()
    assert announcements, "no SPDP from the node at participant index 11's port\n" + node.describe()
    for prefix, locs in announcements:
        unicast = locs.get("metatraffic_unicast", []) + locs.get("default_unicast", [])
        assert unicast, (prefix.hex(), locs)
        assert {a for a, _ in unicast} == {"127.0.0.1"}, f"unicast locators {unicast}"
        for a, _ in locs.get("metatraffic_multicast", []) + locs.get("default_multicast", []):
            assert a.startswith("239."), f"multicast locator {a}"
    for prefix, _ in announcements:
        assert watch.saw_on_loopback(prefix), (
            f"the watch saw none of the node's RTPS (prefix {prefix.hex()}) on lo: "
            f"{ {p.hex(): n for p, n in watch.loopback.items()} }")
    assert not watch.leaks, f"RTPS left the loopback interface: {watch.leaks[:5]}"


def test_backend_fallback_is_on_diagnostics(launch):
    """A backend that cannot be used (the default build has no onnxruntime backend; a build with
    it lacks TensorRT here) makes the node run on tract and say so on every /diagnostics status:
    WARN, the backend in use, the one requested and why."""
    domain = fresh_domain()
    peer = Peer(domain)
    rd = peer.reader(r.dds_topic("/diagnostics"), r.DiagnosticArray, kind=RELIABLE, depth=100)
    node = launch(node_args(max_frames=300, ros_args=["-p", "backend:=onnxruntime",
                                                      "-p", "onnxruntime.provider:=tensorrt"]), domain)
    got = collect({"d": rd}, 30, until=lambda o: any(
        st.values and int({kv.key: kv.value for kv in st.values}.get("frames_processed", 0)) > 0
        for _, _, st in pipeline_status(o["d"])), node=node)
    ps = [p for p in pipeline_status(got["d"]) if int(p[1].get("frames_processed", 0)) > 0]
    assert ps, "no pipeline status after the first frame\n" + node.describe()
    _, kv, st = ps[-1]
    assert kv["backend"] == "tract" and kv["backend_requested"] == "onnxruntime (tensorrt, fp16)", kv
    assert "onnxruntime" in kv["backend_fallback"], kv
    assert st.level == 1, (st.level, st.message)  # WARN
    assert "running on tract: onnxruntime (tensorrt, fp16) could not be used" in st.message, st.message
