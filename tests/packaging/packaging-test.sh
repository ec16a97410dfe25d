#!/usr/bin/env bash
# Packaging test: `dpkg-buildpackage -us -uc -b` of this checkout (scripts/build-debs.sh, into
# $KEGBOT_BUILD_DIR/debs, where the boot test installs them from) and lintian on the result:
#   - every package of debian/control is built, the programs without a compiler warning;
#   - lintian (--pedantic) reports no error and no warning that debian/*.lintian-overrides does not
#     explain (info tags are printed, not counted);
#   - the packages split the files without overlap, and each has what it must have;
#   - every library the programs dlopen() (ELF .note.dlopen) is in Depends/Recommends/Suggests as
#     its priority says (required/recommended/suggested);
#   - the postinst creates the users before the tmpfiles lines give them directories.
# Exit: 0 passed, 1 failed, 77 cannot run here (tools missing: scripts/setup-deps.sh installs them).
set -uo pipefail

say() { printf '%s\n' "$*"; }
for t in dpkg-buildpackage dh lintian fakeroot objcopy; do
  command -v "$t" >/dev/null || { say "SKIP: $t is not installed (scripts/setup-deps.sh)"; exit 77; }
done

SRC=${KEGBOT_SOURCE_DIR:?KEGBOT_SOURCE_DIR not set}
BUILD=${KEGBOT_BUILD_DIR:?KEGBOT_BUILD_DIR not set}
OUT=$BUILD/debs
FAILED=0
fail() { FAILED=$((FAILED+1)); say "FAIL: $*"; }
pass() { say "ok: $*"; }

SECONDS=0
if ! bash "$SRC/scripts/build-debs.sh" "$OUT"; then
  say "FAIL: dpkg-buildpackage -us -uc -b (log: $OUT/build.log)"
  exit 1
fi
pass "dpkg-buildpackage -us -uc -b [${SECONDS}s]"
# The package build has no -Werror (debian/rules), but the programs it ships build without a warning
# under Debian's flags.
warnings=$(grep -E '^\.\./src/.*warning:' "$OUT/build.log")
[ -z "$warnings" ] && pass "no compiler warning in src/ with dpkg-buildflags" || fail "compiler warnings in src/: $warnings"

deb() { ls "$OUT/$1"_*.deb 2>/dev/null | head -1; }
packages=$(sed -n 's/^Package: *//p' "$SRC/debian/control")
for p in $packages; do
  [ -n "$(deb "$p")" ] && pass "package $p built: $(basename "$(deb "$p")")" || fail "package $p was not built"
done

