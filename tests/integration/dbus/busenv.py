"""A private system-like D-Bus for the kegbot_core D-Bus tests.

PrivateBus starts dbus-daemon with system-test.conf (type system, EXTERNAL auth, Debian's default
deny-own / deny-method-call policy) on a socket in a temporary directory and includes the project's
dbus/org.kegbot.Core1.conf. Programs started with bus.env() talk to it as their system bus
(DBUS_SYSTEM_BUS_ADDRESS). busctl() and dbus_call() run as root, as nobody, as nobody with the
operator group, or as nobody with the service's group, so the policy itself is what the tests check.

The operator group `kegbot-admin`: the policy grants the methods to it (and not to the service's
group `kegbot`, which may read the API key). If this machine has the group the policy is used
unchanged. Otherwise (a development box or CI container) the tests do NOT create it - a test should
not edit /etc/group - but include a generated copy of the policy in which group="kegbot-admin" is
replaced by an existing group that nobody does not belong to (`users` when it exists). Either way,
OPERATOR_GID is that group, and as_="operator" runs as uid/gid 65534 with it as the only
supplementary group: dbus-daemon reads a peer's groups from the socket (SO_PEERGROUPS), so
membership needs no /etc/group entry. as_="service-group" does the same with group kegbot (or, when
it does not exist, another group that is not the operators'): it must get no more than nobody.
"""
import grp
import json
import os
import pwd
import re
import signal
import subprocess
import unittest

import kbtest

HERE = os.path.dirname(os.path.abspath(__file__))
POLICY = os.path.join(kbtest.SOURCE_DIR, "dbus", "org.kegbot.Core1.conf")
CONTRACT = os.path.join(kbtest.SOURCE_DIR, "dbus", "org.kegbot.Core1.xml")
TEMPLATE = os.path.join(HERE, "system-test.conf")

NAME = "org.kegbot.Core1"
ROOT = "/org/kegbot/Core1"
SENTINEL_PATH = "/org/kegbot/Core1/monitor_sentinel"
IFACE = "org.kegbot.Core1"
NOBODY = 65534


def _candidate_groups():
    """Existing groups nobody does not belong to, `users` first."""
    try:
        nobody = pwd.getpwuid(NOBODY).pw_name
    except KeyError:
        nobody = "nobody"
    candidates = []
    try:
        candidates.append(grp.getgrnam("users"))
    except KeyError:
        pass
    candidates += sorted(grp.getgrall(), key=lambda g: g.gr_gid)
    return [g for g in candidates if g.gr_gid not in (0, NOBODY) and nobody not in g.gr_mem]


def _pick_group(name, avoid=()):
    """(name, gid) of the group that stands for `name` in the test policy."""
    try:
        g = grp.getgrnam(name)
        return g.gr_name, g.gr_gid
    except KeyError:
        pass
    for g in _candidate_groups():
        if g.gr_name not in avoid and g.gr_gid not in avoid:
            return g.gr_name, g.gr_gid
    raise RuntimeError("no usable group standing for %s in the policy" % name)


OPERATOR_GROUP, OPERATOR_GID = _pick_group("kegbot-admin", avoid=("kegbot",))
SERVICE_GROUP, SERVICE_GID = _pick_group("kegbot", avoid=(OPERATOR_GROUP, OPERATOR_GID))


def path_encode(prefix, name):
    """sd_bus_path_encode(): every byte outside [A-Za-z0-9] becomes _xx (lowercase hex)."""
    if not name:
        return prefix + "/_"
    out = []
    for i, b in enumerate(name.encode()):
        c = chr(b)
        if (c.isascii() and c.isalpha()) or (c.isdigit() and i > 0):
            out.append(c)
        else:
            out.append("_%02x" % b)
    return prefix + "/" + "".join(out)


