"""kegboard_daemon --start_boards (what kegbot-boards.service runs when kegbot.target starts) on a
umockdev testbed, against a private bus whose org.freedesktop.systemd1 is a stand-in that records
the StartUnit calls (fake_systemd.py): every RFID reader udev nominated (KEGBOT_RFID=1) gets the
rfid-reader@ instance 70-kegbot-rfid.rules put into its SYSTEMD_WANTS (hidraw and tty by kernel name,
an evdev reader as input-<name>); a device that is not nominated, or vetoed, gets none, whatever
else it wants. Runs under umockdev-wrapper (the script re-executes itself); no root needed."""
import os
import re
import umocktest

umocktest.wrap()

import kbtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
READERS = ["rfid-reader@hidraw0.service", "rfid-reader@input-event5.service", "rfid-reader@ttyUSB0.service"]


class StartBoardsTest(umocktest.TestbedCase):
    def setUp(self):
        super().setUp()
        socket = os.path.join(self.dir, "system_bus")
        self.address = "unix:path=" + socket
        # A bus of the session type: the stand-in may own any name on it.
        self.bus = kbtest.Proc(["dbus-daemon", "--session", "--nofork", "--nopidfile", "--nosyslog",
                                "--print-address", "--address=" + self.address], name="dbus-daemon")
        self.addCleanup(self.bus.stop)
        self.bus.wait_line(r"^unix:path=" + re.escape(socket), key="stdout", timeout=10)

    def systemd(self, *fail):
        s = kbtest.Proc(["/usr/bin/python3", os.path.join(HERE, "fake_systemd.py")] + list(fail),
                        env=self.env(), name="fake-systemd")
        self.addCleanup(s.stop)
        s.wait_line(r"^ready$", key="stdout", timeout=10)
        return s

    def env(self):
        e = {"DBUS_SYSTEM_BUS_ADDRESS": self.address}
        e.update(umocktest.child_env())
        return e

    def add_devices(self):
        # Nominated readers, with what 70-kegbot-rfid.rules leaves in udev's database.
        _, rec = umocktest.hidraw(2, "hidraw0", "06c2", "0031", serial="RFID23", extra={
            "KEGBOT_RFID": "1", "SYSTEMD_WANTS": "rfid-reader@hidraw0.service"})
        self.tb.add(rec)
        _, rec = umocktest.usb_tty(3, "ttyUSB0", "0403", "6015", serial="DN01ABCD", extra={
            "KEGBOT_RFID": "1", "SYSTEMD_WANTS": "rfid-reader@ttyUSB0.service"})
        self.tb.add(rec)
        # A keyboard-wedge reader: its event node wants the input- instance (beside another rule's
        # unit); the inputN parent the local rule opted in too wants nothing.
        _, _, rec = umocktest.input_event_node(5, 5, "ffff", "0035", extra={
            "KEGBOT_RFID": "1", "ID_INPUT_KEYBOARD": "1",
            "SYSTEMD_WANTS": "kegbot-test-other.service rfid-reader@input-event5.service"},
            parent_extra={"KEGBOT_RFID": "1", "ID_INPUT_KEYBOARD": "1"})
        self.tb.add(rec)
        # Not nominated: a Kegboard's port (it wants its own daemon, not a reader), a tty vetoed
        # with KEGBOT_RFID=0, a UART nobody opted in.
        _, rec = umocktest.usb_tty(4, "ttyACM0", "2341", "0043", extra={
            "SYSTEMD_WANTS": "kegboard-daemon@ttyACM0.service"})
        self.tb.add(rec)
        _, rec = umocktest.usb_tty(6, "ttyUSB1", "0403", "6015", serial="VETO01", extra={
            "KEGBOT_RFID": "0", "SYSTEMD_WANTS": "rfid-reader@ttyUSB1.service"})
        self.tb.add(rec)
        _, rec = umocktest.platform_tty("ttyS4")
        self.tb.add(rec)

    def run_start_boards(self):
        d = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--start_boards"], env=self.env(), name="kegboard_daemon")
        self.addCleanup(d.kill)
        return d, d.wait(timeout=20)

    def started(self, s):
        """The StartUnit calls, once the stand-in has answered a Ping sent after them."""
        r = kbtest.run(["busctl", "--address=" + self.address, "call", "org.freedesktop.systemd1",
                    "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "Ping"],
                   env=self.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        s.wait_line(r"^pong$", key="stdout")
        return [l.split(" ", 1)[1] for l in s.output("stdout") if l.startswith("StartUnit ")]

    def test_starts_the_nominated_readers(self):
        self.add_devices()
        s = self.systemd()
        d, rc = self.run_start_boards()
        self.assertEqual(rc, 0, "\n".join(d.output()))
        self.assertEqual(self.started(s), [u + " replace" for u in READERS])
        for u in READERS:
            d.wait_line(r"INFO +\(kegboard\) Started %s$" % re.escape(u))
        d.wait_line(r"INFO +\(kegboard\) No Kegboard is plugged in \(/dev/kegboard is empty\)$")

    def test_no_reader(self):
        _, rec = umocktest.usb_tty(6, "ttyUSB1", "0403", "6015", extra={
            "KEGBOT_RFID": "0", "SYSTEMD_WANTS": "rfid-reader@ttyUSB1.service"})
        self.tb.add(rec)
        s = self.systemd()
        d, rc = self.run_start_boards()
        self.assertEqual(rc, 0, "\n".join(d.output()))
        d.wait_line(r"INFO +\(kegboard\) No RFID reader is plugged in")
        self.assertEqual(self.started(s), [])

    def start_with_error(self, unit, error, status):
        """Every reader asked for although systemd answers the start of 'unit' with 'error'; the
        run's exit status is 'status'. Returns the daemon."""
        self.add_devices()
        s = self.systemd("%s=%s" % (unit, error))
        d, rc = self.run_start_boards()
        self.assertEqual(rc, status, "\n".join(d.output()))
        self.assertEqual(self.started(s), [u + " replace" for u in READERS])
        d.wait_line(r"Started rfid-reader@ttyUSB0\.service$")
        return d

    def test_a_failed_start_fails_the_run_after_the_others(self):
        d = self.start_with_error("rfid-reader@input-event5.service", "org.freedesktop.DBus.Error.NoReply", 1)
        d.wait_line(r"ERROR +\(kegboard\) Cannot start rfid-reader@input-event5\.service: Cannot start "
                    r"rfid-reader@input-event5\.service\.$")

    def test_a_unit_not_installed_is_no_failure(self):
        # kegbot-extras removed while a reader stays plugged in: udev's database still wants its unit.
        d = self.start_with_error("rfid-reader@hidraw0.service", "org.freedesktop.systemd1.NoSuchUnit", 0)
        d.wait_line(r"WARNING +\(kegboard\) Not starting rfid-reader@hidraw0\.service: no such unit$")


if __name__ == "__main__":
    kbtest.main()
