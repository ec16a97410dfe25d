/* Server mode: see backend.h. Server text (usernames, tap and error texts) arrives as JSON that
 * jansson has checked as UTF-8 (it refuses anything else), so it is never checked again here. */
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <sys/stat.h>
#include <systemd/sd-id128.h>
#include <time.h>

#define LOG_COMPONENT "api-backend"
#include "log.h"

#include "backend.h"
#include "api.h"
#include "calibration-overrides.h"
#include "drink-sink.h"
#include "taps.h"
#include "calibration-units.h"
#include "util-double.h"
#include "util-event.h"
#include "util-string.h"
#include "util-time.h"
#include "util-uuid.h"

#define BACKOFF_MAX_USEC (300 * USEC_PER_SEC)
#define FIRST_SYNC_RETRY_USEC (10 * USEC_PER_SEC)
#define TOKEN_CACHE_USEC (10 * USEC_PER_SEC)
#define CLAIMED_MAX 64

typedef struct SpoolSink {
        DrinkSink sink;                 /* first: the manager sees a DrinkSink */
        Backend *backend;               /* NULL once the backend is gone */
} SpoolSink;

typedef enum TokenAnswer {
        TOKEN_ASSIGNED,
        TOKEN_NOT_ASSIGNED,
        TOKEN_DISABLED,
        TOKEN_EXPIRED,
} TokenAnswer;

typedef struct TokenCache {
        struct TokenCache *next;
        char *device, *value, *username;
        TokenAnswer answer;
        uint64_t until;                 /* monotonic */
} TokenCache;

typedef struct Lookup {
        struct Lookup *next;
        Backend *backend;
        char *device, *value;
        unsigned waiters;               /* lookup() calls merged into this request */
} Lookup;

typedef struct Provision {
        struct Provision *next;
        Backend *backend;
        char *name, *serial;
        long controller_id;
        int step;                       /* 0 controller, 1 flow0, 2 flow1, 3 done */
        uint64_t backoff;
        sd_event_source *retry;
        bool busy;
} Provision;

typedef struct ThermoPost {
        struct ThermoPost *next;
        Backend *backend;
        char *sensor;
} ThermoPost;

/* A tap's current keg as of the last sync: a legacy Drink names its keg, not its tap (10.5). */
typedef struct TapKeg {
        char *meter;
        int64_t keg_id;
} TapKeg;

/* A calibration being stored on the server (calibration.md section 4.2). */
typedef struct CalibrationPost {
        struct CalibrationPost *next;
        Backend *backend;
        ApiRequest *req;
        char *meter;
        char *url;
        double ml_per_tick;
        double server_ml_per_tick;      /* the server's value it replaces */
        uint64_t time_realtime;
        CalibrationStoreDone done;
        void *done_userdata;
} CalibrationPost;

struct Backend {
        Manager *manager;
        sd_event *event;
        ApiClient *client;
        Spool *spool;
        SpoolSink *sink;
        char *api_url;
        char *state_dir;
        char *taps_cache;
        char *taps_cache_written;       /* what this run last wrote there (NULL: nothing yet) */
        uint64_t sync_interval, retry_interval;
        sd_id128_t boot_id;             /* SD_ID128_NULL = unknown */
        bool stopping;

        BackendState state;
        void (*changed)(void *userdata);
        void *changed_userdata;

        /* Tap sync. */
        sd_event_source *sync_timer;
        bool sync_in_flight, sync_again, synced;
        uint64_t last_sync;

        /* Uploader. */
        sd_event_source *upload_timer;  /* backoff */
        ApiRequest *upload_req;         /* the POST of the head drink, or its lookup (reconciling) */
        Drink *uploading;
        uint64_t backoff;
        bool in_backoff;
        bool reconciling;
        bool reconcile_by_events;       /* GET drinks is gone (Server 2.0): GET events */
        int64_t claimed[CLAIMED_MAX];   /* server drink ids of drinks delivered lately */
        size_t n_claimed;
        bool poison_check;              /* a GET status for the head drink's 5xx is in flight */
        PoisonTracker poison;
        ApiResult poison_result;        /* the drink's last answer while its status check runs */
        TapKeg *kegs;
        size_t n_kegs;

        TokenCache *token_cache;
        Lookup *lookups;
        Provision *provisions;
        ThermoPost *thermo_posts;

        /* Calibrations (calibration.md sections 4.2, 4.3). */
        CalibrationPost *calibration_posts;
        CalibrationOverrides *overrides;
        bool reload_overrides;          /* SIGHUP / Sync(): read calibration.json again */
        json_t *server_taps;            /* the taps of the last status answer, as the server gave them */
};

static const ManagerObserver backend_observer;

const char *backend_state_to_string(BackendState s) {
        switch (s) {
        case BACKEND_ONLINE: return "online";
        case BACKEND_OFFLINE: return "offline";
        case BACKEND_UNAUTHORIZED: return "unauthorized";
        }
        return "offline";
}

static void notify_changed(Backend *b) {
        if (b->changed)
                b->changed(b->changed_userdata);
}

static void note_outcome(Backend *b, ApiOutcome o) {
        BackendState s = o == API_TRANSIENT ? BACKEND_OFFLINE :
                         o == API_UNAUTHORIZED ? BACKEND_UNAUTHORIZED : BACKEND_ONLINE;
        if (s != b->state) {
                log_info("Backend state: %s -> %s", backend_state_to_string(b->state), backend_state_to_string(s));
                b->state = s;
        }
        notify_changed(b);
}

static uint64_t now_mono(Backend *b) {
        uint64_t t = 0;
        (void) sd_event_now(b->event, CLOCK_MONOTONIC, &t);
        return t;
}

