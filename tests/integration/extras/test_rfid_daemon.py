"""rfid_daemon in instance mode with an ID-12 on a pty and a keyboard-wedge reader behind a FIFO
(rfid-readers.md section 14.3, scenarios 39-44), its flags (scenario 25), and what the shipped build
links (no vendor library). No root needed."""
import os
import re
import subprocess
import termios
import time

import kbtest
from rfidtest import FifoKeyboard, PtyReader, Rfid, RfidCase, id12_frame, input_event, token_event, EV_KEY, EV_SYN, \
    SYN_REPORT

CARD = "0415ab23cd"


class RfidTest(RfidCase):
    def daemon(self, *flags, port=None):
        d = Rfid(self.dir, *flags, port=port or self.core.port)
        self.addCleanup(d.close)
        return d


class SerialReaderTest(RfidTest):
    def setUp(self):
        super().setUp()
        self.pty = PtyReader()
        self.addCleanup(self.pty.close)

    def start(self, *flags, speed=9600):
        d = self.daemon("--rfid_backend=id12", "--rfid_device=" + self.pty.path, "--token_hold_ms=300", *flags)
        d.wait_line(r"INFO +\(rfid\) RFID device attached: %s \(ID-12 serial reader, %d baud\)$"
                    % (re.escape(self.pty.path), speed))
        d.notify.wait("READY", r"^1$")
        self.core.wait_connected()
        return d

    # 39
    def test_line_settings_and_presentation(self):
        d = self.start()
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = self.pty.termios()
        self.assertEqual((ispeed, ospeed), (termios.B9600, termios.B9600))
        self.assertEqual(cflag & termios.CSIZE, termios.CS8)
        self.assertFalse(cflag & (termios.PARENB | termios.CSTOPB | termios.CRTSCTS))
        self.assertEqual(cflag & (termios.CLOCAL | termios.CREAD), termios.CLOCAL | termios.CREAD)
        self.assertFalse(iflag & (termios.IXON | termios.IXOFF | termios.ICRNL))
        self.assertFalse(lflag & (termios.ICANON | termios.ECHO | termios.ISIG))
        self.assertEqual((cc[termios.VMIN], cc[termios.VTIME]), (1, 0))

        self.pty.send(id12_frame(CARD))
        self.wait_tokens(1)
        t0 = time.monotonic()
        self.wait_tokens(2)
        # Removed the hold time (300 ms) after the frame.
        self.assertGreater(time.monotonic() - t0, 0.15)
        self.assertEqual(self.tokens(), [token_event(CARD, "added"), token_event(CARD, "removed")])

        # A module that repeats the frame while the card is held: one presentation. (Frames 100 ms
        # apart are the scenario.)
        for _ in range(3):
            self.pty.send(id12_frame(CARD))
            time.sleep(0.1)
        self.wait_tokens(4)
        self.assertEqual(self.tokens()[2:], [token_event(CARD, "added"), token_event(CARD, "removed")])
        d.wait_line(r"INFO +\(rfid\) Tag lost: %s \(%s\)$" % (CARD, re.escape(self.pty.path)))
        self.assertEqual(d.stop(), 0)

    def test_speed(self):
        self.start("--id12_speed=2400", speed=2400)
        self.assertEqual(self.pty.termios()[4], termios.B2400)

    # 40
    def test_bad_frames(self):
        d = self.start()
        self.pty.send(id12_frame(CARD, checksum=0x55))
        d.wait_line(r"WARNING +\(rfid\) %s: bad_checksum: card 0415AB23CD, checksum 55, expected 54$"
                    % re.escape(self.pty.path))
        self.pty.send(b"\x00garbage\xff" + id12_frame("6200e3a1c5"))
        self.wait_tokens(1)
        f = id12_frame(CARD)
        self.pty.send(f[:8])
        time.sleep(0.05)        # the second half 50 ms later (the scenario)
        self.pty.send(f[8:])
        tokens = self.wait_tokens(4)
        self.assertEqual(tokens, [token_event("6200e3a1c5", "added"), token_event("6200e3a1c5", "removed"),
                                  token_event(CARD, "added"), token_event(CARD, "removed")])
        # Noise never warns at once (it came before the last card, whose removal is logged after it).
        d.wait_line(r"Tag lost: %s" % CARD)
        self.assertFalse([l for l in d.output() if "noise" in l])
        self.assertEqual(d.stop(), 0)
        d.wait_line(r"WARNING +\(rfid\) %s: 9 more noise in the last minute$" % re.escape(self.pty.path))

    # 41
    def test_unplug_with_token(self):
        d = self.start()
        self.pty.send(id12_frame(CARD))
        self.wait_tokens(1)
        self.pty.close()
        self.assertEqual(d.wait(5), 0)
        self.assertEqual(self.wait_tokens(2), [token_event(CARD, "added"), token_event(CARD, "removed")])
        d.wait_line(r"INFO +\(rfid\) RFID device detached: %s$" % re.escape(self.pty.path))

    def test_auto_backend_on_a_pty(self):
        # A pty is a tty udev does not know: the kind cannot be told.
        d = self.daemon("--rfid_device=" + self.pty.path)
        self.assertEqual(d.wait(), 2)
        d.wait_line(r"ERROR +\(rfid\) %s: cannot tell what kind of RFID reader this is; use --rfid_backend$"
                    % re.escape(self.pty.path))


