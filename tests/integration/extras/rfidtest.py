"""Helpers for the rfid_daemon tests: the daemon itself with a notify socket and a fake core, and the
stand-ins for readers of rfid-readers.md section 14.1 - the FUSE PhidgetRFID / evdev node
(fake-hidraw), an ID-12 on a pty, a keyboard-wedge reader behind a FIFO - plus the bytes and records
those readers send."""
import os
import re
import shutil
import struct
import subprocess
import termios
import time
import tty
import unittest

import kbtest

# Key codes of <linux/input-event-codes.h> (the kernel's, independent of the daemon's table).
EV_SYN, EV_KEY, EV_MSC = 0, 1, 4
SYN_REPORT, SYN_DROPPED = 0, 3
MSC_SCAN = 4
KEY_ENTER, KEY_LEFTSHIFT, KEY_SPACE = 28, 42, 57
DIGIT_KEYS = {"1": 2, "2": 3, "3": 4, "4": 5, "5": 6, "6": 7, "7": 8, "8": 9, "9": 10, "0": 11}
LETTER_KEYS = dict(zip("qwertyuiop", range(16, 26)))
LETTER_KEYS.update(zip("asdfghjkl", range(30, 39)))
LETTER_KEYS.update(zip("zxcvbnm", range(44, 51)))


def id12_frame(card, checksum=None, crlf=True):
    """The 16 bytes of an ID-12 frame for a 10-hex-digit card (checksum computed unless given)."""
    data = bytes.fromhex(card)
    x = 0
    for b in data:
        x ^= b
    cs = "%02X" % (x if checksum is None else checksum)
    return b"\x02" + card.upper().encode() + cs.encode() + (b"\r\n" if crlf else b"") + b"\x03"


def input_event(type_, code, value):
    """One native struct input_event (64-bit: 24 bytes)."""
    now = time.time()
    return struct.pack("llHHi", int(now), int((now % 1) * 1e6), type_, code, value)


def typed(text, enter=True):
    """The records a keyboard-wedge reader sends for a line: a scan code, press, SYN, release, SYN per
    key, Shift around capitals, then Enter."""
    out = b""
    for ch in text + ("\n" if enter else ""):
        shift = ch.isupper()
        c = ch.lower()
        code = KEY_ENTER if ch == "\n" else KEY_SPACE if ch == " " else DIGIT_KEYS.get(c) or LETTER_KEYS[c]
        if shift:
            out += input_event(EV_KEY, KEY_LEFTSHIFT, 1) + input_event(EV_SYN, SYN_REPORT, 0)
        out += input_event(EV_MSC, MSC_SCAN, 0x70000 + code)
        out += input_event(EV_KEY, code, 1) + input_event(EV_SYN, SYN_REPORT, 0)
        out += input_event(EV_KEY, code, 0) + input_event(EV_SYN, SYN_REPORT, 0)
        if shift:
            out += input_event(EV_KEY, KEY_LEFTSHIFT, 0) + input_event(EV_SYN, SYN_REPORT, 0)
    return out


def token_event(token, status, meter="__all_taps__"):
    return {"meter_name": meter, "auth_device_name": "core.rfid", "token_value": token, "status": status}


class Rfid(kbtest.Proc):
    """rfid_daemon with its own notify socket, talking to a fake core (or to a port nothing listens on)."""

    def __init__(self, tmp, *flags, port, env=None, name="rfid_daemon", prefix=None):
        self.notify = kbtest.NotifySocket(tmp, "%s-notify-%d" % (name, time.monotonic_ns()))
        full_env = dict(self.notify.env())
        full_env.update(env or {})
        args = list(prefix or []) + [kbtest.binary("rfid_daemon"), "--kb_core_addr=127.0.0.1:%d" % port] + list(flags)
        super().__init__(args, env=full_env, name=name)

    def close(self):
        self.kill()
        self.notify.close()


