#!/usr/bin/env bash
# tests/bench/reads.sh — reads by primary key on PostgreSQL, where the
# reads of one turn share a statement (db_query_row_keyed): ours and the
# Go peer interleaved (c go c go ...), ROUNDS rounds, each run on a fresh
# PostgreSQL (../shared/bench/scenarios/lib.sh) seeded alike, the server
# with --cache none and PostgreSQL on SERVER_CPU, the load on LOAD_CPU:
#
#   user_random  GET /v1/users/{1..USERS at random}, wrk -c CONNS
#   item_random  GET /v1/items/{1..ITEMS at random}, wrk -c CONNS (the
#                shared item.lua; every GET a cache miss: --cache none)
#   getuser_one  gRPC GetUser of user 1, h2load -c 16 -m 32 (bench_pair's)
#   account_own  GET /v1/accounts/{id} by its owner, LOGINS logged-in users
#                in turn, wrk -c CONNS (an account read after the session's)
#
# Prints req/s per run and ours/peer per round, then the worst round.
#   C_BIN, GO_BIN, ROUNDS=3 DUR=6s CONNS=64 USERS=1000 ITEMS=10000 H2_N=60000 LOGINS=32
set -u
cd "$(dirname "$0")/../.."
BENCH_NAME=reads
. tests/bench/peer-env.sh
ROUNDS=${ROUNDS:-3} DUR=${DUR:-6s} CONNS=${CONNS:-64} USERS=${USERS:-1000} ITEMS=${ITEMS:-10000} H2_N=${H2_N:-60000} LOGINS=${LOGINS:-32}
SERVER_CPU=${SERVER_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
export USERS ITEMS
if [ "$LOGINS" -gt "$USERS" ]; then echo "bench reads: LOGINS ($LOGINS) > USERS ($USERS)" >&2; exit 2; fi
for t in wrk h2load taskset curl "$PY"; do
  command -v "$t" >/dev/null || { echo "bench reads: missing tool: $t" >&2; exit 1; }
done
if [ ! -x "$GO_BIN" ]; then echo "bench reads: no Go peer at $GO_BIN; skipped"; exit 0; fi

TMP="" SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""; fi
  stop_pg
  [ -n "$TMP" ] && rm -rf "$TMP"
  TMP=""
}
RES=$(mktemp /tmp/bench_reads.XXXXXX.tsv)
trap 'cleanup; rm -f "$RES" "$RES.bin"' EXIT
trap 'exit 130' INT TERM

wrk_rps() { # lua url -> req/s (0 when any request failed)
  local out
  out=$(timeout 120 taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DUR" -s "$1" "$2" 2>&1)
  if echo "$out" | grep -q 'Non-2xx\|Socket errors'; then echo "0"; return; fi
  echo "$out" | awk '/Requests\/sec/{print $2}'
}

# SESSIONS for account.lua: "uid:token:account" of LOGINS seeded users (their USD account)
login_all() { # base_url
  "$PY" - "$1" "$LOGINS" <<'PY'
import json, sys, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
def call(method, path, body=None, tok=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    if tok:
        req.add_header("Authorization", "Bearer " + tok)
    return json.load(urllib.request.urlopen(req, timeout=30))
out = []
for i in range(1, n + 1):
    tok = call("POST", "/v1/sessions", {"email": "user%d@example.com" % i, "password": "password%d" % i})["token"]
    uid = call("GET", "/v1/me", tok=tok)["id"]
    acct = [a["id"] for a in call("GET", "/v1/accounts", tok=tok)["data"] if a["currency"] == "USD"][0]
    out.append("%d:%s:%d" % (uid, tok, acct))
print(" ".join(out))
PY
}

# GetUserRequest{id: 1}, gRPC-framed
"$PY" -c 'import sys; sys.stdout.buffer.write(b"\x00\x00\x00\x00\x02\x08\x01")' >"${RES}.bin"
for r in $(seq 1 "$ROUNDS"); do
  for impl in c go; do
    bin=$C_BIN; [ "$impl" = go ] && bin=$GO_BIN
    TMP=$(mktemp -d /tmp/bench_reads.XXXXXX) || exit 1
    chmod 755 "$TMP"
    start_pg "$TMP" "$SERVER_CPU" || exit 1
    timeout 300 "$bin" seed --db "$PG_URL" --users "$USERS" --items "$ITEMS" --orders 0 --seed 1 >"$TMP/seed.log" 2>&1 \
      || { echo "bench reads: seed failed ($impl)"; tail -3 "$TMP/seed.log"; exit 1; }
    hp=$(free_port) gp=$(free_port)
    taskset -c "$SERVER_CPU" "$bin" serve --http-addr "127.0.0.1:$hp" --grpc-addr "127.0.0.1:$gp" \
      --db "$PG_URL" --cache none >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$hp" 30 || { echo "bench reads: $impl did not come up"; tail -3 "$TMP/server.log"; exit 1; }
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s -s "$ROOT/tests/bench/user.lua" "http://127.0.0.1:$hp" >/dev/null 2>&1
    u=$(wrk_rps "$ROOT/tests/bench/user.lua" "http://127.0.0.1:$hp")
    i=$(wrk_rps "$SCEN/lua/item.lua" "http://127.0.0.1:$hp")
    h2=(h2load -c 16 -m 32 -d "${RES}.bin" -H 'content-type: application/grpc' -H 'te: trailers')
    taskset -c "$LOAD_CPU" "${h2[@]}" -n $((H2_N / 10)) "http://127.0.0.1:$gp/bazaar.v1.UserService/GetUser" >/dev/null 2>&1
    out=$(timeout 300 taskset -c "$LOAD_CPU" "${h2[@]}" -n "$H2_N" "http://127.0.0.1:$gp/bazaar.v1.UserService/GetUser" 2>&1)
    g=$(echo "$out" | awk '/^requests:/{ok=($8 == '"$H2_N"')} /req\/s/{for (k=1;k<=NF;k++) if ($(k+1) ~ /^req\/s/) v=$k} END{print ok ? v : 0}')
    SESSIONS=$(login_all "http://127.0.0.1:$hp") || { echo "bench reads: logins failed ($impl)"; exit 1; }
    export SESSIONS
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s -s "$ROOT/tests/bench/account.lua" "http://127.0.0.1:$hp" >/dev/null 2>&1
    a=$(wrk_rps "$ROOT/tests/bench/account.lua" "http://127.0.0.1:$hp")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$impl" "$r" "$u" "$i" "$g" "$a" >>"$RES"
    cleanup
  done
done
"$PY" - "$RES" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
runs = {(i, int(r)): list(map(float, v)) for i, r, *v in rows}
names = ["user_random", "item_random", "getuser_one", "account_own"]
rounds = sorted({r for _, r in runs})
print("%-12s" % "scenario" + "".join("%11s%11s%7s" % ("c#%d" % r, "go#%d" % r, "c/go") for r in rounds) + "   worst")
for k, n in enumerate(names):
    line, worst = "%-12s" % n, None
    for r in rounds:
        c, g = runs[("c", r)][k], runs[("go", r)][k]
        ratio = c / g if g else 0.0
        worst = ratio if worst is None else min(worst, ratio)
        line += "%11.0f%11.0f%7.2f" % (c, g, ratio)
    print(line + "   %5.2f" % worst)
print("(req/s on PostgreSQL, --cache none; a run with any failed request shows 0)")
PY
