/* The Kegboard Event Protocol codec: see kbevent.h. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json-writer.h"
#include "kbevent.h"
#include "util-double.h"
#include "util-escape.h"
#include "util-hex.h"
#include "util-string.h"
#include "util-strv.h"
#include "util-time.h"
#include "util-utf8.h"
#include "util-uuid.h"

#define MESSAGE_MAX 256
#define AUTH_DEVICE_MAX 64
#define TOKEN_VALUE_MAX 256
#define ID_STRING_MAX 64
#define SENSOR_MAX 64

static const char *const type_names[_KBEVENT_TYPE_MAX] = {
        [KBEVENT_POUR] = "pour",
        [KBEVENT_POUR_UPDATE] = "pour_update",
        [KBEVENT_TEMPERATURE] = "temperature",
        [KBEVENT_TOKEN] = "token",
        [KBEVENT_STATUS] = "status",
        [KBEVENT_COMMAND_RESULT] = "command_result",
        [KBEVENT_GRANT_END] = "grant_end",
};

const char *kbevent_type_to_string(KbEventType t) {
        return t >= 0 && t < _KBEVENT_TYPE_MAX ? type_names[t] : NULL;
}

KbEventType kbevent_type_from_string(const char *s) {
        if (!s)
                return _KBEVENT_TYPE_INVALID;
        for (int i = 0; i < _KBEVENT_TYPE_MAX; i++)
                if (streq(type_names[i], s))
                        return (KbEventType) i;
        return _KBEVENT_TYPE_INVALID;
}

bool kbevent_type_is_durable(KbEventType t) {
        return t == KBEVENT_POUR || t == KBEVENT_TEMPERATURE || t == KBEVENT_TOKEN || t == KBEVENT_COMMAND_RESULT ||
               t == KBEVENT_GRANT_END;
}

static bool is_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool kbevent_device_name_is_valid(const char *s) {
        size_t n;

        if (!s || !is_alnum(s[0]))
                return false;
        for (n = 0; s[n]; n++)
                if (n >= KBEVENT_DEVICE_NAME_MAX || !(is_alnum(s[n]) || s[n] == '_' || s[n] == '-'))
                        return false;
        return true;
}

bool kbevent_token_is_valid(const char *s) {
        size_t n;

        if (isempty(s))
                return false;
        for (n = 0; s[n]; n++)
                if (n >= KBEVENT_TOKEN_MAX || s[n] <= ' ' || s[n] > '~')
                        return false;
        return true;
}

int kbevent_parse_port(const char *name, const char *prefix, char device[static KBEVENT_DEVICE_NAME_MAX + 1],
                       unsigned *ret_number) {
        const char *dot, *p;
        unsigned v = 0;
        size_t n;

        assert_return(name, -EINVAL);
        assert_return(prefix, -EINVAL);

        dot = strchr(name, '.');
        if (!dot || (size_t) (dot - name) > KBEVENT_DEVICE_NAME_MAX)
                return -EINVAL;
        p = startswith(dot + 1, prefix);
        if (!p || !*p || (p[0] == '0' && p[1]))
                return -EINVAL;
        for (n = 0; p[n]; n++) {
                if (p[n] < '0' || p[n] > '9' || n >= 3)
                        return -EINVAL;
                v = v * 10 + (unsigned) (p[n] - '0');
        }
        if (v > KBEVENT_NUMBER_MAX)
                return -EINVAL;
        memcpy(device, name, (size_t) (dot - name));
        device[dot - name] = '\0';
        if (!kbevent_device_name_is_valid(device))
                return -EINVAL;
        if (ret_number)
                *ret_number = v;
        return 0;
}

uint64_t kbevent_age_ms(const KbEventClock *created, const KbEventClock *now, bool *ret_unknown) {
        bool unknown = false;
        uint64_t age;

        assert_return(created, 0);
        assert_return(now, 0);

        if (sd_id128_equal(created->kernel_boot_id, now->kernel_boot_id) && !sd_id128_is_null(now->kernel_boot_id))
                age = now->boottime_ns > created->boottime_ns ? (now->boottime_ns - created->boottime_ns) / 1000000 : 0;
        else if (created->clock_synced && now->clock_synced)
                age = now->unix_ms > created->unix_ms ? now->unix_ms - created->unix_ms : 0;
        else {
                age = now->boottime_ns / 1000000;
                unknown = true;
        }
        if (ret_unknown)
                *ret_unknown = unknown;
        return age;
}

KbEvent *kbevent_free(KbEvent *e) {
        if (!e)
                return NULL;
        free(e->data);
        free(e->drink);
        free(e->failure);
        free(e);
        return NULL;
}

int kbevent_new(KbEvent **ret, KbEventType type, const KbEventClock *created, const char *data) {
        _cleanup_(kbevent_freep) KbEvent *e = NULL;

        assert_return(ret, -EINVAL);
        assert_return(created, -EINVAL);
        assert_return(!isempty(data), -EINVAL);
        assert_return(type >= 0 && type < _KBEVENT_TYPE_MAX, -EINVAL);

        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->type = type;
        e->created = *created;
        e->data = strdup(data);
        if (!e->data)
                return -ENOMEM;
        *ret = TAKE_PTR(e);
        return 0;
}

/* ------------------------------------------------------------------ payloads */

