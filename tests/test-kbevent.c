/* The Kegboard Event Protocol codec (kegboard-event-protocol.md): payloads (section 5), files (2.3,
 * 2.4), age_ms (4.4, unit test 3), the batch builder (9.2, unit test 2) and the answers (6-8). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "kbevent.h"
#include "util-strv.h"
#include "test-util.h"

#define POUR_ID "3f1c2a9e-8d4b-4c1e-9a57-0b6d2e4f7a10"

static const sd_id128_t BOOT_A = SD_ID128_MAKE(6d, 1f, 0c, 1e, 1c, 0a, 4b, 5e, 9b, 3a, 2f, 7e, 5d, 4c, 3b, 2a);
static const sd_id128_t BOOT_B = SD_ID128_MAKE(11, 22, 33, 44, 55, 66, 77, 88, 99, aa, bb, cc, dd, ee, ff, 00);

static void test_names(void) {
        char dev[KBEVENT_DEVICE_NAME_MAX + 1];
        unsigned n;

        check(kbevent_device_name_is_valid("kegboard"));
        check(kbevent_device_name_is_valid("kegboard-1a2b3c4d"));
        check(!kbevent_device_name_is_valid("-kegboard"));
        check(!kbevent_device_name_is_valid("keg.board"));
        check(!kbevent_device_name_is_valid(""));
        check(kbevent_device_name_is_valid("a123456789012345678901234567890123456789012345678901234567890123"));
        check(!kbevent_device_name_is_valid("a1234567890123456789012345678901234567890123456789012345678901234"));

        check_int(kbevent_parse_port("kegboard.flow1", "flow", dev, &n), 0);
        check_streq(dev, "kegboard");
        check_int(n, 1);
        check_int(kbevent_parse_port("kegboard-1a2b.relay255", "relay", dev, &n), 0);
        check_int(n, 255);
        check_int(kbevent_parse_port("kegboard.flow256", "flow", dev, &n), -EINVAL);
        check_int(kbevent_parse_port("kegboard.flow01", "flow", dev, &n), -EINVAL);
        check_int(kbevent_parse_port("kegboard.tap0", "flow", dev, &n), -EINVAL);
        check_int(kbevent_parse_port("kegboard.flow", "flow", dev, &n), -EINVAL);
        check_int(kbevent_parse_port("flow0", "flow", dev, &n), -EINVAL);
        check_int(kbevent_parse_port("keg board.flow0", "flow", dev, &n), -EINVAL);

        check(kbevent_token_is_valid("kbe_4f1d9a0c7e2b58d63a9f0e1c2b4d6a8f0c1e3a5b"));
        check(!kbevent_token_is_valid("with space"));
        check(!kbevent_token_is_valid(""));
        check(!kbevent_token_is_valid("caf\xc3\xa9"));

        check_int(kbevent_type_from_string("grant_end"), KBEVENT_GRANT_END);
        check_int(kbevent_type_from_string("nope"), -EINVAL);
        check(kbevent_type_is_durable(KBEVENT_POUR));
        check(!kbevent_type_is_durable(KBEVENT_STATUS));
        check(!kbevent_type_is_durable(KBEVENT_POUR_UPDATE));
}

static void test_payloads(void) {
        _cleanup_(freep) char *pour = NULL, *grant = NULL, *temp = NULL, *tok = NULL, *st = NULL, *res = NULL,
                              *upd = NULL, *tiny = NULL, *longmsg = NULL, *gend = NULL;
        KbPour p = {
                .meter_number = 0, .pour_id = POUR_ID, .volume_ml = 50.0, .duration_ms = 1262, .ticks = 110,
                .ml_per_tick = 1 / 2.2, .tick_series = "0:4 100:9",
        };
        char big[400];

        check_int(kbevent_pour_data(&p, &pour), 0);
        check_streq(pour, "{\"meter_number\":0,\"pour_id\":\"" POUR_ID "\",\"volume_ml\":50.0,\"duration_ms\":1262,"
                          "\"ticks\":110,\"ml_per_tick\":0.45454545454545453,\"tick_series\":\"0:4 100:9\"}");

        p.volume_ml = 19.0909090909;
        p.auth_device = "core.rfid";
        p.auth_token = "0415ab23cd";
        p.grant_id = "g_5a1c90e2";
        check_int(kbevent_pour_data(&p, &grant), 0);
        check(strstr(grant, "\"volume_ml\":19.091,\"duration_ms\":1262,\"auth_device\":\"core.rfid\","
                            "\"auth_token\":\"0415ab23cd\",\"grant_id\":\"g_5a1c90e2\""));
        /* A volume that rounds to nothing is written unrounded; none at all is no pour. */
        p.volume_ml = 0.0001;
        p.auth_device = p.auth_token = p.grant_id = NULL;
        check_int(kbevent_pour_data(&p, &tiny), 0);
        check(strstr(tiny, "\"volume_ml\":0.0001,"));
        p.volume_ml = 0;
        check_int(kbevent_pour_data(&p, &(char *) { NULL }), -EINVAL);
        p.volume_ml = 1;
        p.pour_id = "3F1C2A9E-8D4B-4C1E-9A57-0B6D2E4F7A10";
        check_int(kbevent_pour_data(&p, &(char *) { NULL }), -EINVAL);
        p.pour_id = POUR_ID;
        p.auth_device = "core.rfid";            /* an echo without its token */
        check_int(kbevent_pour_data(&p, &(char *) { NULL }), -EINVAL);

        check_int(kbevent_pour_update_data(1, POUR_ID, 12.34567, 800, &upd), 0);
        check_streq(upd, "{\"meter_number\":1,\"pour_id\":\"" POUR_ID "\",\"volume_ml\":12.346,\"duration_ms\":800}");

        check_int(kbevent_temperature_data("thermo-6b0316621d4cff28", 3.8754, &temp), 0);
        check_streq(temp, "{\"sensor\":\"thermo-6b0316621d4cff28\",\"temp_c\":3.875}");
        check_int(kbevent_temperature_data("bad\nname", 3, &(char *) { NULL }), -EINVAL);

        check_int(kbevent_token_data("core.rfid", "0415ab23cd", true, &tok), 0);
        check_streq(tok, "{\"auth_device\":\"core.rfid\",\"token\":\"0415ab23cd\",\"action\":\"attached\"}");
        memset(big, 'a', sizeof big - 1);
        big[sizeof big - 1] = 0;
        check_int(kbevent_token_data("core.rfid", big, true, &(char *) { NULL }), -EINVAL);

        KbStatusMeter meters[] = {
                { .meter_number = 0, .total_ticks = 918234, .ml_per_tick = 1 / 2.2 },
                { .meter_number = 1, .total_ticks = 40112, .ml_per_tick = 0.185 },
        };
        unsigned relays[] = { 0 };
        KbStatus s = {
                .boot = false, .fw_version = "kegbot-core/0.2.0 fw18", .uptime_ms = 7510655, .events_dropped = 0,
                .heartbeat_ms = 60000, .pour_update_ms = 1000, .queue_capacity = 10000,
                .meters = meters, .n_meters = 2, .relays = relays, .n_relays = 1,
        };
        check_int(kbevent_status_data(&s, &st), 0);
        check_streq(st, "{\"state\":\"heartbeat\",\"fw_version\":\"kegbot-core/0.2.0 fw18\",\"uptime_ms\":7510655,"
                        "\"events_dropped\":0,\"config\":{\"heartbeat_ms\":60000,\"pour_update_ms\":1000,"
                        "\"queue_capacity\":10000},\"meters\":[{\"meter_number\":0,\"total_ticks\":918234,"
                        "\"ml_per_tick\":0.45454545454545453},{\"meter_number\":1,\"total_ticks\":40112,"
                        "\"ml_per_tick\":0.185}],\"relays\":[{\"relay_number\":0}]}");
        meters[1].meter_number = 0;             /* not ascending */
        check_int(kbevent_status_data(&s, &(char *) { NULL }), -EINVAL);

        check_int(kbevent_command_result_data("cmd_1", "ok", NULL, &res), 0);
        check_streq(res, "{\"command\":\"cmd_1\",\"result\":\"ok\"}");
        char msg[600];
        memset(msg, 'm', sizeof msg - 1);
        msg[sizeof msg - 1] = 0;
        check_int(kbevent_command_result_data("cmd_1", "error", msg, &longmsg), 0);
        check(strlen(longmsg) == strlen("{\"command\":\"cmd_1\",\"result\":\"error\",\"message\":\"\"}") + 256);
        check_int(kbevent_command_result_data("cmd_1", "maybe", NULL, &(char *) { NULL }), -EINVAL);

        unsigned gm[] = { 0, 1 };
        KbGrantEnd g = {
                .meter_numbers = gm, .n_meter_numbers = 2, .reason = KBEVENT_END_MAX_IDLE, .grant_id = "g_5a1c90e2",
                .volume_ml = 19.0909, .duration_ms = 33437, .auth_device = "core.rfid", .auth_token = "0415ab23cd",
        };
        check_int(kbevent_grant_end_data(&g, &gend), 0);
        check_streq(gend, "{\"meter_numbers\":[0,1],\"reason\":\"max_idle\",\"grant_id\":\"g_5a1c90e2\","
                           "\"volume_ml\":19.091,\"duration_ms\":33437,\"auth_device\":\"core.rfid\","
                           "\"auth_token\":\"0415ab23cd\"}");
}

