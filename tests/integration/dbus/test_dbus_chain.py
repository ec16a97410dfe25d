"""The whole chain seen on D-Bus: kegboard_sim (pty) -> kegboard_daemon -> kegbot_core ->
org.kegbot.Core1. The board's controller object (serial, firmware, connected), its temperature
sensor, a pour with its final values, SetRelay switching the simulated board's relay through the
daemon, and the controller going disconnected when the daemon stops."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busenv  # noqa: E402
import kbtest  # noqa: E402
from busenv import IFACE, ROOT, Monitor, payload  # noqa: E402

SERIAL = "KB-0000-0000-1A2B3C4D"
BOARD = "kegboard-1a2b3c4d"
TAP0 = busenv.path_encode(ROOT + "/tap", BOARD + ".flow0")
TAP = IFACE + ".Tap"
TAPS = """
[kegboard-1a2b3c4d.flow0]
name = Main Tap
ticks_per_ml = 2.2
relay_name = kegboard-1a2b3c4d.relay0
# The pour below is anonymous: no token opens the valve (ghost-pours.md section 6.1, G1).
valve_closed_gate = false
"""


class ChainTest(unittest.TestCase):
    def test_board_on_dbus(self):
        with kbtest.TempDir() as tmp:
            bus = busenv.PrivateBus(tmp)
            core = busenv.Core(tmp, bus, taps=TAPS)
            mon = Monitor(bus)
            sim = kbtest.Sim(tmp, "--nobuzzer", "--serial_number=" + SERIAL, "--thermo=thermo-0011223344556677=4.5")
            daemon = sim.daemon(core.port)
            try:
                ctrl = ROOT + "/controller/" + BOARD.replace("-", "_2d")
                self.assertEqual(busenv.path_encode(ROOT + "/controller", BOARD), ctrl)
                kbtest.wait_until(lambda: ctrl in bus.managed_objects(), timeout=15, what="controller object")
                props = bus.get_all(ctrl, IFACE + ".Controller")
                self.assertEqual((props["Name"], props["SerialNumber"], props["FirmwareVersion"], props["Connected"]),
                                 (BOARD, SERIAL, 18, True))

                sensor = busenv.path_encode(ROOT + "/sensor", BOARD + ".thermo-0011223344556677")
                kbtest.wait_until(lambda: sensor in bus.managed_objects(), timeout=10, what="sensor object")
                self.assertEqual(bus.get(sensor, IFACE + ".ThermoSensor", "TemperatureC"), 4.5)
                mon.wait_signal(lambda m: m["member"] == "ThermoReading", timeout=5, what="ThermoReading")

                # 100 mL over one second, then stopped over D-Bus.
                sim.cmd("pour flow0 220 1")
                kbtest.wait_until(lambda: bus.get(TAP0, TAP, "FlowTicks") == 220, timeout=10, what="220 ticks")
                bus.call(ROOT, IFACE + ".Manager", "StopFlow", "s", BOARD + ".flow0")
                drink = mon.wait_signal(lambda m: m["member"] == "DrinkRecorded", timeout=5, what="DrinkRecorded")
                self.assertEqual(payload(drink)[3:6], [BOARD + ".flow0", "", 220])
                self.assertAlmostEqual(payload(drink)[6], 100.0, places=6)
                self.assertEqual(bus.get(TAP0, TAP, "FlowVolumeMl"), 100.0)

                # SetRelay reaches the board through its daemon.
                bus.call(ROOT, IFACE + ".Manager", "SetRelay", "sb", BOARD + ".relay0", "true")
                sim.wait_line(r"^\d+ RELAY id=0 state=on cause=command", timeout=5, key="stdout")
                self.assertTrue(bus.get(TAP0, TAP, "RelayEnabled"))
                bus.call(ROOT, IFACE + ".Manager", "SetRelay", "sb", BOARD + ".relay0", "false")
                sim.wait_line(r"^\d+ RELAY id=0 state=off cause=command", timeout=5, key="stdout")
                self.assertFalse(bus.get(TAP0, TAP, "RelayEnabled"))

                # The daemon goes away: the controller stays, disconnected.
                daemon.stop()
                kbtest.wait_until(lambda: not bus.get(ctrl, IFACE + ".Controller", "Connected"), timeout=5,
                                  what="controller disconnected")
                self.assertIn(ctrl, bus.managed_objects())
            finally:
                mon.stop()
                for p in (daemon, sim, core):
                    try:
                        p.stop(5)
                    except AssertionError:
                        p.kill()
                bus.stop()


if __name__ == "__main__":
    kbtest.main()
