/* The trace generator: see ghost-trace.h. */
#include <math.h>

#include "ghost-trace.h"
#include "util-string.h"

static const double jitter_table[8] = { 1.0, 1.2, 0.85, 1.1, 0.9, 1.15, 0.8, 1.05 };

int ghost_trace_new(GhostTrace **ret) {
        GhostTrace *t;

        assert_return(ret, -EINVAL);
        t = calloc(1, sizeof(GhostTrace));
        if (!t)
                return -ENOMEM;
        t->ml_per_tick = GHOST_TRACE_DEFAULT_ML_PER_TICK;
        t->jitter = true;
        t->interval_usec = GHOST_TRACE_DEFAULT_INTERVAL_USEC;
        *ret = t;
        return 0;
}

GhostTrace *ghost_trace_free(GhostTrace *t) {
        if (!t)
                return NULL;
        free(t->base);
        for (size_t i = 0; i < t->n_overlays; i++)
                free(t->overlays[i].segments);
        free(t->overlays);
        free(t->events);
        free(t);
        return NULL;
}

static bool segment_valid(double seconds, double from, double to) {
        return isfinite(seconds) && seconds > 0 && seconds <= GHOST_TRACE_MAX_SECONDS &&
               isfinite(from) && from >= 0 && isfinite(to) && to >= 0;
}

static size_t trace_items(const GhostTrace *t) {
        return t->n_base + t->n_overlays + t->n_events;
}

int ghost_trace_add_segment(GhostTrace *t, double seconds, double from, double to) {
        GhostTraceSegment *a;

        assert_return(t, -EINVAL);
        assert_return(segment_valid(seconds, from, to), -EINVAL);
        if (trace_items(t) >= GHOST_TRACE_MAX_ITEMS)
                return -E2BIG;
        a = reallocarray(t->base, t->n_base + 1, sizeof(GhostTraceSegment));
        if (!a)
                return -ENOMEM;
        t->base = a;
        t->base[t->n_base++] = (GhostTraceSegment) { seconds, from, to };
        return 0;
}

int ghost_trace_add_overlay(GhostTrace *t, double start, const GhostTraceSegment *segments, size_t n) {
        GhostTraceOverlay *a;
        GhostTraceSegment *copy;

        assert_return(t, -EINVAL);
        assert_return(segments && n > 0, -EINVAL);
        assert_return(isfinite(start) && start >= 0 && start <= GHOST_TRACE_MAX_SECONDS, -EINVAL);
        for (size_t i = 0; i < n; i++)
                assert_return(segment_valid(segments[i].seconds, segments[i].from, segments[i].to), -EINVAL);
        if (trace_items(t) >= GHOST_TRACE_MAX_ITEMS)
                return -E2BIG;

        copy = reallocarray(NULL, n, sizeof(GhostTraceSegment));
        if (!copy)
                return -ENOMEM;
        memcpy(copy, segments, n * sizeof(GhostTraceSegment));
        a = reallocarray(t->overlays, t->n_overlays + 1, sizeof(GhostTraceOverlay));
        if (!a) {
                free(copy);
                return -ENOMEM;
        }
        t->overlays = a;
        t->overlays[t->n_overlays++] = (GhostTraceOverlay) { start, copy, n };
        return 0;
}

int ghost_trace_add_event(GhostTrace *t, double time, uint64_t ticks) {
        GhostTraceEvent *a;
        uint64_t usec;
        size_t i;

        assert_return(t, -EINVAL);
        assert_return(isfinite(time) && time >= 0 && time <= GHOST_TRACE_MAX_SECONDS, -EINVAL);
        assert_return(ticks > 0 && ticks <= UINT32_MAX, -EINVAL);
        if (trace_items(t) >= GHOST_TRACE_MAX_ITEMS)
                return -E2BIG;
        a = reallocarray(t->events, t->n_events + 1, sizeof(GhostTraceEvent));
        if (!a)
                return -ENOMEM;
        t->events = a;
        usec = (uint64_t) llround(time * 1e6);
        /* Kept sorted: the cursor walks them in time order. */
        for (i = t->n_events; i > 0 && t->events[i - 1].time_usec > usec; i--)
                t->events[i] = t->events[i - 1];
        t->events[i] = (GhostTraceEvent) { usec, ticks };
        t->n_events++;
        return 0;
}

/* ---- the rate integral ---- */

static double segments_length(const GhostTraceSegment *s, size_t n) {
        double l = 0;

        for (size_t i = 0; i < n; i++)
                l += s[i].seconds;
        return l;
}

