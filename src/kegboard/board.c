/* The serial side of kegboard_daemon; see board.h and programs-and-flags.md section 5. */

#define LOG_COMPONENT "kegboard"

#include <errno.h>
#include <inttypes.h>
#include <sys/epoll.h>

#include "board.h"
#include "daemon.h"
#include "log.h"
#include "serial.h"
#include "util-event.h"

/* kegboard-serial-protocol.md section 7: the board's receive ring holds fewer than 3 set_output
 * frames and it sits in blocking delays, so hosts space their frames. */
#define COMMAND_SPACING_USEC (100 * USEC_PER_MSEC)
#define PROBE_PINGS 3
#define PROBE_PING_INTERVAL_USEC USEC_PER_SEC
#define IDENTIFY_PING_INTERVAL_USEC (5 * USEC_PER_SEC)
#define ERROR_REPORT_INTERVAL_USEC (60 * USEC_PER_SEC)
#define TIMER_ACCURACY_USEC USEC_PER_MSEC
#define READ_CHUNK 4096
/* Meters whose newest reading before the first hello is kept (a board has at most 6). */
#define EARLY_METERS_MAX 8

typedef enum BoardState {
        BOARD_INIT,
        BOARD_PROBING,          /* waiting for any valid frame */
        BOARD_IDENTIFYING,      /* waiting for the first hello */
        BOARD_RUNNING,
        BOARD_DONE,
} BoardState;

typedef enum RelayPending {
        RELAY_NONE = -1,
        RELAY_OFF = 0,
        RELAY_ON = 1,
} RelayPending;

struct Board {
        sd_event *event;
        char *device;
        char *name_override;
        int speed;
        uint64_t probe_usec;
        uint64_t hello_timeout_usec;
        unsigned required_firmware_version;
        bool show_messages;

        BoardCallbacks callbacks;
        void *userdata;
        void (*drained)(Board *b, void *userdata);

        int fd;
        SerialKind kind;
        BoardState state;
        sd_event_source *io;
        sd_event_source *replay;
        sd_event_source *probe_timer;
        sd_event_source *ping_timer;
        sd_event_source *hello_timer;
        sd_event_source *command_timer;
        sd_event_source *report_timer;
        KbspDecoder decoder;

        unsigned probe_pings;
        uint16_t firmware_version;
        char *name;

        /* The newest meter_status per meter seen before the first hello (the board's name is not
         * known yet): readings are absolute, and a board that was not reset by our open reports a
         * meter only when it changes, so dropping the last one of a pour would delay its ticks
         * until the next pour. Delivered right after identification, unless that hello is a boot
         * hello (the counters they came from are gone). */
        KbspMessage early[EARLY_METERS_MAX];
        KbspFrame early_frame[EARLY_METERS_MAX];
        size_t n_early;

        /* Command queue: the newest state per output, plus a ping. */
        bool ping_pending;
        RelayPending relay_pending[KBSP_MAX_OUTPUTS];
        bool relay_wanted[KBSP_MAX_OUTPUTS];
        bool relay_switched_on[KBSP_MAX_OUTPUTS];
        unsigned relay_next;
        uint8_t out[KBSP_MAX_FRAME];
        size_t out_len, out_off;
        bool have_written;
        uint64_t last_command_usec;

        /* Stream trouble since the last WARNING. */
        uint64_t error_counts[_KBSP_ERROR_MAX];
        uint64_t incomplete_messages;
        uint64_t garbage_bytes;
        bool have_reported;
        uint64_t last_report_usec;
};

static void board_finish(Board *b, int exit_status);
static void command_schedule(Board *b);

static const char *board_label(const Board *b) {
        return b->name ?: b->device;
}

static uint64_t now_usec(Board *b) {
        uint64_t t = 0;
        (void) sd_event_now(b->event, CLOCK_MONOTONIC, &t);
        return t;
}

static int timer_arm(Board *b, sd_event_source **s, uint64_t usec, sd_event_time_handler_t handler) {
        return event_timer_arm(b->event, s, usec, TIMER_ACCURACY_USEC, handler, b);
}

