/* Unit test of util-event.c: timers are created and moved with the accuracy asked for, never with
 * sd-event's 250 ms default; re-arming from the handler, disarming, firing on a real loop. */
#include <errno.h>

#include "util-event.h"
#include "test-util.h"

static unsigned fired;

static int on_fire(sd_event_source *s, uint64_t usec, void *userdata) {
        fired++;
        if (fired == 1)
                /* A handler may re-arm its own source; the second firing ends the loop. */
                check(event_timer_arm_relative(sd_event_source_get_event(s), (sd_event_source **) userdata,
                                               2 * USEC_PER_MSEC, USEC_PER_MSEC, on_fire, userdata) == 0);
        else
                (void) sd_event_exit(sd_event_source_get_event(s), 0);
        return 0;
}

static void test_accuracy(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        sd_event_source *s = NULL;
        uint64_t acc = 0, t = 0, now;

        check(sd_event_new(&e) >= 0);
        check(event_timer_arm(e, &s, UINT64_MAX, 0, on_fire, &s) == -EINVAL);
        check(!s);

        check(event_timer_arm(e, &s, UINT64_MAX, USEC_PER_SEC, on_fire, &s) == 0);
        check(s);
        check(sd_event_source_get_time_accuracy(s, &acc) >= 0 && acc == USEC_PER_SEC);
        check(!event_timer_is_armed(s));        /* never due */

        check(sd_event_now(e, CLOCK_MONOTONIC, &now) >= 0);
        check(event_timer_arm(e, &s, now + USEC_PER_SEC, USEC_PER_MSEC, on_fire, &s) == 0);
        check(sd_event_source_get_time_accuracy(s, &acc) >= 0 && acc == USEC_PER_MSEC);
        check(sd_event_source_get_time(s, &t) >= 0 && t == now + USEC_PER_SEC);
        check(event_timer_is_armed(s));
        event_timer_disarm(s);
        check(!event_timer_is_armed(s));
        event_timer_disarm(NULL);

        /* Moved, the accuracy stays as stated. */
        check(event_timer_set(s, now + 2 * USEC_PER_SEC) >= 0);
        check(event_timer_is_armed(s));
        check(sd_event_source_get_time(s, &t) >= 0 && t == now + 2 * USEC_PER_SEC);
        check(sd_event_source_get_time_accuracy(s, &acc) >= 0 && acc == USEC_PER_MSEC);
        check(event_timer_set(NULL, now) == -EINVAL);

        check(event_timer_arm_relative(e, &s, UINT64_MAX, USEC_PER_MSEC, on_fire, &s) == 0);
        check(sd_event_source_get_time(s, &t) >= 0 && t == UINT64_MAX);

        check(event_timer_arm_relative(e, &s, USEC_PER_MSEC, USEC_PER_MSEC, on_fire, &s) == 0);
        check(sd_event_loop(e) >= 0);
        check_int(fired, 2);
        check(!event_timer_is_armed(s));
        sd_event_source_unref(s);
}

int main(void) {
        test_run(test_accuracy);
        return test_result();
}
