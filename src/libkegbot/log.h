/* Logging for every program: pycore's line format on the console (stderr) and in an optional
 * log file with midnight rotation; journald priority prefixes when stderr is the journal.
 * Each message carries a logger name (pycore's component names: main, kegnet, flowmanager, ...). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>   /* LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT */

#include "macro.h"

typedef struct LogConfig {
        const char *program;     /* used for the default logfile name "<program>.log" */
        const char *format;      /* --logformat; NULL = the default pycore format */
        bool to_console;         /* --log_to_stdout (the console stream is stderr) */
        bool to_file;            /* --log_to_file */
        const char *logfile;     /* --logfile; NULL/"" = "<program>.log" */
        bool rotate;             /* --rotate_logs */
        int max_files;           /* --maximum_log_files, 0 = keep all */
        bool verbose;            /* --verbose: DEBUG instead of INFO */
} LogConfig;

/* Validates cfg->format (returns -EINVAL with a message in *ret_error, caller frees, on a bad one),
 * opens the log file if asked. Before log_setup() is called, messages go to stderr in the default
 * format at INFO level. */
int log_setup(const LogConfig *cfg, char **ret_error);
/* Re-open the log file (SIGHUP, external rotation). */
int log_reopen(void);
/* Console logging on/off (--daemon turns it off). */
void log_set_console(bool on);
void log_set_max_level(int level);
int log_get_max_level(void);
void log_close(void);

/* Test hook: pretend the wall clock reads this (microseconds since the epoch) for timestamps and
 * midnight rotation; 0 = the real clock. */
void log_set_fake_time(uint64_t realtime_usec);

/* Core entry point. 'error' is an errno (either sign, 0 = none): it is made available to %m in the
 * format, and the function returns -abs(error) (or 0), so that
 *     return log_error_errno(r, "Failed to open %s: %m", path);
 * both logs and propagates. */
int log_internal(int level, int error, const char *logger, const char *format, ...) _printf_(4, 5);

#ifndef LOG_COMPONENT
#define LOG_COMPONENT "main"
#endif

#define log_full_errno(level, error, ...) log_internal((level), (error), LOG_COMPONENT, __VA_ARGS__)
#define log_full(level, ...)       (void) log_full_errno((level), 0, __VA_ARGS__)
#define log_debug(...)             log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)              log_full(LOG_INFO, __VA_ARGS__)
#define log_warning(...)           log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)             log_full(LOG_ERR, __VA_ARGS__)
#define log_critical(...)          log_full(LOG_CRIT, __VA_ARGS__)
#define log_debug_errno(e, ...)    log_full_errno(LOG_DEBUG, (e), __VA_ARGS__)
#define log_info_errno(e, ...)     log_full_errno(LOG_INFO, (e), __VA_ARGS__)
#define log_warning_errno(e, ...)  log_full_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...)    log_full_errno(LOG_ERR, (e), __VA_ARGS__)

/* Explicit logger name, for code that speaks for several components. */
#define log_named(level, logger, ...) (void) log_internal((level), 0, (logger), __VA_ARGS__)
