/* Unit tests for flags.c: syntax rules of programs-and-flags.md section 1, help rendering, errors,
 * flag files (nesting, cycles, ~, relative paths), --undefok, environment defaults, bounds. */
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>

#include "flags.h"
#include "macro.h"
#include "test-util.h"

static bool arg_flag = false;
static bool arg_on = true;
static int arg_int = 7;
static int arg_pos = 1;
static int64_t arg_big = 1000;
static double arg_num = 2.2;
static double arg_range = 3.0;
static double arg_timeout = 10.0;
static const char *arg_str = "default";
static const char *arg_other = "";
static const char *arg_dbus = "system";
static const char *arg_state = "/var/lib/kegbot";
static const char *arg_cache = "/tmp/cache";
static bool arg_verbose = false;

static const FlagDef prog_flags[] = {
        FLAG_BOOL("flag", &arg_flag, "A boolean."),
        FLAG_BOOL("on", &arg_on, "A boolean that defaults to true."),
        FLAG_INT("int", &arg_int, "Any int."),
        FLAG_INT_MIN("pos", &arg_pos, 1, "At least one."),
        FLAG_INT64_MIN("big", &arg_big, 0, "Non-negative 64-bit."),
        FLAG_DOUBLE("num", &arg_num, "Any number."),
        FLAG_DOUBLE_RANGE("range", &arg_range, 0, 60, "Zero to sixty."),
        FLAG_STRING("str", &arg_str, "A string."),
        FLAG_ENUM("dbus", &arg_dbus, ((const char *const[]) { "system", "session", "none", NULL }), "Bus."),
        FLAG_STRING("state_dir", &arg_state, "State.", .env = "TEST_STATE_DIRECTORY",
                    .env_mode = FLAG_ENV_FIRST_ENTRY),
        FLAG_STRING("cache_dir", &arg_cache, "Cache.", .env = "TEST_CACHE_DIRECTORY",
                    .env_mode = FLAG_ENV_FIRST_ENTRY, .env_suffix = "/sounds"),
        FLAG_END,
};

static const FlagDef shared_flags[] = {
        FLAG_STRING("other", &arg_other, "Another group's string.", .env = "TEST_OTHER"),
        FLAG_DOUBLE_POSITIVE("timeout", &arg_timeout, "Positive."),
        FLAG_BOOL("verbose", &arg_verbose, "Verbose.", .env = "TEST_VERBOSE"),
        FLAG_END,
};

static const FlagGroup groups[] = {
        { "prog", prog_flags },
        { "shared", shared_flags },
};

static char tmpdir[] = "/tmp/test-flags-XXXXXX";

/* Parse a NULL-terminated list of arguments (argv[0] is added). */
static int parse_full(char ***ret_pos, char **ret_error, const char *const *args) {
        char *argv[64] = { (char *) "prog" };
        int argc = 1;
        for (const char *const *a = args; *a && argc < 63; a++)
                argv[argc++] = (char *) *a;
        argv[argc] = NULL;
        return flags_parse(groups, ELEMENTSOF(groups), argc, argv, ret_pos, ret_error);
}

#define PARSE(...) parse_full(NULL, NULL, (const char *const[]) { __VA_ARGS__, NULL })

/* Parse expecting an error; returns the message (caller frees). */
static char *parse_error(const char *const *args) {
        char *error = NULL;
        int r = parse_full(NULL, &error, args);
        if (r >= 0) {
                free(error);
                return NULL;
        }
        return error ?: strdup("(no message)");
}

#define PARSE_ERROR(expected, ...)                                                       \
        do {                                                                             \
                char *_e = parse_error((const char *const[]) { __VA_ARGS__, NULL });     \
                check_streq(_e, expected);                                               \
                free(_e);                                                                \
                flags_reset();                                                           \
        } while (0)

