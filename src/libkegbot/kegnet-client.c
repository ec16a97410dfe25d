/* Reconnecting kegnet client (spec/kegnet-protocol.md section 6, and the README's "kegnet: delivery
 * and connection slots"). A connection is up only once the core's Welcome has answered our Hello: a
 * full core that closes (or refuses) a fresh connection is a failed attempt, not a connection that
 * took the outbox with it. A producer keeps every frame it wrote until the core acknowledges it;
 * frames still unacknowledged when a connection ends are held, and the next Welcome says which of
 * them the core has handled after all, so nothing is lost and nothing is handled twice.
 *
 * kegnet_client_send() writes at once when nothing is queued (never blocking: MSG_DONTWAIT),
 * otherwise the IO event handler writes; it never calls back into the caller: errors and the
 * 'flushed' notification are delivered from the loop. */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LOG_COMPONENT "kegnet"
#include "log.h"

#include "kegnet-client.h"
#include "util-event.h"
#include "util-ratelimit.h"
#include "util-string.h"
#include "util-uuid.h"

/* Seconds to wait after the n-th consecutive failed attempt (index min(n-1, 6)). */
static const unsigned backoff_seconds[] = { 5, 5, 10, 10, 20, 20, 60 };
#define MIN_SPACING_SECONDS 5U
#define BAD_FRAME_WARN_INTERVAL (60 * USEC_PER_SEC)  /* and for the full outbox */
#define READ_CHUNK 65536
#define UNIX_PREFIX "unix:"
/* Entries kept for reuse: more than are in flight between two Acks at a board's pace (one Ack per
 * 100 ms, a frame per 10 ms); a burst beyond that allocates and frees the rest. */
#define ENTRY_SPARE_MAX 64U
#define ENTRY_SPARE_BUFFER_MAX 1024U    /* a spare keeps no bigger buffer (a frame may be 64 KiB) */

typedef struct Entry Entry;
struct Entry {
        Entry *prev, *next;
        KegnetKind kind;
        /* The buffers of an entry are kept when it goes to the client's spares: a producer sending
         * a reading per frame allocates nothing once it has as many entries as are in flight. */
        StrBuf key;             /* meter_name of a MeterUpdate, controller_name of a ControllerConnectedEvent */
        bool board_reset;
        StrBuf frame;           /* encoded, with the terminator */
        size_t written;         /* bytes of it already sent on the current connection */
        uint64_t seq;           /* number in the session once it went to the send queue; 0 before */
};

typedef struct EntryList {
        Entry *head, *tail;
        size_t n;
} EntryList;

typedef enum ClientState {
        STATE_IDLE,             /* not started */
        STATE_CONNECTING,       /* non-blocking connect in flight */
        STATE_HANDSHAKE,        /* connected, Hello sent, waiting for the Welcome */
        STATE_CONNECTED,
        STATE_WAITING,          /* next attempt scheduled */
        STATE_DONE,             /* no more attempts (one-shot, or finished) */
} ClientState;

struct KegnetClient {
        sd_event *event;
        KegnetClientCallbacks cb;
        void *userdata;

        char *display;          /* "host:port" or "unix:<path>" for log lines */
        struct sockaddr_storage sa;
        socklen_t salen;

        bool producer, reconnect, debug_events;
        KegnetRole role;
        bool has_events;                /* the Hello's "events"; false = null (every broadcast) */
        unsigned events;
        uint64_t unit;
        uint64_t connect_timeout;

        ClientState state;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        sd_event_source *defer;         /* delivers pending_error on the loop */
        sd_event_source *flush_notify;  /* delivers 'flushed' after a direct write, on the loop */
        uint64_t generation;    /* bumped whenever a connection ends, to notice it from callbacks */

        unsigned failures;      /* consecutive failed attempts */
        uint64_t last_attempt;  /* CLOCK_MONOTONIC */

        /* The session: frames are numbered per session; the core acknowledges by number. */
        char session[UUID_STRING_MAX];
        uint64_t next_seq;      /* number of the next frame sent */
        bool acked_mode;        /* the current connection acknowledges */
        char *refused_reason;   /* a Refused frame came before the Welcome */

        KegnetSplitter splitter;
        char *rbuf;
        EntryList outbox;
        EntryList sendq;        /* to write on this connection (numbered) */
        EntryList unacked;      /* written, not yet acknowledged */
        EntryList held;         /* unacknowledged when the last connection ended, numbered */
        EntryList spare;        /* done with, buffers kept for the next message (ENTRY_SPARE_MAX) */
        StrBuf encoded;         /* the message being queued, its memory kept for the next one */
        size_t sendq_bytes;
        int pending_error;      /* connection already judged lost; handled on the loop */
        bool finishing, shut_wr;

        /* kegnet_client_drain() */
        sd_event_source *drain_timer;
        KegnetClientDrained drained;
        void *drained_userdata;

        uint64_t outbox_dropped;
        LogRateLimit drop_rl;           /* one warning a minute while messages are dropped */
        LogRateLimit bad_rl;            /* one warning a minute per connection about bad frames */
};

/* ---- entries ---- */

static Entry *entry_free(Entry *e) {
        if (!e)
                return NULL;
        strbuf_done(&e->key);
        strbuf_done(&e->frame);
        free(e);
        return NULL;
}

