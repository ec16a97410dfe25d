/* Rate-limited logging of messages that a peer or a dead device can repeat without end (DESIGN.md
 * section 3): each kind may be logged 'burst' times per 'interval'; past that its messages are only
 * counted, and the first message let through after the window says how many were left out. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "log.h"

typedef struct LogRateLimit {
        const char *kind;               /* what the summary calls these messages */
        uint64_t interval_usec;
        unsigned burst;

        /* State; zero-initialised. */
        uint64_t begin;                 /* CLOCK_MONOTONIC start of the window, 0 = none open */
        unsigned n;                     /* messages written in the window */
        uint64_t suppressed;            /* messages counted instead */
} LogRateLimit;

#define LOG_RATELIMIT_INIT(k, interval, b) { .kind = (k), .interval_usec = (interval), .burst = (b) }

/* Whether a message of this kind may be written now. A message the log level hides is neither
 * written nor counted (false). When a window that left messages out is over, the summary
 * ("Suppressed N messages: <kind> (more than <burst> in <interval> s)") is written first, at
 * 'level' under 'logger'. */
bool log_ratelimit_pass(LogRateLimit *rl, int level, const char *logger);

/* Test hook: the monotonic clock reads this (microseconds); 0 = the real clock. */
void log_ratelimit_set_fake_now(uint64_t usec);

#define log_ratelimited(rl, level, ...)                                                 \
        do {                                                                            \
                if (log_ratelimit_pass((rl), (level), LOG_COMPONENT))                   \
                        log_full((level), __VA_ARGS__);                                 \
        } while (false)

#define log_ratelimited_errno(rl, level, error, ...)                                    \
        do {                                                                            \
                if (log_ratelimit_pass((rl), (level), LOG_COMPONENT))                   \
                        (void) log_full_errno((level), (error), __VA_ARGS__);           \
        } while (false)
