/* kegbot_master's apps: config -> command lines, and start/stop/status/configtest. See apps.h. */
#define LOG_COMPONENT "master"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apps.h"
#include "ini.h"
#include "log.h"
#include "util-io.h"
#include "util-string.h"
#include "util-strv.h"

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
#define STOP_ATTEMPTS 6
#define STOP_TERM_ATTEMPTS 3

/* The built-in [DEFAULT] of §12.1, in the table's order. */
static const char *const builtin_defaults[][2] = {
        { "_pidfile_dir",  "%(_flag_pidfile_dir)s" },
        { "_logfile_dir",  "%(_flag_logfile_dir)s" },
        { "_enabled",      "False" },
        { "_program_name", "%(__name__)s.py" },
        { "pidfile",       "%(_pidfile_dir)s/%(__name__)s.pid" },
        { "daemon",        "True" },
        { "log_to_stdout", "False" },
        { "log_to_file",   "True" },
        { "logfile",       "%(_logfile_dir)s/%(__name__)s.log" },
};

static void master_app_done(MasterApp *a) {
        free(a->name);
        free(a->program);
        strv_free(a->flags);
        free(a->pidfile);
}

MasterConfig *master_config_free(MasterConfig *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_apps; i++)
                master_app_done(&c->apps[i]);
        free(c->apps);
        free(c->path);
        free(c->self_dir);
        free(c);
        return NULL;
}

