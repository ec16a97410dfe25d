"""kegbot_mqtt while the real kegbot_core restarts and changes its taps (mqtt-home-assistant.md
sections 4.3, 7.7): scenarios 6 (core restart), 7 (tap removed: by the core, and by the removal
grace after a restart; auto-created taps kept), 14 (relay removed, tap renamed, in both discovery
modes) and 22 (served totals never decrease across restarts)."""
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

TAPS_ONE = """
[kegboard.flow0]
name = Main Tap
ticks_per_ml = 2.2
relay_name = kegboard.relay0
"""


class CoreTest(mqtttest.MqttCase, unittest.TestCase):
    def write_taps(self, text):
        with open(os.path.join(self.tmp, "taps.ini"), "w") as f:
            f.write(text)

    def configs(self):
        return {t: m for t, m in mqtttest.retained(self.broker).items() if t.startswith(PREFIX + "/")}

    def test_core_restart(self):
        """Scenario 6."""
        core = self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        obs.sync()
        before = self.configs()
        states = [t for t in mqtttest.retained(self.broker) if t.startswith(br.base + "/") and
                  not t.endswith("/status")]

        mark = obs.mark()
        t0 = time.monotonic()
        core.stop()
        off = obs.wait(lambda m: m.topic == br.base + "/status" and m.payload == b"offline", start=mark,
                       what="offline")
        self.assertLessEqual(off.time - t0, 1.0 * kbtest.SLOW)
        self.assertTrue(off.retain)
        br.wait_line(r"WARNING +\(dbus\) Core left the bus")
        br.notify.wait("STATUS", r"waiting for the core$")

        mark2 = obs.mark()
        self.core()
        self.wait_online(obs, br, start=mark2)
        for t in states:
            obs.wait(lambda m, t=t: m.topic == t, start=mark2, what="%s republished" % t)
        obs.sync()
        # No config removed or re-sent: their content did not change.
        self.assertFalse([m for m in obs.all(mark) if m.topic.startswith(PREFIX + "/")])
        self.assertEqual({t: m.payload for t, m in self.configs().items()}, {t: m.payload for t, m in before.items()})
        br.stop()

    def test_tap_removed_by_the_core(self):
        """Scenario 7, first part: a tap dropped from the taps file and SIGHUP to the core."""
        core = self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        obs.sync()
        tap1 = br.base + "/tap/kegboard_2eflow1"
        gone = [t for t in self.configs() if "_tap_kegboard_2eflow1_" in t]
        self.assertEqual(len(gone), len(mqtttest.tap_suffixes(mqtttest.core_members(self.bus), relay=False)))

        mark = obs.mark()
        self.write_taps(TAPS_ONE)
        t0 = time.monotonic()
        core.signal(signal.SIGHUP)
        for t in gone + [tap1]:
            m = obs.wait(lambda m, t=t: m.topic == t and m.payload == b"", start=mark, what="%s emptied" % t)
            self.assertTrue(m.retain)
            self.assertLessEqual(m.time - t0, 2.0 * kbtest.SLOW)
        obs.sync()
        self.assertFalse([t for t in mqtttest.retained(self.broker) if "kegboard_2eflow1" in t])
        # The other tap's configs are not touched.
        self.assertFalse([m for m in obs.all(mark) if m.topic.startswith(PREFIX + "/") and "flow0" in m.topic])
        br.wait_line(r"Removing tap kegboard\.flow1 from Home Assistant: the core removed it")
        with open(os.path.join(br.state_dir, "state.json")) as f:
            state = json.load(f)
        self.assertNotIn("tap:kegboard.flow1", state["groups"])
        self.assertFalse([t for t in state["published"] if "flow1" in t])
        br.stop()

    def test_removal_grace_after_restart(self):
        """Scenario 7, second part: --mqtt_removal_grace=5, a configured tap dropped while the core
        was stopped goes 5 s after the core is back; an auto-created tap is kept."""
        core = self.core()
        obs = self.observe()
        br = self.bridge("--mqtt_removal_grace=5")
        self.wait_online(obs, br)
        # kegboard.flow2 appears on first sight (auto-created).
        conn = mqtttest.pour(core, "kegboard.flow2", 20, 0.2, steps=2)
        obs.wait(lambda m: m.topic == br.base + "/tap/kegboard_2eflow2", what="the auto-created tap")
        mqtttest.stop_flow(self.bus, "kegboard.flow2")
        conn.close()
        kbtest.wait_until(lambda: any("flow2" in t for t in self.configs()), what="its configs")

        core.stop()
        br.wait_line(r"Core left the bus")
        mark = obs.mark()
        self.core(taps=TAPS_ONE)
        online = self.wait_online(obs, br, start=mark)
        members = mqtttest.core_members(self.bus)
        flow1 = [t for t in self.configs() if "_tap_kegboard_2eflow1_" in t]
        self.assertEqual(len(flow1), len(mqtttest.tap_suffixes(members, relay=False)), "still there within the grace")
        for t in flow1:
            m = obs.wait(lambda m, t=t: m.topic == t and m.payload == b"", start=mark, timeout=15,
                         what="%s emptied" % t)
            self.assertGreaterEqual(m.time - online.time, 4.5)
            self.assertLessEqual(m.time - online.time, 7.0 * kbtest.SLOW)
        obs.sync()
        snap = self.configs()
        self.assertFalse([t for t in snap if "flow1" in t])
        self.assertEqual(len([t for t in snap if "_tap_kegboard_2eflow2_" in t]),
                         len(mqtttest.tap_suffixes(members, relay=False)))
        self.assertEqual(len([t for t in snap if "_tap_kegboard_2eflow0_" in t]),
                         len(mqtttest.tap_suffixes(members, relay=True)))
        br.wait_line(r"Removing tap kegboard\.flow1 from Home Assistant: no longer configured in the core")
        self.assertFalse(br.log_times(r"Removing tap kegboard\.flow2"))
        br.stop()

    def edit_tap(self, core, text, br):
        """New taps file, SIGHUP, and wait until kegbot_mqtt has the core's answer."""
        self.write_taps(text)
        n = br.count("stderr")
        core.signal(signal.SIGHUP)
        br.wait_line(r"Signal org\.freedesktop\.DBus\.Properties\.PropertiesChanged on /org/kegbot/Core1/tap/"
                     r"kegboard_2eflow0", start=n, key="stderr")

    def test_entity_changes_component(self):
        """Scenario 14, component mode: relay removed -> the valve config emptied; tap renamed -> its
        configs re-sent with the new device name."""
        core = self.core(taps=TAPS_ONE)
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        obs.sync()
        valve = "%s/binary_sensor/%s_tap_kegboard_2eflow0_valve/config" % (PREFIX, br.node_id)
        self.assertIn(valve, self.configs())

        mark = obs.mark()
        self.edit_tap(core, TAPS_ONE.replace("relay_name = kegboard.relay0\n", ""), br)
        m = obs.wait(lambda m: m.topic == valve, start=mark, what="the valve config emptied")
        self.assertEqual((m.payload, m.retain), (b"", 1))
        tap = obs.wait(lambda m: m.topic == br.base + "/tap/kegboard_2eflow0" and m.json()["relay"] is None,
                       start=mark, what="the tap without relay")
        self.assertIsNone(tap.json()["valve"])
        obs.sync()
        self.assertEqual([x.topic for x in obs.all(mark) if x.topic.startswith(PREFIX + "/")], [valve])

        mark = obs.mark()
        self.edit_tap(core, TAPS_ONE.replace("relay_name = kegboard.relay0\n", "").replace("Main Tap", "House IPA"),
                      br)
        configs = [t for t in self.configs() if "_tap_kegboard_2eflow0_" in t]
        self.assertEqual(len(configs), len(mqtttest.tap_suffixes(mqtttest.core_members(self.bus), relay=False)))
        for t in configs:
            m = obs.wait(lambda m, t=t: m.topic == t, start=mark, what="%s re-sent" % t)
            self.assertEqual(m.json()["device"]["name"], "House IPA")
        obs.sync()
        self.assertEqual(sorted(x.topic for x in obs.all(mark) if x.topic.startswith(PREFIX + "/")), sorted(configs))
        br.stop()

    def test_entity_changes_device(self):
        """Scenario 14, device mode: the removed valve is sent once as {"p": "binary_sensor"}, then
        absent."""
        core = self.core(taps=TAPS_ONE)
        obs = self.observe()
        br = self.bridge("--mqtt_discovery=device")
        self.wait_online(obs, br)
        obs.sync()
        topic = "%s/device/%s_tap_kegboard_2eflow0/config" % (PREFIX, br.node_id)
        cfg = self.configs()[topic].json()
        self.assertEqual(cfg["cmps"]["valve"]["p"], "binary_sensor")
        mqtttest.check_config(self, br.node_id, br.base, topic, json.dumps(cfg))

        mark = obs.mark()
        self.edit_tap(core, TAPS_ONE.replace("relay_name = kegboard.relay0\n", ""), br)
        m = obs.wait(lambda m: m.topic == topic, start=mark, what="the device config without the valve")
        self.assertEqual(m.json()["cmps"]["valve"], {"p": "binary_sensor"})
        mqtttest.check_config(self, br.node_id, br.base, topic, m.payload)

        mark = obs.mark()
        self.edit_tap(core, TAPS_ONE.replace("relay_name = kegboard.relay0\n", "").replace("Main Tap", "House IPA"),
                      br)
        m = obs.wait(lambda m: m.topic == topic, start=mark, what="the renamed device")
        self.assertEqual(m.json()["dev"]["name"], "House IPA")
        self.assertNotIn("valve", m.json()["cmps"])
        # Still absent after a restart of the bridge (the state file remembers what was published).
        br.stop()
        mark = obs.mark()
        br = self.bridge("--mqtt_discovery=device")
        m = obs.wait(lambda m: m.topic == topic, start=mark, what="the device config again")
        self.assertNotIn("valve", m.json()["cmps"])
        br.stop()

    def test_totals_survive_restarts(self):
        """Scenario 22: served_total_ml never decreases when the bridge or the core restarts."""
        core = self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        tap = br.base + "/tap/kegboard_2eflow1"

        def served():
            return mqtttest.retained(self.broker)[tap].json()["served_total_ml"]

        def pour(ml):
            mqtttest.drink(core, self.bus, "kegboard.flow1", int(ml * 2), 0.3, steps=3)

        mark = obs.mark()
        pour(100)
        obs.wait(lambda m: m.topic == tap and m.json()["served_total_ml"] == 100.0, start=mark, what="100 mL")
        totals = [served()]

        br.stop()
        mark = obs.mark()
        br = self.bridge()
        self.wait_online(obs, br, start=mark)
        totals.append(served())

        core.stop()
        br.wait_line(r"Core left the bus")
        mark = obs.mark()
        core = self.core()
        self.wait_online(obs, br, start=mark)
        obs.wait(lambda m: m.topic == tap, start=mark, what="the tap again")
        totals.append(served())

        mark = obs.mark()
        pour(50)
        obs.wait(lambda m: m.topic == tap and m.json()["served_total_ml"] == 150.0, start=mark, what="150 mL")
        totals.append(served())
        self.assertEqual(totals, [100.0, 100.0, 100.0, 150.0])
        served_seen = [m.json()["served_total_ml"] for m in obs.topic(tap) if m.payload]
        self.assertEqual(served_seen, sorted(served_seen), "served_total_ml went down")
        br.stop()


    def test_bus_lost(self):
        """Losing the bus connection itself is fatal: exit 1 (systemd restarts the service)."""
        self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        self.bus.kill()
        self.assertEqual(br.wait(10), 1)
        self.assertTrue(br.log_times(r"ERROR +\(dbus\) Lost the connection to the bus"))


if __name__ == "__main__":
    kbtest.main()