static void test_state_file(void) {
        KbMeterTotal m[] = { { 0, 918234 }, { 1, 40112 } };
        KbDeviceState s = { .device = "kegboard-1a2b3c4d", .boot_id = "9c1e5a7f3b2d4e60", .id_limit = 2049,
                            .meters = m, .n_meters = 2 };
        KbDeviceState back = {};
        _cleanup_(freep) char *text = NULL;
        size_t len;

        check_int(kbevent_state_format(&s, &text, &len), 0);
        check_streq(text, "{\"version\":1,\"device\":\"kegboard-1a2b3c4d\",\"boot_id\":\"9c1e5a7f3b2d4e60\","
                          "\"id_limit\":2049,\"events_dropped\":0,\"meters\":{\"0\":{\"total_ticks\":918234},"
                          "\"1\":{\"total_ticks\":40112}}}\n");
        check_int(kbevent_state_parse(text, len, &back), 0);
        check_streq(back.boot_id, "9c1e5a7f3b2d4e60");
        check_int(back.id_limit, 2049);
        check_int(back.n_meters, 2);
        check_int(back.meters[1].total_ticks, 40112);
        kbevent_state_done(&back);

        check_int(kbevent_state_parse("{}", 2, &back), -EBADMSG);
        check_int(kbevent_state_parse("{\"version\":1,\"device\":\"k\",\"boot_id\":\"XYZ\",\"id_limit\":1,"
                                      "\"events_dropped\":0,\"meters\":{}}", 77, &back), -EBADMSG);
        const char *badm = "{\"version\":1,\"device\":\"k\",\"boot_id\":\"9c1e5a7f3b2d4e60\",\"id_limit\":1,"
                           "\"events_dropped\":0,\"meters\":{\"01\":{\"total_ticks\":1}}}";
        check_int(kbevent_state_parse(badm, strlen(badm), &back), -EBADMSG);

        uint8_t bytes[8] = { 0x9c, 0x1e, 0x5a, 0x7f, 0x3b, 0x2d, 0x4e, 0x60 };
        char b[KBEVENT_BOOT_ID_STRING_MAX];
        kbevent_boot_id_format(bytes, b);
        check_streq(b, "9c1e5a7f3b2d4e60");
}

