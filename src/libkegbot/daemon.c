/* Process conventions: see daemon.h and programs-and-flags.md sections 3.2-3.4. */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <systemd/sd-daemon.h>

#include "daemon.h"
#include "log.h"
#include "util-string.h"

static char *pidfile_path;      /* absolute */
static pid_t pidfile_owner;     /* the process that wrote it */
static bool pidfile_atexit_registered;

static char *path_make_absolute(const char *path) {
        char *r;
        if (path[0] == '/')
                return strdup(path);
        _cleanup_(freep) char *cwd = getcwd(NULL, 0);
        if (!cwd || asprintf(&r, "%s/%s", cwd, path) < 0)
                return NULL;
        return r;
}

int daemon_pidfile_check(const char *path) {
        _cleanup_(fclosep) FILE *f = NULL;
        char line[64];

        if (isempty(path))
                return 0;
        f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT)
                        return 0;
                log_error("Could not read pid, abort.");
                return -EBADMSG;
        }
        if (!fgets(line, sizeof line, f)) {
                log_error("Could not read pid, abort.");
                return -EBADMSG;
        }
        /* Python's int(line.strip()): surrounding whitespace, an optional sign, digits. */
        char *p = line, *end;
        while (*p == ' ' || *p == '\t')
                p++;
        errno = 0;
        long pid = strtol(p, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
                end++;
        if (errno != 0 || end == p || *end != '\0' || (*p != '+' && *p != '-' && (*p < '0' || *p > '9'))) {
                log_error("Could not read pid, abort.");
                return -EBADMSG;
        }
        /* kill() with 0 or a negative number would address process groups: such a file is stale.
         * So is our own PID (a container restarted with the same numbers). */
        if (pid <= 0 || pid > INT_MAX || (pid_t) pid == getpid())
                return 0;
        if (kill((pid_t) pid, 0) == 0 || errno == EPERM) {
                log_error("Old pid %ld is still alive, aborting", pid);
                return -EEXIST;
        }
        return 0;
}

static void pidfile_atexit(void) {
        daemon_pidfile_remove();
}

int daemon_pidfile_write(const char *path) {
        _cleanup_(freep) char *abs = NULL, *tmp = NULL;
        _cleanup_(closep) int fd = -1;
        char buf[32];
        int r, n;

        assert_return(!isempty(path), -EINVAL);
        abs = path_make_absolute(path);
        if (!abs)
                return log_error_errno(ENOMEM, "Failed to write pidfile %s: %m", path);
        if (asprintf(&tmp, "%s.XXXXXX", abs) < 0) {
                tmp = NULL;
                return log_error_errno(ENOMEM, "Failed to write pidfile %s: %m", path);
        }
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                free(tmp);
                tmp = NULL;
                return log_error_errno(r, "Failed to write pidfile %s: %m", path);
        }
        n = snprintf(buf, sizeof buf, "%ld\n", (long) getpid());
        if (fchmod(fd, 0644) < 0 || write(fd, buf, (size_t) n) != n) {
                r = errno ? -errno : -EIO;
                (void) unlink(tmp);
                return log_error_errno(r, "Failed to write pidfile %s: %m", path);
        }
        if (rename(tmp, abs) < 0) {
                r = -errno;
                (void) unlink(tmp);
                return log_error_errno(r, "Failed to write pidfile %s: %m", path);
        }
        free(pidfile_path);
        pidfile_path = TAKE_PTR(abs);
        pidfile_owner = getpid();
        if (!pidfile_atexit_registered && atexit(pidfile_atexit) == 0)
                pidfile_atexit_registered = true;
        return 0;
}

void daemon_pidfile_remove(void) {
        if (!pidfile_path)
                return;
        /* A forked child inherits the variable but must not delete its parent's file. */
        if (pidfile_owner == getpid())
                (void) unlink(pidfile_path);
        free(pidfile_path);
        pidfile_path = NULL;
}

static void report(int fd, char status) {
        while (write(fd, &status, 1) < 0 && errno == EINTR)
                ;
}

