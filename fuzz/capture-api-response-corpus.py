#!/usr/bin/python3
"""Regenerates the seed corpus of fuzz-api-response (fuzz/corpus/api-response/) from the stand-in
Kegbot Server's real answers: every endpoint the core and the extras use, the error envelopes, the
HTML failures and both profiles. Each file is the input format of fuzz/fuzz-api-response.c: the
HTTP status as 2 bytes little-endian, then the body as received.

    fuzz/capture-api-response-corpus.py [OUTPUT_DIR]
"""
import http.client
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "..", "tests", "standin", "kegbot_server.py")
KEY = "0123456789abcdef0123456789abcdef"

FORM = "application/x-www-form-urlencoded"

# (file name, method, path, form body or None, api key, failure to inject or None)
CASES = [
    ("status-ok", "GET", "/api/status", None, KEY, None),
    ("status-v1-ok", "GET", "/api/v1/status/", None, KEY, None),
    ("status-no-key", "GET", "/api/status", None, "", None),
    ("status-bad-key", "GET", "/api/status", None, "f" * 32, None),
    ("taps-list", "GET", "/api/taps", None, KEY, None),
    ("tap-by-meter", "GET", "/api/taps/kegboard.flow0", None, KEY, None),
    ("tap-by-id", "GET", "/api/taps/1", None, KEY, None),
    ("tap-no-controller", "GET", "/api/taps/nosuch.flow0", None, KEY, None),
    ("tap-illegal-meter", "GET", "/api/taps/nodot", None, KEY, None),
    ("drink-ok", "POST", "/api/taps/kegboard.flow0",
     "tap_name=kegboard.flow0&ticks=1440&username=alice&duration=2&pour_time=1795696289&now=1795696410", KEY, None),
    ("drink-guest", "POST", "/api/taps/kegboard.flow1", "tap_name=kegboard.flow1&ticks=100", KEY, None),
    ("drink-no-meter", "POST", "/api/taps/kegboard.flow7", "ticks=10", KEY, None),
    ("drink-bad-username", "POST", "/api/taps/kegboard.flow0", "ticks=10&username=a%20b", KEY, None),
    ("drink-unknown-user", "POST", "/api/taps/kegboard.flow0", "ticks=10&username=nobody", KEY, None),
    ("drink-missing-ticks", "POST", "/api/taps/kegboard.flow0", "username=alice", KEY, None),
    ("drink-html500", "POST", "/api/taps/kegboard.flow0", "ticks=10", KEY, ("drink", "html500")),
    ("drink-json500", "POST", "/api/taps/kegboard.flow0", "ticks=10", KEY, ("drink", "json500")),
    ("drink-injected-404", "POST", "/api/taps/kegboard.flow0", "ticks=10", KEY, ("drink", "404")),
    ("drink-injected-400", "POST", "/api/taps/kegboard.flow0", "ticks=10", KEY, ("drink", "400")),
    ("drink-injected-401", "POST", "/api/taps/kegboard.flow0", "ticks=10", KEY, ("drink", "401")),
    ("drink-injected-408", "POST", "/api/taps/kegboard.flow0", "ticks=10", KEY, ("drink", "408")),
    ("drink-injected-429", "POST", "/api/taps/kegboard.flow0", "ticks=10", KEY, ("drink", "429")),
    ("thermo-ok", "POST", "/api/thermo-sensors/kegboard.thermo-28aa", "temp_c=4.5", "", None),
    ("thermo-out-of-bounds", "POST", "/api/thermo-sensors/kegboard.thermo-28aa", "temp_c=85.0", KEY, None),
    ("thermo-missing", "POST", "/api/thermo-sensors/t1", "x=1", KEY, None),
    ("thermo-get-html500", "GET", "/api/thermo-sensors/t1", None, KEY, None),
    ("token-ok", "GET", "/api/auth-tokens/core.rfid/deadbeef", None, KEY, None),
    ("token-unassigned", "GET", "/api/auth-tokens/core.rfid/f00d", None, KEY, None),
    ("token-disabled", "GET", "/api/auth-tokens/core.rfid/d15ab1ed", None, KEY, None),
    ("token-expired", "GET", "/api/auth-tokens/core.rfid/0ld", None, KEY, None),
    ("token-unknown", "GET", "/api/auth-tokens/core.rfid/DEADBEEF", None, KEY, None),
    ("controller-ok", "POST", "/api/controllers", "name=kb-0a1b&model_name=unknown&serial_number=KB-0a1b", KEY, None),
    ("controller-taken", "POST", "/api/controllers", "name=kegboard&model_name=unknown", KEY, None),
    ("controllers-list", "GET", "/api/controllers", None, KEY, None),
    ("flow-meter-ok", "POST", "/api/flow-meters", "port_name=flow0&controller=2&ticks_per_ml=2.2", KEY, None),
    ("flow-meter-duplicate", "POST", "/api/flow-meters", "port_name=flow0&controller=2&ticks_per_ml=2.2", KEY, None),
    ("flow-meter-bad-controller", "POST", "/api/flow-meters", "port_name=flow0&controller=99", KEY, None),
    ("flow-meters-list", "GET", "/api/flow-meters", None, KEY, None),
    ("drinks-list", "GET", "/api/drinks", None, KEY, None),
    ("events-list", "GET", "/api/events", None, KEY, None),
    ("sound-events", "GET", "/api/sound-events", None, KEY, None),
    ("version", "GET", "/api/version", None, "", None),
    ("cancel-drink-get", "GET", "/api/cancel-drink", None, KEY, None),
    ("cancel-drink-html500", "POST", "/api/cancel-drink", "id=1&spilled=False", KEY, None),
    ("cancel-drink-unknown", "POST", "/api/cancel-drink", "id=999", KEY, None),
    ("unknown-path-html404", "GET", "/api/no-such-endpoint", None, KEY, None),
    ("wrong-method", "PUT", "/api/status", None, KEY, None),
]