static void list_append(EntryList *l, Entry *e) {
        e->next = NULL;
        e->prev = l->tail;
        if (l->tail)
                l->tail->next = e;
        else
                l->head = e;
        l->tail = e;
        l->n++;
}

static void list_remove(EntryList *l, Entry *e) {
        if (e->prev)
                e->prev->next = e->next;
        else
                l->head = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                l->tail = e->prev;
        e->prev = e->next = NULL;
        l->n--;
}

/* Done with an entry: kept as a spare (with its buffers, unless big) while there are few. */
static void entry_release(KegnetClient *c, Entry *e) {
        if (c->spare.n >= ENTRY_SPARE_MAX) {
                entry_free(e);
                return;
        }
        if (e->frame.allocated > ENTRY_SPARE_BUFFER_MAX)
                strbuf_done(&e->frame);
        if (e->key.allocated > ENTRY_SPARE_BUFFER_MAX)
                strbuf_done(&e->key);
        list_append(&c->spare, e);
}

static void list_clear(EntryList *l) {
        while (l->head) {
                Entry *e = l->head;
                list_remove(l, e);
                entry_free(e);
        }
}

/* Moves every entry of 'from' to the end of 'to', in order. */
static void list_splice(EntryList *to, EntryList *from) {
        while (from->head) {
                Entry *e = from->head;
                list_remove(from, e);
                list_append(to, e);
        }
}

/* Encodes a message into an entry (a spare one if there is one). */
static int entry_new(KegnetClient *c, const KegnetMessage *m, Entry **ret) {
        const char *key = NULL;
        Entry *e = c->spare.tail;
        int r;

        if (e)
                list_remove(&c->spare, e);
        else {
                e = calloc(1, sizeof(Entry));
                if (!e)
                        return -ENOMEM;
        }
        /* Encoded into the client's buffer and copied: an entry's buffer is the frame's size, not
         * what doubling on the way there left (thousands may wait for an Ack in a flood). */
        r = kegnet_message_encode_in(m, &c->encoded);
        if (r >= 0) {
                strbuf_reset(&e->frame);
                r = strbuf_append(&e->frame, c->encoded.buf, c->encoded.len);
        }
        if (r < 0) {
                entry_release(c, e);
                return r;
        }
        e->kind = m->kind;
        e->board_reset = false;
        e->written = 0;
        e->seq = 0;
        if (m->kind == KEGNET_METER_UPDATE)
                key = m->meter_update.meter_name;
        else if (m->kind == KEGNET_CONTROLLER_CONNECTED_EVENT) {
                key = m->controller_connected_event.controller_name;
                e->board_reset = m->controller_connected_event.board_reset;
        }
        strbuf_reset(&e->key);
        if (key && strbuf_puts(&e->key, key) < 0) {
                entry_release(c, e);
                return -ENOMEM;
        }
        *ret = e;
        return 0;
}

static bool entry_is_reset(const Entry *e) {
        return e->kind == KEGNET_CONTROLLER_CONNECTED_EVENT && e->board_reset;
}

static uint64_t client_now(KegnetClient *c);

/* ---- producer outbox (§6.2) ---- */

static void outbox_add(KegnetClient *c, Entry *e) {
        e->written = 0;
        e->seq = 0;

        switch (e->kind) {
        case KEGNET_METER_UPDATE: {
                /* Readings are absolute: the newest one replaces a queued one for the same meter, unless
                 * a board reset sits between them (the core must see old reading, reset, new reading). */
                bool reset_after = false;
                for (Entry *i = c->outbox.tail; i; i = i->prev) {
                        if (entry_is_reset(i))
                                reset_after = true;
                        else if (i->kind == KEGNET_METER_UPDATE && streq(strbuf_str(&i->key), strbuf_str(&e->key))) {
                                StrBuf older = i->frame;

                                if (reset_after)
                                        break;
                                i->frame = e->frame;
                                e->frame = older;
                                entry_release(c, e);
                                return;
                        }
                }
                list_append(&c->outbox, e);
                break;
        }
        case KEGNET_TOKEN_AUTH_EVENT:
                list_append(&c->outbox, e);
                break;
        case KEGNET_CONTROLLER_CONNECTED_EVENT:
                /* Only the reset marker is kept: a plain announcement is repeated by the producer on
                 * every connect anyway. */
                if (e->board_reset) {
                        list_append(&c->outbox, e);
                        break;
                }
                log_debug("Not queueing a ControllerConnectedEvent without board_reset while disconnected");
                entry_release(c, e);
                return;
        default:
                log_debug("Not queueing %s while disconnected", kegnet_kind_to_string(e->kind));
                entry_release(c, e);
                return;
        }

        if (c->outbox.n > KEGNET_CLIENT_OUTBOX_MAX) {
                Entry *victim = c->outbox.head;
                for (Entry *i = c->outbox.head; i; i = i->next)
                        if (i->kind == KEGNET_TOKEN_AUTH_EVENT) {
                                victim = i;
                                break;
                        }
                list_remove(&c->outbox, victim);
                c->outbox_dropped++;
                /* One warning a minute, counting; the total is logged again on reconnect. */
                if (log_ratelimit_pass(&c->drop_rl, LOG_WARNING, LOG_COMPONENT))
                        log_warning("Outbox full (%u entries): dropping the oldest queued messages; %" PRIu64 " dropped so far",
                                    KEGNET_CLIENT_OUTBOX_MAX, c->outbox_dropped);
                else
                        log_debug("Outbox full: dropped a queued %s", kegnet_kind_to_string(victim->kind));
                entry_release(c, victim);
        }
}

