/* Checks for the unit tests: each failed check prints file:line and the expression, counts a
 * failure and lets the test go on, so one run shows every broken case. Header-only: every test
 * program is a single translation unit.
 *
 * Results are TAP (meson runs these programs with protocol : 'tap', see tests/meson.build): main()
 * runs each case with test_run(test_x); a case that cannot run here calls test_skip("why") and
 * returns; main() ends with `return test_result();`, which prints the plan. A program that never
 * calls test_run() reports its checks as one case. Anything else written to stdout goes to stderr,
 * so stray output (the code under test, children) cannot corrupt the TAP stream. */
#pragma once

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* ---- TAP ---- */

static FILE *tap_out;           /* the real stdout; fd 1 itself is pointed at stderr */
static unsigned tap_cases;
static int tap_case_failures;   /* failures counted inside cases */
static char tap_skip_reason[256];

__attribute__((constructor)) static void tap_init(void) {
        int fd;

        fflush(stdout);
        fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (fd < 0 || !(tap_out = fdopen(fd, "w")) || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
                perror("test-util: cannot set up the TAP stream");
                abort();
        }
}

/* One TAP line; '#' would start a directive, so names never carry one. */
static inline void tap_line(bool ok, const char *name, const char *directive) {
        tap_cases++;
        fprintf(tap_out, "%s %u - ", ok ? "ok" : "not ok", tap_cases);
        for (const char *c = name; *c; c++)
                fputc(*c == '#' || *c == '\n' ? ' ' : *c, tap_out);
        if (directive)
                fprintf(tap_out, " # %s", directive);
        fputc('\n', tap_out);
        /* Empty buffers before any fork(): a child's exit() must not print the lines again. */
        fflush(tap_out);
}

/* Marks the running case as skipped (call it, then return from the case). */
_printf_(1, 2) static inline void test_skip(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(tap_skip_reason, sizeof tap_skip_reason, fmt, ap);
        va_end(ap);
        for (char *c = tap_skip_reason; *c; c++)
                if (*c == '\n')
                        *c = ' ';
        fprintf(stderr, "skipped: %s\n", tap_skip_reason);
}

static inline void test_run_case(const char *name, void (*fn)(void)) {
        int before = failures;
        char directive[sizeof tap_skip_reason + 8];

        tap_skip_reason[0] = '\0';
        fn();
        tap_case_failures += failures - before;
        if (failures > before)
                tap_line(false, name, NULL);
        else if (tap_skip_reason[0]) {
                snprintf(directive, sizeof directive, "SKIP %s", tap_skip_reason);
                tap_line(true, name, directive);
        } else
                tap_line(true, name, NULL);
}

#define test_run(fn) test_run_case(#fn, fn)

/* The plan; failed checks outside every case become one more case. Exit status for main(). */
static inline int test_result(void) {
        if (tap_cases == 0 || failures > tap_case_failures)
                tap_line(failures == tap_case_failures, tap_cases == 0 ? "all checks" : "checks outside a case",
                         NULL);
        fprintf(tap_out, "1..%u\n", tap_cases);
        fflush(tap_out);
        if (failures > 0) {
                fprintf(stderr, "%d check(s) failed\n", failures);
                return 1;
        }
        return 0;
}

/* dir/name (caller frees). */
static inline char *test_path(const char *dir, const char *name) {
        char *p;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                abort();
        return p;
}

/* Appends to the string in buf[size] (a record of what a test saw); what does not fit is dropped. */
_printf_(3, 4) static inline void test_appendf(char *buf, size_t size, const char *format, ...) {
        size_t l = strlen(buf);
        va_list ap;

        if (l + 1 >= size)
                return;
        va_start(ap, format);
        (void) vsnprintf(buf + l, size - l, format, ap);
        va_end(ap);
}

/* Removes a test's temporary tree (rm -rf); a failure is a warning, not a failed check. */
static inline void test_rm_rf(const char *path) {
        char *cmd;

        if (asprintf(&cmd, "rm -rf '%s'", path) < 0)
                abort();
        if (system(cmd) != 0)
                fprintf(stderr, "# cannot remove %s\n", path);
        free(cmd);
}

/* Writes a whole file; a failure is a failed check. */
static inline void write_file(const char *path, const char *content) {
        FILE *f = fopen(path, "we");

        check(f);
        if (!f)
                return;
        fputs(content, f);
        check(fclose(f) == 0);
}

/* The whole file as a string (caller frees), NULL if it cannot be read. */
static inline char *read_all(const char *path) {
        char *buf = NULL;

        return io_read_file(path, 0, &buf, NULL) < 0 ? NULL : buf;
}

/* Path of a file under tests/fixtures (TEST_FIXTURES_DIR comes from tests/meson.build). */
static inline const char *test_fixture(const char *name) {
        static char path[PATH_MAX];

        if ((size_t) snprintf(path, sizeof path, "%s/%s", TEST_FIXTURES_DIR, name) >= sizeof path)
                abort();
        return path;
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
