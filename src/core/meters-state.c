/* meters.json: see meters-state.h. The file:
 *
 *   {"version":1,
 *    "meters":{"kegboard.flow0":{"reading":1440,"carry":0}},
 *    "controllers":{"kegboard":{"serial_number":"KB-0000","uptime_ms":812,"counts_from_zero":true}},
 *    "pending":[{"uuid":"...","meter":"kegboard.flow0","reading":2880,"carry":0}]}
 *
 * serial_number is null when unknown; uptime_ms is absent when the board never said; counts_from_zero
 * is absent when false. */
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <sys/stat.h>

#define LOG_COMPONENT "MeterState"
#include "log.h"

#include "json-writer.h"
#include "meters-state.h"
#include "util-io.h"
#include "util-utf8.h"

#define NAME_MAX_LEN 255U
#define CARRY_MAX (UINT64_C(1) << 53)   /* JSON numbers stay exact below this */

typedef struct MeterEntry {
        char *name;
        FlowMeterState state;
} MeterEntry;

typedef struct Pending {
        char uuid[UUID_STRING_MAX];
        char *meter;
        FlowMeterState after;
} Pending;

struct MetersState {
        char *dir;
        int dir_fd;
        bool dirty;

        MeterEntry *meters;
        size_t n_meters;
        MetersController *controllers;
        size_t n_controllers;
        Pending *pending;
        size_t n_pending;
};

static void meters_state_clear(MetersState *ms) {
        for (size_t i = 0; i < ms->n_meters; i++)
                free(ms->meters[i].name);
        free(ms->meters);
        ms->meters = NULL;
        ms->n_meters = 0;
        for (size_t i = 0; i < ms->n_controllers; i++) {
                free(ms->controllers[i].name);
                free(ms->controllers[i].serial_number);
        }
        free(ms->controllers);
        ms->controllers = NULL;
        ms->n_controllers = 0;
        for (size_t i = 0; i < ms->n_pending; i++)
                free(ms->pending[i].meter);
        free(ms->pending);
        ms->pending = NULL;
        ms->n_pending = 0;
}

int meters_state_new(MetersState **ret, const char *state_dir) {
        _cleanup_(meters_state_freep) MetersState *ms = NULL;

        assert_return(ret, -EINVAL);
        assert_return(!isempty(state_dir), -EINVAL);

        ms = calloc(1, sizeof(MetersState));
        if (!ms)
                return -ENOMEM;
        ms->dir_fd = -1;
        ms->dir = strdup(state_dir);
        if (!ms->dir)
                return -ENOMEM;
        ms->dir_fd = io_mkdir_p_open(state_dir, 0750);
        if (ms->dir_fd < 0)
                return log_error_errno(ms->dir_fd, "Cannot open state directory %s: %m", state_dir);
        *ret = TAKE_PTR(ms);
        return 0;
}

MetersState *meters_state_free(MetersState *ms) {
        if (!ms)
                return NULL;
        meters_state_clear(ms);
        safe_close(ms->dir_fd);
        free(ms->dir);
        free(ms);
        return NULL;
}

/* ---- lookups ---- */

static MeterEntry *meter_find(MetersState *ms, const char *meter) {
        for (size_t i = 0; i < ms->n_meters; i++)
                if (streq(ms->meters[i].name, meter))
                        return &ms->meters[i];
        return NULL;
}

static bool name_ok(const char *s) {
        size_t l = s ? strlen(s) : 0;
        return l > 0 && l <= NAME_MAX_LEN && utf8_is_valid(s);
}

static int meter_put(MetersState *ms, const char *meter, const FlowMeterState *s) {
        MeterEntry *e = meter_find(ms, meter);

        if (!e) {
                if (ms->n_meters >= FLOW_ENGINE_MAX_METERS)
                        return -ENOSPC;
                MeterEntry *n = reallocarray(ms->meters, ms->n_meters + 1, sizeof(MeterEntry));
                if (!n)
                        return -ENOMEM;
                ms->meters = n;
                e = &ms->meters[ms->n_meters];
                *e = (MeterEntry) { .name = strdup(meter) };
                if (!e->name)
                        return -ENOMEM;
                ms->n_meters++;
        }
        e->state = *s;
        return 0;
}

