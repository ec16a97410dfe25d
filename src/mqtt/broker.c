/* libmosquitto on sd-event: see broker.h.
 *
 * libmosquitto calls back from inside mosquitto_loop_read() and friends; those callbacks only
 * record what happened (a CONNACK, the end of the connection) and this module acts on it once the
 * call has returned: the socket may have changed, packets from an earlier connection are queued
 * again by libmosquitto right after its connect callback, and a reconnect must never be started
 * from inside the library. */
#include <mosquitto.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define LOG_COMPONENT "mqtt"
#include "log.h"

#include "broker.h"
#include "util-escape.h"
#include "util-event.h"
#include "util-string.h"

/* The 1 s libmosquitto timer (keepalive pings, QoS 1 retries) may run 100 ms late; the retry of a
 * backoff 10 ms; the connect timeout 100 ms; the 10 ms EPOLLOUT pause 1 ms. */
#define MISC_INTERVAL_USEC USEC_PER_SEC
#define MISC_ACCURACY_USEC (100 * USEC_PER_MSEC)
#define RETRY_ACCURACY_USEC (10 * USEC_PER_MSEC)
#define TIMEOUT_ACCURACY_USEC (100 * USEC_PER_MSEC)
#define EPOLLOUT_PAUSE_USEC (10 * USEC_PER_MSEC)
#define PAUSE_ACCURACY_USEC USEC_PER_MSEC
#define CONNECT_TIMEOUT_MIN_SEC 10
#define CLIENT_ID_MAX_PORTABLE 23

static const unsigned backoff_sec[] = { 1, 2, 4, 8, 16, 32, 60 };

typedef enum BrokerState {
        BROKER_IDLE,                    /* waiting for the next attempt */
        BROKER_CONNECTING,              /* connect call made, no CONNACK yet */
        BROKER_CONNECTED,
        BROKER_STOPPED,
} BrokerState;

struct Broker {
        sd_event *event;
        struct mosquitto *mosq;
        BrokerCallbacks cb;
        void *userdata;

        char *host;
        int port;
        char *address;
        char *client_id;
        int keepalive;
        bool tls;

        BrokerState state;
        int fd;                         /* the watched socket, -1 = none */
        sd_event_source *io;
        bool epollout_paused;
        sd_event_source *pause_timer;
        sd_event_source *misc_timer;
        sd_event_source *retry_timer;
        sd_event_source *timeout_timer;
        uint64_t retry_at;              /* monotonic, while IDLE */

        unsigned failures;              /* consecutive failed attempts */
        bool streak_logged;             /* the first failure of the streak was logged */
        int refusal;                    /* last CONNACK refusal code of the streak, 0 = none */

        /* Recorded by libmosquitto's callbacks, acted on after the call returns. */
        bool connack;
        int connack_rc;
        bool ended;
        int ended_rc;
        int *acked;                     /* mids of PUBACKs, delivered after the call */
        size_t n_acked, n_acked_allocated;
        char *last_error;               /* last error line libmosquitto logged (TLS reasons) */
};

static uint64_t broker_now(Broker *b) {
        uint64_t t = 0;
        (void) sd_event_now(b->event, CLOCK_MONOTONIC, &t);
        return t;
}

static void notify_state(Broker *b) {
        if (b->cb.state_changed)
                b->cb.state_changed(b, b->userdata);
}

/* ---- libmosquitto callbacks: record only */

static void on_mosq_connect(struct mosquitto *mosq, void *userdata, int rc) {
        Broker *b = userdata;

        b->connack = true;
        b->connack_rc = rc;
}

static void on_mosq_disconnect(struct mosquitto *mosq, void *userdata, int rc) {
        Broker *b = userdata;

        if (!b->ended) {
                b->ended = true;
                b->ended_rc = rc;
        }
}

static void on_mosq_message(struct mosquitto *mosq, void *userdata, const struct mosquitto_message *msg) {
        Broker *b = userdata;

        if (b->cb.message && msg->topic)
                b->cb.message(b, msg->topic, msg->payload, msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0,
                              msg->retain, b->userdata);
}

/* Not delivered from here: the callee may want to disconnect, which libmosquitto cannot do from
 * inside its own callback (its locks are held). */
