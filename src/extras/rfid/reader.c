/* One open reader: see reader.h. The backend-specific parts live in the I/O wrappers; this file
 * owns the node, the lock, the event sources, the presentation and the bad-input accounting. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "reader-internal.h"
#include "util-escape.h"
#include "util-event.h"
#include "util-string.h"

#define BAD_WINDOW_USEC (60 * USEC_PER_SEC)

static const char *const bad_names[_READER_BAD_MAX] = {
        [READER_BAD_SHORT_REPORT] = "short_report",
        [READER_BAD_UNKNOWN_TYPE] = "unknown_type",
        [READER_BAD_CHECKSUM] = "bad_checksum",
        [READER_BAD_CHARACTER] = "bad_character",
        [READER_BAD_TRAILER] = "bad_trailer",
        [READER_BAD_TRUNCATED] = "truncated",
        [READER_BAD_STALE] = "stale",
        [READER_BAD_NOISE] = "noise",
        [READER_BAD_SHIFTED_DIGIT] = "shifted_digit",
        [READER_BAD_KEY] = "bad_key",
        [READER_BAD_TOO_LONG] = "too_long",
        [READER_BAD_DROPPED] = "dropped",
        [READER_BAD_READ_ERROR] = "read errors",
        [READER_BAD_WRITE_ERROR] = "write errors",
};

static const ReaderBackendOps *backend_ops(RfidBackend b) {
        switch (b) {
        case RFID_BACKEND_PHIDGET:
                return &reader_phidget_ops;
        case RFID_BACKEND_ID12:
                return &reader_id12_ops;
        case RFID_BACKEND_KEYBOARD:
                return &reader_keyboard_ops;
#if HAVE_PHIDGET22
        case RFID_BACKEND_PHIDGET22:
                return &reader_phidget22_ops;
#endif
        default:
                return NULL;
        }
}

bool reader_errno_is_lost(int error) {
        switch (abs(error)) {
        case EIO: case ENODEV: case ENXIO: case ENOTCONN: case ESHUTDOWN:
                return true;
        default:
                return false;
        }
}

ssize_t reader_read(Reader *r, void *buf, size_t size) {
        for (;;) {
                ssize_t n = read(r->fd, buf, size);
                if (n > 0)
                        return n;
                if (n == 0)
                        return -ESHUTDOWN;
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        return 0;
                if (reader_errno_is_lost(errno))
                        return -errno;
                reader_bad(r, READER_BAD_READ_ERROR, "cannot read: %m");
                return 0;
        }
}

static uint64_t reader_now(Reader *r) {
        uint64_t now = 0;

        (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
        return now;
}

int reader_timer_set(Reader *r, sd_event_source **s, uint64_t usec, uint64_t accuracy,
                     sd_event_time_handler_t handler) {
        int k;

        if (usec == 0) {
                event_timer_disarm(*s);
                return 0;
        }
        k = event_timer_arm(r->event, s, usec, accuracy, handler, r);
        if (k < 0)
                return log_error_errno(k, "%s: cannot arm a timer: %m", r->node);
        return 0;
}

void reader_set_description(Reader *r, const char *format, ...) {
        va_list ap;

        free(r->description);
        va_start(ap, format);
        r->description = strdup_vprintf(format, ap);
        va_end(ap);
}

/* ---- bad input ---- */

static void bad_log_summary(Reader *r, ReaderBad kind) {
        ReaderBadCounter *c = &r->bad[kind];

        if (c->count > 0)
                log_warning("%s: %u more %s in the last minute", r->node, c->count, bad_names[kind]);
        c->count = 0;
}

static int on_bad_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void bad_timer_rearm(Reader *r) {
        uint64_t next = 0;

        for (unsigned i = 0; i < _READER_BAD_MAX; i++)
                if (r->bad[i].window && r->bad[i].count > 0 && (next == 0 || r->bad[i].window_end < next))
                        next = r->bad[i].window_end;
        /* Summaries are not urgent: a second of slack lets them share a wake-up. */
        (void) reader_timer_set(r, &r->bad_timer, next, USEC_PER_SEC, on_bad_timer);
}

static int on_bad_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Reader *r = userdata;
        uint64_t now = reader_now(r);

        for (unsigned i = 0; i < _READER_BAD_MAX; i++)
                if (r->bad[i].window && now >= r->bad[i].window_end) {
                        bad_log_summary(r, (ReaderBad) i);
                        r->bad[i].window = false;
                }
        bad_timer_rearm(r);
        return 0;
}

