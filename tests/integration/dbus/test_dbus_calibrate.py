"""Calibrating a tap in standalone mode (calibration.md section 9, cases 1-26 and 31-35 that need no
server): kegbot_calibrate and the D-Bus methods against the real kegbot_core on a private bus, ticks
from a kegnet producer (or kegboard_sim through kegboard_daemon), the taps file rewritten on disk,
the relay events on kegnet, the log lines, the exit statuses."""
import json
import os
import re
import signal
import stat
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busenv  # noqa: E402
import caltest  # noqa: E402
import kbtest  # noqa: E402
from busenv import ROOT, payload  # noqa: E402
from caltest import TAP, CalibrationCase, calibrate, tap_path  # noqa: E402

M0, M1 = "kegboard.flow0", "kegboard.flow1"
BUSY = "org.kegbot.Core1.Error.Busy"


class StandaloneTest(CalibrationCase):
    flags = ("--verbose",)

    def test_happy_path(self):
        """Case 1: the example file, start, 2703 ticks, finish --ml=500."""
        r = self.cal("start", M0)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "Calibrating kegboard.flow0 (Main Tap), now 0.185 mL/tick (5.40541 ticks/mL).")
        self.assertRegex(lines[1], r"^Valve kegboard\.relay0 is open until the calibration ends \(at most 10 min, "
                                   r"until \d\d:\d\d:\d\d\)\.$")
        self.assertEqual(lines[2:], [
            "Pour at least 500 mL (1 L is better) at a normal pace into a measuring jug, or into a container on a",
            "scale, then run one of",
            "  kegbot_calibrate finish kegboard.flow0 --ml=<measured mL>",
            "  kegbot_calibrate finish kegboard.flow0 --grams=<net weight> --sg=1.015"])
        self.assertEqual(r.stderr, "")
        self.core.wait_line(r"INFO     \(calibration\) Calibration started: meter=kegboard\.flow0 ml_per_tick=0\.185 "
                            r"relay=kegboard\.relay0 timeout=600s")
        self.assertEqual(self.tap(M0, "CalibrationState"), "running")
        self.assertTrue(self.tap(M0, "RelayEnabled"))
        started, deadline = self.tap(M0, "CalibrationStarted"), self.tap(M0, "CalibrationDeadline")
        self.assertEqual(deadline - started, 600 * 10**6)
        self.assertLess(abs(started / 1e6 - time.time()), 10)

        # The valve: enabled at once, then re-asserted every second (4-6 more in 5 s).
        self.listener.wait(lambda m: caltest.relay_events([m], "kegboard.relay0") == ["enabled"], what="enabled")
        time.sleep(5)
        n = len(self.listener.relay("kegboard.relay0"))
        self.assertTrue(5 <= n <= 7, self.listener.relay("kegboard.relay0"))
        self.assertEqual(set(self.listener.relay("kegboard.relay0")), {"enabled"})

        self.producer.baseline(M0, 5000)
        self.pour_counted(M0, 2703)
        self.assertEqual(self.tap(M0, "TotalTicks"), 2703)
        r = self.cal("finish", M0, "--ml=500")
        self.assertEqual(r.stdout, "kegboard.flow0 (Main Tap): 2703 ticks for 500.0 mL\n"
                                   "  before: 0.185 mL/tick (5.40541 ticks/mL); the pour read 500.1 mL\n"
                                   "  now:    0.18498 mL/tick (5.40599 ticks/mL), -0.01 %%\n"
                                   "Saved to %s.\n" % self.taps_path)
        self.assertEqual(r.stderr, "")
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.18498)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "taps-file")
        self.assertEqual(self.tap(M0, "CalibrationState"), "")
        self.assertEqual(self.tap(M0, "CalibrationTicks"), 0)
        self.assertFalse(self.tap(M0, "RelayEnabled"))
        self.assertEqual(caltest.calibration_ended(self.mon, M0), [M0, "finished", 2703, 0.185, 0.18498])
        self.listener.wait(lambda m: caltest.relay_events([m], "kegboard.relay0") == ["disabled"], what="disabled")
        self.core.wait_line(r"INFO     \(TapManager\) Updating tap: kegboard\.flow0 ml_per_tick=0\.18498 "
                            r"relay=kegboard\.relay0")
        self.core.wait_line(r"INFO     \(calibration\) Calibration finished: meter=kegboard\.flow0 ticks=2703 "
                            r"volume_ml=500\.0 ml_per_tick 0\.185 -> 0\.18498 \(-0\.01 %\), stored: taps-file " +
                            re.escape(self.taps_path))

        # The file: [kegboard.flow0] as in the example's after-state, the rest byte for byte.
        text = self.taps_text()
        m = caltest.EXAMPLE_FLOW0_AFTER.search(text)
        self.assertIsNotNone(m, text)
        self.assertEqual(text[:m.start()] + "@" + text[m.end():],
                         caltest.EXAMPLE_TAPS.replace("[kegboard.flow0]\nname = Main Tap\nml_per_tick = 0.185   ; "
                                                      "SF800\nrelay_name = kegboard.relay0\n", "@"))
        # Nothing else happened: no drink, no flow, no ghost.
        self.mon.sync()
        self.assertEqual(self.core.drinks(), [])
        self.assertFalse(self.mon.signals("FlowUpdated"))
        self.assertFalse([m for m in self.listener.seen() if m["event"] == "FlowUpdate"])
        self.assertEqual(self.tap(M0, "GhostTicks"), 0)

        # The next pour of 1000 ticks (valve opened by hand) is a drink of 184.98 mL.
        self.assertEqual(self.call("SetRelay", "sb", "kegboard.relay0", True)[0], "ok")
        self.producer.pour(M0, 1000)
        self.producer.conn.send("FlowRequest", meter_name=M0, request="stop_flow")
        drink = self.mon.wait_signal(lambda m: m["member"] == "DrinkRecorded", what="the next pour")
        self.assertEqual(payload(drink)[5], 1000)
        self.assertAlmostEqual(payload(drink)[6], 184.98, places=6)
        self.assertEqual(self.core.drinks()[0]["ticks"], 1000)

        # A reload keeps it: it is in the file.
        n = len(self.core.output())
        self.core.signal(signal.SIGHUP)
        self.core.wait_line(r"Found 2 taps, adding to tap manager", start=n)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.18498)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "taps-file")

    def test_cancel_and_not_calibrating(self):
        """Cases 16 and 18."""
        r = self.cal("finish", M0, "--ml=500", code=2)
        self.assertEqual(r.stderr, "Error: No calibration of kegboard.flow0 is running\n"
                                   "Start one with: kegbot_calibrate start kegboard.flow0\n")
        self.cal("cancel", M0, code=2)
        before = self.taps_text()
        self.cal("start", M0)
        self.pour_counted(M0, 1234)
        r = self.cal("cancel", M0)
        self.assertEqual(r.stdout, "Calibration of kegboard.flow0 cancelled after 1234 ticks; nothing changed.\n")
        self.assertEqual(caltest.calibration_ended(self.mon, M0), [M0, "cancelled", 1234, 0.185, 0.185])
        self.core.wait_line(r"INFO     \(calibration\) Calibration cancelled: meter=kegboard\.flow0 ticks=1234")
        self.assertEqual(self.taps_text(), before)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.185)
        self.assertFalse(self.tap(M0, "RelayEnabled"))
        self.assertEqual(self.listener.relay("kegboard.relay0")[-1], "disabled")
        self.cal("finish", M0, "--ml=500", code=2)

    def test_rejections_and_range(self):
        """Cases 13 and 14."""
        self.cal("start", M0)
        self.pour_counted(M0, 199)
        r = self.cal("finish", M0, "--ml=500", code=2)
        self.assertEqual(r.stderr, "Error: only 199 ticks counted; at least 200 are needed (pour 500 mL or more)\n"
                                   "The calibration is still running.\n")
        self.core.wait_line(r"WARNING  \(calibration\) Calibration rejected: meter=kegboard\.flow0: only 199 ticks "
                            r"counted; at least 200 are needed \(pour 500 mL or more\); still running")
        self.assertEqual(self.tap(M0, "CalibrationState"), "running")
        self.pour_counted(M0, 301)
        r = self.cal("finish", M0, "--ml=100")
        self.assertTrue(r.stdout.startswith("kegboard.flow0 (Main Tap): 500 ticks for 100.0 mL\n"), r.stdout)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.2)

        # 200 ticks: 3.999 mL and 1000.2 mL are out of range, each leaving it running; 1000 and 4.0 are not.
        self.cal("start", M0)
        self.pour_counted(M0, 200)
        for ml, text in (("3.999", "0.019995 mL/tick is outside 0.02-5 mL/tick; check the measured volume "
                                   "(3.999 mL for 200 ticks)"),
                         ("1000.2", "5.001 mL/tick is outside 0.02-5 mL/tick; check the measured volume "
                                    "(1000.2 mL for 200 ticks)")):
            r = self.cal("finish", M0, "--ml=" + ml, code=2)
            self.assertEqual(r.stderr, "Error: %s\nThe calibration is still running.\n" % text)
        err, msg = self.call("FinishCalibration", "sd", M0, 3.999)
        self.assertEqual(err, "org.kegbot.Core1.Error.CalibrationRejected", msg)
        self.assertEqual(self.tap(M0, "CalibrationState"), "running")
        self.cal("finish", M0, "--ml=1000")
        self.assertEqual(self.tap(M0, "MlPerTick"), 5.0)
        self.cal("start", M0)
        self.pour_counted(M0, 200)
        self.cal("finish", M0, "--ml=4.0")
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.02)

    def test_change_warning(self):
        """Case 15: +30.00 % is no warning, +30.10 % is one (applied, exit 0)."""
        self.cal("start", M0)
        self.pour_counted(M0, 1000)
        r = self.cal("finish", M0, "--ml=240.5")
        self.assertIn("+30.00 %", r.stdout)
        self.assertEqual(r.stderr, "")
        err, res = self.call("SetCalibration", "sd", M0, 0.185)
        self.assertEqual(err, "ok")
        self.assertEqual(res[0]["warnings"], [])
        self.cal("start", M0)
        self.pour_counted(M0, 1000)
        r = self.cal("finish", M0, "--ml=240.685")
        self.assertIn("+30.10 %", r.stdout)
        self.assertEqual(r.stderr, "Warning: the calibration changes by +30.1 %, more than 30 %: check the "
                                   "measurement and the meter\n")
        self.core.wait_line(r"WARNING  \(calibration\) Calibration of kegboard\.flow0 changes ml_per_tick by "
                            r"\+30\.1 % \(more than 30 %\): 0\.185 -> 0\.240685")
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.240685)

    def test_weight_and_ounces(self):
        """Cases 11 and 12."""
        self.cal("start", M0)
        self.pour_counted(M0, 2716)
        r = self.cal("finish", M0, "--grams=510", "--sg=1.015")
        self.assertTrue(r.stdout.startswith("kegboard.flow0 (Main Tap): 2716 ticks for 502.5 mL\n"), r.stdout)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.185001)
        self.assertIn("# calibration ", self.taps_text())
        self.assertIn(": 502.463 mL over 2716 ticks, was 0.185 mL/tick\nml_per_tick = 0.185001   ; SF800\n",
                      self.taps_text())
        # --sg omitted is 1.000; D-Bus specific_gravity 0 is too.
        self.cal("start", M0)
        self.pour_counted(M0, 1000)
        r = self.cal("finish", M0, "--grams=200")
        self.assertIn("1000 ticks for 200.0 mL", r.stdout)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.2)
        self.cal("start", M0)
        self.pour_counted(M0, 1000)
        err, res = self.call("FinishCalibrationByWeight", "sdd", M0, 250.0, 0.0)
        self.assertEqual(err, "ok", res)
        self.assertEqual((res[0]["volume_ml"], res[0]["new_ml_per_tick"]), (250.0, 0.25))
        # A gravity out of range is a usage error of the client, InvalidArgs at the core.
        r = self.cal("finish", M0, "--grams=510", "--sg=1015", code=1)
        self.assertIn("Error: ", r.stderr)
        self.cal("start", M0)
        self.pour_counted(M0, 1000)
        err, msg = self.call("FinishCalibrationByWeight", "sdd", M0, 510.0, 1.3)
        self.assertEqual(err, "org.freedesktop.DBus.Error.InvalidArgs", msg)
        err, msg = self.call("FinishCalibration", "sd", M0, float("nan"))
        self.assertEqual(err, "org.freedesktop.DBus.Error.InvalidArgs", msg)
        err, msg = self.call("FinishCalibration", "sd", M0, 100001.0)
        self.assertEqual(err, "org.freedesktop.DBus.Error.InvalidArgs", msg)
        # Ounces: 16.907 US fl oz is 500.0 mL.
        r = self.cal("finish", M0, "--oz=16.907")
        self.assertIn("1000 ticks for 500.0 mL", r.stdout)

    def test_set_and_values(self):
        """Case 31 (standalone): set --ppg=21120 gives 0.179234; SetCalibration checks its argument."""
        r = self.cal("set", M0, "--ppg=21120")
        self.assertEqual(r.stdout.splitlines()[0], "kegboard.flow0 (Main Tap):")
        self.assertIn("  now:    0.179234 mL/tick (5.5793 ticks/mL), -3.12 %", r.stdout)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.179234)
        self.assertIn(": set, was 0.185 mL/tick\nml_per_tick = 0.179234   ; SF800\n", self.taps_text())
        self.core.wait_line(r"INFO     \(calibration\) Calibration set: meter=kegboard\.flow0 ml_per_tick 0\.185 -> "
                            r"0\.179234, stored: taps-file ")
        # The example's second step: a ticks_per_ml key gets 2.22222, applied as 1 / 2.22222.
        err, res = self.call("SetCalibration", "sd", M1, 0.45)
        self.assertEqual(err, "ok", res)
        self.assertEqual(res[0]["new_ml_per_tick"], 1 / 2.22222)
        self.assertRegex(self.taps_text(), r"\[kegboard\.flow1\]\nname = Guest Tap\n# calibration \d{4}-\d\d-\d\dT"
                                           r"\d\d:\d\d:\d\dZ: set, was 0\.454545 mL/tick\nticks_per_ml = 2\.22222\n$")
        for v in (0.0199, 5.01, float("inf")):
            err, msg = self.call("SetCalibration", "sd", M0, v)
            self.assertEqual(err, "org.freedesktop.DBus.Error.InvalidArgs", msg)
        # Not while a calibration runs.
        self.cal("start", M0)
        r = self.cal("set", M0, "--ml_per_tick=0.2", code=2)
        self.assertIn("is being calibrated", r.stderr)

    def test_busy(self):
        """Case 19 (standalone, tokens from the tokens file): flows and tokens on a calibrating tap."""
        self.assertEqual(self.call("StartFlow", "s", M0), ("ok", []))
        r = self.cal("start", M0, code=2)
        self.assertEqual(r.stderr, "Error: Tap kegboard.flow0 has an active flow; stop it first\n")
        self.assertEqual(self.call("StopFlow", "s", M0), ("ok", []))
        self.cal("start", M0)
        r = self.cal("start", M0, code=2)
        self.assertEqual(r.stderr, "Error: Tap kegboard.flow0 is already being calibrated\n")
        err, msg = self.call("StartFlow", "s", M0)
        self.assertEqual(err, BUSY, msg)
        n = len(self.core.output())
        self.producer.conn.send("FlowRequest", meter_name=M0, request="start_flow")
        self.core.wait_line(r"INFO     \(flowmanager\) Tap kegboard\.flow0 is being calibrated; not starting a flow",
                            start=n)
        err, msg = self.call("CancelCalibration", "s", M0)
        self.assertEqual(err, "ok", msg)
        self.mon.sync()
        self.assertEqual(self.tap(M0, "FlowState"), "completed")

    def test_quarantined(self):
        """Case 20."""
        self.stop_core()
        os.makedirs(os.path.join(self.tmp, "state"), exist_ok=True)
        with open(os.path.join(self.tmp, "state", "quarantine.json"), "w") as f:
            json.dump({"version": 1, "meters": {M0: {"since": "2026-11-26T12:10:02Z", "cuts": 2,
                                                     "max_pour_s": 300}}}, f)
        self.start_core()
        r = self.cal("start", M0, code=2)
        self.assertEqual(r.stderr, "Error: Tap kegboard.flow0 is quarantined (ghost-pour rule G7); ClearQuarantine "
                                   "lifts it\n")
        err, _ = self.call("StartCalibration", "s", M0)
        self.assertEqual(err, "org.kegbot.Core1.Error.Quarantined")

    def test_reset_and_rejected_readings(self):
        """Case 23: a board reset notice counts from 0; a reading rejected by max_tick_delta is not counted."""
        self.producer.baseline(M0, 5000)
        self.cal("start", M0)
        self.pour_counted(M0, 100)
        self.producer.conn.send("ControllerConnectedEvent", controller_name="kegboard", board_reset=True)
        self.core.wait_line(r"Controller kegboard was reset, counting its meters from 0")
        self.producer.baseline(M0, 30)
        caltest.wait_tap(self.bus, M0, "CalibrationTicks", 130)
        self.producer.baseline(M0, 1031)
        self.core.wait_line(r"Bad ticks report: meter=kegboard\.flow0 last=30 reading=1031; re-baselining")
        self.producer.readings[M0] = 1031
        self.pour_counted(M0, 70)
        self.assertEqual(self.tap(M0, "CalibrationTicks"), 200)
        self.assertEqual(self.call("CancelCalibration", "s", M0), ("ok", [200]))

    def test_shutdown(self):
        """Case 24: SIGTERM during a calibration: relay disabled, INFO, exit 0, nothing stored."""
        before = self.taps_text()
        self.cal("start", M0)
        self.pour_counted(M0, 500)
        self.core.signal(signal.SIGTERM)
        self.listener.wait(lambda m: caltest.relay_events([m], "kegboard.relay0") == ["disabled"], what="disabled")
        self.assertEqual(self.core.wait(), 0)
        self.core.wait_line(r"INFO     \(calibration\) Calibration of kegboard\.flow0 cancelled: shutdown")
        self.assertEqual(caltest.calibration_ended(self.mon, M0), [M0, "shutdown", 500, 0.185, 0.185])
        self.assertEqual(self.taps_text(), before)
        self.assertEqual(self.core.drinks(), [])
        # Its ticks are accounted for (meters.json): the restarted core does not count them again.
        with open(os.path.join(self.core.state_dir, "meters.json")) as f:
            self.assertEqual(json.load(f)["meters"][M0], {"reading": 500, "carry": 0})
        self.stop_core()
        self.start_core()
        self.producer.baseline(M0, 500)
        self.producer.pour(M0, 10)
        caltest.wait_tap(self.bus, M0, "TotalTicks", 10)

    def test_properties_rate_and_contract(self):
        """Case 35: CalibrationTicks changes at most 10 times a second during a fast pour and ends on the
        exact count; the result dictionary has the keys of section 5."""
        self.cal("start", M0)
        t0 = time.time()
        total = 0
        for _ in range(150):                    # 3 s, a report every 20 ms
            self.producer.pour(M0, 7, step=7)
            total += 7
            time.sleep(0.02)
        t1 = time.time()

        def ticks_changed(m):
            if m["member"] != "PropertiesChanged" or m.get("path") != tap_path(M0):
                return None
            iface, props, _ = payload(m)
            return props["CalibrationTicks"]["data"] if iface == TAP and "CalibrationTicks" in props else None

        # The property reads the count at once; its PropertiesChanged follows within the coalescing
        # interval, the last one with the exact count.
        self.mon.wait_signal(lambda m: ticks_changed(m) == total, what="CalibrationTicks = %d" % total)
        values = [v for v in map(ticks_changed, self.mon.signals("PropertiesChanged", tap_path(M0))) if v is not None]
        self.assertEqual(values[-1], total)
        self.assertLessEqual(len(values), 10 * (t1 - t0) + 3, values)
        err, res = self.call("FinishCalibration", "sd", M0, 200.0)
        self.assertEqual(err, "ok", res)
        self.assertEqual(sorted(res[0]), sorted(["meter", "ticks", "volume_ml", "old_ml_per_tick", "new_ml_per_tick",
                                                 "change_percent", "old_volume_ml", "storage", "location", "warnings",
                                                 "message"]))
        self.assertEqual((res[0]["meter"], res[0]["ticks"], res[0]["storage"], res[0]["location"]),
                         (M0, total, "taps-file", self.taps_path))
        self.assertAlmostEqual(res[0]["old_volume_ml"], total * 0.185, places=6)

    def test_access(self):
        """Case 32: the methods are root's and the operators' (group kegbot-admin); status is everyone's."""
        methods = [("StartCalibration", "s", [M0]), ("FinishCalibration", "sd", [M0, 500.0]),
                   ("FinishCalibrationByWeight", "sdd", [M0, 500.0, 1.015]), ("CancelCalibration", "s", [M0]),
                   ("SetCalibration", "sd", [M0, 0.2])]
        for method, sig, args in methods:
            err, msg = self.call(method, sig, *args, as_="nobody")
            self.assertEqual(err, "org.freedesktop.DBus.Error.AccessDenied", "%s: %s" % (method, msg))
        r = self.cal("start", M0, as_="nobody", code=4)
        self.assertEqual(r.stderr, "Error: Permission denied: run as root or as a member of group kegbot-admin\n")
        r = self.cal("status", as_="nobody")
        self.assertEqual(r.stdout.splitlines()[0].split(), ["METER", "NAME", "ML/TICK", "TICKS/ML", "SOURCE",
                                                            "CALIBRATION"])
        self.assertEqual(self.tap(M0, "CalibrationState"), "")
        # The service group kegbot may not; the operators (group kegbot-admin) may.
        err, msg = self.call("StartCalibration", "s", M0, as_="service-group")
        self.assertEqual(err, "org.freedesktop.DBus.Error.AccessDenied", msg)
        self.cal("start", M0, as_="service-group", code=4)
        self.cal("start", M0, as_="operator")
        self.assertEqual(self.call("CancelCalibration", "s", M0, as_="operator"), ("ok", [0]))

    def test_status(self):
        """status: one row per tap, sorted, a running calibration's count and times."""
        self.cal("start", M1)
        self.pour_counted(M1, 220)
        r = self.cal("status")
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "METER           NAME       ML/TICK   TICKS/ML  SOURCE     CALIBRATION")
        self.assertEqual(lines[1], "kegboard.flow0  Main Tap   0.185     5.40541   taps-file  -")
        self.assertRegex(lines[2], r"^kegboard\.flow1  Guest Tap  0\.454545  2\.2       taps-file  running: 220 ticks "
                                   r"\(~100\.0 mL\), 0:\d\d elapsed, (9:\d\d|10:00) left$")
        r = self.cal("status", M1)
        self.assertEqual(len(r.stdout.splitlines()), 2)
        r = self.cal("status", "kegboard.flow7", code=2)
        self.assertIn("No tap for meter kegboard.flow7", r.stderr)


