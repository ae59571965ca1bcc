#!/usr/bin/env bash
# tests/bench/http.sh — /healthz req/s and latency: bazaar (1 loop thread)
# against nginx (1 worker, fixed 2-byte body), side by side in one run.
# Server on core 0, wrk on core 1; ROUNDS rounds interleaved; medians.
# Beside req/s, each server's CPU per 1,000 requests (user + system ticks
# of its process over the run, /proc/PID/stat): on a shared machine the
# rate moves with the neighbours, the work per request much less.
set -eu
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3} DUR=${DUR:-5} CONNS=${CONNS:-64}
tmp=$(mktemp -d /tmp/bazaar-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bport=$(free_port); nport=$(free_port)
taskset -c 0 build/bazaar serve --threads 1 --http-addr 127.0.0.1:$bport --grpc-addr off \
  --log-level warn 2>"$tmp/bazaar.log" &
pids+=($!)
cat >"$tmp/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp; uwsgi_temp_path $tmp; scgi_temp_path $tmp;
  server { listen 127.0.0.1:$nport; location / { default_type text/plain; return 200 "ok"; } }
}
CONF
taskset -c 0 nginx -c "$tmp/nginx.conf" &
pids+=($!)
nmaster=$!
for i in $(seq 50); do
  curl -sf "http://127.0.0.1:$bport/healthz" >/dev/null && curl -sf "http://127.0.0.1:$nport/" >/dev/null && break
  sleep 0.1
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_wrk() { # url server_pid -> "rps p50_us p99_us non2xx ticks_per_1000"
  local t0 t1
  t0=$(ticks "$2")
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$1" >"$tmp/wrk.out" 2>&1
  t1=$(ticks "$2")
  /usr/bin/python3 - "$tmp/wrk.out" $((t1 - t0)) <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def lat(p):
    m = re.search(r'^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$' % p, t, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v * {'us': 1, 'ms': 1000, 's': 1e6}[u]
rps = float(re.search(r'Requests/sec:\s+([\d.]+)', t).group(1))
m = re.search(r'Non-2xx or 3xx responses: (\d+)', t)
n = int(re.search(r'(\d+) requests in', t).group(1))
print(rps, lat(50), lat(99), m.group(1) if m else 0, 1000.0 * int(sys.argv[2]) / max(n, 1))
PY
}
nworker=$(pgrep -P "$nmaster" | head -1)

echo "round  bazaar_rps  nginx_rps  ratio  bazaar_p50  nginx_p50  bazaar_p99  nginx_p99  cpu/1000req: bazaar nginx ratio"
: >"$tmp/res"
for r in $(seq "$ROUNDS"); do
  taskset -c 1 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$bport/healthz" >/dev/null  # warm-up
  read -r brps bp50 bp99 bn bcpu <<<"$(run_wrk "http://127.0.0.1:$bport/healthz" "${pids[0]}")"
  read -r nrps np50 np99 nn ncpu <<<"$(run_wrk "http://127.0.0.1:$nport/" "$nworker")"
  printf '%5d %11.0f %10.0f %6.2f %9.0fus %8.0fus %9.0fus %8.0fus  %17.3f %6.3f %5.2f\n' "$r" "$brps" "$nrps" \
    "$(echo "$brps / $nrps" | bc -l)" "$bp50" "$np50" "$bp99" "$np99" "$bcpu" "$ncpu" "$(echo "$bcpu / $ncpu" | bc -l)"
  echo "$brps $nrps $bp50 $np50 $bp99 $np99 $bn $nn $bcpu $ncpu" >>"$tmp/res"
done
/usr/bin/python3 - "$tmp/res" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = lambda i: statistics.median(r[i] for r in rows)
print("median %11.0f %10.0f %6.2f %9.0fus %8.0fus %9.0fus %8.0fus  %17.3f %6.3f %5.2f" % (
    med(0), med(1), med(0) / med(1), med(2), med(3), med(4), med(5), med(8), med(9), med(8) / med(9)))
print("       (req/s ratio target >= 1.0; p99 ratio %.2f, target <= 1.2; non-2xx %d/%d; CPU ticks of the server process per 1,000 requests, lower is better)" % (
    med(4) / med(5), sum(r[6] for r in rows), sum(r[7] for r in rows)))
PY

# RSS per idle keep-alive connection: 10,000 connections that sent one
# request and then sit idle.
pid=${pids[0]}
/usr/bin/python3 - "$bport" "$pid" <<'PY'
import socket, sys, time, resource
port, pid = int(sys.argv[1]), sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def rss():
    for l in open('/proc/%s/status' % pid):
        if l.startswith('VmRSS:'): return int(l.split()[1])
time.sleep(0.3)
before = rss()
socks = []
N = 10000
req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
for i in range(N):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    socks.append(s)
for s in socks:
    s.settimeout(5)
    got = b""
    while b"\r\n\r\nok" not in got:
        got += s.recv(4096)
time.sleep(0.5)
after = rss()
print("idle keep-alive connections: %d, RSS delta %.0f KiB, %.2f KiB per connection (target <= 2 KiB)" % (N, after - before, (after - before) / N))
for s in socks: s.close()
PY
