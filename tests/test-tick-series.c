/* The tick series (kegboard-event-protocol.md section 5.2; its unit test 1). */
#include "tick-series.h"
#include "test-util.h"

static void test_spec_example(void) {
        TickSeries s = TICK_SERIES_INIT;
        char buf[TICK_SERIES_STRING_MAX];

        check_streq(tick_series_format(&s, buf), "");
        tick_series_add(&s, 0, 3);
        tick_series_add(&s, 40, 2);
        tick_series_add(&s, 130, 14);
        tick_series_add(&s, 260, 31);
        check_streq(tick_series_format(&s, buf), "0:5 100:14 200:31");
        check_int(tick_series_total(&s), 50);
}

static void test_single_delta(void) {
        TickSeries s = TICK_SERIES_INIT;
        char buf[TICK_SERIES_STRING_MAX];

        tick_series_add(&s, 0, 42);
        check_streq(tick_series_format(&s, buf), "0:42");
        tick_series_add(&s, 10, 0);             /* nothing */
        check_streq(tick_series_format(&s, buf), "0:42");
}

static void check_valid(const TickSeries *s) {
        check(s->n <= TICK_SERIES_MAX);
        for (unsigned i = 0; i < s->n; i++) {
                check(s->offset_ms[i] % s->resolution_ms == 0);
                if (i > 0)
                        check(s->offset_ms[i] > s->offset_ms[i - 1]);
        }
}

static void test_coarsening(void) {
        TickSeries s = TICK_SERIES_INIT;
        uint64_t sum = 0;

        /* 200 deltas 50 ms apart: at most 64 buckets, resolution 200, nothing lost. */
        for (unsigned i = 0; i < 200; i++) {
                tick_series_add(&s, i * 50, i % 7 + 1);
                sum += i % 7 + 1;
                check_valid(&s);
        }
        check_int(s.resolution_ms, 200);
        check(s.n <= TICK_SERIES_MAX);
        check_int(tick_series_total(&s), sum);

        /* Coarsening twice. */
        s = TICK_SERIES_INIT;
        sum = 0;
        for (unsigned i = 0; i < 400; i++) {
                tick_series_add(&s, i * 50, 2);
                sum += 2;
                check_valid(&s);
        }
        check_int(s.resolution_ms, 400);
        check_int(tick_series_total(&s), sum);
        check_int(s.offset_ms[0], 0);
}

static void test_long_flow(void) {
        TickSeries s = TICK_SERIES_INIT;
        char buf[TICK_SERIES_STRING_MAX];
        uint64_t sum = 0;

        /* An hour of reports every 100 ms: the memory stays the same, the text fits its buffer. */
        for (uint64_t t = 0; t < 3600 * 1000; t += 100) {
                tick_series_add(&s, t, 4000000000u);
                sum += 4000000000u;
        }
        check_valid(&s);
        check_int(tick_series_total(&s), sum);
        check(strlen(tick_series_format(&s, buf)) < sizeof buf);
}

static void test_offset_backwards(void) {
        TickSeries s = TICK_SERIES_INIT;
        char buf[TICK_SERIES_STRING_MAX];

        tick_series_add(&s, 500, 1);
        tick_series_add(&s, 100, 2);            /* earlier than the last bucket: joins it */
        check_streq(tick_series_format(&s, buf), "500:3");
}

int main(void) {
        test_run(test_spec_example);
        test_run(test_single_delta);
        test_run(test_coarsening);
        test_run(test_long_flow);
        test_run(test_offset_backwards);
        return test_result();
}
