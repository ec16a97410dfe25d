"""sound_server through the real binary: a fake core broadcasts FlowUpdates; sounds play through
ALSA into the `file` PCM (ALSA_CONFIG_PATH), in front of the null PCM or of a paced test PCM that
takes frames as fast as a card plays them; or through an external player, a script that records
its arguments; a fake server offers sound events and sound files."""
import os
import re
import shutil
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kbtest  # noqa: E402
from extrastest import FakeApi, alsa_config, make_sound, sound_samples  # noqa: E402

# The trap is installed before PLAY is logged: the tests send the SIGTERM only after they have seen
# the PLAY line, so a TERM is never lost to a player that had not reached its trap yet. The sleep is
# the sound's playing time (the scenario), not a wait.
PLAYER = """#!/bin/sh
log="$PLAYER_LOG"
trap 'echo "TERM $*" >> "$log"; exit 0' TERM
echo "PLAY $*" >> "$log"
sleep "${PLAYER_SLEEP:-0}" &
wait $!
echo "DONE $*" >> "$log"
"""


def flow(state, volume_ml, flow_id=1):
    return dict(flow_id=flow_id, meter_name="kegboard.flow0", state=state, username=None,
                start_time="2026-11-26T12:00:00Z", last_activity_time="2026-11-26T12:00:00Z",
                ticks=0, volume_ml=volume_ml)


class Base(kbtest.FakeCoreCase):
    """A temporary directory and a fake core for each test; the programs it starts are killed."""

    def setUp(self):
        super().setUp()
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.kill()


