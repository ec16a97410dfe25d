/* kegboard_monitor: prints every KBSP frame a Kegboard sends (programs-and-flags.md section 6). */

#include <errno.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>

#include <systemd/sd-event.h>

#include "app.h"
#include "daemon.h"
#include "kbsp.h"
#include "log.h"
#include "kegboard-port.h"
#include "serial.h"
#include "util-event.h"

#define WAIT_POLL_USEC (100 * USEC_PER_MSEC)
#define READ_CHUNK 4096

static bool arg_ping = true;
static bool arg_hex = false;
static bool arg_wait = true;

static const FlagDef flags[] = {
        FLAG_BOOL("ping", &arg_ping, "Send one ping after opening the device."),
        FLAG_BOOL("hex", &arg_hex, "Also print each frame's bytes as hex."),
        FLAG_BOOL("wait", &arg_wait,
                  "If the device does not exist (yet), poll every 0.1 s until it does; after an I/O error, "
                  "go back to waiting."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "kegboard_monitor",
        .description = "Prints every message a Kegboard sends, one line each, without reporting anything "
                       "to the core.",
        .flags = flags,
        .groups = APP_GROUP_KEGBOARD,
};

typedef struct Monitor {
        sd_event *event;
        char *device;
        int speed;
        int fd;
        sd_event_source *io;
        sd_event_source *wait_timer;
        KbspDecoder decoder;
        int last_open_error;
} Monitor;

static void print_event(const KbspEvent *ev) {
        serial_print_event(stdout, ev, arg_hex);
}

static void feed(KbspDecoder *d, const void *data, size_t size) {
        KbspEvent ev;

        if (kbsp_decoder_feed(d, data, size) < 0)
                return;
        while (kbsp_decoder_next(d, &ev) > 0)
                print_event(&ev);
}

static void finish_decoder(KbspDecoder *d) {
        KbspEvent ev;

        if (kbsp_decoder_finish(d, &ev) > 0)
                print_event(&ev);
        kbsp_decoder_init(d);
}

static int replay_file(int fd) {
        _cleanup_(kbsp_decoder_freep) KbspDecoder *d = NULL;
        uint8_t buf[READ_CHUNK];
        int r;

        r = kbsp_decoder_new(&d);
        if (r < 0)
                return log_error_errno(r, "%m");
        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return log_error_errno(-errno, "Read failed: %m");
                }
                if (n == 0)
                        break;
                feed(d, buf, (size_t) n);
        }
        finish_decoder(d);
        return 0;
}

static int monitor_wait(Monitor *m);

static void monitor_close(Monitor *m) {
        m->io = sd_event_source_disable_unref(m->io);
        m->fd = safe_close(m->fd);
        finish_decoder(&m->decoder);
}

/* The device went away or failed: wait for it again, or give up with --nowait. */
static void monitor_lost(Monitor *m, int error) {
        monitor_close(m);
        if (error == -EIO || error == -ENXIO || error == -ENODEV || error == -EPIPE)
                log_info("%s: device disconnected", m->device);
        else
                log_error_errno(error, "%s: read failed: %m", m->device);
        if (!arg_wait) {
                (void) sd_event_exit(m->event, 1);
                return;
        }
        if (monitor_wait(m) < 0)
                (void) sd_event_exit(m->event, 1);
}

static int io_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Monitor *m = userdata;
        uint8_t buf[READ_CHUNK];
        ssize_t n;

        n = read(fd, buf, sizeof buf);
        if (n > 0) {
                feed(&m->decoder, buf, (size_t) n);
                return 0;
        }
        if (n == 0)
                monitor_lost(m, -EIO);
        else if (errno == EAGAIN) {
                if (revents & (EPOLLHUP | EPOLLERR))
                        monitor_lost(m, -EIO);
        } else if (errno != EINTR)
                monitor_lost(m, -errno);
        return 0;
}

/* 1 = opened, 0 = not there yet (only with --wait), negative = give up. */
static int monitor_open(Monitor *m) {
        uint8_t ping[KBSP_MAX_FRAME];
        SerialKind kind;
        int r, fd;

        fd = serial_open(m->device, m->speed, &kind);
        if (fd < 0) {
                if (!arg_wait)
                        return log_error_errno(fd, "Failed to open %s: %m", m->device);
                if (fd != -ENOENT && fd != m->last_open_error)
                        log_warning_errno(fd, "Failed to open %s, will keep trying: %m", m->device);
                m->last_open_error = fd;
                return 0;
        }
        m->last_open_error = 0;

        if (kind == SERIAL_FILE) {
                r = replay_file(fd);
                safe_close(fd);
                (void) sd_event_exit(m->event, r < 0 ? 1 : 0);
                return 1;
        }

        m->fd = fd;
        r = sd_event_add_io(m->event, &m->io, fd, EPOLLIN, io_handler, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch %s: %m", m->device);
        log_info("Opened %s at %d baud", m->device, m->speed);

        if (arg_ping) {
                r = kbsp_encode_ping(ping, sizeof ping);
                if (r > 0)
                        r = serial_write_all(fd, ping, (size_t) r, 1000);
                if (r < 0)
                        log_warning_errno(r, "%s: failed to send ping: %m", m->device);
        }
        return 1;
}

static int wait_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Monitor *m = userdata;
        int r;

        r = monitor_open(m);
        if (r < 0)
                (void) sd_event_exit(m->event, 1);
        else if (r == 0)
                (void) event_timer_set(s, usec + WAIT_POLL_USEC);
        return 0;
}

static int monitor_wait(Monitor *m) {
        uint64_t now = 0;
        int r;

        log_info("Waiting for %s", m->device);
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        r = event_timer_arm(m->event, &m->wait_timer, now + WAIT_POLL_USEC, USEC_PER_MSEC, wait_timer_handler, m);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the wait timer: %m");
        return 0;
}

int main(int argc, char **argv) {
        Monitor m = { .fd = -1 };
        int r, status = 1;

        app_init(argc, argv, &app_info, NULL);
        kbsp_decoder_init(&m.decoder);
        m.speed = app_kegboard_speed();

        r = kegboard_port_resolve(app_kegboard_device(), &m.device);
        if (r < 0)
                goto finish;

        r = sd_event_default(&m.event);
        if (r < 0) {
                log_error_errno(r, "Failed to allocate the event loop: %m");
                goto finish;
        }
        r = daemon_setup_event(m.event, NULL, NULL);
        if (r < 0) {
                log_error_errno(r, "Failed to set up signal handling: %m");
                goto finish;
        }

        r = monitor_open(&m);
        if (r < 0)
                goto finish;
        if (r == 0 && monitor_wait(&m) < 0)
                goto finish;

        r = sd_event_loop(m.event);
        status = r == 0 ? 0 : 1;

finish:
        m.io = sd_event_source_disable_unref(m.io);
        m.wait_timer = sd_event_source_disable_unref(m.wait_timer);
        safe_close(m.fd);
        sd_event_unref(m.event);
        free(m.device);
        app_finish();
        return status;
}
