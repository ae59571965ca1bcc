#!/usr/bin/env bash
# tests/bench/pay.sh — order payment (POST /v1/orders/{id}/pay) on
# PostgreSQL + Redis, ours and the Go peer interleaved (c go c go ...),
# ROUNDS rounds, the same seed, the shared scenarios' pinning: the server
# and its PostgreSQL and Redis on SERVER_CPU, wrk on LOAD_CPU.
#
# Each run: a fresh PostgreSQL and Redis (../shared/bench/scenarios/lib.sh),
# `seed --users USERS --items ITEMS --orders 0 --seed 1`, LOGIN_USERS users
# logged in and given 10^9 cents each, then ORDERS pending one-line orders
# (POST /v1/orders with an Idempotency-Key, a seller other than the buyer),
# and only then the load: wrk -c CONNS for WARM and then DUR, each request
# paying the next order of the list with a unique key (pay.lua).  Prints
# req/s, p50/p99 and non-2xx per run, our/peer per round, and PostgreSQL's
# committed and rolled-back transactions and the serialization failures
# in its log during the measured part.  A server that does not implement
# POST /v1/orders (the Go peer as shipped) gets a "not implemented" row.
#
#   C_BIN (default build/bazaar), GO_BIN (default: the peer's bin/bazaar,
#   else build/go-bazaar/bin/bazaar), ROUNDS=3 DUR=5s WARM=1s CONNS=64
#   USERS=200 ITEMS=2000 LOGIN_USERS=64 ORDERS=16000, IMPLS="c go".
set -u
cd "$(dirname "$0")/../.."
BENCH_NAME=pay
. tests/bench/peer-env.sh
ROUNDS=${ROUNDS:-3} DUR=${DUR:-5s} WARM=${WARM:-1s} CONNS=${CONNS:-64}
USERS=${USERS:-200} ITEMS=${ITEMS:-2000} LOGIN_USERS=${LOGIN_USERS:-64} ORDERS=${ORDERS:-16000}
IMPLS=${IMPLS:-"c go"}
SERVER_CPU=${SERVER_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
for t in wrk taskset curl "$PY"; do
  command -v "$t" >/dev/null || { echo "bench pay: missing tool: $t" >&2; exit 1; }
done

TMP=""
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
  fi
  stop_redis
  stop_pg
  [ -n "$TMP" ] && [ -z "${KEEP:-}" ] && rm -rf "$TMP"
  [ -n "$TMP" ] && [ -n "${KEEP:-}" ] && echo "bench pay: kept $TMP" >&2
  TMP=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Logs in, funds and orders: writes "token order_id" lines to $1; prints
# "unimplemented STATUS" when POST /v1/orders is not served.
prepare() {
  "$PY" - "$BASE_PORT" "$LOGIN_USERS" "$USERS" "$ITEMS" "$ORDERS" "$1" <<'PYEOF'
import http.client, json, sys, threading
port, nlog, nusers, nitems, norders, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
def conn(): return http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def req(c, m, p, body=None, tok=None, key=None):
    h = {"Content-Type": "application/json"}
    if tok: h["Authorization"] = "Bearer " + tok
    if key: h["Idempotency-Key"] = key
    c.request(m, p, None if body is None else json.dumps(body), h)
    r = c.getresponse()
    return r.status, r.read()
c = conn()
users = []
for i in range(1, nlog + 1):
    s, b = req(c, "POST", "/v1/sessions", {"email": "user%d@example.com" % i, "password": "password%d" % i})
    tok = json.loads(b)["token"]
    s, b = req(c, "GET", "/v1/accounts", tok=tok)
    acct = [a["id"] for a in json.loads(b)["data"] if a["currency"] == "USD"][0]
    s, b = req(c, "POST", "/v1/accounts/%d/deposits" % acct, {"amount_cents": 10**9}, tok, "fund-%d" % i)
    if s not in (200, 201): sys.exit("deposit: %d %s" % (s, b[:200]))
    users.append((i, tok, acct))
# item j is sold by user ((j-1) mod USERS)+1: pick one sold by someone else
def item_for(k, uid):
    j = 1 + (k * 7919) % nitems
    return j if (j - 1) % nusers + 1 != uid else 1 + j % nitems
s, b = req(c, "POST", "/v1/orders", {"account_id": users[0][2], "lines": [{"item_id": item_for(0, 1), "quantity": 1}]}, users[0][1], "probe")
if s in (404, 405, 501):
    print("unimplemented %d" % s); sys.exit(0)
if s != 201: sys.exit("POST /v1/orders: %d %s" % (s, b[:200]))
lines = ["%s %d" % (users[0][1], json.loads(b)["id"])]
lk = threading.Lock(); errs = []
def worker(t, nthreads):
    cc = conn(); mine = []
    for k in range(1 + t, norders, nthreads):
        uid, tok, acct = users[k % len(users)]
        s, b = req(cc, "POST", "/v1/orders", {"account_id": acct, "lines": [{"item_id": item_for(k, uid), "quantity": 1}]}, tok, "order-%d" % k)
        if s != 201:
            errs.append("%d %s" % (s, b[:120])); continue
        mine.append("%s %d" % (tok, json.loads(b)["id"]))
    with lk: lines.extend(mine)
ts = [threading.Thread(target=worker, args=(t, 16)) for t in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
if errs: print("bench pay: %d orders refused, e.g. %s" % (len(errs), errs[0]), file=sys.stderr)
# interleave the users so that concurrent payments spread over accounts
lines.sort(key=lambda l: int(l.split()[1]))
open(out, "w").write("\n".join(lines) + "\n")
print("orders %d" % len(lines))
PYEOF
}

pg_counts() { # commits rollbacks
  as_pg "$PG_BIN/psql" -qAt -h 127.0.0.1 -p "$PG_PORT" -U bench -d bazaar \
    -c "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = 'bazaar'" | tr '|' ' '
}

RES=$(mktemp /tmp/bench_pay.XXXXXX.tsv)
trap 'cleanup; rm -f "$RES"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for impl in $IMPLS; do
    case $impl in c) bin=$C_BIN ;; go) bin=$GO_BIN ;; *) echo "bench pay: unknown impl $impl" >&2; exit 2 ;; esac
    if [ ! -x "$bin" ]; then printf '%s\t%s\tmissing\n' "$impl" "$r" >>"$RES"; continue; fi
    TMP=$(mktemp -d /tmp/bench_pay.XXXXXX)
    chmod 755 "$TMP"
    start_pg "$TMP" "$SERVER_CPU" || exit 1
    PG_PORT=${PG_URL##*:}; PG_PORT=${PG_PORT%%/*}
    start_redis "$TMP" "$SERVER_CPU" || exit 1
    timeout 300 "$bin" seed --db "$PG_URL" --users "$USERS" --items "$ITEMS" --orders 0 --seed 1 >"$TMP/seed.log" 2>&1 \
      || { echo "bench pay: seed failed ($impl)"; tail -3 "$TMP/seed.log"; exit 1; }
    BASE_PORT=$(free_port)
    taskset -c "$SERVER_CPU" "$bin" serve --http-addr "127.0.0.1:$BASE_PORT" --grpc-addr "127.0.0.1:$(free_port)" \
      --db "$PG_URL" --cache "$REDIS_URL" >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$BASE_PORT" 30 || { echo "bench pay: $impl did not come up"; tail -3 "$TMP/server.log"; exit 1; }
    prep=$(prepare "$TMP/orders.txt") || { echo "bench pay: preparing $impl failed: $prep"; exit 1; }
    if [ "${prep%% *}" = unimplemented ]; then
      echo ">>> round $r $impl: POST /v1/orders answers ${prep#* }: payment not implemented" >&2
      printf '%s\t%s\tunimplemented\n' "$impl" "$r" >>"$RES"
      cleanup; continue
    fi
    n=${prep#orders }
    # the first orders warm the server up; the rest are the measured run's
    warm_n=$(( n / 8 ))
    head -n "$warm_n" "$TMP/orders.txt" >"$TMP/warm.txt"
    tail -n +"$((warm_n + 1))" "$TMP/orders.txt" >"$TMP/main.txt"
    PAY_FILE=$TMP/warm.txt RUN_ID=warm$$ timeout 120 taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$WARM" \
      -s "$ROOT/tests/bench/pay.lua" "http://127.0.0.1:$BASE_PORT" >"$TMP/warm.out" 2>&1
    read -r c0 rb0 <<<"$(pg_counts)"
    # grep -c prints 0 itself when nothing matches (and exits 1; "|| echo 0"
    # once made that "0\n0", which broke the arithmetic below)
    ser0=$(grep -c "could not serialize" "$TMP/pg.log" 2>/dev/null); ser0=${ser0:-0}
    PAY_FILE=$TMP/main.txt RUN_ID=main$$ timeout 120 taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DUR" --latency \
      -s "$ROOT/tests/bench/pay.lua" "http://127.0.0.1:$BASE_PORT" >"$TMP/main.out" 2>&1
    read -r c1 rb1 <<<"$(pg_counts)"
    ser1=$(grep -c "could not serialize" "$TMP/pg.log" 2>/dev/null); ser1=${ser1:-0}
    mx=$(grep -c "more than one updating member" "$TMP/pg.log" 2>/dev/null); mx=${mx:-0}
    f=$TMP/main.out
    rps=$(awk '$1=="BENCH" && $2=="RPS"{print $3}' "$f")
    p50=$(awk '$1=="BENCH" && $2=="LAT_P50_US"{printf "%.2fms", $3/1000}' "$f")
    p99=$(awk '$1=="BENCH" && $2=="LAT_P99_US"{printf "%.2fms", $3/1000}' "$f")
    st=$(awk '$1=="BENCH" && $2=="STATUSES"{print $3}' "$f")
    reqs=$(awk '/requests in/{print $1}' "$f")
    non2xx=$(echo "$st" | tr ',' '\n' | awk -F= '$1!="none" && ($1<200 || $1>299){s+=$2} END{print s+0}')
    [ -n "$rps" ] || { echo "bench pay: wrk failed for $impl"; tail -5 "$f"; rps=FAILED; }
    echo ">>> round $r $impl: $rps req/s ($reqs requests, $((n - warm_n)) orders), p50 $p50 p99 $p99, statuses $st;" \
      "PostgreSQL: $((c1 - c0)) commits, $((rb1 - rb0)) rollbacks, $((ser1 - ser0)) serialization failures logged, $mx multixact errors" >&2
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$impl" "$r" "$rps" "$p50" "$p99" "$non2xx" "$((rb1 - rb0))" "$st" >>"$RES"
    cleanup
  done
done

echo "== order payment on PostgreSQL + Redis: wrk -c$CONNS -d$DUR, each request a different order; $ROUNDS rounds"
printf '%-6s %-6s %10s %10s %10s %8s %10s  %s\n' round impl "req/s" p50 p99 non2xx rollbacks statuses
awk -F'\t' '{ printf "%-6s %-6s %10s %10s %10s %8s %10s  %s\n", $2, $1, $3, ($4==""?"-":$4), ($5==""?"-":$5), ($6==""?"-":$6), ($7==""?"-":$7), $8
              v[$1, $2] = $3 }
  END { for (r = 1; r <= '"$ROUNDS"'; r++) { a = v["c", r]; b = v["go", r]
          printf "round %d: c/go %s\n", r, (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", a / b) : "- (go: " (b == "" ? "not run" : b) ")" } }' "$RES"
