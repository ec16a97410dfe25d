/* The grants of one event device: see grant-table.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "grant-table.h"
#include "util-string.h"

struct GrantTable {
        Grant **grants;                 /* in creation order */
        size_t n;
        GrantTableOps ops;
        void *userdata;
        /* The flow last reported per meter and its volume then: the base of the next delta. */
        uint64_t flow_ids[GRANT_NUMBER_MAX + 1];
        double flow_volume[GRANT_NUMBER_MAX + 1];
};

static Grant *grant_free(Grant *g) {
        if (!g)
                return NULL;
        free(g->id);
        free(g->auth_device);
        free(g->token);
        free(g);
        return NULL;
}

int grant_table_new(const GrantTableOps *ops, void *userdata, GrantTable **ret) {
        GrantTable *t;

        assert_return(ops, -EINVAL);
        assert_return(ret, -EINVAL);

        t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        t->ops = *ops;
        t->userdata = userdata;
        *ret = t;
        return 0;
}

GrantTable *grant_table_free(GrantTable *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n; i++)
                grant_free(t->grants[i]);
        free(t->grants);
        free(t);
        return NULL;
}

size_t grant_table_size(const GrantTable *t) {
        return t ? t->n : 0;
}

Grant *grant_table_at(const GrantTable *t, size_t i) {
        return t && i < t->n ? t->grants[i] : NULL;
}

Grant *grant_table_find(const GrantTable *t, const char *id) {
        if (!t || !id)
                return NULL;
        for (size_t i = 0; i < t->n; i++)
                if (streq(t->grants[i]->id, id))
                        return t->grants[i];
        return NULL;
}

Grant *grant_table_covering(const GrantTable *t, unsigned meter) {
        if (!t || meter > GRANT_NUMBER_MAX)
                return NULL;
        for (size_t i = 0; i < t->n; i++)
                if (t->grants[i]->meters[meter])
                        return t->grants[i];
        return NULL;
}

bool grant_table_relay_granted(const GrantTable *t, unsigned relay) {
        if (!t || relay > GRANT_NUMBER_MAX)
                return false;
        for (size_t i = 0; i < t->n; i++)
                if (t->grants[i]->relays[relay])
                        return true;
        return false;
}

static void set_relay(GrantTable *t, unsigned relay, bool enabled) {
        if (t->ops.set_relay)
                t->ops.set_relay(relay, enabled, t->userdata);
}

/* Relays in 'was' that no grant names any more go off. */
static void release_relays(GrantTable *t, const bool was[static GRANT_NUMBER_MAX + 1]) {
        for (unsigned x = 0; x <= GRANT_NUMBER_MAX; x++)
                if (was[x] && !grant_table_relay_granted(t, x))
                        set_relay(t, x, false);
}

static void unlink_grant(GrantTable *t, Grant *g) {
        for (size_t i = 0; i < t->n; i++)
                if (t->grants[i] == g) {
                        memmove(t->grants + i, t->grants + i + 1, (t->n - i - 1) * sizeof *t->grants);
                        t->n--;
                        return;
                }
}

/* One ending (section 6.8): the flows on the released meters end first (while the grant still
 * covers them, so their pours are tagged with it), then the relays go, then the ending is reported.
 * A grant left without meters is gone, unless 'keep' (an update: it gets its new meters next).
 * Returns true when the grant was freed. */
static bool grant_release(GrantTable *t, Grant *g, const bool release[static GRANT_NUMBER_MAX + 1],
                          KbGrantEndReason reason, bool stop_flows, bool keep, uint64_t now) {
        unsigned meters[GRANT_NUMBER_MAX + 1];
        bool relays[GRANT_NUMBER_MAX + 1];
        size_t n = 0, left = 0;
        bool whole;

        for (unsigned m = 0; m <= GRANT_NUMBER_MAX; m++)
                if (g->meters[m] && release[m]) {
                        if (stop_flows && t->ops.stop_flow)
                                t->ops.stop_flow(m, t->userdata);
                        meters[n++] = m;
                }
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                g->meters[meters[i]] = false;
        for (unsigned m = 0; m <= GRANT_NUMBER_MAX; m++)
                left += g->meters[m];
        whole = left == 0 && !keep;
        if (whole) {
                memcpy(relays, g->relays, sizeof relays);
                memset(g->relays, 0, sizeof g->relays);
                unlink_grant(t, g);
                release_relays(t, relays);
        }
        if (t->ops.ended)
                t->ops.ended(&(GrantEnding) {
                        .grant = g, .meters = meters, .n_meters = n, .reason = reason,
                        .duration_usec = now > g->created ? now - g->created : 0, .whole = whole,
                }, t->userdata);
        if (whole)
                grant_free(g);
        return whole;
}

