/* The tap registry (core-behaviour.md section 4): loads the standalone taps file (INI), applies tap
 * tables to the flow engine (which owns the taps) and reports every change, so that the manager's
 * observers (D-Bus) learn about added, updated and removed taps. A server-mode sync uses the same
 * replace operation with the server's table. The taps file also gives each tap its ghost-filter
 * settings (ghost-pours.md section 4.2: tap section, then [DEFAULT], then the flags), in server mode
 * too, where a section is read for those keys only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "flow.h"
#include "macro.h"

/* Where a tap's calibration comes from (D-Bus Tap.CalibrationSource, calibration.md section 5). */
typedef enum TapCalibrationSource {
        TAP_CALIBRATION_DEFAULT,        /* first sight, or a taps-file section without a calibration key */
        TAP_CALIBRATION_TAPS_FILE,
        TAP_CALIBRATION_SERVER,
        TAP_CALIBRATION_LOCAL_OVERRIDE, /* kept locally: Kegbot Server refuses calibrations (410) */
        TAP_CALIBRATION_MEMORY,         /* a calibration that could not be saved */
        _TAP_CALIBRATION_SOURCE_MAX,
} TapCalibrationSource;

/* "default", "taps-file", "server", "local-override", "memory". */
const char *tap_calibration_source_to_string(TapCalibrationSource s);

typedef struct TapConfig {
        char *meter_name;
        char *name;                     /* never NULL: defaults to the meter name */
        double ml_per_tick;             /* > 0 */
        char *relay_name;               /* "" = none */
        TapCalibrationSource source;    /* of ml_per_tick: tap_table_add() says "server" */
        bool has_settings;              /* from a taps-file section; else the defaults apply */
        bool tap_keys;                  /* a taps-file section with name, relay_name or a calibration */
        FlowSettings settings;
} TapConfig;

typedef struct TapTable {
        TapConfig *taps;
        size_t n_taps;
        bool has_defaults;              /* a taps file: the flags overridden by its [DEFAULT] */
        FlowSettings defaults;
} TapTable;

