/* Reconnecting kegnet client (spec/kegnet-protocol.md section 6). kegnet_client_send() writes at once
 * when nothing is queued (never blocking: MSG_DONTWAIT), otherwise the IO event handler writes; it never
 * calls back into the caller: errors and the 'flushed' notification are delivered from the loop. */
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
#include <unistd.h>

#define LOG_COMPONENT "kegnet"
#include "log.h"

#include "kegnet-client.h"
#include "util-event.h"

/* Seconds to wait after the n-th consecutive failed attempt (index min(n-1, 6)). */
static const unsigned backoff_seconds[] = { 5, 5, 10, 10, 20, 20, 60 };
#define MIN_SPACING_SECONDS 5U
#define BAD_FRAME_WARN_INTERVAL (60 * USEC_PER_SEC)
#define READ_CHUNK 65536

typedef struct Entry Entry;
struct Entry {
        Entry *prev, *next;
        KegnetKind kind;
        char *key;              /* meter_name of a MeterUpdate, controller_name of a ControllerConnectedEvent */
        bool board_reset;
        char *frame;            /* encoded, with the terminator */
        size_t size;
        size_t written;         /* bytes of it already sent on the current connection */
};

typedef struct EntryList {
        Entry *head, *tail;
        size_t n;
} EntryList;

typedef enum ClientState {
        STATE_IDLE,             /* not started */
        STATE_CONNECTING,       /* non-blocking connect in flight */
        STATE_CONNECTED,
        STATE_WAITING,          /* next attempt scheduled */
        STATE_DONE,             /* no more attempts (one-shot, or finished) */
} ClientState;

struct KegnetClient {
        sd_event *event;
        KegnetClientCallbacks cb;
        void *userdata;

        char *display;          /* "host:port" for log lines */
        struct sockaddr_storage sa;
        socklen_t salen;

        bool producer, reconnect, debug_events;
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

        KegnetSplitter splitter;
        char *rbuf;
        EntryList outbox;
        EntryList sendq;
        size_t sendq_bytes;
        int pending_error;      /* connection already judged lost; handled on the loop */
        bool finishing, shut_wr;

        /* kegnet_client_drain() */
        sd_event_source *drain_timer;
        KegnetClientDrained drained;
        void *drained_userdata;

        uint64_t outbox_dropped;
        uint64_t last_drop_warning;
        uint64_t last_bad_warning;
        unsigned bad_suppressed;
};

/* ---- entries ---- */

