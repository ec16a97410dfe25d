/* Unit tests of kegbot_mqtt's state file (src/mqtt/state-file.c): the example of
 * mqtt-home-assistant.md section 10 read, what is written read back to the same model, and
 * documents of the wrong shape refused with a reason (nothing half-loaded is used). */
#include <math.h>

#include "state-file.h"
#include "test-util.h"
#include "util-strv.h"

static const Settings settings = {
        .node_id = "kegbot_1f9a33c0",
        .base = "kegbot/kegbot_1f9a33c0",
        .prefix = "homeassistant",
        .discovery = DISCOVERY_DEVICE,
        .hostname = "bar",
        .version = "0.2.0",
};

static const char example[] =
        "{\"version\":1,\"node_id\":\"kegbot_1f9a33c0\",\"base\":\"kegbot/kegbot_1f9a33c0\","
        "\"discovery_prefix\":\"homeassistant\",\"discovery\":\"component\",\"mqtt_events_dropped\":0,"
        "\"published\":{\"homeassistant/sensor/kegbot_1f9a33c0_tap_kegboard_2eflow0_served/config\":"
        "\"tap:kegboard.flow0\"},\"groups\":{\"tap:kegboard.flow0\":{\"last_seen\":\"2026-11-26T12:00:00Z\","
        "\"auto_created\":false,\"served_total_ml\":123456.7,\"last_pour\":{\"uuid\":"
        "\"3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10\",\"volume_ml\":354.5,\"time\":\"2026-11-26T12:00:09Z\","
        "\"user\":\"mikey\"},\"ghost\":[[1795662760,17.3]]}},\"recent_drinks\":"
        "[\"3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10\"]}";

