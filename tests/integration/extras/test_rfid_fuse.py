"""rfid_daemon against a PhidgetRFID 1023 served by FUSE (fake-hidraw), in instance mode: attach and
antenna, presentations and the LED/output state written whole, tag-lost timing, bad reports, v1 and
1024 readers, unplug, orderly stop, the outbox while the core is down, the silent-reader warning, the
lock, and the keyboard-wedge evdev stand-in (rfid-readers.md section 14.3, scenarios 26-38 and 45).
Needs root and /dev/fuse; skips, saying why, where they are missing."""
import re
import signal
import time

import kbtest
from rfidtest import FakeHidraw, Rfid, RfidCase, token_event

OFF = "00 00 00 00 00 00 00 00 00"
ANTENNA = "00 08 00 00 00 00 00 00 00"
PRESENT = "00 0c 00 00 00 00 00 00 00"
PRESENT_TOGGLE = "00 0e 00 00 00 00 00 00 00"
CARD = "0415ab23cd"


class FuseTest(RfidCase):
    def setUp(self):
        why = FakeHidraw.usable()
        if why:
            self.skipTest(why)
        super().setUp()

    def reader(self, *flags, evdev=False):
        r = FakeHidraw(self.dir, *flags, evdev=evdev)
        self.addCleanup(r.close)
        return r

    def daemon(self, reader, *flags, backend="phidget", port=None):
        d = Rfid(self.dir, "--rfid_backend=" + backend, "--rfid_device=" + reader.path, *flags,
                 port=port or self.core.port)
        self.addCleanup(d.close)
        return d

    def attached(self, *reader_flags, flags=()):
        """A v2 reader and a daemon on it, once the antenna is on and the daemon has reached the core."""
        r = self.reader(*reader_flags)
        d = self.daemon(r, *flags)
        r.wait_out(ANTENNA)
        self.core.wait_connected()
        return r, d

    # 26
    def test_attach(self):
        r = self.reader()
        d = self.daemon(r)
        r.wait_out(ANTENNA)
        self.assertEqual(r.outs()[0], ANTENNA)
        d.wait_line(r"INFO +\(rfid\) RFID device attached: %s \(PhidgetRFID 1023 06c2:0031\)$" % re.escape(r.path))
        d.notify.wait("READY", r"^1$")
        d.notify.wait("STATUS", r"^Reading %s \(phidget\)$" % re.escape(r.path))
        # READY=1 comes after the antenna write.
        self.assertEqual(d.stop(), 0)

    # 27
    def presentation(self, toggle):
        r, d = self.attached(flags=["--toggle_output"] if toggle else [])
        on = PRESENT_TOGGLE if toggle else PRESENT
        r.cmd("tag " + CARD)
        r.wait_out(on)
        d.wait_line(r"INFO +\(rfid\) Tag seen: %s \(%s\)$" % (CARD, re.escape(r.path)))
        # The card lies on the antenna for a second: about 20 tag reports (the scenario, not a wait).
        time.sleep(1.0)
        t0 = time.monotonic()
        r.cmd("notag")
        tokens = self.wait_tokens(2)
        lost_after = time.monotonic() - t0
        r.wait_out(ANTENNA, start=1)
        self.assertEqual(tokens, [token_event(CARD, "added"), token_event(CARD, "removed")])
        # The last report came at most 50 ms before "notag"; the card is gone 200 ms after it.
        self.assertGreater(lost_after, 0.1)
        self.assertLess(lost_after, 0.45 * kbtest.SLOW)
        self.assertEqual(r.outs(), [ANTENNA, on, ANTENNA])
        d.wait_line(r"INFO +\(rfid\) Tag lost: %s \(%s\)$" % (CARD, re.escape(r.path)))
        self.assertEqual(d.stop(), 0)
        r.wait_out(OFF)
        self.assertEqual(r.outs()[-1], OFF)

    def test_presentation(self):
        self.presentation(False)

    def test_presentation_toggle_output(self):
        self.presentation(True)

    # 28
    def count_presentations(self, interval_ms, *flags):
        r, d = self.attached("--tag_interval_ms=%d" % interval_ms, flags=flags)
        r.cmd("tag " + CARD)
        time.sleep(1.3)         # the card held for 1.3 s
        r.cmd("notag")
        d.wait_line(r"Tag lost: %s" % CARD)
        kbtest.wait_until(lambda: len(self.tokens()) % 2 == 0 and self.tokens()[-1]["status"] == "removed",
                          what="the last removal")
        self.assertEqual(d.stop(), 0)
        added = [t for t in self.tokens() if t["status"] == "added"]
        return len(added)

    def test_tag_interval_150_is_one_presentation(self):
        self.assertEqual(self.count_presentations(150), 1)

    def test_tag_interval_300_is_one_per_report(self):
        self.assertGreaterEqual(self.count_presentations(300), 3)

    def test_tag_interval_300_with_longer_tag_lost(self):
        self.assertEqual(self.count_presentations(300, "--tag_lost_ms=400"), 1)

    # 29
    def test_card_switch_keeps_led_on(self):
        r, d = self.attached()
        r.cmd("tag " + CARD)
        r.wait_out(PRESENT)
        self.wait_tokens(1)
        r.cmd("tag 6200e3a1c5")
        self.wait_tokens(3)
        r.cmd("notag")
        tokens = self.wait_tokens(4)
        self.assertEqual(tokens, [token_event(CARD, "added"), token_event(CARD, "removed"),
                                  token_event("6200e3a1c5", "added"), token_event("6200e3a1c5", "removed")])
        r.wait_out(ANTENNA, start=1)
        self.assertEqual(r.outs(), [ANTENNA, PRESENT, ANTENNA])
        self.assertEqual(d.stop(), 0)

    # 30
    def test_bad_reports(self):
        r, d = self.attached()
        r.cmd("raw 07 01 02 03 04 05 00 00")
        d.wait_line(r"WARNING +\(rfid\) %s: unknown_type: packet type 0x07$" % re.escape(r.path))
        r.cmd("raw 00 01")
        d.wait_line(r"WARNING +\(rfid\) %s: short_report: 2 bytes$" % re.escape(r.path))
        for _ in range(25):
            r.cmd("raw 07 01 02 03 04 05 00 00")
            r.cmd("raw 00 01")
        # The next card works: the bad reports before it have all been read.
        r.cmd("tag " + CARD)
        self.wait_tokens(1)
        r.cmd("notag")
        self.wait_tokens(2)
        self.assertTrue(d.alive())
        out = d.output("stderr")
        self.assertEqual(len([l for l in out if "unknown_type:" in l]), 1, out)
        self.assertEqual(len([l for l in out if "short_report:" in l]), 1, out)
        # The rest is summed up when the minute is over; at the stop, what is pending is logged.
        self.assertEqual(d.stop(), 0)
        d.wait_line(r"WARNING +\(rfid\) %s: 25 more unknown_type in the last minute" % re.escape(r.path))
        d.wait_line(r"WARNING +\(rfid\) %s: 25 more short_report in the last minute" % re.escape(r.path))

    # 2.4: a failed write is a WARNING and is made again every second until it goes through
    def test_write_failure_is_retried(self):
        r, d = self.attached()
        r.cmd("wfail 110")                      # ETIMEDOUT: not a device-lost error
        r.cmd("tag " + CARD)
        self.wait_tokens(1)
        d.wait_line(r"WARNING +\(rfid\) %s: cannot write the output report: Connection timed out$"
                    % re.escape(r.path))
        kbtest.wait_until(lambda: r.count_lines("failed " + PRESENT) >= 3, timeout=5,
                          what="three attempts at the LED")
        failed = [l for l in r.output("stdout") if l.startswith("failed ")]
        self.assertEqual(set(failed), {"failed " + PRESENT}, failed)
        r.cmd("wfail off")
        r.wait_out(PRESENT)
        self.assertEqual(r.outs(), [ANTENNA, PRESENT])
        self.assertTrue(d.alive())
        r.cmd("notag")
        self.assertEqual(self.wait_tokens(2), [token_event(CARD, "added"), token_event(CARD, "removed")])
        r.wait_out(ANTENNA, start=1)
        # One WARNING at once; the others are summed up by the minute report.
        self.assertEqual(len([l for l in d.output("stderr") if "cannot write the output report" in l]), 1)
        self.assertEqual(d.stop(), 0)

    # 31
    def test_v1_reader(self):
        r = self.reader("--pid=0x30")
        d = self.daemon(r, "--toggle_output")
        d.wait_line(r"RFID device attached: .*\(PhidgetRFID 1023 06c2:0030\)$")
        d.notify.wait("READY", r"^1$")
        self.core.wait_connected()
        r.cmd("tag " + CARD)
        self.wait_tokens(1)
        r.cmd("notag")
        self.assertEqual(self.wait_tokens(2), [token_event(CARD, "added"), token_event(CARD, "removed")])
        self.assertEqual(d.stop(), 0)
        r.sync()
        self.assertEqual(r.outs(), [])

    # 32
    def test_1024_is_refused(self):
        r = self.reader("--pid=0x34")
        d = self.daemon(r)
        self.assertEqual(d.wait(), 2)
        d.wait_line(r"ERROR +\(rfid\) %s: PhidgetRFID 1024 is not supported$" % re.escape(r.path))
        r.sync()
        self.assertEqual(r.outs(), [])

    # 33
    def test_unplug_and_replug(self):
        r, d = self.attached()
        r.cmd("tag " + CARD)
        self.wait_tokens(1)
        t0 = time.monotonic()
        r.kill()
        self.assertEqual(d.wait(5), 0)
        self.assertLess(time.monotonic() - t0, 1.0 * kbtest.SLOW + 0.5)
        d.wait_line(r"INFO +\(rfid\) RFID device detached: %s$" % re.escape(r.path))
        self.assertEqual(self.wait_tokens(2), [token_event(CARD, "added"), token_event(CARD, "removed")])
        r.unmount()
        # What systemd does on replug: a new reader, a new instance.
        r2 = self.reader()
        d2 = self.daemon(r2)
        r2.wait_out(ANTENNA)
        r2.cmd("tag 6200e3a1c5")
        self.wait_tokens(3)
        self.assertEqual(self.tokens()[2], token_event("6200e3a1c5", "added"))
        self.assertEqual(d2.stop(), 0)

    # 34
    def test_sigterm_with_card(self):
        r, d = self.attached()
        r.cmd("tag " + CARD)
        r.wait_out(PRESENT)
        self.wait_tokens(1)
        self.assertEqual(d.stop(), 0)
        r.wait_out(OFF)
        self.assertEqual(r.outs()[-1], OFF)
        self.assertEqual(self.wait_tokens(2), [token_event(CARD, "added"), token_event(CARD, "removed")])

    # 35
    def test_outbox_while_core_is_down(self):
        port = kbtest.free_port()
        r = self.reader()
        d = self.daemon(r, port=port)
        r.wait_out(ANTENNA)
        r.cmd("tag " + CARD)
        d.wait_line(r"Tag seen: " + CARD)
        r.cmd("notag")
        d.wait_line(r"Tag lost: " + CARD)
        core = kbtest.FakeCore(port=port)
        self.addCleanup(core.close)
        # The first retry comes 5 s after the failed first attempt.
        tokens = self.wait_tokens(2, core=core, timeout=15)
        self.assertEqual(tokens, [token_event(CARD, "added"), token_event(CARD, "removed")])
        self.assertEqual(d.stop(), 0)

    # 36
    def test_silent_reader(self):
        r = self.reader()
        d = self.daemon(r, "--verbose")
        d.wait_line(r"DEBUG +\(rfid\) .*: reader state 0x08$")
        r.cmd("echo off")
        t0 = time.monotonic()
        d.wait_line(r"WARNING +\(rfid\) %s: reader stopped reporting$" % re.escape(r.path), timeout=10)
        self.assertGreater(time.monotonic() - t0, 4.0)
        r.cmd("echo on")
        d.wait_line(r"INFO +\(rfid\) %s: reader reporting again$" % re.escape(r.path))
        self.assertEqual(len([l for l in d.output() if "reader stopped reporting" in l]), 1)
        self.assertEqual(d.stop(), 0)

    # 37
    def test_second_daemon_on_the_same_node(self):
        r = self.reader()
        d = self.daemon(r)
        r.wait_out(ANTENNA)
        d.notify.wait("READY", r"^1$")
        d2 = self.daemon(r)
        self.assertEqual(d2.wait(), 2)
        d2.wait_line(r"ERROR +\(rfid\) %s: in use by another rfid_daemon$" % re.escape(r.path))
        self.core.wait_connected()
        r.cmd("tag " + CARD)
        self.wait_tokens(1)
        r.sync()
        self.assertEqual(r.outs().count(ANTENNA), 1)
        self.assertEqual(d.stop(), 0)

    # 38
    def test_auto_backend_on_a_fuse_file(self):
        r = self.reader()
        d = self.daemon(r, backend="auto")
        self.assertEqual(d.wait(), 2)
        d.wait_line(r"ERROR +\(rfid\) %s: cannot tell what kind of RFID reader this is; use --rfid_backend$"
                    % re.escape(r.path))
        r.sync()
        self.assertEqual(r.outs(), [])

    # 45
    def test_evdev_stand_in(self):
        r = self.reader(evdev=True)
        d = self.daemon(r, "--token_hold_ms=300", backend="keyboard")
        d.wait_line(r"WARNING +\(rfid\) %s: cannot grab the keyboard: Bad address; typed card numbers may also "
                    r"reach the console$" % re.escape(r.path))
        d.wait_line(r"INFO +\(rfid\) RFID device attached: %s \(keyboard-wedge reader 'Fake RFID Keyboard Wedge' "
                    r"ffff:0035\)$" % re.escape(r.path))
        self.core.wait_connected()
        r.cmd("type 0004567890")
        self.wait_tokens(2)
        r.cmd("type 0415AB23CD")
        tokens = self.wait_tokens(4)
        self.assertEqual(tokens, [token_event("0004567890", "added"), token_event("0004567890", "removed"),
                                  token_event(CARD, "added"), token_event(CARD, "removed")])
        r.kill()
        self.assertEqual(d.wait(5), 0)
        d.wait_line(r"RFID device detached: %s$" % re.escape(r.path))

    def test_sighup_reopens_and_keeps_reading(self):
        r, d = self.attached()
        d.signal(signal.SIGHUP)
        r.cmd("tag " + CARD)
        self.wait_tokens(1)
        self.assertTrue(d.alive())
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    kbtest.main()
