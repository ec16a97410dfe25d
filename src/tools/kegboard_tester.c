/* kegboard_tester: bench test that switches a Kegboard's relays on and off in turn
 * (programs-and-flags.md section 7). It opens valves: never for a live system. */

#include <errno.h>
#include <sys/epoll.h>
#include <time.h>

#include <systemd/sd-event.h>

#include "app.h"
#include "daemon.h"
#include "kbsp.h"
#include "log.h"
#include "kegboard-port.h"
#include "serial.h"
#include "util-event.h"

#define FIND_PINGS 5
#define FIND_PING_INTERVAL_USEC USEC_PER_SEC
/* kegboard-serial-protocol.md section 7: at most one command frame per 100 ms. */
#define COMMAND_SPACING_USEC (100 * USEC_PER_MSEC)
#define READ_CHUNK 4096
#define WRITE_TIMEOUT_MS 1000

static const char *arg_relay_ids = "0,1,2,3";
static double arg_step_seconds = 1.0;
static int arg_cycles = 0;

static const FlagDef flags[] = {
        FLAG_STRING("relay_ids", &arg_relay_ids, "Comma-separated output ids (0-5) to cycle."),
        FLAG_DOUBLE_RANGE("step_seconds", &arg_step_seconds, 0, 3600, "Time per step in seconds.",
                          .dmin_exclusive = true),
        FLAG_INT_MIN("cycles", &arg_cycles, 0, "Full cycles to run; 0 = until interrupted."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "kegboard_tester",
        .description = "Bench test for a Kegboard: switches each listed relay on and then off in turn and "
                       "prints what the board reports. It opens valves; never run it on a live system.",
        .flags = flags,
        .groups = APP_GROUP_KEGBOARD,
};

typedef struct Tester {
        sd_event *event;
        char *device;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        KbspDecoder decoder;

        unsigned relay_ids[KBSP_MAX_OUTPUTS * 4];
        size_t n_relays;

        bool found;             /* a hello arrived: cycling */
        bool started;           /* the first step has been taken */
        unsigned pings;
        unsigned cycle;         /* completed cycles */
        size_t index;           /* into relay_ids */
        bool on_phase;          /* the current step has the relay on */
        int exit_status;
} Tester;

static int parse_relay_ids(const char *s, unsigned *ids, size_t max, size_t *ret_n) {
        size_t n = 0;
        const char *p = s;

        if (isempty(s))
                return -EINVAL;
        for (;;) {
                char *end;
                long v;

                errno = 0;
                v = strtol(p, &end, 10);
                if (end == p || errno != 0 || v < 0 || v >= KBSP_MAX_OUTPUTS || n >= max)
                        return -EINVAL;
                ids[n++] = (unsigned) v;
                if (*end == '\0')
                        break;
                if (*end != ',')
                        return -EINVAL;
                p = end + 1;
        }
        *ret_n = n;
        return 0;
}

static void print_event(const KbspEvent *ev) {
        serial_print_event(stdout, ev, false);
}

static int send_frame(Tester *t, const uint8_t *frame, int size) {
        int r;

        if (size < 0)
                return size;
        r = serial_write_all(t->fd, frame, (size_t) size, WRITE_TIMEOUT_MS);
        if (r < 0)
                log_error_errno(r, "%s: write failed: %m", t->device);
        return r;
}

static int send_ping(Tester *t) {
        uint8_t frame[KBSP_MAX_FRAME];
        return send_frame(t, frame, kbsp_encode_ping(frame, sizeof frame));
}

static int send_set_output(Tester *t, unsigned id, bool on) {
        uint8_t frame[KBSP_MAX_FRAME];

        log_info("Relay %u %s", id, on ? "on" : "off");
        return send_frame(t, frame, kbsp_encode_set_output(frame, sizeof frame, id, on));
}

static void tester_stop(Tester *t, int status) {
        t->exit_status = status;
        (void) sd_event_exit(t->event, status);
}

static int arm(Tester *t, uint64_t usec, sd_event_time_handler_t handler) {
        int r;

        t->timer = sd_event_source_disable_unref(t->timer);
        r = event_timer_arm(t->event, &t->timer, usec, USEC_PER_MSEC, handler, t);
        if (r < 0) {
                log_error_errno(r, "Failed to arm a timer: %m");
                tester_stop(t, 1);
        }
        return r;
}

static int step_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Tester *t = userdata;

        if (t->on_phase) {
                /* Second half of a step: the relay goes off. */
                t->on_phase = false;
                if (send_set_output(t, t->relay_ids[t->index], false) < 0) {
                        tester_stop(t, 1);
                        return 0;
                }
                (void) arm(t, usec + (uint64_t) (arg_step_seconds * USEC_PER_SEC), step_handler);
                return 0;
        }

        if (t->started && ++t->index >= t->n_relays) {
                t->index = 0;
                t->cycle++;
                log_info("Cycle %u done", t->cycle);
                if (arg_cycles > 0 && t->cycle >= (unsigned) arg_cycles) {
                        tester_stop(t, 0);
                        return 0;
                }
        }
        t->started = true;

        t->on_phase = true;
        if (send_set_output(t, t->relay_ids[t->index], true) < 0) {
                tester_stop(t, 1);
                return 0;
        }
        (void) arm(t, usec + (uint64_t) (arg_step_seconds * USEC_PER_SEC), step_handler);
        return 0;
}