static void test_event_file(void) {
        KbEventClock c = { .kernel_boot_id = BOOT_A, .boottime_ns = 81234567890, .unix_ms = 1795693611000,
                           .clock_synced = true };
        _cleanup_(kbevent_freep) KbEvent *e = NULL, *back = NULL, *un = NULL;
        _cleanup_(freep) char *text = NULL, *text2 = NULL, *failure = NULL;
        char boot[KBEVENT_BOOT_ID_STRING_MAX];
        size_t len, len2;

        check_int(kbevent_new(&e, KBEVENT_POUR, &c,
                              "{\"meter_number\":0,\"pour_id\":\"" POUR_ID "\",\"volume_ml\":50.0,\"duration_ms\":1262,"
                              "\"ticks\":110,\"ml_per_tick\":0.45454545454545453}"), 0);
        e->id = 57;
        e->drink = strdup("{\"flow_id\":1,\"meter_name\":\"kegboard.flow0\"}");
        check_int(kbevent_file_format(e, "9c1e5a7f3b2d4e60", &text, &len), 0);
        check_streq(text, "{\"version\":1,\"boot_id\":\"9c1e5a7f3b2d4e60\",\"id\":57,\"type\":\"pour\","
                          "\"created\":{\"kernel_boot_id\":\"6d1f0c1e1c0a4b5e9b3a2f7e5d4c3b2a\",\"boottime_ns\":81234567890,"
                          "\"unix_ms\":1795693611000,\"clock_synced\":true},\"data\":{\"meter_number\":0,\"pour_id\":\""
                          POUR_ID "\",\"volume_ml\":50.0,\"duration_ms\":1262,\"ticks\":110,"
                          "\"ml_per_tick\":0.45454545454545453},\"drink\":{\"flow_id\":1,\"meter_name\":\"kegboard.flow0\"}}\n");
        /* Read back, the payload is byte for byte what was written. */
        check_int(kbevent_file_parse(text, len, true, &back, boot), 0);
        check_streq(boot, "9c1e5a7f3b2d4e60");
        check_int(back->id, 57);
        check_int(back->type, KBEVENT_POUR);
        check_streq(back->data, e->data);
        check_streq(back->drink, e->drink);
        check(sd_id128_equal(back->created.kernel_boot_id, BOOT_A));
        check_int(back->created.unix_ms, 1795693611000);
        check_int(kbevent_file_format(back, boot, &text2, &len2), 0);
        check_streq(text2, text);

        /* Unmapped pours have neither boot_id nor id; quarantined files carry their failure. */
        check_int(kbevent_failure_format(1795693611000000, 400, "bad \xff event", &failure), 0);
        check_streq(failure, "{\"time\":\"2026-11-26T11:46:51Z\",\"http_status\":400,\"reason\":\"bad \\\\xff event\"}");
        e->failure = TAKE_PTR(failure);
        e->id = 0;
        free(text);
        check_int(kbevent_file_format(e, NULL, &text, &len), 0);
        check(!strstr(text, "\"boot_id\""));
        check(strstr(text, "\"failure\":{\"time\""));
        check_int(kbevent_file_parse(text, len, true, &un, boot), -EBADMSG);
        check_int(kbevent_file_parse(text, len, false, &un, NULL), 0);
        check(un->failure);

        KbEvent *x = NULL;
        check_int(kbevent_file_parse("{\"version\":1}", 13, true, &x, boot), -EBADMSG);
        check_int(kbevent_file_parse("not json", 8, true, &x, boot), -EBADMSG);
        const char *status = "{\"version\":1,\"boot_id\":\"9c1e5a7f3b2d4e60\",\"id\":3,\"type\":\"status\","
                             "\"created\":{\"kernel_boot_id\":\"6d1f0c1e1c0a4b5e9b3a2f7e5d4c3b2a\",\"boottime_ns\":1,"
                             "\"unix_ms\":1,\"clock_synced\":false},\"data\":{}}";
        check_int(kbevent_file_parse(status, strlen(status), true, &x, boot), -EBADMSG);      /* never spooled */
}