static uint64_t now_real(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static int arm(Backend *b, sd_event_source **s, uint64_t usec, sd_event_time_handler_t h, void *userdata,
               const char *description) {
        bool created = !*s;
        int r;

        r = event_timer_arm_relative(b->event, s, usec, USEC_PER_MSEC, h, userdata);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the %s timer: %m", description);
        if (created)
                (void) sd_event_source_set_description(*s, description);
        return 0;
}

static void disarm(sd_event_source *s) {
        if (s)
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

static int level_for(ApiOutcome o) {
        return o == API_UNAUTHORIZED ? LOG_ERR : LOG_WARNING;
}

static int log_oom_errno(void) {
        return log_error_errno(ENOMEM, "Out of memory");
}

/* ---------------------------------------------------------------- tap sync */

static int on_sync_timer(sd_event_source *s, uint64_t usec, void *userdata);
static void server_taps_remember(Backend *b, json_t *taps);
static int sync_now(Backend *b);
static void overrides_apply(Backend *b, TapTable *t);
static void upload_kick(Backend *b);
static void upload_reset_backoff(Backend *b, bool kick);

static void tap_kegs_clear(Backend *b) {
        for (size_t i = 0; i < b->n_kegs; i++)
                free(b->kegs[i].meter);
        free(b->kegs);
        b->kegs = NULL;
        b->n_kegs = 0;
}

static const TapKeg *tap_keg_find(Backend *b, const char *meter) {
        for (size_t i = 0; i < b->n_kegs; i++)
                if (streq(b->kegs[i].meter, meter))
                        return &b->kegs[i];
        return NULL;
}

/* The current keg of every tap in a status answer (object.taps[*].current_keg_id). */
static void tap_kegs_update(Backend *b, json_t *taps) {
        size_t i;
        json_t *e;

        tap_kegs_clear(b);
        json_array_foreach(taps, i, e) {
                json_t *mn = json_object_get(e, "meter_name"), *keg = json_object_get(e, "current_keg_id");
                TapKeg *n;

                if (!json_is_string(mn) || !json_is_integer(keg))
                        continue;
                n = reallocarray(b->kegs, b->n_kegs + 1, sizeof(TapKeg));
                if (!n)
                        return;
                b->kegs = n;
                n[b->n_kegs] = (TapKeg) { .meter = strdup(json_string_value(mn)), .keg_id = json_integer_value(keg) };
                if (!n[b->n_kegs].meter)
                        return;
                b->n_kegs++;
        }
}

/* Written when it differs from what this run wrote last: the sync repeats every minute, and an
 * unchanged table costs no disk write (an SD card's wear) and no wait for the disk. */
static void save_tap_cache(Backend *b, const TapTable *t) {
        _cleanup_(freep) char *tmp = NULL, *text = NULL;
        json_t *root = json_object(), *arr = json_array();
        int r = -ENOMEM;

        if (!root || !arr)
                goto out;
        for (size_t i = 0; i < t->n_taps; i++) {
                json_t *o = json_pack("{s:s,s:s,s:f,s:s}", "meter_name", t->taps[i].meter_name,
                                      "name", t->taps[i].name, "ml_per_tick", t->taps[i].ml_per_tick,
                                      "relay_name", t->taps[i].relay_name ?: "");
                if (!o || json_array_append_new(arr, o) < 0)
                        goto out;
        }
        if (json_object_set(root, "taps", arr) < 0)
                goto out;
        text = json_dumps(root, JSON_COMPACT);
        if (!text)
                goto out;
        if (streq_ptr(text, b->taps_cache_written)) {
                r = 0;
                goto out;
        }
        if (asprintf(&tmp, "%s.tmp", b->taps_cache) < 0) {
                tmp = NULL;
                goto out;
        }
        if (json_dump_file(root, tmp, JSON_COMPACT) < 0) {
                r = -EIO;
                goto out;
        }
        r = rename(tmp, b->taps_cache) < 0 ? -errno : 0;
        if (r >= 0) {
                free(b->taps_cache_written);
                b->taps_cache_written = TAKE_PTR(text);
        }
out:
        if (r < 0) {
                log_warning_errno(r, "Failed to save the tap cache %s: %m", b->taps_cache);
                if (tmp)
                        (void) unlink(tmp);
        }
        json_decref(arr);
        json_decref(root);
}

/* The server's taps (status object.taps) as a table; skipped entries logged at DEBUG. */
static int taps_from_status(json_t *taps, TapTable **ret) {
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        size_t i;
        json_t *e;
        int r;

        r = tap_table_new(&t);
        if (r < 0)
                return r;
        if (taps && !json_is_array(taps))
                return -EBADMSG;
        json_array_foreach(taps, i, e) {
                json_t *mn = json_object_get(e, "meter_name"), *mpt = json_object_get(e, "ml_per_tick");
                json_t *nm = json_object_get(e, "name"), *rl = json_object_get(e, "relay_name");
                const char *meter = json_string_value(mn);
                double ml = json_is_number(mpt) ? json_number_value(mpt) : 0;

                if (isempty(meter)) {
                        log_debug("Skipping tap entry %zu without meter_name", i);
                        continue;
                }
                if (!isfinite(ml) || ml <= 0) {
                        log_debug("Skipping tap %s: ml_per_tick %g (no meter)", meter, ml);
                        continue;
                }
                r = tap_table_add(t, meter, json_is_string(nm) ? json_string_value(nm) : meter, ml,
                                  json_is_string(rl) ? json_string_value(rl) : "");
                if (r == -EEXIST) {
                        log_named(LOG_WARNING, "TapManager", "Duplicate meter %s in the server's taps; keeping the first", meter);
                        continue;
                }
                if (r == -ERANGE) {
                        log_named(LOG_WARNING, "TapManager", "Ignoring tap %s: ml_per_tick %g is not from %g to %g",
                                  meter, ml, FLOW_CALIBRATION_MIN, FLOW_CALIBRATION_MAX);
                        continue;
                }
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(t);
        return 0;
}

static void load_tap_cache(Backend *b) {
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        json_t *root = json_load_file(b->taps_cache, JSON_REJECT_DUPLICATES, NULL);

        if (!root)
                return;
        if (json_is_object(root) && taps_from_status(json_object_get(root, "taps"), &t) >= 0) {
                log_info("Using %zu taps cached from the last successful sync", t->n_taps);
                server_taps_remember(b, json_object_get(root, "taps"));
                overrides_apply(b, t);
                (void) tap_registry_replace(manager_get_taps(b->manager), t, TAP_SOURCE_SERVER);
        } else
                log_warning("Ignoring the unreadable tap cache %s", b->taps_cache);
        json_decref(root);
}

static void sync_schedule(Backend *b) {
        (void) arm(b, &b->sync_timer, b->synced ? b->sync_interval : FIRST_SYNC_RETRY_USEC, on_sync_timer, b, "sync");
}

static void on_status(ApiClient *c, const ApiResult *res, void *userdata) {
        Backend *b = userdata;
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        bool first = !b->synced;
        int r, level;

        b->sync_in_flight = false;
        if (res->outcome == API_OK && json_is_object(res->object)) {
                r = taps_from_status(json_object_get(res->object, "taps"), &t);
                if (r < 0) {
                        log_warning("Sync: malformed taps in the status answer; keeping %zu taps",
                                    tap_registry_n_taps(manager_get_taps(b->manager)));
                        note_outcome(b, API_TRANSIENT);
                        goto next;
                }
                if (first) {
                        log_named(LOG_INFO, "main", "Backend appears to be alive.");
                        log_named(LOG_INFO, "main", "Found %zu taps, adding to tap manager.", t->n_taps);
                } else
                        log_debug("Sync: %zu taps", t->n_taps);
                /* The cache keeps the server's values; calibrations kept locally go on top. */
                save_tap_cache(b, t);
                tap_kegs_update(b, json_object_get(res->object, "taps"));
                server_taps_remember(b, json_object_get(res->object, "taps"));
                overrides_apply(b, t);
                (void) tap_registry_replace(manager_get_taps(b->manager), t, TAP_SOURCE_SERVER);
                b->synced = true;
                b->last_sync = now_real();
                note_outcome(b, API_OK);
                manager_update_status(b->manager);
                /* The server is back: do not make queued drinks wait for their backoff (and a drink
                 * in doubt waited for this sync's kegs). */
                if (b->in_backoff)
                        upload_reset_backoff(b, true);
                else if (first)
                        upload_kick(b);
                goto next;
        }
        if (res->outcome == API_OK)
                log_warning("Sync: status answer without an object; keeping the current taps");
        else {
                level = level_for(res->outcome);
                if (res->outcome == API_TRANSIENT && first)
                        log_named(LOG_WARNING, "main", "Backend is not reachable (%s); running with %zu known taps, "
                                  "retrying in %" PRIu64 " s", res->reason, tap_registry_n_taps(manager_get_taps(b->manager)),
                                  FIRST_SYNC_RETRY_USEC / USEC_PER_SEC);
                else
                        log_full(level, "Sync failed (%s); keeping %zu taps", res->reason,
                                 tap_registry_n_taps(manager_get_taps(b->manager)));
        }
        note_outcome(b, res->outcome == API_OK ? API_TRANSIENT : res->outcome);
next:
        if (b->sync_again) {
                b->sync_again = false;
                (void) sync_now(b);
        } else
                sync_schedule(b);
}

static int sync_now(Backend *b) {
        int r;

        if (b->stopping || !b->client)
                return -ESHUTDOWN;
        if (b->sync_in_flight) {
                b->sync_again = true;
                return 0;
        }
        disarm(b->sync_timer);
        r = api_client_get(b->client, "status", on_status, b, NULL);
        if (r < 0) {
                log_error_errno(r, "Failed to start a sync: %m");
                sync_schedule(b);
                return r;
        }
        b->sync_in_flight = true;
        return 0;
}

int backend_sync(Backend *b) {
        /* Asked for (SIGHUP, Sync()): the locally kept calibrations are read again too. */
        b->reload_overrides = true;
        return sync_now(b);
}

static int on_sync_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) sync_now(userdata);
        return 0;
}

/* ---------------------------------------------------------------- drinks */

static int sink_record(DrinkSink *sink, Drink *d) {
        Backend *b = ((SpoolSink *) sink)->backend;
        int r;

        if (!b) {
                log_named(LOG_ERR, "DrinkManager", "Drink %s cannot be spooled: the backend is gone", d->uuid);
                return -ESHUTDOWN;
        }
        r = spool_put(b->spool, d);
        if (r < 0)
                return r;
        log_named(LOG_INFO, "DrinkManager", "Drink %s queued for upload: meter=%s ticks=%" PRIu64 " user=%s (%zu queued)",
                  d->uuid, d->meter_name, d->ticks, d->username ?: "(anonymous)", spool_n_pending(b->spool));
        notify_changed(b);
        upload_kick(b);
        return DRINK_SINK_QUEUED;
}

static size_t sink_n_pending(DrinkSink *sink) {
        Backend *b = ((SpoolSink *) sink)->backend;
        return b ? spool_n_pending(b->spool) : 0;
}

static int sink_contains(DrinkSink *sink, const char *uuid) {
        Backend *b = ((SpoolSink *) sink)->backend;
        return b ? spool_contains(b->spool, uuid) : -ESHUTDOWN;
}

static int sink_reopen(DrinkSink *sink) {
        Backend *b = ((SpoolSink *) sink)->backend;
        /* SIGHUP: re-sync taps now. */
        if (b && !b->stopping)
                (void) backend_sync(b);
        return 0;
}

static void sink_free(DrinkSink *sink) {
        SpoolSink *s = (SpoolSink *) sink;
        if (s->backend)
                s->backend->sink = NULL;
        free(s);
}

static const DrinkSinkVTable spool_sink_vtable = {
        .name = "spool",
        .record = sink_record,
        .n_pending = sink_n_pending,
        .contains = sink_contains,
        .reopen = sink_reopen,
        .free = sink_free,
};

static void upload_reset_backoff(Backend *b, bool kick) {
        b->backoff = b->retry_interval;
        if (b->in_backoff) {
                b->in_backoff = false;
                disarm(b->upload_timer);
        }
        if (kick)
                upload_kick(b);
}

static int on_upload_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Backend *b = userdata;
        b->in_backoff = false;
        upload_kick(b);
        return 0;
}

