//! ROS 2 on the pure-Rust ros2-client (no ROS install needed): message structs, the node and
//! its QoS, `--ros-args`, parameters and the parameter services, and publishing every head
//! output of a frame.
//!
//! * [`msg`]: sensor_msgs, vision_msgs 4.x, diagnostic_msgs, std_msgs as serde structs.
//! * [`args`]: the `--ros-args` section `ros2 launch` passes.
//! * [`params`]: declarations, ROS parameter YAML, `-p` overrides, the run-time store.
//! * [`node`]: DDS participant (domain, loopback), node, names, remapping, QoS.
//! * [`services`]: the rcl_interfaces parameter services in both request layouts.
//! * [`publish`]: the pipeline sink that publishes, `/diagnostics`.

pub mod args;
pub mod msg;
pub mod node;
pub mod params;
pub mod publish;
pub mod services;

pub use node::{RosError, RosNode};
