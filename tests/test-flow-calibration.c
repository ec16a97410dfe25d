/* The flow engine's calibration pour (calibration.md section 2), driven with synthetic time: what a
 * start refuses and in which order, counting with the ghost filter suspended in every mode, the relay
 * held open and re-asserted, the deadline (deferred while a result is stored), the other ends, flows
 * and tokens refused on the tap while other taps go on as usual, board resets and rejected readings,
 * and the filter starting over after a finish. */

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

#include "flow.h"
#include "ghost-trace.h"
#include "test-util.h"

#define MONO0 (UINT64_C(5000) * USEC_PER_SEC)
#define WALL0 (UINT64_C(1795694400) * USEC_PER_SEC)
#define BOOT0 (UINT64_C(7000) * USEC_PER_SEC)
#define SEC(x) ((uint64_t) ((x) * 1e6 + 0.5))
#define AT(us) (&(FlowTime) { .monotonic = MONO0 + (us), .realtime = WALL0 + (us), .boottime = BOOT0 + (us) })
#define TIMEOUT SEC(600)

#define M0 "kegboard.flow0"
#define M1 "kegboard.flow1"
#define RELAY0 "kegboard.relay0"
#define RELAY1 "kegboard.relay1"

#define check_double(a, b) check(fabs((double) (a) - (double) (b)) < 1e-9)

typedef struct Rec {
        char logs[65536];
        char seq[16384];
        int n_updates, n_drinks, n_ghosts, n_tap_created;
        int n_relay_on[2], n_relay_off[2], n_reassert[2];
        int n_cal_started, n_cal_ticks, n_cal_ended;
        int n_meter_states;
        FlowCalibrationEnd last_reason;
        uint64_t last_cal_ticks;
        double last_old, last_new;
        uint64_t drink_ticks[8];
        double drink_volume[8];
        char drink_meter[8][32];
        uint64_t ghost_ticks;
        FlowGhostRule last_ghost_rule;
} Rec;

static int relay_index(const char *relay) {
        return streq(relay, RELAY1) ? 1 : 0;
}

static void handler(FlowEngine *e, const FlowEvent *ev, void *userdata) {
        Rec *r = userdata;

        switch (ev->type) {
        case FLOW_EVENT_LOG:
                test_appendf(r->logs, sizeof r->logs, "%c:%s\n",
                           ev->log.level == LOG_WARNING ? 'W' : ev->log.level == LOG_INFO ? 'I' : 'D', ev->log.message);
                break;
        case FLOW_EVENT_FLOW_UPDATE:
                r->n_updates++;
                test_appendf(r->seq, sizeof r->seq, "U:%s:%s ", ev->meter_name, flow_state_to_string(ev->flow->state));
                break;
        case FLOW_EVENT_DRINK:
                if (r->n_drinks < 8) {
                        r->drink_ticks[r->n_drinks] = ev->drink->ticks;
                        r->drink_volume[r->n_drinks] = ev->drink->volume_ml;
                        snprintf(r->drink_meter[r->n_drinks], sizeof r->drink_meter[0], "%s", ev->drink->meter_name);
                }
                r->n_drinks++;
                break;
        case FLOW_EVENT_RELAY:
                if (ev->relay.reassert)
                        r->n_reassert[relay_index(ev->relay.relay_name)]++;
                else if (ev->relay.enabled)
                        r->n_relay_on[relay_index(ev->relay.relay_name)]++;
                else
                        r->n_relay_off[relay_index(ev->relay.relay_name)]++;
                if (!ev->relay.reassert)
                        test_appendf(r->seq, sizeof r->seq, "R:%s:%s ", ev->relay.relay_name,
                                   ev->relay.enabled ? "on" : "off");
                break;
        case FLOW_EVENT_TAP_CREATED:
                r->n_tap_created++;
                break;
        case FLOW_EVENT_GHOST:
                r->n_ghosts++;
                r->ghost_ticks += ev->ghost.ticks;
                r->last_ghost_rule = ev->ghost.rule;
                test_appendf(r->seq, sizeof r->seq, "G:%s:%s ", ev->meter_name, flow_ghost_rule_to_string(ev->ghost.rule));
                break;
        case FLOW_EVENT_CALIBRATION:
                switch (ev->calibration.change) {
                case FLOW_CALIBRATION_STARTED:
                        r->n_cal_started++;
                        test_appendf(r->seq, sizeof r->seq, "C:%s:start ", ev->meter_name);
                        break;
                case FLOW_CALIBRATION_TICKS:
                        r->n_cal_ticks++;
                        r->last_cal_ticks = ev->calibration.ticks;
                        break;
                case FLOW_CALIBRATION_ENDED:
                        r->n_cal_ended++;
                        r->last_reason = ev->calibration.reason;
                        r->last_cal_ticks = ev->calibration.ticks;
                        r->last_old = ev->calibration.old_ml_per_tick;
                        r->last_new = ev->calibration.new_ml_per_tick;
                        test_appendf(r->seq, sizeof r->seq, "C:%s:%s ", ev->meter_name,
                                   flow_calibration_end_to_string(ev->calibration.reason));
                        break;
                }
                break;
        case FLOW_EVENT_METER_STATE:
                r->n_meter_states++;
                break;
        default:
                break;
        }
}

