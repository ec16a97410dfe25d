"""udev/70-kegboard.rules through the real udev rules engine: `udevadm test` on umockdev fake USB
serial devices, one per known Kegboard vendor/product id (kegboard-serial-protocol.md), plus
non-matching ones and the KEGBOT_KEGBOARD=1 opt-in.

udevadm test writes device symlinks under /dev and state under /run, so it runs inside `unshare -m`
with private tmpfs mounts on /dev (only a few host nodes bound in) and /run, and with a private
/etc/udev/rules.d holding only the rules under test (the host's /lib/udev/rules.d stay, as on a real
system: 60-serial.rules provides ID_SERIAL_SHORT).
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import kbtest
import sdtest

# The spec's table (kegboard-serial-protocol.md): vendor, product (None = any product of the vendor).
KNOWN_IDS = [("2341", None), ("2a03", None), ("0403", "6001"), ("0403", "6015"), ("1a86", "7523"),
             ("10c4", "ea60"), ("067b", "2303"), ("16c0", "0483"), ("03eb", "0436")]
# Vendors with a USB-serial converter chip give ttyUSB*, the others (CDC ACM firmware) ttyACM*.
USB_SERIAL_VENDORS = {"0403", "1a86", "10c4", "067b"}

RULES = os.path.join(sdtest.SOURCE_DIR, "udev", "70-kegboard.rules")
LOCAL_OPT_IN = ('SUBSYSTEM=="tty", ATTRS{idVendor}=="1234", ATTRS{idProduct}=="abcd", '
                'ENV{KEGBOT_KEGBOARD}="1"\n')

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
exec umockdev-run -d "$DEVICES" -- sh -c '
  while read -r name action syspath; do
    udevadm test --action="$action" "$syspath" >"$OUT/$name.out" 2>"$OUT/$name.err" || echo "$name failed" >>"$OUT/failures"
  done <"$OUT/list"'
"""


class Dev:
    _n = 0

    def __init__(self, name, vendor, product, serial, kind=None, action="add"):
        Dev._n += 1
        self.name, self.vendor, self.product, self.serial, self.action = name, vendor, product, serial, action
        self.kind = kind or ("ttyUSB" if vendor in USB_SERIAL_VENDORS else "ttyACM")
        self.port = Dev._n
        self.kernel = "%s%d" % (self.kind, self.port)

    def syspath(self):
        if self.kind == "ttyS":
            return "/sys/devices/platform/serial8250/tty/%s" % self.kernel
        usb = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-%d" % self.port
        if self.kind == "ttyUSB":
            return "%s/1-%d:1.0/%s/tty/%s" % (usb, self.port, self.kernel, self.kernel)
        return "%s/1-%d:1.0/tty/%s" % (usb, self.port, self.kernel)

    def umockdev(self):
        major = {"ttyUSB": 188, "ttyACM": 166, "ttyS": 4}[self.kind]
        sp = self.syspath()[len("/sys"):]
        out = ["P: " + sp, "N: " + self.kernel, "E: DEVNAME=/dev/" + self.kernel, "E: MAJOR=%d" % major,
               "E: MINOR=%d" % (64 + self.port if self.kind == "ttyS" else self.port), "E: SUBSYSTEM=tty", ""]
        if self.kind == "ttyS":
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
        cls.devs = {d.name: d for d in devs}
        cls.tmp = tempfile.mkdtemp(prefix="kegbot-udev-")
        rules_dir = os.path.join(cls.tmp, "rules.d")
        os.mkdir(rules_dir)
        shutil.copy(RULES, rules_dir)
        with open(os.path.join(rules_dir, "60-local-kegboard.rules"), "w") as f:
            f.write(LOCAL_OPT_IN)
        out = os.path.join(cls.tmp, "out")
        os.mkdir(out)
        with open(os.path.join(cls.tmp, "devices.umockdev"), "w") as f:
            f.write("\n".join([d.umockdev() for d in devs] + [SHARED_PARENTS]))
        with open(os.path.join(out, "list"), "w") as f:
            for d in devs:
                f.write("%s %s %s\n" % (d.name, d.action, d.syspath()))
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", NS_SCRIPT],
                           env=dict(os.environ, RULES_DIR=rules_dir, OUT=out,
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
        self.assertEqual(props.get("SUBSYSTEM"), "tty", name)
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
