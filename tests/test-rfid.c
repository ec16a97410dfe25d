/* Unit tests of rfid_daemon's pure parts (rfid-readers.md section 14.2): Phidget reports, output
 * reports, descriptor walk and firmware rules; the presence module; the ID-12 frame parser; the
 * keyboard-wedge decoder; the discovery candidate rules and the token rule. */
#include <linux/input-event-codes.h>

#include "discovery.h"
#include "id12.h"
#include "keyboard.h"
#include "phidget.h"
#include "presence.h"
#include "test-util.h"

#define MS (USEC_PER_MSEC)

/* ---- Phidget ---- */

static void check_report(PhidgetModel model, const char *hex, PhidgetReportKind kind, const char *tag) {
        uint8_t buf[PHIDGET_REPORT_MAX];
        size_t n = 0;
        PhidgetReport r;

        for (const char *p = hex; *p; ) {
                unsigned v;
                int used;
                if (sscanf(p, " %2x%n", &v, &used) != 1)
                        break;
                buf[n++] = (uint8_t) v;
                p += used;
        }
        phidget_report_parse(model, buf, n, &r);
        check_int(r.kind, kind);
        if (tag)
                check_streq(r.tag, tag);
}

static void test_phidget_reports(void) {
        PhidgetReport r;
        uint8_t big[64] = { 0x00, 0x04, 0x15, 0xab, 0x23, 0xcd };

        /* 1: v2 */
        check_report(PHIDGET_MODEL_V2, "00 04 15 ab 23 cd 00 00", PHIDGET_REPORT_TAG, "0415ab23cd");
        check_report(PHIDGET_MODEL_V2, "00 00 00 00 00 00 00 00", PHIDGET_REPORT_IGNORED, NULL);
        check_report(PHIDGET_MODEL_V2, "01 0c 00 00 00 00 00 00", PHIDGET_REPORT_ECHO, NULL);
        phidget_report_parse(PHIDGET_MODEL_V2, (const uint8_t *) "\x01\x0c\0\0\0\0\0\0", 8, &r);
        check_int(r.state, 0x0c);
        check_report(PHIDGET_MODEL_V2, "07 04 15 ab 23 cd 00 00", PHIDGET_REPORT_UNKNOWN_TYPE, NULL);
        phidget_report_parse(PHIDGET_MODEL_V2, (const uint8_t *) "\x07\x04\x15\xab\x23\xcd\0\0", 8, &r);
        check_int(r.type, 0x07);
        check_report(PHIDGET_MODEL_V2, "00 04 15 ab", PHIDGET_REPORT_SHORT, NULL);
        check_report(PHIDGET_MODEL_V2, "00 04 15 ab 23", PHIDGET_REPORT_SHORT, NULL);
        check_report(PHIDGET_MODEL_V2, "00", PHIDGET_REPORT_SHORT, NULL);
        check_report(PHIDGET_MODEL_V2, "00 04 15 ab 23 cd", PHIDGET_REPORT_TAG, "0415ab23cd");
        phidget_report_parse(PHIDGET_MODEL_V2, big, sizeof(big), &r);
        check_int(r.kind, PHIDGET_REPORT_TAG);
        check_streq(r.tag, "0415ab23cd");

        /* 2: v1 has no packet types */
        check_report(PHIDGET_MODEL_V1, "00 04 15 ab 23 cd 00 00", PHIDGET_REPORT_TAG, "0415ab23cd");
        check_report(PHIDGET_MODEL_V1, "01 08 00 00 00 00 00 00", PHIDGET_REPORT_TAG, "0800000000");
        check_report(PHIDGET_MODEL_V1, "5a 00 00 00 00 00", PHIDGET_REPORT_IGNORED, NULL);
        check_report(PHIDGET_MODEL_V1, "07 01 02 03 04 05 00 00", PHIDGET_REPORT_TAG, "0102030405");

        PhidgetModel m;
        check(phidget_model_from_ids(0x06c2, 0x0031, &m) == 0 && m == PHIDGET_MODEL_V2);
        check(phidget_model_from_ids(0x06c2, 0x0030, &m) == 0 && m == PHIDGET_MODEL_V1);
        check(phidget_model_from_ids(0x06c2, 0x0034, &m) == -EOPNOTSUPP);
        check(phidget_model_from_ids(0x06c2, 0x0035, &m) == -ENODEV);
        check(phidget_model_from_ids(0xffff, 0x0031, &m) == -ENODEV);
}

