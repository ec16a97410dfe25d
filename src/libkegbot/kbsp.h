/* Kegboard Serial Protocol (KBSP v1): CRC-16/KERMIT, frame and message encoders for both directions,
 * the incremental host decoder (resync rules of spec/kegboard-serial-protocol.md section 6), the
 * firmware-side receive parser (section 8, for kegboard_sim), text rendering and the host naming rules.
 * Pure code: no I/O, no clock, no allocation in the decode path. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* ---- framing constants ---- */

#define KBSP_PREFIX "KBSP v1:"
#define KBSP_PREFIX_LEN 8
#define KBSP_HEADER_LEN 12          /* prefix + message_id + payload_len */
#define KBSP_FOOTER_LEN 4           /* crc + "\r\n" */
#define KBSP_MAX_PAYLOAD 112
#define KBSP_MIN_FRAME (KBSP_HEADER_LEN + KBSP_FOOTER_LEN)                 /* 16 */
#define KBSP_MAX_FRAME (KBSP_HEADER_LEN + KBSP_MAX_PAYLOAD + KBSP_FOOTER_LEN) /* 128 */
#define KBSP_MAX_RECORDS (KBSP_MAX_PAYLOAD / 2)   /* every record takes at least tag + len */
#define KBSP_STRING_MAX (KBSP_MAX_PAYLOAD + 1)    /* a decoded string plus its NUL */
#define KBSP_SERIAL_FIELD_LEN 30    /* hello.serial_number is always 30 bytes, NUL padded */
#define KBSP_PREFIX_CRC 0xE3AFu     /* CRC-16/KERMIT of the prefix alone */
#define KBSP_MAX_OUTPUTS 6

/* ---- message ids ---- */

enum {
        KBSP_MSG_HELLO               = 0x01,
        KBSP_MSG_CONFIGURATION       = 0x02,
        KBSP_MSG_METER_STATUS        = 0x10,
        KBSP_MSG_TEMPERATURE_READING = 0x11,
        KBSP_MSG_OUTPUT_STATUS       = 0x12,
        KBSP_MSG_ONEWIRE_PRESENCE    = 0x13,
        KBSP_MSG_AUTH_TOKEN          = 0x14,
        KBSP_MSG_PING                = 0x81,
        KBSP_MSG_SET_OUTPUT          = 0x84,
        KBSP_MSG_SET_SERIAL_NUMBER   = 0x85,
};

/* ---- tags, per message ---- */

enum {
        KBSP_HELLO_TAG_FIRMWARE_VERSION = 1,   /* u16, required */
        KBSP_HELLO_TAG_PROTOCOL_VERSION = 2,   /* u16, never sent by v18 */
        KBSP_HELLO_TAG_SERIAL_NUMBER    = 3,   /* string, 30 bytes NUL padded */
        KBSP_HELLO_TAG_UPTIME_MS        = 4,   /* u32 */
        KBSP_HELLO_TAG_UPTIME_DAYS      = 5,   /* u32 */

        KBSP_CONFIGURATION_TAG_BOARD_NAME       = 1, /* string */
        KBSP_CONFIGURATION_TAG_BAUD_RATE        = 2, /* u16 */
        KBSP_CONFIGURATION_TAG_UPDATE_INTERVAL  = 3, /* u16 */
        KBSP_CONFIGURATION_TAG_WATCHDOG_TIMEOUT = 4, /* u16 */

        KBSP_METER_STATUS_TAG_METER_NAME    = 1, /* string, required */
        KBSP_METER_STATUS_TAG_METER_READING = 2, /* u32, required */

        KBSP_TEMPERATURE_READING_TAG_SENSOR_NAME    = 1, /* string, required */
        KBSP_TEMPERATURE_READING_TAG_SENSOR_READING = 2, /* i32 micro-deg C, required */

