"""A stand-in for kegbot_core on D-Bus (org.kegbot.Core1), driven by a test through stdin: the objects
of dbus/org.kegbot.Core1.xml plus, with "optional": true, the members mqtt-home-assistant.md section
4.2 lists (GhostFlow, PourFlagged, ClearQuarantine, Tap.Quarantined, Controller.Backend and
EventState), so kegbot_mqtt can be shown situations the real core cannot produce on demand.

argv[1]: JSON {"optional": bool, "mode": "server"|"standalone", "version": "..."}.
stdin: one JSON command per line, each answered "ok <seq>" on stdout once done:
  {"cmd": "add", "kind": "tap"|"controller"|"sensor", "name": ..., "props": {...}}   (InterfacesAdded)
  {"cmd": "set", "kind": ..., "name": ..., "props": {...}}                           (PropertiesChanged)
  {"cmd": "remove", "kind": ..., "name": ...}                                        (InterfacesRemoved)
  {"cmd": "manager", "props": {...}}                                                 (Manager properties)
  {"cmd": "signal", "name": "DrinkRecorded"|"GhostFlow"|"PourFlagged", "args": [...]}
Method calls are printed as "call <method> <argument>".
"""
import json
import sys

import os

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dbus"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from busenv import path_encode  # noqa: E402 (sd_bus_path_encode(), as the core names its objects)

NAME = "org.kegbot.Core1"
ROOT = "/org/kegbot/Core1"
IFACE = "org.kegbot.Core1"
PROPS = "org.freedesktop.DBus.Properties"
OM = "org.freedesktop.DBus.ObjectManager"

CONFIG = json.loads(sys.argv[1])
OPTIONAL = CONFIG.get("optional", True)

# property -> D-Bus type, per interface (the contract's, plus the optional ones).
TYPES = {
    "Manager": {"Version": "s", "Mode": "s", "ApiUrl": "s", "BackendState": "s", "SpoolState": "s",
                "PendingDrinks": "u", "FailedDrinks": "u", "LastSync": "t"},
    "Tap": {"MeterName": "s", "Name": "s", "MlPerTick": "d", "RelayName": "s", "RelayEnabled": "b",
            "AutoCreated": "b", "TotalTicks": "t", "FlowId": "t", "FlowState": "s", "FlowTicks": "t",
            "FlowVolumeMl": "d", "FlowUsername": "s"},
    "Controller": {"Name": "s", "SerialNumber": "s", "FirmwareVersion": "u", "Device": "s", "Connected": "b",
                   "LastSeen": "t"},
    "ThermoSensor": {"Name": "s", "TemperatureC": "d", "LastSeen": "t", "Silent": "b"},
}
if OPTIONAL:
    TYPES["Tap"]["Quarantined"] = "b"
    TYPES["Controller"]["Backend"] = "s"
    TYPES["Controller"]["EventState"] = "s"

DEFAULTS = {
    "Tap": {"Name": "", "MlPerTick": 0.5, "RelayName": "", "RelayEnabled": False, "AutoCreated": False,
            "TotalTicks": 0, "FlowId": 0, "FlowState": "", "FlowTicks": 0, "FlowVolumeMl": 0.0,
            "FlowUsername": "", "Quarantined": False},
    "Controller": {"SerialNumber": "", "FirmwareVersion": 18, "Device": "", "Connected": True, "LastSeen": 0,
                   "Backend": "legacy", "EventState": ""},
    "ThermoSensor": {"TemperatureC": 4.0, "LastSeen": 0, "Silent": False},
}

KINDS = {"tap": ("Tap", "tap", "MeterName"), "controller": ("Controller", "controller", "Name"),
         "sensor": ("ThermoSensor", "sensor", "Name")}

SIGNALS = {"DrinkRecorded": "sxtsstdttt", "GhostFlow": "sstdtttss", "PourFlagged": "tsss"}


def wrap(t, v):
    return {"s": dbus.String, "b": dbus.Boolean, "u": dbus.UInt32, "t": dbus.UInt64, "d": dbus.Double,
            "x": dbus.Int64}[t](v)


def introspect_xml(path, ifaces):
    parts = ['<node>']
    for short in ifaces:
        parts.append(' <interface name="%s.%s">' % (IFACE, short))
        for p, t in TYPES[short].items():
            parts.append('  <property name="%s" type="%s" access="read"/>' % (p, t))
        if short == "Manager":
            for m in ["StartFlow", "StopFlow"] + (["ClearQuarantine"] if OPTIONAL else []):
                parts.append('  <method name="%s"><arg type="s" name="meter" direction="in"/></method>' % m)
            sigs = ["DrinkRecorded"] + (["GhostFlow", "PourFlagged"] if OPTIONAL else [])
            for s in sigs:
                parts.append('  <signal name="%s">%s</signal>' % (s, "".join('<arg type="%s"/>' % c
                                                                             for c in SIGNALS[s])))
        parts.append(' </interface>')
    parts.append(' <interface name="org.freedesktop.DBus.Properties"/>')
    if path == ROOT:
        parts.append(' <interface name="%s"/>' % OM)
    parts.append('</node>')
    return "\n".join(parts)


class UnknownMeter(dbus.DBusException):
    _dbus_error_name = IFACE + ".Error.UnknownMeter"


