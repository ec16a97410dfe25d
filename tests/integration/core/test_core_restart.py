"""kegbot_core across its own restarts (core-behaviour.md section 5 and test 32): meters.json keeps the
reading up to which every tick is accounted for, so a pour the core was stopped (SIGTERM) or killed
(SIGKILL) in the middle of, ticks poured while it was down and a board reset meanwhile are recorded
exactly once; the rules of the first reading after a start (--max_restart_delta, a changed serial,
an uptime that went backwards), a bad meters.json, and the drink whose durable step a crash cut."""
import json
import os
import signal
import unittest

import kbtest
from coretest import TAPS_INI, Core, write_file

METER = "kegboard.flow0"


def meters_json(core):
    with open(os.path.join(core.state_dir, "meters.json")) as f:
        return json.load(f)


def ticks(core):
    return [d["ticks"] for d in core.drinks()]


class ChainRestartTest(unittest.TestCase):
    """kegboard_sim -> kegboard_daemon -> kegbot_core, the core restarted in the middle."""

    def setUp(self):
        self._tmp = kbtest.TempDir()
        self.tmp = self._tmp.__enter__()
        self.taps = write_file(os.path.join(self.tmp, "taps.ini"), TAPS_INI)
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            if p.alive():
                p.kill()
        self._tmp.__exit__(None, None, None)

    def core(self, port=None, state_dir=None):
        c = Core(self.tmp, port=port, taps=self.taps, state_dir=state_dir)
        self.procs.append(c)
        return c

    def chain(self):
        core = self.core()
        sim = kbtest.Sim(self.tmp, "--nobuzzer")
        self.procs.append(sim)
        daemon = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kegboard_device=" + sim.link,
                              "--kb_core_addr=%d" % core.port, "--probe_seconds=1"], name="kegboard_daemon")
        self.procs.append(daemon)
        core.wait_line(r"\(main\) Controller connected: kegboard serial=\S+ firmware_version=18 board_reset=yes",
                       timeout=15)
        return core, sim, daemon

    def wait_total(self, core, total, timeout=40):
        kbtest.wait_until(lambda: sum(ticks(core)) >= total, timeout=timeout,
                          what="drinks adding up to %d ticks" % total)
        return ticks(core)

    def restart_mid_pour(self, kill):
        core, sim, daemon = self.chain()
        listener = core.connect()
        sim.cmd("pour flow0 1320 4")
        listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] >= 400, timeout=10,
                            what="a third of the pour")
        listener.close()
        if kill:
            core.kill()
        else:
            self.assertEqual(core.stop(), 0)
        core2 = self.core(port=core.port, state_dir=core.state_dir)
        sim.wait_line(r" TX meter_status meter_name=flow0 meter_reading=1320$", key="stdout", timeout=10)
        got = self.wait_total(core2, 1320)
        core2.wait_line(r"\(flowmanager\) Flow completed", timeout=15)
        self.assertEqual(core2.stop(), 0)
        self.assertEqual(sum(ticks(core2)), 1320, ticks(core2))
        return core2, sim, daemon, got

    def test_sigterm_mid_pour(self):
        core, sim, daemon, got = self.restart_mid_pour(kill=False)
        # The stop recorded what the core had; the rest is one more drink: none lost, none twice.
        self.assertEqual(len(got), 2, got)
        self.assertGreaterEqual(got[0], 400)

        # Poured while no core runs: the first pour after the start is recorded in full.
        sim.cmd("pour flow0 300 0.5")
        sim.wait_line(r" TX meter_status meter_name=flow0 meter_reading=1620$", key="stdout", timeout=10)
        core3 = self.core(port=core.port, state_dir=core.state_dir)
        self.wait_total(core3, 1620)
        self.assertEqual(ticks(core3)[2:], [300])

    def test_sigkill_mid_pour(self):
        core, sim, daemon, got = self.restart_mid_pour(kill=True)
        # The killed core's flow was never a drink: its ticks are all in the one after the start.
        self.assertEqual(got, [1320])

        # The board resets while no core runs: its counters restart and the pour after the reset
        # counts from 0.
        self.assertEqual(core.stop(), 0)
        n = sim.count("stdout")
        sim.cmd("reset")
        sim.wait_line(r"^\d+ TX hello .*uptime_ms=0 ", key="stdout", start=n)
        sim.cmd("pour flow0 77 0.2")
        sim.wait_line(r" TX meter_status meter_name=flow0 meter_reading=77$", key="stdout", start=n)
        core3 = self.core(port=core.port, state_dir=core.state_dir)
        self.wait_total(core3, 1320 + 77)
        self.assertEqual(ticks(core3), [1320, 77])


