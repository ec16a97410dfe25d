/* ID-12 / ID-20 serial frames (rfid-readers.md section 3): STX, 10 hex digits of card id, 2 of
 * XOR checksum, optional CR LF, ETX. Pure incremental parser: bytes in any chunking plus the time
 * they arrived; reads and bad-input reports out through a callback. At most one frame of state;
 * never fails on any input. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define ID12_STX 0x02
#define ID12_ETX 0x03
#define ID12_DIGITS 12                          /* 10 data + 2 checksum */
/* A frame in progress is dropped when its last byte is older than this. */
#define ID12_STALE_USEC (200 * USEC_PER_MSEC)

typedef enum Id12Result {
        ID12_READ,                      /* .token */
        ID12_NOISE,                     /* a byte outside any frame */
        ID12_STALE,                     /* a partial frame left waiting too long */
        ID12_TRUNCATED,                 /* STX inside a frame: the partial one is dropped */
        ID12_BAD_CHARACTER,             /* .byte at .offset (STX = offset 0) */
        ID12_BAD_TRAILER,               /* .byte at .offset: neither CR/LF nor ETX, or a third CR/LF */
        ID12_BAD_CHECKSUM,              /* .card (as received), .checksum, .expected */
        _ID12_RESULT_MAX,
} Id12Result;

typedef struct Id12Event {
        Id12Result result;
        char token[11];                 /* ID12_READ: 10 lowercase hex digits */
        char card[11];                  /* ID12_BAD_CHECKSUM: the data digits, upper case */
        uint8_t checksum, expected;
        uint8_t byte;
        unsigned offset;
} Id12Event;

typedef void (*Id12Callback)(const Id12Event *ev, void *userdata);

typedef enum Id12State {
        ID12_HUNT,
        ID12_BODY,
        ID12_TRAILER,
} Id12State;

typedef struct Id12Parser {
        Id12State state;
        char digits[ID12_DIGITS];
        unsigned ndigits;
        unsigned ncrlf;
        uint64_t last_byte;
        Id12Callback callback;
        void *userdata;
} Id12Parser;

/* The kind as the spec names it ("bad_checksum", ...). */
const char *id12_result_to_string(Id12Result r);

void id12_parser_init(Id12Parser *p, Id12Callback callback, void *userdata);
/* n bytes that arrived at 'now' (monotonic µs). */
void id12_parser_feed(Id12Parser *p, const uint8_t *buf, size_t n, uint64_t now);
