/* kegnet message codec (spec/kegnet-protocol.md sections 2-5, 8). Encoding is done by hand so that
 * the field order, null handling and float spelling are exactly the spec's; decoding uses jansson. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kegnet.h"
#include "macro.h"

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

/* ---- time ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil calendar algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned) (y - era * 400);
        unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t) doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *ret_y, unsigned *ret_m, unsigned *ret_d) {
        z += 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        unsigned doe = (unsigned) (z - era * 146097);
        unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t y = (int64_t) yoe + era * 400;
        unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        unsigned mp = (5 * doy + 2) / 153;
        unsigned d = doy - (153 * mp + 2) / 5 + 1;
        unsigned m = mp < 10 ? mp + 3 : mp - 9;
        *ret_y = y + (m <= 2);
        *ret_m = m;
        *ret_d = d;
}

static bool is_leap(int64_t y) {
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m) {
        static const unsigned dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* 253402300800 = 10000-01-01T00:00:00Z */
#define KEGNET_TIME_LIMIT_SEC INT64_C(253402300800)

int kegnet_timestamp_format(kegnet_usec_t t, char buf[static KEGNET_TIMESTAMP_MAX]) {
        uint64_t sec = t / USEC_PER_SEC;
        if (sec >= (uint64_t) KEGNET_TIME_LIMIT_SEC)
                return -ERANGE;

        int64_t days = (int64_t) (sec / 86400);
        unsigned rem = (unsigned) (sec % 86400);
        int64_t y;
        unsigned m, d;
        civil_from_days(days, &y, &m, &d);
        char tmp[64];   /* the compiler cannot see that every field has its fixed width */
        int n = snprintf(tmp, sizeof tmp, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02uZ",
                         y, m, d, rem / 3600, rem / 60 % 60, rem % 60);
        if (n != KEGNET_TIMESTAMP_MAX - 1)
                return -ERANGE;
        memcpy(buf, tmp, KEGNET_TIMESTAMP_MAX);
        return 0;
}

static bool parse_digits(const char **p, unsigned n, unsigned *ret) {
        unsigned v = 0;
        for (unsigned i = 0; i < n; i++) {
                char c = (*p)[i];
                if (c < '0' || c > '9')
                        return false;
                v = v * 10 + (unsigned) (c - '0');
        }
        *p += n;
        *ret = v;
        return true;
}

int kegnet_timestamp_parse(const char *s, kegnet_usec_t *ret) {
        unsigned y, mo, d, h, mi, sec, oh = 0, om = 0;
        uint64_t usec = 0;
        int sign = 0;
        const char *p = s;

        if (!s || !ret)
                return -EINVAL;

        if (!parse_digits(&p, 4, &y) || *p++ != '-' ||
            !parse_digits(&p, 2, &mo) || *p++ != '-' ||
            !parse_digits(&p, 2, &d))
                return -EINVAL;
        if (*p != 'T' && *p != 't')
                return -EINVAL;
        p++;
        if (!parse_digits(&p, 2, &h) || *p++ != ':' ||
            !parse_digits(&p, 2, &mi) || *p++ != ':' ||
            !parse_digits(&p, 2, &sec))
                return -EINVAL;
        if (*p == '.') {
                unsigned n = 0;
                p++;
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                for (; *p >= '0' && *p <= '9'; p++, n++)
                        if (n < 6)
                                usec = usec * 10 + (uint64_t) (*p - '0');
                for (; n < 6; n++)
                        usec *= 10;
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                sign = *p == '+' ? 1 : -1;
                p++;
                if (!parse_digits(&p, 2, &oh) || *p++ != ':' || !parse_digits(&p, 2, &om))
                        return -EINVAL;
                if (oh > 23 || om > 59)
                        return -EINVAL;
        } else
                return -EINVAL;
        if (*p != 0)
                return -EINVAL;

        if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
            h > 23 || mi > 59 || sec > 60)    /* 60: a leap second, as RFC 3339 allows */
                return -EINVAL;

        int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
        t -= sign * (int64_t) (oh * 3600 + om * 60);
        if (t < 0 || t >= KEGNET_TIME_LIMIT_SEC)
                return -EINVAL;

        *ret = (uint64_t) t * USEC_PER_SEC + usec;
        return 0;
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

        if (isempty(s) || !ret_host || !ret_port)
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