static void on_mosq_publish(struct mosquitto *mosq, void *userdata, int mid) {
        Broker *b = userdata;

        if (!b->cb.published)
                return;
        if (b->n_acked == b->n_acked_allocated) {
                size_t n = MAX(b->n_acked_allocated * 2, (size_t) 16);
                int *a = realloc(b->acked, n * sizeof(int));
                if (!a)
                        return (void) log_error("Out of memory");
                b->acked = a;
                b->n_acked_allocated = n;
        }
        b->acked[b->n_acked++] = mid;
}

static void on_mosq_log(struct mosquitto *mosq, void *userdata, int level, const char *str) {
        Broker *b = userdata;
        _cleanup_(freep) char *e = escape_for_log(str);

        if (level & MOSQ_LOG_ERR) {
                free(b->last_error);
                b->last_error = e ? strdup(e) : NULL;
        }
        log_debug("libmosquitto: %s", e ?: "(out of memory)");
}

/* ---- the socket */

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static void io_drop(Broker *b) {
        b->io = sd_event_source_disable_unref(b->io);
        b->fd = -1;
        b->epollout_paused = false;
        event_timer_disarm(b->pause_timer);
}

/* After every call into libmosquitto: follow its socket (a new one after every connect call; a
 * closed one's number is soon reused, so a source is never moved to another fd) and its wish to
 * write. */
static void io_update(Broker *b) {
        int fd = mosquitto_socket(b->mosq);
        uint32_t events;
        int r;

        if (fd != b->fd)
                io_drop(b);
        if (fd < 0)
                return;
        events = EPOLLIN | (mosquitto_want_write(b->mosq) && !b->epollout_paused ? EPOLLOUT : 0);
        if (!b->io) {
                r = sd_event_add_io(b->event, &b->io, fd, events, on_io, b);
                if (r < 0) {
                        log_error_errno(r, "Cannot watch the broker connection: %m");
                        return;
                }
                (void) sd_event_source_set_description(b->io, "mqtt-socket");
                b->fd = fd;
                return;
        }
        r = sd_event_source_set_io_events(b->io, events);
        if (r < 0)
                log_error_errno(r, "Cannot watch the broker connection: %m");
}

/* ---- attempts */

static void attempt(Broker *b);
static int on_misc(sd_event_source *s, uint64_t usec, void *userdata);
static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *userdata);
static int on_pause_end(sd_event_source *s, uint64_t usec, void *userdata);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        attempt(userdata);
        return 0;
}

static void schedule_retry(Broker *b, unsigned sec) {
        int r;

        b->state = BROKER_IDLE;
        b->retry_at = broker_now(b) + sec * USEC_PER_SEC;
        r = event_timer_arm(b->event, &b->retry_timer, b->retry_at, RETRY_ACCURACY_USEC, on_retry, b);
        if (r < 0)
                log_error_errno(r, "Cannot schedule the next connection attempt: %m");
}

static unsigned next_backoff(Broker *b) {
        return backoff_sec[MIN(b->failures - 1, ELEMENTSOF(backoff_sec) - 1)];
}

/* The attempt or connection is over: stop watching it and schedule the next one. */
static void connection_end(Broker *b, const char *reason, bool refused) {
        bool was_connected = b->state == BROKER_CONNECTED;
        unsigned delay;

        io_drop(b);
        event_timer_disarm(b->misc_timer);
        event_timer_disarm(b->timeout_timer);
        if (b->state == BROKER_STOPPED)
                return;

        if (was_connected) {
                log_warning("Disconnected from %s: %s", b->address, reason);
                b->failures = 0;
                b->streak_logged = false;
                b->refusal = 0;
                schedule_retry(b, 1);
                if (b->cb.disconnected)
                        b->cb.disconnected(b, b->userdata);
        } else {
                b->failures++;
                delay = next_backoff(b);
                /* A refusal was reported as an ERROR already. */
                log_full(b->streak_logged || refused ? LOG_INFO : LOG_WARNING,
                         "Connection to %s failed: %s; retry in %u s", b->address, reason, delay);
                b->streak_logged = true;
                schedule_retry(b, delay);
        }
        notify_state(b);
}

static const char *error_reason(Broker *b, int rc, int saved_errno, char *buf, size_t size) {
        if (rc == MOSQ_ERR_ERRNO)
                return strerror_r(saved_errno, buf, size);
        if (rc == MOSQ_ERR_TLS && b->last_error) {
                snprintf(buf, size, "%s (%s)", mosquitto_strerror(rc), b->last_error);
                return buf;
        }
        return mosquitto_strerror(rc);
}

