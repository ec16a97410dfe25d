/* kegnet message codec (spec/kegnet-protocol.md sections 2-5, 8). Encoding goes through the JSON
 * writer, so that the field order, null handling and float spelling are exactly the spec's and no
 * string that is not UTF-8 leaves; decoding uses jansson, which refuses invalid UTF-8 on input,
 * except for the two hot-path frames in their exact encoded form (parse_fast(): no allocation). */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-writer.h"
#include "kegnet.h"
#include "macro.h"
#include "util-string.h"
#include "util-time.h"

/* ---- names ---- */

static const char *const kind_names[_KEGNET_KIND_MAX] = {
        [KEGNET_UNKNOWN] = NULL,
        [KEGNET_METER_UPDATE] = "MeterUpdate",
        [KEGNET_THERMO_EVENT] = "ThermoEvent",
        [KEGNET_TOKEN_AUTH_EVENT] = "TokenAuthEvent",
        [KEGNET_FLOW_REQUEST] = "FlowRequest",
        [KEGNET_CONTROLLER_CONNECTED_EVENT] = "ControllerConnectedEvent",
        [KEGNET_FLOW_UPDATE] = "FlowUpdate",
        [KEGNET_DRINK_CREATED_EVENT] = "DrinkCreatedEvent",
        [KEGNET_SET_RELAY_OUTPUT_EVENT] = "SetRelayOutputEvent",
        [KEGNET_HELLO] = "Hello",
        [KEGNET_WELCOME] = "Welcome",
        [KEGNET_ACK] = "Ack",
        [KEGNET_REFUSED] = "Refused",
};

static const char *const role_names[_KEGNET_ROLE_MAX] = {
        [KEGNET_ROLE_LISTENER] = "listener",
        [KEGNET_ROLE_PRODUCER] = "producer",
        [KEGNET_ROLE_OTHER] = NULL,
};

static const char *const token_status_names[_KEGNET_TOKEN_STATUS_MAX] = {
        [KEGNET_TOKEN_ADDED] = "added",
        [KEGNET_TOKEN_REMOVED] = "removed",
};

static const char *const request_names[_KEGNET_REQUEST_MAX] = {
        [KEGNET_REQUEST_START_FLOW] = "start_flow",
        [KEGNET_REQUEST_STOP_FLOW] = "stop_flow",
        [KEGNET_REQUEST_REPORT_STATUS] = "report_status",
};

static const char *const flow_state_names[_KEGNET_FLOW_STATE_MAX] = {
        [KEGNET_FLOW_ACTIVE] = "active",
        [KEGNET_FLOW_IDLE] = "idle",
        [KEGNET_FLOW_COMPLETED] = "completed",
};

static const char *const output_mode_names[_KEGNET_OUTPUT_MODE_MAX] = {
        [KEGNET_OUTPUT_ENABLED] = "enabled",
        [KEGNET_OUTPUT_DISABLED] = "disabled",
};

static const char *name_lookup(const char *const *names, size_t n, int v) {
        if (v < 0 || (size_t) v >= n)
                return NULL;
        return names[v];
}

static int name_find(const char *const *names, size_t n, const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (names[i] && streq(names[i], s))
                        return (int) i;
        return -EINVAL;
}

const char *kegnet_kind_to_string(KegnetKind k) {
        return name_lookup(kind_names, ELEMENTSOF(kind_names), (int) k);
}

KegnetKind kegnet_kind_from_string(const char *s) {
        int r = name_find(kind_names, ELEMENTSOF(kind_names), s);
        return r < 0 ? KEGNET_UNKNOWN : (KegnetKind) r;
}

const char *kegnet_token_status_to_string(KegnetTokenStatus s) {
        return name_lookup(token_status_names, ELEMENTSOF(token_status_names), (int) s);
}

int kegnet_token_status_from_string(const char *s) {
        return name_find(token_status_names, ELEMENTSOF(token_status_names), s);
}

const char *kegnet_flow_request_type_to_string(KegnetFlowRequestType t) {
        return name_lookup(request_names, ELEMENTSOF(request_names), (int) t);
}

int kegnet_flow_request_type_from_string(const char *s) {
        return name_find(request_names, ELEMENTSOF(request_names), s);
}

const char *kegnet_flow_state_to_string(KegnetFlowState s) {
        return name_lookup(flow_state_names, ELEMENTSOF(flow_state_names), (int) s);
}

int kegnet_flow_state_from_string(const char *s) {
        return name_find(flow_state_names, ELEMENTSOF(flow_state_names), s);
}

const char *kegnet_output_mode_to_string(KegnetOutputMode m) {
        return name_lookup(output_mode_names, ELEMENTSOF(output_mode_names), (int) m);
}

int kegnet_output_mode_from_string(const char *s) {
        return name_find(output_mode_names, ELEMENTSOF(output_mode_names), s);
}

const char *kegnet_role_to_string(KegnetRole r) {
        return name_lookup(role_names, ELEMENTSOF(role_names), (int) r);
}

KegnetRole kegnet_role_from_string(const char *s) {
        int r = name_find(role_names, ELEMENTSOF(role_names), s);
        return r < 0 ? KEGNET_ROLE_OTHER : (KegnetRole) r;
}

