/* The one time format: RFC 3339 in UTC, as kegnet, the spool, drinks.log and the logs of the
 * server's answers use it. Times are wall-clock microseconds since the Unix epoch (CLOCK_REALTIME,
 * as sd-event's now(CLOCK_REALTIME) gives them). */
#pragma once

#include <stdint.h>

#include "macro.h"

/* "2026-11-26T12:00:00Z" + NUL */
#define TIME_RFC3339_MAX 21

/* UTC, whole seconds (the sub-second part is truncated), 'Z' suffix. -ERANGE from year 10000 on. */
int time_format_rfc3339(uint64_t usec, char buf[static TIME_RFC3339_MAX]);

/* "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)"; 't' and 'z' are accepted too, fractions are kept to
 * the microsecond, a leap second (:60) is accepted. -EINVAL for anything else, and for instants
 * before 1970 or from year 10000 on (after applying the offset). */
int time_parse_rfc3339(const char *s, uint64_t *ret);
