#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing, build three times (normal; with
# AddressSanitizer + UndefinedBehaviorSanitizer; and a release build with Debian's hardening flags
# from dpkg-buildflags), run every test suite in the first two and the unit suite in the release
# build, and print the totals as the last line: "N passed, N failed, N flaky, N skipped".
#
# Counts are of test cases (scripts/test-results.py; tests/meson.build says what a case is). A test
# that failed is run once more on its own: a case that failed and then passed is FLAKY, and a flaky
# case fails the run unless tests/flaky-allowlist names its test. The exit status is 0 only when
# nothing failed and nothing was flaky outside the allow-list.
#
# KEGBOT_TEST_SKIP_SUITES="system root network" leaves those meson suites out (tests/meson.build:
# 'system' boots a container, 'root' needs root, 'network' downloads Debian packages); the
# summary names the suites left out.
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
# Logs of this run stay with this checkout (several checkouts may run the suite at once).
LOGDIR=$SRC/.run-logs
mkdir -p "$LOGDIR"
ALLOWLIST=tests/flaky-allowlist

totals() { echo "$1 passed, $2 failed, $3 flaky, $4 skipped"; }

bash scripts/setup-deps.sh || { echo "setup-deps failed"; totals 0 1 0 0; exit 1; }

declare -A BUILDS=(
  [build]=""
  [build-asan]="-Db_sanitize=address,undefined -Db_lundef=false"
  [build-release]="--buildtype=release -Dwerror=true"
)
ORDER=(build build-asan build-release)

skip_suites=()
for s in ${KEGBOT_TEST_SKIP_SUITES:-}; do
  skip_suites+=(--no-suite "$s")
done

total_pass=0; total_fail=0; total_flaky=0; total_skip=0; total_unallowed=0

for b in "${ORDER[@]}"; do
  echo "=== $b: configure and compile"
  if [ ! -f "$b/build.ninja" ]; then
    # The release build is the one a distribution makes: Debian's default hardening flags
    # (-O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong -Wformat -Werror=format-security, relro).
    flags=()
    [ "$b" = build-release ] && flags=(CFLAGS="$(dpkg-buildflags --get CFLAGS)"
      CPPFLAGS="$(dpkg-buildflags --get CPPFLAGS)" LDFLAGS="$(dpkg-buildflags --get LDFLAGS)")
    # shellcheck disable=SC2086
    env "${flags[@]}" meson setup "$b" ${BUILDS[$b]} >"$LOGDIR/kegbot-$b-setup.log" 2>&1 \
      || { cat "$LOGDIR/kegbot-$b-setup.log"; echo "meson setup $b failed"; total_fail=$((total_fail+1)); continue; }
  fi
  if ! ninja -C "$b" >"$LOGDIR/kegbot-$b-build.log" 2>&1; then
    tail -50 "$LOGDIR/kegbot-$b-build.log"; echo "build $b failed"
    total_fail=$((total_fail+1)); continue
  fi

  echo "=== $b: meson test"
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
  slow=1; [ "$b" = build-asan ] && slow=3
  # The system suite boots a container: once is enough, in the normal build. The release build
  # proves that the optimised, fortified code still does what the unit tests say.
  suites=("${skip_suites[@]}")
  [ "$b" = build ] || suites+=(--no-suite system)
  [ "$b" = build-release ] && suites=(--suite unit)
  rm -f "$b"/meson-logs/testlog-*.json
  KEGBOT_TEST_SLOW=$slow meson test -C "$b" --print-errorlogs --num-processes 2 "${suites[@]}" \
    --timeout-multiplier "$slow"
  cp "$b/meson-logs/testlog.json" "$b/meson-logs/testlog-first.json" 2>/dev/null || true

  # Every test that failed runs once more, on its own.
  reruns=()
  i=0
  while read -r t; do
    [ -n "$t" ] || continue
    i=$((i+1))
    echo "=== $b: re-running $t"
    KEGBOT_TEST_SLOW=$slow meson test -C "$b" --no-rebuild --print-errorlogs --timeout-multiplier "$slow" "$t" \
      >"$LOGDIR/kegbot-$b-rerun-$i.log" 2>&1
    tail -n 3 "$LOGDIR/kegbot-$b-rerun-$i.log"
    cp "$b/meson-logs/testlog.json" "$b/meson-logs/testlog-rerun-$i.json"
    reruns+=("$b/meson-logs/testlog-rerun-$i.json")
  done < <(/usr/bin/python3 scripts/test-results.py failed "$b" "$b/meson-logs/testlog-first.json")

  echo "=== $b: results"
  /usr/bin/python3 scripts/test-results.py summary "$b" "$ALLOWLIST" "$b/meson-logs/testlog-first.json" \
    "${reruns[@]}" >"$LOGDIR/kegbot-$b-results.txt"
  head -n -1 "$LOGDIR/kegbot-$b-results.txt" | sed "s|^|$b: |"
  read -r p f k s u < <(tail -n 1 "$LOGDIR/kegbot-$b-results.txt")
  if [ -z "${u:-}" ]; then
    echo "$b: cannot count the results"; p=0; f=1; k=0; s=0; u=0
  fi
  echo "=== $b: $(totals "$p" "$f" "$k" "$s")"
  total_pass=$((total_pass+p)); total_fail=$((total_fail+f)); total_flaky=$((total_flaky+k))
  total_skip=$((total_skip+s)); total_unallowed=$((total_unallowed+u))
done

allowed=$(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$ALLOWLIST" 2>/dev/null \
  | paste -sd ' ')
echo "flaky allow-list ($ALLOWLIST): ${allowed:-empty}"
[ -n "${KEGBOT_TEST_SKIP_SUITES:-}" ] && echo "suites left out (KEGBOT_TEST_SKIP_SUITES): $KEGBOT_TEST_SKIP_SUITES"
totals "$total_pass" "$total_fail" "$total_flaky" "$total_skip"
[ "$total_fail" -eq 0 ] && [ "$total_unallowed" -eq 0 ]
