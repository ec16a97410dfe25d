"""Both server backends at once (kegboard-event-protocol.md sections 1.1-1.3): --api_url at the legacy
stand-in (profile 1.3), --event_url at the Server 2.0 receiver (a second stand-in), and
--controller_backends=kegboard=legacy, so board "kegboard" reports through the legacy API and board
"kegboard-b" through the event protocol. Scenario 28 (never both backends), scenario 30 (taps of event
controllers) and the five flag errors of --controller_backends."""
import os
import signal
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kbtest  # noqa: E402
from eventtest import EventCore, EventStandIn  # noqa: E402
from standin import API_KEY, StandIn  # noqa: E402

LEGACY, EVENT = "kegboard", "kegboard-b"


class Mixed(unittest.TestCase):
    def setUp(self):
        self.tmpd = kbtest.TempDir()
        self.tmp = self.tmpd.__enter__()
        self.legacy = StandIn()
        self.receiver = EventStandIn(require_auth=False)
        self.cores = []

    def tearDown(self):
        try:
            for c in self.cores:
                c.kill()
            violations = self.receiver.violations()
        finally:
            self.legacy.stop()
            self.receiver.stop()
            self.tmpd.__exit__(None, None, None)
        self.assertEqual(violations, [], "the receiver's checks of every batch (section 16.2)")

    def core(self, taps, *flags):
        c = EventCore(self.tmp, self.receiver, "--api_url=" + self.legacy.url(), "--api_key=" + API_KEY,
                      "--retry_interval=1", "--sync_interval=2", "--controller_backends= kegboard = legacy ",
                      *flags, taps=taps)
        self.cores.append(c)
        return c

    def legacy_paths(self, endpoint):
        return [r["path"] for r in self.legacy.requests(endpoint)]

    def test_never_both_backends(self):
        """Scenario 28: each board's drinks, temperatures, tokens and provisioning go to its backend only."""
        # The receiver grants nothing: a valve of the event board that opens is the legacy lookup's doing.
        self.receiver._event("POST", "policy", {"device": EVENT, "decide": "none"})
        c = self.core("[kegboard-b.flow0]\nticks_per_ml = 2.2\nrelay_name = kegboard-b.relay0\n")
        c.wait_line(r"\(main\) Running in server mode, api_url=http://127\.0\.0\.1:\d+/api/")
        c.wait_line(r"\(main\) Kegboard Event Protocol: event_url=")
        c.wait_line(r"Adding tap: kegboard\.flow0 ml_per_tick=0\.4545")
        c.wait_line(r"Registering new tap: kegboard-b\.flow0")

        # Provisioning: only the legacy board is created on the legacy server.
        c.conn.send("ControllerConnectedEvent", controller_name=EVENT, serial_number="KB-B")
        c.wait_line(r"Controller kegboard-b reports through the Kegboard Event Protocol as device kegboard-b")
        c.conn.send("ControllerConnectedEvent", controller_name=LEGACY, serial_number="KB-A")
        kbtest.wait_until(lambda: self.legacy.requests("controllers"), what="the legacy board's provisioning")
        self.assertEqual([r["form"]["name"] for r in self.legacy.requests("controllers")
                          if r["method"] == "POST"], [LEGACY])

        # Drinks.
        c.pour("kegboard-b.flow0", 220)
        c.pour("kegboard.flow0", 440)
        self.legacy.wait_drinks(1)
        drinks = self.receiver.wait_event_drinks(1)
        self.assertEqual([(d["device"], d["meter_number"], d["ticks"]) for d in drinks], [(EVENT, 0, 220)])
        self.assertEqual(self.legacy_paths("drink"), ["/api/taps/kegboard.flow0"])

        # Temperatures: the event board's first, so the legacy post is the sentinel.
        c.conn.send("ThermoEvent", sensor_name="kegboard-b.thermo-1", sensor_value=4.5)
        self.receiver.wait_events(lambda e: e["type"] == "temperature" and e["device"] == EVENT,
                                  what="the event board's temperature")
        c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-2", sensor_value=5.0)
        kbtest.wait_until(lambda: self.legacy.requests("thermo"), what="the legacy board's temperature")
        self.assertEqual(self.legacy_paths("thermo"), ["/api/thermo-sensors/kegboard.thermo-2"])
        self.assertEqual([e["device"] for e in self.receiver.events("temperature")], [EVENT])

        # Tokens: a token event for the event board, a lookup for the legacy one (the sentinel).
        c.conn.send("TokenAuthEvent", meter_name="kegboard-b.flow0", auth_device_name="core.rfid",
                    token_value="aabbcc", status="added")
        self.receiver.wait_events(lambda e: e["type"] == "token", what="the event board's token event")
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                    token_value="ddeeff", status="added")
        kbtest.wait_until(lambda: self.legacy.requests("auth"), what="the legacy board's token lookup")
        self.assertEqual(self.legacy_paths("auth"), ["/api/auth-tokens/core.rfid/ddeeff"])
        self.assertEqual([e["data"]["token"] for e in self.receiver.events("token")], ["aabbcc"])

        # A token addressed to every tap (as kegboard_daemon and rfid_daemon send them): a token event
        # for the event board, and a lookup whose user owns flows on the legacy board's taps only; the
        # event board's valve stays with its grants.
        c.conn.send("TokenAuthEvent", meter_name="__all_taps__", auth_device_name="core.rfid",
                    token_value="DEADBEEF", status="added")
        owned, seen = set(), []
        while owned != {"kegboard.flow0", "kegboard.flow1"}:
            m, more = c.conn.recv_until(lambda m: m.get("event") == "FlowUpdate" and m["data"]["username"] == "alice",
                                        timeout=10, what="alice's flows on the legacy board")
            owned.add(m["data"]["meter_name"])
            seen += more
        self.receiver.wait_events(lambda e: e["type"] == "token" and e["data"]["token"] == "deadbeef",
                                  what="the event board's token event")
        self.assertEqual([m for m in seen if m.get("event") == "FlowUpdate" and m["data"]["meter_name"] == "kegboard-b.flow0"
                          and m["data"]["username"]], [])
        self.assertEqual([m for m in seen if m.get("event") == "SetRelayOutputEvent"
                          and m["data"]["output_name"] == "kegboard-b.relay0" and m["data"]["output_mode"] == "enabled"],
                         [])

    def test_taps_of_event_controllers(self):
        """Scenario 30: the server's tap of an event controller is ignored, the taps file defines it,
        and neither a sync nor a reload removes a tap of the other kind."""
        self.legacy.seed(taps=[{"name": "B Tap", "meter": "kegboard-b.flow0", "ticks_per_ml": 9.0}])
        taps = ("[kegboard-b.flow0]\nticks_per_ml = 2.2\n"
                "[kegboard.flow1]\nticks_per_ml = 9\n"
                "[kegboard.flow0]\nmin_volume_ml = 50\n")
        c = self.core(taps)
        c.wait_line(r"WARNING .*Taps file entry kegboard\.flow1 ignored: controller kegboard uses the legacy API")
        c.wait_line(r"DEBUG .*Ignoring server tap kegboard-b\.flow0: controller kegboard-b reports through the "
                    r"event protocol")
        c.wait_line(r"Adding tap: kegboard\.flow1 ml_per_tick=0\.4545")
        # Two more syncs, and a reload of the taps file.
        n = c.count_lines(r"Ignoring server tap kegboard-b\.flow0")
        kbtest.wait_until(lambda: c.count_lines(r"Ignoring server tap kegboard-b\.flow0") >= n + 2, timeout=15,
                          what="two more syncs")
        found = c.count_lines(r"Found \d+ taps")
        c.p.send_signal(signal.SIGHUP)
        kbtest.wait_until(lambda: c.count_lines(r"Found \d+ taps") > found, what="the reload")
        kbtest.wait_until(lambda: c.count_lines(r"Ignoring server tap kegboard-b\.flow0") >= n + 3, timeout=15,
                          what="the sync of the reload")
        self.assertEqual(c.count_lines(r"Removing tap"), 0)

        # The event tap pours at the taps file's calibration, the legacy ones at the server's; the
        # file's ghost-filter key still applies to the legacy tap (min_volume_ml 50: 40 mL is no drink).
        c.pour("kegboard-b.flow0", 220)
        drinks = self.receiver.wait_event_drinks(1)
        self.assertEqual(drinks[0]["volume_ml"], 100.0)
        c.pour("kegboard.flow0", 88)
        c.pour("kegboard.flow1", 440)
        self.legacy.wait_drinks(1)
        self.assertEqual(self.legacy_paths("drink"), ["/api/taps/kegboard.flow1"])
        self.assertEqual(self.legacy.requests("drink")[0]["form"]["ticks"], "440")


