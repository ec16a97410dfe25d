/* Where drinks go (core-behaviour.md section 10): the DrinkSink interface the manager hands every
 * completed drink to. Standalone mode's sink is the drinks log (drinks-log.h), server mode's the
 * spool and its uploader (backend.h).
 *
 * What record() promises, and what it does not: the sink writes the drink durably (fsync) before
 * it returns, unless the write fails (disk full, I/O error). Then the drink is HELD in memory, in
 * order, and written by a later retry: it is NOT durable meanwhile and is lost if the core stops
 * before the disk recovers. The manager tells its observers which of the two happened
 * (drink_stored, durable or not), reports the flow completed either way (section 10.2), and
 * announces the drink (DrinkCreatedEvent, D-Bus DrinkRecorded) only once the sink has accepted it:
 * written to drinks.log, or taken by the server. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drink.h"
#include "macro.h"

typedef struct DrinkSink DrinkSink;

/* What record() did with the drink. */
typedef enum DrinkSinkResult {
        DRINK_SINK_QUEUED = 0,          /* durable; acceptance follows through 'accepted' */
        DRINK_SINK_ACCEPTED = 1,        /* durable and accepted now (d->drink_id may be set) */
        DRINK_SINK_HELD = 2,            /* the write failed: held in memory, not durable; acceptance
                                         * follows through 'accepted' once a retry wrote it */
} DrinkSinkResult;

/* The sink accepted a drink it had queued or held (server: uploaded, d->drink_id set if known;
 * drinks log: written after an earlier failure). Never called from inside drink_sink_record(). */
typedef void (*DrinkAcceptedHandler)(DrinkSink *sink, const Drink *d, void *userdata);

typedef struct DrinkSinkVTable {
        const char *name;
        /* A DrinkSinkResult, or < 0: not recorded at all (logged by the sink). The sink may keep
         * a copy, never 'd'. With DRINK_SINK_ACCEPTED the caller announces the drink itself right
         * after FlowUpdate(completed). */
        int (*record)(DrinkSink *sink, Drink *d);
        size_t (*n_pending)(DrinkSink *sink);   /* recorded, not yet accepted (held ones included) */
        size_t (*n_held)(DrinkSink *sink);      /* held in memory, not durable */
        int (*reopen)(DrinkSink *sink);         /* SIGHUP; may be NULL */
        void (*free)(DrinkSink *sink);
} DrinkSinkVTable;

struct DrinkSink {
        const DrinkSinkVTable *vtable;
        DrinkAcceptedHandler accepted;
        void *userdata;
};

void drink_sink_set_accepted_handler(DrinkSink *s, DrinkAcceptedHandler h, void *userdata);

int drink_sink_record(DrinkSink *s, Drink *d);
size_t drink_sink_n_pending(DrinkSink *s);
size_t drink_sink_n_held(DrinkSink *s);
int drink_sink_reopen(DrinkSink *s);
DrinkSink *drink_sink_free(DrinkSink *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(DrinkSink *, drink_sink_free);

/* For sink implementations: report a queued or held drink as accepted. */
void drink_sink_notify_accepted(DrinkSink *s, const Drink *d);
