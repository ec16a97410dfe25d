/* Kegboard Serial Protocol v1: see kbsp.h and spec/kegboard-serial-protocol.md. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbsp.h"
#include "util-hex.h"

/* ---- CRC ---- */

static const uint16_t crc_table[256] = {
        0x0000, 0x1189, 0x2312, 0x329b, 0x4624, 0x57ad, 0x6536, 0x74bf,
        0x8c48, 0x9dc1, 0xaf5a, 0xbed3, 0xca6c, 0xdbe5, 0xe97e, 0xf8f7,
        0x1081, 0x0108, 0x3393, 0x221a, 0x56a5, 0x472c, 0x75b7, 0x643e,
        0x9cc9, 0x8d40, 0xbfdb, 0xae52, 0xdaed, 0xcb64, 0xf9ff, 0xe876,
        0x2102, 0x308b, 0x0210, 0x1399, 0x6726, 0x76af, 0x4434, 0x55bd,
        0xad4a, 0xbcc3, 0x8e58, 0x9fd1, 0xeb6e, 0xfae7, 0xc87c, 0xd9f5,
        0x3183, 0x200a, 0x1291, 0x0318, 0x77a7, 0x662e, 0x54b5, 0x453c,
        0xbdcb, 0xac42, 0x9ed9, 0x8f50, 0xfbef, 0xea66, 0xd8fd, 0xc974,
        0x4204, 0x538d, 0x6116, 0x709f, 0x0420, 0x15a9, 0x2732, 0x36bb,
        0xce4c, 0xdfc5, 0xed5e, 0xfcd7, 0x8868, 0x99e1, 0xab7a, 0xbaf3,
        0x5285, 0x430c, 0x7197, 0x601e, 0x14a1, 0x0528, 0x37b3, 0x263a,
        0xdecd, 0xcf44, 0xfddf, 0xec56, 0x98e9, 0x8960, 0xbbfb, 0xaa72,
        0x6306, 0x728f, 0x4014, 0x519d, 0x2522, 0x34ab, 0x0630, 0x17b9,
        0xef4e, 0xfec7, 0xcc5c, 0xddd5, 0xa96a, 0xb8e3, 0x8a78, 0x9bf1,
        0x7387, 0x620e, 0x5095, 0x411c, 0x35a3, 0x242a, 0x16b1, 0x0738,
        0xffcf, 0xee46, 0xdcdd, 0xcd54, 0xb9eb, 0xa862, 0x9af9, 0x8b70,
        0x8408, 0x9581, 0xa71a, 0xb693, 0xc22c, 0xd3a5, 0xe13e, 0xf0b7,
        0x0840, 0x19c9, 0x2b52, 0x3adb, 0x4e64, 0x5fed, 0x6d76, 0x7cff,
        0x9489, 0x8500, 0xb79b, 0xa612, 0xd2ad, 0xc324, 0xf1bf, 0xe036,
        0x18c1, 0x0948, 0x3bd3, 0x2a5a, 0x5ee5, 0x4f6c, 0x7df7, 0x6c7e,
        0xa50a, 0xb483, 0x8618, 0x9791, 0xe32e, 0xf2a7, 0xc03c, 0xd1b5,
        0x2942, 0x38cb, 0x0a50, 0x1bd9, 0x6f66, 0x7eef, 0x4c74, 0x5dfd,
        0xb58b, 0xa402, 0x9699, 0x8710, 0xf3af, 0xe226, 0xd0bd, 0xc134,
        0x39c3, 0x284a, 0x1ad1, 0x0b58, 0x7fe7, 0x6e6e, 0x5cf5, 0x4d7c,
        0xc60c, 0xd785, 0xe51e, 0xf497, 0x8028, 0x91a1, 0xa33a, 0xb2b3,
        0x4a44, 0x5bcd, 0x6956, 0x78df, 0x0c60, 0x1de9, 0x2f72, 0x3efb,
        0xd68d, 0xc704, 0xf59f, 0xe416, 0x90a9, 0x8120, 0xb3bb, 0xa232,
        0x5ac5, 0x4b4c, 0x79d7, 0x685e, 0x1ce1, 0x0d68, 0x3ff3, 0x2e7a,
        0xe70e, 0xf687, 0xc41c, 0xd595, 0xa12a, 0xb0a3, 0x8238, 0x93b1,
        0x6b46, 0x7acf, 0x4854, 0x59dd, 0x2d62, 0x3ceb, 0x0e70, 0x1ff9,
        0xf78f, 0xe606, 0xd49d, 0xc514, 0xb1ab, 0xa022, 0x92b9, 0x8330,
        0x7bc7, 0x6a4e, 0x58d5, 0x495c, 0x3de3, 0x2c6a, 0x1ef1, 0x0f78,
};

uint16_t kbsp_crc16_update(uint16_t crc, const void *data, size_t size) {
        const uint8_t *p = data;

        for (size_t i = 0; i < size; i++)
                crc = (uint16_t) ((crc >> 8) ^ crc_table[(crc ^ p[i]) & 0xff]);
        return crc;
}

/* ---- little helpers ---- */

static inline uint16_t rd16(const uint8_t *p) {
        return (uint16_t) (p[0] | (p[1] << 8));
}

static inline uint32_t rd32(const uint8_t *p) {
        return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static inline uint64_t rd64(const uint8_t *p) {
        return (uint64_t) rd32(p) | ((uint64_t) rd32(p + 4) << 32);
}

static inline void wr16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
}

static inline void wr32(uint8_t *p, uint32_t v) {
        wr16(p, (uint16_t) v);
        wr16(p + 2, (uint16_t) (v >> 16));
}

static const uint8_t prefix[KBSP_PREFIX_LEN] = { 'K', 'B', 'S', 'P', ' ', 'v', '1', ':' };

/* ---- frames ---- */

static void frame_parse_records(KbspFrame *f) {
        const uint8_t *p = f->data + KBSP_HEADER_LEN;
        size_t n = f->payload_len, i = 0, k = 0;

        f->tlv_overrun = false;
        f->overrun_has_len = false;
        f->overrun_tag = 0;
        f->overrun_len = 0;

        while (i < n) {
                if (n - i < 2) {
                        f->tlv_overrun = true;
                        f->overrun_tag = p[i];
                        break;
                }
                uint8_t len = p[i + 1];
                if (len > n - i - 2) {
                        f->tlv_overrun = true;
                        f->overrun_has_len = true;
                        f->overrun_tag = p[i];
                        f->overrun_len = len;
                        break;
                }
                /* n <= 112 and every record takes >= 2 bytes, so k stays < KBSP_MAX_RECORDS */
                f->records[k++] = (KbspRecord) { .tag = p[i], .len = len, .offset = (uint8_t) (i + 2) };
                i += 2 + (size_t) len;
        }
        f->n_records = (uint8_t) k;
}