static void upload_backoff(Backend *b) {
        uint64_t wait = b->backoff;

        b->in_backoff = true;
        b->backoff = MIN(b->backoff * 2, BACKOFF_MAX_USEC);
        if (arm(b, &b->upload_timer, wait, on_upload_timer, b, "upload-backoff") < 0)
                b->in_backoff = false;
        else
                log_debug("Next upload attempt in %" PRIu64 " s", wait / USEC_PER_SEC);
}

static void upload_done_head(Backend *b) {
        b->uploading = drink_free(b->uploading);
        b->upload_req = NULL;
        b->reconciling = false;
}

/* Rewrites the head drink's spool file (e.g. its in_doubt mark), with the space reserve released
 * if the disk is full. */
static int update_head(Backend *b, Drink *sd) {
        int r = spool_update(b->spool, sd);

        if (r < 0 && manager_free_reserve_on(b->manager, r))
                r = spool_update(b->spool, sd);
        return r;
}

/* A definite answer: the drink is not on the server, so it is no longer in doubt. */
static void clear_in_doubt(Backend *b, Drink *sd) {
        int r;

        if (!sd->in_doubt)
                return;
        sd->in_doubt = false;
        r = update_head(b, sd);
        if (r < 0 && r != -ENOENT)
                log_named(LOG_WARNING, "DrinkManager", "Cannot clear the in-doubt mark of drink %s (%s); it is "
                          "looked up on the server before it is sent again", sd->uuid, strerror(-r));
}

static void fail_head(Backend *b, const ApiResult *res) {
        DrinkFailure f = {
                .time_realtime = now_real(),
                .http_status = (int) res->http_status,
                .code = res->error_code,
                .message = res->error_message ?: res->reason,
        };
        int r = spool_fail(b->spool, b->uploading->uuid, &f);
        if (r < 0 && r != -ENOENT)
                log_named(LOG_ERR, "DrinkManager", "Drink %s could not be moved to failed/: %s", b->uploading->uuid, strerror(-r));
}

bool poison_tracker_note(PoisonTracker *t, const char *uuid, uint64_t now_usec) {
        if (!streq(t->uuid, uuid)) {
                snprintf(t->uuid, sizeof t->uuid, "%s", uuid);
                t->count = 0;
        }
        if (t->count == 0)
                t->first_usec = now_usec;
        t->count++;
        /* A burst of failures (a locked database answering 500 for a while) condemns nothing: only
         * failures that go on for a long time make the drink, not the server, the problem. */
        return t->count >= POISON_FAILURES && now_usec - t->first_usec >= POISON_SPAN_USEC;
}

void poison_tracker_reset(PoisonTracker *t) {
        *t = (PoisonTracker) {};
}

static void on_poison_status(ApiClient *c, const ApiResult *res, void *userdata) {
        Backend *b = userdata;
        ApiResult *dr = &b->poison_result;

        b->poison_check = false;
        if (!b->uploading) {
                api_result_done(dr);
                upload_kick(b);
                return;
        }
        if (res->outcome == API_OK) {
                /* The server is healthy; this drink's own answer is the problem. */
                note_outcome(b, API_OK);
                if (poison_tracker_note(&b->poison, b->uploading->uuid, now_mono(b))) {
                        log_named(LOG_WARNING, "DrinkManager",
                                  "Drink %s failed %u times over %" PRIu64 " minutes while the server is otherwise "
                                  "healthy (%s); moved to failed/", b->uploading->uuid, b->poison.count,
                                  (now_mono(b) - b->poison.first_usec) / (60 * USEC_PER_SEC), dr->reason ?: "?");
                        fail_head(b, dr);
                        poison_tracker_reset(&b->poison);
                        api_result_done(dr);
                        upload_done_head(b);
                        notify_changed(b);
                        upload_kick(b);
                        return;
                }
        } else
                note_outcome(b, res->outcome);
        api_result_done(dr);
        upload_done_head(b);
        upload_backoff(b);
}

/* The answer is a Kegbot API error envelope: the server itself answered, and a drink it answers with
 * an error is not recorded (one transaction). A 5xx or 2xx without it may come from a proxy while
 * the server goes on (in doubt). */
static bool answer_is_api_error(const ApiResult *res) {
        json_t *meta;

        if (res->http_status == 0 || !json_is_object(res->root))
                return false;
        meta = json_object_get(res->root, "meta");
        return json_is_object(meta) && json_is_object(json_object_get(res->root, "error"));
}

/* Only a 5xx or a non-JSON answer can be the drink's own failure (core-behaviour.md 10.3). A 408 or
 * 429 in a JSON envelope is the server pacing us: a healthy status check must not count it against
 * the drink, or throttling would move good drinks to failed/. */
static bool answer_may_be_poison(const ApiResult *res) {
        json_t *meta;

        if (res->http_status == 0)
                return false;
        if (res->http_status >= 500)
                return true;
        meta = json_is_object(res->root) ? json_object_get(res->root, "meta") : NULL;
        return !(json_is_object(meta) &&
                 (res->object || res->objects || json_is_object(json_object_get(res->root, "error"))));
}

