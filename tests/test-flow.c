/* Unit tests for the flow engine: pycore's meter/flow/tap/manager tests with their numbers
 * (core-behaviour.md 14.1) and the engine cases of 14.2, driven with synthetic time. They describe
 * flows as core-behaviour.md section 6 does, with --ghost_filter=off: tiny pycore pours (10 ticks, one
 * tick of 100 mL) are below the filter's start volume, and the event order asserted is section 6.5's.
 * The filter itself, and these ports with it on, are in test-ghost.c. */

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

#include "flow.h"
#include "kegnet.h"
#include "util-time.h"
#include "test-util.h"

#define check_double(a, b) check(fabs((double) (a) - (double) (b)) < 1e-9)

/* Synthetic clocks: distinct bases so a mix-up between them shows. */
#define MONO0 (UINT64_C(5000) * USEC_PER_SEC)
#define WALL0 (UINT64_C(1795694400) * USEC_PER_SEC)   /* 2026-11-26T12:00:00Z */
#define BOOT0 (UINT64_C(7000) * USEC_PER_SEC)
#define SEC(x) ((uint64_t) (x) * USEC_PER_SEC)
#define AT(us) (&(FlowTime) { .monotonic = MONO0 + (us), .realtime = WALL0 + (us), .boottime = BOOT0 + (us) })

#define FIRST_ID 1795694400

/* ---- event recorder ---- */

typedef struct RecDrink {
        uint64_t flow_id;
        char meter[64];
        char user[64];          /* "" = anonymous */
        uint64_t ticks;
        bool volume_known;
        double volume_ml;
        uint64_t start_realtime, pour_realtime, pour_boottime, duration_sec;
} RecDrink;

typedef struct Rec {
        char seq[16384];        /* non-log events, " | " separated */
        char logs[16384];       /* "<L>:<message>\n" */
        char states[4096];      /* METER_STATE and a drink's state after it: "<meter>=<accounted>+<carry> " */
        RecDrink drinks[32];
        int n_drinks;
        FlowInfo last_update;   /* numbers only; strings are not kept */
        char last_update_user[64];
        char last_update_meter[64];
        int n_reassert;
        int n_relay_on;
        int n_relay_off;
        /* probes run from inside the handler */
        bool probe;
        int probe_busy;         /* mutating calls that returned -EBUSY */
        int probe_calls;
        int completed_with_flow_still_listed;
} Rec;

static void rec_event(Rec *r, const char *format, ...) _printf_(2, 3);
static void rec_event(Rec *r, const char *format, ...) {
        char item[256];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(item, sizeof item, format, ap);
        va_end(ap);
        test_appendf(r->seq, sizeof r->seq, "%s%s", r->seq[0] ? " | " : "", item);
}

static void handler(FlowEngine *e, const FlowEvent *ev, void *userdata) {
        Rec *r = userdata;
        FlowInfo fi;

        switch (ev->type) {
        case FLOW_EVENT_LOG:
                test_appendf(r->logs, sizeof r->logs, "%c:%s\n",
                           ev->log.level == LOG_WARNING ? 'W' : ev->log.level == LOG_INFO ? 'I' :
                           ev->log.level == LOG_DEBUG ? 'D' : '?', ev->log.message);
                return;
        case FLOW_EVENT_FLOW_UPDATE:
                rec_event(r, "U:%s:%" PRIu64 ":%s", flow_state_to_string(ev->flow->state), ev->flow->ticks,
                          ev->flow->username ?: "-");
                r->last_update = *ev->flow;
                snprintf(r->last_update_user, sizeof r->last_update_user, "%s", ev->flow->username ?: "");
                snprintf(r->last_update_meter, sizeof r->last_update_meter, "%s", ev->flow->meter_name);
                if (ev->flow->state == FLOW_STATE_COMPLETED &&
                    flow_engine_get_flow_by_id(e, ev->flow->flow_id, &fi) == 0)
                        r->completed_with_flow_still_listed++;
                break;
        case FLOW_EVENT_DRINK: {
                RecDrink *d;
                rec_event(r, "D:%" PRIu64 ":%s", ev->drink->ticks, ev->drink->username ?: "-");
                if (r->n_drinks >= (int) ELEMENTSOF(r->drinks))
                        break;
                d = &r->drinks[r->n_drinks++];
                *d = (RecDrink) {
                        .flow_id = ev->drink->flow_id,
                        .ticks = ev->drink->ticks,
                        .volume_known = ev->drink->volume_known,
                        .volume_ml = ev->drink->volume_ml,
                        .start_realtime = ev->drink->start_realtime,
                        .pour_realtime = ev->drink->pour_realtime,
                        .pour_boottime = ev->drink->pour_boottime,
                        .duration_sec = ev->drink->duration_sec,
                };
                snprintf(d->meter, sizeof d->meter, "%s", ev->drink->meter_name);
                snprintf(d->user, sizeof d->user, "%s", ev->drink->username ?: "");
                break;
        }
        case FLOW_EVENT_NOT_RECORDED:
                rec_event(r, "N:%s", ev->not_recorded.reason == FLOW_NOT_RECORDED_NO_TICKS ? "noticks" : "min");
                break;
        case FLOW_EVENT_RELAY:
                rec_event(r, "R:%s:%s", ev->relay.relay_name,
                          ev->relay.reassert ? "re" : ev->relay.enabled ? "on" : "off");
                if (ev->relay.reassert)
                        r->n_reassert++;
                else if (ev->relay.enabled)
                        r->n_relay_on++;
                else
                        r->n_relay_off++;
                break;
        case FLOW_EVENT_TOKEN_AUTHENTICATED:
                rec_event(r, "A:%s", ev->token.username);
                break;
        case FLOW_EVENT_TAP_CREATED:
                rec_event(r, "T:%s", ev->meter_name);
                break;
        case FLOW_EVENT_METER_STATE:
                test_appendf(r->states, sizeof r->states, "%s=%" PRIu32 "+%" PRIu64 " ", ev->meter_name,
                             ev->meter_state->accounted, ev->meter_state->carry);
                break;
        case FLOW_EVENT_GHOST:
                rec_event(r, "G:%s:%" PRIu64, flow_ghost_rule_to_string(ev->ghost.rule), ev->ghost.ticks);
                break;
        case FLOW_EVENT_POUR_FLAGGED:
                rec_event(r, "F:%s", drink_flag_to_string(ev->flagged.flag));
                break;
        case FLOW_EVENT_QUARANTINE:
                rec_event(r, "Q:%s", ev->quarantine.quarantined ? "set" : "cleared");
                break;
        case FLOW_EVENT_GHOST_COUNTERS:
                return;
        case FLOW_EVENT_METER_FORGOTTEN:
                rec_event(r, "M:%s", ev->meter_name);
                break;
        case FLOW_EVENT_TAP_REMOVED:
                rec_event(r, "X:%s", ev->meter_name);
                /* Sent while the tap can still be looked up. */
                check(flow_engine_get_tap(e, ev->meter_name, &(FlowTapInfo) {}) == 0);
                break;
        case FLOW_EVENT_CALIBRATION:
                if (ev->calibration.change == FLOW_CALIBRATION_TICKS)
                        return;
                rec_event(r, "C:%s:%" PRIu64, ev->calibration.change == FLOW_CALIBRATION_STARTED ? "start" :
                          flow_calibration_end_to_string(ev->calibration.reason), ev->calibration.ticks);
                break;
        }
        if (ev->type == FLOW_EVENT_DRINK && ev->meter_state)
                test_appendf(r->states, sizeof r->states, "%s=%" PRIu32 "+%" PRIu64 "(drink) ", ev->meter_name,
                             ev->meter_state->accounted, ev->meter_state->carry);

        if (r->probe) {
                r->probe_calls++;
                if (flow_engine_stop_flow(e, "m", AT(0)) == -EBUSY)
                        r->probe_busy++;
                if (flow_engine_set_tap(e, "x", NULL, 1.0, NULL) == -EBUSY)
                        r->probe_busy++;
                if (flow_engine_process_deadlines(e, AT(0)) == -EBUSY)
                        r->probe_busy++;
        }
}

static void rec_reset(Rec *r) {
        r->seq[0] = 0;
        r->logs[0] = 0;
        r->states[0] = 0;
}

#define check_seq(r, expected)                                                          \
        do {                                                                            \
                check_streq((r)->seq, (expected));                                      \
                (r)->seq[0] = 0;                                                        \
        } while (0)

static bool log_has(Rec *r, const char *s) {
        return strstr(r->logs, s) != NULL;
}

/* The engine's defaults with the ghost filter off. */
static void config_init(FlowEngineConfig *c) {
        flow_engine_config_init(c);
        c->settings.ghost_filter = FLOW_GHOST_OFF;
}

static FlowEngine *engine_new(Rec *r, const FlowEngineConfig *c) {
        FlowEngineConfig d;
        FlowEngine *e = NULL;

        memset(r, 0, sizeof *r);
        if (!c) {
                config_init(&d);
                d.first_flow_id = FIRST_ID;
                c = &d;
        }
        check_int(flow_engine_new(&e, c, handler, r), 0);
        return e;
}

static FlowEngineConfig config_with_max(uint64_t max) {
        FlowEngineConfig c;

        config_init(&c);
        c.first_flow_id = FIRST_ID;
        c.max_tick_delta = max;
        return c;
}

static uint64_t meter_total(FlowEngine *e, const char *m) {
        FlowMeterInfo mi;
        return flow_engine_get_meter(e, m, &mi) == 0 ? mi.total : UINT64_MAX;
}

static uint32_t meter_last(FlowEngine *e, const char *m) {
        FlowMeterInfo mi;
        return flow_engine_get_meter(e, m, &mi) == 0 ? mi.last : UINT32_MAX;
}

static uint64_t flow_ticks(FlowEngine *e, const char *m) {
        FlowInfo fi;
        return flow_engine_get_flow(e, m, &fi) == 0 ? fi.ticks : UINT64_MAX;
}

static uint64_t flow_id(FlowEngine *e, const char *m) {
        FlowInfo fi;
        return flow_engine_get_flow(e, m, &fi) == 0 ? fi.flow_id : 0;
}

static bool has_flow(FlowEngine *e, const char *m) {
        FlowInfo fi;
        return flow_engine_get_flow(e, m, &fi) == 0;
}

/* The core's loop: one timer, armed at the next deadline, up to and including 'until'. */
static int run_until(FlowEngine *e, uint64_t until) {
        uint64_t t;
        int n = 0, k;

        while ((t = flow_engine_next_deadline(e)) <= MONO0 + until) {
                k = flow_engine_process_deadlines(e, AT(t - MONO0));
                check(k > 0);
                if (k <= 0)
                        break;
                n += k;
        }
        return n;
}

