/* A pour's tick series (kegboard-event-protocol.md section 5.2): "<offset_ms>:<ticks>" buckets, at
 * most 64, coarsened by merging pairs as a pour grows, so that its memory does not grow with its
 * length. The event backend sends it with every pour; the ghost filter reports it with every ghost
 * flow and episode (ghost-pours.md sections 5.2 and 8). Pure: no allocation. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define TICK_SERIES_MAX 64
/* 64 x "<20 digits>:<20 digits> " + NUL */
#define TICK_SERIES_STRING_MAX (TICK_SERIES_MAX * 42 + 1)
#define TICK_SERIES_FIRST_RESOLUTION_MS 100

typedef struct TickSeries {
        uint64_t resolution_ms;         /* 0 until the first delta */
        unsigned n;
        uint64_t offset_ms[TICK_SERIES_MAX];
        uint64_t ticks[TICK_SERIES_MAX];
} TickSeries;

#define TICK_SERIES_INIT ((TickSeries) {})

/* Places 'ticks' at 'offset_ms' after the first delta (which has offset 0). An offset before the
 * last bucket (a caller whose times went backwards) lands in the last bucket: no tick is lost. */
void tick_series_add(TickSeries *s, uint64_t offset_ms, uint64_t ticks);
uint64_t tick_series_total(const TickSeries *s);
/* "0:5 100:14 200:31"; "" while empty. Returns buf. */
char *tick_series_format(const TickSeries *s, char buf[static TICK_SERIES_STRING_MAX]);
