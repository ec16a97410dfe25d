/* Unit test of the accessory programs' pure parts: the CFA-635 packet encoder, reply parser and
 * character translation, the LCD screen layouts, sound_server's thresholds and cache file names. */
#include <stdlib.h>
#include <string.h>

#include "display.h"
#include "screens.h"
#include "thresholds.h"
#include "test-util.h"

static void test_cfa635(void) {
        uint8_t buf[CFA635_PACKET_MAX];

        check(cfa635_crc((const uint8_t *) "123456789", 9) == 0x906E);
        check(cfa635_encode(CFA635_CMD_CLEAR, NULL, 0, buf) == 4);
        check(memcmp(buf, "\x06\x00\x97\x5B", 4) == 0);
        check(cfa635_encode(CFA635_CMD_BACKLIGHT, (const uint8_t[]) { 100 }, 1, buf) == 5);
        check(memcmp(buf, "\x0E\x01\x64\x2D\xEA", 5) == 0);
        check(cfa635_encode(CFA635_CMD_WRITE, (const uint8_t *) "\0\0hi", 4, buf) == 8);
        check(memcmp(buf, "\x1F\x04\x00\x00\x68\x69\xF4\xF0", 8) == 0);
        /* Oversized data and out-of-range commands are refused. */
        check(cfa635_encode(CFA635_CMD_WRITE, buf, CFA635_DATA_MAX + 1, buf) == 0);
        check(cfa635_encode(64, NULL, 0, buf) == 0);

        check(cfa635_translate('[') == 0xFA);
        check(cfa635_translate('\\') == 0xFB);
        check(cfa635_translate(']') == 0xFC);
        check(cfa635_translate('{') == 0xFD);
        check(cfa635_translate('|') == 0xFE);
        check(cfa635_translate('_') == 0xC4);
        check(cfa635_translate('$') == 0xA2);
        check(cfa635_translate('^') == 0x1D);
        check(cfa635_translate('<') == '<' && cfa635_translate('=') == '=' && cfa635_translate('>') == '>');
        check(cfa635_translate('a') == 'a' && cfa635_translate(0xE9) == 0xE9);

        check(display_type_from_string("cfa635") == DISPLAY_CFA635);
        check(display_type_from_string("mtxorb20x4") == DISPLAY_MTXORB20X4);
        check(display_type_from_string("CFA635") < 0);
}

/* Feeds bytes, returns how many packets completed (the last one in *ret) and counts -EBADMSG. */
static int feed(Cfa635Parser *p, const char *bytes, size_t n, Cfa635Packet *ret, unsigned *bad_lengths) {
        int packets = 0;

        for (size_t i = 0; i < n; i++) {
                int r = cfa635_parser_feed(p, (uint8_t) bytes[i], ret);
                if (r == -EBADMSG)
                        (*bad_lengths)++;
                else if (r > 0)
                        packets++;
        }
        return packets;
}

