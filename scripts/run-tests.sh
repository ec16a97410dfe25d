#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing, build twice (normal, and with
# AddressSanitizer + UndefinedBehaviorSanitizer), run every test suite in both, and print the
# totals as the last line: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
# Logs of this run stay with this checkout (several checkouts may run the suite at once).
LOGDIR=$SRC/.run-logs
mkdir -p "$LOGDIR"

bash scripts/setup-deps.sh || { echo "setup-deps failed"; echo "0 passed, 1 failed"; exit 1; }

SHARED=${KEGBOT_SHARED_DIR:-$SRC/../shared}
if [ ! -d "$SHARED/kegboard-vectors" ]; then
  echo "run-tests: $SHARED/kegboard-vectors not found (the shared/ folder must sit beside the checkout)"
  echo "0 passed, 1 failed"
  exit 1
fi

declare -A BUILDS=(
  [build]=""
  [build-asan]="-Db_sanitize=address,undefined -Db_lundef=false"
)
ORDER=(build build-asan)

total_pass=0; total_fail=0; total_skip=0; status=0

for b in "${ORDER[@]}"; do
  echo "=== $b: configure and compile"
  if [ ! -f "$b/build.ninja" ]; then
    # shellcheck disable=SC2086
    meson setup "$b" -Dshared_dir="$SHARED" ${BUILDS[$b]} >"$LOGDIR/kegbot-$b-setup.log" 2>&1 \
      || { cat "$LOGDIR/kegbot-$b-setup.log"; echo "meson setup $b failed"; total_fail=$((total_fail+1)); status=1; continue; }
  fi
  if ! ninja -C "$b" >"$LOGDIR/kegbot-$b-build.log" 2>&1; then
    tail -50 "$LOGDIR/kegbot-$b-build.log"; echo "build $b failed"
    total_fail=$((total_fail+1)); status=1; continue
  fi

  echo "=== $b: meson test"
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
  slow=1; [ "$b" = build-asan ] && slow=3
  # The system suite boots a container: once is enough, in the normal build.
  suites=(--no-suite system)
  [ "$b" = build ] && suites=()
  KEGBOT_TEST_SLOW=$slow meson test -C "$b" --print-errorlogs --num-processes 2 "${suites[@]}" \
    --timeout-multiplier "$slow"

  # A test that failed is run once more on its own; one that then passes counts as passed but is
  # named as FLAKY on the output, so that it is seen and fixed rather than hidden.
  cp "$b/meson-logs/testlog.json" "$b/meson-logs/testlog-first.json" 2>/dev/null || true
  reruns=()
  i=0
  while read -r t; do
    [ -n "$t" ] || continue
    i=$((i+1))
    echo "=== $b: re-running $t"
    KEGBOT_TEST_SLOW=$slow meson test -C "$b" --no-rebuild --print-errorlogs --timeout-multiplier "$slow" "$t" >"$LOGDIR/kegbot-$b-rerun-$i.log" 2>&1
    tail -n 3 "$LOGDIR/kegbot-$b-rerun-$i.log"
    cp "$b/meson-logs/testlog.json" "$b/meson-logs/testlog-rerun-$i.json"
    reruns+=("$b/meson-logs/testlog-rerun-$i.json")
  done < <(/usr/bin/python3 scripts/test-results.py --failed "$b/meson-logs/testlog-first.json")
  read -r p f s < <(/usr/bin/python3 scripts/test-results.py --summary "$b/meson-logs/testlog-first.json" "${reruns[@]}")
  echo "=== $b: $p passed, $f failed, $s skipped"
  total_pass=$((total_pass+p)); total_fail=$((total_fail+f)); total_skip=$((total_skip+s))
done

[ "$total_fail" -gt 0 ] && status=1
echo "${total_pass} passed, ${total_fail} failed, ${total_skip} skipped"
exit $status