class FollowTest(CalibrationCase):
    def test_follow(self):
        """start --follow: a line a second while the count changes, the end, and Ctrl-C leaves it running."""
        p = kbtest.Proc([kbtest.binary("kegbot_calibrate"), "start", M0, "--follow"], env=self.bus.env(),
                        name="kegbot_calibrate")
        self.procs.append(p)
        p.wait_line(r"kegbot_calibrate finish kegboard\.flow0 --grams", key="stdout")
        for _ in range(3):
            self.producer.pour(M0, 100)
            time.sleep(0.4)
        p.wait_line(r"^  300 ticks, ~55\.5 mL at the current calibration, 0:0\d elapsed$", key="stdout")
        self.assertEqual(self.call("CancelCalibration", "s", M0), ("ok", [300]))
        p.wait_line(r"^Calibration cancelled\.$", key="stdout")
        self.assertEqual(p.wait(), 0)
        ticks = [l for l in p.output("stdout") if l.startswith("  ")]
        self.assertLessEqual(len(ticks), 4)

        # Ctrl-C leaves it running.
        p = kbtest.Proc([kbtest.binary("kegbot_calibrate"), "start", M1, "--follow"], env=self.bus.env(),
                        name="kegbot_calibrate")
        self.procs.append(p)
        p.wait_line(r"kegbot_calibrate finish kegboard\.flow1 --grams", key="stdout")
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait(), 0)
        self.assertEqual(self.tap(M1, "CalibrationState"), "running")


