/* kegboard_sim: a simulated Kegboard (firmware v18) on a pseudo-terminal, for demos and tests
 * (programs-and-flags.md section 14). The host opens the pty slave like a serial port; the board's
 * events and the commands' effects are printed on stdout, one "<ms> <EVENT> key=value..." line each. */

#define LOG_COMPONENT "sim"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <termios.h>

#include <systemd/sd-event.h>

#include "app.h"
#include "daemon.h"
#include "flags.h"
#include "ghost-trace.h"
#include "kbsp.h"
#include "log.h"
#include "macro.h"
#include "util-event.h"
#include "util-hex.h"
#include "util-io.h"

#define SIM_METERS_MAX 6
#define SIM_OUTPUTS KBSP_MAX_OUTPUTS
#define DAY_MS UINT64_C(86400000)
#define HANGUP_CHECK_USEC (50 * USEC_PER_MSEC)
#define BOOT_MELODY_USEC (500 * USEC_PER_MSEC)
#define PING_MELODY_USEC (250 * USEC_PER_MSEC)
#define AUTH_MELODY_USEC (180 * USEC_PER_MSEC)
#define THERMO_SLOT_USEC USEC_PER_SEC
/* Board output nobody reads is dropped beyond this, as a full USB serial buffer would. */
#define OUT_BUF_MAX (64 * 1024)
#define RX_CHUNK 256
#define LINE_MAX_LEN 4096
#define SENSOR_NAME_MAX 64
#define DEVICE_NAME_MAX 64
/* A trace file larger than this is not one. */
#define TRACE_FILE_MAX (1024 * 1024)

static const char *arg_link = "";
static const char *arg_serial_number = "";
static int arg_firmware_version = 18;
static int arg_meters = 2;
static const char *arg_thermo = "";
static bool arg_buzzer = true;
static bool arg_reset_on_open = true;
static int64_t arg_uptime_ms = 0;
static int64_t arg_heartbeat_ms = 10000;
static int64_t arg_meter_interval_ms = 100;
static int64_t arg_relay_watchdog_ms = 10000;
static bool arg_strict_crc = false;
static const char *arg_commands = "";
static const char *arg_script = "";
static bool arg_stdin = true;

static const FlagDef sim_flags[] = {
        FLAG_STRING("link", &arg_link,
                    "Create a symlink at this path pointing to the pty slave (an existing symlink is "
                    "replaced; removed at exit)."),
        FLAG_STRING("serial_number", &arg_serial_number,
                    "The board's EEPROM serial number (< 30 bytes); empty = never programmed."),
        FLAG_INT_RANGE("firmware_version", &arg_firmware_version, 0, 65535,
                       "Value of hello.firmware_version."),
        FLAG_INT_RANGE("meters", &arg_meters, 1, SIM_METERS_MAX, "Number of meters, flow0..flow<n-1>."),
        FLAG_STRING("thermo", &arg_thermo,
                    "Comma-separated name=celsius temperature sensors, e.g. "
                    "thermo-6b0316621d4cff28=4.5; a bare 16-hex name gets thermo- prefixed."),
        FLAG_BOOL("buzzer", &arg_buzzer,
                  "Firmware melody delays: boot hello 500 ms after start, ping reply after 250 ms, "
                  "180 ms pause after an auth present."),
        FLAG_BOOL("reset_on_open", &arg_reset_on_open,
                  "Emulate the DTR auto-reset: the board reboots when the host's open raises DTR, i.e. unless "
                  "the previous host cleared HUPCL, which keeps DTR asserted after its close."),
        FLAG_INT64_MIN("uptime_ms", &arg_uptime_ms, 0, "Uptime at start, in milliseconds."),
        FLAG_INT64_RANGE("heartbeat_ms", &arg_heartbeat_ms, 0, 86400000, "Heartbeat hello period; 0 = none."),
        FLAG_INT64_RANGE("meter_interval_ms", &arg_meter_interval_ms, 1, 60000, "Meter check period."),
        FLAG_INT64_RANGE("relay_watchdog_ms", &arg_relay_watchdog_ms, 0, 86400000, "Relay watchdog; 0 = off."),
        FLAG_BOOL("strict_crc", &arg_strict_crc,
                  "Reject host frames with a bad CRC (the real firmware obeys them)."),
        FLAG_STRING("commands", &arg_commands, "';'-separated commands run at start."),
        FLAG_STRING("script", &arg_script,
                    "File of commands, one per line (# comments), run after --commands."),
        FLAG_BOOL("stdin", &arg_stdin,
                  "Read commands from stdin; end of stdin does not stop the simulator."),
        FLAG_END,
};

typedef struct Sensor {
        char name[SENSOR_NAME_MAX];
        int32_t micro_c;
} Sensor;

typedef struct Pour {
        unsigned meter;
        uint64_t total;
        uint64_t added;
        uint64_t start;         /* CLOCK_MONOTONIC usec */
        uint64_t duration;      /* usec; 0 = at once */
} Pour;

/* A trace played on one meter (ghost-pours.md section 16.1): each report goes out at its time as a
 * meter_status of its own, the counter moving by the trace's deltas (so pours and traces add up). */
typedef struct Sim Sim;
typedef struct Trace {
        Sim *sim;
        unsigned meter;
        GhostTrace *trace;
        GhostTraceCursor cursor;
        uint64_t start;                 /* CLOCK_MONOTONIC of trace time 0 */
        uint32_t last;                  /* the cursor's reading already added to the counter */
        uint64_t due_usec;              /* trace time of the next report */
        uint32_t due_reading;
        uint64_t reports;
        sd_event_source *timer;
} Trace;

typedef enum JobType {
        JOB_HELLO,
        JOB_AUTH,
} JobType;

/* Board output that has to wait for the firmware's blocking delays to end. */
typedef struct Job {
        JobType type;
        bool boot;                      /* JOB_HELLO: the start-up hello, uptime 0/0 */
        char device[DEVICE_NAME_MAX];   /* JOB_AUTH */
        uint8_t token[KBSP_MAX_PAYLOAD];
        size_t token_len;
        uint8_t status;
} Job;

struct Sim {
        sd_event *event;
        uint64_t start_usec;

        int master_fd;
        char *slave_path;
        char *link_path;                /* set once we created the link */
        sd_event_source *master_io;
        sd_event_source *hangup_timer;
        bool host_open;
        bool dtr;                       /* the host's DTR line as the board sees it */
        uint8_t *out;
        size_t out_len;

        KbspFirmwareParser parser;
        uint8_t rx_buf[RX_CHUNK];
        bool rx_pending;                /* the parser still holds unprocessed bytes of rx_buf */

        /* Board state. */
        uint64_t boot_usec;
        uint64_t uptime_offset_ms;      /* --uptime_ms until the first reboot */
        bool hung;
        uint64_t busy_until;            /* end of a blocking melody delay */
        sd_event_source *busy_timer;
        Job *jobs;
        size_t n_jobs;

        char serial[KBSP_SERIAL_FIELD_LEN];
        bool serial_programmed;

        unsigned n_meters;
        uint32_t counter[SIM_METERS_MAX];
        uint32_t reported[SIM_METERS_MAX];
        uint64_t last_meter_check;
        sd_event_source *meter_timer;
        Pour *pours;
        size_t n_pours;
        Trace *traces[SIM_METERS_MAX];

        bool relay[SIM_OUTPUTS];
        uint64_t relay_refreshed[SIM_OUTPUTS];
        sd_event_source *watchdog_timer;

        uint64_t last_heartbeat;
        sd_event_source *heartbeat_timer;

        Sensor *sensors;
        size_t n_sensors;
        size_t thermo_slot;
        sd_event_source *thermo_timer;

        /* Commands. */
        char **queue;                   /* pending command lines, FIFO */
        size_t n_queue;
        sd_event_source *sleep_timer;
        sd_event_source *stdin_io;
        char *stdin_line;
        size_t stdin_len;
        bool stdin_overlong;
        bool exiting;
};

