"""Helpers for the Kegboard host integration tests: KBSP frames built by hand (for the sim's `raw`
command and for pty boards), a pty that stands in for a board, and starting kegboard_daemon."""
import os
import random
import threading
import tty

import kbtest

PREFIX = kbtest.KBSP_PREFIX
crc16_kermit = kbtest.crc16_kermit
frame = kbtest.kbsp_frame
tlv = kbtest.kbsp_tlv
meter_status = kbtest.kbsp_meter_status
hello = kbtest.kbsp_hello


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

