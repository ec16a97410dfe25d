"""kegbot_core's Kegboard Event Protocol backend (kegboard-event-protocol.md) against the stand-in
Kegbot Server 2.0 receiver: pours exactly once through lost answers and kill -9, heartbeats, pairing
(pending, allowed, revoked, denied), backoff, 413 splitting, rejected events, commands and their
acknowledgements, two boards, unmappable meters. Every test ends with the receiver's strict checks of
every batch (section 16.2) finding nothing."""
import calendar
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kbtest  # noqa: E402
from eventtest import EventCore, EventStandIn  # noqa: E402

UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


class Base(unittest.TestCase):
    require_auth = False

    def setUp(self):
        self.tmpd = kbtest.TempDir("kegbot-event-")
        self.tmp = self.tmpd.__enter__()
        self.standin = EventStandIn(require_auth=self.require_auth)
        self.cores = []

    def tearDown(self):
        try:
            for c in self.cores:
                c.kill()
            violations = self.standin.violations()
        finally:
            self.standin.stop()
            self.tmpd.__exit__(None, None, None)
        self.assertEqual(violations, [], "the receiver's checks of every batch (section 16.2)")

    def core(self, *flags, **kw):
        c = EventCore(self.tmp, self.standin, *flags, **kw)
        self.cores.append(c)
        return c


