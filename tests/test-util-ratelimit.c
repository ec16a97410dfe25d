/* Unit tests of rate-limited logging (util-ratelimit.h): the burst passes, the rest is counted, the
 * summary comes when the window is over (with the next message, from the flush, or - for a timed
 * limit - from the loop's timer), hidden levels do not count, a forgotten limit says what it
 * suppressed, and a limit inside an object is never kept by the timer. Clock injected. */
#include <sys/stat.h>

#define LOG_COMPONENT "kegnet"
#include "test-util.h"
#include "util-ratelimit.h"

static char tmpdir[] = "/tmp/test-util-ratelimit-XXXXXX";

static void setup(bool verbose) {
        check(log_setup(&(LogConfig) { .program = "t", .to_console = true, .format = "%(levelname)s (%(name)s) %(message)s",
                                       .verbose = verbose }, NULL) == 0);
}

static unsigned count_lines(const char *s, const char *needle) {
        unsigned n = 0;
        for (const char *p = s; p && (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static void test_burst_and_summary(void) {
        LogRateLimit rl = LOG_RATELIMIT_INIT("no answer", 60 * USEC_PER_SEC, 2);
        uint64_t t0 = 1000 * USEC_PER_SEC;
        char *out;

        log_set_max_level(LOG_INFO);
        log_ratelimit_set_fake_now(t0);
        capture_begin_in(tmpdir);
        for (int i = 0; i < 10; i++)
                log_ratelimited(&rl, LOG_ERR, "dead %d", i);
        out = capture_end();
        check_int(count_lines(out, "ERROR    (kegnet) dead "), 2);
        check(strstr(out, "dead 0") && strstr(out, "dead 1") && !strstr(out, "dead 2"));
        check(!strstr(out, "Suppressed"));
        free(out);

        /* Still inside the window: nothing. */
        log_ratelimit_set_fake_now(t0 + 59 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        log_ratelimited(&rl, LOG_ERR, "dead %d", 10);
        out = capture_end();
        check_streq(out, "");
        free(out);

        /* The next window starts with the count of what the last one left out. */
        log_ratelimit_set_fake_now(t0 + 60 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        log_ratelimited(&rl, LOG_ERR, "dead %d", 11);
        out = capture_end();
        check(strstr(out, "ERROR    (kegnet) Suppressed 9 messages: no answer (more than 2 in 60 s)\n"));
        check(strstr(out, "dead 11"));
        check(strstr(out, "Suppressed") < strstr(out, "dead 11"));
        free(out);

        /* A quiet window ends without a summary. */
        log_ratelimit_set_fake_now(t0 + 200 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        log_ratelimited(&rl, LOG_ERR, "dead %d", 12);
        out = capture_end();
        check(!strstr(out, "Suppressed") && strstr(out, "dead 12"));
        free(out);
        log_ratelimit_set_fake_now(0);
}

static void test_hidden_levels(void) {
        LogRateLimit rl = LOG_RATELIMIT_INIT("chatter", USEC_PER_SEC, 1);
        char *out;

        log_set_max_level(LOG_INFO);
        log_ratelimit_set_fake_now(5 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        log_ratelimited(&rl, LOG_DEBUG, "hidden");
        log_ratelimited(&rl, LOG_WARNING, "shown");
        out = capture_end();
        check(!strstr(out, "hidden") && strstr(out, "WARNING  (kegnet) shown"));
        check_int(rl.suppressed, 0);
        free(out);
        check(log_ratelimit_pass(NULL, LOG_ERR, "main"));
        log_ratelimit_set_fake_now(0);
}


static void test_burst_then_summary(void) {
        static LogRateLimit rl = LOG_RATELIMIT_TIMED("connections", 10 * USEC_PER_SEC, 3);

        setup(false);
        log_ratelimit_set_fake_now(1000 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        for (int i = 0; i < 10; i++)
                log_ratelimited(&rl, LOG_INFO, "Remote host connected: %d", i);
        char *out = capture_end();
        check_streq(out, "INFO (kegnet) Remote host connected: 0\n"
                         "INFO (kegnet) Remote host connected: 1\n"
                         "INFO (kegnet) Remote host connected: 2\n");
        free(out);

        /* Still inside the window: counted. Nothing due yet. */
        log_ratelimit_set_fake_now(1009 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        log_ratelimited(&rl, LOG_INFO, "Remote host connected: %d", 10);
        check(log_ratelimit_flush() == 0);
        out = capture_end();
        check_streq(out, "");
        free(out);

        /* The next message after the window: the summary first, then the message. */
        log_ratelimit_set_fake_now(1010 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        log_ratelimited(&rl, LOG_INFO, "Remote host connected: %d", 11);
        out = capture_end();
        check_streq(out, "INFO (kegnet) Suppressed 8 messages: connections (more than 3 in 10 s)\n"
                         "INFO (kegnet) Remote host connected: 11\n");
        free(out);
        log_ratelimit_set_fake_now(0);
}

static void test_flush_and_forget(void) {
        static LogRateLimit rl = LOG_RATELIMIT_TIMED("junk meters", 5 * USEC_PER_SEC, 1);
        LogRateLimit embedded = LOG_RATELIMIT_INIT("bad frames from 127.0.0.1:4000", 60 * USEC_PER_SEC, 1);

        setup(false);
        log_ratelimit_set_fake_now(2000 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        for (int i = 0; i < 5; i++) {
                log_named_ratelimited(&rl, LOG_WARNING, "flowmanager", "Meter table full: %d", i);
                log_ratelimited(&embedded, LOG_WARNING, "Dropping bad frame %d", i);
        }
        /* The window is over but no further message comes: the flush writes the timed summary;
         * the limit inside an object is not the timer's (it may be gone by then). */
        log_ratelimit_set_fake_now(2005 * USEC_PER_SEC);
        check(!embedded.pending);
        check(log_ratelimit_flush() == 1);
        check(log_ratelimit_flush() == 0);
        /* A connection that goes away says what it suppressed. */
        log_ratelimit_forget(&embedded);
        char *out = capture_end();
        check_streq(out, "WARNING (flowmanager) Meter table full: 0\n"
                         "WARNING (kegnet) Dropping bad frame 0\n"
                         "WARNING (flowmanager) Suppressed 4 messages: junk meters (more than 1 in 5 s)\n"
                         "WARNING (kegnet) Suppressed 4 messages: bad frames from 127.0.0.1:4000 (more than 1 in 60 s)\n");
        free(out);
        log_ratelimit_set_fake_now(0);
}

static void test_hidden_levels_do_not_count(void) {
        static LogRateLimit rl = LOG_RATELIMIT_TIMED("debug chatter", 10 * USEC_PER_SEC, 2);

        setup(false);
        log_ratelimit_set_fake_now(3000 * USEC_PER_SEC);
        capture_begin_in(tmpdir);
        for (int i = 0; i < 100; i++)
                log_ratelimited(&rl, LOG_DEBUG, "hidden %d", i);
        check(log_ratelimit_flush_all() == 0);
        char *out = capture_end();
        check_streq(out, "");
        free(out);

        setup(true);
        capture_begin_in(tmpdir);
        for (int i = 0; i < 100; i++)
                log_ratelimited(&rl, LOG_DEBUG, "shown %d", i);
        check(log_ratelimit_flush_all() == 1);
        out = capture_end();
        check(count_lines(out, "shown") == 2);
        check(strstr(out, "DEBUG (kegnet) Suppressed 98 messages: debug chatter") != NULL);
        free(out);
        log_ratelimit_set_fake_now(0);
}

/* With a loop attached, the summary comes from a timer once the window is over, though no further
 * message of the kind arrives. */
static void test_timer(void) {
        static LogRateLimit rl = LOG_RATELIMIT_TIMED("tokens", 100 * USEC_PER_MSEC, 1);
        sd_event *e = NULL;

        setup(false);
        check(sd_event_new(&e) >= 0);
        check(log_ratelimit_attach_event(e) == 0);
        capture_begin_in(tmpdir);
        log_ratelimited(&rl, LOG_INFO, "Token not assigned: %d", 1);
        log_ratelimited(&rl, LOG_INFO, "Token not assigned: %d", 2);
        log_ratelimited(&rl, LOG_INFO, "Token not assigned: %d", 3);
        /* The timer's accuracy is 1 s: run the loop for at most 3 s. */
        for (int i = 0; i < 300 && rl.pending; i++)
                (void) sd_event_run(e, 10 * USEC_PER_MSEC);
        char *out = capture_end();
        check(!rl.pending);
        check_streq(out, "INFO (kegnet) Token not assigned: 1\n"
                         "INFO (kegnet) Suppressed 2 messages: tokens (more than 1 in 0.1 s)\n");
        free(out);
        log_ratelimit_detach_event();
        sd_event_unref(e);
}

int main(void) {
        check(mkdtemp(tmpdir) != NULL);
        test_run(test_burst_and_summary);
        test_run(test_hidden_levels);
        test_run(test_burst_then_summary);
        test_run(test_flush_and_forget);
        test_run(test_hidden_levels_do_not_count);
        test_run(test_timer);
        char *p = test_path(tmpdir, "stderr");
        (void) unlink(p);
        free(p);
        (void) rmdir(tmpdir);
        return test_result();
}
