#!/usr/bin/env bash
# tests/bench/ceiling.sh — how many requests the load generator itself can
# make, next to ours and the Go peer's.
#
# bench_pair's HTTP/1.1 scenarios are one wrk thread on one core, and its
# Lua script runs a request() and a response() call for every request.
# When the server is cheap enough, wrk fills its core first: the req/s is
# then wrk's limit, not the server's, and a ratio against a slower peer
# can grow no further.  This measures that limit, interleaved with the
# servers on the same cores (server on SERVER_CPU, wrk on LOAD_CPU):
#
#   c      bazaar serve, SQLite + memory cache (the item GETs are hits)
#   const  nginx (1 worker, access log off) answering every request with
#          one constant response: for `item`, the body of one item
#          response of ours recorded with curl, with as many header
#          fields as ours (nginx's own five and a fresh X-Request-Id,
#          then ours while it has fewer) and about as many bytes
#          (printed below); for `healthz`, http.sh's `return 200 "ok"`.
#          It does no work per request, so its req/s is about the most
#          any server could show through this load generator.
#   go     the Go peer (../shared/peers/go-bazaar), SQLite + memory
#
# Scenarios: item (wrk with the shared item.lua, GET /v1/items/{random
# id}), item_h2load (the same GETs, the ids shuffled once, from h2load
# --h1: a client in C without a script, several times cheaper per request
# than wrk's Lua, so the server is the limit) and healthz (wrk without a
# script, as http.sh runs it).  Per run it prints req/s, the client's CPU
# (% of its core: ~100 means the client was the limit), the
# server's CPU per request (µs, from /proc ticks) and the response's size;
# per round c/go, const/go (the largest c/go this load generator can show),
# c/const, and go/c in CPU per request (how much less CPU ours needs).
#
#   C_BIN, GO_BIN, ROUNDS=3 DUR=6s CONNS=64 ITEMS=10000
set -u
cd "$(dirname "$0")/../.."
BENCH_NAME=ceiling
. tests/bench/peer-env.sh
ROUNDS=${ROUNDS:-3} DUR=${DUR:-6s} CONNS=${CONNS:-64} ITEMS=${ITEMS:-10000}
SERVER_CPU=${SERVER_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
export ITEMS
for t in wrk nginx taskset curl "$PY"; do
  command -v "$t" >/dev/null || { echo "bench ceiling: missing tool: $t" >&2; exit 1; }
done
if [ ! -x "$GO_BIN" ]; then echo "bench ceiling: no Go peer at $GO_BIN; skipped"; exit 0; fi

TMP=$(mktemp -d /tmp/bench_ceiling.XXXXXX) || exit 1
chmod 755 "$TMP"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

serve() { # name bin -> "pid port"
  local name=$1 bin=$2 hp gp
  timeout 300 "$bin" seed --db "sqlite://$TMP/$name.db" --users 100 --items "$ITEMS" --orders 0 --seed 1 \
    >"$TMP/$name.seed.log" 2>&1 || { echo "bench ceiling: seed failed ($name)" >&2; tail -3 "$TMP/$name.seed.log" >&2; exit 1; }
  hp=$(free_port) gp=$(free_port)
  taskset -c "$SERVER_CPU" "$bin" serve --http-addr "127.0.0.1:$hp" --grpc-addr "127.0.0.1:$gp" \
    --db "sqlite://$TMP/$name.db" --cache memory >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  wait_port "$hp" 30 || { echo "bench ceiling: $name did not come up" >&2; tail -3 "$TMP/$name.log" >&2; exit 1; }
  SERVED="$! $hp"
}
serve c "$C_BIN"; read -r cpid cport <<<"$SERVED"
serve go "$GO_BIN"; read -r gpid gport <<<"$SERVED"

# The constant item response: one of ours, as a client receives it.
curl -fs -o /dev/null "http://127.0.0.1:$cport/v1/items/5"
curl -fsi "http://127.0.0.1:$cport/v1/items/5" | tr -d '\r' >"$TMP/item.http" \
  || { echo "bench ceiling: GET /v1/items/5 failed" >&2; exit 1; }
nport=$(free_port) hport=$(free_port)
"$PY" - "$TMP" "$nport" "$hport" <<'PY' || exit 1
import sys
tmp, nport, hport = sys.argv[1:]
head, body = open(tmp + "/item.http").read().split("\n\n", 1)
hdr = dict(l.split(": ", 1) for l in head.split("\n")[1:])
def q(s):
    if "'" in s or "\\" in s or "$" in s:
        sys.exit("bench ceiling: the recorded response needs quoting nginx does not have")
    return "'" + s + "'"
# nginx always sends Server, Date, Content-Type, Content-Length and
# Connection, and here a fresh X-Request-Id like ours: our other fields
# (ETag, Cache-Status, ...) are added only while nginx has fewer fields than
# we do, so the constant answer is never the lighter one for wrk to parse.
extra = [(k, v) for k, v in hdr.items() if k.lower() not in
         ("date", "content-type", "content-length", "x-request-id", "connection", "server")]
adds = "".join("add_header %s %s always; " % (k, q(v)) for k, v in extra[:max(0, len(hdr) - 6)])
open(tmp + "/nginx.conf", "w").write("""worker_processes 1;
daemon off;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path %(tmp)s; proxy_temp_path %(tmp)s; fastcgi_temp_path %(tmp)s; uwsgi_temp_path %(tmp)s; scgi_temp_path %(tmp)s;
  server { listen 127.0.0.1:%(nport)s;
    location / { default_type %(ct)s; add_header X-Request-Id $request_id always; %(adds)s return 200 %(body)s; } }
  server { listen 127.0.0.1:%(hport)s; location / { default_type text/plain; return 200 "ok"; } }
}
""" % dict(tmp=tmp, nport=nport, hport=hport, ct=q(hdr["Content-Type"]), adds=adds, body=q(body)))
PY
taskset -c "$SERVER_CPU" nginx -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" >"$TMP/nginx.out" 2>&1 &
npid=$!
PIDS+=($npid)
wait_port "$nport" 30 && wait_port "$hport" 30 || { echo "bench ceiling: nginx did not come up" >&2; cat "$TMP/nginx.out" >&2; exit 1; }
# nginx's worker is the child that serves; its master only waits.
sleep 0.2
nwpid=$(pgrep -P "$npid" | head -1)
[ -n "$nwpid" ] || { echo "bench ceiling: no nginx worker" >&2; exit 1; }

size() { curl -fs -o /dev/null -w '%{size_header}+%{size_download}' "$1"; }

# item_h2load's URIs: the ITEMS ids in a shuffled order (h2load's clients
# each go through the list in turn).
"$PY" -c 'import random, sys
ids = list(range(1, int(sys.argv[2]) + 1)); random.Random(1).shuffle(ids)
print("\n".join(sys.argv[1] + "/v1/items/%d" % i for i in ids))' "http://127.0.0.1:1" "$ITEMS" >"$TMP/items.uris"

# The client's CPU: the children's times of the shell that waited for it.
timed() { # out_file command... -> ticks of command's CPU
  OUT="$1" bash -c 'timeout 120 "${@}" >"$OUT" 2>&1; awk "{print \$16 + \$17}" /proc/$$/stat' _ "${@:2}"
}

run() { # round scenario impl server_pid url -> a TSV row in res.tsv
  local r=$1 scen=$2 impl=$3 pid=$4 url=$5 lua=() t0 t1 ccpu n rps port
  local o="$TMP/load.out"
  if [ "$scen" = item_h2load ]; then
    # a client in C without a script: the server's limit, not wrk's
    port=${url##*:}
    sed "1s|http://127.0.0.1:1/|http://127.0.0.1:$port/|" "$TMP/items.uris" >"$TMP/uris"
    local h2=(taskset -c "$LOAD_CPU" h2load --h1 -t1 -c"$CONNS" -i "$TMP/uris")
    "${h2[@]}" -D 1 >/dev/null 2>&1
    t0=$(ticks "$pid")
    ccpu=$(timed "$o" "${h2[@]}" -D "${DUR%s}")
    t1=$(ticks "$pid")
    rps=$(awk '/^finished in/{print $4}' "$o")
    n=$(awk '/^requests:/{print $8}' "$o")
    if ! grep -q '^requests: .* 0 failed, 0 errored' "$o" || ! grep -q 'status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' "$o"; then
      echo "bench ceiling: $impl $scen: failed requests" >&2
    fi
  else
    [ "$scen" = item ] && lua=(-s "$BENCH_LUA_DIR/item.lua")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "${lua[@]}" "$url" >/dev/null 2>&1
    t0=$(ticks "$pid")
    ccpu=$(timed "$o" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DUR" "${lua[@]}" "$url")
    t1=$(ticks "$pid")
    if grep -q 'Non-2xx\|Socket errors' "$o"; then echo "bench ceiling: $impl $scen: failed requests" >&2; fi
    n=$(awk '/requests in/{print $1}' "$o")
    rps=$(awk '/Requests\/sec/{print $2}' "$o")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$impl" "$r" "$rps" "$ccpu" "$((t1 - t0))" "$n" >>"$TMP/res.tsv"
}

SIZES="item: c $(size "http://127.0.0.1:$cport/v1/items/5"), const $(size "http://127.0.0.1:$nport/v1/items/5"), go $(size "http://127.0.0.1:$gport/v1/items/5"); healthz: c $(size "http://127.0.0.1:$cport/healthz"), const $(size "http://127.0.0.1:$hport/"), go $(size "http://127.0.0.1:$gport/healthz")"
for r in $(seq 1 "$ROUNDS"); do
  run "$r" item c "$cpid" "http://127.0.0.1:$cport"
  run "$r" item const "$nwpid" "http://127.0.0.1:$nport"
  run "$r" item go "$gpid" "http://127.0.0.1:$gport"
  run "$r" item_h2load c "$cpid" "http://127.0.0.1:$cport"
  run "$r" item_h2load const "$nwpid" "http://127.0.0.1:$nport"
  run "$r" item_h2load go "$gpid" "http://127.0.0.1:$gport"
  run "$r" healthz c "$cpid" "http://127.0.0.1:$cport/healthz"
  run "$r" healthz const "$nwpid" "http://127.0.0.1:$hport/"
  run "$r" healthz go "$gpid" "http://127.0.0.1:$gport/healthz"
done
"$PY" - "$TMP/res.tsv" "${DUR%s}" "$(getconf CLK_TCK)" <<'PY'
import sys
dur, hz = float(sys.argv[2]), float(sys.argv[3])
runs = {}
for l in open(sys.argv[1]):
    scen, impl, r, rps, wcpu, sticks, n = l.rstrip("\n").split("\t")
    if not rps or not n:  # the run failed (said above): left out of the table
        continue
    runs[(scen, impl, int(r))] = (float(rps), 100.0 * float(wcpu) / hz / dur, 1e6 * float(sticks) / hz / max(int(n), 1))
print("%-11s %5s %8s %8s %8s %5s %5s %5s %6s %6s %6s %6s %7s %7s %7s"
      % ("scenario", "round", "c", "const", "go", "cli%c", "cli%k", "cli%g", "us/c", "us/k", "us/g",
         "c/go", "k/go", "c/k", "cpu g/c"))
for scen in ("item", "item_h2load", "healthz"):
    for r in sorted({k[2] for k in runs if k[0] == scen}):
        if any((scen, i, r) not in runs for i in ("c", "const", "go")):
            print("%-11s %5d (a run failed)" % (scen, r))
            continue
        c, k, g = (runs[(scen, i, r)] for i in ("c", "const", "go"))
        print("%-11s %5d %8.0f %8.0f %8.0f %5.0f %5.0f %5.0f %6.1f %6.1f %6.1f %6.2f %6.2f %7.2f %7.2f"
              % (scen, r, c[0], k[0], g[0], c[1], k[1], g[1], c[2], k[2], g[2],
                 c[0] / g[0], k[0] / g[0], c[0] / k[0], g[2] / c[2] if c[2] else 0))
print("(req/s; cli% = the load generator's CPU, % of its core; us = server CPU per request;")
print(" k = const, nginx's constant response: k/go is the largest c/go this load generator can show)")
PY
echo "response bytes (headers+body): $SIZES"