static void timer_disarm(sd_event_source *s) {
        if (s)
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

static void timer_arm_or_die(Board *b, sd_event_source **s, uint64_t usec, sd_event_time_handler_t handler) {
        int r = timer_arm(b, s, usec, handler);
        if (r < 0) {
                log_error_errno(r, "%s: failed to arm a timer: %m", board_label(b));
                board_finish(b, 1);
        }
}

static void check_drained(Board *b) {
        if (b->drained && board_commands_drained(b))
                b->drained(b, b->userdata);
}

static void board_close(Board *b) {
        b->io = sd_event_source_disable_unref(b->io);
        b->replay = sd_event_source_disable_unref(b->replay);
        b->probe_timer = sd_event_source_disable_unref(b->probe_timer);
        b->ping_timer = sd_event_source_disable_unref(b->ping_timer);
        b->hello_timer = sd_event_source_disable_unref(b->hello_timer);
        b->command_timer = sd_event_source_disable_unref(b->command_timer);
        b->report_timer = sd_event_source_disable_unref(b->report_timer);
        b->fd = safe_close(b->fd);
        b->out_len = b->out_off = 0;
        b->ping_pending = false;
        for (unsigned i = 0; i < KBSP_MAX_OUTPUTS; i++)
                b->relay_pending[i] = RELAY_NONE;
}

static void board_finish(Board *b, int exit_status) {
        if (b->state == BOARD_DONE)
                return;
        b->state = BOARD_DONE;
        board_close(b);
        if (b->callbacks.finished)
                b->callbacks.finished(b, exit_status, b->userdata);
        check_drained(b);
}

/* EIO/ENXIO/ENODEV/hangup mean the adapter went away: a normal end (systemd stops the instance
 * with the device anyway). Anything else is a real error. */
static bool is_disconnect(int error) {
        return error == -EIO || error == -ENXIO || error == -ENODEV || error == -EPIPE;
}

static void io_failed(Board *b, int error, const char *what) {
        if (is_disconnect(error)) {
                log_info("%s: device disconnected", b->device);
                board_finish(b, 0);
        } else {
                log_error_errno(error, "%s: %s failed: %m", b->device, what);
                board_finish(b, 1);
        }
}

/* ---- commands ---- */

static void set_io_events(Board *b) {
        if (b->io)
                (void) sd_event_source_set_io_events(b->io, EPOLLIN | (b->out_len > 0 ? EPOLLOUT : 0));
}

/* Returns true when the frame is fully written. */
static bool write_out(Board *b) {
        while (b->out_off < b->out_len) {
                ssize_t n = write(b->fd, b->out + b->out_off, b->out_len - b->out_off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                set_io_events(b);
                                return false;
                        }
                        io_failed(b, -errno, "write");
                        return false;
                }
                b->out_off += (size_t) n;
        }
        b->out_len = b->out_off = 0;
        set_io_events(b);
        return true;
}

static int command_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        command_schedule(userdata);
        return 0;
}

static bool command_pending(const Board *b) {
        if (b->ping_pending)
                return true;
        for (unsigned i = 0; i < KBSP_MAX_OUTPUTS; i++)
                if (b->relay_pending[i] != RELAY_NONE)
                        return true;
        return false;
}

static void command_schedule(Board *b) {
        uint64_t now;
        int n = -EINVAL;

        if (b->fd < 0 || b->kind == SERIAL_FILE || b->out_len > 0)
                return;
        if (!command_pending(b)) {
                check_drained(b);
                return;
        }

        now = now_usec(b);
        if (b->have_written && now < b->last_command_usec + COMMAND_SPACING_USEC) {
                timer_arm_or_die(b, &b->command_timer, b->last_command_usec + COMMAND_SPACING_USEC,
                                 command_timer_handler);
                return;
        }

        if (b->ping_pending) {
                b->ping_pending = false;
                n = kbsp_encode_ping(b->out, sizeof b->out);
                log_debug("%s: TX ping", board_label(b));
        } else
                for (unsigned k = 0; k < KBSP_MAX_OUTPUTS; k++) {
                        /* Round robin, so a chatty output cannot starve the others. */
                        unsigned i = (b->relay_next + k) % KBSP_MAX_OUTPUTS;
                        if (b->relay_pending[i] == RELAY_NONE)
                                continue;
                        bool on = b->relay_pending[i] == RELAY_ON;
                        b->relay_pending[i] = RELAY_NONE;
                        b->relay_next = (i + 1) % KBSP_MAX_OUTPUTS;
                        n = kbsp_encode_set_output(b->out, sizeof b->out, i, on);
                        log_debug("%s: TX set_output output_id=%u output_mode=%d", board_label(b), i, on);
                        break;
                }
        if (n < 0) {
                log_error_errno(n, "%s: failed to encode a command: %m", board_label(b));
                return;
        }

        b->out_len = (size_t) n;
        b->out_off = 0;
        b->last_command_usec = now;
        b->have_written = true;
        if (!write_out(b))
                return;

        if (command_pending(b))
                timer_arm_or_die(b, &b->command_timer, now + COMMAND_SPACING_USEC, command_timer_handler);
        else
                check_drained(b);
}

