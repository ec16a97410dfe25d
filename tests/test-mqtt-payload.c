/* Unit tests of kegbot_mqtt's payloads (src/mqtt/payload.c): keys, topics and identities, the state
 * documents and events byte for byte as mqtt-home-assistant.md sections 3 and 6 show them, and the
 * discovery configs of sections 7.5 and 7.6 (component mode byte for byte, device mode with the
 * removal entries of section 7.7). */
#include <math.h>

#include "payload.h"
#include "test-util.h"
#include "util-strv.h"

/* 2026-11-26T12:00:00Z */
#define T0 UINT64_C(1795694400000000)

static const Settings settings = {
        .node_id = "kegbot_1f9a33c0",
        .base = "kegbot/kegbot_1f9a33c0",
        .prefix = "homeassistant",
        .discovery = DISCOVERY_COMPONENT,
        .hostname = "bar",
        .version = "0.2.0",
};

static void check_key(const char *name, const char *key) {
        char *k = key_encode(name);

        check_streq(k, key);
        free(k);
}

static void test_keys_and_topics(void) {
        char buf[16], *t;
        size_t n = 0;
        const char *k;

        check_key("kegboard.flow0", "kegboard_2eflow0");
        check_key("kegboard-1a2b3c4d.flow1", "kegboard-1a2b3c4d_2eflow1");
        check_key("kegboard.thermo-6b0316621d4cff28", "kegboard_2ethermo-6b0316621d4cff28");
        check_key("my_tap", "my_5ftap");
        check_key("Tap 1/+#", "Tap_201_2f_2b_23");
        check_key("k\xc3\xa9g", "k_c3_a9g");
        check_key("", "");

        check(node_id_is_valid("kegbot_1f9a33c0"));
        check(node_id_is_valid("a-B_9"));
        check(!node_id_is_valid(""));
        check(!node_id_is_valid("bad id"));
        check(!node_id_is_valid("kegbot/x"));
        memset(buf, 'x', sizeof buf);
        check(!node_id_is_valid("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
        check(node_id_is_valid("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));

        check(topic_root_is_valid("kegbot/kegbot_1f9a33c0"));
        check(topic_root_is_valid("homeassistant"));
        check(topic_root_is_valid("b\xc3\xa4r/taps"));
        check(!topic_root_is_valid(""));
        check(!topic_root_is_valid("/kegbot"));
        check(!topic_root_is_valid("kegbot/"));
        check(!topic_root_is_valid("kegbot/+"));
        check(!topic_root_is_valid("kegbot/#"));
        check(!topic_root_is_valid("kegbot/\xff"));

        node_id_from_app_id((const uint8_t[16]) { 0x1f, 0x9a, 0x33, 0xc0, 0xde, 0xad }, buf);
        check_streq(buf, "kegbot_1f9a33c0");

        t = topic_status(&settings);
        check_streq(t, "kegbot/kegbot_1f9a33c0/status");
        free(t);
        t = topic_event(&settings, "kegboard.flow0");
        check_streq(t, "kegbot/kegbot_1f9a33c0/tap/kegboard_2eflow0/event");
        free(t);
        t = topic_commands(&settings);
        check_streq(t, "kegbot/kegbot_1f9a33c0/tap/+/cmd");
        free(t);

        k = topic_command_key(&settings, "kegbot/kegbot_1f9a33c0/tap/kegboard_2eflow0/cmd", &n);
        check(k && n == 16 && strncmp(k, "kegboard_2eflow0", n) == 0);
        check(!topic_command_key(&settings, "kegbot/kegbot_1f9a33c0/tap//cmd", &n));
        check(!topic_command_key(&settings, "kegbot/kegbot_1f9a33c0/tap/x/event", &n));
        check(!topic_command_key(&settings, "kegbot/kegbot_1f9a33c0x/tap/x/cmd", &n));
        check(!topic_command_key(&settings, "kegbot/other/tap/x/cmd", &n));
        check(!topic_command_key(&settings, "kegbot/kegbot_1f9a33c0/tap/x/y/cmd", &n));
}

/* The model of section 6.2's examples. */
static Model *example_model(void) {
        Model *m = NULL;
        Group *tap, *board, *sensor;

        check(model_new(&m) == 0);
        m->core.seen = m->core.online = true;
        m->core.version = strdup("0.2.0");
        m->core.mode = strdup("server");
        m->core.backend_state = strdup("online");
        m->core.spool_state = strdup("ok");
        m->core.last_sync = T0;

        check(model_add(m, GROUP_TAP, "kegboard.flow0", &tap) == 0);
        tap->live = tap->present = true;
        tap->tap_name = strdup("Main Tap");
        tap->ml_per_tick = 1.0 / 2.2;
        free(tap->relay);
        tap->relay = strdup("kegboard.relay0");
        tap->flow_state = strdup("completed");
        tap->last_pour.set = true;
        tap->last_pour.volume_ml = 354.5;
        tap->last_pour.time = T0 + 9 * USEC_PER_SEC;
        tap->last_pour.user = strdup("mikey");
        tap->served_total_ml = 123456.7;
        tap->keg.known = tap->keg.has_keg = true;
        tap->keg.beverage = strdup("Pale Ale");
        tap->keg.has_keg_id = true;
        tap->keg.keg_id = 3;
        tap->keg.size_ml = 58673.9;
        tap->keg.remaining_ml = 40012.3;
        tap->keg.percent = 68.19;

        check(model_add(m, GROUP_BOARD, "kegboard-1a2b3c4d", &board) == 0);
        board->live = board->present = true;
        board->connected = true;
        board->serial = strdup("KB-0000-0000-1A2B3C4D");
        board->firmware = 18;
        board->device = strdup("/dev/ttyACM0");
        board->board_last_seen = T0;
        board->backend = strdup("event");
        board->event_state = strdup("online");
        m->core.has_backend = m->core.has_event_state = true;

        check(model_add(m, GROUP_SENSOR, "kegboard.thermo-6b0316621d4cff28", &sensor) == 0);
        sensor->live = sensor->present = true;
        sensor->has_temp = true;
        sensor->temp_c = 4.2500001;
        sensor->sensor_time = T0 + 5 * USEC_PER_SEC;
        return m;
}

static void check_doc(const Model *m, const char *name, GroupKind kind, const char *expect) {
        char *text = NULL;

        check(doc_group(m, model_find(m, kind, name), 0, T0, &text, NULL) == 0);
        check_streq(text, expect);
        free(text);
}

static void test_documents(void) {
        Model *m = example_model();
        char *text = NULL;
        Group *tap;

        check(doc_core(m, &settings, &text, NULL) == 0);
        check_streq(text, "{\"mode\":\"server\",\"server\":\"online\",\"spool_state\":\"ok\",\"spool\":0,\"failed\":0,"
                          "\"last_sync\":\"2026-11-26T12:00:00Z\",\"version\":\"0.2.0\",\"bridge_version\":\"0.2.0\","
                          "\"mqtt_events_dropped\":0}");
        free(text);
        check_doc(m, "kegboard.flow0", GROUP_TAP,
                  "{\"name\":\"Main Tap\",\"meter\":\"kegboard.flow0\",\"ml_per_tick\":0.45454545454545453,"
                  "\"relay\":\"kegboard.relay0\",\"valve\":\"closed\",\"pouring\":false,\"pour_ml\":0.0,"
                  "\"flow_rate_l_min\":0.0,\"user\":null,\"last_pour_ml\":354.5,"
                  "\"last_pour_time\":\"2026-11-26T12:00:09Z\",\"last_pour_user\":\"mikey\","
                  "\"served_total_ml\":123456.7,\"ghost_ml_24h\":null,\"quarantined\":null,\"beverage\":\"Pale Ale\","
                  "\"keg_id\":3,\"keg_size_ml\":58673.9,\"keg_remaining_ml\":40012.3,\"keg_percent\":68.2}");
        check_doc(m, "kegboard-1a2b3c4d", GROUP_BOARD,
                  "{\"name\":\"kegboard-1a2b3c4d\",\"connected\":true,\"serial\":\"KB-0000-0000-1A2B3C4D\","
                  "\"firmware\":18,\"device\":\"/dev/ttyACM0\",\"last_seen\":\"2026-11-26T12:00:00Z\","
                  "\"backend\":\"event\",\"event_state\":\"online\"}");
        check_doc(m, "kegboard.thermo-6b0316621d4cff28", GROUP_SENSOR,
                  "{\"name\":\"kegboard.thermo-6b0316621d4cff28\",\"temp_c\":4.25,\"time\":\"2026-11-26T12:00:05Z\","
                  "\"silent\":false}");

        /* Pouring: pour volume, user, and nulls where the core lacks a member or knows nothing. */
        tap = model_find(m, GROUP_TAP, "kegboard.flow0");
        free(tap->flow_state);
        tap->flow_state = strdup("active");
        tap->flow_volume_ml = 123.456;
        tap->flow_user = strdup("alice");
        tap->relay_enabled = true;
        m->core.has_ghost_flow = m->core.has_quarantined = true;
        tap->has_quarantined = true;
        tap->quarantined = true;
        check(tap_ghost_add(tap, T0 / USEC_PER_SEC - 100, 17.3, T0 / USEC_PER_SEC) == 1);
        tap->keg.has_keg = false;
        check_doc(m, "kegboard.flow0", GROUP_TAP,
                  "{\"name\":\"Main Tap\",\"meter\":\"kegboard.flow0\",\"ml_per_tick\":0.45454545454545453,"
                  "\"relay\":\"kegboard.relay0\",\"valve\":\"open\",\"pouring\":true,\"pour_ml\":123.5,"
                  "\"flow_rate_l_min\":0.0,\"user\":\"alice\",\"last_pour_ml\":354.5,"
                  "\"last_pour_time\":\"2026-11-26T12:00:09Z\",\"last_pour_user\":\"mikey\","
                  "\"served_total_ml\":123456.7,\"ghost_ml_24h\":17.3,\"quarantined\":true,\"beverage\":null,"
                  "\"keg_id\":null,\"keg_size_ml\":null,\"keg_remaining_ml\":null,\"keg_percent\":null}");
        tap->flow_volume_ml = -1;
        check(doc_group(m, tap, 0, T0, &text, NULL) == 0);
        check(strstr(text, "\"pour_ml\":null,"));
        free(text);

        /* A board on the legacy backend shows no event state; unknown serial, firmware and device. */
        Group *board = model_find(m, GROUP_BOARD, "kegboard-1a2b3c4d");
        free(board->backend);
        board->backend = strdup("legacy");
        board->firmware = 0;
        free(board->serial);
        board->serial = strdup("");
        check(doc_group(m, board, 0, T0, &text, NULL) == 0);
        check(strstr(text, "\"serial\":null,\"firmware\":null,") && strstr(text, "\"event_state\":null}"));
        free(text);

        /* Text that is not UTF-8 never becomes a document. */
        free(tap->flow_user);
        tap->flow_user = strdup("\xff");
        tap->flow_volume_ml = 1;
        check(doc_group(m, tap, 0, T0, &text, NULL) == -EINVAL);
        model_free(m);
}

static void test_events(void) {
        DrinkInfo d = {
                .uuid = "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10", .drink_id = 42, .flow_id = 7,
                .meter = "kegboard.flow0", .username = "mikey", .ticks = 780, .volume_ml = 354.5,
                .start_time = T0 + USEC_PER_SEC, .pour_time = T0 + 9 * USEC_PER_SEC, .duration = 8,
        };
        GhostInfo g = {
                .meter = "kegboard.flow0", .rule = "G5", .ticks = 38, .volume_ml = 17.3,
                .start_time = T0 - 8 * 3600 * USEC_PER_SEC + 760 * USEC_PER_SEC - 310 * USEC_PER_SEC,
                .end_time = T0 - 8 * 3600 * USEC_PER_SEC + 760 * USEC_PER_SEC, .tick_series = "", .mode = "on",
        };
        FlagInfo f = { .flow_id = 1795694350, .meter = "kegboard.flow0", .flag = "kicked", .mode = "on" };
        char *text = NULL;

        check(event_pour(&d, 354.5, &text, NULL) == 0);
        check_streq(text, "{\"event_type\":\"pour\",\"uuid\":\"3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10\","
                          "\"meter\":\"kegboard.flow0\",\"volume_ml\":354.5,\"ticks\":780,\"duration_s\":8,"
                          "\"user\":\"mikey\",\"drink_id\":42,\"time\":\"2026-11-26T12:00:09Z\"}");
        free(text);
        d.username = "";
        d.drink_id = -1;
        check(event_pour(&d, -1, &text, NULL) == 0);
        check(strstr(text, "\"volume_ml\":null,") && strstr(text, "\"user\":null,\"drink_id\":null,"));
        free(text);

        check(event_ghost_flow(&g, &text, NULL) == 0);
        check_streq(text, "{\"event_type\":\"ghost_flow\",\"meter\":\"kegboard.flow0\",\"rule\":\"G5\",\"mode\":\"on\","
                          "\"ticks\":38,\"volume_ml\":17.3,\"duration_s\":310,\"time\":\"2026-11-26T04:12:40Z\"}");
        free(text);
        g.volume_ml = -1;
        check(event_ghost_flow(&g, &text, NULL) == 0);
        check(strstr(text, "\"volume_ml\":null,"));
        free(text);

        check(event_kicked(&f, T0 + 9 * USEC_PER_SEC, &text, NULL) == 0);
        check_streq(text, "{\"event_type\":\"kicked\",\"meter\":\"kegboard.flow0\",\"flow_id\":1795694350,"
                          "\"mode\":\"on\",\"time\":\"2026-11-26T12:00:09Z\"}");
        free(text);
}

static const Config *find_config(const ConfigList *l, const char *topic) {
        for (size_t i = 0; i < l->n; i++)
                if (streq(l->items[i].topic, topic))
                        return &l->items[i];
        return NULL;
}

/* Section 7.5: node id kegbot_1f9a33c0, tap kegboard.flow0 "Main Tap", board kegboard. */
static Model *discovery_model(void) {
        Model *m = NULL;
        Group *g;

        check(model_new(&m) == 0);
        m->core.seen = m->core.online = true;
        m->core.version = strdup("0.2.0");
        m->core.mode = strdup("standalone");
        m->core.has_ghost_flow = m->core.has_pour_flagged = true;
        check(model_add(m, GROUP_TAP, "kegboard.flow0", &g) == 0);
        g->live = g->present = true;
        g->tap_name = strdup("Main Tap");
        free(g->relay);
        g->relay = strdup("kegboard.relay0");
        check(model_add(m, GROUP_BOARD, "kegboard", &g) == 0);
        g->live = g->present = true;
        g->firmware = 18;
        check(model_add(m, GROUP_SENSOR, "kegboard.thermo-6b0316621d4cff28", &g) == 0);
        g->live = g->present = true;
        return m;
}

static void test_discovery_component(void) {
        Model *m = discovery_model();
        ConfigList l = {};
        const Config *c;

        check(discovery_build(m, &settings, &l) == 0);
        /* node: mqtt_dropped; board: connected; tap: 8 (valve, ghost); temperature: 1 */
        check_int(l.n, 1 + 1 + 8 + 1);

        c = find_config(&l, "homeassistant/sensor/kegbot_1f9a33c0_tap_kegboard_2eflow0_served/config");
        check(c && streq(c->group, "tap:kegboard.flow0"));
        check_streq(c ? c->text : NULL,
                    "{\"name\":\"Served\",\"unique_id\":\"kegbot_1f9a33c0_tap_kegboard_2eflow0_served\","
                    "\"state_topic\":\"kegbot/kegbot_1f9a33c0/tap/kegboard_2eflow0\","
                    "\"value_template\":\"{{ value_json.served_total_ml }}\",\"device_class\":\"volume\","
                    "\"state_class\":\"total_increasing\",\"unit_of_measurement\":\"mL\","
                    "\"availability_topic\":\"kegbot/kegbot_1f9a33c0/status\",\"qos\":1,"
                    "\"device\":{\"identifiers\":[\"kegbot_1f9a33c0_tap_kegboard_2eflow0\"],\"name\":\"Main Tap\","
                    "\"manufacturer\":\"Kegbot\",\"model\":\"Tap\",\"via_device\":\"kegbot_1f9a33c0\"},"
                    "\"origin\":{\"name\":\"kegbot_mqtt\",\"sw_version\":\"0.2.0\"}}");
        c = find_config(&l, "homeassistant/binary_sensor/kegbot_1f9a33c0_tap_kegboard_2eflow0_valve/config");
        check_streq(c ? c->text : NULL,
                    "{\"name\":\"Valve\",\"unique_id\":\"kegbot_1f9a33c0_tap_kegboard_2eflow0_valve\","
                    "\"state_topic\":\"kegbot/kegbot_1f9a33c0/tap/kegboard_2eflow0\","
                    "\"value_template\":\"{{ 'ON' if value_json.valve == 'open' else 'OFF' }}\","
                    "\"device_class\":\"opening\",\"availability_topic\":\"kegbot/kegbot_1f9a33c0/status\",\"qos\":1,"
                    "\"device\":{\"identifiers\":[\"kegbot_1f9a33c0_tap_kegboard_2eflow0\"],\"name\":\"Main Tap\","
                    "\"manufacturer\":\"Kegbot\",\"model\":\"Tap\",\"via_device\":\"kegbot_1f9a33c0\"},"
                    "\"origin\":{\"name\":\"kegbot_mqtt\",\"sw_version\":\"0.2.0\"}}");
        c = find_config(&l, "homeassistant/event/kegbot_1f9a33c0_tap_kegboard_2eflow0_events/config");
        check_streq(c ? c->text : NULL,
                    "{\"name\":\"Pour\",\"unique_id\":\"kegbot_1f9a33c0_tap_kegboard_2eflow0_events\","
                    "\"state_topic\":\"kegbot/kegbot_1f9a33c0/tap/kegboard_2eflow0/event\","
                    "\"event_types\":[\"pour\",\"ghost_flow\",\"kicked\"],"
                    "\"availability_topic\":\"kegbot/kegbot_1f9a33c0/status\",\"qos\":1,"
                    "\"device\":{\"identifiers\":[\"kegbot_1f9a33c0_tap_kegboard_2eflow0\"],\"name\":\"Main Tap\","
                    "\"manufacturer\":\"Kegbot\",\"model\":\"Tap\",\"via_device\":\"kegbot_1f9a33c0\"},"
                    "\"origin\":{\"name\":\"kegbot_mqtt\",\"sw_version\":\"0.2.0\"}}");
        c = find_config(&l, "homeassistant/sensor/kegbot_1f9a33c0_sensor_kegboard_2ethermo-6b0316621d4cff28/config");
        check(c && streq(c->group, "sensor:kegboard.thermo-6b0316621d4cff28"));
        check_streq(c ? c->text : NULL,
                    "{\"name\":\"Temperature thermo-6b0316621d4cff28\","
                    "\"unique_id\":\"kegbot_1f9a33c0_sensor_kegboard_2ethermo-6b0316621d4cff28\","
                    "\"state_topic\":\"kegbot/kegbot_1f9a33c0/sensor/kegboard_2ethermo-6b0316621d4cff28\","
                    "\"value_template\":\"{{ value_json.temp_c }}\",\"device_class\":\"temperature\","
                    "\"state_class\":\"measurement\",\"unit_of_measurement\":\"\xc2\xb0""C\",\"expire_after\":300,"
                    "\"availability_topic\":\"kegbot/kegbot_1f9a33c0/status\",\"qos\":1,"
                    "\"device\":{\"identifiers\":[\"kegbot_1f9a33c0_board_kegboard\"],\"name\":\"kegboard\","
                    "\"manufacturer\":\"Kegbot\",\"model\":\"Kegboard\",\"sw_version\":\"firmware 18\","
                    "\"via_device\":\"kegbot_1f9a33c0\"},\"origin\":{\"name\":\"kegbot_mqtt\",\"sw_version\":\"0.2.0\"}}");
        c = find_config(&l, "homeassistant/sensor/kegbot_1f9a33c0_mqtt_dropped/config");
        check(c && streq(c->group, "node") && strstr(c->text, "\"device\":{\"identifiers\":[\"kegbot_1f9a33c0\"],"
                                                           "\"name\":\"Kegbot bar\",\"manufacturer\":\"Kegbot\","
                                                           "\"model\":\"kegbot-core\",\"sw_version\":\"0.2.0\"}"));
        check(!find_config(&l, "homeassistant/binary_sensor/kegbot_1f9a33c0_server/config"));
        config_list_done(&l);

        /* Server mode, keg data, commands: the extra entities appear. */
        free(m->core.mode);
        m->core.mode = strdup("server");
        m->core.has_quarantined = m->core.has_clear_quarantine = true;
        model_find(m, GROUP_TAP, "kegboard.flow0")->keg.known = true;
        Settings s = settings;
        s.keg = s.commands = true;
        check(discovery_build(m, &s, &l) == 0);
        check_int(l.n, 4 + 1 + (8 + 1 + 3 + 2) + 1);
        c = find_config(&l, "homeassistant/button/kegbot_1f9a33c0_tap_kegboard_2eflow0_stop/config");
        check(c && strstr(c->text, "\"command_topic\":\"kegbot/kegbot_1f9a33c0/tap/kegboard_2eflow0/cmd\","
                                   "\"payload_press\":\"stop_flow\",\"retain\":false,"));
        c = find_config(&l, "homeassistant/sensor/kegbot_1f9a33c0_tap_kegboard_2eflow0_keg_level/config");
        check(c && strstr(c->text, "\"unit_of_measurement\":\"%\",") && !strstr(c->text, "device_class"));
        config_list_done(&l);

        s.discovery = DISCOVERY_OFF;
        check(discovery_build(m, &s, &l) == 0);
        check_int(l.n, 0);
        config_list_done(&l);
        model_free(m);
}

static void test_discovery_device(void) {
        Model *m = discovery_model();
        Settings s = settings;
        ConfigList l = {};
        const Config *c;
        Group *tap = model_find(m, GROUP_TAP, "kegboard.flow0");

        s.discovery = DISCOVERY_DEVICE;
        check(discovery_build(m, &s, &l) == 0);
        check_int(l.n, 3);
        c = find_config(&l, "homeassistant/device/kegbot_1f9a33c0_tap_kegboard_2eflow0/config");
        check(c && streq(c->group, "tap:kegboard.flow0") && !c->text_once);
        check(c && strstr(c->text, "{\"dev\":{\"identifiers\":[\"kegbot_1f9a33c0_tap_kegboard_2eflow0\"],"
                                   "\"name\":\"Main Tap\",\"manufacturer\":\"Kegbot\",\"model\":\"Tap\","
                                   "\"via_device\":\"kegbot_1f9a33c0\"},\"o\":{\"name\":\"kegbot_mqtt\","
                                   "\"sw_version\":\"0.2.0\"},\"availability_topic\":\"kegbot/kegbot_1f9a33c0/status\","
                                   "\"qos\":1,\"cmps\":{\"served\":{\"p\":\"sensor\",\"name\":\"Served\","
                                   "\"unique_id\":\"kegbot_1f9a33c0_tap_kegboard_2eflow0_served\","
                                   "\"state_topic\":\"kegbot/kegbot_1f9a33c0/tap/kegboard_2eflow0\","
                                   "\"value_template\":\"{{ value_json.served_total_ml }}\",\"device_class\":\"volume\","
                                   "\"state_class\":\"total_increasing\",\"unit_of_measurement\":\"mL\"},"));
        check(c && strstr(c->text, "\"valve\":{\"p\":\"binary_sensor\",\"name\":\"Valve\","));
        check(c && strv_contains(c->components, "valve=binary_sensor") && strv_length(c->components) == 8);
        c = find_config(&l, "homeassistant/device/kegbot_1f9a33c0_board_kegboard/config");
        check(c && strstr(c->text, "\"temp_kegboard_2ethermo-6b0316621d4cff28\":{\"p\":\"sensor\","
                                   "\"name\":\"Temperature thermo-6b0316621d4cff28\","
                                   "\"unique_id\":\"kegbot_1f9a33c0_sensor_kegboard_2ethermo-6b0316621d4cff28\","));
        c = find_config(&l, "homeassistant/device/kegbot_1f9a33c0/config");
        check(c && streq(c->group, "node"));

        /* The valve was published; the relay goes: its entry once with only the platform. */
        strv_free(tap->components);
        tap->components = NULL;
        c = find_config(&l, "homeassistant/device/kegbot_1f9a33c0_tap_kegboard_2eflow0/config");
        STRV_FOREACH(p, c ? c->components : NULL)
                check(strv_extend(&tap->components, NULL, *p) == 0);
        config_list_done(&l);
        free(tap->relay);
        tap->relay = strdup("");
        check(discovery_build(m, &s, &l) == 0);
        c = find_config(&l, "homeassistant/device/kegbot_1f9a33c0_tap_kegboard_2eflow0/config");
        check(c && !strstr(c->text, "valve") && c->text_once &&
              strstr(c->text_once, ",\"valve\":{\"p\":\"binary_sensor\"}}}"));
        check(c && strv_length(c->components) == 7);
        config_list_done(&l);
        model_free(m);
}

static void test_topic_forms(void) {
        Settings s = settings;

        check(discovery_topic_is_current(&s, "homeassistant/sensor/kegbot_1f9a33c0_tap_x_served/config"));
        check(discovery_topic_is_current(&s, "homeassistant/button/kegbot_1f9a33c0_tap_x_stop/config"));
        check(!discovery_topic_is_current(&s, "homeassistant/device/kegbot_1f9a33c0/config"));
        check(!discovery_topic_is_current(&s, "homeassistant/sensor/kegbot_1f9a33c0x_served/config"));
        check(!discovery_topic_is_current(&s, "ha/sensor/kegbot_1f9a33c0_served/config"));
        check(!discovery_topic_is_current(&s, "homeassistant/light/kegbot_1f9a33c0_served/config"));
        check(!discovery_topic_is_current(&s, "homeassistant/sensor/kegbot_1f9a33c0_served/state"));
        check(!discovery_topic_is_current(&s, "kegbot/kegbot_1f9a33c0/status"));
        s.discovery = DISCOVERY_DEVICE;
        check(discovery_topic_is_current(&s, "homeassistant/device/kegbot_1f9a33c0/config"));
        check(discovery_topic_is_current(&s, "homeassistant/device/kegbot_1f9a33c0_tap_x/config"));
        check(!discovery_topic_is_current(&s, "homeassistant/sensor/kegbot_1f9a33c0_tap_x_served/config"));
        s.discovery = DISCOVERY_OFF;
        check(!discovery_topic_is_current(&s, "homeassistant/device/kegbot_1f9a33c0/config"));

        DiscoveryMode mode;
        check(discovery_mode_from_string("device", &mode) == 0 && mode == DISCOVERY_DEVICE);
        check(discovery_mode_from_string("all", &mode) == -EINVAL);
        check_streq(discovery_mode_to_string(DISCOVERY_OFF), "off");
}

int main(void) {
        test_run(test_keys_and_topics);
        test_run(test_documents);
        test_run(test_events);
        test_run(test_discovery_component);
        test_run(test_discovery_device);
        test_run(test_topic_forms);
        return test_result();
}
