"""kegbot_core in standalone mode: start-up, taps file and first-sight taps, test_flow pours, the
drinks log (format, drink_id sequence, torn line, kill -9), idle timing, shutdown, reload, thermo."""
import json
import os
import signal
import socket
import time
import unittest

import kbtest
from coretest import TAPS_INI, Core, flow_updates, write_file


def run_test_flow(port, *flags, timeout=30):
    return kbtest.run([kbtest.binary("test_flow"), "--kb_core_addr=%d" % port] + list(flags), timeout=timeout)


class StartupTest(unittest.TestCase):
    def test_startup_lines_and_taps_file(self):
        with kbtest.TempDir() as tmp:
            taps = write_file(os.path.join(tmp, "taps.ini"), TAPS_INI)
            core = Core(tmp, taps=taps)
            try:
                core.wait_line(r"INFO     \(main\) Kegbot is starting up\.")
                core.wait_line(r"\(main\) Running in standalone mode \(no --api_url\)")
                core.wait_line(r"\(kegnet\) Starting server on 127\.0\.0\.1:%d$" % core.port)
                core.wait_line(r"\(main\) Found 2 taps, adding to tap manager\.")
                core.wait_line(r"\(TapManager\) Registering new tap: kegboard\.flow0$")
                core.wait_line(r"\(TapManager\) Registering new tap: kegboard\.flow1$")
                # Order of the spec's start-up sequence.
                err = core.output("stderr")
                idx = lambda pat: next(i for i, l in enumerate(err) if pat in l)
                self.assertLess(idx("Kegbot is starting up."), idx("Running in standalone mode"))
                self.assertLess(idx("Running in standalone mode"), idx("Starting server on"))
                self.assertLess(idx("Starting server on"), idx("Found 2 taps"))
                self.assertLess(idx("Found 2 taps"), idx("All services started."))
                self.assertEqual(core.stop(), 0)
                core.wait_line(r"\(main\) Kegbot stopped\.")
            finally:
                core.kill()

    def test_fatal_startup_errors_exit_1(self):
        with kbtest.TempDir() as tmp:
            core = kbtest.binary("kegbot_core")
            base = ["--state_dir=" + os.path.join(tmp, "s"), "--taps_file=" + os.path.join(tmp, "none.ini"),
                    "--dbus=none"]
            env = {"KEGBOT_API_URL": ""}
            # Bad flag.
            r = kbtest.run([core, "--no_such_flag"] + base, env=env)
            self.assertEqual(r.returncode, 1)
            self.assertIn("Error:", r.stderr)
            r = kbtest.run([core, "--dbus=bogus"] + base, env=env)
            self.assertEqual(r.returncode, 1)
            # Port in use.
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            r = kbtest.run([core, "--kb_core_bind_addr=127.0.0.1:%d" % port] + base, env=env)
            s.close()
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("Failed to listen", r.stderr)
            # Unusable state directory (a regular file in the way).
            blocker = write_file(os.path.join(tmp, "blocker"), "x")
            r = kbtest.run([core, "--kb_core_bind_addr=127.0.0.1:%d" % kbtest.free_port(),
                            "--state_dir=" + os.path.join(blocker, "sub"),
                            "--taps_file=" + os.path.join(tmp, "none.ini"), "--dbus=none"], env=env)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("unusable", r.stderr)
            # Taps file with a syntax error.
            bad = write_file(os.path.join(tmp, "bad.ini"), "[kegboard.flow0]\nml_per_tick = 1\nticks_per_ml = 2\n")
            r = kbtest.run([core, "--kb_core_bind_addr=127.0.0.1:%d" % kbtest.free_port(),
                            "--state_dir=" + os.path.join(tmp, "s"), "--taps_file=" + bad, "--dbus=none"], env=env)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("both ml_per_tick and ticks_per_ml", r.stderr)
            # --maximum_event_retries: accepted with a warning.
            p = Core(tmp, "--maximum_event_retries=5")
            try:
                p.wait_line(r"WARNING  \(main\) --maximum_event_retries is accepted .* ignored")
                self.assertEqual(p.stop(), 0)
            finally:
                p.kill()


    def test_state_directory_from_environment(self):
        with kbtest.TempDir() as tmp:
            a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            port = kbtest.free_port()
            p = kbtest.Proc([kbtest.binary("kegbot_core"), "--kb_core_bind_addr=127.0.0.1:%d" % port,
                             "--taps_file=" + os.path.join(tmp, "none.ini"), "--dbus=none"],
                            env={"KEGBOT_API_URL": "", "STATE_DIRECTORY": a + ":" + b})
            try:
                p.wait_line(r"Recording drinks in %s/drinks\.log \(next drink_id 1\)" % a)
                p.wait_line(r"All services started")
                self.assertTrue(os.path.exists(os.path.join(a, "drinks.log")))
                self.assertFalse(os.path.exists(b))
                self.assertEqual(p.stop(), 0)
            finally:
                p.kill()