static void queue_ping(Board *b) {
        b->ping_pending = true;
        command_schedule(b);
}

int board_set_relay(Board *b, unsigned id, bool on) {
        if (id >= KBSP_MAX_OUTPUTS)
                return -EINVAL;
        if (b->fd < 0 || b->kind == SERIAL_FILE)
                return -ENOTCONN;
        b->relay_wanted[id] = on;
        if (on)
                b->relay_switched_on[id] = true;
        b->relay_pending[id] = on ? RELAY_ON : RELAY_OFF;
        command_schedule(b);
        return 0;
}

bool board_relay_wanted_on(const Board *b, unsigned id) {
        return id < KBSP_MAX_OUTPUTS && b->relay_wanted[id];
}

void board_relays_off(Board *b) {
        bool any = false;

        for (unsigned i = 0; i < KBSP_MAX_OUTPUTS; i++)
                if (b->relay_switched_on[i]) {
                        b->relay_wanted[i] = false;
                        b->relay_pending[i] = RELAY_OFF;
                        any = true;
                }
        if (any)
                command_schedule(b);
}

bool board_commands_drained(const Board *b) {
        return b->fd < 0 || b->kind == SERIAL_FILE || (b->out_len == 0 && !command_pending(b));
}

void board_set_drained_callback(Board *b, void (*drained)(Board *b, void *userdata)) {
        b->drained = drained;
}

/* ---- stream trouble ---- */

static void report_errors(Board *b, uint64_t now) {
        uint64_t total = b->incomplete_messages;

        for (unsigned i = 0; i < _KBSP_ERROR_MAX; i++)
                total += b->error_counts[i];
        if (total == 0)
                return;

        log_warning("%s: bad data from the board: %s=%" PRIu64 " %s=%" PRIu64 " %s=%" PRIu64
                    " incomplete_message=%" PRIu64 " garbage_bytes=%" PRIu64,
                    board_label(b),
                    kbsp_error_to_string(KBSP_ERROR_BAD_CRC), b->error_counts[KBSP_ERROR_BAD_CRC],
                    kbsp_error_to_string(KBSP_ERROR_BAD_TRAILER), b->error_counts[KBSP_ERROR_BAD_TRAILER],
                    kbsp_error_to_string(KBSP_ERROR_OVERSIZE_LENGTH), b->error_counts[KBSP_ERROR_OVERSIZE_LENGTH],
                    b->incomplete_messages, b->garbage_bytes);
        memset(b->error_counts, 0, sizeof b->error_counts);
        b->incomplete_messages = 0;
        b->garbage_bytes = 0;
        b->have_reported = true;
        b->last_report_usec = now;
}

static int report_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Board *b = userdata;
        report_errors(b, usec);
        return 0;
}

/* At most one WARNING a minute; what comes in between is summed up when the minute is over. */
static void note_error(Board *b) {
        uint64_t now = now_usec(b);

        if (!b->have_reported || now >= b->last_report_usec + ERROR_REPORT_INTERVAL_USEC) {
                report_errors(b, now);
                return;
        }
        timer_arm_or_die(b, &b->report_timer, b->last_report_usec + ERROR_REPORT_INTERVAL_USEC,
                         report_timer_handler);
}

/* ---- frames ---- */

