"""Cost linear in the number of boards: 1, 4 and 16 simulated Kegboards (a pty and a
kegboard_daemon each), 4 meters each pouring at once (a meter_status frame per meter every 100 ms,
10 ticks each), 3 kegnet listeners, D-Bus on (a private dbus-daemon; without root, --dbus=none and
said so). For each: the core's CPU per second of pouring (schedstat), its RSS, and the latency from
a frame written on a board's pty to the first FlowUpdate at a listener that counts it (p50/p99,
nearest rank; FlowUpdates are coalesced to one per flow per 100 ms, so a frame that follows the last
update closely waits for the next). Every pour is then stopped and the drinks log must hold exactly
the ticks poured. Targets: 16 boards <= 17 x one board's CPU; no tick lost; the core under 5 % of a
core at 16 boards. The last line is PASS or FAIL: <which>, with a non-zero exit.
KEGBOT_BENCH_SECONDS (default 10) is the pour per configuration."""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration", "dbus"))
import benchlib  # noqa: E402
from benchlib import kbtest  # noqa: E402

SECONDS = float(os.environ.get("KEGBOT_BENCH_SECONDS", "10"))
METERS = ("flow0", "flow1", "flow2", "flow3")
PERIOD = 0.1
TICKS = 10
LINEAR_FACTOR = 17
CPU_TARGET_PCT = 5.0


class FlowWatcher:
    """A listener that keeps, per meter, the (receive time, ticks) of every FlowUpdate."""

    def __init__(self, port):
        self.conn = kbtest.KegnetConn.connect(port)
        self.conn.hello("listener", "bench")
        self.updates = {}
        self.completed = set()
        self.lock = threading.Lock()
        self.buf = b""
        self.reader = benchlib.Reader(self.conn.sock, self.on_data)

    def on_data(self, chunk, now):
        self.buf += chunk
        frames = self.buf.split(b"\n\n")
        self.buf = frames.pop()
        with self.lock:
            for f in frames:
                if b'"FlowUpdate"' not in f:
                    continue
                d = json.loads(f)["data"]
                self.updates.setdefault(d["meter_name"], []).append((now, d["ticks"]))
                if d["state"] == "completed":
                    self.completed.add(d["meter_name"])

    def close(self):
        self.reader.close()


def latencies(sent, watcher):
    """ms from each frame to the first FlowUpdate of its meter counting its ticks."""
    out = []
    with watcher.lock:
        ups = {m: list(v) for m, v in watcher.updates.items()}
    for meter, t0, ticks in sent:
        for t1, n in ups.get(meter, []):
            if t1 >= t0 and n >= ticks:
                out.append((t1 - t0) * 1000.0)
                break
    return out


def run(n_boards, tmp, bus):
    if bus:
        import busenv
        core = busenv.Core(tmp, bus, "--max_tick_delta=0", taps=None)
        port = core.port
    else:
        core, port = benchlib.start_core(tmp)
    boards, listeners = [], []
    try:
        watchers = [FlowWatcher(port) for _ in range(3)]
        listeners = watchers
        for b in range(n_boards):
            boards.append(benchlib.Board(core, port, serial="KB-0000-0000-%08X" % (0xBE000000 + b)))
        for b in boards:
            b.write(b"".join(kbtest.kbsp_meter_status(m, 0) for m in METERS))      # baselines
        time.sleep(1.0)
        sent = []
        reading = 0
        c0 = kbtest.cpu_ns(core.pid)
        t0 = time.perf_counter()
        k = 0
        while True:
            due = t0 + k * PERIOD
            if due - t0 >= SECONDS:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            reading += TICKS
            for b in boards:
                now = time.perf_counter()
                b.write(b"".join(kbtest.kbsp_meter_status(m, reading) for m in METERS))
                b.drain()
                sent.extend((b.name + "." + m, now, reading) for m in METERS)
            k += 1
        # Every meter's last count at the listeners (at most 150 ms after the last frame).
        final = {b.name + "." + m for b in boards for m in METERS}
        kbtest.wait_until(lambda: all(any(n == reading for _, n in watchers[0].updates.get(m, [])) for m in final),
                          timeout=10, what="every meter's final count at the listener")
        wall = time.perf_counter() - t0
        c1 = kbtest.cpu_ns(core.pid)
        rss = kbtest.proc_status(core.pid, "VmRSS")
        lat = latencies(sent, watchers[0])
        # Stop every pour; the drinks log must hold what was poured.
        ctl = kbtest.KegnetConn.connect(port)
        ctl.hello("producer", "bench", session="scale-%d" % n_boards, seq=1, events=[])
        for m in sorted(final):
            ctl.send("FlowRequest", meter_name=m, request="stop_flow")
        kbtest.wait_until(lambda: watchers[0].completed >= final, timeout=20, what="every flow completed")
        ctl.close()
        drinks_path = os.path.join(tmp, "state", "drinks.log")
        recorded = 0
        with open(drinks_path) as f:
            for line in f:
                if line.strip():
                    recorded += json.loads(line)["ticks"]
        poured = reading * len(final)
        return {"cpu_pct": 100.0 * (c1 - c0) / 1e9 / wall, "rss_kb": rss, "lat": lat, "poured": poured,
                "recorded": recorded, "frames": len(sent)}
    finally:
        for b in boards:
            b.close()
        for x in listeners:
            x.close()
        core.stop()


def main():
    report = benchlib.Report()
    bus = None
    results = {}
    with kbtest.TempDir() as bustmp:
        if os.geteuid() == 0:
            import busenv
            bus = busenv.PrivateBus(bustmp)
        else:
            print("not root: D-Bus off (--dbus=none); the private bus's policy needs root")
        try:
            for n in (1, 4, 16):
                with kbtest.TempDir() as tmp:
                    r = run(n, tmp, bus)
                results[n] = r
                print("%2d boards (%d meters, %d frames in %.0f s): core CPU %.3f %% of a core; RSS %.2f MB; "
                      "frame -> FlowUpdate p50 %.2f ms, p99 %.2f ms (%d samples); ticks poured %d, recorded %d"
                      % (n, 4 * n, r["frames"], SECONDS, r["cpu_pct"], r["rss_kb"] / 1024.0,
                         benchlib.percentile(r["lat"], 50), benchlib.percentile(r["lat"], 99), len(r["lat"]),
                         r["poured"], r["recorded"]))
                sys.stdout.flush()
                report.check("%d boards: no tick lost" % n, r["recorded"] == r["poured"],
                             "recorded %d of %d ticks poured" % (r["recorded"], r["poured"]))
        finally:
            if bus:
                bus.stop()
    ratio = results[16]["cpu_pct"] / results[1]["cpu_pct"]
    report.figure("16 boards' core CPU / 1 board's", ratio, "x", "<= %d x" % LINEAR_FACTOR, ratio <= LINEAR_FACTOR)
    report.figure("core CPU at 16 boards", results[16]["cpu_pct"], "% of a core", "< %.0f %%" % CPU_TARGET_PCT,
                  results[16]["cpu_pct"] < CPU_TARGET_PCT, fmt="%.3f")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