# lintian: errors and warnings fail the test (overridden ones are explained in debian/ and not shown).
changes=$(ls "$OUT"/*.changes | head -1)
lint=$(lintian --pedantic --display-info --fail-on error,warning "$changes" 2>&1)
lint_rc=$?
lint=$(grep -v '^running with root privileges' <<<"$lint")
counts=$(grep -oE '^[EWIP]:' <<<"$lint" | sort | uniq -c | tr -s ' \n' ' ')
say "lintian: ${counts:-no tags}"
[ -n "$lint" ] && sed 's/^/    /' <<<"$lint"
if [ $lint_rc -eq 0 ] && ! grep -qE '^[EW]:' <<<"$lint"; then
  pass "lintian: no errors, no unexplained warnings"
elif grep -qE '^[EW]:' <<<"$lint"; then
  fail "lintian reports errors or warnings without an override in debian/*.lintian-overrides"
else
  fail "lintian did not run (exit status $lint_rc)"
fi

# Contents: no file in two packages; the essentials where they belong.
list() { dpkg-deb -c "$(deb "$1")" | awk '{print $6}' | grep -v '/$' | sed 's|^\./|/|'; }
dups=$(for p in $packages; do list "$p"; done | sort | uniq -d)
[ -z "$dups" ] && pass "no file is in two packages" || fail "files in two packages: $dups"
expect() {
  local p=$1 f
  shift
  for f in "$@"; do
    list "$p" | grep -qx "$f" || fail "$p lacks $f"
  done
}
expect kegbot-core /usr/bin/kegbot_core /usr/bin/kegboard_daemon /usr/bin/kegboard_sim /usr/bin/test_flow \
  /usr/bin/kegbot_master /lib/systemd/system/kegbot.target /lib/systemd/system/kegbot-core.socket \
  /lib/systemd/system/kegbot-core.service /lib/systemd/system/kegboard-daemon@.service \
  /lib/udev/rules.d/70-kegboard.rules /usr/lib/sysusers.d/kegbot.conf /usr/lib/tmpfiles.d/kegbot.conf \
  /usr/share/dbus-1/system.d/org.kegbot.Core1.conf /usr/share/dbus-1/system-services/org.kegbot.Core1.service \
  /usr/share/man/man8/kegbot_core.8.gz
expect kegbot-extras /usr/bin/lcd_daemon /usr/bin/rfid_daemon /usr/bin/sound_server /usr/share/man/man8/lcd_daemon.8.gz \
  /lib/systemd/system/rfid-reader@.service /lib/udev/rules.d/70-kegbot-rfid.rules
expect kegbot-mqtt /usr/bin/kegbot_mqtt /lib/systemd/system/kegbot-mqtt.service /usr/share/man/man8/kegbot_mqtt.8.gz
[ $FAILED -eq 0 ] && pass "each package has its programs, units, udev rule, sysusers/tmpfiles, D-Bus files"

# Libraries opened with dlopen(): their packages are stated as the note's priority says.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for p in $packages; do
  mkdir -p "$TMP/$p"
  dpkg-deb -x "$(deb "$p")" "$TMP/$p"
  for b in "$TMP/$p"/usr/bin/*; do
    objcopy -O binary --only-section=.note.dlopen "$b" "$TMP/note" 2>/dev/null || continue
    [ -s "$TMP/note" ] || continue
    # The note's JSON, [{"feature":...,"priority":...,"soname":[...]}], after its ELF note header.
    while read -r prio soname; do
      lib=$(ldconfig -p | awk -v s="$soname" '$1 == s {print $NF; exit}')
      owner=$( [ -n "$lib" ] && dpkg -S "$(readlink -f "$lib")" 2>/dev/null | cut -d: -f1 | head -1)
      case $prio in required) field=Depends ;; recommended) field=Recommends ;; *) field=Suggests ;; esac
      stated=$(dpkg-deb -f "$(deb "$p")" "$field")
      if [ -z "$owner" ]; then
        fail "$p: $(basename "$b") dlopen()s $soname, which no installed package provides here"
      elif grep -qE "(^|[ ,|])$owner([ ,(|]|$)" <<<"$stated"; then
        pass "$p: $(basename "$b") dlopen()s $soname ($prio): $field: $owner"
      else
        fail "$p: $(basename "$b") dlopen()s $soname ($prio) but $field ('$stated') lacks $owner"
      fi
    done < <(/usr/bin/python3 -c '
import json, sys
data = open(sys.argv[1], "rb").read()
start = data.index(b"[")
for entry in json.loads(data[start:data.rindex(b"]") + 1].decode()):
    for s in entry["soname"]:
        print(entry.get("priority", "recommended"), s)' "$TMP/note")
  done
done

# The maintainer scripts: users first, then directories; units, udev and the bus reloaded.
dpkg-deb -e "$(deb kegbot-core)" "$TMP/ctl"
post="$TMP/ctl/postinst"
su=$(grep -nE '^[[:space:]]*systemd-sysusers ' "$post" | head -1 | cut -d: -f1)
tf=$(grep -nE '^[[:space:]]*systemd-tmpfiles ' "$post" | head -1 | cut -d: -f1)
if [ -n "$su" ] && [ -n "$tf" ] && [ "$su" -lt "$tf" ]; then
  pass "postinst: systemd-sysusers (line $su) before systemd-tmpfiles (line $tf)"
else
  fail "postinst: systemd-sysusers (line ${su:-none}) must come before systemd-tmpfiles (line ${tf:-none})"
fi
for w in 'daemon-reload' 'udevadm control --reload' 'ReloadConfig'; do
  grep -q -- "$w" "$post" || fail "postinst does not run $w"
done

say "packaging test: $FAILED failed in ${SECONDS}s"
[ $FAILED -eq 0 ]
