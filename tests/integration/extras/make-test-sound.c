/* Writes a test sound with libsndfile: make-test-sound PATH wav|flac|ogg RATE CHANNELS FRAMES SEED.
 * Sample i of channel c is ((i * 97 + c * 13 + SEED * 1009) % 4001 - 2000) * 8 as 16-bit PCM, so a
 * test can compute what a lossless file decodes to (extrastest.test_sound_samples()). */
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
        SF_INFO info = {};
        SNDFILE *f;
        long frames, seed;
        short *buf;

        if (argc != 7) {
                fprintf(stderr, "usage: %s PATH wav|flac|ogg RATE CHANNELS FRAMES SEED\n", argv[0]);
                return 2;
        }
        if (strcmp(argv[2], "wav") == 0)
                info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
        else if (strcmp(argv[2], "flac") == 0)
                info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
        else if (strcmp(argv[2], "ogg") == 0)
                info.format = SF_FORMAT_OGG | SF_FORMAT_VORBIS;
        else
                return 2;
        info.samplerate = atoi(argv[3]);
        info.channels = atoi(argv[4]);
        frames = atol(argv[5]);
        seed = atol(argv[6]);
        if (info.samplerate <= 0 || info.channels <= 0 || frames < 0)
                return 2;

        buf = calloc((size_t) frames * (size_t) info.channels + 1, sizeof(short));
        if (!buf)
                return 1;
        for (long i = 0; i < frames; i++)
                for (int c = 0; c < info.channels; c++)
                        buf[i * info.channels + c] = (short) (((i * 97 + c * 13 + seed * 1009) % 4001 - 2000) * 8);

        f = sf_open(argv[1], SFM_WRITE, &info);
        if (!f) {
                fprintf(stderr, "%s: %s\n", argv[1], sf_strerror(NULL));
                return 1;
        }
        if (sf_writef_short(f, buf, frames) != frames) {
                fprintf(stderr, "%s: %s\n", argv[1], sf_strerror(f));
                return 1;
        }
        sf_close(f);
        free(buf);
        return 0;
}
