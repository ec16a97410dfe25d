/* Unit tests of UTF-8 validation (util-utf8.h): what JSON and D-Bus accept, and nothing else. */
#include "test-util.h"
#include "util-utf8.h"

static void test_valid(void) {
        check(utf8_is_valid(""));
        check(utf8_is_valid("plain ASCII \x01\x7f"));
        check(utf8_is_valid("caf\xc3\xa9"));                           /* é */
        check(utf8_is_valid("\xe2\x82\xac"));                          /* € */
        check(utf8_is_valid("\xf0\x9f\x8d\xba"));                      /* 🍺 */
        check(utf8_is_valid("\xef\xbf\xbf\xf4\x8f\xbf\xbf"));          /* U+FFFF, U+10FFFF */
        check(utf8_is_valid_n("a\0b", 3));                             /* NUL is a character */
        check(utf8_is_valid_n("caf\xc3\xa9 and more", 6));
}

static void test_invalid(void) {
        static const char *const bad[] = {
                "caf\xe9",                      /* Latin-1 é */
                "\xc3",                         /* truncated */
                "\xe2\x82",
                "\xf0\x9f\x8d",
                "\xc0\x80", "\xc1\xbf",         /* overlong */
                "\xe0\x80\xaf", "\xf0\x8f\xbf\xbf",
                "\xed\xa0\x80", "\xed\xbf\xbf", /* UTF-16 surrogates */
                "\xf4\x90\x80\x80",             /* past U+10FFFF */
                "\xf5\x80\x80\x80", "\xff", "\xfe",
                "\x80", "a\xbf",                /* lone continuation bytes */
                "\xc3\x28",                     /* a lead byte without its continuation */
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (utf8_is_valid(bad[i]))
                        fprintf(stderr, "accepted invalid sequence #%zu\n", i);
                check(!utf8_is_valid(bad[i]));
        }
        check(!utf8_is_valid(NULL));
        check(!utf8_is_valid_n(NULL, 0));
        check(!utf8_is_valid_n("caf\xc3\xa9", 4));                     /* cut inside a sequence */
}

static void test_sequence_length(void) {
        uint32_t cp = 0;

        check_int(utf8_sequence_length("A", 1, &cp), 1);
        check_int(cp, 'A');
        check_int(utf8_sequence_length("\xc3\xa9", 2, &cp), 2);
        check_int(cp, 0xe9);
        check_int(utf8_sequence_length("\xe2\x80\xa8", 3, &cp), 3);
        check_int(cp, 0x2028);
        check_int(utf8_sequence_length("\xf0\x9f\x8d\xba", 4, &cp), 4);
        check_int(cp, 0x1f37a);
        check_int(utf8_sequence_length("\xf0\x9f\x8d\xba", 3, &cp), 0);
        check_int(utf8_sequence_length("\xe9", 1, NULL), 0);
        check_int(utf8_sequence_length("x", 0, NULL), 0);
}

int main(void) {
        test_run(test_valid);
        test_run(test_invalid);
        test_run(test_sequence_length);
        return test_result();
}
