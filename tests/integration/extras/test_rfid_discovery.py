"""rfid_daemon in discovery mode (no --rfid_device) on a umockdev testbed: enumeration of Phidgets,
opted-in ttys and keyboard event nodes, the 1024 and the non-candidates left alone, hotplug (remove,
add again, a duplicate add, a veto by change), the empty start, and --rfid_backend narrowing the kinds
(rfid-readers.md section 14.3, scenarios 46-52). Every node is a pty whose master stands for the
device. Runs under umockdev-wrapper (the script re-executes itself); no root needed."""
import fcntl
import os
import re
import select
import time

import umocktest

umocktest.wrap()

import kbtest  # noqa: E402
from rfidtest import Rfid, RfidCase, id12_frame, token_event, typed  # noqa: E402

# The report descriptor of rfid-readers.md section 2.2 (8-byte input and output reports).
DESCRIPTOR = "06 00 ff 09 01 a1 01 15 00 26 ff 00 75 08 95 08 09 01 81 02 95 08 09 01 91 02 c0".replace(" ", "")
ANTENNA = bytes.fromhex("000800000000000000")
CARD = "0415ab23cd"


def read_master(fd, want, timeout=5.0):
    """Reads from a pty master until 'want' has been seen; returns everything read."""
    got = b""
    deadline = time.monotonic() + timeout * kbtest.SLOW
    while want not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("the device never received %s; got %s" % (want.hex(), got.hex()))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                got += os.read(fd, 4096)
            except BlockingIOError:
                pass
    return got


def drain(fd):
    got = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            return got
        if not chunk:
            return got
        got += chunk


