/* Fuzz target for the keyboard-wedge decoder: the input is read as records of 6 bytes - type
 * (mod 5: EV_SYN, EV_KEY, a few others), code (16 bits, little-endian), value (signed, mod 4 - 1:
 * -1..2), and a time step in units of 10 ms. Invariants: no crash, every read a valid token of at
 * most 64 characters, at most two events per record. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyboard.h"
#include "presence.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const uint16_t types[5] = { 0 /* EV_SYN */, 1 /* EV_KEY */, 1, 4 /* EV_MSC */, 17 /* EV_LED */ };
        KeyboardDecoder k;
        uint64_t now = 0;

        keyboard_decoder_init(&k);
        for (size_t i = 0; i + 6 <= size; i += 6) {
                KeyboardEvent out[2];
                uint16_t code = (uint16_t) (data[i + 1] | data[i + 2] << 8);
                int32_t value = (int32_t) (data[i + 3] % 4) - 1;
                size_t n;

                now += (uint64_t) data[i + 4] * 10 * USEC_PER_MSEC;
                /* Mostly small codes (the keys that matter), sometimes any. */
                if (!(data[i + 5] & 1))
                        code %= 128;
                n = keyboard_decoder_feed(&k, types[data[i] % 5], code, value, now, out);
                if (n > 2)
                        abort();
                for (size_t e = 0; e < n; e++)
                        if (out[e].result == KEYBOARD_READ &&
                            (!rfid_token_is_valid(out[e].token) || strlen(out[e].token) > KEYBOARD_LINE_MAX))
                                abort();
        }
        return 0;
}
