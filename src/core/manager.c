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
#include "disk-reserve.h"
#include "drinks-log.h"
#include "flow-updates.h"
#include "manager.h"
#include "meters-state.h"
#include "quarantine.h"
#include "thermo-log.h"
#include "tokens.h"
#include "kbsp.h"
#include "util-double.h"
#include "util-event.h"
#include "util-ratelimit.h"

#define MAX_CONTROLLERS 256U
#define MANAGER_N_SIGNALS 4
/* New names one kegnet connection may bring into the tables: a Kegboard brings one controller, up to
 * six meters and a few sensors; pycore's kegboard_daemon served several boards on one connection. */
#define PEER_NEW_METERS_MAX 64U
#define PEER_NEW_SENSORS_MAX 64U
#define PEER_NEW_CONTROLLERS_MAX 16U
#define SHUTDOWN_FLUSH_USEC_DEFAULT (1 * USEC_PER_SEC)

/* Lines a kegnet peer can trigger, rate-limited per kind (util-ratelimit.h). The lines that record
 * drinks ("Logged drink", a drink that could not be written) never are. */
static LogRateLimit rl_flow_log[_FLOW_LOG_KIND_MAX] = {
        [FLOW_LOG_FLOW] = LOG_RATELIMIT_TIMED("flow messages", 10 * USEC_PER_SEC, 200),
        [FLOW_LOG_METER] = LOG_RATELIMIT_DEFAULT("meter reading messages"),
        [FLOW_LOG_TAP] = LOG_RATELIMIT_DEFAULT("first-sight tap messages"),
        [FLOW_LOG_TABLE] = LOG_RATELIMIT_DEFAULT("meters forgotten to make room"),
        [FLOW_LOG_TABLE_FULL] = LOG_RATELIMIT_DEFAULT("new meters refused (table full)"),
        [FLOW_LOG_REQUEST] = LOG_RATELIMIT_DEFAULT("flow request messages"),
        [FLOW_LOG_TOKEN] = LOG_RATELIMIT_TIMED("token messages", 10 * USEC_PER_SEC, 50),
        [FLOW_LOG_CONTROLLER] = LOG_RATELIMIT_DEFAULT("board reset messages"),
        [FLOW_LOG_GHOST] = LOG_RATELIMIT_TIMED("ghost-pour messages", 10 * USEC_PER_SEC, 200),
};
static LogRateLimit rl_tokens = LOG_RATELIMIT_TIMED("token messages", 10 * USEC_PER_SEC, 50);
static LogRateLimit rl_controllers = LOG_RATELIMIT_TIMED("controller messages", 10 * USEC_PER_SEC, 50);
static LogRateLimit rl_controller_table = LOG_RATELIMIT_DEFAULT("controller table messages");
static LogRateLimit rl_names = LOG_RATELIMIT_DEFAULT("new names refused");
static LogRateLimit rl_failures = LOG_RATELIMIT_DEFAULT("kegnet messages that failed");

/* What one kegnet connection added to the tables (kegnet_peer_get_userdata()). */
typedef struct PeerNames {
        unsigned meters, sensors, controllers;
} PeerNames;

typedef struct ObserverSlot {
        const ManagerObserver *o;
        void *userdata;
} ObserverSlot;

/* One step towards disk, in the order it happened (section 5: a drink and its meter's accounted
 * reading become durable together; a later state of a meter never overtakes an earlier drink). */
typedef enum CommitKind {
        COMMIT_DRINK,           /* write .drink, then the meter's state after it */
        COMMIT_METER,           /* the meter's state changed without a drink */
} CommitKind;

typedef struct Commit {
        struct Commit *next;
        CommitKind kind;
        char *meter;
        bool has_state;
        FlowMeterState state;   /* after this step */
        Drink *drink;           /* COMMIT_DRINK */
        bool begun;             /* its intent is in meters.json */
        bool failed_once;       /* logged that it waits */
        /* The FlowUpdate(completed) of its flow, withheld until the drink is durable. */
        bool has_flow;
        FlowInfo flow;
        char *flow_username, *flow_auth_device;
} Commit;

struct Manager {
        ManagerConfig config;           /* strings below are the owned copies */
        char *bind_addr, *state_dir, *taps_file, *tokens_file;

        sd_event *event;
        sd_event_source *signal_sources[MANAGER_N_SIGNALS];  /* SIGTERM, SIGINT, SIGQUIT, SIGHUP */
        sd_event_source *flow_timer_source;     /* armed at flow_engine_next_deadline() */
        sd_event_source *thermo_timer_source;   /* armed at thermo_manager_next_deadline() */
        sd_event_source *shutdown_timer_source; /* bounds the final output flush */

        KegnetServer *kegnet;
        FlowUpdates *flow_updates;      /* FlowUpdates to the kegnet listeners, coalesced per flow */
        FlowEngine *engine;
        TapRegistry *taps;
        ThermoManager *thermo;
        DrinkSink *drinks;
        ThermoLog *thermo_log;
        Tokens *tokens;

