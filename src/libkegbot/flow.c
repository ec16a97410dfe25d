/* Flow engine (spec/core-behaviour.md sections 4-8, 10.1) and its ghost-pour filter
 * (spec/ghost-pours.md). Pure: every time comes from the caller and every outcome leaves through the
 * event handler, in the order of core-behaviour.md section 6.5 (ghost-pours.md section 7.3 where the
 * filter is on).
 *
 * The filter works per meter on a ring of 0.5 s bins aligned to the monotonic clock. A counted tick
 * is pending until the gate (G2 start volume, G3 step over the ghost baseline) or a qualifying report
 * (G4 activity floor) takes it into a flow, or until it leaves the start window and becomes ghost.
 * Ghost ticks are counted per meter and reported in episodes; a flow may still be classified ghost when
 * it ends (G5 average, G6 onset, G7 cut, G8 minimum).
 *
 * "log" mode runs a shadow: a second engine of the same code, fed the same inputs (counted deltas,
 * flow requests, tokens, relay commands, deadlines) for the taps in log mode, treating them as "on".
 * It emits only what classifies (ghost reports, flags, quarantine, their log lines), marked mode log
 * with flow id 0; everything else it does stays inside. The real engine meanwhile treats those taps
 * as "off", so log mode records exactly what off records and reports exactly what on would act on. */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <syslog.h>

#include "flow.h"
#include "ini.h"

/* Fixed constants of ghost-pours.md section 4.1. */
#define BIN_USEC (USEC_PER_SEC / 2)
#define RING_BINS 32
#define BIN_NONE UINT64_MAX
#define QUIET_ML_S 0.1
#define DRIFT_BINS 4
#define KICK_SUSTAIN_USEC (2 * USEC_PER_SEC)
#define RUN_GAP_USEC (10 * USEC_PER_SEC)
#define EPISODE_GAP_USEC (10 * USEC_PER_SEC)
#define EPISODE_CAP_USEC (600 * USEC_PER_SEC)
#define RELAY_WATCHDOG_USEC (10 * USEC_PER_SEC)
#define REL_EPSILON 1e-9

typedef struct TokenRecord {
        char *device;           /* NULL = no record */
        char *value;            /* normalised */
        char *meter;            /* as addressed; "" and NULL become FLOW_ALL_TAPS */
} TokenRecord;

typedef struct Flow {
        uint64_t id;
        char *meter_name;
        char *username;
        char *auth_device;
        TokenRecord token;      /* the record the owner came through */
        uint64_t max_idle;
        FlowState state;
        uint64_t start_realtime;
        bool has_ticks;
        uint64_t first_tick_realtime, first_tick_monotonic;
        uint64_t last_tick_realtime, last_tick_monotonic, last_tick_boottime;
        uint64_t last_activity; /* monotonic */
        uint64_t ticks;
        double ml_per_tick;     /* last calibration used; 0 = the meter never had a tap */
        char *relay_name;       /* held open while non-NULL */
        uint64_t relay_next;    /* monotonic time of the next re-assert */

        /* Its history (ghost-pours.md section 5.2): fixed size, however long the flow. */
        TickSeries series;
        uint64_t onset_ticks;   /* pour ticks less than ghost_onset_s after the first one */
        unsigned flags;         /* DRINK_FLAG_* */
        bool held;              /* its valve closed: waiting out the grace (section 7.1) */
        uint64_t hold_until;    /* monotonic */
} Flow;

/* One 0.5 s bin (section 5.1). An entry whose number is not the one asked for reads as empty. */
typedef struct Bin {
        uint64_t n;
        uint64_t raw;           /* counted ticks that arrived in the bin */
        uint64_t taken;         /* of those, into a pour or a hold */
        uint64_t pending;       /* of those, not classified yet */
        FlowTime first_pending; /* arrival of the bin's first pending report */
        uint8_t rule;           /* FlowGhostRule the pending ticks get when they age */
        bool qualified;         /* a qualifying report (or the gate) arrived in the bin */
} Bin;

/* Ghost ticks of one meter reported together (section 8.1). */
typedef struct Episode {
        bool open;
        FlowTime first, last;   /* first and last contributing arrival */
        uint64_t ticks[_FLOW_RULE_MAX];
        uint64_t total;
        double volume;          /* at each tick's calibration (the default one without a tap) */
        bool volume_known;      /* every tick had a tap */
        TickSeries series;
} Episode;

typedef struct Filter {
        Bin ring[RING_BINS];
        uint64_t pending_total;
        uint64_t last_tick;     /* monotonic arrival of the last counted tick */
        bool pouring;
        double ref;             /* mL/s of ghost assumed under the pour */
        double carry;           /* fraction of a ghost tick */
        uint64_t gate_bin;
        uint64_t last_pour_report;
        double g3_baseline;     /* baseline of the last G3 refusal (for the log line) */
        /* G7 */
        bool has_run;
        uint64_t run_start, run_last;
        unsigned cuts;
        /* G9 */
        bool kicking;
        uint64_t kick_start;
        /* Section 9 */
        bool quarantined;
        uint64_t quarantined_since;     /* realtime */
        unsigned quarantine_cuts;
        double quarantine_max_pour_s;
        Episode episode;
        uint64_t ghost_ticks;
        double ghost_volume;
} Filter;

typedef struct Tap Tap;

/* A calibration pour (calibration.md section 2): only the real engine has them; the shadow asks it. */
typedef struct Calibration {
        uint64_t ticks;
        uint64_t start_realtime;
        uint64_t timeout;
        uint64_t deadline;      /* monotonic */
        bool storing;           /* the deadline waits for the result being stored */
        char *relay_name;       /* held open while non-NULL */
        uint64_t relay_next;    /* monotonic time of the next re-assert */
        double ml_per_tick;     /* the tap's calibration when it was last seen (for a removed tap) */
} Calibration;

typedef struct Meter {
        char *name;
        bool has_last;
        uint32_t last;
        uint64_t total;
        Flow *flow;
        Tap *tap;               /* the meter's tap, kept current by the tap functions */
        Filter *filter;         /* allocated when the filter first runs on the meter */
        /* What a restarted core resumes from (core-behaviour.md section 5, meters.json): the counted
         * ticks not accounted for yet (in a flow, a hold or pending), so the accounted reading is
         * last - open; and the carry, such ticks from before a counter restart. Real engine only. */
        uint64_t open;
        uint64_t carry;
        FlowMeterState state;   /* filled for FLOW_EVENT_METER_STATE and FLOW_EVENT_DRINK */
        bool resync;            /* the next new reading may cover a gap: max_restart_delta applies */
        uint64_t last_seen;     /* monotonic time of its last reading or request */
        Calibration *cal;       /* a calibration pour runs */
} Meter;

struct Tap {
        char *meter_name;
        char *name;
        double ml_per_tick;
        char *relay_name;
        bool auto_created;
        TokenRecord record;     /* the tap's active token record */
        bool lookup_pending;
        bool has_settings;
        FlowSettings settings;
        uint64_t grant_idle;    /* max_idle of flows a grant owns (flow_engine_set_tap_grant()), 0 = none */
};

/* What G1 knows about a valve (section 6.1): flows holding the relay are found in the flows. */
typedef struct RelayView {
        char *name;
        bool ever_open;         /* false: closed since start-up, with no grace */
        uint64_t manual_until;  /* D-Bus SetRelay(true) keeps it open until then */
        uint64_t closed_since;  /* the last flow holding it ended */
} RelayView;

struct FlowEngine {
        FlowEngineConfig config;
        FlowEventHandler handler;
        void *userdata;
        unsigned emitting;
        uint64_t next_flow_id;

        Meter **meters;
        size_t n_meters, n_meters_alloc;
        Meter **index;          /* open addressing by name hash; size a power of two */
        size_t index_size;
        Tap **taps;
        size_t n_taps, n_taps_alloc;
        char **reset_controllers;
        size_t n_reset_controllers, n_reset_controllers_alloc;
        /* Reset controllers known from an earlier run: a new meter's first reading covers a gap. */
        char **gap_controllers;
        size_t n_gap_controllers, n_gap_controllers_alloc;
        RelayView *relays;
        size_t n_relays, n_relays_alloc;

        FlowEngine *shadow;     /* the log-mode shadow (section 11) */
        FlowEngine *parent;     /* set in the shadow */

        char series_buf[TICK_SERIES_STRING_MAX];
        char logbuf[TICK_SERIES_STRING_MAX + 1024];
};

static void calibration_end(FlowEngine *e, Meter *m, FlowCalibrationEnd reason, double old_ml_per_tick,
                            const FlowTime *now);
static void calibration_count(FlowEngine *e, Meter *m, uint64_t delta, const FlowTime *now);
static Calibration *calibration_free(Calibration *c);

/* ---- settings ---- */

void flow_settings_init(FlowSettings *s) {
        *s = (FlowSettings) {
                .ghost_filter = FLOW_GHOST_ON,
                .valve_closed_gate = true,
                .valve_closed_grace_s = 3.0,
                .pour_start_ml = 6.0,
                .pour_start_window_s = 2.0,
                .ghost_step_ml_s = 10.0,
                .ghost_baseline_s = 8.0,
                .pour_activity_ml_s = 3.0,
                .ghost_min_duration_s = 60.0,
                .ghost_max_avg_ml_s = 2.0,
                .ghost_onset_s = 20.0,
                .ghost_min_onset_ml = 40.0,
                .max_pour_s = 300.0,
                .quarantine_after_cuts = 2,
                .min_volume_ml = 10.0,
                .kick_rate_ml_s = 120.0,
        };
}

static const char *const ghost_mode_names[_FLOW_GHOST_MODE_MAX] = {
        [FLOW_GHOST_OFF] = "off",
        [FLOW_GHOST_LOG] = "log",
        [FLOW_GHOST_ON] = "on",
};

const char *flow_ghost_mode_to_string(FlowGhostMode m) {
        return m >= 0 && m < _FLOW_GHOST_MODE_MAX ? ghost_mode_names[m] : NULL;
}

int flow_ghost_mode_from_string(const char *s) {
        for (int i = 0; i < _FLOW_GHOST_MODE_MAX; i++)
                if (streq_ptr(s, ghost_mode_names[i]))
                        return i;
        return -EINVAL;
}

const char *flow_ghost_rule_to_string(FlowGhostRule r) {
        static const char *const names[_FLOW_RULE_MAX] = {
                [FLOW_RULE_G1] = "G1", [FLOW_RULE_G2] = "G2", [FLOW_RULE_G3] = "G3", [FLOW_RULE_G4] = "G4",
                [FLOW_RULE_G5] = "G5", [FLOW_RULE_G6] = "G6", [FLOW_RULE_G7] = "G7", [FLOW_RULE_G8] = "G8",
        };
        return r > FLOW_RULE_NONE && r < _FLOW_RULE_MAX ? names[r] : NULL;
}

typedef enum SettingKind {
        SETTING_MODE,
        SETTING_BOOL,
        SETTING_DOUBLE,
        SETTING_MAX_POUR,       /* 0 or [min, max] */
        SETTING_UINT,
} SettingKind;

typedef struct SettingDef {
        const char *key;
        SettingKind kind;
        size_t offset;
        double min, max;        /* inclusive; max INFINITY = none */
        const char *reason;
} SettingDef;

#define SETTING(k, kind, field, lo, hi, why) \
        { k, kind, offsetof(FlowSettings, field), lo, hi, why }

static const SettingDef setting_defs[] = {
        SETTING("ghost_filter", SETTING_MODE, ghost_filter, 0, 0, "expected on, log or off"),
        SETTING("valve_closed_gate", SETTING_BOOL, valve_closed_gate, 0, 0,
                "expected a boolean (1/yes/true/on, 0/no/false/off)"),
        SETTING("valve_closed_grace_s", SETTING_DOUBLE, valve_closed_grace_s, 0, FLOW_VALVE_CLOSED_GRACE_S_MAX,
                "expected a number from 0 to 60"),
        SETTING("pour_start_ml", SETTING_DOUBLE, pour_start_ml, 0, INFINITY, "expected a number >= 0"),
        SETTING("pour_start_window_s", SETTING_DOUBLE, pour_start_window_s, FLOW_POUR_START_WINDOW_S_MIN,
                FLOW_POUR_START_WINDOW_S_MAX, "expected a number from 0.5 to 4"),
        SETTING("ghost_step_ml_s", SETTING_DOUBLE, ghost_step_ml_s, 0, INFINITY, "expected a number >= 0"),
        SETTING("ghost_baseline_s", SETTING_DOUBLE, ghost_baseline_s, FLOW_GHOST_BASELINE_S_MIN,
                FLOW_GHOST_BASELINE_S_MAX, "expected a number from 1 to 12"),
        SETTING("pour_activity_ml_s", SETTING_DOUBLE, pour_activity_ml_s, 0, INFINITY, "expected a number >= 0"),
        SETTING("ghost_min_duration_s", SETTING_DOUBLE, ghost_min_duration_s, 0, INFINITY,
                "expected a number >= 0"),
        SETTING("ghost_max_avg_ml_s", SETTING_DOUBLE, ghost_max_avg_ml_s, 0, INFINITY, "expected a number >= 0"),
        SETTING("ghost_onset_s", SETTING_DOUBLE, ghost_onset_s, FLOW_GHOST_ONSET_S_MIN, FLOW_GHOST_ONSET_S_MAX,
                "expected a number from 1 to 600"),
        SETTING("ghost_min_onset_ml", SETTING_DOUBLE, ghost_min_onset_ml, 0, INFINITY, "expected a number >= 0"),
        SETTING("max_pour_s", SETTING_MAX_POUR, max_pour_s, FLOW_MAX_POUR_S_MIN, FLOW_MAX_POUR_S_MAX,
                "expected 0 or a number from 10 to 86400"),
        SETTING("quarantine_after_cuts", SETTING_UINT, quarantine_after_cuts, 0, UINT32_MAX,
                "expected an integer >= 0"),
        SETTING("min_volume_ml", SETTING_DOUBLE, min_volume_ml, 0, INFINITY, "expected a number >= 0"),
        SETTING("kick_rate_ml_s", SETTING_DOUBLE, kick_rate_ml_s, 0, INFINITY, "expected a number >= 0"),
};

static const SettingDef *setting_find(const char *key) {
        for (size_t i = 0; i < ELEMENTSOF(setting_defs); i++)
                if (streq_ptr(key, setting_defs[i].key))
                        return &setting_defs[i];
        return NULL;
}

bool flow_settings_is_key(const char *key) {
        return setting_find(key) != NULL;
}

static bool setting_double_ok(const SettingDef *d, double v) {
        if (!isfinite(v))
                return false;
        if (d->kind == SETTING_MAX_POUR && v == 0)
                return true;
        return v >= d->min && v <= d->max;
}

int flow_settings_set(FlowSettings *s, const char *key, const char *value, const char **ret_reason) {
        const SettingDef *d;
        void *field;
        char *end;

        assert_return(s, -EINVAL);
        assert_return(value, -EINVAL);
        d = setting_find(key);
        if (!d)
                return -ENOENT;
        field = (uint8_t *) s + d->offset;
        if (ret_reason)
                *ret_reason = d->reason;

        switch (d->kind) {
        case SETTING_MODE: {
                int m = flow_ghost_mode_from_string(value);
                if (m < 0)
                        return -EINVAL;
                *(FlowGhostMode *) field = (FlowGhostMode) m;
                return 0;
        }
        case SETTING_BOOL: {
                /* The taps file's booleans, as every INI boolean of the project reads them. */
                int b = ini_parse_boolean(value);
                if (b < 0)
                        return -EINVAL;
                *(bool *) field = b;
                return 0;
        }
        case SETTING_UINT: {
                unsigned long long v;
                if (!*value || !strchr("0123456789", value[0]))
                        return -EINVAL;
                errno = 0;
                v = strtoull(value, &end, 10);
                if (errno != 0 || *end != '\0' || v > d->max)
                        return -EINVAL;
                *(unsigned *) field = (unsigned) v;
                return 0;
        }
        case SETTING_DOUBLE:
        case SETTING_MAX_POUR: {
                double v;
                errno = 0;
                v = strtod(value, &end);
                if (errno != 0 || end == value || *end != '\0' || !setting_double_ok(d, v))
                        return -EINVAL;
                *(double *) field = v;
                return 0;
        }
        }
        return -EINVAL;
}