class SoundTest(Base):
    def setUp(self):
        super().setUp()
        self.player = os.path.join(self.dir, "player.sh")
        with open(self.player, "w") as f:
            f.write(PLAYER)
        os.chmod(self.player, 0o755)
        self.log = os.path.join(self.dir, "player.log")
        self.sounds = os.path.join(self.dir, "sounds")
        self.cache = os.path.join(self.dir, "cache")
        os.mkdir(self.sounds)
        for t in (0, 1, 8, 12, 16, 24, 32):
            os.mkdir(os.path.join(self.sounds, str(t)))
            with open(os.path.join(self.sounds, str(t), "t%d.wav" % t), "w") as f:
                f.write("RIFF")
        # Never chosen: hidden files and anything that is not a regular file.
        open(os.path.join(self.sounds, "0", ".hidden.wav"), "w").close()
        os.mkdir(os.path.join(self.sounds, "0", "subdir"))

    def start(self, *flags, sleep=0, player=None):
        # A previous instance's connection can still be in the fake core's list (its EOF not
        # seen yet): wait for this instance's own connection, or a broadcast may miss it.
        with self.core._cv:
            before = list(self.core.conns)
        p = kbtest.Proc([kbtest.binary("sound_server"), "--kb_core_addr=%d" % self.core.port,
                         "--sound_dir=" + self.sounds, "--cache_dir=" + self.cache,
                         "--player=%s  -x" % (player or self.player)] + list(flags),
                        env={"PLAYER_LOG": self.log, "PLAYER_SLEEP": str(sleep)})
        self.procs.append(p)
        p.wait_line(r"Sound server ready", timeout=5)
        kbtest.wait_until(lambda: any(c not in before for c in list(self.core.conns)), timeout=10,
                          what="sound_server's kegnet connection")
        return p

    def played(self):
        try:
            with open(self.log) as f:
                return [l.split() for l in f.read().splitlines()]
        except FileNotFoundError:
            return []

    def wait_plays(self, n, kind="PLAY"):
        return kbtest.wait_until(lambda: len([l for l in self.played() if l[0] == kind]) >= n and
                                 [l for l in self.played() if l[0] == kind],
                                 what="%d %s lines in the player log" % (n, kind))

    def test_thresholds(self):
        p = self.start()
        s = lambda t: os.path.join(self.sounds, str(t), "t%d.wav" % t)  # noqa: E731
        steps = [(10.0, 0), (40.0, 1), (40.5, None), (300.0, 8), (2000.0, 32), (2000.0, None)]
        n = 0
        for volume, expect in steps:
            self.core.broadcast("FlowUpdate", **flow("active", volume))
            if expect is not None:
                n += 1
                plays = self.wait_plays(n)
                # Split on spaces, empty words dropped, the file appended last.
                self.assertEqual(plays[-1], ["PLAY", "-x", s(expect)])
        # A null volume plays nothing; completed forgets the flow; its next update starts over.
        self.core.broadcast("FlowUpdate", **flow("active", None, flow_id=2))
        self.core.broadcast("FlowUpdate", **flow("completed", 2000.0))
        self.core.broadcast("FlowUpdate", **flow("idle", 5.0))
        n += 1
        self.assertEqual(self.wait_plays(n)[-1], ["PLAY", "-x", s(0)])
        # Exactly the expected sounds, never the hidden file or the directory.
        self.assertEqual([l[2] for l in self.played() if l[0] == "PLAY"],
                         [s(0), s(1), s(8), s(32), s(0)])
        self.assertEqual(p.stop(), 0)

    def test_new_sound_stops_the_current_one(self):
        p = self.start(sleep=30)
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        self.wait_plays(1)
        self.core.broadcast("FlowUpdate", **flow("active", 40.0))
        self.wait_plays(2)
        terms = self.wait_plays(1, kind="TERM")
        self.assertEqual(terms[0][2], os.path.join(self.sounds, "0", "t0.wav"))
        # At exit the sound still playing is stopped too.
        self.assertEqual(p.stop(), 0)
        self.wait_plays(2, kind="TERM")

    def test_server_sounds(self):
        api = FakeApi()
        self.addCleanup(api.close)
        api.routes["/api/sound-events"] = (200, {"objects": [
            {"event_name": "flow.threshold.ounces", "event_predicate": "0",
             "sound_url": api.url("/media/sounds/cheer.wav?v=2"), "user": None},
            {"event_name": "flow.threshold.ounces", "event_predicate": "1", "sound_url": "ftp://x/y.wav"},
            {"event_name": "flow.threshold.ounces", "event_predicate": "1.0", "sound_url": api.url("/media/z.wav")},
            {"event_name": "drink.poured", "event_predicate": "0", "sound_url": api.url("/media/other.wav")},
        ], "meta": {"result": "ok"}})
        api.routes["/media/sounds/cheer.wav?v=2"] = (200, b"RIFFcheer")
        os.rmdir(os.path.join(self.sounds, "0", "subdir"))
        os.unlink(os.path.join(self.sounds, "0", "t0.wav"))
        p = self.start("--api_url=" + api.url("/api/"), "--api_key=k")
        p.wait_line(r"ERROR .*ftp://x/y.wav", timeout=5)
        cached = os.path.join(self.cache, "cheer.wav")
        p.wait_line(r"Downloaded .* to " + cached, timeout=5)
        with open(cached, "rb") as f:
            self.assertEqual(f.read(), b"RIFFcheer")
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        self.assertEqual(self.wait_plays(1)[-1], ["PLAY", "-x", cached])
        self.assertEqual(p.stop(), 0)
        paths = api.paths()
        self.assertNotIn("/media/z.wav", paths)
        self.assertNotIn("/media/other.wav", paths)
        # The sound-events request carried the key; the media download did not.
        hdrs = dict(api.requests)
        self.assertEqual(hdrs["/api/sound-events"].get("X-Kegbot-Api-Key"), "k")
        self.assertIsNone(hdrs["/media/sounds/cheer.wav?v=2"].get("X-Kegbot-Api-Key"))

        # A second start reuses the cached file. The sound events must have been processed (not
        # merely requested) before the pour, else only local sounds exist (none for 0 oz here): the
        # answer is held back to make that race certain rather than occasional.
        n = len(api.requests)
        api.delays["/api/sound-events"] = 0.3
        p = self.start("--api_url=" + api.url("/api/"), "--verbose")
        kbtest.wait_until(lambda: len(api.requests) > n, what="sound-events request")
        p.wait_line(r"DEBUG .*Using cached %s for " % re.escape(cached), timeout=5)
        self.core.broadcast("FlowUpdate", **flow("active", 10.0, flow_id=5))
        self.assertEqual(self.wait_plays(2)[-1], ["PLAY", "-x", cached])
        self.assertEqual([x for x in api.paths() if x.startswith("/media")], ["/media/sounds/cheer.wav?v=2"])
        self.assertEqual(p.stop(), 0)

    def test_server_without_sound_events(self):
        api = FakeApi()
        self.addCleanup(api.close)
        api.routes["/api/v1/sound-events"] = (410, {"error": {"code": "GoneError", "message": "gone"}})
        p = self.start("--api_url=" + api.url("/api/v1/"))
        p.wait_line(r"INFO .*local sounds only", timeout=5)
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        self.assertEqual(self.wait_plays(1)[-1][2], os.path.join(self.sounds, "0", "t0.wav"))
        self.assertEqual(p.stop(), 0)
        # --noserver_sounds: not even asked.
        n = len(api.requests)
        p = self.start("--api_url=" + api.url("/api/v1/"), "--noserver_sounds")
        self.assertEqual(p.stop(), 0)
        self.assertEqual(len(api.requests), n)

    def test_player_that_cannot_run(self):
        p = self.start(player=os.path.join(self.dir, "no-such-player"))
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        self.core.broadcast("FlowUpdate", **flow("active", 40.0))
        p.wait_line(r"ERROR .*Cannot run the player", timeout=5)
        self.core.broadcast("FlowUpdate", **flow("active", 300.0))
        self.assertEqual(p.stop(), 0)
        self.assertEqual(len([l for l in p.output() if "Cannot run the player" in l]), 1)

    def test_player_that_fails(self):
        failing = os.path.join(self.dir, "failing.sh")
        with open(failing, "w") as f:
            f.write("#!/bin/sh\nexit 3\n")
        os.chmod(failing, 0o755)
        p = self.start(player=failing)
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        p.wait_line(r"WARNING .*The player '%s  -x' failed on %s: exit status 3" % (
            re.escape(failing), re.escape(os.path.join(self.sounds, "0", "t0.wav"))))
        self.assertEqual(p.stop(), 0)

    def test_flags(self):
        r = kbtest.run([kbtest.binary("sound_server"), "--help"], env={"CACHE_DIRECTORY": "/var/cache/kegbot:/x"})
        self.assertEqual(r.returncode, 1)
        self.assertIn("(default: '/var/cache/kegbot/sounds')", r.stdout)
        self.assertIn("--player", r.stdout)
        self.assertIn("(default: 'default')", r.stdout)        # --alsa_device
        r = kbtest.run([kbtest.binary("sound_server"), "--player=  "])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Error: --player must name a program", r.stderr)
        r = kbtest.run([kbtest.binary("sound_server"), "extra"])
        self.assertEqual(r.returncode, 1)

    def test_no_periodic_wakeups(self):
        """Forgetting flows after 10 minutes needs a timer only while flows are remembered: an
        idle sound_server has no armed timer at all (timerfds as the kernel shows them)."""
        p = self.start()
        kbtest.wait_until(lambda: kbtest.armed_timers(p.pid) == [], what="no armed timer while idle")
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        self.wait_plays(1)
        timers = kbtest.wait_until(lambda: kbtest.armed_timers(p.pid), what="the flow's forget timer")
        self.assertEqual(len(timers), 1, timers)
        self.assertTrue(500 <= timers[0] <= 600, timers)
        self.core.broadcast("FlowUpdate", **flow("completed", 10.0))
        kbtest.wait_until(lambda: kbtest.armed_timers(p.pid) == [], what="no armed timer once the flow is forgotten")
        self.assertEqual(p.stop(), 0)

    def test_sighup_keeps_running(self):
        p = self.start()
        p.signal(signal.SIGHUP)
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        self.wait_plays(1)
        self.assertEqual(p.stop(), 0)


