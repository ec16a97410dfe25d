"""Read meson's testlog.json: print the failed tests' names (--failed), or merge a first run with
re-runs of its failures and print "passed failed skipped" plus one FLAKY line per test that failed
first and passed on its re-run (--summary FIRST [RERUN...])."""
import json
import sys


def load(path):
    res = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    t = json.loads(line)
                    res[t["name"]] = t.get("result")
    except FileNotFoundError:
        pass
    return res


def ok(r):
    return r in ("OK", "EXPECTEDFAIL")


if sys.argv[1] == "--failed":
    for name, r in load(sys.argv[2]).items():
        if not ok(r) and r != "SKIP":
            print(name)
    sys.exit(0)

first = load(sys.argv[2])
final = dict(first)
for path in sys.argv[3:]:
    final.update(load(path))
p = sum(1 for r in final.values() if ok(r))
s = sum(1 for r in final.values() if r == "SKIP")
f = len(final) - p - s
if not first:
    f += 1
for name in sorted(final):
    if ok(final[name]) and not ok(first.get(name)):
        print("FLAKY: %s failed (%s) and passed when re-run" % (name, first.get(name)), file=sys.stderr)
print(p, f, s)
