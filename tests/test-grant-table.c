/* The grant table of kegboard-event-protocol.md sections 6.3 and 6.8 (scenario 4 of section 17),
 * with synthetic time: every row of the table of section 6.8, the limits (volume at the exact delta,
 * idle, the lifetime clamp), updates keeping volume and age, partial "replaced" endings, relays
 * counted across two grants, and the same-echo refinement. The effects are recorded in order in one
 * log line per effect; a stopped flow records the grant its pour is tagged with (the one covering the
 * meter when the flow ends). */

#include "grant-table.h"
#include "test-util.h"

#define MS USEC_PER_MSEC
#define S USEC_PER_SEC
#define CLAMP (3 * S)

typedef struct Rig {
        GrantTable *t;
        char log[4096];
} Rig;

static void logf_(Rig *r, const char *fmt, ...) _printf_(2, 3);
static void logf_(Rig *r, const char *fmt, ...) {
        size_t len = strlen(r->log);
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(r->log + len, sizeof r->log - len, fmt, ap);
        va_end(ap);
}

static void on_stop_flow(unsigned meter, void *userdata) {
        Rig *r = userdata;
        Grant *g = grant_table_covering(r->t, meter);
        logf_(r, "stop %u (%s); ", meter, g ? g->id : "guest");
}

static void on_relay(unsigned relay, bool enabled, void *userdata) {
        logf_(userdata, "relay %u %s; ", relay, enabled ? "on" : "off");
}

static void on_ended(const GrantEnding *e, void *userdata) {
        Rig *r = userdata;

        logf_(r, "end %s %s", e->grant->id, kbevent_grant_end_reason_to_string(e->reason));
        for (size_t i = 0; i < e->n_meters; i++)
                logf_(r, "%c%u", i ? ',' : ' ', e->meters[i]);
        logf_(r, " %.3f mL %" PRIu64 " ms%s; ", e->grant->poured, e->duration_usec / MS, e->whole ? "" : " partial");
        /* A whole ending is out of the table already; a partial one is still in it. */
        check(!!grant_table_find(r->t, e->grant->id) == !e->whole);
}

static const GrantTableOps ops = {
        .stop_flow = on_stop_flow,
        .set_relay = on_relay,
        .ended = on_ended,
};

static void rig_init(Rig *r) {
        *r = (Rig) {};
        check_int(grant_table_new(&ops, r, &r->t), 0);
}

static void rig_done(Rig *r) {
        r->t = grant_table_free(r->t);
}

/* The log since the last call, then cleared. */
static const char *rig_log(Rig *r) {
        static char copy[sizeof r->log];
        memcpy(copy, r->log, sizeof copy);
        r->log[0] = '\0';
        return copy;
}

typedef struct Auth {
        const char *id;
        unsigned meters[4], n_meters;
        unsigned relays[4], n_relays;
        double max_volume_ml;
        uint64_t max_duration_ms, max_idle_ms;
        const char *auth_device, *token;
} Auth;

/* An authorize as kbevent_parse_authorize() leaves it (meters and relays ascending). */
static int apply(Rig *r, Auth x, uint64_t now, Grant **ret) {
        KbAuthorize a = {
                .grant_id = (char *) x.id, .n_meters = x.n_meters, .n_relays = x.n_relays,
                .max_volume_ml = x.max_volume_ml, .max_duration_ms = x.max_duration_ms, .max_idle_ms = x.max_idle_ms,
                .auth_device = (char *) x.auth_device, .token = (char *) x.token,
        };
        memcpy(a.meters, x.meters, sizeof x.meters);
        memcpy(a.relays, x.relays, sizeof x.relays);
        return grant_table_apply(r->t, &a, now, CLAMP, ret);
}

/* Row: grant applied, no flow on a covered meter -> nothing yet; the next counted tick starts a flow
 * tagged with the grant. Row: ticks on a meter no grant covers -> a guest flow. */