class PrivateBus:
    def __init__(self, tmpdir, start=True):
        if os.geteuid() != 0:
            # The policy under test lets only root and the kegbot user own the name and call
            # methods, and the clients switch to nobody with setpriv.
            raise unittest.SkipTest("needs root (the bus policy under test is for root and user kegbot)")
        self.dir = os.path.join(tmpdir, "bus")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(tmpdir, 0o755)     # nobody must reach the socket
        self.socket = os.path.join(self.dir, "system_bus_socket")
        self.address = "unix:path=" + self.socket
        self.policy = self._policy()
        self.config = os.path.join(self.dir, "system.conf")
        with open(TEMPLATE) as f:
            conf = f.read()
        conf = conf.replace("@SOCKET@", self.socket).replace("@POLICY@", self.policy)
        with open(self.config, "w") as f:
            f.write(conf)
        self.proc = None
        if start:
            self.start()

    def _policy(self):
        if OPERATOR_GROUP == "kegbot-admin":
            return POLICY
        with open(POLICY) as f:
            text = f.read()
        text = text.replace('group="kegbot-admin"', 'group="%s"' % OPERATOR_GROUP)
        p = os.path.join(self.dir, "org.kegbot.Core1.conf")
        with open(p, "w") as f:
            f.write(text)
        return p

    def start(self):
        """Start (or restart, on the same socket path) the bus; returns when it accepts connections
        (dbus-daemon prints its address once it listens)."""
        self.proc = kbtest.Proc(["dbus-daemon", "--config-file=" + self.config, "--nofork", "--nopidfile",
                                 "--nosyslog", "--print-address"], name="dbus-daemon")
        self.proc.wait_line(r"^unix:path=" + re.escape(self.socket), key="stdout", timeout=10)

    def kill(self):
        """The bus goes away abruptly (SIGKILL); its socket file stays behind."""
        if self.proc:
            self.proc.p.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def env(self):
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    # ---------------------------------------------------------------- clients

    def _cred_prefix(self, as_):
        if as_ in (None, "root"):
            return []
        if as_ == "nobody":
            return ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
        if as_ in ("operator", "service-group"):
            gid = OPERATOR_GID if as_ == "operator" else SERVICE_GID
            return ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--groups=%d" % gid]
        raise ValueError(as_)

    def busctl(self, *args, as_=None, timeout=20, check=False):
        cmd = self._cred_prefix(as_) + ["busctl", "--system", "--no-pager", "--no-legend"] + [str(a) for a in args]
        env = dict(os.environ)
        env.update(self.env())
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout * kbtest.SLOW)
        if check and r.returncode != 0:
            raise AssertionError("%s failed (%d): %s %s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
        return r

    def call(self, path, iface, method, sig="", *args, as_=None, check=True):
        """A method call; returns the decoded JSON reply's data list (busctl --json=short)."""
        a = ["--json=short", "call", NAME, path, iface, method]
        if sig:
            a += [sig] + list(args)
        r = self.busctl(*a, as_=as_, check=check)
        if r.returncode != 0:
            return r
        return json.loads(r.stdout)["data"] if r.stdout.strip() else []

    def get(self, path, iface, prop, as_=None):
        r = self.busctl("--json=short", "get-property", NAME, path, iface, prop, as_=as_, check=True)
        return json.loads(r.stdout)["data"]

    def get_all(self, path, iface, as_=None):
        """{property: value} via Properties.GetAll."""
        r = self.busctl("--json=short", "call", NAME, path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                        iface, as_=as_, check=True)
        d = json.loads(r.stdout)["data"][0]
        return {k: v["data"] for k, v in d.items()}

    def managed_objects(self, as_=None):
        """{path: {interface: {property: value}}} via ObjectManager.GetManagedObjects."""
        r = self.busctl("--json=short", "call", NAME, ROOT, "org.freedesktop.DBus.ObjectManager",
                        "GetManagedObjects", as_=as_, check=True)
        objs = json.loads(r.stdout)["data"][0]
        return {p: {i: {k: v["data"] for k, v in props.items()} for i, props in ifs.items()}
                for p, ifs in objs.items()}

    def dbus_call(self, path, iface, method, signature="", args=(), as_=None):
        """A method call through python3-dbus in a child process (so it can run as another user);
        returns ("ok", reply list) or (error name, error message)."""
        cmd = self._cred_prefix(as_) + ["/usr/bin/python3", "-c", _CALL_SCRIPT,
                                        json.dumps([NAME, path, iface, method, signature, list(args)])]
        env = dict(os.environ)
        env.update(self.env())
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30 * kbtest.SLOW)
        if r.returncode != 0 or not r.stdout.strip():
            raise AssertionError("dbus call helper failed: %s %s" % (r.stdout, r.stderr))
        out = json.loads(r.stdout)
        return out[0], out[1]

    def name_owner(self):
        r = self.busctl("--json=short", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                        "org.freedesktop.DBus", "NameHasOwner", "s", NAME)
        if r.returncode != 0:
            return False
        return json.loads(r.stdout)["data"][0]

    def peer_pids(self):
        """The process ids of every connection on the bus."""
        r = self.busctl("list", "--json=short", "--unique", check=True)
        return [p["pid"] for p in json.loads(r.stdout)]

    def wait_name(self, timeout=10.0):
        kbtest.wait_until(self.name_owner, timeout=timeout, interval=0.05, what="%s on the bus" % NAME)


_CALL_SCRIPT = r"""
import json, sys
import dbus
name, path, iface, method, sig, args = json.loads(sys.argv[1])
try:
    bus = dbus.SystemBus()
    obj = bus.get_object(name, path, introspect=False)
    reply = obj.get_dbus_method(method, iface)(*args, signature=sig)
    def plain(v):
        if isinstance(v, (list, tuple, dbus.Array, dbus.Struct)):
            return [plain(x) for x in v]
        if isinstance(v, (dict, dbus.Dictionary)):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, dbus.Boolean):
            return bool(v)
        if isinstance(v, (dbus.String, dbus.ObjectPath, dbus.Signature)):
            return str(v)
        if isinstance(v, dbus.Double):
            return float(v)
        if isinstance(v, (int,)):
            return int(v)
        return v
    if reply is None:
        reply = []
    elif not isinstance(reply, tuple):
        reply = [reply]
    print(json.dumps(["ok", plain(list(reply))]))
except dbus.exceptions.DBusException as e:
    print(json.dumps([e.get_dbus_name(), e.get_dbus_message()]))
"""


