"""Unit tests for the bench history in compare.py: rows append to the CSV
under one header, and --check's comparison flags a CPU-per-message or
throughput ratio more than the tolerance worse than the last earlier row
of the same server, workload and shard count (and nothing else).

Run: python3 scripts/test_compare.py (tests/bench_history.rs does).
"""
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402


def row(server="msgtrans_inline", cpu="1.200", tput="0.800", ts="t1", commit="aaa", machine="m"):
    return {"timestamp": ts, "commit": commit, "dirty": "0", "machine": machine, "nproc": 2,
            "kernel": "k", "server": server, "workload": "64B-64x16", "shards": 1, "rounds": 3,
            "ok_runs": 3, "duration_s": "5", "msgs_per_s": "1000", "cpu_ns_per_msg": "500.0",
            "cpu_ns_min": "490.0", "cpu_ns_max": "510.0", "p50_us": "1", "p99_us": "2",
            "p999_us": "3", "load_ns_per_msg": "400", "cpu_ratio": cpu, "tput_ratio": tput}


def verdicts(lines):
    return [line.split()[0] for line in lines]


class CheckHistory(unittest.TestCase):
    def test_within_tolerance_is_ok(self):
        out = compare.check_history([row()], [row(cpu="1.300", tput="0.720", ts="t2")], 0.15)
        self.assertEqual(verdicts(out), ["ok", "ok"], out)

    def test_cpu_ratio_up_more_than_tolerance_is_a_regression(self):
        out = compare.check_history([row()], [row(cpu="1.400", ts="t2")], 0.15)
        self.assertEqual(verdicts(out), ["REGRESSION", "ok"], out)
        self.assertIn("CPU ratio 1.200 -> 1.400", out[0])

    def test_throughput_ratio_down_more_than_tolerance_is_a_regression(self):
        out = compare.check_history([row()], [row(tput="0.650", ts="t2")], 0.15)
        self.assertEqual(verdicts(out), ["ok", "REGRESSION"], out)

    def test_improvements_are_never_regressions(self):
        out = compare.check_history([row()], [row(cpu="0.500", tput="2.000", ts="t2")], 0.15)
        self.assertEqual(verdicts(out), ["ok", "ok"], out)

    def test_compares_with_the_latest_earlier_row_that_has_ratios(self):
        old = [row(cpu="2.000", ts="t0"), row(cpu="1.200", ts="t1", commit="bbb"),
               row(cpu="", tput="", ts="t1b")]  # a failed run: no ratios
        out = compare.check_history(old, [row(cpu="1.250", ts="t2")], 0.15)
        self.assertEqual(verdicts(out), ["ok", "ok"], out)
        self.assertIn("vs bbb t1", out[0])

    def test_reference_rows_and_new_keys(self):
        out = compare.check_history([row()], [row(server=compare.REFERENCE, cpu="9"),
                                              row(server="other")], 0.15)
        self.assertEqual(len(out), 1, out)
        self.assertTrue(out[0].startswith("new"), out)

    def test_another_machine_is_named(self):
        out = compare.check_history([row(machine="old box")], [row(ts="t2")], 0.15)
        self.assertIn("other machine: old box", out[0])


class AppendHistory(unittest.TestCase):
    def test_rows_append_under_one_header(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "sub" / "history.csv"
            compare.append_history(path, [row()])
            compare.append_history(path, [row(ts="t2"), row(ts="t3")])
            lines = path.read_text().splitlines()
            self.assertEqual(lines[0].split(","), compare.HISTORY_COLUMNS)
            self.assertEqual(len(lines), 4)
            back = compare.read_history(path)
            self.assertEqual([r["timestamp"] for r in back], ["t1", "t2", "t3"])
            self.assertEqual(back[-1]["cpu_ratio"], "1.200")


if __name__ == "__main__":
    unittest.main()
