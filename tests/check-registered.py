"""Every test source is registered with meson, so a test cannot silently drop out of the suite.

Compares the files in the source tree with what meson registered (the build's meson-info: tests,
benchmarks, targets): every tests/**/test-*.c is built into a program that a TAP test runs and uses
test-util.h, every tests/integration/**/test_*.py is run by a TAP test and ends in kbtest.main(),
every fuzz/fuzz-*.c runs over its corpus, and every bench/bench-* is a benchmark.
"""
import glob
import json
import os
import unittest

import kbtest

SOURCE_DIR = os.path.realpath(kbtest.SOURCE_DIR)
BUILD_DIR = os.path.realpath(kbtest.BUILD_DIR)


def intro(name):
    with open(os.path.join(BUILD_DIR, "meson-info", "intro-%s.json" % name)) as f:
        return json.load(f)


def rel(path):
    return os.path.relpath(os.path.realpath(path), SOURCE_DIR)


def sources_of(targets):
    """{program file: set of its source files (relative to the source dir)}."""
    out = {}
    for t in targets:
        srcs = {rel(s) for ts in t.get("target_sources", []) for s in ts.get("sources", [])}
        for f in t.get("filename", []):
            out[os.path.realpath(f)] = srcs
    return out


def files_in(pattern):
    return sorted(rel(p) for p in glob.glob(os.path.join(SOURCE_DIR, pattern), recursive=True))


class Registered(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tests = intro("tests")
        cls.benchmarks = intro("benchmarks")
        cls.sources = sources_of(intro("targets"))

    def runs(self, entries, path, protocol=None):
        """The entries (tests or benchmarks) whose program is built from `path` or that name it
        as an argument."""
        found = []
        for t in entries:
            if protocol and t.get("protocol") != protocol:
                continue
            cmd = [os.path.realpath(c) if os.path.isabs(c) else c for c in t["cmd"]]
            if path in self.sources.get(cmd[0], set()) or path in {rel(c) for c in cmd[1:] if os.path.isabs(c)}:
                found.append(t["name"])
        return found

    def check_tap_sources(self, pattern, example, marker):
        """Every file matching pattern is run by a TAP test and contains marker (what makes it
        speak TAP)."""
        files = files_in(pattern)
        self.assertIn(example, files)
        for f in files:
            with self.subTest(f):
                self.assertTrue(self.runs(self.tests, f, protocol="tap"), "%s: no TAP test runs it" % f)
                with open(os.path.join(SOURCE_DIR, f)) as src:
                    self.assertIn(marker, src.read(), "%s: reports through %s" % (f, marker))

    def test_c_tests(self):
        self.check_tap_sources("tests/**/test-*.c", "tests/test-kbsp.c", '#include "test-util.h"')

    def test_python_tests(self):
        self.check_tap_sources("tests/integration/**/test_*.py", "tests/integration/core/test_core_standalone.py",
                               "kbtest.main()")

    def test_fuzz_targets(self):
        files = files_in("fuzz/fuzz-*.c")
        self.assertIn("fuzz/fuzz-kbsp.c", files)
        for f in files:
            with self.subTest(f):
                self.assertTrue(self.runs(self.tests, f), "%s: no corpus test runs it" % f)
        for d in files_in("fuzz/corpus/*"):
            with self.subTest(d):
                self.assertTrue(self.runs(self.tests, d), "%s: no test runs this corpus" % d)

    def test_benchmarks(self):
        files = files_in("bench/bench-*.c") + files_in("bench/bench-*.py")
        self.assertIn("bench/bench-kbsp.c", files)
        for f in files:
            with self.subTest(f):
                self.assertTrue(self.runs(self.benchmarks, f), "%s: not registered as a benchmark" % f)


if __name__ == "__main__":
    kbtest.main()
