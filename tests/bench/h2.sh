#!/usr/bin/env bash
# tests/bench/h2.sh — h2c GET /healthz req/s: bazaar (--threads 1) against
# Debian's h2o (1 thread, fixed 2-byte body), h2load -c16 -m32; server on
# core 0, h2load on core 1; ROUNDS rounds interleaved; medians.  Then RSS
# per idle HTTP/2 connection.
set -eu
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3} DUR=${DUR:-5} CONNS=${CONNS:-16} STREAMS=${STREAMS:-32}
tmp=$(mktemp -d /tmp/bazaar-bench-h2.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bport=$(free_port); hport=$(free_port)
taskset -c 0 build/bazaar serve --threads 1 --http-addr 127.0.0.1:$bport --grpc-addr off \
  --db "sqlite://$tmp/bench.db" --log-level warn 2>"$tmp/bazaar.log" &
pids+=($!)
# user: root — as root h2o would switch to nobody, which cannot write
# into our private temp directory.
cat >"$tmp/h2o.conf" <<CONF
user: root
num-threads: 1
pid-file: $tmp/h2o.pid
error-log: $tmp/h2o-error.log
listen:
  host: 127.0.0.1
  port: $hport
hosts:
  default:
    paths:
      /:
        mruby.handler: |
          Proc.new do |env|
            [200, {"content-type" => "text/plain"}, ["ok"]]
          end
CONF
# Without mruby the handler line is refused: fall back to a static file.
if ! h2o -t -c "$tmp/h2o.conf" >/dev/null 2>&1; then
  mkdir -p "$tmp/www"; printf ok >"$tmp/www/healthz"
  # user: root — as root h2o would switch to nobody, which cannot write
# into our private temp directory.
cat >"$tmp/h2o.conf" <<CONF
user: root
num-threads: 1
pid-file: $tmp/h2o.pid
error-log: $tmp/h2o-error.log
listen:
  host: 127.0.0.1
  port: $hport
hosts:
  default:
    paths:
      /:
        file.dir: $tmp/www
CONF
fi
taskset -c 0 h2o -c "$tmp/h2o.conf" >"$tmp/h2o.out" 2>&1 &
pids+=($!)
for i in $(seq 50); do
  curl -sf --http2-prior-knowledge "http://127.0.0.1:$bport/healthz" >/dev/null &&
    curl -sf --http2-prior-knowledge "http://127.0.0.1:$hport/healthz" >/dev/null && break
  sleep 0.1
done

run_h2load() { # url -> "rps p50_us p99_us non2xx"
  taskset -c 1 h2load -c"$CONNS" -m"$STREAMS" -D"$DUR" --warm-up-time=1 "$1" >"$tmp/h2load.out" 2>&1 || true
  /usr/bin/python3 - "$tmp/h2load.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r'finished in [\d.]+m?s, ([\d.]+) req/s', t).group(1))
ok = re.search(r'status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx', t)
bad = sum(int(x) for x in ok.groups()[1:])
m = re.search(r'time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)', t)
u = {'us': 1, 'ms': 1000, 's': 1e6}
mean = float(m.group(5)) * u[m.group(6)]
print(rps, mean, bad)
PY
}

echo "round  bazaar_rps  h2o_rps  ratio  bazaar_mean  h2o_mean"
: >"$tmp/res"
for r in $(seq "$ROUNDS"); do
  read -r brps bmean bbad <<<"$(run_h2load "http://127.0.0.1:$bport/healthz")"
  read -r hrps hmean hbad <<<"$(run_h2load "http://127.0.0.1:$hport/healthz")"
  printf '%5d %11.0f %8.0f %6.2f %10.0fus %7.0fus\n' "$r" "$brps" "$hrps" "$(echo "$brps / $hrps" | bc -l)" "$bmean" "$hmean"
  echo "$brps $hrps $bmean $hmean $bbad $hbad" >>"$tmp/res"
done
/usr/bin/python3 - "$tmp/res" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = lambda i: statistics.median(r[i] for r in rows)
print("median %11.0f %8.0f %6.2f %10.0fus %7.0fus   (req/s ratio target >= 0.8; non-2xx %d/%d)" % (
    med(0), med(1), med(0) / med(1), med(2), med(3), sum(r[4] for r in rows), sum(r[5] for r in rows)))
PY

# RSS per idle HTTP/2 connection: N connections that each ran one request
# (SETTINGS exchanged, HPACK tables used) and then sit idle; measured after
# a warm-up batch (so the coroutine free list is not counted) and after the
# 1 s hibernation tick.
pid=${pids[0]}
/usr/bin/python3 - "$bport" "$pid" <<'PY'
import socket, sys, time, resource
import h2.connection, h2.config, h2.events
port, pid = int(sys.argv[1]), sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def rss():
    for l in open('/proc/%s/status' % pid):
        if l.startswith('VmRSS:'): return int(l.split()[1])
def batch(n):
    conns = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(':method', 'GET'), (':path', '/healthz'), (':scheme', 'http'), (':authority', 'x')], end_stream=True)
        s.sendall(c.data_to_send())
        conns.append((s, c))
    for s, c in conns:
        s.settimeout(5)
        done = False
        while not done:
            for e in c.receive_data(s.recv(65536)):
                if isinstance(e, h2.events.StreamEnded): done = True
            d = c.data_to_send()
            if d: s.sendall(d)
    return conns
warm = batch(1000)
time.sleep(0.5)
before = rss()
N = 5000
conns = batch(N)
time.sleep(2.5)
after = rss()
print("idle HTTP/2 connections: %d, RSS delta %.0f KiB, %.2f KiB per connection (target <= 8 KiB)" % (N, after - before, (after - before) / N))
PY
