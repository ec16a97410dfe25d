/* Unit tests for daemon.c: pidfile check/write/removal (alive, dead, garbage), --daemon in a forked
 * child (setsid, umask, cwd, stdio, pidfile, log lines), signal set-up on sd_event, sd_notify. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "daemon.h"
#include "log.h"
#include "util-event.h"
#include "test-util.h"

static char tmpdir[] = "/tmp/test-daemon-XXXXXX";

static void log_plain(void) {
        char *e = NULL;
        check(log_setup(&(LogConfig) { .program = "t", .to_console = true, .format = "%(message)s" }, &e) == 0);
        free(e);
}

static pid_t dead_pid(void) {
        pid_t p = fork();
        if (p == 0)
                _exit(0);
        waitpid(p, NULL, 0);
        return p;
}

/* Polls for a file to appear or go (the daemonized process has no other channel to us). */
static bool wait_for(bool (*cond)(const char *), const char *arg) {
        for (int i = 0; i < 500; i++) {
                if (cond(arg))
                        return true;
                usleep(10000);
        }
        return false;
}

static bool exists(const char *p) {
        return access(p, F_OK) == 0;
}

static bool missing(const char *p) {
        return access(p, F_OK) < 0;
}

static void test_pidfile_check(void) {
        _cleanup_(freep) char *p = test_path(tmpdir, "check.pid");
        char buf[64], expect[128];
        char *out;

        log_plain();
        check(daemon_pidfile_check(p) == 0);            /* absent */
        check(daemon_pidfile_check("") == 0);
        check(daemon_pidfile_check(NULL) == 0);

        /* Alive: our parent. */
        snprintf(buf, sizeof buf, "%d\n", (int) getppid());
        write_file(p, buf);
        capture_begin_in(tmpdir);
        check(daemon_pidfile_check(p) == -EEXIST);
        out = capture_end();
        snprintf(expect, sizeof expect, "Old pid %d is still alive, aborting\n", (int) getppid());
        check_streq(out, expect);
        free(out);

        /* Alive with surrounding whitespace and more lines. */
        snprintf(buf, sizeof buf, "  %d  \nsecond line\n", (int) getppid());
        write_file(p, buf);
        capture_begin_in(tmpdir);
        check(daemon_pidfile_check(p) == -EEXIST);
        free(capture_end());

        /* Dead. */
        snprintf(buf, sizeof buf, "%d\n", (int) dead_pid());
        write_file(p, buf);
        capture_begin_in(tmpdir);
        check(daemon_pidfile_check(p) == 0);
        out = capture_end();
        check_streq(out, "");
        free(out);

        /* Our own PID, 0, negative: stale, never "alive" (kill() would address groups). */
        snprintf(buf, sizeof buf, "%d\n", (int) getpid());
        write_file(p, buf);
        check(daemon_pidfile_check(p) == 0);
        write_file(p, "0\n");
        check(daemon_pidfile_check(p) == 0);
        write_file(p, "-1\n");
        check(daemon_pidfile_check(p) == 0);

        /* Garbage. */
        static const char *const garbage[] = { "", "\n", "abc\n", "12abc\n", "1 2\n", "99999999999999999999\n",
                                               "-\n", "0x10\n" };
        for (size_t i = 0; i < ELEMENTSOF(garbage); i++) {
                write_file(p, garbage[i]);
                capture_begin_in(tmpdir);
                check(daemon_pidfile_check(p) == -EBADMSG);
                out = capture_end();
                check_streq(out, "Could not read pid, abort.\n");
                free(out);
        }
        /* A directory cannot be read as a pidfile. */
        capture_begin_in(tmpdir);
        check(daemon_pidfile_check(tmpdir) == -EBADMSG);
        out = capture_end();
        check_streq(out, "Could not read pid, abort.\n");
        free(out);
        unlink(p);
}

