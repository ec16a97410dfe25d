"""kegbot_mqtt's flags and start-up without a core (mqtt-home-assistant.md sections 2, 3.1 and 11):
flag errors exit 1, configuration that cannot be read (a password or TLS file, the machine id) exits
2 (the unit does not restart on it), no bus exits 1, and scenario 9: the default node id is kegbot_ +
the first 8 hex digits of the app-specific machine id. Needs no root and no broker."""
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402

APP_ID = "619ccc57c67745baa580aad270dcfcb4"


class FlagsTest(unittest.TestCase):
    def setUp(self):
        self._tmpdir = kbtest.TempDir(prefix="kegbot-mqtt-flags-")
        self.tmp = self._tmpdir.__enter__()
        # A bus address nobody listens on: start-up gets as far as the bus, then exits 1.
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=" + os.path.join(self.tmp, "no-bus"),
                    "STATE_DIRECTORY": "", "KEGBOT_API_URL": ""}

    def tearDown(self):
        self._tmpdir.__exit__(None, None, None)

    def run_bridge(self, *flags):
        return kbtest.run([kbtest.binary("kegbot_mqtt"), "--state_dir=" + os.path.join(self.tmp, "state")] +
                          list(flags), env=self.env, timeout=30)

    def file(self, name, text=""):
        p = os.path.join(self.tmp, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def test_flag_errors(self):
        ca = self.file("ca.pem", "x")
        cases = [
            (["--mqtt_ca_file=" + ca], "need --mqtt_tls"),
            (["--mqtt_tls", "--mqtt_cert_file=" + ca], "go together"),
            (["--mqtt_tls", "--mqtt_key_file=" + ca], "go together"),
            (["--mqtt_node_id=bad id"], "--mqtt_node_id"),
            (["--mqtt_node_id=" + "x" * 65], "--mqtt_node_id"),
            (["--mqtt_base=/kegbot"], "--mqtt_base"),
            (["--mqtt_base=kegbot/"], "--mqtt_base"),
            (["--mqtt_base=kegbot/+"], "--mqtt_base"),
            (["--mqtt_base=kegbot/#"], "--mqtt_base"),
            (["--mqtt_base=" + "k" * 257], "--mqtt_base"),
            (["--mqtt_base=kegbot/\xff"], None),
            (["--mqtt_discovery_prefix="], "--mqtt_discovery_prefix"),
            (["--mqtt_birth_topic=ha/#"], "--mqtt_birth_topic"),
            (["--mqtt_discovery=all"], "mqtt_discovery"),
            (["--mqtt_state_interval=9"], "mqtt_state_interval"),
            (["--mqtt_keepalive=601"], "mqtt_keepalive"),
            (["--mqtt_queue_limit=0"], "mqtt_queue_limit"),
            (["--mqtt_removal_grace=86401"], "mqtt_removal_grace"),
            (["--mqtt_port=65536"], "mqtt_port"),
            (["--dbus=none"], "dbus"),
            (["positional"], "unexpected argument"),
        ]
        for flags, text in cases:
            with self.subTest(flags=flags):
                if any("\xff" in f for f in flags):
                    # Not valid UTF-8 on the command line: built with surrogateescape.
                    flags = [f.encode("latin-1").decode("utf-8", "surrogateescape") for f in flags]
                r = self.run_bridge(*flags)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("Error:", r.stderr)
                if text:
                    self.assertIn(text, r.stderr)
        r = self.run_bridge("--help")
        self.assertEqual(r.returncode, 1)
        for f in ("--mqtt_host", "--mqtt_password_file", "--[no]mqtt_tls", "--mqtt_discovery", "--[no]mqtt_commands",
                  "--api_url", "--state_dir", "--dbus"):
            self.assertIn("  %s:" % f, r.stdout)

    def test_missing_configuration_exits_2(self):
        """What a restart cannot fix: unreadable password, TLS or key files."""
        missing = os.path.join(self.tmp, "missing")
        ok = self.file("ok.pem", "x")
        for flags in (["--mqtt_password_file=" + missing],
                      ["--mqtt_tls", "--mqtt_ca_file=" + missing],
                      ["--mqtt_tls", "--mqtt_ca_path=" + missing],
                      ["--mqtt_tls", "--mqtt_cert_file=" + ok, "--mqtt_key_file=" + missing],
                      ["--mqtt_password_file=" + self.file("bad-password", "a\0b")]):
            with self.subTest(flags=flags):
                r = self.run_bridge(*flags)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertRegex(r.stderr, r"ERROR +\(main\) Cannot read --mqtt_")
                self.assertNotIn("Traceback", r.stderr)

    def test_password_never_logged(self):
        pw = self.file("password", "  hunter2-secret \n")
        r = self.run_bridge("--mqtt_username=u", "--mqtt_password_file=" + pw, "--verbose", "--mqtt_node_id=n1")
        self.assertEqual(r.returncode, 1)       # no bus
        self.assertNotIn("hunter2", r.stderr + r.stdout)

    def test_long_client_id(self):
        """A client id longer than 23 bytes: a WARNING, kept (start-up goes on to the bus)."""
        r = self.run_bridge("--mqtt_node_id=kegbot_x", "--mqtt_client_id=" + "c" * 30)
        self.assertEqual(r.returncode, 1)       # no bus
        self.assertRegex(r.stderr, r"WARNING +\(mqtt\) Client id c{30} is longer than 23 bytes")
        r = self.run_bridge("--mqtt_node_id=" + "n" * 24)
        self.assertIn("Client id %s is longer than 23 bytes" % ("n" * 24), r.stderr)
        r = self.run_bridge("--mqtt_node_id=" + "n" * 23)
        self.assertNotIn("is longer than 23 bytes", r.stderr)

    def test_no_bus_exits_1(self):
        r = self.run_bridge("--mqtt_node_id=kegbot_x")
        self.assertEqual(r.returncode, 1)
        self.assertIn("kegbot_mqtt is starting up.", r.stderr)
        self.assertIn("Cannot connect to the system bus", r.stderr)

    def test_unusable_state_dir_exits_1(self):
        blocker = self.file("not-a-dir", "x")
        r = kbtest.run([kbtest.binary("kegbot_mqtt"), "--state_dir=" + os.path.join(blocker, "state"),
                        "--mqtt_node_id=kegbot_x"], env=self.env, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("state directory", r.stderr)

    def test_node_id_from_machine_id(self):
        """Scenario 9, and the start-up line of section 11."""
        tool = shutil.which("systemd-id128")
        if not tool:
            self.skipTest("systemd-id128 is not installed")
        app = subprocess.run([tool, "machine-id", "--app-specific=" + APP_ID], capture_output=True, text=True)
        if app.returncode != 0:
            self.skipTest("no machine id here: " + app.stderr.strip())
        node = "kegbot_" + app.stdout.strip()[:8].lower()
        raw = open("/etc/machine-id").read().strip()
        r = self.run_bridge("--mqtt_host=192.0.2.1")
        self.assertEqual(r.returncode, 1)       # no bus
        self.assertIn("INFO     (main) Node %s: base kegbot/%s, discovery component under homeassistant, "
                      "broker 192.0.2.1:1883" % (node, node), r.stderr)
        self.assertNotIn(raw[:8], r.stderr.replace(node, ""))
        r = self.run_bridge("--mqtt_tls", "--mqtt_node_id=n-2", "--mqtt_base=site/bar", "--mqtt_discovery=device",
                            "--mqtt_discovery_prefix=ha")
        self.assertIn("Node n-2: base site/bar, discovery device under ha, broker localhost:8883, TLS", r.stderr)

    def test_node_id_not_derivable(self):
        """Without a machine id: the error of section 3.1, exit 2 (needs root for the mount namespace)."""
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root (a private mount namespace hides /etc/machine-id)")
        empty = self.file("empty-machine-id")
        cmd = "mount --bind %s /etc/machine-id && exec %s --state_dir=%s" % (
            empty, kbtest.binary("kegbot_mqtt"), os.path.join(self.tmp, "state"))
        r = kbtest.run(["unshare", "-m", "sh", "-c", cmd], env=self.env, timeout=30)
        if "mount:" in r.stderr:
            self.skipTest("cannot bind-mount here: " + r.stderr.strip())
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertRegex(r.stderr, r"Error: cannot derive --mqtt_node_id from /etc/machine-id \(.+\); "
                                   r"set --mqtt_node_id")


if __name__ == "__main__":
    kbtest.main()
