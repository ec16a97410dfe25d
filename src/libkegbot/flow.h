/* Flow engine: meter accounting, taps, flows, exact idle deadlines, token binding and relay decisions
 * (spec/core-behaviour.md sections 4-8 and 10.1), and the ghost-pour filter that decides which counted
 * ticks are beer (spec/ghost-pours.md). Pure: no I/O, no clock, no logging. The caller passes the time
 * in on every call and receives, through one handler, the ordered events to publish. */
#pragma once

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drink.h"
#include "macro.h"
#include "tick-series.h"

#define FLOW_ALL_TAPS "__all_taps__"
#define FLOW_DEVICE_ONEWIRE "core.onewire"
#define FLOW_DEVICE_RFID "core.rfid"

/* The calibration a tap may have, as mL per tick and as ticks per mL alike (1/100 to 100): beyond
 * it a volume is nonsense (1e308 mL per tick overflowed every volume to infinity). */
#define FLOW_CALIBRATION_MIN 0.01
#define FLOW_CALIBRATION_MAX 100.0

static inline bool flow_calibration_is_valid(double x) {
        return isfinite(x) && x >= FLOW_CALIBRATION_MIN && x <= FLOW_CALIBRATION_MAX;
}

/* No deadline pending (flow_engine_next_deadline()). */
#define FLOW_USEC_INFINITY UINT64_MAX

/* Meters the engine tracks at most; a stream of made-up meter names cannot grow memory forever.
 * When the table is full, a meter that has no flow and no configured tap is forgotten to make room
 * (its first-sight tap with it): first one that never counted a tick and was not seen for
 * meter_evict_grace_usec, else one not seen for meter_evict_idle_usec; else the new name is refused.
 * A forgotten meter that comes back takes its next reading as a baseline. */
#define FLOW_ENGINE_MAX_METERS 1024

typedef struct FlowEngine FlowEngine;

/* ---- ghost-filter settings (ghost-pours.md section 4) ---- */

typedef enum FlowGhostMode {
        FLOW_GHOST_OFF,                 /* no filter: pycore behaviour */
        FLOW_GHOST_LOG,                 /* record what "off" records; classify and report only */
        FLOW_GHOST_ON,                  /* classify and act */
        _FLOW_GHOST_MODE_MAX,
} FlowGhostMode;

const char *flow_ghost_mode_to_string(FlowGhostMode m);        /* "off", "log", "on" */
int flow_ghost_mode_from_string(const char *s);                 /* a FlowGhostMode or -EINVAL */

/* The rule that classified ghost ticks; G8 is the minimum drink volume. */
typedef enum FlowGhostRule {
        FLOW_RULE_NONE = 0,
        FLOW_RULE_G1 = 1,               /* valve closed */
        FLOW_RULE_G2,                   /* too little volume to start a pour */
        FLOW_RULE_G3,                   /* no step above the ghost baseline */
        FLOW_RULE_G4,                   /* below the activity floor / ghost share under a pour */
        FLOW_RULE_G5,                   /* average rate too low */
        FLOW_RULE_G6,                   /* too little in the onset */
        FLOW_RULE_G7,                   /* ran without a pause: cut, quarantine */
        FLOW_RULE_G8,                   /* below the minimum drink volume */
        _FLOW_RULE_MAX,
} FlowGhostRule;

const char *flow_ghost_rule_to_string(FlowGhostRule r);        /* "G1".."G8" */

/* The bounds of the settings, shared by the flags and the taps file keys. */
#define FLOW_VALVE_CLOSED_GRACE_S_MAX 60.0
#define FLOW_POUR_START_WINDOW_S_MIN 0.5
#define FLOW_POUR_START_WINDOW_S_MAX 4.0
#define FLOW_GHOST_BASELINE_S_MIN 1.0
#define FLOW_GHOST_BASELINE_S_MAX 12.0
#define FLOW_GHOST_ONSET_S_MIN 1.0
#define FLOW_GHOST_ONSET_S_MAX 600.0
#define FLOW_MAX_POUR_S_MIN 10.0        /* or 0 = G7 off */
#define FLOW_MAX_POUR_S_MAX 86400.0

