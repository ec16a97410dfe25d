/* Throughput of the drink spool on this disk: durable puts (tmp + fsync + rename + directory fsync),
 * opening a spool of N queued files, and draining it (peek + remove, each remove fsyncing the
 * directory). Usage: bench-spool [N] [DIR] (default 2000 drinks in a fresh directory under /var/tmp).
 * Targets: put and drain >= 20 drinks/s (a drink every 50 ms: more than any bar pours, so the spool
 * never falls behind; bound by this disk's fsync), open >= 1000 drinks/s (a core with a big backlog
 * starts in seconds), and every drink drained. The last line is PASS or FAIL: <which> (exit 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "spool.h"

#define PUT_TARGET 20.0
#define OPEN_TARGET 1000.0
#define DRAIN_TARGET 20.0

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
        unsigned n = argc > 1 ? (unsigned) strtoul(argv[1], NULL, 10) : 2000;
        char tmpl[] = "/var/tmp/bench-spool-XXXXXX", dir[4200];
        const char *base = argc > 2 ? argv[2] : mkdtemp(tmpl);
        Spool *s = NULL;
        double t0, t1;

        if (!base || n == 0)
                return 1;
        log_set_max_level(LOG_WARNING);
        snprintf(dir, sizeof dir, "%s/spool", base);
        if (spool_open(&s, dir) < 0)
                return 1;

        t0 = now();
        for (unsigned i = 0; i < n; i++) {
                Drink d = {
                        .flow_id = 1795694350u + i, .meter_name = (char *) "kegboard.flow0",
                        .username = (char *) "admin", .ticks = 1440, .volume_known = true,
                        .volume_ml = 654.5454545454545, .start_realtime = 1795694401000000ull,
                        .pour_realtime = 1795694409000000ull, .duration_sec = 8,
                        .boot_id = SD_ID128_MAKE(6d,1f,0c,1e,1c,0a,4b,5e,9b,3a,2f,7e,5d,4c,3b,2a),
                        .pour_boottime = 81234567890ull,
                };
                snprintf(d.uuid, sizeof d.uuid, "%08x-0000-4000-8000-%012x", i, i);
                if (spool_put(s, &d) != 0) {
                        fprintf(stderr, "put failed\n");
                        return 1;
                }
        }
        t1 = now();
        double put = n / (t1 - t0);
        printf("spool put (fsync'd):        %8.0f drinks/s  (target >= %.0f; %u drinks, %.2f ms each)\n",
               put, PUT_TARGET, n, (t1 - t0) * 1000.0 / n);
        s = spool_free(s);

        t0 = now();
        if (spool_open(&s, dir) < 0)
                return 1;
        t1 = now();
        double open_rate = n / (t1 - t0);
        printf("spool open (check every file): %6.0f drinks/s  (target >= %.0f; %.3f s)\n", open_rate,
               OPEN_TARGET, t1 - t0);

        t0 = now();
        unsigned drained = 0;
        for (;;) {
                Drink *d = NULL;
                if (spool_peek(s, &d) <= 0)
                        break;
                if (spool_remove(s, d->uuid) < 0)
                        return 1;
                drink_free(d);
                drained++;
        }
        t1 = now();
        double drain = drained / (t1 - t0);
        printf("spool drain (peek+remove):  %8.0f drinks/s  (target >= %.0f; %u of %u drinks)\n", drain,
               DRAIN_TARGET, drained, n);
        spool_free(s);
        if (argc <= 2) {
                char cmd[4300];
                snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
                if (system(cmd) != 0)
                        fprintf(stderr, "warning: could not remove %s\n", base);
        }
        char failed[256] = "";
        if (put < PUT_TARGET)
                strcat(failed, "put, ");
        if (open_rate < OPEN_TARGET)
                strcat(failed, "open, ");
        if (drain < DRAIN_TARGET || drained != n)
                strcat(failed, "drain, ");
        if (failed[0]) {
                failed[strlen(failed) - 2] = 0;
                printf("FAIL: %s\n", failed);
                return 1;
        }
        printf("PASS\n");
        return 0;
}
