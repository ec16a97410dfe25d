/* kegbot_core's Manager: see manager.h. Every state change goes through one of the manager_*()
 * operations, which call the pure flow engine with the loop's cached time and then run
 * manager_engine_done(): emit accepted drinks, re-arm the single flow timer from the engine's next
 * deadline, refresh STATUS=. Nothing here polls: with no flows, no sensors and no traffic the loop
 * sleeps until a socket or a signal wakes it. */
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>

#define LOG_COMPONENT "main"
#include "log.h"

#include "daemon.h"
#include "drinks-log.h"
#include "manager.h"
#include "quarantine.h"
#include "thermo-log.h"
#include "tokens.h"
#include "util-double.h"
#include "util-event.h"

#define MAX_CONTROLLERS 256U
#define MANAGER_N_SIGNALS 4
#define SHUTDOWN_FLUSH_USEC_DEFAULT (1 * USEC_PER_SEC)

typedef struct ObserverSlot {
        const ManagerObserver *o;
        void *userdata;
} ObserverSlot;

struct Manager {
        ManagerConfig config;           /* strings below are the owned copies */
        char *bind_addr, *state_dir, *taps_file, *tokens_file;

        sd_event *event;
        sd_event_source *signal_sources[MANAGER_N_SIGNALS];  /* SIGTERM, SIGINT, SIGQUIT, SIGHUP */
        sd_event_source *flow_timer_source;     /* armed at flow_engine_next_deadline() */
        sd_event_source *thermo_timer_source;   /* armed at thermo_manager_next_deadline() */
        sd_event_source *shutdown_timer_source; /* bounds the final output flush */

        KegnetServer *kegnet;
        FlowEngine *engine;
        TapRegistry *taps;
        ThermoManager *thermo;
        DrinkSink *drinks;
        ThermoLog *thermo_log;
        Tokens *tokens;

        ManagerAuthBackend auth;
        void *auth_userdata;
        bool has_auth;

        ObserverSlot *observers;
        size_t n_observers;

        Controller *controllers;
        size_t n_controllers;

        /* Drinks the sink accepted at once; their DrinkCreatedEvent follows FlowUpdate(completed). */
        Drink **accepted;
        size_t n_accepted;

        uint64_t flow_timer_deadline;
        uint64_t thermo_timer_deadline;
        size_t status_taps, status_pending;
        bool status_sent;
        bool stopping;
};

#define FOREACH_OBSERVER(m, cb, ...)                                            \
        for (size_t _i = 0; _i < (m)->n_observers; _i++)                        \
                if ((m)->observers[_i].o->cb)                                   \
                        (m)->observers[_i].o->cb((m), __VA_ARGS__, (m)->observers[_i].userdata)

void manager_config_init(ManagerConfig *c) {
        *c = (ManagerConfig) {
                .bind_addr = KEGNET_DEFAULT_ADDR,
                .state_dir = "/var/lib/kegbot",
                .taps_file = "/etc/kegbot/taps.ini",
                .tokens_file = "",
                .max_tick_delta = 1000,
                .default_ticks_per_ml = 2.2,
                .standalone = true,
                .retry_usec = 10 * USEC_PER_SEC,
        };
        flow_settings_init(&c->settings);
}

static void manager_now(Manager *m, FlowTime *t) {
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &t->monotonic);
        (void) sd_event_now(m->event, CLOCK_REALTIME, &t->realtime);
        (void) sd_event_now(m->event, CLOCK_BOOTTIME, &t->boottime);
}

/* ---- outbound events ---- */

static void broadcast_flow_update(Manager *m, const FlowInfo *f) {
        KegnetMessage msg = {
                .kind = KEGNET_FLOW_UPDATE,
                .flow_update = {
                        .flow_id = (int64_t) f->flow_id,
                        .meter_name = f->meter_name,
                        .state = f->state == FLOW_STATE_ACTIVE ? KEGNET_FLOW_ACTIVE :
                                 f->state == FLOW_STATE_IDLE ? KEGNET_FLOW_IDLE : KEGNET_FLOW_COMPLETED,
                        .username = f->username,
                        .start_time = f->start_realtime,
                        .last_activity_time = f->last_activity_realtime,
                        .ticks = f->ticks,
                        .has_volume_ml = f->volume_known,
                        .volume_ml = f->volume_ml,
                },
        };
        (void) kegnet_server_broadcast(m->kegnet, &msg);
}

static void broadcast_relay(Manager *m, const char *relay, bool enabled) {
        KegnetMessage msg = {
                .kind = KEGNET_SET_RELAY_OUTPUT_EVENT,
                .set_relay_output_event = {
                        .output_name = relay,
                        .output_mode = enabled ? KEGNET_OUTPUT_ENABLED : KEGNET_OUTPUT_DISABLED,
                },
        };
        (void) kegnet_server_broadcast(m->kegnet, &msg);
}

