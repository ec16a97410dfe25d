"""A stand-in for systemd's manager on D-Bus (org.freedesktop.systemd1), for the programs that ask
systemd to start units: every StartUnit(name, mode) is printed as "StartUnit <name> <mode>" and
answered with a job path, except for the units named in argv[1:] as <unit>=<D-Bus error name>,
which get that error. "ready" is printed once the name is owned; Ping() prints "pong"
after everything asked before it (a sentinel for "nothing more came"). The bus is the one in
DBUS_SYSTEM_BUS_ADDRESS."""
import os
import sys

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

NAME = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
IFACE = "org.freedesktop.systemd1.Manager"
FAIL = dict(a.split("=", 1) for a in sys.argv[1:])


class Manager(dbus.service.Object):
    def __init__(self, bus):
        super().__init__(bus, PATH)
        self.jobs = 0

    @dbus.service.method(IFACE, in_signature="ss", out_signature="o")
    def StartUnit(self, name, mode):
        print("StartUnit %s %s" % (name, mode), flush=True)
        if name in FAIL:
            raise dbus.DBusException("Cannot start %s." % name, name=FAIL[name])
        self.jobs += 1
        return dbus.ObjectPath("%s/job/%d" % (PATH, self.jobs))

    @dbus.service.method(IFACE, in_signature="", out_signature="")
    def Ping(self):
        print("pong", flush=True)


def main():
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)  # noqa: F841 (owned while referenced)
    manager = Manager(bus)  # noqa: F841
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
