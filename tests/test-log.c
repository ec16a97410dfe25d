/* Unit tests for log.c: pycore line format, --logformat, levels, %m, journald prefixes, file
 * logging with midnight rotation and pruning, reopen, concurrent writers. Runs in TZ=UTC with the
 * wall clock injected through log_set_fake_time(). */
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "test-util.h"

/* 2012-06-21 23:06:34,705 UTC, the seed's example line. */
#define T_SEED ((uint64_t) 1340319994 * USEC_PER_SEC + 705 * USEC_PER_MSEC)
#define T_MIDNIGHT ((uint64_t) 1340323200 * USEC_PER_SEC)        /* 2012-06-22 00:00:00 */
#define DAY ((uint64_t) 86400 * USEC_PER_SEC)

static char tmpdir[] = "/tmp/test-log-XXXXXX";

static void setup(const LogConfig *cfg) {
        char *e = NULL;
        int r = log_setup(cfg, &e);
        check(r == 0);
        if (e)
                fprintf(stderr, "log_setup: %s\n", e);
        free(e);
}

static void test_default_format(void) {
        log_set_fake_time(T_SEED);

        /* Before log_setup(): stderr, default format, INFO. */
        capture_begin_in(tmpdir);
        log_info("Kegbot is starting up.");
        log_debug("not shown");
        char *out = capture_end();
        check_streq(out, "2012-06-21 23:06:34,705 INFO     (main) Kegbot is starting up.\n");
        free(out);

        setup(&(LogConfig) { .program = "test", .to_console = true });
        capture_begin_in(tmpdir);
        log_named(LOG_INFO, "kegnet", "Starting server on %s:%d", "127.0.0.1", 9805);
        log_warning("careful");
        log_error("broken");
        log_critical("very broken");
        log_full(LOG_NOTICE, "notice");
        log_full(LOG_ALERT, "alert");
        log_full(LOG_EMERG, "emerg");
        log_debug("not shown");
        out = capture_end();
        check_streq(out,
                    "2012-06-21 23:06:34,705 INFO     (kegnet) Starting server on 127.0.0.1:9805\n"
                    "2012-06-21 23:06:34,705 WARNING  (main) careful\n"
                    "2012-06-21 23:06:34,705 ERROR    (main) broken\n"
                    "2012-06-21 23:06:34,705 CRITICAL (main) very broken\n"
                    "2012-06-21 23:06:34,705 INFO     (main) notice\n"
                    "2012-06-21 23:06:34,705 CRITICAL (main) alert\n"
                    "2012-06-21 23:06:34,705 CRITICAL (main) emerg\n");
        free(out);

        /* Milliseconds are zero-padded. */
        log_set_fake_time(T_SEED - 700 * USEC_PER_MSEC);
        capture_begin_in(tmpdir);
        log_info("x");
        out = capture_end();
        check_streq(out, "2012-06-21 23:06:34,005 INFO     (main) x\n");
        free(out);
        log_set_fake_time(T_SEED);

        /* Verbose shows DEBUG. */
        setup(&(LogConfig) { .program = "test", .to_console = true, .verbose = true });
        check(log_get_max_level() == LOG_DEBUG);
        capture_begin_in(tmpdir);
        log_debug("shown");
        out = capture_end();
        check_streq(out, "2012-06-21 23:06:34,705 DEBUG    (main) shown\n");
        free(out);

        /* Console off. */
        log_set_console(false);
        capture_begin_in(tmpdir);
        log_error("hidden");
        out = capture_end();
        check_streq(out, "");
        free(out);
        log_set_console(true);

        log_set_max_level(LOG_WARNING);
        capture_begin_in(tmpdir);
        log_info("filtered");
        log_warning("kept");
        out = capture_end();
        check_streq(out, "2012-06-21 23:06:34,705 WARNING  (main) kept\n");
        free(out);
}