/* The drink was accepted: kegnet DrinkCreatedEvent, and the drink_recorded observers (D-Bus
 * DrinkRecorded). */
static void announce_drink(Manager *m, const Drink *d) {
        KegnetMessage msg = {
                .kind = KEGNET_DRINK_CREATED_EVENT,
                .drink_created_event = {
                        .flow_id = (int64_t) d->flow_id,
                        .has_drink_id = d->has_drink_id,
                        .drink_id = d->drink_id,
                        .meter_name = d->meter_name,
                        .start_time = d->start_realtime,
                        .end_time = d->pour_realtime,
                        .username = d->username,
                        .ticks = d->ticks,
                        .has_volume_ml = d->volume_known,
                        .volume_ml = d->volume_ml,
                        .uuid = d->uuid,
                },
        };
        /* In server mode the uploader logs the server's answer (user, keg) instead. */
        if (manager_is_standalone(m)) {
                char num[DOUBLE_STRING_MAX];

                double_format(d->volume_known ? d->volume_ml / 1000.0 : 0.0, num);
                log_named(LOG_INFO, "DrinkManager", "Logged drink %" PRIi64 " username=%s liters=%s ticks=%" PRIu64 " uuid=%s",
                          d->has_drink_id ? d->drink_id : (int64_t) -1, d->username ?: "None",
                          d->volume_known ? num : "None", d->ticks, d->uuid);
        }
        (void) kegnet_server_broadcast(m->kegnet, &msg);
        FOREACH_OBSERVER(m, drink_recorded, d);
}

static void flush_accepted(Manager *m, bool only_flow, uint64_t flow_id) {
        size_t j = 0;

        for (size_t i = 0; i < m->n_accepted; i++) {
                Drink *d = m->accepted[i];
                if (only_flow && d->flow_id != flow_id) {
                        m->accepted[j++] = d;
                        continue;
                }
                announce_drink(m, d);
                drink_free(d);
        }
        m->n_accepted = j;
}

static void on_sink_accepted(DrinkSink *sink, const Drink *d, void *userdata) {
        announce_drink(userdata, d);
        manager_update_status(userdata);
}

static void record_drink(Manager *m, const Drink *flow_drink) {
        _cleanup_(drink_freep) Drink *d = NULL;
        int r;

        r = drink_new_from_flow(flow_drink, &d);
        if (r < 0) {
                log_named(LOG_ERR, "DrinkManager", "Cannot create drink for flow 0x%08" PRIx64 ": %s",
                          flow_drink->flow_id, strerror(-r));
                return;
        }

        r = drink_sink_record(m->drinks, d);
        if (r < 0) {
                log_named(LOG_ERR, "DrinkManager", "Drink %s of flow 0x%08" PRIx64 " (%" PRIu64 " ticks) was not recorded",
                          d->uuid, d->flow_id, d->ticks);
                return;
        }
        /* Held (the write failed): the flow is still reported completed (core-behaviour.md 10.2),
         * but the drink is not durable, and observers are told so. */
        FOREACH_OBSERVER(m, drink_stored, d, r != DRINK_SINK_HELD);
        if (r != DRINK_SINK_ACCEPTED)
                return;

        Drink **n = realloc(m->accepted, (m->n_accepted + 1) * sizeof(Drink *));
        if (!n) {
                /* Durable already; only the announcement is lost. */
                log_named(LOG_ERR, "DrinkManager", "Out of memory; no DrinkCreatedEvent for drink %s", d->uuid);
                return;
        }
        m->accepted = n;
        m->accepted[m->n_accepted++] = TAKE_PTR(d);
}

static void on_engine_event(FlowEngine *e, const FlowEvent *ev, void *userdata) {
        Manager *m = userdata;

        switch (ev->type) {
        case FLOW_EVENT_LOG:
                (void) log_internal(ev->log.level, 0, "flowmanager", "%s", ev->log.message);
                break;
        case FLOW_EVENT_FLOW_UPDATE:
                broadcast_flow_update(m, ev->flow);
                FOREACH_OBSERVER(m, flow_updated, ev->flow);
                if (ev->flow->state == FLOW_STATE_COMPLETED)
                        flush_accepted(m, true, ev->flow->flow_id);
                break;
        case FLOW_EVENT_DRINK:
                record_drink(m, ev->drink);
                break;
        case FLOW_EVENT_NOT_RECORDED:
                break;          /* the engine logged why */
        case FLOW_EVENT_RELAY:
                broadcast_relay(m, ev->relay.relay_name, ev->relay.enabled);
                if (!ev->relay.reassert)
                        FOREACH_OBSERVER(m, relay_changed, ev->relay.relay_name, ev->relay.enabled);
                break;
        case FLOW_EVENT_TOKEN_AUTHENTICATED:
                FOREACH_OBSERVER(m, token_authenticated, ev->token.device, ev->token.value, ev->token.username);
                break;
        case FLOW_EVENT_TAP_CREATED:
                tap_registry_note_created(m->taps, ev->meter_name);
                break;
        case FLOW_EVENT_QUARANTINE:
                /* Log mode's shadow quarantines are not kept over a restart (ghost-pours.md section 9). */
                if (ev->quarantine.mode == FLOW_GHOST_ON)
                        (void) quarantine_save(e, m->state_dir);
                FOREACH_OBSERVER(m, ghost_event, ev);
                break;
        case FLOW_EVENT_GHOST:
        case FLOW_EVENT_POUR_FLAGGED:
        case FLOW_EVENT_GHOST_COUNTERS:
                FOREACH_OBSERVER(m, ghost_event, ev);
                break;
        }
}