/* A connection ended: what it did not get acknowledged is held (in order) until the next Welcome
 * says which of it the core handled; a client without an outbox just forgets it. */
static void hold_unacknowledged(KegnetClient *c) {
        if (c->producer && c->acked_mode) {
                list_splice(&c->held, &c->unacked);
                list_splice(&c->held, &c->sendq);
        } else if (c->producer) {
                /* Without acknowledgements what was written counts as delivered; the rest goes
                 * back to the outbox. */
                list_clear(&c->unacked);
                while (c->sendq.head) {
                        Entry *e = c->sendq.head;
                        list_remove(&c->sendq, e);
                        outbox_add(c, e);
                }
        } else {
                list_clear(&c->unacked);
                list_clear(&c->sendq);
        }
        c->sendq_bytes = 0;
        for (Entry *e = c->held.head; e; e = e->next)
                e->written = 0;
}

/* The Welcome said the core handled everything up to 'acked': the rest of what was held goes back
 * in front of the outbox, which it is older than. */
static void release_held(KegnetClient *c, uint64_t acked) {
        EntryList older = c->held, newer = c->outbox;
        uint64_t dropped = 0;

        c->held = (EntryList) {};
        c->outbox = (EntryList) {};
        while (older.head) {
                Entry *e = older.head;
                list_remove(&older, e);
                if (e->seq != 0 && e->seq <= acked) {
                        dropped++;
                        entry_release(c, e);
                } else
                        outbox_add(c, e);
        }
        while (newer.head) {
                Entry *e = newer.head;
                list_remove(&newer, e);
                outbox_add(c, e);
        }
        if (dropped > 0)
                log_debug("The core had handled %" PRIu64 " more message(s) before the connection ended", dropped);
}

/* ---- connection ---- */

static int client_attempt(KegnetClient *c);
static void client_attempt_failed(KegnetClient *c, int error);
static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static uint64_t client_now(KegnetClient *c) {
        uint64_t t = 0;
        (void) sd_event_now(c->event, CLOCK_MONOTONIC, &t);
        return t;
}

static void client_close_socket(KegnetClient *c) {
        c->io = sd_event_source_disable_unref(c->io);
        c->defer = sd_event_source_disable_unref(c->defer);
        c->flush_notify = sd_event_source_disable_unref(c->flush_notify);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->fd = safe_close(c->fd);
        kegnet_splitter_done(&c->splitter);
        c->pending_error = 0;
        c->shut_wr = false;
        c->generation++;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KegnetClient *c = userdata;

        c->timer = sd_event_source_disable_unref(c->timer);
        if (c->state == STATE_CONNECTING || c->state == STATE_HANDSHAKE) {
                /* connect() or the core's Welcome took too long: count it as a failed attempt. */
                client_attempt_failed(c, -ETIMEDOUT);
                return 0;
        }
        if (c->state == STATE_WAITING)
                (void) client_attempt(c);
        return 0;
}

static int client_arm_timer(KegnetClient *c, uint64_t delay) {
        int r;

        c->timer = sd_event_source_disable_unref(c->timer);
        /* Accuracy a hundredth of the backoff unit (10 ms): retries and the connect timeout. */
        r = event_timer_arm(c->event, &c->timer, client_now(c) + delay, MAX(c->unit / 100, (uint64_t) 1), on_timer, c);
        if (r < 0)
                return log_error_errno(r, "Failed to arm kegnet timer: %m");
        (void) sd_event_source_set_description(c->timer, "kegnet-client-timer");
        return 0;
}

static void client_attempt_failed(KegnetClient *c, int error) {
        client_close_socket(c);
        hold_unacknowledged(c);
        c->failures++;

        if (c->refused_reason) {
                log_warning("The core refused the connection: %s", c->refused_reason);
                c->refused_reason = mfree(c->refused_reason);
        }
        if (!c->reconnect) {
                log_debug_errno(error, "Connection to %s failed: %m", c->display);
                c->state = STATE_DONE;
        } else {
                unsigned secs = backoff_seconds[MIN(c->failures - 1, ELEMENTSOF(backoff_seconds) - 1)];
                log_debug_errno(error, "Connection to %s failed: %m", c->display);
                log_warning("Connection failed. Retry in %u seconds.", secs);
                c->state = STATE_WAITING;
                if (client_arm_timer(c, secs * c->unit) < 0)
                        c->state = STATE_DONE;
        }
        if (c->cb.connect_failed)
                c->cb.connect_failed(c, error, c->userdata);
}

static void client_update_events(KegnetClient *c) {
        if (!c->io)
                return;
        uint32_t ev = EPOLLIN | EPOLLRDHUP;
        if (c->sendq.head && !c->pending_error)
                ev |= EPOLLOUT;
        (void) sd_event_source_set_io_events(c->io, ev);
}

