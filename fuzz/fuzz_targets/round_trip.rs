//! Fuzz target: see `msgtrans_shards::testing::fuzz::round_trip`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| msgtrans_shards::testing::fuzz::round_trip(data));
