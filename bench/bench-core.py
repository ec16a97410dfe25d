"""kegbot_core benchmarks (standalone mode); prints one figure per line.

1. MeterUpdate throughput: one producer floods the core with MeterUpdates (delta 1 each); a listener
   receives the FlowUpdate broadcasts. Messages/s from the first send to the FlowUpdate carrying the
   last total at the listener, once per ghost-filter mode (ghost-pours.md section 17): on (the
   default) and log must reach 100,000/s; off, the core without the filter, 150,000/s. The core runs
   pinned to one CPU, producer and listener on the others (when the machine has more than one).
2. Latency: a meter_status frame written on a pseudo-terminal that kegboard_daemon reads, to the
   FlowUpdate at a kegnet listener of the core; p50 / p99 over single frames of a pour (20 ticks each)
   (target p99 < 2 ms).
3. Idle wake-ups: voluntary context switches of an idle core per minute (target < 2).
   BENCH_IDLE_SECONDS overrides the 60 s window.
4. RSS of the standalone core at start and after the throughput run (target <= 4 MB).
5. 1 and 2 again while hostile connections come and go (at least 1000 during each measurement,
   each sending a bad frame, besides 64 idle ones holding every slot): the same targets; the
   producers keep their slots and the core its pace.
The last line is PASS, or FAIL: <which> with a non-zero exit.
"""
import multiprocessing
import os
import socket
import sys
import threading
import time
import tty

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import kbtest  # noqa: E402


