"""lcd_daemon through the real binary: a pty plays the display (CFA-635 or Matrix Orbital), a fake
core broadcasts FlowUpdates and DrinkCreatedEvents, a fake server answers GET taps / drinks."""
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
from extrastest import Cfa635, FakeApi, MatrixOrbital, cfa_packet, crc_x25  # noqa: E402

SPLASH = [" ================== ", "       kegbot!      ", "      beer you.     ", " ================== "]


def flow(state, flow_id=7, username="mikey", volume_ml=100.0, ticks=220):
    return dict(flow_id=flow_id, meter_name="kegboard.flow0", state=state, username=username,
                start_time="2026-11-26T12:00:00Z", last_activity_time="2026-11-26T12:00:04Z",
                ticks=ticks, volume_ml=volume_ml)


def drink(username="mikey", volume_ml=500.0, end_time="2026-11-26T12:00:09Z"):
    return dict(flow_id=7, drink_id=2694, meter_name="kegboard.flow0", start_time="2026-11-26T12:00:01Z",
                end_time=end_time, username=username, ticks=1100, volume_ml=volume_ml,
                uuid="3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10")


class LcdTest(unittest.TestCase):
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

    def start(self, display, *flags, device_type="cfa635"):
        self.displays.append(display)
        p = kbtest.Proc([kbtest.binary("lcd_daemon"), "--lcd_device_path=" + display.path,
                         "--lcd_device_type=" + device_type, "--kb_core_addr=%d" % self.core.port]
                        + list(flags), env={"TZ": "UTC"})
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
        pour = ["_now pouring________", "|user: mikey".ljust(20), "|oz: 3.38".ljust(20), "|".ljust(20)]
        d.wait_screen(lambda rows: rows == pour, what="pour screen")
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
        p.wait_line(r"\(lcd\) No response!", timeout=5)
        # Still carries on: the rows arrive one after the other anyway.
        d.wait_screen(lambda rows: rows == SPLASH, timeout=5, what="splash without replies")
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
        self.assertIn("/nonexistent/ttyLCD", r.stderr)
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--krest_update_interval=5"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Error:", r.stderr)
        r = kbtest.run([kbtest.binary("lcd_daemon"), "--help"])
        self.assertEqual(r.returncode, 1)
        for f in ("--lcd_device_path", "--backlight_timeout", "--kb_core_addr", "--api_url"):
            self.assertIn(f, r.stdout)

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