void grant_table_end(GrantTable *t, Grant *g, KbGrantEndReason reason, uint64_t now) {
        bool all[GRANT_NUMBER_MAX + 1];

        if (!t || !g)
                return;
        memset(all, 1, sizeof all);
        (void) grant_release(t, g, all, reason, true, false, now);
}

static bool same_echo(const Grant *a, const Grant *b) {
        return a->auth_device && a->token && streq_ptr(a->auth_device, b->auth_device) && streq_ptr(a->token, b->token);
}

int grant_table_apply(GrantTable *t, const KbAuthorize *a, uint64_t now, uint64_t clamp_usec, Grant **ret) {
        bool want[GRANT_NUMBER_MAX + 1] = {}, relays[GRANT_NUMBER_MAX + 1] = {}, was[GRANT_NUMBER_MAX + 1] = {};
        uint64_t lifetime;
        bool is_new;
        Grant *g;

        assert_return(t, -EINVAL);
        assert_return(a, -EINVAL);
        assert_return(!isempty(a->grant_id), -EINVAL);
        assert_return(a->n_meters > 0, -EINVAL);

        for (size_t k = 0; k < a->n_meters; k++) {
                assert_return(a->meters[k] <= GRANT_NUMBER_MAX, -EINVAL);
                want[a->meters[k]] = true;
        }
        for (size_t k = 0; k < a->n_relays; k++) {
                assert_return(a->relays[k] <= GRANT_NUMBER_MAX, -EINVAL);
                relays[a->relays[k]] = true;
        }

        g = grant_table_find(t, a->grant_id);
        is_new = !g;
        if (is_new) {
                Grant **n = realloc(t->grants, (t->n + 1) * sizeof *n);
                if (!n)
                        return -ENOMEM;
                t->grants = n;
                g = calloc(1, sizeof *g);
                if (!g)
                        return -ENOMEM;
                g->id = strdup(a->grant_id);
                g->auth_device = a->auth_device ? strdup(a->auth_device) : NULL;
                g->token = a->token ? strdup(a->token) : NULL;
                if (!g->id || (a->auth_device && !g->auth_device) || (a->token && !g->token)) {
                        grant_free(g);
                        return -ENOMEM;
                }
                g->created = g->last_tick = now;
                t->grants[t->n++] = g;
        }
        /* The new relay set first: a relay both the new set and an ending grant name stays on. */
        memcpy(was, g->relays, sizeof was);
        memcpy(g->relays, relays, sizeof g->relays);

        /* Meters another grant covers leave it ("replaced"); the same person's flow goes on. */
        for (size_t i = 0; i < t->n; i++) {
                Grant *o = t->grants[i];
                bool release[GRANT_NUMBER_MAX + 1] = {}, any = false, same;

                if (o == g)
                        continue;
                for (unsigned m = 0; m <= GRANT_NUMBER_MAX; m++)
                        if (o->meters[m] && want[m])
                                release[m] = any = true;
                if (!any)
                        continue;
                same = same_echo(g, o);
                if (same)
                        for (unsigned m = 0; m <= GRANT_NUMBER_MAX; m++)
                                if (release[m])
                                        g->meters[m] = true;
                if (grant_release(t, o, release, KBEVENT_END_REPLACED, !same, false, now))
                        i = (size_t) -1;        /* the list changed: start over */
        }

        if (!is_new) {
                /* An update: meters leaving it end "replaced" (their flows first, then the relays it
                 * no longer names, then the ending); the grant lives on with its new sets. */
                bool release[GRANT_NUMBER_MAX + 1] = {};

                for (unsigned m = 0; m <= GRANT_NUMBER_MAX; m++)
                        if (g->meters[m] && !want[m]) {
                                release[m] = true;
                                if (t->ops.stop_flow)
                                        t->ops.stop_flow(m, t->userdata);
                        }
                release_relays(t, was);
                (void) grant_release(t, g, release, KBEVENT_END_REPLACED, false, true, now);
        }
        for (unsigned m = 0; m <= GRANT_NUMBER_MAX; m++)
                if (want[m])
                        g->meters[m] = true;

        g->max_volume_ml = a->max_volume_ml > 0 ? a->max_volume_ml : 0;
        /* The receiver may send any integer up to 2^63-1: saturate instead of wrapping around. */
        g->max_idle_usec = a->max_idle_ms > UINT64_MAX / USEC_PER_MSEC ? UINT64_MAX : a->max_idle_ms * USEC_PER_MSEC;
        lifetime = a->max_duration_ms > 0 && a->max_duration_ms < clamp_usec / USEC_PER_MSEC ?
                a->max_duration_ms * USEC_PER_MSEC : clamp_usec;
        g->deadline = g->created + lifetime;
        for (unsigned x = 0; x <= GRANT_NUMBER_MAX; x++)
                if (relays[x])
                        set_relay(t, x, true);
        if (ret)
                *ret = g;
        return is_new;
}

