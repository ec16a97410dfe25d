/* Standalone mode's local storage (core-behaviour.md section 10.6): the drinks log (a DrinkSink
 * appending JSON lines with fsync), the thermo log (recorded readings, JSON lines), and the optional
 * tokens file that stands in for the server's auth-token lookups. */
#pragma once

#include <systemd/sd-event.h>

#include <stdbool.h>
#include <stdint.h>

#include "drinks.h"
#include "macro.h"

/* <state_dir>/drinks.log. Creates state_dir (0750) if needed, cuts a torn last line (ERROR) and
 * takes drink_id = 1 + the last valid line's drink_id. Errors are logged. */
/* The standalone drinks log. An append that fails (disk full, I/O error) does not lose the drink:
 * it is held in memory, in order, retried every retry_usec on 'event', and reported through the
 * sink's 'created' callback once written; later drinks queue behind it. */
int drinks_log_new(DrinkSink **ret, const char *state_dir, sd_event *event, uint64_t retry_usec);
/* The next drink_id the log will assign (tests). */
int64_t drinks_log_next_id(DrinkSink *s);

/* One drinks.log line without the newline (also used by tests). malloc'ed. */
int drinks_log_format_line(const Drink *d, int64_t drink_id, char **ret);

typedef struct ThermoLog ThermoLog;

/* <state_dir>/thermo.log: one JSON line per recorded reading, no fsync (readings are not precious). */
int thermo_log_new(ThermoLog **ret, const char *state_dir);
ThermoLog *thermo_log_free(ThermoLog *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(ThermoLog *, thermo_log_free);
int thermo_log_append(ThermoLog *l, const char *sensor, double value_c, uint64_t realtime);
int thermo_log_reopen(ThermoLog *l);

/* Tokens file (INI), one section per token named "<auth_device>:<token_value>":
 *
 *     [core.rfid:0415ab23cd]
 *     username = mikey
 *     enabled = true          ; optional, default true
 *
 * Values of core.onewire and core.rfid are matched case-insensitively (normalised like the wire). */
typedef struct TokenDb TokenDb;

typedef enum TokenLookup {
        TOKEN_NOT_ASSIGNED,
        TOKEN_DISABLED,
        TOKEN_OK,
} TokenLookup;

/* -ENOENT when the file does not exist; other errors with a message in *ret_error. */
int token_db_load(const char *path, TokenDb **ret, char **ret_error);
TokenDb *token_db_free(TokenDb *db);
DEFINE_TRIVIAL_CLEANUP_FUNC(TokenDb *, token_db_free);
size_t token_db_size(const TokenDb *db);
/* *ret_username (for TOKEN_OK) is borrowed from the db. */
TokenLookup token_db_lookup(const TokenDb *db, const char *device, const char *value, const char **ret_username);
