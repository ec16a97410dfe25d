/* lcd_daemon: drives a 4 x 20 serial character LCD (programs-and-flags.md section 8): an idle
 * rotation of splash, last pour and tap screens, a pour screen while beer flows, a backlight that
 * follows activity. Listens to kegnet; the tap screens come from Kegbot Server (polled: the legacy
 * API has no push) or, without one, from the core's Tap objects on D-Bus.
 *
 * Nothing polls the screen: it is redrawn when what it shows changes (a FlowUpdate, a drink, the
 * taps, a rotation deadline, the backlight timeout) and only once the display has answered the
 * previous screen. When the backlight goes off the rotation rests on the splash screen until the
 * next activity, so an idle lcd_daemon sleeps. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define LOG_COMPONENT "lcd"
#include "log.h"

#include "api.h"
#include "app.h"
#include "core-taps.h"
#include "daemon.h"
#include "display.h"
#include "flags.h"
#include "kegnet-client.h"
#include "screens.h"
#include "serial.h"
#include "util-escape.h"
#include "util-event.h"
#include "util-strbuf.h"
#include "util-time.h"

#define SPLASH_USEC (5 * USEC_PER_SEC)
#define TAP_SCREEN_USEC (10 * USEC_PER_SEC)
/* How late each timer may fire. */
#define ROTATION_ACCURACY_USEC (50 * USEC_PER_MSEC)
#define BACKLIGHT_ACCURACY_USEC USEC_PER_SEC
#define POLL_ACCURACY_USEC USEC_PER_SEC

static const char *strna(const char *s) {
        return s ? s : "n/a";
}

static const char *arg_lcd_device_path = "/dev/ttyUSB0";
static int arg_lcd_baud_rate = 115200;
static const char *arg_lcd_device_type = "cfa635";
static int arg_backlight_timeout = 300;
static int arg_rotation_time = 10;
static int arg_krest_update_interval = 60;
static const char *arg_dbus = "system";

