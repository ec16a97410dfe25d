/* Saving a calibration in the taps file (calibration.md section 4.1): the line-level edit that
 * changes one tap's calibration and keeps everything else byte for byte, and the atomic replacement
 * of the file that refuses to overwrite an edit someone else made in the meantime. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* "# calibration 2026-11-26T12:00:00Z: ..." and the like, the line a calibration leaves above its key. */
bool taps_edit_is_provenance(const char *line, size_t len);

/* Step 3: the new text of a taps file 'text' ('len' bytes, may be empty) in which the tap 'meter'
 * has the calibration 'ml_per_tick' (already rounded with calibration_round6()), with the comment
 * line 'provenance' (without its line ending) directly above its key. *ret_applied is the value a
 * reload of the new text gives the tap (1 / the written value for a ticks_per_ml key), *ret_key the
 * key written ("ml_per_tick" or "ticks_per_ml", static). Only -ENOMEM fails. */
int taps_edit_calibration(const char *text, size_t len, const char *meter, double ml_per_tick,
                          const char *provenance, char **ret_text, size_t *ret_len, double *ret_applied,
                          const char **ret_key);

typedef struct TapsFileStore {
        const char *path;               /* --taps_file, not empty */
        const char *meter;
        double ml_per_tick;             /* rounded */
        const char *provenance;
        /* Step 4: the new text must load and give the tap *ret_ml_per_tick; else -EINVAL with a
         * message (nothing is written). */
        int (*validate)(const char *name, const char *text, size_t len, const char *meter,
                        double *ret_ml_per_tick, char **ret_error, void *userdata);
        /* Tests: called after the temporary file is written, before the target is checked again
         * and replaced. */
        void (*before_replace)(const char *target, void *userdata);
        void *userdata;
} TapsFileStore;

#define TAPS_FILE_STORE_ATTEMPTS 3

/* Steps 1-5: resolves symbolic links (the link stays, its target is rewritten), reads the file on
 * disk (absent = empty), edits and validates it, writes ".<name>.XXXXXX" beside it with the old
 * file's mode (0644 for a new one) and owner where permitted, fsyncs it, replaces the target
 * unless it changed since it was read (then it starts over, at most TAPS_FILE_STORE_ATTEMPTS times)
 * and fsyncs the directory. Returns 0 with the target path and the value a reload gives the tap;
 * on any failure the old file is as it was, no temporary file is left, and *ret_reason says why
 * in a few words ("Permission denied (...)", "the file keeps changing", ...). */
int taps_file_store(const TapsFileStore *s, char **ret_target, double *ret_applied, char **ret_reason);