size_t grant_table_token_removed(GrantTable *t, const char *auth_device, const char *token, uint64_t now) {
        size_t n = 0;

        if (!t || !auth_device || !token || streq(auth_device, "core.rfid"))
                return 0;
        for (size_t i = 0; i < t->n; i++) {
                Grant *g = t->grants[i];
                if (streq_ptr(g->auth_device, auth_device) && streq_ptr(g->token, token)) {
                        grant_table_end(t, g, KBEVENT_END_DETACH, now);
                        n++;
                        i = (size_t) -1;
                }
        }
        return n;
}

bool grant_table_flow_update(GrantTable *t, unsigned meter, uint64_t flow_id, bool volume_known, double volume_ml,
                             uint64_t now) {
        double delta;
        Grant *g;

        if (!t || meter > GRANT_NUMBER_MAX)
                return false;
        if (t->flow_ids[meter] != flow_id) {
                t->flow_ids[meter] = flow_id;
                t->flow_volume[meter] = 0;
        }
        delta = volume_known ? volume_ml - t->flow_volume[meter] : 0;
        t->flow_volume[meter] = volume_known ? volume_ml : 0;
        g = grant_table_covering(t, meter);
        if (!g || !(delta > 0))
                return false;
        g->poured += delta;
        g->last_tick = now;
        return g->max_volume_ml > 0 && g->poured >= g->max_volume_ml;
}

/* Ends every grant with a limit reached at 'now' (the list changes under each ending: start over). */
static size_t end_due(GrantTable *t, uint64_t now, bool (*due)(const Grant *g, uint64_t now, KbGrantEndReason *ret)) {
        KbGrantEndReason reason;
        size_t n = 0;

        for (size_t i = 0; t && i < t->n; i++)
                if (due(t->grants[i], now, &reason)) {
                        grant_table_end(t, t->grants[i], reason, now);
                        n++;
                        i = (size_t) -1;
                }
        return n;
}

static bool volume_due(const Grant *g, uint64_t now, KbGrantEndReason *ret) {
        *ret = KBEVENT_END_MAX_VOLUME;
        return g->max_volume_ml > 0 && g->poured >= g->max_volume_ml;
}

size_t grant_table_end_full(GrantTable *t, uint64_t now) {
        return end_due(t, now, volume_due);
}

static uint64_t grant_deadline(const Grant *g) {
        uint64_t at = g->deadline;
        if (g->max_idle_usec > 0 && g->max_idle_usec <= UINT64_MAX - g->last_tick)
                at = MIN(at, g->last_tick + g->max_idle_usec);
        return at;
}

uint64_t grant_table_next_deadline(const GrantTable *t) {
        uint64_t at = UINT64_MAX;

        for (size_t i = 0; t && i < t->n; i++)
                at = MIN(at, grant_deadline(t->grants[i]));
        return at;
}

/* The lifetime first: when both fall due at once, the grant ends "max_duration". */
static bool time_due(const Grant *g, uint64_t now, KbGrantEndReason *ret) {
        *ret = now >= g->deadline ? KBEVENT_END_MAX_DURATION : KBEVENT_END_MAX_IDLE;
        return now >= grant_deadline(g);
}

size_t grant_table_expire(GrantTable *t, uint64_t now) {
        return end_due(t, now, time_due);
}

void grant_table_clear(GrantTable *t) {
        if (!t)
                return;
        for (unsigned x = 0; x <= GRANT_NUMBER_MAX; x++)
                if (grant_table_relay_granted(t, x))
                        set_relay(t, x, false);
        for (size_t i = 0; i < t->n; i++)
                grant_free(t->grants[i]);
        t->n = 0;
}
