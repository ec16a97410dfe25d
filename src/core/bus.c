/* kegbot_core's D-Bus front end: see bus.h. The objects are views: taps, controllers and sensors
 * are read from the manager when asked; only what the manager does not keep (the last flow of each
 * meter, relay states, which objects were announced) is remembered here. Nothing is emitted while
 * the name is not ours (bus not there yet, or restarting): a client that connects later asks for
 * the state anyway, and signals queued for a bus that never comes would only grow memory.
 * Text from callers is UTF-8 by the time a method sees it: sd-bus refuses any message whose
 * strings are not (the D-Bus specification requires valid UTF-8), so that check is not repeated. */
#include <inttypes.h>
#include <stdarg.h>
#include <systemd/sd-bus.h>

#define LOG_COMPONENT "dbus"
#include "log.h"

#include "bus.h"
#include "backend-event.h"
#include "kbevent.h"
#include "calibration-units.h"
#include "util-event.h"
#include "util-string.h"
#include "util-strv.h"
#include "util-uuid.h"

#define MANAGER_IFACE "org.kegbot.Core1.Manager"
#define TAP_IFACE "org.kegbot.Core1.Tap"
#define CONTROLLER_IFACE "org.kegbot.Core1.Controller"
#define SENSOR_IFACE "org.kegbot.Core1.ThermoSensor"
#define FLOW_IFACE "org.kegbot.Core1.Flow"
#define LOG_CONTROL_PATH "/org/freedesktop/LogControl1"
#define LOG_CONTROL_IFACE "org.freedesktop.LogControl1"

#define TAP_PREFIX BUS_ROOT_PATH "/tap"
#define CONTROLLER_PREFIX BUS_ROOT_PATH "/controller"
#define SENSOR_PREFIX BUS_ROOT_PATH "/sensor"
#define FLOW_PREFIX BUS_ROOT_PATH "/flow"

#define BUS_ERROR_UNKNOWN_METER "org.kegbot.Core1.Error.UnknownMeter"
#define BUS_ERROR_UNKNOWN_DRINK "org.kegbot.Core1.Error.UnknownDrink"
#define BUS_ERROR_NOT_SUPPORTED "org.kegbot.Core1.Error.NotSupported"
#define BUS_ERROR_SHUTTING_DOWN "org.kegbot.Core1.Error.ShuttingDown"
#define BUS_ERROR_QUARANTINED "org.kegbot.Core1.Error.Quarantined"
#define BUS_ERROR_UNKNOWN_CONTROLLER "org.kegbot.Core1.Error.UnknownController"
#define BUS_ERROR_UNKNOWN_RELAY "org.kegbot.Core1.Error.UnknownRelay"
#define BUS_ERROR_BUSY "org.kegbot.Core1.Error.Busy"
#define BUS_ERROR_NOT_CALIBRATING "org.kegbot.Core1.Error.NotCalibrating"
#define BUS_ERROR_CALIBRATION_REJECTED "org.kegbot.Core1.Error.CalibrationRejected"
#define BUS_ERROR_SERVER_ERROR "org.kegbot.Core1.Error.ServerError"

/* Pour values of one tap (and its flow object) go out at most this often. */
#define EMIT_INTERVAL_USEC (100 * USEC_PER_MSEC)
/* After losing the bus, wait this long before connecting again (then sd-bus waits for the socket). */
#define RECONNECT_DELAY_USEC (1 * USEC_PER_SEC)
#define RECONNECT_RETRY_USEC (5 * USEC_PER_SEC)
#define RECONNECT_ACCURACY_USEC (100 * USEC_PER_MSEC)

#define NAME_MAX_LEN 255

static const sd_bus_error_map kegbot_bus_errors[] = {
        SD_BUS_ERROR_MAP(BUS_ERROR_UNKNOWN_METER, ENOENT),
        SD_BUS_ERROR_MAP(BUS_ERROR_UNKNOWN_DRINK, ENOENT),
        SD_BUS_ERROR_MAP(BUS_ERROR_NOT_SUPPORTED, EOPNOTSUPP),
        SD_BUS_ERROR_MAP(BUS_ERROR_SHUTTING_DOWN, ESHUTDOWN),
        SD_BUS_ERROR_MAP(BUS_ERROR_UNKNOWN_CONTROLLER, ENODEV),
        SD_BUS_ERROR_MAP(BUS_ERROR_QUARANTINED, EPERM),
        SD_BUS_ERROR_MAP(BUS_ERROR_UNKNOWN_RELAY, ENOENT),
        SD_BUS_ERROR_MAP(BUS_ERROR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(BUS_ERROR_NOT_CALIBRATING, ESRCH),
        SD_BUS_ERROR_MAP(BUS_ERROR_CALIBRATION_REJECTED, EDOM),
        SD_BUS_ERROR_MAP(BUS_ERROR_SERVER_ERROR, EREMOTEIO),
        SD_BUS_ERROR_MAP_END
};

/* Everything about one meter the D-Bus view needs beyond the engine: whether it is exported as a
 * tap, its last flow (the engine forgets a flow when it completes) and the coalescing state. */
typedef struct MeterObj {
        Bus *bus;
        char *meter;
        char *tap_path;
        bool has_tap;

        bool has_flow;                  /* a flow was seen on this meter */
        uint64_t flow_id;
        FlowState flow_state;
        char *username;
        char *auth_device;
        char *relay_name;
        uint64_t ticks;
        bool volume_known;
        double volume_ml;
        uint64_t start_realtime;
        uint64_t last_activity_realtime;
        uint64_t max_idle_usec;
        char *grant_id;                 /* event controllers: the grant covering the meter, as last shown */
        unsigned flow_flags;            /* DRINK_FLAG_* of the flow */
        char *flow_path;                /* set while the flow object is exported */

        /* The running calibration pour, as last reported (calibration.md section 5). */
        bool cal_running;
        uint64_t cal_ticks;
        uint64_t cal_started, cal_deadline;

        bool dirty;
        uint64_t last_emit;             /* monotonic; 0 = never */
        sd_event_source *emit_timer;
} MeterObj;

typedef struct RelayState {
        char *name;
        bool enabled;
} RelayState;

struct Bus {
        Manager *manager;
        sd_event *event;
        BusType type;
        char *api_url;

        Backend *backend;
        EventBackend *event_backend;
        Calibrations *calibrations;

        sd_bus *bus;
        bool ready;                     /* connected and the name is ours */
        bool was_ready;                 /* the name was ours at least once */
        void (*ready_handler)(void *userdata);
        void *ready_userdata;
        bool failed;
        sd_event_source *reconnect_source;

        MeterObj **meters;
        size_t n_meters;
        char **controllers;             /* announced (InterfacesAdded sent or due) */
        size_t n_controllers;
        char **sensors;
        size_t n_sensors;
        RelayState *relays;
        size_t n_relays;

        uint64_t last_sync;             /* standalone: taps file loaded (start-up, Sync()) */
        char *log_target;

        /* Manager properties as last emitted, so only changes go out. */
        const char *emitted_state;
        const char *emitted_spool;
        const char *emitted_disk;
        uint32_t emitted_pending;
        uint32_t emitted_failed;
        uint64_t emitted_last_sync;
};

static const char *bus_type_to_string(BusType t) {
        return t == BUS_TYPE_SESSION ? "session" : "system";
}

int bus_type_from_string(const char *s, BusType *ret) {
        if (streq_ptr(s, "system"))
                *ret = BUS_TYPE_SYSTEM;
        else if (streq_ptr(s, "session"))
                *ret = BUS_TYPE_SESSION;
        else
                return -EINVAL;
        return 0;
}

static uint64_t bus_now(Bus *b, clockid_t clock) {
        uint64_t t = 0;
        (void) sd_event_now(b->event, clock, &t);
        return t;
}

static int free_and_strdup(char **p, const char *s) {
        char *n = NULL;

        if (streq_ptr(*p, s))
                return 0;
        if (s) {
                n = strdup(s);
                if (!n)
                        return -ENOMEM;
        }
        free(*p);
        *p = n;
        return 1;
}

/* ---- argument checks ---- */

/* Names travel into logs, kegnet frames and object paths: keep them short and printable. */
static bool name_is_valid(const char *s) {
        return string_is_name(s, NAME_MAX_LEN + 1);
}

/* "<controller>.<port>" */
static bool meter_name_is_valid(const char *s) {
        const char *dot;

        if (!name_is_valid(s))
                return false;
        dot = strchr(s, '.');
        return dot && dot != s && dot[1] != '\0';
}

/* "<controller>.relay<N>": the kegboard daemon of <controller> maps it to set_output id N. */
static bool relay_name_is_valid(const char *s) {
        const char *dot, *num;
        size_t digits;

        if (!name_is_valid(s))
                return false;
        dot = strchr(s, '.');
        if (!dot || dot == s)
                return false;
        num = startswith(dot + 1, "relay");
        if (!num)
                return false;
        digits = strspn(num, "0123456789");
        return digits >= 1 && digits <= 3 && num[digits] == '\0';
}

static int reply_manager_error(sd_bus_error *error, int r, const char *what) {
        if (r == -ESHUTDOWN)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "kegbot_core is shutting down");
        return sd_bus_error_set_errnof(error, r, "%s failed: %s", what, strerror(-r));
}

/* ---- meters ---- */

static MeterObj *meter_obj_free(MeterObj *mo) {
        if (!mo)
                return NULL;
        sd_event_source_disable_unref(mo->emit_timer);
        free(mo->meter);
        free(mo->tap_path);
        free(mo->username);
        free(mo->auth_device);
        free(mo->relay_name);
        free(mo->grant_id);
        free(mo->flow_path);
        free(mo);
        return NULL;
}

static MeterObj *meter_find(Bus *b, const char *meter) {
        for (size_t i = 0; i < b->n_meters; i++)
                if (streq(b->meters[i]->meter, meter))
                        return b->meters[i];
        return NULL;
}

static MeterObj *meter_get(Bus *b, const char *meter) {
        MeterObj *mo = meter_find(b, meter);

        if (mo)
                return mo;

        MeterObj **a = realloc(b->meters, (b->n_meters + 1) * sizeof(MeterObj *));
        if (!a)
                return NULL;
        b->meters = a;

        mo = calloc(1, sizeof(MeterObj));
        if (!mo)
                return NULL;
        mo->bus = b;
        mo->meter = strdup(meter);
        if (!mo->meter || sd_bus_path_encode(TAP_PREFIX, meter, &mo->tap_path) < 0)
                return meter_obj_free(mo);
        b->meters[b->n_meters++] = mo;
        return mo;
}

/* A meter that is neither a tap nor pouring has nothing left to show. */
static void meter_gc(Bus *b, MeterObj *mo) {
        if (mo->has_tap || mo->flow_path)
                return;
        for (size_t i = 0; i < b->n_meters; i++)
                if (b->meters[i] == mo) {
                        memmove(&b->meters[i], &b->meters[i + 1], (b->n_meters - i - 1) * sizeof(MeterObj *));
                        b->n_meters--;
                        break;
                }
        meter_obj_free(mo);
}

static bool relay_enabled(Bus *b, const char *relay) {
        if (isempty(relay))
                return false;
        for (size_t i = 0; i < b->n_relays; i++)
                if (streq(b->relays[i].name, relay))
                        return b->relays[i].enabled;
        return false;
}

/* ---- emitting ---- */

static void emit_properties(Bus *b, const char *path, const char *iface, char **names) {
        int r;

        if (!b->ready || !path)
                return;
        r = sd_bus_emit_properties_changed_strv(b->bus, path, iface, names);
        if (r < 0)
                log_debug_errno(r, "Cannot emit PropertiesChanged on %s: %m", path);
}

static void emit_object_added(Bus *b, const char *path) {
        int r;

        if (!b->ready || !path)
                return;
        r = sd_bus_emit_object_added(b->bus, path);
        if (r < 0)
                log_debug_errno(r, "Cannot emit InterfacesAdded for %s: %m", path);
}

static void emit_object_removed(Bus *b, const char *path) {
        int r;

        if (!b->ready || !path)
                return;
        r = sd_bus_emit_object_removed(b->bus, path);
        if (r < 0)
                log_debug_errno(r, "Cannot emit InterfacesRemoved for %s: %m", path);
}