static double round3(double v) {
        return double_round(v, 3);
}

/* A string field within [min, max] bytes of valid UTF-8 (the writer checks UTF-8). */
static void field_bounded(JsonWriter *w, const char *key, const char *s, size_t min, size_t max) {
        size_t n = s ? strlen(s) : 0;
        if (!s || n < min || n > max) {
                json_writer_set_error(w, -EINVAL);
                return;
        }
        json_writer_field_string(w, key, s);
}

static void field_number(JsonWriter *w, const char *key, double v) {
        if (!isfinite(v)) {
                json_writer_set_error(w, -EINVAL);
                return;
        }
        json_writer_field_double(w, key, v);
}

static int finish(JsonWriter *w, char **ret) {
        return json_writer_finish(w, ret, NULL);
}

int kbevent_pour_data(const KbPour *p, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;
        double vol;

        assert_return(p, -EINVAL);
        assert_return(ret, -EINVAL);

        if (!p->pour_id || !uuid_is_canonical(p->pour_id) || p->meter_number > KBEVENT_NUMBER_MAX ||
            !(p->volume_ml > 0) || !(p->ml_per_tick > 0) || !isfinite(p->ml_per_tick) ||
            (!p->auth_device != !p->auth_token) || (p->auth_device && !p->grant_id))
                return -EINVAL;
        /* Rounded to 3 decimals, unless that would make a pour of nothing. */
        vol = round3(p->volume_ml);
        if (!(vol > 0))
                vol = p->volume_ml;

        json_writer_object_begin(&w);
        json_writer_field_uint(&w, "meter_number", p->meter_number);
        json_writer_field_string(&w, "pour_id", p->pour_id);
        field_number(&w, "volume_ml", vol);
        json_writer_field_uint(&w, "duration_ms", p->duration_ms);
        if (p->auth_device) {
                field_bounded(&w, "auth_device", p->auth_device, 1, AUTH_DEVICE_MAX);
                field_bounded(&w, "auth_token", p->auth_token, 1, TOKEN_VALUE_MAX);
        }
        if (p->grant_id)
                field_bounded(&w, "grant_id", p->grant_id, 1, ID_STRING_MAX);
        json_writer_field_uint(&w, "ticks", p->ticks);
        field_number(&w, "ml_per_tick", p->ml_per_tick);
        if (!isempty(p->tick_series))
                json_writer_field_string(&w, "tick_series", p->tick_series);
        json_writer_object_end(&w);
        return finish(&w, ret);
}

int kbevent_pour_update_data(unsigned meter_number, const char *pour_id, double volume_ml, uint64_t duration_ms,
                             char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(ret, -EINVAL);
        if (!pour_id || !uuid_is_canonical(pour_id) || meter_number > KBEVENT_NUMBER_MAX || !(volume_ml >= 0))
                return -EINVAL;

        json_writer_object_begin(&w);
        json_writer_field_uint(&w, "meter_number", meter_number);
        json_writer_field_string(&w, "pour_id", pour_id);
        field_number(&w, "volume_ml", round3(volume_ml));
        json_writer_field_uint(&w, "duration_ms", duration_ms);
        json_writer_object_end(&w);
        return finish(&w, ret);
}

