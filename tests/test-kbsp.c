/* Tests for the KBSP codec: CRC check values, every vector of kegboard-vectors/ (encoder bytes,
 * decoder messages and errors, firmware outcomes), the shared streams in many chunkings, and
 * targeted tests of each resync rule. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbsp.h"
#include "test-util.h"

static const char *current = "";

#define check_json(a, b)                                                                \
        do {                                                                            \
                if (!json_equal((a), (b))) {                                            \
                        char *_x = json_dumps((a), JSON_COMPACT | JSON_SORT_KEYS);      \
                        char *_y = json_dumps((b), JSON_COMPACT | JSON_SORT_KEYS);      \
                        fprintf(stderr, "%s:%d: [%s] json differs: %s\n  got:      %s\n  expected: %s\n", \
                                __FILE__, __LINE__, current, #a " == " #b, _x, _y);     \
                        free(_x);                                                       \
                        free(_y);                                                       \
                        failures++;                                                     \
                }                                                                       \
        } while (0)

/* ---- helpers ---- */

static size_t unhex(const char *s, uint8_t *out, size_t size) {
        size_t n = strlen(s) / 2;
        if (n > size) {
                fprintf(stderr, "hex too long\n");
                exit(2);
        }
        for (size_t i = 0; i < n; i++) {
                unsigned v;
                if (sscanf(s + 2 * i, "%2x", &v) != 1) {
                        fprintf(stderr, "bad hex %s\n", s);
                        exit(2);
                }
                out[i] = (uint8_t) v;
        }
        return n;
}

static char *tohex(const uint8_t *b, size_t n, char *out) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", b[i]);
        out[2 * n] = 0;
        return out;
}

/* The Kegboard vectors: tests/fixtures/kegboard-vectors. */
static const char *vector_path(const char *name) {
        char rel[PATH_MAX];

        snprintf(rel, sizeof rel, "kegboard-vectors/%s", name);
        return test_fixture(rel);
}

static json_t *load_json(const char *name) {
        const char *path = vector_path(name);
        json_error_t err;
        json_t *j;

        j = json_load_file(path, 0, &err);
        if (!j) {
                fprintf(stderr, "cannot load %s: %s (line %d)\n", path, err.text, err.line);
                exit(1);
        }
        return j;
}

static uint8_t *load_bin(const char *name, size_t *ret_len) {
        const char *path = vector_path(name);
        uint8_t *b;
        long n;
        FILE *f;

        f = fopen(path, "rb");
        if (!f) {
                fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
                exit(1);
        }
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        b = malloc(n > 0 ? (size_t) n : 1);
        if (!b || fread(b, 1, (size_t) n, f) != (size_t) n) {
                fprintf(stderr, "cannot read %s\n", path);
                exit(1);
        }
        fclose(f);
        *ret_len = (size_t) n;
        return b;
}

/* Our decoded message in the vectors' "fields" notation, written independently of kbsp.c's tables. */
static json_t *fields_json(const KbspMessage *m) {
        json_t *o = json_object();
        char hex[2 * KBSP_MAX_PAYLOAD + 1];

        switch (m->message_id) {
        case KBSP_MSG_HELLO:
                if (m->hello.has_firmware_version)
                        json_object_set_new(o, "firmware_version", json_integer(m->hello.firmware_version));
                if (m->hello.has_protocol_version)
                        json_object_set_new(o, "protocol_version", json_integer(m->hello.protocol_version));
                if (m->hello.has_serial_number)
                        json_object_set_new(o, "serial_number", json_string(m->hello.serial_number));
                if (m->hello.has_uptime_ms)
                        json_object_set_new(o, "uptime_ms", json_integer(m->hello.uptime_ms));
                if (m->hello.has_uptime_days)
                        json_object_set_new(o, "uptime_days", json_integer(m->hello.uptime_days));
                break;
        case KBSP_MSG_METER_STATUS:
                if (m->meter_status.has_meter_name)
                        json_object_set_new(o, "meter_name", json_string(m->meter_status.meter_name));
                if (m->meter_status.has_meter_reading)
                        json_object_set_new(o, "meter_reading", json_integer(m->meter_status.meter_reading));
                break;
        case KBSP_MSG_TEMPERATURE_READING:
                if (m->temperature_reading.has_sensor_name)
                        json_object_set_new(o, "sensor_name", json_string(m->temperature_reading.sensor_name));
                if (m->temperature_reading.has_sensor_reading) {
                        json_object_set_new(o, "sensor_reading_micro_c",
                                            json_integer(m->temperature_reading.sensor_reading));
                        json_object_set_new(o, "sensor_reading_c",
                                            json_real(kbsp_temperature_c(m->temperature_reading.sensor_reading)));
                }
                break;
        case KBSP_MSG_OUTPUT_STATUS:
                if (m->output_status.has_output_name)
                        json_object_set_new(o, "output_name", json_string(m->output_status.output_name));
                if (m->output_status.has_output_reading)
                        json_object_set_new(o, "output_reading", json_integer(m->output_status.output_reading));
                break;
        case KBSP_MSG_ONEWIRE_PRESENCE:
                if (m->onewire_presence.has_device_id)
                        json_object_set_new(o, "device_id", json_integer((json_int_t) m->onewire_presence.device_id));
                if (m->onewire_presence.has_status)
                        json_object_set_new(o, "status", json_integer(m->onewire_presence.status));
                break;
        case KBSP_MSG_AUTH_TOKEN:
                if (m->auth_token.has_device)
                        json_object_set_new(o, "device", json_string(m->auth_token.device));
                if (m->auth_token.has_token) {
                        json_object_set_new(o, "token_hex",
                                            json_string(tohex(m->auth_token.token, m->auth_token.token_len, hex)));
                        json_object_set_new(o, "token_host_string",
                                            json_string(kbsp_token_to_string(m->auth_token.token,
                                                                              m->auth_token.token_len, hex)));
                }
                if (m->auth_token.has_status)
                        json_object_set_new(o, "status", json_integer(m->auth_token.status));
                break;
        case KBSP_MSG_SET_OUTPUT:
                if (m->set_output.has_output_id)
                        json_object_set_new(o, "output_id", json_integer(m->set_output.output_id));
                if (m->set_output.has_output_mode)
                        json_object_set_new(o, "output_mode", json_integer(m->set_output.output_mode));
                break;
        case KBSP_MSG_SET_SERIAL_NUMBER:
                if (m->set_serial_number.has_serial_number)
                        json_object_set_new(o, "serial_number", json_string(m->set_serial_number.serial_number));
                break;
        default:
                break;
        }
        return o;
}

/* The vectors' "decoded" object for a frame. */
static json_t *decoded_json(const KbspFrame *f) {
        json_t *o = json_object(), *tags = json_array();
        const char *name = kbsp_message_name(f->message_id);
        char hex[2 * KBSP_MAX_FRAME + 1], crc[8];
        KbspMessage m;

        kbsp_frame_decode(f, &m);
        json_object_set_new(o, "message_id", json_integer(f->message_id));
        json_object_set_new(o, "message", json_string(name ?: "unknown"));
        json_object_set_new(o, "payload_len", json_integer(f->payload_len));
        snprintf(crc, sizeof crc, "0x%04x", f->crc);
        json_object_set_new(o, "crc", json_string(crc));
        for (size_t i = 0; i < f->n_records; i++) {
                const KbspRecord *r = &f->records[i];
                json_array_append_new(tags, json_pack("{s:i,s:i,s:s}", "tag", r->tag, "len", r->len,
                                                      "hex", tohex(kbsp_record_value(f, r), r->len, hex)));
        }
        json_object_set_new(o, "tags", tags);
        json_object_set_new(o, "fields", fields_json(&m));
        if (m.n_errors > 0) {
                json_t *errs = json_array();
                for (size_t i = 0; i < m.n_errors; i++) {
                        char t[128];
                        kbsp_field_error_format(&m.errors[i], t, sizeof t);
                        json_array_append_new(errs, json_string(t));
                }
                json_object_set_new(o, "tlv_errors", errs);
        }
        return o;
}

