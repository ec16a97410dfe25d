/* kegbot_calibrate: calibrates a tap's flow meter by pouring a measured volume, or sets a known
 * value, through kegbot_core's D-Bus interface (calibration.md section 6). A client of
 * org.kegbot.Core1 only: no kegnet, no HTTP. Output for the user on stdout, "Error: ..." and
 * "Warning: ..." on stderr; the exit status says how it went (section 6.3). */
#include <inttypes.h>
#include <signal.h>
#include <time.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#define LOG_COMPONENT "calibrate"
#include "log.h"

#include "app.h"
#include "calibration-units.h"
#include "daemon.h"
#include "flags.h"
#include "util-bus.h"
#include "util-event.h"
#include "util-string.h"
#include "util-strv.h"
#include "util-utf8.h"

#define BUS_NAME "org.kegbot.Core1"
#define ROOT_PATH "/org/kegbot/Core1"
#define TAP_PREFIX ROOT_PATH "/tap"
#define MANAGER_IFACE "org.kegbot.Core1.Manager"
#define TAP_IFACE "org.kegbot.Core1.Tap"
#define ERROR_PREFIX "org.kegbot.Core1.Error."

/* Exit status (calibration.md section 6.3). */
enum {
        EXIT_DONE = 0,
        EXIT_USAGE = 1,
        EXIT_REFUSED = 2,
        EXIT_NOT_STORED = 3,
        EXIT_NO_ANSWER = 4,
        EXIT_SERVER = 5,
};

#define FOLLOW_INTERVAL_USEC USEC_PER_SEC

static const char *arg_dbus = "system";
static double arg_timeout = 30.0;
static double arg_ml = 0;
static double arg_oz = 0;
static double arg_grams = 0;
static double arg_sg = 1.0;
static double arg_ml_per_tick = 0;
static double arg_ticks_per_ml = 0;
static double arg_ppg = 0;
static double arg_ppl = 0;
static bool arg_follow = false;

