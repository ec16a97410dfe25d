/* Throughput of the KBSP host decoder on a large synthetic board stream (meter_status, hello and
 * temperature frames with a little garbage and some damaged frames), fed in read()-sized chunks and
 * whole, with and without typed decoding of each frame. Usage: bench-kbsp [MiB] (default 64).
 * Target: every case >= 1 million frames/s (twenty times the board path's flood target of 50,000
 * frames/s, so that decoding is never what limits kegboard_daemon). The last line is PASS or
 * FAIL: <which> (exit 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kbsp.h"

#define MFRAMES_TARGET 1.0

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;
static uint64_t rng(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static size_t build_stream(uint8_t *s, size_t size) {
        static const char *const meters[] = { "flow0", "flow1", "flow2", "flow3" };
        uint32_t ticks[4] = {};
        size_t n = 0;

        while (n + KBSP_MAX_FRAME + 32 < size) {
                uint8_t f[KBSP_MAX_FRAME];
                uint64_t r = rng() % 1000;
                int l;

                if (r < 20)
                        l = kbsp_encode_hello(f, sizeof f, 18, "KB-0000-0000-1A2B3C4D",
                                              (uint32_t) (rng() % 86400000), 3);
                else if (r < 120)
                        l = kbsp_encode_temperature_reading(f, sizeof f, "thermo-6b0316621d4cff28",
                                                            (int32_t) (rng() % 8000000));
                else {
                        unsigned m = (unsigned) (rng() % 4);
                        ticks[m] += (uint32_t) (rng() % 40);
                        l = kbsp_encode_meter_status(f, sizeof f, meters[m], ticks[m]);
                }
                if (l < 0)
                        abort();

                r = rng() % 1000;
                if (r < 5) {            /* line noise */
                        size_t g = rng() % 32;
                        for (size_t i = 0; i < g; i++)
                                s[n++] = (uint8_t) rng();
                } else if (r < 8)       /* damaged frame */
                        f[12 + rng() % (uint64_t) (l - 12)] ^= 0x5a;
                else if (r < 10)        /* cut by a reset */
                        l = (int) (rng() % (uint64_t) l);
                memcpy(s + n, f, (size_t) l);
                n += (size_t) l;
        }
        return n;
}

typedef struct Result {
        uint64_t frames, errors, garbage, checksum;
} Result;

static Result run(const uint8_t *s, size_t n, size_t chunk, bool typed) {
        KbspDecoder d;
        KbspEvent ev;
        Result res = {};

        kbsp_decoder_init(&d);
        for (size_t off = 0; off < n; off += chunk) {
                size_t c = n - off < chunk ? n - off : chunk;
                (void) kbsp_decoder_feed(&d, s + off, c);
                while (kbsp_decoder_next(&d, &ev) > 0) {
                        if (ev.type == KBSP_EVENT_FRAME) {
                                res.frames++;
                                if (typed) {
                                        KbspMessage m;
                                        kbsp_frame_decode(ev.frame, &m);
                                        res.checksum += m.message_id == KBSP_MSG_METER_STATUS ?
                                                m.meter_status.meter_reading : m.message_id;
                                } else
                                        res.checksum += ev.frame->crc;
                        } else if (ev.type == KBSP_EVENT_ERROR)
                                res.errors++;
                        else
                                res.garbage += ev.size;
                }
        }
        if (kbsp_decoder_finish(&d, &ev) > 0)
                res.garbage += ev.size;
        return res;
}

int main(int argc, char **argv) {
        size_t mib = argc > 1 ? (size_t) strtoul(argv[1], NULL, 10) : 64;
        size_t size = (mib ? mib : 64) << 20, n;
        uint8_t *s = malloc(size);
        char failed[512] = "";
        static const struct {
                const char *what;
                size_t chunk;
                bool typed;
        } cases[] = {
                { "framing, 4 KiB reads", 4096, false },
                { "framing, whole buffer", SIZE_MAX, false },
                { "framing + typed decode, 4 KiB reads", 4096, true },
                { "framing, 64-byte reads", 64, false },
        };

        if (!s) {
                fprintf(stderr, "out of memory\n");
                return 1;
        }
        n = build_stream(s, size);
        printf("stream: %.1f MB of KBSP board output\n", (double) n / 1e6);

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                double best = 1e9;
                Result r = {};
                for (int rep = 0; rep < 3; rep++) {
                        double t0 = now();
                        r = run(s, n, cases[i].chunk, cases[i].typed);
                        double t = now() - t0;
                        if (t < best)
                                best = t;
                }
                double mframes = (double) r.frames / best / 1e6;
                printf("%-38s %8.1f MB/s  %7.2f Mframes/s (target >= %.1f)  (frames %llu, errors %llu, garbage bytes %llu, check %llu)\n",
                       cases[i].what, (double) n / best / 1e6, mframes, MFRAMES_TARGET,
                       (unsigned long long) r.frames, (unsigned long long) r.errors,
                       (unsigned long long) r.garbage, (unsigned long long) r.checksum);
                if (mframes < MFRAMES_TARGET || r.frames == 0)
                        snprintf(failed + strlen(failed), sizeof failed - strlen(failed), "%s%s",
                                 failed[0] ? ", " : "", cases[i].what);
        }
        free(s);
        if (failed[0]) {
                printf("FAIL: %s\n", failed);
                return 1;
        }
        printf("PASS\n");
        return 0;
}
