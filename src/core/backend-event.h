/* kegbot_core's second server backend (kegboard-event-protocol.md): every board whose backend is
 * "event" is reported as a virtual Kegboard v4, one device per controller, each with its durable
 * spool of events (<state_dir>/event/<device>/), its boot_id and id sequence, its pairing token,
 * heartbeats, batches and backoff, all on the manager's loop. Drinks reach it through the manager's
 * DrinkSink: the backend installs a sink that routes each drink to the device of its meter's
 * controller, or to the legacy spool's sink for controllers of the legacy API. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "manager.h"

typedef struct EventBackendConfig {
        const char *event_url;          /* non-empty */
        double api_timeout;             /* seconds: the whole request */
        const char *state_dir;
        unsigned heartbeat_interval;    /* seconds, 10..3600 */
        unsigned pour_update_ms;        /* 0 or 250..60000 */
        unsigned retry_interval;        /* seconds, 1..300 (doubles, capped at 300) */
        unsigned max_grant_s;           /* clamp of every grant's lifetime */
        unsigned auth_window;           /* seconds a presentment stays fresh */
        unsigned spool_max;             /* durable events a device holds before temperatures are refused */
        bool debug_events;              /* log request and answer bodies at DEBUG */
} EventBackendConfig;

typedef struct EventBackend EventBackend;

/* The per-device state shown on D-Bus (Controller EventState). */
typedef enum EventDeviceState {
        EVENT_DEVICE_IDLE,              /* no answer yet */
        EVENT_DEVICE_ONLINE,
        EVENT_DEVICE_OFFLINE,
        EVENT_DEVICE_PAIRING,
        EVENT_DEVICE_DENIED,
} EventDeviceState;

const char *event_device_state_to_string(EventDeviceState s);

/* Loads every device found under <state_dir>/event (start-up recovery, section 2.6) and installs
 * the routing drink sink (the manager's current sink, if any, serves legacy controllers). Nothing is
 * sent before event_backend_start(). Errors are logged; any error is fatal for the caller. */
int event_backend_new(EventBackend **ret, Manager *m, const EventBackendConfig *config);
EventBackend *event_backend_free(EventBackend *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(EventBackend *, event_backend_free);

/* Event controllers' calibrations (calibration.md section 4.4): stored in the taps file by 'c',
 * then a status event at once; a calibration pour does not hold their valves. 'b' uses 'c' only
 * in the stores 'c' asks for. */
typedef struct Calibrations Calibrations;
int event_backend_add_calibrations(EventBackend *b, Calibrations *c);

/* The first attempts (after READY=1). */
int event_backend_start(EventBackend *b);

/* What the D-Bus layer turns into signals (section 12). Every callback is optional. */
typedef struct EventBackendSignals {
        void (*grant_started)(const char *controller, const char *grant_id, const unsigned *meters, size_t n_meters,
                              const unsigned *relays, size_t n_relays, const char *auth_device, const char *token,
                              void *userdata);
        void (*grant_ended)(const char *controller, const char *grant_id, const char *reason, double volume_ml,
                            uint64_t duration_ms, void *userdata);
        void (*token_denied)(const char *controller, const char *auth_device, const char *token, const char *reason,
                             void *userdata);
} EventBackendSignals;

void event_backend_set_signals(EventBackend *b, const EventBackendSignals *signals, void *userdata);

/* Called after anything the D-Bus layer shows may have changed. */
void event_backend_set_changed_handler(EventBackend *b, void (*handler)(void *userdata), void *userdata);

const char *event_backend_get_url(EventBackend *b);
/* Whether controller C reports through the event protocol (section 1.2). */
bool event_backend_owns_controller(EventBackend *b, const char *controller);
/* The worst device state mapped as section 12 says: 0 online, 1 offline, 2 unauthorized. */
int event_backend_worst_state(EventBackend *b);
size_t event_backend_n_pending_pours(EventBackend *b);
size_t event_backend_n_failed_pours(EventBackend *b);
/* Durable events held in memory because their spool file or state.json could not be written
 * (sections 5.0, 9.1): D-Bus SpoolState "degraded" while there is any. */
size_t event_backend_n_held_events(EventBackend *b);

size_t event_backend_n_devices(EventBackend *b);
const char *event_backend_device_name_at(EventBackend *b, size_t i);

/* The grant covering 'meter' now (its flow's GrantId on D-Bus), NULL when none does. */
const char *event_backend_meter_grant(EventBackend *b, const char *meter);

/* Per device (NULL / -ENOENT when the controller has no device). */
typedef struct EventDeviceInfo {
        EventDeviceState state;
        bool paired;
        const char *boot_id;
        size_t pending_events;
        size_t failed_events;
        uint64_t last_delivery;         /* CLOCK_REALTIME usec, 0 = never */
        size_t active_grants;
} EventDeviceInfo;

int event_backend_device_info(EventBackend *b, const char *controller, EventDeviceInfo *ret);
/* Deletes the device's token, clears "denied", attempts at once. -ENOENT: no such device. */
int event_backend_reset_pairing(EventBackend *b, const char *controller);
/* Re-queues every quarantined event of the device at the tail (new ids). */
int event_backend_retry_failed_events(EventBackend *b, const char *controller, unsigned *ret_n);
/* RetryFailedDrinks(): the quarantined pours of every device re-queued (new ids, same pour_id). */
int event_backend_retry_failed_pours(EventBackend *b, unsigned *ret_n);
/* FailDrink(): a queued pour event to failed/ (the request in flight aborted first if it carries
 * it). -ENOENT: no device has it queued. */
int event_backend_fail_pour(EventBackend *b, const char *uuid);
/* ListDrinks(): the pours queued in every device's spool (failed = false), or the quarantined and
 * unmapped ones (true), each with its controller ("" for an unmapped pour on a meter without one)
 * and its event id. */
typedef int (*EventPourListFunc)(const Drink *d, const char *controller, uint64_t id, void *userdata);
int event_backend_list_pours(EventBackend *b, bool failed, EventPourListFunc cb, void *userdata);
/* SIGHUP / Sync(): "denied" cleared and an attempt at once for every device. */
void event_backend_kick_all(EventBackend *b);
/* The part of the STATUS= line naming devices that need attention ("" when none). */
void event_backend_status_text(EventBackend *b, char *buf, size_t size);