static const FlagDef calibrate_flags[] = {
        FLAG_ENUM("dbus", &arg_dbus, ((const char *const[]) { "system", "session", NULL }),
                  "Bus of kegbot_core: system or session (DBUS_SYSTEM_BUS_ADDRESS / DBUS_SESSION_BUS_ADDRESS "
                  "are honoured)."),
        FLAG_DOUBLE_RANGE("timeout", &arg_timeout, 1, 300, "Seconds to wait for each answer of the core."),
        FLAG_DOUBLE_POSITIVE("ml", &arg_ml, "finish: the measured volume in mL."),
        FLAG_DOUBLE_POSITIVE("oz", &arg_oz, "finish: the measured volume in US fluid ounces."),
        FLAG_DOUBLE_POSITIVE("grams", &arg_grams, "finish: the net weight of the pour in grams."),
        FLAG_DOUBLE_RANGE("sg", &arg_sg, CALIBRATION_SG_MIN, CALIBRATION_SG_MAX,
                          "finish --grams: the specific gravity of the beer (about 1.015; water 1.000)."),
        FLAG_DOUBLE_POSITIVE("ml_per_tick", &arg_ml_per_tick, "set, convert: the value in mL per tick."),
        FLAG_DOUBLE_POSITIVE("ticks_per_ml", &arg_ticks_per_ml, "set, convert: the value in ticks per mL."),
        FLAG_DOUBLE_POSITIVE("ppg", &arg_ppg, "set, convert: the value in pulses per US gallon."),
        FLAG_DOUBLE_POSITIVE("ppl", &arg_ppl, "set, convert: the value in pulses per litre."),
        FLAG_BOOL("follow", &arg_follow,
                  "start: then print the count every second until the calibration ends (Ctrl-C leaves it "
                  "running)."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "kegbot_calibrate",
        .description = "Calibrates a tap's flow meter through kegbot_core: start a calibration pour, pour a "
                       "measured volume, finish with the volume (--ml, --oz) or the weight (--grams, --sg); or "
                       "set a known value. Commands: start METER [--follow], finish METER (--ml=V | --oz=V | "
                       "--grams=G [--sg=S]), cancel METER, status [METER], set METER (--ml_per_tick=V | "
                       "--ticks_per_ml=V | --ppg=V | --ppl=V), convert (--ml_per_tick=V | --ticks_per_ml=V | "
                       "--ppg=V | --ppl=V). Flags may follow the command words.",
        .flags = calibrate_flags,
        .positional_args = true,
        .interspersed_flags = true,
        .client = true,
};

/* ---- numbers ---- */

static const char *const unit_flags[] = { "ml_per_tick", "ticks_per_ml", "ppg", "ppl" };

static unsigned n_given(const char *const *names, size_t n) {
        unsigned k = 0;

        for (size_t i = 0; i < n; i++)
                k += flags_given(names[i]);
        return k;
}

/* The value of the one unit flag given, in mL per tick. */
static double unit_value(void) {
        if (flags_given("ml_per_tick"))
                return arg_ml_per_tick;
        if (flags_given("ticks_per_ml"))
                return calibration_from_ticks_per_ml(arg_ticks_per_ml);
        if (flags_given("ppg"))
                return calibration_from_pulses_per_gallon(arg_ppg);
        return calibration_from_pulses_per_litre(arg_ppl);
}

/* "2:31" */
static void format_duration(uint64_t usec, char buf[static 32]) {
        uint64_t s = usec / USEC_PER_SEC;

        snprintf(buf, 32, "%" PRIu64 ":%02" PRIu64, s / 60, s % 60);
}

static uint64_t now_realtime(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* ---- talking to the core ---- */

static bool error_is(const sd_bus_error *e, const char *name) {
        return e && streq_ptr(e->name, name);
}

/* Prints the core's refusal (or the bus's) and returns the exit status it means. */
static int report_error(const sd_bus_error *e, int r, const char *meter) {
        const char *name = e && e->name ? e->name : NULL;
        const char *message = e && e->message ? e->message : strerror(-r);
        const char *bare = name ? startswith(name, ERROR_PREFIX) : NULL;

        log_debug("D-Bus error %s: %s", name ?: "(none)", message);
        if (error_is(e, SD_BUS_ERROR_ACCESS_DENIED)) {
                fprintf(stderr, "Error: Permission denied: run as root or as a member of group kegbot-admin\n");
                return EXIT_NO_ANSWER;
        }
        if (bare && streq(bare, "ServerError")) {
                fprintf(stderr, "Error: %s\nThe calibration is still running: run finish again once Kegbot Server "
                        "answers.\n", message);
                return EXIT_SERVER;
        }
        if (bare && streq(bare, "CalibrationRejected")) {
                fprintf(stderr, "Error: %s\nThe calibration is still running.\n", message);
                return EXIT_REFUSED;
        }
        if (bare && streq(bare, "NotCalibrating")) {
                fprintf(stderr, "Error: %s\nStart one with: kegbot_calibrate start %s\n", message, meter ?: "METER");
                return EXIT_REFUSED;
        }
        if (bare && streq(bare, "UnknownMeter")) {
                fprintf(stderr, "Error: %s\nkegbot_calibrate status lists the taps.\n", message);
                return EXIT_REFUSED;
        }
        if (bare && (streq(bare, "Busy") || streq(bare, "Quarantined"))) {
                fprintf(stderr, "Error: %s\n", message);
                return EXIT_REFUSED;
        }
        if (error_is(e, SD_BUS_ERROR_INVALID_ARGS)) {
                fprintf(stderr, "Error: %s\n", message);
                return EXIT_REFUSED;
        }
        if (bare && streq(bare, "ShuttingDown")) {
                fprintf(stderr, "Error: %s\n", message);
                return EXIT_NO_ANSWER;
        }
        if (error_is(e, SD_BUS_ERROR_SERVICE_UNKNOWN) || error_is(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER)) {
                fprintf(stderr, "Error: kegbot_core is not running (%s is not on the %s bus)\n", BUS_NAME, arg_dbus);
                return EXIT_NO_ANSWER;
        }
        if (error_is(e, SD_BUS_ERROR_NO_REPLY) || error_is(e, SD_BUS_ERROR_TIMEOUT) || r == -ETIMEDOUT) {
                fprintf(stderr, "Error: kegbot_core did not answer within %g s\n", arg_timeout);
                return EXIT_NO_ANSWER;
        }
        fprintf(stderr, "Error: %s\n", message);
        return EXIT_NO_ANSWER;
}

static int bus_connect(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = streq(arg_dbus, "session") ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus);
        if (r < 0) {
                fprintf(stderr, "Error: cannot connect to the %s bus: %s\n", arg_dbus, strerror(-r));
                return -EXIT_NO_ANSWER;
        }
        r = sd_bus_set_method_call_timeout(bus, (uint64_t) (arg_timeout * 1e6));
        if (r < 0) {
                fprintf(stderr, "Error: cannot configure the bus connection: %s\n", strerror(-r));
                return -EXIT_NO_ANSWER;
        }
        *ret = TAKE_PTR(bus);
        return 0;
}

static int tap_path(const char *meter, char **ret) {
        return sd_bus_path_encode(TAP_PREFIX, meter, ret);
}

/* The tap's properties the output shows. */
typedef struct Tap {
        char *meter;
        char *name;
        double ml_per_tick;
        char *relay_name;
        bool relay_enabled;
        char *source;
        char *cal_state;
        uint64_t cal_ticks;
        uint64_t cal_started;
        uint64_t cal_deadline;
} Tap;

static void tap_done(Tap *t) {
        free(t->meter);
        free(t->name);
        free(t->relay_name);
        free(t->source);
        free(t->cal_state);
        *t = (Tap) {};
}

/* One property of a Tap's a{sv}; the ones not shown are skipped. */
static int tap_read_property(sd_bus_message *m, const char *name, const char *contents, void *userdata) {
        Tap *t = userdata;
        int b = 0, r;

        if (streq(name, "MeterName") && streq(contents, "s"))
                return bus_message_read_strdup(m, &t->meter);
        if (streq(name, "Name") && streq(contents, "s"))
                return bus_message_read_strdup(m, &t->name);
        if (streq(name, "RelayName") && streq(contents, "s"))
                return bus_message_read_strdup(m, &t->relay_name);
        if (streq(name, "CalibrationSource") && streq(contents, "s"))
                return bus_message_read_strdup(m, &t->source);
        if (streq(name, "CalibrationState") && streq(contents, "s"))
                return bus_message_read_strdup(m, &t->cal_state);
        if (streq(name, "MlPerTick") && streq(contents, "d"))
                return sd_bus_message_read(m, "d", &t->ml_per_tick);
        if (streq(name, "RelayEnabled") && streq(contents, "b")) {
                r = sd_bus_message_read(m, "b", &b);
                t->relay_enabled = b;
                return r;
        }
        if (streq(name, "CalibrationTicks") && streq(contents, "t"))
                return sd_bus_message_read(m, "t", &t->cal_ticks);
        if (streq(name, "CalibrationStarted") && streq(contents, "t"))
                return sd_bus_message_read(m, "t", &t->cal_started);
        if (streq(name, "CalibrationDeadline") && streq(contents, "t"))
                return sd_bus_message_read(m, "t", &t->cal_deadline);
        return 0;
}

static int tap_read_properties(Tap *t, sd_bus_message *m) {
        return bus_message_read_dict(m, tap_read_property, t);
}

/* Properties.GetAll of the tap of 'meter'; an exit status on failure (reported). */
static int tap_get(sd_bus *bus, const char *meter, Tap *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *path = NULL;
        int r;

        *ret = (Tap) {};
        r = tap_path(meter, &path);
        if (r < 0)
                return report_error(NULL, r, meter);
        r = sd_bus_call_method(bus, BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &e, &reply, "s",
                               TAP_IFACE);
        if (r < 0) {
                if (error_is(&e, SD_BUS_ERROR_UNKNOWN_OBJECT) || error_is(&e, SD_BUS_ERROR_UNKNOWN_INTERFACE)) {
                        fprintf(stderr, "Error: No tap for meter %s\nkegbot_calibrate status lists the taps.\n", meter);
                        return EXIT_REFUSED;
                }
                return report_error(&e, r, meter);
        }
        r = tap_read_properties(ret, reply);
        if (r < 0) {
                fprintf(stderr, "Error: cannot read the tap's properties: %s\n", strerror(-r));
                tap_done(ret);
                return EXIT_NO_ANSWER;
        }
        return EXIT_DONE;
}

/* "kegboard.flow0 (Main Tap)" */
static void print_tap_title(const Tap *t, const char *meter) {
        if (!isempty(t->name) && !streq(t->name, meter))
                printf("%s (%s)", meter, t->name);
        else
                printf("%s", meter);
}

/* ---- start ---- */

typedef struct Follow {
        sd_event *event;
        sd_bus *bus;
        const char *meter;
        char *path;
        sd_event_source *signals[2];
        double ml_per_tick;
        uint64_t started;
        uint64_t ticks, printed;
        bool has_printed;
        uint64_t last_print;            /* monotonic */
        sd_event_source *timer;
        int status;
} Follow;

static void follow_print(Follow *f) {
        char elapsed[32];
        uint64_t now = now_realtime();

        format_duration(now > f->started ? now - f->started : 0, elapsed);
        printf("  %" PRIu64 " ticks, ~%.1f mL at the current calibration, %s elapsed\n", f->ticks,
               (double) f->ticks * f->ml_per_tick, elapsed);
        fflush(stdout);
        f->printed = f->ticks;
        f->has_printed = true;
        (void) sd_event_now(f->event, CLOCK_MONOTONIC, &f->last_print);
}

static int on_follow_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Follow *f = userdata;

        if (!f->has_printed || f->ticks != f->printed)
                follow_print(f);
        return 0;
}

