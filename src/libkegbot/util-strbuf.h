/* The one string builder: a growable, always NUL-terminated string (JSON writer, log lines, INI
 * interpolation). A failure is sticky: after the first one (-ENOMEM, or -E2BIG past 'max') appends
 * do nothing, the text so far stays valid, and strbuf_take() returns the error. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

typedef struct StrBuf {
        char *buf;              /* NULL until the first append */
        size_t len;             /* bytes held, the NUL not counted */
        size_t allocated;
        size_t max;             /* longest content allowed, 0 = no limit */
        int error;              /* first failure (negative errno), 0 = none */
} StrBuf;

#define STRBUF_INIT ((StrBuf) {})

/* Each returns the buffer's (sticky) error: 0 while all is well. */
int strbuf_append(StrBuf *b, const void *p, size_t n);
int strbuf_puts(StrBuf *b, const char *s);
int strbuf_putc(StrBuf *b, char c);
int strbuf_printf(StrBuf *b, const char *format, ...) _printf_(2, 3);
/* Records an error of the caller's (e.g. -EINVAL for text it refused) unless one is already set. */
int strbuf_set_error(StrBuf *b, int error);

/* The text so far ("" before the first append); valid until the next append. */
const char *strbuf_str(const StrBuf *b);
/* Forget the content, keep the memory (and clear the error). */
void strbuf_reset(StrBuf *b);

/* Hands the string over (never NULL on success, "" if nothing was appended) and resets the buffer.
 * On a recorded error the memory is freed, nothing is handed over and the error is returned. */
int strbuf_take(StrBuf *b, char **ret, size_t *ret_len);
void strbuf_done(StrBuf *b);
