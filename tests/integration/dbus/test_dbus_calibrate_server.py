"""Calibrating a tap of a legacy controller (calibration.md section 9, cases 19, 21, 25, 27-29 and 31 in
server mode): kegbot_calibrate and the D-Bus methods against the real kegbot_core on a private bus,
talking to the stand-in Kegbot Server with profile 1.3 (POST taps/<meter>/calibrate, then a tap sync)
and profile 2.0 (410 Gone: the value is kept locally in calibration.json)."""
import json
import os
import re
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "backend"))
import caltest  # noqa: E402
import kbtest  # noqa: E402
from busenv import IFACE, ROOT, payload  # noqa: E402
from caltest import CalibrationCase  # noqa: E402
from standin import API_KEY, StandIn  # noqa: E402

M0, M1 = "kegboard.flow0", "kegboard.flow1"
MANAGER = IFACE + ".Manager"


class ServerCase(CalibrationCase):
    """A core in server mode whose taps come from the stand-in; flow0 at 0.185 mL/tick there."""

    profile = "1.3"
    mount = "/api/"
    # Server mode takes the taps from the server and only their ghost-filter settings from the file.
    taps = "[DEFAULT]\nvalve_closed_gate = false\n"
    api_timeout = 2

    def setUp(self):
        self.standin = StandIn(profile=self.profile)
        self.standin.set_meter(M0, 1 / 0.185)
        self.flags = ("--api_url=" + self.standin.url(self.mount), "--api_key=" + API_KEY,
                      "--api_timeout=%d" % self.api_timeout,
                      "--retry_interval=1", "--sync_interval=2")
        try:
            super().setUp()
            self.wait_synced()
        except BaseException:
            self.standin.stop()
            raise

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.standin.stop()

    def wait_synced(self):
        kbtest.wait_until(lambda: caltest.tap_path(M0) in self.bus.managed_objects(), timeout=10,
                          what="the server's taps")
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.185)

    def server_ticks_per_ml(self, meter):
        return next(m["ticks_per_ml"] for m in self.standin.state()["meters"] if m["name"] == meter)

    def status_after(self, n):
        """Waits for the stand-in to have answered a GET status after its n-th request."""
        return kbtest.wait_until(lambda: [r for r in self.standin.requests()[n:] if r["endpoint"] == "status"
                                          and r["status"] == 200], timeout=10, what="a GET status")

    def calibrated(self, meter, ticks):
        self.cal("start", meter)
        self.pour_counted(meter, ticks)