/* At most one line a second, and only while the count changes. */
static void follow_update(Follow *f, uint64_t ticks) {
        uint64_t due;

        f->ticks = ticks;
        if (f->has_printed && ticks == f->printed)
                return;
        if (event_timer_is_armed(f->timer))
                return;
        due = f->has_printed ? f->last_print + FOLLOW_INTERVAL_USEC : 0;
        if (event_timer_arm(f->event, &f->timer, due, 50 * USEC_PER_MSEC, on_follow_timer, f) < 0)
                follow_print(f);
}

static int on_tap_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Follow *f = userdata;
        const char *iface;
        Tap t = {};
        int r;

        r = sd_bus_message_read(m, "s", &iface);
        if (r < 0 || !streq(iface, TAP_IFACE))
                return 0;
        t.cal_ticks = UINT64_MAX;
        r = tap_read_properties(&t, m);
        if (r >= 0 && t.cal_ticks != UINT64_MAX && streq_ptr(t.cal_state ?: "running", "running"))
                follow_update(f, t.cal_ticks);
        tap_done(&t);
        return 0;
}

static int on_calibration_ended(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Follow *f = userdata;
        const char *meter, *reason;
        uint64_t ticks;
        int r;

        r = sd_bus_message_read(m, "sst", &meter, &reason, &ticks);
        if (r < 0 || !streq(meter, f->meter))
                return 0;
        f->ticks = ticks;
        if (!f->has_printed || ticks != f->printed)
                follow_print(f);
        if (streq(reason, "finished"))
                printf("Calibration finished.\n");
        else if (streq(reason, "timeout"))
                printf("Calibration timed out; nothing changed.\n");
        else if (streq(reason, "tap-removed"))
                printf("Calibration cancelled: the tap was removed.\n");
        else if (streq(reason, "shutdown"))
                printf("Calibration cancelled: kegbot_core stopped.\n");
        else
                printf("Calibration cancelled.\n");
        f->status = EXIT_DONE;
        return sd_event_exit(f->event, 0);
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Follow *f = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !streq(name, BUS_NAME) ||
            !isempty(new_owner))
                return 0;
        fprintf(stderr, "Error: kegbot_core left the bus\n");
        f->status = EXIT_NO_ANSWER;
        return sd_event_exit(f->event, 0);
}