static int cmp_flags(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static char *self_directory(void) {
        char buf[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
        if (n <= 0)
                return strdup("");
        buf[n] = '\0';
        char *slash = strrchr(buf, '/');
        if (!slash)
                return strdup("");
        if (slash == buf)
                slash++;        /* "/kegbot_master" lives in "/" */
        *slash = '\0';
        return strdup(buf);
}

/* Logs and returns -EINVAL for config errors (the message already names file and line). */
static int config_error(char *msg) {
        log_error("%s", msg ?: "Config error");
        free(msg);
        return -EINVAL;
}

static int app_build(const Ini *ini, const IniSection *s, MasterApp *app) {
        _cleanup_(freep) char *program = NULL;
        _cleanup_(freep) const char **keys = NULL;
        char *err = NULL;
        size_t n_keys = 0;
        int r;

        app->name = strdup(s->name);
        if (!app->name)
                return log_oom();
        app->line = s->line;

        r = ini_get(ini, s->name, "_program_name", &program, &err);
        if (r < 0)
                return config_error(err);
        size_t l = strlen(program);
        if (l >= 3 && streq(program + l - 3, ".py"))
                program[l - 3] = '\0';
        if (isempty(program)) {
                log_error("%s:%u: [%s] _program_name is empty", ini->name, s->line, s->name);
                return -EINVAL;
        }
        app->program = TAKE_PTR(program);

        r = ini_section_keys(ini, s->name, &keys, &n_keys);
        if (r < 0)
                return log_oom();
        app->flags = calloc(n_keys + 1, sizeof(char *));
        if (!app->flags)
                return log_oom();

        for (size_t i = 0; i < n_keys; i++) {
                _cleanup_(freep) char *value = NULL;
                char *flag;

                if (keys[i][0] == '_')
                        continue;       /* kegbot_master's own variables */
                r = ini_get(ini, s->name, keys[i], &value, &err);
                if (r < 0)
                        return config_error(err);
                if (isempty(value))
                        r = asprintf(&flag, "--%s", keys[i]);
                else
                        r = asprintf(&flag, "--%s=%s", keys[i], value);
                if (r < 0)
                        return log_oom();
                app->flags[app->n_flags++] = flag;
        }
        qsort(app->flags, app->n_flags, sizeof(char *), cmp_flags);

        r = ini_get(ini, s->name, "pidfile", &app->pidfile, &err);
        if (r == -ENOENT) {
                free(err);
                app->pidfile = strdup("");
                if (!app->pidfile)
                        return log_oom();
        } else if (r < 0)
                return config_error(err);
        return 0;
}

int master_config_load(const char *path, const char *logfile_dir, const char *pidfile_dir,
                       MasterConfig **ret) {
        _cleanup_(master_config_freep) MasterConfig *c = NULL;
        _cleanup_(ini_freep) Ini *ini = NULL;
        char *err = NULL;
        int r;

        c = calloc(1, sizeof(MasterConfig));
        if (!c)
                return log_oom();
        c->path = strdup(path);
        c->self_dir = self_directory();
        if (!c->path || !c->self_dir)
                return log_oom();

        r = ini_new(&ini, path);
        if (r < 0)
                return log_oom();
        if (ini_set_variable(ini, "_flag_logfile_dir", logfile_dir) < 0 ||
            ini_set_variable(ini, "_flag_pidfile_dir", pidfile_dir) < 0)
                return log_oom();
        for (size_t i = 0; i < ELEMENTSOF(builtin_defaults); i++)
                if (ini_set_builtin_default(ini, builtin_defaults[i][0], builtin_defaults[i][1]) < 0)
                        return log_oom();

        r = ini_parse_file(ini, path, &err);
        if (r == -ENOENT) {
                /* pycore was silent here, which made a typo in --master_config look like "no apps". */
                log_warning("Config file %s not found, no apps configured.", path);
                free(err);
        } else if (r == -EINVAL)
                return config_error(err);
        else if (r < 0) {
                log_error("Cannot read config file %s", err ?: path);
                free(err);
                return r;
        }

        for (size_t i = 0; i < ini->n_sections; i++) {
                const IniSection *s = ini->sections[i];
                bool enabled;

                r = ini_get_boolean(ini, s->name, "_enabled", &enabled, &err);
                if (r < 0)
                        return config_error(err);
                if (!enabled)
                        continue;

                MasterApp *n = realloc(c->apps, (c->n_apps + 1) * sizeof(MasterApp));
                if (!n)
                        return log_oom();
                c->apps = n;
                c->apps[c->n_apps] = (MasterApp) {};
                r = app_build(ini, s, &c->apps[c->n_apps]);
                c->n_apps++;    /* counted even on failure, so that master_config_free() frees it */
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(c);
        return 0;
}

char *master_app_command(const MasterApp *app) {
        size_t len = strlen(app->program) + 1;
        for (size_t i = 0; i < app->n_flags; i++)
                len += 1 + strlen(app->flags[i]);

        char *s = malloc(len), *p = s;
        if (!s)
                return NULL;
        p = stpcpy(p, app->program);
        for (size_t i = 0; i < app->n_flags; i++) {
                *p++ = ' ';
                p = stpcpy(p, app->flags[i]);
        }
        return s;
}

/* A daemonized app's parent is init (or a subreaper), which may take its time to reap it; until
 * then kill(pid, 0) still succeeds, but a zombie is not running. Also reads the process's start time
 * (clock ticks after boot, /proc/<pid>/stat field 22). */
static int proc_stat(pid_t pid, bool *ret_zombie, unsigned long long *ret_start) {
        _cleanup_(fclosep) FILE *f = NULL;
        char path[64], buf[1024];

        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        if (!fgets(buf, sizeof buf, f))
                return -EIO;
        /* "pid (comm) S ...": comm may contain anything, so look after its last ')'. */
        const char *p = strrchr(buf, ')');
        if (!p || p[1] != ' ')
                return -EBADMSG;
        *ret_zombie = p[2] == 'Z';
        /* Field 3 is the state; the start time is field 22. */
        p += 2;
        for (int field = 3; field < 22; field++) {
                p = strchr(p, ' ');
                if (!p)
                        return -EBADMSG;
                p++;
        }
        *ret_start = strtoull(p, NULL, 10);
        return 0;
}

/* When the system booted, from /proc/stat. */
static int boot_time(time_t *ret) {
        _cleanup_(fclosep) FILE *f = fopen("/proc/stat", "re");
        char line[256];

        if (!f)
                return -errno;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, "btime ", 6) == 0) {
                        *ret = (time_t) strtoll(line + 6, NULL, 10);
                        return 0;
                }
        return -ENOENT;
}

/* /proc/<pid>/cmdline as a NULL-terminated list. */
static char **proc_cmdline(pid_t pid) {
        char path[64];
        _cleanup_(freep) char *buf = NULL;
        size_t len = 0;
        char **l = NULL;
        size_t n = 0;
        int fd;

        snprintf(path, sizeof path, "/proc/%d/cmdline", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        int r = io_read_all(fd, 64 * 1024, &buf, &len);
        safe_close(fd);
        if (r < 0)
                return NULL;
        for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
                if (strv_extend(&l, &n, buf + i) < 0)
                        return strv_free(l);
        if (!l)
                l = calloc(1, sizeof(char *));
        return l;
}

static bool same_file(const struct stat *a, const struct stat *b) {
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Whether the process runs the app's program: its executable is the program (or was, before an
 * upgrade replaced the file), or it is an interpreter running the program as a script. Without
 * access to /proc/<pid>/exe (another user's process) the command line's program name decides. */
static bool pid_runs_program(pid_t pid, const char *program_path, const char *program, char **cmdline) {
        char exe[64], target[PATH_MAX];
        struct stat pst, est;
        bool exe_hidden = true;

        snprintf(exe, sizeof exe, "/proc/%d/exe", (int) pid);
        if (program_path && stat(program_path, &pst) == 0) {
                ssize_t n = readlink(exe, target, sizeof target - 1);
                exe_hidden = n < 0 && (errno == EACCES || errno == EPERM);
                if (stat(exe, &est) == 0 && same_file(&est, &pst))
                        return true;
                if (n > 0) {
                        _cleanup_(freep) char *real = realpath(program_path, NULL);
                        static const char deleted[] = " (deleted)";
                        size_t dl = strlen(deleted);
                        target[n] = '\0';
                        if ((size_t) n > dl && streq(target + n - dl, deleted))
                                target[n - dl] = '\0';
                        if (real && streq(target, real))
                                return true;
                }
                /* "python3 /usr/bin/<program> ...": a script's path is the first argument. */
                if (cmdline && cmdline[0] && cmdline[1] && stat(cmdline[1], &est) == 0 && same_file(&est, &pst))
                        return true;
                if (!exe_hidden)
                        return false;
        }
        for (size_t i = 0; cmdline && i < 2 && cmdline[i]; i++) {
                const char *base = strrchr(cmdline[i], '/');
                if (streq(base ? base + 1 : cmdline[i], program))
                        return true;
        }
        return false;
}

/* Whether the command line passes this pidfile (as kegbot_master does: --pidfile=<path>). */
static bool cmdline_names_pidfile(char **cmdline, const char *pidfile) {
        for (size_t i = 0; cmdline && cmdline[i]; i++) {
                const char *v = startswith(cmdline[i], "--pidfile=") ?: startswith(cmdline[i], "-pidfile=");
                if (v && streq(v, pidfile))
                        return true;
        }
        return false;
}

/* Is the live process 'pid' the app of this pidfile? If not, *ret_why says what it is instead. */
static bool pid_is_app(const MasterConfig *c, const MasterApp *app, pid_t pid, const struct stat *pidfile_st,
                       char **ret_why) {
        _cleanup_(freep) char *program_path = NULL;
        _cleanup_(strv_freep) char **cmdline = proc_cmdline(pid);
        unsigned long long start = 0;
        time_t boot = 0;
        bool zombie;

        if (master_find_program(c, app->program, &program_path) < 0)
                program_path = NULL;
        if (!pid_runs_program(pid, program_path, app->program, cmdline)) {
                *ret_why = strdup_printf("pid %d is now %s, not %s", (int) pid,
                                         cmdline && cmdline[0] ? cmdline[0] : "another program", app->program);
                return false;
        }
        if (cmdline_names_pidfile(cmdline, app->pidfile))
                return true;    /* it wrote this file, whatever the clock did since */
        if (proc_stat(pid, &zombie, &start) < 0 || boot_time(&boot) < 0)
                return true;    /* nothing to compare with */
        long hz = sysconf(_SC_CLK_TCK);
        double started = (double) boot + (double) start / (double) (hz > 0 ? hz : 100);
        double written = (double) pidfile_st->st_mtim.tv_sec + (double) pidfile_st->st_mtim.tv_nsec / 1e9;
        /* btime is in whole seconds: allow for that. */
        if (started > written + 2.0) {
                *ret_why = strdup_printf("pid %d started %.0f s after the pidfile was written: another %s",
                                         (int) pid, started - written, app->program);
                return false;
        }
        return true;
}

MasterAppState master_app_state(const MasterConfig *c, const MasterApp *app, pid_t *ret_pid) {
        _cleanup_(fclosep) FILE *f = NULL;
        struct stat st;
        char line[64];
        bool zombie = false;
        unsigned long long start;

        *ret_pid = 0;
        if (isempty(app->pidfile))
                return MASTER_APP_UNKNOWN;
        f = fopen(app->pidfile, "re");
        if (!f)
                return errno == ENOENT ? MASTER_APP_STOPPED : MASTER_APP_UNKNOWN;
        if (fstat(fileno(f), &st) < 0 || !fgets(line, sizeof line, f))
                return MASTER_APP_UNKNOWN;

        char *end;
        errno = 0;
        long v = strtol(line, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
                end++;
        if (errno != 0 || end == line || *end != '\0' || v <= 0 || v > INT_MAX)
                return MASTER_APP_UNKNOWN;

        *ret_pid = (pid_t) v;
        if (!(kill((pid_t) v, 0) == 0 || errno == EPERM) ||
            (proc_stat((pid_t) v, &zombie, &start) >= 0 && zombie))
                return MASTER_APP_DIED;

        _cleanup_(freep) char *why = NULL;
        if (pid_is_app(c, app, (pid_t) v, &st, &why))
                return MASTER_APP_RUNNING;
        /* The app died and its pid went to somebody else: never report or signal that process. */
        log_warning("Removing stale pidfile %s of %s: %s", app->pidfile, app->name, why ?: "not the app");
        if (unlink(app->pidfile) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove %s: %m", app->pidfile);
        return MASTER_APP_DIED;
}

static bool is_executable_file(const char *path) {
        struct stat st;
        return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static int try_dir(const char *dir, size_t dir_len, const char *program, char **ret_path) {
        char *p;
        if (dir_len == 0) {
                dir = ".";
                dir_len = 1;
        }
        if (asprintf(&p, "%.*s/%s", (int) dir_len, dir, program) < 0)
                return -ENOMEM;
        if (is_executable_file(p)) {
                *ret_path = p;
                return 1;
        }
        free(p);
        return 0;
}

int master_find_program(const MasterConfig *c, const char *program, char **ret_path) {
        int r;

        if (strchr(program, '/')) {
                if (!is_executable_file(program))
                        return -ENOENT;
                *ret_path = strdup(program);
                return *ret_path ? 0 : -ENOMEM;
        }

        if (!isempty(c->self_dir)) {
                r = try_dir(c->self_dir, strlen(c->self_dir), program, ret_path);
                if (r != 0)
                        return r < 0 ? r : 0;
        }

        const char *path = getenv("PATH") ?: DEFAULT_PATH;
        for (;;) {
                const char *colon = strchrnul(path, ':');
                r = try_dir(path, (size_t) (colon - path), program, ret_path);
                if (r != 0)
                        return r < 0 ? r : 0;
                if (!*colon)
                        return -ENOENT;
                path = colon + 1;
        }
}

int master_configtest(const MasterConfig *c, FILE *out) {
        fputs("# These are the commands that would be executed on start:\n\n", out);
        for (size_t i = 0; i < c->n_apps; i++) {
                const MasterApp *a = &c->apps[i];

                fprintf(out, "# %s\n%s", a->name, a->program);
                for (size_t j = 0; j < a->n_flags; j++)
                        fprintf(out, " \\\n    %s", a->flags[j]);
                fputs("\n\n", out);
        }
        return fflush(out) == 0 ? 0 : -EIO;
}

int master_status(const MasterConfig *c, FILE *out) {
        fputs("Status:\n", out);
        for (size_t i = 0; i < c->n_apps; i++) {
                const MasterApp *a = &c->apps[i];
                pid_t pid;

                switch (master_app_state(c, a, &pid)) {
                case MASTER_APP_RUNNING:
                        fprintf(out, "%24s : running (%d)\n", a->name, (int) pid);
                        break;
                case MASTER_APP_DIED:
                        fprintf(out, "%24s : died (%d)\n", a->name, (int) pid);
                        break;
                case MASTER_APP_STOPPED:
                        fprintf(out, "%24s : stopped\n", a->name);
                        break;
                case MASTER_APP_UNKNOWN:
                        fprintf(out, "%24s : unknown\n", a->name);
                        break;
                }
        }
        return fflush(out) == 0 ? 0 : -EIO;
}

/* Run 'command' under /bin/sh -c with stdout and stderr going to a memfd (not a pipe: a daemonizing
 * child that forgets to close its inherited stdout must not make us wait for it). Returns the
 * Python-style return code (exit status, or -signal) and the output. */
static int run_shell(const char *command, int *ret_code, char **ret_output) {
        _cleanup_(closep) int out = -EBADF;
        pid_t pid;
        int status;

        out = memfd_create("kegbot_master-output", MFD_CLOEXEC);
        if (out < 0)
                return -errno;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (null < 0 || dup2(null, STDIN_FILENO) < 0 ||
                    dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
                        _exit(127);
                /* Through the shell, as pycore did, so that quoting in values keeps working
                 * (api_url = 'http://...'). The original issue asked for argument vectors and no
                 * shell, but programs-and-flags.md §12.1 says /bin/sh -c, and the spec wins. */
                execl("/bin/sh", "sh", "-c", command, (char *) NULL);
                _exit(127);
        }

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        *ret_code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -WTERMSIG(status) : -1;

        off_t size = lseek(out, 0, SEEK_END);
        if (size < 0)
                return -errno;
        size = MIN(size, (off_t) (1024 * 1024));
        char *buf = malloc((size_t) size + 1);
        if (!buf)
                return -ENOMEM;
        ssize_t n = pread(out, buf, (size_t) size, 0);
        if (n < 0) {
                free(buf);
                return -errno;
        }
        buf[n] = '\0';
        *ret_output = buf;
        return 0;
}

static int start_app(const MasterConfig *c, const MasterApp *a) {
        _cleanup_(freep) char *command = NULL, *path = NULL, *output = NULL;
        int r, code = 0;

        command = master_app_command(a);
        if (!command)
                return log_oom();
        log_info("Starting: %s", a->name);
        log_info("Command: %s", command);

        r = master_find_program(c, a->program, &path);
        if (r == -ENOENT) {
                log_error("Error starting %s: program '%s' not found", a->name, a->program);
                return r;
        }
        if (r < 0)
                return log_error_errno(r, "Error starting %s: %m", a->name);

        r = run_shell(command, &code, &output);
        if (r < 0)
                return log_error_errno(r, "Error starting %s: %m", a->name);
        if (code == 0) {
                log_info("Started %s OK", a->name);
                return 0;
        }

        log_error("Error starting %s: %d", a->name, code);
        log_error("Output was:");
        char *p = output;
        while (*p) {
                char *nl = strchrnul(p, '\n');
                bool last = !*nl;
                *nl = '\0';
                log_error("<%s>  %s", a->name, p);
                if (last)
                        break;
                p = nl + 1;
        }
        return -EIO;
}

int master_start(const MasterConfig *c) {
        _cleanup_(freep) char *path = NULL;
        int r;

        /* Children find their siblings first, like our own lookup (pycore appended it at the end). */
        const char *old = getenv("PATH") ?: DEFAULT_PATH;
        if (!isempty(c->self_dir)) {
                if (asprintf(&path, "%s:%s", c->self_dir, old) < 0)
                        return log_oom();
                if (setenv("PATH", path, 1) < 0)
                        return log_error_errno(errno, "Failed to set PATH: %m");
        }

        log_info("Starting apps");
        for (size_t i = 0; i < c->n_apps; i++) {
                r = start_app(c, &c->apps[i]);
                if (r < 0)
                        return r;       /* the remaining apps are not started */
        }
        return 0;
}

static int stop_app(const MasterConfig *c, const MasterApp *a) {
        log_info("Stopping app: %s", a->name);
        for (unsigned attempt = 0;; attempt++) {
                pid_t pid;

                if (master_app_state(c, a, &pid) != MASTER_APP_RUNNING) {
                        log_info("%s stopped.", a->name);
                        return 0;
                }
                if (attempt >= STOP_ATTEMPTS) {
                        log_error("Too many attempts, aborting");
                        return -ETIMEDOUT;
                }
                int sig = attempt < STOP_TERM_ATTEMPTS ? SIGTERM : SIGKILL;
                log_info("Sending app %s signal %d", a->name, sig);
                if (kill(pid, sig) < 0 && errno != ESRCH)
                        log_warning_errno(errno, "Failed to send signal %d to %d: %m", sig, (int) pid);
                sleep(1);
        }
}

int master_stop(const MasterConfig *c) {
        int ret = 0;
        for (size_t i = 0; i < c->n_apps; i++) {
                int r = stop_app(c, &c->apps[i]);
                if (r < 0)
                        ret = r;
        }
        return ret;
}