bool kegnet_kind_is_inbound(KegnetKind k) {
        switch (k) {
        case KEGNET_METER_UPDATE:
        case KEGNET_THERMO_EVENT:
        case KEGNET_TOKEN_AUTH_EVENT:
        case KEGNET_FLOW_REQUEST:
        case KEGNET_CONTROLLER_CONNECTED_EVENT:
                return true;
        default:
                return false;
        }
}

KegnetInboundVerdict kegnet_inbound_verdict(int parse_result, const KegnetMessage *m) {
        if (parse_result == -ENODATA)
                return KEGNET_INBOUND_IGNORE;
        /* Without a usable event name there is nothing to whitelist against. */
        if (!m || !m->event_name)
                return parse_result < 0 ? KEGNET_INBOUND_DROP_WARNING : KEGNET_INBOUND_DROP_DEBUG;
        if (!kegnet_kind_is_inbound(m->kind))
                return KEGNET_INBOUND_DROP_DEBUG;
        if (parse_result < 0)
                return KEGNET_INBOUND_DROP_WARNING;
        return KEGNET_INBOUND_ACCEPT;
}

/* ---- address ---- */

static int parse_port(const char *s, uint16_t *ret) {
        unsigned v = 0;
        size_t n = strlen(s);
        if (n == 0 || n > 5)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v > 65535)
                return -EINVAL;
        *ret = (uint16_t) v;
        return 0;
}

int kegnet_address_parse(const char *s, char **ret_host, uint16_t *ret_port) {
        _cleanup_(freep) char *host = NULL;
        const char *port_str;
        uint16_t port;
        int r;

        assert_return(ret_host, -EINVAL);
        assert_return(ret_port, -EINVAL);

        if (isempty(s))
                return -EINVAL;

        if (s[0] == '[') {
                const char *e = strchr(s, ']');
                if (!e || e == s + 1 || e[1] != ':')
                        return -EINVAL;
                host = strndup(s + 1, (size_t) (e - s - 1));
                port_str = e + 2;
        } else {
                const char *c = strrchr(s, ':');
                if (!c) {
                        host = strdup("127.0.0.1");
                        port_str = s;
                } else {
                        if (c == s || memchr(s, ':', (size_t) (c - s)))
                                return -EINVAL;    /* empty host, or an IPv6 literal without [] */
                        host = strndup(s, (size_t) (c - s));
                        port_str = c + 1;
                }
        }
        if (!host)
                return -ENOMEM;
        r = parse_port(port_str, &port);
        if (r < 0)
                return r;

        *ret_host = TAKE_PTR(host);
        *ret_port = port;
        return 0;
}

/* ---- encoder ---- */

/* Range checks the writer cannot know about; the writer keeps the first error. */
static void enc_uint_max(JsonWriter *w, const char *key, uint64_t v, uint64_t max) {
        if (v > max)
                json_writer_set_error(w, -EINVAL);
        json_writer_field_uint(w, key, v);
}

static void enc_nonneg(JsonWriter *w, const char *key, int64_t v) {
        if (v < 0)
                json_writer_set_error(w, -EINVAL);
        json_writer_field_int(w, key, v);
}

static void enc_required(JsonWriter *w, const char *key, const char *v) {
        if (!v)
                json_writer_set_error(w, -EINVAL);
        json_writer_field_string(w, key, v);
}

static void enc_enum(JsonWriter *w, const char *key, const char *name) {
        enc_required(w, key, name);
}

/* A role of a later protocol travels under its own name. */
static const char *role_wire_name(KegnetRole role, const char *role_name) {
        return role == KEGNET_ROLE_OTHER ? role_name : kegnet_role_to_string(role);
}

/* A list of broadcast event names, in KegnetKind order; bits outside KEGNET_EVENTS_BROADCAST
 * are an error. */
static void enc_events_or_null(JsonWriter *w, const char *key, bool known, unsigned events) {
        if (!known) {
                json_writer_field_null(w, key);
                return;
        }
        if (events & ~KEGNET_EVENTS_BROADCAST) {
                json_writer_set_error(w, -EINVAL);
                return;
        }
        json_writer_key(w, key);
        json_writer_array_begin(w);
        for (KegnetKind k = 0; k < _KEGNET_KIND_MAX; k++)
                if (events & KEGNET_EVENT_BIT(k))
                        json_writer_string(w, kegnet_kind_to_string(k));
        json_writer_array_end(w);
}

static void enc_seq_or_null(JsonWriter *w, const char *key, bool known, uint64_t v) {
        if (known)
                enc_uint_max(w, key, v, KEGNET_SEQ_MAX);
        else
                json_writer_field_null(w, key);
}

static void enc_double_or_null(JsonWriter *w, const char *key, bool known, double v) {
        if (known)
                json_writer_field_double(w, key, v);
        else
                json_writer_field_null(w, key);
}