size_t meters_state_n_meters(MetersState *ms) {
        return ms ? ms->n_meters : 0;
}

int meters_state_meter_at(MetersState *ms, size_t i, const char **ret_name, FlowMeterState *ret) {
        assert_return(ms, -EINVAL);
        if (i >= ms->n_meters)
                return -ENOENT;
        if (ret_name)
                *ret_name = ms->meters[i].name;
        if (ret)
                *ret = ms->meters[i].state;
        return 0;
}

int meters_state_get_meter(MetersState *ms, const char *meter, FlowMeterState *ret) {
        MeterEntry *e;

        assert_return(ms, -EINVAL);
        assert_return(meter, -EINVAL);
        e = meter_find(ms, meter);
        if (!e)
                return -ENOENT;
        if (ret)
                *ret = e->state;
        return 0;
}

int meters_state_set_meter(MetersState *ms, const char *meter, const FlowMeterState *s) {
        MeterEntry *e;
        int r;

        assert_return(ms, -EINVAL);
        assert_return(s, -EINVAL);
        if (!name_ok(meter) || s->carry > CARRY_MAX)
                return -EINVAL;
        e = meter_find(ms, meter);
        if (e && e->state.accounted == s->accounted && e->state.carry == s->carry)
                return 0;
        r = meter_put(ms, meter, s);
        if (r < 0)
                return r;
        ms->dirty = true;
        return 0;
}

void meters_state_forget_meter(MetersState *ms, const char *meter) {
        MeterEntry *e;
        size_t i;

        assert_return(ms, );
        e = meter_find(ms, meter);
        if (!e)
                return;
        i = (size_t) (e - ms->meters);
        free(e->name);
        memmove(ms->meters + i, ms->meters + i + 1, (ms->n_meters - i - 1) * sizeof(MeterEntry));
        ms->n_meters--;
        ms->dirty = true;
}

const MetersController *meters_state_get_controller(MetersState *ms, const char *name) {
        if (!ms || !name)
                return NULL;
        for (size_t i = 0; i < ms->n_controllers; i++)
                if (streq(ms->controllers[i].name, name))
                        return &ms->controllers[i];
        return NULL;
}

int meters_state_set_controller(MetersState *ms, const char *name, const char *serial_number, bool has_uptime,
                                uint64_t uptime_ms) {
        MetersController *c = (MetersController *) meters_state_get_controller(ms, name);
        char *serial = NULL;

        assert_return(ms, -EINVAL);
        if (!name_ok(name) || (serial_number && (strlen(serial_number) > NAME_MAX_LEN || !utf8_is_valid(serial_number))))
                return -EINVAL;
        if (serial_number) {
                serial = strdup(serial_number);
                if (!serial)
                        return -ENOMEM;
        }
        if (!c) {
                if (ms->n_controllers >= METERS_STATE_CONTROLLERS_MAX) {
                        free(serial);
                        return -ENOSPC;
                }
                MetersController *n = reallocarray(ms->controllers, ms->n_controllers + 1, sizeof(MetersController));
                if (!n) {
                        free(serial);
                        return -ENOMEM;
                }
                ms->controllers = n;
                c = &ms->controllers[ms->n_controllers];
                *c = (MetersController) { .name = strdup(name) };
                if (!c->name) {
                        free(serial);
                        return -ENOMEM;
                }
                ms->n_controllers++;
        }
        if (serial) {
                free(c->serial_number);
                c->serial_number = serial;
        }
        if (has_uptime) {
                c->has_uptime = true;
                c->uptime_ms = uptime_ms;
        }
        ms->dirty = true;
        return 0;
}