class PourTest(unittest.TestCase):
    def test_test_flow_pour_recorded_once(self):
        with kbtest.TempDir() as tmp:
            taps = write_file(os.path.join(tmp, "taps.ini"), TAPS_INI)
            core = Core(tmp, taps=taps)
            try:
                listener = core.connect()
                r = run_test_flow(core.port, "--ticks=1100", "--steps=4", "--delay_seconds=0.02",
                                  "--explicit_start_stop")
                self.assertEqual(r.returncode, 0, r.stderr)
                # test_flow's own log lines: 0, 275, 550, 825, 1100.
                sent = [l.split("Sending flow update: ")[1] for l in r.stderr.splitlines()
                        if "(test_flow) Sending flow update: " in l]
                self.assertEqual(sent, ["0", "275", "550", "825", "1100"])
                drink_ev, seen = listener.recv_until(lambda m: m["event"] == "DrinkCreatedEvent", timeout=5)
                updates = flow_updates(seen)
                # Coalesced (at most one per flow per 100 ms while active): the start at once, then
                # snapshots no closer than that, and the end exactly.
                states = [u["state"] for u in updates]
                ticks = [u["ticks"] for u in updates]
                self.assertEqual(states[0], "active")
                self.assertEqual(ticks[0], 0)
                self.assertEqual(states[-1], "completed")
                self.assertEqual(ticks[-1], 1100)
                self.assertEqual(set(states[:-1]), {"active"})
                self.assertEqual(ticks, sorted(ticks))
                self.assertLessEqual(len(updates), 2 + 4)
                self.assertAlmostEqual(updates[-1]["volume_ml"], 500.0, places=6)
                # completed comes before DrinkCreatedEvent.
                self.assertEqual(seen[-2]["event"], "FlowUpdate")
                d = drink_ev["data"]
                self.assertEqual(d["ticks"], 1100)
                self.assertEqual(d["drink_id"], 1)
                drinks = core.drinks()
                self.assertEqual(len(drinks), 1)
                self.assertEqual(list(drinks[0].keys()),
                                 ["drink_id", "uuid", "flow_id", "meter_name", "ticks", "volume_ml", "username",
                                  "start_time", "pour_time", "duration"])
                self.assertEqual(drinks[0]["uuid"], d["uuid"])
                self.assertEqual(drinks[0]["meter_name"], "kegboard.flow0")
                self.assertAlmostEqual(drinks[0]["volume_ml"], 500.0, places=6)
                self.assertIsNone(drinks[0]["username"])
                self.assertRegex(drinks[0]["start_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
                # Second pour on the first-sight meter flow2: default calibration 2.2 ticks/mL.
                r = run_test_flow(core.port, "--ticks=220", "--steps=2", "--delay_seconds=0",
                                  "--explicit_start_stop", "--meter_name=kegboard.flow2")
                self.assertEqual(r.returncode, 0, r.stderr)
                core.wait_line(r"\(flowmanager\) Creating tap kegboard\.flow2 with default calibration 0\.454545 mL/tick")
                kbtest.wait_until(lambda: len(core.drinks()) == 2, what="second drink")
                d2 = core.drinks()[1]
                self.assertEqual(d2["drink_id"], 2)
                self.assertAlmostEqual(d2["volume_ml"], 100.0, places=6)
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()

    def test_test_flow_cannot_connect(self):
        r = run_test_flow(kbtest.free_port(), "--ticks=10")
        self.assertEqual(r.returncode, 1)
        self.assertIn("Could not connect to core.", r.stderr)
        r = kbtest.run([kbtest.binary("test_flow"), "--auth_token=nocolon"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Error:", r.stderr)

    def test_idle_end_at_the_right_time(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                listener = core.connect()
                r = run_test_flow(core.port, "--ticks=100", "--steps=1", "--delay_seconds=0")
                self.assertEqual(r.returncode, 0, r.stderr)
                m, _ = listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 100)
                t_last = time.monotonic()
                # A repeated reading is no activity: the flow still ends 10 s after the last tick, not
                # 10 s after the repeat (which would be 15 s). The bounds are absolute, not scaled: a
                # scaled upper bound could not tell the two apart on a slow build, and the margins
                # (1 s early, 3.5 s late) are far beyond any delivery delay. (The 5 s pause is the
                # scenario: the repeat comes halfway through the idle time.)
                time.sleep(5)
                c = core.connect()
                c.send("MeterUpdate", meter_name="kegboard.flow0", reading=100)
                m, _ = listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["state"] == "idle",
                                           timeout=20)
                elapsed = time.monotonic() - t_last
                self.assertGreater(elapsed, 9.0)
                self.assertLess(elapsed, 13.5)
                m, _ = listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["state"] == "completed")
                core.wait_line(r"\(flowmanager\) Flow has become too idle, ending: flow_id=0x[0-9a-f]{8}")
                kbtest.wait_until(lambda: len(core.drinks()) == 1)
                self.assertEqual(core.drinks()[0]["ticks"], 100)
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


class DurabilityTest(unittest.TestCase):
    def test_kill_9_after_completed_keeps_the_drink(self):
        with kbtest.TempDir() as tmp:
            port = kbtest.free_port()
            core = Core(tmp, port=port)
            try:
                listener = core.connect()
                r = run_test_flow(port, "--ticks=500", "--steps=5", "--delay_seconds=0", "--explicit_start_stop")
                self.assertEqual(r.returncode, 0, r.stderr)
                listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["state"] == "completed")
                core.kill()
            finally:
                core.kill()
            core = Core(tmp, port=port)
            try:
                drinks = core.drinks()
                self.assertEqual(len(drinks), 1)
                self.assertEqual(drinks[0]["ticks"], 500)
                core.wait_line(r"next drink_id 2\)")
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()

    def test_disk_full_reserve_then_wait_and_kill9(self):
        """A full disk (a tmpfs filled up): the space reserve set aside at start-up is released at
        the first ENOSPC (ERROR) and holds at least 1000 more drinks, all durable and announced as
        usual. With the reserve used up too, a drink waits in memory and its pour is NOT reported
        completed; kill -9 then loses nothing: meters.json never moved past it, so the restarted
        core counts its ticks again from the meter (the producer sends its newest reading again).
        STATUS= tells the disk state."""
        with kbtest.TempDir() as tmp, kbtest.Tmpfs(os.path.join(tmp, "state"), "8m") as state:
            notify = kbtest.NotifySocket(tmp)
            core = None

            try:
                core = Core(tmp, "--retry_interval=1", state_dir=state, env=notify.env())
                self.assertTrue(os.path.exists(os.path.join(state, "space-reserve")))
                self.assertFalse(core.stderr_lines(r"Cannot set aside"))
                conn = core.connect()
                kbtest.fill_disk(state)
                reading, n = 0, 1000
                conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
                for i in range(n):
                    reading += 30 + i % 7
                    conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=reading)
                    conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
                done = 0
                while done < n:
                    conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["state"] == "completed",
                                    timeout=30, what="completed flow %d" % (done + 1))
                    done += 1
                core.wait_line(r"ERROR    \(DrinkManager\) The disk of %s is full: released the space reserve "
                               r"\(\d+ KiB, room for 1000 more drinks\); drinks are still written durably" % state)
                notify.wait("STATUS", "disk low")
                drinks = core.drinks()
                self.assertEqual(len(drinks), n)
                self.assertEqual(sum(d["ticks"] for d in drinks), reading)
                self.assertFalse(core.stderr_lines(r"waits in memory"))

                # The reserve is used up too: the next drinks wait, and their pours are not
                # reported completed.
                filler = kbtest.fill_disk(state)
                poured = 0
                for t in range(40):
                    reading += 50 + t
                    poured += 50 + t
                    conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=reading)
                    conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
                conn.send("FlowRequest", meter_name="kegboard.flow1", request="start_flow")
                _, seen = conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["meter_name"] == "kegboard.flow1",
                                          timeout=10, what="the sentinel flow")
                self.assertEqual(flow_updates(seen, "completed"), [])
                core.wait_line(r"ERROR    \(DrinkManager\) Drink \S+ \(kegboard\.flow0, 50 ticks\) cannot be written "
                               r"\(No space left on device\) and waits in memory")
                notify.wait("STATUS", "DISK FULL: 40 drinks wait")
                self.assertEqual(len(core.drinks()), n)

                core.kill()
                os.unlink(filler)
                core = Core(tmp, "--retry_interval=1", state_dir=state)
                conn = core.connect()
                # What kegboard_daemon sends right after reconnecting: the newest reading.
                conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=reading)
                conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
                m, _ = conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["state"] == "completed",
                                       timeout=10, what="the waiting drinks' ticks")
                self.assertEqual(m["data"]["ticks"], poured)
                kbtest.wait_until(lambda: len(core.drinks()) == n + 1, what="the drink")
                self.assertEqual(sum(d["ticks"] for d in core.drinks()), reading)
                self.assertEqual(core.stop(), 0)
            finally:
                if core:
                    core.kill()
                notify.close()

    def test_disk_full_drink_written_once_there_is_room(self):
        """A disk too small for the space reserve (WARNING at start-up) fills up: a drink that waits
        for the disk is written, reported completed and then announced, in pour order, once there
        is room."""
        with kbtest.TempDir() as tmp, kbtest.Tmpfs(os.path.join(tmp, "state"), "64k") as state:
            core = None
            try:
                core = Core(tmp, "--retry_interval=1", state_dir=state)
                # No room for a reserve on 64 KiB: said at start-up.
                core.wait_line(r"WARNING  \(DrinkManager\) Cannot set aside \d+ KiB in %s as a space reserve" % state)
                filler = kbtest.fill_disk(state)
                conn = core.connect()
                for ticks in (500, 300):
                    r = run_test_flow(core.port, "--ticks=%d" % ticks, "--steps=1", "--delay_seconds=0",
                                      "--explicit_start_stop")
                    self.assertEqual(r.returncode, 0, r.stderr)
                core.wait_line(r"Drink \S+ \(kegboard\.flow0, 500 ticks\) cannot be written .* waits in memory")
                self.assertEqual(core.drinks(), [])
                os.unlink(filler)
                completed, created = [], []
                while len(created) < 2:
                    m, _ = conn.recv_until(lambda m: m["event"] in ("DrinkCreatedEvent", "FlowUpdate"), timeout=10)
                    if m["event"] == "DrinkCreatedEvent":
                        self.assertEqual(len(completed), len(created) + 1)   # completed, then created
                        created.append(m["data"])
                    elif m["data"]["state"] == "completed":
                        completed.append(m["data"])
                drinks = core.drinks()
                self.assertEqual([d["ticks"] for d in drinks], [500, 300])
                self.assertEqual([c["ticks"] for c in completed], [500, 300])
                self.assertEqual([d["drink_id"] for d in drinks], [1, 2])
                self.assertEqual([c["uuid"] for c in created], [d["uuid"] for d in drinks])
                core.wait_line(r"Drink \S+ \(kegboard\.flow0, 500 ticks\) is written now")
                self.assertEqual(core.stop(), 0)
            finally:
                if core:
                    core.kill()

    def test_torn_last_line_is_cut(self):
        with kbtest.TempDir() as tmp:
            state = os.path.join(tmp, "state")
            os.makedirs(state)
            write_file(os.path.join(state, "drinks.log"),
                       '{"drink_id":41,"uuid":"x","ticks":1}\n{"drink_id":42,"uuid":"y","ticks":1}\n{"drink_id":43,"uu')
            core = Core(tmp)
            try:
                core.wait_line(r"ERROR    \(DrinkManager\) .*torn last line")
                core.wait_line(r"next drink_id 43\)")
                with open(core.drinks_path) as f:
                    self.assertTrue(f.read().endswith('"ticks":1}\n'))
                r = run_test_flow(core.port, "--ticks=100", "--steps=1", "--delay_seconds=0", "--explicit_start_stop")
                self.assertEqual(r.returncode, 0, r.stderr)
                kbtest.wait_until(lambda: len(core.drinks()) == 3)
                self.assertEqual(core.drinks()[-1]["drink_id"], 43)
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()

    def test_drink_id_never_reused_after_a_line_that_does_not_parse(self):
        """drinks.log as an older core left it after a Latin-1 username: line 2 is not JSON. Its
        drink_id (2) stays taken across restarts (an older core started again at 2); every line
        this core writes is JSON."""
        with kbtest.TempDir() as tmp:
            port = kbtest.free_port()
            state = os.path.join(tmp, "state")
            os.makedirs(state)
            old_lines = (b'{"drink_id":1,"uuid":"3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10","flow_id":1,'
                         b'"meter_name":"kegboard.flow0","ticks":1100,"volume_ml":500.0,"username":null,'
                         b'"start_time":"2026-11-26T12:00:01Z","pour_time":"2026-11-26T12:00:09Z","duration":8}\n'
                         b'{"drink_id":2,"uuid":"4f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10","flow_id":2,'
                         b'"meter_name":"kegboard.flow0","ticks":220,"volume_ml":100.0,"username":"caf\xe9",'
                         b'"start_time":"2026-11-26T12:01:01Z","pour_time":"2026-11-26T12:01:09Z","duration":8}\n')
            with open(os.path.join(state, "drinks.log"), "wb") as f:
                f.write(old_lines)
            for expect_id in (3, 4):
                core = Core(tmp, port=port)
                try:
                    core.wait_line(r"next drink_id %d\)" % expect_id)
                    core.wait_line(r"WARNING  \(DrinkManager\) %s/drinks\.log:2: the line is not valid UTF-8 .*"
                                   r"drink_id 2 stays taken" % state.replace(".", r"\."))
                    listener = core.connect()
                    r = run_test_flow(port, "--ticks=330", "--steps=1", "--delay_seconds=0", "--explicit_start_stop")
                    self.assertEqual(r.returncode, 0, r.stderr)
                    m, _ = listener.recv_until(lambda m: m["event"] == "DrinkCreatedEvent")
                    self.assertEqual(m["data"]["drink_id"], expect_id)
                    self.assertEqual(core.stop(), 0)
                finally:
                    core.kill()
            with open(os.path.join(state, "drinks.log"), "rb") as f:
                data = f.read()
            self.assertTrue(data.startswith(old_lines))     # history is kept as it was
            new = [json.loads(l.decode("utf-8")) for l in data[len(old_lines):].splitlines()]
            self.assertEqual([(d["drink_id"], d["ticks"]) for d in new], [(3, 330), (4, 330)])

    def test_sigterm_mid_pour_records_the_drink(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                listener = core.connect()
                c = core.connect()
                c.send("MeterUpdate", meter_name="kegboard.flow0", reading=1000)
                c.send("MeterUpdate", meter_name="kegboard.flow0", reading=1300)
                listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 300)
                core.signal(signal.SIGTERM)
                m, seen = listener.recv_until(lambda m: m["event"] == "DrinkCreatedEvent", timeout=5)
                self.assertEqual(flow_updates(seen)[-1]["state"], "completed")
                self.assertEqual(core.wait(5), 0)
                core.wait_line(r"\(main\) Got signal 15")
                drinks = core.drinks()
                self.assertEqual(len(drinks), 1)
                self.assertEqual(drinks[0]["ticks"], 300)
            finally:
                core.kill()


