//! Fuzz target `ros_args`: see `dinov3_perception::fuzz::ros_args`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::ros_args(data));
