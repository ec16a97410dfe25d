"""The short fault matrix: bench/faults with 20 drinks and at least 30 faults, in standalone mode,
server mode and event mode (the Kegboard Event Protocol backend; one case each), must record every tick poured exactly once (lost 0,
duplicated 0). The full run (200 drinks) is the 'faults' benchmark."""
import os
import re
import sys
import unittest

import kbtest

FAULTS = os.path.join(kbtest.SOURCE_DIR, "bench", "faults")


class FaultsTest(unittest.TestCase):
    def run_mode(self, mode):
        r = kbtest.run(["/usr/bin/python3", FAULTS, "--drinks", "20", "--faults", "30", "--seed", "12",
                        "--mode", mode], timeout=900)
        sys.stderr.write(r.stdout + r.stderr)
        m = re.search(r"^poured (\d+) ticks, recorded (\d+), lost (\d+), duplicated (\d+), faults (\d+)$",
                      r.stdout, re.M)
        self.assertIsNotNone(m, "no total line")
        poured, recorded, lost, dup, faults = map(int, m.groups())
        self.assertGreater(poured, 20 * 50)
        self.assertGreaterEqual(faults, 30)
        self.assertEqual((lost, dup), (0, 0), "lost %d, duplicated %d" % (lost, dup))
        self.assertEqual(recorded, poured)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout.splitlines()[-1], "PASS")

    def test_standalone(self):
        self.run_mode("standalone")

    def test_server(self):
        self.run_mode("server")

    def test_event(self):
        self.run_mode("event")


if __name__ == "__main__":
    kbtest.main()
