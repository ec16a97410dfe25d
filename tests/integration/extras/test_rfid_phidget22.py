"""rfid_daemon's optional phidget22 backend (rfid-readers.md section 5): the real source built a second
time with -DHAVE_PHIDGET22=1 against a fake libphidget22 steered through a FIFO (fake-phidget22.c),
run with --rfid_backend=phidget22, sending TokenAuthEvents to a fake core."""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
from rfidtest import RfidCase  # noqa: E402

FAKE = os.path.join(kbtest.BUILD_DIR, "tests", "integration", "extras", "rfid_daemon_fakephidget")


def fake_binary():
    if not os.access(FAKE, os.X_OK):
        raise AssertionError("rfid_daemon_fakephidget is not built")
    return FAKE


class RfidTest(RfidCase):
    def setUp(self):
        super().setUp()
        self.fifo = os.path.join(self.dir, "control")
        os.mkfifo(self.fifo)
        # O_RDWR never blocks on a FIFO and keeps it open for the fake library's reader.
        self.ctl = os.open(self.fifo, os.O_RDWR)
        self.addCleanup(os.close, self.ctl)
        self.log = os.path.join(self.dir, "phidget.log")

    def start(self, *flags, port=None):
        env = {"FAKE_PHIDGET_CONTROL": self.fifo, "FAKE_PHIDGET_LOG": self.log,
               "LD_LIBRARY_PATH": os.path.dirname(FAKE)}
        p = kbtest.Proc([fake_binary(), "--rfid_backend=phidget22", "--kb_core_addr=%d" % (port or self.core.port)]
                        + list(flags), env=env)
        self.addCleanup(p.kill)
        return p

    def cmd(self, text):
        os.write(self.ctl, (text + "\n").encode())

    def hw(self):
        try:
            with open(self.log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def test_tags_become_token_events(self):
        p = self.start("--toggle_output")
        p.wait_line(r"Waiting for an RFID reader", timeout=5)
        self.cmd("attach 31337")
        p.wait_line(r"INFO +\(rfid\) RFID device attached: 31337", timeout=5)
        kbtest.wait_until(lambda: "antenna 1" in self.hw(), what="antenna on")
        self.core.wait_connected()
        self.cmd("tag 0415AB23CD")
        self.core.wait_message(lambda m: m.get("event") == "TokenAuthEvent", what="added")
        self.cmd("lost 0415AB23CD")
        kbtest.wait_until(lambda: len(self.tokens()) >= 2, what="removed")
        self.assertEqual(self.tokens(), [
            {"meter_name": "__all_taps__", "auth_device_name": "core.rfid", "token_value": "0415ab23cd",
             "status": "added"},
            {"meter_name": "__all_taps__", "auth_device_name": "core.rfid", "token_value": "0415ab23cd",
             "status": "removed"}])
        # LED (channel 2) and output 1 follow the tag.
        kbtest.wait_until(lambda: "do1 0" in self.hw(), what="output 1 off")
        hw = [l for l in self.hw() if l.startswith("do")]
        self.assertEqual(hw, ["do2 1", "do1 1", "do2 0", "do1 0"])

        self.cmd("error 4098 Tag read failed")
        p.wait_line(r"WARNING +\(rfid\) Phidget error 4098: Tag read failed", timeout=5)
        self.cmd("detach")
        p.wait_line(r"INFO .*RFID device detached", timeout=5)
        self.cmd("attach 31337")
        kbtest.wait_until(lambda: self.hw().count("antenna 1") == 2, what="antenna on again")
        self.assertEqual(p.stop(), 0)
        kbtest.wait_until(lambda: "close rfid" in self.hw(), what="reader closed at exit")

    def test_tap_name_and_no_output(self):
        p = self.start("--tap_name=kegboard.flow1")
        self.cmd("attach 1")
        self.core.wait_connected()
        self.cmd("tag DEADBEEF01")
        self.core.wait_message(lambda m: m.get("event") == "TokenAuthEvent", what="token")
        self.assertEqual(self.tokens()[0]["meter_name"], "kegboard.flow1")
        kbtest.wait_until(lambda: "do2 1" in self.hw(), what="LED on")
        self.assertNotIn("open do1", self.hw())
        self.assertFalse([l for l in self.hw() if l.startswith("do1")])
        self.assertEqual(p.stop(), 0)

    def test_outbox_while_core_is_down(self):
        port = kbtest.free_port()
        p = self.start(port=port)
        self.cmd("attach 1")
        p.wait_line(r"RFID device attached", timeout=5)
        self.cmd("tag aa01")
        self.cmd("lost aa01")
        p.wait_line(r"Tag lost: aa01", timeout=5)
        core = kbtest.FakeCore(port=port)
        self.addCleanup(core.close)
        # The first retry comes 5 s after the failed first attempt.
        core.wait_message(lambda m: m.get("data", {}).get("status") == "removed", timeout=15,
                          what="queued tokens")
        self.assertEqual([m["data"]["status"] for m in core.events("TokenAuthEvent")], ["added", "removed"])
        self.assertEqual(p.stop(), 0)

    def test_wait_flag_is_ignored(self):
        p = self.start("--phidget_wait_seconds=1")
        p.wait_line(r"WARNING +\(rfid\) --phidget_wait_seconds is obsolete and ignored", timeout=5)
        p.wait_line(r"Waiting for an RFID reader", timeout=5)
        # Still waiting after the old deadline: a reader plugged in later is served.
        self.cmd("attach 7")
        p.wait_line(r"RFID device attached: 7", timeout=5)
        self.assertTrue(p.alive())
        self.assertEqual(p.stop(), 0)

    def test_unusable_token_is_dropped(self):
        p = self.start()
        self.cmd("attach 1")
        p.wait_line(r"RFID device attached", timeout=5)
        self.core.wait_connected()
        self.cmd("tag 04:15:ab")
        p.wait_line(r"WARNING +\(rfid\) phidget22: ignoring unusable token", timeout=5)
        self.cmd("tag aa02")
        self.core.wait_message(lambda m: m.get("event") == "TokenAuthEvent", what="the good token")
        self.assertEqual([t["token_value"] for t in self.tokens()], ["aa02"])
        self.assertEqual(p.stop(), 0)

    def test_device_flag_is_refused(self):
        r = kbtest.run([fake_binary(), "--rfid_backend=phidget22", "--rfid_device=/dev/hidraw0"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("--rfid_device must be empty", r.stderr)

    def test_sighup_and_sigint(self):
        p = self.start()
        p.wait_line(r"Waiting for an RFID reader", timeout=5)
        p.signal(signal.SIGHUP)
        self.cmd("attach 2")
        p.wait_line(r"RFID device attached: 2", timeout=5)
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait(), 0)


if __name__ == "__main__":
    kbtest.main()