static Entry *entry_free(Entry *e) {
        if (!e)
                return NULL;
        free(e->key);
        free(e->frame);
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

static void list_clear(EntryList *l) {
        while (l->head) {
                Entry *e = l->head;
                list_remove(l, e);
                entry_free(e);
        }
}

static int entry_new(const KegnetMessage *m, Entry **ret) {
        _cleanup_(freep) char *frame = NULL;
        const char *key = NULL;
        size_t size;
        Entry *e;
        int r;

        r = kegnet_message_encode(m, &frame, &size);
        if (r < 0)
                return r;

        e = calloc(1, sizeof(Entry));
        if (!e)
                return -ENOMEM;
        e->kind = m->kind;
        if (m->kind == KEGNET_METER_UPDATE)
                key = m->meter_update.meter_name;
        else if (m->kind == KEGNET_CONTROLLER_CONNECTED_EVENT) {
                key = m->controller_connected_event.controller_name;
                e->board_reset = m->controller_connected_event.board_reset;
        }
        if (key) {
                e->key = strdup(key);
                if (!e->key)
                        return entry_free(e), -ENOMEM;
        }
        e->frame = TAKE_PTR(frame);
        e->size = size;
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

        switch (e->kind) {
        case KEGNET_METER_UPDATE: {
                /* Readings are absolute: the newest one replaces a queued one for the same meter, unless
                 * a board reset sits between them (the core must see old reading, reset, new reading). */
                bool reset_after = false;
                for (Entry *i = c->outbox.tail; i; i = i->prev) {
                        if (entry_is_reset(i))
                                reset_after = true;
                        else if (i->kind == KEGNET_METER_UPDATE && streq(i->key, e->key)) {
                                if (reset_after)
                                        break;
                                free(i->frame);
                                i->frame = TAKE_PTR(e->frame);
                                i->size = e->size;
                                entry_free(e);
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
                entry_free(e);
                return;
        default:
                log_debug("Not queueing %s while disconnected", kegnet_kind_to_string(e->kind));
                entry_free(e);
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
                uint64_t now = client_now(c);
                if (c->last_drop_warning == 0 || now >= c->last_drop_warning + 60 * USEC_PER_SEC) {
                        log_warning("Outbox full (%u entries): dropping the oldest queued messages; %" PRIu64 " dropped so far",
                                    KEGNET_CLIENT_OUTBOX_MAX, c->outbox_dropped);
                        c->last_drop_warning = now ? now : 1;
                } else
                        log_debug("Outbox full: dropped a queued %s", kegnet_kind_to_string(victim->kind));
                entry_free(victim);
        }
}

/* Unsent messages of a lost connection go back to the outbox (a producer's), oldest first. */
static void requeue_sendq(KegnetClient *c) {
        while (c->sendq.head) {
                Entry *e = c->sendq.head;
                list_remove(&c->sendq, e);
                if (c->producer)
                        outbox_add(c, e);
                else
                        entry_free(e);
        }
        c->sendq_bytes = 0;
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
        if (c->state == STATE_CONNECTING) {
                /* connect() took too long: count it as a failed attempt. */
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
        c->failures++;

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
        bool flushed = c->flush_notify && !c->sendq.head && !c->pending_error;

        client_close_socket(c);
        requeue_sendq(c);
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

static void client_connected(KegnetClient *c) {
        uint64_t gen;

        c->timer = sd_event_source_disable_unref(c->timer);
        c->state = STATE_CONNECTED;
        c->failures = 0;
        c->last_bad_warning = 0;
        c->bad_suppressed = 0;
        kegnet_splitter_init(&c->splitter);
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
                c->last_drop_warning = 0;
        }
        /* After whatever the connected callback sent (the ControllerConnectedEvent), in order. */
        while (c->outbox.head) {
                Entry *e = c->outbox.head;
                list_remove(&c->outbox, e);
                list_append(&c->sendq, e);
                c->sendq_bytes += e->size;
        }
        client_update_events(c);
        /* A drain was waiting for this connection: the outbox is queued, now end it. */
        if (c->drained)
                (void) kegnet_client_finish(c);
}

static int client_attempt(KegnetClient *c) {
        _cleanup_(closep) int fd = -1;
        int r;

        log_info("Connecting to %s", c->display);
        c->last_attempt = client_now(c);
        c->state = STATE_CONNECTING;

        fd = socket(c->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0) {
                r = -errno;
                client_attempt_failed(c, r);
                return r;
        }
        int one = 1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

        bool in_progress = false;
        if (connect(fd, (struct sockaddr *) &c->sa, c->salen) < 0) {
                if (errno != EINPROGRESS) {
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

        if (!in_progress) {
                client_connected(c);
                return 0;
        }
        if (c->connect_timeout > 0) {
                r = client_arm_timer(c, c->connect_timeout);
                if (r < 0) {
                        client_attempt_failed(c, r);
                        return r;
                }
        }
        return 0;
}

/* ---- receiving ---- */

static void client_bad_frame(KegnetClient *c, const char *why) {
        uint64_t now = client_now(c);

        if (c->last_bad_warning != 0 && now < c->last_bad_warning + BAD_FRAME_WARN_INTERVAL) {
                c->bad_suppressed++;
                log_debug("Dropping bad frame from %s: %s", c->display, why);
                return;
        }
        if (c->bad_suppressed > 0)
                log_warning("Dropping bad frame from %s: %s (%u more since the last warning)",
                            c->display, why, c->bad_suppressed);
        else
                log_warning("Dropping bad frame from %s: %s", c->display, why);
        c->last_bad_warning = now ? now : 1;
        c->bad_suppressed = 0;
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
                if (c->cb.message)
                        c->cb.message(c, &m, c->userdata);
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

static void client_write(KegnetClient *c) {
        bool had = c->sendq.head != NULL;

        while (c->sendq.head) {
                Entry *e = c->sendq.head;
                ssize_t l = send(c->fd, e->frame + e->written, e->size - e->written, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (l < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        client_lost(c, -errno);
                        return;
                }
                e->written += (size_t) l;
                c->sendq_bytes -= (size_t) l;
                if (e->written == e->size) {
                        list_remove(&c->sendq, e);
                        entry_free(e);
                }
        }

        if (!c->sendq.head && c->finishing && !c->shut_wr) {
                /* Half-close and keep reading until the peer closes too: closing with unread input
                 * would send an RST that can destroy data the peer has not read yet. */
                if (shutdown(c->fd, SHUT_WR) < 0) {
                        client_lost(c, -errno);
                        return;
                }
                c->shut_wr = true;
        }
        client_update_events(c);

        if (had && !c->sendq.head && c->cb.flushed)
                c->cb.flushed(c, c->userdata);
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
                client_connected(c);
                return 0;
        }
        if (c->state != STATE_CONNECTED)
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
        if (c->state == STATE_CONNECTED && c->pending_error)
                client_lost(c, c->pending_error);
        return 0;
}

/* The connection is beyond saving: stop writing, hand unsent messages to the outbox now (so that
 * later sends queue behind them), and close it from the loop. */
static void client_doom(KegnetClient *c, int error) {
        c->pending_error = error;
        requeue_sendq(c);
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
        /* Not after client_doom(): what it moved back to the outbox was not written. */
        if (c->state == STATE_CONNECTED && !c->sendq.head && !c->pending_error && c->cb.flushed)
                c->cb.flushed(c, c->userdata);
        return 0;
}

/* Write the queue from inside kegnet_client_send(): never calls back into the caller; errors and
 * the 'flushed' notification are delivered on the loop. */
static int client_write_direct(KegnetClient *c) {
        while (c->sendq.head) {
                Entry *e = c->sendq.head;
                ssize_t l = send(c->fd, e->frame + e->written, e->size - e->written, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (l < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        client_doom(c, -errno);
                        return 0;
                }
                e->written += (size_t) l;
                c->sendq_bytes -= (size_t) l;
                if (e->written == e->size) {
                        list_remove(&c->sendq, e);
                        entry_free(e);
                }
        }
        client_update_events(c);
        if (!c->sendq.head && c->cb.flushed && !c->flush_notify &&
            sd_event_add_defer(c->event, &c->flush_notify, on_flush_notify, c) >= 0)
                (void) sd_event_source_set_description(c->flush_notify, "kegnet-client-flushed");
        return 0;
}

int kegnet_client_send(KegnetClient *c, const KegnetMessage *m) {
        Entry *e = NULL;
        int r;

        assert_return(c, -EINVAL);
        assert_return(m, -EINVAL);
        if (c->finishing)
                return -ESHUTDOWN;
        if (c->state != STATE_CONNECTED || c->pending_error) {
                if (!c->producer || c->state == STATE_DONE)
                        return -ENOTCONN;
        }

        r = entry_new(m, &e);
        if (r < 0)
                return r;

        if (c->debug_events)
                log_debug("Sending: %.*s", (int) (e->size - 2), e->frame);

        if (c->state != STATE_CONNECTED || c->pending_error) {
                outbox_add(c, e);
                return 0;
        }

        list_append(&c->sendq, e);
        c->sendq_bytes += e->size;
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
        if (!c->sendq.head && !c->pending_error) {
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

int kegnet_client_new(KegnetClient **ret, sd_event *event, const char *address,
                      const KegnetClientCallbacks *callbacks, void *userdata) {
        _cleanup_(kegnet_client_freep) KegnetClient *c = NULL;
        _cleanup_(freep) char *host = NULL;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP };
        struct addrinfo *ai = NULL;
        uint16_t port;
        int r;

        assert_return(ret, -EINVAL);
        assert_return(event, -EINVAL);
        assert_return(address, -EINVAL);

        r = kegnet_address_parse(address, &host, &port);
        if (r == -ENOMEM)
                return log_error_errno(r, "Out of memory");
        if (r < 0 || port == 0)
                return log_error_errno(-EINVAL, "Invalid kegnet address '%s' (expected host:port or port)", address);

        c = calloc(1, sizeof(KegnetClient));
        if (!c)
                return -ENOMEM;
        c->fd = -1;
        c->reconnect = true;
        c->unit = USEC_PER_SEC;
        c->connect_timeout = 10 * USEC_PER_SEC;
        c->event = sd_event_ref(event);
        if (callbacks)
                c->cb = *callbacks;
        c->userdata = userdata;

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

        if (asprintf(&c->display, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned) port) < 0) {
                c->display = NULL;
                return -ENOMEM;
        }

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
        list_clear(&c->outbox);
        sd_event_unref(c->event);
        free(c->rbuf);
        free(c->display);
        free(c);
        return NULL;
}

void kegnet_client_set_producer(KegnetClient *c, bool producer) {
        assert_return(c, );
        c->producer = producer;
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
        return !c || (!c->sendq.head && !c->outbox.head);
}

size_t kegnet_client_outbox_size(const KegnetClient *c) {
        return c ? c->outbox.n : 0;
}

size_t kegnet_client_send_queue_bytes(const KegnetClient *c) {
        return c ? c->sendq_bytes : 0;
}

bool kegnet_client_reset_pending(const KegnetClient *c, const char *controller_name) {
        if (!c)
                return false;
        for (const EntryList *l = &c->outbox; l; l = l == &c->outbox ? &c->sendq : NULL)
                for (Entry *i = l->head; i; i = i->next)
                        if (entry_is_reset(i) && streq_ptr(i->key, controller_name))
                                return true;
        return false;
}

const char *kegnet_client_address(const KegnetClient *c) {
        return c ? c->display : NULL;
}
