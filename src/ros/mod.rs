//! ROS 2 on the pure-Rust ros2-client (no ROS install needed): message structs and their
//! definitions and CDR, the node and its QoS, `--ros-args`, parameters and the parameter
//! services. Publishing the outputs is a sink ([`crate::sink::ros`]).
//!
//! * [`msg`]: sensor_msgs, vision_msgs 4.x, diagnostic_msgs, std_msgs as serde structs.
//! * [`args`]: the `--ros-args` section `ros2 launch` passes.
//! * [`params`]: declarations, ROS parameter YAML, `-p` overrides, the run-time store.
//! * [`node`]: DDS participant (domain, loopback), node, names, remapping, QoS.
//! * [`services`]: the rcl_interfaces parameter services in both request layouts.
//! * [`definitions`]: the `.msg` definitions (`ros2msg` schemas) of the written messages.
//! * [`cdr`]: encapsulated CDR payloads, as rosbag2 and Foxglove store them.

pub mod args;
pub mod cdr;
pub mod definitions;
pub mod msg;
pub mod node;
pub mod params;
pub mod services;

pub use node::{RosError, RosNode};
