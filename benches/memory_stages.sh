#!/usr/bin/env bash
# Memory by stage, raftcd and etcd 3.4 one after the other (1 member each,
# fresh data dirs): what each holds after each step of a load. Loads from
# `raftcd bench`, 64 clients over 8 connections, 8-byte keys, 256-byte
# values. After each stage it prints the server's RSS and peak RSS
# (VmRSS / VmHWM from /proc/PID/status) and the data dir's size:
#
#   idle -> 10k keys -> +60k puts -> +60k CAS txns -> +HISTORY puts on 100
#   keys (uncompacted history) -> compact at the last revision + defrag
#
#   cargo build --release && benches/memory_stages.sh [HISTORY_REVS]
#
# HISTORY_REVS defaults to 400000 (the history step of benches/compare.rs).
# RAFTCD_BIN (default target/release/raftcd), ETCD_BIN (default
# /usr/bin/etcd) and ETCDCTL_BIN (default etcdctl) pick the binaries; set
# ONLY=raftcd or ONLY=etcd to run one. Run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
raftcd=${RAFTCD_BIN:-target/release/raftcd}
etcd=${ETCD_BIN:-/usr/bin/etcd}
etcdctl=${ETCDCTL_BIN:-etcdctl}
history=${1:-400000}
only=${ONLY:-}
[ -x "$raftcd" ] || { echo "no raftcd at $raftcd (cargo build --release)" >&2; exit 1; }

tmp=$(mktemp -d)
pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

free_ports() {
  python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])'
}

status() { awk -v k="$2:" '$1 == k {print int($2 / 1024)}' "/proc/$1/status"; }

stage() { # NAME STAGE DIR
  printf '| %s | %s | %s MiB | %s MiB | %s |\n' "$1" "$2" "$(status "$pid" VmRSS)" \
    "$(status "$pid" VmHWM)" "$(du -sh "$3" | cut -f1)"
}

measure() { # NAME BINARY
  local name=$1 bin=$2 cport pport dir ep rev
  read -r cport pport <<<"$(free_ports)"
  dir=$tmp/$name
  "$bin" --name m1 --data-dir "$dir" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "m1=http://127.0.0.1:$pport" --log-level warn >"$tmp/$name.log" 2>&1 &
  pid=$!
  ep=127.0.0.1:$cport
  for _ in $(seq 300); do
    curl -sf "http://$ep/health" | grep -q true && break
    sleep 0.1
  done
  local -a common=(--endpoints "$ep" --conns 8 --clients 64 --key-size 8 --val-size 256 -w json)
  stage "$name" idle "$dir"
  "$raftcd" bench put "${common[@]}" --key-space 10000 --sequential-keys --total 10000 >/dev/null
  stage "$name" "10k keys" "$dir"
  "$raftcd" bench put "${common[@]}" --key-space 10000 --total 60000 >/dev/null
  stage "$name" "+60k puts" "$dir"
  "$raftcd" bench txn-cas "${common[@]}" --key-space 10000 --total 60000 >/dev/null
  stage "$name" "+60k CAS" "$dir"
  "$raftcd" bench put "${common[@]}" --key-space 100 --total "$history" >/dev/null
  stage "$name" "+${history} puts on 100 keys" "$dir"
  rev=$(ETCDCTL_API=3 "$etcdctl" --endpoints "$ep" endpoint status -w json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')
  ETCDCTL_API=3 "$etcdctl" --endpoints "$ep" compact "$rev" >/dev/null
  ETCDCTL_API=3 "$etcdctl" --endpoints "$ep" defrag >/dev/null
  stage "$name" "compact + defrag" "$dir"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, commit $(git rev-parse --short HEAD)"
echo
echo "| server | after | RSS | peak RSS | data dir |"
echo "|---|---|---:|---:|---:|"
[ "$only" = etcd ] || measure raftcd "$raftcd"
if [ "$only" != raftcd ]; then
  [ -x "$etcd" ] || { echo "no etcd at $etcd (apt-get install etcd-server)" >&2; exit 1; }
  measure etcd "$etcd"
fi