static void log_message(Board *b, const KbspMessage *m, const KbspFrame *f) {
        char text[KBSP_TEXT_MAX];

        if (!b->show_messages && log_get_max_level() < LOG_DEBUG)
                return;
        (void) kbsp_message_format(m, f, text, sizeof text);
        log_full(b->show_messages ? LOG_INFO : LOG_DEBUG, "%s: %s", board_label(b), text);
}

static int hello_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Board *b = userdata;

        log_error("%s: no heartbeat for %" PRIu64 " s; board hung or gone",
                  board_label(b), b->hello_timeout_usec / USEC_PER_SEC);
        board_finish(b, 1);
        return 0;
}

static void heartbeat_rearm(Board *b) {
        /* Firmware before v18 has no heartbeat; its silence means nothing. */
        if (b->hello_timeout_usec == 0 || b->firmware_version < 18)
                return;
        timer_arm_or_die(b, &b->hello_timer, now_usec(b) + b->hello_timeout_usec, hello_timer_handler);
}

static void keep_early_reading(Board *b, const KbspMessage *m, const KbspFrame *f) {
        size_t i;

        for (i = 0; i < b->n_early; i++)
                if (streq(b->early[i].meter_status.meter_name, m->meter_status.meter_name))
                        break;
        if (i == b->n_early) {
                if (b->n_early >= EARLY_METERS_MAX)
                        return;
                b->n_early++;
        }
        b->early[i] = *m;
        b->early_frame[i] = *f;
}

static bool hello_is_boot(const KbspHello *h) {
        return h->has_uptime_ms && h->uptime_ms == 0 && (!h->has_uptime_days || h->uptime_days == 0);
}

static void identify(Board *b, const KbspMessage *m, const KbspFrame *f) {
        const KbspHello *h = &m->hello;
        const char *serial = h->has_serial_number ? h->serial_number : "";

        if (!isempty(b->name_override))
                b->name = strdup(b->name_override);
        else {
                char derived[KBSP_BOARD_NAME_MAX];
                kbsp_board_name(serial, derived);
                b->name = strdup(derived);
        }
        if (!b->name) {
                log_error_errno(-ENOMEM, "%s: %m", b->device);
                board_finish(b, 1);
                return;
        }

        b->firmware_version = h->firmware_version;
        log_info("Found a Kegboard! Firmware version %u, serial '%s', name %s",
                 (unsigned) h->firmware_version, serial, b->name);
        log_message(b, m, f);

        if (h->firmware_version < b->required_firmware_version) {
                log_error("%s: firmware version %u is older than the required version %u",
                          b->name, (unsigned) h->firmware_version, b->required_firmware_version);
                board_finish(b, 1);
                return;
        }

        b->state = BOARD_RUNNING;
        timer_disarm(b->ping_timer);
        heartbeat_rearm(b);
        if (b->state == BOARD_RUNNING && b->callbacks.identified)
                b->callbacks.identified(b, h, b->userdata);

        if (hello_is_boot(h)) {
                if (b->n_early > 0)
                        log_debug("%s: dropping %zu readings from before the board's reset", b->name, b->n_early);
                b->n_early = 0;
        }
        for (size_t i = 0; i < b->n_early && b->state == BOARD_RUNNING; i++) {
                log_debug("%s: %s reading %" PRIu32 " from before the first hello", b->name,
                          b->early[i].meter_status.meter_name, b->early[i].meter_status.meter_reading);
                log_message(b, &b->early[i], &b->early_frame[i]);
                if (b->callbacks.message)
                        b->callbacks.message(b, &b->early[i], b->userdata);
        }
        b->n_early = 0;
}

static int ping_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Board *b = userdata;

        log_debug("%s: no hello yet, pinging", b->device);
        queue_ping(b);
        if (b->state == BOARD_IDENTIFYING)
                timer_arm_or_die(b, &b->ping_timer, usec + IDENTIFY_PING_INTERVAL_USEC, ping_timer_handler);
        return 0;
}

