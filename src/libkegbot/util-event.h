/* sd-event timers that state their accuracy. sd-event's default accuracy (an accuracy of 0) is
 * 250 ms: a "250 ms" wait becomes 250-500 ms and a 100 ms timer fires four or five times a second
 * in bursts. Every timer of the project is created and re-armed here, always with an explicit
 * accuracy: how late it may fire so the kernel can batch wake-ups. */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

/* Arms the one-shot CLOCK_MONOTONIC timer *s to fire at 'usec' (absolute, the loop's now() base;
 * UINT64_MAX = never) at most 'accuracy' (> 0) late; creates the source on first use, else moves it
 * and sets its accuracy and handler's enabled state anew. Returns 0 or a negative errno (-EINVAL for
 * an accuracy of 0). A handler may re-arm its own source. */
int event_timer_arm(sd_event *e, sd_event_source **s, uint64_t usec, uint64_t accuracy,
                    sd_event_time_handler_t handler, void *userdata);

/* As event_timer_arm(), 'usec' from now (saturating). */
int event_timer_arm_relative(sd_event *e, sd_event_source **s, uint64_t usec, uint64_t accuracy,
                             sd_event_time_handler_t handler, void *userdata);

/* Moves a timer made by event_timer_arm() to 'usec' and arms it once, keeping its accuracy and
 * handler. */
int event_timer_set(sd_event_source *s, uint64_t usec);

/* Turns an armed timer off, keeping the source (NULL is fine). */
void event_timer_disarm(sd_event_source *s);

/* Whether the timer is armed (will fire). */
bool event_timer_is_armed(sd_event_source *s);