static void test_cfa635_parser(void) {
        Cfa635Parser p = {};
        Cfa635Packet pkt;
        uint8_t buf[CFA635_PACKET_MAX];
        unsigned bad = 0;
        size_t n;

        /* The answer to a clear screen: type 1, code 6, no data. */
        n = cfa635_encode(CFA635_CMD_CLEAR, NULL, 0, buf);
        buf[0] |= CFA635_TYPE_RESPONSE << 6;
        n = 2;
        uint16_t crc = cfa635_crc(buf, n);
        buf[n++] = (uint8_t) (crc & 0xFF);
        buf[n++] = (uint8_t) (crc >> 8);
        check(feed(&p, (const char *) buf, n, &pkt, &bad) == 1);
        check(pkt.type == CFA635_TYPE_RESPONSE && pkt.code == CFA635_CMD_CLEAR && pkt.len == 0 && pkt.crc_ok);

        /* A key report (0x80, one data byte), split across two reads. */
        uint8_t key[5] = { 0x80, 0x01, 0x05 };
        crc = cfa635_crc(key, 3);
        key[3] = (uint8_t) (crc & 0xFF);
        key[4] = (uint8_t) (crc >> 8);
        check(feed(&p, (const char *) key, 2, &pkt, &bad) == 0);
        check(feed(&p, (const char *) key + 2, 3, &pkt, &bad) == 1);
        check(pkt.type == CFA635_TYPE_REPORT && pkt.code == CFA635_REPORT_KEY && pkt.len == 1 &&
              pkt.data[0] == 5 && pkt.crc_ok);

        /* A bad CRC still ends the packet, marked as such; the next one parses. */
        key[4] ^= 0xFF;
        check(feed(&p, (const char *) key, 5, &pkt, &bad) == 1);
        check(!pkt.crc_ok && pkt.type == CFA635_TYPE_REPORT);
        check(feed(&p, (const char *) buf, n, &pkt, &bad) == 1);
        check(pkt.crc_ok && pkt.code == CFA635_CMD_CLEAR);

        /* A length over 22: the byte before it is dropped and parsing resynchronises. */
        check(bad == 0);
        check(feed(&p, "\x41\x63", 2, &pkt, &bad) == 0);
        check(bad == 1);
        /* 0x63 is now taken as a packet start; its "length" 0x41 > 22 drops it too. */
        check(feed(&p, "\x41", 1, &pkt, &bad) == 0 && bad == 2);
        cfa635_parser_reset(&p);
        check(feed(&p, (const char *) buf, n, &pkt, &bad) == 1 && pkt.crc_ok);
}

static void test_screens(void) {
        LcdScreen s;
        TapInfo t = {
                .name = (char *) "Main", .beverage = (char *) "IPA", .producer = (char *) "",
                .percent_full = 72.45, .has_temperature = true, .temperature_c = -0.04,
        };

        lcd_screen_tap(&s, &t);
        check(streq(s.rows[0], "_Main______________ "));
        check(streq(s.rows[3], "72.5% full  -0.0c   ") || streq(s.rows[3], "72.4% full  -0.0c   "));
        t.name = (char *) "123456789012345678";         /* "_" + 18 = 19 characters, then the space */
        lcd_screen_tap(&s, &t);
        check(streq(s.rows[0], "_123456789012345678 "));
        t.name = (char *) "1234567890123456789";
        lcd_screen_tap(&s, &t);
        check(streq(s.rows[0], "_1234567890123456789"));
        t.name = (char *) "";
        lcd_screen_tap(&s, &t);
        check(streq(s.rows[0], "___________________ "));

        /* Control bytes never reach a display; rows are always 20 bytes. */
        lcd_screen_set_row(&s, 1, "a\tb\nc\x1b" "d");
        check(streq(s.rows[1], "a b c d             "));
        lcd_screen_set_row(&s, 2, "0123456789012345678901234");
        check(streq(s.rows[2], "01234567890123456789"));
        lcd_screen_set_row(&s, 9, "ignored");

        lcd_screen_pour(&s, NULL, false, 0);
        check(streq(s.rows[1], "|user: guest        "));
        check(streq(s.rows[2], "|oz:                "));
        lcd_screen_pour(&s, "", true, 29.57353);
        check(streq(s.rows[1], "|user: guest        "));
        check(streq(s.rows[2], "|oz: 1.00           "));

        LastPour p = { .known = true, .volume_ml = 0, .has_time = false };
        strcpy(p.user, "x");
        lcd_screen_last_pour(&s, &p);
        check(streq(s.rows[2], "when:               "));
        check(streq(s.rows[3], "size: 0.00 ounces   "));

        setenv("TZ", "UTC", 1);
        char buf[64];
        lcd_format_time(1795694409, buf, sizeof(buf));  /* 2026-11-26T12:00:09Z */
        check(streq(buf, "nov 26 12:00pm"));
        lcd_format_time(1795651200, buf, sizeof(buf));  /* 2026-11-26T00:00:00Z */
        check(streq(buf, "nov 26 12:00am"));
}

