#!/usr/bin/python3
"""kegboard_daemon under full 115200-baud meter traffic: CPU use, RSS and PSS.

A pty stands in for the board: after a hello, meter_status frames are written at the line rate of
115200 baud 8N1 (11 520 bytes/s, ~400 frames/s) for --seconds; a fake core takes the MeterUpdates.
CPU = (utime + stime) over the run from /proc/<pid>/stat; memory from /proc/<pid>/smaps_rollup.
Prints figures (targets: CPU < 1 % of one core, RSS < 3 MB, PSS < 1.5 MB); never fails on them.
"""
import os
import sys
import time
import tty

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration", "kegboard"))
import kbtest  # noqa: E402
import kbd     # noqa: E402

SECONDS = float(os.environ.get("KEGBOT_BENCH_SECONDS", "10"))
BYTES_PER_SEC = 115200 // 10


def main():
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    core = kbtest.FakeCore()
    d = kbd.daemon(path, core.port, "--probe_seconds=5")
    try:
        d.wait_line(r"probing for a Kegboard", timeout=5)
        os.write(master, kbd.hello(serial="KB-0000-0000-BE7C4000"))
        core.wait_message(lambda m: m["event"] == "ControllerConnectedEvent", timeout=10)

        # Two meters counting up; more frames than the run needs.
        frames = b"".join(kbd.meter_status("flow%d" % (i % 2), i) for i in range(1, int(SECONDS * 500) + 1000))
        flen = len(kbd.meter_status("flow0", 1))
        cpu_start = kbtest.cpu_seconds(d.pid)
        t0 = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= SECONDS:
                break
            due = int(elapsed * BYTES_PER_SEC)
            due -= due % flen
            if due > sent:
                sent += os.write(master, frames[sent:due])
            time.sleep(0.01)        # the scenario: bytes fed at the serial line's rate
        wall = time.monotonic() - t0
        cpu = kbtest.cpu_seconds(d.pid) - cpu_start
        n_frames = sent // flen
        last = n_frames if n_frames % 2 == 0 else n_frames - 1   # newest flow0 reading
        # Everything fed has been handled once the newest reading is at the core.
        core.wait_message(lambda m: m["event"] == "MeterUpdate" and m["data"]["meter_name"].endswith(".flow0")
                          and m["data"]["reading"] == last, timeout=10)
        mem = kbtest.memory_kb(d.pid)
        delivered = [m for m in core.events("MeterUpdate") if m["data"]["meter_name"].endswith(".flow0")]
        print("kegboard_daemon at 115200-baud meter traffic for %.1f s:" % wall)
        print("  bytes fed            %d (%.0f B/s, %d meter_status frames, %.0f frames/s)" % (
            sent, sent / wall, n_frames, n_frames / wall))
        print("  flow0 MeterUpdates   %d at the core (newest reading %s, expected %d)" % (
            len(delivered), delivered[-1]["data"]["reading"] if delivered else None, last))
        print("  CPU (utime+stime)    %.3f s = %.2f %% of one core (target < 1 %%)" % (cpu, 100.0 * cpu / wall))
        print("  RSS                  %d kB (target < 3072 kB)" % mem.get("Rss", -1))
        print("  PSS                  %d kB (target < 1536 kB)" % mem.get("Pss", -1))
    finally:
        d.stop()
        core.close()
        os.close(master)
        os.close(slave)
    return 0


if __name__ == "__main__":
    sys.exit(main())
