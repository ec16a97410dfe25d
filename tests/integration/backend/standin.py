"""Start and steer the stand-in Kegbot Server (tests/standin/kegbot_server.py) from a test."""
import json
import os
import subprocess
import urllib.request

import kbtest

SERVER = os.path.join(kbtest.SOURCE_DIR, "tests", "standin", "kegbot_server.py")
API_KEY = "0123456789abcdef0123456789abcdef"


class StandIn:
    def __init__(self, profile="1.3", api_key=API_KEY, seed=None, default_seed=True, port=0):
        args = ["/usr/bin/python3", SERVER, "--profile", profile, "--api-key", api_key, "--port", str(port)]
        if not default_seed:
            args.append("--no-default-seed")
        if seed is not None:
            self._seed_file = os.path.join("/tmp", "standin-seed-%d.json" % os.getpid())
            with open(self._seed_file, "w") as f:
                json.dump(seed, f)
            args += ["--seed", self._seed_file]
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().split()
        if len(line) != 4 or line[0] != "PORT":
            raise RuntimeError("stand-in did not start: %r %s" % (line, self.p.stderr.read()))
        self.port = int(line[1])
        self.control_port = int(line[3])
        self.api_key = api_key

    def url(self, mount="/api/"):
        return "http://127.0.0.1:%d%s" % (self.port, mount)

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request("http://127.0.0.1:%d/_control/%s" % (self.control_port, path),
                                     data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def requests(self, endpoint=None):
        rs = self._call("GET", "requests")
        return [r for r in rs if endpoint is None or r.get("endpoint") == endpoint]

    def drinks(self):
        return self._call("GET", "drinks")

    def thermo(self):
        return self._call("GET", "thermo")

    def state(self):
        return self._call("GET", "state")

    def clear_log(self):
        self._call("POST", "clear-log")

    def fail(self, endpoint, mode, count=None, delay=None, message=None):
        self._call("POST", "fail", {"endpoint": endpoint, "mode": mode, "count": count, "delay": delay,
                                    "message": message})

    def clear_failures(self):
        self._call("POST", "clear-failures")

    def refuse(self):
        self._call("POST", "refuse")

    def accept(self):
        self._call("POST", "accept")

    def seed(self, **kw):
        self._call("POST", "seed", kw)

    def set(self, **kw):
        self._call("POST", "set", kw)

    def remove_tap(self, meter):
        self._call("POST", "remove-tap", {"meter": meter})

    def set_meter(self, meter, ticks_per_ml):
        self._call("POST", "set-meter", {"meter": meter, "ticks_per_ml": ticks_per_ml})

    def remove_keg(self, meter):
        self._call("POST", "remove-keg", {"meter": meter})

    def remove_user(self, username):
        self._call("POST", "remove-user", {"username": username})

    def revoke_key(self, key):
        self._call("POST", "revoke-key", {"key": key})

    def add_key(self, key, user="admin"):
        self._call("POST", "add-key", {"key": key, "user": user})

    def event_control(self, path, body=None):
        """A call of the Kegboard Event Protocol receiver's control API (/_control/event/<path>)."""
        return self._call("POST", "event/" + path, body or {})

    def event_control_get(self, path):
        return self._call("GET", "event/" + path)

    def event_control_fail(self, mode, count=None, delay=None, match=None):
        self._call("POST", "fail", {"endpoint": "event", "mode": mode, "count": count, "delay": delay,
                                    "match": match})

    def wait_drinks(self, n, timeout=10.0):
        return kbtest.wait_until(lambda: len(self.drinks()) >= n and self.drinks(), timeout=timeout,
                                 what="%d drinks at the stand-in" % n)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        for f in (self.p.stdout, self.p.stderr):
            f.close()
        if getattr(self, "_seed_file", None) and os.path.exists(self._seed_file):
            os.unlink(self._seed_file)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