static void test_forms(void) {
        check(PARSE("--flag", "--int=5", "--str=x y") == FLAGS_OK);
        check(arg_flag && arg_int == 5);
        check_streq(arg_str, "x y");
        flags_reset();
        check(!arg_flag && arg_int == 7);
        check_streq(arg_str, "default");

        /* --name value: the next argument verbatim, even if it looks like a flag. */
        check(PARSE("--str", "--flag", "--int", "-3") == FLAGS_OK);
        check_streq(arg_str, "--flag");
        check(!arg_flag);
        check(arg_int == -3);
        flags_reset();

        /* Single dash forms. */
        check(PARSE("-flag", "-int=9", "-str", "v") == FLAGS_OK);
        check(arg_flag && arg_int == 9);
        check_streq(arg_str, "v");
        flags_reset();

        /* Empty string value. */
        check(PARSE("--str=") == FLAGS_OK);
        check_streq(arg_str, "");
        flags_reset();
        check(PARSE("--str", "") == FLAGS_OK);
        check_streq(arg_str, "");
        flags_reset();

        /* A value containing '=' keeps it. */
        check(PARSE("--str=a=b") == FLAGS_OK);
        check_streq(arg_str, "a=b");
        flags_reset();

        /* Last assignment wins. */
        check(PARSE("--int=1", "--int=2", "--flag", "--noflag", "--str=a", "--str=b") == FLAGS_OK);
        check(arg_int == 2 && !arg_flag);
        check_streq(arg_str, "b");
        flags_reset();

        /* A bool does not take the next argument. */
        char **pos = NULL;
        check(parse_full(&pos, NULL, (const char *const[]) { "--flag", "true", NULL }) == FLAGS_OK);
        check(arg_flag);
        check(pos && pos[0] && streq(pos[0], "true") && !pos[1]);
        strv_free(pos);
        flags_reset();

        PARSE_ERROR("flag --int requires a value", "--int");
        PARSE_ERROR("flag --str requires a value", "--flag", "--str");
}

static void test_bools(void) {
        static const char *const yes[] = { "true", "t", "1", "True", "TRUE", "T" };
        static const char *const no[] = { "false", "f", "0", "False", "FALSE", "F" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                char *a;
                check(asprintf(&a, "--flag=%s", yes[i]) > 0);
                check(PARSE(a) == FLAGS_OK);
                check(arg_flag);
                flags_reset();
                free(a);
        }
        for (size_t i = 0; i < ELEMENTSOF(no); i++) {
                char *a;
                check(asprintf(&a, "--on=%s", no[i]) > 0);
                check(PARSE(a) == FLAGS_OK);
                check(!arg_on);
                flags_reset();
                free(a);
        }
        check(PARSE("--noon") == FLAGS_OK);
        check(!arg_on);
        check(flags_given("on"));
        flags_reset();
        check(PARSE("-noon") == FLAGS_OK);
        check(!arg_on);
        flags_reset();

        PARSE_ERROR("flag --flag=yes: 'yes' is not a boolean (true, t, 1, false, f, 0)", "--flag=yes");
        PARSE_ERROR("flag --flag=: '' is not a boolean (true, t, 1, false, f, 0)", "--flag=");
        PARSE_ERROR("flag --noflag does not take a value", "--noflag=true");
        /* --no only for booleans. */
        PARSE_ERROR("unknown flag --noint", "--noint");
}

static void test_integers(void) {
        check(PARSE("--int=0x1F") == FLAGS_OK && arg_int == 31);
        flags_reset();
        check(PARSE("--int=0X1f") == FLAGS_OK && arg_int == 31);
        flags_reset();
        check(PARSE("--int=+12") == FLAGS_OK && arg_int == 12);
        flags_reset();
        check(PARSE("--int=-12") == FLAGS_OK && arg_int == -12);
        flags_reset();
        check(PARSE("--int=010") == FLAGS_OK && arg_int == 10);
        flags_reset();
        check(PARSE("--int=-0x10") == FLAGS_OK && arg_int == -16);
        flags_reset();
        check(PARSE("--int=-2147483648") == FLAGS_OK && arg_int == INT_MIN);
        flags_reset();
        check(PARSE("--big=9223372036854775807") == FLAGS_OK && arg_big == INT64_MAX);
        flags_reset();
        check(PARSE("--pos=1") == FLAGS_OK && arg_pos == 1);
        flags_reset();

        PARSE_ERROR("flag --int=abc: 'abc' is not an integer", "--int=abc");
        PARSE_ERROR("flag --int=1.5: '1.5' is not an integer", "--int=1.5");
        PARSE_ERROR("flag --int=: '' is not an integer", "--int=");
        PARSE_ERROR("flag --int= 1: ' 1' is not an integer", "--int= 1");
        PARSE_ERROR("flag --int=0x: '0x' is not an integer", "--int=0x");
        PARSE_ERROR("flag --int=0xg: '0xg' is not an integer", "--int=0xg");
        PARSE_ERROR("flag --int=2147483648: 2147483648 is out of range", "--int=2147483648");
        PARSE_ERROR("flag --big=9223372036854775808: '9223372036854775808' is not a non-negative integer",
                    "--big=9223372036854775808");
        PARSE_ERROR("flag --big=-1: -1 is not a non-negative integer", "--big=-1");
        PARSE_ERROR("flag --pos=0: 0 is not an integer >= 1", "--pos=0");
        check(arg_pos == 1);
}

