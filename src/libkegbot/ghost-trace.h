/* The trace generator of ghost-pours.md section 16.1, normative so that every implementation (the
 * engine tests, kegboard_sim, the benchmarks) produces the same ticks from the same trace. A trace
 * is base segments of constant or linearly changing rate (mL/s), overlays added to the base from a
 * given time, and discrete tick events; a report is due every interval (0.1 s) and carries the
 * reading R0 + floor(V / c + 1e-9) + E, V being the jittered volume so far. Pure: no I/O, no clock.
 *
 * Text form (kegboard_sim's "trace" command and trace files; whitespace, commas or newlines between
 * items, '#' starts a comment to the end of the line):
 *
 *     <seconds>:<rate>                  base segment, constant rate in mL/s
 *     <seconds>:<from>..<to>            base segment, rate changing linearly
 *     @<start>=<seg>[+<seg>...]         overlay: segments from <start> s on, added to the base
 *     !<time>=<ticks>[x<count>/<every>] discrete event: <ticks> at <time> s (repeated <count> times,
 *                                       <every> s apart)
 *     c=<mL per tick>                   calibration (default 0.185)
 *     jitter=on|off                     the 8-step volume jitter (default on)
 *     interval=<seconds>                report interval (default 0.1)
 *
 * e.g. case R3 of the spec: "120:1.5 @40=12:25"; case Ge: "!30=1x120/30". */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define GHOST_TRACE_DEFAULT_ML_PER_TICK 0.185
#define GHOST_TRACE_DEFAULT_INTERVAL_USEC 100000
#define GHOST_TRACE_R0 1000
/* Bounds of the text form: a trace is at most a day long and holds at most this many items. */
#define GHOST_TRACE_MAX_SECONDS 86400.0
#define GHOST_TRACE_MAX_ITEMS 4096

typedef struct GhostTraceSegment {
        double seconds;
        double from, to;                /* mL/s at the start and at the end */
} GhostTraceSegment;

typedef struct GhostTraceOverlay {
        double start;                   /* s */
        GhostTraceSegment *segments;
        size_t n_segments;
} GhostTraceOverlay;

typedef struct GhostTraceEvent {
        uint64_t time_usec;
        uint64_t ticks;
} GhostTraceEvent;

typedef struct GhostTrace {
        double ml_per_tick;
        bool jitter;
        uint64_t interval_usec;
        GhostTraceSegment *base;
        size_t n_base;
        GhostTraceOverlay *overlays;
        size_t n_overlays;
        GhostTraceEvent *events;        /* sorted by time */
        size_t n_events;
} GhostTrace;

/* An empty trace with the defaults (c 0.185, jitter on, 0.1 s). */
int ghost_trace_new(GhostTrace **ret);
GhostTrace *ghost_trace_free(GhostTrace *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(GhostTrace *, ghost_trace_free);

/* Builders (the tests write traces as code). Rates >= 0, seconds > 0. */
int ghost_trace_add_segment(GhostTrace *t, double seconds, double from, double to);
int ghost_trace_add_overlay(GhostTrace *t, double start, const GhostTraceSegment *segments, size_t n);
int ghost_trace_add_event(GhostTrace *t, double time, uint64_t ticks);

/* Parses the text form into a new trace. -EINVAL with "<item>: <what>" in *ret_error. */
int ghost_trace_parse(const char *text, GhostTrace **ret, char **ret_error);

/* Trace time (usec) of the end of the last segment, overlay or event. */
uint64_t ghost_trace_end_usec(const GhostTrace *t);
/* The summed rate's integral over [0, t] seconds (mL, before jitter). */
double ghost_trace_volume(const GhostTrace *t, double seconds);

typedef struct GhostTraceCursor {
        const GhostTrace *trace;
        uint32_t r0;
        uint64_t k;                     /* reports computed so far */
        double v;                       /* V_k */
        uint64_t e;                     /* E_k */
        size_t next_event;
        uint32_t last;                  /* the last reading sent */
} GhostTraceCursor;

/* Starts at reading r0 (sent at trace time 0 as the baseline). */
void ghost_trace_cursor_init(GhostTraceCursor *c, const GhostTrace *t, uint32_t r0);
/* The next report to send, one whose reading differs from the previous: 1 with its trace time and
 * reading, 0 once the trace is over. */
int ghost_trace_next(GhostTraceCursor *c, uint64_t *ret_usec, uint32_t *ret_reading);
/* Ticks generated so far (the sum of the deltas sent). */
uint64_t ghost_trace_cursor_ticks(const GhostTraceCursor *c);
