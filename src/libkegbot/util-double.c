/* Shortest round-trip doubles: see util-double.h. The digits come from printf's %e at the fewest
 * significant digits that strtod() reads back as the same value (17 always do); the layout is
 * then Python's. Programs never call setlocale(), so the decimal point is '.'. */
#include <math.h>
#include <stdint.h>

#include "util-double.h"

static bool roundtrips(double v, int prec, char tmp[static 40]) {
        snprintf(tmp, 40, "%.*e", prec - 1, v);
        return strtod(tmp, NULL) == v;
}

/* v printed in tmp with the fewest significant digits (1..17) that read back as v.
 * Where the doubles around v are evenly spaced, a precision that reads back implies that every
 * higher one does too (the nearest decimal with one digit more is at least as close), so a binary
 * search finds it in 4 or 5 conversions instead of up to 17 - this is on the path of every kegnet
 * FlowUpdate. At a power of two the spacing below v is half the spacing above, that implication
 * can fail, and the scan is linear. */
static void shortest_digits(double v, char tmp[static 40]) {
        int lo = 1, hi = 17;
        uint64_t bits;

        /* A zero fraction field: a power of two (or the smallest normal, where the scan is merely
         * unnecessary). Read from the bits rather than with frexp(), which would map libm into
         * every process for this alone. */
        memcpy(&bits, &v, sizeof bits);
        if ((bits & UINT64_C(0x000fffffffffffff)) == 0) {
                for (lo = 1; lo < 17; lo++)
                        if (roundtrips(v, lo, tmp))
                                return;
                (void) roundtrips(v, 17, tmp);
                return;
        }
        while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (roundtrips(v, mid, tmp))
                        hi = mid;
                else
                        lo = mid + 1;
        }
        (void) roundtrips(v, lo, tmp);  /* the last conversion tried may have been another one */
}

char *double_format(double v, char buf[static DOUBLE_STRING_MAX]) {
        char tmp[40], digits[24];
        size_t nd = 0;
        int exp10;
        char *o = buf;

        if (isnan(v))
                return strcpy(buf, "nan");
        if (isinf(v))
                return strcpy(buf, v < 0 ? "-inf" : "inf");
        if (v == 0)
                return strcpy(buf, signbit(v) ? "-0.0" : "0.0");

        shortest_digits(v, tmp);

        const char *p = tmp;
        if (*p == '-') {
                *o++ = '-';
                p++;
        }
        for (; *p && *p != 'e'; p++)
                if (*p >= '0' && *p <= '9' && nd < sizeof digits)
                        digits[nd++] = *p;
        exp10 = *p == 'e' ? atoi(p + 1) : 0;
        while (nd > 1 && digits[nd - 1] == '0')
                nd--;

        if (exp10 >= -4 && exp10 < 16) {
                if (exp10 < 0) {
                        *o++ = '0';
                        *o++ = '.';
                        for (int i = 0; i < -exp10 - 1; i++)
                                *o++ = '0';
                        memcpy(o, digits, nd);
                        o += nd;
                } else {
                        size_t ip = (size_t) exp10 + 1;
                        for (size_t i = 0; i < ip; i++)
                                *o++ = i < nd ? digits[i] : '0';
                        *o++ = '.';
                        if (nd > ip) {
                                memcpy(o, digits + ip, nd - ip);
                                o += nd - ip;
                        } else
                                *o++ = '0';
                }
                *o = '\0';
        } else {
                *o++ = digits[0];
                if (nd > 1) {
                        *o++ = '.';
                        memcpy(o, digits + 1, nd - 1);
                        o += nd - 1;
                }
                snprintf(o, DOUBLE_STRING_MAX - (size_t) (o - buf), "e%c%02d",
                         exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        }
        return buf;
}

double double_round(double v, unsigned decimals) {
        static const double scale[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9 };
        double p, x;
        int64_t k;

        assert_return(decimals < ELEMENTSOF(scale), v);

        p = scale[decimals];
        x = v * p;
        /* Beyond 2^53 every double is an integer already; the comparisons are false for NaN. */
        if (!(x < 9007199254740992.0 && x > -9007199254740992.0))
                return v;
        k = (int64_t) (x < 0 ? x - 0.5 : x + 0.5);
        return (double) k / p;
}
