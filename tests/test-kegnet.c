/* Unit tests for the kegnet codec: the spec's example frames byte for byte, round trips of every
 * message, value-type rules, every decoder error, addresses and the frame splitter. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kegnet.h"
#include "macro.h"
#include "test-util.h"

/* Section 8 of kegnet-protocol.md, without the terminators. */
static const char *const examples[] = {
        "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"kegboard-1a2b3c4d\",\"serial_number\":\"KB-0000-0000-1A2B3C4D\",\"firmware_version\":18,\"uptime_ms\":0,\"board_reset\":true}}",
        "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"kegboard-1a2b3c4d.flow0\",\"reading\":48213}}",
        "{\"event\":\"ThermoEvent\",\"data\":{\"sensor_name\":\"kegboard-1a2b3c4d.thermo-6b0316621d4cff28\",\"sensor_value\":4.5}}",
        "{\"event\":\"TokenAuthEvent\",\"data\":{\"meter_name\":\"__all_taps__\",\"auth_device_name\":\"core.rfid\",\"token_value\":\"0415ab23cd\",\"status\":\"added\"}}",
        "{\"event\":\"FlowRequest\",\"data\":{\"meter_name\":\"kegboard.flow0\",\"request\":\"start_flow\"}}",
        "{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":1795694350,\"meter_name\":\"kegboard.flow0\",\"state\":\"active\",\"username\":\"mikey\",\"start_time\":\"2026-11-26T12:00:00Z\",\"last_activity_time\":\"2026-11-26T12:00:04Z\",\"ticks\":220,\"volume_ml\":100.0}}",
        "{\"event\":\"SetRelayOutputEvent\",\"data\":{\"output_name\":\"kegboard.relay0\",\"output_mode\":\"enabled\"}}",
        "{\"event\":\"DrinkCreatedEvent\",\"data\":{\"flow_id\":1795694350,\"drink_id\":2694,\"meter_name\":\"kegboard.flow0\",\"start_time\":\"2026-11-26T12:00:01Z\",\"end_time\":\"2026-11-26T12:00:09Z\",\"username\":\"mikey\",\"ticks\":1100,\"volume_ml\":500.0,\"uuid\":\"3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10\"}}",
};

/* The spec's ControllerConnectedEvent example leaves out "device"; section 3 makes senders write
 * every field, unset ones as null, so our encoder adds it (see the report). */
static const char *const examples_reencoded_cce =
        "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"kegboard-1a2b3c4d\",\"serial_number\":\"KB-0000-0000-1A2B3C4D\",\"firmware_version\":18,\"uptime_ms\":0,\"board_reset\":true,\"device\":null}}";

static const KegnetKind example_kinds[] = {
        KEGNET_CONTROLLER_CONNECTED_EVENT, KEGNET_METER_UPDATE, KEGNET_THERMO_EVENT,
        KEGNET_TOKEN_AUTH_EVENT, KEGNET_FLOW_REQUEST, KEGNET_FLOW_UPDATE,
        KEGNET_SET_RELAY_OUTPUT_EVENT, KEGNET_DRINK_CREATED_EVENT,
};

/* 2026-11-26T12:00:00Z */
#define T0 (UINT64_C(1795694400) * USEC_PER_SEC)

static int parse_str(const char *s, KegnetMessage *m) {
        return kegnet_message_parse(s, strlen(s), m, NULL);
}

static char *encode(const KegnetMessage *m) {
        char *out = NULL;
        size_t n = 0;
        int r = kegnet_message_encode(m, &out, &n);
        if (r < 0) {
                fprintf(stderr, "encode failed: %s\n", strerror(-r));
                return NULL;
        }
        if (n != strlen(out) || n < 2 || out[n - 1] != '\n' || out[n - 2] != '\n') {
                free(out);
                return NULL;
        }
        out[n - 2] = 0;    /* compare without the terminator */
        return out;
}

static void test_examples(void) {
        for (size_t i = 0; i < ELEMENTSOF(examples); i++) {
                KegnetMessage m;
                char *err = NULL;
                int r = kegnet_message_parse(examples[i], strlen(examples[i]), &m, &err);
                check(r == 0);
                check(err == NULL);
                check(m.kind == example_kinds[i]);
                check(kegnet_inbound_verdict(r, &m) ==
                      (kegnet_kind_is_inbound(example_kinds[i]) ? KEGNET_INBOUND_ACCEPT : KEGNET_INBOUND_DROP_DEBUG));
                char *again = encode(&m);
                check(again);
                if (again)
                        check_streq(again, i == 0 ? examples_reencoded_cce : examples[i]);
                free(again);
                free(err);
                kegnet_message_done(&m);
        }

        KegnetMessage m;
        check(parse_str(examples[0], &m) == 0);
        check_streq(m.event_name, "ControllerConnectedEvent");
        check_streq(m.controller_connected_event.controller_name, "kegboard-1a2b3c4d");
        check_streq(m.controller_connected_event.serial_number, "KB-0000-0000-1A2B3C4D");
        check(m.controller_connected_event.has_firmware_version);
        check(m.controller_connected_event.firmware_version == 18);
        check(m.controller_connected_event.has_uptime_ms);
        check(m.controller_connected_event.uptime_ms == 0);
        check(m.controller_connected_event.board_reset);
        check(m.controller_connected_event.device == NULL);
        kegnet_message_done(&m);
        check(m._doc == NULL && m.kind == KEGNET_UNKNOWN);

        check(parse_str(examples[1], &m) == 0);
        check_streq(m.meter_update.meter_name, "kegboard-1a2b3c4d.flow0");
        check(m.meter_update.reading == 48213);
        kegnet_message_done(&m);

        check(parse_str(examples[2], &m) == 0);
        check_streq(m.thermo_event.sensor_name, "kegboard-1a2b3c4d.thermo-6b0316621d4cff28");
        check(m.thermo_event.sensor_value == 4.5);
        kegnet_message_done(&m);

        check(parse_str(examples[3], &m) == 0);
        check_streq(m.token_auth_event.meter_name, KEGNET_ALL_TAPS);
        check_streq(m.token_auth_event.auth_device_name, "core.rfid");
        check_streq(m.token_auth_event.token_value, "0415ab23cd");
        check(m.token_auth_event.status == KEGNET_TOKEN_ADDED);
        kegnet_message_done(&m);

        check(parse_str(examples[4], &m) == 0);
        check_streq(m.flow_request.meter_name, "kegboard.flow0");
        check(m.flow_request.request == KEGNET_REQUEST_START_FLOW);
        kegnet_message_done(&m);

        check(parse_str(examples[5], &m) == 0);
        check(m.flow_update.flow_id == 1795694350);
        check_streq(m.flow_update.meter_name, "kegboard.flow0");
        check(m.flow_update.state == KEGNET_FLOW_ACTIVE);
        check_streq(m.flow_update.username, "mikey");
        check(m.flow_update.start_time == T0);
        check(m.flow_update.last_activity_time == T0 + 4 * USEC_PER_SEC);
        check(m.flow_update.ticks == 220);
        check(m.flow_update.has_volume_ml && m.flow_update.volume_ml == 100.0);
        kegnet_message_done(&m);

        check(parse_str(examples[6], &m) == 0);
        check_streq(m.set_relay_output_event.output_name, "kegboard.relay0");
        check(m.set_relay_output_event.output_mode == KEGNET_OUTPUT_ENABLED);
        kegnet_message_done(&m);

        check(parse_str(examples[7], &m) == 0);
        check(m.drink_created_event.flow_id == 1795694350);
        check(m.drink_created_event.has_drink_id && m.drink_created_event.drink_id == 2694);
        check_streq(m.drink_created_event.meter_name, "kegboard.flow0");
        check(m.drink_created_event.start_time == T0 + 1 * USEC_PER_SEC);
        check(m.drink_created_event.end_time == T0 + 9 * USEC_PER_SEC);
        check_streq(m.drink_created_event.username, "mikey");
        check(m.drink_created_event.ticks == 1100);
        check(m.drink_created_event.has_volume_ml && m.drink_created_event.volume_ml == 500.0);
        check_streq(m.drink_created_event.uuid, "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10");
        kegnet_message_done(&m);
}