/* The server has the drink, as 'obj' (a legacy Drink object): forget it here, announce it. */
static void upload_delivered(Backend *b, Drink *sd, json_t *o) {
        json_t *id = json_object_get(o, "id"), *keg = json_object_get(o, "keg_id");
        json_t *vol = json_object_get(o, "volume_ml"), *user = json_object_get(o, "user_id");
        char kegs[32] = "None";
        int r;

        if (json_is_integer(keg))
                snprintf(kegs, sizeof kegs, "%" JSON_INTEGER_FORMAT, json_integer_value(keg));
        log_named(LOG_INFO, "DrinkManager", "Logged drink %" JSON_INTEGER_FORMAT " username=%s keg=%s liters=%g ticks=%" PRIu64 " uuid=%s",
                  json_is_integer(id) ? json_integer_value(id) : (json_int_t) -1,
                  json_is_string(user) ? json_string_value(user) : "guest", kegs,
                  json_is_number(vol) ? json_number_value(vol) / 1000.0 : 0.0, sd->ticks, sd->uuid);
        r = spool_remove(b->spool, sd->uuid);
        if (r < 0 && r != -ENOENT)
                log_named(LOG_ERR, "DrinkManager", "Drink %s was delivered but stays in the spool (%s): it will be "
                          "looked up on the server again", sd->uuid, strerror(-r));
        note_outcome(b, API_OK);
        poison_tracker_reset(&b->poison);
        upload_reset_backoff(b, false);
        /* The server's word on id and volume is what gets announced. */
        if (json_is_integer(id)) {
                sd->has_drink_id = true;
                sd->drink_id = json_integer_value(id);
                b->claimed[b->n_claimed++ % ELEMENTSOF(b->claimed)] = sd->drink_id;
        }
        if (json_is_number(vol)) {
                sd->volume_known = true;
                sd->volume_ml = json_number_value(vol);
        }
        if (b->sink)
                drink_sink_notify_accepted(&b->sink->sink, sd);
        upload_done_head(b);
        manager_update_status(b->manager);
        notify_changed(b);
        upload_kick(b);
}

static void on_upload(ApiClient *c, const ApiResult *res, void *userdata) {
        Backend *b = userdata;
        Drink *sd = b->uploading;
        int r;

        b->upload_req = NULL;
        if (!sd)
                return;

        switch (res->outcome) {
        case API_OK:
                upload_delivered(b, sd, res->object);
                return;
        case API_NOT_FOUND:
        case API_REJECTED:
                log_named(LOG_WARNING, "DrinkManager", "Drink %s rejected by server (%ld %s: %s); moved to failed/",
                          sd->uuid, res->http_status, res->error_code ?: "?", res->error_message ?: "");
                clear_in_doubt(b, sd);
                fail_head(b, res);
                note_outcome(b, res->outcome);
                upload_done_head(b);
                manager_update_status(b->manager);
                upload_kick(b);
                return;
        case API_UNAUTHORIZED:
                log_named(LOG_ERR, "DrinkManager", "Upload of drink %s refused: %s; retrying in %" PRIu64 " s",
                          sd->uuid, res->reason, b->backoff / USEC_PER_SEC);
                clear_in_doubt(b, sd);
                note_outcome(b, res->outcome);
                upload_done_head(b);
                upload_backoff(b);
                return;
        case API_TRANSIENT:
                log_named(LOG_WARNING, "DrinkManager", "Upload of drink %s failed: %s; retrying in %" PRIu64 " s%s",
                          sd->uuid, res->reason, b->backoff / USEC_PER_SEC,
                          res->not_sent || answer_is_api_error(res) ? "" :
                          " (the server may have recorded it: it is looked up before it is sent again)");
                if (res->not_sent || answer_is_api_error(res))
                        clear_in_doubt(b, sd);
                note_outcome(b, res->outcome);
                if (answer_may_be_poison(res) && b->client && !b->stopping) {
                        /* The server answered, but badly: is it this drink (poison) or the server? */
                        r = api_client_get(b->client, "status", on_poison_status, b, NULL);
                        if (r >= 0) {
                                b->poison_check = true;
                                api_result_done(&b->poison_result);
                                b->poison_result = (ApiResult) {
                                        .outcome = res->outcome,
                                        .http_status = res->http_status,
                                        .error_code = res->error_code ? strdup(res->error_code) : NULL,
                                        .error_message = res->error_message ? strdup(res->error_message) : NULL,
                                        .reason = res->reason ? strdup(res->reason) : NULL,
                                };
                                return;
                        }
                }
                upload_done_head(b);
                upload_backoff(b);
                return;
        }
}

/* Sends the head drink (b->uploading): marked in doubt durably first (core-behaviour.md 10.5). */
static void upload_send(Backend *b) {
        _cleanup_(freep) char *meter = NULL, *path = NULL;
        Drink *sd = b->uploading;
        ApiForm f = {};
        uint64_t boot = 0;
        int r;

        /* Clock correction (core-behaviour.md 10.4): only the drink's age matters to the server.
         * The form speaks Unix seconds: the conversion from the drink's microseconds is here. */
        uint64_t now = now_real() / USEC_PER_SEC, pour = sd->pour_realtime / USEC_PER_SEC;
        if (!sd_id128_is_null(sd->boot_id) && sd_id128_equal(sd->boot_id, b->boot_id) &&
            sd_event_now(b->event, CLOCK_BOOTTIME, &boot) >= 0) {
                uint64_t age = boot > sd->pour_boottime ? (boot - sd->pour_boottime) / USEC_PER_SEC : 0;
                pour = now > age ? now - age : 0;
        }

        meter = api_escape(sd->meter_name);
        if (!meter || asprintf(&path, "taps/%s", meter) < 0) {
                path = NULL;
                log_error_errno(ENOMEM, "Out of memory");
                goto later;
        }

        sd->in_doubt = true;
        sd->sent_pour_time = pour;
        r = update_head(b, sd);
        if (r < 0) {
                log_named(LOG_ERR, "DrinkManager", "Cannot mark drink %s as sent (%s); not sending it before that "
                          "is possible, retrying in %" PRIu64 " s", sd->uuid, strerror(-r), b->backoff / USEC_PER_SEC);
                goto later;
        }

        api_form_add(&f, "tap_name", sd->meter_name);
        api_form_addf(&f, "ticks", "%" PRIu64, sd->ticks);
        if (sd->username)
                api_form_add(&f, "username", sd->username);
        if (sd->duration_sec > 0)
                api_form_addf(&f, "duration", "%" PRIu64, sd->duration_sec);
        api_form_addf(&f, "pour_time", "%" PRIu64, pour);
        api_form_addf(&f, "now", "%" PRIu64, now);
        r = api_client_post(b->client, path, &f, on_upload, b, &b->upload_req);
        api_form_done(&f);
        if (r < 0) {
                log_error_errno(r, "Failed to start the upload of drink %s: %m", sd->uuid);
                goto later;
        }
        log_debug("Uploading drink %s (seq %" PRIu64 ")", sd->uuid, sd->seq);
        return;
later:
        upload_done_head(b);
        upload_backoff(b);
}

static bool drink_claimed(Backend *b, int64_t id) {
        for (size_t i = 0; i < MIN(b->n_claimed, ELEMENTSOF(b->claimed)); i++)
                if (b->claimed[i] == id)
                        return true;
        return false;
}

/* Section 10.5: the server's drink that is this one: the same keg (the tap's current keg from the
 * last sync), the same ticks, a time within 2 s of the pour_time sent, and not claimed already by
 * another drink of ours. */
