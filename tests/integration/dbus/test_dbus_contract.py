"""The introspection contract dbus/org.kegbot.Core1.xml against what a running kegbot_core introspects
(every org.kegbot.Core1.* interface on a live object of its kind), the object tree, and the
LogControl1 object systemctl service-log-level talks to."""
import os
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busenv  # noqa: E402
import kbtest  # noqa: E402
from busenv import IFACE, NAME, ROOT, path_encode  # noqa: E402


def normalise_interface(el):
    """An <interface> element as comparable data: ordering and whitespace do not matter."""
    def annotations(e):
        return tuple(sorted((a.get("name"), a.get("value")) for a in e.findall("annotation")))

    methods = {}
    for m in el.findall("method"):
        methods[m.get("name")] = (tuple((a.get("name"), a.get("type"), a.get("direction", "in"))
                                        for a in m.findall("arg")), annotations(m))
    signals = {}
    for s in el.findall("signal"):
        signals[s.get("name")] = (tuple((a.get("name"), a.get("type")) for a in s.findall("arg")),
                                  annotations(s))
    props = {}
    for p in el.findall("property"):
        props[p.get("name")] = (p.get("type"), p.get("access"), annotations(p))
    return {"methods": methods, "signals": signals, "properties": props, "annotations": annotations(el)}


def interfaces(xml_text):
    root = ET.fromstring(xml_text)
    return {i.get("name"): normalise_interface(i) for i in root.findall("interface")}


class ContractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = kbtest.TempDir()
        tmp = cls.tmp.__enter__()
        cls.bus = busenv.PrivateBus(tmp)
        cls.core = busenv.Core(tmp, cls.bus)
        # One object of every kind: a controller, a sensor and an active flow.
        cls.conn = cls.core.connect()
        cls.conn.send("ControllerConnectedEvent", controller_name="kegboard", serial_number="KB-0000-0000-0001",
                      firmware_version=18, board_reset=False)
        cls.conn.send("ThermoEvent", sensor_name="kegboard.thermo-1", sensor_value=4.5)
        cls.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=100)
        cls.conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=200)
        kbtest.wait_until(lambda: any(p.startswith(ROOT + "/flow/") for p in cls.bus.managed_objects()),
                          timeout=5, what="a flow object")
        with open(busenv.CONTRACT) as f:
            cls.contract = interfaces(f.read())

    @classmethod
    def tearDownClass(cls):
        cls.conn.close()
        cls.core.stop()
        cls.bus.stop()
        cls.tmp.__exit__(None, None, None)

    def introspect(self, path):
        r = self.bus.busctl("introspect", "--xml-interface", NAME, path, check=True)
        return interfaces(r.stdout)

    def check_object(self, path, iface):
        live = self.introspect(path)
        self.assertIn(iface, live, "%s has no %s" % (path, iface))
        self.assertIn(iface, self.contract, "the contract has no %s" % iface)
        want, got = self.contract[iface], live[iface]
        for kind in ("methods", "signals", "properties"):
            self.assertEqual(sorted(got[kind]), sorted(want[kind]), "%s %s names differ" % (iface, kind))
            for name in want[kind]:
                self.assertEqual(got[kind][name], want[kind][name], "%s.%s differs" % (iface, name))
        self.assertEqual(got["annotations"], want["annotations"])
        return live

    def test_contract_lists_exactly_the_five_interfaces(self):
        self.assertEqual(sorted(self.contract), sorted(IFACE + "." + n for n in
                                                       ("Manager", "Tap", "Controller", "ThermoSensor", "Flow")))

    def test_manager(self):
        live = self.check_object(ROOT, IFACE + ".Manager")
        self.assertIn("org.freedesktop.DBus.ObjectManager", live)

    def test_tap(self):
        self.check_object(path_encode(ROOT + "/tap", "kegboard.flow0"), IFACE + ".Tap")
        self.assertEqual(path_encode(ROOT + "/tap", "kegboard.flow0"), ROOT + "/tap/kegboard_2eflow0")

    def test_controller(self):
        self.check_object(ROOT + "/controller/kegboard", IFACE + ".Controller")

    def test_sensor(self):
        self.check_object(path_encode(ROOT + "/sensor", "kegboard.thermo-1"), IFACE + ".ThermoSensor")

    def test_flow(self):
        flows = [p for p in self.bus.managed_objects() if p.startswith(ROOT + "/flow/")]
        self.assertEqual(len(flows), 1)
        self.check_object(flows[0], IFACE + ".Flow")

    def test_tree(self):
        r = self.bus.busctl("tree", "--list", NAME, check=True)
        paths = set(r.stdout.split())
        for p in (ROOT, ROOT + "/tap/kegboard_2eflow0", ROOT + "/tap/kegboard_2eflow1",
                  ROOT + "/controller/kegboard", path_encode(ROOT + "/sensor", "kegboard.thermo-1"),
                  "/org/freedesktop/LogControl1"):
            self.assertIn(p, paths)
        self.assertEqual(len([p for p in paths if p.startswith(ROOT + "/flow/")]), 1)

    def test_managed_objects_match_interfaces(self):
        objs = self.bus.managed_objects()
        kinds = {"tap": "Tap", "controller": "Controller", "sensor": "ThermoSensor", "flow": "Flow"}
        for path, ifs in objs.items():
            kind = path[len(ROOT) + 1:].split("/")[0]
            self.assertIn(kind, kinds, path)
            iface = IFACE + "." + kinds[kind]
            self.assertIn(iface, ifs)
            self.assertEqual(sorted(ifs[iface]), sorted(self.contract[iface]["properties"]))

    def test_log_control(self):
        live = self.introspect("/org/freedesktop/LogControl1")
        lc = live["org.freedesktop.LogControl1"]
        self.assertEqual(lc["properties"]["LogLevel"][:2], ("s", "readwrite"))
        self.assertEqual(lc["properties"]["LogTarget"][:2], ("s", "readwrite"))
        self.assertEqual(lc["properties"]["SyslogIdentifier"][:2], ("s", "read"))
        self.assertEqual(self.bus.get("/org/freedesktop/LogControl1", "org.freedesktop.LogControl1",
                                      "SyslogIdentifier"), "kegbot_core")


if __name__ == "__main__":
    kbtest.main()