static void test_no_flow_then_ticks(void) {
        Rig r;
        Grant *g = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, {0}, 1 }, 1000 * MS, &g), 1);
        check_streq(rig_log(&r), "relay 0 on; ");
        check(grant_table_covering(r.t, 1) == g);
        check(!grant_table_covering(r.t, 2));
        check_int(g->created, 1000 * MS);
        check_int(g->deadline, 1000 * MS + CLAMP);
        /* The first counted tick of a new flow. */
        check(!grant_table_flow_update(r.t, 1, 7, true, 2.5, 1100 * MS));
        check(g->poured == 2.5);
        check_int(g->last_tick, 1100 * MS);
        /* A guest flow on meter 2: counted toward nothing, the grant's idle clock untouched. */
        check(!grant_table_flow_update(r.t, 2, 8, true, 40, 1200 * MS));
        check(g->poured == 2.5);
        check_int(g->last_tick, 1100 * MS);
        /* A report without a new volume, or without a known one, counts nothing. */
        check(!grant_table_flow_update(r.t, 1, 7, true, 2.5, 1300 * MS));
        check(!grant_table_flow_update(r.t, 1, 7, false, 0, 1400 * MS));
        check(g->poured == 2.5);
        check_int(g->last_tick, 1100 * MS);
        check_streq(rig_log(&r), "");
        rig_done(&r);
}

/* Row: grant applied, anonymous flow on the meter -> the grant adopts it: no flow ends, and its
 * earlier volume is not counted toward the limits. */
static void test_adopts_anonymous_flow(void) {
        Rig r;
        Grant *g = NULL;

        rig_init(&r);
        check(!grant_table_flow_update(r.t, 1, 5, true, 50, 100 * MS));
        check(!grant_table_flow_update(r.t, 1, 5, true, 60, 200 * MS));
        check_int(apply(&r, (Auth) { "G", {1}, 1, .max_volume_ml = 30 }, 300 * MS, &g), 1);
        check_streq(rig_log(&r), "");
        check(g->poured == 0);
        /* The same flow goes on: only what it gains now counts. */
        check(!grant_table_flow_update(r.t, 1, 5, true, 80, 400 * MS));
        check(g->poured == 20);
        check(grant_table_flow_update(r.t, 1, 5, true, 90, 500 * MS));
        check(g->poured == 30);
        rig_done(&r);
}

/* Row: grant applied, flow tagged with another grant G on the meter, another echo -> the flow ends
 * now (pour tagged with G), then G's "replaced" ending; further ticks start a flow under the new one. */
static void test_replaced_other_echo(void) {
        Rig r;
        Grant *h = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, {0}, 1, .auth_device = "core.rfid", .token = "aa" }, 0, NULL), 1);
        check(!grant_table_flow_update(r.t, 1, 3, true, 20, 500 * MS));
        rig_log(&r);
        check_int(apply(&r, (Auth) { "H", {1}, 1, {1}, 1, .auth_device = "core.rfid", .token = "bb" }, 800 * MS, &h), 1);
        /* The flow first (still G's), then G's relay (no grant names it now), then the ending. */
        check_streq(rig_log(&r), "stop 1 (G); relay 0 off; end G replaced 1 20.000 mL 800 ms; relay 1 on; ");
        check(!grant_table_find(r.t, "G"));
        check(grant_table_covering(r.t, 1) == h);
        /* The engine's next flow on the meter (a new flow id) counts for H from zero. */
        check(!grant_table_flow_update(r.t, 1, 4, true, 5, 900 * MS));
        check(h->poured == 5);
        rig_done(&r);
}