static void drain_complete(KegnetClient *c, bool flushed);

static void client_lost(KegnetClient *c, int error) {
        bool again = c->reconnect && !c->finishing;
        /* A graceful end: everything was written and the write side shut before the peer closed. */
        bool all_sent = error == 0 && c->finishing && c->shut_wr;
        /* A direct write emptied the queue but its 'flushed' notification still waits for the loop
         * (the loss can be dispatched first, e.g. the core's EOF noticed in the same epoll wakeup as
         * the board data that was sent): the bytes did go out, so say so before 'disconnected'
         * instead of dropping the notification with the socket. */
        bool flushed = c->flush_notify && !c->sendq.head && !c->unacked.head && !c->pending_error;

        if (c->state == STATE_HANDSHAKE) {
                /* No Welcome: the core had no slot for us (or went away at once). */
                client_attempt_failed(c, error < 0 ? error : -ECONNREFUSED);
                return;
        }

        client_close_socket(c);
        hold_unacknowledged(c);
        if (error < 0)
                log_debug_errno(error, "Connection to %s lost: %m", c->display);
        log_warning("Disconnected!");

        if (!again)
                c->state = STATE_DONE;
        else {
                /* Reconnect at once, but never sooner than 5 s after the previous attempt, so a
                 * connection that drops right after connecting cannot make a tight loop. */
                uint64_t now = client_now(c), earliest = c->last_attempt + MIN_SPACING_SECONDS * c->unit;
                c->state = STATE_WAITING;
                if (client_arm_timer(c, earliest > now ? earliest - now : 0) < 0)
                        c->state = STATE_DONE;
        }
        if (flushed && c->cb.flushed)
                c->cb.flushed(c, c->userdata);
        if (c->cb.disconnected)
                c->cb.disconnected(c, error, c->userdata);
        if (c->finishing)
                drain_complete(c, all_sent);
}

/* Numbers an entry and puts it on the send queue. */
static void sendq_push(KegnetClient *c, Entry *e) {
        e->written = 0;
        e->seq = c->next_seq++;
        list_append(&c->sendq, e);
        c->sendq_bytes += e->frame.len;
}

static int client_write_direct(KegnetClient *c);

static void client_send_hello(KegnetClient *c) {
        KegnetMessage m = {
                .kind = KEGNET_HELLO,
                .hello = {
                        .role = c->role,
                        .name = program_invocation_short_name,
                        .session = c->session,
                        .has_seq = true,
                        /* The oldest frame we still hold, or the next one. */
                        .seq = c->held.head ? c->held.head->seq : c->next_seq,
                        .has_events = c->has_events,
                        .events = c->events,
                },
        };
        Entry *e = NULL;
        int r;

        r = entry_new(c, &m, &e);
        if (r < 0) {
                client_attempt_failed(c, r);
                return;
        }
        if (c->debug_events)
                log_debug("Sending: %.*s", (int) (e->frame.len - 2), e->frame.buf);
        /* The Hello is no frame of the session: it is not numbered and never held. */
        list_append(&c->sendq, e);
        c->sendq_bytes += e->frame.len;
        (void) client_write_direct(c);
}

/* The TCP (or Unix) connection is up: say Hello and wait for the Welcome, within the attempt's
 * timeout. */
static void client_handshake(KegnetClient *c) {
        c->state = STATE_HANDSHAKE;
        c->acked_mode = false;
        c->refused_reason = mfree(c->refused_reason);
        kegnet_splitter_init(&c->splitter);
        client_update_events(c);
        if (!c->timer && c->connect_timeout > 0 && client_arm_timer(c, c->connect_timeout) < 0) {
                client_attempt_failed(c, -ENOMEM);
                return;
        }
        client_send_hello(c);
}

static void client_welcomed(KegnetClient *c, const KegnetWelcome *w) {
        uint64_t gen;

        if (c->role == KEGNET_ROLE_PRODUCER && w->role != KEGNET_ROLE_PRODUCER) {
                log_error("The core does not accept producer messages from this program: %s",
                          w->reason ?: "no reason given");
                client_attempt_failed(c, -EPERM);
                return;
        }

        c->timer = sd_event_source_disable_unref(c->timer);
        c->state = STATE_CONNECTED;
        c->failures = 0;
        log_ratelimit_forget(&c->bad_rl);
        c->acked_mode = w->has_acked;
        /* Frames from here on are numbered acked + 1, + 2, ...; whatever is held past 'acked' was
         * never handled and is sent again. */
        if (w->has_acked) {
                release_held(c, w->acked);
                c->next_seq = w->acked + 1;
        } else
                release_held(c, 0);
        client_update_events(c);
        log_info("Connected!");

        gen = c->generation;
        if (c->cb.connected)
                c->cb.connected(c, c->userdata);
        if (c->state != STATE_CONNECTED || c->generation != gen)
                return;

        if (c->outbox_dropped > 0) {
                log_warning("%" PRIu64 " message(s) were dropped from the full outbox while disconnected",
                            c->outbox_dropped);
                c->outbox_dropped = 0;
                log_ratelimit_forget(&c->drop_rl);
        }
        /* After whatever the connected callback sent (the ControllerConnectedEvent), in order. */
        while (c->outbox.head) {
                Entry *e = c->outbox.head;
                list_remove(&c->outbox, e);
                sendq_push(c, e);
        }
        if (c->sendq.head)
                (void) client_write_direct(c);
        else
                client_update_events(c);
        /* A drain was waiting for this connection: the outbox is queued, now end it (finishing
         * waits for the core to acknowledge what was written). */
        if (c->drained && c->state == STATE_CONNECTED && !c->pending_error)
                (void) kegnet_client_finish(c);
}

