/* gflags-compatible flags (programs-and-flags.md section 1): flag tables, --flagfile, --undefok,
 * environment defaults, help rendering. Programs use app_init() (app.h); the parser itself never
 * exits nor prints (except the circular-flagfile warning), so tests and the fuzzer call it directly. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util-strv.h"

typedef enum FlagType {
        FLAG_TYPE_BOOL,
        FLAG_TYPE_INT,          /* int */
        FLAG_TYPE_INT64,        /* int64_t */
        FLAG_TYPE_DOUBLE,
        FLAG_TYPE_STRING,       /* const char *, storage owned by the flags module */
} FlagType;

typedef enum FlagEnvMode {
        FLAG_ENV_VALUE,         /* the variable's value (bool flags: set at all, even empty = true) */
        FLAG_ENV_FIRST_ENTRY,   /* first ':'-separated entry, as systemd's STATE_DIRECTORY= lists */
} FlagEnvMode;

typedef struct FlagDef {
        const char *name;
        FlagType type;
        union {
                bool *b;
                int *i;
                int64_t *i64;
                double *d;
                const char **s;
        } v;
        const char *help;

        /* Bounds: checked on every assignment and rendered as the third help line. */
        bool has_min, has_max;
        int64_t imin, imax;
        double dmin, dmax;
        bool dmin_exclusive;            /* "> dmin" instead of ">= dmin" */

        const char *const *choices;     /* string flags: NULL-terminated list of accepted values */

        /* Environment default, applied by flags_apply_env() before parsing. An empty value is
         * ignored (except for bool flags, where being set at all means true). */
        const char *env;
        FlagEnvMode env_mode;
        const char *env_suffix;         /* appended to the value taken from the environment */
} FlagDef;

/* Flag table entries. 'p' is the address of the variable that holds the default and receives the
 * value; its type is checked by the compiler. Extra designated initializers may follow the help
 * text, e.g.  FLAG_STRING("state_dir", &arg_state_dir, "...", .env = "STATE_DIRECTORY",
 * .env_mode = FLAG_ENV_FIRST_ENTRY). A table ends with FLAG_END. */
#define FLAG_BOOL(n, p, h, ...)   { .name = (n), .type = FLAG_TYPE_BOOL, .v.b = (p), .help = (h), __VA_ARGS__ }
#define FLAG_STRING(n, p, h, ...) { .name = (n), .type = FLAG_TYPE_STRING, .v.s = (p), .help = (h), __VA_ARGS__ }
/* A string restricted to a NULL-terminated list: FLAG_ENUM("dbus", &arg_dbus,
 * ((const char *const[]) { "system", "session", "none", NULL }), "...") */
#define FLAG_ENUM(n, p, c, h, ...) \
        { .name = (n), .type = FLAG_TYPE_STRING, .v.s = (p), .choices = (c), .help = (h), __VA_ARGS__ }

#define FLAG_INT(n, p, h, ...)    { .name = (n), .type = FLAG_TYPE_INT, .v.i = (p), .help = (h), __VA_ARGS__ }
/* Inclusive bounds; a bound equal to the type's extreme (INT_MAX, INT64_MAX, ...) means "none",
 * so FLAG_INT_RANGE(.., 0, INT_MAX, ..) renders as "(a non-negative integer)". */
#define FLAG_INT_RANGE(n, p, lo, hi, h, ...) \
        { .name = (n), .type = FLAG_TYPE_INT, .v.i = (p), .has_min = true, .imin = (lo), \
          .has_max = true, .imax = (hi), .help = (h), __VA_ARGS__ }
#define FLAG_INT_MIN(n, p, lo, h, ...) FLAG_INT_RANGE(n, p, lo, INT_MAX, h, __VA_ARGS__)

#define FLAG_INT64(n, p, h, ...)  { .name = (n), .type = FLAG_TYPE_INT64, .v.i64 = (p), .help = (h), __VA_ARGS__ }
#define FLAG_INT64_RANGE(n, p, lo, hi, h, ...) \
        { .name = (n), .type = FLAG_TYPE_INT64, .v.i64 = (p), .has_min = true, .imin = (lo), \
          .has_max = true, .imax = (hi), .help = (h), __VA_ARGS__ }
#define FLAG_INT64_MIN(n, p, lo, h, ...) FLAG_INT64_RANGE(n, p, lo, INT64_MAX, h, __VA_ARGS__)