/* A message built from the vectors' "fields" notation, for the encoder. */
static void message_from_json(uint16_t id, json_t *fields, KbspMessage *m) {
        json_t *v;

        kbsp_message_init(m, id);
#define STR(dst, key) if ((v = json_object_get(fields, key))) { snprintf(dst, KBSP_STRING_MAX, "%s", json_string_value(v)); }
#define INT(dst, has, key) if ((v = json_object_get(fields, key))) { dst = (__typeof__(dst)) json_integer_value(v); has = true; }
        switch (id) {
        case KBSP_MSG_HELLO:
                INT(m->hello.firmware_version, m->hello.has_firmware_version, "firmware_version");
                INT(m->hello.protocol_version, m->hello.has_protocol_version, "protocol_version");
                INT(m->hello.uptime_ms, m->hello.has_uptime_ms, "uptime_ms");
                INT(m->hello.uptime_days, m->hello.has_uptime_days, "uptime_days");
                STR(m->hello.serial_number, "serial_number");
                m->hello.has_serial_number = v != NULL;
                break;
        case KBSP_MSG_METER_STATUS:
                INT(m->meter_status.meter_reading, m->meter_status.has_meter_reading, "meter_reading");
                STR(m->meter_status.meter_name, "meter_name");
                m->meter_status.has_meter_name = v != NULL;
                break;
        case KBSP_MSG_TEMPERATURE_READING:
                INT(m->temperature_reading.sensor_reading, m->temperature_reading.has_sensor_reading,
                    "sensor_reading_micro_c");
                STR(m->temperature_reading.sensor_name, "sensor_name");
                m->temperature_reading.has_sensor_name = v != NULL;
                break;
        case KBSP_MSG_OUTPUT_STATUS:
                INT(m->output_status.output_reading, m->output_status.has_output_reading, "output_reading");
                STR(m->output_status.output_name, "output_name");
                m->output_status.has_output_name = v != NULL;
                break;
        case KBSP_MSG_ONEWIRE_PRESENCE:
                INT(m->onewire_presence.device_id, m->onewire_presence.has_device_id, "device_id");
                INT(m->onewire_presence.status, m->onewire_presence.has_status, "status");
                break;
        case KBSP_MSG_AUTH_TOKEN:
                INT(m->auth_token.status, m->auth_token.has_status, "status");
                if ((v = json_object_get(fields, "token_hex"))) {
                        m->auth_token.token_len = unhex(json_string_value(v), m->auth_token.token,
                                                        sizeof m->auth_token.token);
                        m->auth_token.has_token = true;
                }
                STR(m->auth_token.device, "device");
                m->auth_token.has_device = v != NULL;
                break;
        case KBSP_MSG_SET_OUTPUT:
                INT(m->set_output.output_id, m->set_output.has_output_id, "output_id");
                INT(m->set_output.output_mode, m->set_output.has_output_mode, "output_mode");
                break;
        case KBSP_MSG_SET_SERIAL_NUMBER:
                STR(m->set_serial_number.serial_number, "serial_number");
                m->set_serial_number.has_serial_number = v != NULL;
                break;
        default:
                break;
        }
#undef STR
#undef INT
}

/* ---- running the decoders ---- */

typedef enum Chunking {
        CHUNK_WHOLE,
        CHUNK_ONE,
        CHUNK_SEVEN,
        CHUNK_RANDOM,
} Chunking;

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

static json_t *event_json(const KbspEvent *ev) {
        json_t *o = json_pack("{s:I,s:I}", "offset", (json_int_t) ev->offset, "size", (json_int_t) ev->size);
        switch (ev->type) {
        case KBSP_EVENT_FRAME:
                json_object_set_new(o, "type", json_string("frame"));
                json_object_set_new(o, "decoded", decoded_json(ev->frame));
                check(ev->size == ev->frame->size);
                check(ev->message_id == ev->frame->message_id);
                break;
        case KBSP_EVENT_GARBAGE:
                json_object_set_new(o, "type", json_string("garbage"));
                break;
        case KBSP_EVENT_ERROR:
                json_object_set_new(o, "type", json_string("error"));
                json_object_set_new(o, "error", json_string(kbsp_error_to_string(ev->error)));
                json_object_set_new(o, "message_id", json_integer(ev->message_id));
                json_object_set_new(o, "payload_len", json_integer(ev->payload_len));
                break;
        }
        return o;
}

/* Feeds data in the given chunking; returns every event (including the final garbage run). Checks
 * that every byte is accounted for and that events are contiguous in the stream. */
static json_t *run_host(const uint8_t *data, size_t len, Chunking how, size_t *ret_pending, KbspStats *ret_stats) {
        KbspDecoder d;
        KbspEvent ev;
        json_t *events = json_array();
        uint64_t accounted = 0;
        size_t off = 0;
        int r;

        kbsp_decoder_init(&d);
        while (off < len || off == 0) {
                size_t n;
                switch (how) {
                case CHUNK_ONE:
                        n = 1;
                        break;
                case CHUNK_SEVEN:
                        n = 7;
                        break;
                case CHUNK_RANDOM:
                        n = 1 + rng() % 200;
                        break;
                default:
                        n = len;
                }
                n = MIN(n, len - off);
                check(kbsp_decoder_feed(&d, data + off, n) == 0);
                off += n;
                while ((r = kbsp_decoder_next(&d, &ev)) > 0) {
                        /* events come in stream order and tile the stream */
                        check(ev.offset == accounted);
                        accounted += ev.size;
                        json_array_append_new(events, event_json(&ev));
                }
                check(r == 0);
                if (len == 0)
                        break;
        }
        if (kbsp_decoder_finish(&d, &ev) > 0) {
                check(ev.type == KBSP_EVENT_GARBAGE);
                check(ev.offset == accounted);
                accounted += ev.size;
                json_array_append_new(events, event_json(&ev));
        }
        check(kbsp_decoder_finish(&d, &ev) == 0);
        check(accounted + kbsp_decoder_pending(&d) == len);
        check(d.stats.bytes == len);
        if (ret_pending)
                *ret_pending = kbsp_decoder_pending(&d);
        if (ret_stats)
                *ret_stats = d.stats;
        return events;
}

static json_t *run_host_all_chunkings(const uint8_t *data, size_t len, size_t *ret_pending, KbspStats *ret_stats) {
        json_t *ref = run_host(data, len, CHUNK_WHOLE, ret_pending, ret_stats);
        static const Chunking ways[] = { CHUNK_ONE, CHUNK_SEVEN, CHUNK_RANDOM, CHUNK_RANDOM, CHUNK_RANDOM };

        for (size_t i = 0; i < ELEMENTSOF(ways); i++) {
                size_t pending;
                json_t *other = run_host(data, len, ways[i], &pending, NULL);
                check_json(other, ref);
                check(pending == *ret_pending);
                json_decref(other);
        }
        /* and every split into two pieces */
        for (size_t cut = 1; cut < len && len <= 256; cut++) {
                KbspDecoder d;
                KbspEvent ev;
                json_t *events = json_array();
                kbsp_decoder_init(&d);
                check(kbsp_decoder_feed(&d, data, cut) == 0);
                while (kbsp_decoder_next(&d, &ev) > 0)
                        json_array_append_new(events, event_json(&ev));
                check(kbsp_decoder_feed(&d, data + cut, len - cut) == 0);
                while (kbsp_decoder_next(&d, &ev) > 0)
                        json_array_append_new(events, event_json(&ev));
                if (kbsp_decoder_finish(&d, &ev) > 0)
                        json_array_append_new(events, event_json(&ev));
                check_json(events, ref);
                json_decref(events);
        }
        return ref;
}

static json_t *select_frames(json_t *events) {
        json_t *out = json_array(), *e;
        size_t i;
        json_array_foreach(events, i, e)
                if (streq(json_string_value(json_object_get(e, "type")), "frame"))
                        json_array_append(out, json_object_get(e, "decoded"));
        return out;
}

static json_t *select_errors(json_t *events) {
        json_t *out = json_array(), *e;
        size_t i;
        json_array_foreach(events, i, e)
                if (streq(json_string_value(json_object_get(e, "type")), "error"))
                        json_array_append(out, json_object_get(e, "error"));
        return out;
}

/* ---- firmware model: what v18 does with an accepted host frame (section 4.8-4.10) ---- */

typedef struct Board {
        int relays[KBSP_MAX_OUTPUTS];
        bool programmed;
        char serial[KBSP_SERIAL_FIELD_LEN];
        json_t *replies;
} Board;

static void board_reply(Board *b, const uint8_t *frame, int len) {
        KbspFrame f;
        KbspMessage m;

        check(len > 0);
        if (len <= 0)
                return;
        check(kbsp_frame_parse(frame, (size_t) len, true, &f) == 0);
        kbsp_frame_decode(&f, &m);
        check(m.complete);
        json_array_append_new(b->replies, json_pack("{s:s,s:o}", "message", kbsp_message_name(f.message_id),
                                                    "fields", fields_json(&m)));
}

