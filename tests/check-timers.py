"""Every timer in the project states its accuracy: sd-event's default (an accuracy of 0 means
250 ms) turned a 250 ms wait into 250-500 ms. Timers are created and moved only through
src/libkegbot/util-event.c (event_timer_arm() refuses an accuracy of 0); this fails on any other
call that creates or moves an sd-event timer."""
import os
import re
import sys

SOURCE_DIR = os.environ.get("KEGBOT_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
HELPER = os.path.join("src", "libkegbot", "util-event.c")
CALL = re.compile(r"\bsd_event_(add_time|add_time_relative|source_set_time|source_set_time_relative)\s*\(")

found = []
for top in ("src", "tests", "fuzz", "bench"):
    for root, _, files in os.walk(os.path.join(SOURCE_DIR, top)):
        for name in files:
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, SOURCE_DIR)
            if rel == HELPER:
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    if CALL.search(line):
                        found.append("%s:%d: %s" % (rel, n, line.strip()))
for line in found:
    print(line, file=sys.stderr)
print("%d sd-event timer calls outside %s (use event_timer_arm() and friends)" % (len(found), HELPER))
sys.exit(1 if found else 0)