int flow_settings_check(const FlowSettings *s, const char **ret_key, const char **ret_reason) {
        assert_return(s, -EINVAL);
        for (size_t i = 0; i < ELEMENTSOF(setting_defs); i++) {
                const SettingDef *d = &setting_defs[i];
                const void *field = (const uint8_t *) s + d->offset;
                bool ok = true;

                if (d->kind == SETTING_MODE)
                        ok = flow_ghost_mode_to_string(*(const FlowGhostMode *) field) != NULL;
                else if (d->kind == SETTING_DOUBLE || d->kind == SETTING_MAX_POUR)
                        ok = setting_double_ok(d, *(const double *) field);
                if (!ok) {
                        if (ret_key)
                                *ret_key = d->key;
                        if (ret_reason)
                                *ret_reason = d->reason;
                        return -EINVAL;
                }
        }
        return 0;
}

/* Rounding is floor(x + 0.5) on non-negative values: round() and llround() would be the only libm
 * calls of kegbot_core, and mapping libm costs it 200 kB of RSS. */

/* "Values within 1e-9 (relative) count as equal" (section 3). */
static bool approx_eq(double a, double b) {
        return fabs(a - b) <= REL_EPSILON * MAX(1.0, MAX(fabs(a), fabs(b)));
}

static bool approx_lt(double a, double b) {
        return a < b && !approx_eq(a, b);
}

static bool approx_gt(double a, double b) {
        return a > b && !approx_eq(a, b);
}

uint64_t flow_volume_ticks(double ml, double ml_per_tick) {
        double q, r;

        if (!(ml_per_tick > 0) || !isfinite(ml) || ml <= 0)
                return 3;
        q = ml / ml_per_tick;
        r = floor(q + 0.5);
        if (approx_eq(q, r))
                q = r;
        q = ceil(q);
        if (q >= (double) UINT64_MAX)
                return UINT64_MAX;
        return MAX((uint64_t) 3, (uint64_t) q);
}

/* ---- small things ---- */

void flow_engine_config_init(FlowEngineConfig *c) {
        *c = (FlowEngineConfig) {
                .first_flow_id = 0,
                .max_tick_delta = 1000,
                .max_restart_delta = 20000,
                .create_unknown_taps = false,
                .default_ml_per_tick = 1.0 / 2.2,
                .idle_onewire_usec = 120 * USEC_PER_SEC,
                .idle_rfid_usec = 20 * USEC_PER_SEC,
                .idle_default_usec = 10 * USEC_PER_SEC,
                .relay_reassert_usec = 1 * USEC_PER_SEC,
                .meter_evict_grace_usec = 5 * USEC_PER_SEC,
                .meter_evict_idle_usec = 600 * USEC_PER_SEC,
        };
        flow_settings_init(&c->settings);
}

const char *flow_state_to_string(FlowState s) {
        switch (s) {
        case FLOW_STATE_ACTIVE:
                return "active";
        case FLOW_STATE_IDLE:
                return "idle";
        case FLOW_STATE_COMPLETED:
                return "completed";
        }
        return NULL;
}

bool flow_auth_device_is_captive(const char *device) {
        return !streq_ptr(device, FLOW_DEVICE_RFID);
}

uint64_t flow_engine_idle_for_device(FlowEngine *e, const char *device) {
        if (streq_ptr(device, FLOW_DEVICE_ONEWIRE))
                return e->config.idle_onewire_usec;
        if (streq_ptr(device, FLOW_DEVICE_RFID))
                return e->config.idle_rfid_usec;
        return e->config.idle_default_usec;
}

char *flow_token_normalize(const char *device, const char *value) {
        char *s = strdup(value);
        if (!s)
                return NULL;
        /* The server stores these lowercase and compares case-sensitively. */
        if (streq_ptr(device, FLOW_DEVICE_ONEWIRE) || streq_ptr(device, FLOW_DEVICE_RFID))
                for (char *p = s; *p; p++)
                        if (*p >= 'A' && *p <= 'Z')
                                *p = (char) (*p - 'A' + 'a');
        return s;
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t seconds_to_usec(double s) {
        if (!(s > 0))
                return 0;
        if (s >= 1e12)
                return UINT64_MAX;
        return (uint64_t) floor(s * 1e6 + 0.5);
}

static int grow(void *p, size_t *alloc, size_t need, size_t size) {
        void **array = p;
        size_t n;
        void *q;

        if (need <= *alloc)
                return 0;
        n = MAX(need, MAX((size_t) 8, *alloc * 2));
        q = reallocarray(*array, n, size);
        if (!q)
                return -ENOMEM;
        *array = q;
        *alloc = n;
        return 0;
}

/* ---- events ---- */

static bool is_shadow(FlowEngine *e) {
        return e->parent != NULL;
}

/* The mode this engine reports in: the shadow is log mode's. */
static FlowGhostMode report_mode(FlowEngine *e) {
        return is_shadow(e) ? FLOW_GHOST_LOG : FLOW_GHOST_ON;
}

/* Flow ids of the shadow are its own and are never published. */
static uint64_t report_flow_id(FlowEngine *e, const Flow *f) {
        return is_shadow(e) ? 0 : f->id;
}

static void emit(FlowEngine *e, const FlowEvent *ev) {
        if (!e->handler)
                return;
        e->emitting++;
        e->handler(e, ev, e->userdata);
        e->emitting--;
}

_printf_(5, 0)
static void emit_logv(FlowEngine *e, FlowLogKind kind, const char *meter, int level, const char *format, va_list ap) {
        if (!e->handler)
                return;
        (void) vsnprintf(e->logbuf, sizeof e->logbuf, format, ap);
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_LOG,
                .meter_name = meter,
                .log.level = level,
                .log.message = e->logbuf,
                .log.kind = kind,
        });
}

_printf_(5, 6)
static void emit_log_kind(FlowEngine *e, FlowLogKind kind, const char *meter, int level, const char *format, ...) {
        va_list ap;

        if (is_shadow(e))
                return;
        va_start(ap, format);
        emit_logv(e, kind, meter, level, format, ap);
        va_end(ap);
}

/* A line about a flow (FLOW_LOG_FLOW). The shadow keeps its decisions to itself. */
#define emit_log(e, meter, level, ...) emit_log_kind(e, FLOW_LOG_FLOW, meter, level, __VA_ARGS__)

/* A classification (ghost ticks, flags, quarantine): the shadow reports these too. */
_printf_(4, 5)
static void emit_report_log(FlowEngine *e, const char *meter, int level, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        emit_logv(e, FLOW_LOG_GHOST, meter, level, format, ap);
        va_end(ap);
}

static void emit_relay(FlowEngine *e, const char *meter, const char *relay, bool enabled, bool reassert) {
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_RELAY,
                .meter_name = meter,
                .relay.relay_name = relay,
                .relay.enabled = enabled,
                .relay.reassert = reassert,
        });
}

/* ---- the meter state that survives a restart (core-behaviour.md section 5) ---- */

static const FlowMeterState *meter_state(Meter *m) {
        m->state = (FlowMeterState) {
                .accounted = m->last - (uint32_t) m->open,
                .carry = m->carry,
        };
        return &m->state;
}

static void emit_meter_state(FlowEngine *e, Meter *m) {
        if (is_shadow(e) || !m->has_last)
                return;
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_METER_STATE,
                .meter_name = m->name,
                .meter_state = meter_state(m),
        });
}

/* 'n' counted ticks are accounted for now (a drink, a flow not recorded, ghost): the oldest first,
 * so the carry goes before the ticks the counter still holds. */
static void meter_settle(FlowEngine *e, Meter *m, uint64_t n) {
        uint64_t k;

        if (is_shadow(e))
                return;
        k = MIN(n, m->carry);
        m->carry -= k;
        m->open -= MIN(n - k, m->open);
}

/* The shadow's handler: only classifications reach the real engine's handler. */
static void shadow_handler(FlowEngine *shadow, const FlowEvent *ev, void *userdata) {
        FlowEngine *e = userdata;

        switch (ev->type) {
        case FLOW_EVENT_LOG:            /* only emit_report_log() lines get here */
        case FLOW_EVENT_GHOST:
        case FLOW_EVENT_POUR_FLAGGED:
        case FLOW_EVENT_QUARANTINE:
        case FLOW_EVENT_GHOST_COUNTERS:
                emit(e, ev);
                break;
        default:
                break;
        }
}

/* ---- token records ---- */

static void token_record_done(TokenRecord *r) {
        free(r->device);
        free(r->value);
        free(r->meter);
        *r = (TokenRecord) {};
}

static int token_record_make(TokenRecord *ret, const char *device, const char *value, const char *meter) {
        TokenRecord r = {
                .device = strdup(device),
                .value = strdup(value),
                .meter = strdup(meter),
        };
        if (!r.device || !r.value || !r.meter) {
                token_record_done(&r);
                return -ENOMEM;
        }
        *ret = r;
        return 0;
}

static bool token_record_eq(const TokenRecord *r, const char *device, const char *value, const char *meter) {
        return r->device && streq(r->device, device) && streq(r->value, value) && streq(r->meter, meter);
}

/* ---- lookups ---- */

static uint64_t name_hash(const char *s) {
        uint64_t h = UINT64_C(14695981039346656037);    /* FNV-1a */

        for (; *s; s++) {
                h ^= (uint8_t) *s;
                h *= UINT64_C(1099511628211);
        }
        return h;
}

static Meter *meter_find(FlowEngine *e, const char *name) {
        if (e->index_size == 0)
                return NULL;
        for (size_t i = name_hash(name) & (e->index_size - 1);; i = (i + 1) & (e->index_size - 1)) {
                Meter *m = e->index[i];
                if (!m)
                        return NULL;
                if (streq(m->name, name))
                        return m;
        }
}

static void index_insert(Meter **index, size_t size, Meter *m) {
        size_t i = name_hash(m->name) & (size - 1);

        while (index[i])
                i = (i + 1) & (size - 1);
        index[i] = m;
}

/* Keeps the index at most half full. */
static int index_reserve(FlowEngine *e, size_t n) {
        Meter **index;
        size_t size;

        if (n * 2 <= e->index_size)
                return 0;
        size = MAX((size_t) 16, e->index_size * 2);
        while (n * 2 > size)
                size *= 2;
        index = calloc(size, sizeof(Meter *));
        if (!index)
                return -ENOMEM;
        for (size_t i = 0; i < e->n_meters; i++)
                index_insert(index, size, e->meters[i]);
        free(e->index);
        e->index = index;
        e->index_size = size;
        return 0;
}

static Tap *tap_find(FlowEngine *e, const char *meter) {
        for (size_t i = 0; i < e->n_taps; i++)
                if (streq(e->taps[i]->meter_name, meter))
                        return e->taps[i];
        return NULL;
}

static bool meter_of_controller(const char *meter, const char *controller) {
        const char *p = startswith(meter, controller);
        return p && *p == '.';
}

static bool meter_of_any(const char *meter, char *const *controllers, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (meter_of_controller(meter, controllers[i]))
                        return true;
        return false;
}

static bool meter_was_reset(FlowEngine *e, const char *meter) {
        return meter_of_any(meter, e->reset_controllers, e->n_reset_controllers);
}

/* Adds 'controller' to a list of names (once). The list is bounded: a name matters only for meters
 * not seen yet, so when it is full the oldest name goes. */
static int controller_list_add(char ***list, size_t *n, size_t *alloc, const char *controller) {
        int r;

        for (size_t i = 0; i < *n; i++)
                if (streq((*list)[i], controller))
                        return 0;
        if (*n >= FLOW_ENGINE_MAX_METERS) {
                free((*list)[0]);
                memmove(*list, *list + 1, (*n - 1) * sizeof(char *));
                (*n)--;
        }
        r = grow(list, alloc, *n + 1, sizeof(char *));
        if (r < 0)
                return r;
        (*list)[*n] = strdup(controller);
        if (!(*list)[*n])
                return -ENOMEM;
        (*n)++;
        return 0;
}

static void tap_remove_at(FlowEngine *e, size_t i);
static bool meter_calibrating(FlowEngine *e, const Meter *m);

static bool meter_is_evictable(FlowEngine *e, const Meter *m, bool drop_taps) {
        Tap *t;

        /* A quarantine (section 9) outlives any silence. Counted ticks not accounted for yet (a hold,
         * pending, a carry from before a board reset) are never forgotten, nor is a meter whose next
         * reading may bring ticks nobody counted yet (resumed after a restart, or its board reconnected),
         * nor one being calibrated (its count would be lost). */
        if (m->flow || (m->filter && m->filter->quarantined) || m->open > 0 || m->carry > 0 || m->resync ||
            meter_calibrating(e, m))
                return false;
        t = m->tap;
        /* A configured tap keeps its meter; a first-sight tap goes with it, unless a token waits on it. */
        return !t || (drop_taps && t->auto_created && !t->record.device && !t->lookup_pending);
}

/* The meter to forget for a new one (see FLOW_ENGINE_MAX_METERS), or SIZE_MAX. drop_taps: first-sight
 * taps may go too (not while the caller walks the tap table); grace: the age a never-used meter must
 * have. */
static size_t meter_pick_victim(FlowEngine *e, uint64_t now, bool drop_taps, uint64_t grace) {
        size_t best = SIZE_MAX;
        bool best_unused = false;

        for (size_t i = 0; i < e->n_meters; i++) {
                const Meter *m = e->meters[i];
                bool unused = m->total == 0;
                uint64_t age = now > m->last_seen ? now - m->last_seen : 0;

                if (age < (unused ? grace : e->config.meter_evict_idle_usec) ||
                    !meter_is_evictable(e, m, drop_taps))
                        continue;
                /* Never-used meters first, then the least recently seen. */
                if (best == SIZE_MAX || (unused && !best_unused) ||
                    (unused == best_unused && m->last_seen < e->meters[best]->last_seen)) {
                        best = i;
                        best_unused = unused;
                }
        }
        return best;
}

static size_t meter_index_of(FlowEngine *e, const char *name) {
        for (size_t i = 0; i < e->n_meters; i++)
                if (streq(e->meters[i]->name, name))
                        return i;
        return SIZE_MAX;
}

static size_t tap_index_of(FlowEngine *e, const char *meter) {
        for (size_t i = 0; i < e->n_taps; i++)
                if (streq(e->taps[i]->meter_name, meter))
                        return i;
        return SIZE_MAX;
}

/* Drops meter i, with its first-sight tap if drop_tap, and rebuilds the name index (evictions are rare). */
static void meter_forget(FlowEngine *e, size_t i, bool drop_tap) {
        Meter *m = e->meters[i];
        size_t t = drop_tap ? tap_index_of(e, m->name) : SIZE_MAX;

        if (t != SIZE_MAX && e->taps[t]->auto_created)
                tap_remove_at(e, t);
        memmove(e->meters + i, e->meters + i + 1, (e->n_meters - i - 1) * sizeof(Meter *));
        e->n_meters--;
        free(m->name);
        free(m->filter);
        free(m);

        memset(e->index, 0, e->index_size * sizeof(Meter *));
        for (size_t j = 0; j < e->n_meters; j++)
                index_insert(e->index, e->index_size, e->meters[j]);
}

static void meter_evict(FlowEngine *e, size_t i, const char *for_name, uint64_t now) {
        Meter *m = e->meters[i];
        bool had_tap = m->tap;
        size_t j;

        emit_log_kind(e, FLOW_LOG_TABLE, m->name, LOG_WARNING,
                      "Meter table full (%d meters): forgetting meter %s (%s, last seen %" PRIu64 " s ago) for %s",
                      FLOW_ENGINE_MAX_METERS, m->name, m->total == 0 ? "never counted a tick" : "idle",
                      (now - MIN(now, m->last_seen)) / USEC_PER_SEC, for_name);
        if (had_tap)
                emit(e, &(FlowEvent) { .type = FLOW_EVENT_TAP_REMOVED, .meter_name = m->name });
        emit(e, &(FlowEvent) { .type = FLOW_EVENT_METER_FORGOTTEN, .meter_name = m->name });

        /* The shadow forgets it too, and the first-sight tap it was told about. */
        if (e->shadow) {
                j = meter_index_of(e->shadow, m->name);
                if (j != SIZE_MAX && !e->shadow->meters[j]->flow)
                        meter_forget(e->shadow, j, had_tap);
                else if (had_tap && (j = tap_index_of(e->shadow, m->name)) != SIZE_MAX &&
                         e->shadow->taps[j]->auto_created)
                        tap_remove_at(e->shadow, j);
        }
        meter_forget(e, i, true);
}

/* 'restoring': the meter's state comes from the caller (flow_engine_restore_meter()), not from a
 * reset notice. */
