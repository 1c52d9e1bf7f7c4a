#!/usr/bin/env bash
# Cluster figures, side by side in one run: the same direct-message traffic
# (examples/cluster_load) inside one relay node and across two nodes joined
# through a 3-server NATS cluster, and raw NATS publish/subscribe across
# two of those servers (the ceiling the broker sets). Rounds interleave the
# three, so a noisy machine slows them alike.
#
# Usage: scripts/cluster-bench.sh [ROUNDS] [cluster_load options...]
#   e.g. scripts/cluster-bench.sh 3 -s 64 -c 8 -p 256 -d 5
# Needs nats-server (scripts/setup-peers.sh installs it). Builds release.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
shift || true
cargo build --release --quiet --features cluster --example relay --example cluster_load
bin=target/release/examples
dir="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=(); route=()
for i in 0 1 2; do client+=("$(port)"); route+=("$(port)"); done
for i in 0 1 2; do
    routes=""
    for j in 0 1 2; do
        [[ $j == "$i" ]] || routes+="${routes:+,}nats://127.0.0.1:${route[$j]}"
    done
    nats-server -a 127.0.0.1 -p "${client[$i]}" --cluster "nats://127.0.0.1:${route[$i]}" \
        --routes "$routes" --cluster_name bench -l "$dir/nats$i.log" &
    pids+=($!)
done
sleep 1
urls() { local first=$1 out=""; for k in 0 1 2; do out+="${out:+,}nats://127.0.0.1:${client[$(((first + k) % 3))]}"; done; echo "$out"; }

# Two relay nodes, one shard each, on NATS servers 0 and 1. Sets $addr and
# $pid (no subshell, so the pid is kept for cleanup).
start_relay() {
    local node=$1 nats=$2
    local out="$dir/relay$node.out"
    "$bin/relay" --tcp 127.0.0.1:0 --shards 1 --node "$node" --cluster "$(urls "$nats")" \
        --cluster-name bench >"$out" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        grep -q '^listening tcp' "$out" && break
        sleep 0.1
    done
    addr=$(awk '/^listening tcp/ {print $3; exit}' "$out")
}
start_relay 1 0; a=$addr; pid_a=$pid
start_relay 2 1; b=$addr; pid_b=$pid
echo "relays: node 1 $a (pid $pid_a), node 2 $b (pid $pid_b)" >&2

for r in $(seq "$rounds"); do
    echo "-- round $r" >&2
    nats_pids="${pids[0]},${pids[1]},${pids[2]}"
    "$bin/cluster_load" --from "$a" --to "$a" --pids "$pid_a" --label one_node "$@"
    "$bin/cluster_load" --from "$a" --to "$b" --pids "$pid_a,$pid_b" --broker-pids "$nats_pids" \
        --label cross_node "$@"
    "$bin/cluster_load" --nats-from "nats://127.0.0.1:${client[0]}" \
        --nats-to "nats://127.0.0.1:${client[1]}" --broker-pids "$nats_pids" --label raw_nats "$@"
done
