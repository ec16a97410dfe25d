"""Count the results of `meson test` runs by case, for scripts/run-tests.sh.

  test-results.py failed BUILD_DIR TESTLOG
      names of the tests of TESTLOG (meson's testlog.json) that did not pass, one a line
  test-results.py summary BUILD_DIR ALLOWLIST FIRST [RERUN...]
      merge a first run with the re-runs of its failed tests; print every failed, flaky and
      skipped case, and last the line "PASSED FAILED FLAKY SKIPPED UNALLOWED_FLAKY"

A case is one TAP line of a test that meson runs with protocol 'tap' (tests/meson.build explains
which), or the whole test for any other protocol. A TAP test that ends badly without a failed
case (a crash, a timeout, a bad exit status, no plan) has one more failed case, "(exit)".
Across the first run and the re-run: failed then passed is FLAKY; failed then failed (or missing)
is FAILED; passed then failed is FAILED too. A flaky case is allowed (it does not fail the run)
only when ALLOWLIST names its test ("test") or the case ("test / case"); '#' starts a comment.
"""
import json
import os
import re
import sys

OK = ("OK", "EXPECTEDFAIL")
EXIT_CASE = "(exit)"
TAP_LINE = re.compile(r"^(not )?ok\b\s*(\d+)?\s*(?:-\s*)?([^#]*?)\s*(?:#\s*(\w+)\S*\s*(.*))?$")


def protocols(build_dir):
    """{test name: protocol} from the build's meson-info."""
    try:
        with open(os.path.join(build_dir, "meson-info", "intro-tests.json")) as f:
            return {t["name"]: t.get("protocol", "exitcode") for t in json.load(f)}
    except (OSError, ValueError):
        return {}


def load(path):
    """[(short test name, meson result, stdout)] of a testlog.json, in order."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    t = json.loads(line)
                    # "project:suite / name" -> "name"
                    out.append((t["name"].split(" / ", 1)[-1], t.get("result"), t.get("stdout") or ""))
    except FileNotFoundError:
        pass
    return out


def tap_cases(stdout):
    """{case: (status, note)} from TAP output; status is pass, fail or skip."""
    cases = {}
    for line in stdout.splitlines():
        m = TAP_LINE.match(line)
        if not m:
            continue
        bad, number, desc, directive, reason = m.groups()
        directive = (directive or "").upper()
        name = desc or "case %s" % (number or len(cases) + 1)
        if name in cases:
            name = "%s (%s)" % (name, number or len(cases) + 1)
        if directive == "SKIP":
            cases[name] = ("skip", reason)
        elif directive == "TODO":
            cases[name] = ("pass" if bad else "fail", "TODO " + reason)
        else:
            cases[name] = ("fail" if bad else "pass", None)
    return cases


def cases_of(protocol, result, stdout):
    if protocol != "tap":
        if result in OK:
            return {"": ("pass", None)}
        if result == "SKIP":
            return {"": ("skip", "exit status 77")}
        return {"": ("fail", result)}
    cases = tap_cases(stdout)
    if not cases:
        if result == "SKIP":
            m = re.search(r"^1\.\.0\s*#\s*SKIP\S*\s*(.*)$", stdout, re.M)
            return {"": ("skip", m.group(1) if m else "no case ran")}
        return {"": ("fail", "%s, no TAP case" % result)}
    if result not in OK and result != "SKIP" and not any(s == "fail" for s, _ in cases.values()):
        cases[EXIT_CASE] = ("fail", result)
    elif result in OK or result == "SKIP":
        cases.setdefault(EXIT_CASE, ("pass", None))
    return cases


def by_test(build_dir, path):
    proto = protocols(build_dir)
    return {name: (result, cases_of(proto.get(name, "exitcode"), result, stdout))
            for name, result, stdout in load(path)}


def label(test, case):
    return test if not case else "%s / %s" % (test, case)


def main():
    cmd, build_dir = sys.argv[1], sys.argv[2]
    if cmd == "failed":
        for name, (result, cases) in by_test(build_dir, sys.argv[3]).items():
            if any(s == "fail" for s, _ in cases.values()):
                print(name)
        return 0

    allow = set()
    try:
        with open(sys.argv[3]) as f:
            allow = {l.split("#", 1)[0].strip() for l in f} - {""}
    except FileNotFoundError:
        pass
    first = by_test(build_dir, sys.argv[4])
    reruns = {}
    for path in sys.argv[5:]:
        reruns.update(by_test(build_dir, path))

    passed = failed = flaky = skipped = unallowed = 0
    if not first:
        print("FAILED: no test results in %s" % sys.argv[4])
        failed += 1
    for test, (result, cases) in first.items():
        again = reruns.get(test)
        keys = list(cases) + [k for k in (again[1] if again else {}) if k not in cases]
        for case in keys:
            s1, note1 = cases.get(case, (None, None))
            if again is None:
                s2, note2 = None, None
            else:
                s2, note2 = again[1].get(case, ("fail", "missing on re-run") if s1 == "fail" else (None, None))
            name = label(test, case if case != EXIT_CASE or s1 == "fail" or s2 == "fail" else "")
            if s1 == "fail" and s2 == "pass":
                flaky += 1
                allowed = test in allow or label(test, case) in allow
                unallowed += not allowed
                print("FLAKY%s: %s failed (%s) and passed when re-run" % (
                    " (allowed by the allow-list)" if allowed else "", name, note1 or "not ok"))
            elif s1 == "fail" or s2 == "fail":
                failed += 1
                print("FAILED: %s (%s)" % (name, (note2 if s2 == "fail" else note1) or "not ok"))
            elif case == EXIT_CASE:
                continue        # a clean exit is no case of its own
            elif (s2 or s1) == "skip":
                skipped += 1
                print("SKIPPED: %s: %s" % (name, (note2 if s2 else note1) or ""))
            else:
                passed += 1
    print(passed, failed, flaky, skipped, unallowed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