/* Token added + lookup answered, as the core does it. */
static void swipe(FlowEngine *e, const char *device, const char *value, const char *meter, const char *user,
                  uint64_t t) {
        int n = flow_engine_token_added(e, device, value, meter, AT(t));
        check(n >= 0);
        if (n > 0)
                check(flow_engine_token_resolved(e, device, value, user, AT(t)) >= 0);
}

/* ================= 14.1: pycore flow_meter tests ================= */

static void test_meter_basic_use(void) {
        FlowEngineConfig c = config_with_max(5000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        check_int(flow_engine_get_meter(e, "m", &(FlowMeterInfo) {}), -ENOENT);
        check_int(flow_engine_meter_update(e, "m", 2000, AT(0)), 0);
        check_int(meter_total(e, "m"), 0);
        check_int(flow_engine_meter_update(e, "m", 2100, AT(SEC(1))), 100);
        check_int(meter_total(e, "m"), 100);
        check_int(meter_last(e, "m"), 2100);
        check_int(flow_engine_meter_update(e, "m", 7101, AT(SEC(2))), 0);
        check_int(meter_total(e, "m"), 100);
        check_int(meter_last(e, "m"), 7101);
        check(log_has(&r, "W:Bad ticks report: meter=m last=2100 reading=7101; re-baselining"));
}

static void test_meter_basic_use2(void) {
        FlowEngineConfig c = config_with_max(5000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        check_int(flow_engine_meter_update(e, "m", 1000, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "m", 1100, AT(1)), 100);
        check_int(flow_engine_meter_update(e, "m", 2100, AT(2)), 1000);
        check_int(flow_engine_meter_update(e, "m", 3100, AT(3)), 1000);
        check_int(meter_total(e, "m"), 2100);
}

static void test_meter_overflow_handling(void) {
        FlowEngineConfig c = config_with_max(1000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        check_int(flow_engine_meter_update(e, "m", UINT32_MAX - 99, AT(0)), 0);     /* 2^32 - 100 */
        check_int(meter_total(e, "m"), 0);
        check_int(flow_engine_meter_update(e, "m", UINT32_MAX - 49, AT(1)), 50);
        check_int(meter_total(e, "m"), 50);
        check_int(flow_engine_meter_update(e, "m", 10, AT(2)), 60);
        check_int(meter_total(e, "m"), 110);
        check(log_has(&r, "D:Meter m wrapped"));
}

static void test_meter_no_overflow(void) {
        FlowEngineConfig c = config_with_max(1000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        check_int(meter_total(e, "m"), 0);
        check_int(flow_engine_meter_update(e, "m", 100, AT(1)), 100);
        check_int(meter_total(e, "m"), 100);
        check_int(flow_engine_meter_update(e, "m", 10, AT(2)), 10);
        check_int(meter_total(e, "m"), 110);
        check(log_has(&r, "I:Meter m went backwards (100 -> 10), counting 10 ticks"));
        check_int(flow_engine_meter_update(e, "m", 20, AT(3)), 10);
        check_int(meter_total(e, "m"), 120);
}

/* ================= section 5 details ================= */

static void test_meter_baseline_first_reading(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);
        FlowMeterInfo mi;

        check_int(flow_engine_meter_update(e, "m", 123456, AT(0)), 0);
        check_int(flow_engine_get_meter(e, "m", &mi), 0);
        check(mi.has_last);
        check_int(mi.last, 123456);
        check_int(mi.total, 0);
        check(!has_flow(e, "m"));
        check_seq(&r, "");
        check_int(flow_engine_next_deadline(e), (int64_t) FLOW_USEC_INFINITY);
}

static void test_meter_reset_to_lower_value(void) {
        FlowEngineConfig c = config_with_max(1000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        /* A decrease to a value <= max counts the new reading from 0 (board reset). */
        check_int(flow_engine_meter_update(e, "m", 5000, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "m", 30, AT(1)), 30);
        check_int(meter_total(e, "m"), 30);
        /* A decrease to 0 is a reset that counts nothing and starts no flow. */
        check_int(flow_engine_stop_flow(e, "m", AT(2)), 1);
        rec_reset(&r);
        check_int(flow_engine_meter_update(e, "m", 0, AT(3)), 0);
        check(!has_flow(e, "m"));
        check_seq(&r, "");
        /* A decrease to a value > max (and no wrap) is rejected but remembered. */
        check_int(flow_engine_meter_update(e, "m", 3000, AT(4)), 0);
        check_int(flow_engine_meter_update(e, "m", 1500, AT(5)), 0);
        check(log_has(&r, "W:Bad ticks report: meter=m last=3000 reading=1500; re-baselining"));
        check_int(meter_last(e, "m"), 1500);
        check_int(flow_engine_meter_update(e, "m", 1501, AT(6)), 1);
        check_int(meter_total(e, "m"), 31);
}

static void test_meter_max_delta_guard(void) {
        FlowEngineConfig c = config_with_max(1000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "m", 1001, AT(1)), 0);
        check_int(meter_total(e, "m"), 0);
        check_int(meter_last(e, "m"), 1001);
        check(!has_flow(e, "m"));
        /* Exactly max is accepted. */
        check_int(flow_engine_meter_update(e, "m", 2001, AT(2)), 1000);
        check_int(meter_total(e, "m"), 1000);
        check_int(flow_ticks(e, "m"), 1000);
}

static void test_meter_no_limit(void) {
        FlowEngineConfig c = config_with_max(0);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "m", 4000000000u, AT(1)), 4000000000);
        /* Without a limit a decrease is always a reset, never a wrap. */
        check_int(flow_engine_meter_update(e, "m", 5, AT(2)), 5);
        check_int(meter_total(e, "m"), 4000000005);
        check(log_has(&r, "went backwards"));
        check(!log_has(&r, "wrapped"));
}

/* 14.2 #1 */
static void test_zero_delta_does_not_keep_flow_alive(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "m", 0, AT(SEC(1))), 0);
        check(!has_flow(e, "m"));
        check_int(flow_engine_meter_update(e, "m", 100, AT(SEC(2))), 100);
        /* A producer repeating the same reading every second. */
        for (int i = 3; i < 12; i++) {
                check_int(flow_engine_meter_update(e, "m", 100, AT(SEC(i))), 0);
                check_int(flow_engine_process_deadlines(e, AT(SEC(i))), 0);
        }
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(12));
        check(has_flow(e, "m"));
        check_int(flow_engine_process_deadlines(e, AT(SEC(12))), 1);
        check(!has_flow(e, "m"));
}

/* 14.2 #2 */
static void test_board_reset_notice(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_meter_update(e, "kegboard.flow0", 5000, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "kegboard-2.flow0", 5000, AT(0)), 0);
        check_int(flow_engine_controller_reset(e, "kegboard"), 0);
        check_int(meter_last(e, "kegboard.flow0"), 0);
        check_int(meter_last(e, "kegboard-2.flow0"), 5000);   /* other controller untouched */
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 30, AT(1)), 30);
        check_int(meter_total(e, "kegboard.flow0"), 30);
        /* A meter of the reset controller not seen before counts its first reading from 0. */
        check_int(flow_engine_meter_update(e, "kegboard.flow1", 40, AT(2)), 40);
        /* ... but not a meter of another controller. */
        check_int(flow_engine_meter_update(e, "kegboardX.flow1", 40, AT(2)), 0);
        /* A post-reset reading above max is still rejected. */
        check_int(flow_engine_controller_reset(e, "kegboard"), 0);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 1001, AT(3)), 0);
        check(log_has(&r, "W:Bad ticks report: meter=kegboard.flow0 last=0 reading=1001"));
        check_int(flow_engine_controller_reset(e, ""), -EINVAL);
}

/* 14.2 #3 */
static void test_restart_jump_is_baseline(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        /* A fresh engine (core restart) sees a counter far above anything: baseline, no pour. */
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 987654, AT(0)), 0);
        check(!has_flow(e, "kegboard.flow0"));
        check_int(meter_total(e, "kegboard.flow0"), 0);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 987660, AT(1)), 6);
}

/* ================= section 5: what survives a restart ================= */

static FlowMeterState meter_state(FlowEngine *e, const char *m) {
        FlowMeterInfo mi;
        return flow_engine_get_meter(e, m, &mi) == 0 ? mi.state : (FlowMeterState) { UINT32_MAX, UINT64_MAX };
}

#define check_states(r, expected)                                                       \
        do {                                                                            \
                check_streq((r)->states, (expected));                                   \
                (r)->states[0] = 0;                                                     \
        } while (0)

/* The accounted reading (the last reading less the open ticks) is announced only with a durable
 * step: a baseline, a drink, discarded ticks. */
static void test_meter_state_events(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 0.5, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 1000, AT(0)), 0);
        check_states(&r, "m=1000+0 ");
        check_int(flow_engine_meter_update(e, "m", 1000, AT(1)), 0);         /* a repeat: nothing */
        check_int(flow_engine_meter_update(e, "m", 1100, AT(2)), 100);
        check_int(flow_engine_meter_update(e, "m", 1300, AT(3)), 200);
        /* Never inside it: the ticks of an active flow. */
        check_states(&r, "");
        check_int(meter_state(e, "m").accounted, 1000);
        /* A jump inside a flow is discarded at once; the flow's 300 ticks stay open. */
        check_int(flow_engine_meter_update(e, "m", 9000, AT(4)), 0);
        check_states(&r, "m=8700+0 ");
        check_int(flow_engine_meter_update(e, "m", 9050, AT(5)), 50);
        check_int(flow_engine_stop_flow(e, "m", AT(6)), 1);
        check_states(&r, "m=9050+0(drink) ");
        check_int(meter_state(e, "m").accounted, 9050);
        /* A jump outside a flow is discarded at once. */
        check_int(flow_engine_meter_update(e, "m", 20000, AT(7)), 0);
        check_states(&r, "m=20000+0 ");
        /* A flow that is no drink moves it too (its ticks are discarded). */
        check_int(flow_engine_meter_update(e, "m", 20010, AT(8)), 10);
        check_int(flow_engine_stop_flow(e, "m", AT(9)), 1);
        check_states(&r, "m=20010+0 ");
        /* A flow without a reading of its meter says nothing. */
        check_int(flow_engine_start_flow(e, "n", AT(10)), 1);
        check_int(flow_engine_stop_flow(e, "n", AT(11)), 1);
        check_states(&r, "");
}

