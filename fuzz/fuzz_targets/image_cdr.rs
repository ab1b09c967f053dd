//! Fuzz target `image_cdr`: see `dinov3_perception::fuzz::image_cdr`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::image_cdr(data));