void reader_bad(Reader *r, ReaderBad kind, const char *format, ...) {
        ReaderBadCounter *c;
        uint64_t now;

        assert_return(r && (unsigned) kind < _READER_BAD_MAX, );

        c = &r->bad[kind];
        now = reader_now(r);
        if (c->window && now < c->window_end) {
                c->count++;
                bad_timer_rearm(r);
                return;
        }

        bad_log_summary(r, kind);
        c->window = true;
        c->window_end = now + BAD_WINDOW_USEC;
        if (kind == READER_BAD_NOISE) {
                /* Bytes before the first frame are normal after opening a port: summaries only. */
                c->count = 1;
                bad_timer_rearm(r);
                return;
        }

        char text[256];
        va_list ap;
        va_start(ap, format);
        (void) vsnprintf(text, sizeof(text), format, ap);
        va_end(ap);
        log_warning("%s: %s", r->node, text);
}

/* ---- presentations ---- */

static void dispatch(Reader *r, const PresenceEvent *ev, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (r->callbacks.token)
                        r->callbacks.token(r, &ev[i], r->userdata);
}

void reader_token_read(Reader *r, const char *token) {
        PresenceEvent ev[2];

        if (!rfid_token_is_valid(token)) {
                log_warning("%s: ignoring unusable token", r->node);
                return;
        }
        dispatch(r, ev, presence_read(&r->presence, token, r->now, ev));
}

void reader_token_gone(Reader *r) {
        PresenceEvent ev[1];

        dispatch(r, ev, presence_close(&r->presence, ev));
}

static int on_presence_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Reader *r = userdata;
        PresenceEvent ev[1];

        r->now = reader_now(r);
        dispatch(r, ev, presence_expire(&r->presence, r->now, ev));
        reader_after_event(r);
        return 0;
}

/* ---- life cycle ---- */

static void reader_lose(Reader *r) {
        reader_close(r, false);
        if (r->callbacks.lost)
                r->callbacks.lost(r, r->userdata);
}