/* Integral over [0, x] seconds of a segment list starting at 0. */
static double segments_integral(const GhostTraceSegment *s, size_t n, double x) {
        double start = 0, sum = 0;

        if (x <= 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                const GhostTraceSegment *g = &s[i];
                double len = MIN(x - start, g->seconds);
                double rate_end;

                if (len <= 0)
                        break;
                /* Trapezoid of the linear rate over the part of the segment before x. */
                rate_end = g->from + (g->to - g->from) * len / g->seconds;
                sum += (g->from + rate_end) * 0.5 * len;
                start += g->seconds;
        }
        return sum;
}

double ghost_trace_volume(const GhostTrace *t, double seconds) {
        double v;

        assert_return(t, 0);
        v = segments_integral(t->base, t->n_base, seconds);
        for (size_t i = 0; i < t->n_overlays; i++)
                v += segments_integral(t->overlays[i].segments, t->overlays[i].n_segments,
                                       seconds - t->overlays[i].start);
        return v;
}

uint64_t ghost_trace_end_usec(const GhostTrace *t) {
        double end;
        uint64_t e;

        assert_return(t, 0);
        end = segments_length(t->base, t->n_base);
        for (size_t i = 0; i < t->n_overlays; i++)
                end = MAX(end, t->overlays[i].start + segments_length(t->overlays[i].segments,
                                                                       t->overlays[i].n_segments));
        e = (uint64_t) llround(end * 1e6);
        if (t->n_events > 0)
                e = MAX(e, t->events[t->n_events - 1].time_usec);
        return e;
}

/* ---- the cursor ---- */

void ghost_trace_cursor_init(GhostTraceCursor *c, const GhostTrace *t, uint32_t r0) {
        assert_return(c, );
        *c = (GhostTraceCursor) { .trace = t, .r0 = r0, .last = r0 };
}

static uint64_t cursor_volume_ticks(const GhostTraceCursor *c) {
        return (uint64_t) floor(c->v / c->trace->ml_per_tick + 1e-9);
}

uint64_t ghost_trace_cursor_ticks(const GhostTraceCursor *c) {
        assert_return(c && c->trace, 0);
        return cursor_volume_ticks(c) + c->e;
}

int ghost_trace_next(GhostTraceCursor *c, uint64_t *ret_usec, uint32_t *ret_reading) {
        const GhostTrace *t;
        uint64_t end;

        assert_return(c && c->trace, -EINVAL);
        t = c->trace;
        end = ghost_trace_end_usec(t);

        /* Report k covers (t_{k-1}, t_k]; the last one is the first at or after the end. */
        while (c->k * t->interval_usec < end) {
                uint64_t k = ++c->k, tk = k * t->interval_usec;
                double j = t->jitter ? jitter_table[(k - 1) % ELEMENTSOF(jitter_table)] : 1.0;
                uint32_t reading;

                c->v += j * (ghost_trace_volume(t, (double) tk / 1e6) -
                             ghost_trace_volume(t, (double) (tk - t->interval_usec) / 1e6));
                while (c->next_event < t->n_events && t->events[c->next_event].time_usec <= tk)
                        c->e += t->events[c->next_event++].ticks;

                /* u32 arithmetic: a board's counter wraps. */
                reading = c->r0 + (uint32_t) cursor_volume_ticks(c) + (uint32_t) c->e;
                if (reading == c->last)
                        continue;
                c->last = reading;
                if (ret_usec)
                        *ret_usec = tk;
                if (ret_reading)
                        *ret_reading = reading;
                return 1;
        }
        return 0;
}

/* ---- the text form ---- */

static int parse_number(const char *s, const char *end_chars, double *ret, const char **ret_end) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || !isfinite(v) || v < 0)
                return -EINVAL;
        if (*end && !strchr(end_chars, *end))
                return -EINVAL;
        *ret = v;
        *ret_end = end;
        return 0;
}

/* "<seconds>:<rate>" or "<seconds>:<from>..<to>", ending at the end of s or at one of end_chars. */
static int parse_segment(const char *s, const char *end_chars, GhostTraceSegment *ret, const char **ret_end) {
        GhostTraceSegment g;
        const char *p;

        const char *range;
        char from[64];

        if (parse_number(s, ":", &g.seconds, &p) < 0 || *p != ':')
                return -EINVAL;
        s = p + 1;
        /* strtod() would read "1." of "1..20": split at ".." first. */
        range = strstr(s, "..");
        if (range && (size_t) (range - s) < strcspn(s, end_chars)) {
                if ((size_t) (range - s) >= sizeof from)
                        return -EINVAL;
                memcpy(from, s, (size_t) (range - s));
                from[range - s] = '\0';
                if (parse_number(from, "", &g.from, &p) < 0 || parse_number(range + 2, end_chars, &g.to, &p) < 0)
                        return -EINVAL;
        } else {
                if (parse_number(s, end_chars, &g.from, &p) < 0)
                        return -EINVAL;
                g.to = g.from;
        }
        if (*p && !strchr(end_chars, *p))
                return -EINVAL;
        if (!segment_valid(g.seconds, g.from, g.to))
                return -EINVAL;
        *ret = g;
        *ret_end = p;
        return 0;
}

