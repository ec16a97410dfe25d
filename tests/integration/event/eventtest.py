"""kegbot_core on the Kegboard Event Protocol backend against the stand-in receiver
(tests/standin/kbevent_receiver.py, served by kegbot_server.py): helpers shared by the event tests."""
import glob
import json
import os
import re
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "backend"))

import kbtest  # noqa: E402
from standin import StandIn  # noqa: E402


class EventStandIn(StandIn):
    """The stand-in with its Server 2.0 event receiver's control calls (section 16.3)."""

    def __init__(self, require_auth=True, **kw):
        super().__init__(profile="2.0", **kw)
        if not require_auth:
            self.event_set(require_auth=False)

    def event_url(self):
        return "http://127.0.0.1:%d/api/kegboard-event" % self.port

    def _event(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request("http://127.0.0.1:%d/_control/event/%s" % (self.control_port, path),
                                     data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def event_set(self, **kw):
        return self._event("POST", "set", kw)

    def pairing(self, device, action):
        return self._event("POST", "pairing", {"device": device, "action": action})

    def command(self, device, type_, data=None):
        return self._event("POST", "command", {"device": device, "type": type_, "data": data})["id"]

    def event_fail(self, mode, count=None, match=None, delay=None):
        self._call("POST", "fail", {"endpoint": "event", "mode": mode, "count": count, "match": match,
                                    "delay": delay})

    def event_requests(self):
        return self._event("GET", "requests")

    def event_drinks(self):
        return self._event("GET", "drinks")

    def events(self, type_=None):
        return [e for e in self._event("GET", "events") if type_ is None or e["type"] == type_]

    def commands(self):
        return self._event("GET", "commands")

    def roster(self):
        return self._event("GET", "roster")

    def violations(self):
        return self._event("GET", "violations")

    def wait_event_drinks(self, n, timeout=15.0):
        return kbtest.wait_until(lambda: len(self.event_drinks()) >= n and self.event_drinks(), timeout=timeout,
                                 what="%d drinks at the event receiver" % n)

    def wait_events(self, pred, timeout=15.0, what="events"):
        return kbtest.wait_until(lambda: [e for e in self.events() if pred(e)], timeout=timeout, what=what)


class EventCore(kbtest.Proc):
    """kegbot_core with --event_url at the stand-in, on a free kegnet port, its own state directory."""

    def __init__(self, tmp, standin, *flags, state_dir=None, taps=None, wait=True, heartbeat=10, retry=1,
                 api_timeout=2, dbus="none", env=None):
        self.port = kbtest.free_port()
        self.state_dir = state_dir or os.path.join(tmp, "state")
        self.taps_file = os.path.join(tmp, "taps-%d.ini" % self.port)
        with open(self.taps_file, "w") as f:
            f.write(taps if taps is not None else
                    "[kegboard.flow0]\nticks_per_ml = 2.2\nrelay_name = kegboard.relay0\n"
                    "[kegboard.flow1]\nticks_per_ml = 5.4\n")
        args = [kbtest.binary("kegbot_core"),
                "--kb_core_bind_addr=127.0.0.1:%d" % self.port,
                "--state_dir=" + self.state_dir,
                "--taps_file=" + self.taps_file,
                "--event_url=" + standin.event_url(),
                "--api_timeout=%s" % api_timeout,
                "--event_retry_interval=%d" % retry,
                "--event_heartbeat_interval=%d" % heartbeat,
                "--dbus=" + dbus,
                "--verbose",
                # Anonymous pours with the valves closed: the ghost filter's valve gate would hold them.
                "--novalve_closed_gate"] + list(flags)
        e = {"KEGBOT_API_URL": "", "KEGBOT_API_KEY": "", "KEGBOT_EVENT_URL": "", "STATE_DIRECTORY": "",
             "http_proxy": "", "HTTP_PROXY": "", "no_proxy": "*"}
        e.update(env or {})
        super().__init__(args, env=e, name="kegbot_core")
        self.readings = {}
        self.conn = None
        if wait:
            self.wait_line(r"\(main\) All services started\.", timeout=10)
            self.conn = kbtest.KegnetConn.connect(self.port)

    def device_dir(self, device="kegboard"):
        return os.path.join(self.state_dir, "event", device)

    def spool_files(self, device="kegboard"):
        return sorted(glob.glob(os.path.join(self.device_dir(device), "spool", "*.json")))

    def failed_files(self, device="kegboard"):
        return sorted(glob.glob(os.path.join(self.device_dir(device), "spool", "failed", "*")))

    def state(self, device="kegboard"):
        with open(os.path.join(self.device_dir(device), "state.json")) as f:
            return json.load(f)

    def pour(self, meter, ticks, readings=None):
        """One complete pour; returns the DrinkCreatedEvent-less FlowUpdate(completed) data."""
        readings = self.readings if readings is None else readings
        if meter not in readings:
            self.conn.send("MeterUpdate", meter_name=meter, reading=0)
            readings[meter] = 0
        readings[meter] += ticks
        self.conn.send("MeterUpdate", meter_name=meter, reading=readings[meter])
        self.conn.send("FlowRequest", meter_name=meter, request="stop_flow")
        m, _ = self.conn.recv_until(lambda m: m.get("event") == "FlowUpdate" and m["data"]["meter_name"] == meter
                                    and m["data"]["state"] == "completed", timeout=10, what="completed flow")
        return m["data"]

    def wait_drink_created(self, timeout=15):
        m, _ = self.conn.recv_until(lambda m: m.get("event") == "DrinkCreatedEvent", timeout=timeout,
                                    what="DrinkCreatedEvent")
        return m["data"]

    def count_lines(self, pattern):
        rx = re.compile(pattern)
        return len([l for l in self.output() if rx.search(l)])

    def kill(self):
        if self.conn:
            self.conn.close()
        return super().kill()

    def stop(self, timeout=10.0):
        if self.conn:
            self.conn.close()
        return super().stop(timeout)
