/* Hexadecimal digits: see util-hex.h. */
#include "util-hex.h"

char hexchar(unsigned x) {
        static const char digits[16] = "0123456789abcdef";
        return digits[x & 15];
}

int unhexchar(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -EINVAL;
}

bool hex_is_valid(const char *s, size_t n) {
        if (!s || strlen(s) != n)
                return false;
        for (size_t i = 0; i < n; i++)
                if (unhexchar(s[i]) < 0)
                        return false;
        return true;
}

char *hex_encode(const void *p, size_t n, char *buf) {
        const unsigned char *b = p;

        assert_return(p || n == 0, NULL);
        assert_return(buf, NULL);

        for (size_t i = 0; i < n; i++) {
                buf[2 * i] = hexchar(b[i] >> 4);
                buf[2 * i + 1] = hexchar(b[i]);
        }
        buf[2 * n] = '\0';
        return buf;
}
