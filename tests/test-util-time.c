/* Unit tests of the RFC 3339 pair (util-time.h): the kegnet spelling on output, the accepted forms
 * on input, the calendar (leap years, month lengths) and the range limits. */
#include "test-util.h"
#include "util-time.h"

#define T0 (UINT64_C(1795694400) * USEC_PER_SEC)        /* 2026-11-26T12:00:00Z */

static void test_format(void) {
        char b[TIME_RFC3339_MAX];

        check_int(time_format_rfc3339(0, b), 0);
        check_streq(b, "1970-01-01T00:00:00Z");
        check_int(time_format_rfc3339(T0 + 999999, b), 0);             /* fractions truncated */
        check_streq(b, "2026-11-26T12:00:00Z");
        check_int(time_format_rfc3339(UINT64_C(951782400) * USEC_PER_SEC, b), 0);
        check_streq(b, "2000-02-29T00:00:00Z");
        check_int(time_format_rfc3339(UINT64_C(253402300799) * USEC_PER_SEC, b), 0);
        check_streq(b, "9999-12-31T23:59:59Z");
        check_int(time_format_rfc3339(UINT64_C(253402300800) * USEC_PER_SEC, b), -ERANGE);
        check_int(time_format_rfc3339(UINT64_MAX, b), -ERANGE);
}

static void test_parse(void) {
        uint64_t t;

        check(time_parse_rfc3339("2026-11-26T12:00:00Z", &t) == 0 && t == T0);
        check(time_parse_rfc3339("2026-11-26t12:00:00z", &t) == 0 && t == T0);
        check(time_parse_rfc3339("2026-11-26T12:00:00.5Z", &t) == 0 && t == T0 + 500000);
        check(time_parse_rfc3339("2026-11-26T12:00:00.123456789Z", &t) == 0 && t == T0 + 123456);
        check(time_parse_rfc3339("2026-11-26T13:30:00+01:30", &t) == 0 && t == T0);
        check(time_parse_rfc3339("2026-11-26T07:00:00-05:00", &t) == 0 && t == T0);
        check(time_parse_rfc3339("2026-11-26T12:00:00+00:00", &t) == 0 && t == T0);
        check(time_parse_rfc3339("1970-01-01T00:00:00Z", &t) == 0 && t == 0);
        check(time_parse_rfc3339("2000-02-29T00:00:00Z", &t) == 0 && t == UINT64_C(951782400) * USEC_PER_SEC);
        check(time_parse_rfc3339("2016-12-31T23:59:60Z", &t) == 0);
        check(time_parse_rfc3339("9999-12-31T23:59:59Z", &t) == 0);

        static const char *const bad[] = {
                "", "2026-11-26", "2026-11-26T12:00:00", "2014-03-16T11:23:37", "2026-11-26 12:00:00Z",
                "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
                "2026-04-31T00:00:00Z", "2026-11-26T24:00:00Z", "2026-11-26T12:60:00Z", "2026-11-26T12:00:61Z",
                "2026-11-26T12:00:00.Z", "2026-11-26T12:00:00+0100", "2026-11-26T12:00:00+24:00",
                "2026-11-26T12:00:00+01:60", "2026-11-26T12:00:00ZZ", "2026-11-26T12:00:00Z ", " 2026-11-26T12:00:00Z",
                "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+00:01", "26-11-26T12:00:00Z", "2026-1-26T12:00:00Z",
                "2026-11-26T1:00:00Z", "20x6-11-26T12:00:00Z", "9999-12-31T23:59:59-01:00",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (time_parse_rfc3339(bad[i], &t) != -EINVAL)
                        fprintf(stderr, "accepted bad timestamp '%s'\n", bad[i]);
                check_int(time_parse_rfc3339(bad[i], &t), -EINVAL);
        }
        check_int(time_parse_rfc3339(NULL, &t), -EINVAL);
        check_int(time_parse_rfc3339("2026-11-26T12:00:00Z", NULL), -EINVAL);
}

static void test_roundtrip(void) {
        char b[TIME_RFC3339_MAX];
        uint64_t t;

        /* Every day of a few years, leap days included, at varying times of day. */
        for (uint64_t day = 0; day < 366 * 4; day++) {
                uint64_t sec = UINT64_C(1704067200) + day * 86400 + day * 37 % 86400;
                check_int(time_format_rfc3339(sec * USEC_PER_SEC, b), 0);
                check(time_parse_rfc3339(b, &t) == 0 && t == sec * USEC_PER_SEC);
        }
}

int main(void) {
        test_run(test_format);
        test_run(test_parse);
        test_run(test_roundtrip);
        return test_result();
}