        KBSP_OUTPUT_STATUS_TAG_OUTPUT_NAME    = 1, /* string, required */
        KBSP_OUTPUT_STATUS_TAG_OUTPUT_READING = 2, /* output state (1 or 2 bytes), required */

        KBSP_ONEWIRE_PRESENCE_TAG_DEVICE_ID = 1, /* u64 */
        KBSP_ONEWIRE_PRESENCE_TAG_STATUS    = 2, /* u8 */

        KBSP_AUTH_TOKEN_TAG_DEVICE = 1, /* string, required */
        KBSP_AUTH_TOKEN_TAG_TOKEN  = 2, /* bytes, required */
        KBSP_AUTH_TOKEN_TAG_STATUS = 3, /* u8, required */

        KBSP_SET_OUTPUT_TAG_OUTPUT_ID   = 1, /* u8 */
        KBSP_SET_OUTPUT_TAG_OUTPUT_MODE = 2, /* output state; hosts send 2 bytes */

        KBSP_SET_SERIAL_NUMBER_TAG_SERIAL_NUMBER = 1, /* string; hosts send text + NUL, < 30 bytes */
};

/* ---- CRC-16/KERMIT (reflected 0x8408, init 0, no final xor) ---- */

uint16_t kbsp_crc16_update(uint16_t crc, const void *data, size_t size);
static inline uint16_t kbsp_crc16(const void *data, size_t size) {
        return kbsp_crc16_update(0, data, size);
}

/* ---- a received frame, before typed decoding ---- */

typedef struct KbspRecord {
        uint8_t tag;
        uint8_t len;
        uint8_t offset;         /* of the value, from the start of the payload */
} KbspRecord;

typedef struct KbspFrame {
        uint16_t message_id;
        uint16_t payload_len;   /* as used for framing (firmware parser: the low byte only) */
        uint16_t crc;           /* the stored CRC, as read from the wire */
        uint16_t size;          /* whole frame, 16..128 */
        /* TLV records in wire order. A record that runs past the payload end stops the walk
         * (tlv_overrun): the records before it are kept. */
        uint8_t n_records;
        bool tlv_overrun;
        bool overrun_has_len;   /* false: a lone tag byte was left at the payload end */
        uint8_t overrun_tag;
        uint8_t overrun_len;
        KbspRecord records[KBSP_MAX_RECORDS];
        uint8_t data[KBSP_MAX_FRAME]; /* the frame bytes as received */
} KbspFrame;

static inline const uint8_t *kbsp_frame_payload(const KbspFrame *f) {
        return f->data + KBSP_HEADER_LEN;
}
static inline const uint8_t *kbsp_record_value(const KbspFrame *f, const KbspRecord *r) {
        return f->data + KBSP_HEADER_LEN + r->offset;
}
/* First record with this tag (the firmware's and our lookup rule), or NULL. */
const KbspRecord *kbsp_frame_find_record(const KbspFrame *f, uint8_t tag);
/* Parses bytes that form one complete frame (16..128 bytes; the prefix, payload_len <= 112, the
 * length and the trailer are checked, the CRC only if check_crc) into *ret. -EBADMSG if it is not
 * a frame or (check_crc) its CRC is wrong. Handy for tests and for frames built by hand. */
int kbsp_frame_parse(const void *data, size_t size, bool check_crc, KbspFrame *ret);

/* Canonical message name ("hello", "meter_status", ...) or NULL for an id nobody defines. */
const char *kbsp_message_name(uint16_t message_id);

/* ---- typed messages ---- */

typedef struct KbspHello {
        bool has_firmware_version, has_protocol_version, has_serial_number, has_uptime_ms, has_uptime_days;
        uint16_t firmware_version;
        uint16_t protocol_version;       /* absent means 1 */
        char serial_number[KBSP_STRING_MAX]; /* up to the first NUL; "" = never set */
        uint32_t uptime_ms;              /* ms into the current uptime day */
        uint32_t uptime_days;
} KbspHello;

