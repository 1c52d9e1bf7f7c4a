//! The benchmark history kept by scripts/compare.py: rows append to
//! bench-history/history.csv, and `--check` flags a CPU-per-message or
//! throughput ratio more than the tolerance worse than the last earlier
//! row for the same server, workload and shard count. The checks are
//! python unit tests (scripts/test_compare.py) over compare.py's own
//! functions; this runs them with the suite.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn compare_py_history_and_regression_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("scripts/test_compare.py"))
        .output()
        .expect("run python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/test_compare.py failed:\n{err}");
    assert!(err.contains("OK"), "{err}");
}

#[test]
fn committed_history_has_the_columns_compare_py_writes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("bench-history/history.csv")).expect("bench-history/history.csv");
    let header = text.lines().next().unwrap_or_default();
    for col in [
        "timestamp",
        "commit",
        "server",
        "workload",
        "shards",
        "cpu_ratio",
        "tput_ratio",
    ] {
        assert!(
            header.split(',').any(|c| c == col),
            "history.csv lacks column {col}: {header}"
        );
    }
    let width = fields(header);
    assert!(text.lines().count() > 1, "history.csv has a header but no rows");
    for (i, line) in text.lines().enumerate().skip(1) {
        assert_eq!(fields(line), width, "line {} of history.csv: {line}", i + 1);
    }
}

/// Fields in one CSV line (commas inside double quotes do not split).
fn fields(line: &str) -> usize {
    let mut quoted = false;
    1 + line
        .chars()
        .filter(|c| {
            if *c == '"' {
                quoted = !quoted;
            }
            *c == ',' && !quoted
        })
        .count()
}
