/* <state_dir>/calibration.json (calibration.md section 4.3): calibrations the core keeps locally
 * because the server that holds the tap's calibration refuses them (Kegbot Server 2.0 answers the
 * legacy calibrate call with 410). Each override remembers the server's value it replaced; after a
 * tap sync the override wins while the server still says that value, and is dropped once someone
 * changed it on the server. Written atomically on every change, read at start-up and on SIGHUP /
 * Sync(); an unreadable file is a WARNING and means no overrides. */
#pragma once

#include <stdint.h>

#include "macro.h"
#include "taps.h"

#define CALIBRATION_OVERRIDES_FILE "calibration.json"
/* A file this large is not ours: refused. */
#define CALIBRATION_OVERRIDES_FILE_MAX (1024 * 1024)

typedef struct CalibrationOverrides CalibrationOverrides;

/* Nothing is read yet: call calibration_overrides_load(). */
int calibration_overrides_new(CalibrationOverrides **ret, const char *state_dir);
CalibrationOverrides *calibration_overrides_free(CalibrationOverrides *o);
DEFINE_TRIVIAL_CLEANUP_FUNC(CalibrationOverrides *, calibration_overrides_free);

const char *calibration_overrides_path(CalibrationOverrides *o);
size_t calibration_overrides_size(CalibrationOverrides *o);

/* Replaces what is held by the file's contents (a missing file: none; an unreadable or invalid one:
 * WARNING, none). */
void calibration_overrides_load(CalibrationOverrides *o);

/* Keeps ml_per_tick for 'meter' in place of the server's value and rewrites the file. On a write
 * failure nothing changes: -errno and a reason. */
int calibration_overrides_set(CalibrationOverrides *o, const char *meter, double ml_per_tick, double server_ml_per_tick,
                              uint64_t time_realtime, char **ret_reason);

/* After a successful tap sync ('table' is the server's): an override whose tap the server now gives
 * another value (by more than 1e-9, relative) is dropped (INFO "Calibration override of <m>
 * dropped: Kegbot Server now says <x> mL/tick", file rewritten); the others replace the value in
 * the table, source local-override. Overrides of meters that are not taps are kept. Returns how
 * many were applied. */
int calibration_overrides_apply(CalibrationOverrides *o, TapTable *table);
