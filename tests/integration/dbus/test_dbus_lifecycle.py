"""kegbot_core and its bus over time: a bus that appears after the core started (watch-bind), READY=1
only once the name is the core's, a bus that dies and comes back on the same socket (the core keeps
pouring and takes its name again), the name already taken (exit 1), an unusable bus address (exit 1),
--dbus=none, LogControl1's LogLevel switching DEBUG logging at run time, and the name released at
shutdown."""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busenv  # noqa: E402
import kbtest  # noqa: E402
from busenv import IFACE, ROOT  # noqa: E402

TAP0 = ROOT + "/tap/kegboard_2eflow0"
TAP = IFACE + ".Tap"
LOGCTL = "/org/freedesktop/LogControl1"
LOGCTL_IFACE = "org.freedesktop.LogControl1"


class LifecycleTest(unittest.TestCase):
    def setUp(self):
        self.tmpdir = kbtest.TempDir()
        self.tmp = self.tmpdir.__enter__()
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            if isinstance(p, busenv.PrivateBus):
                p.stop()
            else:
                p.kill()
        self.tmpdir.__exit__(None, None, None)

    def bus(self, start=True):
        b = busenv.PrivateBus(self.tmp, start=start)
        self.procs.append(b)
        return b

    def core(self, bus, *flags, **kw):
        c = busenv.Core(self.tmp, bus, *flags, **kw)
        self.procs.append(c)
        return c

    def test_bus_appears_later(self):
        bus = self.bus(start=False)
        core = self.core(bus, wait=False, wait_name=False)
        conn = core.connect()
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=100)
        # Pouring works without a bus (the update comes back on the same connection).
        conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 100)
        self.assertTrue(core.alive())
        bus.start()
        bus.wait_name()
        self.assertEqual(bus.get(TAP0, TAP, "FlowTicks"), 100)
        self.assertEqual(bus.get(TAP0, TAP, "FlowState"), "active")
        core.wait_line(r"\(dbus\) Serving org\.kegbot\.Core1 on the system bus")
        # Start-up completes (READY=1) only with the name.
        core.wait_line(r"\(main\) All services started\.")
        err = core.output("stderr")
        self.assertLess(next(i for i, l in enumerate(err) if "Serving org.kegbot.Core1" in l),
                        next(i for i, l in enumerate(err) if "All services started." in l))
        conn.close()

    def test_ready_only_once_the_name_is_ours(self):
        # systemd starts the core for a D-Bus call (or BusName= waits for it): READY=1 must not
        # come before org.kegbot.Core1 is owned. The bus is frozen while the core starts.
        bus = self.bus()
        notify = kbtest.NotifySocket(self.tmp)
        try:
            bus.proc.p.send_signal(signal.SIGSTOP)
            core = self.core(bus, wait=False, wait_name=False, env=notify.env())
            notify.wait("STATUS", r"^Starting: waiting for the bus name org\.kegbot\.Core1")
            # The core works meanwhile (kegnet), but it has not said READY=1.
            conn = core.connect()
            conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
            conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=100)
            conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 100)
            self.assertEqual(notify.assignments("READY"), [])
            bus.proc.p.send_signal(signal.SIGCONT)
            notify.wait("READY", "^1$")
            self.assertRegex(notify.assignments("STATUS")[-1], r"^Ready: standalone mode")
            self.assertTrue(bus.name_owner())
            err = core.output("stderr")
            self.assertLess(next(i for i, l in enumerate(err) if "Serving org.kegbot.Core1" in l),
                            next(i for i, l in enumerate(err) if "All services started." in l))
            conn.close()
        finally:
            if bus.proc:
                bus.proc.p.send_signal(signal.SIGCONT)
            notify.close()

    def test_no_bus_at_all(self):
        # The bus never comes: the core works (it never says READY=1) and stops cleanly.
        bus = self.bus(start=False)
        core = self.core(bus, wait=False, wait_name=False)
        conn = core.connect()
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=100)
        conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 100)
        conn.close()
        start = time.monotonic()
        self.assertEqual(core.stop(), 0)
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual([d["ticks"] for d in core.drinks()], [100])

    def test_bus_restarts(self):
        bus = self.bus()
        core = self.core(bus)
        conn = core.connect()
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=50)
        kbtest.wait_until(lambda: bus.get(TAP0, TAP, "FlowTicks") == 50, what="50 ticks")

        for round_ in range(2):
            bus.kill()
            core.wait_line(r"\(dbus\) Lost the connection to the system bus; reconnecting")
            # Pouring goes on without the bus.
            conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=100 + 50 * round_)
            conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 100 + 50 * round_)
            # The scenario: the outage outlasts the 1 s reconnect delay, so the core's reconnect
            # meets the dead socket and has to wait for the bus to come back.
            time.sleep(1.5 * kbtest.SLOW)
            self.assertTrue(core.alive(), "\n".join(core.output()))
            bus.start()
            bus.wait_name(timeout=15)
            kbtest.wait_until(lambda: bus.get(TAP0, TAP, "FlowTicks") == 100 + 50 * round_, timeout=5,
                              what="ticks after the bus came back")
        # Methods work on the new connection.
        bus.call(ROOT, IFACE + ".Manager", "StopFlow", "s", "kegboard.flow0")
        kbtest.wait_until(lambda: bus.get(TAP0, TAP, "FlowState") == "completed", timeout=5, what="completed")
        self.assertEqual([d["ticks"] for d in core.drinks()], [150])
        self.assertEqual(len([l for l in core.output() if "Serving org.kegbot.Core1" in l]), 3)
        conn.close()
        self.assertEqual(core.stop(), 0)

    def test_name_taken(self):
        bus = self.bus()
        self.core(bus)
        second = self.core(bus, wait=False, wait_name=False)
        self.assertEqual(second.wait(10), 1)
        self.assertTrue(any("Cannot serve org.kegbot.Core1 on the system bus: the name is already taken" in l
                            for l in second.output()), "\n".join(second.output()))
        self.assertTrue(bus.name_owner())

    def test_name_denied_by_policy(self):
        # Only root and the kegbot user may own the name: as nobody the core must give up (exit 1).
        bus = self.bus()
        state = os.path.join(self.tmp, "state")
        os.makedirs(state)
        os.chown(state, busenv.NOBODY, busenv.NOBODY)
        c = busenv.Core(self.tmp, bus, wait=False, wait_name=False,
                        prefix=["setpriv", "--reuid=%d" % busenv.NOBODY, "--regid=%d" % busenv.NOBODY,
                                "--clear-groups"])
        self.procs.append(c)
        self.assertEqual(c.wait(10), 1, "\n".join(c.output()))
        self.assertTrue(any("Cannot serve org.kegbot.Core1 on the system bus" in l and "not allowed to own" in l
                            for l in c.output()), "\n".join(c.output()))
        self.assertFalse(bus.name_owner())

    def test_bad_address(self):
        bus = self.bus()
        c = busenv.Core(self.tmp, bus, wait=False, wait_name=False, address="bogus:whatever")
        self.procs.append(c)
        self.assertEqual(c.wait(10), 1)
        self.assertTrue(any("system bus" in l for l in c.output()), "\n".join(c.output()))

    def test_session_bus(self):
        # --dbus=session follows DBUS_SESSION_BUS_ADDRESS and leaves the system bus alone.
        bus = self.bus()
        c = busenv.Core(self.tmp, bus, "--dbus=session", wait_name=False, address="unix:path=/nonexistent/bus",
                        env={"DBUS_SESSION_BUS_ADDRESS": bus.address})
        self.procs.append(c)
        bus.wait_name()
        c.wait_line(r"\(dbus\) Serving org\.kegbot\.Core1 on the session bus")
        self.assertEqual(bus.get(ROOT, IFACE + ".Manager", "Mode"), "standalone")
        self.assertEqual(c.stop(), 0)

    def test_dbus_none(self):
        bus = self.bus()
        core = self.core(bus, "--dbus=none", wait_name=False)
        # Well past start-up (a pour handled), the core has no connection to the bus at all.
        conn = core.connect()
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=100)
        conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 100)
        self.assertFalse(bus.name_owner())
        self.assertNotIn(core.pid, bus.peer_pids())
        self.assertFalse([l for l in core.output() if "(dbus)" in l])
        conn.close()
        self.assertEqual(core.stop(), 0)

    def test_log_level(self):
        bus = self.bus()
        core = self.core(bus)
        conn = core.connect()
        self.assertEqual(bus.get(LOGCTL, LOGCTL_IFACE, "LogLevel"), "info")
        conn.send("QuitEvent")          # dropped with a DEBUG log only
        # Handled in order: by the time a later pour comes back, the QuitEvent was dropped.
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=100)
        conn.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 100)
        self.assertFalse([l for l in core.output() if "QuitEvent" in l])

        bus.busctl("set-property", busenv.NAME, LOGCTL, LOGCTL_IFACE, "LogLevel", "s", "debug", check=True)
        self.assertEqual(bus.get(LOGCTL, LOGCTL_IFACE, "LogLevel"), "debug")
        core.wait_line(r"Log level set to debug over D-Bus")
        conn.send("QuitEvent")
        core.wait_line(r"DEBUG .*QuitEvent")

        bus.busctl("set-property", busenv.NAME, LOGCTL, LOGCTL_IFACE, "LogLevel", "s", "warning", check=True)
        n = len(core.output())
        conn.send("MeterUpdate", meter_name="kegboard.flow9", reading=0)   # first sight: INFO
        # A bad frame after it is logged at WARNING: by then the first sight has been handled.
        conn.send_raw(b"not json\n\n")
        core.wait_line(r"WARNING  \(kegnet\) Dropping bad frame from")
        self.assertFalse([l for l in core.output()[n:] if "INFO" in l], core.output()[n:])
        self.assertEqual(bus.get(LOGCTL, LOGCTL_IFACE, "LogTarget"), "console")
        bus.busctl("set-property", busenv.NAME, LOGCTL, LOGCTL_IFACE, "LogTarget", "s", "null", check=True)
        self.assertEqual(bus.get(LOGCTL, LOGCTL_IFACE, "LogTarget"), "null")
        conn.close()

    def test_shutdown_releases_name_and_records_pour(self):
        bus = self.bus()
        core = self.core(bus)
        mon = busenv.Monitor(bus)
        try:
            conn = core.connect()
            conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
            for i in range(1, 11):
                conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=i * 100)
            kbtest.wait_until(lambda: bus.get(TAP0, TAP, "FlowTicks") == 1000, what="1000 ticks")
            core.signal(signal.SIGTERM)
            self.assertEqual(core.wait(10), 0)
            self.assertFalse(bus.name_owner())
            drink = mon.wait_signal(lambda m: m["member"] == "DrinkRecorded", timeout=5, what="DrinkRecorded")
            self.assertEqual(busenv.payload(drink)[5], 1000)
            # The core has gone, so no ping can show the monitor caught up: wait for the last change.
            def last_change():
                ch = [busenv.payload(m)[1] for m in mon.signals("PropertiesChanged", TAP0)]
                return ch and ch[-1].get("FlowState", {}).get("data") == "completed" and ch[-1]
            final = kbtest.wait_until(last_change, timeout=5, what="the completed flow on the monitor")
            self.assertEqual(final["FlowTicks"]["data"], 1000)
            conn.close()
        finally:
            mon.stop()


if __name__ == "__main__":
    kbtest.main()