static void test_numbers(void) {
        check(PARSE("--num=1.5") == FLAGS_OK && arg_num == 1.5);
        flags_reset();
        check(PARSE("--num=-3") == FLAGS_OK && arg_num == -3);
        flags_reset();
        check(PARSE("--num=1e3") == FLAGS_OK && arg_num == 1000);
        flags_reset();
        check(PARSE("--num=.5") == FLAGS_OK && arg_num == 0.5);
        flags_reset();
        check(PARSE("--num=5.") == FLAGS_OK && arg_num == 5);
        flags_reset();
        check(PARSE("--num=2.5E-1") == FLAGS_OK && arg_num == 0.25);
        flags_reset();
        check(PARSE("--range=60") == FLAGS_OK && arg_range == 60);
        flags_reset();
        check(PARSE("--range=0") == FLAGS_OK && arg_range == 0);
        flags_reset();
        check(PARSE("--timeout=0.001") == FLAGS_OK && arg_timeout == 0.001);
        flags_reset();

        PARSE_ERROR("flag --num=abc: 'abc' is not a number", "--num=abc");
        PARSE_ERROR("flag --num=inf: 'inf' is not a number", "--num=inf");
        PARSE_ERROR("flag --num=nan: 'nan' is not a number", "--num=nan");
        PARSE_ERROR("flag --num=0x10: '0x10' is not a number", "--num=0x10");
        PARSE_ERROR("flag --num=1e: '1e' is not a number", "--num=1e");
        PARSE_ERROR("flag --num=.: '.' is not a number", "--num=.");
        PARSE_ERROR("flag --num=1e999: '1e999' is not a number", "--num=1e999");
        PARSE_ERROR("flag --range=60.5: 60.5 is not a number in the range [0, 60]", "--range=60.5");
        PARSE_ERROR("flag --range=-1: -1 is not a number in the range [0, 60]", "--range=-1");
        PARSE_ERROR("flag --timeout=0: 0 is not a positive number", "--timeout=0");
        check(arg_timeout == 10.0);
}

static void test_strings_and_enums(void) {
        check(PARSE("--dbus=none") == FLAGS_OK);
        check_streq(arg_dbus, "none");
        flags_reset();
        check_streq(arg_dbus, "system");
        PARSE_ERROR("flag --dbus=System: value should be one of <system|session|none>", "--dbus=System");
}

static void test_positional(void) {
        char **pos = NULL;

        check(parse_full(&pos, NULL, (const char *const[]) { "--flag", "start", "--int=3", NULL }) == FLAGS_OK);
        check(arg_flag && arg_int == 7);
        check(pos && pos[0] && streq(pos[0], "start") && pos[1] && streq(pos[1], "--int=3") && !pos[2]);
        strv_free(pos);
        flags_reset();

        /* "--" ends flags; it is not itself a positional. */
        pos = NULL;
        check(parse_full(&pos, NULL, (const char *const[]) { "--int=3", "--", "--flag", NULL }) == FLAGS_OK);
        check(arg_int == 3 && !arg_flag);
        check(pos && pos[0] && streq(pos[0], "--flag") && !pos[1]);
        strv_free(pos);
        flags_reset();

        /* No positionals: an empty list, not NULL. */
        pos = NULL;
        check(parse_full(&pos, NULL, (const char *const[]) { "--flag", NULL }) == FLAGS_OK);
        check(pos && !pos[0]);
        strv_free(pos);
        flags_reset();

        /* A lone "-" is a positional (the conventional "stdin"). */
        pos = NULL;
        check(parse_full(&pos, NULL, (const char *const[]) { "-", NULL }) == FLAGS_OK);
        check(pos && pos[0] && streq(pos[0], "-"));
        strv_free(pos);
        flags_reset();
}

/* A command's flags may follow its words (kegbot_calibrate finish kegboard.flow0 --ml=500). */
static void test_interspersed(void) {
        char *argv[] = { (char *) "prog", (char *) "finish", (char *) "--int=3", (char *) "m", (char *) "--flag",
                         (char *) "-", (char *) "--", (char *) "--str=x", NULL };
        char *bad[] = { (char *) "prog", (char *) "start", (char *) "--nosuch", NULL };
        _cleanup_(freep) char *error = NULL;
        char **pos = NULL;

        check(flags_parse_interspersed(groups, ELEMENTSOF(groups), 8, argv, &pos, NULL) == FLAGS_OK);
        check(arg_flag && arg_int == 3 && streq(arg_str, "default"));
        check_int(strv_length(pos), 4);
        check_streq(pos[0], "finish");
        check_streq(pos[1], "m");
        check_streq(pos[2], "-");
        check_streq(pos[3], "--str=x");         /* after "--": an operand */
        strv_free(pos);
        flags_reset();

        pos = NULL;
        check(flags_parse_interspersed(groups, ELEMENTSOF(groups), 3, bad, &pos, &error) < 0);
        check_streq(error, "unknown flag --nosuch");
        check(!pos);
        flags_reset();
}

