"""kegbot_core's kegnet server: inbound whitelist, frame limit, slow clients, many clients, broadcast
to everyone, systemd socket activation."""
import json
import shutil
import socket
import threading
import time
import unittest

import kbtest
from coretest import Core


class Drainer:
    """A kegnet client that reads everything as fast as it comes (in a thread), keeping the highest
    FlowUpdate tick count seen and counting the completed ones."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_ticks = -1
        self.completed = 0
        self.closed = False
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        buf = b""
        while not self._stop:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = not self._stop
                return
            buf += chunk
            frames = buf.split(b"\n\n")
            buf = frames.pop()
            for f in frames:
                if b'"FlowUpdate"' in f:
                    m = json.loads(f)
                    self.max_ticks = max(self.max_ticks, m["data"]["ticks"])
                    self.completed += m["data"]["state"] == "completed"

    def close(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._t.join(2)
        self.sock.close()


def meter(conn, reading, name="kegboard.flow0"):
    conn.send("MeterUpdate", meter_name=name, reading=reading)


class WhitelistTest(unittest.TestCase):
    def test_forged_and_unknown_events_are_ignored(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp, "--verbose")
            try:
                c = core.connect()
                c.send("QuitEvent")
                c.send("FlowUpdate", flow_id=1, meter_name="kegboard.flow0", state="completed", username=None,
                       start_time=None, last_activity_time=None, ticks=5000, volume_ml=None)
                c.send("DrinkCreatedEvent", flow_id=1, drink_id=3, meter_name="kegboard.flow0")
                c.send("SyncEvent")
                c.send_raw(b"this is not json\n\n")
                c.send_raw(b'{"event":"MeterUpdate"}\n\n')
                # pycore style input is fine: spaces and the legacy tap_name.
                c.send_raw(b'{"event": "MeterUpdate", "data": {"tap_name": "kegboard.flow0", "reading": 100}}\n\n')
                core.wait_line(r"DEBUG    \(kegnet\) Ignoring QuitEvent from 127\.0\.0\.1:\d+")
                core.wait_line(r"DEBUG    \(kegnet\) Ignoring FlowUpdate from")
                core.wait_line(r"WARNING  \(kegnet\) Dropping bad frame from")
                # Handled in order: by the baseline line, the forged events have been ignored.
                core.wait_line(r"first reading 100 is the baseline")
                self.assertEqual(core.drinks(), [])
                # The same connection still works after the bad frames.
                meter(c, 150)
                m, _ = c.recv_until(lambda m: m["event"] == "FlowUpdate")
                self.assertEqual(m["data"]["ticks"], 50)
                self.assertEqual(core.stop(), 0)
                self.assertEqual(core.drinks()[0]["ticks"], 50)
            finally:
                core.kill()


    def test_frames_that_are_not_utf8_are_dropped_naming_the_peer(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                c = core.connect()
                peer = c.sock.getsockname()[1]
                c.send_raw(b'{"event":"MeterUpdate","data":{"meter_name":"kegboard.flow\xe9","reading":100}}\n\n')
                core.wait_line(r"WARNING  \(kegnet\) Dropping bad frame from 127\.0\.0\.1:%d: invalid JSON: "
                               r"unable to decode byte 0xe9" % peer)
                # The connection still works (the sentinel proves the bad frame was processed first).
                meter(c, 0)
                meter(c, 50)
                m, _ = c.recv_until(lambda m: m["event"] == "FlowUpdate")
                self.assertEqual((m["data"]["meter_name"], m["data"]["ticks"]), ("kegboard.flow0", 50))
                self.assertEqual(core.stop(), 0)
                self.assertEqual([d["meter_name"] for d in core.drinks()], ["kegboard.flow0"])
                self.assertFalse([l for l in core.output("stderr") if "\ufffd" in l])
            finally:
                core.kill()

    def test_controller_registry(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                a = core.connect()
                b = core.connect()
                a.send("ControllerConnectedEvent", controller_name="kegboard-1a2b3c4d",
                       serial_number="KB-0000-0000-1A2B3C4D", firmware_version=18, uptime_ms=0, board_reset=True,
                       device="/dev/ttyACM0")
                core.wait_line(r"\(main\) Controller connected: kegboard-1a2b3c4d serial=KB-0000-0000-1A2B3C4D "
                               r"firmware_version=18 board_reset=yes")
                core.wait_line(r"Controller kegboard-1a2b3c4d was reset")
                # pycore senders: only controller_name.
                b.send("ControllerConnectedEvent", controller_name="kegboard-1a2b3c4d")
                core.wait_line(r"WARNING  \(main\) Controller kegboard-1a2b3c4d announced by two connections "
                               r"\(127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+\)")
                b.close()
                core.wait_line(r"\(main\) Controller disconnected: kegboard-1a2b3c4d$")
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


    def test_board_reset_applies_beyond_the_controller_limit(self):
        # One connection may bring 16 new controller names into the registry; a reset notice from
        # one more still re-baselines its meters (it is about ticks, not about the D-Bus registry).
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                c = core.connect()
                c.send_raw(b"".join(kbtest.kegnet_frame("ControllerConnectedEvent", controller_name="board%d" % i)
                                    for i in range(16)))
                meter(c, 500, "extra.flow0")
                c.send("ControllerConnectedEvent", controller_name="extra", board_reset=True)
                core.wait_line(r"WARNING  \(main\) 127\.0\.0\.1:\d+ brought 16 new controller names \(the limit "
                               r"per connection\); ignoring controller extra")
                meter(c, 600, "extra.flow0")
                m, _ = c.recv_until(lambda m: m["event"] == "FlowUpdate")
                self.assertEqual(m["data"]["ticks"], 600)
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


class LimitsTest(unittest.TestCase):
    def test_oversized_frame_closes_only_that_client(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                good = core.connect()
                bad = core.connect()
                meter(good, 0)
                chunk = b"x" * 65536
                sent = 0
                try:
                    while sent < 1024 * 1024:
                        bad.send_raw(chunk)
                        sent += len(chunk)
                except OSError:
                    pass
                self.assertTrue(bad.wait_closed(5), "the 1 MB client was not disconnected")
                core.wait_line(r"WARNING  \(kegnet\) Frame from 127\.0\.0\.1:\d+ exceeds 65536 bytes")
                # A pour (45 mL: the ghost filter takes it at once), not a trickle it would hold back.
                meter(good, 100)
                m, _ = good.recv_until(lambda m: m["event"] == "FlowUpdate")
                self.assertEqual(m["data"]["ticks"], 100)
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()

    def test_slow_client_dropped_others_keep_receiving(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                slow = socket.socket()
                slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                slow.connect(("127.0.0.1", core.port))
                fast = Drainer(core.port)
                producer = Drainer(core.port)
                kbtest.wait_until(lambda: len(core.stderr_lines(r"Remote host connected")) == 3, what="3 clients")
                # 20,000 flows started and stopped: 40,000 FlowUpdates of ~250 bytes (state changes,
                # never coalesced), MiBs for a client that never reads.
                batch = []
                for i in range(20000):
                    batch.append(kbtest.kegnet_frame("FlowRequest", meter_name="kegboard.flow0", request="start_flow"))
                    batch.append(kbtest.kegnet_frame("FlowRequest", meter_name="kegboard.flow0", request="stop_flow"))
                    if len(batch) == 500:
                        producer.sock.sendall(b"".join(batch))
                        batch = []
                if batch:
                    producer.sock.sendall(b"".join(batch))
                core.wait_line(r"WARNING  \(kegnet\) Dropping slow client 127\.0\.0\.1:%d" % slow.getsockname()[1],
                               timeout=20)
                kbtest.wait_until(lambda: fast.completed == 20000, timeout=20, what="the last FlowUpdate")
                self.assertFalse(fast.closed)
                self.assertFalse(producer.closed)
                fast.close()
                producer.close()
                slow.close()
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()

    def test_many_clients_and_broadcast(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                conns = [core.connect() for _ in range(40)]
                core.wait_line(r"Remote host connected", timeout=5)
                kbtest.wait_until(lambda: len(core.stderr_lines(r"Remote host connected")) == 40, what="40 clients")
                # Pours large enough for the ghost filter to take them at once (23 mL, then 32 mL more).
                meter(conns[0], 0)
                meter(conns[0], 50)
                for c in conns:
                    m, _ = c.recv_until(lambda m: m["event"] == "FlowUpdate")
                    self.assertEqual(m["data"]["ticks"], 50)
                # (What happens past the 64 slots: test_core_hostile.py, SlotsTest.)
                for c in conns:
                    c.close()
                core.wait_line(r"Remote host closed: 127\.0\.0\.1:\d+")
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


class SubscriptionTest(unittest.TestCase):
    """kegnet roles and subscriptions (README): a client's Hello names the broadcasts it wants; a
    client that says nothing (pycore's, or an older one) gets every one; FlowUpdates to listeners are
    coalesced per flow."""

    def test_producers_get_only_what_they_ask_for(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp)
            try:
                listener = core.connect()
                self.assertEqual(listener.hello("listener", "lcd_daemon")["role"], "listener")
                pycore = core.connect()             # no Hello: every broadcast, as in pycore 1.0
                reader = core.connect()             # rfid_daemon: nothing
                self.assertEqual(reader.hello("producer", "rfid_daemon", session="r-1", seq=1, events=[])["role"],
                                 "producer")
                board = core.connect()              # kegboard_daemon: relay commands only
                self.assertEqual(board.hello("producer", "kegboard_daemon", session="b-1", seq=1,
                                             events=["SetRelayOutputEvent", "SomethingLater"])["role"], "producer")
                for frame in range(1, 4):
                    board.send("MeterUpdate", meter_name="kegboard.flow0", reading=[0, 40, 80][frame - 1])
                board.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
                reader.send("FlowRequest", meter_name="kegboard.flow1", request="start_flow")
                reader.send("FlowRequest", meter_name="kegboard.flow1", request="stop_flow")
                for c in (listener, pycore):
                    done = set()

                    def both_completed(m):
                        if m["event"] == "FlowUpdate" and m["data"]["state"] == "completed":
                            done.add(m["data"]["meter_name"])
                        return done == {"kegboard.flow0", "kegboard.flow1"}
                    c.recv_until(both_completed, timeout=10, what="both flows completed")
                # The sentinel: each producer's last frame acknowledged (the Ack follows whatever
                # its handling broadcast); nothing but Acks reached them.
                _, seen = board.recv_until(lambda m: m["event"] == "Ack" and m["data"]["acked"] == 4, timeout=10)
                self.assertEqual({m["event"] for m in seen}, {"Ack"})
                _, seen = reader.recv_until(lambda m: m["event"] == "Ack" and m["data"]["acked"] == 2, timeout=10)
                self.assertEqual({m["event"] for m in seen}, {"Ack"})
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()

    def test_flow_updates_are_coalesced_per_flow(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp, "--ghost_filter=off")
            try:
                listener = core.connect()
                self.assertEqual(listener.hello("listener", "lcd_daemon")["role"], "listener")
                producer = core.connect()
                producer.hello("producer", "test", session="c-1", seq=1, events=[])
                producer.send("MeterUpdate", meter_name="kegboard.flow0", reading=0)
                # A reading every 5 ms for a second: 200 readings, 400 ticks.
                start = time.monotonic()
                for i in range(1, 201):
                    due = start + i * 0.005
                    if due > time.monotonic():
                        time.sleep(due - time.monotonic())
                    producer.send("MeterUpdate", meter_name="kegboard.flow0", reading=2 * i)
                pour_seconds = time.monotonic() - start
                # Nothing more is sent: the last count still arrives, held back at most 150 ms.
                _, seen = listener.recv_until(lambda m: m["event"] == "FlowUpdate" and m["data"]["ticks"] == 400,
                                              timeout=5, what="the final count")
                updates = [m["data"] for m in seen if m["event"] == "FlowUpdate"]
                self.assertEqual({u["state"] for u in updates}, {"active"})
                ticks = [u["ticks"] for u in updates]
                self.assertEqual(ticks, sorted(ticks))
                self.assertEqual(len(set(u["flow_id"] for u in updates)), 1)
                # At most one per 100 ms (plus the first, at once), and still a running count.
                self.assertLessEqual(len(updates), int(pour_seconds / 0.1) + 2, ticks)
                self.assertGreaterEqual(len(updates), 4, ticks)
                # The end goes out exactly, at once.
                producer.send("FlowRequest", meter_name="kegboard.flow0", request="stop_flow")
                m, _ = listener.recv_until(lambda m: m["event"] == "FlowUpdate", timeout=5)
                self.assertEqual((m["data"]["state"], m["data"]["ticks"]), ("completed", 400))
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


    def test_acks_are_coalesced(self):
        with kbtest.TempDir() as tmp:
            core = Core(tmp, "--ghost_filter=off")
            try:
                producer = core.connect()
                producer.hello("producer", "kegboard_daemon", session="a-1", seq=1, events=[])
                # A reading every 5 ms for half a second: 100 frames.
                start = time.monotonic()
                for i in range(100):
                    due = start + i * 0.005
                    if due > time.monotonic():
                        time.sleep(due - time.monotonic())
                    producer.send("MeterUpdate", meter_name="kegboard.flow0", reading=i)
                seconds = time.monotonic() - start
                # Every frame is acknowledged in the end (without further input) ...
                _, seen = producer.recv_until(lambda m: m["event"] == "Ack" and m["data"]["acked"] == 100,
                                              timeout=5, what="the Ack of the last frame")
                acks = [m["data"]["acked"] for m in seen]
                self.assertEqual(acks, sorted(acks))
                # ... by at most one Ack per 100 ms (and the first at once), not one per frame.
                self.assertLessEqual(len(acks), int(seconds / 0.1) + 2, acks)
                self.assertEqual(core.stop(), 0)
            finally:
                core.kill()


class SocketActivationTest(unittest.TestCase):
    def test_first_connection_starts_the_core(self):
        sa = shutil.which("systemd-socket-activate")
        if not sa:
            raise unittest.SkipTest("systemd-socket-activate is not installed")
        with kbtest.TempDir() as tmp:
            port = kbtest.free_port()
            core = Core(tmp, port=port, wait=False,
                        prefix=[sa, "-l", "127.0.0.1:%d" % port])
            try:
                core.wait_line(r"Listening on 127\.0\.0\.1:%d" % port, timeout=5)
                c = kbtest.KegnetConn.connect(port)
                meter(c, 7)
                meter(c, 117)
                m, _ = c.recv_until(lambda m: m["event"] == "FlowUpdate", timeout=10)
                self.assertEqual(m["data"]["ticks"], 110)
                core.wait_line(r"\(kegnet\) Using the socket passed by systemd; --kb_core_bind_addr=127\.0\.0\.1:%d is ignored" % port)
                core.wait_line(r"\(kegnet\) Starting server on 127\.0\.0\.1:%d" % port)
                core.wait_line(r"Remote host connected")
                self.assertEqual(core.stop(), 0)
                self.assertEqual(core.drinks()[0]["ticks"], 110)
            finally:
                core.kill()


if __name__ == "__main__":
    kbtest.main()
