/* sound_server's ALSA player: see alsa-player.h.
 *
 * Feeding: the PCM's poll descriptors are watched on the loop and frames are written until the
 * device says -EAGAIN. Some PCMs have descriptors epoll cannot watch (the null plugin polls
 * /dev/null): those are always ready, so a timer feeds them one period at a time instead. Once
 * the file is decoded and written, the descriptors are no longer watched; a timer waits for what
 * is still buffered to be played (snd_pcm_delay()), then the PCM is closed. Nothing blocks. */
#include <alsa/asoundlib.h>
#include <errno.h>
#include <inttypes.h>
#include <sndfile.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define LOG_COMPONENT "sound"
#include "log.h"

#include "alsa-player.h"
#include "util-event.h"
#include "util-string.h"

/* How much is buffered ahead: enough to ride out a busy moment of the loop. */
#define LATENCY_USEC (500 * USEC_PER_MSEC)
#define CHANNELS_MAX 32
/* The end of a sound may be noticed this late. */
#define END_ACCURACY_USEC (10 * USEC_PER_MSEC)

struct AlsaPlayer {
        sd_event *event;
        char *device;

        /* The sound playing; pcm == NULL when none. */
        char *file;
        SNDFILE *sf;
        SF_INFO info;
        snd_pcm_t *pcm;
        snd_pcm_uframes_t period;       /* frames */
        snd_pcm_uframes_t buffer;       /* frames */
        struct pollfd *pfds;
        sd_event_source **io;
        size_t n_io;
        bool pollable;
        sd_event_source *timer;         /* feeds an unpollable PCM; waits for the end */
        int16_t *buf;                   /* one period of decoded frames */
        size_t have, off;               /* frames in buf not yet written, and where they start */
        bool eof;
        bool finishing;                 /* all written: waiting for it to be played */
        uint64_t frames_written;
};

static void on_alsa_lib_error(const char *file, int line, const char *function, int err, const char *fmt, ...) {
        _cleanup_(freep) char *text = NULL;
        va_list ap;

        /* libasound would print to stderr; its details go to the debug log, the caller says what
         * failed at WARNING. */
        va_start(ap, fmt);
        text = strdup_vprintf(fmt, ap);
        va_end(ap);
        log_debug("ALSA: %s: %s%s%s", function ? function : "?", text ? text : "?", err ? ": " : "",
                  err ? snd_strerror(err) : "");
}

int alsa_player_new(AlsaPlayer **ret, sd_event *event, const char *device) {
        AlsaPlayer *p;

        assert_return(ret, -EINVAL);
        assert_return(event, -EINVAL);
        assert_return(!isempty(device), -EINVAL);

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->device = strdup(device);
        if (!p->device) {
                free(p);
                return -ENOMEM;
        }
        p->event = sd_event_ref(event);
        (void) snd_lib_error_set_handler(on_alsa_lib_error);
        *ret = p;
        return 0;
}

void alsa_player_stop(AlsaPlayer *p) {
        if (!p)
                return;
        for (size_t i = 0; i < p->n_io; i++)
                sd_event_source_disable_unref(p->io[i]);
        free(p->io);
        p->io = NULL;
        p->n_io = 0;
        free(p->pfds);
        p->pfds = NULL;
        event_timer_disarm(p->timer);
        if (p->pcm) {
                /* Silence at once: a new sound must not wait for the old one. */
                (void) snd_pcm_drop(p->pcm);
                (void) snd_pcm_close(p->pcm);
                p->pcm = NULL;
        }
        if (p->sf) {
                (void) sf_close(p->sf);
                p->sf = NULL;
        }
        free(p->buf);
        p->buf = NULL;
        free(p->file);
        p->file = NULL;
        p->have = p->off = 0;
        p->eof = p->finishing = false;
        p->frames_written = 0;
}

AlsaPlayer *alsa_player_free(AlsaPlayer *p) {
        if (!p)
                return NULL;
        alsa_player_stop(p);
        sd_event_source_disable_unref(p->timer);
        sd_event_unref(p->event);
        free(p->device);
        free(p);
        return NULL;
}

bool alsa_player_is_playing(const AlsaPlayer *p) {
        return p && p->pcm;
}

static uint64_t frames_to_usec(const AlsaPlayer *p, uint64_t frames) {
        return frames * USEC_PER_SEC / (uint64_t) p->info.samplerate;
}

