#!/usr/bin/env bash
# The demo: kegbot_core standalone + a simulated Kegboard (kegboard_sim) + kegboard_daemon.
# Pours one anonymous drink and one authenticated drink (an RFID swipe opens the valve), lets a
# CO2 trickle run that the ghost-pour filter keeps out of the drinks, prints what was recorded,
# and stops everything cleanly. Installs and builds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-deps.sh
if [ ! -f build/build.ninja ]; then
  meson setup build >/dev/null
fi
ninja -C build >/dev/null
echo "Built. Starting the demo."
echo

B=build
T=$(mktemp -d /tmp/kegbot-demo.XXXXXX)
PORT=${KEGBOT_DEMO_PORT:-$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
pids=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

# Two taps; flow0's valve is relay0 of the board (its name comes from the serial number below).
cat > "$T/taps.ini" <<INI
[kegboard-1a2b3c4d.flow0]
name = Main Tap
ticks_per_ml = 2.2
relay_name = kegboard-1a2b3c4d.relay0

[kegboard-1a2b3c4d.flow1]
name = Guest Tap
ticks_per_ml = 2.2
INI
# Standalone auth: the RFID card 0415ab23cd belongs to "mikey".
cat > "$T/tokens.ini" <<INI
[core.rfid:0415ab23cd]
username = mikey
enabled = true
INI

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() {  # wait_for FILE REGEX SECONDS
  local i=0
  until grep -qE "$2" "$1" 2>/dev/null; do
    i=$((i+1)); [ $i -gt $(( $3 * 10 )) ] && { echo "demo: timed out waiting for '$2' in $1"; exit 1; }
    sleep 0.1
  done
}

step "kegbot_core (standalone, state in $T)"
$B/src/core/kegbot_core --state_dir="$T" --kb_core_bind_addr=127.0.0.1:$PORT --dbus=none \
  --taps_file="$T/taps.ini" --tokens_file="$T/tokens.ini" 2> >(tee "$T/core.log" >&2) &
pids+=($!)
wait_for "$T/core.log" "Starting server on" 10

step "kegboard_sim (a Kegboard on a pseudo-terminal at $T/ttyKB0)"
mkfifo "$T/sim.in"
$B/src/tools/kegboard_sim --link="$T/ttyKB0" --serial_number=KB-0000-0000-1A2B3C4D \
  --thermo=thermo-6b0316621d4cff28=4.5 < "$T/sim.in" > "$T/sim.out" 2>&1 &
pids+=($!)
exec 3>"$T/sim.in"
wait_for "$T/sim.out" "LINK path=" 10

step "kegboard_daemon"
$B/src/kegboard/kegboard_daemon --kegboard_device="$T/ttyKB0" --kb_core_addr=127.0.0.1:$PORT \
  2> >(tee "$T/daemon.log" >&2) &
pids+=($!)
wait_for "$T/daemon.log" "Found a Kegboard" 15

step "An anonymous pour: 770 ticks (350 mL) on the Guest Tap over 3 s"
echo "pour flow1 770 3" >&3
wait_for "$T/drinks.log" '"meter_name":"kegboard-1a2b3c4d.flow1"' 30

step "mikey swipes his card and pours 1100 ticks (500 mL) on the Main Tap; the valve opens"
echo "auth core.rfid 0415ab23cd present" >&3
sleep 1
echo "pour flow0 1100 4" >&3
sleep 5
echo "auth core.rfid 0415ab23cd removed" >&3
wait_for "$T/drinks.log" '"username":"mikey"' 40
grep -E 'RELAY' "$T/sim.out" | sed 's/^/  sim: /' || true

step "CO2 in the Guest Tap's line: 20 s at 1.5 mL/s, nobody pours (the ghost filter keeps it out)"
echo "trace flow1 c=0.454545 20:1.5" >&3   # the tap's calibration: 2.2 ticks/mL
wait_for "$T/core.log" 'Ghost ticks on kegboard-1a2b3c4d.flow1' 40
grep -E 'Ghost ticks on' "$T/core.log" | sed 's/^/  core: /'

step "Recorded drinks ($T/drinks.log)"
/usr/bin/python3 - "$T/drinks.log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    print("  drink %-3s %-26s %7.1f mL  %5d ticks  %-10s %s" % (
        d["drink_id"], d["meter_name"], d["volume_ml"], d["ticks"], d["username"] or "(anonymous)", d["pour_time"]))
PY

step "Stopping everything"
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
echo "Done."
