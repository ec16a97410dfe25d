#!/usr/bin/python3
"""Test double for kegbot_master's integration tests: a stand-in for a Kegbot daemon.

It honours the flags kegbot_master passes the way the real programs do (programs-and-flags.md
section 3): --pidfile (refuse to start if the recorded pid is alive, write our pid, remove it at
exit) and --daemon=True (fork, setsid, fork; the original process exits once the background one
has written its pidfile). Extra flags drive the tests:
  --fail=N          print two lines on stdout/stderr and exit N before doing anything
  --ignore_term     ignore SIGTERM (so kegbot_master has to escalate to SIGKILL)
  --record=FILE     write {"argv": [...], "path": $PATH, "pid": n} as JSON to FILE
Unknown flags are accepted and ignored (like --undefok for everything).
"""
import json
import os
import signal
import sys


def parse(argv):
    flags = {}
    for a in argv:
        if not a.startswith('--'):
            print('Error: unexpected argument %r' % a, file=sys.stderr)
            sys.exit(1)
        k, sep, v = a[2:].partition('=')
        flags[k] = v if sep else True
    return flags


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except PermissionError:
        return True
    except ProcessLookupError:
        return False


def main():
    flags = parse(sys.argv[1:])
    if 'fail' in flags:
        print('fake_app: about to fail')
        sys.stdout.flush()
        print('Error: failing as asked (%s)' % flags['fail'], file=sys.stderr)
        sys.exit(int(flags['fail']))

    pidfile = flags.get('pidfile') or None
    if pidfile and os.path.exists(pidfile):
        try:
            with open(pidfile) as f:
                old = int(f.readline())
        except (OSError, ValueError):
            print('Could not read pid, abort.', file=sys.stderr)
            sys.exit(1)
        if alive(old):
            print('Old pid %d is still alive, aborting' % old, file=sys.stderr)
            sys.exit(1)

    daemon = str(flags.get('daemon', 'false')).lower() in ('true', 't', '1')
    if daemon:
        r, w = os.pipe()
        if os.fork() > 0:
            os.close(w)
            ok = os.read(r, 1)
            sys.exit(0 if ok == b'1' else 1)
        os.close(r)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        devnull = os.open('/dev/null', os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    else:
        w = None

    def cleanup(*_):
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
        os._exit(0)

    if flags.get('ignore_term'):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, cleanup)
    signal.signal(signal.SIGINT, cleanup)

    if pidfile:
        with open(pidfile + '.tmp', 'w') as f:
            f.write('%d\n' % os.getpid())
        os.rename(pidfile + '.tmp', pidfile)
    if flags.get('record'):
        with open(flags['record'], 'w') as f:
            json.dump({'argv': sys.argv, 'path': os.environ.get('PATH', ''), 'pid': os.getpid()}, f)
    if w is not None:
        os.write(w, b'1')
        os.close(w)
    while True:
        signal.pause()


if __name__ == '__main__':
    main()
