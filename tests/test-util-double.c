/* Unit tests of the shortest round-trip double spelling (util-double.h): Python's repr() layout,
 * and that every spelling reads back to the very same value. */
#include <float.h>
#include <math.h>

#include "test-util.h"
#include "util-double.h"

static void check_format(double v, const char *expect) {
        char b[DOUBLE_STRING_MAX];

        check_streq(double_format(v, b), expect);
}

static void test_spelling(void) {
        check_format(100.0, "100.0");
        check_format(4.5, "4.5");
        check_format(5.0 / 11.0, "0.45454545454545453");
        check_format(1440 / 2.2, "654.5454545454545");
        check_format(0.1, "0.1");
        check_format(2.2, "2.2");
        check_format(-0.0, "-0.0");
        check_format(0.0, "0.0");
        check_format(1.0, "1.0");
        check_format(-3.0, "-3.0");
        check_format(-20.0, "-20.0");
        check_format(1e16, "1e+16");
        check_format(1.5e16, "1.5e+16");
        check_format(1e21, "1e+21");
        check_format(9999999999999998.0, "9999999999999998.0");
        check_format(123456789012345.0, "123456789012345.0");
        check_format(0.0001, "0.0001");
        check_format(0.00001, "1e-05");
        check_format(1.25e-7, "1.25e-07");
        check_format(1e300, "1e+300");
        check_format(5e-324, "5e-324");
        check_format(-DBL_MAX, "-1.7976931348623157e+308");
        check_format(DBL_MIN, "2.2250738585072014e-308");
        check_format(85.0, "85.0");
        check_format(-20.1, "-20.1");
        check_format(1.0 / 3.0, "0.3333333333333333");
        check_format(NAN, "nan");
        check_format(INFINITY, "inf");
        check_format(-INFINITY, "-inf");
}

static void test_roundtrip(void) {
        char b[DOUBLE_STRING_MAX];
        uint64_t x = UINT64_C(0x9e3779b97f4a7c15);

        /* Random bit patterns across the whole range: each spelling reads back exactly, and has a
         * '.' or an exponent (a JSON reader must see a float). */
        for (int i = 0; i < 200000; i++) {
                double v;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                memcpy(&v, &x, sizeof v);
                if (!isfinite(v))
                        continue;
                double_format(v, b);
                if (strtod(b, NULL) != v || !strpbrk(b, ".e")) {
                        fprintf(stderr, "bad spelling %s of %a\n", b, v);
                        check(false);
                        break;
                }
                check(strlen(b) < DOUBLE_STRING_MAX);
        }
}

/* The significant digits of a spelling ("1.25e-07" -> 3, "100.0" -> 1, "0.001" -> 1). */
static int digits_of(const char *s) {
        int first = -1, last = -1, i = 0;

        for (const char *p = s; *p && *p != 'e'; p++, i++)
                if (*p >= '1' && *p <= '9') {
                        if (first < 0)
                                first = i;
                        last = i;
                }
        if (first < 0)
                return 1;
        int n = 0;
        for (int k = first; k <= last; k++)
                if (s[k] >= '0' && s[k] <= '9')
                        n++;
        return n;
}

/* The fewest digits found by trying every precision from 1 up: what the search must match. */
static int shortest_by_scan(double v) {
        char t[40];

        for (int p = 1; p < 17; p++) {
                snprintf(t, sizeof t, "%.*e", p - 1, v);
                if (strtod(t, NULL) == v)
                        return p;
        }
        return 17;
}

static void test_shortest(void) {
        char b[DOUBLE_STRING_MAX];
        uint64_t x = UINT64_C(0x2545f4914f6cdd1d);

        /* Powers of two (the uneven spacing), their neighbours, and random values. */
        for (int e = -1074; e <= 1023; e++) {
                double v = ldexp(1.0, e);
                double around[] = { v, nextafter(v, 0), nextafter(v, INFINITY), -v };
                for (size_t i = 0; i < ELEMENTSOF(around); i++) {
                        if (!isfinite(around[i]) || around[i] == 0)
                                continue;
                        double_format(around[i], b);
                        if (digits_of(b) != shortest_by_scan(around[i])) {
                                fprintf(stderr, "not shortest: %s for %a\n", b, around[i]);
                                check(false);
                        }
                }
        }
        for (int i = 0; i < 20000; i++) {
                double v;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                memcpy(&v, &x, sizeof v);
                if (!isfinite(v) || v == 0)
                        continue;
                double_format(v, b);
                if (digits_of(b) != shortest_by_scan(v)) {
                        fprintf(stderr, "not shortest: %s for %a\n", b, v);
                        check(false);
                        break;
                }
        }
        for (int i = 1; i < 5000; i++) {
                double v = i / 2.2;                     /* volumes of a 2.2 ticks/mL meter */
                double_format(v, b);
                check_int(digits_of(b), shortest_by_scan(v));
        }
}

static void check_round(double v, unsigned d, const char *expect) {
        char b[DOUBLE_STRING_MAX];

        check_streq(double_format(double_round(v, d), b), expect);
}

static void test_round(void) {
        check_round(354.4999999, 1, "354.5");
        check_round(100.0 / 2.2, 1, "45.5");
        check_round(123456.74999, 1, "123456.7");
        check_round(0.05, 1, "0.1");
        check_round(-0.05, 1, "-0.1");
        check_round(-1.25, 1, "-1.3");
        check_round(4.254, 2, "4.25");
        check_round(4.0625, 2, "4.06");
        check_round(0.0, 1, "0.0");
        check_round(1.0 / 3.0, 2, "0.33");
        check_round(2.0 / 3.0, 0, "1.0");
        check_round(1e300, 1, "1e+300");
        check_round(9007199254740993.0, 0, "9007199254740992.0");
        /* Out of range: unchanged. */
        check(isnan(double_round(NAN, 1)));
        check(double_round(INFINITY, 1) == INFINITY);
        check(double_round(0.123, 10) == 0.123);
}

int main(void) {
        test_run(test_spelling);
        test_run(test_round);
        test_run(test_roundtrip);
        test_run(test_shortest);
        return test_result();
}
