#!/usr/bin/env bash
# Build the Debian packages (kegbot-core, kegbot-extras, ...) of this checkout:
#   bash scripts/build-debs.sh [OUTDIR]        (default OUTDIR: ./debs)
# Copies the checkout's files (tracked and new, not ignored) to a scratch directory, runs
# `dpkg-buildpackage -us -uc -b` there (dpkg-buildpackage writes its results next to the source tree,
# so never in the checkout's parent) and moves the .deb, .changes and .buildinfo files to OUTDIR.
# OUTDIR/.source-hash records which sources they were built from: a second call for the same
# sources does nothing (the packaging test and the boot test share one build). The build log is
# OUTDIR/build.log. Needs the packages of scripts/setup-deps.sh (debhelper, dpkg-dev, fakeroot).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
OUT=$(realpath -m "${1:-$SRC/debs}")
mkdir -p "$OUT"

exec 7>"$OUT/.lock"
flock -w 1800 7

files() { git -C "$SRC" ls-files -z --cached --others --exclude-standard; }
# The hash of every file's path, mode and content (what the packages are built from).
hash=$(files | (cd "$SRC" && xargs -0 -r sha256sum --) | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.source-hash" ] && [ "$(cat "$OUT/.source-hash")" = "$hash" ] && ls "$OUT"/*.deb >/dev/null 2>&1; then
  echo "build-debs: packages in $OUT are up to date"
  exit 0
fi

WORK=$(mktemp -d /var/tmp/kegbot-debs.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/src"
files | (cd "$SRC" && xargs -0 -r cp --parents -a -t "$WORK/src" --)
rm -f "$OUT"/*.deb "$OUT"/*.changes "$OUT"/*.buildinfo "$OUT/.source-hash"
echo "build-debs: dpkg-buildpackage -us -uc -b (log: $OUT/build.log)"
if ! (cd "$WORK/src" && DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=2}" dpkg-buildpackage -us -uc -b) \
    >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "build-debs: dpkg-buildpackage failed"
  exit 1
fi
mv "$WORK"/*.deb "$WORK"/*.changes "$WORK"/*.buildinfo "$OUT"/
echo "$hash" >"$OUT/.source-hash"
ls "$OUT"/*.deb