static int meter_get_or_add_full(FlowEngine *e, const char *name, const FlowTime *now, bool drop_taps, bool restoring,
                                 Meter **ret) {
        Meter *m;
        int r;

        m = meter_find(e, name);
        if (m) {
                m->last_seen = now->monotonic;
                *ret = m;
                return 0;
        }
        if (e->n_meters >= FLOW_ENGINE_MAX_METERS) {
                /* The shadow's taps follow the real engine's. */
                size_t victim = meter_pick_victim(e, now->monotonic, drop_taps && !is_shadow(e),
                                                  e->config.meter_evict_grace_usec);
                if (victim == SIZE_MAX) {
                        emit_log_kind(e, FLOW_LOG_TABLE_FULL, name, LOG_WARNING,
                                      "Meter table full (%d meters, all in use or seen lately); ignoring meter %s",
                                      FLOW_ENGINE_MAX_METERS, name);
                        return -ENOSPC;
                }
                meter_evict(e, victim, name, now->monotonic);
        }
        r = grow(&e->meters, &e->n_meters_alloc, e->n_meters + 1, sizeof(Meter *));
        if (r < 0)
                return r;
        r = index_reserve(e, e->n_meters + 1);
        if (r < 0)
                return r;
        m = calloc(1, sizeof(Meter));
        if (!m)
                return -ENOMEM;
        m->name = strdup(name);
        if (!m->name) {
                free(m);
                return -ENOMEM;
        }
        m->tap = tap_find(e, name);
        m->last_seen = now->monotonic;
        e->meters[e->n_meters++] = m;
        index_insert(e->index, e->index_size, m);
        *ret = m;
        /* The board restarted its counters after its reset notice: its first reading counts from 0,
         * and a restarted core must know that too. */
        if (!restoring && meter_was_reset(e, name)) {
                m->has_last = true;
                m->last = 0;
                m->resync = meter_of_any(name, e->gap_controllers, e->n_gap_controllers);
                emit_meter_state(e, m);
        }
        return 0;
}

static int meter_get_or_add(FlowEngine *e, const char *name, const FlowTime *now, bool drop_taps, Meter **ret) {
        return meter_get_or_add_full(e, name, now, drop_taps, false, ret);
}

/* The engine that holds calibrations: the shadow evaluates the same meters as its parent. */
static FlowEngine *engine_root(FlowEngine *e) {
        return e->parent ?: e;
}

static bool relay_held(FlowEngine *e, const char *relay) {
        FlowEngine *root = engine_root(e);

        for (size_t i = 0; i < e->n_meters; i++) {
                Flow *f = e->meters[i]->flow;
                if (f && f->relay_name && streq(f->relay_name, relay))
                        return true;
        }
        for (size_t i = 0; i < root->n_meters; i++) {
                Calibration *c = root->meters[i]->cal;
                if (c && c->relay_name && streq(c->relay_name, relay))
                        return true;
        }
        return false;
}

/* A calibration pour runs on the meter (in the shadow: on its parent's meter). */
static bool meter_calibrating(FlowEngine *e, const Meter *m) {
        Meter *rm;

        if (!is_shadow(e))
                return m->cal != NULL;
        rm = meter_find(e->parent, m->name);
        return rm && rm->cal;
}

static const FlowSettings *tap_settings(FlowEngine *e, const Tap *t) {
        return t && t->has_settings ? &t->settings : &e->config.settings;
}

static const FlowSettings *meter_settings(FlowEngine *e, const Meter *m) {
        return tap_settings(e, m->tap);
}

/* The calibration the filter uses: the tap's, the last one of a flow whose tap went away, else the
 * default (section 2). */
static double meter_ml_per_tick(FlowEngine *e, const Meter *m) {
        if (m->tap)
                return m->tap->ml_per_tick;
        if (m->flow && m->flow->ml_per_tick > 0)
                return m->flow->ml_per_tick;
        return e->config.default_ml_per_tick;
}

/* Does this engine filter the meter? The real engine filters "on" meters, the shadow "log" ones. */
static bool filter_in_scope(FlowEngine *e, const Meter *m) {
        return meter_settings(e, m)->ghost_filter == (is_shadow(e) ? FLOW_GHOST_LOG : FLOW_GHOST_ON);
}

static bool tap_in_scope(FlowEngine *e, const Tap *t) {
        return !is_shadow(e) || tap_settings(e, t)->ghost_filter == FLOW_GHOST_LOG;
}

FlowGhostMode flow_engine_meter_mode(FlowEngine *e, const char *meter) {
        Meter *m;

        assert_return(e, FLOW_GHOST_OFF);
        assert_return(meter, FLOW_GHOST_OFF);
        m = meter_find(e, meter);
        if (m)
                return meter_settings(e, m)->ghost_filter;
        return tap_settings(e, tap_find(e, meter))->ghost_filter;
}

/* ---- valves (section 6.1) ---- */

static RelayView *relay_view_find(FlowEngine *e, const char *relay) {
        for (size_t i = 0; i < e->n_relays; i++)
                if (streq(e->relays[i].name, relay))
                        return &e->relays[i];
        return NULL;
}

static RelayView *relay_view_get(FlowEngine *e, const char *relay) {
        RelayView *v = relay_view_find(e, relay);

        if (v)
                return v;
        /* Names come from taps and D-Bus: bounded like the meters. */
        if (e->n_relays >= FLOW_ENGINE_MAX_METERS ||
            grow(&e->relays, &e->n_relays_alloc, e->n_relays + 1, sizeof(RelayView)) < 0)
                return NULL;
        v = &e->relays[e->n_relays];
        *v = (RelayView) { .name = strdup(relay) };
        if (!v->name)
                return NULL;
        e->n_relays++;
        return v;
}

static void relay_view_opened(FlowEngine *e, const char *relay) {
        RelayView *v = relay_view_get(e, relay);
        if (v)
                v->ever_open = true;
}

/* A flow let go of the relay and nothing else holds it. */
static void relay_view_closed(FlowEngine *e, const char *relay, uint64_t now) {
        RelayView *v = relay_view_get(e, relay);
        if (v)
                v->closed_since = now;
}

/* G1 (step 5): the tap has a relay, the gate is on, and its valve has been closed for the grace. */
static bool valve_gate_claims(FlowEngine *e, const Meter *m, const FlowSettings *s, uint64_t now) {
        const Tap *t = m->tap;
        const RelayView *v;
        uint64_t closed_at;

        if (!t || isempty(t->relay_name) || !s->valve_closed_gate)
                return false;
        if (relay_held(e, t->relay_name))
                return false;
        v = relay_view_find(e, t->relay_name);
        if (!v || !v->ever_open)
                return true;
        if (v->manual_until > now)
                return false;
        closed_at = MAX(v->closed_since, v->manual_until);
        return now >= closed_at && now - closed_at >= seconds_to_usec(s->valve_closed_grace_s);
}

/* ---- flows ---- */

static Flow *flow_free(Flow *f) {
        if (!f)
                return NULL;
        free(f->meter_name);
        free(f->username);
        free(f->auth_device);
        token_record_done(&f->token);
        free(f->relay_name);
        free(f);
        return NULL;
}

static void flow_refresh_calibration(FlowEngine *e, Flow *f) {
        Tap *t = tap_find(e, f->meter_name);
        if (t)
                f->ml_per_tick = t->ml_per_tick;
}

static uint64_t flow_idle_deadline(const Flow *f) {
        return add_sat(f->last_activity, f->max_idle);
}

static void flow_fill_info(FlowEngine *e, Flow *f, FlowInfo *ret) {
        flow_refresh_calibration(e, f);
        *ret = (FlowInfo) {
                .flow_id = f->id,
                .meter_name = f->meter_name,
                .state = f->state,
                .username = f->username,
                .auth_device = f->auth_device,
                .max_idle_usec = f->max_idle,
                .start_realtime = f->start_realtime,
                .last_activity_realtime = f->has_ticks ? f->last_tick_realtime : f->start_realtime,
                .has_ticks = f->has_ticks,
                .first_tick_realtime = f->first_tick_realtime,
                .last_tick_realtime = f->last_tick_realtime,
                .ticks = f->ticks,
                .volume_known = f->ml_per_tick > 0,
                .volume_ml = f->ml_per_tick > 0 ? (double) f->ticks * f->ml_per_tick : 0.0,
                .relay_name = f->relay_name,
                .idle_deadline = f->held ? f->hold_until : flow_idle_deadline(f),
                .flags = f->flags,
                .held = f->held,
        };
}

static void emit_flow_update(FlowEngine *e, Flow *f) {
        FlowInfo info;

        flow_fill_info(e, f, &info);
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_FLOW_UPDATE,
                .meter_name = f->meter_name,
                .flow = &info,
        });
}

static Tap *tap_find(FlowEngine *e, const char *meter);

static Flow *flow_alloc(FlowEngine *e, const char *meter, const FlowTime *now) {
        Flow *f = calloc(1, sizeof(Flow));
        Tap *t = tap_find(e, meter);

        if (!f)
                return NULL;
        f->meter_name = strdup(meter);
        if (!f->meter_name)
                return flow_free(f);
        f->state = FLOW_STATE_ACTIVE;
        /* A grant covering the tap owns the flow (a user binding overrides this). */
        f->max_idle = t && t->grant_idle > 0 ? t->grant_idle : e->config.idle_default_usec;
        f->start_realtime = now->realtime;
        f->last_activity = now->monotonic;
        return f;
}

/* Pour ticks attributed to 'at' (their arrival; section 5.2): first tick, onset, series. The last
 * tick time is the caller's (flow_set_last_tick()). */
static void flow_add_ticks_at(Flow *f, uint64_t n, const FlowTime *at, const FlowSettings *s) {
        uint64_t offset;

        if (n == 0)
                return;
        if (!f->has_ticks) {
                f->has_ticks = true;
                f->first_tick_realtime = at->realtime;
                f->first_tick_monotonic = at->monotonic;
        }
        offset = at->monotonic > f->first_tick_monotonic ? at->monotonic - f->first_tick_monotonic : 0;
        f->ticks += n;
        tick_series_add(&f->series, offset / USEC_PER_MSEC, n);
        if (offset < seconds_to_usec(s->ghost_onset_s))
                f->onset_ticks += n;
}

static void flow_set_last_tick(Flow *f, const FlowTime *now) {
        f->last_tick_realtime = now->realtime;
        f->last_tick_monotonic = now->monotonic;
        f->last_tick_boottime = now->boottime;
}

/* Without the filter: every counted tick is a pour tick and activity. */
static void flow_add_ticks(FlowEngine *e, Meter *m, Flow *f, uint64_t delta, const FlowTime *now) {
        flow_add_ticks_at(f, delta, now, meter_settings(e, m));
        flow_set_last_tick(f, now);
        f->last_activity = now->monotonic;
}

/* Takes ownership of f. Ids are assigned here so that a flow that failed to build consumes none. */
static void flow_start(FlowEngine *e, Meter *m, Flow *f) {
        f->id = e->next_flow_id++;
        m->flow = f;
        emit_log(e, f->meter_name, LOG_INFO, "Starting flow flow_id=0x%08" PRIx64 " meter=%s user=%s",
                 f->id, f->meter_name, f->username ?: "None");
        emit_flow_update(e, f);
        if (f->relay_name)
                emit_relay(e, f->meter_name, f->relay_name, true, false);
}

static void flow_grab_relay(FlowEngine *e, Flow *f, char *relay, const FlowTime *now) {
        free(f->relay_name);
        f->relay_name = relay;
        f->relay_next = add_sat(now->monotonic, e->config.relay_reassert_usec);
        relay_view_opened(e, relay);
}

/* ---- the filter's per-meter state ---- */

static int meter_filter(Meter *m, Filter **ret) {
        if (!m->filter) {
                m->filter = malloc(sizeof(Filter));
                if (!m->filter)
                        return -ENOMEM;
                *m->filter = (Filter) {};
                for (size_t i = 0; i < RING_BINS; i++)
                        m->filter->ring[i].n = BIN_NONE;
        }
        *ret = m->filter;
        return 0;
}

static uint64_t bin_of(uint64_t monotonic) {
        return monotonic / BIN_USEC;
}

static unsigned window_bins(const FlowSettings *s) {
        return (unsigned) ceil(2.0 * s->pour_start_window_s - REL_EPSILON);
}

static unsigned baseline_bins(const FlowSettings *s) {
        return (unsigned) floor(2.0 * s->ghost_baseline_s + 0.5);
}

/* First bin of the start window ending with bin b. */
static uint64_t window_first(uint64_t b, unsigned w) {
        return b + 1 >= w ? b + 1 - w : 0;
}

static Bin *bin_get(Filter *f, uint64_t n) {
        Bin *x = &f->ring[n % RING_BINS];
        return x->n == n ? x : NULL;
}

/* 'back' bins before b; absent ones (and those before the clock's first) are empty. */
static uint64_t bin_raw_back(Filter *f, uint64_t b, unsigned back) {
        Bin *x;

        if (back > b)
                return 0;
        x = bin_get(f, b - back);
        return x ? x->raw : 0;
}

/* Bin b, emptied if its slot held an older one. Callers age first, so an older one holds no pending. */
static Bin *bin_touch(Filter *f, uint64_t n) {
        Bin *x = &f->ring[n % RING_BINS];

        if (x->n != n)
                *x = (Bin) { .n = n };
        return x;
}

static void filter_reset_pour(Filter *f) {
        f->pouring = false;
        f->ref = 0;
        f->carry = 0;
        f->kicking = false;
}

/* The filter's view of the meter starts over: no bins, no pending ticks, no run, no pour. The
 * quarantine, the open episode and the counters are the caller's business. */
static void filter_restart(Filter *f) {
        for (size_t i = 0; i < RING_BINS; i++)
                f->ring[i] = (Bin) { .n = BIN_NONE };
        f->pending_total = 0;
        f->has_run = false;
        f->cuts = 0;
        filter_reset_pour(f);
}

static const char *rule_reason(FlowEngine *e, Filter *f, FlowGhostRule rule, char *buf, size_t size) {
        switch (rule) {
        case FLOW_RULE_G1:
                return "flow with valve closed";
        case FLOW_RULE_G2:
                return "too little volume to start a pour";
        case FLOW_RULE_G3:
                snprintf(buf, size, "no step above the ghost baseline of %.1f mL/s", f->g3_baseline);
                return buf;
        case FLOW_RULE_G4:
                return "trickle below the activity floor";
        case FLOW_RULE_G7:
                return "tap quarantined";
        default:
                return "ghost";
        }
}

/* An episode is reported (section 8.1): GhostFlow with flow id 0 and its log line. */
static void episode_report(FlowEngine *e, Meter *m) {
        Filter *f = m->filter;
        Episode *ep = &f->episode;
        FlowGhostRule rule = FLOW_RULE_G1;
        char reason[128], vol[64];
        const FlowSettings *s = meter_settings(e, m);
        bool loud;

        if (!ep->open)
                return;
        for (int r = FLOW_RULE_G1; r < _FLOW_RULE_MAX; r++)
                if (ep->ticks[r] > ep->ticks[rule])
                        rule = r;

        tick_series_format(&ep->series, e->series_buf);
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_GHOST,
                .meter_name = m->name,
                .ghost.rule = rule,
                .ghost.ticks = ep->total,
                .ghost.volume_known = ep->volume_known,
                .ghost.volume_ml = ep->volume_known ? ep->volume : -1.0,
                .ghost.start_realtime = ep->first.realtime,
                .ghost.end_realtime = ep->last.realtime,
                .ghost.duration_usec = ep->last.monotonic - ep->first.monotonic,
                .ghost.flow_id = 0,
                .ghost.tick_series = e->series_buf,
                .ghost.mode = report_mode(e),
        });

        if (ep->volume_known)
                snprintf(vol, sizeof vol, "%" PRIu64 " ticks (%.1f mL)", ep->total, ep->volume);
        else
                snprintf(vol, sizeof vol, "%" PRIu64 " ticks (volume unknown)", ep->total);
        /* A meter without a tap is judged with the default calibration (ep->volume holds it). */
        loud = rule == FLOW_RULE_G1 || rule == FLOW_RULE_G7 || !approx_lt(ep->volume, s->min_volume_ml);
        emit_report_log(e, m->name, loud ? LOG_WARNING : LOG_DEBUG,
                        "Ghost ticks on %s: %s over %.1f s, rule %s (%s); %s; series %s", m->name, vol,
                        (double) (ep->last.monotonic - ep->first.monotonic) / 1e6, flow_ghost_rule_to_string(rule),
                        rule_reason(e, f, rule, reason, sizeof reason),
                        is_shadow(e) ? "ghost_filter=log, no action" : "not recorded", e->series_buf);
        *ep = (Episode) {};
        /* Its ticks are accounted for: a restarted core does not see them again (written once per
         * episode, not per report). */
        emit_meter_state(e, m);
}

