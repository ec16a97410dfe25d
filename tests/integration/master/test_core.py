#!/usr/bin/python3
"""kegbot_master starting the real kegbot_core (standalone: no --api_url), checking that it answers on
kegnet (a TCP connect succeeds), then stopping it. Skipped (exit 77) while kegbot_core is not built."""
import os
import socket
import subprocess
import sys
import time
import unittest

from master_util import BUILD_DIR, Sandbox, messages

CORE = os.path.join(BUILD_DIR, 'src', 'core', 'kegbot_core')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def core_flags():
    r = subprocess.run([CORE, '--help'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       universal_newlines=True, timeout=30)
    return r.stdout


class CoreTest(unittest.TestCase):
    def setUp(self):
        self.sb = Sandbox()

    def tearDown(self):
        self.sb.cleanup()

    def test_start_core_through_master(self):
        port = free_port()
        state = os.path.join(self.sb.dir, 'state')
        os.mkdir(state)
        extra = ''
        help_text = core_flags()
        if '--dbus' in help_text:
            extra += 'dbus = none\n'
        if '--taps_file' in help_text:
            extra += 'taps_file = %s\n' % os.path.join(self.sb.dir, 'taps.ini')
        # In the build tree kegbot_core is not beside kegbot_master: name it by path.
        self.sb.write_config('[kegbot_core]\n_enabled = True\n_program_name = %s\nstate_dir = %s\n'
                             'kb_core_bind_addr = 127.0.0.1:%d\n%s' % (CORE, state, port, extra))
        self.sb.env.pop('KEGBOT_API_URL', None)
        self.sb.env.pop('KEGBOT_API_KEY', None)
        self.sb.env.pop('NOTIFY_SOCKET', None)

        r = self.sb.master('start')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(('INFO', 'Started kegbot_core OK'), messages(r.stderr))
        pid = self.sb.pid_of('kegbot_core')
        self.assertIn('kegbot_core : running (%d)' % pid, self.sb.master('status').stdout)

        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

        r = self.sb.master('stop')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(('INFO', 'kegbot_core stopped.'), messages(r.stderr))
        self.assertIn('kegbot_core : stopped', self.sb.master('status').stdout)


if __name__ == '__main__':
    if not os.access(CORE, os.X_OK):
        print('kegbot_core is not built: skipping')
        sys.exit(77)
    unittest.main(verbosity=2)
