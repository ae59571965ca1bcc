#!/usr/bin/env bash
# tests/bench/grpc_stream.sh — gRPC streaming throughput of one server
# (--threads 1 on core 0, h2load on core 1): ListUsers messages/s over a
# table of USERS users (one call streams them all), and ImportItems items/s
# (one client stream of ITEMS NewItem messages).  ROUNDS rounds, medians.
set -eu
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3} USERS=${USERS:-200000} ITEMS=${ITEMS:-20000}
tmp=$(mktemp -d /tmp/bazaar-bench-grpc.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
db="$tmp/bench.db"
build/bazaar migrate --db "sqlite://$db" >/dev/null
# Many users, inserted directly (the API would spend its time hashing passwords).
/usr/bin/python3 - "$db" "$USERS" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1]); n = int(sys.argv[2])
con.executemany("INSERT INTO users (email, name, password_hash, created_at) VALUES (?, ?, 'x', '2026-01-01T00:00:00.000000Z')",
                (("u%d@bench.example" % i, "User %d" % i) for i in range(n)))
con.commit()
PY
hp=$(free_port); gp=$(free_port)
taskset -c 0 build/bazaar serve --threads 1 --http-addr 127.0.0.1:$hp --grpc-addr 127.0.0.1:$gp \
  --db "sqlite://$db" --log-level warn 2>"$tmp/server.log" &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$hp/healthz" >/dev/null && break; sleep 0.1; done
curl -sf -H 'Content-Type: application/json' -d '{"email":"importer@bench.example","name":"I","password":"password1"}' \
  "127.0.0.1:$hp/v1/users" >/dev/null
tok=$(curl -sf -H 'Content-Type: application/json' -d '{"email":"importer@bench.example","password":"password1"}' \
  "127.0.0.1:$hp/v1/sessions" | sed 's/.*"token":"\([^"]*\)".*/\1/')
# request bodies: gRPC frames of protobuf messages written by hand
/usr/bin/python3 - "$tmp" "$ITEMS" "$ROUNDS" <<'PY'
import struct, sys
out, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def frame(b): return b"\0" + struct.pack(">I", len(b)) + b
def s(field, v): v = v.encode(); return bytes([field << 3 | 2, len(v)]) + v
def varint(x):
    o = b""
    while True:
        b = x & 0x7f; x >>= 7
        if x: o += bytes([b | 0x80])
        else: return o + bytes([b])
def i(field, v): return bytes([field << 3]) + varint(v)
open(out + "/list.bin", "wb").write(frame(b""))          # ListUsersRequest{}: every user
for r in range(rounds):
    with open(out + "/import%d.bin" % r, "wb") as f:
        for k in range(n):
            f.write(frame(s(1, "r%d-%d" % (r, k)) + s(2, "Item %d" % k) + i(3, 100 + k) + s(4, "USD") + i(5, 7)))
PY
secs() { awk '/finished in/ { v=$3; sub(/,/,"",v); if (v ~ /ms$/) { sub(/ms$/,"",v); v/=1000 } else sub(/s$/,"",v); print v }'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ls_rates=() im_rates=()
for r in $(seq 0 $((ROUNDS - 1))); do
  t=$(taskset -c 1 h2load -n1 -c1 -d "$tmp/list.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$gp/bazaar.v1.UserService/ListUsers" | secs)
  ls_rates+=("$(awk -v n="$((USERS + 1))" -v t="$t" 'BEGIN{printf "%.0f", n/t}')")
  t=$(taskset -c 1 h2load -n1 -c1 -d "$tmp/import$r.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
      -H "authorization: Bearer $tok" "http://127.0.0.1:$gp/bazaar.v1.ItemService/ImportItems" | secs)
  im_rates+=("$(awk -v n="$ITEMS" -v t="$t" 'BEGIN{printf "%.0f", n/t}')")
done
created=$(curl -s "127.0.0.1:$hp/metrics" | grep -c 'ItemService/ImportItems",code="OK"' || true)
printf '| stream | per round | median |\n|---|---|---|\n'
printf '| ListUsers messages/s (%d users, one call) | %s | %s |\n' "$USERS" "${ls_rates[*]}" "$(printf '%s\n' "${ls_rates[@]}" | median)"
printf '| ImportItems items/s (%d items, one call) | %s | %s |\n' "$ITEMS" "${im_rates[*]}" "$(printf '%s\n' "${im_rates[@]}" | median)"
[ "$created" -ge 1 ] || { echo "grpc_stream: ImportItems did not succeed" >&2; exit 1; }
