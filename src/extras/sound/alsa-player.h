/* sound_server's own player: libsndfile decodes the file (WAV, FLAC, Ogg Vorbis and the other
 * formats it knows) to 16-bit frames, libasound plays them on an ALSA PCM opened non-blocking and
 * fed from the event loop whenever the device has room. One sound at a time: a new one stops the
 * one playing. The PCM is open only while a sound plays, so an idle sound_server holds no device
 * and has nothing to wake up for. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct AlsaPlayer AlsaPlayer;

int alsa_player_new(AlsaPlayer **ret, sd_event *event, const char *device);
/* Stops the sound playing, if any. */
AlsaPlayer *alsa_player_free(AlsaPlayer *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(AlsaPlayer *, alsa_player_free);

/* Stops what plays and starts 'file'. A file that cannot be read or decoded and an ALSA error are
 * logged as WARNINGs with the reason (here or later, while it plays) and returned. */
int alsa_player_play(AlsaPlayer *p, const char *file);
void alsa_player_stop(AlsaPlayer *p);
bool alsa_player_is_playing(const AlsaPlayer *p);

/* Opens the device and closes it again: 0, or a negative errno with the ALSA reason in *ret_reason
 * (static text). For the start-up check. */
int alsa_player_probe(const char *device, const char **ret_reason);