typedef struct KbspConfiguration {
        bool has_board_name, has_baud_rate, has_update_interval, has_watchdog_timeout;
        char board_name[KBSP_STRING_MAX];
        uint16_t baud_rate;
        uint16_t update_interval;
        uint16_t watchdog_timeout;
} KbspConfiguration;

typedef struct KbspMeterStatus {
        bool has_meter_name, has_meter_reading;
        char meter_name[KBSP_STRING_MAX];    /* "flow0".."flow5" */
        uint32_t meter_reading;              /* ticks since the board's reset, wraps */
} KbspMeterStatus;

typedef struct KbspTemperatureReading {
        bool has_sensor_name, has_sensor_reading;
        char sensor_name[KBSP_STRING_MAX];   /* "thermo-" + 16 hex digits */
        int32_t sensor_reading;              /* micro-degrees Celsius */
} KbspTemperatureReading;

typedef struct KbspOutputStatus {
        bool has_output_name, has_output_reading;
        char output_name[KBSP_STRING_MAX];   /* "relay0".."relay5" */
        bool output_reading;                 /* on = first byte non-zero */
} KbspOutputStatus;

typedef struct KbspOnewirePresence {
        bool has_device_id, has_status;
        uint64_t device_id;
        uint8_t status;
} KbspOnewirePresence;

typedef struct KbspAuthToken {
        bool has_device, has_token, has_status;
        char device[KBSP_STRING_MAX];        /* "onewire", "core.rfid" */
        uint8_t token[KBSP_MAX_PAYLOAD];     /* wire order */
        size_t token_len;
        uint8_t status;                      /* 1 present/added, 0 removed */
} KbspAuthToken;

typedef struct KbspSetOutput {
        bool has_output_id, has_output_mode;
        uint8_t output_id;
        uint8_t output_mode;                 /* first byte of the value: 0 off, 1 on */
} KbspSetOutput;

typedef struct KbspSetSerialNumber {
        bool has_serial_number;
        char serial_number[KBSP_STRING_MAX];
} KbspSetSerialNumber;

typedef enum KbspFieldErrorKind {
        KBSP_FIELD_ERROR_TLV_OVERRUN,   /* record runs past the payload end; decoding stopped there */
        KBSP_FIELD_ERROR_BAD_WIDTH,     /* value of the wrong width; the field counts as absent */
} KbspFieldErrorKind;

typedef struct KbspFieldError {
        KbspFieldErrorKind kind;
        uint8_t tag;
        uint8_t len;            /* claimed (overrun) or actual (bad width) value length */
        bool has_len;           /* overrun only: false when only the tag byte was left */
        uint8_t expected;       /* bad width: the required width; 0 = output state (1 or 2) */
} KbspFieldError;

#define KBSP_MAX_FIELD_ERRORS 8

typedef struct KbspMessage {
        uint16_t message_id;    /* any id; the union is meaningful for the ids above */
        /* All required fields are present and valid (spec section 6 rule 7). A message that is not
         * complete must not be acted on. Messages without required fields are always complete. */
        bool complete;
        uint8_t n_errors;
        KbspFieldError errors[KBSP_MAX_FIELD_ERRORS]; /* in wire order, e.g. for logging */
        union {
                KbspHello hello;
                KbspConfiguration configuration;
                KbspMeterStatus meter_status;
                KbspTemperatureReading temperature_reading;
                KbspOutputStatus output_status;
                KbspOnewirePresence onewire_presence;
                KbspAuthToken auth_token;
                KbspSetOutput set_output;
                KbspSetSerialNumber set_serial_number;
        };
} KbspMessage;

/* Host-side typed decode of a frame with exact width checks (section 3). The first record with a
 * given tag wins; unknown tags are skipped. Never fails: problems go to ret->errors / ->complete.
 * For an unknown id only message_id is set (complete = true, no fields); use the frame's records. */
