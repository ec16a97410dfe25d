"""The stand-in Kegboard Event Protocol receiver (kegboard-event-protocol.md section 16): Kegbot Server
2.0's POST /api/kegboard-event with pairing, the per-device cursor, pour_id deduplication and commands
re-sent until acknowledged, plus strict checks of every batch. Violations are recorded, never answered:
every test ends by asserting that the list is empty.

Used by kegbot_server.py, which routes the endpoint and the /_control/event/* calls here."""
import json
import re
import secrets
import threading
import time

DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
SERIES_RE = re.compile(r"^\d+:\d+( \d+:\d+)*$")
TYPES = ("pour", "pour_update", "temperature", "token", "status", "command_result", "grant_end")
END_REASONS = ("max_volume", "max_duration", "max_idle", "detach", "command", "replaced")
ENVELOPE_KEYS = {"v", "device", "boot_id", "sent_uptime_ms", "events"}
EVENT_KEYS = {"id", "type", "age_ms", "time", "data"}
DATA_KEYS = {
    "pour": ({"meter_number", "pour_id", "volume_ml", "duration_ms"},
             {"auth_device", "auth_token", "grant_id", "ticks", "ml_per_tick", "tick_series"}),
    "pour_update": ({"meter_number", "pour_id", "volume_ml", "duration_ms"}, set()),
    "temperature": ({"sensor", "temp_c"}, set()),
    "token": ({"auth_device", "token", "action"}, set()),
    "status": ({"state", "fw_version", "uptime_ms", "events_dropped", "config"}, {"meters", "relays"}),
    "command_result": ({"command", "result"}, {"message"}),
    "grant_end": ({"meter_numbers", "reason", "grant_id", "volume_ml", "duration_ms"}, {"auth_device", "auth_token"}),
}
STRICT_BODY_MAX = 16000


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def has_null(v):
    if v is None:
        return True
    if isinstance(v, dict):
        return any(has_null(x) for x in v.values())
    if isinstance(v, list):
        return any(has_null(x) for x in v)
    return False