class KeysTest(CalibrationCase):
    """Cases 2 and 10: which key is written, and where."""

    taps = """[kegboard.flow0]
name = Main Tap
ticks_per_ml = 5.4

[kegboard.flow1]
name = Guest Tap
ml_per_tick = 
  0.1
[kegboard.flow2]
name: Third
ml_per_tick: 0.185 ; with a comment
[kegboard.flow1]
ml_per_tick = 0.185
"""

    def finish(self, meter, ticks, ml):
        self.cal("start", meter)
        self.pour_counted(meter, ticks)
        return self.cal("finish", meter, "--ml=%s" % ml)

    def test_keys(self):
        # ticks_per_ml in the section: rewritten as ticks_per_ml, applied as 1 / the value written.
        self.finish(M0, 2703, 500)
        self.assertRegex(self.taps_text(), r"^\[kegboard\.flow0\]\nname = Main Tap\n# calibration [^\n]+\n"
                                           r"ticks_per_ml = 5\.40599\n\n\[kegboard\.flow1\]\n")
        self.assertEqual(self.tap(M0, "MlPerTick"), 1 / 5.40599)
        # A continued value and a repeated section: every key line of the tap, no continuation left.
        self.finish(M1, 1000, 250)
        text = self.taps_text()
        self.assertNotIn("  0.1\n", text)
        self.assertEqual(text.count("ml_per_tick = 0.25\n"), 2)
        # "key: value" and an inline comment.
        self.finish("kegboard.flow2", 1000, 300)
        self.assertIn("\nml_per_tick: 0.3 ; with a comment\n", self.taps_text())
        # The file reloads without an error and gives the same values.
        n = len(self.core.output())
        self.core.signal(signal.SIGHUP)
        self.core.wait_line(r"Found 3 taps, adding to tap manager", start=n)
        self.assertFalse([l for l in self.core.output()[n:] if "ERROR" in l])
        self.assertEqual(self.tap(M0, "MlPerTick"), 1 / 5.40599)
        self.assertEqual(self.tap(M1, "MlPerTick"), 0.25)
        self.assertEqual(self.tap("kegboard.flow2", "MlPerTick"), 0.3)