class Monitor:
    """busctl monitor of everything org.kegbot.Core1 sends, as parsed JSON messages."""

    def __init__(self, bus):
        env = dict(bus.env())
        self.bus = bus
        self.pings = 0
        self.proc = kbtest.Proc(["busctl", "--system", "--json=short", "monitor", NAME], env=env,
                                name="busctl-monitor")
        # busctl prints its banner once BecomeMonitor has returned; then a call addressed to the
        # name (answered by the core or refused by the bus, either way seen) shows it captures.
        self.proc.wait_line(r"Monitoring bus message stream\.", key="stderr", timeout=5)
        bus.busctl("call", NAME, SENTINEL_PATH, "org.freedesktop.DBus.Peer", "Ping")
        kbtest.wait_until(lambda: [m for m in self.messages() if m.get("path") == SENTINEL_PATH], timeout=5,
                          what="the monitor to see a call")

    def sync(self):
        """Everything the core sent before now is on the monitor: the core answers a Ping (sent to
        a path of its own) after whatever it was doing, the bus keeps one sender's messages in
        order, and the answer is seen here."""
        self.pings += 1
        path = "%s/%d" % (SENTINEL_PATH, self.pings)
        self.bus.busctl("call", NAME, path, "org.freedesktop.DBus.Peer", "Ping", check=True)

        def answered():
            msgs = self.messages()
            call = next((m for m in msgs if m.get("type") == "method_call" and m.get("path") == path), None)
            return call is not None and any(m.get("type") == "method_return" and m.get("reply_cookie") == call["cookie"]
                                            and m.get("destination") == call["sender"] for m in msgs)
        kbtest.wait_until(answered, timeout=5, what="the monitor to see the core answer a ping")

    def messages(self):
        # Parsed once each: a long test (the ghost filter's, minutes of pours) polls a long stream.
        lines = self.proc.output("stdout")
        parsed = getattr(self, "_parsed", [])
        for line in lines[getattr(self, "_n_lines", 0):]:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                parsed.append(json.loads(line))
            except ValueError:
                pass
        self._parsed, self._n_lines = parsed, len(lines)
        return list(parsed)

    def signals(self, member=None, path=None):
        return [m for m in self.messages() if m.get("type") == "signal" and
                (member is None or m.get("member") == member) and (path is None or m.get("path") == path)]

    def wait_signal(self, pred, timeout=5.0, what="signal"):
        return kbtest.wait_until(lambda: next((m for m in self.signals() if pred(m)), None), timeout=timeout,
                                 what=what)

    def stop(self):
        self.proc.kill()


def payload(msg):
    """A monitored message's body as a list of plain values."""
    return msg.get("payload", {}).get("data", [])


# ---------------------------------------------------------------- the core on the private bus

TAPS_INI = """
[kegboard.flow0]
name = Main Tap
ticks_per_ml = 2.2
relay_name = kegboard.relay0
# Anonymous test pours run with the valve closed: the ghost filter's valve-closed gate (G1) would
# make them ghost (ghost-pours.md section 6.1). The tests of G1 set up their own taps.
valve_closed_gate = false

[kegboard.flow1]
name = Guest Tap
ml_per_tick = 0.5
"""

TOKENS_INI = """
[core.onewire:aaaa000000000001]
username = alice

[core.rfid:0415ab23cd]
username = dave
"""


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


class Core(kbtest.Proc):
    """kegbot_core in standalone mode serving org.kegbot.Core1 on the private bus."""

    def __init__(self, tmp, bus, *flags, port=None, taps=TAPS_INI, tokens=None, wait=True, wait_name=True,
                 address=None, prefix=None, env=None):
        self.tmp = tmp
        self.port = port or kbtest.free_port()
        self.state_dir = os.path.join(tmp, "state")
        taps_path = write_file(os.path.join(tmp, "taps.ini"), taps) if taps is not None else \
            os.path.join(tmp, "no-taps.ini")
        args = list(prefix or []) + [kbtest.binary("kegbot_core"),
                "--kb_core_bind_addr=127.0.0.1:%d" % self.port,
                "--state_dir=" + self.state_dir,
                "--taps_file=" + taps_path,
                "--dbus=system"]
        if tokens is not None:
            args.append("--tokens_file=" + write_file(os.path.join(tmp, "tokens.ini"), tokens))
        args += list(flags)
        full_env = {"KEGBOT_API_URL": "", "STATE_DIRECTORY": "",
                    "DBUS_SYSTEM_BUS_ADDRESS": address or bus.address}
        full_env.update(env or {})
        super().__init__(args, env=full_env, name="kegbot_core")
        if wait:
            self.wait_line(r"\(main\) All services started\.", timeout=10)
        if wait_name:
            bus.wait_name()

    def connect(self):
        return kbtest.KegnetConn.connect(self.port)

    def drinks(self):
        try:
            with open(os.path.join(self.state_dir, "drinks.log")) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []
