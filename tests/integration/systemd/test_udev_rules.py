"""udev/70-kegboard.rules and udev/70-kegbot-rfid.rules through the real udev rules engine: `udevadm
test` on umockdev fake devices - USB serial ports, one per known Kegboard vendor/product id
(kegboard-serial-protocol.md), non-matching ones, the KEGBOT_KEGBOARD=1 opt-in on USB and on
platform UARTs (ttyS*, ttyAMA*); PhidgetRFID hidraw nodes, serial and keyboard-wedge RFID readers
opted in by local rules, a veto, the 1024 (rfid-readers.md section 14.4, scenarios 53-56).

udevadm test writes device symlinks under /dev and state under /run, so it runs inside `unshare -m`
with private tmpfs mounts on /dev (only a few host nodes bound in) and /run, and with a private
/etc/udev/rules.d holding only the rules under test (the host's /lib/udev/rules.d stay, as on a real
system: 60-serial.rules provides ID_SERIAL_SHORT), and an /etc/group that has the kegbot group the
RFID rule assigns (sysusers.d creates it on a real system).
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import kbtest
import sdtest
import umocktest

# The spec's table (kegboard-serial-protocol.md): vendor, product (None = any product of the vendor).
KNOWN_IDS = [("2341", None), ("2a03", None), ("0403", "6001"), ("0403", "6015"), ("1a86", "7523"),
             ("10c4", "ea60"), ("067b", "2303"), ("16c0", "0483"), ("03eb", "0436")]
# Vendors with a USB-serial converter chip give ttyUSB*, the others (CDC ACM firmware) ttyACM*.
USB_SERIAL_VENDORS = {"0403", "1a86", "10c4", "067b"}

RULES = os.path.join(sdtest.SOURCE_DIR, "udev", "70-kegboard.rules")
RFID_RULES = os.path.join(sdtest.SOURCE_DIR, "udev", "70-kegbot-rfid.rules")
LOCAL_OPT_IN = ('SUBSYSTEM=="tty", ATTRS{idVendor}=="1234", ATTRS{idProduct}=="abcd", '
                'ENV{KEGBOT_KEGBOARD}="1"\n'
                # A Kegboard wired to an on-board UART and to a Raspberry Pi's.
                'SUBSYSTEM=="tty", KERNEL=="ttyS4", ENV{KEGBOT_KEGBOARD}="1"\n'
                'SUBSYSTEM=="tty", KERNEL=="ttyAMA0", ENV{KEGBOT_KEGBOARD}="1"\n')
# The owner's RFID rule (rfid-readers.md section 8.2): an ID-12 on an FTDI board by its serial, a
# keyboard-wedge reader by vendor/product, a Phidget left to something else.
LOCAL_RFID = ('SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6015", ATTRS{serial}=="DN01ABCD", '
              'ENV{KEGBOT_RFID}="1"\n'
              'SUBSYSTEM=="input", ATTRS{idVendor}=="ffff", ATTRS{idProduct}=="0035", ENV{KEGBOT_RFID}="1"\n'
              'SUBSYSTEM=="hidraw", ATTRS{idVendor}=="06c2", ATTRS{serial}=="VETO01", ENV{KEGBOT_RFID}="0"\n')

NS_SCRIPT = r"""
set -e
mount -t tmpfs tmpfs /run
T=/run/.devfs
mkdir $T
mount -t tmpfs tmpfs $T
for n in null zero full random urandom tty; do touch $T/$n; mount --bind /dev/$n $T/$n; done
mkdir $T/pts
mount --bind /dev/pts $T/pts
ln -s pts/ptmx $T/ptmx
mount --rbind $T /dev
mount --bind "$RULES_DIR" /etc/udev/rules.d
mount --bind "$GROUP_FILE" /etc/group
exec umockdev-run -d "$DEVICES" -- sh -c '
  while read -r name action syspath; do
    udevadm test --action="$action" "$syspath" >"$OUT/$name.out" 2>"$OUT/$name.err" || echo "$name failed" >>"$OUT/failures"
  done <"$OUT/list"'
"""


class Dev:
    _n = 0

    def __init__(self, name, vendor, product, serial, kind=None, action="add", kernel=None):
        Dev._n += 1
        self.name, self.vendor, self.product, self.serial, self.action = name, vendor, product, serial, action
        self.kind = kind or ("ttyUSB" if vendor in USB_SERIAL_VENDORS else "ttyACM")
        self.port = Dev._n
        self.kernel = kernel or "%s%d" % (self.kind, self.port)

    def syspath(self):
        if self.kind in ("ttyS", "ttyAMA"):
            return "/sys/devices/platform/serial8250/tty/%s" % self.kernel
        usb = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-%d" % self.port
        if self.kind == "ttyUSB":
            return "%s/1-%d:1.0/%s/tty/%s" % (usb, self.port, self.kernel, self.kernel)
        return "%s/1-%d:1.0/tty/%s" % (usb, self.port, self.kernel)

    def umockdev(self):
        major = {"ttyUSB": 188, "ttyACM": 166, "ttyS": 4, "ttyAMA": 204}[self.kind]
        sp = self.syspath()[len("/sys"):]
        out = ["P: " + sp, "N: " + self.kernel, "E: DEVNAME=/dev/" + self.kernel, "E: MAJOR=%d" % major,
               "E: MINOR=%d" % (64 + self.port if self.kind == "ttyS" else self.port), "E: SUBSYSTEM=tty", ""]
        if self.kind in ("ttyS", "ttyAMA"):
            return "\n".join(out)
        usb = "/devices/pci0000:00/0000:00:14.0/usb1/1-%d" % self.port
        if self.kind == "ttyUSB":
            out += ["P: %s/1-%d:1.0/%s" % (usb, self.port, self.kernel), "E: DRIVER=ftdi_sio",
                    "E: SUBSYSTEM=usb-serial", ""]
        out += ["P: %s/1-%d:1.0" % (usb, self.port), "E: DEVTYPE=usb_interface", "E: SUBSYSTEM=usb",
                "A: bInterfaceClass=%s" % ("ff" if self.kind == "ttyUSB" else "02"), "A: bInterfaceNumber=00",
                "A: bInterfaceProtocol=01", "A: bInterfaceSubClass=02", ""]
        out += ["P: " + usb, "N: bus/usb/001/%03d" % (self.port + 1), "E: DEVTYPE=usb_device",
                "E: SUBSYSTEM=usb", "E: PRODUCT=%s/%s/100" % (self.vendor.lstrip("0"), self.product.lstrip("0")),
                "A: idVendor=" + self.vendor, "A: idProduct=" + self.product, "A: busnum=1",
                "A: devnum=%d" % (self.port + 1), "A: devpath=%d" % self.port, "A: manufacturer=Test",
                "A: product=Board %s" % self.name]
        if self.serial:
            out.append("A: serial=" + self.serial)
        out.append("")
        return "\n".join(out)


class RecordDev:
    """A device given as umockdev record text (tests/integration/umocktest.py builders)."""

    def __init__(self, name, syspath, record, subsystem, action="add"):
        self.name, self.path, self.record, self.subsystem, self.action = name, syspath, record, subsystem, action
        self.kernel = os.path.basename(syspath)

    def syspath(self):
        return self.path

    def umockdev(self):
        return self.record


# The report descriptor of a PhidgetRFID (rfid-readers.md section 2.2).
DESCRIPTOR = "0600ff0901a101150026ff007508950809018102950809019102c0"


def rfid_devices():
    """Ports 40 and up, clear of the Kegboard devices'."""
    devs = []
    for name, port, product, serial in (("phidget-v2", 40, "0031", "123456"), ("phidget-v1", 41, "0030", "223344"),
                                        ("phidget-1024", 42, "0034", "334455"), ("phidget-vetoed", 43, "0031", "VETO01")):
        path, rec = umocktest.hidraw(port, "hidraw%d" % (port - 40), "06c2", product, serial=serial,
                                     descriptor=DESCRIPTOR)
        devs.append(RecordDev(name, path, rec, "hidraw"))
    path, rec = umocktest.usb_tty(44, "ttyUSB44", "0403", "6015", serial="DN01ABCD")
    devs.append(RecordDev("rfid-id12", path, rec, "tty"))
    path, rec = umocktest.usb_tty(45, "ttyUSB45", "0403", "6015", serial="KB015FT")
    devs.append(RecordDev("kegboard-ft231x", path, rec, "tty"))
    event, inp, rec = umocktest.input_event_node(46, 5, "ffff", "0035", extra={"ID_INPUT_KEYBOARD": "1"},
                                                 parent_extra={"ID_INPUT_KEYBOARD": "1"})
    devs.append(RecordDev("rfid-keyboard", event, rec, "input"))
    devs.append(RecordDev("rfid-keyboard-parent", inp, "", "input"))
    event, inp, rec = umocktest.input_event_node(47, 6, "046d", "c31c", extra={"ID_INPUT_KEYBOARD": "1"})
    devs.append(RecordDev("other-keyboard", event, rec, "input"))
    return devs


