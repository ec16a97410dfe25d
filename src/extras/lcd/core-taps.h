/* lcd_daemon's tap screens without a server: the core's org.kegbot.Core1.Tap objects (name,
 * calibration, pour state) as the one core client (core-watch.h) follows them on D-Bus: a snapshot
 * whenever org.kegbot.Core1 gains an owner (never activating the core), then its signals; nothing
 * is polled. A lost bus connection is retried with a growing delay. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "screens.h"

typedef struct CoreTaps CoreTaps;

/* The set of taps or one of their values changed. */
typedef void (*CoreTapsChanged)(CoreTaps *c, void *userdata);

/* Connects to the system bus (the session bus with session_bus) and starts following the core.
 * A bus that cannot be reached is a WARNING and retried later, not an error; only allocation
 * failures are returned. */
int core_taps_new(CoreTaps **ret, sd_event *event, bool session_bus, CoreTapsChanged on_changed, void *userdata);
CoreTaps *core_taps_free(CoreTaps *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(CoreTaps *, core_taps_free);

/* The taps known now, sorted by meter name; valid until the next callback. */
const CoreTapInfo *core_taps_get(const CoreTaps *c, size_t *ret_n);
