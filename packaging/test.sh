#!/usr/bin/env bash
# Command two: install what is missing, build sluice and its tests with AddressSanitizer and
# UndefinedBehaviorSanitizer, and run the whole suite (unit and integration) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
packaging/setup.sh test
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSLUICE_SANITIZE=ON >/dev/null
ninja -C build-asan -j2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir build-asan --output-on-failure --timeout 900 "$@"