static void board_handle(Board *b, const KbspFrame *f) {
        uint8_t out[KBSP_MAX_FRAME];
        const KbspRecord *r1, *r2;

        switch (f->message_id) {
        case KBSP_MSG_PING:
                board_reply(b, out, kbsp_encode_hello(out, sizeof out, 18, b->serial, 0, 0));
                break;
        case KBSP_MSG_SET_OUTPUT:
                r1 = kbsp_frame_find_record(f, KBSP_SET_OUTPUT_TAG_OUTPUT_ID);
                r2 = kbsp_frame_find_record(f, KBSP_SET_OUTPUT_TAG_OUTPUT_MODE);
                if (!r1 || !r2 || r1->len < 1 || r2->len < 1)
                        break;
                uint8_t id = kbsp_record_value(f, r1)[0], mode = kbsp_record_value(f, r2)[0];
                if (id >= KBSP_MAX_OUTPUTS || mode > 1 || b->relays[id] == mode)
                        break;
                b->relays[id] = mode;
                char name[16];
                snprintf(name, sizeof name, "relay%u", id);
                board_reply(b, out, kbsp_encode_output_status(out, sizeof out, name, mode));
                break;
        case KBSP_MSG_SET_SERIAL_NUMBER:
                r1 = kbsp_frame_find_record(f, KBSP_SET_SERIAL_NUMBER_TAG_SERIAL_NUMBER);
                if (b->programmed || (r1 && r1->len >= KBSP_SERIAL_FIELD_LEN))
                        break;
                memset(b->serial, 0, sizeof b->serial);
                if (r1)
                        memcpy(b->serial, kbsp_record_value(f, r1), r1->len);
                b->serial[KBSP_SERIAL_FIELD_LEN - 1] = 0;
                b->programmed = true;
                board_reply(b, out, kbsp_encode_hello(out, sizeof out, 18, b->serial, 0, 0));
                break;
        default:
                break;
        }
}

static void run_firmware(const uint8_t *data, size_t len, bool strict, bool one_by_one, Board *b) {
        KbspFirmwareParser p;
        KbspEvent ev;
        uint64_t accounted = 0;

        memset(b, 0, sizeof *b);
        b->replies = json_array();
        kbsp_firmware_parser_init(&p, strict);
        for (size_t off = 0; off < len;) {
                size_t n = one_by_one ? 1 : len;
                check(kbsp_firmware_parser_feed(&p, data + off, n) == 0);
                off += n;
                while (kbsp_firmware_parser_next(&p, &ev) > 0) {
                        check(ev.offset == accounted);
                        accounted += ev.size;
                        if (ev.type == KBSP_EVENT_FRAME)
                                board_handle(b, ev.frame);
                }
        }
        if (kbsp_firmware_parser_finish(&p, &ev) > 0)
                accounted += ev.size;
        check(accounted + kbsp_firmware_parser_pending(&p) == len);
}

static void check_firmware_outcome(json_t *vec, const uint8_t *data, size_t len) {
        json_t *fo = json_object_get(vec, "firmware_outcome");
        json_t *relays = json_object_get(fo, "relays_after");

        for (int way = 0; way < 2; way++) {
                Board b;
                run_firmware(data, len, false, way == 1, &b);
                check(json_array_size(relays) == KBSP_MAX_OUTPUTS);
                for (size_t i = 0; i < KBSP_MAX_OUTPUTS; i++)
                        check(json_integer_value(json_array_get(relays, i)) == b.relays[i]);
                check(json_is_true(json_object_get(fo, "eeprom_serial_programmed_after")) == b.programmed);
                check_json(b.replies, json_object_get(fo, "board_replies"));
                json_decref(b.replies);
        }
}

/* ---- tests ---- */

static void test_crc(void) {
        current = "crc";
        check(kbsp_crc16("123456789", 9) == 0x2189);
        check(kbsp_crc16("KBSP v1:", 8) == 0xE3AF);
        check(kbsp_crc16("KBSP v1:", 8) == KBSP_PREFIX_CRC);
        check(kbsp_crc16((const uint8_t[]) { 1, 2, 3, 4 }, 4) == 0xC54F);
        check(kbsp_crc16((const uint8_t[]) { 1, 2, 3, 4, 0x4F, 0xC5 }, 6) == 0);
        check(kbsp_crc16("", 0) == 0);
        /* incremental equals one-shot */
        check(kbsp_crc16_update(kbsp_crc16("1234", 4), "56789", 5) == 0x2189);
        /* bitwise definition, for every single byte value */
        for (unsigned b = 0; b < 256; b++) {
                uint16_t c = (uint16_t) b;
                uint8_t byte = (uint8_t) b;
                for (int i = 0; i < 8; i++)
                        c = (c & 1) ? (uint16_t) ((c >> 1) ^ 0x8408) : (uint16_t) (c >> 1);
                check(kbsp_crc16(&byte, 1) == c);
        }
}

static void test_vectors(void) {
        json_t *root = load_json("vectors.json"), *vecs = json_object_get(root, "vectors"), *v;
        size_t i, n_valid = 0, n_other = 0, n_fw = 0;

        check(json_array_size(vecs) == 57);
        json_array_foreach(vecs, i, v) {
                const char *kind = json_string_value(json_object_get(v, "kind"));
                const char *dir = json_string_value(json_object_get(v, "direction"));
                uint8_t data[512];
                size_t len, pending;
                KbspStats stats;
                json_t *events;

                current = json_string_value(json_object_get(v, "name"));
                len = unhex(json_string_value(json_object_get(v, "hex")), data, sizeof data);
                events = run_host_all_chunkings(data, len, &pending, &stats);

                if (streq(kind, "valid")) {
                        json_t *dec = json_object_get(v, "decoded");
                        json_t *frames = select_frames(events);
                        KbspFrame f;
                        KbspMessage m;
                        uint8_t out[KBSP_MAX_FRAME];
                        char hex[2 * KBSP_MAX_FRAME + 1];
                        int r;

                        n_valid++;
                        /* exactly one frame and nothing else */
                        check(json_array_size(events) == 1);
                        check(json_array_size(frames) == 1);
                        check_json(json_array_get(frames, 0), dec);
                        check(pending == 0);
                        json_decref(frames);

                        check(kbsp_frame_parse(data, len, true, &f) == 0);
                        kbsp_frame_decode(&f, &m);
                        check(m.complete);
                        check(m.n_errors == 0);

                        /* record-level re-encoding is exact for every valid frame */
                        r = kbsp_encode_records(out, sizeof out, &f);
                        check(r == (int) len && memcmp(out, data, len) == 0);

                        /* typed encoding of the vector's fields */
                        message_from_json((uint16_t) json_integer_value(json_object_get(dec, "message_id")),
                                          json_object_get(dec, "fields"), &m);
                        r = kbsp_message_encode(&m, out, sizeof out);
                        check(r > 0);
                        if (streq(current, "doc_meter_flow1_nul_terminated") ||
                            streq(current, "set_output_relay1_on_1byte_mode")) {
                                /* non-v18 widths (NUL in a name, 1-byte mode): our encoder writes the
                                 * v18 form, which must decode to the same fields */
                                KbspFrame g;
                                check(r > 0 && (size_t) r != len);
                                check(r > 0 && kbsp_frame_parse(out, (size_t) r, true, &g) == 0);
                                json_t *d2 = decoded_json(&g);
                                check_json(json_object_get(d2, "fields"), json_object_get(dec, "fields"));
                                json_decref(d2);
                        } else {
                                check(r == (int) len);
                                if (r == (int) len && memcmp(out, data, len) != 0) {
                                        fprintf(stderr, "[%s] encoded %s\n", current, tohex(out, len, hex));
                                        check(!"typed encoding differs");
                                }
                        }
                } else {
                        json_t *exp = json_object_get(v, "expect");
                        json_t *frames = select_frames(events), *errors = select_errors(events);

                        n_other++;
                        check_json(frames, json_object_get(exp, "messages"));
                        check_json(errors, json_object_get(exp, "errors"));
                        check(pending == (size_t) json_integer_value(json_object_get(exp, "pending_bytes")));
                        /* advisory in the spec, but our bookkeeping matches the reference parser */
                        check(stats.garbage_bytes == (uint64_t) json_integer_value(json_object_get(exp, "discarded_bytes")));
                        json_decref(frames);
                        json_decref(errors);
                }

                if (streq(dir, "host_to_board")) {
                        check(json_object_get(v, "firmware_outcome") != NULL);
                        check_firmware_outcome(v, data, len);
                        n_fw++;
                }
                json_decref(events);
        }
        current = "vectors";
        check(n_valid == 36);
        check(n_valid + n_other == 57);
        check(n_fw == 12);
        json_decref(root);
}

static json_t *find_vector(json_t *root, const char *name) {
        json_t *v;
        size_t i;
        json_array_foreach(json_object_get(root, "vectors"), i, v)
                if (streq(json_string_value(json_object_get(v, "name")), name))
                        return v;
        fprintf(stderr, "vector %s missing\n", name);
        exit(1);
}