static const FlagDef lcd_flags[] = {
        FLAG_STRING("lcd_device_path", &arg_lcd_device_path, "Serial device of the display."),
        FLAG_INT("lcd_baud_rate", &arg_lcd_baud_rate, "Baud rate of the display (300 to 2000000; 1200 is fine for displays)."),
        FLAG_STRING("lcd_device_type", &arg_lcd_device_type,
                    "Display type: cfa635 (CrystalFontz CFA-635) or mtxorb20x4 (Matrix Orbital)."),
        FLAG_INT_RANGE("backlight_timeout", &arg_backlight_timeout, 0, 86400,
                     "Seconds without activity before the backlight goes off and the rotation rests."),
        FLAG_INT_RANGE("rotation_time", &arg_rotation_time, 1, 3600,
                     "Seconds the last-pour screen stays in the idle rotation."),
        FLAG_INT_RANGE("krest_update_interval", &arg_krest_update_interval, 10, 86400,
                     "Seconds between Kegbot Server polls."),
        FLAG_ENUM("dbus", &arg_dbus, ((const char *const[]) { "system", "session", NULL }),
                  "Bus of kegbot_core, where the tap screens come from without --api_url."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "lcd_daemon",
        .description = "Shows the Kegbot's taps, the last pour and the pour in progress on a 4x20 serial "
                       "character LCD (CrystalFontz CFA-635 or Matrix Orbital).",
        .flags = lcd_flags,
        .groups = APP_GROUP_KEGNET | APP_GROUP_API,
};

typedef struct Manager {
        sd_event *event;
        sd_event_source *rotation_timer;
        sd_event_source *backlight_timer;
        sd_event_source *poll_timer;
        Display *display;
        KegnetClient *kegnet;
        ApiClient *api;                 /* with --api_url */
        CoreTaps *core_taps;            /* without --api_url */
        char *tap_list;                 /* the meters of the tap screens, as last logged */

        unsigned rotation_index;
        bool lit;                       /* the backlight should be on */
        TapInfo *taps;                  /* from the server */
        size_t n_taps;
        LastPour last_pour;

        bool pouring;
        int64_t pour_flow_id;
        char pour_user[64];
        bool pour_has_volume;
        double pour_volume_ml;

        LcdScreen shown;
        bool shown_valid;

        bool poll_drinks;
        unsigned polls_in_flight;
        int exit_status;
} Manager;

static void manager_free_taps(Manager *m) {
        for (size_t i = 0; i < m->n_taps; i++)
                tap_info_done(&m->taps[i]);
        free(m->taps);
        m->taps = NULL;
        m->n_taps = 0;
}

static Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        sd_event_source_disable_unref(m->rotation_timer);
        sd_event_source_disable_unref(m->backlight_timer);
        sd_event_source_disable_unref(m->poll_timer);
        api_client_free(m->api);
        core_taps_free(m->core_taps);
        kegnet_client_free(m->kegnet);
        display_free(m->display);
        manager_free_taps(m);
        free(m->tap_list);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* ---- what the display shows */

static size_t manager_n_tap_screens(const Manager *m) {
        size_t n = 0;

        if (m->api)
                return m->n_taps;
        if (m->core_taps)
                (void) core_taps_get(m->core_taps, &n);
        return n;
}

static size_t rotation_length(const Manager *m) {
        return 2 + manager_n_tap_screens(m);    /* splash, last pour, one per tap */
}

static uint64_t rotation_duration(unsigned index) {
        if (index == 0)
                return SPLASH_USEC;
        if (index == 1)
                return (uint64_t) arg_rotation_time * USEC_PER_SEC;
        return TAP_SCREEN_USEC;
}

static void manager_render(Manager *m, LcdScreen *s) {
        size_t n;

        if (m->pouring) {
                lcd_screen_pour(s, m->pour_user, m->pour_has_volume, m->pour_volume_ml);
                return;
        }
        if (m->rotation_index == 0)
                lcd_screen_splash(s);
        else if (m->rotation_index == 1)
                lcd_screen_last_pour(s, &m->last_pour);
        else if (m->api)
                lcd_screen_tap(s, &m->taps[m->rotation_index - 2]);
        else
                lcd_screen_core_tap(s, &core_taps_get(m->core_taps, &n)[m->rotation_index - 2]);
}

/* Brings the display up to date: the backlight first, then the screen if its text changed. While
 * the display is still busy with the last update nothing is queued; its idle handler calls again. */
static void manager_update(Manager *m) {
        LcdScreen screen;
        int r;

        if (display_busy(m->display))
                return;
        r = display_set_backlight(m->display, m->lit);
        if (r < 0)
                log_debug_errno(r, "Cannot switch the backlight: %m");
        if (display_busy(m->display))
                return;

        manager_render(m, &screen);
        if (m->shown_valid && memcmp(&screen, &m->shown, sizeof(screen)) == 0)
                return;
        r = display_show(m->display, &screen);
        if (r < 0) {
                log_debug_errno(r, "Cannot show the screen: %m");
                return;
        }
        m->shown = screen;
        m->shown_valid = true;
}

static void on_display_idle(Display *d, void *userdata) {
        manager_update(userdata);
}

/* ---- rotation and backlight deadlines */

static int on_rotation(sd_event_source *s, uint64_t usec, void *userdata);

static void manager_arm_rotation(Manager *m) {
        int r;

        if (!m->lit) {
                /* Resting on the splash screen: nothing to wake up for. */
                event_timer_disarm(m->rotation_timer);
                return;
        }
        r = event_timer_arm_relative(m->event, &m->rotation_timer, rotation_duration(m->rotation_index),
                                     ROTATION_ACCURACY_USEC, on_rotation, m);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the rotation timer: %m");
}

static int on_rotation(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        m->rotation_index = (unsigned) ((m->rotation_index + 1) % rotation_length(m));
        manager_arm_rotation(m);
        manager_update(m);
        return 0;
}

static int on_backlight_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_debug("No activity for %d s: backlight off, resting on the splash screen.", arg_backlight_timeout);
        m->lit = false;
        m->rotation_index = 0;
        manager_arm_rotation(m);
        manager_update(m);
        return 0;
}

/* A pour or a drink: backlight on (the rotation starts over if it was resting) until
 * --backlight_timeout seconds after the last activity. */
static void manager_activity(Manager *m) {
        int r;

        if (!m->lit) {
                m->lit = true;
                m->rotation_index = 0;
                manager_arm_rotation(m);
        }
        r = event_timer_arm_relative(m->event, &m->backlight_timer, (uint64_t) arg_backlight_timeout * USEC_PER_SEC,
                                     BACKLIGHT_ACCURACY_USEC, on_backlight_timeout, m);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the backlight timer: %m");
}

/* The tap list changed: a rotation position past its end starts over. */
static void manager_taps_changed(Manager *m) {
        if (m->rotation_index >= rotation_length(m)) {
                m->rotation_index = 0;
                manager_arm_rotation(m);
        }
        manager_update(m);
}

static void on_core_taps_changed(CoreTaps *c, void *userdata) {
        Manager *m = userdata;
        const CoreTapInfo *taps;
        StrBuf b = STRBUF_INIT;
        _cleanup_(freep) char *list = NULL;
        size_t n;

        /* Which screens the rotation has now, said once per change of the set (not per pour update). */
        taps = core_taps_get(c, &n);
        for (size_t i = 0; i < n; i++) {
                _cleanup_(freep) char *e = escape_for_log(taps[i].meter_name);
                (void) strbuf_printf(&b, "%s%s", i > 0 ? " " : "", e ? e : "?");
        }
        if (strbuf_take(&b, &list, NULL) >= 0 && !streq_ptr(list, m->tap_list)) {
                log_debug("Tap screens: %s", isempty(list) ? "none" : list);
                free(m->tap_list);
                m->tap_list = TAKE_PTR(list);
        }
        manager_taps_changed(m);
}

