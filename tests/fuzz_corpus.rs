//! Replays the committed fuzz corpus (fuzz/corpus/<target>/*) through the
//! same functions the fuzz targets run, so every input the fuzzer kept —
//! seeds and whatever it found — is checked in CI without libFuzzer.

use std::path::PathBuf;

use msgtrans_shards::testing::fuzz;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn decoder_corpus() {
    replay("decode", fuzz::decode);
}

#[test]
fn chunked_decoder_corpus() {
    replay("chunked", fuzz::chunked);
}

#[test]
fn round_trip_corpus() {
    replay("round_trip", fuzz::round_trip);
}

#[test]
fn session_corpus() {
    replay("session", fuzz::session);
}