static void meter_flush(MeterObj *mo) {
        static char *tap_props[] = { "TotalTicks", "FlowId", "FlowState", "FlowTicks", "FlowVolumeMl",
                                     "FlowUsername", "FlowFlags", "GhostTicks", "GhostVolumeMl", "CalibrationTicks",
                                     NULL };
        static char *flow_props[] = { "State", "Username", "AuthDevice", "Ticks", "VolumeMl", "LastActivity",
                                      "RelayName", "MaxIdle", "Flags", "GrantId", NULL };
        Bus *b = mo->bus;

        if (!mo->dirty)
                return;
        mo->dirty = false;
        mo->last_emit = bus_now(b, CLOCK_MONOTONIC);
        if (mo->emit_timer)
                (void) sd_event_source_set_enabled(mo->emit_timer, SD_EVENT_OFF);
        if (mo->has_tap)
                emit_properties(b, mo->tap_path, TAP_IFACE, tap_props);
        if (mo->flow_path)
                emit_properties(b, mo->flow_path, FLOW_IFACE, flow_props);
}

static int on_emit_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MeterObj *mo = userdata;

        meter_flush(mo);
        meter_gc(mo->bus, mo);
        return 0;
}

/* Coalesces a tap's pour values: at once if the last emission is at least EMIT_INTERVAL_USEC old,
 * else when it will be. Whatever is pending when the timer fires is what goes out, so the final
 * values of a pour always do. */
static void meter_mark_dirty(MeterObj *mo) {
        Bus *b = mo->bus;
        uint64_t now = bus_now(b, CLOCK_MONOTONIC), due;
        int r;

        mo->dirty = true;
        if (mo->last_emit == 0 || now >= mo->last_emit + EMIT_INTERVAL_USEC) {
                meter_flush(mo);
                return;
        }

        due = mo->last_emit + EMIT_INTERVAL_USEC;
        if (!mo->emit_timer) {
                r = event_timer_arm(b->event, &mo->emit_timer, due, USEC_PER_MSEC, on_emit_timer, mo);
                if (r < 0) {
                        /* Better a burst than a lost final value. */
                        meter_flush(mo);
                        return;
                }
                (void) sd_event_source_set_description(mo->emit_timer, "dbus-coalesce");
                return;
        }
        if (event_timer_set(mo->emit_timer, due) < 0)
                meter_flush(mo);
}

/* ---- Manager object ---- */

static const char *shown_backend_state(Bus *b) {
        /* The worst of the legacy state and every event device's (kegboard-event-protocol.md 12). */
        static const char *const names[] = { "online", "offline", "unauthorized" };
        int worst = -1;

        if (b->backend) {
                BackendState s = backend_get_state(b->backend);
                worst = s == BACKEND_UNAUTHORIZED ? 2 : s == BACKEND_OFFLINE ? 1 : 0;
        }
        if (b->event_backend)
                worst = MAX(worst, event_backend_worst_state(b->event_backend));
        if (worst >= 0)
                return names[worst];
        return manager_is_standalone(b->manager) ? "standalone" : "offline";
}

static const char *shown_spool_state(Bus *b) {
        /* Drinks waiting in memory to be written (a full disk) are not durable, in either mode; nor
         * are event-protocol events held in memory (kegboard-event-protocol.md section 5.0). */
        if (manager_n_waiting_drinks(b->manager) > 0 || event_backend_n_held_events(b->event_backend) > 0)
                return "degraded";
        return manager_is_standalone(b->manager) ? "standalone" : "ok";
}

static const char *shown_disk_state(Bus *b) {
        return manager_disk_state_to_string(manager_disk_state(b->manager));
}

static uint32_t shown_pending(Bus *b) {
        size_t n = manager_n_waiting_drinks(b->manager);

        if (b->backend && !b->event_backend)
                n += backend_n_pending(b->backend);
        else if (manager_get_drink_sink(b->manager))
                n += drink_sink_n_pending(manager_get_drink_sink(b->manager));
        return (uint32_t) MIN(n, (size_t) UINT32_MAX);
}

static uint32_t shown_failed(Bus *b) {
        size_t n = 0;

        if (b->backend)
                n = backend_n_failed(b->backend);
        if (b->event_backend)
                n += event_backend_n_failed_pours(b->event_backend);
        return (uint32_t) MIN(n, (size_t) UINT32_MAX);
}

static uint64_t shown_last_sync(Bus *b) {
        if (b->backend)
                return backend_last_sync(b->backend);
        return b->last_sync;
}

static void manager_props_remember(Bus *b) {
        b->emitted_state = shown_backend_state(b);
        b->emitted_spool = shown_spool_state(b);
        b->emitted_disk = shown_disk_state(b);
        b->emitted_pending = shown_pending(b);
        b->emitted_failed = shown_failed(b);
        b->emitted_last_sync = shown_last_sync(b);
}

static void manager_props_refresh(Bus *b) {
        char *changed[7];
        size_t n = 0;

        if (!streq_ptr(shown_backend_state(b), b->emitted_state))
                changed[n++] = (char *) "BackendState";
        if (!streq_ptr(shown_spool_state(b), b->emitted_spool))
                changed[n++] = (char *) "SpoolState";
        if (!streq_ptr(shown_disk_state(b), b->emitted_disk))
                changed[n++] = (char *) "DiskState";
        if (shown_pending(b) != b->emitted_pending)
                changed[n++] = (char *) "PendingDrinks";
        if (shown_failed(b) != b->emitted_failed)
                changed[n++] = (char *) "FailedDrinks";
        if (shown_last_sync(b) != b->emitted_last_sync)
                changed[n++] = (char *) "LastSync";
        changed[n] = NULL;
        if (n == 0)
                return;
        manager_props_remember(b);
        emit_properties(b, BUS_ROOT_PATH, MANAGER_IFACE, changed);
}

void bus_backend_changed(Bus *b) {
        if (b)
                manager_props_refresh(b);
}

static int manager_property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;

        if (streq(property, "Version"))
                return sd_bus_message_append(reply, "s", KEGBOT_VERSION);
        if (streq(property, "Mode"))
                return sd_bus_message_append(reply, "s", manager_is_standalone(b->manager) ? "standalone" : "server");
        if (streq(property, "ApiUrl"))
                return sd_bus_message_append(reply, "s", b->api_url);
        if (streq(property, "EventUrl"))
                return sd_bus_message_append(reply, "s", b->event_backend ? event_backend_get_url(b->event_backend) : "");
        if (streq(property, "BackendState"))
                return sd_bus_message_append(reply, "s", shown_backend_state(b));
        if (streq(property, "SpoolState"))
                return sd_bus_message_append(reply, "s", shown_spool_state(b));
        if (streq(property, "DiskState"))
                return sd_bus_message_append(reply, "s", shown_disk_state(b));
        if (streq(property, "PendingDrinks"))
                return sd_bus_message_append(reply, "u", shown_pending(b));
        if (streq(property, "FailedDrinks"))
                return sd_bus_message_append(reply, "u", shown_failed(b));
        if (streq(property, "LastSync"))
                return sd_bus_message_append(reply, "t", shown_last_sync(b));
        if (streq(property, "GhostFilter"))
                return sd_bus_message_append(reply, "s", flow_ghost_mode_to_string(manager_ghost_filter(b->manager)));
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s", property);
}

static bool meter_known(Bus *b, const char *meter) {
        FlowEngine *e = manager_get_engine(b->manager);
        FlowTapInfo t;
        FlowInfo f;

        return flow_engine_get_tap(e, meter, &t) >= 0 || flow_engine_get_flow(e, meter, &f) >= 0;
}

/* A method's meter argument, "<controller>.<port>"; an invalid one is an InvalidArgs error. */
static int read_meter_arg(sd_bus_message *m, sd_bus_error *error, const char **ret) {
        int r;

        r = sd_bus_message_read(m, "s", ret);
        if (r < 0)
                return r;
        if (!meter_name_is_valid(*ret))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid meter name '%s': expected <controller>.<port>", *ret);
        return 0;
}

static int method_start_flow(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        const char *meter;
        FlowTapInfo t;
        int r;

        r = read_meter_arg(m, error, &meter);
        if (r < 0)
                return r;
        /* Standalone mode creates a tap on first sight, as a kegnet FlowRequest does; a server's taps
         * come from the server, so an unknown meter there is a caller's mistake. */
        if (!manager_is_standalone(b->manager) &&
            flow_engine_get_tap(manager_get_engine(b->manager), meter, &t) < 0)
                return sd_bus_error_setf(error, BUS_ERROR_UNKNOWN_METER, "No tap for meter %s", meter);

        log_info("StartFlow(%s) requested over D-Bus", meter);
        r = manager_start_flow(b->manager, meter);
        if (r == -EPERM)
                return sd_bus_error_setf(error, BUS_ERROR_QUARANTINED,
                                         "Tap %s is quarantined (ghost-pour rule G7); ClearQuarantine lifts it", meter);
        if (r == -EBUSY)
                return sd_bus_error_setf(error, BUS_ERROR_BUSY,
                                         "Tap %s is being calibrated; finish or cancel the calibration first", meter);
        if (r < 0)
                return reply_manager_error(error, r, "StartFlow");
        return sd_bus_reply_method_return(m, NULL);
}

static int method_stop_flow(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        const char *meter;
        int r;

        r = read_meter_arg(m, error, &meter);
        if (r < 0)
                return r;
        if (!meter_known(b, meter))
                return sd_bus_error_setf(error, BUS_ERROR_UNKNOWN_METER, "No tap and no flow for meter %s", meter);

        log_info("StopFlow(%s) requested over D-Bus", meter);
        r = manager_stop_flow(b->manager, meter);
        if (r < 0)
                return reply_manager_error(error, r, "StopFlow");
        return sd_bus_reply_method_return(m, NULL);
}

static int token_method(sd_bus_message *m, Bus *b, sd_bus_error *error, bool added) {
        const char *meter, *device, *token;
        FlowTapInfo t;
        int r;

        r = sd_bus_message_read(m, "sss", &meter, &device, &token);
        if (r < 0)
                return r;
        if (!name_is_valid(device))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid auth device '%s': expected e.g. core.rfid", device);
        if (!name_is_valid(token))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        isempty(token) ? "Empty token" : "Invalid token value");
        if (!isempty(meter) && !streq(meter, FLOW_ALL_TAPS)) {
                if (!meter_name_is_valid(meter))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid meter name '%s': expected <controller>.<port>, "
                                                 "\"\" or " FLOW_ALL_TAPS, meter);
                if (flow_engine_get_tap(manager_get_engine(b->manager), meter, &t) < 0)
                        return sd_bus_error_setf(error, BUS_ERROR_UNKNOWN_METER, "No tap for meter %s", meter);
        }

        log_info("%s(%s, %s) requested over D-Bus", added ? "AddAuthToken" : "RemoveAuthToken",
                 isempty(meter) ? FLOW_ALL_TAPS : meter, device);
        r = manager_token_event(b->manager, device, token, meter, added);
        if (r < 0)
                return reply_manager_error(error, r, added ? "AddAuthToken" : "RemoveAuthToken");
        return sd_bus_reply_method_return(m, NULL);
}

static int method_add_auth_token(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return token_method(m, userdata, error, true);
}

static int method_remove_auth_token(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return token_method(m, userdata, error, false);
}

static int method_set_relay(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        const char *relay;
        int enabled, r;

        r = sd_bus_message_read(m, "sb", &relay, &enabled);
        if (r < 0)
                return r;
        if (!relay_name_is_valid(relay))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid relay name '%s': expected <controller>.relay<N>", relay);

        log_info("SetRelay(%s, %s) requested over D-Bus", relay, enabled ? "enabled" : "disabled");
        r = manager_set_relay(b->manager, relay, enabled);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_UNKNOWN_RELAY,
                                         "No such relay %s: it is no tap's relay and no relay0..relay5 of a known controller",
                                         relay);
        if (r < 0)
                return reply_manager_error(error, r, "SetRelay");
        return sd_bus_reply_method_return(m, NULL);
}

