/* Presentations (rfid-readers.md section 6.2): turns the reads of one reader into "added" and
 * "removed", with a synthetic removal once a token has not been read for the hold time. Pure: the
 * time is passed in, the caller keeps one timer armed at presence_deadline(). Also the token rule
 * of section 6.1, which every backend's output must pass. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* A token is 1 to RFID_TOKEN_MAX characters from [0-9a-z]. */
#define RFID_TOKEN_MAX 64

bool rfid_token_is_valid(const char *s);

typedef enum PresenceChange {
        PRESENCE_ADDED,
        PRESENCE_REMOVED,
} PresenceChange;

typedef struct PresenceEvent {
        PresenceChange change;
        char token[RFID_TOKEN_MAX + 1];
} PresenceEvent;

typedef struct Presence {
        uint64_t hold_usec;             /* 0: no deadline (the library reports the loss) */
        bool present;
        char token[RFID_TOKEN_MAX + 1];
        uint64_t deadline;
} Presence;

void presence_init(Presence *p, uint64_t hold_usec);

/* A read of 'token' (which must pass rfid_token_is_valid(), else nothing happens and 0 is
 * returned) at 'now'. Fills out[] with 0 to 2 events, in the order they must go out, and returns
 * their number. */
size_t presence_read(Presence *p, const char *token, uint64_t now, PresenceEvent out[static 2]);

/* The deadline has come (now >= deadline): the synthetic removal. 0 or 1 event. */
size_t presence_expire(Presence *p, uint64_t now, PresenceEvent out[static 1]);

/* The reader is closed (device lost, vetoed, stop) or reported the loss: "removed" for a token
 * still present. 0 or 1 event. */
size_t presence_close(Presence *p, PresenceEvent out[static 1]);

/* When the current presentation ends unless refreshed; false when nothing is present or there is
 * no deadline. */
bool presence_deadline(const Presence *p, uint64_t *ret);

static inline bool presence_active(const Presence *p) {
        return p->present;
}
