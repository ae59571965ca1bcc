#!/usr/bin/env bash
# tests/bench/tls.sh — TLS /healthz: bazaar (--threads 1, --tls-cert/--tls-key)
# against nginx (1 worker, ssl + http2, fixed 2-byte body) with the same
# ECDSA P-256 certificate.  Server on core 0, client on core 1; ROUNDS
# rounds interleaved; medians.  Besides req/s it reports the server's CPU
# time per request (utime+stime of the serving process over the run /
# requests done), which a busy machine distorts far less.  Scenarios:
#   keep-alive   wrk -c64 over https (HTTP/1.1, TLS 1.3)
#   handshakes   wrk -c16 with "Connection: close": a full handshake per request
#   h2           h2load -c16 -m32 over https (ALPN h2)
# Then RSS per idle TLS keep-alive connection.
set -eu
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3} DUR=${DUR:-5}
tmp=$(mktemp -d /tmp/bazaar-bench-tls.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

( cd "$tmp"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=bench-ca -days 2
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=localhost
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile ext
) >/dev/null 2>&1

bport=$(free_port); nport=$(free_port)
taskset -c 0 build/bazaar serve --threads 1 --http-addr 127.0.0.1:$bport --grpc-addr off \
  --db "sqlite://$tmp/bench.db" --log-level warn --tls-cert "$tmp/leaf.pem" --tls-key "$tmp/leaf.key" \
  2>"$tmp/bazaar.log" &
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
  keepalive_requests 10000000; # as bazaar: no cap on requests per connection
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_prefer_server_ciphers on;
  ssl_session_cache shared:SSL:10m;
  server {
    listen 127.0.0.1:$nport ssl http2;
    ssl_certificate $tmp/leaf.pem;
    ssl_certificate_key $tmp/leaf.key;
    location / { default_type text/plain; return 200 "ok"; }
  }
}
CONF
taskset -c 0 nginx -c "$tmp/nginx.conf" &
pids+=($!)
for i in $(seq 50); do
  curl -sf --cacert "$tmp/ca.pem" "https://localhost:$bport/healthz" >/dev/null &&
    curl -sf --cacert "$tmp/ca.pem" "https://localhost:$nport/" >/dev/null && break
  sleep 0.1
done

# CPU ticks (utime + stime) of a process; nginx's is its one worker.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# wrk: -> "rps p99_us errors cpu_us_per_request"
run_wrk() { # server_pid conns url [header]
  local pid=$1 c=$2 url=$3; shift 3
  local t0; t0=$(ticks "$pid")
  taskset -c 1 wrk -t1 -c"$c" -d"${DUR}s" --latency "$@" "$url" >"$tmp/wrk.out" 2>&1 || true
  /usr/bin/python3 - "$tmp/wrk.out" "$(( $(ticks "$pid") - t0 ))" "$TCK" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r'^\s+99%\s+([\d.]+)(us|ms|s)\s*$', t, re.M)
p99 = float(m.group(1)) * {'us': 1, 'ms': 1000, 's': 1e6}[m.group(2)] if m else 0
rps = float(re.search(r'Requests/sec:\s+([\d.]+)', t).group(1))
n = int(re.search(r'(\d+) requests in', t).group(1))
err = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', t)
bad = re.search(r'Non-2xx or 3xx responses: (\d+)', t)
print(rps, p99, (sum(map(int, err.groups())) if err else 0) + (int(bad.group(1)) if bad else 0),
      int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / max(n, 1))
PY
}

run_h2load() { # server_pid url -> "rps mean_us failed cpu_us_per_request"
  local t0; t0=$(ticks "$1")
  # no warm-up period: its requests would not be counted, its CPU would
  taskset -c 1 h2load -c16 -m32 -D"$DUR" "$2" >"$tmp/h2load.out" 2>&1 || true
  /usr/bin/python3 - "$tmp/h2load.out" "$(( $(ticks "$1") - t0 ))" "$TCK" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r'finished in [\d.]+m?s, ([\d.]+) req/s', t).group(1))
m = re.search(r'time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)', t)
mean = float(m.group(5)) * {'us': 1, 'ms': 1000, 's': 1e6}[m.group(6)]
f = re.search(r'(\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored', t)
n = int(f.group(3))
print(rps, mean, int(f.group(4)) + int(f.group(5)), int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / max(n, 1))
PY
}

B="https://127.0.0.1:$bport/healthz" N="https://127.0.0.1:$nport/"
bpid=${pids[0]}
npid=$(cat "/proc/${pids[1]}/task/${pids[1]}/children" | awk '{print $1}') # the one worker
echo "round  scenario     bazaar_rps  nginx_rps  ratio  bazaar_p99/mean  nginx_p99/mean  bazaar_cpu/req  nginx_cpu/req"
: >"$tmp/res"
for r in $(seq "$ROUNDS"); do
  taskset -c 1 wrk -t1 -c64 -d1s "$B" >/dev/null 2>&1 || true # warm-up
  for sc in keepalive handshakes h2; do
    case $sc in
      keepalive)  read -r b bl be bc <<<"$(run_wrk "$bpid" 64 "$B")"; read -r n nl ne nc <<<"$(run_wrk "$npid" 64 "$N")" ;;
      handshakes) read -r b bl be bc <<<"$(run_wrk "$bpid" 16 "$B" -H 'Connection: close')"
                  read -r n nl ne nc <<<"$(run_wrk "$npid" 16 "$N" -H 'Connection: close')" ;;
      h2)         read -r b bl be bc <<<"$(run_h2load "$bpid" "$B")"; read -r n nl ne nc <<<"$(run_h2load "$npid" "$N")" ;;
    esac
    printf '%5d  %-11s %10.0f %10.0f %6.2f %14.0fus %13.0fus %13.1fus %12.1fus\n' "$r" "$sc" "$b" "$n" \
      "$(echo "$b / $n" | bc -l)" "$bl" "$nl" "$bc" "$nc"
    echo "$sc $b $n $bl $nl $be $ne $bc $nc" >>"$tmp/res"
  done
done
/usr/bin/python3 - "$tmp/res" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for sc in ("keepalive", "handshakes", "h2"):
    rs = [list(map(float, r[1:])) for r in rows if r[0] == sc]
    med = lambda i: statistics.median(x[i] for x in rs)
    print("median %-11s %10.0f %10.0f %6.2f %14.0fus %13.0fus %13.1fus %12.1fus   (errors bazaar %d, nginx %d; cpu/req ratio %.2f)" % (
        sc, med(0), med(1), med(0) / med(1), med(2), med(3), med(6), med(7), sum(x[4] for x in rs), sum(x[5] for x in rs),
        med(6) / med(7)))
PY

# RSS per idle TLS keep-alive connection: N connections that made one
# request over TLS 1.3 and sit idle.
/usr/bin/python3 - "$bport" "${pids[0]}" "$tmp/ca.pem" <<'PY'
import resource, socket, ssl, sys, time
port, pid, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def rss():
    for l in open('/proc/%s/status' % pid):
        if l.startswith('VmRSS:'): return int(l.split()[1])
ctx = ssl.create_default_context(cafile=ca)
time.sleep(0.3)
before = rss()
N = 2000
socks = []
for i in range(N):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\nok" not in got:
        got += s.recv(4096)
    socks.append(s)
time.sleep(0.5)
after = rss()
print("idle TLS keep-alive connections: %d, RSS delta %.0f KiB, %.2f KiB per connection" % (N, after - before, (after - before) / N))
for s in socks: s.close()
PY
