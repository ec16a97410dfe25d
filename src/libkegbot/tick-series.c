/* The tick series: see tick-series.h. */
#include <inttypes.h>

#include "tick-series.h"

/* Pairs merged (the merged bucket keeps the earlier offset), resolution doubled, offsets snapped
 * down to it and neighbours that now share an offset merged. */
static void tick_series_coarsen(TickSeries *s) {
        unsigned j = 0;

        s->resolution_ms *= 2;
        for (unsigned i = 0; i < s->n; i += 2) {
                uint64_t ticks = s->ticks[i] + (i + 1 < s->n ? s->ticks[i + 1] : 0);
                uint64_t offset = s->offset_ms[i] / s->resolution_ms * s->resolution_ms;

                if (j > 0 && s->offset_ms[j - 1] == offset)
                        s->ticks[j - 1] += ticks;
                else {
                        s->offset_ms[j] = offset;
                        s->ticks[j] = ticks;
                        j++;
                }
        }
        s->n = j;
}

void tick_series_add(TickSeries *s, uint64_t offset_ms, uint64_t ticks) {
        uint64_t bucket;

        assert_return(s, );
        if (ticks == 0)
                return;
        if (s->resolution_ms == 0)
                s->resolution_ms = TICK_SERIES_FIRST_RESOLUTION_MS;

        for (;;) {
                bucket = offset_ms / s->resolution_ms * s->resolution_ms;
                if (s->n > 0 && bucket <= s->offset_ms[s->n - 1]) {
                        s->ticks[s->n - 1] += ticks;
                        return;
                }
                if (s->n < TICK_SERIES_MAX)
                        break;
                tick_series_coarsen(s);
        }
        s->offset_ms[s->n] = bucket;
        s->ticks[s->n] = ticks;
        s->n++;
}

uint64_t tick_series_total(const TickSeries *s) {
        uint64_t sum = 0;

        assert_return(s, 0);
        for (unsigned i = 0; i < s->n; i++)
                sum += s->ticks[i];
        return sum;
}

char *tick_series_format(const TickSeries *s, char buf[static TICK_SERIES_STRING_MAX]) {
        size_t l = 0;

        buf[0] = '\0';
        assert_return(s, buf);
        for (unsigned i = 0; i < s->n; i++)
                l += (size_t) snprintf(buf + l, TICK_SERIES_STRING_MAX - l, "%s%" PRIu64 ":%" PRIu64,
                                       i ? " " : "", s->offset_ms[i], s->ticks[i]);
        return buf;
}