/* A method's controller argument: a device name (kegboard-event-protocol.md 2.1), else InvalidArgs. */
static int read_controller_arg(sd_bus_message *m, sd_bus_error *error, const char **ret) {
        int r;

        r = sd_bus_message_read(m, "s", ret);
        if (r < 0)
                return r;
        if (!kbevent_device_name_is_valid(*ret))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "Invalid controller name: 1-64 characters of A-Z a-z 0-9 _ -");
        return 0;
}

/* The result of an operation on an event device, as a reply. */
static int reply_event_device(sd_bus_message *m, sd_bus_error *error, int r, const char *what) {
        if (r == -ENOENT)
                return sd_bus_error_set(error, BUS_ERROR_UNKNOWN_CONTROLLER, "No event device for this controller");
        if (r < 0)
                return reply_manager_error(error, r, what);
        return 0;
}

static int method_reset_pairing(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        const char *controller;
        int r;

        r = read_controller_arg(m, error, &controller);
        if (r < 0)
                return r;
        r = reply_event_device(m, error, b->event_backend ? event_backend_reset_pairing(b->event_backend, controller) :
                               -ENOENT, "ResetPairing");
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, NULL);
}

static int method_retry_failed_events(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        const char *controller;
        unsigned n = 0;
        int r;

        r = read_controller_arg(m, error, &controller);
        if (r < 0)
                return r;
        r = reply_event_device(m, error, b->event_backend ?
                               event_backend_retry_failed_events(b->event_backend, controller, &n) : -ENOENT,
                               "RetryFailedEvents");
        if (r < 0)
                return r;
        manager_props_refresh(b);
        return sd_bus_reply_method_return(m, "u", (uint32_t) n);
}

static int method_sync(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        int r;

        log_info("Sync() requested over D-Bus");
        if (b->event_backend)
                event_backend_kick_all(b->event_backend);
        if (b->backend && !b->event_backend) {
                r = backend_sync(b->backend);
                if (r < 0)
                        return reply_manager_error(error, r, "Sync");
        } else {
                /* The taps file; with both backends its reload also runs the legacy sync (section 1.3). */
                r = manager_reload(b->manager);
                if (r < 0)
                        return sd_bus_error_set_errnof(error, r,
                                                       "Sync failed (%s): the previous taps are kept; "
                                                       "the core's log says why", strerror(-r));
                if (!b->backend)
                        b->last_sync = bus_now(b, CLOCK_REALTIME);
        }
        manager_props_refresh(b);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_clear_quarantine(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        const char *meter;
        int r;

        r = read_meter_arg(m, error, &meter);
        if (r < 0)
                return r;

        log_info("ClearQuarantine(%s) requested over D-Bus", meter);
        r = manager_clear_quarantine(b->manager, meter);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_UNKNOWN_METER, "No tap and no quarantine for meter %s", meter);
        if (r < 0)
                return reply_manager_error(error, r, "ClearQuarantine");
        return sd_bus_reply_method_return(m, NULL);
}

static int append_flags(sd_bus_message *reply, unsigned flags) {
        int r;

        r = sd_bus_message_open_container(reply, 'a', "s");
        if (r < 0)
                return r;
        for (unsigned bit = 1; bit & DRINK_FLAGS_ALL; bit <<= 1)
                if (flags & bit) {
                        r = sd_bus_message_append(reply, "s", drink_flag_to_string(bit));
                        if (r < 0)
                                return r;
                }
        return sd_bus_message_close_container(reply);
}

static int method_retry_failed_drinks(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        size_t n = 0;
        int r;

        if (b->backend) {
                r = backend_retry_failed(b->backend, &n);
                if (r < 0)
                        return reply_manager_error(error, r, "RetryFailedDrinks");
                log_info("RetryFailedDrinks() over D-Bus: %zu drinks re-queued", n);
        }
        if (b->event_backend) {
                unsigned k = 0;
                r = event_backend_retry_failed_pours(b->event_backend, &k);
                if (r < 0)
                        return reply_manager_error(error, r, "RetryFailedDrinks");
                log_info("RetryFailedDrinks() over D-Bus: %u pour events re-queued", k);
                n += k;
        }
        manager_props_refresh(b);
        return sd_bus_reply_method_return(m, "u", (uint32_t) MIN(n, (size_t) UINT32_MAX));
}

static int method_fail_drink(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        const char *uuid_arg;
        char uuid[UUID_STRING_MAX];
        int r;

        r = sd_bus_message_read(m, "s", &uuid_arg);
        if (r < 0)
                return r;
        /* Either case names the same drink (util-uuid.h); replies and logs use the lowercase spelling. */
        if (uuid_normalize(uuid_arg, uuid) < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid drink UUID '%s'", uuid_arg);
        if (!b->backend && !b->event_backend)
                return sd_bus_error_set(error, BUS_ERROR_NOT_SUPPORTED,
                                        "There is no drink queue in standalone mode");

        r = b->event_backend ? event_backend_fail_pour(b->event_backend, uuid) : -ENOENT;
        if (r == -ENOENT && b->backend)
                r = backend_fail_drink(b->backend, uuid);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_UNKNOWN_DRINK, "Drink %s is not queued", uuid);
        if (r < 0)
                return reply_manager_error(error, r, "FailDrink");
        log_info("FailDrink(%s) over D-Bus: moved to failed/", uuid);
        manager_props_refresh(b);
        return sd_bus_reply_method_return(m, NULL);
}

/* Opens the {sv} entry 'key' of an a{sv} and its variant of 'type'; entry_close() closes both. */
static int entry_open(sd_bus_message *reply, const char *key, const char *type) {
        int r;

        r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "s", key);
        if (r < 0)
                return r;
        return sd_bus_message_open_container(reply, 'v', type);
}