class GhostSettingsTest(unittest.TestCase):
    """The ghost filter's settings (ghost-pours.md section 4): flags in --help, bounds, taps-file keys
    per tap and in [DEFAULT], errors with file and line, reload keeping the old settings."""

    def run_core(self, tmp, *flags):
        return kbtest.run([kbtest.binary("kegbot_core"), "--state_dir=" + os.path.join(tmp, "s"), "--dbus=none",
                           "--kb_core_bind_addr=127.0.0.1:%d" % kbtest.free_port()] + list(flags),
                          env={"KEGBOT_API_URL": ""})

    def test_flags_and_bad_values(self):
        with kbtest.TempDir() as tmp:
            r = self.run_core(tmp, "--helpshort")
            self.assertEqual(r.returncode, 1)
            for flag in ("ghost_filter", "valve_closed_gate", "valve_closed_grace_s", "pour_start_ml",
                         "pour_start_window_s", "ghost_step_ml_s", "ghost_baseline_s", "pour_activity_ml_s",
                         "ghost_min_duration_s", "ghost_max_avg_ml_s", "ghost_onset_s", "ghost_min_onset_ml",
                         "max_pour_s", "quarantine_after_cuts", "min_volume_ml", "kick_rate_ml_s"):
                self.assertRegex(r.stdout, r"\n  --(\[no\])?%s:  " % flag)
            r = self.run_core(tmp, "--max_pour_s=5")
            self.assertEqual(r.returncode, 1)
            self.assertIn("Error: --max_pour_s: expected 0 or a number from 10 to 86400", r.stderr)
            r = self.run_core(tmp, "--ghost_filter=sometimes")
            self.assertEqual(r.returncode, 1)
            taps = write_file(os.path.join(tmp, "taps.ini"), "[kegboard.flow0]\nml_per_tick = 0.5\n"
                              "pour_start_window_s = 9\n")
            r = self.run_core(tmp, "--taps_file=" + taps)
            self.assertEqual(r.returncode, 1)
            self.assertIn("taps.ini:3: pour_start_window_s: expected a number from 0.5 to 4, not '9'", r.stderr)

    def test_per_tap_modes_and_reload(self):
        with kbtest.TempDir() as tmp:
            taps = write_file(os.path.join(tmp, "taps.ini"),
                              "[DEFAULT]\nticks_per_ml = 2.2\n[kegboard.flow0]\n[kegboard.flow1]\nghost_filter = off\n")
            core = Core(tmp, taps=taps)
            try:
                core.wait_line(r"INFO     \(flowmanager\) Ghost filter: on \(1 taps differ\)")
                listener = core.connect()
                p = core.connect()
                # 10 ticks (4.5 mL) on each: a trickle for the filtered tap, a flow on the other.
                for meter in ("kegboard.flow0", "kegboard.flow1"):
                    p.send("MeterUpdate", meter_name=meter, reading=0)
                    p.send("MeterUpdate", meter_name=meter, reading=10)
                m, seen = listener.recv_until(lambda m: m["event"] == "FlowUpdate", timeout=5)
                self.assertEqual((m["data"]["meter_name"], m["data"]["ticks"]), ("kegboard.flow1", 10))
                self.assertFalse([x for x in seen if x["data"].get("meter_name") == "kegboard.flow0"])

                # A bad value on reload: ERROR, and the settings in force stay (flow1 still off).
                write_file(taps, "[kegboard.flow1]\nghost_filter = sometimes\n")
                core.signal(signal.SIGHUP)
                core.wait_line(r"ERROR    \(TapManager\) Bad taps file: .*taps\.ini:2: ghost_filter: expected on, log "
                               r"or off, not 'sometimes'")
                p.send("MeterUpdate", meter_name="kegboard.flow1", reading=15)
                m, _ = listener.recv_until(lambda m: m["event"] == "FlowUpdate", timeout=5)
                self.assertEqual((m["data"]["meter_name"], m["data"]["ticks"]), ("kegboard.flow1", 15))
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


