/* The state directory's space reserve: see disk-reserve.h. */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define LOG_COMPONENT "DrinkManager"
#include "log.h"

#include "disk-reserve.h"
#include "util-io.h"

/* Per drink the worst case is a spool file of one block (server mode); meters.json rewrites and the
 * directory's growth need a few blocks more in all. */
#define EXTRA_BLOCKS 64U

struct DiskReserve {
        char *dir;
        int dir_fd;
        uint64_t size;
        bool held;
};

static uint64_t block_size(int dir_fd) {
        struct statvfs sv;
        uint64_t b = 4096;

        if (fstatvfs(dir_fd, &sv) >= 0 && sv.f_frsize > 0)
                b = sv.f_frsize;
        return MIN(MAX(b, (uint64_t) 512), (uint64_t) 65536);
}

static uint64_t free_bytes(int dir_fd) {
        struct statvfs sv;

        if (fstatvfs(dir_fd, &sv) < 0)
                return 0;
        return (uint64_t) sv.f_bavail * sv.f_frsize;
}

/* The file with all its blocks allocated, or an error (nothing left behind then). */
static int reserve_create(DiskReserve *r) {
        _cleanup_(closep) int fd = -1;
        struct stat st;
        int k;

        fd = openat(r->dir_fd, DISK_RESERVE_FILE, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) >= 0 && S_ISREG(st.st_mode) && (uint64_t) st.st_size == r->size &&
            (uint64_t) st.st_blocks * 512 >= r->size)
                return 0;       /* a previous run's reserve, complete */
        k = posix_fallocate(fd, 0, (off_t) r->size);
        if (k == EOPNOTSUPP || k == EINVAL) {
                /* No fallocate here: zeros allocate the blocks as well. A page of them on the stack,
                 * not a static one: a large constant would be mapped in the binary of every run. */
                char zeros[4096] = {};
                k = 0;
                if (ftruncate(fd, 0) < 0)
                        k = errno;
                for (uint64_t done = 0; k == 0 && done < r->size; done += sizeof zeros) {
                        int w = io_write_all(fd, zeros, (size_t) MIN((uint64_t) sizeof zeros, r->size - done));
                        if (w < 0)
                                k = -w;
                }
        }
        if (k == 0 && fsync(fd) < 0)
                k = errno;
        if (k != 0) {
                (void) unlinkat(r->dir_fd, DISK_RESERVE_FILE, 0);
                return -k;
        }
        (void) fsync(r->dir_fd);
        return 0;
}

int disk_reserve_new(DiskReserve **ret, const char *state_dir) {
        _cleanup_(disk_reserve_freep) DiskReserve *r = NULL;
        int k;

        assert_return(ret, -EINVAL);
        assert_return(!isempty(state_dir), -EINVAL);

        r = calloc(1, sizeof(DiskReserve));
        if (!r)
                return -ENOMEM;
        r->dir_fd = -1;
        r->dir = strdup(state_dir);
        if (!r->dir)
                return -ENOMEM;
        r->dir_fd = io_mkdir_p_open(state_dir, 0750);
        if (r->dir_fd < 0)
                return log_error_errno(r->dir_fd, "Cannot open state directory %s: %m", state_dir);
        r->size = (DISK_RESERVE_DRINKS + EXTRA_BLOCKS) * block_size(r->dir_fd);

        k = reserve_create(r);
        if (k < 0)
                log_warning_errno(k, "Cannot set aside %" PRIu64 " KiB in %s as a space reserve (%m): if the disk "
                                  "fills up, drinks wait in memory until there is room", r->size / 1024, state_dir);
        else {
                r->held = true;
                log_debug("Space reserve of %" PRIu64 " KiB set aside in %s/%s", r->size / 1024, state_dir,
                          DISK_RESERVE_FILE);
        }
        *ret = TAKE_PTR(r);
        return 0;
}

DiskReserve *disk_reserve_free(DiskReserve *r) {
        if (!r)
                return NULL;
        safe_close(r->dir_fd);
        free(r->dir);
        free(r);
        return NULL;
}

bool disk_reserve_release_for(DiskReserve *r, int error) {
        if (!r || error != -ENOSPC || !r->held)
                return false;
        if (unlinkat(r->dir_fd, DISK_RESERVE_FILE, 0) < 0 && errno != ENOENT) {
                log_error_errno(errno, "The disk of %s is full, and the space reserve cannot be released: %m", r->dir);
                return false;
        }
        r->held = false;
        log_error("The disk of %s is full: released the space reserve (%" PRIu64 " KiB, room for %u more drinks); "
                  "drinks are still written durably. Free some space!", r->dir, r->size / 1024, DISK_RESERVE_DRINKS);
        return true;
}

bool disk_reserve_refill(DiskReserve *r) {
        int k;

        if (!r)
                return false;
        if (r->held)
                return true;
        /* Room for the reserve and as much again, or the next write would fill the disk at once. */
        if (free_bytes(r->dir_fd) < 2 * r->size)
                return false;
        k = reserve_create(r);
        if (k < 0) {
                log_debug_errno(k, "Cannot set the space reserve aside yet: %m");
                return false;
        }
        r->held = true;
        log_info("The disk of %s has room again: a space reserve of %" PRIu64 " KiB is set aside", r->dir,
                 r->size / 1024);
        return true;
}

bool disk_reserve_held(const DiskReserve *r) {
        return r && r->held;
}

uint64_t disk_reserve_size(const DiskReserve *r) {
        return r ? r->size : 0;
}