static size_t vector_bytes(json_t *root, const char *name, uint8_t *buf, size_t size) {
        return unhex(json_string_value(json_object_get(find_vector(root, name), "hex")), buf, size);
}

/* The vectors the spec says every parser test must name, with their point spelled out. */
static void test_named_vectors(void) {
        json_t *root = load_json("vectors.json");
        uint8_t b[512];
        size_t n, pending;
        json_t *ev;
        KbspStats st;
        KbspMessage m;
        KbspFrame f;

        current = "meter_flow0_2573_crlf_in_payload";
        n = vector_bytes(root, current, b, sizeof b);
        check(memmem(b + 12, n - 16, "\r\n", 2) != NULL);
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(json_array_size(ev) == 1 && st.frames == 1 && st.garbage_bytes == 0);
        json_decref(ev);

        current = "meter_flow0_20171_crc_is_crlf";
        n = vector_bytes(root, current, b, sizeof b);
        check(b[n - 4] == '\r' && b[n - 3] == '\n');
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(json_array_size(ev) == 1 && st.frames == 1);
        check(kbsp_frame_parse(b, n, true, &f) == 0);
        kbsp_frame_decode(&f, &m);
        check(m.meter_status.meter_reading == 20171);
        json_decref(ev);

        current = "truncated_then_valid";
        n = vector_bytes(root, current, b, sizeof b);
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(st.frames == 1 && st.errors[KBSP_ERROR_BAD_CRC] == 1 && pending == 0);
        json_decref(ev);

        current = "oversize_length_then_valid";
        n = vector_bytes(root, current, b, sizeof b);
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(st.frames == 1 && st.errors[KBSP_ERROR_OVERSIZE_LENGTH] == 1);
        check(json_integer_value(json_object_get(json_array_get(ev, 0), "payload_len")) == 0xffff);
        json_decref(ev);

        current = "garbage_prefix_then_valid";
        n = vector_bytes(root, current, b, sizeof b);
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(st.frames == 1 && st.garbage_bytes == 12);
        check(json_array_size(ev) == 2);
        check(json_integer_value(json_object_get(json_array_get(ev, 0), "size")) == 12);
        json_decref(ev);

        current = "bad_trailer";
        n = vector_bytes(root, current, b, sizeof b);
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(st.frames == 0 && st.errors[KBSP_ERROR_BAD_TRAILER] == 1 && st.errors[KBSP_ERROR_BAD_CRC] == 0);
        json_decref(ev);

        current = "tlv_overrun";
        n = vector_bytes(root, current, b, sizeof b);
        check(kbsp_frame_parse(b, n, true, &f) == 0);
        check(f.tlv_overrun && f.n_records == 1 && f.overrun_tag == 2 && f.overrun_len == 8);
        kbsp_frame_decode(&f, &m);
        check(!m.complete && m.meter_status.has_meter_name && !m.meter_status.has_meter_reading);

        current = "meter_reading_wrong_width";
        n = vector_bytes(root, current, b, sizeof b);
        check(kbsp_frame_parse(b, n, true, &f) == 0);
        kbsp_frame_decode(&f, &m);
        check(!m.complete && m.n_errors == 1 && m.errors[0].kind == KBSP_FIELD_ERROR_BAD_WIDTH);

        current = "max_payload_112";
        n = vector_bytes(root, current, b, sizeof b);
        check(n == KBSP_MAX_FRAME);
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(st.frames == 1);
        json_decref(ev);

        current = "unknown_message_id";
        n = vector_bytes(root, current, b, sizeof b);
        check(kbsp_frame_parse(b, n, true, &f) == 0);
        kbsp_frame_decode(&f, &m);
        check(m.message_id == 0x42 && m.complete && kbsp_message_name(0x42) == NULL);
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(st.frames == 1 && st.errors[KBSP_ERROR_BAD_CRC] == 0);
        json_decref(ev);

        current = "partial_prefix_at_eof";
        n = vector_bytes(root, current, b, sizeof b);
        ev = run_host_all_chunkings(b, n, &pending, &st);
        check(json_array_size(ev) == 0 && pending == 6);
        json_decref(ev);

        /* simulator vectors: the firmware parser's view */
        static const struct {
                const char *name;
                bool accepted;          /* the frame reaches the handler */
                bool accepted_strict;   /* ... with --strict_crc */
        } fw[] = {
                { "host_set_output_android_style_crc", true, false },
                { "host_set_output_bad_crc", true, false },
                { "host_set_output_bad_trailer", false, false },
                { "host_ping_payload_len_256", true, false },
                { "host_set_serial_number_missing_tag", true, true },
                { "host_set_serial_number_30_bytes", true, true },
                { "host_set_output_relay6", true, true },
        };
        for (size_t i = 0; i < ELEMENTSOF(fw); i++) {
                for (int strict = 0; strict < 2; strict++) {
                        KbspFirmwareParser p;
                        KbspEvent e;
                        size_t frames = 0, errors = 0;

                        current = fw[i].name;
                        n = vector_bytes(root, current, b, sizeof b);
                        kbsp_firmware_parser_init(&p, strict);
                        check(kbsp_firmware_parser_feed(&p, b, n) == 0);
                        while (kbsp_firmware_parser_next(&p, &e) > 0) {
                                if (e.type == KBSP_EVENT_FRAME) {
                                        frames++;
                                        if (streq(current, "host_ping_payload_len_256"))
                                                check(e.frame->message_id == KBSP_MSG_PING && e.frame->payload_len == 0);
                                } else if (e.type == KBSP_EVENT_ERROR)
                                        errors++;
                        }
                        check(frames == ((strict ? fw[i].accepted_strict : fw[i].accepted) ? 1u : 0u));
                        check(frames + errors == 1);
                        check(kbsp_firmware_parser_pending(&p) == 0);
                }
        }
        json_decref(root);
}

static void test_stream(void) {
        json_t *exp = load_json("expected.json"), *msgs = json_object_get(exp, "messages");
        json_t *ref = json_object_get(exp, "stream_errors_reference_parser");
        size_t len, pending, i;
        uint8_t *data = load_bin("stream.bin", &len);
        KbspStats st;
        json_t *events, *frames, *e, *errors, *all;

        current = "stream.bin";
        check(len == 1563);
        events = run_host_all_chunkings(data, len, &pending, &st);
        /* more random chunkings with different seeds */
        for (int k = 0; k < 20; k++) {
                size_t p2;
                json_t *other = run_host(data, len, CHUNK_RANDOM, &p2, NULL);
                check_json(other, events);
                json_decref(other);
        }
        check(pending == (size_t) json_integer_value(json_object_get(exp, "pending_bytes_at_end")));
        check(pending == 0);

        /* the 41 messages, in order, at their offsets */
        check(json_array_size(msgs) == 41);
        check(st.frames == 41);
        frames = json_array();
        errors = json_array();
        all = json_array();
        json_array_foreach(events, i, e) {
                const char *t = json_string_value(json_object_get(e, "type"));
                if (streq(t, "frame"))
                        json_array_append(frames, e);
                else if (streq(t, "error")) {
                        json_array_append(errors, json_object_get(e, "error"));
                        json_t *x = json_pack("{s:O}", "event", json_object_get(e, "error"));
                        if (json_integer_value(json_object_get(e, "payload_len")) > KBSP_MAX_PAYLOAD)
                                json_object_set(x, "payload_len", json_object_get(e, "payload_len"));
                        else
                                json_object_set(x, "message_id", json_object_get(e, "message_id"));
                        json_array_append_new(all, x);
                } else
                        json_array_append_new(all, json_pack("{s:s,s:O}", "event", "garbage",
                                                             "bytes", json_object_get(e, "size")));
        }
        check(json_array_size(frames) == 41);
        for (i = 0; i < json_array_size(msgs) && i < json_array_size(frames); i++) {
                json_t *want = json_array_get(msgs, i), *got = json_array_get(frames, i);
                json_t *dec = json_object_get(got, "decoded");
                check_json(json_object_get(got, "offset"), json_object_get(want, "offset"));
                check_json(json_object_get(got, "size"), json_object_get(want, "length"));
                check_json(json_object_get(dec, "message"), json_object_get(want, "message"));
                check_json(json_object_get(dec, "message_id"), json_object_get(want, "message_id"));
                check_json(json_object_get(dec, "fields"), json_object_get(want, "fields"));
                check(json_object_get(dec, "tlv_errors") == NULL);
                size_t off = (size_t) json_integer_value(json_object_get(want, "offset"));
                size_t l = (size_t) json_integer_value(json_object_get(want, "length"));
                char hex[2 * KBSP_MAX_FRAME + 1];
                check(off + l <= len && l <= KBSP_MAX_FRAME);
                if (off + l <= len && l <= KBSP_MAX_FRAME)
                        check(streq(tohex(data + off, l, hex), json_string_value(json_object_get(want, "hex"))));
        }

        /* stream errors without garbage: exact; with garbage: our bookkeeping matches the reference */
        json_t *want_errors = json_array();
        json_array_foreach(ref, i, e)
                if (!streq(json_string_value(json_object_get(e, "event")), "garbage"))
                        json_array_append(want_errors, json_object_get(e, "event"));
        check(json_array_size(want_errors) == 4);
        check_json(errors, want_errors);
        check_json(all, ref);

        json_decref(want_errors);
        json_decref(all);
        json_decref(errors);
        json_decref(frames);
        json_decref(events);
        json_decref(exp);
        free(data);
}

