/* UTF-8 validation, as JSON and D-Bus require it: no overlong forms, no surrogates, nothing past
 * U+10FFFF. Text from outside (files, flags, kegnet, D-Bus, HTTP) is checked once where it enters;
 * every writer of text (the JSON writer) refuses what does not pass. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* Length (1..4) of the well-formed sequence at p, at most n bytes available, or 0 if there is none.
 * With ret_codepoint, the code point. A NUL byte is a sequence of length 1. */
size_t utf8_sequence_length(const char *p, size_t n, uint32_t *ret_codepoint);

/* The whole NUL-terminated string / the n bytes (NUL bytes allowed) are valid UTF-8. NULL is not. */
bool utf8_is_valid(const char *s);
bool utf8_is_valid_n(const char *s, size_t n);
