/* Where drinks go (core-behaviour.md section 10): the DrinkSink interface the manager hands every
 * completed drink to. Standalone mode's sink is the drinks log (drinks-log.h), server mode's the
 * spool and its uploader (backend.h).
 *
 * record() writes the drink durably (fsync) before it returns, or fails: it never keeps a drink it
 * could not write (one exception: the event backend's sink keeps a pour whose spool file cannot be
 * written in memory and sends it from there, returning DRINK_SINK_QUEUED, so the pour is reported
 * completed as kegboard-event-protocol.md section 5.0 says; D-Bus SpoolState shows "degraded"
 * meanwhile). The manager holds a drink that failed itself, in order, without announcing it (no
 * FlowUpdate(completed), no DrinkCreatedEvent) until a retry has written it; its accounted meter
 * reading does not move meanwhile (meters-state.h), so not even a crash loses its ticks. Once
 * written, a drink is announced when the sink accepts it: appended to drinks.log (at once), or taken
 * by the server (later, through 'accepted'). */
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
} DrinkSinkResult;

/* The sink accepted a drink it had queued (server: uploaded, d->drink_id set if known). Never
 * called from inside drink_sink_record(). */
typedef void (*DrinkAcceptedHandler)(DrinkSink *sink, const Drink *d, void *userdata);

typedef struct DrinkSinkVTable {
        const char *name;
        /* A DrinkSinkResult, or < 0: not written (logged by the sink). -ENOSPC, -EIO and the like
         * may work later; -EBADMSG never will (the drink's text cannot be written). The sink may
         * keep a copy, never 'd'. With DRINK_SINK_ACCEPTED the caller announces the drink itself
         * right after FlowUpdate(completed). */
        int (*record)(DrinkSink *sink, Drink *d);
        size_t (*n_pending)(DrinkSink *sink);   /* recorded, not yet accepted */
        /* Start-up: whether the drink 'uuid' was written by an earlier run (> 0), not (0), or < 0. */
        int (*contains)(DrinkSink *sink, const char *uuid);
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
int drink_sink_contains(DrinkSink *s, const char *uuid);
int drink_sink_reopen(DrinkSink *s);
DrinkSink *drink_sink_free(DrinkSink *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(DrinkSink *, drink_sink_free);

/* For sink implementations: report a queued drink as accepted. */
void drink_sink_notify_accepted(DrinkSink *s, const Drink *d);
