/* Unit tests of kegbot_mqtt's model (src/mqtt/model.c): groups and their ids, the flow rate of
 * mqtt-home-assistant.md section 4.4 (2 s window, 0.5 s minimum, stale after 2 s), the 24 h ghost
 * window with its 1000 entries, drinks counted once (512 UUIDs, any case) and the ledger. */
#include <math.h>

#include "model.h"
#include "test-util.h"

#define MS USEC_PER_MSEC

static void test_groups(void) {
        Model *m = NULL;
        Group *g = NULL;
        GroupKind k;
        const char *name;

        check(model_new(&m) == 0);
        check(model_add(m, GROUP_TAP, "kegboard.flow0", &g) == 0);
        check_streq(g->id, "tap:kegboard.flow0");
        check_streq(g->key, "kegboard_2eflow0");
        check(!g->live && !g->present);
        check(model_add(m, GROUP_TAP, "kegboard.flow0", NULL) == -EEXIST);
        check(model_add(m, GROUP_BOARD, "kegboard.flow0", NULL) == 0);
        check(model_add(m, GROUP_SENSOR, "", NULL) == -EINVAL);
        check(model_find_id(m, "tap:kegboard.flow0") == g);
        check(model_find_id(m, "board:kegboard.flow0") != g);
        check(!model_find_id(m, "tap:"));
        check(!model_find_id(m, "keg:x"));
        check_int(model_count(m, GROUP_TAP, false), 1);
        check_int(model_count(m, GROUP_TAP, true), 0);
        check(group_id_parse("sensor:a.b", &k, &name) == 0 && k == GROUP_SENSOR && streq(name, "a.b"));
        check(group_id_parse("node", NULL, NULL) == -EINVAL);
        model_remove(m, g);
        check(!model_find(m, GROUP_TAP, "kegboard.flow0"));
        model_free(m);
}

static void test_flow_rate(void) {
        Model *m = NULL;
        Group *g = NULL;
        uint64_t t = 1000 * USEC_PER_SEC;

        check(model_new(&m) == 0);
        check(model_add(m, GROUP_TAP, "kegboard.flow0", &g) == 0);
        g->flow_id = 5;
        g->flow_state = strdup("active");

        /* 100 mL/s in updates every 100 ms: 6 L/min once 0.5 s of samples exist. */
        for (int i = 0; i <= 4; i++)
                tap_rate_add(g, 5, i * 10.0, t + (uint64_t) i * 100 * MS);
        check(tap_flow_rate(g, t + 400 * MS) == 0);
        tap_rate_add(g, 5, 50.0, t + 500 * MS);
        check(fabs(tap_flow_rate(g, t + 500 * MS) - 6.0) < 1e-9);
        /* Only the last 2 s count: a faster pour later shows its own rate. */
        for (int i = 6; i <= 40; i++)
                tap_rate_add(g, 5, 50.0 + (i - 5) * 20.0, t + (uint64_t) i * 100 * MS);
        check(fabs(tap_flow_rate(g, t + 4000 * MS) - 12.0) < 1e-9);
        /* No update for more than 2 s: 0. */
        check(tap_flow_rate(g, t + 4000 * MS + 2001 * MS) == 0);
        /* Not pouring: 0. */
        free(g->flow_state);
        g->flow_state = strdup("completed");
        check(tap_flow_rate(g, t + 4000 * MS) == 0);
        /* A new flow starts afresh. */
        free(g->flow_state);
        g->flow_state = strdup("active");
        g->flow_id = 6;
        tap_rate_add(g, 6, 0.0, t + 5000 * MS);
        check(tap_flow_rate(g, t + 5000 * MS) == 0);
        check_int(g->n_rate, 1);
        /* Unknown volumes (-1) are not samples; many samples never overflow the ring. */
        tap_rate_add(g, 6, -1, t + 5001 * MS);
        check_int(g->n_rate, 1);
        for (int i = 0; i < 1000; i++)
                tap_rate_add(g, 6, i, t + 6000 * MS + (uint64_t) i * MS);
        check(g->n_rate <= RATE_SAMPLES_MAX);
        model_free(m);
}

static void test_ghost(void) {
        Model *m = NULL;
        Group *g = NULL;
        uint64_t now = 1800000000;

        check(model_new(&m) == 0);
        check(model_add(m, GROUP_TAP, "kegboard.flow0", &g) == 0);
        check(tap_ghost_add(g, now - 25 * 3600, 50.0, now) == 0);       /* older than 24 h */
        check(tap_ghost_add(g, now - 3600, 17.3, now) == 1);
        check(tap_ghost_add(g, now - 7200, 2.2, now) == 1);               /* late report, kept in order */
        check(tap_ghost_add(g, now, -1, now) == 0);                        /* volume unknown */
        check(fabs(tap_ghost_sum(g, now) - 19.5) < 1e-9);
        check(g->ghost[0].time == now - 7200 && g->ghost[1].time == now - 3600);
        check(fabs(tap_ghost_sum(g, now + 22 * 3600 + 1) - 17.3) < 1e-9);
        tap_ghost_expire(g, now + 23 * 3600);
        check_int(g->n_ghost, 1);
        for (int i = 0; i < 1500; i++)
                check(tap_ghost_add(g, now + (uint64_t) i, 1.0, now + (uint64_t) i) == 1);
        check_int(g->n_ghost, GHOST_ENTRIES_MAX);
        check(g->ghost[GHOST_ENTRIES_MAX - 1].time == now + 1499);
        model_free(m);
}

static void test_drinks_once(void) {
        Model *m = NULL;
        char uuid[UUID_STRING_MAX];

        check(model_new(&m) == 0);
        check(!model_drink_seen(m, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10"));
        check(model_drink_remember(m, "3F1C2A9E-8D4B-4C1E-9A57-0B6D2E4F7A10") == 0);
        check(model_drink_seen(m, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10"));
        check(model_drink_remember(m, "not-a-uuid") == -EINVAL);
        check(!model_drink_seen(m, "not-a-uuid"));
        /* The oldest falls out after 512 others. */
        for (int i = 0; i < RECENT_DRINKS_MAX; i++) {
                snprintf(uuid, sizeof uuid, "00000000-0000-4000-8000-%012d", i);
                check(model_drink_remember(m, uuid) == 0);
        }
        check_int(m->n_recent, RECENT_DRINKS_MAX);
        check(!model_drink_seen(m, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10"));
        check(model_drink_seen(m, "00000000-0000-4000-8000-000000000000"));
        check(model_drink_seen(m, "00000000-0000-4000-8000-000000000511"));
        model_free(m);
}

static void test_ledger(void) {
        Model *m = NULL;
        LedgerEntry *e = NULL;

        check(model_new(&m) == 0);
        check(ledger_put(m, "a/b", "node", &e) == 0 && e && !e->text);
        check(ledger_set_text(e, "x") == 0);
        check(ledger_put(m, "a/b", "tap:x", &e) == 0 && streq(e->group, "tap:x") && streq(e->text, "x"));
        check(ledger_put(m, "a/c", "node", NULL) == 0);
        check_int(m->n_ledger, 2);
        ledger_remove(m, "a/b");
        check(!ledger_find(m, "a/b") && ledger_find(m, "a/c"));
        ledger_remove(m, "nothing");
        check_int(m->n_ledger, 1);
        model_free(m);
}

int main(void) {
        test_run(test_groups);
        test_run(test_flow_rate);
        test_run(test_ghost);
        test_run(test_drinks_once);
        test_run(test_ledger);
        return test_result();
}
