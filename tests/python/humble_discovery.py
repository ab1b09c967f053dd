"""ros_discovery_info as a ROS 2 Humble peer reads it (rmw_dds_common Gid = char[24]), in a
process of its own: the Jazzy layout (uint8[16]) used by the other tests has the same DDS type
name, so the two cannot share one Cyclone participant.

    python humble_discovery.py DOMAIN SECONDS NODE_NAME NAMESPACE

Prints one JSON object: the node's entry as a Humble peer decodes it, or {"found": false}.
"""

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ros2_idl as r  # noqa: E402

r.use_loopback_config()

from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl import types as t  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402


@dataclass
class Gid(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
    data: t.array[t.uint8, r.GID_SIZE_HUMBLE] = field(default_factory=lambda: bytes(r.GID_SIZE_HUMBLE))


@dataclass
class NodeEntitiesInfo(IdlStruct, typename="rmw_dds_common::msg::dds_::NodeEntitiesInfo_"):
    node_namespace: str = ""
    node_name: str = ""
    reader_gid_seq: t.sequence[Gid] = field(default_factory=list)
    writer_gid_seq: t.sequence[Gid] = field(default_factory=list)


@dataclass
class ParticipantEntitiesInfo(IdlStruct, typename="rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"):
    gid: Gid = field(default_factory=Gid)
    node_entities_info_seq: t.sequence[NodeEntitiesInfo] = field(default_factory=list)


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