static void arm_timer(Manager *m, sd_event_source *s, uint64_t *armed, uint64_t deadline) {
        if (deadline == UINT64_MAX) {
                if (*armed != UINT64_MAX)
                        (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
                *armed = UINT64_MAX;
                return;
        }
        if (deadline == *armed)
                return;
        if (event_timer_set(s, deadline) < 0) {
                log_error("Cannot arm a timer; stopping");
                (void) sd_event_exit(m->event, -EIO);
                return;
        }
        *armed = deadline;
}

/* After every engine call. */
static void manager_engine_done(Manager *m) {
        flush_accepted(m, false, 0);
        if (!m->stopping)
                arm_timer(m, m->flow_timer_source, &m->flow_timer_deadline, flow_engine_next_deadline(m->engine));
        manager_update_status(m);
}

static int on_flow_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        FlowTime now;

        m->flow_timer_deadline = UINT64_MAX;    /* oneshot: it is off now */
        manager_now(m, &now);
        (void) flow_engine_process_deadlines(m->engine, &now);
        manager_engine_done(m);
        return 0;
}

static void on_thermo_silent(const ThermoSensor *t, void *userdata) {
        Manager *m = userdata;
        FOREACH_OBSERVER(m, thermo_silent, t);
}

static int on_thermo_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now = 0;

        m->thermo_timer_deadline = UINT64_MAX;
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        (void) thermo_manager_process_deadlines(m->thermo, now, on_thermo_silent, m);
        arm_timer(m, m->thermo_timer_source, &m->thermo_timer_deadline, thermo_manager_next_deadline(m->thermo));
        return 0;
}

/* ---- status ---- */

void manager_update_status(Manager *m) {
        size_t taps = flow_engine_n_taps(m->engine);
        size_t pending = m->drinks ? drink_sink_n_pending(m->drinks) : 0;

        if (m->status_sent && taps == m->status_taps && pending == m->status_pending)
                return;
        m->status_sent = true;
        m->status_taps = taps;
        m->status_pending = pending;
        (void) daemon_notify_status("%s: %s mode, %zu taps, %zu queued drinks",
                                    m->stopping ? "Stopping" : "Ready",
                                    m->config.standalone ? "standalone" : "server", taps, pending);
}

/* ---- operations ---- */

int manager_meter_update(Manager *m, const char *meter, uint32_t reading) {
        FlowTime now;
        int64_t r;

        if (m->stopping)
                return -ESHUTDOWN;
        manager_now(m, &now);
        r = flow_engine_meter_update(m->engine, meter, reading, &now);
        manager_engine_done(m);
        return r < 0 ? (int) r : 0;
}

int manager_start_flow(Manager *m, const char *meter) {
        FlowTime now;
        int r;

        if (m->stopping)
                return -ESHUTDOWN;
        manager_now(m, &now);
        r = flow_engine_start_flow(m->engine, meter, &now);
        manager_engine_done(m);
        return r;
}

int manager_stop_flow(Manager *m, const char *meter) {
        FlowTime now;
        int r;

        if (m->stopping)
                return -ESHUTDOWN;
        manager_now(m, &now);
        r = flow_engine_stop_flow(m->engine, meter, &now);
        manager_engine_done(m);
        return r;
}

static bool targets_all_taps(const char *meter) {
        return isempty(meter) || streq(meter, FLOW_ALL_TAPS);
}

