/* Rate-limited logging: see util-ratelimit.h. */
#include <inttypes.h>
#include <time.h>

#include "util-ratelimit.h"

static uint64_t fake_now;

void log_ratelimit_set_fake_now(uint64_t usec) {
        fake_now = usec;
}

static uint64_t now_usec(void) {
        struct timespec ts;

        if (fake_now > 0)
                return fake_now;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        /* 0 means "no window open": the first microsecond after boot counts as 1. */
        return MAX((uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC, (uint64_t) 1);
}

bool log_ratelimit_pass(LogRateLimit *rl, int level, const char *logger) {
        uint64_t now;

        if (!rl)
                return true;
        if ((level & LOG_PRIMASK) > log_get_max_level())
                return false;

        now = now_usec();
        if (rl->begin != 0 && now - rl->begin >= rl->interval_usec) {
                if (rl->suppressed > 0)
                        (void) log_internal(level, 0, logger,
                                            "Suppressed %" PRIu64 " messages: %s (more than %u in %g s)",
                                            rl->suppressed, rl->kind ? rl->kind : "?", rl->burst,
                                            (double) rl->interval_usec / (double) USEC_PER_SEC);
                rl->begin = 0;
                rl->n = 0;
                rl->suppressed = 0;
        }
        if (rl->begin == 0)
                rl->begin = now;
        if (rl->n < rl->burst) {
                rl->n++;
                return true;
        }
        rl->suppressed++;
        return false;
}