static int on_interrupt(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Follow *f = userdata;

        printf("The calibration is still running; finish it with: kegbot_calibrate finish %s --ml=<measured mL>\n",
               f->meter);
        f->status = EXIT_DONE;
        return sd_event_exit(f->event, 0);
}

/* Everything that must be in place before the calibration starts: its signals are not missed, and
 * Ctrl-C is ours from the first moment. */
static int follow_setup(Follow *f, sd_bus *bus, const char *meter) {
        int r;

        *f = (Follow) { .bus = bus, .meter = meter, .status = EXIT_NO_ANSWER };
        r = sd_event_default(&f->event);
        if (r >= 0)
                r = tap_path(meter, &f->path);
        if (r >= 0)
                r = sd_bus_attach_event(bus, f->event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, f->path, "org.freedesktop.DBus.Properties",
                                        "PropertiesChanged", on_tap_changed, f);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, ROOT_PATH, MANAGER_IFACE, "CalibrationEnded",
                                        on_calibration_ended, f);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "NameOwnerChanged", on_owner_changed, f);
        if (r >= 0)
                r = daemon_watch_signals(f->event, (const int[]) { SIGINT, SIGTERM }, 2, on_interrupt, f, f->signals);
        if (r < 0)
                fprintf(stderr, "Error: cannot follow the calibration: %s\n", strerror(-r));
        return r;
}