int manager_token_event(Manager *m, const char *device, const char *value, const char *meter, bool added) {
        _cleanup_(freep) char *norm = NULL;
        FlowTime now;
        int r;

        if (m->stopping)
                return -ESHUTDOWN;
        if (isempty(device) || !value)
                return -EINVAL;

        norm = flow_token_normalize(device, value);
        if (!norm)
                return -ENOMEM;

        if (!m->has_auth) {
                if (!targets_all_taps(meter) && flow_engine_get_tap(m->engine, meter, &(FlowTapInfo) {}) < 0) {
                        log_named(LOG_WARNING, "AuthenticationManager", "Token event for unknown tap %s", meter);
                        return 0;
                }
                if (added)
                        log_named(LOG_INFO, "AuthenticationManager",
                                  "Token %s/%s ignored: no server (standalone mode)", device, norm);
                else
                        log_named(LOG_DEBUG, "AuthenticationManager",
                                  "Token %s/%s removed: ignored (standalone mode)", device, norm);
                return 0;
        }

        manager_now(m, &now);
        if (!added) {
                r = flow_engine_token_removed(m->engine, device, value, meter, &now);
                manager_engine_done(m);
                return r;
        }

        r = flow_engine_token_added(m->engine, device, value, meter, &now);
        manager_engine_done(m);
        if (r <= 0)
                return r;
        return m->auth.lookup(m, device, norm, m->auth_userdata);
}

void manager_auth_answer(Manager *m, const char *device, const char *value, const char *username) {
        FlowTime now;

        if (m->stopping)
                return;
        manager_now(m, &now);
        (void) flow_engine_token_resolved(m->engine, device, value, username, &now);
        manager_engine_done(m);
}

int manager_thermo_event(Manager *m, const char *sensor, double value_c) {
        const ThermoSensor *s = NULL;
        uint64_t mono = 0, real = 0;
        ThermoResult res;

        if (m->stopping)
                return -ESHUTDOWN;
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &mono);
        (void) sd_event_now(m->event, CLOCK_REALTIME, &real);

        res = thermo_manager_reading(m->thermo, sensor, value_c, mono, real, &s);
        if (res == THERMO_DROPPED)
                return 0;
        if (res == THERMO_RECORD && m->thermo_log)
                (void) thermo_log_append(m->thermo_log, s->name, s->value, real);
        FOREACH_OBSERVER(m, thermo_reading, s, res == THERMO_RECORD);
        arm_timer(m, m->thermo_timer_source, &m->thermo_timer_deadline, thermo_manager_next_deadline(m->thermo));
        return 0;
}

int manager_set_relay(Manager *m, const char *relay, bool enabled) {
        FlowTime now;

        if (isempty(relay))
                return -EINVAL;
        manager_now(m, &now);
        (void) flow_engine_set_relay(m->engine, relay, enabled, &now);
        broadcast_relay(m, relay, enabled);
        FOREACH_OBSERVER(m, relay_changed, relay, enabled);
        return 0;
}

int manager_clear_quarantine(Manager *m, const char *meter) {
        FlowTime now;
        int r;

        if (m->stopping)
                return -ESHUTDOWN;
        manager_now(m, &now);
        r = flow_engine_clear_quarantine(m->engine, meter, &now);
        manager_engine_done(m);
        return r;
}

FlowGhostMode manager_ghost_filter(Manager *m) {
        return m->config.settings.ghost_filter;
}

/* ---- controllers ---- */

static Controller *find_controller(Manager *m, const char *name) {
        for (size_t i = 0; i < m->n_controllers; i++)
                if (streq(m->controllers[i].name, name))
                        return &m->controllers[i];
        return NULL;
}

const Controller *manager_find_controller(Manager *m, const char *name) {
        return find_controller(m, name);
}

size_t manager_n_controllers(Manager *m) {
        return m->n_controllers;
}

const Controller *manager_controller_at(Manager *m, size_t i) {
        return i < m->n_controllers ? &m->controllers[i] : NULL;
}

static int replace_str(char **p, const char *v) {
        char *n = NULL;

        if (v) {
                n = strdup(v);
                if (!n)
                        return -ENOMEM;
        }
        free(*p);
        *p = n;
        return 0;
}