int meters_state_set_counts_from_zero(MetersState *ms, const char *name) {
        MetersController *c = (MetersController *) meters_state_get_controller(ms, name);

        assert_return(ms, -EINVAL);
        if (!c)
                return -ENOENT;
        if (!c->counts_from_zero) {
                c->counts_from_zero = true;
                ms->dirty = true;
        }
        return 0;
}

size_t meters_state_n_controllers(MetersState *ms) {
        return ms ? ms->n_controllers : 0;
}

const MetersController *meters_state_controller_at(MetersState *ms, size_t i) {
        return ms && i < ms->n_controllers ? &ms->controllers[i] : NULL;
}

/* ---- drinks on their way to disk ---- */

static Pending *pending_find(MetersState *ms, const char *uuid, size_t *ret_idx) {
        for (size_t i = 0; i < ms->n_pending; i++)
                if (streq(ms->pending[i].uuid, uuid)) {
                        if (ret_idx)
                                *ret_idx = i;
                        return &ms->pending[i];
                }
        return NULL;
}

static int pending_add(MetersState *ms, const char *uuid, const char *meter, const FlowMeterState *after) {
        Pending *n, *p;

        n = reallocarray(ms->pending, ms->n_pending + 1, sizeof(Pending));
        if (!n)
                return -ENOMEM;
        ms->pending = n;
        p = &ms->pending[ms->n_pending];
        *p = (Pending) { .after = *after, .meter = strdup(meter) };
        if (!p->meter)
                return -ENOMEM;
        memcpy(p->uuid, uuid, UUID_STRING_MAX);
        ms->n_pending++;
        return 0;
}

static void pending_remove_at(MetersState *ms, size_t i) {
        free(ms->pending[i].meter);
        memmove(ms->pending + i, ms->pending + i + 1, (ms->n_pending - i - 1) * sizeof(Pending));
        ms->n_pending--;
}

int meters_state_begin_drink(MetersState *ms, const char *uuid, const char *meter, const FlowMeterState *after) {
        int r;

        assert_return(ms, -EINVAL);
        assert_return(after, -EINVAL);
        if (!uuid || !uuid_is_canonical(uuid) || !name_ok(meter) || after->carry > CARRY_MAX)
                return -EINVAL;
        if (pending_find(ms, uuid, NULL))
                return -EEXIST;
        r = pending_add(ms, uuid, meter, after);
        if (r < 0)
                return r;
        ms->dirty = true;
        return 0;
}

int meters_state_end_drink(MetersState *ms, const char *uuid, bool durable) {
        Pending *p;
        size_t i = 0;
        int r;

        assert_return(ms, -EINVAL);
        assert_return(uuid, -EINVAL);
        p = pending_find(ms, uuid, &i);
        if (!p)
                return -ENOENT;
        if (durable) {
                r = meter_put(ms, p->meter, &p->after);
                if (r < 0)
                        return r;
        }
        pending_remove_at(ms, i);
        ms->dirty = true;
        return 0;
}

size_t meters_state_n_pending(MetersState *ms) {
        return ms ? ms->n_pending : 0;
}

int meters_state_resolve_pending(MetersState *ms, MetersDurableFunc durable, void *userdata) {
        assert_return(ms, -EINVAL);
        assert_return(durable, -EINVAL);

        /* In the order they were begun: a later drink of the same meter has the later state. */
        while (ms->n_pending > 0) {
                Pending *p = &ms->pending[0];
                int k = durable(p->uuid, userdata);

                if (k > 0) {
                        log_info("Drink %s was written before the last stop: meter %s is accounted up to %" PRIu32,
                                 p->uuid, p->meter, p->after.accounted);
                        if (meter_put(ms, p->meter, &p->after) < 0)
                                return log_error_errno(ENOMEM, "Out of memory");
                } else
                        log_info("Drink %s was never written (the core stopped first); its ticks on %s are "
                                 "counted again from the meter", p->uuid, p->meter);
                pending_remove_at(ms, 0);
                ms->dirty = true;
        }
        return 0;
}