static void follow_done(Follow *f) {
        f->timer = sd_event_source_disable_unref(f->timer);
        for (size_t i = 0; i < ELEMENTSOF(f->signals); i++)
                f->signals[i] = sd_event_source_disable_unref(f->signals[i]);
        if (f->bus)
                (void) sd_bus_detach_event(f->bus);
        f->event = sd_event_unref(f->event);
        free(f->path);
        f->path = NULL;
}

static int follow_run(Follow *f, const Tap *t) {
        Tap now;
        int r;

        f->ml_per_tick = t->ml_per_tick;
        f->started = t->cal_started;
        /* Whatever the count is by now is the first line. */
        if (tap_get(f->bus, f->meter, &now) == EXIT_DONE) {
                if (streq_ptr(now.cal_state, "running"))
                        follow_update(f, now.cal_ticks);
                tap_done(&now);
        }
        r = sd_event_loop(f->event);
        if (r < 0) {
                fprintf(stderr, "Error: %s\n", strerror(-r));
                f->status = EXIT_NO_ANSWER;
        }
        return f->status;
}

static int cmd_start(sd_bus *bus, const char *meter) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(follow_done) Follow f = {};
        char until[16] = "?";
        struct tm tm;
        time_t deadline;
        uint64_t timeout;
        Tap t;
        int r;

        if (arg_follow && follow_setup(&f, bus, meter) < 0)
                return EXIT_NO_ANSWER;
        log_debug("StartCalibration(%s)", meter);
        r = sd_bus_call_method(bus, BUS_NAME, ROOT_PATH, MANAGER_IFACE, "StartCalibration", &e, NULL, "s", meter);
        if (r < 0)
                return report_error(&e, r, meter);
        r = tap_get(bus, meter, &t);
        if (r != EXIT_DONE)
                return r;

        printf("Calibrating ");
        print_tap_title(&t, meter);
        printf(", now %g mL/tick (%g ticks/mL).\n", t.ml_per_tick, calibration_round6(1.0 / t.ml_per_tick));
        deadline = (time_t) (t.cal_deadline / USEC_PER_SEC);
        if (localtime_r(&deadline, &tm))
                strftime(until, sizeof until, "%H:%M:%S", &tm);
        timeout = t.cal_deadline > t.cal_started ? (t.cal_deadline - t.cal_started) / USEC_PER_SEC : 0;
        if (isempty(t.relay_name))
                printf("No valve on this tap: open the faucet as usual.\n");
        else if (t.relay_enabled) {
                if (timeout % 60 == 0)
                        printf("Valve %s is open until the calibration ends (at most %" PRIu64 " min, until %s).\n",
                               t.relay_name, timeout / 60, until);
                else
                        printf("Valve %s is open until the calibration ends (at most %" PRIu64 " s, until %s).\n",
                               t.relay_name, timeout, until);
        } else
                printf("Valve %s follows grants: present a token, or open it by hand.\n", t.relay_name);
        printf("Pour at least 500 mL (1 L is better) at a normal pace into a measuring jug, or into a container on a\n"
               "scale, then run one of\n"
               "  kegbot_calibrate finish %s --ml=<measured mL>\n"
               "  kegbot_calibrate finish %s --grams=<net weight> --sg=1.015\n", meter, meter);
        fflush(stdout);

        r = arg_follow ? follow_run(&f, &t) : EXIT_DONE;
        tap_done(&t);
        return r;
}

/* ---- finish, set ---- */

typedef struct Result {
        uint64_t ticks;
        double volume_ml, old_ml_per_tick, new_ml_per_tick, change_percent, old_volume_ml;
        char *storage, *location, *message;
        char **warnings;
} Result;

static void result_done(Result *res) {
        free(res->storage);
        free(res->location);
        free(res->message);
        strv_free(res->warnings);
}

static int result_read_entry(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        Result *res = userdata;

        if (streq(key, "ticks") && streq(contents, "t"))
                return sd_bus_message_read(m, "t", &res->ticks);
        if (streq(key, "volume_ml") && streq(contents, "d"))
                return sd_bus_message_read(m, "d", &res->volume_ml);
        if (streq(key, "old_ml_per_tick") && streq(contents, "d"))
                return sd_bus_message_read(m, "d", &res->old_ml_per_tick);
        if (streq(key, "new_ml_per_tick") && streq(contents, "d"))
                return sd_bus_message_read(m, "d", &res->new_ml_per_tick);
        if (streq(key, "change_percent") && streq(contents, "d"))
                return sd_bus_message_read(m, "d", &res->change_percent);
        if (streq(key, "old_volume_ml") && streq(contents, "d"))
                return sd_bus_message_read(m, "d", &res->old_volume_ml);
        if (streq(key, "storage") && streq(contents, "s"))
                return bus_message_read_strdup(m, &res->storage);
        if (streq(key, "location") && streq(contents, "s"))
                return bus_message_read_strdup(m, &res->location);
        if (streq(key, "message") && streq(contents, "s"))
                return bus_message_read_strdup(m, &res->message);
        if (streq(key, "warnings") && streq(contents, "as")) {
                int r = sd_bus_message_read_strv(m, &res->warnings);
                return r < 0 ? r : 1;
        }
        return 0;
}

