"""The bus policy (dbus/org.kegbot.Core1.conf) with the real core behind it: nobody may read
everything and call nothing; root and the operator group kegbot-admin may call every method and set
LogControl1 properties; the service's group kegbot (which may read the API key) gets no more than
nobody. Bad arguments get clear D-Bus errors and never hurt the core."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import busenv  # noqa: E402
import kbtest  # noqa: E402
from busenv import IFACE, NAME, ROOT  # noqa: E402

MANAGER = IFACE + ".Manager"
TAP0 = ROOT + "/tap/kegboard_2eflow0"
PROPS = "org.freedesktop.DBus.Properties"
LOGCTL = "/org/freedesktop/LogControl1"
LOGCTL_IFACE = "org.freedesktop.LogControl1"
UUID = "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10"

# Every mutating call (and ListDrinks, which shows who drank what), with valid arguments.
MUTATING = [
    (ROOT, MANAGER, "StartFlow", "s", ["kegboard.flow1"]),
    (ROOT, MANAGER, "StopFlow", "s", ["kegboard.flow1"]),
    (ROOT, MANAGER, "AddAuthToken", "sss", ["kegboard.flow1", "core.rfid", "0415ab23cd"]),
    (ROOT, MANAGER, "RemoveAuthToken", "sss", ["kegboard.flow1", "core.rfid", "0415ab23cd"]),
    (ROOT, MANAGER, "SetRelay", "sb", ["kegboard.relay0", False]),     # the relay of tap kegboard.flow0
    (ROOT, MANAGER, "Sync", "", []),
    (ROOT, MANAGER, "RetryFailedDrinks", "", []),
    (ROOT, MANAGER, "FailDrink", "s", [UUID]),
    (ROOT, MANAGER, "ListDrinks", "s", ["failed"]),
    (ROOT, MANAGER, "ResetPairing", "s", ["kegboard"]),
    (ROOT, MANAGER, "RetryFailedEvents", "s", ["kegboard"]),
    (LOGCTL, PROPS, "Set", "ssv", [LOGCTL_IFACE, "LogLevel", "info"]),
    (LOGCTL, PROPS, "Set", "ssv", [LOGCTL_IFACE, "LogTarget", "console"]),
]


class AccessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = kbtest.TempDir()
        tmp = cls.tmp.__enter__()
        cls.bus = busenv.PrivateBus(tmp)
        cls.core = busenv.Core(tmp, cls.bus)

    @classmethod
    def tearDownClass(cls):
        cls.core.stop()
        cls.bus.stop()
        cls.tmp.__exit__(None, None, None)

    def tearDown(self):
        self.assertTrue(self.core.alive(), "kegbot_core died:\n" + "\n".join(self.core.output()))

    def test_nobody_reads(self):
        for as_ in ("nobody", "service-group", "operator", "root"):
            r = self.bus.busctl("introspect", NAME, ROOT, as_=as_)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("StartFlow", r.stdout)
            self.assertEqual(self.bus.get(ROOT, MANAGER, "Mode", as_=as_), "standalone")
            self.assertEqual(self.bus.get_all(TAP0, IFACE + ".Tap", as_=as_)["Name"], "Main Tap")
            self.assertIn(TAP0, self.bus.managed_objects(as_=as_))
            self.assertEqual(self.bus.get(LOGCTL, LOGCTL_IFACE, "LogLevel", as_=as_), "info")
            r = self.bus.busctl("call", NAME, ROOT, "org.freedesktop.DBus.Peer", "Ping", as_=as_)
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_nobody_calls_nothing(self):
        for as_ in ("nobody", "service-group"):
            for path, iface, method, sig, args in MUTATING:
                err, msg = self.bus.dbus_call(path, iface, method, sig, args, as_=as_)
                self.assertEqual(err, "org.freedesktop.DBus.Error.AccessDenied",
                                 "%s as %s: %s %s" % (method, as_, err, msg))
        # busctl too (what an admin would try).
        r = self.bus.busctl("call", NAME, ROOT, MANAGER, "StartFlow", "s", "kegboard.flow0", as_="nobody")
        self.assertNotEqual(r.returncode, 0)
        r = self.bus.busctl("set-property", NAME, LOGCTL, LOGCTL_IFACE, "LogLevel", "s", "debug", as_="nobody")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.bus.get(LOGCTL, LOGCTL_IFACE, "LogLevel"), "info")
        self.assertNotEqual(self.bus.get(TAP0, IFACE + ".Tap", "FlowState"), "active")
        self.assertFalse([p for p in self.bus.managed_objects() if "/flow/" in p])

    def test_operator_and_root_call_everything(self):
        for as_ in ("operator", "root"):
            for path, iface, method, sig, args in MUTATING:
                err, msg = self.bus.dbus_call(path, iface, method, sig, args, as_=as_)
                if method == "FailDrink":
                    # Allowed through the policy; standalone mode has no queue.
                    self.assertEqual(err, "org.kegbot.Core1.Error.NotSupported", msg)
                    continue
                if method in ("ResetPairing", "RetryFailedEvents"):
                    # Allowed through the policy; no controller reports through the event protocol.
                    self.assertEqual(err, "org.kegbot.Core1.Error.UnknownController", msg)
                    continue
                self.assertEqual(err, "ok", "%s as %s: %s" % (method, as_, msg))
        err, reply = self.bus.dbus_call(ROOT, MANAGER, "ListDrinks", "s", ["queued"], as_="operator")
        self.assertEqual((err, reply), ("ok", [[]]))
        err, msg = self.bus.dbus_call(ROOT, MANAGER, "StartFlow", "s", ["kegboard.flow0"], as_="operator")
        self.assertEqual(err, "ok", msg)
        kbtest.wait_until(lambda: self.bus.get(TAP0, IFACE + ".Tap", "FlowState") == "active", timeout=3,
                          what="flow started by an operator")
        self.assertEqual(self.bus.dbus_call(ROOT, MANAGER, "StopFlow", "s", ["kegboard.flow0"])[0], "ok")

    def test_bad_arguments(self):
        invalid = "org.freedesktop.DBus.Error.InvalidArgs"
        unknown = "org.kegbot.Core1.Error.UnknownMeter"
        cases = [
            ("StartFlow", "s", [""], invalid, "Invalid meter name"),
            ("StartFlow", "s", ["nodot"], invalid, "expected <controller>.<port>"),
            ("StartFlow", "s", ["kegboard. flow0"], invalid, "Invalid meter name"),
            ("StartFlow", "s", ["x" * 300 + ".flow0"], invalid, "Invalid meter name"),
            ("StopFlow", "s", ["kegboard.flow9"], unknown, "kegboard.flow9"),
            ("StopFlow", "s", [".flow0"], invalid, "Invalid meter name"),
            ("AddAuthToken", "sss", ["kegboard.flow0", "core.rfid", ""], invalid, "Empty token"),
            ("AddAuthToken", "sss", ["kegboard.flow0", "", "abc"], invalid, "Invalid auth device"),
            ("AddAuthToken", "sss", ["kegboard.flow9", "core.rfid", "abc"], unknown, "No tap for meter kegboard.flow9"),
            ("RemoveAuthToken", "sss", ["kegboard.flow0", "core.rfid", "a\nb"], invalid, "Invalid token"),
            ("SetRelay", "sb", ["bogus", True], invalid, "Invalid relay name"),
            ("SetRelay", "sb", ["kegboard.flow0", True], invalid, "expected <controller>.relay<N>"),
            ("SetRelay", "sb", ["", False], invalid, "Invalid relay name"),
            # A relay nothing acts on is an error, not a silent success (no tap has it, and no
            # controller is known).
            ("SetRelay", "sb", ["kegboard.relay1", True], "org.kegbot.Core1.Error.UnknownRelay",
             "No such relay kegboard.relay1"),
            ("SetRelay", "sb", ["nosuchboard.relay0", False], "org.kegbot.Core1.Error.UnknownRelay",
             "No such relay nosuchboard.relay0"),
            ("FailDrink", "s", ["not-a-uuid"], invalid, "Invalid drink UUID"),
            ("ListDrinks", "s", ["everything"], invalid, "expected \"queued\" or \"failed\""),
            ("StartFlow", "", [], invalid, ""),
        ]
        for method, sig, args, want, text in cases:
            err, msg = self.bus.dbus_call(ROOT, MANAGER, method, sig, args)
            self.assertEqual(err, want, "%s%r: %s %s" % (method, args, err, msg))
            self.assertIn(text, msg, "%s%r" % (method, args))
        err, msg = self.bus.dbus_call(LOGCTL, PROPS, "Set", "ssv", [LOGCTL_IFACE, "LogLevel", "loud"])
        self.assertEqual(err, invalid)
        self.assertIn("Invalid log level 'loud'", msg)
        err, msg = self.bus.dbus_call(LOGCTL, PROPS, "Set", "ssv", [LOGCTL_IFACE, "LogTarget", "kmsg"])
        self.assertEqual(err, invalid)
        err, msg = self.bus.dbus_call(LOGCTL, PROPS, "Set", "ssv", [LOGCTL_IFACE, "SyslogIdentifier", "x"])
        self.assertEqual(err, "org.freedesktop.DBus.Error.PropertyReadOnly", msg)
        err, msg = self.bus.dbus_call(ROOT, MANAGER, "NoSuchMethod")
        self.assertEqual(err, "org.freedesktop.DBus.Error.UnknownMethod", msg)
        err, msg = self.bus.dbus_call(ROOT + "/tap/nothing_2eflow0", PROPS, "GetAll", "s", [IFACE + ".Tap"])
        self.assertEqual(err, "org.freedesktop.DBus.Error.UnknownObject", msg)
        # The core is fine and the taps are unchanged.
        self.assertEqual(sorted(p for p in self.bus.managed_objects() if "/tap/" in p),
                         [ROOT + "/tap/kegboard_2eflow0", ROOT + "/tap/kegboard_2eflow1"])


if __name__ == "__main__":
    kbtest.main()
