/* Whole-buffer I/O on file descriptors: write everything, read everything (bounded). Blocking
 * descriptors only (files, pipes in tests); sockets on the event loop have their own queues. */
#pragma once

#include <stddef.h>

#include "macro.h"

/* Writes all 'n' bytes, retrying after EINTR and short writes. -EIO if write() makes no progress. */
int io_write_all(int fd, const void *p, size_t n);

/* Reads from the current position to end of file. *ret is malloc'ed and NUL-terminated (the NUL is
 * not counted in *ret_len; the data may hold NUL bytes of its own). -EFBIG past 'max' bytes
 * (0 = no limit). */
int io_read_all(int fd, size_t max, char **ret, size_t *ret_len);

/* io_read_all() of the file at 'path' (opened read-only, close-on-exec, no controlling tty). */
int io_read_file(const char *path, size_t max, char **ret, size_t *ret_len);