static void test_restore_meter(void) {
        FlowEngineConfig c = config_with_max(1000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        check_int(flow_engine_restore_meter(e, "k.flow0", &(FlowMeterState) { .accounted = 1000 }, AT(0)), 0);
        check_int(flow_engine_restore_meter(e, "k.flow1", &(FlowMeterState) { .accounted = 50 }, AT(0)), 0);
        check_int(flow_engine_restore_meter(e, "k.flow2", &(FlowMeterState) { .accounted = 4294967000u }, AT(0)), 0);
        check_int(flow_engine_restore_meter(e, "k.flow0", &(FlowMeterState) {}, AT(0)), -EEXIST);
        check(!has_flow(e, "k.flow0"));
        /* Poured while the core was down: more than max_tick_delta, within max_restart_delta. */
        check_int(flow_engine_meter_update(e, "k.flow0", 1000 + 7000, AT(1)), 7000);
        check_int(flow_ticks(e, "k.flow0"), 7000);
        /* Only the first reading has the wider limit. */
        check_int(flow_engine_meter_update(e, "k.flow0", 8000 + 1001, AT(2)), 0);
        check(log_has(&r, "W:Bad ticks report: meter=k.flow0 last=8000 reading=9001; re-baselining"));
        /* Above max_restart_delta: rejected and re-baselined like any jump. */
        check_int(flow_engine_meter_update(e, "k.flow1", 50 + 20001, AT(3)), 0);
        check(log_has(&r, "W:Bad ticks report: meter=k.flow1 last=50 reading=20051; re-baselining"));
        check_int(meter_state(e, "k.flow1").accounted, 20051);
        /* A wrap and a board reset while the core was down count as the table says. */
        check_int(flow_engine_meter_update(e, "k.flow2", 300, AT(4)), 596);
        check_int(flow_engine_restore_meter(e, "k.flow3", &(FlowMeterState) { .accounted = 50000 }, AT(5)), 0);
        check_int(flow_engine_meter_update(e, "k.flow3", 12000, AT(6)), 12000);

        /* A reset notice of a restored meter's board: from 0, with the restart limit still. */
        check_int(flow_engine_restore_meter(e, "j.flow0", &(FlowMeterState) { .accounted = 90000 }, AT(7)), 0);
        check_int(flow_engine_controller_reset(e, "j"), 0);
        check_int(flow_engine_meter_update(e, "j.flow0", 3000, AT(8)), 3000);

        /* max_restart_delta 0: no limit, like max_tick_delta. */
        FlowEngineConfig c0 = config_with_max(1000);
        c0.max_restart_delta = 0;
        Rec r0;
        _cleanup_(flow_engine_freep) FlowEngine *e0 = engine_new(&r0, &c0);
        check_int(flow_engine_restore_meter(e0, "k.flow0", &(FlowMeterState) { .accounted = 0 }, AT(0)), 0);
        check_int(flow_engine_meter_update(e0, "k.flow0", 900000, AT(1)), 900000);
        check_int(flow_engine_restore_meter(NULL, "x", &(FlowMeterState) {}, AT(0)), -EINVAL);
        check_int(flow_engine_restore_meter(e0, "", &(FlowMeterState) {}, AT(0)), -EINVAL);
}

/* A board reset in the middle of a flow: its ticks so far are the meter's carry until the flow is
 * a drink; a restarted core makes a flow of a restored carry at once. */
static void test_reset_carry(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_meter_update(e, "k.flow0", 100, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "k.flow0", 500, AT(1)), 400);
        rec_reset(&r);
        check_int(flow_engine_controller_reset(e, "k"), 0);
        check_states(&r, "k.flow0=0+400 ");
        check_int(flow_engine_meter_update(e, "k.flow0", 30, AT(2)), 30);
        check_int(flow_ticks(e, "k.flow0"), 430);
        check_int(flow_engine_stop_flow(e, "k.flow0", AT(3)), 1);
        check_states(&r, "k.flow0=30+0(drink) ");

        Rec r2;
        _cleanup_(flow_engine_freep) FlowEngine *e2 = engine_new(&r2, NULL);
        check_int(flow_engine_restore_meter(e2, "k.flow0", &(FlowMeterState) { .accounted = 0, .carry = 400 },
                                            AT(0)),
                  0);
        check(log_has(&r2, "I:Meter k.flow0: 400 ticks of a flow lost by the last run are a flow again"));
        check_seq(&r2, "U:active:400:-");
        check_int(flow_ticks(e2, "k.flow0"), 400);
        check_int(meter_state(e2, "k.flow0").carry, 400);
        check_int(flow_engine_meter_update(e2, "k.flow0", 30, AT(1)), 30);
        check_int(flow_ticks(e2, "k.flow0"), 430);
        check_int(run_until(e2, SEC(11)), 1);
        check_int(r2.n_drinks, 1);
        check_int(r2.drinks[0].ticks, 430);
        check_int(meter_state(e2, "k.flow0").carry, 0);
}

/* An earlier run saw the board's counters start at 0: its meters not seen yet count from 0 (with
 * the restart limit), its restored meters keep their state whatever the order of the calls. */
static void test_counts_from_zero(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_controller_counts_from_zero(e, "k"), 0);
        check_int(flow_engine_restore_meter(e, "k.flow0", &(FlowMeterState) { .accounted = 700 }, AT(0)), 0);
        check_states(&r, "");
        check_int(meter_state(e, "k.flow0").accounted, 700);
        check_int(flow_engine_meter_update(e, "k.flow0", 701, AT(1)), 1);
        /* Unseen: from 0, and past max_tick_delta (poured while the core was down). */
        check_int(flow_engine_meter_update(e, "k.flow1", 1135, AT(2)), 1135);
        check_states(&r, "k.flow1=0+0 ");
        check_int(flow_engine_meter_update(e, "j.flow1", 1135, AT(3)), 0);      /* another board */
        check_int(flow_engine_controller_counts_from_zero(e, ""), -EINVAL);
}

/* A producer that reconnected may have missed readings: one reading per meter of its board is
 * allowed max_restart_delta. */
static void test_controller_resync(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_meter_update(e, "k.flow0", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "other.flow0", 0, AT(0)), 0);
        check_int(flow_engine_controller_resync(e, "k"), 0);
        check_int(flow_engine_meter_update(e, "other.flow0", 4000, AT(1)), 0);     /* not resynced */
        check_int(flow_engine_meter_update(e, "k.flow0", 4000, AT(2)), 4000);
        check_int(flow_engine_meter_update(e, "k.flow0", 9000, AT(3)), 0);         /* once only */
        check_int(flow_engine_controller_resync(e, ""), -EINVAL);

        /* The reading re-sent on reconnecting repeats the last one; the gap ends with the next. */
        check_int(flow_engine_controller_resync(e, "k"), 0);
        check_int(flow_engine_meter_update(e, "k.flow0", 9000, AT(4)), 0);
        check_int(flow_engine_meter_update(e, "k.flow0", 12000, AT(5)), 3000);
        check_int(flow_engine_meter_update(e, "k.flow0", 15000, AT(6)), 0);
}

/* ================= 14.1: pycore flow tests ================= */

static void test_flow_add_ticks(void) {
        FlowEngineConfig c;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowInfo fi;

        config_init(&c);
        c.first_flow_id = 123;
        e = engine_new(&r, &c);
        check_int(flow_engine_meter_update(e, "flow0", 0, AT(0)), 0);
        check_int(flow_engine_start_flow(e, "flow0", AT(0)), 1);
        check_int(flow_engine_get_flow(e, "flow0", &fi), 0);
        check_int(fi.flow_id, 123);
        check_int(fi.max_idle_usec, SEC(10));
        check_int(fi.ticks, 0);
        check_int(flow_engine_meter_update(e, "flow0", 100, AT(SEC(1))), 100);
        check_int(flow_ticks(e, "flow0"), 100);
}

static void test_flow_get_update_event(void) {
        FlowEngineConfig c;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        char buf[TIME_RFC3339_MAX];

        config_init(&c);
        c.first_flow_id = 123;
        e = engine_new(&r, &c);
        check_int(flow_engine_meter_update(e, "flow0", 0, AT(0)), 0);
        check_int(flow_engine_start_flow(e, "flow0", AT(0)), 1);
        /* No deadline processing in between, as in pycore's test. */
        check_int(flow_engine_meter_update(e, "flow0", 10, AT(SEC(20))), 10);
        check_seq(&r, "U:active:0:- | U:active:10:-");
        check_int(r.last_update.flow_id, 123);
        check_streq(r.last_update_meter, "flow0");
        check_streq(r.last_update_user, "");
        check(r.last_update.state == FLOW_STATE_ACTIVE);
        check_int(r.last_update.ticks, 10);
        check_int(r.last_update.start_realtime, WALL0);
        check_int(r.last_update.last_activity_realtime, WALL0 + SEC(20));
        check_int(time_format_rfc3339(r.last_update.start_realtime, buf), 0);
        check_streq(buf, "2026-11-26T12:00:00Z");
        check_int(time_format_rfc3339(r.last_update.last_activity_realtime, buf), 0);
        check_streq(buf, "2026-11-26T12:00:20Z");
}

/* ================= 14.1: pycore tap tests ================= */

static void test_tap_equals_and_methods(void) {
        FlowTapInfo ti;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "tap", "tap", 100.0, "relay"), FLOW_TAP_ADDED);
        /* equal to an identical tap */
        check_int(flow_engine_set_tap(e, "tap", "tap", 100.0, "relay"), FLOW_TAP_UNCHANGED);
        /* unequal when the name differs */
        check_int(flow_engine_set_tap(e, "tap", "other", 100.0, "relay"), FLOW_TAP_UPDATED);
        check_int(flow_engine_get_tap(e, "tap", &ti), 0);
        check_streq(ti.name, "other");
        check_streq(ti.relay_name, "relay");
        check_double(ti.ml_per_tick, 100.0);
        /* 1 tick = 100.0 mL */
        check_int(flow_engine_meter_update(e, "tap", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "tap", 1, AT(1)), 1);
        check_double(r.last_update.volume_ml, 100.0);
        check(r.last_update.volume_known);
}

