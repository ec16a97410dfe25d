#!/usr/bin/python3
"""kegbot_master: configtest output (programs-and-flags.md section 12.2), config handling (12.1) and
usage errors, all without starting anything."""
import os
import re
import subprocess
import unittest

import kbtest
from master_util import CONFIGTEST, FIXTURE, MASTER, Sandbox, messages


def expected_configtest():
    """What `configtest` prints for the example config: the sample output of programs-and-flags.md
    section 12.2 (kegbot_core, kegboard_daemon), then sound_server in the same pattern."""
    with open(CONFIGTEST) as f:
        return f.read()


class ConfigtestTest(unittest.TestCase):
    def setUp(self):
        self.sb = Sandbox()

    def tearDown(self):
        self.sb.cleanup()

    def run_default_dirs(self, *args, config=FIXTURE):
        return subprocess.run([MASTER, '--master_config=' + config] + list(args), env=self.sb.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=30)

    def assertLines(self, got, expected):
        got_lines, exp_lines = got.split('\n'), expected.split('\n')
        for i, (g, e) in enumerate(zip(got_lines, exp_lines)):
            self.assertEqual(g, e, 'line %d differs' % (i + 1))
        self.assertEqual(len(got_lines), len(exp_lines), 'number of lines differs:\n' + got)

    def test_example_fixture_default_dirs(self):
        # The run-daemons.rst example enables kegbot_core, kegboard_daemon and sound_server.
        r = self.run_default_dirs('configtest')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLines(r.stdout, expected_configtest())
        self.assertEqual(r.stderr, '')

    def test_example_fixture_temp_dirs(self):
        r = self.sb.master('configtest', config=FIXTURE)
        self.assertEqual(r.returncode, 0, r.stderr)
        expected = expected_configtest() \
            .replace('/var/log/kegbot/', self.sb.log + '/').replace('/run/kegbot/', self.sb.run + '/')
        self.assertLines(r.stdout, expected)
        # configtest runs nothing
        self.assertEqual(os.listdir(self.sb.run), [])

    def test_rules(self):
        self.sb.write_config('''
[DEFAULT]
# the file's [DEFAULT] overrides the built-in one
log_to_file = False
common = %(__name__)s-common

[zeta]
_enabled = yes
_program_name = /opt/bin/zeta_prog.py
empty_flag =
Upper_Key = Value ; comment
quoted = 'a b'
b = 2
a = 1

[off]
_enabled = off
bad = %(nothing)s

[alpha]
_enabled = 1
_program_name = kegboard_daemon.py
_pidfile_dir = /elsewhere
kegboard_name = second_tap
''')
        r = self.sb.master('configtest')
        self.assertEqual(r.returncode, 0, r.stderr)
        run, log = self.sb.run, self.sb.log
        self.assertLines(r.stdout, '''# These are the commands that would be executed on start:

# zeta
/opt/bin/zeta_prog \\
    --a=1 \\
    --b=2 \\
    --common=zeta-common \\
    --daemon=True \\
    --empty_flag \\
    --log_to_file=False \\
    --log_to_stdout=False \\
    --logfile={log}/zeta.log \\
    --pidfile={run}/zeta.pid \\
    --quoted='a b' \\
    --upper_key=Value

# alpha
kegboard_daemon \\
    --common=alpha-common \\
    --daemon=True \\
    --kegboard_name=second_tap \\
    --log_to_file=False \\
    --log_to_stdout=False \\
    --logfile={log}/alpha.log \\
    --pidfile=/elsewhere/alpha.pid

'''.format(run=run, log=log))

    def test_no_apps(self):
        self.sb.write_config('[a]\nx = 1\n')
        r = self.sb.master('configtest')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, '# These are the commands that would be executed on start:\n\n')

    def test_missing_config_is_empty_with_warning(self):
        missing = os.path.join(self.sb.dir, 'nope.cfg')
        for cmd, out in (('configtest', '# These are the commands that would be executed on start:\n\n'),
                         ('status', 'Status:\n'), ('start', ''), ('stop', '')):
            r = self.sb.master(cmd, config=missing)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, out)
            self.assertIn(('WARNING', 'Config file %s not found, no apps configured.' % missing),
                          messages(r.stderr))

    def check_config_error(self, text, expected):
        self.sb.write_config(text)
        for cmd in ('configtest', 'start', 'status'):
            r = self.sb.master(cmd)
            self.assertEqual(r.returncode, 1, cmd)
            self.assertEqual(r.stdout, '')
            self.assertIn(('ERROR', expected.format(cfg=self.sb.config)), messages(r.stderr), r.stderr)

    def test_syntax_error_names_file_and_line(self):
        self.check_config_error('# comment\n[a]\n_enabled = True\nthis line is bad\n',
                                "{cfg}:4: expected 'key = value' or '[section]'")

    def test_key_before_section(self):
        self.check_config_error('\n\nkey = value\n', '{cfg}:3: key outside of any [section]')

    def test_bad_boolean(self):
        self.check_config_error('[a]\n_enabled = maybe\n', "{cfg}:2: [a] _enabled: not a boolean: 'maybe'")

    def test_interpolation_error_names_line(self):
        self.check_config_error('[a]\n_enabled = true\n\nlogfile = %(nope)s/x\n',
                                "{cfg}:4: [a] logfile: unknown interpolation name 'nope'")
        self.check_config_error('[a]\n_enabled = true\npct = 100%\n',
                                "{cfg}:3: [a] pct: '%' must be followed by '%' or '(', found: %")

    def test_usage(self):
        usage = 'Usage: %s <start|stop|restart|status|configtest>\n' % MASTER
        for args in (['bogus'], [], ['start', 'stop'], ['Start']):
            r = self.run_default_dirs(*args)
            self.assertEqual(r.returncode, 1, args)
            self.assertEqual(r.stdout, '')
            self.assertEqual(r.stderr, usage, args)

    def test_bad_flag(self):
        r = self.run_default_dirs('--no_such_flag=1', 'status')
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith('Usage: %s [flags]\n\nError: ' % MASTER), r.stderr)

    def test_help_lists_master_flags(self):
        r = self.run_default_dirs('--helpshort')
        self.assertEqual(r.returncode, 1)
        for flag in ('--master_config', '--logfile_dir', '--pidfile_dir'):
            self.assertIn(flag, r.stdout)
        self.assertTrue(re.search(r"\(default: '/run/kegbot'\)", r.stdout), r.stdout)


if __name__ == '__main__':
    kbtest.main()