static FlowEngine *engine_new(Rec *r, FlowGhostMode mode, bool standalone) {
        FlowEngineConfig c;
        FlowEngine *e = NULL;

        flow_engine_config_init(&c);
        c.first_flow_id = 1;
        c.settings.ghost_filter = mode;
        c.create_unknown_taps = standalone;
        *r = (Rec) {};
        check_int(flow_engine_new(&e, &c, handler, r), 0);
        return e;
}

/* Reports of 'per' ticks every 100 ms on 'meter' from *reading, 'n' of them, starting at t. */
static uint64_t pour(FlowEngine *e, const char *meter, uint32_t *reading, uint64_t t, unsigned n, uint32_t per) {
        for (unsigned i = 0; i < n; i++) {
                *reading += per;
                t += SEC(0.1);
                check(flow_engine_meter_update(e, meter, *reading, AT(t)) >= 0);
        }
        return t;
}

static void advance(FlowEngine *e, uint64_t from, uint64_t to) {
        for (uint64_t t = from; t <= to;) {
                uint64_t d = flow_engine_next_deadline(e);
                if (d == FLOW_USEC_INFINITY || d > MONO0 + to)
                        break;
                t = d - MONO0;
                (void) flow_engine_process_deadlines(e, AT(t));
        }
}

/* ---- the cases ---- */