static void handle_controller_connected(Manager *m, KegnetPeer *peer, const KegnetControllerConnectedEvent *ev) {
        Controller *c;
        uint64_t now = 0;

        c = find_controller(m, ev->controller_name);
        if (!c) {
                /* Without a registry entry the reset notice still applies: it is about ticks. */
                if (m->n_controllers >= MAX_CONTROLLERS) {
                        log_warning("Too many controllers (%u); ignoring controller %s", MAX_CONTROLLERS,
                                    ev->controller_name);
                        goto reset;
                }
                Controller *n = realloc(m->controllers, (m->n_controllers + 1) * sizeof(Controller));
                if (!n) {
                        log_error("Out of memory adding controller %s", ev->controller_name);
                        goto reset;
                }
                m->controllers = n;
                c = &m->controllers[m->n_controllers];
                *c = (Controller) {};
                c->name = strdup(ev->controller_name);
                if (!c->name) {
                        log_error("Out of memory adding controller %s", ev->controller_name);
                        goto reset;
                }
                m->n_controllers++;
        } else if (c->connected && c->peer_id != 0 && c->peer_id != kegnet_peer_id(peer))
                log_warning("Controller %s announced by two connections (%s, %s)", c->name,
                            c->peer_address, kegnet_peer_address(peer));

        if (ev->serial_number)
                (void) replace_str(&c->serial_number, ev->serial_number);
        if (ev->device)
                (void) replace_str(&c->device, ev->device);
        if (ev->has_firmware_version) {
                c->has_firmware_version = true;
                c->firmware_version = ev->firmware_version;
        }
        if (ev->has_uptime_ms) {
                c->has_uptime_ms = true;
                c->uptime_ms = ev->uptime_ms;
        }
        (void) sd_event_now(m->event, CLOCK_REALTIME, &now);
        c->last_seen_realtime = now;
        c->connected = true;
        c->peer_id = kegnet_peer_id(peer);
        snprintf(c->peer_address, sizeof(c->peer_address), "%s", kegnet_peer_address(peer));

        char fw[16];
        if (c->has_firmware_version)
                snprintf(fw, sizeof(fw), "%" PRIu32, c->firmware_version);
        else
                snprintf(fw, sizeof(fw), "unknown");
        log_info("Controller connected: %s serial=%s firmware_version=%s board_reset=%s (from %s)", c->name,
                 c->serial_number ? (*c->serial_number ? c->serial_number : "\"\"") : "unknown",
                 fw, ev->board_reset ? "yes" : "no", kegnet_peer_address(peer));
        FOREACH_OBSERVER(m, controller_changed, c);

reset:
        if (ev->board_reset) {
                (void) flow_engine_controller_reset(m->engine, ev->controller_name);
                manager_engine_done(m);
        }
}

/* ---- kegnet ---- */

static void on_kegnet_close(KegnetServer *s, KegnetPeer *p, void *userdata) {
        Manager *m = userdata;
        uint64_t id = kegnet_peer_id(p);

        for (size_t i = 0; i < m->n_controllers; i++) {
                Controller *c = &m->controllers[i];
                if (c->peer_id != id)
                        continue;
                c->connected = false;
                c->peer_id = 0;
                c->peer_address[0] = '\0';
                (void) sd_event_now(m->event, CLOCK_REALTIME, &c->last_seen_realtime);
                log_info("Controller disconnected: %s", c->name);
                FOREACH_OBSERVER(m, controller_changed, c);
        }
}

static void on_kegnet_message(KegnetServer *s, KegnetPeer *p, const KegnetMessage *msg, void *userdata) {
        Manager *m = userdata;
        int r;

        switch (msg->kind) {
        case KEGNET_METER_UPDATE:
                r = manager_meter_update(m, msg->meter_update.meter_name, msg->meter_update.reading);
                if (r < 0 && r != -ESHUTDOWN)
                        log_warning_errno(r, "MeterUpdate for %s failed: %m", msg->meter_update.meter_name);
                break;
        case KEGNET_THERMO_EVENT:
                (void) manager_thermo_event(m, msg->thermo_event.sensor_name, msg->thermo_event.sensor_value);
                break;
        case KEGNET_TOKEN_AUTH_EVENT: {
                const KegnetTokenAuthEvent *t = &msg->token_auth_event;
                r = manager_token_event(m, t->auth_device_name, t->token_value, t->meter_name,
                                        t->status == KEGNET_TOKEN_ADDED);
                if (r < 0 && r != -ESHUTDOWN)
                        log_warning_errno(r, "TokenAuthEvent failed: %m");
                break;
        }
        case KEGNET_FLOW_REQUEST: {
                const KegnetFlowRequest *f = &msg->flow_request;
                if (f->request == KEGNET_REQUEST_START_FLOW) {
                        r = manager_start_flow(m, f->meter_name);
                        if (r == -EPERM)
                                r = 0;  /* quarantined: ignored, the engine said so */
                } else if (f->request == KEGNET_REQUEST_STOP_FLOW)
                        r = manager_stop_flow(m, f->meter_name);
                else {
                        log_debug("Ignoring report_status request for %s", f->meter_name);
                        r = 0;
                }
                if (r < 0 && r != -ESHUTDOWN)
                        log_warning_errno(r, "FlowRequest for %s failed: %m", f->meter_name);
                break;
        }
        case KEGNET_CONTROLLER_CONNECTED_EVENT:
                handle_controller_connected(m, p, &msg->controller_connected_event);
                break;
        default:
                log_debug("Ignoring %s from %s", msg->event_name ?: "?", kegnet_peer_address(p));
                break;
        }
}

static void on_kegnet_drained(KegnetServer *s, void *userdata) {
        Manager *m = userdata;

        if (m->stopping)
                (void) sd_event_exit(m->event, 0);
}

/* ---- taps, tokens, reload ---- */

static void on_tap_changed(const char *meter, TapChange change, void *userdata) {
        Manager *m = userdata;
        FOREACH_OBSERVER(m, tap_changed, meter, change);
}