class QuarantineTest(unittest.TestCase):
    """A tap quarantined by the ghost filter (ghost-pours.md section 9) stays so over a restart:
    quarantine.json is read at start-up; kegnet start_flow is ignored on it and its ticks are ghost.
    A corrupt file is a WARNING and means no quarantine."""

    def test_quarantine_file_at_start(self):
        with kbtest.TempDir() as tmp:
            taps = write_file(os.path.join(tmp, "taps.ini"), "[kegboard.flow0]\nticks_per_ml = 2.2\n"
                              "[kegboard.flow1]\nticks_per_ml = 2.2\n")
            state = os.path.join(tmp, "state")
            os.makedirs(state)
            write_file(os.path.join(state, "quarantine.json"),
                       '{"version":1,"meters":{"kegboard.flow0":{"since":"2026-11-26T12:10:02Z","cuts":2,'
                       '"max_pour_s":300}}}\n')
            core = Core(tmp, taps=taps)
            try:
                core.wait_line(r"WARNING  \(flowmanager\) Tap kegboard\.flow0 is quarantined since "
                               r"2026-11-26T12:10:02Z \(2 cuts of 300 s\); its ticks are ignored until ClearQuarantine")
                listener = core.connect()
                p = core.connect()
                p.send("FlowRequest", meter_name="kegboard.flow0", request="start_flow")
                p.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
                p.send("MeterUpdate", meter_name="kegboard.flow0", reading=500)
                # A pour on the other tap, sent last: once it shows, flow0's messages were handled.
                p.send("MeterUpdate", meter_name="kegboard.flow1", reading=0)
                p.send("MeterUpdate", meter_name="kegboard.flow1", reading=500)
                m, seen = listener.recv_until(lambda m: m["event"] == "FlowUpdate", timeout=5)
                self.assertEqual(m["data"]["meter_name"], "kegboard.flow1")
                self.assertFalse([x for x in seen if x["data"].get("meter_name") == "kegboard.flow0"])
                core.wait_line(r"INFO     \(flowmanager\) Tap kegboard\.flow0 is quarantined; not starting a flow")
                self.assertFalse(core.stderr_lines(r"FlowRequest for kegboard\.flow0 failed"))
                # Its ticks are ghost, rule G7, reported at shutdown at the latest.
                self.assertEqual(core.stop(), 0)
                core.wait_line(r"WARNING  \(flowmanager\) Ghost ticks on kegboard\.flow0: 500 ticks \(227\.3 mL\) "
                               r"over 0\.0 s, rule G7 \(tap quarantined\); not recorded; series 0:500")
            finally:
                core.kill()

            # Still quarantined after the restart (the file was not rewritten); a corrupt file is not.
            core = Core(tmp, taps=taps)
            try:
                core.wait_line(r"Tap kegboard\.flow0 is quarantined since 2026-11-26T12:10:02Z")
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()
            write_file(os.path.join(state, "quarantine.json"), '{"version":1,"meters":{"kegboard.flow0":')
            core = Core(tmp, taps=taps)
            try:
                core.wait_line(r"WARNING  \(flowmanager\) .*quarantine\.json is not a valid quarantine file; no tap "
                               r"is quarantined")
                listener = core.connect()
                core.connect().send("FlowRequest", meter_name="kegboard.flow0", request="start_flow")
                m, _ = listener.recv_until(lambda m: m["event"] == "FlowUpdate", timeout=5)
                self.assertEqual(m["data"]["meter_name"], "kegboard.flow0")
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


