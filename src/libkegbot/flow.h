/* Flow engine: meter accounting, taps, flows, exact idle deadlines, token binding and relay decisions
 * (spec/core-behaviour.md sections 4-8 and 10.1). Pure: no I/O, no clock, no logging. The caller passes
 * the time in on every call and receives, through one handler, the ordered events to publish. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drink.h"
#include "macro.h"

#define FLOW_ALL_TAPS "__all_taps__"
#define FLOW_DEVICE_ONEWIRE "core.onewire"
#define FLOW_DEVICE_RFID "core.rfid"

/* No deadline pending (flow_engine_next_deadline()). */
#define FLOW_USEC_INFINITY UINT64_MAX

/* Meters the engine tracks at most; a stream of made-up meter names cannot grow memory forever. */
#define FLOW_ENGINE_MAX_METERS 1024

typedef struct FlowEngine FlowEngine;

/* All in microseconds. Every mutating call takes the current time. */
typedef struct FlowTime {
        uint64_t monotonic;     /* CLOCK_MONOTONIC: idle deadlines, drink duration */
        uint64_t realtime;      /* CLOCK_REALTIME: reported timestamps only */
        uint64_t boottime;      /* CLOCK_BOOTTIME: kept with the last tick for clock correction (10.4) */
} FlowTime;

typedef struct FlowEngineConfig {
        uint64_t first_flow_id;         /* Unix time (s) at start-up; incremented per new flow */
        uint64_t max_tick_delta;        /* --max_tick_delta, 0 = no limit */
        double min_volume_ml;           /* --min_volume_ml */
        bool create_unknown_taps;       /* standalone mode: a meter without a tap gets one on first sight */
        double default_ml_per_tick;     /* calibration of those taps (1 / --default_ticks_per_ml) */
        uint64_t idle_onewire_usec;     /* max_idle of flows owned through core.onewire */
        uint64_t idle_rfid_usec;        /* ... through core.rfid */
        uint64_t idle_default_usec;     /* ... through any other device, and anonymous flows */
        uint64_t relay_reassert_usec;   /* re-send "enabled" this often per flow; 0 = never (caller does it) */
} FlowEngineConfig;

/* Server-mode defaults: max_tick_delta 1000, min 10 mL, idle 120/20/10 s, re-assert every 1 s,
 * no first-sight taps (default_ml_per_tick 1/2.2 is preset for when the caller turns them on). */
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
} FlowInfo;

typedef enum FlowNotRecordedReason {
        FLOW_NOT_RECORDED_NO_TICKS,
        FLOW_NOT_RECORDED_BELOW_MINIMUM,
} FlowNotRecordedReason;

typedef enum FlowEventType {
        FLOW_EVENT_LOG,                 /* a decision worth a log line: .log (logger "flowmanager") */
        FLOW_EVENT_FLOW_UPDATE,         /* kegnet FlowUpdate / D-Bus FlowUpdated: .flow */
        FLOW_EVENT_DRINK,               /* a drink to record now: .drink; .flow is the ending flow */
        FLOW_EVENT_NOT_RECORDED,        /* the ending flow is no drink: .not_recorded; .flow as above */
        FLOW_EVENT_RELAY,               /* kegnet SetRelayOutputEvent: .relay */
        FLOW_EVENT_TOKEN_AUTHENTICATED, /* a looked-up user was applied to a tap: .token */
        FLOW_EVENT_TAP_CREATED,         /* first-sight tap created (standalone): .meter_name */
} FlowEventType;

typedef struct FlowEvent {
        FlowEventType type;
        const char *meter_name;         /* the meter concerned; NULL for LOG events about no meter */
        const FlowInfo *flow;           /* FLOW_UPDATE, DRINK, NOT_RECORDED */
        union {
                struct {
                        int level;      /* syslog priority: LOG_DEBUG, LOG_INFO, LOG_WARNING */
                        const char *message;
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
 * FLOW_TAP_*, or -EINVAL for an empty meter or ml_per_tick not finite and > 0. A flow in progress keeps
 * the relay it captured; its volume follows the new calibration. */
int flow_engine_set_tap(FlowEngine *e, const char *meter, const char *name, double ml_per_tick, const char *relay_name);
/* Removes the tap (and its active token record); a flow on it keeps the last calibration. -ENOENT. */
int flow_engine_remove_tap(FlowEngine *e, const char *meter);

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
} FlowMeterInfo;

/* MeterUpdate. Returns the counted delta (>= 0; a delta is at most 2^32-1) or a negative errno. */
int64_t flow_engine_meter_update(FlowEngine *e, const char *meter, uint32_t reading, const FlowTime *now);
/* ControllerConnectedEvent with board_reset: every meter "<controller>.*" counts its next reading from 0. */
int flow_engine_controller_reset(FlowEngine *e, const char *controller);
int flow_engine_get_meter(FlowEngine *e, const char *meter, FlowMeterInfo *ret);   /* -ENOENT */

/* ---- flows (6) ---- */

/* FlowRequest start_flow: 1 = a flow started, 0 = one already existed (kept). */
int flow_engine_start_flow(FlowEngine *e, const char *meter, const FlowTime *now);
/* FlowRequest stop_flow: 1 = the flow ended, 0 = there was none (WARNING). */
int flow_engine_stop_flow(FlowEngine *e, const char *meter, const FlowTime *now);
/* Orderly shutdown: ends every active flow as if stopped. Returns how many ended. */
int flow_engine_shutdown(FlowEngine *e, const FlowTime *now);

/* Earliest monotonic time at which flow_engine_process_deadlines() has work (idle end or relay
 * re-assert), FLOW_USEC_INFINITY if none. Arm one timer at exactly this time. */
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

/* core.rfid is the only non-captive device. */
bool flow_auth_device_is_captive(const char *device);
/* max_idle for flows owned through 'device' (NULL = anonymous). */
uint64_t flow_engine_idle_for_device(FlowEngine *e, const char *device);
/* core.onewire and core.rfid values lower-cased (ASCII), others unchanged. NULL on OOM. */
char *flow_token_normalize(const char *device, const char *value);