/* The same-echo refinement: the same person swiped again, the flow goes on under the new grant. */
static void test_same_echo_continues(void) {
        Rig r;
        Grant *h = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, {0}, 1, .auth_device = "core.onewire", .token = "aa" }, 0, NULL), 1);
        check(!grant_table_flow_update(r.t, 1, 3, true, 20, 500 * MS));
        rig_log(&r);
        check_int(apply(&r, (Auth) { "H", {1}, 1, {0}, 1, .auth_device = "core.onewire", .token = "aa" }, 800 * MS, &h), 1);
        /* No flow ends; G's relay never goes off, H names it too. */
        check_streq(rig_log(&r), "end G replaced 1 20.000 mL 800 ms; relay 0 on; ");
        check(grant_table_covering(r.t, 1) == h);
        /* The same flow, only its new volume for H. */
        check(!grant_table_flow_update(r.t, 1, 3, true, 26, 900 * MS));
        check(h->poured == 6);

        /* An echo with only a token, or none at all, is never "the same person". */
        check_int(apply(&r, (Auth) { "I", {1}, 1, .token = "aa" }, 1000 * MS, NULL), 1);
        check_streq(rig_log(&r), "stop 1 (H); relay 0 off; end H replaced 1 6.000 mL 200 ms; ");
        check_int(apply(&r, (Auth) { "J", {1}, 1, .token = "aa" }, 1100 * MS, NULL), 1);
        check_streq(rig_log(&r), "stop 1 (I); end I replaced 1 0.000 mL 100 ms; ");
        rig_done(&r);
}

/* Row: the same grant_id updated mid-flow -> the flow goes on; volume and age are kept; limits are
 * replaced, and an update never extends the lifetime beyond the clamp from creation. */
static void test_update_keeps_volume_and_age(void) {
        Rig r;
        Grant *g = NULL, *g2 = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, {0}, 1, .max_volume_ml = 100, .max_duration_ms = 1000 }, 0, &g), 1);
        check_int(g->deadline, 1000 * MS);
        check(!grant_table_flow_update(r.t, 1, 3, true, 40, 500 * MS));
        rig_log(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, {0}, 1, .max_volume_ml = 50, .max_duration_ms = 60000, .max_idle_ms = 700 },
                        900 * MS, &g2), 0);
        check(g2 == g);
        check_streq(rig_log(&r), "relay 0 on; ");
        check_int(grant_table_size(r.t), 1);
        check(g->poured == 40);
        check_int(g->created, 0);
        check_int(g->deadline, CLAMP);
        check(g->max_volume_ml == 50);
        check_int(g->max_idle_usec, 700 * MS);
        /* The idle clock still runs from the last counted tick. */
        check_int(g->last_tick, 500 * MS);
        check_int(grant_table_next_deadline(r.t), 1200 * MS);
        /* The same flow: the kept 40 mL plus 10 reach the new limit. */
        check(grant_table_flow_update(r.t, 1, 3, true, 50, 1000 * MS));
        check_int(grant_table_end_full(r.t, 1000 * MS), 1);
        check_streq(rig_log(&r), "stop 1 (G); relay 0 off; end G max_volume 1 50.000 mL 1000 ms; ");
        rig_done(&r);
}

/* Partial "replaced" endings: a grant losing some meters to another grant, or to its own update,
 * lives on with the others (and keeps its relays). */
static void test_partial_replaced(void) {
        Rig r;
        Grant *g = NULL, *h = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1, 2}, 2, {0}, 1 }, 0, &g), 1);
        check(!grant_table_flow_update(r.t, 2, 9, true, 10, 100 * MS));
        rig_log(&r);
        check_int(apply(&r, (Auth) { "H", {2, 3}, 2, {1}, 1 }, 200 * MS, &h), 1);
        check_streq(rig_log(&r), "stop 2 (G); end G replaced 2 10.000 mL 200 ms partial; relay 1 on; ");
        check(grant_table_covering(r.t, 1) == g);
        check(grant_table_covering(r.t, 2) == h);
        check(grant_table_relay_granted(r.t, 0));

        /* An update to a meter set disjoint from the old one: the old meter ends, the grant lives on
         * with the new set, its volume and creation time. */
        check(!grant_table_flow_update(r.t, 1, 11, true, 7, 300 * MS));
        rig_log(&r);
        check_int(apply(&r, (Auth) { "G", {4}, 1, {0}, 1 }, 400 * MS, NULL), 0);
        check_streq(rig_log(&r), "stop 1 (G); end G replaced 1 17.000 mL 400 ms partial; relay 0 on; ");
        check(grant_table_find(r.t, "G") == g);
        check(!grant_table_covering(r.t, 1));
        check(grant_table_covering(r.t, 4) == g);
        check(g->poured == 17);
        check_int(g->created, 0);

        /* An update taking a meter of another grant: that grant ends there (whole, its last meter). */
        check_int(apply(&r, (Auth) { "G", {3, 4}, 2, {0}, 1 }, 500 * MS, NULL), 0);
        check_streq(rig_log(&r), "stop 3 (H); end H replaced 3 0.000 mL 300 ms partial; relay 0 on; ");
        check_int(apply(&r, (Auth) { "G", {2, 3, 4}, 3, {0}, 1 }, 600 * MS, NULL), 0);
        check_streq(rig_log(&r), "stop 2 (H); relay 1 off; end H replaced 2 0.000 mL 400 ms; relay 0 on; ");
        check_int(grant_table_size(r.t), 1);
        rig_done(&r);
}