int daemon_daemonize(const char *pidfile) {
        _cleanup_(freep) char *pid_abs = NULL;
        int pipefd[2];
        pid_t pid;

        if (!isempty(pidfile)) {
                pid_abs = path_make_absolute(pidfile);
                if (!pid_abs)
                        return log_error_errno(ENOMEM, "Failed to go to the background: %m");
        }

        log_info("Daemon mode requested, switching to background.");
        fflush(stdout);
        fflush(stderr);

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return log_error_errno(errno, "Failed to go to the background: %m");

        pid = fork();
        if (pid < 0) {
                int r = -errno;
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                return log_error_errno(r, "Failed to go to the background: %m");
        }
        if (pid > 0) {
                /* The original process: succeed only once the background process is running. */
                char status = 1;
                safe_close(pipefd[1]);
                for (;;) {
                        ssize_t k = read(pipefd[0], &status, 1);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0)
                                status = 1;
                        break;
                }
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                _exit(status == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
        }

        safe_close(pipefd[0]);
        if (setsid() < 0) {
                log_error_errno(errno, "setsid() failed: %m");
                report(pipefd[1], 1);
                _exit(EXIT_FAILURE);
        }
        pid = fork();
        if (pid < 0) {
                log_error_errno(errno, "Failed to go to the background: %m");
                report(pipefd[1], 1);
                _exit(EXIT_FAILURE);
        }
        if (pid > 0)
                _exit(EXIT_SUCCESS);    /* no longer a session leader: can never get a tty again */

        umask(022);
        if (chdir("/") < 0) {
                log_error_errno(errno, "chdir(\"/\") failed: %m");
                report(pipefd[1], 1);
                _exit(EXIT_FAILURE);
        }
        if (pid_abs && daemon_pidfile_write(pid_abs) < 0) {
                report(pipefd[1], 1);
                _exit(EXIT_FAILURE);
        }

        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 ||
            dup2(null, STDERR_FILENO) < 0) {
                log_error_errno(errno, "Failed to redirect stdio to /dev/null: %m");
                daemon_pidfile_remove();
                report(pipefd[1], 1);
                _exit(EXIT_FAILURE);
        }
        if (null > STDERR_FILENO)
                safe_close(null);
        log_set_console(false);
        log_info("Running in background.");
        report(pipefd[1], 0);
        safe_close(pipefd[1]);
        return 0;
}

static int notify_with_status(const char *head, const char *format, va_list ap) _printf_(2, 0);
static int notify_with_status(const char *head, const char *format, va_list ap) {
        _cleanup_(freep) char *status = NULL, *msg = NULL;

        if (format && !(status = strdup_vprintf(format, ap)))
                return -ENOMEM;
        if (asprintf(&msg, "%s%s%s", head, status ? "STATUS=" : "", status ?: "") < 0) {
                msg = NULL;
                return -ENOMEM;
        }
        return sd_notify(false, msg);
}

int daemon_notify_ready(const char *status_format, ...) {
        va_list ap;
        int r;
        va_start(ap, status_format);
        r = notify_with_status(status_format ? "READY=1\n" : "READY=1", status_format, ap);
        va_end(ap);
        return r;
}

int daemon_notify_status(const char *format, ...) {
        va_list ap;
        int r;
        assert_return(format, -EINVAL);
        va_start(ap, format);
        r = notify_with_status("", format, ap);
        va_end(ap);
        return r;
}

int daemon_notify_stopping(void) {
        return sd_notify(false, "STOPPING=1");
}

typedef struct ReloadHook {
        DaemonReloadHandler handler;
        DaemonStopHandler stop;
        void *userdata;
} ReloadHook;

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        ReloadHook *h = userdata;

        if (h && h->stop) {
                log_info("Received SIG%s, stopping.", sigabbrev_np((int) si->ssi_signo) ?: "?");
                h->stop(h->userdata);
                return 0;
        }
        log_debug("Received %s, exiting.", strsignal((int) si->ssi_signo));
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int on_hup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        ReloadHook *h = userdata;
        int r = log_reopen();
        if (r < 0)
                log_warning_errno(r, "Failed to reopen the log file: %m");
        else
                log_debug("Received SIGHUP, log file reopened.");
        if (h && h->handler)
                h->handler(h->userdata);
        return 0;
}