static void test_pidfile_write(void) {
        _cleanup_(freep) char *p = test_path(tmpdir, "write.pid");
        char expect[32];
        struct stat st;

        umask(022);
        check(daemon_pidfile_write(p) == 0);
        _cleanup_(freep) char *c = read_all(p);
        snprintf(expect, sizeof expect, "%d\n", (int) getpid());
        check_streq(c, expect);
        check(stat(p, &st) == 0 && (st.st_mode & 0777) == 0644);

        /* A child does not remove its parent's pidfile, neither explicitly nor at exit. */
        pid_t k = fork();
        if (k == 0) {
                daemon_pidfile_remove();
                exit(0);
        }
        waitpid(k, NULL, 0);
        check(exists(p));
        daemon_pidfile_remove();
        check(missing(p));
        daemon_pidfile_remove();        /* twice is harmless */

        /* The atexit net removes it in the writer. */
        k = fork();
        if (k == 0) {
                if (daemon_pidfile_write(p) < 0)
                        _exit(2);
                exit(0);
        }
        int status;
        waitpid(k, &status, 0);
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        check(missing(p));

        /* Relative path, then a chdir: still removed. */
        char cwd[PATH_MAX];
        check(getcwd(cwd, sizeof cwd));
        check(chdir(tmpdir) == 0);
        check(daemon_pidfile_write("rel.pid") == 0);
        check(chdir("/") == 0);
        _cleanup_(freep) char *rel = test_path(tmpdir, "rel.pid");
        check(exists(rel));
        daemon_pidfile_remove();
        check(missing(rel));
        check(chdir(cwd) == 0);

        /* Failure. */
        log_plain();
        capture_begin_in(tmpdir);
        _cleanup_(freep) char *bad = test_path(tmpdir, "nodir/x.pid");
        check(daemon_pidfile_write(bad) < 0);
        _cleanup_(freep) char *out = capture_end();
        check(out && strstr(out, "Failed to write pidfile") && strstr(out, "No such file or directory"));
}

static bool is_dev_null(int fd) {
        struct stat a, b;
        if (fstat(fd, &a) < 0 || stat("/dev/null", &b) < 0)
                return false;
        return S_ISCHR(a.st_mode) && a.st_rdev == b.st_rdev;
}