class DefaultKeyTest(CalibrationCase):
    """Case 3: the key inherited from [DEFAULT]."""

    taps = "[DEFAULT]\nticks_per_ml = 2.2\n\n[kegboard.flow0]\nname = Main Tap\n\n[kegboard.flow1]\nname = Guest Tap\n"

    def test_default_key(self):
        self.cal("start", M0)
        self.pour_counted(M0, 2703)
        self.cal("finish", M0, "--ml=500")
        self.assertRegex(self.taps_text(), r"^\[DEFAULT\]\nticks_per_ml = 2\.2\n\n\[kegboard\.flow0\]\nname = Main Tap\n"
                                           r"# calibration [^\n]+\nticks_per_ml = 5\.40599\n\n\[kegboard\.flow1\]\n"
                                           r"name = Guest Tap\n$")
        n = len(self.core.output())
        self.core.signal(signal.SIGHUP)
        self.core.wait_line(r"Found 2 taps, adding to tap manager", start=n)
        self.assertFalse([l for l in self.core.output()[n:] if "ERROR" in l])
        self.assertEqual(self.tap(M0, "MlPerTick"), 1 / 5.40599)
        self.assertEqual(self.tap(M1, "MlPerTick"), 1 / 2.2)


class FirstSightTest(CalibrationCase):
    taps = None     # no taps file at all

    def test_first_sight_and_new_file(self):
        """Cases 4 and 5: a tap created on first sight; the taps file created with its section, 0644."""
        self.assertFalse(os.path.exists(self.taps_path))
        self.cal("start", M0)
        self.assertTrue(self.tap(M0, "AutoCreated"))
        self.assertEqual(self.tap(M0, "CalibrationSource"), "default")
        self.pour_counted(M0, 1100)
        self.cal("finish", M0, "--ml=500")
        self.assertRegex(self.taps_text(), r"^\[kegboard\.flow0\]\n# calibration \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: 500 mL "
                                           r"over 1100 ticks, was 0\.454545 mL/tick\nml_per_tick = 0\.454545\n$")
        self.assertEqual(stat.S_IMODE(os.stat(self.taps_path).st_mode), 0o644)
        self.assertFalse(self.tap(M0, "AutoCreated"))
        self.assertEqual(self.tap(M0, "CalibrationSource"), "taps-file")
        # Another first-sight tap is appended to it.
        self.cal("set", M1, "--ticks_per_ml=2")
        self.assertIn("\n\n[kegboard.flow1]\n# calibration ", self.taps_text())
        self.assertTrue(self.taps_text().endswith(": set, was 0.454545 mL/tick\nml_per_tick = 0.5\n"))