static void test_start_refusals(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowCalibrationInfo ci;
        FlowTapInfo ti;
        Rec r;

        /* Server mode: the server's taps only. */
        e = engine_new(&r, FLOW_GHOST_ON, false);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(0)), -ENOENT);
        check_int(flow_engine_set_tap(e, M0, "Main Tap", 0.185, RELAY0), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, M1, "Guest Tap", 0.5, NULL), FLOW_TAP_ADDED);

        /* Quarantined (on mode) comes before everything else but the tap. */
        check_int(flow_engine_restore_quarantine(e, M1, WALL0, 2, 300), 0);
        check_int(flow_engine_start_calibration(e, M1, TIMEOUT, true, AT(0)), -EPERM);
        check_int(flow_engine_clear_quarantine(e, M1, AT(0)), 1);

        /* A flow in the way: active, then held after its valve closed. */
        check_int(flow_engine_start_flow(e, M1, AT(SEC(1))), 1);
        check_int(flow_engine_start_calibration(e, M1, TIMEOUT, true, AT(SEC(1))), -EBUSY);
        check_int(flow_engine_stop_flow(e, M1, AT(SEC(1))), 1);
        check_int(flow_engine_token_added(e, FLOW_DEVICE_ONEWIRE, "aa", M0, AT(SEC(2))), 1);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_ONEWIRE, "aa", "alice", AT(SEC(2))), 1);
        check_int(flow_engine_token_removed(e, FLOW_DEVICE_ONEWIRE, "aa", M0, AT(SEC(3))), 1);
        check_int(flow_engine_get_flow(e, M0, &(FlowInfo) {}), 0);       /* held: the valve closed */
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(SEC(3))), -EBUSY);
        advance(e, SEC(3), SEC(10));
        check_int(flow_engine_get_flow(e, M0, &(FlowInfo) {}), -ENOENT);

        /* Now it starts; a second start is refused. */
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(SEC(10))), 0);
        check_int(r.n_cal_started, 1);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(SEC(11))), -EALREADY);
        check_int(flow_engine_get_calibration(e, M0, &ci), 0);
        check_int(ci.ticks, 0);
        check_int(ci.start_realtime, WALL0 + SEC(10));
        check_int(ci.deadline_realtime, WALL0 + SEC(610));
        check_int(ci.deadline, MONO0 + SEC(610));
        check_streq(ci.relay_name, RELAY0);
        check_int(flow_engine_get_tap(e, M0, &ti), 0);
        check(ti.calibrating);
        check(ti.relay_enabled);
        check_int(flow_engine_get_calibration(e, M1, &ci), -ENOENT);
        e = flow_engine_free(e);

        /* Standalone: a meter never seen gets its first-sight tap, as a MeterUpdate would create it. */
        e = engine_new(&r, FLOW_GHOST_ON, true);
        check_int(flow_engine_start_calibration(e, "kegboard.flow3", TIMEOUT, true, AT(0)), 0);
        check_int(r.n_tap_created, 1);
        check_int(flow_engine_get_tap(e, "kegboard.flow3", &ti), 0);
        check(ti.auto_created);
        check_double(ti.ml_per_tick, 1.0 / 2.2);
        check_int(r.n_relay_on[0] + r.n_relay_on[1], 0);        /* no relay: nothing to open */
        check_int(flow_engine_first_sight(e, "kegboard.flow4", AT(0)), 1);
        check_int(flow_engine_first_sight(e, "kegboard.flow4", AT(0)), 0);
}

/* Counting with the filter on or in log mode: no flow, no ghost, every counted tick is the
 * calibration's. */