int kbevent_temperature_data(const char *sensor, double temp_c, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(ret, -EINVAL);
        if (isempty(sensor) || strlen(sensor) > SENSOR_MAX)
                return -EINVAL;
        for (const char *p = sensor; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        return -EINVAL;

        json_writer_object_begin(&w);
        json_writer_field_string(&w, "sensor", sensor);
        field_number(&w, "temp_c", round3(temp_c));
        json_writer_object_end(&w);
        return finish(&w, ret);
}

int kbevent_token_data(const char *auth_device, const char *token, bool attached, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(ret, -EINVAL);

        json_writer_object_begin(&w);
        field_bounded(&w, "auth_device", auth_device, 1, AUTH_DEVICE_MAX);
        field_bounded(&w, "token", token, 1, TOKEN_VALUE_MAX);
        json_writer_field_string(&w, "action", attached ? "attached" : "detached");
        json_writer_object_end(&w);
        return finish(&w, ret);
}

int kbevent_status_data(const KbStatus *s, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(s, -EINVAL);
        assert_return(ret, -EINVAL);
        if (isempty(s->fw_version) || s->heartbeat_ms < 1000 || s->queue_capacity < 1)
                return -EINVAL;

        json_writer_object_begin(&w);
        json_writer_field_string(&w, "state", s->boot ? "boot" : "heartbeat");
        json_writer_field_string(&w, "fw_version", s->fw_version);
        json_writer_field_uint(&w, "uptime_ms", s->uptime_ms);
        json_writer_field_uint(&w, "events_dropped", s->events_dropped);
        json_writer_key(&w, "config");
        json_writer_object_begin(&w);
        json_writer_field_uint(&w, "heartbeat_ms", s->heartbeat_ms);
        json_writer_field_uint(&w, "pour_update_ms", s->pour_update_ms);
        json_writer_field_uint(&w, "queue_capacity", s->queue_capacity);
        json_writer_object_end(&w);
        if (s->n_meters > 0) {
                json_writer_key(&w, "meters");
                json_writer_array_begin(&w);
                for (size_t i = 0; i < s->n_meters; i++) {
                        if (i > 0 && s->meters[i].meter_number <= s->meters[i - 1].meter_number)
                                json_writer_set_error(&w, -EINVAL);
                        if (!(s->meters[i].ml_per_tick > 0))
                                json_writer_set_error(&w, -EINVAL);
                        json_writer_object_begin(&w);
                        json_writer_field_uint(&w, "meter_number", s->meters[i].meter_number);
                        json_writer_field_uint(&w, "total_ticks", s->meters[i].total_ticks);
                        field_number(&w, "ml_per_tick", s->meters[i].ml_per_tick);
                        json_writer_object_end(&w);
                }
                json_writer_array_end(&w);
        }
        if (s->n_relays > 0) {
                json_writer_key(&w, "relays");
                json_writer_array_begin(&w);
                for (size_t i = 0; i < s->n_relays; i++) {
                        if (i > 0 && s->relays[i] <= s->relays[i - 1])
                                json_writer_set_error(&w, -EINVAL);
                        json_writer_object_begin(&w);
                        json_writer_field_uint(&w, "relay_number", s->relays[i]);
                        json_writer_object_end(&w);
                }
                json_writer_array_end(&w);
        }
        json_writer_object_end(&w);
        return finish(&w, ret);
}

/* s cut to at most max bytes at a UTF-8 character boundary. */
static char *cut_utf8(const char *s, size_t max) {
        size_t n = strlen(s), i = 0;

        if (n <= max)
                return strdup(s);
        while (i < max) {
                size_t l = utf8_sequence_length(s + i, n - i, NULL);
                if (l == 0 || i + l > max)
                        break;
                i += l;
        }
        return strndup(s, i);
}

int kbevent_command_result_data(const char *command, const char *result, const char *message, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *msg = NULL;

        assert_return(ret, -EINVAL);
        if (!result || !(streq(result, "ok") || streq(result, "error") || streq(result, "unsupported")))
                return -EINVAL;
        if (!isempty(message)) {
                if (!utf8_is_valid(message))
                        return -EINVAL;
                msg = cut_utf8(message, MESSAGE_MAX);
                if (!msg)
                        return -ENOMEM;
        }

        json_writer_object_begin(&w);
        field_bounded(&w, "command", command, 1, KBEVENT_COMMAND_ID_MAX);
        json_writer_field_string(&w, "result", result);
        if (msg)
                json_writer_field_string(&w, "message", msg);
        json_writer_object_end(&w);
        return finish(&w, ret);
}

static const char *const end_reasons[_KBEVENT_END_MAX] = {
        [KBEVENT_END_MAX_VOLUME] = "max_volume",
        [KBEVENT_END_MAX_DURATION] = "max_duration",
        [KBEVENT_END_MAX_IDLE] = "max_idle",
        [KBEVENT_END_DETACH] = "detach",
        [KBEVENT_END_COMMAND] = "command",
        [KBEVENT_END_REPLACED] = "replaced",
};

const char *kbevent_grant_end_reason_to_string(KbGrantEndReason r) {
        return r < _KBEVENT_END_MAX ? end_reasons[r] : NULL;
}

int kbevent_grant_end_data(const KbGrantEnd *g, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(g, -EINVAL);
        assert_return(ret, -EINVAL);
        if (g->n_meter_numbers == 0 || g->reason >= _KBEVENT_END_MAX || !(g->volume_ml >= 0) ||
            (!g->auth_device != !g->auth_token))
                return -EINVAL;

        json_writer_object_begin(&w);
        json_writer_key(&w, "meter_numbers");
        json_writer_array_begin(&w);
        for (size_t i = 0; i < g->n_meter_numbers; i++) {
                if (i > 0 && g->meter_numbers[i] <= g->meter_numbers[i - 1])
                        json_writer_set_error(&w, -EINVAL);
                json_writer_uint(&w, g->meter_numbers[i]);
        }
        json_writer_array_end(&w);
        json_writer_field_string(&w, "reason", end_reasons[g->reason]);
        field_bounded(&w, "grant_id", g->grant_id, 1, ID_STRING_MAX);
        field_number(&w, "volume_ml", round3(g->volume_ml));
        json_writer_field_uint(&w, "duration_ms", g->duration_ms);
        if (g->auth_device) {
                field_bounded(&w, "auth_device", g->auth_device, 1, AUTH_DEVICE_MAX);
                field_bounded(&w, "auth_token", g->auth_token, 1, TOKEN_VALUE_MAX);
        }
        json_writer_object_end(&w);
        return finish(&w, ret);
}

/* ------------------------------------------------------------------ files */

/* Any jansson value through the one writer: integers stay integers, reals come out in the shortest
 * spelling, which is how this module wrote them, so a payload read back is the text it was. */
static void write_json_value(JsonWriter *w, const json_t *v) {
        const char *key;
        json_t *item;
        size_t i;

        switch (json_typeof(v)) {
        case JSON_OBJECT:
                json_writer_object_begin(w);
                json_object_foreach((json_t *) v, key, item) {
                        json_writer_key(w, key);
                        write_json_value(w, item);
                }
                json_writer_object_end(w);
                break;
        case JSON_ARRAY:
                json_writer_array_begin(w);
                json_array_foreach(v, i, item)
                        write_json_value(w, item);
                json_writer_array_end(w);
                break;
        case JSON_STRING:
                json_writer_string(w, json_string_value(v));
                break;
        case JSON_INTEGER:
                json_writer_int(w, json_integer_value(v));
                break;
        case JSON_REAL:
                json_writer_double(w, json_real_value(v));
                break;
        case JSON_TRUE:
                json_writer_bool(w, true);
                break;
        case JSON_FALSE:
                json_writer_bool(w, false);
                break;
        case JSON_NULL:
                json_writer_null(w);
                break;
        }
}

static int json_to_text(const json_t *v, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;
        write_json_value(&w, v);
        return json_writer_finish(&w, ret, NULL);
}

void kbevent_boot_id_format(const uint8_t bytes[static 8], char ret[static KBEVENT_BOOT_ID_STRING_MAX]) {
        hex_encode(bytes, 8, ret);
}

bool kbevent_boot_id_is_valid(const char *s) {
        size_t n;

        if (!s)
                return false;
        for (n = 0; s[n]; n++)
                if (n >= 32 || !((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
                        return false;
        return n >= 1;
}

void kbevent_state_done(KbDeviceState *s) {
        if (!s)
                return;
        free(s->meters);
        s->meters = NULL;
        s->n_meters = 0;
}

int kbevent_state_format(const KbDeviceState *s, char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(s, -EINVAL);
        assert_return(ret, -EINVAL);

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "version", KBEVENT_VERSION);
        json_writer_field_string(&w, "device", s->device);
        json_writer_field_string(&w, "boot_id", s->boot_id);
        json_writer_field_uint(&w, "id_limit", s->id_limit);
        json_writer_field_uint(&w, "events_dropped", s->events_dropped);
        json_writer_key(&w, "meters");
        json_writer_object_begin(&w);
        for (size_t i = 0; i < s->n_meters; i++) {
                char key[16];
                snprintf(key, sizeof key, "%u", s->meters[i].meter_number);
                json_writer_key(&w, key);
                json_writer_object_begin(&w);
                json_writer_field_uint(&w, "total_ticks", s->meters[i].total_ticks);
                json_writer_object_end(&w);
        }
        json_writer_object_end(&w);
        json_writer_object_end(&w);
        return json_writer_finish_with(&w, "\n", ret, ret_len);
}

static bool get_uint(const json_t *o, const char *key, uint64_t max, uint64_t *ret) {
        json_t *v = json_object_get(o, key);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t) json_integer_value(v) > max)
                return false;
        *ret = (uint64_t) json_integer_value(v);
        return true;
}

static int meter_total_compare(const void *a, const void *b) {
        const KbMeterTotal *x = a, *y = b;
        return x->meter_number < y->meter_number ? -1 : x->meter_number > y->meter_number;
}

int kbevent_state_parse(const char *text, size_t len, KbDeviceState *ret) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        KbDeviceState s = {};
        json_t *meters, *v;
        const char *key;

        assert_return(text, -EINVAL);
        assert_return(ret, -EINVAL);

        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(root))
                return -EBADMSG;
        v = json_object_get(root, "version");
        if (!json_is_integer(v) || json_integer_value(v) != KBEVENT_VERSION)
                return -EBADMSG;
        v = json_object_get(root, "device");
        if (!json_is_string(v) || !kbevent_device_name_is_valid(json_string_value(v)))
                return -EBADMSG;
        strcpy(s.device, json_string_value(v));
        v = json_object_get(root, "boot_id");
        if (!json_is_string(v) || strlen(json_string_value(v)) != 16 || !kbevent_boot_id_is_valid(json_string_value(v)))
                return -EBADMSG;
        strcpy(s.boot_id, json_string_value(v));
        if (!get_uint(root, "id_limit", KBEVENT_ID_MAX, &s.id_limit) || s.id_limit < 1 ||
            !get_uint(root, "events_dropped", INT64_MAX, &s.events_dropped))
                return -EBADMSG;
        meters = json_object_get(root, "meters");
        if (!json_is_object(meters))
                return -EBADMSG;
        if (json_object_size(meters) > 0) {
                s.meters = calloc(json_object_size(meters), sizeof *s.meters);
                if (!s.meters)
                        return -ENOMEM;
        }
        json_object_foreach(meters, key, v) {
                char dev[KBEVENT_DEVICE_NAME_MAX + 1];
                _cleanup_(freep) char *name = strdup_printf("x.flow%s", key);
                unsigned n;
                uint64_t t;

                if (!name) {
                        kbevent_state_done(&s);
                        return -ENOMEM;
                }
                if (kbevent_parse_port(name, "flow", dev, &n) < 0 || !json_is_object(v) ||
                    !get_uint(v, "total_ticks", INT64_MAX, &t)) {
                        kbevent_state_done(&s);
                        return -EBADMSG;
                }
                s.meters[s.n_meters++] = (KbMeterTotal) { .meter_number = n, .total_ticks = t };
        }
        if (s.n_meters > 1)
                qsort(s.meters, s.n_meters, sizeof *s.meters, meter_total_compare);
        *ret = s;
        return 0;
}

