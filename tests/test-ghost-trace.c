/* The trace generator of ghost-pours.md section 16.1 and its text form (ghost-trace.h). */
#include <math.h>

#include "ghost-trace.h"
#include "test-util.h"

static GhostTrace *parse(const char *text) {
        _cleanup_(freep) char *error = NULL;
        GhostTrace *t = NULL;

        check_int(ghost_trace_parse(text, &t, &error), 0);
        if (error)
                fprintf(stderr, "%s: %s\n", text, error);
        return t;
}

static uint64_t generated(GhostTrace *t, uint64_t *ret_reports, uint64_t *ret_last_usec) {
        GhostTraceCursor c;
        uint64_t n = 0, usec = 0, last = 0;
        uint32_t reading, prev = GHOST_TRACE_R0;

        ghost_trace_cursor_init(&c, t, GHOST_TRACE_R0);
        while (ghost_trace_next(&c, &usec, &reading) > 0) {
                check(reading != prev);
                check(usec > last);
                prev = reading;
                last = usec;
                n++;
        }
        check_int(prev - GHOST_TRACE_R0, ghost_trace_cursor_ticks(&c));
        if (ret_reports)
                *ret_reports = n;
        if (ret_last_usec)
                *ret_last_usec = last;
        return ghost_trace_cursor_ticks(&c);
}

static void test_spec_figures(void) {
        _cleanup_(ghost_trace_freep) GhostTrace *r1 = parse("5:0 16:30");
        _cleanup_(ghost_trace_freep) GhostTrace *r13 = parse("c=2.2 5:0 10:30");
        _cleanup_(ghost_trace_freep) GhostTrace *gh = parse("jitter=off 1200:3.7");
        uint64_t reports, last;

        /* R1: "generated 482.8" mL. */
        check(fabs((double) generated(r1, &reports, &last) * 0.185 - 482.8) < 0.2);
        check_int(last, 21 * USEC_PER_SEC);
        /* R13: 137 ticks at 2.2 mL/tick. */
        check_int(generated(r13, NULL, NULL), 137);
        /* Gh: exactly 2 ticks per report, 1200 s of them. */
        check_int(generated(gh, &reports, &last), 24000);
        check_int(reports, 12000);
        check_int(last, 1200 * USEC_PER_SEC);
}

static void test_jitter(void) {
        _cleanup_(ghost_trace_freep) GhostTrace *t = parse("c=0.01 1:10");
        GhostTraceCursor c;
        uint32_t reading;
        uint64_t usec;
        /* 1 mL per report at 10 mL/s, 100 ticks per mL, times the jitter table. */
        static const uint32_t expect[] = { 100, 120, 85, 110, 90, 115, 80, 105, 100, 120 };
        uint32_t prev = GHOST_TRACE_R0;

        ghost_trace_cursor_init(&c, t, GHOST_TRACE_R0);
        for (size_t i = 0; i < ELEMENTSOF(expect); i++) {
                check_int(ghost_trace_next(&c, &usec, &reading), 1);
                check_int(usec, (i + 1) * 100000);
                check_int(reading - prev, expect[i]);
                prev = reading;
        }
        check_int(ghost_trace_next(&c, &usec, &reading), 0);
}

static void test_overlays_and_events(void) {
        _cleanup_(ghost_trace_freep) GhostTrace *r3 = parse("120:1.5 @40=12:25");
        _cleanup_(ghost_trace_freep) GhostTrace *ge = parse("!30=1x120/30");
        _cleanup_(ghost_trace_freep) GhostTrace *ramp = parse("# a ramp\n150:1..20, @90=10:30");
        _cleanup_(ghost_trace_freep) GhostTrace *chain = parse("@10=1:5+2:0..4");
        uint64_t reports, last;

        check(fabs(ghost_trace_volume(r3, 120) - (180 + 300)) < 1e-9);
        check_int(r3->n_overlays, 1);
        check_int(generated(ge, &reports, &last), 120);
        check_int(reports, 120);
        check_int(last, 3600 * USEC_PER_SEC);
        check(fabs(ghost_trace_volume(ramp, 150) - (150 * 10.5 + 300)) < 1e-6);
        check(fabs(ghost_trace_volume(chain, 20) - (5 + 4)) < 1e-9);
        check_int(ghost_trace_end_usec(chain), 13 * USEC_PER_SEC);
}

static void test_interval(void) {
        _cleanup_(ghost_trace_freep) GhostTrace *t = parse("interval=0.25 jitter=off 10:10");
        uint64_t reports, last;

        check(generated(t, &reports, &last) > 0);
        check_int(reports, 40);
        check_int(last, 10 * USEC_PER_SEC);
}

static void test_errors(void) {
        static const char *const bad[] = {
                "", "# only a comment", "5", "5:", ":5", "5:x", "-5:1", "5:-1", "5:1..", "5:..3", "0:1",
                "@5", "@5=", "@x=1:1", "!5", "!5=0", "!5=1.5", "!5=1x0/1", "!5=1x2/0", "c=0", "c=x",
                "jitter=maybe", "interval=0", "interval=100", "100000:1", "5:1 bogus", "!90000=1",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(freep) char *error = NULL;
                GhostTrace *t = NULL;

                check_int(ghost_trace_parse(bad[i], &t, &error), -EINVAL);
                check(t == NULL);
                check(error && *error);
        }
}

int main(void) {
        test_run(test_spec_figures);
        test_run(test_jitter);
        test_run(test_overlays_and_events);
        test_run(test_interval);
        test_run(test_errors);
        return test_result();
}
