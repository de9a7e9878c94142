#!/usr/bin/env bash
# Count the fsync/fdatasync calls a server makes for acknowledged puts, for
# raftcd and etcd side by side (on demand, not in CI; docs/benchmarks.md).
#
#   tests/count_syncs.sh [RAFTCD_BIN] [ETCD_BIN]
#
# Each server starts fresh on a temp data dir; strace (attached to every
# thread) counts its syncs during (1) 300 sequential puts with etcdctl, each
# acknowledged before the next, and (2) 1,280 puts from 64 concurrent
# etcdctl loops of 20. Needs strace, etcdctl and (for the etcd column) etcd.
set -euo pipefail
cd "$(dirname "$0")/.."

raftcd=${1:-target/release/raftcd}
etcd=${2:-/usr/bin/etcd}
[ -x "$raftcd" ] || { echo "no raftcd at $raftcd (cargo build --release)" >&2; exit 2; }
for tool in strace etcdctl; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done
export ETCDCTL_API=3

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

count() { # strace output file -> number of sync calls
    grep -E 'fsync\(|fdatasync\(' "$1" | grep -vc resumed || true
}

measure() { # name binary
    local name=$1 bin=$2 tmp port peer pid tracer n1 n2
    local -a loops
    tmp=$(mktemp -d)
    port=$(free_port)
    peer=$(free_port)
    "$bin" --name default --data-dir "$tmp/data" \
        --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "default=http://127.0.0.1:$peer" >"$tmp/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        etcdctl --endpoints "127.0.0.1:$port" put warm up >/dev/null 2>&1 && break
        sleep 0.1
    done

    strace -f -qq -e trace=fsync,fdatasync -o "$tmp/seq" -p "$pid" & tracer=$!
    sleep 1.5
    for i in $(seq 300); do etcdctl --endpoints "127.0.0.1:$port" put "seq/$i" v >/dev/null; done
    kill -INT "$tracer"; wait "$tracer" || true
    n1=$(count "$tmp/seq")

    strace -f -qq -e trace=fsync,fdatasync -o "$tmp/conc" -p "$pid" & tracer=$!
    sleep 1.5
    loops=()
    for c in $(seq 64); do
        ( for i in $(seq 20); do etcdctl --endpoints "127.0.0.1:$port" put "conc/$c/$i" v >/dev/null; done ) &
        loops+=($!)
    done
    wait "${loops[@]}"
    kill -INT "$tracer"; wait "$tracer" || true
    n2=$(count "$tmp/conc")

    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$tmp"
    printf '| %s | %s | %s |\n' "$name" "$n1" "$n2"
}

echo "| server | syncs for 300 sequential puts | syncs for 1,280 puts from 64 concurrent clients |"
echo "|---|---:|---:|"
measure "raftcd ($("$raftcd" --version 2>/dev/null | head -1))" "$raftcd"
if [ -x "$etcd" ]; then
    measure "etcd ($("$etcd" --version 2>/dev/null | head -1))" "$etcd"
else
    echo "| etcd | not measured (no $etcd) | |"
fi
