#!/usr/bin/env bash
# ThreadSanitizer run of the multi-worker paths: builds build-tsan/ (-fsanitize=thread, no ASan)
# and runs the integration tests that exercise what workers share (reload, drain, least_conn
# counters, metrics scraped under load, filters' per-worker state, the WAF pool) with
# `workers = 2`. The harness fails a test whose sluice printed a sanitizer report.
# Not part of CI (a TSan build is another full build); run it by hand and report:
#   tests/tsan/run.sh [test_file ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_TSAN=ON >/dev/null
ninja -C build-tsan -j2 sluice
tests=("$@")
if ((${#tests[@]} == 0)); then
  tests=(test_reload test_pools test_admin test_filter_chain test_websocket test_http_proxy
         test_memory_cap test_ws_compression)
  for extra in test_waf test_ratelimit test_auth; do
    [ -f "tests/integration/$extra.py" ] && tests+=("$extra")
  done
fi
export SLUICE_BIN="$PWD/build-tsan/sluice" SLUICE_SOURCE_DIR="$PWD" SLUICE_TEST_WORKERS=2
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1}"
failed=()
for t in "${tests[@]}"; do
  echo "== $t (workers = 2, ThreadSanitizer)"
  /usr/bin/python3 "tests/integration/$t.py" >"build-tsan/$t.log" 2>&1 || failed+=("$t")
  tail -n 3 "build-tsan/$t.log"
done
if ((${#failed[@]})); then
  echo "failed: ${failed[*]} (logs in build-tsan/)"
  exit 1
fi
echo "ThreadSanitizer: no report in ${#tests[@]} test files"