static void test_capture(void) {
        json_t *exp = load_json("capture-one_flow_active.expected.json"), *msgs = json_object_get(exp, "messages");
        size_t len, pending, i;
        uint8_t *data = load_bin("capture-one_flow_active.bin", &len);
        KbspStats st;
        json_t *events, *frames, *f;

        current = "capture-one_flow_active.bin";
        check(len == 684);
        events = run_host_all_chunkings(data, len, &pending, &st);
        frames = select_frames(events);
        check(json_array_size(msgs) == 24);
        check(json_array_size(frames) == 24);
        check(json_array_size(events) == 24);   /* no garbage, no errors */
        check(pending == 0);
        json_array_foreach(frames, i, f) {
                json_t *want = json_array_get(msgs, i);
                if (!want)
                        break;
                check_json(json_object_get(f, "message"), json_object_get(want, "message"));
                check_json(json_object_get(f, "message_id"), json_object_get(want, "message_id"));
                check_json(json_object_get(f, "fields"), json_object_get(want, "fields"));
                check_json(json_object_get(f, "crc"), json_object_get(want, "crc"));
        }
        json_decref(frames);
        json_decref(events);
        json_decref(exp);
        free(data);
}

static void check_encoded(int r, const uint8_t *buf, const char *want_hex) {
        char hex[2 * KBSP_MAX_FRAME + 1];
        check(r > 0);
        if (r <= 0)
                return;
        tohex(buf, (size_t) r, hex);
        if (!streq(hex, want_hex)) {
                fprintf(stderr, "[%s] got      %s\n[%s] expected %s\n", current, hex, current, want_hex);
                check(!"encoding differs");
        }
}

/* Spec section 5 worked examples through the shortcut encoders. */
static void test_encoders(void) {
        uint8_t b[KBSP_MAX_FRAME], tok[5];
        KbspPayload p;
        KbspMessage m;

        current = "encoders";
        check_encoded(kbsp_encode_ping(b, sizeof b), b, "4b4253502076313a81000000d4c70d0a");
        check_encoded(kbsp_encode_meter_status(b, sizeof b, "flow0", 1), b,
                      "4b4253502076313a10000d000105666c6f773002040100000017fb0d0a");
        check_encoded(kbsp_encode_hello(b, sizeof b, 18, "KB-0123-4567", 0, 0), b,
                      "4b4253502076313a0100300001021200031e4b422d303132332d34353637000000000000000000000000000000000000040400000000050400000000e5930d0a");
        check_encoded(kbsp_encode_meter_status(b, sizeof b, "flow0", 4294967295u), b,
                      "4b4253502076313a10000d000105666c6f77300204ffffffff35140d0a");
        check_encoded(kbsp_encode_meter_status(b, sizeof b, "flow0", 20171), b,
                      "4b4253502076313a10000d000105666c6f77300204cb4e00000d0a0d0a");
        check_encoded(kbsp_encode_temperature_reading(b, sizeof b, "thermo-2800000000000000", 4500000), b,
                      "4b4253502076313a11001f000117746865726d6f2d32383030303030303030303030303030020420aa4400394d0d0a");
        check_encoded(kbsp_encode_temperature_reading(b, sizeof b, "thermo-2800000000000000", -1250000), b,
                      "4b4253502076313a11001f000117746865726d6f2d32383030303030303030303030303030020430edecffac6a0d0a");
        check_encoded(kbsp_encode_output_status(b, sizeof b, "relay0", true), b,
                      "4b4253502076313a12000c00010672656c61793002020100a4030d0a");
        check(kbsp_token_from_string("0415AB23CD", tok, sizeof tok) == 5);
        check_encoded(kbsp_encode_auth_token(b, sizeof b, "core.rfid", tok, 5, 1), b,
                      "4b4253502076313a140015000109636f72652e726669640205cd23ab1504030101ea760d0a");
        check_encoded(kbsp_encode_auth_token(b, sizeof b, "core.rfid", tok, 5, 0), b,
                      "4b4253502076313a140015000109636f72652e726669640205cd23ab150403010063670d0a");
        check_encoded(kbsp_encode_set_output(b, sizeof b, 0, true), b,
                      "4b4253502076313a8400070001010002020100c86c0d0a");
        check_encoded(kbsp_encode_set_output(b, sizeof b, 0, false), b,
                      "4b4253502076313a840007000101000202000010750d0a");
        check_encoded(kbsp_encode_set_serial_number(b, sizeof b, "KB-0123-4567"), b,
                      "4b4253502076313a85000f00010d4b422d303132332d3435363700663f0d0a");

        /* legacy frames through the payload builder */
        kbsp_payload_init(&p);
        kbsp_payload_add_u16(&p, 1, 3);
        check_encoded(kbsp_encode_payload_frame(b, sizeof b, KBSP_MSG_HELLO, &p), b,
                      "4b4253502076313a01000400010203002e540d0a");
        kbsp_payload_init(&p);
        kbsp_payload_add(&p, 1, "flow1", 6);
        kbsp_payload_add_u32(&p, 2, 4);
        check_encoded(kbsp_encode_payload_frame(b, sizeof b, KBSP_MSG_METER_STATUS, &p), b,
                      "4b4253502076313a10000e000106666c6f773100020404000000550a0d0a");

        /* limits */
        check(kbsp_encode_ping(b, 15) == -ENOBUFS);
        check(kbsp_encode_ping(b, 16) == 16);
        check(kbsp_encode_set_output(b, sizeof b, 256, true) == -EINVAL);
        check(kbsp_encode_set_serial_number(b, sizeof b, "0123456789012345678901234567") > 0);  /* 28 + NUL */
        check(kbsp_encode_set_serial_number(b, sizeof b, "01234567890123456789012345678") == -EINVAL);
        check(kbsp_encode_hello(b, sizeof b, 18, "01234567890123456789012345678", 0, 0) > 0);   /* 29 */
        check(kbsp_encode_hello(b, sizeof b, 18, "012345678901234567890123456789", 0, 0) == -EINVAL);
        check(kbsp_encode_hello(b, sizeof b, 18, NULL, 0, 0) == 64);
        check(kbsp_encode_meter_status(b, sizeof b, NULL, 0) == -EINVAL);
        check(kbsp_encode_frame(b, sizeof b, 1, b, 113) == -EINVAL);
        kbsp_payload_init(&p);
        kbsp_payload_add(&p, 1, b, 110);
        check(p.error == 0 && p.len == 112);
        kbsp_payload_add(&p, 2, b, 0);
        check(p.error == -EINVAL);
        check(kbsp_encode_payload_frame(b, sizeof b, 1, &p) == -EINVAL);
        kbsp_message_init(&m, 0x42);
        check(kbsp_message_encode(&m, b, sizeof b) == -EINVAL);
        kbsp_message_init(&m, KBSP_MSG_CONFIGURATION);
        m.configuration.has_board_name = m.configuration.has_baud_rate = true;
        snprintf(m.configuration.board_name, sizeof m.configuration.board_name, "kb");
        m.configuration.baud_rate = 9600;
        int r = kbsp_message_encode(&m, b, sizeof b);
        check(r == 16 + 4 + 4);
        KbspFrame f;
        KbspMessage m2;
        check(r > 0 && kbsp_frame_parse(b, (size_t) r, true, &f) == 0);
        kbsp_frame_decode(&f, &m2);
        check(m2.configuration.has_board_name && streq(m2.configuration.board_name, "kb"));
        check(m2.configuration.baud_rate == 9600 && !m2.configuration.has_update_interval);
        /* every typed message survives encode -> decode */
        kbsp_message_init(&m, KBSP_MSG_ONEWIRE_PRESENCE);
        m.onewire_presence.has_device_id = m.onewire_presence.has_status = true;
        m.onewire_presence.device_id = UINT64_C(0x0102030405060708);
        m.onewire_presence.status = 1;
        r = kbsp_message_encode(&m, b, sizeof b);
        check(r > 0 && kbsp_frame_parse(b, (size_t) r, true, &f) == 0);
        kbsp_frame_decode(&f, &m2);
        check(m2.onewire_presence.device_id == UINT64_C(0x0102030405060708) && m2.onewire_presence.status == 1);
        /* the encoder may write in place of its payload */
        memcpy(b + 12, "\x01\x01\x00", 3);
        check_encoded(kbsp_encode_frame(b, sizeof b, KBSP_MSG_SET_OUTPUT, b + 12, 3), b,
                      "4b4253502076313a84000300010100a7c50d0a");
}

