# SPDX-License-Identifier: Apache-2.0
"""Launch the dinov3_perception node (and, on request, a rosbag2 MCAP recording of its topics).

Examples:
  ros2 launch dinov3_perception dinov3_perception.launch.py
  ros2 launch dinov3_perception dinov3_perception.launch.py camera_device:=/dev/video0
  ros2 launch dinov3_perception dinov3_perception.launch.py image_topic:=/camera/image_raw
  ros2 launch dinov3_perception dinov3_perception.launch.py namespace:=robot1 record:=true

Source selection: `image_topic` wins over `camera_device`; with neither, the `source`
parameter of the params file is used (synthetic in the shipped file).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.actions import ExecuteProcess
from launch.actions import OpaqueFunction
from launch_ros.actions import Node

PACKAGE = 'dinov3_perception'
NODE_NAME = 'dinov3_perception'

# Topics the node publishes, relative to its namespace (see DESIGN.md, "Topics").
RELATIVE_TOPICS = (
    'dinov3/detections',
    'dinov3/vision_info',
    'dinov3/segmentation',
    'dinov3/segmentation/color',
    'dinov3/depth',
    'dinov3/points',
    'dinov3/anomaly/score',
    'dinov3/anomaly/map',
    'dinov3/classification',
    'dinov3/features/pca',
    'dinov3/camera_info',
)
# Absolute topics: not moved by the namespace.
ABSOLUTE_TOPICS = ('/diagnostics',)


def parse_bool(name, value):
    """Read a boolean launch argument the way launch's IfCondition does (true/false/1/0)."""
    text = str(value).strip().lower()
    if text in ('true', '1'):
        return True
    if text in ('false', '0'):
        return False
    raise ValueError(
        "launch argument '{}' must be true or false (or 1 / 0), got '{}'".format(name, value))


def resolve_namespace(namespace, base_namespace=None):
    """Return the absolute namespace the node will run in ('/' for the root namespace).

    Mirrors launch_ros: a relative `namespace` is put under the namespace pushed by an
    enclosing PushRosNamespace (`base_namespace`); an absolute one is taken as it is.
    """
    namespace = (namespace or '').strip()
    base_namespace = (base_namespace or '').strip()
    if base_namespace and not namespace.startswith('/'):
        namespace = base_namespace.rstrip('/') + '/' + namespace
    namespace = '/' + namespace.strip('/')
    return namespace


def topic_names(namespace):
    """Fully qualified names of the node's topics in `namespace` (absolute, '/' = root)."""
    prefix = '' if namespace == '/' else namespace.rstrip('/')
    return [prefix + '/' + t for t in RELATIVE_TOPICS] + list(ABSOLUTE_TOPICS)


def parameter_overrides(camera_device, image_topic, model, heads):
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
    return overrides


def launch_setup(context, *args, **kwargs):
    """Compute the node (and recorder) from the launch arguments' values."""
    config = context.launch_configurations

    def arg(name):
        return config.get(name, '')

    overrides = parameter_overrides(
        camera_device=arg('camera_device'),
        image_topic=arg('image_topic'),
        model=arg('model'),
        heads=arg('heads'),
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

    if parse_bool('record', arg('record')):
        full_namespace = resolve_namespace(namespace, config.get('ros_namespace'))
        actions.append(
            ExecuteProcess(
                cmd=['ros2', 'bag', 'record', '-s', 'mcap', '-o', arg('record_dir')]
                + topic_names(full_namespace),
                name='dinov3_bag_record',
                output='screen',
            )
        )
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
            description="also record the node's topics with 'ros2 bag record -s mcap'"),
        DeclareLaunchArgument(
            'record_dir', default_value='dinov3_bag',
            description='output directory of the recording (must not exist yet)'),
        OpaqueFunction(function=launch_setup),
    ])
