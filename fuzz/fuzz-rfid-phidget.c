/* Fuzz target for the PhidgetRFID 1023 parts of rfid_daemon: the first byte picks v1 or v2 (bit 0)
 * and report or descriptor mode (bit 1). Report mode: the rest is a sequence of reports, each a
 * length byte (mod 65) and that many bytes. Descriptor mode: the rest is a report descriptor, and
 * the output report is built for whatever length it gives. Invariants: no crash, no read past the
 * input, every tag is a token as section 6.1 says, lengths stay in bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phidget.h"
#include "presence.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reports(PhidgetModel model, const uint8_t *p, size_t n) {
        while (n > 0) {
                size_t len = MIN((size_t) (p[0] % 65), n - 1);
                uint8_t *copy = malloc(len ? len : 1);    /* exactly len bytes: ASan sees any overread */
                PhidgetReport r;

                if (!copy)
                        return;
                memcpy(copy, p + 1, len);
                if (len > 0) {
                        phidget_report_parse(model, copy, len, &r);
                        if (r.kind == PHIDGET_REPORT_TAG && (!rfid_token_is_valid(r.tag) || strlen(r.tag) != 10))
                                abort();
                        if (len < 6 && r.kind != PHIDGET_REPORT_SHORT)
                                abort();
                        if (model == PHIDGET_MODEL_V1 && (r.kind == PHIDGET_REPORT_ECHO || r.kind == PHIDGET_REPORT_UNKNOWN_TYPE))
                                abort();
                }
                free(copy);
                p += 1 + len;
                n -= 1 + len;
        }
}

static void descriptor(const uint8_t *p, size_t n) {
        uint8_t *copy = malloc(n ? n : 1);
        uint8_t out[1 + PHIDGET_REPORT_MAX];
        size_t in_len, out_len;

        if (!copy)
                return;
        memcpy(copy, p, n);
        if (phidget_descriptor_walk(copy, n, &in_len, &out_len) == 0) {
                if (out_len > PHIDGET_REPORT_MAX)
                        abort();
                if (phidget_output_report(0x0c, out_len, out) != (out_len ? 1 + out_len : 0))
                        abort();
        }
        free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        PhidgetModel model;

        if (size < 1)
                return 0;
        model = data[0] & 1 ? PHIDGET_MODEL_V2 : PHIDGET_MODEL_V1;
        if (data[0] & 2)
                descriptor(data + 1, size - 1);
        else
                reports(model, data + 1, size - 1);
        return 0;
}
