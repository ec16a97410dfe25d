"""Helpers for kegbot_master's integration tests: where the binary is, temp dirs, the test double."""
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.environ.get('KEGBOT_BUILD_DIR', '')
SOURCE_DIR = os.environ.get('KEGBOT_SOURCE_DIR', os.path.join(HERE, '..', '..', '..'))
MASTER = os.path.join(BUILD_DIR, 'src', 'master', 'kegbot_master')
FIXTURE = os.path.join(SOURCE_DIR, 'tests', 'fixtures', 'kegbot_master.cfg')
CONFIGTEST = os.path.join(SOURCE_DIR, 'tests', 'fixtures', 'kegbot_master.configtest')
FAKE_APP = os.path.join(HERE, 'fake_app.py')


class Sandbox:
    """A temp dir with run/, log/, bin/ (put ahead in PATH) and a config file."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='kegbot-master-test-')
        self.run = os.path.join(self.dir, 'run')
        self.log = os.path.join(self.dir, 'log')
        self.bin = os.path.join(self.dir, 'bin')
        for d in (self.run, self.log, self.bin):
            os.mkdir(d)
        self.config = os.path.join(self.dir, 'master.cfg')
        self.env = dict(os.environ)
        self.env['PATH'] = self.bin + ':' + os.environ.get('PATH', '/usr/bin:/bin')
        self.env.pop('VERBOSE', None)

    def write_config(self, text):
        with open(self.config, 'w') as f:
            f.write(text)

    def install_fake(self, name, directory=None):
        """The test double, installed as program 'name' (in bin/ unless told otherwise)."""
        path = os.path.join(directory or self.bin, name)
        shutil.copy(FAKE_APP, path)
        os.chmod(path, 0o755)
        return path

    def master(self, *args, config=None, binary=MASTER, timeout=60):
        cmd = [binary, '--master_config=' + (config or self.config),
               '--pidfile_dir=' + self.run, '--logfile_dir=' + self.log] + list(args)
        return subprocess.run(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=timeout)

    def pid_of(self, app):
        with open(os.path.join(self.run, app + '.pid')) as f:
            return int(f.readline())

    def cleanup(self):
        """Kill whatever a failed test left running, then remove the sandbox."""
        for name in os.listdir(self.run):
            if name.endswith('.pid'):
                try:
                    os.kill(self.pid_of(name[:-4]), 9)
                except (OSError, ValueError):
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)


def messages(stderr):
    """The message part of each log line ("<date> <time> LEVEL    (logger) message")."""
    out = []
    for line in stderr.splitlines():
        i = line.find(') ')
        if i >= 0 and line[:4].isdigit():
            out.append((line.split()[2], line[i + 2:]))
    return out
