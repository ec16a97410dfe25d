/* rfid_daemon's Manager: the event loop, the kegnet producer, and the readers - one given node
 * (instance mode), every reader udev shows followed through hotplug (discovery mode), or the vendor
 * library's reader (phidget22). Presentations become TokenAuthEvents (rfid-readers.md sections 6, 7,
 * 11). */
#pragma once

#include "discovery.h"
#include "macro.h"
#include "reader.h"

/* At most this many readers at a time in discovery mode. */
#define MANAGER_MAX_READERS 8

typedef struct ManagerConfig {
        const char *device;             /* --rfid_device; "" = discovery mode */
        RfidBackend backend;            /* --rfid_backend */
        ReaderSettings settings;
        const char *tap_name;
        const char *kb_core_addr;
} ManagerConfig;

typedef struct Manager Manager;

int manager_new(Manager **ret, const ManagerConfig *config);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Sets up the readers, connects to the core and runs the loop. Returns the exit status of
 * section 11: 0 (signal; instance mode: the reader went away), 1 (cannot open, set-up errors), 2
 * (instance mode: not a usable reader). */
int manager_run(Manager *m);