static void test_age(void) {
        KbEventClock created = { .kernel_boot_id = BOOT_A, .boottime_ns = 5000000000, .unix_ms = 1000000,
                                 .clock_synced = true };
        KbEventClock now = { .kernel_boot_id = BOOT_A, .boottime_ns = 7500999999, .unix_ms = 9000000,
                             .clock_synced = true };
        bool unknown;

        /* Same kernel boot (the core may have restarted): the boot clock, whatever the wall clock did. */
        check_int(kbevent_age_ms(&created, &now, &unknown), 2500);
        check(!unknown);
        now.unix_ms = 1;                        /* stepped back */
        check_int(kbevent_age_ms(&created, &now, &unknown), 2500);
        now.unix_ms = created.unix_ms + 3600 * 1000 + 2500;    /* stepped 1 h ahead (scenario 32) */
        check_int(kbevent_age_ms(&created, &now, &unknown), 2500);
        now.clock_synced = false;                               /* and no longer synchronised */
        check_int(kbevent_age_ms(&created, &now, &unknown), 2500);
        check(!unknown);
        now.clock_synced = true;

        /* Another boot, both clocks synchronised: the wall clock, never negative. */
        now.kernel_boot_id = BOOT_B;
        now.unix_ms = 1250000;
        check_int(kbevent_age_ms(&created, &now, &unknown), 250000);
        check(!unknown);
        now.unix_ms = 999;
        check_int(kbevent_age_ms(&created, &now, &unknown), 0);

        /* Another boot without synchronisation: the time since this boot, a lower bound. */
        now.clock_synced = false;
        check_int(kbevent_age_ms(&created, &now, &unknown), 7500);
        check(unknown);
}

