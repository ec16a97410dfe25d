/* Log escaping: see util-escape.h. */
#include "util-escape.h"
#include "util-strbuf.h"
#include "util-utf8.h"

static bool codepoint_needs_escape(uint32_t cp) {
        return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
               (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

static char *escape(const char *s, size_t n, bool backslash) {
        StrBuf b = STRBUF_INIT;
        char *ret;

        if (!s)
                return strdup("(null)");
        for (size_t i = 0; i < n;) {
                unsigned char c = (unsigned char) s[i];
                uint32_t cp;
                size_t l;

                if (c >= 0x20 && c < 0x7f) {
                        if (c == '\\' && backslash)
                                strbuf_puts(&b, "\\\\");
                        else
                                strbuf_putc(&b, (char) c);
                        i++;
                        continue;
                }
                switch (c) {
                case '\n': strbuf_puts(&b, "\\n"); i++; continue;
                case '\r': strbuf_puts(&b, "\\r"); i++; continue;
                case '\t': strbuf_puts(&b, "\\t"); i++; continue;
                }
                l = c >= 0x80 ? utf8_sequence_length(s + i, n - i, &cp) : 0;
                if (l == 0) {
                        strbuf_printf(&b, "\\x%02x", c);
                        i++;
                } else if (codepoint_needs_escape(cp)) {
                        strbuf_printf(&b, "\\u{%04x}", (unsigned) cp);
                        i += l;
                } else {
                        strbuf_append(&b, s + i, l);
                        i += l;
                }
        }
        if (strbuf_take(&b, &ret, NULL) < 0)
                return NULL;
        return ret;
}

char *escape_for_log_n(const char *s, size_t n) {
        return escape(s, n, true);
}

char *escape_for_log(const char *s) {
        return escape_for_log_n(s, s ? strlen(s) : 0);
}

char *escape_for_log_line(const char *s) {
        return escape(s, s ? strlen(s) : 0, false);
}