static int result_read(sd_bus_message *m, Result *res) {
        return bus_message_read_dict(m, result_read_entry, res);
}

/* The output of section 6.2 and the exit status of the storage. */
static int print_result(sd_bus *bus, const char *meter, sd_bus_message *reply, bool pour) {
        _cleanup_(result_done) Result res = {};
        Tap t = {};
        int r;

        r = result_read(reply, &res);
        if (r < 0) {
                fprintf(stderr, "Error: cannot read the core's answer: %s\n", strerror(-r));
                return EXIT_NO_ANSWER;
        }
        /* The tap's name for the title; without it the meter alone. */
        {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                _cleanup_(freep) char *path = NULL;
                const char *name;

                if (tap_path(meter, &path) >= 0 &&
                    sd_bus_get_property(bus, BUS_NAME, path, TAP_IFACE, "Name", &e, &m, "s") >= 0 &&
                    sd_bus_message_read(m, "s", &name) >= 0)
                        t.name = strdup(name);
        }

        print_tap_title(&t, meter);
        if (pour)
                printf(": %" PRIu64 " ticks for %.1f mL\n", res.ticks, res.volume_ml);
        else
                printf(":\n");
        printf("  before: %g mL/tick (%g ticks/mL)", res.old_ml_per_tick, calibration_round6(1.0 / res.old_ml_per_tick));
        if (pour)
                printf("; the pour read %.1f mL", res.old_volume_ml);
        printf("\n  now:    %g mL/tick (%g ticks/mL), %+.2f %%\n", res.new_ml_per_tick,
               calibration_round6(1.0 / res.new_ml_per_tick), res.change_percent);
        printf("%s\n", res.message ?: "");
        fflush(stdout);
        for (char **w = res.warnings; w && *w; w++)
                fprintf(stderr, "Warning: %s\n", *w);
        tap_done(&t);
        if (streq_ptr(res.storage, "taps-file") || streq_ptr(res.storage, "server"))
                return EXIT_DONE;
        return EXIT_NOT_STORED;
}

static int cmd_finish(sd_bus *bus, const char *meter) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        if (flags_given("grams")) {
                log_debug("FinishCalibrationByWeight(%s, %g, %g)", meter, arg_grams, arg_sg);
                r = sd_bus_call_method(bus, BUS_NAME, ROOT_PATH, MANAGER_IFACE, "FinishCalibrationByWeight", &e, &reply,
                                       "sdd", meter, arg_grams, arg_sg);
        } else {
                double ml = flags_given("oz") ? calibration_oz_to_ml(arg_oz) : arg_ml;

                log_debug("FinishCalibration(%s, %g)", meter, ml);
                r = sd_bus_call_method(bus, BUS_NAME, ROOT_PATH, MANAGER_IFACE, "FinishCalibration", &e, &reply, "sd",
                                       meter, ml);
        }
        if (r < 0)
                return report_error(&e, r, meter);
        return print_result(bus, meter, reply, true);
}

static int cmd_set(sd_bus *bus, const char *meter) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        double v = unit_value();
        int r;

        log_debug("SetCalibration(%s, %g)", meter, v);
        r = sd_bus_call_method(bus, BUS_NAME, ROOT_PATH, MANAGER_IFACE, "SetCalibration", &e, &reply, "sd", meter, v);
        if (r < 0)
                return report_error(&e, r, meter);
        return print_result(bus, meter, reply, false);
}

static int cmd_cancel(sd_bus *bus, const char *meter) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        uint64_t ticks;
        int r;

        log_debug("CancelCalibration(%s)", meter);
        r = sd_bus_call_method(bus, BUS_NAME, ROOT_PATH, MANAGER_IFACE, "CancelCalibration", &e, &reply, "s", meter);
        if (r < 0)
                return report_error(&e, r, meter);
        r = sd_bus_message_read(reply, "t", &ticks);
        if (r < 0) {
                fprintf(stderr, "Error: cannot read the core's answer: %s\n", strerror(-r));
                return EXIT_NO_ANSWER;
        }
        printf("Calibration of %s cancelled after %" PRIu64 " ticks; nothing changed.\n", meter, ticks);
        return EXIT_DONE;
}

