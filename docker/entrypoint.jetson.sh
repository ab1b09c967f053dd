#!/usr/bin/env bash
# Sources ROS 2 (jetson-containers layout) and the node's install space, then runs the command.
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO}/install/setup.bash"
# shellcheck disable=SC1091
source /opt/dinov3_perception/setup.bash
exec "$@"