class Profile13Test(ServerCase):
    def test_stored_on_server(self):
        """Case 27: one POST with the key, then a sync; the server's meter has 1 / new."""
        r = self.cal("start", M0)
        self.assertRegex(r.stdout.splitlines()[1], r"^Valve kegboard\.relay0 is open until the calibration ends")
        self.listener.wait(lambda m: caltest.relay_events([m], "kegboard.relay0") == ["enabled"], what="enabled")
        self.pour_counted(M0, 2703)
        n = len(self.standin.requests())
        r = self.cal("finish", M0, "--ml=500")
        url = self.standin.url() + "taps/kegboard.flow0/calibrate"
        self.assertEqual(r.stdout.splitlines(), [
            "kegboard.flow0 (Main Tap): 2703 ticks for 500.0 mL",
            "  before: 0.185 mL/tick (5.40541 ticks/mL); the pour read 500.1 mL",
            "  now:    0.18498 mL/tick (5.40599 ticks/mL), -0.01 %",
            "Saved on Kegbot Server (%s); taps re-synced." % url])
        self.assertEqual(r.stderr, "")
        posts = self.standin.requests("calibrate")
        self.assertEqual(len(posts), 1)
        self.assertEqual((posts[0]["method"], posts[0]["path"], posts[0]["form"], posts[0]["status"]),
                         ("POST", "/api/taps/kegboard.flow0/calibrate", {"ml_per_tick": "0.18498"}, 200))
        self.assertEqual(posts[0]["headers"].get("X-Kegbot-Api-Key"), API_KEY)
        self.assertAlmostEqual(self.server_ticks_per_ml(M0), 1 / 0.18498, places=9)
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.18498)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "server")
        self.assertEqual(self.tap(M0, "CalibrationState"), "")
        self.assertFalse(self.tap(M0, "RelayEnabled"))
        self.assertEqual(caltest.calibration_ended(self.mon, M0), [M0, "finished", 2703, 0.185, 0.18498])
        self.core.wait_line(r"INFO     \(calibration\) Calibration finished: meter=kegboard\.flow0 ticks=2703 "
                            r"volume_ml=500\.0 ml_per_tick 0\.185 -> 0\.18498 \(-0\.01 %\), stored: server " +
                            re.escape(url))
        # The sync that follows the POST: the tap follows the server, which has the new value.
        requests = self.standin.requests()[n:]
        first = next(i for i, q in enumerate(requests) if q["endpoint"] == "calibrate")
        kbtest.wait_until(lambda: any(q["endpoint"] == "status" for q in self.standin.requests()[n + first:]),
                          timeout=5, what="the sync after the calibration")
        self.assertAlmostEqual(self.tap(M0, "MlPerTick"), 0.18498, places=12)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "server")
        # Nothing was poured as far as the server knows.
        self.assertEqual(self.standin.drinks(), [])

    def test_failures(self):
        """Case 28: 400, the server gone, 401: exit 5 and the calibration keeps running."""
        self.calibrated(M0, 2703)
        self.standin.fail("calibrate", "400", count=1, message="Tap does not have a meter!")
        r = self.cal("finish", M0, "--ml=500", code=5)
        self.assertEqual(r.stderr, "Error: Kegbot Server refused the calibration: 400 BadRequestError: Tap does not "
                                   "have a meter!\nThe calibration is still running: run finish again once Kegbot "
                                   "Server answers.\n")
        self.core.wait_line(r"WARNING  \(calibration\) Kegbot Server refused the calibration of kegboard\.flow0: 400 "
                            r"BadRequestError: Tap does not have a meter!")
        self.assertEqual(self.tap(M0, "CalibrationState"), "running")
        self.assertTrue(self.tap(M0, "RelayEnabled"))

        # Unreachable; back again, and the ticks counted meanwhile are in the result.
        self.standin.refuse()
        r = self.cal("finish", M0, "--ml=500", code=5)
        self.assertIn("Error: Kegbot Server unreachable: ", r.stderr)
        self.assertEqual(self.tap(M0, "CalibrationState"), "running")
        self.standin.accept()
        self.pour_counted(M0, 297)
        r = self.cal("finish", M0, "--ml=500")
        self.assertEqual(r.stdout.splitlines()[0], "kegboard.flow0 (Main Tap): 3000 ticks for 500.0 mL")
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.166667)
        self.assertEqual([q["form"]["ml_per_tick"] for q in self.standin.requests("calibrate") if q["status"] == 200],
                         ["0.166667"])

        # A refused key.
        self.calibrated(M0, 1000)
        self.standin.fail("calibrate", "401", count=1)
        r = self.cal("finish", M0, "--ml=200", code=5)
        self.assertIn("Error: Kegbot Server refused the API key (401)\n", r.stderr)
        self.assertEqual(self.bus.get(ROOT, MANAGER, "BackendState"), "unauthorized")
        self.assertEqual(self.tap(M0, "CalibrationState"), "running")
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.166667)

    def test_set_unknown_and_removed(self):
        """Cases 31, 21 and 25 in server mode."""
        r = self.cal("set", M0, "--ppg=21120")
        self.assertIn("  now:    0.179234 mL/tick (5.5793 ticks/mL), -3.12 %", r.stdout)
        self.assertEqual([q["form"] for q in self.standin.requests("calibrate")], [{"ml_per_tick": "0.179234"}])
        self.assertAlmostEqual(self.server_ticks_per_ml(M0), 1 / 0.179234, places=9)
        self.core.wait_line(r"INFO     \(calibration\) Calibration set: meter=kegboard\.flow0 ml_per_tick 0\.185 -> "
                            r"0\.179234, stored: server ")

        # The server's taps only: no first-sight tap.
        r = self.cal("start", "kegboard.flow7", code=2)
        self.assertEqual(r.stderr, "Error: No tap for meter kegboard.flow7: its taps come from Kegbot Server\n"
                                   "kegbot_calibrate status lists the taps.\n")
        err, _ = self.call("StartCalibration", "s", "kegboard.flow7")
        self.assertEqual(err, "org.kegbot.Core1.Error.UnknownMeter")
        self.assertNotIn(caltest.tap_path("kegboard.flow7"), self.bus.managed_objects())

        # The tap goes away in a sync while it is calibrated.
        self.calibrated(M1, 300)
        self.standin.remove_tap(M1)
        self.assertEqual(self.call("Sync")[0], "ok")
        self.assertEqual(caltest.calibration_ended(self.mon, M1, timeout=10)[:3], [M1, "tap-removed", 300])
        self.core.wait_line(r"WARNING  \(calibration\) Calibration of kegboard\.flow1 cancelled: tap removed")
        self.listener.wait(lambda m: caltest.relay_events([m], "kegboard.relay1")[-1:] == ["disabled"],
                           what="relay1 disabled")
        r = self.cal("finish", M1, "--ml=100", code=2)

    def test_token_on_calibrating_tap(self):
        """Case 19 in server mode: the lookup of a core.onewire token succeeds, no flow starts on the tap."""
        self.calibrated(M0, 100)
        n = len(self.core.output())
        self.assertEqual(self.call("AddAuthToken", "sss", M0, "core.onewire", "0000111122223333"), ("ok", []))
        self.core.wait_line(r"INFO     \(flowmanager\) Tap kegboard\.flow0 is being calibrated; not starting a flow",
                            start=n)
        self.assertEqual([q["status"] for q in self.standin.requests("auth")], [200])
        self.assertEqual(self.tap(M0, "FlowState"), "")
        self.assertEqual(self.tap(M0, "FlowUsername"), "")
        self.mon.sync()
        self.assertFalse(self.mon.signals("FlowUpdated"))
        self.assertFalse([m for m in self.listener.seen() if m["event"] == "FlowUpdate"])
        # Still counting, and the token changed nothing on the tap.
        self.pour_counted(M0, 100)
        self.assertEqual(self.call("CancelCalibration", "s", M0), ("ok", [200]))
        self.listener.wait(lambda m: caltest.relay_events([m], "kegboard.relay0") == ["disabled"], what="disabled")
        self.assertEqual(self.tap(M0, "FlowState"), "")