class FakeHidraw(kbtest.Proc):
    """fake-hidraw (tests/integration/extras/fake-hidraw.c) mounted on a fresh directory: a PhidgetRFID
    at self.path (mnt/hidraw0), or with evdev=True a keyboard-wedge evdev node (mnt/event0)."""

    @staticmethod
    def usable():
        """None if FUSE stand-ins can run here, else why not."""
        helper = os.environ.get("KEGBOT_FAKE_HIDRAW", "")
        if not helper:
            return "fake-hidraw is not built (libfuse3-dev was missing when the build was configured)"
        if os.geteuid() != 0:
            return "needs root (FUSE mounts)"
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            return "/dev/fuse is not available"
        if not shutil.which("fusermount3"):
            return "fusermount3 is not installed (package fuse3)"
        return None

    def __init__(self, tmp, *flags, evdev=False):
        why = self.usable()
        if why:
            raise unittest.SkipTest(why)
        n = 0
        while os.path.exists(os.path.join(tmp, "mnt%d" % n)):
            n += 1
        self.mnt = os.path.join(tmp, "mnt%d" % n)
        os.mkdir(self.mnt)
        self.path = os.path.join(self.mnt, "event0" if evdev else "hidraw0")
        args = [os.environ["KEGBOT_FAKE_HIDRAW"]] + list(flags) + (["--evdev"] if evdev else []) + [self.mnt]
        super().__init__(args, stdin=True, name="fake-hidraw")
        try:
            self.wait_line(r"^ready$", key="stdout", timeout=10)
        except AssertionError:
            self.unmount()
            raise unittest.SkipTest("the FUSE mount failed: %s" % " | ".join(self.output("stderr"))[-500:])

    def cmd(self, text):
        n = self.count("stdout")
        self.write(text + "\n")
        self.wait_line(r"^ok " + re.escape(text) + "$", key="stdout", start=n)

    def sync(self):
        """Every line the stand-in printed before now has been read (a "nothing was written" check
        looks at outs() after this)."""
        self.cmd("sync")

    def outs(self):
        return [l[4:] for l in self.output("stdout") if l.startswith("out ")]

    def count_lines(self, line):
        return self.output("stdout").count(line)

    def wait_out(self, hexbytes, start=0, timeout=5.0):
        kbtest.wait_until(lambda: hexbytes in self.outs()[start:], timeout=timeout,
                          what="write %s to the fake reader" % hexbytes)

    def unmount(self):
        self.kill()
        # auto_unmount has usually done it already; this is the fallback.
        subprocess.run(["fusermount3", "-u", "-q", self.mnt], capture_output=True)

    def close(self):
        self.unmount()


class PtyReader:
    """An ID-12 on a pty: the daemon gets self.path (the slave), the test writes to the master.
    Closing the master is the unplug."""

    def __init__(self):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        # Nobody else holds the slave: the daemon's open and close are the only ones.
        self._slave = slave

    def release_slave(self):
        os.close(self._slave)
        self._slave = None

    def send(self, data):
        os.write(self.master, data)

    def termios(self):
        fd = os.open(self.path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            return termios.tcgetattr(fd)
        finally:
            os.close(fd)

    def close(self):
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if self.master is not None:
            os.close(self.master)
            self.master = None


class FifoKeyboard:
    """A keyboard-wedge reader behind a FIFO: opened read-write by the test first (the daemon never sees
    end of file early), records written into it. Closing it is the unplug (the daemon reads 0)."""

    def __init__(self, tmp, name="kbd"):
        self.path = os.path.join(tmp, name)
        os.mkfifo(self.path)
        self.fd = os.open(self.path, os.O_RDWR)

    def type(self, text, enter=True):
        os.write(self.fd, typed(text, enter))

    def send(self, data):
        os.write(self.fd, data)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class RfidCase(kbtest.FakeCoreCase):
    """What every rfid_daemon test looks at: the TokenAuthEvents that reached a fake core."""

    def tokens(self, core=None):
        return [m["data"] for m in (core or self.core).events("TokenAuthEvent")]

    def wait_tokens(self, n, core=None, timeout=5.0):
        kbtest.wait_until(lambda: len(self.tokens(core)) >= n, timeout=timeout, what="%d token events" % n)
        return self.tokens(core)
