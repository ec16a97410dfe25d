"""Scenario 12 of mqtt-home-assistant.md (section 9): the optional commands. Off by default (no
subscription, no buttons); with --mqtt_commands stop_flow ends a pour of the real core within 1 s
and its drink is recorded; retained, unknown and foreign commands are ignored; clear_quarantine
reaches the (stub) core's ClearQuarantine."""
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
import mqtttest  # noqa: E402
from mqtttest import PREFIX  # noqa: E402

TAP = mqtttest.busenv.path_encode(mqtttest.busenv.ROOT + "/tap", "kegboard.flow0")


class CommandsTest(mqtttest.MqttCase, unittest.TestCase):
    def flow_state(self):
        return self.bus.get(TAP, mqtttest.busenv.IFACE + ".Tap", "FlowState")

    def start_pour(self, core):
        conn = mqtttest.pour(core, "kegboard.flow0", 100, 0.1, steps=1)
        kbtest.wait_until(lambda: mqtttest.flow_ticks(self.bus, "kegboard.flow0") == 100 and
                          self.flow_state() == "active", what="the pour in the core")
        return conn

    def subscriptions(self, client_id):
        rx = re.compile(r"^\d+: %s 1 (\S+)$" % re.escape(client_id))
        return sorted(m.group(1) for m in map(rx.match, self.broker.log()) if m)

    def test_commands_off(self):
        core = self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        self.assertEqual(self.subscriptions(br.node_id), ["homeassistant/status"])
        self.assertFalse([t for t in mqtttest.retained(self.broker) if t.startswith(PREFIX + "/button/")])
        conn = self.start_pour(core)
        self.assertEqual(self.flow_state(), "active")
        obs.publish(br.base + "/tap/kegboard_2eflow0/cmd", "stop_flow")
        # Handled in order: the answer to this birth message comes after the command would have been.
        mark = obs.mark()
        obs.publish("homeassistant/status", "online")
        obs.wait(lambda m: m.topic.startswith(PREFIX + "/sensor/"), start=mark, what="configs again")
        self.assertEqual(self.flow_state(), "active")
        self.assertFalse(core.drinks())
        self.assertFalse(br.log_times(r"Command "))
        conn.close()
        br.stop()

    def test_stop_flow(self):
        core = self.core()
        obs = self.observe()
        br = self.bridge("--mqtt_commands")
        self.wait_online(obs, br)
        base = br.base
        self.assertEqual(self.subscriptions(br.node_id), sorted(["homeassistant/status", base + "/tap/+/cmd"]))
        buttons = {t: m.json() for t, m in mqtttest.retained(self.broker).items() if t.startswith(PREFIX + "/button/")}
        members = mqtttest.core_members(self.bus)
        clear = members["clear_quarantine"] and members["quarantined"]
        self.assertEqual(len(buttons), 4 if clear else 2)
        for t, cfg in buttons.items():
            mqtttest.check_config(self, br.node_id, base, t, mqtttest.json.dumps(cfg))
        self.assertEqual(sorted(cfg["payload_press"] for cfg in buttons.values()),
                         ["clear_quarantine"] * (2 if clear else 0) + ["stop_flow"] * 2)
        cmd = base + "/tap/kegboard_2eflow0/cmd"

        # Unknown payload, unknown tap, another node's topic: logged or not received, nothing stops.
        conn = self.start_pour(core)
        obs.publish(cmd, "open_valve")
        br.wait_line(r"WARNING +\(main\) Unknown command open_valve on %s ignored" % re.escape(cmd))
        obs.publish(base + "/tap/kegboard_2eflow9/cmd", "stop_flow")
        br.wait_line(r"WARNING +\(main\) Command for unknown tap kegboard_2eflow9 ignored")
        obs.publish("kegbot/kegbot_other/tap/kegboard_2eflow0/cmd", "stop_flow")
        obs.publish(cmd, "\xe9\x00")
        self.assertEqual(self.flow_state(), "active")

        # stop_flow ends the pour within 1 s; the drink is recorded.
        mark = obs.mark()
        t0 = time.monotonic()
        obs.publish(cmd, "  stop_flow\n")
        event = obs.wait(lambda m: m.topic == base + "/tap/kegboard_2eflow0/event", start=mark, what="the drink")
        self.assertLessEqual(event.time - t0, 1.0 * kbtest.SLOW)
        self.assertEqual(self.flow_state(), "completed")
        self.assertEqual(core.drinks()[-1]["uuid"], event.json()["uuid"])
        br.wait_line(r"INFO +\(main\) Command stop_flow for kegboard\.flow0 done")
        # Only one "Unknown command" line a minute: the second unknown payload was not logged.
        self.assertEqual(len(br.log_times(r"Unknown command")), 1)
        self.assertFalse(br.log_times(r"kegbot_other"))
        conn.close()

        # A retained command is seen (retain flag set) when kegbot_mqtt subscribes: ignored.
        br.stop()
        conn = self.start_pour(core)
        obs.publish(cmd, "stop_flow", retain=True)
        br = self.bridge("--mqtt_commands")
        br.wait_line(r"WARNING +\(main\) Ignoring retained command on %s" % re.escape(cmd))
        self.assertEqual(self.flow_state(), "active")
        obs.publish(cmd, "", retain=True)
        conn.close()

        # The core not on the bus: dropped with a WARNING.
        core.stop()
        br.wait_line(r"Core left the bus")
        obs.publish(cmd, "stop_flow")
        br.wait_line(r"WARNING +\(main\) Command stop_flow for kegboard\.flow0 dropped: core not on the bus")
        br.stop()

    def test_clear_quarantine(self):
        stub = self.stub()
        stub.cmd(cmd="add", kind="tap", name="kegboard.flow0", props={"Quarantined": True})
        obs = self.observe()
        br = self.bridge("--mqtt_commands")
        self.wait_online(obs, br)
        snap = mqtttest.retained(self.broker)
        button = "%s/button/%s_tap_kegboard_2eflow0_clear_quarantine/config" % (PREFIX, br.node_id)
        self.assertIn(button, snap)
        mqtttest.check_config(self, br.node_id, br.base, button, snap[button].payload)
        obs.publish(br.base + "/tap/kegboard_2eflow0/cmd", "clear_quarantine")
        br.wait_line(r"INFO +\(main\) Command clear_quarantine for kegboard\.flow0 done")
        # The stub prints the call before it answers, but its output is read by another thread:
        # wait for the line rather than look once.
        stub.wait_line(r"^call ClearQuarantine kegboard\.flow0$", key="stdout")
        br.stop()

    def test_command_failure_logged(self):
        """A method error is logged with its D-Bus error name and message."""
        stub = self.stub()
        stub.cmd(cmd="add", kind="tap", name="kegboard.failing")
        obs = self.observe()
        br = self.bridge("--mqtt_commands")
        self.wait_online(obs, br)
        obs.publish(br.base + "/tap/kegboard_2efailing/cmd", "stop_flow")
        br.wait_line(r"WARNING +\(main\) Command stop_flow for kegboard\.failing failed: "
                     r"org\.kegbot\.Core1\.Error\.UnknownMeter: no such meter")
        br.stop()


if __name__ == "__main__":
    kbtest.main()
