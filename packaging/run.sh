#!/usr/bin/env bash
# Command one: install what is missing, build sluice, start the demo backend, and run sluice in
# front of it with conf/examples/demo.toml. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
packaging/setup.sh run
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_TESTS=OFF >/dev/null
ninja -C build -j2 sluice

backend_pid=""
sluice_pid=""
cleanup() {
  for pid in $sluice_pid $backend_pid; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
/usr/bin/python3 packaging/demo/backend.py --port 9001 &
backend_pid=$!
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/9001) 2>/dev/null && break
  sleep 0.1
done

cat <<MSG

  sluice is starting in front of the demo backend (127.0.0.1:9001).
    browser:  http://127.0.0.1:8080/          (a page with a live WebSocket through sluice)
    curl:     curl -i http://127.0.0.1:8080/hello
    admin:    curl http://127.0.0.1:9901/api/status   (also /metrics, POST /api/reload)
  Ctrl-C stops sluice and the demo backend.

MSG
build/sluice --config conf/examples/demo.toml &
sluice_pid=$!
wait "$sluice_pid"
