/* RFC 3339: see util-time.h. No libc time zone machinery: the calendar arithmetic is done here,
 * so the result never depends on TZ. */
#include <inttypes.h>

#include "util-time.h"

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil calendar algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned) (y - era * 400);
        unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t) doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *ret_y, unsigned *ret_m, unsigned *ret_d) {
        z += 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        unsigned doe = (unsigned) (z - era * 146097);
        unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t y = (int64_t) yoe + era * 400;
        unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        unsigned mp = (5 * doy + 2) / 153;
        unsigned d = doy - (153 * mp + 2) / 5 + 1;
        unsigned m = mp < 10 ? mp + 3 : mp - 9;
        *ret_y = y + (m <= 2);
        *ret_m = m;
        *ret_d = d;
}

static bool is_leap(int64_t y) {
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m) {
        static const unsigned dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* 253402300800 = 10000-01-01T00:00:00Z */
#define TIME_LIMIT_SEC INT64_C(253402300800)

int time_format_rfc3339(uint64_t usec, char buf[static TIME_RFC3339_MAX]) {
        uint64_t sec = usec / USEC_PER_SEC;

        assert_return(buf, -EINVAL);

        if (sec >= (uint64_t) TIME_LIMIT_SEC)
                return -ERANGE;

        int64_t days = (int64_t) (sec / 86400);
        unsigned rem = (unsigned) (sec % 86400);
        int64_t y;
        unsigned m, d;
        civil_from_days(days, &y, &m, &d);
        char tmp[64];   /* the compiler cannot see that every field has its fixed width */
        int n = snprintf(tmp, sizeof tmp, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02uZ",
                         y, m, d, rem / 3600, rem / 60 % 60, rem % 60);
        if (n != TIME_RFC3339_MAX - 1)
                return -ERANGE;
        memcpy(buf, tmp, TIME_RFC3339_MAX);
        return 0;
}

static bool parse_digits(const char **p, unsigned n, unsigned *ret) {
        unsigned v = 0;
        for (unsigned i = 0; i < n; i++) {
                char c = (*p)[i];
                if (c < '0' || c > '9')
                        return false;
                v = v * 10 + (unsigned) (c - '0');
        }
        *p += n;
        *ret = v;
        return true;
}

int time_parse_rfc3339(const char *s, uint64_t *ret) {
        unsigned y, mo, d, h, mi, sec, oh = 0, om = 0;
        uint64_t usec = 0;
        int sign = 0;
        const char *p = s;

        assert_return(s, -EINVAL);
        assert_return(ret, -EINVAL);

        if (!parse_digits(&p, 4, &y) || *p++ != '-' ||
            !parse_digits(&p, 2, &mo) || *p++ != '-' ||
            !parse_digits(&p, 2, &d))
                return -EINVAL;
        if (*p != 'T' && *p != 't')
                return -EINVAL;
        p++;
        if (!parse_digits(&p, 2, &h) || *p++ != ':' ||
            !parse_digits(&p, 2, &mi) || *p++ != ':' ||
            !parse_digits(&p, 2, &sec))
                return -EINVAL;
        if (*p == '.') {
                unsigned n = 0;
                p++;
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                for (; *p >= '0' && *p <= '9'; p++, n++)
                        if (n < 6)
                                usec = usec * 10 + (uint64_t) (*p - '0');
                for (; n < 6; n++)
                        usec *= 10;
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                sign = *p == '+' ? 1 : -1;
                p++;
                if (!parse_digits(&p, 2, &oh) || *p++ != ':' || !parse_digits(&p, 2, &om))
                        return -EINVAL;
                if (oh > 23 || om > 59)
                        return -EINVAL;
        } else
                return -EINVAL;
        if (*p != 0)
                return -EINVAL;

        if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
            h > 23 || mi > 59 || sec > 60)    /* 60: a leap second, as RFC 3339 allows */
                return -EINVAL;

        int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
        t -= sign * (int64_t) (oh * 3600 + om * 60);
        if (t < 0 || t >= TIME_LIMIT_SEC)
                return -EINVAL;

        *ret = (uint64_t) t * USEC_PER_SEC + usec;
        return 0;
}