static void test_tap_registry(void) {
        FlowTapInfo ti;
        FlowInfo fi;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "a", NULL, 0.0, NULL), -ERANGE);
        check_int(flow_engine_set_tap(e, "a", NULL, -1.0, NULL), -ERANGE);
        check_int(flow_engine_set_tap(e, "a", NULL, NAN, NULL), -ERANGE);
        check_int(flow_engine_set_tap(e, "a", NULL, INFINITY, NULL), -ERANGE);
        check_int(flow_engine_set_tap(e, "a", NULL, 1e308, NULL), -ERANGE);      /* volumes would overflow */
        check_int(flow_engine_set_tap(e, "a", NULL, 0.0099, NULL), -ERANGE);
        check_int(flow_engine_set_tap(e, "", NULL, 1.0, NULL), -EINVAL);
        check_int(flow_engine_n_taps(e), 0);

        check_int(flow_engine_set_tap(e, "a", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, "b", "Guest", 2.0, "kb.relay1"), FLOW_TAP_ADDED);
        check_int(flow_engine_n_taps(e), 2);
        check_int(flow_engine_tap_at(e, 0, &ti), 0);
        check_streq(ti.meter_name, "a");
        check_streq(ti.name, "a");                     /* defaults to the meter name */
        check_streq(ti.relay_name, "");
        check(!ti.auto_created);
        check_int(flow_engine_tap_at(e, 1, &ti), 0);
        check_streq(ti.name, "Guest");
        check_int(flow_engine_tap_at(e, 2, &ti), -ENOENT);
        check_int(flow_engine_get_tap(e, "A", &ti), -ENOENT);   /* exact, case-sensitive */

        /* Volume follows the current calibration; after removal the flow keeps the last one. */
        check_int(flow_engine_meter_update(e, "a", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "a", 10, AT(1)), 10);
        check_double(r.last_update.volume_ml, 10.0);
        check_int(flow_engine_set_tap(e, "a", NULL, 3.0, NULL), FLOW_TAP_UPDATED);
        check_int(flow_engine_get_flow(e, "a", &fi), 0);
        check_double(fi.volume_ml, 30.0);
        check_int(flow_engine_remove_tap(e, "a", AT(1)), 0);
        check_int(flow_engine_remove_tap(e, "a", AT(1)), -ENOENT);
        check_int(flow_engine_n_taps(e), 1);
        check_int(flow_engine_meter_update(e, "a", 20, AT(2)), 10);
        check(r.last_update.volume_known);
        check_double(r.last_update.volume_ml, 60.0);
        check_int(flow_engine_get_tap(e, "a", &ti), -ENOENT);

        /* A meter that never had a tap: volume null; a tap added mid-flow makes it known. */
        check_int(flow_engine_meter_update(e, "c", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "c", 5, AT(1)), 5);
        check(!r.last_update.volume_known);
        check_int(flow_engine_set_tap(e, "c", NULL, 0.5, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_get_flow(e, "c", &fi), 0);
        check(fi.volume_known);
        check_double(fi.volume_ml, 2.5);
        check_int(flow_engine_get_tap(e, "c", &ti), 0);
        check(ti.has_flow);
        check_int(ti.flow_id, fi.flow_id);
        check_int(ti.total_ticks, 5);
}

/* ================= 14.1: pycore manager tests ================= */

static void test_manager_basic_meter_use(void) {
        FlowEngineConfig c = config_with_max(1000);
        FlowTapInfo ti;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);

        check_int(flow_engine_set_tap(e, "flow0", NULL, 1000.0 / 2200.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_get_tap(e, "flow_unknown", &ti), -ENOENT);
        check_int(flow_engine_meter_update(e, "flow0", 2000, AT(0)), 0);
        check(!has_flow(e, "flow0"));                  /* pycore created one here */
        check_int(flow_engine_meter_update(e, "flow0", 2100, AT(1)), 100);
        check(has_flow(e, "flow0"));
        check_int(flow_ticks(e, "flow0"), 100);
        check_int(flow_engine_meter_update(e, "flow0", 2100 + 1000 + 100, AT(2)), 0);
        check_int(flow_ticks(e, "flow0"), 100);
        check_int(meter_last(e, "flow0"), 3200);
        check_int(flow_engine_get_tap(e, "flow0", &ti), 0);
        check_int(ti.total_ticks, 100);
}

static void test_manager_overflow_handling(void) {
        FlowEngineConfig c = config_with_max(1000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);
        uint64_t id;

        check_int(flow_engine_set_tap(e, "flow0", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "flow0", UINT32_MAX - 99, AT(0)), 0);
        check(!has_flow(e, "flow0"));
        check_int(flow_engine_meter_update(e, "flow0", UINT32_MAX - 49, AT(1)), 50);
        id = flow_id(e, "flow0");
        check_int(flow_ticks(e, "flow0"), 50);
        check_int(flow_engine_meter_update(e, "flow0", 10, AT(2)), 60);
        check_int(flow_ticks(e, "flow0"), 110);
        check_int(flow_id(e, "flow0"), id);
        check_int(flow_engine_n_flows(e), 1);
}

static void test_manager_no_overflow(void) {
        FlowEngineConfig c = config_with_max(1000);
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);
        uint64_t id;

        check_int(flow_engine_set_tap(e, "flow0", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "flow0", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "flow0", 100, AT(1)), 100);
        id = flow_id(e, "flow0");
        check_int(flow_ticks(e, "flow0"), 100);
        check_int(flow_engine_meter_update(e, "flow0", 10, AT(2)), 10);
        check_int(flow_ticks(e, "flow0"), 110);
        check_int(flow_engine_meter_update(e, "flow0", 20, AT(3)), 10);
        check_int(flow_ticks(e, "flow0"), 120);
        check_int(flow_id(e, "flow0"), id);
}

static void test_manager_activity_monitoring(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "flow0", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_start_flow(e, "flow0", AT(0)), 1);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(10));
        check_int(flow_engine_process_deadlines(e, AT(0)), 0);
        check_int(flow_engine_process_deadlines(e, AT(9999000)), 0);     /* t = 9.999 s */
        check_int(flow_engine_process_deadlines(e, AT(SEC(10) - 1)), 0); /* one usec early */
        check(has_flow(e, "flow0"));
        check_int(flow_engine_process_deadlines(e, AT(SEC(10))), 1);
        check(!has_flow(e, "flow0"));
        check_int(flow_engine_next_deadline(e), (int64_t) FLOW_USEC_INFINITY);
        check_int(flow_engine_process_deadlines(e, AT(SEC(1000))), 0);
        check_int(flow_engine_n_flows(e), 0);
}

/* ================= 14.1: kegbot tests (engine side) ================= */

static void test_tap_sync_normal(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "testflow0", NULL, 0.5, "testrelay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, "testflow1", NULL, 2.0, "testrelay1"), FLOW_TAP_ADDED);
        check_int(flow_engine_n_taps(e), 2);
}

static void test_pour(void) {
        FlowInfo fi;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "testflow0", NULL, 0.5, "testrelay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, "testflow1", NULL, 2.0, "testrelay1"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "testflow0", 100, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "testflow0", 200, AT(SEC(1))), 100);
        check_int(flow_engine_n_flows(e), 1);
        check_int(flow_engine_flow_at(e, 0, &fi), 0);
        check_int(flow_engine_flow_at(e, 1, &fi), -ENOENT);
        check_int(flow_engine_get_flow(e, "testflow0", &fi), 0);
        check_int(fi.ticks, 100);
        check_double(fi.volume_ml, 50.0);
        check(fi.relay_name == NULL);          /* anonymous: no relay */
        check_seq(&r, "U:active:100:-");
}

/* ================= 14.1: pycore v1.0 tests ================= */

static void test_simple_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "kegboard.flow0", NULL, 1000.0 / 2200.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_start_flow(e, "kegboard.flow0", AT(0)), 1);
        for (uint32_t v = 1000, i = 0; v <= 3200; v += 100, i++)
                check(flow_engine_meter_update(e, "kegboard.flow0", v, AT(SEC(i) / 10)) >= 0);
        check_int(flow_engine_stop_flow(e, "kegboard.flow0", AT(SEC(5))), 1);
        check_int(r.n_drinks, 1);
        check_int(r.drinks[0].ticks, 2200);
        check_streq(r.drinks[0].user, "");
        check_double(r.drinks[0].volume_ml, 1000.0);
        check_int(flow_engine_n_flows(e), 0);
}

static void test_authenticated_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "kegboard.flow0", NULL, 1.0, "kegboard.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 100, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 200, AT(SEC(1))), 100);
        check_streq(r.last_update_user, "");
        swipe(e, FLOW_DEVICE_RFID, "aaaa", "kegboard.flow0", "user1", SEC(2));
        check_streq(r.last_update_user, "user1");
        check_int(flow_ticks(e, "kegboard.flow0"), 100);
        swipe(e, FLOW_DEVICE_RFID, "bbbb", "kegboard.flow0", "user2", SEC(3));
        check_streq(r.last_update_user, "user2");
        check_int(flow_ticks(e, "kegboard.flow0"), 0);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 300, AT(SEC(4))), 100);
        check_int(flow_engine_stop_flow(e, "kegboard.flow0", AT(SEC(5))), 1);
        check_int(r.n_drinks, 2);
        check_streq(r.drinks[0].user, "user1");
        check_int(r.drinks[0].ticks, 100);
        check_streq(r.drinks[1].user, "user2");
        check_int(r.drinks[1].ticks, 100);
        check(r.drinks[1].flow_id > r.drinks[0].flow_id);
}

static void test_idle_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "kegboard.flow0", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_start_flow(e, "kegboard.flow0", AT(0)), 1);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 0, AT(SEC(1))), 0);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 100, AT(SEC(2))), 100);
        check_int(flow_engine_process_deadlines(e, AT(SEC(600))), 1);
        check_int(flow_engine_n_flows(e), 0);
        check_int(r.n_drinks, 1);
        check_int(r.drinks[0].ticks, 100);
}

static void test_token_debounce(void) {
        FlowEngineConfig c;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowInfo fi;

        config_init(&c);
        c.idle_onewire_usec = SEC(2);
        e = engine_new(&r, &c);
        check_int(flow_engine_set_tap(e, "kegboard.flow0", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        swipe(e, FLOW_DEVICE_ONEWIRE, "1234", "kegboard.flow0", "user1", 0);
        check_int(flow_engine_get_flow(e, "kegboard.flow0", &fi), 0);
        check_streq(fi.username, "user1");
        check_int(fi.max_idle_usec, SEC(2));
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "1234", "kegboard.flow0", AT(SEC(1))), 1);
        check(!has_flow(e, "kegboard.flow0"));  /* captive: ends at once */
}

/* ================= 14.2: flows ================= */

