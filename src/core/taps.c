/* Tap registry: see taps.h. The flow engine holds the live taps; this module only remembers which
 * meters the last configured table (file or server) defined, so a reload can tell "removed from the
 * configuration" apart from "created on first sight". */
#include <inttypes.h>
#include <math.h>
#include <time.h>

#define LOG_COMPONENT "TapManager"
#include "log.h"

#include "ini.h"
#include "taps.h"
#include "util-string.h"

/* A calibration applied since the table that configures its meter was (calibration.md 2.4). */
typedef struct SourceOverride {
        char *meter;
        TapCalibrationSource source;
} SourceOverride;

struct TapRegistry {
        FlowEngine *engine;
        TapChangeHandler handler;
        void *userdata;
        TapTable *configured;           /* the table applied last */
        FlowSettings flags;             /* the command line's filter settings */
        TapTable *settings;             /* server mode: the taps file's filter settings per meter */
        double default_ml_per_tick;     /* of the taps file loaded last */
        TapClockFunc clock;
        void *clock_userdata;
        SourceOverride *overrides;
        size_t n_overrides;
        TapScopeFunc scope;             /* both backends: which meters the taps file defines */
        void *scope_userdata;
};

const char *tap_calibration_source_to_string(TapCalibrationSource s) {
        static const char *const names[_TAP_CALIBRATION_SOURCE_MAX] = {
                [TAP_CALIBRATION_DEFAULT] = "default",
                [TAP_CALIBRATION_TAPS_FILE] = "taps-file",
                [TAP_CALIBRATION_SERVER] = "server",
                [TAP_CALIBRATION_LOCAL_OVERRIDE] = "local-override",
                [TAP_CALIBRATION_MEMORY] = "memory",
        };
        return s >= 0 && s < _TAP_CALIBRATION_SOURCE_MAX ? names[s] : NULL;
}

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

TapConfig *tap_table_find(const TapTable *t, const char *meter) {
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
        c.source = TAP_CALIBRATION_SERVER;
        if (!c.meter_name || !c.name || !c.relay_name) {
                tap_config_done(&c);
                return -ENOMEM;
        }
        t->taps[t->n_taps++] = c;
        return 0;
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

/* The controller of a meter "<controller>.<port>": the part before the first dot (as routes_lookup()). */
static const char *meter_controller(const char *meter, char *buf, size_t size) {
        const char *dot = strchr(meter, '.');

        snprintf(buf, size, "%.*s", dot ? (int) (dot - meter) : (int) strlen(meter), meter);
        return buf;
}

static void warn_legacy_entry(const char *meter) {
        char controller[256];

        log_warning("Taps file entry %s ignored: controller %s uses the legacy API", meter,
                    meter_controller(meter, controller, sizeof controller));
}

/* 'quiet': no warnings (a check of a file about to be written, not a load). */
static int tap_table_parse(const Ini *ini, const char *path, double default_ml_per_tick, const FlowSettings *flags,
                           bool filter_only, bool quiet, TapTable **ret, char **ret_error) {
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        int r;

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
                                if (!quiet)
                                        log_warning("%s:%u: unknown key '%s' in [%s], ignored", path,
                                                    key_line(ini, section, key), key, section);
                                r = 0;
                        }
                        if (r < 0)
                                return strdup_error(ret_error, r, "%s", err ?: "bad value");
                }

                if (other_keys && !quiet)
                        warn_legacy_entry(section);

                if (has_mpt && has_tpm)
                        return strdup_error(ret_error, -EINVAL,
                                         "%s:%u: [%s] has both ml_per_tick and ticks_per_ml; give one",
                                         path, sec->line, section);

                r = tap_table_add(t, section, name, filter_only ? 1.0 : ml_per_tick, relay);
                if (r < 0)
                        return strdup_error(ret_error, r, "%s:%u: cannot add tap [%s]", path, sec->line, section);
                c = tap_table_find(t, section);
                c->has_settings = true;
                c->settings = settings;
                c->tap_keys = name || relay || has_mpt || has_tpm;
                /* A key inherited from [DEFAULT] is the taps file's too. */
                c->source = has_mpt || has_tpm ? TAP_CALIBRATION_TAPS_FILE : TAP_CALIBRATION_DEFAULT;
                if (filter_only)
                        c->ml_per_tick = 0;
        }

        *ret = TAKE_PTR(t);
        return 0;
}

int tap_table_load_file(const char *path, double default_ml_per_tick, const FlowSettings *flags, bool filter_only,
                        TapTable **ret, char **ret_error) {
        _cleanup_(ini_freep) Ini *ini = NULL;
        int r;

        r = ini_load_file(&ini, path, ret_error);
        if (r < 0)
                return r;
        return tap_table_parse(ini, path, default_ml_per_tick, flags, filter_only, false, ret, ret_error);
}