static void count_in_mode(FlowGhostMode mode) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowCalibrationInfo ci;
        FlowMeterInfo mi;
        FlowTapInfo ti;
        uint32_t reading = 1000;
        uint64_t t;
        Rec r;

        e = engine_new(&r, mode, true);
        check_int(flow_engine_set_tap(e, M0, "Main Tap", 0.185, NULL), FLOW_TAP_ADDED);
        check(flow_engine_meter_update(e, M0, reading, AT(0)) == 0);
        /* A little ghost trickle before: its episode is reported when the calibration starts. */
        t = pour(e, M0, &reading, 0, 5, 2);
        if (mode == FLOW_GHOST_LOG) {
                /* Log mode records what off records: the trickle is a flow, in the way of a start. */
                check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(t)), -EBUSY);
                check_int(flow_engine_stop_flow(e, M0, AT(t)), 1);
                check_int(r.n_ghosts, 0);
        }
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(t)), 0);
        check_int(r.n_ghosts, 1);
        check_int(r.ghost_ticks, 10);

        r.n_updates = 0;
        r.n_ghosts = 0;
        /* 2703 ticks, a fast pour: 27 reports of 100 and one of 3. */
        t = pour(e, M0, &reading, t, 27, 100);
        reading += 3;
        t += SEC(0.1);
        check_int(flow_engine_meter_update(e, M0, reading, AT(t)), 3);
        advance(e, t, t + SEC(30));
        t += SEC(30);
        check_int(r.n_updates, 0);
        check_int(r.n_drinks, 0);
        check_int(r.n_ghosts, 0);
        check_int(flow_engine_get_calibration(e, M0, &ci), 0);
        check_int(ci.ticks, 2703);
        check_int(r.last_cal_ticks, 2703);
        check_int(r.n_cal_ticks, 28);
        check_int(flow_engine_get_tap(e, M0, &ti), 0);
        check_int(ti.ghost_ticks, 10);
        check_int(flow_engine_get_meter(e, M0, &mi), 0);
        check_int(mi.total, 2713);      /* TotalTicks = ghost + calibration */

        /* Finished with a new value applied first. */
        check_int(flow_engine_set_tap_calibration(e, M0, 0.18498, true), 0);
        check_int(flow_engine_end_calibration(e, M0, FLOW_CALIBRATION_FINISHED, 0.185, AT(t)), 2703);
        check_int(r.n_cal_ended, 1);
        check_int(r.last_reason, FLOW_CALIBRATION_FINISHED);
        check_double(r.last_old, 0.185);
        check_double(r.last_new, 0.18498);
        check_int(flow_engine_get_calibration(e, M0, &ci), -ENOENT);
        check_int(flow_engine_end_calibration(e, M0, FLOW_CALIBRATION_CANCELLED, 0, AT(t)), -ENOENT);

        /* The next pour of 1000 ticks is a drink of 184.98 mL, whole. */
        r.n_updates = 0;
        t = pour(e, M0, &reading, t, 10, 100);
        check_int(flow_engine_stop_flow(e, M0, AT(t)), 1);
        check_int(r.n_drinks, 1);
        check_int(r.drink_ticks[0], 1000);
        check_double(r.drink_volume[0], 184.98);
}

static void test_counting_suspends_the_filter(void) {
        count_in_mode(FLOW_GHOST_ON);
        count_in_mode(FLOW_GHOST_LOG);
}

static void test_counting_filter_off(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowCalibrationInfo ci;
        uint32_t reading = 0;
        uint64_t t;
        Rec r;

        /* With the filter off, the same: no flow while calibrating. */
        e = engine_new(&r, FLOW_GHOST_OFF, true);
        check_int(flow_engine_set_tap(e, M0, NULL, 0.185, NULL), FLOW_TAP_ADDED);
        check(flow_engine_meter_update(e, M0, reading, AT(0)) == 0);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(0)), 0);
        t = pour(e, M0, &reading, 0, 30, 50);
        check_int(r.n_updates, 0);
        check_int(flow_engine_get_calibration(e, M0, &ci), 0);
        check_int(ci.ticks, 1500);
        check_int(flow_engine_end_calibration(e, M0, FLOW_CALIBRATION_CANCELLED, 0, AT(t)), 1500);
        check_int(r.last_reason, FLOW_CALIBRATION_CANCELLED);
        check_double(r.last_old, 0.185);
        check_double(r.last_new, 0.185);
}