/* ---- the file ---- */

int meters_state_format(MetersState *ms, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(ms, -EINVAL);
        assert_return(ret, -EINVAL);

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "version", 1);
        json_writer_key(&w, "meters");
        json_writer_object_begin(&w);
        for (size_t i = 0; i < ms->n_meters; i++) {
                json_writer_key(&w, ms->meters[i].name);
                json_writer_object_begin(&w);
                json_writer_field_uint(&w, "reading", ms->meters[i].state.accounted);
                json_writer_field_uint(&w, "carry", ms->meters[i].state.carry);
                json_writer_object_end(&w);
        }
        json_writer_object_end(&w);
        json_writer_key(&w, "controllers");
        json_writer_object_begin(&w);
        for (size_t i = 0; i < ms->n_controllers; i++) {
                const MetersController *c = &ms->controllers[i];

                json_writer_key(&w, c->name);
                json_writer_object_begin(&w);
                json_writer_field_string(&w, "serial_number", c->serial_number);
                if (c->has_uptime)
                        json_writer_field_uint(&w, "uptime_ms", c->uptime_ms);
                if (c->counts_from_zero)
                        json_writer_field_bool(&w, "counts_from_zero", true);
                json_writer_object_end(&w);
        }
        json_writer_object_end(&w);
        json_writer_key(&w, "pending");
        json_writer_array_begin(&w);
        for (size_t i = 0; i < ms->n_pending; i++) {
                const Pending *p = &ms->pending[i];

                json_writer_object_begin(&w);
                json_writer_field_string(&w, "uuid", p->uuid);
                json_writer_field_string(&w, "meter", p->meter);
                json_writer_field_uint(&w, "reading", p->after.accounted);
                json_writer_field_uint(&w, "carry", p->after.carry);
                json_writer_object_end(&w);
        }
        json_writer_array_end(&w);
        json_writer_object_end(&w);
        return json_writer_finish_with(&w, "\n", ret, NULL);
}

int meters_state_save(MetersState *ms) {
        _cleanup_(freep) char *text = NULL;
        int r;

        assert_return(ms, -EINVAL);

        r = meters_state_format(ms, &text);
        if (r < 0)
                return r;
        r = io_write_file_atomic(ms->dir_fd, METERS_STATE_FILE, text, strlen(text), 0640);
        if (r < 0)
                return r;
        ms->dirty = false;
        return 0;
}

bool meters_state_is_dirty(MetersState *ms) {
        return ms && ms->dirty;
}

/* A meter state object {"reading": u32, "carry": u53}. */
static bool parse_state(json_t *o, FlowMeterState *ret) {
        json_t *r = json_object_get(o, "reading"), *c = json_object_get(o, "carry");

        if (!json_is_integer(r) || json_integer_value(r) < 0 || json_integer_value(r) > (json_int_t) UINT32_MAX)
                return false;
        if (!json_is_integer(c) || json_integer_value(c) < 0 || (uint64_t) json_integer_value(c) > CARRY_MAX)
                return false;
        *ret = (FlowMeterState) {
                .accounted = (uint32_t) json_integer_value(r),
                .carry = (uint64_t) json_integer_value(c),
        };
        return true;
}

