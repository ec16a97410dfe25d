"""Without a loadable libcurl (hidden by a bind-mounted /dev/null in a private mount namespace, so
root only) a server-mode kegbot_core stops at once with an error naming the library and its
package, and a standalone core, which never loads it, starts as usual."""
import os
import shutil
import subprocess
import unittest

import kbtest
from coretest import Core


def libcurl_path():
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("libcurl.so.4 ") and "=>" in line:
            return line.split("=>")[1].strip()
    return None


class NoLibcurlTest(unittest.TestCase):
    def setUp(self):
        self.tmp = kbtest.TempDir()
        self.dir = self.tmp.__enter__()
        self.addCleanup(self.tmp.__exit__, None, None, None)

    def test_missing_libcurl(self):
        lib = libcurl_path()
        if os.geteuid() != 0 or not shutil.which("unshare") or not lib:
            self.skipTest("needs root, unshare and an installed libcurl.so.4")
        # In a private mount namespace, the library file is an empty one: dlopen() fails.
        hide = ["unshare", "-m", "sh", "-c", 'mount --bind /dev/null "$0" && exec "$@"', lib]
        core = Core(self.dir, "--api_url=http://127.0.0.1:%d/api/" % kbtest.free_port(), prefix=hide, wait=False)
        self.assertEqual(core.wait(), 1)
        core.wait_line(r"ERROR .*HTTP requests need libcurl\.so\.4, which cannot be loaded "
                       r"\(Debian package libcurl4\): .*libcurl\.so\.4")
        self.assertFalse([l for l in core.output() if "All services started" in l])
        # The same namespace trick leaves a standalone core untouched.
        other = Core(self.dir, prefix=hide)
        self.addCleanup(other.stop)
        other.connect().close()


if __name__ == "__main__":
    kbtest.main()