/* ---- status ---- */

static int tap_compare(const void *a, const void *b) {
        return strcmp(((const Tap *) a)->meter, ((const Tap *) b)->meter);
}

/* Columns are padded by characters, not bytes: names may be UTF-8. */
static size_t text_width(const char *s) {
        size_t n = 0;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if ((*p & 0xc0) != 0x80)
                        n++;
        return n;
}

static int read_taps(sd_bus_message *reply, Tap **ret, size_t *ret_n) {
        Tap *taps = NULL;
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                const char *path;

                r = sd_bus_message_read(reply, "o", &path);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
                while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
                        const char *iface;

                        r = sd_bus_message_read(reply, "s", &iface);
                        if (r >= 0 && streq(iface, TAP_IFACE)) {
                                Tap *a = reallocarray(taps, n + 1, sizeof(Tap));
                                if (!a) {
                                        r = -ENOMEM;
                                        break;
                                }
                                taps = a;
                                taps[n] = (Tap) {};
                                r = tap_read_properties(&taps[n++], reply);
                        } else if (r >= 0)
                                r = sd_bus_message_skip(reply, "a{sv}");
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        tap_done(&taps[i]);
                free(taps);
                return r;
        }
        *ret = taps;
        *ret_n = n;
        return 0;
}

static int cmd_status(sd_bus *bus, const char *meter) {
        static const char *const headers[] = { "METER", "NAME", "ML/TICK", "TICKS/ML", "SOURCE", "CALIBRATION" };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(strv_freep) char **cells = NULL;
        size_t width[ELEMENTSOF(headers)] = {}, n = 0, n_cells = 0, rows = 0;
        Tap *taps = NULL;
        uint64_t now = now_realtime();
        int r, status = EXIT_DONE;

        r = sd_bus_call_method(bus, BUS_NAME, ROOT_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", &e,
                               &reply, NULL);
        if (r < 0)
                return report_error(&e, r, meter);
        r = read_taps(reply, &taps, &n);
        if (r < 0) {
                fprintf(stderr, "Error: cannot read the core's taps: %s\n", strerror(-r));
                return EXIT_NO_ANSWER;
        }
        qsort(taps, n, sizeof(Tap), tap_compare);

        for (size_t i = 0; i < ELEMENTSOF(headers); i++)
                if (strv_extend(&cells, &n_cells, headers[i]) < 0)
                        goto oom;
        rows = 1;
        for (size_t i = 0; i < n; i++) {
                const Tap *t = &taps[i];
                char *cal;

                if (!t->meter || (meter && !streq(t->meter, meter)))
                        continue;
                if (streq_ptr(t->cal_state, "running")) {
                        char elapsed[32], left[32];

                        format_duration(now > t->cal_started ? now - t->cal_started : 0, elapsed);
                        format_duration(t->cal_deadline > now ? t->cal_deadline - now : 0, left);
                        cal = strdup_printf("running: %" PRIu64 " ticks (~%.1f mL), %s elapsed, %s left", t->cal_ticks,
                                            (double) t->cal_ticks * t->ml_per_tick, elapsed, left);
                } else
                        cal = strdup("-");
                if (strv_extend(&cells, &n_cells, t->meter) < 0 ||
                    strv_extend(&cells, &n_cells, t->name ?: "") < 0 ||
                    strv_push(&cells, &n_cells, strdup_printf("%g", t->ml_per_tick)) < 0 ||
                    strv_push(&cells, &n_cells, strdup_printf("%g", calibration_round6(1.0 / t->ml_per_tick))) < 0 ||
                    strv_extend(&cells, &n_cells, t->source ?: "") < 0 ||
                    strv_push(&cells, &n_cells, cal) < 0)
                        goto oom;
                rows++;
        }
        if (meter && rows == 1) {
                fprintf(stderr, "Error: No tap for meter %s\nkegbot_calibrate status lists the taps.\n", meter);
                status = EXIT_REFUSED;
                goto done;
        }
        if (rows == 1) {
                printf("No taps.\n");
                goto done;
        }
        for (size_t i = 0; i < n_cells; i++)
                width[i % ELEMENTSOF(headers)] = MAX(width[i % ELEMENTSOF(headers)], text_width(cells[i]));
        for (size_t i = 0; i < n_cells; i++) {
                size_t col = i % ELEMENTSOF(headers);

                fputs(cells[i], stdout);
                if (col + 1 < ELEMENTSOF(headers))
                        printf("%*s", (int) (width[col] - text_width(cells[i]) + 2), "");
                else
                        putchar('\n');
        }
        goto done;
oom:
        fprintf(stderr, "Error: out of memory\n");
        status = EXIT_NO_ANSWER;
done:
        for (size_t i = 0; i < n; i++)
                tap_done(&taps[i]);
        free(taps);
        return status;
}

