"""Helpers for the systemd/udev integration tests: install the build into a scratch DESTDIR, read
this system's pkg-config directories, parse unit files.

Imported by the test_*.py scripts beside it (tests/integration is on PYTHONPATH for kbtest).
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import kbtest

BUILD_DIR = kbtest.BUILD_DIR
SOURCE_DIR = kbtest.SOURCE_DIR

UNITS = ["kegbot.target", "kegbot-core.socket", "kegbot-core.service", "kegboard-daemon@.service",
         "kegbot-boards.service"]
SERVICES = ["kegbot-core.service", "kegboard-daemon@.service", "kegbot-boards.service"]
# Accessory units (installed, not enabled) appear when src/extras builds their programs.
OPTIONAL_UNITS = ["lcd-daemon.service", "rfid-reader@.service", "sound-server.service", "kegbot-mqtt.service"]
SECURITY_LIMIT = 2.0


def need_tool(*names):
    for n in names:
        if not shutil.which(n):
            raise unittest.SkipTest("%s is not installed (scripts/setup-deps.sh installs it)" % n)


def pkgconfig_var(pkg, var, default=None):
    """A pkg-config variable of this system; 'default' (or a skip) when the .pc file is absent."""
    r = subprocess.run(["pkg-config", "--variable=" + var, pkg], capture_output=True, text=True)
    v = r.stdout.strip()
    if r.returncode != 0 or not v:
        if default is not None:
            return default
        raise unittest.SkipTest("pkg-config %s has no variable %s" % (pkg, var))
    return v


def meson_prefix_bindir():
    """(prefix, bindir) of the build, from its introspection data."""
    import json
    r = subprocess.run(["meson", "introspect", "--buildoptions", BUILD_DIR], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("meson introspect failed: " + r.stderr)
    opts = {o["name"]: o["value"] for o in json.loads(r.stdout)}
    prefix = opts["prefix"]
    bindir = opts["bindir"]
    return prefix, bindir if os.path.isabs(bindir) else os.path.join(prefix, bindir)


class Installed:
    """`meson install --destdir` of the build into a temporary directory (removed on exit)."""

    def __enter__(self):
        self.destdir = tempfile.mkdtemp(prefix="kegbot-install-")
        r = subprocess.run(["meson", "install", "-C", BUILD_DIR, "--no-rebuild", "--quiet",
                            "--destdir", self.destdir], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            shutil.rmtree(self.destdir, ignore_errors=True)
            raise AssertionError("meson install failed:\n" + r.stdout + r.stderr)
        self.prefix, self.bindir = meson_prefix_bindir()
        self.unitdir = pkgconfig_var("systemd", "systemdsystemunitdir")
        return self

    def path(self, p):
        """The DESTDIR path of an absolute installed path."""
        return os.path.join(self.destdir, p.lstrip("/"))

    def __exit__(self, *exc):
        shutil.rmtree(self.destdir, ignore_errors=True)

    def units(self):
        """Installed unit file names (the required ones first, then accessories present)."""
        d = self.path(self.unitdir)
        present = sorted(os.listdir(d)) if os.path.isdir(d) else []
        return [u for u in UNITS + OPTIONAL_UNITS if u in present]


def read_unit(path):
    """{section: [(key, value), ...]} of a unit file (comments and blank lines dropped, continuation
    lines joined)."""
    sections = {}
    cur = None
    pending = ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if pending:
                line = pending + line
                pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            m = re.match(r"^\[(.+)\]$", s)
            if m:
                cur = sections.setdefault(m.group(1), [])
                continue
            k, _, v = s.partition("=")
            cur.append((k.strip(), v.strip()))
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]
