#!/usr/bin/python3
"""A stand-in for Kegbot Server's legacy HTTP API (kegbot-server-api.md section 9), for tests.

Serves the API on one loopback port and a control API on another:

    kegbot_server.py [--port N] [--control-port N] [--profile 1.3|2.0] [--api-key KEY]
                     [--privacy public|members|staff] [--seed FILE.json] [--no-default-seed]

Prints "PORT <api> CONTROL <control>" on stdout once both listen. Everything it receives is kept
in memory and can be read back; failures can be injected per endpoint at run time (HTML/JSON 500,
401, 404, 400, hang, slow body, delay, response lost after commit, refused connections).

GET drinks and GET events give the newest 100, newest first; drink_poured events carry their drink.

Control API (JSON bodies and answers, on the control port):
  GET  /_control/requests        every API request: method, path, headers, form, endpoint, status
  GET  /_control/drinks          recorded drinks (server view plus the posted form)
  GET  /_control/thermo          thermo logs
  GET  /_control/state           the whole data set
  POST /_control/clear-log       forget the request log
  POST /_control/fail            {"endpoint": "drink"|"status"|"thermo"|"auth"|"controllers"|
                                  "flow-meters"|"taps"|"calibrate"|"*", "mode": "html500"|"json500"|
                                  "401"|"404"|"400"|"408"|"429"|"hang"|"slow"|"delay"|"lost"|
                                  "lost-reset"|"reset",
                                  "count": N,
                                  "delay": seconds,
                                  "message": text of a 400/404 answer (default: as a drink post's)}
  POST /_control/clear-failures  back to normal answers (also wakes hanging requests)
  POST /_control/refuse          close the API listening socket (connection refused)
  POST /_control/accept          listen again on the same port
  POST /_control/seed            add users, api_keys, tokens, controllers, meters, toggles, kegs, taps
  POST /_control/set             {"privacy", "profile", "setup_required", "debug", "insecure_key"}
  POST /_control/revoke-key      {"key": K} (deactivates it); /_control/add-key {"key", "user"}
  POST /_control/remove-user     {"username": U} (drinks for U then fail with 500, as on a real server)
  POST /_control/remove-tap      {"meter": M}; /_control/remove-keg {"meter": M}
  POST /_control/set-meter       {"meter": M, "ticks_per_ml": X} (an admin changing a calibration)

The Kegboard Event Protocol receiver of Kegbot Server 2.0 (kegboard-event-protocol.md section 16) is
served on the same port at POST /api/kegboard-event (both profiles), with its control calls under
/_control/event/ (kbevent_receiver.py). Faults for it: /_control/fail with "endpoint": "event", any
mode above plus "503", "403", "413", and "match": {"type": T} or {"id": N} to hit only batches
holding such an event.
"""
import argparse
import datetime
import email.parser
import email.policy
import json
import re
import socket
import sys
import threading
import time
import traceback
import os
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kbevent_receiver import Receiver  # noqa: E402

UTC = datetime.timezone.utc
SESSION_GAP = datetime.timedelta(minutes=180)
BODY_MAX = 1 << 20

# Legacy paths that exist on 1.3 but answer 410 GoneError on 2.0.
RETIRED_ON_20 = {"drinks", "sound-events", "version", "kegs", "users", "sessions", "thermo-sensors",
                 "flow-toggles", "login", "logout", "get-api-key", "devices", "pictures", "stats",
                 "beverages", "keg-sizes", "auth-tokens-list", "flow-meters-list", "record-thermo"}


def iso(dt):
    return dt.astimezone(UTC).isoformat()


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message if isinstance(message, str) else json.dumps(message))
        self.status = status
        self.code = code
        self.message = message


def not_found(msg):
    return ApiError(404, "NotFoundError", msg)


def bad_request(msg):
    return ApiError(400, "BadRequestError", msg)


def server_error(text):
    return ApiError(500, "ServerError", "An internal error occurred: %s" % text)


class HtmlError(Exception):
    def __init__(self, status, title):
        super().__init__(title)
        self.status = status
        self.title = title


class ConnectionDrop(Exception):
    """Close the connection without an answer."""


