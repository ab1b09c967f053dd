#!/usr/bin/env bash
# Sources ROS 2 and the node's install space, then runs the command (default: the launch file).
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO}/setup.bash"
# shellcheck disable=SC1091
source /opt/dinov3_perception/setup.bash
exec "$@"
