/* Tests of the reconnecting kegnet client against real loopback sockets on an sd-event loop:
 * connect and receive, backoff and reconnect spacing, the producer outbox rules, a server that
 * never reads, graceful finish, a producer's drain at its stop, and one-shot failure; the handshake
 * (a core that closes or refuses a fresh connection, or never welcomes it, or does not accept
 * producers), acknowledgements and what is sent again after a lost connection; the Unix socket.
 * The test's server plays the core's side of the handshake (Welcome, Acks, the session's count).
 * Timings run at 1 nominal second = 20 ms. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kegnet-client.h"
#include "kegnet.h"
#include "macro.h"
#include "test-util.h"

#define UNIT (20 * USEC_PER_MSEC)
#define MSEC(x) ((uint64_t) (x) * USEC_PER_MSEC)

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Runs the loop until nothing is pending (every event already due has been dispatched, deferred
 * work included); false if it is still busy after 1000 iterations. */
static bool run_idle(sd_event *e) {
        for (unsigned i = 0; i < 1000; i++)
                if (sd_event_run(e, 0) == 0)
                        return true;
        return false;
}

/* Runs the loop until cond holds or the timeout passes; evaluates to cond. */
#define RUN_UNTIL(e, cond, timeout_ms)                                                  \
        ({                                                                              \
                uint64_t _end = now_usec() + MSEC(timeout_ms);                          \
                bool _ok;                                                               \
                while (!(_ok = (cond)) && now_usec() < _end)                            \
                        (void) sd_event_run((e), 2000);                                 \
                _ok;                                                                    \
        })

typedef struct Test {
        sd_event *event;
        KegnetClient *client;
        int lfd, sfd;
        uint16_t port;
        KegnetSplitter sp;
        char *frames[1024];
        size_t n_frames;
        bool server_eof;

        unsigned connected, disconnected, connect_failed, flushed;
        unsigned flushed_at_disconnect;         /* 'flushed' count when 'disconnected' came */
        int last_error;
        uint64_t t_connected[16], t_failed[16], t_disconnected[16];
        KegnetKind kinds[64];
        size_t n_messages;
        char *first_flow_meter;

        /* what the connected callback does */
        bool announce;
        bool announce_reset_seen;

        /* The core's side of the handshake. */
        bool no_welcome;                /* never answer a Hello */
        bool no_ack;                    /* Welcome without acknowledgements, no Acks */
        bool manual_ack;                /* Acks only through server_ack() */
        const char *refuse_producer;    /* answer a producer's Hello with role listener and this reason */
        unsigned hellos;
        KegnetRole hello_role;
        uint64_t hello_seq;
        bool sessioned;                 /* this connection's frames are numbered */
        uint64_t handled;               /* frames of the session handled (the core's count) */
        uint64_t acked_sent;
} Test;

static int listener_new(uint16_t *ret_port, int rcvbuf) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof sa;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (rcvbuf > 0)
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 ||
            getsockname(fd, (struct sockaddr *) &sa, &l) < 0) {
                close(fd);
                return -errno;
        }
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

static bool server_read(Test *t, size_t n);

/* Accepts a connection if there is none, then reads what it sent (answering a Hello). */
static bool server_accept(Test *t) {
        if (t->sfd < 0) {
                t->sfd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (t->sfd < 0)
                        return false;
                kegnet_splitter_done(&t->sp);
                t->server_eof = false;
                t->sessioned = false;
                t->acked_sent = 0;
        }
        (void) server_read(t, 0);
        return true;
}

static void server_close(Test *t) {
        t->sfd = safe_close(t->sfd);
}

/* Bytes the server sent that the client has not read yet. */
static int client_unread(int cfd) {
        int n = -1;

        if (ioctl(cfd, FIONREAD, &n) < 0)
                return -errno;
        return n;
}

/* The client's end of the accepted connection: the socket of this process whose address is the
 * server side's peer (the client does not hand out its fd). */
static int client_fd(const Test *t) {
        struct sockaddr_in peer, a;
        socklen_t l = sizeof peer;

        if (getpeername(t->sfd, (struct sockaddr *) &peer, &l) < 0)
                return -errno;
        for (int fd = 3; fd < 1024; fd++) {
                l = sizeof a;
                if (fd != t->sfd && getsockname(fd, (struct sockaddr *) &a, &l) == 0 && l == sizeof a &&
                    a.sin_family == AF_INET && a.sin_port == peer.sin_port && a.sin_addr.s_addr == peer.sin_addr.s_addr)
                        return fd;
        }
        return -ENOENT;
}

/* Reads whatever the client wrote; returns true when at least n frames have arrived in total. */
static void server_send(Test *t, const KegnetMessage *m) {
        char *s = NULL;
        size_t n;

        check(kegnet_message_encode(m, &s, &n) == 0);
        if (s)
                check(write(t->sfd, s, n) == (ssize_t) n);
        free(s);
}

static void server_welcome(Test *t, const KegnetHello *h) {
        KegnetMessage w = { .kind = KEGNET_WELCOME, .welcome = { .role = KEGNET_ROLE_LISTENER } };

        t->hellos++;
        t->hello_role = h->role;
        t->hello_seq = h->seq;
        if (t->no_welcome)
                return;
        if (h->role == KEGNET_ROLE_PRODUCER && t->refuse_producer)
                w.welcome.reason = t->refuse_producer;
        else if (h->role == KEGNET_ROLE_PRODUCER) {
                w.welcome.role = KEGNET_ROLE_PRODUCER;
                if (!t->no_ack && h->session && h->has_seq) {
                        if (h->seq > 0 && h->seq - 1 > t->handled)
                                t->handled = h->seq - 1;
                        t->sessioned = true;
                        t->acked_sent = t->handled;
                        w.welcome.has_acked = true;
                        w.welcome.acked = t->handled;
                }
        }
        server_send(t, &w);
}

