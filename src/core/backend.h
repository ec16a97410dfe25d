/* kegbot_core's server mode (core-behaviour.md sections 4.2, 7, 9, 10, 11): tap sync from GET status,
 * the drink spool as the manager's DrinkSink with an uploader that retries forever with backoff,
 * token lookups, temperature posts and controller provisioning, all asynchronous on the manager's
 * loop. Also what the D-Bus layer shows and calls (state, counts, Sync, failed-drink handling). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calibration.h"
#include "macro.h"
#include "manager.h"
#include "spool.h"

typedef enum BackendState {
        BACKEND_ONLINE,
        BACKEND_OFFLINE,
        BACKEND_UNAUTHORIZED,
} BackendState;

const char *backend_state_to_string(BackendState s);    /* "online", "offline", "unauthorized" */

typedef struct BackendConfig {
        const char *api_url;            /* non-empty */
        const char *api_key;            /* "" = none */
        double api_timeout;             /* seconds */
        unsigned sync_interval;         /* seconds between GET status */
        unsigned retry_interval;        /* first upload backoff, seconds (doubles up to 300) */
        const char *state_dir;          /* spool in <state_dir>/spool, tap cache beside it */
} BackendConfig;

typedef struct Backend Backend;

/* Opens the spool (failure: logged, fatal for the caller), installs the spool as the manager's drink
 * sink and the server as its token lookup, applies the taps cached by the last successful sync.
 * Nothing is sent before backend_start(). */
int backend_new(Backend **ret, Manager *m, const BackendConfig *config);
Backend *backend_free(Backend *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(Backend *, backend_free);

/* The first GET status and the first upload (after READY=1). */
int backend_start(Backend *b);

/* Called after anything the D-Bus layer shows may have changed (state, counts, last sync). */
void backend_set_changed_handler(Backend *b, void (*handler)(void *userdata), void *userdata);

BackendState backend_get_state(Backend *b);
const char *backend_get_api_url(Backend *b);
size_t backend_n_pending(Backend *b);
size_t backend_n_failed(Backend *b);
uint64_t backend_last_sync(Backend *b);         /* CLOCK_REALTIME usec of the last good sync, 0 = never */
bool backend_synced(Backend *b);                /* a sync succeeded in this process */

/* GET status now (one more right after the one in flight, if any). */
int backend_sync(Backend *b);
/* Re-queue every failed drink at the tail. */
int backend_retry_failed(Backend *b, size_t *ret_n);
/* Move a queued drink to failed/ (an upload of it in flight is abandoned). The UUID may be spelled
 * in either case. -EINVAL: not a UUID; -ENOENT: not queued. */
int backend_fail_drink(Backend *b, const char *uuid);
int backend_list_drinks(Backend *b, SpoolArea area, SpoolListFunc cb, void *userdata);

/* The poison rule of core-behaviour.md 10.3: a drink that keeps failing with a 5xx or non-JSON answer
 * while GET status works is moved to failed/ after POISON_FAILURES such failures spread over at least
 * POISON_SPAN_USEC. Pure (time passed in), for the uploader and its tests. */
#define POISON_FAILURES 5U
#define POISON_SPAN_USEC (10 * 60 * USEC_PER_SEC)

typedef struct PoisonTracker {
        char uuid[UUID_STRING_MAX];     /* the drink counted */
        unsigned count;
        uint64_t first_usec;            /* monotonic time of its first counted failure */
} PoisonTracker;

/* Counts a failure of drink 'uuid' (another drink starts a new count); true: move it to failed/. */
bool poison_tracker_note(PoisonTracker *t, const char *uuid, uint64_t now_usec);
void poison_tracker_reset(PoisonTracker *t);
/* Calibrations of the server's taps are stored on the server (POST taps/<meter>/calibrate), kept
 * locally in <state_dir>/calibration.json when it refuses them with 410 (calibration.md 4.2, 4.3). */
int backend_add_calibrations(Backend *b, Calibrations *c);
