"""kegbot_core against hostile and broken input (issue 13): every defect the attack pass found is a
case here, and together they must leave a concurrent 1000-tick pour recorded exactly.

- a full core (its slots held by idle sockets) never makes kegboard_daemon lose a pour or a board
  reset; announced producers keep their slots; idle anonymous sockets are closed;
- junk names cannot fill the meter, sensor and controller tables for good;
- a board serial that is not UTF-8 still announces the board (and its resets);
- no name, serial, token or file line forges a log line; peer-triggered lines are rate-limited;
- numbers out of range are refused naming the flag, the file and line, or the frame;
- producer messages over TCP only from root or the core's user (kernel socket diagnostics), unless
  --kegnet_open_producers; the Unix socket for the producers."""
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import tty
import unittest

import kbtest
from coretest import Core, write_file

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\((\w+)\) (.*)$")
FORGED = "2026-01-01 00:00:00,000 INFO     (DrinkManager) Logged drink 99 username=admin liters=9.9 ticks=9999"
NOBODY = 65534


def meter(conn, reading, name="kegboard.flow0"):
    conn.send("MeterUpdate", meter_name=name, reading=reading)


def connected_lines(core, pattern=r"Remote host connected"):
    return len(core.stderr_lines(pattern))


def assert_log_is_clean(test, core):
    """Every line is one well-formed log entry: no forged entry, no control character, no invalid
    UTF-8 (decoded as U+FFFD)."""
    for line in core.output("stderr"):
        m = LOG_LINE.match(line)
        test.assertTrue(m, "not a log entry: %r" % line)
        # The forged text may appear inside an entry (escaped), never as an entry of its own.
        test.assertFalse(m.group(2) == "DrinkManager" and m.group(3).startswith("Logged drink 99"), line)
        test.assertFalse(any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in line), "control character: %r" % line)
        test.assertNotIn("\ufffd", line)
        test.assertNotIn("\u2028", line)
        test.assertNotIn("\u202e", line)


class Board:
    """kegboard_sim + kegboard_daemon connected to the core at 'addr'."""

    def __init__(self, tmp, addr, *sim_flags):
        self.sim = kbtest.Sim(tmp, "--nobuzzer", *sim_flags)
        self.daemon = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kegboard_device=" + self.sim.link,
                                   "--kb_core_addr=%s" % addr, "--probe_seconds=1"], name="kegboard_daemon")

    def close(self):
        for p in (self.daemon, self.sim):
            try:
                p.stop(5)
            except AssertionError:
                p.kill()


def producer(core, session, frames=b""):
    """A producer connection that said Hello; sends 'frames' and returns once the core has
    acknowledged them all (the core's Ack is the sentinel that it handled them)."""
    c = core.connect()
    w = c.hello("producer", "test", session=session, seq=1)
    assert w and w["role"] == "producer", w
    if frames:
        n = frames.count(b"\n\n")
        c.send_raw(frames)
        c.recv_until(lambda m: m["event"] == "Ack" and m["data"]["acked"] >= n, timeout=10,
                     what="the Ack of %d frames" % n)
    return c