/* What the core does after a batch: acknowledge what it handled. */
static void server_ack(Test *t) {
        if (!t->sessioned || t->sfd < 0 || t->handled <= t->acked_sent)
                return;
        t->acked_sent = t->handled;
        server_send(t, &(KegnetMessage) { .kind = KEGNET_ACK, .ack.acked = t->handled });
}

/* Reads whatever the client wrote (answering a Hello, acknowledging the rest unless manual_ack);
 * returns true when at least n frames (Hello not counted) have arrived in total. */
static bool server_read(Test *t, size_t n) {
        char buf[65536];
        const char *f;
        size_t l;

        if (t->sfd < 0)
                return t->n_frames >= n;
        for (;;) {
                ssize_t k = read(t->sfd, buf, sizeof buf);
                if (k == 0)
                        t->server_eof = true;
                if (k <= 0)
                        break;
                check(kegnet_splitter_feed(&t->sp, buf, (size_t) k) == 0);
                while (kegnet_splitter_next(&t->sp, &f, &l) > 0) {
                        KegnetMessage m;
                        if (kegnet_message_parse(f, l, &m, NULL) == 0 && m.kind == KEGNET_HELLO) {
                                server_welcome(t, &m.hello);
                                kegnet_message_done(&m);
                                continue;
                        }
                        kegnet_message_done(&m);
                        if (t->sessioned)
                                t->handled++;
                        if (t->n_frames < ELEMENTSOF(t->frames))
                                t->frames[t->n_frames++] = strndup(f, l);
                }
        }
        if (!t->manual_ack)
                server_ack(t);
        return t->n_frames >= n;
}

static void server_frames_clear(Test *t) {
        for (size_t i = 0; i < t->n_frames; i++)
                free(t->frames[i]);
        t->n_frames = 0;
}

static void server_write(Test *t, const char *s) {
        size_t n = strlen(s);
        check(write(t->sfd, s, n) == (ssize_t) n);
}

static char *encode(const KegnetMessage *m) {
        char *s = NULL;
        size_t n;
        if (kegnet_message_encode(m, &s, &n) < 0)
                return NULL;
        s[n - 2] = 0;
        return s;
}

static void check_frame(Test *t, size_t i, KegnetMessage m) {
        char *want = encode(&m);
        check(want);
        check(i < t->n_frames);
        if (want && i < t->n_frames && !streq(t->frames[i], want)) {
                fprintf(stderr, "frame %zu: got %s\n          want %s\n", i, t->frames[i], want);
                failures++;
        }
        free(want);
}

static KegnetMessage mu(const char *meter, uint32_t reading) {
        return (KegnetMessage) { .kind = KEGNET_METER_UPDATE, .meter_update = { .meter_name = meter, .reading = reading } };
}

static KegnetMessage token(const char *value, KegnetTokenStatus st) {
        return (KegnetMessage) { .kind = KEGNET_TOKEN_AUTH_EVENT,
                                 .token_auth_event = { .meter_name = KEGNET_ALL_TAPS, .auth_device_name = "core.rfid",
                                                       .token_value = value, .status = st } };
}

static KegnetMessage cce(bool reset) {
        return (KegnetMessage) { .kind = KEGNET_CONTROLLER_CONNECTED_EVENT,
                                 .controller_connected_event = { .controller_name = "kegboard", .board_reset = reset } };
}

static void on_connected(KegnetClient *c, void *userdata) {
        Test *t = userdata;
        if (t->connected < ELEMENTSOF(t->t_connected))
                t->t_connected[t->connected] = now_usec();
        t->connected++;
        if (t->announce) {
                /* What a board-owning producer does (§6.2): announce, repeating the reset only if the
                 * outbox does not already carry it. */
                t->announce_reset_seen = kegnet_client_reset_pending(c, "kegboard");
                KegnetMessage m = cce(false);
                check(kegnet_client_send(c, &m) == 0);
        }
}

static void on_disconnected(KegnetClient *c, int error, void *userdata) {
        Test *t = userdata;
        if (t->disconnected < ELEMENTSOF(t->t_disconnected))
                t->t_disconnected[t->disconnected] = now_usec();
        t->disconnected++;
        t->flushed_at_disconnect = t->flushed;
        t->last_error = error;
        check(!kegnet_client_is_connected(c));
}

static void on_connect_failed(KegnetClient *c, int error, void *userdata) {
        Test *t = userdata;
        if (t->connect_failed < ELEMENTSOF(t->t_failed))
                t->t_failed[t->connect_failed] = now_usec();
        t->connect_failed++;
        t->last_error = error;
}

static void on_message(KegnetClient *c, const KegnetMessage *m, void *userdata) {
        Test *t = userdata;
        if (t->n_messages < ELEMENTSOF(t->kinds))
                t->kinds[t->n_messages] = m->kind;
        t->n_messages++;
        if (m->kind == KEGNET_FLOW_UPDATE && !t->first_flow_meter)
                t->first_flow_meter = strdup(m->flow_update.meter_name);
}

static void on_flushed(KegnetClient *c, void *userdata) {
        Test *t = userdata;
        t->flushed++;
        check(kegnet_client_is_flushed(c));
}

static const KegnetClientCallbacks callbacks = {
        .connected = on_connected,
        .disconnected = on_disconnected,
        .connect_failed = on_connect_failed,
        .message = on_message,
        .flushed = on_flushed,
};