static void test_phidget_output(void) {
        uint8_t buf[1 + PHIDGET_REPORT_MAX];

        /* 3 */
        check_int(phidget_wanted_state(false, false, false), 0x08);
        check_int(phidget_wanted_state(true, false, false), 0x0c);
        check_int(phidget_wanted_state(true, true, false), 0x0e);
        check_int(phidget_wanted_state(false, true, false), 0x08);
        check_int(phidget_wanted_state(true, true, true), 0x00);

        memset(buf, 0xee, sizeof(buf));
        check_int(phidget_output_report(0x0c, 8, buf), 9);
        check(memcmp(buf, "\x00\x0c\x00\x00\x00\x00\x00\x00\x00", 9) == 0);
        check_int(buf[9], 0xee);
        memset(buf, 0xee, sizeof(buf));
        check_int(phidget_output_report(0x08, 16, buf), 17);
        check_int(buf[0], 0);
        check_int(buf[1], 0x08);
        for (unsigned i = 2; i < 17; i++)
                check_int(buf[i], 0);
        check_int(phidget_output_report(0x08, 0, buf), 0);               /* no Output item: no writes */
        check_int(phidget_output_report(0x08, PHIDGET_REPORT_MAX + 1, buf), 0);

        check_int(phidget_attach_action(PHIDGET_MODEL_V1, 103), PHIDGET_ATTACH_ZERO_REPORT);
        check_int(phidget_attach_action(PHIDGET_MODEL_V1, 104), PHIDGET_ATTACH_NOTHING);
        check_int(phidget_attach_action(PHIDGET_MODEL_V1, 0), PHIDGET_ATTACH_NOTHING);
        check_int(phidget_attach_action(PHIDGET_MODEL_V2, 200), PHIDGET_ATTACH_STATE);
        check_int(phidget_attach_action(PHIDGET_MODEL_V2, 0), PHIDGET_ATTACH_STATE);
        check(!phidget_echo_trusted(PHIDGET_MODEL_V2, 200));
        check(phidget_echo_trusted(PHIDGET_MODEL_V2, 201));
        check(phidget_echo_trusted(PHIDGET_MODEL_V2, 0));
        check(!phidget_echo_trusted(PHIDGET_MODEL_V1, 0));

        /* 5 */
        check_int(phidget_firmware_from_bcd(0x0201), 201);
        check_int(phidget_firmware_from_bcd(0x0200), 200);
        check_int(phidget_firmware_from_bcd(0x0104), 104);
        check_int(phidget_firmware_from_bcd(0x0103), 103);
        check_int(phidget_firmware_from_bcd(0x0005), 500);

        uint16_t v, p;
        check(phidget_parse_hid_id("0003:000006C2:00000031", &v, &p) == 0 && v == 0x06c2 && p == 0x0031);
        check(phidget_parse_hid_id("0005:000006C2:00000031", &v, &p) == -EINVAL);      /* Bluetooth */
        check(phidget_parse_hid_id("0003:000006C2:00000031x", &v, &p) == -EINVAL);
        check(phidget_parse_hid_id("0003:000106C2:00000031", &v, &p) == -EINVAL);
        check(phidget_parse_hid_id("0003:06C2", &v, &p) == -EINVAL);
        check(phidget_parse_hid_id("", &v, &p) == -EINVAL);
        check(phidget_parse_hid_id(NULL, &v, &p) == -EINVAL);
}

static const uint8_t stand_in_descriptor[] = {
        0x06, 0x00, 0xff, 0x09, 0x01, 0xa1, 0x01, 0x15, 0x00, 0x26, 0xff, 0x00, 0x75, 0x08,
        0x95, 0x08, 0x09, 0x01, 0x81, 0x02, 0x95, 0x08, 0x09, 0x01, 0x91, 0x02, 0xc0,
};

