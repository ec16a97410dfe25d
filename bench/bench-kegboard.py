#!/usr/bin/python3
"""The board path: a pty board -> kegboard_daemon -> kegbot_core (standalone, the real one) -> one
kegnet listener. Every figure is printed beside its target; the last line is PASS or FAIL: <which>
with a non-zero exit.

1. Paced: 100 meter_status frames/s for KEGBOT_BENCH_SECONDS (default 5) s. CPU of daemon + core
   (schedstat, ns) per frame, with the CPU of the same two idle for the same time subtracted, as a
   ratio to the cost of two bare wake-ups measured by bench/wakeup-floor.c in the same round (a pty
   relay and a socket sink doing nothing else). 3 rounds; min and median; target median <= 1.5.
2. Flood: 200,000 frames written to the pty as fast as it takes them, to the FlowUpdate carrying
   the last total at the listener; target >= 50,000 frames/s.
3. Memory of the standalone stack (daemon + core) after a paced round, as in use: RSS <= 6.5 MB,
   PSS <= 1.2 MB (after the flood too, without a target: freed heap stays with the process).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import kbtest  # noqa: E402

SECONDS = float(os.environ.get("KEGBOT_BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("KEGBOT_BENCH_ROUNDS", "3"))
RATE = 100.0
RATIO_TARGET = 1.5
FLOOD_FRAMES = 200000
FLOOD_TARGET = 50000
RSS_TARGET_KB = 6.5 * 1024
PSS_TARGET_KB = 1.2 * 1024


def stack_cpu(pids):
    return sum(kbtest.cpu_ns(p) for p in pids)


def paced_round(tmp):
    """ns of daemon + core CPU per frame at RATE frames/s, idle subtracted."""
    core, port = benchlib.start_core(tmp)
    listener = benchlib.Listener(port)
    board = benchlib.Board(core, port)
    try:
        pids = (core.pid, board.daemon.pid)
        reading = 0
        board.write(kbtest.kbsp_meter_status("flow0", reading))
        time.sleep(1.0)                     # settle: the baseline handled, connections quiet
        i0 = stack_cpu(pids)
        time.sleep(SECONDS)
        i1 = stack_cpu(pids)
        idle_per_s = (i1 - i0) / SECONDS
        n = int(RATE * SECONDS)
        t0 = time.perf_counter()
        c0 = stack_cpu(pids)
        d0 = kbtest.cpu_ns(board.daemon.pid)
        w0 = kbtest.proc_status(board.daemon.pid, "voluntary_ctxt_switches"), kbtest.proc_status(core.pid, "voluntary_ctxt_switches")
        for k in range(1, n + 1):
            due = t0 + k / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            reading += 20
            board.write(kbtest.kbsp_meter_status("flow0", reading))
            board.drain()
        listener.expect(b'"ticks":%d,' % reading)
        if listener.wait(5) is None:
            raise SystemExit("paced: the last FlowUpdate never arrived")
        wall = time.perf_counter() - t0
        c1 = stack_cpu(pids)
        mem = kbtest.memory_kb(core.pid), kbtest.memory_kb(board.daemon.pid)
        d1 = kbtest.cpu_ns(board.daemon.pid)
        w1 = kbtest.proc_status(board.daemon.pid, "voluntary_ctxt_switches"), kbtest.proc_status(core.pid, "voluntary_ctxt_switches")
        print("  daemon %.1f us/frame, %.2f wake-ups/frame; core %.1f us/frame, %.2f wake-ups/frame" % (
            (d1 - d0) / n / 1000, (w1[0] - w0[0]) / n, ((c1 - c0) - (d1 - d0)) / n / 1000, (w1[1] - w0[1]) / n))
        per_frame = ((c1 - c0) - idle_per_s * wall) / n
        return per_frame, idle_per_s, mem
    finally:
        board.close()
        listener.close()
        core.stop()


def flood(tmp):
    core, port = benchlib.start_core(tmp)
    listener = benchlib.Listener(port)
    board = benchlib.Board(core, port)
    try:
        board.write(kbtest.kbsp_meter_status("flow0", 0))
        frames = b"".join(kbtest.kbsp_meter_status("flow0", i) for i in range(1, FLOOD_FRAMES + 1))
        listener.expect(b'"ticks":%d,' % FLOOD_FRAMES)
        t0 = time.perf_counter()
        board.write(frames)
        t1 = listener.wait(120)
        if t1 is None:
            raise SystemExit("flood: the last FlowUpdate never arrived (%d frames at the listener)" % listener.frames)
        mem = kbtest.memory_kb(core.pid), kbtest.memory_kb(board.daemon.pid)
        return FLOOD_FRAMES / (t1 - t0), mem
    finally:
        board.close()
        listener.close()
        core.stop()


def main():
    report = benchlib.Report()
    ratios, costs, floors = [], [], []
    for r in range(ROUNDS):
        floor = benchlib.wakeup_floor(RATE, SECONDS)
        with kbtest.TempDir() as tmp:
            cost, idle, (core_mem, daemon_mem) = paced_round(tmp)
        floors.append(floor)
        costs.append(cost)
        ratios.append(cost / floor)
        print("round %d: two bare wake-ups %.1f us/frame; daemon + core %.1f us/frame (idle %.1f us/s subtracted); "
              "ratio %.2f" % (r + 1, floor / 1000, cost / 1000, idle / 1000, cost / floor))
        sys.stdout.flush()
    lo, med = benchlib.rounds_summary(ratios)
    print("paced board path (%d frames/s, daemon + core, 1 listener): %.1f us/frame median (min %.1f); "
          "two bare wake-ups %.1f us/frame median" % (RATE, benchlib.rounds_summary(costs)[1] / 1000,
                                                        min(costs) / 1000, benchlib.rounds_summary(floors)[1] / 1000))
    report.figure("paced board path / two bare wake-ups (median of %d rounds; min %.2f)" % (ROUNDS, lo),
                  med, "x", "<= %.1f" % RATIO_TARGET, med <= RATIO_TARGET)
    with kbtest.TempDir() as tmp:
        rate, (flood_core, flood_daemon) = flood(tmp)
    report.figure("board path flood (pty -> daemon -> core -> listener)", rate, "frames/s",
                  ">= %d" % FLOOD_TARGET, rate >= FLOOD_TARGET, fmt="%.0f")
    print("after the flood: RSS core %d kB + daemon %d kB, PSS core %d kB + daemon %d kB" % (
        flood_core["Rss"], flood_daemon["Rss"], flood_core["Pss"], flood_daemon["Pss"]))
    rss = core_mem["Rss"] + daemon_mem["Rss"]
    pss = core_mem["Pss"] + daemon_mem["Pss"]
    report.figure("standalone stack RSS after a paced pour (core %d kB + daemon %d kB)" % (core_mem["Rss"], daemon_mem["Rss"]),
                  rss / 1024.0, "MB", "<= 6.5 MB", rss <= RSS_TARGET_KB)
    report.figure("standalone stack PSS after a paced pour (core %d kB + daemon %d kB)" % (core_mem["Pss"], daemon_mem["Pss"]),
                  pss / 1024.0, "MB", "<= 1.2 MB", pss <= PSS_TARGET_KB)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