static void probe_succeeded(Board *b) {
        b->state = BOARD_IDENTIFYING;
        timer_disarm(b->probe_timer);
        /* A replay has no one to ping. */
        if (b->kind != SERIAL_FILE)
                timer_arm_or_die(b, &b->ping_timer, now_usec(b) + IDENTIFY_PING_INTERVAL_USEC, ping_timer_handler);
        if (b->state != BOARD_DONE && b->callbacks.ready)
                b->callbacks.ready(b, b->userdata);
}

static void handle_frame(Board *b, const KbspFrame *f) {
        KbspMessage m;
        char text[KBSP_TEXT_MAX];

        if (b->state == BOARD_PROBING)
                probe_succeeded(b);
        if (b->state == BOARD_DONE)
                return;

        kbsp_frame_decode(f, &m);
        if (!m.complete) {
                (void) kbsp_message_format(&m, f, text, sizeof text);
                log_debug("%s: ignoring incomplete message: %s", board_label(b), text);
                b->incomplete_messages++;
                note_error(b);
                return;
        }

        if (b->state == BOARD_IDENTIFYING) {
                if (m.message_id == KBSP_MSG_HELLO)
                        identify(b, &m, f);
                else if (m.message_id == KBSP_MSG_METER_STATUS)
                        keep_early_reading(b, &m, f);
                else if (log_get_max_level() >= LOG_DEBUG) {
                        (void) kbsp_message_format(&m, f, text, sizeof text);
                        log_debug("%s: dropping %s (no hello yet)", b->device, text);
                }
                return;
        }

        log_message(b, &m, f);
        if (m.message_id == KBSP_MSG_HELLO)
                heartbeat_rearm(b);
        if (b->state == BOARD_RUNNING && b->callbacks.message)
                b->callbacks.message(b, &m, b->userdata);
}

static void handle_event(Board *b, const KbspEvent *ev) {
        switch (ev->type) {
        case KBSP_EVENT_FRAME:
                handle_frame(b, ev->frame);
                break;
        case KBSP_EVENT_GARBAGE:
                b->garbage_bytes += ev->size;
                log_debug("%s: %" PRIu64 " bytes of garbage at offset %" PRIu64,
                          board_label(b), ev->size, ev->offset);
                break;
        case KBSP_EVENT_ERROR:
                if (ev->error < _KBSP_ERROR_MAX)
                        b->error_counts[ev->error]++;
                log_debug("%s: rejected frame at offset %" PRIu64 ": %s", board_label(b), ev->offset,
                          kbsp_error_to_string(ev->error));
                note_error(b);
                break;
        }
}

static void feed(Board *b, const uint8_t *data, size_t size) {
        KbspEvent ev;

        if (kbsp_decoder_feed(&b->decoder, data, size) < 0)
                return;
        /* Drain the decoder even if a callback ends the board, so it is never left busy. */
        while (kbsp_decoder_next(&b->decoder, &ev) > 0)
                if (b->state != BOARD_DONE)
                        handle_event(b, &ev);
}

static int io_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Board *b = userdata;
        uint8_t buf[READ_CHUNK];
        ssize_t n;

        if (revents & EPOLLOUT) {
                if (write_out(b))
                        command_schedule(b);
                if (b->state == BOARD_DONE)
                        return 0;
        }

        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return 0;

        n = read(fd, buf, sizeof buf);
        if (n > 0) {
                feed(b, buf, (size_t) n);
                return 0;
        }
        if (n == 0) {
                /* A tty reads 0 only after a hangup. */
                io_failed(b, -EIO, "read");
                return 0;
        }
        if (errno == EINTR)
                return 0;
        if (errno == EAGAIN) {
                if (revents & (EPOLLHUP | EPOLLERR))
                        io_failed(b, -EIO, "read");
                return 0;
        }
        io_failed(b, -errno, "read");
        return 0;
}

/* Regular files cannot be watched with epoll; a defer source reads them a chunk per loop
 * iteration, at idle priority so the kegnet connection keeps up. */
static int replay_handler(sd_event_source *s, void *userdata) {
        Board *b = userdata;
        uint8_t buf[READ_CHUNK];
        KbspEvent ev;
        ssize_t n;

        n = read(b->fd, buf, sizeof buf);
        if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                        return 0;
                log_error_errno(-errno, "%s: read failed: %m", b->device);
                board_finish(b, 1);
                return 0;
        }
        if (n > 0) {
                feed(b, buf, (size_t) n);
                return 0;
        }

        if (kbsp_decoder_finish(&b->decoder, &ev) > 0)
                handle_event(b, &ev);
        if (b->state == BOARD_DONE)
                return 0;
        log_info("%s: end of file", b->device);
        board_finish(b, 0);
        return 0;
}