/* src holds a whole frame of 'size' bytes whose framing was already checked. */
static void frame_fill(KbspFrame *f, const uint8_t *src, size_t size, uint16_t payload_len) {
        memcpy(f->data, src, size);
        f->size = (uint16_t) size;
        f->message_id = rd16(src + 8);
        f->payload_len = payload_len;
        f->crc = rd16(src + KBSP_HEADER_LEN + payload_len);
        frame_parse_records(f);
}

const KbspRecord *kbsp_frame_find_record(const KbspFrame *f, uint8_t tag) {
        for (size_t i = 0; i < f->n_records; i++)
                if (f->records[i].tag == tag)
                        return &f->records[i];
        return NULL;
}

int kbsp_frame_parse(const void *data, size_t size, bool check_crc, KbspFrame *ret) {
        const uint8_t *p = data;

        assert_return(ret, -EINVAL);

        if (!p || size < KBSP_MIN_FRAME || size > KBSP_MAX_FRAME)
                return -EBADMSG;
        if (memcmp(p, prefix, KBSP_PREFIX_LEN) != 0)
                return -EBADMSG;
        uint16_t pl = rd16(p + 10);
        if (pl > KBSP_MAX_PAYLOAD || size != (size_t) KBSP_MIN_FRAME + pl)
                return -EBADMSG;
        if (p[size - 2] != '\r' || p[size - 1] != '\n')
                return -EBADMSG;
        if (check_crc && kbsp_crc16_update(KBSP_PREFIX_CRC, p + KBSP_PREFIX_LEN, 4 + (size_t) pl) !=
                         rd16(p + KBSP_HEADER_LEN + pl))
                return -EBADMSG;
        frame_fill(ret, p, size, pl);
        return 0;
}

/* ---- message descriptions: one table drives decode, encode and text ---- */

typedef enum FieldType {
        FT_U8,
        FT_U16,
        FT_U32,
        FT_I32,
        FT_U64,
        FT_STRING,
        FT_BYTES,
        FT_STATE_BOOL,  /* output state read as on/off */
        FT_STATE_RAW,   /* output state kept as its first byte (set_output acts on 0 and 1 only) */
} FieldType;

typedef enum FieldFormat {
        FMT_PLAIN,
        FMT_MICRO_C,    /* printed in deg C */
        FMT_TOKEN,      /* printed as wire hex plus the host token string */
} FieldFormat;

typedef struct FieldDesc {
        uint8_t tag;
        FieldType type;
        FieldFormat format;
        bool required;
        uint8_t pad;            /* strings: encode as a NUL padded field of this size */
        bool nul;               /* strings: encode with a trailing NUL */
        const char *name;
        size_t has_offset;
        size_t value_offset;
        size_t len_offset;      /* FT_BYTES: the size_t length */
} FieldDesc;

typedef struct MessageDesc {
        uint16_t id;
        const char *name;
        const FieldDesc *fields;
        size_t n_fields;
} MessageDesc;

