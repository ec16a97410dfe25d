#!/usr/bin/python3
"""Server-mode benchmarks of kegbot_core against the stand-in Kegbot Server:

1. spool puts/s through the real core (kegnet pour -> fsync'd spool file) while the server refuses
   (target: every pour spooled, at least 20 drinks/s);
2. time and peak RSS to drain N queued drinks (default 10,000) into the stand-in (target: RSS growth
   below 2 MB while draining: the spool keeps a bounded window, not the queue, in memory);
3. core RSS with the server backend, idle after the first sync (target: below 12 MB).

Usage: bench-backend.py [N]. Needs a build with kegbot_core (KEGBOT_BUILD_DIR)."""
import glob
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration", "backend"))

import kbtest  # noqa: E402
from standin import API_KEY, StandIn  # noqa: E402


PUTS_TARGET = 20        # drinks/s spooled through the core (bench-spool's target for the spool alone)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_core(tmp, standin, state_dir):
    port = kbtest.free_port()
    c = kbtest.Proc([kbtest.binary("kegbot_core"), "--kb_core_bind_addr=127.0.0.1:%d" % port,
                     "--state_dir=" + state_dir, "--api_url=" + standin.url(), "--api_key=" + API_KEY,
                     "--retry_interval=1", "--sync_interval=60", "--dbus=none",
                     # The stand-in's taps name relays and these pours are anonymous: no token opens
                     # a valve, so the ghost filter's valve-closed gate would drop every one of them.
                     "--novalve_closed_gate"],
                    env={"KEGBOT_API_URL": "", "STATE_DIRECTORY": "", "http_proxy": "", "no_proxy": "*"},
                    name="kegbot_core")
    c.wait_line(r"All services started", timeout=60)
    c.port = port
    return c


def write_spool(state_dir, n):
    d = os.path.join(state_dir, "spool")
    os.makedirs(os.path.join(d, "failed"), exist_ok=True)
    for i in range(1, n + 1):
        u = str(uuid.uuid4())
        line = ('{"version":1,"uuid":"%s","seq":%d,"flow_id":%d,"meter_name":"kegboard.flow0","ticks":%d,'
                '"volume_ml":null,"username":null,"start_time":"2026-11-26T12:00:01Z",'
                '"pour_time":"2026-11-26T12:00:09Z","pour_time_unix":1795694409,"duration":8,'
                '"boot_id":"","pour_boottime_ns":0}\n') % (u, i, 1795694350 + i, 100 + i % 900)
        with open(os.path.join(d, "%020d-%s.json" % (i, u)), "w") as f:
            f.write(line)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    with kbtest.TempDir("kegbot-bench-backend-") as tmp, StandIn() as standin:
        # 3. idle RSS with the backend.
        state = os.path.join(tmp, "s1")
        core = start_core(tmp, standin, state)
        core.wait_line(r"Backend appears to be alive", timeout=10)
        time.sleep(1.0)                 # the measurement: RSS once idle for a second
        idle = rss_kb(core.pid)

        # 1. puts/s through the core while the server refuses.
        standin.refuse()
        conn = kbtest.KegnetConn.connect(core.port)
        pours = 300
        conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
        t0 = time.monotonic()
        for i in range(1, pours + 1):
            conn.send("MeterUpdate", meter_name="kegboard.flow0", reading=i * 100)
            conn.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
        done = 0
        while done < pours:
            m = conn.recv(30)
            if m is None:
                break
            if m["event"] == "FlowUpdate" and m["data"]["state"] == "completed":
                done += 1
        dt = time.monotonic() - t0
        puts = done / dt
        print("core: %d of %d pours spooled (fsync'd before FlowUpdate completed) in %.2f s: %.0f drinks/s "
              "(target all, >= %d drinks/s)" % (done, pours, dt, puts, PUTS_TARGET))
        conn.close()
        core.stop()
        standin.accept()

        # 2. drain N pre-queued drinks.
        state = os.path.join(tmp, "s2")
        write_spool(state, n)
        t0 = time.monotonic()
        core = start_core(tmp, standin, state)
        t_open = time.monotonic() - t0
        base = rss_kb(core.pid)
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], rss_kb(core.pid))
                except OSError:
                    return
                time.sleep(0.05)        # the sampling period of the peak RSS
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.monotonic()
        spool_dir = os.path.join(state, "spool")
        # Polls for the effect (an empty spool) at a period well below the drain time.
        while glob.glob(os.path.join(spool_dir, "*.json")):
            time.sleep(0.02)
            if time.monotonic() - t0 > 500:
                break
        dt = time.monotonic() - t0
        stop.set()
        th.join()
        left = len(glob.glob(os.path.join(spool_dir, "*.json")))
        got = standin.state()["n_drinks"]
        core.stop()
        print("core: start-up with %d queued drinks: %.2f s" % (n, t_open))
        print("core: drained %d drinks into the stand-in in %.1f s (%.0f drinks/s), %d left"
              % (got, dt, got / dt if dt else 0, left))
        print("core: RSS %.1f MB at start, peak %.1f MB while draining, growth %.2f MB (target < 2 MB)"
              % (base / 1024, peak[0] / 1024, (peak[0] - base) / 1024))
        print("core: RSS with the server backend, idle: %.1f MB (target < 12 MB)" % (idle / 1024))
        failed = [what for what, ok in (("spooled", done == pours and puts >= PUTS_TARGET),
                                        ("drained", left == 0 and got >= n), ("RSS growth", (peak[0] - base) < 2048),
                                        ("idle RSS", idle < 12 * 1024)) if not ok]
        print("FAIL: " + ", ".join(failed) if failed else "PASS")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