static json_t *reconcile_find(Backend *b, const Drink *sd, json_t *list) {
        const TapKeg *k = tap_keg_find(b, sd->meter_name);
        size_t i;
        json_t *e;

        json_array_foreach(list, i, e) {
                json_t *o = json_is_object(json_object_get(e, "drink")) ? json_object_get(e, "drink") : e;
                json_t *id = json_object_get(o, "id"), *ticks = json_object_get(o, "ticks");
                json_t *keg = json_object_get(o, "keg_id"), *t = json_object_get(o, "time");
                uint64_t when;

                if (!json_is_integer(id) || !json_is_integer(ticks) || !json_is_string(t) ||
                    json_integer_value(ticks) < 0 || (uint64_t) json_integer_value(ticks) != sd->ticks)
                        continue;
                if (k && (!json_is_integer(keg) || json_integer_value(keg) != k->keg_id))
                        continue;
                if (time_parse_rfc3339(json_string_value(t), &when) < 0)
                        continue;
                when /= USEC_PER_SEC;
                if ((when > sd->sent_pour_time ? when - sd->sent_pour_time : sd->sent_pour_time - when) > 2)
                        continue;
                if (drink_claimed(b, json_integer_value(id)))
                        continue;
                return o;
        }
        return NULL;
}

static void upload_reconcile(Backend *b);

static void on_reconcile(ApiClient *c, const ApiResult *res, void *userdata) {
        Backend *b = userdata;
        Drink *sd = b->uploading;
        json_t *list, *o;

        b->upload_req = NULL;
        b->reconciling = false;
        if (!sd)
                return;

        if ((res->outcome == API_REJECTED || res->outcome == API_NOT_FOUND) && !b->reconcile_by_events) {
                /* Kegbot Server 2.0 retired GET drinks (410); its drink_poured events carry the drink. */
                log_named(LOG_INFO, "DrinkManager", "GET drinks is not available (%s); looking for drinks in GET events",
                          res->reason ?: "?");
                b->reconcile_by_events = true;
                upload_reconcile(b);
                return;
        }
        note_outcome(b, res->outcome);
        list = api_result_list(res, NULL);
        if (res->outcome != API_OK || !list) {
                log_named(LOG_WARNING, "DrinkManager", "Cannot check whether the server recorded drink %s (%s); "
                          "retrying in %" PRIu64 " s", sd->uuid, res->reason ?: "no list in the answer",
                          b->backoff / USEC_PER_SEC);
                upload_done_head(b);
                upload_backoff(b);
                return;
        }
        o = reconcile_find(b, sd, list);
        if (o) {
                log_named(LOG_INFO, "DrinkManager", "Drink %s was already recorded by the server as %" JSON_INTEGER_FORMAT
                          "; not sending it again", sd->uuid, json_integer_value(json_object_get(o, "id")));
                upload_delivered(b, sd, o);
                return;
        }
        log_named(LOG_INFO, "DrinkManager", "Drink %s is not among the server's recent drinks; sending it again", sd->uuid);
        upload_send(b);
}

/* The head drink is in doubt: look for it on the server before sending it again. */
static void upload_reconcile(Backend *b) {
        int r;

        r = api_client_get(b->client, b->reconcile_by_events ? "events" : "drinks", on_reconcile, b, &b->upload_req);
        if (r < 0) {
                log_error_errno(r, "Failed to look up drink %s on the server: %m", b->uploading->uuid);
                upload_done_head(b);
                upload_backoff(b);
                return;
        }
        b->reconciling = true;
}

static void upload_kick(Backend *b) {
        _cleanup_(drink_freep) Drink *sd = NULL;
        int r;

        if (b->stopping || !b->client || b->upload_req || b->uploading || b->poison_check || b->in_backoff)
                return;
        r = spool_peek(b->spool, &sd);
        notify_changed(b);
        if (r <= 0)
                return;
        /* Matching needs the tap's current keg: wait for the first sync (it kicks the uploader). */
        if (sd->in_doubt && !b->synced) {
                log_debug("Drink %s is in doubt; waiting for a tap sync before looking it up", sd->uuid);
                return;
        }
        b->uploading = TAKE_PTR(sd);
        if (b->uploading->in_doubt)
                upload_reconcile(b);
        else
                upload_send(b);
}

int backend_retry_failed(Backend *b, size_t *ret_n) {
        int r = spool_requeue_failed(b->spool, NULL, ret_n);
        notify_changed(b);
        manager_update_status(b->manager);
        upload_kick(b);
        return r;
}

int backend_fail_drink(Backend *b, const char *uuid_arg) {
        DrinkFailure f = { .time_realtime = now_real(), .message = (char *) "moved to failed/ by an operator" };
        char uuid[UUID_STRING_MAX];
        int r;

        /* Either case names the drink (util-uuid.h); the spool knows it by the lowercase spelling. */
        r = uuid_normalize(uuid_arg, uuid);
        if (r < 0)
                return r;
        if (b->uploading && streq(b->uploading->uuid, uuid)) {
                /* The server may still record it; the operator asked for it anyway. */
                api_request_cancel(b->upload_req);
                upload_done_head(b);
                b->poison_check = false;
                api_result_done(&b->poison_result);
        }
        r = spool_fail(b->spool, uuid, &f);
        if (r >= 0)
                log_named(LOG_WARNING, "DrinkManager", "Drink %s moved to failed/ by an operator", uuid);
        notify_changed(b);
        manager_update_status(b->manager);
        upload_kick(b);
        return r;
}

int backend_list_drinks(Backend *b, SpoolArea area, SpoolListFunc cb, void *userdata) {
        return spool_list(b->spool, area, cb, userdata);
}

/* ---------------------------------------------------------------- tokens */

static void token_cache_prune(Backend *b) {
        uint64_t now = now_mono(b);
        for (TokenCache **p = &b->token_cache; *p;) {
                TokenCache *t = *p;
                if (t->until <= now) {
                        *p = t->next;
                        free(t->device);
                        free(t->value);
                        free(t->username);
                        free(t);
                } else
                        p = &t->next;
        }
}

static void token_log(TokenAnswer a, const char *device, const char *value) {
        static const char *const what[] = {
                [TOKEN_NOT_ASSIGNED] = "Token not assigned",
                [TOKEN_DISABLED] = "Token disabled",
                [TOKEN_EXPIRED] = "Token expired",
        };
        if (a != TOKEN_ASSIGNED)
                log_named(LOG_INFO, "AuthenticationManager", "%s: %s/%s", what[a], device, value);
}

static void lookup_answer(Backend *b, Lookup *l, const char *username) {
        unsigned n = l->waiters;

        for (Lookup **p = &b->lookups; *p; p = &(*p)->next)
                if (*p == l) {
                        *p = l->next;
                        break;
                }
        for (unsigned i = 0; i < n; i++)
                manager_auth_answer(b->manager, l->device, l->value, username);
        free(l->device);
        free(l->value);
        free(l);
}