class Data:
    """The server's database, guarded by one lock."""

    def __init__(self, api_key, privacy, profile):
        self.lock = threading.RLock()
        self.profile = profile
        self.privacy = privacy
        self.setup_required = None        # None, "Setup required" or "Upgrade required"
        self.debug = True
        self.insecure_key = None
        self.users = {"guest": {"is_active": True, "staff": False}}
        self.api_keys = {}
        if api_key:
            self.users.setdefault("admin", {"is_active": True, "staff": True})
            self.api_keys[api_key] = {"active": True, "user": "admin"}
        self.controllers = {}   # id -> dict
        self.meters = {}
        self.toggles = {}
        self.kegs = {}
        self.taps = {}
        self.drinks = []
        self.sessions = []
        self.events = []
        self.sensors = {}       # name -> id
        self.thermo = []
        self.tokens = []
        self.next_id = {}

    def new_id(self, kind):
        n = self.next_id.get(kind, 0) + 1
        self.next_id[kind] = n
        return n

    # ---------------------------------------------------------------- seeding

    def seed(self, s):
        with self.lock:
            for u in s.get("users", []):
                if isinstance(u, str):
                    u = {"username": u}
                self.users[u["username"]] = {"is_active": u.get("is_active", True), "staff": u.get("staff", False)}
            for k in s.get("api_keys", []):
                self.api_keys[k["key"]] = {"active": k.get("active", True), "user": k.get("user")}
                if k.get("user") and k["user"] not in self.users:
                    self.users[k["user"]] = {"is_active": True, "staff": True}
            for c in s.get("controllers", []):
                self.add_controller(c["name"], c.get("model_name", "unknown"), c.get("serial_number", "unknown"))
            for m in s.get("meters", []):
                cid = self.controller_by_name(m["controller"])["id"]
                self.add_meter(cid, m["port_name"], m.get("ticks_per_ml", 2.724))
            for t in s.get("toggles", []):
                cid = self.controller_by_name(t["controller"])["id"]
                tid = self.new_id("toggle")
                self.toggles[tid] = {"id": tid, "controller_id": cid, "port_name": t["port_name"]}
            for k in s.get("kegs", []):
                self.add_keg(k)
            for t in s.get("taps", []):
                self.add_tap(t)
            for t in s.get("tokens", []):
                self.add_token(t)

    def add_controller(self, name, model_name, serial_number):
        cid = self.new_id("controller")
        self.controllers[cid] = {"id": cid, "name": name, "model_name": model_name or "",
                                 "serial_number": serial_number or ""}
        return self.controllers[cid]

    def controller_by_name(self, name):
        for c in self.controllers.values():
            if c["name"] == name:
                return c
        return None

    def add_meter(self, cid, port_name, ticks_per_ml):
        mid = self.new_id("meter")
        self.meters[mid] = {"id": mid, "controller_id": cid, "port_name": port_name,
                            "ticks_per_ml": float(ticks_per_ml)}
        return self.meters[mid]

    def add_keg(self, k):
        kid = self.new_id("keg")
        full = float(k.get("full_volume_ml", 58673.9))
        self.kegs[kid] = {"id": kid, "beverage": k.get("beverage", "Test Beer"), "full_volume_ml": full,
                          "served_volume_ml": 0.0, "spilled_volume_ml": 0.0,
                          "start_time": datetime.datetime.now(UTC), "online": True}
        return self.kegs[kid]

    def add_tap(self, t):
        """t: {name, meter: "ctrl.port" or null, ticks_per_ml, relay: "ctrl.port" or null, keg: bool}"""
        tid = self.new_id("tap")
        tap = {"id": tid, "name": t.get("name", "Tap %d" % tid), "meter_id": None, "toggle_id": None,
               "keg_id": None, "sort_order": t.get("sort_order", 0)}
        if t.get("meter"):
            cname, port = t["meter"].split(".", 1)
            c = self.controller_by_name(cname) or self.add_controller(cname, "unknown", "unknown")
            m = None
            for mm in self.meters.values():
                if mm["controller_id"] == c["id"] and mm["port_name"] == port:
                    m = mm
            if m is None:
                m = self.add_meter(c["id"], port, t.get("ticks_per_ml", 2.2))
            elif "ticks_per_ml" in t:
                m["ticks_per_ml"] = float(t["ticks_per_ml"])
            tap["meter_id"] = m["id"]
        if t.get("relay"):
            cname, port = t["relay"].split(".", 1)
            c = self.controller_by_name(cname) or self.add_controller(cname, "unknown", "unknown")
            tg = None
            for x in self.toggles.values():
                if x["controller_id"] == c["id"] and x["port_name"] == port:
                    tg = x
            if tg is None:
                xid = self.new_id("toggle")
                tg = self.toggles[xid] = {"id": xid, "controller_id": c["id"], "port_name": port}
            tap["toggle_id"] = tg["id"]
        if t.get("keg", True):
            tap["keg_id"] = self.add_keg(t.get("keg_info", {}))["id"]
        self.taps[tid] = tap
        return tap

    def add_token(self, t):
        device = t["auth_device"]
        value = t["token_value"]
        if device in ("core.onewire", "core.rfid"):
            value = value.lower()
        tok = {"id": self.new_id("token"), "auth_device": device, "token_value": value,
               "enabled": t.get("enabled", True), "created_time": datetime.datetime.now(UTC)}
        if t.get("username"):
            tok["username"] = t["username"]
            self.users.setdefault(t["username"], {"is_active": True, "staff": False})
        for k in ("nice_name", "expire_time", "pin"):
            if t.get(k):
                tok[k] = t[k]
        self.tokens.append(tok)
        return tok

    # ---------------------------------------------------------------- serialisation

    def full_lists(self):
        return self.profile == "2.0"

    def put_list(self, obj, key, items):
        if items or self.full_lists():
            obj[key] = items

    def controller_obj(self, c):
        o = {"id": c["id"], "name": c["name"]}
        if c["model_name"]:
            o["model_name"] = c["model_name"]
        if c["serial_number"]:
            o["serial_number"] = c["serial_number"]
        return o

    def meter_name(self, m):
        return "%s.%s" % (self.controllers[m["controller_id"]]["name"], m["port_name"])

    def meter_obj(self, m):
        return {"id": m["id"], "name": self.meter_name(m), "port_name": m["port_name"],
                "ticks_per_ml": m["ticks_per_ml"], "controller": self.controller_obj(self.controllers[m["controller_id"]])}

    def toggle_obj(self, t):
        c = self.controllers[t["controller_id"]]
        return {"id": t["id"], "name": "%s.%s" % (c["name"], t["port_name"]), "port_name": t["port_name"],
                "controller": self.controller_obj(c)}

    def keg_obj(self, k):
        served = k["served_volume_ml"] + k["spilled_volume_ml"]
        remaining = k["full_volume_ml"] - served
        o = {"id": k["id"], "keg_type": "half-barrel", "remaining_volume_ml": remaining,
             "full_volume_ml": k["full_volume_ml"], "served_volume_ml": k["served_volume_ml"],
             "spilled_volume_ml": k["spilled_volume_ml"],
             "percent_full": 100.0 * remaining / k["full_volume_ml"] if k["full_volume_ml"] else 0.0,
             "start_time": iso(k["start_time"]), "end_time": iso(k["start_time"]), "online": k["online"],
             "beverage": {"id": k["id"], "name": k["beverage"], "producer": {"id": 1, "name": "Brewer"},
                          "beverage_type": "beer"}}
        if self.profile == "1.3":
            o["type"] = {"id": k["id"], "name": k["beverage"], "brewer_id": 1, "style_id": 1, "abv": 5.0}
            o["type_id"] = k["id"]
        return o

    def tap_obj(self, t, full):
        o = {"id": t["id"], "name": t["name"], "sort_order": t["sort_order"]}
        if t["meter_id"]:
            m = self.meters[t["meter_id"]]
            o["meter_name"] = self.meter_name(m)
            o["ml_per_tick"] = 1.0 / m["ticks_per_ml"]
            o["meter"] = self.meter_obj(m)
        else:
            o["meter_name"] = "unknown.%d" % t["id"]
            o["ml_per_tick"] = 0.0 if self.profile == "1.3" else 0
        if t["toggle_id"]:
            tg = self.toggles[t["toggle_id"]]
            o["relay_name"] = self.toggle_obj(tg)["name"]
            o["toggle"] = self.toggle_obj(tg)
        else:
            o["relay_name"] = ""
        if t["keg_id"]:
            o["current_keg_id"] = t["keg_id"]
            if full:
                o["current_keg"] = self.keg_obj(self.kegs[t["keg_id"]])
        if full:
            for log in reversed(self.thermo):
                if t.get("thermo_sensor_id") == log["sensor_id"]:
                    o["last_temperature"] = self.thermo_obj(log)
                    break
        return o

    def session_obj(self, s, full=False):
        o = {"id": s["id"], "start_time": iso(s["start_time"]), "end_time": iso(s["end_time"]),
             "volume_ml": s["volume_ml"], "name": "", "url": "/sessions/%d/" % s["id"]}
        if full:
            o["is_active"] = datetime.datetime.now(UTC) - s["end_time"] < SESSION_GAP
        return o

    def user_obj(self, username):
        return {"username": username, "is_active": self.users.get(username, {}).get("is_active", True),
                "url": "/drinkers/%s/" % username, "display_name": username}

    def drink_obj(self, d, full):
        o = {"id": d["id"], "ticks": d["ticks"], "volume_ml": d["volume_ml"], "session_id": d["session_id"],
             "time": iso(d["time"]), "duration": d["duration"], "url": "/drinks/%d/" % d["id"]}
        if d["keg_id"]:
            o["keg_id"] = d["keg_id"]
        o["user_id"] = d["user_id"]
        if d.get("shout"):
            o["shout"] = d["shout"]
        if full:
            o["user"] = self.user_obj(d["user_id"])
            if d["keg_id"]:
                o["keg"] = self.keg_obj(self.kegs[d["keg_id"]])
            sess = next(s for s in self.sessions if s["id"] == d["session_id"])
            o["session"] = self.session_obj(sess, True)
        return o

    def event_obj(self, e):
        """A SystemEvent: drink_poured events carry their drink (what a core reconciling a drink in
        doubt reads on 2.0, where GET drinks is gone)."""
        o = dict(e)
        if e["kind"] == "drink_poured":
            d = next((d for d in self.drinks if d["id"] == e["drink_id"]), None)
            if d:
                o["drink"] = self.drink_obj(d, False)
                o["keg_id"] = d["keg_id"]
                o["user_id"] = d["user_id"]
        return o

    def thermo_obj(self, log):
        return {"id": log["id"], "sensor_id": log["sensor_id"], "temperature_c": log["temperature_c"],
                "time": iso(log["time"])}

    def token_obj(self, t):
        o = {"id": t["id"], "auth_device": t["auth_device"], "token_value": t["token_value"],
             "enabled": t["enabled"], "created_time": iso(t["created_time"])}
        if t.get("username"):
            o["username"] = t["username"]
            o["user"] = self.user_obj(t["username"])
        for k in ("nice_name", "expire_time", "pin"):
            if t.get(k):
                o[k] = t[k]
        return o

    def status_obj(self):
        o = {"site_info": {"title": "My Kegbot", "server_version": "1.3.0" if self.profile == "1.3" else "2.0.0"}}
        taps = sorted(self.taps.values(), key=lambda t: (t["sort_order"], t["id"]))
        self.put_list(o, "taps", [self.tap_obj(t, False) for t in taps])
        self.put_list(o, "controllers", [self.controller_obj(c) for c in self.controllers.values()])
        self.put_list(o, "meters", [self.meter_obj(m) for m in self.meters.values()])
        self.put_list(o, "toggles", [self.toggle_obj(t) for t in self.toggles.values()])
        self.put_list(o, "active_kegs", [self.keg_obj(self.kegs[t["keg_id"]]) for t in taps if t["keg_id"]])
        self.put_list(o, "drinks", [self.drink_obj(d, False) for d in self.drinks[-5:][::-1]])
        self.put_list(o, "events", list(self.events[-5:][::-1]))
        now = datetime.datetime.now(UTC)
        if self.sessions and now - self.sessions[-1]["end_time"] < SESSION_GAP:
            o["active_session"] = self.session_obj(self.sessions[-1], True)
        self.put_list(o, "active_users", [])
        return o

    # ---------------------------------------------------------------- operations

    def resolve_tap(self, x):
        if re.fullmatch(r"\d+", x):
            t = self.taps.get(int(x))
            if not t:
                raise not_found("KegTap matching query does not exist.")
            return t
        if "." not in x:
            raise not_found("Illegal meter_name: '%s'" % x)
        cname, port = x.split(".", 1)
        c = self.controller_by_name(cname)
        if not c:
            raise not_found("No such controller: '%s'" % cname)
        m = next((m for m in self.meters.values() if m["controller_id"] == c["id"] and m["port_name"] == port), None)
        if not m:
            raise not_found("FlowMeter matching query does not exist.")
        t = next((t for t in self.taps.values() if t["meter_id"] == m["id"]), None)
        if not t:
            raise not_found("Meter is inactive")
        return t

    def record_drink(self, tap, form):
        errors = {}
        ticks = form.get("ticks")
        if ticks is None or ticks == "":
            errors["ticks"] = ["This field is required."]
        elif not re.fullmatch(r"\s*[-+]?\d+\s*", ticks):
            errors["ticks"] = ["Enter a whole number."]
        volume = form.get("volume_ml")
        if volume not in (None, ""):
            try:
                volume = float(volume)
            except ValueError:
                errors["volume_ml"] = ["Enter a number."]
        else:
            volume = None
        username = form.get("username") or ""
        if username and (len(username) > 30 or not re.fullmatch(r"[\w.@+-]+", username)):
            errors["username"] = ["Enter a valid value."]
        duration = form.get("duration")
        if duration not in (None, ""):
            if not re.fullmatch(r"\s*[-+]?\d+\s*", duration):
                errors["duration"] = ["Enter a whole number."]
        ints = {}
        for k in ("pour_time", "now"):
            v = form.get(k)
            if v not in (None, ""):
                if not re.fullmatch(r"\s*[-+]?\d+\s*", v):
                    errors[k] = ["Enter a whole number."]
                else:
                    ints[k] = int(v)
        if errors:
            raise bad_request(errors)
        ticks = int(ticks)
        duration = int(duration) if duration not in (None, "") else 0
        if not tap["keg_id"]:
            raise bad_request("No active keg at this tap")
        if volume is None:
            if not tap["meter_id"]:
                raise bad_request("Tap has no meter, can't compute volume")
            volume = ticks / self.meters[tap["meter_id"]]["ticks_per_ml"]
        if ticks < 0:
            raise server_error('new row for relation "core_drink" violates check constraint "core_drink_ticks_check"')
        if username and username not in self.users:
            raise server_error("User matching query does not exist.")
        now = datetime.datetime.now(UTC)
        record_date = form.get("record_date")
        if record_date:
            try:
                t = datetime.datetime.fromisoformat(record_date)
            except ValueError:
                raise bad_request("Invalid record_date")
            if t.tzinfo is None:
                raise server_error("can't compare offset-naive and offset-aware datetimes")
            when = t
        elif "pour_time" in ints and "now" in ints:
            when = now - datetime.timedelta(seconds=ints["now"] - ints["pour_time"])
        else:
            when = now
        user = username or "guest"
        if self.sessions and when - self.sessions[-1]["end_time"] < SESSION_GAP:
            sess = self.sessions[-1]
            sess["end_time"] = max(sess["end_time"], when)
            sess["volume_ml"] += volume
        else:
            sess = {"id": self.new_id("session"), "start_time": when, "end_time": when, "volume_ml": volume}
            self.sessions.append(sess)
        keg = self.kegs[tap["keg_id"]]
        keg["served_volume_ml"] += volume
        d = {"id": self.new_id("drink"), "ticks": ticks, "volume_ml": volume, "session_id": sess["id"],
             "time": when, "duration": duration, "keg_id": tap["keg_id"], "user_id": user,
             "tap_id": tap["id"], "form": dict(form), "received": now}
        if form.get("shout"):
            d["shout"] = form["shout"]
        self.drinks.append(d)
        self.events.append({"id": self.new_id("event"), "kind": "drink_poured", "drink_id": d["id"],
                            "time": iso(now)})
        return d

    def calibrate_tap(self, tap, form):
        """POST taps/<x>/calibrate (calibration.md section 8): the meter's ticks_per_ml = 1 / ml_per_tick."""
        if not tap["meter_id"]:
            raise bad_request("Tap does not have a meter!")
        v = form.get("ml_per_tick")
        if v in (None, ""):
            raise bad_request({"ml_per_tick": ["This field is required."]})
        try:
            mpt = float(v)
        except ValueError:
            raise bad_request({"ml_per_tick": ["Enter a number."]})
        if not mpt > 0 or mpt == float("inf"):
            raise bad_request({"ml_per_tick": ["Enter a number."]})
        self.meters[tap["meter_id"]]["ticks_per_ml"] = 1.0 / mpt
        return tap

    def record_thermo(self, name, form):
        v = form.get("temp_c")
        if v in (None, ""):
            raise bad_request({"temp_c": ["This field is required."]})
        try:
            temp = float(v)
        except ValueError:
            raise bad_request({"temp_c": ["Enter a number."]})
        if not (-20.0 <= temp <= 80.0):
            raise bad_request("Temperature out of bounds")
        sid = self.sensors.get(name)
        if sid is None:
            sid = self.sensors[name] = self.new_id("sensor")
        now = datetime.datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)
        self.thermo = [l for l in self.thermo if now - l["time"] < datetime.timedelta(hours=24)]
        for log in self.thermo:
            if log["sensor_id"] == sid and log["time"] == minute:
                log["temperature_c"] = temp
                log["posts"] += 1
                return log
        log = {"id": self.new_id("thermo"), "sensor_id": sid, "sensor_name": name, "temperature_c": temp,
               "time": minute, "posts": 1}
        self.thermo.append(log)
        return log

    def create_controller(self, form):
        name = form.get("name") or ""
        errors = {}
        if not name:
            errors["name"] = ["This field is required."]
        elif len(name) > 128:
            errors["name"] = ["Ensure this value has at most 128 characters (it has %d)." % len(name)]
        elif self.controller_by_name(name):
            errors["name"] = ["Controller with this Name already exists."]
        for k in ("model_name", "serial_number"):
            if len(form.get(k) or "") > 128:
                errors[k] = ["Ensure this value has at most 128 characters."]
        if errors:
            raise bad_request(errors)
        return self.add_controller(name, form.get("model_name") or "", form.get("serial_number") or "")

    def create_flow_meter(self, form):
        errors = {}
        port = form.get("port_name") or ""
        if not port:
            errors["port_name"] = ["This field is required."]
        cid = form.get("controller") or ""
        c = None
        if not cid:
            errors["controller"] = ["This field is required."]
        elif not re.fullmatch(r"\d+", cid) or int(cid) not in self.controllers:
            errors["controller"] = ["Select a valid choice. That choice is not one of the available choices."]
        else:
            c = self.controllers[int(cid)]
        tpm = form.get("ticks_per_ml")
        if tpm not in (None, ""):
            try:
                tpm = float(tpm)
            except ValueError:
                errors["ticks_per_ml"] = ["Enter a number."]
        else:
            tpm = 2.724
        if errors:
            raise bad_request(errors)
        if any(m["controller_id"] == c["id"] and m["port_name"] == port for m in self.meters.values()):
            # A non-field (unique_together) error: the message object is empty, so the generic text.
            raise bad_request("The request was incomplete or malformed.")
        return self.add_meter(c["id"], port, tpm)


