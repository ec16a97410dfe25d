/* Tap registry: see taps.h. The flow engine holds the live taps; this module only remembers which
 * meters the last configured table (file or server) defined, so a reload can tell "removed from the
 * configuration" apart from "created on first sight". */
#include <inttypes.h>
#include <math.h>

#define LOG_COMPONENT "TapManager"
#include "log.h"

#include "ini.h"
#include "taps.h"
#include "util-string.h"

struct TapRegistry {
        FlowEngine *engine;
        TapChangeHandler handler;
        void *userdata;
        TapTable *configured;           /* the table applied last */
        FlowSettings flags;             /* the command line's filter settings */
        TapTable *settings;             /* server mode: the taps file's filter settings per meter */
};

static void tap_config_done(TapConfig *c) {
        free(c->meter_name);
        free(c->name);
        free(c->relay_name);
}

TapTable *tap_table_free(TapTable *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_taps; i++)
                tap_config_done(&t->taps[i]);
        free(t->taps);
        free(t);
        return NULL;
}

int tap_table_new(TapTable **ret) {
        TapTable *t = calloc(1, sizeof(TapTable));
        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

static const TapConfig *tap_table_find(const TapTable *t, const char *meter) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_taps; i++)
                if (streq(t->taps[i].meter_name, meter))
                        return &t->taps[i];
        return NULL;
}

int tap_table_add(TapTable *t, const char *meter, const char *name, double ml_per_tick, const char *relay) {
        TapConfig c = {};

        if (isempty(meter))
                return -EINVAL;
        if (!flow_calibration_is_valid(ml_per_tick))
                return -ERANGE;
        if (tap_table_find(t, meter))
                return -EEXIST;

        TapConfig *n = realloc(t->taps, (t->n_taps + 1) * sizeof(TapConfig));
        if (!n)
                return -ENOMEM;
        t->taps = n;

        c.meter_name = strdup(meter);
        c.name = strdup(isempty(name) ? meter : name);
        c.relay_name = strdup(relay ?: "");
        c.ml_per_tick = ml_per_tick;
        if (!c.meter_name || !c.name || !c.relay_name) {
                tap_config_done(&c);
                return -ENOMEM;
        }
        t->taps[t->n_taps++] = c;
        return 0;
}

static TapConfig *tap_table_find_mutable(TapTable *t, const char *meter) {
        for (size_t i = 0; i < t->n_taps; i++)
                if (streq(t->taps[i].meter_name, meter))
                        return &t->taps[i];
        return NULL;
}

static unsigned key_line(const Ini *ini, const char *section, const char *key) {
        const IniSection *sections[2] = { ini_find_section(ini, section), ini->defaults };

        for (size_t j = 0; j < ELEMENTSOF(sections); j++) {
                if (!sections[j])
                        continue;
                for (size_t i = 0; i < sections[j]->n_keys; i++)
                        if (streq(sections[j]->keys[i].key, key))
                                return sections[j]->keys[i].line;
        }
        return 0;
}

/* ml_per_tick or ticks_per_ml: a number from 0.01 to 100 (flow_calibration_is_valid()). */
static int parse_calibration(const Ini *ini, const char *path, const char *section, const char *key,
                             double *ret, char **ret_error) {
        _cleanup_(freep) char *v = NULL, *err = NULL;
        char *end;
        double d;
        int r;

        r = ini_get(ini, section, key, &v, &err);
        if (r < 0)
                return strdup_error(ret_error, r, "%s", err ?: "bad value");

        errno = 0;
        d = strtod(v, &end);
        if (end == v || *end != '\0' || !flow_calibration_is_valid(d))
                return strdup_error(ret_error, -EINVAL, "%s:%u: [%s] %s must be a number from %g to %g, not '%s'",
                                 path, key_line(ini, section, key), section, key, FLOW_CALIBRATION_MIN,
                                 FLOW_CALIBRATION_MAX, v);
        *ret = d;
        return 0;
}

