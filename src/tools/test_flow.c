/* test_flow: sends a synthetic pour to the core (programs-and-flags.md section 11): optional token
 * added/removed/added, optional start_flow, meter readings 0, step, 2*step, ... up to --ticks with a
 * pause after each, token removed, stop_flow, then a clean close. One connection attempt only. */
#include <inttypes.h>
#include <limits.h>

#define LOG_COMPONENT "test_flow"
#include "log.h"

#include "app.h"
#include "daemon.h"
#include "flags.h"
#include "kegnet-client.h"
#include "util-event.h"

static int arg_ticks = 1000;
static int arg_steps = 10;
static double arg_delay_seconds = 0.1;
static const char *arg_meter_name = "kegboard.flow0";
static const char *arg_tap_name = "";
static const char *arg_auth_token = "";
static bool arg_explicit_start_stop = false;

static const FlagDef test_flow_flags[] = {
        FLAG_INT_MIN("ticks", &arg_ticks, 0, "Total ticks to send."),
        FLAG_INT_MIN("steps", &arg_steps, 1, "Number of increments."),
        FLAG_DOUBLE_RANGE("delay_seconds", &arg_delay_seconds, 0, 60,
                          "Pause after each meter message, in seconds (0 = none)."),
        FLAG_STRING("meter_name", &arg_meter_name, "Meter to report on."),
        FLAG_STRING("tap_name", &arg_tap_name, "pycore 1.0 name of --meter_name; if non-empty it wins."),
        FLAG_STRING("auth_token", &arg_auth_token,
                    "Auth token to present during the pour, <auth_device>:<token_value> "
                    "(or the pycore 1.0 form <auth_device>|<token_value>)."),
        FLAG_BOOL("explicit_start_stop", &arg_explicit_start_stop,
                  "If true, also send start_flow and stop_flow requests."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "test_flow",
        .description = "Sends a synthetic pour to the Kegbot Core: an optional auth token, optional "
                       "start_flow/stop_flow requests and a series of increasing meter readings.",
        .flags = test_flow_flags,
        .groups = APP_GROUP_KEGNET,
};

typedef struct TestFlow {
        sd_event *event;
        sd_event_source *step_source;
        KegnetClient *client;
        const char *meter;
        char *token_device;             /* NULL = no token */
        char *token_value;
        int64_t step;                   /* ceil(ticks / steps) */
        int64_t next_reading;           /* -1 = all readings sent */
        bool finishing;
} TestFlow;

static int send_or_fail(TestFlow *t, const KegnetMessage *m) {
        int r = kegnet_client_send(t->client, m);
        if (r < 0 || !kegnet_client_is_connected(t->client)) {
                log_error("Connection to core lost.");
                (void) sd_event_exit(t->event, 1);
                return r < 0 ? r : -ENOTCONN;
        }
        return 0;
}

static int send_token(TestFlow *t, KegnetTokenStatus status) {
        return send_or_fail(t, &(KegnetMessage) {
                .kind = KEGNET_TOKEN_AUTH_EVENT,
                .token_auth_event = {
                        .meter_name = t->meter,
                        .auth_device_name = t->token_device,
                        .token_value = t->token_value,
                        .status = status,
                },
        });
}

static int send_request(TestFlow *t, KegnetFlowRequestType request) {
        return send_or_fail(t, &(KegnetMessage) {
                .kind = KEGNET_FLOW_REQUEST,
                .flow_request = {
                        .meter_name = t->meter,
                        .request = request,
                },
        });
}

static void finish(TestFlow *t) {
        int r;

        if (t->token_device && send_token(t, KEGNET_TOKEN_REMOVED) < 0)
                return;
        if (arg_explicit_start_stop && send_request(t, KEGNET_REQUEST_STOP_FLOW) < 0)
                return;

        t->finishing = true;
        r = kegnet_client_finish(t->client);
        if (r < 0) {
                log_error_errno(r, "Connection to core lost: %m");
                (void) sd_event_exit(t->event, 1);
        }
}

static int on_step(sd_event_source *s, uint64_t usec, void *userdata);

static void send_next_reading(TestFlow *t) {
        int64_t reading = t->next_reading;
        uint64_t now = 0;
        int r;

        log_info("Sending flow update: %" PRIi64, reading);
        r = send_or_fail(t, &(KegnetMessage) {
                .kind = KEGNET_METER_UPDATE,
                .meter_update = {
                        .meter_name = t->meter,
                        .reading = (uint32_t) reading,
                },
        });
        if (r < 0)
                return;

        t->next_reading = reading >= arg_ticks ? -1 : MIN(reading + t->step, (int64_t) arg_ticks);

        (void) sd_event_now(t->event, CLOCK_MONOTONIC, &now);
        uint64_t when = now + (uint64_t) (arg_delay_seconds * USEC_PER_SEC);
        r = event_timer_arm(t->event, &t->step_source, when, 1, on_step, t);
        if (r < 0) {
                log_error_errno(r, "Cannot arm the step timer: %m");
                (void) sd_event_exit(t->event, 1);
        }
}

static int on_step(sd_event_source *s, uint64_t usec, void *userdata) {
        TestFlow *t = userdata;

        if (t->next_reading < 0)
                finish(t);
        else
                send_next_reading(t);
        return 0;
}

static void on_connected(KegnetClient *c, void *userdata) {
        TestFlow *t = userdata;

        if (t->token_device) {
                if (send_token(t, KEGNET_TOKEN_ADDED) < 0 ||
                    send_token(t, KEGNET_TOKEN_REMOVED) < 0 ||
                    send_token(t, KEGNET_TOKEN_ADDED) < 0)
                        return;
        }
        if (arg_explicit_start_stop && send_request(t, KEGNET_REQUEST_START_FLOW) < 0)
                return;

        t->next_reading = 0;
        send_next_reading(t);
}

static void on_connect_failed(KegnetClient *c, int error, void *userdata) {
        TestFlow *t = userdata;

        log_error("Could not connect to core.");
        (void) sd_event_exit(t->event, 1);
}

static void on_disconnected(KegnetClient *c, int error, void *userdata) {
        TestFlow *t = userdata;

        if (t->finishing && error == 0) {
                (void) sd_event_exit(t->event, 0);
                return;
        }
        if (error < 0)
                log_error_errno(error, "Connection to core lost: %m");
        else
                log_error("Connection to core lost.");
        (void) sd_event_exit(t->event, 1);
}

/* "<device>:<value>" or pycore 1.0's "<device>|<value>", split at the first separator. */
static int parse_auth_token(const char *s, char **ret_device, char **ret_value) {
        const char *sep = strpbrk(s, ":|");

        if (!sep || sep == s || sep[1] == '\0')
                return -EINVAL;
        *ret_device = strndup(s, (size_t) (sep - s));
        *ret_value = strdup(sep + 1);
        if (!*ret_device || !*ret_value) {
                free(*ret_device);
                free(*ret_value);
                return -ENOMEM;
        }
        return 0;
}

int main(int argc, char **argv) {
        TestFlow t = { .next_reading = -1 };
        int r;

        (void) app_init(argc, argv, &app_info, NULL);

        if (!isempty(arg_auth_token) && parse_auth_token(arg_auth_token, &t.token_device, &t.token_value) < 0)
                app_flag_error("--auth_token must be <auth_device>:<token_value>, not '%s'", arg_auth_token);

        t.meter = isempty(arg_tap_name) ? arg_meter_name : arg_tap_name;
        if (isempty(t.meter))
                app_flag_error("--meter_name must not be empty");
        t.step = ((int64_t) arg_ticks + arg_steps - 1) / arg_steps;

        r = sd_event_default(&t.event);
        if (r < 0) {
                log_error_errno(r, "Cannot create the event loop: %m");
                goto finish;
        }
        r = daemon_setup_event(t.event, NULL, NULL);
        if (r < 0)
                goto finish;

        r = kegnet_client_new(&t.client, t.event, app_kb_core_addr(),
                              &(KegnetClientCallbacks) {
                                      .connected = on_connected,
                                      .disconnected = on_disconnected,
                                      .connect_failed = on_connect_failed,
                              }, &t);
        if (r < 0) {
                log_error("Could not connect to core.");
                goto finish;
        }
        kegnet_client_set_reconnect(t.client, false);
        /* So that the core acknowledges what we send (finish waits for it) and says so if it does
         * not accept producer messages from us. */
        kegnet_client_set_role(t.client, KEGNET_ROLE_PRODUCER);
        kegnet_client_set_events(t.client, 0);

        r = kegnet_client_start(t.client);
        if (r < 0) {
                log_error("Could not connect to core.");
                goto finish;
        }

        r = sd_event_loop(t.event);
        if (r < 0)
                log_error_errno(r, "Event loop failed: %m");

finish:
        t.step_source = sd_event_source_disable_unref(t.step_source);
        kegnet_client_free(t.client);
        sd_event_unref(t.event);
        free(t.token_device);
        free(t.token_value);
        app_finish();
        return r == 0 ? 0 : 1;
}
