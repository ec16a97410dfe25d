"""kegboard_daemon (and the Kegboard tools) without --kegboard_device, on a umockdev testbed: the port
is chosen through libudev by the rules of udev/70-kegboard.rules (known USB ids on ttyUSB*/ttyACM*, the
KEGBOT_KEGBOARD=1 opt-in on any tty, never an RFID reader's port), its udev identity is logged, and
with no such port the daemon waits for one to be plugged in instead of exiting. The port's pty master
stands for the board. Runs under umockdev-wrapper (the script re-executes itself); no root needed."""
import os
import re
import subprocess
import unittest

import umocktest

umocktest.wrap()

import kbtest  # noqa: E402
import kbd  # noqa: E402


class DiscoveryTest(umocktest.TestbedCase):
    def add_tty(self, port, kernel, vendor, product, serial=None, extra=None):
        path, rec = umocktest.usb_tty(port, kernel, vendor, product, serial=serial, extra=extra)
        self.tb.add(rec)
        return path

    def add_non_candidates(self):
        self.add_tty(2, "ttyUSB0", "0403", "6010", serial="OTHER1")                 # another FTDI product
        self.add_tty(3, "ttyUSB1", "0403", "6015", serial="RFID01", extra={"KEGBOT_RFID": "1"})
        _, rec = umocktest.platform_tty("ttyS4")                                     # no opt-in
        self.tb.add(rec)

    def daemon(self, *flags):
        d = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kb_core_addr=127.0.0.1:%d" % self.core.port,
                         "--probe_seconds=30"] + list(flags), env=umocktest.child_env(), name="kegboard_daemon")
        self.addCleanup(d.kill)
        return d

    def hello_on(self, devnode, d):
        """The board answers: a boot hello on the port's master; the daemon identifies it. (Written
        once the port is open: opening flushes what was waiting.)"""
        d.wait_line(r"INFO +\(kegboard\) %s: opened at 115200 baud, probing for a Kegboard$" % re.escape(devnode))
        master = self.tb.master(devnode)
        os.write(master, kbd.hello(firmware_version=18, serial="KB-DISC-0001"))
        d.wait_line(r"Found a Kegboard! Firmware version 18, serial 'KB-DISC-0001'")
        self.core.wait_message(lambda m: m.get("event") == "ControllerConnectedEvent", what="the board announced")
        msg = self.core.events("ControllerConnectedEvent")[0]["data"]
        self.assertEqual(msg["device"], devnode)

    def test_known_id_port_is_chosen(self):
        self.add_non_candidates()
        self.add_tty(4, "ttyACM0", "2341", "0043", serial="7523733353635171D1E1")
        d = self.daemon()
        d.wait_line(r"INFO +\(kegboard\) Kegboard port /dev/ttyACM0: Test Serial ttyACM0 \(2341:0043\), serial "
                    r"7523733353635171D1E1$")
        self.hello_on("/dev/ttyACM0", d)
        self.assertFalse([l for l in d.output() if re.search(r"ttyUSB|ttyS4", l)])
        self.assertEqual(d.stop(), 0)

    def test_waits_for_a_board(self):
        self.add_non_candidates()
        d = self.daemon()
        d.wait_line(r"INFO +\(kegboard\) Waiting for a Kegboard to be plugged in\.$")
        # A port that is no Kegboard candidate changes nothing ...
        self.add_tty(5, "ttyUSB2", "1234", "5678")
        # ... and the opt-in works for a platform UART too.
        path, rec = umocktest.platform_tty("ttyAMA0", extra={"KEGBOT_KEGBOARD": "1"})
        self.tb.add(rec)
        d.wait_line(r"INFO +\(kegboard\) Kegboard port /dev/ttyAMA0: no USB identity \(not a USB device\)$")
        self.hello_on("/dev/ttyAMA0", d)
        self.assertFalse([l for l in d.output() if "ttyUSB2" in l])
        self.assertTrue(d.alive())
        self.assertEqual(d.stop(), 0)

    def test_plugged_in_later_usb_board(self):
        d = self.daemon()
        d.wait_line(r"Waiting for a Kegboard to be plugged in\.$")
        self.assertTrue(d.alive())
        self.add_tty(6, "ttyUSB3", "1a86", "7523")
        d.wait_line(r"Kegboard port /dev/ttyUSB3: Test Serial ttyUSB3 \(1a86:7523\)$")
        self.hello_on("/dev/ttyUSB3", d)
        self.assertEqual(d.stop(), 0)

    def test_stop_while_waiting(self):
        d = self.daemon()
        d.wait_line(r"Waiting for a Kegboard to be plugged in\.$")
        self.assertEqual(d.stop(), 0)

    def test_monitor_picks_the_port_or_says_none(self):
        r = kbtest.run([kbtest.binary("kegboard_monitor")], env=umocktest.child_env(), timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("No Kegboard found: no serial port matches the Kegboard udev rules", r.stderr)
        self.add_tty(7, "ttyACM1", "2a03", "0042", serial="SRL1")
        p = kbtest.Proc([kbtest.binary("kegboard_monitor")], env=umocktest.child_env(), name="kegboard_monitor")
        self.addCleanup(p.kill)
        p.wait_line(r"Kegboard port /dev/ttyACM1: Test Serial ttyACM1 \(2a03:0042\), serial SRL1$")
        p.wait_line(r"Opened /dev/ttyACM1 at 115200 baud$")
        os.write(self.tb.master("/dev/ttyACM1"), kbd.hello(serial="SRL1"))
        p.wait_line(r"hello .*serial_number=\"?SRL1", key="stdout")
        self.assertEqual(p.stop(), 0)



class LinkTest(unittest.TestCase):
    def test_links_libudev(self):
        out = subprocess.run(["ldd", kbtest.binary("kegboard_daemon")], capture_output=True, text=True).stdout
        self.assertIn("libudev", out)


if __name__ == "__main__":
    kbtest.main()