static void on_token(ApiClient *c, const ApiResult *res, void *userdata) {
        Lookup *l = userdata;
        Backend *b = l->backend;
        TokenAnswer a;
        const char *username = NULL;

        note_outcome(b, res->outcome);
        if (res->outcome == API_OK && json_is_object(res->object)) {
                json_t *u = json_object_get(res->object, "username");
                json_t *en = json_object_get(res->object, "enabled");
                json_t *ex = json_object_get(res->object, "expire_time");
                uint64_t exp;
                if (!json_is_string(u) || isempty(json_string_value(u)))
                        a = TOKEN_NOT_ASSIGNED;
                else if (json_is_false(en))
                        a = TOKEN_DISABLED;
                else if (json_is_string(ex) && time_parse_rfc3339(json_string_value(ex), &exp) >= 0 &&
                         exp <= now_real())
                        a = TOKEN_EXPIRED;
                else {
                        a = TOKEN_ASSIGNED;
                        username = json_string_value(u);
                }
        } else if (res->outcome == API_NOT_FOUND)
                a = TOKEN_NOT_ASSIGNED;
        else {
                log_named(LOG_WARNING, "AuthenticationManager", "Token lookup failed for %s/%s: %s; not starting a flow",
                          l->device, l->value, res->reason ?: "malformed answer");
                lookup_answer(b, l, NULL);
                return;
        }

        TokenCache *t = calloc(1, sizeof(TokenCache));
        if (t) {
                t->device = strdup(l->device);
                t->value = strdup(l->value);
                t->username = username ? strdup(username) : NULL;
                t->answer = a;
                t->until = now_mono(b) + TOKEN_CACHE_USEC;
                if (!t->device || !t->value || (username && !t->username)) {
                        free(t->device);
                        free(t->value);
                        free(t->username);
                        free(t);
                } else {
                        t->next = b->token_cache;
                        b->token_cache = t;
                }
        }
        if (a == TOKEN_ASSIGNED)
                log_named(LOG_INFO, "AuthenticationManager", "Token %s/%s belongs to %s", l->device, l->value, username);
        token_log(a, l->device, l->value);
        lookup_answer(b, l, username);
}

static int auth_lookup(Manager *m, const char *device, const char *value, void *userdata) {
        Backend *b = userdata;
        _cleanup_(freep) char *d = NULL, *v = NULL, *path = NULL;
        int r;

        token_cache_prune(b);
        for (TokenCache *t = b->token_cache; t; t = t->next)
                if (streq(t->device, device) && streq(t->value, value)) {
                        log_debug("Token %s/%s: cached answer", device, value);
                        token_log(t->answer, device, value);
                        manager_auth_answer(m, device, value, t->answer == TOKEN_ASSIGNED ? t->username : NULL);
                        return 0;
                }
        for (Lookup *l = b->lookups; l; l = l->next)
                if (streq(l->device, device) && streq(l->value, value)) {
                        l->waiters++;
                        return 0;
                }
        if (b->stopping || !b->client) {
                manager_auth_answer(m, device, value, NULL);
                return 0;
        }

        Lookup *l = calloc(1, sizeof(Lookup));
        if (!l)
                goto fail;
        l->backend = b;
        l->waiters = 1;
        l->device = strdup(device);
        l->value = strdup(value);
        d = api_escape(device);
        v = api_escape(value);
        if (!l->device || !l->value || !d || !v || asprintf(&path, "auth-tokens/%s/%s", d, v) < 0) {
                path = NULL;
                free(l->device);
                free(l->value);
                free(l);
                goto fail;
        }
        r = api_client_get(b->client, path, on_token, l, NULL);
        if (r < 0) {
                free(l->device);
                free(l->value);
                free(l);
                goto fail;
        }
        l->next = b->lookups;
        b->lookups = l;
        return 0;
fail:
        log_named(LOG_WARNING, "AuthenticationManager", "Token lookup failed for %s/%s: out of memory; not starting a flow",
                  device, value);
        manager_auth_answer(m, device, value, NULL);
        return 0;
}

static const ManagerAuthBackend auth_backend = {
        .lookup = auth_lookup,
};

/* ---------------------------------------------------------------- thermo */

static void thermo_post_free(Backend *b, ThermoPost *t) {
        for (ThermoPost **p = &b->thermo_posts; *p; p = &(*p)->next)
                if (*p == t) {
                        *p = t->next;
                        break;
                }
        free(t->sensor);
        free(t);
}

static void on_thermo(ApiClient *c, const ApiResult *res, void *userdata) {
        ThermoPost *t = userdata;
        Backend *b = t->backend;
        int level;

        note_outcome(b, res->outcome);
        if (res->outcome == API_OK)
                log_named(LOG_DEBUG, "ThermoManager", "Temperature of %s posted", t->sensor);
        else {
                level = level_for(res->outcome);
                log_named(level, "ThermoManager", "Temperature post for %s failed (%s); reading dropped",
                          t->sensor, res->reason ?: "?");
        }
        thermo_post_free(b, t);
}

static void on_thermo_reading(Manager *m, const ThermoSensor *s, bool record, void *userdata) {
        Backend *b = userdata;
        _cleanup_(freep) char *name = NULL, *path = NULL;
        ApiForm f = {};
        char v[DOUBLE_STRING_MAX];
        int r;

        /* A sensor of an event controller is reported by the event backend (section 1.2). */
        if (!record || b->stopping || !b->client || manager_route(m, s->name, false) != ROUTE_LEGACY)
                return;
        name = api_escape(s->name);
        if (!name || asprintf(&path, "thermo-sensors/%s", name) < 0) {
                path = NULL;
                return;
        }
        double_format(s->value, v);
        api_form_add(&f, "temp_c", v);
        ThermoPost *t = calloc(1, sizeof(ThermoPost));
        if (!t || !(t->sensor = strdup(s->name))) {
                free(t);
                api_form_done(&f);
                return;
        }
        t->backend = b;
        r = api_client_post(b->client, path, &f, on_thermo, t, NULL);
        api_form_done(&f);
        if (r < 0) {
                log_named(LOG_WARNING, "ThermoManager", "Temperature post for %s failed: %s; reading dropped",
                          s->name, strerror(-r));
                free(t->sensor);
                free(t);
                return;
        }
        t->next = b->thermo_posts;
        b->thermo_posts = t;
}

/* ---------------------------------------------------------------- controllers */

static void provision_step(Provision *p);

static int on_provision_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        provision_step(userdata);
        return 0;
}

static void provision_retry(Provision *p) {
        Backend *b = p->backend;
        uint64_t wait = p->backoff;

        p->backoff = MIN(p->backoff * 2, BACKOFF_MAX_USEC);
        (void) arm(b, &p->retry, wait, on_provision_retry, p, "provision-retry");
}

static void on_provision(ApiClient *c, const ApiResult *res, void *userdata) {
        Provision *p = userdata;
        Backend *b = p->backend;
        int level;

        p->busy = false;
        note_outcome(b, res->outcome);
        if (res->outcome == API_UNAUTHORIZED || res->outcome == API_TRANSIENT) {
                level = level_for(res->outcome);
                log_full(level, "Provisioning of controller %s failed (%s); retrying in %" PRIu64 " s",
                         p->name, res->reason, p->backoff / USEC_PER_SEC);
                provision_retry(p);
                return;
        }
        p->backoff = b->retry_interval;
        if (p->step == 0) {
                if (res->outcome != API_OK) {
                        log_info("Not creating controller: %s", res->error_message ?: res->reason ?: "?");
                        p->step = 3;
                        return;
                }
                json_t *id = json_object_get(res->object, "id");
                if (!json_is_integer(id)) {
                        log_warning("Controller %s created, but the answer has no id; not creating its flow meters", p->name);
                        p->step = 3;
                        return;
                }
                p->controller_id = (long) json_integer_value(id);
                log_info("Created controller %s (id %ld) on the server", p->name, p->controller_id);
        } else if (res->outcome == API_OK)
                log_info("Created flow meter %s.flow%d on the server", p->name, p->step - 1);
        else
                log_info("Not creating flow meter %s.flow%d: %s", p->name, p->step - 1,
                         res->error_message ?: res->reason ?: "?");
        p->step++;
        if (p->step < 3)
                provision_step(p);
}