static void test_phidget_descriptor(void) {
        size_t in = 99, out = 99;

        /* 4 */
        check(phidget_descriptor_walk(stand_in_descriptor, sizeof(stand_in_descriptor), &in, &out) == 0);
        check_int(in, 8);
        check_int(out, 8);

        /* size 1 x count 12 = 12 bits -> 2 bytes */
        static const uint8_t bits12[] = { 0x75, 0x01, 0x95, 0x0c, 0x91, 0x02 };
        check(phidget_descriptor_walk(bits12, sizeof(bits12), &in, &out) == 0);
        check_int(in, 0);
        check_int(out, 2);

        /* A long item is skipped whole (its data would otherwise read as items). */
        static const uint8_t long_item[] = { 0xfe, 0x02, 0x10, 0x85, 0x01, 0x75, 0x08, 0x95, 0x04, 0x91, 0x02 };
        check(phidget_descriptor_walk(long_item, sizeof(long_item), &in, &out) == 0);
        check_int(out, 4);

        /* Push/Pop restore size and count. */
        static const uint8_t push_pop[] = { 0x75, 0x08, 0x95, 0x08, 0xa4, 0x75, 0x01, 0x95, 0x01, 0x81, 0x02,
                                            0xb4, 0x91, 0x02 };
        check(phidget_descriptor_walk(push_pop, sizeof(push_pop), &in, &out) == 0);
        check_int(in, 1);
        check_int(out, 8);

        /* No Output item: 0 (no writes at all). */
        static const uint8_t no_output[] = { 0x75, 0x08, 0x95, 0x08, 0x81, 0x02 };
        check(phidget_descriptor_walk(no_output, sizeof(no_output), &in, &out) == 0);
        check_int(out, 0);

        static const uint8_t report_id[] = { 0x85, 0x01, 0x75, 0x08, 0x95, 0x08, 0x91, 0x02 };
        check(phidget_descriptor_walk(report_id, sizeof(report_id), &in, &out) == -EBADMSG);
        static const uint8_t truncated[] = { 0x75, 0x08, 0x96, 0x08 };
        check(phidget_descriptor_walk(truncated, sizeof(truncated), &in, &out) == -EBADMSG);
        static const uint8_t truncated_long[] = { 0xfe, 0x05, 0x10, 0x00 };
        check(phidget_descriptor_walk(truncated_long, sizeof(truncated_long), &in, &out) == -EBADMSG);
        static const uint8_t five_push[] = { 0xa4, 0xa4, 0xa4, 0xa4, 0xa4 };
        check(phidget_descriptor_walk(five_push, sizeof(five_push), &in, &out) == -EBADMSG);
        static const uint8_t four_push[] = { 0xa4, 0xa4, 0xa4, 0xa4, 0xb4, 0xb4, 0xb4, 0xb4 };
        check(phidget_descriptor_walk(four_push, sizeof(four_push), &in, &out) == 0);
        static const uint8_t empty_pop[] = { 0xb4 };
        check(phidget_descriptor_walk(empty_pop, sizeof(empty_pop), &in, &out) == -EBADMSG);
        static const uint8_t out65[] = { 0x75, 0x08, 0x95, 0x41, 0x91, 0x02 };
        check(phidget_descriptor_walk(out65, sizeof(out65), &in, &out) == -EBADMSG);
        static const uint8_t out64[] = { 0x75, 0x08, 0x95, 0x40, 0x91, 0x02 };
        check(phidget_descriptor_walk(out64, sizeof(out64), &in, &out) == 0);
        check_int(out, 64);
        /* Huge sizes and counts neither wrap nor pass. */
        static const uint8_t huge[] = { 0x77, 0xff, 0xff, 0xff, 0xff, 0x97, 0xff, 0xff, 0xff, 0xff, 0x91, 0x02 };
        check(phidget_descriptor_walk(huge, sizeof(huge), &in, &out) == -EBADMSG);
        check(phidget_descriptor_walk(NULL, 0, &in, &out) == 0);
        check_int(out, 0);
}

/* ---- presence ---- */