static void test_relay(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        Rec r;

        e = engine_new(&r, FLOW_GHOST_ON, true);
        check_int(flow_engine_set_tap(e, M0, NULL, 0.185, RELAY0), FLOW_TAP_ADDED);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(0)), 0);
        check_int(r.n_relay_on[0], 1);                  /* at once */
        advance(e, 0, SEC(5));
        check_int(r.n_reassert[0], 5);                  /* then every 1 s */
        check_int(r.n_relay_off[0], 0);
        check_int(flow_engine_end_calibration(e, M0, FLOW_CALIBRATION_CANCELLED, 0, AT(SEC(5.5))), 0);
        check_int(r.n_relay_off[0], 1);
        advance(e, SEC(5.5), SEC(20));
        check_int(r.n_reassert[0], 5);
        check_streq(r.seq, "R:kegboard.relay0:on C:kegboard.flow0:start R:kegboard.relay0:off "
                           "C:kegboard.flow0:cancelled ");

        /* A valve that follows something else is not switched. */
        r = (Rec) {};
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, false, AT(SEC(30))), 0);
        advance(e, SEC(30), SEC(40));
        check_int(r.n_relay_on[0] + r.n_reassert[0], 0);
        check_int(flow_engine_end_calibration(e, M0, FLOW_CALIBRATION_CANCELLED, 0, AT(SEC(40))), 0);
        check_int(r.n_relay_off[0], 0);

        /* While the calibration holds the valve, G1 sees it open: a pour right after the end is beer. */
        r = (Rec) {};
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(SEC(50))), 0);
        check_int(flow_engine_end_calibration(e, M0, FLOW_CALIBRATION_FINISHED, 0.185, AT(SEC(60))), 0);
        {
                uint32_t reading = 10000;
                uint64_t t;

                check(flow_engine_meter_update(e, M0, reading, AT(SEC(60))) == 0);
                t = pour(e, M0, &reading, SEC(60), 10, 100);      /* within the 3 s grace */
                check_int(flow_engine_stop_flow(e, M0, AT(t)), 1);
                check_int(r.n_drinks, 1);
                check_int(r.drink_ticks[0], 1000);
        }
}

static void test_timeout(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowCalibrationInfo ci;
        Rec r;

        e = engine_new(&r, FLOW_GHOST_ON, true);
        check_int(flow_engine_set_tap(e, M0, NULL, 0.185, RELAY0), FLOW_TAP_ADDED);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(0)), 0);
        advance(e, 0, SEC(599.999));
        check_int(flow_engine_get_calibration(e, M0, &ci), 0);
        check_int(r.n_cal_ended, 0);
        check_int(flow_engine_next_deadline(e), MONO0 + SEC(600));
        (void) flow_engine_process_deadlines(e, AT(SEC(600)));
        check_int(r.n_cal_ended, 1);
        check_int(r.last_reason, FLOW_CALIBRATION_TIMEOUT);
        check_int(r.n_relay_off[0], 1);
        check_int(flow_engine_get_calibration(e, M0, &ci), -ENOENT);
        check_int(r.n_reassert[0], 599);

        /* While a result is stored the deadline waits; once stored (or refused) a passed one ends it. */
        r = (Rec) {};
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(SEC(1000))), 0);
        check_int(flow_engine_calibration_set_storing(e, M0, true), 0);
        check_int(flow_engine_get_calibration(e, M0, &ci), 0);
        check(ci.storing);
        advance(e, SEC(1000), SEC(1605));
        check_int(r.n_cal_ended, 0);
        check_int(flow_engine_calibration_set_storing(e, M0, false), 0);
        check(flow_engine_next_deadline(e) <= MONO0 + SEC(1605));
        (void) flow_engine_process_deadlines(e, AT(SEC(1605)));
        check_int(r.last_reason, FLOW_CALIBRATION_TIMEOUT);
        check_int(flow_engine_calibration_set_storing(e, M0, false), -ENOENT);
}

