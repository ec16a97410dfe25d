"""Token to pour, end to end, for each kind of reader (issue 15 item 6): a card on a fake reader ->
rfid_daemon -> TokenAuthEvent -> kegbot_core (standalone, with a tokens file) authenticates the user
and opens the tap's valve -> kegboard_daemon switches relay 0 on kegboard_sim -> a pour on the
simulated board -> the drink carries the user. Readers: an ID-12 on a pty and a keyboard wedge behind
a FIFO (no root needed), a PhidgetRFID on FUSE (root and /dev/fuse, else skipped)."""
import os
import unittest

import kbtest
from rfidtest import FakeHidraw, FifoKeyboard, PtyReader, Rfid, id12_frame

import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "core"))
from coretest import Core, write_file  # noqa: E402

TAPS = """
[kegboard.flow0]
name = Main Tap
ticks_per_ml = 2.2
relay_name = kegboard.relay0
"""

TOKENS = """
[core.rfid:0415ab23cd]
username = dave

[core.rfid:0004567890]
username = erin
"""


class PourTest(unittest.TestCase):
    def setUp(self):
        self.tmp = kbtest.TempDir()
        self.dir = self.tmp.__enter__()
        self.addCleanup(self.tmp.__exit__, None, None, None)
        taps = write_file(os.path.join(self.dir, "taps.ini"), TAPS)
        tokens = write_file(os.path.join(self.dir, "tokens.ini"), TOKENS)
        self.core = Core(self.dir, taps=taps, tokens=tokens)
        self.addCleanup(self.core.kill)
        self.core.wait_line(r"\(AuthenticationManager\) Loaded 2 tokens from ")
        self.sim = kbtest.Sim(self.dir)
        self.addCleanup(self.sim.kill)
        self.board = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kegboard_device=" + self.sim.link,
                                  "--kb_core_addr=127.0.0.1:%d" % self.core.port], name="kegboard_daemon")
        self.addCleanup(self.board.kill)
        self.board.wait_line(r"Found a Kegboard! .* name kegboard$", timeout=10)
        # A kegnet listener sees what the core publishes (flows, relay events).
        self.listener = self.core.connect()
        self.addCleanup(self.listener.close)

    def reader_daemon(self, *flags):
        d = Rfid(self.dir, *flags, port=self.core.port)
        self.addCleanup(d.close)
        d.notify.wait("READY", r"^1$")
        return d

    def pour(self, swipe, user):
        swipe()
        self.listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["username"] == user,
                                 timeout=10, what="a flow for %s" % user)
        # The valve opens: the core's relay event reached the board through kegboard_daemon.
        self.sim.wait_line(r" RELAY id=0 state=on cause=command$", key="stdout", timeout=10)
        self.sim.cmd("pour flow0 440")
        self.listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 440
                                 and m["data"]["username"] == user, timeout=10, what="440 ticks for %s" % user)
        # The stop ends the flow: the drink is recorded with its user, the valve is closed.
        self.assertEqual(self.core.stop(), 0)
        drinks = self.core.drinks()
        self.assertEqual([(d["username"], d["meter_name"], d["ticks"]) for d in drinks],
                         [(user, "kegboard.flow0", 440)])
        self.sim.wait_line(r" RELAY id=0 state=off cause=command$", key="stdout", timeout=10)

    def test_id12(self):
        pty = PtyReader()
        self.addCleanup(pty.close)
        self.reader_daemon("--rfid_backend=id12", "--rfid_device=" + pty.path)
        self.pour(lambda: pty.send(id12_frame("0415ab23cd")), "dave")

    def test_keyboard(self):
        kbd = FifoKeyboard(self.dir)
        self.addCleanup(kbd.close)
        self.reader_daemon("--rfid_backend=keyboard", "--rfid_device=" + kbd.path)
        self.pour(lambda: kbd.type("0004567890"), "erin")

    def test_phidget(self):
        reader = FakeHidraw(self.dir)
        self.addCleanup(reader.close)
        self.reader_daemon("--rfid_backend=phidget", "--rfid_device=" + reader.path)
        self.pour(lambda: reader.cmd("tag 0415ab23cd"), "dave")


if __name__ == "__main__":
    kbtest.main()
