"""A camera unplugged and replugged mid-stream, end to end through `dinov3_perception run`.

There is no camera here and no v4l2loopback: tests/fake_v4l2/fake_v4l2.c is an LD_PRELOAD shim
that turns a placeholder file into a YUYV camera at the libc boundary (open, ioctl, mmap, poll,
close). Deleting the placeholder unplugs it the way a UVC camera goes (poll: POLLERR|POLLHUP,
every ioctl: ENODEV, opens: ENOENT); creating it again plugs a fresh camera in.

The node runs with ROS on loopback (a private ROS_DOMAIN_ID) and the live view on. /diagnostics
is read twice over: over DDS by a Cyclone reader in this process (received times on this test's
own clock) and over the live view by tests/node/live_view.mjs (log times). Checked: the node keeps
publishing /diagnostics through the outage (WARN, no frame in the interval), processes frames
again after each replug, logs each outage once (lost, back) and counts it (`source_reconnects`,
the final `... R reconnects`); and that buffers the driver flags as corrupt or delivers short are
skipped and counted while the stream goes on.

gcc (to build the shim), Node.js with tests/node/node_modules and the debug binary are required:
a missing one fails the tests with the fix, nothing is skipped.

Run: .venv/bin/python -m pytest tests/python/test_fake_camera.py -q
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import ros2_idl as r  # noqa: E402

# Must precede the first DomainParticipant of this process.
r.use_loopback_config()

from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

from node_reader import perception_binary, start_node_script  # noqa: E402,F401
from test_live_view import binary, free_port  # noqa: E402

SHIM_SOURCE = REPO / "tests" / "fake_v4l2" / "fake_v4l2.c"
WIDTH, HEIGHT, FPS = 320, 240, 30  # the demo model's input size: no resize
STATUS_INTERVAL = 0.5  # s between status lines and /diagnostics messages
PIPELINE_STATUS = "dinov3_perception: pipeline"
FLOW, OUTAGE = 3.0, 3.0  # s of frames between events, s unplugged
# What src/source/v4l2/mod.rs logs at the start and the end of an outage.
LOST = re.compile(r"WARN .*source::v4l2\] .*: camera lost at ")
BACK = re.compile(r"INFO .*source::v4l2\] .*: camera back after ")
V4L2_WARNING = re.compile(r"WARN .*source::v4l2\]")
FINAL = re.compile(r"stopped after [\d.]+ s: (\d+) frames captured, (\d+) processed .*; "
                   r"source: (\d+) skipped, (\d+) reconnects")


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    """The fake camera, built from source for this run."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is not installed: the fake V4L2 camera (tests/fake_v4l2/fake_v4l2.c) is "
                    "built by the test; install gcc (`apt-get install gcc`)")
    out = tmp_path_factory.mktemp("fake_v4l2") / "fake_v4l2.so"
    done = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(out),
                           str(SHIM_SOURCE), "-ldl"], capture_output=True, text=True)
    assert done.returncode == 0, f"building {SHIM_SOURCE} failed:\n{done.stderr}"
    return out


class Camera:
    """The placeholder file of the fake camera: present = plugged in."""

    def __init__(self, path: Path):
        self.path = path
        self.plug()

    def plug(self):
        self.path.touch()

    def unplug(self):
        self.path.unlink()


