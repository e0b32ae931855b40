#!/usr/bin/env bash
# Builds the Debian package: a RelWithDebInfo build without sanitizers and without the tests in
# build-pkg/ (or $SLUICE_PKG_BUILD_DIR), with Debian's hardening flags, then CPack. Prints the
# .deb's path on the last line. Checks it with lintian when lintian is installed
# (packaging/setup.sh test installs it).
# Usage: packaging/deb.sh [--no-lintian]
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
build=${SLUICE_PKG_BUILD_DIR:-$src/build-pkg}
lint=1
[ "${1:-}" = "--no-lintian" ] && lint=0

# dpkg-buildflags: -O2 -g, -fstack-protector-strong, _FORTIFY_SOURCE, -z relro/now, as a
# Debian package is built.
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
CXXFLAGS="$(dpkg-buildflags --get CXXFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
LDFLAGS="$(dpkg-buildflags --get LDFLAGS)"
export CFLAGS CXXFLAGS LDFLAGS

cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_TESTS=OFF \
  -DSLUICE_SANITIZE=OFF -DSLUICE_TSAN=OFF -DSLUICE_FUZZ=OFF >/dev/null
ninja -C "$build" -j2 sluice sluice_manpages
(cd "$build" && cpack -G DEB >/dev/null)
deb=$(ls -t "$build"/sluice_*.deb | head -1)

dpkg-deb --info "$deb" >&2
dpkg-deb --contents "$deb" >&2
if [ "$lint" = 1 ] && command -v lintian >/dev/null; then
  # Errors fail the build; warnings and info are printed.
  lintian --fail-on error --display-info "$deb" >&2
fi
echo "$deb"