class Failures:
    """Injected failures: endpoint -> [mode, remaining count or None, delay]."""

    def __init__(self):
        self.lock = threading.Condition()
        self.rules = {}
        self.messages = {}
        self.generation = 0

    def set(self, endpoint, mode, count=None, delay=None, match=None, message=None):
        with self.lock:
            self.rules[endpoint] = [mode, count, delay, match]
            self.messages[endpoint] = message
            self.lock.notify_all()

    def message(self, endpoint, default):
        """The text an injected 400/404 on 'endpoint' answers with."""
        with self.lock:
            return self.messages.get(endpoint) or self.messages.get("*") or default

    def take_matching(self, endpoint, body):
        """The event endpoint's fault for a batch: a rule with "match" hits only batches holding an
        event of that type or id (and counts only those)."""
        with self.lock:
            r = self.rules.get(endpoint)
            if not r:
                return None, None, self.generation
            match = r[3]
            if match:
                evs = body.get("events") if isinstance(body, dict) else None
                if not isinstance(evs, list) or not any(
                        isinstance(e, dict) and all(e.get(k) == v for k, v in match.items()) for e in evs):
                    return None, None, self.generation
            mode, count, delay = r[0], r[1], r[2]
            if count is not None:
                r[1] = count - 1
                if r[1] <= 0:
                    del self.rules[endpoint]
            return mode, delay, self.generation

    def clear(self):
        with self.lock:
            self.rules.clear()
            self.messages.clear()
            self.generation += 1
            self.lock.notify_all()

    def take(self, endpoint):
        with self.lock:
            for key in (endpoint, "*"):
                r = self.rules.get(key)
                if not r:
                    continue
                mode, count, delay = r[0], r[1], r[2]
                if count is not None:
                    if count <= 0:
                        del self.rules[key]
                        continue
                    r[1] = count - 1
                    if r[1] <= 0:
                        del self.rules[key]
                return mode, delay, self.generation
        return None, None, self.generation

    def wait_cleared(self, generation, timeout):
        """Sleep until clear() or the timeout; True if cleared."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        with self.lock:
            while self.generation == generation:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.lock.wait(left if left is not None else 1.0)
            return True


class StandIn:
    def __init__(self, args):
        self.data = Data(args.api_key, args.privacy, args.profile)
        self.event = Receiver()
        self.failures = Failures()
        self.log = []
        self.log_lock = threading.Lock()
        self.api_port = args.port
        self.api_server = None
        self.api_thread = None
        self.serve_lock = threading.Lock()

    def start_api(self):
        with self.serve_lock:
            if self.api_server:
                return
            handler = make_api_handler(self)
            srv = ThreadingHTTPServer(("127.0.0.1", self.api_port), handler, bind_and_activate=False)
            srv.daemon_threads = True
            srv.allow_reuse_address = True
            srv.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.server_bind()
            srv.server_activate()
            self.api_port = srv.server_address[1]
            self.api_server = srv
            self.api_thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            self.api_thread.start()

    def stop_api(self):
        with self.serve_lock:
            srv = self.api_server
            self.api_server = None
        if srv:
            srv.shutdown()
            srv.server_close()
        # Open connections (keep-alive) are cut too, as when a server process dies.
        with self.log_lock:
            conns = list(getattr(self, "open_conns", set()))
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def record(self, entry):
        with self.log_lock:
            entry["n"] = len(self.log) + 1
            self.log.append(entry)
        return entry


def parse_form(headers, body):
    ctype = headers.get("Content-Type", "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        q = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in q.items()}
    if ctype.startswith("multipart/form-data"):
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        form = {}
        if msg.is_multipart():
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name:
                    form[name] = part.get_payload(decode=True).decode("utf-8", "replace")
        return form
    # JSON and anything else: the server sees no fields.
    return {}


def make_api_handler(st):
    data = st.data

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "WSGIServer/0.2"
        sys_version = "CPython/3"

        def log_message(self, fmt, *args):
            pass

        def setup(self):
            super().setup()
            with st.log_lock:
                if not hasattr(st, "open_conns"):
                    st.open_conns = set()
                st.open_conns.add(self.connection)

        def finish(self):
            try:
                super().finish()
            finally:
                with st.log_lock:
                    st.open_conns.discard(self.connection)

        def do_GET(self):
            self.handle_api("GET")

        def do_POST(self):
            self.handle_api("POST")

        def do_DELETE(self):
            self.handle_api("DELETE")

        def do_PUT(self):
            self.handle_api("PUT")

        # ------------------------------------------------------------ plumbing

        def send_body(self, status, ctype, body, extra=None, slow=None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            now = self.date_time_string()
            if ctype.startswith("application/json"):
                self.send_header("Expires", now)
                self.send_header("Cache-Control", "max-age=0, no-cache, no-store, must-revalidate, private")
            if data.profile == "2.0" and self.legacy:
                self.send_header("Deprecation", "true")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if slow:
                # Dribble the body over 'slow' seconds.
                n = max(1, len(body) // 10)
                for i in range(0, len(body), n):
                    self.wfile.write(body[i:i + n])
                    self.wfile.flush()
                    time.sleep(slow / 10.0)
            else:
                self.wfile.write(body)

        def send_json(self, status, obj, slow=None):
            body = (json.dumps(obj, indent=2) + "\n").encode()
            self.send_body(status, "application/json", body, slow=slow)

        def send_html(self, status, title):
            body = ("<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>%s</title>\n</head>\n<body>\n"
                    "  <h1>%s</h1><p></p>\n</body>\n</html>\n" % (title, title)).encode()
            self.send_body(status, "text/html; charset=utf-8", body)

        def send_error_envelope(self, e, slow=None):
            err = {"code": e.code, "message": e.message}
            if data.debug:
                err["traceback"] = "Traceback (most recent call last):\n  File \"kegbot/api/views.py\", line 1\n%s: %s\n" % (
                    e.code, e.message if isinstance(e.message, str) else json.dumps(e.message))
            self.send_json(e.status, {"error": err, "meta": {"result": "error"}}, slow=slow)

        # ------------------------------------------------------------ request

        def handle_api(self, method):
            self.legacy = False
            length = int(self.headers.get("Content-Length") or 0)
            if length > BODY_MAX:
                self.close_connection = True
                self.send_html(413, "Request Entity Too Large")
                return
            body = self.rfile.read(length) if length > 0 else b""
            url = urllib.parse.urlsplit(self.path)
            if method == "POST" and url.path == "/api/kegboard-event":
                return self.handle_event(body)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
            form = parse_form(self.headers, body) if method == "POST" else {}
            entry = st.record({"time": time.time(), "method": method, "path": url.path, "raw_path": self.path,
                               "query": query, "headers": {k: v for k, v in self.headers.items()},
                               "form": form, "body": body[:4096].decode("utf-8", "replace"),
                               "endpoint": None, "status": None})
            try:
                self.route(method, url.path, query, form, entry)
            except ConnectionDrop:
                if entry["status"] is None:
                    entry["status"] = "dropped"
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def handle_event(self, raw):
            gen = [None]

            def take_fault(body):
                mode, delay, gen[0] = st.failures.take_matching("event", body)
                gen.append(delay)
                return mode

            status, answer, action = st.event.handle(self.headers, raw, take_fault)
            if action == "hang":
                st.failures.wait_cleared(gen[0], gen[1])
                action = "lost"
            if action == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            if action in ("lost", "reset"):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.send_body(status, "application/json", (json.dumps(answer) + "\n").encode())

        def route(self, method, path, query, form, entry):
            rest = None
            mounts = ["/api/v1/", "/api/"] if data.profile == "1.3" else ["/api/v1/"]
            for m in mounts:
                if path.startswith(m) or path + "/" == m:
                    rest = path[len(m):]
                    break
            if rest is None:
                if data.profile == "2.0" and path.startswith("/api/"):
                    # The 2.0 /api/ is a different API (HTTP Basic auth, other shapes).
                    entry["status"] = 401
                    return self.send_body(401, "application/json",
                                          b'{"detail": "Authentication credentials were not provided."}\n',
                                          extra={"WWW-Authenticate": 'Basic realm="api"'})
                entry["status"] = 404
                return self.send_html(404, "Not Found")
            self.legacy = True
            if rest.endswith("/"):
                rest = rest[:-1]
            parts = rest.split("/") if rest else []
            endpoint, handler, needs_key = self.resolve(method, parts)
            entry["endpoint"] = endpoint

            mode, delay, gen = st.failures.take(endpoint or "")
            slow = None
            if mode == "hang":
                # Accept and read, then never answer (until cleared or 'delay' seconds), then drop.
                entry["status"] = "hang"
                st.failures.wait_cleared(gen, delay)
                raise ConnectionDrop()
            if mode == "reset":
                entry["status"] = "reset"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                raise ConnectionDrop()
            if mode == "delay":
                st.failures.wait_cleared(gen, delay if delay is not None else 5.0)
            if mode == "slow":
                slow = delay if delay is not None else 5.0
            if mode == "html500":
                entry["status"] = 500
                return self.send_html(500, "Server Error (500)")
            if mode == "json500":
                entry["status"] = 500
                return self.send_error_envelope(server_error("injected failure"))
            if mode == "401":
                entry["status"] = 401
                return self.send_error_envelope(ApiError(401, "BadApiKeyError", "API key does not exist"))
            if mode in ("408", "429"):
                # A throttling front end answering in the API's envelope: transient, never the drink's fault.
                entry["status"] = int(mode)
                return self.send_error_envelope(ApiError(int(mode), "ThrottledError", "Request was throttled."))
            if mode == "404":
                entry["status"] = 404
                return self.send_error_envelope(not_found(st.failures.message(endpoint, "Meter is inactive")))
            if mode == "400":
                entry["status"] = 400
                return self.send_error_envelope(bad_request(st.failures.message(endpoint, "No active keg at this tap")))

            try:
                with data.lock:
                    if handler is None:
                        raise HtmlError(404, "Not Found")
                    if handler == "gone":
                        raise ApiError(410, "GoneError", "This endpoint has been removed.")
                    if handler == "method":
                        raise HtmlError(405, "Method Not Allowed")
                    if data.setup_required:
                        raise bad_request(data.setup_required)
                    if needs_key or data.privacy != "public" and endpoint not in ("version", "login", "get-api-key", "devices"):
                        self.check_key(query, form)
                    result = handler(form)
                    entry["result"] = result
            except ApiError as e:
                entry["status"] = e.status
                entry["error"] = {"code": e.code, "message": e.message}
                return self.send_error_envelope(e, slow=slow)
            except HtmlError as e:
                entry["status"] = e.status
                return self.send_html(e.status, e.title if e.status != 500 else "Server Error (500)")
            if mode in ("lost", "lost-reset"):
                # Committed; the answer never leaves: the connection is closed, or reset (RST).
                entry["status"] = mode
                if mode == "lost-reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                raise ConnectionDrop()
            entry["status"] = 200
            if isinstance(result, tuple) and result[0] == "html500":
                entry["status"] = 500
                return self.send_html(500, "Server Error (500)")
            self.send_json(200, dict(result, meta={"result": "ok"}), slow=slow)

        def check_key(self, query, form):
            key = self.headers.get("X-Kegbot-Api-Key")
            if key is None:
                key = form.get("api_key")
            if key is None:
                key = query.get("api_key")
            if not key:
                raise ApiError(401, "NoAuthTokenError", 'The parameter "api_key" is required')
            if data.insecure_key and key == data.insecure_key:
                return
            k = data.api_keys.get(key)
            if not k:
                raise ApiError(401, "BadApiKeyError", "API key does not exist")
            user = data.users.get(k["user"]) if k["user"] else None
            if not k["active"] or (user is not None and not user["is_active"]):
                raise ApiError(401, "BadApiKeyError", "Key and/or user is inactive")
            if user is not None and not user["staff"]:
                raise ApiError(401, "PermissionDeniedError", "User is not staff/superuser")

        def resolve(self, method, parts):
            """-> (endpoint name, handler(form) or None/'gone'/'method', key required)"""
            if not parts:
                return None, None, False
            head = parts[0]
            v20 = data.profile == "2.0"
            n = len(parts)
            if head == "status" and n == 1:
                if method != "GET":
                    return "status", "method", True
                return "status", lambda f: {"object": data.status_obj()}, True
            if head == "taps":
                if n == 1:
                    if method == "GET":
                        taps = sorted(data.taps.values(), key=lambda t: t["name"])
                        return "taps", lambda f: {"objects": [data.tap_obj(t, True) for t in taps]}, False
                    return "taps", "method", True
                if n == 2:
                    x = urllib.parse.unquote(parts[1])
                    if method == "GET":
                        return "tap", lambda f: {"object": data.tap_obj(data.resolve_tap(x), True)}, False
                    if method == "POST":
                        def post(f):
                            d = data.record_drink(data.resolve_tap(x), f)
                            return {"object": data.drink_obj(d, True)}
                        return "drink", post, True
                    return "tap", "method", True
                if n == 3 and parts[2] == "calibrate":
                    x = urllib.parse.unquote(parts[1])
                    if v20:
                        return "calibrate", "gone", False
                    if method != "POST":
                        return "calibrate", "method", True

                    def calibrate(f):
                        return {"object": data.tap_obj(data.calibrate_tap(data.resolve_tap(x), f), True)}
                    return "calibrate", calibrate, True
                return None, None, False
            if head == "thermo-sensors" and n == 2:
                name = urllib.parse.unquote(parts[1])
                if method == "POST":
                    return "thermo", lambda f: {"object": data.thermo_obj(data.record_thermo(name, f))}, False
                if v20:
                    return "thermo", "gone", False
                return "thermo", lambda f: ("html500",), False
            if head == "auth-tokens" and n == 3:
                if method != "GET":
                    return "auth", "method", True
                dev, val = urllib.parse.unquote(parts[1]), urllib.parse.unquote(parts[2])

                def lookup(f):
                    for t in data.tokens:
                        if t["auth_device"] == dev and t["token_value"] == val:
                            return {"object": data.token_obj(t)}
                    raise not_found("No AuthenticationToken matches the given query.")
                return "auth", lookup, True
            if head == "controllers" and n == 1:
                if method == "POST":
                    return "controllers", lambda f: {"object": data.controller_obj(data.create_controller(f))}, True
                return "controllers", lambda f: {"objects": [data.controller_obj(c) for c in data.controllers.values()]}, True
            if head == "flow-meters" and n == 1:
                if method == "POST":
                    return "flow-meters", lambda f: {"object": data.meter_obj(data.create_flow_meter(f))}, True
                return "flow-meters", lambda f: {"objects": [data.meter_obj(m) for m in data.meters.values()]}, True
            if head == "cancel-drink" and n == 1:
                def cancel(f):
                    if method != "POST":
                        raise bad_request("POST required")
                    did = f.get("id") or ""
                    d = next((d for d in data.drinks if re.fullmatch(r"\d+", did) and d["id"] == int(did)), None)
                    if not d:
                        if v20:
                            raise not_found("The requested object could not be found.")
                        raise server_error("Drink matching query does not exist.")
                    data.drinks.remove(d)
                    if v20:
                        return {"object": data.drink_obj(d, False)}
                    return ("html500",)
                return "cancel-drink", cancel, True
            if head == "events" and n == 1 and method == "GET":
                return "events", lambda f: {"objects": [data.event_obj(e) for e in data.events[::-1][:100]]}, False
            if v20:
                if head in RETIRED_ON_20:
                    return head, "gone", False
                return None, None, False
            if head == "drinks" and n == 1 and method == "GET":
                # Kegbot Server 1.x pages this list: the newest 100, newest first.
                return "drinks", lambda f: {"objects": [data.drink_obj(d, True) for d in data.drinks[::-1][:100]]}, False
            if head == "sound-events" and n == 1 and method == "GET":
                return "sound-events", lambda f: {"objects": []}, False
            if head == "version" and n == 1 and method == "GET":
                return "version", lambda f: {"object": {"server_version": "1.3.0"}}, False
            if head == "flow-toggles" and n == 1 and method == "GET":
                return "flow-toggles", lambda f: {"objects": [data.toggle_obj(t) for t in data.toggles.values()]}, True
            return None, None, False

    return Handler


def make_control_handler(st):
    data = st.data

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def reply(self, obj, status=200):
            body = (json.dumps(obj, default=str) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            p = self.path.rstrip("/")
            if p.startswith("/_control/event/"):
                try:
                    return self.reply(st.event.control_get(p[len("/_control/event/"):]))
                except KeyError:
                    return self.reply({"error": "unknown"}, 404)
            if p == "/_control/requests":
                with st.log_lock:
                    out = [{k: v for k, v in e.items() if k != "result"} for e in st.log]
                return self.reply(out)
            with data.lock:
                if p == "/_control/drinks":
                    return self.reply([dict(data.drink_obj(d, False), form=d["form"], tap_id=d["tap_id"],
                                            received=iso(d["received"])) for d in data.drinks])
                if p == "/_control/thermo":
                    return self.reply([dict(data.thermo_obj(l), sensor_name=l["sensor_name"], posts=l["posts"])
                                       for l in data.thermo])
                if p == "/_control/state":
                    return self.reply({"controllers": [data.controller_obj(c) for c in data.controllers.values()],
                                       "meters": [data.meter_obj(m) for m in data.meters.values()],
                                       "taps": [data.tap_obj(t, False) for t in data.taps.values()],
                                       "tokens": [data.token_obj(t) for t in data.tokens],
                                       "n_drinks": len(data.drinks), "api_port": st.api_port,
                                       "listening": st.api_server is not None})
            self.reply({"error": "unknown"}, 404)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return self.reply({"error": "bad json"}, 400)
            p = self.path.rstrip("/")
            if p.startswith("/_control/event/"):
                try:
                    return self.reply(dict({"ok": True}, **st.event.control_post(p[len("/_control/event/"):], body)))
                except (KeyError, ValueError, TypeError) as e:
                    return self.reply({"error": "%s: %s" % (type(e).__name__, e)}, 400)
            try:
                if p == "/_control/clear-log":
                    with st.log_lock:
                        st.log.clear()
                elif p == "/_control/fail":
                    st.failures.set(body.get("endpoint", "*"), body["mode"], body.get("count"), body.get("delay"),
                                    body.get("match"), body.get("message"))
                elif p == "/_control/clear-failures":
                    st.failures.clear()
                elif p == "/_control/refuse":
                    st.stop_api()
                elif p == "/_control/accept":
                    st.start_api()
                elif p == "/_control/seed":
                    data.seed(body)
                elif p == "/_control/remove-tap":
                    with data.lock:
                        for tid, t in list(data.taps.items()):
                            if t["meter_id"] and data.meter_name(data.meters[t["meter_id"]]) == body["meter"]:
                                del data.taps[tid]
                elif p == "/_control/set-meter":
                    with data.lock:
                        for m in data.meters.values():
                            if data.meter_name(m) == body["meter"]:
                                m["ticks_per_ml"] = float(body["ticks_per_ml"])
                elif p == "/_control/remove-keg":
                    with data.lock:
                        for t in data.taps.values():
                            if t["meter_id"] and data.meter_name(data.meters[t["meter_id"]]) == body["meter"]:
                                t["keg_id"] = None
                elif p == "/_control/set":
                    with data.lock:
                        for k in ("privacy", "profile", "setup_required", "debug", "insecure_key"):
                            if k in body:
                                setattr(data, k, body[k])
                elif p == "/_control/remove-user":
                    with data.lock:
                        data.users.pop(body["username"], None)
                elif p == "/_control/revoke-key":
                    with data.lock:
                        data.api_keys[body["key"]]["active"] = False
                elif p == "/_control/add-key":
                    with data.lock:
                        data.api_keys[body["key"]] = {"active": True, "user": body.get("user", "admin")}
                        data.users.setdefault(body.get("user", "admin"), {"is_active": True, "staff": True})
                else:
                    return self.reply({"error": "unknown"}, 404)
            except (KeyError, ValueError, TypeError) as e:
                return self.reply({"error": "%s: %s" % (type(e).__name__, e), "trace": traceback.format_exc()}, 400)
            self.reply({"ok": True, "api_port": st.api_port})

    return Handler


DEFAULT_SEED = {
    "users": [{"username": "admin", "staff": True}, "alice", "bob"],
    "controllers": [{"name": "kegboard", "model_name": "unknown", "serial_number": "unknown"}],
    "taps": [
        {"name": "Main Tap", "meter": "kegboard.flow0", "ticks_per_ml": 2.2, "relay": "kegboard.relay0"},
        {"name": "Second Tap", "meter": "kegboard.flow1", "ticks_per_ml": 2.2, "relay": "kegboard.relay1"},
    ],
    "tokens": [
        {"auth_device": "core.rfid", "token_value": "deadbeef", "username": "alice"},
        {"auth_device": "core.onewire", "token_value": "0000111122223333", "username": "bob"},
        {"auth_device": "core.rfid", "token_value": "f00d", "nice_name": "Guest Key"},
        {"auth_device": "core.rfid", "token_value": "d15ab1ed", "username": "alice", "enabled": False},
        {"auth_device": "core.rfid", "token_value": "0ld", "username": "alice",
         "expire_time": "2020-01-01T00:00:00+00:00"},
    ],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--profile", choices=["1.3", "2.0"], default="1.3")
    ap.add_argument("--api-key", default="0123456789abcdef0123456789abcdef")
    ap.add_argument("--privacy", choices=["public", "members", "staff"], default="public")
    ap.add_argument("--seed", help="JSON file with extra seed data")
    ap.add_argument("--no-default-seed", action="store_true")
    args = ap.parse_args()

    st = StandIn(args)
    if not args.no_default_seed:
        st.data.seed(DEFAULT_SEED)
    if args.seed:
        with open(args.seed) as f:
            st.data.seed(json.load(f))
    st.start_api()
    ctl = ThreadingHTTPServer(("127.0.0.1", args.control_port), make_control_handler(st))
    ctl.daemon_threads = True
    sys.stdout.write("PORT %d CONTROL %d\n" % (st.api_port, ctl.server_address[1]))
    sys.stdout.flush()
    try:
        ctl.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
