"""`meson install` puts every integration file where this system's pkg-config says (systemd unit,
udev, tmpfiles and sysusers dirs, the D-Bus system.d and system-services dirs) and the programs in
bindir; the sysusers.d and tmpfiles.d files really work (applied to a scratch root with
systemd-sysusers --root / systemd-tmpfiles --root): the service user kegbot, the operator group
kegbot-admin, and an API key that an operator cannot read.
"""
import os
import subprocess
import tempfile
import unittest

import kbtest
import sdtest

PROGRAMS = ["kegbot_core", "kegboard_daemon", "kegboard_sim", "kegboard_monitor", "kegboard_tester",
            "test_flow", "kegbot_master", "kegbot_mqtt", "kegbot_calibrate"]


def read_db(path):
    with open(path) as f:
        return {l.split(":")[0]: l.split(":") for l in f.read().splitlines() if l}


class InstallTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sdtest.need_tool("pkg-config", "meson")
        cls.inst = sdtest.Installed().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.inst.__exit__(None, None, None)

    def assertInstalled(self, path):
        self.assertTrue(os.path.isfile(self.inst.path(path)), "%s was not installed" % path)

    def test_units(self):
        for u in sdtest.UNITS:
            self.assertInstalled(os.path.join(self.inst.unitdir, u))

    def test_udev_rules(self):
        udevdir = sdtest.pkgconfig_var("udev", "udevdir")
        self.assertInstalled(os.path.join(udevdir, "rules.d", "70-kegboard.rules"))
        self.assertInstalled(os.path.join(udevdir, "rules.d", "70-kegbot-rfid.rules"))

    def test_tmpfiles_sysusers(self):
        self.assertInstalled(os.path.join(sdtest.pkgconfig_var("systemd", "tmpfilesdir"), "kegbot.conf"))
        self.assertInstalled(os.path.join(sdtest.pkgconfig_var("systemd", "sysusersdir"), "kegbot.conf"))

    def test_dbus(self):
        datadir = sdtest.pkgconfig_var("dbus-1", "datadir")
        services = sdtest.pkgconfig_var("dbus-1", "system_bus_services_dir")
        self.assertInstalled(os.path.join(datadir, "dbus-1", "system.d", "org.kegbot.Core1.conf"))
        svc = os.path.join(services, "org.kegbot.Core1.service")
        self.assertInstalled(svc)
        with open(self.inst.path(svc)) as f:
            text = f.read()
        self.assertIn("SystemdService=kegbot-core.service", text)
        for line in text.splitlines():
            if line.startswith("Exec="):
                prog = line[5:].split()[0]
                self.assertTrue(os.access(self.inst.path(prog), os.X_OK), "Exec=%s is not installed" % prog)

    def test_programs(self):
        for p in PROGRAMS:
            kbtest.binary(p)
            self.assertTrue(os.access(self.inst.path(os.path.join(self.inst.bindir, p)), os.X_OK),
                            "%s not installed in %s" % (p, self.inst.bindir))

    def test_sysusers_tmpfiles_apply(self):
        if os.geteuid() != 0:
            self.skipTest("needs root (systemd-tmpfiles gives the directories to user kegbot)")
        sdtest.need_tool("systemd-sysusers", "systemd-tmpfiles")
        sysusers = self.inst.path(os.path.join(sdtest.pkgconfig_var("systemd", "sysusersdir"), "kegbot.conf"))
        tmpfiles = self.inst.path(os.path.join(sdtest.pkgconfig_var("systemd", "tmpfilesdir"), "kegbot.conf"))
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "etc"))
            # A scratch root with only root's entries: sysusers must create kegbot and dialout itself.
            for name, text in (("passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("group", "root:x:0:\n"),
                               ("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
                with open(os.path.join(root, "etc", name), "w") as f:
                    f.write(text)
            r = subprocess.run(["systemd-sysusers", "--root=" + root, sysusers], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("ignoring", r.stderr.lower(), r.stderr)
            users = read_db(os.path.join(root, "etc/passwd"))
            groups = read_db(os.path.join(root, "etc/group"))
            self.assertIn("kegbot", users)
            uid = int(users["kegbot"][2])
            self.assertLess(uid, 1000, "kegbot must be a system user")
            self.assertEqual(users["kegbot"][5], "/var/lib/kegbot")
            self.assertIn("kegbot", groups)
            self.assertIn("dialout", groups)
            self.assertIn("kegbot", groups["dialout"][3].split(","))
            gid = int(groups["kegbot"][2])
            # The operators' group (D-Bus methods) is not the service's: kegbot is no member of it.
            self.assertIn("kegbot-admin", groups)
            admin_gid = int(groups["kegbot-admin"][2])
            self.assertNotEqual(admin_gid, gid)
            self.assertLess(admin_gid, 1000, "kegbot-admin must be a system group")
            self.assertEqual(groups["kegbot-admin"][3], "")

            r = subprocess.run(["systemd-tmpfiles", "--root=" + root, "--create", tmpfiles],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stderr.strip(), "", r.stderr)
            for d, mode in (("run/kegbot", 0o755), ("var/lib/kegbot", 0o750), ("var/log/kegbot", 0o750)):
                st = os.stat(os.path.join(root, d))
                self.assertEqual((st.st_uid, st.st_gid), (uid, gid), d)
                self.assertEqual(st.st_mode & 0o7777, mode, d)
            # Optional settings exist, empty, not world-readable for the key.
            st = os.stat(os.path.join(root, "etc/kegbot/api_key"))
            self.assertEqual((st.st_size, st.st_mode & 0o777, st.st_gid), (0, 0o640, gid))
            # Only root and the service read the key: an operator (kegbot-admin) cannot, a process of
            # group kegbot can (what LoadCredential= hands the service comes from root anyway).
            with open(os.path.join(root, "etc/kegbot/api_key"), "w") as f:
                f.write("secret-api-key\n")
            os.chmod(root, 0o755)

            def read_key_as(group):
                return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--groups=%d" % group,
                                       "cat", os.path.join(root, "etc/kegbot/api_key")],
                                      capture_output=True, text=True, timeout=30)
            r = read_key_as(admin_gid)
            self.assertNotEqual(r.returncode, 0, "an operator read the API key: %r" % r.stdout)
            self.assertIn("Permission denied", r.stderr)
            self.assertNotIn("secret", r.stdout)
            r = read_key_as(gid)
            self.assertEqual((r.returncode, r.stdout), (0, "secret-api-key\n"), r.stderr)
            # The core may create files in /etc/kegbot (a calibration replaces taps.ini), but the sticky
            # bit keeps it from replacing root's files there (calibration.md section 4.5).
            st = os.stat(os.path.join(root, "etc/kegbot"))
            self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o7777), (0, gid, 0o1775))
            # An admin's taps file is handed to the core.
            with open(os.path.join(root, "etc/kegbot/taps.ini"), "w") as f:
                f.write("[kegboard.flow0]\nml_per_tick = 0.185\n")
            r = subprocess.run(["systemd-tmpfiles", "--root=" + root, "--create", tmpfiles],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            st = os.stat(os.path.join(root, "etc/kegbot/taps.ini"))
            self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o7777), (uid, gid, 0o644))
            # Applying again changes nothing and does not complain.
            r = subprocess.run(["systemd-tmpfiles", "--root=" + root, "--create", tmpfiles],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual((r.returncode, r.stderr.strip()), (0, ""))


if __name__ == "__main__":
    kbtest.main()
