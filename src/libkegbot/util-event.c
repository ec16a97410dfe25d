/* sd-event timers with a stated accuracy: see util-event.h. */
#include <errno.h>

#include "util-event.h"

int event_timer_arm(sd_event *e, sd_event_source **s, uint64_t usec, uint64_t accuracy,
                    sd_event_time_handler_t handler, void *userdata) {
        int r;

        assert_return(e, -EINVAL);
        assert_return(s, -EINVAL);
        assert_return(handler, -EINVAL);
        assert_return(accuracy > 0, -EINVAL);

        if (!*s)
                return sd_event_add_time(e, s, CLOCK_MONOTONIC, usec, accuracy, handler, userdata);

        r = sd_event_source_set_time(*s, usec);
        if (r < 0)
                return r;
        r = sd_event_source_set_time_accuracy(*s, accuracy);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(*s, SD_EVENT_ONESHOT);
}

int event_timer_arm_relative(sd_event *e, sd_event_source **s, uint64_t usec, uint64_t accuracy,
                             sd_event_time_handler_t handler, void *userdata) {
        uint64_t now;
        int r;

        assert_return(e, -EINVAL);

        r = sd_event_now(e, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        return event_timer_arm(e, s, usec >= UINT64_MAX - now ? UINT64_MAX : now + usec, accuracy, handler,
                               userdata);
}

int event_timer_set(sd_event_source *s, uint64_t usec) {
        int r;

        assert_return(s, -EINVAL);

        r = sd_event_source_set_time(s, usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

void event_timer_disarm(sd_event_source *s) {
        if (s)
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

bool event_timer_is_armed(sd_event_source *s) {
        int enabled = SD_EVENT_OFF;
        uint64_t usec = UINT64_MAX;

        if (!s || sd_event_source_get_enabled(s, &enabled) < 0 || enabled == SD_EVENT_OFF)
                return false;
        return sd_event_source_get_time(s, &usec) >= 0 && usec != UINT64_MAX;
}
