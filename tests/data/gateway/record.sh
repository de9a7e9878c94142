#!/usr/bin/env bash
# Re-record etcd 3.4's JSON gateway answers to cases.txt into
# etcd-3.4.23.txt: starts /usr/bin/etcd (or $ETCD) on free loopback ports in
# a temp dir, runs every case with curl in order, and replaces what belongs
# to that one etcd (cluster and member ids, its URLs) with placeholders.
#   tests/data/gateway/record.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
etcd=${ETCD:-/usr/bin/etcd}
out=$here/etcd-3.4.23.txt
tmp=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(free_port); pport=$(free_port)
client=http://127.0.0.1:$cport; peer=http://127.0.0.1:$pport
"$etcd" --name default --data-dir "$tmp/data" \
  --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
  --initial-cluster "default=$peer" >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid 2>/dev/null; wait $etcd_pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do curl -sf "$client/health" >/dev/null && break; sleep 0.1; done
"$etcd" --version | head -1 | grep -q 'etcd Version: 3.4.23' || echo "warning: not etcd 3.4.23" >&2

status=$(curl -s "$client/v3/maintenance/status" -d '{}')
cluster=$(sed 's/.*"cluster_id":"\([0-9]*\)".*/\1/' <<<"$status")
member=$(sed 's/.*"member_id":"\([0-9]*\)".*/\1/' <<<"$status")

# One case: status line, Content-Type, blank line, body, newline.
run() { # name method path [body]
  local name=$1 method=$2 path=$3 body=${4-} args=(-s -D "$tmp/h" -o "$tmp/b" -X "$method")
  [[ $name == watch_* ]] && args+=(-N -m 2)
  [[ -n $body ]] && args+=(-d "$body")
  if [[ $name == watch_live ]]; then
    curl "${args[@]}" "$client$path" || true &
    sleep 0.5
    curl -s "$client/v3/kv/put" -d '{"key":"Zm9v","value":"bGl2ZQ=="}' >/dev/null
    wait $!
  else
    curl "${args[@]}" "$client$path" || true
  fi
  {
    echo "=== $name"
    tr -d '\r' <"$tmp/h" | grep -i -E '^(HTTP/|content-type:)'
    echo
    cat "$tmp/b"
    echo
  } | sed -e "s/$cluster/<cluster>/g" -e "s/$member/<member>/g" \
          -e "s#$client#<client-url>#g" -e "s#$peer#<peer-url>#g"
}

: >"$out"
while read -r name method path body; do
  [[ -z $name || $name == \#* ]] && continue
  run "$name" "$method" "$path" "$body" >>"$out"
done <"$here/cases.txt"
echo "recorded $(grep -c '^=== ' "$out") cases into $out"