static int entry_close(sd_bus_message *reply) {
        int r;

        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int append_entry(sd_bus_message *reply, const char *key, const char *type, ...) {
        va_list ap;
        int r;

        r = entry_open(reply, key, type);
        if (r < 0)
                return r;
        va_start(ap, type);
        r = sd_bus_message_appendv(reply, type, ap);
        va_end(ap);
        if (r < 0)
                return r;
        return entry_close(reply);
}

/* One drink of ListDrinks(); backend and controller only when an event backend runs (the Kegboard
 * Event Protocol's additions, where seq is the event id of an event pour). */
static int list_drink_append(sd_bus_message *reply, const Drink *d, uint64_t seq, const char *backend,
                             const char *controller) {
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        if (backend)
                if ((r = append_entry(reply, "backend", "s", backend)) < 0 ||
                    (r = append_entry(reply, "controller", "s", controller ?: "")) < 0)
                        return r;
        if ((r = append_entry(reply, "uuid", "s", d->uuid)) < 0 ||
            (r = append_entry(reply, "seq", "t", seq)) < 0 ||
            (r = append_entry(reply, "flow_id", "t", d->flow_id)) < 0 ||
            (r = append_entry(reply, "meter_name", "s", d->meter_name ?: "")) < 0 ||
            (r = append_entry(reply, "username", "s", d->username ?: "")) < 0 ||
            (r = append_entry(reply, "ticks", "t", d->ticks)) < 0 ||
            (r = append_entry(reply, "volume_ml", "d", d->volume_known ? d->volume_ml : -1.0)) < 0 ||
            (r = append_entry(reply, "start_time", "t", d->start_realtime)) < 0 ||
            (r = append_entry(reply, "pour_time", "t", d->pour_realtime)) < 0 ||
            (r = append_entry(reply, "duration", "t", d->duration_sec)) < 0)
                return r;
        r = entry_open(reply, "flags", "as");
        if (r < 0)
                return r;
        r = append_flags(reply, d->flags);
        if (r < 0)
                return r;
        r = entry_close(reply);
        if (r < 0)
                return r;
        if (d->has_failure)
                if ((r = append_entry(reply, "failure_time", "t", d->failure.time_realtime)) < 0 ||
                    (r = append_entry(reply, "http_status", "i", (int32_t) d->failure.http_status)) < 0 ||
                    (r = append_entry(reply, "failure_code", "s", d->failure.code ?: "")) < 0 ||
                    (r = append_entry(reply, "failure_message", "s", d->failure.message ?: "")) < 0)
                        return r;
        return sd_bus_message_close_container(reply);
}

typedef struct ListDrinks {
        sd_bus_message *reply;
        bool event;                     /* an event backend runs: name each drink's backend */
} ListDrinks;

static int list_drink_cb(const Drink *d, void *userdata) {
        ListDrinks *l = userdata;
        char controller[256] = "";

        if (l->event) {
                const char *dot = d->meter_name ? strchr(d->meter_name, '.') : NULL;
                if (dot)
                        snprintf(controller, sizeof controller, "%.*s", (int) (dot - d->meter_name), d->meter_name);
        }
        return list_drink_append(l->reply, d, d->seq, l->event ? "legacy" : NULL, controller);
}

static int list_event_pour_cb(const Drink *d, const char *controller, uint64_t id, void *userdata) {
        ListDrinks *l = userdata;
        return list_drink_append(l->reply, d, id, "event", controller);
}

static int method_list_drinks(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Bus *b = userdata;
        const char *which;
        SpoolArea area;
        int r;

        r = sd_bus_message_read(m, "s", &which);
        if (r < 0)
                return r;
        if (streq(which, "queued"))
                area = SPOOL_QUEUED;
        else if (streq(which, "failed"))
                area = SPOOL_FAILED;
        else
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid list '%s': expected \"queued\" or \"failed\"", which);

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "a{sv}");
        if (r < 0)
                return r;
        ListDrinks l = { .reply = reply, .event = b->event_backend };
        if (b->backend) {
                r = backend_list_drinks(b->backend, area, list_drink_cb, &l);
                if (r < 0)
                        return reply_manager_error(error, r, "ListDrinks");
        }
        if (b->event_backend) {
                r = event_backend_list_pours(b->event_backend, area == SPOOL_FAILED, list_event_pour_cb, &l);
                if (r < 0)
                        return reply_manager_error(error, r, "ListDrinks");
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* ---- calibration (calibration.md section 5) ---- */

static int calibration_error(sd_bus_error *error, int r, const char *message) {
        const char *name;

        switch (r) {
        case -ESHUTDOWN:
                name = BUS_ERROR_SHUTTING_DOWN;
                break;
        case -ENOENT:
                name = BUS_ERROR_UNKNOWN_METER;
                break;
        case -EPERM:
                name = BUS_ERROR_QUARANTINED;
                break;
        case -EBUSY:
                name = BUS_ERROR_BUSY;
                break;
        case -ESRCH:
                name = BUS_ERROR_NOT_CALIBRATING;
                break;
        case -EDOM:
                name = BUS_ERROR_CALIBRATION_REJECTED;
                break;
        case -EREMOTEIO:
                name = BUS_ERROR_SERVER_ERROR;
                break;
        case -EINVAL:
                name = SD_BUS_ERROR_INVALID_ARGS;
                break;
        default:
                return sd_bus_error_set_errnof(error, r, "%s", message ?: strerror(-r));
        }
        return sd_bus_error_set(error, name, message ?: strerror(-r));
}

static int append_result(sd_bus_message *reply, const CalibrationResult *res) {
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        if ((r = append_entry(reply, "meter", "s", res->meter)) < 0 ||
            (r = append_entry(reply, "ticks", "t", res->ticks)) < 0 ||
            (r = append_entry(reply, "volume_ml", "d", res->volume_ml)) < 0 ||
            (r = append_entry(reply, "old_ml_per_tick", "d", res->old_ml_per_tick)) < 0 ||
            (r = append_entry(reply, "new_ml_per_tick", "d", res->new_ml_per_tick)) < 0 ||
            (r = append_entry(reply, "change_percent", "d", res->change_percent)) < 0 ||
            (r = append_entry(reply, "old_volume_ml", "d", res->old_volume_ml)) < 0 ||
            (r = append_entry(reply, "storage", "s", res->storage)) < 0 ||
            (r = append_entry(reply, "location", "s", res->location)) < 0 ||
            (r = append_entry(reply, "message", "s", res->message)) < 0)
                return r;
        r = entry_open(reply, "warnings", "as");
        if (r < 0)
                return r;
        r = sd_bus_message_append_strv(reply, res->warnings);
        if (r < 0)
                return r;
        r = entry_close(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

/* The answer to a finish or set, now or once the value is stored. */
static void on_calibration_reply(int error, const char *message, const CalibrationResult *res, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = userdata, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        if (error < 0) {
                (void) calibration_error(&e, error, message);
                r = sd_bus_reply_method_error(call, &e);
        } else {
                r = sd_bus_message_new_method_return(call, &reply);
                if (r >= 0)
                        r = append_result(reply, res);
                if (r >= 0)
                        r = sd_bus_send(NULL, reply, NULL);
        }
        if (r < 0)
                log_debug_errno(r, "Cannot answer a calibration call: %m");
}

/* The prologue of every calibration method: calibration available, then the meter argument. */
static int calibration_call_begin(sd_bus_message *m, Bus *b, sd_bus_error *error, Calibrations **ret,
                                  const char **ret_meter) {
        if (!b->calibrations) {
                (void) sd_bus_error_set(error, BUS_ERROR_NOT_SUPPORTED, "Calibration is not available");
                return -EOPNOTSUPP;
        }
        *ret = b->calibrations;
        return read_meter_arg(m, error, ret_meter);
}

static int method_start_calibration(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(freep) char *message = NULL;
        Bus *b = userdata;
        Calibrations *c = NULL;
        const char *meter;
        int r;

        r = calibration_call_begin(m, b, error, &c, &meter);
        if (r < 0)
                return r;
        log_info("StartCalibration(%s) requested over D-Bus", meter);
        r = calibrations_start(c, meter, &message);
        if (r < 0)
                return calibration_error(error, r, message);
        return sd_bus_reply_method_return(m, NULL);
}

/* Both finishes: the measured volume, or a weight and its specific gravity. */
static int finish_calibration(sd_bus_message *m, Bus *b, bool by_weight, sd_bus_error *error) {
        _cleanup_(freep) char *message = NULL;
        Calibrations *c = NULL;
        const char *meter;
        double v, sg = 0;
        int r;

        r = calibration_call_begin(m, b, error, &c, &meter);
        if (r < 0)
                return r;
        r = by_weight ? sd_bus_message_read(m, "dd", &v, &sg) : sd_bus_message_read(m, "d", &v);
        if (r < 0)
                return r;
        if (!calibration_volume_is_valid(v))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid %s %g: expected more than 0 and at "
                                         "most %g", by_weight ? "grams" : "measured_ml", v, CALIBRATION_VOLUME_MAX_ML);
        if (!calibration_sg_is_valid(sg))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid specific_gravity %g: expected 0 "
                                         "(1.000) or %g to %g", sg, CALIBRATION_SG_MIN, CALIBRATION_SG_MAX);

        log_info("%s(%s, %g%s) requested over D-Bus", by_weight ? "FinishCalibrationByWeight" : "FinishCalibration",
                 meter, v, by_weight ? " g" : " mL");
        r = calibrations_finish(c, meter, by_weight ? calibration_weight_to_ml(v, sg) : v, on_calibration_reply,
                                sd_bus_message_ref(m), &message);
        if (r < 0) {
                sd_bus_message_unref(m);
                return calibration_error(error, r, message);
        }
        return 1;
}

static int method_finish_calibration(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return finish_calibration(m, userdata, false, error);
}

static int method_finish_calibration_by_weight(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return finish_calibration(m, userdata, true, error);
}

static int method_cancel_calibration(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(freep) char *message = NULL;
        Bus *b = userdata;
        Calibrations *c = NULL;
        const char *meter;
        uint64_t ticks = 0;
        int r;

        r = calibration_call_begin(m, b, error, &c, &meter);
        if (r < 0)
                return r;
        log_info("CancelCalibration(%s) requested over D-Bus", meter);
        r = calibrations_cancel(c, meter, &ticks, &message);
        if (r < 0)
                return calibration_error(error, r, message);
        return sd_bus_reply_method_return(m, "t", ticks);
}

static int method_set_calibration(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(freep) char *message = NULL;
        Bus *b = userdata;
        Calibrations *c = NULL;
        const char *meter;
        double v;
        int r;

        r = calibration_call_begin(m, b, error, &c, &meter);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "d", &v);
        if (r < 0)
                return r;
        if (!calibration_ml_per_tick_is_valid(v))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid ml_per_tick %g: expected %g to %g",
                                         v, CALIBRATION_ML_PER_TICK_MIN, CALIBRATION_ML_PER_TICK_MAX);
        log_info("SetCalibration(%s, %g) requested over D-Bus", meter, v);
        r = calibrations_set(c, meter, v, on_calibration_reply, sd_bus_message_ref(m), &message);
        if (r < 0) {
                sd_bus_message_unref(m);
                return calibration_error(error, r, message);
        }
        return 1;
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Mode", "s", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ApiUrl", "s", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("EventUrl", "s", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("BackendState", "s", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SpoolState", "s", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DiskState", "s", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PendingDrinks", "u", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("FailedDrinks", "u", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastSync", "t", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("GhostFilter", "s", manager_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        /* Access is the bus policy's job (root and group kegbot-admin), not a capability check here. */
        SD_BUS_METHOD_WITH_ARGS("StartFlow", SD_BUS_ARGS("s", meter), SD_BUS_NO_RESULT,
                                method_start_flow, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StopFlow", SD_BUS_ARGS("s", meter), SD_BUS_NO_RESULT,
                                method_stop_flow, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("AddAuthToken", SD_BUS_ARGS("s", meter, "s", device, "s", token), SD_BUS_NO_RESULT,
                                method_add_auth_token, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveAuthToken", SD_BUS_ARGS("s", meter, "s", device, "s", token),
                                SD_BUS_NO_RESULT, method_remove_auth_token, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetRelay", SD_BUS_ARGS("s", relay, "b", enabled), SD_BUS_NO_RESULT,
                                method_set_relay, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Sync", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_sync, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RetryFailedDrinks", SD_BUS_NO_ARGS, SD_BUS_RESULT("u", requeued),
                                method_retry_failed_drinks, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("FailDrink", SD_BUS_ARGS("s", uuid), SD_BUS_NO_RESULT, method_fail_drink,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListDrinks", SD_BUS_ARGS("s", which), SD_BUS_RESULT("aa{sv}", drinks),
                                method_list_drinks, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ClearQuarantine", SD_BUS_ARGS("s", meter), SD_BUS_NO_RESULT,
                                method_clear_quarantine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ResetPairing", SD_BUS_ARGS("s", controller), SD_BUS_NO_RESULT,
                                method_reset_pairing, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RetryFailedEvents", SD_BUS_ARGS("s", controller), SD_BUS_RESULT("u", requeued),
                                method_retry_failed_events, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StartCalibration", SD_BUS_ARGS("s", meter), SD_BUS_NO_RESULT,
                                method_start_calibration, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("FinishCalibration", SD_BUS_ARGS("s", meter, "d", measured_ml),
                                SD_BUS_RESULT("a{sv}", result), method_finish_calibration, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("FinishCalibrationByWeight",
                                SD_BUS_ARGS("s", meter, "d", grams, "d", specific_gravity),
                                SD_BUS_RESULT("a{sv}", result), method_finish_calibration_by_weight,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CancelCalibration", SD_BUS_ARGS("s", meter), SD_BUS_RESULT("t", ticks),
                                method_cancel_calibration, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetCalibration", SD_BUS_ARGS("s", meter, "d", ml_per_tick),
                                SD_BUS_RESULT("a{sv}", result), method_set_calibration, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("FlowUpdated",
                                SD_BUS_ARGS("t", flow_id, "s", meter, "s", state, "s", username, "t", ticks,
                                            "d", volume_ml, "t", start_time, "t", last_activity_time),
                                0),
        SD_BUS_SIGNAL_WITH_ARGS("DrinkRecorded",
                                SD_BUS_ARGS("s", uuid, "x", drink_id, "t", flow_id, "s", meter, "s", username,
                                            "t", ticks, "d", volume_ml, "t", start_time, "t", pour_time,
                                            "t", duration),
                                0),
        SD_BUS_SIGNAL_WITH_ARGS("ThermoReading", SD_BUS_ARGS("s", sensor, "d", temperature_c, "t", time), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TokenAuthenticated", SD_BUS_ARGS("s", device, "s", token, "s", username), 0),
        SD_BUS_SIGNAL_WITH_ARGS("GrantStarted",
                                SD_BUS_ARGS("s", controller, "s", grant_id, "au", meters, "au", relays,
                                            "s", auth_device, "s", token), 0),
        SD_BUS_SIGNAL_WITH_ARGS("GrantEnded",
                                SD_BUS_ARGS("s", controller, "s", grant_id, "s", reason, "d", volume_ml,
                                            "t", duration_ms), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TokenDenied",
                                SD_BUS_ARGS("s", controller, "s", auth_device, "s", token, "s", reason), 0),
        SD_BUS_SIGNAL_WITH_ARGS("GhostFlow",
                                SD_BUS_ARGS("s", meter, "s", rule, "t", ticks, "d", volume_ml, "t", start_time,
                                            "t", end_time, "t", flow_id, "s", tick_series, "s", mode),
                                0),
        SD_BUS_SIGNAL_WITH_ARGS("PourFlagged", SD_BUS_ARGS("t", flow_id, "s", meter, "s", flag, "s", mode), 0),
        SD_BUS_SIGNAL_WITH_ARGS("CalibrationEnded",
                                SD_BUS_ARGS("s", meter, "s", reason, "t", ticks, "d", old_ml_per_tick,
                                            "d", new_ml_per_tick),
                                0),
        SD_BUS_VTABLE_END
};

/* ---- Tap objects ---- */

static int tap_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                    sd_bus_error *error) {
        _cleanup_(freep) char *meter = NULL;
        MeterObj *mo;
        int r;

        r = sd_bus_path_decode(path, TAP_PREFIX, &meter);
        if (r <= 0)
                return 0;
        mo = meter_find(userdata, meter);
        if (!mo || !mo->has_tap)
                return 0;
        *found = mo;
        return 1;
}

/* The object paths of the meters for which path_of() gives one. */
static int meter_paths(Bus *b, const char *(*path_of)(const MeterObj *mo), char ***ret) {
        char **l;
        size_t n = 0;

        l = calloc(b->n_meters + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < b->n_meters; i++) {
                const char *path = path_of(b->meters[i]);
                if (!path)
                        continue;
                l[n] = strdup(path);
                if (!l[n]) {
                        strv_free(l);
                        return -ENOMEM;
                }
                n++;
        }
        *ret = l;
        return 0;
}

static const char *tap_path_of(const MeterObj *mo) {
        return mo->has_tap ? mo->tap_path : NULL;
}

static int tap_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes, sd_bus_error *error) {
        return meter_paths(userdata, tap_path_of, nodes);
}

static const char *flow_state_name(const MeterObj *mo) {
        return mo->has_flow ? flow_state_to_string(mo->flow_state) : "";
}

static int tap_property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        MeterObj *mo = userdata;
        Bus *b = mo->bus;
        FlowTapInfo t = {};

        if (flow_engine_get_tap(manager_get_engine(b->manager), mo->meter, &t) < 0)
                t = (FlowTapInfo) { .meter_name = mo->meter, .name = mo->meter, .relay_name = "" };

        if (streq(property, "MeterName"))
                return sd_bus_message_append(reply, "s", mo->meter);
        if (streq(property, "Name"))
                return sd_bus_message_append(reply, "s", t.name ?: mo->meter);
        if (streq(property, "MlPerTick"))
                return sd_bus_message_append(reply, "d", t.ml_per_tick);
        if (streq(property, "RelayName"))
                return sd_bus_message_append(reply, "s", t.relay_name ?: "");
        if (streq(property, "RelayEnabled"))
                return sd_bus_message_append(reply, "b", (int) relay_enabled(b, t.relay_name));
        if (streq(property, "AutoCreated"))
                return sd_bus_message_append(reply, "b", (int) t.auto_created);
        if (streq(property, "TotalTicks"))
                return sd_bus_message_append(reply, "t", t.total_ticks);
        if (streq(property, "FlowId"))
                return sd_bus_message_append(reply, "t", mo->has_flow ? mo->flow_id : (uint64_t) 0);
        if (streq(property, "FlowState"))
                return sd_bus_message_append(reply, "s", flow_state_name(mo));
        if (streq(property, "FlowTicks"))
                return sd_bus_message_append(reply, "t", mo->has_flow ? mo->ticks : (uint64_t) 0);
        if (streq(property, "FlowVolumeMl"))
                return sd_bus_message_append(reply, "d",
                                             !mo->has_flow ? 0.0 : mo->volume_known ? mo->volume_ml : -1.0);
        if (streq(property, "FlowUsername"))
                return sd_bus_message_append(reply, "s", mo->has_flow ? mo->username ?: "" : "");
        if (streq(property, "FlowFlags"))
                return append_flags(reply, mo->has_flow ? mo->flow_flags : 0);
        if (streq(property, "GhostFilter"))
                return sd_bus_message_append(reply, "s", flow_ghost_mode_to_string(t.ghost_filter));
        if (streq(property, "GhostTicks"))
                return sd_bus_message_append(reply, "t", t.ghost_ticks);
        if (streq(property, "GhostVolumeMl"))
                return sd_bus_message_append(reply, "d", t.ghost_volume_ml);
        if (streq(property, "Quarantined"))
                return sd_bus_message_append(reply, "b", (int) t.quarantined);
        if (streq(property, "QuarantinedSince"))
                return sd_bus_message_append(reply, "t", t.quarantined_since);
        if (streq(property, "CalibrationState"))
                return sd_bus_message_append(reply, "s", mo->cal_running ? "running" : "");
        if (streq(property, "CalibrationTicks"))
                return sd_bus_message_append(reply, "t", mo->cal_running ? mo->cal_ticks : (uint64_t) 0);
        if (streq(property, "CalibrationStarted"))
                return sd_bus_message_append(reply, "t", mo->cal_running ? mo->cal_started : (uint64_t) 0);
        if (streq(property, "CalibrationDeadline"))
                return sd_bus_message_append(reply, "t", mo->cal_running ? mo->cal_deadline : (uint64_t) 0);
        if (streq(property, "CalibrationSource"))
                return sd_bus_message_append(reply, "s", tap_calibration_source_to_string(
                                tap_registry_calibration_source(manager_get_taps(b->manager), mo->meter)));
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s", property);
}

#define TAP_PROPERTY(name, sig) \
        SD_BUS_PROPERTY(name, sig, tap_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)

static const sd_bus_vtable tap_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("MeterName", "s", tap_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        TAP_PROPERTY("Name", "s"),
        TAP_PROPERTY("MlPerTick", "d"),
        TAP_PROPERTY("RelayName", "s"),
        TAP_PROPERTY("RelayEnabled", "b"),
        TAP_PROPERTY("AutoCreated", "b"),
        TAP_PROPERTY("TotalTicks", "t"),
        TAP_PROPERTY("FlowId", "t"),
        TAP_PROPERTY("FlowState", "s"),
        TAP_PROPERTY("FlowTicks", "t"),
        TAP_PROPERTY("FlowVolumeMl", "d"),
        TAP_PROPERTY("FlowUsername", "s"),
        TAP_PROPERTY("GhostFilter", "s"),
        TAP_PROPERTY("GhostTicks", "t"),
        TAP_PROPERTY("GhostVolumeMl", "d"),
        TAP_PROPERTY("Quarantined", "b"),
        TAP_PROPERTY("QuarantinedSince", "t"),
        TAP_PROPERTY("FlowFlags", "as"),
        TAP_PROPERTY("CalibrationState", "s"),
        TAP_PROPERTY("CalibrationTicks", "t"),
        TAP_PROPERTY("CalibrationStarted", "t"),
        TAP_PROPERTY("CalibrationDeadline", "t"),
        TAP_PROPERTY("CalibrationSource", "s"),
        SD_BUS_VTABLE_END
};

/* ---- Flow objects ---- */

static int flow_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                     sd_bus_error *error) {
        Bus *b = userdata;

        if (!startswith(path, FLOW_PREFIX "/"))
                return 0;
        for (size_t i = 0; i < b->n_meters; i++)
                if (b->meters[i]->flow_path && streq(b->meters[i]->flow_path, path)) {
                        *found = b->meters[i];
                        return 1;
                }
        return 0;
}

static const char *flow_path_of(const MeterObj *mo) {
        return mo->flow_path;
}

static int flow_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes, sd_bus_error *error) {
        return meter_paths(userdata, flow_path_of, nodes);
}

static int flow_property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        MeterObj *mo = userdata;

        if (streq(property, "FlowId"))
                return sd_bus_message_append(reply, "t", mo->flow_id);
        if (streq(property, "MeterName"))
                return sd_bus_message_append(reply, "s", mo->meter);
        if (streq(property, "State"))
                return sd_bus_message_append(reply, "s", flow_state_name(mo));
        if (streq(property, "Username"))
                return sd_bus_message_append(reply, "s", mo->username ?: "");
        if (streq(property, "AuthDevice"))
                return sd_bus_message_append(reply, "s", mo->auth_device ?: "");
        if (streq(property, "Ticks"))
                return sd_bus_message_append(reply, "t", mo->ticks);
        if (streq(property, "VolumeMl"))
                return sd_bus_message_append(reply, "d", mo->volume_known ? mo->volume_ml : -1.0);
        if (streq(property, "StartTime"))
                return sd_bus_message_append(reply, "t", mo->start_realtime);
        if (streq(property, "LastActivity"))
                return sd_bus_message_append(reply, "t", mo->last_activity_realtime);
        if (streq(property, "RelayName"))
                return sd_bus_message_append(reply, "s", mo->relay_name ?: "");
        if (streq(property, "MaxIdle"))
                return sd_bus_message_append(reply, "t", mo->max_idle_usec);
        if (streq(property, "Flags"))
                return append_flags(reply, mo->flow_flags);
        if (streq(property, "GrantId"))
                return sd_bus_message_append(reply, "s", mo->grant_id ?: "");
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s", property);
}

#define FLOW_PROPERTY(name, sig) \
        SD_BUS_PROPERTY(name, sig, flow_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)

static const sd_bus_vtable flow_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("FlowId", "t", flow_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("MeterName", "s", flow_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        FLOW_PROPERTY("State", "s"),
        FLOW_PROPERTY("Username", "s"),
        FLOW_PROPERTY("AuthDevice", "s"),
        FLOW_PROPERTY("Ticks", "t"),
        FLOW_PROPERTY("VolumeMl", "d"),
        SD_BUS_PROPERTY("StartTime", "t", flow_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        FLOW_PROPERTY("LastActivity", "t"),
        FLOW_PROPERTY("RelayName", "s"),
        FLOW_PROPERTY("MaxIdle", "t"),
        FLOW_PROPERTY("Flags", "as"),
        FLOW_PROPERTY("GrantId", "s"),
        SD_BUS_VTABLE_END
};

/* ---- Controller and ThermoSensor objects ---- */

static int names_enumerate(const char *prefix, char **names, size_t n_names, char ***nodes) {
        char **l = calloc(n_names + 1, sizeof(char *));
        int r;

        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n_names; i++) {
                r = sd_bus_path_encode(prefix, names[i], &l[i]);
                if (r < 0) {
                        strv_free(l);
                        return r;
                }
        }
        *nodes = l;
        return 0;
}

static int controller_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                           sd_bus_error *error) {
        _cleanup_(freep) char *name = NULL;
        Bus *b = userdata;
        const Controller *c;

        if (sd_bus_path_decode(path, CONTROLLER_PREFIX, &name) <= 0)
                return 0;
        if (!strv_contains(b->controllers, name))
                return 0;
        c = manager_find_controller(b->manager, name);
        if (!c && !(b->event_backend && event_backend_device_info(b->event_backend, name, &(EventDeviceInfo) {}) >= 0))
                return 0;
        *found = b;
        return 1;
}

static int controller_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes,
                                sd_bus_error *error) {
        Bus *b = userdata;
        return names_enumerate(CONTROLLER_PREFIX, b->controllers, b->n_controllers, nodes);
}

static int controller_property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        _cleanup_(freep) char *name = NULL;
        Bus *b = userdata;
        const Controller *c;
        EventDeviceInfo ev = {};
        bool event;
        int r;

        r = sd_bus_path_decode(path, CONTROLLER_PREFIX, &name);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        /* An event device may have no announced controller (a tap of the taps file, a spool). */
        c = manager_find_controller(b->manager, name);
        event = b->event_backend && event_backend_device_info(b->event_backend, name, &ev) >= 0;

        if (streq(property, "Name"))
                return sd_bus_message_append(reply, "s", name);
        if (streq(property, "SerialNumber"))
                return sd_bus_message_append(reply, "s", c && c->serial_number ? c->serial_number : "");
        if (streq(property, "FirmwareVersion"))
                return sd_bus_message_append(reply, "u", c && c->has_firmware_version ? c->firmware_version : 0);
        if (streq(property, "Device"))
                return sd_bus_message_append(reply, "s", c && c->device ? c->device : "");
        if (streq(property, "Connected"))
                return sd_bus_message_append(reply, "b", (int) (c && c->connected));
        if (streq(property, "LastSeen"))
                return sd_bus_message_append(reply, "t", c ? c->last_seen_realtime : 0);
        if (streq(property, "Backend"))
                return sd_bus_message_append(reply, "s", b->event_backend &&
                                             event_backend_owns_controller(b->event_backend, name) ? "event" :
                                             b->backend ? "legacy" : "standalone");
        if (streq(property, "EventState"))
                return sd_bus_message_append(reply, "s", event ? event_device_state_to_string(ev.state) : "");
        if (streq(property, "Paired"))
                return sd_bus_message_append(reply, "b", (int) ev.paired);
        if (streq(property, "BootId"))
                return sd_bus_message_append(reply, "s", event ? ev.boot_id : "");
        if (streq(property, "PendingEvents"))
                return sd_bus_message_append(reply, "u", (uint32_t) MIN(ev.pending_events, (size_t) UINT32_MAX));
        if (streq(property, "FailedEvents"))
                return sd_bus_message_append(reply, "u", (uint32_t) MIN(ev.failed_events, (size_t) UINT32_MAX));
        if (streq(property, "LastDelivery"))
                return sd_bus_message_append(reply, "t", ev.last_delivery);
        if (streq(property, "ActiveGrants"))
                return sd_bus_message_append(reply, "u", (uint32_t) MIN(ev.active_grants, (size_t) UINT32_MAX));
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s", property);
}