static void age_unknown_count(const KbEvent *e, uint64_t age_ms, void *userdata) {
        (*(unsigned *) userdata)++;
}

static void test_batch_builder(void) {
        KbEventClock c = { .kernel_boot_id = BOOT_A, .boottime_ns = 1000000000, .unix_ms = 1795693611000,
                           .clock_synced = true };
        KbEvent *q[40] = {}, *extra[2] = {};
        KbBatchContext ctx = { .device = "kegboard", .boot_id = "9c1e5a7f3b2d4e60", .sent_uptime_ms = 42,
                               .now = c, .max_events = 16 };
        KbBatch b = {};
        size_t start = 0;
        unsigned unknown = 0;

        ctx.now.boottime_ns += 1500000000;
        /* 40 events of mixed sizes: temperatures and fat pours with long tick series. */
        for (size_t i = 0; i < 40; i++) {
                _cleanup_(freep) char *data = NULL;
                if (i % 3 == 0) {
                        char series[2200] = "0:1";
                        for (int k = 1; k < 64; k++)
                                snprintf(series + strlen(series), sizeof series - strlen(series), " %d:%d", k * 100000, k);
                        KbPour p = { .meter_number = 1, .pour_id = POUR_ID, .volume_ml = 100, .duration_ms = 1,
                                     .ticks = 2017, .ml_per_tick = 0.1, .tick_series = series };
                        check_int(kbevent_pour_data(&p, &data), 0);
                } else
                        check_int(kbevent_temperature_data("thermo-1", (double) i, &data), 0);
                check_int(kbevent_new(&q[i], i % 3 == 0 ? KBEVENT_POUR : KBEVENT_TEMPERATURE, &c, data), 0);
                q[i]->id = 100 + i;
        }
        {
                _cleanup_(freep) char *u = NULL;
                check_int(kbevent_pour_update_data(0, POUR_ID, 5, 10, &u), 0);
                check_int(kbevent_new(&extra[0], KBEVENT_POUR_UPDATE, &ctx.now, u), 0);
        }

        /* Batches of at most 16 events and 16 000 bytes, contiguous from the head. */
        while (start < 40) {
                json_t *root, *events;
                check_int(kbevent_batch_build(&ctx, q + start, 40 - start, NULL, 0, NULL, NULL, &b), 0);
                check(b.n_queued >= 1 && b.n_queued <= 16);
                check(b.size <= KBEVENT_BATCH_MAX_BYTES);
                check_int(b.n_extra, 0);
                root = json_loads(b.body, 0, NULL);
                check(root);
                events = json_object_get(root, "events");
                check_int(json_array_size(events), b.n_queued);
                for (size_t i = 0; i < b.n_queued; i++) {
                        json_t *ev = json_array_get(events, i);
                        check_int(json_integer_value(json_object_get(ev, "id")), (json_int_t) (100 + start + i));
                        check_int(json_integer_value(json_object_get(ev, "age_ms")), 1500);
                        check_streq(json_string_value(json_object_get(ev, "time")), "2026-11-26T11:46:51Z");
                }
                check_int(json_integer_value(json_object_get(root, "v")), 1);
                check_int(json_integer_value(json_object_get(root, "sent_uptime_ms")), 42);
                /* Not full: the next event would not have fitted. */
                if (b.n_queued < 16 && start + b.n_queued < 40)
                        check(b.size + 2100 > KBEVENT_BATCH_MAX_BYTES);
                json_decref(root);
                start += b.n_queued;
                kbevent_batch_done(&b);
        }

        /* A pour_update only when everything queued fits. */
        extra[0]->id = 200;
        check_int(kbevent_batch_build(&ctx, q + 30, 10, NULL, 0, NULL, NULL, &b), 0);
        check_int(b.n_queued, 10);
        ctx.max_bytes = b.size;                 /* the queue fills it exactly */
        kbevent_batch_done(&b);
        check_int(kbevent_batch_build(&ctx, q + 30, 10, extra, 1, NULL, NULL, &b), 0);
        check_int(b.n_queued, 10);
        check_int(b.n_extra, 0);
        kbevent_batch_done(&b);
        ctx.max_bytes = 0;
        check_int(kbevent_batch_build(&ctx, q + 29, 11, extra, 1, NULL, NULL, &b), 0);
        check_int(b.n_queued, 11);
        check_int(b.n_extra, 1);
        kbevent_batch_done(&b);
        /* Not every queued event taken: no update, even if it would fit. */
        check_int(kbevent_batch_build(&ctx, q, 40, extra, 1, NULL, NULL, &b), 0);
        check_int(b.n_queued, 16);
        check_int(b.n_extra, 0);
        kbevent_batch_done(&b);
        check_int(kbevent_batch_build(&ctx, q + 38, 2, extra, 1, NULL, NULL, &b), 0);
        check_int(b.n_queued, 2);
        check_int(b.n_extra, 1);
        check(strstr(b.body, "\"type\":\"pour_update\",\"age_ms\":0,"));
        kbevent_batch_done(&b);
        ctx.max_events = 2;
        check_int(kbevent_batch_build(&ctx, q + 38, 2, extra, 1, NULL, NULL, &b), 0);
        check_int(b.n_extra, 0);                /* max_events reached */
        kbevent_batch_done(&b);
        ctx.max_events = 1;
        check_int(kbevent_batch_build(&ctx, q, 40, extra, 1, NULL, NULL, &b), 0);
        check_int(b.n_queued, 1);
        kbevent_batch_done(&b);
        /* Only updates (an empty queue, a healthy device). */
        ctx.max_events = 16;
        check_int(kbevent_batch_build(&ctx, NULL, 0, extra, 1, NULL, NULL, &b), 0);
        check_int(b.n_extra, 1);
        kbevent_batch_done(&b);
        check_int(kbevent_batch_build(&ctx, NULL, 0, NULL, 0, NULL, NULL, &b), -ENODATA);
        /* A single event goes whatever its size. */
        ctx.max_bytes = 100;
        check_int(kbevent_batch_build(&ctx, q, 40, NULL, 0, NULL, NULL, &b), 0);
        check_int(b.n_queued, 1);
        kbevent_batch_done(&b);
        /* Ids must ascend. */
        ctx.max_bytes = 0;
        q[1]->id = q[0]->id;
        check_int(kbevent_batch_build(&ctx, q, 2, NULL, 0, NULL, NULL, &b), -EINVAL);
        q[1]->id = 101;
        /* Events of an earlier boot without a synchronised clock: reported, no "time" when unsynced. */
        ctx.now.kernel_boot_id = BOOT_B;
        ctx.now.clock_synced = false;
        q[1]->created.clock_synced = false;
        check_int(kbevent_batch_build(&ctx, q, 2, NULL, 0, age_unknown_count, &unknown, &b), 0);
        check_int(unknown, 2);
        check(strstr(b.body, "\"id\":101,\"type\":\"temperature\",\"age_ms\":2500,\"data\""));
        kbevent_batch_done(&b);

        for (size_t i = 0; i < 40; i++)
                kbevent_free(q[i]);
        kbevent_free(extra[0]);
}

