/* Unit tests for app.c: app_init() as a program sees it, each case in a forked child (it exits on
 * help and errors): help and error output and exit statuses, positionals, shared groups,
 * environment defaults, --api_key_file, --kegboard_speed=1200, --logformat, --pidfile. */
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "app.h"
#include "log.h"
#include "test-util.h"

static char tmpdir[] = "/tmp/test-app-XXXXXX";

static int arg_retries = 3;
static int64_t arg_ticks = 1000;

static const FlagDef core_flags[] = {
        FLAG_INT_MIN("maximum_event_retries", &arg_retries, 0, "Ignored."),
        FLAG_INT64_MIN("ticks", &arg_ticks, 0, "Total ticks to send."),
        FLAG_END,
};

typedef struct Result {
        int status;             /* exit status, or -1 */
        char *out, *err;        /* stdout and stderr */
} Result;

static void result_free(Result *r) {
        free(r->out);
        free(r->err);
}

typedef void (*Body)(char **positional);

/* Run app_init(argv) in a child, then body (which prints what it wants checked), then exit 0. */
static Result run(const AppInfo *info, const char *const *args, Body body) {
        char out[PATH_MAX], err[PATH_MAX];
        snprintf(out, sizeof out, "%s/out", tmpdir);
        snprintf(err, sizeof err, "%s/err", tmpdir);
        fflush(stdout);
        fflush(stderr);
        pid_t k = fork();
        if (k == 0) {
                int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                int e = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                dup2(o, STDOUT_FILENO);
                dup2(e, STDERR_FILENO);
                char *argv[32] = { (char *) "./prog" };
                int argc = 1;
                for (; args[argc - 1] && argc < 31; argc++)
                        argv[argc] = (char *) args[argc - 1];
                argv[argc] = NULL;
                char **pos = NULL;
                app_init(argc, argv, info, info->positional_args ? &pos : NULL);
                if (body)
                        body(pos);
                fflush(stdout);
                strv_free(pos);
                exit(0);
        }
        int status;
        waitpid(k, &status, 0);
        return (Result) {
                .status = WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                .out = read_all(out),
                .err = read_all(err),
        };
}

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })
#define NOARGS ((const char *const[]) { NULL })

static const AppInfo core_info = {
        .name = "kegbot_core",
        .description = "The Kegbot core.",
        .flags = core_flags,
        .groups = APP_GROUP_API,
        .startup_message = "Kegbot is starting up.",
};

static void print_api(char **pos) {
        printf("url=%s key=%s timeout=%g given=%d retries=%d\n", app_api_url(), app_api_key(), app_api_timeout(),
               flags_given("maximum_event_retries"), arg_retries);
}

static void test_help(void) {
        Result r = run(&core_info, ARGS("--help"), NULL);
        check(r.status == 1);
        check(r.out && strncmp(r.out, "The Kegbot core.\n\nUSAGE: kegbot_core [flags]\n\nflags:\n\nkegbot_core:\n"
                                      "  --maximum_event_retries:  Ignored.\n    (default: '3')\n"
                                      "    (a non-negative integer)\n", 130) == 0);
        check(r.out && strstr(r.out, "\napi:\n  --api_key:  "));
        check(r.out && strstr(r.out, "\napp:\n  --[no]daemon:  "));
        check(r.out && strstr(r.out, "  --logfile:  Log file path (with --log_to_file).\n    (default: 'kegbot_core.log')\n"));
        check(r.out && strstr(r.out, "\ngflags:\n"));
        check(r.out && !strstr(r.out, "kegnet:") && !strstr(r.out, "kegboard:"));
        /* Groups in order: program, api, app, gflags. */
        check(r.out && strstr(r.out, "\nkegbot_core:") < strstr(r.out, "\napi:") &&
              strstr(r.out, "\napi:") < strstr(r.out, "\napp:") && strstr(r.out, "\napp:") < strstr(r.out, "\ngflags:"));
        check_streq(r.err, "");
        result_free(&r);

        r = run(&core_info, ARGS("-?"), NULL);
        check(r.status == 1 && r.out && strncmp(r.out, "The Kegbot core.", 16) == 0);
        result_free(&r);

        r = run(&core_info, ARGS("--helpshort"), NULL);
        check(r.status == 1);
        check(r.out && strstr(r.out, "kegbot_core:") && !strstr(r.out, "\napi:") && !strstr(r.out, "gflags:"));
        result_free(&r);

        /* Environment defaults show up as the defaults. */
        setenv("KEGBOT_API_URL", "http://env/api/", 1);
        r = run(&core_info, ARGS("--help"), NULL);
        check(r.out && strstr(r.out, "  --api_url:  Base URL of the Kegbot Server API; empty = no server.\n"
                                     "    (default: 'http://env/api/')\n"));
        result_free(&r);
        unsetenv("KEGBOT_API_URL");

        /* All shared groups in their order. */
        AppInfo all = core_info;
        all.groups = APP_GROUP_API | APP_GROUP_KEGBOARD | APP_GROUP_KEGNET;
        r = run(&all, ARGS("--help"), NULL);
        check(r.out && strstr(r.out, "\nkegbot_core:") < strstr(r.out, "\nkegnet:") &&
              strstr(r.out, "\nkegnet:") < strstr(r.out, "\napi:") &&
              strstr(r.out, "\napi:") < strstr(r.out, "\nkegboard:") &&
              strstr(r.out, "\nkegboard:") < strstr(r.out, "\napp:"));
        result_free(&r);
}