/* Relays: counted across grants; off only when the last grant naming a relay ends or drops it. */
static void test_relay_reference_counting(void) {
        Rig r;
        Grant *g = NULL, *h = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, {0, 1}, 2 }, 0, &g), 1);
        check_int(apply(&r, (Auth) { "H", {2}, 1, {1, 2}, 2 }, 0, &h), 1);
        check_streq(rig_log(&r), "relay 0 on; relay 1 on; relay 1 on; relay 2 on; ");
        /* G ends: relay 1 stays, H names it. */
        grant_table_end(r.t, g, KBEVENT_END_COMMAND, 100 * MS);
        check_streq(rig_log(&r), "stop 1 (G); relay 0 off; end G command 1 0.000 mL 100 ms; ");
        check(grant_table_relay_granted(r.t, 1));
        check(!grant_table_relay_granted(r.t, 0));
        /* An update dropping a relay another grant names keeps it on. */
        check_int(apply(&r, (Auth) { "G2", {3}, 1, {2}, 1 }, 200 * MS, NULL), 1);
        check_int(apply(&r, (Auth) { "H", {2}, 1, {1}, 1 }, 300 * MS, NULL), 0);
        check_streq(rig_log(&r), "relay 2 on; relay 1 on; ");
        check(grant_table_relay_granted(r.t, 2));
        /* And dropping one no other grant names switches it off. */
        check_int(apply(&r, (Auth) { "H", {2}, 1, {3}, 1 }, 400 * MS, NULL), 0);
        check_streq(rig_log(&r), "relay 1 off; relay 3 on; ");
        check(!grant_table_relay_granted(r.t, 1));
        /* The last grant naming relay 2 ends. */
        grant_table_end(r.t, grant_table_find(r.t, "G2"), KBEVENT_END_COMMAND, 500 * MS);
        check_streq(rig_log(&r), "stop 3 (G2); relay 2 off; end G2 command 3 0.000 mL 300 ms; ");
        rig_done(&r);
}

/* The volume limit: reached at the exact delta, counted in full (beer in flight belongs to the pour),
 * ended from the loop; flows stopped and started under the grant (stop_flow) keep counting. */
static void test_volume_limit(void) {
        Rig r;
        Grant *g = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, .max_volume_ml = 100 }, 0, &g), 1);
        check(!grant_table_flow_update(r.t, 1, 1, true, 60, 100 * MS));
        /* Row: stop_flow on a covered meter -> that flow ends, the grant stays; its next flow counts. */
        check(!grant_table_flow_update(r.t, 1, 2, true, 39.999, 200 * MS));
        check(g->poured < 100);
        check_int(grant_table_end_full(r.t, 200 * MS), 0);
        check_streq(rig_log(&r), "");
        check(grant_table_flow_update(r.t, 1, 2, true, 40, 300 * MS));
        check(g->poured == 100);
        check_int(grant_table_end_full(r.t, 300 * MS), 1);
        check_streq(rig_log(&r), "stop 1 (G); end G max_volume 1 100.000 mL 300 ms; ");
        check_int(grant_table_size(r.t), 0);

        /* Over the limit in one delta: the whole delta counts. */
        check_int(apply(&r, (Auth) { "H", {1}, 1, .max_volume_ml = 100 }, 400 * MS, &g), 1);
        check(grant_table_flow_update(r.t, 1, 3, true, 112.5, 500 * MS));
        check_int(grant_table_end_full(r.t, 500 * MS), 1);
        check_streq(rig_log(&r), "stop 1 (H); end H max_volume 1 112.500 mL 100 ms; ");
        /* No limit: never ends on volume. */
        check_int(apply(&r, (Auth) { "I", {1}, 1 }, 600 * MS, &g), 1);
        check(!grant_table_flow_update(r.t, 1, 4, true, 10000, 700 * MS));
        check_int(grant_table_end_full(r.t, 700 * MS), 0);
        rig_done(&r);
}

