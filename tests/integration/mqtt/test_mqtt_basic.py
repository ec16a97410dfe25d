"""kegbot_mqtt with the real kegbot_core (and a kegboard_sim board through kegboard_daemon) on a
private bus and a real mosquitto: mqtt-home-assistant.md section 14.2 scenarios 1 (start), 2 (pour),
5 (Home Assistant birth), 10 (last will, keepalive), 11 (orderly stop) and 23 (stable payloads)."""
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

SENSOR = mqtttest.SIM_SENSOR


class BasicTest(mqtttest.MqttCase, unittest.TestCase):
    def expected_configs(self, node, members):
        out = {node + "_mqtt_dropped", node + "_board_kegboard_connected",
               node + "_sensor_" + mqtttest.key(SENSOR)}
        out |= {node + "_tap_kegboard_2eflow0_" + s for s in mqtttest.tap_suffixes(members, relay=True)}
        out |= {node + "_tap_kegboard_2eflow1_" + s for s in mqtttest.tap_suffixes(members, relay=False)}
        return out

    def test_start(self):
        """Scenario 1: every applicable config retained with QoS 1 within 2 s, passing the checker;
        every state topic retained with all its keys; status online; nothing else."""
        self.start_chain()
        obs = self.observe()
        t0 = time.monotonic()
        br = self.bridge()
        online = self.wait_online(obs, br)
        obs.sync()
        node, base = br.node_id, br.base
        members = mqtttest.core_members(self.bus)
        expected = self.expected_configs(node, members)

        snap = mqtttest.retained(self.broker)
        configs = {t: m for t, m in snap.items() if t.startswith(PREFIX + "/")}
        uids = set()
        for t, m in configs.items():
            self.assertEqual(m.qos, 1, t)
            uids |= set(mqtttest.check_config(self, node, base, t, m.payload,
                                              event_types=mqtttest.event_types(members)))
        self.assertEqual(uids, expected)
        for m in obs.all():
            if m.topic.startswith(PREFIX + "/"):
                self.assertLessEqual(m.time - t0, 2.0 * kbtest.SLOW, "%s came late" % m.topic)
                self.assertTrue(m.topic.endswith("/config") and m.retain, m)

        states = {t: m for t, m in snap.items() if t.startswith(base + "/") and t != base + "/status"}
        self.assertEqual(set(states), {base + "/core", base + "/tap/kegboard_2eflow0", base + "/tap/kegboard_2eflow1",
                                       base + "/board/kegboard", base + "/sensor/" + mqtttest.key(SENSOR)})
        for t, m in states.items():
            self.assertEqual(m.qos, 1, t)
            self.assertEqual(mqtttest.ordered_keys(m.payload), mqtttest.doc_keys(t, base), t)
        self.assertEqual(snap[base + "/status"].payload, b"online")
        self.assertEqual(snap[base + "/status"].qos, 1)
        self.assertTrue(online.retain)
        tap0 = states[base + "/tap/kegboard_2eflow0"].json()
        self.assertEqual((tap0["name"], tap0["meter"], tap0["relay"], tap0["valve"], tap0["pouring"]),
                         ("Main Tap", "kegboard.flow0", "kegboard.relay0", "closed", False))
        self.assertEqual(tap0["ml_per_tick"], 1 / 2.2)
        board = states[base + "/board/kegboard"].json()
        # The core names each board's backend (Controller Backend, kegboard-event-protocol.md 12).
        self.assertEqual((board["name"], board["connected"], board["firmware"], board["backend"]),
                         ("kegboard", True, 18, "standalone"))
        sensor = states[base + "/sensor/" + mqtttest.key(SENSOR)].json()
        self.assertEqual((sensor["name"], sensor["temp_c"], sensor["silent"]), (SENSOR, 4.25, False))
        core = states[base + "/core"].json()
        self.assertEqual((core["mode"], core["server"], core["mqtt_events_dropped"]),
                         ("standalone", "standalone", 0))

        # Nothing but configs, state topics and status.
        allowed = set(configs) | set(states) | {base + "/status"}
        self.assertEqual({m.topic for m in obs.all()} - allowed, set())
        br.stop()

    def test_pour(self):
        """Scenario 2: a 10 s pour through kegboard_sim."""
        core, sim = self.start_chain()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        obs.sync()
        tap = br.base + "/tap/kegboard_2eflow0"
        before = obs.topic(tap)[-1].json()
        self.assertEqual(before["served_total_ml"], 0.0)

        mark = obs.mark()
        t_start = time.monotonic()
        sim.cmd("pour flow0 2200 10")
        kbtest.wait_until(lambda: self.bus.get(mqtttest.busenv.path_encode(mqtttest.busenv.ROOT + "/tap",
                                                                            "kegboard.flow0"),
                                               mqtttest.busenv.IFACE + ".Tap", "FlowTicks") == 2200,
                          timeout=20, interval=0.1, what="the whole pour in the core")
        t_end = time.monotonic()
        mqtttest.stop_flow(self.bus, "kegboard.flow0")
        event = obs.wait(lambda m: m.topic == tap + "/event", start=mark, timeout=10, what="pour event")
        final = obs.wait(lambda m: m.topic == tap and not m.json()["pouring"] and m.json()["last_pour_ml"],
                         start=mark, timeout=5, what="final tap state")
        self.assertLessEqual(final.time - event.time, 3.0 * kbtest.SLOW)
        obs.sync()

        msgs = obs.topic(tap, mark)
        during = [m for m in msgs if m.time <= final.time]
        docs = [m.json() for m in during]
        # At most one a second: 10 s of pour plus the end, and one periodic republish at most.
        window = final.time - t_start
        self.assertLessEqual(len(during), int(window) + 2, [round(m.time - t_start, 2) for m in during])
        self.assertGreaterEqual(len(during), 5)
        pouring = [d for d in docs if d["pouring"]]
        self.assertTrue(pouring)
        vols = [d["pour_ml"] for d in pouring]
        self.assertEqual(vols, sorted(vols))
        self.assertGreater(vols[-1], vols[0])
        self.assertTrue(any(d["flow_rate_l_min"] > 0 for d in pouring))
        # 1000 mL over 10 s is 6 L/min; the estimate uses 2 s windows of the core's updates.
        rates = [d["flow_rate_l_min"] for d in pouring if d["flow_rate_l_min"] > 0]
        self.assertTrue(any(4.0 < r < 8.0 for r in rates), rates)
        self.assertFalse(docs[-1]["pouring"])
        self.assertEqual(docs[-1]["flow_rate_l_min"], 0.0)
        self.assertEqual(docs[-1]["pour_ml"], 0.0)
        self.assertLess(t_end - t_start, 15 * kbtest.SLOW)

        # One pour event: not retained, QoS 1, the drink's UUID and volume.
        events = obs.topic(tap + "/event", mark)
        self.assertEqual(len(events), 1)
        self.assertEqual((events[0].retain, events[0].qos), (0, 1))
        ev = events[0].json()
        drink = core.drinks()[-1]
        self.assertEqual(ev["uuid"], drink["uuid"])
        self.assertEqual(ev["event_type"], "pour")
        self.assertEqual(ev["meter"], "kegboard.flow0")
        self.assertEqual(ev["ticks"], 2200)
        self.assertEqual(ev["volume_ml"], round(drink["volume_ml"], 1))
        self.assertEqual(ev["volume_ml"], 1000.0)
        self.assertIsNone(ev["user"])
        self.assertEqual(list(ev), ["event_type", "uuid", "meter", "volume_ml", "ticks", "duration_s", "user",
                                    "drink_id", "time"])
        after = final.json()
        self.assertEqual(after["served_total_ml"], before["served_total_ml"] + ev["volume_ml"])
        self.assertEqual(after["last_pour_ml"], ev["volume_ml"])
        self.assertEqual(after["last_pour_time"], ev["time"])
        br.stop()

    def test_birth(self):
        """Scenario 5: "online" on homeassistant/status republishes every config within 1 s;
        "offline" publishes nothing."""
        self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        obs.sync()
        configs = {t for t in mqtttest.retained(self.broker) if t.startswith(PREFIX + "/")}
        self.assertGreater(len(configs), 5)

        mark = obs.mark()
        # "offline" first, then "online": the configs that follow answer the second one, which was
        # handled after the first.
        r = kbtest.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-u", mqtttest.USER,
                        "-P", mqtttest.PASSWORD, "-q", "1", "-t", "homeassistant/status", "-m", "offline"])
        self.assertEqual(r.returncode, 0, r.stderr)
        t0 = time.monotonic()
        obs.publish("homeassistant/status", "online")
        last = None
        for t in configs:
            last = obs.wait(lambda m, t=t: m.topic == t, start=mark, timeout=5, what="config %s again" % t)
            self.assertLessEqual(last.time - t0, 1.0 * kbtest.SLOW, t)
        obs.sync()
        got = [m.topic for m in obs.all(mark) if m.topic != "homeassistant/status"]
        self.assertEqual(sorted(got), sorted(configs), "exactly one batch of configs, nothing else")
        br.wait_line(r"Home Assistant is online")
        br.stop()

    def test_last_will_and_keepalive(self):
        """Scenario 10: SIGKILL -> offline within 1 s (the last will); a stopped process -> offline
        once the broker notices the silence, and back online when it runs again.

        The spec's 8 s for --mqtt_keepalive=5 is 1.5 x keepalive; Debian's mosquitto 2.0.11 looks
        for silent clients only every 6 s (src/keepalive.c) and in whole seconds (silence > 7 s), so
        it publishes the will up to 14 s after the last packet. kegbot_mqtt pings every 5 s."""
        self.core()
        obs = self.observe()
        br = self.bridge("--mqtt_keepalive=5")
        self.wait_online(obs, br)
        status = br.base + "/status"

        mark = obs.mark()
        br.p.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        off = obs.wait(lambda m: m.topic == status and m.payload == b"offline", start=mark, timeout=20,
                       what="offline after SIGSTOP")
        self.assertLessEqual(off.time - t0, 14.0 * kbtest.SLOW)
        self.assertTrue(off.retain)
        mark = obs.mark()
        br.p.send_signal(signal.SIGCONT)
        self.wait_online(obs, br, start=mark)
        br.wait_line(r"\(mqtt\) Disconnected from 127\.0\.0\.1:%d" % self.broker.port)
        br.wait_line(r"\(mqtt\) Connected to 127\.0\.0\.1:%d" % self.broker.port)

        mark = obs.mark()
        obs.sync()
        br.p.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        off = obs.wait(lambda m: m.topic == status and m.payload == b"offline", start=mark, timeout=5,
                       what="the last will")
        self.assertLessEqual(off.time - t0, 1.0 * kbtest.SLOW)
        self.assertEqual(mqtttest.retained(self.broker)[status].payload, b"offline")

    def test_orderly_stop(self):
        """Scenario 11: SIGTERM -> offline published, exit 0, a clean DISCONNECT."""
        self.core()
        obs = self.observe()
        br = self.bridge()
        self.wait_online(obs, br)
        mark = obs.mark()
        t0 = time.monotonic()
        rc = br.stop()
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 3.0 * kbtest.SLOW)
        off = obs.wait(lambda m: m.topic == br.base + "/status", start=mark, what="offline")
        self.assertEqual(off.payload, b"offline")
        self.assertTrue(off.retain)
        self.broker.wait_log(r"Client %s disconnected\." % br.node_id)
        self.assertFalse([l for l in self.broker.log() if "closed its connection" in l and br.node_id in l])
        self.assertTrue(br.notify.assignments("STOPPING"))
        # The state file was written.
        with open(os.path.join(br.state_dir, "state.json")) as f:
            state = json.load(f)
        self.assertEqual(state["node_id"], br.node_id)
        self.assertIn(br.base + "/status", state["published"])

    def test_stable_payloads(self):
        """Scenario 23: idle for two --mqtt_state_interval periods -> exactly two messages per state
        topic, each the same text as before; no config message."""
        self.core()
        obs = self.observe()
        br = self.bridge("--mqtt_state_interval=10")
        online = self.wait_online(obs, br)
        obs.sync()
        states = {t: m.payload for t, m in mqtttest.retained(self.broker).items()
                  if t.startswith(br.base + "/") and t != br.base + "/status"}
        self.assertEqual(len(states), 3)
        mark = obs.mark()
        # Both republishes (10 s and 20 s after the CONNACK) are in; the third (30 s) is not yet due.
        kbtest.wait_until(lambda: all(len(obs.topic(t, mark)) >= 2 for t in states), timeout=25,
                          interval=0.2, what="two republishes")
        while time.monotonic() < online.time + 25:
            time.sleep(0.2)     # the window of the check: nothing but those two may arrive in it
        obs.sync()
        msgs = [m for m in obs.all(mark) if m.time < online.time + 25]
        for t, text in states.items():
            got = [m.payload for m in msgs if m.topic == t]
            self.assertEqual(got, [text, text], t)
        self.assertFalse([m for m in msgs if m.topic.startswith(PREFIX + "/")])
        br.stop()


if __name__ == "__main__":
    kbtest.main()
