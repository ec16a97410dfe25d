/* The grants of one event device (kegboard-event-protocol.md sections 6.3 and 6.8): which grant
 * covers which meter, which relays are granted, the limits (volume, idle, lifetime clamp) and the
 * order of the effects of an ending (the flow first, then the relays, then grant_end). Pure: no I/O,
 * no clock (time is passed in as monotonic usec); the effects go out through GrantTableOps. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kbevent.h"
#include "macro.h"

#define GRANT_NUMBER_MAX KBEVENT_NUMBER_MAX

/* A permission to pour from an authorize command. Read-only outside grant-table.c. */
typedef struct Grant {
        char *id;
        bool meters[GRANT_NUMBER_MAX + 1];
        bool relays[GRANT_NUMBER_MAX + 1];
        double max_volume_ml;           /* 0 = none */
        uint64_t max_idle_usec;         /* 0 = none */
        uint64_t created, deadline;     /* monotonic; deadline = the end of the lifetime */
        uint64_t last_tick;             /* monotonic: the idle limit runs from here */
        double poured;                  /* mL counted while the grant covered the meter */
        char *auth_device, *token;      /* the echo, NULL = none */
} Grant;

/* One ending of a grant, whole or for some of its meters (section 5.8). */
typedef struct GrantEnding {
        const Grant *grant;             /* readable during the callback only */
        const unsigned *meters;         /* the meters released, ascending, at least one */
        size_t n_meters;
        KbGrantEndReason reason;
        uint64_t duration_usec;         /* since the grant was created */
        bool whole;                     /* the grant is gone (already out of the table) */
} GrantEnding;

typedef struct GrantTableOps {
        /* The flow on 'meter', if any, ends now: the grant that will be tagged on its pour still
         * covers the meter (grant_table_covering()). */
        void (*stop_flow)(unsigned meter, void *userdata);
        /* Relay on (an authorize names it) or off (no grant names it any more). */
        void (*set_relay)(unsigned relay, bool enabled, void *userdata);
        /* After the ending's flows and relays. */
        void (*ended)(const GrantEnding *e, void *userdata);
} GrantTableOps;

typedef struct GrantTable GrantTable;

int grant_table_new(const GrantTableOps *ops, void *userdata, GrantTable **ret);
/* Discards every grant without an ending and without touching relays. */
GrantTable *grant_table_free(GrantTable *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(GrantTable *, grant_table_free);

size_t grant_table_size(const GrantTable *t);
Grant *grant_table_at(const GrantTable *t, size_t i);
Grant *grant_table_find(const GrantTable *t, const char *id);
/* The grant covering a meter: the one a flow on it is attributed to when the flow ends. */
Grant *grant_table_covering(const GrantTable *t, unsigned meter);
/* Whether any grant names the relay. */
bool grant_table_relay_granted(const GrantTable *t, unsigned relay);

/* Applies an authorize that passed every check of sections 6.3 and 6.4 (meters and relays may be
 * granted, the presentment is fresh). A new grant_id creates a grant at 'now'; a known one is an
 * update keeping its creation time and poured volume, whose leaving meters end "replaced" (a partial
 * ending: it lives on). Meters another grant covers leave that grant ("replaced"); its flow goes on
 * under the new grant only when both carry the same echo (our refinement, section 6.8). The lifetime
 * is min(max_duration_ms if > 0, clamp_usec) from creation. Every relay named is switched on.
 * Returns 1 for a new grant, 0 for an update, -ENOMEM (the table is unchanged) or -EINVAL. */
int grant_table_apply(GrantTable *t, const KbAuthorize *a, uint64_t now, uint64_t clamp_usec, Grant **ret);

/* Ends a whole grant now. */
void grant_table_end(GrantTable *t, Grant *g, KbGrantEndReason reason, uint64_t now);
/* A token was removed from its reader: a captive one (any auth device but core.rfid) ends every
 * grant whose echo it is ("detach"). Returns the number of grants ended. */
size_t grant_table_token_removed(GrantTable *t, const char *auth_device, const char *token, uint64_t now);

/* A report of the flow engine on a meter: the volume the flow gained since the last report counts
 * toward the grant covering the meter (flow before the grant covered it never does) and restarts its
 * idle clock. Returns true when that grant reached its volume limit: end it from the event loop with
 * grant_table_end_full() (the report comes from inside the flow engine). */
bool grant_table_flow_update(GrantTable *t, unsigned meter, uint64_t flow_id, bool volume_known, double volume_ml,
                             uint64_t now);
/* Ends every grant whose volume limit is reached ("max_volume"). */
size_t grant_table_end_full(GrantTable *t, uint64_t now);

/* When the next lifetime or idle limit falls due (UINT64_MAX: no grant). */
uint64_t grant_table_next_deadline(const GrantTable *t);
/* Ends the grants whose lifetime ("max_duration", first) or idle limit ("max_idle") passed at 'now'. */
size_t grant_table_expire(GrantTable *t, uint64_t now);

/* Orderly shutdown: every granted relay off, then the grants are discarded without an ending (as
 * when a Kegboard reboots). */
void grant_table_clear(GrantTable *t);