def idle_sockets(port, n):
    """n connections that never send anything (what any local user can open)."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        out.append(s)
    return out


class FullCoreTest(unittest.TestCase):
    def test_full_core_never_costs_a_pour_or_a_reset(self):
        # 64 slots held by idle sockets: the core used to accept the daemon's connection and close
        # it at once; the daemon took that for "Connected!" and wrote its outbox (a 1000-tick pour,
        # the board-reset notice) into the dying socket.
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            board = None
            held = []
            try:
                held = idle_sockets(core.port, 64)
                kbtest.wait_until(lambda: connected_lines(core) >= 64, what="64 idle connections")
                board = Board(tmp, core.port)
                core.wait_line(r"\(main\) Controller connected: kegboard serial=", timeout=30)
                core.wait_line(r"WARNING  \(kegnet\) Too many clients \(64\); closing 127\.0\.0\.1:\d+ "
                               r"\(it sent nothing\) to make room")
                board.sim.cmd("pour flow0 1000 1")
                kbtest.wait_until(lambda: [d["ticks"] for d in core.drinks()] == [1000], timeout=30,
                                  what="the 1000-tick drink")
                # The board reboots: its reset notice reaches the core, and the ticks after it count
                # from 0 (none lost, none twice).
                board.sim.cmd("reset")
                core.wait_line(r"Controller kegboard was reset, counting its meters from 0", timeout=15)
                board.sim.cmd("pour flow0 500 0")
                kbtest.wait_until(lambda: [d["ticks"] for d in core.drinks()] == [1000, 500], timeout=30,
                                  what="the 500-tick drink after the reset")
                self.assertEqual(board.daemon.stop(), 0)
                self.assertEqual(core.stop(), 0)
                self.assertEqual([d["ticks"] for d in core.drinks()], [1000, 500])
            finally:
                for s in held:
                    s.close()
                if board:
                    board.close()
                core.kill()

    def test_announced_peers_keep_their_slots(self):
        with kbtest.TempDir() as tmp:
            os.chmod(tmp, 0o755)
            core = Core(tmp, "--kegnet_max_clients=8")
            conns = []
            try:
                producer = core.connect()
                w = producer.hello("producer", "kegboard_daemon", session="p-1", seq=1)
                self.assertEqual((w["role"], w["acked"]), ("producer", 0))
                conns.append(producer)
                for _ in range(6):
                    c = core.connect()
                    self.assertEqual(c.hello("listener", "lcd_daemon")["role"], "listener")
                    conns.append(c)
                anonymous = core.connect()
                conns.append(anonymous)
                # Full. A newcomer takes the slot of the connection that sent nothing, once it is
                # past its grace second (until then the newcomer is refused, and tries again).
                def newcomer_in():
                    c = core.connect()
                    w = c.hello("listener", "sound_server")
                    if w:
                        conns.append(c)
                    else:
                        self.assertEqual(c.refused, "too many clients")
                        c.close()
                    return w
                kbtest.wait_until(newcomer_in, timeout=10, interval=0.2, what="the newcomer welcomed")
                core.wait_line(r"Too many clients \(8\); closing 127\.0\.0\.1:%d \(it sent nothing\) to make room"
                               % anonymous.sock.getsockname()[1])
                self.assertTrue(anonymous.wait_closed(5))
                # Everybody left has spoken and may produce: the next newcomer is refused, and told so.
                late = core.connect()
                self.assertIsNone(late.hello("producer", "late", session="late", seq=1))
                self.assertEqual(late.refused, "too many clients")
                core.wait_line(r"WARNING  \(kegnet\) Too many clients \(8, none idle or untrusted\); "
                               r"refusing connection from 127\.0\.0\.1:\d+")
                # The producer's readings are still acknowledged, the listeners still hear them.
                # (A pour of 45 mL: the ghost filter takes it at once, it would hold back a trickle.)
                meter(producer, 0)
                meter(producer, 100)
                producer.recv_until(lambda m: m["event"] == "Ack" and m["data"]["acked"] == 2)
                for c in conns[1:7]:
                    m, _ = c.recv_until(lambda m: m["event"] == "FlowUpdate")
                    self.assertEqual(m["data"]["ticks"], 100)

                # A peer that may not produce (another user's) gives way to a newcomer.
                if os.geteuid() == 0:
                    n_closed = connected_lines(core, r"Remote host closed")
                    conns[1].close()
                    kbtest.wait_until(lambda: connected_lines(core, r"Remote host closed") > n_closed, what="a slot free")
                    stranger = subprocess.Popen(["/usr/bin/python3", "-c", NOBODY_CLIENT, str(core.port)],
                                                stdout=subprocess.PIPE, preexec_fn=as_nobody, text=True)
                    try:
                        self.assertEqual(stranger.stdout.readline(), "sent\n")
                        core.wait_line(r"Refusing MeterUpdate from 127\.0\.0\.1:\d+: uid 65534")
                        again = core.connect()
                        self.assertEqual(again.hello("listener", "lcd_daemon")["role"], "listener")
                        conns.append(again)
                        core.wait_line(r"Too many clients \(8\); closing 127\.0\.0\.1:\d+ \(it may not produce\) "
                                       r"to make room")
                        self.assertEqual(stranger.wait(10), 1)      # its connection was closed
                    finally:
                        stranger.kill()
                self.assertEqual(core.stop(), 0)
            finally:
                for c in conns:
                    c.close()
                core.kill()

    def test_idle_anonymous_connections_are_closed(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp, "--kegnet_max_clients=8", "--kegnet_idle_timeout=1")
            held = []
            try:
                listener = core.connect()
                self.assertEqual(listener.hello("listener", "lcd_daemon")["role"], "listener")
                held = idle_sockets(core.port, 4)
                core.wait_line(r"WARNING  \(kegnet\) Closing 127\.0\.0\.1:\d+: no frame in 1 s while 5 of 8 "
                               r"slots are taken", timeout=10)
                kbtest.wait_until(lambda: connected_lines(core, r"Remote host closed") >= 4, timeout=10,
                                  what="the 4 idle connections closed")
                # A connection that said Hello is no idle one: it stays and hears the next pour.
                producer = core.connect()
                producer.hello("producer", "test", session="x", seq=1)
                meter(producer, 0)
                meter(producer, 100)
                m, _ = listener.recv_until(lambda m: m["event"] == "FlowUpdate")
                self.assertEqual(m["data"]["ticks"], 100)
                producer.close()
                self.assertEqual(core.stop(), 0)
            finally:
                for s in held:
                    s.close()
                core.kill()


class TablesTest(unittest.TestCase):
    def test_junk_meters_cannot_keep_a_real_meter_out(self):
        # The attack pass filled the 1024 meters with junk; every real meter seen for the first time
        # afterwards was ignored until a restart ("No space left on device").
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            conns = []
            try:
                # One connection brings at most 64 new names: 16 of them fill the table.
                for c in range(16):
                    conns.append(producer(core, "junk%d" % c, b"".join(
                        kbtest.kegnet_frame("MeterUpdate", meter_name="junk%d.m%d" % (c, i), reading=1)
                        for i in range(65 if c == 0 else 64))))
                core.wait_line(r"WARNING  \(main\) 127\.0\.0\.1:\d+ brought 64 new meter names \(the limit per "
                               r"connection\); ignoring meter junk0\.m64")
                conns.append(producer(core, "one-more", kbtest.kegnet_frame("MeterUpdate", meter_name="junk.more",
                                                                            reading=1)))
                core.wait_line(r"Meter table full \(1024 meters, all in use or seen lately\); ignoring meter junk\.more")
                real = core.connect()
                conns.append(real)
                # Junk is forgotten once it has not been seen for 5 s (and never counted a tick): the
                # real meter gets in then. (Readings are absolute: sending 0 again is harmless.)
                def counted():
                    meter(real, 0, "real.flow0")
                    meter(real, 100, "real.flow0")
                    m = real.recv(0.5)
                    while m and m["event"] != "FlowUpdate":
                        m = real.recv(0.5)
                    return m and m["data"]["meter_name"] == "real.flow0" and m["data"]["ticks"] == 100
                kbtest.wait_until(counted, timeout=20, interval=0.5, what="the real meter counted")
                forgotten = core.wait_line(r"WARNING  \(flowmanager\) Meter table full \(1024 meters\): forgetting "
                                           r"meter (junk\d+\.m\d+) \(never counted a tick, last seen \d+ s ago\) for "
                                           r"real\.flow0").group(1)
                meter(real, 1100, "real.flow0")
                real.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 1100)
                self.assertEqual(core.stop(), 0)
                self.assertEqual([(d["meter_name"], d["ticks"]) for d in core.drinks()], [("real.flow0", 1100)])
                # meters.json forgets what the table forgot (else, full of junk, it could not take the
                # real meter, and its drink waited for room forever).
                with open(os.path.join(core.state_dir, "meters.json")) as f:
                    kept = json.load(f)["meters"]
                self.assertEqual(kept["real.flow0"], {"reading": 1100, "carry": 0})
                self.assertNotIn(forgotten, kept)
                self.assertLessEqual(len(kept), 1024)
                self.assertFalse(core.stderr_lines(r"No space left on device"))
            finally:
                for c in conns:
                    c.close()
                core.kill()

    def test_sensor_and_controller_tables_make_room(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            conns = []
            try:
                # 256 sensors (64 per connection) fill the table; the next sensor makes room.
                for c in range(4):
                    conns.append(producer(core, "t%d" % c, b"".join(
                        kbtest.kegnet_frame("ThermoEvent", sensor_name="junk%d.t%d" % (c, i), sensor_value=4.5)
                        for i in range(64))))
                self.assertEqual(len(core.thermo_log()), 256)
                last = core.connect()
                conns.append(last)
                last.send("ThermoEvent", sensor_name="kegboard.thermo-6b0316621d4cff28", sensor_value=3.25)
                core.wait_line(r"WARNING  \(ThermoManager\) Temperature sensor table full \(256\): forgetting sensor "
                               r"junk0\.t0 \(last seen \d+ s ago\) for kegboard\.thermo-6b0316621d4cff28")
                kbtest.wait_until(lambda: any(r.get("sensor_name") == "kegboard.thermo-6b0316621d4cff28"
                                              for r in core.thermo_log()), what="the real sensor recorded")

                # 256 controllers (16 per connection) from connections that went away: a new board
                # takes the place of the one seen longest ago.
                boards = [producer(core, "b%d" % c, b"".join(
                    kbtest.kegnet_frame("ControllerConnectedEvent", controller_name="junk%d-%d" % (c, i))
                    for i in range(16))) for c in range(16)]
                n_closed = connected_lines(core, r"Remote host closed")
                for conn in boards:
                    conn.close()
                kbtest.wait_until(lambda: connected_lines(core, r"Remote host closed") >= n_closed + 16,
                                  what="boards gone")
                real = core.connect()
                conns.append(real)
                real.send("ControllerConnectedEvent", controller_name="kegboard-1a2b3c4d", board_reset=True)
                core.wait_line(r"WARNING  \(main\) Controller table full \(256\): forgetting disconnected controller "
                               r"junk\d+-\d+ \(last seen \d+ s ago\) for kegboard-1a2b3c4d")
                core.wait_line(r"Controller kegboard-1a2b3c4d was reset")
                self.assertEqual(core.stop(), 0)
            finally:
                for c in conns:
                    c.close()
                core.kill()


class SerialTest(unittest.TestCase):
    def test_board_serial_that_is_not_utf8(self):
        # An EEPROM that was never programmed reads 0xFF: the ControllerConnectedEvent failed to
        # encode, so the core never heard of the board's resets (800 of 900 ticks lost after one).
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            listener = core.connect()
            master, slave = os.openpty()
            tty.setraw(slave)
            daemon = None
            try:
                daemon = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kegboard_device=" + os.ttyname(slave),
                                      "--kb_core_addr=%d" % core.port, "--probe_seconds=0.2", "--hello_timeout=0"],
                                     name="kegboard_daemon")
                daemon.wait_line(r"probing for a Kegboard", timeout=10)
                os.write(master, kbtest.kbsp_hello(serial=b"\xff" * 30))
                core.wait_line(r"\(main\) Controller connected: kegboard-________ serial=(\\xff){30} "
                               r"firmware_version=18 board_reset=yes", timeout=20)
                daemon.wait_line(r"WARNING .*the board's serial number is not valid UTF-8; announcing it as "
                                 r"'(\\xff){30}'")
                os.write(master, kbtest.kbsp_meter_status("flow0", 100))       # counted from 0: the board booted
                os.write(master, kbtest.kbsp_meter_status("flow0", 900))
                # The board reboots; its counters restart at 0.
                os.write(master, kbtest.kbsp_hello(serial=b"\xff" * 30))
                core.wait_line(r"Controller kegboard-________ was reset", timeout=20)
                os.write(master, kbtest.kbsp_meter_status("flow0", 100))
                # One flow: 100 + 800, then 100 more after the reset.
                listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 1000, timeout=20,
                                    what="1000 ticks")
                self.assertEqual(daemon.stop(), 0)
                self.assertEqual(core.stop(), 0)
                self.assertEqual([(d["meter_name"], d["ticks"]) for d in core.drinks()],
                                 [("kegboard-________.flow0", 1000)])
            finally:
                if daemon:
                    daemon.kill()
                listener.close()
                core.kill()
                os.close(master)
                os.close(slave)


class LogTest(unittest.TestCase):
    def test_no_input_forges_a_log_line(self):
        # Names from kegnet clients, board serials, tokens, file contents: newlines, escapes and
        # control characters forged a complete "Logged drink 99 username=admin ..." line.
        with kbtest.TempDir() as tmp:
            taps = write_file(os.path.join(tmp, "taps.ini"),
                              "[kegboard.flow0]\nname = Main\x1b[2J\nml_per_tick = 0.5\n"
                              "[evil.flow0\u202e]\nname = x\n")
            tokens = write_file(os.path.join(tmp, "tokens.ini"),
                                "[core.rfid:0415ab23cd]\nusername = admin\u2028" + FORGED + "\n")
            core = Core(tmp, "--verbose", taps=taps, tokens=tokens)
            try:
                c = core.connect()
                c.send("MeterUpdate", meter_name="x\n" + FORGED, reading=1)
                c.send("MeterUpdate", meter_name="y\r\n" + FORGED, reading=1)
                c.send("ThermoEvent", sensor_name="t\x1b[31m\u0085" + FORGED, sensor_value=4.0)
                c.send("ControllerConnectedEvent", controller_name="b\n" + FORGED, serial_number="\r\n" + FORGED,
                       board_reset=True)
                c.send("TokenAuthEvent", meter_name="nope\n" + FORGED, auth_device_name="core.rfid",
                       token_value="\n" + FORGED, status="added")
                c.send("FlowRequest", meter_name="z\\n" + FORGED, request="stop_flow")
                c.send_raw(b'{"event":"MeterUpdate","data":{"meter_name":"bad\\n' + FORGED.encode() +
                           b'","reading":"x"}}\n\n')
                c.send_raw(b'{"event":"x\\n' + FORGED.encode() + b'","data":{}}\n\n')
                c.send_raw(b'\n' + FORGED.encode() + b'\n\n')
                # A real pour by the forged-looking user of the tokens file, so "Logged drink" appears
                # for real - once, with the name escaped.
                c.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                       token_value="0415ab23cd", status="added")
                core.wait_line(r"Starting flow flow_id=0x[0-9a-f]{8} meter=kegboard\.flow0 user=admin\\u\{2028\}")
                meter(c, 0)
                meter(c, 40)
                c.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
                core.wait_line(r"\(DrinkManager\) Logged drink 1 username=admin\\u\{2028\}2026-01-01")
                self.assertEqual(core.stop(), 0)
                assert_log_is_clean(self, core)
                self.assertTrue(core.stderr_lines(r"Registering new tap: evil\.flow0\\u\{202e\}"))
                self.assertTrue(core.stderr_lines(r"Controller connected: b\\n2026-01-01 .*serial=\\r\\n2026"))
                self.assertTrue(core.stderr_lines(r"Dropping bad frame from .*: invalid JSON"))
            finally:
                core.kill()

    def test_peer_triggered_lines_are_rate_limited(self):
        # 10,000 connections gave 20,005 log lines, junk meters 219,479 lines in 5 s: enough for
        # journald's rate limit to drop the real "Logged drink" lines.
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                producer = core.connect()
                meter(producer, 0)
                for _ in range(2000):
                    s = socket.create_connection(("127.0.0.1", core.port))
                    s.close()
                junk = core.connect()
                junk.send_raw(b"".join(kbtest.kegnet_frame("MeterUpdate", meter_name="junk.m%d" % i, reading=i)
                                       for i in range(64)))
                junk.send_raw(b"".join(kbtest.kegnet_frame("ThermoEvent", sensor_name="junk.t%d" % i,
                                                           sensor_value=99.0) for i in range(500)))
                junk.send_raw(b"not json\n\n" * 500)
                meter(producer, 100)
                producer.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
                core.wait_line(r"\(DrinkManager\) Logged drink 1 ")
                core.wait_line(r"\(kegnet\) Suppressed \d+ messages: kegnet connections opened and closed "
                               r"\(more than 100 in 10 s\)", timeout=20)
                self.assertEqual(core.stop(), 0)
                lines = core.output("stderr")
                self.assertLess(len(lines), 400, "\n".join(lines[-50:]))
                self.assertLessEqual(len(core.stderr_lines(r"Remote host (connected|closed)")), 100)
                self.assertLessEqual(len(core.stderr_lines(r"Dropping bad frame")), 20)
                self.assertEqual(len(core.stderr_lines(r"Logged drink")), 1)
            finally:
                core.kill()


class NumbersTest(unittest.TestCase):
    def test_out_of_range_numbers_are_refused(self):
        with kbtest.TempDir() as tmp:
            # 1e308 mL per tick: every volume was infinite (FlowUpdates failed to encode, drinks.log
            # said 0.0 mL).
            taps = write_file(os.path.join(tmp, "taps.ini"), "[kegboard.flow0]\nname = Main\nml_per_tick = 1e308\n")
            core = Core(tmp, taps=taps, wait=False)
            self.assertEqual(core.wait(10), 1)
            core.wait_line(r"ERROR    \(TapManager\) Bad taps file: .*taps\.ini:3: \[kegboard\.flow0\] ml_per_tick must "
                           r"be a number from 0\.01 to 100, not '1e308'")
            # 1e-320 ticks per mL passed the flag check and failed later without naming the flag.
            r = kbtest.run([kbtest.binary("kegbot_core"), "--default_ticks_per_ml=1e-320", "--dbus=none",
                            "--state_dir=" + os.path.join(tmp, "s")])
            self.assertEqual(r.returncode, 1)
            self.assertIn("Error: flag --default_ticks_per_ml=1e-320: 1e-320 is not a number in the range "
                          "[0.01, 100]", r.stderr)
            for flag in ("--min_volume_ml=1e9", "--sync_interval=1e3", "--retry_interval=3601",
                         "--api_timeout=1e-400", "--kegnet_idle_timeout=0", "--max_tick_delta=4294967296",
                         "--max_restart_delta=4294967296"):
                r = kbtest.run([kbtest.binary("kegbot_core"), flag, "--dbus=none"])
                self.assertEqual(r.returncode, 1, flag)
                self.assertRegex(r.stderr, r"Error: flag %s: " % re.escape(flag), flag)

            # Integer fields take exact integers only: 1e-400 and 100.000000000000000001 were read
            # as meter readings 0 and 100.
            core = Core(tmp)
            try:
                c = core.connect()
                meter(c, 0)
                c.send_raw(b'{"event":"MeterUpdate","data":{"meter_name":"kegboard.flow0","reading":1e-400}}\n\n')
                c.send_raw(b'{"event":"MeterUpdate","data":{"meter_name":"kegboard.flow0",'
                           b'"reading":100.000000000000000001}}\n\n')
                core.wait_line(r"WARNING  \(kegnet\) Dropping bad frame from 127\.0\.0\.1:\d+: MeterUpdate: field "
                               r"'reading' is not an integer")
                meter(c, 1e2)                   # an exact integer, however it is written
                m, _ = c.recv_until(lambda m: m["event"] == "FlowUpdate")
                self.assertEqual(m["data"]["ticks"], 100)
                self.assertEqual(core.stop(), 0)
                self.assertEqual([d["ticks"] for d in core.drinks()], [100])
            finally:
                core.kill()


def as_nobody():
    """preexec_fn of a child that runs as nobody (the tests run as root)."""
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


NOBODY_CLIENT = r'''
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b'{"event":"MeterUpdate","data":{"meter_name":"kegboard.flow0","reading":500}}\n\n'
          b'{"event":"FlowRequest","data":{"meter_name":"kegboard.flow0","request":"start_flow"}}\n\n')
sys.stdout.write("sent\n")
sys.stdout.flush()
buf = b""
while b'"ticks":40' not in buf:       # it may still listen: the producer's pour reaches it
    chunk = s.recv(65536)
    if not chunk:
        sys.exit(1)
    buf += chunk
sys.stdout.write("heard\n")
'''


class ProducersTest(unittest.TestCase):
    def test_tcp_producers_of_other_users_are_refused(self):
        # Any local user could connect to 127.0.0.1:9805 and forge a pour or a swipe.
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to run a client as another user")
        with kbtest.TempDir() as tmp:
            os.chmod(tmp, 0o755)
            core = Core(tmp)
            try:
                trusted = core.connect()
                meter(trusted, 0)
                client = subprocess.Popen(["/usr/bin/python3", "-c", NOBODY_CLIENT, str(core.port)],
                                          stdout=subprocess.PIPE, preexec_fn=as_nobody, text=True)
                self.assertEqual(client.stdout.readline(), "sent\n")
                core.wait_line(r"WARNING  \(kegnet\) Refusing MeterUpdate from 127\.0\.0\.1:\d+: uid 65534 is not "
                               r"root or the service user \(uid 0\) \(see --kegnet_open_producers\)")
                core.wait_line(r"Refusing FlowRequest from 127\.0\.0\.1:\d+: uid 65534")
                # The refused peer still listens: it hears the trusted producer's pour.
                meter(trusted, 40)
                self.assertEqual(client.stdout.readline(), "heard\n")
                self.assertEqual(client.wait(10), 0)
                # test_flow as nobody is told so in its Welcome and fails instead of pretending.
                r = subprocess.run([kbtest.binary("test_flow"), "--kb_core_addr=%d" % core.port, "--ticks=100",
                                    "--delay_seconds=0"], capture_output=True, text=True, preexec_fn=as_nobody,
                                   timeout=30)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("The core does not accept producer messages from this program: producer messages "
                              "are not accepted from this connection: uid 65534 is not root or the service user",
                              r.stderr)
                trusted.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
                self.assertEqual(core.stop(), 0)
                self.assertEqual([d["ticks"] for d in core.drinks()], [40])
            finally:
                core.kill()

            core = Core(tmp, "--kegnet_open_producers", state_dir=os.path.join(tmp, "open"))
            try:
                r = subprocess.run([kbtest.binary("test_flow"), "--kb_core_addr=%d" % core.port, "--ticks=100",
                                    "--delay_seconds=0", "--explicit_start_stop"], capture_output=True, text=True,
                                   preexec_fn=as_nobody, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(core.stop(), 0)
                self.assertEqual([d["ticks"] for d in core.drinks()], [100])
            finally:
                core.kill()

    def test_unix_socket_for_producers(self):
        sa = shutil.which("systemd-socket-activate")
        if not sa:
            raise unittest.SkipTest("systemd-socket-activate is not installed")
        with kbtest.TempDir() as tmp:
            port = kbtest.free_port()
            path = os.path.join(tmp, "kegnet.sock")
            core = Core(tmp, port=port, wait=False, prefix=[sa, "-l", "127.0.0.1:%d" % port, "-l", path])
            try:
                kbtest.wait_until(lambda: os.path.exists(path), what="the Unix socket")
                r = kbtest.run([kbtest.binary("test_flow"), "--kb_core_addr=unix:" + path, "--ticks=300",
                                "--steps=3", "--delay_seconds=0", "--explicit_start_stop"], timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("Connecting to unix:%s" % path, r.stderr)
                core.wait_line(r"\(kegnet\) Starting server on 127\.0\.0\.1:%d" % port)
                core.wait_line(r"\(kegnet\) Starting server on unix:%s" % re.escape(path))
                core.wait_line(r"\(kegnet\) Using the sockets passed by systemd")
                core.wait_line(r"Hello from unix:pid=\d+: test_flow \(producer, acknowledged\)")
                kbtest.wait_until(lambda: [d["ticks"] for d in core.drinks()] == [300], what="the drink")
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


class CombinedTest(unittest.TestCase):
    def test_hostile_clients_keep_a_concurrent_pour_exact(self):
        # Everything at once while a board pours 1000 ticks: slots held and churned, junk names,
        # forged names, bad frames, refused producers. The pour is recorded exactly, once.
        with kbtest.TempDir() as tmp:
            os.chmod(tmp, 0o755)
            core = Core(tmp)
            board = None
            stop = threading.Event()
            errors = []
            held = []

            def churn():
                try:
                    while not stop.is_set():
                        s = socket.create_connection(("127.0.0.1", core.port))
                        s.close()
                except OSError as e:
                    errors.append(e)

            def junk(k):
                try:
                    i = 0
                    while not stop.is_set():
                        c = kbtest.KegnetConn.connect(core.port)
                        c.send_raw(b"".join(kbtest.kegnet_frame("MeterUpdate", meter_name="junk%d.m%d" % (k, i + j),
                                                                reading=1) for j in range(70)))
                        c.send_raw(("{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"x\\n%s\",\"reading\":1}}\n\n"
                                    % FORGED).encode() + b"not json\n\n")
                        c.close()
                        i += 70
                except OSError as e:
                    errors.append(e)

            try:
                held = idle_sockets(core.port, 64)
                board = Board(tmp, core.port)
                core.wait_line(r"\(main\) Controller connected: kegboard serial=", timeout=30)
                threads = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
                threads += [threading.Thread(target=junk, args=(k,), daemon=True) for k in range(2)]
                for t in threads:
                    t.start()
                if os.geteuid() == 0:
                    forger = subprocess.Popen(["/usr/bin/python3", "-c", NOBODY_CLIENT, str(core.port)],
                                              stdout=subprocess.PIPE, preexec_fn=as_nobody, text=True)
                board.sim.cmd("pour flow0 1000 3")
                kbtest.wait_until(lambda: len(core.drinks()) >= 1, timeout=40, what="the drink")
                stop.set()
                for t in threads:
                    t.join(10)
                if os.geteuid() == 0:
                    forger.kill()
                    forger.wait()
                self.assertEqual(board.daemon.stop(), 0)
                self.assertEqual(core.stop(), 0)
                self.assertEqual([(d["meter_name"], d["ticks"]) for d in core.drinks()], [("kegboard.flow0", 1000)])
                assert_log_is_clean(self, core)
                self.assertFalse(errors, errors)
            finally:
                stop.set()
                for s in held:
                    s.close()
                if board:
                    board.close()
                core.kill()


if __name__ == "__main__":
    kbtest.main()