/* Acts on what the callbacks recorded during a call into libmosquitto that returned rc. Returns
 * true while the connection (or attempt) goes on. */
static bool after_call(Broker *b, int rc, int saved_errno) {
        char buf[512];
        bool refused = false;

        for (size_t i = 0; i < b->n_acked; i++) {
                b->cb.published(b, b->acked[i], b->userdata);
                if (b->state == BROKER_STOPPED) {
                        b->n_acked = 0;
                        return false;
                }
        }
        b->n_acked = 0;

        if (b->connack) {
                b->connack = false;
                if (b->connack_rc == 0 && b->state == BROKER_CONNECTING) {
                        b->state = BROKER_CONNECTED;
                        b->failures = 0;
                        b->streak_logged = false;
                        b->refusal = 0;
                        b->epollout_paused = false;
                        event_timer_disarm(b->pause_timer);
                        event_timer_disarm(b->timeout_timer);
                        log_info("Connected to %s", b->address);
                        notify_state(b);
                        io_update(b);
                        if (b->cb.connected)
                                b->cb.connected(b, b->userdata);
                } else if (b->connack_rc != 0) {
                        refused = true;
                        log_full(b->refusal != b->connack_rc ? LOG_ERR : LOG_DEBUG,
                                 "Broker refused the connection: %s", mosquitto_connack_string(b->connack_rc));
                        b->refusal = b->connack_rc;
                }
        }

        if (rc != MOSQ_ERR_SUCCESS || b->ended || refused) {
                const char *reason;

                if (refused)
                        reason = mosquitto_connack_string(b->connack_rc);
                else if (rc != MOSQ_ERR_SUCCESS)
                        reason = error_reason(b, rc, saved_errno, buf, sizeof buf);
                else
                        reason = error_reason(b, b->ended_rc, saved_errno, buf, sizeof buf);
                b->ended = false;
                connection_end(b, reason, refused);
                return false;
        }
        io_update(b);
        return true;
}

static void attempt(Broker *b) {
        int rc, saved_errno, r;

        if (b->state == BROKER_STOPPED)
                return;
        log_full(b->streak_logged ? LOG_DEBUG : LOG_INFO, "Connecting to %s as %s", b->address, b->client_id);
        io_drop(b);
        b->connack = b->ended = false;
        free(b->last_error);
        b->last_error = NULL;
        b->state = BROKER_CONNECTING;

        rc = mosquitto_connect_bind_async(b->mosq, b->host, b->port, b->keepalive, NULL);
        saved_errno = errno;
        if (rc != MOSQ_ERR_SUCCESS) {
                char buf[512];
                connection_end(b, error_reason(b, rc, saved_errno, buf, sizeof buf), false);
                return;
        }

        r = event_timer_arm_relative(b->event, &b->timeout_timer,
                                     MAX(CONNECT_TIMEOUT_MIN_SEC, b->keepalive) * USEC_PER_SEC, TIMEOUT_ACCURACY_USEC,
                                     on_connect_timeout, b);
        if (r >= 0)
                r = event_timer_arm_relative(b->event, &b->misc_timer, MISC_INTERVAL_USEC, MISC_ACCURACY_USEC,
                                             on_misc, b);
        if (r < 0)
                log_error_errno(r, "Cannot set up the connection timers: %m");
        notify_state(b);
        (void) after_call(b, MOSQ_ERR_SUCCESS, 0);
}

/* ---- event sources */

