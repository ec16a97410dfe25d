/* Checks for the unit tests: each failed check prints file:line and the expression, counts a
 * failure and lets the test go on, so one run shows every broken case; main() ends with
 * `return test_result();`. Header-only: every test program is a single translation unit. */
#pragma once

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "macro.h"
#include "util-io.h"

static int failures;

#define check(expr)                                                                     \
        do {                                                                            \
                if (!(expr)) {                                                          \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #expr); \
                        failures++;                                                     \
                }                                                                       \
        } while (0)

#define check_streq(a, b)                                                               \
        do {                                                                            \
                const char *_a = (a), *_b = (b);                                        \
                if (!streq_ptr(_a, _b)) {                                               \
                        fprintf(stderr, "%s:%d: check failed: %s == %s\n  got:      %s\n  expected: %s\n", \
                                __FILE__, __LINE__, #a, #b, _a ?: "(null)", _b ?: "(null)"); \
                        failures++;                                                     \
                }                                                                       \
        } while (0)

#define check_int(a, b)                                                                 \
        do {                                                                            \
                int64_t _a = (int64_t) (a), _b = (int64_t) (b);                         \
                if (_a != _b) {                                                         \
                        fprintf(stderr, "%s:%d: check failed: %s == %s (%" PRId64 " != %" PRId64 ")\n", \
                                __FILE__, __LINE__, #a, #b, _a, _b);                    \
                        failures++;                                                     \
                }                                                                       \
        } while (0)

static inline int test_result(void) {
        if (failures > 0) {
                fprintf(stderr, "%d check(s) failed\n", failures);
                return 1;
        }
        return 0;
}

/* The whole file as a string (caller frees), NULL if it cannot be read. */
static inline char *read_all(const char *path) {
        char *buf = NULL;

        return io_read_file(path, 0, &buf, NULL) < 0 ? NULL : buf;
}

/* stderr goes to <dir>/stderr until capture_end(), which returns what was written. */
static int capture_saved_stderr = -1;
static char capture_path[PATH_MAX];

static inline void capture_begin_in(const char *dir) {
        snprintf(capture_path, sizeof capture_path, "%s/stderr", dir);
        int fd = open(capture_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                abort();
        fflush(stderr);
        capture_saved_stderr = dup(STDERR_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
}

static inline char *capture_end(void) {
        fflush(stderr);
        dup2(capture_saved_stderr, STDERR_FILENO);
        close(capture_saved_stderr);
        capture_saved_stderr = -1;
        return read_all(capture_path);
}
