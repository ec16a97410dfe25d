/* Flow engine (spec/core-behaviour.md sections 4-8, 10.1). Pure: every time comes from the caller and
 * every outcome leaves through the event handler, in the order of section 6.5. */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <syslog.h>

#include "flow.h"

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
} Flow;

typedef struct Meter {
        char *name;
        bool has_last;
        uint32_t last;
        uint64_t total;
        Flow *flow;
} Meter;

typedef struct Tap {
        char *meter_name;
        char *name;
        double ml_per_tick;
        char *relay_name;
        bool auto_created;
        TokenRecord record;     /* the tap's active token record */
        bool lookup_pending;
} Tap;

struct FlowEngine {
        FlowEngineConfig config;
        FlowEventHandler handler;
        void *userdata;
        unsigned emitting;
        uint64_t next_flow_id;

        Meter **meters;
        size_t n_meters, n_meters_alloc;
        Tap **taps;
        size_t n_taps, n_taps_alloc;
        char **reset_controllers;
        size_t n_reset_controllers, n_reset_controllers_alloc;

        char logbuf[1024];
};

void flow_engine_config_init(FlowEngineConfig *c) {
        *c = (FlowEngineConfig) {
                .first_flow_id = 0,
                .max_tick_delta = 1000,
                .min_volume_ml = 10.0,
                .create_unknown_taps = false,
                .default_ml_per_tick = 1.0 / 2.2,
                .idle_onewire_usec = 120 * USEC_PER_SEC,
                .idle_rfid_usec = 20 * USEC_PER_SEC,
                .idle_default_usec = 10 * USEC_PER_SEC,
                .relay_reassert_usec = 1 * USEC_PER_SEC,
        };
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

static void emit(FlowEngine *e, const FlowEvent *ev) {
        if (!e->handler)
                return;
        e->emitting++;
        e->handler(e, ev, e->userdata);
        e->emitting--;
}

_printf_(4, 5)
static void emit_log(FlowEngine *e, const char *meter, int level, const char *format, ...) {
        va_list ap;

        if (!e->handler)
                return;
        va_start(ap, format);
        (void) vsnprintf(e->logbuf, sizeof e->logbuf, format, ap);
        va_end(ap);

        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_LOG,
                .meter_name = meter,
                .log.level = level,
                .log.message = e->logbuf,
        });
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