static void player_fail(AlsaPlayer *p, int error, const char *what) {
        log_warning("Cannot play %s on ALSA device '%s': %s: %s", p->file, p->device, what, snd_strerror(error));
        alsa_player_stop(p);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void player_arm_timer(AlsaPlayer *p, uint64_t usec, uint64_t accuracy) {
        int r = event_timer_arm_relative(p->event, &p->timer, usec, accuracy, on_timer, p);
        if (r < 0) {
                log_warning_errno(r, "Cannot arm the playback timer: %m");
                alsa_player_stop(p);
        }
}

/* Everything is written: close once it has been played. */
static void player_check_end(AlsaPlayer *p) {
        snd_pcm_sframes_t delay = 0;
        snd_pcm_state_t state = snd_pcm_state(p->pcm);
        int r;

        if (!p->finishing) {
                p->finishing = true;
                for (size_t i = 0; i < p->n_io; i++)
                        (void) sd_event_source_set_enabled(p->io[i], SD_EVENT_OFF);
                /* A sound shorter than the start threshold was never started. */
                if (state == SND_PCM_STATE_PREPARED && p->frames_written > 0) {
                        r = snd_pcm_start(p->pcm);
                        if (r < 0) {
                                player_fail(p, r, "start");
                                return;
                        }
                        state = snd_pcm_state(p->pcm);
                }
        }

        r = snd_pcm_delay(p->pcm, &delay);
        if (r < 0 || delay <= 0 || state != SND_PCM_STATE_RUNNING) {
                /* An underrun after the last frame is the end of the sound, not an error. */
                log_debug("Played %s (%" PRIu64 " frames)", p->file, p->frames_written);
                alsa_player_stop(p);
                return;
        }
        player_arm_timer(p, frames_to_usec(p, (uint64_t) delay) + END_ACCURACY_USEC, END_ACCURACY_USEC);
}

/* Decodes and writes until the device is full or the file ends. */
static void player_feed(AlsaPlayer *p) {
        uint64_t written = 0;

        while (p->pcm) {
                snd_pcm_sframes_t n;

                if (p->have == 0 && !p->eof) {
                        sf_count_t got = sf_readf_short(p->sf, p->buf, (sf_count_t) p->period);

                        if (got <= 0) {
                                if (sf_error(p->sf) != SF_ERR_NO_ERROR) {
                                        log_warning("Cannot play %s: decoding failed: %s", p->file, sf_strerror(p->sf));
                                        alsa_player_stop(p);
                                        return;
                                }
                                p->eof = true;
                        }
                        p->have = got > 0 ? (size_t) got : 0;
                        p->off = 0;
                }
                if (p->have == 0) {
                        player_check_end(p);
                        return;
                }
                if (!p->pollable && written >= p->buffer)
                        break;          /* an always-ready PCM: one buffer per turn of the loop */

                n = snd_pcm_writei(p->pcm, p->buf + p->off * (size_t) p->info.channels, p->have);
                if (n == -EAGAIN)
                        break;
                if (n < 0) {
                        int r = snd_pcm_recover(p->pcm, (int) n, 1);
                        if (r < 0) {
                                player_fail(p, (int) n, "write");
                                return;
                        }
                        log_debug("ALSA device '%s' recovered from %s", p->device, snd_strerror((int) n));
                        continue;
                }
                p->off += (size_t) n;
                p->have -= (size_t) n;
                p->frames_written += (uint64_t) n;
                written += (uint64_t) n;
        }
        if (p->pcm && !p->pollable)
                player_arm_timer(p, frames_to_usec(p, p->period), frames_to_usec(p, p->period) / 4 + 1);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AlsaPlayer *p = userdata;

        if (!p->pcm)
                return 0;
        if (p->finishing)
                player_check_end(p);
        else
                player_feed(p);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AlsaPlayer *p = userdata;
        unsigned short rev = 0;
        int r;

        if (!p->pcm || p->finishing)
                return 0;
        for (size_t i = 0; i < p->n_io; i++)
                p->pfds[i].revents = p->pfds[i].fd == fd ? (short) revents : 0;
        r = snd_pcm_poll_descriptors_revents(p->pcm, p->pfds, (unsigned) p->n_io, &rev);
        if (r < 0) {
                player_fail(p, r, "poll");
                return 0;
        }
        /* POLLERR (an underrun, a suspend) is dealt with by the next write's recovery. */
        if (rev & (POLLOUT | POLLERR))
                player_feed(p);
        return 0;
}

/* Watches the PCM's descriptors; a descriptor epoll refuses (a regular file, /dev/null) is always
 * ready, and makes the PCM one that is fed by the timer. */
static int player_watch(AlsaPlayer *p) {
        int n, r;

        n = snd_pcm_poll_descriptors_count(p->pcm);
        if (n < 0)
                return n;
        p->pfds = calloc((size_t) MAX(n, 1), sizeof(struct pollfd));
        p->io = calloc((size_t) MAX(n, 1), sizeof(sd_event_source *));
        if (!p->pfds || !p->io)
                return -ENOMEM;
        n = snd_pcm_poll_descriptors(p->pcm, p->pfds, (unsigned) n);
        if (n < 0)
                return n;

        p->pollable = n > 0;
        for (int i = 0; i < n; i++) {
                uint32_t events = (uint32_t) p->pfds[i].events & (EPOLLIN | EPOLLOUT | EPOLLPRI);

                r = sd_event_add_io(p->event, &p->io[p->n_io], p->pfds[i].fd, events, on_io, p);
                if (r == -EPERM) {
                        p->pollable = false;
                        continue;
                }
                if (r < 0)
                        return r;
                p->n_io++;
        }
        if (!p->pollable) {
                for (size_t i = 0; i < p->n_io; i++)
                        p->io[i] = sd_event_source_disable_unref(p->io[i]);
                p->n_io = 0;
        }
        return 0;
}

int alsa_player_play(AlsaPlayer *p, const char *file) {
        int r;

        assert_return(p, -EINVAL);
        assert_return(file, -EINVAL);

        if (p->pcm)
                log_debug("Stopping %s for the next sound", p->file);
        alsa_player_stop(p);

        p->file = strdup(file);
        if (!p->file)
                return -ENOMEM;

        p->info = (SF_INFO) {};
        p->sf = sf_open(file, SFM_READ, &p->info);
        if (!p->sf) {
                log_warning("Cannot play %s: %s", file, sf_strerror(NULL));
                alsa_player_stop(p);
                return -EIO;
        }
        if (p->info.channels < 1 || p->info.channels > CHANNELS_MAX || p->info.samplerate < 1) {
                log_warning("Cannot play %s: %d channels at %d Hz is not supported", file, p->info.channels,
                            p->info.samplerate);
                alsa_player_stop(p);
                return -EINVAL;
        }

        r = snd_pcm_open(&p->pcm, p->device, SND_PCM_STREAM_PLAYBACK, SND_PCM_NONBLOCK);
        if (r < 0) {
                p->pcm = NULL;
                player_fail(p, r, "open");
                return r;
        }
        r = snd_pcm_set_params(p->pcm, SND_PCM_FORMAT_S16, SND_PCM_ACCESS_RW_INTERLEAVED,
                               (unsigned) p->info.channels, (unsigned) p->info.samplerate, 1, LATENCY_USEC);
        if (r >= 0)
                r = snd_pcm_get_params(p->pcm, &p->buffer, &p->period);
        if (r < 0) {
                player_fail(p, r, "set the format");
                return r;
        }
        p->period = MAX(p->period, (snd_pcm_uframes_t) 1);
        p->buf = malloc(p->period * (size_t) p->info.channels * sizeof(int16_t));
        if (!p->buf) {
                alsa_player_stop(p);
                return -ENOMEM;
        }
        r = player_watch(p);
        if (r < 0) {
                player_fail(p, r, "watch the device");
                return r;
        }

        log_info("Playing %s", file);
        player_feed(p);
        return 0;
}

int alsa_player_probe(const char *device, const char **ret_reason) {
        snd_pcm_t *pcm;
        int r;

        assert_return(device, -EINVAL);

        (void) snd_lib_error_set_handler(on_alsa_lib_error);
        r = snd_pcm_open(&pcm, device, SND_PCM_STREAM_PLAYBACK, SND_PCM_NONBLOCK);
        if (r < 0) {
                if (ret_reason)
                        *ret_reason = snd_strerror(r);
                return r;
        }
        (void) snd_pcm_close(pcm);
        return 0;
}