typedef struct Out {
        char *buf;
        size_t size, allocated;
        int error;
} Out;

static void out_reserve(Out *o, size_t extra) {
        if (o->error)
                return;
        if (o->size + extra + 1 <= o->allocated)
                return;
        size_t want = MAX(o->allocated * 2, o->size + extra + 1);
        want = MAX(want, (size_t) 256);
        char *n = realloc(o->buf, want);
        if (!n) {
                o->error = -ENOMEM;
                return;
        }
        o->buf = n;
        o->allocated = want;
}

static void out_mem(Out *o, const char *p, size_t n) {
        out_reserve(o, n);
        if (o->error)
                return;
        memcpy(o->buf + o->size, p, n);
        o->size += n;
        o->buf[o->size] = 0;
}

static void out_str(Out *o, const char *s) {
        out_mem(o, s, strlen(s));
}

/* Length of the UTF-8 sequence at p (at most n bytes available), or 0 if it is not well formed
 * (overlong forms, surrogates and code points past U+10FFFF are refused, as JSON requires). */
static size_t utf8_seq_len(const unsigned char *p, size_t n) {
        unsigned c = p[0];
        size_t len;
        uint32_t cp;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf) {
                len = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                cp = c & 0x07;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                return 0;
        return len;
}

static void out_json_string(Out *o, const char *s) {
        const unsigned char *p = (const unsigned char *) s;
        size_t n = strlen(s);

        out_mem(o, "\"", 1);
        for (size_t i = 0; i < n && !o->error;) {
                unsigned char c = p[i];
                if (c >= 0x80) {
                        size_t l = utf8_seq_len(p + i, n - i);
                        if (l == 0) {
                                o->error = -EINVAL;
                                return;
                        }
                        out_mem(o, s + i, l);
                        i += l;
                        continue;
                }
                switch (c) {
                case '"':  out_str(o, "\\\""); break;
                case '\\': out_str(o, "\\\\"); break;
                case '\b': out_str(o, "\\b"); break;
                case '\f': out_str(o, "\\f"); break;
                case '\n': out_str(o, "\\n"); break;
                case '\r': out_str(o, "\\r"); break;
                case '\t': out_str(o, "\\t"); break;
                default:
                        if (c < 0x20) {
                                char e[8];
                                snprintf(e, sizeof e, "\\u%04x", c);
                                out_str(o, e);
                        } else
                                out_mem(o, s + i, 1);
                }
                i++;
        }
        out_mem(o, "\"", 1);
}

/* Shortest decimal that reads back as the same double, spelled like Python's repr() (fixed
 * notation for exponents -4..15, else d.ddde+XX) and always with a '.' or an exponent. */