class ReloadAndThermoTest(unittest.TestCase):
    def test_sighup_reloads_taps(self):
        with kbtest.TempDir() as tmp:
            taps = write_file(os.path.join(tmp, "taps.ini"), "[kegboard.flow0]\nml_per_tick = 1.0\n")
            core = Core(tmp, taps=taps)
            try:
                core.wait_line(r"Found 1 taps")
                write_file(taps, "[kegboard.flow0]\nml_per_tick = 2.0\n[kegboard.flow5]\nticks_per_ml = 4\n")
                core.signal(signal.SIGHUP)
                core.wait_line(r"\(TapManager\) Registering new tap: kegboard\.flow5")
                core.wait_line(r"\(TapManager\) Updating tap: kegboard\.flow0 ml_per_tick=2")
                # A syntax error keeps the old table.
                write_file(taps, "[kegboard.flow0]\nml_per_tick = -3\n")
                core.signal(signal.SIGHUP)
                core.wait_line(r"ERROR    \(TapManager\) Bad taps file")
                listener = core.connect()
                r = run_test_flow(core.port, "--ticks=100", "--steps=1", "--delay_seconds=0",
                                  "--explicit_start_stop", "--meter_name=kegboard.flow5")
                self.assertEqual(r.returncode, 0, r.stderr)
                m, _ = listener.recv_until(lambda m: m["event"] == "DrinkCreatedEvent")
                self.assertAlmostEqual(m["data"]["volume_ml"], 25.0)
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()

    def test_thermo_log_once_per_minute_and_range(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                c = core.connect()
                for v in (4.5, 4.6, 85.0, -20.1, 80.1):
                    c.send("ThermoEvent", sensor_name="kegboard.thermo-1", sensor_value=v)
                c.send("ThermoEvent", sensor_name="kegboard.thermo-2", sensor_value=-20.0)
                core.wait_line(r"\(ThermoManager\) Recording temperature sensor=kegboard\.thermo-2 value=-20")
                core.wait_line(r"\(ThermoManager\) Recording temperature sensor=kegboard\.thermo-1 value=4\.5")
                # Events are handled in order: once thermo-2's reading (sent last) is in the log,
                # whatever thermo-1's readings caused is there too.
                kbtest.wait_until(lambda: [e for e in core.thermo_log() if e["sensor_name"] == "kegboard.thermo-2"],
                                  what="thermo-2 in thermo.log")
                log = core.thermo_log()
                # Two sensors, one recorded reading each (unless the minute turned over in between).
                names = [e["sensor_name"] for e in log]
                self.assertIn(names.count("kegboard.thermo-1"), (1, 2))
                self.assertEqual(names.count("kegboard.thermo-2"), 1)
                self.assertEqual(log[0]["temperature_c"], 4.5)
                self.assertFalse([e for e in log if e["temperature_c"] > 80 or e["temperature_c"] < -20])
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


if __name__ == "__main__":
    kbtest.main()