static void test_presence(void) {
        Presence p;
        PresenceEvent ev[2];
        uint64_t d;

        /* 6: reads every 50 ms for 1 s, T = 200 */
        presence_init(&p, 200 * MS);
        check_int(presence_read(&p, "0415ab23cd", 0, ev), 1);
        check_int(ev[0].change, PRESENCE_ADDED);
        check_streq(ev[0].token, "0415ab23cd");
        for (uint64_t t = 50 * MS; t <= 1000 * MS; t += 50 * MS) {
                check_int(presence_expire(&p, t, ev), 0);
                check_int(presence_read(&p, "0415ab23cd", t, ev), 0);
        }
        check(presence_deadline(&p, &d) && d == 1200 * MS);
        check_int(presence_expire(&p, 1199 * MS, ev), 0);
        check_int(presence_expire(&p, 1200 * MS, ev), 1);
        check_int(ev[0].change, PRESENCE_REMOVED);
        check_streq(ev[0].token, "0415ab23cd");
        check(!presence_deadline(&p, &d));
        check(!presence_active(&p));

        /* 7: a gap of 150 ms keeps it, 250 ms ends it */
        presence_init(&p, 200 * MS);
        check_int(presence_read(&p, "aa", 0, ev), 1);
        check_int(presence_expire(&p, 150 * MS, ev), 0);
        check_int(presence_read(&p, "aa", 150 * MS, ev), 0);
        check_int(presence_expire(&p, 350 * MS, ev), 1);
        check_int(ev[0].change, PRESENCE_REMOVED);
        check_int(presence_read(&p, "aa", 400 * MS, ev), 1);
        check_int(ev[0].change, PRESENCE_ADDED);

        /* 8: another card: removed X, then added Y */
        check_int(presence_read(&p, "bb", 450 * MS, ev), 2);
        check_int(ev[0].change, PRESENCE_REMOVED);
        check_streq(ev[0].token, "aa");
        check_int(ev[1].change, PRESENCE_ADDED);
        check_streq(ev[1].token, "bb");

        /* 9: T = 2000: reads at 0, 1500, 3000 -> one added, removed at 5000 */
        presence_init(&p, 2000 * MS);
        check_int(presence_read(&p, "0004567890", 0, ev), 1);
        check_int(presence_read(&p, "0004567890", 1500 * MS, ev), 0);
        check_int(presence_expire(&p, 2500 * MS, ev), 0);
        check_int(presence_read(&p, "0004567890", 3000 * MS, ev), 0);
        check_int(presence_expire(&p, 4999 * MS, ev), 0);
        check_int(presence_expire(&p, 5000 * MS, ev), 1);

        /* 10: close */
        check_int(presence_close(&p, ev), 0);
        check_int(presence_read(&p, "cc", 0, ev), 1);
        check_int(presence_close(&p, ev), 1);
        check_int(ev[0].change, PRESENCE_REMOVED);
        check_streq(ev[0].token, "cc");
        check_int(presence_close(&p, ev), 0);

        /* Without a deadline (phidget22): only a close ends it. */
        presence_init(&p, 0);
        check_int(presence_read(&p, "dd", 0, ev), 1);
        check(!presence_deadline(&p, &d));
        check_int(presence_expire(&p, UINT64_MAX, ev), 0);

        /* Unusable tokens are no reads. */
        check_int(presence_read(&p, "", 0, ev), 0);
        check_int(presence_read(&p, "ABC", 0, ev), 0);
        check_streq(p.token, "dd");
}

static void test_token_rule(void) {
        char max[RFID_TOKEN_MAX + 2];

        check(rfid_token_is_valid("0415ab23cd"));
        check(rfid_token_is_valid("z"));
        check(!rfid_token_is_valid(""));
        check(!rfid_token_is_valid(NULL));
        check(!rfid_token_is_valid("0415AB23CD"));
        check(!rfid_token_is_valid("04-15"));
        check(!rfid_token_is_valid("a b"));
        check(!rfid_token_is_valid("ü"));
        memset(max, 'a', sizeof(max));
        max[RFID_TOKEN_MAX] = '\0';
        check(rfid_token_is_valid(max));
        max[RFID_TOKEN_MAX] = 'a';
        max[RFID_TOKEN_MAX + 1] = '\0';
        check(!rfid_token_is_valid(max));
}

/* ---- ID-12 ---- */

typedef struct Collected {
        Id12Event ev[32];
        unsigned n;
        unsigned reads, noise;
} Collected;

static void collect(const Id12Event *ev, void *userdata) {
        Collected *c = userdata;

        if (ev->result == ID12_NOISE) {
                c->noise++;
                return;
        }
        if (c->n < ELEMENTSOF(c->ev))
                c->ev[c->n++] = *ev;
        if (ev->result == ID12_READ)
                c->reads++;
}

#define FRAME1 "\x02" "0415AB23CD54" "\r\n\x03"
#define FRAME2 "\x02" "6200E3A1C5E5" "\r\n\x03"

static void feed(Id12Parser *p, const char *s, size_t n, uint64_t now) {
        id12_parser_feed(p, (const uint8_t *) s, n, now);
}

