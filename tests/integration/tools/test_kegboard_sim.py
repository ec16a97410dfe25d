"""kegboard_sim: the simulated Kegboard on a pty (programs-and-flags.md section 14).

Each test starts the simulator with short timing flags, opens the pty slave the way a host opens a
serial port, and checks both the KBSP frames the board sends and the simulator's stdout event lines.
"""
import errno
import json
import os
import re
import select
import struct
import termios
import time
import tty
import unittest

import kbtest

PREFIX = kbtest.KBSP_PREFIX
crc16_kermit = kbtest.crc16_kermit
frame = kbtest.kbsp_frame
tlv = kbtest.kbsp_tlv


PING = frame(0x81)


def set_output(output_id, on):
    return frame(0x84, tlv(1, bytes([output_id])) + tlv(2, bytes([1 if on else 0, 0])))


def decode_payload(message_id, payload):
    """Typed fields of the board-to-host messages the simulator sends."""
    tags = {}
    i = 0
    while i + 2 <= len(payload):
        tag, ln = payload[i], payload[i + 1]
        if i + 2 + ln > len(payload):
            raise AssertionError("TLV overrun in %r" % payload)
        tags.setdefault(tag, payload[i + 2:i + 2 + ln])
        i += 2 + ln
    if i != len(payload):
        raise AssertionError("trailing byte in payload %r" % payload)

    def s(t):
        return tags[t].split(b"\0", 1)[0].decode("latin-1")

    if message_id == 0x01:
        assert list(tags) == [1, 3, 4, 5], "hello tag order %r" % list(tags)
        assert len(tags[3]) == 30
        return "hello", {"firmware_version": struct.unpack("<H", tags[1])[0], "serial_number": s(3),
                         "uptime_ms": struct.unpack("<I", tags[4])[0],
                         "uptime_days": struct.unpack("<I", tags[5])[0]}
    if message_id == 0x10:
        return "meter_status", {"meter_name": s(1), "meter_reading": struct.unpack("<I", tags[2])[0]}
    if message_id == 0x11:
        return "temperature_reading", {"sensor_name": s(1),
                                       "sensor_reading": struct.unpack("<i", tags[2])[0]}
    if message_id == 0x12:
        return "output_status", {"output_name": s(1), "output_reading": 1 if tags[2][0] else 0}
    if message_id == 0x14:
        return "auth_token", {"device": s(1), "token_hex": tags[2].hex(), "status": tags[3][0]}
    raise AssertionError("unexpected message id 0x%02x" % message_id)