/* 14.2 #4 */
static void test_start_flow_keeps_owned_flow(void) {
        FlowInfo fi;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "relay"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        swipe(e, FLOW_DEVICE_ONEWIRE, "ab", "m", "alice", SEC(1));
        check_int(flow_engine_meter_update(e, "m", 50, AT(SEC(2))), 50);
        rec_reset(&r);
        check_int(flow_engine_start_flow(e, "m", AT(SEC(3))), 0);
        check(log_has(&r, "already active on m, keeping it"));
        check_seq(&r, "");
        check_int(flow_engine_get_flow(e, "m", &fi), 0);
        check_streq(fi.username, "alice");
        check_int(fi.ticks, 50);
        /* An anonymous flow too is kept, and start_flow does not refresh its activity. */
        check_int(flow_engine_stop_flow(e, "m", AT(SEC(4))), 1);
        check_int(flow_engine_start_flow(e, "m", AT(SEC(5))), 1);
        check_int(flow_engine_start_flow(e, "m", AT(SEC(8))), 0);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(15));
}

/* 14.2 #5 */
static void test_idle_deadlines_by_device(void) {
        static const struct {
                const char *device;
                uint64_t idle;
        } cases[] = {
                { FLOW_DEVICE_ONEWIRE, SEC(120) },
                { FLOW_DEVICE_RFID, SEC(20) },
                { "contrib.nfc", SEC(10) },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Rec r;
                _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

                check_int(flow_engine_set_tap(e, "m", NULL, 1.0, NULL), FLOW_TAP_ADDED);
                swipe(e, cases[i].device, "tok", "m", "bob", 0);
                check_int(flow_engine_next_deadline(e), MONO0 + cases[i].idle);
                check_int(flow_engine_process_deadlines(e, AT(cases[i].idle - 1)), 0);
                check(has_flow(e, "m"));
                check_int(flow_engine_process_deadlines(e, AT(cases[i].idle)), 1);
                check(!has_flow(e, "m"));
                check_int(flow_engine_idle_for_device(e, cases[i].device), cases[i].idle);
        }

        /* Binding adopts the device's limit, counted from the bind. */
        {
                Rec r;
                _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);
                FlowInfo fi;

                check_int(flow_engine_set_tap(e, "m", NULL, 1.0, NULL), FLOW_TAP_ADDED);
                check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
                check_int(flow_engine_meter_update(e, "m", 10, AT(SEC(1))), 10);
                check_int(flow_engine_next_deadline(e), MONO0 + SEC(11));
                swipe(e, FLOW_DEVICE_ONEWIRE, "k", "m", "bob", SEC(5));
                check_int(flow_engine_get_flow(e, "m", &fi), 0);
                check_int(fi.max_idle_usec, SEC(120));
                check_int(flow_engine_next_deadline(e), MONO0 + SEC(125));
                check_int(flow_engine_process_deadlines(e, AT(SEC(124))), 0);
                check_int(flow_engine_process_deadlines(e, AT(SEC(125))), 1);
                check_int(r.n_drinks, 1);
                check_streq(r.drinks[0].user, "bob");
        }
}

/* kegboard-event-protocol.md section 6.8: a grant's flows idle by its echoed token device. */
static void test_grant_idle_by_device(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);
        FlowInfo fi;

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap_grant(e, "nope", true, FLOW_DEVICE_RFID, AT(0)), -ENOENT);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);

        /* Adoption: the anonymous flow in progress takes the grant's limit, from its last activity. */
        check_int(flow_engine_meter_update(e, "m", 10, AT(SEC(1))), 10);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(11));
        check_int(flow_engine_set_tap_grant(e, "m", true, FLOW_DEVICE_RFID, AT(SEC(2))), 0);
        check_int(flow_engine_get_flow(e, "m", &fi), 0);
        check_int(fi.max_idle_usec, SEC(20));
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(21));
        check_int(flow_engine_process_deadlines(e, AT(SEC(20))), 0);
        check_int(flow_engine_process_deadlines(e, AT(SEC(21))), 1);
        check_int(r.n_drinks, 1);

        /* A flow started by a tick while the grant covers the tap: an iButton's 120 s. */
        check_int(flow_engine_set_tap_grant(e, "m", true, FLOW_DEVICE_ONEWIRE, AT(SEC(30))), 0);
        check_int(flow_engine_meter_update(e, "m", 20, AT(SEC(31))), 10);
        check_int(flow_engine_get_flow(e, "m", &fi), 0);
        check_int(fi.max_idle_usec, SEC(120));
        check(!fi.username);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(151));
        check_int(flow_engine_stop_flow(e, "m", AT(SEC(40))), 1);

        /* No echo: 10 s; the grant gone: anonymous flows again. */
        check_int(flow_engine_set_tap_grant(e, "m", true, NULL, AT(SEC(41))), 0);
        check_int(flow_engine_start_flow(e, "m", AT(SEC(42))), 1);
        check_int(flow_engine_get_flow(e, "m", &fi), 0);
        check_int(fi.max_idle_usec, SEC(10));
        check_int(flow_engine_stop_flow(e, "m", AT(SEC(43))), 1);
        check_int(flow_engine_set_tap_grant(e, "m", true, FLOW_DEVICE_ONEWIRE, AT(SEC(44))), 0);
        check_int(flow_engine_set_tap_grant(e, "m", false, NULL, AT(SEC(45))), 0);
        check_int(flow_engine_meter_update(e, "m", 30, AT(SEC(46))), 10);
        check_int(flow_engine_get_flow(e, "m", &fi), 0);
        check_int(fi.max_idle_usec, SEC(10));

        /* A flow a user owns keeps its own limit. */
        check_int(flow_engine_stop_flow(e, "m", AT(SEC(47))), 1);
        swipe(e, FLOW_DEVICE_RFID, "tok", "m", "bob", SEC(48));
        check_int(flow_engine_set_tap_grant(e, "m", true, FLOW_DEVICE_ONEWIRE, AT(SEC(49))), 0);
        check_int(flow_engine_get_flow(e, "m", &fi), 0);
        check_int(fi.max_idle_usec, SEC(20));
}

/* 14.2 #6 */
static void test_flow_id_sequence(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_start_flow(e, "a", AT(0)), 1);
        check_int(flow_id(e, "a"), FIRST_ID);
        check_int(flow_engine_start_flow(e, "b", AT(0)), 1);
        check_int(flow_id(e, "b"), FIRST_ID + 1);
        check_int(flow_engine_stop_flow(e, "a", AT(1)), 1);
        check_int(flow_engine_start_flow(e, "a", AT(2)), 1);
        check_int(flow_id(e, "a"), FIRST_ID + 2);
        check(log_has(&r, "I:Starting flow flow_id=0x6b081f42 meter=a user=None"));
}

static void test_multiple_deadlines_in_order(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_start_flow(e, "b", AT(SEC(3))), 1);
        check_int(flow_engine_start_flow(e, "a", AT(SEC(1))), 1);
        check_int(flow_engine_start_flow(e, "c", AT(SEC(2))), 1);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(11));
        rec_reset(&r);
        check_int(flow_engine_process_deadlines(e, AT(SEC(12))), 2);
        /* "a" (t=11) ends before "c" (t=12); "b" (t=13) stays. */
        check_seq(&r, "U:idle:0:- | N:noticks | U:completed:0:- | U:idle:0:- | N:noticks | U:completed:0:-");
        check(has_flow(e, "b"));
        check(!has_flow(e, "a") && !has_flow(e, "c"));
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(13));
}

/* 14.2 #7: the order of every operation of section 6.5 */
static void test_order_new_flow_from_tick(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "relay"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        check_seq(&r, "");
        check_int(flow_engine_meter_update(e, "m", 42, AT(1)), 42);
        check_seq(&r, "U:active:42:-");       /* carries the first delta; no relay */
        check_int(flow_engine_meter_update(e, "m", 50, AT(2)), 8);
        check_seq(&r, "U:active:50:-");
}

static void test_order_new_flow_from_start_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "relay"), FLOW_TAP_ADDED);
        check_int(flow_engine_start_flow(e, "m", AT(0)), 1);
        check_seq(&r, "U:active:0:-");
        check_int(flow_engine_start_flow(e, "m", AT(1)), 0);
        check_seq(&r, "");
}

static void test_order_new_flow_from_token(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, "n", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "t1", "m", AT(0)), 1);
        check_seq(&r, "");                    /* nothing until the lookup answers */
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_ONEWIRE, "t1", "alice", AT(0)), 1);
        check_seq(&r, "A:alice | U:active:0:alice | R:kb.relay0:on");
        /* A tap without relay gets no relay event. */
        swipe(e, FLOW_DEVICE_ONEWIRE, "t2", "n", "bob", 0);
        check_seq(&r, "A:bob | U:active:0:bob");
}

static void test_order_bind(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "m", 30, AT(1)), 30);
        rec_reset(&r);
        swipe(e, FLOW_DEVICE_RFID, "t1", "m", "alice", 2);
        /* FlowUpdate(username) then the relay at once (pycore waited for a heartbeat). */
        check_seq(&r, "A:alice | U:active:30:alice | R:kb.relay0:on");
        /* Same user's token again: nothing on the wire. */
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_RFID, "t1", "m", AT(3)), 1);
        swipe(e, FLOW_DEVICE_RFID, "t1", "m", "alice", 4);
        check_seq(&r, "A:alice");
        check_int(flow_ticks(e, "m"), 30);
}

static void test_order_idle(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        swipe(e, "contrib.x", "t", "m", "alice", 0);
        check_int(flow_engine_meter_update(e, "m", 100, AT(SEC(1) / 2)), 100);
        check_int(run_until(e, SEC(10) + 500000 - 1), 10);     /* re-asserts at 1..10 s */
        check_int(r.n_reassert, 10);
        rec_reset(&r);
        check_int(flow_engine_process_deadlines(e, AT(SEC(10) + 500000)), 1);
        check_seq(&r, "U:idle:100:alice | R:kb.relay0:off | D:100:alice | U:completed:100:alice");
        check(log_has(&r, "I:Flow has become too idle, ending: flow_id=0x6b081f40"));
        check(log_has(&r, "I:Flow completed: flow_id=0x6b081f40"));
        check_int(r.completed_with_flow_still_listed, 0);
}

static void test_order_stop(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        swipe(e, FLOW_DEVICE_RFID, "t", "m", "alice", 0);
        check_int(flow_engine_meter_update(e, "m", 100, AT(1)), 100);
        rec_reset(&r);
        check_int(flow_engine_stop_flow(e, "m", AT(2)), 1);
        check_seq(&r, "R:kb.relay0:off | D:100:alice | U:completed:100:alice");
        check(!log_has(&r, "too idle"));
}

static void test_order_user_switch_no_flicker(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        swipe(e, FLOW_DEVICE_RFID, "t1", "m", "alice", 0);
        check_int(flow_engine_meter_update(e, "m", 100, AT(1)), 100);
        rec_reset(&r);
        swipe(e, FLOW_DEVICE_RFID, "t2", "m", "bob", 2);
        /* Stop (drink) then the new flow; no "disabled" between two enables of the same relay. */
        check_seq(&r, "A:bob | D:100:alice | U:completed:100:alice | U:active:0:bob | R:kb.relay0:on");
        check_int(r.n_relay_off, 0);
        check(log_has(&r, "User switch on m: alice -> bob"));
}