void kbsp_frame_decode(const KbspFrame *f, KbspMessage *ret);

/* Zero-initialised message of the given id, ready to have fields set and be encoded. */
void kbsp_message_init(KbspMessage *m, uint16_t message_id);

/* ---- encoders ----
 * All return the frame length (16..128) written to buf, or -ENOBUFS if size is too small (use
 * KBSP_MAX_FRAME), -EINVAL for a value that cannot be encoded (payload over 112 bytes, a serial
 * of 30 bytes or more, an output id over 255, ...). Values use v18 widths: u16 ints, u32
 * readings, output state as 2 bytes, hello serial as a 30-byte NUL padded field, names without
 * NUL, set_serial_number as text + NUL. */

/* TLV payload under construction. Errors are sticky and reported by kbsp_encode_payload_frame(). */
typedef struct KbspPayload {
        uint8_t data[KBSP_MAX_PAYLOAD];
        size_t len;
        int error;
} KbspPayload;

void kbsp_payload_init(KbspPayload *p);
void kbsp_payload_add(KbspPayload *p, uint8_t tag, const void *value, size_t len);
void kbsp_payload_add_u8(KbspPayload *p, uint8_t tag, uint8_t v);
void kbsp_payload_add_u16(KbspPayload *p, uint8_t tag, uint16_t v);
void kbsp_payload_add_u32(KbspPayload *p, uint8_t tag, uint32_t v);
void kbsp_payload_add_i32(KbspPayload *p, uint8_t tag, int32_t v);
void kbsp_payload_add_u64(KbspPayload *p, uint8_t tag, uint64_t v);
void kbsp_payload_add_string(KbspPayload *p, uint8_t tag, const char *s); /* no NUL */

/* Raw frame: header, payload as given (not checked to be TLV), CRC, trailer. */
int kbsp_encode_frame(void *buf, size_t size, uint16_t message_id, const void *payload, size_t payload_len);
int kbsp_encode_payload_frame(void *buf, size_t size, uint16_t message_id, const KbspPayload *p);
/* Re-encodes a received frame from its records (same bytes for any frame without an overrun). */
int kbsp_encode_records(void *buf, size_t size, const KbspFrame *f);
/* Any typed message: fields with has_* set, in tag order. Unknown ids: -EINVAL. */
int kbsp_message_encode(const KbspMessage *m, void *buf, size_t size);

/* Shortcuts for the frames programs actually send. */
int kbsp_encode_ping(void *buf, size_t size);
int kbsp_encode_set_output(void *buf, size_t size, unsigned output_id, bool on);
int kbsp_encode_set_serial_number(void *buf, size_t size, const char *serial);
int kbsp_encode_hello(void *buf, size_t size, uint16_t firmware_version, const char *serial,
                      uint32_t uptime_ms, uint32_t uptime_days);
int kbsp_encode_meter_status(void *buf, size_t size, const char *meter_name, uint32_t reading);
int kbsp_encode_temperature_reading(void *buf, size_t size, const char *sensor_name, int32_t micro_c);
int kbsp_encode_output_status(void *buf, size_t size, const char *output_name, bool on);
int kbsp_encode_auth_token(void *buf, size_t size, const char *device, const void *token,
                           size_t token_len, uint8_t status);

/* ---- decoder events ---- */

typedef enum KbspEventType {
        KBSP_EVENT_FRAME,       /* a well-formed frame (any id, CRC and trailer good) */
        KBSP_EVENT_GARBAGE,     /* a run of bytes that were not part of any frame */
        KBSP_EVENT_ERROR,       /* a candidate frame was rejected */
} KbspEventType;

typedef enum KbspError {
        KBSP_ERROR_OVERSIZE_LENGTH,  /* payload_len > 112, rejected at header time */
        KBSP_ERROR_BAD_CRC,
        KBSP_ERROR_BAD_TRAILER,      /* the two bytes after the CRC are not 0D 0A */
        _KBSP_ERROR_MAX,
} KbspError;