static void feed_all(KbspDecoder *d, const void *data, size_t n, KbspEvent *evs, size_t *n_evs, size_t max) {
        KbspEvent ev;
        check(kbsp_decoder_feed(d, data, n) == 0);
        while (kbsp_decoder_next(d, &ev) > 0)
                if (*n_evs < max)
                        evs[(*n_evs)++] = ev;
}

static void test_resync_rules(void) {
        uint8_t frame[KBSP_MAX_FRAME], s[1024];
        KbspEvent evs[32], ev;
        size_t n_evs = 0;
        KbspDecoder d;
        int flen;

        current = "resync";
        flen = kbsp_encode_meter_status(frame, sizeof frame, "flow0", 1);
        check(flen == 29);

        /* rule 2: oversize is reported from the header alone, without waiting for a payload */
        kbsp_decoder_init(&d);
        memcpy(s, "KBSP v1:\x10\x00\xc8\x00", 12);
        feed_all(&d, s, 12, evs, &n_evs, 32);
        check(n_evs == 1 && evs[0].type == KBSP_EVENT_ERROR && evs[0].error == KBSP_ERROR_OVERSIZE_LENGTH);
        check(n_evs == 1 && evs[0].payload_len == 200 && evs[0].offset == 0 && evs[0].size == 1);
        check(kbsp_decoder_pending(&d) == 0);
        check(kbsp_decoder_finish(&d, &ev) == 1 && ev.type == KBSP_EVENT_GARBAGE && ev.size == 11 && ev.offset == 1);

        /* 113 rejected, 112 waited for */
        n_evs = 0;
        kbsp_decoder_init(&d);
        memcpy(s, "KBSP v1:\x10\x00\x70\x00", 12);
        feed_all(&d, s, 12, evs, &n_evs, 32);
        check(n_evs == 0 && kbsp_decoder_pending(&d) == 12);

        /* rule 3: incomplete frames wait; a frame arriving byte by byte comes out on its last byte */
        n_evs = 0;
        kbsp_decoder_init(&d);
        for (int i = 0; i < flen; i++) {
                feed_all(&d, frame + i, 1, evs, &n_evs, 32);
                check(n_evs == (i == flen - 1 ? 1u : 0u));
                check(kbsp_decoder_pending(&d) == (i == flen - 1 ? 0u : (size_t) i + 1));
        }

        /* rule 4: a good frame starting inside a rejected one is recovered, at every cut point */
        for (int cut = 1; cut < flen; cut++) {
                size_t n = 0;
                memcpy(s, frame, (size_t) cut);
                memcpy(s + cut, frame, (size_t) flen);
                n = (size_t) cut + (size_t) flen;
                for (int way = 0; way < 2; way++) {
                        size_t frames = 0, errors = 0;
                        n_evs = 0;
                        kbsp_decoder_init(&d);
                        if (way == 0)
                                feed_all(&d, s, n, evs, &n_evs, 32);
                        else
                                for (size_t i = 0; i < n; i++)
                                        feed_all(&d, s + i, 1, evs, &n_evs, 32);
                        for (size_t i = 0; i < n_evs; i++) {
                                frames += evs[i].type == KBSP_EVENT_FRAME;
                                errors += evs[i].type == KBSP_EVENT_ERROR;
                        }
                        check(frames == 1);
                        check(n_evs > 0 && evs[n_evs - 1].type == KBSP_EVENT_FRAME &&
                              evs[n_evs - 1].offset == (uint64_t) cut);
                        /* a cut inside the prefix is just garbage; past it the CRC fails */
                        check(errors == (cut >= KBSP_PREFIX_LEN ? 1u : 0u));
                        check(kbsp_decoder_pending(&d) == 0);
                }
        }

        /* rule 1: a partial prefix then a real one; several false starts */
        n_evs = 0;
        kbsp_decoder_init(&d);
        {
                static const char junk[] = "KKBKBSKBSP KBSP v\rKBSP v1";
                size_t jl = strlen(junk);
                memcpy(s, junk, jl);
                memcpy(s + jl, frame, (size_t) flen);
                for (size_t i = 0; i < jl + (size_t) flen; i++)
                        feed_all(&d, s + i, 1, evs, &n_evs, 32);
                check(n_evs == 2 && evs[0].type == KBSP_EVENT_GARBAGE && evs[0].size == jl);
                check(n_evs == 2 && evs[1].type == KBSP_EVENT_FRAME && evs[1].offset == jl);
                check(d.stats.garbage_bytes == jl);
        }

        /* rule 5: CR LF inside a frame is no delimiter (payload and CRC) */
        {
                uint8_t f2[KBSP_MAX_FRAME];
                int l2 = kbsp_encode_meter_status(f2, sizeof f2, "flow0", 2573);
                n_evs = 0;
                kbsp_decoder_init(&d);
                feed_all(&d, f2, (size_t) l2, evs, &n_evs, 32);
                check(n_evs == 1 && evs[0].type == KBSP_EVENT_FRAME);
        }

        /* feed before the previous input was drained */
        kbsp_decoder_init(&d);
        check(kbsp_decoder_feed(&d, frame, (size_t) flen) == 0);
        check(kbsp_decoder_feed(&d, frame, (size_t) flen) == -EBUSY);
        check(kbsp_decoder_finish(&d, &ev) == -EBUSY);
        check(kbsp_decoder_next(&d, &ev) == 1 && ev.type == KBSP_EVENT_FRAME);
        check(kbsp_decoder_next(&d, &ev) == 0);
        check(kbsp_decoder_feed(&d, frame, (size_t) flen) == 0);
        check(kbsp_decoder_next(&d, &ev) == 1 && ev.offset == (uint64_t) flen);
        check(kbsp_decoder_next(&d, &ev) == 0);
        check(kbsp_decoder_next(&d, &ev) == 0);
        check(kbsp_decoder_feed(&d, NULL, 0) == 0);
        check(kbsp_decoder_next(&d, &ev) == 0);

        /* heap constructor + cleanup */
        {
                _cleanup_(kbsp_decoder_freep) KbspDecoder *h = NULL;
                check(kbsp_decoder_new(&h) == 0);
                check(kbsp_decoder_feed(h, frame, (size_t) flen) == 0);
                check(kbsp_decoder_next(h, &ev) == 1 && ev.type == KBSP_EVENT_FRAME);
                check(h->stats.frames == 1);
        }
}

/* Random streams of frames, noise and damaged frames: every chunking gives the same events. */
static void test_random_streams(void) {
        current = "random-streams";
        rng_state = 12345;
        for (int round = 0; round < 150; round++) {
                uint8_t s[2048];
                size_t n = 0, pending;
                KbspStats st;
                while (n < sizeof s - KBSP_MAX_FRAME) {
                        uint8_t f[KBSP_MAX_FRAME];
                        int l;
                        switch (rng() % 6) {
                        case 0:
                                l = kbsp_encode_hello(f, sizeof f, 18, "KB-0000-0000-1A2B3C4D",
                                                      (uint32_t) rng(), (uint32_t) rng() % 5);
                                break;
                        case 1:
                                l = kbsp_encode_temperature_reading(f, sizeof f, "thermo-6b0316621d4cff28",
                                                                    (int32_t) (rng() % 100000000));
                                break;
                        default:
                                l = kbsp_encode_meter_status(f, sizeof f, "flow1", (uint32_t) rng());
                        }
                        check(l > 0);
                        switch (rng() % 8) {
                        case 0: /* truncate */
                                l = (int) (rng() % (uint64_t) l);
                                break;
                        case 1: /* flip a byte */
                                f[rng() % (uint64_t) l] ^= (uint8_t) (1 + rng() % 255);
                                break;
                        case 2: /* noise, with prefix pieces */
                                l = (int) (rng() % 20);
                                for (int i = 0; i < l; i++)
                                        f[i] = (rng() % 3 == 0) ? (uint8_t) KBSP_PREFIX[rng() % 8] : (uint8_t) rng();
                                break;
                        default:
                                break;
                        }
                        memcpy(s + n, f, (size_t) l);
                        n += (size_t) l;
                }
                json_t *ev = run_host_all_chunkings(s, n, &pending, &st);
                json_decref(ev);
        }
}