static int client_attempt(KegnetClient *c) {
        _cleanup_(closep) int fd = -1;
        int r;

        log_info("Connecting to %s", c->display);
        c->last_attempt = client_now(c);
        c->state = STATE_CONNECTING;

        fd = socket(c->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = -errno;
                client_attempt_failed(c, r);
                return r;
        }
        if (c->sa.ss_family != AF_UNIX) {
                int one = 1;
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }

        bool in_progress = false;
        if (connect(fd, (struct sockaddr *) &c->sa, c->salen) < 0) {
                if (errno != EINPROGRESS && errno != EAGAIN) {
                        r = -errno;
                        client_attempt_failed(c, r);
                        return r;
                }
                in_progress = true;
        }

        r = sd_event_add_io(c->event, &c->io, fd, in_progress ? EPOLLOUT : EPOLLIN, on_io, c);
        if (r < 0) {
                client_attempt_failed(c, r);
                return r;
        }
        (void) sd_event_source_set_description(c->io, "kegnet-client-io");
        c->fd = TAKE_FD(fd);

        if (c->connect_timeout > 0) {
                r = client_arm_timer(c, c->connect_timeout);
                if (r < 0) {
                        client_attempt_failed(c, r);
                        return r;
                }
        }
        if (!in_progress)
                client_handshake(c);
        return 0;
}

/* ---- receiving ---- */

static void client_bad_frame(KegnetClient *c, const char *why) {
        if (log_ratelimit_pass(&c->bad_rl, LOG_WARNING, LOG_COMPONENT))
                log_warning("Dropping bad frame from %s: %s", c->display, why);
        else
                log_debug("Dropping bad frame from %s: %s", c->display, why);
}

static void client_flushed_check(KegnetClient *c);

static void client_acked(KegnetClient *c, uint64_t acked) {
        bool had = c->unacked.head != NULL;

        while (c->unacked.head && c->unacked.head->seq <= acked) {
                Entry *e = c->unacked.head;
                list_remove(&c->unacked, e);
                entry_release(c, e);
        }
        if (had)
                client_flushed_check(c);
}

static void client_handle_frame(KegnetClient *c, const char *f, size_t n) {
        KegnetMessage m;
        char *err = NULL;
        int r;

        r = kegnet_message_parse(f, n, &m, &err);
        if (r == -ENODATA)
                ;
        else if (r < 0)
                client_bad_frame(c, err ? err : "out of memory");
        else if (m.kind == KEGNET_UNKNOWN)
                log_debug("Ignoring event %s", m.event_name);
        else {
                if (c->debug_events)
                        log_debug("Received: %.*s", (int) n, f);
                switch (m.kind) {
                case KEGNET_WELCOME:
                        if (c->state == STATE_HANDSHAKE)
                                client_welcomed(c, &m.welcome);
                        else
                                log_debug("Ignoring a Welcome outside of the handshake");
                        break;
                case KEGNET_ACK:
                        if (c->state == STATE_CONNECTED && c->acked_mode)
                                client_acked(c, m.ack.acked);
                        break;
                case KEGNET_REFUSED:
                        free(c->refused_reason);
                        c->refused_reason = strdup(m.refused.reason);
                        break;
                case KEGNET_HELLO:
                        log_debug("Ignoring a Hello from the core");
                        break;
                default:
                        if (c->cb.message)
                                c->cb.message(c, &m, c->userdata);
                }
        }
        free(err);
        kegnet_message_done(&m);
}

static void client_read(KegnetClient *c) {
        uint64_t gen = c->generation;

        if (!c->rbuf) {
                c->rbuf = malloc(READ_CHUNK);
                if (!c->rbuf)
                        return;     /* try again on the next wakeup */
        }
        char *buf = c->rbuf;

        /* A bounded number of reads per wakeup keeps one busy peer from starving the loop. */
        for (int round = 0; round < 16; round++) {
                ssize_t l = recv(c->fd, buf, READ_CHUNK, MSG_DONTWAIT);
                if (l < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                client_lost(c, -errno);
                        break;
                }
                if (l == 0) {
                        client_lost(c, 0);
                        break;
                }
                if (kegnet_splitter_feed(&c->splitter, buf, (size_t) l) < 0) {
                        client_lost(c, -ENOMEM);
                        break;
                }

                const char *f;
                size_t n;
                int r;
                while ((r = kegnet_splitter_next(&c->splitter, &f, &n)) > 0) {
                        client_handle_frame(c, f, n);
                        if (c->generation != gen)
                                return;
                }
                if (r < 0) {
                        log_warning("Frame from %s exceeds %u bytes; closing the connection",
                                    c->display, KEGNET_MAX_FRAME);
                        client_lost(c, -EMSGSIZE);
                        break;
                }
                if ((size_t) l < READ_CHUNK)
                        break;
        }
}