/* One ghost-filter key of 'section' (or of [DEFAULT]) into 's'. */
static int parse_setting(const Ini *ini, const char *path, const char *section, const char *key, FlowSettings *s,
                         char **ret_error) {
        _cleanup_(freep) char *v = NULL, *err = NULL;
        const char *reason = NULL;
        int r;

        r = ini_get(ini, section, key, &v, &err);
        if (r < 0)
                return strdup_error(ret_error, r, "%s", err ?: "bad value");
        r = flow_settings_set(s, key, v, &reason);
        if (r < 0)
                return strdup_error(ret_error, -EINVAL, "%s:%u: %s: %s, not '%s'", path, key_line(ini, section, key),
                                    key, reason ?: "bad value", v);
        return 0;
}

/* [DEFAULT]'s filter settings over the flags: the settings of taps without a section of their own. */
static int parse_defaults(const Ini *ini, const char *path, const FlowSettings *flags, FlowSettings *ret,
                          char **ret_error) {
        _cleanup_(freep) const char **keys = NULL;
        size_t n_keys;
        int r;

        *ret = *flags;
        r = ini_section_keys(ini, INI_DEFAULT_SECTION, &keys, &n_keys);
        if (r < 0)
                return strdup_error(ret_error, r, "%s: cannot list the keys of [DEFAULT]", path);
        for (size_t k = 0; k < n_keys; k++)
                if (flow_settings_is_key(keys[k])) {
                        r = parse_setting(ini, path, INI_DEFAULT_SECTION, keys[k], ret, ret_error);
                        if (r < 0)
                                return r;
                }
        return 0;
}

/* The controller of a meter "<controller>.<port>". */
static const char *meter_controller(const char *meter, char *buf, size_t size) {
        const char *dot = strrchr(meter, '.');

        snprintf(buf, size, "%.*s", dot ? (int) (dot - meter) : (int) strlen(meter), meter);
        return buf;
}

