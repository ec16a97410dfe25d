/* Rate-limited logging of the messages a peer or a dead device can repeat without end (DESIGN.md
 * section 3): each kind may be logged 'burst' times per 'interval'; past that its messages are
 * counted instead of written, and when the interval is over one line says how many were
 * suppressed. A flood of connections or junk names then costs a few lines, not enough to make
 * journald drop the lines that matter. The lines that record drinks never go through a limit. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "log.h"

typedef struct LogRateLimit LogRateLimit;
struct LogRateLimit {
        const char *kind;               /* what the summary calls these messages */
        uint64_t interval_usec;
        unsigned burst;
        bool timed;                     /* the summary may also come from the loop's timer (below) */

        /* State; zero-initialised. */
        const char *logger;             /* logger and level of the messages, for the summary */
        int level;
        uint64_t begin;                 /* CLOCK_MONOTONIC start of the window, 0 = none open */
        unsigned n;                     /* messages written in the window */
        uint64_t suppressed;            /* messages counted instead */
        LogRateLimit *next;             /* in the list of timed limits whose summary is due later */
        bool pending;
};

/* The summary comes with the next message of the kind after the window, or from
 * log_ratelimit_forget(). For limits that live in an object (a connection, a display). */
#define LOG_RATELIMIT_INIT(k, interval, b) { .kind = (k), .interval_usec = (interval), .burst = (b) }
/* The summary also comes from the timer of an attached loop when no further message follows. Only
 * for limits that live as long as the program (static ones): the timer keeps a pointer to them. */
#define LOG_RATELIMIT_TIMED(k, interval, b) \
        { .kind = (k), .interval_usec = (interval), .burst = (b), .timed = true }

/* The usual limit of a program-wide kind: 20 messages per 10 s, timed. */
#define LOG_RATELIMIT_DEFAULT(k) LOG_RATELIMIT_TIMED(k, 10 * USEC_PER_SEC, 20)

/* Whether a message of this kind may be written now. A message the log level hides is neither
 * written nor counted (false). When a window that suppressed messages is over, its summary
 * ("Suppressed N messages: <kind> (more than <burst> in <interval> s)") is written first, at the
 * messages' level and logger. */
bool log_ratelimit_pass(LogRateLimit *rl, int level, const char *logger);

/* Writes the summary of a limit that is going away (one embedded in a connection) and forgets it. */
void log_ratelimit_forget(LogRateLimit *rl);

/* Summaries of windows that are over, for timed limits that saw no further message; returns how
 * many. With an event loop attached this runs from a timer (accuracy 1 s); log_ratelimit_flush_all()
 * writes every pending summary at once (at exit). */
unsigned log_ratelimit_flush(void);
unsigned log_ratelimit_flush_all(void);

/* Write the summaries of timed limits from a timer on this loop as windows end, without waiting for
 * the next message of the kind. One loop at a time; detach before the loop goes away. */
int log_ratelimit_attach_event(sd_event *e);
void log_ratelimit_detach_event(void);

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

/* With an explicit logger name, as log_named(). */
#define log_named_ratelimited(rl, level, logger, ...)                                   \
        do {                                                                            \
                if (log_ratelimit_pass((rl), (level), (logger)))                        \
                        log_named((level), (logger), __VA_ARGS__);                      \
        } while (false)