static void test_flows_and_tokens_refused(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowTapInfo ti;
        Rec r;

        e = engine_new(&r, FLOW_GHOST_ON, false);
        check_int(flow_engine_set_tap(e, M0, "Main Tap", 0.185, RELAY0), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, M1, "Guest Tap", 0.185, RELAY1), FLOW_TAP_ADDED);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(0)), 0);
        r.logs[0] = 0;
        r.seq[0] = 0;

        check_int(flow_engine_start_flow(e, M0, AT(SEC(1))), -EBUSY);
        check(strstr(r.logs, "I:Tap kegboard.flow0 is being calibrated; not starting a flow\n"));
        check_int(r.n_updates, 0);

        /* An all-taps token: flow1 gets its flow and valve, flow0 neither. */
        r.logs[0] = 0;
        check_int(flow_engine_token_added(e, FLOW_DEVICE_RFID, "cafe", FLOW_ALL_TAPS, AT(SEC(2))), 2);
        check_int(flow_engine_token_resolved(e, FLOW_DEVICE_RFID, "cafe", "dave", AT(SEC(2))), 2);
        check(strstr(r.logs, "I:Tap kegboard.flow0 is being calibrated; not starting a flow\n"));
        check_int(flow_engine_get_flow(e, M0, &(FlowInfo) {}), -ENOENT);
        check_int(flow_engine_get_flow(e, M1, &(FlowInfo) {}), 0);
        check_int(r.n_relay_on[1], 1);
        check_int(r.n_relay_on[0], 1);          /* the calibration's own, at its start */
        check_streq(r.seq, "U:kegboard.flow1:active R:kegboard.relay1:on ");
        check_int(flow_engine_get_tap(e, M1, &ti), 0);
        check(ti.relay_enabled);

        /* Set a known value while flow1 pours: its volume follows (not an obstacle). */
        check_int(flow_engine_set_tap_calibration(e, M1, 0.5, true), 0);
}

/* calibration.md section 9 case 22, engine level: while flow0 calibrates, a real pour on flow1 is one
 * drink, and a trickle afterwards is ghost as usual. */
static void test_other_tap_unaffected(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        _cleanup_(ghost_trace_freep) GhostTrace *pour1 = NULL, *trickle = NULL;
        GhostTraceCursor cur;
        FlowMeterInfo mi;
        FlowTapInfo ti;
        uint32_t reading0 = 50000, reading;
        uint64_t at, t_end = 0, ticks0 = 0;
        Rec r;

        e = engine_new(&r, FLOW_GHOST_ON, true);
        check_int(flow_engine_set_tap(e, M0, NULL, 0.185, RELAY0), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, M1, NULL, 0.185, NULL), FLOW_TAP_ADDED);
        check_int(ghost_trace_parse("5:0 16:30", &pour1, NULL), 0);
        check_int(ghost_trace_parse("30:1.5", &trickle, NULL), 0);

        check(flow_engine_meter_update(e, M0, reading0, AT(0)) == 0);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(0)), 0);

        /* R1 on flow1 while flow0 counts 25 ticks every 100 ms. */
        ghost_trace_cursor_init(&cur, pour1, GHOST_TRACE_R0);
        check(flow_engine_meter_update(e, M1, GHOST_TRACE_R0, AT(SEC(1))) == 0);
        while (ghost_trace_next(&cur, &at, &reading) > 0) {
                check(flow_engine_meter_update(e, M1, reading, AT(SEC(1) + at)) >= 0);
                reading0 += 25;
                ticks0 += 25;
                check(flow_engine_meter_update(e, M0, reading0, AT(SEC(1) + at)) >= 0);
                t_end = SEC(1) + at;
        }
        advance(e, t_end, t_end + SEC(30));
        check_int(r.n_drinks, 1);
        check_streq(r.drink_meter[0], M1);
        check_int(r.drink_ticks[0], ghost_trace_cursor_ticks(&cur));
        check(fabs(r.drink_volume[0] - 480) < 480 * 0.15);
        check_int(flow_engine_get_tap(e, M1, &ti), 0);
        check_int(ti.ghost_ticks, 0);

        /* Then a 1.5 mL/s trickle on flow1: ghost (G2), reported as an episode. */
        ghost_trace_cursor_init(&cur, trickle, reading);
        t_end += SEC(30);
        {
                uint64_t base = t_end;
                check(flow_engine_meter_update(e, M1, reading, AT(base)) >= 0);
                while (ghost_trace_next(&cur, &at, &reading) > 0) {
                        check(flow_engine_meter_update(e, M1, reading, AT(base + at)) >= 0);
                        t_end = base + at;
                }
        }
        advance(e, t_end, t_end + SEC(30));
        check_int(r.n_drinks, 1);
        check_int(flow_engine_get_tap(e, M1, &ti), 0);
        check_int(ti.ghost_ticks, ghost_trace_cursor_ticks(&cur));
        check_int(r.last_ghost_rule, FLOW_RULE_G2);

        /* flow0 counted everything and nothing else. */
        check_int(flow_engine_get_tap(e, M0, &ti), 0);
        check_int(ti.ghost_ticks, 0);
        check(ti.calibrating);
        check_int(flow_engine_get_meter(e, M0, &mi), 0);
        check_int(mi.total, ticks0);
        check_int(flow_engine_end_calibration(e, M0, FLOW_CALIBRATION_CANCELLED, 0, AT(t_end + SEC(30))), ticks0);
}