static void test_setup(Test *t, bool listening, int rcvbuf) {
        char addr[32];

        *t = (Test) { .lfd = -1, .sfd = -1 };
        check(sd_event_new(&t->event) >= 0);
        t->lfd = listener_new(&t->port, rcvbuf);
        check(t->lfd >= 0);
        if (listening)
                check(listen(t->lfd, 16) == 0);
        snprintf(addr, sizeof addr, "127.0.0.1:%u", t->port);
        check(kegnet_client_new(&t->client, t->event, addr, &callbacks, t) == 0);
        if (t->client)
                kegnet_client_set_timing(t->client, UNIT, MSEC(1000));
}

static void test_teardown(Test *t) {
        t->client = kegnet_client_free(t->client);
        server_close(t);
        t->lfd = safe_close(t->lfd);
        server_frames_clear(t);
        kegnet_splitter_done(&t->sp);
        free(t->first_flow_meter);
        t->event = sd_event_unref(t->event);
}

static void test_address(void) {
        sd_event *e = NULL;
        KegnetClient *c = NULL;

        check(sd_event_new(&e) >= 0);
        static const char *const bad[] = { "", "host:", "0", "127.0.0.1:0", "[::1]:0", "a:b:9805", "x:99999",
                                           "unix:", "unix:relative/path" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                check(kegnet_client_new(&c, e, bad[i], &callbacks, NULL) == -EINVAL);
                check(c == NULL);
        }

        check(kegnet_client_new(&c, e, "9805", NULL, NULL) == 0);
        check(c && streq(kegnet_client_address(c), "127.0.0.1:9805"));
        c = kegnet_client_free(c);
        check(kegnet_client_new(&c, e, "[::1]:9806", NULL, NULL) == 0);
        check(c && streq(kegnet_client_address(c), "[::1]:9806"));
        c = kegnet_client_free(c);
        check(kegnet_client_new(&c, e, "localhost:9807", NULL, NULL) == 0);
        check(c && streq(kegnet_client_address(c), "localhost:9807"));
        c = kegnet_client_free(c);
        check(kegnet_client_new(&c, e, "unix:/run/kegbot/kegnet.sock", NULL, NULL) == 0);
        check(c && streq(kegnet_client_address(c), "unix:/run/kegbot/kegnet.sock"));
        c = kegnet_client_free(c);
        check(kegnet_client_free(NULL) == NULL);
        sd_event_unref(e);
}

static void test_connect_and_receive(void) {
        Test t;
        test_setup(&t, true, 0);
        KegnetClient *c = t.client;

        check(!kegnet_client_is_connected(c));
        check(kegnet_client_start(c) == 0);
        check(kegnet_client_start(c) == -EALREADY);
        check(RUN_UNTIL(t.event, server_accept(&t) && t.connected == 1, 2000));
        check(kegnet_client_is_connected(c));
        check(t.connect_failed == 0);

        /* Not a producer: sends work while connected only. */
        KegnetMessage m = mu("kegboard.flow0", 42);
        check(kegnet_client_send(c, &m) == 0);
        KegnetMessage bad = { .kind = KEGNET_UNKNOWN };
        check(kegnet_client_send(c, &bad) == -EINVAL);
        /* Written at once (the queue was empty); the 'flushed' callback still comes from the loop. */
        check(t.flushed == 0);
        check(RUN_UNTIL(t.event, server_read(&t, 1) && t.flushed == 1, 2000));
        check_frame(&t, 0, m);
        check(kegnet_client_is_flushed(c));
        check(kegnet_client_send_queue_bytes(c) == 0);

        /* Incoming: good frames among unknown, malformed, blank ones, in awkward chunks. Half a
         * frame, read by the client (nothing left unread), delivers nothing. */
        int cfd = client_fd(&t);
        check(cfd >= 0);
        server_write(&t, "{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":1,\"meter_name\":\"kegboard.fl");
        struct pollfd pfd = { .fd = cfd, .events = POLLIN };
        check(poll(&pfd, 1, 2000) == 1);
        check(RUN_UNTIL(t.event, client_unread(cfd) == 0, 2000));
        check(run_idle(t.event));
        check(t.n_messages == 0);
        server_write(&t, "ow0\",\"state\":\"active\",\"username\":null,\"start_time\":\"2026-11-26T12:00:00Z\","
                         "\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":0,\"volume_ml\":null}}\n");
        server_write(&t, "\n\n\n{\"event\":\"HeartbeatSecondEvent\",\"data\":{}}\n\n{not json}\n\n{\"event\":\"SetRelayOutputEvent\"}\n\n");
        server_write(&t, "{\"event\":\"SetRelayOutputEvent\",\"data\":{\"output_name\":\"kegboard.relay0\",\"output_mode\":\"enabled\"}}\n\n");
        server_write(&t, "{\"event\": \"MeterUpdate\", \"data\": {\"tap_name\": \"kegboard.flow0\", \"reading\": 100}}\n\n");
        check(RUN_UNTIL(t.event, t.n_messages >= 3, 2000));
        check(t.n_messages == 3);
        check(t.kinds[0] == KEGNET_FLOW_UPDATE);
        check(t.kinds[1] == KEGNET_SET_RELAY_OUTPUT_EVENT);
        check(t.kinds[2] == KEGNET_METER_UPDATE);
        check(t.first_flow_meter && streq(t.first_flow_meter, "kegboard.flow0"));
        check(kegnet_client_is_connected(c));
        check(t.disconnected == 0);

        /* Over 64 KiB without a terminator: the client hangs up and comes back. */
        char *big = malloc(KEGNET_MAX_FRAME + 10);
        memset(big, 'x', KEGNET_MAX_FRAME + 9);
        big[KEGNET_MAX_FRAME + 9] = 0;
        server_write(&t, big);
        free(big);
        check(RUN_UNTIL(t.event, t.disconnected == 1, 2000));
        check(t.last_error == -EMSGSIZE);
        server_close(&t);
        /* Not a producer: nothing is kept while disconnected. */
        check(kegnet_client_send(c, &m) == -ENOTCONN);
        check(RUN_UNTIL(t.event, server_accept(&t) && t.connected == 2, 2000));
        check(t.n_messages == 3);
        test_teardown(&t);
}

