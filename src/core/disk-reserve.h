/* A space reserve in the state directory, so that drinks stay durable when the disk fills up: a
 * preallocated file (<state_dir>/space-reserve) sized for at least DISK_RESERVE_DRINKS drinks
 * (spool files or drinks.log lines, and the meters.json rewrites that go with them). A write that
 * fails with ENOSPC releases it and is tried again; it is set aside again once the disk has room. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

#define DISK_RESERVE_FILE "space-reserve"
#define DISK_RESERVE_DRINKS 1000U

typedef struct DiskReserve DiskReserve;

/* Sets the reserve aside (or keeps the one a previous run left). Not enough room is no error: the
 * reserve is then not held (WARNING) and disk_reserve_refill() tries again later. -errno only for
 * an unusable directory or out of memory. */
int disk_reserve_new(DiskReserve **ret, const char *state_dir);
DiskReserve *disk_reserve_free(DiskReserve *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(DiskReserve *, disk_reserve_free);

/* A write into the state directory failed with 'error' (negative errno). For -ENOSPC while the
 * reserve is held, it is released (ERROR logged) and true returned: try the write again. */
bool disk_reserve_release_for(DiskReserve *r, int error);

/* Sets the reserve aside again if the disk has room for it and as much again. True if it is held. */
bool disk_reserve_refill(DiskReserve *r);

bool disk_reserve_held(const DiskReserve *r);
uint64_t disk_reserve_size(const DiskReserve *r);
