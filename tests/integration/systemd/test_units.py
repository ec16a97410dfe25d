"""Static checks of the installed systemd units (units/):

* `systemd-analyze verify` prints nothing for every unit (and for an instance of the template), with
  the ExecStart= binaries taken from a `meson install --destdir` tree and the man pages from it;
* every service scores <= 2.0 on `systemd-analyze security --offline=yes` (the score is printed);
* every ExecStart= binary is installed in the build's bindir, each flag it is given exists in that
  program's --help, and the command line really runs (specifiers filled in with scratch files);
* the wiring the design asks for (socket address, Type=notify, BusName=, WatchdogSec=, ...);
* restarts: every service restarts on failure but within a start limit it can reach, and the exit
  statuses that mean "missing device, library or configuration" are not retried.
"""
import os
import re
import shlex
import subprocess
import tempfile
import unittest

import kbtest
import sdtest

# The instances systemd-analyze verify checks for each template (what udev starts).
INSTANCES = {"kegboard-daemon@.service": ["ttyUSB0"], "rfid-reader@.service": ["hidraw0", "input-event5"]}


class UnitTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sdtest.need_tool("systemd-analyze", "pkg-config")
        cls.inst = sdtest.Installed().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.inst.__exit__(None, None, None)

    def unit_path(self, name):
        return self.inst.path(os.path.join(self.inst.unitdir, name))

    def rewritten_units(self, tmp):
        """Copies of the installed units whose binary paths point into the DESTDIR tree, plus an
        instance of each template (verify checks instances the way systemd loads them)."""
        out = []
        for u in self.inst.units():
            with open(self.unit_path(u)) as f:
                text = f.read()
            text = text.replace(self.inst.bindir + "/", self.inst.path(self.inst.bindir) + "/")
            names = [u] + [u.replace("@.", "@%s." % i) for i in INSTANCES.get(u, [])]
            for n in names:
                with open(os.path.join(tmp, n), "w") as f:
                    f.write(text)
                out.append(os.path.join(tmp, n))
        return out

    def test_units_installed(self):
        self.assertEqual(self.inst.units()[:len(sdtest.UNITS)], sdtest.UNITS)
        present = os.listdir(self.inst.path(self.inst.unitdir))
        self.assertIn("rfid-reader@.service", present)
        # Replaced by one rfid-reader@ instance per reader.
        self.assertNotIn("rfid-daemon.service", present)

    def test_verify(self):
        # Documentation= pages are checked by test_man_pages (they come from man/).
        with tempfile.TemporaryDirectory() as tmp:
            for path in self.rewritten_units(tmp):
                with self.subTest(unit=os.path.basename(path)):
                    r = subprocess.run(["systemd-analyze", "verify", "--man=no", path], capture_output=True,
                                       text=True, cwd=tmp, env=dict(os.environ, SYSTEMD_LOG_COLOR="0"),
                                       timeout=60)
                    out = (r.stdout + r.stderr).strip()
                    self.assertEqual(out, "", "systemd-analyze verify %s printed:\n%s" % (path, out))
                    self.assertEqual(r.returncode, 0)

    def test_man_pages(self):
        """Every Documentation=man:page(N) of every unit is installed (the check verify does with
        --man=yes, against the DESTDIR's mandir)."""
        mandir = self.inst.path(os.path.join(self.inst.prefix, "share", "man"))
        for u in self.inst.units():
            unit = sdtest.read_unit(self.unit_path(u))
            for doc in " ".join(sdtest.unit_values(unit, "Unit", "Documentation")).split():
                m = re.match(r"^man:([^()]+)\((\w+)\)$", doc)
                if not m:
                    continue
                with self.subTest(unit=u, page=doc):
                    r = subprocess.run(["man", "-w", "%s.%s" % (m.group(1), m.group(2))], capture_output=True,
                                       text=True, env=dict(os.environ, MANPATH=mandir), timeout=30)
                    self.assertEqual(r.returncode, 0, "%s: %s is not installed under %s" % (u, doc, mandir))

    def test_security(self):
        for u in self.inst.units():
            if not u.endswith(".service"):
                continue
            with self.subTest(unit=u):
                r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                                    self.unit_path(u)], capture_output=True, text=True, timeout=60,
                                   env=dict(os.environ, SYSTEMD_COLORS="0"))
                m = re.search(r"Overall exposure level for (\S+): (\d+\.\d+)", r.stdout)
                self.assertIsNotNone(m, "no score in:\n" + r.stdout + r.stderr)
                score = float(m.group(2))
                print("security: %s %.1f" % (m.group(1), score))
                if score > sdtest.SECURITY_LIMIT:
                    self.fail("%s scores %.1f > %.1f:\n%s" % (u, score, sdtest.SECURITY_LIMIT,
                              "\n".join(l for l in r.stdout.splitlines() if l.startswith("✗"))))

    def test_execstart_flags(self):
        for u in self.inst.units():
            unit = sdtest.read_unit(self.unit_path(u))
            for cmd in sdtest.unit_values(unit, "Service", "ExecStart"):
                with self.subTest(unit=u, cmd=cmd):
                    argv = shlex.split(cmd.lstrip("-@:+!"))
                    prog = argv[0]
                    self.assertEqual(os.path.dirname(prog), self.inst.bindir, "%s not in bindir" % prog)
                    self.assertTrue(os.access(self.inst.path(prog), os.X_OK), "%s is not installed" % prog)
                    built = kbtest.binary(os.path.basename(prog))
                    helptext = kbtest.run([built, "--help"]).stdout
                    for a in argv[1:]:
                        m = re.match(r"^--?(?:no)?([a-z_0-9]+)", a)
                        self.assertIsNotNone(m, "unexpected argument %r" % a)
                        name = m.group(1)
                        self.assertRegex(helptext, r"\n  --(\[no\])?%s:" % re.escape(name),
                                         "%s has no flag --%s" % (prog, name))

    def command_with_fallbacks(self, unit_name, creds):
        """ExecStart= of the unit as argv, %d pointing at 'creds' filled with the SetCredential=
        fallbacks (what the service gets when none of its LoadCredential= files exist), and the
        names of the credentials it loads."""
        unit = sdtest.read_unit(self.unit_path(unit_name))
        cmd = sdtest.unit_values(unit, "Service", "ExecStart")[0]
        fallbacks = {}
        for v in sdtest.unit_values(unit, "Service", "SetCredential"):
            k, _, data = v.partition(":")
            fallbacks[k] = data.encode().decode("unicode_escape")
        loaded = [v.partition(":")[0] for v in sdtest.unit_values(unit, "Service", "LoadCredential")]
        # A missing source file of a LoadCredential= fails the start unless a fallback exists.
        self.assertEqual(sorted(fallbacks), sorted(loaded))
        os.mkdir(creds)
        for k, data in fallbacks.items():
            with open(os.path.join(creds, k), "w") as f:
                f.write(data)
        return [a.replace("%d", creds) for a in shlex.split(cmd)], loaded

    def test_core_command_line_runs(self):
        """ExecStart= of kegbot-core.service, with the SetCredential= fallbacks as credentials:
        the core must start (empty key, empty flag file) and stop cleanly on SIGTERM."""
        with tempfile.TemporaryDirectory() as tmp:
            argv, loaded = self.command_with_fallbacks("kegbot-core.service", os.path.join(tmp, "creds"))
            self.assertIn("api_key", loaded)
            argv[0] = kbtest.binary("kegbot_core")
            port = kbtest.free_port()
            argv += ["--dbus=none", "--kb_core_bind_addr=127.0.0.1:%d" % port]
            p = kbtest.Proc(argv, env={"STATE_DIRECTORY": os.path.join(tmp, "state"),
                                       "KEGBOT_API_URL": "", "KEGBOT_API_KEY": ""}, cwd=tmp)
            try:
                p.wait_line(r"Starting server on", timeout=10)
            finally:
                rc = p.stop()
            err = "\n".join(p.output("stderr"))
            self.assertEqual(rc, 0, err)
            self.assertNotIn("Error:", err)
            self.assertIn("standalone mode", err)

    def test_mqtt_command_line_runs(self):
        """ExecStart= of kegbot-mqtt.service with the SetCredential= fallbacks as credentials: the
        empty password and flag file are read and the flags are valid; without a bus it stops there
        (exit 1, which the unit restarts on)."""
        with tempfile.TemporaryDirectory() as tmp:
            argv, loaded = self.command_with_fallbacks("kegbot-mqtt.service", os.path.join(tmp, "creds"))
            self.assertEqual(sorted(loaded), ["api_key", "flags", "mqtt_password"])
            argv[0] = kbtest.binary("kegbot_mqtt")
            r = kbtest.run(argv + ["--mqtt_node_id=kegbot_unittest"], timeout=20,
                           env={"STATE_DIRECTORY": os.path.join(tmp, "state"), "KEGBOT_API_URL": "",
                                "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=" + os.path.join(tmp, "no-bus")})
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertNotIn("Error:", r.stderr)
            self.assertIn("Node kegbot_unittest: base kegbot/kegbot_unittest", r.stderr)
            self.assertIn("Cannot connect to the system bus", r.stderr)
            self.assertTrue(os.path.isdir(os.path.join(tmp, "state")), "STATE_DIRECTORY is the state directory")

    def test_mqtt_wiring(self):
        u = sdtest.read_unit(self.unit_path("kegbot-mqtt.service"))
        self.assertEqual(sdtest.unit_values(u, "Service", "Type"), ["notify"])
        self.assertTrue(sdtest.unit_values(u, "Service", "WatchdogSec"))
        self.assertEqual(sdtest.unit_values(u, "Service", "User"), ["kegbot"])
        self.assertEqual(sdtest.unit_values(u, "Service", "StateDirectory"), ["kegbot-mqtt"])
        self.assertEqual(sdtest.unit_values(u, "Service", "Restart"), ["on-failure"])
        self.assertIn("2", " ".join(sdtest.unit_values(u, "Service", "RestartPreventExitStatus")).split())
        self.assertIn("mqtt_password:/etc/kegbot/mqtt_password", sdtest.unit_values(u, "Service", "LoadCredential"))
        self.assertIn("-/var/lib/kegbot", sdtest.unit_values(u, "Service", "InaccessiblePaths"))
        self.assertIn("kegbot-core.service", " ".join(sdtest.unit_values(u, "Unit", "Wants")).split())
        self.assertIn("kegbot.target", sdtest.unit_values(u, "Unit", "PartOf"))
        # Installed, not enabled: only [Install], nothing in the target pulls it in.
        target = sdtest.read_unit(self.unit_path("kegbot.target"))
        self.assertNotIn("kegbot-mqtt.service", " ".join(sdtest.unit_values(target, "Unit", "Wants")).split())

    def test_kegboard_daemon_command_line_runs(self):
        """ExecStart= of kegboard-daemon@.service on an empty capture file: parsed, replayed, exit 0."""
        unit = sdtest.read_unit(self.unit_path("kegboard-daemon@.service"))
        cmd = sdtest.unit_values(unit, "Service", "ExecStart")[0]
        with tempfile.NamedTemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as f:
            argv = [a.replace("/dev/%I", f.name) for a in shlex.split(cmd)]
            argv[0] = kbtest.binary("kegboard_daemon")
            r = kbtest.run(argv + ["--kb_core_addr=127.0.0.1:%d" % kbtest.free_port()], timeout=20)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("Error:", r.stderr)

    def test_rfid_reader_command_line_runs(self):
        """ExecStart= of rfid-reader@.service with the SetCredential= fallback as its flag file, on a node
        udev does not know (a pty): parsed (no flag error), and the daemon refuses the node with exit 2,
        a status the unit does not restart on."""
        unit = sdtest.read_unit(self.unit_path("rfid-reader@.service"))
        cmd = sdtest.unit_values(unit, "Service", "ExecStart")[0]
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "flags"), "w") as f:
                f.write("\n")
            master, slave = os.openpty()
            try:
                node = os.ttyname(slave)
                argv = [a.replace("%d", tmp).replace("/dev/%I", node) for a in shlex.split(cmd)]
                argv[0] = kbtest.binary("rfid_daemon")
                r = kbtest.run(argv + ["--kb_core_addr=127.0.0.1:%d" % kbtest.free_port()], timeout=20)
            finally:
                os.close(master)
                os.close(slave)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertNotIn("Error:", r.stderr)
            self.assertIn("cannot tell what kind of RFID reader this is", r.stderr)
            self.assertIn("2", sdtest.unit_values(unit, "Service", "RestartPreventExitStatus")[0].split())

    def test_restarts(self):
        """Every service restarts on failure, but a restart loop reaches the start limit (the default
        limit, 5 starts in 10 s, is never reached with RestartSec=5); the exit statuses that mean a
        missing device, library or configuration are not retried."""
        prevent = {"kegboard-daemon@.service": {"0"}, "rfid-reader@.service": {"0", "2"},
                   "lcd-daemon.service": {"1"}, "sound-server.service": {"1"}, "kegbot-core.service": set(),
                   "kegbot-mqtt.service": {"0", "2"}, "kegbot-boards.service": set()}
        for u in self.inst.units():
            if not u.endswith(".service"):
                continue
            with self.subTest(unit=u):
                unit = sdtest.read_unit(self.unit_path(u))
                self.assertEqual(sdtest.unit_values(unit, "Service", "Restart"), ["on-failure"])
                restart_sec = float(sdtest.unit_values(unit, "Service", "RestartSec")[0])
                interval = sdtest.unit_values(unit, "Unit", "StartLimitIntervalSec")
                burst = sdtest.unit_values(unit, "Unit", "StartLimitBurst")
                self.assertTrue(interval and burst, "%s has no explicit start limit" % u)
                self.assertLess(int(burst[0]) * restart_sec, float(interval[0]),
                                "%s: %s restarts %s s apart never reach a limit of %s s" % (u, burst[0], restart_sec,
                                                                                            interval[0]))
                got = set(" ".join(sdtest.unit_values(unit, "Service", "RestartPreventExitStatus")).split())
                self.assertIn(u, prevent, "a new unit: say here which of its exit statuses are not retried")
                self.assertEqual(got, prevent[u])

    def test_wiring(self):
        u = {n: sdtest.read_unit(self.unit_path(n)) for n in sdtest.UNITS}
        sock, core, kbd, target = (u["kegbot-core.socket"], u["kegbot-core.service"],
                                   u["kegboard-daemon@.service"], u["kegbot.target"])
        # TCP for everyone (listeners), the Unix socket for the producers: group kegbot only.
        self.assertEqual(sdtest.unit_values(sock, "Socket", "ListenStream"),
                         ["127.0.0.1:9805", "/run/kegbot/kegnet.sock"])
        self.assertEqual(sdtest.unit_values(sock, "Socket", "SocketGroup"), ["kegbot"])
        self.assertEqual(sdtest.unit_values(sock, "Socket", "SocketMode"), ["0660"])
        producers = [kbd] + [sdtest.read_unit(self.unit_path(n)) for n in ("rfid-reader@.service",)
                             if os.path.exists(self.unit_path(n))]
        for p in producers:
            self.assertIn("--kb_core_addr=unix:/run/kegbot/kegnet.sock",
                          shlex.split(sdtest.unit_values(p, "Service", "ExecStart")[0]))
            self.assertEqual(sdtest.unit_values(p, "Service", "Group"), ["kegbot"])
        # Who owns a loopback kegnet peer: the kernel's socket diagnostics, over netlink.
        self.assertIn("AF_NETLINK", " ".join(sdtest.unit_values(core, "Service", "RestrictAddressFamilies")).split())
        self.assertEqual(sdtest.unit_values(core, "Service", "Type"), ["notify"])
        self.assertEqual(sdtest.unit_values(core, "Service", "BusName"), ["org.kegbot.Core1"])
        self.assertTrue(sdtest.unit_values(core, "Service", "WatchdogSec"))
        self.assertEqual(sdtest.unit_values(core, "Service", "Restart"), ["on-failure"])
        self.assertEqual(sdtest.unit_values(core, "Service", "User"), ["kegbot"])
        self.assertEqual(sdtest.unit_values(core, "Service", "StateDirectory"), ["kegbot"])
        self.assertIn("api_key:/etc/kegbot/api_key", sdtest.unit_values(core, "Service", "LoadCredential"))
        self.assertIn("flags:/etc/kegbot/kegbot_core.flags",
                      sdtest.unit_values(core, "Service", "LoadCredential"))
        # A calibration rewrites /etc/kegbot/taps.ini despite ProtectSystem=strict.
        self.assertEqual(sdtest.unit_values(core, "Service", "ProtectSystem"), ["strict"])
        self.assertIn("-/etc/kegbot", sdtest.unit_values(core, "Service", "ReadWritePaths"))
        # The target pulls in the socket (the core is socket/bus activated) and the oneshot that starts
        # the daemons of boards already plugged in (they stop with the target: PartOf=).
        wants = " ".join(sdtest.unit_values(target, "Unit", "Wants")).split()
        self.assertIn("kegbot-core.socket", wants)
        self.assertNotIn("kegbot-core.service", wants)
        self.assertIn("kegbot-boards.service", wants)
        boards = u["kegbot-boards.service"]
        self.assertEqual(sdtest.unit_values(boards, "Service", "Type"), ["oneshot"])
        self.assertEqual(sdtest.unit_values(boards, "Service", "RemainAfterExit"), ["yes"])
        self.assertTrue(sdtest.unit_values(boards, "Service", "ExecStart")[0].endswith("/kegboard_daemon --start_boards"))
        for n in ("kegbot-core.socket", "kegbot-core.service", "kegboard-daemon@.service", "kegbot-boards.service"):
            self.assertIn("kegbot.target", sdtest.unit_values(u[n], "Unit", "PartOf"), n)
        self.assertEqual(sdtest.unit_values(kbd, "Unit", "BindsTo"), ["dev-%i.device"])
        self.assertIn("dev-%i.device", " ".join(sdtest.unit_values(kbd, "Unit", "After")).split())
        self.assertEqual(sdtest.unit_values(kbd, "Service", "Type"), ["notify"])
        self.assertEqual(sdtest.unit_values(kbd, "Service", "DevicePolicy"), ["closed"])
        self.assertEqual(sdtest.unit_values(kbd, "Service", "DeviceAllow"), ["/dev/%I rw"])
        self.assertEqual(sdtest.unit_values(kbd, "Service", "SupplementaryGroups"), ["dialout"])

        rfid = sdtest.read_unit(self.unit_path("rfid-reader@.service"))
        self.assertEqual(sdtest.unit_values(rfid, "Unit", "BindsTo"), ["dev-%i.device"])
        self.assertIn("kegbot.target", sdtest.unit_values(rfid, "Unit", "PartOf"))
        self.assertEqual(sdtest.unit_values(rfid, "Service", "Type"), ["notify"])
        self.assertEqual(sdtest.unit_values(rfid, "Service", "DevicePolicy"), ["closed"])
        self.assertEqual(sdtest.unit_values(rfid, "Service", "DeviceAllow"), ["/dev/%I rw"])
        self.assertIn("flags:/etc/kegbot/rfid_daemon.flags", sdtest.unit_values(rfid, "Service", "LoadCredential"))
        self.assertNotIn("AF_NETLINK", " ".join(sdtest.unit_values(rfid, "Service", "RestrictAddressFamilies")))


if __name__ == "__main__":
    kbtest.main()