class FileKindsTest(CalibrationCase):
    taps = None

    def test_symlink_and_crlf(self):
        """Cases 6 and 7."""
        self.stop_core()
        real = os.path.join(self.tmp, "real-taps.ini")
        with open(real, "w", newline="") as f:
            f.write("[kegboard.flow0]\r\nname = Main\r\nml_per_tick = 0.185\r\n")
        link = os.path.join(self.tmp, "taps-link.ini")
        os.symlink("real-taps.ini", link)
        self.start_core(taps_path=link)
        self.cal("set", M0, "--ml_per_tick=0.2")
        self.assertTrue(os.path.islink(link))
        with open(real, newline="") as f:
            text = f.read()
        self.assertRegex(text, r"^\[kegboard\.flow0\]\r\nname = Main\r\n# calibration [^\r\n]+\r\nml_per_tick = 0\.2\r\n$")
        r = self.cal("set", M1, "--ml_per_tick=0.3")
        self.assertIn("Saved to %s." % real, r.stdout)
        with open(real, newline="") as f:
            self.assertRegex(f.read(), r"\r\n\r\n\[kegboard\.flow1\]\r\n# calibration [^\r\n]+\r\nml_per_tick = 0\.3\r\n$")


class UnwritableTest(CalibrationCase):
    """Case 9: the core may not replace the file: exit 3, storage memory, the old file intact, no
    temporary file; in use until SIGHUP brings the file's value back. The core runs as root without the
    capabilities that bypass file permissions (CAP_DAC_OVERRIDE, CAP_FOWNER), so the directory's and
    the file's owners and modes decide, as for the kegbot user of the deployment."""

    taps = None

    def run_case(self, dir_mode, file_owner_nobody):
        self.stop_core()
        d = os.path.join(self.tmp, "etc")
        os.makedirs(d)
        path = os.path.join(d, "taps.ini")
        with open(path, "w") as f:
            f.write("[kegboard.flow0]\nml_per_tick = 0.185\n")
        os.chmod(path, 0o644)
        os.chown(d, busenv.NOBODY, busenv.NOBODY)
        os.chmod(d, dir_mode)
        if file_owner_nobody:
            os.chown(path, busenv.NOBODY, busenv.NOBODY)
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown"]
        self.start_core(prefix=prefix, taps_path=path)
        self.cal("start", M0)
        self.pour_counted(M0, 1000)
        r = self.cal("finish", M0, "--ml=200", code=3)
        self.assertIn("\nNot saved: ", r.stdout)
        self.assertTrue(r.stdout.endswith(". In use until the core reloads its taps or restarts.\n"), r.stdout)
        self.assertIn("Warning: Could not save the calibration of kegboard.flow0 to %s: " % path, r.stderr)
        self.core.wait_line(r"ERROR    \(calibration\) Could not save the calibration of kegboard\.flow0 to " +
                            re.escape(path) + r": Permission denied.*; in use until the next reload or restart")
        with open(path) as f:
            self.assertEqual(f.read(), "[kegboard.flow0]\nml_per_tick = 0.185\n")
        self.assertEqual(os.listdir(d), ["taps.ini"])
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.2)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "memory")
        n = len(self.core.output())
        self.core.signal(signal.SIGHUP)
        self.core.wait_line(r"Found 1 taps, adding to tap manager", start=n)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.185)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "taps-file")
        return r

    def test_unwritable_directory(self):
        r = self.run_case(0o755, False)
        self.assertIn("(cannot create a file in ", r.stderr)

    def test_other_owner_in_sticky_directory(self):
        r = self.run_case(0o1777, True)
        self.assertIn("belongs to nobody; chown root:root ", r.stderr)