static void write_created(JsonWriter *w, const KbEventClock *c) {
        char id[ID128_STRING_MAX];

        json_writer_key(w, "created");
        json_writer_object_begin(w);
        json_writer_field_string(w, "kernel_boot_id", sd_id128_to_string(c->kernel_boot_id, id));
        json_writer_field_uint(w, "boottime_ns", c->boottime_ns);
        json_writer_field_uint(w, "unix_ms", c->unix_ms);
        json_writer_field_bool(w, "clock_synced", c->clock_synced);
        json_writer_object_end(w);
}

int kbevent_file_format(const KbEvent *e, const char *boot_id, char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(e, -EINVAL);
        assert_return(ret, -EINVAL);
        assert_return(kbevent_type_to_string(e->type), -EINVAL);

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "version", KBEVENT_VERSION);
        if (boot_id) {
                json_writer_field_string(&w, "boot_id", boot_id);
                json_writer_field_uint(&w, "id", e->id);
        }
        json_writer_field_string(&w, "type", kbevent_type_to_string(e->type));
        write_created(&w, &e->created);
        json_writer_field_raw(&w, "data", e->data);
        if (e->drink)
                json_writer_field_raw(&w, "drink", e->drink);
        if (e->failure)
                json_writer_field_raw(&w, "failure", e->failure);
        json_writer_object_end(&w);
        return json_writer_finish_with(&w, "\n", ret, ret_len);
}

