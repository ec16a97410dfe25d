/* quarantine.json: see quarantine.h. Read with jansson, written with the one JSON writer. */
#include <fcntl.h>
#include <jansson.h>
#include <math.h>

#define LOG_COMPONENT "flowmanager"
#include "log.h"

#include "json-writer.h"
#include "quarantine.h"
#include "util-io.h"
#include "util-string.h"
#include "util-time.h"

int quarantine_format(FlowEngine *e, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "version", 1);
        json_writer_key(&w, "meters");
        json_writer_object_begin(&w);
        for (size_t i = 0; i < flow_engine_n_meters(e); i++) {
                FlowMeterInfo mi;

                if (flow_engine_meter_at(e, i, &mi) < 0 || !mi.quarantined)
                        continue;
                json_writer_key(&w, mi.meter_name);
                json_writer_object_begin(&w);
                json_writer_field_timestamp(&w, "since", mi.quarantined_since);
                json_writer_field_uint(&w, "cuts", mi.quarantine_cuts);
                json_writer_field_double(&w, "max_pour_s", mi.quarantine_max_pour_s);
                json_writer_object_end(&w);
        }
        json_writer_object_end(&w);
        json_writer_object_end(&w);
        return json_writer_finish_with(&w, "\n", ret, NULL);
}

int quarantine_save(FlowEngine *e, const char *state_dir) {
        _cleanup_(freep) char *text = NULL;
        _cleanup_(closep) int dir = -1;
        int r;

        r = quarantine_format(e, &text);
        if (r < 0)
                return log_error_errno(r, "Cannot write %s/%s: %m", state_dir, QUARANTINE_FILE);
        dir = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
                return log_error_errno(errno, "Cannot write %s/%s: %m", state_dir, QUARANTINE_FILE);
        r = io_write_file_atomic(dir, QUARANTINE_FILE, text, strlen(text), 0640);
        if (r < 0)
                return log_error_errno(r, "Cannot write %s/%s: %m", state_dir, QUARANTINE_FILE);
        return 0;
}

/* One entry; false if it is not one. */
static bool entry_parse(const char *meter, json_t *v, uint64_t *ret_since, unsigned *ret_cuts, double *ret_max) {
        json_t *since = json_object_get(v, "since"), *cuts = json_object_get(v, "cuts");
        json_t *max = json_object_get(v, "max_pour_s");

        /* Meter names are printable and have no spaces (what kegnet and D-Bus accept). */
        if (!string_is_name(meter, 256))
                return false;
        if (!json_is_object(v) || !json_is_string(since) ||
            !json_is_integer(cuts) || !json_is_number(max))
                return false;
        if (time_parse_rfc3339(json_string_value(since), ret_since) < 0)
                return false;
        if (json_integer_value(cuts) < 0 || json_integer_value(cuts) > UINT32_MAX)
                return false;
        *ret_cuts = (unsigned) json_integer_value(cuts);
        *ret_max = json_number_value(max);
        return isfinite(*ret_max) && *ret_max >= 0;
}

typedef struct Entry {
        const char *meter;
        uint64_t since;
        unsigned cuts;
        double max_pour_s;
} Entry;

int quarantine_load(FlowEngine *e, const char *state_dir) {
        _cleanup_(freep) char *path = NULL, *buf = NULL;
        _cleanup_(freep) Entry *entries = NULL;
        json_t *root = NULL, *meters, *v;
        const char *meter;
        size_t len, n_entries = 0;
        int r, n = 0;

        if (asprintf(&path, "%s/%s", state_dir, QUARANTINE_FILE) < 0)
                return log_error_errno(-ENOMEM, "Out of memory");
        r = io_read_file(path, QUARANTINE_FILE_MAX, &buf, &len);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                log_warning_errno(r, "Cannot read %s (%m); no tap is quarantined", path);
                return 0;
        }

        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
        meters = json_object_get(root, "meters");
        v = json_object_get(root, "version");
        if (!json_is_object(root) || !json_is_integer(v) || json_integer_value(v) != 1 || !json_is_object(meters)) {
                log_warning("%s is not a valid quarantine file; no tap is quarantined", path);
                goto out;
        }
        /* All or nothing: a file half understood is not trusted. */
        entries = calloc(json_object_size(meters) + 1, sizeof(Entry));
        if (!entries) {
                log_error("Out of memory reading %s; no tap is quarantined", path);
                goto out;
        }
        json_object_foreach(meters, meter, v) {
                Entry *x = &entries[n_entries++];

                x->meter = meter;
                if (!entry_parse(meter, v, &x->since, &x->cuts, &x->max_pour_s)) {
                        log_warning("%s has an invalid entry; no tap is quarantined", path);
                        goto out;
                }
        }
        for (size_t i = 0; i < n_entries; i++) {
                const Entry *x = &entries[i];
                char since[TIME_RFC3339_MAX];

                r = flow_engine_restore_quarantine(e, x->meter, x->since, x->cuts, x->max_pour_s);
                if (r < 0) {
                        log_warning_errno(r, "Cannot restore the quarantine of %s: %m", x->meter);
                        continue;
                }
                (void) time_format_rfc3339(x->since, since);
                log_warning("Tap %s is quarantined since %s (%u cuts of %g s); its ticks are ignored until "
                            "ClearQuarantine", x->meter, since, x->cuts, x->max_pour_s);
                n++;
        }
out:
        json_decref(root);
        return n;
}
