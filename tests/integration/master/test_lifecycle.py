#!/usr/bin/python3
"""kegbot_master start / status / stop / restart with real child processes (programs-and-flags.md
section 12.2). The children are fake_app.py, a test double that daemonizes and keeps a pidfile the
way the real Kegbot programs do, installed under made-up program names in a temp dir ahead in PATH."""
import json
import os
import re
import shutil
import select
import signal
import unittest

import kbtest
from master_util import MASTER, Sandbox, messages

CONFIG = '''
[first_app]
_enabled = True
_program_name = fake_kegbot_app.py
record = %(_pidfile_dir)s/%(__name__)s.json

[disabled_app]
_enabled = False
_program_name = fake_kegbot_app.py

[second_app]
_enabled = True
_program_name = fake_kegbot_app
record = %(_pidfile_dir)s/%(__name__)s.json
'''


def wait_gone(pid, timeout=5.0):
    """Wait for a process that is not our child to exit: its pidfd becomes readable when it does
    (a zombie not yet reaped by init counts as gone)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        r, _, _ = select.select([fd], [], [], timeout * kbtest.SLOW)
        return bool(r)
    finally:
        os.close(fd)


class LifecycleTest(unittest.TestCase):
    def setUp(self):
        self.sb = Sandbox()
        self.sb.install_fake('fake_kegbot_app')
        self.sb.write_config(CONFIG)

    def tearDown(self):
        self.sb.cleanup()

    def status(self):
        r = self.sb.master('status')
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def record(self, app):
        with open(os.path.join(self.sb.run, app + '.json')) as f:
            return json.load(f)

    def test_start_status_stop(self):
        self.assertEqual(self.status(), 'Status:\n%24s : stopped\n%24s : stopped\n' % ('first_app', 'second_app'))

        r = self.sb.master('start')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, '')
        msgs = messages(r.stderr)
        cmd = ('fake_kegbot_app --daemon=True --log_to_file=True --log_to_stdout=False '
               '--logfile={log}/first_app.log --pidfile={run}/first_app.pid --record={run}/first_app.json'
               ).format(log=self.sb.log, run=self.sb.run)
        self.assertEqual(msgs, [
            ('INFO', 'Starting apps'),
            ('INFO', 'Starting: first_app'),
            ('INFO', 'Command: ' + cmd),
            ('INFO', 'Started first_app OK'),
            ('INFO', 'Starting: second_app'),
            ('INFO', 'Command: ' + cmd.replace('first_app', 'second_app')),
            ('INFO', 'Started second_app OK'),
        ])
        self.assertIn('(master) Starting apps', r.stderr)

        p1, p2 = self.sb.pid_of('first_app'), self.sb.pid_of('second_app')
        self.assertNotEqual(p1, p2)
        self.assertEqual(self.status(), 'Status:\n%24s : running (%d)\n%24s : running (%d)\n'
                         % ('first_app', p1, 'second_app', p2))
        # The children got kegbot_master's own directory at the front of PATH, and the flags.
        rec = self.record('first_app')
        self.assertEqual(rec['pid'], p1)
        self.assertEqual(rec['path'].split(':')[0], os.path.dirname(os.path.realpath(MASTER)))
        self.assertEqual(rec['path'].split(':')[1], self.sb.bin)
        self.assertEqual(' '.join(['fake_kegbot_app'] + rec['argv'][1:]), cmd)

        r = self.sb.master('stop')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(messages(r.stderr), [
            ('INFO', 'Stopping app: first_app'),
            ('INFO', 'Sending app first_app signal 15'),
            ('INFO', 'first_app stopped.'),
            ('INFO', 'Stopping app: second_app'),
            ('INFO', 'Sending app second_app signal 15'),
            ('INFO', 'second_app stopped.'),
        ])
        self.assertTrue(wait_gone(p1) and wait_gone(p2))
        self.assertEqual(self.status(), 'Status:\n%24s : stopped\n%24s : stopped\n' % ('first_app', 'second_app'))

        # Stopping what is stopped is fine.
        r = self.sb.master('stop')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(('INFO', 'first_app stopped.'), messages(r.stderr))

    def test_died_and_unknown(self):
        r = self.sb.master('start')
        self.assertEqual(r.returncode, 0, r.stderr)
        p1, p2 = self.sb.pid_of('first_app'), self.sb.pid_of('second_app')
        os.kill(p1, signal.SIGKILL)     # leaves its pidfile behind
        self.assertTrue(wait_gone(p1))
        self.assertEqual(self.status(), 'Status:\n%24s : died (%d)\n%24s : running (%d)\n'
                         % ('first_app', p1, 'second_app', p2))

        with open(os.path.join(self.sb.run, 'first_app.pid'), 'w') as f:
            f.write('garbage\n')
        self.assertEqual(self.status(), 'Status:\n%24s : unknown\n%24s : running (%d)\n'
                         % ('first_app', 'second_app', p2))

        # A died app counts as stopped; the running one is stopped.
        r = self.sb.master('stop')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(wait_gone(p2))

    def test_stale_pidfile_of_a_reused_pid(self):
        # first_app died long ago; its pid now belongs to an unrelated process. status must not report
        # that process as first_app, and stop must never signal it: the stale pidfile goes, with a
        # WARNING (before, stop sent it SIGTERM, then SIGKILL).
        stranger = kbtest.Proc(["sleep", "600"], name="sleep")
        try:
            pidfile = os.path.join(self.sb.run, 'first_app.pid')
            with open(pidfile, 'w') as f:
                f.write('%d\n' % stranger.pid)
            self.assertEqual(self.status(), 'Status:\n%24s : died (%d)\n%24s : stopped\n'
                             % ('first_app', stranger.pid, 'second_app'))
            self.assertFalse(os.path.exists(pidfile))
            with open(pidfile, 'w') as f:
                f.write('%d\n' % stranger.pid)
            r = self.sb.master('stop')
            self.assertEqual(r.returncode, 0, r.stderr)
            msgs = messages(r.stderr)
            self.assertIn(('WARNING', 'Removing stale pidfile %s of first_app: pid %d is now sleep, not '
                           'fake_kegbot_app' % (pidfile, stranger.pid)), msgs)
            self.assertIn(('INFO', 'first_app stopped.'), msgs)
            self.assertNotIn(('INFO', 'Sending app first_app signal 15'), msgs)
            self.assertTrue(stranger.alive())
        finally:
            stranger.kill()

    def test_stale_pidfile_of_the_same_program(self):
        # The pid is the same program, but another instance: started after the pidfile was written
        # (and not started with it). Also stale.
        pidfile = os.path.join(self.sb.run, 'second_app.pid')
        other = kbtest.Proc([os.path.join(self.sb.bin, 'fake_kegbot_app')], name="fake_kegbot_app")
        try:
            with open(pidfile, 'w') as f:
                f.write('%d\n' % other.pid)
            old = os.stat(pidfile).st_mtime - 3600
            os.utime(pidfile, (old, old))
            r = self.sb.master('status')
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, 'Status:\n%24s : stopped\n%24s : died (%d)\n'
                             % ('first_app', 'second_app', other.pid))
            # (btime has whole seconds: 3599 to 3601 s.)
            self.assertTrue([m for lvl, m in messages(r.stderr) if lvl == 'WARNING' and re.fullmatch(
                r'Removing stale pidfile %s of second_app: pid %d started (3599|360[01]) s after the pidfile was '
                r'written: another fake_kegbot_app' % (re.escape(pidfile), other.pid), m)], r.stderr)
            self.assertTrue(other.alive())
        finally:
            other.kill()

        # The app kegbot_master started is still recognised after the clock moved on: it names its
        # pidfile on its command line.
        r = self.sb.master('start')
        self.assertEqual(r.returncode, 0, r.stderr)
        p2 = self.sb.pid_of('second_app')
        old = os.stat(pidfile).st_mtime - 3600
        os.utime(pidfile, (old, old))
        self.assertIn('%24s : running (%d)\n' % ('second_app', p2), self.status())
        r = self.sb.master('stop')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(wait_gone(p2))

    def test_already_running_is_a_failure(self):
        r = self.sb.master('start')
        self.assertEqual(r.returncode, 0, r.stderr)
        p1 = self.sb.pid_of('first_app')
        r = self.sb.master('start')
        self.assertEqual(r.returncode, 1)
        msgs = messages(r.stderr)
        self.assertIn(('ERROR', 'Error starting first_app: 1'), msgs)
        self.assertIn(('ERROR', 'Output was:'), msgs)
        self.assertIn(('ERROR', '<first_app>  Old pid %d is still alive, aborting' % p1), msgs)
        # The remaining apps are not started.
        self.assertNotIn(('INFO', 'Starting: second_app'), msgs)
        self.assertEqual(self.sb.pid_of('first_app'), p1)

    def test_failing_app_output_and_remaining_not_started(self):
        self.sb.write_config('[bad]\n_enabled = 1\n_program_name = fake_kegbot_app\nfail = 3\n'
                             '[good]\n_enabled = 1\n_program_name = fake_kegbot_app\n')
        r = self.sb.master('start')
        self.assertEqual(r.returncode, 1)
        msgs = messages(r.stderr)
        self.assertEqual(msgs[-4:], [
            ('ERROR', 'Error starting bad: 3'),
            ('ERROR', 'Output was:'),
            ('ERROR', '<bad>  fake_app: about to fail'),
            ('ERROR', '<bad>  Error: failing as asked (3)'),
        ])
        self.assertNotIn(('INFO', 'Starting: good'), msgs)
        self.assertFalse(os.path.exists(os.path.join(self.sb.run, 'good.pid')))

    def test_missing_program(self):
        # fb_publisher and kegbot_twitter have no program in this project: enabled, they fail clearly.
        self.sb.write_config('[fb_publisher]\n_enabled = True\n[first_app]\n_enabled = True\n'
                             '_program_name = fake_kegbot_app.py\n')
        r = self.sb.master('start')
        self.assertEqual(r.returncode, 1)
        msgs = messages(r.stderr)
        self.assertIn(('ERROR', "Error starting fb_publisher: program 'fb_publisher' not found"), msgs)
        self.assertNotIn(('INFO', 'Starting: first_app'), msgs)
        self.assertEqual(self.status(), 'Status:\n%24s : stopped\n%24s : stopped\n' % ('fb_publisher', 'first_app'))

    def test_stop_escalates_to_sigkill(self):
        self.sb.write_config('[stubborn]\n_enabled = True\n_program_name = fake_kegbot_app\nignore_term =\n')
        r = self.sb.master('start')
        self.assertEqual(r.returncode, 0, r.stderr)
        pid = self.sb.pid_of('stubborn')
        r = self.sb.master('stop')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(messages(r.stderr), [
            ('INFO', 'Stopping app: stubborn'),
            ('INFO', 'Sending app stubborn signal 15'),
            ('INFO', 'Sending app stubborn signal 15'),
            ('INFO', 'Sending app stubborn signal 15'),
            ('INFO', 'Sending app stubborn signal 9'),
            ('INFO', 'stubborn stopped.'),
        ])
        self.assertTrue(wait_gone(pid))
        # SIGKILL leaves the pidfile: the app is reported as died.
        self.assertEqual(self.status(), 'Status:\n%24s : died (%d)\n' % ('stubborn', pid))

    def test_restart(self):
        r = self.sb.master('start')
        self.assertEqual(r.returncode, 0, r.stderr)
        p1 = self.sb.pid_of('first_app')
        r = self.sb.master('restart')
        self.assertEqual(r.returncode, 0, r.stderr)
        msgs = messages(r.stderr)
        self.assertLess(msgs.index(('INFO', 'first_app stopped.')), msgs.index(('INFO', 'Starting apps')))
        self.assertTrue(wait_gone(p1))
        q1 = self.sb.pid_of('first_app')
        self.assertNotEqual(p1, q1)
        self.assertIn('running (%d)' % q1, self.status())
        self.assertEqual(self.sb.master('stop').returncode, 0)

    def test_own_directory_first(self):
        # A copy of kegbot_master in its own directory, with a program beside it that shadows the one
        # in PATH: the one beside kegbot_master wins.
        own = os.path.join(self.sb.dir, 'own')
        os.mkdir(own)
        master = os.path.join(own, 'kegbot_master')
        shutil.copy(MASTER, master)
        self.sb.install_fake('fake_kegbot_app', directory=own)
        self.sb.install_fake('only_in_path')
        self.sb.write_config('[first_app]\n_enabled = True\n_program_name = fake_kegbot_app\n'
                             'record = %(_pidfile_dir)s/%(__name__)s.json\n'
                             '[other]\n_enabled = True\n_program_name = only_in_path\n'
                             'record = %(_pidfile_dir)s/%(__name__)s.json\n')
        r = self.sb.master('start', binary=master)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.record('first_app')['argv'][0], os.path.join(own, 'fake_kegbot_app'))
        self.assertEqual(self.record('other')['argv'][0], os.path.join(self.sb.bin, 'only_in_path'))
        self.assertEqual(self.record('other')['path'].split(':')[0], own)
        self.assertEqual(self.sb.master('stop', binary=master).returncode, 0)


if __name__ == '__main__':
    kbtest.main()