static void test_order_user_switch_relay_changed(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        /* The old flow holds the relay it captured; the tap now names another: close the old one. */
        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        swipe(e, FLOW_DEVICE_RFID, "t1", "m", "alice", 0);
        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay1"), FLOW_TAP_UPDATED);
        rec_reset(&r);
        swipe(e, FLOW_DEVICE_RFID, "t2", "m", "bob", 2);
        check_seq(&r, "A:bob | R:kb.relay0:off | N:noticks | U:completed:0:alice | U:active:0:bob | R:kb.relay1:on");
}

static void test_captive_token_replaced(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        swipe(e, FLOW_DEVICE_ONEWIRE, "k1", "m", "alice", 0);
        check_int(flow_engine_meter_update(e, "m", 100, AT(1)), 100);
        rec_reset(&r);
        /* Another captive key: the old record is removed first, which ends alice's flow at once. */
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "k2", "m", AT(2)), 1);
        check_seq(&r, "R:kb.relay0:off | D:100:alice | U:completed:100:alice");
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_ONEWIRE, "k2", "bob", AT(3)), 1);
        check_seq(&r, "A:bob | U:active:0:bob | R:kb.relay0:on");
}

/* 14.2 #8 */
static void test_duration_first_to_last_tick(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        swipe(e, FLOW_DEVICE_ONEWIRE, "k", "m", "alice", SEC(1));
        /* first tick 60 s after the swipe, last 8.9 s after the first */
        check_int(flow_engine_meter_update(e, "m", 50, AT(SEC(61))), 50);
        check_int(flow_engine_meter_update(e, "m", 100, AT(SEC(65))), 50);
        check_int(flow_engine_meter_update(e, "m", 150, AT(SEC(69) + 900000)), 50);
        check_int(flow_engine_stop_flow(e, "m", AT(SEC(80))), 1);
        check_int(r.n_drinks, 1);
        check_int(r.drinks[0].duration_sec, 8);
        check_int(r.drinks[0].start_realtime, WALL0 + SEC(61));
        check_int(r.drinks[0].pour_realtime, WALL0 + SEC(69) + 900000);
        check_int(r.drinks[0].pour_boottime, BOOT0 + SEC(69) + 900000);
        check_int(r.drinks[0].flow_id, FIRST_ID);
        check_streq(r.drinks[0].meter, "m");
        check_int(r.drinks[0].ticks, 150);
        check_double(r.drinks[0].volume_ml, 150.0);
}

/* 14.2 #9 */
static void test_drink_minimum_volume(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "a", NULL, 0.999, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, "b", NULL, 0.5, NULL), FLOW_TAP_ADDED);

        /* 0 ticks */
        check_int(flow_engine_start_flow(e, "a", AT(0)), 1);
        rec_reset(&r);
        check_int(flow_engine_stop_flow(e, "a", AT(1)), 1);
        check_seq(&r, "N:noticks | U:completed:0:-");
        check(log_has(&r, "I:Not recording flow 0x6b081f40: no ticks"));

        /* 9.99 mL */
        check_int(flow_engine_meter_update(e, "a", 0, AT(2)), 0);
        check_int(flow_engine_meter_update(e, "a", 10, AT(3)), 10);
        rec_reset(&r);
        check_int(flow_engine_stop_flow(e, "a", AT(4)), 1);
        check_seq(&r, "N:min | U:completed:10:-");
        check(log_has(&r, "I:Not recording flow 0x6b081f41: 9.99 mL is below the minimum of 10 mL"));

        /* exactly 10 mL */
        check_int(flow_engine_meter_update(e, "b", 0, AT(5)), 0);
        check_int(flow_engine_meter_update(e, "b", 20, AT(6)), 20);
        rec_reset(&r);
        check_int(flow_engine_stop_flow(e, "b", AT(7)), 1);
        check_seq(&r, "D:20:- | U:completed:20:-");
        check_double(r.drinks[0].volume_ml, 10.0);

        /* unknown tap (server mode): recorded with volume null, even for 1 tick */
        check_int(flow_engine_meter_update(e, "nometer", 0, AT(8)), 0);
        check_int(flow_engine_meter_update(e, "nometer", 1, AT(9)), 1);
        check_int(flow_engine_stop_flow(e, "nometer", AT(10)), 1);
        check_int(r.n_drinks, 2);
        check(!r.drinks[1].volume_known);
        check_int(r.drinks[1].ticks, 1);
}

static void test_min_volume_config(void) {
        FlowEngineConfig c;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;

        config_init(&c);
        c.settings.min_volume_ml = 0;
        e = engine_new(&r, &c);
        check_int(flow_engine_set_tap(e, "a", NULL, 0.01, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "a", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "a", 1, AT(1)), 1);
        check_int(flow_engine_stop_flow(e, "a", AT(2)), 1);
        check_int(r.n_drinks, 1);
        c.settings.min_volume_ml = -1;
        check_int(flow_engine_new(&(FlowEngine *) { NULL }, &c, NULL, NULL), -EINVAL);
}

static void test_stop_flow_without_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_stop_flow(e, "m", AT(0)), 0);
        check_seq(&r, "");
        check(log_has(&r, "W:Stop flow request for m, which has no active flow"));
}

static void test_start_stop_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 500, AT(0)), 0);
        check_int(flow_engine_start_flow(e, "m", AT(SEC(1))), 1);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(11));
        check_int(flow_engine_meter_update(e, "m", 520, AT(SEC(5))), 20);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(15));
        check_int(flow_engine_stop_flow(e, "m", AT(SEC(6))), 1);
        /* anonymous: never a relay */
        check_seq(&r, "U:active:0:- | U:active:20:- | D:20:- | U:completed:20:-");
        check_int(r.n_relay_on + r.n_relay_off + r.n_reassert, 0);
        check_int(flow_engine_next_deadline(e), (int64_t) FLOW_USEC_INFINITY);
        check_int(flow_engine_stop_flow(e, "m", AT(SEC(7))), 0);
}

static void test_shutdown(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "a", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, "b", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "a", 0, AT(0)), 0);
        swipe(e, FLOW_DEVICE_ONEWIRE, "k", "a", "alice", 0);
        check_int(flow_engine_meter_update(e, "a", 300, AT(1)), 300);
        check_int(flow_engine_start_flow(e, "b", AT(2)), 1);
        rec_reset(&r);
        check_int(flow_engine_shutdown(e, AT(3)), 2);
        check_seq(&r, "R:kb.relay0:off | D:300:alice | U:completed:300:alice | N:noticks | U:completed:0:-");
        check_int(flow_engine_n_flows(e), 0);
        check_int(flow_engine_next_deadline(e), (int64_t) FLOW_USEC_INFINITY);
        check_int(flow_engine_shutdown(e, AT(4)), 0);
}

/* ================= 14.2: auth ================= */

/* 14.2 #10 */
static void test_token_added_twice_no_split(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        swipe(e, FLOW_DEVICE_ONEWIRE, "k", "m", "alice", 0);
        check_int(flow_engine_meter_update(e, "m", 100, AT(1)), 100);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(2)), 0);   /* no lookup */
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "K", "m", AT(2)), 0);   /* normalised */
        check_int(flow_engine_meter_update(e, "m", 200, AT(3)), 100);
        check_int(flow_engine_stop_flow(e, "m", AT(4)), 1);
        check_int(r.n_drinks, 1);
        check_int(r.drinks[0].ticks, 200);
}

/* 14.2 #11 */
static void test_captive_removal_only_owned_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);

        /* A captive token whose lookup failed never joined the anonymous flow: removal leaves it. */
        check_int(flow_engine_meter_update(e, "m", 50, AT(1)), 50);
        swipe(e, FLOW_DEVICE_ONEWIRE, "k", "m", NULL, 2);
        check_streq(r.last_update_user, "");
        rec_reset(&r);
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(3)), 1);
        check_seq(&r, "");
        check(has_flow(e, "m"));

        /* Removing a token that is not the active record: "already removed". */
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(3)), 0);
        check(log_has(&r, "D:Token has already been removed"));
        check(has_flow(e, "m"));

        /* Bound through the token: removal ends it with the drink. */
        swipe(e, FLOW_DEVICE_ONEWIRE, "k", "m", "alice", 4);
        rec_reset(&r);
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(5)), 1);
        check_seq(&r, "R:kb.relay0:off | D:50:alice | U:completed:50:alice");
        check(!has_flow(e, "m"));

        /* A different record (same value, other meter addressing) does not match. */
        swipe(e, FLOW_DEVICE_ONEWIRE, "k", "m", "alice", 6);
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "k", FLOW_ALL_TAPS, AT(7)), 0);
        check(has_flow(e, "m"));
}

static void test_rfid_removal_keeps_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        swipe(e, FLOW_DEVICE_RFID, "0415AB23CD", "m", "alice", 0);
        rec_reset(&r);
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_RFID, "0415ab23cd", "m", AT(1)), 1);
        check_seq(&r, "");
        check(has_flow(e, "m"));
        check_int(run_until(e, SEC(20) - 1), 19);       /* re-asserts only */
        check_int(r.n_reassert, 19);
        check(has_flow(e, "m"));
        rec_reset(&r);
        /* the re-assert due at 20 s coincides with the idle deadline: the flow just ends */
        check_int(flow_engine_process_deadlines(e, AT(SEC(20))), 1);
        check_seq(&r, "U:idle:0:alice | R:kb.relay0:off | N:noticks | U:completed:0:alice");
}