static const sd_bus_vtable controller_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("SerialNumber", "s", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("FirmwareVersion", "u", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Device", "s", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Connected", "b", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastSeen", "t", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Backend", "s", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("EventState", "s", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Paired", "b", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BootId", "s", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PendingEvents", "u", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("FailedEvents", "u", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastDelivery", "t", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActiveGrants", "u", controller_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

static int sensor_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                       sd_bus_error *error) {
        _cleanup_(freep) char *name = NULL;
        Bus *b = userdata;
        const ThermoSensor *s;

        if (sd_bus_path_decode(path, SENSOR_PREFIX, &name) <= 0)
                return 0;
        if (!strv_contains(b->sensors, name))
                return 0;
        s = thermo_manager_find(manager_get_thermo(b->manager), name);
        if (!s)
                return 0;
        *found = (void *) s;
        return 1;
}

static int sensor_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes, sd_bus_error *error) {
        Bus *b = userdata;
        return names_enumerate(SENSOR_PREFIX, b->sensors, b->n_sensors, nodes);
}

static int sensor_property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        const ThermoSensor *s = userdata;

        if (streq(property, "Name"))
                return sd_bus_message_append(reply, "s", s->name);
        if (streq(property, "TemperatureC"))
                return sd_bus_message_append(reply, "d", s->value);
        if (streq(property, "LastSeen"))
                return sd_bus_message_append(reply, "t", s->last_seen_realtime);
        if (streq(property, "Silent"))
                return sd_bus_message_append(reply, "b", (int) s->silent);
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s", property);
}

