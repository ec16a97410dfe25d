/* Unit test of util-ratelimit.c: a burst per window, the count of left-out messages written when the
 * next window opens, levels the log hides neither written nor counted. Clock injected. */
#include "util-ratelimit.h"
#include "test-util.h"

static char tmpdir[] = "/tmp/test-util-ratelimit-XXXXXX";

static unsigned count(const char *haystack, const char *needle) {
        unsigned n = 0;

        for (const char *p = haystack; p && (p = strstr(p, needle)); p += strlen(needle))
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
        check_int(count(out, "ERROR    (main) dead "), 2);
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
        check(strstr(out, "ERROR    (main) Suppressed 9 messages: no answer (more than 2 in 60 s)\n"));
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
        check(!strstr(out, "hidden") && strstr(out, "WARNING  (main) shown"));
        check_int(rl.suppressed, 0);
        free(out);
        check(log_ratelimit_pass(NULL, LOG_ERR, "main"));
        log_ratelimit_set_fake_now(0);
}

int main(void) {
        check(mkdtemp(tmpdir) != NULL);
        log_set_fake_time((uint64_t) 1340319994 * USEC_PER_SEC);
        test_run(test_burst_and_summary);
        test_run(test_hidden_levels);
        _cleanup_(freep) char *capture = test_path(tmpdir, "stderr");
        (void) unlink(capture);
        (void) rmdir(tmpdir);
        return test_result();
}
