"""ROS 2 message and service types as Cyclone DDS (Python) IDL classes, named as ROS 2 names them
on the wire, plus the plumbing to talk to a ROS 2 node the way rmw_cyclonedds does.

This is the *independent peer* of the Rust node: nothing here comes from our Rust code. Each
struct is written from the ROS 2 Jazzy ``.msg`` / ``.srv`` definitions (vision_msgs 4.x), field by
field and in order. Wire names follow rmw_cyclonedds / rosidl_typesupport:

* message type ``pkg/msg/Type``        -> DDS type ``pkg::msg::dds_::Type_``
* topic ``/<ns>/<name>``               -> DDS topic ``rt/<ns>/<name>``
* service ``/<node fqn>/<srv>``        -> ``rq/<node fqn>/<srv>Request`` and ``rr/<node fqn>/<srv>Reply``
  with types ``pkg::srv::dds_::Srv_Request_`` / ``pkg::srv::dds_::Srv_Response_``
  (rmw_cyclonedds_cpp/src/rmw_node.cpp, ``rmw_init_cs``: ``make_fqtopic(ROS_SERVICE_REQUESTER_PREFIX,
  service_name, "Request", ...)`` and ``make_fqtopic(ROS_SERVICE_RESPONSE_PREFIX, service_name,
  "Reply", ...)``).
* rmw_cyclonedds puts a 16-byte header in front of every request and reply payload
  (``cdds_request_header_t { uint64_t guid; int64_t seq; }``, rmw_cyclonedds_cpp/src/serdata.hpp);
  the reply echoes the request's header. It is modelled here as a leading ``RequestHeader`` member
  of every ``*_Request_`` / ``*_Response_`` struct, which serialises to the same bytes.

All payloads are plain (XCDR1) little-endian CDR, encapsulation ``00 01 00 00``, which is what ROS 2
uses. Writers made with :func:`writer_qos` / the helpers below force XCDR1 (``DataRepresentation
use_cdrv0_representation``); XCDR2 aligns float64 to 4 and would garble e.g. CameraInfo.
"""

import itertools
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from cyclonedds.core import Qos, Policy
from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as t
from cyclonedds.util import duration

# ------------------------------------------------------------------------------------------------
# builtin_interfaces / std_msgs
# ------------------------------------------------------------------------------------------------


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0

    def to_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec

    @staticmethod
    def from_ns(ns: int) -> "Time":
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class Float32(IdlStruct, typename="std_msgs::msg::dds_::Float32_"):
    data: t.float32 = 0.0


# ------------------------------------------------------------------------------------------------
# sensor_msgs
# ------------------------------------------------------------------------------------------------
# uint8[] is sequence[uint8] (Python `bytes` members would be wire-identical, but Cyclone's XTypes
# builder cannot make a type object for them). To send, `bytes` works as well as a list of ints.
# Received, it is a list of ints, or `bytes` after install_fast_octet_sequences().


@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header = field(default_factory=Header)
    height: t.uint32 = 0
    width: t.uint32 = 0
    encoding: str = ""
    is_bigendian: t.uint8 = 0
    step: t.uint32 = 0
    data: t.sequence[t.uint8] = field(default_factory=list)