class RestartRulesTest(unittest.TestCase):
    """The same rules driven through kegnet, with readings chosen to the tick."""

    def setUp(self):
        self._tmp = kbtest.TempDir()
        self.tmp = self._tmp.__enter__()
        self.state = os.path.join(self.tmp, "state")
        self.port = kbtest.free_port()
        self.cores = []

    def tearDown(self):
        for c in self.cores:
            c.kill()
        self._tmp.__exit__(None, None, None)

    def core(self, *flags):
        c = Core(self.tmp, *flags, port=self.port, state_dir=self.state)
        self.cores.append(c)
        c.conn = c.connect()
        return c

    def pour(self, core, *readings, meter=METER):
        """Readings, then stop_flow; returns the completed FlowUpdate."""
        for r in readings:
            core.conn.send("MeterUpdate", meter_name=meter, reading=r)
        core.conn.send("FlowRequest", meter_name=meter, request="stop_flow")
        m, _ = core.conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["state"] == "completed",
                                    timeout=10, what="completed flow")
        return m["data"]

    def sync(self, core):
        """Everything sent before has been handled (the core answers a start_flow at once)."""
        core.conn.send("FlowRequest", meter_name="sync.flow9", request="start_flow")
        core.conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["meter_name"] == "sync.flow9",
                             timeout=10, what="sync flow")

    def test_sigkill_mid_flow_and_meters_json(self):
        c = self.core()
        c.conn.send("MeterUpdate", meter_name=METER, reading=5000)      # baseline, persisted
        c.conn.send("MeterUpdate", meter_name=METER, reading=5300)
        c.conn.send("MeterUpdate", meter_name=METER, reading=5600)
        c.conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 600, what="600 ticks")
        # The ticks of an active flow are never inside the accounted reading.
        self.assertEqual(meters_json(c)["meters"][METER], {"reading": 5000, "carry": 0})
        c.kill()
        c2 = self.core()
        c2.wait_line(r"Meter state from .*meters\.json: 1 meters")
        done = self.pour(c2, 5900)
        self.assertEqual(done["ticks"], 900)
        kbtest.wait_until(lambda: c2.drinks(), what="the drink")
        self.assertEqual(ticks(c2), [900])
        self.assertEqual(meters_json(c2)["meters"][METER], {"reading": 5900, "carry": 0})
        self.assertEqual(meters_json(c2)["pending"], [])

    def test_max_restart_delta(self):
        c = self.core()
        self.pour(c, 1000, 1100)
        self.assertEqual(c.stop(), 0)
        # Above max_tick_delta (1000) but within --max_restart_delta: poured while the core was down.
        c = self.core()
        self.assertEqual(self.pour(c, 1100 + 5000)["ticks"], 5000)
        self.assertEqual(c.stop(), 0)
        # Above it: rejected and re-baselined, as a jump is.
        c = self.core("--max_restart_delta=3000")
        c.conn.send("MeterUpdate", meter_name=METER, reading=6100 + 3001)
        c.wait_line(r"WARNING .*Bad ticks report: meter=%s last=6100 reading=9101; re-baselining" % METER)
        self.sync(c)
        self.assertEqual(meters_json(c)["meters"][METER]["reading"], 9101)
        # Only the first reading after the start has the wider limit.
        self.assertEqual(self.pour(c, 9101 + 600)["ticks"], 600)
        c.conn.send("MeterUpdate", meter_name=METER, reading=9701 + 1001)
        c.wait_line(r"Bad ticks report: meter=%s last=9701 reading=10702" % METER)
        self.assertEqual(ticks(c), [100, 5000, 600])

    def test_serial_change_and_uptime_backwards_count_from_zero(self):
        c = self.core()
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="KB-1", uptime_ms=90000)
        self.pour(c, 4000, 4100)
        self.assertEqual(c.stop(), 0)
        # Another board under the same name: its counter is not the one meters.json knows.
        c = self.core()
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="KB-2", uptime_ms=95000)
        c.wait_line(r"Controller kegboard: serial number changed from 'KB-1' to 'KB-2'; counting its meters from 0")
        self.assertEqual(self.pour(c, 250)["ticks"], 250)
        self.assertEqual(c.stop(), 0)
        # The same board, but it restarted while the core was down.
        c = self.core()
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="KB-2", uptime_ms=3000)
        c.wait_line(r"Controller kegboard: uptime went backwards \(95000 -> 3000 ms\); counting its meters from 0")
        self.assertEqual(self.pour(c, 40)["ticks"], 40)
        self.assertEqual(c.stop(), 0)
        # Unchanged: the reading counts against the accounted one.
        c = self.core()
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="KB-2", uptime_ms=9000)
        self.assertEqual(self.pour(c, 70)["ticks"], 30)
        self.assertEqual(ticks(c), [100, 250, 40, 30])

    def test_unseen_meter_of_a_reset_board_counts_from_zero(self):
        # The board's boot was announced to an earlier run: a meter no run has had a reading of yet
        # (its first pour happened while the core was down) counts from 0, not from a baseline.
        c = self.core()
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="", uptime_ms=0,
                    board_reset=True)
        self.pour(c, 200)
        self.assertEqual(meters_json(c)["controllers"]["kegboard"]["counts_from_zero"], True)
        self.assertEqual(c.stop(), 0)
        c = self.core()
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="", uptime_ms=9000)
        self.assertEqual(self.pour(c, 1135, meter="kegboard.flow1")["ticks"], 1135)
        self.assertEqual(self.pour(c, 260)["ticks"], 60)
        self.assertEqual(ticks(c), [200, 1135, 60])

    def test_bad_meters_json_is_a_warning(self):
        os.makedirs(self.state)
        for content, why in (('{"version": 1, "meters": {', "not valid JSON"),
                             ('{"version": 7, "meters": {}, "controllers": {}, "pending": []}', "unknown version"),
                             ('{"version": 1, "meters": {"kegboard.flow0": {"reading": -3, "carry": 0}}, '
                              '"controllers": {}, "pending": []}', "a bad meter entry")):
            write_file(os.path.join(self.state, "meters.json"), content)
            c = self.core()
            c.wait_line(r"WARNING .*Ignoring .*/meters\.json: %s; every meter starts from its first reading" % why)
            # Start-up went on: the first reading is a baseline, as without the file.
            self.assertEqual(self.pour(c, 700, 750)["ticks"], 50)
            self.assertEqual(c.stop(), 0)
            self.assertEqual(meters_json(c)["meters"][METER]["reading"], 750)
            os.unlink(c.drinks_path)

    def test_pending_drink_of_a_cut_durable_step(self):
        """A crash between meters.json's intent and the drink's write: the drink is not in
        drinks.log, so its state is not applied and its ticks count again; one found in drinks.log
        has its state applied."""
        c = self.core()
        self.pour(c, 1000, 1200)
        self.assertEqual(c.stop(), 0)
        doc = meters_json(c)
        written = c.drinks()[0]["uuid"]
        doc["meters"][METER] = {"reading": 1000, "carry": 0}
        doc["pending"] = [{"uuid": written, "meter": METER, "reading": 1200, "carry": 0},
                          {"uuid": "0b0e2a44-62a5-4e3d-9d6b-3c4c5d6e7f80", "meter": METER, "reading": 1500,
                           "carry": 0}]
        write_file(os.path.join(self.state, "meters.json"), json.dumps(doc))
        c = self.core()
        c.wait_line(r"Drink %s was written before the last stop: meter %s is accounted up to 1200" % (written, METER))
        c.wait_line(r"Drink 0b0e2a44-62a5-4e3d-9d6b-3c4c5d6e7f80 was never written")
        self.assertEqual(self.pour(c, 1500)["ticks"], 300)
        self.assertEqual(ticks(c), [200, 300])

    def test_board_reset_mid_flow_carry_survives_a_crash(self):
        """A board reset in the middle of a flow, then a crash before the flow ends: the ticks
        before the reset are gone from the board's counter, so meters.json carries them."""
        c = self.core()
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="KB-1", uptime_ms=0,
                    board_reset=True)
        c.conn.send("MeterUpdate", meter_name=METER, reading=400)
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="KB-1", uptime_ms=0,
                    board_reset=True)
        c.conn.send("MeterUpdate", meter_name=METER, reading=30)
        c.conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 430, what="430 ticks")
        self.assertEqual(meters_json(c)["meters"][METER], {"reading": 0, "carry": 400})
        c.kill()
        c = self.core()
        c.wait_line(r"Meter %s: 400 ticks of a flow lost by the last run are a flow again" % METER)
        c.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="KB-1", uptime_ms=2000)
        self.assertEqual(self.pour(c, 50)["ticks"], 450)
        self.assertEqual(ticks(c), [450])


if __name__ == "__main__":
    kbtest.main()
