/* kegbot_core's Manager: owns the sd-event loop and all state (flow engine, tap registry, kegnet
 * server, thermo sensors, controllers, the drink sink) and turns inbound kegnet messages into
 * engine calls and the engine's events into kegnet broadcasts, drinks for the sink and observer calls.
 * Later layers (D-Bus, the server backend) plug in through the observer list, the DrinkSink, the
 * auth backend and the public operations below, without touching this logic. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "drink-sink.h"
#include "flow.h"
#include "kegnet-server.h"
#include "macro.h"
#include "routes.h"
#include "taps.h"
#include "thermo.h"

typedef struct Manager Manager;

typedef struct ManagerConfig {
        const char *bind_addr;          /* --kb_core_bind_addr */
        const char *state_dir;          /* --state_dir */
        const char *taps_file;          /* --taps_file (standalone) */
        const char *tokens_file;        /* --tokens_file (standalone), "" = none: tokens ignored */
        uint64_t max_tick_delta;        /* 0 = no limit */
        uint64_t max_restart_delta;     /* first reading after a gap (section 5); 0 = no limit */
        FlowSettings settings;          /* the ghost filter's flags (and --min_volume_ml) */
        double default_ticks_per_ml;
        bool debug_events;
        bool standalone;                /* false: the caller installs a drink sink (server mode) */
        bool local_taps;                /* the event protocol: its controllers' taps from the taps file and
                                         * first sight, as in standalone mode (section 1.3) */
        const Routes *routes;           /* which backend reports each controller (outlives the Manager) */
        unsigned max_clients;           /* --kegnet_max_clients, 0 = default */
        uint64_t idle_timeout_usec;     /* --kegnet_idle_timeout, 0 = default */
        bool open_producers;            /* --kegnet_open_producers */
        uint64_t shutdown_flush_usec;   /* 0 = default 1 s */
        uint64_t retry_usec;            /* retry of a drink or meters.json write that failed */
} ManagerConfig;

void manager_config_init(ManagerConfig *c);

/* A board announced by ControllerConnectedEvent. */
typedef struct Controller {
        char *name;
        char *serial_number;            /* NULL = unknown */
        bool has_firmware_version;
        uint32_t firmware_version;
        bool has_uptime_ms;
        uint64_t uptime_ms;
        char *device;                   /* NULL = unknown */
        bool connected;
        uint64_t last_seen_realtime;    /* usec */
        uint64_t peer_id;               /* kegnet connection that announced it (0 = none) */
        char peer_address[64];          /* its "<ip>:<port>", "" when disconnected */
} Controller;

/* Every callback is optional. They run synchronously, after the kegnet side of the same change;
 * they must not free the manager. Pointers are valid for the duration of the call. Callbacks that
 * come from inside the flow engine (flow_updated, relay_changed, drink_recorded, token_authenticated,
 * tap_changed for first-sight taps) must not call the mutating manager_*() operations: the engine
 * refuses re-entry (-EBUSY); defer such work to the loop instead. */