static void encode_message(JsonWriter *w, const KegnetMessage *m) {
        const char *name = kegnet_kind_to_string(m->kind);

        if (!name) {
                json_writer_set_error(w, -EINVAL);
                return;
        }

        json_writer_object_begin(w);
        json_writer_field_string(w, "event", name);
        json_writer_key(w, "data");
        json_writer_object_begin(w);

        switch (m->kind) {
        case KEGNET_METER_UPDATE: {
                const KegnetMeterUpdate *u = &m->meter_update;
                enc_required(w, "meter_name", u->meter_name);
                json_writer_field_uint(w, "reading", u->reading);
                break;
        }
        case KEGNET_THERMO_EVENT: {
                const KegnetThermoEvent *u = &m->thermo_event;
                enc_required(w, "sensor_name", u->sensor_name);
                json_writer_field_double(w, "sensor_value", u->sensor_value);
                break;
        }
        case KEGNET_TOKEN_AUTH_EVENT: {
                const KegnetTokenAuthEvent *u = &m->token_auth_event;
                json_writer_field_string(w, "meter_name", u->meter_name);
                enc_required(w, "auth_device_name", u->auth_device_name);
                enc_required(w, "token_value", u->token_value);
                enc_enum(w, "status", kegnet_token_status_to_string(u->status));
                break;
        }
        case KEGNET_FLOW_REQUEST: {
                const KegnetFlowRequest *u = &m->flow_request;
                enc_required(w, "meter_name", u->meter_name);
                enc_enum(w, "request", kegnet_flow_request_type_to_string(u->request));
                break;
        }
        case KEGNET_CONTROLLER_CONNECTED_EVENT: {
                const KegnetControllerConnectedEvent *u = &m->controller_connected_event;
                enc_required(w, "controller_name", u->controller_name);
                json_writer_field_string(w, "serial_number", u->serial_number);
                if (u->has_firmware_version)
                        enc_uint_max(w, "firmware_version", u->firmware_version, INT32_MAX);
                else
                        json_writer_field_null(w, "firmware_version");
                if (u->has_uptime_ms)
                        enc_uint_max(w, "uptime_ms", u->uptime_ms, INT64_MAX);
                else
                        json_writer_field_null(w, "uptime_ms");
                json_writer_field_bool(w, "board_reset", u->board_reset);
                json_writer_field_string(w, "device", u->device);
                break;
        }
        case KEGNET_FLOW_UPDATE: {
                const KegnetFlowUpdate *u = &m->flow_update;
                enc_nonneg(w, "flow_id", u->flow_id);
                enc_required(w, "meter_name", u->meter_name);
                enc_enum(w, "state", kegnet_flow_state_to_string(u->state));
                json_writer_field_string(w, "username", u->username);
                json_writer_field_timestamp(w, "start_time", u->start_time);
                json_writer_field_timestamp(w, "last_activity_time", u->last_activity_time);
                enc_uint_max(w, "ticks", u->ticks, INT64_MAX);
                enc_double_or_null(w, "volume_ml", u->has_volume_ml, u->volume_ml);
                break;
        }
        case KEGNET_DRINK_CREATED_EVENT: {
                const KegnetDrinkCreatedEvent *u = &m->drink_created_event;
                enc_nonneg(w, "flow_id", u->flow_id);
                if (u->has_drink_id)
                        enc_nonneg(w, "drink_id", u->drink_id);
                else
                        json_writer_field_null(w, "drink_id");
                enc_required(w, "meter_name", u->meter_name);
                json_writer_field_timestamp(w, "start_time", u->start_time);
                json_writer_field_timestamp(w, "end_time", u->end_time);
                json_writer_field_string(w, "username", u->username);
                enc_uint_max(w, "ticks", u->ticks, INT64_MAX);
                enc_double_or_null(w, "volume_ml", u->has_volume_ml, u->volume_ml);
                enc_required(w, "uuid", u->uuid);
                break;
        }
        case KEGNET_SET_RELAY_OUTPUT_EVENT: {
                const KegnetSetRelayOutputEvent *u = &m->set_relay_output_event;
                enc_required(w, "output_name", u->output_name);
                enc_enum(w, "output_mode", kegnet_output_mode_to_string(u->output_mode));
                break;
        }
        case KEGNET_HELLO: {
                const KegnetHello *u = &m->hello;
                enc_enum(w, "role", role_wire_name(u->role, u->role_name));
                json_writer_field_string(w, "name", u->name);
                json_writer_field_string(w, "session", u->session);
                enc_seq_or_null(w, "seq", u->has_seq, u->seq);
                enc_events_or_null(w, "events", u->has_events, u->events);
                break;
        }
        case KEGNET_WELCOME: {
                const KegnetWelcome *u = &m->welcome;
                enc_enum(w, "role", role_wire_name(u->role, u->role_name));
                enc_seq_or_null(w, "acked", u->has_acked, u->acked);
                json_writer_field_string(w, "reason", u->reason);
                break;
        }
        case KEGNET_ACK:
                enc_seq_or_null(w, "acked", true, m->ack.acked);
                break;
        case KEGNET_REFUSED:
                enc_required(w, "reason", m->refused.reason);
                break;
        default:
                json_writer_set_error(w, -EINVAL);
        }
        json_writer_object_end(w);
        json_writer_object_end(w);
}

int kegnet_message_encode_in(const KegnetMessage *m, StrBuf *buf) {
        JsonWriter w;
        int r;

        assert_return(m, -EINVAL);
        assert_return(buf, -EINVAL);

        json_writer_start_in(&w, buf);
        encode_message(&w, m);
        r = json_writer_finish_in(&w, "\n\n", buf);
        /* Timestamps past year 9999 are the caller's bad value like any other. */
        if (r == -ERANGE)
                r = -EINVAL;
        if (r >= 0 && buf->len - 2 > KEGNET_MAX_FRAME)
                r = -E2BIG;
        if (r < 0) {
                strbuf_reset(buf);
                return r;
        }
        return 0;
}

