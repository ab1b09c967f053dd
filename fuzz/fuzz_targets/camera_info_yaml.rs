//! Fuzz target `camera_info_yaml`: see `dinov3_perception::fuzz::camera_info_yaml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::camera_info_yaml(data));