class GhostModesTest(CalibrationCase):
    def test_log_and_off(self):
        """Case 26: with the filter in log or off mode the calibration behaves the same."""
        for mode in ("log", "off"):
            self.stop_core()
            self.start_core("--ghost_filter=" + mode)
            self.cal("start", M0)
            self.pour_counted(M0, 1000, step=20)
            self.mon.sync()
            self.assertFalse([m for m in self.listener.seen() if m["event"] == "FlowUpdate"], mode)
            self.cal("finish", M0, "--ml=%d" % (185 if mode == "log" else 190))
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.19)
        self.assertFalse(self.mon.signals("FlowUpdated"))
        self.assertFalse(self.mon.signals("GhostFlow"))


class TimeoutTest(CalibrationCase):
    flags = ("--calibration_timeout_s=60",)

    def test_timeout(self):
        """Case 17 with a 60 s timeout."""
        r = self.cal("start", M0)
        self.assertIn("(at most 1 min, until ", r.stdout)
        self.pour_counted(M0, 300)
        ended = caltest.calibration_ended(self.mon, M0, timeout=75)
        self.assertEqual(ended, [M0, "timeout", 300, 0.185, 0.185])
        started = self.tap(M0, "CalibrationState")
        self.assertEqual(started, "")
        self.core.wait_line(r"WARNING  \(calibration\) Calibration timed out: meter=kegboard\.flow0 ticks=300; "
                            r"calibration unchanged")
        self.assertEqual(self.listener.relay("kegboard.relay0")[-1], "disabled")
        self.assertFalse(self.tap(M0, "RelayEnabled"))
        self.cal("finish", M0, "--ml=500", code=2)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.185)


