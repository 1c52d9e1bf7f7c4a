//! Fuzz target: see `msgtrans_shards::testing::fuzz::chunked`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| msgtrans_shards::testing::fuzz::chunked(data));
