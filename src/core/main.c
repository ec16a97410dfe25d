/* kegbot_core: flags, then the Manager (core-behaviour.md section 2), READY=1, the loop, exit code. */
#include <inttypes.h>
#include <limits.h>

#define LOG_COMPONENT "main"
#include "log.h"

#include "app.h"
#include "daemon.h"
#include "drink-sink.h"
#include "flags.h"
#include "backend.h"
#include "backend-event.h"
#include "bus.h"
#include "calibration.h"
#include "routes.h"
#include "manager.h"

static const char *arg_kb_core_bind_addr = KEGNET_DEFAULT_ADDR;
static const char *arg_state_dir = "/var/lib/kegbot";
static int64_t arg_max_tick_delta = 1000;
static int64_t arg_max_restart_delta = 20000;
static double arg_min_volume_ml = 10.0;
static const char *arg_taps_file = "/etc/kegbot/taps.ini";
static const char *arg_tokens_file = "";
static double arg_default_ticks_per_ml = 2.2;
static int arg_sync_interval = 60;
static int arg_retry_interval = 10;
static int arg_maximum_event_retries = 3;
static const char *arg_dbus = "system";
static bool arg_debug_events = false;
static bool arg_kegnet_open_producers = false;
static int arg_kegnet_max_clients = KEGNET_SERVER_MAX_PEERS_DEFAULT;
static int arg_kegnet_idle_timeout = KEGNET_SERVER_IDLE_TIMEOUT_DEFAULT / USEC_PER_SEC;
static int arg_calibration_timeout_s = 600;

/* The Kegboard Event Protocol backend (kegboard-event-protocol.md section 1.1). */
static const char *arg_event_url = "";
static const char *arg_controller_backends = "";
static int arg_event_heartbeat_interval = 60;
static int arg_event_pour_update_ms = 1000;
static int arg_event_retry_interval = 30;
static int arg_event_max_grant_s = 300;
static int arg_event_auth_window = 15;
static int arg_event_spool_max = 10000;

/* The ghost filter (ghost-pours.md section 4.1); every one is also a taps-file key. */
static const char *arg_ghost_filter = "on";
static bool arg_valve_closed_gate = true;
static double arg_valve_closed_grace_s = 3.0;
static double arg_pour_start_ml = 6.0;
static double arg_pour_start_window_s = 2.0;
static double arg_ghost_step_ml_s = 10.0;
static double arg_ghost_baseline_s = 8.0;
static double arg_pour_activity_ml_s = 3.0;
static double arg_ghost_min_duration_s = 60.0;
static double arg_ghost_max_avg_ml_s = 2.0;
static double arg_ghost_onset_s = 20.0;
static double arg_ghost_min_onset_ml = 40.0;
static double arg_max_pour_s = 300.0;
static int arg_quarantine_after_cuts = 2;
static double arg_kick_rate_ml_s = 120.0;