int tap_table_load_file(const char *path, double default_ml_per_tick, const FlowSettings *flags, bool filter_only,
                        TapTable **ret, char **ret_error) {
        _cleanup_(ini_freep) Ini *ini = NULL;
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        int r;

        r = ini_load_file(&ini, path, ret_error);
        if (r < 0)
                return r;

        r = tap_table_new(&t);
        if (r < 0)
                return r;
        r = parse_defaults(ini, path, flags, &t->defaults, ret_error);
        if (r < 0)
                return r;
        t->has_defaults = true;

        for (size_t i = 0; i < ini->n_sections; i++) {
                const IniSection *sec = ini->sections[i];
                const char *section = sec->name;
                _cleanup_(freep) const char **keys = NULL;
                _cleanup_(freep) char *name = NULL, *relay = NULL, *err = NULL;
                bool has_mpt = false, has_tpm = false, other_keys = false;
                double ml_per_tick = default_ml_per_tick;
                FlowSettings settings = t->defaults;
                size_t n_keys;
                TapConfig *c;

                if (isempty(section))
                        return strdup_error(ret_error, -EINVAL, "%s:%u: empty section name", path, sec->line);

                r = ini_section_keys(ini, section, &keys, &n_keys);
                if (r < 0)
                        return strdup_error(ret_error, r, "%s: cannot list keys of [%s]", path, section);

                for (size_t k = 0; k < n_keys; k++) {
                        const char *key = keys[k];

                        if (flow_settings_is_key(key)) {
                                r = parse_setting(ini, path, section, key, &settings, ret_error);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        if (filter_only) {
                                /* Only the section's own keys make it an entry the server overrides. */
                                for (size_t j = 0; j < sec->n_keys; j++)
                                        if (streq(sec->keys[j].key, key))
                                                other_keys = true;
                                continue;
                        }

                        if (streq(key, "name")) {
                                r = ini_get(ini, section, key, &name, &err);
                        } else if (streq(key, "relay_name")) {
                                r = ini_get(ini, section, key, &relay, &err);
                        } else if (streq(key, "ml_per_tick")) {
                                has_mpt = true;
                                r = parse_calibration(ini, path, section, key, &ml_per_tick, ret_error);
                                if (r < 0)
                                        return r;
                        } else if (streq(key, "ticks_per_ml")) {
                                double tpm;
                                has_tpm = true;
                                r = parse_calibration(ini, path, section, key, &tpm, ret_error);
                                if (r < 0)
                                        return r;
                                ml_per_tick = 1.0 / tpm;
                        } else {
                                log_warning("%s:%u: unknown key '%s' in [%s], ignored", path,
                                            key_line(ini, section, key), key, section);
                                r = 0;
                        }
                        if (r < 0)
                                return strdup_error(ret_error, r, "%s", err ?: "bad value");
                }

                if (other_keys) {
                        char controller[256];
                        log_warning("Taps file entry %s ignored: controller %s uses the legacy API", section,
                                    meter_controller(section, controller, sizeof controller));
                }

                if (has_mpt && has_tpm)
                        return strdup_error(ret_error, -EINVAL,
                                         "%s:%u: [%s] has both ml_per_tick and ticks_per_ml; give one",
                                         path, sec->line, section);

                r = tap_table_add(t, section, name, filter_only ? 1.0 : ml_per_tick, relay);
                if (r < 0)
                        return strdup_error(ret_error, r, "%s:%u: cannot add tap [%s]", path, sec->line, section);
                c = tap_table_find_mutable(t, section);
                c->has_settings = true;
                c->settings = settings;
                if (filter_only)
                        c->ml_per_tick = 0;
        }

        *ret = TAKE_PTR(t);
        return 0;
}

int tap_registry_new(TapRegistry **ret, FlowEngine *engine, const FlowSettings *flags, TapChangeHandler handler,
                     void *userdata) {
        TapRegistry *r = calloc(1, sizeof(TapRegistry));
        if (!r)
                return -ENOMEM;
        r->engine = engine;
        r->flags = *flags;
        r->handler = handler;
        r->userdata = userdata;
        *ret = r;
        return 0;
}

TapRegistry *tap_registry_free(TapRegistry *r) {
        if (!r)
                return NULL;
        tap_table_free(r->configured);
        tap_table_free(r->settings);
        free(r);
        return NULL;
}

static void notify(TapRegistry *r, const char *meter, TapChange change) {
        if (r->handler)
                r->handler(meter, change, r->userdata);
}

/* The tap's own settings, else the taps file's for its meter (server mode), else the defaults. */
static void tap_registry_apply_settings(TapRegistry *r, const TapConfig *c) {
        const TapConfig *f = c->has_settings ? c : tap_table_find(r->settings, c->meter_name);

        (void) flow_engine_set_tap_settings(r->engine, c->meter_name, f ? &f->settings : NULL);
}

int tap_registry_replace(TapRegistry *r, const TapTable *table, TapSource source) {
        _cleanup_(tap_table_freep) TapTable *copy = NULL;
        FlowGhostMode mode;
        int changes = 0, k;

        /* Copy first: once the engine is changed, remembering the table must not fail. */
        k = tap_table_new(&copy);
        if (k < 0)
                return k;
        for (size_t i = 0; i < table->n_taps; i++) {
                const TapConfig *c = &table->taps[i];
                TapConfig *n;

                k = tap_table_add(copy, c->meter_name, c->name, c->ml_per_tick, c->relay_name);
                if (k == -EEXIST)
                        continue;
                if (k < 0)
                        return k;
                n = tap_table_find_mutable(copy, c->meter_name);
                n->has_settings = c->has_settings;
                n->settings = c->settings;
        }

        if (r->configured)
                for (size_t i = 0; i < r->configured->n_taps; i++) {
                        const char *meter = r->configured->taps[i].meter_name;
                        if (tap_table_find(copy, meter))
                                continue;
                        if (flow_engine_remove_tap(r->engine, meter) < 0)
                                continue;
                        log_info("Removing tap: %s", meter);
                        notify(r, meter, TAP_REMOVED);
                        changes++;
                }

        for (size_t i = 0; i < copy->n_taps; i++) {
                const TapConfig *c = &copy->taps[i];
                const char *relay = isempty(c->relay_name) ? NULL : c->relay_name;

                k = flow_engine_set_tap(r->engine, c->meter_name, c->name, c->ml_per_tick, relay);
                if (k < 0) {
                        log_warning_errno(k, "Cannot set tap %s: %m", c->meter_name);
                        continue;
                }
                mode = flow_engine_meter_mode(r->engine, c->meter_name);
                tap_registry_apply_settings(r, c);
                /* A reload that changes only the filter's mode still changes what D-Bus shows. */
                if (k == FLOW_TAP_UNCHANGED && mode != flow_engine_meter_mode(r->engine, c->meter_name)) {
                        notify(r, c->meter_name, TAP_UPDATED);
                        changes++;
                }
                if (k == FLOW_TAP_ADDED) {
                        if (source == TAP_SOURCE_FILE)
                                log_info("Registering new tap: %s", c->meter_name);
                        else
                                log_info("Adding tap: %s ml_per_tick=%g relay=%s", c->meter_name,
                                         c->ml_per_tick, c->relay_name);
                        notify(r, c->meter_name, TAP_ADDED);
                        changes++;
                } else if (k == FLOW_TAP_UPDATED) {
                        log_info("Updating tap: %s ml_per_tick=%g relay=%s", c->meter_name,
                                 c->ml_per_tick, c->relay_name);
                        notify(r, c->meter_name, TAP_UPDATED);
                        changes++;
                }
        }

        tap_table_free(r->configured);
        r->configured = TAKE_PTR(copy);
        return changes;
}

/* The taps file, for both modes; a missing one is an empty table ('missing' says what that means). */
static int tap_registry_read(TapRegistry *r, const char *path, double default_ml_per_tick, bool filter_only,
                             const char *missing, TapTable **ret) {
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        _cleanup_(freep) char *error = NULL;
        int k;

        k = tap_table_load_file(path, default_ml_per_tick, &r->flags, filter_only, &t, &error);
        if (k == -ENOENT) {
                log_info("Taps file %s does not exist; %s", path, missing);
                k = tap_table_new(&t);
        }
        if (k < 0) {
                if (error)
                        log_error("Bad taps file: %s", error);
                else
                        log_error_errno(k, "Cannot read taps file %s: %m", path);
                return k;
        }
        (void) flow_engine_set_default_settings(r->engine, t->has_defaults ? &t->defaults : &r->flags);
        *ret = TAKE_PTR(t);
        return 0;
}

int tap_registry_load_file(TapRegistry *r, const char *path, double default_ml_per_tick) {
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        int k;

        k = tap_registry_read(r, path, default_ml_per_tick, false, "no preconfigured taps", &t);
        if (k < 0)
                return k;
        log_named(LOG_INFO, "main", "Found %zu taps, adding to tap manager.", t->n_taps);
        return tap_registry_replace(r, t, TAP_SOURCE_FILE);
}

int tap_registry_load_settings(TapRegistry *r, const char *path) {
        TapTable *t = NULL;
        int k;

        k = tap_registry_read(r, path, 1.0, true, "the ghost filter uses the flags alone", &t);
        if (k < 0)
                return k;
        tap_table_free(r->settings);
        r->settings = t;
        if (r->configured)
                for (size_t i = 0; i < r->configured->n_taps; i++) {
                        const TapConfig *c = &r->configured->taps[i];
                        FlowGhostMode mode = flow_engine_meter_mode(r->engine, c->meter_name);

                        tap_registry_apply_settings(r, c);
                        if (mode != flow_engine_meter_mode(r->engine, c->meter_name))
                                notify(r, c->meter_name, TAP_UPDATED);
                }
        return 0;
}

void tap_registry_note_created(TapRegistry *r, const char *meter) {
        notify(r, meter, TAP_ADDED);
}

void tap_registry_note_removed(TapRegistry *r, const char *meter) {
        notify(r, meter, TAP_REMOVED);
}

size_t tap_registry_n_taps(const TapRegistry *r) {
        return flow_engine_n_taps(r->engine);
}