static const sd_bus_vtable sensor_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", sensor_property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("TemperatureC", "d", sensor_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastSeen", "t", sensor_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Silent", "b", sensor_property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

/* ---- org.freedesktop.LogControl1 (systemctl service-log-level / service-log-target) ---- */

static const char *const log_level_names[] = {
        [LOG_EMERG] = "emerg",
        [LOG_ALERT] = "alert",
        [LOG_CRIT] = "crit",
        [LOG_ERR] = "err",
        [LOG_WARNING] = "warning",
        [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",
        [LOG_DEBUG] = "debug",
};

static int log_control_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;

        if (streq(property, "LogLevel")) {
                int l = log_get_max_level();
                return sd_bus_message_append(reply, "s",
                                             l >= 0 && (size_t) l < ELEMENTSOF(log_level_names) ?
                                             log_level_names[l] : "info");
        }
        if (streq(property, "LogTarget"))
                return sd_bus_message_append(reply, "s", b->log_target);
        if (streq(property, "SyslogIdentifier"))
                return sd_bus_message_append(reply, "s", program_invocation_short_name);
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "Unknown property %s", property);
}

static int log_control_set(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        const char *s;
        int r;

        r = sd_bus_message_read(value, "s", &s);
        if (r < 0)
                return r;

        if (streq(property, "LogLevel")) {
                for (size_t i = 0; i < ELEMENTSOF(log_level_names); i++)
                        if (streq(s, log_level_names[i])) {
                                log_set_max_level((int) i);
                                log_info("Log level set to %s over D-Bus", s);
                                (void) sd_bus_emit_properties_changed(bus, LOG_CONTROL_PATH, LOG_CONTROL_IFACE,
                                                                      "LogLevel", NULL);
                                return 1;
                        }
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid log level '%s': expected emerg, alert, crit, err, warning, "
                                         "notice, info or debug", s);
        }

        if (streq(property, "LogTarget")) {
                /* Our one output stream is stderr, which under systemd is the journal. */
                if (streq(s, "console") || streq(s, "journal") || streq(s, "auto") ||
                    streq(s, "journal-or-kmsg") || streq(s, "console-prefixed"))
                        log_set_console(true);
                else if (streq(s, "null"))
                        log_set_console(false);
                else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Log target '%s' is not supported: use console, journal, "
                                                 "auto or null", s);
                r = free_and_strdup(&b->log_target, s);
                if (r < 0)
                        return r;
                log_info("Log target set to %s over D-Bus", s);
                (void) sd_bus_emit_properties_changed(bus, LOG_CONTROL_PATH, LOG_CONTROL_IFACE, "LogTarget", NULL);
                return 1;
        }
        return sd_bus_error_setf(error, SD_BUS_ERROR_PROPERTY_READ_ONLY, "Property %s is read-only", property);
}

static const sd_bus_vtable log_control_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_WRITABLE_PROPERTY("LogLevel", "s", log_control_get, log_control_set, 0,
                                 SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE | SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_WRITABLE_PROPERTY("LogTarget", "s", log_control_get, log_control_set, 0,
                                 SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE | SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_PROPERTY("SyslogIdentifier", "s", log_control_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END
};

/* ---- manager observer ---- */

static void on_tap_changed(Manager *m, const char *meter, TapChange change, void *userdata) {
        static char *config_props[] = { "Name", "MlPerTick", "RelayName", "RelayEnabled", "AutoCreated", "GhostFilter",
                                        "CalibrationSource", NULL };
        Bus *b = userdata;
        MeterObj *mo;

        switch (change) {
        case TAP_ADDED:
                mo = meter_get(b, meter);
                if (!mo)
                        return (void) log_error("Out of memory exporting tap %s", meter);
                if (mo->has_tap)
                        return emit_properties(b, mo->tap_path, TAP_IFACE, config_props);
                mo->has_tap = true;
                emit_object_added(b, mo->tap_path);
                break;
        case TAP_UPDATED:
                mo = meter_find(b, meter);
                if (mo && mo->has_tap)
                        emit_properties(b, mo->tap_path, TAP_IFACE, config_props);
                break;
        case TAP_REMOVED:
                mo = meter_find(b, meter);
                if (!mo || !mo->has_tap)
                        break;
                /* While tap_find() still answers for it, so the signal lists its interfaces. */
                emit_object_removed(b, mo->tap_path);
                mo->has_tap = false;
                meter_gc(b, mo);
                break;
        }
}

static void on_flow_updated(Manager *m, const FlowInfo *f, void *userdata) {
        Bus *b = userdata;
        MeterObj *mo;
        bool ended = f->state == FLOW_STATE_COMPLETED;
        int r;

        mo = meter_get(b, f->meter_name);
        if (!mo)
                return (void) log_error("Out of memory tracking the flow on %s", f->meter_name);

        /* The completion of a flow whose drink had to wait for the disk, after a newer flow on the
         * same meter began: only its signal; the tap shows the newer flow. */
        if (ended && mo->has_flow && mo->flow_id != f->flow_id && mo->flow_state != FLOW_STATE_COMPLETED) {
                if (b->ready)
                        (void) sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "FlowUpdated", "tssstdtt",
                                                  f->flow_id, f->meter_name, flow_state_to_string(f->state),
                                                  f->username ?: "", f->ticks, f->volume_known ? f->volume_ml : -1.0,
                                                  f->start_realtime, f->last_activity_realtime);
                return;
        }

        /* A different flow on the same meter: the old one's object goes first. */
        if (mo->flow_path && mo->flow_id != f->flow_id) {
                emit_object_removed(b, mo->flow_path);
                mo->flow_path = mfree(mo->flow_path);
        }

        mo->has_flow = true;
        mo->flow_id = f->flow_id;
        mo->flow_state = f->state;
        mo->ticks = f->ticks;
        mo->volume_known = f->volume_known;
        mo->volume_ml = f->volume_ml;
        mo->start_realtime = f->start_realtime;
        mo->last_activity_realtime = f->last_activity_realtime;
        mo->max_idle_usec = f->max_idle_usec;
        mo->flow_flags = f->flags;
        if (free_and_strdup(&mo->username, f->username) < 0 ||
            free_and_strdup(&mo->auth_device, f->auth_device) < 0 ||
            free_and_strdup(&mo->relay_name, f->relay_name) < 0 ||
            free_and_strdup(&mo->grant_id, event_backend_meter_grant(b->event_backend, f->meter_name)) < 0)
                log_error("Out of memory tracking the flow on %s", f->meter_name);

        if (!ended && !mo->flow_path) {
                r = asprintf(&mo->flow_path, FLOW_PREFIX "/%" PRIu64, f->flow_id);
                if (r < 0)
                        mo->flow_path = NULL;
                else
                        emit_object_added(b, mo->flow_path);
        }

        if (b->ready) {
                r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "FlowUpdated", "tssstdtt",
                                       f->flow_id, f->meter_name, flow_state_to_string(f->state), f->username ?: "",
                                       f->ticks, f->volume_known ? f->volume_ml : -1.0, f->start_realtime,
                                       f->last_activity_realtime);
                if (r < 0)
                        log_debug_errno(r, "Cannot emit FlowUpdated: %m");
        }

        if (ended && mo->flow_path) {
                emit_object_removed(b, mo->flow_path);
                mo->flow_path = mfree(mo->flow_path);
        }

        /* Without a tap (server mode, unbound meter) an ended flow leaves nothing to show. */
        if (ended && !mo->has_tap)
                return meter_gc(b, mo);
        meter_mark_dirty(mo);
}

static void on_relay_changed(Manager *m, const char *relay, bool enabled, void *userdata) {
        static char *props[] = { "RelayEnabled", NULL };
        Bus *b = userdata;
        RelayState *rs = NULL;

        for (size_t i = 0; i < b->n_relays; i++)
                if (streq(b->relays[i].name, relay))
                        rs = &b->relays[i];
        if (!rs) {
                RelayState *a = realloc(b->relays, (b->n_relays + 1) * sizeof(RelayState));
                if (!a)
                        return (void) log_error("Out of memory tracking relay %s", relay);
                b->relays = a;
                rs = &b->relays[b->n_relays];
                rs->name = strdup(relay);
                if (!rs->name)
                        return (void) log_error("Out of memory tracking relay %s", relay);
                rs->enabled = !enabled;
                b->n_relays++;
        }
        if (rs->enabled == enabled)
                return;
        rs->enabled = enabled;

        for (size_t i = 0; i < b->n_meters; i++) {
                MeterObj *mo = b->meters[i];
                FlowTapInfo t;

                if (mo->has_tap && flow_engine_get_tap(manager_get_engine(m), mo->meter, &t) >= 0 &&
                    streq_ptr(t.relay_name, relay))
                        emit_properties(b, mo->tap_path, TAP_IFACE, props);
        }
}

static void on_drink_stored(Manager *m, const Drink *d, bool durable, void *userdata) {
        manager_props_refresh(userdata);        /* PendingDrinks; SpoolState while it waits to be written */
}

static void on_storage_changed(Manager *m, void *userdata) {
        manager_props_refresh(userdata);        /* DiskState, SpoolState, PendingDrinks */
}

/* Accepted: the kegnet DrinkCreatedEvent went out; DrinkRecorded is its D-Bus twin. */
static void on_drink_recorded(Manager *m, const Drink *d, void *userdata) {
        Bus *b = userdata;
        int r;

        if (b->ready) {
                r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "DrinkRecorded", "sxtsstdttt",
                                       d->uuid, d->has_drink_id ? d->drink_id : (int64_t) -1, d->flow_id,
                                       d->meter_name, d->username ?: "", d->ticks,
                                       d->volume_known ? d->volume_ml : -1.0, d->start_realtime,
                                       d->pour_realtime, d->duration_sec);
                if (r < 0)
                        log_debug_errno(r, "Cannot emit DrinkRecorded: %m");
        }
        manager_props_refresh(b);
}

static void sensor_path_emit(Bus *b, const ThermoSensor *s, bool added) {
        static char *props[] = { "TemperatureC", "LastSeen", "Silent", NULL };
        _cleanup_(freep) char *path = NULL;

        if (sd_bus_path_encode(SENSOR_PREFIX, s->name, &path) < 0)
                return;
        if (added)
                emit_object_added(b, path);
        else
                emit_properties(b, path, SENSOR_IFACE, props);
}

static void on_thermo_reading(Manager *m, const ThermoSensor *s, bool record, void *userdata) {
        Bus *b = userdata;
        bool added = false;
        int r;

        if (!strv_contains(b->sensors, s->name)) {
                if (strv_extend(&b->sensors, &b->n_sensors, s->name) < 0)
                        return (void) log_error("Out of memory exporting sensor %s", s->name);
                added = true;
        }
        sensor_path_emit(b, s, added);

        if (b->ready) {
                r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "ThermoReading", "sdt", s->name,
                                       s->value, s->last_seen_realtime);
                if (r < 0)
                        log_debug_errno(r, "Cannot emit ThermoReading: %m");
        }
}

static void on_thermo_silent(Manager *m, const ThermoSensor *s, void *userdata) {
        Bus *b = userdata;

        if (strv_contains(b->sensors, s->name))
                sensor_path_emit(b, s, false);
}

static void on_token_authenticated(Manager *m, const char *device, const char *value, const char *username,
                                   void *userdata) {
        Bus *b = userdata;
        int r;

        if (!b->ready)
                return;
        r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "TokenAuthenticated", "sss", device, value,
                               username ?: "");
        if (r < 0)
                log_debug_errno(r, "Cannot emit TokenAuthenticated: %m");
}

static void on_controller_changed(Manager *m, const Controller *c, void *userdata) {
        static char *props[] = { "SerialNumber", "FirmwareVersion", "Device", "Connected", "LastSeen", NULL };
        _cleanup_(freep) char *path = NULL;
        Bus *b = userdata;

        if (sd_bus_path_encode(CONTROLLER_PREFIX, c->name, &path) < 0)
                return (void) log_error("Out of memory exporting controller %s", c->name);
        if (!strv_contains(b->controllers, c->name)) {
                if (strv_extend(&b->controllers, &b->n_controllers, c->name) < 0)
                        return (void) log_error("Out of memory exporting controller %s", c->name);
                emit_object_added(b, path);
                return;
        }
        emit_properties(b, path, CONTROLLER_IFACE, props);
}