        /* Section 5 and the disk-full case of 10.2. */
        MetersState *meters;            /* <state_dir>/meters.json */
        DiskReserve *reserve;           /* <state_dir>/space-reserve */
        Commit *commits, **commits_tail;
        size_t n_waiting;               /* drinks queued in 'commits': not written yet */
        sd_event_source *commit_timer;  /* retries writes and the reserve while the disk is full */
        sd_event_source *meters_save_source;    /* meters.json changed in this loop iteration */
        bool meters_restored;
        bool meters_save_failed;

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
        size_t status_taps, status_pending, status_waiting;
        ManagerDiskState status_disk;
        bool status_sent;
        ManagerFlowUuidFunc flow_uuid;
        void *flow_uuid_userdata;
        ManagerStatusExtraFunc status_extra;
        void *status_extra_userdata;
        char status_extra_text[256];
        bool ready;
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
                .max_restart_delta = 20000,
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
        flow_updates_push(m->flow_updates, &msg.flow_update);
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
                        .has_ticks = true,
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

/* ---- the commit queue ---- */

static int on_commit_timer(sd_event_source *s, uint64_t usec, void *userdata);
static void manager_engine_done(Manager *m);

static Commit *commit_free(Commit *c) {
        if (!c)
                return NULL;
        free(c->meter);
        drink_free(c->drink);
        free(c->flow_username);
        free(c->flow_auth_device);
        free(c);
        return NULL;
}

static void commit_append(Manager *m, Commit *c) {
        c->next = NULL;
        *m->commits_tail = c;
        m->commits_tail = &c->next;
        if (c->kind == COMMIT_DRINK)
                m->n_waiting++;
}

static Commit *commit_pop(Manager *m) {
        Commit *c = m->commits;

        m->commits = c->next;
        if (!m->commits)
                m->commits_tail = &m->commits;
        if (c->kind == COMMIT_DRINK)
                m->n_waiting--;
        return c;
}

static Commit *commit_new(CommitKind kind, const char *meter, const FlowMeterState *state) {
        Commit *c = calloc(1, sizeof(Commit));

        if (!c)
                return NULL;
        c->kind = kind;
        c->meter = strdup(meter);
        if (!c->meter)
                return commit_free(c);
        if (state) {
                c->has_state = true;
                c->state = *state;
        }
        return c;
}

/* The drink waiting for this flow, if its write has not succeeded yet. */
static Commit *commit_find_flow(Manager *m, uint64_t flow_id) {
        for (Commit *c = m->commits; c; c = c->next)
                if (c->kind == COMMIT_DRINK && c->drink->flow_id == flow_id)
                        return c;
        return NULL;
}

/* A write into the state directory failed with r: with the space reserve released it may work now. */
bool manager_free_reserve_on(Manager *m, int r) {
        return disk_reserve_release_for(m->reserve, r);
}

static int meters_save(Manager *m) {
        int r = meters_state_save(m->meters);

        if (r < 0 && manager_free_reserve_on(m, r))
                r = meters_state_save(m->meters);
        if (r < 0) {
                if (!m->meters_save_failed)
                        log_named(LOG_ERR, "DrinkManager", "Cannot write %s/%s: %s; retrying", m->state_dir,
                                  METERS_STATE_FILE, strerror(-r));
                m->meters_save_failed = true;
                return r;
        }
        if (m->meters_save_failed)
                log_named(LOG_INFO, "DrinkManager", "%s/%s is written again", m->state_dir, METERS_STATE_FILE);
        m->meters_save_failed = false;
        return 0;
}

static void arm_commit_timer(Manager *m) {
        int r;

        if (m->stopping || !m->event)
                return;
        /* A retry of the disk: one second late is fine. */
        r = event_timer_arm_relative(m->event, &m->commit_timer, m->config.retry_usec, USEC_PER_SEC,
                                     on_commit_timer, m);
        if (r >= 0)
                (void) sd_event_source_set_description(m->commit_timer, "commit-retry");
        if (r < 0)
                log_error_errno(r, "Cannot arm the disk retry timer: %m");
}

static int on_meters_save(sd_event_source *s, void *userdata) {
        Manager *m = userdata;

        m->meters_save_source = sd_event_source_disable_unref(m->meters_save_source);
        if (meters_state_is_dirty(m->meters) && meters_save(m) < 0)
                arm_commit_timer(m);
        return 0;
}

/* meters.json changed without a drink (a baseline, a rejected report, ...): written once per loop
 * iteration, not once per message - a batch of new meters costs one write, not one each - and before
 * the kegnet output of the iteration (the Acks of those messages) goes out: the server's flush runs
 * at SD_EVENT_PRIORITY_NORMAL - 1. Stopping, at once. */
static void meters_save_soon(Manager *m) {
        int r;

        if (m->meters_save_source)
                return;
        if (m->stopping || !m->event) {
                (void) meters_save(m);
                return;
        }
        r = sd_event_add_defer(m->event, &m->meters_save_source, on_meters_save, m);
        if (r < 0) {
                (void) meters_save(m);
                return;
        }
        (void) sd_event_source_set_priority(m->meters_save_source, SD_EVENT_PRIORITY_NORMAL - 2);
        (void) sd_event_source_set_description(m->meters_save_source, "meters-save");
}

/* The drink is durable: its withheld FlowUpdate(completed) goes out, then (accepted at once, i.e.
 * written to drinks.log) its DrinkCreatedEvent; from inside the engine call that ended the flow
 * the completed update is still to come and the announcement waits for it. */
static void commit_drink_done(Manager *m, Commit *c, int sink_result) {
        Drink *d = c->drink;

        FOREACH_OBSERVER(m, drink_stored, d, true);
        if (c->failed_once)
                log_named(LOG_INFO, "DrinkManager", "Drink %s (%s, %" PRIu64 " ticks) is written now",
                          d->uuid, d->meter_name, d->ticks);
        if (c->has_flow) {
                broadcast_flow_update(m, &c->flow);
                FOREACH_OBSERVER(m, flow_updated, &c->flow);
        }
        if (sink_result != DRINK_SINK_ACCEPTED)
                return;
        if (c->has_flow) {
                announce_drink(m, d);
                return;
        }
        Drink **n = realloc(m->accepted, (m->n_accepted + 1) * sizeof(Drink *));
        if (!n) {
                /* Durable already; only the announcement is lost. */
                log_named(LOG_ERR, "DrinkManager", "Out of memory; no DrinkCreatedEvent for drink %s", d->uuid);
                return;
        }
        m->accepted = n;
        m->accepted[m->n_accepted++] = TAKE_PTR(c->drink);
}

/* Returns 0 when the drink is dealt with, -EAGAIN when it has to wait for the disk. */
static int commit_drink(Manager *m, Commit *c) {
        Drink *d = c->drink;
        int r;

        /* The intent first: a crash between it and the drink's write leaves a pending drink that
         * start-up does not find, so its ticks are counted again from the meter. */
        if (c->has_state && !c->begun) {
                r = meters_state_begin_drink(m->meters, d->uuid, c->meter, &c->state);
                if (r >= 0)
                        r = meters_save(m);
                if (r < 0) {
                        (void) meters_state_end_drink(m->meters, d->uuid, false);
                        goto wait;
                }
                c->begun = true;
        }

        r = drink_sink_record(m->drinks, d);
        if (r < 0 && manager_free_reserve_on(m, r))
                r = drink_sink_record(m->drinks, d);
        if (r == -EBADMSG || r == -EINVAL) {
                /* Never writable (text that is not UTF-8, which cannot enter the core anyway): its
                 * ticks are discarded rather than blocking every later drink. */
                log_named(LOG_ERR, "DrinkManager", "Drink %s of flow 0x%08" PRIx64 " (%" PRIu64 " ticks) cannot be "
                          "recorded; its ticks are discarded", d->uuid, d->flow_id, d->ticks);
                if (c->begun)
                        (void) meters_state_end_drink(m->meters, d->uuid, true);
                if (c->has_flow) {
                        broadcast_flow_update(m, &c->flow);
                        FOREACH_OBSERVER(m, flow_updated, &c->flow);
                }
                return 0;
        }
        if (r < 0)
                goto wait;

        if (c->begun)
                (void) meters_state_end_drink(m->meters, d->uuid, true);
        commit_drink_done(m, c, r);
        return 0;

wait:
        if (!c->failed_once) {
                c->failed_once = true;
                FOREACH_OBSERVER(m, drink_stored, d, false);
                log_named(LOG_ERR, "DrinkManager", "Drink %s (%s, %" PRIu64 " ticks) cannot be written (%s) and waits "
                          "in memory; its pour is reported completed once it is written, retrying every %" PRIu64 " s. "
                          "Its ticks are safe: the meter's accounted reading does not move before it",
                          d->uuid, d->meter_name, d->ticks, strerror(-r), m->config.retry_usec / USEC_PER_SEC);
        }
        return -EAGAIN;
}

static void storage_changed(Manager *m) {
        for (size_t i = 0; i < m->n_observers; i++)
                if (m->observers[i].o->storage_changed)
                        m->observers[i].o->storage_changed(m, m->observers[i].userdata);
        manager_update_status(m);
}

/* Works through the queue as far as the disk lets it; then saves meters.json if anything changed. */
static void commit_run(Manager *m) {
        size_t waiting = m->n_waiting;
        bool reserve = disk_reserve_held(m->reserve), blocked = false;

        while (m->commits) {
                Commit *c = m->commits;

                if (c->kind == COMMIT_METER)
                        (void) meters_state_set_meter(m->meters, c->meter, &c->state);
                else if (commit_drink(m, c) < 0) {
                        blocked = true;
                        break;
                }
                commit_free(commit_pop(m));
        }
        if (meters_state_is_dirty(m->meters))
                meters_save_soon(m);
        if (blocked || m->meters_save_failed || !disk_reserve_held(m->reserve))
                arm_commit_timer(m);
        if (waiting != m->n_waiting || reserve != disk_reserve_held(m->reserve))
                storage_changed(m);
}

static int on_commit_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        bool reserve = disk_reserve_held(m->reserve);