static Meter *meter_find(FlowEngine *e, const char *name) {
        for (size_t i = 0; i < e->n_meters; i++)
                if (streq(e->meters[i]->name, name))
                        return e->meters[i];
        return NULL;
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

static bool meter_was_reset(FlowEngine *e, const char *meter) {
        for (size_t i = 0; i < e->n_reset_controllers; i++)
                if (meter_of_controller(meter, e->reset_controllers[i]))
                        return true;
        return false;
}

static int meter_get_or_add(FlowEngine *e, const char *name, Meter **ret) {
        Meter *m;
        int r;

        m = meter_find(e, name);
        if (m) {
                *ret = m;
                return 0;
        }
        if (e->n_meters >= FLOW_ENGINE_MAX_METERS) {
                emit_log(e, name, LOG_WARNING, "Too many meters (%d), ignoring meter %s",
                         FLOW_ENGINE_MAX_METERS, name);
                return -ENOSPC;
        }
        r = grow(&e->meters, &e->n_meters_alloc, e->n_meters + 1, sizeof(Meter *));
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
        /* The board restarted its counters after its reset notice: its first reading counts from 0. */
        if (meter_was_reset(e, name)) {
                m->has_last = true;
                m->last = 0;
        }
        e->meters[e->n_meters++] = m;
        *ret = m;
        return 0;
}

static bool relay_held(FlowEngine *e, const char *relay) {
        for (size_t i = 0; i < e->n_meters; i++) {
                Flow *f = e->meters[i]->flow;
                if (f && f->relay_name && streq(f->relay_name, relay))
                        return true;
        }
        return false;
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
                .idle_deadline = flow_idle_deadline(f),
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

static Flow *flow_alloc(FlowEngine *e, const char *meter, const FlowTime *now) {
        Flow *f = calloc(1, sizeof(Flow));
        if (!f)
                return NULL;
        f->meter_name = strdup(meter);
        if (!f->meter_name)
                return flow_free(f);
        f->state = FLOW_STATE_ACTIVE;
        f->max_idle = e->config.idle_default_usec;
        f->start_realtime = now->realtime;
        f->last_activity = now->monotonic;
        return f;
}

static void flow_add_ticks(Flow *f, uint64_t delta, const FlowTime *now) {
        if (!f->has_ticks) {
                f->has_ticks = true;
                f->first_tick_realtime = now->realtime;
                f->first_tick_monotonic = now->monotonic;
        }
        f->ticks += delta;
        f->last_tick_realtime = now->realtime;
        f->last_tick_monotonic = now->monotonic;
        f->last_tick_boottime = now->boottime;
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
}

/* Ends the meter's flow (section 6.5). 'keep_relay': a new flow takes the same relay at once, so no
 * "disabled" is sent in between (no valve flicker on a user switch). */
static void flow_end(FlowEngine *e, Meter *m, bool idle, bool keep_relay) {
        Flow *f = m->flow;
        FlowInfo info;
        Drink drink;

        /* Detached first: queries from the handler already see the tap without this flow. */
        m->flow = NULL;

        if (idle) {
                emit_log(e, f->meter_name, LOG_INFO, "Flow has become too idle, ending: flow_id=0x%08" PRIx64, f->id);
                f->state = FLOW_STATE_IDLE;
                emit_flow_update(e, f);
        }

        if (f->relay_name) {
                char *relay = TAKE_PTR(f->relay_name);
                if (!keep_relay && !relay_held(e, relay))
                        emit_relay(e, f->meter_name, relay, false, false);
                free(relay);
        }

        f->state = FLOW_STATE_COMPLETED;
        flow_fill_info(e, f, &info);

        if (f->ticks == 0) {
                emit_log(e, f->meter_name, LOG_INFO, "Not recording flow 0x%08" PRIx64 ": no ticks", f->id);
                emit(e, &(FlowEvent) {
                        .type = FLOW_EVENT_NOT_RECORDED,
                        .meter_name = f->meter_name,
                        .flow = &info,
                        .not_recorded.reason = FLOW_NOT_RECORDED_NO_TICKS,
                        .not_recorded.min_volume_ml = e->config.min_volume_ml,
                });
        } else if (info.volume_known && info.volume_ml < e->config.min_volume_ml) {
                emit_log(e, f->meter_name, LOG_INFO,
                         "Not recording flow 0x%08" PRIx64 ": %g mL is below the minimum of %g mL",
                         f->id, info.volume_ml, e->config.min_volume_ml);
                emit(e, &(FlowEvent) {
                        .type = FLOW_EVENT_NOT_RECORDED,
                        .meter_name = f->meter_name,
                        .flow = &info,
                        .not_recorded.reason = FLOW_NOT_RECORDED_BELOW_MINIMUM,
                        .not_recorded.min_volume_ml = e->config.min_volume_ml,
                });
        } else {
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
                };
                emit(e, &(FlowEvent) {
                        .type = FLOW_EVENT_DRINK,
                        .meter_name = f->meter_name,
                        .flow = &info,
                        .drink = &drink,
                });
        }

        emit_log(e, f->meter_name, LOG_INFO, "Flow completed: flow_id=0x%08" PRIx64, f->id);
        emit_flow_update(e, f);
        flow_free(f);
}

/* ---- engine ---- */

int flow_engine_new(FlowEngine **ret, const FlowEngineConfig *config, FlowEventHandler handler, void *userdata) {
        FlowEngine *e;
        FlowEngineConfig c;

        assert_return(ret, -EINVAL);
        if (config)
                c = *config;
        else
                flow_engine_config_init(&c);
        if (!isfinite(c.min_volume_ml) || c.min_volume_ml < 0)
                return -EINVAL;
        if (c.create_unknown_taps && (!isfinite(c.default_ml_per_tick) || c.default_ml_per_tick <= 0))
                return -EINVAL;

        e = calloc(1, sizeof(FlowEngine));
        if (!e)
                return -ENOMEM;
        e->config = c;
        e->handler = handler;
        e->userdata = userdata;
        e->next_flow_id = c.first_flow_id;
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
        for (size_t i = 0; i < e->n_meters; i++) {
                flow_free(e->meters[i]->flow);
                free(e->meters[i]->name);
                free(e->meters[i]);
        }
        free(e->meters);
        for (size_t i = 0; i < e->n_taps; i++)
                tap_free(e->taps[i]);
        free(e->taps);
        for (size_t i = 0; i < e->n_reset_controllers; i++)
                free(e->reset_controllers[i]);
        free(e->reset_controllers);
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
        if (ret)
                *ret = t;
        return 0;
}

int flow_engine_set_tap(FlowEngine *e, const char *meter, const char *name, double ml_per_tick, const char *relay_name) {
        Tap *t;
        int r;

        assert_return(e, -EINVAL);
        if (isempty(meter) || !isfinite(ml_per_tick) || ml_per_tick <= 0)
                return -EINVAL;
        assert_not_emitting(e);
        if (isempty(name))
                name = meter;
        if (!relay_name)
                relay_name = "";

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

int flow_engine_remove_tap(FlowEngine *e, const char *meter) {
        Meter *m;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        assert_not_emitting(e);
        for (size_t i = 0; i < e->n_taps; i++) {
                if (!streq(e->taps[i]->meter_name, meter))
                        continue;
                /* The flow keeps the calibration it used last. */
                m = meter_find(e, meter);
                if (m && m->flow)
                        flow_refresh_calibration(e, m->flow);
                tap_free(e->taps[i]);
                memmove(e->taps + i, e->taps + i + 1, (e->n_taps - i - 1) * sizeof(Tap *));
                e->n_taps--;
                return 0;
        }
        return -ENOENT;
}

/* Standalone mode: the first MeterUpdate or FlowRequest of a meter without a tap creates one. */
static int tap_maybe_create(FlowEngine *e, const char *meter) {
        int r;

        if (!e->config.create_unknown_taps || tap_find(e, meter))
                return 0;
        if (e->n_taps >= FLOW_ENGINE_MAX_METERS) {
                emit_log(e, meter, LOG_WARNING, "Too many taps (%d), not creating tap %s",
                         FLOW_ENGINE_MAX_METERS, meter);
                return -ENOSPC;
        }
        r = tap_add(e, meter, meter, e->config.default_ml_per_tick, "", true, NULL);
        if (r < 0)
                return r;
        emit_log(e, meter, LOG_INFO, "Creating tap %s with default calibration %g mL/tick",
                 meter, e->config.default_ml_per_tick);
        emit(e, &(FlowEvent) {
                .type = FLOW_EVENT_TAP_CREATED,
                .meter_name = meter,
        });
        return 1;
}

static void tap_fill_info(FlowEngine *e, Tap *t, FlowTapInfo *ret) {
        Meter *m = meter_find(e, t->meter_name);

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
        };
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
static uint64_t meter_delta(FlowEngine *e, Meter *m, uint32_t r) {
        uint64_t max = e->config.max_tick_delta;
        uint32_t last = m->last;

        if (!m->has_last) {
                emit_log(e, m->name, LOG_DEBUG, "Meter %s: first reading %" PRIu32 " is the baseline", m->name, r);
                return 0;
        }
        if (r == last) {
                emit_log(e, m->name, LOG_DEBUG, "Meter %s: reading %" PRIu32 " unchanged", m->name, r);
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
                        emit_log(e, m->name, LOG_DEBUG, "Meter %s wrapped", m->name);
                        return w;
                }
                if (max == 0 || r <= max) {
                        emit_log(e, m->name, LOG_INFO,
                                 "Meter %s went backwards (%" PRIu32 " -> %" PRIu32 "), counting %" PRIu32 " ticks",
                                 m->name, last, r, r);
                        return r;
                }
        }
        emit_log(e, m->name, LOG_WARNING,
                 "Bad ticks report: meter=%s last=%" PRIu32 " reading=%" PRIu32 "; re-baselining", m->name, last, r);
        return 0;
}

/* What a meter reading and a flow request share: argument checks, the meter (added on first
 * sight) and, in standalone mode, its first-sight tap. */
static int meter_event_begin(FlowEngine *e, const char *meter, const FlowTime *now, Meter **ret) {
        int r;

        if (!e || isempty(meter) || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        r = meter_get_or_add(e, meter, ret);
        if (r < 0)
                return r;
        return tap_maybe_create(e, meter);
}

int64_t flow_engine_meter_update(FlowEngine *e, const char *meter, uint32_t reading, const FlowTime *now) {
        Meter *m;
        uint64_t delta;
        int r;

        r = meter_event_begin(e, meter, now, &m);
        if (r < 0)
                return r;

        delta = meter_delta(e, m, reading);
        m->has_last = true;
        m->last = reading;
        m->total += delta;

        /* Baselines, repeats and rejected reports neither start a flow nor keep one alive. */
        if (delta == 0)
                return 0;

        if (m->flow) {
                flow_add_ticks(m->flow, delta, now);
                emit_flow_update(e, m->flow);
        } else {
                Flow *f = flow_alloc(e, meter, now);
                if (!f)
                        return -ENOMEM;
                flow_add_ticks(f, delta, now);
                flow_start(e, m, f);
        }
        return (int64_t) delta;
}

int flow_engine_controller_reset(FlowEngine *e, const char *controller) {
        int r;

        assert_return(e, -EINVAL);
        if (isempty(controller))
                return -EINVAL;
        assert_not_emitting(e);

        for (size_t i = 0; i < e->n_meters; i++)
                if (meter_of_controller(e->meters[i]->name, controller)) {
                        e->meters[i]->has_last = true;
                        e->meters[i]->last = 0;
                }

        for (size_t i = 0; i < e->n_reset_controllers; i++)
                if (streq(e->reset_controllers[i], controller))
                        goto done;

        if (e->n_reset_controllers >= FLOW_ENGINE_MAX_METERS)
                return -ENOSPC;
        r = grow(&e->reset_controllers, &e->n_reset_controllers_alloc, e->n_reset_controllers + 1, sizeof(char *));
        if (r < 0)
                return r;
        e->reset_controllers[e->n_reset_controllers] = strdup(controller);
        if (!e->reset_controllers[e->n_reset_controllers])
                return -ENOMEM;
        e->n_reset_controllers++;
done:
        emit_log(e, NULL, LOG_INFO, "Controller %s was reset, counting its meters from 0", controller);
        return 0;
}

int flow_engine_get_meter(FlowEngine *e, const char *meter, FlowMeterInfo *ret) {
        Meter *m;

        assert_return(e, -EINVAL);
        assert_return(meter, -EINVAL);
        assert_return(ret, -EINVAL);
        m = meter_find(e, meter);
        if (!m)
                return -ENOENT;
        *ret = (FlowMeterInfo) {
                .meter_name = m->name,
                .has_last = m->has_last,
                .last = m->last,
                .total = m->total,
        };
        return 0;
}

/* ---- flow requests ---- */

int flow_engine_start_flow(FlowEngine *e, const char *meter, const FlowTime *now) {
        Meter *m;
        Flow *f;
        int r;

        r = meter_event_begin(e, meter, now, &m);
        if (r < 0)
                return r;

        if (m->flow) {
                /* pycore replaced the flow here and lost its ticks. */
                emit_log(e, meter, LOG_DEBUG, "Flow 0x%08" PRIx64 " already active on %s, keeping it",
                         m->flow->id, meter);
                return 0;
        }

        f = flow_alloc(e, meter, now);
        if (!f)
                return -ENOMEM;
        flow_start(e, m, f);
        return 1;
}

int flow_engine_stop_flow(FlowEngine *e, const char *meter, const FlowTime *now) {
        Meter *m;
        int r;

        assert_return(e, -EINVAL);
        if (isempty(meter) || !flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        r = tap_maybe_create(e, meter);
        if (r < 0)
                return r;

        m = meter_find(e, meter);
        if (!m || !m->flow) {
                emit_log(e, meter, LOG_WARNING, "Stop flow request for %s, which has no active flow", meter);
                return 0;
        }
        flow_end(e, m, false, false);
        return 1;
}

int flow_engine_shutdown(FlowEngine *e, const FlowTime *now) {
        int n = 0;

        assert_return(e, -EINVAL);
        if (!flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        for (size_t i = 0; i < e->n_meters; i++)
                if (e->meters[i]->flow) {
                        flow_end(e, e->meters[i], false, false);
                        n++;
                }
        return n;
}

/* ---- deadlines ---- */

static uint64_t flow_deadline(FlowEngine *e, const Flow *f, bool *ret_idle) {
        uint64_t idle = flow_idle_deadline(f);

        /* On a tie the flow ends: a re-assert right before "disabled" would be pointless. */
        if (f->relay_name && e->config.relay_reassert_usec > 0 && f->relay_next < idle) {
                *ret_idle = false;
                return f->relay_next;
        }
        *ret_idle = true;
        return idle;
}

uint64_t flow_engine_next_deadline(FlowEngine *e) {
        uint64_t best = FLOW_USEC_INFINITY;
        bool idle;

        if (!e)
                return FLOW_USEC_INFINITY;
        for (size_t i = 0; i < e->n_meters; i++)
                if (e->meters[i]->flow)
                        best = MIN(best, flow_deadline(e, e->meters[i]->flow, &idle));
        return best;
}

int flow_engine_process_deadlines(FlowEngine *e, const FlowTime *now) {
        int n = 0;

        assert_return(e, -EINVAL);
        if (!flow_time_valid(now))
                return -EINVAL;
        assert_not_emitting(e);

        for (;;) {
                Meter *due = NULL;
                uint64_t best = FLOW_USEC_INFINITY;
                bool due_idle = false;

                for (size_t i = 0; i < e->n_meters; i++) {
                        Flow *f = e->meters[i]->flow;
                        bool idle;
                        uint64_t d;

                        if (!f)
                                continue;
                        d = flow_deadline(e, f, &idle);
                        if (d < best) {
                                best = d;
                                due = e->meters[i];
                                due_idle = idle;
                        }
                }
                if (!due || best > now->monotonic)
                        break;

                if (due_idle)
                        flow_end(e, due, true, false);
                else {
                        Flow *f = due->flow;
                        /* A late loop does not catch up with a burst of re-asserts. */
                        f->relay_next = add_sat(f->relay_next, e->config.relay_reassert_usec);
                        if (f->relay_next <= now->monotonic)
                                f->relay_next = add_sat(now->monotonic, e->config.relay_reassert_usec);
                        emit_relay(e, f->meter_name, f->relay_name, true, true);
                }
                n++;
        }
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

/* ---- authentication ---- */

static const char *record_meter(const char *meter) {
        return isempty(meter) ? FLOW_ALL_TAPS : meter;
}

/* Section 7.3 for one tap whose active record is being dropped. */
static void tap_drop_record(FlowEngine *e, Tap *t) {
        TokenRecord rec = t->record;
        Meter *m;

        t->record = (TokenRecord) {};
        t->lookup_pending = false;

        if (flow_auth_device_is_captive(rec.device)) {
                m = meter_find(e, t->meter_name);
                if (m && m->flow && token_record_eq(&m->flow->token, rec.device, rec.value, rec.meter)) {
                        emit_log(e, t->meter_name, LOG_INFO,
                                 "Captive token %s/%s removed, ending flow 0x%08" PRIx64,
                                 rec.device, rec.value, m->flow->id);
                        flow_end(e, m, false, false);
                }
        }
        token_record_done(&rec);
}

/* kegboard_daemon and rfid_daemon address every tap; a swipe then opens every tap's valve. */
static bool token_targets_all(const char *meter) {
        return isempty(meter) || streq(meter, FLOW_ALL_TAPS);
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
                emit_log(e, meter, LOG_WARNING, "Token event for unknown tap %s", meter);
                free(norm);
                return 0;
        }
        *ret_norm = norm;
        return 1;
}

int flow_engine_token_added(FlowEngine *e, const char *device, const char *value, const char *meter, const FlowTime *now) {
        _cleanup_(freep) char *norm = NULL;
        const char *rmeter = record_meter(meter);
        bool all = token_targets_all(meter);
        int r, n = 0;

        r = token_event_begin(e, device, value, meter, now, &norm);
        if (r <= 0)
                return r;

        for (size_t i = 0; i < e->n_taps; i++) {
                Tap *t = e->taps[i];
                TokenRecord rec;

                if (!all && !streq(t->meter_name, meter))
                        continue;
                if (token_record_eq(&t->record, device, norm, rmeter)) {
                        emit_log(e, t->meter_name, LOG_DEBUG, "Token %s/%s already active on tap %s",
                                 device, norm, t->meter_name);
                        continue;
                }
                r = token_record_make(&rec, device, norm, rmeter);
                if (r < 0)
                        return r;
                if (t->record.device)
                        tap_drop_record(e, t);
                t->record = rec;
                t->lookup_pending = true;
                n++;
        }
        return n;
}

int flow_engine_token_removed(FlowEngine *e, const char *device, const char *value, const char *meter, const FlowTime *now) {
        _cleanup_(freep) char *norm = NULL;
        const char *rmeter = record_meter(meter);
        bool all = token_targets_all(meter);
        int r, n = 0;

        r = token_event_begin(e, device, value, meter, now, &norm);
        if (r <= 0)
                return r;

        for (size_t i = 0; i < e->n_taps; i++) {
                Tap *t = e->taps[i];

                if (!all && !streq(t->meter_name, meter))
                        continue;
                if (!token_record_eq(&t->record, device, norm, rmeter)) {
                        emit_log(e, t->meter_name, LOG_DEBUG, "Token has already been removed");
                        continue;
                }
                tap_drop_record(e, t);
                n++;
        }
        return n;
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

        r = meter_get_or_add(e, t->meter_name, &m);
        if (r < 0)
                return r;

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
                flow_end(e, m, false, keep_relay);
        }
        flow_start(e, m, nf);
        return 0;
}

int flow_engine_token_resolved(FlowEngine *e, const char *device, const char *value, const char *username, const FlowTime *now) {
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
                        emit_log(e, t->meter_name, LOG_DEBUG, "Token %s/%s not authorised, no flow on %s",
                                 device, norm, t->meter_name);
                        continue;
                }
                r = tap_authenticate(e, t, username, now);
                if (r < 0)
                        return r;
        }
        return n;
}
