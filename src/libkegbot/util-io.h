/* Whole-buffer I/O on file descriptors: write everything, read everything (bounded). Blocking
 * descriptors only (files, pipes in tests); sockets on the event loop have their own queues. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "macro.h"

/* Writes all 'n' bytes, retrying after EINTR and short writes. -EIO if write() makes no progress. */
int io_write_all(int fd, const void *p, size_t n);

/* Reads from the current position to end of file. *ret is malloc'ed and NUL-terminated (the NUL is
 * not counted in *ret_len; the data may hold NUL bytes of its own). -EFBIG past 'max' bytes
 * (0 = no limit). */
int io_read_all(int fd, size_t max, char **ret, size_t *ret_len);

/* io_read_all() of the file at 'path' (opened read-only, close-on-exec, no controlling tty). */
int io_read_file(const char *path, size_t max, char **ret, size_t *ret_len);

/* io_read_file() of 'name' in the directory 'dir_fd'. */
int io_read_file_at(int dir_fd, const char *name, size_t max, char **ret, size_t *ret_len);

/* Replaces 'name' in the directory 'dir_fd' durably: ".<name>.tmp" created exclusively with 'mode'
 * (a leftover of an earlier failure is removed first), written, fsync'ed, renamed over 'name', then
 * the directory fsync'ed. On failure the old file is untouched and the temporary file removed. */
int io_write_file_atomic(int dir_fd, const char *name, const char *content, size_t len, mode_t mode);

/* mkdir -p: 'path' and every missing parent, each with 'mode'; an existing directory is fine. */
int io_mkdir_p(const char *path, mode_t mode);
/* io_mkdir_p(), then the directory opened (O_DIRECTORY, close-on-exec): the fd, or -errno. */
int io_mkdir_p_open(const char *path, mode_t mode);

/* The directory 'name' in 'dir_fd', made with 'mode' if missing (one level), opened (O_DIRECTORY,
 * close-on-exec): the fd, or -errno. */
int io_mkdir_open_at(int dir_fd, const char *name, mode_t mode);

/* A secret or key kept in a file (an API key, a broker password, a systemd credential): at most
 * 4095 bytes of UTF-8 without NUL bytes; surrounding whitespace (the trailing newline) is removed.
 * An empty file gives "". -EBADMSG for NUL bytes or invalid UTF-8, -EFBIG when too long. */
int io_read_secret_file(const char *path, char **ret);