/* One tap's settings (the flags' values, overridden per tap by the taps file). */
typedef struct FlowSettings {
        FlowGhostMode ghost_filter;     /* G0 */
        bool valve_closed_gate;         /* G1 */
        double valve_closed_grace_s;    /* G1, 0..60 */
        double pour_start_ml;           /* G2, >= 0 (0 = off) */
        double pour_start_window_s;     /* G2, 0.5..4 */
        double ghost_step_ml_s;         /* G3, >= 0 (0 = off) */
        double ghost_baseline_s;        /* G3, G4, 1..12 */
        double pour_activity_ml_s;      /* G4, >= 0 (0 = off) */
        double ghost_min_duration_s;    /* G5, G6, >= 0 (0 = both off) */
        double ghost_max_avg_ml_s;      /* G5, >= 0 (0 = off) */
        double ghost_onset_s;           /* G6, 1..600 */
        double ghost_min_onset_ml;      /* G6, >= 0 (0 = off) */
        double max_pour_s;              /* G7, 0 or 10..86400 */
        unsigned quarantine_after_cuts; /* G7, 0 = never */
        double min_volume_ml;           /* G8: the minimum drink volume, in every mode */
        double kick_rate_ml_s;          /* G9, >= 0 (0 = off) */
} FlowSettings;

/* The spec's defaults: on, gate on, 3 s, 6 mL in 2 s, step 10, baseline 8 s, floor 3, 60 s, 2 mL/s,
 * 20 s, 40 mL, 300 s, 2 cuts, 10 mL, 120 mL/s. */
void flow_settings_init(FlowSettings *s);
/* Sets one setting from text, by its taps-file key (the flag's name). -ENOENT: not a setting;
 * -EINVAL: the value does not parse or is out of bounds, *ret_reason says why (static text). */
int flow_settings_set(FlowSettings *s, const char *key, const char *value, const char **ret_reason);
bool flow_settings_is_key(const char *key);
/* Every value within its bounds? Otherwise -EINVAL, the key and the reason (static text). */
int flow_settings_check(const FlowSettings *s, const char **ret_key, const char **ret_reason);
/* T(v): a volume threshold in ticks, max(3, ceil(v / c)), a quotient within 1e-9 of an integer
 * counting as that integer. */
uint64_t flow_volume_ticks(double ml, double ml_per_tick);

/* All in microseconds. Every mutating call takes the current time. */
typedef struct FlowTime {
        uint64_t monotonic;     /* CLOCK_MONOTONIC: idle deadlines, drink duration */
        uint64_t realtime;      /* CLOCK_REALTIME: reported timestamps only */
        uint64_t boottime;      /* CLOCK_BOOTTIME: kept with the last tick for clock correction (10.4) */
} FlowTime;

typedef struct FlowEngineConfig {
        uint64_t first_flow_id;         /* Unix time (s) at start-up; incremented per new flow */
        uint64_t max_tick_delta;        /* --max_tick_delta, 0 = no limit */
        uint64_t max_restart_delta;     /* --max_restart_delta: the limit for a meter's first new reading
                                         * after a gap (core start, producer reconnect), 0 = no limit */
        FlowSettings settings;          /* of every meter without settings of its own (flags, [DEFAULT]) */
        bool create_unknown_taps;       /* standalone mode: a meter without a tap gets one on first sight */
        /* Both server backends (kegboard-event-protocol.md sections 1.3, 1.4), optional: 'server_tap'
         * is true for the meters of the event protocol's controllers. Only those get a first-sight tap
         * (with create_unknown_taps), and a token addressed to every tap skips their taps: the event
         * server decides who pours there. */
        bool (*server_tap)(const char *meter, void *userdata);
        void *server_tap_userdata;
        double default_ml_per_tick;     /* calibration of those taps and of the filter on meters without
                                         * a tap (1 / --default_ticks_per_ml) */
        uint64_t idle_onewire_usec;     /* max_idle of flows owned through core.onewire */
        uint64_t idle_rfid_usec;        /* ... through core.rfid */
        uint64_t idle_default_usec;     /* ... through any other device, and anonymous flows */
        uint64_t relay_reassert_usec;   /* re-send "enabled" this often per flow; 0 = never (caller does it) */
        uint64_t meter_evict_grace_usec;/* a meter that never counted a tick may be forgotten after this */
        uint64_t meter_evict_idle_usec; /* any other meter without a flow, after this without a reading */
} FlowEngineConfig;

