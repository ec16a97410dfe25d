/* kegboard_daemon's Manager: owns the event loop, the Board and the kegnet client, translates KBSP
 * messages into kegnet events (kegnet-protocol.md section 5) and relay events back into set_output,
 * and winds everything down in order on a signal or when the board side ends. */
#pragma once

#include "board.h"
#include "macro.h"

typedef struct ManagerConfig {
        BoardConfig board;              /* .device is not used: see manager_run() */
        const char *kb_core_addr;       /* "host:port" or "port" */
        const char *tap_name;           /* meter_name of the TokenAuthEvents */
        const char *runtime_dir;        /* the board's newest readings survive a restart here; "" = not */
} ManagerConfig;

typedef struct Manager Manager;

int manager_new(Manager **ret, const ManagerConfig *config);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Opens the board on 'device' (or, if it is empty, on the first port udev nominates as a Kegboard,
 * waiting for one to be plugged in), connects to the core and runs the loop. Returns the exit
 * status (0 or 1). */
int manager_run(Manager *m, const char *device);
