//! Fuzz target `mcap_replay`: see `dinov3_perception::fuzz::mcap_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dinov3_perception::fuzz::mcap_replay(data));
