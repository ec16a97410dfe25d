"""kegboard_monitor (programs-and-flags.md section 6) against kegboard_sim and capture files."""
import json
import os
import signal
import unittest

import kbtest
from kbtest import Proc, Sim, TempDir
import kbd

SERIAL = "KB-0123-4567"
TIME = r"^\d\d:\d\d:\d\d\.\d\d\d "


def monitor(*flags):
    return Proc([kbtest.binary("kegboard_monitor")] + list(flags), name="kegboard_monitor")


class MonitorTest(unittest.TestCase):
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
        s = Sim(self.tmp, "--serial_number=" + SERIAL, *flags)
        self.procs.append(s)
        return s

    def test_live_board(self):
        sim = self.sim("--thermo=thermo-6b0316621d4cff28=4.5")
        m = monitor("--kegboard_device=" + sim.link, "--hex")
        self.procs.append(m)
        m.wait_line(TIME + r"hello firmware_version=18 serial_number=KB-0123-4567 uptime_ms=0 uptime_days=0 hex=4b42535020",
                    key="stdout")
        sim.wait_line(r" RX ping crc=ok$", key="stdout")      # --ping is the default
        sim.cmd("ticks flow0 21")
        sim.cmd("swipe 0415AB23CD")
        sim.cmd("raw " + (b"garbage!" + kbd.meter_status("flow1", 5, crc=0x1111)).hex())
        m.wait_line(TIME + r"meter_status meter_name=flow0 meter_reading=21 hex=", key="stdout")
        m.wait_line(TIME + r"auth_token device=core.rfid token=cd23ab1504 token_string=0415ab23cd status=1 ", key="stdout")
        m.wait_line(TIME + r"temperature_reading sensor_name=thermo-6b0316621d4cff28 sensor_reading=4.5 ", key="stdout",
                    timeout=5)
        m.wait_line(TIME + r"error bad_crc$", key="stdout")
        m.wait_line(TIME + r"garbage bytes=8$", key="stdout")
        self.assertEqual(m.stop(), 0)

    def test_replay_capture(self):
        vec = kbtest.VECTORS_DIR
        with open(os.path.join(vec, "capture-one_flow_active.expected.json")) as f:
            expected = json.load(f)
        r = kbtest.run([kbtest.binary("kegboard_monitor"),
                        "--kegboard_device=" + os.path.join(vec, "capture-one_flow_active.bin")])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), expected["message_count"])
        for line, msg in zip(lines, expected["messages"]):
            self.assertRegex(line, TIME + msg["message"] + r"( |$)")
        self.assertRegex(lines[0], TIME + r"hello firmware_version=3$")
        last = expected["messages"][-1]["fields"]["meter_reading"]
        self.assertRegex(lines[-1], TIME + r"meter_status meter_name=flow1 meter_reading=%d$" % last)

    def test_replay_stream_with_errors(self):
        vec = kbtest.VECTORS_DIR
        with open(os.path.join(vec, "expected.json")) as f:
            expected = json.load(f)
        r = kbtest.run([kbtest.binary("kegboard_monitor"), "--kegboard_device=" + os.path.join(vec, "stream.bin")])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [l[13:] for l in r.stdout.splitlines()]
        frames = [l for l in lines if not l.startswith(("error ", "garbage "))]
        self.assertEqual(len(frames), len(expected["messages"]))
        errors = [l[6:] for l in lines if l.startswith("error ")]
        self.assertEqual(errors, ["bad_crc", "bad_crc", "oversize_length", "bad_crc"])

    def test_nowait_missing_device(self):
        r = kbtest.run([kbtest.binary("kegboard_monitor"), "--nowait",
                        "--kegboard_device=" + os.path.join(self.tmp, "ttyNone")])
        self.assertEqual(r.returncode, 1)
        self.assertIn("ttyNone", r.stderr)

    def test_wait_for_device_and_after_unplug(self):
        link = os.path.join(self.tmp, "ttyKB0")
        m = monitor("--kegboard_device=" + link, "--noping")
        self.procs.append(m)
        m.wait_line(r"INFO .*Waiting for %s$" % link)
        sim = self.sim()
        m.wait_line(TIME + r"hello firmware_version=18 ", key="stdout")
        self.assertTrue(m.alive())
        # --noping: the simulator handles what arrived before its boot hello right after sending it,
        # so once it has answered a later command, no ping can be pending.
        c = sim.count("stdout")
        sim.cmd("status")
        sim.wait_line(r"^\d+ STATUS ", key="stdout", start=c)
        self.assertEqual(sim.events("RX"), [])
        sim.cmd("unplug")
        m.wait_line(r"device disconnected")
        sim.wait(5)
        n = m.count("stdout")
        self.sim()                          # a second board on the same link
        kbtest.wait_until(lambda: m.count("stdout") > n, what="hello from the second board")
        self.assertRegex(m.output("stdout")[-1], TIME + "hello ")
        m.signal(signal.SIGINT)
        self.assertEqual(m.wait(5), 0)


if __name__ == "__main__":
    kbtest.main()