int kegnet_message_encode(const KegnetMessage *m, char **ret, size_t *ret_size) {
        _cleanup_(strbuf_done) StrBuf buf = STRBUF_INIT;
        int r;

        assert_return(m, -EINVAL);
        assert_return(ret, -EINVAL);

        r = kegnet_message_encode_in(m, &buf);
        if (r < 0)
                return r;
        return strbuf_take(&buf, ret, ret_size);
}

/* ---- decoder ---- */

/* Number literals with a fraction or an exponent whose decimal value is not an integer, although
 * the double they parse to is one ("1e-400" is 0, "100.000000000000000001" is 100): jansson keeps
 * only the double, so the frame's text is read once to tell "100.0" (an integer, accepted) from
 * those (refused where an integer is required). */
#define INEXACT_MAX 16

typedef struct Inexact {
        double values[INEXACT_MAX];
        size_t n;
        bool overflow;          /* more than INEXACT_MAX: every real in an int field is refused */
} Inexact;

/* Whether the literal (JSON number syntax, already validated) is an exact integer. */
static bool literal_is_integer(const char *p, size_t n) {
        const char *end = p + n;
        size_t frac_digits = 0, trailing_zeros = 0;
        bool nonzero = false;
        long exponent = 0;

        if (p < end && *p == '-')
                p++;
        for (bool frac = false; p < end && ((*p >= '0' && *p <= '9') || *p == '.'); p++) {
                if (*p == '.') {
                        frac = true;
                        continue;
                }
                frac_digits += frac;
                if (*p == '0')
                        trailing_zeros++;
                else {
                        trailing_zeros = 0;
                        nonzero = true;
                }
        }
        if (!nonzero)
                return true;            /* zero, however it is written */
        if (p < end && (*p == 'e' || *p == 'E')) {
                bool neg = false;
                p++;
                if (p < end && (*p == '+' || *p == '-'))
                        neg = *p++ == '-';
                for (; p < end && *p >= '0' && *p <= '9'; p++)
                        if (exponent < 1000000)
                                exponent = exponent * 10 + (*p - '0');
                if (neg)
                        exponent = -exponent;
        }
        /* value = mantissa digits * 10^(exponent - frac_digits) */
        return exponent - (long) frac_digits + (long) trailing_zeros >= 0;
}

static void inexact_scan(const char *p, size_t n, Inexact *ret) {
        *ret = (Inexact) {};
        for (size_t i = 0; i < n;) {
                char c = p[i];
                if (c == '"') {
                        for (i++; i < n && p[i] != '"'; i++)
                                if (p[i] == '\\')
                                        i++;
                        i++;
                        continue;
                }
                if (c != '-' && !(c >= '0' && c <= '9')) {
                        i++;
                        continue;
                }
                size_t start = i;
                bool real = false;
                while (i < n && (strchr("+-.eE", p[i]) || (p[i] >= '0' && p[i] <= '9'))) {
                        real = real || p[i] == '.' || p[i] == 'e' || p[i] == 'E';
                        i++;
                }
                if (!real || literal_is_integer(p + start, i - start))
                        continue;
                char buf[64];
                if (i - start >= sizeof buf) {
                        ret->overflow = true;   /* a literal this long is not worth parsing twice */
                        continue;
                }
                memcpy(buf, p + start, i - start);
                buf[i - start] = 0;
                double d = strtod(buf, NULL);
                if (!isfinite(d) || floor(d) != d)
                        continue;               /* not integral as a double either: refused anyway */
                if (ret->n < INEXACT_MAX)
                        ret->values[ret->n++] = d;
                else
                        ret->overflow = true;
        }
}

static bool inexact_has(const Inexact *x, double d) {
        if (x->overflow)
                return true;
        for (size_t i = 0; i < x->n; i++)
                if (x->values[i] == d)
                        return true;
        return false;
}

typedef struct Dec {
        json_t *data;
        const char *event;
        char **ret_error;
        const char *frame;
        size_t frame_size;
        bool scanned;
        Inexact inexact;
} Dec;

/* A field counts as absent when missing or null: the spec treats both the same. */
static json_t *dec_get(Dec *d, const char *key) {
        json_t *v = json_object_get(d->data, key);
        return v && !json_is_null(v) ? v : NULL;
}

static int dec_missing(Dec *d, const char *key) {
        return strdup_error(d->ret_error, -EINVAL, "%s: required field '%s' is missing or null", d->event, key);
}

static int dec_type(Dec *d, const char *key, const char *want) {
        return strdup_error(d->ret_error, -EINVAL, "%s: field '%s' is not %s", d->event, key, want);
}

static int dec_string_value(Dec *d, const char *key, json_t *v, bool required, const char **ret) {
        if (!v) {
                if (required)
                        return dec_missing(d, key);
                *ret = NULL;
                return 0;
        }
        if (!json_is_string(v))
                return dec_type(d, key, "a string");
        *ret = json_string_value(v);
        return 0;
}

static int dec_string(Dec *d, const char *key, bool required, const char **ret) {
        return dec_string_value(d, key, dec_get(d, key), required, ret);
}

