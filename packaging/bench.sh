#!/usr/bin/env bash
# Benchmarks: install what is missing (nginx-light, haproxy, wrk and the build dependencies), build
# sluice and the benchmark tools in build-bench/ (RelWithDebInfo), and run sluice side by side with
# nginx and haproxy in front of the same backend (tests/bench/run.py; see its --help).
#
#   packaging/bench.sh            full run: 3 rounds of 10 s per scenario and target (~13 minutes)
#   packaging/bench.sh --quick    about 2½ minutes
#   packaging/bench.sh --smoke    under a minute, every target and scenario once (what CI runs)
#
# Any other option goes to tests/bench/run.py (--targets, --scenarios, --out FILE, --no-pin, ...).
# Results: a table on the terminal and build-bench/bench-results.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! packaging/setup.sh bench; then
  # setup.sh bench also installs the test packages; when one of those cannot be installed here
  # (e.g. Debian's npm conflicts with a nodejs from elsewhere), still get what the benchmark needs.
  echo "bench: 'packaging/setup.sh bench' failed; installing only the benchmark's packages" >&2
  packaging/setup.sh build
  need=()
  for p in nginx-light haproxy wrk valgrind linux-perf liburing-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_TESTS=OFF >/dev/null
tools=(sluice sluice_bench_backend sluice_wsload)
# The io_uring relay probe of the `syscalls` scenario exists only where liburing-dev is installed.
ninja -C build-bench -t targets all | grep -q '^sluice_relay_probe:' && tools+=(sluice_relay_probe)
ninja -C build-bench -j"$(nproc)" "${tools[@]}"
exec /usr/bin/python3 tests/bench/run.py --build-dir build-bench "$@"
