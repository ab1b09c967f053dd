//! Fuzz target `compressed_image_cdr`: see `dinov3_perception::fuzz::compressed_image_cdr`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::compressed_image_cdr(data));
