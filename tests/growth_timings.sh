#!/usr/bin/env bash
# How fast a replica-table cluster grows and heals (docs/cluster-growth.md).
#
#   tests/growth_timings.sh [RAFTCD] [HEARTBEAT_MS] [DEAD_AFTER_MS]
#
# RAFTCD defaults to target/release/raftcd, else target/debug/raftcd; the
# table's timing defaults to raftcd's (1000 ms, 5000 ms). Six replicas on
# loopback, each started only when the one before is a member; prints:
#   - per replica: seconds from its spawn until it is a member, and until it
#     is a voter when the growth rule makes it one (replicas 1, 3, 5);
#   - a voter that is not the leader killed: seconds until its row is gone
#     and until the learner replica 6 replaces it as a voter;
#   - the leader killed: the same.
# Needs etcdctl (Debian etcd-client). Leaves nothing behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-}
if [ -z "$bin" ]; then
  bin=$root/target/release/raftcd
  [ -x "$bin" ] || bin=$root/target/debug/raftcd
fi
hb=${2:-1000}
dead=${3:-5000}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
{
  echo "token = \"timings\""
  echo "heartbeat_interval_ms = $hb"
  echo "dead_after_ms = $dead"
  for i in 1 2 3 4 5 6; do
    echo
    echo "[[replica]]"
    echo "id = $i"
    echo "name = \"r$i\""
    echo "client_url = \"http://127.0.0.1:$((base + 2 * i))\""
    echo "peer_url = \"http://127.0.0.1:$((base + 2 * i + 1))\""
  done
} > "$work/table.toml"

ctl() { ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$((base + 2 * $1))" --command-timeout=3s "${@:2}" 2>/dev/null; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.2f'; }
# "voter" / "learner" / "" for replica $2 as replica $1 lists it.
role() { ctl "$1" member list | awk -F', ' -v n="r$2" '$3 == n { print ($6 == "true") ? "learner" : "voter" }'; }
wait_for() { # wait_for TIMEOUT_S COMMAND...: poll every 50 ms
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out: $*" >&2; exit 1; }
    sleep 0.05
  done
}
start() {
  "$bin" --replica-table "$work/table.toml" --replica-id "$1" --data-dir "$work/r$1" \
    > "$work/r$1.log" 2>&1 &
  pids[$1]=$!
  disown "$!"
}
is_role() { [ "$(role "$1" "$2")" = "$3" ]; }
is_member() { [ -n "$(role "$1" "$2")" ]; }
row_gone() { ! ctl "$1" get "/raftcd/replicas/$2" --print-value-only | grep -q .; }
leader() { # the replica whose member leads, as replica $1 sees it
  local id
  id=$(ctl "$1" endpoint status -w json | python3 -c 'import json,sys; print("%x" % json.load(sys.stdin)[0]["Status"]["leader"])')
  ctl "$1" member list | awk -F', ' -v id="$id" '$1 == id { sub("r", "", $3); print $3 }'
}

echo "binary: $bin; heartbeat_interval_ms = $hb, dead_after_ms = $dead"
for i in 1 2 3 4 5 6; do
  t=$(now)
  start "$i"
  wait_for 60 is_member 1 "$i"
  member=$(since "$t")
  case $i in
    1|3|5) wait_for 60 is_role 1 "$i" voter; echo "replica $i: member after ${member}s, voter after $(since "$t")s" ;;
    *) echo "replica $i: member (learner) after ${member}s" ;;
  esac
done

kill_and_replace() { # kill_and_replace VICTIM WATCHER WHAT
  local t
  t=$(now)
  kill -9 "${pids[$1]}"
  wait_for 120 row_gone "$2" "$1"
  local gone; gone=$(since "$t")
  wait_for 120 is_role "$2" 6 voter
  wait_for 120 is_role "$2" "$1" learner
  echo "$3 (replica $1) killed: row gone after ${gone}s, replaced by replica 6 as voter after $(since "$t")s"
}
l=$(leader 1)
victim=2; [ "$l" = 2 ] && victim=3
kill_and_replace "$victim" "$l" "a voter"
# Back, replica 6 back to learner? No: five live replicas keep five voters.
start "$victim"
wait_for 60 is_member "$l" "$victim"
l=$(leader "$l")
watcher=1; [ "$l" = 1 ] && watcher=4
# Replica 6 votes now; the returning replica is the learner to promote.
t=$(now)
kill -9 "${pids[$l]}"
wait_for 120 row_gone "$watcher" "$l"
gone=$(since "$t")
wait_for 120 is_role "$watcher" "$victim" voter
echo "the leader (replica $l) killed: row gone after ${gone}s, replaced by replica $victim as voter after $(since "$t")s"
