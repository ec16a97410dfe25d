"""kegbot_core in server mode on D-Bus, against the stand-in Kegbot Server: Mode/ApiUrl, BackendState
online -> offline -> online -> unauthorized, LastSync, PendingDrinks and FailedDrinks as drinks queue
up, ListDrinks, FailDrink, RetryFailedDrinks and Sync doing what they say, with PropertiesChanged
for every change and DrinkRecorded carrying the server's drink id."""
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "backend"))
import busenv  # noqa: E402
import kbtest  # noqa: E402
from busenv import IFACE, ROOT, Monitor, payload  # noqa: E402
from standin import API_KEY, StandIn  # noqa: E402

MANAGER = IFACE + ".Manager"
TAP0 = ROOT + "/tap/kegboard_2eflow0"


class ServerCore(kbtest.Proc):
    def __init__(self, tmp, bus, standin):
        self.port = kbtest.free_port()
        # Server mode takes the taps from the server and their ghost-filter settings from the taps
        # file: these anonymous pours run with the valves closed (ghost-pours.md sections 4.2, 6.1).
        taps = busenv.write_file(os.path.join(tmp, "taps.ini"), "[DEFAULT]\nvalve_closed_gate = false\n"
                                 "[kegboard.flow1]\nghost_filter = log\n")
        args = [kbtest.binary("kegbot_core"),
                "--kb_core_bind_addr=127.0.0.1:%d" % self.port,
                "--state_dir=" + os.path.join(tmp, "state"),
                "--taps_file=" + taps,
                "--api_url=" + standin.url(),
                "--api_key=" + API_KEY,
                "--api_timeout=2", "--retry_interval=1", "--sync_interval=2",
                "--dbus=system"]
        env = {"KEGBOT_API_URL": "", "KEGBOT_API_KEY": "", "STATE_DIRECTORY": "",
               "http_proxy": "", "HTTP_PROXY": "", "no_proxy": "*",
               "DBUS_SYSTEM_BUS_ADDRESS": bus.address}
        super().__init__(args, env=env, name="kegbot_core")
        self.wait_line(r"\(main\) All services started\.", timeout=10)
        bus.wait_name()
        self.conn = kbtest.KegnetConn.connect(self.port)
        self.readings = {}

    def pour(self, meter, ticks):
        if meter not in self.readings:
            self.conn.send("MeterUpdate", meter_name=meter, reading=0)
            self.readings[meter] = 0
        self.readings[meter] += ticks
        self.conn.send("MeterUpdate", meter_name=meter, reading=self.readings[meter])
        self.conn.send("FlowRequest", meter_name=meter, request="stop_flow")