static bool within(uint64_t got, uint64_t want, uint64_t slack) {
        /* The client schedules from the loop's iteration time, a little before our callback runs. */
        if (got + MSEC(10) < want || got > want + slack) {
                fprintf(stderr, "interval %llu us, expected %llu us\n", (unsigned long long) got, (unsigned long long) want);
                return false;
        }
        return true;
}

static void test_backoff_and_spacing(void) {
        Test t;
        test_setup(&t, false, 0);      /* bound but not listening: connections are refused */

        check(kegnet_client_start(t.client) == 0);
        /* First attempt at once, then 5, 5, 10, 10, 20 (x 20 ms). */
        check(RUN_UNTIL(t.event, t.connect_failed >= 5, 3000));
        check(t.last_error == -ECONNREFUSED);
        check(t.connected == 0);
        static const unsigned expect[] = { 5, 5, 10, 10 };
        for (size_t i = 0; i < ELEMENTSOF(expect); i++)
                check(within(t.t_failed[i + 1] - t.t_failed[i], expect[i] * UNIT, MSEC(80)));

        /* The core comes up: the next attempt (20 units after the 5th failure) connects. */
        check(listen(t.lfd, 16) == 0);
        check(RUN_UNTIL(t.event, server_accept(&t) && t.connected == 1, 3000));
        check(within(t.t_connected[0] - t.t_failed[4], 20 * UNIT, MSEC(80)));
        check(t.connect_failed == 5);

        /* Dropped right after connecting: the next attempt waits for the 5 unit minimum spacing. */
        server_close(&t);
        check(RUN_UNTIL(t.event, t.disconnected == 1, 2000));
        check(t.last_error == 0);
        check(RUN_UNTIL(t.event, server_accept(&t) && t.connected == 2, 2000));
        check(within(t.t_connected[1] - t.t_connected[0], 5 * UNIT, MSEC(80)));

        /* Dropped after a long connection: immediate reconnect. (The pause is the scenario: the
         * connection must outlive the 5 unit spacing.) */
        check(RUN_UNTIL(t.event, false, 150) == false);
        server_close(&t);
        check(RUN_UNTIL(t.event, t.disconnected == 2, 2000));
        check(RUN_UNTIL(t.event, server_accept(&t) && t.connected == 3, 2000));
        check(within(t.t_connected[2] - t.t_disconnected[1], 0, MSEC(60)));

        /* A successful connect reset the failure count: after the core goes away the schedule
         * starts again at 5 units. */
        t.lfd = safe_close(t.lfd);
        server_close(&t);
        check(RUN_UNTIL(t.event, t.connect_failed >= 7, 3000));
        check(within(t.t_failed[6] - t.t_failed[5], 5 * UNIT, MSEC(80)));
        test_teardown(&t);
}

static void test_outbox_order(void) {
        Test t;
        test_setup(&t, true, 0);
        KegnetClient *c = t.client;
        KegnetMessage m;

        kegnet_client_set_producer(c, true);
        t.announce = true;
        check(kegnet_client_start(c) == 0);
        check(RUN_UNTIL(t.event, server_accept(&t) && server_read(&t, 1), 2000));
        check(!t.announce_reset_seen);
        check_frame(&t, 0, cce(false));
        server_frames_clear(&t);

        server_close(&t);
        check(RUN_UNTIL(t.event, t.disconnected == 1, 2000));
        check(!kegnet_client_is_connected(c));

        /* While down (no loop iteration runs in between). */
        m = mu("kegboard.flow0", 1);            check(kegnet_client_send(c, &m) == 0);
        m = mu("kegboard.flow1", 4);            check(kegnet_client_send(c, &m) == 0);
        m = token("aa", KEGNET_TOKEN_ADDED);    check(kegnet_client_send(c, &m) == 0);
        m = mu("kegboard.flow0", 2);            check(kegnet_client_send(c, &m) == 0);   /* replaces 1 in place */
        m = mu("kegboard.flow1", 5);            check(kegnet_client_send(c, &m) == 0);   /* replaces 4 in place */
        check(kegnet_client_outbox_size(c) == 3);
        check(!kegnet_client_reset_pending(c, "kegboard"));
        m = cce(true);                          check(kegnet_client_send(c, &m) == 0);
        check(kegnet_client_reset_pending(c, "kegboard"));
        check(!kegnet_client_reset_pending(c, "other"));
        m = mu("kegboard.flow0", 0);            check(kegnet_client_send(c, &m) == 0);   /* after the reset */
        m = mu("kegboard.flow0", 3);            check(kegnet_client_send(c, &m) == 0);   /* replaces 0 */
        m = (KegnetMessage) { .kind = KEGNET_THERMO_EVENT, .thermo_event = { .sensor_name = "kegboard.t", .sensor_value = 4.5 } };
        check(kegnet_client_send(c, &m) == 0);                                          /* not queued */
        m = (KegnetMessage) { .kind = KEGNET_FLOW_REQUEST, .flow_request = { .meter_name = "kegboard.flow0" } };
        check(kegnet_client_send(c, &m) == 0);                                          /* not queued */
        m = cce(false);                         check(kegnet_client_send(c, &m) == 0);   /* not queued */
        m = token("aa", KEGNET_TOKEN_REMOVED);  check(kegnet_client_send(c, &m) == 0);
        m = mu("kegboard.flow1", 6);            check(kegnet_client_send(c, &m) == 0);   /* after the reset too */
        m = mu("kegboard.flow1", 7);            check(kegnet_client_send(c, &m) == 0);   /* replaces 6 */
        check(kegnet_client_outbox_size(c) == 7);
        check(!kegnet_client_is_flushed(c));

        check(RUN_UNTIL(t.event, server_accept(&t) && server_read(&t, 8), 2000));
        check(t.connected == 2);
        check(t.announce_reset_seen);   /* so the announcement went out with board_reset false */
        check(t.n_frames == 8);
        check_frame(&t, 0, cce(false));
        check_frame(&t, 1, mu("kegboard.flow0", 2));
        check_frame(&t, 2, mu("kegboard.flow1", 5));
        check_frame(&t, 3, token("aa", KEGNET_TOKEN_ADDED));
        check_frame(&t, 4, cce(true));
        check_frame(&t, 5, mu("kegboard.flow0", 3));
        check_frame(&t, 6, token("aa", KEGNET_TOKEN_REMOVED));
        check_frame(&t, 7, mu("kegboard.flow1", 7));
        check(kegnet_client_outbox_size(c) == 0);
        check(RUN_UNTIL(t.event, kegnet_client_is_flushed(c), 1000));
        check(!kegnet_client_reset_pending(c, "kegboard"));
        test_teardown(&t);
}