static const FlagDef core_flags[] = {
        FLAG_STRING("kb_core_bind_addr", &arg_kb_core_bind_addr,
                    "kegnet listen address, host:port or port (ignored when systemd passes a socket)."),
        FLAG_STRING("state_dir", &arg_state_dir,
                    "State directory: drink spool (server mode) or drinks.log (standalone mode), "
                    "meters.json.",
                    .env = "STATE_DIRECTORY", .env_mode = FLAG_ENV_FIRST_ENTRY),
        FLAG_INT64_RANGE("max_tick_delta", &arg_max_tick_delta, 0, UINT32_MAX,
                       "Largest accepted meter delta per report (0 = no limit)."),
        FLAG_INT64_RANGE("max_restart_delta", &arg_max_restart_delta, 0, UINT32_MAX,
                         "Largest delta accepted for the first new reading of a meter after a core start (or its "
                         "board's reconnect), against the reading accounted for in meters.json (0 = no limit)."),
        FLAG_DOUBLE_RANGE("min_volume_ml", &arg_min_volume_ml, 0, 10000,
                          "Smaller drinks are not recorded (rule G8; also a taps-file key)."),
        FLAG_STRING("taps_file", &arg_taps_file,
                    "Tap definitions (standalone mode) and the taps' ghost-filter settings (both modes); INI, "
                    "a missing file means none."),
        FLAG_STRING("tokens_file", &arg_tokens_file,
                    "Standalone mode: auth tokens (INI, sections <auth_device>:<token_value> with "
                    "username and enabled); empty = tokens are ignored."),
        FLAG_DOUBLE_RANGE("default_ticks_per_ml", &arg_default_ticks_per_ml, FLOW_CALIBRATION_MIN, FLOW_CALIBRATION_MAX,
                             "Standalone mode: calibration of taps created on first sight."),
        FLAG_INT_RANGE("sync_interval", &arg_sync_interval, 1, 86400, "Seconds between tap syncs with the server."),
        FLAG_INT_RANGE("retry_interval", &arg_retry_interval, 1, 300,
                     "First drink-upload backoff in seconds (doubles up to 300)."),
        FLAG_INT_MIN("maximum_event_retries", &arg_maximum_event_retries, 0,
                     "Ignored (pycore flag files): drinks are retried until delivered."),
        FLAG_ENUM("dbus", &arg_dbus, ((const char *const[]) { "system", "session", "none", NULL }),
                  "Bus to serve org.kegbot.Core1 on: system, session or none."),
        FLAG_BOOL("debug_events", &arg_debug_events, "Log every kegnet message received and sent at DEBUG (and, with "
                  "--event_url, every event batch and answer)."),
        FLAG_STRING("event_url", &arg_event_url,
                    "Kegboard Event Protocol URL (Kegbot Server 2.0: http://<server>/api/kegboard-event): every board "
                    "reports there as a virtual Kegboard v4; empty = none.", .env = "KEGBOT_EVENT_URL"),
        FLAG_STRING("controller_backends", &arg_controller_backends,
                    "Per-controller backend: comma-separated <controller>=event|legacy (e.g. kegboard=legacy); "
                    "others report through the event protocol when --event_url is set, else the legacy API."),
        FLAG_INT_RANGE("event_heartbeat_interval", &arg_event_heartbeat_interval, 10, 3600,
                       "Seconds between status heartbeats of each event device."),
        FLAG_INT_RANGE("event_pour_update_ms", &arg_event_pour_update_ms, 0, 60000,
                       "Least interval between two pour_updates of one pour (0 = never, else at least 250)."),
        FLAG_INT_RANGE("event_retry_interval", &arg_event_retry_interval, 1, 300,
                       "First event-delivery backoff in seconds (doubles up to 300)."),
        FLAG_INT_RANGE("event_max_grant_s", &arg_event_max_grant_s, 1, 3600,
                       "Longest lifetime of a grant from the event server, in seconds."),
        FLAG_INT_RANGE("event_auth_window", &arg_event_auth_window, 1, 300,
                       "Seconds a presented token stays fresh enough for the server's authorize to open a valve."),
        FLAG_INT_RANGE("event_spool_max", &arg_event_spool_max, 100, 1000000,
                       "Events a device may hold before new temperature readings are refused."),
        FLAG_INT_RANGE("calibration_timeout_s", &arg_calibration_timeout_s, 60, 3600,
                       "A calibration pour (kegbot_calibrate) ends unchanged this many seconds after its start."),
        FLAG_ENUM("ghost_filter", &arg_ghost_filter, ((const char *const[]) { "on", "log", "off", NULL }),
                  "Ghost-pour filter (G0): on = ghost ticks never become drinks; log = record what off records, "
                  "report what on would do; off = every tick pours. Every ghost-filter flag (G0-G9) is also a "
                  "key of the taps file, per tap or in [DEFAULT]."),
        FLAG_BOOL("valve_closed_gate", &arg_valve_closed_gate,
                  "G1: on taps with a relay_name, ticks while the core holds the valve closed are ghost."),
        FLAG_DOUBLE_RANGE("valve_closed_grace_s", &arg_valve_closed_grace_s, 0, FLOW_VALVE_CLOSED_GRACE_S_MAX,
                          "G1: seconds after the valve closed that still count (beer in flight); a flow whose "
                          "valve closes is held this long before it is recorded."),
        FLAG_DOUBLE_MIN("pour_start_ml", &arg_pour_start_ml, 0,
                        "G2: mL the start window must hold before a pour starts; 0 = any tick starts one."),
        FLAG_DOUBLE_RANGE("pour_start_window_s", &arg_pour_start_window_s, FLOW_POUR_START_WINDOW_S_MIN,
                          FLOW_POUR_START_WINDOW_S_MAX, "G2: length of the start window, in seconds."),
        FLAG_DOUBLE_MIN("ghost_step_ml_s", &arg_ghost_step_ml_s, 0,
                        "G3: on a line that is not quiet, a pour must start this many mL/s above the ghost "
                        "baseline; 0 = off."),
        FLAG_DOUBLE_RANGE("ghost_baseline_s", &arg_ghost_baseline_s, FLOW_GHOST_BASELINE_S_MIN,
                          FLOW_GHOST_BASELINE_S_MAX, "G3, G4: seconds of the ghost baseline before the window."),
        FLAG_DOUBLE_MIN("pour_activity_ml_s", &arg_pour_activity_ml_s, 0,
                        "G4: mL/s above the ghost baseline a report needs to extend a pour; 0 = off."),
        FLAG_DOUBLE_MIN("ghost_min_duration_s", &arg_ghost_min_duration_s, 0,
                        "G5, G6: they judge only flows at least this long (s); 0 = both off."),
        FLAG_DOUBLE_MIN("ghost_max_avg_ml_s", &arg_ghost_max_avg_ml_s, 0,
                        "G5: a flow averaging less (mL/s) is ghost; 0 = off."),
        FLAG_DOUBLE_RANGE("ghost_onset_s", &arg_ghost_onset_s, FLOW_GHOST_ONSET_S_MIN, FLOW_GHOST_ONSET_S_MAX,
                          "G6: length of a flow's onset, in seconds."),
        FLAG_DOUBLE_MIN("ghost_min_onset_ml", &arg_ghost_min_onset_ml, 0,
                        "G6: a flow with less (mL) in its onset is ghost; 0 = off."),
        FLAG_DOUBLE_RANGE("max_pour_s", &arg_max_pour_s, 0, FLOW_MAX_POUR_S_MAX,
                          "G7: seconds of a cut: a pour running this long without a 10 s pause is flagged "
                          "long_pour; 0 = off, else at least 10."),
        FLAG_INT_MIN("quarantine_after_cuts", &arg_quarantine_after_cuts, 0,
                     "G7: at this cut the flow is ghost and its tap quarantined until ClearQuarantine; "
                     "0 = never."),
        FLAG_DOUBLE_MIN("kick_rate_ml_s", &arg_kick_rate_ml_s, 0,
                        "G9: a pour above this rate (mL/s) for 2 s is flagged kicked; 0 = off."),
        FLAG_BOOL("kegnet_open_producers", &arg_kegnet_open_producers,
                  "Accept producer messages (meter readings, tokens, flow requests, boards, temperatures) "
                  "from every TCP peer, not only from root, the service user and the Unix socket."),
        FLAG_INT_RANGE("kegnet_max_clients", &arg_kegnet_max_clients, 8, 1024,
                       "kegnet connection slots; announced producers keep theirs."),
        FLAG_INT_RANGE("kegnet_idle_timeout", &arg_kegnet_idle_timeout, 1, 3600,
                       "Seconds after which a kegnet connection that sent nothing is closed while half "
                       "of the slots are taken."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "kegbot_core",
        .description = "Kegbot Core: turns flow meter readings into pours and drinks, applies auth tokens, "
                       "drives valves and records temperatures; the kegnet server for the other Kegbot programs.",
        .flags = core_flags,
        .groups = APP_GROUP_API,
        .startup_message = "Kegbot is starting up.",
};

typedef struct Startup {
        Manager *manager;
        Backend *backend;
        EventBackend *event_backend;
} Startup;

/* Start-up is complete (core-behaviour.md section 2, step 9): READY=1, then the server work. With
 * D-Bus this waits until org.kegbot.Core1 is ours, so a client that systemd started us for can call
 * at once. */
static void startup_done(void *userdata) {
        Startup *st = userdata;

        log_info("All services started.");
        manager_set_ready(st->manager);
        if (st->backend)
                (void) backend_start(st->backend);
        if (st->event_backend)
                (void) event_backend_start(st->event_backend);
}

static void status_extra(Manager *m, char *buf, size_t size, void *userdata) {
        event_backend_status_text(userdata, buf, size);
}

int main(int argc, char **argv) {
        _cleanup_(routes_freep) Routes *routes = NULL;     /* freed last: the manager keeps it */
        _cleanup_(freep) char *error = NULL;
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_(backend_freep) Backend *backend = NULL;
        _cleanup_(event_backend_freep) EventBackend *event_backend = NULL;
        _cleanup_(calibrations_freep) Calibrations *calibrations = NULL;
        _cleanup_(bus_freep) Bus *bus = NULL;  /* freed first: it observes the manager and the backend */
        bool bus_lost;
        ManagerConfig config;
        Startup startup = {};
        bool server, event;
        int r;

        (void) app_init(argc, argv, &app_info, NULL);

        if (flags_given("maximum_event_retries"))
                log_warning("--maximum_event_retries is accepted for old flag files and ignored: "
                            "drinks are retried until delivered");

        FlowSettings settings = {
                .ghost_filter = (FlowGhostMode) flow_ghost_mode_from_string(arg_ghost_filter),
                .valve_closed_gate = arg_valve_closed_gate,
                .valve_closed_grace_s = arg_valve_closed_grace_s,
                .pour_start_ml = arg_pour_start_ml,
                .pour_start_window_s = arg_pour_start_window_s,
                .ghost_step_ml_s = arg_ghost_step_ml_s,
                .ghost_baseline_s = arg_ghost_baseline_s,
                .pour_activity_ml_s = arg_pour_activity_ml_s,
                .ghost_min_duration_s = arg_ghost_min_duration_s,
                .ghost_max_avg_ml_s = arg_ghost_max_avg_ml_s,
                .ghost_onset_s = arg_ghost_onset_s,
                .ghost_min_onset_ml = arg_ghost_min_onset_ml,
                .max_pour_s = arg_max_pour_s,
                .quarantine_after_cuts = (unsigned) arg_quarantine_after_cuts,
                .min_volume_ml = arg_min_volume_ml,
                .kick_rate_ml_s = arg_kick_rate_ml_s,
        };
        const char *bad_key, *reason;
        /* The one bound a range cannot say: max_pour_s is 0 or at least 10. */
        if (flow_settings_check(&settings, &bad_key, &reason) < 0)
                app_flag_error("--%s: %s", bad_key, reason);

        if (arg_event_pour_update_ms > 0 && arg_event_pour_update_ms < 250)
                app_flag_error("--event_pour_update_ms: 0 or at least 250");
        event = !isempty(arg_event_url);
        if (event && !startswith(arg_event_url, "http://") && !startswith(arg_event_url, "https://"))
                app_flag_error("--event_url: an http:// or https:// URL");
        server = !isempty(app_api_url());
        r = routes_new(arg_controller_backends, server, event, &routes, &error);
        if (r < 0)
                app_flag_error("--controller_backends: %s", error ?: strerror(-r));
        if (server) {
                log_info("Running in server mode, api_url=%s", app_api_url());
                if (isempty(app_api_key()))
                        log_warning("No API key configured");
        } else if (event)
                log_info("Running in server mode, event_url=%s", arg_event_url);
        else
                log_info("Running in standalone mode (no --api_url)");

        manager_config_init(&config);
        config.bind_addr = arg_kb_core_bind_addr;
        config.state_dir = arg_state_dir;
        config.taps_file = arg_taps_file;
        config.tokens_file = arg_tokens_file;
        config.max_tick_delta = (uint64_t) arg_max_tick_delta;
        config.settings = settings;
        config.max_restart_delta = (uint64_t) arg_max_restart_delta;
        config.default_ticks_per_ml = arg_default_ticks_per_ml;
        config.debug_events = arg_debug_events;
        config.open_producers = arg_kegnet_open_producers;
        config.max_clients = (unsigned) arg_kegnet_max_clients;
        config.idle_timeout_usec = (uint64_t) arg_kegnet_idle_timeout * USEC_PER_SEC;
        config.standalone = !server && !event;
        config.local_taps = event;
        config.routes = routes;
        config.retry_usec = (uint64_t) arg_retry_interval * USEC_PER_SEC;

        r = manager_new(&m, &config);
        if (r < 0) {
                app_finish();
                return 1;
        }
        /* Before the backend: its observer sees a shutdown first and abandons the stores in flight. */
        r = calibrations_new(&calibrations, m, &(CalibrationConfig) {
                .taps_file = arg_taps_file,
                .timeout_usec = (uint64_t) arg_calibration_timeout_s * USEC_PER_SEC,
        });
        if (r < 0) {
                app_finish();
                return 1;
        }
        if (server) {
                BackendConfig bc = {
                        .api_url = app_api_url(),
                        .api_key = app_api_key(),
                        .api_timeout = app_api_timeout(),
                        .sync_interval = (unsigned) arg_sync_interval,
                        .retry_interval = (unsigned) arg_retry_interval,
                        .state_dir = arg_state_dir,
                };
                r = backend_new(&backend, m, &bc);
                if (r >= 0)
                        r = backend_add_calibrations(backend, calibrations);
                if (r < 0) {
                        app_finish();
                        return 1;
                }
        }

        if (event) {
                EventBackendConfig ec = {
                        .event_url = arg_event_url,
                        .api_timeout = app_api_timeout(),
                        .state_dir = arg_state_dir,
                        .heartbeat_interval = (unsigned) arg_event_heartbeat_interval,
                        .pour_update_ms = (unsigned) arg_event_pour_update_ms,
                        .retry_interval = (unsigned) arg_event_retry_interval,
                        .max_grant_s = (unsigned) arg_event_max_grant_s,
                        .auth_window = (unsigned) arg_event_auth_window,
                        .spool_max = (unsigned) arg_event_spool_max,
                        .debug_events = arg_debug_events,
                };
                r = event_backend_new(&event_backend, m, &ec);
                if (r >= 0)
                        r = event_backend_add_calibrations(event_backend, calibrations);
                if (r < 0) {
                        app_finish();
                        return 1;
                }
                manager_set_status_extra(m, status_extra, event_backend);
        }

        if (!streq(arg_dbus, "none")) {
                BusConfig bus_config = { .api_url = app_api_url() };

                (void) bus_type_from_string(arg_dbus, &bus_config.type);
                r = bus_new(&bus, m, &bus_config);
                if (r < 0) {
                        app_finish();
                        return 1;
                }
                if (backend)
                        bus_set_backend(bus, backend);
                if (event_backend)
                        bus_set_event_backend(bus, event_backend);
                bus_set_calibrations(bus, calibrations);
        }

        startup = (Startup) { .manager = m, .backend = backend, .event_backend = event_backend };
        if (bus) {
                (void) daemon_notify_status("Starting: waiting for the bus name %s", BUS_NAME);
                bus_set_ready_handler(bus, startup_done, &startup);
        } else
                startup_done(&startup);

        r = manager_run(m);
        bus_lost = bus_failed(bus);
        bus = bus_free(bus);
        calibrations = calibrations_free(calibrations);
        backend = backend_free(backend);
        event_backend = event_backend_free(event_backend);
        m = manager_free(m);

        log_info("Kegbot stopped.");
        app_finish();
        return r < 0 || bus_lost ? 1 : 0;
}