#define F(msg, fld, t, ...)                                                     \
        { .type = (t), .name = #fld,                                            \
          .has_offset = offsetof(KbspMessage, msg.has_##fld),                   \
          .value_offset = offsetof(KbspMessage, msg.fld), __VA_ARGS__ }

static const FieldDesc hello_fields[] = {
        F(hello, firmware_version, FT_U16, .tag = 1, .required = true),
        F(hello, protocol_version, FT_U16, .tag = 2),
        F(hello, serial_number, FT_STRING, .tag = 3, .pad = KBSP_SERIAL_FIELD_LEN),
        F(hello, uptime_ms, FT_U32, .tag = 4),
        F(hello, uptime_days, FT_U32, .tag = 5),
};

static const FieldDesc configuration_fields[] = {
        F(configuration, board_name, FT_STRING, .tag = 1),
        F(configuration, baud_rate, FT_U16, .tag = 2),
        F(configuration, update_interval, FT_U16, .tag = 3),
        F(configuration, watchdog_timeout, FT_U16, .tag = 4),
};

static const FieldDesc meter_status_fields[] = {
        F(meter_status, meter_name, FT_STRING, .tag = 1, .required = true),
        F(meter_status, meter_reading, FT_U32, .tag = 2, .required = true),
};

static const FieldDesc temperature_reading_fields[] = {
        F(temperature_reading, sensor_name, FT_STRING, .tag = 1, .required = true),
        F(temperature_reading, sensor_reading, FT_I32, .tag = 2, .required = true, .format = FMT_MICRO_C),
};

static const FieldDesc output_status_fields[] = {
        F(output_status, output_name, FT_STRING, .tag = 1, .required = true),
        F(output_status, output_reading, FT_STATE_BOOL, .tag = 2, .required = true),
};

static const FieldDesc onewire_presence_fields[] = {
        F(onewire_presence, device_id, FT_U64, .tag = 1),
        F(onewire_presence, status, FT_U8, .tag = 2),
};

static const FieldDesc auth_token_fields[] = {
        F(auth_token, device, FT_STRING, .tag = 1, .required = true),
        F(auth_token, token, FT_BYTES, .tag = 2, .required = true, .format = FMT_TOKEN,
          .len_offset = offsetof(KbspMessage, auth_token.token_len)),
        F(auth_token, status, FT_U8, .tag = 3, .required = true),
};

static const FieldDesc set_output_fields[] = {
        F(set_output, output_id, FT_U8, .tag = 1),
        F(set_output, output_mode, FT_STATE_RAW, .tag = 2),
};

static const FieldDesc set_serial_number_fields[] = {
        F(set_serial_number, serial_number, FT_STRING, .tag = 1, .nul = true),
};

#undef F

static const MessageDesc messages[] = {
        { KBSP_MSG_HELLO, "hello", hello_fields, ELEMENTSOF(hello_fields) },
        { KBSP_MSG_CONFIGURATION, "configuration", configuration_fields, ELEMENTSOF(configuration_fields) },
        { KBSP_MSG_METER_STATUS, "meter_status", meter_status_fields, ELEMENTSOF(meter_status_fields) },
        { KBSP_MSG_TEMPERATURE_READING, "temperature_reading", temperature_reading_fields,
          ELEMENTSOF(temperature_reading_fields) },
        { KBSP_MSG_OUTPUT_STATUS, "output_status", output_status_fields, ELEMENTSOF(output_status_fields) },
        { KBSP_MSG_ONEWIRE_PRESENCE, "onewire_presence", onewire_presence_fields,
          ELEMENTSOF(onewire_presence_fields) },
        { KBSP_MSG_AUTH_TOKEN, "auth_token", auth_token_fields, ELEMENTSOF(auth_token_fields) },
        { KBSP_MSG_PING, "ping", NULL, 0 },
        { KBSP_MSG_SET_OUTPUT, "set_output", set_output_fields, ELEMENTSOF(set_output_fields) },
        { KBSP_MSG_SET_SERIAL_NUMBER, "set_serial_number", set_serial_number_fields,
          ELEMENTSOF(set_serial_number_fields) },
};

static const MessageDesc *message_desc(uint16_t id) {
        for (size_t i = 0; i < ELEMENTSOF(messages); i++)
                if (messages[i].id == id)
                        return &messages[i];
        return NULL;
}

const char *kbsp_message_name(uint16_t message_id) {
        const MessageDesc *md = message_desc(message_id);
        return md ? md->name : NULL;
}

static size_t field_width(FieldType t) {
        switch (t) {
        case FT_U8:
                return 1;
        case FT_U16:
                return 2;
        case FT_U32:
        case FT_I32:
                return 4;
        case FT_U64:
                return 8;
        default:
                return 0;       /* variable */
        }
}

#define FIELD_PTR(m, off) ((void *) ((uint8_t *) (m) + (off)))
#define FIELD_CPTR(m, off) ((const void *) ((const uint8_t *) (m) + (off)))

static void message_add_error(KbspMessage *m, KbspFieldError e) {
        if (m->n_errors < KBSP_MAX_FIELD_ERRORS)
                m->errors[m->n_errors++] = e;
}

void kbsp_message_init(KbspMessage *m, uint16_t message_id) {
        assert_return(m, );
        memset(m, 0, sizeof *m);
        m->message_id = message_id;
        m->complete = true;
}

static bool field_is_set(const KbspMessage *m, const FieldDesc *fd) {
        return *(const bool *) FIELD_CPTR(m, fd->has_offset);
}

void kbsp_frame_decode(const KbspFrame *f, KbspMessage *ret) {
        const MessageDesc *md;
        uint32_t seen = 0;      /* per field index: a record with this tag was already used */

        assert_return(f, );
        assert_return(ret, );

        kbsp_message_init(ret, f->message_id);
        md = message_desc(f->message_id);
        if (!md)
                return;

        for (size_t i = 0; i < f->n_records; i++) {
                const KbspRecord *r = &f->records[i];
                const uint8_t *v = kbsp_record_value(f, r);
                const FieldDesc *fd = NULL;
                size_t k;

                for (k = 0; k < md->n_fields; k++)
                        if (md->fields[k].tag == r->tag) {
                                fd = &md->fields[k];
                                break;
                        }
                if (!fd || (seen & (1u << k)))
                        continue;
                seen |= 1u << k;

                size_t w = field_width(fd->type);
                if (w > 0 && r->len != w) {
                        message_add_error(ret, (KbspFieldError) {
                                .kind = KBSP_FIELD_ERROR_BAD_WIDTH, .tag = r->tag,
                                .len = r->len, .expected = (uint8_t) w });
                        continue;
                }
                if ((fd->type == FT_STATE_BOOL || fd->type == FT_STATE_RAW) && r->len != 1 && r->len != 2) {
                        message_add_error(ret, (KbspFieldError) {
                                .kind = KBSP_FIELD_ERROR_BAD_WIDTH, .tag = r->tag,
                                .len = r->len, .expected = 0 });
                        continue;
                }

                void *dst = FIELD_PTR(ret, fd->value_offset);
                switch (fd->type) {
                case FT_U8:
                case FT_STATE_RAW:
                        *(uint8_t *) dst = v[0];
                        break;
                case FT_STATE_BOOL:
                        *(bool *) dst = v[0] != 0;
                        break;
                case FT_U16:
                        *(uint16_t *) dst = rd16(v);
                        break;
                case FT_U32:
                        *(uint32_t *) dst = rd32(v);
                        break;
                case FT_I32:
                        *(int32_t *) dst = (int32_t) rd32(v);
                        break;
                case FT_U64:
                        *(uint64_t *) dst = rd64(v);
                        break;
                case FT_STRING: {
                        const uint8_t *nul = memchr(v, 0, r->len);
                        size_t n = nul ? (size_t) (nul - v) : r->len;
                        memcpy(dst, v, n);
                        ((char *) dst)[n] = 0;
                        break;
                }
                case FT_BYTES:
                        memcpy(dst, v, r->len);
                        *(size_t *) FIELD_PTR(ret, fd->len_offset) = r->len;
                        break;
                }
                *(bool *) FIELD_PTR(ret, fd->has_offset) = true;
        }

        if (f->tlv_overrun)
                message_add_error(ret, (KbspFieldError) {
                        .kind = KBSP_FIELD_ERROR_TLV_OVERRUN, .tag = f->overrun_tag,
                        .len = f->overrun_len, .has_len = f->overrun_has_len });

        for (size_t k = 0; k < md->n_fields; k++)
                if (md->fields[k].required && !field_is_set(ret, &md->fields[k]))
                        ret->complete = false;
}

/* ---- encoders ---- */

void kbsp_payload_init(KbspPayload *p) {
        assert_return(p, );
        p->len = 0;
        p->error = 0;
}

void kbsp_payload_add(KbspPayload *p, uint8_t tag, const void *value, size_t len) {
        assert_return(p, );
        if (p->error)
                return;
        if (len > UINT8_MAX || len + 2 > KBSP_MAX_PAYLOAD - p->len) {
                p->error = -EINVAL;
                return;
        }
        p->data[p->len] = tag;
        p->data[p->len + 1] = (uint8_t) len;
        if (len > 0)
                memcpy(p->data + p->len + 2, value, len);
        p->len += 2 + len;
}

void kbsp_payload_add_u8(KbspPayload *p, uint8_t tag, uint8_t v) {
        kbsp_payload_add(p, tag, &v, 1);
}

void kbsp_payload_add_u16(KbspPayload *p, uint8_t tag, uint16_t v) {
        uint8_t b[2];
        wr16(b, v);
        kbsp_payload_add(p, tag, b, sizeof b);
}

void kbsp_payload_add_u32(KbspPayload *p, uint8_t tag, uint32_t v) {
        uint8_t b[4];
        wr32(b, v);
        kbsp_payload_add(p, tag, b, sizeof b);
}

void kbsp_payload_add_i32(KbspPayload *p, uint8_t tag, int32_t v) {
        kbsp_payload_add_u32(p, tag, (uint32_t) v);
}

void kbsp_payload_add_u64(KbspPayload *p, uint8_t tag, uint64_t v) {
        uint8_t b[8];
        wr32(b, (uint32_t) v);
        wr32(b + 4, (uint32_t) (v >> 32));
        kbsp_payload_add(p, tag, b, sizeof b);
}

void kbsp_payload_add_string(KbspPayload *p, uint8_t tag, const char *s) {
        kbsp_payload_add(p, tag, s, s ? strlen(s) : 0);
}

int kbsp_encode_frame(void *buf, size_t size, uint16_t message_id, const void *payload, size_t payload_len) {
        uint8_t *b = buf;

        if (payload_len > KBSP_MAX_PAYLOAD || (payload_len > 0 && !payload))
                return -EINVAL;
        if (!b || size < KBSP_MIN_FRAME + payload_len)
                return -ENOBUFS;

        if (payload_len > 0)
                memmove(b + KBSP_HEADER_LEN, payload, payload_len);
        memcpy(b, prefix, KBSP_PREFIX_LEN);
        wr16(b + 8, message_id);
        wr16(b + 10, (uint16_t) payload_len);
        wr16(b + KBSP_HEADER_LEN + payload_len, kbsp_crc16(b, KBSP_HEADER_LEN + payload_len));
        b[KBSP_HEADER_LEN + payload_len + 2] = '\r';
        b[KBSP_HEADER_LEN + payload_len + 3] = '\n';
        return (int) (KBSP_MIN_FRAME + payload_len);
}

int kbsp_encode_payload_frame(void *buf, size_t size, uint16_t message_id, const KbspPayload *p) {
        assert_return(p, -EINVAL);
        if (p->error)
                return p->error;
        return kbsp_encode_frame(buf, size, message_id, p->data, p->len);
}

int kbsp_encode_records(void *buf, size_t size, const KbspFrame *f) {
        KbspPayload p;

        assert_return(f, -EINVAL);

        kbsp_payload_init(&p);
        for (size_t i = 0; i < f->n_records; i++)
                kbsp_payload_add(&p, f->records[i].tag, kbsp_record_value(f, &f->records[i]), f->records[i].len);
        return kbsp_encode_payload_frame(buf, size, f->message_id, &p);
}

int kbsp_message_encode(const KbspMessage *m, void *buf, size_t size) {
        const MessageDesc *md;
        KbspPayload p;

        assert_return(m, -EINVAL);
        md = message_desc(m->message_id);
        if (!md)
                return -EINVAL;

        kbsp_payload_init(&p);
        for (size_t k = 0; k < md->n_fields; k++) {
                const FieldDesc *fd = &md->fields[k];
                const void *v = FIELD_CPTR(m, fd->value_offset);

                if (!field_is_set(m, fd))
                        continue;

                switch (fd->type) {
                case FT_U8:
                        kbsp_payload_add_u8(&p, fd->tag, *(const uint8_t *) v);
                        break;
                case FT_U16:
                        kbsp_payload_add_u16(&p, fd->tag, *(const uint16_t *) v);
                        break;
                case FT_U32:
                        kbsp_payload_add_u32(&p, fd->tag, *(const uint32_t *) v);
                        break;
                case FT_I32:
                        kbsp_payload_add_i32(&p, fd->tag, *(const int32_t *) v);
                        break;
                case FT_U64:
                        kbsp_payload_add_u64(&p, fd->tag, *(const uint64_t *) v);
                        break;
                case FT_STATE_BOOL:
                        kbsp_payload_add_u16(&p, fd->tag, *(const bool *) v ? 1 : 0);
                        break;
                case FT_STATE_RAW:
                        kbsp_payload_add_u16(&p, fd->tag, *(const uint8_t *) v);
                        break;
                case FT_STRING: {
                        const char *s = v;
                        size_t n = strnlen(s, KBSP_STRING_MAX);
                        uint8_t tmp[KBSP_STRING_MAX] = {};

                        if (n >= KBSP_STRING_MAX)
                                return -EINVAL;
                        if (fd->pad > 0) {
                                /* at most pad - 1 significant bytes: the field keeps a NUL */
                                if (n >= fd->pad)
                                        return -EINVAL;
                                memcpy(tmp, s, n);
                                kbsp_payload_add(&p, fd->tag, tmp, fd->pad);
                        } else if (fd->nul) {
                                /* set_serial_number: text + NUL must stay under 30 bytes */
                                if (n + 1 >= KBSP_SERIAL_FIELD_LEN)
                                        return -EINVAL;
                                memcpy(tmp, s, n);
                                kbsp_payload_add(&p, fd->tag, tmp, n + 1);
                        } else
                                kbsp_payload_add(&p, fd->tag, s, n);
                        break;
                }
                case FT_BYTES: {
                        size_t n = *(const size_t *) FIELD_CPTR(m, fd->len_offset);
                        if (n > KBSP_MAX_PAYLOAD)
                                return -EINVAL;
                        kbsp_payload_add(&p, fd->tag, v, n);
                        break;
                }
                }
        }
        return kbsp_encode_payload_frame(buf, size, m->message_id, &p);
}

static int copy_string(char dst[static KBSP_STRING_MAX], const char *s) {
        size_t n;

        if (!s)
                return -EINVAL;
        n = strnlen(s, KBSP_STRING_MAX);
        if (n >= KBSP_STRING_MAX)
                return -EINVAL;
        memcpy(dst, s, n + 1);
        return 0;
}

int kbsp_encode_ping(void *buf, size_t size) {
        return kbsp_encode_frame(buf, size, KBSP_MSG_PING, NULL, 0);
}

int kbsp_encode_set_output(void *buf, size_t size, unsigned output_id, bool on) {
        KbspMessage m;

        if (output_id > UINT8_MAX)
                return -EINVAL;
        kbsp_message_init(&m, KBSP_MSG_SET_OUTPUT);
        m.set_output.has_output_id = m.set_output.has_output_mode = true;
        m.set_output.output_id = (uint8_t) output_id;
        m.set_output.output_mode = on;
        return kbsp_message_encode(&m, buf, size);
}

int kbsp_encode_set_serial_number(void *buf, size_t size, const char *serial) {
        KbspMessage m;

        kbsp_message_init(&m, KBSP_MSG_SET_SERIAL_NUMBER);
        if (copy_string(m.set_serial_number.serial_number, serial) < 0)
                return -EINVAL;
        m.set_serial_number.has_serial_number = true;
        return kbsp_message_encode(&m, buf, size);
}

int kbsp_encode_hello(void *buf, size_t size, uint16_t firmware_version, const char *serial,
                      uint32_t uptime_ms, uint32_t uptime_days) {
        KbspMessage m;

        kbsp_message_init(&m, KBSP_MSG_HELLO);
        if (copy_string(m.hello.serial_number, serial ?: "") < 0)
                return -EINVAL;
        m.hello.has_firmware_version = m.hello.has_serial_number = true;
        m.hello.has_uptime_ms = m.hello.has_uptime_days = true;
        m.hello.firmware_version = firmware_version;
        m.hello.uptime_ms = uptime_ms;
        m.hello.uptime_days = uptime_days;
        return kbsp_message_encode(&m, buf, size);
}

int kbsp_encode_meter_status(void *buf, size_t size, const char *meter_name, uint32_t reading) {
        KbspMessage m;

        kbsp_message_init(&m, KBSP_MSG_METER_STATUS);
        if (copy_string(m.meter_status.meter_name, meter_name) < 0)
                return -EINVAL;
        m.meter_status.has_meter_name = m.meter_status.has_meter_reading = true;
        m.meter_status.meter_reading = reading;
        return kbsp_message_encode(&m, buf, size);
}

int kbsp_encode_temperature_reading(void *buf, size_t size, const char *sensor_name, int32_t micro_c) {
        KbspMessage m;

        kbsp_message_init(&m, KBSP_MSG_TEMPERATURE_READING);
        if (copy_string(m.temperature_reading.sensor_name, sensor_name) < 0)
                return -EINVAL;
        m.temperature_reading.has_sensor_name = m.temperature_reading.has_sensor_reading = true;
        m.temperature_reading.sensor_reading = micro_c;
        return kbsp_message_encode(&m, buf, size);
}

int kbsp_encode_output_status(void *buf, size_t size, const char *output_name, bool on) {
        KbspMessage m;

        kbsp_message_init(&m, KBSP_MSG_OUTPUT_STATUS);
        if (copy_string(m.output_status.output_name, output_name) < 0)
                return -EINVAL;
        m.output_status.has_output_name = m.output_status.has_output_reading = true;
        m.output_status.output_reading = on;
        return kbsp_message_encode(&m, buf, size);
}

int kbsp_encode_auth_token(void *buf, size_t size, const char *device, const void *token,
                           size_t token_len, uint8_t status) {
        KbspMessage m;

        if (token_len > KBSP_MAX_PAYLOAD || (token_len > 0 && !token))
                return -EINVAL;
        kbsp_message_init(&m, KBSP_MSG_AUTH_TOKEN);
        if (copy_string(m.auth_token.device, device) < 0)
                return -EINVAL;
        if (token_len > 0)
                memcpy(m.auth_token.token, token, token_len);
        m.auth_token.token_len = token_len;
        m.auth_token.status = status;
        m.auth_token.has_device = m.auth_token.has_token = m.auth_token.has_status = true;
        return kbsp_message_encode(&m, buf, size);
}

/* ---- host decoder ---- */

const char *kbsp_error_to_string(KbspError e) {
        switch (e) {
        case KBSP_ERROR_OVERSIZE_LENGTH:
                return "oversize_length";
        case KBSP_ERROR_BAD_CRC:
                return "bad_crc";
        case KBSP_ERROR_BAD_TRAILER:
                return "bad_trailer";
        default:
                return "unknown_error";
        }
}

enum {
        CAND_NEED_MORE,
        CAND_FRAME,
        CAND_REJECT,
};

/* p[0..8) is the prefix. Decides what the candidate at p is, given 'avail' bytes of it. */
static int classify(const uint8_t *p, size_t avail, size_t *ret_need, KbspError *ret_error) {
        if (avail < KBSP_HEADER_LEN) {
                *ret_need = KBSP_HEADER_LEN;
                return CAND_NEED_MORE;
        }
        size_t pl = rd16(p + 10);
        if (pl > KBSP_MAX_PAYLOAD) {
                *ret_error = KBSP_ERROR_OVERSIZE_LENGTH;
                return CAND_REJECT;
        }
        size_t total = KBSP_MIN_FRAME + pl;
        *ret_need = total;
        if (avail < total)
                return CAND_NEED_MORE;
        /* the prefix is known, so start from its CRC */
        if (kbsp_crc16_update(KBSP_PREFIX_CRC, p + KBSP_PREFIX_LEN, 4 + pl) != rd16(p + KBSP_HEADER_LEN + pl)) {
                *ret_error = KBSP_ERROR_BAD_CRC;
                return CAND_REJECT;
        }
        if (p[total - 2] != '\r' || p[total - 1] != '\n') {
                *ret_error = KBSP_ERROR_BAD_TRAILER;
                return CAND_REJECT;
        }
        return CAND_FRAME;
}

static void stats_garbage(KbspStats *s, uint64_t *run, uint64_t *run_offset, uint64_t offset, uint64_t n) {
        if (n == 0)
                return;
        if (*run == 0)
                *run_offset = offset;
        *run += n;
        s->garbage_bytes += n;
}

static int emit_garbage(uint64_t *run, uint64_t run_offset, KbspEvent *ret) {
        *ret = (KbspEvent) {
                .type = KBSP_EVENT_GARBAGE,
                .offset = run_offset,
                .size = *run,
        };
        *run = 0;
        return 1;
}

static void emit_error(KbspStats *s, KbspError e, const uint8_t *p, uint64_t offset, uint64_t size, KbspEvent *ret) {
        s->errors[e]++;
        *ret = (KbspEvent) {
                .type = KBSP_EVENT_ERROR,
                .error = e,
                .offset = offset,
                .size = size,
                .message_id = rd16(p + 8),
                .payload_len = rd16(p + 10),
        };
}

static void emit_frame(KbspStats *s, const KbspFrame *f, uint64_t offset, KbspEvent *ret) {
        s->frames++;
        *ret = (KbspEvent) {
                .type = KBSP_EVENT_FRAME,
                .offset = offset,
                .size = f->size,
                .message_id = f->message_id,
                .payload_len = f->payload_len,
                .frame = f,
        };
}

void kbsp_decoder_init(KbspDecoder *d) {
        assert_return(d, );
        memset(d, 0, offsetof(KbspDecoder, frame));
}

int kbsp_decoder_new(KbspDecoder **ret) {
        KbspDecoder *d;

        assert_return(ret, -EINVAL);

        d = malloc(sizeof *d);
        if (!d)
                return -ENOMEM;
        kbsp_decoder_init(d);
        *ret = d;
        return 0;
}

KbspDecoder *kbsp_decoder_free(KbspDecoder *d) {
        free(d);
        return NULL;
}

int kbsp_decoder_feed(KbspDecoder *d, const void *data, size_t size) {
        assert_return(d, -EINVAL);
        if (d->in_len > 0)
                return -EBUSY;
        if (size > 0 && !data)
                return -EINVAL;
        d->in = data;
        d->in_len = size;
        d->stats.bytes += size;
        return 0;
}

static inline void decoder_advance(KbspDecoder *d, size_t n) {
        d->in += n;
        d->in_len -= n;
        d->consumed += n;
}

static inline uint64_t decoder_buf_offset(const KbspDecoder *d) {
        return d->consumed - d->buf_len;
}

/* Moves up to 'want' input bytes onto the end of the buffer. */
static void decoder_take(KbspDecoder *d, size_t want) {
        size_t n = MIN(want, d->in_len);
        memcpy(d->buf + d->buf_len, d->in, n);
        d->buf_len += n;
        decoder_advance(d, n);
}

/* Drops buf[0..skip) (garbage or not, the caller says), then looks for the next possible prefix
 * start among the remaining, not yet scanned, buffered bytes; what lies before it is garbage. */
static void decoder_rescan(KbspDecoder *d, size_t skip, bool skip_is_garbage) {
        uint64_t base = decoder_buf_offset(d);
        size_t i;

        if (skip_is_garbage)
                stats_garbage(&d->stats, &d->garbage_run, &d->garbage_offset, base, skip);
        for (i = skip; i < d->buf_len; i++)
                if (d->buf[i] == 'K' && memcmp(d->buf + i, prefix, MIN(d->buf_len - i, (size_t) KBSP_PREFIX_LEN)) == 0)
                        break;
        stats_garbage(&d->stats, &d->garbage_run, &d->garbage_offset, base + skip, i - skip);
        memmove(d->buf, d->buf + i, d->buf_len - i);
        d->buf_len -= i;
}

/* Works on a candidate held in the buffer. 1 = event, 0 = input exhausted, 2 = buffer empty. */
static int decoder_step_buffered(KbspDecoder *d, KbspEvent *ret) {
        for (;;) {
                size_t need;
                KbspError e;

                if (d->buf_len == 0)
                        return 2;

                if (d->buf_len < KBSP_PREFIX_LEN) {
                        decoder_take(d, KBSP_PREFIX_LEN - d->buf_len);
                        if (memcmp(d->buf, prefix, d->buf_len) != 0) {
                                decoder_rescan(d, 1, true);
                                continue;
                        }
                        if (d->buf_len < KBSP_PREFIX_LEN)
                                return 0;
                }

                if (d->garbage_run > 0)
                        return emit_garbage(&d->garbage_run, d->garbage_offset, ret);

                switch (classify(d->buf, d->buf_len, &need, &e)) {
                case CAND_NEED_MORE:
                        decoder_take(d, need - d->buf_len);
                        if (d->buf_len < need)
                                return 0;
                        continue;
                case CAND_REJECT:
                        emit_error(&d->stats, e, d->buf, decoder_buf_offset(d), 1, ret);
                        decoder_rescan(d, 1, false);
                        return 1;
                default: {
                        uint64_t off = decoder_buf_offset(d);
                        frame_fill(&d->frame, d->buf, need, rd16(d->buf + 10));
                        emit_frame(&d->stats, &d->frame, off, ret);
                        /* a rescan can leave bytes past the frame in the buffer: scan them afresh */
                        memmove(d->buf, d->buf + need, d->buf_len - need);
                        d->buf_len -= need;
                        decoder_rescan(d, 0, false);
                        return 1;
                }
                }
        }
}

/* Scans the caller's input in place; only a candidate cut by the end of the input is copied. */
static int decoder_scan_input(KbspDecoder *d, KbspEvent *ret) {
        const uint8_t *p = d->in, *end = d->in + d->in_len, *s = p;

        for (;;) {
                const uint8_t *k = s < end ? memchr(s, 'K', (size_t) (end - s)) : NULL;
                size_t avail, need;
                KbspError e;

                if (!k) {
                        stats_garbage(&d->stats, &d->garbage_run, &d->garbage_offset, d->consumed, (size_t) (end - p));
                        decoder_advance(d, (size_t) (end - p));
                        return 0;
                }
                avail = (size_t) (end - k);
                if (avail < KBSP_PREFIX_LEN) {
                        if (memcmp(k, prefix, avail) != 0) {
                                s = k + 1;
                                continue;
                        }
                        stats_garbage(&d->stats, &d->garbage_run, &d->garbage_offset, d->consumed, (size_t) (k - p));
                        decoder_advance(d, (size_t) (k - p));
                        decoder_take(d, avail);
                        return 0;
                }
                if (memcmp(k, prefix, KBSP_PREFIX_LEN) != 0) {
                        s = k + 1;
                        continue;
                }

                if (k > p) {
                        stats_garbage(&d->stats, &d->garbage_run, &d->garbage_offset, d->consumed, (size_t) (k - p));
                        decoder_advance(d, (size_t) (k - p));
                }
                if (d->garbage_run > 0)
                        return emit_garbage(&d->garbage_run, d->garbage_offset, ret);

                switch (classify(k, avail, &need, &e)) {
                case CAND_NEED_MORE:
                        /* avail < need <= 128: fits the buffer */
                        decoder_take(d, avail);
                        return 0;
                case CAND_REJECT:
                        emit_error(&d->stats, e, k, d->consumed, 1, ret);
                        decoder_advance(d, 1);
                        return 1;
                default:
                        frame_fill(&d->frame, k, need, rd16(k + 10));
                        emit_frame(&d->stats, &d->frame, d->consumed, ret);
                        decoder_advance(d, need);
                        return 1;
                }
        }
}

int kbsp_decoder_next(KbspDecoder *d, KbspEvent *ret) {
        assert_return(d, -EINVAL);
        assert_return(ret, -EINVAL);
        if (d->buf_len > 0) {
                int r = decoder_step_buffered(d, ret);
                if (r != 2)
                        return r;
        }
        if (d->in_len == 0)
                return 0;
        return decoder_scan_input(d, ret);
}

int kbsp_decoder_finish(KbspDecoder *d, KbspEvent *ret) {
        assert_return(d, -EINVAL);
        assert_return(ret, -EINVAL);
        if (d->in_len > 0)
                return -EBUSY;
        if (d->garbage_run == 0)
                return 0;
        return emit_garbage(&d->garbage_run, d->garbage_offset, ret);
}

/* ---- firmware receive parser ---- */

void kbsp_firmware_parser_init(KbspFirmwareParser *p, bool strict_crc) {
        assert_return(p, );
        memset(p, 0, offsetof(KbspFirmwareParser, frame));
        p->strict_crc = strict_crc;
}

int kbsp_firmware_parser_feed(KbspFirmwareParser *p, const void *data, size_t size) {
        assert_return(p, -EINVAL);
        if (p->in_len > 0)
                return -EBUSY;
        if (size > 0 && !data)
                return -EINVAL;
        p->in = data;
        p->in_len = size;
        p->stats.bytes += size;
        return 0;
}

static void fw_take(KbspFirmwareParser *p, size_t want) {
        size_t n = MIN(want, p->in_len);
        memcpy(p->buf + p->buf_len, p->in, n);
        p->buf_len += n;
        p->in += n;
        p->in_len -= n;
        p->consumed += n;
}

int kbsp_firmware_parser_next(KbspFirmwareParser *p, KbspEvent *ret) {
        assert_return(p, -EINVAL);
        assert_return(ret, -EINVAL);
        for (;;) {
                if (p->buf_len < KBSP_PREFIX_LEN) {
                        uint8_t c;

                        if (p->in_len == 0)
                                return 0;
                        c = *p->in;
                        p->in++;
                        p->in_len--;
                        p->consumed++;
                        if (c == prefix[p->buf_len]) {
                                p->buf[p->buf_len++] = c;
                                continue;
                        }
                        /* the firmware's matcher: a mismatching 'K' restarts the match at 1 */
                        stats_garbage(&p->stats, &p->garbage_run, &p->garbage_offset,
                                      p->consumed - 1 - p->buf_len, p->buf_len);
                        if (c == 'K') {
                                p->buf[0] = c;
                                p->buf_len = 1;
                        } else {
                                stats_garbage(&p->stats, &p->garbage_run, &p->garbage_offset, p->consumed - 1, 1);
                                p->buf_len = 0;
                        }
                        continue;
                }

                if (p->garbage_run > 0)
                        return emit_garbage(&p->garbage_run, p->garbage_offset, ret);

                if (p->buf_len < KBSP_HEADER_LEN) {
                        fw_take(p, KBSP_HEADER_LEN - p->buf_len);
                        if (p->buf_len < KBSP_HEADER_LEN)
                                return 0;
                        /* only the low byte of payload_len is read */
                        if (p->buf[10] > KBSP_MAX_PAYLOAD) {
                                emit_error(&p->stats, KBSP_ERROR_OVERSIZE_LENGTH, p->buf,
                                           p->consumed - p->buf_len, p->buf_len, ret);
                                p->buf_len = 0;
                                return 1;
                        }
                        p->need = (size_t) KBSP_MIN_FRAME + p->buf[10];
                }

                fw_take(p, p->need - p->buf_len);
                if (p->buf_len < p->need)
                        return 0;

                size_t pl = p->buf[10], n = p->need;
                uint64_t off = p->consumed - n;
                p->buf_len = 0;
                p->need = 0;
                if (p->buf[n - 2] != '\r' || p->buf[n - 1] != '\n') {
                        emit_error(&p->stats, KBSP_ERROR_BAD_TRAILER, p->buf, off, n, ret);
                        return 1;
                }
                if (p->strict_crc &&
                    kbsp_crc16_update(KBSP_PREFIX_CRC, p->buf + KBSP_PREFIX_LEN, 4 + pl) != rd16(p->buf + KBSP_HEADER_LEN + pl)) {
                        emit_error(&p->stats, KBSP_ERROR_BAD_CRC, p->buf, off, n, ret);
                        return 1;
                }
                frame_fill(&p->frame, p->buf, n, (uint16_t) pl);
                emit_frame(&p->stats, &p->frame, off, ret);
                return 1;
        }
}

int kbsp_firmware_parser_finish(KbspFirmwareParser *p, KbspEvent *ret) {
        assert_return(p, -EINVAL);
        assert_return(ret, -EINVAL);
        if (p->in_len > 0)
                return -EBUSY;
        if (p->garbage_run == 0)
                return 0;
        return emit_garbage(&p->garbage_run, p->garbage_offset, ret);
}

/* ---- text ---- */

typedef struct Out {
        char *buf;
        size_t size;
        size_t len;     /* what the whole text needs, even past size */
} Out;

_printf_(2, 3)
static void out_printf(Out *o, const char *fmt, ...) {
        va_list ap;
        char *dst = o->len < o->size ? o->buf + o->len : NULL;
        size_t room = o->len < o->size ? o->size - o->len : 0;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(dst, room, fmt, ap);
        va_end(ap);
        if (n > 0)
                o->len += (size_t) n;
}

static void out_init(Out *o, char *buf, size_t size) {
        *o = (Out) { .buf = buf, .size = buf ? size : 0 };
        if (o->size > 0)
                buf[0] = 0;
}

static int out_done(Out *o) {
        return o->len > INT_MAX ? INT_MAX : (int) o->len;
}

static bool string_needs_quotes(const char *s) {
        if (!*s)
                return true;
        for (const unsigned char *c = (const unsigned char *) s; *c; c++)
                if (*c <= ' ' || *c >= 0x7f || *c == '"' || *c == '\'' || *c == '\\')
                        return true;
        return false;
}

static void out_string(Out *o, const char *s) {
        if (!string_needs_quotes(s)) {
                out_printf(o, "%s", s);
                return;
        }
        out_printf(o, "\"");
        for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
                if (*c == '"' || *c == '\\')
                        out_printf(o, "\\%c", *c);
                else if (*c == '\n')
                        out_printf(o, "\\n");
                else if (*c == '\r')
                        out_printf(o, "\\r");
                else if (*c == '\t')
                        out_printf(o, "\\t");
                else if (*c < ' ' || *c >= 0x7f)
                        out_printf(o, "\\u%04x", *c);
                else
                        out_printf(o, "%c", *c);
        }
        out_printf(o, "\"");
}