static int on_pause_end(sd_event_source *s, uint64_t usec, void *userdata) {
        Broker *b = userdata;

        b->epollout_paused = false;
        io_update(b);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Broker *b = userdata;
        int rc, saved_errno;

        /* Before the CONNACK an error on the socket is the end of the attempt. (libmosquitto would
         * keep a failed TLS handshake "pending" on it and be woken again and again.) */
        if (b->state == BROKER_CONNECTING && (revents & (EPOLLERR | EPOLLHUP))) {
                int err = 0;
                socklen_t len = sizeof err;
                char buf[128];

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0)
                        err = ECONNRESET;
                connection_end(b, strerror_r(err, buf, sizeof buf), false);
                return 0;
        }

        if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                rc = mosquitto_loop_read(b->mosq, 1);
                saved_errno = errno;
                if (!after_call(b, rc, saved_errno))
                        return 0;
        }
        if (revents & EPOLLOUT) {
                rc = mosquitto_loop_write(b->mosq, 1);
                saved_errno = errno;
                if (!after_call(b, rc, saved_errno))
                        return 0;
                /* libmosquitto 2.0 advances a TLS handshake only from its read path. */
                if (b->tls && b->state == BROKER_CONNECTING) {
                        rc = mosquitto_loop_read(b->mosq, 1);
                        saved_errno = errno;
                        if (!after_call(b, rc, saved_errno))
                                return 0;
                }
                /* A stalled handshake keeps wanting to write: EPOLLOUT off for 10 ms, so a handshake
                 * waiting for the broker costs at most 100 wakeups a second. */
                if (b->state == BROKER_CONNECTING && mosquitto_want_write(b->mosq) && !b->epollout_paused) {
                        b->epollout_paused = true;
                        if (event_timer_arm_relative(b->event, &b->pause_timer, EPOLLOUT_PAUSE_USEC,
                                                     PAUSE_ACCURACY_USEC, on_pause_end, b) < 0)
                                b->epollout_paused = false;
                        io_update(b);
                }
        }
        return 0;
}

static int on_misc(sd_event_source *s, uint64_t usec, void *userdata) {
        Broker *b = userdata;
        int rc, saved_errno;

        if (b->state != BROKER_CONNECTING && b->state != BROKER_CONNECTED)
                return 0;
        (void) event_timer_set(s, usec + MISC_INTERVAL_USEC);
        rc = mosquitto_loop_misc(b->mosq);
        saved_errno = errno;
        (void) after_call(b, rc, saved_errno);
        return 0;
}

static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Broker *b = userdata;

        if (b->state == BROKER_CONNECTING)
                connection_end(b, "no CONNACK in time", false);
        return 0;
}

/* ---- set-up */

static int mosq_check(int rc, const char *what) {
        if (rc == MOSQ_ERR_SUCCESS)
                return 0;
        log_error("libmosquitto set-up failed: %s: %s", what, rc == MOSQ_ERR_ERRNO ? strerror(errno) :
                  mosquitto_strerror(rc));
        return -EIO;
}

static const char *nonempty(const char *s) {
        return isempty(s) ? NULL : s;
}

int broker_new(Broker **ret, sd_event *event, const BrokerConfig *c, const BrokerCallbacks *cb, void *userdata) {
        _cleanup_(broker_freep) Broker *b = NULL;
        int r;

        assert_return(ret && event && c && cb, -EINVAL);

        b = calloc(1, sizeof(Broker));
        if (!b)
                return log_error_errno(-ENOMEM, "Out of memory");
        b->event = sd_event_ref(event);
        b->cb = *cb;
        b->userdata = userdata;
        b->fd = -1;
        b->port = c->port;
        b->keepalive = c->keepalive;
        b->tls = c->tls;
        b->host = strdup(c->host);
        b->client_id = strdup(c->client_id);
        b->address = strdup_printf("%s:%d", c->host, c->port);
        if (!b->host || !b->client_id || !b->address)
                return log_error_errno(-ENOMEM, "Out of memory");

        if (strlen(c->client_id) > CLIENT_ID_MAX_PORTABLE)
                log_warning("Client id %s is longer than %d bytes: MQTT 3.1.1 brokers need not accept it",
                            c->client_id, CLIENT_ID_MAX_PORTABLE);

        r = mosquitto_lib_init();
        if (r != MOSQ_ERR_SUCCESS)
                return mosq_check(r, "mosquitto_lib_init");
        b->mosq = mosquitto_new(c->client_id, true, b);
        if (!b->mosq)
                return log_error_errno(-errno ?: -ENOMEM, "libmosquitto set-up failed: mosquitto_new: %m");

        if ((r = mosq_check(mosquitto_int_option(b->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311),
                            "protocol version")) < 0 ||
            (r = mosq_check(mosquitto_int_option(b->mosq, MOSQ_OPT_TCP_NODELAY, 1), "TCP_NODELAY")) < 0)
                return r;
        if (!isempty(c->username) &&
            (r = mosq_check(mosquitto_username_pw_set(b->mosq, c->username, nonempty(c->password)), "credentials")) < 0)
                return r;
        if (c->tls) {
                /* libmosquitto refuses TLS without a CA unless told to use the system's store first. */
                if (isempty(c->ca_file) && isempty(c->ca_path) &&
                    (r = mosq_check(mosquitto_int_option(b->mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1), "system CA store")) < 0)
                        return r;
                if ((r = mosq_check(mosquitto_tls_set(b->mosq, nonempty(c->ca_file), nonempty(c->ca_path),
                                                      nonempty(c->cert_file), nonempty(c->key_file), NULL),
                                    "TLS files")) < 0 ||
                    (r = mosq_check(mosquitto_tls_opts_set(b->mosq, 1, "tlsv1.2", NULL), "TLS options")) < 0)
                        return r;
        }
        r = mosq_check(mosquitto_will_set(b->mosq, c->will_topic, 7, "offline", 1, true), "last will");
        if (r < 0)
                return r;
        mosquitto_connect_callback_set(b->mosq, on_mosq_connect);
        mosquitto_disconnect_callback_set(b->mosq, on_mosq_disconnect);
        mosquitto_message_callback_set(b->mosq, on_mosq_message);
        mosquitto_publish_callback_set(b->mosq, on_mosq_publish);
        mosquitto_log_callback_set(b->mosq, on_mosq_log);


        *ret = TAKE_PTR(b);
        return 0;
}