static void provision_step(Provision *p) {
        Backend *b = p->backend;
        ApiForm f = {};
        int r;

        if (b->stopping || !b->client || p->step >= 3 || p->busy)
                return;
        if (p->step == 0) {
                api_form_add(&f, "name", p->name);
                api_form_add(&f, "model_name", "unknown");
                api_form_add(&f, "serial_number", p->serial ?: "unknown");
                r = api_client_post(b->client, "controllers", &f, on_provision, p, NULL);
        } else {
                api_form_addf(&f, "port_name", "flow%d", p->step - 1);
                api_form_addf(&f, "controller", "%ld", p->controller_id);
                api_form_add(&f, "ticks_per_ml", "2.2");
                r = api_client_post(b->client, "flow-meters", &f, on_provision, p, NULL);
        }
        api_form_done(&f);
        if (r < 0) {
                log_error_errno(r, "Failed to start provisioning of controller %s: %m", p->name);
                provision_retry(p);
                return;
        }
        p->busy = true;
}

static void on_controller_changed(Manager *m, const Controller *c, void *userdata) {
        Backend *b = userdata;

        /* The event protocol has no provisioning: the server creates an approved device's controller. */
        if (!c->connected || isempty(c->name) || manager_route(m, c->name, true) != ROUTE_LEGACY)
                return;
        for (Provision *p = b->provisions; p; p = p->next)
                if (streq(p->name, c->name))
                        return;         /* first time in this process only */

        Provision *p = calloc(1, sizeof(Provision));
        if (!p)
                return;
        p->backend = b;
        p->backoff = b->retry_interval;
        p->name = strdup(c->name);
        p->serial = !isempty(c->serial_number) ? strdup(c->serial_number) : NULL;
        if (!p->name || (!isempty(c->serial_number) && !p->serial)) {
                free(p->name);
                free(p->serial);
                free(p);
                return;
        }
        p->next = b->provisions;
        b->provisions = p;
        log_info("Provisioning controller %s on the server", c->name);
        provision_step(p);
}

/* ---------------------------------------------------------------- calibrations */

static void server_taps_remember(Backend *b, json_t *taps) {
        json_decref(b->server_taps);
        b->server_taps = json_incref(taps);
}

static void overrides_apply(Backend *b, TapTable *t) {
        if (!b->overrides)
                return;
        if (b->reload_overrides) {
                b->reload_overrides = false;
                calibration_overrides_load(b->overrides);
        }
        (void) calibration_overrides_apply(b->overrides, t);
}

/* The server's value for 'meter' in the last status answer, 0 if it gave none. */
static double server_ml_per_tick(Backend *b, const char *meter) {
        size_t i;
        json_t *e;

        json_array_foreach(b->server_taps, i, e) {
                json_t *mpt = json_object_get(e, "ml_per_tick");

                if (streq_ptr(json_string_value(json_object_get(e, "meter_name")), meter) && json_is_number(mpt))
                        return json_number_value(mpt);
        }
        return 0;
}

static void calibration_post_free(Backend *b, CalibrationPost *p) {
        for (CalibrationPost **q = &b->calibration_posts; *q; q = &(*q)->next)
                if (*q == p) {
                        *q = p->next;
                        break;
                }
        free(p->meter);
        free(p->url);
        free(p);
}

/* Kegbot Server 2.0 refuses calibrations on its legacy mount: the value stays here (section 4.3). */
static void calibration_keep_locally(Backend *b, CalibrationPost *p) {
        _cleanup_(freep) char *reason = NULL, *warning = NULL;
        const char *file = calibration_overrides_path(b->overrides);
        double server = p->server_ml_per_tick;
        int r;

        r = calibration_overrides_set(b->overrides, p->meter, p->ml_per_tick, server, p->time_realtime, &reason);
        if (r < 0) {
                p->done(&(CalibrationStored) {
                        .storage = CALIBRATION_STORAGE_MEMORY,
                        .applied_ml_per_tick = p->ml_per_tick,
                        .location = file,
                        .reason = reason ?: strerror(-r),
                }, p->done_userdata);
                return;
        }
        log_named(LOG_WARNING, "calibration",
                  "Kegbot Server does not accept calibrations (410 Gone); calibration of %s kept locally in %s",
                  p->meter, file);
        warning = strdup_printf("Kegbot Server 2.0 refuses calibrations through its legacy API. The new value is "
                                "used locally (volumes shown, ghost-filter thresholds), but the server computes drink "
                                "volumes from ticks with its own value: set ticks_per_ml = %g for this meter in the "
                                "server's admin pages.", calibration_round6(1.0 / p->ml_per_tick));
        p->done(&(CalibrationStored) {
                .storage = CALIBRATION_STORAGE_LOCAL_OVERRIDE,
                .applied_ml_per_tick = p->ml_per_tick,
                .location = file,
                .warning = warning,
        }, p->done_userdata);
}

static void on_calibration_post(ApiClient *c, const ApiResult *res, void *userdata) {
        CalibrationPost *p = userdata;
        Backend *b = p->backend;
        _cleanup_(freep) char *message = NULL;

        p->req = NULL;
        note_outcome(b, res->outcome);
        if (res->outcome == API_OK) {
                p->done(&(CalibrationStored) {
                        .storage = CALIBRATION_STORAGE_SERVER,
                        .applied_ml_per_tick = p->ml_per_tick,
                        .location = p->url,
                }, p->done_userdata);
                /* From now on the tap follows the server, which has the new value. */
                (void) backend_sync(b);
                calibration_post_free(b, p);
                return;
        }
        if (res->outcome == API_REJECTED && res->http_status == 410) {
                calibration_keep_locally(b, p);
                calibration_post_free(b, p);
                return;
        }
        switch (res->outcome) {
        case API_OK:
                break;
        case API_REJECTED:
        case API_NOT_FOUND:
                log_named(LOG_WARNING, "calibration", "Kegbot Server refused the calibration of %s: %ld %s: %s",
                          p->meter, res->http_status, res->error_code ?: "?", res->error_message ?: res->reason ?: "");
                message = strdup_printf("Kegbot Server refused the calibration: %ld %s: %s", res->http_status,
                                        res->error_code ?: "?", res->error_message ?: res->reason ?: "");
                break;
        case API_UNAUTHORIZED:
                log_named(LOG_ERR, "calibration", "Kegbot Server refused the API key (401); calibration of %s not saved",
                          p->meter);
                message = strdup("Kegbot Server refused the API key (401)");
                break;
        case API_TRANSIENT:
                log_named(LOG_WARNING, "calibration", "Kegbot Server unreachable (%s); calibration of %s not saved",
                          res->reason ?: "?", p->meter);
                message = strdup_printf("Kegbot Server unreachable: %s", res->reason ?: "?");
                break;
        }
        p->done(&(CalibrationStored) {
                .error = -EREMOTEIO,
                .message = message ?: "Kegbot Server did not store the calibration",
        }, p->done_userdata);
        calibration_post_free(b, p);
}

static bool calibration_owns(void *userdata, const char *meter) {
        Backend *b = userdata;
        /* The meters of the controllers that use the legacy API (all of them without --event_url). */
        return manager_route(b->manager, meter, false) == ROUTE_LEGACY;
}

