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
#include "bus.h"
#include "manager.h"

static const char *arg_kb_core_bind_addr = KEGNET_DEFAULT_ADDR;
static const char *arg_state_dir = "/var/lib/kegbot";
static int64_t arg_max_tick_delta = 1000;
static double arg_min_volume_ml = 10.0;
static const char *arg_taps_file = "/etc/kegbot/taps.ini";
static const char *arg_tokens_file = "";
static double arg_default_ticks_per_ml = 2.2;
static int arg_sync_interval = 60;
static int arg_retry_interval = 10;
static int arg_maximum_event_retries = 3;
static const char *arg_dbus = "system";
static bool arg_debug_events = false;

static const FlagDef core_flags[] = {
        FLAG_STRING("kb_core_bind_addr", &arg_kb_core_bind_addr,
                    "kegnet listen address, host:port or port (ignored when systemd passes a socket)."),
        FLAG_STRING("state_dir", &arg_state_dir,
                    "State directory: drink spool (server mode) or drinks.log (standalone mode).",
                    .env = "STATE_DIRECTORY", .env_mode = FLAG_ENV_FIRST_ENTRY),
        FLAG_INT64_MIN("max_tick_delta", &arg_max_tick_delta, 0,
                       "Largest accepted meter delta per report (0 = no limit)."),
        FLAG_DOUBLE_MIN("min_volume_ml", &arg_min_volume_ml, 0, "Smaller drinks are not recorded."),
        FLAG_STRING("taps_file", &arg_taps_file,
                    "Standalone mode: tap definitions (INI; a missing file means none)."),
        FLAG_STRING("tokens_file", &arg_tokens_file,
                    "Standalone mode: auth tokens (INI, sections <auth_device>:<token_value> with "
                    "username and enabled); empty = tokens are ignored."),
        FLAG_DOUBLE_POSITIVE("default_ticks_per_ml", &arg_default_ticks_per_ml,
                             "Standalone mode: calibration of taps created on first sight."),
        FLAG_INT_MIN("sync_interval", &arg_sync_interval, 1, "Seconds between tap syncs with the server."),
        FLAG_INT_MIN("retry_interval", &arg_retry_interval, 1,
                     "First drink-upload backoff in seconds (doubles up to 300)."),
        FLAG_INT_MIN("maximum_event_retries", &arg_maximum_event_retries, 0,
                     "Ignored (pycore flag files): drinks are retried until delivered."),
        FLAG_ENUM("dbus", &arg_dbus, ((const char *const[]) { "system", "session", "none", NULL }),
                  "Bus to serve org.kegbot.Core1 on: system, session or none."),
        FLAG_BOOL("debug_events", &arg_debug_events, "Log every kegnet message received and sent at DEBUG."),
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

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_(backend_freep) Backend *backend = NULL;
        _cleanup_(bus_freep) Bus *bus = NULL;  /* freed first: it observes the manager and the backend */
        bool bus_lost;
        ManagerConfig config;
        bool server;
        int r;

        (void) app_init(argc, argv, &app_info, NULL);

        if (flags_given("maximum_event_retries"))
                log_warning("--maximum_event_retries is accepted for old flag files and ignored: "
                            "drinks are retried until delivered");

        server = !isempty(app_api_url());
        if (server) {
                log_info("Running in server mode, api_url=%s", app_api_url());
                if (isempty(app_api_key()))
                        log_warning("No API key configured");
        } else
                log_info("Running in standalone mode (no --api_url)");

        manager_config_init(&config);
        config.bind_addr = arg_kb_core_bind_addr;
        config.state_dir = arg_state_dir;
        config.taps_file = arg_taps_file;
        config.tokens_file = arg_tokens_file;
        config.max_tick_delta = (uint64_t) arg_max_tick_delta;
        config.min_volume_ml = arg_min_volume_ml;
        config.default_ticks_per_ml = arg_default_ticks_per_ml;
        config.debug_events = arg_debug_events;
        config.standalone = !server;
        config.retry_usec = (uint64_t) arg_retry_interval * USEC_PER_SEC;

        r = manager_new(&m, &config);
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
                if (r < 0) {
                        app_finish();
                        return 1;
                }
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
        }

        log_info("All services started.");
        (void) daemon_notify_ready("Ready: %s mode, %zu taps, %zu queued drinks",
                                   server ? "server" : "standalone",
                                   flow_engine_n_taps(manager_get_engine(m)),
                                   drink_sink_n_pending(manager_get_drink_sink(m)));
        if (backend)
                (void) backend_start(backend);

        r = manager_run(m);
        bus_lost = bus_failed(bus);
        bus = bus_free(bus);
        backend = backend_free(backend);
        m = manager_free(m);

        log_info("Kegbot stopped.");
        app_finish();
        return r < 0 || bus_lost ? 1 : 0;
}
