"""What the kegbot benchmarks share (the process figures are kbtest's): a true percentile, a kegnet
listener that timestamps FlowUpdates, the core and a pty board with kegboard_daemon, the wake-up
floor, and the report (each figure beside its target; PASS or FAIL: <which>, non-zero exit)."""
import math
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import tty

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import kbtest  # noqa: E402


def percentile(values, p):
    """Nearest-rank percentile: the smallest value with at least p % of the samples at or below it."""
    s = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(s)))
    return s[rank - 1]


class Report:
    """Figures with their targets; the verdict at the end."""

    def __init__(self):
        self.failed = []

    def figure(self, name, value, unit, target, ok, fmt="%.2f"):
        """ok: True/False against the target, or None for a figure that has no target."""
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(("%s: " + fmt + " %s (target %s)%s") % (name, value, unit, target, mark) if target else
              ("%s: " + fmt + " %s") % (name, value, unit))
        sys.stdout.flush()
        if ok is False:
            self.failed.append(name)

    def check(self, name, ok, text):
        print("%s: %s%s" % (name, text, "" if ok else "  MISSED"))
        sys.stdout.flush()
        if not ok:
            self.failed.append(name)

    def finish(self):
        print("FAIL: " + ", ".join(self.failed) if self.failed else "PASS")
        return 1 if self.failed else 0


def rounds_summary(values):
    return min(values), statistics.median(values)


class Reader:
    """Drains a socket in a thread: on_data(chunk, receive time) for every chunk, until close()
    or the peer closes."""

    def __init__(self, sock, on_data):
        self.sock = sock
        sock.settimeout(None)           # blocking: a quiet second is no end
        self.on_data = on_data
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            self.on_data(chunk, time.perf_counter())

    def close(self):
        self.stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.t.join(2)
        self.sock.close()


class Listener:
    """A kegnet listener (Hello role listener: FlowUpdates and the rest), drained by a Reader, that
    counts frames and timestamps the first chunk containing the expected marker."""

    def __init__(self, port, hello=True):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if hello:
            self.sock.sendall(kbtest.kegnet_frame("Hello", role="listener", name="bench", session=None,
                                                  seq=None, events=None))
        self.frames = 0
        self.marker = None
        self.marker_time = None
        self.cv = threading.Condition()
        self.tail = b""
        self.reader = Reader(self.sock, self.on_data)

    def on_data(self, chunk, now):
        data = self.tail + chunk
        with self.cv:
            self.frames += data.count(b"\n\n")
            if self.marker and self.marker in data:
                self.marker_time = now
                self.marker = None
                self.cv.notify_all()
        self.tail = data[-256:]

    def expect(self, marker):
        with self.cv:
            self.marker = marker
            self.marker_time = None

    def wait(self, timeout):
        with self.cv:
            self.cv.wait_for(lambda: self.marker_time is not None, timeout)
            return self.marker_time

    def close(self):
        self.reader.close()


def start_core(tmp, extra=(), prefix=(), env=None):
    port = kbtest.free_port()
    e = {"KEGBOT_API_URL": ""}
    e.update(env or {})
    args = list(prefix) + [kbtest.binary("kegbot_core"), "--kb_core_bind_addr=127.0.0.1:%d" % port,
                           "--state_dir=" + os.path.join(tmp, "state"), "--taps_file=" + os.path.join(tmp, "none"),
                           "--max_tick_delta=0"]
    if not any(a.startswith("--dbus") for a in extra):
        args.append("--dbus=none")
    core = kbtest.Proc(args + list(extra), env=e, name="kegbot_core")
    core.wait_line(r"All services started", timeout=10)
    return core, port


class Board:
    """A pty standing in for a Kegboard, with kegboard_daemon on it, connected to the core."""

    def __init__(self, core, port, serial="BENCH", name=None):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.daemon = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kegboard_device=" + self.path,
                                   "--kb_core_addr=%d" % port, "--probe_seconds=0.2", "--hello_timeout=0"],
                                  name="kegboard_daemon")
        self.daemon.wait_line(r"probing for a Kegboard", timeout=10)
        n0 = len([x for x in core.output("stderr") if "Controller connected" in x])
        os.write(self.master, kbtest.kbsp_hello(serial=serial.encode()))
        kbtest.wait_until(lambda: len([x for x in core.output("stderr") if "Controller connected" in x]) > n0,
                          timeout=20, what="the board at the core")
        line = [x for x in core.output("stderr") if "Controller connected" in x][n0]
        self.name = line.split("Controller connected: ", 1)[1].split()[0]     # as the core names it
        os.set_blocking(self.master, False)

    def drain(self):
        """What the daemon wrote to the board (pings, relays): read and forget."""
        try:
            while os.read(self.master, 4096):
                pass
        except OSError:
            pass

    def write(self, data):
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except BlockingIOError:
                self.drain()
                time.sleep(0.0005)

    def close(self):
        self.daemon.stop()
        os.close(self.master)
        os.close(self.slave)


def wakeup_floor(rate, seconds):
    """ns of CPU per frame for two bare wake-ups (bench/wakeup-floor.c), idle subtracted."""
    out = subprocess.run([os.path.join(kbtest.BUILD_DIR, "bench", "wakeup-floor"), str(rate), str(seconds)],
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[1])