/* The ghost filter's reports (ghost-pours.md section 12). */
static void on_ghost_event(Manager *m, const FlowEvent *ev, void *userdata) {
        static char *quarantine_props[] = { "Quarantined", "QuarantinedSince", NULL };
        Bus *b = userdata;
        MeterObj *mo = meter_find(b, ev->meter_name);
        int r;

        switch (ev->type) {
        case FLOW_EVENT_GHOST:
                if (!b->ready)
                        break;
                r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "GhostFlow", "sstdtttss", ev->meter_name,
                                       flow_ghost_rule_to_string(ev->ghost.rule), ev->ghost.ticks,
                                       ev->ghost.volume_known ? ev->ghost.volume_ml : -1.0, ev->ghost.start_realtime,
                                       ev->ghost.end_realtime, ev->ghost.flow_id, ev->ghost.tick_series,
                                       flow_ghost_mode_to_string(ev->ghost.mode));
                if (r < 0)
                        log_debug_errno(r, "Cannot emit GhostFlow: %m");
                break;
        case FLOW_EVENT_POUR_FLAGGED:
                if (b->ready) {
                        r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "PourFlagged", "tsss",
                                               ev->flagged.flow_id, ev->meter_name, drink_flag_to_string(ev->flagged.flag),
                                               flow_ghost_mode_to_string(ev->flagged.mode));
                        if (r < 0)
                                log_debug_errno(r, "Cannot emit PourFlagged: %m");
                }
                /* Log mode flags a shadow pour: the real flow's Flags stay as they are. */
                if (mo && ev->flagged.mode == FLOW_GHOST_ON && mo->has_flow && mo->flow_id == ev->flagged.flow_id) {
                        mo->flow_flags |= ev->flagged.flag;
                        meter_mark_dirty(mo);
                }
                break;
        case FLOW_EVENT_QUARANTINE:
                if (mo && mo->has_tap)
                        emit_properties(b, mo->tap_path, TAP_IFACE, quarantine_props);
                break;
        case FLOW_EVENT_GHOST_COUNTERS:
                if (mo && mo->has_tap)
                        meter_mark_dirty(mo);
                break;
        default:
                break;
        }
}

/* An object the manager is about to forget (a full table): removed while the manager still lists
 * it, so that the signal names its interfaces. */
static void name_removed(Bus *b, const char *prefix, char **names, size_t *n_names, const char *name) {
        _cleanup_(freep) char *path = NULL;

        if (!strv_contains(names, name) || sd_bus_path_encode(prefix, name, &path) < 0)
                return;
        emit_object_removed(b, path);
        (void) strv_remove(names, n_names, name);
}

static void on_controller_removed(Manager *m, const Controller *c, void *userdata) {
        Bus *b = userdata;
        name_removed(b, CONTROLLER_PREFIX, b->controllers, &b->n_controllers, c->name);
}

static void on_sensor_removed(Manager *m, const ThermoSensor *s, void *userdata) {
        Bus *b = userdata;
        name_removed(b, SENSOR_PREFIX, b->sensors, &b->n_sensors, s->name);
}

/* Calibration pours (calibration.md section 5): their properties and CalibrationEnded. */
static void on_calibration_event(Manager *m, const FlowEvent *ev, void *userdata) {
        static char *props[] = { "CalibrationState", "CalibrationTicks", "CalibrationStarted", "CalibrationDeadline",
                                 NULL };
        Bus *b = userdata;
        MeterObj *mo = meter_find(b, ev->meter_name);
        FlowCalibrationInfo info;
        int r;

        if (!mo)
                return;
        switch (ev->calibration.change) {
        case FLOW_CALIBRATION_STARTED:
                if (flow_engine_get_calibration(manager_get_engine(m), ev->meter_name, &info) < 0)
                        return;
                mo->cal_running = true;
                mo->cal_ticks = 0;
                mo->cal_started = info.start_realtime;
                mo->cal_deadline = info.deadline_realtime;
                if (mo->has_tap)
                        emit_properties(b, mo->tap_path, TAP_IFACE, props);
                break;
        case FLOW_CALIBRATION_TICKS:
                mo->cal_ticks = ev->calibration.ticks;
                if (mo->has_tap)
                        meter_mark_dirty(mo);
                break;
        case FLOW_CALIBRATION_ENDED:
                /* The final count goes out before the properties are reset. */
                mo->cal_ticks = ev->calibration.ticks;
                meter_flush(mo);
                mo->cal_running = false;
                mo->cal_ticks = mo->cal_started = mo->cal_deadline = 0;
                if (mo->has_tap)
                        emit_properties(b, mo->tap_path, TAP_IFACE, props);
                if (b->ready) {
                        r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "CalibrationEnded", "sstdd",
                                               ev->meter_name, flow_calibration_end_to_string(ev->calibration.reason),
                                               ev->calibration.ticks, ev->calibration.old_ml_per_tick,
                                               ev->calibration.new_ml_per_tick);
                        if (r < 0)
                                log_debug_errno(r, "Cannot emit CalibrationEnded: %m");
                }
                break;
        }
}

static const ManagerObserver bus_observer = {
        .tap_changed = on_tap_changed,
        .flow_updated = on_flow_updated,
        .relay_changed = on_relay_changed,
        .drink_stored = on_drink_stored,
        .storage_changed = on_storage_changed,
        .drink_recorded = on_drink_recorded,
        .thermo_reading = on_thermo_reading,
        .thermo_silent = on_thermo_silent,
        .token_authenticated = on_token_authenticated,
        .controller_changed = on_controller_changed,
        .ghost_event = on_ghost_event,
        .controller_removed = on_controller_removed,
        .sensor_removed = on_sensor_removed,
        .calibration_event = on_calibration_event,
};

/* ---- connection ---- */

static int bus_connect(Bus *b);

static void bus_fail(Bus *b, const char *why) {
        if (b->failed)
                return;
        b->failed = true;
        log_error("Cannot serve %s on the %s bus: %s; stopping", BUS_NAME, bus_type_to_string(b->type), why);
        manager_stop(b->manager);
}

static int on_name_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error);

static int request_name(Bus *b) {
        int r;

        r = sd_bus_call_method_async(b->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "RequestName", on_name_reply, b, "su", BUS_NAME,
                                     (uint32_t) 4 /* DBUS_NAME_FLAG_DO_NOT_QUEUE */);
        if (r < 0)
                return log_error_errno(r, "Cannot request the name %s: %m", BUS_NAME);
        return 0;
}

static int on_name_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Bus *b = userdata;
        const sd_bus_error *e;
        uint32_t code;
        int r;

        if (sd_bus_message_get_bus(reply) != b->bus)
                return 0;       /* an answer on a connection we already dropped */

        e = sd_bus_message_get_error(reply);
        if (e) {
                /* The connection went away before the answer: reconnecting asks again. */
                if (sd_bus_error_has_names(e, SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_DISCONNECTED)) {
                        log_debug("Name request interrupted: %s", e->message ?: e->name);
                        return 0;
                }
                if (sd_bus_error_has_name(e, SD_BUS_ERROR_TIMEOUT)) {
                        log_warning("Name request timed out; asking again");
                        (void) request_name(b);
                        return 0;
                }
                bus_fail(b, e->message ?: e->name);
                return 0;
        }

        r = sd_bus_message_read(reply, "u", &code);
        if (r < 0) {
                bus_fail(b, "bad reply to RequestName");
                return 0;
        }
        /* 1 = primary owner, 4 = already the owner; 3 = exists (someone else has it). */
        if (code != 1 && code != 4) {
                bus_fail(b, "the name is already taken by another process");
                return 0;
        }

        b->ready = true;
        log_info("Serving %s on the %s bus", BUS_NAME, bus_type_to_string(b->type));
        if (!b->was_ready) {
                b->was_ready = true;
                if (b->ready_handler)
                        b->ready_handler(b->ready_userdata);
        }
        return 0;
}

void bus_set_ready_handler(Bus *b, void (*handler)(void *userdata), void *userdata) {
        b->ready_handler = handler;
        b->ready_userdata = userdata;
        if (b->was_ready && handler)
                handler(userdata);
}

static int on_reconnect_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Bus *b = userdata;
        int r;

        b->reconnect_source = sd_event_source_unref(b->reconnect_source);
        b->bus = sd_bus_close_unref(b->bus);

        r = bus_connect(b);
        if (r < 0) {
                log_warning_errno(r, "Cannot reconnect to the %s bus, retrying in %" PRIu64 " s: %m",
                                  bus_type_to_string(b->type), RECONNECT_RETRY_USEC / USEC_PER_SEC);
                r = event_timer_arm_relative(b->event, &b->reconnect_source, RECONNECT_RETRY_USEC,
                                             RECONNECT_ACCURACY_USEC, on_reconnect_timer, b);
                if (r < 0)
                        log_error_errno(r, "Cannot schedule a reconnection; D-Bus stays offline: %m");
        }
        return 0;
}

static int on_disconnected(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
        Bus *b = userdata;
        int r;

        if (sd_bus_message_get_bus(message) != b->bus || b->reconnect_source)
                return 0;

        b->ready = false;
        log_warning("Lost the connection to the %s bus; reconnecting", bus_type_to_string(b->type));
        /* The connection cannot be dropped from inside its own callback. */
        r = event_timer_arm_relative(b->event, &b->reconnect_source, RECONNECT_DELAY_USEC, RECONNECT_ACCURACY_USEC,
                                     on_reconnect_timer, b);
        if (r < 0)
                log_error_errno(r, "Cannot schedule a reconnection; D-Bus stays offline: %m");
        return 0;
}

static int on_connected(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
        Bus *b = userdata;

        log_debug("Connected to the %s bus", bus_type_to_string(b->type));
        return 0;
}

static int bus_address(BusType type, char **ret) {
        const char *e;
        char *a;

        if (type == BUS_TYPE_SYSTEM) {
                e = getenv("DBUS_SYSTEM_BUS_ADDRESS");
                a = strdup(!isempty(e) ? e : "unix:path=/run/dbus/system_bus_socket");
        } else {
                e = getenv("DBUS_SESSION_BUS_ADDRESS");
                if (!isempty(e))
                        a = strdup(e);
                else {
                        e = getenv("XDG_RUNTIME_DIR");
                        if (isempty(e))
                                return -ENXIO;
                        if (asprintf(&a, "unix:path=%s/bus", e) < 0)
                                a = NULL;
                }
        }
        if (!a)
                return -ENOMEM;
        *ret = a;
        return 0;
}

static int bus_install(Bus *b, sd_bus *bus) {
        static const struct {
                const char *prefix, *iface;
                const sd_bus_vtable *vtable;
                sd_bus_object_find_t find;
                sd_bus_node_enumerator_t enumerate;
        } fallbacks[] = {
                { TAP_PREFIX, TAP_IFACE, tap_vtable, tap_find, tap_enumerate },
                { CONTROLLER_PREFIX, CONTROLLER_IFACE, controller_vtable, controller_find, controller_enumerate },
                { SENSOR_PREFIX, SENSOR_IFACE, sensor_vtable, sensor_find, sensor_enumerate },
                { FLOW_PREFIX, FLOW_IFACE, flow_vtable, flow_find, flow_enumerate },
        };
        int r;

        r = sd_bus_add_object_vtable(bus, NULL, BUS_ROOT_PATH, MANAGER_IFACE, manager_vtable, b);
        if (r < 0)
                return log_error_errno(r, "Cannot export %s: %m", BUS_ROOT_PATH);
        r = sd_bus_add_object_manager(bus, NULL, BUS_ROOT_PATH);
        if (r < 0)
                return log_error_errno(r, "Cannot add the object manager: %m");
        for (size_t i = 0; i < ELEMENTSOF(fallbacks); i++) {
                r = sd_bus_add_fallback_vtable(bus, NULL, fallbacks[i].prefix, fallbacks[i].iface,
                                               fallbacks[i].vtable, fallbacks[i].find, b);
                if (r < 0)
                        return log_error_errno(r, "Cannot export %s: %m", fallbacks[i].prefix);
                r = sd_bus_add_node_enumerator(bus, NULL, fallbacks[i].prefix, fallbacks[i].enumerate, b);
                if (r < 0)
                        return log_error_errno(r, "Cannot export %s: %m", fallbacks[i].prefix);
        }
        r = sd_bus_add_object_vtable(bus, NULL, LOG_CONTROL_PATH, LOG_CONTROL_IFACE, log_control_vtable, b);
        if (r < 0)
                return log_error_errno(r, "Cannot export %s: %m", LOG_CONTROL_PATH);

        /* Local matches: they never reach the bus daemon. */
        r = sd_bus_match_signal(bus, NULL, NULL, "/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local",
                                "Disconnected", on_disconnected, b);
        if (r < 0)
                return log_error_errno(r, "Cannot watch for disconnection: %m");
        r = sd_bus_match_signal(bus, NULL, NULL, "/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local",
                                "Connected", on_connected, b);
        if (r < 0)
                return log_error_errno(r, "Cannot watch for the connection: %m");
        return 0;
}

