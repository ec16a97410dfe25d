/* The flow engine with its ghost-pour filter (ghost-pours.md section 17): nanoseconds per report in the
 * modes off, on and log for three workloads (one meter pouring 30 mL/s with pauses; 64 meters round-
 * robin; the worst case, an accelerating ghost that runs the gate with a baseline median on every
 * report and is refused by G3), and the memory a meter costs, which must not grow with time. Reports
 * come from the spec's trace generator; the time is synthetic, as the engine's tests drive it. Each
 * figure is printed beside its target; the last line is PASS or FAIL: <which>. */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flow.h"
#include "ghost-trace.h"

#define NS_TARGET 1000.0                /* on mode, per report: a tenth of the 100 000/s budget */
#define BYTES_TARGET (16 * 1024)        /* per meter, flow and episode included */
#define METERS 64

typedef struct Report {
        uint64_t t;                     /* usec from the start */
        uint32_t reading;
} Report;

typedef struct Workload {
        const char *name;
        Report *reports;
        size_t n;
        unsigned meters;                /* reports go round-robin over this many meters */
} Workload;

static double now_sec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* The trace's reports, repeated 'times' (each repetition after the last, readings going on). */
static int build(const char *text, unsigned times, Report **ret, size_t *ret_n) {
        GhostTrace *t = NULL;
        GhostTraceCursor c;
        Report *r = NULL;
        size_t n = 0, alloc = 0;
        uint64_t base_t = 0, usec = 0;
        uint32_t base_reading = 0, reading = 0;

        if (ghost_trace_parse(text, &t, NULL) < 0)
                return -EINVAL;
        for (unsigned k = 0; k < times; k++) {
                ghost_trace_cursor_init(&c, t, base_reading);
                while (ghost_trace_next(&c, &usec, &reading) > 0) {
                        if (n == alloc) {
                                alloc = alloc ? alloc * 2 : 4096;
                                r = realloc(r, alloc * sizeof(Report));
                                if (!r)
                                        return -ENOMEM;
                        }
                        r[n++] = (Report) { base_t + usec, reading };
                }
                base_t += ghost_trace_end_usec(t) + 20 * USEC_PER_SEC;   /* a pause: flows end */
                base_reading = reading;
        }
        ghost_trace_free(t);
        *ret = r;
        *ret_n = n;
        return 0;
}

static FlowTime at(uint64_t t) {
        uint64_t mono = 1000 * USEC_PER_SEC + t;
        return (FlowTime) { mono, UINT64_C(1795694400000000) + mono, mono };
}

static FlowEngine *engine(FlowGhostMode mode, double max_pour_s) {
        FlowEngineConfig c;
        FlowEngine *e = NULL;

        flow_engine_config_init(&c);
        c.settings.ghost_filter = mode;
        c.settings.max_pour_s = max_pour_s;
        c.max_tick_delta = 0;
        c.create_unknown_taps = true;
        if (flow_engine_new(&e, &c, NULL, NULL) < 0)
                abort();
        return e;
}

static void meter_name(char buf[32], unsigned i) {
        snprintf(buf, 32, "kegboard%u.flow%u", i / 6, i % 6);
}

/* ns per report: the engine's calls only, deadlines handled as the core's timer would. */
static double run(const Workload *w, FlowGhostMode mode) {
        FlowEngine *e = engine(mode, 300);
        char names[METERS][32];
        double t0, t1;
        size_t calls = 0;

        for (unsigned m = 0; m < w->meters; m++) {
                FlowTime t = at(0);
                meter_name(names[m], m);
                (void) flow_engine_set_tap(e, names[m], NULL, 0.185, NULL);
                (void) flow_engine_meter_update(e, names[m], 0, &t);
        }
        t0 = now_sec();
        for (size_t i = 0; i < w->n; i++)
                for (unsigned m = 0; m < w->meters; m++) {
                        /* The meters' reports interleave within the same 100 ms. */
                        FlowTime t = at(w->reports[i].t + m * (100000 / w->meters) / 2);

                        if (flow_engine_next_deadline(e) <= t.monotonic)
                                (void) flow_engine_process_deadlines(e, &t);
                        (void) flow_engine_meter_update(e, names[m], w->reports[i].reading, &t);
                        calls++;
                }
        t1 = now_sec();
        flow_engine_free(e);
        return (t1 - t0) * 1e9 / (double) calls;
}

