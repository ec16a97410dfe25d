"""The whole chain: kegboard_sim (pty) -> kegboard_daemon -> kegbot_core. A 350 mL pour recorded once,
a board reset in the middle of a pour counted right, relays switched at the simulated board only for
authenticated flows."""
import os
import unittest

import kbtest
from coretest import TAPS_INI, Core, write_file

IBUTTON = "0123456789abcdef"


class Chain:
    def __init__(self, tmp, tokens=None):
        taps = write_file(os.path.join(tmp, "taps.ini"), TAPS_INI)
        tokens_path = write_file(os.path.join(tmp, "tokens.ini"), tokens) if tokens else None
        self.core = Core(tmp, taps=taps, tokens=tokens_path)
        self.listener = self.core.connect()
        self.sim = kbtest.Sim(tmp, "--nobuzzer")
        self.daemon = self.sim.daemon(self.core.port)
        self.core.wait_line(r"\(main\) Controller connected: kegboard ", timeout=15)

    def close(self):
        for p in (self.daemon, self.sim, self.core):
            try:
                p.stop(5)
            except AssertionError:
                p.kill()
        self.listener.close()

    def wait_ticks(self, meter, ticks, timeout=10):
        return self.listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["meter_name"] == meter
                                        and m["data"]["ticks"] == ticks, timeout=timeout,
                                        what="%s at %d ticks" % (meter, ticks))


class ChainTest(unittest.TestCase):
    def test_pour_and_board_reset(self):
        with kbtest.TempDir() as tmp:
            c = Chain(tmp)
            try:
                # 350 mL at 2.2 ticks/mL, spread over 1.5 s.
                c.sim.cmd("pour flow0 770 1.5")
                c.sim.cmd("pour flow1 200 0")
                c.wait_ticks("kegboard.flow1", 200)
                c.wait_ticks("kegboard.flow0", 770)
                # The board reboots mid-pour: its counters restart at 0 and the core re-baselines.
                c.sim.cmd("reset")
                c.core.wait_line(r"Controller kegboard was reset, counting its meters from 0", timeout=10)
                c.sim.cmd("pour flow1 100 0")
                c.wait_ticks("kegboard.flow1", 300)
                # Both flows idle out 10 s after their last tick and are recorded once: after a clean
                # stop (which would also record any flow still open) the log holds exactly those two.
                kbtest.wait_until(lambda: len(c.core.drinks()) == 2, timeout=20, what="two drinks")
                self.assertEqual(c.daemon.stop(), 0)
                self.assertEqual(c.core.stop(), 0)
                drinks = sorted(c.core.drinks(), key=lambda d: d["meter_name"])
                self.assertEqual(len(drinks), 2)
                self.assertEqual(drinks[0]["meter_name"], "kegboard.flow0")
                self.assertEqual(drinks[0]["ticks"], 770)
                self.assertAlmostEqual(drinks[0]["volume_ml"], 350.0, places=6)
                self.assertIn(drinks[0]["duration"], (1, 2))
                self.assertEqual(drinks[1]["ticks"], 300)
                self.assertAlmostEqual(drinks[1]["volume_ml"], 150.0, places=6)
                # Anonymous pours never touch a relay (the simulator has handled all it received once
                # it answers a later command).
                n = c.sim.count("stdout")
                c.sim.cmd("status")
                c.sim.wait_line(r"^\d+ STATUS ", key="stdout", start=n)
                self.assertEqual(c.sim.events("RELAY"), [])
                self.assertEqual(c.sim.events("RX"), [l for l in c.sim.events("RX") if "set_output" not in l])
            finally:
                c.close()

    def test_relay_for_authenticated_flow(self):
        with kbtest.TempDir() as tmp:
            c = Chain(tmp, tokens="[core.onewire:%s]\nusername = mikey\n" % IBUTTON)
            try:
                c.sim.cmd("ibutton %s on" % IBUTTON)
                c.sim.wait_line(r"^\d+ RELAY id=0 state=on cause=command", timeout=10, key="stdout")
                c.core.wait_line(r"Starting flow flow_id=0x[0-9a-f]{8} meter=kegboard\.flow0 user=mikey")
                c.sim.cmd("pour flow0 440 1")
                c.wait_ticks("kegboard.flow0", 440)
                # Re-asserted about once a second (the board's watchdog would close it after 10 s):
                # two more within 3 s, and the relay stayed on through them (no flicker).
                n0 = len([l for l in c.sim.events("RX") if "set_output" in l])
                kbtest.wait_until(lambda: len([l for l in c.sim.events("RX") if "set_output" in l]) >= n0 + 2,
                                  timeout=3, what="two re-asserts")
                self.assertEqual(c.sim.events("RELAY")[1:], [])
                c.sim.cmd("ibutton %s off" % IBUTTON)
                c.sim.wait_line(r"^\d+ RELAY id=0 state=off cause=command", timeout=10, key="stdout")
                kbtest.wait_until(lambda: len(c.core.drinks()) == 1, timeout=5)
                d = c.core.drinks()[0]
                self.assertEqual((d["username"], d["ticks"]), ("mikey", 440))
                self.assertAlmostEqual(d["volume_ml"], 200.0, places=6)
                # The controller registry follows the daemon's connection.
                self.assertEqual(c.daemon.stop(), 0)
                c.core.wait_line(r"\(main\) Controller disconnected: kegboard$")
            finally:
                c.close()


if __name__ == "__main__":
    kbtest.main()