static void test_unknown_and_abbreviations(void) {
        PARSE_ERROR("unknown flag --fla", "--fla");             /* no prefixes */
        PARSE_ERROR("unknown flag --flags", "--flags");
        PARSE_ERROR("unknown flag --redis_url", "--redis_url=redis://x");
        PARSE_ERROR("unknown flag ---flag", "---flag");
        PARSE_ERROR("unknown flag --=x", "--=x");
        /* The first error in order wins, an unknown flag included. */
        PARSE_ERROR("unknown flag --foo", "--foo", "--int=x");
        PARSE_ERROR("flag --int=x: 'x' is not an integer", "--int=x", "--foo");
}

static void test_undefok(void) {
        check(PARSE("--undefok=redis_url,redis_host", "--redis_url=redis://localhost:6379/0",
                    "--noredis_host", "--int=4") == FLAGS_OK);
        check(arg_int == 4);
        flags_reset();
        /* --undefok may come after the flag it excuses. */
        check(PARSE("--redis_url=x", "--undefok=redis_url") == FLAGS_OK);
        flags_reset();
        /* Two forms of the value. */
        check(PARSE("--undefok", "a", "--a=1") == FLAGS_OK);
        flags_reset();
        /* Several --undefok accumulate. */
        check(PARSE("--undefok=a", "--undefok=b", "--a=1", "--b=2") == FLAGS_OK);
        flags_reset();
        PARSE_ERROR("unknown flag --c", "--undefok=a,b", "--a=1", "--c=2");
        /* Without '=' the next argument is not taken: it becomes a positional. */
        char **pos = NULL;
        check(parse_full(&pos, NULL, (const char *const[]) { "--undefok=a", "--a", "v", NULL }) == FLAGS_OK);
        check(pos && pos[0] && streq(pos[0], "v"));
        strv_free(pos);
        flags_reset();
}

static void test_help_flags(void) {
        check(PARSE("--help") == FLAGS_HELP);
        flags_reset();
        check(PARSE("-?") == FLAGS_HELP);
        flags_reset();
        check(PARSE("-help") == FLAGS_HELP);
        flags_reset();
        check(PARSE("--helpshort") == FLAGS_HELPSHORT);
        flags_reset();
        check(PARSE("--int=3", "--helpshort", "--help") == FLAGS_HELP);
        flags_reset();
        check(PARSE("--int=3") == FLAGS_OK);
        flags_reset();
        /* A bad flag is still an error. */
        PARSE_ERROR("unknown flag --x", "--help", "--x");
}