static int find_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Tester *t = userdata;

        if (t->pings >= FIND_PINGS) {
                log_error("No kegboard found");
                tester_stop(t, 1);
                return 0;
        }
        t->pings++;
        if (send_ping(t) < 0) {
                tester_stop(t, 1);
                return 0;
        }
        (void) arm(t, usec + FIND_PING_INTERVAL_USEC, find_handler);
        return 0;
}

static void board_found(Tester *t) {
        uint64_t now = 0;

        t->found = true;
        log_info("Kegboard found; cycling relays %s, %g s per step", arg_relay_ids, arg_step_seconds);
        /* The first step starts a command spacing after the last ping. */
        (void) sd_event_now(t->event, CLOCK_MONOTONIC, &now);
        (void) arm(t, now + COMMAND_SPACING_USEC, step_handler);
}

static int io_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Tester *t = userdata;
        uint8_t buf[READ_CHUNK];
        KbspEvent ev;
        ssize_t n;

        n = read(fd, buf, sizeof buf);
        if (n <= 0) {
                if (n < 0 && (errno == EINTR || (errno == EAGAIN && !(revents & (EPOLLHUP | EPOLLERR)))))
                        return 0;
                log_error("%s: device disconnected", t->device);
                t->io = sd_event_source_disable_unref(t->io);
                t->fd = safe_close(t->fd);
                tester_stop(t, 1);
                return 0;
        }

        if (kbsp_decoder_feed(&t->decoder, buf, (size_t) n) < 0)
                return 0;
        while (kbsp_decoder_next(&t->decoder, &ev) > 0) {
                print_event(&ev);
                if (!t->found && ev.type == KBSP_EVENT_FRAME && ev.message_id == KBSP_MSG_HELLO)
                        board_found(t);
        }
        return 0;
}

int main(int argc, char **argv) {
        Tester t = { .fd = -1, .exit_status = 1 };
        SerialKind kind;
        int r;

        app_init(argc, argv, &app_info, NULL);
        if (parse_relay_ids(arg_relay_ids, t.relay_ids, ELEMENTSOF(t.relay_ids), &t.n_relays) < 0)
                app_flag_error("flag --relay_ids=%s: expected comma-separated output ids 0-5", arg_relay_ids);

        log_warning("kegboard_tester opens valves; never run it on a live system!");

        kbsp_decoder_init(&t.decoder);
        r = kegboard_port_resolve(app_kegboard_device(), &t.device);
        if (r < 0)
                goto finish;

        r = serial_open(t.device, app_kegboard_speed(), &kind);
        if (r < 0) {
                log_error_errno(r, "Failed to open %s: %m", t.device);
                goto finish;
        }
        t.fd = r;
        if (kind == SERIAL_FILE) {
                log_error("%s is a regular file, not a serial port", t.device);
                goto finish;
        }

        r = sd_event_default(&t.event);
        if (r < 0) {
                log_error_errno(r, "Failed to allocate the event loop: %m");
                goto finish;
        }
        r = daemon_setup_event(t.event, NULL, NULL);
        if (r < 0) {
                log_error_errno(r, "Failed to set up signal handling: %m");
                goto finish;
        }
        r = sd_event_add_io(t.event, &t.io, t.fd, EPOLLIN, io_handler, &t);
        if (r < 0) {
                log_error_errno(r, "Failed to watch %s: %m", t.device);
                goto finish;
        }
        r = event_timer_arm_relative(t.event, &t.timer, 0, USEC_PER_MSEC, find_handler, &t);
        if (r < 0) {
                log_error_errno(r, "Failed to arm a timer: %m");
                goto finish;
        }

        r = sd_event_loop(t.event);
        t.exit_status = r == 0 ? 0 : 1;

        /* Whatever ended the run, leave no valve open. */
        if (t.fd >= 0 && t.found)
                for (size_t i = 0; i < t.n_relays; i++) {
                        if (i > 0)
                                (void) usleep(COMMAND_SPACING_USEC);
                        (void) send_set_output(&t, t.relay_ids[i], false);
                }

finish:
        t.io = sd_event_source_disable_unref(t.io);
        t.timer = sd_event_source_disable_unref(t.timer);
        safe_close(t.fd);
        sd_event_unref(t.event);
        free(t.device);
        app_finish();
        return t.exit_status;
}