static void test_firmware_parser(void) {
        KbspFirmwareParser p;
        KbspEvent ev;
        uint8_t b[256], f[KBSP_MAX_FRAME];
        int l;

        current = "firmware-parser";

        /* prefix hunt with a repeated K, then a set_output */
        l = kbsp_encode_set_output(f, sizeof f, 2, true);
        memcpy(b, "xxKKBSPKB", 9);
        memcpy(b + 9, f, (size_t) l);
        kbsp_firmware_parser_init(&p, true);
        check(kbsp_firmware_parser_feed(&p, b, 9 + (size_t) l) == 0);
        check(kbsp_firmware_parser_next(&p, &ev) == 1 && ev.type == KBSP_EVENT_GARBAGE && ev.size == 9);
        check(kbsp_firmware_parser_next(&p, &ev) == 1 && ev.type == KBSP_EVENT_FRAME && ev.offset == 9);
        check(ev.frame->message_id == KBSP_MSG_SET_OUTPUT);
        check(kbsp_record_value(ev.frame, kbsp_frame_find_record(ev.frame, 1))[0] == 2);
        check(kbsp_firmware_parser_next(&p, &ev) == 0);
        check(p.stats.frames == 1 && p.stats.garbage_bytes == 9);

        /* low byte > 112: dropped, and the bytes after the header are hunted afresh (no rescan) */
        memcpy(b, "KBSP v1:\x81\x00\x71\x00", 12);
        memcpy(b + 12, f, (size_t) l);
        kbsp_firmware_parser_init(&p, false);
        check(kbsp_firmware_parser_feed(&p, b, 12 + (size_t) l) == 0);
        check(kbsp_firmware_parser_next(&p, &ev) == 1 && ev.type == KBSP_EVENT_ERROR &&
              ev.error == KBSP_ERROR_OVERSIZE_LENGTH && ev.size == 12);
        check(kbsp_firmware_parser_next(&p, &ev) == 1 && ev.type == KBSP_EVENT_FRAME && ev.offset == 12);

        /* the firmware consumes a bad frame's bytes: a frame hidden inside is lost (unlike the host) */
        memcpy(b, f, 14);
        memcpy(b + 14, f, (size_t) l);
        kbsp_firmware_parser_init(&p, false);
        check(kbsp_firmware_parser_feed(&p, b, 14 + (size_t) l) == 0);
        check(kbsp_firmware_parser_next(&p, &ev) == 1 && ev.type == KBSP_EVENT_ERROR &&
              ev.error == KBSP_ERROR_BAD_TRAILER && ev.size == (uint64_t) l);
        /* the remaining 14 bytes hold no 'K': garbage */
        check(kbsp_firmware_parser_next(&p, &ev) == 0);
        check(kbsp_firmware_parser_pending(&p) == 0);
        check(kbsp_firmware_parser_finish(&p, &ev) == 1 && ev.type == KBSP_EVENT_GARBAGE && ev.size == 14);
        check(p.stats.frames == 0);

        /* CRC: ignored by default, enforced with strict_crc */
        memcpy(b, f, (size_t) l);
        b[l - 4] ^= 0xff;
        for (int strict = 0; strict < 2; strict++) {
                kbsp_firmware_parser_init(&p, strict);
                check(kbsp_firmware_parser_feed(&p, b, (size_t) l) == 0);
                check(kbsp_firmware_parser_next(&p, &ev) == 1);
                check(ev.type == (strict ? KBSP_EVENT_ERROR : KBSP_EVENT_FRAME));
                check(!strict || ev.error == KBSP_ERROR_BAD_CRC);
        }

        /* byte-at-a-time feeding */
        kbsp_firmware_parser_init(&p, false);
        size_t frames = 0;
        for (int i = 0; i < l; i++) {
                check(kbsp_firmware_parser_feed(&p, f + i, 1) == 0);
                while (kbsp_firmware_parser_next(&p, &ev) > 0)
                        frames += ev.type == KBSP_EVENT_FRAME;
        }
        check(frames == 1);
        check(kbsp_firmware_parser_feed(&p, f, 1) == 0);
        check(kbsp_firmware_parser_feed(&p, f, 1) == -EBUSY);

        /* trailing garbage is reported at the end */
        kbsp_firmware_parser_init(&p, false);
        check(kbsp_firmware_parser_feed(&p, "abcKB", 5) == 0);
        check(kbsp_firmware_parser_next(&p, &ev) == 0);
        check(kbsp_firmware_parser_finish(&p, &ev) == 1 && ev.size == 3);
        check(kbsp_firmware_parser_pending(&p) == 2);
}

static void test_tlv(void) {
        uint8_t b[KBSP_MAX_FRAME];
        KbspPayload p;
        KbspFrame f;
        KbspMessage m;
        char t[128];
        int l;

        current = "tlv";
        /* duplicate tags: the first wins, even when it is malformed; unknown tags skipped */
        kbsp_payload_init(&p);
        kbsp_payload_add(&p, 9, "zz", 2);
        kbsp_payload_add_string(&p, 1, "flow0");
        kbsp_payload_add_u16(&p, 2, 7);
        kbsp_payload_add_u32(&p, 2, 1234);
        kbsp_payload_add_string(&p, 1, "flow1");
        l = kbsp_encode_payload_frame(b, sizeof b, KBSP_MSG_METER_STATUS, &p);
        check(l > 0 && kbsp_frame_parse(b, (size_t) l, true, &f) == 0);
        check(f.n_records == 5 && !f.tlv_overrun);
        kbsp_frame_decode(&f, &m);
        check(streq(m.meter_status.meter_name, "flow0"));
        check(!m.meter_status.has_meter_reading && !m.complete);
        check(m.n_errors == 1);
        kbsp_field_error_format(&m.errors[0], t, sizeof t);
        check(streq(t, "bad_value(tag=2): width 2 != 4"));

        /* output state: 1 or 2 bytes, any non-zero first byte is on; 3 bytes is an error */
        kbsp_payload_init(&p);
        kbsp_payload_add_string(&p, 1, "relay2");
        kbsp_payload_add(&p, 2, "\x07", 1);
        l = kbsp_encode_payload_frame(b, sizeof b, KBSP_MSG_OUTPUT_STATUS, &p);
        check(l > 0 && kbsp_frame_parse(b, (size_t) l, true, &f) == 0);
        kbsp_frame_decode(&f, &m);
        check(m.complete && m.output_status.output_reading);
        kbsp_payload_init(&p);
        kbsp_payload_add_string(&p, 1, "relay2");
        kbsp_payload_add(&p, 2, "\x01\x00\x00", 3);
        l = kbsp_encode_payload_frame(b, sizeof b, KBSP_MSG_OUTPUT_STATUS, &p);
        check(l > 0 && kbsp_frame_parse(b, (size_t) l, true, &f) == 0);
        kbsp_frame_decode(&f, &m);
        check(!m.complete && m.n_errors == 1);
        kbsp_field_error_format(&m.errors[0], t, sizeof t);
        check(streq(t, "bad_value(tag=2): width 3 not 1 or 2"));

        /* a lone tag byte at the payload end */
        l = kbsp_encode_frame(b, sizeof b, KBSP_MSG_HELLO, "\x01\x02\x12\x00\x05", 5);
        check(l > 0 && kbsp_frame_parse(b, (size_t) l, true, &f) == 0);
        check(f.tlv_overrun && !f.overrun_has_len && f.overrun_tag == 5 && f.n_records == 1);
        kbsp_frame_decode(&f, &m);
        check(m.complete && m.hello.firmware_version == 18 && m.n_errors == 1);
        kbsp_field_error_format(&m.errors[0], t, sizeof t);
        check(streq(t, "tlv_overrun(tag=5)"));

        /* strings stop at the first NUL; empty strings are fine */
        l = kbsp_encode_frame(b, sizeof b, KBSP_MSG_AUTH_TOKEN, "\x01\x04on\0x\x02\x00\x03\x01\x01", 11);
        check(l > 0 && kbsp_frame_parse(b, (size_t) l, true, &f) == 0);
        kbsp_frame_decode(&f, &m);
        check(m.complete && streq(m.auth_token.device, "on") && m.auth_token.token_len == 0);

        /* frame_parse rejects what is not exactly one frame */
        l = kbsp_encode_ping(b, sizeof b);
        check(kbsp_frame_parse(b, (size_t) l - 1, false, &f) == -EBADMSG);
        check(kbsp_frame_parse(b, 15, false, &f) == -EBADMSG);
        b[12] ^= 1;
        check(kbsp_frame_parse(b, (size_t) l, true, &f) == -EBADMSG);
        check(kbsp_frame_parse(b, (size_t) l, false, &f) == 0);
        b[15] = 'x';
        check(kbsp_frame_parse(b, (size_t) l, false, &f) == -EBADMSG);
}

