/* The model of the core: see model.h. */
#include <math.h>

#include "model.h"
#include "util-hex.h"
#include "util-string.h"
#include "util-strv.h"

static const char *const kind_names[_GROUP_KIND_MAX] = {
        [GROUP_BOARD] = "board",
        [GROUP_TAP] = "tap",
        [GROUP_SENSOR] = "sensor",
};

const char *group_kind_to_string(GroupKind k) {
        return k >= 0 && k < _GROUP_KIND_MAX ? kind_names[k] : NULL;
}

int group_id_parse(const char *id, GroupKind *ret_kind, const char **ret_name) {
        assert_return(id, -EINVAL);

        for (GroupKind k = 0; k < _GROUP_KIND_MAX; k++) {
                const char *p = startswith(id, kind_names[k]);
                if (p && *p == ':' && p[1] != '\0') {
                        if (ret_kind)
                                *ret_kind = k;
                        if (ret_name)
                                *ret_name = p + 1;
                        return 0;
                }
        }
        return -EINVAL;
}

char *key_encode(const char *name) {
        char *out, *o;

        assert_return(name, NULL);

        out = malloc(strlen(name) * 3 + 1);
        if (!out)
                return NULL;
        o = out;
        for (const unsigned char *p = (const unsigned char *) name; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-')
                        *o++ = (char) *p;
                else {
                        *o++ = '_';
                        *o++ = hexchar(*p >> 4);
                        *o++ = hexchar(*p);
                }
        }
        *o = '\0';
        return out;
}

void keg_info_clear(KegInfo *k) {
        free(k->beverage);
        *k = (KegInfo) { .size_ml = NAN, .remaining_ml = NAN, .percent = NAN };
}

static void group_free(Group *g) {
        if (!g)
                return;
        free(g->name);
        free(g->id);
        free(g->key);
        free(g->path);
        free(g->tap_name);
        free(g->relay);
        free(g->flow_state);
        free(g->flow_user);
        free(g->last_pour.user);
        free(g->ghost);
        keg_info_clear(&g->keg);
        free(g->serial);
        free(g->device);
        free(g->backend);
        free(g->event_state);
        free(g->doc.text);
        strv_free(g->components);
        free(g);
}

int model_new(Model **ret) {
        Model *m;

        assert_return(ret, -EINVAL);

        m = calloc(1, sizeof(Model));
        if (!m)
                return -ENOMEM;
        *ret = m;
        return 0;
}

Model *model_free(Model *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_groups; i++)
                group_free(m->groups[i]);
        free(m->groups);
        strv_free(m->node_components);
        for (size_t i = 0; i < m->n_recent; i++)
                free(m->recent[(m->recent_first + i) % RECENT_DRINKS_MAX]);
        free(m->core.version);
        free(m->core.mode);
        free(m->core.backend_state);
        free(m->core.spool_state);
        free(m->core_doc.text);
        for (size_t i = 0; i < m->n_ledger; i++) {
                free(m->ledger[i].topic);
                free(m->ledger[i].group);
                free(m->ledger[i].text);
        }
        free(m->ledger);
        free(m);
        return NULL;
}

Group *model_find(const Model *m, GroupKind kind, const char *name) {
        assert_return(m && name, NULL);

        for (size_t i = 0; i < m->n_groups; i++)
                if (m->groups[i]->kind == kind && streq(m->groups[i]->name, name))
                        return m->groups[i];
        return NULL;
}

Group *model_find_id(const Model *m, const char *id) {
        GroupKind kind;
        const char *name;

        if (group_id_parse(id, &kind, &name) < 0)
                return NULL;
        return model_find(m, kind, name);
}

