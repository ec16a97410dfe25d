/* Keyboard-wedge RFID readers (rfid-readers.md section 4.2): a USB "keyboard" that types the card
 * number and Enter. Pure decoder of evdev records (type, code, value) plus the time the read
 * returned; the kernel's key codes are used, so the system keymap plays no part. keyboard-evdev.c
 * does the device side. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define KEYBOARD_LINE_MAX 64
/* A line whose previous key press is older than this is discarded before the next press. */
#define KEYBOARD_STALE_USEC (1000 * USEC_PER_MSEC)

typedef enum KeyboardResult {
        KEYBOARD_READ,                  /* .token */
        KEYBOARD_SHIFTED_DIGIT,         /* bad line: a digit typed with Shift (.code) */
        KEYBOARD_BAD_KEY,               /* bad line: a key that is no digit, letter or Enter (.code) */
        KEYBOARD_TOO_LONG,              /* bad line: more than KEYBOARD_LINE_MAX characters */
        KEYBOARD_DROPPED,               /* the kernel lost events (SYN_DROPPED): line discarded */
        KEYBOARD_STALE,                 /* a pause in mid-line: the old part discarded (DEBUG only) */
        KEYBOARD_EMPTY_LINE,            /* Enter alone (DEBUG only) */
        _KEYBOARD_RESULT_MAX,
} KeyboardResult;

typedef struct KeyboardEvent {
        KeyboardResult result;
        char token[KEYBOARD_LINE_MAX + 1];
        unsigned code;
} KeyboardEvent;

typedef struct KeyboardDecoder {
        char line[KEYBOARD_LINE_MAX + 1];
        size_t len;
        bool bad;
        KeyboardResult bad_result;
        unsigned bad_code;
        bool shift_left, shift_right;
        uint64_t last_press;
        bool dropping;
} KeyboardDecoder;

/* The kind as the spec names it ("shifted_digit", ...). */
const char *keyboard_result_to_string(KeyboardResult r);

void keyboard_decoder_init(KeyboardDecoder *k);
/* One record. Fills out[] with 0 to 2 events and returns their number. */
size_t keyboard_decoder_feed(KeyboardDecoder *k, uint16_t type, uint16_t code, int32_t value, uint64_t now,
                             KeyboardEvent out[static 2]);

/* Whether the key map can produce a line: an Enter key and at least one digit key among the
 * codes for which has_key() is true (the EV_KEY capability check of section 4.1). */
bool keyboard_capable(bool (*has_key)(unsigned code, void *userdata), void *userdata);