static void test_legacy_and_dropped(void) {
        KegnetMessage m;
        const char *legacy = "{\"event\": \"MeterUpdate\", \"data\": {\"tap_name\": \"kegboard.flow0\", \"reading\": 100}}";
        check(parse_str(legacy, &m) == 0);
        check(m.kind == KEGNET_METER_UPDATE);
        check_streq(m.meter_update.meter_name, "kegboard.flow0");
        check(m.meter_update.reading == 100);
        char *again = encode(&m);
        check(again);
        if (again)
                check_streq(again, "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"kegboard.flow0\",\"reading\":100}}");
        free(again);
        kegnet_message_done(&m);

        /* Both names: meter_name wins; a null meter_name falls back to tap_name. */
        check(parse_str("{\"event\":\"FlowRequest\",\"data\":{\"tap_name\":\"a\",\"meter_name\":\"b\",\"request\":\"stop_flow\"}}", &m) == 0);
        check_streq(m.flow_request.meter_name, "b");
        check(m.flow_request.request == KEGNET_REQUEST_STOP_FLOW);
        kegnet_message_done(&m);
        check(parse_str("{\"event\":\"FlowRequest\",\"data\":{\"meter_name\":null,\"tap_name\":\"a\",\"request\":\"report_status\"}}", &m) == 0);
        check_streq(m.flow_request.meter_name, "a");
        check(m.flow_request.request == KEGNET_REQUEST_REPORT_STATUS);
        kegnet_message_done(&m);
        check(parse_str("{\"event\":\"TokenAuthEvent\",\"data\":{\"tap_name\":\"kegboard.flow1\",\"auth_device_name\":\"core.onewire\",\"token_value\":\"x\",\"status\":\"removed\"}}", &m) == 0);
        check_streq(m.token_auth_event.meter_name, "kegboard.flow1");
        check(m.token_auth_event.status == KEGNET_TOKEN_REMOVED);
        kegnet_message_done(&m);

        /* Multi-line pretty-printed input with any key order is fine. */
        check(parse_str("{\n  \"data\" : {\n\t\"reading\" : 7 ,\r\n \"meter_name\" : \"m\"},\n \"event\":\"MeterUpdate\" }\n", &m) == 0);
        check(m.kind == KEGNET_METER_UPDATE && m.meter_update.reading == 7);
        kegnet_message_done(&m);

        /* Dropped by the core: not whitelisted, DEBUG only, even with bad data. */
        int r = parse_str("{\"event\":\"QuitEvent\",\"data\":{}}", &m);
        check(r == 0);
        check(m.kind == KEGNET_UNKNOWN);
        check_streq(m.event_name, "QuitEvent");
        check(kegnet_inbound_verdict(r, &m) == KEGNET_INBOUND_DROP_DEBUG);
        kegnet_message_done(&m);

        r = parse_str("{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":1,\"meter_name\":\"kegboard.flow0\",\"state\":\"completed\",\"username\":null,\"start_time\":null,\"last_activity_time\":null,\"ticks\":5000,\"volume_ml\":null}}", &m);
        check(r == -EINVAL);
        check(m.kind == KEGNET_FLOW_UPDATE);
        check_streq(m.event_name, "FlowUpdate");
        check(kegnet_inbound_verdict(r, &m) == KEGNET_INBOUND_DROP_DEBUG);
        kegnet_message_done(&m);

        const char *others[] = { "SyncEvent", "Ping", "StartedEvent", "HeartbeatSecondEvent",
                                 "HeartbeatMinuteEvent", "meterupdate", "" };
        for (size_t i = 0; i < ELEMENTSOF(others); i++) {
                char buf[128];
                snprintf(buf, sizeof buf, "{\"event\":\"%s\"}", others[i]);
                r = parse_str(buf, &m);
                check(r == 0);
                check(m.kind == KEGNET_UNKNOWN);
                check_streq(m.event_name, others[i]);
                check(kegnet_inbound_verdict(r, &m) == KEGNET_INBOUND_DROP_DEBUG);
                kegnet_message_done(&m);
        }
        /* Core -> client events echoed back are dropped too. */
        for (size_t i = 5; i < ELEMENTSOF(examples); i++) {
                r = parse_str(examples[i], &m);
                check(r == 0);
                check(kegnet_inbound_verdict(r, &m) == KEGNET_INBOUND_DROP_DEBUG);
                kegnet_message_done(&m);
        }
}

static void roundtrip(const KegnetMessage *in, const char *expect) {
        char *s = encode(in);
        check(s);
        if (!s)
                return;
        if (expect)
                check_streq(s, expect);

        KegnetMessage m;
        char *err = NULL;
        int r = kegnet_message_parse(s, strlen(s), &m, &err);
        if (r < 0)
                fprintf(stderr, "round trip parse failed: %s: %s\n", err, s);
        check(r == 0);
        check(m.kind == in->kind);
        char *s2 = encode(&m);
        check(s2);
        if (s2)
                check_streq(s2, s);
        free(s);
        free(s2);
        free(err);
        kegnet_message_done(&m);
}

static int encode_err(const KegnetMessage *m) {
        char *out = (char *) 0x1;
        int r = kegnet_message_encode(m, &out, NULL);
        if (r == 0)
                free(out);
        else if (out != (char *) 0x1)
                r = -EFAULT;    /* *ret touched on failure */
        return r;
}