static void test_id12(void) {
        Id12Parser p;
        Collected c = {};

        /* 11 */
        id12_parser_init(&p, collect, &c);
        feed(&p, FRAME1, 16, 0);
        feed(&p, FRAME2, 16, 0);
        check_int(c.n, 2);
        check_int(c.ev[0].result, ID12_READ);
        check_streq(c.ev[0].token, "0415ab23cd");
        check_streq(c.ev[1].token, "6200e3a1c5");
        c = (Collected) {};
        feed(&p, "\x02" "0415AB23CD55" "\r\n\x03", 16, 0);
        check_int(c.n, 1);
        check_int(c.ev[0].result, ID12_BAD_CHECKSUM);
        check_streq(c.ev[0].card, "0415AB23CD");
        check_int(c.ev[0].checksum, 0x55);
        check_int(c.ev[0].expected, 0x54);
        check_streq(id12_result_to_string(ID12_BAD_CHECKSUM), "bad_checksum");

        /* 12: one byte at a time, and 3 + 13 */
        c = (Collected) {};
        for (unsigned i = 0; i < 16; i++)
                feed(&p, FRAME1 + i, 1, i * MS);
        check_int(c.reads, 1);
        check_int(c.n, 1);
        c = (Collected) {};
        feed(&p, FRAME1, 3, 0);
        feed(&p, FRAME1 + 3, 13, 1 * MS);
        check_int(c.reads, 1);
        check_int(c.n, 1);

        /* 13: two frames in a chunk, noise before, between, after */
        c = (Collected) {};
        feed(&p, FRAME1 FRAME2, 32, 0);
        check_int(c.reads, 2);
        c = (Collected) {};
        feed(&p, "xx" FRAME1 "\r\n\xffz" FRAME2 "\n", 2 + 16 + 4 + 16 + 1, 0);
        check_int(c.reads, 2);
        check_int(c.n, 2);
        check_int(c.noise, 7);

        /* 14: without CR LF; lower case */
        c = (Collected) {};
        feed(&p, "\x02" "0415AB23CD54" "\x03", 14, 0);
        feed(&p, "\x02" "0415ab23cd54" "\r\n\x03", 16, 0);
        check_int(c.reads, 2);
        check_streq(c.ev[0].token, "0415ab23cd");
        check_streq(c.ev[1].token, "0415ab23cd");

        /* 15: STX after 5 digits, then a whole frame */
        c = (Collected) {};
        feed(&p, "\x02" "0415A" FRAME1, 6 + 16, 0);
        check_int(c.n, 2);
        check_int(c.ev[0].result, ID12_TRUNCATED);
        check_int(c.ev[1].result, ID12_READ);
        /* a G among the digits, then the next frame reads */
        c = (Collected) {};
        feed(&p, "\x02" "0415G" FRAME2, 6 + 16, 0);
        check_int(c.n, 2);
        check_int(c.ev[0].result, ID12_BAD_CHARACTER);
        check_int(c.ev[0].byte, 'G');
        check_int(c.ev[0].offset, 5);
        check_streq(c.ev[1].token, "6200e3a1c5");
        /* X instead of ETX; three CR/LF bytes */
        c = (Collected) {};
        feed(&p, "\x02" "0415AB23CD54" "\r\nX", 16, 0);
        feed(&p, "\x02" "0415AB23CD54" "\r\n\r\x03", 17, 0);
        check_int(c.reads, 0);
        check_int(c.n, 2);
        check_int(c.ev[0].result, ID12_BAD_TRAILER);
        check_int(c.ev[0].byte, 'X');
        check_int(c.ev[1].result, ID12_BAD_TRAILER);
        /* STX in the trailer: truncated, and a new frame */
        c = (Collected) {};
        feed(&p, "\x02" "0415AB23CD54" "\r" FRAME1, 14 + 16, 0);
        check_int(c.n, 2);
        check_int(c.ev[0].result, ID12_TRUNCATED);
        check_int(c.reads, 1);

        /* 16: 8 bytes, the other 8 after 300 ms -> stale; after 50 ms -> read */
        c = (Collected) {};
        feed(&p, FRAME1, 8, 1000 * MS);
        feed(&p, FRAME1 + 8, 8, 1300 * MS);
        check_int(c.reads, 0);
        check_int(c.n, 1);
        check_int(c.ev[0].result, ID12_STALE);
        c = (Collected) {};
        feed(&p, FRAME1, 8, 2000 * MS);
        feed(&p, FRAME1 + 8, 8, 2050 * MS);
        check_int(c.reads, 1);
        check_int(c.n, 1);

        /* Any input at all: no crash, never more than one frame of state. */
        c = (Collected) {};
        for (unsigned b = 0; b < 256; b++) {
                uint8_t x = (uint8_t) b;
                id12_parser_feed(&p, &x, 1, 5000 * MS);
        }
        feed(&p, FRAME1, 16, 5001 * MS);
        check_int(c.reads, 1);
}