class StoringTest(ServerCase):
    """Sections 2.4 step 7 and 2.5: a finish waiting for the server's answer."""

    api_timeout = 60

    def test_busy_while_storing_and_shutdown(self):
        """While the POST hangs, cancel and finish are Busy and the calibration runs on; an orderly
        shutdown abandons the store, its caller gets ShuttingDown (exit 4), nothing is changed."""
        self.calibrated(M0, 1000)
        self.standin.fail("calibrate", "hang")
        p = kbtest.Proc([kbtest.binary("kegbot_calibrate"), "finish", M0, "--ml=200", "--timeout=120"],
                        env=self.bus.env(), name="kegbot_calibrate")
        self.procs.append(p)
        kbtest.wait_until(lambda: self.standin.requests("calibrate"), what="the calibrate POST")
        for method, sig, args in (("CancelCalibration", "s", [M0]), ("FinishCalibration", "sd", [M0, 200.0])):
            err, msg = self.call(method, sig, *args)
            self.assertEqual((err, msg), ("org.kegbot.Core1.Error.Busy",
                                          "The result of the calibration of kegboard.flow0 is being stored"))
        self.assertEqual(self.tap(M0, "CalibrationState"), "running")
        self.core.signal(signal.SIGTERM)
        self.assertEqual(p.wait(), 4)
        self.assertEqual(p.output("stderr"), ["Error: kegbot_core is shutting down"])
        self.assertEqual(self.core.wait(), 0)
        self.core.wait_line(r"INFO     \(calibration\) Storing the calibration of kegboard\.flow0 abandoned: shutdown")
        self.assertEqual(caltest.calibration_ended(self.mon, M0), [M0, "shutdown", 1000, 0.185, 0.185])
        self.standin.clear_failures()
        self.assertEqual(self.server_ticks_per_ml(M0), 1 / 0.185)