int tap_table_load_buffer(const char *name, const char *text, size_t len, double default_ml_per_tick,
                          const FlowSettings *flags, TapTable **ret, char **ret_error) {
        _cleanup_(ini_freep) Ini *ini = NULL;
        int r;

        r = ini_new(&ini, name);
        if (r < 0)
                return r;
        r = ini_parse_buffer(ini, name, text, len, ret_error);
        if (r < 0)
                return r;
        return tap_table_parse(ini, name, default_ml_per_tick, flags, false, true, ret, ret_error);
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
        r->default_ml_per_tick = 1.0 / 2.2;
        *ret = r;
        return 0;
}

TapRegistry *tap_registry_free(TapRegistry *r) {
        if (!r)
                return NULL;
        tap_table_free(r->configured);
        tap_table_free(r->settings);
        for (size_t i = 0; i < r->n_overrides; i++)
                free(r->overrides[i].meter);
        free(r->overrides);
        free(r);
        return NULL;
}

void tap_registry_set_clock(TapRegistry *r, TapClockFunc now, void *userdata) {
        r->clock = now;
        r->clock_userdata = userdata;
}

static uint64_t clock_usec(clockid_t id) {
        struct timespec ts;

        (void) clock_gettime(id, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static void registry_now(TapRegistry *r, FlowTime *ret) {
        if (r->clock) {
                r->clock(ret, r->clock_userdata);
                return;
        }
        *ret = (FlowTime) {
                .monotonic = clock_usec(CLOCK_MONOTONIC),
                .realtime = clock_usec(CLOCK_REALTIME),
                .boottime = clock_usec(CLOCK_BOOTTIME),
        };
}

static SourceOverride *override_find(TapRegistry *r, const char *meter) {
        for (size_t i = 0; i < r->n_overrides; i++)
                if (streq(r->overrides[i].meter, meter))
                        return &r->overrides[i];
        return NULL;
}

static void override_drop(TapRegistry *r, const char *meter) {
        SourceOverride *o = override_find(r, meter);

        if (!o)
                return;
        free(o->meter);
        *o = r->overrides[--r->n_overrides];
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

void tap_registry_set_scope(TapRegistry *r, TapScopeFunc local, void *userdata) {
        r->scope = local;
        r->scope_userdata = userdata;
}

/* Whether a table from 'source' defines the tap of 'meter' (always, with one backend). */
static bool in_scope(TapRegistry *r, const char *meter, TapSource source) {
        if (!r->scope)
                return true;
        return r->scope(meter, r->scope_userdata) == (source == TAP_SOURCE_FILE);
}

static int table_add_config(TapTable *t, const TapConfig *c) {
        TapConfig *n;
        int k;

        k = tap_table_add(t, c->meter_name, c->name, c->ml_per_tick, c->relay_name);
        if (k < 0)
                return k;
        n = tap_table_find(t, c->meter_name);
        n->has_settings = c->has_settings;
        n->settings = c->settings;
        n->source = c->source;
        n->tap_keys = c->tap_keys;
        return 0;
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

                if (!in_scope(r, c->meter_name, source)) {
                        char controller[256];

                        if (source == TAP_SOURCE_SERVER)
                                log_debug("Ignoring server tap %s: controller %s reports through the event protocol",
                                          c->meter_name, meter_controller(c->meter_name, controller, sizeof controller));
                        else if (c->tap_keys)
                                warn_legacy_entry(c->meter_name);
                        continue;
                }
                k = table_add_config(copy, c);
                if (k == -EEXIST)
                        continue;
                if (k < 0)
                        return k;
        }
        /* Both backends: the taps of the other source stay as they are. */
        if (r->configured)
                for (size_t i = 0; i < r->configured->n_taps; i++) {
                        const TapConfig *c = &r->configured->taps[i];

                        if (in_scope(r, c->meter_name, source))
                                continue;
                        k = table_add_config(copy, c);
                        if (k < 0 && k != -EEXIST)
                                return k;
                }

        if (r->configured)
                for (size_t i = 0; i < r->configured->n_taps; i++) {
                        const char *meter = r->configured->taps[i].meter_name;
                        FlowTime now;

                        if (tap_table_find(copy, meter))
                                continue;
                        registry_now(r, &now);
                        if (flow_engine_remove_tap(r->engine, meter, &now) < 0)
                                continue;
                        override_drop(r, meter);
                        log_info("Removing tap: %s", meter);
                        notify(r, meter, TAP_REMOVED);
                        changes++;
                }

        for (size_t i = 0; i < copy->n_taps; i++) {
                const TapConfig *c = &copy->taps[i];
                const char *relay = isempty(c->relay_name) ? NULL : c->relay_name;
                SourceOverride *o = override_find(r, c->meter_name);

                if (!in_scope(r, c->meter_name, source))
                        continue;
                k = flow_engine_set_tap(r->engine, c->meter_name, c->name, c->ml_per_tick, relay);
                if (k < 0) {
                        log_warning_errno(k, "Cannot set tap %s: %m", c->meter_name);
                        continue;
                }
                /* The configuration speaks for the tap again; D-Bus shows where its value is from. */
                if (o) {
                        bool changed = o->source != c->source;
                        override_drop(r, c->meter_name);
                        if (changed && k == FLOW_TAP_UNCHANGED) {
                                notify(r, c->meter_name, TAP_UPDATED);
                                changes++;
                        }
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

/* The taps file's filter settings for the taps the server gives (taken), applied at once. */
static void registry_set_settings(TapRegistry *r, TapTable *t) {
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
}

int tap_registry_load_file(TapRegistry *r, const char *path, double default_ml_per_tick) {
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        int k;

        k = tap_registry_read(r, path, default_ml_per_tick, false, "no preconfigured taps", &t);
        if (k < 0)
                return k;
        r->default_ml_per_tick = default_ml_per_tick;
        log_named(LOG_INFO, "main", "Found %zu taps, adding to tap manager.", t->n_taps);
        k = tap_registry_replace(r, t, TAP_SOURCE_FILE);
        if (k < 0)
                return k;
        /* Both backends: the same file gives the legacy controllers' taps their filter settings. */
        if (r->scope)
                registry_set_settings(r, TAKE_PTR(t));

        /* A calibration that could not be saved lasts until the reload: first-sight taps the file
         * does not configure get the default calibration back. */
        for (size_t i = r->n_overrides; i > 0; i--) {
                _cleanup_(freep) char *meter = NULL;
                FlowTapInfo info;

                if (r->overrides[i - 1].source != TAP_CALIBRATION_MEMORY)
                        continue;
                meter = strdup(r->overrides[i - 1].meter);
                if (!meter)
                        return -ENOMEM;
                override_drop(r, meter);
                if (flow_engine_get_tap(r->engine, meter, &info) < 0 || !info.auto_created)
                        continue;
                (void) flow_engine_set_tap_calibration(r->engine, meter, default_ml_per_tick, false);
                log_info("Updating tap: %s ml_per_tick=%g relay=%s", meter, default_ml_per_tick, info.relay_name);
                notify(r, meter, TAP_UPDATED);
                k++;
        }
        return k;
}

int tap_registry_load_settings(TapRegistry *r, const char *path) {
        TapTable *t = NULL;
        int k;

        k = tap_registry_read(r, path, 1.0, true, "the ghost filter uses the flags alone", &t);
        if (k < 0)
                return k;
        registry_set_settings(r, t);
        return 0;
}

void tap_registry_note_created(TapRegistry *r, const char *meter) {
        notify(r, meter, TAP_ADDED);
}

void tap_registry_note_removed(TapRegistry *r, const char *meter) {
        notify(r, meter, TAP_REMOVED);
}

int tap_registry_set_calibration(TapRegistry *r, const char *meter, double ml_per_tick, TapCalibrationSource source) {
        SourceOverride *o;
        FlowTapInfo info;
        int k;

        k = flow_engine_get_tap(r->engine, meter, &info);
        if (k < 0)
                return k;
        o = override_find(r, meter);
        if (!o) {
                _cleanup_(freep) char *m = strdup(meter);
                SourceOverride *a;

                if (!m)
                        return -ENOMEM;
                a = reallocarray(r->overrides, r->n_overrides + 1, sizeof(SourceOverride));
                if (!a)
                        return -ENOMEM;
                r->overrides = a;
                o = &r->overrides[r->n_overrides++];
                *o = (SourceOverride) { .meter = TAKE_PTR(m) };
        }
        o->source = source;
        k = flow_engine_set_tap_calibration(r->engine, meter, ml_per_tick, source == TAP_CALIBRATION_TAPS_FILE);
        if (k < 0)
                return k;
        log_info("Updating tap: %s ml_per_tick=%g relay=%s", meter, ml_per_tick, info.relay_name);
        notify(r, meter, TAP_UPDATED);
        return 0;
}

TapCalibrationSource tap_registry_calibration_source(TapRegistry *r, const char *meter) {
        SourceOverride *o = override_find(r, meter);
        const TapConfig *c;

        if (o)
                return o->source;
        c = tap_table_find(r->configured, meter);
        return c ? c->source : TAP_CALIBRATION_DEFAULT;
}

int tap_registry_check_text(TapRegistry *r, const char *name, const char *text, size_t len, const char *meter,
                            double *ret_ml_per_tick, char **ret_error) {
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        const TapConfig *c;
        int k;

        k = tap_table_load_buffer(name, text, len, r->default_ml_per_tick, &r->flags, &t, ret_error);
        if (k < 0)
                return k;
        c = tap_table_find(t, meter);
        if (!c)
                return strdup_error(ret_error, -EINVAL, "%s: no section [%s]", name, meter);
        *ret_ml_per_tick = c->ml_per_tick;
        return 0;
}

size_t tap_registry_n_taps(const TapRegistry *r) {
        return flow_engine_n_taps(r->engine);
}
