/* Unit tests of the JSON writer (json-writer.h): compact output in the caller's order, every value
 * type, escaping, nesting and separators, and every refusal (invalid UTF-8, non-finite numbers,
 * misplaced values, unbalanced containers) being sticky and leaving nothing written. The output is
 * read back with jansson to prove it is JSON. */
#include <jansson.h>
#include <math.h>

#include "json-writer.h"
#include "test-util.h"

static char *finish(JsonWriter *w, int expect) {
        char *s = NULL;
        size_t n = 0;
        int r = json_writer_finish(w, &s, &n);

        check_int(r, expect);
        if (r < 0) {
                check(s == NULL);
                return NULL;
        }
        check_int(n, strlen(s));
        json_error_t e;
        json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
        if (!j)
                fprintf(stderr, "not JSON (%s): %s\n", e.text, s);
        check(j != NULL);
        json_decref(j);
        return s;
}

static void test_object(void) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *s = NULL;

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "drink_id", 7);
        json_writer_field_string(&w, "uuid", "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10");
        json_writer_field_uint(&w, "flow_id", INT64_MAX);
        json_writer_field_int(&w, "neg", INT64_MIN);
        json_writer_field_double(&w, "volume_ml", 1440 / 2.2);
        json_writer_field_string(&w, "username", NULL);
        json_writer_field_null(&w, "nothing");
        json_writer_field_bool(&w, "t", true);
        json_writer_field_bool(&w, "f", false);
        json_writer_field_timestamp(&w, "pour_time", UINT64_C(1795694409) * USEC_PER_SEC + 999);
        json_writer_object_end(&w);
        s = finish(&w, 0);
        check_streq(s, "{\"drink_id\":7,\"uuid\":\"3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10\","
                       "\"flow_id\":9223372036854775807,\"neg\":-9223372036854775808,"
                       "\"volume_ml\":654.5454545454545,\"username\":null,\"nothing\":null,"
                       "\"t\":true,\"f\":false,\"pour_time\":\"2026-11-26T12:00:09Z\"}");
}

static void test_uint_max(void) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *s = NULL;

        /* Valid JSON, though past what jansson holds: compared as text only. */
        json_writer_uint(&w, UINT64_MAX);
        check_int(json_writer_finish(&w, &s, NULL), 0);
        check_streq(s, "18446744073709551615");
}

static void test_nesting(void) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *s = NULL, *e = NULL, *top = NULL;

        json_writer_object_begin(&w);
        json_writer_field_string(&w, "event", "X");
        json_writer_key(&w, "data");
        json_writer_object_begin(&w);
        json_writer_key(&w, "list");
        json_writer_array_begin(&w);
        json_writer_int(&w, 1);
        json_writer_double(&w, 2.5);
        json_writer_string(&w, "three");
        json_writer_array_begin(&w);
        json_writer_array_end(&w);
        json_writer_object_begin(&w);
        json_writer_object_end(&w);
        json_writer_null(&w);
        json_writer_array_end(&w);
        json_writer_field_double(&w, "after", 100.0);
        json_writer_object_end(&w);
        json_writer_object_end(&w);
        s = finish(&w, 0);
        check_streq(s, "{\"event\":\"X\",\"data\":{\"list\":[1,2.5,\"three\",[],{},null],\"after\":100.0}}");

        /* Empty containers and a bare value at the top. */
        json_writer_array_begin(&w);
        json_writer_array_end(&w);
        e = finish(&w, 0);
        check_streq(e, "[]");
        json_writer_string(&w, "x");
        top = finish(&w, 0);
        check_streq(top, "\"x\"");
}

static void test_strings(void) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *s = NULL;

        json_writer_string(&w, "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f Bi\xc3\xa8re \xe2\x82\xac \xf0\x9f\x8d\xba \xe2\x80\xa8");
        s = finish(&w, 0);
        check_streq(s, "\"q\\\"b\\\\s/\\n\\r\\t\\b\\f\\u0001\\u001f\x7f Bi\xc3\xa8re \xe2\x82\xac \xf0\x9f\x8d\xba \xe2\x80\xa8\"");
        json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
        check(j && streq(json_string_value(j),
                         "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f Bi\xc3\xa8re \xe2\x82\xac \xf0\x9f\x8d\xba \xe2\x80\xa8"));
        json_decref(j);
}

