/* Small string helpers: formatted copies, and the error-message convention of the parsers. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* A malloc'ed, formatted string; NULL if it cannot be built. */
char *strdup_printf(const char *format, ...) _printf_(1, 2);
char *strdup_vprintf(const char *format, va_list ap) _printf_(1, 0);

/* The parsers' error reporting (ini, kegnet, taps file, tokens file): if ret_error is not NULL,
 * *ret_error is replaced by the formatted message (the earlier one is freed; NULL if the message
 * cannot be built). Returns r, so that `return strdup_error(ret_error, -EINVAL, "...")` reports and
 * fails in one. */
int strdup_error(char **ret_error, int r, const char *format, ...) _printf_(3, 4);

/* A name that travels into logs, kegnet frames, files and object paths (meters, relays, devices):
 * not empty, shorter than 'max_len' bytes, no spaces and no control characters. */
bool string_is_name(const char *s, size_t max_len);

/* ' ', '\t', '\r', '\n', '\v' or '\f' (the C locale's isspace(), without the locale). */
bool char_is_blank(char c);
/* A malloc'ed copy of [s, s+n) without the blanks at either end; NULL on ENOMEM. */
char *strndup_trim(const char *s, size_t n);