static int parse_item(GhostTrace *t, const char *item, const char **ret_what) {
        const char *v, *p;
        int r;

        if ((v = startswith(item, "c="))) {
                double c;
                if (parse_number(v, "", &c, &p) < 0 || c <= 0) {
                        *ret_what = "expected a calibration > 0 (mL per tick)";
                        return -EINVAL;
                }
                t->ml_per_tick = c;
                return 0;
        }
        if ((v = startswith(item, "jitter="))) {
                if (streq(v, "on"))
                        t->jitter = true;
                else if (streq(v, "off"))
                        t->jitter = false;
                else {
                        *ret_what = "expected jitter=on or jitter=off";
                        return -EINVAL;
                }
                return 0;
        }
        if ((v = startswith(item, "interval="))) {
                double s;
                if (parse_number(v, "", &s, &p) < 0 || s < 0.001 || s > 60) {
                        *ret_what = "expected an interval from 0.001 to 60 s";
                        return -EINVAL;
                }
                t->interval_usec = (uint64_t) llround(s * 1e6);
                return 0;
        }
        if (item[0] == '@') {
                GhostTraceSegment segs[64];
                size_t n = 0;
                double start;

                *ret_what = "expected @<start>=<seconds>:<rate>[+<seconds>:<rate>...]";
                if (parse_number(item + 1, "=", &start, &p) < 0 || *p != '=' || start > GHOST_TRACE_MAX_SECONDS)
                        return -EINVAL;
                do {
                        if (n >= ELEMENTSOF(segs))
                                return -EINVAL;
                        if (parse_segment(p + 1, "+", &segs[n++], &p) < 0)
                                return -EINVAL;
                } while (*p == '+');
                r = ghost_trace_add_overlay(t, start, segs, n);
                if (r == -E2BIG)
                        *ret_what = "too many items";
                return r;
        }
        if (item[0] == '!') {
                double time, ticks, count = 1, every = 0;

                *ret_what = "expected !<time>=<ticks>[x<count>/<every>]";
                if (parse_number(item + 1, "=", &time, &p) < 0 || *p != '=')
                        return -EINVAL;
                if (parse_number(p + 1, "x", &ticks, &p) < 0 || ticks < 1 || ticks > UINT32_MAX ||
                    ticks != floor(ticks))
                        return -EINVAL;
                if (*p == 'x') {
                        if (parse_number(p + 1, "/", &count, &p) < 0 || *p != '/' || count < 1 ||
                            count != floor(count) || count > GHOST_TRACE_MAX_ITEMS)
                                return -EINVAL;
                        if (parse_number(p + 1, "", &every, &p) < 0 || every <= 0)
                                return -EINVAL;
                }
                for (double i = 0; i < count; i++) {
                        double at = time + i * every;
                        if (at > GHOST_TRACE_MAX_SECONDS)
                                return -EINVAL;
                        r = ghost_trace_add_event(t, at, (uint64_t) ticks);
                        if (r == -E2BIG)
                                *ret_what = "too many items";
                        if (r < 0)
                                return r;
                }
                return 0;
        }

        GhostTraceSegment g;
        *ret_what = "expected <seconds>:<rate> or <seconds>:<from>..<to>";
        if (parse_segment(item, "", &g, &p) < 0)
                return -EINVAL;
        r = ghost_trace_add_segment(t, g.seconds, g.from, g.to);
        if (r == -E2BIG)
                *ret_what = "too many items";
        return r;
}

int ghost_trace_parse(const char *text, GhostTrace **ret, char **ret_error) {
        _cleanup_(ghost_trace_freep) GhostTrace *t = NULL;
        const char *p;
        int r;

        assert_return(text, -EINVAL);
        assert_return(ret, -EINVAL);

        r = ghost_trace_new(&t);
        if (r < 0)
                return r;

        p = text;
        for (;;) {
                char item[256];
                const char *what = NULL;
                size_t l;

                p += strspn(p, " \t\r\n,");
                if (*p == '#') {
                        p += strcspn(p, "\n");
                        continue;
                }
                if (!*p)
                        break;
                l = strcspn(p, " \t\r\n,#");
                if (l >= sizeof item)
                        return strdup_error(ret_error, -EINVAL, "%.40s...: item too long", p);
                memcpy(item, p, l);
                item[l] = '\0';
                p += l;

                r = parse_item(t, item, &what);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return strdup_error(ret_error, r, "%s: %s", item, what ?: "bad item");
        }
        if (trace_items(t) == 0)
                return strdup_error(ret_error, -EINVAL, "empty trace: no segment, overlay or event");
        *ret = TAKE_PTR(t);
        return 0;
}