static void test_outbox_limit(void) {
        Test t;
        test_setup(&t, false, 0);
        KegnetClient *c = t.client;
        char name[64];
        KegnetMessage m;

        kegnet_client_set_producer(c, true);
        /* Not started yet: a producer queues from the beginning. */
        for (int i = 0; i < 10; i++) {
                snprintf(name, sizeof name, "t%d", i);
                m = token(name, KEGNET_TOKEN_ADDED);
                check(kegnet_client_send(c, &m) == 0);
        }
        for (int i = 0; i < 250; i++) {
                snprintf(name, sizeof name, "kegboard.m%d", i);
                m = mu(name, (uint32_t) i);
                check(kegnet_client_send(c, &m) == 0);
        }
        check(kegnet_client_outbox_size(c) == KEGNET_CLIENT_OUTBOX_MAX);    /* t0..t3 dropped */
        for (int i = 250; i < 260; i++) {
                snprintf(name, sizeof name, "kegboard.m%d", i);
                m = mu(name, (uint32_t) i);
                check(kegnet_client_send(c, &m) == 0);
        }
        /* t4..t9 dropped first, then the oldest entries m0..m3. Replacing in place never drops. */
        check(kegnet_client_outbox_size(c) == KEGNET_CLIENT_OUTBOX_MAX);
        m = mu("kegboard.m100", 1000);
        check(kegnet_client_send(c, &m) == 0);
        check(kegnet_client_outbox_size(c) == KEGNET_CLIENT_OUTBOX_MAX);

        check(listen(t.lfd, 16) == 0);
        check(kegnet_client_start(c) == 0);
        check(RUN_UNTIL(t.event, server_accept(&t) && server_read(&t, 256), 3000));
        check(t.n_frames == 256);
        for (size_t i = 0; i < t.n_frames && i < 256; i++) {
                int k = (int) i + 4;
                snprintf(name, sizeof name, "kegboard.m%d", k);
                check_frame(&t, i, mu(name, k == 100 ? 1000 : (uint32_t) k));
        }
        test_teardown(&t);
}

/* The client as a producer, started and connected to the test server. */
static void producer_start(Test *t) {
        kegnet_client_set_producer(t->client, true);
        check(kegnet_client_start(t->client) == 0);
        check(RUN_UNTIL(t->event, server_accept(t) && t->connected == 1, 2000));
}

static void test_slow_server(void) {
        Test t;
        test_setup(&t, true, 4096);
        KegnetClient *c = t.client;
        char *value = malloc(8193);
        size_t max_queue = 0;
        uint64_t worst = 0, start = now_usec();
        int sent = 0;

        producer_start(&t);

        /* The server never reads: sends stay non-blocking and the client gives up at 256 KiB. */
        while (t.disconnected == 0 && now_usec() < start + 8 * USEC_PER_SEC) {
                for (int k = 0; k < 8; k++) {
                        char seq[16];
                        snprintf(seq, sizeof seq, "%08d", sent % 100000000);
                        memset(value, 'a', 8192);
                        memcpy(value, seq, 8);
                        value[8192] = 0;
                        KegnetMessage m = token(value, KEGNET_TOKEN_ADDED);
                        uint64_t t0 = now_usec();
                        check(kegnet_client_send(c, &m) == 0);
                        worst = MAX(worst, now_usec() - t0);
                        max_queue = MAX(max_queue, kegnet_client_send_queue_bytes(c));
                        sent++;
                }
                (void) sd_event_run(t.event, 0);
        }
        check(t.disconnected == 1);
        check(t.last_error == -ENOBUFS);
        check(max_queue <= KEGNET_CLIENT_SEND_BUFFER_MAX + 8 * 8400);
        check(worst < MSEC(50));
        check(kegnet_client_send_queue_bytes(c) == 0);
        /* Nothing was acknowledged: every token is kept, written or not (before, the written ones
         * were lost with the socket). */
        check(kegnet_client_outbox_size(c) == (size_t) sent);
        size_t queued = MIN((size_t) sent, (size_t) KEGNET_CLIENT_OUTBOX_MAX);

        /* The core reconnects the client and this time reads: the newest tokens the outbox can
         * hold arrive, in order, ending with the last token sent. */
        server_close(&t);
        check(RUN_UNTIL(t.event, server_accept(&t) && server_read(&t, queued), 5000));
        check(t.n_frames == queued);
        int prev = -1;
        for (size_t i = 0; i < t.n_frames; i++) {
                KegnetMessage m;
                check(kegnet_message_parse(t.frames[i], strlen(t.frames[i]), &m, NULL) == 0);
                check(m.kind == KEGNET_TOKEN_AUTH_EVENT);
                int seq = m.kind == KEGNET_TOKEN_AUTH_EVENT ? atoi(m.token_auth_event.token_value) : -1;
                check(seq == prev + 1 || prev == -1);
                prev = seq;
                kegnet_message_done(&m);
        }
        check(prev == sent - 1);
        fprintf(stderr, "slow server: %d messages sent, %zu replayed, worst send %llu us, max queue %zu\n",
                sent, queued, (unsigned long long) worst, max_queue);
        free(value);
        test_teardown(&t);
}