/* ---- keyboard ---- */

typedef struct Typed {
        KeyboardDecoder k;
        KeyboardEvent ev[16];
        unsigned n;
        uint64_t now;
} Typed;

static void record(Typed *t, uint16_t type, uint16_t code, int32_t value) {
        KeyboardEvent out[2];
        size_t n = keyboard_decoder_feed(&t->k, type, code, value, t->now, out);

        for (size_t i = 0; i < n && t->n < ELEMENTSOF(t->ev); i++)
                t->ev[t->n++] = out[i];
}

static void key(Typed *t, uint16_t code) {
        record(t, EV_MSC, MSC_SCAN, 0x70000 + code);
        record(t, EV_KEY, code, 1);
        record(t, EV_SYN, SYN_REPORT, 0);
        record(t, EV_KEY, code, 0);
        record(t, EV_SYN, SYN_REPORT, 0);
        t->now += 5 * MS;
}

static void shifted(Typed *t, uint16_t code) {
        record(t, EV_KEY, KEY_LEFTSHIFT, 1);
        record(t, EV_SYN, SYN_REPORT, 0);
        key(t, code);
        record(t, EV_KEY, KEY_LEFTSHIFT, 0);
        record(t, EV_SYN, SYN_REPORT, 0);
}

static const uint16_t digit_key[10] = { KEY_0, KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9 };
static const uint16_t kp_key[10] = { KEY_KP0, KEY_KP1, KEY_KP2, KEY_KP3, KEY_KP4, KEY_KP5, KEY_KP6, KEY_KP7,
                                     KEY_KP8, KEY_KP9 };

static void type_digits(Typed *t, const char *s, const uint16_t *keys) {
        for (; *s; s++)
                key(t, keys[*s - '0']);
}

static void typed_init(Typed *t) {
        *t = (Typed) { .now = 1000 * MS };
        keyboard_decoder_init(&t->k);
}

