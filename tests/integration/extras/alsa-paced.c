/* A test ALSA PCM (an ioplug plugin, type "kegbot_paced") that behaves like a sound card without
 * making a sound: it takes frames no faster than the stream's rate, so a buffer fills up, a
 * non-blocking write says -EAGAIN, and a sound takes as long as it lasts. Its poll descriptor is a
 * timerfd ticking once per period while the stream runs; an empty buffer is an underrun (-EPIPE),
 * as on a card. Used under the `file` plugin, which records what was written:
 *
 *   pcm_type.kegbot_paced { lib "<build>/tests/integration/extras/libasound_module_pcm_kegbot_paced.so" }
 *   pcm.!default { type file; slave.pcm { type kegbot_paced }; file "..."; format "raw" }
 */
#include <alsa/asoundlib.h>
#include <alsa/pcm_external.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef struct Paced {
        snd_pcm_ioplug_t io;
        int timerfd;
        uint64_t start_ns;      /* CLOCK_MONOTONIC when the stream started, 0 = stopped */
} Paced;

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Frames played since the start: what the clock allows. */
static uint64_t paced_played(const Paced *p) {
        if (p->start_ns == 0)
                return 0;
        return (now_ns() - p->start_ns) * p->io.rate / 1000000000u;
}

static int paced_arm(Paced *p, bool on) {
        uint64_t period_ns = on ? (uint64_t) p->io.period_size * 1000000000u / p->io.rate : 0;
        struct itimerspec its = {
                .it_value = { .tv_sec = (time_t) (period_ns / 1000000000u), .tv_nsec = (long) (period_ns % 1000000000u) },
        };

        its.it_interval = its.it_value;
        return timerfd_settime(p->timerfd, 0, &its, NULL) < 0 ? -errno : 0;
}

static int paced_start(snd_pcm_ioplug_t *io) {
        Paced *p = io->private_data;

        p->start_ns = now_ns();
        return paced_arm(p, true);
}

static int paced_stop(snd_pcm_ioplug_t *io) {
        Paced *p = io->private_data;

        p->start_ns = 0;
        return paced_arm(p, false);
}

static snd_pcm_sframes_t paced_pointer(snd_pcm_ioplug_t *io) {
        Paced *p = io->private_data;
        uint64_t played = paced_played(p);

        if (p->start_ns != 0 && played > io->appl_ptr)
                return -EPIPE;          /* the buffer ran empty */
        return (snd_pcm_sframes_t) (played % io->buffer_size);
}

static snd_pcm_sframes_t paced_transfer(snd_pcm_ioplug_t *io, const snd_pcm_channel_area_t *areas,
                                        snd_pcm_uframes_t offset, snd_pcm_uframes_t size) {
        return (snd_pcm_sframes_t) size;        /* played into thin air, at the pointer's pace */
}

static int paced_prepare(snd_pcm_ioplug_t *io) {
        return paced_stop(io);
}

static int paced_poll_revents(snd_pcm_ioplug_t *io, struct pollfd *pfd, unsigned int nfds, unsigned short *revents) {
        Paced *p = io->private_data;
        uint64_t ticks, played = paced_played(p), queued;

        if (read(p->timerfd, &ticks, sizeof(ticks)) != (ssize_t) sizeof(ticks))
                ticks = 0;     /* nothing expired: the pacing below still holds */
        queued = io->appl_ptr > played ? io->appl_ptr - played : 0;
        *revents = queued + io->period_size <= io->buffer_size ? POLLOUT : 0;
        return 0;
}

static int paced_close(snd_pcm_ioplug_t *io) {
        Paced *p = io->private_data;

        close(p->timerfd);
        free(p);
        return 0;
}

static const snd_pcm_ioplug_callback_t paced_callbacks = {
        .start = paced_start,
        .stop = paced_stop,
        .pointer = paced_pointer,
        .transfer = paced_transfer,
        .prepare = paced_prepare,
        .poll_revents = paced_poll_revents,
        .close = paced_close,
};

SND_PCM_PLUGIN_DEFINE_FUNC(kegbot_paced) {
        static const unsigned access_list[] = { SND_PCM_ACCESS_RW_INTERLEAVED };
        static const unsigned format_list[] = { SND_PCM_FORMAT_S16_LE };
        snd_config_iterator_t i, next;
        Paced *p;
        int r;

        snd_config_for_each(i, next, conf) {
                const char *id;
                if (snd_config_get_id(snd_config_iterator_entry(i), &id) < 0)
                        continue;
                if (strcmp(id, "comment") == 0 || strcmp(id, "type") == 0 || strcmp(id, "hint") == 0)
                        continue;
                SNDERR("Unknown field %s", id);
                return -EINVAL;
        }
        if (stream != SND_PCM_STREAM_PLAYBACK)
                return -EINVAL;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (p->timerfd < 0) {
                r = -errno;
                free(p);
                return r;
        }
        p->io.version = SND_PCM_IOPLUG_VERSION;
        p->io.name = "kegbot paced test PCM";
        p->io.callback = &paced_callbacks;
        p->io.private_data = p;
        p->io.poll_fd = p->timerfd;
        p->io.poll_events = POLLIN;
        p->io.flags = SND_PCM_IOPLUG_FLAG_MONOTONIC;

        r = snd_pcm_ioplug_create(&p->io, name, stream, mode);
        if (r < 0) {
                close(p->timerfd);
                free(p);
                return r;
        }
        if ((r = snd_pcm_ioplug_set_param_list(&p->io, SND_PCM_IOPLUG_HW_ACCESS, 1, access_list)) < 0 ||
            (r = snd_pcm_ioplug_set_param_list(&p->io, SND_PCM_IOPLUG_HW_FORMAT, 1, format_list)) < 0 ||
            (r = snd_pcm_ioplug_set_param_minmax(&p->io, SND_PCM_IOPLUG_HW_CHANNELS, 1, 8)) < 0 ||
            (r = snd_pcm_ioplug_set_param_minmax(&p->io, SND_PCM_IOPLUG_HW_RATE, 4000, 192000)) < 0 ||
            (r = snd_pcm_ioplug_set_param_minmax(&p->io, SND_PCM_IOPLUG_HW_PERIOD_BYTES, 64, 64 * 1024)) < 0 ||
            (r = snd_pcm_ioplug_set_param_minmax(&p->io, SND_PCM_IOPLUG_HW_PERIODS, 2, 64)) < 0) {
                snd_pcm_ioplug_delete(&p->io);
                return r;
        }
        *pcmp = p->io.pcm;
        return 0;
}

SND_PCM_PLUGIN_SYMBOL(kegbot_paced);