static void test_flagfile(void) {
        _cleanup_(freep) char *a = test_path(tmpdir, "a.flags"), *b = test_path(tmpdir, "b.flags"),
                         *c = test_path(tmpdir, "c.flags"), *loop = test_path(tmpdir, "loop.flags");
        _cleanup_(freep) char *content = NULL;

        write_file(b, "--str=from b\n--flag\n");
        check(asprintf(&content,
                       "# Kegbot core\n"
                       "  --int=11  \n"
                       "\n"
                       "   \t\n"
                       "// legacy flags:\n"
                       "   # indented comment\n"
                       "--undefok=redis_url\n"
                       "--redis_url=redis://localhost:6379/0\n"
                       "--flagfile=%s\n"
                       "--num=4.5\r\n", b) > 0);
        write_file(a, content);

        check(PARSE("--int=1", "--flagfile", a) == FLAGS_OK);
        check(arg_int == 11);
        check(arg_flag);
        check(arg_num == 4.5);
        check_streq(arg_str, "from b");
        flags_reset();

        /* "--name value" on one line is one argument: an unknown flag named "str value". */
        write_file(c, "--str value\n");
        char *e1 = parse_error((const char *const[]) { "--flagfile", c, NULL });
        check_streq(e1, "unknown flag --str value");
        free(e1);
        flags_reset();

        /* Order: the file's lines are inserted where --flagfile is; later flags win. */
        char *fa;
        check(asprintf(&fa, "--flagfile=%s", a) > 0);
        check(PARSE(fa, "--int=99") == FLAGS_OK);
        check(arg_int == 99);
        flags_reset();
        check(PARSE("--int=99", fa) == FLAGS_OK);
        check(arg_int == 11);
        flags_reset();
        free(fa);

        /* A value-less "--str" line takes the next line as its value, like argv. */
        write_file(c, "--str\n--int=5\n");
        check(PARSE("--flagfile", c) == FLAGS_OK);
        check_streq(arg_str, "--int=5");
        check(arg_int == 7);
        flags_reset();

        /* Circular: a file that includes itself is read once, with a warning. */
        _cleanup_(freep) char *lc = NULL;
        check(asprintf(&lc, "--int=21\n--flagfile=%s\n--flag\n", loop) > 0);
        write_file(loop, lc);
        int saved = dup(STDERR_FILENO);
        _cleanup_(freep) char *errpath = test_path(tmpdir, "stderr");
        int efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        check(efd >= 0);
        fflush(stderr);
        dup2(efd, STDERR_FILENO);
        int r = PARSE("--flagfile", loop);
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        close(efd);
        check(r == FLAGS_OK);
        check(arg_int == 21 && arg_flag);
        flags_reset();
        FILE *ef = fopen(errpath, "re");
        char line[4096] = "";
        check(ef && fgets(line, sizeof line, ef));
        if (ef)
                fclose(ef);
        _cleanup_(freep) char *expect = NULL;
        check(asprintf(&expect, "Warning: Hit circular flagfile dependency: %s\n", loop) > 0);
        check_streq(line, expect);

        /* Unreadable / missing. */
        _cleanup_(freep) char *missing = test_path(tmpdir, "missing.flags"), *msg = NULL;
        check(asprintf(&msg, "cannot read flagfile %s: No such file or directory", missing) > 0);
        char *e = parse_error((const char *const[]) { "--flagfile", missing, NULL });
        check_streq(e, msg);
        free(e);
        flags_reset();
        e = parse_error((const char *const[]) { "--flagfile", tmpdir, NULL });
        check(e && strstr(e, "Is a directory"));
        free(e);
        flags_reset();
        PARSE_ERROR("flag --flagfile requires a value", "--flagfile");
        PARSE_ERROR("flag --flagfile requires a file name", "--flagfile=");

        /* An error inside a flag file. */
        write_file(c, "--int=zz\n");
        e = parse_error((const char *const[]) { "--flagfile", c, NULL });
        check_streq(e, "flag --int=zz: 'zz' is not an integer");
        free(e);
        flags_reset();

        /* A positional line stops flag parsing like on the command line. */
        write_file(c, "--int=3\nstart\n--flag\n");
        char **pos = NULL;
        check(parse_full(&pos, NULL, (const char *const[]) { "--flagfile", c, NULL }) == FLAGS_OK);
        check(arg_int == 3 && !arg_flag);
        check(pos && pos[0] && streq(pos[0], "start") && pos[1] && streq(pos[1], "--flag"));
        strv_free(pos);
        flags_reset();
}

static void test_flagfile_paths(void) {
        char cwd[PATH_MAX];
        check(getcwd(cwd, sizeof cwd));

        /* Relative to the current working directory, also for nested files. */
        _cleanup_(freep) char *sub = test_path(tmpdir, "sub"), *outer = test_path(tmpdir, "sub/outer.flags"),
                         *inner = test_path(tmpdir, "inner.flags");
        check(mkdir(sub, 0700) == 0);
        write_file(outer, "--flagfile=inner.flags\n--int=1\n");
        write_file(inner, "--int=2\n--str=inner\n");
        check(chdir(tmpdir) == 0);
        check(PARSE("--flagfile=sub/outer.flags") == FLAGS_OK);
        check(arg_int == 1);
        check_streq(arg_str, "inner");
        flags_reset();

        /* ~ is $HOME. */
        const char *old_home = getenv("HOME");
        _cleanup_(freep) char *saved_home = old_home ? strdup(old_home) : NULL;
        setenv("HOME", tmpdir, 1);
        check(PARSE("--flagfile=~/inner.flags") == FLAGS_OK);
        check(arg_int == 2);
        flags_reset();
        check(PARSE("--flagfile", "~/sub/outer.flags") == FLAGS_OK);
        check(arg_int == 1);
        flags_reset();
        if (saved_home)
                setenv("HOME", saved_home, 1);
        else
                unsetenv("HOME");
        check(chdir(cwd) == 0);
}