static void sim_update_io(Sim *s);
static void sim_rx_process(Sim *s);
static void sim_run_jobs(Sim *s);
static void sim_meter_schedule(Sim *s);
static void sim_commands_run(Sim *s);
static void sim_command_error(Sim *s, const char *format, ...) _printf_(2, 3);

static int log_oom(void) {
        log_error("Out of memory.");
        return -ENOMEM;
}

static uint64_t sim_now(Sim *s) {
        uint64_t t;

        if (sd_event_now(s->event, CLOCK_MONOTONIC, &t) < 0) {
                struct timespec ts;

                (void) clock_gettime(CLOCK_MONOTONIC, &ts);
                t = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
        }
        return t;
}

/* One stdout line per event, flushed at once so a reader behind a pipe sees it immediately. */
_printf_(2, 3)
static void sim_event(Sim *s, const char *format, ...) {
        va_list ap;
        uint64_t now = sim_now(s);

        printf("%" PRIu64 " ", now >= s->start_usec ? (now - s->start_usec) / USEC_PER_MSEC : 0);
        va_start(ap, format);
        vprintf(format, ap);
        va_end(ap);
        putchar('\n');
        fflush(stdout);
}

/* "..." with backslash escapes: the value can hold any byte. */
static char *quote(const char *s, size_t len, char *buf, size_t size) {
        size_t j = 0;

        if (size < 3) {
                if (size > 0)
                        buf[0] = 0;
                return buf;
        }
        buf[j++] = '"';
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                char tmp[5];
                size_t n;

                if (c == '"' || c == '\\') {
                        tmp[0] = '\\';
                        tmp[1] = (char) c;
                        n = 2;
                } else if (c < 0x20 || c >= 0x7f) {
                        snprintf(tmp, sizeof tmp, "\\x%02x", c);
                        n = 4;
                } else {
                        tmp[0] = (char) c;
                        n = 1;
                }
                if (j + n + 2 > size)
                        break;
                memcpy(buf + j, tmp, n);
                j += n;
        }
        buf[j++] = '"';
        buf[j] = 0;
        return buf;
}

/* ---- timers ---- */

static int timer_arm(Sim *s, sd_event_source **src, uint64_t usec, sd_event_time_handler_t cb) {
        /* Accuracy 1 us: the default 250 ms slack would blur the firmware's cadences. */
        return event_timer_arm(s->event, src, usec, 1, cb, s);
}

static void timer_off(sd_event_source *src) {
        if (src)
                (void) sd_event_source_set_enabled(src, SD_EVENT_OFF);
}

static void timer_arm_or_warn(Sim *s, sd_event_source **src, uint64_t usec, sd_event_time_handler_t cb) {
        int r = timer_arm(s, src, usec, cb);
        if (r < 0)
                log_error_errno(r, "Failed to arm a timer: %m");
}

static bool sim_busy(Sim *s) {
        return sim_now(s) < s->busy_until;
}

/* ---- output to the host ---- */

static void sim_flush(Sim *s) {
        while (s->out_len > 0 && s->master_fd >= 0) {
                ssize_t n = write(s->master_fd, s->out, s->out_len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                /* The host went away under us; the hangup check notices. */
                                s->out_len = 0;
                        break;
                }
                memmove(s->out, s->out + n, s->out_len - (size_t) n);
                s->out_len -= (size_t) n;
        }
        sim_update_io(s);
}

/* Returns true if the bytes went to the host. Output with nobody listening is lost, like the
 * output of a board behind a closed USB serial port. */
static bool sim_write(Sim *s, const void *data, size_t len) {
        uint8_t *p;

        if (s->master_fd < 0 || !s->host_open || s->hung)
                return false;
        if (s->out_len + len > OUT_BUF_MAX) {
                log_warning("Host is not reading; dropping %zu bytes of board output.", len);
                return false;
        }
        p = realloc(s->out, s->out_len + len);
        if (!p) {
                log_error("Out of memory.");
                return false;
        }
        s->out = p;
        memcpy(s->out + s->out_len, data, len);
        s->out_len += len;
        sim_flush(s);
        return true;
}

/* Send a frame; the TX line shows what the host received. */
_printf_(4, 5)
static void sim_send_frame(Sim *s, const uint8_t *frame, int size, const char *format, ...) {
        char text[1024];
        va_list ap;

        va_start(ap, format);
        vsnprintf(text, sizeof text, format, ap);
        va_end(ap);

        if (size < 0) {
                log_error_errno(size, "Failed to encode %s: %m", text);
                return;
        }
        if (sim_write(s, frame, (size_t) size))
                sim_event(s, "TX %s", text);
        else
                log_debug("Not sent (%s): %s", s->hung ? "hung" : "no host", text);
}

static void sim_uptime(Sim *s, uint64_t *ret_total_ms) {
        *ret_total_ms = (sim_now(s) - s->boot_usec) / USEC_PER_MSEC + s->uptime_offset_ms;
}

static void sim_send_hello(Sim *s, bool boot) {
        uint8_t buf[KBSP_MAX_FRAME];
        char q[3 * KBSP_SERIAL_FIELD_LEN + 8];
        uint64_t total = 0;
        uint32_t ms, days;
        int r;

        if (!boot)
                sim_uptime(s, &total);
        ms = (uint32_t) (total % DAY_MS);
        days = (uint32_t) MIN(total / DAY_MS, (uint64_t) UINT32_MAX);
        r = kbsp_encode_hello(buf, sizeof buf, (uint16_t) arg_firmware_version, s->serial, ms, days);
        sim_send_frame(s, buf, r, "hello firmware_version=%d serial_number=%s uptime_ms=%" PRIu32
                       " uptime_days=%" PRIu32, arg_firmware_version,
                       quote(s->serial, strnlen(s->serial, sizeof s->serial), q, sizeof q), ms, days);
}

static void sim_send_output_status(Sim *s, unsigned id) {
        uint8_t buf[KBSP_MAX_FRAME];
        char name[16];
        int r;

        snprintf(name, sizeof name, "relay%u", id);
        r = kbsp_encode_output_status(buf, sizeof buf, name, s->relay[id]);
        sim_send_frame(s, buf, r, "output_status output_name=%s output_reading=%d", name, s->relay[id]);
}

/* ---- blocking delays and deferred output ---- */

static int on_busy_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Sim *s = userdata;

        sim_run_jobs(s);
        if (!sim_busy(s) && s->rx_pending)
                sim_rx_process(s);
        sim_update_io(s);
        return 0;
}

/* The firmware sits in delay(): nothing else happens until it returns. */
static void sim_block(Sim *s, uint64_t usec) {
        s->busy_until = MAX(s->busy_until, sim_now(s) + usec);
        timer_arm_or_warn(s, &s->busy_timer, s->busy_until, on_busy_timer);
        sim_update_io(s);
}

static void sim_job_run(Sim *s, const Job *j) {
        uint8_t buf[KBSP_MAX_FRAME];
        char hex[2 * KBSP_MAX_PAYLOAD + 1];
        int r;

        switch (j->type) {
        case JOB_HELLO:
                sim_send_hello(s, j->boot);
                break;
        case JOB_AUTH:
                r = kbsp_encode_auth_token(buf, sizeof buf, j->device, j->token, j->token_len, j->status);
                hex_encode(j->token, j->token_len, hex);
                sim_send_frame(s, buf, r, "auth_token device=%s token=%s status=%u", j->device, hex,
                               j->status);
                if (j->status == 1 && arg_buzzer)
                        sim_block(s, AUTH_MELODY_USEC);
                break;
        }
}

static void sim_run_jobs(Sim *s) {
        while (s->n_jobs > 0 && !sim_busy(s)) {
                Job j = s->jobs[0];

                memmove(s->jobs, s->jobs + 1, (s->n_jobs - 1) * sizeof(Job));
                s->n_jobs--;
                sim_job_run(s, &j);
        }
}

static void sim_job_add(Sim *s, const Job *j) {
        Job *n = reallocarray(s->jobs, s->n_jobs + 1, sizeof(Job));
        if (!n) {
                log_error("Out of memory.");
                return;
        }
        s->jobs = n;
        s->jobs[s->n_jobs++] = *j;
        sim_run_jobs(s);
}