/* ---- convert ---- */

static int cmd_convert(void) {
        double v = unit_value();

        printf("%g mL/tick = %g ticks/mL = %g pulses/US gal = %g pulses/L\n", calibration_round6(v),
               calibration_round6(1.0 / v), calibration_round6(calibration_pulses_per_gallon(v)),
               calibration_round6(calibration_pulses_per_litre(v)));
        return EXIT_DONE;
}

/* ---- main ---- */

static bool meter_name_ok(const char *s) {
        const char *dot = strchr(s, '.');
        return dot && dot != s && dot[1] != '\0' && utf8_is_valid(s);
}

int main(int argc, char **argv) {
        _cleanup_(strv_freep) char **args = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        static const char *const volume_flags[] = { "ml", "oz", "grams" };
        const char *cmd, *meter = NULL;
        size_t n;
        int r;

        (void) app_init(argc, argv, &app_info, &args);
        n = strv_length(args);
        cmd = n > 0 ? args[0] : NULL;

        if (!cmd)
                app_flag_error("no command; expected start, finish, cancel, status, set or convert");
        if (!streq(cmd, "start") && !streq(cmd, "finish") && !streq(cmd, "cancel") && !streq(cmd, "status") &&
            !streq(cmd, "set") && !streq(cmd, "convert"))
                app_flag_error("unknown command '%s'; expected start, finish, cancel, status, set or convert", cmd);

        if (streq(cmd, "convert")) {
                if (n > 1)
                        app_flag_error("unexpected argument '%s': convert takes no meter", args[1]);
        } else if (streq(cmd, "status")) {
                if (n > 2)
                        app_flag_error("unexpected argument '%s'", args[2]);
                meter = n > 1 ? args[1] : NULL;
        } else {
                if (n < 2)
                        app_flag_error("%s needs a METER, e.g. kegboard.flow0", cmd);
                if (n > 2)
                        app_flag_error("unexpected argument '%s'", args[2]);
                meter = args[1];
        }
        if (meter && !meter_name_ok(meter))
                app_flag_error("invalid meter name '%s': expected <controller>.<port>, e.g. kegboard.flow0", meter);

        /* Each flag belongs to its commands; exactly one unit where one is needed. */
        if (flags_given("follow") && !streq(cmd, "start"))
                app_flag_error("--follow is for start only");
        if (streq(cmd, "finish")) {
                if (n_given(volume_flags, ELEMENTSOF(volume_flags)) != 1)
                        app_flag_error("finish needs exactly one of --ml, --oz and --grams");
                if (flags_given("sg") && !flags_given("grams"))
                        app_flag_error("--sg goes with --grams");
        } else if (n_given(volume_flags, ELEMENTSOF(volume_flags)) > 0 || flags_given("sg"))
                app_flag_error("--ml, --oz, --grams and --sg are for finish only");
        if (streq(cmd, "set") || streq(cmd, "convert")) {
                if (n_given(unit_flags, ELEMENTSOF(unit_flags)) != 1)
                        app_flag_error("%s needs exactly one of --ml_per_tick, --ticks_per_ml, --ppg and --ppl", cmd);
        } else if (n_given(unit_flags, ELEMENTSOF(unit_flags)) > 0)
                app_flag_error("--ml_per_tick, --ticks_per_ml, --ppg and --ppl are for set and convert only");

        if (streq(cmd, "convert"))
                return cmd_convert();

        r = bus_connect(&bus);
        if (r < 0)
                return -r;
        if (streq(cmd, "start"))
                return cmd_start(bus, meter);
        if (streq(cmd, "finish"))
                return cmd_finish(bus, meter);
        if (streq(cmd, "cancel"))
                return cmd_cancel(bus, meter);
        if (streq(cmd, "set"))
                return cmd_set(bus, meter);
        return cmd_status(bus, meter);
}