class SimCase(CalibrationCase):
    """Ticks from kegboard_sim through kegboard_daemon, as a user's board sends them."""

    def setUp(self):
        super().setUp()
        self.sim = kbtest.Sim(self.tmp, "--nobuzzer", "--meters=2")
        self.procs.append(self.sim)
        self.daemon = self.sim.daemon(self.core.port)
        self.procs.append(self.daemon)
        ctrl = busenv.path_encode(ROOT + "/controller", "kegboard")
        kbtest.wait_until(lambda: ctrl in self.bus.managed_objects(), timeout=15, what="the board on D-Bus")

    def sim_pour(self, meter, ticks, seconds):
        self.sim.cmd("pour %s %d %g" % (meter.split(".")[1], ticks, seconds))


class DoneWhenTest(SimCase):
    """The issue's "done when", standalone: start, a 1000-tick pour through kegboard_sim, finish --ml=500:
    2.0 ticks/mL in the taps file, and the next pour of 1000 ticks is a drink of 500 mL."""

    taps = "[kegboard.flow0]\nname = Main Tap\nticks_per_ml = 2.2\n"

    def test_done_when(self):
        self.cal("start", M0)
        self.sim_pour(M0, 1000, 4)
        caltest.wait_tap(self.bus, M0, "CalibrationTicks", 1000, timeout=15)
        r = self.cal("finish", M0, "--ml=500")
        self.assertEqual(r.stdout.splitlines()[0], "kegboard.flow0 (Main Tap): 1000 ticks for 500.0 mL")
        self.assertIn("  now:    0.5 mL/tick (2 ticks/mL), +10.00 %", r.stdout)
        self.assertRegex(self.taps_text(), r"^\[kegboard\.flow0\]\nname = Main Tap\n# calibration [^\n]+: 500 mL "
                                           r"over 1000 ticks, was 0\.454545 mL/tick\nticks_per_ml = 2\n$")
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.5)
        self.assertEqual(self.core.drinks(), [])

        self.sim_pour(M0, 1000, 8)
        drink = self.mon.wait_signal(lambda m: m["member"] == "DrinkRecorded", timeout=30, what="the next pour")
        self.assertEqual(payload(drink)[5:7], [1000, 500.0])
        self.assertEqual([(d["ticks"], d["volume_ml"]) for d in self.core.drinks()], [(1000, 500.0)])


