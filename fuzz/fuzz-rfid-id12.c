/* Fuzz target for the ID-12 frame parser: the input is split into chunks, each a header byte (bits
 * 0-4: chunk length, bits 5-7: time step of 0..7 x 60 ms, so the stale rule is crossed too) and that
 * many bytes. The same bytes are then fed one at a time at a constant time: both feedings must give
 * the same reads whenever no time step passed the stale limit. Invariants: no crash, no read past
 * the input, every read a valid 10-digit token. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "id12.h"
#include "presence.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Reads {
        char tokens[64][11];
        size_t n;
        size_t events;
} Reads;

static void collect(const Id12Event *ev, void *userdata) {
        Reads *r = userdata;

        r->events++;
        if (ev->result != ID12_READ)
                return;
        if (!rfid_token_is_valid(ev->token) || strlen(ev->token) != 10)
                abort();
        if (r->n < 64)
                memcpy(r->tokens[r->n++], ev->token, 11);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Id12Parser chunked, bytewise;
        Reads a = {}, b = {};
        uint64_t now = 0;
        bool stale_steps = false;
        size_t i = 0;

        id12_parser_init(&chunked, collect, &a);
        id12_parser_init(&bytewise, collect, &b);
        while (i < size) {
                size_t len = MIN((size_t) (data[i] & 31), size - i - 1);
                uint64_t step = (uint64_t) (data[i] >> 5) * 60 * USEC_PER_MSEC;
                uint8_t *copy = malloc(len ? len : 1);

                if (!copy)
                        return 0;
                memcpy(copy, data + i + 1, len);
                stale_steps = stale_steps || step > ID12_STALE_USEC;
                now += step;
                id12_parser_feed(&chunked, copy, len, now);
                for (size_t k = 0; k < len; k++)
                        id12_parser_feed(&bytewise, copy + k, 1, 0);
                free(copy);
                i += 1 + len;
        }
        if (!stale_steps) {
                if (a.n != b.n)
                        abort();
                for (size_t k = 0; k < a.n; k++)
                        if (strcmp(a.tokens[k], b.tokens[k]) != 0)
                                abort();
        }
        return 0;
}
