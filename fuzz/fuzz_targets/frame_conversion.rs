//! Fuzz target `frame_conversion`: see `dinov3_perception::fuzz::frame_conversion`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::frame_conversion(data));