# Parents shared by the fake devices, listed once after all of them.
SHARED_PARENTS = "\n".join([
    "P: /devices/pci0000:00/0000:00:14.0/usb1", "N: bus/usb/001/001", "E: DEVTYPE=usb_device",
    "E: SUBSYSTEM=usb", "A: idVendor=1d6b", "A: idProduct=0002", "",
    "P: /devices/pci0000:00/0000:00:14.0", "E: SUBSYSTEM=pci", "A: vendor=0x8086", "",
    "P: /devices/platform/serial8250", "E: DRIVER=serial8250", "E: SUBSYSTEM=platform", ""])


class UdevRulesTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (unshare -m and tmpfs mounts)")
        sdtest.need_tool("udevadm", "umockdev-run", "unshare")
        devs = []
        for i, (vendor, product) in enumerate(KNOWN_IDS):
            devs.append(Dev("known-%s-%s" % (vendor, product or "any"), vendor,
                            product or "%04x" % (0x0042 + i), "KB%04dSERIAL" % i))
        devs.append(Dev("known-noserial", "0403", "6001", None))
        devs.append(Dev("known-remove", "1a86", "7523", "KBREMOVE", action="remove"))
        devs.append(Dev("other-ftdi-product", "0403", "6010", "OTHER1"))
        devs.append(Dev("other-vendor", "1234", "5678", "OTHER2", kind="ttyUSB"))
        devs.append(Dev("opt-in", "1234", "abcd", "OPTIN1", kind="ttyUSB"))
        devs.append(Dev("platform-uart", None, None, None, kind="ttyS"))
        devs.append(Dev("platform-uart-opt-in", None, None, None, kind="ttyS", kernel="ttyS4"))
        devs.append(Dev("pi-uart-opt-in", None, None, None, kind="ttyAMA", kernel="ttyAMA0"))
        devs += rfid_devices()
        cls.devs = {d.name: d for d in devs}
        cls.tmp = tempfile.mkdtemp(prefix="kegbot-udev-")
        rules_dir = os.path.join(cls.tmp, "rules.d")
        os.mkdir(rules_dir)
        shutil.copy(RULES, rules_dir)
        shutil.copy(RFID_RULES, rules_dir)
        with open(os.path.join(rules_dir, "60-local-kegboard.rules"), "w") as f:
            f.write(LOCAL_OPT_IN)
        with open(os.path.join(rules_dir, "60-kegbot-rfid-local.rules"), "w") as f:
            f.write(LOCAL_RFID)
        group_file = os.path.join(cls.tmp, "group")
        with open("/etc/group") as src, open(group_file, "w") as f:
            groups = src.read()
            f.write(groups)
            if not re.search(r"^kegbot:", groups, re.M):
                f.write("kegbot:x:989:\n")
        out = os.path.join(cls.tmp, "out")
        os.mkdir(out)
        with open(os.path.join(cls.tmp, "devices.umockdev"), "w") as f:
            f.write("\n".join([d.umockdev() for d in devs if d.umockdev()] + [SHARED_PARENTS]))
        with open(os.path.join(out, "list"), "w") as f:
            for d in devs:
                f.write("%s %s %s\n" % (d.name, d.action, d.syspath()))
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", NS_SCRIPT],
                           env=dict(os.environ, RULES_DIR=rules_dir, OUT=out, GROUP_FILE=group_file,
                                    DEVICES=os.path.join(cls.tmp, "devices.umockdev")),
                           capture_output=True, text=True, timeout=120)
        cls.ns_result = r
        cls.results = {}
        for d in devs:
            props, err = {}, ""
            try:
                with open(os.path.join(out, d.name + ".out")) as f:
                    for line in f:
                        m = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line.rstrip("\n"))
                        if m:
                            props[m.group(1)] = m.group(2)
                with open(os.path.join(out, d.name + ".err")) as f:
                    err = f.read()
            except FileNotFoundError:
                pass
            cls.results[d.name] = (props, err)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def result(self, name):
        props, err = self.results[name]
        self.assertTrue(props, "udevadm test of %s gave no properties; namespace run: %s\n%s\n%s" % (
            name, self.ns_result.returncode, self.ns_result.stderr[-2000:], err[-3000:]))
        # The fake device was really seen as a USB device behind a tty (or the platform UART).
        self.assertEqual(props.get("SUBSYSTEM"), getattr(self.devs[name], "subsystem", "tty"), name)
        return props, err

    def assertWants(self, name):
        d = self.devs[name]
        props, err = self.result(name)
        self.assertEqual(props.get("SYSTEMD_WANTS"), "kegboard-daemon@%s.service" % d.kernel,
                         "%s: %s" % (name, props))
        self.assertIn("systemd", props.get("TAGS", "").split(":"), name)
        self.assertEqual(props.get("ID_MM_DEVICE_IGNORE"), "1", name)
        self.assertEqual(props.get("KEGBOT_KEGBOARD"), "1", name)
        link = "/dev/kegboard/" + (d.serial or d.kernel)
        self.assertIn(link, props.get("DEVLINKS", "").split(), name)
        self.assertEqual(len([l for l in props.get("DEVLINKS", "").split() if l.startswith("/dev/kegboard/")]), 1)
        self.assertRegex(err, r"70-kegboard\.rules:\d+ GROUP \d+")
        self.assertRegex(err, r"70-kegboard\.rules:\d+ MODE 0660")

    def assertNotWanted(self, name):
        props, err = self.result(name)
        self.assertNotIn("SYSTEMD_WANTS", props, "%s: %s" % (name, props))
        self.assertNotIn("KEGBOT_KEGBOARD", props, name)
        self.assertFalse([l for l in props.get("DEVLINKS", "").split() if l.startswith("/dev/kegboard/")], name)

    def test_known_ids(self):
        for vendor, product in KNOWN_IDS:
            name = "known-%s-%s" % (vendor, product or "any")
            with self.subTest(device=name):
                self.assertWants(name)

    def test_known_id_without_serial_links_kernel_name(self):
        self.assertWants("known-noserial")

    def test_remove_event_wants_nothing(self):
        props, _ = self.result("known-remove")
        self.assertNotIn("SYSTEMD_WANTS", props)

    def test_other_devices(self):
        for name in ("other-ftdi-product", "other-vendor", "platform-uart"):
            with self.subTest(device=name):
                self.assertNotWanted(name)

    def test_opt_in(self):
        self.assertWants("opt-in")

    def test_opt_in_on_platform_uarts(self):
        """KEGBOT_KEGBOARD=1 works for any tty, not only ttyUSB*/ttyACM* (the rule used to drop other
        names before looking at the opt-in)."""
        self.assertWants("platform-uart-opt-in")
        self.assertWants("pi-uart-opt-in")

    # ---- RFID readers (70-kegbot-rfid.rules) ----

    def wanted(self, name):
        props, _ = self.result(name)
        return props.get("SYSTEMD_WANTS", "").split()

    def assertRfidReader(self, name, unit, group):
        props, err = self.result(name)
        self.assertEqual(self.wanted(name), [unit], "%s: %s" % (name, props))
        self.assertIn("systemd", props.get("TAGS", "").split(":"), name)
        self.assertRegex(err, r"70-kegbot-rfid\.rules:\d+ GROUP \d+")
        self.assertRegex(err, r"70-kegbot-rfid\.rules:\d+ MODE 0660")
        self.assertNotRegex(err, r"[Uu]nknown group")
        gid = re.search(r"70-kegbot-rfid\.rules:\d+ GROUP (\d+)", err).group(1)
        with open(os.path.join(self.tmp, "group")) as f:
            gids = {l.split(":")[0]: l.split(":")[2] for l in f if l.count(":") >= 3}
        self.assertEqual(gid, gids[group], name)
        return props

    # 53
    def test_phidgets(self):
        for name, kernel in (("phidget-v2", "hidraw0"), ("phidget-v1", "hidraw1")):
            with self.subTest(device=name):
                props = self.assertRfidReader(name, "rfid-reader@%s.service" % kernel, "kegbot")
                self.assertEqual(props.get("KEGBOT_RFID"), "1")

    # 54
    def test_1024_and_vetoed_phidget(self):
        for name in ("phidget-1024", "phidget-vetoed"):
            with self.subTest(device=name):
                props, _ = self.result(name)
                self.assertNotIn("SYSTEMD_WANTS", props, props)
                self.assertNotEqual(props.get("KEGBOT_RFID"), "1")

    # 55
    def test_serial_reader_is_no_kegboard(self):
        props = self.assertRfidReader("rfid-id12", "rfid-reader@ttyUSB44.service", "dialout")
        self.assertEqual(props.get("ID_MM_DEVICE_IGNORE"), "1")
        self.assertNotIn("KEGBOT_KEGBOARD", props)
        self.assertFalse([l for l in props.get("DEVLINKS", "").split() if l.startswith("/dev/kegboard/")])
        # The same chip without the opt-in stays a Kegboard candidate only.
        self.assertEqual(self.wanted("kegboard-ft231x"), ["kegboard-daemon@ttyUSB45.service"])

    # 56
    def test_keyboard_reader(self):
        props = self.assertRfidReader("rfid-keyboard", "rfid-reader@input-event5.service", "kegbot")
        self.assertEqual(props.get("LIBINPUT_IGNORE_DEVICE"), "1")
        self.assertEqual(props.get("KEGBOT_RFID"), "1")
        for name in ("rfid-keyboard-parent", "other-keyboard"):
            with self.subTest(device=name):
                props, _ = self.result(name)
                self.assertNotIn("SYSTEMD_WANTS", props, props)
                self.assertNotIn("LIBINPUT_IGNORE_DEVICE", props)

    def test_rules_list_matches_spec(self):
        """The rules file nominates exactly the spec's vendor/product ids."""
        with open(RULES) as f:
            text = f.read()
        found = set()
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            v = re.search(r'ATTRS\{idVendor\}=="([0-9a-f]{4})"', line)
            if v:
                p = re.search(r'ATTRS\{idProduct\}=="([0-9a-f]{4})"', line)
                found.add((v.group(1), p.group(1) if p else None))
        self.assertEqual(found, set(KNOWN_IDS))


if __name__ == "__main__":
    kbtest.main()