static void out_hex(Out *o, const uint8_t *b, size_t n, bool reversed) {
        for (size_t i = 0; i < n; i++)
                out_printf(o, "%02x", b[reversed ? n - 1 - i : i]);
}

/* Exact decimal of micro-units, like Python's repr of value / 1e6 for these values: 4.5, -1.25, 85.0. */
static void out_micro(Out *o, int32_t micro) {
        int64_t v = micro;
        uint64_t a = (uint64_t) (v < 0 ? -v : v);
        unsigned frac = (unsigned) (a % 1000000);
        char digits[8];
        int n;

        snprintf(digits, sizeof digits, "%06u", frac);
        for (n = 6; n > 1 && digits[n - 1] == '0'; n--)
                ;
        digits[n] = 0;
        out_printf(o, "%s%" PRIu64 ".%s", v < 0 ? "-" : "", a / 1000000, digits);
}

static void out_field_error(Out *o, const KbspFieldError *e) {
        switch (e->kind) {
        case KBSP_FIELD_ERROR_TLV_OVERRUN:
                if (e->has_len)
                        out_printf(o, "tlv_overrun(tag=%u,len=%u)", e->tag, e->len);
                else
                        out_printf(o, "tlv_overrun(tag=%u)", e->tag);
                break;
        case KBSP_FIELD_ERROR_BAD_WIDTH:
                if (e->expected > 0)
                        out_printf(o, "bad_value(tag=%u): width %u != %u", e->tag, e->len, e->expected);
                else
                        out_printf(o, "bad_value(tag=%u): width %u not 1 or 2", e->tag, e->len);
                break;
        default:
                out_printf(o, "unknown_error(tag=%u)", e->tag);
        }
}

