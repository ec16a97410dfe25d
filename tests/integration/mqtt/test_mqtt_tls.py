"""Scenario 16 of mqtt-home-assistant.md (sections 2, 5.1, 5.2): TLS to a mosquitto listener whose
certificate comes from a CA the test makes with openssl. The right CA connects; a wrong CA or a
certificate for another host name fails with a WARNING, backs off and costs almost no CPU (no busy
loop in a failing handshake); a broker that requires client certificates takes
--mqtt_cert_file / --mqtt_key_file."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
import mqtttest  # noqa: E402
from mqtttest import PREFIX  # noqa: E402


class TlsTest(mqtttest.MqttCase, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.broker.stop()
        self.ca = mqtttest.TestCA(os.path.join(self.tmp, "pki"))
        self.other_ca = mqtttest.TestCA(os.path.join(self.tmp, "pki-other"), name="other")

    def tls_broker(self, require_certificate=False, ca=None):
        b = mqtttest.Broker(self.tmp, name="tls-broker-%d" % time.monotonic_ns(), tls=ca or self.ca,
                            require_certificate=require_certificate)
        self.__dict__.setdefault("_brokers", []).append(b)
        return b

    def test_verified_connection(self):
        self.core()
        broker = self.tls_broker()
        obs = mqtttest.observer(broker, tls=self.ca)
        self._clients.append(obs)
        br = self.bridge("--mqtt_tls", "--mqtt_ca_file=" + self.ca.ca, broker=broker)
        br.wait_line(r"INFO +\(mqtt\) Connected to 127\.0\.0\.1:%d" % broker.port, timeout=10)
        br.wait_line(r"Node .* broker 127\.0\.0\.1:%d, TLS" % broker.port)
        # "Connected" is logged before the retained documents are published: wait for the last one
        self.wait_online(obs, br)
        obs.sync()
        snap = mqtttest.retained(broker, tls=self.ca)
        self.assertEqual(snap[br.base + "/status"].payload, b"online")
        self.assertEqual(len([t for t in snap if t.startswith(PREFIX + "/")]),
                         mqtttest.standard_config_count(mqtttest.core_members(self.bus), board=False))
        self.assertEqual(br.stop(), 0)
        broker.wait_log(r"Client %s disconnected\." % br.node_id)

    def check_failing(self, broker, *flags):
        """Fails with a WARNING, backs off, and uses < 0.2 s of CPU over 10 s."""
        br = self.bridge("--mqtt_tls", *flags, broker=broker)
        warn = br.wait_line(r"WARNING +\(mqtt\) Connection to 127\.0\.0\.1:%d failed: .*; retry in 1 s" % broker.port,
                            timeout=10)
        c0, t0 = kbtest.cpu_seconds(br.pid), time.monotonic()
        while time.monotonic() < t0 + 10:
            time.sleep(0.2)     # the measurement window
        used = kbtest.cpu_seconds(br.pid) - c0
        self.assertLess(used, 0.2, "%.3f s of CPU in 10 s" % used)
        tries = br.log_times(r"\(mqtt\) Connection to .* failed: .*; retry in (\d+) s")
        self.assertGreaterEqual(len(tries), 4)
        self.assertEqual(len(br.log_times(r"WARNING +\(mqtt\) Connection to")), 1)
        self.assertFalse(br.log_times(r"\(mqtt\) Connected to"))
        self.assertTrue(br.alive())
        br.stop()
        return warn.string

    def test_wrong_ca(self):
        self.core()
        broker = self.tls_broker()
        line = self.check_failing(broker, "--mqtt_ca_file=" + self.other_ca.ca)
        self.assertIn("TLS", line)
        self.assertIn("certificate verify failed", line)

    def test_wrong_host_name(self):
        """The broker's certificate is verified for the host name too: a certificate from the right
        CA for another name is refused."""
        self.core()
        misnamed = mqtttest.TestCA(os.path.join(self.tmp, "pki-misnamed"), name="misnamed",
                                   server_san="DNS:broker.invalid")
        broker = self.tls_broker(ca=misnamed)
        line = self.check_failing(broker, "--mqtt_ca_file=" + misnamed.ca)
        self.assertIn("TLS", line)

    def test_client_certificate(self):
        self.core()
        broker = self.tls_broker(require_certificate=True)
        # Without a client certificate the handshake fails.
        self.check_failing(broker, "--mqtt_ca_file=" + self.ca.ca)
        br = self.bridge("--mqtt_tls", "--mqtt_ca_file=" + self.ca.ca, "--mqtt_cert_file=" + self.ca.client,
                         "--mqtt_key_file=" + self.ca.client_key, broker=broker, name="with-cert")
        br.wait_line(r"INFO +\(mqtt\) Connected to 127\.0\.0\.1:%d" % broker.port, timeout=10)
        snap = mqtttest.retained(broker, tls=self.ca, certfile=self.ca.client, keyfile=self.ca.client_key)
        self.assertEqual(snap[br.base + "/status"].payload, b"online")
        br.stop()


if __name__ == "__main__":
    kbtest.main()
