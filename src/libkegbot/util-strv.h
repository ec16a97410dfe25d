/* NULL-terminated arrays of malloc'ed strings ("strv", as systemd calls them). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* for (each string s of l): l may be NULL. */
#define STRV_FOREACH(s, l) for (char **s = (l); s && *s; s++)
/* Two strings at a time ("key", "value", ...): l has an even length. */
#define STRV_FOREACH_PAIR(a, b, l) \
        for (char **_p = (l), *a = _p ? _p[0] : NULL, *b = a ? _p[1] : NULL; a && b; \
             _p += 2, a = _p[0], b = a ? _p[1] : NULL)

/* Frees every string and the array; NULL is fine. Returns NULL. */
char **strv_free(char **l);
static inline void strv_freep(char ***l) { strv_free(*l); }

size_t strv_length(char *const *l);
bool strv_contains(char *const *l, const char *s);

/* Appends 's', taking it over (also on failure, when it is freed); s == NULL means its allocation
 * failed: -ENOMEM. 'n' (may be NULL) caches the length so that building a long list stays linear.
 * The list is NULL-terminated after every successful call. */
int strv_push(char ***l, size_t *n, char *s);
/* As strv_push() with a copy of 's'. */
int strv_extend(char ***l, size_t *n, const char *s);
/* Removes (and frees) the first entry equal to s from a list of *n entries; whether there was one. */
bool strv_remove(char **l, size_t *n, const char *s);

/* Splits 's' at any of 'separators'; empty fields are dropped. *ret is never NULL on success
 * (an empty list for a string of separators only). */
int strv_split(const char *s, const char *separators, char ***ret);