# With the stand-in switched to Kegbot Server 2.0.
CASES_20 = [
    ("v20-status-ok", "GET", "/api/v1/status", None, KEY, None),
    ("v20-drinks-gone", "GET", "/api/v1/drinks", None, KEY, None),
    ("v20-sound-events-gone", "GET", "/api/v1/sound-events", None, KEY, None),
    ("v20-other-api", "GET", "/api/status", None, KEY, None),
    ("v20-cancel-drink", "POST", "/api/v1/cancel-drink", "id=1", KEY, None),
]

# Answers the stand-in does not give, written as is: status 0 (the input format's transport
# failure, the body its text), an 0.9-era list without an envelope, a long non-ASCII message.
SYNTHETIC = [
    ("transport-refused", 0, b"Couldn't connect to server: Failed to connect to 127.0.0.1 port 1"),
    ("legacy-events-list", 200, b'{"events": [{"event_name": "flow.threshold.ounces", "event_predicate": "16",'
                                b' "sound_url": "http://x/a.wav"}]}'),
    ("long-utf8-message", 400, b'{"error": {"code": "BadRequestError", "message": "' + "\u00e9\u20ac".encode() * 300
                               + rb'\n\u001b"}, "meta": {"result": "error"}}'),
]


def request(port, method, path, body=None, key=None, ctype=FORM):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Accept": "application/json"}
    if key is not None:
        headers["X-Kegbot-Api-Key"] = key
    if body is not None:
        headers["Content-Type"] = ctype
    c.request(method, path, body=body.encode() if body is not None else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus", "api-response")
    os.makedirs(out, exist_ok=True)
    p = subprocess.Popen(["/usr/bin/python3", STANDIN, "--api-key", KEY], stdout=subprocess.PIPE, text=True)
    try:
        _, api, _, ctl = p.stdout.readline().split()
        api, ctl = int(api), int(ctl)

        def control(what, obj):
            request(ctl, "POST", "/_control/" + what, json.dumps(obj), ctype="application/json")

        def capture(cases):
            for name, method, path, body, key, fail in cases:
                if fail:
                    control("fail", {"endpoint": fail[0], "mode": fail[1], "count": 1})
                status, data = request(api, method, path, body, key)
                with open(os.path.join(out, name), "wb") as f:
                    f.write(struct.pack("<H", status) + data)
                print("%-28s %d %6d bytes" % (name, status, len(data)))

        capture(CASES)
        control("set", {"profile": "2.0"})
        capture(CASES_20)
        for name, status, data in SYNTHETIC:
            with open(os.path.join(out, name), "wb") as f:
                f.write(struct.pack("<H", status) + data)
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    main()