static void check_text(const uint8_t *frame, size_t len, const char *want) {
        KbspDecoder d;
        KbspEvent ev;
        char t[KBSP_TEXT_MAX];

        kbsp_decoder_init(&d);
        check(kbsp_decoder_feed(&d, frame, len) == 0);
        check(kbsp_decoder_next(&d, &ev) == 1);
        int r = kbsp_event_format(&ev, t, sizeof t);
        check(r == (int) strlen(t));
        if (!streq(t, want)) {
                fprintf(stderr, "[%s] text: %s\n[%s] want: %s\n", current, t, current, want);
                check(!"text differs");
        }
}

static void test_format(void) {
        json_t *root = load_json("vectors.json");
        uint8_t b[512];
        size_t n;
        char t[KBSP_TEXT_MAX];
        static const struct { const char *vec, *text; } cases[] = {
                { "hello_fw18_boot", "hello firmware_version=18 serial_number=KB-0123-4567 uptime_ms=0 uptime_days=0" },
                { "hello_fw18_no_serial", "hello firmware_version=18 serial_number=\"\" uptime_ms=0 uptime_days=0" },
                { "thermo_ds18b20_4_5C", "temperature_reading sensor_name=thermo-6b0316621d4cff28 sensor_reading=4.5" },
                { "thermo_ds18b20_85C_poweron", "temperature_reading sensor_name=thermo-6b0316621d4cff28 sensor_reading=85.0" },
                { "thermo_ds18b20_minus_1_25C", "temperature_reading sensor_name=thermo-6b0316621d4cff28 sensor_reading=-1.25" },
                { "meter_flow0_2200", "meter_status meter_name=flow0 meter_reading=2200" },
                { "auth_core_rfid_present", "auth_token device=core.rfid token=cd23ab1504 token_string=0415ab23cd status=1" },
                { "output_status_relay0_off", "output_status output_name=relay0 output_reading=0" },
                { "unknown_message_id", "unknown message_id=0x42 payload_len=5" },
                { "tlv_overrun", "meter_status meter_name=flow0 tlv_error=tlv_overrun(tag=2,len=8) missing=meter_reading" },
                { "meter_reading_wrong_width", "meter_status meter_name=flow0 tlv_error=\"bad_value(tag=2): width 2 != 4\" missing=meter_reading" },
                { "meter_no_tags", "meter_status missing=meter_name,meter_reading" },
                { "ping", "ping" },
                { "set_output_relay0_on", "set_output output_id=0 output_mode=1" },
                { "set_serial_number", "set_serial_number serial_number=KB-0123-4567" },
                { "legacy_onewire_presence_capture", "onewire_presence device_id=0" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                current = cases[i].vec;
                n = vector_bytes(root, cases[i].vec, b, sizeof b);
                check_text(b, n, cases[i].text);
        }
        json_decref(root);

        current = "format";
        KbspEvent ev = { .type = KBSP_EVENT_ERROR, .error = KBSP_ERROR_BAD_CRC };
        kbsp_event_format(&ev, t, sizeof t);
        check(streq(t, "error bad_crc"));
        ev = (KbspEvent) { .type = KBSP_EVENT_GARBAGE, .size = 9 };
        kbsp_event_format(&ev, t, sizeof t);
        check(streq(t, "garbage bytes=9"));
        /* truncation keeps snprintf semantics */
        check(kbsp_event_format(&ev, t, 4) == 15 && streq(t, "gar"));
        check(kbsp_event_format(&ev, NULL, 0) == 15);

        /* quoting */
        uint8_t f[KBSP_MAX_FRAME];
        int l = kbsp_encode_meter_status(f, sizeof f, "a b\"\\\x01", 5);
        check_text(f, (size_t) l, "meter_status meter_name=\"a b\\\"\\\\\\u0001\" meter_reading=5");
        /* the worst case fits KBSP_TEXT_MAX */
        KbspMessage m;
        kbsp_message_init(&m, KBSP_MSG_AUTH_TOKEN);
        memset(m.auth_token.device, 1, 50);
        m.auth_token.has_device = m.auth_token.has_token = true;
        m.auth_token.token_len = KBSP_MAX_PAYLOAD;
        m.n_errors = KBSP_MAX_FIELD_ERRORS;
        check(kbsp_message_format(&m, NULL, t, sizeof t) < KBSP_TEXT_MAX);
}

static void test_naming(void) {
        char name[KBSP_BOARD_NAME_MAX], tok[64], thermo[KBSP_THERMO_NAME_MAX], port[64];
        uint8_t raw[16];
        unsigned id = 99;

        current = "naming";
        kbsp_board_name("KB-0000-0000-1A2B3C4D", name);
        check(streq(name, "kegboard-1a2b3c4d"));
        kbsp_board_name("KB-0123-4567", name);
        check(streq(name, "kegboard-123-4567"));
        kbsp_board_name("", name);
        check(streq(name, "kegboard"));
        kbsp_board_name(NULL, name);
        check(streq(name, "kegboard"));
        kbsp_board_name("ab.C d", name);
        check(streq(name, "kegboard-ab_c_d"));
        kbsp_board_name("x_Y-9", name);
        check(streq(name, "kegboard-x_y-9"));

        check(streq(kbsp_token_to_string("\xcd\x23\xab\x15\x04", 5, tok), "0415ab23cd"));
        check(streq(kbsp_token_to_string("\x01\x6b\x9c\x0e\x14\x00\x00\x51", 8, tok), "510000140e9c6b01"));
        check(streq(kbsp_token_to_string("\x01\x02\x03", 3, tok), "030201"));
        check(streq(kbsp_token_to_string("", 0, tok), ""));
        check(kbsp_token_from_string("510000140e9c6b01", raw, sizeof raw) == 8);
        check(memcmp(raw, "\x01\x6b\x9c\x0e\x14\x00\x00\x51", 8) == 0);
        check(kbsp_token_from_string("abc", raw, sizeof raw) == -EINVAL);
        check(kbsp_token_from_string("zz", raw, sizeof raw) == -EINVAL);
        check(kbsp_token_from_string("0102", raw, 1) == -ENOBUFS);
        check(kbsp_token_from_string("", raw, sizeof raw) == 0);

        check(streq(kbsp_auth_device_name("onewire"), "core.onewire"));
        check(streq(kbsp_auth_device_name("core.rfid"), "core.rfid"));

        kbsp_thermo_name((const uint8_t[]) { 0x28, 0xff, 0x4c, 0x1d, 0x62, 0x16, 0x03, 0x6b }, thermo);
        check(streq(thermo, "thermo-6b0316621d4cff28"));

        check(kbsp_port_name(port, sizeof port, "kegboard", "flow0") == 14 && streq(port, "kegboard.flow0"));
        kbsp_port_name(port, sizeof port, "kegboard-1a2b3c4d", "flow1");
        check(streq(port, "kegboard-1a2b3c4d.flow1"));

        check(kbsp_relay_parse("kegboard.relay0", "kegboard", &id) == 1 && id == 0);
        check(kbsp_relay_parse("kegboard.relay5", "kegboard", &id) == 1 && id == 5);
        check(kbsp_relay_parse("kegboard.relay6", "kegboard", &id) == -EINVAL);
        check(kbsp_relay_parse("kegboard.relay", "kegboard", &id) == -EINVAL);
        check(kbsp_relay_parse("kegboard.relay01", "kegboard", &id) == -EINVAL);
        check(kbsp_relay_parse("kegboard.flow0", "kegboard", &id) == -EINVAL);
        check(kbsp_relay_parse("kegboard-1a2b3c4d.relay1", "kegboard", &id) == 0);
        check(kbsp_relay_parse("kegboard-1a2b3c4d.relay1", "kegboard-1a2b3c4d", &id) == 1 && id == 1);
        check(kbsp_relay_parse("kegboard", "kegboard", &id) == 0);
        check(kbsp_relay_parse("keg.relay0", "kegboard", &id) == 0);

        KbspHello h = { .uptime_ms = 43200000, .uptime_days = 3 };
        check(kbsp_hello_uptime_total_ms(&h) == UINT64_C(302400000));
        check(kbsp_temperature_c(-1250000) == -1.25);
}

int main(void) {
        test_run(test_crc);
        test_run(test_encoders);
        test_run(test_tlv);
        test_run(test_resync_rules);
        test_run(test_firmware_parser);
        test_run(test_vectors);
        test_run(test_named_vectors);
        test_run(test_stream);
        test_run(test_capture);
        test_run(test_random_streams);
        test_run(test_format);
        test_run(test_naming);

        return test_result();
}