static void test_daemonize(void) {
        _cleanup_(freep) char *pidfile = test_path(tmpdir, "d.pid"), *report = test_path(tmpdir, "report"),
                         *report_tmp = test_path(tmpdir, "report.tmp"), *hold = test_path(tmpdir, "hold"),
                         *logfile = test_path(tmpdir, "d.log"), *console = test_path(tmpdir, "console");
        char cwd[PATH_MAX];
        check(getcwd(cwd, sizeof cwd));

        write_file(hold, "");
        pid_t harness = fork();
        if (harness == 0) {
                /* Becomes the "original process": relative paths from its working directory. */
                int fd = open(console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                dup2(fd, STDERR_FILENO);
                close(fd);
                if (chdir(tmpdir) < 0)
                        _exit(3);
                umask(077);
                char *e = NULL;
                if (log_setup(&(LogConfig) { .program = "t", .to_console = true, .to_file = true,
                                             .logfile = "d.log", .format = "%(message)s" }, &e) < 0)
                        _exit(4);
                pid_t me = getpid();
                if (daemon_daemonize("d.pid") < 0)
                        _exit(5);
                /* Background process from here on. */
                char cur[PATH_MAX] = "";
                mode_t old = umask(0);
                /* Written aside and renamed: once the report exists, it is complete. */
                FILE *f = fopen(report_tmp, "we");
                if (!f)
                        _exit(6);
                fprintf(f, "sid_leader=%d pgrp_leader=%d umask=%03o cwd=%s null=%d%d%d other=%d\n",
                        getsid(0) == getpid(), getpgrp() == getpid(), (unsigned) old,
                        getcwd(cur, sizeof cur) ? cur : "?",
                        is_dev_null(0), is_dev_null(1), is_dev_null(2), getpid() != me);
                if (fclose(f) != 0 || rename(report_tmp, report) < 0)
                        _exit(6);
                fprintf(stderr, "this goes to /dev/null\n");
                log_info("still logging to the file");
                /* Stays in the background until the test removes 'hold' (its descriptors are
                 * /dev/null now, so a file is the channel). */
                for (int i = 0; i < 1000 && access(hold, F_OK) == 0; i++)
                        usleep(10000);
                exit(0);
        }
        int status;
        waitpid(harness, &status, 0);
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        /* The original process only returned once the pidfile was written. */
        _cleanup_(freep) char *pidtext = read_all(pidfile);
        check(pidtext);
        int dpid = pidtext ? atoi(pidtext) : 0;
        check(dpid > 0 && dpid != harness);
        if (dpid > 0) {
                char buf[32];
                snprintf(buf, sizeof buf, "%d\n", dpid);
                check_streq(pidtext, buf);
                check(kill(dpid, 0) == 0);
        }
        struct stat st;
        check(stat(pidfile, &st) == 0 && (st.st_mode & 0777) == 0644);

        check(wait_for(exists, report));
        _cleanup_(freep) char *rep = read_all(report);
        check_streq(rep, "sid_leader=0 pgrp_leader=0 umask=022 cwd=/ null=111 other=1\n");

        unlink(hold);
        check(wait_for(missing, pidfile));      /* removed at exit */
        _cleanup_(freep) char *con = read_all(console);
        check_streq(con, "Daemon mode requested, switching to background.\n");
        _cleanup_(freep) char *log = read_all(logfile);
        check_streq(log, "Daemon mode requested, switching to background.\nRunning in background.\n"
                         "still logging to the file\n");
        check(chdir(cwd) == 0);
}

static void test_daemonize_failure(void) {
        _cleanup_(freep) char *console = test_path(tmpdir, "console2");
        pid_t harness = fork();
        if (harness == 0) {
                int fd = open(console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                dup2(fd, STDERR_FILENO);
                close(fd);
                char *e = NULL;
                if (log_setup(&(LogConfig) { .program = "t", .to_console = true, .format = "%(message)s" }, &e) < 0)
                        _exit(4);
                _cleanup_(freep) char *bad = test_path(tmpdir, "nodir/x.pid");
                (void) daemon_daemonize(bad);
                _exit(7);       /* the background process never gets here: it failed */
        }
        int status;
        waitpid(harness, &status, 0);
        check(WIFEXITED(status) && WEXITSTATUS(status) == 1);
        _cleanup_(freep) char *con = read_all(console);
        check(con && strncmp(con, "Daemon mode requested, switching to background.\nFailed to write pidfile", 70) == 0);
}

#define INT_TO_PTR(i) ((void *) (intptr_t) (i))
#define PTR_TO_INT(p) ((int) (intptr_t) (p))

static int reloads;

static void on_reload(void *userdata) {
        reloads += *(int *) userdata;
}

static int on_timer_raise(sd_event_source *s, uint64_t usec, void *userdata) {
        raise(PTR_TO_INT(userdata));
        return 0;
}

/* The orderly stop of a daemon with work to do first: the stop handler, called for each stop
 * signal, ends the loop itself (here on the second signal, with 7). */
static unsigned stops;
static sd_event *stop_event;

static void on_stop(void *userdata) {
        stops++;
        if (stops == 2)
                (void) sd_event_exit(stop_event, 7);
        else
                raise(SIGINT);
}

static void test_stop_signals(void) {
        pid_t k = fork();

        if (k == 0) {
                int r;

                if (sd_event_new(&stop_event) < 0 || daemon_setup_event_with_stop(stop_event, on_stop, NULL, NULL) < 0)
                        _exit(11);
                sd_event_source *t = NULL;
                if (event_timer_arm_relative(stop_event, &t, 1000, 1, on_timer_raise, INT_TO_PTR(SIGTERM)) < 0)
                        _exit(12);
                r = sd_event_loop(stop_event);
                sd_event_source_unref(t);
                sd_event_unref(stop_event);
                _exit(r == 7 && stops == 2 ? 0 : 13);
        }
        int status;
        waitpid(k, &status, 0);
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_signals(void) {
        _cleanup_(freep) char *logfile = test_path(tmpdir, "sig.log"), *moved = test_path(tmpdir, "sig.log.1");
        pid_t k = fork();
        if (k == 0) {
                /* In a child: the signal mask and handlers must not leak into the other tests. */
                sd_event *e = NULL;
                int inc = 5;
                char *err = NULL;
                if (log_setup(&(LogConfig) { .program = "t", .to_file = true, .logfile = logfile,
                                             .format = "%(message)s" }, &err) < 0)
                        _exit(10);
                if (sd_event_new(&e) < 0 || daemon_setup_event(e, on_reload, &inc) < 0)
                        _exit(11);
                log_info("before");
                if (rename(logfile, moved) < 0)
                        _exit(12);
                raise(SIGHUP);
                for (int i = 0; i < 10 && reloads == 0; i++)
                        if (sd_event_run(e, 100 * USEC_PER_MSEC) < 0)
                                _exit(13);
                if (reloads != 5)
                        _exit(14);
                log_info("after");
                /* SIGTERM from inside the loop: sd_event_loop() returns the exit code 0. */
                sd_event_source *t = NULL;
                if (event_timer_arm_relative(e, &t, 1000, 1, on_timer_raise, INT_TO_PTR(SIGTERM)) < 0)
                        _exit(15);
                int r = sd_event_loop(e);
                sd_event_unref(e);
                _exit(r == 0 ? 0 : 16);
        }
        int status;
        waitpid(k, &status, 0);
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        _cleanup_(freep) char *a = read_all(moved), *b = read_all(logfile);
        check_streq(a, "before\n");
        check_streq(b, "after\n");

        /* A child started after the set-up gets a clean signal state back. */
        k = fork();
        if (k == 0) {
                sd_event *e = NULL;
                sigset_t cur;
                if (sd_event_new(&e) < 0 || daemon_setup_event(e, NULL, NULL) < 0)
                        _exit(11);
                pid_t c = fork();
                if (c == 0) {
                        daemon_reset_signals_for_child();
                        sigprocmask(SIG_SETMASK, NULL, &cur);
                        if (sigismember(&cur, SIGTERM) || sigismember(&cur, SIGHUP))
                                _exit(3);
                        raise(SIGTERM);
                        _exit(4);
                }
                int st2;
                waitpid(c, &st2, 0);
                _exit(WIFSIGNALED(st2) && WTERMSIG(st2) == SIGTERM ? 0 : 5);
        }
        waitpid(k, &status, 0);
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        /* SIGINT and SIGQUIT stop the loop too. */
        static const int sigs[] = { SIGINT, SIGQUIT };
        for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
                k = fork();
                if (k == 0) {
                        sd_event *e = NULL;
                        sd_event_source *t = NULL;
                        if (sd_event_new(&e) < 0 || daemon_setup_event(e, NULL, NULL) < 0)
                                _exit(11);
                        if (event_timer_arm_relative(e, &t, 1000, 1, on_timer_raise, INT_TO_PTR(sigs[i])) < 0)
                                _exit(15);
                        _exit(sd_event_loop(e) == 0 ? 0 : 16);
                }
                waitpid(k, &status, 0);
                check(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
}

static int notify_socket(char *ret_path, size_t size) {
        snprintf(ret_path, size, "%s/notify", tmpdir);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(ret_path) >= sizeof sa.sun_path)
                abort();
        memcpy(sa.sun_path, ret_path, strlen(ret_path) + 1);
        unlink(ret_path);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                abort();
        return fd;
}

static char *recv_msg(int fd, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, timeout_ms) <= 0)
                return NULL;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n < 0)
                return NULL;
        buf[n] = '\0';
        return strdup(buf);
}