static void ghost_counters_add(FlowEngine *e, Meter *m, uint64_t n, double c) {
        Filter *f = m->filter;

        f->ghost_ticks += n;
        if (m->tap)
                f->ghost_volume += (double) n * c;
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_GHOST_COUNTERS,
                .meter_name = m->name,
        });
}

/* Ghost ticks classified while they arrive (section 6): counted, and into the open episode. */
static void ghost_classify(FlowEngine *e, Meter *m, FlowGhostRule rule, uint64_t n, const FlowTime *at) {
        Filter *f = m->filter;
        Episode *ep = &f->episode;
        double c = meter_ml_per_tick(e, m);
        uint64_t offset;

        if (n == 0)
                return;
        if (ep->open && at->monotonic >= add_sat(ep->first.monotonic, EPISODE_CAP_USEC))
                episode_report(e, m);
        if (!ep->open)
                *ep = (Episode) { .open = true, .first = *at, .last = *at, .volume_known = true };
        if (at->monotonic < ep->first.monotonic)
                ep->first = *at;
        if (at->monotonic > ep->last.monotonic)
                ep->last = *at;
        ep->ticks[rule] += n;
        ep->total += n;
        ep->volume += (double) n * c;
        if (!m->tap)
                ep->volume_known = false;
        offset = at->monotonic - ep->first.monotonic;
        tick_series_add(&ep->series, offset / USEC_PER_MSEC, n);
        ghost_counters_add(e, m, n, c);
        meter_settle(e, m, n);
}

/* Step 1: pending ticks of bins before 'first' become ghost with their pending rule, oldest first.
 * first = UINT64_MAX ages everything (shutdown, clearing a quarantine). */
static void filter_age(FlowEngine *e, Meter *m, uint64_t first) {
        Filter *f = m->filter;
        Bin *due[RING_BINS];
        size_t n = 0;

        if (!f || f->pending_total == 0)
                return;
        for (size_t i = 0; i < RING_BINS; i++) {
                Bin *x = &f->ring[i];
                size_t j;

                if (x->n == BIN_NONE || x->pending == 0 || x->n >= first)
                        continue;
                for (j = n; j > 0 && due[j - 1]->n > x->n; j--)
                        due[j] = due[j - 1];
                due[j] = x;
                n++;
        }
        for (size_t i = 0; i < n; i++) {
                uint64_t p = due[i]->pending;

                due[i]->pending = 0;
                f->pending_total -= p;
                ghost_classify(e, m, due[i]->rule, p, &due[i]->first_pending);
        }
}

/* Every pending tick becomes ghost and the open episode is reported (a quarantine is cleared, a
 * calibration starts). */
static void filter_flush(FlowEngine *e, Meter *m) {
        if (!m->filter)
                return;
        filter_age(e, m, UINT64_MAX);
        episode_report(e, m);
}

static uint64_t window_pending(Filter *f, uint64_t first, uint64_t b) {
        uint64_t p = 0;

        for (uint64_t n = first; n <= b; n++) {
                Bin *x = bin_get(f, n);
                if (x)
                        p += x->pending;
        }
        return p;
}

/* Median of the background rate (mL/s) over the N bins before the window (section 6.2, step 2). */
static double filter_baseline(Filter *f, uint64_t b, unsigned w, unsigned nb, double c) {
        double v[RING_BINS], B;
        unsigned k = 0;

        for (unsigned i = 0; i < nb; i++) {
                uint64_t back = (uint64_t) w + i;
                Bin *x = back > b ? NULL : bin_get(f, b - back);
                double bg = x ? (double) (x->raw - x->taken) * c / 0.5 : 0.0;
                unsigned j;

                for (j = k; j > 0 && v[j - 1] > bg; j--)
                        v[j] = v[j - 1];
                v[j] = bg;
                k++;
        }
        B = k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2.0;
        return B < QUIET_ML_S ? 0.0 : B;
}

typedef struct Chunk {
        Bin *bin;
        uint64_t ticks;
        const FlowTime *at;
} Chunk;

/* Section 6.4: the window's pending ticks into the flow, less the ghost share (taken from the newest
 * ticks, rule G4). 'd' of bin b's pending are this report's own. Returns the pour ticks added. */
static uint64_t filter_include(FlowEngine *e, Meter *m, Flow *fl, const FlowSettings *s, double c, uint64_t b,
                               uint64_t d, double dt, const FlowTime *now) {
        Filter *f = m->filter;
        Chunk chunks[2 * RING_BINS];
        size_t n = 0;
        uint64_t p = 0, share, added = 0;
        double g;

        for (uint64_t k = window_first(b, window_bins(s)); k <= b; k++) {
                Bin *x = bin_get(f, k);

                if (!x || x->pending == 0)
                        continue;
                if (k == b && d > 0 && x->pending > d)
                        chunks[n++] = (Chunk) { x, x->pending - d, &x->first_pending };
                if (k == b && d > 0)
                        chunks[n++] = (Chunk) { x, MIN(d, x->pending), now };
                else
                        chunks[n++] = (Chunk) { x, x->pending, &x->first_pending };
                p += x->pending;
                x->taken += x->pending;
                f->pending_total -= x->pending;
                x->pending = 0;
        }

        g = f->ref / c * dt + f->carry;
        share = g >= (double) p ? p : (uint64_t) floor(g);
        f->carry = g - floor(g);

        for (size_t i = n; i > 0 && share > 0; i--) {
                Chunk *ch = &chunks[i - 1];
                uint64_t take = MIN(share, ch->ticks);

                ch->ticks -= take;
                ch->bin->taken -= take;
                share -= take;
                ghost_classify(e, m, FLOW_RULE_G4, take, ch->at);
        }
        for (size_t i = 0; i < n; i++) {
                flow_add_ticks_at(fl, chunks[i].ticks, chunks[i].at, s);
                added += chunks[i].ticks;
        }
        if (added > 0) {
                flow_set_last_tick(fl, now);
                f->last_pour_report = now->monotonic;
        }
        return added;
}

static void flow_flag(FlowEngine *e, Meter *m, Flow *fl, unsigned flag, const FlowSettings *s, double run_s) {
        if (fl->flags & flag)
                return;
        fl->flags |= flag;
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_POUR_FLAGGED,
                .meter_name = m->name,
                .flagged.flow_id = report_flow_id(e, fl),
                .flagged.flag = flag,
                .flagged.mode = report_mode(e),
        });
        if (flag == DRINK_FLAG_KICKED) {
                if (is_shadow(e))
                        emit_report_log(e, m->name, LOG_WARNING,
                                        "Pour on %s would be flagged kicked: above %g mL/s for 2 s; ghost_filter=log",
                                        m->name, s->kick_rate_ml_s);
                else
                        emit_report_log(e, m->name, LOG_WARNING,
                                        "Flow 0x%08" PRIx64 " on %s flagged kicked: above %g mL/s for 2 s",
                                        fl->id, m->name, s->kick_rate_ml_s);
        } else {
                if (is_shadow(e))
                        emit_report_log(e, m->name, LOG_INFO,
                                        "Pour on %s would be flagged long_pour: %.1f s without a pause; ghost_filter=log",
                                        m->name, run_s);
                else
                        emit_report_log(e, m->name, LOG_INFO,
                                        "Flow 0x%08" PRIx64 " on %s flagged long_pour: %.1f s without a pause",
                                        fl->id, m->name, run_s);
        }
}

/* ---- ending flows (section 7) ---- */

typedef enum EndCause {
        END_IDLE,               /* idle deadline */
        END_STOP,               /* stop_flow, StopFlow, captive removal: may hold */
        END_SWITCH,             /* another user's token takes the tap: no hold (a new flow starts now) */
        END_SHUTDOWN,           /* no hold */
        END_CUT,                /* G7: ghost, no hold */
} EndCause;

static void emit_not_recorded(FlowEngine *e, Flow *f, const FlowInfo *info, FlowNotRecordedReason reason,
                              double min_volume_ml) {
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_NOT_RECORDED,
                .meter_name = f->meter_name,
                .flow = info,
                .not_recorded.reason = reason,
                .not_recorded.min_volume_ml = min_volume_ml,
        });
}

/* Section 8.2: a flow not recorded by G5-G8 is reported on its own. */
static void flow_report_ghost(FlowEngine *e, Meter *m, Flow *f, FlowGhostRule rule, const char *reason,
                              double c) {
        double v = (double) f->ticks * c, d;
        char vol[64];

        if (m->filter)
                ghost_counters_add(e, m, f->ticks, c);
        d = f->has_ticks ? (double) (f->last_tick_monotonic - f->first_tick_monotonic) / 1e6 : 0.0;
        tick_series_format(&f->series, e->series_buf);
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_GHOST,
                .meter_name = m->name,
                .ghost.rule = rule,
                .ghost.ticks = f->ticks,
                .ghost.volume_known = m->tap != NULL,
                .ghost.volume_ml = m->tap ? v : -1.0,
                .ghost.start_realtime = f->first_tick_realtime,
                .ghost.end_realtime = f->last_tick_realtime,
                .ghost.duration_usec = f->has_ticks ? f->last_tick_monotonic - f->first_tick_monotonic : 0,
                .ghost.flow_id = report_flow_id(e, f),
                .ghost.tick_series = e->series_buf,
                .ghost.mode = report_mode(e),
        });
        if (rule == FLOW_RULE_G8)
                return;         /* G8 keeps only the existing INFO line */

        if (m->tap)
                snprintf(vol, sizeof vol, "%" PRIu64 " ticks (%.1f mL)", f->ticks, v);
        else
                snprintf(vol, sizeof vol, "%" PRIu64 " ticks (volume unknown)", f->ticks);
        if (is_shadow(e))
                emit_report_log(e, m->name, LOG_WARNING,
                                "Ghost pour on %s: rule %s (%s); %s over %.1f s; ghost_filter=log, no action; series %s",
                                m->name, flow_ghost_rule_to_string(rule), reason, vol, d, e->series_buf);
        else
                emit_report_log(e, m->name, LOG_WARNING,
                                "Not recording flow 0x%08" PRIx64 ": ghost pour, rule %s (%s); %s over %.1f s; series %s",
                                f->id, flow_ghost_rule_to_string(rule), reason, vol, d, e->series_buf);
}

/* The flow is detached from its meter: classify it (section 7.2 when filtered, core-behaviour.md 10.1
 * otherwise), record it or not, and report it completed. */
static void flow_complete(FlowEngine *e, Meter *m, Flow *f, bool filtered, bool cut, double run_s) {
        const FlowSettings *s = meter_settings(e, m);
        FlowInfo info;
        Drink drink;
        char reason[128];
        FlowGhostRule rule = FLOW_RULE_NONE;
        bool recorded = false;

        f->held = false;
        f->state = FLOW_STATE_COMPLETED;
        flow_fill_info(e, f, &info);
        /* Every tick of the flow is in this drink now, or discarded with it. */
        meter_settle(e, m, f->ticks);

        if (filtered && f->ticks > 0) {
                double c = meter_ml_per_tick(e, m), v = (double) f->ticks * c;
                double d = (double) (f->last_tick_monotonic - f->first_tick_monotonic) / 1e6;
                bool judged = s->ghost_min_duration_s > 0 && !approx_lt(d, s->ghost_min_duration_s);

                if (cut) {
                        rule = FLOW_RULE_G7;
                        snprintf(reason, sizeof reason, "meter ran %.1f s without a pause", run_s);
                } else if (judged && s->ghost_max_avg_ml_s > 0 && approx_lt(v / d, s->ghost_max_avg_ml_s)) {
                        rule = FLOW_RULE_G5;
                        snprintf(reason, sizeof reason, "average %.1f mL/s below %g mL/s over %.1f s", v / d,
                                 s->ghost_max_avg_ml_s, d);
                } else if (judged && s->ghost_min_onset_ml > 0 &&
                           f->onset_ticks < flow_volume_ticks(s->ghost_min_onset_ml, c)) {
                        rule = FLOW_RULE_G6;
                        snprintf(reason, sizeof reason, "only %.1f mL in the first %g s", (double) f->onset_ticks * c,
                                 s->ghost_onset_s);
                }
                if (rule != FLOW_RULE_NONE) {
                        emit_not_recorded(e, f, &info, FLOW_NOT_RECORDED_GHOST, s->min_volume_ml);
                        flow_report_ghost(e, m, f, rule, reason, c);
                        goto done;
                }
        }

        if (f->ticks == 0) {
                emit_log(e, f->meter_name, LOG_INFO, "Not recording flow 0x%08" PRIx64 ": no ticks", f->id);
                emit_not_recorded(e, f, &info, FLOW_NOT_RECORDED_NO_TICKS, s->min_volume_ml);
        } else if (info.volume_known && approx_lt(info.volume_ml, s->min_volume_ml)) {
                emit_log(e, f->meter_name, LOG_INFO,
                         "Not recording flow 0x%08" PRIx64 ": %g mL is below the minimum of %g mL",
                         f->id, info.volume_ml, s->min_volume_ml);
                emit_not_recorded(e, f, &info, FLOW_NOT_RECORDED_BELOW_MINIMUM, s->min_volume_ml);
                /* In on and log modes every counted tick ends in a drink or the ghost count (8.3). */
                if (filtered)
                        flow_report_ghost(e, m, f, FLOW_RULE_G8, NULL, meter_ml_per_tick(e, m));
        } else {
                tick_series_format(&f->series, e->series_buf);
                drink = (Drink) {
                        .flow_id = f->id,
                        .meter_name = f->meter_name,
                        .username = f->username,
                        .ticks = f->ticks,
                        .volume_known = info.volume_known,
                        .volume_ml = info.volume_ml,
                        .start_realtime = f->first_tick_realtime,
                        .pour_realtime = f->last_tick_realtime,
                        .pour_boottime = f->last_tick_boottime,
                        .duration_sec = (f->last_tick_monotonic - f->first_tick_monotonic) / USEC_PER_SEC,
                        .duration_ms = (f->last_tick_monotonic - f->first_tick_monotonic) / USEC_PER_MSEC,
                        .tick_series = isempty(e->series_buf) ? NULL : e->series_buf,
                        .flags = f->flags,
                };
                emit(e, &(FlowEvent) {
                        .type = FLOW_EVENT_DRINK,
                        .meter_name = f->meter_name,
                        .flow = &info,
                        .drink = &drink,
                        .meter_state = m->has_last ? meter_state(m) : NULL,
                });
                recorded = true;
        }

done:
        if (!recorded)
                emit_meter_state(e, m);
        if (filtered && m->filter)
                filter_reset_pour(m->filter);
        emit_log(e, f->meter_name, LOG_INFO, "Flow completed: flow_id=0x%08" PRIx64, f->id);
        emit_flow_update(e, f);
        flow_free(f);
}

/* Section 7.1: G1 is on for the tap and the grace is not zero. */
static bool flow_may_hold(FlowEngine *e, Meter *m) {
        const FlowSettings *s = meter_settings(e, m);
        return m->tap && !isempty(m->tap->relay_name) && s->valve_closed_gate && s->valve_closed_grace_s > 0;
}

/* Ends the meter's flow (core-behaviour.md 6.5, ghost-pours.md 7.3). 'keep_relay': a new flow takes the
 * same relay at once, so no "disabled" is sent in between (no valve flicker on a user switch). */
static void flow_end(FlowEngine *e, Meter *m, EndCause cause, bool keep_relay, const FlowTime *now, double run_s) {
        Flow *f = m->flow;
        bool filtered = filter_in_scope(e, m);
        bool disable = f->relay_name && !keep_relay;
        bool hold;

        if (cause == END_IDLE) {
                emit_log(e, f->meter_name, LOG_INFO, "Flow has become too idle, ending: flow_id=0x%08" PRIx64, f->id);
                f->state = FLOW_STATE_IDLE;
                emit_flow_update(e, f);
        }

        if (disable) {
                /* Another flow (a different tap on the same relay) may still hold it. */
                m->flow = NULL;
                disable = !relay_held(e, f->relay_name);
                m->flow = f;
        }
        hold = filtered && disable && (cause == END_IDLE || cause == END_STOP) && flow_may_hold(e, m);

        if (hold) {
                /* The beer in flight still counts: the flow waits out the grace (section 7.1). */
                if (cause != END_IDLE) {
                        f->state = FLOW_STATE_IDLE;
                        emit_flow_update(e, f);
                }
                f->held = true;
                f->hold_until = add_sat(now->monotonic, seconds_to_usec(meter_settings(e, m)->valve_closed_grace_s));
        }

        /* Detached first: queries from the handler already see the tap without this flow. */
        if (!hold)
                m->flow = NULL;

        if (f->relay_name) {
                char *relay = TAKE_PTR(f->relay_name);
                if (disable) {
                        relay_view_closed(e, relay, now->monotonic);
                        emit_relay(e, f->meter_name, relay, false, false);
                }
                free(relay);
        }

        if (hold) {
                if (m->filter)
                        filter_reset_pour(m->filter);
                return;
        }
        flow_complete(e, m, f, filtered, cause == END_CUT, run_s);
}

