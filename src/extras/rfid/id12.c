/* ID-12 frame parser: see id12.h. */
#include "id12.h"
#include "util-hex.h"

static const char *const result_names[_ID12_RESULT_MAX] = {
        [ID12_READ] = "read",
        [ID12_NOISE] = "noise",
        [ID12_STALE] = "stale",
        [ID12_TRUNCATED] = "truncated",
        [ID12_BAD_CHARACTER] = "bad_character",
        [ID12_BAD_TRAILER] = "bad_trailer",
        [ID12_BAD_CHECKSUM] = "bad_checksum",
};

const char *id12_result_to_string(Id12Result r) {
        return (unsigned) r < _ID12_RESULT_MAX ? result_names[r] : NULL;
}

void id12_parser_init(Id12Parser *p, Id12Callback callback, void *userdata) {
        assert_return(p, );

        *p = (Id12Parser) { .state = ID12_HUNT, .callback = callback, .userdata = userdata };
}

static void emit(Id12Parser *p, const Id12Event *ev) {
        if (p->callback)
                p->callback(ev, p->userdata);
}

static void emit_simple(Id12Parser *p, Id12Result r, uint8_t byte, unsigned offset) {
        emit(p, &(Id12Event) { .result = r, .byte = byte, .offset = offset });
}

static void start_frame(Id12Parser *p) {
        p->state = ID12_BODY;
        p->ndigits = 0;
        p->ncrlf = 0;
}

static void complete_frame(Id12Parser *p) {
        uint8_t bytes[ID12_DIGITS / 2], x = 0;
        Id12Event ev = { .result = ID12_READ };

        for (unsigned i = 0; i < ID12_DIGITS / 2; i++)
                bytes[i] = (uint8_t) (unhexchar(p->digits[2 * i]) << 4 | unhexchar(p->digits[2 * i + 1]));
        for (unsigned i = 0; i < 5; i++)
                x ^= bytes[i];

        if (x != bytes[5]) {
                ev.result = ID12_BAD_CHECKSUM;
                for (unsigned i = 0; i < 10; i++) {
                        char c = p->digits[i];
                        ev.card[i] = (char) (c >= 'a' && c <= 'f' ? c - 'a' + 'A' : c);
                }
                ev.card[10] = '\0';
                ev.checksum = bytes[5];
                ev.expected = x;
        } else {
                for (unsigned i = 0; i < 10; i++) {
                        char c = p->digits[i];
                        ev.token[i] = (char) (c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
                }
                ev.token[10] = '\0';
        }
        p->state = ID12_HUNT;
        emit(p, &ev);
}

static void feed_byte(Id12Parser *p, uint8_t b) {
        switch (p->state) {
        case ID12_HUNT:
                if (b == ID12_STX)
                        start_frame(p);
                else
                        emit_simple(p, ID12_NOISE, b, 0);
                return;

        case ID12_BODY:
                if (b == ID12_STX) {
                        emit_simple(p, ID12_TRUNCATED, b, 1 + p->ndigits);
                        start_frame(p);
                } else if (unhexchar((char) b) >= 0) {
                        p->digits[p->ndigits++] = (char) b;
                        if (p->ndigits == ID12_DIGITS)
                                p->state = ID12_TRAILER;
                } else {
                        emit_simple(p, ID12_BAD_CHARACTER, b, 1 + p->ndigits);
                        p->state = ID12_HUNT;
                }
                return;

        case ID12_TRAILER:
                if (b == ID12_ETX)
                        complete_frame(p);
                else if (b == ID12_STX) {
                        emit_simple(p, ID12_TRUNCATED, b, 1 + ID12_DIGITS + p->ncrlf);
                        start_frame(p);
                } else if ((b == '\r' || b == '\n') && p->ncrlf < 2)
                        p->ncrlf++;
                else {
                        emit_simple(p, ID12_BAD_TRAILER, b, 1 + ID12_DIGITS + p->ncrlf);
                        p->state = ID12_HUNT;
                }
                return;
        }
}

void id12_parser_feed(Id12Parser *p, const uint8_t *buf, size_t n, uint64_t now) {
        assert_return(p, );
        assert_return(buf || n == 0, );

        if (n == 0)
                return;
        /* The stale check comes before the new bytes are looked at. */
        if (p->state != ID12_HUNT && now > p->last_byte + ID12_STALE_USEC) {
                emit_simple(p, ID12_STALE, 0, 1 + p->ndigits + p->ncrlf);
                p->state = ID12_HUNT;
        }
        for (size_t i = 0; i < n; i++)
                feed_byte(p, buf[i]);
        p->last_byte = now;
}