/* A periodic firmware check that falls into a blocking delay runs when the delay ends. Jobs
 * queued before the delay go first, as the firmware finishes the handler that blocked. */
static bool sim_defer_if_busy(Sim *s, sd_event_source **src, sd_event_time_handler_t cb) {
        sim_run_jobs(s);
        if (!sim_busy(s))
                return false;
        timer_arm_or_warn(s, src, s->busy_until, cb);
        return true;
}

/* ---- meters ---- */

/* Credit the ticks the running pours have delivered by now. */
static void sim_pours_realize(Sim *s) {
        uint64_t now = sim_now(s);

        for (size_t i = 0; i < s->n_pours;) {
                Pour *p = &s->pours[i];
                uint64_t target;

                if (p->duration == 0 || now >= p->start + p->duration)
                        target = p->total;
                else {
                        long double frac = (long double) (now - p->start) / (long double) p->duration;
                        target = (uint64_t) ((long double) p->total * frac);
                        if (target > p->total)
                                target = p->total;
                }
                if (target > p->added) {
                        /* u32 arithmetic: the firmware's counter wraps. */
                        s->counter[p->meter] += (uint32_t) (target - p->added);
                        p->added = target;
                }
                if (p->added >= p->total) {
                        memmove(p, p + 1, (s->n_pours - i - 1) * sizeof(Pour));
                        s->n_pours--;
                } else
                        i++;
        }
}

static bool sim_meters_dirty(Sim *s) {
        for (unsigned i = 0; i < s->n_meters; i++)
                if (s->counter[i] != s->reported[i])
                        return true;
        return false;
}

/* A meter_status of the meter's counter, now. */
static void sim_send_meter_status(Sim *s, unsigned meter) {
        uint8_t buf[KBSP_MAX_FRAME];
        char name[16];
        int r;

        snprintf(name, sizeof name, "flow%u", meter);
        r = kbsp_encode_meter_status(buf, sizeof buf, name, s->counter[meter]);
        sim_send_frame(s, buf, r, "meter_status meter_name=%s meter_reading=%" PRIu32, name, s->counter[meter]);
        s->reported[meter] = s->counter[meter];
}

static int on_meter_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Sim *s = userdata;

        if (sim_defer_if_busy(s, &s->meter_timer, on_meter_timer))
                return 0;

        sim_pours_realize(s);
        s->last_meter_check = sim_now(s);
        for (unsigned i = 0; i < s->n_meters; i++)
                if (s->counter[i] != s->reported[i])
                        sim_send_meter_status(s, i);
        sim_meter_schedule(s);
        return 0;
}

/* The firmware checks every (interval + 1) ms; a check that would find nothing to report is
 * skipped, so an idle board costs no wake-ups. Reports still come at most once per interval. */
static void sim_meter_schedule(Sim *s) {
        uint64_t when;

        if (s->n_pours == 0 && !sim_meters_dirty(s)) {
                timer_off(s->meter_timer);
                return;
        }
        when = MAX(sim_now(s), s->last_meter_check + ((uint64_t) arg_meter_interval_ms + 1) * USEC_PER_MSEC);
        timer_arm_or_warn(s, &s->meter_timer, when, on_meter_timer);
}

/* ---- traces ---- */

static Trace *trace_free(Trace *t) {
        if (!t)
                return NULL;
        sd_event_source_disable_unref(t->timer);
        ghost_trace_free(t->trace);
        free(t);
        return NULL;
}

static void sim_trace_stop(Sim *s, unsigned meter, const char *state) {
        Trace *t = s->traces[meter];

        if (!t)
                return;
        sim_event(s, "TRACE meter=flow%u state=%s reports=%" PRIu64 " ticks=%" PRIu32, meter, state, t->reports,
                  t->last);
        s->traces[meter] = trace_free(t);
}

static int on_trace_timer(sd_event_source *src, uint64_t usec, void *userdata);

/* Arms the timer for the next report, or ends the trace. */
static void sim_trace_next(Sim *s, Trace *t) {
        int r;

        if (ghost_trace_next(&t->cursor, &t->due_usec, &t->due_reading) <= 0) {
                sim_trace_stop(s, t->meter, "end");
                return;
        }
        /* Accuracy 1 us: a report's arrival time is what the core's ghost filter measures. */
        r = event_timer_arm(s->event, &t->timer, t->start + t->due_usec, 1, on_trace_timer, t);
        if (r < 0) {
                log_error_errno(r, "Failed to arm the trace timer: %m");
                sim_trace_stop(s, t->meter, "failed");
        }
}

static int on_trace_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Trace *t = userdata;
        Sim *s = t->sim;

        sim_pours_realize(s);
        /* u32 arithmetic: the firmware's counter wraps. */
        s->counter[t->meter] += t->due_reading - t->last;
        t->last = t->due_reading;
        t->reports++;
        sim_send_meter_status(s, t->meter);
        sim_trace_next(s, t);
        return 0;
}

/* Plays 'text' (ghost-trace.h) on the meter from now on; the current counter is its baseline,
 * reported at once. */
static int sim_trace_start(Sim *s, unsigned meter, const char *text) {
        _cleanup_(freep) char *error = NULL;
        Trace *t;
        int r;

        if (s->traces[meter]) {
                sim_command_error(s, "a trace is already playing on flow%u (trace_stop first)", meter);
                return 0;
        }
        t = calloc(1, sizeof(Trace));
        if (!t)
                return log_oom();
        r = ghost_trace_parse(text, &t->trace, &error);
        if (r < 0) {
                trace_free(t);
                if (r == -ENOMEM)
                        return log_oom();
                sim_command_error(s, "bad trace: %s", error ?: "invalid");
                return 0;
        }
        t->sim = s;
        t->meter = meter;
        t->start = sim_now(s);
        ghost_trace_cursor_init(&t->cursor, t->trace, 0);
        s->traces[meter] = t;

        sim_event(s, "TRACE meter=flow%u state=start duration_ms=%" PRIu64 " interval_ms=%" PRIu64, meter,
                  ghost_trace_end_usec(t->trace) / USEC_PER_MSEC, t->trace->interval_usec / USEC_PER_MSEC);
        sim_pours_realize(s);
        sim_send_meter_status(s, meter);        /* the baseline */
        sim_trace_next(s, t);
        return 0;
}

/* ---- relays ---- */

static void sim_watchdog_schedule(Sim *s);

static void sim_relay_set(Sim *s, unsigned id, bool on, const char *cause, bool announce) {
        if (s->relay[id] == on)
                return;
        s->relay[id] = on;
        sim_event(s, "RELAY id=%u state=%s cause=%s", id, on ? "on" : "off", cause);
        if (announce)
                sim_send_output_status(s, id);
}

static int on_watchdog_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Sim *s = userdata;
        uint64_t now;

        if (sim_defer_if_busy(s, &s->watchdog_timer, on_watchdog_timer))
                return 0;

        now = sim_now(s);
        for (unsigned i = 0; i < SIM_OUTPUTS; i++)
                if (s->relay[i] &&
                    now - s->relay_refreshed[i] > (uint64_t) arg_relay_watchdog_ms * USEC_PER_MSEC)
                        sim_relay_set(s, i, false, "watchdog", true);
        sim_watchdog_schedule(s);
        return 0;
}

static void sim_watchdog_schedule(Sim *s) {
        uint64_t when = UINT64_MAX;

        if (arg_relay_watchdog_ms > 0)
                for (unsigned i = 0; i < SIM_OUTPUTS; i++)
                        if (s->relay[i])
                                when = MIN(when, s->relay_refreshed[i] +
                                           ((uint64_t) arg_relay_watchdog_ms + 1) * USEC_PER_MSEC);
        if (when == UINT64_MAX)
                timer_off(s->watchdog_timer);
        else
                timer_arm_or_warn(s, &s->watchdog_timer, when, on_watchdog_timer);
}

/* ---- heartbeat and temperatures ---- */

static int on_heartbeat_timer(sd_event_source *src, uint64_t usec, void *userdata);