static void test_roundtrip(void) {
        roundtrip(&(KegnetMessage) { .kind = KEGNET_METER_UPDATE,
                                     .meter_update = { .meter_name = "b.flow1", .reading = UINT32_MAX } },
                  "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"b.flow1\",\"reading\":4294967295}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_METER_UPDATE,
                                     .meter_update = { .meter_name = "", .reading = 0 } },
                  "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"\",\"reading\":0}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_THERMO_EVENT,
                                     .thermo_event = { .sensor_name = "s", .sensor_value = -12.0625 } },
                  "{\"event\":\"ThermoEvent\",\"data\":{\"sensor_name\":\"s\",\"sensor_value\":-12.0625}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_TOKEN_AUTH_EVENT,
                                     .token_auth_event = { .meter_name = NULL, .auth_device_name = "core.onewire",
                                                           .token_value = "0000111122223333", .status = KEGNET_TOKEN_REMOVED } },
                  "{\"event\":\"TokenAuthEvent\",\"data\":{\"meter_name\":null,\"auth_device_name\":\"core.onewire\",\"token_value\":\"0000111122223333\",\"status\":\"removed\"}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_FLOW_REQUEST,
                                     .flow_request = { .meter_name = "kegboard.flow1", .request = KEGNET_REQUEST_REPORT_STATUS } },
                  "{\"event\":\"FlowRequest\",\"data\":{\"meter_name\":\"kegboard.flow1\",\"request\":\"report_status\"}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_CONTROLLER_CONNECTED_EVENT,
                                     .controller_connected_event = { .controller_name = "kegboard" } },
                  "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"kegboard\",\"serial_number\":null,\"firmware_version\":null,\"uptime_ms\":null,\"board_reset\":false,\"device\":null}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_CONTROLLER_CONNECTED_EVENT,
                                     .controller_connected_event = {
                                             .controller_name = "kegboard-1a2b3c4d", .serial_number = "",
                                             .has_firmware_version = true, .firmware_version = INT32_MAX,
                                             .has_uptime_ms = true, .uptime_ms = UINT64_C(5) * 86400000 + 1234,
                                             .board_reset = false, .device = "/dev/ttyACM0" } },
                  "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"kegboard-1a2b3c4d\",\"serial_number\":\"\",\"firmware_version\":2147483647,\"uptime_ms\":432001234,\"board_reset\":false,\"device\":\"/dev/ttyACM0\"}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_FLOW_UPDATE,
                                     .flow_update = { .flow_id = 1, .meter_name = "kegboard.flow0", .state = KEGNET_FLOW_IDLE,
                                                      .start_time = T0, .last_activity_time = T0 + 999999, .ticks = 0 } },
                  "{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":1,\"meter_name\":\"kegboard.flow0\",\"state\":\"idle\",\"username\":null,\"start_time\":\"2026-11-26T12:00:00Z\",\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":0,\"volume_ml\":null}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_FLOW_UPDATE,
                                     .flow_update = { .flow_id = INT64_MAX, .meter_name = "m", .state = KEGNET_FLOW_COMPLETED,
                                                      .username = "ann", .start_time = 0, .last_activity_time = 0,
                                                      .ticks = INT64_MAX, .has_volume_ml = true, .volume_ml = 5.0 / 11.0 } },
                  "{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":9223372036854775807,\"meter_name\":\"m\",\"state\":\"completed\",\"username\":\"ann\",\"start_time\":\"1970-01-01T00:00:00Z\",\"last_activity_time\":\"1970-01-01T00:00:00Z\",\"ticks\":9223372036854775807,\"volume_ml\":0.45454545454545453}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_DRINK_CREATED_EVENT,
                                     .drink_created_event = { .flow_id = 7, .meter_name = "kegboard.flow0",
                                                              .start_time = T0, .end_time = T0 + 8 * USEC_PER_SEC,
                                                              .ticks = 1440, .uuid = "00000000-0000-0000-0000-000000000000" } },
                  "{\"event\":\"DrinkCreatedEvent\",\"data\":{\"flow_id\":7,\"drink_id\":null,\"meter_name\":\"kegboard.flow0\",\"start_time\":\"2026-11-26T12:00:00Z\",\"end_time\":\"2026-11-26T12:00:08Z\",\"username\":null,\"ticks\":1440,\"volume_ml\":null,\"uuid\":\"00000000-0000-0000-0000-000000000000\"}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_DRINK_CREATED_EVENT,
                                     .drink_created_event = { .flow_id = 7, .has_drink_id = true, .drink_id = 0, .meter_name = "x",
                                                              .start_time = T0, .end_time = T0, .username = "u", .ticks = 1440,
                                                              .has_volume_ml = true, .volume_ml = 1440 / 2.2, .uuid = "u" } },
                  "{\"event\":\"DrinkCreatedEvent\",\"data\":{\"flow_id\":7,\"drink_id\":0,\"meter_name\":\"x\",\"start_time\":\"2026-11-26T12:00:00Z\",\"end_time\":\"2026-11-26T12:00:00Z\",\"username\":\"u\",\"ticks\":1440,\"volume_ml\":654.5454545454545,\"uuid\":\"u\"}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_SET_RELAY_OUTPUT_EVENT,
                                     .set_relay_output_event = { .output_name = "kegboard.relay1", .output_mode = KEGNET_OUTPUT_DISABLED } },
                  "{\"event\":\"SetRelayOutputEvent\",\"data\":{\"output_name\":\"kegboard.relay1\",\"output_mode\":\"disabled\"}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_HELLO,
                                     .hello = { .role = KEGNET_ROLE_PRODUCER, .name = "kegboard_daemon",
                                                .session = "0123456789abcdef0123456789abcdef", .has_seq = true, .seq = 42,
                                                .has_events = true, .events = KEGNET_EVENT_BIT(KEGNET_SET_RELAY_OUTPUT_EVENT) } },
                  "{\"event\":\"Hello\",\"data\":{\"role\":\"producer\",\"name\":\"kegboard_daemon\",\"session\":\"0123456789abcdef0123456789abcdef\",\"seq\":42,\"events\":[\"SetRelayOutputEvent\"]}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_HELLO,
                                     .hello = { .role = KEGNET_ROLE_PRODUCER, .name = "rfid_daemon", .has_events = true } },
                  "{\"event\":\"Hello\",\"data\":{\"role\":\"producer\",\"name\":\"rfid_daemon\",\"session\":null,\"seq\":null,\"events\":[]}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_HELLO,
                                     .hello = { .role = KEGNET_ROLE_LISTENER, .has_events = true, .events = KEGNET_EVENTS_BROADCAST } },
                  "{\"event\":\"Hello\",\"data\":{\"role\":\"listener\",\"name\":null,\"session\":null,\"seq\":null,\"events\":[\"FlowUpdate\",\"DrinkCreatedEvent\",\"SetRelayOutputEvent\"]}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_HELLO, .hello = { .role = KEGNET_ROLE_LISTENER } },
                  "{\"event\":\"Hello\",\"data\":{\"role\":\"listener\",\"name\":null,\"session\":null,\"seq\":null,\"events\":null}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_WELCOME,
                                     .welcome = { .role = KEGNET_ROLE_PRODUCER, .has_acked = true, .acked = 41 } },
                  "{\"event\":\"Welcome\",\"data\":{\"role\":\"producer\",\"acked\":41,\"reason\":null}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_WELCOME,
                                     .welcome = { .role = KEGNET_ROLE_LISTENER, .reason = "uid 1000 may not produce" } },
                  "{\"event\":\"Welcome\",\"data\":{\"role\":\"listener\",\"acked\":null,\"reason\":\"uid 1000 may not produce\"}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_ACK, .ack = { .acked = KEGNET_SEQ_MAX } },
                  "{\"event\":\"Ack\",\"data\":{\"acked\":9223372036854775807}}");
        roundtrip(&(KegnetMessage) { .kind = KEGNET_REFUSED, .refused = { .reason = "too many clients" } },
                  "{\"event\":\"Refused\",\"data\":{\"reason\":\"too many clients\"}}");
        /* A later protocol's role (and keys) parse: the core treats it as a listener. */
        {
                KegnetMessage h;
                check(parse_str("{\"event\":\"Hello\",\"data\":{\"role\":\"display\",\"subscribe\":[\"FlowUpdate\"]}}", &h) == 0);
                check(h.kind == KEGNET_HELLO && h.hello.role == KEGNET_ROLE_OTHER && !h.hello.has_seq && !h.hello.session);
                check_streq(h.hello.role_name, "display");
                char *again = encode(&h);           /* and it travels on under its own name */
                check_streq(again, "{\"event\":\"Hello\",\"data\":{\"role\":\"display\",\"name\":null,\"session\":null,\"seq\":null,\"events\":null}}");
                free(again);
                kegnet_message_done(&h);
                check(parse_str("{\"event\":\"Hello\",\"data\":{\"seq\":1}}", &h) == -EINVAL);
                kegnet_message_done(&h);
                /* Subscriptions: names of other kinds and unknown (later) names are ignored; a
                 * list is required when the key is there. */
                check(parse_str("{\"event\":\"Hello\",\"data\":{\"role\":\"listener\",\"events\":[\"DrinkCreatedEvent\",\"MeterUpdate\",\"TapChanged\"]}}", &h) == 0);
                check(h.hello.has_events && h.hello.events == KEGNET_EVENT_BIT(KEGNET_DRINK_CREATED_EVENT));
                kegnet_message_done(&h);
                check(parse_str("{\"event\":\"Hello\",\"data\":{\"role\":\"listener\",\"events\":null}}", &h) == 0);
                check(!h.hello.has_events);
                kegnet_message_done(&h);
                check(parse_str("{\"event\":\"Hello\",\"data\":{\"role\":\"listener\",\"events\":\"FlowUpdate\"}}", &h) == -EINVAL);
                kegnet_message_done(&h);
                check(parse_str("{\"event\":\"Hello\",\"data\":{\"role\":\"listener\",\"events\":[1]}}", &h) == -EINVAL);
                kegnet_message_done(&h);
                /* pycore 1.0's DrinkCreatedEvent: no ticks, no uuid, tap_name, pycore's separators. */
                check(parse_str("{\"event\": \"DrinkCreatedEvent\", \"data\": {\"flow_id\": 3, \"drink_id\": 12, \"tap_name\": \"kegboard.flow0\", "
                                "\"start_time\": \"2026-11-26T12:00:01Z\", \"end_time\": \"2026-11-26T12:00:09Z\", \"username\": \"mikey\"}}", &h) == 0);
                check(h.kind == KEGNET_DRINK_CREATED_EVENT && h.drink_created_event.drink_id == 12);
                check(!h.drink_created_event.has_ticks && !h.drink_created_event.uuid && !h.drink_created_event.has_volume_ml);
                check_streq(h.drink_created_event.meter_name, "kegboard.flow0");
                kegnet_message_done(&h);
                check(encode_err(&(KegnetMessage) { .kind = KEGNET_HELLO, .hello = { .role = KEGNET_ROLE_OTHER } }) == -EINVAL);
                check(encode_err(&(KegnetMessage) { .kind = KEGNET_ACK, .ack = { .acked = KEGNET_SEQ_MAX + 1 } }) == -EINVAL);
                check(encode_err(&(KegnetMessage) { .kind = KEGNET_REFUSED }) == -EINVAL);
        }

        /* Escapes and UTF-8 survive the trip. */
        const char *odd = "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f Bi\xc3\xa8re \xe2\x82\xac \xf0\x9f\x8d\xba";
        KegnetMessage in = { .kind = KEGNET_FLOW_REQUEST, .flow_request = { .meter_name = odd, .request = KEGNET_REQUEST_START_FLOW } };
        char *s = encode(&in);
        check(s);
        if (s) {
                check(strstr(s, "\"q\\\"b\\\\s/\\n\\r\\t\\b\\f\\u0001\\u001f\x7f Bi\xc3\xa8re \xe2\x82\xac \xf0\x9f\x8d\xba\""));
                check(!strchr(s, '\n'));
                KegnetMessage m;
                check(parse_str(s, &m) == 0);
                check_streq(m.flow_request.meter_name, odd);
                kegnet_message_done(&m);
        }
        free(s);
        roundtrip(&in, NULL);
}

