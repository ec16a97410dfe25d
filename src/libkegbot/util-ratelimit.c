/* Rate-limited logging: see util-ratelimit.h. Limits whose window suppressed something sit in one
 * list until their summary is written; the optional timer is armed at the earliest window end. */
#include <inttypes.h>
#include <time.h>

#include "util-event.h"
#include "util-ratelimit.h"

static LogRateLimit *pending_head;
static sd_event *timer_event;
static sd_event_source *timer_source;
static uint64_t fake_now;

void log_ratelimit_set_fake_now(uint64_t usec) {
        fake_now = usec;
}

static uint64_t now_usec(void) {
        struct timespec ts;

        if (fake_now > 0)
                return fake_now;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        /* 0 means "no window": the first microsecond after boot reads as 1. */
        return MAX((uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC, (uint64_t) 1);
}

static uint64_t window_end(const LogRateLimit *rl) {
        return rl->begin + rl->interval_usec;
}

static void pending_remove(LogRateLimit *rl) {
        if (!rl->pending)
                return;
        for (LogRateLimit **p = &pending_head; *p; p = &(*p)->next)
                if (*p == rl) {
                        *p = rl->next;
                        break;
                }
        rl->next = NULL;
        rl->pending = false;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void timer_rearm(void) {
        uint64_t next = UINT64_MAX;

        if (!timer_event)
                return;
        for (LogRateLimit *rl = pending_head; rl; rl = rl->next)
                next = MIN(next, window_end(rl));
        if (next == UINT64_MAX) {
                event_timer_disarm(timer_source);
                return;
        }
        /* Accuracy 1 s: a summary a second late tells the same story. */
        if (event_timer_arm(timer_event, &timer_source, next, USEC_PER_SEC, on_timer, NULL) >= 0)
                (void) sd_event_source_set_description(timer_source, "log-ratelimit");
}

/* Ends the window: its summary (if anything was suppressed) and a clean slate. */
static void window_close(LogRateLimit *rl) {
        uint64_t suppressed = rl->suppressed;

        pending_remove(rl);
        rl->begin = 0;
        rl->n = 0;
        rl->suppressed = 0;
        if (suppressed > 0)
                (void) log_internal(rl->level, 0, rl->logger,
                                    "Suppressed %" PRIu64 " messages: %s (more than %u in %g s)",
                                    suppressed, rl->kind ?: "?", rl->burst,
                                    (double) rl->interval_usec / (double) USEC_PER_SEC);
}

bool log_ratelimit_pass(LogRateLimit *rl, int level, const char *logger) {
        uint64_t now;

        if (!rl)
                return true;
        if ((level & LOG_PRIMASK) > log_get_max_level())
                return false;

        now = now_usec();
        if (rl->begin != 0 && now >= window_end(rl)) {
                window_close(rl);
                timer_rearm();
        }
        rl->level = level & LOG_PRIMASK;
        rl->logger = logger;
        if (rl->begin == 0)
                rl->begin = now;
        if (rl->n < rl->burst) {
                rl->n++;
                return true;
        }
        rl->suppressed++;
        if (rl->timed && !rl->pending) {
                rl->pending = true;
                rl->next = pending_head;
                pending_head = rl;
                timer_rearm();
        }
        return false;
}

void log_ratelimit_forget(LogRateLimit *rl) {
        if (!rl)
                return;
        window_close(rl);
        timer_rearm();
}

static unsigned flush(bool all) {
        uint64_t now = now_usec();
        unsigned n = 0;

        for (LogRateLimit *rl = pending_head, *next; rl; rl = next) {
                next = rl->next;
                if (all || now >= window_end(rl)) {
                        window_close(rl);
                        n++;
                }
        }
        timer_rearm();
        return n;
}

unsigned log_ratelimit_flush(void) {
        return flush(false);
}

unsigned log_ratelimit_flush_all(void) {
        return flush(true);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) log_ratelimit_flush();
        return 0;
}

int log_ratelimit_attach_event(sd_event *e) {
        assert_return(e, -EINVAL);
        log_ratelimit_detach_event();
        timer_event = sd_event_ref(e);
        timer_rearm();
        return 0;
}

void log_ratelimit_detach_event(void) {
        timer_source = sd_event_source_disable_unref(timer_source);
        timer_event = sd_event_unref(timer_event);
}