/* Bytes per meter, each with a tap, a flow of a pour and an open ghost episode, after 'seconds' of
 * a pour with a trickle under it. */
static size_t bytes_per_meter(FlowGhostMode mode, unsigned seconds) {
        struct mallinfo2 before, after;
        FlowEngine *e;
        char text[64], names[METERS][32];
        Report *r;
        size_t n;

        snprintf(text, sizeof text, "jitter=off %u:1.5 @0=%u:30", seconds, seconds);
        if (build(text, 1, &r, &n) < 0)
                abort();
        before = mallinfo2();
        /* No cut: the pour goes on for the whole time (a stuck meter would be quarantined instead). */
        e = engine(mode, 0);
        for (unsigned m = 0; m < METERS; m++) {
                FlowTime t = at(0);
                meter_name(names[m], m);
                (void) flow_engine_set_tap(e, names[m], NULL, 0.185, NULL);
                (void) flow_engine_meter_update(e, names[m], 0, &t);
        }
        for (size_t i = 0; i < n; i++)
                for (unsigned m = 0; m < METERS; m++) {
                        FlowTime t = at(r[i].t);
                        (void) flow_engine_meter_update(e, names[m], r[i].reading, &t);
                }
        after = mallinfo2();
        flow_engine_free(e);
        free(r);
        return (after.uordblks - before.uordblks) / METERS;
}

int main(void) {
        static const char *const mode_names[] = { "off", "on", "log" };
        static const FlowGhostMode modes[] = { FLOW_GHOST_OFF, FLOW_GHOST_ON, FLOW_GHOST_LOG };
        Workload w[3] = {
                { .name = "one meter, 30 mL/s pours (60 s, 20 s pause)", .meters = 1 },
                { .name = "64 meters round-robin, the same pours", .meters = METERS },
                { .name = "accelerating ghost, a report every 10 ms (worst case)", .meters = 1 },
        };
        char failed[512] = "";
        size_t small, large;

        if (build("5:0 60:30", 40, &w[0].reports, &w[0].n) < 0 ||
            build("5:0 60:30", 2, &w[1].reports, &w[1].n) < 0 ||
            build("interval=0.01 20:0.12 150:0.5..60 20:60", 4, &w[2].reports, &w[2].n) < 0)
                return 1;

        for (size_t i = 0; i < ELEMENTSOF(w); i++)
                for (size_t k = 0; k < ELEMENTSOF(modes); k++) {
                        double ns = run(&w[i], modes[k]);

                        if (modes[k] == FLOW_GHOST_ON) {
                                printf("%s, ghost_filter=%s: %.0f ns per report (target <= %.0f)\n", w[i].name,
                                       mode_names[k], ns, NS_TARGET);
                                if (ns > NS_TARGET)
                                        snprintf(failed + strlen(failed), sizeof failed - strlen(failed), "%s%s",
                                                 *failed ? ", " : "", w[i].name);
                        } else
                                printf("%s, ghost_filter=%s: %.0f ns per report\n", w[i].name, mode_names[k], ns);
                }

        for (size_t k = 0; k < ELEMENTSOF(modes); k++) {
                small = bytes_per_meter(modes[k], 10);
                large = bytes_per_meter(modes[k], 3 * 3600);
                printf("memory per meter, ghost_filter=%s: %zu bytes after 10 s of a pour over a trickle, %zu after "
                       "3 h (target <= %d, and not growing)\n", mode_names[k], small, large, BYTES_TARGET);
                /* "Not growing": the same within malloc's rounding (1 %). */
                if (large > BYTES_TARGET || (double) large > (double) small * 1.01)
                        snprintf(failed + strlen(failed), sizeof failed - strlen(failed), "%smemory (%s)",
                                 *failed ? ", " : "", mode_names[k]);
        }

        for (size_t i = 0; i < ELEMENTSOF(w); i++)
                free(w[i].reports);
        if (*failed) {
                printf("FAIL: %s\n", failed);
                return 1;
        }
        printf("PASS\n");
        return 0;
}
