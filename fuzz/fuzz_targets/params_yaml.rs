//! Fuzz target `params_yaml`: see `dinov3_perception::fuzz::params_yaml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::params_yaml(data));
