/* lcd_daemon: drives a 4 x 20 serial character LCD (programs-and-flags.md section 8): an idle
 * rotation of splash, last pour and tap screens, a pour screen while beer flows, a backlight that
 * follows activity. Listens to kegnet; polls Kegbot Server for taps and the newest drink. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define LOG_COMPONENT "lcd"
#include "log.h"

#include "api.h"
#include "app.h"
#include "daemon.h"
#include "display.h"
#include "flags.h"
#include "kegnet-client.h"
#include "screens.h"
#include "util-time.h"

#define UI_INTERVAL_USEC (100 * USEC_PER_MSEC)
#define SPLASH_USEC (5 * USEC_PER_SEC)
#define TAP_SCREEN_USEC (10 * USEC_PER_SEC)

static const char *strna(const char *s) {
        return s ? s : "n/a";
}

static const char *arg_lcd_device_path = "/dev/ttyUSB0";
static int arg_lcd_baud_rate = 115200;
static const char *arg_lcd_device_type = "cfa635";
static int arg_backlight_timeout = 300;
static int arg_rotation_time = 10;
static int arg_krest_update_interval = 60;

static const FlagDef lcd_flags[] = {
        FLAG_STRING("lcd_device_path", &arg_lcd_device_path, "Serial device of the display."),
        FLAG_INT("lcd_baud_rate", &arg_lcd_baud_rate, "Baud rate of the display."),
        FLAG_STRING("lcd_device_type", &arg_lcd_device_type,
                    "Display type: cfa635 (CrystalFontz CFA-635) or mtxorb20x4 (Matrix Orbital)."),
        FLAG_INT_MIN("backlight_timeout", &arg_backlight_timeout, 0,
                     "Seconds without activity before the backlight goes off."),
        FLAG_INT_MIN("rotation_time", &arg_rotation_time, 1,
                     "Seconds the last-pour screen stays in the idle rotation."),
        FLAG_INT_MIN("krest_update_interval", &arg_krest_update_interval, 10,
                     "Seconds between Kegbot Server polls."),
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
        sd_event_source *ui_timer;
        sd_event_source *poll_timer;
        Display *display;
        KegnetClient *kegnet;
        ApiClient *api;                 /* NULL without --api_url */

        unsigned rotation_index;
        uint64_t rotation_deadline;
        TapInfo *taps;
        size_t n_taps;
        LastPour last_pour;

        bool pouring;
        int64_t pour_flow_id;
        char pour_user[64];
        bool pour_has_volume;
        double pour_volume_ml;

        uint64_t last_activity;
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
        sd_event_source_disable_unref(m->ui_timer);
        sd_event_source_disable_unref(m->poll_timer);
        api_client_free(m->api);
        kegnet_client_free(m->kegnet);
        display_free(m->display);
        manager_free_taps(m);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

static uint64_t manager_now(Manager *m) {
        uint64_t now = 0;
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        return now;
}

static void manager_activity(Manager *m) {
        m->last_activity = manager_now(m);
}

static size_t rotation_length(const Manager *m) {
        return 2 + m->n_taps;           /* splash, last pour, one per tap */
}

static uint64_t rotation_duration(const Manager *m, unsigned index) {
        if (index == 0)
                return SPLASH_USEC;
        if (index == 1)
                return (uint64_t) arg_rotation_time * USEC_PER_SEC;
        return TAP_SCREEN_USEC;
}

static void manager_render(Manager *m, LcdScreen *s) {
        if (m->pouring) {
                lcd_screen_pour(s, m->pour_user, m->pour_has_volume, m->pour_volume_ml);
                return;
        }
        if (m->rotation_index == 0)
                lcd_screen_splash(s);
        else if (m->rotation_index == 1)
                lcd_screen_last_pour(s, &m->last_pour);
        else
                lcd_screen_tap(s, &m->taps[m->rotation_index - 2]);
}