/* An engine with tap M0 (0.185 mL/tick) at reading 5000, calibrating since time 0. */
static FlowEngine *engine_calibrating(Rec *r) {
        FlowEngine *e = engine_new(r, FLOW_GHOST_ON, true);

        check_int(flow_engine_set_tap(e, M0, NULL, 0.185, NULL), FLOW_TAP_ADDED);
        check(flow_engine_meter_update(e, M0, 5000, AT(0)) == 0);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(0)), 0);
        return e;
}

/* Case 23: a board reset notice and a rejected reading during a calibration. */
static void test_reset_and_rejected(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowCalibrationInfo ci;
        Rec r;

        e = engine_calibrating(&r);
        check_int(flow_engine_meter_update(e, M0, 5100, AT(SEC(1))), 100);
        check_int(flow_engine_controller_reset(e, "kegboard"), 0);
        check_int(flow_engine_meter_update(e, M0, 30, AT(SEC(2))), 30);            /* counts from 0 */
        check_int(flow_engine_meter_update(e, M0, 1031, AT(SEC(3))), 0);          /* a jump of 1001: rejected */
        check_int(flow_engine_meter_update(e, M0, 1131, AT(SEC(4))), 100);
        check_int(flow_engine_get_calibration(e, M0, &ci), 0);
        check_int(ci.ticks, 230);
        check(strstr(r.logs, "W:Bad ticks report: meter=kegboard.flow0 last=30 reading=1031; re-baselining\n"));
}

/* Calibration ticks are accounted for (core-behaviour.md section 5): a restarted core does not count
 * them again as a pour or ghost. */
static void test_ticks_accounted(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowMeterInfo mi;
        Rec r;

        e = engine_calibrating(&r);
        check_int(flow_engine_meter_update(e, M0, 5100, AT(SEC(1))), 100);
        check_int(flow_engine_meter_update(e, M0, 7703, AT(SEC(2))), 0);           /* rejected: re-baselined */
        check_int(flow_engine_meter_update(e, M0, 8400, AT(SEC(3))), 697);
        check_int(flow_engine_get_meter(e, M0, &mi), 0);
        check_int(mi.state.accounted, 8400);
        check_int(mi.state.carry, 0);
        check_int(flow_engine_end_calibration(e, M0, FLOW_CALIBRATION_CANCELLED, 0, AT(SEC(4))), 797);
        check_int(flow_engine_get_meter(e, M0, &mi), 0);
        check_int(mi.state.accounted, 8400);
        check_int(r.n_meter_states, 3);        /* the baseline, the rejected report, the end */
}

/* A full meter table (FLOW_ENGINE_MAX_METERS) never forgets a meter being calibrated, although its
 * first-sight tap is the least recently seen: the count would be lost. */
