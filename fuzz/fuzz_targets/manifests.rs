//! Fuzz target `manifests`: see `dinov3_perception::fuzz::manifests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::manifests(data));
