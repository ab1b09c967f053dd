"""ros_discovery_info as a ROS 2 Humble peer reads it (rmw_dds_common Gid = char[24]), in a
process of its own: the Jazzy layout (uint8[16]) used by the other tests has the same DDS type
name, so the two cannot share one Cyclone participant.

    python humble_discovery.py DOMAIN SECONDS NODE_NAME NAMESPACE

Prints one JSON object: the node's entry as a Humble peer decodes it, or {"found": false}.
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["ROS2_IDL_GID_SIZE"] = "24"

import ros2_idl as r  # noqa: E402

r.use_loopback_config()

from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

ParticipantEntitiesInfo = r.ParticipantEntitiesInfo
assert r.GID_SIZE == r.GID_SIZE_HUMBLE


def main() -> None:
    domain, seconds, name, namespace = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
    dp = DomainParticipant(domain)
    rd = DataReader(dp, Topic(dp, "ros_discovery_info", ParticipantEntitiesInfo),
                    qos=r.qos(**r.DISCOVERY_INFO_QOS))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s in rd.take(N=32):
            if not isinstance(s, ParticipantEntitiesInfo):
                continue
            for n in s.node_entities_info_seq:
                if n.node_name == name and n.node_namespace == namespace:
                    gids = [bytes(s.gid.data)] + [bytes(g.data) for g in n.writer_gid_seq]
                    print(json.dumps({
                        "found": True,
                        "participant_gid": bytes(s.gid.data).hex(),
                        "writers": len(n.writer_gid_seq),
                        "readers": len(n.reader_gid_seq),
                        # rmw pads the 16-byte GUID to 24 bytes with zeros.
                        "all_padded": all(len(g) == 24 and g[16:] == bytes(8) and any(g[:16]) for g in gids),
                    }))
                    return
        time.sleep(0.1)
    print(json.dumps({"found": False}))


if __name__ == "__main__":
    main()
