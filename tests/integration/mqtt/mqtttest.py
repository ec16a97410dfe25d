"""Helpers for the kegbot_mqtt tests (mqtt-home-assistant.md section 14.1).

* Broker: Debian's mosquitto in the foreground on a free loopback port, with a config this module
  writes (authentication on, anonymous off, persistence off, optional TLS with a CA made here with
  openssl). A restart is SIGTERM and a new process on the same port.
* Client: a small MQTT 5 client (enough of the protocol for tests): subscribes with
  retain-as-published, so the retain flag of live messages is seen, stamps every message on
  arrival, and sync() proves the broker delivered everything published before it.
* Bridge: kegbot_mqtt with the broker's credentials, on a private bus, with a notify socket.
* StubCore: org.kegbot.Core1 in python3-dbus (stubcore.py), driven by the test, for what the real
  core cannot produce on demand (silent sensors, ghost flows, quarantine, event-backend boards,
  duplicate DrinkRecorded).
* check_config(): validates a discovery config against sections 7.2 to 7.4.
"""
import json
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import kbtest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "dbus"))
import busenv  # noqa: E402

SIM_SENSOR = "kegboard.thermo-6b0316621d4cff28"
USER = "kegbot"
PASSWORD = "brew-s3cret"
PREFIX = "homeassistant"
STATUS = "status"


def need_tools():
    import unittest
    for t in ("mosquitto", "mosquitto_passwd", "mosquitto_pub", "openssl"):
        if not any(os.access(os.path.join(d, t), os.X_OK) for d in os.environ.get("PATH", "").split(":") +
                   ["/usr/sbin", "/usr/bin"]):
            raise unittest.SkipTest("%s is not installed (scripts/setup-deps.sh installs it)" % t)


def _which(name):
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/usr/bin", "/sbin"]:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    raise AssertionError("%s not found" % name)


# ---------------------------------------------------------------- TLS material