static void test_kept_when_table_full(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        FlowCalibrationInfo ci;
        char name[32];
        Rec r;

        e = engine_new(&r, FLOW_GHOST_OFF, true);
        check(flow_engine_meter_update(e, M0, 5000, AT(0)) == 0);
        check_int(flow_engine_start_calibration(e, M0, SEC(3600), true, AT(0)), 0);
        check_int(flow_engine_meter_update(e, M0, 5300, AT(SEC(2))), 300);
        for (int i = 0; i < FLOW_ENGINE_MAX_METERS - 1; i++) {
                snprintf(name, sizeof name, "junk.m%d", i);
                check(flow_engine_meter_update(e, name, 1, AT(SEC(10))) == 0);
                check(flow_engine_meter_update(e, name, 2, AT(SEC(10))) == 1);
        }
        flow_engine_process_deadlines(e, AT(SEC(700)));
        check_int(flow_engine_make_room(e, "new.flow0", AT(SEC(700))), 1);
        check_int(flow_engine_get_calibration(e, M0, &ci), 0);
        check_int(ci.ticks, 300);
        check_int(flow_engine_meter_update(e, M0, 5400, AT(SEC(701))), 100);
}

/* Cases 24 and 25 at the engine: the tap goes away, the core stops. */
static void test_tap_removed_and_shutdown(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        Rec r;

        e = engine_new(&r, FLOW_GHOST_OFF, false);
        check_int(flow_engine_set_tap(e, M0, NULL, 0.185, RELAY0), FLOW_TAP_ADDED);
        check_int(flow_engine_set_tap(e, M1, NULL, 0.5, NULL), FLOW_TAP_ADDED);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(0)), 0);
        check(flow_engine_meter_update(e, M0, 0, AT(0)) == 0);
        check_int(flow_engine_meter_update(e, M0, 300, AT(SEC(1))), 300);
        check_int(flow_engine_remove_tap(e, M0, AT(SEC(2))), 0);
        check_int(r.last_reason, FLOW_CALIBRATION_TAP_REMOVED);
        check_int(r.last_cal_ticks, 300);
        check_double(r.last_old, 0.185);
        check_double(r.last_new, 0.185);
        check_int(r.n_relay_off[0], 1);

        /* Shutdown: the calibration ends first, then the flows. */
        check_int(flow_engine_set_tap(e, M0, NULL, 0.185, RELAY0), FLOW_TAP_ADDED);
        check_int(flow_engine_start_calibration(e, M0, TIMEOUT, true, AT(SEC(3))), 0);
        check(flow_engine_meter_update(e, M1, 0, AT(SEC(3))) == 0);
        check_int(flow_engine_meter_update(e, M1, 100, AT(SEC(4))), 100);
        r.seq[0] = 0;
        check_int(flow_engine_shutdown(e, AT(SEC(5))), 1);
        check_streq(r.seq, "R:kegboard.relay0:off C:kegboard.flow0:shutdown U:kegboard.flow1:completed ");
        check_int(flow_engine_next_deadline(e), FLOW_USEC_INFINITY);
}

static void test_calibration_names(void) {
        check_streq(flow_calibration_end_to_string(FLOW_CALIBRATION_FINISHED), "finished");
        check_streq(flow_calibration_end_to_string(FLOW_CALIBRATION_CANCELLED), "cancelled");
        check_streq(flow_calibration_end_to_string(FLOW_CALIBRATION_TIMEOUT), "timeout");
        check_streq(flow_calibration_end_to_string(FLOW_CALIBRATION_TAP_REMOVED), "tap-removed");
        check_streq(flow_calibration_end_to_string(FLOW_CALIBRATION_SHUTDOWN), "shutdown");
        check(!flow_calibration_end_to_string(_FLOW_CALIBRATION_END_MAX));
}

int main(void) {
        test_run(test_start_refusals);
        test_run(test_counting_suspends_the_filter);
        test_run(test_counting_filter_off);
        test_run(test_relay);
        test_run(test_timeout);
        test_run(test_flows_and_tokens_refused);
        test_run(test_other_tap_unaffected);
        test_run(test_reset_and_rejected);
        test_run(test_ticks_accounted);
        test_run(test_kept_when_table_full);
        test_run(test_tap_removed_and_shutdown);
        test_run(test_calibration_names);
        return test_result();
}