int kbsp_field_error_format(const KbspFieldError *e, char *buf, size_t size) {
        Out o;

        assert_return(e, -EINVAL);

        out_init(&o, buf, size);
        out_field_error(&o, e);
        return out_done(&o);
}

int kbsp_message_format(const KbspMessage *m, const KbspFrame *f, char *buf, size_t size) {
        const MessageDesc *md;
        bool first_missing = true;
        Out o;

        assert_return(m, -EINVAL);
        md = message_desc(m->message_id);
        out_init(&o, buf, size);
        if (!md) {
                out_printf(&o, "unknown message_id=0x%02x", m->message_id);
                if (f)
                        out_printf(&o, " payload_len=%u", f->payload_len);
                return out_done(&o);
        }

        out_printf(&o, "%s", md->name);
        for (size_t k = 0; k < md->n_fields; k++) {
                const FieldDesc *fd = &md->fields[k];
                const void *v = FIELD_CPTR(m, fd->value_offset);

                if (!field_is_set(m, fd))
                        continue;
                out_printf(&o, " %s=", fd->format == FMT_MICRO_C ? "sensor_reading" : fd->name);
                switch (fd->type) {
                case FT_U8:
                case FT_STATE_RAW:
                        out_printf(&o, "%u", *(const uint8_t *) v);
                        break;
                case FT_STATE_BOOL:
                        out_printf(&o, "%u", *(const bool *) v ? 1u : 0u);
                        break;
                case FT_U16:
                        out_printf(&o, "%u", *(const uint16_t *) v);
                        break;
                case FT_U32:
                        out_printf(&o, "%" PRIu32, *(const uint32_t *) v);
                        break;
                case FT_I32:
                        if (fd->format == FMT_MICRO_C)
                                out_micro(&o, *(const int32_t *) v);
                        else
                                out_printf(&o, "%" PRIi32, *(const int32_t *) v);
                        break;
                case FT_U64:
                        out_printf(&o, "%" PRIu64, *(const uint64_t *) v);
                        break;
                case FT_STRING:
                        out_string(&o, v);
                        break;
                case FT_BYTES: {
                        size_t n = *(const size_t *) FIELD_CPTR(m, fd->len_offset);
                        out_hex(&o, v, n, false);
                        if (fd->format == FMT_TOKEN) {
                                out_printf(&o, " token_string=");
                                out_hex(&o, v, n, true);
                        }
                        break;
                }
                }
        }
        for (size_t i = 0; i < MIN((size_t) m->n_errors, (size_t) KBSP_MAX_FIELD_ERRORS); i++) {
                char tmp[64];
                kbsp_field_error_format(&m->errors[i], tmp, sizeof tmp);
                out_printf(&o, " tlv_error=");
                out_string(&o, tmp);
        }
        for (size_t k = 0; k < md->n_fields; k++) {
                if (!md->fields[k].required || field_is_set(m, &md->fields[k]))
                        continue;
                out_printf(&o, "%s%s", first_missing ? " missing=" : ",", md->fields[k].name);
                first_missing = false;
        }
        return out_done(&o);
}

