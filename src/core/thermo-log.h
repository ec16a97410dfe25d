/* Standalone mode's record of temperatures (core-behaviour.md section 9): <state_dir>/thermo.log,
 * one JSON line per recorded reading (at most one per sensor and minute, as the ThermoManager
 * decides). Appended without fsync: readings are not precious. */
#pragma once

#include <stdint.h>

#include "macro.h"

typedef struct ThermoLog ThermoLog;

/* Opens (creating) <state_dir>/thermo.log; the directory must exist. Errors are logged. */
int thermo_log_new(ThermoLog **ret, const char *state_dir);
ThermoLog *thermo_log_free(ThermoLog *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(ThermoLog *, thermo_log_free);
/* One line {"sensor_name":...,"temperature_c":...,"time":...}; a failure is logged (WARNING). */
int thermo_log_append(ThermoLog *l, const char *sensor, double value_c, uint64_t realtime);
/* SIGHUP: reopen (after an external rotation). */
int thermo_log_reopen(ThermoLog *l);