static void sim_heartbeat_schedule(Sim *s) {
        if (arg_heartbeat_ms <= 0) {
                timer_off(s->heartbeat_timer);
                return;
        }
        timer_arm_or_warn(s, &s->heartbeat_timer,
                          s->last_heartbeat + ((uint64_t) arg_heartbeat_ms + 1) * USEC_PER_MSEC,
                          on_heartbeat_timer);
}

static int on_heartbeat_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Sim *s = userdata;

        if (sim_defer_if_busy(s, &s->heartbeat_timer, on_heartbeat_timer))
                return 0;
        s->last_heartbeat = sim_now(s);
        sim_send_hello(s, false);
        sim_heartbeat_schedule(s);
        return 0;
}

static int on_thermo_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Sim *s = userdata;

        if (sim_defer_if_busy(s, &s->thermo_timer, on_thermo_timer))
                return 0;

        if (s->n_sensors == 0) {
                s->thermo_slot = 0;
                return 0;
        }
        /* Slot n_sensors is the idle second of each bus pass. */
        if (s->thermo_slot < s->n_sensors) {
                const Sensor *t = &s->sensors[s->thermo_slot];
                uint8_t buf[KBSP_MAX_FRAME];
                int r;

                r = kbsp_encode_temperature_reading(buf, sizeof buf, t->name, t->micro_c);
                sim_send_frame(s, buf, r, "temperature_reading sensor_name=%s sensor_reading=%" PRIi32,
                               t->name, t->micro_c);
        }
        s->thermo_slot = (s->thermo_slot + 1) % (s->n_sensors + 1);
        timer_arm_or_warn(s, &s->thermo_timer, sim_now(s) + THERMO_SLOT_USEC, on_thermo_timer);
        return 0;
}

static void sim_thermo_start(Sim *s, bool restart) {
        int enabled = SD_EVENT_OFF;

        if (s->n_sensors == 0) {
                timer_off(s->thermo_timer);
                s->thermo_slot = 0;
                return;
        }
        if (s->thermo_timer)
                (void) sd_event_source_get_enabled(s->thermo_timer, &enabled);
        if (restart || enabled == SD_EVENT_OFF)
                timer_arm_or_warn(s, &s->thermo_timer, sim_now(s) + THERMO_SLOT_USEC, on_thermo_timer);
}

/* ---- boot ---- */

static void sim_boot(Sim *s, bool announce) {
        uint64_t now = sim_now(s);

        /* Ticks poured so far landed on the old counters; the pours themselves go on. */
        sim_pours_realize(s);
        memset(s->counter, 0, sizeof s->counter);
        memset(s->reported, 0, sizeof s->reported);
        for (unsigned i = 0; i < SIM_OUTPUTS; i++)
                sim_relay_set(s, i, false, "reset", false);
        timer_off(s->watchdog_timer);

        s->boot_usec = now;
        s->uptime_offset_ms = 0;
        s->n_jobs = 0;
        s->busy_until = 0;
        timer_off(s->busy_timer);
        /* Bytes in flight when the board reset are lost with its receive buffer. */
        kbsp_firmware_parser_init(&s->parser, arg_strict_crc);
        s->rx_pending = false;

        s->last_meter_check = now;
        s->last_heartbeat = now;
        sim_heartbeat_schedule(s);
        sim_thermo_start(s, true);

        if (announce)
                sim_event(s, "BOOT uptime_ms=0");

        if (arg_buzzer)
                sim_block(s, BOOT_MELODY_USEC);
        sim_job_add(s, &(Job) { .type = JOB_HELLO, .boot = true });
        sim_meter_schedule(s);
        sim_update_io(s);
}

/* ---- host frames ---- */

static const KbspRecord *record_first_byte(const KbspFrame *f, uint8_t tag, uint8_t *ret) {
        const KbspRecord *r = kbsp_frame_find_record(f, tag);

        /* The firmware reads the first byte of the value, whatever its declared length. */
        if (!r || r->len < 1)
                return NULL;
        *ret = kbsp_record_value(f, r)[0];
        return r;
}

static uint16_t frame_computed_crc(const KbspFrame *f) {
        return kbsp_crc16(f->data, (size_t) f->size - KBSP_FOOTER_LEN);
}

static void sim_handle_frame(Sim *s, const KbspFrame *f) {
        const char *crc = frame_computed_crc(f) == f->crc ? "ok" : "bad";

        switch (f->message_id) {
        case KBSP_MSG_PING:
                sim_event(s, "RX ping crc=%s", crc);
                /* The reply comes after the melody: block first, the queued hello waits. */
                if (arg_buzzer)
                        sim_block(s, PING_MELODY_USEC);
                sim_job_add(s, &(Job) { .type = JOB_HELLO });
                break;

        case KBSP_MSG_SET_OUTPUT: {
                uint8_t id, mode;

                if (!record_first_byte(f, KBSP_SET_OUTPUT_TAG_OUTPUT_ID, &id) ||
                    !record_first_byte(f, KBSP_SET_OUTPUT_TAG_OUTPUT_MODE, &mode)) {
                        sim_event(s, "RX_DROP reason=missing_tag");
                        break;
                }
                if (id >= SIM_OUTPUTS) {
                        sim_event(s, "RX_DROP reason=bad_id");
                        break;
                }
                sim_event(s, "RX set_output output_id=%u output_mode=%u crc=%s", id, mode, crc);
                s->relay_refreshed[id] = sim_now(s);
                if (mode == 0 || mode == 1)
                        sim_relay_set(s, id, mode == 1, "command", true);
                sim_watchdog_schedule(s);
                break;
        }

        case KBSP_MSG_SET_SERIAL_NUMBER: {
                const KbspRecord *r = kbsp_frame_find_record(f, KBSP_SET_SERIAL_NUMBER_TAG_SERIAL_NUMBER);
                const char *value = r ? (const char *) kbsp_record_value(f, r) : "";
                size_t len = r ? r->len : 0;
                char q[4 * KBSP_MAX_PAYLOAD + 8];

                if (r)
                        sim_event(s, "RX set_serial_number serial_number=%s crc=%s",
                                  quote(value, strnlen(value, len), q, sizeof q), crc);
                else
                        sim_event(s, "RX set_serial_number crc=%s", crc);

                if (s->serial_programmed) {
                        log_info("Serial number already programmed; set_serial_number ignored.");
                        break;
                }
                if (len >= KBSP_SERIAL_FIELD_LEN) {
                        log_info("Serial number of %zu bytes is too long; ignored.", len);
                        break;
                }
                memset(s->serial, 0, sizeof s->serial);
                memcpy(s->serial, value, len);
                s->serial_programmed = true;
                sim_event(s, "SERIAL value=%s", quote(s->serial, strnlen(s->serial, sizeof s->serial),
                                                      q, sizeof q));
                sim_job_add(s, &(Job) { .type = JOB_HELLO });
                break;
        }

        default:
                log_debug("Ignoring host frame with message id 0x%02x.", f->message_id);
                sim_event(s, "RX_DROP reason=bad_id");
                break;
        }
}

/* One frame per firmware loop pass: a frame that starts a blocking delay holds the rest back. */
static void sim_rx_process(Sim *s) {
        KbspEvent ev;

        while (s->rx_pending && !sim_busy(s)) {
                int r = kbsp_firmware_parser_next(&s->parser, &ev);
                if (r <= 0) {
                        s->rx_pending = false;
                        break;
                }
                switch (ev.type) {
                case KBSP_EVENT_FRAME:
                        sim_handle_frame(s, ev.frame);
                        break;
                case KBSP_EVENT_ERROR:
                        sim_event(s, "RX_DROP reason=%s", kbsp_error_to_string(ev.error));
                        break;
                case KBSP_EVENT_GARBAGE:
                        log_debug("Skipped %" PRIu64 " bytes of noise from the host.", ev.size);
                        break;
                }
        }
        sim_update_io(s);
}