/* A bus that is not there yet (socket missing or refusing) is waited for (watch-bind). */
static int bus_connect(Bus *b) {
        _cleanup_(sd_bus_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(freep) char *address = NULL;
        int r;

        r = bus_address(b->type, &address);
        if (r == -ENXIO)
                return log_error_errno(r, "No session bus: neither DBUS_SESSION_BUS_ADDRESS nor XDG_RUNTIME_DIR is set");
        if (r < 0)
                return log_error_errno(r, "Out of memory");

        r = sd_bus_new(&bus);
        if (r < 0)
                return log_error_errno(r, "Cannot create a bus connection: %m");
        (void) sd_bus_set_description(bus, b->type == BUS_TYPE_SYSTEM ? "system-bus" : "session-bus");
        r = sd_bus_set_address(bus, address);
        if (r < 0)
                return log_error_errno(r, "Bad %s bus address %s: %m", bus_type_to_string(b->type), address);
        if ((r = sd_bus_set_bus_client(bus, true)) < 0 ||
            (r = sd_bus_set_watch_bind(bus, true)) < 0 ||
            (r = sd_bus_set_connected_signal(bus, true)) < 0 ||
            (r = sd_bus_set_close_on_exit(bus, false)) < 0)
                return log_error_errno(r, "Cannot configure the bus connection: %m");

        r = bus_install(b, bus);
        if (r < 0)
                return r;

        r = sd_bus_start(bus);
        if (r < 0)
                return log_error_errno(r, "Cannot connect to the %s bus at %s: %m", bus_type_to_string(b->type),
                                       address);
        r = sd_bus_attach_event(bus, b->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Cannot attach the bus to the event loop: %m");

        b->bus = TAKE_PTR(bus);
        r = request_name(b);
        if (r < 0) {
                b->bus = sd_bus_close_unref(b->bus);
                return r;
        }
        log_debug("Connecting to the %s bus at %s", bus_type_to_string(b->type), address);
        return 0;
}

/* ---- life cycle ---- */

static int bus_scan(Bus *b) {
        FlowEngine *e = manager_get_engine(b->manager);
        ThermoManager *t = manager_get_thermo(b->manager);

        for (size_t i = 0; i < flow_engine_n_taps(e); i++) {
                FlowTapInfo info;
                MeterObj *mo;

                if (flow_engine_tap_at(e, i, &info) < 0)
                        break;
                mo = meter_get(b, info.meter_name);
                if (!mo)
                        return -ENOMEM;
                mo->has_tap = true;
        }
        for (size_t i = 0; i < flow_engine_n_flows(e); i++) {
                FlowInfo f;

                if (flow_engine_flow_at(e, i, &f) < 0)
                        break;
                on_flow_updated(b->manager, &f, b);
        }
        for (size_t i = 0; i < manager_n_controllers(b->manager); i++)
                if (strv_extend(&b->controllers, &b->n_controllers, manager_controller_at(b->manager, i)->name) < 0)
                        return -ENOMEM;
        for (size_t i = 0; i < thermo_manager_n_sensors(t); i++)
                if (strv_extend(&b->sensors, &b->n_sensors, thermo_manager_sensor_at(t, i)->name) < 0)
                        return -ENOMEM;
        return 0;
}

int bus_new(Bus **ret, Manager *m, const BusConfig *config) {
        _cleanup_(bus_freep) Bus *b = NULL;
        int r;

        b = calloc(1, sizeof(Bus));
        if (!b)
                return log_error_errno(-ENOMEM, "Out of memory");
        b->manager = m;
        b->event = sd_event_ref(manager_get_event(m));
        b->type = config->type;
        b->api_url = strdup(config->api_url ?: "");
        b->log_target = strdup("console");
        if (!b->api_url || !b->log_target)
                return log_error_errno(-ENOMEM, "Out of memory");
        b->last_sync = bus_now(b, CLOCK_REALTIME);

        (void) sd_bus_error_add_map(kegbot_bus_errors);

        r = bus_scan(b);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        manager_props_remember(b);

        r = manager_add_observer(m, &bus_observer, b);
        if (r < 0)
                return log_error_errno(r, "Out of memory");

        r = bus_connect(b);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(b);
        return 0;
}

static void on_backend_changed(void *userdata) {
        manager_props_refresh(userdata);
}

/* Event devices are Controller objects too; their health is re-announced on every change. */
static void on_event_backend_changed(void *userdata) {
        static char *props[] = { "EventState", "Paired", "BootId", "PendingEvents", "FailedEvents", "LastDelivery",
                                 "ActiveGrants", NULL };
        Bus *b = userdata;

        manager_props_refresh(b);
        /* Grants come and go: the GrantId of the flows they cover. */
        for (size_t i = 0; i < b->n_meters; i++) {
                MeterObj *mo = b->meters[i];
                const char *g = event_backend_meter_grant(b->event_backend, mo->meter);

                if (!mo->flow_path || streq_ptr(g, mo->grant_id))
                        continue;
                if (free_and_strdup(&mo->grant_id, g) < 0)
                        return (void) log_error("Out of memory tracking the grant of %s", mo->meter);
                meter_mark_dirty(mo);
        }
        for (size_t i = 0; i < event_backend_n_devices(b->event_backend); i++) {
                const char *name = event_backend_device_name_at(b->event_backend, i);
                _cleanup_(freep) char *path = NULL;

                if (sd_bus_path_encode(CONTROLLER_PREFIX, name, &path) < 0)
                        return (void) log_error("Out of memory exporting controller %s", name);
                if (!strv_contains(b->controllers, name)) {
                        if (strv_extend(&b->controllers, &b->n_controllers, name) < 0)
                                return (void) log_error("Out of memory exporting controller %s", name);
                        emit_object_added(b, path);
                        continue;
                }
                emit_properties(b, path, CONTROLLER_IFACE, props);
        }
}

static void emit_event_signal(Bus *b, sd_bus_message *msg, int r, const char *name) {
        if (r >= 0)
                r = sd_bus_send(b->bus, msg, NULL);
        if (r < 0)
                log_debug_errno(r, "Cannot emit %s: %m", name);
}

static void on_grant_started(const char *controller, const char *grant_id, const unsigned *meters, size_t n_meters,
                             const unsigned *relays, size_t n_relays, const char *auth_device, const char *token,
                             void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        uint32_t mv[KBEVENT_NUMBER_MAX + 1], rv[KBEVENT_NUMBER_MAX + 1];
        Bus *b = userdata;
        int r;

        if (!b->ready)
                return;
        for (size_t i = 0; i < n_meters && i < ELEMENTSOF(mv); i++)
                mv[i] = meters[i];
        for (size_t i = 0; i < n_relays && i < ELEMENTSOF(rv); i++)
                rv[i] = relays[i];
        r = sd_bus_message_new_signal(b->bus, &msg, BUS_ROOT_PATH, MANAGER_IFACE, "GrantStarted");
        if (r >= 0)
                r = sd_bus_message_append(msg, "ss", controller, grant_id);
        if (r >= 0)
                r = sd_bus_message_append_array(msg, 'u', mv, MIN(n_meters, ELEMENTSOF(mv)) * sizeof(uint32_t));
        if (r >= 0)
                r = sd_bus_message_append_array(msg, 'u', rv, MIN(n_relays, ELEMENTSOF(rv)) * sizeof(uint32_t));
        if (r >= 0)
                r = sd_bus_message_append(msg, "ss", auth_device, token);
        emit_event_signal(b, msg, r, "GrantStarted");
}

static void on_grant_ended(const char *controller, const char *grant_id, const char *reason, double volume_ml,
                           uint64_t duration_ms, void *userdata) {
        Bus *b = userdata;
        int r;

        if (!b->ready)
                return;
        r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "GrantEnded", "sssdt", controller, grant_id,
                               reason, volume_ml, duration_ms);
        if (r < 0)
                log_debug_errno(r, "Cannot emit GrantEnded: %m");
}

static void on_token_denied(const char *controller, const char *auth_device, const char *token, const char *reason,
                            void *userdata) {
        Bus *b = userdata;
        int r;

        if (!b->ready)
                return;
        r = sd_bus_emit_signal(b->bus, BUS_ROOT_PATH, MANAGER_IFACE, "TokenDenied", "ssss", controller, auth_device,
                               token, reason);
        if (r < 0)
                log_debug_errno(r, "Cannot emit TokenDenied: %m");
}

static const EventBackendSignals event_signals = {
        .grant_started = on_grant_started,
        .grant_ended = on_grant_ended,
        .token_denied = on_token_denied,
};

void bus_set_event_backend(Bus *b, EventBackend *eb) {
        if (b->event_backend)
                event_backend_set_changed_handler(b->event_backend, NULL, NULL);
        b->event_backend = eb;
        if (eb) {
                event_backend_set_changed_handler(eb, on_event_backend_changed, b);
                event_backend_set_signals(eb, &event_signals, b);
                for (size_t i = 0; i < event_backend_n_devices(eb); i++)
                        if (!strv_contains(b->controllers, event_backend_device_name_at(eb, i)))
                                (void) strv_extend(&b->controllers, &b->n_controllers, event_backend_device_name_at(eb, i));
        }
        manager_props_refresh(b);
}

void bus_set_backend(Bus *b, Backend *backend) {
        if (b->backend)
                backend_set_changed_handler(b->backend, NULL, NULL);
        b->backend = backend;
        if (backend)
                backend_set_changed_handler(backend, on_backend_changed, b);
        manager_props_refresh(b);
}

void bus_set_calibrations(Bus *b, Calibrations *c) {
        b->calibrations = c;
}

bool bus_failed(Bus *b) {
        return b && b->failed;
}

Bus *bus_free(Bus *b) {
        if (!b)
                return NULL;

        if (b->manager)
                manager_remove_observer(b->manager, &bus_observer, b);
        if (b->backend)
                backend_set_changed_handler(b->backend, NULL, NULL);
        if (b->event_backend) {
                event_backend_set_changed_handler(b->event_backend, NULL, NULL);
                event_backend_set_signals(b->event_backend, NULL, NULL);
        }

        /* The final values of pours that ended during shutdown. */
        for (size_t i = 0; i < b->n_meters; i++)
                meter_flush(b->meters[i]);

        if (b->bus) {
                if (b->ready)
                        (void) sd_bus_call_method_async(b->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                                        "org.freedesktop.DBus", "ReleaseName", NULL, NULL, "s",
                                                        BUS_NAME);
                (void) sd_bus_flush(b->bus);
                b->bus = sd_bus_close_unref(b->bus);
        }
        b->reconnect_source = sd_event_source_disable_unref(b->reconnect_source);

        for (size_t i = 0; i < b->n_meters; i++)
                meter_obj_free(b->meters[i]);
        free(b->meters);
        strv_free(b->controllers);
        strv_free(b->sensors);
        for (size_t i = 0; i < b->n_relays; i++)
                free(b->relays[i].name);
        free(b->relays);

        sd_event_unref(b->event);
        free(b->api_url);
        free(b->log_target);
        free(b);
        return NULL;
}
