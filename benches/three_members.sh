#!/usr/bin/env bash
# Three members side by side: a 3-member raftcd cluster and a 3-member etcd
# cluster on loopback, one after the other, each loaded by `raftcd bench`
# (64 closed-loop clients over 8 connections spread over the three members,
# 8-byte keys, 256-byte values, 10k keys), and a Markdown table of the
# figures. Run it on an idle machine:
#
#   cargo build --release && benches/three_members.sh [SECONDS]
#
# RAFTCD_BIN (default target/release/raftcd) and ETCD_BIN (default
# /usr/bin/etcd) pick the binaries; SECONDS (default 5) is each step's length.
set -euo pipefail
cd "$(dirname "$0")/.."
raftcd=${RAFTCD_BIN:-target/release/raftcd}
etcd=${ETCD_BIN:-/usr/bin/etcd}
secs=${1:-5}
[ -x "$raftcd" ] || { echo "no raftcd at $raftcd (cargo build --release)" >&2; exit 1; }
[ -x "$etcd" ] || { echo "no etcd at $etcd (apt-get install etcd-server)" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start SERVER_BINARY NAME: three members; sets `eps` (their client
# endpoints) and `pids`.
start() {
  local bin=$1 name=$2 cluster="" endpoints="" i
  local -a cports pports
  for i in 1 2 3; do cports[$i]=$(free_port); pports[$i]=$(free_port); done
  for i in 1 2 3; do cluster+="m$i=http://127.0.0.1:${pports[$i]},"; done
  cluster=${cluster%,}
  for i in 1 2 3; do
    "$bin" --name "m$i" --data-dir "$tmp/$name-m$i" \
      --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-token "bench-$name" \
      --log-level warn >"$tmp/$name-m$i.log" 2>&1 &
    pids+=($!)
    endpoints+="127.0.0.1:${cports[$i]},"
  done
  eps=${endpoints%,}
  for i in 1 2 3; do
    for _ in $(seq 300); do
      curl -sf "http://127.0.0.1:${cports[$i]}/health" | grep -q true && break
      sleep 0.1
    done
  done
}

rss_sum() { # PIDS...: summed peak RSS in MiB
  local total=0 p
  for p in "$@"; do
    total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$p/status")))
  done
  echo $((total / 1024))
}

declare -A result
run() { # NAME ENDPOINTS
  local name=$1 eps=$2 common
  common=(--endpoints "$eps" --conns 8 --clients 64 --key-size 8 --val-size 256 --key-space 10000 -w json)
  "$raftcd" bench put --endpoints "$eps" --conns 8 --clients 64 --key-size 8 --val-size 256 \
    --key-space 10000 --sequential-keys --total 10000 -w json >/dev/null
  result[$name,put]=$("$raftcd" bench put "${common[@]}" --duration "${secs}s")
  result[$name,get_l]=$("$raftcd" bench range "${common[@]}" --duration "${secs}s")
  result[$name,get_s]=$("$raftcd" bench range "${common[@]}" --consistency s --duration "${secs}s")
  result[$name,cas]=$("$raftcd" bench txn-cas "${common[@]}" --duration "${secs}s")
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" >&2
start "$raftcd" raftcd; first=("${pids[@]}")
run raftcd "$eps"
result[raftcd,rss]=$(rss_sum "${first[@]}")
for p in "${first[@]}"; do kill "$p"; done; wait 2>/dev/null || true; pids=()
start "$etcd" etcd; second=("${pids[@]}")
run etcd "$eps"
result[etcd,rss]=$(rss_sum "${second[@]}")
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))" "$1" "$2"; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else '-')" "$1" "$2"; }
echo "| 3 members, 64 clients / 8 conns | etcd 3.4 | raftcd | ratio | etcd p99 ms | raftcd p99 ms |"
echo "|---|---|---|---|---|---|"
for step in put get_l get_s cas; do
  e=${result[etcd,$step]}; r=${result[raftcd,$step]}
  et=$(field "$e" 'round(d["throughput"])'); rt=$(field "$r" 'round(d["throughput"])')
  ep=$(field "$e" 'd["latency_ms"]["p99"]'); rp=$(field "$r" 'd["latency_ms"]["p99"]')
  ee=$(field "$e" 'd["errors"]'); re=$(field "$r" 'd["errors"]')
  label=$step
  case $step in put) label="put";; get_l) label="get (linearizable)";; get_s) label="get (serializable)";; cas) label="txn compare-and-swap (own keys)";; esac
  echo "| $label | $et/s (${ee} err) | $rt/s (${re} err) | $(ratio "$rt" "$et") | $ep | $rp |"
done
echo "| summed peak RSS | ${result[etcd,rss]} MiB | ${result[raftcd,rss]} MiB | $(ratio "${result[raftcd,rss]}" "${result[etcd,rss]}") | | |"
