"""Helpers for the Kegboard host integration tests: KBSP frames built by hand (for the sim's `raw`
command and for pty boards), a pty that stands in for a board, and starting kegboard_daemon."""
import os
import random
import struct
import threading
import tty

import kbtest

PREFIX = b"KBSP v1:"


def crc16_kermit(data, crc=0):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def frame(message_id, payload, crc=None, trailer=b"\r\n", length=None):
    head = PREFIX + struct.pack("<HH", message_id, len(payload) if length is None else length) + payload
    if crc is None:
        crc = crc16_kermit(head)
    return head + struct.pack("<H", crc) + trailer


def tlv(tag, value):
    return bytes([tag, len(value)]) + value


def meter_status(name, reading, **kw):
    return frame(0x10, tlv(1, name.encode()) + tlv(2, struct.pack("<I", reading)), **kw)


def hello(firmware_version=18, serial="", uptime_ms=0, uptime_days=0):
    s = serial.encode().ljust(30, b"\0")
    return frame(0x01, tlv(1, struct.pack("<H", firmware_version)) + tlv(3, s)
                 + tlv(4, struct.pack("<I", uptime_ms)) + tlv(5, struct.pack("<I", uptime_days)))


def hexs(b):
    return b.hex()


class PtyBoard:
    """A pseudo-terminal whose master side we drive: write bytes to the host, read what it sends.
    `noise=True` writes random bytes forever (a serial device that is not a Kegboard)."""

    def __init__(self, noise=False):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        # Holding the slave open keeps the master from reporting a hangup while the host has not
        # opened the port yet; nobody reads it, and the host flushes its input when it opens.
        os.set_blocking(self.master, False)
        self.received = b""
        self._stop = False
        self._noise = noise
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        import select
        rnd = random.Random(1234)
        while not self._stop:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                self.received += chunk
            if self._noise:
                # 'K' is avoided so that no prefix can ever form by chance.
                data = bytes(rnd.choice([c for c in range(256) if c != 0x4B]) for _ in range(64))
                try:
                    os.write(self.master, data)
                except OSError:
                    pass

    def write(self, data):
        os.write(self.master, data)

    def close(self):
        self._stop = True
        self._t.join(2)
        os.close(self.master)
        os.close(self.slave)


def daemon(link, core_port, *flags, env=None):
    args = [kbtest.binary("kegboard_daemon"), "--kegboard_device=" + link,
            "--kb_core_addr=%d" % core_port, "--probe_seconds=1"] + list(flags)
    return kbtest.Proc(args, env=env, name="kegboard_daemon")

