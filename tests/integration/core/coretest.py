"""Helpers for the kegbot_core integration tests: start a standalone core on a free port with its own
state directory, read its drinks log, and write taps / tokens files."""
import json
import os

import kbtest


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


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


class Core(kbtest.Proc):
    """kegbot_core in standalone mode, listening on 127.0.0.1:<port>."""

    def __init__(self, tmp, *flags, port=None, taps=None, tokens=None, state_dir=None, env=None,
                 wait=True, prefix=None):
        self.tmp = tmp
        self.port = port or kbtest.free_port()
        self.state_dir = state_dir or os.path.join(tmp, "state")
        args = list(prefix or []) + [
            kbtest.binary("kegbot_core"),
            "--kb_core_bind_addr=127.0.0.1:%d" % self.port,
            "--state_dir=" + self.state_dir,
            "--taps_file=" + (taps or os.path.join(tmp, "no-taps.ini")),
            "--dbus=none",
        ]
        if tokens:
            args.append("--tokens_file=" + tokens)
        args += list(flags)
        full_env = {"KEGBOT_API_URL": "", "STATE_DIRECTORY": ""}
        if env:
            full_env.update(env)
        super().__init__(args, env=full_env, name="kegbot_core")
        if wait:
            self.wait_line(r"\(main\) All services started\.", timeout=10)

    @property
    def drinks_path(self):
        return os.path.join(self.state_dir, "drinks.log")

    def drinks(self):
        try:
            with open(self.drinks_path) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def thermo_log(self):
        try:
            with open(os.path.join(self.state_dir, "thermo.log")) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def connect(self):
        return kbtest.KegnetConn.connect(self.port)

    def stderr_lines(self, pattern):
        import re
        rx = re.compile(pattern)
        return [l for l in self.output("stderr") if rx.search(l)]


def flow_updates(msgs, state=None):
    return [m["data"] for m in msgs if m.get("event") == "FlowUpdate"
            and (state is None or m["data"]["state"] == state)]


def events(msgs, name):
    return [m["data"] for m in msgs if m.get("event") == name]

