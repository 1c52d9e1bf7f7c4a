#!/usr/bin/env python3
"""Instructions per message on one session's path, counted by callgrind.

Loopback runs on a shared 2-vCPU machine move by 10-20% between runs, so
a user-space change of a few percent cannot be seen in them. Instruction
counts can: callgrind counts the same total for the same binary and input
whatever else the machine does. This runs the `session/` benches of
benches/micro.rs (a session echoing batches from memory, no kernel) under
callgrind and prints instructions per message and the functions that
execute most of them. (valgrind counts each step of a `rep movsb` as an
instruction, so copies of a KiB or more, which glibc's memcpy makes that
way, weigh more here than they cost.)

Needs valgrind (`apt-get install valgrind`). Usage:
    scripts/instructions.py [--top N]
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ["session/inline_echo_16x64B", "session/inline_echo_16x1024B"]
# Everything a turn of the bench session executes is counted; the handler's
# dynamic call runs once per message and is never inlined, so its calls
# count the messages.
TURN = "msgtrans_shards::bench_loop::EchoLoop::turn"
PER_MESSAGE = "as msgtrans_shards::session::handler::InlineHandler>::on_message"


def bench_binary() -> str:
    out = subprocess.run(
        ["cargo", "bench", "--bench", "micro", "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "micro":
            return msg["executable"]
    sys.exit("instructions.py: cargo built no `micro` bench executable")


def parse(path: Path) -> tuple[int, int, dict[str, int]]:
    """Total instructions, calls of the per-message function, and the
    instructions each function executed itself."""
    names: dict[str, str] = {}
    own: dict[str, int] = {}
    calls = 0
    total = 0
    fn = cfn = None
    for line in path.read_text().splitlines():
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, ident, name = m.groups()
            if name:
                names[ident] = name
            if kind == "fn":
                fn, cfn = ident, None
            else:
                cfn = ident
            continue
        m = re.match(r"calls=(\d+)", line)
        if m:
            if cfn and PER_MESSAGE in names.get(cfn, ""):
                calls += int(m.group(1))
            continue
        m = re.match(r"summary: (\d+)|totals: (\d+)", line)
        if m:
            total = int(m.group(1) or m.group(2))
            continue
        m = re.match(r"(?:[+-]?\d+|\*) (\d+)$", line)
        if m and fn is not None:
            if cfn is None:
                own[names.get(fn, fn)] = own.get(names.get(fn, fn), 0) + int(m.group(1))
            else:
                # The cost line after a call is inclusive of the callee.
                cfn = None
    return total, calls, own


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=8, help="functions to list per bench (default: 8)")
    args = ap.parse_args()
    exe = bench_binary()
    for bench in BENCHES:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 f"--toggle-collect={TURN}",
                 exe, "--bench", f"^{re.escape(bench)}$", "--profile-time", "1"],
                check=True, capture_output=True)
            total, msgs, own = parse(out)
        if not msgs:
            sys.exit(f"instructions.py: {bench}: no message counted (was {PER_MESSAGE} renamed?)")
        print(f"{bench}: {total / msgs:.1f} instructions per message ({msgs:,} messages)")
        for name, ir in sorted(own.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {ir / msgs:7.1f}  {name[:110]}")


if __name__ == "__main__":
    main()