/* Fills ms from the document; on failure *ret_why says what is wrong (static text). */
static int parse_document(MetersState *ms, json_t *root, const char **ret_why) {
        json_t *meters, *controllers, *pending, *v, *o;
        const char *key;
        size_t i;
        int r;

        if (!json_is_object(root)) {
                *ret_why = "not a JSON object";
                return -EBADMSG;
        }
        v = json_object_get(root, "version");
        if (!json_is_integer(v) || json_integer_value(v) != 1) {
                *ret_why = "unknown version";
                return -EBADMSG;
        }
        meters = json_object_get(root, "meters");
        controllers = json_object_get(root, "controllers");
        pending = json_object_get(root, "pending");
        if (!json_is_object(meters) || !json_is_object(controllers) || !json_is_array(pending)) {
                *ret_why = "\"meters\", \"controllers\" or \"pending\" missing";
                return -EBADMSG;
        }

        json_object_foreach(meters, key, o) {
                FlowMeterState s;

                if (!name_ok(key) || !json_is_object(o) || !parse_state(o, &s)) {
                        *ret_why = "a bad meter entry";
                        return -EBADMSG;
                }
                r = meter_put(ms, key, &s);
                if (r == -ENOSPC) {
                        *ret_why = "too many meters";
                        return -EBADMSG;
                }
                if (r < 0)
                        return r;
        }
        json_object_foreach(controllers, key, o) {
                json_t *serial = json_object_get(o, "serial_number"), *up = json_object_get(o, "uptime_ms");
                json_t *zero = json_object_get(o, "counts_from_zero");

                if (!name_ok(key) || !json_is_object(o) || (!json_is_null(serial) && !json_is_string(serial)) ||
                    (up && (!json_is_integer(up) || json_integer_value(up) < 0)) || (zero && !json_is_boolean(zero))) {
                        *ret_why = "a bad controller entry";
                        return -EBADMSG;
                }
                r = meters_state_set_controller(ms, key, json_string_value(serial), up != NULL,
                                                up ? (uint64_t) json_integer_value(up) : 0);
                if (r == -EINVAL || r == -ENOSPC) {
                        *ret_why = "a bad controller entry";
                        return -EBADMSG;
                }
                if (r < 0)
                        return r;
                if (json_is_true(zero))
                        (void) meters_state_set_counts_from_zero(ms, key);
        }
        json_array_foreach(pending, i, o) {
                json_t *uuid = json_object_get(o, "uuid"), *meter = json_object_get(o, "meter");
                FlowMeterState s;

                if (!json_is_object(o) || !json_is_string(uuid) || !uuid_is_canonical(json_string_value(uuid)) ||
                    !json_is_string(meter) || !name_ok(json_string_value(meter)) || !parse_state(o, &s) ||
                    pending_find(ms, json_string_value(uuid), NULL)) {
                        *ret_why = "a bad pending drink";
                        return -EBADMSG;
                }
                r = pending_add(ms, json_string_value(uuid), json_string_value(meter), &s);
                if (r < 0)
                        return r;
        }
        return 0;
}

int meters_state_load(MetersState *ms) {
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) char *buf = NULL;
        const char *why = NULL;
        json_error_t err;
        json_t *root;
        size_t len = 0;
        int r;

        assert_return(ms, -EINVAL);

        meters_state_clear(ms);
        ms->dirty = false;

        fd = openat(ms->dir_fd, METERS_STATE_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0 && errno == ENOENT) {
                log_info("No %s/%s yet: every meter starts from its first reading", ms->dir, METERS_STATE_FILE);
                return 0;
        }
        if (fd < 0) {
                log_warning_errno(errno, "Cannot read %s/%s (%m); every meter starts from its first reading",
                                  ms->dir, METERS_STATE_FILE);
                return 0;
        }
        r = io_read_all(fd, METERS_STATE_FILE_MAX, &buf, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_warning_errno(r, "Cannot read %s/%s (%m); every meter starts from its first reading",
                                  ms->dir, METERS_STATE_FILE);
                return 0;
        }

        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
        if (!root)
                why = "not valid JSON";
        else {
                r = parse_document(ms, root, &why);
                json_decref(root);
                if (r == -ENOMEM) {
                        meters_state_clear(ms);
                        return r;
                }
                if (r >= 0)
                        why = NULL;
        }
        if (why) {
                meters_state_clear(ms);
                log_warning("Ignoring %s/%s: %s; every meter starts from its first reading", ms->dir,
                            METERS_STATE_FILE, why);
                return 0;
        }
        log_info("Meter state from %s/%s: %zu meters, %zu controllers", ms->dir, METERS_STATE_FILE,
                 ms->n_meters, ms->n_controllers);
        return 0;
}