static int format_double(double v, char *buf, size_t bufsize) {
        char tmp[48], digits[24];
        size_t nd = 0;
        int exp10;
        bool neg;

        if (!isfinite(v))
                return -EINVAL;
        if (v == 0) {
                snprintf(buf, bufsize, "%s", signbit(v) ? "-0.0" : "0.0");
                return 0;
        }
        for (int prec = 1; prec <= 17; prec++) {
                snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
                if (strtod(tmp, NULL) == v)
                        break;
        }

        const char *p = tmp;
        neg = *p == '-';
        if (neg)
                p++;
        for (; *p && *p != 'e'; p++)
                if (*p >= '0' && *p <= '9' && nd < sizeof digits - 1)
                        digits[nd++] = *p;
        digits[nd] = 0;
        if (*p != 'e')
                return -EINVAL;
        exp10 = atoi(p + 1);
        while (nd > 1 && digits[nd - 1] == '0')
                digits[--nd] = 0;

        Out o = {};
        if (neg)
                out_str(&o, "-");
        if (exp10 >= -4 && exp10 < 16) {
                if (exp10 < 0) {
                        out_str(&o, "0.");
                        for (int i = 0; i < -exp10 - 1; i++)
                                out_str(&o, "0");
                        out_str(&o, digits);
                } else {
                        size_t ip = (size_t) exp10 + 1;
                        for (size_t i = 0; i < ip; i++)
                                out_mem(&o, i < nd ? &digits[i] : "0", 1);
                        out_str(&o, ".");
                        if (nd > ip)
                                out_str(&o, digits + ip);
                        else
                                out_str(&o, "0");
                }
        } else {
                char e[16];
                out_mem(&o, digits, 1);
                if (nd > 1) {
                        out_str(&o, ".");
                        out_str(&o, digits + 1);
                }
                snprintf(e, sizeof e, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
                out_str(&o, e);
        }
        if (o.error) {
                free(o.buf);
                return o.error;
        }
        if (o.size + 1 > bufsize) {
                free(o.buf);
                return -ENOBUFS;
        }
        memcpy(buf, o.buf, o.size + 1);
        free(o.buf);
        return 0;
}

typedef struct Enc {
        Out out;
        bool first;
} Enc;

static void enc_key(Enc *e, const char *key) {
        if (!e->first)
                out_str(&e->out, ",");
        e->first = false;
        out_str(&e->out, "\"");
        out_str(&e->out, key);
        out_str(&e->out, "\":");
}

static void enc_string(Enc *e, const char *key, const char *v, bool required) {
        enc_key(e, key);
        if (!v) {
                if (required && !e->out.error)
                        e->out.error = -EINVAL;
                out_str(&e->out, "null");
                return;
        }
        out_json_string(&e->out, v);
}

static void enc_int(Enc *e, const char *key, int64_t v) {
        char b[32];
        enc_key(e, key);
        snprintf(b, sizeof b, "%" PRId64, v);
        out_str(&e->out, b);
}

static void enc_uint_max(Enc *e, const char *key, uint64_t v, uint64_t max) {
        char b[32];
        enc_key(e, key);
        if (v > max && !e->out.error)
                e->out.error = -EINVAL;
        snprintf(b, sizeof b, "%" PRIu64, v);
        out_str(&e->out, b);
}

static void enc_nonneg(Enc *e, const char *key, int64_t v) {
        if (v < 0 && !e->out.error)
                e->out.error = -EINVAL;
        enc_int(e, key, v);
}

static void enc_null(Enc *e, const char *key) {
        enc_key(e, key);
        out_str(&e->out, "null");
}

static void enc_bool(Enc *e, const char *key, bool v) {
        enc_key(e, key);
        out_str(&e->out, v ? "true" : "false");
}

static void enc_double(Enc *e, const char *key, double v) {
        char b[48];
        int r;
        enc_key(e, key);
        r = format_double(v, b, sizeof b);
        if (r < 0) {
                if (!e->out.error)
                        e->out.error = r;
                return;
        }
        out_str(&e->out, b);
}

static void enc_enum(Enc *e, const char *key, const char *name) {
        enc_key(e, key);
        if (!name) {
                if (!e->out.error)
                        e->out.error = -EINVAL;
                return;
        }
        out_json_string(&e->out, name);
}

static void enc_time(Enc *e, const char *key, kegnet_usec_t t) {
        char b[KEGNET_TIMESTAMP_MAX];
        enc_key(e, key);
        if (kegnet_timestamp_format(t, b) < 0) {
                if (!e->out.error)
                        e->out.error = -EINVAL;
                return;
        }
        out_json_string(&e->out, b);
}

int kegnet_message_encode(const KegnetMessage *m, char **ret, size_t *ret_size) {
        const char *name;
        Enc e = { .first = true };

        if (!m || !ret)
                return -EINVAL;
        name = kegnet_kind_to_string(m->kind);
        if (!name)
                return -EINVAL;

        out_str(&e.out, "{\"event\":\"");
        out_str(&e.out, name);
        out_str(&e.out, "\",\"data\":{");

        switch (m->kind) {
        case KEGNET_METER_UPDATE: {
                const KegnetMeterUpdate *u = &m->meter_update;
                enc_string(&e, "meter_name", u->meter_name, true);
                enc_int(&e, "reading", u->reading);
                break;
        }
        case KEGNET_THERMO_EVENT: {
                const KegnetThermoEvent *u = &m->thermo_event;
                enc_string(&e, "sensor_name", u->sensor_name, true);
                enc_double(&e, "sensor_value", u->sensor_value);
                break;
        }
        case KEGNET_TOKEN_AUTH_EVENT: {
                const KegnetTokenAuthEvent *u = &m->token_auth_event;
                enc_string(&e, "meter_name", u->meter_name, false);
                enc_string(&e, "auth_device_name", u->auth_device_name, true);
                enc_string(&e, "token_value", u->token_value, true);
                enc_enum(&e, "status", kegnet_token_status_to_string(u->status));
                break;
        }
        case KEGNET_FLOW_REQUEST: {
                const KegnetFlowRequest *u = &m->flow_request;
                enc_string(&e, "meter_name", u->meter_name, true);
                enc_enum(&e, "request", kegnet_flow_request_type_to_string(u->request));
                break;
        }
        case KEGNET_CONTROLLER_CONNECTED_EVENT: {
                const KegnetControllerConnectedEvent *u = &m->controller_connected_event;
                enc_string(&e, "controller_name", u->controller_name, true);
                enc_string(&e, "serial_number", u->serial_number, false);
                if (u->has_firmware_version)
                        enc_uint_max(&e, "firmware_version", u->firmware_version, INT32_MAX);
                else
                        enc_null(&e, "firmware_version");
                if (u->has_uptime_ms)
                        enc_uint_max(&e, "uptime_ms", u->uptime_ms, INT64_MAX);
                else
                        enc_null(&e, "uptime_ms");
                enc_bool(&e, "board_reset", u->board_reset);
                enc_string(&e, "device", u->device, false);
                break;
        }
        case KEGNET_FLOW_UPDATE: {
                const KegnetFlowUpdate *u = &m->flow_update;
                enc_nonneg(&e, "flow_id", u->flow_id);
                enc_string(&e, "meter_name", u->meter_name, true);
                enc_enum(&e, "state", kegnet_flow_state_to_string(u->state));
                enc_string(&e, "username", u->username, false);
                enc_time(&e, "start_time", u->start_time);
                enc_time(&e, "last_activity_time", u->last_activity_time);
                enc_uint_max(&e, "ticks", u->ticks, INT64_MAX);
                if (u->has_volume_ml)
                        enc_double(&e, "volume_ml", u->volume_ml);
                else
                        enc_null(&e, "volume_ml");
                break;
        }
        case KEGNET_DRINK_CREATED_EVENT: {
                const KegnetDrinkCreatedEvent *u = &m->drink_created_event;
                enc_nonneg(&e, "flow_id", u->flow_id);
                if (u->has_drink_id)
                        enc_nonneg(&e, "drink_id", u->drink_id);
                else
                        enc_null(&e, "drink_id");
                enc_string(&e, "meter_name", u->meter_name, true);
                enc_time(&e, "start_time", u->start_time);
                enc_time(&e, "end_time", u->end_time);
                enc_string(&e, "username", u->username, false);
                enc_uint_max(&e, "ticks", u->ticks, INT64_MAX);
                if (u->has_volume_ml)
                        enc_double(&e, "volume_ml", u->volume_ml);
                else
                        enc_null(&e, "volume_ml");
                enc_string(&e, "uuid", u->uuid, true);
                break;
        }
        case KEGNET_SET_RELAY_OUTPUT_EVENT: {
                const KegnetSetRelayOutputEvent *u = &m->set_relay_output_event;
                enc_string(&e, "output_name", u->output_name, true);
                enc_enum(&e, "output_mode", kegnet_output_mode_to_string(u->output_mode));
                break;
        }
        default:
                free(e.out.buf);
                return -EINVAL;
        }
        out_str(&e.out, "}}");

        if (e.out.error) {
                free(e.out.buf);
                return e.out.error;
        }
        if (e.out.size > KEGNET_MAX_FRAME) {
                free(e.out.buf);
                return -E2BIG;
        }
        out_str(&e.out, "\n\n");
        if (e.out.error) {
                free(e.out.buf);
                return e.out.error;
        }
        *ret = e.out.buf;
        if (ret_size)
                *ret_size = e.out.size;
        return 0;
}

/* ---- decoder ---- */

static int fail(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(char **ret_error, int r, const char *fmt, ...) {
        if (ret_error) {
                va_list ap;
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r;
}

typedef struct Dec {
        json_t *data;
        const char *event;
        char **ret_error;
} Dec;

/* A field counts as absent when missing or null: the spec treats both the same. */
static json_t *dec_get(Dec *d, const char *key) {
        json_t *v = json_object_get(d->data, key);
        return v && !json_is_null(v) ? v : NULL;
}

static int dec_missing(Dec *d, const char *key) {
        return fail(d->ret_error, -EINVAL, "%s: required field '%s' is missing or null", d->event, key);
}

static int dec_type(Dec *d, const char *key, const char *want) {
        return fail(d->ret_error, -EINVAL, "%s: field '%s' is not %s", d->event, key, want);
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

/* Integers may arrive as 100, 100.0 or 1e2: only the value matters. */
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
                        return fail(d->ret_error, -EINVAL, "%s: field '%s' out of range (%lld not in %" PRId64 "..%" PRId64 ")",
                                    d->event, key, (long long) i, min, max);
                x = i;
        } else if (json_is_real(v)) {
                double f = json_real_value(v);
                if (!isfinite(f) || floor(f) != f)
                        return dec_type(d, key, "an integer");
                /* Compare as doubles; 2^63 is the first double past INT64_MAX. */
                if (f < (double) min || f >= 9223372036854775808.0 || f > (double) max)
                        return fail(d->ret_error, -EINVAL, "%s: field '%s' out of range", d->event, key);
                x = (int64_t) f;
                if (x > max)
                        return fail(d->ret_error, -EINVAL, "%s: field '%s' out of range", d->event, key);
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
        const char *s;
        int r = dec_string(d, key, true, &s);
        if (r < 0)
                return r;
        r = from_string(s);
        if (r < 0)
                return fail(d->ret_error, -EINVAL, "%s: field '%s' has an unknown value", d->event, key);
        *ret = r;
        return 0;
}

static int dec_time(Dec *d, const char *key, kegnet_usec_t *ret) {
        const char *s;
        int r = dec_string(d, key, true, &s);
        if (r < 0)
                return r;
        if (kegnet_timestamp_parse(s, ret) < 0)
                return fail(d->ret_error, -EINVAL, "%s: field '%s' is not an RFC 3339 timestamp", d->event, key);
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
                    (r = dec_int(d, "ticks", true, 0, INT64_MAX, NULL, &ticks)) < 0 ||
                    (r = dec_double(d, "volume_ml", false, &u.has_volume_ml, &u.volume_ml)) < 0 ||
                    (r = dec_string(d, "uuid", true, &u.uuid)) < 0)
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
        default:
                return 0;
        }
}

static bool is_json_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int kegnet_message_parse(const void *frame, size_t size, KegnetMessage *ret, char **ret_error) {
        const char *p = frame;
        json_error_t jerr;
        json_t *root, *ev, *data;
        KegnetKind kind;
        int r;

        if (ret_error)
                *ret_error = NULL;
        if (!ret)
                return -EINVAL;
        *ret = KEGNET_MESSAGE_NULL;
        if (!frame && size > 0)
                return -EINVAL;

        size_t i = 0;
        while (i < size && is_json_space(p[i]))
                i++;
        if (i == size)
                return -ENODATA;

        root = json_loadb(p, size, 0, &jerr);
        if (!root)
                return fail(ret_error, -EBADMSG, "invalid JSON: %s (line %d, column %d)",
                            jerr.text, jerr.line, jerr.column);
        ret->_doc = root;

        if (!json_is_object(root))
                return fail(ret_error, -EBADMSG, "frame is not a JSON object");
        ev = json_object_get(root, "event");
        if (!json_is_string(ev))
                return fail(ret_error, -EBADMSG, "frame has no string 'event'");

        ret->event_name = json_string_value(ev);
        kind = kegnet_kind_from_string(ret->event_name);
        ret->kind = kind;
        if (kind == KEGNET_UNKNOWN)
                return 0;

        data = json_object_get(root, "data");
        if (!json_is_object(data))
                return fail(ret_error, -EINVAL, "%s: 'data' is missing or not an object", ret->event_name);

        Dec d = { .data = data, .event = ret->event_name, .ret_error = ret_error };
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
        *s = KEGNET_SPLITTER_INIT;
}

void kegnet_splitter_done(KegnetSplitter *s) {
        if (!s)
                return;
        free(s->buf);
        *s = KEGNET_SPLITTER_INIT;
}

size_t kegnet_splitter_pending(const KegnetSplitter *s) {
        return s->size - s->start;
}

int kegnet_splitter_feed(KegnetSplitter *s, const void *data, size_t size) {
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
