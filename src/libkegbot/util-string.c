/* String helpers: see util-string.h. */
#include "util-string.h"

char *strdup_vprintf(const char *format, va_list ap) {
        char *s;

        assert_return(format, NULL);

        if (vasprintf(&s, format, ap) < 0)
                return NULL;
        return s;
}

char *strdup_printf(const char *format, ...) {
        va_list ap;
        char *s;

        va_start(ap, format);
        s = strdup_vprintf(format, ap);
        va_end(ap);
        return s;
}

bool string_is_name(const char *s, size_t max_len) {
        size_t n = 0;

        if (isempty(s))
                return false;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++, n++)
                if (*p <= ' ' || *p == 0x7f || n + 1 >= max_len)
                        return false;
        return true;
}

int strdup_error(char **ret_error, int r, const char *format, ...) {
        va_list ap;

        if (!ret_error)
                return r;
        free(*ret_error);
        va_start(ap, format);
        *ret_error = strdup_vprintf(format, ap);
        va_end(ap);
        return r;
}

bool char_is_blank(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

char *strndup_trim(const char *s, size_t n) {
        while (n > 0 && char_is_blank(*s)) {
                s++;
                n--;
        }
        while (n > 0 && char_is_blank(s[n - 1]))
                n--;
        return strndup(s, n);
}