class KeyboardTest(RfidTest):
    def start(self):
        self.kbd = FifoKeyboard(self.dir)
        self.addCleanup(self.kbd.close)
        d = self.daemon("--rfid_backend=keyboard", "--rfid_device=" + self.kbd.path, "--token_hold_ms=300")
        return d

    # 42
    def test_typed_card(self):
        d = self.start()
        d.wait_line(r"WARNING +\(rfid\) %s: cannot grab the keyboard: Inappropriate ioctl for device; typed card "
                    r"numbers may also reach the console$" % re.escape(self.kbd.path))
        d.wait_line(r"INFO +\(rfid\) RFID device attached: %s \(keyboard-wedge reader\)$" % re.escape(self.kbd.path))
        d.notify.wait("READY", r"^1$")
        self.core.wait_connected()
        self.kbd.type("0004567890")
        self.assertEqual(self.wait_tokens(2), [token_event("0004567890", "added"),
                                               token_event("0004567890", "removed")])
        self.assertEqual(d.stop(), 0)

    # 43
    def test_shifted_hex_and_bad_key(self):
        d = self.start()
        self.core.wait_connected()
        self.kbd.type("0415AB23CD")
        self.wait_tokens(1)
        self.kbd.type("12 34")
        d.wait_line(r"WARNING +\(rfid\) %s: bad_key: key code 57$" % re.escape(self.kbd.path))
        # A record split over two writes is decoded once.
        rec = b"".join([input_event(EV_KEY, 2, 1), input_event(EV_SYN, SYN_REPORT, 0),
                                        input_event(EV_KEY, 2, 0), input_event(EV_SYN, SYN_REPORT, 0),
                                        input_event(EV_KEY, 28, 1), input_event(EV_SYN, SYN_REPORT, 0)])
        self.kbd.send(rec[:30])
        d.wait_line(r"Tag lost: %s" % CARD)
        self.kbd.send(rec[30:])
        tokens = self.wait_tokens(4)
        self.assertEqual(tokens, [token_event(CARD, "added"), token_event(CARD, "removed"),
                                  token_event("1", "added"), token_event("1", "removed")])
        self.assertEqual(d.stop(), 0)

    # 44
    def test_writer_closes(self):
        d = self.start()
        d.notify.wait("READY", r"^1$")
        self.kbd.close()
        self.assertEqual(d.wait(5), 0)
        d.wait_line(r"INFO +\(rfid\) RFID device detached: ")


class FlagTest(RfidTest):
    # 25
    def test_flag_errors(self):
        node = os.path.join(self.dir, "node")
        for flags, message in [
                (["--tag_lost_ms=49"], r"--tag_lost_ms"),
                (["--tag_lost_ms=5001"], r"--tag_lost_ms"),
                (["--token_hold_ms=99"], r"--token_hold_ms"),
                (["--id12_speed=9601"], r"flag --id12_speed=9601: must be one of 1200, 2400"),
                (["--rfid_backend=serial"], r"--rfid_backend"),
                (["--rfid_backend=phidget22"], r"--rfid_backend=phidget22: this build has no libphidget22 support"),
                (["--rfid_backend=phidget22", "--rfid_device=" + node], r"--rfid_backend=phidget22")]:
            with self.subTest(flags=flags):
                r = kbtest.run([kbtest.binary("rfid_daemon")] + flags)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertRegex(r.stderr, r"Error: .*" + message)

    def test_obsolete_wait_flag(self):
        pty = PtyReader()
        self.addCleanup(pty.close)
        d = self.daemon("--phidget_wait_seconds=10", "--rfid_backend=id12", "--rfid_device=" + pty.path)
        d.wait_line(r"WARNING +\(rfid\) --phidget_wait_seconds is obsolete and ignored: readers are found through "
                    r"udev$")
        d.notify.wait("READY", r"^1$")
        self.assertEqual(d.stop(), 0)

    def test_missing_node(self):
        d = self.daemon("--rfid_device=" + os.path.join(self.dir, "nosuch"))
        self.assertEqual(d.wait(), 1)
        d.wait_line(r"ERROR +\(rfid\) .*/nosuch: No such file or directory$")

    def test_unopenable_node(self):
        node = os.path.join(self.dir, "dir")
        os.mkdir(node)
        d = self.daemon("--rfid_backend=id12", "--rfid_device=" + node)
        self.assertEqual(d.wait(), 1)
        d.wait_line(r"ERROR +\(rfid\) .*/dir: Is a directory$")

    def test_shipped_binary_needs_no_vendor_library(self):
        r = kbtest.run([kbtest.binary("rfid_daemon"), "--help"])
        self.assertEqual(r.returncode, 1)
        for flag in ("--rfid_device", "--rfid_backend", "--tag_lost_ms", "--token_hold_ms", "--id12_speed",
                     "toggle_output", "--tap_name", "--phidget_wait_seconds", "--kb_core_addr"):
            self.assertIn(flag, r.stdout)
        out = subprocess.run(["ldd", kbtest.binary("rfid_daemon")], capture_output=True, text=True).stdout
        self.assertNotIn("phidget", out)
        self.assertIn("libudev", out)


if __name__ == "__main__":
    kbtest.main()
