"""Shared helpers for the integration tests: find the built programs, run them as a user would,
wait for their log lines, talk kegnet, stand in for a core, open a simulated Kegboard.

Every test script is a plain unittest module run by /usr/bin/python3 from `meson test`; the
environment (KEGBOT_BUILD_DIR, KEGBOT_SOURCE_DIR) comes from tests/meson.build. Test data lives in
tests/fixtures (FIXTURES_DIR; the Kegboard vectors in VECTORS_DIR).
"""
import errno
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BUILD_DIR = os.environ.get("KEGBOT_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SOURCE_DIR = os.environ.get("KEGBOT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES_DIR = os.path.join(SOURCE_DIR, "tests", "fixtures")
VECTORS_DIR = os.path.join(FIXTURES_DIR, "kegboard-vectors")

# Sanitizer builds are slower; tests scale their waits by this factor.
SLOW = float(os.environ.get("KEGBOT_TEST_SLOW", "1"))

_PROGRAM_DIRS = ["src/core", "src/kegboard", "src/tools", "src/master", "src/mqtt",
                 "src/extras/lcd", "src/extras/rfid", "src/extras/sound", "src/extras"]


def binary(name):
    """Path of a built program. Every program is always built: a missing one is an error (a
    renamed program must not turn its tests into silent skips)."""
    for d in _PROGRAM_DIRS:
        p = os.path.join(BUILD_DIR, d, name)
        if os.access(p, os.X_OK):
            return p
    raise AssertionError("program %s is not built in %s" % (name, BUILD_DIR))


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Poll pred() for an effect that nothing announces (a file, a property, a server's log) until
    it holds; returns its value. Prefer reading a stream (Proc.wait_line, KegnetConn.recv_until,
    FakeCore.wait_message) where there is one."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout * SLOW, what))
        time.sleep(interval)


class Proc:
    """A running program whose stdout and stderr lines are collected as they come."""

    def __init__(self, args, env=None, cwd=None, stdin=False, name=None):
        self.args = [str(a) for a in args]
        self.name = name or os.path.basename(self.args[0])
        full_env = dict(os.environ)
        full_env.pop("VERBOSE", None)
        full_env.pop("JOURNAL_STREAM", None)
        full_env.pop("NOTIFY_SOCKET", None)
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(self.args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=full_env, cwd=cwd)
        self.lines = {"stdout": [], "stderr": []}
        self._cv = threading.Condition()
        self._threads = [threading.Thread(target=self._reader, args=(self.p.stdout, "stdout"), daemon=True),
                         threading.Thread(target=self._reader, args=(self.p.stderr, "stderr"), daemon=True)]
        for t in self._threads:
            t.start()

    def _reader(self, f, key):
        for raw in iter(f.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if os.environ.get("KEGBOT_TEST_ECHO"):
                sys.stderr.write("[%s %s] %s\n" % (self.name, key, line))
            with self._cv:
                self.lines[key].append(line)
                self._cv.notify_all()
        f.close()

    @property
    def pid(self):
        return self.p.pid

    def output(self, key=None):
        with self._cv:
            if key:
                return list(self.lines[key])
            return self.lines["stdout"] + self.lines["stderr"]

    def wait_line(self, pattern, timeout=5.0, key=None, start=0):
        """Wait for a line matching the regex; returns the match. `start` skips earlier lines
        (an index into the combined or chosen stream, see count())."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout * SLOW
        with self._cv:
            while True:
                keys = [key] if key else ["stdout", "stderr"]
                for k in keys:
                    lines = self.lines[k]
                    for line in lines[start if key else 0:]:
                        m = rx.search(line)
                        if m:
                            return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no line matching %r within %.1fs; output was:\n%s" % (
                        self.name, pattern, timeout * SLOW, "\n".join(self.output_unlocked())))
                self._cv.wait(min(left, 0.1))

    def output_unlocked(self):
        return ["out: " + l for l in self.lines["stdout"]] + ["err: " + l for l in self.lines["stderr"]]

    def count(self, key):
        with self._cv:
            return len(self.lines[key])

    def write(self, text):
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def wait(self, timeout=10.0):
        rc = self.p.wait(timeout * SLOW)
        for t in self._threads:
            t.join(2)
        return rc

    def stop(self, timeout=10.0):
        """SIGTERM and wait; returns the exit status (SIGKILL after the timeout)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                raise AssertionError("%s did not exit on SIGTERM" % self.name)
        return self.wait()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        return self.p.wait()

    def alive(self):
        return self.p.poll() is None


def armed_timers(pid):
    """Seconds left on each armed timerfd of a process, as the kernel shows them (fdinfo
    it_value): an event loop that sleeps until something happens has none."""
    secs = []
    d = "/proc/%d/fdinfo" % pid
    for fd in os.listdir(d):
        try:
            with open(os.path.join(d, fd)) as f:
                m = re.search(r"^it_value: \((\d+), (\d+)\)", f.read(), re.M)
        except OSError:
            continue
        if m and (m.group(1), m.group(2)) != ("0", "0"):
            secs.append(int(m.group(1)))
    return secs


def run(args, env=None, timeout=30, cwd=None, input=None):
    """Run a program to completion; returns CompletedProcess with text stdout/stderr."""
    full_env = dict(os.environ)
    full_env.pop("VERBOSE", None)
    full_env.pop("JOURNAL_STREAM", None)
    if env:
        full_env.update(env)
    return subprocess.run([str(a) for a in args], env=full_env, cwd=cwd, timeout=timeout * SLOW,
                          capture_output=True, text=True, input=input)


class Tmpfs:
    """A tmpfs of 'size' (mount's notation: 8m, 64k) mounted at 'path' (made if missing) for a
    with block; the test is skipped where it cannot be mounted (not root)."""

    def __init__(self, path, size):
        self.path = path
        self.size = size

    def __enter__(self):
        os.makedirs(self.path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + self.size, "tmpfs", self.path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise unittest.SkipTest("cannot mount a tmpfs: %s" % r.stderr.strip())
        return self.path

    def __exit__(self, *exc):
        subprocess.run(["umount", "-l", self.path], capture_output=True)


def fill_disk(directory, name="filler"):
    """Fills the file system of 'directory' (a small tmpfs in the tests) with one file, appended to
    until the disk is full; returns its path (unlink it to free the space again)."""
    path = os.path.join(directory, name)
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 65536)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        try:
            while True:         # the last partial block
                f.write(b"x" * 512)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return path


# ---------------------------------------------------------------- KBSP frames by hand

KBSP_PREFIX = b"KBSP v1:"


def crc16_kermit(data, crc=0):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def kbsp_frame(message_id, payload=b"", crc=None, trailer=b"\r\n", length=None):
    """A KBSP frame; crc, trailer and length may be given wrong on purpose."""
    head = KBSP_PREFIX + struct.pack("<HH", message_id, len(payload) if length is None else length) + payload
    if crc is None:
        crc = crc16_kermit(head)
    return head + struct.pack("<H", crc) + trailer


def kbsp_tlv(tag, value):
    return bytes([tag, len(value)]) + value


def kbsp_hello(firmware_version=18, serial=b"", uptime_ms=0, uptime_days=0):
    """A board's hello; serial as bytes (any bytes: a board need not send UTF-8) or str."""
    s = (serial if isinstance(serial, bytes) else serial.encode()).ljust(30, b"\0")
    return kbsp_frame(0x01, kbsp_tlv(1, struct.pack("<H", firmware_version)) + kbsp_tlv(3, s)
                      + kbsp_tlv(4, struct.pack("<I", uptime_ms)) + kbsp_tlv(5, struct.pack("<I", uptime_days)))


def kbsp_meter_status(name, reading, **kw):
    return kbsp_frame(0x10, kbsp_tlv(1, name.encode()) + kbsp_tlv(2, struct.pack("<I", reading)), **kw)


# ---------------------------------------------------------------- kegnet

def kegnet_frame(event, **data):
    return (json.dumps({"event": event, "data": data}, separators=(",", ":")) + "\n\n").encode()


class KegnetConn:
    """One kegnet TCP connection: send frames, receive decoded messages."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.closed = False

    @classmethod
    def connect(cls, port, host="127.0.0.1", timeout=5.0):
        """Connect, retrying while the port refuses (a program that is still starting)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            try:
                s = socket.create_connection((host, port), timeout=1)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return cls(s)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def send(self, event, **data):
        self.sock.sendall(kegnet_frame(event, **data))

    def hello(self, role="listener", name="test", session=None, seq=None, timeout=5.0, events=None):
        """Say Hello as this project's clients do; returns the core's Welcome (its data), or None
        if the connection closed first (a Refused frame's reason is then in self.refused).
        events: the broadcasts wanted (a list of event names), None = every one."""
        self.send("Hello", role=role, name=name, session=session, seq=seq, events=events)
        self.refused = None
        while True:
            m = self.recv(timeout)
            if m is None:
                return None
            if m["event"] == "Refused":
                self.refused = m["data"]["reason"]
            if m["event"] == "Welcome":
                return m["data"]

    def send_raw(self, b):
        self.sock.sendall(b)

    def _fill(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, OSError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def recv(self, timeout=5.0):
        """Next message as a dict, or None on timeout/close."""
        deadline = time.monotonic() + timeout * SLOW
        while b"\n\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self._fill(left)
        frame, self.buf = self.buf.split(b"\n\n", 1)
        if not frame.strip():
            return self.recv(max(0.0, deadline - time.monotonic()))
        return json.loads(frame)

    def recv_until(self, pred, timeout=5.0, what="message"):
        """Receive until pred(msg) is true; returns (msg, all messages seen including it)."""
        seen = []
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            m = self.recv(max(0.0, left)) if left > 0 else None
            if m is None:
                raise AssertionError("timed out waiting for %s; got %s" % (what, seen[-20:]))
            seen.append(m)
            if pred(m):
                return m, seen

    def wait_closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout * SLOW
        while not self.closed and time.monotonic() < deadline:
            self._fill(0.1)
        return self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class FakeCore:
    """A kegnet listener standing in for kegbot_core: accepts clients, answers their Hello with a
    Welcome and acknowledges a producer's frames as the core does (README, "kegnet: delivery and
    connection slots"), records what they send (Hello frames apart, in self.hellos), and can send
    them messages (e.g. SetRelayOutputEvent). ack=False: the Welcome carries no acknowledgements."""

    def __init__(self, port=None, ack=True):
        self.port = port or free_port()
        self.ack = ack
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(16)
        self.messages = []
        self.hellos = []
        self.conns = []
        self.sessions = {}
        self._cv = threading.Condition()
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _hello(self, s, state, data):
        welcome = {"role": data.get("role") if data.get("role") in ("producer", "listener") else "listener",
                   "acked": None, "reason": None}
        session = data.get("session")
        if self.ack and welcome["role"] == "producer" and session:
            acked = max(self.sessions.get(session, 0), (data.get("seq") or 1) - 1)
            self.sessions[session] = acked
            state["session"] = session
            state["next"] = acked + 1
            welcome["acked"] = acked
        with self._cv:
            self.hellos.append(data)
            self._cv.notify_all()
        try:
            s.sendall(kegnet_frame("Welcome", **welcome))
        except OSError:
            pass

    def _loop(self):
        bufs = {}
        states = {}
        while not self._stop:
            socks = [self.lsock] + list(bufs)
            try:
                r, _, _ = select.select(socks, [], [], 0.05)
            except (OSError, ValueError):
                break
            for s in r:
                if s is self.lsock:
                    try:
                        c, _ = self.lsock.accept()
                    except OSError:
                        continue
                    bufs[c] = b""
                    states[c] = {}
                    with self._cv:
                        self.conns.append(c)
                        self._cv.notify_all()
                    continue
                try:
                    chunk = s.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    del bufs[s]
                    del states[s]
                    with self._cv:
                        if s in self.conns:
                            self.conns.remove(s)
                        self._cv.notify_all()
                    s.close()
                    continue
                bufs[s] += chunk
                state = states[s]
                while b"\n\n" in bufs[s]:
                    frame, bufs[s] = bufs[s].split(b"\n\n", 1)
                    if not frame.strip():
                        continue
                    m = json.loads(frame)
                    if m.get("event") == "Hello" and "hello" not in state:
                        state["hello"] = True
                        self._hello(s, state, m.get("data") or {})
                        continue
                    if "session" in state:
                        self.sessions[state["session"]] = state["next"]
                        state["next"] += 1
                    with self._cv:
                        self.messages.append(m)
                        self._cv.notify_all()
                if "session" in state and state.get("acked") != self.sessions[state["session"]]:
                    state["acked"] = self.sessions[state["session"]]
                    try:
                        s.sendall(kegnet_frame("Ack", acked=state["acked"]))
                    except OSError:
                        pass
        for s in bufs:
            s.close()

    def wait_connected(self, timeout=10.0):
        with self._cv:
            if not self._cv.wait_for(lambda: self.conns, timeout * SLOW):
                raise AssertionError("no client connected to the fake core")

    def wait_message(self, pred, timeout=10.0, what="message"):
        with self._cv:
            ok = self._cv.wait_for(lambda: any(pred(m) for m in self.messages), timeout * SLOW)
            if not ok:
                raise AssertionError("fake core: timed out waiting for %s; got %s" % (what, self.messages[-20:]))
            return next(m for m in self.messages if pred(m))

    def events(self, name=None):
        with self._cv:
            return [m for m in self.messages if name is None or m.get("event") == name]

    def broadcast(self, event, **data):
        frame = kegnet_frame(event, **data)
        with self._cv:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sendall(frame)
            except OSError:
                pass

    def close(self):
        self._stop = True
        self._t.join(2)
        self.lsock.close()
        with self._cv:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass
            self.conns = []


# ---------------------------------------------------------------- simulated Kegboard

class Sim(Proc):
    """kegboard_sim on a pty, reachable at self.link; its stdout event lines are parsed."""

    def __init__(self, tmpdir, *flags, link_name="ttyKB0", stdin=True):
        self.link = os.path.join(tmpdir, link_name)
        super().__init__([binary("kegboard_sim"), "--link=" + self.link] + list(flags), stdin=stdin,
                         name="kegboard_sim")
        self.wait_line(r"^\d+ LINK ", timeout=5, key="stdout")

    def cmd(self, text):
        self.write(text.rstrip("\n") + "\n")

    def daemon(self, core_port, *flags):
        """kegboard_daemon on this board, reporting to the core's kegnet port."""
        return Proc([binary("kegboard_daemon"), "--kegboard_device=" + self.link, "--kb_core_addr=%d" % core_port,
                     "--probe_seconds=1"] + list(flags), name="kegboard_daemon")

    def events(self, name):
        out = []
        for line in self.output("stdout"):
            parts = line.split(" ", 2)
            if len(parts) >= 2 and parts[1] == name:
                out.append(line)
        return out


def proc_status(pid, key):
    """A numeric field of /proc/<pid>/status (VmRSS in kB, voluntary_ctxt_switches, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def cpu_seconds(pid):
    """utime + stime of a process so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid):
    """CPU time a process (all its threads) has used so far, in ns: schedstat's exact sum, for
    figures too small for cpu_seconds()' clock ticks."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
            total += int(f.read().split()[0])
    return total


def memory_kb(pid):
    """The kB figures of /proc/<pid>/smaps_rollup (Rss, Pss, Shared_Clean, ...), plus "Private"
    (Private_Clean + Private_Dirty: the pages no other process shares)."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1])
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET: pass env() to a program and wait
    for what it sends (READY=1, STATUS=..., STOPPING=1)."""

    def __init__(self, tmpdir, name="notify"):
        self.path = os.path.join(tmpdir, name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            with self._cv:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))
                self._cv.notify_all()

    def env(self):
        return {"NOTIFY_SOCKET": self.path}

    def assignments(self, name):
        """Every value sent for NAME (e.g. "STATUS"), oldest first."""
        with self._cv:
            return self.assignments_unlocked(name)

    def wait(self, name, pattern=".*", timeout=10.0):
        """Wait until NAME=<value matching pattern> was sent; returns the value."""
        rx = re.compile(pattern)
        with self._cv:
            ok = self._cv.wait_for(lambda: any(rx.search(v) for v in self.assignments_unlocked(name)),
                                   timeout * SLOW)
            if not ok:
                raise AssertionError("no %s=%s within %.1fs; got %s" % (name, pattern, timeout * SLOW,
                                                                      [m for _, m in self.messages]))
            return next(v for v in self.assignments_unlocked(name) if rx.search(v))

    def assignments_unlocked(self, name):
        out = []
        for _, msg in self.messages:
            for line in msg.split("\n"):
                if line.startswith(name + "="):
                    out.append(line[len(name) + 1:])
        return out

    def close(self):
        self.sock.close()


def stop_all(procs, timeout=5.0):
    """Stops the programs a test started, the last one first (SIGTERM, SIGKILL when that does not do)."""
    for p in reversed(procs):
        try:
            p.stop(timeout)
        except AssertionError:
            p.kill()


class TempDir:
    def __init__(self, prefix="kegbot-test-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


class FakeCoreCase(unittest.TestCase):
    """A test with its own temporary directory (self.dir) and a fake core (self.core), both removed
    after the test."""

    def setUp(self):
        self.tmp = TempDir()
        self.dir = self.tmp.__enter__()
        self.addCleanup(self.tmp.__exit__, None, None, None)
        self.core = FakeCore()
        self.addCleanup(self.core.close)


class TapResult(unittest.TextTestResult):
    """unittest's verbose report on stderr, and one TAP line per test on `tap` (meson runs the
    integration tests with protocol : 'tap', see tests/meson.build): a skipped test is counted as
    skipped, a failed subtest fails its test."""

    def __init__(self, stream, descriptions, verbosity, *, tap, **kw):
        super().__init__(stream, descriptions, verbosity, **kw)
        self.tap = tap
        self.n = 0
        self._status = None

    def _line(self, ok, test, directive=None):
        self.n += 1
        name = test.id() if hasattr(test, "_testMethodName") else str(test)
        if name.startswith("__main__."):
            name = name[len("__main__."):]
        # '#' would start a TAP directive and a newline a new line: neither is kept in a name.
        name = name.replace("#", " ").replace("\n", " ")
        line = "%s %d - %s" % ("ok" if ok else "not ok", self.n, name)
        if directive:
            line += " # " + " ".join(directive.replace("#", " ").split())
        self.tap.write(line + "\n")
        self.tap.flush()

    # A test's outcome is known at stopTest (its subtests may have failed before it "succeeds").
    def startTest(self, test):
        super().startTest(test)
        self._status = ("ok", None)

    def _set(self, test, status, directive=None):
        if self._status is None:
            # No startTest: an error or skip of setUpClass/setUpModule, reported on its own.
            self._line(status == "ok", test, directive)
        elif self._status[0] == "ok" or status == "not ok":
            self._status = (status, directive)

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, "not ok")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "not ok")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set(test, "not ok")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, "ok", "SKIP " + reason)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "not ok", None)

    def stopTest(self, test):
        super().stopTest(test)
        status, directive = self._status
        self._status = None
        self._line(status == "ok", test, directive)


def main():
    """Run the calling module's tests, reporting TAP on stdout (the plan last) and unittest's
    verbose report on stderr. Anything else written to stdout - by the test or a child process
    that inherits it - goes to stderr, so it cannot corrupt the TAP stream. Exit status 0 when
    every test passed or skipped (a program whose every test skipped is a skipped test in TAP), 1
    otherwise (also when no test ran at all: a module that lost its tests must not pass)."""
    sys.stdout.flush()
    tap = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2,
                                     resultclass=lambda *a, **kw: TapResult(*a, tap=tap, **kw))
    prog = unittest.main(exit=False, testRunner=runner)
    r = prog.result
    ok = r.wasSuccessful()
    if r.n == 0:
        r._line(False, "no test ran")
        ok = False
    tap.write("1..%d\n" % r.n)
    tap.flush()
    sys.exit(0 if ok else 1)
