"""umockdev testbeds for the programs that find their devices through libudev (rfid_daemon discovery,
kegboard_daemon without --kegboard_device): fake sysfs, udev database and uevents, with every device
node backed by a pty whose master the test holds (rfid-readers.md section 14.1).

A test script calls wrap() first thing: it re-executes the script under umockdev-wrapper (the preload
then reaches the programs the test starts), or returns why it cannot, for the tests to skip with.
Devices are built from umockdev record text (P: devpath, N: node, E: property, A: sysattr, H: binary
sysattr in hex; child before parents)."""
import gc
import os
import shutil
import sys

import kbtest

_WRAP_MARK = "KEGBOT_UMOCKDEV_WRAPPED"
_why_not = "umocktest.wrap() was not called"


def wrap():
    """None when running under the umockdev preload (re-executing the script to get there), else the
    reason the umockdev tests cannot run here (TestbedCase skips with it)."""
    global _why_not
    _why_not = _wrap()
    return _why_not


def _wrap():
    try:
        import gi
        gi.require_version("UMockdev", "1.0")
        from gi.repository import UMockdev  # noqa: F401
    except (ImportError, ValueError) as e:
        return "umockdev's GObject API is missing (gir1.2-umockdev-1.0, python3-gi): %s" % e
    # (UMockdev.in_mock_environment() only says whether a testbed exists yet.)
    if "libumockdev-preload" in os.environ.get("LD_PRELOAD", ""):
        return None
    if os.environ.get(_WRAP_MARK):
        return "umockdev-wrapper did not set up the umockdev preload"
    wrapper = shutil.which("umockdev-wrapper")
    if not wrapper:
        return "umockdev-wrapper is not installed (package umockdev)"
    os.environ[_WRAP_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(wrapper, [wrapper, sys.executable] + sys.argv)
    return "exec of umockdev-wrapper failed"


def child_env():
    """What a program started under the testbed needs on top of kbtest.Proc's environment: the
    sanitizer runtime does not come first in the library list under the preload."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "verify_asan_link_order=0"}


USB = "/devices/pci0000:00/0000:00:14.0/usb1"


def usb_device(port, vendor, product, serial=None, bcd="0100", manufacturer="Test", product_name="Device"):
    lines = ["P: %s/1-%d" % (USB, port), "N: bus/usb/001/%03d" % (port + 1), "E: DEVTYPE=usb_device",
             "E: SUBSYSTEM=usb", "E: DRIVER=usb", "A: idVendor=" + vendor, "A: idProduct=" + product,
             "A: bcdDevice=" + bcd, "A: busnum=1", "A: devnum=%d" % (port + 1),
             "A: manufacturer=" + manufacturer, "A: product=" + product_name]
    if serial:
        lines.append("A: serial=" + serial)
    return "\n".join(lines) + "\n\n"


def usb_interface(port, cls="ff"):
    return "\n".join(["P: %s/1-%d/1-%d:1.0" % (USB, port, port), "E: DEVTYPE=usb_interface", "E: SUBSYSTEM=usb",
                      "A: bInterfaceClass=" + cls, "A: bInterfaceNumber=00"]) + "\n\n"


def props(extra):
    return "".join("E: %s=%s\n" % kv for kv in (extra or {}).items())


def usb_tty(port, kernel, vendor, product, serial=None, extra=None):
    """A USB serial port /dev/<kernel> (ttyUSB*: behind a usb-serial device; ttyACM*: CDC ACM)."""
    iface = "%s/1-%d/1-%d:1.0" % (USB, port, port)
    if kernel.startswith("ttyUSB"):
        syspath = "%s/%s/tty/%s" % (iface, kernel, kernel)
        mid = "P: %s/%s\nE: DRIVER=ftdi_sio\nE: SUBSYSTEM=usb-serial\n\n" % (iface, kernel)
    else:
        syspath = "%s/tty/%s" % (iface, kernel)
        mid = ""
    rec = "P: %s\nN: %s\nE: DEVNAME=/dev/%s\nE: SUBSYSTEM=tty\n%s\n" % (syspath, kernel, kernel, props(extra))
    rec += mid + usb_interface(port, "ff" if kernel.startswith("ttyUSB") else "02")
    rec += usb_device(port, vendor, product, serial, product_name="Serial %s" % kernel)
    return "/sys" + syspath, rec


def platform_tty(kernel, extra=None):
    """An on-board UART (ttyS*, ttyAMA*): no USB parent."""
    syspath = "/devices/platform/serial8250/tty/%s" % kernel
    rec = "P: %s\nN: %s\nE: DEVNAME=/dev/%s\nE: SUBSYSTEM=tty\n%s\n" % (syspath, kernel, kernel, props(extra))
    rec += "P: /devices/platform/serial8250\nE: DRIVER=serial8250\nE: SUBSYSTEM=platform\n\n"
    return "/sys" + syspath, rec


def hidraw(port, kernel, vendor, product, serial=None, bcd="0201", descriptor=None, extra=None):
    """A hidraw node of a USB HID device (with its hid parent's HID_ID and report_descriptor)."""
    iface = "%s/1-%d/1-%d:1.0" % (USB, port, port)
    hid = "%s/0003:%s:%s.%04X" % (iface, vendor.upper(), product.upper(), port)
    syspath = "%s/hidraw/%s" % (hid, kernel)
    rec = "P: %s\nN: %s\nE: DEVNAME=/dev/%s\nE: SUBSYSTEM=hidraw\n%s\n" % (syspath, kernel, kernel, props(extra))
    rec += "P: %s\nE: DRIVER=hid-generic\nE: HID_ID=0003:0000%s:0000%s\nE: SUBSYSTEM=hid\n" % (
        hid, vendor.upper(), product.upper())
    if descriptor:
        rec += "H: report_descriptor=%s\n" % descriptor
    rec += "\n" + usb_interface(port, "03") + usb_device(port, vendor, product, serial, bcd=bcd,
                                                         manufacturer="Phidgets Inc.", product_name="PhidgetRFID")
    return "/sys" + syspath, rec


def input_event_node(port, n, vendor, product, extra=None, parent_extra=None):
    """/dev/input/event<n> of a USB keyboard, with its input<n> parent (no node)."""
    iface = "%s/1-%d/1-%d:1.0" % (USB, port, port)
    hid = "%s/0003:%s:%s.%04X" % (iface, vendor.upper(), product.upper(), port)
    inp = "%s/input/input%d" % (hid, n)
    syspath = "%s/event%d" % (inp, n)
    rec = "P: %s\nN: input/event%d\nE: DEVNAME=/dev/input/event%d\nE: SUBSYSTEM=input\n%s\n" % (
        syspath, n, n, props(extra))
    rec += "P: %s\nE: SUBSYSTEM=input\nE: NAME=\"USB RFID Reader\"\n%s\n" % (inp, props(parent_extra))
    rec += "P: %s\nE: DRIVER=hid-generic\nE: HID_ID=0003:0000%s:0000%s\nE: SUBSYSTEM=hid\n\n" % (
        hid, vendor.upper(), product.upper())
    rec += usb_interface(port, "03") + usb_device(port, vendor, product, product_name="USB RFID Reader")
    return "/sys" + syspath, "/sys" + inp, rec


class Testbed:
    """A umockdev testbed; the programs started afterwards (through kbtest.Proc) see it."""

    def __init__(self):
        import gi
        gi.require_version("UMockdev", "1.0")
        from gi.repository import UMockdev
        self.tb = UMockdev.Testbed.new()
        # The testbed sets UMOCKDEV_DIR in the C environment; kbtest.Proc copies os.environ.
        os.environ["UMOCKDEV_DIR"] = self.tb.get_root_dir()

    def add(self, record):
        """Adds the devices of a record (child before parents, as umockdev-record writes them),
        parents first and one at a time, as the kernel announces them: umockdev emits each add
        uevent as it creates the device, and a child announced in the same call as its parents can
        be looked at before their attributes exist."""
        blocks = [b.strip("\n") + "\n" for b in record.split("\n\n") if b.strip()]
        for b in reversed(blocks):
            devpath = b.split("\n", 1)[0][len("P: "):]
            # A parent shared with a device added earlier (a platform bus, a hub) is there already.
            if os.path.isdir(os.path.join(self.tb.get_root_dir(), "sys", devpath.lstrip("/"))) and b != blocks[0]:
                continue
            if not self.tb.add_from_string(b):
                raise AssertionError("umockdev rejected the record:\n" + b)

    def uevent(self, syspath, action):
        self.tb.uevent(syspath, action)

    def remove(self, syspath, devnode=None):
        """An unplug: the remove uevent first (umockdev's remove emits none), then the device goes.
        umockdev leaves the node's link behind; it is removed too, so the device can come back."""
        self.tb.uevent(syspath, "remove")
        self.tb.remove_device(syspath)
        if devnode:
            try:
                os.unlink(os.path.join(self.tb.get_root_dir(), devnode.lstrip("/")))
            except FileNotFoundError:
                pass

    def set_property(self, syspath, name, value):
        self.tb.set_property(syspath, name, value)

    def change(self, syspath, name, value):
        self.set_property(syspath, name, value)
        self.tb.uevent(syspath, "change")

    def master(self, devnode):
        """The pty master behind a node (the device side), non-blocking."""
        fd = self.tb.get_dev_fd(devnode)
        if fd < 0:
            raise AssertionError("umockdev has no node %s" % devnode)
        os.set_blocking(fd, False)
        return fd

    def close(self):
        # Gone now, not at some later collection: a testbed's finalizer unsets UMOCKDEV_DIR, which
        # would cut the next test's testbed off from its uevents.
        self.tb = None
        gc.collect()
        os.environ.pop("UMOCKDEV_DIR", None)



class TestbedCase(kbtest.FakeCoreCase):
    """A test on a testbed: kbtest.FakeCoreCase plus a testbed (self.tb); skipped with the reason where
    wrap() found umockdev missing."""

    def setUp(self):
        if _why_not:
            self.skipTest(_why_not)
        super().setUp()
        self.tb = Testbed()
        self.addCleanup(self.tb.close)
