/* calibration.json: see calibration-overrides.h. Read with jansson, written with the one JSON
 * writer, replaced with the one atomic file writer. */
#include <fcntl.h>
#include <jansson.h>
#include <math.h>

#define LOG_COMPONENT "calibration"
#include "log.h"

#include "calibration-overrides.h"
#include "json-writer.h"
#include "util-io.h"
#include "util-string.h"
#include "util-time.h"

#define METER_NAME_MAX 256
#define REL_EPSILON 1e-9

typedef struct Override {
        char *meter;
        double ml_per_tick;
        double server_ml_per_tick;
        uint64_t time;          /* realtime usec */
} Override;

struct CalibrationOverrides {
        char *state_dir;
        char *path;
        Override *items;
        size_t n_items;
};

int calibration_overrides_new(CalibrationOverrides **ret, const char *state_dir) {
        _cleanup_(calibration_overrides_freep) CalibrationOverrides *o = NULL;

        assert_return(ret, -EINVAL);
        assert_return(state_dir, -EINVAL);
        o = calloc(1, sizeof(CalibrationOverrides));
        if (!o)
                return -ENOMEM;
        o->state_dir = strdup(state_dir);
        o->path = strdup_printf("%s/%s", state_dir, CALIBRATION_OVERRIDES_FILE);
        if (!o->state_dir || !o->path)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

static void items_clear(Override *items, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(items[i].meter);
        free(items);
}

CalibrationOverrides *calibration_overrides_free(CalibrationOverrides *o) {
        if (!o)
                return NULL;
        items_clear(o->items, o->n_items);
        free(o->state_dir);
        free(o->path);
        free(o);
        return NULL;
}

const char *calibration_overrides_path(CalibrationOverrides *o) {
        return o->path;
}

size_t calibration_overrides_size(CalibrationOverrides *o) {
        return o->n_items;
}

static Override *override_find(Override *items, size_t n, const char *meter) {
        for (size_t i = 0; i < n; i++)
                if (streq(items[i].meter, meter))
                        return &items[i];
        return NULL;
}

static bool value_ok(json_t *v) {
        return json_is_number(v) && isfinite(json_number_value(v)) && json_number_value(v) > 0;
}

void calibration_overrides_load(CalibrationOverrides *o) {
        _cleanup_(freep) char *buf = NULL;
        Override *items = NULL;
        size_t len, n = 0;
        json_t *root, *all, *v, *entry;
        const char *meter;
        int r;

        /* Whatever was held goes: the file says what is kept. */
        items_clear(o->items, o->n_items);
        o->items = NULL;
        o->n_items = 0;

        r = io_read_file(o->path, CALIBRATION_OVERRIDES_FILE_MAX, &buf, &len);
        if (r == -ENOENT)
                return;
        if (r < 0) {
                log_warning_errno(r, "Cannot read %s (%m); no calibration is kept locally", o->path);
                return;
        }

        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
        all = json_object_get(root, "overrides");
        v = json_object_get(root, "version");
        if (!json_is_object(root) || !json_is_integer(v) || json_integer_value(v) != 1 || !json_is_object(all)) {
                log_warning("%s is not a valid calibration file; no calibration is kept locally", o->path);
                goto out;
        }
        /* All or nothing: a file half understood is not trusted. */
        items = calloc(json_object_size(all) + 1, sizeof(Override));
        if (!items) {
                log_error("Out of memory reading %s", o->path);
                goto out;
        }
        json_object_foreach(all, meter, entry) {
                json_t *mpt = json_object_get(entry, "ml_per_tick"), *smpt = json_object_get(entry, "server_ml_per_tick");
                json_t *time = json_object_get(entry, "time");
                Override *x = &items[n];

                if (!string_is_name(meter, METER_NAME_MAX) || !json_is_object(entry) || !value_ok(mpt) ||
                    !value_ok(smpt) || !json_is_string(time) ||
                    time_parse_rfc3339(json_string_value(time), &x->time) < 0) {
                        log_warning("%s has an invalid entry; no calibration is kept locally", o->path);
                        items_clear(items, n);
                        goto out;
                }
                x->meter = strdup(meter);
                if (!x->meter) {
                        log_error("Out of memory reading %s", o->path);
                        items_clear(items, n);
                        goto out;
                }
                x->ml_per_tick = json_number_value(mpt);
                x->server_ml_per_tick = json_number_value(smpt);
                n++;
        }
        o->items = items;
        o->n_items = n;
        if (n > 0)
                log_info("%zu calibrations kept locally in %s", n, o->path);
out:
        json_decref(root);
}

static int overrides_save(const char *state_dir, const Override *items, size_t n) {
        _cleanup_(freep) char *text = NULL;
        _cleanup_(closep) int dir = -1;
        JsonWriter w = JSON_WRITER_INIT;
        size_t len;
        int r;

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "version", 1);
        json_writer_key(&w, "overrides");
        json_writer_object_begin(&w);
        for (size_t i = 0; i < n; i++) {
                json_writer_key(&w, items[i].meter);
                json_writer_object_begin(&w);
                json_writer_field_double(&w, "ml_per_tick", items[i].ml_per_tick);
                json_writer_field_double(&w, "server_ml_per_tick", items[i].server_ml_per_tick);
                json_writer_field_timestamp(&w, "time", items[i].time);
                json_writer_object_end(&w);
        }
        json_writer_object_end(&w);
        json_writer_object_end(&w);
        r = json_writer_finish_with(&w, "\n", &text, &len);
        if (r < 0)
                return r;
        dir = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
                return -errno;
        return io_write_file_atomic(dir, CALIBRATION_OVERRIDES_FILE, text, len, 0640);
}