static int parse_created(const json_t *o, KbEventClock *ret) {
        json_t *v;

        if (!json_is_object(o))
                return -EBADMSG;
        v = json_object_get(o, "kernel_boot_id");
        if (!json_is_string(v) || uuid_from_plain_string(json_string_value(v), &ret->kernel_boot_id) < 0)
                return -EBADMSG;
        if (!get_uint(o, "boottime_ns", UINT64_MAX >> 1, &ret->boottime_ns) ||
            !get_uint(o, "unix_ms", UINT64_MAX >> 1, &ret->unix_ms))
                return -EBADMSG;
        v = json_object_get(o, "clock_synced");
        if (!json_is_boolean(v))
                return -EBADMSG;
        ret->clock_synced = json_is_true(v);
        return 0;
}

int kbevent_file_parse(const char *text, size_t len, bool require_id, KbEvent **ret,
                       char *ret_boot_id) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        _cleanup_(kbevent_freep) KbEvent *e = NULL;
        json_t *v;
        int r;

        assert_return(text, -EINVAL);
        assert_return(ret, -EINVAL);

        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(root))
                return -EBADMSG;
        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        if (require_id) {
                v = json_object_get(root, "boot_id");
                if (!json_is_string(v) || strlen(json_string_value(v)) != 16 ||
                    !kbevent_boot_id_is_valid(json_string_value(v)))
                        return -EBADMSG;
                if (ret_boot_id)
                        strcpy(ret_boot_id, json_string_value(v));
                if (!get_uint(root, "id", KBEVENT_ID_MAX, &e->id) || e->id < 1)
                        return -EBADMSG;
        }
        v = json_object_get(root, "type");
        e->type = kbevent_type_from_string(json_string_value(v));
        if (!json_is_string(v) || e->type < 0 || !kbevent_type_is_durable(e->type))
                return -EBADMSG;
        if (parse_created(json_object_get(root, "created"), &e->created) < 0)
                return -EBADMSG;
        v = json_object_get(root, "data");
        if (!json_is_object(v))
                return -EBADMSG;
        r = json_to_text(v, &e->data);
        if (r < 0)
                return r == -ENOMEM ? r : -EBADMSG;
        v = json_object_get(root, "drink");
        if (v) {
                if (!json_is_object(v))
                        return -EBADMSG;
                r = json_to_text(v, &e->drink);
                if (r < 0)
                        return r == -ENOMEM ? r : -EBADMSG;
        }
        v = json_object_get(root, "failure");
        if (v) {
                if (!json_is_object(v))
                        return -EBADMSG;
                r = json_to_text(v, &e->failure);
                if (r < 0)
                        return r == -ENOMEM ? r : -EBADMSG;
        }
        *ret = TAKE_PTR(e);
        return 0;
}

