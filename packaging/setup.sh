#!/usr/bin/env bash
# Installs every Debian package and npm module sluice needs to build, run and test.
# Idempotent: packages already present are not reinstalled; apt-get update runs only when needed.
# Usage: packaging/setup.sh [build|run|test|bench]   (default: build)
set -euo pipefail
mode=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)

build_pkgs=(build-essential cmake ninja-build pkg-config libuv1-dev node-llhttp libssl-dev
  libtomlplusplus-dev zlib1g-dev libbrotli-dev libre2-dev libmodsecurity-dev modsecurity-crs
  nlohmann-json3-dev libgtest-dev googletest python3 curl)
# nginx, haproxy, wrk and valgrind: the benchmark harness, whose smoke run is part of the tests.
# redis-server: the rate limiter's Redis store; iproute2: the scale-out test's network namespaces.
# lintian: packaging/deb.sh checks the .deb; man-db: test_package renders the man pages.
# libnginx-mod-http-modsecurity: test_waf_nginx compares the waf filter's verdicts with nginx's.
# systemd: test_package checks the unit with systemd-analyze verify.
# linux-perf, liburing-dev: the harness's `syscalls` scenario (perf stat, and the io_uring relay probe).
test_pkgs=(python3-websockets python3-prometheus-client openssl procps chromium clang
  libclang-rt-14-dev nginx-light haproxy wrk valgrind redis-server iproute2 lintian man-db
  libnginx-mod-http-modsecurity systemd linux-perf liburing-dev)

want=("${build_pkgs[@]}")
case "$mode" in
  build) ;;
  run) want+=(python3-websockets) ;;
  test) want+=("${test_pkgs[@]}") ;;
  bench) want+=("${test_pkgs[@]}") ;;
  *) echo "usage: $0 [build|run|test|bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm (the `ws` client in the tests): any installation will do. Debian's npm package
# conflicts with NodeSource's nodejs (which bundles npm), so install them only when absent.
if [ "$mode" != build ] && [ "$mode" != run ]; then
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}"
  # Update the package lists when they are missing or older than a day.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    $sudo apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$mode" != build ] && [ -f "$here/tests/integration/package.json" ]; then
  if [ ! -d "$here/tests/integration/node_modules/ws" ]; then
    echo "setup: npm install (tests/integration)"
    (cd "$here/tests/integration" && npm install --no-audit --no-fund --silent)
  fi
fi