/* Server-mode defaults: max_tick_delta 1000, max_restart_delta 20000, the spec's filter settings
 * (flow_settings_init()), idle 120/20/10 s, re-assert every 1 s, no first-sight taps
 * (default_ml_per_tick 1/2.2), meters forgotten after 5 s (never counted a tick) or 10 min (idle)
 * when the table is full. */
void flow_engine_config_init(FlowEngineConfig *c);

typedef enum FlowState {
        FLOW_STATE_ACTIVE,
        FLOW_STATE_IDLE,
        FLOW_STATE_COMPLETED,
} FlowState;

const char *flow_state_to_string(FlowState s);  /* "active", "idle", "completed" (kegnet names) */

/* A snapshot of a flow. Strings point into the engine: valid until the next mutating call, or, inside
 * the event handler, until it returns. */
typedef struct FlowInfo {
        uint64_t flow_id;
        const char *meter_name;
        FlowState state;
        const char *username;           /* NULL = anonymous */
        const char *auth_device;        /* device the owner authenticated with, NULL if anonymous */
        uint64_t max_idle_usec;
        uint64_t start_realtime;        /* wall clock at creation (FlowUpdate start_time) */
        uint64_t last_activity_realtime;/* last counted tick, = start_realtime while there is none */
        bool has_ticks;
        uint64_t first_tick_realtime;   /* valid if has_ticks */
        uint64_t last_tick_realtime;    /* valid if has_ticks */
        uint64_t ticks;
        bool volume_known;              /* false: the meter never had a tap (volume_ml null) */
        double volume_ml;
        const char *relay_name;         /* relay this flow holds open, NULL if none */
        uint64_t idle_deadline;         /* monotonic */
        unsigned flags;                 /* DRINK_FLAG_* set so far (ghost-pours.md section 10) */
        bool held;                      /* ended, its valve closed, waiting out the grace (7.1) */
} FlowInfo;

/* Calibration pours (calibration.md section 2). */
typedef enum FlowCalibrationChange {
        FLOW_CALIBRATION_STARTED,
        FLOW_CALIBRATION_TICKS,         /* counted ticks were added (coalesce before publishing) */
        FLOW_CALIBRATION_ENDED,
} FlowCalibrationChange;

typedef enum FlowCalibrationEnd {
        FLOW_CALIBRATION_FINISHED,      /* a measured volume was given and the new value applied */
        FLOW_CALIBRATION_CANCELLED,
        FLOW_CALIBRATION_TIMEOUT,
        FLOW_CALIBRATION_TAP_REMOVED,
        FLOW_CALIBRATION_SHUTDOWN,
        _FLOW_CALIBRATION_END_MAX,
} FlowCalibrationEnd;

/* "finished", "cancelled", "timeout", "tap-removed", "shutdown" (the D-Bus CalibrationEnded reason). */
const char *flow_calibration_end_to_string(FlowCalibrationEnd r);

typedef enum FlowNotRecordedReason {
        FLOW_NOT_RECORDED_NO_TICKS,
        FLOW_NOT_RECORDED_BELOW_MINIMUM,
        FLOW_NOT_RECORDED_GHOST,        /* classified ghost (G5, G6, G7); a FLOW_EVENT_GHOST follows */
} FlowNotRecordedReason;

/* What survives a restart of the core for one meter (core-behaviour.md section 5, meters.json). */
typedef struct FlowMeterState {
        uint32_t accounted;             /* the reading up to which every tick is accounted for: in a
                                         * durable drink, or deliberately discarded (ghost, rejected) */
        uint64_t carry;                 /* ticks not accounted for yet that were counted before a counter
                                         * restart (board reset): the counter cannot give them back */
} FlowMeterState;

