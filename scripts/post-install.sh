#!/bin/sh
# Run by `meson install` (meson.add_install_script in meson.build) after the files are in place:
#   post-install.sh SYSUSERS_CONF TMPFILES_CONF
# On a running system (DESTDIR empty) it does what the packages' postinst does, so that
# `systemctl start kegbot.target` works at once: create the user kegbot and the group kegbot-admin
# (systemd-sysusers), the directories and /etc/kegbot files (systemd-tmpfiles --create), and make
# systemd, udev and the system bus read the new units, rules and bus policy. Nothing is started.
# With DESTDIR set (a staging tree, a package build, a container image) it does nothing: sysusers.d
# and tmpfiles.d are applied at boot, or by the package's maintainer scripts.
set -eu

sysusers_conf=$1
tmpfiles_conf=$2

if [ -n "${DESTDIR:-}" ]; then
  echo "post-install: DESTDIR=$DESTDIR: nothing applied to this system"
  exit 0
fi
if [ -n "${MESON_INSTALL_DRY_RUN:-}" ]; then
  echo "post-install: dry run: would apply $sysusers_conf and $tmpfiles_conf and reload systemd, udev, D-Bus"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "post-install: not root: run as root: systemd-sysusers $sysusers_conf && systemd-tmpfiles --create $tmpfiles_conf" \
       "&& systemctl daemon-reload && udevadm control --reload && systemctl reload dbus" >&2
  exit 1
fi

echo "post-install: systemd-sysusers $sysusers_conf"
systemd-sysusers "$sysusers_conf"
echo "post-install: systemd-tmpfiles --create $tmpfiles_conf"
systemd-tmpfiles --create "$tmpfiles_conf"
if [ -d /run/systemd/system ]; then
  echo "post-install: systemctl daemon-reload"
  systemctl daemon-reload
fi
# udevd reads its rules lazily; tell it they changed (no udevd, e.g. in a container: nothing to do).
if [ -S /run/udev/control ]; then
  echo "post-install: udevadm control --reload"
  udevadm control --reload
fi
# The bus reads the policy (who may own org.kegbot.Core1) only when asked to reload.
if [ -S /run/dbus/system_bus_socket ]; then
  echo "post-install: reloading the system bus configuration"
  busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig
fi
echo "post-install: done; start the services with: systemctl start kegbot.target"
