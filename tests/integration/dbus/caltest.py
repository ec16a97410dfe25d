"""Shared pieces of the calibration tests (calibration.md section 9): kegbot_calibrate run as a user
would run it (as root, as nobody, as a member of the kegbot group) against the private bus, a kegnet
producer that pours exact tick counts, and the spec's example taps file."""
import os
import re
import subprocess
import unittest

import busenv
import kbtest
from busenv import IFACE, ROOT, Monitor, payload

MANAGER = IFACE + ".Manager"
TAP = IFACE + ".Tap"

# calibration.md section 4.1, "Before".
EXAMPLE_TAPS = """# Taps of the basement kegerator
[DEFAULT]
pour_start_ml = 8

[kegboard.flow0]
name = Main Tap
ml_per_tick = 0.185   ; SF800
relay_name = kegboard.relay0

[kegboard.flow1]
name = Guest Tap
ticks_per_ml = 2.2
"""

# Its "After" for [kegboard.flow0], the comment's time left open.
EXAMPLE_FLOW0_AFTER = re.compile(
    r"\[kegboard\.flow0\]\nname = Main Tap\n"
    r"# calibration \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: 500 mL over 2703 ticks, was 0\.185 mL/tick\n"
    r"ml_per_tick = 0\.18498   ; SF800\nrelay_name = kegboard\.relay0\n")


def tap_path(meter):
    return busenv.path_encode(ROOT + "/tap", meter)


def calibrate(bus, *args, as_=None, timeout=30, env=None):
    """kegbot_calibrate with 'args' on the private bus; returns the CompletedProcess."""
    cmd = bus._cred_prefix(as_) + [kbtest.binary("kegbot_calibrate")] + [str(a) for a in args]
    full = dict(os.environ)
    full.update(bus.env())
    full.pop("VERBOSE", None)
    full.update(env or {})
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=timeout * kbtest.SLOW)


class Producer:
    """A kegnet producer: readings on a meter, counted from a baseline, in reports of at most 'step'."""

    def __init__(self, core):
        self.conn = core.connect()
        self.readings = {}

    def baseline(self, meter, reading=0):
        self.conn.send("MeterUpdate", meter_name=meter, reading=reading)
        self.readings[meter] = reading

    def pour(self, meter, ticks, step=100, pause=0.0):
        """'ticks' more on 'meter' (a baseline of 0 first if it has none)."""
        import time
        if meter not in self.readings:
            self.baseline(meter)
        left = ticks
        while left > 0:
            n = min(step, left)
            self.readings[meter] += n
            left -= n
            self.conn.send("MeterUpdate", meter_name=meter, reading=self.readings[meter])
            if pause:
                time.sleep(pause)

    def close(self):
        self.conn.close()


def wait_tap(bus, meter, prop, value, timeout=5):
    return kbtest.wait_until(lambda: bus.get(tap_path(meter), TAP, prop) == value, timeout=timeout,
                             what="%s %s = %r" % (meter, prop, value))


def calibration_ended(mon, meter, timeout=5):
    """The CalibrationEnded signal of 'meter': [meter, reason, ticks, old, new]."""
    m = mon.wait_signal(lambda m: m["member"] == "CalibrationEnded" and payload(m)[0] == meter, timeout=timeout,
                        what="CalibrationEnded of %s" % meter)
    return payload(m)


def relay_events(messages, relay):
    """The modes of the SetRelayOutputEvents for 'relay' among kegnet messages."""
    return [m["data"]["output_mode"] for m in messages
            if m.get("event") == "SetRelayOutputEvent" and m["data"].get("output_name") == relay]


class Listener:
    """A kegnet client that collects everything the core broadcasts (relay events, flow updates)."""

    def __init__(self, core):
        import threading
        self.conn = core.connect()
        self.messages = []
        self._lock = threading.Lock()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            m = self.conn.recv(timeout=0.1)
            if m is not None:
                with self._lock:
                    self.messages.append(m)
            elif self.conn.closed:
                break

    def seen(self):
        with self._lock:
            return list(self.messages)

    def relay(self, relay):
        return relay_events(self.seen(), relay)

    def wait(self, pred, timeout=5, what="a kegnet message"):
        return kbtest.wait_until(lambda: next((m for m in self.seen() if pred(m)), None), timeout=timeout, what=what)

    def close(self):
        self._stop = True
        self._t.join(2)
        self.conn.close()


class CalibrationCase(unittest.TestCase):
    """A private bus, a core with 'taps' (None: no taps file), a monitor, a producer and a listener."""

    taps = EXAMPLE_TAPS
    flags = ()
    tokens = None

    def setUp(self):
        self.tmpdir = kbtest.TempDir()
        self.tmp = self.tmpdir.__enter__()
        self.bus = busenv.PrivateBus(self.tmp)
        self.mon = Monitor(self.bus)
        self.procs = []
        self.start_core()

    def start_core(self, *extra, prefix=None, taps_path=None):
        flags = list(self.flags) + list(extra)
        if taps_path:
            flags.append("--taps_file=" + taps_path)
        self.core = busenv.Core(self.tmp, self.bus, *flags, taps=self.taps if not taps_path else None,
                                tokens=self.tokens, prefix=prefix)
        self.taps_path = taps_path or os.path.join(self.tmp, "taps.ini" if self.taps is not None else "no-taps.ini")
        self.producer = Producer(self.core)
        self.listener = Listener(self.core)

    def stop_core(self):
        r = self.core.stop()
        self.producer.close()
        self.listener.close()
        return r

    def tearDown(self):
        self.mon.stop()
        kbtest.stop_all(self.procs)
        self.stop_core()
        self.bus.stop()
        self.tmpdir.__exit__(None, None, None)

    # ------------------------------------------------------------------ helpers

    def cal(self, *args, code=0, as_=None):
        r = calibrate(self.bus, *args, as_=as_)
        self.assertEqual(r.returncode, code, "kegbot_calibrate %s: %d\n%s%s" % (" ".join(args), r.returncode,
                                                                                r.stdout, r.stderr))
        return r

    def tap(self, meter, prop):
        return self.bus.get(tap_path(meter), TAP, prop)

    def call(self, method, sig="", *args, as_=None):
        return self.bus.dbus_call(ROOT, MANAGER, method, sig, list(args), as_=as_)

    def pour_counted(self, meter, ticks, step=100):
        """'ticks' more into a running calibration, waiting until the core counted them."""
        before = self.tap(meter, "CalibrationTicks")
        self.producer.pour(meter, ticks, step=step)
        wait_tap(self.bus, meter, "CalibrationTicks", before + ticks)

    def taps_text(self):
        with open(self.taps_path) as f:
            return f.read()