int kbsp_event_format(const KbspEvent *ev, char *buf, size_t size) {
        Out o;

        assert_return(ev, -EINVAL);

        switch (ev->type) {
        case KBSP_EVENT_FRAME: {
                KbspMessage m;
                if (!ev->frame)
                        return -EINVAL;
                kbsp_frame_decode(ev->frame, &m);
                return kbsp_message_format(&m, ev->frame, buf, size);
        }
        case KBSP_EVENT_GARBAGE:
                out_init(&o, buf, size);
                out_printf(&o, "garbage bytes=%" PRIu64, ev->size);
                return out_done(&o);
        case KBSP_EVENT_ERROR:
                out_init(&o, buf, size);
                out_printf(&o, "error %s", kbsp_error_to_string(ev->error));
                return out_done(&o);
        default:
                return -EINVAL;
        }
}

/* ---- naming ---- */

void kbsp_board_name(const char *serial, char ret[static KBSP_BOARD_NAME_MAX]) {
        size_t n = serial ? strlen(serial) : 0;
        char *q;

        if (n == 0) {
                strcpy(ret, "kegboard");
                return;
        }
        strcpy(ret, "kegboard-");
        q = ret + strlen(ret);
        for (const char *c = serial + (n > 8 ? n - 8 : 0); *c; c++) {
                char ch = *c;
                if (ch >= 'A' && ch <= 'Z')
                        ch = (char) (ch - 'A' + 'a');
                /* a '.' would break the server's <controller>.<port> split */
                if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
                        ch = '_';
                *q++ = ch;
        }
        *q = 0;
}