class OtherTapTest(SimCase):
    """Case 22 through the board: while flow0 calibrates, a real pour on flow1 is one drink, a trickle on
    it afterwards is ghost as usual, and an all-taps token opens flow1's valve and starts nothing on flow0."""

    taps = """[kegboard.flow0]
name = Main Tap
ml_per_tick = 0.185
relay_name = kegboard.relay0

[kegboard.flow1]
name = Guest Tap
ml_per_tick = 0.185
relay_name = kegboard.relay1
valve_closed_gate = false
"""
    tokens = busenv.TOKENS_INI

    def test_other_tap(self):
        self.cal("start", M0)
        self.sim_pour(M0, 3000, 50)
        self.sim.cmd("trace flow1 5:0 16:30 12:0 20:1.5")
        drink = self.mon.wait_signal(lambda m: m["member"] == "DrinkRecorded", timeout=45, what="flow1's drink")
        self.assertEqual(payload(drink)[3], M1)
        self.assertLessEqual(abs(payload(drink)[6] - 480), 480 * 0.15)
        ghost = self.mon.wait_signal(lambda m: m["member"] == "GhostFlow", timeout=60, what="the trickle's episode")
        self.assertEqual(payload(ghost)[:2], [M1, "G2"])
        m = self.sim.wait_line(r"^\d+ TRACE meter=flow1 state=end reports=\d+ ticks=(\d+)", key="stdout", timeout=5)
        self.assertEqual(payload(drink)[5] + self.tap(M1, "GhostTicks"), int(m.group(1)))
        self.assertEqual(len([d for d in self.core.drinks() if d["meter_name"] == M1]), 1)

        n = len(self.core.output())
        self.assertEqual(self.call("AddAuthToken", "sss", "", "core.rfid", "0415ab23cd"), ("ok", []))
        self.listener.wait(lambda m: caltest.relay_events([m], "kegboard.relay1") == ["enabled"], what="relay1")
        self.core.wait_line(r"INFO     \(flowmanager\) Tap kegboard\.flow0 is being calibrated; not starting a flow",
                            start=n)
        self.assertEqual(self.tap(M1, "FlowUsername"), "dave")
        self.assertEqual(self.tap(M0, "FlowState"), "")

        # flow0 counted its pour and nothing else happened on it.
        caltest.wait_tap(self.bus, M0, "CalibrationTicks", 3000, timeout=30)
        self.mon.sync()
        for member, index in (("FlowUpdated", 1), ("DrinkRecorded", 3), ("GhostFlow", 0)):
            self.assertFalse([s for s in self.mon.signals(member) if payload(s)[index] == M0], member)
        self.assertEqual(self.tap(M0, "GhostTicks"), 0)
        self.assertEqual(self.tap(M0, "TotalTicks"), 3000)
        r = self.cal("finish", M0, "--ml=555")
        self.assertIn("3000 ticks for 555.0 mL", r.stdout)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.185)


class NoCoreTest(unittest.TestCase):
    def test_core_not_running(self):
        """Case 33: every command but convert exits 4 when the core is not on the bus."""
        with kbtest.TempDir() as tmp:
            bus = busenv.PrivateBus(tmp)
            try:
                for args in (["start", M0], ["finish", M0, "--ml=500"], ["cancel", M0], ["status"],
                             ["set", M0, "--ppl=450"]):
                    r = calibrate(bus, *args)
                    self.assertEqual(r.returncode, 4, "%s: %s" % (args, r.stderr))
                    self.assertEqual(r.stderr, "Error: kegbot_core is not running (org.kegbot.Core1 is not on the "
                                               "system bus)\n")
                r = calibrate(bus, "convert", "--ppl=450")
                self.assertEqual((r.returncode, r.stdout),
                                 (0, "2.22222 mL/tick = 0.45 ticks/mL = 1703.44 pulses/US gal = 450 pulses/L\n"))
            finally:
                bus.stop()

    def test_usage_and_convert(self):
        """Case 34: usage errors exit 1 before the core is asked; case 31: convert needs no core."""
        with kbtest.TempDir() as tmp:
            bus = busenv.PrivateBus(tmp)
            try:
                for args, text in (
                        ([], "Error: no command; expected start, finish, cancel, status, set or convert"),
                        (["frob"], "Error: unknown command 'frob'; expected start, finish, cancel, status, set or "
                                   "convert"),
                        (["start"], "Error: start needs a METER, e.g. kegboard.flow0"),
                        (["finish", M0], "Error: finish needs exactly one of --ml, --oz and --grams"),
                        (["finish", M0, "--ml=500", "--grams=510"],
                         "Error: finish needs exactly one of --ml, --oz and --grams"),
                        (["set", M0, "--ppg=21120", "--ppl=450"],
                         "Error: set needs exactly one of --ml_per_tick, --ticks_per_ml, --ppg and --ppl"),
                        (["cancel", M0, M1], "Error: unexpected argument 'kegboard.flow1'"),
                        (["status", M0, M1], "Error: unexpected argument 'kegboard.flow1'")):
                    r = calibrate(bus, *args)
                    self.assertEqual(r.returncode, 1, "%s: %s" % (args, r.stderr))
                    self.assertIn(text + "\n", r.stderr, args)
                    self.assertEqual(r.stdout, "", args)
                r = calibrate(bus, "--help")
                self.assertEqual(r.returncode, 1)
                self.assertIn("USAGE: kegbot_calibrate [flags]", r.stdout + r.stderr)
                r = calibrate(bus, "convert", "--ppg=21120")
                self.assertEqual((r.returncode, r.stdout),
                                 (0, "0.179234 mL/tick = 5.57931 ticks/mL = 21120 pulses/US gal = 5579.31 pulses/L\n"))
            finally:
                bus.stop()


if __name__ == "__main__":
    kbtest.main()
