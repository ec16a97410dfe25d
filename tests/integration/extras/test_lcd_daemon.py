"""lcd_daemon through the real binary: a pty plays the display (CFA-635 or Matrix Orbital, with
slow, bad-CRC and key-report replies), a fake core broadcasts FlowUpdates and DrinkCreatedEvents, a
fake server answers GET taps / drinks, a private session bus stands in for the core's bus (the tap
screens from a real core on D-Bus are tested in test_lcd_dbus.py)."""
import os
import re
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
from extrastest import Cfa635, FakeApi, MatrixOrbital, SessionBus, cfa_packet, crc_x25  # noqa: E402

SPLASH = [" ================== ", "       kegbot!      ", "      beer you.     ", " ================== "]
# flow("active", volume_ml=100.0) on the pour screen.
POUR = ["_now pouring________", "|user: mikey".ljust(20), "|oz: 3.38".ljust(20), "|".ljust(20)]


def flow(state, flow_id=7, username="mikey", volume_ml=100.0, ticks=220):
    return dict(flow_id=flow_id, meter_name="kegboard.flow0", state=state, username=username,
                start_time="2026-11-26T12:00:00Z", last_activity_time="2026-11-26T12:00:04Z",
                ticks=ticks, volume_ml=volume_ml)


def drink(username="mikey", volume_ml=500.0, end_time="2026-11-26T12:00:09Z"):
    return dict(flow_id=7, drink_id=2694, meter_name="kegboard.flow0", start_time="2026-11-26T12:00:01Z",
                end_time=end_time, username=username, ticks=1100, volume_ml=volume_ml,
                uuid="3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10")


class LcdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = kbtest.TempDir()
        cls.bus = SessionBus(cls.tmp.__enter__())

    @classmethod
    def tearDownClass(cls):
        cls.bus.stop()
        cls.tmp.__exit__(None, None, None)

    def setUp(self):
        self.core = kbtest.FakeCore()
        self.procs = []
        self.displays = []

    def tearDown(self):
        for p in self.procs:
            p.kill()
        for d in self.displays:
            d.close()
        self.core.close()

    def start(self, display, *flags, device_type="cfa635", env=None):
        self.displays.append(display)
        full_env = {"TZ": "UTC"}
        full_env.update(self.bus.env())
        full_env.update(env or {})
        p = kbtest.Proc([kbtest.binary("lcd_daemon"), "--lcd_device_path=" + display.path,
                         "--lcd_device_type=" + device_type, "--kb_core_addr=%d" % self.core.port,
                         "--dbus=session"] + list(flags), env=full_env)
        self.procs.append(p)
        return p

    def test_crc_vectors(self):
        # The emulator's CRC must agree with the spec's examples, or nothing below means anything.
        self.assertEqual(crc_x25(b"123456789"), 0x906E)
        self.assertEqual(cfa_packet(0, 6), bytes.fromhex("0600975B"))
        self.assertEqual(cfa_packet(0, 14, b"\x64"), bytes.fromhex("0E01642DEA"))
        self.assertEqual(cfa_packet(0, 31, b"\x00\x00hi"), bytes.fromhex("1F04000068 69F4F0".replace(" ", "")))

    def test_cfa635_start_splash_and_rotation(self):
        d = Cfa635()
        p = self.start(d, "--rotation_time=1")
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        # The first bytes are exactly: clear screen, backlight on.
        self.assertEqual(bytes(d.raw[:9]), bytes.fromhex("0600975B" "0E01642DEA"))
        self.assertEqual(d.events[0], ("clear",))
        self.assertEqual(d.events[1], ("backlight", 100))
        # Each screen update is one write per row at column 0, 20 characters each.
        rows = [e for e in d.events if e[0] == "row"]
        self.assertEqual([e[1] for e in rows[:4]], [0, 1, 2, 3])
        self.assertTrue(all(len(e[2]) == 20 for e in rows))
        self.assertFalse([e for e in d.events if e[0] in ("bad_crc", "bad_type")])
        # After the 5 s splash: the last-pour screen, blank values.
        blank = ["_last pour__________", "user:".ljust(20), "when:".ljust(20), "size:".ljust(20)]
        d.wait_screen(lambda rows: rows == blank, timeout=8, what="last pour")
        # Then the rotation cycles back to the splash (no taps without --api_url).
        d.wait_screen(lambda rows: rows == SPLASH, timeout=4, what="splash again")
        # Underscores reached the display translated to the ROM's 0xC4.
        self.assertIn(b"\xc4\xc4\xc4", bytes(d.raw))
        self.assertNotIn(b"No response!", "\n".join(p.output()).encode())
        self.assertEqual(p.stop(), 0)

    def test_pour_screen_and_last_pour(self):
        d = Cfa635()
        p = self.start(d, "--rotation_time=2")
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        self.core.wait_connected()
        self.core.broadcast("FlowUpdate", **flow("active", volume_ml=100.0))
        d.wait_screen(lambda rows: rows == POUR, what="pour screen")
        # The '|' went out as the display's 0xFE.
        self.assertIn(b"\xfeuser: mikey", bytes(d.raw))

        self.core.broadcast("FlowUpdate", **flow("active", username=None, volume_ml=250.0))
        d.wait_screen(lambda rows: rows[1:3] == ["|user: guest".ljust(20), "|oz: 8.45".ljust(20)],
                      what="guest pour update")

        self.core.broadcast("DrinkCreatedEvent", **drink(username="mikey", volume_ml=500.0))
        self.core.broadcast("FlowUpdate", **flow("completed", volume_ml=500.0))
        d.wait_screen(lambda rows: rows[0] != "_now pouring________", what="back to the rotation")
        last = ["_last pour__________", "user: mikey".ljust(20), "when: nov 26 12:00pm".ljust(20),
                "size: 16.91 ounces".ljust(20)]
        d.wait_screen(lambda rows: rows == last, timeout=8, what="last pour")

        # A completed update for another flow does not end this flow's pour screen.
        self.core.broadcast("FlowUpdate", **flow("active", flow_id=8, volume_ml=10.0))
        d.wait_screen(lambda rows: rows[0] == "_now pouring________", what="second pour")
        self.core.broadcast("FlowUpdate", **flow("completed", flow_id=99, volume_ml=10.0))
        self.core.broadcast("FlowUpdate", **flow("idle", flow_id=8, volume_ml=11.0))
        d.wait_screen(lambda rows: rows[2] == "|oz: 0.37".ljust(20), what="idle update")
        self.core.broadcast("FlowUpdate", **flow("completed", flow_id=8, volume_ml=11.0))
        d.wait_screen(lambda rows: rows[0] != "_now pouring________", what="rotation after flow 8")
        self.assertEqual(p.stop(), 0)

    def test_backlight_follows_activity(self):
        d = Cfa635()
        p = self.start(d, "--backlight_timeout=1")
        d.wait_backlight(True)
        d.wait_backlight(False, timeout=5)
        self.assertIn(("backlight", 0), d.events)
        self.core.wait_connected()
        self.core.broadcast("FlowUpdate", **flow("active"))
        d.wait_backlight(True)
        d.wait_backlight(False, timeout=5)
        # Only changes are sent: on, off, on, off.
        self.assertEqual([e[1] for e in d.events if e[0] == "backlight"], [100, 0, 100, 0])
        self.assertEqual(p.stop(), 0)

    def test_no_response(self):
        d = Cfa635(reply=False)
        p = self.start(d)
        p.wait_line(r"\(lcd\) No response! %s did not answer command 6 within 250 ms" % re.escape(d.path),
                    timeout=5)
        # Still carries on: the rows arrive one after the other anyway, each after its 250 ms wait.
        d.wait_screen(lambda rows: rows == SPLASH, timeout=5, what="splash without replies")
        self.assertEqual(len(d.packets), 6)     # clear, backlight, 4 rows: each sent once
        # Sentinel: the pour screen's first row goes out only once the last splash row's wait ended.
        self.core.wait_connected()
        self.core.broadcast("FlowUpdate", **flow("active"))
        d.wait_packets(7)
        # Rate-limited: 3 of the 6 no-answer ERRORs, each naming the device.
        errors = [l for l in p.output() if "No response!" in l]
        self.assertEqual(len(errors), 3, errors)
        self.assertTrue(all(" ERROR " in l and d.path in l for l in errors), errors)
        self.assertEqual(p.stop(), 0)

    def test_cfa635_key_report_before_slow_ack(self):
        """Every command goes out only after its own acknowledgement, although a key report
        arrives before each (slow) acknowledgement."""
        d = Cfa635(delay=0.12, key_report=True)
        p = self.start(d, "--verbose")
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        self.core.wait_connected()
        self.core.broadcast("FlowUpdate", **flow("active", volume_ml=100.0))
        d.wait_screen(lambda rows: rows == POUR, what="pour screen")
        n = len(d.packets)
        self.assertEqual(n, 10)         # clear, backlight, 4 splash rows, 4 pour rows
        with d.cv:
            self.assertEqual(d.early, [], "commands sent before the previous one was acknowledged")
        # Each packet once (nothing retried, nothing timed out), keys seen as keys.
        self.assertEqual(len(set((i, pkt) for i, pkt in enumerate(d.packets))), n)
        self.assertFalse([l for l in p.output() if "No response!" in l or "WARNING" in l])
        p.wait_line(r"DEBUG .*key event 5")
        self.assertEqual(p.stop(), 0)

    def test_cfa635_bad_crc_retried_once(self):
        d = Cfa635(bad_crc="first")
        p = self.start(d)
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        p.wait_line(r"WARNING .*%s: packet with a bad CRC \(type 1, code 6\) while waiting for the answer to "
                    r"command 6; sending the command again" % re.escape(d.path))
        # Every command went out twice in a row, the second time after the bad answer to the first.
        pkts = d.wait_packets(12)[:12]
        self.assertEqual(pkts[0::2], pkts[1::2])
        self.assertEqual(pkts[0], bytes.fromhex("0600975B"))
        with d.cv:
            self.assertEqual(d.early, [])
        self.assertFalse([l for l in p.output() if "No response!" in l])
        self.assertEqual(p.stop(), 0)

    def test_cfa635_bad_crc_twice_moves_on(self):
        d = Cfa635(bad_crc="always")
        p = self.start(d)
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        pkts = d.wait_packets(12)[:12]
        self.assertEqual(pkts[0::2], pkts[1::2])        # one retry each, no third send
        self.assertEqual(len(set(pkts)), 6)
        p.wait_line(r"WARNING .*after sending command 6 twice; going on with the next command")
        self.assertFalse([l for l in p.output() if "No response!" in l])
        self.assertEqual(p.stop(), 0)

    def test_matrix_orbital(self):
        d = MatrixOrbital()
        p = self.start(d, device_type="mtxorb20x4")
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        raw = bytes(d.raw)
        self.assertTrue(raw.startswith(bytes.fromhex("FE58" "FE4200" "FE470101") + SPLASH[0].encode()), raw[:40])
        self.assertIn(bytes.fromhex("FE470104") + SPLASH[3].encode(), raw)
        self.core.wait_connected()
        self.core.broadcast("FlowUpdate", **flow("active", username="a_b|c"))
        d.wait_screen(lambda rows: rows[1] == "|user: a_b|c".ljust(20), what="untranslated text")
        self.assertEqual(p.stop(), 0)

    def test_tap_screens_from_server(self):
        api = FakeApi()
        self.addCleanup(api.close)
        api.routes["/api/taps"] = (200, {"objects": [
            {"id": 1, "name": "Main Tap", "meter_name": "kegboard.flow0",
             "current_keg": {"id": 3, "percent_full": 72.5,
                             "beverage": {"name": "Pliny the Elder", "producer": {"name": "Russian River"}}},
             "last_temperature": {"sensor_id": 1, "temperature_c": 3.5}},
            {"id": 2, "name": "A very long tap name here", "current_keg": {"percent_full": 10.0,
                                                                          "type": {"name": "Old Type"}}},
            {"id": 3, "name": "Empty"},
        ], "meta": {"result": "ok"}})
        api.routes["/api/drinks"] = (200, {"objects": [
            {"id": 9, "volume_ml": 354.88, "time": "2026-11-26T13:05:00+00:00", "user_id": "alice"},
            {"id": 8, "volume_ml": 100.0, "time": "2026-11-26T12:00:00+00:00", "user_id": "bob"},
        ], "meta": {"result": "ok"}})
        d = Cfa635()
        p = self.start(d, "--rotation_time=1", "--api_url=" + api.url("/api/"), "--api_key=sekrit")
        for expected, timeout in [
                (["_last pour__________", "user: alice".ljust(20), "when: nov 26 01:05pm".ljust(20),
                  "size: 12.00 ounces".ljust(20)], 8),
                (["_Main Tap__________ ", "Pliny the Elder".ljust(20), "Russian River".ljust(20),
                  "72.5% full  3.5c".ljust(20)], 5),
                (["_A very long tap nam", "Old Type".ljust(20), " " * 20, "10.0% full".ljust(20)], 13),
                (["_Empty_____________ ", "Unknown Beer".ljust(20), " " * 20, "0.0% full".ljust(20)], 13)]:
            d.wait_screen(lambda rows: rows == expected, timeout=timeout, what=expected[0])
        # The key went along on the API requests.
        for path, headers in api.requests:
            self.assertEqual(headers.get("X-Kegbot-Api-Key"), "sekrit", path)
        self.assertIn("/api/taps", api.paths())
        self.assertEqual(p.stop(), 0)

    def test_server_2_0_and_errors(self):
        api = FakeApi()
        self.addCleanup(api.close)
        api.routes["/api/v1/taps"] = (500, b"<html>oops</html>")
        api.routes["/api/v1/drinks"] = (410, {"error": {"code": "GoneError", "message": "gone"}})
        d = Cfa635()
        p = self.start(d, "--krest_update_interval=10", "--api_url=" + api.url("/api/v1///"))
        p.wait_line(r"INFO .*no longer polling drinks", timeout=5)
        p.wait_line(r"WARNING .*Could not connect to kegweb: HTTP 500", timeout=5)
        self.assertEqual(p.stop(), 0)
        # Second poll skipped /drinks; trailing slashes were dropped.
        self.assertEqual(api.paths().count("/api/v1/drinks"), 1)

        dead = kbtest.free_port()
        d2 = Cfa635()
        p2 = self.start(d2, "--api_url=http://127.0.0.1:%d/api/" % dead)
        p2.wait_line(r"WARNING .*Could not connect to kegweb: ", timeout=5)
        self.assertTrue(p2.alive())
        self.assertEqual(p2.stop(), 0)

    def test_bad_flags_and_devices(self):
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--lcd_device_type=hd44780"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Bad device type: hd44780", r.stderr)
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--lcd_device_path=/nonexistent/ttyLCD"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Cannot open display /nonexistent/ttyLCD: no such device", r.stderr)
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--lcd_device_path=/dev/null"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Cannot open display /dev/null: not a serial port (not a terminal device)", r.stderr)
        self.assertNotIn("Operation not permitted", r.stderr)
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--lcd_baud_rate=12345"])
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"Error: --lcd_baud_rate: unsupported baud rate 12345 \(supported: 300, 600, "
                                   r"1200, 2400, .*, 115200, .*\)")
        self.assertNotIn("Invalid argument", r.stderr)
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--krest_update_interval=5"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Error:", r.stderr)
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--dbus=none"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Error:", r.stderr)
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--help"])
        self.assertEqual(r.returncode, 1)
        for f in ("--lcd_device_path", "--backlight_timeout", "--kb_core_addr", "--api_url", "--dbus"):
            self.assertIn(f, r.stdout)

    def test_matrix_orbital_at_1200_baud(self):
        """Matrix Orbital displays run at 1200 baud: the port is set to it, the bytes are the spec's."""
        import termios
        d = MatrixOrbital()
        p = self.start(d, "--lcd_baud_rate=1200", "--backlight_timeout=1", device_type="mtxorb20x4")
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        self.assertEqual(termios.tcgetattr(d.slave)[5], termios.B1200)
        d.wait_backlight(False, timeout=5)
        self.assertTrue(bytes(d.raw).endswith(bytes.fromhex("FE46")), bytes(d.raw)[-10:])
        self.core.wait_connected()
        self.core.broadcast("FlowUpdate", **flow("active", username="x"))
        pour = ["_now pouring________", "|user: x", "|oz: 3.38", "|"]
        d.wait_screen(lambda rows: rows == [r.ljust(20) for r in pour], what="pour screen")
        raw = bytes(d.raw)
        on = raw.rindex(bytes.fromhex("FE4200"))
        self.assertGreater(on, raw.rindex(bytes.fromhex("FE46")))
        # Backlight first, then the four rows, each FE 47 01 <row+1> and its 20 characters.
        self.assertEqual(raw[on:], bytes.fromhex("FE4200") + b"".join(
            bytes([0xFE, 0x47, 0x01, row + 1]) + text.ljust(20).encode() for row, text in enumerate(pour)))
        self.assertEqual(p.stop(), 0)

    def test_idle_display_sleeps(self):
        """After the backlight timeout the rotation rests on the splash screen and lcd_daemon has no
        timer left: nothing wakes it until something happens."""
        d = Cfa635()
        # Backlight off after 6 s: the splash (5 s) and a second of the last pour, then rest.
        p = self.start(d, "--backlight_timeout=6", "--rotation_time=1")
        d.wait_screen(lambda rows: rows[0] == "_last pour__________", timeout=8, what="the last pour")
        d.wait_backlight(False, timeout=5)
        d.wait_screen(lambda rows: rows == SPLASH, what="resting on the splash screen")
        kbtest.wait_until(lambda: kbtest.armed_timers(p.pid) == [], what="no armed timer while idle")
        # Activity wakes the rotation: backlight on, and after the pour the splash, then the last pour.
        self.core.wait_connected()
        self.core.broadcast("FlowUpdate", **flow("active"))
        d.wait_backlight(True)
        self.core.broadcast("FlowUpdate", **flow("completed"))
        d.wait_screen(lambda rows: rows[0] == "_last pour__________", timeout=8, what="rotation running again")
        d.wait_backlight(False, timeout=5)
        d.wait_screen(lambda rows: rows == SPLASH, what="resting on the splash screen again")
        kbtest.wait_until(lambda: kbtest.armed_timers(p.pid) == [], what="no armed timer once idle again")
        self.assertEqual(p.stop(), 0)

    def test_without_a_bus(self):
        """No bus to reach: one WARNING, the display works, no tap screens."""
        d = Cfa635()
        p = self.start(d, env={"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus"})
        p.wait_line(r"WARNING .*Cannot connect to the session bus: .*no tap screens until it can be reached")
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        self.assertEqual(p.stop(), 0)

    def test_signals(self):
        d = Cfa635()
        p = self.start(d)
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        p.signal(signal.SIGHUP)
        self.core.wait_connected()
        self.core.broadcast("FlowUpdate", **flow("active"))
        d.wait_screen(lambda rows: rows[0] == "_now pouring________", what="alive after SIGHUP")
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait(), 0)

    def test_display_unplugged(self):
        d = Cfa635()
        p = self.start(d)
        d.wait_screen(lambda rows: rows == SPLASH, what="splash")
        d.close()
        self.displays.remove(d)
        self.assertEqual(p.wait(), 1)
        self.assertTrue(any("disconnected" in l or "failed" in l for l in p.output()), p.output())


if __name__ == "__main__":
    kbtest.main()