class Profile20Test(ServerCase):
    profile = "2.0"
    mount = "/api/v1/"

    def overrides(self):
        with open(os.path.join(self.core.state_dir, "calibration.json")) as f:
            return json.load(f)

    def test_kept_locally(self):
        """Case 29: 410 keeps the value in calibration.json until the server's value changes."""
        self.calibrated(M0, 2703)
        r = self.cal("finish", M0, "--ml=500", code=3)
        path = os.path.join(self.core.state_dir, "calibration.json")
        self.assertEqual(r.stdout.splitlines()[-1], "Kept locally in %s (Kegbot Server refuses calibrations)." % path)
        self.assertEqual(r.stderr, "Warning: Kegbot Server 2.0 refuses calibrations through its legacy API. The new "
                                   "value is used locally (volumes shown, ghost-filter thresholds), but the server "
                                   "computes drink volumes from ticks with its own value: set ticks_per_ml = 5.40599 "
                                   "for this meter in the server's admin pages.\n")
        self.assertEqual([q["status"] for q in self.standin.requests("calibrate")], [410])
        self.core.wait_line(r"WARNING  \(calibration\) Kegbot Server does not accept calibrations \(410 Gone\); "
                            r"calibration of kegboard\.flow0 kept locally in " + re.escape(path))
        o = self.overrides()
        self.assertEqual(o["version"], 1)
        self.assertEqual(list(o["overrides"]), [M0])
        self.assertEqual(o["overrides"][M0]["ml_per_tick"], 0.18498)
        self.assertAlmostEqual(o["overrides"][M0]["server_ml_per_tick"], 0.185, places=12)
        self.assertRegex(o["overrides"][M0]["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.18498)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "local-override")
        self.assertAlmostEqual(self.server_ticks_per_ml(M0), 1 / 0.185, places=9)

        # Three syncs later, and after a restart, the override still holds.
        for _ in range(3):
            self.status_after(len(self.standin.requests()))
        self.assertEqual(self.tap(M0, "MlPerTick"), 0.18498)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "local-override")
        self.assertEqual(self.stop_core(), 0)
        n = len(self.standin.requests())
        self.start_core()
        self.status_after(n)
        caltest.wait_tap(self.bus, M0, "MlPerTick", 0.18498)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "local-override")

        # Someone changes the meter on the server: the override goes, the server's value is used.
        self.standin.set_meter(M0, 2.0)
        self.core.wait_line(r"INFO     \(calibration\) Calibration override of kegboard\.flow0 dropped: Kegbot Server "
                            r"now says 0\.5 mL/tick", timeout=10)
        caltest.wait_tap(self.bus, M0, "MlPerTick", 0.5)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "server")
        self.assertEqual(self.overrides()["overrides"], {})
        self.assertEqual(payload(self.mon.wait_signal(lambda m: m["member"] == "CalibrationEnded", what="ended"))[1],
                         "finished")


class EventControllerTest(CalibrationCase):
    """Case 30: a tap of an event controller (Kegbot Server 2.0's Kegboard Event Protocol, against the
    stand-in receiver): the calibration is kept in the taps file and the device reports it at once in a
    status event (calibration.md section 4.4); its valve belongs to grants."""

    def setUp(self):
        sys.path.insert(0, os.path.join(HERE, "..", "event"))
        from eventtest import EventStandIn
        self.receiver = EventStandIn(require_auth=False)
        # The heartbeat interval is an hour: a status within seconds is the calibration's own.
        self.flags = ("--event_url=" + self.receiver.event_url(), "--api_timeout=2", "--event_retry_interval=1",
                      "--event_heartbeat_interval=3600")
        try:
            super().setUp()
        except BaseException:
            self.receiver.stop()
            raise

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.receiver.stop()

    def statuses(self):
        return [e for e in self.receiver.events() if e["type"] == "status" and e["device"] == "kegboard"]

    def test_taps_file_then_status(self):
        kbtest.wait_until(self.statuses, timeout=10, what="the boot status")
        r = self.cal("start", M0)
        self.assertEqual(r.stdout.splitlines()[1],
                         "Valve kegboard.relay0 follows grants: present a token, or open it by hand.")
        self.assertFalse(self.tap(M0, "RelayEnabled"))
        self.pour_counted(M0, 2703)
        n = len(self.statuses())
        r = self.cal("finish", M0, "--ml=500")
        self.assertEqual(r.stdout.splitlines()[-1], "Saved to %s; Kegbot Server takes it from the device's next "
                         "status event." % self.taps_path)
        self.assertRegex(self.taps_text(), caltest.EXAMPLE_FLOW0_AFTER)
        self.assertEqual(self.tap(M0, "CalibrationSource"), "taps-file")
        st = kbtest.wait_until(lambda: self.statuses()[n:], timeout=10, what="a status after the calibration")
        meters = {m["meter_number"]: m["ml_per_tick"] for m in st[-1]["data"]["meters"]}
        self.assertEqual(meters[0], 0.18498)
        self.assertEqual(st[-1]["data"]["state"], "heartbeat")
        # The calibration never switched the event controller's valve.
        self.assertEqual(self.listener.relay("kegboard.relay0"), [])


if __name__ == "__main__":
    kbtest.main()