static void test_keyboard(void) {
        Typed t;

        /* 17 */
        typed_init(&t);
        type_digits(&t, "0004567890", digit_key);
        key(&t, KEY_ENTER);
        check_int(t.n, 1);
        check_int(t.ev[0].result, KEYBOARD_READ);
        check_streq(t.ev[0].token, "0004567890");
        typed_init(&t);
        type_digits(&t, "0363537357", kp_key);
        key(&t, KEY_KPENTER);
        check_int(t.n, 1);
        check_streq(t.ev[0].token, "0363537357");

        /* 18: Shift + letters -> lower case; Shift + digit -> shifted_digit; Caps/Num Lock ignored */
        typed_init(&t);
        type_digits(&t, "0415", digit_key);
        shifted(&t, KEY_A);
        shifted(&t, KEY_B);
        key(&t, KEY_CAPSLOCK);
        type_digits(&t, "23", digit_key);
        key(&t, KEY_NUMLOCK);
        shifted(&t, KEY_C);
        record(&t, EV_KEY, KEY_RIGHTSHIFT, 1);
        key(&t, KEY_D);
        record(&t, EV_KEY, KEY_RIGHTSHIFT, 0);
        key(&t, KEY_ENTER);
        check_int(t.n, 1);
        check_streq(t.ev[0].token, "0415ab23cd");
        typed_init(&t);
        shifted(&t, KEY_1);
        type_digits(&t, "23", digit_key);
        key(&t, KEY_ENTER);
        check_int(t.n, 1);
        check_int(t.ev[0].result, KEYBOARD_SHIFTED_DIGIT);
        check_int(t.ev[0].code, KEY_1);
        /* Keypad digits with Shift are fine. */
        typed_init(&t);
        record(&t, EV_KEY, KEY_LEFTSHIFT, 1);
        key(&t, KEY_KP1);
        record(&t, EV_KEY, KEY_LEFTSHIFT, 0);
        key(&t, KEY_ENTER);
        check_streq(t.ev[0].token, "1");

        /* 19: autorepeat and releases add nothing; EV_MSC between keys ignored */
        typed_init(&t);
        key(&t, KEY_1);
        record(&t, EV_KEY, KEY_2, 1);
        record(&t, EV_KEY, KEY_2, 2);
        record(&t, EV_KEY, KEY_2, 2);
        record(&t, EV_MSC, MSC_SCAN, 0x7001f);
        record(&t, EV_KEY, KEY_2, 0);
        key(&t, KEY_ENTER);
        check_int(t.n, 1);
        check_streq(t.ev[0].token, "12");

        /* 20: Enter alone; 65 characters; Space */
        typed_init(&t);
        key(&t, KEY_ENTER);
        check_int(t.n, 1);
        check_int(t.ev[0].result, KEYBOARD_EMPTY_LINE);
        typed_init(&t);
        for (unsigned i = 0; i < 64; i++)
                key(&t, KEY_7);
        key(&t, KEY_ENTER);
        check_int(t.ev[0].result, KEYBOARD_READ);
        check_int(strlen(t.ev[0].token), 64);
        typed_init(&t);
        for (unsigned i = 0; i < 65; i++)
                key(&t, KEY_7);
        key(&t, KEY_ENTER);
        check_int(t.n, 1);
        check_int(t.ev[0].result, KEYBOARD_TOO_LONG);
        typed_init(&t);
        key(&t, KEY_1);
        key(&t, KEY_SPACE);
        key(&t, KEY_2);
        key(&t, KEY_ENTER);
        check_int(t.n, 1);
        check_int(t.ev[0].result, KEYBOARD_BAD_KEY);
        check_int(t.ev[0].code, KEY_SPACE);
        check_streq(keyboard_result_to_string(KEYBOARD_BAD_KEY), "bad_key");

        /* 21: SYN_DROPPED in mid-line */
        typed_init(&t);
        key(&t, KEY_1);
        record(&t, EV_KEY, KEY_LEFTSHIFT, 1);
        record(&t, EV_SYN, SYN_DROPPED, 0);
        record(&t, EV_KEY, KEY_5, 1);           /* part of the lost packet */
        record(&t, EV_KEY, KEY_ENTER, 1);
        record(&t, EV_SYN, SYN_REPORT, 0);
        type_digits(&t, "42", digit_key);       /* Shift was forgotten */
        key(&t, KEY_ENTER);
        check_int(t.n, 2);
        check_int(t.ev[0].result, KEYBOARD_DROPPED);
        check_int(t.ev[1].result, KEYBOARD_READ);
        check_streq(t.ev[1].token, "42");

        /* 22: a 1.5 s pause in mid-line */
        typed_init(&t);
        type_digits(&t, "123", digit_key);
        t.now += 1500 * MS;
        type_digits(&t, "456", digit_key);
        key(&t, KEY_ENTER);
        check_int(t.n, 2);
        check_int(t.ev[0].result, KEYBOARD_STALE);
        check_streq(t.ev[1].token, "456");
        /* ... within a second the line goes on */
        typed_init(&t);
        type_digits(&t, "123", digit_key);
        t.now += 900 * MS;
        type_digits(&t, "456", digit_key);
        key(&t, KEY_ENTER);
        check_int(t.n, 1);
        check_streq(t.ev[0].token, "123456");
}

static bool keys_digits_enter(unsigned code, void *userdata) {
        return code == KEY_1 || code == KEY_ENTER;
}
static bool keys_kp(unsigned code, void *userdata) {
        return code == KEY_KP5 || code == KEY_KPENTER;
}
static bool keys_no_enter(unsigned code, void *userdata) {
        return code >= KEY_1 && code <= KEY_0;
}
static bool keys_no_digits(unsigned code, void *userdata) {
        return code == KEY_ENTER || code == KEY_A;
}

static void test_keyboard_capable(void) {
        check(keyboard_capable(keys_digits_enter, NULL));
        check(keyboard_capable(keys_kp, NULL));
        check(!keyboard_capable(keys_no_enter, NULL));
        check(!keyboard_capable(keys_no_digits, NULL));
}

/* ---- discovery (24) ---- */

static RfidVerdict candidate(const RfidDeviceSnapshot *d, RfidBackend only, RfidBackend *ret) {
        const char *reason = NULL;
        RfidVerdict v;

        *ret = RFID_BACKEND_AUTO;
        v = rfid_candidate(d, only, ret, &reason);
        check(v == RFID_CANDIDATE || reason);
        return v;
}

