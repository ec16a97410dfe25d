/* The one JSON writer, for everything this project writes as JSON: kegnet frames, spool records,
 * drinks.log lines, the thermo log and every future payload. Compact output in the order the caller
 * writes it (fixed key order), doubles in the shortest round-trip spelling (util-double.h),
 * timestamps as RFC 3339 UTC strings (util-time.h), and strings checked as UTF-8: text that is not
 * valid UTF-8 is refused, never written. Reading JSON stays with jansson.
 *
 * Errors are sticky: the first one (-EINVAL for invalid text, a non-finite double, a value where a
 * key is due or unbalanced containers; -ERANGE for a timestamp past year 9999; -ENOMEM) is kept,
 * later calls do nothing, and json_writer_finish() returns it. So a writer is filled without
 * checking every call:
 *
 *     JsonWriter w = JSON_WRITER_INIT;
 *     json_writer_object_begin(&w);
 *     json_writer_field_string(&w, "meter_name", name);
 *     json_writer_field_double(&w, "volume_ml", ml);
 *     json_writer_object_end(&w);
 *     r = json_writer_finish(&w, &text, &len);
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "util-strbuf.h"

#define JSON_WRITER_MAX_DEPTH 32

typedef struct JsonWriter {
        StrBuf out;
        unsigned depth;
        uint32_t is_object;     /* bit d: the container at depth d+1 is an object */
        uint32_t has_items;     /* bit d: it holds at least one member */
        bool after_key;         /* a key was written, its value is due */
} JsonWriter;

#define JSON_WRITER_INIT ((JsonWriter) {})

/* Each returns the writer's sticky error (0 while all is well). */
int json_writer_object_begin(JsonWriter *w);
int json_writer_object_end(JsonWriter *w);
int json_writer_array_begin(JsonWriter *w);
int json_writer_array_end(JsonWriter *w);
int json_writer_key(JsonWriter *w, const char *key);

int json_writer_null(JsonWriter *w);
int json_writer_bool(JsonWriter *w, bool v);
int json_writer_int(JsonWriter *w, int64_t v);
int json_writer_uint(JsonWriter *w, uint64_t v);
int json_writer_double(JsonWriter *w, double v);                /* finite only */
int json_writer_string(JsonWriter *w, const char *s);           /* NULL writes null */
int json_writer_timestamp(JsonWriter *w, uint64_t realtime_usec);

/* A value that is already JSON text, written verbatim: one complete value the caller serialised
 * with this writer earlier (an event payload kept as text, so that a resend is byte for byte the
 * same). It is not checked again; "" is -EINVAL. */
int json_writer_raw(JsonWriter *w, const char *json);

/* key + value. */
int json_writer_field_null(JsonWriter *w, const char *key);
int json_writer_field_bool(JsonWriter *w, const char *key, bool v);
int json_writer_field_int(JsonWriter *w, const char *key, int64_t v);
int json_writer_field_uint(JsonWriter *w, const char *key, uint64_t v);
int json_writer_field_double(JsonWriter *w, const char *key, double v);
int json_writer_field_string(JsonWriter *w, const char *key, const char *s);
int json_writer_field_timestamp(JsonWriter *w, const char *key, uint64_t realtime_usec);
int json_writer_field_raw(JsonWriter *w, const char *key, const char *json);

/* Records an error of the caller's (e.g. a value out of its range) unless one is already set. */
int json_writer_set_error(JsonWriter *w, int error);
/* Bytes written so far. */
size_t json_writer_length(const JsonWriter *w);

/* The document (NUL-terminated, malloc'ed) once every container is closed; the writer is reset.
 * On any recorded error, or open containers (-EINVAL), nothing is handed over, the memory is freed
 * and the error is returned. */
int json_writer_finish(JsonWriter *w, char **ret, size_t *ret_len);
/* The same with 'suffix' (a record's terminator: "\n", kegnet's "\n\n") appended to the document;
 * *ret_len counts it. */
int json_writer_finish_with(JsonWriter *w, const char *suffix, char **ret, size_t *ret_len);
void json_writer_done(JsonWriter *w);

/* Writing into a buffer the caller keeps for the next document (a sender's hot path): once it is
 * big enough, a document costs no allocation. json_writer_start_in() moves *buf into the writer
 * with its content dropped; json_writer_finish_in() checks the document as json_writer_finish_with()
 * does and moves the buffer back, holding the document and 'suffix' (NUL-terminated). On error the
 * buffer comes back empty (its memory kept) and the error is returned. */
void json_writer_start_in(JsonWriter *w, StrBuf *buf);
int json_writer_finish_in(JsonWriter *w, const char *suffix, StrBuf *buf);