#define FLAG_DOUBLE(n, p, h, ...) { .name = (n), .type = FLAG_TYPE_DOUBLE, .v.d = (p), .help = (h), __VA_ARGS__ }
/* Inclusive bounds: "(a number in the range [0, 60])". */
#define FLAG_DOUBLE_RANGE(n, p, lo, hi, h, ...) \
        { .name = (n), .type = FLAG_TYPE_DOUBLE, .v.d = (p), .has_min = true, .dmin = (lo), \
          .has_max = true, .dmax = (hi), .help = (h), __VA_ARGS__ }
/* ">= lo": "(a non-negative number)" for 0, else "(a number >= lo)". */
#define FLAG_DOUBLE_MIN(n, p, lo, h, ...) \
        { .name = (n), .type = FLAG_TYPE_DOUBLE, .v.d = (p), .has_min = true, .dmin = (lo), \
          .help = (h), __VA_ARGS__ }
/* "> 0": "(a positive number)". */
#define FLAG_DOUBLE_POSITIVE(n, p, h, ...) \
        { .name = (n), .type = FLAG_TYPE_DOUBLE, .v.d = (p), .has_min = true, .dmin = 0, \
          .dmin_exclusive = true, .help = (h), __VA_ARGS__ }

#define FLAG_END { .name = NULL }

/* A named component: help lists groups in the order given to the parser. */
typedef struct FlagGroup {
        const char *name;
        const FlagDef *flags;           /* ends with FLAG_END; NULL = no flags */
} FlagGroup;

/* Positive results of flags_parse(). */
enum {
        FLAGS_OK = 0,
        FLAGS_HELP = 1,                 /* --help or -? was given */
        FLAGS_HELPSHORT = 2,            /* --helpshort was given */
};

/* Apply the environment defaults declared in the tables (.env). Call before flags_parse(). A value
 * that does not parse (e.g. an integer flag) is an error: -EINVAL, message in *ret_error. */
int flags_apply_env(const FlagGroup *groups, size_t n_groups, char **ret_error);

/* Parse argv[1..argc-1]. Snapshots the current values as the defaults shown by help, then assigns.
 * Returns FLAGS_OK, FLAGS_HELP or FLAGS_HELPSHORT, or a negative errno with a message (without the
 * "Error: " prefix) in *ret_error (caller frees). *ret_positional (optional; NULL-terminated, caller
 * frees with strv_free) receives the first positional argument and everything after it. */
int flags_parse(const FlagGroup *groups, size_t n_groups, int argc, char *const *argv,
                char ***ret_positional, char **ret_error);

/* flags_parse() with --flagfile optionally forbidden (an error instead of opening a file): the
 * fuzzer must not read arbitrary paths. */
int flags_parse_full(const FlagGroup *groups, size_t n_groups, int argc, char *const *argv,
                     bool allow_include, char ***ret_positional, char **ret_error);

/* flags_parse() for programs whose flags may follow their positional arguments (a command and its
 * operands, as kegbot_calibrate has): every argument before "--" that starts with '-' is a flag, the
 * others are collected, in order, as positional arguments. */
int flags_parse_interspersed(const FlagGroup *groups, size_t n_groups, int argc, char *const *argv,
                             char ***ret_positional, char **ret_error);

/* Parse a flag file held in memory, exactly as --flagfile would (one argument per line, comments,
 * nesting). With allow_include false a nested --flagfile is an error instead of opening a file
 * (the fuzzer uses that). Positional lines are an error. */
int flags_parse_buffer(const FlagGroup *groups, size_t n_groups, const char *buf, size_t len,
                       bool allow_include, char **ret_error);

/* The help text of section 1.1: groups in the order given, then "gflags". short_help (--helpshort):
 * only groups[0], the program's own. */
void flags_print_help(FILE *f, const char *program, const char *description,
                      const FlagGroup *groups, size_t n_groups, bool short_help);

/* Whether the flag was assigned on the command line or in a flag file (not by the environment). */
bool flags_given(const char *name);

/* Undo everything: every flag touched by flags_apply_env()/flags_parse() gets back the value it
 * had before, the strings the module allocated are freed and the parse state is forgotten
 * (tests, the fuzzer). */
void flags_reset(void);
