//! Fuzz target `parameter_request`: see `dinov3_perception::fuzz::parameter_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::parameter_request(data));
