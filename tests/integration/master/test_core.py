#!/usr/bin/python3
"""kegbot_master starting the real kegbot_core (standalone: no --api_url), checking that it answers on
kegnet (a TCP connect succeeds), then stopping it."""
import os
import unittest

import kbtest
from master_util import BUILD_DIR, Sandbox, messages

CORE = os.path.join(BUILD_DIR, 'src', 'core', 'kegbot_core')


class CoreTest(unittest.TestCase):
    def setUp(self):
        self.sb = Sandbox()

    def tearDown(self):
        self.sb.cleanup()

    def test_start_core_through_master(self):
        port = kbtest.free_port()
        state = os.path.join(self.sb.dir, 'state')
        os.mkdir(state)
        # In the build tree kegbot_core is not beside kegbot_master: name it by path.
        self.sb.write_config('[kegbot_core]\n_enabled = True\n_program_name = %s\nstate_dir = %s\n'
                             'kb_core_bind_addr = 127.0.0.1:%d\ndbus = none\ntaps_file = %s\n'
                             % (CORE, state, port, os.path.join(self.sb.dir, 'taps.ini')))
        self.sb.env.pop('KEGBOT_API_URL', None)
        self.sb.env.pop('KEGBOT_API_KEY', None)
        self.sb.env.pop('NOTIFY_SOCKET', None)

        r = self.sb.master('start')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(('INFO', 'Started kegbot_core OK'), messages(r.stderr))
        pid = self.sb.pid_of('kegbot_core')
        self.assertIn('kegbot_core : running (%d)' % pid, self.sb.master('status').stdout)

        # The daemonized core answers on kegnet (connect retries until it listens).
        kbtest.KegnetConn.connect(port, timeout=10).close()

        r = self.sb.master('stop')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(('INFO', 'kegbot_core stopped.'), messages(r.stderr))
        self.assertIn('kegbot_core : stopped', self.sb.master('status').stdout)


if __name__ == '__main__':
    kbtest.main()
