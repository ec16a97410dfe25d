/* kegbot_master's apps (programs-and-flags.md §12): the config file turned into one command line per
 * enabled app, and the start / stop / status / configtest operations on them. The command runs under
 * /bin/sh -c and each app daemonizes itself; its pidfile is all kegbot_master knows of it. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "macro.h"

typedef struct MasterApp {
        char *name;             /* section name */
        char *program;          /* program word: _program_name without a trailing ".py" */
        char **flags;           /* "--key=value" / "--key", sorted as byte strings, NULL-terminated */
        size_t n_flags;
        char *pidfile;          /* the interpolated "pidfile" key ("" if the app has none) */
        unsigned line;          /* line of the section header, for messages */
} MasterApp;

typedef struct MasterConfig {
        char *path;
        MasterApp *apps;        /* enabled apps, in file order */
        size_t n_apps;
        char *self_dir;         /* directory of kegbot_master's own executable ("" if unknown) */
} MasterConfig;

MasterConfig *master_config_free(MasterConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(MasterConfig *, master_config_free);

/* Load the config (§12.1): built-in variables and [DEFAULT], then the file. A missing file is an
 * empty config (WARNING). Config errors are logged as "<file>:<line>: <what>" and return -EINVAL. */
int master_config_load(const char *path, const char *logfile_dir, const char *pidfile_dir,
                       MasterConfig **ret);

/* "<program> <flag> <flag>..." on one line (what start runs and logs). */
char *master_app_command(const MasterApp *app);

typedef enum MasterAppState {
        MASTER_APP_RUNNING,     /* pidfile present, the process is alive and is the app */
        MASTER_APP_DIED,        /* pidfile present, process gone (or its pid now belongs to another
                                 * process: that stale pidfile is removed, with a WARNING) */
        MASTER_APP_STOPPED,     /* no pidfile */
        MASTER_APP_UNKNOWN,     /* pidfile unreadable or not a pid */
} MasterAppState;

/* A live pid counts as the app only if /proc shows the app's program (its executable, or the
 * script an interpreter runs) and a process that started before its pidfile was written (or that
 * names this pidfile on its command line, whatever the clock did since). */
MasterAppState master_app_state(const MasterConfig *c, const MasterApp *app, pid_t *ret_pid);

/* Find the program: a word containing '/' is used as is; else kegbot_master's own directory, then
 * each PATH entry. Returns the path of an executable regular file, or -ENOENT. */
int master_find_program(const MasterConfig *c, const char *program, char **ret_path);

/* The commands; each returns 0 on success, a negative errno if any app failed (already logged). */
int master_configtest(const MasterConfig *c, FILE *out);
int master_status(const MasterConfig *c, FILE *out);
int master_start(const MasterConfig *c);
int master_stop(const MasterConfig *c);