int kbevent_failure_format(uint64_t realtime_usec, long http_status, const char *reason, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *cut = NULL, *esc = NULL;

        assert_return(ret, -EINVAL);

        reason = reason ?: "";
        if (!utf8_is_valid(reason)) {
                esc = escape_for_log(reason);
                if (!esc)
                        return -ENOMEM;
                reason = esc;
        }
        cut = cut_utf8(reason, KBEVENT_FAILURE_REASON_MAX);
        if (!cut)
                return -ENOMEM;

        json_writer_object_begin(&w);
        json_writer_field_timestamp(&w, "time", realtime_usec);
        json_writer_field_int(&w, "http_status", http_status);
        json_writer_field_string(&w, "reason", cut);
        json_writer_object_end(&w);
        return finish(&w, ret);
}

/* ------------------------------------------------------------------ batches */

void kbevent_batch_done(KbBatch *b) {
        if (!b)
                return;
        free(b->body);
        b->body = NULL;
        b->size = b->n_queued = b->n_extra = 0;
}

static int event_text(const KbBatchContext *ctx, const KbEvent *e, KbAgeUnknownFunc age_unknown, void *userdata,
                      char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;
        bool unknown;
        uint64_t age = kbevent_age_ms(&e->created, &ctx->now, &unknown);

        if (unknown && age_unknown)
                age_unknown(e, age, userdata);
        json_writer_object_begin(&w);
        json_writer_field_uint(&w, "id", e->id);
        json_writer_field_string(&w, "type", kbevent_type_to_string(e->type));
        json_writer_field_uint(&w, "age_ms", age);
        if (e->created.clock_synced)
                json_writer_field_timestamp(&w, "time", e->created.unix_ms * USEC_PER_MSEC);
        json_writer_field_raw(&w, "data", e->data);
        json_writer_object_end(&w);
        return json_writer_finish(&w, ret, ret_len);
}

int kbevent_batch_build(const KbBatchContext *ctx, KbEvent *const *queue, size_t n_queue, KbEvent *const *extra,
                        size_t n_extra, KbAgeUnknownFunc age_unknown, void *userdata, KbBatch *ret) {
        JsonWriter w = JSON_WRITER_INIT;
        size_t max_bytes, taken = 0, taken_extra = 0, len;
        uint64_t last_id = 0;
        unsigned max_events;
        int r;

        assert_return(ctx, -EINVAL);
        assert_return(ret, -EINVAL);
        assert_return(kbevent_device_name_is_valid(ctx->device), -EINVAL);
        assert_return(kbevent_boot_id_is_valid(ctx->boot_id), -EINVAL);
        assert_return(n_queue == 0 || queue, -EINVAL);
        assert_return(n_extra == 0 || extra, -EINVAL);

        max_events = ctx->max_events == 0 ? KBEVENT_BATCH_MAX_EVENTS : MIN(ctx->max_events, KBEVENT_BATCH_MAX_EVENTS);
        max_bytes = ctx->max_bytes == 0 ? KBEVENT_BATCH_MAX_BYTES : ctx->max_bytes;

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "v", KBEVENT_VERSION);
        json_writer_field_string(&w, "device", ctx->device);
        json_writer_field_string(&w, "boot_id", ctx->boot_id);
        json_writer_field_uint(&w, "sent_uptime_ms", ctx->sent_uptime_ms);
        json_writer_key(&w, "events");
        json_writer_array_begin(&w);
        /* The envelope so far plus "]}" and one "," per event after the first. */
        len = json_writer_length(&w) + 2;

        for (size_t i = 0; i < n_queue + n_extra; i++) {
                bool is_extra = i >= n_queue;
                const KbEvent *e = is_extra ? extra[i - n_queue] : queue[i];
                _cleanup_(freep) char *text = NULL;
                size_t tlen;

                if (taken + taken_extra >= max_events)
                        break;
                if (is_extra && taken < n_queue)
                        break;          /* updates only go when every queued event does */
                if (e->id < 1 || e->id > KBEVENT_ID_MAX || e->id <= last_id) {
                        json_writer_done(&w);
                        return -EINVAL;
                }
                r = event_text(ctx, e, age_unknown, userdata, &text, &tlen);
                if (r < 0) {
                        json_writer_done(&w);
                        return r;
                }
                if (taken + taken_extra > 0 && len + tlen + 1 > max_bytes) {
                        if (is_extra)
                                continue;       /* a smaller update may still fit */
                        break;
                }
                len += tlen + (taken + taken_extra > 0);
                json_writer_raw(&w, text);
                last_id = e->id;
                if (is_extra)
                        taken_extra++;
                else
                        taken++;
        }
        if (taken + taken_extra == 0) {
                json_writer_done(&w);
                return -ENODATA;
        }
        json_writer_array_end(&w);
        json_writer_object_end(&w);
        *ret = (KbBatch) { .n_queued = taken, .n_extra = taken_extra };
        r = json_writer_finish(&w, &ret->body, &ret->size);
        if (r < 0)
                *ret = (KbBatch) {};
        return r;
}