static void test_finish(void) {
        Test t;
        test_setup(&t, true, 0);
        KegnetClient *c = t.client;
        KegnetMessage m;

        kegnet_client_set_reconnect(c, false);
        check(kegnet_client_finish(c) == -ENOTCONN);
        check(kegnet_client_start(c) == 0);
        check(RUN_UNTIL(t.event, server_accept(&t) && t.connected == 1, 2000));

        m = (KegnetMessage) { .kind = KEGNET_FLOW_REQUEST, .flow_request = { .meter_name = "kegboard.flow0", .request = KEGNET_REQUEST_START_FLOW } };
        check(kegnet_client_send(c, &m) == 0);
        for (uint32_t i = 0; i <= 10; i++) {
                m = mu("kegboard.flow0", i * 100);
                check(kegnet_client_send(c, &m) == 0);
        }
        /* The core talks at the same time; unread input must not spoil the ending. */
        server_write(&t, "{\"event\":\"SetRelayOutputEvent\",\"data\":{\"output_name\":\"kegboard.relay0\",\"output_mode\":\"enabled\"}}\n\n");
        check(kegnet_client_finish(c) == 0);
        check(kegnet_client_finish(c) == 0);
        check(kegnet_client_send(c, &m) == -ESHUTDOWN);

        check(RUN_UNTIL(t.event, (server_read(&t, 12), t.server_eof && t.flushed == 1), 2000));
        check(t.n_frames == 12);
        check(t.flushed == 1);
        for (uint32_t i = 0; i <= 10 && t.n_frames == 12; i++)
                check_frame(&t, i + 1, mu("kegboard.flow0", i * 100));
        check(t.disconnected == 0);     /* waits for the core to close its side */
        server_close(&t);
        check(RUN_UNTIL(t.event, t.disconnected == 1, 2000));
        check(t.last_error == 0);
        check(!kegnet_client_is_connected(c));
        /* Finished: no reconnect. A reconnect would come within the 5 unit spacing; the check
         * watches twice that long (a time-bound promise, so the wait is the scenario). */
        check(RUN_UNTIL(t.event, server_accept(&t), 10 * UNIT / USEC_PER_MSEC) == false);
        check(t.connected == 1);
        test_teardown(&t);
}

typedef struct Drain {
        unsigned calls;
        bool flushed;
        uint64_t at;
} Drain;

static void on_drained(KegnetClient *c, bool flushed, void *userdata) {
        Drain *d = userdata;

        d->calls++;
        d->flushed = flushed;
        d->at = now_usec();
}

/* A started producer with no core listening yet: its first connection attempt has failed. */
static void producer_setup_down(Test *t) {
        test_setup(t, false, 0);
        kegnet_client_set_producer(t->client, true);
        check(kegnet_client_start(t->client) == 0);
        check(RUN_UNTIL(t->event, t->connect_failed == 1, 2000));
}

/* A producer's stop (kegnet_client_drain): connected, everything queued goes out and the end is
 * graceful once the core has acknowledged it; down, a connection that comes within the deadline
 * (after its Welcome) takes the outbox; none at all, the deadline ends it. */
static void test_drain(void) {
        Test t;
        Drain d = {};
        KegnetMessage m;
        uint64_t t0;

        /* Connected. */
        test_setup(&t, true, 0);
        producer_start(&t);
        t.manual_ack = true;
        m = token("aa", KEGNET_TOKEN_ADDED);    check(kegnet_client_send(t.client, &m) == 0);
        m = token("aa", KEGNET_TOKEN_REMOVED);  check(kegnet_client_send(t.client, &m) == 0);
        check(kegnet_client_drain(t.client, MSEC(2000), on_drained, &d) == 0);
        check(kegnet_client_drain(t.client, MSEC(2000), on_drained, &d) == -EALREADY);
        check(kegnet_client_send(t.client, &m) == -ESHUTDOWN);
        /* Both written, neither acknowledged: no half-close yet (it would come with the writes). */
        check(RUN_UNTIL(t.event, server_read(&t, 2) && kegnet_client_unacked(t.client) == 2, 2000));
        check((server_read(&t, 2), !t.server_eof));
        server_ack(&t);
        check(RUN_UNTIL(t.event, (server_read(&t, 2), t.server_eof), 2000));
        check(t.n_frames == 2);
        check(d.calls == 0);            /* until the core has closed its side too */
        server_close(&t);
        check(RUN_UNTIL(t.event, d.calls == 1, 2000));
        check(d.flushed);
        test_teardown(&t);

        /* Down at the stop: the outbox waits for the next attempt (5 units later) within the deadline. */
        d = (Drain) {};
        producer_setup_down(&t);
        m = token("bb", KEGNET_TOKEN_ADDED);    check(kegnet_client_send(t.client, &m) == 0);
        m = token("bb", KEGNET_TOKEN_REMOVED);  check(kegnet_client_send(t.client, &m) == 0);
        check(kegnet_client_drain(t.client, MSEC(2000), on_drained, &d) == 0);
        check(listen(t.lfd, 16) == 0);
        check(RUN_UNTIL(t.event, server_accept(&t) && (server_read(&t, 2), t.server_eof), 2000));
        check(t.n_frames == 2);
        check_frame(&t, 1, token("bb", KEGNET_TOKEN_REMOVED));
        server_close(&t);
        check(RUN_UNTIL(t.event, d.calls == 1, 2000));
        check(d.flushed);
        test_teardown(&t);

        /* Nobody listens: the deadline. */
        d = (Drain) {};
        producer_setup_down(&t);
        m = token("cc", KEGNET_TOKEN_ADDED);    check(kegnet_client_send(t.client, &m) == 0);
        t0 = now_usec();
        check(kegnet_client_drain(t.client, MSEC(60), on_drained, &d) == 0);
        check(RUN_UNTIL(t.event, d.calls == 1, 2000));
        check(!d.flushed);
        check(d.at - t0 >= MSEC(60));
        check(RUN_UNTIL(t.event, d.calls > 1, 200) == false);   /* once only (the window is the scenario) */
        test_teardown(&t);
}