int model_add(Model *m, GroupKind kind, const char *name, Group **ret) {
        Group *g, **a;

        assert_return(m && name && *name, -EINVAL);
        assert_return(kind >= 0 && kind < _GROUP_KIND_MAX, -EINVAL);

        if (model_find(m, kind, name))
                return -EEXIST;
        a = realloc(m->groups, (m->n_groups + 1) * sizeof(Group *));
        if (!a)
                return -ENOMEM;
        m->groups = a;

        g = calloc(1, sizeof(Group));
        if (!g)
                return -ENOMEM;
        g->kind = kind;
        g->name = strdup(name);
        g->id = strdup_printf("%s:%s", kind_names[kind], name);
        g->key = key_encode(name);
        g->relay = strdup("");
        g->flow_volume_ml = -1;
        keg_info_clear(&g->keg);
        if (!g->name || !g->id || !g->key || !g->relay) {
                group_free(g);
                return -ENOMEM;
        }
        m->groups[m->n_groups++] = g;
        if (ret)
                *ret = g;
        return 0;
}

void model_remove(Model *m, Group *g) {
        for (size_t i = 0; i < m->n_groups; i++)
                if (m->groups[i] == g) {
                        memmove(m->groups + i, m->groups + i + 1, (m->n_groups - i - 1) * sizeof(Group *));
                        m->n_groups--;
                        group_free(g);
                        return;
                }
}

size_t model_count(const Model *m, GroupKind kind, bool live_only) {
        size_t n = 0;

        for (size_t i = 0; i < m->n_groups; i++)
                if (m->groups[i]->kind == kind && (!live_only || m->groups[i]->live))
                        n++;
        return n;
}

/* ---- flow rate */

bool tap_pouring(const Group *g) {
        return streq_ptr(g->flow_state, "active");
}

void tap_rate_reset(Group *g) {
        g->rate_first = g->n_rate = 0;
}

void tap_rate_add(Group *g, uint64_t flow_id, double volume_ml, uint64_t now) {
        if (flow_id != g->rate_flow_id) {
                tap_rate_reset(g);
                g->rate_flow_id = flow_id;
        }
        if (volume_ml < 0)
                return;
        /* Samples older than the window are no longer needed. */
        while (g->n_rate > 0 && g->rate[g->rate_first].t + RATE_WINDOW_USEC < now) {
                g->rate_first = (g->rate_first + 1) % RATE_SAMPLES_MAX;
                g->n_rate--;
        }
        if (g->n_rate == RATE_SAMPLES_MAX) {
                g->rate_first = (g->rate_first + 1) % RATE_SAMPLES_MAX;
                g->n_rate--;
        }
        g->rate[(g->rate_first + g->n_rate) % RATE_SAMPLES_MAX] = (RateSample) { now, volume_ml };
        g->n_rate++;
}

double tap_flow_rate(const Group *g, uint64_t now) {
        const RateSample *newest, *oldest = NULL;

        if (!tap_pouring(g) || g->n_rate == 0 || g->rate_flow_id != g->flow_id)
                return 0;
        newest = &g->rate[(g->rate_first + g->n_rate - 1) % RATE_SAMPLES_MAX];
        if (newest->t + RATE_WINDOW_USEC < now)
                return 0;
        for (size_t i = 0; i < g->n_rate; i++) {
                const RateSample *s = &g->rate[(g->rate_first + i) % RATE_SAMPLES_MAX];
                if (s->t + RATE_WINDOW_USEC >= now) {
                        oldest = s;
                        break;
                }
        }
        if (!oldest || newest->t - oldest->t < RATE_MIN_SPAN_USEC || newest->v < oldest->v)
                return 0;
        /* mL per usec -> L/min */
        return (newest->v - oldest->v) / (double) (newest->t - oldest->t) * 1e6 * 0.06;
}

/* ---- ghost volumes */

void tap_ghost_expire(Group *g, uint64_t now_sec) {
        size_t drop = 0;

        while (drop < g->n_ghost && g->ghost[drop].time + GHOST_WINDOW_SEC < now_sec)
                drop++;
        if (drop == 0)
                return;
        memmove(g->ghost, g->ghost + drop, (g->n_ghost - drop) * sizeof(GhostEntry));
        g->n_ghost -= drop;
}