/* The end of a hold, or a hold cut short (section 7.1). */
static void flow_end_hold(FlowEngine *e, Meter *m) {
        Flow *f = m->flow;

        m->flow = NULL;
        flow_complete(e, m, f, filter_in_scope(e, m), false, 0);
}

/* Something needs the tap for a new flow (or stops it): a held flow completes first. */
static void meter_finish_hold(FlowEngine *e, Meter *m) {
        if (m->flow && m->flow->held)
                flow_end_hold(e, m);
}

/* ---- handling a report (section 6) ---- */

/* G7 and G9 after a qualifying report (sections 6.5, 6.6). Returns true if the flow ended (cut). */
static bool filter_after_qualifying(FlowEngine *e, Meter *m, const FlowSettings *s, double c, uint64_t b,
                                    const FlowTime *now) {
        Filter *f = m->filter;
        Flow *fl = m->flow;
        uint64_t t = now->monotonic;

        if (!f->has_run || t - f->run_last >= RUN_GAP_USEC) {
                f->has_run = true;
                f->run_start = t;
                f->cuts = 0;
        }
        f->run_last = t;

        if (s->max_pour_s > 0) {
                uint64_t k = (t - f->run_start) / seconds_to_usec(s->max_pour_s);
                double run_s = (double) (t - f->run_start) / 1e6;

                if (k > f->cuts) {
                        f->cuts = (unsigned) MIN(k, (uint64_t) UINT32_MAX);
                        if (s->quarantine_after_cuts == 0 || k < s->quarantine_after_cuts)
                                flow_flag(e, m, fl, DRINK_FLAG_LONG_POUR, s, run_s);
                        else {
                                /* A stuck or free-running meter: ghost, and the tap is quarantined. */
                                flow_end(e, m, END_CUT, false, now, run_s);
                                f->quarantined = true;
                                f->quarantined_since = now->realtime;
                                f->quarantine_cuts = f->cuts;
                                f->quarantine_max_pour_s = s->max_pour_s;
                                filter_reset_pour(f);
                                if (is_shadow(e))
                                        emit_report_log(e, m->name, LOG_WARNING,
                                                        "Tap %s would be quarantined: meter ran %.1f s without a pause "
                                                        "(rule G7); its ticks are ignored until ClearQuarantine; "
                                                        "ghost_filter=log, no action", m->name, run_s);
                                else
                                        emit_report_log(e, m->name, LOG_WARNING,
                                                        "Tap %s quarantined: meter ran %.1f s without a pause "
                                                        "(rule G7); its ticks are ignored until ClearQuarantine",
                                                        m->name, run_s);
                                emit(e, &(FlowEvent) {
                                        .type = FLOW_EVENT_QUARANTINE,
                                        .meter_name = m->name,
                                        .quarantine.quarantined = true,
                                        .quarantine.since_realtime = f->quarantined_since,
                                        .quarantine.cuts = f->quarantine_cuts,
                                        .quarantine.max_pour_s = f->quarantine_max_pour_s,
                                        .quarantine.mode = report_mode(e),
                                });
                                return true;
                        }
                }
        }

        if (s->kick_rate_ml_s > 0) {
                double k = (double) (bin_raw_back(f, b, 1) + bin_raw_back(f, b, 2)) * c;

                if (approx_gt(k, s->kick_rate_ml_s)) {
                        if (!f->kicking) {
                                f->kicking = true;
                                f->kick_start = t;
                        }
                        if (t - f->kick_start >= KICK_SUSTAIN_USEC)
                                flow_flag(e, m, fl, DRINK_FLAG_KICKED, s, 0);
                } else
                        f->kicking = false;
        }
        return false;
}

/* Section 6.2: not pouring, the window holds pending ticks. */
static int filter_gate(FlowEngine *e, Meter *m, const FlowSettings *s, double c, uint64_t b, uint64_t d,
                       const FlowTime *now) {
        Filter *f = m->filter;
        unsigned w = window_bins(s);
        uint64_t first = window_first(b, w), p, earliest = now->monotonic;
        double B = 0;
        Flow *fl = m->flow;
        bool new_flow = !fl;

        p = window_pending(f, first, b);
        if (s->pour_start_ml > 0 && p < flow_volume_ticks(s->pour_start_ml, c))
                return 0;

        if (s->ghost_step_ml_s > 0 || s->pour_activity_ml_s > 0)
                B = filter_baseline(f, b, w, baseline_bins(s), c);

        if (s->ghost_step_ml_s > 0 && B > 0 &&
            approx_lt((double) p * c / s->pour_start_window_s - B, s->ghost_step_ml_s)) {
                for (uint64_t k = first; k <= b; k++) {
                        Bin *x = bin_get(f, k);
                        if (x && x->pending > 0)
                                x->rule = FLOW_RULE_G3;
                }
                f->g3_baseline = B;
                return 0;
        }

        if (new_flow) {
                fl = flow_alloc(e, m->name, now);
                if (!fl)
                        return -ENOMEM;
        }

        f->pouring = true;
        f->ref = s->pour_activity_ml_s > 0 ? B : 0;
        f->carry = 0;
        f->gate_bin = b;
        f->kicking = false;
        bin_get(f, b)->qualified = true;
        for (uint64_t k = first; k <= b; k++) {
                Bin *x = bin_get(f, k);
                if (x && x->pending > 0)
                        earliest = MIN(earliest, x->first_pending.monotonic);
        }
        (void) filter_include(e, m, fl, s, c, b, d,
                              MIN(s->pour_start_window_s, (double) (now->monotonic - earliest) / 1e6), now);
        fl->last_activity = now->monotonic;
        if (new_flow)
                flow_start(e, m, fl);
        else
                emit_flow_update(e, fl);
        (void) filter_after_qualifying(e, m, s, c, b, now);
        return 0;
}

/* Section 6.3: pouring, a report that is not the gate's. */
static void filter_activity(FlowEngine *e, Meter *m, const FlowSettings *s, double c, uint64_t b, uint64_t d,
                            const FlowTime *now) {
        Filter *f = m->filter;
        Flow *fl = m->flow;
        double a = MAX((double) (bin_raw_back(f, b, 1) + bin_raw_back(f, b, 2)) * c,
                       (double) bin_raw_back(f, b, 0) * c / 0.5);

        if (s->pour_activity_ml_s <= 0 || !approx_lt(a - f->ref, s->pour_activity_ml_s)) {
                uint64_t added = filter_include(e, m, fl, s, c, b, d,
                                                MIN(s->pour_start_window_s,
                                                    (double) (now->monotonic - f->last_pour_report) / 1e6), now);
                bin_get(f, b)->qualified = true;
                fl->last_activity = now->monotonic;
                if (added > 0)
                        emit_flow_update(e, fl);
                (void) filter_after_qualifying(e, m, s, c, b, now);
                return;
        }

        /* Not qualifying: the ticks wait (a pour that resumes within the window loses nothing). */
        f->kicking = false;
        if (b >= DRIFT_BINS && b - DRIFT_BINS >= f->gate_bin) {
                double lowest = INFINITY;

                for (unsigned k = 1; k <= DRIFT_BINS; k++) {
                        Bin *x = bin_get(f, b - k);
                        if (x && x->qualified)
                                return;
                        lowest = MIN(lowest, (double) (x ? x->raw : 0) * c / 0.5);
                }
                /* A ghost that keeps rising after the pour stopped cannot keep the flow alive. */
                f->ref = MAX(f->ref, lowest);
        }
}

/* A counted delta on a meter the engine filters. */
static int filter_report(FlowEngine *e, Meter *m, uint64_t d, const FlowTime *now) {
        const FlowSettings *s = meter_settings(e, m);
        double c = meter_ml_per_tick(e, m);
        uint64_t b = bin_of(now->monotonic);
        Filter *f;
        Bin *x;
        int r;

        r = meter_filter(m, &f);
        if (r < 0)
                return r;
        f->last_tick = now->monotonic;

        /* 1. Age. */
        filter_age(e, m, window_first(b, window_bins(s)));
        x = bin_touch(f, b);
        x->raw += d;

        /* 3. Quarantine. */
        if (f->quarantined) {
                ghost_classify(e, m, FLOW_RULE_G7, d, now);
                return 0;
        }

        /* 4. Hold: the beer in flight after the valve closed. */
        if (m->flow && m->flow->held) {
                x->taken += d;
                flow_add_ticks_at(m->flow, d, now, s);
                flow_set_last_tick(m->flow, now);
                emit_flow_update(e, m->flow);
                return 0;
        }

        /* 5. G1. */
        if (valve_gate_claims(e, m, s, now->monotonic)) {
                ghost_classify(e, m, FLOW_RULE_G1, d, now);
                return 0;
        }

        /* 6. Pending. */
        if (x->pending == 0) {
                x->first_pending = *now;
                x->rule = f->pouring ? FLOW_RULE_G4 : FLOW_RULE_G2;
        }
        x->pending += d;
        f->pending_total += d;

        /* 7. */
        if (!f->pouring)
                return filter_gate(e, m, s, c, b, d, now);
        if (!m->flow) {
                /* Pouring always has a flow; should it not, the gate decides again. */
                filter_reset_pour(f);
                return filter_gate(e, m, s, c, b, d, now);
        }
        filter_activity(e, m, s, c, b, d, now);
        return 0;
}

/* A counted delta without the filter (off, and log's real side): pycore's behaviour. */
static int report_unfiltered(FlowEngine *e, Meter *m, uint64_t delta, const FlowTime *now) {
        Flow *f;

        if (m->flow && m->flow->held) {
                /* A hold begun before a reload turned the filter off still takes its beer. */
                flow_add_ticks_at(m->flow, delta, now, meter_settings(e, m));
                flow_set_last_tick(m->flow, now);
                emit_flow_update(e, m->flow);
                return 0;
        }
        if (m->flow) {
                flow_add_ticks(e, m, m->flow, delta, now);
                emit_flow_update(e, m->flow);
                return 0;
        }
        f = flow_alloc(e, m->name, now);
        if (!f)
                return -ENOMEM;
        flow_add_ticks(e, m, f, delta, now);
        flow_start(e, m, f);
        return 0;
}

/* ---- engine ---- */

static int engine_new(FlowEngine **ret, const FlowEngineConfig *c, FlowEventHandler handler, void *userdata) {
        FlowEngine *e = calloc(1, sizeof(FlowEngine));

        if (!e)
                return -ENOMEM;
        e->config = *c;
        e->handler = handler;
        e->userdata = userdata;
        e->next_flow_id = c->first_flow_id;
        *ret = e;
        return 0;
}

int flow_engine_new(FlowEngine **ret, const FlowEngineConfig *config, FlowEventHandler handler, void *userdata) {
        FlowEngine *e;
        FlowEngineConfig c;
        int r;

        assert_return(ret, -EINVAL);
        if (config)
                c = *config;
        else
                flow_engine_config_init(&c);
        if (flow_settings_check(&c.settings, NULL, NULL) < 0)
                return -EINVAL;
        if (!isfinite(c.default_ml_per_tick) || c.default_ml_per_tick <= 0)
                return -EINVAL;
        if (c.create_unknown_taps && !flow_calibration_is_valid(c.default_ml_per_tick))
                return -ERANGE;

        r = engine_new(&e, &c, handler, userdata);
        if (r < 0)
                return r;
        /* The shadow never creates taps by itself: the real engine tells it. */
        c.create_unknown_taps = false;
        r = engine_new(&e->shadow, &c, shadow_handler, e);
        if (r < 0) {
                free(e);
                return r;
        }
        e->shadow->parent = e;
        *ret = e;
        return 0;
}

static Tap *tap_free(Tap *t) {
        if (!t)
                return NULL;
        free(t->meter_name);
        free(t->name);
        free(t->relay_name);
        token_record_done(&t->record);
        free(t);
        return NULL;
}

FlowEngine *flow_engine_free(FlowEngine *e) {
        if (!e)
                return NULL;
        flow_engine_free(e->shadow);
        for (size_t i = 0; i < e->n_meters; i++) {
                flow_free(e->meters[i]->flow);
                calibration_free(e->meters[i]->cal);
                free(e->meters[i]->filter);
                free(e->meters[i]->name);
                free(e->meters[i]);
        }
        free(e->meters);
        free(e->index);
        for (size_t i = 0; i < e->n_taps; i++)
                tap_free(e->taps[i]);
        free(e->taps);
        for (size_t i = 0; i < e->n_reset_controllers; i++)
                free(e->reset_controllers[i]);
        free(e->reset_controllers);
        for (size_t i = 0; i < e->n_gap_controllers; i++)
                free(e->gap_controllers[i]);
        free(e->gap_controllers);
        for (size_t i = 0; i < e->n_relays; i++)
                free(e->relays[i].name);
        free(e->relays);
        free(e);
        return NULL;
}

/* Mutating calls from inside the handler would change the tables the current call is walking. */
#define assert_not_emitting(e)                  \
        do {                                    \
                if ((e)->emitting)              \
                        return -EBUSY;          \
        } while (0)

static bool flow_time_valid(const FlowTime *now) {
        return now != NULL;
}

/* ---- taps ---- */

static void meter_link_tap(FlowEngine *e, const char *meter, Tap *t) {
        Meter *m = meter_find(e, meter);
        if (m)
                m->tap = t;
}

static int tap_add(FlowEngine *e, const char *meter, const char *name, double ml_per_tick, const char *relay,
                   bool auto_created, Tap **ret) {
        Tap *t;
        int r;

        r = grow(&e->taps, &e->n_taps_alloc, e->n_taps + 1, sizeof(Tap *));
        if (r < 0)
                return r;
        t = calloc(1, sizeof(Tap));
        if (!t)
                return -ENOMEM;
        t->meter_name = strdup(meter);
        t->name = strdup(name);
        t->relay_name = strdup(relay);
        if (!t->meter_name || !t->name || !t->relay_name) {
                tap_free(t);
                return -ENOMEM;
        }
        t->ml_per_tick = ml_per_tick;
        t->auto_created = auto_created;
        e->taps[e->n_taps++] = t;
        meter_link_tap(e, meter, t);
        if (ret)
                *ret = t;
        return 0;
}

static int tap_set(FlowEngine *e, const char *meter, const char *name, double ml_per_tick, const char *relay_name) {
        Tap *t;
        int r;

        t = tap_find(e, meter);
        if (!t) {
                r = tap_add(e, meter, name, ml_per_tick, relay_name, false, NULL);
                return r < 0 ? r : FLOW_TAP_ADDED;
        }

        if (streq(t->name, name) && t->ml_per_tick == ml_per_tick && streq(t->relay_name, relay_name) &&
            !t->auto_created)
                return FLOW_TAP_UNCHANGED;

        if (!streq(t->name, name)) {
                char *s = strdup(name);
                if (!s)
                        return -ENOMEM;
                free(t->name);
                t->name = s;
        }
        if (!streq(t->relay_name, relay_name)) {
                char *s = strdup(relay_name);
                if (!s)
                        return -ENOMEM;
                free(t->relay_name);
                t->relay_name = s;
        }
        t->ml_per_tick = ml_per_tick;
        t->auto_created = false;
        return FLOW_TAP_UPDATED;
}

int flow_engine_set_tap(FlowEngine *e, const char *meter, const char *name, double ml_per_tick, const char *relay_name) {
        int r;

        assert_return(e, -EINVAL);
        if (isempty(meter))
                return -EINVAL;
        if (!flow_calibration_is_valid(ml_per_tick))
                return -ERANGE;
        assert_not_emitting(e);
        if (isempty(name))
                name = meter;
        if (!relay_name)
                relay_name = "";

        r = tap_set(e, meter, name, ml_per_tick, relay_name);
        if (r >= 0 && e->shadow)
                (void) tap_set(e->shadow, meter, name, ml_per_tick, relay_name);
        return r;
}