static int on_timer_exit(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static void test_notify(void) {
        char path[PATH_MAX];
        int fd = notify_socket(path, sizeof path);
        char *m;

        unsetenv("NOTIFY_SOCKET");
        check(daemon_notify_ready(NULL) == 0);          /* no systemd: nothing, no error */

        setenv("NOTIFY_SOCKET", path, 1);
        check(daemon_notify_ready(NULL) > 0);
        m = recv_msg(fd, 1000);
        check_streq(m, "READY=1");
        free(m);
        check(daemon_notify_ready("Ready: %s mode, %d taps", "server", 2) > 0);
        m = recv_msg(fd, 1000);
        check_streq(m, "READY=1\nSTATUS=Ready: server mode, 2 taps");
        free(m);
        check(daemon_notify_status("Syncing %d", 3) > 0);
        m = recv_msg(fd, 1000);
        check_streq(m, "STATUS=Syncing 3");
        free(m);
        check(daemon_notify_stopping() > 0);
        m = recv_msg(fd, 1000);
        check_streq(m, "STOPPING=1");
        free(m);

        /* sd_event's watchdog: WATCHDOG=1 sent while the loop runs. */
        pid_t k = fork();
        if (k == 0) {
                char pid[32];
                snprintf(pid, sizeof pid, "%d", (int) getpid());
                setenv("WATCHDOG_PID", pid, 1);
                setenv("WATCHDOG_USEC", "100000", 1);
                sd_event *e = NULL;
                sd_event_source *t = NULL;
                if (sd_event_new(&e) < 0 || daemon_setup_event(e, NULL, NULL) < 0)
                        _exit(11);
                if (event_timer_arm_relative(e, &t, 300 * USEC_PER_MSEC, USEC_PER_MSEC, on_timer_exit, NULL) < 0)
                        _exit(12);
                _exit(sd_event_loop(e) == 0 ? 0 : 13);
        }
        int status;
        waitpid(k, &status, 0);
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        m = recv_msg(fd, 1000);
        check(m && strstr(m, "WATCHDOG=1"));
        free(m);

        unsetenv("NOTIFY_SOCKET");
        close(fd);
        unlink(path);
}

int main(void) {
        if (!mkdtemp(tmpdir)) {
                perror("mkdtemp");
                return 1;
        }
        unsetenv("JOURNAL_STREAM");

        test_run(test_pidfile_check);
        test_run(test_pidfile_write);
        test_run(test_daemonize);
        test_run(test_daemonize_failure);
        test_run(test_signals);
        test_run(test_stop_signals);
        test_run(test_notify);

        test_rm_rf(tmpdir);
        return test_result();
}