int broker_start(Broker *b) {
        assert_return(b, -EINVAL);

        attempt(b);
        return 0;
}

Broker *broker_free(Broker *b) {
        if (!b)
                return NULL;
        io_drop(b);
        sd_event_source_disable_unref(b->misc_timer);
        sd_event_source_disable_unref(b->retry_timer);
        sd_event_source_disable_unref(b->timeout_timer);
        sd_event_source_disable_unref(b->pause_timer);
        if (b->mosq) {
                mosquitto_destroy(b->mosq);
                mosquitto_lib_cleanup();
        }
        sd_event_unref(b->event);
        free(b->host);
        free(b->address);
        free(b->client_id);
        free(b->last_error);
        free(b->acked);
        free(b);
        return NULL;
}

bool broker_is_connected(const Broker *b) {
        return b && b->state == BROKER_CONNECTED;
}

unsigned broker_retry_in(const Broker *b) {
        uint64_t now = 0;

        if (!b || b->state != BROKER_IDLE)
                return 0;
        (void) sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        return b->retry_at > now ? (unsigned) ((b->retry_at - now + USEC_PER_SEC - 1) / USEC_PER_SEC) : 0;
}

const char *broker_address(const Broker *b) {
        return b->address;
}

int broker_publish(Broker *b, const char *topic, const void *payload, size_t len, bool retain, int *ret_mid) {
        int rc;

        assert_return(b && topic && (payload || len == 0), -EINVAL);

        if (b->state != BROKER_CONNECTED)
                return -ENOTCONN;
        if (len > INT32_MAX)
                return -EMSGSIZE;
        rc = mosquitto_publish(b->mosq, ret_mid, topic, (int) len, payload, 1, retain);
        io_update(b);
        switch (rc) {
        case MOSQ_ERR_SUCCESS:
                return 0;
        case MOSQ_ERR_NO_CONN:
        case MOSQ_ERR_CONN_LOST:
                return -ENOTCONN;
        case MOSQ_ERR_NOMEM:
                return -ENOMEM;
        case MOSQ_ERR_PAYLOAD_SIZE:
        case MOSQ_ERR_OVERSIZE_PACKET:
                return -EMSGSIZE;
        default:
                return -EINVAL;
        }
}

int broker_subscribe(Broker *b, const char *topic) {
        int rc;

        assert_return(b && topic, -EINVAL);

        if (b->state != BROKER_CONNECTED)
                return -ENOTCONN;
        rc = mosquitto_subscribe(b->mosq, NULL, topic, 1);
        io_update(b);
        return rc == MOSQ_ERR_SUCCESS ? 0 : rc == MOSQ_ERR_NOMEM ? -ENOMEM : rc == MOSQ_ERR_NO_CONN ? -ENOTCONN : -EINVAL;
}

void broker_disconnect(Broker *b) {
        bool was_connected;

        if (!b || b->state == BROKER_STOPPED)
                return;
        was_connected = b->state == BROKER_CONNECTED;
        b->state = BROKER_STOPPED;
        event_timer_disarm(b->retry_timer);
        event_timer_disarm(b->misc_timer);
        event_timer_disarm(b->timeout_timer);
        if (was_connected) {
                (void) mosquitto_disconnect(b->mosq);
                (void) mosquitto_loop_write(b->mosq, 1);
        }
        io_drop(b);
}