/* What a log line is about, so that the caller can rate-limit lines a peer can trigger per kind. */
typedef enum FlowLogKind {
        FLOW_LOG_FLOW,                  /* a flow started, ended, was bound, was (not) recorded */
        FLOW_LOG_METER,                 /* a reading: baseline, repeat, wrap, backwards, rejected */
        FLOW_LOG_TAP,                   /* a tap created on first sight */
        FLOW_LOG_TABLE,                 /* the meter table: a meter forgotten to make room */
        FLOW_LOG_TABLE_FULL,            /* the meter table: full, a new name refused */
        FLOW_LOG_REQUEST,               /* a flow request that changes nothing */
        FLOW_LOG_TOKEN,                 /* token handling */
        FLOW_LOG_CONTROLLER,            /* a board reset notice */
        FLOW_LOG_GHOST,                 /* a ghost-pour classification: ghost ticks, flags, quarantine */
        _FLOW_LOG_KIND_MAX,
} FlowLogKind;

typedef enum FlowEventType {
        FLOW_EVENT_LOG,                 /* a decision worth a log line: .log (logger "flowmanager") */
        FLOW_EVENT_FLOW_UPDATE,         /* kegnet FlowUpdate / D-Bus FlowUpdated: .flow */
        FLOW_EVENT_DRINK,               /* a drink to record now: .drink; .flow is the ending flow;
                                         * .meter_state is the meter's state once it is durable */
        FLOW_EVENT_NOT_RECORDED,        /* the ending flow is no drink: .not_recorded; .flow as above */
        FLOW_EVENT_RELAY,               /* kegnet SetRelayOutputEvent: .relay */
        FLOW_EVENT_TOKEN_AUTHENTICATED, /* a looked-up user was applied to a tap: .token */
        FLOW_EVENT_TAP_CREATED,         /* first-sight tap created (standalone): .meter_name */
        FLOW_EVENT_GHOST,               /* ghost ticks reported, an episode or a flow (D-Bus GhostFlow): .ghost */
        FLOW_EVENT_POUR_FLAGGED,        /* a flow got a flag (D-Bus PourFlagged): .flagged */
        FLOW_EVENT_QUARANTINE,          /* a tap's quarantine was set or cleared: .quarantine */
        FLOW_EVENT_GHOST_COUNTERS,      /* the meter's ghost ticks grew (coalesced D-Bus properties) */
        FLOW_EVENT_METER_STATE,         /* the meter's persistent state changed without a drink (a
                                         * baseline, a rejected report, a flow not recorded, a ghost
                                         * episode, a board reset): .meter_state */
        FLOW_EVENT_TAP_REMOVED,         /* first-sight tap forgotten with its meter (full table): .meter_name;
                                         * sent while the tap can still be looked up */
        FLOW_EVENT_METER_FORGOTTEN,     /* a meter forgotten to make room (full table), every tick of it
                                         * accounted for: .meter_name; its persistent state goes too */
        FLOW_EVENT_CALIBRATION,         /* a calibration pour started, counted ticks or ended: .calibration */
} FlowEventType;

