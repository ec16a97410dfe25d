#!/usr/bin/env bash
# System test: boot a minimal Debian 12 container with systemd-nspawn, `meson install` the build into
# it and drive the real systemd integration:
#   sysusers/tmpfiles at boot -> systemctl start kegbot.target -> socket activation of the core by the
#   first kegnet connection -> systemctl stop -> D-Bus activation by busctl -> kegboard-daemon@ttyKB0
#   on a kegboard_sim pty records a pour, seen with busctl -> rfid-reader@ on a FIFO-backed ID-12: a
#   swipe authenticates a user, the valve opens, the pour is recorded with the user -> restart loops end
#   at the start limit, a missing display is not retried -> a mutating call as nobody is denied ->
#   systemctl reload keeps the core -> kegbot-mqtt.service against a broker in the container (ready,
#   online, orderly stop, exit 2 not restarted) -> systemctl stop kegbot.target stops everything ->
#   starting the target again brings up the daemons of the board and the RFID reader still plugged
#   in (not of a device udev did not nominate) -> the core
#   restarted and killed in the middle of a pour records it exactly -> poweroff.
#
# The base rootfs is debootstrapped once (DEFAULT mirror of debootstrap) into $KEGBOT_SYSTEST_CACHE
# (default /var/cache/kegbot-systest/rootfs) and extended once with the runtime libraries the built
# programs need (rootfs-kegbot, its package list in .kegbot-packages); every run works on a copy.
# systemd is only ever booted by systemd-nspawn, never by unshare/chroot on the host.
# Exit: 0 all steps passed, 1 some failed, 77 cannot run here (not root, tools missing, no rootfs).
#
# Part 2 is what a user does: the Debian packages (scripts/build-debs.sh into $KEGBOT_BUILD_DIR/debs,
# shared with the packaging test) installed with apt into a second container that is already up,
# then systemctl start kegbot.target, a pour from kegboard_sim through kegboard-daemon@ttyKB0 seen by
# busctl tree and busctl monitor (DrinkRecorded), an operator (group kegbot-admin) who may stop a
# flow but not read the API key, an upgrade that restarts the running units and keeps the drinks,
# removal (state and settings stay) and purge (no kegbot unit, user or file left); then `meson install`
# on that running system (files, then scripts/post-install.sh) and the core answers at once.
set -uo pipefail

SKIP=77
say() { printf '%s\n' "$*"; }
skip() { say "SKIP: $*"; exit $SKIP; }

[ "$(id -u)" -eq 0 ] || skip "needs root (systemd-nspawn)"
for t in systemd-nspawn nsenter pgrep meson cp; do
  command -v "$t" >/dev/null || skip "$t is not installed (scripts/setup-deps.sh: systemd-container, util-linux, procps)"
done

BUILD=${KEGBOT_BUILD_DIR:?KEGBOT_BUILD_DIR not set}
CACHE=${KEGBOT_SYSTEST_CACHE:-/var/cache/kegbot-systest}
BASE=$CACHE/rootfs
KEGROOT=$CACHE/rootfs-kegbot
SECONDS=0
WORK=
NSPAWN_PID=
PID1=
FAILED=0
PASSED=0

cleanup_cgroups() {
  # systemd-nspawn without a systemd host leaves empty cgroups behind; remove them.
  local base d
  for base in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
    for d in payload supervisor; do
      [ -d "$base/$d" ] && find "$base/$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
  done
  rm -rf /run/systemd/nspawn
}