        (void) disk_reserve_refill(m->reserve);
        commit_run(m);
        if (reserve != disk_reserve_held(m->reserve))
                storage_changed(m);
        manager_engine_done(m);
        return 0;
}

static void record_drink(Manager *m, const Drink *flow_drink, const FlowMeterState *after) {
        _cleanup_(drink_freep) Drink *d = NULL;
        Commit *c;
        int r;

        r = drink_new_from_flow(flow_drink, &d);
        if (r >= 0 && m->flow_uuid) {
                /* A UUID handed out while the flow ran (the event protocol's pour_id). */
                const char *u = m->flow_uuid(m, flow_drink->flow_id, flow_drink->meter_name, m->flow_uuid_userdata);
                if (u && uuid_is_canonical(u))
                        memcpy(d->uuid, u, UUID_STRING_MAX);
        }
        if (r >= 0) {
                c = commit_new(COMMIT_DRINK, flow_drink->meter_name, after);
                if (!c)
                        r = -ENOMEM;
        }
        if (r < 0) {
                log_named(LOG_ERR, "DrinkManager", "Cannot create drink for flow 0x%08" PRIx64 ": %s",
                          flow_drink->flow_id, strerror(-r));
                return;
        }
        c->drink = TAKE_PTR(d);
        commit_append(m, c);
        commit_run(m);
}

static void record_meter_state(Manager *m, const char *meter, const FlowMeterState *state) {
        Commit *c = commit_new(COMMIT_METER, meter, state);

        if (!c) {
                log_named(LOG_ERR, "DrinkManager", "Out of memory recording the state of meter %s", meter);
                return;
        }
        commit_append(m, c);
}