/* ------------------------------------------------------------------ answers */

static const char *const outcome_names[] = {
        [KBEVENT_ACCEPTED] = "accepted",
        [KBEVENT_TRANSIENT] = "transient",
        [KBEVENT_PAIRING] = "pairing",
        [KBEVENT_TOO_LARGE] = "too large",
        [KBEVENT_REJECTED] = "rejected",
        [KBEVENT_ENDPOINT_ERROR] = "endpoint error",
};

const char *kbevent_outcome_to_string(KbOutcome o) {
        return o < ELEMENTSOF(outcome_names) ? outcome_names[o] : NULL;
}

static bool body_is_empty(const char *body, size_t len) {
        for (size_t i = 0; i < len; i++)
                if (!strchr(" \t\r\n", body[i]))
                        return false;
        return true;
}

static json_t *load_object(const char *body, size_t len) {
        json_t *root = json_loadb(body, len, 0, NULL);
        if (root && !json_is_object(root)) {
                json_decref(root);
                return NULL;
        }
        return root;
}

KbOutcome kbevent_classify(long status, const char *body, size_t len) {
        if (status >= 200 && status < 300) {
                _cleanup_(json_decrefp) json_t *root = NULL;

                if (!body || body_is_empty(body, len))
                        return KBEVENT_ACCEPTED;
                root = load_object(body, len);
                return root ? KBEVENT_ACCEPTED : KBEVENT_TRANSIENT;
        }
        if (status == 401)
                return KBEVENT_PAIRING;
        if (status == 413)
                return KBEVENT_TOO_LARGE;
        if ((status >= 300 && status < 400) || status == 403 || status == 404 || status == 405 || status == 410 ||
            status == 415)
                return KBEVENT_ENDPOINT_ERROR;
        if (status == 408 || status == 429)
                return KBEVENT_TRANSIENT;
        if (status >= 400 && status < 500)
                return KBEVENT_REJECTED;
        return KBEVENT_TRANSIENT;
}

int kbevent_parse_pairing(const char *body, size_t len, KbPairingState *ret_state, char **ret_token) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        const char *state, *token;
        json_t *p;

        assert_return(ret_state, -EINVAL);
        assert_return(ret_token, -EINVAL);

        *ret_state = KBEVENT_PAIRING_PENDING;
        *ret_token = NULL;
        if (!body)
                return 0;
        root = load_object(body, len);
        p = json_object_get(root, "pairing");
        state = json_string_value(json_object_get(p, "state"));
        if (!state)
                return 0;
        if (streq(state, "denied"))
                *ret_state = KBEVENT_PAIRING_DENIED;
        else if (streq(state, "allowed")) {
                token = json_string_value(json_object_get(p, "token"));
                if (!kbevent_token_is_valid(token))
                        return 0;
                *ret_token = strdup(token);
                if (!*ret_token)
                        return -ENOMEM;
                *ret_state = KBEVENT_PAIRING_ALLOWED;
        }
        return 0;
}

void kbevent_command_list_done(KbCommandList *l) {
        if (!l)
                return;
        for (size_t i = 0; i < l->n; i++) {
                free(l->commands[i].id);
                free(l->commands[i].type);
                json_decref(l->commands[i].data);
        }
        free(l->commands);
        *l = (KbCommandList) {};
}

int kbevent_parse_commands(const char *body, size_t len, KbCommandList *ret) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        KbCommandList l = {};
        json_t *cmds, *c;
        size_t i;

        assert_return(ret, -EINVAL);

        *ret = (KbCommandList) {};
        if (!body || body_is_empty(body, len))
                return 0;
        root = load_object(body, len);
        if (!root)
                return -EBADMSG;
        cmds = json_object_get(root, "commands");
        if (!cmds || json_is_null(cmds))
                return 0;
        if (!json_is_array(cmds)) {
                ret->not_array = true;
                return 0;
        }
        if (json_array_size(cmds) > 0) {
                l.commands = calloc(json_array_size(cmds), sizeof *l.commands);
                if (!l.commands)
                        return -ENOMEM;
        }
        json_array_foreach(cmds, i, c) {
                const char *id = json_string_value(json_object_get(c, "id"));
                const char *type = json_string_value(json_object_get(c, "type"));
                KbCommand *k;

                if (!json_is_object(c) || !id || strlen(id) < 1 || strlen(id) > KBEVENT_COMMAND_ID_MAX) {
                        l.n_skipped++;
                        continue;
                }
                k = &l.commands[l.n++];
                k->id = strdup(id);
                k->type = type ? strdup(type) : NULL;
                k->data = json_incref(json_object_get(c, "data"));
                if (!k->id || (type && !k->type)) {
                        kbevent_command_list_done(&l);
                        return -ENOMEM;
                }
        }
        *ret = l;
        return 0;
}