typedef struct ManagerObserver {
        void (*tap_changed)(Manager *m, const char *meter, TapChange change, void *userdata);
        void (*flow_updated)(Manager *m, const FlowInfo *flow, void *userdata);
        void (*relay_changed)(Manager *m, const char *relay, bool enabled, void *userdata);
        /* 'durable' = the drink is written and fsync'ed (drinks.log or spool); false = its write failed
         * and it waits in memory, its flow not reported completed yet (D-Bus shows SpoolState
         * "degraded" meanwhile); called again with true once a retry wrote it. Not an announcement. */
        void (*drink_stored)(Manager *m, const Drink *d, bool durable, void *userdata);
        /* The disk state (manager_disk_state()) or the number of drinks waiting to be written changed. */
        void (*storage_changed)(Manager *m, void *userdata);
        /* The drink was accepted: appended to drinks.log, or taken by the server. The manager has
         * sent kegnet DrinkCreatedEvent; D-Bus emits DrinkRecorded. The same event, by one name. */
        void (*drink_recorded)(Manager *m, const Drink *d, void *userdata);
        /* An accepted reading; 'record' = first of its minute (server: post it). */
        void (*thermo_reading)(Manager *m, const ThermoSensor *s, bool record, void *userdata);
        void (*thermo_silent)(Manager *m, const ThermoSensor *s, void *userdata);
        void (*token_authenticated)(Manager *m, const char *device, const char *value,
                                    const char *username, void *userdata);
        /* A token placed on or removed from a reader (kegnet TokenAuthEvent, D-Bus Add/RemoveAuthToken),
         * its value normalised; meter NULL, "" or "__all_taps__" = every tap. With local_taps and no
         * auth backend (the event protocol) this is all the core does with it: the server decides. */
        void (*token_presented)(Manager *m, const char *device, const char *value, const char *meter, bool added,
                                void *userdata);
        /* Created, updated or (dis)connected. */
        void (*controller_changed)(Manager *m, const Controller *c, void *userdata);
        /* About to be forgotten to make room in a full table: still listed while this runs. */
        void (*controller_removed)(Manager *m, const Controller *c, void *userdata);
        void (*sensor_removed)(Manager *m, const ThermoSensor *s, void *userdata);
        /* Orderly shutdown has begun (before active flows are ended). */
        void (*stopping)(Manager *m, void *userdata);
        /* The ghost filter reported (ghost-pours.md sections 8-10): ev->type is FLOW_EVENT_GHOST,
         * FLOW_EVENT_POUR_FLAGGED, FLOW_EVENT_QUARANTINE or FLOW_EVENT_GHOST_COUNTERS. Called from
         * inside the engine, like flow_updated. */
        void (*ghost_event)(Manager *m, const FlowEvent *ev, void *userdata);
        /* A calibration pour started, counted ticks or ended (FLOW_EVENT_CALIBRATION, calibration.md
         * section 2). Called from inside the engine, like flow_updated. */
        void (*calibration_event)(Manager *m, const FlowEvent *ev, void *userdata);
} ManagerObserver;

/* Token lookups (server mode: the Kegbot Server; standalone: the tokens file, built in). lookup()
 * starts a lookup of (device, normalised value) and must eventually call manager_auth_answer()
 * exactly once, possibly from inside lookup(). */
typedef struct ManagerAuthBackend {
        int (*lookup)(Manager *m, const char *device, const char *value, void *userdata);
} ManagerAuthBackend;

/* Sets up everything start-up needs in spec order (state dir + drinks log in standalone mode,
 * kegnet socket, taps file, tokens file, signals, watchdog). Errors are logged; any error is fatal
 * (exit 1). */
int manager_new(Manager **ret, const ManagerConfig *config);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Runs the loop until an orderly shutdown completes. Returns the exit code (0) or a negative errno
 * for a fatal loop failure. */
int manager_run(Manager *m);

sd_event *manager_get_event(Manager *m);
FlowEngine *manager_get_engine(Manager *m);
TapRegistry *manager_get_taps(Manager *m);
/* The backend reporting the controller of 'name' (a meter, sensor or relay; or a controller name). */
RouteBackend manager_route(Manager *m, const char *name, bool is_controller);
ThermoManager *manager_get_thermo(Manager *m);
KegnetServer *manager_get_kegnet(Manager *m);
bool manager_is_standalone(Manager *m);

/* Replaces the drink sink (server mode: the spool); the manager owns it from now on. */
void manager_set_drink_sink(Manager *m, DrinkSink *sink);
DrinkSink *manager_get_drink_sink(Manager *m);
/* Hands the current sink over to the caller (the event backend's router wraps the legacy spool). */
DrinkSink *manager_take_drink_sink(Manager *m);
void manager_set_auth_backend(Manager *m, const ManagerAuthBackend *backend, void *userdata);
/* The answer to a lookup: username, or NULL for every negative outcome (logged by the backend). */
void manager_auth_answer(Manager *m, const char *device, const char *value, const char *username);

int manager_add_observer(Manager *m, const ManagerObserver *o, void *userdata);
void manager_remove_observer(Manager *m, const ManagerObserver *o, void *userdata);

/* The operations kegnet clients trigger, for other front ends (D-Bus) to share. */
/* -EPERM: the tap is quarantined (the engine logged it). */
int manager_start_flow(Manager *m, const char *meter);
int manager_stop_flow(Manager *m, const char *meter);
/* The event backend: a grant (its token's device, NULL without one) covers the tap of 'meter' or
 * no longer does (flow_engine_set_tap_grant()). */