/* 14.2 #12 */
static void test_all_taps_token(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "t0", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, "t1", NULL, 1.0, "kb.relay1"), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, "t2", NULL, 1.0, "kb.relay2"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "t1", 0, AT(0)), 0);
        /* one lookup for three taps */
        check_int(flow_engine_token_added(e, FLOW_DEVICE_RFID, "cafe", FLOW_ALL_TAPS, AT(0)), 3);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_RFID, "cafe", "alice", AT(0)), 3);
        check_int(flow_engine_n_flows(e), 3);
        check_int(r.n_relay_on, 3);
        for (size_t i = 0; i < 3; i++) {
                FlowTapInfo ti;
                check_int(flow_engine_tap_at(e, i, &ti), 0);
                check(ti.relay_enabled);
                check(ti.has_flow);
        }
        check_int(flow_engine_meter_update(e, "t1", 100, AT(SEC(5))), 100);
        /* 3 x 19 re-asserts, t0 and t2 idle out at 20 s, t1's re-assert at 20 s */
        check_int(run_until(e, SEC(20)), 3 * 19 + 2 + 1);
        check_int(r.n_reassert, 3 * 19 + 1);
        check_int(flow_engine_n_flows(e), 1);
        check_int(r.n_relay_off, 2);
        check_int(r.n_drinks, 0);
        check_int(run_until(e, SEC(25)), 4 + 1);
        check_int(r.n_drinks, 1);
        check_streq(r.drinks[0].meter, "t1");
        /* Empty and NULL meter names also mean all taps, and equal the __all_taps__ record. */
        check_int(flow_engine_token_added(e, FLOW_DEVICE_RFID, "cafe", "", AT(SEC(26))), 0);
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_RFID, "cafe", NULL, AT(SEC(26))), 3);
        /* With no taps an all-taps token reaches nothing. */
        for (const char *m = "t0"; m; m = streq(m, "t0") ? "t1" : streq(m, "t1") ? "t2" : NULL)
                check_int(flow_engine_remove_tap(e, m, AT(SEC(26))), 0);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_RFID, "cafe", NULL, AT(SEC(27))), 0);
}

/* 14.2 #14 */
static void test_negative_lookup_no_flow(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(0)), 1);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_ONEWIRE, "k", NULL, AT(0)), 1);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_ONEWIRE, "k", "late", AT(0)), 0); /* no longer pending */
        check_seq(&r, "");
        check_int(flow_engine_n_flows(e), 0);
        check_int(r.n_relay_on, 0);
        /* "" is treated as no user. */
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "j", "m", AT(1)), 1);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_ONEWIRE, "j", "", AT(1)), 1);
        check_int(flow_engine_n_flows(e), 0);
}

/* 14.2 #15 */
static void test_token_removed_before_lookup(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(0)), 1);
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(1)), 1);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_ONEWIRE, "k", "alice", AT(2)), 0);
        check_int(flow_engine_n_flows(e), 0);
        check_seq(&r, "");

        /* test_flow's added, removed, added: the last one's lookup applies. */
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(3)), 1);
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(3)), 1);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "k", "m", AT(3)), 1);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_ONEWIRE, "k", "alice", AT(4)), 1);
        check_int(flow_engine_n_flows(e), 1);

        /* A removed tap drops its record. */
        check_int(flow_engine_set_tap(e, "n", NULL, 1.0, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_RFID, "z", "n", AT(5)), 1);
        check_int(flow_engine_remove_tap(e, "n", AT(5)), 0);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_RFID, "z", "bob", AT(6)), 0);
        check(!has_flow(e, "n"));
}

static void test_token_unknown_tap(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "k", "nope", AT(0)), 0);
        check(log_has(&r, "W:Token event for unknown tap nope"));
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "k", "nope", AT(0)), 0);
        check_int(flow_engine_token_added(e, "", "k", "nope", AT(0)), -EINVAL);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, NULL, "nope", AT(0)), -EINVAL);
        check_int(flow_engine_n_flows(e), 0);
}

static void test_token_normalize(void) {
        _cleanup_(freep) char *a = flow_token_normalize(FLOW_DEVICE_ONEWIRE, "AbCdEF01");
        _cleanup_(freep) char *b = flow_token_normalize(FLOW_DEVICE_RFID, "0415AB23CD");
        _cleanup_(freep) char *c = flow_token_normalize("contrib.x", "MiXeD");

        check_streq(a, "abcdef01");
        check_streq(b, "0415ab23cd");
        check_streq(c, "MiXeD");
        check(flow_auth_device_is_captive(FLOW_DEVICE_ONEWIRE));
        check(flow_auth_device_is_captive("contrib.x"));
        check(!flow_auth_device_is_captive(FLOW_DEVICE_RFID));

        /* Case matters for other devices. */
        {
                Rec r;
                _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);
                check_int(flow_engine_set_tap(e, "m", NULL, 1.0, NULL), FLOW_TAP_ADDED);
                check_int(flow_engine_token_added(e, "contrib.x", "Tok", "m", AT(0)), 1);
                check_int(flow_engine_token_resolved(e, "contrib.x", "tok", "alice", AT(0)), 0);
                check_int(flow_engine_token_resolved(e, "contrib.x", "Tok", "alice", AT(0)), 1);
                check(has_flow(e, "m"));
        }
}

/* ================= 14.2: relays ================= */

/* 14.2 #16 */
static void test_relay_reassert(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);
        FlowTapInfo ti;
        uint64_t t;
        int n = 0;

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_get_tap(e, "m", &ti), 0);
        check(!ti.relay_enabled);
        swipe(e, FLOW_DEVICE_ONEWIRE, "k", "m", "alice", 0);
        check_int(flow_engine_get_tap(e, "m", &ti), 0);
        check(ti.relay_enabled);
        check_int(r.n_relay_on, 1);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(1));

        /* Drive the loop as the core does: one timer at the next deadline, for 5 s. */
        while ((t = flow_engine_next_deadline(e)) <= MONO0 + SEC(5)) {
                check_int(flow_engine_process_deadlines(e, AT(t - MONO0)), 1);
                n++;
        }
        check_int(n, 5);
        check_int(r.n_reassert, 5);

        /* A late loop re-asserts once, not a burst. */
        check_int(flow_engine_process_deadlines(e, AT(SEC(8) + 500000)), 1);
        check_int(r.n_reassert, 6);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(9) + 500000);

        check_int(flow_engine_stop_flow(e, "m", AT(SEC(9))), 1);
        check_int(r.n_relay_off, 1);
        check_int(flow_engine_get_tap(e, "m", &ti), 0);
        check(!ti.relay_enabled);
        check_int(flow_engine_next_deadline(e), (int64_t) FLOW_USEC_INFINITY);
}

static void test_relay_reassert_disabled(void) {
        FlowEngineConfig c;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;

        config_init(&c);
        c.relay_reassert_usec = 0;
        e = engine_new(&r, &c);
        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        swipe(e, FLOW_DEVICE_ONEWIRE, "k", "m", "alice", 0);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(120));
        check_int(flow_engine_process_deadlines(e, AT(SEC(120))), 1);
        check_int(r.n_reassert, 0);
        check_int(r.n_relay_on, 1);
        check_int(r.n_relay_off, 1);
}

static void test_relay_never_for_anonymous(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_start_flow(e, "m", AT(0)), 1);
        check_int(flow_engine_meter_update(e, "m", 0, AT(1)), 0);
        check_int(flow_engine_meter_update(e, "m", 100, AT(2)), 100);
        check_int(flow_engine_process_deadlines(e, AT(SEC(30))), 1);
        check_int(r.n_relay_on + r.n_relay_off + r.n_reassert, 0);
}

/* ================= standalone policy, engine hygiene ================= */

static void test_standalone_first_sight(void) {
        FlowEngineConfig c;
        FlowTapInfo ti;
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;

        config_init(&c);
        c.create_unknown_taps = true;
        e = engine_new(&r, &c);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 0, AT(0)), 0);
        check_seq(&r, "T:kegboard.flow0");
        check(log_has(&r, "I:Creating tap kegboard.flow0 with default calibration 0.454545 mL/tick"));
        check_int(flow_engine_get_tap(e, "kegboard.flow0", &ti), 0);
        check(ti.auto_created);
        check_streq(ti.name, "kegboard.flow0");
        check_streq(ti.relay_name, "");
        check_double(ti.ml_per_tick, 1.0 / 2.2);
        check_int(flow_engine_meter_update(e, "kegboard.flow0", 22, AT(1)), 22);
        check_double(r.last_update.volume_ml, 10.0);
        /* FlowRequest creates one too; a configured tap is not auto-created. */
        check_int(flow_engine_start_flow(e, "kegboard.flow1", AT(2)), 1);
        check_int(flow_engine_get_tap(e, "kegboard.flow1", &ti), 0);
        check_int(flow_engine_set_tap(e, "kegboard.flow1", NULL, 1.0 / 2.2, NULL), FLOW_TAP_UPDATED);
        check_int(flow_engine_get_tap(e, "kegboard.flow1", &ti), 0);
        check(!ti.auto_created);

        /* Server mode: no taps on first sight. */
        {
                Rec r2;
                _cleanup_(flow_engine_freep) FlowEngine *e2 = engine_new(&r2, NULL);
                check_int(flow_engine_meter_update(e2, "kegboard.flow0", 0, AT(0)), 0);
                check_int(flow_engine_n_taps(e2), 0);
        }
}

static void test_handler_reentrancy(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_set_tap(e, "m", NULL, 1.0, "kb.relay0"), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "m", 0, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "m", 50, AT(1)), 50);
        r.probe = true;
        check_int(flow_engine_stop_flow(e, "m", AT(2)), 1);
        r.probe = false;
        check(r.probe_calls > 0);
        check_int(r.probe_busy, 3 * r.probe_calls);
        check_int(r.completed_with_flow_still_listed, 0);
        check_int(r.n_drinks, 1);
        check_int(flow_engine_n_taps(e), 1);   /* the probe's set_tap did nothing */
}

/* The meter table is bounded (1024); junk names cannot keep a real meter out: a meter that never
 * counted a tick is forgotten after 5 s, an idle one after 10 min; meters with a flow or a
 * configured tap never. The attack pass filled it with junk and then ignored every real meter. */