static void test_buffer(void) {
        static const char buf[] = "# comment\n--int=8\n\n--str=buf\n  // c\n--undefok=x\n--x=1\n";
        char *e = NULL;
        check(flags_parse_buffer(groups, ELEMENTSOF(groups), buf, strlen(buf), false, &e) == 0);
        check(!e);
        check(arg_int == 8);
        check_streq(arg_str, "buf");
        flags_reset();

        static const char inc[] = "--flagfile=/etc/passwd\n";
        check(flags_parse_buffer(groups, ELEMENTSOF(groups), inc, strlen(inc), false, &e) == -EINVAL);
        check_streq(e, "--flagfile is not allowed here");
        free(e);
        flags_reset();

        static const char pos[] = "--int=1\nword\n";
        check(flags_parse_buffer(groups, ELEMENTSOF(groups), pos, strlen(pos), false, &e) == -EINVAL);
        check_streq(e, "unexpected argument 'word'");
        free(e);
        flags_reset();

        /* Embedded NUL: an error naming the line (it used to cut the line short without a word:
         * "--int=3\0x" became --int=3). No read past the end either. */
        static const char nul[] = { '-', '-', 'i', 'n', 't', '=', '3', '\0', 'x', '\n', '-', '-', 'f', 'l', 'a', 'g' };
        e = NULL;
        check(flags_parse_buffer(groups, ELEMENTSOF(groups), nul, sizeof nul, false, &e) == -EINVAL);
        check_streq(e, "flag file:1: the line holds a NUL byte");
        check(arg_int != 3);
        free(e);
        flags_reset();
        static const char nul2[] = { '#', 'x', '\n', '-', '-', 'f', 'l', 'a', 'g', '\0' };
        e = NULL;
        check(flags_parse_buffer(groups, ELEMENTSOF(groups), nul2, sizeof nul2, false, &e) == -EINVAL);
        check_streq(e, "flag file:2: the line holds a NUL byte");
        free(e);
        flags_reset();

        /* A byte order mark: a clear error, not "unknown flag" for a first line that looks fine. */
        static const char bom[] = "\xef\xbb\xbf--int=4\n--flag\n";
        e = NULL;
        check(flags_parse_buffer(groups, ELEMENTSOF(groups), bom, strlen(bom), false, &e) == -EINVAL);
        check_streq(e, "flag file:1: the file starts with a UTF-8 byte order mark (U+FEFF); save it without one");
        free(e);
        flags_reset();
        /* Elsewhere U+FEFF is just text (a string value may hold it). */
        static const char inner[] = "--str=a\xef\xbb\xbf\n";
        e = NULL;
        check(flags_parse_buffer(groups, ELEMENTSOF(groups), inner, strlen(inner), false, &e) == 0);
        check_streq(arg_str, "a\xef\xbb\xbf");
        flags_reset();

        check(flags_parse_buffer(groups, ELEMENTSOF(groups), NULL, 0, false, NULL) == 0);
        flags_reset();
}

static void test_utf8(void) {
        _cleanup_(freep) char *f = test_path(tmpdir, "latin1.flags");
        char *e = NULL;

        /* Arguments, values of any source and flag-file lines are checked once, where they enter. */
        PARSE_ERROR("argument '--str=caf\\xe9' is not valid UTF-8", "--str=caf\xe9");
        PARSE_ERROR("flag --str: the value is not valid UTF-8", "--str", "caf\xe9");
        PARSE_ERROR("argument 'caf\\xe9' is not valid UTF-8", "--int=1", "caf\xe9");
        write_file(f, "--int=3\n--str=caf\xe9\n");
        e = parse_error((const char *const[]) { "--flagfile", f, NULL });
        check(e && strstr(e, "latin1.flags:2: not valid UTF-8"));
        free(e);
        flags_reset();
        e = NULL;
        check(flags_parse_buffer(groups, ELEMENTSOF(groups), "--int=3\n\xff\n", 10, false, &e) == -EINVAL);
        check_streq(e, "flag file:2: not valid UTF-8");
        free(e);
        flags_reset();
        setenv("TEST_OTHER", "caf\xe9", 1);
        e = NULL;
        check(flags_apply_env(groups, ELEMENTSOF(groups), &e) == -EINVAL);
        check_streq(e, "environment variable TEST_OTHER is not valid UTF-8");
        free(e);
        unsetenv("TEST_OTHER");
        flags_reset();
        /* Valid UTF-8 passes untouched. */
        check(PARSE("--str=caf\xc3\xa9 \xf0\x9f\x8d\xba") == FLAGS_OK);
        check_streq(arg_str, "caf\xc3\xa9 \xf0\x9f\x8d\xba");
        flags_reset();
}