/* meter_name, or the legacy tap_name when meter_name is absent or null. */
static int dec_meter(Dec *d, bool required, const char **ret) {
        json_t *v = dec_get(d, "meter_name");
        const char *key = "meter_name";
        if (!v) {
                json_t *t = dec_get(d, "tap_name");
                if (t) {
                        v = t;
                        key = "tap_name";
                }
        }
        return dec_string_value(d, key, v, required, ret);
}

/* Integers may arrive as 100, 100.0 or 1e2 (exact integers); "100.5", "1e-400" and
 * "100.000000000000000001" are no integers, whatever double they round to. */
static int dec_int(Dec *d, const char *key, bool required, int64_t min, int64_t max,
                   bool *ret_present, int64_t *ret) {
        json_t *v = dec_get(d, key);
        int64_t x;

        if (!v) {
                if (required)
                        return dec_missing(d, key);
                if (ret_present)
                        *ret_present = false;
                return 0;
        }
        if (json_is_integer(v)) {
                json_int_t i = json_integer_value(v);
                if (i < min || i > max)
                        return strdup_error(d->ret_error, -EINVAL, "%s: field '%s' out of range (%lld not in %" PRId64 "..%" PRId64 ")",
                                    d->event, key, (long long) i, min, max);
                x = i;
        } else if (json_is_real(v)) {
                double f = json_real_value(v);
                if (!isfinite(f) || floor(f) != f)
                        return dec_type(d, key, "an integer");
                if (!d->scanned) {
                        inexact_scan(d->frame, d->frame_size, &d->inexact);
                        d->scanned = true;
                }
                if (inexact_has(&d->inexact, f))
                        return dec_type(d, key, "an integer (a fraction or exponent must give an exact integer)");
                /* Compare as doubles; 2^63 is the first double past INT64_MAX. */
                if (f < (double) min || f >= 9223372036854775808.0 || f > (double) max)
                        return strdup_error(d->ret_error, -EINVAL, "%s: field '%s' out of range", d->event, key);
                x = (int64_t) f;
                if (x > max)
                        return strdup_error(d->ret_error, -EINVAL, "%s: field '%s' out of range", d->event, key);
        } else
                return dec_type(d, key, "an integer");

        if (ret_present)
                *ret_present = true;
        *ret = x;
        return 0;
}

static int dec_double(Dec *d, const char *key, bool required, bool *ret_present, double *ret) {
        json_t *v = dec_get(d, key);
        double f;

        if (!v) {
                if (required)
                        return dec_missing(d, key);
                if (ret_present)
                        *ret_present = false;
                return 0;
        }
        if (json_is_integer(v))
                f = (double) json_integer_value(v);
        else if (json_is_real(v))
                f = json_real_value(v);
        else
                return dec_type(d, key, "a number");
        if (!isfinite(f))
                return dec_type(d, key, "a finite number");
        if (ret_present)
                *ret_present = true;
        *ret = f;
        return 0;
}

static int dec_bool(Dec *d, const char *key, bool *ret) {
        json_t *v = dec_get(d, key);
        if (!v) {
                *ret = false;
                return 0;
        }
        if (!json_is_boolean(v))
                return dec_type(d, key, "a boolean");
        *ret = json_is_true(v);
        return 0;
}

static int dec_enum(Dec *d, const char *key, int (*from_string)(const char *), int *ret) {
        const char *s = NULL;
        int r = dec_string(d, key, true, &s);
        if (r < 0)
                return r;
        r = from_string(s);
        if (r < 0)
                return strdup_error(d->ret_error, -EINVAL, "%s: field '%s' has an unknown value", d->event, key);
        *ret = r;
        return 0;
}

static int dec_time(Dec *d, const char *key, kegnet_usec_t *ret) {
        const char *s = NULL;
        int r = dec_string(d, key, true, &s);
        if (r < 0)
                return r;
        if (time_parse_rfc3339(s, ret) < 0)
                return strdup_error(d->ret_error, -EINVAL, "%s: field '%s' is not an RFC 3339 timestamp", d->event, key);
        return 0;
}

/* "events" of a Hello: null/absent = every broadcast; names of other kinds or unknown names are
 * ignored (a later version's events). */
static int dec_events(Dec *d, const char *key, bool *ret_present, unsigned *ret) {
        json_t *v = dec_get(d, key), *e;
        unsigned events = 0;
        size_t i;

        if (!v) {
                *ret_present = false;
                *ret = 0;
                return 0;
        }
        if (!json_is_array(v))
                return dec_type(d, key, "a list of event names");
        json_array_foreach(v, i, e) {
                KegnetKind k;

                if (!json_is_string(e))
                        return dec_type(d, key, "a list of event names");
                k = kegnet_kind_from_string(json_string_value(e));
                if (KEGNET_EVENT_BIT(k) & KEGNET_EVENTS_BROADCAST)
                        events |= KEGNET_EVENT_BIT(k);
        }
        *ret_present = true;
        *ret = events;
        return 0;
}