/* ---- sending ---- */

/* A written entry: kept until acknowledged when the core acknowledges, else done with. */
static void entry_written(KegnetClient *c, Entry *e) {
        list_remove(&c->sendq, e);
        if (c->acked_mode && e->seq != 0)
                list_append(&c->unacked, e);
        else
                entry_release(c, e);
}

/* Writes what the socket takes. Returns 0, or a negative errno (the caller handles the loss;
 * -ENOBUFS: too much unacknowledged, logged here). */
static int client_write_some(KegnetClient *c) {
        while (c->sendq.head) {
                Entry *e = c->sendq.head;
                ssize_t l = send(c->fd, e->frame.buf + e->written, e->frame.len - e->written, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (l < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                e->written += (size_t) l;
                c->sendq_bytes -= (size_t) l;
                if (e->written == e->frame.len)
                        entry_written(c, e);
        }
        if (c->unacked.n > KEGNET_CLIENT_UNACKED_MAX) {
                log_warning("The core at %s has not acknowledged %zu messages; reconnecting",
                            c->display, c->unacked.n);
                return -ENOBUFS;
        }
        return 0;
}

/* Nothing left to write or to be acknowledged: when finishing, half-close; tell the caller. */
static void client_flushed_check(KegnetClient *c) {
        if (c->sendq.head || c->unacked.head || c->state != STATE_CONNECTED)
                return;
        if (c->finishing && !c->shut_wr) {
                /* Half-close and keep reading until the peer closes too: closing with unread input
                 * would send an RST that can destroy data the peer has not read yet. */
                if (shutdown(c->fd, SHUT_WR) < 0) {
                        client_lost(c, -errno);
                        return;
                }
                c->shut_wr = true;
        }
        if (c->cb.flushed)
                c->cb.flushed(c, c->userdata);
}

static void client_write(KegnetClient *c) {
        bool had = c->sendq.head != NULL;
        int r;

        r = client_write_some(c);
        if (r < 0) {
                client_lost(c, r);
                return;
        }
        client_update_events(c);
        if (had && !c->sendq.head)
                client_flushed_check(c);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        KegnetClient *c = userdata;

        if (c->state == STATE_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err == 0 && (revents & (EPOLLERR | EPOLLHUP)))
                        err = ECONNREFUSED;
                if (err != 0) {
                        client_attempt_failed(c, -err);
                        return 0;
                }
                client_handshake(c);
                return 0;
        }
        if (c->state != STATE_CONNECTED && c->state != STATE_HANDSHAKE)
                return 0;

        if (c->pending_error) {
                client_lost(c, c->pending_error);
                return 0;
        }

        uint64_t gen = c->generation;
        if (revents & EPOLLOUT) {
                client_write(c);
                if (c->generation != gen)
                        return 0;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
                client_read(c);
        return 0;
}

static int on_defer(sd_event_source *s, void *userdata) {
        KegnetClient *c = userdata;

        c->defer = sd_event_source_disable_unref(c->defer);
        if ((c->state == STATE_CONNECTED || c->state == STATE_HANDSHAKE) && c->pending_error)
                client_lost(c, c->pending_error);
        return 0;
}

/* The connection is beyond saving: stop writing and close it from the loop. What it did not get
 * acknowledged is held from now on, so that later sends queue behind it. */
static void client_doom(KegnetClient *c, int error) {
        c->pending_error = error;
        client_update_events(c);
        if (c->defer)
                return;
        if (sd_event_add_defer(c->event, &c->defer, on_defer, c) >= 0)
                (void) sd_event_source_set_description(c->defer, "kegnet-client-lost");
        else
                /* Makes the socket readable (EOF) at once, which gets us to on_io() and client_lost(). */
                (void) shutdown(c->fd, SHUT_RDWR);
}

static int on_flush_notify(sd_event_source *s, void *userdata) {
        KegnetClient *c = userdata;

        c->flush_notify = sd_event_source_disable_unref(c->flush_notify);
        /* Not after client_doom(): what it holds was not delivered. */
        if (c->state == STATE_CONNECTED && !c->pending_error)
                client_flushed_check(c);
        return 0;
}

/* Write the queue from inside kegnet_client_send(): never calls back into the caller; errors and
 * the 'flushed' notification are delivered on the loop. */
static int client_write_direct(KegnetClient *c) {
        int r;

        r = client_write_some(c);
        if (r < 0) {
                client_doom(c, r);
                return 0;
        }
        client_update_events(c);
        if (c->state == STATE_CONNECTED && !c->sendq.head && !c->unacked.head && c->cb.flushed && !c->flush_notify &&
            sd_event_add_defer(c->event, &c->flush_notify, on_flush_notify, c) >= 0)
                (void) sd_event_source_set_description(c->flush_notify, "kegnet-client-flushed");
        return 0;
}

int kegnet_client_send(KegnetClient *c, const KegnetMessage *m) {
        Entry *e = NULL;
        bool up;
        int r;

        assert_return(c, -EINVAL);
        assert_return(m, -EINVAL);
        if (c->finishing)
                return -ESHUTDOWN;
        up = c->state == STATE_CONNECTED && !c->pending_error;
        if (!up && (!c->producer || c->state == STATE_DONE))
                return -ENOTCONN;

        r = entry_new(c, m, &e);
        if (r < 0)
                return r;

        if (c->debug_events)
                log_debug("Sending: %.*s", (int) (e->frame.len - 2), e->frame.buf);

        if (!up) {
                outbox_add(c, e);
                return 0;
        }

        sendq_push(c, e);
        if (c->sendq.head == e && !c->shut_wr)
                /* The common case: nothing queued, so write now rather than arm EPOLLOUT and come
                 * back a loop iteration later (two epoll_ctl calls and a wakeup per message). */
                return client_write_direct(c);
        if (c->sendq_bytes > KEGNET_CLIENT_SEND_BUFFER_MAX) {
                log_warning("Send buffer to %s exceeds %u bytes; the core is not reading",
                            c->display, KEGNET_CLIENT_SEND_BUFFER_MAX);
                /* Closed on the loop, so that callers never see callbacks from inside send(). */
                client_doom(c, -ENOBUFS);
                return 0;
        }
        client_update_events(c);
        return 0;
}

int kegnet_client_finish(KegnetClient *c) {
        assert_return(c, -EINVAL);
        if (c->state != STATE_CONNECTED)
                return -ENOTCONN;
        if (c->finishing)
                return 0;
        c->finishing = true;
        client_update_events(c);
        if (!c->sendq.head && !c->unacked.head && !c->pending_error) {
                if (shutdown(c->fd, SHUT_WR) < 0)
                        client_doom(c, -errno);
                else
                        c->shut_wr = true;
                client_update_events(c);
        }
        return 0;
}

static void drain_complete(KegnetClient *c, bool flushed) {
        KegnetClientDrained cb = c->drained;

        if (!cb)
                return;
        c->drained = NULL;
        c->drain_timer = sd_event_source_disable_unref(c->drain_timer);
        cb(c, flushed, c->drained_userdata);
}

static int on_drain_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KegnetClient *c = userdata;

        log_debug("kegnet: not everything reached %s in time", c->display);
        drain_complete(c, false);
        return 0;
}

int kegnet_client_drain(KegnetClient *c, uint64_t timeout_usec, KegnetClientDrained drained, void *userdata) {
        uint64_t deadline;
        int r;

        assert_return(c, -EINVAL);
        assert_return(drained, -EINVAL);
        if (c->drained)
                return -EALREADY;

        /* No connection will ever come (one-shot client that failed, or finished): at once. */
        deadline = c->state == STATE_DONE ? 0 : client_now(c) + timeout_usec;
        r = event_timer_arm(c->event, &c->drain_timer, deadline, USEC_PER_MSEC, on_drain_timer, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->drain_timer, "kegnet-client-drain");
        c->drained = drained;
        c->drained_userdata = userdata;
        if (c->state == STATE_CONNECTED && !c->pending_error)
                (void) kegnet_client_finish(c);
        return 0;
}

/* ---- setup ---- */

static int address_unix(KegnetClient *c, const char *path) {
        struct sockaddr_un *un = (struct sockaddr_un *) &c->sa;
        size_t n = strlen(path);

        if (n == 0 || n >= sizeof un->sun_path || path[0] != '/')
                return log_error_errno(-EINVAL, "Invalid kegnet address 'unix:%s' (expected unix:/absolute/path)", path);
        memset(&c->sa, 0, sizeof c->sa);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, n);
        c->salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);
        c->display = strdup_printf(UNIX_PREFIX "%s", path);
        return c->display ? 0 : -ENOMEM;
}

