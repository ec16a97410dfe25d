/* PhidgetRFID 1023 spoken to directly (rfid-readers.md section 2): input reports, the output
 * report that carries the complete LED/antenna/output state, the walk of the HID report
 * descriptor that gives the output report length, and the product and firmware rules. Pure: no
 * I/O, no clock; phidget-hidraw.c does the device side. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define PHIDGET_VENDOR_ID       0x06c2U
#define PHIDGET_PRODUCT_V1      0x0030U         /* PhidgetRFID 1023, original */
#define PHIDGET_PRODUCT_V2      0x0031U         /* PhidgetRFID 1023 with outputs and LED ("1023_2") */
#define PHIDGET_PRODUCT_1024    0x0034U         /* read/write reader: another protocol, unsupported */

/* Reads are done into a buffer this large; writes are at most 1 + this many bytes. */
#define PHIDGET_REPORT_MAX      64U
#define PHIDGET_REPORT_DEFAULT  8U              /* output length when the descriptor says nothing usable */
#define PHIDGET_TAG_BYTES       5U

/* Output state bits (section 2.4). */
#define PHIDGET_STATE_OUTPUT0   0x01U
#define PHIDGET_STATE_OUTPUT1   0x02U
#define PHIDGET_STATE_LED       0x04U
#define PHIDGET_STATE_ANTENNA   0x08U

typedef enum PhidgetModel {
        PHIDGET_MODEL_V1,
        PHIDGET_MODEL_V2,
} PhidgetModel;

/* The model for a USB vendor:product, or -ENODEV (another product) / -EOPNOTSUPP (the 1024). */
int phidget_model_from_ids(unsigned vendor, unsigned product, PhidgetModel *ret);

typedef enum PhidgetReportKind {
        PHIDGET_REPORT_IGNORED,         /* "no card": neither starts, refreshes nor ends anything */
        PHIDGET_REPORT_TAG,             /* .tag */
        PHIDGET_REPORT_ECHO,            /* v2 state echo: .state */
        PHIDGET_REPORT_SHORT,           /* bad input short_report: 1..5 bytes */
        PHIDGET_REPORT_UNKNOWN_TYPE,    /* bad input unknown_type (v2): .type */
} PhidgetReportKind;

typedef struct PhidgetReport {
        PhidgetReportKind kind;
        char tag[2 * PHIDGET_TAG_BYTES + 1];    /* 10 lowercase hex digits */
        uint8_t state;
        uint8_t type;
} PhidgetReport;

/* One input report of n >= 1 bytes (n == 0 is the device going away: the caller's business). */
void phidget_report_parse(PhidgetModel model, const uint8_t *buf, size_t n, PhidgetReport *ret);

/* Walks a HID report descriptor (section 2.2). Returns 0 and the input and output report lengths
 * in bytes (output 0: the device takes no writes), or -EBADMSG when the descriptor is rejected (a
 * Report ID item, an item running past the end, a Pop on an empty stack, a fifth Push, an output
 * report above PHIDGET_REPORT_MAX bytes). */
int phidget_descriptor_walk(const uint8_t *d, size_t n, size_t *ret_in, size_t *ret_out);

/* The HID_ID property of a hid device ("0003:000006C2:00000031": bus, vendor, product): the USB
 * vendor and product, or -EINVAL (malformed, or not on USB). */
int phidget_parse_hid_id(const char *s, uint16_t *ret_vendor, uint16_t *ret_product);

/* The firmware version from the USB bcdDevice: 0x0201 -> 201, 0x0104 -> 104. */
unsigned phidget_firmware_from_bcd(unsigned bcd);

/* What a reader needs at attach (section 2.6). firmware 0 = unknown. */
typedef enum PhidgetAttach {
        PHIDGET_ATTACH_NOTHING,         /* v1 >= 104 or unknown: no writes at all, ever */
        PHIDGET_ATTACH_ZERO_REPORT,     /* v1 < 104: one all-zero report, then no writes */
        PHIDGET_ATTACH_STATE,           /* v2: state 0x08, then the shadow state on every change */
} PhidgetAttach;

PhidgetAttach phidget_attach_action(PhidgetModel model, unsigned firmware);

/* Whether a v2 state echo carries the real state (firmware >= 201 or unknown). */
bool phidget_echo_trusted(PhidgetModel model, unsigned firmware);

/* The state a v2 reader should have: antenna on while attached, LED (and output 1 with toggle)
 * during a presentation, everything off at an orderly stop. */
uint8_t phidget_wanted_state(bool presenting, bool toggle_output, bool stopping);

/* The bytes of one write: report number 0, then the L-byte output report whose first byte is the
 * state and the rest zero. buf needs 1 + L bytes (L <= PHIDGET_REPORT_MAX); returns 1 + L, or 0
 * for L == 0 (nothing can be written). */
size_t phidget_output_report(uint8_t state, size_t output_len, uint8_t *buf);
