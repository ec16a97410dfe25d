"""kegboard_daemon against kegboard_sim (the board) and FakeCore (the core):
programs-and-flags.md section 5, kegnet-protocol.md sections 5 and 6."""
import json
import os
import time
import unittest

import kbtest
from kbtest import FakeCore, Sim, TempDir, SLOW
import kbd

SERIAL = "KB-0000-0000-1A2B3C4D"
BOARD = "kegboard-1a2b3c4d"


def ev(name, **fields):
    def pred(m):
        if m.get("event") != name:
            return False
        return all(m["data"].get(k) == v for k, v in fields.items())
    return pred


class DaemonTest(unittest.TestCase):
    def setUp(self):
        self._tmp = TempDir()
        self.tmp = self._tmp.__enter__()
        self.procs = []
        self.cores = []

    def tearDown(self):
        for p in reversed(self.procs):
            if p.alive():
                p.kill()
            if p.p.stdin:
                p.p.stdin.close()
        for c in self.cores:
            c.close()
        self._tmp.__exit__(None, None, None)

    def sim(self, *flags, link_name="ttyKB0"):
        s = Sim(self.tmp, "--serial_number=" + SERIAL, *flags, link_name=link_name)
        self.procs.append(s)
        return s

    def core(self, port=None):
        c = FakeCore(port)
        self.cores.append(c)
        return c

    def daemon(self, link, port, *flags):
        d = kbd.daemon(link, port, *flags)
        self.procs.append(d)
        return d

    def start(self, *sim_flags, daemon_flags=()):
        sim = self.sim(*sim_flags)
        core = self.core()
        d = self.daemon(sim.link, core.port, *daemon_flags)
        core.wait_message(ev("ControllerConnectedEvent"), what="ControllerConnectedEvent")
        return sim, core, d

    def readings(self, core, meter):
        return [m["data"]["reading"] for m in core.events("MeterUpdate") if m["data"]["meter_name"] == meter]

    # ------------------------------------------------------------------

    def test_identify_and_pour(self):
        sim, core, d = self.start()
        d.wait_line(r"\(kegboard\) Found a Kegboard! Firmware version 18, serial '%s', name %s$" % (SERIAL, BOARD))
        cce = core.events("ControllerConnectedEvent")[0]["data"]
        self.assertEqual(cce["controller_name"], BOARD)
        self.assertEqual(cce["serial_number"], SERIAL)
        self.assertEqual(cce["firmware_version"], 18)
        self.assertEqual(cce["device"], sim.link)
        self.assertEqual(cce["uptime_ms"], 0)
        self.assertIs(cce["board_reset"], True)   # opening the port rebooted the board

        sim.cmd("pour flow0 600 1")
        sim.cmd("ticks flow1 7")
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow0", reading=600), what="final flow0 reading")
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow1", reading=7), what="flow1 reading")
        r = self.readings(core, BOARD + ".flow0")
        self.assertGreater(len(r), 3)               # several ~100 ms updates during the 1 s pour
        self.assertEqual(r, sorted(r))              # cumulative
        self.assertEqual(d.stop(), 0)

    def test_show_messages_and_thermo(self):
        sim, core, d = self.start("--thermo=thermo-6b0316621d4cff28=4.5", daemon_flags=["--show_messages"])
        d.wait_line(r"INFO +\(kegboard\) %s: hello firmware_version=18 serial_number=%s uptime_ms=0 uptime_days=0" % (BOARD, SERIAL))
        m = core.wait_message(ev("ThermoEvent"), what="ThermoEvent")
        self.assertEqual(m["data"], {"sensor_name": BOARD + ".thermo-6b0316621d4cff28", "sensor_value": 4.5})
        d.wait_line(r"INFO +\(kegboard\) %s: temperature_reading sensor_name=thermo-6b0316621d4cff28 sensor_reading=4.5" % BOARD)
        self.assertEqual(d.stop(), 0)

    def test_kegboard_name_and_tokens(self):
        sim, core, d = self.start(daemon_flags=["--kegboard_name=tap1", "--tap_name=tap1.flow0"])
        self.assertEqual(core.events("ControllerConnectedEvent")[0]["data"]["controller_name"], "tap1")
        sim.cmd("swipe 0415AB23CD")
        sim.cmd("ibutton 510000140e9c6b01 on")
        added = core.wait_message(ev("TokenAuthEvent", auth_device_name="core.rfid", status="added"), what="swipe")
        self.assertEqual(added["data"], {"meter_name": "tap1.flow0", "auth_device_name": "core.rfid",
                                         "token_value": "0415ab23cd", "status": "added"})
        core.wait_message(ev("TokenAuthEvent", auth_device_name="core.rfid", token_value="0415ab23cd",
                             status="removed"), what="swipe removed")
        core.wait_message(ev("TokenAuthEvent", auth_device_name="core.onewire", token_value="510000140e9c6b01",
                             status="added"), what="ibutton")
        sim.cmd("pour 1 5")
        core.wait_message(ev("MeterUpdate", meter_name="tap1.flow1", reading=5))
        self.assertEqual(d.stop(), 0)

    def test_bad_frames_never_lose_good_ones(self):
        sim, core, d = self.start()
        good = [kbd.meter_status("flow5", n) for n in (11, 12, 13, 14, 15, 16)]
        crlf = kbd.meter_status("flow4", 2573)                    # payload contains 0D 0A
        crc_crlf = kbd.meter_status("flow0", 20171)               # CRC is 0D 0A
        self.assertIn(b"\r\n", crlf[12:-4])
        self.assertEqual(crc_crlf[-4:-2], b"\r\n")
        bad_crc = kbd.meter_status("flow5", 999, crc=0x1234)
        oversize = kbd.frame(0x10, b"", length=0x200)
        truncated = kbd.meter_status("flow5", 998)[:20]
        stream = (b"garbage!\r\n" + good[0] + bad_crc + good[1] + crlf + oversize + good[2] + crc_crlf
                  + truncated + good[3] + b"\r\n\r\n" + good[4] + kbd.frame(0x42, b"\x01\x00") + good[5])
        # Split the stream over several writes, cutting frames in half.
        for i in range(0, len(stream), 50):
            sim.cmd("raw " + stream[i:i + 50].hex())
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow5", reading=16), what="last good frame")
        self.assertEqual(self.readings(core, BOARD + ".flow5"), [11, 12, 13, 14, 15, 16])
        self.assertEqual(self.readings(core, BOARD + ".flow4"), [2573])
        self.assertEqual(self.readings(core, BOARD + ".flow0"), [20171])
        d.wait_line(r"WARNING +\(kegboard\) %s: bad data from the board: bad_crc=1 " % BOARD)
        self.assertTrue(d.alive())
        self.assertEqual(d.stop(), 0)

    def test_board_reset_mid_pour(self):
        sim, core, d = self.start()
        sim.cmd("ticks flow0 200")
        core.wait_message(ev("MeterUpdate", reading=200))
        sim.cmd("reset")
        kbtest.wait_until(lambda: len(core.events("ControllerConnectedEvent")) >= 2, what="reset event")
        sim.cmd("ticks flow0 50")
        core.wait_message(ev("MeterUpdate", reading=50))
        seq = [(m["event"], m["data"].get("reading"), m["data"].get("board_reset")) for m in core.events()]
        i_reset = max(i for i, s in enumerate(seq) if s[0] == "ControllerConnectedEvent")
        self.assertLess(seq.index(("MeterUpdate", 200, None)), i_reset)
        self.assertGreater(seq.index(("MeterUpdate", 50, None)), i_reset)
        self.assertEqual(seq[i_reset][2], True)
        self.assertEqual(d.stop(), 0)

    def test_uptime_went_backwards(self):
        pty = kbd.PtyBoard()
        try:
            core = self.core()
            d = self.daemon(pty.path, core.port, "--probe_seconds=5")
            d.wait_line(r"probing for a Kegboard")
            pty.write(kbd.hello(serial=SERIAL, uptime_ms=50000))
            m = core.wait_message(ev("ControllerConnectedEvent"))
            self.assertIs(m["data"]["board_reset"], False)
            self.assertEqual(m["data"]["uptime_ms"], 50000)
            pty.write(kbd.hello(serial=SERIAL, uptime_ms=1000))
            d.wait_line(r"WARNING +\(kegboard\) Board reset detected \(uptime went backwards\)$")
            pty.write(kbd.hello(serial="KB-0000-0000-99999999", uptime_ms=2000))
            d.wait_line(r"WARNING .*serial number changed from '%s' to 'KB-0000-0000-99999999'" % SERIAL)
            self.assertEqual(len(core.events("ControllerConnectedEvent")), 1)
            self.assertEqual(d.stop(), 0)
        finally:
            pty.close()

    def test_frames_before_hello_and_ping(self):
        pty = kbd.PtyBoard()
        try:
            core = self.core()
            d = self.daemon(pty.path, core.port, "--probe_seconds=0.3")
            d.wait_line(r"probing for a Kegboard")
            pty.write(kbd.meter_status("flow0", 76))
            pty.write(kbd.meter_status("flow0", 77))
            pty.write(kbd.meter_status("flow1", 5))
            # A valid frame ends the probe (READY) but it is not a hello: ping after 5 s.
            kbtest.wait_until(lambda: pty.received.count(kbd.frame(0x81, b"")) >= 1, timeout=8, what="ping")
            pty.write(kbd.hello(firmware_version=17, serial="", uptime_ms=5000))
            m = core.wait_message(ev("ControllerConnectedEvent"))
            self.assertEqual(m["data"]["controller_name"], "kegboard")
            self.assertEqual(m["data"]["serial_number"], "")
            pty.write(kbd.meter_status("flow0", 78))
            core.wait_message(ev("MeterUpdate", reading=78))
            # The name was not known before the hello, but the newest reading of each meter was
            # kept and sent right after the announcement: a board reports a meter only when it
            # changes, so a dropped last reading would wait for the next pour.
            self.assertEqual([(x["data"]["meter_name"], x["data"]["reading"]) for x in core.events("MeterUpdate")],
                             [("kegboard.flow0", 77), ("kegboard.flow1", 5), ("kegboard.flow0", 78)])
            self.assertEqual(d.stop(), 0)
        finally:
            pty.close()

    def test_readings_before_a_boot_hello_are_dropped(self):
        pty = kbd.PtyBoard()
        try:
            core = self.core()
            d = self.daemon(pty.path, core.port, "--probe_seconds=0.3")
            d.wait_line(r"probing for a Kegboard")
            pty.write(kbd.meter_status("flow0", 900))
            pty.write(kbd.hello(serial=SERIAL, uptime_ms=0))
            # If the board answers before the core connection is up, the daemon announces the
            # board first (board_reset false) and the queued reset follows in the outbox.
            core.wait_message(ev("ControllerConnectedEvent", board_reset=True))
            pty.write(kbd.meter_status("flow0", 3))
            core.wait_message(ev("MeterUpdate", reading=3))
            # 900 counted on the counters the reset cleared.
            self.assertEqual([x["data"]["reading"] for x in core.events("MeterUpdate")], [3])
            self.assertEqual(d.stop(), 0)
        finally:
            pty.close()

    def test_restart_mid_pour_keeps_the_board_and_its_ticks(self):
        """kill -9 of the daemon during a pour and a new instance (what systemd does): the daemon
        cleared HUPCL, so the port keeps DTR asserted and the board (kegboard_sim emulating the
        Arduino's reset on a rising DTR) is not reset; the readings the new instance sees before
        the board's hello are not lost, so the final reading arrives even if the pour ended
        before the new instance identified the board."""
        sim = self.sim()
        core = self.core()
        d = self.daemon(sim.link, core.port)
        core.wait_message(ev("ControllerConnectedEvent", board_reset=True))
        sim.cmd("pour flow0 1320 2")
        core.wait_message(lambda m: m["event"] == "MeterUpdate" and m["data"]["reading"] > 400)
        d.kill()
        n = len(core.events("ControllerConnectedEvent"))
        d2 = self.daemon(sim.link, core.port)
        core.wait_message(ev("MeterUpdate", reading=1320), timeout=20, what="the pour's final reading")
        cce = core.events("ControllerConnectedEvent")[n:]
        self.assertTrue(cce)
        self.assertFalse(any(c["data"]["board_reset"] for c in cce))
        self.assertEqual(len([l for l in sim.output("stdout") if " BOOT " in l]), 1)
        r = [m["data"]["reading"] for m in core.events("MeterUpdate")]
        self.assertEqual(r, sorted(r))
        self.assertEqual(d2.stop(), 0)

    def test_restarted_daemon_knows_the_readings_of_this_boot(self):
        """With --runtime_dir a restarted daemon (the board kept running: no reset) sends the newest
        readings an earlier instance saw right after announcing the board, so a core that restarted
        meanwhile learns the counters although the board reports a meter only when it changes; after
        a reset of the board while no daemon ran they are of another boot and are not sent."""
        run = os.path.join(self.tmp, "run")
        os.makedirs(run)
        sim = self.sim("--nobuzzer")
        core = self.core()
        d = self.daemon(sim.link, core.port, "--runtime_dir=" + run)
        core.wait_message(ev("ControllerConnectedEvent", board_reset=True))
        sim.cmd("ticks flow0 120")
        sim.cmd("ticks flow1 7")
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow1", reading=7))
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow0", reading=120))
        self.assertTrue(os.path.exists(os.path.join(run, "ttyKB0.readings")))
        d.kill()
        tx = len([l for l in sim.output("stdout") if " TX meter_status " in l])
        n = len(core.events())
        d2 = self.daemon(sim.link, core.port, "--runtime_dir=" + run)
        def later():
            return [(m["event"], m["data"].get("meter_name"), m["data"].get("reading")) for m in core.events()[n:]]
        kbtest.wait_until(lambda: len([x for x in later() if x[0] == "MeterUpdate"]) >= 2, timeout=15,
                          what="the readings sent again")
        d2.wait_line(r"readings of this boot of the board from before the restart: 2 meters")
        later = later()
        self.assertEqual(later[0][0], "ControllerConnectedEvent")
        self.assertIn(("MeterUpdate", BOARD + ".flow0", 120), later)
        self.assertIn(("MeterUpdate", BOARD + ".flow1", 7), later)
        self.assertEqual(len([l for l in sim.output("stdout") if " TX meter_status " in l]), tx)

        # The board resets while no daemon runs: its next daemon sees no boot hello, but the boot
        # moment from the uptime differs, and the old readings are not sent.
        d2.kill()
        sim.cmd("reset")
        sim.wait_line(r" TX hello .*uptime_ms=0 ", key="stdout", timeout=5)
        n = len(core.events())
        d3 = self.daemon(sim.link, core.port, "--runtime_dir=" + run)
        kbtest.wait_until(lambda: [m for m in core.events()[n:] if m["event"] == "ControllerConnectedEvent"],
                          timeout=15, what="the board announced")
        sim.cmd("ticks flow0 3")
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow0", reading=3))
        self.assertEqual([m["data"]["reading"] for m in core.events()[n:] if m["event"] == "MeterUpdate"], [3])
        self.assertEqual(d3.stop(), 0)

    def test_resends_newest_readings_after_reconnect(self):
        """A core that restarts between pours learns every meter's counter right after the daemon
        reconnects, without waiting for the board to report a change."""
        sim, core, d = self.start()
        sim.cmd("ticks flow0 120")
        sim.cmd("ticks flow1 30")
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow0", reading=120))
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow1", reading=30))
        port = core.port
        n = d.count("stderr")
        tx = len([l for l in sim.output("stdout") if " TX meter_status " in l])
        core.close()
        d.wait_line(r"\(kegnet\) Disconnected!$", key="stderr", start=n)
        core2 = self.core(port)
        core2.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow1", reading=30), timeout=15,
                           what="flow1's reading sent again")
        core2.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow0", reading=120), what="flow0's reading")
        seq = [(m["event"], m["data"].get("board_reset")) for m in core2.events()]
        self.assertEqual(seq[0], ("ControllerConnectedEvent", False))
        self.assertEqual(len([l for l in sim.output("stdout") if " TX meter_status " in l]), tx)
        self.assertEqual(d.stop(), 0)

    def test_required_firmware_version(self):
        sim = self.sim()
        core = self.core()
        d = self.daemon(sim.link, core.port, "--required_firmware_version=19")
        self.assertEqual(d.wait(15), 1)
        self.assertTrue(any("ERROR" in l and "firmware version 18" in l for l in d.output()))

    def test_hang_exits_for_a_restart(self):
        sim, core, d = self.start("--heartbeat_ms=300", daemon_flags=["--hello_timeout=2"])
        sim.cmd("ticks flow0 10")
        core.wait_message(ev("MeterUpdate", reading=10))
        # Heartbeats keep it alive past one timeout: once the board has sent them for more than
        # 2 s (its own clock) since the daemon opened the port, a reading still gets through.
        lines = sim.output("stdout")
        opened = max(int(l.split()[0]) for l in lines if l.endswith(" OPEN"))

        def heartbeats_span():
            # No heartbeat printed yet (a slow build reads before the first one): none so far.
            return max((int(l.split()[0]) for l in sim.output("stdout") if " TX hello " in l), default=opened) - opened
        kbtest.wait_until(lambda: heartbeats_span() >= 2300, timeout=6, what="heartbeats for over 2 s")
        sim.cmd("ticks flow0 1")
        core.wait_message(ev("MeterUpdate", reading=11))
        self.assertTrue(d.alive())
        sim.cmd("hang")
        self.assertEqual(d.wait(10), 1)
        d.wait_line(r"ERROR +\(kegboard\) %s: no heartbeat for 2 s; board hung or gone$" % BOARD)
        # What systemd does next: start the instance again. The daemon cleared HUPCL, so its exit
        # left DTR asserted and reopening the port does not reset the board (kegboard_sim
        # emulates the Arduino's DTR reset): the counter goes on from 11.
        sim.cmd("unhang")
        n = len(core.events("ControllerConnectedEvent"))
        d2 = self.daemon(sim.link, core.port, "--hello_timeout=2")
        kbtest.wait_until(lambda: len(core.events("ControllerConnectedEvent")) > n, timeout=10, what="reconnect")
        cce = core.events("ControllerConnectedEvent")[n]["data"]
        self.assertFalse(cce["board_reset"])
        self.assertGreater(cce["uptime_ms"], 0)
        sim.cmd("ticks flow0 5")
        core.wait_message(ev("MeterUpdate", reading=16))
        self.assertFalse([l for l in sim.output("stdout") if " BOOT " in l][1:])
        self.assertEqual(d2.stop(), 0)

    def test_unplug_then_new_board(self):
        sim, core, d = self.start()
        sim.cmd("unplug")
        self.assertEqual(d.wait(10), 0)
        d.wait_line(r"INFO +\(kegboard\) %s: device disconnected$" % sim.link)
        sim.wait(5)
        sim2 = self.sim()                      # same --link path: a board plugged in again
        d2 = self.daemon(sim2.link, core.port)
        kbtest.wait_until(lambda: len(core.events("ControllerConnectedEvent")) >= 2, timeout=10, what="reconnect")
        sim2.cmd("ticks flow1 3")
        core.wait_message(ev("MeterUpdate", meter_name=BOARD + ".flow1", reading=3))
        self.assertEqual(d2.stop(), 0)

    def test_relays(self):
        # The core's 0.3 s re-asserts must beat the watchdog even on a loaded machine.
        sim, core, d = self.start("--relay_watchdog_ms=%d" % (1500 * SLOW))
        core.wait_connected()
        # It asks the core for the relay commands only: not for the FlowUpdate its readings cause.
        kbtest.wait_until(lambda: core.hellos, what="the Hello")
        self.assertEqual([(h["role"], h["events"]) for h in core.hellos], [("producer", ["SetRelayOutputEvent"])])
        core.broadcast("SetRelayOutputEvent", output_name=BOARD + ".relay1", output_mode="enabled")
        core.broadcast("SetRelayOutputEvent", output_name="otherboard.relay2", output_mode="enabled")
        core.broadcast("SetRelayOutputEvent", output_name=BOARD + ".relay9", output_mode="enabled")
        sim.wait_line(r" RELAY id=1 state=on cause=command$", key="stdout")
        d.wait_line(r"INFO +\(kegboard\) %s: relay1 is now on$" % BOARD)
        # A relay the board does not have is an error (it used to be a quiet "malformed" warning).
        d.wait_line(r"ERROR +\(kegboard\) SetRelayOutputEvent for %s\.relay9: this board has no such relay "
                    r"\(relay0\.\.relay5\); ignored" % BOARD)
        # The core stops re-asserting: the board's watchdog closes the valve.
        sim.wait_line(r" RELAY id=1 state=off cause=watchdog$", timeout=6, key="stdout")
        d.wait_line(r"WARNING +\(kegboard\) %s: relay1 was switched off by the board" % BOARD)
        self.assertEqual([l for l in sim.events("RELAY") if "id=2" in l], [])
        # Re-asserted every 0.3 s it stays on (the pauses are the scenario: 8 re-asserts span more
        # than the 1.5 s watchdog); disabled it goes off - and that is its only 'off'.
        core.broadcast("SetRelayOutputEvent", output_name=BOARD + ".relay0", output_mode="enabled")
        for _ in range(8):
            time.sleep(0.3)
            core.broadcast("SetRelayOutputEvent", output_name=BOARD + ".relay0", output_mode="enabled")
        core.broadcast("SetRelayOutputEvent", output_name=BOARD + ".relay0", output_mode="disabled")
        sim.wait_line(r" RELAY id=0 state=off cause=command$", key="stdout")
        self.assertEqual([l.split(" ", 1)[1] for l in sim.events("RELAY") if "id=0" in l and "state=off" in l],
                         ["RELAY id=0 state=off cause=command"])
        # (Spacing is checked in test_relay_queue_newest_state_and_spacing, on the daemon's clock:
        # the simulator's receive times bunch up whenever it is descheduled.)
        self.assertTrue(all("crc=ok" in l for l in sim.events("RX")))
        self.assertEqual(d.stop(), 0)

    def test_relay_queue_newest_state_and_spacing(self):
        """Section 5 item 5 / KBSP section 7: only the newest pending state per output is sent, and
        at most one command frame per 100 ms."""
        sim, core, d = self.start(daemon_flags=["--verbose"])
        core.wait_connected()
        burst = [("relay0", "enabled"), ("relay1", "enabled"), ("relay0", "disabled"),
                 ("relay2", "enabled"), ("relay0", "enabled"), ("relay1", "disabled"),
                 ("relay1", "enabled")]
        # One write, so the daemon handles the whole burst in one go.
        data = b"".join(kbtest.kegnet_frame("SetRelayOutputEvent", output_name=BOARD + "." + r, output_mode=m)
                        for r, m in burst)
        with core._cv:
            conns = list(core.conns)
        self.assertEqual(len(conns), 1)
        conns[0].sendall(data)
        for i in (0, 1, 2):
            sim.wait_line(r" RELAY id=%d state=on cause=command$" % i, key="stdout")
        kbtest.wait_until(lambda: len([l for l in sim.output("stdout") if " RX set_output " in l]) >= 4,
                          what="4 set_output frames")
        # relay0 goes out at once; then the newest state of each output, round robin: relay1 and
        # relay2 once each (on), relay0 again (on: its off was superseded). Never an 'off'.
        rx = [l.split(" RX set_output ")[1] for l in sim.output("stdout") if " RX set_output " in l]
        self.assertEqual(rx, ["output_id=0 output_mode=1 crc=ok", "output_id=1 output_mode=1 crc=ok",
                              "output_id=2 output_mode=1 crc=ok", "output_id=0 output_mode=1 crc=ok"])
        # Spacing, on the daemon's own clock (its log time is taken after the write was decided).
        tx = []
        for l in d.output():
            if "TX set_output" in l:
                t = time.strptime(l[:19], "%Y-%m-%d %H:%M:%S")
                tx.append(time.mktime(t) * 1000 + int(l[20:23]))
        self.assertEqual(len(tx), 4, tx)
        self.assertTrue(all(b - a >= 90 for a, b in zip(tx, tx[1:])), tx)
        self.assertEqual(d.stop(), 0)
        # Relays switched on by this process go off at the stop.
        for i in (0, 1, 2):
            sim.wait_line(r" RELAY id=%d state=off cause=command$" % i, key="stdout")

    def test_stop_switches_relays_off(self):
        sim, core, d = self.start()
        core.wait_connected()
        core.broadcast("SetRelayOutputEvent", output_name=BOARD + ".relay3", output_mode="enabled")
        sim.wait_line(r" RELAY id=3 state=on cause=command$", key="stdout")
        self.assertEqual(d.stop(), 0)
        sim.wait_line(r" RELAY id=3 state=off cause=command$", key="stdout")

    def test_not_a_kegboard(self):
        pty = kbd.PtyBoard(noise=True)
        try:
            core = self.core()
            d = self.daemon(pty.path, core.port, "--probe_seconds=0.5")
            self.assertEqual(d.wait(15), 0)
            d.wait_line(r"INFO +\(kegboard\) %s: not a kegboard \(no KBSP frame\)$" % pty.path)
            self.assertEqual(pty.received.count(kbd.frame(0x81, b"")), 3)
            self.assertEqual(core.events("ControllerConnectedEvent"), [])
        finally:
            pty.close()

    def test_core_down_then_restarted_mid_pour(self):
        port = kbtest.free_port()
        sim = self.sim()
        d = self.daemon(sim.link, port)
        d.wait_line(r"Found a Kegboard!")
        d.wait_line(r"\(kegnet\) Connection failed\. Retry in 5 seconds\.")
        sim.cmd("pour flow0 300 1")
        # The whole pour is in the outbox before the core comes up.
        sim.wait_line(r" TX meter_status meter_name=flow0 meter_reading=300$", key="stdout")
        core = self.core(port)
        core.wait_message(ev("MeterUpdate", reading=300), timeout=10, what="outbox reading")
        seq = [(m["event"], m["data"].get("board_reset"), m["data"].get("reading")) for m in core.events()]
        # Connect-time announcement, then the outbox: the boot reset marker, the newest reading.
        self.assertEqual(seq[:3], [("ControllerConnectedEvent", False, None),
                                   ("ControllerConnectedEvent", True, None),
                                   ("MeterUpdate", None, 300)])
        # Restart the core in the middle of a pour.
        sim.cmd("pour flow0 1000 6")
        core.wait_message(lambda m: m["event"] == "MeterUpdate" and m["data"]["reading"] > 400)
        # The core goes away; the daemon notices and fails to reconnect while the pour goes on.
        n = d.count("stderr")
        core.close()
        d.wait_line(r"\(kegnet\) Disconnected!$", key="stderr", start=n)
        d.wait_line(r"\(kegnet\) Connection failed\. Retry in \d+ seconds\.$", key="stderr", start=n)
        core2 = self.core(port)
        core2.wait_message(ev("MeterUpdate", reading=1300), timeout=15, what="final reading after restart")
        first = core2.events()[0]
        self.assertEqual(first["event"], "ControllerConnectedEvent")
        self.assertIs(first["data"]["board_reset"], False)
        r = [m["data"]["reading"] for m in core2.events("MeterUpdate")]
        self.assertEqual(r, sorted(r))
        self.assertEqual(d.stop(), 0)

    def test_replay_capture_file(self):
        core = self.core()
        cap = os.path.join(kbtest.VECTORS_DIR, "capture-one_flow_active.bin")
        with open(os.path.join(kbtest.VECTORS_DIR, "capture-one_flow_active.expected.json")) as f:
            expected = json.load(f)
        last = [m["fields"]["meter_reading"] for m in expected["messages"] if m["message"] == "meter_status"][-1]
        d = self.daemon(cap, core.port)
        self.assertEqual(d.wait(10), 0)
        d.wait_line(r"Found a Kegboard! Firmware version 3, serial '', name kegboard$")
        core.wait_message(ev("MeterUpdate", meter_name="kegboard.flow1", reading=last), timeout=5)
        cce = core.events("ControllerConnectedEvent")[0]["data"]
        self.assertEqual(cce["firmware_version"], 3)
        self.assertEqual(cce["device"], cap)

    def test_missing_device(self):
        core = self.core()
        d = self.daemon(os.path.join(self.tmp, "nope"), core.port)
        self.assertEqual(d.wait(10), 1)
        d.wait_line(r"ERROR .*Failed to open .*nope")


if __name__ == "__main__":
    kbtest.main()