class EventBackendTest(Base):
    """A receiver that takes batches without a token (section 7, first paragraph)."""

    def queue_while_down(self, c, temperatures, pour_ticks):
        """The receiver answers 503 while `temperatures` readings (one sensor each) and a pour are
        spooled; returns when they all are."""
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        for i in range(temperatures):
            c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-%02d" % i, sensor_value=4.0)
        c.pour("kegboard.flow0", pour_ticks)
        kbtest.wait_until(lambda: len(c.spool_files()) >= temperatures + 1, what="the backlog spooled")

    # ------------------------------------------------------------------ pours

    def test_pour_reaches_the_receiver_once(self):
        c = self.core()
        c.wait_line(r"\(main\) Kegboard Event Protocol: event_url=http://127\.0\.0\.1:\d+/api/kegboard-event")
        c.wait_line(r"Device kegboard: new boot_id [0-9a-f]{16}")
        boot = self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")[0]
        self.assertEqual(boot["data"]["state"], "boot")
        self.assertEqual(boot["id"], 1)
        c.pour("kegboard.flow0", 220)
        dce = c.wait_drink_created()
        self.assertRegex(dce["uuid"], UUID_RE)
        self.assertIsNone(dce["drink_id"])
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual(len(drinks), 1)
        d = drinks[0]
        self.assertEqual(d["pour_id"], dce["uuid"])
        self.assertEqual(d["meter_number"], 0)
        self.assertEqual(d["ticks"], 220)
        self.assertEqual(d["volume_ml"], 100.0)
        self.assertEqual(d["ml_per_tick"], 1 / 2.2)
        self.assertEqual(d["tick_series"], "0:220")
        self.assertLess(d["age_ms"], 2000)
        self.assertEqual(d["device"], "kegboard")
        self.assertEqual(d["boot_id"], c.state()["boot_id"])
        c.wait_line(r"\(DrinkManager\) Delivered pour %s meter=kegboard\.flow0 liters=0\.1 ticks=220 "
                    r"device=kegboard event=\d+" % dce["uuid"])
        kbtest.wait_until(lambda: not c.spool_files(), what="empty spool")
        # The request: JSON, no Authorization while unpaired.
        r = [r for r in self.standin.event_requests() if '"pour"' in r["raw"]][0]
        self.assertEqual(r["headers"]["Content-Type"], "application/json")
        self.assertNotIn("Authorization", r["headers"])

    def test_pour_through_kegboard_sim(self):
        """The issue's end-to-end case: a pour on a pty Kegboard (kegboard_sim) through kegboard_daemon
        reaches the receiver once, with the right volume, its pour_id and its age."""
        c = self.core()
        sim = kbtest.Sim(self.tmp, "--nobuzzer", link_name="ttyKB0")
        daemon = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kegboard_device=" + sim.link,
                              "--kb_core_addr=%d" % c.port, "--probe_seconds=1",
                              "--runtime_dir=" + os.path.join(self.tmp, "run")], name="kegboard_daemon")
        try:
            c.wait_line(r"\(main\) Controller connected: kegboard ", timeout=20)
            sim.cmd("pour flow0 440 1.0")
            dce = c.wait_drink_created(timeout=30)
            drinks = self.standin.wait_event_drinks(1, timeout=20)
            kbtest.wait_until(lambda: not c.spool_files(), what="empty spool")
            self.assertEqual(len(self.standin.event_drinks()), 1)
            d = drinks[0]
            self.assertEqual(d["pour_id"], dce["uuid"])
            self.assertEqual(d["ticks"], 440)
            self.assertEqual(d["volume_ml"], 200.0)
            self.assertGreater(d["duration_ms"], 500)
            # Dated at the last counted tick: the flow's idle end came later, and age_ms says so.
            self.assertGreater(d["age_ms"], 0)
            self.assertLess(abs(d["time"] - (d["received"] - d["age_ms"] / 1000.0)), 0.01)
            self.assertLess(d["age_ms"], 30000)
            self.assertTrue(self.standin.events("status")[0]["data"]["fw_version"].startswith("kegbot-core/"))
        finally:
            daemon.kill()
            sim.kill()

    def test_lost_answer_then_resend_gives_one_drink(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("lost", count=1, match={"type": "pour"})
        c.pour("kegboard.flow0", 110)
        c.wait_line(r"Device kegboard: delivery failed")
        drinks = self.standin.wait_event_drinks(1)
        kbtest.wait_until(lambda: c.count_lines(r"Delivered pour ") == 1, what="delivered")
        kbtest.wait_until(lambda: not c.spool_files(), what="empty spool")
        self.assertEqual(len(self.standin.event_drinks()), 1)
        # The same (boot_id, id) went twice: the cursor skipped the resend.
        pours = [r for r in self.standin.event_requests() if '"type":"pour"' in r["raw"]]
        self.assertEqual(len(pours), 2)
        self.assertEqual(pours[0]["body"]["events"][0]["id"], pours[1]["body"]["events"][0]["id"])
        self.assertGreaterEqual(self.standin.roster()["devices"]["kegboard"]["skipped"], 1)
        self.assertEqual(drinks[0]["ticks"], 110)

    def test_kill_9_mid_batch_then_restart_gives_one_drink(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        old = c.state()
        self.standin.event_fail("hang", match={"type": "pour"})
        c.pour("kegboard.flow0", 330)
        kbtest.wait_until(lambda: [r for r in self.standin.event_requests() if r.get("status") == "hang"],
                          what="the pour's request hanging")
        pour_file = [f for f in c.spool_files() if f.endswith("-pour.json")]
        self.assertEqual(len(pour_file), 1)
        c.kill()
        self.assertEqual(self.standin.event_drinks(), [])
        self.standin.clear_failures()
        c2 = self.core(state_dir=c.state_dir)
        c2.wait_line(r"Device kegboard: keeping boot_id %s, \d+ events queued" % old["boot_id"])
        drinks = self.standin.wait_event_drinks(1)
        kbtest.wait_until(lambda: not c2.spool_files(), what="empty spool")
        self.assertEqual(len(drinks), 1)
        self.assertEqual(drinks[0]["ticks"], 330)
        self.assertEqual(drinks[0]["boot_id"], old["boot_id"])
        self.assertEqual(drinks[0]["event_id"], int(os.path.basename(pour_file[0]).split("-")[0]))
        # New events of the restarted core take ids above the old id_limit.
        st = self.standin.wait_events(lambda e: e["type"] == "status" and e["id"] >= old["id_limit"],
                                      what="a status above the old id_limit")
        self.assertEqual(st[0]["data"]["state"], "boot")
        self.assertEqual(c2.state()["boot_id"], old["boot_id"])

    def test_kill_9_after_commit_gives_one_drink(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("hang", match={"type": "pour"})
        c.pour("kegboard.flow0", 150)
        kbtest.wait_until(lambda: [r for r in self.standin.event_requests() if r.get("status") == "hang"],
                          what="the pour's request hanging")
        c.kill()
        # Committed by the receiver, answer never seen by the core: the spool still holds it.
        self.standin.clear_failures()
        self.standin.event_fail("lost", count=1, match={"type": "pour"})
        c2 = self.core(state_dir=c.state_dir)
        kbtest.wait_until(lambda: len(self.standin.event_drinks()) == 1, what="the pour committed")
        c2.kill()
        c3 = self.core(state_dir=c.state_dir)
        kbtest.wait_until(lambda: not c3.spool_files(), what="empty spool")
        self.assertEqual(len(self.standin.event_drinks()), 1)

    def test_startup_recovery_renumbers_and_keeps_corrupt_files(self):
        """Section 2.6: a spool that disagrees with state.json is renumbered under a new boot_id (the
        pour stays single through its pour_id); an unreadable file moves to failed/<name>.corrupt;
        leftover temporary files go."""
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        c.pour("kegboard.flow0", 220)
        kbtest.wait_until(lambda: [f for f in c.spool_files() if f.endswith("-pour.json")], what="pour spooled")
        old = c.state()
        c.kill()
        spool = os.path.join(c.device_dir(), "spool")
        with open(os.path.join(c.device_dir(), "state.json"), "w") as f:
            f.write("{garbage")
        with open(os.path.join(spool, "%020d-temperature.json" % 999), "w") as f:
            f.write("not json")
        with open(os.path.join(spool, ".%020d-pour.json.tmp" % 1000), "w") as f:
            f.write("half")
        self.standin.clear_failures()
        c2 = self.core(state_dir=c.state_dir)
        c2.wait_line(r"ERROR .*Device kegboard: spool file 00000000000000000999-temperature\.json is unreadable; "
                     r"moved to failed/00000000000000000999-temperature\.json\.corrupt")
        c2.wait_line(r"ERROR .*Device kegboard: spool and state.json disagree; renumbering 1 events under a new boot_id")
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual(len(drinks), 1)
        self.assertEqual(drinks[0]["ticks"], 220)
        self.assertEqual(drinks[0]["event_id"], 1)
        self.assertNotEqual(drinks[0]["boot_id"], old["boot_id"])
        self.assertEqual(c2.state()["boot_id"], drinks[0]["boot_id"])
        self.assertEqual([os.path.basename(f) for f in c2.failed_files()],
                         ["00000000000000000999-temperature.json.corrupt"])
        self.assertFalse([f for f in os.listdir(spool) if f.endswith(".tmp")])

    def test_legacy_drinks_left_in_spool_are_kept(self):
        os.makedirs(os.path.join(self.tmp, "state", "spool"))
        with open(os.path.join(self.tmp, "state", "spool", "00000000000000000001-x.json"), "w") as f:
            f.write("{}\n")
        c = self.core()
        c.wait_line(r"WARNING .*1 drinks queued for the legacy API but --api_url is empty; they stay in spool/")
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "state", "spool", "00000000000000000001-x.json")))

    def test_outage_backoff_and_order(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        for i in range(3):
            c.pour("kegboard.flow0", 100 + i)
        for i in range(2):
            c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-%d" % i, sensor_value=4.5 + i)
        kbtest.wait_until(lambda: c.count_lines(r"Device kegboard: delivery failed \(HTTP 503\); retry in 4 s") >= 1,
                          timeout=20, what="backoff reaching 4 s")
        c.wait_line(r"WARNING .*Device kegboard: delivery failed \(HTTP 503\); retry in 1 s")
        c.wait_line(r"INFO .*Device kegboard: delivery failed \(HTTP 503\); retry in 2 s")
        t0 = time.time()
        self.standin.clear_failures()
        drinks = self.standin.wait_event_drinks(3, timeout=30)
        c.wait_line(r"Device kegboard: delivering again after \d+ failed attempts")
        self.assertEqual([d["ticks"] for d in drinks], [100, 101, 102])
        temps = self.standin.events("temperature")
        self.assertEqual(sorted(t["data"]["sensor"] for t in temps), ["thermo-0", "thermo-1"])
        evs = self.standin.events()
        ids = [e["id"] for e in evs]
        self.assertEqual(ids, sorted(ids))
        # age_ms says how long each waited: at least since the outage began.
        for d in drinks:
            self.assertGreater(d["age_ms"], 1000)
            self.assertLess(abs((d["received"] - d["age_ms"] / 1000.0) - d["time"]), 1.0)
        self.assertLess(time.time() - t0, 30)

    def test_413_splits_until_accepted(self):
        c = self.core()
        self.queue_while_down(c, 15, 120)
        self.standin.event_set(max_body=1000)
        self.standin.clear_failures()
        c.wait_line(r"Device kegboard: batch of 1[67] events too large \(413\); retrying with at most 8")
        self.standin.wait_event_drinks(1, timeout=20)
        kbtest.wait_until(lambda: len(self.standin.events("temperature")) == 15, what="every temperature")
        self.assertEqual(c.failed_files(), [])

    def test_413_single_pour_is_quarantined(self):
        c = self.core("--dbus=none")
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_set(max_body=150)
        c.pour("kegboard.flow0", 120)
        c.wait_line(r"Device kegboard: server rejected event \d+ \(pour\): 413 413; moved to failed/")
        kbtest.wait_until(lambda: c.failed_files(), what="the pour in failed/")
        self.assertTrue(c.failed_files()[0].endswith("-pour.json"))
        self.assertEqual(self.standin.event_drinks(), [])

    def test_400_on_one_event_quarantines_it_alone(self):
        c = self.core()
        self.queue_while_down(c, 8, 130)
        bad = int(os.path.basename(c.spool_files()[3]).split("-")[0])
        # One rule replaces the other at once: no batch can slip through between them.
        self.standin.event_fail("400", match={"id": bad})
        self.standin.wait_event_drinks(1, timeout=20)
        kbtest.wait_until(lambda: len(self.standin.events("temperature")) == 7, what="7 temperatures")
        c.wait_line(r"Device kegboard: server rejected event %d \(temperature\): 400 " % bad)
        self.assertEqual(len(c.failed_files()), 1)
        self.assertIn("%020d-temperature.json" % bad, c.failed_files()[0])
        self.standin.clear_failures()
        kbtest.wait_until(lambda: c.state()["events_dropped"] == 1, what="events_dropped 1")

    def test_endpoint_error_keeps_everything(self):
        self.standin.event_fail("404")
        c = self.core()
        c.wait_line(r"ERROR .*Device kegboard: http://127\.0\.0\.1:\d+/api/kegboard-event answered 404; check --event_url")
        c.pour("kegboard.flow0", 140)
        kbtest.wait_until(lambda: c.count_lines(r"answered 404; check --event_url") >= 2, what="a second ERROR")
        self.assertEqual(c.failed_files(), [])
        self.standin.clear_failures()
        self.standin.wait_event_drinks(1)

    def test_pour_updates_carry_the_pour_id(self):
        c = self.core("--event_pour_update_ms=250")
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=50)
        first = self.standin.wait_events(lambda e: e["type"] == "pour_update", what="a pour_update")[0]
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=150)
        self.standin.wait_events(lambda e: e["type"] == "pour_update" and e["data"]["volume_ml"] > 60,
                                 what="a later pour_update")
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        pour = self.standin.wait_events(lambda e: e["type"] == "pour", what="the pour")[0]
        ups = self.standin.events("pour_update")
        self.assertEqual({u["data"]["pour_id"] for u in ups}, {pour["data"]["pour_id"]})
        self.assertEqual(first["data"]["volume_ml"], 22.727)
        self.assertTrue(all(u["id"] < pour["id"] for u in ups))
        self.assertEqual(pour["data"]["ticks"], 150)

    def test_no_leapfrogging_behind_a_backlog(self):
        c = self.core("--event_pour_update_ms=250")
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        for i in range(40):
            c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-%02d" % i, sensor_value=4.0)
        kbtest.wait_until(lambda: len(c.spool_files()) >= 40, what="40 events spooled")
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=30)
        self.standin.clear_failures()
        kbtest.wait_until(lambda: len(self.standin.events("temperature")) == 40, what="the backlog delivered")
        for r in self.standin.event_requests():
            evs = (r.get("body") or {}).get("events") or []
            if any(e["type"] == "pour_update" for e in evs):
                # Only in a batch that took everything queued: nothing older stays behind.
                self.assertLess(len([e for e in evs if e["type"] != "pour_update"]), 16)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=60)
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        self.standin.wait_event_drinks(1)

    # ------------------------------------------------------------------ status

    def test_heartbeat_content_and_totals_across_restart(self):
        taps = ("[kegboard.flow1]\nticks_per_ml = 5.4\nrelay_name = kegboard.relay1\n"
                "[kegboard.flow0]\nticks_per_ml = 2.2\nrelay_name = kegboard.relay0\n")
        c = self.core(taps=taps)
        boot = self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")[0]["data"]
        self.assertEqual(boot["state"], "boot")
        self.assertTrue(boot["fw_version"].startswith("kegbot-core/"))
        self.assertEqual(boot["config"], {"heartbeat_ms": 10000, "pour_update_ms": 1000, "queue_capacity": 10000})
        self.assertEqual([m["meter_number"] for m in boot["meters"]], [0, 1])
        self.assertEqual(boot["meters"][0]["ml_per_tick"], 1 / 2.2)
        self.assertEqual(boot["meters"][1]["ml_per_tick"], 1 / 5.4)
        self.assertEqual(boot["relays"], [{"relay_number": 0}, {"relay_number": 1}])
        c.pour("kegboard.flow0", 500)
        hb = self.standin.wait_events(lambda e: e["type"] == "status" and e["data"]["state"] == "heartbeat",
                                      timeout=20, what="a heartbeat")[0]
        self.assertEqual(hb["data"]["meters"][0]["total_ticks"], 500)
        c.stop()
        c2 = self.core(taps=taps, state_dir=c.state_dir)
        c2.pour("kegboard.flow0", 50)
        kbtest.wait_until(lambda: [e for e in self.standin.events("status")
                                   if e["data"]["state"] == "heartbeat" and e["data"]["uptime_ms"] < 15000
                                   and e["data"]["meters"][0]["total_ticks"] == 550],
                          timeout=25, what="a heartbeat of the new process with 550 ticks")

    def test_volatile_status_replaced_while_down(self):
        """Scenario 18: at most one status waits; the delivered one keeps "boot"; heartbeats follow;
        a restart with an empty spool starts a new boot_id with ids from 1."""
        self.standin.event_fail("503")
        c = self.core()
        c.wait_line(r"Device kegboard: delivery failed \(HTTP 503\)")
        # The heartbeat replaces the unsent boot status: a new id at the tail, still "boot".
        kbtest.wait_until(lambda: [e for r in self.standin.event_requests() for e in r["body"]["events"]
                                   if e["type"] == "status" and e["id"] > 1],
                          timeout=30, what="a heartbeat replacing the boot status while down")
        for r in self.standin.event_requests():
            self.assertEqual(len([e for e in r["body"]["events"] if e["type"] == "status"]), 1)
        self.standin.clear_failures()
        st = self.standin.wait_events(lambda e: e["type"] == "status", timeout=20, what="a status delivered")
        self.assertEqual(st[0]["data"]["state"], "boot")
        self.assertGreater(st[0]["id"], 1)
        self.standin.wait_events(lambda e: e["type"] == "status" and e["data"]["state"] == "heartbeat",
                                 timeout=20, what="a heartbeat")
        old = c.state()["boot_id"]
        c.stop()
        c2 = self.core(state_dir=c.state_dir)
        st = self.standin.wait_events(lambda e: e["type"] == "status" and e["boot_id"] != old, what="new boot")
        self.assertEqual((st[0]["id"], st[0]["data"]["state"]), (1, "boot"))
        self.assertNotEqual(c2.state()["boot_id"], old)

    def test_temperature_cap(self):
        """Scenario 31 (shortened): beyond --event_spool_max durable events new temperatures are
        refused and counted; pours are still spooled."""
        c = self.core("--event_spool_max=100")
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        # A connection may bring at most 64 new sensor names (hostile input): two connections.
        extra = kbtest.KegnetConn.connect(c.port)
        self.addCleanup(extra.sock.close)
        for i in range(103):
            (c.conn if i < 60 else extra).send("ThermoEvent", sensor_name="kegboard.thermo-%03d" % i, sensor_value=4.0)
        c.wait_line(r"WARNING .*Device kegboard: spool holds 100 events; dropping temperature readings")
        c.pour("kegboard.flow0", 110)
        kbtest.wait_until(lambda: [f for f in c.spool_files() if f.endswith("-pour.json")], what="pour spooled")
        self.assertEqual(len([f for f in c.spool_files() if f.endswith("-temperature.json")]), 100)
        self.assertEqual(c.count_lines(r"dropping temperature readings"), 1)
        self.standin.clear_failures()
        self.standin.wait_event_drinks(1, timeout=20)
        hb = self.standin.wait_events(lambda e: e["type"] == "status" and e["data"]["events_dropped"] == 3,
                                      timeout=25, what="a status counting 3 dropped readings")
        self.assertTrue(hb)

    # ------------------------------------------------------------------ commands

    def test_commands_applied_once_and_acknowledged(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        deny = self.standin.command("kegboard", "deny", {"auth_device": "core.rfid", "token": "abc",
                                                         "reason": "Unknown token"})
        ident = self.standin.command("kegboard", "identify", {})
        relay = self.standin.command("kegboard", "set_relay", {"relay_number": 0, "enabled": True})
        foo = self.standin.command("kegboard", "foo")
        # The next answer carries them: a pour makes the next request.
        c.pour("kegboard.flow0", 100)
        c.wait_line(r"Device kegboard: command %s \(deny\) -> ok" % deny)
        c.wait_line(r"Device kegboard: server denied core\.rfid/abc: Unknown token")
        c.wait_line(r"Device kegboard: command %s \(identify\) -> unsupported: unsupported command type identify" % ident)
        c.wait_line(r"Device kegboard: command %s \(set_relay\) -> unsupported" % relay)
        c.wait_line(r"Device kegboard: command %s \(foo\) -> unsupported" % foo)
        kbtest.wait_until(lambda: all(x["acked"] for x in self.standin.commands()), what="every command acked")
        res = {e["data"]["command"]: e["data"]["result"] for e in self.standin.events("command_result")}
        self.assertEqual(res, {deny: "ok", ident: "unsupported", relay: "unsupported", foo: "unsupported"})
        self.assertEqual(len(self.standin.events("command_result")), 4)

    def test_command_resent_until_acked_is_applied_once(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        deny = self.standin.command("kegboard", "deny", {"reason": "r"})
        # The first acknowledgement is rejected (and quarantined): the receiver keeps re-sending the
        # command with every answer; the core knows it and only acknowledges it again.
        self.standin.event_fail("400", count=1, match={"type": "command_result"})
        c.pour("kegboard.flow0", 100)
        c.wait_line(r"command %s \(deny\) -> ok" % deny)
        c.wait_line(r"server rejected event \d+ \(command_result\): 400 ")
        c.pour("kegboard.flow0", 100)
        self.standin.wait_event_drinks(2)
        kbtest.wait_until(lambda: all(x["acked"] for x in self.standin.commands()), what="acked")
        self.assertEqual(c.count_lines(r"command %s \(deny\)" % deny), 1)
        self.assertEqual(len(self.standin.events("command_result")), 1)
        self.assertEqual(len([f for f in c.failed_files() if f.endswith("-command_result.json")]), 1)

    def test_wall_clock_step_before_delivery(self):
        """Scenario 32 under faketime (DONT_FAKE_MONOTONIC=1: the boot and monotonic clocks run true):
        a pour recorded, then the core's wall clock stepped 1 h ahead before the pour is delivered ->
        the receiver still dates the drink right (age_ms comes from the boot clock); with the timesyncd
        flag file absent no "time" field is sent, with it present "time" is the (stepped) wall clock."""
        lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
        if not os.path.exists(lib):
            raise unittest.SkipTest("libfaketime is not installed (Debian package faketime)")
        timers = os.environ.get("KEGBOT_FAKETIME_TIMERS") or os.path.join(
            kbtest.BUILD_DIR, "tests", "integration", "event", "faketime-timers.so")
        offset = os.path.join(self.tmp, "faketime")
        flag = os.path.join(self.tmp, "synchronized")
        with open(offset, "w") as f:
            f.write("+0\n")
        env = {"LD_PRELOAD": timers + ":" + lib, "FAKETIME_TIMESTAMP_FILE": offset, "FAKETIME_NO_CACHE": "1",
               "DONT_FAKE_MONOTONIC": "1", "KEGBOT_TIMESYNC_FLAG": flag,
               # the sanitizer build: libfaketime is preloaded ahead of the ASan runtime
               "ASAN_OPTIONS": ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""), "verify_asan_link_order=0") if x)}
        c = self.core(env=env)
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=110)
        last_tick = time.time()
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        c.conn.recv_until(lambda m: m.get("event") == "FlowUpdate" and m["data"]["state"] == "completed",
                          what="the pour completed")
        kbtest.wait_until(lambda: len(c.spool_files()) == 1, what="the pour spooled")
        with open(offset, "w") as f:
            f.write("+3600\n")
        # The core's own log lines show its wall clock: wait until it has stepped.
        mark = c.count("stderr")
        c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-1", sensor_value=4.0)
        stepped = time.strftime("%Y-%m-%d %H", time.localtime(time.time() + 3600))
        c.wait_line(r"^%s:\d\d:\d\d,\d+ " % re.escape(stepped), key="stderr", start=mark, timeout=10)
        self.standin.clear_failures()
        drinks = self.standin.wait_event_drinks(1)
        self.assertLess(abs(drinks[0]["time"] - last_tick), 1.0, "the drink's time from age_ms")
        pour = self.standin.wait_events(lambda e: e["type"] == "pour", what="the pour")[0]
        self.assertIsNone(pour["time"], "no time field without the timesyncd flag")
        self.assertGreaterEqual(pour["age_ms"], 0)
        # The flag present: the next pour carries "time", the core's (stepped) wall clock at its last tick.
        open(flag, "w").close()
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=220)
        last_tick = time.time()
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        drinks = self.standin.wait_event_drinks(2)
        self.assertLess(abs(drinks[1]["time"] - last_tick), 1.0)
        pour = self.standin.wait_events(lambda e: e["type"] == "pour" and e["id"] != pour["id"], what="pour 2")[0]
        sent = calendar.timegm(time.strptime(pour["time"], "%Y-%m-%dT%H:%M:%SZ"))
        self.assertLess(abs(sent - (last_tick + 3600)), 2.0)

    # ------------------------------------------------------------------ tokens, grants, valves

    def relay_events(self, seen, relay="kegboard.relay0"):
        return [m["data"]["output_mode"] for m in seen
                if m.get("event") == "SetRelayOutputEvent" and m["data"]["output_name"] == relay]

    def test_token_grant_valve_and_tagged_pour(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_set()
        self.standin._event("POST", "policy", {"device": "kegboard", "max_idle_ms": 3000})
        listener = kbtest.KegnetConn.connect(c.port)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                    token_value="DEADBEEF", status="added")
        tok = self.standin.wait_events(lambda e: e["type"] == "token", what="token event")[0]
        self.assertEqual(tok["data"], {"auth_device": "core.rfid", "token": "deadbeef", "action": "attached"})
        self.assertLess(tok["age_ms"], 1000)
        m = c.wait_line(r"Device kegboard: grant (g_[0-9a-f]{8}) applied: meters 0,1 relays 0 max_volume_ml=none "
                        r"lifetime_s=300 max_idle_s=3")
        grant = m.group(1)
        # The relay at once, then re-asserted every second.
        _, seen = listener.recv_until(lambda x: len(self.relay_events([x])) > 0, timeout=5, what="relay on")
        _, more = listener.recv_until(lambda x: x.get("event") == "SetRelayOutputEvent", timeout=3, what="re-assert")
        self.assertEqual(self.relay_events(seen + more), ["enabled", "enabled"])
        c.readings["kegboard.flow0"] = 0
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=220)
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual(drinks[0]["grant_id"], grant)
        self.assertEqual(drinks[0]["auth_token"], "deadbeef")
        # The idle limit ends the grant; the valve closes.
        c.wait_line(r"Device kegboard: grant %s ended \(max_idle\): 100\.0 mL over \d+ ms on meters 0,1" % grant,
                    timeout=10)
        listener.recv_until(lambda x: self.relay_events([x]) == ["disabled"], timeout=5, what="relay off")
        end = self.standin.wait_events(lambda e: e["type"] == "grant_end", what="grant_end")[0]
        self.assertEqual(end["data"]["reason"], "max_idle")
        self.assertEqual(end["data"]["meter_numbers"], [0, 1])
        self.assertEqual(end["data"]["volume_ml"], 100.0)
        self.assertLess(drinks[0]["event_id"], end["id"])
        listener.close()

    def test_volume_limit_and_deauthorize(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        g1 = self.standin.command("kegboard", "authorize", {"grant_id": "g_1", "meter_numbers": [0],
                                                            "relay_numbers": [0], "max_volume_ml": 50})
        c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-1", sensor_value=4.0)
        c.wait_line(r"Device kegboard: command %s \(authorize\) -> ok" % g1)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=120)
        c.wait_line(r"Device kegboard: grant g_1 ended \(max_volume\): 54\.545 mL")
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual(drinks[0]["grant_id"], "g_1")
        self.assertNotIn("auth_token", [k for k, v in drinks[0].items() if v is not None])
        # deauthorize: malformed ids end nothing; an unknown id is ok; none = every grant.
        g2 = self.standin.command("kegboard", "authorize", {"grant_id": "g_2", "meter_numbers": [1]})
        bad = self.standin.command("kegboard", "deauthorize", {"grant_ids": None})
        unknown = self.standin.command("kegboard", "deauthorize", {"grant_ids": ["g_nope"]})
        c.pour("kegboard.flow1", 54)
        c.wait_line(r"command %s \(authorize\) -> ok" % g2)
        c.wait_line(r"command %s \(deauthorize\) -> error: bad grant_ids" % bad)
        c.wait_line(r"command %s \(deauthorize\) -> ok" % unknown)
        self.assertEqual(c.count_lines(r"grant g_2 ended"), 0)
        stop = self.standin.command("kegboard", "deauthorize", {})
        c.pour("kegboard.flow1", 54)
        c.wait_line(r"command %s \(deauthorize\) -> ok" % stop)
        c.wait_line(r"grant g_2 ended \(command\)")
        unknown_meter = self.standin.command("kegboard", "authorize", {"grant_id": "g_3", "meter_numbers": [9]})
        c.pour("kegboard.flow1", 54)
        c.wait_line(r"command %s \(authorize\) -> error: unknown meter 9" % unknown_meter)
        kbtest.wait_until(lambda: all(x["acked"] for x in self.standin.commands()), what="every command acked")

    def test_grant_adoption_and_replacement(self):
        """Scenario 22: a grant adopts the anonymous pour in progress (one pour, its grant_id); another
        person's grant mid-pour replaces it (A's pour, then B's; grant_end "replaced" for A); the same
        token presented again keeps its pour going (one pour)."""
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")

        def grant_applied(auth_device, token):
            mark = c.count("stderr")
            c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name=auth_device,
                        token_value=token, status="added")
            g = c.wait_line(r"grant (g_[0-9a-f]{8}) applied", key="stderr", start=mark).group(1)
            if auth_device == "core.rfid":  # a swipe: the card leaves the reader
                c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name=auth_device,
                            token_value=token, status="removed")
            return g

        def ticks(n):
            c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=n)
            c.conn.recv_until(lambda m: m.get("event") == "FlowUpdate" and m["data"]["meter_name"] == "kegboard.flow0"
                              and m["data"]["ticks"] > 0, what="reading %d counted" % n)

        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        ticks(110)
        a = grant_applied("core.onewire", "0000111122223333")
        ticks(220)
        b = grant_applied("core.rfid", "deadbeef")
        c.wait_line(r"grant %s ended \(replaced\)" % a)
        ticks(330)
        b2 = grant_applied("core.rfid", "deadbeef")
        ticks(440)
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        drinks = self.standin.wait_event_drinks(2)
        self.assertEqual([(d["grant_id"], d["ticks"]) for d in drinks], [(a, 220), (b2, 220)])
        ends = {e["data"]["grant_id"]: e["data"]["reason"] for e in self.standin.events("grant_end")}
        self.assertEqual((ends.get(a), ends.get(b)), ("replaced", "replaced"))
        self.assertEqual(len(self.standin.events("pour")), 2)

    def test_update_moves_a_grant_to_other_meters(self):
        """Section 6.3: an update of a grant_id to a meter set disjoint from its old one ends the old
        meters "replaced" (a partial ending) and the grant lives on with the new set, its volume and
        its relays (the old code freed the grant there and wrote to it afterwards)."""
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        g1 = self.standin.command("kegboard", "authorize", {"grant_id": "g_move", "meter_numbers": [0],
                                                            "relay_numbers": [0]})
        c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-1", sensor_value=4.0)
        c.wait_line(r"Device kegboard: command %s \(authorize\) -> ok" % g1)
        c.pour("kegboard.flow0", 110)
        self.standin.wait_event_drinks(1)
        g2 = self.standin.command("kegboard", "authorize", {"grant_id": "g_move", "meter_numbers": [1],
                                                            "relay_numbers": [0]})
        c.pour("kegboard.flow1", 54)  # a guest pour: its batch's answer carries the update
        c.wait_line(r"Device kegboard: command %s \(authorize\) -> ok" % g2)
        c.wait_line(r"grant g_move ended \(replaced\): 50\.0 mL over [0-9]+ ms on meters 0(?![,0-9])")
        c.pour("kegboard.flow1", 270)
        drinks = self.standin.wait_event_drinks(3)
        self.assertEqual([d["grant_id"] for d in drinks], ["g_move", None, "g_move"])
        stop = self.standin.command("kegboard", "deauthorize", {})
        c.pour("kegboard.flow0", 110)  # meter 0 is no longer granted: a guest pour
        c.wait_line(r"command %s \(deauthorize\) -> ok" % stop)
        c.wait_line(r"grant g_move ended \(command\): 100\.0 mL over [0-9]+ ms on meters 1(?![,0-9])")
        ends = kbtest.wait_until(lambda: len(self.standin.events("grant_end")) >= 2 and self.standin.events("grant_end"),
                                 what="two grant_end events")
        self.assertEqual([(e["data"]["reason"], e["data"]["meter_numbers"]) for e in ends],
                         [("replaced", [0]), ("command", [1])])
        self.assertIsNone(self.standin.wait_event_drinks(4)[3]["grant_id"])

    def test_lifetime_clamp_ends_a_grant_mid_pour(self):
        """Scenario 21, second half: --event_max_grant_s=3 ends a grant asking for more (max_duration)
        even while its meter pours; the pour ends first and carries the grant_id."""
        c = self.core("--event_max_grant_s=3")
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        g = self.standin.command("kegboard", "authorize", {"grant_id": "g_long", "meter_numbers": [0],
                                                           "max_duration_ms": 600000})
        c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-1", sensor_value=4.0)
        c.wait_line(r"Device kegboard: command %s \(authorize\) -> ok" % g)
        c.wait_line(r"grant g_long applied: meters 0 relays none max_volume_ml=none lifetime_s=3 ")
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=110)
        c.conn.recv_until(lambda m: m.get("event") == "FlowUpdate" and m["data"]["ticks"] == 110, what="the pour flowing")
        c.wait_line(r"Device kegboard: grant g_long ended \(max_duration\): 50\.0 mL", timeout=10)
        end = self.standin.wait_events(lambda e: e["type"] == "grant_end", what="grant_end")[0]
        pour = self.standin.wait_events(lambda e: e["type"] == "pour", what="the pour")[0]
        self.assertEqual(end["data"]["reason"], "max_duration")
        self.assertEqual(pour["data"]["grant_id"], "g_long")
        self.assertLess(pour["id"], end["id"])
        self.assertEqual(c.count_lines(r"lifetime_s=600"), 0)

    def test_stale_presentment_is_refused(self):
        c = self.core("--event_auth_window=1")
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                    token_value="deadbeef", status="added")
        c.wait_line(r"Device kegboard: no decision on core\.rfid/deadbeef within 1 s; nothing opens", timeout=5)
        self.standin.clear_failures()
        c.wait_line(r"WARNING .*Device kegboard: authorize cmd_[0-9a-f]+ for core\.rfid/deadbeef ignored: "
                    r"presentment expired", timeout=15)
        kbtest.wait_until(lambda: [x for x in self.standin.commands() if x["acked"]], what="acked")
        self.assertEqual(self.standin.commands()[0]["result"], "error")
        self.assertEqual(self.standin.commands()[0]["message"], "presentment expired")
        self.assertEqual(c.count_lines(r"grant .* applied"), 0)

    def test_held_ibutton_gets_its_late_grant(self):
        """Scenario 26, second half: an iButton (core.onewire, captive) still on its reader after the
        outage: the authorize that arrives long after its window is applied (section 6.4)."""
        c = self.core("--event_auth_window=1")
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.onewire",
                    token_value="0000111122223333", status="added")
        c.wait_line(r"Device kegboard: no decision on core\.onewire/0000111122223333 within 1 s; nothing opens",
                    timeout=5)
        self.standin.clear_failures()
        m = c.wait_line(r"Device kegboard: grant (g_[0-9a-f]{8}) applied: meters 0,1 relays 0 ", timeout=15)
        kbtest.wait_until(lambda: [x for x in self.standin.commands() if x["acked"]], what="acked")
        self.assertEqual([(x["type"], x["result"]) for x in self.standin.commands()], [("authorize", "ok")])
        self.assertEqual(c.count_lines(r"presentment expired"), 0)
        # The grant is real: a pour on its meter carries it.
        c.pour("kegboard.flow0", 110)
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual((drinks[0]["grant_id"], drinks[0]["auth_token"]), (m.group(1), "0000111122223333"))

    def test_captive_detach_ends_the_grant(self):
        c = self.core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.onewire",
                    token_value="0000111122223333", status="added")
        c.wait_line(r"grant (g_[0-9a-f]{8}) applied")
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=220)
        c.conn.recv_until(lambda m: m.get("event") == "FlowUpdate" and m["data"]["ticks"] == 220, what="ticks")
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.onewire",
                    token_value="0000111122223333", status="removed")
        c.wait_line(r"grant g_[0-9a-f]{8} ended \(detach\)")
        end = self.standin.wait_events(lambda e: e["type"] == "grant_end", what="grant_end")[0]
        det = [e for e in self.standin.events("token") if e["data"]["action"] == "detached"][0]
        pour = self.standin.events("pour")[0]
        self.assertLess(det["id"], pour["id"])
        self.assertLess(pour["id"], end["id"])
        self.assertEqual(end["data"]["reason"], "detach")
        # A token on a non-captive reader (core.rfid) leaving it only says so: its grant stays.
        mark = c.count("stderr")
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                    token_value="deadbeef", status="added")
        rfid = c.wait_line(r"grant (g_[0-9a-f]{8}) applied", key="stderr", start=mark).group(1)
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                    token_value="deadbeef", status="removed")
        self.standin.wait_events(lambda e: e["type"] == "token" and e["data"] == {
            "auth_device": "core.rfid", "token": "deadbeef", "action": "detached"}, what="core.rfid detached")
        self.assertEqual(c.count_lines(r"grant %s ended" % rfid), 0)
        self.assertEqual(len(self.standin.events("grant_end")), 1)

    # ------------------------------------------------------------------ devices

    def test_two_boards_two_identities(self):
        taps = "[kegboard-a.flow0]\nticks_per_ml = 2.2\n[kegboard-b.flow0]\nticks_per_ml = 2.2\n"
        c = self.core(taps=taps)
        c.pour("kegboard-a.flow0", 110)
        c.pour("kegboard-b.flow0", 220)
        drinks = self.standin.wait_event_drinks(2)
        by = {d["device"]: d for d in drinks}
        self.assertEqual(by["kegboard-a"]["ticks"], 110)
        self.assertEqual(by["kegboard-b"]["ticks"], 220)
        self.assertNotEqual(c.state("kegboard-a")["boot_id"], c.state("kegboard-b")["boot_id"])
        self.assertNotEqual(by["kegboard-a"]["boot_id"], by["kegboard-b"]["boot_id"])

    def test_unmappable_meter(self):
        c = self.core(taps="[kegboard.tap0]\nticks_per_ml = 2.2\n")
        c.pour("kegboard.tap0", 100)
        c.wait_line(r"ERROR .*Drink [0-9a-f-]{36} on unmappable meter kegboard\.tap0 kept in event/_unmapped/failed/")
        files = os.listdir(os.path.join(c.state_dir, "event", "_unmapped", "failed"))
        self.assertEqual(len(files), 1)
        with open(os.path.join(c.state_dir, "event", "_unmapped", "failed", files[0])) as f:
            self.assertIn('"reason":"unmappable meter kegboard.tap0"', f.read())
        self.assertEqual(self.standin.event_drinks(), [])


