"""kegboard_tester (programs-and-flags.md section 7) against kegboard_sim."""
import re
import signal
import unittest

import kbtest
from kbtest import Proc, Sim, TempDir


def tester(*flags):
    return Proc([kbtest.binary("kegboard_tester")] + list(flags), name="kegboard_tester")


def relay_events(sim):
    out = []
    for line in sim.events("RELAY"):
        m = re.search(r"RELAY id=(\d) state=(on|off) cause=(\w+)", line)
        out.append((int(m.group(1)), m.group(2), m.group(3)))
    return out


class TesterTest(unittest.TestCase):
    def setUp(self):
        self._tmp = TempDir()
        self.tmp = self._tmp.__enter__()
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            if p.alive():
                p.kill()
            if p.p.stdin:
                p.p.stdin.close()
        self._tmp.__exit__(None, None, None)

    def sim(self, *flags):
        s = Sim(self.tmp, *flags)
        self.procs.append(s)
        return s

    def test_cycles_relays(self):
        sim = self.sim("--strict_crc")
        t = tester("--kegboard_device=" + sim.link, "--relay_ids=0,2", "--step_seconds=0.3", "--cycles=2")
        self.procs.append(t)
        self.assertEqual(t.wait(20), 0)
        t.wait_line(r"WARNING .*never run it on a live system")
        t.wait_line(r"^\d\d:\d\d:\d\d\.\d\d\d hello firmware_version=18 ", key="stdout")
        t.wait_line(r"^\d\d:\d\d:\d\d\.\d\d\d output_status output_name=relay2 output_reading=1$", key="stdout")
        cycle = [(0, "on", "command"), (0, "off", "command"), (2, "on", "command"), (2, "off", "command")]
        kbtest.wait_until(lambda: len(relay_events(sim)) >= len(cycle * 2), what="both cycles at the board")
        self.assertEqual(relay_events(sim), cycle * 2)
        self.assertEqual([l for l in sim.events("RX_DROP")], [])

    def test_interrupt_switches_relays_off(self):
        sim = self.sim()
        t = tester("--kegboard_device=" + sim.link, "--relay_ids=1", "--step_seconds=5")
        self.procs.append(t)
        sim.wait_line(r"RELAY id=1 state=on cause=command", key="stdout", timeout=8)
        t.signal(signal.SIGINT)
        self.assertEqual(t.wait(5), 0)
        sim.wait_line(r"RELAY id=1 state=off cause=command", key="stdout")

    def test_no_kegboard(self):
        sim = self.sim("--commands=hang")
        t = tester("--kegboard_device=" + sim.link)
        self.procs.append(t)
        self.assertEqual(t.wait(15), 1)
        t.wait_line(r"ERROR .*No kegboard found$")
        self.assertEqual(len([l for l in sim.events("RX") if " ping " in l]), 5)

    def test_bad_relay_ids(self):
        r = kbtest.run([kbtest.binary("kegboard_tester"), "--relay_ids=0,6"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Error: ", r.stderr)


if __name__ == "__main__":
    kbtest.main()