static void check_float(double v, const char *expect) {
        KegnetMessage m = { .kind = KEGNET_THERMO_EVENT, .thermo_event = { .sensor_name = "t", .sensor_value = v } };
        char *s = encode(&m);
        char want[128];
        snprintf(want, sizeof want, "{\"event\":\"ThermoEvent\",\"data\":{\"sensor_name\":\"t\",\"sensor_value\":%s}}", expect);
        check(s);
        if (s)
                check_streq(s, want);
        KegnetMessage back;
        if (s && parse_str(s, &back) == 0) {
                check(back.thermo_event.sensor_value == v);
                check(signbit(back.thermo_event.sensor_value) == signbit(v));
                kegnet_message_done(&back);
        } else
                check(!"float did not parse back");
        free(s);
}

static void test_floats(void) {
        /* The spelling itself is util-double's (tests/test-util-double.c); here: that frames use it
         * and that it reads back exactly. */
        check_float(100.0, "100.0");
        check_float(5.0 / 11.0, "0.45454545454545453");
        check_float(-0.0, "-0.0");
        check_float(1e16, "1e+16");
        check_float(0.00001, "1e-05");
        check_float(5e-324, "5e-324");

        /* Integer literals are fine as floats on input. */
        KegnetMessage m;
        check(parse_str("{\"event\":\"ThermoEvent\",\"data\":{\"sensor_name\":\"t\",\"sensor_value\":5}}", &m) == 0);
        check(m.thermo_event.sensor_value == 5.0);
        kegnet_message_done(&m);
        check(parse_str("{\"event\":\"ThermoEvent\",\"data\":{\"sensor_name\":\"t\",\"sensor_value\":-2.5E1}}", &m) == 0);
        check(m.thermo_event.sensor_value == -25.0);
        kegnet_message_done(&m);
}

static int parse_reading(const char *v, uint32_t *ret) {
        char buf[256];
        KegnetMessage m;
        snprintf(buf, sizeof buf, "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"m\",\"reading\":%s}}", v);
        int r = parse_str(buf, &m);
        if (r == 0)
                *ret = m.meter_update.reading;
        kegnet_message_done(&m);
        return r;
}

static void test_ints(void) {
        uint32_t v = 1;
        check(parse_reading("0", &v) == 0 && v == 0);
        check(parse_reading("4294967295", &v) == 0 && v == UINT32_MAX);
        check(parse_reading("100.0", &v) == 0 && v == 100);
        check(parse_reading("1e2", &v) == 0 && v == 100);
        check(parse_reading("1.5e1", &v) == 0 && v == 15);
        check(parse_reading("4294967295.0", &v) == 0 && v == UINT32_MAX);
        check(parse_reading("-0.0", &v) == 0 && v == 0);
        check(parse_reading("4294967296", &v) == -EINVAL);
        check(parse_reading("4.294967296e9", &v) == -EINVAL);
        check(parse_reading("-1", &v) == -EINVAL);
        check(parse_reading("100.5", &v) == -EINVAL);
        check(parse_reading("1e-1", &v) == -EINVAL);
        /* Fractions and exponents that are no exact integer are refused, even when the double they
         * round to is one (the attack pass got 1e-400 and 100.000000000000000001 accepted). */
        check(parse_reading("1e-400", &v) == -EINVAL);
        check(parse_reading("100.000000000000000001", &v) == -EINVAL);
        check(parse_reading("99.9999999999999999999", &v) == -EINVAL);
        check(parse_reading("4294967295.00000000001", &v) == -EINVAL);
        check(parse_reading("1.00000000000000000001e2", &v) == -EINVAL);
        check(parse_reading("0.0e-999", &v) == 0 && v == 0);          /* zero, however written */
        check(parse_reading("100.000000000000000000", &v) == 0 && v == 100);
        check(parse_reading("1000e-1", &v) == 0 && v == 100);
        check(parse_reading("0.01e4", &v) == 0 && v == 100);
        check(parse_reading("1E+2", &v) == 0 && v == 100);
        /* An inexact literal elsewhere in the frame does not spoil an exact reading... */
        KegnetMessage x;
        check(parse_str("{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"m\",\"x\":2.000000000000000000001,\"reading\":100.0}}", &x) == 0);
        check(x.meter_update.reading == 100);
        kegnet_message_done(&x);
        /* ...nor do numbers inside strings count. */
        check(parse_str("{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"1e-400 \\\" 100.000000000000000001\",\"reading\":1e2}}", &x) == 0);
        check(x.meter_update.reading == 100);
        kegnet_message_done(&x);
        check(parse_reading("1e400", &v) == -EBADMSG);              /* jansson: real overflow */
        check(parse_reading("99999999999999999999", &v) == -EBADMSG);  /* jansson: integer overflow */
        check(parse_reading("true", &v) == -EINVAL);
        check(parse_reading("\"100\"", &v) == -EINVAL);
        check(parse_reading("null", &v) == -EINVAL);
        check(parse_reading("[1]", &v) == -EINVAL);
        check(parse_reading("{}", &v) == -EINVAL);

        KegnetMessage m;
        /* int64 edges for flow_id, as integer and as real. */
        check(parse_str("{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":9.3e18,\"meter_name\":\"m\",\"state\":\"active\",\"start_time\":\"2026-11-26T12:00:00Z\",\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":1}}", &m) == -EINVAL);
        kegnet_message_done(&m);
        check(parse_str("{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":9.2e18,\"meter_name\":\"m\",\"state\":\"active\",\"start_time\":\"2026-11-26T12:00:00Z\",\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":1}}", &m) == 0);
        check(m.flow_update.flow_id == INT64_C(9200000000000000000));
        kegnet_message_done(&m);
        check(parse_str("{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":-1,\"meter_name\":\"m\",\"state\":\"active\",\"start_time\":\"2026-11-26T12:00:00Z\",\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":1}}", &m) == -EINVAL);
        kegnet_message_done(&m);
        check(parse_str("{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"c\",\"firmware_version\":2147483648}}", &m) == -EINVAL);
        kegnet_message_done(&m);
        check(parse_str("{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"c\",\"uptime_ms\":-5}}", &m) == -EINVAL);
        kegnet_message_done(&m);
}

typedef struct BadCase {
        const char *frame;
        int error;
        KegnetKind kind;
        KegnetInboundVerdict verdict;
} BadCase;