void reader_after_event(Reader *r) {
        uint64_t deadline = 0;
        int k;

        if (!r->open)
                return;
        /* Exact to the millisecond: the default 250 ms slack would stretch the 200 ms tag-lost rule. */
        if (!presence_deadline(&r->presence, &deadline))
                deadline = 0;
        (void) reader_timer_set(r, &r->presence_timer, deadline, USEC_PER_MSEC, on_presence_timer);

        if (r->ops->settle) {
                k = r->ops->settle(r);
                if (k < 0)
                        reader_lose(r);
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Reader *r = userdata;
        int k = 0;

        r->now = reader_now(r);
        if (revents & EPOLLIN)
                k = r->ops->input(r);
        /* Input is drained first: a hangup may come with the last bytes. */
        if (k < 0 || (revents & (EPOLLHUP | EPOLLERR))) {
                if (k == -ESHUTDOWN)
                        log_debug("%s: device lost (end of file)", r->node);
                else if (k < 0)
                        log_debug_errno(k, "%s: device lost: %m", r->node);
                else
                        log_debug("%s: device lost (%s)", r->node, revents & EPOLLERR ? "POLLERR" : "POLLHUP");
                reader_lose(r);
                return 0;
        }
        reader_after_event(r);
        return 0;
}

static void open_error(ReaderOpenError *e, ReaderOpenStatus status, int error, const char *reason) {
        if (!e)
                return;
        e->status = status;
        e->error = error;
        snprintf(e->reason, sizeof(e->reason), "%s", reason ?: "");
}

int reader_open(Reader **ret, sd_event *event, RfidBackend backend, const char *node,
                struct udev_device *udev_device, const ReaderSettings *settings,
                const ReaderCallbacks *callbacks, void *userdata, ReaderOpenError *ret_error) {
        _cleanup_(reader_freep) Reader *r = NULL;
        const ReaderBackendOps *ops = backend_ops(backend);
        int k;

        assert_return(ret && event && settings && callbacks, -EINVAL);
        assert_return(ops, -EINVAL);
        assert_return(node || !ops->open_flags, -EINVAL);

        r = calloc(1, sizeof(*r));
        if (!r) {
                open_error(ret_error, READER_OPEN_FAILED, -ENOMEM, NULL);
                return -ENOMEM;
        }
        r->fd = -1;
        r->event = sd_event_ref(event);
        r->backend = backend;
        r->ops = ops;
        r->settings = *settings;
        r->callbacks = *callbacks;
        r->userdata = userdata;
        r->path = strdup(node ?: "");
        r->node = escape_for_log(node ?: rfid_backend_to_string(backend));
        if (udev_device && udev_device_get_syspath(udev_device))
                r->syspath = strdup(udev_device_get_syspath(udev_device));
        if (!r->path || !r->node || (udev_device && udev_device_get_syspath(udev_device) && !r->syspath)) {
                open_error(ret_error, READER_OPEN_FAILED, -ENOMEM, NULL);
                return -ENOMEM;
        }
        r->now = reader_now(r);
        presence_init(&r->presence,
                      backend == RFID_BACKEND_PHIDGET ? settings->tag_lost_usec :
                      backend == RFID_BACKEND_PHIDGET22 ? 0 : settings->token_hold_usec);

        if (ops->open_flags) {
                r->fd = open(r->path, ops->open_flags);
                if (r->fd < 0) {
                        k = -errno;
                        open_error(ret_error, READER_OPEN_FAILED, k, NULL);
                        return k;
                }
                /* One daemon per reader: on a tty two would split the bytes, on hidraw both would
                 * report every card. */
                if (flock(r->fd, LOCK_EX | LOCK_NB) < 0) {
                        k = -errno;
                        if (k == -EWOULDBLOCK) {
                                open_error(ret_error, READER_IN_USE, k, "in use by another rfid_daemon");
                                return k;
                        }
                        log_debug_errno(k, "%s: cannot lock the node: %m", r->node);
                }
        }

        k = ops->setup(r, udev_device, ret_error);
        if (k < 0)
                return k;

        if (r->fd >= 0) {
                k = sd_event_add_io(event, &r->io, r->fd, EPOLLIN, on_io, r);
                if (k < 0) {
                        open_error(ret_error, READER_OPEN_FAILED, k, NULL);
                        return k;
                }
        }
        r->open = true;

        if (ops->settle) {
                k = ops->settle(r);
                if (k < 0) {
                        r->open = false;
                        open_error(ret_error, READER_OPEN_FAILED, k, NULL);
                        return k;
                }
        }

        *ret = TAKE_PTR(r);
        return 0;
}

void reader_close(Reader *r, bool stopping) {
        PresenceEvent ev[1];

        if (!r || !r->open)
                return;

        if (stopping && r->backend == RFID_BACKEND_PHIDGET) {
                r->phidget.stopping = true;
                (void) r->ops->settle(r);
        }
        dispatch(r, ev, presence_close(&r->presence, ev));
        if (r->ops->close)
                r->ops->close(r, stopping);
        r->open = false;

        for (unsigned i = 0; i < _READER_BAD_MAX; i++)
                bad_log_summary(r, (ReaderBad) i);

        r->io = sd_event_source_disable_unref(r->io);
        r->presence_timer = sd_event_source_disable_unref(r->presence_timer);
        r->bad_timer = sd_event_source_disable_unref(r->bad_timer);
        r->phidget.retry_timer = sd_event_source_disable_unref(r->phidget.retry_timer);
        r->phidget.silence_timer = sd_event_source_disable_unref(r->phidget.silence_timer);
        r->fd = safe_close(r->fd);
}

Reader *reader_free(Reader *r) {
        if (!r)
                return NULL;
        /* Without the events: a reader freed unclosed is one that never got going. */
        r->callbacks = (ReaderCallbacks) {};
        if (r->open)
                reader_close(r, false);
        else if (r->ops && r->ops->close)
                r->ops->close(r, false);
        sd_event_source_disable_unref(r->io);
        sd_event_source_disable_unref(r->presence_timer);
        sd_event_source_disable_unref(r->bad_timer);
        sd_event_source_disable_unref(r->phidget.retry_timer);
        sd_event_source_disable_unref(r->phidget.silence_timer);
        safe_close(r->fd);
        sd_event_unref(r->event);
        free(r->path);
        free(r->node);
        free(r->syspath);
        free(r->description);
        free(r);
        return NULL;
}

const char *reader_node(const Reader *r) {
        return r ? r->node : NULL;
}

const char *reader_syspath(const Reader *r) {
        return r ? r->syspath : NULL;
}

const char *reader_description(const Reader *r) {
        return r && r->description ? r->description : "";
}

RfidBackend reader_backend(const Reader *r) {
        return r ? r->backend : _RFID_BACKEND_INVALID;
}

bool reader_is_open(const Reader *r) {
        return r && r->open;
}