/* A producer keeps what it wrote until the core acknowledges it. When a connection ends, the Welcome
 * of the next one says what the core handled after all: that is not sent again (a board reset sent
 * twice would count the ticks after it twice), the rest is. */
static void test_held_until_acknowledged(void) {
        static const bool core_handled_reset[] = { true, false };

        for (size_t k = 0; k < ELEMENTSOF(core_handled_reset); k++) {
                Test t;
                test_setup(&t, true, 0);
                KegnetClient *c = t.client;
                KegnetMessage m;

                t.manual_ack = true;
                producer_start(&t);

                m = mu("kegboard.flow0", 1);            check(kegnet_client_send(c, &m) == 0);   /* seq 1 */
                m = token("aa", KEGNET_TOKEN_ADDED);    check(kegnet_client_send(c, &m) == 0);   /* seq 2 */
                m = cce(true);                          check(kegnet_client_send(c, &m) == 0);   /* seq 3 */
                m = mu("kegboard.flow0", 2);            check(kegnet_client_send(c, &m) == 0);   /* seq 4 */
                check(RUN_UNTIL(t.event, server_read(&t, 4) && kegnet_client_unacked(c) == 4, 2000));
                check(t.flushed == 0);
                check(kegnet_client_reset_pending(c, "kegboard"));

                /* The core acknowledges the first two. */
                t.handled = 2;
                server_ack(&t);
                check(RUN_UNTIL(t.event, kegnet_client_unacked(c) == 2, 2000));
                check(t.flushed == 0);

                /* It handles the reset too, but the connection ends before it says so. */
                if (core_handled_reset[k])
                        t.handled = 3;
                server_close(&t);
                check(RUN_UNTIL(t.event, t.disconnected == 1, 2000));
                check(kegnet_client_outbox_size(c) == 2);
                check(kegnet_client_reset_pending(c, "kegboard"));
                m = mu("kegboard.flow0", 5);            check(kegnet_client_send(c, &m) == 0);
                check(!kegnet_client_is_flushed(c));

                server_frames_clear(&t);
                t.manual_ack = false;
                check(RUN_UNTIL(t.event, server_accept(&t) && t.connected == 2, 2000));
                check(t.hello_seq == 3);        /* the oldest frame it still held */
                if (core_handled_reset[k]) {
                        /* Only the newest reading: the held one (seq 4) was replaced by it. */
                        check(RUN_UNTIL(t.event, server_read(&t, 1) && kegnet_client_is_flushed(c), 2000));
                        check(t.n_frames == 1);
                        check_frame(&t, 0, mu("kegboard.flow0", 5));
                } else {
                        /* The reset again (never handled), then the newest reading after it. */
                        check(RUN_UNTIL(t.event, server_read(&t, 2) && kegnet_client_is_flushed(c), 2000));
                        check(t.n_frames == 2);
                        check_frame(&t, 0, cce(true));
                        check_frame(&t, 1, mu("kegboard.flow0", 5));
                }
                check(!kegnet_client_reset_pending(c, "kegboard"));
                check(t.flushed >= 1);
                check(t.handled == 4);  /* the session's count goes on where the core left it */
                test_teardown(&t);
        }
}

/* A full core closes a fresh connection at once (with or without a Refused frame): that is a failed
 * attempt, never "Connected!", and the outbox stays whole. */
