/* PhidgetRFID 1023 reports and rules: see phidget.h. */
#include "phidget.h"
#include "util-hex.h"

int phidget_model_from_ids(unsigned vendor, unsigned product, PhidgetModel *ret) {
        assert_return(ret, -EINVAL);

        if (vendor != PHIDGET_VENDOR_ID)
                return -ENODEV;
        switch (product) {
        case PHIDGET_PRODUCT_V1:
                *ret = PHIDGET_MODEL_V1;
                return 0;
        case PHIDGET_PRODUCT_V2:
                *ret = PHIDGET_MODEL_V2;
                return 0;
        case PHIDGET_PRODUCT_1024:
                return -EOPNOTSUPP;
        default:
                return -ENODEV;
        }
}

static void parse_tag(const uint8_t *buf, PhidgetReport *ret) {
        const uint8_t *tag = buf + 1;
        bool any = false;

        for (size_t i = 0; i < PHIDGET_TAG_BYTES; i++)
                any = any || tag[i] != 0;
        if (!any) {
                ret->kind = PHIDGET_REPORT_IGNORED;
                return;
        }
        ret->kind = PHIDGET_REPORT_TAG;
        (void) hex_encode(tag, PHIDGET_TAG_BYTES, ret->tag);
}

void phidget_report_parse(PhidgetModel model, const uint8_t *buf, size_t n, PhidgetReport *ret) {
        assert_return(ret, );

        *ret = (PhidgetReport) { .kind = PHIDGET_REPORT_SHORT };
        assert_return(buf || n == 0, );
        /* Bytes 0..5 are all that is interpreted; longer reports are fine. */
        if (n < 1 + PHIDGET_TAG_BYTES)
                return;

        if (model == PHIDGET_MODEL_V1) {
                /* No packet type: byte 0 means nothing. */
                parse_tag(buf, ret);
                return;
        }
        switch (buf[0]) {
        case 0x00:
                parse_tag(buf, ret);
                break;
        case 0x01:
                ret->kind = PHIDGET_REPORT_ECHO;
                ret->state = buf[1];
                break;
        default:
                ret->kind = PHIDGET_REPORT_UNKNOWN_TYPE;
                ret->type = buf[0];
                break;
        }
}

/* Bits, saturated well above anything accepted, so that no product of two 32-bit values wraps. */
#define BITS_CAP ((uint64_t) 1 << 40)

static void add_bits(uint64_t *total, uint32_t size, uint32_t count) {
        uint64_t bits = (uint64_t) size * count;

        *total = MIN(*total + MIN(bits, BITS_CAP), BITS_CAP);
}

int phidget_descriptor_walk(const uint8_t *d, size_t n, size_t *ret_in, size_t *ret_out) {
        static const size_t data_sizes[4] = { 0, 1, 2, 4 };
        struct { uint32_t size, count; } stack[4];
        size_t depth = 0, i = 0;
        uint32_t size = 0, count = 0;
        uint64_t in_bits = 0, out_bits = 0;

        assert_return(d || n == 0, -EINVAL);
        assert_return(ret_in && ret_out, -EINVAL);

        while (i < n) {
                uint8_t p = d[i];

                if (p == 0xFE) {
                        /* Long item: prefix, data size, long tag, data. */
                        if (n - i < 3 || n - i - 3 < d[i + 1])
                                return -EBADMSG;
                        i += 3 + (size_t) d[i + 1];
                        continue;
                }

                size_t len = data_sizes[p & 3];
                unsigned type = (p >> 2) & 3, tag = p >> 4;
                uint32_t v = 0;

                if (n - i - 1 < len)
                        return -EBADMSG;
                for (size_t k = 0; k < len; k++)
                        v |= (uint32_t) d[i + 1 + k] << (8 * k);
                i += 1 + len;

                if (type == 1) {                /* Global */
                        switch (tag) {
                        case 7:
                                size = v;
                                break;
                        case 8:                 /* Report ID: the layout is not ours */
                                return -EBADMSG;
                        case 9:
                                count = v;
                                break;
                        case 10:
                                if (depth >= ELEMENTSOF(stack))
                                        return -EBADMSG;
                                stack[depth].size = size;
                                stack[depth].count = count;
                                depth++;
                                break;
                        case 11:
                                if (depth == 0)
                                        return -EBADMSG;
                                depth--;
                                size = stack[depth].size;
                                count = stack[depth].count;
                                break;
                        default:
                                break;
                        }
                } else if (type == 0) {         /* Main */
                        if (tag == 8)
                                add_bits(&in_bits, size, count);
                        else if (tag == 9)
                                add_bits(&out_bits, size, count);
                }
        }

        if ((out_bits + 7) / 8 > PHIDGET_REPORT_MAX)
                return -EBADMSG;
        *ret_in = (size_t) ((in_bits + 7) / 8);
        *ret_out = (size_t) ((out_bits + 7) / 8);
        return 0;
}

int phidget_parse_hid_id(const char *s, uint16_t *ret_vendor, uint16_t *ret_product) {
        unsigned long v[3];
        const char *p = s;

        assert_return(ret_vendor && ret_product, -EINVAL);
        if (!s)
                return -EINVAL;
        /* Three fields of 1..8 hex digits separated by colons, nothing else. */
        for (unsigned i = 0; i < 3; i++) {
                size_t n = 0;

                v[i] = 0;
                for (; n < 8 && unhexchar(p[n]) >= 0; n++)
                        v[i] = v[i] << 4 | (unsigned long) unhexchar(p[n]);
                if (n == 0 || p[n] != (i < 2 ? ':' : '\0'))
                        return -EINVAL;
                p += n + (i < 2);
        }
        if (v[0] != 3 || v[1] > 0xffff || v[2] > 0xffff)        /* bus 3 = USB */
                return -EINVAL;
        *ret_vendor = (uint16_t) v[1];
        *ret_product = (uint16_t) v[2];
        return 0;
}

unsigned phidget_firmware_from_bcd(unsigned bcd) {
        if (bcd < 0x100)
                return bcd * 100;
        return (bcd >> 8) * 100 + (bcd & 0xff);
}

PhidgetAttach phidget_attach_action(PhidgetModel model, unsigned firmware) {
        if (model == PHIDGET_MODEL_V2)
                return PHIDGET_ATTACH_STATE;
        if (firmware != 0 && firmware < 104)
                return PHIDGET_ATTACH_ZERO_REPORT;
        return PHIDGET_ATTACH_NOTHING;
}

bool phidget_echo_trusted(PhidgetModel model, unsigned firmware) {
        return model == PHIDGET_MODEL_V2 && (firmware == 0 || firmware >= 201);
}

uint8_t phidget_wanted_state(bool presenting, bool toggle_output, bool stopping) {
        uint8_t s;

        if (stopping)
                return 0x00;
        s = PHIDGET_STATE_ANTENNA;
        if (presenting) {
                s |= PHIDGET_STATE_LED;
                if (toggle_output)
                        s |= PHIDGET_STATE_OUTPUT1;
        }
        return s;
}

size_t phidget_output_report(uint8_t state, size_t output_len, uint8_t *buf) {
        assert_return(buf, 0);
        assert_return(output_len <= PHIDGET_REPORT_MAX, 0);

        if (output_len == 0)
                return 0;
        memset(buf, 0, 1 + output_len);
        buf[1] = state;
        return 1 + output_len;
}