void kbevent_authorize_done(KbAuthorize *a) {
        if (!a)
                return;
        free(a->grant_id);
        free(a->auth_device);
        free(a->token);
        *a = (KbAuthorize) {};
}

static int unsigned_compare(const void *a, const void *b) {
        unsigned x = *(const unsigned *) a, y = *(const unsigned *) b;
        return x < y ? -1 : x > y;
}

/* An array of integers 0..255 (at least 'min' of them), sorted and deduplicated into out. */
static bool parse_numbers(const json_t *v, size_t min, unsigned out[static KBEVENT_NUMBER_MAX + 1], size_t *ret_n) {
        bool seen[KBEVENT_NUMBER_MAX + 1] = {};
        json_t *item;
        size_t i, n = 0;

        if (!json_is_array(v) || json_array_size(v) < min)
                return false;
        json_array_foreach(v, i, item) {
                json_int_t x;
                if (!json_is_integer(item))
                        return false;
                x = json_integer_value(item);
                if (x < 0 || x > KBEVENT_NUMBER_MAX)
                        return false;
                if (!seen[x]) {
                        seen[x] = true;
                        out[n++] = (unsigned) x;
                }
        }
        qsort(out, n, sizeof *out, unsigned_compare);
        *ret_n = n;
        return true;
}

static bool parse_limit_ms(const json_t *data, const char *key, uint64_t *ret) {
        json_t *v = json_object_get(data, key);
        if (!v) {
                *ret = 0;
                return true;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return false;
        *ret = (uint64_t) json_integer_value(v);
        return true;
}

int kbevent_parse_authorize(const json_t *data, KbAuthorize *ret, const char **ret_message) {
        KbAuthorize a = {};
        const char *s;
        json_t *v;

        assert_return(ret, -EINVAL);
        assert_return(ret_message, -EINVAL);

        *ret_message = NULL;
        s = json_string_value(json_object_get(data, "grant_id"));
        if (!s || strlen(s) < 1 || strlen(s) > ID_STRING_MAX) {
                *ret_message = "bad grant_id";
                return -EINVAL;
        }
        if (!parse_numbers(json_object_get(data, "meter_numbers"), 1, a.meters, &a.n_meters)) {
                *ret_message = "bad meter_numbers";
                return -EINVAL;
        }
        v = json_object_get(data, "relay_numbers");
        if (v && !parse_numbers(v, 0, a.relays, &a.n_relays)) {
                *ret_message = "bad relay_numbers";
                return -EINVAL;
        }
        v = json_object_get(data, "max_volume_ml");
        if (v && (!json_is_number(v) || !(json_number_value(v) >= 0) || !isfinite(json_number_value(v)))) {
                *ret_message = "bad limits";
                return -EINVAL;
        }
        a.max_volume_ml = v ? json_number_value(v) : 0;
        if (!parse_limit_ms(data, "max_duration_ms", &a.max_duration_ms) ||
            !parse_limit_ms(data, "max_idle_ms", &a.max_idle_ms)) {
                *ret_message = "bad limits";
                return -EINVAL;
        }
        v = json_object_get(data, "auth_device");
        json_t *t = json_object_get(data, "token");
        if ((v && !json_is_string(v)) || (t && !json_is_string(t))) {
                *ret_message = "bad echo";
                return -EINVAL;
        }
        a.grant_id = strdup(s);
        a.auth_device = v ? strdup(json_string_value(v)) : NULL;
        a.token = t ? strdup(json_string_value(t)) : NULL;
        if (!a.grant_id || (v && !a.auth_device) || (t && !a.token)) {
                kbevent_authorize_done(&a);
                return -ENOMEM;
        }
        *ret = a;
        return 0;
}

int kbevent_parse_deauthorize(const json_t *data, bool *ret_all, char ***ret_ids, const char **ret_message) {
        _cleanup_(strv_freep) char **ids = NULL;
        json_t *v, *item;
        size_t i, n = 0;
        int r;

        assert_return(ret_all, -EINVAL);
        assert_return(ret_ids, -EINVAL);
        assert_return(ret_message, -EINVAL);

        *ret_message = NULL;
        if (!json_object_get(data, "grant_ids") && (!data || json_is_object(data))) {
                *ret_all = true;
                *ret_ids = NULL;
                return 0;
        }
        v = json_object_get(data, "grant_ids");
        if (!json_is_array(v) || json_array_size(v) == 0) {
                *ret_message = "bad grant_ids";
                return -EINVAL;
        }
        json_array_foreach(v, i, item) {
                if (!json_is_string(item)) {
                        *ret_message = "bad grant_ids";
                        return -EINVAL;
                }
                r = strv_extend(&ids, &n, json_string_value(item));
                if (r < 0)
                        return r;
        }
        *ret_all = false;
        *ret_ids = TAKE_PTR(ids);
        return 0;
}
