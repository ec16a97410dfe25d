/* The state file: see state-file.h. Read with jansson (which checks UTF-8), written with the JSON
 * writer. A document that does not have the expected shape is refused as a whole: half a ledger
 * would make the node forget topics it must empty one day. */
#include <jansson.h>
#include <math.h>

#include "json-writer.h"
#include "state-file.h"
#include "util-string.h"
#include "util-strv.h"
#include "util-time.h"
#include "util-uuid.h"

#define STATE_VERSION 1

static int bad(char **ret_reason, const char *what) {
        return strdup_error(ret_reason, -EBADMSG, "%s", what);
}

static int parse_time(json_t *v, uint64_t *ret) {
        if (json_is_null(v)) {
                *ret = 0;
                return 0;
        }
        if (!json_is_string(v))
                return -EBADMSG;
        return time_parse_rfc3339(json_string_value(v), ret) < 0 ? -EBADMSG : 0;
}

static int parse_components(json_t *o, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        const char *id;
        json_t *v;
        size_t n = 0;
        int r;

        if (!json_is_object(o))
                return -EBADMSG;
        json_object_foreach(o, id, v) {
                if (!json_is_string(v) || isempty(id) || strchr(id, '='))
                        return -EBADMSG;
                r = strv_push(&l, &n, strdup_printf("%s=%s", id, json_string_value(v)));
                if (r < 0)
                        return r;
        }
        strv_free(*ret);
        *ret = TAKE_PTR(l);
        return 0;
}

static int parse_last_pour(json_t *o, TapLastPour *lp) {
        json_t *uuid = json_object_get(o, "uuid"), *vol = json_object_get(o, "volume_ml"),
               *time = json_object_get(o, "time"), *user = json_object_get(o, "user");
        char *u = NULL;

        if (!json_is_object(o) || !json_is_string(uuid) || !(json_is_number(vol) || json_is_null(vol)) ||
            !(json_is_string(user) || json_is_null(user)))
                return -EBADMSG;
        if (uuid_normalize(json_string_value(uuid), lp->uuid) < 0 || parse_time(time, &lp->time) < 0)
                return -EBADMSG;
        if (json_is_string(user) && !(u = strdup(json_string_value(user))))
                return -ENOMEM;
        free(lp->user);
        lp->user = u;
        lp->volume_ml = json_is_number(vol) ? json_number_value(vol) : -1;
        lp->set = true;
        return 0;
}

