#!/usr/bin/env bash
# Three members side by side: a 3-member raftcd cluster and a 3-member etcd
# cluster on loopback, one after the other, each loaded by `raftcd bench`
# (64 closed-loop clients over 8 connections spread over the three members,
# 8-byte keys, 256-byte values, 10k keys), and a Markdown table of the
# figures. Run it on an idle machine:
#
#   cargo build --release && benches/three_members.sh [--json FILE] [SECONDS]
#
# RAFTCD_BIN (default target/release/raftcd) and ETCD_BIN (default
# /usr/bin/etcd) pick the binaries; SECONDS (default 5) is each step's length;
# --json FILE also writes the figures as JSON (scripts/bench reads it).
# Each cluster's start is also timed to its first accepted write: from
# starting the three members (fresh data dirs) to the first put accepted
# through any of them (one HTTP put at a time, cycling over the members,
# 200 ms each; one start per cluster, so a single sample).
set -euo pipefail
cd "$(dirname "$0")/.."
raftcd=${RAFTCD_BIN:-target/release/raftcd}
etcd=${ETCD_BIN:-/usr/bin/etcd}
json_out=""
if [ "${1:-}" = "--json" ]; then
  [ $# -ge 2 ] || { echo "usage: $0 [--json FILE] [SECONDS]" >&2; exit 2; }
  json_out=$2; shift 2
fi
secs=${1:-5}
[ -x "$raftcd" ] || { echo "no raftcd at $raftcd (cargo build --release)" >&2; exit 1; }
[ -x "$etcd" ] || { echo "no etcd at $etcd (apt-get install etcd-server)" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
free_ports() { # N: N distinct free loopback ports
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$1"
}

now_us() { echo "${EPOCHREALTIME/./}"; }

# first_write T0_US PORTS...: one put at a time through the members in turn
# until one is accepted; prints the milliseconds since T0_US.
first_write() {
  local t0=$1 n=0 port; shift
  local -a ports=("$@")
  while :; do
    port=${ports[$((n % ${#ports[@]}))]}
    if curl -s -m 0.2 -H 'Content-Type: application/json' \
      -d '{"key":"Zmlyc3Qtd3JpdGU=","value":"eA=="}' \
      "http://127.0.0.1:$port/v3/kv/put" 2>/dev/null | grep -q '"revision"'; then
      echo $(( ($(now_us) - t0) / 1000 ))
      return
    fi
    n=$((n + 1))
    if [ $(( $(now_us) - t0 )) -gt 30000000 ]; then echo "no write accepted within 30 s" >&2; return 1; fi
    sleep 0.005
  done
}

# start SERVER_BINARY NAME: three members; sets `eps` (their client
# endpoints), `pids` and `first_ms` (start to first accepted write). Starts
# again with new ports (up to 3 times) if a member found one of its ports
# taken: free_ports releases them before the members bind them.
start() {
  local try
  for try in 1 2 3 4; do
    start_once "$@" "$try" && return 0
    echo "$2: a port was taken before a member bound it; starting again" >&2
  done
  echo "$2: no start after 4 tries" >&2
  return 1
}

start_once() { # SERVER_BINARY NAME TRY
  local bin=$1 name=$2 try=$3 cluster="" endpoints="" i t0 dir
  local -a ports cports pports mine=()
  read -r -a ports <<<"$(free_ports 6)"
  for i in 1 2 3; do cports[$i]=${ports[$((i - 1))]}; pports[$i]=${ports[$((i + 2))]}; done
  for i in 1 2 3; do cluster+="m$i=http://127.0.0.1:${pports[$i]},"; done
  cluster=${cluster%,}
  t0=$(now_us)
  for i in 1 2 3; do
    dir=$tmp/$name-$try-m$i
    "$bin" --name "m$i" --data-dir "$dir" \
      --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-token "bench-$name" \
      --log-level warn >"$dir.log" 2>&1 &
    mine+=($!)
    pids+=($!)
    endpoints+="127.0.0.1:${cports[$i]},"
  done
  eps=${endpoints%,}
  first_ms=$(first_write "$t0" "${cports[1]}" "${cports[2]}" "${cports[3]}") || true
  for i in 1 2 3; do
    kill -0 "${mine[$((i - 1))]}" 2>/dev/null && continue
    if grep -qi "address already in use" "$tmp/$name-$try-m$i.log"; then
      kill "${mine[@]}" 2>/dev/null || true
      wait "${mine[@]}" 2>/dev/null || true
      pids=()
      return 1
    fi
    echo "$name member m$i exited; its log:" >&2
    tail -20 "$tmp/$name-$try-m$i.log" >&2
    exit 1
  done
  [ -n "$first_ms" ] || { echo "$name: no write accepted within 30 s" >&2; exit 1; }
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

run() { # NAME ENDPOINTS: each step's `raftcd bench` JSON in $tmp/NAME-STEP.json
  local name=$1 eps=$2 common
  common=(--endpoints "$eps" --conns 8 --clients 64 --key-size 8 --val-size 256 --key-space 10000 -w json)
  "$raftcd" bench put --endpoints "$eps" --conns 8 --clients 64 --key-size 8 --val-size 256 \
    --key-space 10000 --sequential-keys --total 10000 -w json >/dev/null
  "$raftcd" bench put "${common[@]}" --duration "${secs}s" >"$tmp/$name-put.json"
  "$raftcd" bench range "${common[@]}" --duration "${secs}s" >"$tmp/$name-get_l.json"
  "$raftcd" bench range "${common[@]}" --consistency s --duration "${secs}s" >"$tmp/$name-get_s.json"
  "$raftcd" bench txn-cas "${common[@]}" --duration "${secs}s" >"$tmp/$name-cas.json"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load before: $load_before, $(nproc) CPUs" >&2
start "$raftcd" raftcd; first=("${pids[@]}")
echo "raftcd: start to first accepted write ${first_ms} ms" >&2
echo "$first_ms" >"$tmp/raftcd-first_ms"
run raftcd "$eps"
rss_sum "${first[@]}" >"$tmp/raftcd-rss"
for p in "${first[@]}"; do kill "$p"; done; wait 2>/dev/null || true; pids=()
start "$etcd" etcd; second=("${pids[@]}")
echo "etcd: start to first accepted write ${first_ms} ms" >&2
echo "$first_ms" >"$tmp/etcd-first_ms"
run etcd "$eps"
rss_sum "${second[@]}" >"$tmp/etcd-rss"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load after: $load_after" >&2

TMP=$tmp SECS=$secs CPUS=$(nproc) LOAD_BEFORE=$load_before LOAD_AFTER=$load_after JSON_OUT=$json_out \
  python3 - <<'EOF'
import json, os
tmp = os.environ["TMP"]
def read(name):
    with open(os.path.join(tmp, name)) as f:
        return f.read().strip()
steps = [("put", "put"), ("get_l", "get (linearizable)"), ("get_s", "get (serializable)"),
         ("cas", "txn compare-and-swap (own keys)")]
res = {}
for server in ("raftcd", "etcd"):
    res[server] = {step: json.loads(read(f"{server}-{step}.json")) for step, _ in steps}
    res[server]["rss_mib"] = int(read(f"{server}-rss"))
    res[server]["first_write_ms"] = int(read(f"{server}-first_ms"))
def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"
lines = ["| 3 members, 64 clients / 8 conns | etcd 3.4 | raftcd | ratio | etcd p99 ms | raftcd p99 ms |",
         "|---|---|---|---|---|---|"]
for step, label in steps:
    e, r = res["etcd"][step], res["raftcd"][step]
    et, rt = round(e["throughput"]), round(r["throughput"])
    lines.append(f"| {label} | {et}/s ({e['errors']} err) | {rt}/s ({r['errors']} err) | {ratio(rt, et)} "
                 f"| {e['latency_ms']['p99']} | {r['latency_ms']['p99']} |")
e, r = res["etcd"]["rss_mib"], res["raftcd"]["rss_mib"]
lines.append(f"| summed peak RSS | {e} MiB | {r} MiB | {ratio(r, e)} | | |")
e, r = res["etcd"]["first_write_ms"], res["raftcd"]["first_write_ms"]
lines.append(f"| start to first accepted write (1 start, any member) | {e} ms | {r} ms | {ratio(r, e)} | | |")
table = "\n".join(lines)
print(table)
if os.environ["JSON_OUT"]:
    doc = {"secs": float(os.environ["SECS"]), "cpus": int(os.environ["CPUS"]),
           "load_before": os.environ["LOAD_BEFORE"], "load_after": os.environ["LOAD_AFTER"],
           "raftcd": res["raftcd"], "etcd": res["etcd"], "markdown": table + "\n"}
    with open(os.environ["JSON_OUT"], "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
EOF