/* ---- kegnet */

static void on_kegnet_message(KegnetClient *c, const KegnetMessage *msg, void *userdata) {
        Manager *m = userdata;

        if (msg->kind == KEGNET_FLOW_UPDATE) {
                const KegnetFlowUpdate *f = &msg->flow_update;

                if (f->state == KEGNET_FLOW_COMPLETED) {
                        if (m->pouring && m->pour_flow_id == f->flow_id) {
                                m->pouring = false;
                                manager_update(m);
                        }
                        return;
                }
                m->pouring = true;
                m->pour_flow_id = f->flow_id;
                (void) snprintf(m->pour_user, sizeof(m->pour_user), "%s", f->username ? f->username : "");
                m->pour_has_volume = f->has_volume_ml;
                m->pour_volume_ml = f->volume_ml;
                manager_activity(m);
                manager_update(m);

        } else if (msg->kind == KEGNET_DRINK_CREATED_EVENT) {
                const KegnetDrinkCreatedEvent *d = &msg->drink_created_event;

                m->last_pour = (LastPour) {
                        .known = true,
                        .volume_ml = d->has_volume_ml ? d->volume_ml : 0.0,
                        .has_time = true,
                        .time = (time_t) (d->end_time / USEC_PER_SEC),
                };
                (void) snprintf(m->last_pour.user, sizeof(m->last_pour.user), "%s",
                                isempty(d->username) ? "guest" : d->username);
                manager_activity(m);
                manager_update(m);
        }
}

static void on_kegnet_connected(KegnetClient *c, void *userdata) {
        (void) daemon_notify_status("Connected to the core at %s", kegnet_client_address(c));
}

static void on_kegnet_disconnected(KegnetClient *c, int error, void *userdata) {
        Manager *m = userdata;

        /* Without the core no completed update will come; do not freeze on the pour screen. */
        if (m->pouring) {
                m->pouring = false;
                manager_update(m);
        }
        (void) daemon_notify_status("Waiting for the core at %s", kegnet_client_address(c));
}

static const KegnetClientCallbacks kegnet_callbacks = {
        .connected = on_kegnet_connected,
        .disconnected = on_kegnet_disconnected,
        .message = on_kegnet_message,
};

/* ---- server polls */

static void on_taps(ApiClient *c, const ApiResult *res, void *userdata) {
        Manager *m = userdata;
        json_t *objects, *tap;
        TapInfo *taps;
        size_t i, n = 0;
        int r;

        m->polls_in_flight--;
        objects = api_result_list(res, "taps");
        if (!objects) {
                log_warning("Could not connect to kegweb: %s",
                            res->outcome == API_OK ? "no tap list in the answer" : strna(res->reason));
                return;
        }

        taps = calloc(MAX(json_array_size(objects), (size_t) 1), sizeof(TapInfo));
        if (!taps)
                return;
        json_array_foreach(objects, i, tap) {
                r = tap_info_from_json(tap, &taps[n]);
                if (r == -ENOMEM)
                        break;
                if (r < 0) {
                        log_debug("Skipping a tap without a name");
                        continue;
                }
                n++;
        }

        manager_free_taps(m);
        m->taps = taps;
        m->n_taps = n;
        log_debug("Loaded %zu taps", n);
        manager_taps_changed(m);
}

static void on_drinks(ApiClient *c, const ApiResult *res, void *userdata) {
        Manager *m = userdata;
        json_t *objects, *d, *v;

        m->polls_in_flight--;
        if (res->http_status == 404 || res->http_status == 410) {
                log_info("The server has no drink list (HTTP %ld); no longer polling drinks.", res->http_status);
                m->poll_drinks = false;
                return;
        }
        objects = api_result_list(res, "drinks");
        if (!objects) {
                if (res->outcome != API_OK)
                        log_warning("Could not connect to kegweb: %s", strna(res->reason));
                return;
        }
        d = json_array_get(objects, 0);
        if (!json_is_object(d))
                return;

        LastPour p = { .known = true };
        v = json_object_get(d, "user_id");
        (void) snprintf(p.user, sizeof(p.user), "%s", json_is_string(v) ? json_string_value(v) : "unknown");
        v = json_object_get(d, "volume_ml");
        if (json_is_number(v))
                p.volume_ml = json_number_value(v);
        v = json_object_get(d, "time");
        uint64_t t;
        if (json_is_string(v) && time_parse_rfc3339(json_string_value(v), &t) >= 0) {
                p.has_time = true;
                p.time = (time_t) (t / USEC_PER_SEC);
        }
        m->last_pour = p;
        manager_update(m);
}