class Obj(dbus.service.Object):
    def __init__(self, conn, path, short, props):
        super().__init__(conn, path)
        self.short = short
        self.props = props

    def typed(self):
        return dbus.Dictionary({k: wrap(TYPES[self.short][k], v) for k, v in self.props.items()
                                if k in TYPES[self.short]}, signature="sv")

    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        if iface != IFACE + "." + self.short:
            return dbus.Dictionary({}, signature="sv")
        return self.typed()

    @dbus.service.method(PROPS, in_signature="ss", out_signature="v")
    def Get(self, iface, prop):
        return wrap(TYPES[self.short][prop], self.props[prop])

    @dbus.service.signal(PROPS, signature="sa{sv}as")
    def PropertiesChanged(self, iface, changed, invalidated):
        pass

    @dbus.service.method("org.freedesktop.DBus.Introspectable", out_signature="s")
    def Introspect(self):
        return introspect_xml(self._object_path, [self.short])


class Manager(Obj):
    def __init__(self, conn):
        super().__init__(conn, ROOT, "Manager", {
            "Version": CONFIG.get("version", "9.9.9"), "Mode": CONFIG.get("mode", "standalone"), "ApiUrl": "",
            "BackendState": "standalone", "SpoolState": "standalone", "PendingDrinks": 0, "FailedDrinks": 0,
            "LastSync": 1796000000000000})
        self.objects = {}

    @dbus.service.method("org.freedesktop.DBus.Introspectable", out_signature="s")
    def Introspect(self):
        return introspect_xml(ROOT, ["Manager"])

    @dbus.service.method(OM, out_signature="a{oa{sa{sv}}}")
    def GetManagedObjects(self):
        out = dbus.Dictionary({}, signature="oa{sa{sv}}")
        for path, o in self.objects.items():
            out[dbus.ObjectPath(path)] = dbus.Dictionary({IFACE + "." + o.short: o.typed()}, signature="sa{sv}")
        return out

    @dbus.service.signal(OM, signature="oa{sa{sv}}")
    def InterfacesAdded(self, path, ifaces):
        pass

    @dbus.service.signal(OM, signature="oas")
    def InterfacesRemoved(self, path, ifaces):
        pass

    @dbus.service.method(IFACE + ".Manager", in_signature="s")
    def StopFlow(self, meter):
        print("call StopFlow %s" % meter, flush=True)
        if "failing" in meter:
            raise UnknownMeter("no such meter")

    @dbus.service.method(IFACE + ".Manager", in_signature="s")
    def StartFlow(self, meter):
        print("call StartFlow %s" % meter, flush=True)

    @dbus.service.signal(IFACE + ".Manager", signature=SIGNALS["DrinkRecorded"])
    def DrinkRecorded(self, uuid, drink_id, flow_id, meter, username, ticks, volume_ml, start_time, pour_time,
                      duration):
        pass

    @dbus.service.signal(IFACE + ".Manager", signature=SIGNALS["GhostFlow"])
    def GhostFlow(self, meter, rule, ticks, volume_ml, start_time, end_time, flow_id, tick_series, mode):
        pass

    @dbus.service.signal(IFACE + ".Manager", signature=SIGNALS["PourFlagged"])
    def PourFlagged(self, flow_id, meter, flag, mode):
        pass


if OPTIONAL:
    def _clear(self, meter):
        print("call ClearQuarantine %s" % meter, flush=True)
    Manager.ClearQuarantine = dbus.service.method(IFACE + ".Manager", in_signature="s")(_clear)


def typed_args(name, args):
    return [wrap(t, v) for t, v in zip(SIGNALS[name], args)]


def handle(conn, mgr, c):
    if c["cmd"] == "manager":
        mgr.props.update(c["props"])
        mgr.PropertiesChanged(IFACE + ".Manager", dbus.Dictionary(
            {k: wrap(TYPES["Manager"][k], v) for k, v in c["props"].items()}, signature="sv"),
            dbus.Array([], signature="s"))
        return
    if c["cmd"] == "signal":
        getattr(mgr, c["name"])(*typed_args(c["name"], c["args"]))
        return
    short, seg, name_prop = KINDS[c["kind"]]
    path = path_encode("%s/%s" % (ROOT, seg), c["name"])
    if c["cmd"] == "add":
        props = dict(DEFAULTS[short])
        props[name_prop] = c["name"]
        if short == "Tap":
            props["Name"] = c["name"]
        props.update(c.get("props", {}))
        o = Obj(conn, path, short, props)
        mgr.objects[path] = o
        mgr.InterfacesAdded(dbus.ObjectPath(path), dbus.Dictionary({IFACE + "." + short: o.typed()},
                                                                    signature="sa{sv}"))
    elif c["cmd"] == "set":
        o = mgr.objects[path]
        o.props.update(c["props"])
        o.PropertiesChanged(IFACE + "." + short, dbus.Dictionary(
            {k: wrap(TYPES[short][k], v) for k, v in c["props"].items() if k in TYPES[short]}, signature="sv"),
            dbus.Array([], signature="s"))
    elif c["cmd"] == "remove":
        o = mgr.objects.pop(path)
        mgr.InterfacesRemoved(dbus.ObjectPath(path), dbus.Array([IFACE + "." + short], signature="s"))
        o.remove_from_connection()


def main():
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()
    mgr = Manager(bus)
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)  # noqa: F841 (kept: owns the name)
    loop = GLib.MainLoop()

    def on_stdin(fd, cond):
        line = sys.stdin.readline()
        if not line:
            loop.quit()
            return False
        c = json.loads(line)
        handle(bus, mgr, c)
        # The signals are out before the acknowledgement: flush the connection's queue first.
        bus.flush()
        print("ok %d" % c["seq"], flush=True)
        return True

    GLib.io_add_watch(sys.stdin, GLib.IO_IN | GLib.IO_HUP, on_stdin)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