class FlagErrors(unittest.TestCase):
    """Section 1.1: each is a flag error (exit 1) before anything starts."""

    def run_core(self, *flags):
        with kbtest.TempDir() as tmp:
            env = dict(os.environ, KEGBOT_API_URL="", KEGBOT_EVENT_URL="", STATE_DIRECTORY="")
            return subprocess.run([kbtest.binary("kegbot_core"), "--state_dir=" + tmp, "--dbus=none",
                                   "--kb_core_bind_addr=127.0.0.1:%d" % kbtest.free_port()] + list(flags),
                                  env=env, capture_output=True, text=True, timeout=10 * kbtest.SLOW)

    def test_flag_errors(self):
        api, event = "--api_url=http://127.0.0.1:9/api/", "--event_url=http://127.0.0.1:9/api/kegboard-event"
        cases = [
            ((api, event, "--controller_backends=kegboard"), r"'kegboard' is not <controller>=<backend>"),
            ((api, event, "--controller_backends=kegboard=cloud"), r"'kegboard=cloud': unknown backend"),
            ((event, "--controller_backends=kegboard=legacy"), r"'kegboard=legacy' needs --api_url"),
            ((api, "--controller_backends=kegboard=event"), r"'kegboard=event' needs --event_url"),
            ((api, event, "--controller_backends=kegboard=event, kegboard=legacy"),
             r"controller kegboard listed twice"),
        ]
        for flags, message in cases:
            with self.subTest(flags=flags):
                r = self.run_core(*flags)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertRegex(r.stderr, r"--controller_backends: " + message)
        # The same flag well formed: the core starts (and is stopped at once).
        with kbtest.TempDir() as tmp:
            p = kbtest.Proc([kbtest.binary("kegbot_core"), "--state_dir=" + tmp, "--dbus=none",
                             "--kb_core_bind_addr=127.0.0.1:%d" % kbtest.free_port(), api, event,
                             "--controller_backends=kegboard=legacy,kegboard-b=event"],
                            env={"KEGBOT_API_URL": "", "KEGBOT_EVENT_URL": "", "STATE_DIRECTORY": ""},
                            name="kegbot_core")
            try:
                p.wait_line(r"\(main\) All services started\.", timeout=10)
            finally:
                self.assertEqual(p.stop(), 0)


if __name__ == "__main__":
    kbtest.main()
