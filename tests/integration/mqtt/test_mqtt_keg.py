"""Scenario 19 of mqtt-home-assistant.md (section 4.5): keg data from the legacy stand-in Kegbot
Server. kegbot_core runs in server mode against the stand-in, kegbot_mqtt reads GET taps: keg
entities are announced with the stand-in's values, a drink lowers keg_remaining_ml at once, a
stand-in that stops answering keeps the values with one WARNING. (Without --api_url no keg entity
exists: test_mqtt_basic.py's start scenario checks the exact set of entities.)"""
import json
import os
import sys
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "backend"))
import kbtest  # noqa: E402
import mqtttest  # noqa: E402
from mqtttest import PREFIX  # noqa: E402
from standin import API_KEY, StandIn  # noqa: E402


class ServerCore(kbtest.Proc):
    """kegbot_core in server mode against the stand-in, on the test's bus."""

    def __init__(self, tmp, bus, standin):
        self.port = kbtest.free_port()
        args = [kbtest.binary("kegbot_core"), "--kb_core_bind_addr=127.0.0.1:%d" % self.port,
                "--state_dir=" + os.path.join(tmp, "core-state"), "--api_url=" + standin.url(),
                "--api_key=" + API_KEY, "--api_timeout=2", "--retry_interval=1", "--dbus=system",
                # The server's taps name relays nobody opens here: their pours would be ghost (G1).
                "--novalve_closed_gate"]
        env = {"KEGBOT_API_URL": "", "KEGBOT_API_KEY": "", "STATE_DIRECTORY": "", "http_proxy": "",
               "HTTP_PROXY": "", "no_proxy": "*", "DBUS_SYSTEM_BUS_ADDRESS": bus.address}
        super().__init__(args, env=env, name="kegbot_core")
        self.wait_line(r"\(main\) All services started\.", timeout=10)
        bus.wait_name()

    def connect(self):
        return kbtest.KegnetConn.connect(self.port)


class KegTest(mqtttest.MqttCase, unittest.TestCase):
    def test_keg_data(self):
        standin = StandIn()
        self.addCleanup(standin.stop)
        standin.remove_keg("kegboard.flow1")
        core = self.track(ServerCore(self.tmp, self.bus, standin))
        kbtest.wait_until(lambda: len([p for p in self.bus.managed_objects() if "/tap/" in p]) == 2, timeout=10,
                          what="the server's taps in the core")
        obs = self.observe()
        br = self.bridge("--api_url=" + standin.url(), "--api_key=" + API_KEY, "--api_timeout=2",
                         "--mqtt_state_interval=10")
        self.wait_online(obs, br)
        tap0, tap1 = br.base + "/tap/kegboard_2eflow0", br.base + "/tap/kegboard_2eflow1"
        doc = obs.wait(lambda m: m.topic == tap0 and m.json()["beverage"], what="keg data").json()
        with urllib.request.urlopen(standin.url() + "taps", timeout=10) as r:
            server = {t["meter_name"]: t for t in json.loads(r.read())["objects"]}
        keg = server["kegboard.flow0"]["current_keg"]
        self.assertEqual(doc["beverage"], keg["beverage"]["name"])
        self.assertEqual(doc["beverage"], "Test Beer")
        self.assertEqual(doc["keg_id"], server["kegboard.flow0"]["current_keg_id"])
        self.assertEqual(doc["keg_size_ml"], round(keg["full_volume_ml"], 1))
        self.assertEqual(doc["keg_remaining_ml"], round(keg["remaining_volume_ml"], 1))
        self.assertEqual(doc["keg_percent"], round(keg["percent_full"], 1))
        self.assertEqual(doc["keg_size_ml"], 58673.9)
        self.assertEqual(doc["keg_remaining_ml"], 58673.9)
        self.assertEqual(doc["keg_percent"], 100.0)
        obs.sync()

        snap = mqtttest.retained(self.broker)
        node = br.node_id
        for tap in ("kegboard_2eflow0", "kegboard_2eflow1"):
            for suffix in ("keg_remaining", "keg_level", "beverage"):
                t = "%s/sensor/%s_tap_%s_%s/config" % (PREFIX, node, tap, suffix)
                self.assertIn(t, snap)
                mqtttest.check_config(self, node, br.base, t, snap[t].payload)
        # The tap without a keg: entities announced, values null.
        d1 = snap[tap1].json()
        self.assertEqual([d1[k] for k in ("beverage", "keg_id", "keg_size_ml", "keg_remaining_ml", "keg_percent")],
                         [None] * 5)
        # Server mode: the node's server entities are there.
        for suffix in ("server", "spool", "failed"):
            self.assertTrue([t for t in snap if t.endswith("/%s_%s/config" % (node, suffix))], suffix)
        self.assertEqual(snap[br.base + "/core"].json()["mode"], "server")

        # A drink lowers keg_remaining_ml at once (in the same document as the drink).
        mark = obs.mark()
        conn = core.connect()
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=220)
        conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        m = obs.wait(lambda m: m.topic == tap0 and m.json()["last_pour_ml"] == 100.0, start=mark, timeout=15,
                     what="the drink on the tap")
        self.assertEqual(m.json()["keg_remaining_ml"], 58573.9)
        conn.close()

        # The stand-in stops answering: the values stay, one WARNING for the streak.
        standin.refuse()
        br.wait_line(r"WARNING +\(keg\) Keg data from http://127\.0\.0\.1:%d/api/taps unavailable: " % standin.port,
                     timeout=25)
        # The next read fails too (one interval later): still one WARNING.
        reads = len(br.log_times(r"DEBUG +\(keg\) Reading keg data from"))
        kbtest.wait_until(lambda: len(br.log_times(r"DEBUG +\(keg\) Reading keg data from")) > reads and
                          len(br.log_times(r"DEBUG +\(keg\) Keg data read failed")) >= 2, timeout=25,
                          what="a second failed read")
        snap = mqtttest.retained(self.broker)
        self.assertEqual(snap[tap0].json()["keg_remaining_ml"], 58573.9)
        self.assertEqual(snap[tap0].json()["beverage"], "Test Beer")
        self.assertEqual(len(br.log_times(r"WARNING +\(keg\) Keg data from")), 1)
        standin.accept()
        br.wait_line(r"INFO +\(keg\) Keg data from .* available again", timeout=25)
        br.stop()


if __name__ == "__main__":
    kbtest.main()