int tap_ghost_add(Group *g, uint64_t time_sec, double volume_ml, uint64_t now_sec) {
        size_t i;

        tap_ghost_expire(g, now_sec);
        if (!(volume_ml >= 0) || time_sec + GHOST_WINDOW_SEC < now_sec)
                return 0;
        if (g->n_ghost == GHOST_ENTRIES_MAX) {
                memmove(g->ghost, g->ghost + 1, (g->n_ghost - 1) * sizeof(GhostEntry));
                g->n_ghost--;
        }
        if (!g->ghost) {
                g->ghost = malloc(GHOST_ENTRIES_MAX * sizeof(GhostEntry));
                if (!g->ghost)
                        return -ENOMEM;
        }
        /* Kept in order of time: a late report goes where it belongs. */
        for (i = g->n_ghost; i > 0 && g->ghost[i - 1].time > time_sec; i--)
                ;
        memmove(g->ghost + i + 1, g->ghost + i, (g->n_ghost - i) * sizeof(GhostEntry));
        g->ghost[i] = (GhostEntry) { time_sec, volume_ml };
        g->n_ghost++;
        return 1;
}

double tap_ghost_sum(const Group *g, uint64_t now_sec) {
        double sum = 0;

        for (size_t i = 0; i < g->n_ghost; i++)
                if (g->ghost[i].time + GHOST_WINDOW_SEC >= now_sec)
                        sum += g->ghost[i].ml;
        return sum;
}

/* ---- drinks counted once */

bool model_drink_seen(const Model *m, const char *uuid) {
        char canon[UUID_STRING_MAX];

        if (uuid_normalize(uuid, canon) < 0)
                return false;
        for (size_t i = 0; i < m->n_recent; i++)
                if (streq(m->recent[(m->recent_first + i) % RECENT_DRINKS_MAX], canon))
                        return true;
        return false;
}

int model_drink_remember(Model *m, const char *uuid) {
        char canon[UUID_STRING_MAX], *c;
        int r;

        r = uuid_normalize(uuid, canon);
        if (r < 0)
                return r;
        c = strdup(canon);
        if (!c)
                return -ENOMEM;
        if (m->n_recent == RECENT_DRINKS_MAX) {
                free(m->recent[m->recent_first]);
                m->recent_first = (m->recent_first + 1) % RECENT_DRINKS_MAX;
                m->n_recent--;
        }
        m->recent[(m->recent_first + m->n_recent) % RECENT_DRINKS_MAX] = c;
        m->n_recent++;
        return 0;
}

/* ---- ledger */

LedgerEntry *ledger_find(const Model *m, const char *topic) {
        for (size_t i = 0; i < m->n_ledger; i++)
                if (streq(m->ledger[i].topic, topic))
                        return &m->ledger[i];
        return NULL;
}

int ledger_put(Model *m, const char *topic, const char *group, LedgerEntry **ret) {
        LedgerEntry *e = ledger_find(m, topic), *a;
        char *t, *g;

        if (e) {
                if (!streq(e->group, group)) {
                        g = strdup(group);
                        if (!g)
                                return -ENOMEM;
                        free(e->group);
                        e->group = g;
                }
                if (ret)
                        *ret = e;
                return 0;
        }
        a = realloc(m->ledger, (m->n_ledger + 1) * sizeof(LedgerEntry));
        if (!a)
                return -ENOMEM;
        m->ledger = a;
        t = strdup(topic);
        g = strdup(group);
        if (!t || !g) {
                free(t);
                free(g);
                return -ENOMEM;
        }
        e = &a[m->n_ledger++];
        *e = (LedgerEntry) { .topic = t, .group = g };
        if (ret)
                *ret = e;
        return 0;
}

int ledger_set_text(LedgerEntry *e, const char *text) {
        char *t = NULL;

        if (streq_ptr(e->text, text))
                return 0;
        if (text && !(t = strdup(text)))
                return -ENOMEM;
        free(e->text);
        e->text = t;
        return 0;
}

void ledger_remove(Model *m, const char *topic) {
        LedgerEntry *e = ledger_find(m, topic);
        size_t i;

        if (!e)
                return;
        i = (size_t) (e - m->ledger);
        free(e->topic);
        free(e->group);
        free(e->text);
        memmove(m->ledger + i, m->ledger + i + 1, (m->n_ledger - i - 1) * sizeof(LedgerEntry));
        m->n_ledger--;
}