static void test_classify(void) {
        check_int(kbevent_classify(200, "", 0), KBEVENT_ACCEPTED);
        check_int(kbevent_classify(200, "{\"commands\":[]}", 15), KBEVENT_ACCEPTED);
        check_int(kbevent_classify(204, " \n", 2), KBEVENT_ACCEPTED);
        check_int(kbevent_classify(200, "<html>portal</html>", 19), KBEVENT_TRANSIENT);
        check_int(kbevent_classify(200, "[1]", 3), KBEVENT_TRANSIENT);
        check_int(kbevent_classify(401, "", 0), KBEVENT_PAIRING);
        check_int(kbevent_classify(413, "", 0), KBEVENT_TOO_LARGE);
        check_int(kbevent_classify(400, "", 0), KBEVENT_REJECTED);
        check_int(kbevent_classify(409, "", 0), KBEVENT_REJECTED);
        check_int(kbevent_classify(422, "", 0), KBEVENT_REJECTED);
        check_int(kbevent_classify(418, "", 0), KBEVENT_REJECTED);
        for (long s = 300; s < 400; s += 7)
                check_int(kbevent_classify(s, "", 0), KBEVENT_ENDPOINT_ERROR);
        check_int(kbevent_classify(403, "", 0), KBEVENT_ENDPOINT_ERROR);
        check_int(kbevent_classify(404, "", 0), KBEVENT_ENDPOINT_ERROR);
        check_int(kbevent_classify(405, "", 0), KBEVENT_ENDPOINT_ERROR);
        check_int(kbevent_classify(410, "", 0), KBEVENT_ENDPOINT_ERROR);
        check_int(kbevent_classify(415, "", 0), KBEVENT_ENDPOINT_ERROR);
        check_int(kbevent_classify(408, "", 0), KBEVENT_TRANSIENT);
        check_int(kbevent_classify(429, "", 0), KBEVENT_TRANSIENT);
        check_int(kbevent_classify(503, "{\"error\":\"setup_required\"}", 26), KBEVENT_TRANSIENT);
        check_int(kbevent_classify(0, NULL, 0), KBEVENT_TRANSIENT);
}