static int tokens_file_lookup(Manager *m, const char *device, const char *value, void *userdata) {
        const char *username = NULL;

        switch (tokens_lookup(m->tokens, device, value, &username)) {
        case TOKENS_OK:
                break;
        case TOKENS_DISABLED:
                log_named(LOG_INFO, "AuthenticationManager", "Token disabled: %s/%s", device, value);
                username = NULL;
                break;
        case TOKENS_NOT_ASSIGNED:
        default:
                log_named(LOG_INFO, "AuthenticationManager", "Token not assigned: %s/%s", device, value);
                username = NULL;
                break;
        }
        manager_auth_answer(m, device, value, username);
        return 0;
}

static const ManagerAuthBackend tokens_file_backend = {
        .lookup = tokens_file_lookup,
};

static int load_tokens(Manager *m, bool startup) {
        _cleanup_(tokens_freep) Tokens *db = NULL;
        _cleanup_(freep) char *error = NULL;
        int r;

        r = tokens_load(m->tokens_file, &db, &error);
        if (r == -ENOENT) {
                log_named(LOG_WARNING, "AuthenticationManager", "Tokens file %s does not exist; no token is assigned",
                          m->tokens_file);
                r = 0;
        } else if (r < 0) {
                if (error)
                        log_named(LOG_ERR, "AuthenticationManager", "Bad tokens file: %s%s", error,
                                  startup ? "" : "; keeping the previous tokens");
                else
                        log_named(LOG_ERR, "AuthenticationManager", "Cannot read tokens file %s: %s%s",
                                  m->tokens_file, strerror(-r), startup ? "" : "; keeping the previous tokens");
                return r;
        } else
                log_named(LOG_INFO, "AuthenticationManager", "Loaded %zu tokens from %s", tokens_size(db),
                          m->tokens_file);

        tokens_free(m->tokens);
        m->tokens = TAKE_PTR(db);
        return 0;
}

/* "Ghost filter: <mode>" plus how many taps differ from it. */
static void log_ghost_filter(Manager *m) {
        FlowGhostMode mode = m->config.settings.ghost_filter;
        size_t differ = 0;

        for (size_t i = 0; i < flow_engine_n_taps(m->engine); i++) {
                FlowTapInfo t;
                if (flow_engine_tap_at(m->engine, i, &t) >= 0 && t.ghost_filter != mode)
                        differ++;
        }
        if (differ > 0)
                log_named(LOG_INFO, "flowmanager", "Ghost filter: %s (%zu taps differ)", flow_ghost_mode_to_string(mode),
                          differ);
        else
                log_named(LOG_INFO, "flowmanager", "Ghost filter: %s", flow_ghost_mode_to_string(mode));
}

int manager_reload(Manager *m) {
        int r = 0;

        (void) log_reopen();
        if (m->config.standalone) {
                r = tap_registry_load_file(m->taps, m->taps_file, 1.0 / m->config.default_ticks_per_ml);
                if (r < 0)
                        log_named(LOG_ERR, "TapManager", "Keeping the previous taps");
                manager_engine_done(m);
                if (!isempty(m->tokens_file))
                        (void) load_tokens(m, false);
        } else {
                r = tap_registry_load_settings(m->taps, m->taps_file);
                if (r < 0)
                        log_named(LOG_ERR, "TapManager", "Keeping the previous ghost-filter settings");
        }
        /* The first failure is returned (D-Bus Sync() reports it); the rest is still done. */
        if (m->drinks) {
                int k = drink_sink_reopen(m->drinks);
                if (k < 0 && r >= 0)
                        r = k;
        }
        if (m->thermo_log)
                (void) thermo_log_reopen(m->thermo_log);
        return r < 0 ? r : 0;
}

/* ---- shutdown ---- */

static int on_shutdown_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_warning("Output to %zu clients not flushed within the time limit; closing them",
                    kegnet_server_n_peers(m->kegnet));
        return sd_event_exit(m->event, 0);
}

