"""The ghost-pour filter seen in Home Assistant (mqtt-home-assistant.md sections 4.2, 6.3, 7.4 and
scenario 20 with the real core): kegboard_sim plays the ghost-pour spec's traces through
kegboard_daemon into kegbot_core, and kegbot_mqtt turns the core's GhostFlow, PourFlagged and
Quarantined into ghost_flow and kicked events, ghost_ml_24h and the problem entity; the
clear_quarantine command (--mqtt_commands) lifts a quarantine through the core's ClearQuarantine.

    flow0  Gl   1:0 5:30             a relay nobody opened: every tick is ghost, rule G1
    flow1  Gm   5:0 10:30 5:150      a kicked keg: kicked while the pour runs, then its pour event
    flow2  Gh   jitter=off 40:3.7    self-test crosstalk with max_pour_s = 10: quarantined (G7)
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
import mqtttest  # noqa: E402
from mqtttest import PREFIX  # noqa: E402

TAPS = """
[DEFAULT]
ticks_per_ml = 5.405405405405405

[kegboard.flow0]
name = Gl
relay_name = kegboard.relay0

[kegboard.flow1]
name = Gm

[kegboard.flow2]
name = Gh
max_pour_s = 10
"""

TRACES = {0: "1:0 5:30", 1: "5:0 10:30 5:150", 2: "jitter=off 40:3.7"}


class GhostTest(mqtttest.MqttCase, unittest.TestCase):
    def test_ghost_kicked_quarantine(self):
        core = self.core(taps=TAPS)
        sim = self.sim("--meters=3")
        self.kegboard_daemon(core, sim)
        kbtest.wait_until(lambda: any("/controller/" in p for p in self.bus.managed_objects()), timeout=15,
                          what="the board in the core")
        members = mqtttest.core_members(self.bus)
        if not members["ghost_flow"]:
            self.skipTest("this kegbot_core has no ghost-pour filter")
        obs = self.observe()
        br = self.bridge("--mqtt_commands")
        self.wait_online(obs, br)
        base, node = br.base, br.node_id
        snap = {t: m for t, m in mqtttest.retained(self.broker).items() if t.startswith(PREFIX + "/")}
        for t, m in snap.items():
            mqtttest.check_config(self, node, base, t, m.payload, event_types=["pour", "ghost_flow", "kicked"])
        for n in range(3):
            for suffix in ("ghost_24h", "quarantined", "clear_quarantine"):
                self.assertTrue([t for t in snap if t.endswith("_tap_kegboard_2eflow%d_%s/config" % (n, suffix))],
                                (n, suffix))
        self.assertFalse(br.log_times(r"Core has no (GhostFlow|PourFlagged|ClearQuarantine|Quarantined)"))
        taps = {n: "%s/tap/kegboard_2eflow%d" % (base, n) for n in range(3)}
        mark = obs.mark()
        for n, trace in TRACES.items():
            sim.cmd("trace flow%d %s" % (n, trace))

        # Gl: ghost, rule G1, no pour event; the 24 h ghost volume grows by it.
        g = obs.wait(lambda m: m.topic == taps[0] + "/event", start=mark, timeout=25, what="Gl's ghost flow").json()
        self.assertEqual((g["event_type"], g["meter"], g["rule"], g["mode"]), ("ghost_flow", "kegboard.flow0", "G1", "on"))
        self.assertLessEqual(abs(g["volume_ml"] - 150), 25)
        self.assertEqual(list(g), ["event_type", "meter", "rule", "mode", "ticks", "volume_ml", "duration_s", "time"])
        doc = obs.wait(lambda m: m.topic == taps[0] and m.json()["ghost_ml_24h"], start=mark, what="ghost volume")
        self.assertEqual(doc.json()["ghost_ml_24h"], g["volume_ml"])
        self.assertFalse(doc.json()["pouring"])

        # Gm: kicked while pouring, then one pour event.
        k = obs.wait(lambda m: m.topic == taps[1] + "/event" and m.json()["event_type"] == "kicked", start=mark,
                     timeout=25, what="Gm kicked").json()
        self.assertEqual((k["meter"], k["mode"]), ("kegboard.flow1", "on"))
        self.assertNotEqual(k["flow_id"], 0)
        p = obs.wait(lambda m: m.topic == taps[1] + "/event" and m.json()["event_type"] == "pour", start=mark,
                     timeout=25, what="Gm's pour").json()
        self.assertLessEqual(abs(p["volume_ml"] - 1050), 160)
        drink = next(d for d in core.drinks() if d["meter_name"] == "kegboard.flow1")
        self.assertEqual(p["uuid"], drink["uuid"])

        # Gh: quarantined (G7); the problem entity's value, then the command lifts it.
        q = obs.wait(lambda m: m.topic == taps[2] and m.json()["quarantined"], start=mark, timeout=40,
                     what="Gh quarantined")
        self.assertTrue(q.json()["quarantined"])
        g7 = obs.wait(lambda m: m.topic == taps[2] + "/event" and m.json().get("rule") == "G7", start=mark,
                      timeout=10, what="Gh's G7 ghost flow").json()
        self.assertEqual(g7["event_type"], "ghost_flow")
        mark = obs.mark()
        obs.publish(taps[2] + "/cmd", "clear_quarantine")
        br.wait_line(r"INFO +\(main\) Command clear_quarantine for kegboard\.flow2 done")
        core.wait_line(r"INFO     \(flowmanager\) Quarantine of tap kegboard\.flow2 cleared")
        obs.wait(lambda m: m.topic == taps[2] and m.json()["quarantined"] is False, start=mark, timeout=5,
                 what="Gh no longer quarantined")
        # No pour event for any ghost tap.
        obs.sync()
        for n in (0, 2):
            self.assertFalse([m for m in obs.topic(taps[n] + "/event") if m.json()["event_type"] == "pour"], n)
        br.stop()


if __name__ == "__main__":
    kbtest.main()
