/* INI files in the dialect of Python 2's SafeConfigParser (programs-and-flags.md §13.2): sections in
 * file order, [DEFAULT] inheritance and %(name)s interpolation. Used for kegbot_master's config and
 * the core's standalone taps file. Pure: no logging; every error comes back as "<file>:<line>: <what>". */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define INI_DEFAULT_SECTION "DEFAULT"
/* Python's MAX_INTERPOLATION_DEPTH: a chain of 10 references resolves, an 11th is an error. */
#define INI_MAX_INTERPOLATION_DEPTH 10

typedef struct IniKey {
        char *key;              /* lower-cased */
        char *value;            /* raw, before interpolation; continuation lines joined with '\n' */
        unsigned line;          /* line of the key in the file; 0 for built-ins */
} IniKey;

typedef struct IniSection {
        char *name;             /* trimmed, case kept */
        unsigned line;          /* line of the first header; 0 for built-ins */
        IniKey *keys;           /* own keys in first-appearance order (a repeated key keeps its place) */
        size_t n_keys;
} IniSection;

typedef struct Ini {
        char *name;                     /* file name used in messages */
        IniSection **sections;          /* every section but [DEFAULT], in file order */
        size_t n_sections;
        IniSection *defaults;           /* the file's [DEFAULT] (always allocated, may be empty) */
        IniSection *builtin_defaults;   /* ini_set_builtin_default(); the file's [DEFAULT] overrides these */
        IniSection *variables;          /* ini_set_variable(); looked up last */
        bool unique_sections;           /* ini_set_unique_sections() */
} Ini;

/* An empty Ini. 'name' (may be NULL: "<ini>") names the file in messages until a parse sets it. */
int ini_new(Ini **ret, const char *name);
Ini *ini_free(Ini *ini);
DEFINE_TRIVIAL_CLEANUP_FUNC(Ini *, ini_free);

/* Built-in layers, set before parsing (or any time before lookups). A built-in variable is visible to
 * interpolation only (after section and [DEFAULT]); a built-in default behaves like a key of the file's
 * [DEFAULT] that the file can override. Names are lower-cased. A later call replaces the value. */
int ini_set_variable(Ini *ini, const char *name, const char *value);
int ini_set_builtin_default(Ini *ini, const char *key, const char *value);

/* A repeated section header is an error naming both lines, instead of continuing the earlier
 * section (files of this project where a repeat is a mistake, e.g. the tokens file: a second
 * [core.rfid:<token>] silently replaced the first one's user). Set before parsing. */
void ini_set_unique_sections(Ini *ini, bool unique);

/* Parse into 'ini' (adds to what is already there; a repeated section continues the earlier one
 * unless ini_set_unique_sections()). A UTF-8 byte order mark at the start is an error naming it.
 * On failure returns a negative errno and, if ret_error is not NULL, a message the caller frees:
 * -ENOENT (and other open/read errors) "<path>: <strerror>", -EINVAL "<name>:<line>: <what>",
 * -ENOMEM. On a syntax error 'ini' keeps what was parsed before the bad line; callers that need
 * all-or-nothing parse into a fresh Ini. The buffer may hold any bytes (a NUL, or a line that is
 * not valid UTF-8, is an error naming the line). */
int ini_parse_file(Ini *ini, const char *path, char **ret_error);
int ini_parse_buffer(Ini *ini, const char *name, const char *data, size_t size, char **ret_error);

/* Convenience: ini_new() + ini_parse_file(). */
int ini_load_file(Ini **ret, const char *path, char **ret_error);

/* Sections: NULL if absent. Section names are case-sensitive; "DEFAULT" gives the file's [DEFAULT]. */
const IniSection *ini_find_section(const Ini *ini, const char *section);
bool ini_has_section(const Ini *ini, const char *section);

/* Every key visible in 'section' (own, then the file's [DEFAULT], then built-in defaults; each key once,
 * in that order), as a NULL-terminated list of borrowed pointers (free the array only).
 * -ENOENT if there is no such section. Built-in variables are not keys. */
int ini_section_keys(const Ini *ini, const char *section, const char ***ret_keys, size_t *ret_n);

/* Raw value (no interpolation) as seen from 'section': own key, then [DEFAULT], then built-in defaults.
 * 'key' is matched case-insensitively. NULL if absent (or no such section). */
const char *ini_get_raw(const Ini *ini, const char *section, const char *key);

/* Interpolated value. -ENOENT: no such section or key; -EINVAL: interpolation error (bad '%',
 * unknown name, too deep, result too large); -ENOMEM. With ret_error, a message on every failure;
 * interpolation errors name the line of the key whose value holds the faulty reference. */
int ini_get(const Ini *ini, const char *section, const char *key, char **ret_value, char **ret_error);

/* ini_get() then ini_parse_boolean(); a value that is not a boolean is -EINVAL with a message. */
int ini_get_boolean(const Ini *ini, const char *section, const char *key, bool *ret, char **ret_error);

/* Python's ConfigParser booleans, case-insensitive: 1/yes/true/on -> 1, 0/no/false/off -> 0,
 * else -EINVAL. */
int ini_parse_boolean(const char *s);