class Receiver:
    def __init__(self):
        self.lock = threading.RLock()
        self.require_auth = True
        self.max_body = 16384
        self.setup_required = False
        self.strict = True
        self.devices = {}        # name -> roster entry
        self.tokens = {}         # token -> device
        self.staged = {}         # device -> token to hand out once
        self.denied = set()
        self.cursors = {}        # device -> [boot_id, last_id]
        self.seen = {}           # (device, boot_id, id) -> (type, data, age_ms)
        self.processed = set()   # (device, boot_id, id)
        self.drinks = []
        self.pour_ids = {}       # pour_id -> (meter_number, volume_ml, ticks)
        self.duplicates = 0
        self.events = []         # processed events
        self.commands = []       # {"id", "device", "type", "data", "acked", "result"}
        self.requests = []
        self.violations = []
        self.policies = {}       # device -> overrides
        self.bindings = {}       # (device, meter) -> {"bound", "keg"}
        self.grant_ends = set()  # (device, grant_id, meter)
        self.heartbeat_seen = {}  # (device, boot_id) -> max uptime of a heartbeat
        self.totals = {}         # (device, boot_id, meter) -> total_ticks
        self.known_meters = {}   # device -> set of meter numbers (from status)
        self.known_relays = {}   # device -> set of relay numbers
        self.tokens_db = {("core.rfid", "deadbeef"): {"user": "alice", "enabled": True},
                          ("core.onewire", "0000111122223333"): {"user": "bob", "enabled": True},
                          ("core.rfid", "d15ab1ed"): {"user": "alice", "enabled": False},
                          ("core.rfid", "f00d"): {"user": None, "enabled": True}}
        self.cmd_seq = 0

    # ---------------------------------------------------------------- checks (16.2)

    def violation(self, device, text):
        self.violations.append({"time": time.time(), "device": device, "text": text})

    def check_batch(self, headers, raw, body):
        dev = body.get("device") if isinstance(body, dict) else None
        v = lambda t: self.violation(dev, t)
        if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            v("Content-Type is %r" % headers.get("Content-Type"))
        auth = headers.get("Authorization")
        if auth is not None:
            if not auth.startswith("Bearer ") or len(auth) <= 7:
                v("bad Authorization header %r" % auth[:20])
            elif dev is not None and self.tokens.get(auth[7:]) not in (None, dev) and self.strict:
                v("token of another device")
        if len(raw) > STRICT_BODY_MAX:
            v("body of %d bytes" % len(raw))
        if has_null(body):
            v("null in the batch")
        if not isinstance(body, dict):
            return v("body is not an object")
        if self.strict and set(body) - ENVELOPE_KEYS:
            v("unknown envelope keys %s" % sorted(set(body) - ENVELOPE_KEYS))
        if body.get("v") != 1:
            v("v is %r" % body.get("v"))
        if not isinstance(dev, str) or not DEVICE_RE.match(dev):
            v("device %r" % dev)
        b = body.get("boot_id")
        if not isinstance(b, str) or not 1 <= len(b) <= 32:
            v("boot_id %r" % b)
        if not is_int(body.get("sent_uptime_ms")) or body["sent_uptime_ms"] < 0:
            v("sent_uptime_ms %r" % body.get("sent_uptime_ms"))
        evs = body.get("events")
        if not isinstance(evs, list) or not 1 <= len(evs) <= 16:
            return v("events is not 1-16 items")
        last = 0
        for e in evs:
            if not isinstance(e, dict):
                v("event not an object")
                continue
            self.check_event(dev, b, e, v)
            if is_int(e.get("id")):
                if e["id"] <= last:
                    v("ids not increasing: %d after %d" % (e["id"], last))
                last = e["id"]

    def check_event(self, dev, boot, e, v):
        if self.strict and set(e) - EVENT_KEYS:
            v("unknown event keys %s" % sorted(set(e) - EVENT_KEYS))
        if not is_int(e.get("id")) or not 1 <= e["id"] <= 2 ** 53 - 1:
            v("event id %r" % e.get("id"))
        t = e.get("type")
        if t not in TYPES:
            return v("event type %r" % t)
        if not is_int(e.get("age_ms")) or e["age_ms"] < 0:
            v("age_ms %r" % e.get("age_ms"))
        if "time" in e and (not isinstance(e["time"], str) or not TIME_RE.match(e["time"])):
            v("time %r" % e.get("time"))
        d = e.get("data")
        if not isinstance(d, dict):
            return v("data not an object")
        req, opt = DATA_KEYS[t]
        if req - set(d):
            v("%s lacks %s" % (t, sorted(req - set(d))))
        if self.strict and set(d) - req - opt:
            v("%s has unknown keys %s" % (t, sorted(set(d) - req - opt)))
        getattr(self, "check_" + t)(dev, boot, e, d, v)
        key = (dev, boot, e.get("id"))
        prev = self.seen.get(key)
        if prev is not None:
            if prev[0] != t or prev[1] != d:
                v("event %r resent with other content" % (key,))
            if t == "pour_update":
                v("pour_update %r received twice" % (key,))
            if is_int(e.get("age_ms")) and e["age_ms"] < prev[2]:
                v("event %r resent younger (%d < %d)" % (key, e["age_ms"], prev[2]))
        elif key in self.processed:
            pass
        else:
            cur = self.cursors.get(dev)
            if cur and cur[0] == boot and is_int(e.get("id")) and e["id"] <= cur[1]:
                v("leapfrog: event %r never processed but at or below the cursor %d" % (key, cur[1]))
        self.seen[key] = (t, d, e.get("age_ms") if is_int(e.get("age_ms")) else 0)

    def check_pour(self, dev, boot, e, d, v):
        if not is_int(d.get("meter_number")) or d["meter_number"] < 0:
            v("pour meter_number %r" % d.get("meter_number"))
        if not isinstance(d.get("pour_id"), str) or not 1 <= len(d["pour_id"]) <= 64:
            v("pour_id %r" % d.get("pour_id"))
        if not is_num(d.get("volume_ml")) or d["volume_ml"] <= 0:
            v("pour volume_ml %r" % d.get("volume_ml"))
        if not is_int(d.get("duration_ms")) or d["duration_ms"] < 0:
            v("pour duration_ms %r" % d.get("duration_ms"))
        for k in ("ticks", "ml_per_tick", "tick_series"):
            if k not in d:
                v("pour without %s" % k)
        if is_int(d.get("ticks")) and is_num(d.get("ml_per_tick")) and is_num(d.get("volume_ml")):
            if d["ml_per_tick"] <= 0 or abs(d["ticks"] * d["ml_per_tick"] - d["volume_ml"]) > 0.0005:
                v("pour volume %r != ticks x ml_per_tick" % d["volume_ml"])
        s = d.get("tick_series")
        if s is not None:
            if not isinstance(s, str) or not SERIES_RE.match(s):
                v("tick_series %r" % s)
            else:
                pairs = [tuple(map(int, p.split(":"))) for p in s.split(" ")]
                offs = [p[0] for p in pairs]
                if len(pairs) > 64 or offs != sorted(set(offs)) or sum(p[1] for p in pairs) != d.get("ticks"):
                    v("tick_series %r inconsistent" % s)
        echo = [k in d for k in ("auth_device", "auth_token", "grant_id")]
        if any(echo) and not all(echo) and echo != [False, False, True]:
            v("pour echo incomplete")
        pid = d.get("pour_id")
        if pid in self.pour_ids and self.pour_ids[pid] != (d.get("meter_number"), d.get("volume_ml"), d.get("ticks")):
            v("pour_id %s with other content" % pid)

    def check_pour_update(self, dev, boot, e, d, v):
        if not is_num(d.get("volume_ml")) or d["volume_ml"] < 0:
            v("pour_update volume_ml %r" % d.get("volume_ml"))
        if d.get("pour_id") in self.pour_ids:
            v("pour_update after its pour")

    def check_temperature(self, dev, boot, e, d, v):
        if not isinstance(d.get("sensor"), str) or not d["sensor"]:
            v("temperature sensor %r" % d.get("sensor"))
        if not is_num(d.get("temp_c")) or not -20 <= d["temp_c"] <= 80:
            v("temp_c %r" % d.get("temp_c"))

    def check_token(self, dev, boot, e, d, v):
        for k in ("auth_device", "token"):
            if not isinstance(d.get(k), str) or not d[k]:
                v("token %s %r" % (k, d.get(k)))
        if d.get("action") not in ("attached", "detached"):
            v("token action %r" % d.get("action"))
        if d.get("auth_device") in ("core.onewire", "core.rfid") and isinstance(d.get("token"), str) \
                and d["token"] != d["token"].lower():
            v("token not lowercase")

    def check_status(self, dev, boot, e, d, v):
        if d.get("state") not in ("boot", "heartbeat"):
            v("status state %r" % d.get("state"))
        if not isinstance(d.get("fw_version"), str):
            v("fw_version %r" % d.get("fw_version"))
        for k in ("uptime_ms", "events_dropped"):
            if not is_int(d.get(k)) or d[k] < 0:
                v("status %s %r" % (k, d.get(k)))
        c = d.get("config")
        if not isinstance(c, dict) or not is_int(c.get("heartbeat_ms")) or c["heartbeat_ms"] < 1000 \
                or not is_int(c.get("pour_update_ms")) or c["pour_update_ms"] < 0 \
                or not is_int(c.get("queue_capacity")) or c["queue_capacity"] < 1 \
                or (self.strict and set(c) - {"heartbeat_ms", "pour_update_ms", "queue_capacity"}):
            v("status config %r" % c)
        last = -1
        for m in d.get("meters", []):
            if not isinstance(m, dict) or not is_int(m.get("meter_number")) or m["meter_number"] <= last \
                    or not is_int(m.get("total_ticks")) or m["total_ticks"] < 0 \
                    or not is_num(m.get("ml_per_tick")) or m["ml_per_tick"] <= 0:
                v("status meter %r" % m)
                continue
            last = m["meter_number"]
            key = (dev, boot, m["meter_number"])
            if (dev, boot, e.get("id")) not in self.seen and m["total_ticks"] < self.totals.get(key, 0):
                v("total_ticks of meter %d went down" % m["meter_number"])
            self.totals[key] = max(self.totals.get(key, 0), m["total_ticks"])
        last = -1
        for r in d.get("relays", []):
            if not isinstance(r, dict) or not is_int(r.get("relay_number")) or r["relay_number"] <= last:
                v("status relay %r" % r)
                continue
            last = r["relay_number"]
        if "meters" in d and not d["meters"]:
            v("empty meters list")
        if "relays" in d and not d["relays"]:
            v("empty relays list")

    def check_command_result(self, dev, boot, e, d, v):
        if not isinstance(d.get("command"), str) or not d["command"]:
            v("command_result command %r" % d.get("command"))
        elif not any(c["id"] == d["command"] for c in self.commands):
            v("command_result for unknown command %s" % d["command"])
        if d.get("result") not in ("ok", "error", "unsupported"):
            v("command_result result %r" % d.get("result"))

    def check_grant_end(self, dev, boot, e, d, v):
        ms = d.get("meter_numbers")
        if not isinstance(ms, list) or not ms or not all(is_int(x) and x >= 0 for x in ms):
            v("grant_end meter_numbers %r" % ms)
        if d.get("reason") not in END_REASONS:
            v("grant_end reason %r" % d.get("reason"))

    # ---------------------------------------------------------------- behaviour (16.1)

    def handle(self, headers, raw, take_fault):
        """-> (status, body dict or None, action) where action is None, "lost", "hang" or "reset"."""
        entry = {"time": time.time(), "headers": dict(headers), "raw": raw.decode("utf-8", "replace")}
        with self.lock:
            self.requests.append(entry)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            entry["body"] = body
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                self.violation(None, "body is not UTF-8")
            if body is not None:
                self.check_batch(headers, raw, body)
            fault = take_fault(body)
            status, answer, action = self.respond(headers, raw, body, fault)
            entry["status"] = status if action is None else action
            entry["answer"] = answer
            return status, answer, action

    def respond(self, headers, raw, body, fault):
        if fault in ("hang", "reset"):
            return None, None, fault
        if fault in ("html500", "json500", "503"):
            return (503 if fault == "503" else 500), {"error": "injected"}, None
        if fault in ("400", "401", "403", "404", "413"):
            return int(fault), {"error": "injected"}, None
        if self.setup_required:
            return 503, {"error": "setup_required"}, None
        if len(raw) > self.max_body:
            return 413, {"error": "too_large"}, None
        err = self.envelope_error(body)
        if err:
            return 400, err, None
        dev = body["device"]
        roster = self.devices.setdefault(dev, {"first_seen": time.time(), "state": "pending", "paired": False})
        if self.require_auth:
            auth = headers.get("Authorization") or ""
            token = auth[7:] if auth.startswith("Bearer ") else None
            if token is None or self.tokens.get(token) != dev:
                if dev in self.denied:
                    roster["state"] = "denied"
                    return 401, {"pairing": {"state": "denied"}}, None
                if dev in self.staged:
                    tok = self.staged.pop(dev)
                    self.tokens[tok] = dev
                    roster["state"] = "allowed"
                    roster["paired"] = True
                    return 401, {"pairing": {"state": "allowed", "token": tok}}, None
                roster["state"] = "pending"
                return 401, {"pairing": {"state": "pending"}}, None
        self.process(dev, body)
        answer = {"commands": [{"id": c["id"], "type": c["type"], "data": c["data"]}
                               for c in self.commands if c["device"] == dev and not c["acked"]]}
        if fault == "lost":
            return 200, answer, "lost"
        return 200, answer, None

    def envelope_error(self, body):
        if not isinstance(body, dict):
            return {"error": "invalid", "detail": {"body": "not an object"}}
        if not is_int(body.get("v")):
            return {"error": "invalid", "detail": {"v": "required"}}
        if body["v"] != 1:
            return {"error": "unsupported_version"}
        if not isinstance(body.get("device"), str) or not 1 <= len(body["device"]) <= 64:
            return {"error": "invalid", "detail": {"device": "bad"}}
        if not isinstance(body.get("boot_id"), str) or not 1 <= len(body["boot_id"]) <= 32:
            return {"error": "invalid", "detail": {"boot_id": "bad"}}
        if not is_int(body.get("sent_uptime_ms")) or body["sent_uptime_ms"] < 0:
            return {"error": "invalid", "detail": {"sent_uptime_ms": "bad"}}
        evs = body.get("events")
        if not isinstance(evs, list) or not 1 <= len(evs) <= 16:
            return {"error": "invalid", "detail": {"events": "bad"}}
        for e in evs:
            if not isinstance(e, dict) or not is_int(e.get("id")) or e["id"] < 1 or not isinstance(e.get("type"), str) \
                    or not is_int(e.get("age_ms")) or e["age_ms"] < 0 or not isinstance(e.get("data"), dict) \
                    or ("time" in e and not (isinstance(e["time"], str) and TIME_RE.match(e["time"]))):
                return {"error": "invalid", "detail": {"events": "bad event"}}
        return None

    def process(self, dev, body):
        boot = body["boot_id"]
        cur = self.cursors.get(dev)
        if not cur or cur[0] != boot:
            cur = self.cursors[dev] = [boot, 0]
        now = time.time()
        roster = self.devices[dev]
        for e in body["events"]:
            if e["id"] <= cur[1]:
                roster["skipped"] = roster.get("skipped", 0) + 1
                continue
            key = (dev, boot, e["id"])
            self.processed.add(key)
            d = e["data"]
            rec = {"device": dev, "boot_id": boot, "id": e["id"], "type": e["type"], "age_ms": e["age_ms"],
                   "time": e.get("time"), "data": d, "received": now}
            self.events.append(rec)
            t = e["type"]
            if t == "pour":
                pid = d.get("pour_id")
                if pid in self.pour_ids:
                    self.duplicates += 1
                    continue
                self.pour_ids[pid] = (d.get("meter_number"), d.get("volume_ml"), d.get("ticks"))
                b = self.bindings.get((dev, d.get("meter_number")), {"bound": True, "keg": True})
                if not b["bound"] or not b["keg"]:
                    continue
                self.drinks.append({"device": dev, "boot_id": boot, "event_id": e["id"], "pour_id": pid,
                                    "meter_number": d.get("meter_number"), "volume_ml": d.get("volume_ml"),
                                    "ticks": d.get("ticks"), "duration_ms": d.get("duration_ms"),
                                    "grant_id": d.get("grant_id"), "auth_token": d.get("auth_token"),
                                    "time": now - e["age_ms"] / 1000.0, "age_ms": e["age_ms"], "received": now,
                                    "tick_series": d.get("tick_series"), "ml_per_tick": d.get("ml_per_tick")})
            elif t == "status":
                roster["last_status"] = d
                self.known_meters.setdefault(dev, set()).update(m["meter_number"] for m in d.get("meters", []))
                self.known_relays.setdefault(dev, set()).update(r["relay_number"] for r in d.get("relays", []))
            elif t == "command_result":
                for c in self.commands:
                    if c["id"] == d.get("command") and c["device"] == dev:
                        c["acked"] = True
                        c["result"] = d.get("result")
                        c["message"] = d.get("message")
            elif t == "token" and d.get("action") == "attached":
                self.grant_policy(dev, d)
            elif t == "grant_end":
                for m in d.get("meter_numbers", []):
                    k = (dev, d.get("grant_id"), m)
                    if k in self.grant_ends:
                        self.violation(dev, "second grant_end for %r" % (k,))
                    self.grant_ends.add(k)
            cur[1] = e["id"]

    def queue_command(self, dev, type_, data):
        self.cmd_seq += 1
        cid = "cmd_%08x" % self.cmd_seq
        self.commands.append({"id": cid, "device": dev, "type": type_, "data": data, "acked": False,
                              "result": None, "message": None, "time": time.time()})
        return cid

    def grant_policy(self, dev, d):
        pol = self.policies.get(dev, {})
        decide = pol.get("decide")
        tok = self.tokens_db.get((d.get("auth_device"), d.get("token")))
        if decide is None:
            decide = "authorize" if tok and tok["enabled"] and tok["user"] else "deny"
        if decide == "none":
            return
        if decide == "deny":
            reason = "Unknown token" if not tok else "Token is disabled" if not tok["enabled"] \
                else "Token not assigned to a user"
            self.queue_command(dev, "deny", {"auth_device": d.get("auth_device"), "token": d.get("token"),
                                             "reason": reason})
            return
        data = {"grant_id": "g_%s" % secrets.token_hex(4),
                "meter_numbers": pol.get("meter_numbers") or sorted(self.known_meters.get(dev, {0})),
                "relay_numbers": pol.get("relay_numbers", sorted(self.known_relays.get(dev, set()))),
                "max_idle_ms": pol.get("max_idle_ms", 30000),
                "auth_device": d.get("auth_device"), "token": d.get("token")}
        for k in ("max_volume_ml", "max_duration_ms"):
            if pol.get(k) is not None:
                data[k] = pol[k]
        self.queue_command(dev, "authorize", data)

    # ---------------------------------------------------------------- control (16.3)

    def control_post(self, path, body):
        with self.lock:
            if path == "set":
                for k in ("require_auth", "max_body", "setup_required", "strict"):
                    if k in body:
                        setattr(self, k, body[k])
                return {}
            if path == "pairing":
                dev, action = body["device"], body["action"]
                if action == "allow":
                    self.denied.discard(dev)
                    tok = "kbe_" + secrets.token_hex(20)
                    self.staged[dev] = tok
                    return {"token": tok}
                if action == "deny":
                    self.denied.add(dev)
                    return {}
                if action == "revoke":
                    for t in [t for t, d in self.tokens.items() if d == dev]:
                        del self.tokens[t]
                    return {}
                if action == "forget":
                    for t in [t for t, d in self.tokens.items() if d == dev]:
                        del self.tokens[t]
                    self.devices.pop(dev, None)
                    self.denied.discard(dev)
                    return {}
                raise ValueError("action %r" % action)
            if path == "policy":
                self.policies[body["device"]] = {k: v for k, v in body.items() if k != "device"}
                return {}
            if path == "command":
                return {"id": self.queue_command(body["device"], body["type"], body.get("data"))}
            if path == "bind":
                self.bindings[(body["device"], body["meter_number"])] = {"bound": body.get("bound", True),
                                                                         "keg": body.get("keg", True)}
                return {}
            if path == "clear-cursor":
                self.cursors.pop(body["device"], None)
                return {}
            if path == "clear-requests":
                self.requests.clear()
                return {}
        raise KeyError(path)

    def control_get(self, path):
        with self.lock:
            if path == "requests":
                return self.requests
            if path == "drinks":
                return self.drinks
            if path == "events":
                return self.events
            if path == "commands":
                return self.commands
            if path == "roster":
                return {"devices": self.devices, "duplicates": self.duplicates,
                        "cursors": {d: c for d, c in self.cursors.items()},
                        "tokens": {d: t for t, d in self.tokens.items()}}
            if path == "violations":
                return self.violations
        raise KeyError(path)