/* The idle limit runs from creation while nothing was counted, then from the last counted tick on any
 * covered meter; exact at its deadline. */
static void test_idle_limit(void) {
        Rig r;
        Grant *g = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1, 2}, 2, .max_idle_ms = 500 }, 1000 * MS, &g), 1);
        check_int(grant_table_next_deadline(r.t), 1500 * MS);
        check_int(grant_table_expire(r.t, 1499 * MS), 0);
        check(!grant_table_flow_update(r.t, 2, 1, true, 5, 1400 * MS));
        check_int(grant_table_next_deadline(r.t), 1900 * MS);
        check_int(grant_table_expire(r.t, 1500 * MS), 0);
        check(!grant_table_flow_update(r.t, 1, 2, true, 5, 1800 * MS));
        check_int(grant_table_next_deadline(r.t), 2300 * MS);
        check_int(grant_table_expire(r.t, 2299 * MS), 0);
        check_streq(rig_log(&r), "");
        check_int(grant_table_expire(r.t, 2300 * MS), 1);
        check_streq(rig_log(&r), "stop 1 (G); stop 2 (G); end G max_idle 1,2 10.000 mL 1300 ms; ");
        check_int(grant_table_next_deadline(r.t), UINT64_MAX);
        rig_done(&r);
}

/* The lifetime: min(max_duration_ms, the clamp) from creation; the clamp when none; ends even
 * mid-pour (the flow first); the lifetime wins over an idle limit due at the same time. */
static void test_lifetime_clamp(void) {
        Rig r;
        Grant *g = NULL;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "A", {1}, 1, .max_duration_ms = 2000 }, 0, &g), 1);
        check_int(g->deadline, 2000 * MS);
        check_int(apply(&r, (Auth) { "B", {2}, 1, .max_duration_ms = 60000 }, 0, &g), 1);
        check_int(g->deadline, CLAMP);
        check_int(apply(&r, (Auth) { "C", {3}, 1 }, 100 * MS, &g), 1);
        check_int(g->deadline, 100 * MS + CLAMP);
        check_int(apply(&r, (Auth) { "D", {4}, 1, .max_duration_ms = 1000, .max_idle_ms = 1000 }, 0, &g), 1);
        check_int(grant_table_next_deadline(r.t), 1000 * MS);
        check_int(grant_table_expire(r.t, 999 * MS), 0);
        check_int(grant_table_expire(r.t, 1000 * MS), 1);
        check_streq(rig_log(&r), "stop 4 (D); end D max_duration 4 0.000 mL 1000 ms; ");
        check_int(grant_table_next_deadline(r.t), 2000 * MS);
        /* Mid-pour: the flow ends first, its pour tagged with the grant. */
        check(!grant_table_flow_update(r.t, 1, 1, true, 33, 1900 * MS));
        check_int(grant_table_expire(r.t, 2000 * MS), 1);
        check_streq(rig_log(&r), "stop 1 (A); end A max_duration 1 33.000 mL 2000 ms; ");
        /* Limits far beyond the clamp (the receiver may send up to 2^63-1) never wrap around. */
        check_int(apply(&r, (Auth) { "E", {5}, 1, .max_duration_ms = UINT64_C(1) << 62,
                                     .max_idle_ms = (UINT64_C(1) << 62) + 1 }, 2000 * MS, &g), 1);
        check_int(g->deadline, 2000 * MS + CLAMP);
        check_int(grant_table_expire(r.t, 2001 * MS), 0);
        check_streq(rig_log(&r), "");
        grant_table_end(r.t, g, KBEVENT_END_COMMAND, 2001 * MS);
        rig_log(&r);
        /* Two due at once both end. */
        check_int(grant_table_expire(r.t, 100 * MS + CLAMP), 2);
        check_streq(rig_log(&r), "stop 2 (B); end B max_duration 2 0.000 mL 3100 ms; "
                                 "stop 3 (C); end C max_duration 3 0.000 mL 3000 ms; ");
        rig_done(&r);
}