class Host:
    """The host end: the pty slave opened like a serial port, frames parsed as they arrive."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        attrs[4] = attrs[5] = termios.B115200
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.buf = b""
        self.raw = b""
        self.frames = []        # (arrival time, name, fields)
        self.eof = None

    def write(self, data):
        os.write(self.fd, data)

    def _parse(self):
        while True:
            i = self.buf.find(PREFIX)
            if i < 0:
                return
            self.buf = self.buf[i:]
            if len(self.buf) < 12:
                return
            mid, plen = struct.unpack("<HH", self.buf[8:12])
            assert plen <= 112, "oversize frame from the board"
            if len(self.buf) < 16 + plen:
                return
            fr, self.buf = self.buf[:16 + plen], self.buf[16 + plen:]
            assert crc16_kermit(fr[:14 + plen]) == 0, "bad CRC from the board: %s" % fr.hex()
            assert fr[-2:] == b"\r\n", "bad trailer from the board"
            name, fields = decode_payload(mid, fr[12:12 + plen])
            self.frames.append((time.monotonic(), name, fields))

    def pump(self, timeout):
        """Read what arrives within timeout seconds."""
        deadline = time.monotonic() + timeout
        while self.eof is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                break
            try:
                chunk = os.read(self.fd, 4096)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    continue
                self.eof = e.errno
                break
            if not chunk:
                self.eof = 0
                break
            self.raw += chunk
            self.buf += chunk
            self._parse()

    def wait_frame(self, name, timeout=3.0, start=0, pred=None):
        """Index and entry of the first frame named `name` at index >= start."""
        deadline = time.monotonic() + timeout * kbtest.SLOW
        while True:
            for i in range(start, len(self.frames)):
                f = self.frames[i]
                if f[1] == name and (pred is None or pred(f[2])):
                    return i, f
            left = deadline - time.monotonic()
            if left <= 0 or self.eof is not None:
                raise AssertionError("no %s frame; got %r" % (name, self.frames[start:]))
            self.pump(min(left, 0.05))

    def named(self, name, start=0):
        return [f for f in self.frames[start:] if f[1] == name]

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def event_ms(line):
    return int(line.split(" ", 1)[0])


class SimTest(unittest.TestCase):
    def setUp(self):
        self.tmp = kbtest.TempDir()
        self.dir = self.tmp.__enter__()
        self.sims = []
        self.hosts = []

    def tearDown(self):
        for h in self.hosts:
            h.close()
        problems = []
        for s in self.sims:
            if s.alive():
                rc = s.stop()
                if rc != 0:
                    problems.append("exit status %d on SIGTERM" % rc)
            if s.p.stdin:
                s.p.stdin.close()
            # Sanitizer builds report here; the simulator itself logs nothing above INFO normally.
            bad = [l for l in s.output("stderr") if "Sanitizer" in l or "runtime error" in l]
            if bad:
                problems.append("\n".join(s.output("stderr")))
        self.tmp.__exit__(None, None, None)
        if problems:
            self.fail("; ".join(problems))

    def start(self, *flags, stdin=True):
        sim = kbtest.Sim(self.dir, *flags, link_name="tty%d" % len(self.sims), stdin=stdin)
        self.sims.append(sim)
        return sim

    def open_host(self, sim, expect_boot=True):
        start = sim.count("stdout")
        host = Host(sim.link)
        self.hosts.append(host)
        sim.wait_line(r"^\d+ OPEN$", key="stdout", start=start)
        # What the simulator sends from here on (its TX lines) is this host's.
        host.tx_start = start + next(i for i, l in enumerate(self.stdout_from(sim, start)) if l.endswith(" OPEN"))
        if expect_boot:
            sim.wait_line(r"^\d+ BOOT uptime_ms=0$", key="stdout", start=start)
        return host

    def stdout_from(self, sim, start):
        return sim.output("stdout")[start:]

    def sync(self, sim, host):
        """Everything the simulator has done so far has reached the host: a status command is
        answered after every event before it, the TX lines before its answer are the frames sent
        (run without the buzzer, nothing is held back), and the host has exactly those, in order -
        nothing more, nothing stale. Returns the number of frames."""
        c = sim.count("stdout")
        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS ", key="stdout", start=c)
        lines = sim.output("stdout")
        end = next(i for i in range(c, len(lines)) if " STATUS " in lines[i])
        tx = [l.split(" ", 3)[2] for l in lines[host.tx_start:end] if re.match(r"^\d+ TX (?!raw )", l)]
        deadline = time.monotonic() + 3 * kbtest.SLOW
        while len(host.frames) < len(tx) and time.monotonic() < deadline and host.eof is None:
            host.pump(0.05)
        self.assertEqual([f[1] for f in host.frames], tx, "frames at the host vs the simulator's TX lines")
        return len(host.frames)

    # ---------------------------------------------------------------- boot, ping, heartbeat

    def test_boot_hello_and_ping(self):
        sim = self.start("--serial_number=KB-0123-4567", "--heartbeat_ms=0")
        m = sim.wait_line(r"^0 PTY path=(/dev/pts/\d+)$", key="stdout")
        self.assertEqual(os.readlink(sim.link), m.group(1))
        t_open = time.monotonic()
        host = self.open_host(sim)
        _, (t, name, f) = host.wait_frame("hello")
        self.assertEqual(f, {"firmware_version": 18, "serial_number": "KB-0123-4567",
                             "uptime_ms": 0, "uptime_days": 0})
        # The boot melody delays the hello by 500 ms.
        self.assertGreaterEqual(t - t_open, 0.45)
        sim.wait_line(r'^\d+ TX hello firmware_version=18 serial_number="KB-0123-4567" uptime_ms=0 '
                      r'uptime_days=0$', key="stdout")

        n = len(host.frames)
        t_ping = time.monotonic()
        host.write(PING)
        _, (t, name, f) = host.wait_frame("hello", start=n)
        self.assertGreaterEqual(t - t_ping, 0.24)   # ping melody
        self.assertGreater(f["uptime_ms"], 400)
        self.assertEqual(f["serial_number"], "KB-0123-4567")
        sim.wait_line(r"^\d+ RX ping crc=ok$", key="stdout")

    def test_nobuzzer_firmware_version_and_heartbeat(self):
        sim = self.start("--nobuzzer", "--firmware_version=17", "--heartbeat_ms=300")
        start = sim.count("stdout")
        host = self.open_host(sim)
        _, (_, _, f) = host.wait_frame("hello")
        self.assertEqual((f["firmware_version"], f["serial_number"], f["uptime_ms"]), (17, "", 0))
        # Times below are the simulator's own (event times, uptimes): a busy machine delays what
        # this process sees, so arrival times here would only measure the load.
        lines = self.stdout_from(sim, start)
        boot = event_ms(next(l for l in lines if " BOOT " in l))
        hello = event_ms(next(l for l in lines if " TX hello " in l))
        self.assertLess(hello - boot, 250)      # at once, not after the 500 ms melody

        def hellos():
            """(uptime_ms, is_ping_reply) of every hello after the boot one."""
            out, after_ping = [], False
            for l in self.stdout_from(sim, start):
                if " RX ping " in l:
                    after_ping = True
                elif " TX hello " in l:
                    out.append((int(re.search(r" uptime_ms=(\d+) ", l).group(1)), after_ping))
                    after_ping = False
            return out[1:]

        # A ping reply between two heartbeats must not move the heartbeat timer: the next heartbeat
        # comes ~300 ms after the previous one, not 300 ms after the reply. Ping well inside an
        # interval (the 150 ms pause is the scenario); if the reply lands too close to a heartbeat
        # to tell, ping again.
        for attempt in range(5):
            n = len(hellos())
            kbtest.wait_until(lambda: len(hellos()) > n, what="a heartbeat")
            time.sleep(0.15)
            c = sim.count("stdout")
            host.write(PING)
            sim.wait_line(r"^\d+ RX ping crc=ok$", key="stdout", start=c)
            kbtest.wait_until(lambda: any(r for _, r in hellos()[n:]), what="the ping reply")
            i = next(k for k, (_, r) in enumerate(hellos()) if k >= n and r)
            kbtest.wait_until(lambda: len(hellos()) > i + 1, what="the heartbeat after the reply")
            h = hellos()
            reply, prev, after = h[i][0], h[i - 1][0], h[i + 1][0]
            if 60 <= reply - prev <= 240:
                break
        else:
            self.fail("could not place a ping between two heartbeats: %r" % hellos())
        self.assertLess(after - prev, 300 + (reply - prev))     # not reply + 300
        self.assertGreaterEqual(after - prev, 300)
        beats = [u for u, r in hellos() if not r]
        self.assertGreaterEqual(len(beats), 2, beats)
        self.assertGreaterEqual(beats[0], 300)
        self.assertLess(beats[0], 300 + 150 * kbtest.SLOW)
        for a, b in zip(beats, beats[1:]):
            self.assertGreaterEqual(b - a, 300, beats)
            self.assertLess(b - a, 300 + 150 * kbtest.SLOW, beats)

    def test_uptime_at_start_without_reset(self):
        sim = self.start("--nobuzzer", "--noreset_on_open", "--uptime_ms=86400500")
        start = sim.count("stdout")
        host = self.open_host(sim, expect_boot=False)
        host.write(PING)
        _, (_, _, f) = host.wait_frame("hello")
        self.assertEqual(f["uptime_days"], 1)
        self.assertGreaterEqual(f["uptime_ms"], 500)
        self.assertLess(f["uptime_ms"], 5500)
        self.assertFalse([l for l in self.stdout_from(sim, start) if " BOOT " in l])

    # ---------------------------------------------------------------- meters

    def test_pour_meter_status(self):
        sim = self.start("--nobuzzer", "--meter_interval_ms=50", "--heartbeat_ms=0")
        host = self.open_host(sim)
        host.wait_frame("hello")
        start = sim.count("stdout")
        sim.cmd("pour flow0 100")
        _, (_, _, f) = host.wait_frame("meter_status")
        self.assertEqual(f, {"meter_name": "flow0", "meter_reading": 100})

        n = len(host.frames)
        sim.cmd("pour 1 300 0.6")
        i, _ = host.wait_frame("meter_status", start=n, pred=lambda f: f["meter_reading"] == 300, timeout=3)
        # Counters are u32 and wrap. This change goes out in a later meter pass than the last flow1
        # one: when it arrives, every pass in between has run and sent nothing more.
        sim.cmd("counter flow0 4294967295")
        j, _ = host.wait_frame("meter_status", start=i, pred=lambda f: f["meter_reading"] == 4294967295)
        self.assertEqual([f[2]["meter_reading"] for f in host.named("meter_status") if f[2]["meter_name"] == "flow0"],
                         [100, 4294967295], "flow0: only on change")
        readings = [f[2]["meter_reading"] for f in host.frames[n:j]]
        self.assertTrue(all(f[1] == "meter_status" and f[2]["meter_name"] == "flow1" for f in host.frames[n:j]))
        self.assertEqual(readings, sorted(set(readings)), "increasing, only on change")
        self.assertEqual(readings[-1], 300)
        self.assertGreaterEqual(len(readings), 6)
        tx = [l for l in self.stdout_from(sim, start) if " TX meter_status meter_name=flow1 " in l]
        self.assertEqual(len(tx), len(readings))
        times = [event_ms(l) for l in tx]
        for a, b in zip(times, times[1:]):
            self.assertGreaterEqual(b - a, 50, times)

        # ticks adds at once.
        n = len(host.frames)
        sim.cmd("ticks 0 2")
        _, (_, _, f) = host.wait_frame("meter_status", start=n)
        self.assertEqual(f, {"meter_name": "flow0", "meter_reading": 1})

        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS uptime_ms=\d+ meters=flow0:1,flow1:300 relays=000000 serial=\"\"$",
                      key="stdout")
        for bad in ("pour flow2 5", "pour flow0 -1", "pour flow0 5 x", "ticks 0", "counter 0 4294967296",
                    "bogus"):
            c = sim.count("stdout")
            sim.cmd(bad)
            sim.wait_line(r"^\d+ ERROR msg=\".+\"$", key="stdout", start=c)
        self.assertTrue(sim.alive())

    # ---------------------------------------------------------------- traces (ghost-pours.md 16.1)

    @staticmethod
    def generated(segments, c=0.185, jitter=True, interval=0.1):
        """The spec's trace generator for constant-rate segments, written again here: the readings'
        ticks after each report (report k covers (t_k-1, t_k], volume jitter[(k-1) % 8] x rate x dt)."""
        table = (1.0, 1.2, 0.85, 1.1, 0.9, 1.15, 0.8, 1.05)
        end = sum(sec for sec, _ in segments)
        out, v, k = [], 0.0, 0
        while k * interval < end - 1e-9:
            k += 1
            t0, t1, start, vol = (k - 1) * interval, k * interval, 0.0, 0.0
            for sec, rate in segments:
                lo, hi = max(t0, start), min(t1, start + sec)
                if hi > lo:
                    vol += (hi - lo) * rate
                start += sec
            v += (table[(k - 1) % 8] if jitter else 1.0) * vol
            out.append(int(v / c + 1e-9))
        return out

    def test_trace(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=0")
        host = self.open_host(sim)
        host.wait_frame("hello")
        sim.cmd("counter flow0 500")
        i, _ = host.wait_frame("meter_status", pred=lambda f: f["meter_reading"] == 500)

        # jitter off, 3.7 mL/s at 0.185 mL/tick: 2 ticks a report, 10 reports, 100 ms apart; the
        # current counter is the baseline, reported at once.
        c = sim.count("stdout")
        sim.cmd("trace flow0 jitter=off 1:3.7")
        sim.wait_line(r"^\d+ TRACE meter=flow0 state=start duration_ms=1000 interval_ms=100$", key="stdout", start=c)
        m = sim.wait_line(r"^\d+ TRACE meter=flow0 state=end reports=10 ticks=20$", key="stdout", start=c, timeout=5)
        j, _ = host.wait_frame("meter_status", start=i + 1, pred=lambda f: f["meter_reading"] == 520)
        frames = host.frames[i + 1:j + 1]
        self.assertEqual([f[2]["meter_reading"] for f in frames], list(range(500, 521, 2)))
        tx = [event_ms(l) for l in self.stdout_from(sim, c) if " TX meter_status meter_name=flow0 " in l]
        self.assertEqual(len(tx), 11)
        for a, b in zip(tx[1:], tx[2:]):
            self.assertTrue(80 <= b - a <= 120 * kbtest.SLOW, tx)
        self.assertTrue(event_ms(m.group(0)) - tx[0] >= 1000)

        # With jitter, and on another meter: the ticks the generator gives.
        c = sim.count("stdout")
        want = self.generated([(1, 0), (2, 30)])
        sim.cmd("trace flow1 1:0 2:30")
        m = sim.wait_line(r"^\d+ TRACE meter=flow1 state=end reports=(\d+) ticks=(\d+)$", key="stdout", start=c,
                          timeout=6)
        self.assertEqual(int(m.group(2)), want[-1])
        self.assertEqual(int(m.group(1)), len(set(want)) - (1 if want[0] == 0 else 0))
        readings = [int(l.rsplit("=", 1)[1]) for l in self.stdout_from(sim, c)
                    if " TX meter_status meter_name=flow1 " in l]
        self.assertEqual(readings, [0] + sorted(set(x for x in want if x > 0)))

        # A trace file: comments, one item per line; it starts from the meter's counter.
        path = os.path.join(self.dir, "r7.trace")
        with open(path, "w") as f:
            f.write("# a short pour\nc=0.185\n0.5:0\n\n1:17   # 17 mL/s\n")
        c = sim.count("stdout")
        sim.cmd("trace_file flow0 " + path)
        m = sim.wait_line(r"^\d+ TRACE meter=flow0 state=end reports=\d+ ticks=(\d+)$", key="stdout", start=c,
                          timeout=5)
        self.assertEqual(int(m.group(1)), self.generated([(0.5, 0), (1, 17)])[-1])
        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS uptime_ms=\d+ meters=flow0:%d,flow1:%d " % (520 + int(m.group(1)), want[-1]),
                      key="stdout", start=c)

        # trace_stop; and the errors.
        c = sim.count("stdout")
        sim.cmd("trace flow1 600:1")
        sim.wait_line(r"^\d+ TRACE meter=flow1 state=start", key="stdout", start=c)
        sim.cmd("trace flow1 1:1")
        sim.wait_line(r"^\d+ ERROR msg=\"a trace is already playing on flow1 \(trace_stop first\)\"$", key="stdout",
                      start=c)
        sim.cmd("trace_stop flow1")
        sim.wait_line(r"^\d+ TRACE meter=flow1 state=stopped reports=\d+ ticks=\d+$", key="stdout", start=c)
        for bad, msg in (("trace flow0 5:x", "bad trace: 5:x: expected"), ("trace flow9 1:1", "bad meter"),
                         ("trace flow0", "bad trace: empty trace"), ("trace", "usage: trace"),
                         ("trace_file flow0 /nonexistent/x", "cannot read trace"),
                         ("trace_stop flow1", "no trace is playing on flow1"), ("trace_file flow0", "usage: trace_file")):
            c = sim.count("stdout")
            sim.cmd(bad)
            sim.wait_line(r"^\d+ ERROR msg=\"%s" % re.escape(msg), key="stdout", start=c)
        self.assertTrue(sim.alive())

    # ---------------------------------------------------------------- temperatures

    def test_temperatures(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=0",
                         "--thermo=thermo-6b0316621d4cff28=4.53,0000000000000028=-1.27")
        host = self.open_host(sim)
        t0 = time.monotonic()
        host.wait_frame("temperature_reading", pred=lambda f: f["sensor_name"].endswith("028"), timeout=4)
        temps = host.named("temperature_reading")
        self.assertEqual([(f["sensor_name"], f["sensor_reading"]) for _, _, f in temps],
                         [("thermo-6b0316621d4cff28", 4500000), ("thermo-0000000000000028", -1250000)])
        # One sensor per second.
        self.assertGreaterEqual(temps[0][0] - t0, 0.9)
        self.assertGreaterEqual(temps[1][0] - temps[0][0], 0.9)
        sim.wait_line(r"^\d+ TX temperature_reading sensor_name=thermo-6b0316621d4cff28 "
                      r"sensor_reading=4500000$", key="stdout")
        c = sim.count("stdout")
        sim.cmd("temp 0000000000000028 85")
        sim.cmd("temp_remove thermo-6b0316621d4cff28")
        sim.cmd("temp_remove thermo-0123456789abcdef")
        sim.wait_line(r"^\d+ ERROR msg=", key="stdout", start=c)
        # Two bus passes after the commands: only the remaining sensor, with its new value, every
        # 2 s (one idle second per pass), by the simulator's clock.
        c = sim.count("stdout")

        def readings():
            return [l for l in self.stdout_from(sim, c) if " TX temperature_reading " in l]
        kbtest.wait_until(lambda: len(readings()) >= 2, timeout=6, what="two temperature readings")
        r = readings()[:2]
        self.assertTrue(all(l.endswith(" TX temperature_reading sensor_name=thermo-0000000000000028 "
                                       "sensor_reading=85000000") for l in r), r)
        self.assertGreaterEqual(event_ms(r[1]) - event_ms(r[0]), 1900, r)
        self.assertLess(event_ms(r[1]) - event_ms(r[0]), 2000 + 1000 * kbtest.SLOW, r)

    # ---------------------------------------------------------------- auth tokens

    def test_auth_tokens(self):
        sim = self.start("--heartbeat_ms=0")
        host = self.open_host(sim)
        host.wait_frame("hello")
        n = len(host.frames)
        sim.cmd("swipe 0415AB23CD")
        i, present = host.wait_frame("auth_token", start=n)
        _, removed = host.wait_frame("auth_token", start=i + 1)
        self.assertEqual(present[2], {"device": "core.rfid", "token_hex": "cd23ab1504", "status": 1})
        self.assertEqual(removed[2], {"device": "core.rfid", "token_hex": "cd23ab1504", "status": 0})
        self.assertGreaterEqual(removed[0] - present[0], 0.17)   # 180 ms after a present
        sim.wait_line(r"^\d+ TX auth_token device=core.rfid token=cd23ab1504 status=1$", key="stdout")

        n = len(host.frames)
        sim.cmd("ibutton 510000140e9c6b01 on")
        sim.cmd("ibutton 510000140e9c6b01 off")
        sim.cmd("auth core.rfid 030201 removed")
        host.wait_frame("auth_token", start=n, pred=lambda f: f["token_hex"] == "010203")
        got = [f[2] for f in host.named("auth_token", n)]
        self.assertEqual(got, [{"device": "onewire", "token_hex": "016b9c0e14000051", "status": 1},
                               {"device": "onewire", "token_hex": "016b9c0e14000051", "status": 0},
                               {"device": "core.rfid", "token_hex": "010203", "status": 0}])
        for bad in ("swipe 12345", "ibutton 510000140e9c6b01 maybe", "auth onewire 0g present",
                    "auth onewire 01 gone"):
            c = sim.count("stdout")
            sim.cmd(bad)
            sim.wait_line(r"^\d+ ERROR msg=", key="stdout", start=c)

    # ---------------------------------------------------------------- relays

    def test_relays_and_watchdog(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=0", "--relay_watchdog_ms=300")
        host = self.open_host(sim)
        host.wait_frame("hello")
        start = sim.count("stdout")
        host.write(set_output(0, True))
        _, (_, _, f) = host.wait_frame("output_status")
        self.assertEqual(f, {"output_name": "relay0", "output_reading": 1})
        sim.wait_line(r"^\d+ RX set_output output_id=0 output_mode=1 crc=ok$", key="stdout", start=start)
        sim.wait_line(r"^\d+ RELAY id=0 state=on cause=command$", key="stdout", start=start)
        sim.wait_line(r"^\d+ TX output_status output_name=relay0 output_reading=1$", key="stdout",
                      start=start)
        # Re-asserts refresh the watchdog and produce no output_status. (The pauses are the
        # scenario: re-asserts 150 ms apart keep the relay on for twice the 300 ms watchdog.)
        for _ in range(4):
            time.sleep(0.15)
            host.write(set_output(0, True))
        t_last = time.monotonic()
        sim.wait_line(r"^\d+ RX set_output", key="stdout", start=sim.count("stdout") - 1)
        _, (t, _, f) = host.wait_frame("output_status", start=1 + host.frames.index(host.named("output_status")[0]),
                                       timeout=2)
        self.assertEqual(f, {"output_name": "relay0", "output_reading": 0})
        self.assertGreaterEqual(t - t_last, 0.29)
        self.assertEqual(len(host.named("output_status")), 2)
        m = sim.wait_line(r"^(\d+) RELAY id=0 state=off cause=watchdog$", key="stdout", start=start)
        cmds = [event_ms(l) for l in self.stdout_from(sim, start) if " RX set_output " in l]
        self.assertGreaterEqual(int(m.group(1)) - cmds[-1], 300)

        # Off when already off: accepted, no reply. Other modes change nothing.
        n = len(host.frames)
        host.write(set_output(1, False))
        host.write(frame(0x84, tlv(1, b"\x02") + tlv(2, b"\x02\x00")))
        host.write(set_output(5, True))
        host.wait_frame("output_status", start=n, pred=lambda f: f["output_name"] == "relay5")
        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS .* relays=000001 ", key="stdout", start=start)
        self.assertEqual(len(host.frames), n + 1)

    # ---------------------------------------------------------------- hang, raw, reset, unplug

    def test_hang_and_unhang(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=150", "--verbose")
        host = self.open_host(sim)
        host.wait_frame("hello")
        sim.cmd("hang")
        n = self.sync(sim, host)
        tx = sim.count("stdout")
        # Hung: the meter update, the ping reply and the heartbeats are all held back. The
        # simulator says so for each (debug lines), and a status after the ping's RX line shows
        # no frame went out.
        e = sim.count("stderr")
        sim.cmd("pour flow0 10")
        host.write(PING)
        sim.wait_line(r"^\d+ RX ping crc=ok$", key="stdout", start=tx)
        sim.wait_line(r"Not sent \(hung\): meter_status meter_name=flow0 meter_reading=10$", key="stderr", start=e)
        kbtest.wait_until(lambda: len([l for l in sim.output("stderr")[e:] if "Not sent (hung): hello " in l]) >= 2,
                          what="the ping reply and a heartbeat held back")
        self.assertEqual(self.sync(sim, host), n)
        self.assertFalse([l for l in self.stdout_from(sim, tx) if " TX " in l])
        sim.cmd("unhang")
        host.wait_frame("hello", start=n)
        self.sync(sim, host)

    def test_raw(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=0")
        host = self.open_host(sim)
        host.wait_frame("hello")
        before = len(host.raw)
        sim.cmd("raw 0d0a4B42 5350")
        sim.wait_line(r"^\d+ TX raw hex=0d0a4b425350$", key="stdout")
        deadline = time.monotonic() + 2
        while len(host.raw) < before + 6 and time.monotonic() < deadline:
            host.pump(0.05)
        self.assertEqual(host.raw[before:], bytes.fromhex("0d0a4b425350"))
        c = sim.count("stdout")
        sim.cmd("raw 0d0")
        sim.wait_line(r"^\d+ ERROR msg=", key="stdout", start=c)

    def test_reset(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=0", "--relay_watchdog_ms=0",
                         "--meter_interval_ms=20")
        host = self.open_host(sim)
        host.wait_frame("hello")
        host.write(set_output(2, True))
        host.wait_frame("output_status")
        sim.cmd("pour flow1 50")
        host.wait_frame("meter_status", pred=lambda f: f["meter_reading"] == 50)
        n = self.sync(sim, host)
        start = sim.count("stdout")
        sim.cmd("reset")
        sim.wait_line(r"^\d+ BOOT uptime_ms=0$", key="stdout", start=start)
        sim.wait_line(r"^\d+ RELAY id=2 state=off cause=reset$", key="stdout", start=start)
        _, (_, _, f) = host.wait_frame("hello", start=n)
        self.assertEqual((f["uptime_ms"], f["uptime_days"]), (0, 0))
        sim.cmd("pour flow1 7")
        _, (_, _, f) = host.wait_frame("meter_status", start=n)
        self.assertEqual(f["meter_reading"], 7)
        # No output_status at boot: relays are silently off.
        self.assertEqual(host.named("output_status", n), [])
        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS uptime_ms=\d+ meters=flow0:0,flow1:7 relays=000000 ", key="stdout")

    def test_unplug(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=0")
        host = self.open_host(sim)
        host.wait_frame("hello")
        sim.cmd("unplug")
        self.assertEqual(sim.wait(5), 0)
        host.pump(1.0)
        self.assertIn(host.eof, (0, errno.EIO))
        self.assertFalse(os.path.lexists(sim.link))

    def test_open_close(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=0", "--verbose")
        host = self.open_host(sim)
        host.wait_frame("hello")
        start = sim.count("stdout")
        host.close()
        sim.wait_line(r"^\d+ CLOSE$", key="stdout", start=start)
        # Output while nobody listens is lost (the simulator says so), and no stale bytes wait
        # for the next host.
        e = sim.count("stderr")
        sim.cmd("pour flow0 3")
        sim.wait_line(r"Not sent \(no host\): meter_status meter_name=flow0 meter_reading=3$", key="stderr", start=e)
        host = self.open_host(sim)
        host.wait_frame("hello")
        self.sync(sim, host)
        self.assertEqual([f[1] for f in host.frames], ["hello"])

        sim2 = self.start("--nobuzzer", "--heartbeat_ms=0", "--noreset_on_open")
        start = sim2.count("stdout")
        h2 = self.open_host(sim2, expect_boot=False)
        h2.write(PING)
        h2.wait_frame("hello")
        self.assertFalse([l for l in self.stdout_from(sim2, start) if " BOOT " in l])
        h2.close()
        sim2.wait_line(r"^\d+ CLOSE$", key="stdout", start=start)

    def test_reset_on_open_follows_dtr(self):
        """--reset_on_open reboots the board on the rising DTR edge of an open, like an Arduino: a
        host that leaves HUPCL set (a serial port's default) drops DTR when it closes, so its next
        open resets the board; one that cleared HUPCL keeps DTR asserted, and the board runs on."""
        sim = self.start("--nobuzzer", "--heartbeat_ms=0")
        host = self.open_host(sim)
        host.wait_frame("hello")
        sim.wait_line(r"^\d+ DTR state=on$", key="stdout")
        sim.cmd("counter flow0 40")
        attrs = termios.tcgetattr(host.fd)
        attrs[2] &= ~termios.HUPCL
        termios.tcsetattr(host.fd, termios.TCSANOW, attrs)
        start = sim.count("stdout")
        host.close()
        sim.wait_line(r"^\d+ CLOSE$", key="stdout", start=start)
        host = self.open_host(sim, expect_boot=False)
        host.write(PING)
        _, (_, _, f) = host.wait_frame("hello")
        self.assertGreater(f["uptime_ms"], 0)
        after = self.stdout_from(sim, start)
        self.assertFalse([l for l in after if " BOOT " in l or " DTR " in l])
        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS uptime_ms=\d+ meters=flow0:40,", key="stdout", start=start)

        # HUPCL set again: the close drops DTR, the next open resets the board.
        attrs = termios.tcgetattr(host.fd)
        attrs[2] |= termios.HUPCL
        termios.tcsetattr(host.fd, termios.TCSANOW, attrs)
        start = sim.count("stdout")
        host.close()
        sim.wait_line(r"^\d+ DTR state=off$", key="stdout", start=start)
        host = self.open_host(sim)
        sim.wait_line(r"^\d+ DTR state=on$", key="stdout", start=start)
        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS uptime_ms=\d+ meters=flow0:0,", key="stdout", start=start)

    # ---------------------------------------------------------------- commands, exit, flags

    def test_commands_script_and_quit(self):
        script = os.path.join(self.dir, "cmds")
        with open(script, "w") as f:
            f.write("# a comment\n\ncounter flow0 40   # trailing comment\nstatus\nsleep 0.3\nstatus\nquit\n")
        sim = self.start("--nobuzzer", "--commands=pour flow0 2; ticks flow1 5;status", "--script=" + script,
                         "--nostdin", stdin=False)
        self.assertEqual(sim.wait(5), 0)
        status = [l for l in sim.output("stdout") if " STATUS " in l]
        self.assertEqual(len(status), 3, status)
        self.assertIn("meters=flow0:2,flow1:5 ", status[0])
        self.assertIn("meters=flow0:40,flow1:5 ", status[1])
        self.assertGreaterEqual(event_ms(status[2]) - event_ms(status[1]), 290)
        self.assertFalse(os.path.lexists(sim.link))

    def test_stdin_eof_keeps_running_and_sigterm(self):
        sim = self.start("--nobuzzer", "--verbose")
        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS ", key="stdout")
        sim.p.stdin.close()
        sim.wait_line(r"End of stdin; the simulator keeps running\.", key="stderr")
        # Still serving a host after that.
        host = self.open_host(sim)
        host.wait_frame("hello")
        self.assertTrue(sim.alive())
        self.assertEqual(sim.stop(), 0)
        self.assertFalse(os.path.lexists(sim.link))

    def test_flag_and_setup_errors(self):
        exe = kbtest.binary("kegboard_sim")
        for flags in (["--meters=7"], ["--meters=0"], ["--serial_number=" + "x" * 30], ["--thermo=bogus"],
                      ["--meter_interval_ms=0"], ["positional"]):
            r = kbtest.run([exe, "--nostdin"] + flags, timeout=10)
            self.assertEqual(r.returncode, 1, flags)
            self.assertIn("Error: ", r.stderr)
        plain = os.path.join(self.dir, "not-a-link")
        with open(plain, "w") as f:
            f.write("x")
        r = kbtest.run([exe, "--nostdin", "--link=" + plain], timeout=10)
        self.assertEqual(r.returncode, 1)
        with open(plain) as f:
            self.assertEqual(f.read(), "x")
        # An existing symlink is replaced.
        stale = os.path.join(self.dir, "stale")
        os.symlink("/nonexistent", stale)
        r = kbtest.run([exe, "--nostdin", "--link=" + stale, "--commands=quit"], timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("LINK path=" + stale, r.stdout)
        self.assertFalse(os.path.lexists(stale))

    # ---------------------------------------------------------------- the host-to-board vectors

    def run_vector(self, v, strict=False):
        flags = ["--nobuzzer", "--heartbeat_ms=0"] + (["--strict_crc"] if strict else [])
        sim = self.start(*flags)
        host = self.open_host(sim)
        host.wait_frame("hello")
        n = len(host.frames)
        start = sim.count("stdout")
        host.write(bytes.fromhex(v["hex"]))
        sim.wait_line(r"^\d+ RX(_DROP)? ", key="stdout", start=start)
        self.sync(sim, host)
        m = sim.wait_line(r"^\d+ STATUS .* relays=([01]{6}) ", key="stdout", start=start)
        lines = self.stdout_from(sim, start)
        sim.cmd("quit")
        self.assertEqual(sim.wait(5), 0)
        return m.group(1), lines, host.frames[n:]

    def test_host_to_board_vectors(self):
        with open(os.path.join(kbtest.VECTORS_DIR, "vectors.json")) as f:
            vectors = [v for v in json.load(f)["vectors"] if v["direction"] == "host_to_board"]
        names = {v["name"] for v in vectors}
        for required in ("host_set_output_android_style_crc", "host_set_output_bad_crc",
                         "host_set_output_bad_trailer", "host_ping_payload_len_256",
                         "host_set_serial_number_missing_tag", "host_set_serial_number_30_bytes",
                         "host_set_output_relay6"):
            self.assertIn(required, names)
        for v in vectors:
            with self.subTest(vector=v["name"]):
                out = v["firmware_outcome"]
                relays, lines, frames = self.run_vector(v)
                self.assertEqual(relays, "".join(str(x) for x in out["relays_after"]))
                serial_lines = [l for l in lines if " SERIAL value=" in l]
                self.assertEqual(bool(serial_lines), out["eeprom_serial_programmed_after"], lines)
                self.assertEqual(len(frames), len(out["board_replies"]), frames)
                for (_, name, fields), want in zip(frames, out["board_replies"]):
                    self.assertEqual(name, want["message"])
                    want_fields = dict(want["fields"])
                    if name == "hello":
                        # The vectors ran at time 0; the simulated board has been up briefly.
                        self.assertLess(fields.pop("uptime_ms"), 5000)
                        want_fields.pop("uptime_ms")
                    self.assertEqual(fields, want_fields)
                if v["name"] == "host_set_output_bad_trailer":
                    self.assertTrue([l for l in lines if re.search(r" RX_DROP reason=bad_trailer$", l)])
                if v["name"] == "host_set_output_relay6":
                    self.assertTrue([l for l in lines if re.search(r" RX_DROP reason=bad_id$", l)])
                if v["name"] in ("host_set_output_bad_crc", "host_set_output_android_style_crc"):
                    self.assertTrue([l for l in lines if " RX set_output " in l and l.endswith("crc=bad")])

        # --strict_crc refuses what the firmware would obey.
        bad = next(v for v in vectors if v["name"] == "host_set_output_bad_crc")
        relays, lines, frames = self.run_vector(bad, strict=True)
        self.assertEqual(relays, "000000")
        self.assertEqual(frames, [])
        self.assertTrue([l for l in lines if re.search(r" RX_DROP reason=bad_crc$", l)], lines)

    def test_serial_programming(self):
        sim = self.start("--nobuzzer", "--heartbeat_ms=0")
        host = self.open_host(sim)
        host.wait_frame("hello")
        n = len(host.frames)
        host.write(frame(0x85, tlv(1, b"KB-0000-0000-1A2B3C4D\0")))
        _, (_, _, f) = host.wait_frame("hello", start=n)
        self.assertEqual(f["serial_number"], "KB-0000-0000-1A2B3C4D")
        sim.wait_line(r'^\d+ SERIAL value="KB-0000-0000-1A2B3C4D"$', key="stdout")
        # Programmed once: a second value is refused, also after a reset.
        n = self.sync(sim, host)
        e = sim.count("stderr")
        host.write(frame(0x85, tlv(1, b"KB-9999\0")))
        sim.wait_line(r"Serial number already programmed; set_serial_number ignored\.", key="stderr", start=e)
        self.assertEqual(self.sync(sim, host), n)
        sim.cmd("reset")
        _, (_, _, f) = host.wait_frame("hello", start=n)
        self.assertEqual(f["serial_number"], "KB-0000-0000-1A2B3C4D")


if __name__ == "__main__":
    kbtest.main()