static void manager_poll(Manager *m) {
        int r;

        if (m->polls_in_flight > 0) {
                log_debug("Previous server poll still running, skipping this one");
                return;
        }

        r = api_client_get(m->api, "taps", on_taps, m, NULL);
        if (r < 0)
                log_warning_errno(r, "Could not connect to kegweb: %m");
        else
                m->polls_in_flight++;

        if (m->poll_drinks) {
                r = api_client_get(m->api, "drinks", on_drinks, m, NULL);
                if (r < 0)
                        log_warning_errno(r, "Could not connect to kegweb: %m");
                else
                        m->polls_in_flight++;
        }
}

static int on_poll_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        int r;

        manager_poll(m);
        r = event_timer_arm(m->event, &m->poll_timer, usec + (uint64_t) arg_krest_update_interval * USEC_PER_SEC,
                            POLL_ACCURACY_USEC, on_poll_timer, m);
        if (r < 0) {
                log_error_errno(r, "Cannot re-arm the poll timer: %m");
                return sd_event_exit(m->event, 1);
        }
        return 0;
}

/* ---- set-up */

static void on_display_failed(Display *d, int error, void *userdata) {
        Manager *m = userdata;

        m->exit_status = 1;
        (void) sd_event_exit(m->event, 1);
}

static int manager_new(Manager **ret, DisplayType type) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");
        m->poll_drinks = true;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = daemon_setup_event(m->event, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "Cannot set up signals: %m");

        r = display_open(&m->display, m->event, arg_lcd_device_path, arg_lcd_baud_rate, type,
                         on_display_failed, on_display_idle, m);
        if (r < 0)
                return r;

        r = kegnet_client_new(&m->kegnet, m->event, app_kb_core_addr(), &kegnet_callbacks, m);
        if (r < 0)
                return r;
        kegnet_client_set_events(m->kegnet, KEGNET_EVENT_BIT(KEGNET_FLOW_UPDATE) |
                                            KEGNET_EVENT_BIT(KEGNET_DRINK_CREATED_EVENT));

        if (!isempty(app_api_url())) {
                _cleanup_(http_client_unrefp) HttpClient *http = NULL;

                r = http_client_new(&http, m->event);
                if (r >= 0)
                        r = api_client_new(&m->api, http, app_api_url(), app_api_key(), app_api_timeout());
                if (r < 0)
                        return log_error_errno(r, "Cannot create the HTTP client: %m");
                /* The first poll right away. */
                r = event_timer_arm_relative(m->event, &m->poll_timer, 0, POLL_ACCURACY_USEC, on_poll_timer, m);
                if (r < 0)
                        return log_error_errno(r, "Cannot create the poll timer: %m");
        } else {
                log_info("No --api_url: tap screens from kegbot_core on the %s bus.", arg_dbus);
                r = core_taps_new(&m->core_taps, m->event, streq(arg_dbus, "session"), on_core_taps_changed, m);
                if (r < 0)
                        return log_error_errno(r, "Cannot follow the core's taps: %m");
        }

        *ret = TAKE_PTR(m);
        return 0;
}

static int manager_run(Manager *m) {
        int r;

        r = display_clear(m->display);
        if (r >= 0)
                r = display_set_backlight(m->display, true);
        if (r < 0)
                return log_error_errno(r, "Cannot talk to the display: %m");

        /* Start-up counts as activity: the backlight is on and the rotation runs. */
        m->lit = true;
        m->rotation_index = 0;
        manager_arm_rotation(m);
        manager_activity(m);
        manager_update(m);

        r = kegnet_client_start(m->kegnet);
        if (r < 0)
                return log_error_errno(r, "Cannot start the kegnet client: %m");

        (void) daemon_notify_ready("Showing %s on %s", arg_lcd_device_type, arg_lcd_device_path);
        log_info("Display %s (%s) ready.", arg_lcd_device_path, arg_lcd_device_type);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        (void) daemon_notify_stopping();
        return r;
}

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int type, r;

        app_init(argc, argv, &app_info, NULL);

        type = display_type_from_string(arg_lcd_device_type);
        if (type < 0) {
                log_error("Bad device type: %s", arg_lcd_device_type);
                app_finish();
                return 1;
        }
        if (!serial_speed_valid(arg_lcd_baud_rate)) {
                _cleanup_(freep) char *speeds = NULL;
                (void) serial_speeds_string(true, &speeds);
                app_flag_error("--lcd_baud_rate: unsupported baud rate %d (supported: %s)", arg_lcd_baud_rate,
                               speeds ? speeds : "?");
        }

        r = manager_new(&m, (DisplayType) type);
        if (r >= 0)
                r = manager_run(m);
        m = manager_free(m);
        app_finish();
        return r == 0 ? 0 : 1;
}
