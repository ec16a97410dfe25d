"""kegbot_mqtt with a stub org.kegbot.Core1 (stubcore.py) where the real core cannot produce the
situation on demand (mqtt-home-assistant.md section 14.1): scenarios 8 (two nodes on one broker),
15 (temperatures: 10 s cadence, expire_after, silent sensors), 20 (the optional members of section
4.2, and their absence in the real core) and 21 (one event per drink UUID, also across restarts)."""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
import mqtttest  # noqa: E402
import busenv  # noqa: E402 (on the path once mqtttest is imported)
from mqtttest import PREFIX  # noqa: E402

SENSOR = "kegboard.thermo-6b0316621d4cff28"


def now_us():
    return int(time.time() * 1e6)


class StubTest(mqtttest.MqttCase, unittest.TestCase):
    def configs(self):
        return {t: m for t, m in mqtttest.retained(self.broker).items() if t.startswith(PREFIX + "/")}

    def test_two_nodes(self):
        """Scenario 8."""
        second_dir = os.path.join(self.tmp, "second")
        os.makedirs(second_dir)
        bus2 = busenv.PrivateBus(second_dir)
        self.addCleanup(bus2.stop)
        stubs = [self.stub(), self.track(mqtttest.StubCore(bus2))]
        for s in stubs:
            s.cmd(cmd="add", kind="tap", name="kegboard.flow0", props={"Name": "Main Tap"})
        obs = self.observe()
        a = self.bridge(node_id="kegbot_node_a", name="bridge-a")
        b = self.track(mqtttest.Bridge(self.tmp, self.broker, bus2, node_id="kegbot_node_b", name="bridge-b"))
        self.wait_online(obs, a)
        self.wait_online(obs, b)
        t0 = time.monotonic()
        while time.monotonic() < t0 + 30:
            time.sleep(0.5)     # the scenario: both stay connected for 30 s
            self.assertTrue(a.alive() and b.alive())
        obs.sync()
        for br in (a, b):
            self.assertFalse(br.log_times(r"Disconnected from"), br.name)
            self.assertEqual(len(br.log_times(r"\(mqtt\) Connected to")), 1, br.name)
        self.assertFalse([l for l in self.broker.log() if "already connected" in l])
        snap = self.configs()
        uids = {n: set() for n in ("kegbot_node_a", "kegbot_node_b")}
        for t, m in snap.items():
            node = "kegbot_node_a" if "kegbot_node_a" in t else "kegbot_node_b"
            uids[node] |= set(mqtttest.check_config(self, node, "kegbot/" + node, t, m.payload))
        # The node's MQTT counter and the tap's 8 entities (the stub has GhostFlow and Quarantined).
        self.assertEqual(len(uids["kegbot_node_a"]), 9)
        self.assertEqual(len(uids["kegbot_node_b"]), 9)
        self.assertFalse(uids["kegbot_node_a"] & uids["kegbot_node_b"])
        states = mqtttest.retained(self.broker, topics=("kegbot/#",))
        self.assertEqual(states["kegbot/kegbot_node_a/status"].payload, b"online")
        self.assertEqual(states["kegbot/kegbot_node_b/status"].payload, b"online")

        mark = obs.mark()
        a.kill()
        obs.wait(lambda m: m.topic == "kegbot/kegbot_node_a/status" and m.payload == b"offline", start=mark,
                 what="a offline")
        obs.sync()
        self.assertFalse([m for m in obs.all(mark) if m.topic.startswith("kegbot/kegbot_node_b/")])
        self.assertEqual(mqtttest.retained(self.broker)["kegbot/kegbot_node_b/status"].payload, b"online")

        # The same node id twice: the broker takes the first one's session over.
        c = self.track(mqtttest.Bridge(self.tmp, self.broker, bus2, node_id="kegbot_node_b", name="bridge-c"))
        b.wait_line(r"WARNING +\(mqtt\) Disconnected from 127\.0\.0\.1:%d" % self.broker.port, timeout=10)
        self.broker.wait_log(r"Client kegbot_node_b already connected, closing old connection")
        for br in (b, c):
            br.kill()

    def test_temperatures(self):
        """Scenario 15."""
        stub = self.stub()
        stub.cmd(cmd="add", kind="controller", name="kegboard")
        stub.cmd(cmd="add", kind="sensor", name=SENSOR, props={"TemperatureC": 4.0, "LastSeen": now_us()})
        obs = self.observe()
        br = self.bridge("--mqtt_state_interval=10")
        self.wait_online(obs, br)
        topic = br.base + "/sensor/" + mqtttest.key(SENSOR)
        cfg_topic = "%s/sensor/%s_sensor_%s/config" % (PREFIX, br.node_id, mqtttest.key(SENSOR))
        cfg = self.configs()[cfg_topic].json()
        self.assertEqual(cfg["expire_after"], 300)
        self.assertEqual(cfg["name"], "Temperature thermo-6b0316621d4cff28")
        self.assertEqual(cfg["device"]["identifiers"], [br.node_id + "_board_kegboard"])

        # A reading every second for 12 s: at most one message per 10 s.
        mark = obs.mark()
        for i in range(12):
            stub.cmd(cmd="set", kind="sensor", name=SENSOR,
                     props={"TemperatureC": 4.0 + (i + 1) * 0.01, "LastSeen": now_us()})
            time.sleep(1)       # the readings' own pace
        obs.sync()
        msgs = obs.topic(topic, mark)
        self.assertGreaterEqual(len(msgs), 1)
        times = [m.time for m in obs.topic(topic)]
        for x, y in zip(times, times[1:]):
            self.assertGreaterEqual(y - x, 9.5, times)

        # Silent: left out of the periodic republish (the core's document still goes out).
        stub.cmd(cmd="set", kind="sensor", name=SENSOR, props={"Silent": True})
        mark = obs.mark()
        kbtest.wait_until(lambda: len(obs.topic(br.base + "/core", mark)) >= 2, timeout=25, interval=0.2,
                          what="two periodic republishes")
        obs.sync()
        silent = [m for m in obs.topic(topic, mark)]
        self.assertFalse([m for m in silent if m.json()["silent"]], "a silent sensor was published")
        self.assertLessEqual(len(silent), 1)      # at most the last reading before the silence
        # A new reading: published again.
        mark = obs.mark()
        stub.cmd(cmd="set", kind="sensor", name=SENSOR, props={"Silent": False, "TemperatureC": 5.5,
                                                              "LastSeen": now_us()})
        m = obs.wait(lambda m: m.topic == topic, start=mark, timeout=15, what="the sensor again")
        self.assertEqual((m.json()["temp_c"], m.json()["silent"]), (5.5, False))
        br.stop()

    def test_optional_members(self):
        """Scenario 20, stub side: GhostFlow, PourFlagged, Quarantined, EventState."""
        stub = self.stub(mode="server")
        stub.cmd(cmd="add", kind="tap", name="kegboard.flow0", props={"Name": "Main Tap", "Quarantined": False})
        stub.cmd(cmd="add", kind="controller", name="kegboard", props={"Backend": "event", "EventState": "online"})
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        node = br.node_id
        snap = self.configs()
        for t, m in snap.items():
            mqtttest.check_config(self, node, br.base, t, m.payload)
        ev = snap["%s/event/%s_tap_kegboard_2eflow0_events/config" % (PREFIX, node)].json()
        self.assertEqual(ev["event_types"], ["pour", "ghost_flow", "kicked"])
        for uid in ("tap_kegboard_2eflow0_quarantined", "tap_kegboard_2eflow0_ghost_24h", "board_kegboard_link",
                    "server", "spool", "failed"):
            self.assertTrue([t for t in snap if t.endswith("/%s_%s/config" % (node, uid))], uid)
        board = mqtttest.retained(self.broker)[br.base + "/board/kegboard"].json()
        self.assertEqual((board["backend"], board["event_state"]), ("event", "online"))
        tap_topic = br.base + "/tap/kegboard_2eflow0"
        tap = mqtttest.retained(self.broker)[tap_topic].json()
        self.assertEqual((tap["ghost_ml_24h"], tap["quarantined"]), (0.0, False))

        # Two ghost flows in the last 24 h and one older: the sum has the two.
        mark = obs.mark()
        now = now_us()
        for end, vol in ((now - 25 * 3600 * 10**6, 50.0), (now - 3600 * 10**6, 17.3), (now, 2.2)):
            stub.cmd(cmd="signal", name="GhostFlow",
                     args=["kegboard.flow0", "G5", 38, vol, end - 310 * 10**6, end, 0, "", "on"])
        stub.cmd(cmd="signal", name="GhostFlow", args=["kegboard.flow0", "G2", 3, -1.0, now, now, 0, "", "log"])
        stub.cmd(cmd="signal", name="PourFlagged", args=[12345, "kegboard.flow0", "kicked", "on"])
        stub.cmd(cmd="signal", name="PourFlagged", args=[12345, "kegboard.flow0", "long_pour", "on"])
        stub.cmd(cmd="set", kind="tap", name="kegboard.flow0", props={"Quarantined": True})
        stub.cmd(cmd="set", kind="controller", name="kegboard", props={"EventState": "offline"})
        obs.wait(lambda m: m.topic == tap_topic and m.json()["ghost_ml_24h"] == 19.5 and m.json()["quarantined"],
                 start=mark, what="ghost sum and quarantine")
        obs.wait(lambda m: m.topic == br.base + "/board/kegboard" and m.json()["event_state"] == "offline",
                 start=mark, what="server link offline")
        obs.sync()
        events = [m.json() for m in obs.topic(tap_topic + "/event", mark)]
        self.assertEqual([e["event_type"] for e in events], ["ghost_flow"] * 4 + ["kicked"])
        g = events[1]
        self.assertEqual(g, {"event_type": "ghost_flow", "meter": "kegboard.flow0", "rule": "G5", "mode": "on",
                             "ticks": 38, "volume_ml": 17.3, "duration_s": 310, "time": g["time"]})
        self.assertIsNone(events[3]["volume_ml"])
        self.assertEqual(events[3]["mode"], "log")
        k = events[4]
        self.assertEqual((k["meter"], k["flow_id"], k["mode"]), ("kegboard.flow0", 12345, "on"))
        self.assertEqual(list(k), ["event_type", "meter", "flow_id", "mode", "time"])
        # The ghost volumes survive a restart of the bridge.
        br.stop()
        with open(os.path.join(br.state_dir, "state.json")) as f:
            ghost = json.load(f)["groups"]["tap:kegboard.flow0"]["ghost"]
        self.assertEqual([v for _, v in ghost], [17.3, 2.2])
        mark = obs.mark()
        br = self.bridge()
        obs.wait(lambda m: m.topic == tap_topic and m.json()["ghost_ml_24h"] == 19.5, start=mark,
                 what="ghost sum after a restart")
        br.stop()

    def test_optional_members_absent(self):
        """Scenario 20, a core without them: none of these entities, event_types ["pour"], the INFO
        lines of section 4.2 (the core of this tree gains GhostFlow, PourFlagged, ClearQuarantine
        and Quarantined with the ghost-pour filter: a stub without them stands in here)."""
        stub = self.stub(optional=False, mode="server")
        stub.cmd(cmd="add", kind="tap", name="kegboard.flow0", props={"RelayName": "kegboard.relay0"})
        stub.cmd(cmd="add", kind="controller", name="kegboard")
        obs = self.observe()
        br = self.bridge("--mqtt_commands")
        self.wait_online(obs, br)
        snap = self.configs()
        for t, m in snap.items():
            mqtttest.check_config(self, br.node_id, br.base, t, m.payload, event_types=["pour"])
        for suffix in ("quarantined", "ghost_24h", "link", "clear_quarantine"):
            self.assertFalse([t for t in snap if t.endswith("_%s/config" % suffix)], suffix)
        self.assertTrue([t for t in snap if t.endswith("_stop/config")])
        for line in (r"Core has no GhostFlow; ghost_flow events and ghost volumes disabled",
                     r"Core has no PourFlagged; kicked events disabled",
                     r"Core has no ClearQuarantine; the clear_quarantine command disabled",
                     r"Core has no Quarantined; the tap quarantine disabled",
                     r"Core has no Backend; the board backend disabled",
                     r"Core has no EventState; the server link disabled"):
            self.assertEqual(len(br.log_times(r"INFO +\(dbus\) " + line)), 1, line)
        tap = mqtttest.retained(self.broker)[br.base + "/tap/kegboard_2eflow0"].json()
        self.assertEqual((tap["ghost_ml_24h"], tap["quarantined"]), (None, None))
        # A GhostFlow the core never announced is not used.
        now = now_us()
        stub.cmd(cmd="signal", name="GhostFlow", args=["kegboard.flow0", "G5", 3, 1.0, now, now, 0, "", "on"])
        stub.cmd(cmd="signal", name="DrinkRecorded", args=["00000000-0000-4000-8000-000000000009", 1, 1,
                                                           "kegboard.flow0", "", 2, 1.0, now, now, 0])
        obs.wait(lambda m: m.topic == br.base + "/tap/kegboard_2eflow0/event", what="the drink's event")
        obs.sync()
        self.assertEqual([m.json()["event_type"] for m in obs.topic(br.base + "/tap/kegboard_2eflow0/event")],
                         ["pour"])
        br.stop()

    def test_real_core_members(self):
        """Scenario 20 with the real core: kegbot_mqtt uses exactly the optional members the core
        announces (its introspection data), and says which it does not have."""
        self.start_chain()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        members = mqtttest.core_members(self.bus)
        snap = self.configs()
        for t, m in snap.items():
            mqtttest.check_config(self, br.node_id, br.base, t, m.payload, event_types=mqtttest.event_types(members))
        tap_uids = {t.split("/")[2] for t in snap if "_tap_kegboard_2eflow0_" in t}
        self.assertEqual(tap_uids, {br.node_id + "_tap_kegboard_2eflow0_" + s
                                    for s in mqtttest.tap_suffixes(members, relay=True)})
        for key, member in (("ghost_flow", "GhostFlow"), ("pour_flagged", "PourFlagged"),
                            ("clear_quarantine", "ClearQuarantine"), ("quarantined", "Quarantined")):
            self.assertEqual(len(br.log_times(r"INFO +\(dbus\) Core has no %s;" % member)),
                             0 if members[key] else 1, member)
        tap = mqtttest.retained(self.broker)[br.base + "/tap/kegboard_2eflow0"].json()
        self.assertEqual(tap["ghost_ml_24h"] is None, not members["ghost_flow"])
        self.assertEqual(tap["quarantined"] is None, not members["quarantined"])
        br.stop()

    def test_one_event_per_drink(self):
        """Scenario 21."""
        stub = self.stub()
        stub.cmd(cmd="add", kind="tap", name="kegboard.flow0", props={"MlPerTick": 0.5})
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        tap = br.base + "/tap/kegboard_2eflow0"
        uuid = "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10"
        now = now_us()
        drink = [uuid, 42, 7, "kegboard.flow0", "mikey", 780, 354.5, now - 8 * 10**6, now, 8]
        mark = obs.mark()
        stub.cmd(cmd="signal", name="DrinkRecorded", args=drink)
        # The same drink again, as the legacy API may deliver it; the UUID in capitals is the same drink.
        stub.cmd(cmd="signal", name="DrinkRecorded", args=drink)
        stub.cmd(cmd="signal", name="DrinkRecorded", args=[uuid.upper()] + drink[1:])
        # A drink without a volume counts ticks x MlPerTick: proves the earlier ones were handled.
        other = ["00000000-0000-4000-8000-000000000001", -1, 8, "kegboard.flow0", "", 100, -1.0, now, now, 1]
        stub.cmd(cmd="signal", name="DrinkRecorded", args=other)
        obs.wait(lambda m: m.topic == tap + "/event" and m.json()["uuid"] == other[0], start=mark,
                 what="the second drink")
        final = obs.wait(lambda m: m.topic == tap and m.json()["served_total_ml"] == 404.5, start=mark,
                         what="the total of both drinks")
        obs.sync()
        events = [m.json() for m in obs.topic(tap + "/event", mark)]
        self.assertEqual([e["uuid"] for e in events], [uuid, other[0]])
        self.assertEqual((events[0]["volume_ml"], events[0]["user"], events[0]["drink_id"], events[0]["duration_s"]),
                         (354.5, "mikey", 42, 8))
        self.assertEqual((events[1]["volume_ml"], events[1]["user"], events[1]["drink_id"]), (50.0, None, None))
        self.assertEqual(final.json()["last_pour_ml"], 50.0)
        self.assertEqual(len(br.log_times(r"(?i)Drink %s on kegboard\.flow0 was counted already" % uuid)), 2)

        # After a restart of the bridge a third copy is still ignored (the UUIDs are persisted).
        br.stop()
        mark = obs.mark()
        br = self.bridge()
        self.wait_online(obs, br, start=mark)
        stub.cmd(cmd="signal", name="DrinkRecorded", args=drink)
        br.wait_line(r"Drink %s on kegboard\.flow0 was counted already" % uuid)
        obs.sync()
        self.assertFalse(obs.topic(tap + "/event", mark))
        self.assertEqual(mqtttest.retained(self.broker)[tap].json()["served_total_ml"], 404.5)
        br.stop()


if __name__ == "__main__":
    kbtest.main()