void manager_stop(Manager *m) {
        FlowTime now;
        uint64_t mono = 0;
        int r;

        if (m->stopping)
                return;
        m->stopping = true;
        (void) daemon_notify_stopping();
        for (size_t i = 0; i < m->n_observers; i++)
                if (m->observers[i].o->stopping)
                        m->observers[i].o->stopping(m, m->observers[i].userdata);

        kegnet_server_shutdown(m->kegnet);

        /* Every active flow ends as if stopped: relays closed, drinks recorded, completed sent. */
        manager_now(m, &now);
        r = flow_engine_shutdown(m->engine, &now);
        if (r > 0)
                log_info("Ended %d active flows for shutdown", r);
        manager_engine_done(m);

        m->flow_timer_source = sd_event_source_disable_unref(m->flow_timer_source);
        m->thermo_timer_source = sd_event_source_disable_unref(m->thermo_timer_source);

        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &mono);
        r = event_timer_arm(m->event, &m->shutdown_timer_source,
                            mono + (m->config.shutdown_flush_usec ?: SHUTDOWN_FLUSH_USEC_DEFAULT), USEC_PER_MSEC,
                            on_shutdown_timer, m);
        if (r < 0)
                (void) sd_event_exit(m->event, 0);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        if (si->ssi_signo == SIGHUP) {
                log_info("Got signal %u, reloading", si->ssi_signo);
                (void) manager_reload(m);
                return 0;
        }

        log_info("Got signal %u", si->ssi_signo);
        if (m->stopping) {
                /* A second request: do not wait for slow clients any longer. */
                return sd_event_exit(m->event, 0);
        }
        manager_stop(m);
        return 0;
}

/* ---- set-up ---- */

static int setup_signals(Manager *m) {
        static const int signals[MANAGER_N_SIGNALS] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP };

        (void) signal(SIGPIPE, SIG_IGN);
        return daemon_watch_signals(m->event, signals, ELEMENTSOF(signals), on_signal, m, m->signal_sources);
}

