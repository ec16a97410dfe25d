"""Render each man page with groff's warnings on; fail on any warning or error."""
import subprocess
import sys

failed = 0
for page in sys.argv[1:]:
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", page], capture_output=True, text=True)
    if r.returncode != 0 or r.stderr.strip():
        failed += 1
        print("%s:\n%s" % (page, r.stderr), file=sys.stderr)
print("%d pages checked, %d with warnings" % (len(sys.argv) - 1, failed))
sys.exit(1 if failed or len(sys.argv) < 2 else 0)