static int tap_set_settings(FlowEngine *e, const char *meter, const FlowSettings *s) {
        Tap *t = tap_find(e, meter);

        if (!t)
                return -ENOENT;
        t->has_settings = s != NULL;
        if (s)
                t->settings = *s;
        return 0;
}

int flow_engine_set_tap_settings(FlowEngine *e, const char *meter, const FlowSettings *s) {
        int r;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        if (s && flow_settings_check(s, NULL, NULL) < 0)
                return -EINVAL;
        assert_not_emitting(e);
        r = tap_set_settings(e, meter, s);
        if (r >= 0 && e->shadow)
                (void) tap_set_settings(e->shadow, meter, s);
        return r;
}

int flow_engine_set_default_settings(FlowEngine *e, const FlowSettings *s) {
        assert_return(e, -EINVAL);
        assert_return(s, -EINVAL);
        if (flow_settings_check(s, NULL, NULL) < 0)
                return -EINVAL;
        assert_not_emitting(e);
        e->config.settings = *s;
        if (e->shadow)
                e->shadow->config.settings = *s;
        return 0;
}

static int tap_remove(FlowEngine *e, const char *meter, const FlowTime *now) {
        Meter *m;

        for (size_t i = 0; i < e->n_taps; i++) {
                if (!streq(e->taps[i]->meter_name, meter))
                        continue;
                /* The flow keeps the calibration it used last; a calibration pour ends. */
                m = meter_find(e, meter);
                if (m && m->cal)
                        calibration_end(e, m, FLOW_CALIBRATION_TAP_REMOVED, 0, now);
                if (m && m->flow)
                        flow_refresh_calibration(e, m->flow);
                tap_remove_at(e, i);
                return 0;
        }
        return -ENOENT;
}

int flow_engine_remove_tap(FlowEngine *e, const char *meter, const FlowTime *now) {
        int r;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        if (!flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);
        r = tap_remove(e, meter, now);
        if (r >= 0 && e->shadow)
                (void) tap_remove(e->shadow, meter, now);
        return r;
}

static int tap_set_calibration(FlowEngine *e, const char *meter, double ml_per_tick, bool configured) {
        Tap *t = tap_find(e, meter);

        if (!t)
                return -ENOENT;
        t->ml_per_tick = ml_per_tick;
        if (configured)
                t->auto_created = false;
        return 0;
}

int flow_engine_set_tap_calibration(FlowEngine *e, const char *meter, double ml_per_tick, bool configured) {
        int r;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        if (!isfinite(ml_per_tick) || ml_per_tick <= 0)
                return -EINVAL;
        assert_not_emitting(e);
        r = tap_set_calibration(e, meter, ml_per_tick, configured);
        if (r >= 0 && e->shadow)
                (void) tap_set_calibration(e->shadow, meter, ml_per_tick, configured);
        return r;
}

/* Drops tap i; its meter, if any, no longer has a tap. */
static void tap_remove_at(FlowEngine *e, size_t i) {
        Tap *t = e->taps[i];
        Meter *m = meter_find(e, t->meter_name);

        if (m && m->tap == t)
                m->tap = NULL;
        tap_free(t);
        memmove(e->taps + i, e->taps + i + 1, (e->n_taps - i - 1) * sizeof(Tap *));
        e->n_taps--;
}

/* Standalone mode: the first MeterUpdate or FlowRequest of a meter without a tap creates one. */
static int tap_maybe_create(FlowEngine *e, const char *meter) {
        int r;

        if (!e->config.create_unknown_taps || tap_find(e, meter))
                return 0;
        if (e->config.server_tap && !e->config.server_tap(meter, e->config.server_tap_userdata))
                return 0;
        if (e->n_taps >= FLOW_ENGINE_MAX_METERS) {
                emit_log_kind(e, FLOW_LOG_TABLE_FULL, meter, LOG_WARNING, "Too many taps (%d), not creating tap %s",
                              FLOW_ENGINE_MAX_METERS, meter);
                return -ENOSPC;
        }
        r = tap_add(e, meter, meter, e->config.default_ml_per_tick, "", true, NULL);
        if (r < 0)
                return r;
        if (e->shadow && !tap_find(e->shadow, meter))
                (void) tap_add(e->shadow, meter, meter, e->config.default_ml_per_tick, "", true, NULL);
        emit_log_kind(e, FLOW_LOG_TAP, meter, LOG_INFO, "Creating tap %s with default calibration %g mL/tick",
                 meter, e->config.default_ml_per_tick);
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_TAP_CREATED,
                .meter_name = meter,
        });
        return 1;
}

/* The counters of both engines: a tap that changed mode keeps what it counted. */
static void meter_ghost_counts(FlowEngine *e, const char *meter, uint64_t *ret_ticks, double *ret_volume) {
        *ret_ticks = 0;
        *ret_volume = 0;
        for (FlowEngine *x = e; x; x = x->shadow) {
                Meter *m = meter_find(x, meter);
                if (m && m->filter) {
                        *ret_ticks += m->filter->ghost_ticks;
                        *ret_volume += m->filter->ghost_volume;
                }
        }
}

static const Filter *meter_filter_of(FlowEngine *e, const char *meter) {
        Meter *m = e ? meter_find(e, meter) : NULL;
        return m ? m->filter : NULL;
}

static void tap_fill_info(FlowEngine *e, Tap *t, FlowTapInfo *ret) {
        Meter *m = meter_find(e, t->meter_name);
        FlowGhostMode mode = tap_settings(e, t)->ghost_filter;
        const Filter *q = mode == FLOW_GHOST_ON ? meter_filter_of(e, t->meter_name) :
                          mode == FLOW_GHOST_LOG ? meter_filter_of(e->shadow, t->meter_name) : NULL;

        *ret = (FlowTapInfo) {
                .meter_name = t->meter_name,
                .name = t->name,
                .ml_per_tick = t->ml_per_tick,
                .relay_name = t->relay_name,
                .relay_enabled = !isempty(t->relay_name) && relay_held(e, t->relay_name),
                .auto_created = t->auto_created,
                .total_ticks = m ? m->total : 0,
                .has_flow = m && m->flow,
                .flow_id = m && m->flow ? m->flow->id : 0,
                .ghost_filter = mode,
                .quarantined = q && q->quarantined,
                .quarantined_since = q && q->quarantined ? q->quarantined_since : 0,
                .calibrating = m && m->cal,
        };
        meter_ghost_counts(e, t->meter_name, &ret->ghost_ticks, &ret->ghost_volume_ml);
}

size_t flow_engine_n_taps(FlowEngine *e) {
        return e ? e->n_taps : 0;
}

int flow_engine_tap_at(FlowEngine *e, size_t i, FlowTapInfo *ret) {
        assert_return(e, -EINVAL);
        assert_return(ret, -EINVAL);
        if (i >= e->n_taps)
                return -ENOENT;
        tap_fill_info(e, e->taps[i], ret);
        return 0;
}

int flow_engine_get_tap(FlowEngine *e, const char *meter, FlowTapInfo *ret) {
        Tap *t;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        assert_return(ret, -EINVAL);
        t = tap_find(e, meter);
        if (!t)
                return -ENOENT;
        tap_fill_info(e, t, ret);
        return 0;
}

/* ---- meters ---- */

/* Section 5's table. Returns the delta to count. */
/* Section 5's table. Returns the delta to count; *ret_rejected tells a rejected report from a
 * repeat. After a gap (m->resync) the limit is max_restart_delta. */
static uint64_t meter_delta(FlowEngine *e, Meter *m, uint32_t r, bool *ret_rejected) {
        uint64_t max = m->resync ? e->config.max_restart_delta : e->config.max_tick_delta;
        uint32_t last = m->last;

        *ret_rejected = false;
        if (!m->has_last) {
                emit_log_kind(e, FLOW_LOG_METER, m->name, LOG_DEBUG, "Meter %s: first reading %" PRIu32 " is the baseline",
                              m->name, r);
                return 0;
        }
        if (r == last) {
                emit_log_kind(e, FLOW_LOG_METER, m->name, LOG_DEBUG, "Meter %s: reading %" PRIu32 " unchanged", m->name, r);
                return 0;
        }
        if (r > last) {
                uint64_t d = (uint64_t) r - last;
                if (max == 0 || d <= max)
                        return d;
        } else {
                uint64_t w = (uint64_t) r + (UINT64_C(1) << 32) - last;
                /* Without a limit every decrease is a reset: a wrap could not be told apart. */
                if (max != 0 && w <= max) {
                        emit_log_kind(e, FLOW_LOG_METER, m->name, LOG_DEBUG, "Meter %s wrapped", m->name);
                        return w;
                }
                if (max == 0 || r <= max) {
                        emit_log_kind(e, FLOW_LOG_METER, m->name, LOG_INFO,
                                 "Meter %s went backwards (%" PRIu32 " -> %" PRIu32 "), counting %" PRIu32 " ticks",
                                 m->name, last, r, r);
                        return r;
                }
        }
        emit_log_kind(e, FLOW_LOG_METER, m->name, LOG_WARNING,
                 "Bad ticks report: meter=%s last=%" PRIu32 " reading=%" PRIu32 "; re-baselining", m->name, last, r);
        *ret_rejected = true;
        return 0;
}

/* What a meter reading and a flow request share: argument checks, the meter (added on first
 * sight) and, in standalone mode, its first-sight tap. */