static int probe_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Board *b = userdata;

        if (b->probe_pings >= PROBE_PINGS) {
                log_info("%s: not a kegboard (no KBSP frame)", b->device);
                /* Tell systemd we started fine and are leaving on purpose: exiting 0 before READY=1
                 * would leave a udev-started instance "failed (protocol)" on a foreign serial port. */
                (void) daemon_notify_ready("%s: not a kegboard", b->device);
                board_finish(b, 0);
                return 0;
        }
        b->probe_pings++;
        log_debug("%s: no KBSP frame yet, ping %u of %u", b->device, b->probe_pings, PROBE_PINGS);
        queue_ping(b);
        if (b->state == BOARD_PROBING)
                timer_arm_or_die(b, &b->probe_timer, usec + PROBE_PING_INTERVAL_USEC, probe_timer_handler);
        return 0;
}

int board_start(Board *b) {
        int r;

        if (b->state != BOARD_INIT)
                return -EALREADY;

        r = serial_open(b->device, b->speed, &b->kind);
        if (r < 0)
                return log_error_errno(r, "Failed to open %s: %m", b->device);
        b->fd = r;

        if (b->kind == SERIAL_FILE) {
                log_info("%s: replaying a capture file", b->device);
                r = sd_event_add_defer(b->event, &b->replay, replay_handler, b);
                if (r >= 0)
                        r = sd_event_source_set_priority(b->replay, SD_EVENT_PRIORITY_IDLE);
                if (r >= 0)
                        r = sd_event_source_set_enabled(b->replay, SD_EVENT_ON);
                if (r < 0)
                        return log_error_errno(r, "%s: failed to set up the replay: %m", b->device);
                b->state = BOARD_PROBING;
                probe_succeeded(b);
                return 0;
        }

        r = sd_event_add_io(b->event, &b->io, b->fd, EPOLLIN, io_handler, b);
        if (r < 0)
                return log_error_errno(r, "%s: failed to watch the device: %m", b->device);

        log_info("%s: opened at %d baud, probing for a Kegboard", b->device, b->speed);
        b->state = BOARD_PROBING;
        if (b->probe_usec > 0)
                r = timer_arm(b, &b->probe_timer, now_usec(b) + b->probe_usec, probe_timer_handler);
        else
                r = timer_arm(b, &b->probe_timer, now_usec(b), probe_timer_handler);
        if (r < 0)
                return log_error_errno(r, "%s: failed to arm the probe timer: %m", b->device);
        return 0;
}

int board_new(Board **ret, sd_event *event, const BoardConfig *config, const BoardCallbacks *callbacks,
              void *userdata) {
        _cleanup_(board_freep) Board *b = NULL;

        b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        b->fd = -1;
        b->event = sd_event_ref(event);
        b->device = strdup(config->device);
        b->name_override = strdup(config->name ?: "");
        if (!b->device || !b->name_override)
                return -ENOMEM;
        b->speed = config->speed;
        b->probe_usec = config->probe_usec;
        b->hello_timeout_usec = config->hello_timeout_usec;
        b->required_firmware_version = config->required_firmware_version;
        b->show_messages = config->show_messages;
        if (callbacks)
                b->callbacks = *callbacks;
        b->userdata = userdata;
        for (unsigned i = 0; i < KBSP_MAX_OUTPUTS; i++)
                b->relay_pending[i] = RELAY_NONE;
        kbsp_decoder_init(&b->decoder);

        *ret = TAKE_PTR(b);
        return 0;
}

Board *board_free(Board *b) {
        if (!b)
                return NULL;
        board_close(b);
        sd_event_unref(b->event);
        free(b->device);
        free(b->name_override);
        free(b->name);
        free(b);
        return NULL;
}

const char *board_device(const Board *b) {
        return b->device;
}

const char *board_name(const Board *b) {
        return b->name;
}