static int on_ui_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now = manager_now(m);
        LcdScreen screen;
        int r;

        if (m->rotation_index >= rotation_length(m)) {
                m->rotation_index = 0;
                m->rotation_deadline = now + rotation_duration(m, 0);
        } else if (now >= m->rotation_deadline) {
                m->rotation_index = (unsigned) ((m->rotation_index + 1) % rotation_length(m));
                m->rotation_deadline = now + rotation_duration(m, m->rotation_index);
        }

        bool lit = now - m->last_activity < (uint64_t) arg_backlight_timeout * USEC_PER_SEC;
        r = display_set_backlight(m->display, lit);
        if (r < 0 && r != -ENOBUFS)
                log_debug_errno(r, "Cannot switch the backlight: %m");

        manager_render(m, &screen);
        if (!display_busy(m->display) &&
            (!m->shown_valid || memcmp(&screen, &m->shown, sizeof(screen)) != 0)) {
                r = display_show(m->display, &screen);
                if (r >= 0) {
                        m->shown = screen;
                        m->shown_valid = true;
                }
        }

        r = sd_event_source_set_time(s, usec + UI_INTERVAL_USEC);
        if (r < 0) {
                log_error_errno(r, "Cannot re-arm the UI timer: %m");
                return sd_event_exit(m->event, 1);
        }
        return 0;
}

/* ---- kegnet */

static void on_kegnet_message(KegnetClient *c, const KegnetMessage *msg, void *userdata) {
        Manager *m = userdata;

        if (msg->kind == KEGNET_FLOW_UPDATE) {
                const KegnetFlowUpdate *f = &msg->flow_update;

                if (f->state == KEGNET_FLOW_COMPLETED) {
                        if (m->pouring && m->pour_flow_id == f->flow_id)
                                m->pouring = false;
                        return;
                }
                m->pouring = true;
                m->pour_flow_id = f->flow_id;
                (void) snprintf(m->pour_user, sizeof(m->pour_user), "%s", f->username ? f->username : "");
                m->pour_has_volume = f->has_volume_ml;
                m->pour_volume_ml = f->volume_ml;
                manager_activity(m);

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
        }
}

static void on_kegnet_connected(KegnetClient *c, void *userdata) {
        (void) daemon_notify_status("Connected to the core at %s", kegnet_client_address(c));
}

static void on_kegnet_disconnected(KegnetClient *c, int error, void *userdata) {
        Manager *m = userdata;

        /* Without the core no completed update will come; do not freeze on the pour screen. */
        m->pouring = false;
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
        r = sd_event_source_set_time(s, usec + (uint64_t) arg_krest_update_interval * USEC_PER_SEC);
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
        uint64_t now;
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
                         on_display_failed, m);
        if (r < 0)
                return r;

        r = kegnet_client_new(&m->kegnet, m->event, app_kb_core_addr(), &kegnet_callbacks, m);
        if (r < 0)
                return r;

        now = manager_now(m);
        m->last_activity = now;
        m->rotation_deadline = now + rotation_duration(m, 0);

        r = sd_event_add_time(m->event, &m->ui_timer, CLOCK_MONOTONIC, now, 0, on_ui_tick, m);
        if (r < 0)
                return log_error_errno(r, "Cannot create the UI timer: %m");
        r = sd_event_source_set_enabled(m->ui_timer, SD_EVENT_ON);
        if (r < 0)
                return log_error_errno(r, "Cannot enable the UI timer: %m");

        if (!isempty(app_api_url())) {
                _cleanup_(http_client_unrefp) HttpClient *http = NULL;

                r = http_client_new(&http, m->event);
                if (r >= 0)
                        r = api_client_new(&m->api, http, app_api_url(), app_api_key(), app_api_timeout());
                if (r < 0)
                        return log_error_errno(r, "Cannot create the HTTP client: %m");
                r = sd_event_add_time(m->event, &m->poll_timer, CLOCK_MONOTONIC, now, 0, on_poll_timer, m);
                if (r < 0)
                        return log_error_errno(r, "Cannot create the poll timer: %m");
                r = sd_event_source_set_enabled(m->poll_timer, SD_EVENT_ON);
                if (r < 0)
                        return log_error_errno(r, "Cannot enable the poll timer: %m");
        } else
                log_info("No --api_url: tap screens are off.");

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

        r = manager_new(&m, (DisplayType) type);
        if (r >= 0)
                r = manager_run(m);
        m = manager_free(m);
        app_finish();
        return r == 0 ? 0 : 1;
}