static int sim_rx_read(Sim *s) {
        ssize_t n;
        int r;

        n = read(s->master_fd, s->rx_buf, sizeof s->rx_buf);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        if (n == 0)
                return -EIO;
        r = kbsp_firmware_parser_feed(&s->parser, s->rx_buf, (size_t) n);
        if (r < 0)
                return log_error_errno(r, "Failed to feed the frame parser: %m");
        s->rx_pending = true;
        sim_rx_process(s);
        return 1;
}

/* ---- the pty ---- */

static int on_hangup_timer(sd_event_source *src, uint64_t usec, void *userdata);

static bool master_hung_up(Sim *s) {
        struct pollfd p = { .fd = s->master_fd, .events = POLLIN };

        return poll(&p, 1, 0) > 0 && (p.revents & POLLHUP);
}

static void sim_update_io(Sim *s) {
        uint32_t events = 0;

        if (!s->master_io)
                return;
        if (!s->host_open) {
                (void) sd_event_source_set_enabled(s->master_io, SD_EVENT_OFF);
                return;
        }
        if (!s->rx_pending && !sim_busy(s))
                events |= EPOLLIN;
        if (s->out_len > 0)
                events |= EPOLLOUT;
        /* EPOLLHUP is reported even with no events asked for: the close is always noticed. */
        (void) sd_event_source_set_io_events(s->master_io, events);
        (void) sd_event_source_set_enabled(s->master_io, SD_EVENT_ON);
}

static void sim_host_closed(Sim *s) {
        s->host_open = false;
        s->out_len = 0;
        /* What the host wrote just before closing still reaches the board (its replies are lost). */
        if (!s->rx_pending && !sim_busy(s))
                while (sim_rx_read(s) > 0 && !s->rx_pending)
                        ;
        kbsp_firmware_parser_init(&s->parser, arg_strict_crc);
        s->rx_pending = false;
        (void) tcflush(s->master_fd, TCIOFLUSH);
        sim_event(s, "CLOSE");
        /* The last close drops DTR unless the host cleared HUPCL (the pair shares one termios,
         * which the master reads). */
        struct termios t;
        if (tcgetattr(s->master_fd, &t) < 0 || (t.c_cflag & HUPCL)) {
                s->dtr = false;
                sim_event(s, "DTR state=off");
        }
        sim_update_io(s);
        timer_arm_or_warn(s, &s->hangup_timer, sim_now(s) + HANGUP_CHECK_USEC, on_hangup_timer);
}

static int on_master_io(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Sim *s = userdata;

        if (revents & EPOLLOUT)
                sim_flush(s);
        if ((revents & EPOLLIN) && !s->rx_pending && !sim_busy(s)) {
                int r = sim_rx_read(s);
                if (r < 0 && r != -EIO)
                        log_warning_errno(r, "Failed to read from the pty: %m");
        }
        if ((revents & (EPOLLHUP | EPOLLERR)) && master_hung_up(s))
                sim_host_closed(s);
        return 0;
}

static void sim_host_opened(Sim *s) {
        bool edge = !s->dtr;

        s->host_open = true;
        s->dtr = true;
        sim_event(s, "OPEN");
        if (edge)
                sim_event(s, "DTR state=on");
        /* An Arduino resets on the rising DTR edge of an open; DTR kept asserted since the last
         * host (HUPCL cleared) makes no edge. */
        if (arg_reset_on_open && edge)
                sim_boot(s, true);
        sim_update_io(s);
}

/* The one periodic check: Linux offers no event for "the slave was opened", but POLLHUP on the
 * master stops once it is. Runs only while no host has the port open. */
static int on_hangup_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Sim *s = userdata;

        if (master_hung_up(s)) {
                timer_arm_or_warn(s, &s->hangup_timer, sim_now(s) + HANGUP_CHECK_USEC, on_hangup_timer);
                return 0;
        }
        sim_host_opened(s);
        return 0;
}

static int sim_open_pty(Sim *s) {
        _cleanup_(closep) int master = -1, slave = -1;
        struct termios t;
        char path[PATH_MAX];
        int r;

        if (openpty(&master, &slave, NULL, NULL, NULL) < 0)
                return log_error_errno(errno, "Failed to create a pseudo-terminal: %m");
        if (tcgetattr(slave, &t) < 0)
                return log_error_errno(errno, "Failed to read the pty settings: %m");
        cfmakeraw(&t);
        (void) cfsetspeed(&t, B115200);
        /* A serial port's default: the last close drops DTR (a pty starts without it). */
        t.c_cflag |= HUPCL;
        if (tcsetattr(slave, TCSANOW, &t) < 0)
                return log_error_errno(errno, "Failed to set the pty raw: %m");
        r = ttyname_r(slave, path, sizeof path);
        if (r != 0)
                return log_error_errno(r, "Failed to get the pty slave's path: %m");
        if (fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK) < 0 ||
            fcntl(master, F_SETFD, FD_CLOEXEC) < 0)
                return log_error_errno(errno, "Failed to set up the pty master: %m");

        s->slave_path = strdup(path);
        if (!s->slave_path)
                return log_oom();
        /* With the slave closed the master reports POLLHUP until a host opens it. */
        slave = safe_close(slave);
        s->master_fd = TAKE_FD(master);

        r = sd_event_add_io(s->event, &s->master_io, s->master_fd, EPOLLIN, on_master_io, s);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the pty: %m");
        (void) sd_event_source_set_enabled(s->master_io, SD_EVENT_OFF);
        sim_event(s, "PTY path=%s", s->slave_path);
        return 0;
}

static int sim_make_link(Sim *s, const char *link) {
        struct stat st;

        if (lstat(link, &st) == 0) {
                if (!S_ISLNK(st.st_mode))
                        return log_error_errno(EEXIST, "%s exists and is not a symlink.", link);
                if (unlink(link) < 0 && errno != ENOENT)
                        return log_error_errno(errno, "Failed to remove the old symlink %s: %m", link);
        } else if (errno != ENOENT)
                return log_error_errno(errno, "Failed to check %s: %m", link);

        if (symlink(s->slave_path, link) < 0)
                return log_error_errno(errno, "Failed to create the symlink %s: %m", link);
        s->link_path = strdup(link);
        if (!s->link_path) {
                (void) unlink(link);
                return log_oom();
        }
        sim_event(s, "LINK path=%s", link);
        return 0;
}

static void sim_remove_link(Sim *s) {
        char target[PATH_MAX];
        ssize_t n;

        if (!s->link_path)
                return;
        /* Leave it alone if someone else has pointed it elsewhere meanwhile. */
        n = readlink(s->link_path, target, sizeof target - 1);
        if (n >= 0) {
                target[n] = 0;
                if (streq(target, s->slave_path))
                        (void) unlink(s->link_path);
        }
        free(s->link_path);
        s->link_path = NULL;
}

static void sim_unplug(Sim *s) {
        s->master_io = sd_event_source_disable_unref(s->master_io);
        s->hangup_timer = sd_event_source_disable_unref(s->hangup_timer);
        s->master_fd = safe_close(s->master_fd);
        s->host_open = false;
        s->out_len = 0;
}

/* ---- sensors ---- */

static int sensor_name_normalize(const char *in, char ret[static SENSOR_NAME_MAX]) {
        size_t len = strlen(in);

        if (len == 16 && hex_is_valid(in, 16)) {
                snprintf(ret, SENSOR_NAME_MAX, "thermo-%s", in);
                for (char *p = ret; *p; p++)
                        *p = (char) tolower((unsigned char) *p);
                return 0;
        }
        if (len == 0 || len >= SENSOR_NAME_MAX)
                return -EINVAL;
        for (size_t i = 0; i < len; i++)
                if (!isgraph((unsigned char) in[i]) || in[i] == ',' || in[i] == '=')
                        return -EINVAL;
        memcpy(ret, in, len + 1);
        return 0;
}

/* DS18B20: 1/16 degree steps. */
static int celsius_to_micro(const char *text, int32_t *ret) {
        char *end;
        double c, q;

        errno = 0;
        c = strtod(text, &end);
        if (errno != 0 || end == text || *end != 0 || !isfinite(c))
                return -EINVAL;
        q = round(c * 16.0) * 62500.0;
        if (q < (double) INT32_MIN || q > (double) INT32_MAX)
                return -ERANGE;
        *ret = (int32_t) q;
        return 0;
}