static void test_example(void) {
        Model *m = NULL;
        char *reason = NULL;
        Group *g;

        check(model_new(&m) == 0);
        check_int(state_file_parse(m, example, strlen(example), &reason), 0);
        check(!reason);
        g = model_find(m, GROUP_TAP, "kegboard.flow0");
        check(g && !g->live && !g->present && !g->auto_created);
        if (g) {
                check(g->served_total_ml == 123456.7);
                check(g->seen == UINT64_C(1795694400000000));
                check(g->last_pour.set && g->last_pour.volume_ml == 354.5 && streq(g->last_pour.user, "mikey"));
                check(g->last_pour.time == UINT64_C(1795694409000000));
                check_streq(g->last_pour.uuid, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10");
                check(g->n_ghost == 1 && g->ghost[0].time == 1795662760 && g->ghost[0].ml == 17.3);
        }
        check(model_drink_seen(m, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10"));
        check_int(m->n_ledger, 1);
        check_streq(m->ledger[0].group, "tap:kegboard.flow0");
        check(!m->ledger[0].text);
        model_free(m);
}

static void test_roundtrip(void) {
        Model *m = NULL, *m2 = NULL;
        char *text = NULL, *text2 = NULL, *reason = NULL;
        Group *g;

        check(model_new(&m) == 0);
        m->events_dropped = 3;
        check(model_add(m, GROUP_TAP, "kegboard.flow1", &g) == 0);
        g->auto_created = true;
        g->served_total_ml = 0.1 + 0.2;
        g->seen = UINT64_C(1795694400000000);
        g->last_pour.set = true;
        strcpy(g->last_pour.uuid, "00000000-0000-4000-8000-000000000001");
        g->last_pour.volume_ml = -1;
        check(tap_ghost_add(g, 1795662760, 1.5, 1795662760) == 1);
        check(strv_extend(&g->components, NULL, "served=sensor") == 0);
        check(model_add(m, GROUP_BOARD, "kegboard", NULL) == 0);
        check(model_add(m, GROUP_SENSOR, "kegboard.thermo-1", NULL) == 0);
        check(strv_extend(&m->node_components, NULL, "mqtt_dropped=sensor") == 0);
        check(ledger_put(m, "homeassistant/device/kegbot_1f9a33c0/config", "node", NULL) == 0);
        check(ledger_put(m, "kegbot/kegbot_1f9a33c0/tap/kegboard_2eflow1", "tap:kegboard.flow1", NULL) == 0);
        check(model_drink_remember(m, "00000000-0000-4000-8000-000000000001") == 0);

        check(state_file_format(m, &settings, &text, NULL) == 0);
        check(text && text[strlen(text) - 1] == '\n');
        check(model_new(&m2) == 0);
        check_int(state_file_parse(m2, text, strlen(text), &reason), 0);
        check(state_file_format(m2, &settings, &text2, NULL) == 0);
        check_streq(text2, text);
        g = model_find(m2, GROUP_TAP, "kegboard.flow1");
        check(g && g->auto_created && g->served_total_ml == 0.1 + 0.2 && g->last_pour.volume_ml == -1);
        check(g && g->last_pour.time == 0 && !g->last_pour.user);
        check(g && strv_contains(g->components, "served=sensor"));
        check(strv_contains(m2->node_components, "mqtt_dropped=sensor"));
        check(m2->events_dropped == 3);
        check(model_find(m2, GROUP_SENSOR, "kegboard.thermo-1"));
        check(strstr(text, "\"discovery\":\"device\""));
        free(text);
        free(text2);
        model_free(m);
        model_free(m2);
}

static void check_bad(const char *doc, const char *why) {
        Model *m = NULL;
        char *reason = NULL;

        check(model_new(&m) == 0);
        check_int(state_file_parse(m, doc, strlen(doc), &reason), -EBADMSG);
        check(reason && strstr(reason, why));
        if (!reason || !strstr(reason, why))
                fprintf(stderr, "  for %s: %s\n", doc, reason ?: "(no reason)");
        free(reason);
        model_free(m);
}

static void test_refused(void) {
        check_bad("", "line");
        check_bad("[]", "not a JSON object");
        check_bad("{}", "unknown version");
        check_bad("{\"version\":2}", "unknown version");
        check_bad("{\"version\":1,\"version\":1}", "line");
        check_bad("{\"version\":1,\"mqtt_events_dropped\":-1}", "mqtt_events_dropped");
        check_bad("{\"version\":1,\"groups\":[]}", "bad groups");
        check_bad("{\"version\":1,\"groups\":{\"keg:x\":{}}}", "bad group keg:x");
        check_bad("{\"version\":1,\"groups\":{\"tap:x\":{\"served_total_ml\":-1}}}", "bad group tap:x");
        check_bad("{\"version\":1,\"groups\":{\"tap:x\":{\"last_seen\":\"yesterday\"}}}", "bad group tap:x");
        check_bad("{\"version\":1,\"groups\":{\"tap:x\":{\"last_pour\":{\"uuid\":\"x\"}}}}", "bad group tap:x");
        check_bad("{\"version\":1,\"groups\":{\"tap:x\":{\"ghost\":[[1,-2]]}}}", "bad group tap:x");
        check_bad("{\"version\":1,\"groups\":{\"tap:x\":{\"components\":{\"a=b\":\"c\"}}}}", "bad group tap:x");
        check_bad("{\"version\":1,\"published\":{\"a\":\"nobody\"}}", "bad entry in published");
        check_bad("{\"version\":1,\"published\":{\"a\":1}}", "bad entry in published");
        check_bad("{\"version\":1,\"recent_drinks\":[\"nope\"]}", "bad UUID");
        check_bad("{\"version\":1,\"recent_drinks\":{}}", "bad recent_drinks");
        check_bad("{\"version\":1,\"groups\":{\"tap:\":{}}}", "bad group tap:");
        check_bad("{\"version\":1,\"groups\":{\"tap:\\u0000x\":{}}}", "NUL");
}

int main(void) {
        test_run(test_example);
        test_run(test_roundtrip);
        test_run(test_refused);
        return test_result();
}