class PairingTest(Base):
    """Section 7: the receiver requires a token (Kegbot Server 2.0's default)."""
    require_auth = True

    def test_pending_then_allowed_delivers_everything_once(self):
        c = self.core()
        c.wait_line(r"INFO .*Device kegboard: pairing pending; approve device \"kegboard\" on the Kegbot Server dashboard")
        c.pour("kegboard.flow0", 220)
        c.pour("kegboard.flow1", 54)
        # Polls 5 s apart during the first minute.
        kbtest.wait_until(lambda: len(self.standin.event_requests()) >= 3, timeout=15, what="three polls")
        t = [r["time"] for r in self.standin.event_requests()]
        self.assertGreater(t[2] - t[1], 4.0)
        self.assertEqual(c.count_lines(r"pairing pending; approve"), 1)
        self.assertEqual(self.standin.event_drinks(), [])
        self.standin.pairing("kegboard", "allow")
        c.wait_line(r"Device kegboard: paired; token stored", timeout=15)
        drinks = self.standin.wait_event_drinks(2)
        self.assertEqual(sorted(d["ticks"] for d in drinks), [54, 220])
        token_file = os.path.join(c.device_dir(), "token")
        self.assertEqual(stat.S_IMODE(os.stat(token_file).st_mode), 0o600)
        with open(token_file) as f:
            token = f.read()
        self.assertRegex(token, r"^kbe_[0-9a-f]{40}\n$")
        self.assertNotIn(token.strip(), "\n".join(c.output()))
        last = [r for r in self.standin.event_requests() if '"pour"' in r["raw"]][-1]
        self.assertEqual(last["headers"]["Authorization"], "Bearer " + token.strip())
        # A restart reuses the token: no 401 any more.
        c.stop()
        n = len(self.standin.event_requests())
        c2 = self.core(state_dir=c.state_dir)
        c2.pour("kegboard.flow0", 110)
        self.standin.wait_event_drinks(3)
        later = self.standin.event_requests()[n:]
        self.assertTrue(later)
        self.assertTrue(all(r["status"] == 200 for r in later))

    def test_two_boards_pair_and_grant_independently(self):
        """Scenario 29: allowing one board leaves the other pending (its pours wait); each has its own
        token file; a deauthorize to one never ends the other's grant."""
        taps = "[kegboard-a.flow0]\nticks_per_ml = 2.2\n[kegboard-b.flow0]\nticks_per_ml = 2.2\n"
        self.standin.pairing("kegboard-a", "allow")
        c = self.core(taps=taps)
        c.wait_line(r"Device kegboard-a: paired; token stored")
        c.wait_line(r"Device kegboard-b: pairing pending; approve device \"kegboard-b\"")
        c.pour("kegboard-a.flow0", 110)
        c.pour("kegboard-b.flow0", 220)
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual([(d["device"], d["ticks"]) for d in drinks], [("kegboard-a", 110)])
        self.assertTrue(os.path.exists(os.path.join(c.device_dir("kegboard-a"), "token")))
        self.assertFalse(os.path.exists(os.path.join(c.device_dir("kegboard-b"), "token")))
        self.assertEqual(self.standin.roster()["devices"]["kegboard-b"]["state"], "pending")
        self.standin.pairing("kegboard-b", "allow")
        c.wait_line(r"Device kegboard-b: paired; token stored", timeout=15)
        drinks = self.standin.wait_event_drinks(2)
        self.assertEqual(sorted((d["device"], d["ticks"]) for d in drinks), [("kegboard-a", 110), ("kegboard-b", 220)])
        # A grant on each board; deauthorize the first only.
        for dev in ("kegboard-a", "kegboard-b"):
            g = self.standin.command(dev, "authorize", {"grant_id": "g_" + dev[-1], "meter_numbers": [0]})
            c.conn.send("ThermoEvent", sensor_name=dev + ".thermo-1", sensor_value=4.0)
            c.wait_line(r"Device %s: command %s \(authorize\) -> ok" % (dev, g))
        stop = self.standin.command("kegboard-a", "deauthorize", {})
        c.conn.send("ThermoEvent", sensor_name="kegboard-a.thermo-2", sensor_value=5.0)
        c.wait_line(r"Device kegboard-a: command %s \(deauthorize\) -> ok" % stop)
        c.wait_line(r"Device kegboard-a: grant g_a ended \(command\)")
        c.pour("kegboard-b.flow0", 110)
        drinks = self.standin.wait_event_drinks(3)
        self.assertEqual([d["grant_id"] for d in drinks if d["device"] == "kegboard-b"][-1], "g_b")
        self.assertEqual(c.count_lines(r"grant g_b ended"), 0)

    def test_revoked_token_is_deleted_and_pairing_starts_again(self):
        self.standin.pairing("kegboard", "allow")
        c = self.core()
        c.wait_line(r"Device kegboard: paired; token stored")
        token_file = os.path.join(c.device_dir(), "token")
        self.assertTrue(os.path.exists(token_file))
        self.standin.pairing("kegboard", "revoke")
        c.pour("kegboard.flow0", 150)
        c.wait_line(r"WARNING .*Device kegboard: server rejected its token; token deleted, pairing again")
        c.wait_line(r"Device kegboard: pairing pending")
        self.assertFalse(os.path.exists(token_file))
        self.assertTrue([f for f in c.spool_files() if f.endswith("-pour.json")])
        self.standin.pairing("kegboard", "allow")
        self.standin.wait_event_drinks(1, timeout=15)
        self.assertTrue(os.path.exists(token_file))

    def test_denied_sends_nothing_until_sighup(self):
        self.standin.pairing("kegboard", "deny")
        c = self.core()
        c.wait_line(r"WARNING .*Device kegboard: pairing denied by the server; not sending until restart, SIGHUP, "
                    r"Sync\(\) or ResetPairing\(\)")
        n = len(self.standin.event_requests())
        c.pour("kegboard.flow0", 100)
        # The pour is spooled (the sentinel), and nothing goes out for it.
        kbtest.wait_until(lambda: [f for f in c.spool_files() if f.endswith("-pour.json")], what="pour spooled")
        c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-1", sensor_value=4.0)
        kbtest.wait_until(lambda: [f for f in c.spool_files() if f.endswith("-temperature.json")], what="temp spooled")
        time.sleep(1.5)         # a device that ignored "denied" would have retried after 1 s
        self.assertEqual(len(self.standin.event_requests()), n)
        self.standin.pairing("kegboard", "allow")
        c.signal(signal.SIGHUP)
        self.standin.wait_event_drinks(1, timeout=15)