static void meter_limit_in_mode(FlowGhostMode mode) {
        Rec r;
        FlowEngineConfig c;
        config_init(&c);
        c.settings.ghost_filter = mode;
        c.first_flow_id = FIRST_ID;
        c.create_unknown_taps = true;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);
        char name[32];

        /* A configured tap and a pouring meter among the junk. */
        check_int(flow_engine_set_tap(e, "real.flow0", "Main", 0.5, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_meter_update(e, "real.flow0", 10, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "busy.flow0", 10, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "busy.flow0", 20, AT(0)), 10);
        for (int i = 0; i < FLOW_ENGINE_MAX_METERS - 2; i++) {
                snprintf(name, sizeof name, "junk.m%d", i);
                check_int(flow_engine_meter_update(e, name, 1, AT(SEC(1) + (uint64_t) i)), 0);
        }
        check_int(flow_engine_n_taps(e), FLOW_ENGINE_MAX_METERS);
        rec_reset(&r);

        /* Everything was seen within 5 s: the new name is refused, with a warning naming the limit. */
        check_int(flow_engine_meter_update(e, "new.flow0", 1, AT(SEC(2))), -ENOSPC);
        check_int(flow_engine_start_flow(e, "new.flow0", AT(SEC(2))), -ENOSPC);
        check(log_has(&r, "W:Meter table full (1024 meters, all in use or seen lately); ignoring meter new.flow0"));
        check_int(flow_engine_meter_update(e, "junk.m0", 2, AT(SEC(2))), 1);      /* known names still work */
        check_int(flow_engine_meter_update(e, "junk.m0", 2, AT(SEC(3))), 0);

        /* 5 s later: the oldest never-used junk meter (not junk.m0, which counted a tick) makes room,
         * and its first-sight tap goes with it. */
        rec_reset(&r);
        check_int(flow_engine_meter_update(e, "new.flow0", 100, AT(SEC(8))), 0);
        check(log_has(&r, "W:Meter table full (1024 meters): forgetting meter junk.m1 (never counted a tick, last seen 6 s ago) for new.flow0"));
        check(strstr(r.seq, "X:junk.m1 | M:junk.m1") != NULL);
        check_int(flow_engine_get_meter(e, "junk.m1", &(FlowMeterInfo) {}), -ENOENT);
        check_int(flow_engine_get_tap(e, "junk.m1", &(FlowTapInfo) {}), -ENOENT);
        check_int(flow_engine_meter_update(e, "new.flow0", 150, AT(SEC(9))), 50);  /* counted */

        /* A full table never forgets the configured tap's meter, the pouring meter, or a used meter
         * seen within 10 min: with every never-used junk meter gone, the next new name is refused. */
        for (int i = 0; i < FLOW_ENGINE_MAX_METERS; i++) {
                snprintf(name, sizeof name, "more.m%d", i);
                (void) flow_engine_meter_update(e, name, 1, AT(SEC(20)));
        }
        check_int(flow_engine_get_meter(e, "real.flow0", &(FlowMeterInfo) {}), 0);
        check_int(flow_engine_get_tap(e, "real.flow0", &(FlowTapInfo) {}), 0);
        check_int(flow_engine_get_meter(e, "junk.m0", &(FlowMeterInfo) {}), 0);
        check_int(flow_engine_get_meter(e, "new.flow0", &(FlowMeterInfo) {}), 0);
        check_int(flow_engine_get_flow(e, "busy.flow0", &(FlowInfo) {}), 0);

        /* After 10 min without a reading, the used meters may go too (not the pouring one: its flow
         * ended long ago by the idle timer; process the deadlines first). */
        check(flow_engine_process_deadlines(e, AT(SEC(700))) >= 1);
        rec_reset(&r);
        check_int(flow_engine_meter_update(e, "late.flow0", 1, AT(SEC(700))), 0);
        check(log_has(&r, "W:Meter table full (1024 meters): forgetting meter"));
        check_int(flow_engine_get_meter(e, "real.flow0", &(FlowMeterInfo) {}), 0);   /* configured tap */
}

static void test_meter_limit(void) {
        meter_limit_in_mode(FLOW_GHOST_OFF);
        /* Log mode's shadow keeps a table of its own; it forgets what the engine forgets. */
        meter_limit_in_mode(FLOW_GHOST_LOG);
}

/* A meter known to be real (its board is connected) may push out fresh junk at once. */
static void test_make_room(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);
        char name[32];

        check_int(flow_engine_make_room(e, "board.flow0", AT(0)), 0);          /* room enough */
        check_int(flow_engine_meter_update(e, "used.m", 1, AT(0)), 0);
        check_int(flow_engine_meter_update(e, "used.m", 2, AT(0)), 1);
        for (int i = 0; i < FLOW_ENGINE_MAX_METERS - 1; i++) {
                snprintf(name, sizeof name, "junk.m%d", i);
                check_int(flow_engine_meter_update(e, name, 1, AT(SEC(1) + (uint64_t) i)), 0);
        }
        check_int(flow_engine_make_room(e, "junk.m5", AT(SEC(1))), 0);           /* already known */
        check_int(flow_engine_meter_update(e, "board.flow0", 1, AT(SEC(2))), -ENOSPC);
        rec_reset(&r);
        check_int(flow_engine_make_room(e, "board.flow0", AT(SEC(2))), 1);
        check(log_has(&r, "W:Meter table full (1024 meters): forgetting meter junk.m0 (never counted a tick, last seen 1 s ago) for board.flow0"));
        check_int(flow_engine_meter_update(e, "board.flow0", 10, AT(SEC(2))), 0);
        check_int(flow_engine_meter_update(e, "board.flow0", 30, AT(SEC(2))), 20);
        /* Used meters still need to be idle: with only those left, nothing can go. */
        for (int i = 1; i < FLOW_ENGINE_MAX_METERS - 1; i++) {
                snprintf(name, sizeof name, "junk.m%d", i);
                check_int(flow_engine_meter_update(e, name, 2, AT(SEC(3))), 1);
        }
        check_int(flow_engine_process_deadlines(e, AT(SEC(60))) >= 1, 1);
        check_int(flow_engine_make_room(e, "board.flow1", AT(SEC(60))), -ENOSPC);
}

/* A meter resumed from meters.json waits for its next reading, which may bring ticks nobody counted
 * yet (poured while the core was down): a full table never forgets it, although it has counted no
 * tick in this run and is the oldest. What the table forgets, the caller is told (meters.json). */
static void test_meter_limit_keeps_resumed(void) {
        Rec r;
        FlowEngineConfig c;
        config_init(&c);
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, &c);
        char name[32];

        check_int(flow_engine_restore_meter(e, "kept.flow0", &(FlowMeterState) { .accounted = 100 }, AT(0)), 0);
        for (int i = 0; i < FLOW_ENGINE_MAX_METERS - 1; i++) {
                snprintf(name, sizeof name, "junk.m%d", i);
                check_int(flow_engine_meter_update(e, name, 1, AT(SEC(1))), 0);
        }
        rec_reset(&r);
        check_int(flow_engine_meter_update(e, "new.flow0", 1, AT(SEC(10))), 0);
        check(strstr(r.seq, "M:junk.m0") != NULL);
        check(strstr(r.seq, "M:kept.flow0") == NULL);
        check_int(flow_engine_get_meter(e, "kept.flow0", &(FlowMeterInfo) {}), 0);
        /* Its reading still counts from where the last run left it. */
        check_int(flow_engine_meter_update(e, "kept.flow0", 150, AT(SEC(11))), 50);
}

static void test_invalid_arguments(void) {
        Rec r;
        _cleanup_(flow_engine_freep) FlowEngine *e = engine_new(&r, NULL);

        check_int(flow_engine_meter_update(e, "", 1, AT(0)), -EINVAL);
        check_int(flow_engine_meter_update(e, NULL, 1, AT(0)), -EINVAL);
        check_int(flow_engine_meter_update(e, "m", 1, NULL), -EINVAL);
        check_int(flow_engine_start_flow(e, "", AT(0)), -EINVAL);
        check_int(flow_engine_stop_flow(NULL, "m", AT(0)), -EINVAL);
        check_int(flow_engine_get_flow(e, "m", &(FlowInfo) {}), -ENOENT);
        check_int(flow_engine_get_flow_by_id(e, 1, &(FlowInfo) {}), -ENOENT);
        check_int(flow_engine_new(NULL, NULL, NULL, NULL), -EINVAL);
        check(flow_engine_free(NULL) == NULL);
        check_streq(flow_state_to_string(FLOW_STATE_IDLE), "idle");
        check_streq(flow_state_to_string(FLOW_STATE_COMPLETED), "completed");

        /* No handler at all is fine. */
        {
                _cleanup_(flow_engine_freep) FlowEngine *q = NULL;
                check_int(flow_engine_new(&q, NULL, NULL, NULL), 0);
                check_int(flow_engine_start_flow(q, "m", AT(0)), 1);
                check_int(flow_engine_shutdown(q, AT(1)), 1);
        }
}

int main(void) {
        test_run(test_meter_basic_use);
        test_run(test_meter_basic_use2);
        test_run(test_meter_overflow_handling);
        test_run(test_meter_no_overflow);
        test_run(test_meter_baseline_first_reading);
        test_run(test_meter_reset_to_lower_value);
        test_run(test_meter_max_delta_guard);
        test_run(test_meter_no_limit);
        test_run(test_zero_delta_does_not_keep_flow_alive);
        test_run(test_board_reset_notice);
        test_run(test_restart_jump_is_baseline);
        test_run(test_meter_state_events);
        test_run(test_restore_meter);
        test_run(test_reset_carry);
        test_run(test_controller_resync);
        test_run(test_counts_from_zero);
        test_run(test_flow_add_ticks);
        test_run(test_flow_get_update_event);
        test_run(test_tap_equals_and_methods);
        test_run(test_tap_registry);
        test_run(test_manager_basic_meter_use);
        test_run(test_manager_overflow_handling);
        test_run(test_manager_no_overflow);
        test_run(test_manager_activity_monitoring);
        test_run(test_tap_sync_normal);
        test_run(test_pour);
        test_run(test_simple_flow);
        test_run(test_authenticated_flow);
        test_run(test_idle_flow);
        test_run(test_token_debounce);
        test_run(test_start_flow_keeps_owned_flow);
        test_run(test_idle_deadlines_by_device);
        test_run(test_grant_idle_by_device);
        test_run(test_flow_id_sequence);
        test_run(test_multiple_deadlines_in_order);
        test_run(test_order_new_flow_from_tick);
        test_run(test_order_new_flow_from_start_flow);
        test_run(test_order_new_flow_from_token);
        test_run(test_order_bind);
        test_run(test_order_idle);
        test_run(test_order_stop);
        test_run(test_order_user_switch_no_flicker);
        test_run(test_order_user_switch_relay_changed);
        test_run(test_captive_token_replaced);
        test_run(test_duration_first_to_last_tick);
        test_run(test_drink_minimum_volume);
        test_run(test_min_volume_config);
        test_run(test_stop_flow_without_flow);
        test_run(test_start_stop_flow);
        test_run(test_shutdown);
        test_run(test_token_added_twice_no_split);
        test_run(test_captive_removal_only_owned_flow);
        test_run(test_rfid_removal_keeps_flow);
        test_run(test_all_taps_token);
        test_run(test_negative_lookup_no_flow);
        test_run(test_token_removed_before_lookup);
        test_run(test_token_unknown_tap);
        test_run(test_token_normalize);
        test_run(test_relay_reassert);
        test_run(test_relay_reassert_disabled);
        test_run(test_relay_never_for_anonymous);
        test_run(test_standalone_first_sight);
        test_run(test_handler_reentrancy);
        test_run(test_meter_limit);
        test_run(test_meter_limit_keeps_resumed);
        test_run(test_make_room);
        test_run(test_invalid_arguments);

        return test_result();
}
