"""The stand-in Kegbot Server itself (kegbot-server-api.md section 9): the quirks other tests rely on,
checked with a plain HTTP client so that a wrong stand-in cannot make a wrong core look right."""
import http.client
import json
import os
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kbtest
from standin import API_KEY, StandIn


class StandInTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = StandIn()

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def setUp(self):
        self.s.clear_failures()
        self.s.set(profile="1.3", privacy="public", setup_required=None)

    def call(self, method, path, form=None, headers=None, key=API_KEY, raw_body=None, ctype=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=10)
        h = dict(headers or {})
        if key is not None:
            h["X-Kegbot-Api-Key"] = key
        body = raw_body
        if form is not None:
            body = urllib.parse.urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if ctype:
            h["Content-Type"] = ctype
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        try:
            j = json.loads(data)
        except ValueError:
            j = None
        return r.status, j, data, r

    def test_mounts_and_trailing_slash(self):
        for p in ("/api/status", "/api/status/", "/api/v1/status", "/api/v1/status/"):
            st, j, _, r = self.call("GET", p)
            self.assertEqual(st, 200, p)
            self.assertEqual(j["meta"]["result"], "ok")
            self.assertIn("max-age=0", r.getheader("Cache-Control"))
            self.assertIsNone(r.getheader("Deprecation"))
        st, _, body, _ = self.call("GET", "/api/nothing-here")
        self.assertEqual(st, 404)
        self.assertIn(b"<html", body)
        st, _, body, _ = self.call("DELETE", "/api/status")
        self.assertEqual(st, 405)
        self.s.set(profile="2.0")
        st, j, _, r = self.call("GET", "/api/v1/status")
        self.assertEqual((st, r.getheader("Deprecation")), (200, "true"))
        self.assertIn("controllers", j["object"])         # 2.0 always emits the lists
        st, j, _, _ = self.call("GET", "/api/v1/drinks")
        self.assertEqual((st, j["error"]["code"]), (410, "GoneError"))
        st, j, _, _ = self.call("GET", "/api/status")
        self.assertEqual(st, 401)
        self.assertNotIn("meta", j)

    def test_auth_rules(self):
        st, j, _, _ = self.call("GET", "/api/status", key=None)
        self.assertEqual((st, j["error"]["code"]), (401, "NoAuthTokenError"))
        self.assertEqual(j["error"]["message"], 'The parameter "api_key" is required')
        st, j, _, _ = self.call("GET", "/api/status", key="nope")
        self.assertEqual((st, j["error"]["message"]), (401, "API key does not exist"))
        # Query string and body also carry the key (header first).
        st, _, _, _ = self.call("GET", "/api/status?api_key=" + API_KEY, key=None)
        self.assertEqual(st, 200)
        st, _, _, _ = self.call("POST", "/api/controllers", form={"api_key": API_KEY, "name": "kb-auth"}, key=None)
        self.assertEqual(st, 200)
        # Public endpoints and the thermo-sensors bug.
        self.assertEqual(self.call("GET", "/api/taps", key=None)[0], 200)
        self.assertEqual(self.call("POST", "/api/thermo-sensors/x1", form={"temp_c": "3"}, key=None)[0], 200)
        self.s.set(privacy="staff")
        self.assertEqual(self.call("GET", "/api/taps", key=None)[0], 401)
        self.assertEqual(self.call("GET", "/api/version", key=None)[0], 200)
        self.s.set(privacy="public", setup_required="Setup required")
        st, j, _, _ = self.call("GET", "/api/taps")
        self.assertEqual((st, j["error"]["message"]), (400, "Setup required"))

    def test_bodies_and_presence(self):
        # JSON bodies are not parsed; multipart is.
        st, j, _, _ = self.call("POST", "/api/taps/kegboard.flow0", raw_body=json.dumps({"ticks": 5}),
                                ctype="application/json")
        self.assertEqual((st, j["error"]["message"]), (400, {"ticks": ["This field is required."]}))
        b = "XyZ"
        mp = ("--%s\r\nContent-Disposition: form-data; name=\"ticks\"\r\n\r\n22\r\n--%s--\r\n" % (b, b))
        st, j, _, _ = self.call("POST", "/api/taps/kegboard.flow0", raw_body=mp,
                                ctype="multipart/form-data; boundary=" + b)
        self.assertEqual(st, 200)
        self.assertEqual(j["object"]["volume_ml"], 22 / 2.2)
        self.assertEqual(j["object"]["user_id"], "guest")
        # pour_time/now arithmetic; one without the other is ignored.
        st, j, _, _ = self.call("POST", "/api/taps/1", form={"ticks": "10", "pour_time": "1000", "now": "1600"})
        t = j["object"]["time"]
        self.assertTrue(t.endswith("+00:00"))
        from datetime import datetime, timezone
        age = datetime.now(timezone.utc) - datetime.fromisoformat(t)
        self.assertTrue(595 <= age.total_seconds() <= 610, age)
        st, j, _, _ = self.call("POST", "/api/taps/1", form={"ticks": "-1"})
        self.assertEqual((st, j["error"]["code"]), (500, "ServerError"))
        st, j, _, _ = self.call("POST", "/api/taps/1", form={"ticks": "1", "duration": "2.5"})
        self.assertEqual(st, 400)
        st, j, _, _ = self.call("POST", "/api/taps/1", form={"ticks": "1", "username": "bad name"})
        self.assertEqual(j["error"]["message"], {"username": ["Enter a valid value."]})
        # A meterless tap: unknown.<id>, 0.0, "Tap has no meter".
        self.s.seed(taps=[{"name": "Meterless"}])
        st, j, _, _ = self.call("GET", "/api/status")
        tap = [t for t in j["object"]["taps"] if t["name"] == "Meterless"][0]
        self.assertEqual(tap["meter_name"], "unknown.%d" % tap["id"])
        self.assertEqual(tap["ml_per_tick"], 0.0)
        self.assertEqual(tap["relay_name"], "")
        st, j, _, _ = self.call("POST", "/api/taps/%d" % tap["id"], form={"ticks": "5"})
        self.assertEqual(j["error"]["message"], "Tap has no meter, can't compute volume")
        # Presence: a fresh site without taps has no "taps" key at all (1.3).
        fresh = StandIn(default_seed=False)
        try:
            c = http.client.HTTPConnection("127.0.0.1", fresh.port, timeout=10)
            c.request("GET", "/api/status", headers={"X-Kegbot-Api-Key": API_KEY})
            obj = json.loads(c.getresponse().read())["object"]
            c.close()
            self.assertEqual(sorted(obj), ["site_info"])
        finally:
            fresh.stop()

    def test_thermo_and_tokens(self):
        st, j1, _, _ = self.call("POST", "/api/thermo-sensors/t9", form={"temp_c": "4.5"})
        st, j2, _, _ = self.call("POST", "/api/thermo-sensors/t9", form={"temp_c": "5.5"})
        if j1["object"]["time"] == j2["object"]["time"]:
            self.assertEqual(j1["object"]["id"], j2["object"]["id"])
        self.assertTrue(j1["object"]["time"].endswith(":00+00:00"))
        st, j, _, _ = self.call("POST", "/api/thermo-sensors/t9", form={"temp_c": "80.5"})
        self.assertEqual((st, j["error"]["message"]), (400, "Temperature out of bounds"))
        self.assertEqual(self.call("GET", "/api/thermo-sensors/t9")[0], 500)
        st, j, _, _ = self.call("GET", "/api/auth-tokens/core.rfid/f00d")
        self.assertEqual(st, 200)
        self.assertNotIn("username", j["object"])
        self.assertEqual(self.call("GET", "/api/auth-tokens/core.rfid/DEADBEEF")[0], 404)
        st, j, _, _ = self.call("GET", "/api/auth-tokens/core.rfid/d15ab1ed")
        self.assertFalse(j["object"]["enabled"])

    def test_failure_modes(self):
        self.s.fail("status", "slow", count=1, delay=1.0)
        t0 = time.monotonic()
        st, j, _, _ = self.call("GET", "/api/status")
        self.assertEqual(st, 200)
        self.assertGreater(time.monotonic() - t0, 0.8)
        self.s.fail("status", "401", count=1)
        self.assertEqual(self.call("GET", "/api/status")[0], 401)
        self.s.fail("drink", "lost", count=1)
        n = len(self.s.drinks())
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.call("POST", "/api/taps/kegboard.flow0", form={"ticks": "7"})
        self.assertEqual(len(self.s.drinks()), n + 1)      # committed, answer lost
        self.s.refuse()
        with self.assertRaises(ConnectionRefusedError):
            self.call("GET", "/api/status")
        self.s.accept()
        self.assertEqual(self.call("GET", "/api/status")[0], 200)
        # cancel-drink on 1.3: deleted, then an HTML 500.
        st, j, _, _ = self.call("POST", "/api/taps/kegboard.flow0", form={"ticks": "9"})
        st, _, body, _ = self.call("POST", "/api/cancel-drink", form={"id": str(j["object"]["id"])})
        self.assertEqual(st, 500)
        self.assertIn(b"Server Error (500)", body)
        self.assertNotIn(j["object"]["id"], [d["id"] for d in self.s.drinks()])


if __name__ == "__main__":
    kbtest.main()