static void test_pairing(void) {
        KbPairingState st;
        char *token;
        const char *allowed = "{\"pairing\":{\"state\":\"allowed\",\"token\":\"kbe_4f1d\"}}";

        check_int(kbevent_parse_pairing("{\"pairing\":{\"state\":\"pending\"}}", 32, &st, &token), 0);
        check_int(st, KBEVENT_PAIRING_PENDING);
        check_int(kbevent_parse_pairing(allowed, strlen(allowed), &st, &token), 0);
        check_int(st, KBEVENT_PAIRING_ALLOWED);
        check_streq(token, "kbe_4f1d");
        free(token);
        const char *denied = "{\"pairing\":{\"state\":\"denied\"}}";
        check_int(kbevent_parse_pairing(denied, strlen(denied), &st, &token), 0);
        check_int(st, KBEVENT_PAIRING_DENIED);
        /* Unclear answers are pending. */
        const char *pending[] = { "", "not json", "{}", "{\"pairing\":1}", "{\"pairing\":{\"state\":\"weird\"}}",
                                  "{\"pairing\":{\"state\":\"allowed\"}}",
                                  "{\"pairing\":{\"state\":\"allowed\",\"token\":\"has space\"}}" };
        for (size_t i = 0; i < ELEMENTSOF(pending); i++) {
                check_int(kbevent_parse_pairing(pending[i], strlen(pending[i]), &st, &token), 0);
                check_int(st, KBEVENT_PAIRING_PENDING);
                check(!token);
        }
}

static void test_commands(void) {
        KbCommandList l;
        const char *body = "{\"commands\":[{\"id\":\"c1\",\"type\":\"authorize\",\"data\":{}},7,{\"type\":\"deny\"},"
                           "{\"id\":\"c2\"},{\"id\":\"c3\",\"type\":5,\"data\":[1]}],\"extra\":true}";

        check_int(kbevent_parse_commands(body, strlen(body), &l), 0);
        check_int(l.n, 3);
        check_int(l.n_skipped, 2);
        check_streq(l.commands[0].id, "c1");
        check_streq(l.commands[0].type, "authorize");
        check(json_is_object(l.commands[0].data));
        check(!l.commands[1].type);
        check(!l.commands[1].data);
        check(!l.commands[2].type);
        check(json_is_array(l.commands[2].data));
        kbevent_command_list_done(&l);

        check_int(kbevent_parse_commands("", 0, &l), 0);
        check_int(l.n, 0);
        check_int(kbevent_parse_commands("{\"commands\":null}", 17, &l), 0);
        check_int(l.n, 0);
        check_int(kbevent_parse_commands("{\"commands\":{}}", 15, &l), 0);
        check(l.not_array);
        check_int(kbevent_parse_commands("[]", 2, &l), -EBADMSG);
}