static void test_errors(void) {
        static const BadCase cases[] = {
                { "{", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "not json", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "[1,2]", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "\"MeterUpdate\"", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "42", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{}", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":5,\"data\":{}}", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":null}", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{\"data\":{\"meter_name\":\"m\",\"reading\":1}}", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":{}} x", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":{}}{}", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"M\\u0000\"}", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"\xff\"}", -EBADMSG, KEGNET_UNKNOWN, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\"}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":null}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":[]}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":\"x\"}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"reading\":1}}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":null,\"reading\":1}}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":3,\"reading\":1}}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"tap_name\":[],\"reading\":1}}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"m\"}}", -EINVAL, KEGNET_METER_UPDATE, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ThermoEvent\",\"data\":{\"sensor_name\":\"s\",\"sensor_value\":\"4.5\"}}", -EINVAL, KEGNET_THERMO_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ThermoEvent\",\"data\":{\"sensor_name\":\"s\"}}", -EINVAL, KEGNET_THERMO_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ThermoEvent\",\"data\":{\"sensor_value\":1.0}}", -EINVAL, KEGNET_THERMO_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"TokenAuthEvent\",\"data\":{\"auth_device_name\":\"d\",\"token_value\":\"t\",\"status\":\"present\"}}", -EINVAL, KEGNET_TOKEN_AUTH_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"TokenAuthEvent\",\"data\":{\"auth_device_name\":\"d\",\"token_value\":\"t\",\"status\":\"Added\"}}", -EINVAL, KEGNET_TOKEN_AUTH_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"TokenAuthEvent\",\"data\":{\"auth_device_name\":\"d\",\"token_value\":\"t\"}}", -EINVAL, KEGNET_TOKEN_AUTH_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"TokenAuthEvent\",\"data\":{\"auth_device_name\":\"d\",\"token_value\":7,\"status\":\"added\"}}", -EINVAL, KEGNET_TOKEN_AUTH_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"TokenAuthEvent\",\"data\":{\"meter_name\":1,\"auth_device_name\":\"d\",\"token_value\":\"t\",\"status\":\"added\"}}", -EINVAL, KEGNET_TOKEN_AUTH_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"FlowRequest\",\"data\":{\"meter_name\":\"m\",\"request\":\"pour\"}}", -EINVAL, KEGNET_FLOW_REQUEST, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"FlowRequest\",\"data\":{\"meter_name\":\"m\",\"request\":null}}", -EINVAL, KEGNET_FLOW_REQUEST, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ControllerConnectedEvent\",\"data\":{}}", -EINVAL, KEGNET_CONTROLLER_CONNECTED_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"c\",\"board_reset\":1}}", -EINVAL, KEGNET_CONTROLLER_CONNECTED_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"c\",\"serial_number\":5}}", -EINVAL, KEGNET_CONTROLLER_CONNECTED_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"c\",\"firmware_version\":\"18\"}}", -EINVAL, KEGNET_CONTROLLER_CONNECTED_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"c\",\"firmware_version\":18.5}}", -EINVAL, KEGNET_CONTROLLER_CONNECTED_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"ControllerConnectedEvent\",\"data\":{\"controller_name\":\"c\",\"device\":false}}", -EINVAL, KEGNET_CONTROLLER_CONNECTED_EVENT, KEGNET_INBOUND_DROP_WARNING },
                { "{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":1,\"meter_name\":\"m\",\"state\":\"done\",\"start_time\":\"2026-11-26T12:00:00Z\",\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":1}}", -EINVAL, KEGNET_FLOW_UPDATE, KEGNET_INBOUND_DROP_DEBUG },
                { "{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":1,\"meter_name\":\"m\",\"state\":\"active\",\"start_time\":\"2026-11-26 12:00:00\",\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":1}}", -EINVAL, KEGNET_FLOW_UPDATE, KEGNET_INBOUND_DROP_DEBUG },
                { "{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":1,\"meter_name\":\"m\",\"state\":\"active\",\"start_time\":\"2026-11-26T12:00:00Z\",\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":1,\"volume_ml\":\"1\"}}", -EINVAL, KEGNET_FLOW_UPDATE, KEGNET_INBOUND_DROP_DEBUG },
                { "{\"event\":\"FlowUpdate\",\"data\":{\"flow_id\":1,\"meter_name\":\"m\",\"state\":\"active\",\"start_time\":\"2026-11-26T12:00:00Z\",\"last_activity_time\":\"2026-11-26T12:00:00Z\",\"ticks\":-1}}", -EINVAL, KEGNET_FLOW_UPDATE, KEGNET_INBOUND_DROP_DEBUG },
                { "{\"event\":\"DrinkCreatedEvent\",\"data\":{\"flow_id\":1,\"meter_name\":\"m\",\"start_time\":\"2026-11-26T12:00:00Z\",\"end_time\":\"2026-11-26T12:00:00Z\",\"ticks\":1,\"uuid\":7}}", -EINVAL, KEGNET_DRINK_CREATED_EVENT, KEGNET_INBOUND_DROP_DEBUG },
                { "{\"event\":\"DrinkCreatedEvent\",\"data\":{\"flow_id\":1,\"drink_id\":-2,\"meter_name\":\"m\",\"start_time\":\"2026-11-26T12:00:00Z\",\"end_time\":\"2026-11-26T12:00:00Z\",\"ticks\":1,\"uuid\":\"u\"}}", -EINVAL, KEGNET_DRINK_CREATED_EVENT, KEGNET_INBOUND_DROP_DEBUG },
                { "{\"event\":\"SetRelayOutputEvent\",\"data\":{\"output_name\":\"r\",\"output_mode\":\"on\"}}", -EINVAL, KEGNET_SET_RELAY_OUTPUT_EVENT, KEGNET_INBOUND_DROP_DEBUG },
                { "{\"event\":\"SetRelayOutputEvent\",\"data\":{\"output_mode\":\"enabled\"}}", -EINVAL, KEGNET_SET_RELAY_OUTPUT_EVENT, KEGNET_INBOUND_DROP_DEBUG },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                KegnetMessage m;
                char *err = NULL;
                int r = kegnet_message_parse(cases[i].frame, strlen(cases[i].frame), &m, &err);
                if (r != cases[i].error || m.kind != cases[i].kind)
                        fprintf(stderr, "case %zu: %s -> %d kind %d (%s)\n", i, cases[i].frame, r, (int) m.kind, err);
                check(r == cases[i].error);
                check(m.kind == cases[i].kind);
                check(err && strlen(err) > 0);
                check(kegnet_inbound_verdict(r, &m) == cases[i].verdict);
                if (cases[i].error == -EBADMSG)
                        check(m.event_name == NULL);
                else
                        check_streq(m.event_name, kegnet_kind_to_string(cases[i].kind));
                free(err);
                kegnet_message_done(&m);
        }

        /* A frame is not NUL-terminated: the parser stops at 'size'. */
        const char *longer = "{\"event\":\"Ping\"}GARBAGE";
        KegnetMessage m;
        check(kegnet_message_parse(longer, 16, &m, NULL) == 0);
        check_streq(m.event_name, "Ping");
        kegnet_message_done(&m);

        /* Empty and blank frames are ignored. */
        check(kegnet_message_parse("", 0, &m, NULL) == -ENODATA);
        check(kegnet_inbound_verdict(-ENODATA, &m) == KEGNET_INBOUND_IGNORE);
        kegnet_message_done(&m);
        check(kegnet_message_parse(NULL, 0, &m, NULL) == -ENODATA);
        kegnet_message_done(&m);
        check(kegnet_message_parse(" \t\r\n ", 5, &m, NULL) == -ENODATA);
        kegnet_message_done(&m);
        /* Error text is optional. */
        check(kegnet_message_parse("{", 1, &m, NULL) == -EBADMSG);
        kegnet_message_done(&m);
        kegnet_message_done(NULL);
}