static void calibration_store(void *userdata, const CalibrationRequest *req, CalibrationStoreDone done,
                              void *done_userdata, void **ret_handle) {
        Backend *b = userdata;
        _cleanup_(freep) char *meter = NULL, *path = NULL;
        char v[DOUBLE_STRING_MAX];
        CalibrationPost *p;
        ApiForm f = {};
        int r;

        p = calloc(1, sizeof(CalibrationPost));
        meter = api_escape(req->meter);
        if (!p || !meter || !(path = strdup_printf("taps/%s/calibrate", meter)) ||
            !(p->meter = strdup(req->meter)) ||
            !(p->url = strdup_printf("%s/%s", api_client_get_base_url(b->client), path))) {
                if (p) {
                        free(p->meter);
                        free(p);
                }
                done(&(CalibrationStored) { .error = -EREMOTEIO, .message = "Out of memory" }, done_userdata);
                return;
        }
        p->backend = b;
        p->ml_per_tick = req->new_ml_per_tick;
        p->server_ml_per_tick = server_ml_per_tick(b, req->meter) ?: req->old_ml_per_tick;
        p->time_realtime = req->time_realtime;
        p->done = done;
        p->done_userdata = done_userdata;

        api_form_add(&f, "ml_per_tick", double_format(req->new_ml_per_tick, v));
        r = b->stopping || !b->client ? -ESHUTDOWN : api_client_post(b->client, path, &f, on_calibration_post, p, &p->req);
        api_form_done(&f);
        if (r < 0) {
                free(p->meter);
                free(p->url);
                free(p);
                done(&(CalibrationStored) {
                        .error = -EREMOTEIO,
                        .message = r == -ESHUTDOWN ? "kegbot_core is shutting down" : "Cannot send the calibration",
                }, done_userdata);
                return;
        }
        p->next = b->calibration_posts;
        b->calibration_posts = p;
        *ret_handle = p;
}

static void calibration_cancel(void *userdata, void *handle) {
        Backend *b = userdata;

        /* Only a post still listed is ours to drop (the backend may have stopped first). */
        for (CalibrationPost *p = b->calibration_posts; p; p = p->next)
                if (p == handle) {
                        api_request_cancel(p->req);
                        calibration_post_free(b, p);
                        return;
                }
}

static const CalibrationBackend legacy_calibration = {
        .owns = calibration_owns,
        .taps_from_server = true,
        .store = calibration_store,
        .cancel = calibration_cancel,
};

int backend_add_calibrations(Backend *b, Calibrations *c) {
        return calibrations_add_backend(c, &legacy_calibration, b);
}

/* ---------------------------------------------------------------- lifecycle */

static void backend_stop_io(Backend *b) {
        /* Aborts every request in flight without callbacks (core-behaviour.md section 3). */
        b->client = api_client_free(b->client);
        b->upload_req = NULL;
        b->uploading = drink_free(b->uploading);
        b->poison_check = false;
        api_result_done(&b->poison_result);
        while (b->lookups) {
                Lookup *l = b->lookups;
                b->lookups = l->next;
                free(l->device);
                free(l->value);
                free(l);
        }
        while (b->thermo_posts)
                thermo_post_free(b, b->thermo_posts);
        while (b->calibration_posts)
                calibration_post_free(b, b->calibration_posts);
        for (Provision *p = b->provisions; p; p = p->next) {
                p->retry = sd_event_source_disable_unref(p->retry);
                p->busy = false;
        }
        b->sync_in_flight = false;
        disarm(b->sync_timer);
        disarm(b->upload_timer);
}

static void on_stopping(Manager *m, void *userdata) {
        Backend *b = userdata;

        b->stopping = true;
        if (b->upload_req && b->uploading)
                log_named(LOG_INFO, "DrinkManager", "Abandoning the upload of drink %s; it stays queued", b->uploading->uuid);
        backend_stop_io(b);
}

static const ManagerObserver backend_observer = {
        .thermo_reading = on_thermo_reading,
        .controller_changed = on_controller_changed,
        .stopping = on_stopping,
};

int backend_new(Backend **ret, Manager *m, const BackendConfig *config) {
        _cleanup_(backend_freep) Backend *b = NULL;
        _cleanup_(freep) char *spool_dir = NULL;
        _cleanup_(http_client_unrefp) HttpClient *http = NULL;
        int r;

        b = calloc(1, sizeof(Backend));
        if (!b)
                return log_oom_errno();
        b->manager = m;
        b->event = sd_event_ref(manager_get_event(m));
        b->state = BACKEND_OFFLINE;
        b->sync_interval = (uint64_t) MAX(config->sync_interval, 1U) * USEC_PER_SEC;
        b->retry_interval = (uint64_t) MAX(config->retry_interval, 1U) * USEC_PER_SEC;
        b->backoff = b->retry_interval;
        b->api_url = strdup(config->api_url);
        b->state_dir = strdup(config->state_dir);
        if (!b->api_url || !b->state_dir)
                return log_oom_errno();
        if (asprintf(&spool_dir, "%s/spool", config->state_dir) < 0 ||
            asprintf(&b->taps_cache, "%s/taps-cache.json", config->state_dir) < 0) {
                spool_dir = NULL;
                b->taps_cache = NULL;
                return log_oom_errno();
        }
        if (sd_id128_get_boot(&b->boot_id) < 0)
                b->boot_id = SD_ID128_NULL;

        r = spool_open(&b->spool, spool_dir);
        if (r < 0)
                return r;
        r = calibration_overrides_new(&b->overrides, config->state_dir);
        if (r < 0)
                return log_oom_errno();
        calibration_overrides_load(b->overrides);

        r = http_client_new(&http, b->event);
        if (r >= 0)
                r = api_client_new(&b->client, http, config->api_url, config->api_key, config->api_timeout);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the HTTP client: %m");

        b->sink = calloc(1, sizeof(SpoolSink));
        if (!b->sink)
                return log_oom_errno();
        b->sink->sink.vtable = &spool_sink_vtable;
        b->sink->backend = b;
        manager_set_drink_sink(m, &b->sink->sink);
        manager_set_auth_backend(m, &auth_backend, b);
        r = manager_add_observer(m, &backend_observer, b);
        if (r < 0)
                return log_error_errno(r, "Failed to register the backend: %m");

        load_tap_cache(b);
        *ret = TAKE_PTR(b);
        return 0;
}

int backend_start(Backend *b) {
        log_named(LOG_INFO, "main", "Querying backend liveness.");
        (void) backend_sync(b);
        if (spool_n_pending(b->spool) > 0)
                log_named(LOG_INFO, "DrinkManager", "%zu queued drinks to upload", spool_n_pending(b->spool));
        upload_kick(b);
        return 0;
}

Backend *backend_free(Backend *b) {
        if (!b)
                return NULL;
        if (b->manager)
                manager_remove_observer(b->manager, &backend_observer, b);
        backend_stop_io(b);
        if (b->sink)
                b->sink->backend = NULL;
        while (b->provisions) {
                Provision *p = b->provisions;
                b->provisions = p->next;
                sd_event_source_disable_unref(p->retry);
                free(p->name);
                free(p->serial);
                free(p);
        }
        while (b->token_cache) {
                TokenCache *t = b->token_cache;
                b->token_cache = t->next;
                free(t->device);
                free(t->value);
                free(t->username);
                free(t);
        }
        sd_event_source_disable_unref(b->sync_timer);
        sd_event_source_disable_unref(b->upload_timer);
        tap_kegs_clear(b);
        spool_free(b->spool);
        calibration_overrides_free(b->overrides);
        json_decref(b->server_taps);
        sd_event_unref(b->event);
        free(b->api_url);
        free(b->state_dir);
        free(b->taps_cache);
        free(b->taps_cache_written);
        free(b);
        return NULL;
}

void backend_set_changed_handler(Backend *b, void (*handler)(void *userdata), void *userdata) {
        b->changed = handler;
        b->changed_userdata = userdata;
}

BackendState backend_get_state(Backend *b) { return b->state; }
const char *backend_get_api_url(Backend *b) { return b->api_url; }
size_t backend_n_pending(Backend *b) { return spool_n_pending(b->spool); }
size_t backend_n_failed(Backend *b) { return spool_n_failed(b->spool); }
uint64_t backend_last_sync(Backend *b) { return b->last_sync; }
bool backend_synced(Backend *b) { return b->synced; }
