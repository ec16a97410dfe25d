"""Helpers for the accessory programs' tests: emulated serial LCDs on a pty (CrystalFontz CFA-635
and Matrix Orbital 20x4) that decode what lcd_daemon writes into a 4x20 screen, and a small
programmable HTTP server standing in for the Kegbot Server endpoints the extras read."""
import http.server
import json
import os
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
        self.cv = threading.Condition()
        self.stopped = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        import select
        while not self.stopped:
            r, _, _ = select.select([self.master], [], [], 0.05)
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
    """CFA-635: decodes host packets, checks their CRC, answers each with a response packet
    (unless reply=False)."""

    def __init__(self, reply=True):
        self.reply = reply
        self.pos = 0
        self.packets = []
        super().__init__()

    def _decode(self):
        while len(self.raw) - self.pos >= 4:
            tc, ln = self.raw[self.pos], self.raw[self.pos + 1]
            if len(self.raw) - self.pos < ln + 4:
                return
            pkt = bytes(self.raw[self.pos:self.pos + ln + 4])
            self.pos += ln + 4
            self.packets.append(pkt)
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
            if self.reply:
                os.write(self.master, cfa_packet(1, cmd))


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
