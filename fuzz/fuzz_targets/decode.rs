//! Fuzz target: see `msgtrans_shards::testing::fuzz::decode`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| msgtrans_shards::testing::fuzz::decode(data));