static int meter_event_begin(FlowEngine *e, const char *meter, const FlowTime *now, Meter **ret) {
        int r;

        if (!e || isempty(meter) || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        r = meter_get_or_add(e, meter, now, true, ret);
        if (r < 0)
                return r;
        return tap_maybe_create(e, meter);
}

/* The shadow gets the counted delta (it keeps no readings of its own). */
static void shadow_counted(FlowEngine *s, const char *meter, uint64_t delta, const FlowTime *now) {
        Meter *m;

        if (meter_get_or_add(s, meter, now, false, &m) < 0 || !filter_in_scope(s, m))
                return;
        (void) filter_report(s, m, delta, now);
}

int64_t flow_engine_meter_update(FlowEngine *e, const char *meter, uint32_t reading, const FlowTime *now) {
        FlowGhostMode mode;
        Meter *m;
        uint64_t delta;
        bool first, repeat, rejected;
        int r;

        r = meter_event_begin(e, meter, now, &m);
        if (r < 0)
                return r;

        first = !m->has_last;
        repeat = !first && reading == m->last;
        delta = meter_delta(e, m, reading, &rejected);
        m->has_last = true;
        m->last = reading;
        m->total += delta;
        m->open += delta;
        /* A repeat does not end the gap: a producer that reconnects re-sends the reading it had
         * before the board's next, possibly much larger, one. */
        if (!repeat)
                m->resync = false;

        /* A baseline, and a rejected report, move the accounted reading (the ticks before them are
         * discarded; what is open stays open). */
        if (first || rejected)
                emit_meter_state(e, m);

        /* Baselines, repeats and rejected reports are neither pour nor ghost. */
        if (delta == 0)
                return 0;

        /* Ghost-pours.md section 6, step 2: a calibration takes every counted tick, in every mode. */
        if (m->cal) {
                calibration_count(e, m, delta, now);
                return (int64_t) delta;
        }

        mode = meter_settings(e, m)->ghost_filter;
        if (mode == FLOW_GHOST_ON)
                r = filter_report(e, m, delta, now);
        else
                r = report_unfiltered(e, m, delta, now);
        if (mode == FLOW_GHOST_LOG)
                shadow_counted(e->shadow, meter, delta, now);
        return r < 0 ? r : (int64_t) delta;
}

int flow_engine_make_room(FlowEngine *e, const char *meter, const FlowTime *now) {
        size_t victim;

        assert_return(e, -EINVAL);
        if (isempty(meter) || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);
        if (e->n_meters < FLOW_ENGINE_MAX_METERS || meter_find(e, meter))
                return 0;
        victim = meter_pick_victim(e, now->monotonic, true, 0);
        if (victim == SIZE_MAX)
                return -ENOSPC;
        meter_evict(e, victim, meter, now->monotonic);
        return 1;
}

int flow_engine_controller_reset(FlowEngine *e, const char *controller) {
        int r;

        assert_return(e, -EINVAL);
        if (isempty(controller))
                return -EINVAL;
        assert_not_emitting(e);

        for (size_t i = 0; i < e->n_meters; i++) {
                Meter *m = e->meters[i];

                if (!meter_of_controller(m->name, controller))
                        continue;
                /* The counter starts again at 0; the ticks not accounted for yet cannot be read from
                 * it any more and are carried until they are. */
                m->carry += m->open;
                m->open = 0;
                m->has_last = true;
                m->last = 0;
                emit_meter_state(e, m);
        }

        r = controller_list_add(&e->reset_controllers, &e->n_reset_controllers, &e->n_reset_controllers_alloc,
                                controller);
        if (r < 0)
                return r;
        emit_log_kind(e, FLOW_LOG_CONTROLLER, NULL, LOG_INFO, "Controller %s was reset, counting its meters from 0",
                      controller);
        return 0;
}

int flow_engine_controller_counts_from_zero(FlowEngine *e, const char *controller) {
        int r;

        assert_return(e, -EINVAL);
        if (isempty(controller))
                return -EINVAL;
        assert_not_emitting(e);

        r = controller_list_add(&e->reset_controllers, &e->n_reset_controllers, &e->n_reset_controllers_alloc,
                                controller);
        if (r >= 0)
                r = controller_list_add(&e->gap_controllers, &e->n_gap_controllers, &e->n_gap_controllers_alloc,
                                        controller);
        if (r < 0)
                return r;
        emit_log(e, NULL, LOG_DEBUG, "Controller %s counts from 0 since its last reset", controller);
        return 0;
}

int flow_engine_controller_resync(FlowEngine *e, const char *controller) {
        assert_return(e, -EINVAL);
        if (isempty(controller))
                return -EINVAL;
        assert_not_emitting(e);

        for (size_t i = 0; i < e->n_meters; i++)
                if (e->meters[i]->has_last && meter_of_controller(e->meters[i]->name, controller))
                        e->meters[i]->resync = true;
        return 0;
}

int flow_engine_restore_meter(FlowEngine *e, const char *meter, const FlowMeterState *s, const FlowTime *now) {
        Meter *m;
        Flow *f;
        int r;

        assert_return(e, -EINVAL);
        assert_return(s, -EINVAL);
        if (isempty(meter) || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        m = meter_find(e, meter);
        if (m && m->has_last)
                return -EEXIST;
        r = meter_get_or_add_full(e, meter, now, true, true, &m);
        if (r < 0)
                return r;
        m->has_last = true;
        m->last = s->accounted;
        m->open = 0;
        m->carry = s->carry;
        m->resync = true;
        emit_log(e, meter, LOG_DEBUG, "Meter %s resumes at reading %" PRIu32 " (carry %" PRIu64 ")",
                 meter, s->accounted, s->carry);
        if (s->carry == 0 || m->flow)
                return 0;

        /* The board's counter no longer holds these ticks (it was reset before they were accounted
         * for): they are a pour of their own. */
        f = flow_alloc(e, meter, now);
        if (!f)
                return -ENOMEM;
        flow_add_ticks(e, m, f, s->carry, now);
        m->total += s->carry;
        emit_log(e, meter, LOG_INFO, "Meter %s: %" PRIu64 " ticks of a flow lost by the last run are a flow again",
                 meter, s->carry);
        flow_start(e, m, f);
        return 0;
}

static void meter_fill_info(FlowEngine *e, Meter *m, FlowMeterInfo *ret) {
        const Filter *f = m->filter;

        *ret = (FlowMeterInfo) {
                .meter_name = m->name,
                .has_last = m->has_last,
                .last = m->last,
                .total = m->total,
                .quarantined = f && f->quarantined,
                .quarantined_since = f && f->quarantined ? f->quarantined_since : 0,
                .quarantine_cuts = f && f->quarantined ? f->quarantine_cuts : 0,
                .quarantine_max_pour_s = f && f->quarantined ? f->quarantine_max_pour_s : 0,
                .state = *meter_state(m),
                .open = m->open,
                .resync = m->resync,
        };
        meter_ghost_counts(e, m->name, &ret->ghost_ticks, &ret->ghost_volume_ml);
}

int flow_engine_get_meter(FlowEngine *e, const char *meter, FlowMeterInfo *ret) {
        Meter *m;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        assert_return(ret, -EINVAL);
        m = meter_find(e, meter);
        if (!m)
                return -ENOENT;
        meter_fill_info(e, m, ret);
        return 0;
}

size_t flow_engine_n_meters(FlowEngine *e) {
        return e ? e->n_meters : 0;
}

int flow_engine_meter_at(FlowEngine *e, size_t i, FlowMeterInfo *ret) {
        assert_return(e, -EINVAL);
        assert_return(ret, -EINVAL);
        if (i >= e->n_meters)
                return -ENOENT;
        meter_fill_info(e, e->meters[i], ret);
        return 0;
}

/* ---- flow requests ---- */

static bool meter_quarantined(FlowEngine *e, Meter *m) {
        return filter_in_scope(e, m) && m->filter && m->filter->quarantined;
}

static int start_flow(FlowEngine *e, Meter *m, const FlowTime *now) {
        Flow *f;

        meter_finish_hold(e, m);
        if (meter_quarantined(e, m)) {
                emit_log(e, m->name, LOG_INFO, "Tap %s is quarantined; not starting a flow", m->name);
                return -EPERM;
        }
        if (meter_calibrating(e, m)) {
                emit_log(e, m->name, LOG_INFO, "Tap %s is being calibrated; not starting a flow", m->name);
                return -EBUSY;
        }
        if (m->flow) {
                /* pycore replaced the flow here and lost its ticks. */
                emit_log_kind(e, FLOW_LOG_REQUEST, m->name, LOG_DEBUG,
                              "Flow 0x%08" PRIx64 " already active on %s, keeping it", m->flow->id, m->name);
                return 0;
        }

        f = flow_alloc(e, m->name, now);
        if (!f)
                return -ENOMEM;
        flow_start(e, m, f);
        return 1;
}

int flow_engine_start_flow(FlowEngine *e, const char *meter, const FlowTime *now) {
        Meter *m;
        int r;

        r = meter_event_begin(e, meter, now, &m);
        if (r < 0)
                return r;
        r = start_flow(e, m, now);
        if (r >= 0 || r == -EPERM) {
                Meter *sm;
                if (flow_engine_meter_mode(e, meter) == FLOW_GHOST_LOG &&
                    meter_get_or_add(e->shadow, meter, now, false, &sm) >= 0)
                        (void) start_flow(e->shadow, sm, now);
        }
        return r;
}

static int stop_flow(FlowEngine *e, Meter *m, const FlowTime *now) {
        if (!m || !m->flow) {
                emit_log_kind(e, FLOW_LOG_REQUEST, m ? m->name : NULL, LOG_WARNING,
                              "Stop flow request for %s, which has no active flow", m ? m->name : "?");
                return 0;
        }
        if (m->flow->held)
                flow_end_hold(e, m);
        else
                flow_end(e, m, END_STOP, false, now, 0);
        return 1;
}

int flow_engine_stop_flow(FlowEngine *e, const char *meter, const FlowTime *now) {
        Meter *m;
        int r;

        /* Like every first sight, this one goes into the meter table: a first-sight tap always has
         * a meter, which is what a full table forgets. */
        r = meter_event_begin(e, meter, now, &m);
        if (r < 0)
                return r;

        r = stop_flow(e, m, now);

        if (flow_engine_meter_mode(e, meter) == FLOW_GHOST_LOG) {
                Meter *sm = meter_find(e->shadow, meter);
                if (sm && sm->flow)
                        (void) stop_flow(e->shadow, sm, now);
        }
        return r;
}

static int engine_shutdown(FlowEngine *e, const FlowTime *now) {
        int n = 0;

        /* Calibrations end as cancelled, before the flows (calibration.md section 2.5). */
        for (size_t i = 0; i < e->n_meters; i++)
                if (e->meters[i]->cal)
                        calibration_end(e, e->meters[i], FLOW_CALIBRATION_SHUTDOWN, 0, now);

        for (size_t i = 0; i < e->n_meters; i++) {
                Meter *m = e->meters[i];

                if (!m->flow)
                        continue;
                if (m->flow->held)
                        flow_end_hold(e, m);
                else
                        flow_end(e, m, END_SHUTDOWN, false, now, 0);
                n++;
        }
        /* Then the open episodes, with every pending tick in them. */
        for (size_t i = 0; i < e->n_meters; i++)
                filter_flush(e, e->meters[i]);
        return n;
}

int flow_engine_shutdown(FlowEngine *e, const FlowTime *now) {
        int n;

        assert_return(e, -EINVAL);
        if (!flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        n = engine_shutdown(e, now);
        (void) engine_shutdown(e->shadow, now);
        return n;
}

/* ---- deadlines ---- */

typedef enum DeadlineKind {
        DEADLINE_IDLE,
        DEADLINE_REASSERT,
        DEADLINE_HOLD,
        DEADLINE_EPISODE,
        DEADLINE_CALIBRATION,
        DEADLINE_CALIBRATION_REASSERT,
} DeadlineKind;

static uint64_t flow_deadline(FlowEngine *e, const Flow *f, DeadlineKind *ret_kind) {
        uint64_t idle;

        if (f->held) {
                *ret_kind = DEADLINE_HOLD;
                return f->hold_until;
        }
        idle = flow_idle_deadline(f);
        /* On a tie the flow ends: a re-assert right before "disabled" would be pointless. */
        if (f->relay_name && e->config.relay_reassert_usec > 0 && f->relay_next < idle) {
                *ret_kind = DEADLINE_REASSERT;
                return f->relay_next;
        }
        *ret_kind = DEADLINE_IDLE;
        return idle;
}

/* Section 8.1: 10 s after the meter's last counted tick, pending ticks age and the episode is reported. */
static uint64_t meter_deadline(FlowEngine *e, const Meter *m, DeadlineKind *ret_kind) {
        uint64_t best = FLOW_USEC_INFINITY;

        *ret_kind = DEADLINE_IDLE;

        if (m->flow)
                best = flow_deadline(e, m->flow, ret_kind);
        if (m->cal) {
                Calibration *c = m->cal;
                uint64_t end = c->storing ? FLOW_USEC_INFINITY : c->deadline;

                if (end < best) {
                        best = end;
                        *ret_kind = DEADLINE_CALIBRATION;
                }
                /* On a tie it ends: no re-assert right before "disabled". */
                if (c->relay_name && e->config.relay_reassert_usec > 0 && c->relay_next < end &&
                    c->relay_next < best) {
                        best = c->relay_next;
                        *ret_kind = DEADLINE_CALIBRATION_REASSERT;
                }
        }
        if (m->filter && (m->filter->episode.open || m->filter->pending_total > 0)) {
                uint64_t t = add_sat(m->filter->last_tick, EPISODE_GAP_USEC);
                if (t < best) {
                        best = t;
                        *ret_kind = DEADLINE_EPISODE;
                }
        }
        return best;
}

static uint64_t engine_next_deadline(FlowEngine *e) {
        uint64_t best = FLOW_USEC_INFINITY;
        DeadlineKind kind;

        if (!e)
                return FLOW_USEC_INFINITY;
        for (size_t i = 0; i < e->n_meters; i++)
                best = MIN(best, meter_deadline(e, e->meters[i], &kind));
        return best;
}

uint64_t flow_engine_next_deadline(FlowEngine *e) {
        if (!e)
                return FLOW_USEC_INFINITY;
        return MIN(engine_next_deadline(e), engine_next_deadline(e->shadow));
}

static int engine_process_deadlines(FlowEngine *e, const FlowTime *now) {
        int n = 0;

        for (;;) {
                Meter *due = NULL;
                uint64_t best = FLOW_USEC_INFINITY;
                DeadlineKind due_kind = DEADLINE_IDLE;

                for (size_t i = 0; i < e->n_meters; i++) {
                        DeadlineKind kind;
                        uint64_t d = meter_deadline(e, e->meters[i], &kind);

                        if (d < best) {
                                best = d;
                                due = e->meters[i];
                                due_kind = kind;
                        }
                }
                if (!due || best > now->monotonic)
                        break;

                switch (due_kind) {
                case DEADLINE_IDLE:
                        flow_end(e, due, END_IDLE, false, now, 0);
                        break;
                case DEADLINE_HOLD:
                        flow_end_hold(e, due);
                        break;
                case DEADLINE_EPISODE:
                        filter_flush(e, due);
                        break;
                case DEADLINE_CALIBRATION:
                        calibration_end(e, due, FLOW_CALIBRATION_TIMEOUT, 0, now);
                        break;
                case DEADLINE_CALIBRATION_REASSERT: {
                        Calibration *c = due->cal;
                        c->relay_next = add_sat(c->relay_next, e->config.relay_reassert_usec);
                        if (c->relay_next <= now->monotonic)
                                c->relay_next = add_sat(now->monotonic, e->config.relay_reassert_usec);
                        emit_relay(e, due->name, c->relay_name, true, true);
                        break;
                }
                case DEADLINE_REASSERT: {
                        Flow *f = due->flow;
                        /* A late loop does not catch up with a burst of re-asserts. */
                        f->relay_next = add_sat(f->relay_next, e->config.relay_reassert_usec);
                        if (f->relay_next <= now->monotonic)
                                f->relay_next = add_sat(now->monotonic, e->config.relay_reassert_usec);
                        emit_relay(e, f->meter_name, f->relay_name, true, true);
                        break;
                }
                }
                n++;
        }
        return n;
}

int flow_engine_process_deadlines(FlowEngine *e, const FlowTime *now) {
        int n;

        assert_return(e, -EINVAL);
        if (!flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        n = engine_process_deadlines(e, now);
        n += engine_process_deadlines(e->shadow, now);
        return n;
}

/* ---- flow queries ---- */

int flow_engine_get_flow(FlowEngine *e, const char *meter, FlowInfo *ret) {
        Meter *m;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        assert_return(ret, -EINVAL);
        m = meter_find(e, meter);
        if (!m || !m->flow)
                return -ENOENT;
        flow_fill_info(e, m->flow, ret);
        return 0;
}

int flow_engine_get_flow_by_id(FlowEngine *e, uint64_t flow_id, FlowInfo *ret) {
        assert_return(e, -EINVAL);
        assert_return(ret, -EINVAL);
        for (size_t i = 0; i < e->n_meters; i++) {
                Flow *f = e->meters[i]->flow;
                if (f && f->id == flow_id) {
                        flow_fill_info(e, f, ret);
                        return 0;
                }
        }
        return -ENOENT;
}

size_t flow_engine_n_flows(FlowEngine *e) {
        size_t n = 0;

        if (!e)
                return 0;
        for (size_t i = 0; i < e->n_meters; i++)
                if (e->meters[i]->flow)
                        n++;
        return n;
}

int flow_engine_flow_at(FlowEngine *e, size_t idx, FlowInfo *ret) {
        assert_return(e, -EINVAL);
        assert_return(ret, -EINVAL);
        for (size_t i = 0; i < e->n_meters; i++) {
                Flow *f = e->meters[i]->flow;
                if (!f)
                        continue;
                if (idx == 0) {
                        flow_fill_info(e, f, ret);
                        return 0;
                }
                idx--;
        }
        return -ENOENT;
}

/* ---- valves and quarantine ---- */

static int set_relay(FlowEngine *e, const char *relay, bool enabled, const FlowTime *now) {
        RelayView *v = relay_view_get(e, relay);

        if (!v)
                return -ENOMEM;
        if (enabled) {
                v->ever_open = true;
                v->manual_until = add_sat(now->monotonic, RELAY_WATCHDOG_USEC);
        } else if (v->manual_until > now->monotonic) {
                v->manual_until = 0;
                if (!relay_held(e, relay))
                        v->closed_since = now->monotonic;
        }
        return 0;
}

int flow_engine_set_relay(FlowEngine *e, const char *relay, bool enabled, const FlowTime *now) {
        int r;

        assert_return(e, -EINVAL);
        if (isempty(relay) || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);
        r = set_relay(e, relay, enabled, now);
        (void) set_relay(e->shadow, relay, enabled, now);
        return r;
}

static int set_tap_grant(FlowEngine *e, const char *meter, bool owned, const char *device) {
        Tap *t = tap_find(e, meter);
        Meter *m = meter_find(e, meter);
        Flow *f = m ? m->flow : NULL;

        if (!t)
                return -ENOENT;
        t->grant_idle = owned ? flow_engine_idle_for_device(e, device) : 0;
        /* The flow in progress is the grant's now (adopted, or continued under it); a flow a user
         * owns keeps its own limit. */
        if (owned && f && !f->held && !f->username && f->max_idle != t->grant_idle) {
                f->max_idle = t->grant_idle;
                emit_flow_update(e, f);
        }
        return 0;
}

int flow_engine_set_tap_grant(FlowEngine *e, const char *meter, bool owned, const char *device, const FlowTime *now) {
        int r;

        assert_return(e, -EINVAL);
        if (isempty(meter) || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);
        r = set_tap_grant(e, meter, owned, device);
        if (r >= 0 && e->shadow)
                (void) set_tap_grant(e->shadow, meter, owned, device);
        return r;
}

static int clear_quarantine(FlowEngine *e, const char *meter) {
        Meter *m = meter_find(e, meter);
        Filter *f = m ? m->filter : NULL;

        if (!f || !f->quarantined)
                return 0;
        /* The ticks counted while quarantined are reported before the slate is wiped. */
        filter_flush(e, m);
        filter_restart(f);
        f->quarantined = false;
        f->quarantined_since = 0;
        f->quarantine_cuts = 0;
        f->quarantine_max_pour_s = 0;
        emit_report_log(e, meter, LOG_INFO, "Quarantine of tap %s cleared", meter);
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_QUARANTINE,
                .meter_name = meter,
                .quarantine.quarantined = false,
                .quarantine.mode = report_mode(e),
        });
        return 1;
}

int flow_engine_clear_quarantine(FlowEngine *e, const char *meter, const FlowTime *now) {
        int r, k;

        assert_return(e, -EINVAL);
        if (isempty(meter) || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        r = clear_quarantine(e, meter);
        k = clear_quarantine(e->shadow, meter);
        if (r > 0 || k > 0)
                return 1;
        if (!tap_find(e, meter))
                return -ENOENT;
        emit_log(e, meter, LOG_DEBUG, "Tap %s is not quarantined", meter);
        return 0;
}

int flow_engine_restore_quarantine(FlowEngine *e, const char *meter, uint64_t since_realtime, unsigned cuts,
                                   double max_pour_s) {
        Filter *f;
        Meter *m;
        int r;

        assert_return(e, -EINVAL);
        if (isempty(meter))
                return -EINVAL;
        assert_not_emitting(e);

        /* At start-up: a quarantined meter is never forgotten, so its age does not matter. */
        r = meter_get_or_add(e, meter, &(FlowTime) {}, false, &m);
        if (r < 0)
                return r;
        r = meter_filter(m, &f);
        if (r < 0)
                return r;
        f->quarantined = true;
        f->quarantined_since = since_realtime;
        f->quarantine_cuts = cuts;
        f->quarantine_max_pour_s = max_pour_s;
        return 0;
}

/* ---- calibration pours (calibration.md section 2) ---- */

const char *flow_calibration_end_to_string(FlowCalibrationEnd r) {
        static const char *const names[_FLOW_CALIBRATION_END_MAX] = {
                [FLOW_CALIBRATION_FINISHED] = "finished",
                [FLOW_CALIBRATION_CANCELLED] = "cancelled",
                [FLOW_CALIBRATION_TIMEOUT] = "timeout",
                [FLOW_CALIBRATION_TAP_REMOVED] = "tap-removed",
                [FLOW_CALIBRATION_SHUTDOWN] = "shutdown",
        };
        return r >= 0 && r < _FLOW_CALIBRATION_END_MAX ? names[r] : NULL;
}

static Calibration *calibration_free(Calibration *c) {
        if (!c)
                return NULL;
        free(c->relay_name);
        free(c);
        return NULL;
}

static void emit_calibration(FlowEngine *e, Meter *m, FlowCalibrationChange change, uint64_t ticks,
                             FlowCalibrationEnd reason, double old_ml_per_tick, double new_ml_per_tick) {
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_CALIBRATION,
                .meter_name = m->name,
                .calibration.change = change,
                .calibration.ticks = ticks,
                .calibration.reason = reason,
                .calibration.old_ml_per_tick = old_ml_per_tick,
                .calibration.new_ml_per_tick = new_ml_per_tick,
        });
}

/* The bins see calibration ticks as taken: they raise no ghost baseline afterwards. */
static void calibration_take(FlowEngine *e, const char *meter, uint64_t d, const FlowTime *now) {
        Meter *m = e ? meter_find(e, meter) : NULL;
        uint64_t b = bin_of(now->monotonic);
        Bin *x;

        if (!m || !m->filter)
                return;
        filter_age(e, m, window_first(b, window_bins(meter_settings(e, m))));
        x = bin_touch(m->filter, b);
        x->raw += d;
        x->taken += d;
        m->filter->last_tick = now->monotonic;
}

static void calibration_count(FlowEngine *e, Meter *m, uint64_t delta, const FlowTime *now) {
        Calibration *c = m->cal;

        c->ticks += delta;
        /* The calibration takes them: accounted for, as a drink's or ghost ticks are (announced
         * when it ends, once, not per report). */
        meter_settle(e, m, delta);
        if (m->tap)
                c->ml_per_tick = m->tap->ml_per_tick;
        calibration_take(e, m->name, delta, now);
        calibration_take(e->shadow, m->name, delta, now);
        emit_calibration(e, m, FLOW_CALIBRATION_TICKS, c->ticks, 0, 0, 0);
}

static void calibration_end(FlowEngine *e, Meter *m, FlowCalibrationEnd reason, double old_ml_per_tick,
                            const FlowTime *now) {
        _cleanup_(freep) char *relay = NULL;
        Calibration *c = m->cal;
        double new_ml_per_tick;
        uint64_t ticks;

        /* Detached first: the relay is free unless a flow holds it, and queries from the handler
         * see no calibration. */
        m->cal = NULL;
        ticks = c->ticks;
        new_ml_per_tick = m->tap ? m->tap->ml_per_tick : c->ml_per_tick;
        if (reason != FLOW_CALIBRATION_FINISHED || !(old_ml_per_tick > 0))
                old_ml_per_tick = new_ml_per_tick;
        relay = TAKE_PTR(c->relay_name);
        calibration_free(c);

        if (relay && !relay_held(e, relay)) {
                relay_view_closed(e, relay, now->monotonic);
                if (e->shadow)
                        relay_view_closed(e->shadow, relay, now->monotonic);
                emit_relay(e, m->name, relay, false, false);
        }

        if (reason == FLOW_CALIBRATION_FINISHED) {
                /* The meter has a new calibration: what the filter knew of it is history. */
                Meter *sm = e->shadow ? meter_find(e->shadow, m->name) : NULL;

                if (m->filter)
                        filter_restart(m->filter);
                if (sm && sm->filter)
                        filter_restart(sm->filter);
        }
        emit_meter_state(e, m);
        emit_calibration(e, m, FLOW_CALIBRATION_ENDED, ticks, reason, old_ml_per_tick, new_ml_per_tick);
}

int flow_engine_first_sight(FlowEngine *e, const char *meter, const FlowTime *now) {
        Meter *m;
        int r;

        r = meter_event_begin(e, meter, now, &m);
        if (r < 0)
                return r;
        return m->tap ? r : -ENOENT;
}

int flow_engine_start_calibration(FlowEngine *e, const char *meter, uint64_t timeout_usec, bool hold_relay,
                                  const FlowTime *now) {
        _cleanup_(freep) Calibration *c = NULL;
        Meter *m, *sm;
        int r;

        r = meter_event_begin(e, meter, now, &m);
        if (r < 0)
                return r;
        if (!m->tap)
                return -ENOENT;
        if (meter_quarantined(e, m))
                return -EPERM;
        if (m->cal)
                return -EALREADY;
        if (m->flow)
                return -EBUSY;

        c = calloc(1, sizeof(Calibration));
        if (!c)
                return -ENOMEM;
        if (hold_relay && !isempty(m->tap->relay_name)) {
                c->relay_name = strdup(m->tap->relay_name);
                if (!c->relay_name)
                        return -ENOMEM;
        }
        c->start_realtime = now->realtime;
        c->timeout = timeout_usec;
        c->deadline = add_sat(now->monotonic, timeout_usec);
        c->ml_per_tick = m->tap->ml_per_tick;
        c->relay_next = add_sat(now->monotonic, e->config.relay_reassert_usec);

        /* Ghost ticks counted so far are reported now: what follows is the calibration's. */
        filter_flush(e, m);
        sm = e->shadow ? meter_find(e->shadow, meter) : NULL;
        if (sm)
                filter_flush(e->shadow, sm);

        m->cal = TAKE_PTR(c);
        if (m->cal->relay_name) {
                relay_view_opened(e, m->cal->relay_name);
                if (e->shadow)
                        relay_view_opened(e->shadow, m->cal->relay_name);
                emit_relay(e, meter, m->cal->relay_name, true, false);
        }
        emit_calibration(e, m, FLOW_CALIBRATION_STARTED, 0, 0, 0, 0);
        return 0;
}

int flow_engine_get_calibration(FlowEngine *e, const char *meter, FlowCalibrationInfo *ret) {
        Meter *m;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        assert_return(ret, -EINVAL);
        m = meter_find(e, meter);
        if (!m || !m->cal)
                return -ENOENT;
        *ret = (FlowCalibrationInfo) {
                .meter_name = m->name,
                .ticks = m->cal->ticks,
                .start_realtime = m->cal->start_realtime,
                .deadline_realtime = add_sat(m->cal->start_realtime, m->cal->timeout),
                .deadline = m->cal->deadline,
                .relay_name = m->cal->relay_name,
                .storing = m->cal->storing,
        };
        return 0;
}

int flow_engine_calibration_set_storing(FlowEngine *e, const char *meter, bool storing) {
        Meter *m;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        assert_not_emitting(e);
        m = meter_find(e, meter);
        if (!m || !m->cal)
                return -ENOENT;
        m->cal->storing = storing;
        return 0;
}

int64_t flow_engine_end_calibration(FlowEngine *e, const char *meter, FlowCalibrationEnd reason,
                                    double old_ml_per_tick, const FlowTime *now) {
        Meter *m;
        uint64_t ticks;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        if (!flow_time_valid(now) || (reason != FLOW_CALIBRATION_FINISHED && reason != FLOW_CALIBRATION_CANCELLED))
                return -EINVAL;
        assert_not_emitting(e);
        m = meter_find(e, meter);
        if (!m || !m->cal)
                return -ENOENT;
        ticks = m->cal->ticks;
        calibration_end(e, m, reason, old_ml_per_tick, now);
        return (int64_t) ticks;
}

/* ---- authentication ---- */

static const char *record_meter(const char *meter) {
        return isempty(meter) ? FLOW_ALL_TAPS : meter;
}

/* Section 7.3 for one tap whose active record is being dropped. */
static void tap_drop_record(FlowEngine *e, Tap *t, const FlowTime *now) {
        TokenRecord rec = t->record;
        Meter *m;

        t->record = (TokenRecord) {};
        t->lookup_pending = false;

        if (flow_auth_device_is_captive(rec.device)) {
                m = meter_find(e, t->meter_name);
                /* A held flow has ended already. */
                if (m && m->flow && !m->flow->held &&
                    token_record_eq(&m->flow->token, rec.device, rec.value, rec.meter)) {
                        emit_log(e, t->meter_name, LOG_INFO,
                                 "Captive token %s/%s removed, ending flow 0x%08" PRIx64,
                                 rec.device, rec.value, m->flow->id);
                        flow_end(e, m, END_STOP, false, now, 0);
                }
        }
        token_record_done(&rec);
}

/* kegboard_daemon and rfid_daemon address every tap; a swipe then opens every tap's valve. */
static bool token_targets_all(const char *meter) {
        return isempty(meter) || streq(meter, FLOW_ALL_TAPS);
}

/* Does a token event addressed to 'meter' concern tap 't'? */
static bool token_targets_tap(FlowEngine *e, const Tap *t, const char *meter) {
        if (!token_targets_all(meter))
                return streq(t->meter_name, meter);
        return !e->config.server_tap || !e->config.server_tap(t->meter_name, e->config.server_tap_userdata);
}

/* What token_added and token_removed share: argument checks, the normalised value and the target
 * check. Returns 1 to go on (with *ret_norm set), 0 when the event names an unknown tap (logged),
 * or a negative errno. */
static int token_event_begin(FlowEngine *e, const char *device, const char *value, const char *meter,
                             const FlowTime *now, char **ret_norm) {
        char *norm;

        if (!e || isempty(device) || !value || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);
        norm = flow_token_normalize(device, value);
        if (!norm)
                return -ENOMEM;
        if (!token_targets_all(meter) && !tap_find(e, meter)) {
                emit_log_kind(e, FLOW_LOG_TOKEN, meter, LOG_WARNING, "Token event for unknown tap %s", meter);
                free(norm);
                return 0;
        }
        *ret_norm = norm;
        return 1;
}

static int token_added(FlowEngine *e, const char *device, const char *value, const char *meter, const FlowTime *now) {
        _cleanup_(freep) char *norm = NULL;
        const char *rmeter = record_meter(meter);
        int r, n = 0;

        r = token_event_begin(e, device, value, meter, now, &norm);
        if (r <= 0)
                return r;

        for (size_t i = 0; i < e->n_taps; i++) {
                Tap *t = e->taps[i];
                TokenRecord rec;

                if (!token_targets_tap(e, t, meter))
                        continue;
                if (!tap_in_scope(e, t))
                        continue;
                if (token_record_eq(&t->record, device, norm, rmeter)) {
                        emit_log_kind(e, FLOW_LOG_TOKEN, t->meter_name, LOG_DEBUG, "Token %s/%s already active on tap %s",
                                 device, norm, t->meter_name);
                        continue;
                }
                r = token_record_make(&rec, device, norm, rmeter);
                if (r < 0)
                        return r;
                if (t->record.device)
                        tap_drop_record(e, t, now);
                t->record = rec;
                t->lookup_pending = true;
                n++;
        }
        return n;
}

int flow_engine_token_added(FlowEngine *e, const char *device, const char *value, const char *meter, const FlowTime *now) {
        int r = token_added(e, device, value, meter, now);
        if (r >= 0)
                (void) token_added(e->shadow, device, value, meter, now);
        return r;
}

static int token_removed(FlowEngine *e, const char *device, const char *value, const char *meter, const FlowTime *now) {
        _cleanup_(freep) char *norm = NULL;
        const char *rmeter = record_meter(meter);
        int r, n = 0;

        r = token_event_begin(e, device, value, meter, now, &norm);
        if (r <= 0)
                return r;

        for (size_t i = 0; i < e->n_taps; i++) {
                Tap *t = e->taps[i];

                if (!token_targets_tap(e, t, meter))
                        continue;
                if (!tap_in_scope(e, t))
                        continue;
                if (!token_record_eq(&t->record, device, norm, rmeter)) {
                        emit_log_kind(e, FLOW_LOG_TOKEN, t->meter_name, LOG_DEBUG, "Token has already been removed");
                        continue;
                }
                tap_drop_record(e, t, now);
                n++;
        }
        return n;
}

int flow_engine_token_removed(FlowEngine *e, const char *device, const char *value, const char *meter, const FlowTime *now) {
        int r = token_removed(e, device, value, meter, now);
        if (r >= 0)
                (void) token_removed(e->shadow, device, value, meter, now);
        return r;
}

/* Builds an owned flow completely before anything is emitted, so an allocation failure changes nothing. */
static Flow *flow_alloc_owned(FlowEngine *e, Tap *t, const char *username, const FlowTime *now) {
        Flow *f = flow_alloc(e, t->meter_name, now);
        if (!f)
                return NULL;
        f->username = strdup(username);
        f->auth_device = strdup(t->record.device);
        if (!f->username || !f->auth_device ||
            token_record_make(&f->token, t->record.device, t->record.value, t->record.meter) < 0)
                return flow_free(f);
        if (!isempty(t->relay_name)) {
                char *relay = strdup(t->relay_name);
                if (!relay)
                        return flow_free(f);
                flow_grab_relay(e, f, relay, now);
        }
        f->max_idle = flow_engine_idle_for_device(e, t->record.device);
        return f;
}

static int flow_bind(FlowEngine *e, Tap *t, Flow *f, const char *username, const FlowTime *now) {
        _cleanup_(freep) char *user = NULL, *device = NULL, *relay = NULL;
        TokenRecord rec;
        int r;

        user = strdup(username);
        device = strdup(t->record.device);
        if (!user || !device)
                return -ENOMEM;
        if (!isempty(t->relay_name)) {
                relay = strdup(t->relay_name);
                if (!relay)
                        return -ENOMEM;
        }
        r = token_record_make(&rec, t->record.device, t->record.value, t->record.meter);
        if (r < 0)
                return r;

        free(f->username);
        f->username = TAKE_PTR(user);
        free(f->auth_device);
        f->auth_device = TAKE_PTR(device);
        token_record_done(&f->token);
        f->token = rec;
        /* pycore kept the anonymous 10 s here and cut iButton users off mid-pour. */
        f->max_idle = flow_engine_idle_for_device(e, t->record.device);
        f->last_activity = now->monotonic;

        emit_log(e, f->meter_name, LOG_INFO, "Binding user %s to flow 0x%08" PRIx64 " on %s",
                 f->username, f->id, f->meter_name);
        emit_flow_update(e, f);
        if (relay) {
                flow_grab_relay(e, f, TAKE_PTR(relay), now);
                emit_relay(e, f->meter_name, f->relay_name, true, false);
        }
        return 0;
}

/* Section 7.2, "start or bind on a tap". */
static int tap_authenticate(FlowEngine *e, Tap *t, const char *username, const FlowTime *now) {
        Meter *m;
        Flow *f, *nf;
        bool keep_relay;
        int r;

        r = meter_get_or_add(e, t->meter_name, now, false, &m);
        if (r < 0)
                return r;

        /* ghost-pours.md section 9: no flow and no valve on a quarantined tap; other taps go on. */
        if (meter_quarantined(e, m)) {
                emit_log(e, t->meter_name, LOG_INFO, "Tap %s is quarantined; not starting a flow", t->meter_name);
                return 0;
        }
        /* calibration.md section 2.3: nor on a tap being calibrated. */
        if (meter_calibrating(e, m)) {
                emit_log(e, t->meter_name, LOG_INFO, "Tap %s is being calibrated; not starting a flow", t->meter_name);
                return 0;
        }

        /* A held flow completes before anything else happens on the tap (section 7.1). */
        meter_finish_hold(e, m);
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_TOKEN_AUTHENTICATED,
                .meter_name = t->meter_name,
                .token.device = t->record.device,
                .token.value = t->record.value,
                .token.username = username,
        });

        f = m->flow;
        if (f && !f->username)
                return flow_bind(e, t, f, username, now);
        if (f && streq(f->username, username)) {
                emit_log(e, t->meter_name, LOG_DEBUG, "User %s already owns flow 0x%08" PRIx64,
                         username, f->id);
                return 0;
        }

        nf = flow_alloc_owned(e, t, username, now);
        if (!nf)
                return -ENOMEM;
        if (f) {
                emit_log(e, t->meter_name, LOG_INFO, "User switch on %s: %s -> %s, ending flow 0x%08" PRIx64,
                         t->meter_name, f->username, username, f->id);
                keep_relay = f->relay_name && nf->relay_name && streq(f->relay_name, nf->relay_name);
                flow_end(e, m, END_SWITCH, keep_relay, now, 0);
        }
        flow_start(e, m, nf);
        return 0;
}

static int token_resolved(FlowEngine *e, const char *device, const char *value, const char *username, const FlowTime *now) {
        _cleanup_(freep) char *norm = NULL;
        int r, n = 0;

        r = token_event_begin(e, device, value, NULL, now, &norm);  /* no meter: no target check */
        if (r <= 0)
                return r;
        if (username && !*username)
                username = NULL;

        for (size_t i = 0; i < e->n_taps; i++) {
                Tap *t = e->taps[i];

                if (!t->lookup_pending || !streq(t->record.device, device) || !streq(t->record.value, norm))
                        continue;
                t->lookup_pending = false;
                n++;
                if (!username) {
                        emit_log_kind(e, FLOW_LOG_TOKEN, t->meter_name, LOG_DEBUG, "Token %s/%s not authorised, no flow on %s",
                                 device, norm, t->meter_name);
                        continue;
                }
                r = tap_authenticate(e, t, username, now);
                if (r < 0)
                        return r;
        }
        return n;
}

int flow_engine_token_resolved(FlowEngine *e, const char *device, const char *value, const char *username, const FlowTime *now) {
        int r = token_resolved(e, device, value, username, now);
        if (r >= 0)
                (void) token_resolved(e->shadow, device, value, username, now);
        return r;
}