static int address_inet(KegnetClient *c, const char *address) {
        _cleanup_(freep) char *host = NULL;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP };
        struct addrinfo *ai = NULL;
        uint16_t port;
        int r;

        r = kegnet_address_parse(address, &host, &port);
        if (r == -ENOMEM)
                return log_error_errno(r, "Out of memory");
        if (r < 0 || port == 0)
                return log_error_errno(-EINVAL, "Invalid kegnet address '%s' (expected host:port, port or unix:/path)",
                                       address);

        /* Resolved once, here: the address never moves while the program runs. */
        r = getaddrinfo(host, NULL, &hints, &ai);
        if (r != 0 || !ai)
                return log_error_errno(-EADDRNOTAVAIL, "Cannot resolve kegnet host '%s': %s", host,
                                       r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
        if ((size_t) ai->ai_addrlen > sizeof c->sa) {
                freeaddrinfo(ai);
                return log_error_errno(-EAFNOSUPPORT, "Unsupported address for '%s'", host);
        }
        memcpy(&c->sa, ai->ai_addr, ai->ai_addrlen);
        c->salen = ai->ai_addrlen;
        freeaddrinfo(ai);
        if (c->sa.ss_family == AF_INET)
                ((struct sockaddr_in *) &c->sa)->sin_port = htons(port);
        else if (c->sa.ss_family == AF_INET6)
                ((struct sockaddr_in6 *) &c->sa)->sin6_port = htons(port);
        else
                return log_error_errno(-EAFNOSUPPORT, "Unsupported address family for '%s'", host);

        c->display = strdup_printf(strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned) port);
        return c->display ? 0 : -ENOMEM;
}

