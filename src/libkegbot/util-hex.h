/* Hexadecimal digits: the one place that spells and reads them (tokens, ids, frame dumps). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* The lowercase digit of x & 15. */
char hexchar(unsigned x);
/* The value of a digit of either case, or -EINVAL. */
int unhexchar(char c);
/* s is exactly n digits of either case (and nothing more). */
bool hex_is_valid(const char *s, size_t n);
/* n bytes as 2n lowercase digits, first byte first, NUL-terminated: buf needs 2n + 1 bytes. */
char *hex_encode(const void *p, size_t n, char *buf);
