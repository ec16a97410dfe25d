"""Helpers for the accessory programs' tests: emulated serial LCDs on a pty (CrystalFontz CFA-635
and Matrix Orbital 20x4) that decode what lcd_daemon writes into a 4x20 screen, a small
programmable HTTP server standing in for the Kegbot Server endpoints the extras read, and a
private session bus; test sounds and ALSA configurations for sound_server."""
import http.server
import json
import os
import re
import struct
import subprocess
import threading
import time
import tty

import kbtest

CFA_TRANSLATE = {ord("["): 0xFA, ord("\\"): 0xFB, ord("]"): 0xFC, ord("{"): 0xFD, ord("|"): 0xFE,
                 ord("_"): 0xC4, ord("$"): 0xA2, ord("^"): 0x1D}
CFA_UNTRANSLATE = {v: k for k, v in CFA_TRANSLATE.items()}


def crc_x25(data):
    """CRC-16/X-25, computed bit by bit (independent of the daemon's implementation)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def cfa_packet(type_, cmd, data=b""):
    body = bytes([(type_ << 6) | cmd, len(data)]) + bytes(data)
    c = crc_x25(body)
    return body + bytes([c & 0xFF, c >> 8])


class Display:
    """Base: a pty whose slave path the daemon opens; a thread decodes the master side."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.rows = [" " * 20 for _ in range(4)]
        self.backlight = None
        self.raw = bytearray()
        self.events = []        # ("clear",), ("backlight", on), ("row", n, text), ("bad_crc", bytes)
        self.pending = []       # (monotonic due time, bytes) replies not written yet
        self.cv = threading.Condition()
        self.stopped = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        import select
        while not self.stopped:
            with self.cv:
                due = self.pending[0][0] if self.pending else None
            timeout = 0.05 if due is None else max(0.0, min(0.05, due - time.monotonic()))
            r, _, _ = select.select([self.master], [], [], timeout)
            self._send_due()
            if not r:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                time.sleep(0.05)        # EIO while no one has the port open: back off, do not spin
                continue
            with self.cv:
                self.raw += chunk
                self._decode()
                self.cv.notify_all()
            self._send_due()

    def _send_due(self):
        """Writes the replies whose time has come, in order."""
        with self.cv:
            now = time.monotonic()
            while self.pending and self.pending[0][0] <= now:
                _, data = self.pending.pop(0)
                try:
                    os.write(self.master, data)
                except OSError:
                    pass
                self.cv.notify_all()

    def reply_later(self, data, delay=0.0):
        """Queues bytes for the daemon, after 'delay' seconds (and after what is queued already)."""
        due = time.monotonic() + delay
        if self.pending:
            due = max(due, self.pending[-1][0])
        self.pending.append((due, bytes(data)))

    def screen(self):
        with self.cv:
            return list(self.rows)

    def wait_screen(self, pred, timeout=10.0, what="screen"):
        deadline = time.monotonic() + timeout * kbtest.SLOW
        with self.cv:
            while not pred(self.rows):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %s; screen is %r" % (what, self.rows))
                self.cv.wait(min(left, 0.1))
            return list(self.rows)

    def wait_backlight(self, on, timeout=10.0):
        deadline = time.monotonic() + timeout * kbtest.SLOW
        with self.cv:
            while self.backlight != on:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for backlight %s" % on)
                self.cv.wait(min(left, 0.1))

    def close(self):
        self.stopped = True
        self.t.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class Cfa635(Display):
    """CFA-635: decodes host packets, checks their CRC, answers each with a response packet.

    reply=False never answers. delay holds each answer back that many seconds; key_report sends a
    key report (type 2) at once, before the held-back answer. bad_crc="first" answers the first
    send of each command with a corrupted CRC and a repeat of it (the same bytes again) properly;
    bad_crc="always" corrupts every answer. Packets that arrived while the answer to the one before
    was still held back are recorded in `early`; every packet's arrival time in `times`."""

    def __init__(self, reply=True, delay=0.0, key_report=False, bad_crc=None):
        self.reply = reply
        self.delay = delay
        self.key_report = key_report
        self.bad_crc = bad_crc
        self.pos = 0
        self.packets = []
        self.times = []
        self.early = []
        super().__init__()

    def _answer(self, pkt, cmd):
        if not self.reply:
            return
        if self.key_report:
            self.reply_later(cfa_packet(2, 0, b"\x05"))
        ack = bytearray(cfa_packet(1, cmd))
        retry = len(self.packets) >= 2 and self.packets[-2] == pkt
        if self.bad_crc == "always" or (self.bad_crc == "first" and not retry):
            ack[-1] ^= 0xFF
        self.reply_later(ack, self.delay)

    def _decode(self):
        while len(self.raw) - self.pos >= 4:
            tc, ln = self.raw[self.pos], self.raw[self.pos + 1]
            if len(self.raw) - self.pos < ln + 4:
                return
            pkt = bytes(self.raw[self.pos:self.pos + ln + 4])
            self.pos += ln + 4
            if self.pending:
                self.early.append(pkt)
            self.packets.append(pkt)
            self.times.append(time.monotonic())
            body, crc = pkt[:-2], pkt[-2] | (pkt[-1] << 8)
            if crc != crc_x25(body):
                self.events.append(("bad_crc", pkt))
                continue
            typ, cmd, data = tc >> 6, tc & 0x3F, pkt[2:-2]
            if typ != 0:
                self.events.append(("bad_type", pkt))
                continue
            if cmd == 6:
                self.rows = [" " * 20 for _ in range(4)]
                self.events.append(("clear",))
            elif cmd == 14:
                self.backlight = data[0] != 0
                self.events.append(("backlight", data[0]))
            elif cmd == 31:
                col, row = data[0], data[1]
                text = "".join(chr(CFA_UNTRANSLATE.get(b, b)) for b in data[2:])
                line = self.rows[row]
                self.rows[row] = (line[:col] + text + line[col + len(text):])[:20]
                self.events.append(("row", row, text))
            else:
                self.events.append(("cmd", cmd, data))
            self._answer(pkt, cmd)

    def wait_packets(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout * kbtest.SLOW
        with self.cv:
            while len(self.packets) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %d packets; got %d" % (n, len(self.packets)))
                self.cv.wait(min(left, 0.1))
            return list(self.packets)


class MatrixOrbital(Display):
    def __init__(self):
        self.pos = 0
        self.cursor = (0, 0)
        super().__init__()

    def _put(self, ch):
        col, row = self.cursor
        if row < 4 and col < 20:
            line = self.rows[row]
            self.rows[row] = line[:col] + chr(ch) + line[col + 1:]
        self.cursor = (col + 1, row)

    def _decode(self):
        while self.pos < len(self.raw):
            b = self.raw[self.pos]
            if b != 0xFE:
                self._put(b)
                self.pos += 1
                continue
            if self.pos + 1 >= len(self.raw):
                return
            cmd = self.raw[self.pos + 1]
            if cmd == 0x58:
                self.rows = [" " * 20 for _ in range(4)]
                self.cursor = (0, 0)
                self.events.append(("clear",))
                self.pos += 2
            elif cmd == 0x46:
                self.backlight = False
                self.events.append(("backlight", 0))
                self.pos += 2
            elif cmd == 0x42:
                if self.pos + 2 >= len(self.raw):
                    return
                self.backlight = True
                self.events.append(("backlight", 1))
                self.pos += 3
            elif cmd == 0x47:
                if self.pos + 3 >= len(self.raw):
                    return
                col, row = self.raw[self.pos + 2], self.raw[self.pos + 3]
                self.cursor = (col - 1, row - 1)
                self.events.append(("goto", col, row))
                self.pos += 4
            else:
                self.events.append(("unknown", cmd))
                self.pos += 2


class FakeApi:
    """A threaded HTTP server: routes[path] = (status, body bytes or JSON-able object).
    Records (path, headers) of every request (when it arrives, i.e. before the answer is sent);
    delays[path] = seconds holds that answer back (to pin open races in tests)."""

    def __init__(self):
        self.routes = {}
        self.delays = {}
        self.requests = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append((self.path, dict(self.headers)))
                if api.delays.get(self.path):
                    time.sleep(api.delays[self.path])
                status, body = api.routes.get(self.path, (404, {"error": {"code": "NotFoundError",
                                                                          "message": "Not found"}}))
                if not isinstance(body, (bytes, bytearray)):
                    body = json.dumps(body, indent=2).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.t.start()

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def paths(self):
        return [p for p, _ in list(self.requests)]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class SessionBus:
    """A private dbus-daemon of the session type on a socket in 'tmpdir' (no root needed); programs
    reach it through env() and --dbus=session."""

    def __init__(self, tmpdir):
        self.socket = os.path.join(tmpdir, "session_bus")
        self.address = "unix:path=" + self.socket
        self.proc = kbtest.Proc(["dbus-daemon", "--session", "--nofork", "--nopidfile", "--nosyslog",
                                 "--print-address", "--address=" + self.address], name="dbus-daemon")
        self.proc.wait_line(r"^unix:path=" + re.escape(self.socket), key="stdout", timeout=10)

    def env(self):
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def stop(self):
        self.proc.stop()


# ---------------------------------------------------------------- sounds

EXTRAS_BUILD_DIR = os.path.abspath(os.path.join(kbtest.BUILD_DIR, "tests", "integration", "extras"))


def make_sound(path, fmt="wav", rate=8000, channels=1, frames=800, seed=0):
    """Writes a test sound (make-test-sound.c); returns its path."""
    subprocess.run([os.path.join(EXTRAS_BUILD_DIR, "make-test-sound"), path, fmt, str(rate), str(channels),
                    str(frames), str(seed)], check=True)
    return path


def sound_samples(channels=1, frames=800, seed=0):
    """The 16-bit little-endian interleaved samples make_sound() writes (what a lossless file
    decodes to, and what ALSA's file plugin records in raw format)."""
    return b"".join(struct.pack("<h", ((i * 97 + c * 13 + seed * 1009) % 4001 - 2000) * 8)
                    for i in range(frames) for c in range(channels))


def alsa_config(directory, out, paced=False):
    """An ALSA configuration (for ALSA_CONFIG_PATH) whose default PCM is the file plugin appending
    everything played to 'out', in front of the null PCM or, with paced, the kegbot_paced test PCM
    that takes frames at the stream's rate as a card does. Returns its path."""
    if paced:
        slave = "{ type kegbot_paced }"
        head = 'pcm_type.kegbot_paced { lib "%s" }\n' % os.path.join(
            EXTRAS_BUILD_DIR, "libasound_module_pcm_kegbot_paced.so")
    else:
        slave = "{ type null }"
        head = ""
    path = os.path.join(directory, "asound.conf")
    with open(path, "w") as f:
        f.write(head + """pcm.!default {
    type file
    slave.pcm %s
    file "|/bin/cat >> %s"
    format "raw"
}
""" % (slave, out))
    return path