class ServerModeTest(unittest.TestCase):
    def setUp(self):
        self.tmpdir = kbtest.TempDir()
        tmp = self.tmpdir.__enter__()
        self.standin = StandIn()
        self.bus = busenv.PrivateBus(tmp)
        self.mon = Monitor(self.bus)
        self.core = ServerCore(tmp, self.bus, self.standin)

    def tearDown(self):
        self.core.conn.close()
        self.core.stop()
        self.mon.stop()
        self.bus.stop()
        self.standin.stop()
        self.tmpdir.__exit__(None, None, None)

    def get(self, prop):
        return self.bus.get(ROOT, MANAGER, prop)

    def wait_prop(self, prop, value, timeout=10):
        kbtest.wait_until(lambda: self.get(prop) == value, timeout=timeout, what="%s = %r" % (prop, value))

    def changed_values(self, prop):
        out = []
        for m in self.mon.signals("PropertiesChanged", ROOT):
            iface, props, _ = payload(m)
            if iface == MANAGER and prop in props:
                out.append(props[prop]["data"])
        return out

    def test_server_mode(self):
        self.assertEqual(self.get("Mode"), "server")
        self.assertEqual(self.get("ApiUrl"), self.standin.url())
        self.assertEqual(self.get("SpoolState"), "ok")
        self.wait_prop("BackendState", "online")
        self.assertGreater(self.get("LastSync"), 0)
        kbtest.wait_until(lambda: TAP0 in self.bus.managed_objects(), timeout=10, what="the server's taps")
        self.assertEqual(self.bus.get(TAP0, IFACE + ".Tap", "RelayName"), "kegboard.relay0")
        self.assertEqual(self.bus.get(TAP0, IFACE + ".Tap", "GhostFilter"), "on")
        self.assertEqual(self.bus.get(ROOT + "/tap/kegboard_2eflow1", IFACE + ".Tap", "GhostFilter"), "log")
        self.assertFalse([l for l in self.core.output() if "Taps file entry" in l])

        # A drink goes up; DrinkRecorded carries the server's id.
        self.core.pour("kegboard.flow0", 440)
        drink = self.mon.wait_signal(lambda m: m["member"] == "DrinkRecorded", timeout=10, what="DrinkRecorded")
        server = self.standin.wait_drinks(1)
        self.assertEqual(payload(drink)[1], server[0]["id"])
        self.assertEqual(payload(drink)[5], 440)
        self.wait_prop("PendingDrinks", 0)

        # Server gone: the next drink waits in the spool.
        self.standin.refuse()
        self.core.pour("kegboard.flow0", 220)
        self.wait_prop("PendingDrinks", 1)
        self.wait_prop("BackendState", "offline")
        err, queued = self.bus.dbus_call(ROOT, MANAGER, "ListDrinks", "s", ["queued"])
        self.assertEqual(err, "ok", queued)
        self.assertEqual(len(queued[0]), 1)
        d = queued[0][0]
        self.assertEqual((d["meter_name"], d["ticks"], d["username"], d["flags"]), ("kegboard.flow0", 220, "", []))
        self.assertAlmostEqual(d["volume_ml"], 100.0, places=6)
        uuid = d["uuid"]

        # A kicked keg (foam pulses, far above 120 mL/s for 2 s): the queued drink carries the flag,
        # and so do its flow's D-Bus object while it pours and the tap afterwards.
        for i in range(35):
            self.core.readings["kegboard.flow0"] += 300        # 136 mL in 0.1 s
            self.core.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=self.core.readings["kegboard.flow0"])
            time.sleep(0.1)
        flag = self.mon.wait_signal(lambda m: m["member"] == "PourFlagged" and payload(m)[1] == "kegboard.flow0",
                                    timeout=5, what="PourFlagged")
        self.assertEqual(payload(flag)[2:], ["kicked", "on"])
        flow_path = ROOT + "/flow/%d" % payload(flag)[0]
        self.assertEqual(self.bus.get(flow_path, IFACE + ".Flow", "Flags"), ["kicked"])
        self.core.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        self.wait_prop("PendingDrinks", 2)
        err, queued = self.bus.dbus_call(ROOT, MANAGER, "ListDrinks", "s", ["queued"])
        self.assertEqual([(x["ticks"], x["flags"]) for x in queued[0]], [(220, []), (35 * 300, ["kicked"])])
        self.assertEqual(self.bus.get(TAP0, IFACE + ".Tap", "FlowFlags"), ["kicked"])
        kicked = queued[0][1]["uuid"]

        # An operator gives up on it, then re-queues it. UUIDs are read in either case (one rule,
        # util-uuid.h): the upper-case spelling names the same queued drink.
        self.assertEqual(uuid, uuid.lower())
        err, msg = self.bus.dbus_call(ROOT, MANAGER, "FailDrink", "s", [uuid.upper()])
        self.assertEqual(err, "ok", msg)
        self.core.wait_line(r"FailDrink\(%s\) over D-Bus: moved to failed/" % uuid)
        self.wait_prop("FailedDrinks", 1, timeout=3)
        self.assertEqual(self.get("PendingDrinks"), 1)  # the kicked one
        err, failed = self.bus.dbus_call(ROOT, MANAGER, "ListDrinks", "s", ["failed"])
        self.assertEqual([x["uuid"] for x in failed[0]], [uuid])
        self.assertIn("failure_message", failed[0][0])
        err, msg = self.bus.dbus_call(ROOT, MANAGER, "FailDrink", "s", [uuid])
        self.assertEqual(err, "org.kegbot.Core1.Error.UnknownDrink", msg)
        err, msg = self.bus.dbus_call(ROOT, MANAGER, "FailDrink", "s", [uuid.upper()])
        self.assertEqual(err, "org.kegbot.Core1.Error.UnknownDrink", msg)

        self.standin.accept()
        self.assertEqual(self.bus.dbus_call(ROOT, MANAGER, "RetryFailedDrinks"), ("ok", [1]))
        self.standin.wait_drinks(3)
        self.wait_prop("PendingDrinks", 0)
        self.wait_prop("FailedDrinks", 0)
        self.wait_prop("BackendState", "online")
        self.mon.sync()
        recorded = [payload(m)[0] for m in self.mon.signals("DrinkRecorded")]
        self.assertEqual(recorded[-2:], [kicked, uuid])

        # Sync() asks the server now.
        n = len(self.standin.requests("status"))
        self.assertEqual(self.bus.dbus_call(ROOT, MANAGER, "Sync")[0], "ok")
        kbtest.wait_until(lambda: len(self.standin.requests("status")) > n, timeout=5, what="GET status")

        # A revoked key shows as unauthorized.
        self.standin.revoke_key(API_KEY)
        self.bus.dbus_call(ROOT, MANAGER, "Sync")
        self.wait_prop("BackendState", "unauthorized")

        # Every change went out as PropertiesChanged.
        self.mon.sync()
        self.assertIn(1, self.changed_values("PendingDrinks"))
        self.assertIn(1, self.changed_values("FailedDrinks"))
        states = self.changed_values("BackendState")
        for s in ("online", "offline", "unauthorized"):
            self.assertIn(s, states)
        self.assertTrue(self.changed_values("LastSync"))


if __name__ == "__main__":
    kbtest.main()