const char *kbsp_error_to_string(KbspError e); /* "oversize_length", "bad_crc", "bad_trailer" */

typedef struct KbspEvent {
        KbspEventType type;
        KbspError error;         /* KBSP_EVENT_ERROR only */
        uint64_t offset;         /* stream offset of the first byte of the frame / run / rejected frame */
        /* Bytes this event accounts for: the frame size, the garbage run length, or for an error the
         * bytes dropped by the rejection (always 1: the host decoder drops the 'K' and rescans; the
         * firmware parser drops what it consumed). Sum over all events + pending == bytes fed. */
        uint64_t size;
        uint16_t message_id;     /* FRAME and ERROR (for ERROR as read from the header) */
        uint16_t payload_len;    /* FRAME and ERROR (oversize: the claimed length, all 16 bits) */
        const KbspFrame *frame;  /* FRAME only: owned by the parser, valid until its next call */
} KbspEvent;

typedef struct KbspStats {
        uint64_t bytes;          /* fed so far */
        uint64_t frames;
        uint64_t garbage_bytes;  /* counted as soon as they are known to be garbage */
        uint64_t errors[_KBSP_ERROR_MAX];
} KbspStats;

/* ---- host decoder (spec section 6) ----
 * Usage:
 *         kbsp_decoder_feed(d, buf, n);
 *         while ((r = kbsp_decoder_next(d, &ev)) > 0)
 *                 handle(&ev);
 * The fed bytes are not copied (except a partial frame at the end, at most 127 bytes), so they must
 * stay valid until next() returns 0. Identical events for any chunking of the input. */

typedef struct KbspDecoder {
        /* all private; read stats directly */
        KbspStats stats;
        const uint8_t *in;
        size_t in_len;
        uint8_t buf[KBSP_MAX_FRAME];  /* a candidate frame (or prefix) split across feeds */
        size_t buf_len;
        uint64_t consumed;            /* bytes taken from the input so far */
        uint64_t garbage_run;         /* garbage not yet reported as an event */
        uint64_t garbage_offset;
        KbspFrame frame;
} KbspDecoder;