typedef struct FlowEvent {
        FlowEventType type;
        const char *meter_name;         /* the meter concerned; NULL for LOG events about no meter */
        const FlowInfo *flow;           /* FLOW_UPDATE, DRINK, NOT_RECORDED */
        const FlowMeterState *meter_state;  /* DRINK (NULL before the meter's first reading), METER_STATE */
        union {
                struct {
                        int level;      /* syslog priority: LOG_DEBUG, LOG_INFO, LOG_WARNING */
                        const char *message;
                        FlowLogKind kind;
                } log;
                /* A completed flow worth recording (section 10.1): the pour fields of the one drink
                 * record, strings borrowed from the engine, no uuid or boot id yet (the engine reads
                 * no clock and no randomness): see drink_new_from_flow(). The caller hands it to its
                 * drink sink before it passes on the FLOW_STATE_COMPLETED update that follows. */
                const Drink *drink;
                struct {
                        FlowNotRecordedReason reason;
                        double min_volume_ml;
                } not_recorded;
                struct {
                        const char *relay_name;
                        bool enabled;
                        bool reassert;  /* periodic repeat of "enabled" (board watchdog), not a change */
                } relay;
                struct {
                        const char *device;
                        const char *value;
                        const char *username;
                } token;
                /* ghost-pours.md section 8. */
                struct {
                        FlowGhostRule rule;     /* the rule with the most ticks (ties: the lower) */
                        uint64_t ticks;
                        bool volume_known;      /* false: the meter has no tap */
                        double volume_ml;
                        uint64_t start_realtime;/* first ghost tick (first pour tick of a flow) */
                        uint64_t end_realtime;  /* last */
                        uint64_t duration_usec; /* monotonic, first to last */
                        uint64_t flow_id;       /* 0 for an episode and in log mode */
                        const char *tick_series;
                        FlowGhostMode mode;     /* on: not recorded; log: reported only */
                } ghost;
                struct {
                        uint64_t flow_id;       /* 0 in log mode */
                        unsigned flag;          /* DRINK_FLAG_KICKED or DRINK_FLAG_LONG_POUR */
                        FlowGhostMode mode;
                } flagged;
                struct {
                        bool quarantined;       /* set (true) or cleared */
                        uint64_t since_realtime;
                        unsigned cuts;
                        double max_pour_s;
                        FlowGhostMode mode;     /* log: the shadow's, not to be persisted */
                } quarantine;
                /* calibration.md section 2. */
                struct {
                        FlowCalibrationChange change;
                        uint64_t ticks;                 /* counted so far (at the end: in all) */
                        FlowCalibrationEnd reason;      /* FLOW_CALIBRATION_ENDED */
                        double old_ml_per_tick;         /* ENDED: before and after (equal unless finished) */
                        double new_ml_per_tick;
                } calibration;
        };
} FlowEvent;

/* Called synchronously, in the order of spec section 6.5, while an engine call runs. It may use the
 * query functions; mutating calls made from inside it fail with -EBUSY. */
typedef void (*FlowEventHandler)(FlowEngine *e, const FlowEvent *event, void *userdata);