static void test_env(void) {
        char *e = NULL;

        setenv("TEST_STATE_DIRECTORY", "/var/lib/kegbot2:/var/lib/other", 1);
        setenv("TEST_CACHE_DIRECTORY", "/var/cache/sound", 1);
        setenv("TEST_OTHER", "envvalue", 1);
        setenv("TEST_VERBOSE", "", 1);
        check(flags_apply_env(groups, ELEMENTSOF(groups), &e) == 0);
        check(!e);
        check_streq(arg_state, "/var/lib/kegbot2");
        check_streq(arg_cache, "/var/cache/sound/sounds");
        check_streq(arg_other, "envvalue");
        check(arg_verbose);
        /* Environment values are defaults: not "given", and flags override them. */
        check(!flags_given("other"));
        check(PARSE("--other=cmdline", "--noverbose") == FLAGS_OK);
        check_streq(arg_other, "cmdline");
        check(!arg_verbose);
        check(flags_given("other"));
        flags_reset();
        check_streq(arg_state, "/var/lib/kegbot");
        check_streq(arg_other, "");
        check(!arg_verbose);

        /* Empty values and empty first entries are ignored. */
        setenv("TEST_STATE_DIRECTORY", ":/x", 1);
        setenv("TEST_OTHER", "", 1);
        unsetenv("TEST_VERBOSE");
        unsetenv("TEST_CACHE_DIRECTORY");
        check(flags_apply_env(groups, ELEMENTSOF(groups), &e) == 0);
        check_streq(arg_state, "/var/lib/kegbot");
        check_streq(arg_cache, "/tmp/cache");
        check_streq(arg_other, "");
        check(!arg_verbose);
        flags_reset();
        unsetenv("TEST_STATE_DIRECTORY");
        unsetenv("TEST_OTHER");

        /* An environment value that does not parse. */
        static bool b;
        static int i = 1;
        static const FlagDef bad[] = {
                FLAG_BOOL("b", &b, "b", .env = "TEST_BOOL_ANY"),
                FLAG_INT("i", &i, "i", .env = "TEST_INT_ENV"),
                FLAG_END,
        };
        static const FlagGroup g[] = { { "bad", bad } };
        setenv("TEST_BOOL_ANY", "0", 1);       /* any value at all means true */
        setenv("TEST_INT_ENV", "x", 1);
        check(flags_apply_env(g, 1, &e) == -EINVAL);
        check_streq(e, "environment variable TEST_INT_ENV: flag --i=x: 'x' is not an integer");
        check(b);
        free(e);
        flags_reset();
        check(!b);
        unsetenv("TEST_BOOL_ANY");
        unsetenv("TEST_INT_ENV");
}

static char *capture_help(const char *program, const char *desc, const FlagGroup *g, size_t n, bool short_help) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                abort();
        flags_print_help(f, program, desc, g, n, short_help);
        fclose(f);
        return buf;
}

static void test_help_output(void) {
        static bool ess;
        static int64_t ticks = 1000;
        static double delay = 1.0;
        static const char *name = "it's";
        static const FlagDef tf[] = {
                FLAG_INT64_MIN("ticks", &ticks, 0, "Total ticks to send."),
                FLAG_BOOL("explicit_start_stop", &ess, "If true, also send start_flow and stop_flow requests."),
                FLAG_DOUBLE_RANGE("delay_seconds", &delay, 0, 60, "Delay."),
                FLAG_STRING("quote", &name, "Quoted."),
                FLAG_END,
        };
        static const char *addr = "127.0.0.1:9805";
        static const FlagDef kn[] = {
                FLAG_STRING("kb_core_addr", &addr, "Core address."),
                FLAG_END,
        };
        static const FlagGroup g[] = { { "test_flow", tf }, { "kegnet", kn }, { "empty", NULL } };

        /* Defaults are what the variables held when parsing started, not the parsed values. */
        char *argv[] = { (char *) "test_flow", (char *) "--ticks=5", (char *) "--delay_seconds=2.5", NULL };
        check(flags_parse(g, ELEMENTSOF(g), 3, argv, NULL, NULL) == FLAGS_OK);
        check(ticks == 5);

        _cleanup_(freep) char *full = capture_help("test_flow", "Sends a synthetic pour to the core.", g,
                                                   ELEMENTSOF(g), false);
        static const char expected_head[] =
                "Sends a synthetic pour to the core.\n"
                "\n"
                "USAGE: test_flow [flags]\n"
                "\n"
                "flags:\n"
                "\n"
                "test_flow:\n"
                "  --delay_seconds:  Delay.\n"
                "    (default: '1.0')\n"
                "    (a number in the range [0, 60])\n"
                "  --[no]explicit_start_stop:  If true, also send start_flow and stop_flow requests.\n"
                "    (default: 'false')\n"
                "  --quote:  Quoted.\n"
                "    (default: \"it's\")\n"
                "  --ticks:  Total ticks to send.\n"
                "    (default: '1000')\n"
                "    (a non-negative integer)\n"
                "\n"
                "kegnet:\n"
                "  --kb_core_addr:  Core address.\n"
                "    (default: '127.0.0.1:9805')\n"
                "\n"
                "gflags:\n"
                "  --flagfile:  Insert flag definitions from the given file into the command line.\n"
                "    (default: '')\n"
                "  --[no]help:  show this help\n"
                "    (default: 'false')\n"
                "  --[no]helpshort:  show usage only for this module\n"
                "    (default: 'false')\n"
                "  --undefok:  comma-separated list of flag names";
        check(full && strncmp(full, expected_head, strlen(expected_head)) == 0);
        if (full && strncmp(full, expected_head, strlen(expected_head)) != 0)
                fprintf(stderr, "got:\n%s\n", full);

        _cleanup_(freep) char *shorth = capture_help("test_flow", NULL, g, ELEMENTSOF(g), true);
        static const char expected_short[] =
                "USAGE: test_flow [flags]\n"
                "\n"
                "flags:\n"
                "\n"
                "test_flow:\n"
                "  --delay_seconds:  Delay.\n"
                "    (default: '1.0')\n"
                "    (a number in the range [0, 60])\n"
                "  --[no]explicit_start_stop:  If true, also send start_flow and stop_flow requests.\n"
                "    (default: 'false')\n"
                "  --quote:  Quoted.\n"
                "    (default: \"it's\")\n"
                "  --ticks:  Total ticks to send.\n"
                "    (default: '1000')\n"
                "    (a non-negative integer)\n";
        check_streq(shorth, expected_short);
        flags_reset();
        check(ticks == 1000 && delay == 1.0);
}