int calibration_overrides_set(CalibrationOverrides *o, const char *meter, double ml_per_tick, double server_ml_per_tick,
                              uint64_t time_realtime, char **ret_reason) {
        Override *items, *x;
        size_t n = o->n_items;
        int r;

        assert_return(string_is_name(meter, METER_NAME_MAX), -EINVAL);

        /* The file first, on a copy: on a failure nothing changes. */
        items = calloc(n + 1, sizeof(Override));
        if (!items)
                return strdup_error(ret_reason, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                items[i] = o->items[i];
                items[i].meter = strdup(o->items[i].meter);
                if (!items[i].meter) {
                        items_clear(items, i);
                        return strdup_error(ret_reason, -ENOMEM, "out of memory");
                }
        }
        x = override_find(items, n, meter);
        if (!x) {
                x = &items[n++];
                x->meter = strdup(meter);
                if (!x->meter) {
                        items_clear(items, n - 1);
                        return strdup_error(ret_reason, -ENOMEM, "out of memory");
                }
        }
        x->ml_per_tick = ml_per_tick;
        x->server_ml_per_tick = server_ml_per_tick;
        x->time = time_realtime;

        r = overrides_save(o->state_dir, items, n);
        if (r < 0) {
                items_clear(items, n);
                return strdup_error(ret_reason, r, "%s", strerror(-r));
        }
        items_clear(o->items, o->n_items);
        o->items = items;
        o->n_items = n;
        return 0;
}

static bool same_value(double a, double b) {
        return fabs(a - b) <= REL_EPSILON * (fabs(a) > fabs(b) ? fabs(a) : fabs(b));
}

int calibration_overrides_apply(CalibrationOverrides *o, TapTable *table) {
        bool dropped = false;
        int n = 0, r;

        for (size_t i = o->n_items; i > 0; i--) {
                Override *x = &o->items[i - 1];
                TapConfig *c = tap_table_find(table, x->meter);

                if (!c)
                        continue;
                if (!same_value(c->ml_per_tick, x->server_ml_per_tick)) {
                        log_info("Calibration override of %s dropped: Kegbot Server now says %g mL/tick", x->meter,
                                 c->ml_per_tick);
                        free(x->meter);
                        *x = o->items[--o->n_items];
                        dropped = true;
                        continue;
                }
                c->ml_per_tick = x->ml_per_tick;
                c->source = TAP_CALIBRATION_LOCAL_OVERRIDE;
                n++;
        }
        if (dropped) {
                r = overrides_save(o->state_dir, o->items, o->n_items);
                if (r < 0)
                        log_error_errno(r, "Cannot write %s: %m", o->path);
        }
        return n;
}