int flow_engine_new(FlowEngine **ret, const FlowEngineConfig *config, FlowEventHandler handler, void *userdata);
FlowEngine *flow_engine_free(FlowEngine *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(FlowEngine *, flow_engine_free);

/* ---- taps (4.1) ---- */

enum {
        FLOW_TAP_UNCHANGED = 0,
        FLOW_TAP_ADDED = 1,
        FLOW_TAP_UPDATED = 2,
};

/* Adds or updates the tap of 'meter' (name NULL/"" = the meter name, relay_name NULL = none). Returns
 * FLOW_TAP_*, -EINVAL for an empty meter, or -ERANGE for ml_per_tick outside
 * flow_calibration_is_valid(). A flow in progress keeps the relay it captured; its volume follows the
 * new calibration. A new tap uses the engine's settings until flow_engine_set_tap_settings() gives it
 * its own. */
int flow_engine_set_tap(FlowEngine *e, const char *meter, const char *name, double ml_per_tick, const char *relay_name);
/* Standalone mode: the tap of a meter seen for the first time, created as a MeterUpdate would create
 * it (FLOW_EVENT_TAP_CREATED). 1 = created, 0 = it exists, -ENOENT = this engine creates no taps. */
int flow_engine_first_sight(FlowEngine *e, const char *meter, const FlowTime *now);
/* The tap's own filter settings (NULL: the engine's again). They apply from the next evaluation; the
 * meter's filter state is kept. -ENOENT: no such tap; -EINVAL: out of bounds. */
int flow_engine_set_tap_settings(FlowEngine *e, const char *meter, const FlowSettings *s);
/* Reload: the settings of meters without their own (-EINVAL: out of bounds). */
int flow_engine_set_default_settings(FlowEngine *e, const FlowSettings *s);
/* The mode in effect for 'meter': its tap's, else the engine's. */
FlowGhostMode flow_engine_meter_mode(FlowEngine *e, const char *meter);
/* Removes the tap (and its active token record); a flow on it keeps the last calibration, a
 * calibration pour on it ends (FLOW_CALIBRATION_TAP_REMOVED). -ENOENT. */
int flow_engine_remove_tap(FlowEngine *e, const char *meter, const FlowTime *now);
/* A new calibration for the tap (calibration.md section 2.4, step 6): flows started later and a
 * running one use it. 'configured': it is now kept in the configuration (the tap stops being
 * "auto_created"). -ENOENT: no such tap; -EINVAL: not finite and > 0. */
int flow_engine_set_tap_calibration(FlowEngine *e, const char *meter, double ml_per_tick, bool configured);

typedef struct FlowTapInfo {
        const char *meter_name;
        const char *name;
        double ml_per_tick;
        const char *relay_name;         /* "" = none */
        bool relay_enabled;             /* an active flow holds this relay open */
        bool auto_created;              /* created on first sight, not configured */
        uint64_t total_ticks;           /* the meter's total (section 5) */
        bool has_flow;
        uint64_t flow_id;               /* valid if has_flow */
        FlowGhostMode ghost_filter;     /* the tap's effective mode */
        uint64_t ghost_ticks;           /* classified ghost since start-up (ghost-pours.md 8.3) */
        double ghost_volume_ml;         /* each tick at the calibration of its classification */
        bool quarantined;               /* G7: every tick is ghost until cleared (mode on; log: the
                                         * shadow's, which acts on nothing) */
        uint64_t quarantined_since;     /* realtime, 0 = not quarantined */
        bool calibrating;               /* a calibration pour runs on the tap */
} FlowTapInfo;

size_t flow_engine_n_taps(FlowEngine *e);
int flow_engine_tap_at(FlowEngine *e, size_t i, FlowTapInfo *ret);        /* -ENOENT past the end */
int flow_engine_get_tap(FlowEngine *e, const char *meter, FlowTapInfo *ret); /* -ENOENT */

/* ---- meters (5) ---- */

typedef struct FlowMeterInfo {
        const char *meter_name;
        bool has_last;
        uint32_t last;
        uint64_t total;
        uint64_t ghost_ticks;
        double ghost_volume_ml;         /* of the ticks classified while the meter had a tap */
        bool quarantined;
        uint64_t quarantined_since;     /* realtime */
        unsigned quarantine_cuts;
        double quarantine_max_pour_s;
        FlowMeterState state;           /* valid if has_last */
        uint64_t open;                  /* counted ticks not accounted for yet (flow, hold, pending) */
        bool resync;                    /* the next new reading is allowed max_restart_delta */
} FlowMeterInfo;

/* MeterUpdate. Returns the counted delta (>= 0; a delta is at most 2^32-1) or a negative errno
 * (-ENOSPC: a new meter and the table is full of meters in use, logged). */
int64_t flow_engine_meter_update(FlowEngine *e, const char *meter, uint32_t reading, const FlowTime *now);
/* Room for a new meter that is known to be real (the caller knows its board): when the table is
 * full, forget a meter that never counted a tick whatever its age (the grace protects names of
 * unknown origin only), else one idle for meter_evict_idle_usec. 1 = room made, 0 = there was room
 * or the meter is known, -ENOSPC = nothing can go (logged by the next meter_update). */
int flow_engine_make_room(FlowEngine *e, const char *meter, const FlowTime *now);
/* ControllerConnectedEvent with board_reset: every meter "<controller>.*" counts its next reading from 0.
 * The ticks not accounted for yet become its meter's carry (FLOW_EVENT_METER_STATE). */
int flow_engine_controller_reset(FlowEngine *e, const char *controller);
/* The producer of "<controller>.*" (re)connected: readings may have been missed meanwhile, so the next
 * new reading of each known meter of it is allowed max_restart_delta. */
int flow_engine_controller_resync(FlowEngine *e, const char *controller);
/* Core start-up: an earlier run saw the controller's counters start at 0 (its reset notice), so a
 * meter of it not seen yet counts its first reading from 0 (with max_restart_delta: the core may
 * have been down meanwhile) instead of taking it as a baseline. Known meters are not touched. */
int flow_engine_controller_counts_from_zero(FlowEngine *e, const char *controller);
/* Core start-up, before any reading of 'meter': it resumes from its persisted state. Its next reading
 * is evaluated against s->accounted with max_restart_delta (ticks poured while the core was down, and
 * those the last run had not accounted for, arrive as one report), and a carry becomes a flow at once
 * (ticks the board's counter cannot give back). -EEXIST if the meter has a reading already. */
int flow_engine_restore_meter(FlowEngine *e, const char *meter, const FlowMeterState *s, const FlowTime *now);
int flow_engine_get_meter(FlowEngine *e, const char *meter, FlowMeterInfo *ret);   /* -ENOENT */
size_t flow_engine_n_meters(FlowEngine *e);
int flow_engine_meter_at(FlowEngine *e, size_t i, FlowMeterInfo *ret);            /* -ENOENT past the end */

/* ---- flows (6) ---- */

/* FlowRequest start_flow: 1 = a flow started, 0 = one already existed (kept), -EPERM = the tap is
 * quarantined (ghost filter on; logged at INFO), -EBUSY = the tap is being calibrated (logged at
 * INFO). A held flow is completed first. */
int flow_engine_start_flow(FlowEngine *e, const char *meter, const FlowTime *now);
/* FlowRequest stop_flow: 1 = the flow ended (or its hold did), 0 = there was none (WARNING). */
int flow_engine_stop_flow(FlowEngine *e, const char *meter, const FlowTime *now);
/* Orderly shutdown: ends every active flow as if stopped (held ones complete at once), then reports
 * the open ghost episodes. Returns how many flows ended. */
int flow_engine_shutdown(FlowEngine *e, const FlowTime *now);

/* Earliest monotonic time at which flow_engine_process_deadlines() has work (idle end, relay
 * re-assert, end of a hold, a ghost episode to report), FLOW_USEC_INFINITY if none. Arm one timer at
 * exactly this time. */
uint64_t flow_engine_next_deadline(FlowEngine *e);
/* Handles every deadline <= now->monotonic, in time order. Returns the number handled. */
int flow_engine_process_deadlines(FlowEngine *e, const FlowTime *now);

int flow_engine_get_flow(FlowEngine *e, const char *meter, FlowInfo *ret);       /* -ENOENT: no flow */
int flow_engine_get_flow_by_id(FlowEngine *e, uint64_t flow_id, FlowInfo *ret);  /* -ENOENT */
size_t flow_engine_n_flows(FlowEngine *e);
int flow_engine_flow_at(FlowEngine *e, size_t i, FlowInfo *ret);                 /* -ENOENT past the end */

/* ---- authentication (7) ----
 * The engine keeps each tap's active token record; the caller does the lookup. 'meter' NULL, "" or
 * FLOW_ALL_TAPS targets every tap. Token values are normalised internally (flow_token_normalize). */

/* TokenAuthEvent added. Returns how many taps now wait for a lookup of (device, value): > 0 means
 * "look it up once, then call flow_engine_token_resolved()"; 0 means nothing to do. */
int flow_engine_token_added(FlowEngine *e, const char *device, const char *value, const char *meter, const FlowTime *now);
/* TokenAuthEvent removed. A captive removal ends the flow owned through this very record. */
int flow_engine_token_removed(FlowEngine *e, const char *device, const char *value, const char *meter, const FlowTime *now);
/* The lookup answer for (device, value): username = the authorised user, or NULL for every negative
 * outcome (not assigned, disabled, expired, lookup failed). Applies to each tap whose active record for
 * this token still waits; returns how many taps it applied to. */
int flow_engine_token_resolved(FlowEngine *e, const char *device, const char *value, const char *username, const FlowTime *now);

/* ---- valves and quarantine (ghost-pours.md sections 6.1 and 9) ---- */

/* D-Bus SetRelay: the valve counts as open for 10 s after "enabled" (the board's watchdog) unless
 * "disabled" follows. Flows' relays are known to the engine already. */
int flow_engine_set_relay(FlowEngine *e, const char *relay, bool enabled, const FlowTime *now);
/* Lifts the quarantine of 'meter' (its open episode is reported first; bins, pending ticks and run
 * are reset). 1 = cleared, 0 = not quarantined (DEBUG), -ENOENT = neither a tap nor quarantined. */
int flow_engine_clear_quarantine(FlowEngine *e, const char *meter, const FlowTime *now);
/* Start-up: a quarantine read back from quarantine.json. */
int flow_engine_restore_quarantine(FlowEngine *e, const char *meter, uint64_t since_realtime, unsigned cuts,
                                   double max_pour_s);

/* ---- calibration pours (calibration.md section 2) ----
 * While one runs on a meter, its counted ticks go to the calibration: the ghost filter is suspended
 * on the meter (in every mode), no flow starts on the tap (start_flow and StartFlow: -EBUSY; a token
 * starts or binds none and opens none of its relays, INFO "Tap <m> is being calibrated; not starting
 * a flow"), and the tap's relay, if the caller wants it held, is enabled and re-asserted like a
 * flow's. It ends by flow_engine_end_calibration(), at its deadline (unless a result is being
 * stored), when the tap is removed, or at shutdown; each end is a FLOW_EVENT_CALIBRATION
 * (FLOW_CALIBRATION_ENDED) that also disables the relay it held. */

typedef struct FlowCalibrationInfo {
        const char *meter_name;
        uint64_t ticks;                 /* counted since the start */
        uint64_t start_realtime;
        uint64_t deadline_realtime;
        uint64_t deadline;              /* monotonic */
        const char *relay_name;         /* the relay it holds open, NULL if none */
        bool storing;                   /* the deadline waits (flow_engine_calibration_set_storing()) */
} FlowCalibrationInfo;

/* Starts one on 'meter' (a standalone engine creates a missing tap on first sight). 'hold_relay':
 * enable and re-assert the tap's relay (false: its valve belongs to someone else). Refused, in this
 * order: -ENOENT no tap, -EPERM quarantined (on mode), -EALREADY one runs, -EBUSY the tap has a flow
 * (active, idle or held). The meter's open ghost episode is reported first. */
int flow_engine_start_calibration(FlowEngine *e, const char *meter, uint64_t timeout_usec, bool hold_relay,
                                  const FlowTime *now);
int flow_engine_get_calibration(FlowEngine *e, const char *meter, FlowCalibrationInfo *ret);     /* -ENOENT */
/* While a result is being stored the deadline waits; once it is cleared a passed deadline ends the
 * calibration at the next flow_engine_process_deadlines(). -ENOENT: none runs. */
int flow_engine_calibration_set_storing(FlowEngine *e, const char *meter, bool storing);
/* Ends it (FLOW_CALIBRATION_FINISHED or _CANCELLED) and returns the ticks it counted, -ENOENT if none
 * runs. For FINISHED, 'old_ml_per_tick' is the calibration before the new one was applied (for the
 * event), and the meter's ghost-filter state restarts empty. */
int64_t flow_engine_end_calibration(FlowEngine *e, const char *meter, FlowCalibrationEnd reason,
                                    double old_ml_per_tick, const FlowTime *now);

/* Event controllers (kegboard-event-protocol.md section 6.8): a grant whose token came through
 * 'device' (NULL: a grant without an echo) covers the tap of 'meter' ('owned'), so its flows have that
 * device's max_idle (section 6.3): the flow in progress (unless a user owns it) and every flow
 * started while the grant covers the tap. 'owned' false: flows started from now on are anonymous
 * again. -ENOENT: no such tap. */
int flow_engine_set_tap_grant(FlowEngine *e, const char *meter, bool owned, const char *device, const FlowTime *now);

/* core.rfid is the only non-captive device. */
bool flow_auth_device_is_captive(const char *device);
/* max_idle for flows owned through 'device' (NULL = anonymous). */
uint64_t flow_engine_idle_for_device(FlowEngine *e, const char *device);
/* core.onewire and core.rfid values lower-cased (ASCII), others unchanged. NULL on OOM. */
char *flow_token_normalize(const char *device, const char *value);