static Sensor *sim_sensor_find(Sim *s, const char *name) {
        for (size_t i = 0; i < s->n_sensors; i++)
                if (streq(s->sensors[i].name, name))
                        return &s->sensors[i];
        return NULL;
}

static int sim_sensor_set(Sim *s, const char *name, const char *celsius) {
        char n[SENSOR_NAME_MAX];
        int32_t micro;
        Sensor *t;

        if (sensor_name_normalize(name, n) < 0)
                return -EINVAL;
        if (celsius_to_micro(celsius, &micro) < 0)
                return -ERANGE;
        t = sim_sensor_find(s, n);
        if (!t) {
                Sensor *a = reallocarray(s->sensors, s->n_sensors + 1, sizeof(Sensor));
                if (!a)
                        return -ENOMEM;
                s->sensors = a;
                t = &s->sensors[s->n_sensors++];
                memcpy(t->name, n, sizeof n);
        }
        t->micro_c = micro;
        return 0;
}

static int sim_parse_thermo_flag(Sim *s, const char *spec) {
        _cleanup_(freep) char *copy = strdup(spec);
        char *saveptr = NULL;

        if (!copy)
                return -ENOMEM;
        for (char *item = strtok_r(copy, ",", &saveptr); item; item = strtok_r(NULL, ",", &saveptr)) {
                char *eq = strchr(item, '=');
                int r;

                if (!eq)
                        return -EINVAL;
                *eq = 0;
                r = sim_sensor_set(s, item, eq + 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- commands ---- */

_printf_(2, 3)
static void sim_command_error(Sim *s, const char *format, ...) {
        char text[512], q[4 * sizeof text + 8];
        va_list ap;

        va_start(ap, format);
        vsnprintf(text, sizeof text, format, ap);
        va_end(ap);
        sim_event(s, "ERROR msg=%s", quote(text, strlen(text), q, sizeof q));
}

static int parse_u64(const char *text, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!text || !isdigit((unsigned char) text[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(text, &end, 10);
        if (errno != 0 || *end != 0 || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

static int parse_seconds(const char *text, uint64_t *ret_usec) {
        char *end;
        double v;

        if (!text)
                return -EINVAL;
        errno = 0;
        v = strtod(text, &end);
        /* Up to ~11 days: enough for any pour or pause, far from overflowing. */
        if (errno != 0 || end == text || *end != 0 || !isfinite(v) || v < 0 || v > 1e6)
                return -ERANGE;
        *ret_usec = (uint64_t) llround(v * 1e6);
        return 0;
}

static int parse_meter(Sim *s, const char *text, unsigned *ret) {
        const char *n = startswith(text, "flow") ?: text;
        uint64_t v;

        if (parse_u64(n, SIM_METERS_MAX - 1, &v) < 0 || v >= s->n_meters || strlen(n) != 1)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

static int sim_queue_auth(Sim *s, const char *device, const char *token, uint8_t status) {
        uint8_t scratch[KBSP_MAX_FRAME];
        Job j = { .type = JOB_AUTH, .status = status };
        int r;

        if (strlen(device) == 0 || strlen(device) >= sizeof j.device)
                return -EINVAL;
        strcpy(j.device, device);
        r = kbsp_token_from_string(token, j.token, sizeof j.token);
        if (r <= 0)
                return -EINVAL;
        j.token_len = (size_t) r;
        /* Refuse now what could not be framed later. */
        if (kbsp_encode_auth_token(scratch, sizeof scratch, j.device, j.token, j.token_len, status) < 0)
                return -E2BIG;
        sim_job_add(s, &j);
        return 0;
}

static int on_sleep_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Sim *s = userdata;

        sim_commands_run(s);
        return 0;
}

static void sim_status(Sim *s) {
        char meters[SIM_METERS_MAX * 24] = "", relays[SIM_OUTPUTS + 1], q[4 * KBSP_SERIAL_FIELD_LEN + 8];
        size_t m = 0;
        uint64_t total;

        sim_pours_realize(s);
        for (unsigned i = 0; i < s->n_meters; i++)
                m += (size_t) snprintf(meters + m, sizeof meters - m, "%sflow%u:%" PRIu32,
                                       i ? "," : "", i, s->counter[i]);
        for (unsigned i = 0; i < SIM_OUTPUTS; i++)
                relays[i] = s->relay[i] ? '1' : '0';
        relays[SIM_OUTPUTS] = 0;
        sim_uptime(s, &total);
        sim_event(s, "STATUS uptime_ms=%" PRIu64 " meters=%s relays=%s serial=%s", total, meters, relays,
                  quote(s->serial, strnlen(s->serial, sizeof s->serial), q, sizeof q));
}

/* "trace <meter> <trace...>": the trace is the rest of the line, with its own syntax. */
static int sim_trace_command(Sim *s, const char *args) {
        char name[16];
        unsigned meter;
        size_t n;

        args += strspn(args, " \t");
        n = strcspn(args, " \t");
        if (n == 0 || n >= sizeof name) {
                sim_command_error(s, "usage: trace <meter> <seconds>:<rate> ... (see kegboard_sim(1))");
                return 0;
        }
        memcpy(name, args, n);
        name[n] = 0;
        if (parse_meter(s, name, &meter) < 0) {
                sim_command_error(s, "bad meter '%s'", name);
                return 0;
        }
        return sim_trace_start(s, meter, args + n);
}

/* Returns 1 to stop processing further commands for now (sleep), 0 to go on, <0 to exit. */
static int sim_command(Sim *s, char *line) {
        char *argv[8], *saveptr = NULL, *rest;
        size_t argc = 0;
        uint64_t v, usec;
        unsigned meter;
        const char *start;
        int r;

        /* '#' starts a comment anywhere: no argument can contain one. */
        rest = strchr(line, '#');
        if (rest)
                *rest = 0;
        start = line + strspn(line, " \t");
        if ((rest = (char *) startswith(start, "trace")) && (*rest == ' ' || *rest == '\t'))
                return sim_trace_command(s, rest);
        for (char *w = strtok_r(line, " \t\r\n", &saveptr); w; w = strtok_r(NULL, " \t\r\n", &saveptr)) {
                if (argc >= ELEMENTSOF(argv)) {
                        sim_command_error(s, "too many arguments");
                        return 0;
                }
                argv[argc++] = w;
        }
        if (argc == 0)
                return 0;

#define NEED(n, usage)                                                         \
        if (argc != (n)) {                                                     \
                sim_command_error(s, "usage: %s", usage);                      \
                return 0;                                                      \
        }

        if (streq(argv[0], "pour") || streq(argv[0], "ticks")) {
                bool ticks = streq(argv[0], "ticks");
                Pour *p;

                if (ticks) {
                        NEED(3, "ticks <meter> <n>");
                } else if (argc != 3 && argc != 4) {
                        sim_command_error(s, "usage: pour <meter> <ticks> [<seconds>]");
                        return 0;
                }
                if (parse_meter(s, argv[1], &meter) < 0) {
                        sim_command_error(s, "bad meter '%s'", argv[1]);
                        return 0;
                }
                if (parse_u64(argv[2], UINT32_MAX, &v) < 0) {
                        sim_command_error(s, "bad tick count '%s'", argv[2]);
                        return 0;
                }
                usec = 0;
                if (argc == 4 && parse_seconds(argv[3], &usec) < 0) {
                        sim_command_error(s, "bad duration '%s'", argv[3]);
                        return 0;
                }
                if (v == 0)
                        return 0;
                p = reallocarray(s->pours, s->n_pours + 1, sizeof(Pour));
                if (!p)
                        return log_oom();
                s->pours = p;
                s->pours[s->n_pours++] = (Pour) {
                        .meter = meter, .total = v, .start = sim_now(s), .duration = usec,
                };
                sim_pours_realize(s);
                sim_meter_schedule(s);

        } else if (streq(argv[0], "counter")) {
                NEED(3, "counter <meter> <value>");
                if (parse_meter(s, argv[1], &meter) < 0) {
                        sim_command_error(s, "bad meter '%s'", argv[1]);
                        return 0;
                }
                if (parse_u64(argv[2], UINT32_MAX, &v) < 0) {
                        sim_command_error(s, "bad counter value '%s'", argv[2]);
                        return 0;
                }
                sim_pours_realize(s);
                s->counter[meter] = (uint32_t) v;
                sim_meter_schedule(s);

        } else if (streq(argv[0], "trace")) {
                sim_command_error(s, "usage: trace <meter> <seconds>:<rate> ... (see kegboard_sim(1))");

        } else if (streq(argv[0], "trace_file")) {
                _cleanup_(freep) char *text = NULL;

                NEED(3, "trace_file <meter> <file>");
                if (parse_meter(s, argv[1], &meter) < 0) {
                        sim_command_error(s, "bad meter '%s'", argv[1]);
                        return 0;
                }
                r = io_read_file(argv[2], TRACE_FILE_MAX, &text, NULL);
                if (r < 0) {
                        sim_command_error(s, "cannot read trace file '%s': %s", argv[2], strerror(-r));
                        return 0;
                }
                if (memchr(text, 0, strlen(text)) || strlen(text) == 0) {
                        sim_command_error(s, "trace file '%s' is empty", argv[2]);
                        return 0;
                }
                return sim_trace_start(s, meter, text);

        } else if (streq(argv[0], "trace_stop")) {
                NEED(2, "trace_stop <meter>");
                if (parse_meter(s, argv[1], &meter) < 0) {
                        sim_command_error(s, "bad meter '%s'", argv[1]);
                        return 0;
                }
                if (!s->traces[meter])
                        sim_command_error(s, "no trace is playing on flow%u", meter);
                else
                        sim_trace_stop(s, meter, "stopped");

        } else if (streq(argv[0], "temp")) {
                NEED(3, "temp <sensor> <celsius>");
                r = sim_sensor_set(s, argv[1], argv[2]);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0) {
                        sim_command_error(s, "bad sensor '%s' or temperature '%s'", argv[1], argv[2]);
                        return 0;
                }
                sim_thermo_start(s, false);

        } else if (streq(argv[0], "temp_remove")) {
                char n[SENSOR_NAME_MAX];
                Sensor *t;

                NEED(2, "temp_remove <sensor>");
                t = sensor_name_normalize(argv[1], n) < 0 ? NULL : sim_sensor_find(s, n);
                if (!t) {
                        sim_command_error(s, "no sensor '%s'", argv[1]);
                        return 0;
                }
                size_t idx = (size_t) (t - s->sensors);
                memmove(t, t + 1, (s->n_sensors - idx - 1) * sizeof(Sensor));
                s->n_sensors--;
                /* Keep the round-robin on the sensor that was next. */
                if (s->thermo_slot > idx)
                        s->thermo_slot--;
                if (s->thermo_slot > s->n_sensors)
                        s->thermo_slot = 0;
                sim_thermo_start(s, false);

        } else if (streq(argv[0], "auth")) {
                uint8_t status;

                NEED(4, "auth <device> <token> present|removed");
                if (streq(argv[3], "present"))
                        status = 1;
                else if (streq(argv[3], "removed"))
                        status = 0;
                else {
                        sim_command_error(s, "bad auth status '%s' (present or removed)", argv[3]);
                        return 0;
                }
                if (sim_queue_auth(s, argv[1], argv[2], status) < 0)
                        sim_command_error(s, "bad device '%s' or token '%s'", argv[1], argv[2]);

        } else if (streq(argv[0], "swipe")) {
                NEED(2, "swipe <10 hex digits>");
                if (!hex_is_valid(argv[1], 10)) {
                        sim_command_error(s, "bad card '%s' (10 hex digits)", argv[1]);
                        return 0;
                }
                (void) sim_queue_auth(s, "core.rfid", argv[1], 1);
                (void) sim_queue_auth(s, "core.rfid", argv[1], 0);

        } else if (streq(argv[0], "ibutton")) {
                NEED(3, "ibutton <16 hex digits> on|off");
                if (!hex_is_valid(argv[1], 16) || (!streq(argv[2], "on") && !streq(argv[2], "off"))) {
                        sim_command_error(s, "usage: ibutton <16 hex digits> on|off");
                        return 0;
                }
                (void) sim_queue_auth(s, "onewire", argv[1], streq(argv[2], "on"));

        } else if (streq(argv[0], "reset")) {
                NEED(1, "reset");
                sim_boot(s, true);

        } else if (streq(argv[0], "hang")) {
                NEED(1, "hang");
                s->hung = true;

        } else if (streq(argv[0], "unhang")) {
                NEED(1, "unhang");
                s->hung = false;

        } else if (streq(argv[0], "raw")) {
                uint8_t bytes[LINE_MAX_LEN / 2];
                char hex[LINE_MAX_LEN + 1] = "";
                size_t n = 0, h = 0;

                if (argc < 2) {
                        sim_command_error(s, "usage: raw <hex>");
                        return 0;
                }
                /* Spaces between byte groups are allowed: join the arguments. */
                for (size_t i = 1; i < argc; i++) {
                        size_t l = strlen(argv[i]);
                        if (h + l > LINE_MAX_LEN)
                                break;
                        memcpy(hex + h, argv[i], l);
                        h += l;
                }
                hex[h] = 0;
                if (h == 0 || h % 2 != 0 || !hex_is_valid(hex, h)) {
                        sim_command_error(s, "bad hex '%s'", hex);
                        return 0;
                }
                for (size_t i = 0; i < h; i += 2)
                        bytes[n++] = (uint8_t) (unhexchar(hex[i]) << 4 | unhexchar(hex[i + 1]));
                hex_encode(bytes, n, hex);
                if (sim_write(s, bytes, n))
                        sim_event(s, "TX raw hex=%s", hex);
                else
                        log_debug("Raw bytes not sent (%s).", s->hung ? "hung" : "no host");

        } else if (streq(argv[0], "unplug")) {
                NEED(1, "unplug");
                sim_unplug(s);
                s->exiting = true;
                (void) sd_event_exit(s->event, 0);
                return 1;

        } else if (streq(argv[0], "sleep")) {
                NEED(2, "sleep <seconds>");
                if (parse_seconds(argv[1], &usec) < 0) {
                        sim_command_error(s, "bad duration '%s'", argv[1]);
                        return 0;
                }
                timer_arm_or_warn(s, &s->sleep_timer, sim_now(s) + usec, on_sleep_timer);
                return 1;

        } else if (streq(argv[0], "status")) {
                NEED(1, "status");
                sim_status(s);

        } else if (streq(argv[0], "quit")) {
                NEED(1, "quit");
                s->exiting = true;
                (void) sd_event_exit(s->event, 0);
                return 1;

        } else
                sim_command_error(s, "unknown command '%s'", argv[0]);
#undef NEED
        return 0;
}

static bool sim_sleeping(Sim *s) {
        int enabled = SD_EVENT_OFF;

        if (s->sleep_timer)
                (void) sd_event_source_get_enabled(s->sleep_timer, &enabled);
        return enabled != SD_EVENT_OFF;
}

static void sim_commands_run(Sim *s) {
        while (s->n_queue > 0 && !s->exiting && !sim_sleeping(s)) {
                _cleanup_(freep) char *line = s->queue[0];

                memmove(s->queue, s->queue + 1, (s->n_queue - 1) * sizeof(char *));
                s->n_queue--;
                if (sim_command(s, line) < 0) {
                        s->exiting = true;
                        (void) sd_event_exit(s->event, 1);
                }
        }
}

/* Queue the ';'-separated commands of one line. */
static int sim_queue_line(Sim *s, const char *line, size_t len) {
        const char *p = line, *end = line + len;

        while (p <= end) {
                const char *semi = memchr(p, ';', (size_t) (end - p));
                const char *stop = semi ?: end;
                char **q;
                char *cmd;

                cmd = strndup(p, (size_t) (stop - p));
                if (!cmd)
                        return -ENOMEM;
                q = reallocarray(s->queue, s->n_queue + 1, sizeof(char *));
                if (!q) {
                        free(cmd);
                        return -ENOMEM;
                }
                s->queue = q;
                s->queue[s->n_queue++] = cmd;
                if (!semi)
                        break;
                p = semi + 1;
        }
        return 0;
}

static void sim_stdin_data(Sim *s, const char *data, size_t n) {
        for (size_t i = 0; i < n; i++) {
                char c = data[i];

                if (c == '\n') {
                        if (s->stdin_overlong)
                                sim_command_error(s, "command line too long");
                        else if (sim_queue_line(s, s->stdin_line ?: "", s->stdin_len) < 0)
                                log_error("Out of memory.");
                        s->stdin_len = 0;
                        s->stdin_overlong = false;
                        continue;
                }
                if (s->stdin_len >= LINE_MAX_LEN) {
                        s->stdin_overlong = true;
                        continue;
                }
                if (!s->stdin_line) {
                        s->stdin_line = malloc(LINE_MAX_LEN + 1);
                        if (!s->stdin_line) {
                                log_error("Out of memory.");
                                return;
                        }
                }
                s->stdin_line[s->stdin_len++] = c;
        }
}

static void sim_stdin_eof(Sim *s) {
        if (s->stdin_len > 0 && !s->stdin_overlong)
                (void) sim_queue_line(s, s->stdin_line, s->stdin_len);
        s->stdin_len = 0;
        s->stdin_io = sd_event_source_disable_unref(s->stdin_io);
        log_debug("End of stdin; the simulator keeps running.");
}

static int on_stdin(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Sim *s = userdata;
        char buf[1024];
        ssize_t n;

        n = read(fd, buf, sizeof buf);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                log_warning_errno(errno, "Failed to read stdin: %m");
                sim_stdin_eof(s);
        } else if (n == 0)
                sim_stdin_eof(s);
        else
                sim_stdin_data(s, buf, (size_t) n);
        sim_commands_run(s);
        return 0;
}

static int sim_setup_stdin(Sim *s) {
        int r;

        r = sd_event_add_io(s->event, &s->stdin_io, STDIN_FILENO, EPOLLIN, on_stdin, s);
        if (r == -EPERM) {
                /* A regular file or /dev/null: epoll refuses it, and reading never blocks. */
                char buf[1024];
                ssize_t n;

                while ((n = read(STDIN_FILENO, buf, sizeof buf)) > 0)
                        sim_stdin_data(s, buf, (size_t) n);
                sim_stdin_eof(s);
                return 0;
        }
        if (r < 0)
                /* No usable stdin (closed, ...): commands can still come from the flags. */
                log_warning_errno(r, "Not reading commands from stdin: %m");
        return 0;
}

static int sim_load_script(Sim *s, const char *path) {
        _cleanup_(fclosep) FILE *f = fopen(path, "re");
        _cleanup_(freep) char *line = NULL;
        size_t size = 0;
        ssize_t n;

        if (!f)
                return log_error_errno(errno, "Failed to open the script %s: %m", path);
        while ((n = getline(&line, &size, f)) >= 0)
                if (sim_queue_line(s, line, (size_t) n) < 0)
                        return log_oom();
        if (ferror(f))
                return log_error_errno(EIO, "Failed to read the script %s: %m", path);
        return 0;
}

/* ---- set-up and tear-down ---- */

static Sim *sim_free(Sim *s) {
        if (!s)
                return NULL;
        sim_remove_link(s);
        sd_event_source_disable_unref(s->master_io);
        sd_event_source_disable_unref(s->hangup_timer);
        sd_event_source_disable_unref(s->busy_timer);
        sd_event_source_disable_unref(s->meter_timer);
        sd_event_source_disable_unref(s->watchdog_timer);
        sd_event_source_disable_unref(s->heartbeat_timer);
        sd_event_source_disable_unref(s->thermo_timer);
        sd_event_source_disable_unref(s->sleep_timer);
        sd_event_source_disable_unref(s->stdin_io);
        for (size_t i = 0; i < ELEMENTSOF(s->traces); i++)
                trace_free(s->traces[i]);
        sd_event_unref(s->event);
        safe_close(s->master_fd);
        free(s->slave_path);
        free(s->out);
        free(s->jobs);
        free(s->pours);
        free(s->sensors);
        for (size_t i = 0; i < s->n_queue; i++)
                free(s->queue[i]);
        free(s->queue);
        free(s->stdin_line);
        free(s);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Sim *, sim_free);

static int sim_new(Sim **ret) {
        _cleanup_(sim_freep) Sim *s = NULL;
        int r;

        s = calloc(1, sizeof(Sim));
        if (!s)
                return log_oom();
        s->master_fd = -1;
        s->n_meters = (unsigned) arg_meters;
        kbsp_firmware_parser_init(&s->parser, arg_strict_crc);

        r = sd_event_default(&s->event);
        if (r < 0)
                return log_error_errno(r, "Failed to create the event loop: %m");
        r = daemon_setup_event(s->event, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to set up signal handling: %m");
        s->start_usec = sim_now(s);

        if (!isempty(arg_serial_number)) {
                memcpy(s->serial, arg_serial_number, strlen(arg_serial_number));
                s->serial_programmed = true;
        }
        r = sim_parse_thermo_flag(s, arg_thermo);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0)
                app_flag_error("bad --thermo '%s': expected name=celsius[,name=celsius...]", arg_thermo);

        *ret = TAKE_PTR(s);
        return 0;
}

static int sim_start(Sim *s) {
        int r;

        r = sim_open_pty(s);
        if (r < 0)
                return r;
        if (!isempty(arg_link)) {
                r = sim_make_link(s, arg_link);
                if (r < 0)
                        return r;
        }

        if (arg_uptime_ms > 0) {
                /* A board that was already running: no boot, its heartbeat cycle goes on. */
                uint64_t now = sim_now(s);

                s->boot_usec = now;
                s->uptime_offset_ms = (uint64_t) arg_uptime_ms;
                s->last_meter_check = now;
                s->last_heartbeat = now;
                sim_heartbeat_schedule(s);
                sim_thermo_start(s, true);
        } else
                sim_boot(s, false);

        timer_arm_or_warn(s, &s->hangup_timer, sim_now(s) + HANGUP_CHECK_USEC, on_hangup_timer);

        if (!isempty(arg_commands) && sim_queue_line(s, arg_commands, strlen(arg_commands)) < 0)
                return log_oom();
        if (!isempty(arg_script)) {
                r = sim_load_script(s, arg_script);
                if (r < 0)
                        return r;
        }
        if (arg_stdin) {
                r = sim_setup_stdin(s);
                if (r < 0)
                        return r;
        }
        sim_commands_run(s);
        return 0;
}

int main(int argc, char **argv) {
        static const AppInfo info = {
                .name = "kegboard_sim",
                .description = "A simulated Kegboard (firmware v18) on a pseudo-terminal. The host opens "
                               "the pty slave (see --link) like a serial port; commands on stdin, "
                               "--commands or --script pour beer, change temperatures and swipe tokens, "
                               "and every board event is printed on stdout.",
                .flags = sim_flags,
        };
        _cleanup_(sim_freep) Sim *s = NULL;
        int r;

        (void) app_init(argc, argv, &info, NULL);

        if (strlen(arg_serial_number) >= KBSP_SERIAL_FIELD_LEN)
                app_flag_error("--serial_number must be shorter than %d bytes", KBSP_SERIAL_FIELD_LEN);

        /* A host that stops reading our stdout must not kill us. */
        (void) signal(SIGPIPE, SIG_IGN);

        r = sim_new(&s);
        if (r < 0)
                return 1;
        r = sim_start(s);
        if (r < 0)
                return 1;
        r = sd_event_loop(s->event);
        if (r < 0)
                log_error_errno(r, "Event loop failed: %m");
        s = sim_free(s);
        app_finish();
        return r == 0 ? 0 : 1;
}
