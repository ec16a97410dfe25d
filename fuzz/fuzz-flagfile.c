/* Fuzzes the flag parser (flags.c) in memory: the first byte picks the mode, the rest is either a
 * flag file (one argument per line) or an argv (arguments separated by NUL bytes); --flagfile is
 * forbidden so nothing is read from disk. Also the --logformat compiler and the help renderer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "log.h"
#include "macro.h"

static bool f_bool;
static bool f_true = true;
static int f_int = 7;
static int f_pos = 1;
static int f_range = 3;
static int64_t f_big;
static double f_num = 2.2;
static double f_rng = 1.0;
static double f_positive = 10.0;
static const char *f_str = "x";
static const char *f_enum = "system";

static const FlagDef fuzz_flags[] = {
        FLAG_BOOL("b", &f_bool, "bool"),
        FLAG_BOOL("verbose", &f_true, "bool, default true"),
        FLAG_INT("i", &f_int, "int"),
        FLAG_INT_MIN("pos", &f_pos, 1, "int >= 1"),
        FLAG_INT_RANGE("range", &f_range, 1, 6, "int 1..6"),
        FLAG_INT64_MIN("big", &f_big, 0, "int64 >= 0"),
        FLAG_DOUBLE("num", &f_num, "number"),
        FLAG_DOUBLE_RANGE("rng", &f_rng, 0, 60, "number 0..60"),
        FLAG_DOUBLE_POSITIVE("timeout", &f_positive, "number > 0"),
        FLAG_STRING("s", &f_str, "string"),
        FLAG_ENUM("dbus", &f_enum, ((const char *const[]) { "system", "session", "none", NULL }), "enum"),
        FLAG_END,
};

static const FlagGroup fuzz_groups[] = {
        { "fuzz", fuzz_flags },
};

#define MAX_ARGS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *error = NULL;
        char **positional = NULL;

        if (size < 1 || size > 64 * 1024)
                return 0;
        uint8_t mode = data[0] % 3;
        const char *body = (const char *) data + 1;
        size_t len = size - 1;

        if (mode == 0) {
                (void) flags_parse_buffer(fuzz_groups, ELEMENTSOF(fuzz_groups), body, len, false, &error);
        } else if (mode == 1) {
                char *copy = malloc(len + 1);
                char *argv[MAX_ARGS + 2] = { (char *) "fuzz" };
                int argc = 1;
                if (!copy)
                        return 0;
                memcpy(copy, body, len);
                copy[len] = '\0';
                for (size_t i = 0; i <= len && argc <= MAX_ARGS; ) {
                        argv[argc++] = copy + i;
                        i += strlen(copy + i) + 1;
                }
                argv[argc] = NULL;
                int r = flags_parse_full(fuzz_groups, ELEMENTSOF(fuzz_groups), argc, argv, false, &positional,
                                         &error);
                if (r >= 0 && (data[0] & 0x80)) {
                        FILE *f = fopen("/dev/null", "we");
                        if (f) {
                                flags_print_help(f, "fuzz", "Fuzz.", fuzz_groups, ELEMENTSOF(fuzz_groups),
                                                 data[0] & 0x40);
                                fclose(f);
                        }
                }
                (void) flags_given("i");
                free(copy);
        } else {
                char *fmt = strndup(body, len);
                if (fmt) {
                        (void) log_setup(&(LogConfig) { .program = "fuzz", .format = fmt }, &error);
                        log_close();
                        free(fmt);
                }
        }

        strv_free(positional);
        free(error);
        flags_reset();
        return 0;
}
