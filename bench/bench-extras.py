#!/usr/bin/python3
"""lcd_daemon and sound_server at rest: how often they wake up, and how long the CFA-635 reply
wait really is.

A kegbot_core runs standalone on a private session bus with two taps; lcd_daemon shows them on an
emulated CFA-635 (pty) and reads the taps from D-Bus; sound_server has its sounds and ALSA's null
PCM; both are connected to the core over kegnet. Once lcd_daemon is idle (backlight off after
--backlight_timeout=2, resting on the splash screen), each program's wake-ups are counted over
--seconds (KEGBOT_BENCH_IDLE_SECONDS, default 60) as the voluntary context switches of all its
threads (/proc/<pid>/task/*/status): every return from a blocking wait is one. The same for
lcd_daemon polling a Kegbot Server stand-in at the default --krest_update_interval (60 s).

Reply wait: a CFA-635 that never answers; the gaps between the commands lcd_daemon sends are the
250 ms wait plus the loop's reaction, with the timer's accuracy of 1 ms (sd-event's default 250 ms
would make them 250-500 ms).

Targets: <= 6 wake-ups a minute for each idle program; reply-wait gaps 245-275 ms (250 ms, as the
emulator sees it).
Ends "PASS" or "FAIL: <which>" (exit 1).
"""
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "extras"))
import kbtest       # noqa: E402
import extrastest   # noqa: E402

SECONDS = float(os.environ.get("KEGBOT_BENCH_IDLE_SECONDS", "60"))
WAKEUPS_TARGET = 6.0
GAP_MIN_MS, GAP_MAX_MS = 245.0, 275.0      # the emulator stamps a packet when it has read it

TAPS = """
[kegboard.flow0]
name = Main Tap
ticks_per_ml = 2.2

[kegboard.flow1]
name = Guest Tap
ml_per_tick = 0.5
"""


def wakeups(pid):
    """Voluntary context switches of every thread of the process."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def lcd(display, core_port, *flags, env=None):
    return kbtest.Proc([kbtest.binary("lcd_daemon"), "--lcd_device_path=" + display.path,
                        "--kb_core_addr=%d" % core_port, "--backlight_timeout=2"] + list(flags),
                       env=env, name="lcd_daemon")


def wait_idle(p, display):
    display.wait_backlight(False, timeout=10)
    kbtest.wait_until(lambda: kbtest.armed_timers(p.pid) == [], timeout=10, what="lcd_daemon idle")


def measure(procs):
    """{name: wake-ups per minute} over SECONDS, all measured in the same window."""
    start = {name: wakeups(p.pid) for name, p in procs.items()}
    time.sleep(SECONDS)         # the measurement window: nothing happens, on purpose
    return {name: (wakeups(p.pid) - start[name]) * 60.0 / SECONDS for name, p in procs.items()}


def main():
    failures = []
    procs = []
    tmp = kbtest.TempDir()
    d = tmp.__enter__()
    try:
        bus = extrastest.SessionBus(d)
        env = dict(bus.env())
        taps = os.path.join(d, "taps.ini")
        with open(taps, "w") as f:
            f.write(TAPS)
        port = kbtest.free_port()
        core = kbtest.Proc([kbtest.binary("kegbot_core"), "--kb_core_bind_addr=127.0.0.1:%d" % port,
                            "--state_dir=" + os.path.join(d, "state"), "--taps_file=" + taps, "--dbus=session"],
                           env=dict(env, KEGBOT_API_URL="", STATE_DIRECTORY=""), name="kegbot_core")
        procs.append(core)
        core.wait_line(r"Serving org\.kegbot\.Core1 on the session bus", timeout=10)

        # Standalone: tap screens from D-Bus.
        display = extrastest.Cfa635()
        p_lcd = lcd(display, port, "--dbus=session", env=env)
        procs.append(p_lcd)
        p_lcd.wait_line(r"kegbot_core is on the session bus: 2 tap screen\(s\)", timeout=10)

        sounds = os.path.join(d, "sounds", "0")
        os.makedirs(sounds)
        extrastest.make_sound(os.path.join(sounds, "start.wav"))
        p_sound = kbtest.Proc([kbtest.binary("sound_server"), "--kb_core_addr=%d" % port,
                               "--sound_dir=" + os.path.dirname(sounds), "--cache_dir=" + os.path.join(d, "cache")],
                              env={"ALSA_CONFIG_PATH": extrastest.alsa_config(d, os.path.join(d, "played.raw"))},
                              name="sound_server")
        procs.append(p_sound)
        p_sound.wait_line(r"Sound server ready", timeout=10)

        # Server mode: the tap screens and drinks polled from a stand-in server.
        api = extrastest.FakeApi()
        api.routes["/api/taps"] = (200, {"objects": [{"id": 1, "name": "Main Tap"}], "meta": {"result": "ok"}})
        api.routes["/api/drinks"] = (200, {"objects": [], "meta": {"result": "ok"}})
        display2 = extrastest.Cfa635()
        p_lcd2 = lcd(display2, port, "--api_url=" + api.url("/api/"))
        procs.append(p_lcd2)

        wait_idle(p_lcd, display)
        display2.wait_backlight(False, timeout=10)
        rates = measure({"lcd_daemon (standalone, D-Bus taps)": p_lcd, "sound_server": p_sound,
                         "lcd_daemon (server, polled every 60 s)": p_lcd2})
        print("Idle wake-ups over %.0f s (voluntary context switches, all threads):" % SECONDS)
        for name, rate in rates.items():
            print("  %-40s %6.1f a minute (target <= %.0f)" % (name, rate, WAKEUPS_TARGET))
            if rate > WAKEUPS_TARGET:
                failures.append("%s idle wake-ups %.1f/min" % (name, rate))
        api.close()

        # The reply wait of a display that never answers.
        silent = extrastest.Cfa635(reply=False)
        p_silent = lcd(silent, port, "--dbus=session", env=env)
        procs.append(p_silent)
        silent.wait_packets(6, timeout=10)      # clear, backlight, 4 splash rows, each after a full wait
        gaps = [(b - a) * 1000.0 for a, b in zip(silent.times, silent.times[1:6])]
        print("CFA-635 reply wait (no answer), gaps between commands over %d waits:" % len(gaps))
        print("  min %.1f ms, median %.1f ms, max %.1f ms (target %.0f-%.0f ms)" % (
            min(gaps), statistics.median(gaps), max(gaps), GAP_MIN_MS, GAP_MAX_MS))
        if min(gaps) < GAP_MIN_MS or max(gaps) > GAP_MAX_MS:
            failures.append("reply-wait gaps %.1f-%.1f ms" % (min(gaps), max(gaps)))
        for disp in (display, display2, silent):
            disp.close()
        bus.stop()
    finally:
        for p in reversed(procs):
            p.kill()
        tmp.__exit__(None, None, None)

    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
