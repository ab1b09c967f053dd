# SPDX-License-Identifier: Apache-2.0
"""Launch the dinov3_perception node (on request recording its topics to a rosbag2 MCAP bag).

Examples:
  ros2 launch dinov3_perception dinov3_perception.launch.py
  ros2 launch dinov3_perception dinov3_perception.launch.py camera_device:=/dev/video0
  ros2 launch dinov3_perception dinov3_perception.launch.py image_topic:=/camera/image_raw
  ros2 launch dinov3_perception dinov3_perception.launch.py namespace:=robot1 record:=true
  ros2 launch dinov3_perception dinov3_perception.launch.py backend:=onnxruntime provider:=tensorrt

Source selection: `image_topic` wins over `camera_device`; with neither, the `source`
parameter of the params file is used (synthetic in the shipped file).

`record:=true` makes the node record itself (its `record.dir` parameter): every topic it
publishes, the input frames and /diagnostics, to `record_dir` as a rosbag2 MCAP bag. No
`ros2 bag` process is needed; the `record.*` parameters of the params file choose topics,
compression and splitting.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.actions import OpaqueFunction
from launch_ros.actions import Node

PACKAGE = 'dinov3_perception'
NODE_NAME = 'dinov3_perception'

def parse_bool(name, value):
    """Read a boolean launch argument the way launch's IfCondition does (true/false/1/0)."""
    text = str(value).strip().lower()
    if text in ('true', '1'):
        return True
    if text in ('false', '0'):
        return False
    raise ValueError(
        "launch argument '{}' must be true or false (or 1 / 0), got '{}'".format(name, value))


def parameter_overrides(camera_device, image_topic, model, heads, record='false',
                        record_dir='', backend='', provider='', engine_cache=''):
    """The parameters the launch arguments set on top of the params file."""
    overrides = {}
    image_topic = image_topic.strip()
    camera_device = camera_device.strip()
    if image_topic:
        overrides['source'] = 'ros:' + image_topic
    elif camera_device:
        overrides['source'] = 'v4l2:' + camera_device
    model = model.strip()
    if model:
        overrides['model'] = model
    overrides['heads_enabled'] = parse_bool('heads', heads)
    if parse_bool('record', record):
        if not record_dir.strip():
            raise ValueError("launch argument 'record_dir' is empty: give the bag directory")
        overrides['record.dir'] = record_dir.strip()
    for name, value in (('backend', backend), ('onnxruntime.provider', provider),
                        ('tensorrt.cache_dir', engine_cache)):
        if value.strip():
            overrides[name] = value.strip()
    return overrides


def launch_setup(context, *args, **kwargs):
    """Compute the node from the launch arguments' values."""
    config = context.launch_configurations

    def arg(name):
        return config.get(name, '')

    overrides = parameter_overrides(
        camera_device=arg('camera_device'),
        image_topic=arg('image_topic'),
        model=arg('model'),
        heads=arg('heads'),
        record=arg('record'),
        record_dir=arg('record_dir'),
        backend=arg('backend'),
        provider=arg('provider'),
        engine_cache=arg('engine_cache'),
    )
    namespace = arg('namespace').strip()

    actions = [
        Node(
            package=PACKAGE,
            executable='dinov3_perception',
            name=NODE_NAME,
            namespace=namespace,
            arguments=['run'],
            parameters=[arg('params_file'), overrides],
            output='screen',
        )
    ]

    return actions


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory(PACKAGE), 'config', 'dinov3_perception.params.yaml')
    return LaunchDescription([
        DeclareLaunchArgument(
            'camera_device', default_value='',
            description='V4L2 camera device to read, e.g. /dev/video0 '
                        "(sets source to v4l2:DEVICE; '' = leave the source to params_file)"),
        DeclareLaunchArgument(
            'image_topic', default_value='',
            description='sensor_msgs/Image topic to subscribe to instead of a camera, e.g. '
                        '/camera/image_raw (a name ending in /compressed is read as '
                        'sensor_msgs/CompressedImage); wins over camera_device'),
        DeclareLaunchArgument(
            'model', default_value='',
            description="backbone .onnx file ('' = the model named in params_file, which "
                        'by default is the bundled tiny demo model)'),
        DeclareLaunchArgument(
            'heads', default_value='true',
            description='run the task heads (true) or the backbone only (false); '
                        'sets heads_enabled'),
        DeclareLaunchArgument(
            'params_file', default_value=default_params,
            description='ROS 2 parameters YAML for the node'),
        DeclareLaunchArgument(
            'namespace', default_value='',
            description="namespace of the node and its topics, e.g. robot1 ('' = root)"),
        DeclareLaunchArgument(
            'record', default_value='false',
            description="record the node's topics, input frames and /diagnostics to "
                        'record_dir (rosbag2 MCAP, written by the node itself)'),
        DeclareLaunchArgument(
            'record_dir', default_value='dinov3_bag',
            description='output directory of the recording (must not exist yet)'),
        DeclareLaunchArgument(
            'backend', default_value='',
            description="inference backend: native | tract | onnxruntime ('' = params_file's)"),
        DeclareLaunchArgument(
            'provider', default_value='',
            description="onnxruntime execution provider: cpu | cuda | tensorrt "
                        "('' = params_file's)"),
        DeclareLaunchArgument(
            'engine_cache', default_value='',
            description="TensorRT engine cache directory ('' = params_file's, by default "
                        '~/.cache/dinov3_perception/tensorrt)'),
        OpaqueFunction(function=launch_setup),
    ])