static int parse_ghost(json_t *a, Group *g) {
        size_t i;
        json_t *e;

        if (!json_is_array(a) || json_array_size(a) > GHOST_ENTRIES_MAX)
                return -EBADMSG;
        json_array_foreach(a, i, e) {
                json_t *t = json_array_get(e, 0), *ml = json_array_get(e, 1);
                if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_integer(t) || json_integer_value(t) < 0 ||
                    !json_is_number(ml) || !(json_number_value(ml) >= 0))
                        return -EBADMSG;
                /* Expiry is the manager's business (it knows the time): 'now' = the entry's own. */
                if (tap_ghost_add(g, (uint64_t) json_integer_value(t), json_number_value(ml),
                                  (uint64_t) json_integer_value(t)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int parse_group(Model *m, const char *id, json_t *o) {
        GroupKind kind;
        const char *name;
        json_t *v;
        Group *g;
        int r;

        if (!json_is_object(o))
                return -EBADMSG;
        if (streq(id, NODE_GROUP)) {
                v = json_object_get(o, "components");
                return v ? parse_components(v, &m->node_components) : 0;
        }
        if (group_id_parse(id, &kind, &name) < 0)
                return -EBADMSG;
        r = model_add(m, kind, name, &g);
        if (r == -EEXIST)
                return -EBADMSG;
        if (r < 0)
                return r;

        if ((v = json_object_get(o, "last_seen")) && parse_time(v, &g->seen) < 0)
                return -EBADMSG;
        if ((v = json_object_get(o, "components")) && (r = parse_components(v, &g->components)) < 0)
                return r;
        if (kind != GROUP_TAP)
                return 0;

        if ((v = json_object_get(o, "auto_created"))) {
                if (!json_is_boolean(v))
                        return -EBADMSG;
                g->auto_created = json_is_true(v);
        }
        if ((v = json_object_get(o, "served_total_ml"))) {
                if (!json_is_number(v) || !(json_number_value(v) >= 0) || !isfinite(json_number_value(v)))
                        return -EBADMSG;
                g->served_total_ml = json_number_value(v);
        }
        if ((v = json_object_get(o, "last_pour")) && !json_is_null(v) && (r = parse_last_pour(v, &g->last_pour)) < 0)
                return r;
        if ((v = json_object_get(o, "ghost")) && (r = parse_ghost(v, g)) < 0)
                return r;
        return 0;
}

int state_file_parse(Model *m, const char *text, size_t len, char **ret_reason) {
        json_t *root = NULL, *v, *e;
        json_error_t error;
        const char *k;
        size_t i;
        int r;

        assert_return(m && text, -EINVAL);

        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
        if (!root)
                return strdup_error(ret_reason, -EBADMSG, "line %d: %s", error.line, error.text);
        if (!json_is_object(root)) {
                r = bad(ret_reason, "not a JSON object");
                goto out;
        }
        v = json_object_get(root, "version");
        if (!json_is_integer(v) || json_integer_value(v) != STATE_VERSION) {
                r = bad(ret_reason, "unknown version");
                goto out;
        }
        v = json_object_get(root, "mqtt_events_dropped");
        if (v) {
                if (!json_is_integer(v) || json_integer_value(v) < 0) {
                        r = bad(ret_reason, "bad mqtt_events_dropped");
                        goto out;
                }
                m->events_dropped = (uint64_t) json_integer_value(v);
        }

        v = json_object_get(root, "groups");
        if (v && !json_is_object(v)) {
                r = bad(ret_reason, "bad groups");
                goto out;
        }
        json_object_foreach(v, k, e) {
                r = parse_group(m, k, e);
                if (r == -ENOMEM)
                        goto out;
                if (r < 0) {
                        r = strdup_error(ret_reason, -EBADMSG, "bad group %s", k);
                        goto out;
                }
        }

        v = json_object_get(root, "published");
        if (v && !json_is_object(v)) {
                r = bad(ret_reason, "bad published");
                goto out;
        }
        json_object_foreach(v, k, e) {
                if (!json_is_string(e) || isempty(k) ||
                    (!streq(json_string_value(e), NODE_GROUP) && group_id_parse(json_string_value(e), NULL, NULL) < 0)) {
                        r = bad(ret_reason, "bad entry in published");
                        goto out;
                }
                r = ledger_put(m, k, json_string_value(e), NULL);
                if (r < 0)
                        goto out;
        }

        v = json_object_get(root, "recent_drinks");
        if (v && (!json_is_array(v) || json_array_size(v) > RECENT_DRINKS_MAX)) {
                r = bad(ret_reason, "bad recent_drinks");
                goto out;
        }
        json_array_foreach(v, i, e) {
                if (!json_is_string(e) || uuid_from_string(json_string_value(e), NULL) < 0) {
                        r = bad(ret_reason, "bad UUID in recent_drinks");
                        goto out;
                }
                r = model_drink_remember(m, json_string_value(e));
                if (r < 0)
                        goto out;
        }
        r = 0;
out:
        json_decref(root);
        return r;
}

static void write_components(JsonWriter *w, char **l) {
        json_writer_key(w, "components");
        json_writer_object_begin(w);
        STRV_FOREACH(p, l) {
                const char *eq = strchr(*p, '=');
                _cleanup_(freep) char *id = eq ? strndup(*p, (size_t) (eq - *p)) : NULL;
                if (!id) {
                        json_writer_set_error(w, eq ? -ENOMEM : -EINVAL);
                        continue;
                }
                json_writer_field_string(w, id, eq + 1);
        }
        json_writer_object_end(w);
}

static void write_group(JsonWriter *w, const Group *g) {
        json_writer_key(w, g->id);
        json_writer_object_begin(w);
        if (g->seen > 0)
                json_writer_field_timestamp(w, "last_seen", g->seen);
        else
                json_writer_field_null(w, "last_seen");
        if (g->kind == GROUP_TAP) {
                json_writer_field_bool(w, "auto_created", g->auto_created);
                json_writer_field_double(w, "served_total_ml", g->served_total_ml);
                if (g->last_pour.set) {
                        json_writer_key(w, "last_pour");
                        json_writer_object_begin(w);
                        json_writer_field_string(w, "uuid", g->last_pour.uuid);
                        if (g->last_pour.volume_ml >= 0)
                                json_writer_field_double(w, "volume_ml", g->last_pour.volume_ml);
                        else
                                json_writer_field_null(w, "volume_ml");
                        if (g->last_pour.time > 0)
                                json_writer_field_timestamp(w, "time", g->last_pour.time);
                        else
                                json_writer_field_null(w, "time");
                        json_writer_field_string(w, "user", g->last_pour.user);
                        json_writer_object_end(w);
                }
                json_writer_key(w, "ghost");
                json_writer_array_begin(w);
                for (size_t i = 0; i < g->n_ghost; i++) {
                        json_writer_array_begin(w);
                        json_writer_uint(w, g->ghost[i].time);
                        json_writer_double(w, g->ghost[i].ml);
                        json_writer_array_end(w);
                }
                json_writer_array_end(w);
        }
        if (g->components)
                write_components(w, g->components);
        json_writer_object_end(w);
}

int state_file_format(const Model *m, const Settings *s, char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(m && s && ret, -EINVAL);

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "version", STATE_VERSION);
        json_writer_field_string(&w, "node_id", s->node_id);
        json_writer_field_string(&w, "base", s->base);
        json_writer_field_string(&w, "discovery_prefix", s->prefix);
        json_writer_field_string(&w, "discovery", discovery_mode_to_string(s->discovery));
        json_writer_field_uint(&w, "mqtt_events_dropped", m->events_dropped);
        json_writer_key(&w, "published");
        json_writer_object_begin(&w);
        for (size_t i = 0; i < m->n_ledger; i++)
                json_writer_field_string(&w, m->ledger[i].topic, m->ledger[i].group);
        json_writer_object_end(&w);
        json_writer_key(&w, "groups");
        json_writer_object_begin(&w);
        if (m->node_components) {
                json_writer_key(&w, NODE_GROUP);
                json_writer_object_begin(&w);
                write_components(&w, m->node_components);
                json_writer_object_end(&w);
        }
        for (size_t i = 0; i < m->n_groups; i++)
                write_group(&w, m->groups[i]);
        json_writer_object_end(&w);
        json_writer_key(&w, "recent_drinks");
        json_writer_array_begin(&w);
        for (size_t i = 0; i < m->n_recent; i++)
                json_writer_string(&w, m->recent[(m->recent_first + i) % RECENT_DRINKS_MAX]);
        json_writer_array_end(&w);
        json_writer_object_end(&w);
        return json_writer_finish_with(&w, "\n", ret, ret_len);
}