void kbsp_decoder_init(KbspDecoder *d);
int kbsp_decoder_new(KbspDecoder **ret);
KbspDecoder *kbsp_decoder_free(KbspDecoder *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(KbspDecoder *, kbsp_decoder_free);
/* -EBUSY if the previous input was not drained with next() yet. */
int kbsp_decoder_feed(KbspDecoder *d, const void *data, size_t size);
/* 1 = *ret filled, 0 = all input consumed (need more). */
int kbsp_decoder_next(KbspDecoder *d, KbspEvent *ret);
/* At end of input (after next() returned 0): 1 with the trailing garbage run, if any, else 0. */
int kbsp_decoder_finish(KbspDecoder *d, KbspEvent *ret);
/* Bytes held back: an incomplete frame or a possible prefix start at the end of the input. */
static inline size_t kbsp_decoder_pending(const KbspDecoder *d) {
        return d->buf_len;
}

/* ---- firmware receive parser (spec section 8; what a v18 board does with host bytes) ----
 * Same usage as the decoder. Differences: no rescan after a drop, only the low byte of payload_len
 * counts (> 112: dropped), the CRC is checked only if strict_crc, a bad trailer drops the frame.
 * Frames with any id are returned; the caller ignores unknown ids. */

typedef struct KbspFirmwareParser {
        /* all private; read stats directly */
        KbspStats stats;
        bool strict_crc;
        const uint8_t *in;
        size_t in_len;
        uint8_t buf[KBSP_MAX_FRAME];
        size_t buf_len;               /* bytes of the current frame collected (0..7 = prefix match) */
        size_t need;                  /* frame size once the header is known, else 0 */
        uint64_t consumed;
        uint64_t garbage_run;
        uint64_t garbage_offset;
        KbspFrame frame;
} KbspFirmwareParser;

void kbsp_firmware_parser_init(KbspFirmwareParser *p, bool strict_crc);
int kbsp_firmware_parser_feed(KbspFirmwareParser *p, const void *data, size_t size);
int kbsp_firmware_parser_next(KbspFirmwareParser *p, KbspEvent *ret);
int kbsp_firmware_parser_finish(KbspFirmwareParser *p, KbspEvent *ret);
static inline size_t kbsp_firmware_parser_pending(const KbspFirmwareParser *p) {
        return p->buf_len;
}

/* ---- text (kegboard_monitor's line format, without the time) ----
 * "hello firmware_version=18 serial_number=KB-0123-4567 uptime_ms=0 uptime_days=0",
 * "temperature_reading sensor_name=thermo-... sensor_reading=4.5",
 * "auth_token device=core.rfid token=cd23ab1504 token_string=0415ab23cd status=1",
 * "unknown message_id=0x42 payload_len=5", "error bad_crc", "garbage bytes=9".
 * Strings are bare unless empty or containing spaces, quotes or odd bytes (then JSON-quoted).
 * Field errors follow as tlv_error="...", missing required fields as missing=<name>,...
 * snprintf() semantics: returns the length the full text needs; KBSP_TEXT_MAX always suffices. */
#define KBSP_TEXT_MAX 2048
int kbsp_message_format(const KbspMessage *m, const KbspFrame *f, char *buf, size_t size);
int kbsp_event_format(const KbspEvent *ev, char *buf, size_t size); /* decodes FRAME events itself */
/* "tlv_overrun(tag=2,len=8)", "bad_value(tag=2): width 2 != 4" */
int kbsp_field_error_format(const KbspFieldError *e, char *buf, size_t size);

/* ---- host naming conventions (section 10) ---- */

#define KBSP_BOARD_NAME_MAX 18  /* "kegboard-" + 8 + NUL */
/* "kegboard-" + last 8 chars of the serial (NUL-trimmed), lower-cased, chars outside [a-z0-9-_]
 * replaced by '_'; "kegboard" for an empty/NULL serial. */
void kbsp_board_name(const char *serial, char ret[static KBSP_BOARD_NAME_MAX]);
/* Token bytes reversed, lowercase hex; buf needs 2 * len + 1 bytes. Returns buf. */
char *kbsp_token_to_string(const void *token, size_t len, char *buf);
/* Inverse: host notation (hex, either case, even length) to wire-order bytes. Returns the byte
 * count, -EINVAL for bad hex, -ENOBUFS if it does not fit. */
int kbsp_token_from_string(const char *s, void *buf, size_t size);
/* "onewire" -> "core.onewire"; anything else unchanged. */
const char *kbsp_auth_device_name(const char *device);
/* 1-wire ROM in wire order (family first) -> "thermo-" + the 16 hex digits last byte first. */
#define KBSP_THERMO_NAME_MAX 24
void kbsp_thermo_name(const uint8_t rom[static 8], char ret[static KBSP_THERMO_NAME_MAX]);
/* "<board>.<port>" (meter, sensor or relay name). snprintf() semantics. */
int kbsp_port_name(char *buf, size_t size, const char *board, const char *port);
/* Relay name "<board>.relay<N>": 1 with *ret_id = N if it names this board's relay 0-5; 0 if it
 * belongs to another board; -EINVAL if it is this board's but the port is malformed. */
int kbsp_relay_parse(const char *relay_name, const char *board, unsigned *ret_id);
static inline double kbsp_temperature_c(int32_t micro_c) {
        return micro_c / 1e6;
}
static inline uint64_t kbsp_hello_uptime_total_ms(const KbspHello *h) {
        return (uint64_t) h->uptime_days * UINT64_C(86400000) + h->uptime_ms;
}