static void test_help_bounds_and_defaults(void) {
        static double d1 = 10.0, d2 = 2.2, d3 = 0.1, d4 = 1e20, d5 = 3;
        static int i1 = 60, i2 = 115200, i3 = -5;
        static int64_t l1;
        static const FlagDef f[] = {
                FLAG_DOUBLE_POSITIVE("a_timeout", &d1, "T."),
                FLAG_DOUBLE_MIN("b_min", &d2, 0, "M."),
                FLAG_DOUBLE_MIN("c_min2", &d3, 0.05, "M2."),
                FLAG_DOUBLE("d_big", &d4, "B."),
                FLAG_DOUBLE_RANGE("e_range", &d5, 0.5, 1e3, "R."),
                FLAG_INT_MIN("f_interval", &i1, 1, "I."),
                FLAG_INT("g_speed", &i2, "S."),
                FLAG_INT_RANGE("h_meters", &i3, -10, 6, "M."),
                FLAG_INT64_RANGE("i_any", &l1, INT64_MIN, INT64_MAX, "A."),
                FLAG_END,
        };
        static const FlagGroup g[] = { { "p", f } };
        _cleanup_(freep) char *h = capture_help("p", "D.", g, 1, true);
        static const char expected[] =
                "D.\n\nUSAGE: p [flags]\n\nflags:\n\np:\n"
                "  --a_timeout:  T.\n    (default: '10.0')\n    (a positive number)\n"
                "  --b_min:  M.\n    (default: '2.2')\n    (a non-negative number)\n"
                "  --c_min2:  M2.\n    (default: '0.1')\n    (a number >= 0.05)\n"
                "  --d_big:  B.\n    (default: '1e+20')\n"
                "  --e_range:  R.\n    (default: '3.0')\n    (a number in the range [0.5, 1000])\n"
                "  --f_interval:  I.\n    (default: '60')\n    (an integer >= 1)\n"
                "  --g_speed:  S.\n    (default: '115200')\n"
                "  --h_meters:  M.\n    (default: '-5')\n    (an integer in the range [-10, 6])\n"
                "  --i_any:  A.\n    (default: '0')\n";
        check_streq(h, expected);
}

static void test_given(void) {
        check(!flags_given("int"));
        check(PARSE("--int=7") == FLAGS_OK);
        check(flags_given("int"));
        check(!flags_given("flag"));
        check(!flags_given("nonexistent"));
        check(!flags_given(NULL));
        flags_reset();
        check(!flags_given("int"));
}

int main(void) {
        if (!mkdtemp(tmpdir)) {
                perror("mkdtemp");
                return 1;
        }
        unsetenv("TEST_STATE_DIRECTORY");
        unsetenv("TEST_CACHE_DIRECTORY");
        unsetenv("TEST_OTHER");
        unsetenv("TEST_VERBOSE");

        test_run(test_forms);
        test_run(test_bools);
        test_run(test_integers);
        test_run(test_numbers);
        test_run(test_strings_and_enums);
        test_run(test_positional);
        test_run(test_interspersed);
        test_run(test_unknown_and_abbreviations);
        test_run(test_undefok);
        test_run(test_help_flags);
        test_run(test_flagfile);
        test_run(test_flagfile_paths);
        test_run(test_buffer);
        test_run(test_env);
        test_run(test_utf8);
        test_run(test_help_output);
        test_run(test_help_bounds_and_defaults);
        test_run(test_given);

        test_rm_rf(tmpdir);
        return test_result();
}