char *kbsp_token_to_string(const void *token, size_t len, char *buf) {
        const uint8_t *t = token;

        /* the host string is the wire bytes reversed */
        for (size_t i = 0; i < len; i++) {
                uint8_t b = t[len - 1 - i];
                buf[2 * i] = hexchar(b >> 4);
                buf[2 * i + 1] = hexchar(b);
        }
        buf[2 * len] = 0;
        return buf;
}

int kbsp_token_from_string(const char *s, void *buf, size_t size) {
        uint8_t *b = buf;
        size_t n;

        assert_return(s, -EINVAL);
        assert_return(buf || size == 0, -EINVAL);

        n = strlen(s);
        if (n % 2 != 0)
                return -EINVAL;
        if (!hex_is_valid(s, n))
                return -EINVAL;
        if (n / 2 > size || n / 2 > INT_MAX)
                return -ENOBUFS;
        /* the host string is the wire bytes reversed */
        for (size_t i = 0; i < n / 2; i++)
                b[n / 2 - 1 - i] = (uint8_t) (unhexchar(s[2 * i]) << 4 | unhexchar(s[2 * i + 1]));
        return (int) (n / 2);
}

const char *kbsp_auth_device_name(const char *device) {
        if (device && streq(device, "onewire"))
                return "core.onewire";
        return device;
}

void kbsp_thermo_name(const uint8_t rom[static 8], char ret[static KBSP_THERMO_NAME_MAX]) {
        memcpy(ret, "thermo-", 7);
        kbsp_token_to_string(rom, 8, ret + 7);
}

int kbsp_port_name(char *buf, size_t size, const char *board, const char *port) {
        return snprintf(buf, size, "%s.%s", board, port);
}

int kbsp_relay_parse(const char *relay_name, const char *board, unsigned *ret_id) {
        const char *dot, *port;
        size_t bl;

        assert_return(relay_name, -EINVAL);
        assert_return(board, -EINVAL);

        dot = strchr(relay_name, '.');
        bl = strlen(board);
        if (!dot || (size_t) (dot - relay_name) != bl || strncmp(relay_name, board, bl) != 0)
                return 0;
        port = startswith(dot + 1, "relay");
        if (!port || port[0] < '0' || port[0] >= '0' + KBSP_MAX_OUTPUTS || port[1] != 0)
                return -EINVAL;
        if (ret_id)
                *ret_id = (unsigned) (port[0] - '0');
        return 1;
}
