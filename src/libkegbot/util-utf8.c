/* UTF-8 validation: see util-utf8.h. */
#include "util-utf8.h"

size_t utf8_sequence_length(const char *s, size_t n, uint32_t *ret_codepoint) {
        const unsigned char *p = (const unsigned char *) s;
        size_t len;
        uint32_t cp;

        if (!s || n == 0)
                return 0;
        if (p[0] < 0x80) {
                len = 1;
                cp = p[0];
        } else if (p[0] >= 0xc2 && p[0] <= 0xdf) {
                len = 2;
                cp = p[0] & 0x1f;
        } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
                len = 3;
                cp = p[0] & 0x0f;
        } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
                len = 4;
                cp = p[0] & 0x07;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                return 0;
        if (ret_codepoint)
                *ret_codepoint = cp;
        return len;
}

bool utf8_is_valid_n(const char *s, size_t n) {
        if (!s)
                return false;
        for (size_t i = 0; i < n;) {
                if ((unsigned char) s[i] < 0x80) {     /* the common case, without the call */
                        i++;
                        continue;
                }
                size_t l = utf8_sequence_length(s + i, n - i, NULL);
                if (l == 0)
                        return false;
                i += l;
        }
        return true;
}

bool utf8_is_valid(const char *s) {
        return s && utf8_is_valid_n(s, strlen(s));
}