TapTable *tap_table_free(TapTable *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(TapTable *, tap_table_free);
int tap_table_new(TapTable **ret);
/* A duplicate meter name is refused with -EEXIST. */
int tap_table_add(TapTable *t, const char *meter, const char *name, double ml_per_tick, const char *relay);

/* Parses a taps file: one section per meter; keys name, ml_per_tick or ticks_per_ml (at most one, a
 * number > 0; neither = default_ml_per_tick), relay_name, and the ghost-filter settings (every
 * section gets 'flags' overridden by [DEFAULT] and then by its own keys). Unknown keys are logged at
 * WARNING. With 'filter_only' (server mode: the server defines the taps) only the filter settings are
 * read, and a section that holds other keys is logged at WARNING ("Taps file entry <meter> ignored:
 * controller <C> uses the legacy API"); its entries carry ml_per_tick 0 and mean nothing else.
 * -ENOENT: no such file (not an error for callers: no preconfigured taps). Any other failure comes
 * with a message in *ret_error ("<file>:<line>: <what>", for a setting "<file>:<line>: <key>:
 * <reason>"). */
int tap_table_load_file(const char *path, double default_ml_per_tick, const FlowSettings *flags, bool filter_only,
                        TapTable **ret, char **ret_error);
/* The same for a taps file held in memory ('name' for messages), without the warnings. */
int tap_table_load_buffer(const char *name, const char *text, size_t len, double default_ml_per_tick,
                          const FlowSettings *flags, TapTable **ret, char **ret_error);
/* The entry of 'meter', NULL if none. */
TapConfig *tap_table_find(const TapTable *t, const char *meter);

typedef enum TapChange {
        TAP_ADDED,
        TAP_UPDATED,
        TAP_REMOVED,
} TapChange;

typedef enum TapSource {
        TAP_SOURCE_FILE,                /* standalone taps file: "Registering new tap: <meter>" */
        TAP_SOURCE_SERVER,              /* server sync: "Adding tap: <meter> ml_per_tick=<x> relay=<r>" */
} TapSource;

typedef void (*TapChangeHandler)(const char *meter, TapChange change, void *userdata);

typedef struct TapRegistry TapRegistry;

/* 'flags': the filter settings of the command line, the base of every tap's. */
int tap_registry_new(TapRegistry **ret, FlowEngine *engine, const FlowSettings *flags, TapChangeHandler handler,
                     void *userdata);
TapRegistry *tap_registry_free(TapRegistry *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(TapRegistry *, tap_registry_free);

/* The current time for the engine calls that need it (a calibration pour ends when its tap is
 * removed); without one, the registry reads the clocks itself. */
typedef void (*TapClockFunc)(FlowTime *ret, void *userdata);
void tap_registry_set_clock(TapRegistry *r, TapClockFunc now, void *userdata);

/* Server mode with both backends (kegboard-event-protocol.md section 1.3): 'local' says whether the
 * taps file and first sight define the tap of 'meter' (an event controller's) or the server's sync
 * does (a legacy controller's). A replace then only touches the taps of its own source: a sync
 * ignores its entries for local meters (DEBUG) and never removes a local tap; a taps file defines no
 * tap of a legacy controller (WARNING when its section holds more than ghost-filter keys) and keeps
 * giving those taps their ghost-filter settings. */
typedef bool (*TapScopeFunc)(const char *meter, void *userdata);
void tap_registry_set_scope(TapRegistry *r, TapScopeFunc local, void *userdata);

/* Makes the configured taps exactly 'table': new meters are added, changed ones updated, configured
 * meters absent from 'table' removed. Taps the engine created on first sight are kept unless
 * 'table' configures them (then they become configured). Each tap gets its settings: its own from
 * the table, else those the last tap_registry_load_settings() read for its meter, else the engine's
 * defaults. Returns the number of changes. */
int tap_registry_replace(TapRegistry *r, const TapTable *table, TapSource source);

/* Standalone start-up and reload: load 'path' and replace. A missing file counts as an empty table
 * (INFO). On a syntax error nothing changes: returns the error (logged at ERROR). Logs
 * "Found N taps, adding to tap manager." (logger main). */
int tap_registry_load_file(TapRegistry *r, const char *path, double default_ml_per_tick);
/* Server mode, start-up and reload: the filter settings of the taps file, for the taps the server
 * gives (applied to the current ones at once). A missing file means the flags alone. On an error
 * the settings in force stay: returns the error (logged at ERROR). */
int tap_registry_load_settings(TapRegistry *r, const char *path);

/* A first-sight tap the engine created (FLOW_EVENT_TAP_CREATED) or forgot with its meter
 * (FLOW_EVENT_TAP_REMOVED): only reported to the handler. */
void tap_registry_note_created(TapRegistry *r, const char *meter);
void tap_registry_note_removed(TapRegistry *r, const char *meter);

/* A calibration (calibration.md section 2.4 step 6): applied to the tap at once (INFO "Updating tap:
 * <meter> ml_per_tick=<x> relay=<r>", TAP_UPDATED) with its new source, which it keeps until a
 * table configures the meter again (reload, sync). A first-sight tap saved in the taps file stops
 * being auto-created. -ENOENT: no such tap. */
int tap_registry_set_calibration(TapRegistry *r, const char *meter, double ml_per_tick, TapCalibrationSource source);
TapCalibrationSource tap_registry_calibration_source(TapRegistry *r, const char *meter);
/* A taps file in memory as a reload would load it: 0 and the tap's ml_per_tick, else -EINVAL and a
 * message (calibration.md section 4.1 step 4). */
int tap_registry_check_text(TapRegistry *r, const char *name, const char *text, size_t len, const char *meter,
                            double *ret_ml_per_tick, char **ret_error);

size_t tap_registry_n_taps(const TapRegistry *r);