static void test_errors(void) {
        Result r = run(&core_info, ARGS("--foo"), NULL);
        check(r.status == 1);
        check_streq(r.err, "Usage: ./prog [flags]\n\nError: unknown flag --foo\n");
        check_streq(r.out, "");
        result_free(&r);

        r = run(&core_info, ARGS("--ticks=1", "start"), NULL);
        check(r.status == 1);
        check_streq(r.err, "Usage: ./prog [flags]\n\nError: unexpected argument 'start'\n");
        result_free(&r);

        r = run(&core_info, ARGS("--api_timeout=0"), NULL);
        check(r.status == 1);
        check_streq(r.err, "Usage: ./prog [flags]\n\nError: flag --api_timeout=0: 0 is not a number in the range (0, 3600]\n");
        result_free(&r);

        r = run(&core_info, ARGS("--logformat=%(levelname)x"), NULL);
        check(r.status == 1);
        check(r.err && startswith(r.err, "Usage: ./prog [flags]\n\nError: invalid --logformat '%(levelname)x'"));
        result_free(&r);

        /* Not in this program's groups. */
        r = run(&core_info, ARGS("--kb_core_addr=1"), NULL);
        check_streq(r.err, "Usage: ./prog [flags]\n\nError: unknown flag --kb_core_addr\n");
        result_free(&r);

        AppInfo kb = { .name = "kegboard_daemon", .groups = APP_GROUP_KEGBOARD };
        r = run(&kb, ARGS("--kegboard_speed=1200"), NULL);
        check(r.status == 1);
        check(r.err && startswith(r.err, "Usage: ./prog [flags]\n\nError: flag --kegboard_speed=1200: "));
        result_free(&r);
}

static void print_positional(char **pos) {
        for (char **p = pos; p && *p; p++)
                printf("[%s]", *p);
        printf("\n");
}

static void test_positional(void) {
        AppInfo master = { .name = "kegbot_master", .positional_args = true };
        Result r = run(&master, ARGS("--nodaemon", "status", "--x"), print_positional);
        check(r.status == 0);
        check_streq(r.out, "[status][--x]\n");
        result_free(&r);
        r = run(&master, NOARGS, print_positional);
        check(r.status == 0);
        check_streq(r.out, "\n");
        result_free(&r);
}

static void print_given(char **pos) {
        printf("given=%d retries=%d\n", flags_given("maximum_event_retries"), arg_retries);
}

static void test_given_and_env(void) {
        Result r = run(&core_info, ARGS("--maximum_event_retries=3"), print_given);
        check(r.status == 0);
        check_streq(r.out, "given=1 retries=3\n");
        result_free(&r);
        r = run(&core_info, NOARGS, print_given);
        check_streq(r.out, "given=0 retries=3\n");
        result_free(&r);

        setenv("KEGBOT_API_URL", "http://env/api/", 1);
        setenv("KEGBOT_API_KEY", "envkey", 1);
        r = run(&core_info, NOARGS, print_api);
        check_streq(r.out, "url=http://env/api/ key=envkey timeout=10 given=0 retries=3\n");
        result_free(&r);
        r = run(&core_info, ARGS("--api_url=http://flag/", "--api_timeout", "2.5"), print_api);
        check_streq(r.out, "url=http://flag/ key=envkey timeout=2.5 given=0 retries=3\n");
        result_free(&r);
        unsetenv("KEGBOT_API_URL");
        unsetenv("KEGBOT_API_KEY");
}