/* The completed update of a flow whose drink is not written yet waits with it. */
static bool withhold_completed(Manager *m, const FlowInfo *f) {
        Commit *c;

        if (f->state != FLOW_STATE_COMPLETED)
                return false;
        c = commit_find_flow(m, f->flow_id);
        if (!c || c->has_flow)
                return false;
        c->flow = *f;
        c->flow.meter_name = c->meter;
        c->flow.relay_name = NULL;
        if ((f->username && !(c->flow_username = strdup(f->username))) ||
            (f->auth_device && !(c->flow_auth_device = strdup(f->auth_device)))) {
                log_named(LOG_ERR, "DrinkManager", "Out of memory keeping the completion of flow 0x%08" PRIx64,
                          f->flow_id);
                return false;
        }
        c->flow.username = c->flow_username;
        c->flow.auth_device = c->flow_auth_device;
        c->has_flow = true;
        return true;
}

static void on_engine_event(FlowEngine *e, const FlowEvent *ev, void *userdata) {
        Manager *m = userdata;

        switch (ev->type) {
        case FLOW_EVENT_LOG:
                if (ev->log.kind < _FLOW_LOG_KIND_MAX &&
                    !log_ratelimit_pass(&rl_flow_log[ev->log.kind], ev->log.level, "flowmanager"))
                        break;
                (void) log_internal(ev->log.level, 0, "flowmanager", "%s", ev->log.message);
                break;
        case FLOW_EVENT_FLOW_UPDATE:
                /* Never announce a drink as completed before it is durable (its write waits). */
                if (withhold_completed(m, ev->flow))
                        break;
                broadcast_flow_update(m, ev->flow);
                FOREACH_OBSERVER(m, flow_updated, ev->flow);
                if (ev->flow->state == FLOW_STATE_COMPLETED)
                        flush_accepted(m, true, ev->flow->flow_id);
                break;
        case FLOW_EVENT_DRINK:
                record_drink(m, ev->drink, ev->meter_state);
                break;
        case FLOW_EVENT_METER_STATE:
                record_meter_state(m, ev->meter_name, ev->meter_state);
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
        case FLOW_EVENT_TAP_REMOVED:
                tap_registry_note_removed(m->taps, ev->meter_name);
                break;
        case FLOW_EVENT_METER_FORGOTTEN:
                /* Else meters.json would fill up with meters the engine no longer has. */
                meters_state_forget_meter(m->meters, ev->meter_name);
                break;
        case FLOW_EVENT_CALIBRATION:
                FOREACH_OBSERVER(m, calibration_event, ev);
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
        if (m->commits || meters_state_is_dirty(m->meters))
                commit_run(m);
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

static void on_thermo_evict(const ThermoSensor *t, void *userdata) {
        Manager *m = userdata;
        FOREACH_OBSERVER(m, sensor_removed, t);
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

ManagerDiskState manager_disk_state(Manager *m) {
        if (m->n_waiting > 0)
                return MANAGER_DISK_FULL;
        return disk_reserve_held(m->reserve) ? MANAGER_DISK_OK : MANAGER_DISK_LOW;
}

const char *manager_disk_state_to_string(ManagerDiskState s) {
        switch (s) {
        case MANAGER_DISK_OK:
                return "ok";
        case MANAGER_DISK_LOW:
                return "low";
        case MANAGER_DISK_FULL:
                return "full";
        }
        return "full";
}

size_t manager_n_waiting_drinks(Manager *m) {
        return m->n_waiting;
}

static void status_text(Manager *m, char *buf, size_t size) {
        size_t pending = (m->drinks ? drink_sink_n_pending(m->drinks) : 0) + m->n_waiting;
        char extra[160] = "";

        switch (manager_disk_state(m)) {
        case MANAGER_DISK_FULL:
                snprintf(extra, sizeof extra, "; DISK FULL: %zu drinks wait in memory to be written", m->n_waiting);
                break;
        case MANAGER_DISK_LOW:
                snprintf(extra, sizeof extra, "; disk low: no space reserve left, free some space");
                break;
        case MANAGER_DISK_OK:
                break;
        }
        snprintf(buf, size, "%s: %s mode, %zu taps, %zu queued drinks%s%s",
                 m->stopping ? "Stopping" : m->ready ? "Ready" : "Starting",
                 m->config.standalone ? "standalone" : "server", flow_engine_n_taps(m->engine), pending, extra,
                 m->status_extra_text);
}

void manager_update_status(Manager *m) {
        size_t taps = flow_engine_n_taps(m->engine);
        size_t pending = (m->drinks ? drink_sink_n_pending(m->drinks) : 0) + m->n_waiting;
        ManagerDiskState disk = manager_disk_state(m);
        char text[512], extra[sizeof m->status_extra_text] = "";

        if (m->status_extra)
                m->status_extra(m, extra, sizeof extra, m->status_extra_userdata);
        if (m->status_sent && taps == m->status_taps && pending == m->status_pending &&
            m->n_waiting == m->status_waiting && disk == m->status_disk && streq(extra, m->status_extra_text))
                return;
        memcpy(m->status_extra_text, extra, sizeof extra);
        m->status_sent = true;
        m->status_taps = taps;
        m->status_pending = pending;
        m->status_waiting = m->n_waiting;
        m->status_disk = disk;
        status_text(m, text, sizeof text);
        (void) daemon_notify_status("%s", text);
}

void manager_set_ready(Manager *m) {
        char text[256];

        if (m->ready)
                return;
        m->ready = true;
        status_text(m, text, sizeof text);
        (void) daemon_notify_ready("%s", text);
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

int manager_set_tap_grant(Manager *m, const char *meter, bool owned, const char *device) {
        FlowTime now;
        int r;

        if (m->stopping)
                return -ESHUTDOWN;
        manager_now(m, &now);
        r = flow_engine_set_tap_grant(m->engine, meter, owned, device, &now);
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

        FOREACH_OBSERVER(m, token_presented, device, norm, meter, added);
        /* A token on an event controller's reader is the server's to decide (section 1.4). */
        if (m->config.local_taps &&
            (!m->has_auth || (!targets_all_taps(meter) && manager_route(m, meter, false) == ROUTE_EVENT)))
                return 0;
        if (!m->has_auth) {
                if (!targets_all_taps(meter) && flow_engine_get_tap(m->engine, meter, &(FlowTapInfo) {}) < 0) {
                        log_named_ratelimited(&rl_tokens, LOG_WARNING, "AuthenticationManager",
                                              "Token event for unknown tap %s", meter);
                        return 0;
                }
                if (added)
                        log_named_ratelimited(&rl_tokens, LOG_INFO, "AuthenticationManager",
                                              "Token %s/%s ignored: no server (standalone mode)", device, norm);
                else
                        log_named_ratelimited(&rl_tokens, LOG_DEBUG, "AuthenticationManager",
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

bool manager_relay_exists(Manager *m, const char *relay) {
        FlowTapInfo t;
        unsigned id;

        if (isempty(relay))
                return false;
        for (size_t i = 0; flow_engine_tap_at(m->engine, i, &t) >= 0; i++)
                if (streq(t.relay_name, relay))
                        return true;
        for (size_t i = 0; i < m->n_controllers; i++)
                if (kbsp_relay_parse(relay, m->controllers[i].name, &id) > 0)
                        return true;
        return false;
}

int manager_set_relay(Manager *m, const char *relay, bool enabled) {
        FlowTime now;

        if (isempty(relay))
                return -EINVAL;
        /* A command nobody acts on is no success: say so instead of sending it. */
        if (!manager_relay_exists(m, relay))
                return -ENOENT;
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

int manager_create_tap(Manager *m, const char *meter) {
        FlowTime now;
        int r;

        if (m->stopping)
                return -ESHUTDOWN;
        manager_now(m, &now);
        r = flow_engine_first_sight(m->engine, meter, &now);
        manager_engine_done(m);
        return r;
}

int manager_start_calibration(Manager *m, const char *meter, uint64_t timeout_usec, bool hold_relay) {
        FlowTime now;
        int r;

        if (m->stopping)
                return -ESHUTDOWN;
        manager_now(m, &now);
        r = flow_engine_start_calibration(m->engine, meter, timeout_usec, hold_relay, &now);
        manager_engine_done(m);
        return r;
}

int64_t manager_end_calibration(Manager *m, const char *meter, FlowCalibrationEnd reason, double old_ml_per_tick) {
        FlowTime now;
        int64_t r;

        manager_now(m, &now);
        r = flow_engine_end_calibration(m->engine, meter, reason, old_ml_per_tick, &now);
        manager_engine_done(m);
        return r;
}

int manager_calibration_set_storing(Manager *m, const char *meter, bool storing) {
        int r;

        r = flow_engine_calibration_set_storing(m->engine, meter, storing);
        /* A deadline that passed while the result was stored is due now. */
        manager_engine_done(m);
        return r;
}

bool manager_is_stopping(Manager *m) {
        return m->stopping;
}

uint64_t manager_now_realtime(Manager *m) {
        uint64_t t = 0;

        (void) sd_event_now(m->event, CLOCK_REALTIME, &t);
        return t;
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

/* Section 5: whether the controller's counters restarted since its meters' readings were accounted
 * for (a reset notice, another board under the same name, an uptime that went backwards), and that
 * its producer reconnected (readings may have been missed meanwhile). 'listed' false: the connection
 * may not add names, so an unknown controller's identity is not recorded (its reset still applies). */
static void controller_counters(Manager *m, const KegnetControllerConnectedEvent *ev, bool listed) {
        const MetersController *k = meters_state_get_controller(m->meters, ev->controller_name);
        const char *why = ev->board_reset ? "board reset" : NULL;
        char buf[256];
        int r;

        if (!why && k && ev->serial_number && k->serial_number && !streq(ev->serial_number, k->serial_number)) {
                snprintf(buf, sizeof buf, "serial number changed from '%s' to '%s'", k->serial_number,
                         ev->serial_number);
                why = buf;
        } else if (!why && k && k->has_uptime && ev->has_uptime_ms && ev->uptime_ms < k->uptime_ms) {
                snprintf(buf, sizeof buf, "uptime went backwards (%" PRIu64 " -> %" PRIu64 " ms)", k->uptime_ms,
                         ev->uptime_ms);
                why = buf;
        }
        if (why) {
                if (!ev->board_reset)
                        log_info("Controller %s: %s; counting its meters from 0", ev->controller_name, why);
                (void) flow_engine_controller_reset(m->engine, ev->controller_name);
        }
        (void) flow_engine_controller_resync(m->engine, ev->controller_name);
        if (!listed && !k) {
                manager_engine_done(m);
                return;
        }
        r = meters_state_set_controller(m->meters, ev->controller_name, ev->serial_number, ev->has_uptime_ms,
                                        ev->uptime_ms);
        if (r >= 0 && why)
                r = meters_state_set_counts_from_zero(m->meters, ev->controller_name);
        if (r < 0)
                log_warning_errno(r, "Cannot remember the identity of controller %s: %m", ev->controller_name);
        manager_engine_done(m);
}

static void controller_done(Controller *c) {
        free(c->name);
        free(c->serial_number);
        free(c->device);
}

/* A full registry forgets the disconnected controller seen longest ago; connected ones stay. */
static bool controllers_make_room(Manager *m, const char *for_name) {
        size_t victim = SIZE_MAX;
        uint64_t now = 0;

        for (size_t i = 0; i < m->n_controllers; i++)
                if (!m->controllers[i].connected &&
                    (victim == SIZE_MAX || m->controllers[i].last_seen_realtime < m->controllers[victim].last_seen_realtime))
                        victim = i;
        if (victim == SIZE_MAX) {
                log_ratelimited(&rl_controller_table, LOG_WARNING,
                                "Too many controllers (%u, all connected); ignoring controller %s", MAX_CONTROLLERS,
                                for_name);
                return false;
        }
        (void) sd_event_now(m->event, CLOCK_REALTIME, &now);
        log_ratelimited(&rl_controller_table, LOG_WARNING,
                        "Controller table full (%u): forgetting disconnected controller %s (last seen %" PRIu64 " s ago) for %s",
                        MAX_CONTROLLERS, m->controllers[victim].name,
                        (now - MIN(now, m->controllers[victim].last_seen_realtime)) / USEC_PER_SEC, for_name);
        FOREACH_OBSERVER(m, controller_removed, &m->controllers[victim]);
        controller_done(&m->controllers[victim]);
        memmove(&m->controllers[victim], &m->controllers[victim + 1],
                (m->n_controllers - victim - 1) * sizeof(Controller));
        m->n_controllers--;
        return true;
}

/* 'listed' false: the connection may not add this name to the registry; the reset notice still
 * applies (it is about ticks). */
static void handle_controller_connected(Manager *m, KegnetPeer *peer, const KegnetControllerConnectedEvent *ev,
                                        bool listed) {
        Controller *c;
        uint64_t now = 0;

        if (!listed)
                goto reset;
        c = find_controller(m, ev->controller_name);
        if (!c) {
                /* Without a registry entry the reset notice still applies: it is about ticks. */
                if (m->n_controllers >= MAX_CONTROLLERS && !controllers_make_room(m, ev->controller_name))
                        goto reset;
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
                log_ratelimited(&rl_controllers, LOG_WARNING, "Controller %s announced by two connections (%s, %s)",
                                c->name, c->peer_address, kegnet_peer_address(peer));

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
        log_ratelimited(&rl_controllers, LOG_INFO,
                        "Controller connected: %s serial=%s firmware_version=%s board_reset=%s (from %s)", c->name,
                 c->serial_number ? (*c->serial_number ? c->serial_number : "\"\"") : "unknown",
                 fw, ev->board_reset ? "yes" : "no", kegnet_peer_address(peer));
        FOREACH_OBSERVER(m, controller_changed, c);

reset:
        controller_counters(m, ev, listed);
}

/* ---- kegnet ---- */

static void on_kegnet_connect(KegnetServer *s, KegnetPeer *p, void *userdata) {
        /* Without it the connection simply has no room for new names. */
        kegnet_peer_set_userdata(p, calloc(1, sizeof(PeerNames)), free);
}

/* Whether this connection may bring one more new name of a kind into a table. */
static bool peer_may_add(KegnetPeer *p, unsigned *count, unsigned max, const char *what, const char *name) {
        if (*count < max)
                return true;
        log_ratelimited(&rl_names, LOG_WARNING,
                        "%s brought %u new %s names (the limit per connection); ignoring %s %s",
                        kegnet_peer_address(p), max, what, what, name);
        return false;
}

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
                log_ratelimited(&rl_controllers, LOG_INFO, "Controller disconnected: %s", c->name);
                FOREACH_OBSERVER(m, controller_changed, c);
        }
}

/* A new meter of a board that is connected right now is real: it may push out a fresh junk name
 * that a meter of unknown origin could not (flow_engine_make_room()). */
static void make_room_for_board_meter(Manager *m, const char *meter) {
        FlowTime now;

        for (size_t i = 0; i < m->n_controllers; i++) {
                const Controller *c = &m->controllers[i];
                const char *port = startswith(meter, c->name);
                if (c->connected && port && *port == '.') {
                        manager_now(m, &now);
                        if (flow_engine_make_room(m->engine, meter, &now) > 0)
                                manager_engine_done(m);
                        return;
                }
        }
}

/* A meter the tables know (a configured tap's meter counts even before its first reading). */
static bool meter_known(Manager *m, const char *meter) {
        return flow_engine_get_meter(m->engine, meter, &(FlowMeterInfo) {}) >= 0 ||
               flow_engine_get_tap(m->engine, meter, &(FlowTapInfo) {}) >= 0;
}

/* A meter name this connection may use: known, or new within its limit. */
static bool peer_meter_ok(KegnetPeer *p, PeerNames *names, bool known, const char *meter) {
        return known || (names && peer_may_add(p, &names->meters, PEER_NEW_METERS_MAX, "meter", meter));
}

/* Counts the meter as this connection's if the call created it. */
static void peer_meter_note(Manager *m, PeerNames *names, bool known, const char *meter) {
        if (names && !known && flow_engine_get_meter(m->engine, meter, &(FlowMeterInfo) {}) >= 0)
                names->meters++;
}

static void on_kegnet_message(KegnetServer *s, KegnetPeer *p, const KegnetMessage *msg, void *userdata) {
        Manager *m = userdata;
        PeerNames *names = kegnet_peer_get_userdata(p);
        bool known;
        int r;

        switch (msg->kind) {
        case KEGNET_METER_UPDATE: {
                const char *meter = msg->meter_update.meter_name;
                known = meter_known(m, meter);
                if (!peer_meter_ok(p, names, known, meter))
                        break;
                if (!known)
                        make_room_for_board_meter(m, meter);
                r = manager_meter_update(m, meter, msg->meter_update.reading);
                if (r < 0 && r != -ESHUTDOWN && r != -ENOSPC)   /* a full table logged already */
                        log_ratelimited_errno(&rl_failures, LOG_WARNING, r, "MeterUpdate for %s failed: %m", meter);
                peer_meter_note(m, names, known, meter);
                break;
        }
        case KEGNET_THERMO_EVENT: {
                const char *sensor = msg->thermo_event.sensor_name;
                known = thermo_manager_find(m->thermo, sensor);
                if (!known && (!names || !peer_may_add(p, &names->sensors, PEER_NEW_SENSORS_MAX, "sensor", sensor)))
                        break;
                (void) manager_thermo_event(m, sensor, msg->thermo_event.sensor_value);
                if (names && !known && thermo_manager_find(m->thermo, sensor))
                        names->sensors++;
                break;
        }
        case KEGNET_TOKEN_AUTH_EVENT: {
                const KegnetTokenAuthEvent *t = &msg->token_auth_event;
                r = manager_token_event(m, t->auth_device_name, t->token_value, t->meter_name,
                                        t->status == KEGNET_TOKEN_ADDED);
                if (r < 0 && r != -ESHUTDOWN)
                        log_ratelimited_errno(&rl_failures, LOG_WARNING, r, "TokenAuthEvent failed: %m");
                break;
        }
        case KEGNET_FLOW_REQUEST: {
                const KegnetFlowRequest *f = &msg->flow_request;
                if (f->request == KEGNET_REQUEST_REPORT_STATUS) {
                        log_ratelimited(&rl_failures, LOG_DEBUG, "Ignoring report_status request for %s", f->meter_name);
                        break;
                }
                known = meter_known(m, f->meter_name);
                if (!peer_meter_ok(p, names, known, f->meter_name))
                        break;
                if (f->request == KEGNET_REQUEST_START_FLOW) {
                        r = manager_start_flow(m, f->meter_name);
                        if (r == -EPERM || r == -EBUSY)
                                r = 0;  /* quarantined or being calibrated: ignored, the engine said so */
                } else
                        r = manager_stop_flow(m, f->meter_name);
                if (r < 0 && r != -ESHUTDOWN && r != -ENOSPC)
                        log_ratelimited_errno(&rl_failures, LOG_WARNING, r, "FlowRequest for %s failed: %m", f->meter_name);
                peer_meter_note(m, names, known, f->meter_name);
                break;
        }
        case KEGNET_CONTROLLER_CONNECTED_EVENT: {
                const KegnetControllerConnectedEvent *c = &msg->controller_connected_event;
                bool listed = find_controller(m, c->controller_name) ||
                              (names && peer_may_add(p, &names->controllers, PEER_NEW_CONTROLLERS_MAX, "controller",
                                                     c->controller_name));
                if (listed && !find_controller(m, c->controller_name))
                        names->controllers++;
                handle_controller_connected(m, p, c, listed);
                break;
        }
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

/* Both backends: the taps file and first sight define the taps of every controller but the legacy
 * API's, and tokens on those taps are the event server's (kegboard-event-protocol.md 1.3, 1.4). */
static bool meter_is_local(const char *meter, void *userdata) {
        return manager_route(userdata, meter, false) != ROUTE_LEGACY;
}

static void tap_clock(FlowTime *ret, void *userdata) {
        manager_now(userdata, ret);
}

static int tokens_file_lookup(Manager *m, const char *device, const char *value, void *userdata) {
        const char *username = NULL;

        switch (tokens_lookup(m->tokens, device, value, &username)) {
        case TOKENS_OK:
                break;
        case TOKENS_DISABLED:
                log_named_ratelimited(&rl_tokens, LOG_INFO, "AuthenticationManager", "Token disabled: %s/%s",
                                      device, value);
                username = NULL;
                break;
        case TOKENS_NOT_ASSIGNED:
        default:
                log_named_ratelimited(&rl_tokens, LOG_INFO, "AuthenticationManager", "Token not assigned: %s/%s",
                                      device, value);
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
        if (m->config.standalone || m->config.local_taps) {
                r = tap_registry_load_file(m->taps, m->taps_file, 1.0 / m->config.default_ticks_per_ml);
                if (r < 0)
                        log_named(LOG_ERR, "TapManager", "Keeping the previous taps");
                manager_engine_done(m);
                if (m->config.standalone && !isempty(m->tokens_file))
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
        m->commits_tail = &m->commits;
        r = dup_config(m, config);
        if (r < 0)
                return log_error_errno(r, "Out of memory");

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return log_error_errno(r, "Cannot enable the watchdog: %m");
        /* Summaries of suppressed peer-triggered messages come when their window ends. */
        r = log_ratelimit_attach_event(m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot set up rate-limited logging: %m");
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
        fc.max_restart_delta = config->max_restart_delta;
        fc.create_unknown_taps = config->standalone || config->local_taps;
        if (routes_mixed(config->routes)) {
                fc.server_tap = meter_is_local;
                fc.server_tap_userdata = m;
        }
        fc.default_ml_per_tick = 1.0 / config->default_ticks_per_ml;
        r = flow_engine_new(&m->engine, &fc, on_engine_event, m);
        if (r < 0)
                return log_error_errno(r, "Cannot create the flow engine: %m");

        r = thermo_manager_new(&m->thermo);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        /* Read at the start of the loop, once the drink sink (server mode: the spool) exists. */
        r = meters_state_new(&m->meters, m->state_dir);
        if (r < 0)
                return log_error_errno(r, "State directory %s is unusable: %m", m->state_dir);
        r = disk_reserve_new(&m->reserve, m->state_dir);
        if (r < 0)
                return log_error_errno(r, "State directory %s is unusable: %m", m->state_dir);
        thermo_manager_set_evict_handler(m->thermo, on_thermo_evict, m);
        r = tap_registry_new(&m->taps, m->engine, &config->settings, on_tap_changed, m);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        tap_registry_set_clock(m->taps, tap_clock, m);
        if (routes_mixed(config->routes))
                tap_registry_set_scope(m->taps, meter_is_local, m);

        /* Spec start-up order: state directory, socket, (D-Bus), taps file. */
        if (config->standalone) {
                r = drinks_log_new(&m->drinks, m->state_dir);
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
        if (config->idle_timeout_usec > 0)
                ko.idle_timeout_usec = config->idle_timeout_usec;
        ko.open_producers = config->open_producers;
        r = kegnet_server_new(&m->kegnet, m->event, m->bind_addr, &ko,
                              &(KegnetServerCallbacks) {
                                      .on_connect = on_kegnet_connect,
                                      .on_message = on_kegnet_message,
                                      .on_close = on_kegnet_close,
                                      .on_drained = on_kegnet_drained,
                              }, m);
        if (r < 0)
                return r;
        r = flow_updates_new(&m->flow_updates, m->event, m->kegnet, FLOW_UPDATES_INTERVAL_DEFAULT);
        if (r < 0)
                return log_error_errno(r, "%m");

        if (!config->standalone && !config->local_taps) {
                /* The server gives the taps; the taps file still gives their ghost-filter settings. */
                r = tap_registry_load_settings(m->taps, m->taps_file);
                if (r < 0)
                        return r;
        }
        if (config->standalone || config->local_taps) {
                r = tap_registry_load_file(m->taps, m->taps_file, fc.default_ml_per_tick);
                if (r < 0)
                        return r;
                if (config->standalone && !isempty(m->tokens_file)) {
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
        m->commit_timer = sd_event_source_disable_unref(m->commit_timer);
        m->meters_save_source = sd_event_source_disable_unref(m->meters_save_source);
        /* The loop may have ended before its last change was written. */
        if (meters_state_is_dirty(m->meters))
                (void) meters_save(m);

        if (m->n_waiting > 0)
                log_named(LOG_WARNING, "DrinkManager", "%zu drinks could not be written (the disk is full); their "
                          "meters' accounted readings stayed before them, so the next start counts their ticks "
                          "again from the meters", m->n_waiting);
        while (m->commits)
                commit_free(commit_pop(m));
        meters_state_free(m->meters);
        disk_reserve_free(m->reserve);

        flow_updates_free(m->flow_updates);
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

        for (size_t i = 0; i < m->n_controllers; i++)
                controller_done(&m->controllers[i]);
        free(m->controllers);
        free(m->observers);

        log_ratelimit_detach_event();
        (void) log_ratelimit_flush_all();
        sd_event_unref(m->event);
        free(m->bind_addr);
        free(m->state_dir);
        free(m->taps_file);
        free(m->tokens_file);
        free(m);
        return NULL;
}

static int sink_contains(const char *uuid, void *userdata) {
        Manager *m = userdata;
        return m->drinks ? drink_sink_contains(m->drinks, uuid) : 0;
}

/* Section 5: every meter resumes from what the last run accounted for. */
static int manager_restore_meters(Manager *m) {
        FlowTime now;
        int r;

        r = meters_state_load(m->meters);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        r = meters_state_resolve_pending(m->meters, sink_contains, m);
        if (r < 0)
                return r;
        manager_now(m, &now);
        for (size_t i = 0; i < meters_state_n_meters(m->meters); i++) {
                FlowMeterState st;
                const char *name;

                if (meters_state_meter_at(m->meters, i, &name, &st) < 0)
                        break;
                r = flow_engine_restore_meter(m->engine, name, &st, &now);
                if (r < 0)
                        log_warning_errno(r, "Cannot restore meter %s: %m", name);
        }
        /* Meters of those boards that no run has seen yet count from 0. */
        for (size_t i = 0; i < meters_state_n_controllers(m->meters); i++) {
                const MetersController *c = meters_state_controller_at(m->meters, i);
                if (c->counts_from_zero)
                        (void) flow_engine_controller_counts_from_zero(m->engine, c->name);
        }
        m->meters_restored = true;
        manager_engine_done(m);
        return 0;
}

int manager_run(Manager *m) {
        int r;

        if (!m->meters_restored) {
                r = manager_restore_meters(m);
                if (r < 0)
                        return r;
        }
        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return r;
}

/* ---- accessors and plug-ins ---- */

sd_event *manager_get_event(Manager *m) { return m->event; }
FlowEngine *manager_get_engine(Manager *m) { return m->engine; }
TapRegistry *manager_get_taps(Manager *m) { return m->taps; }
RouteBackend manager_route(Manager *m, const char *name, bool is_controller) {
        return routes_lookup(m->config.routes, name, is_controller);
}
ThermoManager *manager_get_thermo(Manager *m) { return m->thermo; }
KegnetServer *manager_get_kegnet(Manager *m) { return m->kegnet; }
bool manager_is_standalone(Manager *m) { return m->config.standalone; }
DrinkSink *manager_get_drink_sink(Manager *m) { return m->drinks; }

void manager_set_flow_uuid(Manager *m, ManagerFlowUuidFunc f, void *userdata) {
        m->flow_uuid = f;
        m->flow_uuid_userdata = userdata;
}

void manager_set_status_extra(Manager *m, ManagerStatusExtraFunc f, void *userdata) {
        m->status_extra = f;
        m->status_extra_userdata = userdata;
}

DrinkSink *manager_take_drink_sink(Manager *m) {
        DrinkSink *s = TAKE_PTR(m->drinks);
        if (s)
                drink_sink_set_accepted_handler(s, NULL, NULL);
        return s;
}

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