static void test_encode_errors(void) {
        check(encode_err(&KEGNET_MESSAGE_NULL) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = _KEGNET_KIND_MAX }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_METER_UPDATE }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_METER_UPDATE, .meter_update = { .meter_name = "a\xc0\x80" } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_METER_UPDATE, .meter_update = { .meter_name = "\xed\xa0\x80" } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_METER_UPDATE, .meter_update = { .meter_name = "\xf4\x90\x80\x80" } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_METER_UPDATE, .meter_update = { .meter_name = "\xe2\x82" } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_THERMO_EVENT, .thermo_event = { .sensor_name = "s", .sensor_value = NAN } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_THERMO_EVENT, .thermo_event = { .sensor_name = "s", .sensor_value = -INFINITY } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_TOKEN_AUTH_EVENT, .token_auth_event = { .auth_device_name = "d", .token_value = "t", .status = 2 } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_TOKEN_AUTH_EVENT, .token_auth_event = { .auth_device_name = "d", .status = KEGNET_TOKEN_ADDED } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_FLOW_REQUEST, .flow_request = { .meter_name = "m", .request = 9 } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_CONTROLLER_CONNECTED_EVENT, .controller_connected_event = { .controller_name = "c", .has_firmware_version = true, .firmware_version = UINT32_MAX } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_CONTROLLER_CONNECTED_EVENT, .controller_connected_event = { .controller_name = "c", .has_uptime_ms = true, .uptime_ms = UINT64_MAX } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_FLOW_UPDATE, .flow_update = { .flow_id = -1, .meter_name = "m" } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_FLOW_UPDATE, .flow_update = { .flow_id = 1, .meter_name = "m", .state = 3 } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_FLOW_UPDATE, .flow_update = { .flow_id = 1, .meter_name = "m", .ticks = UINT64_MAX } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_FLOW_UPDATE, .flow_update = { .flow_id = 1, .meter_name = "m", .start_time = UINT64_MAX } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_FLOW_UPDATE, .flow_update = { .flow_id = 1, .meter_name = "m", .has_volume_ml = true, .volume_ml = NAN } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_FLOW_UPDATE, .flow_update = { .flow_id = 1, .meter_name = "m", .has_volume_ml = false, .volume_ml = NAN } }) == 0);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_DRINK_CREATED_EVENT, .drink_created_event = { .flow_id = 1, .meter_name = "m" } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_DRINK_CREATED_EVENT, .drink_created_event = { .flow_id = 1, .meter_name = "m", .uuid = "u", .has_drink_id = true, .drink_id = -1 } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_SET_RELAY_OUTPUT_EVENT, .set_relay_output_event = { .output_name = "r", .output_mode = -1 } }) == -EINVAL);
        check(encode_err(&(KegnetMessage) { .kind = KEGNET_SET_RELAY_OUTPUT_EVENT, .set_relay_output_event = { .output_mode = KEGNET_OUTPUT_ENABLED } }) == -EINVAL);
        check(encode_err(NULL) == -EINVAL);
}

/* A MeterUpdate whose payload is exactly n bytes long. */
static char *meter_name_for_payload(size_t n) {
        const size_t overhead = strlen("{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"\",\"reading\":1}}");
        size_t l = n - overhead;
        char *s = malloc(l + 1);
        memset(s, 'x', l);
        s[l] = 0;
        return s;
}

static void test_max_frame(void) {
        char *out = NULL;
        size_t n = 0;

        char *name = meter_name_for_payload(KEGNET_MAX_FRAME);
        KegnetMessage m = { .kind = KEGNET_METER_UPDATE, .meter_update = { .meter_name = name, .reading = 1 } };
        check(kegnet_message_encode(&m, &out, &n) == 0);
        check(n == KEGNET_MAX_FRAME + 2);

        /* The largest frame passes the splitter and parses. */
        KegnetSplitter s = KEGNET_SPLITTER_INIT;
        const char *f;
        size_t fl;
        check(kegnet_splitter_feed(&s, out, n - 1) == 0);
        check(kegnet_splitter_next(&s, &f, &fl) == 0);          /* 65536 bytes + one '\n' so far */
        check(kegnet_splitter_feed(&s, "\n", 1) == 0);
        check(kegnet_splitter_next(&s, &f, &fl) == 1);
        check(fl == KEGNET_MAX_FRAME);
        KegnetMessage back;
        check(kegnet_message_parse(f, fl, &back, NULL) == 0);
        check(back.kind == KEGNET_METER_UPDATE && strlen(back.meter_update.meter_name) == strlen(name));
        kegnet_message_done(&back);
        check(kegnet_splitter_next(&s, &f, &fl) == 0);
        check(kegnet_splitter_pending(&s) == 0);
        kegnet_splitter_done(&s);
        free(out);
        free(name);

        name = meter_name_for_payload(KEGNET_MAX_FRAME + 1);
        m.meter_update.meter_name = name;
        out = NULL;
        check(kegnet_message_encode(&m, &out, &n) == -E2BIG);
        check(out == NULL);
        free(name);
}

typedef struct Frames {
        char *frames[64];
        size_t n;
        int error;
} Frames;

static void frames_drain(KegnetSplitter *s, Frames *fr) {
        const char *f;
        size_t l;
        int r;
        while ((r = kegnet_splitter_next(s, &f, &l)) > 0) {
                check(strlen(f) == l);
                if (fr->n < ELEMENTSOF(fr->frames))
                        fr->frames[fr->n++] = strndup(f, l);
        }
        if (r < 0)
                fr->error = r;
}

static void frames_free(Frames *fr) {
        for (size_t i = 0; i < fr->n; i++)
                free(fr->frames[i]);
        *fr = (Frames) {};
}

static void test_splitter_chunking(void) {
        char stream[8192] = "";
        for (size_t i = 0; i < ELEMENTSOF(examples); i++) {
                strcat(stream, examples[i]);
                strcat(stream, "\n\n");
        }
        size_t len = strlen(stream);

        /* Every chunk size from 1 byte up to all at once. */
        for (size_t chunk = 1; chunk <= len; chunk = chunk < 16 ? chunk + 1 : chunk * 3) {
                KegnetSplitter s;
                Frames fr = {};
                kegnet_splitter_init(&s);
                for (size_t off = 0; off < len; off += chunk) {
                        check(kegnet_splitter_feed(&s, stream + off, MIN(chunk, len - off)) == 0);
                        frames_drain(&s, &fr);
                }
                check(fr.error == 0);
                check(fr.n == ELEMENTSOF(examples));
                for (size_t i = 0; i < fr.n && i < ELEMENTSOF(examples); i++)
                        check_streq(fr.frames[i], examples[i]);
                check(kegnet_splitter_pending(&s) == 0);
                frames_free(&fr);
                kegnet_splitter_done(&s);
        }

        /* Whole stream in one chunk. */
        KegnetSplitter s = KEGNET_SPLITTER_INIT;
        Frames fr = {};
        check(kegnet_splitter_feed(&s, stream, len) == 0);
        frames_drain(&s, &fr);
        check(fr.n == ELEMENTSOF(examples));
        frames_free(&fr);

        /* Blank frames are skipped; extra newlines stay with the next frame; pretty-printed objects
         * with single newlines are one frame; a partial frame stays pending. */
        const char *odd = "\n\n \n\n{\"a\":\n1}\n\n\n{\"b\":2}\n\n\r\n\t\n\n{\"c\"";
        check(kegnet_splitter_feed(&s, odd, strlen(odd)) == 0);
        frames_drain(&s, &fr);
        check(fr.error == 0);
        check(fr.n == 2);
        if (fr.n == 2) {
                check_streq(fr.frames[0], "{\"a\":\n1}");
                check_streq(fr.frames[1], "\n{\"b\":2}");
        }
        check(kegnet_splitter_pending(&s) == 4);
        check(kegnet_splitter_feed(&s, ":3}\n", 4) == 0);
        frames_drain(&s, &fr);
        check(fr.n == 2);
        check(kegnet_splitter_feed(&s, "\n", 1) == 0);
        frames_drain(&s, &fr);
        check(fr.n == 3);
        if (fr.n == 3)
                check_streq(fr.frames[2], "{\"c\":3}");
        check(kegnet_splitter_feed(&s, "", 0) == 0);
        frames_free(&fr);
        kegnet_splitter_done(&s);
        kegnet_splitter_done(&s);       /* idempotent */

        /* Many frames in one large chunk, with the buffer compacting as it goes. */
        kegnet_splitter_init(&s);
        size_t total = 0;
        for (int round = 0; round < 200; round++) {
                char buf[4096] = "";
                for (int k = 0; k < 20; k++) {
                        char one[128];
                        snprintf(one, sizeof one, "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"m\",\"reading\":%d}}\n\n", round * 20 + k);
                        strcat(buf, one);
                }
                check(kegnet_splitter_feed(&s, buf, strlen(buf)) == 0);
                const char *f;
                size_t l;
                while (kegnet_splitter_next(&s, &f, &l) > 0) {
                        KegnetMessage m;
                        check(kegnet_message_parse(f, l, &m, NULL) == 0);
                        check(m.meter_update.reading == total);
                        kegnet_message_done(&m);
                        total++;
                }
        }
        check(total == 4000);
        check(s.allocated <= 16384);
        kegnet_splitter_done(&s);
}

