/* Shortest round-trip doubles: see util-double.h. The digits come from printf's %e at increasing
 * precision until strtod() gives the value back (at most 17 significant digits are ever needed);
 * the layout is then Python's. Programs never call setlocale(), so the decimal point is '.'. */
#include <math.h>

#include "util-double.h"

char *double_format(double v, char buf[static DOUBLE_STRING_MAX]) {
        char tmp[40], digits[24];
        size_t nd = 0;
        int prec, exp10;
        char *o = buf;

        if (isnan(v))
                return strcpy(buf, "nan");
        if (isinf(v))
                return strcpy(buf, v < 0 ? "-inf" : "inf");
        if (v == 0)
                return strcpy(buf, signbit(v) ? "-0.0" : "0.0");

        for (prec = 1; prec < 17; prec++) {
                snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
                if (strtod(tmp, NULL) == v)
                        break;
        }
        if (prec == 17)
                snprintf(tmp, sizeof tmp, "%.16e", v);

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
