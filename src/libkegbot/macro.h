/* Small helpers shared by every module: cleanup attributes, preconditions, string tests, array
 * sizes. Header-only; nothing here does I/O. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(x) __attribute__((__cleanup__(x)))
#define _unused_ __attribute__((__unused__))
#define _printf_(a, b) __attribute__((__format__(printf, a, b)))
#define _noreturn_ __attribute__((__noreturn__))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define USEC_PER_SEC  ((uint64_t) 1000000ULL)
#define USEC_PER_MSEC ((uint64_t) 1000ULL)
#define NSEC_PER_USEC ((uint64_t) 1000ULL)

/* Preconditions of public library functions, in the manner of sd-bus: a caller that breaks one
 * gets 'r' back (usually -EINVAL) and nothing changes. A violated precondition is the caller's
 * bug, so this is no substitute for checking untrusted input; it keeps a wrong call from turning
 * into a crash. No log line: the pure modules (flow, kbsp, kegnet) must stay free of I/O, and the
 * caller logs where it decides what to do with the error. For a function returning void, leave
 * 'r' empty: assert_return(x, ). */
#define assert_return(expr, r)                  \
        do {                                    \
                if (_unlikely_(!(expr)))        \
                        return r;               \
        } while (false)

static inline bool streq(const char *a, const char *b) { return strcmp(a, b) == 0; }
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
static inline bool isempty(const char *s) { return !s || !*s; }

/* Returns a pointer just past the prefix, or NULL. */
static inline const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}

static inline void freep(void *p) { free(*(void **) p); }
/* free() that returns NULL: p = mfree(p). */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -1;
}
static inline void closep(int *fd) { safe_close(*fd); }
static inline void fclosep(FILE **f) {
        if (*f)
                (void) fclose(*f);
}

/* Take ownership out of a _cleanup_ variable. */
#define TAKE_PTR(p) ({ __typeof__(p) _t = (p); (p) = NULL; _t; })
#define TAKE_FD(fd) ({ int _t = (fd); (fd) = -1; _t; })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                 \
        static inline void func##p(type *p) {                   \
                if (*p)                                         \
                        func(*p);                               \
        }

/* Declares a library the binary loads with dlopen(), as an ELF note in the format packaging tools read
 * (https://systemd.io/ELF_DLOPEN_METADATA/): section ".note.dlopen", owner "FDO", type 0x407c0c0a, and
 * a JSON array of {feature, description, priority, soname[]} objects as the descriptor (NUL-terminated,
 * zero-padded to 4 bytes). DT_NEEDED does not show such a dependency; this note does. 'name' is the
 * (file-local) variable holding the note; priority is "required", "recommended" or "suggested". */
#define ELF_NOTE_DLOPEN_OWNER "FDO"
#define ELF_NOTE_DLOPEN_TYPE UINT32_C(0x407c0c0a)
#define ELF_NOTE_DLOPEN(name, feature, description, priority, soname)                          \
        ELF_NOTE_DLOPEN_JSON(name, "[{\"feature\":\"" feature "\",\"description\":\"" description \
                                   "\",\"priority\":\"" priority "\",\"soname\":[\"" soname "\"]}]")
#define ELF_NOTE_DLOPEN_JSON(name, json)                                                        \
        __attribute__((used, section(".note.dlopen"))) _Alignas(4) static const struct {        \
                uint32_t namesz, descsz, type;                                                  \
                char owner[sizeof(ELF_NOTE_DLOPEN_OWNER)];                                      \
                _Alignas(4) char desc[sizeof(json)];                                            \
        } name = {                                                                              \
                .namesz = sizeof(ELF_NOTE_DLOPEN_OWNER),                                        \
                .descsz = sizeof(json),                                                         \
                .type = ELF_NOTE_DLOPEN_TYPE,                                                   \
                .owner = ELF_NOTE_DLOPEN_OWNER,                                                 \
                .desc = json,                                                                   \
        }