class Counter:
    """Drains a kegnet connection in a thread; remembers when a frame containing `marker` arrived."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.frames = 0
        self.marker = None
        self.marker_time = None
        self.cv = threading.Condition()
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        tail = b""
        while not self.stop:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            data = tail + chunk
            n = data.count(b"\n\n")
            with self.cv:
                self.frames += n
                if self.marker and self.marker in data:
                    self.marker_time = time.perf_counter()
                    self.cv.notify_all()
            tail = data[-256:]

    def expect(self, marker):
        with self.cv:
            self.marker = marker
            self.marker_time = None

    def wait(self, timeout):
        with self.cv:
            self.cv.wait_for(lambda: self.marker_time is not None, timeout)
            return self.marker_time

    def close(self):
        self.stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.t.join(2)
        self.sock.close()


class Hostile:
    """Connections any local user can make: 64 that never send anything (every slot taken), and
    a separate process that keeps opening connections, sending a bad frame and closing them (a
    process, not a thread: the churn must not hold the interpreter lock the measuring thread needs,
    or the figure would be the benchmark's own delay rather than the core's)."""

    def __init__(self, port, rate=500.0):
        self.idle = []
        for _ in range(64):
            self.idle.append(socket.create_connection(("127.0.0.1", port)))
        ctx = multiprocessing.get_context("fork")
        self.counter = ctx.Value("q", 0, lock=False)
        self.stopping = ctx.Event()
        self.p = ctx.Process(target=Hostile.loop, args=(port, 1.0 / rate, self.counter, self.stopping), daemon=True)
        self.p.start()

    @property
    def count(self):
        return self.counter.value

    @staticmethod
    def loop(port, interval, counter, stopping):
        next_at = time.perf_counter()
        while not stopping.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"not json\n\n")
                s.close()
            except OSError:
                pass
            counter.value += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    def close(self):
        self.stopping.set()
        self.p.join(5)
        for s in self.idle:
            s.close()
        self.idle = []


def start_core(tmp, extra=(), prefix=()):
    port = kbtest.free_port()
    core = kbtest.Proc(list(prefix) + [kbtest.binary("kegbot_core"), "--kb_core_bind_addr=127.0.0.1:%d" % port,
                        "--state_dir=" + os.path.join(tmp, "state"), "--taps_file=" + os.path.join(tmp, "none"),
                        "--dbus=none", "--max_tick_delta=0"] + list(extra),
                       env={"KEGBOT_API_URL": ""}, name="kegbot_core")
    core.wait_line(r"All services started", timeout=10)
    return core, port


def cpus():
    """(the core's CPU, the others) when there are at least two, else (None, None)."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return None, None
    return mine[-1], set(mine[:-1])


def bench_throughput(tmp, mode="on", n=200000, hostile=False):
    core_cpu, others = cpus()
    prefix = ["taskset", "-c", str(core_cpu)] if core_cpu is not None else []
    core, port = start_core(tmp, ["--ghost_filter=" + mode], prefix)
    saved = os.sched_getaffinity(0)
    if others:
        os.sched_setaffinity(0, others)
    churn = None
    try:
        rss_start = kbtest.proc_status(core.pid, "VmRSS")
        listener = Counter(port)
        producer = Counter(port)        # the producer gets the broadcast too; keep it drained
        # Both accepted before the burst (else the listener could miss its start).
        kbtest.wait_until(lambda: len([l for l in core.output("stderr") if "Remote host connected" in l]) >= 2,
                          what="both clients connected")
        if hostile:
            # Both clients announce themselves: a producer and a listener keep their slots.
            producer.sock.sendall(kbtest.kegnet_frame("Hello", role="producer", name="bench", session=None, seq=None))
            listener.sock.sendall(kbtest.kegnet_frame("Hello", role="listener", name="bench", session=None, seq=None))
            churn = Hostile(port)
            kbtest.wait_until(lambda: churn.count >= 200, timeout=10, what="hostile connections under way")
        frames = b"".join(kbtest.kegnet_frame("MeterUpdate", meter_name="kegboard.flow0", reading=i)
                          for i in range(n + 1))
        listener.expect(b'"ticks":%d,' % n)
        c0 = churn.count if churn else 0
        t0 = time.perf_counter()
        view = memoryview(frames)
        step = 256 * 1024
        for off in range(0, len(frames), step):
            producer.sock.sendall(view[off:off + step])
        t1 = listener.wait(120)
        if t1 is None:
            raise SystemExit("throughput: the last FlowUpdate never arrived (%d frames seen)" % listener.frames)
        rate = n / (t1 - t0)
        rss_after = kbtest.proc_status(core.pid, "VmRSS")
        hostile_count = 0
        if churn:
            hostile_count = churn.count - c0        # during the measurement
            churn.close()
        listener.close()
        producer.close()
        core.stop()
        return rate, rss_start, rss_after, hostile_count
    finally:
        os.sched_setaffinity(0, saved)
        if churn:
            churn.close()
        core.kill()


def bench_latency(tmp, samples=500, hostile=False):
    core, port = start_core(tmp)
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    daemon = None
    churn = None
    try:
        listener = Counter(port)
        listener.sock.sendall(kbtest.kegnet_frame("Hello", role="listener", name="bench", session=None, seq=None))
        daemon = kbtest.Proc([kbtest.binary("kegboard_daemon"), "--kegboard_device=" + path,
                              "--kb_core_addr=%d" % port, "--probe_seconds=0.2", "--hello_timeout=0"],
                             name="kegboard_daemon")
        hello = kbtest.kbsp_hello(serial=b"BENCH")
        # Once the daemon probes, it has opened the port (and flushed what was waiting): the board
        # says hello and the daemon announces it to the core.
        daemon.wait_line(r"probing for a Kegboard", timeout=10)
        os.write(master, hello)
        core.wait_line(r"Controller connected", timeout=20)
        os.set_blocking(master, False)

        def meter(reading):
            return kbtest.kbsp_meter_status("flow0", reading)

        os.write(master, meter(0))          # baseline: handled before reading 1, which follows it
        if hostile:
            churn = Hostile(port)
            kbtest.wait_until(lambda: churn.count >= 200, timeout=10, what="hostile connections under way")
        c0 = churn.count if churn else 0
        lat = []
        # 20 ticks (9 mL) a frame: a pour the ghost filter takes at once, frame after frame.
        step = 20
        for i in range(1, samples + 1):
            try:
                while os.read(master, 4096):    # drain what the daemon writes (pings, relays)
                    pass
            except OSError:
                pass
            listener.expect(b'"ticks":%d,' % (i * step))
            frame = meter(i * step)
            t0 = time.perf_counter()
            os.write(master, frame)
            t1 = listener.wait(5)
            if t1 is None:
                raise SystemExit("latency: no FlowUpdate for reading %d" % i)
            lat.append((t1 - t0) * 1000.0)
            time.sleep(0.002)               # the scenario: readings apart, as a board sends them
        hostile_count = 0
        if churn:
            hostile_count = churn.count - c0        # during the measurement
            churn.close()
        listener.close()
        lat.sort()
        return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1], lat[-1], hostile_count
    finally:
        if churn:
            churn.close()
        if daemon:
            daemon.stop()
        core.stop()
        os.close(master)
        os.close(slave)


