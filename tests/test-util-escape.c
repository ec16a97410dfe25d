/* Unit tests of log escaping (util-escape.h): the result is one line of valid UTF-8, whatever the
 * input held. */
#include "test-util.h"
#include "util-escape.h"
#include "util-utf8.h"

static void check_escape(const char *in, const char *expect) {
        _cleanup_(freep) char *e = escape_for_log(in);

        check_streq(e, expect);
        check(e && utf8_is_valid(e) && !strpbrk(e, "\n\r"));
}

static void test_escape(void) {
        check_escape("mikey", "mikey");
        check_escape("", "");
        check_escape(NULL, "(null)");
        check_escape("caf\xe9", "caf\\xe9");
        check_escape("caf\xc3\xa9 \xf0\x9f\x8d\xba", "caf\xc3\xa9 \xf0\x9f\x8d\xba");
        check_escape("a\nb\rc\td", "a\\nb\\rc\\td");
        check_escape("x\\y", "x\\\\y");                /* a backslash cannot fake an escape */
        check_escape("\x01\x1b[31m\x7f", "\\x01\\x1b[31m\\x7f");
        check_escape("\xc2\x85", "\\u{0085}");                          /* NEL, a C1 control */
        check_escape("a\xe2\x80\xa8z", "a\\u{2028}z");                  /* line separator */
        check_escape("\xe2\x80\xae" "evil", "\\u{202e}evil");              /* right-to-left override */
        check_escape("\xed\xa0\x80", "\\xed\\xa0\\x80");                /* a surrogate is no text */
        check_escape("\xf0\x9f\x8d", "\\xf0\\x9f\\x8d");                /* a cut sequence */

        _cleanup_(freep) char *n = escape_for_log_n("a\0b", 3);
        check_streq(n, "a\\x00b");

        /* What the log does to a whole message: backslashes (of text escaped already) stay. */
        _cleanup_(freep) char *l = escape_for_log_line("HTTP 404 A\\nB: x\ny\xff \xe2\x80\xa8");
        check_streq(l, "HTTP 404 A\\nB: x\\ny\\xff \\u{2028}");
        check(l && utf8_is_valid(l) && !strpbrk(l, "\n\r"));
}

int main(void) {
        test_run(test_escape);
        return test_result();
}