static int setup_timers(Manager *m) {
        int r;

        /* Accuracy 1 us: idle deadlines must fire exactly, not within sd-event's default 250 ms. */
        r = event_timer_arm(m->event, &m->flow_timer_source, UINT64_MAX, 1, on_flow_timer, m);
        if (r < 0)
                return log_error_errno(r, "Cannot create the flow timer: %m");
        (void) sd_event_source_set_enabled(m->flow_timer_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(m->flow_timer_source, "flow-timer");

        r = event_timer_arm(m->event, &m->thermo_timer_source, UINT64_MAX, 100 * USEC_PER_MSEC, on_thermo_timer, m);
        if (r < 0)
                return log_error_errno(r, "Cannot create the thermo timer: %m");
        (void) sd_event_source_set_enabled(m->thermo_timer_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(m->thermo_timer_source, "thermo-timer");
        return 0;
}

static int dup_config(Manager *m, const ManagerConfig *c) {
        m->config = *c;
        m->bind_addr = strdup(c->bind_addr ?: KEGNET_DEFAULT_ADDR);
        m->state_dir = strdup(c->state_dir ?: "");
        m->taps_file = strdup(c->taps_file ?: "");
        m->tokens_file = strdup(c->tokens_file ?: "");
        if (!m->bind_addr || !m->state_dir || !m->taps_file || !m->tokens_file)
                return -ENOMEM;
        m->config.bind_addr = m->bind_addr;
        m->config.state_dir = m->state_dir;
        m->config.taps_file = m->taps_file;
        m->config.tokens_file = m->tokens_file;
        return 0;
}

int manager_new(Manager **ret, const ManagerConfig *config) {
        _cleanup_(manager_freep) Manager *m = NULL;
        FlowEngineConfig fc;
        KegnetServerOptions ko;
        uint64_t now = 0;
        int r;

        if (config->default_ticks_per_ml <= 0 || isempty(config->state_dir))
                return log_error_errno(-EINVAL, "Invalid manager configuration");

        m = calloc(1, sizeof(Manager));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory");
        m->flow_timer_deadline = UINT64_MAX;
        m->thermo_timer_deadline = UINT64_MAX;
        r = dup_config(m, config);
        if (r < 0)
                return log_error_errno(r, "Out of memory");

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return log_error_errno(r, "Cannot enable the watchdog: %m");
        /* Early, so that a SIGTERM during start-up waits for the loop and ends in an orderly way. */
        r = setup_signals(m);
        if (r < 0)
                return r;

        /* Flow engine first: taps and the drink sink hang off it. */
        flow_engine_config_init(&fc);
        (void) sd_event_now(m->event, CLOCK_REALTIME, &now);
        fc.first_flow_id = now / USEC_PER_SEC;
        fc.max_tick_delta = config->max_tick_delta;
        fc.settings = config->settings;
        fc.create_unknown_taps = config->standalone;
        fc.default_ml_per_tick = 1.0 / config->default_ticks_per_ml;
        r = flow_engine_new(&m->engine, &fc, on_engine_event, m);
        if (r < 0)
                return log_error_errno(r, "Cannot create the flow engine: %m");

        r = thermo_manager_new(&m->thermo);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        r = tap_registry_new(&m->taps, m->engine, &config->settings, on_tap_changed, m);
        if (r < 0)
                return log_error_errno(r, "Out of memory");

        /* Spec start-up order: state directory, socket, (D-Bus), taps file. */
        if (config->standalone) {
                r = drinks_log_new(&m->drinks, m->state_dir, m->event, config->retry_usec);
                if (r < 0)
                        return log_error_errno(r, "State directory %s is unusable: %m", m->state_dir);
                drink_sink_set_accepted_handler(m->drinks, on_sink_accepted, m);
                r = thermo_log_new(&m->thermo_log, m->state_dir);
                if (r < 0)
                        return log_error_errno(r, "State directory %s is unusable: %m", m->state_dir);
        }

        kegnet_server_options_init(&ko);
        ko.debug_events = config->debug_events;
        if (config->max_clients > 0)
                ko.max_peers = config->max_clients;
        r = kegnet_server_new(&m->kegnet, m->event, m->bind_addr, &ko,
                              &(KegnetServerCallbacks) {
                                      .on_message = on_kegnet_message,
                                      .on_close = on_kegnet_close,
                                      .on_drained = on_kegnet_drained,
                              }, m);
        if (r < 0)
                return r;

        if (!config->standalone) {
                /* The server gives the taps; the taps file still gives their ghost-filter settings. */
                r = tap_registry_load_settings(m->taps, m->taps_file);
                if (r < 0)
                        return r;
        }
        if (config->standalone) {
                r = tap_registry_load_file(m->taps, m->taps_file, fc.default_ml_per_tick);
                if (r < 0)
                        return r;
                if (!isempty(m->tokens_file)) {
                        r = load_tokens(m, true);
                        if (r < 0)
                                return r;
                        manager_set_auth_backend(m, &tokens_file_backend, NULL);
                }
        }

        r = setup_timers(m);
        if (r < 0)
                return r;

        log_ghost_filter(m);
        (void) quarantine_load(m->engine, m->state_dir);

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;

        for (size_t i = 0; i < ELEMENTSOF(m->signal_sources); i++)
                m->signal_sources[i] = sd_event_source_disable_unref(m->signal_sources[i]);
        m->flow_timer_source = sd_event_source_disable_unref(m->flow_timer_source);
        m->thermo_timer_source = sd_event_source_disable_unref(m->thermo_timer_source);
        m->shutdown_timer_source = sd_event_source_disable_unref(m->shutdown_timer_source);

        kegnet_server_free(m->kegnet);
        for (size_t i = 0; i < m->n_accepted; i++)
                drink_free(m->accepted[i]);
        free(m->accepted);
        drink_sink_free(m->drinks);
        thermo_log_free(m->thermo_log);
        tokens_free(m->tokens);
        tap_registry_free(m->taps);
        thermo_manager_free(m->thermo);
        flow_engine_free(m->engine);

        for (size_t i = 0; i < m->n_controllers; i++) {
                free(m->controllers[i].name);
                free(m->controllers[i].serial_number);
                free(m->controllers[i].device);
        }
        free(m->controllers);
        free(m->observers);

        sd_event_unref(m->event);
        free(m->bind_addr);
        free(m->state_dir);
        free(m->taps_file);
        free(m->tokens_file);
        free(m);
        return NULL;
}

int manager_run(Manager *m) {
        int r;

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return r;
}

/* ---- accessors and plug-ins ---- */

sd_event *manager_get_event(Manager *m) { return m->event; }
FlowEngine *manager_get_engine(Manager *m) { return m->engine; }
TapRegistry *manager_get_taps(Manager *m) { return m->taps; }
ThermoManager *manager_get_thermo(Manager *m) { return m->thermo; }
KegnetServer *manager_get_kegnet(Manager *m) { return m->kegnet; }
bool manager_is_standalone(Manager *m) { return m->config.standalone; }
DrinkSink *manager_get_drink_sink(Manager *m) { return m->drinks; }

void manager_set_drink_sink(Manager *m, DrinkSink *sink) {
        drink_sink_free(m->drinks);
        m->drinks = sink;
        if (sink)
                drink_sink_set_accepted_handler(sink, on_sink_accepted, m);
}

void manager_set_auth_backend(Manager *m, const ManagerAuthBackend *backend, void *userdata) {
        m->has_auth = backend && backend->lookup;
        if (m->has_auth)
                m->auth = *backend;
        m->auth_userdata = userdata;
}

int manager_add_observer(Manager *m, const ManagerObserver *o, void *userdata) {
        ObserverSlot *n = realloc(m->observers, (m->n_observers + 1) * sizeof(ObserverSlot));
        if (!n)
                return -ENOMEM;
        m->observers = n;
        m->observers[m->n_observers++] = (ObserverSlot) { .o = o, .userdata = userdata };
        return 0;
}

void manager_remove_observer(Manager *m, const ManagerObserver *o, void *userdata) {
        for (size_t i = 0; i < m->n_observers; i++)
                if (m->observers[i].o == o && m->observers[i].userdata == userdata) {
                        memmove(&m->observers[i], &m->observers[i + 1],
                                (m->n_observers - i - 1) * sizeof(ObserverSlot));
                        m->n_observers--;
                        return;
                }
}