static void test_splitter_limit(void) {
        char *big = malloc(KEGNET_MAX_FRAME + 4);
        memset(big, 'x', KEGNET_MAX_FRAME + 4);
        const char *f;
        size_t l;
        KegnetSplitter s;

        /* Exactly MAX bytes then the terminator, byte by byte around the boundary. */
        kegnet_splitter_init(&s);
        check(kegnet_splitter_feed(&s, big, KEGNET_MAX_FRAME - 1) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == 0);
        check(kegnet_splitter_feed(&s, "y", 1) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == 0);
        check(kegnet_splitter_feed(&s, "\n", 1) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == 0);
        check(kegnet_splitter_feed(&s, "\n", 1) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == 1);
        check(l == KEGNET_MAX_FRAME && f[l - 1] == 'y');
        check(kegnet_splitter_next(&s, &f, &l) == 0);
        kegnet_splitter_done(&s);

        /* MAX + 1 bytes without a terminator: over the limit as soon as it is certain. */
        kegnet_splitter_init(&s);
        check(kegnet_splitter_feed(&s, big, KEGNET_MAX_FRAME) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == 0);
        check(kegnet_splitter_feed(&s, "x", 1) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == -EMSGSIZE);
        check(kegnet_splitter_next(&s, &f, &l) == -EMSGSIZE);  /* sticky */
        check(kegnet_splitter_feed(&s, "\n\n", 2) == -EMSGSIZE);
        kegnet_splitter_done(&s);

        /* MAX bytes then a single '\n', then something else: over the limit. */
        kegnet_splitter_init(&s);
        check(kegnet_splitter_feed(&s, big, KEGNET_MAX_FRAME) == 0);
        check(kegnet_splitter_feed(&s, "\n", 1) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == 0);
        check(kegnet_splitter_feed(&s, "x", 1) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == -EMSGSIZE);
        kegnet_splitter_done(&s);

        /* MAX + 1 bytes and the terminator all in one chunk: the frame is refused. */
        kegnet_splitter_init(&s);
        big[KEGNET_MAX_FRAME + 1] = '\n';
        big[KEGNET_MAX_FRAME + 2] = '\n';
        check(kegnet_splitter_feed(&s, big, KEGNET_MAX_FRAME + 3) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == -EMSGSIZE);
        kegnet_splitter_done(&s);

        /* A good frame before the oversize one is still delivered. */
        kegnet_splitter_init(&s);
        check(kegnet_splitter_feed(&s, "{}\n\n", 4) == 0);
        memset(big, 'x', KEGNET_MAX_FRAME + 4);
        check(kegnet_splitter_feed(&s, big, KEGNET_MAX_FRAME + 4) == 0);
        check(kegnet_splitter_next(&s, &f, &l) == 1);
        check(l == 2);
        check(kegnet_splitter_next(&s, &f, &l) == -EMSGSIZE);
        kegnet_splitter_done(&s);
        free(big);
}

/* assert_return(): a wrong call is refused, not a crash. */
static void test_preconditions(void) {
        KegnetSplitter sp = KEGNET_SPLITTER_INIT;
        const char *f;
        size_t l;
        char *s = NULL;

        check(kegnet_message_encode(NULL, &s, NULL) == -EINVAL);
        check(kegnet_message_parse("{}", 2, NULL, NULL) == -EINVAL);
        check(kegnet_splitter_feed(NULL, "x", 1) == -EINVAL);
        check(kegnet_splitter_feed(&sp, NULL, 1) == -EINVAL);
        check(kegnet_splitter_next(&sp, NULL, &l) == -EINVAL);
        check(kegnet_splitter_next(NULL, &f, &l) == -EINVAL);
        check(kegnet_address_parse("1", NULL, NULL) == -EINVAL);
        kegnet_splitter_done(&sp);
}

static void test_address(void) {
        char *h = NULL;
        uint16_t p = 0;

        check(kegnet_address_parse("127.0.0.1:9805", &h, &p) == 0);
        check_streq(h, "127.0.0.1");
        check(p == 9805);
        free(h);
        check(kegnet_address_parse("9806", &h, &p) == 0);
        check_streq(h, "127.0.0.1");
        check(p == 9806);
        free(h);
        check(kegnet_address_parse("localhost:1", &h, &p) == 0);
        check_streq(h, "localhost");
        check(p == 1);
        free(h);
        check(kegnet_address_parse("[::1]:65535", &h, &p) == 0);
        check_streq(h, "::1");
        check(p == 65535);
        free(h);
        check(kegnet_address_parse("0.0.0.0:0", &h, &p) == 0);
        check(p == 0);
        free(h);

        static const char *const bad[] = {
                "", ":9805", "host:", "host:port", "host:65536", "host:-1", "host:123456", "::1:9805",
                "[::1]", "[]:9805", "[::1]9805", "[::1:9805", "98a5", "host:98 05", "host:+80",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                h = NULL;
                check(kegnet_address_parse(bad[i], &h, &p) == -EINVAL);
                check(h == NULL);
        }
        check(kegnet_address_parse(NULL, &h, &p) == -EINVAL);
}

static void test_names(void) {
        for (int k = 1; k < _KEGNET_KIND_MAX; k++) {
                const char *n = kegnet_kind_to_string(k);
                check(n);
                check(kegnet_kind_from_string(n) == (KegnetKind) k);
        }
        check(kegnet_kind_to_string(KEGNET_UNKNOWN) == NULL);
        check(kegnet_kind_to_string(_KEGNET_KIND_MAX) == NULL);
        check(kegnet_kind_from_string(NULL) == KEGNET_UNKNOWN);
        check(kegnet_kind_from_string("QuitEvent") == KEGNET_UNKNOWN);

        check(kegnet_kind_is_inbound(KEGNET_METER_UPDATE));
        check(kegnet_kind_is_inbound(KEGNET_THERMO_EVENT));
        check(kegnet_kind_is_inbound(KEGNET_TOKEN_AUTH_EVENT));
        check(kegnet_kind_is_inbound(KEGNET_FLOW_REQUEST));
        check(kegnet_kind_is_inbound(KEGNET_CONTROLLER_CONNECTED_EVENT));
        check(!kegnet_kind_is_inbound(KEGNET_FLOW_UPDATE));
        check(!kegnet_kind_is_inbound(KEGNET_DRINK_CREATED_EVENT));
        check(!kegnet_kind_is_inbound(KEGNET_SET_RELAY_OUTPUT_EVENT));
        check(!kegnet_kind_is_inbound(KEGNET_UNKNOWN));

        check(kegnet_token_status_from_string("removed") == KEGNET_TOKEN_REMOVED);
        check(kegnet_token_status_from_string(NULL) == -EINVAL);
        check(kegnet_flow_request_type_from_string("stop_flow") == KEGNET_REQUEST_STOP_FLOW);
        check(kegnet_flow_state_from_string("idle") == KEGNET_FLOW_IDLE);
        check(kegnet_flow_state_from_string("Idle") == -EINVAL);
        check(kegnet_output_mode_from_string("disabled") == KEGNET_OUTPUT_DISABLED);
        check_streq(kegnet_output_mode_to_string(KEGNET_OUTPUT_ENABLED), "enabled");
        check(kegnet_output_mode_to_string(_KEGNET_OUTPUT_MODE_MAX) == NULL);
        check(kegnet_flow_state_to_string(-1) == NULL);

        /* The verdict of a successful parse of each kind. */
        KegnetMessage m = { .kind = KEGNET_METER_UPDATE, .event_name = "MeterUpdate" };
        check(kegnet_inbound_verdict(0, &m) == KEGNET_INBOUND_ACCEPT);
        check(kegnet_inbound_verdict(-EINVAL, &m) == KEGNET_INBOUND_DROP_WARNING);
        check(kegnet_inbound_verdict(-ENOMEM, &m) == KEGNET_INBOUND_DROP_WARNING);
        m = (KegnetMessage) { .kind = KEGNET_SET_RELAY_OUTPUT_EVENT, .event_name = "SetRelayOutputEvent" };
        check(kegnet_inbound_verdict(0, &m) == KEGNET_INBOUND_DROP_DEBUG);
        check(kegnet_inbound_verdict(-EBADMSG, &KEGNET_MESSAGE_NULL) == KEGNET_INBOUND_DROP_WARNING);
        check(kegnet_inbound_verdict(-EBADMSG, NULL) == KEGNET_INBOUND_DROP_WARNING);
}

