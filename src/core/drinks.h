/* Drinks and where they go: the Drink record (core-behaviour.md section 10.1) and the DrinkSink
 * interface the manager hands every completed drink to. A sink makes the drink durable before
 * drink_sink_record() returns; acceptance (drink_id) may come at once (standalone log) or later
 * (server spool + upload), reported through the sink's 'created' callback. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flow.h"
#include "macro.h"

#define DRINK_UUID_STRING_MAX 37        /* 36 characters + NUL */
#define DRINK_BOOT_ID_STRING_MAX 33     /* 32 hex digits + NUL */

typedef struct Drink {
        char uuid[DRINK_UUID_STRING_MAX];       /* random v4, lowercase */
        uint64_t flow_id;
        char *meter_name;
        char *username;                         /* NULL = anonymous */
        uint64_t ticks;
        bool volume_known;                      /* false = volume_ml null */
        double volume_ml;
        uint64_t start_realtime;                /* usec, first counted tick */
        uint64_t pour_realtime;                 /* usec, last counted tick */
        uint64_t duration_sec;
        char boot_id[DRINK_BOOT_ID_STRING_MAX]; /* kernel boot id, for clock correction */
        uint64_t pour_boottime;                 /* usec, CLOCK_BOOTTIME of the last tick */

        /* Set by the sink on acceptance. */
        bool has_drink_id;
        int64_t drink_id;
} Drink;

/* Copies the engine's record and adds a fresh UUID and the current boot id. */
int drink_new_from_flow(Drink **ret, const FlowDrink *fd);
Drink *drink_free(Drink *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Drink *, drink_free);
int drink_dup(const Drink *d, Drink **ret);

typedef struct DrinkSink DrinkSink;

/* The sink accepted a drink it had queued (server: uploaded; d->drink_id set if known). Never
 * called from inside drink_sink_record(). */
typedef void (*DrinkCreatedHandler)(DrinkSink *sink, const Drink *d, void *userdata);

typedef struct DrinkSinkVTable {
        const char *name;
        /* Durable before returning. 1: accepted now (d->drink_id may be set; the caller emits
         * DrinkCreatedEvent itself right after FlowUpdate(completed)); 0: queued, 'created' follows
         * later; < 0: not persisted (logged by the sink). The sink may keep a copy, never 'd'. */
        int (*record)(DrinkSink *sink, Drink *d);
        size_t (*n_pending)(DrinkSink *sink);   /* queued, not yet accepted */
        int (*reopen)(DrinkSink *sink);          /* SIGHUP; may be NULL */
        void (*free)(DrinkSink *sink);
} DrinkSinkVTable;

struct DrinkSink {
        const DrinkSinkVTable *vtable;
        DrinkCreatedHandler created;
        void *userdata;
};

static inline void drink_sink_set_created_handler(DrinkSink *s, DrinkCreatedHandler h, void *userdata) {
        s->created = h;
        s->userdata = userdata;
}

int drink_sink_record(DrinkSink *s, Drink *d);
size_t drink_sink_n_pending(DrinkSink *s);
int drink_sink_reopen(DrinkSink *s);
DrinkSink *drink_sink_free(DrinkSink *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(DrinkSink *, drink_sink_free);

/* For sink implementations: report a queued drink as accepted. */
void drink_sink_notify_created(DrinkSink *s, const Drink *d);
