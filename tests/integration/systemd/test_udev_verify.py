"""`udevadm verify` (new in systemd 254; Debian 12 ships 252) is clean on udev/70-kegboard.rules and
udev/70-kegbot-rfid.rules.

The udev and libsystemd-shared packages of bookworm-backports are fetched with apt-get download
through a private apt configuration (its own sources, lists and cache: the host's apt setup is not
touched) whose archive URI is the one this machine already uses for bookworm, unpacked with
dpkg -x (never installed), and that udevadm is run with LD_LIBRARY_PATH. The unpacked tree is
cached in /var/cache/kegbot-systest/udev-254 (or a temporary directory when that is not writable).
Skipped, with the reason, when the archive cannot be reached.
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import kbtest
import sdtest

CACHE_ROOT = "/var/cache/kegbot-systest"
RULES = os.path.join(sdtest.SOURCE_DIR, "udev", "70-kegboard.rules")
RULES_FILES = [RULES, os.path.join(sdtest.SOURCE_DIR, "udev", "70-kegbot-rfid.rules")]


def bookworm_uri():
    """The Debian archive URI configured on this machine for the bookworm suite."""
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) + \
        sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.split()
                if "bookworm" in fields.get("suites", []) and "deb" in fields.get("types", []):
                    return fields["uris"][0]
        else:
            for line in text.splitlines():
                w = line.split("#")[0].split()
                w = [x for x in w if not x.startswith("[")]
                if len(w) >= 3 and w[0] == "deb" and w[2] == "bookworm":
                    return w[1]
    return None


class Udev254:
    def __init__(self):
        base = CACHE_ROOT if os.access(CACHE_ROOT, os.W_OK) or (
            os.geteuid() == 0 and not os.path.exists(CACHE_ROOT)) else None
        if base:
            os.makedirs(base, exist_ok=True)
            self.dir = os.path.join(base, "udev-254")
            self.tmp = None
        else:
            self.tmp = tempfile.mkdtemp(prefix="kegbot-udev254-")
            self.dir = os.path.join(self.tmp, "udev-254")

    def udevadm(self):
        return os.path.join(self.dir, "root", "bin", "udevadm")

    def libdir(self):
        return os.path.dirname(glob.glob(os.path.join(self.dir, "root", "usr", "lib", "*", "systemd",
                                                      "libsystemd-shared-*.so"))[0])

    def ensure(self):
        if os.access(self.udevadm(), os.X_OK) and os.path.exists(os.path.join(self.dir, "stamp")):
            return
        sdtest.need_tool("apt-get", "apt-cache", "dpkg")
        uri = bookworm_uri()
        if not uri:
            raise unittest.SkipTest("no bookworm archive configured in /etc/apt/sources.list*")
        work = self.dir + ".new"
        shutil.rmtree(work, ignore_errors=True)
        for d in ("etc", "lists/partial", "cache/archives/partial", "debs", "root"):
            os.makedirs(os.path.join(work, d))
        with open(os.path.join(work, "etc", "backports.sources"), "w") as f:
            f.write("Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" % uri)
        opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", "Dir::Etc::SourceParts=" + work + "/etc",
                "-o", "Dir::State::Lists=" + work + "/lists", "-o", "Dir::Cache=" + work + "/cache",
                "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
                "-o", "APT::Sandbox::User=root", "-q"]
        r = subprocess.run(["apt-get"] + opts + ["update"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or re.search(r"^(W|E|Err):", r.stdout + r.stderr, re.M):
            shutil.rmtree(work, ignore_errors=True)
            raise unittest.SkipTest("bookworm-backports at %s is not reachable:\n%s" % (uri, r.stdout + r.stderr))
        r = subprocess.run(["apt-cache"] + opts + ["show", "udev"], capture_output=True, text=True, timeout=60)
        versions = [v for v in re.findall(r"^Version: (\S+)", r.stdout, re.M) if v.startswith("254.")]
        if not versions:
            shutil.rmtree(work, ignore_errors=True)
            raise unittest.SkipTest("bookworm-backports has no udev 254 (found: %s)" % r.stdout[:200])
        v = versions[0]
        r = subprocess.run(["apt-get"] + opts + ["download", "udev=" + v, "libsystemd-shared=" + v],
                           capture_output=True, text=True, timeout=300, cwd=os.path.join(work, "debs"))
        if r.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise unittest.SkipTest("download of udev %s failed:\n%s" % (v, r.stdout + r.stderr))
        for deb in glob.glob(os.path.join(work, "debs", "*.deb")):
            subprocess.run(["dpkg", "-x", deb, os.path.join(work, "root")], check=True, timeout=120)
        with open(os.path.join(work, "stamp"), "w") as f:
            f.write(v + "\n")
        for d in ("lists", "cache", "debs"):
            shutil.rmtree(os.path.join(work, d), ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.rename(work, self.dir)

    def run(self, *args):
        return subprocess.run([self.udevadm()] + list(args), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, LD_LIBRARY_PATH=self.libdir(), SYSTEMD_LOG_COLOR="0"))

    def cleanup(self):
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


class UdevVerifyTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.u = Udev254()
        try:
            cls.u.ensure()
        except unittest.SkipTest:
            cls.u.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.u.cleanup()

    def test_version(self):
        r = self.u.run("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreaterEqual(int(r.stdout.split()[0]), 254)

    def test_rules_clean(self):
        for rules in RULES_FILES:
            with self.subTest(rules=os.path.basename(rules)):
                # Group names are not resolved: "kegbot" exists once sysusers.d has run on the target.
                r = self.u.run("verify", "--resolve-names=never", rules)
                out = r.stdout + r.stderr
                self.assertEqual(r.returncode, 0, out)
                self.assertRegex(out, r"Success: 1")
                # Nothing but the summary: no warnings, no style remarks.
                remarks = [l for l in out.splitlines() if rules in l or os.path.basename(rules)[:-6] in l]
                self.assertEqual(remarks, [], out)

    def test_catches_mistakes(self):
        """The same udevadm rejects a rules file with a typo (the check can fail)."""
        with open(RULES) as f:
            text = f.read()
        with tempfile.NamedTemporaryFile("w", suffix=".rules") as f:
            f.write(text.replace('GOTO="kegboard_end"', 'GOTO="kegboard_ned"', 1))
            f.flush()
            r = self.u.run("verify", f.name)
            self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    kbtest.main()