static int decode_data(Dec *d, KegnetMessage *m) {
        int64_t i;
        int e, r;

        switch (m->kind) {
        case KEGNET_METER_UPDATE: {
                KegnetMeterUpdate u = {};
                if ((r = dec_meter(d, true, &u.meter_name)) < 0 ||
                    (r = dec_int(d, "reading", true, 0, UINT32_MAX, NULL, &i)) < 0)
                        return r;
                u.reading = (uint32_t) i;
                m->meter_update = u;
                return 0;
        }
        case KEGNET_THERMO_EVENT: {
                KegnetThermoEvent u = {};
                if ((r = dec_string(d, "sensor_name", true, &u.sensor_name)) < 0 ||
                    (r = dec_double(d, "sensor_value", true, NULL, &u.sensor_value)) < 0)
                        return r;
                m->thermo_event = u;
                return 0;
        }
        case KEGNET_TOKEN_AUTH_EVENT: {
                KegnetTokenAuthEvent u = {};
                if ((r = dec_meter(d, false, &u.meter_name)) < 0 ||
                    (r = dec_string(d, "auth_device_name", true, &u.auth_device_name)) < 0 ||
                    (r = dec_string(d, "token_value", true, &u.token_value)) < 0 ||
                    (r = dec_enum(d, "status", kegnet_token_status_from_string, &e)) < 0)
                        return r;
                u.status = (KegnetTokenStatus) e;
                m->token_auth_event = u;
                return 0;
        }
        case KEGNET_FLOW_REQUEST: {
                KegnetFlowRequest u = {};
                if ((r = dec_meter(d, true, &u.meter_name)) < 0 ||
                    (r = dec_enum(d, "request", kegnet_flow_request_type_from_string, &e)) < 0)
                        return r;
                u.request = (KegnetFlowRequestType) e;
                m->flow_request = u;
                return 0;
        }
        case KEGNET_CONTROLLER_CONNECTED_EVENT: {
                KegnetControllerConnectedEvent u = {};
                int64_t fw = 0, up = 0;
                if ((r = dec_string(d, "controller_name", true, &u.controller_name)) < 0 ||
                    (r = dec_string(d, "serial_number", false, &u.serial_number)) < 0 ||
                    (r = dec_int(d, "firmware_version", false, 0, INT32_MAX, &u.has_firmware_version, &fw)) < 0 ||
                    (r = dec_int(d, "uptime_ms", false, 0, INT64_MAX, &u.has_uptime_ms, &up)) < 0 ||
                    (r = dec_bool(d, "board_reset", &u.board_reset)) < 0 ||
                    (r = dec_string(d, "device", false, &u.device)) < 0)
                        return r;
                u.firmware_version = (uint32_t) fw;
                u.uptime_ms = (uint64_t) up;
                m->controller_connected_event = u;
                return 0;
        }
        case KEGNET_FLOW_UPDATE: {
                KegnetFlowUpdate u = {};
                int64_t ticks = 0;
                if ((r = dec_int(d, "flow_id", true, 0, INT64_MAX, NULL, &u.flow_id)) < 0 ||
                    (r = dec_meter(d, true, &u.meter_name)) < 0 ||
                    (r = dec_enum(d, "state", kegnet_flow_state_from_string, &e)) < 0 ||
                    (r = dec_string(d, "username", false, &u.username)) < 0 ||
                    (r = dec_time(d, "start_time", &u.start_time)) < 0 ||
                    (r = dec_time(d, "last_activity_time", &u.last_activity_time)) < 0 ||
                    (r = dec_int(d, "ticks", true, 0, INT64_MAX, NULL, &ticks)) < 0 ||
                    (r = dec_double(d, "volume_ml", false, &u.has_volume_ml, &u.volume_ml)) < 0)
                        return r;
                u.state = (KegnetFlowState) e;
                u.ticks = (uint64_t) ticks;
                m->flow_update = u;
                return 0;
        }
        case KEGNET_DRINK_CREATED_EVENT: {
                KegnetDrinkCreatedEvent u = {};
                int64_t ticks = 0;
                if ((r = dec_int(d, "flow_id", true, 0, INT64_MAX, NULL, &u.flow_id)) < 0 ||
                    (r = dec_int(d, "drink_id", false, 0, INT64_MAX, &u.has_drink_id, &u.drink_id)) < 0 ||
                    (r = dec_meter(d, true, &u.meter_name)) < 0 ||
                    (r = dec_time(d, "start_time", &u.start_time)) < 0 ||
                    (r = dec_time(d, "end_time", &u.end_time)) < 0 ||
                    (r = dec_string(d, "username", false, &u.username)) < 0 ||
                    (r = dec_int(d, "ticks", false, 0, INT64_MAX, &u.has_ticks, &ticks)) < 0 ||
                    (r = dec_double(d, "volume_ml", false, &u.has_volume_ml, &u.volume_ml)) < 0 ||
                    (r = dec_string(d, "uuid", false, &u.uuid)) < 0)
                        return r;
                u.ticks = (uint64_t) ticks;
                m->drink_created_event = u;
                return 0;
        }
        case KEGNET_SET_RELAY_OUTPUT_EVENT: {
                KegnetSetRelayOutputEvent u = {};
                if ((r = dec_string(d, "output_name", true, &u.output_name)) < 0 ||
                    (r = dec_enum(d, "output_mode", kegnet_output_mode_from_string, &e)) < 0)
                        return r;
                u.output_mode = (KegnetOutputMode) e;
                m->set_relay_output_event = u;
                return 0;
        }
        case KEGNET_HELLO: {
                KegnetHello u = {};
                const char *role = NULL;
                if ((r = dec_string(d, "role", true, &role)) < 0 ||
                    (r = dec_string(d, "name", false, &u.name)) < 0 ||
                    (r = dec_string(d, "session", false, &u.session)) < 0 ||
                    (r = dec_int(d, "seq", false, 0, (int64_t) KEGNET_SEQ_MAX, &u.has_seq, &i)) < 0 ||
                    (r = dec_events(d, "events", &u.has_events, &u.events)) < 0)
                        return r;
                u.role = kegnet_role_from_string(role);
                u.role_name = role;
                u.seq = u.has_seq ? (uint64_t) i : 0;
                m->hello = u;
                return 0;
        }
        case KEGNET_WELCOME: {
                KegnetWelcome u = {};
                const char *role = NULL;
                if ((r = dec_string(d, "role", true, &role)) < 0 ||
                    (r = dec_int(d, "acked", false, 0, (int64_t) KEGNET_SEQ_MAX, &u.has_acked, &i)) < 0 ||
                    (r = dec_string(d, "reason", false, &u.reason)) < 0)
                        return r;
                u.role = kegnet_role_from_string(role);
                u.role_name = role;
                u.acked = u.has_acked ? (uint64_t) i : 0;
                m->welcome = u;
                return 0;
        }
        case KEGNET_ACK:
                if ((r = dec_int(d, "acked", true, 0, (int64_t) KEGNET_SEQ_MAX, NULL, &i)) < 0)
                        return r;
                m->ack.acked = (uint64_t) i;
                return 0;
        case KEGNET_REFUSED:
                return dec_string(d, "reason", true, &m->refused.reason);
        default:
                return 0;
        }
}

