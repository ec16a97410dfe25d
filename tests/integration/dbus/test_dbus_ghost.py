"""The ghost-pour filter end to end (ghost-pours.md section 16.1): kegboard_sim plays the spec's traces,
kegboard_daemon carries the readings, kegbot_core classifies them, and what a user sees is checked on
a private D-Bus, in drinks.log, quarantine.json and the core's log lines. Time tolerances are twice
the spec's (3 s), as it asks for runs on the real clock.

One board, one meter per case, played at the same time:

    flow0  R1   5:0 16:30                 a real pour: one drink of ~480 mL, no ghost
    flow1  Ga   300:1.5                   a trickle: no drink, no FlowUpdate, one GhostFlow G2 (WARNING)
    flow2  Gh   jitter=off 40:3.7         self-test crosstalk, shortened with max_pour_s = 10 on this tap:
                                          long_pour at ~11.7 s, ghost and quarantine at ~21.7 s; then
                                          ClearQuarantine and a real pour recorded
    flow3  Ga   300:1.5, ghost_filter=log recorded as off records it, reported as on would act
    flow4  Gm   5:0 10:30 5:150           a kicked keg: PourFlagged, flags in drinks.log
    flow5  Gl   1:0 5:30                  a tap with a relay nobody opened: ghost G1
"""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busenv  # noqa: E402
import kbtest  # noqa: E402
from busenv import IFACE, ROOT, Monitor, payload  # noqa: E402

BOARD = "kegboard"
MANAGER = IFACE + ".Manager"
TAP = IFACE + ".Tap"
TOL = 3.0

TAPS = """
[DEFAULT]
ticks_per_ml = 5.405405405405405

[kegboard.flow0]
name = R1

[kegboard.flow1]
name = Ga

[kegboard.flow2]
name = Gh
max_pour_s = 10

[kegboard.flow3]
name = Ga in log mode
ghost_filter = log

[kegboard.flow4]
name = Gm

[kegboard.flow5]
name = Gl
relay_name = kegboard.relay5
"""

TRACES = {
    0: "5:0 16:30",
    1: "300:1.5",
    2: "jitter=off 40:3.7",
    3: "300:1.5",
    4: "5:0 10:30 5:150",
    5: "1:0 5:30",
}


def tap_path(n):
    return busenv.path_encode(ROOT + "/tap", "%s.flow%d" % (BOARD, n))


