"""kegbot_mqtt's state file and ledger across restarts (mqtt-home-assistant.md sections 7.7, 10, 11):
a corrupt file is a WARNING and an empty start; a bridge started while the core is away keeps every
config it published before (nothing is removed because the core is not there); a group not seen for
7 days is removed; SIGHUP republishes every config and state document."""
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
import mqtttest  # noqa: E402
from mqtttest import PREFIX  # noqa: E402


class StateTest(mqtttest.MqttCase, unittest.TestCase):
    def configs(self):
        return {t: m for t, m in mqtttest.retained(self.broker).items() if t.startswith(PREFIX + "/")}

    def test_corrupt_state_file(self):
        self.core()
        state_dir = os.path.join(self.tmp, "bridge-state")
        os.makedirs(state_dir)
        path = os.path.join(state_dir, "state.json")
        with open(path, "w") as f:
            f.write('{"version":1,"groups":{"tap:x":{"served_total_ml":"lots"}}}')
        obs = self.observe()
        br = self.bridge(state_dir=state_dir)
        self.wait_online(obs, br)
        br.wait_line(r"WARNING +\(main\) State file %s unusable \(bad group tap:x\); starting empty" % path)
        self.assertEqual(br.stop(), 0)
        with open(path) as f:
            state = json.load(f)
        self.assertEqual(state["version"], 1)
        self.assertNotIn("tap:x", state["groups"])
        self.assertIn("tap:kegboard.flow0", state["groups"])
        for junk in (b"\xff\xfe not json", b"[]", b'{"version": 2}'):
            with open(path, "wb") as f:
                f.write(junk)
            br = self.bridge(state_dir=state_dir, name="again-%d" % len(junk))
            br.wait_line(r"State file .* unusable \(.+\); starting empty")
            br.stop()

    def test_core_away_at_start_keeps_configs(self):
        core = self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        before = self.configs()
        br.stop()
        core.stop()

        mark = obs.mark()
        br = self.bridge()
        br.wait_line(r"Waiting for the core")
        off = obs.wait(lambda m: m.topic == br.base + "/status", start=mark, what="status")
        self.assertEqual(off.payload, b"offline")
        obs.sync()
        self.assertFalse([m for m in obs.all(mark) if m.topic.startswith(PREFIX + "/")],
                         "a config was touched while the core was away")
        self.assertEqual(set(self.configs()), set(before))
        br.notify.wait("STATUS", r"^Connected to 127\.0\.0\.1:\d+; waiting for the core$")

        mark = obs.mark()
        self.core()
        self.wait_online(obs, br, start=mark)
        obs.sync()
        # Announced again (the node learns their content now), none removed.
        self.assertFalse([m for m in obs.all(mark) if m.topic.startswith(PREFIX + "/") and not m.payload])
        self.assertEqual(set(self.configs()), set(before))
        br.stop()

    def test_group_not_seen_for_7_days(self):
        node = "kegbot_test0001"
        old_topic = "%s/binary_sensor/%s_board_oldboard_connected/config" % (PREFIX, node)
        old_state = "kegbot/%s/board/oldboard" % node
        # What an earlier run left: the config and state on the broker, the group in the file.
        pub = self.broker.client()
        pub.publish(old_topic, '{"name":"Connected"}', retain=True)
        pub.publish(old_state, '{"name":"oldboard"}', retain=True)
        pub.close()
        state_dir = os.path.join(self.tmp, "bridge-state")
        os.makedirs(state_dir)
        eight_days_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 8 * 86400))
        six_days_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 6 * 86400))
        recent_topic = "%s/binary_sensor/%s_board_recentboard_connected/config" % (PREFIX, node)
        with open(os.path.join(state_dir, "state.json"), "w") as f:
            json.dump({"version": 1, "node_id": node, "base": "kegbot/" + node, "discovery_prefix": PREFIX,
                       "discovery": "component", "mqtt_events_dropped": 0,
                       "published": {old_topic: "board:oldboard", old_state: "board:oldboard",
                                     recent_topic: "board:recentboard"},
                       "groups": {"board:oldboard": {"last_seen": eight_days_ago},
                                  "board:recentboard": {"last_seen": six_days_ago}},
                       "recent_drinks": []}, f)
        self.core()
        obs = self.observe()
        br = self.bridge(state_dir=state_dir)
        self.wait_online(obs, br)
        for t in (old_topic, old_state):
            obs.wait(lambda m, t=t: m.topic == t and m.payload == b"", what="%s emptied" % t)
        br.wait_line(r"Removing board oldboard from Home Assistant: not seen in the core for 7 days")
        self.assertFalse(br.log_times(r"Removing board recentboard"))
        br.stop()
        with open(os.path.join(state_dir, "state.json")) as f:
            state = json.load(f)
        self.assertNotIn("board:oldboard", state["groups"])
        self.assertIn("board:recentboard", state["groups"])
        self.assertIn(recent_topic, state["published"])

    def test_sighup_republishes(self):
        self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        obs.sync()
        retained = set(mqtttest.retained(self.broker))
        mark = obs.mark()
        br.signal(signal.SIGHUP)
        br.wait_line(r"SIGHUP: republishing every config and state")
        for t in retained:
            obs.wait(lambda m, t=t: m.topic == t, start=mark, what="%s again" % t)
        br.stop()


if __name__ == "__main__":
    kbtest.main()
