/* Standalone mode's drink sink (core-behaviour.md section 10.6): <state_dir>/drinks.log, JSON Lines,
 * one line per drink appended (O_APPEND) and fsync'ed before the flow is reported completed; then
 * the drink is announced.
 *
 * drink_id is never handed out twice. At start-up the next one is 1 + the highest drink_id of ANY
 * line of the file (1 for an empty file), read from each line as text ("drink_id":<n> as a member
 * of the line's object) rather than by parsing the line as JSON: a line that does not parse (written
 * by an older version that did not check UTF-8, damaged, edited by hand) still holds its number.
 * Lines written by this version are always valid JSON: the JSON writer refuses text that is not
 * UTF-8, and such text cannot enter the core in the first place.
 *
 * An append that fails (disk full, I/O error) leaves no partial line behind and returns the error:
 * the manager holds the drink and tries again (drink-sink.h). */
#pragma once

#include <stdint.h>

#include "drink-sink.h"

/* Creates state_dir (0750) if needed, cuts a torn last line (ERROR: that drink was never reported
 * completed) and finds the next drink_id. Errors are logged. */
int drinks_log_new(DrinkSink **ret, const char *state_dir);
/* The next drink_id the log will assign (tests). */
int64_t drinks_log_next_id(DrinkSink *s);

/* One drinks.log line without the newline (also used by tests). malloc'ed. -EINVAL if the drink's
 * text is not valid UTF-8. */
int drinks_log_format_line(const Drink *d, int64_t drink_id, char **ret);
