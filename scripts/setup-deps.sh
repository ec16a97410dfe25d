#!/usr/bin/env bash
# Install the Debian 12 packages needed to build kegbot-core-c and run its test suite.
# Installs only what is missing; safe to run again. Needs root (or sudo) for apt-get.
set -euo pipefail

PKGS=(
  # build
  build-essential meson ninja-build pkg-config
  # the release build takes its hardening flags from dpkg-buildflags
  dpkg-dev
  libsystemd-dev libudev-dev libcurl4-openssl-dev libjansson-dev libmosquitto-dev
  # sound_server: ALSA playback, libsndfile decoding (WAV, FLAC, Ogg)
  libasound2-dev libsndfile1-dev
  # sanitizer/fuzzer builds
  clang libclang-rt-dev
  # test tooling
  python3 python3-dbus dbus dbus-bin socat util-linux systemd procps
  umockdev libumockdev-dev gir1.2-umockdev-1.0 python3-gi curl iproute2 groff-base
  # kegbot_mqtt's tests: a real broker, its clients, a test CA; the stub core runs on GLib
  mosquitto mosquitto-clients openssl
  # the event backend's clock test (scenario 32): the core's wall clock stepped under it
  faketime
  # rfid_daemon's FUSE stand-in for a PhidgetRFID / evdev reader
  libfuse3-dev fuse3
  # systemd/udev integration tests and the system (container) test
  udev libdbus-1-dev debootstrap systemd-container
  # the Debian packages (scripts/build-debs.sh) and their checks (tests/packaging, the boot test)
  debhelper dpkg-dev fakeroot lintian binutils
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-deps: all packages present"
  exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "setup-deps: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-deps: done"