class TestCA:
    """A CA, a server certificate (for 127.0.0.1 and localhost unless server_san says otherwise)
    and a client certificate, made with openssl in 'dirname'."""

    def __init__(self, dirname, name="ca", server_san="IP:127.0.0.1,DNS:localhost"):
        self.dir = dirname
        os.makedirs(dirname, exist_ok=True)
        p = lambda f: os.path.join(dirname, f)  # noqa: E731
        self.ca, self.ca_key = p(name + ".crt"), p(name + ".key")
        self.server, self.server_key = p("server.crt"), p("server.key")
        self.client, self.client_key = p("client.crt"), p("client.key")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._openssl(["req", "-x509"] + ec + ["-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                       "-subj", "/CN=Kegbot Test CA " + name,
                       "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        for crt, key, cn, ext in ((self.server, self.server_key, "127.0.0.1",
                                   "subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % server_san),
                                  (self.client, self.client_key, "kegbot-mqtt",
                                   "extendedKeyUsage=clientAuth\n")):
            csr = crt + ".csr"
            extfile = crt + ".ext"
            with open(extfile, "w") as f:
                f.write(ext)
            self._openssl(["req"] + ec + ["-keyout", key, "-out", csr, "-subj", "/CN=" + cn])
            self._openssl(["x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                           "-out", crt, "-days", "2", "-extfile", extfile])
        for f in os.listdir(dirname):
            os.chmod(os.path.join(dirname, f), 0o644)

    @staticmethod
    def _openssl(args):
        r = subprocess.run(["openssl"] + args, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError("openssl %s failed: %s" % (" ".join(args), r.stderr))


# ---------------------------------------------------------------- broker

class Broker:
    """mosquitto on 127.0.0.1:<port> with password authentication."""

    def __init__(self, tmp, name="broker", tls=None, require_certificate=False, start=True):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.tls = tls
        self.require_certificate = require_certificate
        self.port = kbtest.free_port()
        self.passwd = os.path.join(self.dir, "passwd")
        r = subprocess.run([_which("mosquitto_passwd"), "-b", "-c", self.passwd, USER, PASSWORD],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError("mosquitto_passwd failed: " + r.stderr)
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self.proc = None
        self.procs = []
        if start:
            self.start()

    def _write_conf(self):
        lines = ["listener %d 127.0.0.1" % self.port,
                 "persistence false",
                 "allow_anonymous false",
                 "password_file " + self.passwd,
                 # stderr: mosquitto's stdout is block-buffered in a pipe, the test reads the log live.
                 "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 "log_type subscribe",
                 "connection_messages true",
                 "user root"]
        if self.tls:
            lines += ["cafile " + self.tls.ca, "certfile " + self.tls.server, "keyfile " + self.tls.server_key,
                      "tls_version tlsv1.2"]
            if self.require_certificate:
                lines.append("require_certificate true")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, attempts=5):
        """Start on self.port (a new port if another process took it before the first start)."""
        for attempt in range(attempts):
            self._write_conf()
            self.proc = kbtest.Proc([_which("mosquitto"), "-c", self.conf], name="mosquitto")
            self.procs.append(self.proc)
            deadline = time.monotonic() + 10 * kbtest.SLOW
            while time.monotonic() < deadline:
                if not self.proc.alive():
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.02)
            out = "\n".join(self.proc.output())
            self.proc.kill()
            if "Address already in use" in out and len(self.procs) == 1:
                self.port = kbtest.free_port()
                self.procs = []
                continue
            raise AssertionError("mosquitto did not start:\n" + out)
        raise AssertionError("mosquitto did not start after %d attempts" % attempts)

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def log(self):
        """Every line of every mosquitto process this broker ran, oldest first."""
        out = []
        for p in self.procs:
            out += p.output()
        return out

    def wait_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        return kbtest.wait_until(lambda: next((l for l in self.log() if rx.search(l)), None), timeout=timeout,
                                 what="mosquitto log line %r" % pattern)

    def client(self, **kw):
        return Client(self, **kw)


# ---------------------------------------------------------------- a small MQTT 5 client

def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


class Message:
    __slots__ = ("time", "topic", "payload", "retain", "qos")

    def __init__(self, t, topic, payload, retain, qos):
        self.time, self.topic, self.payload, self.retain, self.qos = t, topic, payload, retain, qos

    @property
    def text(self):
        return self.payload.decode("utf-8")

    def json(self):
        return json.loads(self.payload)

    def __repr__(self):
        return "<%.3f %s r%d q%d %r>" % (self.time, self.topic, self.retain, self.qos, self.payload[:80])


class Client:
    """MQTT 5 over TCP (or TLS): CONNECT with the broker's credentials, SUBSCRIBE with
    retain-as-published, PUBLISH QoS 0/1, messages collected in order with their arrival time."""

    _n = 0

    def __init__(self, broker, client_id=None, username=USER, password=PASSWORD, subscribe=(), tls=None,
                 certfile=None, keyfile=None):
        Client._n += 1
        self.client_id = client_id or "test-observer-%d-%d" % (os.getpid(), Client._n)
        self.messages = []
        self.cv = threading.Condition()
        self.closed = False
        self._pid = 0
        self._acks = {}
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
        if tls:
            ctx = ssl.create_default_context(cafile=tls.ca)
            if certfile:
                ctx.load_cert_chain(certfile, keyfile)
            sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.setblocking(False)
        self.sock = sock
        self._io = threading.Lock()
        flags = 0x02
        payload = _str(self.client_id)
        if username is not None:
            flags |= 0x80
            payload += _str(username)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
        var = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", 0) + _varint(0)
        self._send(0x10, var + payload)
        kind, body = self._read_packet()
        if kind >> 4 != 2 or body[1] != 0:
            raise AssertionError("broker refused the test client: %r" % body)
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        if subscribe:
            self.subscribe(*subscribe)

    # One lock around every use of the socket: an SSL connection must not be read and written by
    # two threads at once. The socket is non-blocking; waiting happens in select(), outside the lock.
    def _send(self, first, body):
        data = bytes([first]) + _varint(len(body)) + body
        while data:
            with self._io:
                try:
                    n = self.sock.send(data)
                    data = data[n:]
                    continue
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            select.select([], [self.sock], [], 0.1)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            with self._io:
                try:
                    chunk = self.sock.recv(n - len(buf))
                    if not chunk:
                        raise EOFError
                    buf += chunk
                    continue
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
            select.select([self.sock], [], [], 0.1)
        return buf

    def _read_packet(self):
        first = self._recv_exact(1)[0]
        mult, length = 1, 0
        while True:
            b = self._recv_exact(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first, self._recv_exact(length) if length else b""

    def _loop(self):
        try:
            while True:
                first, body = self._read_packet()
                kind = first >> 4
                if kind == 3:
                    self._on_publish(first, body)
                elif kind in (4, 9):       # PUBACK, SUBACK
                    pid = struct.unpack("!H", body[:2])[0]
                    with self.cv:
                        self._acks[pid] = body
                        self.cv.notify_all()
        except (EOFError, OSError, ValueError):
            pass
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    def _on_publish(self, first, body):
        now = time.monotonic()
        qos = (first >> 1) & 3
        retain = first & 1
        tlen = struct.unpack("!H", body[:2])[0]
        topic = body[2:2 + tlen].decode("utf-8")
        pos = 2 + tlen
        if qos:
            pid = body[pos:pos + 2]
            pos += 2
        # properties
        mult, plen = 1, 0
        while True:
            b = body[pos]
            pos += 1
            plen += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        pos += plen
        payload = body[pos:]
        if qos == 1:
            self._send(0x40, pid)
        with self.cv:
            self.messages.append(Message(now, topic, payload, retain, qos))
            self.cv.notify_all()

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _wait_ack(self, pid, timeout=10.0):
        with self.cv:
            if not self.cv.wait_for(lambda: pid in self._acks or self.closed, timeout * kbtest.SLOW) or \
                    pid not in self._acks:
                raise AssertionError("no ack for packet %d" % pid)
            return self._acks.pop(pid)

    def subscribe(self, *topics):
        pid = self._next_pid()
        body = struct.pack("!H", pid) + _varint(0)
        for t in topics:
            body += _str(t) + bytes([0x01 | 0x08])      # QoS 1, retain as published
        self._send(0x82, body)
        ack = self._wait_ack(pid)
        if any(c >= 0x80 for c in ack[3:]):
            raise AssertionError("subscription refused: %r" % ack)

    def publish(self, topic, payload, retain=False, qos=1):
        if isinstance(payload, str):
            payload = payload.encode()
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        body = _str(topic)
        pid = None
        if qos:
            pid = self._next_pid()
            body += struct.pack("!H", pid)
        body += _varint(0) + payload
        self._send(first, body)
        if pid:
            self._wait_ack(pid)

    def sync(self):
        """Every message the broker routed to this client before now has arrived: a message to a
        topic of its own comes back after them."""
        topic = "test-sync/%s" % self.client_id
        token = "%d-%f" % (self._next_pid(), time.monotonic())
        self.subscribe(topic)
        self.publish(topic, token)
        self.wait(lambda m: m.topic == topic and m.payload == token.encode(), what="sync message")

    def wait(self, pred, timeout=10.0, what="message", start=0):
        with self.cv:
            ok = self.cv.wait_for(lambda: any(pred(m) for m in self.messages[start:]), timeout * kbtest.SLOW)
            if not ok:
                raise AssertionError("timed out waiting for %s; last messages: %s" % (what, self.messages[-15:]))
            return next(m for m in self.messages[start:] if pred(m))

    def topic(self, topic, start=0):
        with self.cv:
            return [m for m in self.messages[start:] if m.topic == topic]

    def all(self, start=0):
        with self.cv:
            return [m for m in self.messages[start:] if not m.topic.startswith("test-sync/")]

    def mark(self):
        with self.cv:
            return len(self.messages)

    def close(self):
        if self.closed:
            return
        try:
            self._send(0xE0, b"\x00")
        except OSError:
            pass
        with self._io:
            try:
                self.sock.close()
            except OSError:
                pass


def retained(broker, topics=("kegbot/#", PREFIX + "/#"), **kw):
    """{topic: Message} the broker holds retained for these filters (empty payloads excluded)."""
    c = Client(broker, **kw)
    try:
        c.subscribe(*topics)
        c.sync()
        out = {}
        for m in c.all():
            if m.retain and m.payload:
                out[m.topic] = m
        return out
    finally:
        c.close()


def observer(broker, extra=(), **kw):
    return Client(broker, subscribe=("kegbot/#", PREFIX + "/#") + tuple(extra), **kw)


# ---------------------------------------------------------------- kegbot_mqtt

class Bridge(kbtest.Proc):
    """kegbot_mqtt talking to 'broker' and to the core on 'bus' (a busenv.PrivateBus or an address)."""

    def __init__(self, tmp, broker, bus, *flags, node_id="kegbot_test0001", name="kegbot_mqtt", state_dir=None,
                 password=PASSWORD, wait_ready=True, env=None, verbose=True, host="127.0.0.1", port=None):
        self.tmp = tmp
        self.node_id = node_id
        self.state_dir = state_dir or os.path.join(tmp, name + "-state")
        self.notify = kbtest.NotifySocket(tmp, name + "-notify-%d" % time.monotonic_ns())
        args = [kbtest.binary("kegbot_mqtt"), "--mqtt_host=" + host,
                "--mqtt_port=%d" % (port or broker.port), "--state_dir=" + self.state_dir]
        if node_id:
            args.append("--mqtt_node_id=" + node_id)
        if password is not None:
            pw = os.path.join(tmp, name + "-password")
            with open(pw, "w") as f:
                f.write(password + "\n")
            args += ["--mqtt_username=" + USER, "--mqtt_password_file=" + pw]
        if verbose:
            args.append("--verbose")
        args += list(flags)
        address = bus if isinstance(bus, str) else bus.address
        full_env = {"DBUS_SYSTEM_BUS_ADDRESS": address, "STATE_DIRECTORY": "", "KEGBOT_API_URL": "",
                    "KEGBOT_API_KEY": ""}
        full_env.update(self.notify.env())
        full_env.update(env or {})
        super().__init__(args, env=full_env, name=name)
        if wait_ready:
            self.notify.wait("READY", "1", timeout=15)

    @property
    def base(self):
        return "kegbot/" + self.node_id

    def stop(self, timeout=10.0):
        try:
            return super().stop(timeout)
        finally:
            self.notify.close()

    def log_times(self, pattern):
        """Monotonic arrival times of log lines matching pattern (stderr, as they came)."""
        rx = re.compile(pattern)
        return [l for l in self.output("stderr") if rx.search(l)]


def log_stamp(line):
    """Seconds of the pycore log line's timestamp ("2026-11-26 12:00:00,123 ...")."""
    m = re.match(r"^\d{4}-\d\d-\d\d (\d\d):(\d\d):(\d\d)[,.](\d{3})", line)
    if not m:
        raise AssertionError("no timestamp in %r" % line)
    h, mi, s, ms = (int(x) for x in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000.0


# ---------------------------------------------------------------- the stub core

class StubCore(kbtest.Proc):
    """stubcore.py on the bus: org.kegbot.Core1 as the test scripts it. cmd() sends one JSON command
    and waits for its acknowledgement; calls() lists the methods kegbot_mqtt called."""

    def __init__(self, bus, optional=True, mode="standalone", version="9.9.9"):
        self.bus = bus
        self._n = 0
        address = bus if isinstance(bus, str) else bus.address
        super().__init__(["/usr/bin/python3", os.path.join(HERE, "stubcore.py"),
                          json.dumps({"optional": optional, "mode": mode, "version": version})],
                         env={"DBUS_SYSTEM_BUS_ADDRESS": address}, stdin=True, name="stubcore")
        self.wait_line(r"^ready$", key="stdout", timeout=15)

    def cmd(self, **c):
        self._n += 1
        c["seq"] = self._n
        self.write(json.dumps(c) + "\n")
        self.wait_line(r"^ok %d$" % self._n, key="stdout", timeout=15)

    def calls(self):
        return [l.split(" ", 2)[1:] for l in self.output("stdout") if l.startswith("call ")]


# ---------------------------------------------------------------- discovery checker

# suffix -> (component, name, {key: value}) from section 7.4; "T" stands for the group's state topic.
NODE_ENTITIES = {
    "server": ("binary_sensor", "Server", {"state_topic": "T", "device_class": "connectivity",
                                           "entity_category": "diagnostic",
                                           "value_template": "{{ 'ON' if value_json.server == 'online' else 'OFF' }}"}),
    "spool": ("sensor", "Drinks waiting", {"state_topic": "T", "value_template": "{{ value_json.spool }}",
                                           "state_class": "measurement", "entity_category": "diagnostic"}),
    "failed": ("sensor", "Drinks rejected", {"state_topic": "T", "value_template": "{{ value_json.failed }}",
                                             "state_class": "measurement", "entity_category": "diagnostic"}),
    "mqtt_dropped": ("sensor", "MQTT events dropped", {"state_topic": "T",
                                                       "value_template": "{{ value_json.mqtt_events_dropped }}",
                                                       "state_class": "total_increasing",
                                                       "entity_category": "diagnostic"}),
}
BOARD_ENTITIES = {
    "connected": ("binary_sensor", "Connected", {"state_topic": "T", "device_class": "connectivity",
                                                 "entity_category": "diagnostic",
                                                 "value_template": "{{ 'ON' if value_json.connected else 'OFF' }}"}),
    "link": ("sensor", "Server link", {"state_topic": "T", "value_template": "{{ value_json.event_state }}",
                                       "entity_category": "diagnostic"}),
}
TAP_ENTITIES = {
    "served": ("sensor", "Served", {"state_topic": "T", "value_template": "{{ value_json.served_total_ml }}",
                                    "device_class": "volume", "state_class": "total_increasing",
                                    "unit_of_measurement": "mL"}),
    "last_pour": ("sensor", "Last pour", {"state_topic": "T", "value_template": "{{ value_json.last_pour_ml }}",
                                          "device_class": "volume", "unit_of_measurement": "mL"}),
    "flow_rate": ("sensor", "Flow rate", {"state_topic": "T", "value_template": "{{ value_json.flow_rate_l_min }}",
                                          "device_class": "volume_flow_rate", "state_class": "measurement",
                                          "unit_of_measurement": "L/min"}),
    "pouring": ("binary_sensor", "Pouring", {"state_topic": "T", "device_class": "running",
                                             "value_template": "{{ 'ON' if value_json.pouring else 'OFF' }}"}),
    "valve": ("binary_sensor", "Valve", {"state_topic": "T", "device_class": "opening",
                                         "value_template": "{{ 'ON' if value_json.valve == 'open' else 'OFF' }}"}),
    "events": ("event", "Pour", {"state_topic": "T/event", "event_types": None}),
    "keg_remaining": ("sensor", "Keg remaining", {"state_topic": "T",
                                                  "value_template": "{{ value_json.keg_remaining_ml }}",
                                                  "device_class": "volume_storage", "state_class": "measurement",
                                                  "unit_of_measurement": "mL"}),
    "keg_level": ("sensor", "Keg level", {"state_topic": "T", "value_template": "{{ value_json.keg_percent }}",
                                          "state_class": "measurement", "unit_of_measurement": "%"}),
    "beverage": ("sensor", "Beverage", {"state_topic": "T", "value_template": "{{ value_json.beverage }}"}),
    "ml_per_tick": ("sensor", "Calibration", {"state_topic": "T", "value_template": "{{ value_json.ml_per_tick }}",
                                              "unit_of_measurement": "mL/tick", "entity_category": "diagnostic"}),
    "ghost_24h": ("sensor", "Ghost volume 24 h", {"state_topic": "T", "value_template": "{{ value_json.ghost_ml_24h }}",
                                                  "device_class": "volume", "unit_of_measurement": "mL",
                                                  "entity_category": "diagnostic"}),
    "quarantined": ("binary_sensor", "Quarantined", {"state_topic": "T", "device_class": "problem",
                                                     "entity_category": "diagnostic",
                                                     "value_template": "{{ 'ON' if value_json.quarantined else 'OFF' }}"}),
    "stop": ("button", "Stop pour", {"command_topic": "T/cmd", "payload_press": "stop_flow", "retain": False}),
    "clear_quarantine": ("button", "Clear quarantine", {"command_topic": "T/cmd", "payload_press": "clear_quarantine",
                                                        "retain": False, "entity_category": "config"}),
}
SENSOR_ENTITY = ("sensor", None, {"state_topic": "T", "value_template": "{{ value_json.temp_c }}",
                                  "device_class": "temperature", "state_class": "measurement",
                                  "unit_of_measurement": "\u00b0C", "expire_after": 300})
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version", "via_device"}
COMPONENTS = {"sensor", "binary_sensor", "event", "button"}


def key(name):
    """Section 3.2 (written independently of the C code)."""
    return "".join(c if (c.isascii() and (c.isalnum() or c == "-")) else "".join("_%02x" % b for b in c.encode())
                   for c in name)


def entity_spec(node_id, base, unique_id):
    """(group topic, suffix, (component, name, keys)) the unique id stands for."""
    rest = unique_id[len(node_id) + 1:]
    for kind, table in (("board", BOARD_ENTITIES), ("tap", TAP_ENTITIES)):
        if rest.startswith(kind + "_"):
            for suffix in sorted(table, key=len, reverse=True):
                if rest.endswith("_" + suffix):
                    k = rest[len(kind) + 1:-len(suffix) - 1]
                    return "%s/%s/%s" % (base, kind, k), suffix, table[suffix]
    if rest.startswith("sensor_"):
        return "%s/sensor/%s" % (base, rest[len("sensor_"):]), None, SENSOR_ENTITY
    if rest in NODE_ENTITIES:
        return base + "/core", rest, NODE_ENTITIES[rest]
    raise AssertionError("unique id %s matches no entity of section 7.4" % unique_id)


def check_entity(tc, node_id, base, cfg, component, device_mode=False, event_types=None):
    """The keys of one entity (component mode: a whole config; device mode: one cmps entry)."""
    uid = cfg.get("unique_id", "")
    tc.assertTrue(uid.startswith(node_id + "_"), uid)
    group_topic, suffix, (comp, name, keys) = entity_spec(node_id, base, uid)
    tc.assertEqual(component, comp, uid)
    expected = {"name", "unique_id"} | set(keys)
    if not device_mode:
        expected |= {"availability_topic", "qos", "device", "origin"}
    else:
        expected |= {"p"}
    tc.assertEqual(set(cfg), expected, uid)
    if name is not None:
        tc.assertEqual(cfg["name"], name, uid)
    else:
        tc.assertTrue(cfg["name"].startswith("Temperature "), uid)
    for k, v in keys.items():
        if k in ("state_topic", "command_topic"):
            tc.assertEqual(cfg[k], v.replace("T", group_topic, 1), uid)
        elif k == "event_types":
            tc.assertIn("pour", cfg[k])
            tc.assertTrue(set(cfg[k]) <= {"pour", "ghost_flow", "kicked"}, cfg[k])
            if event_types is not None:
                tc.assertEqual(cfg[k], event_types, uid)
        else:
            tc.assertEqual(cfg[k], v, "%s %s" % (uid, k))
    if not device_mode:
        tc.assertEqual(cfg["availability_topic"], base + "/status")
        tc.assertEqual(cfg["qos"], 1)
        check_device(tc, node_id, cfg["device"])
        tc.assertEqual(set(cfg["origin"]), {"name", "sw_version"})
        tc.assertEqual(cfg["origin"]["name"], "kegbot_mqtt")
    return suffix


def check_device(tc, node_id, dev):
    tc.assertTrue(set(dev) <= DEVICE_KEYS, dev)
    tc.assertTrue({"identifiers", "name", "manufacturer", "model"} <= set(dev), dev)
    tc.assertEqual(dev["manufacturer"], "Kegbot")
    tc.assertEqual(len(dev["identifiers"]), 1)
    ident = dev["identifiers"][0]
    tc.assertTrue(ident == node_id or ident.startswith(node_id + "_"), ident)
    if ident != node_id:
        tc.assertEqual(dev["via_device"], node_id)


def check_config(tc, node_id, base, topic, payload, event_types=None):
    """One retained discovery message (component or device mode); returns the unique ids it holds."""
    parts = topic.split("/")
    tc.assertEqual(parts[0], PREFIX, topic)
    tc.assertEqual(parts[-1], "config", topic)
    tc.assertEqual(len(parts), 4, topic)
    cfg = json.loads(payload)
    if parts[1] == "device":
        tc.assertEqual(set(cfg), {"dev", "o", "availability_topic", "qos", "cmps"}, topic)
        check_device(tc, node_id, cfg["dev"])
        tc.assertEqual(parts[2], cfg["dev"]["identifiers"][0])
        tc.assertEqual(cfg["availability_topic"], base + "/status")
        tc.assertEqual(cfg["qos"], 1)
        uids = []
        for cid, comp in cfg["cmps"].items():
            if set(comp) == {"p"}:
                continue        # an entity being removed
            suffix = check_entity(tc, node_id, base, comp, comp["p"], device_mode=True, event_types=event_types)
            tc.assertEqual(cid, suffix if suffix else "temp_" + comp["unique_id"].split("_sensor_", 1)[1])
            uids.append(comp["unique_id"])
        return uids
    tc.assertIn(parts[1], COMPONENTS, topic)
    tc.assertEqual(parts[2], cfg["unique_id"], topic)
    check_entity(tc, node_id, base, cfg, parts[1], event_types=event_types)
    return [cfg["unique_id"]]


TAP_DOC_KEYS = ["name", "meter", "ml_per_tick", "relay", "valve", "pouring", "pour_ml", "flow_rate_l_min", "user",
                "last_pour_ml", "last_pour_time", "last_pour_user", "served_total_ml", "ghost_ml_24h", "quarantined",
                "beverage", "keg_id", "keg_size_ml", "keg_remaining_ml", "keg_percent"]
CORE_DOC_KEYS = ["mode", "server", "spool_state", "spool", "failed", "last_sync", "version", "bridge_version",
                 "mqtt_events_dropped"]
BOARD_DOC_KEYS = ["name", "connected", "serial", "firmware", "device", "last_seen", "backend", "event_state"]
SENSOR_DOC_KEYS = ["name", "temp_c", "time", "silent"]


def doc_keys(topic, base):
    rest = topic[len(base) + 1:]
    if rest == "core":
        return CORE_DOC_KEYS
    kind = rest.split("/")[0]
    return {"tap": TAP_DOC_KEYS, "board": BOARD_DOC_KEYS, "sensor": SENSOR_DOC_KEYS}[kind]


def ordered_keys(payload):
    return [k for k, _ in json.loads(payload, object_pairs_hook=lambda pairs: pairs)]


# ---------------------------------------------------------------- what to expect of a core

def core_members(bus):
    """The optional members of section 4.2 the core on 'bus' has, from its own introspection data
    (the real core gains them with the ghost-pour filter): {"ghost_flow", "pour_flagged",
    "clear_quarantine", "quarantined"} -> bool."""
    import xml.etree.ElementTree as ET
    r = bus.busctl("introspect", "--xml-interface", busenv.NAME, busenv.ROOT, check=True)
    mgr = next(i for i in ET.fromstring(r.stdout).findall("interface") if i.get("name") == busenv.IFACE + ".Manager")

    def sig(kind, name):
        el = next((e for e in mgr.findall(kind) if e.get("name") == name), None)
        if el is None:
            return None
        return "".join(a.get("type") for a in el.findall("arg") if kind == "signal" or a.get("direction", "in") == "in")
    taps = [ifs.get(busenv.IFACE + ".Tap", {}) for p, ifs in bus.managed_objects().items() if "/tap/" in p]
    return {"ghost_flow": sig("signal", "GhostFlow") == "sstdtttss",
            "pour_flagged": sig("signal", "PourFlagged") == "tsss",
            "clear_quarantine": sig("method", "ClearQuarantine") == "s",
            "quarantined": any("Quarantined" in t for t in taps)}


def tap_suffixes(members, relay=True, keg=False, commands=False):
    """The entities of one tap (section 7.4) for a core with 'members' (core_members())."""
    out = ["served", "last_pour", "flow_rate", "pouring"] + (["valve"] if relay else []) + ["events"]
    out += ["keg_remaining", "keg_level", "beverage"] if keg else []
    out += ["ml_per_tick"]
    out += ["ghost_24h"] if members["ghost_flow"] else []
    out += ["quarantined"] if members["quarantined"] else []
    if commands:
        out += ["stop"] + (["clear_quarantine"] if members["clear_quarantine"] and members["quarantined"] else [])
    return out


def event_types(members):
    return ["pour"] + (["ghost_flow"] if members["ghost_flow"] else []) + \
        (["kicked"] if members["pour_flagged"] else [])


def standard_config_count(members, board=True):
    """Configs for the node (standalone), TAPS (one tap with a relay, one without) and, with board,
    the simulated board with its sensor."""
    return 1 + len(tap_suffixes(members, relay=True)) + len(tap_suffixes(members, relay=False)) + (2 if board else 0)


# ---------------------------------------------------------------- the real core

TAPS = busenv.TAPS_INI


def core(tmp, bus, *flags, taps=TAPS, **kw):
    return busenv.Core(tmp, bus, *flags, taps=taps, **kw)


# A board's absolute counters, per core state directory: they keep growing across restarts of the
# core, which resumes every meter from the reading it persisted (core-behaviour.md section 5).
_READINGS = {}


def pour(core_proc, meter, ticks, seconds, steps=None):
    """Ticks through kegnet MeterUpdates, spread over 'seconds'. The readings of a meter keep
    growing from one pour to the next, also across a restart of the core (a lower one would be a
    counter reset to the core); the first one a core with a new state directory sees is its
    baseline."""
    readings = _READINGS.setdefault(core_proc.state_dir, {})
    conn = core_proc.connect()
    steps = steps or max(1, int(seconds * 10))
    reading = readings.get(meter, 1000)
    conn.send("MeterUpdate", meter_name=meter, reading=reading)
    t0 = time.monotonic()
    for i in range(steps):
        reading += ticks // steps + (1 if i < ticks % steps else 0)
        conn.send("MeterUpdate", meter_name=meter, reading=reading)
        delay = t0 + (i + 1) * seconds / steps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    readings[meter] = reading
    return conn


def stop_flow(bus, meter):
    bus.call(busenv.ROOT, busenv.IFACE + ".Manager", "StopFlow", "s", meter)


def flow_ticks(bus, meter):
    return bus.get(busenv.path_encode(busenv.ROOT + "/tap", meter), busenv.IFACE + ".Tap", "FlowTicks")


def drink(core_proc, bus, meter, ticks, seconds=0.2, steps=2):
    """A pour of 'ticks' through kegnet, ended with StopFlow once the core has counted every tick
    (kegnet and D-Bus are different connections: the stop must not overtake the readings)."""
    conn = pour(core_proc, meter, ticks, seconds, steps=steps)
    kbtest.wait_until(lambda: flow_ticks(bus, meter) == ticks, timeout=10, interval=0.02,
                      what="%d ticks on %s" % (ticks, meter))
    stop_flow(bus, meter)
    conn.close()


# ---------------------------------------------------------------- test case base

class MqttCase:
    """Mixin for unittest.TestCase: a temporary directory, a private bus and a broker per test, and
    every process started through it stopped (or killed) at the end."""

    def setUp(self):
        need_tools()
        self._tmpdir = kbtest.TempDir(prefix="kegbot-mqtt-")
        self.tmp = self._tmpdir.__enter__()
        self._procs = []
        self._clients = []
        self.bus = busenv.PrivateBus(self.tmp)
        self.broker = Broker(self.tmp)

    def tearDown(self):
        for c in self._clients:
            c.close()
        for p in reversed(self._procs):
            p.kill()
        for b in [self.broker] + getattr(self, "_brokers", []):
            for p in b.procs:
                p.kill()
        self.bus.stop()
        self._tmpdir.__exit__(None, None, None)

    def track(self, p):
        self._procs.append(p)
        return p

    def observe(self, broker=None, extra=()):
        c = observer(broker or self.broker, extra)
        self._clients.append(c)
        return c

    def core(self, *flags, **kw):
        return self.track(core(self.tmp, self.bus, *flags, **kw))

    def bridge(self, *flags, broker=None, **kw):
        return self.track(Bridge(self.tmp, broker or self.broker, self.bus, *flags, **kw))

    def stub(self, **kw):
        return self.track(StubCore(self.bus, **kw))

    def sim(self, *flags):
        return self.track(kbtest.Sim(self.tmp, "--nobuzzer", *flags))

    def kegboard_daemon(self, core_proc, sim):
        return self.track(kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kegboard_device=" + sim.link,
                                       "--kb_core_addr=%d" % core_proc.port, "--probe_seconds=1"],
                                      name="kegboard_daemon"))

    def start_chain(self):
        """The core, a simulated board with a temperature sensor and its kegboard_daemon, the board
        and sensor known to the core (a pour before that would be the meter's baseline)."""
        core_proc = self.core()
        sim = self.sim("--thermo=%s=4.25" % SIM_SENSOR.split(".", 1)[1])
        self.kegboard_daemon(core_proc, sim)
        kbtest.wait_until(lambda: any("/sensor/" in p for p in self.bus.managed_objects()) and
                          any("/controller/" in p for p in self.bus.managed_objects()), timeout=15,
                          what="the board and its sensor in the core")
        return core_proc, sim

    def wait_online(self, obs, bridge, start=0):
        return obs.wait(lambda m: m.topic == bridge.base + "/status" and m.payload == b"online", start=start,
                        what="status online")
