/* kegbot_core's D-Bus front end: org.kegbot.Core1 on the system or session bus (DESIGN.md section 4;
 * dbus/org.kegbot.Core1.xml is the contract). It mirrors the manager's state as objects, properties
 * and signals through the manager's observer list, turns method calls into the same manager
 * operations kegnet clients trigger, survives the bus appearing late or restarting, and serves
 * org.freedesktop.LogControl1. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "calibration.h"
#include "macro.h"
#include "manager.h"

#define BUS_NAME "org.kegbot.Core1"
#define BUS_ROOT_PATH "/org/kegbot/Core1"

typedef enum BusType {
        BUS_TYPE_SYSTEM,
        BUS_TYPE_SESSION,
} BusType;

/* "system" or "session"; -EINVAL otherwise. */
int bus_type_from_string(const char *s, BusType *ret);


typedef struct BusConfig {
        BusType type;
        const char *api_url;            /* "" in standalone mode */
} BusConfig;

typedef struct Bus Bus;

/* Connects (DBUS_SYSTEM_BUS_ADDRESS / DBUS_SESSION_BUS_ADDRESS honoured; a bus that is not there yet
 * is waited for), exports the objects and requests the name asynchronously. Call after
 * manager_new() and before manager_run(); free before manager_free(). Errors are logged. */
int bus_new(Bus **ret, Manager *m, const BusConfig *config);
/* Sends what is still coalesced, releases the name, flushes and closes the connection. */
Bus *bus_free(Bus *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(Bus *, bus_free);

/* Server mode: the Manager interface shows the backend's state, counts and last sync (kept current
 * through the backend's changed handler, which this takes) and its methods call the backend.
 * Without a backend the standalone values are shown (BackendState "standalone", no drink queue,
 * Sync() reloads the taps file). Free the Bus before the backend, or set NULL first. */
void bus_set_backend(Bus *b, Backend *backend);
/* The Kegboard Event Protocol backend: its devices' state on the Controller objects. */
typedef struct EventBackend EventBackend;
void bus_set_event_backend(Bus *b, EventBackend *eb);
/* The calibration methods (calibration.md section 5) call 'c'; without it they answer NotSupported.
 * Free the Bus before 'c'. */
void bus_set_calibrations(Bus *b, Calibrations *c);
/* Something the Manager interface shows may have changed: emits PropertiesChanged for what differs. */
void bus_backend_changed(Bus *b);

/* Called once, the first time the name is ours (READY=1 waits for it: a client woken by systemd can
 * call the core at once). Right away if it is ours already. */
void bus_set_ready_handler(Bus *b, void (*handler)(void *userdata), void *userdata);

/* The name could not be acquired (taken, or denied by the policy): the bus stopped the manager
 * (orderly shutdown) and the process must exit 1. */
bool bus_failed(Bus *b);