class DbusBase(unittest.TestCase):
    """The core on a private system bus (its name taken, STATUS= lines caught) against the stand-in."""
    require_auth = True

    def setUp(self):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dbus"))
        import busenv
        self.busenv = busenv
        self.tmpd = kbtest.TempDir("kegbot-event-dbus-")
        self.tmp = self.tmpd.__enter__()
        self.standin = EventStandIn(require_auth=self.require_auth)
        self.bus = busenv.PrivateBus(self.tmp)
        self.notify = kbtest.NotifySocket(self.tmp)
        self.core = None
        self.mounts = []

    def tearDown(self):
        try:
            if self.core:
                self.core.kill()
            violations = self.standin.violations()
        finally:
            self.standin.stop()
            self.bus.stop()
            self.notify.close()
            for m in reversed(self.mounts):
                m.__exit__(None, None, None)
            self.tmpd.__exit__(None, None, None)
        self.assertEqual(violations, [])

    def prop(self, path, iface, name):
        return self.bus.get(path, iface, name)

    def start_core(self):
        """The core on the private system bus, its name taken."""
        env = dict(self.bus.env(), **self.notify.env())
        self.core = EventCore(self.tmp, self.standin, dbus="system", env=env)
        self.bus.wait_name()
        return self.core


class DbusPairingTest(DbusBase):
    """The pairing state on D-Bus (Controller EventState and Paired, Manager BackendState), ResetPairing(),
    and the STATUS= line naming the device that waits for approval."""

    def test_pairing_state_on_dbus(self):
        self.start_core()
        path = self.busenv.path_encode("/org/kegbot/Core1/controller", "kegboard")
        ctl = "org.kegbot.Core1.Controller"
        mgr = "org.kegbot.Core1.Manager"
        kbtest.wait_until(lambda: self.prop(path, ctl, "EventState") == "pairing", timeout=10, what="pairing")
        self.assertEqual(self.prop(path, ctl, "Backend"), "event")
        self.assertIs(self.prop(path, ctl, "Paired"), False)
        self.assertEqual(len(self.prop(path, ctl, "BootId")), 16)
        self.assertEqual(self.prop("/org/kegbot/Core1", mgr, "BackendState"), "unauthorized")
        self.assertEqual(self.prop("/org/kegbot/Core1", mgr, "EventUrl"), self.standin.event_url())
        self.notify.wait("STATUS", re.escape("; kegboard: pairing pending (approve it on the server)"))
        self.standin.pairing("kegboard", "allow")
        kbtest.wait_until(lambda: self.prop(path, ctl, "EventState") == "online", timeout=15, what="online")
        self.assertIs(self.prop(path, ctl, "Paired"), True)
        self.assertEqual(self.prop("/org/kegbot/Core1", mgr, "BackendState"), "online")
        self.bus.call("/org/kegbot/Core1", mgr, "ResetPairing", "s", "kegboard")
        self.assertFalse(os.path.exists(os.path.join(self.core.device_dir(), "token")))
        kbtest.wait_until(lambda: self.prop(path, ctl, "EventState") == "pairing", timeout=10, what="pairing again")
        name, _ = self.bus.dbus_call("/org/kegbot/Core1", mgr, "ResetPairing", "s", ["nope"])
        self.assertEqual(name, "org.kegbot.Core1.Error.UnknownController")
        name, _ = self.bus.dbus_call("/org/kegbot/Core1", mgr, "ResetPairing", "s", ["bad name"])
        self.assertEqual(name, "org.freedesktop.DBus.Error.InvalidArgs")

    def test_grant_and_deny_signals(self):
        """GrantStarted, GrantEnded and TokenDenied on the Manager, ActiveGrants on the Controller."""
        self.standin.event_set(require_auth=False)
        self.start_core()
        mon = self.busenv.Monitor(self.bus)
        try:
            path = self.busenv.path_encode("/org/kegbot/Core1/controller", "kegboard")
            ctl = "org.kegbot.Core1.Controller"
            self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
            self.core.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                                token_value="deadbeef", status="added")
            m = mon.wait_signal(lambda x: x["member"] == "GrantStarted", timeout=10, what="GrantStarted")
            p = self.busenv.payload(m)
            self.assertEqual(p[0], "kegboard")
            self.assertRegex(p[1], r"^g_[0-9a-f]{8}$")
            self.assertEqual((p[2], p[3], p[4], p[5]), ([0, 1], [0], "core.rfid", "deadbeef"))
            kbtest.wait_until(lambda: self.prop(path, ctl, "ActiveGrants") == 1, what="ActiveGrants 1")
            self.standin.command("kegboard", "deauthorize", {})
            self.core.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                                token_value="f00d", status="added")
            m = mon.wait_signal(lambda x: x["member"] == "GrantEnded", timeout=10, what="GrantEnded")
            self.assertEqual(self.busenv.payload(m)[:3], ["kegboard", p[1], "command"])
            m = mon.wait_signal(lambda x: x["member"] == "TokenDenied", timeout=10, what="TokenDenied")
            self.assertEqual(self.busenv.payload(m), ["kegboard", "core.rfid", "f00d", "Token not assigned to a user"])
            kbtest.wait_until(lambda: self.prop(path, ctl, "ActiveGrants") == 0, what="ActiveGrants 0")
        finally:
            mon.stop()

    def test_quarantined_pour_requeued_over_dbus(self):
        """Scenario 14, second half: a pour too large for the receiver is quarantined, counted in
        FailedDrinks, and delivered with its pour_id after RetryFailedEvents()."""
        self.standin.event_set(require_auth=False, max_body=150)
        self.start_core()
        path = self.busenv.path_encode("/org/kegbot/Core1/controller", "kegboard")
        ctl = "org.kegbot.Core1.Controller"
        mgr = "org.kegbot.Core1.Manager"
        self.core.pour("kegboard.flow0", 120)
        self.core.wait_line(r"Device kegboard: server rejected event \d+ \(pour\): 413 ")
        kbtest.wait_until(lambda: self.prop("/org/kegbot/Core1", mgr, "FailedDrinks") == 1, what="FailedDrinks 1")
        self.assertGreaterEqual(self.prop(path, ctl, "FailedEvents"), 1)
        failed = [f for f in self.core.failed_files() if f.endswith("-pour.json")]
        self.assertEqual(len(failed), 1)
        with open(failed[0]) as f:
            ev = json.load(f)
        pour_id = ev["data"]["pour_id"]
        # ListDrinks("failed") shows it with why it failed; it is no longer queued.
        listed = self.bus.call("/org/kegbot/Core1", mgr, "ListDrinks", "s", "failed")[0]
        self.assertEqual(len(listed), 1)
        d = {k: v["data"] for k, v in listed[0].items()}  # busctl's variants
        self.assertEqual((d["backend"], d["controller"], d["uuid"], d["seq"], d["meter_name"], d["ticks"],
                          d["http_status"]), ("event", "kegboard", pour_id, ev["id"], "kegboard.flow0", 120, 413))
        self.assertGreater(d["failure_time"], 0)
        self.assertEqual(self.bus.call("/org/kegbot/Core1", mgr, "ListDrinks", "s", "queued"), [[]])
        self.standin.event_set(max_body=16384)
        n = self.bus.call("/org/kegbot/Core1", mgr, "RetryFailedEvents", "s", "kegboard")
        self.assertGreaterEqual(n[0], 1)
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual(drinks[0]["pour_id"], pour_id)
        kbtest.wait_until(lambda: self.prop("/org/kegbot/Core1", mgr, "FailedDrinks") == 0, what="FailedDrinks 0")
        self.assertEqual(self.core.failed_files(), [])
        # RetryFailedDrinks() re-queues quarantined pours too.
        self.standin.event_set(max_body=150)
        self.core.pour("kegboard.flow0", 130)
        kbtest.wait_until(lambda: self.prop("/org/kegbot/Core1", mgr, "FailedDrinks") == 1, what="FailedDrinks 1")
        self.standin.event_set(max_body=16384)
        self.assertEqual(self.bus.call("/org/kegbot/Core1", mgr, "RetryFailedDrinks"), [1])
        self.assertEqual(sorted(d["ticks"] for d in self.standin.wait_event_drinks(2)), [120, 130])

    def test_list_drinks_shows_queued_event_pours(self):
        """ListDrinks("queued") lists a pour waiting in the device's spool: backend "event", its
        controller, its pour_id and, as seq, its event id; it leaves the list once delivered."""
        self.standin.event_set(require_auth=False)
        self.start_core()
        mgr = "org.kegbot.Core1.Manager"
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("503")
        self.core.pour("kegboard.flow0", 140)
        kbtest.wait_until(lambda: [f for f in self.core.spool_files() if f.endswith("-pour.json")], what="the pour spooled")
        with open([f for f in self.core.spool_files() if f.endswith("-pour.json")][0]) as f:
            ev = json.load(f)
        listed = self.bus.call("/org/kegbot/Core1", mgr, "ListDrinks", "s", "queued")[0]
        self.assertEqual(len(listed), 1)
        d = {k: v["data"] for k, v in listed[0].items()}  # busctl's variants
        self.assertEqual((d["backend"], d["controller"], d["uuid"], d["seq"], d["meter_name"], d["ticks"]),
                         ("event", "kegboard", ev["data"]["pour_id"], ev["id"], "kegboard.flow0", 140))
        self.assertNotIn("http_status", d)
        self.assertEqual(self.bus.call("/org/kegbot/Core1", mgr, "ListDrinks", "s", "failed"), [[]])
        self.standin.clear_failures()
        self.assertEqual(self.standin.wait_event_drinks(1)[0]["pour_id"], ev["data"]["pour_id"])
        kbtest.wait_until(lambda: self.bus.call("/org/kegbot/Core1", mgr, "ListDrinks", "s", "queued") == [[]],
                          what="the queued list empty")

    def test_fail_drink_of_a_pour_in_flight(self):
        """FailDrink() of a pour event in the request in flight: the request is aborted, the pour moves
        to failed/ (http_status 0, the operator named), leaves the queue and comes back, delivered
        once with its pour_id, after RetryFailedDrinks()."""
        self.standin.event_set(require_auth=False)
        self.start_core()
        mgr = "org.kegbot.Core1.Manager"
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        self.standin.event_fail("hang", match={"type": "pour"})
        self.core.pour("kegboard.flow0", 150)

        def hung_pour():
            for r in self.standin.event_requests():
                for e in (r.get("body") or {}).get("events") or []:
                    if e["type"] == "pour" and r.get("status") == "hang":
                        return e
            return None
        ev = kbtest.wait_until(hung_pour, what="the pour's request hanging")
        pour_id = ev["data"]["pour_id"]
        self.bus.call("/org/kegbot/Core1", mgr, "FailDrink", "s", pour_id.upper())
        self.core.wait_line(r"Drink %s \(event %d of device kegboard\) moved to failed/ by an operator" % (pour_id, ev["id"]))
        self.assertEqual(self.bus.call("/org/kegbot/Core1", mgr, "ListDrinks", "s", "queued"), [[]])
        listed = self.bus.call("/org/kegbot/Core1", mgr, "ListDrinks", "s", "failed")[0]
        self.assertEqual(len(listed), 1)
        d = {k: v["data"] for k, v in listed[0].items()}  # busctl's variants
        self.assertEqual((d["uuid"], d["http_status"], d["failure_message"]), (pour_id, 0, "moved to failed/ by an operator"))
        self.assertEqual(self.prop("/org/kegbot/Core1", mgr, "FailedDrinks"), 1)
        name, _ = self.bus.dbus_call("/org/kegbot/Core1", mgr, "FailDrink", "s", [pour_id])
        self.assertEqual(name, "org.kegbot.Core1.Error.UnknownDrink")
        self.standin.clear_failures()
        self.assertEqual(self.bus.call("/org/kegbot/Core1", mgr, "RetryFailedDrinks"), [1])
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual([x["pour_id"] for x in drinks], [pour_id])
        kbtest.wait_until(lambda: self.prop("/org/kegbot/Core1", mgr, "FailedDrinks") == 0, what="FailedDrinks 0")