/* jansson's allocations, counted (json_set_alloc_funcs()). */
static size_t jansson_allocs;

static void *counting_malloc(size_t n) {
        jansson_allocs++;
        return malloc(n);
}

/* A MeterUpdate as our producers write it (the core's hot path) and an Ack as the core writes it
 * (a producer's) are decoded without jansson and without allocating; frames next to those forms go
 * through jansson and give what it gives. */
static void test_parse_fast(void) {
        KegnetMessage m = KEGNET_MESSAGE_NULL;
        _cleanup_(freep) char *enc = NULL;
        char name[KEGNET_FAST_TEXT_MAX + 1];
        size_t n;

        json_set_alloc_funcs(counting_malloc, free);

        check(kegnet_message_encode(&(KegnetMessage) { .kind = KEGNET_METER_UPDATE,
                .meter_update = { .meter_name = "kegboard-BENCH.flow0", .reading = UINT32_MAX } }, &enc, &n) == 0);
        jansson_allocs = 0;
        check(kegnet_message_parse(enc, n - 2, &m, NULL) == 0);
        check(jansson_allocs == 0);
        check(m.kind == KEGNET_METER_UPDATE);
        check_streq(m.event_name, "MeterUpdate");
        check_streq(m.meter_update.meter_name, "kegboard-BENCH.flow0");
        check(m.meter_update.reading == UINT32_MAX);
        kegnet_message_done(&m);
        check(m.kind == KEGNET_UNKNOWN && !m.event_name);

        /* Trailing JSON whitespace and the empty name are still the fast path. */
        jansson_allocs = 0;
        check(parse_str("{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"\",\"reading\":0}} \r\n", &m) == 0);
        check(jansson_allocs == 0);
        check_streq(m.meter_update.meter_name, "");
        check(m.meter_update.reading == 0);
        kegnet_message_done(&m);

        /* The longest name the message holds itself; one more byte goes through jansson. */
        memset(name, 'a', sizeof name);
        for (size_t len = KEGNET_FAST_TEXT_MAX - 1; len <= KEGNET_FAST_TEXT_MAX; len++) {
                _cleanup_(freep) char *f = NULL;
                name[len] = 0;
                check(asprintf(&f, "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"%s\",\"reading\":7}}", name) > 0);
                jansson_allocs = 0;
                check(parse_str(f, &m) == 0);
                check((jansson_allocs == 0) == (len < KEGNET_FAST_TEXT_MAX));
                check_streq(m.meter_update.meter_name, name);
                check(m.meter_update.reading == 7);
                kegnet_message_done(&m);
                name[len] = 'a';
        }

        /* Not the fast form: jansson decides, as it always did. */
        static const struct {
                const char *frame;
                int result;
                const char *name;
                uint32_t reading;
        } other[] = {
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"a\\u00e9\",\"reading\":5}}", 0, "a\xc3\xa9", 5 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"b\",\"reading\":5,\"x\":1}}", 0, "b", 5 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"c\",\"reading\":5.0}}", 0, "c", 5 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"d\",\"reading\":4294967295 }}", 0, "d", UINT32_MAX },
                { " {\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"e\",\"reading\":1}}", 0, "e", 1 },
                { "{\"event\":\"Ack\",\"data\":{\"acked\":12.0}}", 0, NULL, 12 },
                { "{\"event\":\"Ack\",\"data\":{\"acked\":12,\"more\":true}}", 0, NULL, 12 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"f\",\"reading\":4294967296}}", -EINVAL, NULL, 0 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"g\",\"reading\":42949672950}}", -EINVAL, NULL, 0 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"h\",\"reading\":-1}}", -EINVAL, NULL, 0 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"i\",\"reading\":01}}", -EBADMSG, NULL, 0 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"j\",\"reading\":1}}x", -EBADMSG, NULL, 0 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"k\",\"reading\":1}", -EBADMSG, NULL, 0 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"l\tm\",\"reading\":1}}", -EBADMSG, NULL, 0 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"\xff\",\"reading\":1}}", -EBADMSG, NULL, 0 },
                { "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"n\",\"reading\":}}", -EBADMSG, NULL, 0 },
                { "{\"event\":\"Ack\",\"data\":{\"acked\":9223372036854775808}}", -EBADMSG, NULL, 0 },
                { "{\"event\":\"Ack\",\"data\":{\"acked\":null}}", -EINVAL, NULL, 0 },
                { "{\"event\":\"Ack\",\"data\":{\"acked\":-3}}", -EINVAL, NULL, 0 },
                { "{\"event\":\"Ack\",\"data\":{\"acked\":00}}", -EBADMSG, NULL, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(other); i++) {
                jansson_allocs = 0;
                int r = parse_str(other[i].frame, &m);
                if (r != other[i].result)
                        fprintf(stderr, "frame %zu: %d\n", i, r);
                check(r == other[i].result);
                check(jansson_allocs > 0);
                if (r == 0 && m.kind == KEGNET_ACK)
                        check(m.ack.acked == other[i].reading);
                else if (r == 0) {
                        check_streq(m.meter_update.meter_name, other[i].name);
                        check(m.meter_update.reading == other[i].reading);
                }
                kegnet_message_done(&m);
        }

        /* Acks: the largest sequence number still the fast path. */
        enc = mfree(enc);
        check(kegnet_message_encode(&(KegnetMessage) { .kind = KEGNET_ACK, .ack.acked = KEGNET_SEQ_MAX }, &enc, &n) == 0);
        jansson_allocs = 0;
        check(kegnet_message_parse(enc, n, &m, NULL) == 0);
        check(jansson_allocs == 0);
        check(m.kind == KEGNET_ACK && m.ack.acked == KEGNET_SEQ_MAX);
        check_streq(m.event_name, "Ack");
        kegnet_message_done(&m);

        json_set_alloc_funcs(malloc, free);
}

/* A sender's buffer is reused: the second frame that fits costs no allocation; a refused message
 * leaves the buffer empty. */
static void test_encode_in(void) {
        _cleanup_(strbuf_done) StrBuf b = STRBUF_INIT;
        KegnetMessage u = { .kind = KEGNET_METER_UPDATE, .meter_update = { .meter_name = "kegboard.flow0", .reading = 1 } };
        const char *first;

        check(kegnet_message_encode_in(&u, &b) == 0);
        check_streq(b.buf, "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"kegboard.flow0\",\"reading\":1}}\n\n");
        check(b.len == strlen(b.buf));
        first = b.buf;
        u.meter_update.reading = 2;
        check(kegnet_message_encode_in(&u, &b) == 0);
        check(b.buf == first);
        check_streq(b.buf, "{\"event\":\"MeterUpdate\",\"data\":{\"meter_name\":\"kegboard.flow0\",\"reading\":2}}\n\n");

        u.meter_update.meter_name = NULL;
        check(kegnet_message_encode_in(&u, &b) == -EINVAL);
        check(b.len == 0 && b.error == 0);
        check(kegnet_message_encode_in(&(KegnetMessage) { .kind = KEGNET_ACK, .ack.acked = 5 }, &b) == 0);
        check_streq(b.buf, "{\"event\":\"Ack\",\"data\":{\"acked\":5}}\n\n");
}

int main(void) {
        test_run(test_examples);
        test_run(test_legacy_and_dropped);
        test_run(test_roundtrip);
        test_run(test_floats);
        test_run(test_ints);
        test_run(test_errors);
        test_run(test_encode_errors);
        test_run(test_max_frame);
        test_run(test_splitter_chunking);
        test_run(test_splitter_limit);
        test_run(test_address);
        test_run(test_preconditions);
        test_run(test_names);
        test_run(test_parse_fast);
        test_run(test_encode_in);

        return test_result();
}