static void test_refusals(void) {
        JsonWriter w = JSON_WRITER_INIT;

        /* Invalid UTF-8 anywhere: nothing comes out, and later calls change nothing. */
        json_writer_object_begin(&w);
        json_writer_field_string(&w, "username", "caf\xe9");
        check_int(json_writer_field_int(&w, "drink_id", 1), -EINVAL);
        json_writer_object_end(&w);
        finish(&w, -EINVAL);
        json_writer_object_begin(&w);
        json_writer_field_string(&w, "caf\xe9", "x");
        json_writer_object_end(&w);
        finish(&w, -EINVAL);

        /* Numbers JSON cannot hold. */
        check_int(json_writer_double(&w, NAN), -EINVAL);
        finish(&w, -EINVAL);
        check_int(json_writer_double(&w, -INFINITY), -EINVAL);
        finish(&w, -EINVAL);
        check_int(json_writer_timestamp(&w, UINT64_MAX), -ERANGE);
        finish(&w, -ERANGE);

        /* Structure: a member without its key, a key outside an object, a key without its value,
         * mismatched or unclosed containers, two documents, nothing at all. */
        json_writer_object_begin(&w);
        check_int(json_writer_int(&w, 1), -EINVAL);
        finish(&w, -EINVAL);
        check_int(json_writer_key(&w, "k"), -EINVAL);
        finish(&w, -EINVAL);
        json_writer_array_begin(&w);
        check_int(json_writer_key(&w, "k"), -EINVAL);
        finish(&w, -EINVAL);
        json_writer_object_begin(&w);
        json_writer_key(&w, "k");
        check_int(json_writer_object_end(&w), -EINVAL);
        finish(&w, -EINVAL);
        json_writer_object_begin(&w);
        json_writer_key(&w, "k");
        check_int(json_writer_key(&w, "l"), -EINVAL);
        finish(&w, -EINVAL);
        json_writer_object_begin(&w);
        check_int(json_writer_array_end(&w), -EINVAL);
        finish(&w, -EINVAL);
        json_writer_array_begin(&w);
        finish(&w, -EINVAL);
        check_int(json_writer_object_end(&w), -EINVAL);
        finish(&w, -EINVAL);
        json_writer_int(&w, 1);
        check_int(json_writer_int(&w, 2), -EINVAL);
        finish(&w, -EINVAL);
        finish(&w, -EINVAL);

        /* Caller-recorded errors are kept, the first one wins. */
        json_writer_object_begin(&w);
        check_int(json_writer_set_error(&w, -ERANGE), -ERANGE);
        check_int(json_writer_set_error(&w, -EINVAL), -ERANGE);
        finish(&w, -ERANGE);

        /* Nesting is bounded. */
        int r = 0;
        for (int i = 0; i <= JSON_WRITER_MAX_DEPTH && r == 0; i++)
                r = json_writer_array_begin(&w);
        check_int(r, -EINVAL);
        json_writer_done(&w);

        /* Preconditions. */
        char *s = NULL;
        check_int(json_writer_finish(NULL, &s, NULL), -EINVAL);
        check_int(json_writer_object_begin(NULL), -EINVAL);
        json_writer_done(NULL);
}

static void test_finish_with(void) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *s = NULL;
        char *t = NULL;
        size_t n = 0;

        json_writer_object_begin(&w);
        json_writer_object_end(&w);
        check_int(json_writer_finish_with(&w, "\n\n", &s, &n), 0);
        check_streq(s, "{}\n\n");
        check_int(n, 4);
        /* No terminator after a refused document. */
        json_writer_string(&w, "caf\xe9");
        check_int(json_writer_finish_with(&w, "\n", &t, &n), -EINVAL);
        check(t == NULL);
}

static void test_length_and_reuse(void) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *a = NULL, *b = NULL;

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "a", 1);
        check_int(json_writer_length(&w), strlen("{\"a\":1"));
        json_writer_object_end(&w);
        a = finish(&w, 0);
        /* A finished writer starts over. */
        json_writer_object_begin(&w);
        json_writer_object_end(&w);
        b = finish(&w, 0);
        check_streq(b, "{}");
}

int main(void) {
        test_run(test_object);
        test_run(test_uint_max);
        test_run(test_nesting);
        test_run(test_strings);
        test_run(test_refusals);
        test_run(test_finish_with);
        test_run(test_length_and_reuse);
        return test_result();
}