static void test_errno(void) {
        setup(&(LogConfig) { .program = "test", .to_console = true, .format = "%(message)s" });
        capture_begin_in(tmpdir);
        errno = EAGAIN;
        int r = log_error_errno(ENOENT, "Failed to open %s: %m", "/x");
        check(r == -ENOENT);
        check(errno == EAGAIN);         /* preserved */
        r = log_error_errno(-EACCES, "neg: %m");
        check(r == -EACCES);
        r = log_info_errno(0, "zero");
        check(r == 0);
        /* Filtered messages still return the error. */
        r = log_debug_errno(EIO, "debug: %m");
        check(r == -EIO);
        r = log_error_errno(INT_MIN, "min");
        check(r == -EINVAL);
        char *out = capture_end();
        check_streq(out, "Failed to open /x: No such file or directory\nneg: Permission denied\nzero\nmin\n");
        free(out);
}

static void test_robustness(void) {
        setup(&(LogConfig) { .program = "test", .to_console = true, .format = "[%(message)s]" });
        capture_begin_in(tmpdir);
        /* A NULL format: (null), not a crash. The call goes around the printf attribute on purpose. */
        int (*fn)(int, int, const char *, const char *, ...) = log_internal;
        fn(LOG_INFO, 0, NULL, NULL);
        size_t big = 200 * 1024;
        char *huge = malloc(big + 1);
        memset(huge, 'a', big);
        huge[big] = '\0';
        log_info("%s", huge);
        free(huge);
        log_info("%s", "");
        char *out = capture_end();
        check(out && strncmp(out, "[(null)]\n[", 10) == 0);
        /* Cut at 64 KiB - 1 bytes of message. */
        size_t expect = 9 + 1 + (64 * 1024 - 1) + 2 + 3;
        check(out && strlen(out) == expect);
        check(out && streq(out + strlen(out) - 6, "a]\n[]\n"));
        free(out);
}

/* Capture stderr and make it look like the journal's stream (JOURNAL_STREAM names it). */
static void capture_to_journal(void) {
        struct stat st;
        char js[64];

        capture_begin_in(tmpdir);
        check(fstat(STDERR_FILENO, &st) == 0);
        snprintf(js, sizeof js, "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        setenv("JOURNAL_STREAM", js, 1);
}

/* Whatever a message carries from outside, each entry stays one line of valid UTF-8: a peer's name
 * cannot forge a second entry (console, journal or file). */
static void test_untrusted_text_is_escaped(void) {
        static const char forged[] = "kegboard.flow0\n2012-06-21 23:06:34,705 INFO     (DrinkManager) "
                                     "Logged drink 99 username=admin liters=0.5 ticks=1100";

        setup(&(LogConfig) { .program = "test", .to_console = true, .format = "%(levelname)s %(message)s" });
        capture_begin_in(tmpdir);
        log_info("Creating tap %s", forged);
        log_warning("serial '%s'", "\xff\xff\x1b[31m\r");
        log_info("%s", "caf\xc3\xa9 a\\b \xe2\x80\xae");
        log_info("plain text stays plain: %d%%", 100);
        char *out = capture_end();
        check_streq(out,
                    "INFO Creating tap kegboard.flow0\\n2012-06-21 23:06:34,705 INFO     (DrinkManager) "
                    "Logged drink 99 username=admin liters=0.5 ticks=1100\n"
                    "WARNING serial '\\xff\\xff\\x1b[31m\\r'\n"
                    "INFO caf\xc3\xa9 a\\b \\u{202e}\n"
                    "INFO plain text stays plain: 100%\n");
        free(out);

        /* The journal's stream format too. */
        capture_to_journal();
        setup(&(LogConfig) { .program = "t", .to_console = true });
        log_info("Token %s", "x\n<6>(DrinkManager) Logged drink 99");
        out = capture_end();
        check_streq(out, "<6>(main) Token x\\n<6>(DrinkManager) Logged drink 99\n");
        free(out);
        unsetenv("JOURNAL_STREAM");
}

static void test_logformat(void) {
        static const struct {
                const char *format;
                const char *expected;
        } good[] = {
                { "%(levelname)s|%(name)s|%(message)s", "WARNING|kegnet|m\n" },
                { "%(levelname)10s|", "   WARNING|\n" },
                { "%(levelname)-10s|", "WARNING   |\n" },
                { "%(levelname)-3s|", "WARNING|\n" },
                { "100%% %(name)s", "100% kegnet\n" },
                { "%%(name)s", "%(name)s\n" },
                { "%(asctime)s", "2012-06-21 23:06:34,705\n" },
                { "plain", "plain\n" },
                { "", "m\n" },           /* as Python's logging: empty = %(message)s */
                { "%(message)s%(message)s", "mm\n" },
        };
        log_set_fake_time(T_SEED);
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                setup(&(LogConfig) { .program = "t", .to_console = true, .format = good[i].format });
                capture_begin_in(tmpdir);
                log_named(LOG_WARNING, "kegnet", "m");
                char *out = capture_end();
                check_streq(out, good[i].expected);
                free(out);
        }

        setup(&(LogConfig) { .program = "t", .to_console = true, .format = "%(process)d %(process)8d" });
        capture_begin_in(tmpdir);
        log_info("x");
        char *out = capture_end();
        char expect[64];
        snprintf(expect, sizeof expect, "%d %8d\n", (int) getpid(), (int) getpid());
        check_streq(out, expect);
        free(out);

        static const char *const bad[] = {
                "%(foo)s", "%(asctime)d", "%(message)x", "%d", "%s", "%", "abc %", "%(name", "%(name)",
                "%(name)-", "%(name)-8", "%(name)999s", "%(levelname) s", "%(Name)s", "%()s",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *e = NULL;
                int r = log_setup(&(LogConfig) { .program = "t", .to_console = true, .format = bad[i] }, &e);
                check(r == -EINVAL);
                check(e && strstr(e, "invalid --logformat") && strstr(e, bad[i]));
                if (r != -EINVAL)
                        fprintf(stderr, "accepted bad format '%s'\n", bad[i]);
                free(e);
        }
        /* A failed setup leaves the previous configuration working. */
        capture_begin_in(tmpdir);
        log_info("y");
        out = capture_end();
        snprintf(expect, sizeof expect, "%d %8d\n", (int) getpid(), (int) getpid());
        check_streq(out, expect);
        free(out);
}