def bench_idle(tmp, seconds):
    core, port = start_core(tmp)
    try:
        c = kbtest.KegnetConn.connect(port)     # an idle connected client, as in production
        # The measurement: 2 s to settle after the connection, then the idle window itself.
        time.sleep(2)
        v0 = kbtest.proc_status(core.pid, "voluntary_ctxt_switches")
        nv0 = kbtest.proc_status(core.pid, "nonvoluntary_ctxt_switches")
        time.sleep(seconds)
        v1 = kbtest.proc_status(core.pid, "voluntary_ctxt_switches")
        nv1 = kbtest.proc_status(core.pid, "nonvoluntary_ctxt_switches")
        rss = kbtest.proc_status(core.pid, "VmRSS")
        c.close()
        core.stop()
        return (v1 - v0) * 60.0 / seconds, (nv1 - nv0) * 60.0 / seconds, rss
    finally:
        core.kill()


THROUGHPUT_TARGETS = {"on": 100000, "log": 100000, "off": 150000}    # MeterUpdates/s
RSS_TARGET_KB = 4 * 1024        # standalone core, at most
HOSTILE_TARGET = 1000           # connections that come and go during a measurement, at least


def main():
    idle_seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
    failed = []
    for mode in ("on", "log", "off"):
        with kbtest.TempDir() as tmp:
            rate, rss_start, rss_after, _ = bench_throughput(tmp, mode)
            print("throughput (ghost_filter=%s): %.0f MeterUpdate/s (FlowUpdate to 1 listener; target >= %d)"
                  % (mode, rate, THROUGHPUT_TARGETS[mode]))
            print("core RSS (ghost_filter=%s) at start: %.2f MB; after %s messages: %.2f MB (target <= 4 MB)"
                  % (mode, rss_start / 1024.0, "200000", rss_after / 1024.0))
            if rate < THROUGHPUT_TARGETS[mode]:
                failed.append("throughput (ghost_filter=%s)" % mode)
            if max(rss_start, rss_after) > RSS_TARGET_KB:
                failed.append("RSS (ghost_filter=%s)" % mode)
            sys.stdout.flush()
    with kbtest.TempDir() as tmp:
        p50, p99, pmax, _ = bench_latency(tmp)
        print("pty meter frame -> FlowUpdate latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms (target p99 < 2 ms)"
              % (p50, p99, pmax))
        if p99 >= 2.0:
            failed.append("latency")
        sys.stdout.flush()
    with kbtest.TempDir() as tmp:
        # Longer, so that a thousand connections come and go within the measurement.
        rate, _, _, n = bench_throughput(tmp, n=600000, hostile=True)
        print("core MeterUpdate throughput while %d hostile connections came and went (target >= %d; 64 idle "
              "ones holding the slots): %.0f messages/s (target >= %d)" % (n, HOSTILE_TARGET, rate, THROUGHPUT_TARGETS["on"]))
        if rate < THROUGHPUT_TARGETS["on"]:
            failed.append("throughput under hostile connections")
        if n < HOSTILE_TARGET:
            failed.append("hostile connections during the throughput run")
        sys.stdout.flush()
    with kbtest.TempDir() as tmp:
        p50, p99, pmax, n = bench_latency(tmp, samples=1000, hostile=True)
        print("pty meter frame -> FlowUpdate latency while %d hostile connections came and went (target >= %d): "
              "p50 %.3f ms, p99 %.3f ms, max %.3f ms (target p99 < 2 ms)" % (n, HOSTILE_TARGET, p50, p99, pmax))
        if p99 >= 2.0:
            failed.append("latency under hostile connections")
        if n < HOSTILE_TARGET:
            failed.append("hostile connections during the latency run")
        sys.stdout.flush()
    with kbtest.TempDir() as tmp:
        vol, invol, rss = bench_idle(tmp, idle_seconds)
        print("idle core: %.1f voluntary context switches/min (%.1f involuntary) over %.0f s (target < 2)"
              % (vol, invol, idle_seconds))
        print("idle core RSS: %.2f MB (target <= 4 MB)" % (rss / 1024.0))
        if vol >= 2:
            failed.append("idle wake-ups")
        if rss > RSS_TARGET_KB:
            failed.append("idle RSS")
    print("FAIL: " + ", ".join(failed) if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
