/* Temperature sensors (core-behaviour.md section 9): range check, latest value per sensor, at most
 * one recorded reading per sensor per wall-clock minute, and the "stopped receiving updates"
 * warning after 2 minutes of silence. No clock reads and no timers: the caller passes the time in
 * and arms one timer at thermo_next_deadline(). Logs as ThermoManager. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define THERMO_MIN_C (-20.0)
#define THERMO_MAX_C 80.0
#define THERMO_SILENCE_USEC (120 * USEC_PER_SEC)
/* A full table forgets the sensor heard from longest ago (it comes back with its next reading). */
#define THERMO_MAX_SENSORS 256U
#define THERMO_NO_DEADLINE UINT64_MAX

typedef struct ThermoSensor {
        char *name;
        double value;                   /* latest accepted reading, deg C */
        uint64_t last_seen_realtime;    /* usec */
        uint64_t last_seen_monotonic;   /* usec */
        int64_t last_recorded_minute;   /* floor(unix / 60) of the last recorded reading, -1 = none */
        bool silent;                    /* warned; the next reading is "first" again */
} ThermoSensor;

typedef struct ThermoManager ThermoManager;

typedef enum ThermoResult {
        THERMO_DROPPED,                 /* out of range, not finite, or out of memory */
        THERMO_ACCEPTED,                /* latest value updated; not recorded this minute */
        THERMO_RECORD,                  /* accepted and the first of its minute: post / log it */
} ThermoResult;

int thermo_manager_new(ThermoManager **ret);
/* Called for a sensor about to be forgotten to make room, while it is still listed. */
typedef void (*ThermoEvictHandler)(const ThermoSensor *s, void *userdata);
void thermo_manager_set_evict_handler(ThermoManager *t, ThermoEvictHandler handler, void *userdata);
ThermoManager *thermo_manager_free(ThermoManager *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(ThermoManager *, thermo_manager_free);

/* One ThermoEvent. *ret_sensor (optional) points at the sensor for ACCEPTED and RECORD. */
ThermoResult thermo_manager_reading(ThermoManager *t, const char *sensor, double value_c,
                                    uint64_t monotonic, uint64_t realtime, const ThermoSensor **ret_sensor);

/* Monotonic time at which some sensor becomes silent; THERMO_NO_DEADLINE if none can. */
uint64_t thermo_manager_next_deadline(const ThermoManager *t);
/* Warns (once) about each sensor silent at 'monotonic' and calls on_silent (may be NULL) for it.
 * Returns how many were declared silent. */
typedef void (*ThermoSilentHandler)(const ThermoSensor *s, void *userdata);
int thermo_manager_process_deadlines(ThermoManager *t, uint64_t monotonic, ThermoSilentHandler on_silent,
                                     void *userdata);

size_t thermo_manager_n_sensors(const ThermoManager *t);
const ThermoSensor *thermo_manager_sensor_at(const ThermoManager *t, size_t i);
const ThermoSensor *thermo_manager_find(const ThermoManager *t, const char *name);