int daemon_block_signals(const int *signals, size_t n) {
        sigset_t mask;

        assert_return(signals || n == 0, -EINVAL);

        sigemptyset(&mask);
        for (size_t i = 0; i < n; i++)
                if (sigaddset(&mask, signals[i]) < 0)
                        return -errno;
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        return 0;
}

int daemon_watch_signals(sd_event *e, const int *signals, size_t n, sd_event_signal_handler_t handler,
                         void *userdata, sd_event_source **ret_sources) {
        int r;

        assert_return(e, -EINVAL);
        assert_return(signals || n == 0, -EINVAL);
        assert_return(handler, -EINVAL);

        r = daemon_block_signals(signals, n);
        if (r < 0)
                return log_error_errno(r, "Failed to block signals: %m");
        for (size_t i = 0; i < n; i++) {
                r = sd_event_add_signal(e, ret_sources ? &ret_sources[i] : NULL, signals[i], handler, userdata);
                if (r < 0)
                        return log_error_errno(r, "Failed to watch signal %s: %m", sigabbrev_np(signals[i]) ?: "?");
        }
        return 0;
}

/* The hook lives as long as the source that owns it (floating: as long as the loop). */
static int watch_with_hook(sd_event *e, const int *signals, size_t n, sd_event_signal_handler_t handler,
                           const ReloadHook *hook, const char *description) {
        sd_event_source *sources[3] = {};
        int r;

        assert_return(n <= ELEMENTSOF(sources), -EINVAL);
        r = daemon_watch_signals(e, signals, n, handler, NULL, sources);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                ReloadHook *h = malloc(sizeof(*h));
                if (!h) {
                        r = -ENOMEM;
                        break;
                }
                *h = *hook;
                (void) sd_event_source_set_userdata(sources[i], h);
                (void) sd_event_source_set_destroy_callback(sources[i], free);
                (void) sd_event_source_set_description(sources[i], description);
                r = sd_event_source_set_floating(sources[i], true);
        }
        for (size_t i = 0; i < n; i++)
                sd_event_source_unref(sources[i]);
        if (r < 0)
                return log_error_errno(r, "Failed to add a signal handler: %m");
        return 0;
}

int daemon_setup_event_with_stop(sd_event *e, DaemonStopHandler on_stop, DaemonReloadHandler on_reload,
                                 void *userdata) {
        static const int exit_signals[] = { SIGTERM, SIGINT, SIGQUIT };
        static const int hup[] = { SIGHUP };
        const ReloadHook hook = { .handler = on_reload, .stop = on_stop, .userdata = userdata };
        int r;

        assert_return(e, -EINVAL);

        r = watch_with_hook(e, exit_signals, ELEMENTSOF(exit_signals), on_exit_signal, &hook, "stop-signal");
        if (r < 0)
                return r;
        r = watch_with_hook(e, hup, ELEMENTSOF(hup), on_hup, &hook, "sighup");
        if (r < 0)
                return r;

        r = sd_event_set_watchdog(e, true);
        if (r < 0)
                return log_error_errno(r, "Failed to enable the watchdog: %m");
        return 0;
}

int daemon_setup_event(sd_event *e, DaemonReloadHandler on_reload, void *userdata) {
        return daemon_setup_event_with_stop(e, NULL, on_reload, userdata);
}

int daemon_producer_new(const char *core_addr, const KegnetClientCallbacks *callbacks, DaemonStopHandler on_stop,
                        void *userdata, sd_event **ret_event, KegnetClient **ret_kegnet) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(kegnet_client_freep) KegnetClient *c = NULL;
        int r;

        assert_return(on_stop, -EINVAL);
        assert_return(ret_event, -EINVAL);
        assert_return(ret_kegnet, -EINVAL);

        r = sd_event_default(&e);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");
        r = daemon_setup_event_with_stop(e, on_stop, NULL, userdata);
        if (r < 0)
                return r;
        r = kegnet_client_new(&c, e, core_addr, callbacks, userdata);
        if (r < 0)
                return r;
        kegnet_client_set_producer(c, true);

        *ret_kegnet = TAKE_PTR(c);
        *ret_event = TAKE_PTR(e);
        return 0;
}

void daemon_reset_signals_for_child(void) {
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigset_t none;

        for (int sig = 1; sig < _NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void) sigaction(sig, &sa, NULL);
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
}