static void test_core_tap_screen(void) {
        LcdScreen s;
        CoreTapInfo t = {
                .meter_name = "kegboard.flow0", .name = "Main Tap", .ml_per_tick = 1 / 2.2,
                .flow_state = "", .flow_volume_ml = -1, .flow_username = "",
        };

        lcd_screen_core_tap(&s, &t);
        check_streq(s.rows[0], "_Main Tap__________ ");
        check_streq(s.rows[1], "kegboard.flow0      ");
        check_streq(s.rows[2], "2.2 ticks/ml        ");
        check_streq(s.rows[3], "no pours yet        ");

        t.flow_state = "active";
        t.flow_volume_ml = 100;
        lcd_screen_core_tap(&s, &t);
        check_streq(s.rows[3], "pouring 3.38 oz     ");
        t.flow_state = "idle";
        t.flow_volume_ml = -1;
        lcd_screen_core_tap(&s, &t);
        check_streq(s.rows[3], "pouring             ");
        t.flow_state = "completed";
        t.flow_volume_ml = 500;
        lcd_screen_core_tap(&s, &t);
        check_streq(s.rows[3], "last pour 16.91 oz  ");
        t.flow_volume_ml = -1;
        lcd_screen_core_tap(&s, &t);
        check_streq(s.rows[3], "last pour           ");

        /* No name: the meter stands in; no calibration said so. */
        t.name = "";
        t.ml_per_tick = 0;
        lcd_screen_core_tap(&s, &t);
        check_streq(s.rows[0], "_kegboard.flow0____ ");
        check_streq(s.rows[2], "not calibrated      ");
        t.ml_per_tick = 1 / 5.4;
        lcd_screen_core_tap(&s, &t);
        check_streq(s.rows[2], "5.4 ticks/ml        ");
}

static void test_tap_json(void) {
        json_error_t e;
        TapInfo t;
        json_t *j;

        j = json_loads("{\"name\":\"T\",\"current_keg\":{\"percent_full\":\"x\",\"type\":{\"name\":\"Old\"},"
                       "\"beverage\":{\"producer\":{\"name\":7}}},\"last_temperature\":null}", 0, &e);
        check(j);
        check(tap_info_from_json(j, &t) == 0);
        check(streq(t.beverage, "Old") && streq(t.producer, "") && t.percent_full == 0.0);
        check(!t.has_temperature);
        tap_info_done(&t);
        json_decref(j);

        j = json_loads("{\"name\":5}", 0, &e);
        check(tap_info_from_json(j, &t) == -EINVAL);
        json_decref(j);
        j = json_loads("[]", 0, &e);
        check(tap_info_from_json(j, &t) == -EINVAL);
        json_decref(j);
}

static void test_thresholds(void) {
        check(sound_threshold_crossed(-1, 0) == 0);
        check(sound_threshold_crossed(-1, 0.5) == 0);
        check(sound_threshold_crossed(0.5, 1) == 1);
        check(sound_threshold_crossed(1, 1) == -1);
        check(sound_threshold_crossed(1, 7.99) == -1);
        check(sound_threshold_crossed(1.5, 40) == 32);          /* the first in list order wins */
        check(sound_threshold_crossed(-1, 100) == 32);
        check(sound_threshold_crossed(12, 16) == 16);
        check(sound_threshold_crossed(40, 10) == -1);           /* volumes going down fire nothing */
}

static void test_url_basename(void) {
        char *s;

        check(sound_url_basename("http://h/media/a.wav", &s) == 0 && streq(s, "a.wav"));
        free(s);
        check(sound_url_basename("https://h:8000/x/y/b%20c.mp3?v=1#f", &s) == 0 && streq(s, "b%20c.mp3"));
        free(s);
        check(sound_url_basename("ftp://h/a.wav", &s) == -EINVAL);
        check(sound_url_basename("/media/a.wav", &s) == -EINVAL);
        check(sound_url_basename("http://h", &s) == -EINVAL);
        check(sound_url_basename("http://h/", &s) == -EINVAL);
        check(sound_url_basename("http://h/a/..", &s) == -EINVAL);
        check(sound_url_basename("http://h/a/.?x=/", &s) == -EINVAL);
        check(sound_url_basename("http://", &s) == -EINVAL);
}

int main(void) {
        test_run(test_cfa635);
        test_run(test_cfa635_parser);
        test_run(test_screens);
        test_run(test_core_tap_screen);
        test_run(test_tap_json);
        test_run(test_thresholds);
        test_run(test_url_basename);
        return test_result();
}
