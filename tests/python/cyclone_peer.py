"""A second Cyclone DDS process for tests/python/test_ros_interop.py: proves the loopback-only
configuration with two independent processes, before any Rust is involved.

    python cyclone_peer.py pub  DOMAIN TOPIC COUNT   # publishes COUNT 640x480 rgb8 Images, 10 Hz
    python cyclone_peer.py echo DOMAIN               # serves list_parameters the rmw_cyclonedds way

Both use ros2_idl.use_loopback_config(); ROS_DOMAIN_ID is not read (DOMAIN is explicit).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ros2_idl as r  # noqa: E402

r.use_loopback_config()

from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402


def pattern(i: int, width: int = 640, height: int = 480) -> bytes:
    """Deterministic rgb8 content of frame i (the subscriber recomputes it)."""
    row = bytes(((x + i) * 7) & 0xFF for x in range(width * 3))
    return row * height


def pub(domain: int, topic: str, count: int) -> None:
    dp = DomainParticipant(domain)
    w = DataWriter(dp, Topic(dp, topic, r.Image), qos=r.qos(reliable=True, depth=count))
    deadline = time.monotonic() + 10
    while not w.get_matched_subscriptions():
        if time.monotonic() > deadline:
            print("no subscriber matched", flush=True)
            sys.exit(2)
        time.sleep(0.02)
    for i in range(count):
        w.write(r.Image(header=r.Header(stamp=r.Time(sec=1000 + i, nanosec=i), frame_id="peer"),
                        height=480, width=640, encoding="rgb8", is_bigendian=0, step=1920,
                        data=pattern(i)))
        time.sleep(0.1)
    w.wait_for_acks(r.duration(seconds=5))
    print(f"published {count}", flush=True)


def echo(domain: int) -> None:
    dp = DomainParticipant(domain)

    def handler(req: r.ListParameters_Request) -> r.ListParameters_Response:
        names = [f"{p}.x" for p in req.prefixes] + [f"depth={req.depth}"]
        return r.ListParameters_Response(result=r.ListParametersResult(names=names, prefixes=req.prefixes))

    server = r.MockServiceServer(dp, "/peer_node", "list_parameters", handler)
    print("serving", flush=True)
    try:
        sys.stdin.read()  # until the parent closes stdin
    finally:
        server.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "pub":
        pub(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    elif cmd == "echo":
        echo(int(sys.argv[2]))
    else:
        raise SystemExit(f"unknown command {cmd}")
