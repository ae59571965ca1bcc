#!/usr/bin/env bash
# scripts/deps.sh — make sure the Debian packages bazaar needs are installed.
#
#   scripts/deps.sh build   # to compile and run
#   scripts/deps.sh test    # + test tools and throwaway PostgreSQL/Redis
#   scripts/deps.sh bench   # + load generators and reference servers
#
# Idempotent and silent when everything is there.  As root it installs what
# is missing with apt-get; otherwise it names the missing packages and fails.
set -euo pipefail

build=(gcc make libc6-dev pkg-config libsqlite3-dev libpq-dev libhiredis-dev liburing-dev libsodium-dev
       protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev grpc-proto
       zlib1g-dev libjansson-dev libssl-dev help2man)
test=(libcmocka-dev clang libclang-rt-14-dev python3 python3-pytest python3-pytest-xdist python3-requests
      postgresql redis-server redis-tools curl bc nghttp2-client python3-h2 python3-hyperframe python3-hpack
      iproute2 python3-grpcio python3-protobuf golang-go golang-google-grpc-dev
      openssl pgbouncer redis-sentinel prometheus valgrind strace
      chromium libgoogle-perftools4 abigail-tools
      debhelper dpkg-dev fakeroot lintian mmdebstrap systemd-container)
bench=(wrk nginx-light nghttp2-client h2o redis-tools)

# make deb / make test-debian build the Debian packages (debhelper, lintian)
# and install them into a clean root that mmdebstrap bootstraps and
# systemd-nspawn boots.
# The console test drives Debian's chromium (puppeteer-core from npm);
# go tool pprof reads the CPU profiles that libprofiler (loaded by bazaar
# with dlopen) writes.
# The gRPC-Web and reflection tests drive npm clients: Node.js from Debian
# when the machine has none (a Node.js already installed is left alone).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  test+=(nodejs npm)
fi

want=("${build[@]}")
case "${1:-build}" in
  build) ;;
  test) want+=("${test[@]}") ;;
  bench) want+=("${test[@]}" "${bench[@]}") ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  # "install ok installed" is the only state that means usable.
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "bazaar: missing Debian packages: ${missing[*]}" >&2
  echo "bazaar: install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "bazaar: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists once if they are missing or the install fails.
if ! apt-get install -y -qq "${missing[@]}" >/tmp/bazaar-apt.log 2>&1; then
  apt-get update -qq >>/tmp/bazaar-apt.log 2>&1
  apt-get install -y -qq "${missing[@]}" >>/tmp/bazaar-apt.log 2>&1 || {
    echo "bazaar: apt-get install failed; see /tmp/bazaar-apt.log" >&2; tail -20 /tmp/bazaar-apt.log >&2; exit 1; }
fi
