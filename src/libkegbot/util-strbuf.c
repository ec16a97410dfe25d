/* String builder: see util-strbuf.h. */
#include <stdarg.h>

#include "util-strbuf.h"

static int strbuf_grow(StrBuf *b, size_t n) {
        if (b->max > 0 && n > b->max - MIN(b->len, b->max))
                return strbuf_set_error(b, -E2BIG);
        if (n > SIZE_MAX / 2 - b->len)
                return strbuf_set_error(b, -ENOMEM);
        if (b->len + n + 1 <= b->allocated)
                return 0;

        size_t want = MAX(b->allocated * 2, b->len + n + 1);
        want = MAX(want, (size_t) 64);
        char *p = realloc(b->buf, want);
        if (!p)
                return strbuf_set_error(b, -ENOMEM);
        b->buf = p;
        b->allocated = want;
        return 0;
}

int strbuf_append(StrBuf *b, const void *p, size_t n) {
        assert_return(b, -EINVAL);
        assert_return(p || n == 0, strbuf_set_error(b, -EINVAL));

        if (b->error)
                return b->error;
        if (n == 0 && b->buf)
                return 0;
        if (strbuf_grow(b, n) < 0)
                return b->error;
        if (n > 0)
                memcpy(b->buf + b->len, p, n);
        b->len += n;
        b->buf[b->len] = '\0';
        return 0;
}

int strbuf_puts(StrBuf *b, const char *s) {
        assert_return(s, strbuf_set_error(b, -EINVAL));
        return strbuf_append(b, s, strlen(s));
}

int strbuf_putc(StrBuf *b, char c) {
        return strbuf_append(b, &c, 1);
}

int strbuf_printf(StrBuf *b, const char *format, ...) {
        va_list ap;
        int n;

        assert_return(b, -EINVAL);
        assert_return(format, strbuf_set_error(b, -EINVAL));

        if (b->error)
                return b->error;
        /* Try in the room there is; grow once to the exact size if that was not enough. */
        for (int attempt = 0; attempt < 2; attempt++) {
                size_t room = b->allocated > b->len ? b->allocated - b->len : 0;

                va_start(ap, format);
                n = vsnprintf(room > 0 ? b->buf + b->len : NULL, room, format, ap);
                va_end(ap);
                if (n < 0)
                        return strbuf_set_error(b, -EINVAL);
                if ((size_t) n < room) {
                        if (b->max > 0 && b->len + (size_t) n > b->max) {
                                b->buf[b->len] = '\0';
                                return strbuf_set_error(b, -E2BIG);
                        }
                        b->len += (size_t) n;
                        return 0;
                }
                if (strbuf_grow(b, (size_t) n) < 0)
                        return b->error;
        }
        return strbuf_set_error(b, -EINVAL);      /* the arguments changed between two calls */
}

int strbuf_set_error(StrBuf *b, int error) {
        assert_return(b, -EINVAL);

        if (!b->error && error < 0)
                b->error = error;
        return b->error;
}

const char *strbuf_str(const StrBuf *b) {
        return b && b->buf ? b->buf : "";
}

void strbuf_reset(StrBuf *b) {
        if (!b)
                return;
        b->len = 0;
        b->error = 0;
        if (b->buf)
                b->buf[0] = '\0';
}

int strbuf_take(StrBuf *b, char **ret, size_t *ret_len) {
        int r;

        assert_return(b, -EINVAL);
        assert_return(ret, -EINVAL);

        r = strbuf_append(b, "", 0);            /* an empty buffer still hands over "" */
        if (r < 0) {
                strbuf_done(b);
                return r;
        }
        *ret = TAKE_PTR(b->buf);
        if (ret_len)
                *ret_len = b->len;
        *b = (StrBuf) { .max = b->max };
        return 0;
}

void strbuf_done(StrBuf *b) {
        if (!b)
                return;
        free(b->buf);
        *b = (StrBuf) { .max = b->max };
}
