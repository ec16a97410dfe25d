/* Checks for the unit tests: each failed check prints file:line and the expression, counts a
 * failure and lets the test go on, so one run shows every broken case; main() ends with
 * `return test_result();`. Header-only: every test program is a single translation unit. */
#pragma once

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

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
