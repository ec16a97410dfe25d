/* Unit tests of the string builder (util-strbuf.h): appends, printf in and beyond the room there
 * is, the size limit, sticky errors and handing the string over. */
#include "test-util.h"
#include "util-strbuf.h"

static void test_append(void) {
        StrBuf b = STRBUF_INIT;
        char *s = NULL;
        size_t n = 0;

        check_streq(strbuf_str(&b), "");
        check_int(strbuf_puts(&b, "abc"), 0);
        check_int(strbuf_putc(&b, '-'), 0);
        check_int(strbuf_append(&b, "xyz", 2), 0);
        check_int(strbuf_append(&b, NULL, 0), 0);
        check_streq(strbuf_str(&b), "abc-xy");
        check_int(b.len, 6);
        /* Binary content keeps its NUL bytes; the terminator is there too. */
        check_int(strbuf_append(&b, "\0q", 2), 0);
        check_int(b.len, 8);
        check(b.buf[6] == '\0' && b.buf[7] == 'q' && b.buf[8] == '\0');
        check_int(strbuf_take(&b, &s, &n), 0);
        check_int(n, 8);
        check(s && memcmp(s, "abc-xy\0q", 9) == 0);
        check(b.buf == NULL && b.len == 0);
        free(s);
}

static void test_printf(void) {
        StrBuf b = STRBUF_INIT;
        char big[300];
        char *s = NULL;

        check_int(strbuf_printf(&b, "%d-%s", 42, "x"), 0);
        check_streq(strbuf_str(&b), "42-x");
        /* Far more than the first allocation: the second attempt has the exact room. */
        memset(big, 'b', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        check_int(strbuf_printf(&b, "[%s]", big), 0);
        check_int(b.len, 4 + 2 + 299);
        check(b.buf[4] == '[' && b.buf[b.len - 1] == ']' && b.buf[b.len] == '\0');
        for (int i = 0; i < 1000; i++)
                strbuf_printf(&b, "%d,", i);
        check(strstr(strbuf_str(&b), "998,999,") != NULL);
        check_int(strbuf_take(&b, &s, NULL), 0);
        free(s);
}

static void test_limit_and_errors(void) {
        StrBuf b = { .max = 5 };
        char *s = (char *) "untouched";

        check_int(strbuf_puts(&b, "12345"), 0);
        check_int(strbuf_putc(&b, '6'), -E2BIG);
        /* Sticky: nothing more is appended, the text so far stays. */
        check_int(strbuf_puts(&b, ""), -E2BIG);
        check_streq(strbuf_str(&b), "12345");
        check_int(strbuf_take(&b, &s, NULL), -E2BIG);
        check_streq(s, "untouched");
        check(b.buf == NULL);

        b = (StrBuf) { .max = 4 };
        check_int(strbuf_printf(&b, "%s", "abcdef"), -E2BIG);
        check_streq(strbuf_str(&b), "");
        strbuf_done(&b);

        b = STRBUF_INIT;
        strbuf_puts(&b, "x");
        check_int(strbuf_set_error(&b, -EINVAL), -EINVAL);
        check_int(strbuf_set_error(&b, -ENOMEM), -EINVAL);     /* the first error stays */
        check_int(strbuf_puts(&b, "y"), -EINVAL);
        check_streq(strbuf_str(&b), "x");
        strbuf_reset(&b);
        check_int(b.error, 0);
        check_streq(strbuf_str(&b), "");
        check_int(strbuf_puts(&b, "z"), 0);
        check_streq(strbuf_str(&b), "z");
        strbuf_done(&b);

        /* Nothing appended: an empty string, not NULL. */
        b = STRBUF_INIT;
        check_int(strbuf_take(&b, &s, NULL), 0);
        check_streq(s, "");
        free(s);

        /* Preconditions. */
        check_int(strbuf_append(NULL, "x", 1), -EINVAL);
        check_int(strbuf_take(&b, NULL, NULL), -EINVAL);
        check_int(strbuf_puts(&b, NULL), -EINVAL);
        strbuf_done(&b);
        strbuf_done(NULL);
}

int main(void) {
        test_run(test_append);
        test_run(test_printf);
        test_run(test_limit_and_errors);
        return test_result();
}