class AlsaTest(Base):
    """The default configuration: no --player, sounds decoded by libsndfile and played on ALSA's
    default PCM, here the file plugin that appends what it is given to self.out."""

    def setUp(self):
        super().setUp()
        self.sounds = os.path.join(self.dir, "sounds")
        self.out = os.path.join(self.dir, "played.raw")
        # No external player anywhere on the PATH sound_server gets.
        self.path = os.path.join(self.dir, "bin")
        os.mkdir(self.path)

    def sound(self, threshold, name, **kw):
        d = os.path.join(self.sounds, str(threshold))
        os.makedirs(d, exist_ok=True)
        return make_sound(os.path.join(d, name), **kw)

    def start(self, *flags, paced=False, sound_dir=None, wait_connected=True):
        env = {"ALSA_CONFIG_PATH": alsa_config(self.dir, self.out, paced=paced), "PATH": self.path}
        self.assertIsNone(shutil.which("aplay", path=self.path))
        p = kbtest.Proc([kbtest.binary("sound_server"), "--verbose", "--kb_core_addr=%d" % self.core.port,
                         "--sound_dir=" + (sound_dir or self.sounds), "--cache_dir=" + os.path.join(self.dir, "c")]
                        + list(flags), env=env)
        self.procs.append(p)
        p.wait_line(r"Sound server ready; sounds in .*, playing on ALSA device '", timeout=5)
        if wait_connected:
            self.core.wait_connected()
        return p

    def played(self):
        try:
            with open(self.out, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def test_pour_plays_threshold_sounds_through_alsa(self):
        """A pour with the default configuration writes the threshold sounds into the file PCM:
        WAV, FLAC (both lossless: exactly their samples), Ogg Vorbis (its length), stereo."""
        t0 = self.sound(0, "start.wav", frames=800, seed=0)
        t1 = self.sound(1, "one.flac", fmt="flac", frames=1200, seed=1)
        t8 = self.sound(8, "eight.ogg", fmt="ogg", frames=4000, seed=8)
        t12 = self.sound(12, "twelve.wav", rate=22050, channels=2, frames=700, seed=12)
        p = self.start()
        p.wait_line(r"INFO .*4 local sound\(s\) in ")
        expected = b""
        for volume, path, samples in [(10.0, t0, sound_samples(1, 800, 0)), (40.0, t1, sound_samples(1, 1200, 1)),
                                      (300.0, t8, None), (400.0, t12, sound_samples(2, 700, 12))]:
            n = p.count("stderr")
            self.core.broadcast("FlowUpdate", **flow("active", volume))
            p.wait_line(r"INFO .*Playing %s$" % re.escape(path), key="stderr", start=n)
            p.wait_line(r"DEBUG .*Played %s \(\d+ frames\)" % re.escape(path), key="stderr", start=n)
            # The file plugin's writer (a pipe to cat) may finish a moment after the PCM is closed.
            size = len(expected) + (len(samples) if samples else 4000 * 2)
            got = kbtest.wait_until(lambda: len(self.played()) >= size and self.played(), what="%s recorded" % path)
            if samples is None:
                self.assertEqual(len(got) - len(expected), 4000 * 2)     # Vorbis decodes to as many frames
                samples = got[len(expected):]
            expected += samples
            self.assertEqual(got, expected, path)
        self.assertFalse([l for l in p.output() if "WARNING" in l or "ERROR" in l or "ALSA lib" in l], p.output())
        self.assertEqual(p.stop(), 0)

    def test_new_sound_stops_the_one_playing(self):
        """On a PCM that plays in real time: a 3 s sound is cut short by the next threshold, while
        sound_server goes on serving the loop (non-blocking playback)."""
        long = self.sound(0, "long.wav", frames=24000, seed=3)            # 3 s at 8 kHz
        short = self.sound(1, "short.wav", frames=400, seed=4)
        p = self.start(paced=True)
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        p.wait_line(r"INFO .*Playing %s$" % re.escape(long))
        self.core.broadcast("FlowUpdate", **flow("active", 40.0))
        p.wait_line(r"DEBUG .*Stopping %s for the next sound" % re.escape(long))
        p.wait_line(r"DEBUG .*Played %s \(400 frames\)" % re.escape(short))
        got = kbtest.wait_until(lambda: self.played().endswith(sound_samples(1, 400, 4)) and self.played(),
                                what="the short sound recorded")
        tail = sound_samples(1, 400, 4)
        self.assertTrue(got.endswith(tail))
        head = got[:-len(tail)]
        full = sound_samples(1, 24000, 3)
        # Only a beginning of the long sound was written: it was stopped, not played out.
        self.assertTrue(0 < len(head) < len(full), len(head))
        self.assertEqual(head, full[:len(head)])
        self.assertFalse([l for l in p.output() if "Played %s" % long in l])
        # The device is closed once the sound is over: nothing of ours is left to wake up for
        # but the flow's 10-minute forget timer.
        kbtest.wait_until(lambda: kbtest.armed_timers(p.pid) and max(kbtest.armed_timers(p.pid)) >= 500 and
                          len(kbtest.armed_timers(p.pid)) == 1, what="only the forget timer")
        self.assertEqual(p.stop(), 0)

    def test_sigterm_while_playing(self):
        long = self.sound(0, "long.wav", frames=80000, seed=5)            # 10 s
        p = self.start(paced=True)
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        p.wait_line(r"INFO .*Playing %s$" % re.escape(long))
        self.assertEqual(p.stop(timeout=3), 0)
        self.assertLess(len(self.played()), len(sound_samples(1, 80000, 5)))

    def test_warnings_with_reasons(self):
        # A missing --sound_dir, at start-up.
        p = self.start(sound_dir=os.path.join(self.dir, "nowhere"), wait_connected=False)
        p.wait_line(r"WARNING .*Sound directory %s: No such file or directory; no sound will play\." %
                    re.escape(os.path.join(self.dir, "nowhere")))
        self.assertEqual(p.stop(), 0)
        # An empty one.
        os.makedirs(os.path.join(self.sounds, "8"))
        p = self.start(wait_connected=False)
        p.wait_line(r"WARNING .*No sounds in %s: put sound files in %s/<ounces>/" % (
            re.escape(self.sounds), re.escape(self.sounds)))
        self.assertEqual(p.stop(), 0)
        # A file that is not a sound, at the event; the next one still plays.
        bad = os.path.join(self.sounds, "0", "bad.wav")
        os.makedirs(os.path.dirname(bad))
        with open(bad, "wb") as f:
            f.write(b"RIFF\x00\x00")
        good = self.sound(1, "good.wav", frames=100, seed=6)
        p = self.start()
        self.core.broadcast("FlowUpdate", **flow("active", 10.0))
        p.wait_line(r"WARNING .*Cannot play %s: \S" % re.escape(bad))
        self.core.broadcast("FlowUpdate", **flow("active", 40.0))
        p.wait_line(r"DEBUG .*Played %s" % re.escape(good))
        self.assertEqual(p.stop(), 0)
        # An ALSA device that does not exist: at start-up and at the event.
        p = self.start("--alsa_device=nosuchpcm")
        p.wait_line(r"WARNING .*ALSA device 'nosuchpcm' cannot be opened: \S.*; sounds will not play until it can")
        self.core.broadcast("FlowUpdate", **flow("active", 40.0, flow_id=2))
        p.wait_line(r"WARNING .*Cannot play %s on ALSA device 'nosuchpcm': open: \S" % re.escape(good))
        self.assertFalse([l for l in p.output() if "ALSA lib" in l], p.output())
        self.assertEqual(p.stop(), 0)


if __name__ == "__main__":
    kbtest.main()