static bool is_json_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The hot paths: a MeterUpdate per meter frame of every board at the core, an Ack every 100 ms
 * at a producer. As kegnet_message_encode() writes them, each is one fixed text with holes; a frame
 * that is exactly that, with a meter name of printable ASCII (no escapes, so valid UTF-8 as it is)
 * and plain decimal numbers in range, is decoded here without jansson and without allocating.
 * Anything else (other spacing or order, escapes, other fields, leading zeros, a number out of
 * range, ...) returns false and is left to jansson, so that the result of kegnet_message_parse()
 * does not depend on the path taken. */
#define LITERAL_LEN(s) (sizeof(s) - 1)

static bool fast_literal(const char **q, const char *end, const char *literal, size_t len) {
        if ((size_t) (end - *q) < len || memcmp(*q, literal, len) != 0)
                return false;
        *q += len;
        return true;
}

/* JSON's integer syntax without sign, fraction or exponent, and no leading zeros; at most 'max'. */
static bool fast_uint(const char **q, const char *end, uint64_t max, uint64_t *ret) {
        const char *p = *q;
        uint64_t v = 0;

        if (p >= end || *p < '0' || *p > '9' || (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9'))
                return false;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
                uint64_t digit = (uint64_t) (*p - '0');
                if (v > (max - digit) / 10)
                        return false;
                v = v * 10 + digit;
        }
        *q = p;
        *ret = v;
        return true;
}

/* The end of the frame: "}}" and JSON whitespace. */
static bool fast_end(const char *q, const char *end) {
        if (!fast_literal(&q, end, "}}", 2))
                return false;
        for (; q < end; q++)
                if (!is_json_space(*q))
                        return false;
        return true;
}

#define FAST_METER_HEAD "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\""
#define FAST_METER_MID "\",\"reading\":"
#define FAST_ACK_HEAD "{\"event\":\"Ack\",\"data\":{\"acked\":"

static bool parse_fast(const char *p, size_t size, KegnetMessage *ret) {
        const char *end = p + size, *q = p, *name;
        uint64_t v;

        if (fast_literal(&q, end, FAST_ACK_HEAD, LITERAL_LEN(FAST_ACK_HEAD))) {
                if (!fast_uint(&q, end, KEGNET_SEQ_MAX, &v) || !fast_end(q, end))
                        return false;
                ret->kind = KEGNET_ACK;
                ret->event_name = kind_names[KEGNET_ACK];
                ret->ack.acked = v;
                return true;
        }

        if (!fast_literal(&q, end, FAST_METER_HEAD, LITERAL_LEN(FAST_METER_HEAD)))
                return false;
        for (name = q; q < end && *q != '"'; q++) {
                unsigned char c = (unsigned char) *q;
                if (c < 0x20 || c > 0x7e || c == '\\')
                        return false;
        }
        size_t name_len = (size_t) (q - name);
        if (name_len >= sizeof ret->_text ||
            !fast_literal(&q, end, FAST_METER_MID, LITERAL_LEN(FAST_METER_MID)) ||
            !fast_uint(&q, end, UINT32_MAX, &v) || !fast_end(q, end))
                return false;

        memcpy(ret->_text, name, name_len);
        ret->_text[name_len] = 0;
        ret->kind = KEGNET_METER_UPDATE;
        ret->event_name = kind_names[KEGNET_METER_UPDATE];
        ret->meter_update = (KegnetMeterUpdate) {
                .meter_name = ret->_text,
                .reading = (uint32_t) v,
        };
        return true;
}

int kegnet_message_parse(const void *frame, size_t size, KegnetMessage *ret, char **ret_error) {
        const char *p = frame;
        json_error_t jerr;
        json_t *root, *ev, *data;
        KegnetKind kind;
        int r;

        if (ret_error)
                *ret_error = NULL;
        assert_return(ret, -EINVAL);
        *ret = KEGNET_MESSAGE_NULL;
        assert_return(frame || size == 0, -EINVAL);

        size_t i = 0;
        while (i < size && is_json_space(p[i]))
                i++;
        if (i == size)
                return -ENODATA;
        if (parse_fast(p, size, ret))
                return 0;

        root = json_loadb(p, size, 0, &jerr);
        if (!root)
                return strdup_error(ret_error, -EBADMSG, "invalid JSON: %s (line %d, column %d)",
                            jerr.text, jerr.line, jerr.column);
        ret->_doc = root;

        if (!json_is_object(root))
                return strdup_error(ret_error, -EBADMSG, "frame is not a JSON object");
        ev = json_object_get(root, "event");
        if (!json_is_string(ev))
                return strdup_error(ret_error, -EBADMSG, "frame has no string 'event'");

        ret->event_name = json_string_value(ev);
        kind = kegnet_kind_from_string(ret->event_name);
        ret->kind = kind;
        if (kind == KEGNET_UNKNOWN)
                return 0;

        data = json_object_get(root, "data");
        if (!json_is_object(data))
                return strdup_error(ret_error, -EINVAL, "%s: 'data' is missing or not an object", ret->event_name);

        Dec d = { .data = data, .event = ret->event_name, .ret_error = ret_error, .frame = p, .frame_size = size };
        r = decode_data(&d, ret);
        if (r < 0) {
                /* Leave no half-filled fields behind: only kind and name are valid on error. */
                *ret = (KegnetMessage) {
                        .kind = ret->kind,
                        .event_name = ret->event_name,
                        ._doc = ret->_doc,
                };
                return r;
        }
        return 0;
}

void kegnet_message_done(KegnetMessage *m) {
        if (!m)
                return;
        if (m->_doc)
                json_decref(m->_doc);
        *m = KEGNET_MESSAGE_NULL;
}

/* ---- splitter ---- */

void kegnet_splitter_init(KegnetSplitter *s) {
        assert_return(s, );
        *s = KEGNET_SPLITTER_INIT;
}

void kegnet_splitter_done(KegnetSplitter *s) {
        if (!s)
                return;
        free(s->buf);
        *s = KEGNET_SPLITTER_INIT;
}

size_t kegnet_splitter_pending(const KegnetSplitter *s) {
        assert_return(s, 0);
        return s->size - s->start;
}

int kegnet_splitter_feed(KegnetSplitter *s, const void *data, size_t size) {
        assert_return(s, -EINVAL);
        assert_return(data || size == 0, -EINVAL);

        if (s->overflow)
                return -EMSGSIZE;
        if (size == 0)
                return 0;

        /* Drop consumed bytes before growing, so a connection's buffer stays about one frame big. */
        if (s->start > 0 && (s->size + size + 1 > s->allocated || s->start >= s->size / 2)) {
                memmove(s->buf, s->buf + s->start, s->size - s->start);
                s->size -= s->start;
                s->start = 0;
        }
        if (s->size + size + 1 > s->allocated) {
                if (size > SIZE_MAX / 2 - s->size)
                        return -ENOMEM;
                size_t want = MAX(s->allocated * 2, s->size + size + 1);
                want = MAX(want, (size_t) 4096);
                char *n = realloc(s->buf, want);
                if (!n)
                        return -ENOMEM;
                s->buf = n;
                s->allocated = want;
        }
        memcpy(s->buf + s->size, data, size);
        s->size += size;
        s->buf[s->size] = 0;
        return 0;
}

int kegnet_splitter_next(KegnetSplitter *s, const char **ret_frame, size_t *ret_size) {
        assert_return(s, -EINVAL);
        assert_return(ret_frame, -EINVAL);
        assert_return(ret_size, -EINVAL);

        for (;;) {
                if (s->overflow)
                        return -EMSGSIZE;

                char *b = s->buf + s->start;
                size_t avail = s->size - s->start;
                const char *hit = NULL;

                if (avail >= 2) {
                        size_t from = s->scanned;
                        hit = memmem(b + from, avail - from, "\n\n", 2);
                }
                if (!hit) {
                        s->scanned = avail > 0 ? avail - 1 : 0;
                        /* Without a terminator among the first MAX+2 bytes the frame is too long; with
                         * exactly MAX+1 bytes it is too long unless the last one starts the terminator. */
                        if (avail >= (size_t) KEGNET_MAX_FRAME + 2 ||
                            (avail == (size_t) KEGNET_MAX_FRAME + 1 && b[KEGNET_MAX_FRAME] != '\n')) {
                                s->overflow = true;
                                return -EMSGSIZE;
                        }
                        if (avail == 0)
                                s->start = s->size = 0;
                        return 0;
                }

                size_t len = (size_t) (hit - b);
                s->start += len + 2;
                s->scanned = 0;
                if (len > KEGNET_MAX_FRAME) {
                        s->overflow = true;
                        return -EMSGSIZE;
                }
                b[len] = 0;

                bool blank = true;
                for (size_t i = 0; i < len && blank; i++)
                        blank = is_json_space(b[i]);
                if (blank)
                        continue;

                *ret_frame = b;
                *ret_size = len;
                return 1;
        }
}
