"""kegbot_mqtt while the broker comes and goes (mqtt-home-assistant.md sections 5.3, 5.4, 8.2):
scenarios 3 (broker restart mid-pour), 4 (outage queue overflow), 17 (refused credentials: backoff
1, 2, 4, 8 s, one ERROR, never an exit) and 18 (no broker at start: READY anyway)."""
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
import mqtttest  # noqa: E402
from mqtttest import PREFIX  # noqa: E402

RETRY = r"\(mqtt\) Connection to 127\.0\.0\.1:%d failed: .*; retry in (\d+) s"


class BrokerTest(mqtttest.MqttCase, unittest.TestCase):
    def restart_before_next_attempt(self, br, margin=1.0):
        """Starts the stopped broker while kegbot_mqtt's next attempt (announced by its last "retry
        in N s" line) is at least 'margin' s away, so the test's observer is subscribed before
        kegbot_mqtt is back. Returns (start time, the announced delay)."""
        rx = re.compile(RETRY % self.broker.port)
        while True:
            lines = [l for l in br.output("stderr") if rx.search(l)]
            if lines:
                delay = int(rx.search(lines[-1]).group(1))
                due = mqtttest.log_stamp(lines[-1]) + delay
                lt = time.localtime()
                now = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + time.time() % 1
                left = (due - now + 43200) % 86400 - 43200
                if left >= margin:
                    break
            n = len(lines)
            kbtest.wait_until(lambda: len([l for l in br.output("stderr") if rx.search(l)]) > n, timeout=70,
                              what="the next failed connection attempt")
        self.broker.start()
        return time.monotonic(), delay

    def test_broker_restart_mid_pour(self):
        """Scenario 3."""
        core, sim = self.start_chain()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        tap = br.base + "/tap/kegboard_2eflow0"

        wall_start = time.time()
        sim.cmd("pour flow0 2200 10")
        obs.wait(lambda m: m.topic == tap and m.json()["pouring"], timeout=10, what="the pour on MQTT")
        time.sleep(max(0.0, wall_start + 3 - time.time()))      # 3 s into the pour
        connected_lines = len(br.log_times(r"\(mqtt\) Connected to"))
        self.broker.stop()
        obs.close()
        br.wait_line(r"\(mqtt\) Disconnected from 127\.0\.0\.1:%d" % self.broker.port, timeout=10)

        path = mqtttest.busenv.path_encode(mqtttest.busenv.ROOT + "/tap", "kegboard.flow0")
        kbtest.wait_until(lambda: self.bus.get(path, mqtttest.busenv.IFACE + ".Tap", "FlowTicks") == 2200,
                          timeout=20, interval=0.1, what="the whole pour in the core")
        wall_end = time.time()
        mqtttest.stop_flow(self.bus, "kegboard.flow0")
        kbtest.wait_until(lambda: core.drinks(), timeout=10, what="the drink in drinks.log")
        drink = core.drinks()[-1]
        # The core never waited for the broker: the drink carries the real time of the pour.
        pour_time = drink["pour_time"] if isinstance(drink["pour_time"], (int, float)) else None
        if pour_time is None:
            import datetime
            pour_time = datetime.datetime.strptime(drink["pour_time"][:19], "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        self.assertLessEqual(abs(pour_time - wall_end), 3.0)

        while time.time() < wall_end + 5:
            time.sleep(0.1)     # the broker stays away 5 s after the pour (the scenario's timing)
        t_start, delay = self.restart_before_next_attempt(br)
        obs = self.observe()
        kbtest.wait_until(lambda: len(br.log_times(r"\(mqtt\) Connected to")) > connected_lines,
                          timeout=delay + 10, what="the reconnection")
        self.assertLessEqual(time.monotonic() - t_start, delay + 1.5 * kbtest.SLOW)
        event = obs.wait(lambda m: m.topic == tap + "/event", timeout=10, what="the pour event")
        self.wait_online(obs, br)
        obs.sync()
        events = obs.topic(tap + "/event")
        self.assertEqual(len(events), 1, events)
        self.assertEqual(event.json()["uuid"], drink["uuid"])
        self.assertEqual(event.json()["volume_ml"], 1000.0)
        self.assertEqual(event.retain, 0)

        snap = mqtttest.retained(self.broker)
        configs = [t for t in snap if t.startswith(PREFIX + "/")]
        self.assertEqual(len(configs), mqtttest.standard_config_count(mqtttest.core_members(self.bus)))
        for t in configs:
            mqtttest.check_config(self, br.node_id, br.base, t, snap[t].payload)
        for t in (br.base + "/core", tap, br.base + "/tap/kegboard_2eflow1", br.base + "/board/kegboard",
                  br.base + "/sensor/" + mqtttest.key(mqtttest.SIM_SENSOR)):
            self.assertIn(t, snap)
        self.assertEqual(snap[br.base + "/status"].payload, b"online")
        self.assertEqual(snap[br.base + "/core"].json()["mqtt_events_dropped"], 0)
        final = snap[tap].json()
        self.assertEqual((final["pouring"], final["served_total_ml"], final["last_pour_ml"]), (False, 1000.0, 1000.0))
        br.stop()

    def test_outage_overflow(self):
        """Scenario 4: --mqtt_queue_limit=2, five drinks while the broker is down."""
        core = self.core()
        obs = self.observe()
        br = self.bridge("--mqtt_queue_limit=2")
        self.wait_online(obs, br)
        connected_lines = len(br.log_times(r"\(mqtt\) Connected to"))
        self.broker.stop()
        obs.close()
        br.wait_line(r"\(mqtt\) Disconnected from", timeout=10)
        for i in range(5):
            mqtttest.drink(core, self.bus, "kegboard.flow1", 100 + i)
            kbtest.wait_until(lambda i=i: len(core.drinks()) == i + 1, timeout=10, what="drink %d" % (i + 1))
        drinks = core.drinks()
        kbtest.wait_until(lambda: len(br.log_times(r"\(main\) Drink ")) == 5, timeout=10,
                          what="kegbot_mqtt to see the five drinks")

        t_start, delay = self.restart_before_next_attempt(br)
        obs = self.observe()
        kbtest.wait_until(lambda: len(br.log_times(r"\(mqtt\) Connected to")) > connected_lines,
                          timeout=delay + 10, what="the reconnection")
        self.wait_online(obs, br)
        obs.sync()
        events = obs.topic(br.base + "/tap/kegboard_2eflow1/event")
        self.assertEqual([e.json()["uuid"] for e in events], [d["uuid"] for d in drinks[-2:]])
        self.assertEqual(mqtttest.retained(self.broker)[br.base + "/core"].json()["mqtt_events_dropped"], 3)
        warnings = br.log_times(r"WARNING +\(main\) Dropped 3 MQTT events while the broker was unreachable")
        self.assertEqual(len(warnings), 1)
        self.assertEqual(len(br.log_times(r"Dropped \d+ MQTT events")), 1)
        br.stop()

    def test_refused_credentials(self):
        """Scenario 17: a wrong password -> one ERROR for the streak, attempts 1, 2, 4, 8 s apart,
        never an exit."""
        self.core()
        br = self.bridge(password="wrong-password")
        rx = r"\(mqtt\) Connecting to 127\.0\.0\.1:%d as %s" % (self.broker.port, br.node_id)
        lines = kbtest.wait_until(lambda: len(br.log_times(rx)) >= 5 and br.log_times(rx), timeout=30,
                                  interval=0.2, what="five connection attempts")
        stamps = [mqtttest.log_stamp(l) for l in lines[:5]]
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        for gap, want in zip(gaps, (1, 2, 4, 8)):
            self.assertAlmostEqual(gap, want, delta=0.3, msg=gaps)
        self.assertIn("INFO", lines[0])
        self.assertTrue(all("DEBUG" in l for l in lines[1:]), lines)
        errors = br.log_times(r"ERROR +\(mqtt\) Broker refused the connection: ")
        self.assertEqual(len(errors), 1, errors)
        self.assertRegex(errors[0], r"not authori[sz]ed|bad user name or password")
        self.assertTrue(br.alive())
        # The service still tells systemd what it is waiting for.
        br.notify.wait("STATUS", r"^Broker unreachable, retry in \d+ s; core online; 2 taps, 0 boards, 0 sensors$")
        self.assertEqual(br.stop(), 0)

    def test_silent_broker(self):
        """A broker that accepts the connection and never answers: the attempt ends (keepalive or
        connect timeout, max(10 s, keepalive)) and the next one follows the backoff."""
        import socket
        self.broker.stop()
        self.core()
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        port = silent.getsockname()[1]
        br = self.bridge("--mqtt_keepalive=5", port=port)
        # Timed by the log's own stamps: the attempt starts before readiness, which the bus may delay.
        start = br.wait_line(r"INFO +\(mqtt\) Connecting to 127\.0\.0\.1:%d as " % port)
        fail = br.wait_line(r"WARNING +\(mqtt\) Connection to 127\.0\.0\.1:%d failed: .*; retry in 1 s" % port,
                            timeout=15)
        took = mqtttest.log_stamp(fail.string) - mqtttest.log_stamp(start.string)
        self.assertLessEqual(took, 11.0 * kbtest.SLOW)
        # Not refused at once: the broker took the connection (libmosquitto counts the keepalive in
        # whole seconds, so 5 s may end after a little over 4).
        self.assertGreaterEqual(took, 3.0)
        br.wait_line(r"\(mqtt\) Connection to .* failed: .*; retry in 2 s", timeout=20)
        self.assertTrue(br.alive())
        br.stop()

    def test_broker_absent_at_start(self):
        """Scenario 18: READY=1 without a broker, the model follows the core; the broker started
        20 s later is connected within one backoff step and gets everything."""
        self.broker.stop()
        core = self.core()
        br = self.bridge()
        br.notify.wait("READY", "1")
        br.notify.wait("STATUS", r"^Broker unreachable, retry in \d+ s; core online; 2 taps")
        t0 = time.monotonic()
        # The model follows the core meanwhile.
        mqtttest.drink(core, self.bus, "kegboard.flow0", 220, 0.5, steps=5)
        br.wait_line(r"\(main\) Drink .* on kegboard\.flow0: 100\.0 mL", timeout=10)
        while time.monotonic() < t0 + 20:
            time.sleep(0.1)     # the broker comes 20 s later (the scenario's timing)
        t_start, delay = self.restart_before_next_attempt(br)
        obs = self.observe()
        obs.wait(lambda m: m.topic == br.base + "/status" and m.payload == b"online", timeout=delay + 10,
                 what="status online")
        self.assertLessEqual(time.monotonic() - t_start, delay + 1.5 * kbtest.SLOW)
        obs.sync()
        snap = mqtttest.retained(self.broker)
        self.assertEqual(len([t for t in snap if t.startswith(PREFIX + "/")]),
                         mqtttest.standard_config_count(mqtttest.core_members(self.bus), board=False))
        self.assertEqual(snap[br.base + "/tap/kegboard_2eflow0"].json()["served_total_ml"], 100.0)
        events = obs.topic(br.base + "/tap/kegboard_2eflow0/event")
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0].json()["volume_ml"], 100.0)
        br.notify.wait("STATUS", r"^Connected to 127\.0\.0\.1:%d; core online" % self.broker.port)
        br.stop()


if __name__ == "__main__":
    kbtest.main()