class DbusEventTest(DbusBase):
    """What D-Bus shows of an event controller's flows and spool: the idle limit of a granted flow
    (section 6.8) and SpoolState "degraded" while events wait in memory (section 5.0)."""
    require_auth = False

    def start_core(self):
        super().start_core()
        self.standin.wait_events(lambda e: e["type"] == "status", what="boot status")
        return self.core

    def mount(self, path, size):
        m = kbtest.Tmpfs(path, size)
        m.__enter__()
        self.mounts.append(m)
        return path

    def flow(self):
        """(MaxIdle in s, GrantId) of the one flow on D-Bus, None while there is none."""
        flows = [p for p in self.bus.managed_objects() if p.startswith("/org/kegbot/Core1/flow/")]
        if len(flows) != 1:
            return None
        p = self.bus.get_all(flows[0], "org.kegbot.Core1.Flow")
        return p["MaxIdle"] // 1000000, p["GrantId"]

    def test_granted_flow_idles_by_its_token_device(self):
        """Scenario 20's flow under its grant: the idle limit of core-behaviour.md section 6.3 for
        the grant's echoed auth_device: an anonymous flow adopted by a core.rfid grant gets 20 s,
        a flow a core.onewire grant starts 120 s; a grant without an echo 10 s. The Flow object's GrantId
        names the grant covering its meter (section 12)."""
        c = self.start_core()
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=110)
        kbtest.wait_until(lambda: self.flow() == (10, ""), timeout=5, what="an anonymous flow, 10 s")
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                    token_value="deadbeef", status="added")
        g1 = c.wait_line(r"Device kegboard: grant (g_[0-9a-f]{8}) applied").group(1)
        kbtest.wait_until(lambda: self.flow() == (20, g1), timeout=5, what="adopted by the core.rfid grant, 20 s")
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        self.standin.wait_event_drinks(1)
        mark = c.count("stderr")
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.onewire",
                    token_value="0000111122223333", status="added")
        g2 = c.wait_line(r"Device kegboard: grant (g_[0-9a-f]{8}) applied", key="stderr", start=mark).group(1)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=220)
        kbtest.wait_until(lambda: self.flow() == (120, g2), timeout=5, what="a core.onewire grant's flow, 120 s")
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        self.standin.wait_event_drinks(2)
        # A server-initiated grant (no echo): 10 s; it replaces the iButton's grant on meter 0.
        g = self.standin.command("kegboard", "authorize", {"grant_id": "g_admin", "meter_numbers": [0]})
        c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-1", sensor_value=4.0)
        c.wait_line(r"Device kegboard: command %s \(authorize\) -> ok" % g)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=330)
        kbtest.wait_until(lambda: self.flow() == (10, "g_admin"), timeout=5, what="a grant without an echo, 10 s")
        c.conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        drinks = self.standin.wait_event_drinks(3)
        self.assertEqual(drinks[2]["grant_id"], "g_admin")

    def remount(self, mode):
        r = subprocess.run(["mount", "-o", "remount," + mode, self.spool], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def spool_state(self):
        return self.bus.get("/org/kegbot/Core1", "org.kegbot.Core1.Manager", "SpoolState")

    def test_read_only_spool_during_a_pour(self):
        """Scenario 33: the device's spool directory fails (a read-only file system, which stops root
        as well) during a pour. The pour is still reported completed on kegnet; its event waits in
        memory (SpoolState "degraded") and is delivered from there, exactly once; the write is retried
        at the next spool operation once the directory can be written again."""
        self.spool = self.mount(os.path.join(self.tmp, "state", "event", "kegboard", "spool"), "4m")
        os.chmod(self.spool, 0o750)
        c = self.start_core()
        self.assertEqual(self.spool_state(), "ok")
        self.standin.event_fail("503")
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        c.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=55)
        c.conn.recv_until(lambda m: m.get("event") == "FlowUpdate" and m["data"]["ticks"] == 55, what="pouring")
        self.remount("ro")
        c.readings["kegboard.flow0"] = 55
        done = c.pour("kegboard.flow0", 55)     # completed on kegnet although nothing could be written
        self.assertEqual(done["ticks"], 110)
        c.wait_line(r"ERROR .*Device kegboard: cannot write event \d+ \(pour\) to the spool: .*held in memory")
        kbtest.wait_until(lambda: self.spool_state() == "degraded", timeout=5, what="SpoolState degraded")
        self.assertEqual(c.spool_files(), [])
        self.assertEqual(self.bus.get("/org/kegbot/Core1", "org.kegbot.Core1.Manager", "PendingDrinks"), 1)
        # Delivered from memory, once.
        self.standin.clear_failures()
        drinks = self.standin.wait_event_drinks(1)
        self.assertEqual(drinks[0]["ticks"], 110)
        c.wait_drink_created()
        kbtest.wait_until(lambda: self.spool_state() == "ok", timeout=5, what="SpoolState ok")

        # Held again; the directory writable again: the next spool operation (a token event) writes it.
        self.standin.event_fail("503")
        c.pour("kegboard.flow0", 220)
        kbtest.wait_until(lambda: self.spool_state() == "degraded", timeout=5, what="SpoolState degraded again")
        self.remount("rw")
        c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                    token_value="deadbeef", status="added")
        m = c.wait_line(r"Device kegboard: event (\d+) \(pour\) is written to the spool now")
        kbtest.wait_until(lambda: self.spool_state() == "ok", timeout=5, what="SpoolState ok after the retry")
        self.assertIn(m.group(1).zfill(20) + "-pour.json", [os.path.basename(f) for f in c.spool_files()])
        self.standin.clear_failures()
        drinks = self.standin.wait_event_drinks(2)
        self.assertEqual([d["ticks"] for d in drinks], [110, 220])
        kbtest.wait_until(lambda: c.spool_files() == [], what="the spool emptied")
        self.assertEqual(len(self.standin.events("pour")), 2)
        self.assertEqual(len({e["data"]["pour_id"] for e in self.standin.events("pour")}), 2)


    def test_state_json_unwritable_holds_events_unnumbered(self):
        """Section 9.1: when state.json cannot be written as the ids reach id_limit, new durable events
        wait in memory without an id, in order (SpoolState "degraded"; the pour still completes on
        kegnet); once state.json can be written again they are numbered, spooled and delivered, once."""
        device = self.mount(os.path.join(self.tmp, "state", "event", "kegboard"), "4m")
        self.mount(os.path.join(device, "spool"), "8m")
        self.spool = device     # remount() works on the device directory (state.json)
        c = self.start_core()
        self.remount("ro")
        # 1024 ids per block: token events (attached, detached, and the acks of the server's
        # denials of these unknown tokens) use up the first one.
        for i in range(400):
            for status in ("added", "removed"):
                c.conn.send("TokenAuthEvent", meter_name="kegboard.flow0", auth_device_name="core.rfid",
                            token_value="%08x" % i, status=status)
        c.wait_line(r"ERROR .*Device kegboard: cannot write state\.json \(.*\); holding 1 events", timeout=30)
        done = c.pour("kegboard.flow0", 110)
        self.assertEqual(done["ticks"], 110)
        kbtest.wait_until(lambda: self.spool_state() == "degraded", timeout=5, what="SpoolState degraded")
        self.assertEqual(self.standin.event_drinks(), [])
        self.remount("rw")
        c.conn.send("ThermoEvent", sensor_name="kegboard.thermo-last", sensor_value=4.0)
        c.wait_line(r"Device kegboard: state\.json is written again; \d+ held events numbered")
        kbtest.wait_until(lambda: self.spool_state() == "ok", timeout=5, what="SpoolState ok")
        drinks = self.standin.wait_event_drinks(1, timeout=30)
        self.assertEqual(drinks[0]["ticks"], 110)
        temps = self.standin.wait_events(lambda e: e["type"] == "temperature" and
                                         e["data"]["sensor"] == "thermo-last", timeout=30, what="the last one")
        self.assertEqual(len(self.standin.events("pour")), 1)
        self.assertGreater(temps[0]["id"], self.standin.events("pour")[0]["id"])
        self.assertGreaterEqual(c.state()["id_limit"], 2049)


if __name__ == "__main__":
    kbtest.main()