class DiscoveryTest(umocktest.TestbedCase, RfidCase):
    def add_phidget(self, port=2, kernel="hidraw0", product="0031"):
        path, rec = umocktest.hidraw(port, kernel, "06c2", product, serial="123456", bcd="0201",
                                     descriptor=DESCRIPTOR)
        self.tb.add(rec)
        return path

    def add_testbed(self):
        self.phidget = self.add_phidget()
        self.tty, rec = umocktest.usb_tty(3, "ttyUSB0", "0403", "6015", serial="DN01ABCD", extra={"KEGBOT_RFID": "1"})
        self.tb.add(rec)
        self.plain_tty, rec = umocktest.usb_tty(4, "ttyUSB1", "0403", "6001", serial="FT000001")
        self.tb.add(rec)
        self.event, self.input, rec = umocktest.input_event_node(
            5, 5, "ffff", "0035", extra={"KEGBOT_RFID": "1", "ID_INPUT_KEYBOARD": "1"},
            parent_extra={"KEGBOT_RFID": "1", "ID_INPUT_KEYBOARD": "1"})
        self.tb.add(rec)
        self.r1024 = self.add_phidget(port=6, kernel="hidraw1", product="0034")

    def daemon(self, *flags):
        d = Rfid(self.dir, "--token_hold_ms=300", *flags, port=self.core.port, env=umocktest.child_env())
        self.addCleanup(d.close)
        return d

    def attached(self, d):
        return [l for l in d.output("stderr") if "RFID device attached:" in l]

    # 46
    def test_enumeration(self):
        self.add_testbed()
        master = self.tb.master("/dev/hidraw0")
        d = self.daemon()
        # READY=1 comes after the scan, with the count of readers served.
        d.notify.wait("READY", r"^1$")
        d.notify.wait("STATUS", r"^3 RFID reader\(s\)$")
        d.wait_line(r"RFID device attached: /dev/hidraw0 \(PhidgetRFID 1023 06c2:0031, serial 123456, firmware 201\)$")
        d.wait_line(r"RFID device attached: /dev/ttyUSB0 \(ID-12 serial reader, 9600 baud\)$")
        d.wait_line(r"RFID device attached: /dev/input/event5 \(keyboard-wedge reader\)$")
        d.wait_line(r"INFO +\(rfid\) Ignoring /dev/hidraw1: PhidgetRFID 1024 is not supported$")
        self.assertEqual(len(self.attached(d)), 3, self.attached(d))
        self.assertEqual(read_master(master, ANTENNA)[:9], ANTENNA)
        self.assertFalse([l for l in d.output() if "ttyUSB1" in l])
        self.assertEqual(d.stop(), 0)

    # 47, 52
    def test_three_readers(self):
        self.add_testbed()
        phidget = self.tb.master("/dev/hidraw0")
        tty = self.tb.master("/dev/ttyUSB0")
        event = self.tb.master("/dev/input/event5")
        d = self.daemon()
        d.notify.wait("READY", r"^1$")
        self.core.wait_connected()
        read_master(phidget, ANTENNA)
        os.write(phidget, bytes.fromhex("000415ab23cd0000"))
        self.wait_tokens(2)
        os.write(tty, id12_frame("6200e3a1c5"))
        self.wait_tokens(4)
        os.write(event, typed("0004567890"))
        tokens = self.wait_tokens(6)
        self.assertEqual(tokens, [token_event(CARD, "added"), token_event(CARD, "removed"),
                                  token_event("6200e3a1c5", "added"), token_event("6200e3a1c5", "removed"),
                                  token_event("0004567890", "added"), token_event("0004567890", "removed")])
        # The Phidget's LED followed the card: on, then off again.
        read_master(phidget, bytes.fromhex("000c00000000000000") + ANTENNA)
        self.assertEqual(d.stop(), 0)

    def test_only_keyboards(self):
        self.add_testbed()
        phidget = self.tb.master("/dev/hidraw0")
        d = self.daemon("--rfid_backend=keyboard")
        d.notify.wait("READY", r"^1$")
        d.notify.wait("STATUS", r"^1 RFID reader\(s\)$")
        d.wait_line(r"RFID device attached: /dev/input/event5 ")
        self.assertEqual(len(self.attached(d)), 1, self.attached(d))
        self.assertFalse([l for l in d.output() if "hidraw" in l or "ttyUSB" in l])
        self.assertEqual(d.stop(), 0)
        self.assertEqual(drain(phidget), b"")

    # 48
    def test_remove_and_add_again(self):
        self.add_testbed()
        phidget = self.tb.master("/dev/hidraw0")
        tty = self.tb.master("/dev/ttyUSB0")
        d = self.daemon("--tag_lost_ms=5000")
        d.notify.wait("READY", r"^1$")
        self.core.wait_connected()
        read_master(phidget, ANTENNA)
        os.write(phidget, bytes.fromhex("000415ab23cd0000"))
        self.wait_tokens(1)
        self.tb.uevent(self.phidget, "remove")
        self.assertEqual(self.wait_tokens(2), [token_event(CARD, "added"), token_event(CARD, "removed")])
        d.wait_line(r"INFO +\(rfid\) RFID device detached: /dev/hidraw0$")
        self.tb.remove(self.phidget, "/dev/hidraw0")
        # The others keep working.
        os.write(tty, id12_frame("6200e3a1c5"))
        self.wait_tokens(4)
        self.assertTrue(d.alive())
        # Plugged in again: attached again, a new antenna write. (umockdev 0.17 cannot bring back a
        # node it has removed, so the replugged reader gets the next hidraw number, as it may on a
        # real system too.)
        self.add_phidget(port=7, kernel="hidraw2")
        d.wait_line(r"RFID device attached: /dev/hidraw2 \(PhidgetRFID 1023 06c2:0031, serial 123456, firmware 201\)$")
        read_master(self.tb.master("/dev/hidraw2"), ANTENNA)
        self.assertEqual(d.stop(), 0)

    # 49
    def test_duplicate_add(self):
        self.add_testbed()
        phidget = self.tb.master("/dev/hidraw0")
        d = self.daemon()
        d.notify.wait("READY", r"^1$")
        read_master(phidget, ANTENNA)
        self.tb.uevent(self.phidget, "add")
        # Events are handled in order: once the 1024's second add was seen, the duplicate was too.
        self.tb.uevent(self.r1024, "add")
        kbtest.wait_until(lambda: len([l for l in d.output() if "Ignoring /dev/hidraw1" in l]) == 2,
                          what="the second add of the 1024")
        self.assertEqual(len([l for l in self.attached(d) if "/dev/hidraw0" in l]), 1)
        self.assertFalse([l for l in d.output() if "in use by another" in l])
        self.assertEqual(drain(phidget), b"")
        self.assertEqual(d.stop(), 0)

    # 50
    def test_veto_by_change(self):
        self.add_testbed()
        d = self.daemon()
        d.notify.wait("READY", r"^1$")
        self.tb.change(self.tty, "KEGBOT_RFID", "0")
        d.wait_line(r"INFO +\(rfid\) RFID device detached: /dev/ttyUSB0$")
        self.tb.change(self.tty, "KEGBOT_RFID", "1")
        kbtest.wait_until(lambda: len([l for l in self.attached(d) if "/dev/ttyUSB0" in l]) == 2,
                          what="the tty attached again")
        self.core.wait_connected()
        os.write(self.tb.master("/dev/ttyUSB0"), id12_frame(CARD))
        self.wait_tokens(1)
        self.assertEqual(d.stop(), 0)

    def test_v1_firmware(self):
        """A v1 reader with firmware below 104 gets one all-zero output report at attach; from 104 on,
        and on every v1, nothing else is ever written (section 2.6)."""
        old, rec = umocktest.hidraw(2, "hidraw0", "06c2", "0030", serial="V1OLD", bcd="0103", descriptor=DESCRIPTOR)
        self.tb.add(rec)
        new, rec = umocktest.hidraw(3, "hidraw1", "06c2", "0030", serial="V1NEW", bcd="0104", descriptor=DESCRIPTOR)
        self.tb.add(rec)
        m_old, m_new = self.tb.master("/dev/hidraw0"), self.tb.master("/dev/hidraw1")
        d = self.daemon("--toggle_output")
        d.notify.wait("STATUS", r"^2 RFID reader\(s\)$")
        d.wait_line(r"RFID device attached: /dev/hidraw0 \(PhidgetRFID 1023 06c2:0030, serial V1OLD, firmware 103\)$")
        d.wait_line(r"RFID device attached: /dev/hidraw1 \(PhidgetRFID 1023 06c2:0030, serial V1NEW, firmware 104\)$")
        self.assertEqual(read_master(m_old, bytes(9)), bytes(9))
        self.core.wait_connected()
        os.write(m_new, bytes.fromhex("000415ab23cd0000"))
        self.wait_tokens(2)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(drain(m_old), b"")
        self.assertEqual(drain(m_new), b"")

    # 7.6: a reader another rfid_daemon holds is skipped until its next change
    def test_locked_reader_is_skipped(self):
        self.add_testbed()
        with open("/dev/ttyUSB0", "rb", buffering=0) as held:      # the testbed's node (the preload)
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            d = self.daemon()
            d.wait_line(r"WARNING +\(rfid\) /dev/ttyUSB0: in use by another rfid_daemon$")
            d.notify.wait("READY", r"^1$")
            d.notify.wait("STATUS", r"^2 RFID reader\(s\)$")
            self.assertFalse([l for l in self.attached(d) if "/dev/ttyUSB0 " in l])
            self.assertTrue(d.alive())
        self.tb.uevent(self.tty, "change")
        d.wait_line(r"RFID device attached: /dev/ttyUSB0 ")
        d.notify.wait("STATUS", r"^3 RFID reader\(s\)$")
        os.write(self.tb.master("/dev/ttyUSB0"), id12_frame("6200e3a1c5"))
        self.assertEqual(self.wait_tokens(2), [token_event("6200e3a1c5", "added"), token_event("6200e3a1c5", "removed")])
        self.assertEqual(d.stop(), 0)

    # 7.4 step 4: at most 8 readers at a time
    def test_at_most_eight_readers(self):
        ttys = {}
        for i in range(9):
            path, rec = umocktest.usb_tty(2 + i, "ttyUSB%d" % i, "0403", "6015", serial="RF%06d" % i,
                                          extra={"KEGBOT_RFID": "1"})
            self.tb.add(rec)
            ttys["/dev/ttyUSB%d" % i] = path
        d = self.daemon()
        d.notify.wait("READY", r"^1$")
        d.notify.wait("STATUS", r"^8 RFID reader\(s\)$")
        left_out = d.wait_line(r"WARNING +\(rfid\) Ignoring (/dev/ttyUSB\d): already serving 8 readers$").group(1)
        self.assertEqual(len(self.attached(d)), 8, self.attached(d))
        self.assertFalse([l for l in self.attached(d) if left_out + " " in l])
        # One goes away: the one left out is served at its next change event.
        gone = next(n for n in sorted(ttys) if n != left_out)
        self.tb.remove(ttys[gone], gone)
        d.wait_line(r"RFID device detached: %s$" % re.escape(gone))
        self.tb.uevent(ttys[left_out], "change")
        d.wait_line(r"RFID device attached: %s " % re.escape(left_out))
        d.notify.wait("STATUS", r"^8 RFID reader\(s\)$")
        os.write(self.tb.master(left_out), id12_frame("6200e3a1c5"))
        self.assertEqual(self.wait_tokens(2), [token_event("6200e3a1c5", "added"), token_event("6200e3a1c5", "removed")])
        self.assertEqual(d.stop(), 0)

    # 51
    def test_empty_start(self):
        d = self.daemon()
        d.wait_line(r"INFO +\(rfid\) Waiting for an RFID reader\.$")
        d.notify.wait("READY", r"^1$")
        d.notify.wait("STATUS", r"^Waiting for an RFID reader$")
        path = self.add_phidget()
        d.wait_line(r"RFID device attached: /dev/hidraw0 ")
        read_master(self.tb.master("/dev/hidraw0"), ANTENNA)
        d.notify.wait("STATUS", r"^1 RFID reader\(s\)$")
        n = len([l for l in d.output() if "Waiting for an RFID reader." in l])
        self.tb.remove(path, "/dev/hidraw0")
        d.wait_line(r"RFID device detached: /dev/hidraw0$")
        kbtest.wait_until(lambda: len([l for l in d.output() if "Waiting for an RFID reader." in l]) == n + 1,
                          what="waiting again")
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    kbtest.main()
