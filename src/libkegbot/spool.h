/* The durable drink queue of server mode (core-behaviour.md section 10.2): one JSON file per drink
 * in <state_dir>/spool/, written tmp + fsync + rename + directory fsync, uploaded oldest first;
 * dead letters in spool/failed/. Only a bounded window of queue entries is held in memory. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drink.h"
#include "macro.h"

#define SPOOL_FILE_MAX (64U * 1024U)    /* larger spool files are corrupt by definition */

/* The file format (core-behaviour.md section 10.2): one JSON object and a newline, the drink's
 * fields in the units of the file (pour_time_unix in seconds, pour_boottime_ns in nanoseconds,
 * RFC 3339 strings; a version 1 file of any earlier release reads back unchanged). A drink whose
 * upload is in doubt (10.5) carries "in_doubt":{"pour_time":<the Unix seconds sent>}. Parsing trusts
 * nothing: -EBADMSG for anything that is not a complete, valid record; a UUID in upper case is read
 * in lowercase (util-uuid.h). -EINVAL from writing: text of the drink is not valid UTF-8. */
int spool_drink_to_json(const Drink *d, char **ret);
int spool_drink_from_json(const char *buf, size_t len, Drink **ret);

/* Spool file names: "<20-digit seq>-<uuid>.json", the UUID in lowercase (names are matched
 * exactly; the spool creates no other). */
int spool_name_parse(const char *name, uint64_t *ret_seq, char ret_uuid[static UUID_STRING_MAX]);

typedef struct Spool Spool;

/* Opens (creating with mode 0750) 'dir' and 'dir'/failed, removes leftover ".*.tmp" files, checks
 * every queued file (a bad one is moved to failed/<name>.corrupt with an ERROR) and counts both
 * areas. Errors are logged. */
int spool_open(Spool **ret, const char *dir);
Spool *spool_free(Spool *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Spool *, spool_free);

/* Appends a drink at the tail (d->seq is assigned, and set in the caller's copy). Returns 0 when the
 * drink is durable, < 0 when it was not written (logged at ERROR; nothing is kept): -EBADMSG for a
 * drink whose text is not valid UTF-8 (it could never be read back), -ENOSPC, -EIO and the like
 * from the disk. */
int spool_put(Spool *s, Drink *d);

/* Rewrites a queued drink's file with d's fields (same seq and uuid), atomically: e.g. to mark it
 * in doubt before its upload is sent. -ENOENT if not queued. */
int spool_update(Spool *s, const Drink *d);

/* Whether a drink with this uuid is queued or in failed/ (> 0) or not (0). */
int spool_contains(Spool *s, const char *uuid);

/* The oldest queued drink (caller frees), or *ret = NULL and 0 when the queue is empty. Corrupt or
 * vanished files met on the way are quarantined/dropped with an ERROR and skipped. */
int spool_peek(Spool *s, Drink **ret);

/* A UUID argument may be spelled in either case (util-uuid.h); -EINVAL if it is no UUID. */

/* Uploaded: forget it (unlink, fsync spool/). -ENOENT if not queued. */
int spool_remove(Spool *s, const char *uuid);

/* Move a queued drink to failed/ with the reason. -ENOENT if not queued. Reason text that is not
 * valid UTF-8 is stored escaped (util-escape.h). */
int spool_fail(Spool *s, const char *uuid, const DrinkFailure *f);

/* Move failed drinks back to the tail with a new seq (same uuid and pour data). uuid NULL = all of
 * them, in their old order. *ret_n (may be NULL) gets how many were re-queued. -ENOENT if a given
 * uuid is not in failed/. */
int spool_requeue_failed(Spool *s, const char *uuid, size_t *ret_n);

typedef enum SpoolArea {
        SPOOL_QUEUED,
        SPOOL_FAILED,
} SpoolArea;

/* Calls cb for every drink of the area in seq order (drinks are loaded one at a time; corrupt
 * files are skipped). A negative return of cb stops the walk and is returned. */
typedef int (*SpoolListFunc)(const Drink *d, void *userdata);
int spool_list(Spool *s, SpoolArea area, SpoolListFunc cb, void *userdata);

size_t spool_n_pending(Spool *s);       /* queued */
size_t spool_n_failed(Spool *s);        /* re-queueable drinks in failed/ */
size_t spool_n_corrupt(Spool *s);       /* quarantined *.corrupt files in failed/ */
uint64_t spool_last_seq(Spool *s);

/* Test hook: the window of queue entries held in memory (default 256, minimum 1). */
void spool_set_window(Spool *s, size_t n);
