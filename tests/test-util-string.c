/* Unit tests of the string helpers (util-string.h). */
#include "test-util.h"
#include "util-string.h"

static void test_printf(void) {
        _cleanup_(freep) char *a = strdup_printf("%s:%u: %s", "t.ini", 3u, "not valid UTF-8");
        _cleanup_(freep) char *b = strdup_printf("%s", "");

        check_streq(a, "t.ini:3: not valid UTF-8");
        check_streq(b, "");
}

static void test_error(void) {
        char *e = NULL;

        check_int(strdup_error(&e, -EINVAL, "first %d", 1), -EINVAL);
        check_streq(e, "first 1");
        /* A later message replaces the earlier one (no leak: the test runs under ASan too). */
        check_int(strdup_error(&e, -ENOENT, "%s", "second"), -ENOENT);
        check_streq(e, "second");
        free(e);
        /* Without a place for the message, only the code. */
        check_int(strdup_error(NULL, -E2BIG, "ignored %s", "text"), -E2BIG);
}

static void test_is_name(void) {
        check(string_is_name("kegboard.flow0", 256));
        check(string_is_name("abc", 4));                /* 3 bytes fit below 4 */
        check(!string_is_name("abcd", 4));
        check(!string_is_name("", 256));
        check(!string_is_name(NULL, 256));
        check(!string_is_name("kegboard flow0", 256));
        check(!string_is_name("a\tb", 256));
        check(!string_is_name("a\x7f", 256));
        check(string_is_name("fl\xc3\xbcss", 256));    /* UTF-8 is checked where text enters, not here */
}

static void test_trim(void) {
        _cleanup_(freep) char *a = strndup_trim(" \t kegboard = legacy \r\n", 22);
        _cleanup_(freep) char *b = strndup_trim("   ", 3);
        _cleanup_(freep) char *c = strndup_trim("ab cd", 3);   /* only the first n bytes */

        check_streq(a, "kegboard = legacy");
        check_streq(b, "");
        check_streq(c, "ab");
        check(char_is_blank('\v') && char_is_blank('\f') && !char_is_blank('x') && !char_is_blank('\0'));
}

int main(void) {
        test_run(test_printf);
        test_run(test_error);
        test_run(test_is_name);
        test_run(test_trim);
        return test_result();
}
