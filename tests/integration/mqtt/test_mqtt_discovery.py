"""Scenario 13 of mqtt-home-assistant.md (section 7.1, 7.7): the discovery layouts. Device mode
publishes one config per device (dev, o, cmps; every component with p and unique_id); restarting in
component mode first empties the device topics, then publishes the per-entity configs; off empties
everything in the ledger and keeps publishing states."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
import mqtttest  # noqa: E402
from mqtttest import PREFIX  # noqa: E402


class DiscoveryTest(mqtttest.MqttCase, unittest.TestCase):
    def configs(self):
        return {t: m for t, m in mqtttest.retained(self.broker).items() if t.startswith(PREFIX + "/")}

    def test_modes(self):
        core, sim = self.start_chain()
        obs = self.observe()
        br = self.bridge("--mqtt_discovery=device")
        self.wait_online(obs, br)
        node = br.node_id
        devices = self.configs()
        self.assertEqual(set(devices), {"%s/device/%s%s/config" % (PREFIX, node, d) for d in
                                        ("", "_tap_kegboard_2eflow0", "_tap_kegboard_2eflow1", "_board_kegboard")})
        members = mqtttest.core_members(self.bus)
        uids = set()
        for t, m in devices.items():
            cfg = m.json()
            self.assertEqual(m.qos, 1)
            self.assertEqual(list(cfg), ["dev", "o", "availability_topic", "qos", "cmps"])
            for cid, comp in cfg["cmps"].items():
                self.assertIn("p", comp)
                self.assertIn("unique_id", comp)
            uids |= set(mqtttest.check_config(self, node, br.base, t, m.payload,
                                              event_types=mqtttest.event_types(members)))
        self.assertEqual(len(uids), mqtttest.standard_config_count(members))
        # The temperature sits in its board's device.
        board = devices["%s/device/%s_board_kegboard/config" % (PREFIX, node)].json()
        self.assertIn("temp_" + mqtttest.key(mqtttest.SIM_SENSOR), board["cmps"])
        self.assertEqual(board["dev"]["sw_version"], "firmware 18")
        br.stop()

        # component: the device topics emptied first, then one config per entity.
        mark = obs.mark()
        br = self.bridge()
        self.wait_online(obs, br, start=mark)
        obs.sync()
        msgs = [m for m in obs.all(mark) if m.topic.startswith(PREFIX + "/")]
        empties = [i for i, m in enumerate(msgs) if m.payload == b""]
        configs = [i for i, m in enumerate(msgs) if m.payload]
        self.assertEqual(sorted(msgs[i].topic for i in empties), sorted(devices))
        self.assertLess(max(empties), min(configs))
        snap = self.configs()
        self.assertEqual(len(snap), mqtttest.standard_config_count(members))
        got = set()
        for t, m in snap.items():
            got |= set(mqtttest.check_config(self, node, br.base, t, m.payload))
        self.assertEqual(got, uids, "unique ids are the same in both modes")
        br.stop()

        # off: everything in the ledger emptied, states still published.
        mark = obs.mark()
        br = self.bridge("--mqtt_discovery=off")
        self.wait_online(obs, br, start=mark)
        obs.sync()
        emptied = {m.topic for m in obs.all(mark) if m.topic.startswith(PREFIX + "/") and m.payload == b""}
        self.assertEqual(emptied, set(snap))
        self.assertFalse([m for m in obs.all(mark) if m.topic.startswith(PREFIX + "/") and m.payload])
        self.assertEqual(self.configs(), {})
        mark = obs.mark()
        sim.cmd("pour flow1 20")
        kbtest.wait_until(lambda: mqtttest.flow_ticks(self.bus, "kegboard.flow1") == 20, what="the pour")
        mqtttest.stop_flow(self.bus, "kegboard.flow1")
        obs.wait(lambda m: m.topic == br.base + "/tap/kegboard_2eflow1" and m.json()["served_total_ml"] == 10.0,
                 start=mark, what="states still published")
        with open(os.path.join(br.state_dir, "state.json")) as f:
            state = json.load(f)
        self.assertFalse([t for t in state["published"] if t.startswith(PREFIX + "/")])
        self.assertEqual(state["discovery"], "off")
        br.stop()

    def test_prefix_and_node_change(self):
        """A new prefix or node id: the old node's configs are emptied at the first CONNACK."""
        self.core()
        obs = self.observe(extra=("site/#",))
        br = self.bridge()
        self.wait_online(obs, br)
        old = self.configs()
        self.assertTrue(old)
        br.stop()
        mark = obs.mark()
        br = self.bridge("--mqtt_discovery_prefix=ha2", "--mqtt_base=site/bar")
        obs.wait(lambda m: m.topic == "site/bar/status" and m.payload == b"online", start=mark, what="new base online")
        obs.sync()
        self.assertEqual(self.configs(), {})
        # The old base's state topics are emptied too; the new ones are under site/bar.
        snap = mqtttest.retained(self.broker, topics=("kegbot/#", "site/#", "ha2/#"))
        self.assertFalse([t for t in snap if t.startswith("kegbot/")])
        self.assertIn("site/bar/core", snap)
        self.assertEqual(len([t for t in snap if t.startswith("ha2/")]), len(old))
        br.stop()


if __name__ == "__main__":
    kbtest.main()