static void test_journal(void) {
        capture_to_journal();
        setup(&(LogConfig) { .program = "t", .to_console = true, .verbose = true });
        log_debug("d");
        log_info("i");
        log_named(LOG_WARNING, "kegnet", "w");
        log_error_errno(ENOENT, "e: %m");
        log_critical("c");
        log_full(LOG_NOTICE, "n");
        char *out = capture_end();
        check_streq(out, "<7>(main) d\n<6>(main) i\n<4>(kegnet) w\n<3>(main) e: No such file or directory\n"
                         "<2>(main) c\n<6>(main) n\n");
        free(out);

        /* Not matching (another inode, garbage): normal lines. */
        static const char *const others[] = { "1:1", "garbage", "", "12:", ":5" };
        for (size_t i = 0; i < ELEMENTSOF(others); i++) {
                capture_begin_in(tmpdir);
                setenv("JOURNAL_STREAM", others[i], 1);
                setup(&(LogConfig) { .program = "t", .to_console = true, .format = "%(message)s" });
                log_info("plain");
                out = capture_end();
                check_streq(out, "plain\n");
                free(out);
        }
        unsetenv("JOURNAL_STREAM");
}

static void test_file(void) {
        _cleanup_(freep) char *path = test_path(tmpdir, "app.log");
        log_set_fake_time(T_SEED);

        /* Append to existing content; console and file at once. */
        FILE *f = fopen(path, "we");
        fputs("old line\n", f);
        fclose(f);
        /* Its mtime is now, the real today: make it "today" for the fake clock too. */
        struct timespec ts[2] = { { .tv_sec = 1340319994 }, { .tv_sec = 1340319994 } };
        check(utimensat(AT_FDCWD, path, ts, 0) == 0);

        setup(&(LogConfig) { .program = "t", .to_console = true, .to_file = true, .logfile = path,
                             .rotate = true, .max_files = 0 });
        capture_begin_in(tmpdir);
        log_info("both");
        char *out = capture_end();
        check_streq(out, "2012-06-21 23:06:34,705 INFO     (main) both\n");
        free(out);
        log_set_console(false);
        log_warning("file only");
        out = read_all(path);
        check_streq(out, "old line\n2012-06-21 23:06:34,705 INFO     (main) both\n"
                         "2012-06-21 23:06:34,705 WARNING  (main) file only\n");
        free(out);

        /* SIGHUP-style reopen after an external rotation. */
        _cleanup_(freep) char *moved = test_path(tmpdir, "app.log.moved");
        check(rename(path, moved) == 0);
        check(log_reopen() == 0);
        log_info("after reopen");
        out = read_all(path);
        check_streq(out, "2012-06-21 23:06:34,705 INFO     (main) after reopen\n");
        free(out);
        struct stat st;
        check(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
        log_close();
        unlink(moved);
        unlink(path);
}

static void test_rotation(void) {
        _cleanup_(freep) char *path = test_path(tmpdir, "rot.log");
        static const char *const old[] = { "2012-06-01", "2012-06-05", "2012-05-30", "2012-06-10" };
        char name[PATH_MAX];

        for (size_t i = 0; i < ELEMENTSOF(old); i++) {
                snprintf(name, sizeof name, "%s.%s", path, old[i]);
                FILE *f = fopen(name, "we");
                fclose(f);
        }
        /* Not rotated files of ours: never touched. */
        _cleanup_(freep) char *gz = test_path(tmpdir, "rot.log.2012-01-01.gz"), *txt = test_path(tmpdir, "rot.log.txt"),
                         *other = test_path(tmpdir, "other.log.2000-01-01");
        fclose(fopen(gz, "we"));
        fclose(fopen(txt, "we"));
        fclose(fopen(other, "we"));

        log_set_fake_time(T_MIDNIGHT - 2 * USEC_PER_SEC);       /* 23:59:58 on the 21st */
        /* max_files 3: at set-up the 4 old ones are pruned to 3. */
        setup(&(LogConfig) { .program = "t", .to_file = true, .logfile = path, .rotate = true, .max_files = 3,
                             .format = "%(asctime)s %(message)s" });
        snprintf(name, sizeof name, "%s.2012-05-30", path);
        check(access(name, F_OK) < 0);
        log_info("day one");
        log_set_fake_time(T_MIDNIGHT + 5 * USEC_PER_MSEC);
        log_info("day two");

        snprintf(name, sizeof name, "%s.2012-06-21", path);
        char *out = read_all(name);
        check_streq(out, "2012-06-21 23:59:58,000 day one\n");
        free(out);
        out = read_all(path);
        check_streq(out, "2012-06-22 00:00:00,005 day two\n");
        free(out);
        /* Newest three rotated: 06-05, 06-10, 06-21. */
        snprintf(name, sizeof name, "%s.2012-06-01", path);
        check(access(name, F_OK) < 0);
        snprintf(name, sizeof name, "%s.2012-06-05", path);
        check(access(name, F_OK) == 0);
        snprintf(name, sizeof name, "%s.2012-06-10", path);
        check(access(name, F_OK) == 0);
        check(access(gz, F_OK) == 0);
        check(access(txt, F_OK) == 0);
        check(access(other, F_OK) == 0);

        /* Several days without messages: the file is named after the day it covers. */
        log_set_fake_time(T_MIDNIGHT + 3 * DAY + 1);
        log_info("day five");
        snprintf(name, sizeof name, "%s.2012-06-22", path);
        out = read_all(name);
        check_streq(out, "2012-06-22 00:00:00,005 day two\n");
        free(out);
        snprintf(name, sizeof name, "%s.2012-06-05", path);
        check(access(name, F_OK) < 0);

        /* Without rotation nothing is renamed. */
        setup(&(LogConfig) { .program = "t", .to_file = true, .logfile = path, .rotate = false, .max_files = 3,
                             .format = "%(message)s" });
        log_set_fake_time(T_MIDNIGHT + 10 * DAY);
        log_info("no rotation");
        out = read_all(path);
        check(out && strstr(out, "day five\nno rotation\n"));
        free(out);

        /* max_files 0 keeps everything. The file was last written on day 10 (fake clock). */
        struct timespec ts[2] = { { .tv_sec = (time_t) ((T_MIDNIGHT + 10 * DAY) / USEC_PER_SEC) } };
        ts[1] = ts[0];
        check(utimensat(AT_FDCWD, path, ts, 0) == 0);
        setup(&(LogConfig) { .program = "t", .to_file = true, .logfile = path, .rotate = true, .max_files = 0,
                             .format = "%(message)s" });
        for (int d = 11; d < 20; d++) {
                log_set_fake_time(T_MIDNIGHT + (uint64_t) d * DAY);
                log_info("day %d", d);
        }
        int n = 0;
        for (int d = 10; d < 19; d++) {
                time_t t = (time_t) ((T_MIDNIGHT + (uint64_t) d * DAY) / USEC_PER_SEC);
                struct tm tm;
                gmtime_r(&t, &tm);
                char day[16];
                strftime(day, sizeof day, "%Y-%m-%d", &tm);
                snprintf(name, sizeof name, "%s.%s", path, day);
                n += access(name, F_OK) == 0;
        }
        check(n == 9);
        log_close();
}

static void test_relative_and_default_path(void) {
        char cwd[PATH_MAX];
        check(getcwd(cwd, sizeof cwd));
        check(chdir(tmpdir) == 0);
        log_set_fake_time(T_SEED);
        setup(&(LogConfig) { .program = "myprog", .to_file = true, .format = "%(message)s" });
        log_info("default name");
        setup(&(LogConfig) { .program = "myprog", .to_file = true, .logfile = "rel.log", .format = "%(message)s" });
        /* After a chdir (as --daemon does) reopening still finds the same file. */
        check(chdir("/") == 0);
        check(log_reopen() == 0);
        log_info("relative");
        log_close();
        check(chdir(cwd) == 0);

        _cleanup_(freep) char *p1 = test_path(tmpdir, "myprog.log"), *p2 = test_path(tmpdir, "rel.log");
        char *out = read_all(p1);
        check_streq(out, "default name\n");
        free(out);
        out = read_all(p2);
        check_streq(out, "relative\n");
        free(out);

        /* A log file that cannot be opened is an error with a message. */
        char *e = NULL;
        _cleanup_(freep) char *bad = test_path(tmpdir, "no/such/dir/x.log");
        check(log_setup(&(LogConfig) { .program = "t", .to_file = true, .logfile = bad }, &e) < 0);
        check(e && strstr(e, "cannot open log file") && strstr(e, bad));
        free(e);
        log_close();
}

static void test_concurrent_writers(void) {
        _cleanup_(freep) char *path = test_path(tmpdir, "conc.log");
        log_set_fake_time(0);
        setup(&(LogConfig) { .program = "t", .to_file = true, .logfile = path, .rotate = false });
        pid_t kids[3];
        for (int k = 0; k < 3; k++) {
                kids[k] = fork();
                if (kids[k] == 0) {
                        for (int i = 0; i < 500; i++)
                                log_info("writer %d line %d %s", k, i,
                                         "padding padding padding padding padding padding padding padding");
                        _exit(0);
                }
        }
        for (int k = 0; k < 3; k++)
                waitpid(kids[k], NULL, 0);
        log_close();
        FILE *f = fopen(path, "re");
        check(f);
        char line[512];
        int n = 0, bad = 0;
        while (f && fgets(line, sizeof line, f)) {
                n++;
                int k, i;
                char pad[16];
                if (sscanf(line + 24, "INFO     (main) writer %d line %d %15s", &k, &i, pad) != 3 ||
                    !strstr(line, "padding padding\n"))
                        bad++;
        }
        if (f)
                fclose(f);
        check(n == 1500);
        check(bad == 0);
}

int main(void) {
        if (!mkdtemp(tmpdir)) {
                perror("mkdtemp");
                return 1;
        }
        umask(022);
        setenv("TZ", "UTC", 1);
        tzset();
        unsetenv("JOURNAL_STREAM");

        test_run(test_default_format);
        test_run(test_errno);
        test_run(test_robustness);
        test_run(test_untrusted_text_is_escaped);
        test_run(test_logformat);
        test_run(test_journal);
        test_run(test_file);
        test_run(test_rotation);
        test_run(test_relative_and_default_path);
        test_run(test_concurrent_writers);

        test_rm_rf(tmpdir);
        return test_result();
}