class GhostChainTest(unittest.TestCase):
    def setUp(self):
        self.tmpdir = kbtest.TempDir()
        self.tmp = self.tmpdir.__enter__()
        self.bus = busenv.PrivateBus(self.tmp)
        self.procs = []
        self.core = busenv.Core(self.tmp, self.bus, taps=TAPS)
        self.procs.append(self.core)
        self.mon = Monitor(self.bus)
        self.sim = kbtest.Sim(self.tmp, "--nobuzzer", "--meters=6")
        self.procs.append(self.sim)
        self.daemon = self.sim.daemon(self.core.port)
        self.procs.append(self.daemon)

    def tearDown(self):
        self.mon.stop()
        kbtest.stop_all(self.procs)
        self.bus.stop()
        self.tmpdir.__exit__(None, None, None)

    # ------------------------------------------------------------------ helpers

    def signals(self, member, meter=None, index=1):
        return [m for m in self.mon.signals(member) if meter is None or payload(m)[index] == meter]

    def ghost_flows(self, n):
        return [payload(m) + [m["timestamp-realtime"]] for m in self.signals("GhostFlow", "%s.flow%d" % (BOARD, n), 0)]

    def wait_ghost_flow(self, n, pred=lambda g: True, timeout=10.0, what="GhostFlow"):
        return kbtest.wait_until(lambda: next((g for g in self.ghost_flows(n) if pred(g)), None), timeout=timeout,
                                 what="%s on flow%d" % (what, n))

    def tap(self, n, prop):
        return self.bus.get(tap_path(n), TAP, prop)

    def start_trace(self, n, trace):
        """Plays 'trace' on flow<n>; returns the wall-clock time (s) of its trace time 0."""
        t0 = time.time()
        self.sim.cmd("trace flow%d %s" % (n, trace))
        self.sim.wait_line(r"^\d+ TRACE meter=flow%d state=start" % n, key="stdout", timeout=5)
        return t0

    def trace_ticks(self, n, timeout):
        m = self.sim.wait_line(r"^\d+ TRACE meter=flow%d state=end reports=\d+ ticks=(\d+)" % n, key="stdout",
                               timeout=timeout)
        return int(m.group(1))

    def drinks(self, n):
        return [d for d in self.core.drinks() if d["meter_name"] == "%s.flow%d" % (BOARD, n)]

    def drink_lines(self):
        try:
            with open(os.path.join(self.core.state_dir, "drinks.log")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def quarantine_file(self):
        try:
            with open(os.path.join(self.core.state_dir, "quarantine.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def assert_near(self, got, want, rel=0.15):
        self.assertLessEqual(abs(got - want), rel * want, "%r is not within %d %% of %r" % (got, rel * 100, want))

    # ------------------------------------------------------------------ the cases

    def test_cases(self):
        core, bus = self.core, self.bus
        core.wait_line(r"\(flowmanager\) Ghost filter: on \(1 taps differ\)")
        ctrl = busenv.path_encode(ROOT + "/controller", BOARD)
        kbtest.wait_until(lambda: ctrl in bus.managed_objects(), timeout=15, what="the board on D-Bus")
        self.assertEqual(bus.get(ROOT, MANAGER, "GhostFilter"), "on")
        self.assertEqual(self.tap(3, "GhostFilter"), "log")
        self.assertEqual(self.tap(2, "Quarantined"), False)

        started = {n: self.start_trace(n, TRACES[n]) for n in sorted(TRACES)}

        # ---- Gl (flow5): a relay nobody opened; every tick is ghost, rule G1. ----
        g = self.wait_ghost_flow(5, timeout=25)
        self.assertEqual(g[1], "G1")
        self.assertEqual(g[6], 0)
        self.assertEqual(g[8], "on")
        self.assert_near(g[3], 150)
        core.wait_line(r"WARNING  \(flowmanager\) Ghost ticks on kegboard\.flow5: \d+ ticks \(\d+\.\d mL\) over "
                       r"[\d.]+ s, rule G1 \(flow with valve closed\); not recorded; series 0:\d+")
        self.assertEqual(g[2], self.trace_ticks(5, 5))
        self.assertFalse(self.signals("FlowUpdated", "kegboard.flow5"))

        # ---- Gh (flow2): long_pour at ~11.7 s, quarantine at ~21.7 s. ----
        flag = self.mon.wait_signal(lambda m: m["member"] == "PourFlagged" and payload(m)[1] == "kegboard.flow2",
                                    timeout=20, what="PourFlagged long_pour")
        self.assertEqual(payload(flag)[2:], ["long_pour", "on"])
        self.assertLessEqual(abs(flag["timestamp-realtime"] / 1e6 - started[2] - 11.7), TOL)
        g = self.wait_ghost_flow(2, lambda g: g[1] == "G7", timeout=20)
        self.assertNotEqual(g[6], 0)                    # the flow's id: a flow classified ghost
        self.assertLessEqual(abs(g[9] / 1e6 - started[2] - 21.7), TOL)
        core.wait_line(r"WARNING  \(flowmanager\) Tap kegboard\.flow2 quarantined: meter ran 2\d\.\d s without a "
                       r"pause \(rule G7\); its ticks are ignored until ClearQuarantine")
        core.wait_line(r"WARNING  \(flowmanager\) Not recording flow 0x%08x: ghost pour, rule G7 \(meter ran " % g[6])
        kbtest.wait_until(lambda: self.tap(2, "Quarantined"), timeout=5, what="Quarantined")
        self.assertGreater(self.tap(2, "QuarantinedSince"), 0)
        q = self.quarantine_file()
        self.assertEqual(list(q["meters"]), ["kegboard.flow2"])
        self.assertEqual((q["version"], q["meters"]["kegboard.flow2"]["cuts"],
                          q["meters"]["kegboard.flow2"]["max_pour_s"]), (1, 2, 10.0))
        completed = [p for p in map(payload, self.signals("FlowUpdated", "kegboard.flow2"))
                     if p[2] == "completed"]
        self.assertEqual(len(completed), 1)
        self.assertEqual(completed[0][0], g[6])
        # No flow starts on the tap: StartFlow fails with Quarantined.
        err, msg = bus.dbus_call(ROOT, MANAGER, "StartFlow", "s", ["kegboard.flow2"])
        self.assertEqual(err, "org.kegbot.Core1.Error.Quarantined", msg)
        # The rest of Gh's 40 s are ghost, and nothing reaches a flow.
        ticks = self.trace_ticks(2, 30)
        self.mon.sync()
        n_updates = len(self.signals("FlowUpdated", "kegboard.flow2"))
        kbtest.wait_until(lambda: self.tap(2, "GhostTicks") == ticks, timeout=15, what="Gh all ghost")
        # ClearQuarantine is an operator's: refused to nobody, allowed to group kegbot-admin.
        err, _ = bus.dbus_call(ROOT, MANAGER, "ClearQuarantine", "s", ["kegboard.flow2"], as_="nobody")
        self.assertEqual(err, "org.freedesktop.DBus.Error.AccessDenied")
        self.assertTrue(self.tap(2, "Quarantined"))
        err, _ = bus.dbus_call(ROOT, MANAGER, "ClearQuarantine", "s", ["kegboard.nosuch"])
        self.assertEqual(err, "org.kegbot.Core1.Error.UnknownMeter")
        self.assertEqual(bus.dbus_call(ROOT, MANAGER, "ClearQuarantine", "s", ["kegboard.flow2"],
                                       as_="operator"), ("ok", []))
        core.wait_line(r"INFO     \(flowmanager\) Quarantine of tap kegboard\.flow2 cleared")
        self.assertFalse(self.tap(2, "Quarantined"))
        self.assertEqual(self.tap(2, "QuarantinedSince"), 0)
        self.assertEqual(self.quarantine_file(), {"version": 1, "meters": {}})
        self.assertEqual(len(self.signals("FlowUpdated", "kegboard.flow2")), n_updates)
        # A real pour afterwards is recorded.
        self.start_trace(2, "10:30")
        drink = self.mon.wait_signal(lambda m: m["member"] == "DrinkRecorded" and payload(m)[3] == "kegboard.flow2",
                                     timeout=30, what="the pour after the quarantine")
        self.assert_near(payload(drink)[6], 300)

        # ---- R1 (flow0): one drink, nothing ghost. ----
        drink = self.mon.wait_signal(lambda m: m["member"] == "DrinkRecorded" and payload(m)[3] == "kegboard.flow0",
                                     timeout=10, what="R1's drink")
        self.assert_near(payload(drink)[6], 480)
        self.assertEqual(payload(drink)[5], self.trace_ticks(0, 1))
        self.assertEqual(self.tap(0, "GhostTicks"), 0)
        self.assertEqual(self.tap(0, "FlowFlags"), [])
        line = next(l for l in self.drink_lines() if '"kegboard.flow0"' in l)
        self.assertNotIn('"flags"', line)               # ordinary drinks' lines are unchanged
        self.assertFalse(self.ghost_flows(0))

        # ---- Gm (flow4): kicked 2-3.5 s after the 150 mL/s began (t = 15). ----
        flag = self.mon.wait_signal(lambda m: m["member"] == "PourFlagged" and payload(m)[1] == "kegboard.flow4",
                                    timeout=5, what="PourFlagged kicked")
        self.assertEqual(payload(flag)[2:], ["kicked", "on"])
        t = flag["timestamp-realtime"] / 1e6 - started[4] - 15
        self.assertTrue(2 - TOL <= t <= 3.5 + TOL, t)
        core.wait_line(r"WARNING  \(flowmanager\) Flow 0x%08x on kegboard\.flow4 flagged kicked: above 120 mL/s "
                       r"for 2 s" % payload(flag)[0])
        drink = self.mon.wait_signal(lambda m: m["member"] == "DrinkRecorded" and payload(m)[3] == "kegboard.flow4",
                                     timeout=20, what="Gm's drink")
        self.assert_near(payload(drink)[6], 1050)
        self.assertEqual(payload(drink)[2], payload(flag)[0])
        self.assertEqual(self.tap(4, "FlowFlags"), ["kicked"])
        line = json.loads(next(l for l in self.drink_lines() if '"kegboard.flow4"' in l))
        self.assertEqual(list(line)[-2:], ["duration", "flags"])
        self.assertEqual(line["flags"], ["kicked"])

        # ---- Ga (flow1) and Ga in log mode (flow3): 300 s, reported 10 s after the last tick. ----
        ticks = self.trace_ticks(1, 320)
        self.assertEqual(self.trace_ticks(3, 5), ticks)
        g = self.wait_ghost_flow(1, timeout=10 + TOL)
        self.assertEqual(g[1:3], ["G2", ticks])
        self.assert_near(g[3], 450)
        self.assertEqual(g[6:9], [0, g[7], "on"])
        self.assertLessEqual(abs(g[9] / 1e6 - (started[1] + 310)), TOL)
        self.assertEqual(len(self.ghost_flows(1)), 1)
        self.assertEqual(self.tap(1, "GhostTicks"), ticks)
        self.assertAlmostEqual(self.tap(1, "GhostVolumeMl"), g[3], places=6)
        series = g[7].split(" ")
        self.assertLessEqual(len(series), 64)
        self.assertEqual(sum(int(b.split(":")[1]) for b in series), ticks)
        core.wait_line(r"WARNING  \(flowmanager\) Ghost ticks on kegboard\.flow1: %d ticks \(\d+\.\d mL\) over 29\d\.\d s, "
                       r"rule G2 \(too little volume to start a pour\); not recorded; series 0:" % ticks)
        self.assertFalse(self.signals("FlowUpdated", "kegboard.flow1"))
        self.assertFalse(self.drinks(1))

        # log mode: the same report, flow id 0, mode log; and the drink off mode records (452.7 mL).
        g3 = self.wait_ghost_flow(3, timeout=5)
        self.assertEqual([g3[1], g3[2], g3[6], g3[8]], ["G2", ticks, 0, "log"])
        core.wait_line(r"WARNING  \(flowmanager\) Ghost ticks on kegboard\.flow3: %d ticks \(\d+\.\d mL\) over "
                       r"29\d\.\d s, rule G2 \(too little volume to start a pour\); ghost_filter=log, no action; "
                       r"series 0:" % ticks)
        kbtest.wait_until(lambda: self.drinks(3), timeout=5, what="log mode's drink")
        self.assertEqual(self.drinks(3)[0]["ticks"], ticks)
        self.assertEqual(self.tap(3, "GhostTicks"), ticks)

        # Every counted tick is in a drink or in the ghost count.
        for n in range(6):
            total = self.tap(n, "TotalTicks")
            drunk = sum(d["ticks"] for d in self.drinks(n))
            self.assertEqual(drunk + (0 if n == 3 else self.tap(n, "GhostTicks")), total, "flow%d" % n)
        self.assertEqual(self.core.stop(), 0)


if __name__ == "__main__":
    kbtest.main()
