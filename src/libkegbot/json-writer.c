/* JSON writer: see json-writer.h. */
#include <inttypes.h>
#include <math.h>

#include "json-writer.h"
#include "util-double.h"
#include "util-time.h"
#include "util-utf8.h"

#define BIT(d) (UINT32_C(1) << (d))

int json_writer_set_error(JsonWriter *w, int error) {
        assert_return(w, -EINVAL);
        return strbuf_set_error(&w->out, error);
}

static bool in_object(const JsonWriter *w) {
        return w->depth > 0 && (w->is_object & BIT(w->depth - 1));
}

/* Before a value: the separator, and the check that a value may come here. */
static int value_prefix(JsonWriter *w) {
        if (w->out.error)
                return w->out.error;
        if (w->after_key) {
                w->after_key = false;
                return 0;
        }
        if (in_object(w))
                return json_writer_set_error(w, -EINVAL);      /* a member needs its key first */
        if (w->depth == 0) {
                if (w->out.len > 0)
                        return json_writer_set_error(w, -EINVAL);      /* one document only */
                return 0;
        }
        if (w->has_items & BIT(w->depth - 1))
                strbuf_putc(&w->out, ',');
        w->has_items |= BIT(w->depth - 1);
        return w->out.error;
}

/* The escaped body of a JSON string, or -EINVAL if s is not valid UTF-8. */
static int write_string_body(JsonWriter *w, const char *s) {
        const unsigned char *p = (const unsigned char *) s;
        size_t n = strlen(s), run = 0;

        strbuf_putc(&w->out, '"');
        for (size_t i = 0; i < n;) {
                unsigned char c = p[i];
                const char *esc = NULL;
                char u[8];

                if (c >= 0x80) {
                        size_t l = utf8_sequence_length(s + i, n - i, NULL);
                        if (l == 0)
                                return json_writer_set_error(w, -EINVAL);
                        i += l;
                        continue;
                }
                switch (c) {
                case '"':  esc = "\\\""; break;
                case '\\': esc = "\\\\"; break;
                case '\b': esc = "\\b"; break;
                case '\f': esc = "\\f"; break;
                case '\n': esc = "\\n"; break;
                case '\r': esc = "\\r"; break;
                case '\t': esc = "\\t"; break;
                default:
                        if (c < 0x20) {
                                snprintf(u, sizeof u, "\\u%04x", c);
                                esc = u;
                        }
                }
                if (!esc) {
                        i++;
                        continue;
                }
                /* Flush the plain run before this character, then its escape. */
                strbuf_append(&w->out, s + run, i - run);
                strbuf_puts(&w->out, esc);
                run = ++i;
        }
        strbuf_append(&w->out, s + run, n - run);
        strbuf_putc(&w->out, '"');
        return w->out.error;
}

static int container_begin(JsonWriter *w, char c, bool object) {
        assert_return(w, -EINVAL);

        if (value_prefix(w) < 0)
                return w->out.error;
        if (w->depth >= JSON_WRITER_MAX_DEPTH)
                return json_writer_set_error(w, -EINVAL);
        w->depth++;
        if (object)
                w->is_object |= BIT(w->depth - 1);
        else
                w->is_object &= ~BIT(w->depth - 1);
        w->has_items &= ~BIT(w->depth - 1);
        return strbuf_putc(&w->out, c);
}

static int container_end(JsonWriter *w, char c, bool object) {
        assert_return(w, -EINVAL);

        if (w->out.error)
                return w->out.error;
        if (w->depth == 0 || w->after_key || in_object(w) != object)
                return json_writer_set_error(w, -EINVAL);
        w->depth--;
        return strbuf_putc(&w->out, c);
}

int json_writer_object_begin(JsonWriter *w) { return container_begin(w, '{', true); }
int json_writer_object_end(JsonWriter *w) { return container_end(w, '}', true); }
int json_writer_array_begin(JsonWriter *w) { return container_begin(w, '[', false); }
int json_writer_array_end(JsonWriter *w) { return container_end(w, ']', false); }

int json_writer_key(JsonWriter *w, const char *key) {
        assert_return(w, -EINVAL);
        assert_return(key, json_writer_set_error(w, -EINVAL));

        if (w->out.error)
                return w->out.error;
        if (!in_object(w) || w->after_key)
                return json_writer_set_error(w, -EINVAL);
        if (w->has_items & BIT(w->depth - 1))
                strbuf_putc(&w->out, ',');
        w->has_items |= BIT(w->depth - 1);
        if (write_string_body(w, key) < 0)
                return w->out.error;
        w->after_key = true;
        return strbuf_putc(&w->out, ':');
}

static int write_literal(JsonWriter *w, const char *text) {
        assert_return(w, -EINVAL);

        if (value_prefix(w) < 0)
                return w->out.error;
        return strbuf_puts(&w->out, text);
}