static void test_authorize(void) {
        static const struct { const char *data, *message; } bad[] = {
                { "{}", "bad grant_id" },
                { "{\"grant_id\":\"\",\"meter_numbers\":[0]}", "bad grant_id" },
                { "{\"grant_id\":\"g\"}", "bad meter_numbers" },
                { "{\"grant_id\":\"g\",\"meter_numbers\":[]}", "bad meter_numbers" },
                { "{\"grant_id\":\"g\",\"meter_numbers\":[256]}", "bad meter_numbers" },
                { "{\"grant_id\":\"g\",\"meter_numbers\":[1.5]}", "bad meter_numbers" },
                { "{\"grant_id\":\"g\",\"meter_numbers\":[0],\"relay_numbers\":[-1]}", "bad relay_numbers" },
                { "{\"grant_id\":\"g\",\"meter_numbers\":[0],\"relay_numbers\":null}", "bad relay_numbers" },
                { "{\"grant_id\":\"g\",\"meter_numbers\":[0],\"max_volume_ml\":-1}", "bad limits" },
                { "{\"grant_id\":\"g\",\"meter_numbers\":[0],\"max_idle_ms\":1.5}", "bad limits" },
                { "{\"grant_id\":\"g\",\"meter_numbers\":[0],\"token\":5}", "bad echo" },
        };
        KbAuthorize a;
        const char *msg;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_t *d = json_loads(bad[i].data, 0, NULL);
                check_int(kbevent_parse_authorize(d, &a, &msg), -EINVAL);
                check_streq(msg, bad[i].message);
                json_decref(d);
        }
        json_t *d = json_loads("{\"grant_id\":\"g_5a1c90e2\",\"meter_numbers\":[1,0,1],\"relay_numbers\":[0],"
                               "\"max_idle_ms\":30000,\"max_volume_ml\":100,\"auth_device\":\"core.rfid\","
                               "\"token\":\"0415ab23cd\"}", 0, NULL);
        check_int(kbevent_parse_authorize(d, &a, &msg), 0);
        check_streq(a.grant_id, "g_5a1c90e2");
        check_int(a.n_meters, 2);
        check_int(a.meters[0], 0);
        check_int(a.meters[1], 1);
        check_int(a.n_relays, 1);
        check_int(a.max_idle_ms, 30000);
        check(a.max_volume_ml == 100);
        check_int(a.max_duration_ms, 0);
        check_streq(a.token, "0415ab23cd");
        kbevent_authorize_done(&a);
        json_decref(d);

        bool all;
        char **ids;
        check_int(kbevent_parse_deauthorize(NULL, &all, &ids, &msg), 0);
        check(all);
        d = json_loads("{}", 0, NULL);
        check_int(kbevent_parse_deauthorize(d, &all, &ids, &msg), 0);
        check(all);
        json_decref(d);
        d = json_loads("{\"grant_ids\":[\"g1\",\"g2\"]}", 0, NULL);
        check_int(kbevent_parse_deauthorize(d, &all, &ids, &msg), 0);
        check(!all);
        check_streq(ids[1], "g2");
        check(!ids[2]);
        strv_free(ids);
        json_decref(d);
        const char *badids[] = { "{\"grant_ids\":null}", "{\"grant_ids\":[]}", "{\"grant_ids\":\"g1\"}",
                                 "{\"grant_ids\":[1]}", "[1]" };
        for (size_t i = 0; i < ELEMENTSOF(badids); i++) {
                d = json_loads(badids[i], JSON_DECODE_ANY, NULL);
                check_int(kbevent_parse_deauthorize(d, &all, &ids, &msg), -EINVAL);
                check_streq(msg, "bad grant_ids");
                json_decref(d);
        }
}

int main(void) {
        test_run(test_names);
        test_run(test_payloads);
        test_run(test_state_file);
        test_run(test_event_file);
        test_run(test_age);
        test_run(test_batch_builder);
        test_run(test_classify);
        test_run(test_pairing);
        test_run(test_commands);
        test_run(test_authorize);
        return test_result();
}