int kegnet_client_new(KegnetClient **ret, sd_event *event, const char *address,
                      const KegnetClientCallbacks *callbacks, void *userdata) {
        _cleanup_(kegnet_client_freep) KegnetClient *c = NULL;
        const char *path;
        int r;

        assert_return(ret, -EINVAL);
        assert_return(event, -EINVAL);
        assert_return(address, -EINVAL);

        c = calloc(1, sizeof(KegnetClient));
        if (!c)
                return -ENOMEM;
        c->fd = -1;
        c->reconnect = true;
        c->role = KEGNET_ROLE_LISTENER;
        c->next_seq = 1;
        c->unit = USEC_PER_SEC;
        c->connect_timeout = 10 * USEC_PER_SEC;
        c->event = sd_event_ref(event);
        if (callbacks)
                c->cb = *callbacks;
        c->userdata = userdata;
        c->drop_rl = (LogRateLimit) LOG_RATELIMIT_INIT("messages dropped from the full outbox", BAD_FRAME_WARN_INTERVAL, 1);
        c->bad_rl = (LogRateLimit) LOG_RATELIMIT_INIT("bad frames from the core", BAD_FRAME_WARN_INTERVAL, 1);
        r = uuid_generate(c->session);
        if (r < 0)
                return log_error_errno(r, "Cannot create a kegnet session id: %m");

        path = startswith(address, UNIX_PREFIX);
        r = path ? address_unix(c, path) : address_inet(c, address);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

KegnetClient *kegnet_client_free(KegnetClient *c) {
        if (!c)
                return NULL;
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->defer = sd_event_source_disable_unref(c->defer);
        c->flush_notify = sd_event_source_disable_unref(c->flush_notify);
        c->drain_timer = sd_event_source_disable_unref(c->drain_timer);
        c->fd = safe_close(c->fd);
        kegnet_splitter_done(&c->splitter);
        list_clear(&c->sendq);
        list_clear(&c->unacked);
        list_clear(&c->held);
        list_clear(&c->outbox);
        list_clear(&c->spare);
        strbuf_done(&c->encoded);
        log_ratelimit_forget(&c->drop_rl);
        log_ratelimit_forget(&c->bad_rl);
        sd_event_unref(c->event);
        free(c->refused_reason);
        free(c->rbuf);
        free(c->display);
        free(c);
        return NULL;
}

void kegnet_client_set_producer(KegnetClient *c, bool producer) {
        assert_return(c, );
        c->producer = producer;
        if (producer)
                c->role = KEGNET_ROLE_PRODUCER;
}

void kegnet_client_set_role(KegnetClient *c, KegnetRole role) {
        assert_return(c, );
        assert_return(role == KEGNET_ROLE_LISTENER || role == KEGNET_ROLE_PRODUCER, );
        c->role = role;
}

void kegnet_client_set_events(KegnetClient *c, unsigned events) {
        assert_return(c, );
        assert_return(!(events & ~KEGNET_EVENTS_BROADCAST), );
        c->has_events = true;
        c->events = events;
}

void kegnet_client_set_reconnect(KegnetClient *c, bool reconnect) {
        assert_return(c, );
        c->reconnect = reconnect;
}

void kegnet_client_set_debug_events(KegnetClient *c, bool on) {
        assert_return(c, );
        c->debug_events = on;
}

void kegnet_client_set_timing(KegnetClient *c, uint64_t unit_usec, uint64_t connect_timeout_usec) {
        assert_return(c, );
        c->unit = unit_usec > 0 ? unit_usec : USEC_PER_SEC;
        c->connect_timeout = connect_timeout_usec;
}

int kegnet_client_start(KegnetClient *c) {
        assert_return(c, -EINVAL);
        if (c->state != STATE_IDLE)
                return -EALREADY;
        (void) client_attempt(c);
        return 0;
}

bool kegnet_client_is_connected(const KegnetClient *c) {
        return c && c->state == STATE_CONNECTED && !c->pending_error;
}

bool kegnet_client_is_flushed(const KegnetClient *c) {
        return !c || (!c->sendq.head && !c->unacked.head && !c->held.head && !c->outbox.head);
}

size_t kegnet_client_outbox_size(const KegnetClient *c) {
        return c ? c->outbox.n + c->held.n : 0;
}

size_t kegnet_client_send_queue_bytes(const KegnetClient *c) {
        return c ? c->sendq_bytes : 0;
}

size_t kegnet_client_unacked(const KegnetClient *c) {
        return c ? c->unacked.n : 0;
}

bool kegnet_client_reset_pending(const KegnetClient *c, const char *controller_name) {
        const EntryList *lists[4];

        if (!c)
                return false;
        lists[0] = &c->held;
        lists[1] = &c->outbox;
        lists[2] = &c->sendq;
        lists[3] = &c->unacked;
        for (size_t j = 0; j < ELEMENTSOF(lists); j++)
                for (Entry *i = lists[j]->head; i; i = i->next)
                        if (entry_is_reset(i) && streq(strbuf_str(&i->key), controller_name))
                                return true;
        return false;
}

const char *kegnet_client_address(const KegnetClient *c) {
        return c ? c->display : NULL;
}