static void test_full_core(void) {
        static const char *const refusals[] = { NULL, "too many clients" };

        for (size_t k = 0; k < ELEMENTSOF(refusals); k++) {
                Test t;
                test_setup(&t, true, 0);
                KegnetClient *c = t.client;
                KegnetMessage m;

                kegnet_client_set_producer(c, true);
                for (uint32_t i = 0; i < 3; i++) {
                        m = token(i == 0 ? "t0" : i == 1 ? "t1" : "t2", KEGNET_TOKEN_ADDED);
                        check(kegnet_client_send(c, &m) == 0);
                }
                m = mu("kegboard.flow0", 1000);
                check(kegnet_client_send(c, &m) == 0);
                check(kegnet_client_start(c) == 0);

                /* Twice: accepted and closed before any Welcome. */
                for (unsigned n = 1; n <= 2; n++) {
                        int fd = -1;
                        check(RUN_UNTIL(t.event, (fd = accept4(t.lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0, 2000));
                        if (refusals[k])
                                check(write(fd, "{\"event\":\"Refused\",\"data\":{\"reason\":\"too many clients\"}}\n\n", 58) == 58);
                        safe_close(fd);
                        check(RUN_UNTIL(t.event, t.connect_failed == n, 2000));
                }
                check(t.connected == 0 && t.disconnected == 0);
                check(kegnet_client_outbox_size(c) == 4);
                check(t.last_error == -ECONNREFUSED || t.last_error == -ECONNRESET || t.last_error == -EPIPE);

                /* A slot frees: everything arrives. */
                check(RUN_UNTIL(t.event, server_accept(&t) && server_read(&t, 4), 3000));
                check(t.connected == 1);
                check_frame(&t, 0, token("t0", KEGNET_TOKEN_ADDED));
                check_frame(&t, 3, mu("kegboard.flow0", 1000));
                check(RUN_UNTIL(t.event, kegnet_client_is_flushed(c), 2000));
                test_teardown(&t);
        }
}

/* A core that accepts but never welcomes: the attempt times out; a core that does not accept
 * producer messages from us: the attempt fails with -EPERM. The outbox is kept both times. */
static void test_no_welcome_and_not_a_producer(void) {
        Test t;
        test_setup(&t, true, 0);
        KegnetClient *c = t.client;
        KegnetMessage m = mu("kegboard.flow0", 7);

        kegnet_client_set_timing(c, UNIT, MSEC(200));
        kegnet_client_set_producer(c, true);
        check(kegnet_client_send(c, &m) == 0);
        t.no_welcome = true;
        check(kegnet_client_start(c) == 0);
        check(RUN_UNTIL(t.event, (server_accept(&t), t.connect_failed == 1), 2000));
        check(t.last_error == -ETIMEDOUT);
        check(t.hellos == 1 && t.hello_role == KEGNET_ROLE_PRODUCER);
        check(kegnet_client_outbox_size(c) == 1);
        server_close(&t);

        t.no_welcome = false;
        t.refuse_producer = "uid 1000 is not root or the service user (uid 999)";
        check(RUN_UNTIL(t.event, (server_accept(&t), t.connect_failed == 2), 2000));
        check(t.last_error == -EPERM);
        check(t.connected == 0);
        check(kegnet_client_outbox_size(c) == 1);
        server_close(&t);

        t.refuse_producer = NULL;
        check(RUN_UNTIL(t.event, server_accept(&t) && server_read(&t, 1), 3000));
        check_frame(&t, 0, mu("kegboard.flow0", 7));
        test_teardown(&t);
}

/* The core's Unix socket: "unix:/path". */
static void test_unix_socket(void) {
        char dir[] = "/tmp/test-kegnet-client-XXXXXX", path[96], addr[160];
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        Test t;

        check(mkdtemp(dir) != NULL);
        snprintf(path, sizeof path, "%s/kegnet.sock", dir);
        snprintf(addr, sizeof addr, "unix:%s", path);
        test_setup(&t, true, 0);
        t.client = kegnet_client_free(t.client);
        t.lfd = safe_close(t.lfd);
        t.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        check(t.lfd >= 0);
        snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
        check(bind(t.lfd, (struct sockaddr *) &un, sizeof un) == 0);
        check(listen(t.lfd, 4) == 0);

        check(kegnet_client_new(&t.client, t.event, addr, &callbacks, &t) == 0);
        check(t.client && streq(kegnet_client_address(t.client), addr));
        kegnet_client_set_timing(t.client, UNIT, MSEC(1000));
        kegnet_client_set_producer(t.client, true);
        KegnetMessage m = mu("kegboard.flow1", 99);
        check(kegnet_client_send(t.client, &m) == 0);
        check(kegnet_client_start(t.client) == 0);
        check(RUN_UNTIL(t.event, server_accept(&t) && server_read(&t, 1) && kegnet_client_is_flushed(t.client), 2000));
        check(t.connected == 1);
        check_frame(&t, 0, m);
        test_teardown(&t);
        (void) unlink(path);
        (void) rmdir(dir);
}

static void test_one_shot_failure(void) {
        Test t;
        test_setup(&t, false, 0);
        KegnetClient *c = t.client;

        kegnet_client_set_reconnect(c, false);
        check(kegnet_client_start(c) == 0);
        check(RUN_UNTIL(t.event, t.connect_failed == 1, 2000));
        check(t.last_error == -ECONNREFUSED);
        /* No retry: one would come after the 5 unit spacing; watched for 15 units (the wait is
         * the scenario, as the promise is about time). */
        check(RUN_UNTIL(t.event, t.connect_failed > 1, 15 * UNIT / USEC_PER_MSEC) == false);
        check(t.connected == 0 && t.disconnected == 0);
        KegnetMessage m = mu("kegboard.flow0", 1);
        check(kegnet_client_send(c, &m) == -ENOTCONN);
        kegnet_client_set_producer(c, true);
        check(kegnet_client_send(c, &m) == -ENOTCONN);   /* nothing will ever flush it */
        test_teardown(&t);
}

int main(void) {
        uint64_t start = now_usec();

        test_run(test_address);
        test_run(test_connect_and_receive);
        test_run(test_backoff_and_spacing);
        test_run(test_outbox_order);
        test_run(test_outbox_limit);
        test_run(test_slow_server);
        test_run(test_finish);
        test_run(test_drain);
        test_run(test_held_until_acknowledged);
        test_run(test_full_core);
        test_run(test_no_welcome_and_not_a_producer);
        test_run(test_unix_socket);
        test_run(test_one_shot_failure);

        fprintf(stderr, "kegnet client tests took %llu ms\n", (unsigned long long) ((now_usec() - start) / 1000));
        return test_result();
}
