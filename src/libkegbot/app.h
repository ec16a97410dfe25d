/* The one start-up call every program makes: environment defaults, flags (its own table plus the
 * shared groups of programs-and-flags.md section 2.1 and the common "app" group of section 2),
 * help and flag errors (exit 1), logging, --daemon and --pidfile. Accessors for the shared flags. */
#pragma once

#include <stdbool.h>

#include "daemon.h"
#include "macro.h"
#include "flags.h"

typedef enum AppGroup {
        APP_GROUP_KEGNET   = 1 << 0,    /* --kb_core_addr */
        APP_GROUP_API      = 1 << 1,    /* --api_url, --api_key, --api_key_file, --api_timeout */
        APP_GROUP_KEGBOARD = 1 << 2,    /* --kegboard_device, --kegboard_device_path, --kegboard_speed */
} AppGroup;

typedef struct AppInfo {
        const char *name;               /* program name: help group, USAGE line, default logfile */
        const char *description;        /* one paragraph, first thing --help prints */
        const FlagDef *flags;           /* the program's own table (ends with FLAG_END), or NULL */
        unsigned groups;                /* AppGroup bits */
        bool positional_args;           /* false: any positional argument is a flag error */
        bool interspersed_flags;        /* flags may also follow positional arguments (a command's) */
        /* A short-lived command-line client: of the common flags only --verbose (no daemon, pidfile
         * or log-file flags); log lines go to stderr. */
        bool client;
        const char *startup_message;    /* if set, logged at INFO (logger "main") as soon as logging
                                         * is up, before --daemon (e.g. "Kegbot is starting up.") */
} AppInfo;

/* Call first thing in main(), before creating an sd_event or opening anything (--daemon forks).
 * In order: environment defaults; flag parsing (help: stdout, exit 1; error: "Usage: <argv0>
 * [flags]", blank line, "Error: <msg>" on stderr, exit 1); --kegboard_speed=1200 refused;
 * logging set up from the common flags; startup_message; --pidfile checked (conflict: exit 1);
 * --daemon (the original process exits 0 once the background process is running, or 1 if it
 * failed); the pidfile written (removed again at exit); --api_key_file read (unreadable: exit 1).
 * Never returns on failure: it returns 0. *ret_positional (may be NULL only if positional_args is
 * false) gets the positional arguments, NULL-terminated, free with strv_free(). */
int app_init(int argc, char **argv, const AppInfo *info, char ***ret_positional);

/* Orderly end of main(): removes the pidfile (only in the process that wrote it). Safe to call more
 * than once; an atexit() handler does the same if the program exits another way. */
void app_finish(void);

/* Print "Usage: <argv0> [flags]", a blank line and "Error: <message>" on stderr and exit 1: for
 * checks a program makes on its own flags after app_init() (e.g. test_flow's --auth_token). */
_noreturn_ void app_flag_error(const char *format, ...) _printf_(1, 2);

/* Common flags (section 2). */
bool app_verbose(void);
bool app_daemon(void);
const char *app_pidfile(void);          /* "" = none */

/* kegnet group. */
const char *app_kb_core_addr(void);     /* "host:port" or "port" as given */

/* API group. app_api_key() is the effective key: the --api_key_file contents (whitespace stripped)
 * if that flag was given, else --api_key. */
const char *app_api_url(void);          /* "" = no server */
const char *app_api_key(void);
double app_api_timeout(void);           /* seconds, > 0 */

/* kegboard group. app_kegboard_device() is --kegboard_device_path if non-empty, else
 * --kegboard_device; "" means auto-detect (the program's job). */
const char *app_kegboard_device(void);
int app_kegboard_speed(void);