cleanup() {
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    [ -n "$PID1" ] && nsenter -t "$PID1" -a /bin/systemctl poweroff >/dev/null 2>&1
    # Polls for the exit of nspawn (bash cannot wait for a child with a timeout).
    for _ in $(seq 1 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
    kill -TERM "$NSPAWN_PID" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$NSPAWN_PID" 2>/dev/null
    wait "$NSPAWN_PID" 2>/dev/null
  fi
  cleanup_cgroups
  [ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ------------------------------------------------------------------ rootfs cache

# Debian packages providing the shared libraries of the programs we install.
runtime_packages() {
  local b l
  for b in "$BUILD"/src/core/kegbot_core "$BUILD"/src/kegboard/kegboard_daemon "$BUILD"/src/tools/kegboard_sim \
           "$BUILD"/src/mqtt/kegbot_mqtt "$BUILD"/src/extras/rfid/rfid_daemon "$BUILD"/src/extras/lcd/lcd_daemon; do
    ldd "$b" | awk '/=> \//{print $3}'
  done | sort -u | while read -r l; do
    dpkg -S "$l" 2>/dev/null || dpkg -S "$(readlink -f "$l")" 2>/dev/null || dpkg -S "/usr$l" 2>/dev/null \
      || say "unknown:$l"
  done | cut -d: -f1 | sort -u
}

ensure_rootfs() {
  local pkgs missing p tmp
  if [ ! -x "$BASE/lib/systemd/systemd" ]; then
    command -v debootstrap >/dev/null || skip "no cached rootfs at $BASE and debootstrap is not installed"
    mkdir -p "$CACHE"
    tmp=$CACHE/rootfs.new
    rm -rf "$tmp"
    say "debootstrap of a minimal bookworm into $BASE (once)"
    if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,udev bookworm "$tmp" \
        >"$CACHE/debootstrap.log" 2>&1; then
      rm -rf "$tmp"
      skip "debootstrap failed (no network?), see $CACHE/debootstrap.log"
    fi
    mv "$tmp" "$BASE"
  fi
  # libcurl4 is dlopen()ed by the core in server mode, so ldd does not list it; mosquitto and its
  # clients are the broker and the observer of the kegbot-mqtt.service step.
  pkgs="$(runtime_packages | tr "\n" " ") libcurl4 mosquitto mosquitto-clients"
  if grep -q "unknown:" <<<"$pkgs"; then
    say "cannot map these libraries to packages: $pkgs"
    return 1
  fi
  # The packages' dependencies (part 2 installs them without a network).
  pkgs="$pkgs $DEB_DEPENDS"
  missing=
  for p in $pkgs; do
    grep -qx "$p" "$KEGROOT/.kegbot-packages" 2>/dev/null || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  say "extending the cached rootfs with:$missing"
  tmp=$CACHE/rootfs-kegbot.new
  rm -rf "$tmp"
  cp -a "$BASE" "$tmp" || return 1
  # A plain command in a container (no --boot): apt-get inside the copy, the host's apt untouched.
  if ! systemd-nspawn -q --register=no --keep-unit --resolv-conf=copy-host -D "$tmp" /bin/sh -c \
      "apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends install $pkgs \
       && apt-get clean" >"$CACHE/apt.log" 2>&1; then
    cleanup_cgroups
    rm -rf "$tmp"
    skip "could not install$missing into the rootfs (no network?), see $CACHE/apt.log"
  fi
  cleanup_cgroups
  printf '%s\n' $pkgs >"$tmp/.kegbot-packages"
  rm -rf "$KEGROOT"
  mv "$tmp" "$KEGROOT"
}

# ------------------------------------------------------------------ helpers

# Run a command inside the container (all namespaces of its PID 1), with a clean environment.
IN() {
  nsenter -t "$PID1" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

pass() { PASSED=$((PASSED+1)); say "PASS [${SECONDS}s] $*"; }
fail() { FAILED=$((FAILED+1)); say "FAIL [${SECONDS}s] $*"; }

# wait_for SECONDS DESCRIPTION COMMAND...: retry until the command succeeds (DESCRIPTION documents
# the call only). A poll for an effect inside the container: nothing there can notify us.
wait_for() {
  local t=$1 end
  shift 2
  end=$((SECONDS + t))
  while [ $SECONDS -lt $end ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.3
  done
  "$@" >/dev/null 2>&1
}

state() { IN systemctl is-active "$1" 2>/dev/null; }
is_active() { [ "$(state "$1")" = active ]; }
is_inactive() { local s; s=$(state "$1"); [ "$s" = inactive ] || [ "$s" = failed ]; }

show_unit() {
  IN systemctl status --no-pager -l "$@" 2>&1 | sed 's/^/    /' | tail -40
  local u args=()
  for u in "$@"; do args+=(-u "$u"); done
  IN journalctl --no-pager -b -n 40 -o short-monotonic "${args[@]}" 2>&1 | sed 's/^/    /'
}

BUS=(busctl --system)
CORE=(org.kegbot.Core1 /org/kegbot/Core1)
MGR=org.kegbot.Core1.Manager

# ------------------------------------------------------------------ set up and boot

# The Debian packages for part 2 (built once per source state; the packaging test shares them).
DEBS=$BUILD/debs
DEB_DEPENDS=
if bash "${KEGBOT_SOURCE_DIR:?KEGBOT_SOURCE_DIR not set}/scripts/build-debs.sh" "$DEBS" >"$BUILD/boot-test-debs.log" 2>&1; then
  # Their Depends (first alternative, no versions), except each other.
  DEB_DEPENDS=$(for d in "$DEBS"/kegbot-*.deb; do
      case $d in *-dbgsym_*) continue ;; esac
      dpkg-deb -f "$d" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g'
    done | grep -v '^kegbot-' | sort -u | tr '\n' ' ')
  say "packages built [${SECONDS}s]: $(cd "$DEBS" && ls kegbot-*.deb | grep -v dbgsym | tr '\n' ' ')"
else
  cat "$BUILD/boot-test-debs.log"
  fail "scripts/build-debs.sh: the packages for part 2 could not be built"
fi

# One preparer at a time (another build's test run may share the cache).
mkdir -p "$CACHE"
# One container at a time on this machine (nspawn payload cgroups, /run/systemd/nspawn).
exec 8>"$CACHE/.boot-lock"
command -v flock >/dev/null && flock -w 480 8
exec 9>"$CACHE/.lock"
command -v flock >/dev/null && flock -w 300 9
ensure_rootfs || { say "FAIL: rootfs preparation"; exit 1; }
command -v flock >/dev/null && flock -u 9
say "rootfs ready [${SECONDS}s]"

mkdir -p /var/tmp
WORK=$(mktemp -d /var/tmp/kegbot-systest.XXXXXX)
ROOT=$WORK/root
cp -a "$KEGROOT" "$ROOT" || { say "FAIL: copy of the rootfs"; exit 1; }
if ! meson install -C "$BUILD" --no-rebuild --quiet --destdir "$ROOT" >"$WORK/install.log" 2>&1; then
  cat "$WORK/install.log"; say "FAIL: meson install into the rootfs"; exit 1
fi
UNITDIR=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
# No udev in a container: a test copy of the template without the device binding.
mkdir -p "$ROOT/etc/systemd/system"
grep -v -e '^BindsTo=dev-%i.device' "$ROOT$UNITDIR/kegboard-daemon@.service" \
  | sed 's/^After=dev-%i.device /After=/' >"$ROOT/etc/systemd/system/kegboard-daemon@.service"
# rfid-reader@ likewise; its reader is a FIFO standing in for an ID-12, whose kind cannot be told from
# udev here, so the copy names it.
grep -v -e '^BindsTo=dev-%i.device' "$ROOT$UNITDIR/rfid-reader@.service" \
  | sed -e 's/^After=dev-%i.device /After=/' -e 's/--rfid_backend=auto/--rfid_backend=id12/' \
  >"$ROOT/etc/systemd/system/rfid-reader@.service"
# The core's configuration (standalone): an RFID card, and the simulated board's second tap with a
# valve (relay 1) for the authenticated pour. The first tap has none: its anonymous pour (step 5)
# would be a ghost on a tap whose valve the core keeps closed.
mkdir -p "$ROOT/etc/kegbot"
printf '[kegboard-est-0001.flow1]\nname = Guest Tap\nrelay_name = kegboard-est-0001.relay1\n' >"$ROOT/etc/kegbot/taps.ini"
printf '[core.rfid:0415ab23cd]\nusername = systest\n' >"$ROOT/etc/kegbot/tokens.ini"
printf -- '--tokens_file=/etc/kegbot/tokens.ini\n' >"$ROOT/etc/kegbot/kegbot_core.flags"
echo kegbot-systest >"$ROOT/etc/hostname"
say "installed into $ROOT [${SECONDS}s]"

# boot_container ROOT CONSOLE_LOG: boot ROOT with systemd-nspawn until systemd reports the system up;
# sets NSPAWN_PID and PID1 (cleanup powers it off). Returns 1 when it did not boot.
boot_container() {
  local root=$1 console=$2 c sys
  systemd-nspawn --boot --register=no --keep-unit --private-network --console=passive -q \
    -D "$root" >"$console" 2>&1 &
  NSPAWN_PID=$!
  # The container's PID 1 is the child of systemd-nspawn that runs systemd (an intermediate child
  # exists briefly first), and it answers once its private socket exists.
  PID1=
  for _ in $(seq 1 300); do
    for c in $(pgrep -P "$NSPAWN_PID"); do
      [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ] && PID1=$c
    done
    [ -n "$PID1" ] && IN test -S /run/systemd/private 2>/dev/null && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$PID1" ] || { cat "$console"; say "FAIL: the container did not start"; return 1; }
  sys=$(IN timeout 90 systemctl is-system-running --wait 2>&1)
  if [ "$sys" = running ] || [ "$sys" = degraded ]; then
    pass "container booted (system state: $sys)"
    [ "$sys" = degraded ] && IN systemctl --failed --no-pager | sed 's/^/    /'
  else
    fail "container did not boot: '$sys'"; tail -30 "$console"; return 1
  fi
  return 0
}
boot_container "$ROOT" "$WORK/console.log" || exit 1

# ------------------------------------------------------------------ the steps

# 1. sysusers.d and tmpfiles.d applied at boot.
if IN id -nG kegbot 2>/dev/null | grep -qw dialout && IN test -d /var/lib/kegbot -a -d /run/kegbot -a -d /var/log/kegbot \
    && [ "$(IN stat -c %U /var/lib/kegbot)" = kegbot ]; then
  pass "kegbot user (in dialout) and its directories created at boot"
else
  fail "kegbot user/directories missing: $(IN id kegbot 2>&1); $(IN ls -ld /var/lib/kegbot /run/kegbot /var/log/kegbot 2>&1)"
fi

# 2. The target starts the socket only.
IN systemctl start kegbot.target
if is_active kegbot.target && is_active kegbot-core.socket && is_inactive kegbot-core.service; then
  pass "systemctl start kegbot.target: socket listening, core not started yet"
else
  fail "after start kegbot.target: target=$(state kegbot.target) socket=$(state kegbot-core.socket) core=$(state kegbot-core.service)"
fi

# 2b. The producers' kegnet socket: group kegbot, mode 0660, made by the socket unit.
sockinfo=$(IN stat -c '%F %a %U:%G' /run/kegbot/kegnet.sock 2>&1)
if [ "$sockinfo" = "socket 660 root:kegbot" ]; then
  pass "/run/kegbot/kegnet.sock: $sockinfo"
else
  fail "/run/kegbot/kegnet.sock: $sockinfo"
fi

# 3. Socket activation by the first kegnet connection (queued on the socket until the core takes it).
IN bash -c 'exec 3<>/dev/tcp/127.0.0.1/9805' >/dev/null 2>&1
if wait_for 20 "core active" is_active kegbot-core.service; then
  st=$(IN systemctl show -P StatusText kegbot-core.service)
  pass "socket activation: kegbot-core.service active after a kegnet connection (STATUS=$st)"
  [ -n "$st" ] || fail "kegbot-core.service sent no STATUS= text"
  wd=$(IN systemctl show -P WatchdogUSec kegbot-core.service)
  [ "$wd" != 0 ] && [ -n "$wd" ] && pass "watchdog armed ($wd), service stays active" || fail "no watchdog: $wd"
else
  fail "socket activation: core is $(state kegbot-core.service)"; show_unit kegbot-core.service kegbot-core.socket
fi

# 4. Bus activation after a stop.
IN systemctl stop kegbot-core.service
if is_inactive kegbot-core.service && is_active kegbot-core.socket; then
  out=$(IN timeout 30 "${BUS[@]}" get-property "${CORE[@]}" $MGR Version 2>&1)
  if [ $? -eq 0 ] && is_active kegbot-core.service; then
    pass "bus activation: busctl get-property Version = $out started kegbot-core.service"
  else
    fail "bus activation: busctl said '$out', core is $(state kegbot-core.service)"; show_unit kegbot-core.service dbus.service
  fi
else
  fail "systemctl stop kegbot-core.service: core=$(state kegbot-core.service) socket=$(state kegbot-core.socket)"
fi

# 5. A pour from a simulated Kegboard through kegboard-daemon@ttyKB0. The simulator reads commands
# from a FIFO (opened read-write, so it never sees end of file): the pour is sent once the core
# knows the board.
SIM_IN=/run/kegbot-systest-sim.in
IN mkfifo "$SIM_IN"
IN systemd-run --unit=kegbot-systest-sim --collect -q /bin/sh -c \
  "exec /usr/local/bin/kegboard_sim --link=/dev/ttyKB0 --serial_number=SYSTEST-0001 <>$SIM_IN" >/dev/null 2>&1
controller_connected() {
  local c
  c=$(IN "${BUS[@]}" --list tree org.kegbot.Core1 2>/dev/null | grep '^/org/kegbot/Core1/controller/' | head -1)
  [ -n "$c" ] && [ "$(IN "${BUS[@]}" get-property org.kegbot.Core1 "$c" org.kegbot.Core1.Controller Connected)" = "b true" ]
}
if wait_for 10 "sim link" IN test -L /dev/ttyKB0; then
  # What 70-kegboard.rules does on a real system: the port belongs to group dialout, mode 0660.
  IN sh -c 'p=$(readlink -f /dev/ttyKB0) && chgrp dialout "$p" && chmod 0660 "$p"'
  IN systemctl start kegboard-daemon@ttyKB0.service
  if wait_for 20 "daemon active" is_active kegboard-daemon@ttyKB0.service; then
    pass "kegboard-daemon@ttyKB0.service active (READY=1, STATUS=$(IN systemctl show -P StatusText kegboard-daemon@ttyKB0.service))"
  else
    fail "kegboard-daemon@ttyKB0.service is $(state kegboard-daemon@ttyKB0.service)"
    show_unit kegboard-daemon@ttyKB0.service kegbot-systest-sim.service
  fi
  if wait_for 20 "board known to the core" controller_connected; then
    IN sh -c "echo 'pour flow0 1000 1' >$SIM_IN"
  else
    fail "the core never saw the board as a connected controller"
  fi
  # The daemon came in through the Unix socket, as a producer with acknowledgements.
  hello=$(IN journalctl -b -t kegbot_core --no-pager -o cat | grep -m1 'Hello from unix:pid=.*kegboard_daemon (producer, acknowledged)')
  [ -n "$hello" ] && pass "kegboard_daemon on the Unix socket: $hello" \
    || fail "no Hello from kegboard_daemon on the Unix socket: $(IN journalctl -b -t kegbot_core --no-pager -o cat | grep Hello)"
  tap=
  ticks=
  find_tap() {
    tap=$(IN "${BUS[@]}" --list tree org.kegbot.Core1 2>/dev/null | grep '^/org/kegbot/Core1/tap/' | head -1)
    [ -n "$tap" ] || return 1
    ticks=$(IN "${BUS[@]}" get-property org.kegbot.Core1 "$tap" org.kegbot.Core1.Tap TotalTicks 2>/dev/null)
    [ "$ticks" = "t 1000" ]
  }
  if wait_for 15 "1000 ticks" find_tap; then
    meter=$(IN "${BUS[@]}" get-property org.kegbot.Core1 "$tap" org.kegbot.Core1.Tap MeterName | sed 's/^s "\(.*\)"$/\1/')
    pass "busctl: tap $meter ($tap) TotalTicks=1000"
    if out=$(IN "${BUS[@]}" call "${CORE[@]}" $MGR StopFlow s "$meter" 2>&1); then
      pass "StopFlow $meter by root allowed"
    else
      fail "StopFlow $meter by root: $out"
    fi
  else
    fail "pour not seen on D-Bus: tap='$tap' TotalTicks='$ticks'"
  fi
  # Ended by StopFlow, or else by the 10 s idle timeout.
  if wait_for 20 "drink" IN grep -Eq '"ticks": *1000' /var/lib/kegbot/drinks.log; then
    pass "drink of 1000 ticks recorded: $(IN tail -1 /var/lib/kegbot/drinks.log)"
  else
    fail "no drink recorded: $(IN tail -3 /var/lib/kegbot/drinks.log 2>&1)"
    show_unit kegboard-daemon@ttyKB0.service kegbot-core.service kegbot-systest-sim.service
  fi
else
  fail "kegboard_sim did not create /dev/ttyKB0"; show_unit kegbot-systest-sim.service
fi

# 5b. A port that is no Kegboard (a board that never speaks): the daemon gives up after its probe,
# exits 0 and is not restarted over and over.
IN systemd-run --unit=kegbot-systest-mute --collect -q /usr/local/bin/kegboard_sim --link=/dev/ttyKB1 --nostdin \
  --noreset_on_open --commands=hang >/dev/null 2>&1
if wait_for 10 "mute link" IN test -L /dev/ttyKB1; then
  IN sh -c 'p=$(readlink -f /dev/ttyKB1) && chgrp dialout "$p" && chmod 0660 "$p"'
  IN systemctl start --no-block kegboard-daemon@ttyKB1.service
  # Its decision is in the journal; then it has exited, and a restart would show as SubState
  # auto-restart (with the restart timer pending) rather than dead.
  gave_up() { IN journalctl -b -t kegboard_daemon --no-pager -o cat | grep -q "/dev/ttyKB1: not a kegboard"; }
  not_running() { local s; s=$(state kegboard-daemon@ttyKB1.service); [ "$s" = inactive ] || [ "$s" = failed ]; }
  if wait_for 20 "probe gave up" gave_up && wait_for 20 "daemon exited" not_running \
      && [ "$(IN systemctl show -P SubState kegboard-daemon@ttyKB1.service)" = dead ] \
      && [ "$(IN systemctl show -P NRestarts kegboard-daemon@ttyKB1.service)" = 0 ]; then
    pass "not a Kegboard: kegboard-daemon@ttyKB1 stopped without restarts ($(state kegboard-daemon@ttyKB1.service), $(IN journalctl -b -t kegboard_daemon --no-pager -o cat | grep -m1 'not a kegboard'))"
  else
    fail "not a Kegboard: kegboard-daemon@ttyKB1 is $(state kegboard-daemon@ttyKB1.service), restarts=$(IN systemctl show -P NRestarts kegboard-daemon@ttyKB1.service)"
    show_unit kegboard-daemon@ttyKB1.service
  fi
  IN systemctl reset-failed kegboard-daemon@ttyKB1.service 2>/dev/null
  IN systemctl stop kegbot-systest-mute.service 2>/dev/null
else
  fail "second kegboard_sim did not create /dev/ttyKB1"
fi

# 5c. An RFID reader: rfid-reader@ttyRFID0 reads an ID-12 frame from a FIFO; the core authenticates
# the card's user, opens the valve of the second tap (relay 1 on the simulated board), and the pour
# there is theirs.
tap1=/org/kegbot/Core1/tap/kegboard_2dest_2d0001_2eflow1
meter1=kegboard-est-0001.flow1
if IN mkfifo -m 0660 /dev/ttyRFID0 && IN chgrp dialout /dev/ttyRFID0 \
    && IN systemctl start rfid-reader@ttyRFID0.service && wait_for 20 "reader active" is_active rfid-reader@ttyRFID0.service; then
  pass "rfid-reader@ttyRFID0.service active (STATUS=$(IN systemctl show -P StatusText rfid-reader@ttyRFID0.service))"
  IN sh -c "printf '\\0020415AB23CD54\\r\\n\\003' >/dev/ttyRFID0"
  tag_seen() { IN journalctl -b -u rfid-reader@ttyRFID0.service --no-pager -o cat | grep -q 'Tag seen: 0415ab23cd'; }
  flow_user() {
    [ "$(IN "${BUS[@]}" get-property org.kegbot.Core1 "$tap1" org.kegbot.Core1.Tap FlowUsername 2>/dev/null)" = 's "systest"' ]
  }
  valve_open() { IN journalctl -b -u kegbot-systest-sim.service --no-pager -o cat | grep -q 'RELAY id=1 state=on cause=command'; }
  if wait_for 20 "tag seen" tag_seen && wait_for 20 "flow for systest" flow_user && wait_for 20 "valve open" valve_open; then
    pass "swipe: the reader saw the card, the core started a flow for systest, the valve opened (relay 1 on)"
    # The reader came in through the Unix socket, as a producer with acknowledgements.
    hello=$(IN journalctl -b -t kegbot_core --no-pager -o cat | grep -m1 'Hello from unix:pid=.*rfid_daemon (producer, acknowledged)')
    [ -n "$hello" ] && pass "rfid_daemon on the Unix socket: $hello" \
      || fail "no Hello from rfid_daemon on the Unix socket: $(IN journalctl -b -t kegbot_core --no-pager -o cat | grep Hello)"
    IN sh -c "echo 'pour flow1 500 1' >$SIM_IN"
    rfid_ticks() { [ "$(IN "${BUS[@]}" get-property org.kegbot.Core1 "$tap1" org.kegbot.Core1.Tap TotalTicks)" = "t 500" ]; }
    wait_for 20 "500 ticks" rfid_ticks
    IN "${BUS[@]}" call "${CORE[@]}" $MGR StopFlow s "$meter1" >/dev/null 2>&1
    user_drink() { IN grep -E '"username": *"systest"' /var/lib/kegbot/drinks.log | grep -Eq '"ticks": *500'; }
    if wait_for 20 "drink of systest" user_drink; then
      pass "authenticated pour recorded: $(IN grep systest /var/lib/kegbot/drinks.log | tail -1)"
    else
      fail "no drink for systest: $(IN tail -3 /var/lib/kegbot/drinks.log 2>&1)"
      show_unit rfid-reader@ttyRFID0.service kegbot-core.service
    fi
  else
    fail "swipe: tag seen=$(tag_seen && echo yes || echo no) flow user=$(IN "${BUS[@]}" get-property org.kegbot.Core1 "$tap1" org.kegbot.Core1.Tap FlowUsername 2>&1) valve=$(valve_open && echo open || echo closed)"
    show_unit rfid-reader@ttyRFID0.service kegbot-core.service kegbot-systest-sim.service
  fi
else
  fail "rfid-reader@ttyRFID0.service is $(state rfid-reader@ttyRFID0.service)"; show_unit rfid-reader@ttyRFID0.service
fi

# 5d. Restarts end. A reader node that is missing makes rfid_daemon exit 1, which is retried 5 s apart
# until systemd's start limit; lcd-daemon without its display exits 1, says why in one journal line,
# and is not retried at all.
IN systemctl start --no-block rfid-reader@ttyNOPE.service
# (systemd 252 keeps Result=exit-code here; the journal says the limit was hit.)
limit_hit() {
  [ "$(state rfid-reader@ttyNOPE.service)" = failed ] && IN journalctl -b -u rfid-reader@ttyNOPE.service --no-pager -o cat \
    | grep -q 'Start request repeated too quickly'
}
if wait_for 90 "start limit" limit_hit; then
  pass "rfid-reader@ttyNOPE: restarted $(IN systemctl show -P NRestarts rfid-reader@ttyNOPE.service) times, then stopped at the start limit ($(IN journalctl -b -u rfid-reader@ttyNOPE.service --no-pager -o cat | grep -m1 'ttyNOPE: No such file'))"
else
  fail "rfid-reader@ttyNOPE: Result=$(IN systemctl show -P Result rfid-reader@ttyNOPE.service) NRestarts=$(IN systemctl show -P NRestarts rfid-reader@ttyNOPE.service)"
  show_unit rfid-reader@ttyNOPE.service
fi
IN systemctl reset-failed rfid-reader@ttyNOPE.service 2>/dev/null
IN systemctl start --no-block lcd-daemon.service
lcd_failed() { [ "$(state lcd-daemon.service)" = failed ]; }
if wait_for 20 "lcd-daemon failed" lcd_failed && [ "$(IN systemctl show -P NRestarts lcd-daemon.service)" = 0 ] \
    && reason=$(IN journalctl -b -u lcd-daemon.service --no-pager -o cat | grep 'Cannot open display /dev/ttyUSB0'); then
  pass "lcd-daemon without its display: exit $(IN systemctl show -P ExecMainStatus lcd-daemon.service), not restarted ($reason)"
else
  fail "lcd-daemon without its display: $(state lcd-daemon.service), restarts=$(IN systemctl show -P NRestarts lcd-daemon.service)"
  show_unit lcd-daemon.service
fi
IN systemctl reset-failed lcd-daemon.service 2>/dev/null

# 6. Reads are open to all, methods to root and the operator group kegbot-admin only.
if out=$(IN setpriv --reuid=65534 --regid=65534 --clear-groups "${BUS[@]}" get-property "${CORE[@]}" $MGR Mode 2>&1); then
  pass "busctl get-property as nobody allowed ($out)"
else
  fail "busctl get-property as nobody failed: $out"
fi
out=$(IN setpriv --reuid=65534 --regid=65534 --clear-groups "${BUS[@]}" call "${CORE[@]}" $MGR StartFlow s kegboard.flow1 2>&1)
rc=$?
if [ $rc -ne 0 ] && grep -qi 'denied\|not allowed\|AccessDenied' <<<"$out"; then
  pass "mutating busctl call as nobody denied ($out)"
else
  fail "mutating call as nobody was not denied (rc=$rc): $out"
fi

# 6b. kegnet on TCP: a listener may be anyone, a producer only root or the service user. A meter
# reading from nobody is refused (in the journal), and the Unix socket is closed to nobody.
IN setpriv --reuid=65534 --regid=65534 --clear-groups bash -c \
  'exec 3<>/dev/tcp/127.0.0.1/9805 && printf "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"nobody.flow0\",\"reading\":7}}\n\n" >&3 && sleep 1' \
  >/dev/null 2>&1
refused() { IN journalctl -b -t kegbot_core --no-pager -o cat | grep -q 'Refusing MeterUpdate from 127\.0\.0\.1:[0-9]*: uid 65534 is not root or the service user'; }
if wait_for 10 "refusal logged" refused; then
  pass "MeterUpdate over TCP from nobody refused: $(IN journalctl -b -t kegbot_core --no-pager -o cat | grep -m1 'Refusing MeterUpdate')"
else
  fail "no refusal of nobody's MeterUpdate: $(IN journalctl -b -t kegbot_core --no-pager -o cat | tail -5)"
fi
if IN setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'exec 3<>/dev/tcp/127.0.0.1/9805' 2>/dev/null; then
  pass "kegnet TCP stays open to every local user (listeners)"
else
  fail "nobody could not connect to kegnet on TCP"
fi
out=$(IN setpriv --reuid=65534 --regid=65534 --clear-groups /usr/local/bin/test_flow --ticks=0 \
        --kb_core_addr=127.0.0.1:9805 2>&1)
if [ $? -ne 0 ] && grep -q 'The core does not accept producer messages from this program' <<<"$out"; then
  pass "test_flow as nobody over TCP: told it may not produce"
else
  fail "test_flow as nobody over TCP: $out"
fi
out=$(IN setpriv --reuid=65534 --regid=65534 --clear-groups /usr/local/bin/test_flow --ticks=0 \
        --kb_core_addr=unix:/run/kegbot/kegnet.sock 2>&1)
if [ $? -ne 0 ]; then
  pass "/run/kegbot/kegnet.sock refuses nobody"
else
  fail "nobody could produce on /run/kegbot/kegnet.sock: $out"
fi

# 7. systemctl reload sends SIGHUP and the core stays up.
pid=$(IN systemctl show -P MainPID kegbot-core.service)
reloads() { IN journalctl -b -t kegbot_core --no-pager -o cat | grep -c "Got signal 1, reloading"; }
n_reloads=$(reloads)
IN systemctl reload kegbot-core.service
reloaded() { [ "$(reloads)" -gt "$n_reloads" ]; }
wait_for 20 "the core handled SIGHUP" reloaded || fail "the core logged no reload after systemctl reload"
if is_active kegbot-core.service && [ "$(IN systemctl show -P MainPID kegbot-core.service)" = "$pid" ]; then
  pass "systemctl reload kept the core running (pid $pid)"
else
  fail "reload: core is $(state kegbot-core.service), pid $pid -> $(IN systemctl show -P MainPID kegbot-core.service)"
fi

# 8. kegbot-mqtt.service (installed, not enabled) under the real systemd, hardened as shipped: the
#    three lines a user adds (broker address, credential file, enable --now), a broker with
#    authentication on 127.0.0.1:18830, READY=1 with the core online, "online" retained; an orderly
#    stop leaves "offline"; configuration that cannot be read ends it with status 2, not restarted.
MQTT_PW=systest-s3cret
IN mkdir -p /etc/kegbot /run/kegbot-systest-broker
IN mosquitto_passwd -b -c /run/kegbot-systest-broker/passwd kegbot "$MQTT_PW"
IN sh -c 'printf "listener 18830 127.0.0.1\nallow_anonymous false\npassword_file /run/kegbot-systest-broker/passwd\npersistence false\nlog_dest stderr\nuser root\n" >/run/kegbot-systest-broker/mosquitto.conf'
IN systemd-run --unit=kegbot-systest-broker --service-type=simple /usr/sbin/mosquitto -c /run/kegbot-systest-broker/mosquitto.conf >/dev/null 2>&1
broker_up() { IN bash -c 'exec 3<>/dev/tcp/127.0.0.1/18830'; }
wait_for 20 "the test broker" broker_up || fail "the test broker did not start"
IN sh -c 'printf -- "--mqtt_host=127.0.0.1\n--mqtt_port=18830\n--mqtt_username=kegbot\n" >/etc/kegbot/kegbot_mqtt.flags'
IN sh -c "printf '%s\n' '$MQTT_PW' >/etc/kegbot/mqtt_password && chmod 600 /etc/kegbot/mqtt_password"
mqtt_status() {
  IN mosquitto_sub -h 127.0.0.1 -p 18830 -u kegbot -P "$MQTT_PW" -t 'kegbot/+/status' --retained-only -C 1 -W 3 2>/dev/null
}
if IN systemctl enable --now kegbot-mqtt.service >/dev/null 2>&1 && is_active kegbot-mqtt.service; then
  st=$(IN systemctl show -P StatusText kegbot-mqtt.service)
  connected() { IN systemctl show -P StatusText kegbot-mqtt.service | grep -q '^Connected to 127.0.0.1:18830; core online'; }
  # STATUS= says "Connected" as the session starts; "online" reaches the broker just after it.
  online() { [ "$(mqtt_status)" = online ]; }
  if wait_for 20 "connected, core online" connected && wait_for 10 "status online retained" online; then
    pass "kegbot-mqtt.service: READY=1, $(IN systemctl show -P StatusText kegbot-mqtt.service), status online retained"
  else
    fail "kegbot-mqtt.service: STATUS=$st, retained status '$(mqtt_status)'"; show_unit kegbot-mqtt.service
  fi
  if [ "$(IN stat -c %U /var/lib/kegbot-mqtt/state.json 2>/dev/null)" = kegbot ]; then
    pass "kegbot-mqtt state file in its StateDirectory, owned by kegbot"
  else
    fail "kegbot-mqtt state file: $(IN ls -la /var/lib/kegbot-mqtt/ 2>&1)"
  fi
else
  fail "systemctl enable --now kegbot-mqtt.service: $(state kegbot-mqtt.service)"; show_unit kegbot-mqtt.service
fi
IN systemctl stop kegbot-mqtt.service
res=$(IN systemctl show -P Result kegbot-mqtt.service)
if [ "$res" = success ] && [ "$(mqtt_status)" = offline ]; then
  pass "kegbot-mqtt.service stopped in order (Result=$res, status offline retained)"
else
  fail "kegbot-mqtt.service stop: Result=$res, retained status '$(mqtt_status)'"; show_unit kegbot-mqtt.service
fi
IN sh -c 'printf -- "--mqtt_tls\n--mqtt_ca_file=/etc/kegbot/no-such-ca.pem\n" >>/etc/kegbot/kegbot_mqtt.flags'
IN systemctl start kegbot-mqtt.service >/dev/null 2>&1
gave_up() { [ "$(state kegbot-mqtt.service)" = failed ]; }
wait_for 20 "kegbot-mqtt failed" gave_up
code=$(IN systemctl show -P ExecMainStatus kegbot-mqtt.service)
restarts=$(IN systemctl show -P NRestarts kegbot-mqtt.service)
if gave_up && [ "$code" = 2 ] && [ "$restarts" = 0 ] \
    && IN journalctl -b --no-pager -t kegbot_mqtt | grep -q 'Cannot read --mqtt_ca_file /etc/kegbot/no-such-ca.pem'; then
  pass "unreadable TLS file: kegbot-mqtt.service exited 2 with its reason and was not restarted"
else
  fail "unreadable TLS file: state=$(state kegbot-mqtt.service) status=$code restarts=$restarts"; show_unit kegbot-mqtt.service
fi
IN systemctl disable kegbot-mqtt.service >/dev/null 2>&1
IN systemctl reset-failed kegbot-mqtt.service 2>/dev/null
IN systemctl stop kegbot-systest-broker.service 2>/dev/null

# 9. Stopping the target stops everything.
IN systemctl stop kegbot.target
all_stopped() {
  local u
  for u in kegbot.target kegbot-core.socket kegbot-core.service kegboard-daemon@ttyKB0.service \
      rfid-reader@ttyRFID0.service; do
    is_inactive $u || return 1
  done
}
wait_for 20 "everything stopped" all_stopped
bad=
for u in kegbot.target kegbot-core.socket kegbot-core.service kegboard-daemon@ttyKB0.service \
    rfid-reader@ttyRFID0.service; do
  is_inactive $u || bad="$bad $u=$(state $u)"
done
if [ -z "$bad" ]; then
  pass "systemctl stop kegbot.target stopped the socket, the core, the Kegboard daemon and the RFID reader"
else
  fail "still running after stop kegbot.target:$bad"
fi
# (By identifier: journald may no longer map the last lines of an exited process to its unit.)
res=$(IN systemctl show -P Result kegbot-core.service)
# journald may file the process's last lines a moment after the unit is down.
stopped_logged() { IN journalctl -b --no-pager -t kegbot_core | grep -q 'Kegbot stopped'; }
if [ "$res" = success ] && wait_for 10 "last log line" stopped_logged; then
  pass "core stopped in order (Result=$res, 'Kegbot stopped.' in the journal)"
else
  fail "core stop: Result=$res; journal: $(IN journalctl -b --no-pager -t kegbot_core -n 5 2>&1)"
  show_unit kegbot-core.service
fi

# ------------------------------------------------------------------ restarts (issue 12)

# 10. Starting kegbot.target again brings up the daemon of a board that stayed plugged in: step 9
# stopped kegboard-daemon@ttyKB0 with the target (PartOf=), and no udev event comes for a board that
# never left. kegbot-boards.service starts one daemon per link in /dev/kegboard, which
# 70-kegboard.rules makes for every port it nominates (here the test makes it, as it plays udev's
# part for the port's group above).
IN sh -c 'mkdir -p /dev/kegboard && ln -sfn ../ttyKB0 /dev/kegboard/SYSTEST-0001'
# The RFID reader of step 5c likewise: kegbot-boards.service also starts the rfid-reader@ unit that
# 70-kegbot-rfid.rules put into the SYSTEMD_WANTS of every device it nominated (KEGBOT_RFID=1), as
# libudev finds them. The FIFO standing in for the reader has no sysfs device, so the test plays udev
# with the database entries of two ttys the container's sysfs has: one with what the rule leaves for
# the reader, one not nominated (no KEGBOT_RFID) whose rfid-reader@ttyNOTME must not be started.
udev_entry() {  # udev_entry TTY PROPERTY...: the /run/udev/data entry of /sys/class/tty/TTY
  local tty=$1 dev
  shift
  dev=$(IN cat "/sys/class/tty/$tty/dev") || return 1
  { echo I:1; printf 'E:%s\n' "$@"; } | IN sh -c "mkdir -p /run/udev/data && cat >/run/udev/data/c$dev"
}
rfid_ttys=$(IN sh -c 'for t in ttyS0 ttyS1 ttyS2 ttyS3 tty63 tty62 tty1 tty2; do [ -r /sys/class/tty/$t/dev ] && echo $t; done' | head -2)
set -- $rfid_ttys
if [ $# = 2 ] && udev_entry "$1" KEGBOT_RFID=1 SYSTEMD_WANTS=rfid-reader@ttyRFID0.service \
    && udev_entry "$2" SYSTEMD_WANTS=rfid-reader@ttyNOTME.service; then
  say "udev database: $1 is the RFID reader ttyRFID0, $2 is not nominated"
else
  fail "no two ttys in the container's sysfs for the udev database entries (found: $rfid_ttys)"
fi
set --
IN systemctl start kegbot.target
if wait_for 30 "daemon active again" is_active kegboard-daemon@ttyKB0.service && is_active kegbot-boards.service; then
  pass "systemctl start kegbot.target started kegboard-daemon@ttyKB0 for the board still plugged in"
else
  fail "after start kegbot.target: kegboard-daemon@ttyKB0 is $(state kegboard-daemon@ttyKB0.service), kegbot-boards is $(state kegbot-boards.service)"
  show_unit kegbot-boards.service kegboard-daemon@ttyKB0.service
fi
# (kegbot-boards is active once its run is over: every start request has gone out.)
if wait_for 30 "reader active again" is_active rfid-reader@ttyRFID0.service \
    && [ "$(state rfid-reader@ttyNOTME.service)" = inactive ]; then
  pass "systemctl start kegbot.target started rfid-reader@ttyRFID0 for the reader still plugged in, not the device udev did not nominate ($(IN journalctl -b -u kegbot-boards.service --no-pager -o cat | grep -m1 'Started rfid-reader@'))"
else
  fail "after start kegbot.target: rfid-reader@ttyRFID0 is $(state rfid-reader@ttyRFID0.service), rfid-reader@ttyNOTME is $(state rfid-reader@ttyNOTME.service)"
  show_unit kegbot-boards.service rfid-reader@ttyRFID0.service rfid-reader@ttyNOTME.service
fi
if wait_for 30 "board known to the core" controller_connected; then
  pass "the core knows the board again"
else
  fail "the core never saw the board after the target's restart"
fi
# A daemon restart (the target's stop and start) kept DTR up: the board was not reset by it.
boots=$(IN journalctl -b -u kegbot-systest-sim.service --no-pager -o cat | grep -c ' BOOT ')
if [ "$boots" = 1 ]; then
  pass "the board booted once: the daemon's restart did not reset it (HUPCL cleared)"
else
  fail "the board booted $boots times"
fi
IN systemctl stop kegbot.target
if wait_for 20 "daemon stopped" is_inactive kegboard-daemon@ttyKB0.service && is_inactive kegbot-boards.service; then
  pass "systemctl stop kegbot.target stopped kegboard-daemon@ttyKB0 and kegbot-boards again"
else
  fail "after stop kegbot.target: kegboard-daemon@ttyKB0 is $(state kegboard-daemon@ttyKB0.service)"
fi
IN systemctl start kegbot.target
wait_for 30 "daemon active" is_active kegboard-daemon@ttyKB0.service
wait_for 30 "board known to the core" controller_connected

# 11. The core restarted (SIGTERM) and killed (SIGKILL, restarted by Restart=on-failure) in the
# middle of a pour of 1320 ticks: the drinks recorded for each pour add up to 1320, exactly.
sum_ticks() {
  IN sh -c "grep -o '\"ticks\": *[0-9]*' /var/lib/kegbot/drinks.log 2>/dev/null | grep -o '[0-9]*\$'" \
    | awk '{ s += $1 } END { print s + 0 }'
}
flow_state() {
  local t
  t=$(IN "${BUS[@]}" --list tree org.kegbot.Core1 2>/dev/null | grep '^/org/kegbot/Core1/tap/' | head -1)
  [ -n "$t" ] && IN "${BUS[@]}" get-property org.kegbot.Core1 "$t" org.kegbot.Core1.Tap "$1" 2>/dev/null
}
pouring() { local v; v=$(flow_state FlowTicks); [ "${v#t }" -ge 400 ] 2>/dev/null; }
settled() {
  local s
  s=$(flow_state FlowState)
  [ "$(sum_ticks)" -ge "$1" ] && [ "$s" != 's "active"' ] && [ "$s" != 's "idle"' ]
}
for how in restart kill; do
  base=$(sum_ticks)
  pid=$(IN systemctl show -P MainPID kegbot-core.service)
  IN sh -c "echo 'pour flow0 1320 4' >$SIM_IN"
  if ! wait_for 20 "a third of the pour" pouring; then
    fail "$how: the pour never reached the core"; show_unit kegbot-core.service kegboard-daemon@ttyKB0.service
    continue
  fi
  if [ $how = restart ]; then
    IN systemctl restart kegbot-core.service
  else
    IN systemctl kill -s KILL kegbot-core.service
  fi
  newpid() { local p; p=$(IN systemctl show -P MainPID kegbot-core.service); [ "$p" != 0 ] && [ "$p" != "$pid" ]; }
  wait_for 30 "a new core" newpid
  if wait_for 60 "the pour recorded" settled $((base + 1320)); then
    got=$(( $(sum_ticks) - base ))
    if [ $got = 1320 ]; then
      pass "core $how mid-pour: the 1320-tick pour is recorded as exactly 1320 ticks ($(IN tail -2 /var/lib/kegbot/drinks.log | grep -o '"ticks": *[0-9]*' | tr '\n' ' '))"
    else
      fail "core $how mid-pour: recorded $got ticks of 1320"
    fi
  else
    fail "core $how mid-pour: recorded $(( $(sum_ticks) - base )) ticks of 1320 (tap $(flow_state FlowState))"
    show_unit kegbot-core.service kegboard-daemon@ttyKB0.service
  fi
done
IN systemctl stop kegbot.target

# ------------------------------------------------------------------ power off

IN systemctl poweroff >/dev/null 2>&1
for _ in $(seq 1 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$NSPAWN_PID" 2>/dev/null; then
  fail "container did not power off within 30 s"
else
  wait "$NSPAWN_PID" 2>/dev/null
  NSPAWN_PID=
  pass "container powered off"
fi

# ================================================================== part 2: the Debian packages

# A second container, up before anything is installed: what a user has when typing
# `apt install ./kegbot-*.deb`. (A board, the FIFO and the monitor are the test's, named systest-*.)
part2() {
  local root=$WORK/root-deb debs names p out out2 pid0 pid1 c tap meter left units u
  ls "$DEBS"/kegbot-core_*.deb >/dev/null 2>&1 || { fail "part 2: no packages to install"; return; }
  cleanup_cgroups
  cp -a "$KEGROOT" "$root" || { fail "part 2: copy of the rootfs"; return; }
  echo kegbot-systest-deb >"$root/etc/hostname"
  boot_container "$root" "$WORK/console-deb.log" || return
  mkdir -p "$root/var/tmp/debs"
  debs=
  names=
  for p in "$DEBS"/kegbot-*.deb; do
    case $p in *-dbgsym_*) continue ;; esac
    cp "$p" "$root/var/tmp/debs/" && debs="$debs /var/tmp/debs/$(basename "$p")" \
      && names="$names $(dpkg-deb -f "$p" Package)"
  done

  # Install: user, groups, directories, reloads; nothing started, nothing enabled.
  # shellcheck disable=SC2086
  if out=$(IN env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $debs 2>&1); then
    pass "apt-get install$debs on the running system"
  else
    fail "apt-get install$debs: $(tail -15 <<<"$out")"; return
  fi
  if IN id -nG kegbot 2>/dev/null | grep -qw dialout && IN getent group kegbot-admin >/dev/null \
      && [ "$(IN stat -c %U:%G:%a /var/lib/kegbot)" = kegbot:kegbot:750 ] && IN test -d /var/log/kegbot; then
    pass "installed: user kegbot (in dialout), group kegbot-admin, /var/lib/kegbot, /var/log/kegbot"
  else
    fail "after install: $(IN id kegbot 2>&1); $(IN getent group kegbot-admin); $(IN ls -ld /var/lib/kegbot /var/log/kegbot 2>&1)"
  fi
  # Every unit the packages ship, by the names in their file lists.
  units=$(for p in "$root"/var/tmp/debs/*.deb; do dpkg-deb -c "$p"; done \
    | sed -n 's|.*/lib/systemd/system/\([^/]*\.[a-z]*\)$|\1|p' | sort -u)
  left=
  for u in $units; do
    case $u in *@.*) continue ;; esac
    is_inactive "$u" || left="$left $u=$(state "$u")"
    case $(IN systemctl is-enabled "$u" 2>&1) in
      enabled*|alias|linked*) left="$left $u:enabled" ;;
    esac
  done
  if [ -n "$units" ] && [ -z "$left" ]; then
    pass "nothing started or enabled by the installation ($(echo $units))"
  else
    fail "after install:$left (units: $(echo $units))"
  fi

  # The one command.
  if IN systemctl start kegbot.target && is_active kegbot.target && is_active kegbot-core.socket; then
    pass "systemctl start kegbot.target"
  else
    fail "systemctl start kegbot.target: target=$(state kegbot.target) socket=$(state kegbot-core.socket)"
    show_unit kegbot.target kegbot-core.socket
  fi

  # Every DrinkRecorded on the bus, from now on (the monitor is up once it says so).
  IN systemd-run --unit=systest-monitor --collect -q -p StandardOutput=file:/run/systest-monitor.log \
    -p StandardError=journal busctl --system monitor \
    --match "type='signal',interface='org.kegbot.Core1.Manager',member='DrinkRecorded'" >/dev/null 2>&1
  monitoring() { IN journalctl -b -u systest-monitor.service --no-pager -o cat | grep -q 'Monitoring bus message stream'; }
  wait_for 15 "busctl monitor ready" monitoring || fail "busctl monitor did not start: $(state systest-monitor.service)"

  # A board: kegboard_sim on a pty, and the template instance on it (a copy without the device
  # binding, as in part 1: no udev here; removed before the purge).
  IN sh -c "grep -v -e '^BindsTo=dev-%i.device' /lib/systemd/system/kegboard-daemon@.service \
    | sed 's/^After=dev-%i.device /After=/' >/etc/systemd/system/kegboard-daemon@.service && systemctl daemon-reload"
  IN mkfifo /run/systest-sim.in
  IN systemd-run --unit=systest-sim --collect -q /bin/sh -c \
    "exec /usr/bin/kegboard_sim --link=/dev/ttyKB0 --serial_number=SYSTEST-0002 <>/run/systest-sim.in" >/dev/null 2>&1
  if ! wait_for 10 "sim link" IN test -L /dev/ttyKB0; then
    fail "kegboard_sim did not create /dev/ttyKB0"; show_unit systest-sim.service; return
  fi
  IN sh -c 'p=$(readlink -f /dev/ttyKB0) && chgrp dialout "$p" && chmod 0660 "$p"'
  IN systemctl start kegboard-daemon@ttyKB0.service
  if wait_for 20 "daemon active" is_active kegboard-daemon@ttyKB0.service && wait_for 20 "board known" controller_connected; then
    pass "a board appears: kegboard-daemon@ttyKB0.service active, its controller connected on D-Bus"
  else
    fail "board: kegboard-daemon@ttyKB0.service is $(state kegboard-daemon@ttyKB0.service)"
    show_unit kegboard-daemon@ttyKB0.service kegbot-core.service systest-sim.service; return
  fi

  # An operator: a person made one with `usermod -aG kegbot-admin` (README "Install").
  IN useradd --create-home alice && IN usermod -aG kegbot-admin alice
  IN sh -c "echo 'pour flow0 1000 1' >/run/systest-sim.in"
  if wait_for 15 "1000 ticks" find_tap; then
    meter=$(IN "${BUS[@]}" get-property org.kegbot.Core1 "$tap" org.kegbot.Core1.Tap MeterName | sed 's/^s "\(.*\)"$/\1/')
    out=$(IN "${BUS[@]}" tree org.kegbot.Core1 2>&1)
    if grep -q "$(basename "$tap")" <<<"$out" && grep -q '/controller/' <<<"$out"; then
      pass "busctl tree org.kegbot.Core1 shows the pour's tap ($tap, TotalTicks=1000) and the controller"
    else
      fail "busctl tree org.kegbot.Core1: $out"
    fi
    if out=$(IN runuser -u alice -- "${BUS[@]}" call "${CORE[@]}" $MGR StopFlow s "$meter" 2>&1); then
      pass "operator alice (kegbot-admin) may call StopFlow $meter"
    else
      fail "StopFlow by operator alice: $out"
    fi
  else
    fail "pour not seen on D-Bus: tap='$tap' TotalTicks='$ticks'"
  fi
  drink_signal() { IN grep -q 'Member=DrinkRecorded' /run/systest-monitor.log; }
  if wait_for 20 "DrinkRecorded" drink_signal && IN grep -Eq '"ticks": *1000' /var/lib/kegbot/drinks.log; then
    pass "busctl monitor saw DrinkRecorded; drinks.log: $(IN tail -1 /var/lib/kegbot/drinks.log)"
  else
    fail "no DrinkRecorded seen ($(IN sh -c 'wc -l </run/systest-monitor.log') monitor lines) or no drink: $(IN tail -2 /var/lib/kegbot/drinks.log 2>&1)"
    show_unit kegbot-core.service systest-monitor.service
  fi
  IN sh -c 'printf "s3cret-key-for-systest\n" >/etc/kegbot/api_key'
  out=$(IN runuser -u alice -- cat /etc/kegbot/api_key 2>&1)
  if [ $? -ne 0 ] && ! grep -q s3cret <<<"$out"; then
    pass "operator alice cannot read /etc/kegbot/api_key ($out)"
  else
    fail "operator alice read the API key: $out"
  fi
  IN sh -c ': >/etc/kegbot/api_key'
  out=$(IN runuser -u nobody -- "${BUS[@]}" call "${CORE[@]}" $MGR StopFlow s "$meter" 2>&1)
  [ $? -ne 0 ] && pass "nobody may not call StopFlow (${out:0:80})" || fail "nobody called StopFlow: $out"

  # Upgrade (the same version again: prerm/postinst upgrade paths): the running units restart,
  # the drinks stay.
  pid0=$(IN systemctl show -P MainPID kegbot-core.service)
  pid1=$(IN systemctl show -P MainPID kegboard-daemon@ttyKB0.service)
  drinks() { IN sh -c 'wc -l </var/lib/kegbot/drinks.log'; }
  c=$(drinks)
  # shellcheck disable=SC2086
  if out=$(IN env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall $debs 2>&1); then
    if is_active kegbot-core.service && [ "$(IN systemctl show -P MainPID kegbot-core.service)" != "$pid0" ] \
        && wait_for 20 "daemon back" is_active kegboard-daemon@ttyKB0.service \
        && [ "$(IN systemctl show -P MainPID kegboard-daemon@ttyKB0.service)" != "$pid1" ] \
        && [ -n "$c" ] && [ "$(drinks)" = "$c" ]; then
      pass "upgrade: kegbot-core.service and kegboard-daemon@ttyKB0 restarted, drinks.log kept ($c lines)"
    else
      fail "upgrade: core $(state kegbot-core.service) pid $pid0 -> $(IN systemctl show -P MainPID kegbot-core.service); daemon $(state kegboard-daemon@ttyKB0.service) pid $pid1 -> $(IN systemctl show -P MainPID kegboard-daemon@ttyKB0.service); drinks $c -> $(drinks)"
    fi
  else
    fail "apt-get install --reinstall: $(tail -15 <<<"$out")"
  fi

  # Remove: the units stop, state and settings stay.
  IN systemctl stop systest-sim.service systest-monitor.service 2>/dev/null
  IN rm -f /etc/systemd/system/kegboard-daemon@.service /run/systest-sim.in /run/systest-monitor.log
  # shellcheck disable=SC2086
  if out=$(IN env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q $names 2>&1); then
    left=
    for u in kegbot.target kegbot-core.socket kegbot-core.service kegboard-daemon@ttyKB0.service; do
      is_inactive $u || left="$left $u=$(state $u)"
    done
    if [ -z "$left" ] && IN test -s /var/lib/kegbot/drinks.log -a -d /etc/kegbot && IN id kegbot >/dev/null 2>&1; then
      pass "apt-get remove: units stopped; /var/lib/kegbot (drinks.log), /etc/kegbot and user kegbot kept"
    else
      fail "apt-get remove: running:$left; $(IN ls -la /var/lib/kegbot /etc/kegbot 2>&1 | head -8)"
    fi
  else
    fail "apt-get remove: $(tail -15 <<<"$out")"
  fi

  # Purge: no kegbot unit, user, group or file anywhere.
  # shellcheck disable=SC2086
  if out=$(IN env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $names 2>&1); then
    IN systemctl daemon-reload
    left=$(IN systemctl list-units --all --no-legend --plain 'kegbot*' 'kegboard*' 'lcd-daemon*' 'rfid-*' 'sound-server*' 2>&1)
    left="$left$(IN systemctl list-unit-files --no-legend 'kegbot*' 'kegboard*' 'lcd-daemon*' 'rfid-*' 'sound-server*' 2>&1 | grep -v '^0 unit files')"
    IN getent passwd kegbot && left="$left user kegbot"
    IN getent group kegbot && left="$left group kegbot"
    IN getent group kegbot-admin && left="$left group kegbot-admin"
    # (/.kegbot-packages: the test's rootfs cache, not the packages')
    left="$left$(IN find / -xdev \( -path /proc -o -path /sys -o -path /var/tmp/debs -o -path /.kegbot-packages \) -prune -o \
      \( -iname '*kegbot*' -o -iname '*kegboard*' -o -iname 'org.kegbot.*' \) -print 2>/dev/null | tr '\n' ' ')"
    left="$left$(IN find /run /tmp -xdev \( -iname '*kegbot*' -o -iname '*kegboard*' \) -print 2>/dev/null | tr '\n' ' ')"
    if [ -z "$(tr -d '[:space:]' <<<"$left")" ]; then
      pass "apt-get purge: no kegbot unit, user, group or file left"
    else
      fail "apt-get purge left: $left"
    fi
  else
    fail "apt-get purge: $(tail -15 <<<"$out")"
  fi

  # `meson install` on the running system, in its two halves: the files (meson install --destdir
  # into the container's tree: no meson inside), then the install script meson runs with DESTDIR
  # empty (scripts/post-install.sh, run inside). The core then starts at once on a bus call.
  local sysusers tmpfiles
  sysusers=$(pkg-config --variable=sysusersdir systemd 2>/dev/null || echo /usr/lib/sysusers.d)/kegbot.conf
  tmpfiles=$(pkg-config --variable=tmpfilesdir systemd 2>/dev/null || echo /usr/lib/tmpfiles.d)/kegbot.conf
  if ! meson install -C "$BUILD" --no-rebuild --quiet --destdir "$root" >"$WORK/install-running.log" 2>&1; then
    fail "meson install into the running container: $(tail -5 "$WORK/install-running.log")"; return
  fi
  cp "$KEGBOT_SOURCE_DIR/scripts/post-install.sh" "$root/var/tmp/post-install.sh"
  if out=$(IN sh /var/tmp/post-install.sh "$sysusers" "$tmpfiles" 2>&1) && IN systemctl start kegbot.target \
      && out2=$(IN timeout 30 "${BUS[@]}" get-property "${CORE[@]}" $MGR Version 2>&1) \
      && [ "$(IN systemctl show -P User kegbot-core.service)" = kegbot ] && is_active kegbot-core.service; then
    pass "meson install + post-install.sh on the running system: kegbot.target started, the core answers ($out2)"
  else
    fail "meson install on the running system: post-install said: $out; core $(state kegbot-core.service): ${out2:-}"
    show_unit kegbot-core.service
  fi
}
say "part 2: the Debian packages on a running system [${SECONDS}s]"
part2

say "system test: $PASSED passed, $FAILED failed in ${SECONDS}s"
[ $FAILED -eq 0 ]