int json_writer_null(JsonWriter *w) {
        return write_literal(w, "null");
}

int json_writer_raw(JsonWriter *w, const char *json) {
        assert_return(w, -EINVAL);
        if (!json || !*json)
                return json_writer_set_error(w, -EINVAL);
        if (value_prefix(w) < 0)
                return w->out.error;
        return strbuf_puts(&w->out, json);
}

int json_writer_field_raw(JsonWriter *w, const char *key, const char *json) {
        json_writer_key(w, key);
        return json_writer_raw(w, json);
}

int json_writer_bool(JsonWriter *w, bool v) {
        return write_literal(w, v ? "true" : "false");
}

int json_writer_int(JsonWriter *w, int64_t v) {
        char b[32];

        snprintf(b, sizeof b, "%" PRIi64, v);
        return write_literal(w, b);
}

int json_writer_uint(JsonWriter *w, uint64_t v) {
        char b[32];

        snprintf(b, sizeof b, "%" PRIu64, v);
        return write_literal(w, b);
}

int json_writer_double(JsonWriter *w, double v) {
        char b[DOUBLE_STRING_MAX];

        assert_return(w, -EINVAL);

        if (!isfinite(v))
                return json_writer_set_error(w, -EINVAL);
        return write_literal(w, double_format(v, b));
}

int json_writer_string(JsonWriter *w, const char *s) {
        assert_return(w, -EINVAL);

        if (!s)
                return json_writer_null(w);
        if (value_prefix(w) < 0)
                return w->out.error;
        return write_string_body(w, s);
}

int json_writer_timestamp(JsonWriter *w, uint64_t realtime_usec) {
        char b[TIME_RFC3339_MAX];
        int r;

        assert_return(w, -EINVAL);

        r = time_format_rfc3339(realtime_usec, b);
        if (r < 0)
                return json_writer_set_error(w, r);
        return json_writer_string(w, b);
}

int json_writer_field_null(JsonWriter *w, const char *key) {
        json_writer_key(w, key);
        return json_writer_null(w);
}

int json_writer_field_bool(JsonWriter *w, const char *key, bool v) {
        json_writer_key(w, key);
        return json_writer_bool(w, v);
}

int json_writer_field_int(JsonWriter *w, const char *key, int64_t v) {
        json_writer_key(w, key);
        return json_writer_int(w, v);
}

int json_writer_field_uint(JsonWriter *w, const char *key, uint64_t v) {
        json_writer_key(w, key);
        return json_writer_uint(w, v);
}

int json_writer_field_double(JsonWriter *w, const char *key, double v) {
        json_writer_key(w, key);
        return json_writer_double(w, v);
}

int json_writer_field_string(JsonWriter *w, const char *key, const char *s) {
        json_writer_key(w, key);
        return json_writer_string(w, s);
}

int json_writer_field_timestamp(JsonWriter *w, const char *key, uint64_t realtime_usec) {
        json_writer_key(w, key);
        return json_writer_timestamp(w, realtime_usec);
}

size_t json_writer_length(const JsonWriter *w) {
        return w ? w->out.len : 0;
}

void json_writer_start_in(JsonWriter *w, StrBuf *buf) {
        assert_return(w, );
        assert_return(buf, );

        *w = JSON_WRITER_INIT;
        w->out = *buf;
        *buf = STRBUF_INIT;
        strbuf_reset(&w->out);
}

int json_writer_finish_in(JsonWriter *w, const char *suffix, StrBuf *buf) {
        int r;

        assert_return(w, -EINVAL);
        assert_return(suffix, -EINVAL);
        assert_return(buf, -EINVAL);

        if (w->depth > 0 || w->after_key || w->out.len == 0)
                json_writer_set_error(w, -EINVAL);
        strbuf_puts(&w->out, suffix);
        r = w->out.error;
        *buf = w->out;
        *w = JSON_WRITER_INIT;
        if (r < 0)
                strbuf_reset(buf);
        return r;
}

int json_writer_finish_with(JsonWriter *w, const char *suffix, char **ret, size_t *ret_len) {
        _cleanup_(strbuf_done) StrBuf b = STRBUF_INIT;
        int r;

        assert_return(ret, -EINVAL);

        r = json_writer_finish_in(w, suffix, &b);
        if (r < 0)
                return r;
        return strbuf_take(&b, ret, ret_len);
}

int json_writer_finish(JsonWriter *w, char **ret, size_t *ret_len) {
        return json_writer_finish_with(w, "", ret, ret_len);
}

void json_writer_done(JsonWriter *w) {
        if (!w)
                return;
        strbuf_done(&w->out);
        *w = JSON_WRITER_INIT;
}