/* Rows: captive token removed -> its grants end "detach"; core.rfid removed -> nothing ends. */
static void test_detach(void) {
        Rig r;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, {0}, 1, .auth_device = "core.onewire", .token = "aa" }, 0, NULL), 1);
        check_int(apply(&r, (Auth) { "H", {2}, 1, .auth_device = "core.onewire", .token = "bb" }, 0, NULL), 1);
        check_int(apply(&r, (Auth) { "I", {3}, 1, .auth_device = "core.rfid", .token = "aa" }, 0, NULL), 1);
        check_int(apply(&r, (Auth) { "J", {4}, 1, .auth_device = "core.rfid", .token = "cc" }, 0, NULL), 1);
        check_int(apply(&r, (Auth) { "K", {5}, 1, .auth_device = "core.onewire", .token = "aa" }, 0, NULL), 1);
        rig_log(&r);
        check(!grant_table_flow_update(r.t, 1, 1, true, 12, 100 * MS));
        check_int(grant_table_token_removed(r.t, "core.onewire", "aa", 200 * MS), 2);
        check_streq(rig_log(&r), "stop 1 (G); relay 0 off; end G detach 1 12.000 mL 200 ms; "
                                 "stop 5 (K); end K detach 5 0.000 mL 200 ms; ");
        check_int(grant_table_token_removed(r.t, "core.rfid", "cc", 300 * MS), 0);
        check_int(grant_table_token_removed(r.t, "core.onewire", "zz", 300 * MS), 0);
        check_streq(rig_log(&r), "");
        check_int(grant_table_size(r.t), 3);
        rig_done(&r);
}

/* deauthorize ends grants with "command"; orderly shutdown switches relays off and ends nothing. */
static void test_command_and_shutdown(void) {
        Rig r;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 1, {0}, 1 }, 0, NULL), 1);
        check_int(apply(&r, (Auth) { "H", {2}, 1, {0, 1}, 2 }, 0, NULL), 1);
        check_int(apply(&r, (Auth) { "I", {3}, 1, {2}, 1 }, 0, NULL), 1);
        rig_log(&r);
        grant_table_end(r.t, grant_table_find(r.t, "I"), KBEVENT_END_COMMAND, 50 * MS);
        check_streq(rig_log(&r), "stop 3 (I); relay 2 off; end I command 3 0.000 mL 50 ms; ");
        grant_table_clear(r.t);
        check_streq(rig_log(&r), "relay 0 off; relay 1 off; ");
        check_int(grant_table_size(r.t), 0);
        check_int(grant_table_next_deadline(r.t), UINT64_MAX);
        rig_done(&r);
}

static void test_invalid(void) {
        Rig r;

        rig_init(&r);
        check_int(apply(&r, (Auth) { "G", {1}, 0 }, 0, NULL), -EINVAL);
        check_int(apply(&r, (Auth) { "", {1}, 1 }, 0, NULL), -EINVAL);
        check_int(apply(&r, (Auth) { "G", {256}, 1 }, 0, NULL), -EINVAL);
        check_int(grant_table_size(r.t), 0);
        check(!grant_table_covering(r.t, 256));
        check(!grant_table_flow_update(r.t, 256, 1, true, 1, 0));
        rig_done(&r);
}

int main(void) {
        test_run(test_no_flow_then_ticks);
        test_run(test_adopts_anonymous_flow);
        test_run(test_replaced_other_echo);
        test_run(test_same_echo_continues);
        test_run(test_update_keeps_volume_and_age);
        test_run(test_partial_replaced);
        test_run(test_relay_reference_counting);
        test_run(test_volume_limit);
        test_run(test_idle_limit);
        test_run(test_lifetime_clamp);
        test_run(test_detach);
        test_run(test_command_and_shutdown);
        test_run(test_invalid);
        return test_result();
}