@dataclass
class CompressedImage(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header = field(default_factory=Header)
    format: str = ""
    data: t.sequence[t.uint8] = field(default_factory=list)


@dataclass
class RegionOfInterest(IdlStruct, typename="sensor_msgs::msg::dds_::RegionOfInterest_"):
    x_offset: t.uint32 = 0
    y_offset: t.uint32 = 0
    height: t.uint32 = 0
    width: t.uint32 = 0
    do_rectify: bool = False


@dataclass
class CameraInfo(IdlStruct, typename="sensor_msgs::msg::dds_::CameraInfo_"):
    header: Header = field(default_factory=Header)
    height: t.uint32 = 0
    width: t.uint32 = 0
    distortion_model: str = ""
    d: t.sequence[t.float64] = field(default_factory=list)
    k: t.array[t.float64, 9] = field(default_factory=lambda: [0.0] * 9)
    r: t.array[t.float64, 9] = field(default_factory=lambda: [0.0] * 9)
    p: t.array[t.float64, 12] = field(default_factory=lambda: [0.0] * 12)
    binning_x: t.uint32 = 0
    binning_y: t.uint32 = 0
    roi: RegionOfInterest = field(default_factory=RegionOfInterest)


@dataclass
class PointField(IdlStruct, typename="sensor_msgs::msg::dds_::PointField_"):
    name: str = ""
    offset: t.uint32 = 0
    datatype: t.uint8 = 0
    count: t.uint32 = 0


# sensor_msgs/PointField datatype constants
POINTFIELD_INT8, POINTFIELD_UINT8, POINTFIELD_INT16, POINTFIELD_UINT16 = 1, 2, 3, 4
POINTFIELD_INT32, POINTFIELD_UINT32, POINTFIELD_FLOAT32, POINTFIELD_FLOAT64 = 5, 6, 7, 8


@dataclass
class PointCloud2(IdlStruct, typename="sensor_msgs::msg::dds_::PointCloud2_"):
    header: Header = field(default_factory=Header)
    height: t.uint32 = 0
    width: t.uint32 = 0
    fields: t.sequence[PointField] = field(default_factory=list)
    is_bigendian: bool = False
    point_step: t.uint32 = 0
    row_step: t.uint32 = 0
    data: t.sequence[t.uint8] = field(default_factory=list)
    is_dense: bool = False


# ------------------------------------------------------------------------------------------------
# geometry_msgs
# ------------------------------------------------------------------------------------------------


@dataclass
class Point(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    x: t.float64 = 0.0
    y: t.float64 = 0.0
    z: t.float64 = 0.0


@dataclass
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    # geometry_msgs/Quaternion's .msg default is w = 1
    x: t.float64 = 0.0
    y: t.float64 = 0.0
    z: t.float64 = 0.0
    w: t.float64 = 1.0


@dataclass
class Pose(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    position: Point = field(default_factory=Point)
    orientation: Quaternion = field(default_factory=Quaternion)


@dataclass
class PoseWithCovariance(IdlStruct, typename="geometry_msgs::msg::dds_::PoseWithCovariance_"):
    pose: Pose = field(default_factory=Pose)
    covariance: t.array[t.float64, 36] = field(default_factory=lambda: [0.0] * 36)


# ------------------------------------------------------------------------------------------------
# vision_msgs 4.x (Humble / Jazzy)
# ------------------------------------------------------------------------------------------------


@dataclass
class Point2D(IdlStruct, typename="vision_msgs::msg::dds_::Point2D_"):
    x: t.float64 = 0.0
    y: t.float64 = 0.0


@dataclass
class Pose2D(IdlStruct, typename="vision_msgs::msg::dds_::Pose2D_"):
    position: Point2D = field(default_factory=Point2D)
    theta: t.float64 = 0.0


@dataclass
class BoundingBox2D(IdlStruct, typename="vision_msgs::msg::dds_::BoundingBox2D_"):
    center: Pose2D = field(default_factory=Pose2D)
    size_x: t.float64 = 0.0
    size_y: t.float64 = 0.0


@dataclass
class ObjectHypothesis(IdlStruct, typename="vision_msgs::msg::dds_::ObjectHypothesis_"):
    class_id: str = ""
    score: t.float64 = 0.0


@dataclass
class ObjectHypothesisWithPose(IdlStruct, typename="vision_msgs::msg::dds_::ObjectHypothesisWithPose_"):
    hypothesis: ObjectHypothesis = field(default_factory=ObjectHypothesis)
    pose: PoseWithCovariance = field(default_factory=PoseWithCovariance)


@dataclass
class Detection2D(IdlStruct, typename="vision_msgs::msg::dds_::Detection2D_"):
    header: Header = field(default_factory=Header)
    results: t.sequence[ObjectHypothesisWithPose] = field(default_factory=list)
    bbox: BoundingBox2D = field(default_factory=BoundingBox2D)
    id: str = ""


@dataclass
class Detection2DArray(IdlStruct, typename="vision_msgs::msg::dds_::Detection2DArray_"):
    header: Header = field(default_factory=Header)
    detections: t.sequence[Detection2D] = field(default_factory=list)


@dataclass
class Classification(IdlStruct, typename="vision_msgs::msg::dds_::Classification_"):
    header: Header = field(default_factory=Header)
    results: t.sequence[ObjectHypothesis] = field(default_factory=list)


@dataclass
class VisionInfo(IdlStruct, typename="vision_msgs::msg::dds_::VisionInfo_"):
    header: Header = field(default_factory=Header)
    method: str = ""
    database_location: str = ""
    database_version: t.int32 = 0


# ------------------------------------------------------------------------------------------------
# diagnostic_msgs
# ------------------------------------------------------------------------------------------------


@dataclass
class KeyValue(IdlStruct, typename="diagnostic_msgs::msg::dds_::KeyValue_"):
    key: str = ""
    value: str = ""


DIAG_OK, DIAG_WARN, DIAG_ERROR, DIAG_STALE = 0, 1, 2, 3


@dataclass
class DiagnosticStatus(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticStatus_"):
    level: t.byte = 0  # ROS `byte` = IDL octet
    name: str = ""
    message: str = ""
    hardware_id: str = ""
    values: t.sequence[KeyValue] = field(default_factory=list)


@dataclass
class DiagnosticArray(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticArray_"):
    header: Header = field(default_factory=Header)
    status: t.sequence[DiagnosticStatus] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# rmw_dds_common (topic `ros_discovery_info`, what `ros2 node list` reads)
# ------------------------------------------------------------------------------------------------
# Jazzy: Gid.msg is `uint8[16] data` (rosidl type description FIELD_TYPE_UINT8_ARRAY, 16; Humble
# had char[24]). NodeEntitiesInfo: node_namespace, node_name, reader_gid_seq, writer_gid_seq (in
# that order since Foxy; pre-Foxy IDL had writer first).

GID_SIZE_JAZZY = 16
GID_SIZE_HUMBLE = 24
# The layout this process speaks. Both layouts share one DDS type name, so a process can hold only
# one of them: tests/python/humble_discovery.py sets ROS2_IDL_GID_SIZE=24 before importing this.
GID_SIZE = int(os.environ.get("ROS2_IDL_GID_SIZE", GID_SIZE_JAZZY))


@dataclass
class Gid(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
    data: t.array[t.uint8, GID_SIZE] = field(default_factory=lambda: bytes(GID_SIZE))


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


# ------------------------------------------------------------------------------------------------
# rcl_interfaces (parameters)
# ------------------------------------------------------------------------------------------------

# rcl_interfaces/msg/ParameterType
PARAMETER_NOT_SET, PARAMETER_BOOL, PARAMETER_INTEGER, PARAMETER_DOUBLE, PARAMETER_STRING = 0, 1, 2, 3, 4
PARAMETER_BYTE_ARRAY, PARAMETER_BOOL_ARRAY, PARAMETER_INTEGER_ARRAY = 5, 6, 7
PARAMETER_DOUBLE_ARRAY, PARAMETER_STRING_ARRAY = 8, 9


@dataclass
class ParameterValue(IdlStruct, typename="rcl_interfaces::msg::dds_::ParameterValue_"):
    type: t.uint8 = PARAMETER_NOT_SET
    bool_value: bool = False
    integer_value: t.int64 = 0
    double_value: t.float64 = 0.0
    string_value: str = ""
    byte_array_value: t.sequence[t.byte] = field(default_factory=list)  # ROS byte[] = sequence<octet>
    bool_array_value: t.sequence[bool] = field(default_factory=list)
    integer_array_value: t.sequence[t.int64] = field(default_factory=list)
    double_array_value: t.sequence[t.float64] = field(default_factory=list)
    string_array_value: t.sequence[str] = field(default_factory=list)

    def python_value(self):
        return {
            PARAMETER_NOT_SET: None,
            PARAMETER_BOOL: self.bool_value,
            PARAMETER_INTEGER: self.integer_value,
            PARAMETER_DOUBLE: self.double_value,
            PARAMETER_STRING: self.string_value,
            PARAMETER_BYTE_ARRAY: bytes(self.byte_array_value),
            PARAMETER_BOOL_ARRAY: list(self.bool_array_value),
            PARAMETER_INTEGER_ARRAY: list(self.integer_array_value),
            PARAMETER_DOUBLE_ARRAY: list(self.double_array_value),
            PARAMETER_STRING_ARRAY: list(self.string_array_value),
        }[self.type]


def pvalue(v) -> ParameterValue:
    """A ParameterValue from a Python value (bool before int: bool is an int in Python)."""
    if v is None:
        return ParameterValue()
    if isinstance(v, bool):
        return ParameterValue(type=PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=PARAMETER_DOUBLE, double_value=v)
    if isinstance(v, str):
        return ParameterValue(type=PARAMETER_STRING, string_value=v)
    if isinstance(v, (bytes, bytearray)):
        return ParameterValue(type=PARAMETER_BYTE_ARRAY, byte_array_value=bytes(v))
    if isinstance(v, list) and v and all(isinstance(x, bool) for x in v):
        return ParameterValue(type=PARAMETER_BOOL_ARRAY, bool_array_value=v)
    if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
        return ParameterValue(type=PARAMETER_INTEGER_ARRAY, integer_array_value=v)
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
        return ParameterValue(type=PARAMETER_DOUBLE_ARRAY, double_array_value=[float(x) for x in v])
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return ParameterValue(type=PARAMETER_STRING_ARRAY, string_array_value=v)
    raise TypeError(f"no ROS parameter type for {v!r}")


@dataclass
class Parameter(IdlStruct, typename="rcl_interfaces::msg::dds_::Parameter_"):
    name: str = ""
    value: ParameterValue = field(default_factory=ParameterValue)


@dataclass
class Log(IdlStruct, typename="rcl_interfaces::msg::dds_::Log_"):
    """rcl_interfaces/Log, on /rosout (what rqt_console and `ros2 topic echo /rosout` show)."""
    stamp: Time = field(default_factory=Time)
    level: t.uint8 = 0
    name: str = ""
    msg: str = ""
    file: str = ""
    function: str = ""
    line: t.uint32 = 0


LOG_INFO, LOG_WARN = 20, 30


@dataclass
class ParameterEvent(IdlStruct, typename="rcl_interfaces::msg::dds_::ParameterEvent_"):
    stamp: Time = field(default_factory=Time)
    node: str = ""
    new_parameters: t.sequence[Parameter] = field(default_factory=list)
    changed_parameters: t.sequence[Parameter] = field(default_factory=list)
    deleted_parameters: t.sequence[Parameter] = field(default_factory=list)


@dataclass
class SetParametersResult(IdlStruct, typename="rcl_interfaces::msg::dds_::SetParametersResult_"):
    successful: bool = False
    reason: str = ""


@dataclass
class FloatingPointRange(IdlStruct, typename="rcl_interfaces::msg::dds_::FloatingPointRange_"):
    from_value: t.float64 = 0.0
    to_value: t.float64 = 0.0
    step: t.float64 = 0.0


@dataclass
class IntegerRange(IdlStruct, typename="rcl_interfaces::msg::dds_::IntegerRange_"):
    from_value: t.int64 = 0
    to_value: t.int64 = 0
    step: t.uint64 = 0


@dataclass
class ParameterDescriptor(IdlStruct, typename="rcl_interfaces::msg::dds_::ParameterDescriptor_"):
    name: str = ""
    type: t.uint8 = 0
    description: str = ""
    additional_constraints: str = ""
    read_only: bool = False
    dynamic_typing: bool = False
    floating_point_range: t.sequence[FloatingPointRange, 1] = field(default_factory=list)
    integer_range: t.sequence[IntegerRange, 1] = field(default_factory=list)


@dataclass
class ListParametersResult(IdlStruct, typename="rcl_interfaces::msg::dds_::ListParametersResult_"):
    names: t.sequence[str] = field(default_factory=list)
    prefixes: t.sequence[str] = field(default_factory=list)


@dataclass
class RequestHeader(IdlStruct, typename="rmw_cyclonedds::cdds_request_header_t"):
    """rmw_cyclonedds' in-payload header: client id (the request writer's instance handle) and a
    per-client sequence number. Not a ROS type; only its 16 bytes are on the wire."""

    guid: t.uint64 = 0
    seq: t.int64 = 0


# Request / response structs: the RequestHeader first, then the .srv fields in order.

LIST_PARAMETERS_DEPTH_RECURSIVE = 0


@dataclass
class ListParameters_Request(IdlStruct, typename="rcl_interfaces::srv::dds_::ListParameters_Request_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    prefixes: t.sequence[str] = field(default_factory=list)
    depth: t.uint64 = LIST_PARAMETERS_DEPTH_RECURSIVE


@dataclass
class ListParameters_Response(IdlStruct, typename="rcl_interfaces::srv::dds_::ListParameters_Response_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    result: ListParametersResult = field(default_factory=ListParametersResult)


@dataclass
class GetParameters_Request(IdlStruct, typename="rcl_interfaces::srv::dds_::GetParameters_Request_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    names: t.sequence[str] = field(default_factory=list)


@dataclass
class GetParameters_Response(IdlStruct, typename="rcl_interfaces::srv::dds_::GetParameters_Response_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    values: t.sequence[ParameterValue] = field(default_factory=list)


@dataclass
class SetParameters_Request(IdlStruct, typename="rcl_interfaces::srv::dds_::SetParameters_Request_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    parameters: t.sequence[Parameter] = field(default_factory=list)


@dataclass
class SetParameters_Response(IdlStruct, typename="rcl_interfaces::srv::dds_::SetParameters_Response_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    results: t.sequence[SetParametersResult] = field(default_factory=list)


@dataclass
class DescribeParameters_Request(IdlStruct, typename="rcl_interfaces::srv::dds_::DescribeParameters_Request_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    names: t.sequence[str] = field(default_factory=list)


@dataclass
class DescribeParameters_Response(IdlStruct, typename="rcl_interfaces::srv::dds_::DescribeParameters_Response_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    descriptors: t.sequence[ParameterDescriptor] = field(default_factory=list)


@dataclass
class GetParameterTypes_Request(IdlStruct, typename="rcl_interfaces::srv::dds_::GetParameterTypes_Request_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    names: t.sequence[str] = field(default_factory=list)


@dataclass
class GetParameterTypes_Response(IdlStruct, typename="rcl_interfaces::srv::dds_::GetParameterTypes_Response_"):
    header: RequestHeader = field(default_factory=RequestHeader)
    types: t.sequence[t.uint8] = field(default_factory=list)


# service name -> (request type, response type)
PARAMETER_SERVICES = {
    "list_parameters": (ListParameters_Request, ListParameters_Response),
    "get_parameters": (GetParameters_Request, GetParameters_Response),
    "set_parameters": (SetParameters_Request, SetParameters_Response),
    "describe_parameters": (DescribeParameters_Request, DescribeParameters_Response),
    "get_parameter_types": (GetParameterTypes_Request, GetParameterTypes_Response),
}

# ------------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------------


def join_name(namespace: str, name: str) -> str:
    """ROS name resolution for a relative name in a namespace: ("/", "a/b") -> "/a/b"."""
    if name.startswith("/"):
        return name
    ns = namespace.rstrip("/")
    return f"{ns}/{name}"


def dds_topic(ros_topic: str) -> str:
    """'/robot1/dinov3/detections' -> 'rt/robot1/dinov3/detections'."""
    assert ros_topic.startswith("/"), ros_topic
    return "rt" + ros_topic


def dds_service_topics(node_fqn: str, service: str) -> tuple[str, str]:
    """('/robot1/cam0', 'list_parameters') -> request and reply topic names, as rmw_cyclonedds
    makes them."""
    srv = join_name(node_fqn, service)
    return "rq" + srv + "Request", "rr" + srv + "Reply"


# ------------------------------------------------------------------------------------------------
# QoS (ROS 2 profiles as rmw maps them to DDS)
# ------------------------------------------------------------------------------------------------

_XCDR1 = Policy.DataRepresentation(use_cdrv0_representation=True)


def qos(reliable: bool = True, transient_local: bool = False, depth: int = 10, xcdr1: bool = True) -> Qos:
    policies = [
        Policy.Reliability.Reliable(duration(seconds=1)) if reliable else Policy.Reliability.BestEffort,
        Policy.Durability.TransientLocal if transient_local else Policy.Durability.Volatile,
        Policy.History.KeepLast(depth),
    ]
    if xcdr1:
        policies.append(_XCDR1)
    return Qos(*policies)


SENSOR_QOS = dict(reliable=False, transient_local=False, depth=5)
LATCHED_QOS = dict(reliable=True, transient_local=True, depth=1)
SERVICE_QOS = dict(reliable=True, transient_local=False, depth=10)  # rmw_qos_profile_services_default
DISCOVERY_INFO_QOS = dict(reliable=True, transient_local=True, depth=1)


# ------------------------------------------------------------------------------------------------
# Services, the rmw_cyclonedds way
# ------------------------------------------------------------------------------------------------


class ServiceTimeout(TimeoutError):
    pass


class ServiceClient:
    """An rmw_cyclonedds-style client for one service of one node.

    Random 64-bit client id in ``header.guid`` (rmw_cyclonedds uses the request writer's instance
    handle), increasing ``header.seq`` from 1, waits for the reply whose header matches.
    Replies go to every client on the reply topic; others' replies are ignored.
    """

    def __init__(self, participant, node_fqn: str, service: str, req_type=None, resp_type=None):
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        if req_type is None:
            req_type, resp_type = PARAMETER_SERVICES[service]
        self.req_type, self.resp_type = req_type, resp_type
        self.request_topic, self.reply_topic = dds_service_topics(node_fqn, service)
        q = qos(**SERVICE_QOS)
        self._writer = DataWriter(participant, Topic(participant, self.request_topic, req_type), qos=q)
        self._reader = DataReader(participant, Topic(participant, self.reply_topic, resp_type), qos=q)
        self.guid = random.getrandbits(64) or 1
        self._seq = itertools.count(1)

    def wait_for_service(self, timeout: float) -> bool:
        """True once the request topic has a matched reader and the reply topic a matched writer
        (as rmw_cyclonedds' rmw_service_server_is_available checks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._writer.get_matched_subscriptions() and self._reader.get_matched_publications():
                return True
            time.sleep(0.05)
        return False

    def call(self, request, timeout: float = 5.0):
        """Send ``request`` (its header is overwritten) and return the matching response."""
        if not self.wait_for_service(timeout):
            raise ServiceTimeout(f"service {self.request_topic} not available within {timeout} s")
        seq = next(self._seq)
        request.header = RequestHeader(guid=self.guid, seq=seq)
        self._writer.write(request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reply in self._reader.take(N=16):
                if isinstance(reply, self.resp_type) and reply.header.guid == self.guid and reply.header.seq == seq:
                    return reply
            time.sleep(0.01)
        raise ServiceTimeout(f"no reply on {self.reply_topic} for seq {seq} within {timeout} s")


def call_service(participant, node_fqn: str, service: str, request, timeout: float = 5.0):
    """One-shot call of a parameter service of ``node_fqn`` (type picked from the request)."""
    for name, (req_t, resp_t) in PARAMETER_SERVICES.items():
        if name == service:
            break
    else:
        raise KeyError(service)
    assert isinstance(request, req_t), (service, type(request))
    return ServiceClient(participant, node_fqn, service, req_t, resp_t).call(request, timeout)


class MockServiceServer:
    """An rmw_cyclonedds-style server for tests of the client: takes requests, answers
    ``handler(request) -> response`` with the request's header echoed."""

    def __init__(self, participant, node_fqn: str, service: str, handler):
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        req_type, resp_type = PARAMETER_SERVICES[service]
        rq, rr = dds_service_topics(node_fqn, service)
        q = qos(**SERVICE_QOS)
        self._reader = DataReader(participant, Topic(participant, rq, req_type), qos=q)
        self._writer = DataWriter(participant, Topic(participant, rr, resp_type), qos=q)
        self._handler = handler
        self._stop = threading.Event()
        self.requests: list = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for req in self._reader.take(N=16):
                self.requests.append(req)
                resp = self._handler(req)
                if resp is not None:
                    resp.header = req.header
                    self._writer.write(resp)
            time.sleep(0.005)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)


def install_fast_octet_sequences() -> None:
    """Decode every sequence<uint8> / sequence<octet> as `bytes` instead of a list of ints.

    A 640x480 rgb8 Image is 921,600 Python ints otherwise (~15 ms and ~7 MB per sample); a test
    reading every output topic of the node at 10 fps would eat a core. Patches the (pinned)
    cyclonedds 11.0.1 machine for plain sequences of primitives in this process only; wire
    format and serialisation are untouched."""
    from cyclonedds.idl import _machinery as m

    cls = m.PlainCdrV2SequenceOfPrimitiveMachine
    if getattr(cls, "_ros2_idl_fast_octets", False):
        return
    original = cls.deserialize

    def deserialize(self, buffer, *args, **kwargs):
        if self.code == "B":
            buffer.align(4)
            return buffer.read_bytes(buffer.read("I", 4))
        return original(self, buffer, *args, **kwargs)

    cls.deserialize = deserialize
    cls._ros2_idl_fast_octets = True


# ------------------------------------------------------------------------------------------------
# Loopback-only Cyclone configuration
# ------------------------------------------------------------------------------------------------

CYCLONE_LOOPBACK_XML = """<?xml version="1.0" encoding="UTF-8"?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces>
        <NetworkInterface address="127.0.0.1"/>
      </Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>{max_pi}</MaxAutoParticipantIndex>
      <Peers>
        <Peer address="127.0.0.1"/>
      </Peers>
    </Discovery>
    <Internal>
      <SocketReceiveBufferSize max="{rcvbuf}"/>
    </Internal>{tracing}
  </Domain>
</CycloneDDS>
"""


def cyclone_loopback_config(max_participant_index: int = 32, rcvbuf: str = "8MB",
                            trace_file: Optional[str] = None, trace_categories: str = "config,discovery") -> str:
    """The CYCLONEDDS_URI value (inline XML) for loopback-only unicast discovery.

    Elements checked against Cyclone DDS 11.0.1 (a config trace prints each one as read).
    ``SocketReceiveBufferSize max`` asks for 8 MiB (granted as root; a user gets up to
    net.core.rmem_max instead of a start-up error, which ``min`` would give): a 640x480 32FC1
    Image is ~1.2 MB in ~900 fragments.
    ``MaxAutoParticipantIndex`` bounds the unicast SPDP fan-out: Cyclone sends to
    127.0.0.1 at the well-known discovery port of every index 0..max, and RustDDS (which picks its
    index by binding the first free port from 0) announces to indices 0..11.
    """
    tracing = ""
    if trace_file:
        tracing = (f"\n    <Tracing><Category>{trace_categories}</Category>"
                   f"<OutputFile>{trace_file}</OutputFile></Tracing>")
    return CYCLONE_LOOPBACK_XML.format(max_pi=max_participant_index, rcvbuf=rcvbuf, tracing=tracing)


def use_loopback_config(**kw) -> None:
    """Set CYCLONEDDS_URI for this process. Must run before the first DomainParticipant is made
    (Cyclone reads its configuration once per domain)."""
    os.environ["CYCLONEDDS_URI"] = cyclone_loopback_config(**kw)