static void test_api_key_file(void) {
        char path[PATH_MAX], arg[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/api_key", tmpdir);
        FILE *f = fopen(path, "we");
        fputs("  0123456789abcdef0123456789abcdef \n\n", f);
        fclose(f);
        snprintf(arg, sizeof arg, "--api_key_file=%s", path);

        Result r = run(&core_info, ARGS("--api_key=cmdline", arg), print_api);
        check(r.status == 0);
        check_streq(r.out, "url= key=0123456789abcdef0123456789abcdef timeout=10 given=0 retries=3\n");
        result_free(&r);

        snprintf(arg, sizeof arg, "--api_key_file=%s/missing", tmpdir);
        r = run(&core_info, ARGS("--logformat=%(levelname)s %(message)s", arg), print_api);
        check(r.status == 1);
        check_streq(r.out, "");
        check(r.err && strstr(r.err, "INFO Kegbot is starting up.\nERROR Failed to read --api_key_file ") &&
              strstr(r.err, "missing: No such file or directory\n"));
        result_free(&r);
}

static void print_kegboard(char **pos) {
        printf("device=%s speed=%d\n", app_kegboard_device(), app_kegboard_speed());
}

static void test_kegboard_group(void) {
        AppInfo kb = { .name = "kegboard_daemon", .groups = APP_GROUP_KEGBOARD | APP_GROUP_KEGNET };
        Result r = run(&kb, NOARGS, print_kegboard);
        check_streq(r.out, "device= speed=115200\n");
        result_free(&r);
        r = run(&kb, ARGS("--kegboard_device=/dev/ttyUSB1", "--kegboard_speed=57600"), print_kegboard);
        check_streq(r.out, "device=/dev/ttyUSB1 speed=57600\n");
        result_free(&r);
        r = run(&kb, ARGS("--kegboard_device_path=/dev/ttyACM0", "--kegboard_device=/dev/ttyUSB1"), print_kegboard);
        check_streq(r.out, "device=/dev/ttyACM0 speed=115200\n");
        result_free(&r);
}

static void print_addr(char **pos) {
        printf("addr=%s verbose=%d daemon=%d pidfile=%s\n", app_kb_core_addr(), app_verbose(), app_daemon(),
               app_pidfile());
}

static void test_common(void) {
        AppInfo tf = { .name = "test_flow", .groups = APP_GROUP_KEGNET };
        Result r = run(&tf, NOARGS, print_addr);
        check_streq(r.out, "addr=127.0.0.1:9805 verbose=0 daemon=0 pidfile=\n");
        result_free(&r);
        setenv("VERBOSE", "", 1);
        r = run(&tf, ARGS("--kb_core_addr=9999"), print_addr);
        check_streq(r.out, "addr=9999 verbose=1 daemon=0 pidfile=\n");
        result_free(&r);
        unsetenv("VERBOSE");
}

static void test_pidfile(void) {
        char pid[PATH_MAX], arg[PATH_MAX + 32], buf[32];
        snprintf(pid, sizeof pid, "%s/app.pid", tmpdir);
        snprintf(arg, sizeof arg, "--pidfile=%s", pid);

        /* Written while running, removed at exit. */
        Result r = run(&core_info, ARGS(arg), print_addr);
        check(r.status == 0);
        check(access(pid, F_OK) < 0);
        result_free(&r);

        /* A live PID in it: refused. */
        FILE *f = fopen(pid, "we");
        fprintf(f, "%d\n", (int) getpid());
        fclose(f);
        r = run(&core_info, ARGS(arg, "--logformat=%(message)s"), print_addr);
        check(r.status == 1);
        snprintf(buf, sizeof buf, "%d", (int) getpid());
        check(r.err && strstr(r.err, "Kegbot is starting up.\nOld pid ") && strstr(r.err, buf) &&
              strstr(r.err, " is still alive, aborting\n"));
        check_streq(r.out, "");
        check(access(pid, F_OK) == 0);          /* someone else's: left alone */
        result_free(&r);

        f = fopen(pid, "we");
        fputs("garbage\n", f);
        fclose(f);
        r = run(&core_info, ARGS(arg, "--logformat=%(message)s"), print_addr);
        check(r.status == 1);
        check_streq(r.err, "Kegbot is starting up.\nCould not read pid, abort.\n");
        result_free(&r);
        unlink(pid);
}

static void test_logfile(void) {
        char cwd[PATH_MAX];
        check(getcwd(cwd, sizeof cwd));
        check(chdir(tmpdir) == 0);
        AppInfo tf = { .name = "test_flow", .startup_message = "hello" };
        Result r = run(&tf, ARGS("--log_to_file", "--nolog_to_stdout", "--logformat=%(name)s %(message)s"), NULL);
        check(r.status == 0);
        check_streq(r.err, "");
        result_free(&r);
        check(chdir(cwd) == 0);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/test_flow.log", tmpdir);
        _cleanup_(freep) char *c = read_all(path);
        check_streq(c, "main hello\n");
}

int main(void) {
        if (!mkdtemp(tmpdir)) {
                perror("mkdtemp");
                return 1;
        }
        static const char *const env[] = { "KEGBOT_API_URL", "KEGBOT_API_KEY", "VERBOSE", "JOURNAL_STREAM",
                                           "STATE_DIRECTORY", "CACHE_DIRECTORY" };
        for (size_t i = 0; i < ELEMENTSOF(env); i++)
                unsetenv(env[i]);

        test_run(test_help);
        test_run(test_errors);
        test_run(test_positional);
        test_run(test_given_and_env);
        test_run(test_api_key_file);
        test_run(test_kegboard_group);
        test_run(test_common);
        test_run(test_pidfile);
        test_run(test_logfile);

        test_rm_rf(tmpdir);
        return test_result();
}