int manager_set_tap_grant(Manager *m, const char *meter, bool owned, const char *device);
int manager_meter_update(Manager *m, const char *meter, uint32_t reading);
/* meter NULL, "" or "__all_taps__" = every tap. */
int manager_token_event(Manager *m, const char *device, const char *value, const char *meter, bool added);
int manager_thermo_event(Manager *m, const char *sensor, double value_c);
/* A relay something acts on: the relay of a tap, or relay0..relay5 of a known controller. */
bool manager_relay_exists(Manager *m, const char *relay);
/* Sends SetRelayOutputEvent (D-Bus SetRelay); the ghost filter's valve-closed gate counts it.
 * -ENOENT for a relay that does not exist. */
int manager_set_relay(Manager *m, const char *relay, bool enabled);
/* D-Bus ClearQuarantine: 1 cleared (quarantine.json rewritten), 0 not quarantined, -ENOENT neither a
 * tap nor quarantined. */
int manager_clear_quarantine(Manager *m, const char *meter);
/* The ghost filter's global mode (--ghost_filter). */
FlowGhostMode manager_ghost_filter(Manager *m);
/* Standalone: the tap of a meter seen for the first time, as a MeterUpdate creates it
 * (flow_engine_first_sight()). */
int manager_create_tap(Manager *m, const char *meter);
/* Calibration pours (flow_engine_start_calibration() and friends, with the loop's time): -ESHUTDOWN
 * once stopping. */
int manager_start_calibration(Manager *m, const char *meter, uint64_t timeout_usec, bool hold_relay);
int64_t manager_end_calibration(Manager *m, const char *meter, FlowCalibrationEnd reason, double old_ml_per_tick);
int manager_calibration_set_storing(Manager *m, const char *meter, bool storing);
bool manager_is_stopping(Manager *m);
/* The loop's wall-clock time (usec). */
uint64_t manager_now_realtime(Manager *m);
/* SIGHUP / Sync(): reload the taps and tokens files (standalone) or the ghost-filter settings of the
 * taps file (server mode), reopen logs. */
int manager_reload(Manager *m);
/* Begins the orderly shutdown (as SIGTERM does). */
void manager_stop(Manager *m);

size_t manager_n_controllers(Manager *m);
const Controller *manager_controller_at(Manager *m, size_t i);
const Controller *manager_find_controller(Manager *m, const char *name);

/* sd_notify STATUS= text, e.g. "Ready: standalone mode, 2 taps, 0 queued drinks" ("Starting: ..."
 * before manager_set_ready()). */
void manager_update_status(Manager *m);
/* The UUID the drink of a flow gets, when someone handed one out while the flow ran (the event
 * protocol's pour_id, which its live pour updates carry): NULL = a fresh one. */
typedef const char *(*ManagerFlowUuidFunc)(Manager *m, uint64_t flow_id, const char *meter, void *userdata);
void manager_set_flow_uuid(Manager *m, ManagerFlowUuidFunc f, void *userdata);

/* Text appended to the STATUS= line (e.g. "; kegboard: denied"): written into buf, "" for none. */
typedef void (*ManagerStatusExtraFunc)(Manager *m, char *buf, size_t size, void *userdata);
void manager_set_status_extra(Manager *m, ManagerStatusExtraFunc f, void *userdata);
/* Start-up is complete: READY=1 with the STATUS= text. */
void manager_set_ready(Manager *m);

/* The state directory's disk (disk-reserve.h): ok (the space reserve is set aside), low (it is in use
 * or could not be set aside: free some space), full (drinks wait in memory to be written). */
typedef enum ManagerDiskState {
        MANAGER_DISK_OK,
        MANAGER_DISK_LOW,
        MANAGER_DISK_FULL,
} ManagerDiskState;

ManagerDiskState manager_disk_state(Manager *m);
const char *manager_disk_state_to_string(ManagerDiskState s);  /* "ok", "low", "full" */
/* Drinks that could not be written yet (counted in PendingDrinks, not durable). */
size_t manager_n_waiting_drinks(Manager *m);
/* A write into the state directory failed with r (negative errno): true if the space reserve was
 * released for it, so the write may be tried again. */
bool manager_free_reserve_on(Manager *m, int r);