class NodeRun:
    """The node on the fake camera, a /diagnostics reader over DDS, a live view client."""

    def __init__(self, tmp: Path, shim: Path, extra_env=None, extra_args=(), ros=True,
                 live_view=True):
        self.camera = Camera(tmp / "video0")
        self.log_path = tmp / "node.log"
        self.diags = []  # (monotonic s, wall ns, DiagnosticStatus) as received
        self.events = {}  # name -> (monotonic s, wall ns)
        domain = random.SystemRandom().randint(101, 200)  # test_ros_interop uses 1..100
        self.reader = None
        if ros:
            dp = DomainParticipant(domain)
            self._dp = dp
            self.reader = DataReader(dp, Topic(dp, r.dds_topic("/diagnostics"), r.DiagnosticArray),
                                     qos=r.qos(**{**r.SERVICE_QOS, "depth": 100}))
        port = free_port()
        args = [str(binary()), "run", "--source", f"v4l2:{self.camera.path}",
                "--pixel-format", "yuyv", "--width", str(WIDTH), "--height", str(HEIGHT),
                "--fps", str(FPS), "--status-interval", str(STATUS_INTERVAL), *extra_args]
        args += ["--foxglove", f"127.0.0.1:{port}"] if live_view else []
        args += [] if ros else ["--no-ros"]
        env = dict(os.environ)
        env.pop("CYCLONEDDS_URI", None)
        env.update({"ROS_DOMAIN_ID": str(domain), "ROS_LOCALHOST_ONLY": "1", "RUST_LOG": "info",
                    "LD_PRELOAD": str(shim), "FAKE_V4L2_DEVICE": str(self.camera.path),
                    "FAKE_V4L2_SIZE": f"{WIDTH}x{HEIGHT}", "FAKE_V4L2_FPS": str(FPS),
                    **(extra_env or {})})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.client = None
        if live_view:
            self.client = start_node_script("live_view.mjs", [f"ws://127.0.0.1:{port}",
                                                              "--seconds", "90",
                                                              "--connect-seconds", "30"])

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def describe(self) -> str:
        lines = [ln for ln in self.log().splitlines()
                 if "sink::log] frame " not in ln and "rustdds::" not in ln]
        return f"node log {self.log_path} (rc {self.proc.poll()}), tail:\n" + "\n".join(
            ln[:300] for ln in lines[-40:])

    def mark(self, name: str):
        self.events[name] = (time.monotonic(), time.time_ns())

    def pump(self, seconds: float, until=None) -> bool:
        """Read /diagnostics for `seconds` or until `until()`; False if the node died."""
        deadline = time.monotonic() + seconds
        while True:
            if self.reader is not None:
                for s in self.reader.take(N=64):
                    if isinstance(s, r.DiagnosticArray):
                        got = (time.monotonic(), time.time_ns())
                        self.diags += [(*got, st) for st in s.status if st.name == PIPELINE_STATUS]
            if self.proc.poll() is not None:
                return False
            if until is not None and until():
                return True
            if time.monotonic() >= deadline:
                return until is None
            time.sleep(0.02)

    def processed(self) -> int:
        """frames_processed of the last /diagnostics received."""
        return int(self.value(self.diags[-1][2], "frames_processed")) if self.diags else 0

    @staticmethod
    def value(status, key: str) -> str:
        return {kv.key: kv.value for kv in status.values}[key]

    def stop(self) -> tuple:
        """SIGINT, then (exit code, log text, live view summary or None)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=5)
            pytest.fail("the node did not stop within 15 s of SIGINT\n" + self.describe())
        self.pump(0.3)  # what was in flight
        summary = None
        if self.client is not None:
            out, err = self.client.communicate(timeout=30)
            assert self.client.returncode == 0, f"live_view.mjs exited {self.client.returncode}:\n{err[-3000:]}"
            summary = json.loads(out)
        self._log.close()
        return code, self.log_path.read_text(errors="replace"), summary

    def kill(self):
        for p in (self.client, self.proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        if not self._log.closed:
            self._log.close()


def final_counts(log: str) -> dict:
    m = FINAL.search(log)
    assert m, "no `stopped after ...` line in the log:\n" + log[-3000:]
    return dict(zip(("captured", "processed", "skipped", "reconnects"), map(int, m.groups())))


def assert_clean_exit(code: int, log: str):
    assert "panicked" not in log, "the node panicked:\n" + log[-4000:]
    assert code == 0, f"the node exited {code}:\n" + log[-4000:]


@pytest.fixture(scope="module")
def unplug_run(shim, tmp_path_factory):
    """Frames, unplug, replug, frames, unplug, replug, frames, SIGINT: what happened when."""
    run = NodeRun(tmp_path_factory.mktemp("unplug"), shim)
    try:
        started = run.pump(60, until=lambda: run.processed() >= 10)
        assert started, "no /diagnostics with 10 frames processed within 60 s\n" + run.describe()
        for cycle in (1, 2):
            assert run.pump(FLOW), run.describe()
            run.mark(f"unplug{cycle}")
            run.camera.unplug()
            assert run.pump(OUTAGE), run.describe()
            run.mark(f"replug{cycle}")
            run.camera.plug()
            # The reopen backoff doubles to 2 s: the camera is back within about that.
            back = run.pump(10, until=lambda: len(BACK.findall(run.log())) >= cycle)
            assert back, f"the camera never came back after replug {cycle}\n" + run.describe()
            run.mark(f"back{cycle}")
        assert run.pump(FLOW), run.describe()
        run.mark("end")
        code, log, summary = run.stop()
    finally:
        run.kill()
    return run, code, log, summary


def test_the_node_rides_out_two_unplugs_and_exits_cleanly(unplug_run):
    run, code, log, _ = unplug_run
    assert_clean_exit(code, log)
    counts = final_counts(log)
    assert counts["reconnects"] == 2, counts
    assert counts["skipped"] == 0, counts


def test_each_outage_is_logged_once_at_its_start_and_once_at_its_end(unplug_run):
    _, _, log, _ = unplug_run
    lost, back = LOST.findall(log), BACK.findall(log)
    assert (len(lost), len(back)) == (2, 2), (
        f"{len(lost)} `camera lost` and {len(back)} `camera back` lines for two outages:\n"
        + "\n".join(ln for ln in log.splitlines() if "source::v4l2" in ln))
    # An unplugged camera is expected while it is away: no reopen warnings beside the one line.
    warnings = [ln for ln in log.splitlines() if V4L2_WARNING.search(ln)]
    assert len(warnings) == 2, "\n".join(warnings)
    assert all("No such device" in w for w in warnings), "\n".join(warnings)


def diags_between(run, start: str, end: str, margin: float = 0.0):
    t0, t1 = run.events[start][0] + margin, run.events[end][0]
    return [st for t, _, st in run.diags if t0 <= t <= t1]


@pytest.mark.parametrize("cycle", [1, 2])
def test_diagnostics_over_dds_during_the_outage(unplug_run, cycle):
    run, _, _, _ = unplug_run
    # From one interval after the unplug (the interval it happened in still had frames) to the
    # replug: every status says there were no frames and the counters stand still.
    during = diags_between(run, f"unplug{cycle}", f"replug{cycle}", margin=2 * STATUS_INTERVAL)
    want = int((OUTAGE - 2 * STATUS_INTERVAL) / STATUS_INTERVAL) - 1
    assert len(during) >= want, (
        f"{len(during)} /diagnostics over DDS during outage {cycle} (want >= {want}); received at "
        f"{[round(t - run.events[f'unplug{cycle}'][0], 2) for t, _, _ in run.diags]} s from the unplug")
    for st in during:
        assert (st.level, st.message) == (r.DIAG_WARN, "no frame in the last interval"), st
        assert float(run.value(st, "fps")) == 0.0, st
        assert run.value(st, "source_reconnects") == str(cycle - 1), st
    assert len({run.value(st, "frames_processed") for st in during}) == 1, \
        [run.value(st, "frames_processed") for st in during]


@pytest.mark.parametrize("cycle", [1, 2])
def test_frames_are_processed_after_each_replug_and_the_reconnect_counted(unplug_run, cycle):
    run, _, _, _ = unplug_run
    during = diags_between(run, f"unplug{cycle}", f"replug{cycle}", margin=2 * STATUS_INTERVAL)
    after = diags_between(run, f"back{cycle}", "unplug2" if cycle == 1 else "end")
    assert during and after, (len(during), len(after))
    stalled = int(run.value(during[-1], "frames_processed"))
    assert int(run.value(after[-1], "frames_processed")) >= stalled + 10, (
        f"frames processed: {stalled} during outage {cycle}, "
        f"{[run.value(st, 'frames_processed') for st in after]} after it")
    assert run.value(after[-1], "source_reconnects") == str(cycle)
    assert after[-1].level == r.DIAG_OK, after[-1]


def test_the_live_view_keeps_serving_diagnostics_during_each_outage(unplug_run):
    run, _, _, summary = unplug_run
    assert summary["reason"] == "closed", "the node's end closes the live view connection"
    diag = summary["topics"]["/diagnostics"]
    assert diag["decode_failures"] == 0, diag["errors"]
    # One status per message: statuses[i] was logged at log_times[i] (node clock, UTC).
    logged = [(int(t), s) for t, s in zip(diag["log_times"], diag["statuses"])
              if s["name"] == PIPELINE_STATUS]
    for cycle in (1, 2):
        t0 = run.events[f"unplug{cycle}"][1] + int(2 * STATUS_INTERVAL * 1e9)
        t1 = run.events[f"replug{cycle}"][1]
        during = [s for t, s in logged if t0 <= t <= t1]
        assert len(during) >= 2, (cycle, [(t - run.events[f"unplug{cycle}"][1]) / 1e9
                                          for t, _ in logged])
        assert all(s["level"] == r.DIAG_WARN and s["values"]["fps"] == "0.00" for s in during), during
    assert logged[-1][1]["values"]["source_reconnects"] == "2", logged[-1]


def test_corrupt_and_short_buffers_are_skipped_and_counted(shim, tmp_path):
    """Frame 10 comes flagged V4L2_BUF_FLAG_ERROR, frame 20 with half the image: both are
    skipped, counted, warned about (once: the warning is rate-limited), and the stream goes on
    to --max-frames."""
    run = NodeRun(tmp_path, shim, ros=False, live_view=False,
                  extra_env={"FAKE_V4L2_ERROR_FRAMES": "10", "FAKE_V4L2_SHORT_FRAMES": "20"},
                  extra_args=["--max-frames", "25"])
    try:
        code = run.proc.wait(timeout=60)
        log = run.log()
    finally:
        run.kill()
    assert_clean_exit(code, log)
    counts = final_counts(log)
    assert counts["skipped"] == 2 and counts["reconnects"] == 0, counts
    assert counts["processed"] == 25 and counts["captured"] >= 25, counts
    skips = [ln for ln in log.splitlines() if "skipped frame" in ln]
    assert len(skips) == 1, "\n".join(skips)
    assert "flagged the buffer as corrupt" in skips[0], skips[0]
    assert not LOST.search(log), "a bad buffer is no lost camera"
