"""lcd_daemon without a server: the tap screens come from a real kegbot_core's Tap objects on a
private system bus (busenv.py), read by lcd_daemon running as nobody, as the bus policy allows.
Name, calibration and pour state are shown; taps added, renamed and removed by a reload, the core
leaving and coming back are followed from signals; the core is asked for its objects once per
appearance and never polled."""
import os
import re
import signal
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "dbus"))
import busenv  # noqa: E402
import kbtest  # noqa: E402
from extrastest import Cfa635  # noqa: E402

SPLASH = [" ================== ", "       kegbot!      ", "      beer you.     ", " ================== "]
ROTATION = 5 + 1 + 10 + 10 + 10        # splash, last pour (--rotation_time=1), up to three taps

NEW_TAPS = """
[kegboard.flow1]
name = Cask
ml_per_tick = 0.5

[kegboard.flow2]
name = Third
ticks_per_ml = 5.4
"""


def screen(title, meter, cal, state):
    return [("_" + title).ljust(19, "_") + " ", meter.ljust(20), cal.ljust(20), state.ljust(20)]


class LcdDbusTest(unittest.TestCase):
    def setUp(self):
        self.tmpdir = kbtest.TempDir()
        self.tmp = self.tmpdir.__enter__()
        self.bus = busenv.PrivateBus(self.tmp)
        self.core = busenv.Core(self.tmp, self.bus, "--verbose")
        self.mon = busenv.Monitor(self.bus)
        self.display = Cfa635()
        os.chmod(self.display.path, 0o666)      # lcd_daemon runs as nobody
        self.lcd = None

    def tearDown(self):
        if self.lcd:
            self.lcd.kill()
        self.display.close()
        self.mon.stop()
        self.core.kill()
        self.bus.stop()
        self.tmpdir.__exit__(None, None, None)

    def start_lcd(self):
        env = dict(self.bus.env())
        env.update({"TZ": "UTC", "KEGBOT_API_URL": ""})
        self.lcd = kbtest.Proc(["setpriv", "--reuid=%d" % busenv.NOBODY, "--regid=%d" % busenv.NOBODY,
                                "--clear-groups", kbtest.binary("lcd_daemon"), "--verbose",
                                "--lcd_device_path=" + self.display.path, "--rotation_time=1",
                                "--kb_core_addr=%d" % self.core.port], env=env, name="lcd_daemon")
        return self.lcd

    def wait_screen(self, rows, timeout=ROTATION + 10):
        self.display.wait_screen(lambda r: r == rows, timeout=timeout, what=rows[0])

    def test_tap_screens_follow_the_core(self):
        lcd = self.start_lcd()
        lcd.wait_line(r"INFO .*kegbot_core is on the system bus: 2 tap screen\(s\)\.")
        lcd.wait_line(r"DEBUG .*Tap screens: kegboard\.flow0 kegboard\.flow1$")
        # busenv.TAPS_INI: Main Tap 2.2 ticks per mL, Guest Tap 0.5 mL per tick; in meter order.
        self.wait_screen(screen("Main Tap", "kegboard.flow0", "2.2 ticks/ml", "no pours yet"))
        self.wait_screen(screen("Guest Tap", "kegboard.flow1", "2 ticks/ml", "no pours yet"))

        # A pour on the guest tap: the pour screen (kegnet), then its tap screen shows the pour (D-Bus).
        conn = self.core.connect()
        conn.send("MeterUpdate", meter_name="kegboard.flow1", reading=1000)
        self.core.wait_line(r"Meter kegboard\.flow1: first reading 1000 is the baseline")
        conn.send("MeterUpdate", meter_name="kegboard.flow1", reading=1200)
        self.display.wait_screen(lambda r: r[0] == "_now pouring________" and r[2] == "|oz: 3.38".ljust(20),
                                 what="pour screen")
        self.bus.call(busenv.ROOT, busenv.IFACE + ".Manager", "StopFlow", "s", "kegboard.flow1")
        self.wait_screen(screen("Guest Tap", "kegboard.flow1", "2 ticks/ml", "last pour 3.38 oz"))

        # A reload renames flow1, removes flow0 and adds flow2: signals, not a new snapshot.
        busenv.write_file(os.path.join(self.tmp, "taps.ini"), NEW_TAPS)
        self.core.signal(signal.SIGHUP)
        lcd.wait_line(r"DEBUG .*Tap screens: kegboard\.flow1 kegboard\.flow2$")
        self.wait_screen(screen("Third", "kegboard.flow2", "5.4 ticks/ml", "no pours yet"))
        self.wait_screen(screen("Cask", "kegboard.flow1", "2 ticks/ml", "last pour 3.38 oz"))

        # The core goes away and comes back: the screens follow its bus name.
        self.assertEqual(self.core.stop(), 0)
        lcd.wait_line(r"INFO .*kegbot_core left the system bus: no tap screens until it is back\.")
        lcd.wait_line(r"DEBUG .*Tap screens: none$")
        self.assertTrue(lcd.alive())
        self.core = busenv.Core(self.tmp, self.bus, port=self.core.port, taps=NEW_TAPS)
        lcd.wait_line(r"INFO .*kegbot_core is on the system bus: 2 tap screen\(s\)\.", timeout=10)
        self.wait_screen(screen("Third", "kegboard.flow2", "5.4 ticks/ml", "no pours yet"))

        # Asked once per appearance of the core, never polled; and lcd_daemon sleeps meanwhile
        # (only the rotation timer is armed while the backlight is on).
        self.mon.sync()
        calls = [m for m in self.mon.messages() if m.get("type") == "method_call"
                 and m.get("member") == "GetManagedObjects"]
        self.assertEqual(len(calls), 2, calls)
        self.assertLessEqual(len(kbtest.armed_timers(lcd.pid)), 2)
        self.assertFalse([l for l in lcd.output() if ("WARNING" in l or "ERROR" in l) and "(lcd)" in l],
                         lcd.output())
        self.assertEqual(lcd.stop(), 0)

    def test_waits_for_a_core_that_is_not_there(self):
        self.assertEqual(self.core.stop(), 0)
        lcd = self.start_lcd()
        lcd.wait_line(r"INFO .*Waiting for kegbot_core on the system bus")
        self.display.wait_screen(lambda r: r == SPLASH, what="splash")
        # The display never starts the core (no activation), and nothing retries: a bus name
        # appearing is what wakes it.
        self.core = busenv.Core(self.tmp, self.bus, port=self.core.port)
        lcd.wait_line(r"INFO .*kegbot_core is on the system bus: 2 tap screen\(s\)\.", timeout=10)
        self.assertEqual(lcd.stop(), 0)

    def test_bus_lost_and_back(self):
        """The bus itself goes away: the screens go, lcd_daemon keeps running and reconnects with a
        fresh client once the bus is back, then follows the core again."""
        def count(pattern):
            return len([l for l in lcd.output() if re.search(pattern, l)])

        on_bus = r"INFO .*kegbot_core is on the system bus: 2 tap screen\(s\)\."
        lcd = self.start_lcd()
        lcd.wait_line(on_bus)
        nones = count(r"DEBUG .*Tap screens: none$")
        self.mon.stop()
        self.bus.kill()
        self.core.kill()
        lcd.wait_line(r"WARNING .*\(lcd\) Lost the connection to the system bus; no tap screens until it is back\.")
        kbtest.wait_until(lambda: count(r"DEBUG .*Tap screens: none$") == nones + 1, what="screens gone")
        self.bus.start()
        self.mon = busenv.Monitor(self.bus)
        lcd.wait_line(r"INFO .*\(lcd\) Connected to the system bus again\.", timeout=10)
        self.core = busenv.Core(self.tmp, self.bus, port=self.core.port)
        kbtest.wait_until(lambda: count(on_bus) == 2, timeout=10, what="tap screens back")
        self.assertTrue(lcd.alive())
        self.assertEqual(lcd.stop(), 0)

if __name__ == "__main__":
    kbtest.main()
