/* What makes every tick count exactly once across a restart of the core (core-behaviour.md section
 * 5): <state_dir>/meters.json holds per meter the reading up to which every tick is accounted for
 * (and the carry of a flow a board reset cut), per controller the identity that proves its counters
 * did not restart (serial number, uptime), and the drink whose durable step has begun.
 *
 * A drink and the accounted reading after it must become durable together. The file is written
 * before the drink with the drink as "pending" (its uuid and the meter state after it), then the
 * drink is written, then the file again with the new state applied. At start-up a pending drink
 * that is found durable (in drinks.log or the spool) has its state applied; one that is not was
 * never written, and its ticks are still counted by the board: the old state stands. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flow.h"
#include "macro.h"
#include "util-uuid.h"

#define METERS_STATE_FILE "meters.json"
#define METERS_STATE_FILE_MAX (1024U * 1024U)
#define METERS_STATE_CONTROLLERS_MAX 256U

typedef struct MetersState MetersState;

/* The identity of a controller's counters as last announced (ControllerConnectedEvent). */
typedef struct MetersController {
        char *name;
        char *serial_number;            /* NULL = unknown */
        bool has_uptime;
        uint64_t uptime_ms;
        bool counts_from_zero;          /* its counters restarted at 0 (a reset notice) since that boot */
} MetersController;

/* Opens (creating it with mode 0750 if needed) the state directory. No file is read yet. */
int meters_state_new(MetersState **ret, const char *state_dir);
MetersState *meters_state_free(MetersState *ms);
DEFINE_TRIVIAL_CLEANUP_FUNC(MetersState *, meters_state_free);

/* Reads meters.json. A missing file is an empty state (INFO); an unreadable or invalid one is an
 * empty state too, with a WARNING giving the reason: the core never refuses to start for it.
 * Returns 0, or -ENOMEM. */
int meters_state_load(MetersState *ms);

/* Start-up, after meters_state_load(): 'durable' tells whether the drink with this uuid was
 * written (> 0), was not (0), or cannot be known (< 0: treated as not written). The state of each
 * pending drink found written is applied; the pending list is empty afterwards. */
typedef int (*MetersDurableFunc)(const char *uuid, void *userdata);
int meters_state_resolve_pending(MetersState *ms, MetersDurableFunc durable, void *userdata);

size_t meters_state_n_meters(MetersState *ms);
/* The i-th meter, in the order of the file; *ret_name valid until the next change. -ENOENT past the end. */
int meters_state_meter_at(MetersState *ms, size_t i, const char **ret_name, FlowMeterState *ret);
int meters_state_get_meter(MetersState *ms, const char *meter, FlowMeterState *ret);        /* -ENOENT */
int meters_state_set_meter(MetersState *ms, const char *meter, const FlowMeterState *s);
/* The engine forgot the meter (FLOW_EVENT_METER_FORGOTTEN): so does the file, at the next save. */
void meters_state_forget_meter(MetersState *ms, const char *meter);

const MetersController *meters_state_get_controller(MetersState *ms, const char *name);  /* NULL: unknown */
/* Records the identity announced now; serial NULL keeps the known one. -ENOSPC: too many controllers. */
int meters_state_set_controller(MetersState *ms, const char *name, const char *serial_number, bool has_uptime,
                                uint64_t uptime_ms);
/* The controller's counters restarted at 0 (after meters_state_set_controller()): a meter of it that
 * a restarted core has not seen yet counts from 0 (flow_engine_controller_counts_from_zero()). */
int meters_state_set_counts_from_zero(MetersState *ms, const char *name);
size_t meters_state_n_controllers(MetersState *ms);
const MetersController *meters_state_controller_at(MetersState *ms, size_t i);         /* NULL past the end */

/* The drink 'uuid' on 'meter' is about to be written; once it is durable the meter's state is
 * 'after'. Kept in memory until meters_state_end_drink(); the next save writes it as pending. */
int meters_state_begin_drink(MetersState *ms, const char *uuid, const char *meter, const FlowMeterState *after);
/* durable: the drink was written, its state is applied; else it was not, the state stays. -ENOENT. */
int meters_state_end_drink(MetersState *ms, const char *uuid, bool durable);
size_t meters_state_n_pending(MetersState *ms);

/* Writes meters.json atomically (temp file, fsync, rename, directory fsync). -errno; the state in
 * memory is kept either way (meters_state_is_dirty() until a save succeeds). */
int meters_state_save(MetersState *ms);
bool meters_state_is_dirty(MetersState *ms);

/* The file's content for the current state (tests). */
int meters_state_format(MetersState *ms, char **ret);
