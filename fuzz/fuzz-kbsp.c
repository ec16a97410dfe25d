/* Fuzz target for the KBSP host decoder and the firmware receive parser: arbitrary bytes in a few
 * chunkings (derived from the first byte) must give the same events, account for every byte, and
 * every frame must decode, render and re-encode without trouble. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbsp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EVENTS 4096

typedef struct Rec {
        KbspEventType type;
        KbspError error;
        uint64_t offset, size;
        uint16_t message_id;
} Rec;

static bool recs_equal(const Rec *x, const Rec *y, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (x[i].type != y[i].type || x[i].error != y[i].error || x[i].offset != y[i].offset ||
                    x[i].size != y[i].size || x[i].message_id != y[i].message_id)
                        return false;
        return true;
}

static void inspect_frame(const KbspFrame *f) {
        KbspMessage m;
        KbspFrame g;
        uint8_t out[KBSP_MAX_FRAME];
        char text[KBSP_TEXT_MAX];
        int r;

        if (f->size < KBSP_MIN_FRAME || f->size > KBSP_MAX_FRAME || f->n_records > KBSP_MAX_RECORDS)
                abort();
        kbsp_frame_decode(f, &m);
        r = kbsp_message_format(&m, f, text, sizeof text);
        if (r < 0 || r >= KBSP_TEXT_MAX || strlen(text) != (size_t) r)
                abort();
        /* a frame without an overrun re-encodes to its own records; that frame parses back */
        r = kbsp_encode_records(out, sizeof out, f);
        if (!f->tlv_overrun) {
                if (r < 0 || kbsp_frame_parse(out, (size_t) r, true, &g) < 0 || g.n_records != f->n_records)
                        abort();
        }
        /* a typed re-encode, when it works, decodes to a frame again */
        r = kbsp_message_encode(&m, out, sizeof out);
        if (r > 0 && kbsp_frame_parse(out, (size_t) r, true, &g) < 0)
                abort();
}

static size_t run_host(const uint8_t *data, size_t size, unsigned mode, Rec *recs) {
        KbspDecoder d;
        KbspEvent ev;
        uint64_t accounted = 0;
        size_t n = 0, off = 0, step = 1;
        unsigned seed = mode;

        kbsp_decoder_init(&d);
        while (off < size) {
                size_t c;
                switch (mode % 4) {
                case 0:
                        c = size;
                        break;
                case 1:
                        c = 1;
                        break;
                case 2:
                        c = step++ % 13 + 1;
                        break;
                default:
                        seed = seed * 1103515245u + 12345u;
                        c = (seed >> 16) % 150 + 1;
                }
                c = MIN(c, size - off);
                if (kbsp_decoder_feed(&d, data + off, c) < 0)
                        abort();
                off += c;
                while (kbsp_decoder_next(&d, &ev) > 0) {
                        if (ev.offset != accounted || ev.size == 0)
                                abort();
                        accounted += ev.size;
                        if (ev.type == KBSP_EVENT_FRAME)
                                inspect_frame(ev.frame);
                        if (n < MAX_EVENTS)
                                recs[n++] = (Rec) { ev.type, ev.error, ev.offset, ev.size, ev.message_id };
                }
        }
        if (kbsp_decoder_finish(&d, &ev) > 0) {
                accounted += ev.size;
                if (n < MAX_EVENTS)
                        recs[n++] = (Rec) { ev.type, ev.error, ev.offset, ev.size, ev.message_id };
        }
        if (accounted + kbsp_decoder_pending(&d) != size || d.stats.bytes != size)
                abort();
        if (kbsp_decoder_pending(&d) >= KBSP_MAX_FRAME)
                abort();
        return n;
}

static void run_firmware(const uint8_t *data, size_t size, bool strict, bool bytewise) {
        KbspFirmwareParser p;
        KbspEvent ev;
        uint64_t accounted = 0;

        kbsp_firmware_parser_init(&p, strict);
        for (size_t off = 0; off < size;) {
                size_t c = bytewise ? 1 : size - off;
                if (kbsp_firmware_parser_feed(&p, data + off, c) < 0)
                        abort();
                off += c;
                while (kbsp_firmware_parser_next(&p, &ev) > 0) {
                        if (ev.offset != accounted)
                                abort();
                        accounted += ev.size;
                        if (ev.type == KBSP_EVENT_FRAME)
                                inspect_frame(ev.frame);
                }
        }
        if (kbsp_firmware_parser_finish(&p, &ev) > 0)
                accounted += ev.size;
        if (accounted + kbsp_firmware_parser_pending(&p) != size)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static Rec a[MAX_EVENTS], b[MAX_EVENTS];
        unsigned mode = size > 0 ? data[0] : 0;
        size_t na, nb;

        if (size > 1 << 16)
                return 0;

        /* the reference chunking (whole input) against one picked by the first byte */
        na = run_host(data, size, 0, a);
        nb = run_host(data, size, mode | 1, b);
        if (na != nb || !recs_equal(a, b, na))
                abort();
        nb = run_host(data, size, 1, b);
        if (na != nb || !recs_equal(a, b, na))
                abort();

        run_firmware(data, size, mode & 2, mode & 4);
        return 0;
}
