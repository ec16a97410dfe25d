/* Unit tests of the one drink record (drink.h): the engine's borrowed record becomes an owned drink
 * with a fresh UUID and the boot id, deep copies, and failure text that is always writable. */
#include "drink.h"
#include "test-util.h"
#include "util-utf8.h"

static const Drink engine_drink = {
        .flow_id = 1795694350,
        .meter_name = (char *) "kegboard.flow0",
        .username = (char *) "mikey",
        .ticks = 1440,
        .volume_known = true,
        .volume_ml = 1440 / 2.2,
        .start_realtime = UINT64_C(1795694401) * USEC_PER_SEC,
        .pour_realtime = UINT64_C(1795694409) * USEC_PER_SEC,
        .duration_sec = 8,
        .pour_boottime = 81234567,
};

static void test_new_from_flow(void) {
        _cleanup_(drink_freep) Drink *a = NULL, *b = NULL;
        sd_id128_t boot;

        check_int(drink_new_from_flow(&engine_drink, &a), 0);
        check_int(drink_new_from_flow(&engine_drink, &b), 0);
        if (!a || !b)
                return;
        check(a->meter_name != engine_drink.meter_name);
        check_streq(a->meter_name, "kegboard.flow0");
        check_streq(a->username, "mikey");
        check_int(a->ticks, 1440);
        check(a->volume_known && a->volume_ml == 1440 / 2.2);
        check_int(a->pour_realtime, engine_drink.pour_realtime);
        check_int(a->pour_boottime, 81234567);
        check(uuid_is_canonical(a->uuid));
        check(!streq(a->uuid, b->uuid));
        if (sd_id128_get_boot(&boot) >= 0)
                check(sd_id128_equal(a->boot_id, boot));
        check(!a->has_drink_id && !a->has_failure);

        /* The engine always names the meter; anything else is a caller's bug. */
        Drink nameless = engine_drink;
        Drink *c = NULL;
        nameless.meter_name = NULL;
        check_int(drink_new_from_flow(&nameless, &c), -EINVAL);
        check(c == NULL);
        check_int(drink_new_from_flow(NULL, &c), -EINVAL);
}

static void test_dup_and_failure(void) {
        _cleanup_(drink_freep) Drink *a = NULL, *b = NULL;
        DrinkFailure f = {
                .time_realtime = UINT64_C(1795694500) * USEC_PER_SEC,
                .http_status = 500,
                .code = (char *) "ServerError",
                .message = (char *) "caf\xe9 \xc3\xa9",        /* a server's non-UTF-8 text */
        };

        check_int(drink_new_from_flow(&engine_drink, &a), 0);
        if (!a)
                return;
        check_int(drink_set_failure(a, &f), 0);
        check(a->has_failure);
        check_streq(a->failure.code, "ServerError");
        check_streq(a->failure.message, "caf\\xe9 \xc3\xa9");
        check(utf8_is_valid(a->failure.message));

        check_int(drink_dup(a, &b), 0);
        if (!b)
                return;
        check(b->meter_name != a->meter_name && b->username != a->username);
        check(b->failure.message != a->failure.message);
        check_streq(b->failure.message, a->failure.message);
        check_streq(b->uuid, a->uuid);
        check_int(b->failure.http_status, 500);

        /* Anonymous, no failure: NULLs stay NULL. */
        drink_clear_failure(b);
        check(!b->has_failure && !b->failure.code && !b->failure.message);
        free(b->username);
        b->username = NULL;
        Drink *c = NULL;
        check_int(drink_dup(b, &c), 0);
        check(c && c->username == NULL && !c->has_failure);
        drink_free(c);
        check(drink_free(NULL) == NULL);
}

static void test_pour_json(void) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *s = NULL;
        Drink anon = engine_drink;

        anon.username = NULL;
        anon.volume_known = false;
        json_writer_object_begin(&w);
        drink_write_pour_json(&engine_drink, &w);
        json_writer_object_end(&w);
        check_int(json_writer_finish(&w, &s, NULL), 0);
        check_streq(s, "{\"flow_id\":1795694350,\"meter_name\":\"kegboard.flow0\",\"ticks\":1440,"
                       "\"volume_ml\":654.5454545454545,\"username\":\"mikey\",\"start_time\":"
                       "\"2026-11-26T12:00:01Z\",\"pour_time\":\"2026-11-26T12:00:09Z\"}");
        free(s);
        s = NULL;
        json_writer_object_begin(&w);
        drink_write_pour_json(&anon, &w);
        json_writer_object_end(&w);
        check_int(json_writer_finish(&w, &s, NULL), 0);
        check(s && strstr(s, "\"volume_ml\":null,\"username\":null,"));
}

/* ghost-pours.md section 10: "flags" only when there are some, sorted. */
static void test_flags_json(void) {
        static const struct {
                unsigned flags;
                const char *json;
        } cases[] = {
                { 0, "{}" },
                { DRINK_FLAG_KICKED, "{\"flags\":[\"kicked\"]}" },
                { DRINK_FLAG_LONG_POUR, "{\"flags\":[\"long_pour\"]}" },
                { DRINK_FLAG_LONG_POUR | DRINK_FLAG_KICKED, "{\"flags\":[\"kicked\",\"long_pour\"]}" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                JsonWriter w = JSON_WRITER_INIT;
                _cleanup_(freep) char *s = NULL;
                Drink d = engine_drink;

                d.flags = cases[i].flags;
                json_writer_object_begin(&w);
                drink_write_flags_json(&d, &w);
                json_writer_object_end(&w);
                check_int(json_writer_finish(&w, &s, NULL), 0);
                check_streq(s, cases[i].json);
        }
        check_streq(drink_flag_to_string(DRINK_FLAG_KICKED), "kicked");
        check_streq(drink_flag_to_string(DRINK_FLAG_LONG_POUR), "long_pour");
        check(drink_flag_to_string(0) == NULL);
        check_int(drink_flag_from_string("long_pour"), DRINK_FLAG_LONG_POUR);
        check_int(drink_flag_from_string("flat"), 0);
}

int main(void) {
        test_run(test_new_from_flow);
        test_run(test_dup_and_failure);
        test_run(test_pour_json);
        test_run(test_flags_json);
        return test_result();
}
