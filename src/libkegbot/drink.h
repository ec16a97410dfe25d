/* The one drink record (core-behaviour.md section 10.1), from the flow engine to the drink sink, the
 * spool and the uploaders. Units, for every drink everywhere in this program:
 *
 *     volumes            millilitres (double)
 *     wall-clock times   microseconds since the Unix epoch (CLOCK_REALTIME)
 *     boot-clock times   microseconds (CLOCK_BOOTTIME)
 *     durations          whole seconds
 *
 * Other units exist only on the wire, and are converted there and nowhere else: the spool file
 * (pour_time_unix in seconds, pour_boottime_ns in nanoseconds, RFC 3339 strings; spool.c),
 * drinks.log and kegnet (RFC 3339; drinks-log.c, kegnet.c), the Kegbot API form (Unix seconds,
 * litres in the log line; backend.c) and D-Bus (usec, -1 for unknown volume; bus.c).
 *
 * To add a field: add it here (and to drink_dup()/drink_done() if it owns memory), then to each
 * wire format that carries it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-id128.h>

#include "json-writer.h"
#include "macro.h"
#include "util-uuid.h"

/* Why a drink was moved to the dead-letter area (spool/failed/). */
typedef struct DrinkFailure {
        uint64_t time_realtime;         /* when it failed */
        int http_status;                /* 0 = none */
        char *code;                     /* e.g. "NotFoundError"; NULL = none */
        char *message;                  /* e.g. "Meter is inactive"; NULL = none */
} DrinkFailure;

/* Flags of a pour (ghost-pours.md section 10): a bit set, written as a sorted list of names. */
enum {
        DRINK_FLAG_KICKED = 1 << 0,     /* "kicked": sustained foam-pulse rate, the keg is probably empty */
        DRINK_FLAG_LONG_POUR = 1 << 1,  /* "long_pour": ran past a cut of --max_pour_s, then stopped */
};
#define DRINK_FLAGS_ALL (DRINK_FLAG_KICKED | DRINK_FLAG_LONG_POUR)

typedef struct Drink {
        /* The pour, as the flow engine records it. */
        uint64_t flow_id;
        char *meter_name;
        char *username;                 /* NULL = anonymous */
        uint64_t ticks;
        bool volume_known;              /* false: volume_ml is null (server mode computes it) */
        double volume_ml;
        uint64_t start_realtime;        /* first counted tick */
        uint64_t pour_realtime;         /* last counted tick */
        uint64_t duration_sec;          /* first -> last tick on the monotonic clock, rounded down */
        uint64_t duration_ms;           /* the same in milliseconds (the event protocol's duration_ms) */
        char *tick_series;              /* the flow's tick series (tick-series.h), NULL = none; only the
                                         * event protocol's pour carries it, no other record */
        uint64_t pour_boottime;         /* CLOCK_BOOTTIME of the last counted tick (clock correction) */
        unsigned flags;                 /* DRINK_FLAG_* */

        /* Given when the drink is created from the engine's record (drink_new_from_flow()). */
        char uuid[UUID_STRING_MAX];     /* random version 4, lowercase: the durable key */
        sd_id128_t boot_id;             /* kernel boot id of pour_boottime; SD_ID128_NULL = unknown */

        /* Filled later by whoever holds the drink. */
        uint64_t seq;                   /* spool: queue position */
        bool has_drink_id;              /* accepted: the server's id, or the drinks.log sequence */
        int64_t drink_id;
        bool has_failure;               /* spool: a dead letter, and why */
        DrinkFailure failure;
        bool in_doubt;                  /* spool: an upload of it was sent and no definite answer came
                                         * back (the server may have recorded it: core-behaviour.md 10.5) */
        uint64_t sent_pour_time;        /* in_doubt: the pour_time (Unix seconds) that upload carried */
} Drink;

/* The flow engine hands its drinks out with borrowed strings and without uuid and boot id: this
 * makes the owned copy the rest of the program works with, with a fresh UUID and the current boot
 * id. */
int drink_new_from_flow(const Drink *flow_drink, Drink **ret);

/* A deep copy. */
int drink_dup(const Drink *d, Drink **ret);
Drink *drink_free(Drink *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Drink *, drink_free);

/* The pour as JSON members, in the order every drink record shares (core-behaviour.md 10.2 and
 * 10.6): flow_id, meter_name, ticks, volume_ml (null when unknown), username (null = anonymous),
 * start_time and pour_time (RFC 3339). The spool record and the drinks.log line put their own
 * members around these. */
void drink_write_pour_json(const Drink *d, JsonWriter *w);

/* "kicked", "long_pour" for one DRINK_FLAG_*, NULL otherwise; the names sort as the bits do. */
const char *drink_flag_to_string(unsigned flag);
/* The bit of a flag name, 0 if there is none. */
unsigned drink_flag_from_string(const char *name);
/* "flags":["kicked","long_pour"] (sorted), only when d has flags: lines of ordinary drinks stay as
 * they were (drinks.log, spool and event pour files). */
void drink_write_flags_json(const Drink *d, JsonWriter *w);

/* Replaces d's failure with a copy of f. Failure text that is not valid UTF-8 (a server's answer)
 * is stored escaped (util-escape.h), so that the record can always be written. */
int drink_set_failure(Drink *d, const DrinkFailure *f);
void drink_clear_failure(Drink *d);