static void test_discovery(void) {
        RfidDeviceSnapshot hid = { .dev = { .subsystem = "hidraw", .sysname = "hidraw0", .devnode = "/dev/hidraw0",
                                            .has_usb_ids = true, .vendor = 0x06c2, .product = 0x0031 } };
        RfidDeviceSnapshot tty = { .dev = { .subsystem = "tty", .sysname = "ttyUSB0", .devnode = "/dev/ttyUSB0",
                                            .has_usb_ids = true, .vendor = 0x0403, .product = 0x6015 } };
        RfidDeviceSnapshot ev = { .dev = { .subsystem = "input", .sysname = "event5", .devnode = "/dev/input/event5",
                                           .has_usb_ids = true, .vendor = 0xffff, .product = 0x0035 },
                                  .kegbot_rfid = "1", .id_input_keyboard = "1" };
        RfidDeviceSnapshot d;
        RfidBackend b;

        check_int(candidate(&hid, RFID_BACKEND_AUTO, &b), RFID_CANDIDATE);
        check_int(b, RFID_BACKEND_PHIDGET);
        d = hid;
        d.dev.product = 0x0030;
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_CANDIDATE);
        d.dev.product = 0x0034;
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_INFO);
        d = hid;
        d.kegbot_rfid = "0";
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_DEBUG);
        d = hid;
        d.dev.vendor = 0xffff;
        d.dev.product = 0x0035;
        d.kegbot_rfid = "1";
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_SILENT);
        d = hid;
        d.dev.has_usb_ids = false;
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_SILENT);
        d = hid;
        d.dev.devnode = NULL;
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_SILENT);

        check_int(candidate(&tty, RFID_BACKEND_AUTO, &b), RFID_NOT_SILENT);
        d = tty;
        d.kegbot_rfid = "1";
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_CANDIDATE);
        check_int(b, RFID_BACKEND_ID12);
        d.dev.sysname = "ttyAMA0";
        d.dev.devnode = "/dev/ttyAMA0";
        d.dev.has_usb_ids = false;
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_CANDIDATE);

        check_int(candidate(&ev, RFID_BACKEND_AUTO, &b), RFID_CANDIDATE);
        check_int(b, RFID_BACKEND_KEYBOARD);
        d = ev;
        d.dev.sysname = "input5";
        d.dev.devnode = NULL;
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_DEBUG);
        d = ev;
        d.dev.sysname = "mouse0";
        d.dev.devnode = "/dev/input/mouse0";
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_DEBUG);
        d = ev;
        d.id_input_keyboard = NULL;
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_DEBUG);
        d = ev;
        d.kegbot_rfid = NULL;
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_SILENT);

        /* --rfid_backend=id12 keeps only ttys */
        d = tty;
        d.kegbot_rfid = "1";
        check_int(candidate(&d, RFID_BACKEND_ID12, &b), RFID_CANDIDATE);
        check_int(candidate(&hid, RFID_BACKEND_ID12, &b), RFID_NOT_SILENT);
        check_int(candidate(&ev, RFID_BACKEND_ID12, &b), RFID_NOT_SILENT);
        d = hid;
        d.dev.product = 0x0034;
        check_int(candidate(&d, RFID_BACKEND_KEYBOARD, &b), RFID_NOT_SILENT);

        d = (RfidDeviceSnapshot) { .dev = { .subsystem = "block", .sysname = "sda", .devnode = "/dev/sda" },
                                   .kegbot_rfid = "1" };
        check_int(candidate(&d, RFID_BACKEND_AUTO, &b), RFID_NOT_SILENT);

        check_int(rfid_backend_for_subsystem("hidraw", "hidraw3"), RFID_BACKEND_PHIDGET);
        check_int(rfid_backend_for_subsystem("tty", "ttyS4"), RFID_BACKEND_ID12);
        check_int(rfid_backend_for_subsystem("input", "event12"), RFID_BACKEND_KEYBOARD);
        check_int(rfid_backend_for_subsystem("input", "input5"), _RFID_BACKEND_INVALID);
        check_int(rfid_backend_for_subsystem("input", "mouse0"), _RFID_BACKEND_INVALID);
        check_int(rfid_backend_for_subsystem("usb", "1-1"), _RFID_BACKEND_INVALID);
        check_int(rfid_backend_for_subsystem(NULL, NULL), _RFID_BACKEND_INVALID);

        check_int(rfid_backend_from_string("keyboard"), RFID_BACKEND_KEYBOARD);
        check_int(rfid_backend_from_string("serial"), _RFID_BACKEND_INVALID);
        check_streq(rfid_backend_to_string(RFID_BACKEND_ID12), "id12");
}

int main(void) {
        test_run(test_phidget_reports);
        test_run(test_phidget_output);
        test_run(test_phidget_descriptor);
        test_run(test_presence);
        test_run(test_token_rule);
        test_run(test_id12);
        test_run(test_keyboard);
        test_run(test_keyboard_capable);
        test_run(test_discovery);
        return test_result();
}
