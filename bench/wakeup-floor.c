/* The wake-up floor of the board path, measured on this machine: the cheapest possible version of
 * "a frame arrives on the board's pty, kegboard_daemon wakes and forwards it over TCP, the core
 * wakes and reads it". Two child processes, each an epoll loop doing nothing but that: the relay
 * reads the pty and sends the bytes on a loopback TCP connection (TCP_NODELAY, as kegnet), the
 * sink reads them. The parent writes one 12-byte frame to the pty every 1/rate s (a timerfd) and
 * reports the CPU the two children used per frame (sum_exec_runtime from /proc/<pid>/schedstat, ns)
 * with the CPU of the same children idle for the same time subtracted: the cost of two bare
 * wake-ups that bench-kegboard compares kegboard_daemon + kegbot_core with.
 * Usage: wakeup-floor RATE SECONDS; prints "ns_per_frame <n> frames <n>" on stdout.
 *
 * wakeup-floor chain TTY PORT: the latency floor of the same path, for bench-core's latency figure
 * to stand beside: the relay reads TTY (a pty the caller writes frames to) and sends the bytes on
 * a loopback TCP connection to a second relay, which sends them on to 127.0.0.1:PORT (the caller's
 * listener) - pty -> daemon -> core -> listener with both programs doing nothing. Runs until the
 * caller closes the pty or the listener; prints "ready" once both relays are up. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"

static void die(const char *what) {
        perror(what);
        exit(1);
}

/* One epoll loop: read what 'in' has, write it to 'out' (-1: drop it). */
static void _noreturn_ pump(int in, int out) {
        struct epoll_event ev = { .events = EPOLLIN }, got;
        char buf[4096];
        int ep = epoll_create1(EPOLL_CLOEXEC);

        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, in, &ev) < 0)
                die("epoll");
        for (;;) {
                ssize_t n;

                if (epoll_wait(ep, &got, 1, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        die("epoll_wait");
                }
                n = read(in, buf, sizeof buf);
                if (n <= 0)
                        _exit(0);
                if (out >= 0 && send(out, buf, (size_t) n, MSG_NOSIGNAL) != n)
                        _exit(2);
        }
}

/* pump(in, out) in a child process. */
static pid_t spawn_pump(int in, int out) {
        pid_t pid = fork();

        if (pid < 0)
                die("fork");
        if (pid == 0)
                pump(in, out);
        return pid;
}

static uint64_t cpu_ns(pid_t pid) {
        char path[64];
        unsigned long long ns = 0;
        FILE *f;

        snprintf(path, sizeof path, "/proc/%d/schedstat", (int) pid);
        f = fopen(path, "re");
        if (!f || fscanf(f, "%llu", &ns) != 1)
                die("schedstat");
        fclose(f);
        return ns;
}

static void sleep_s(double s) {
        struct timespec ts = { .tv_sec = (time_t) s, .tv_nsec = (long) ((s - (double) (time_t) s) * 1e9) };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* A connected loopback TCP pair, TCP_NODELAY on both ends (as kegnet). */
static void tcp_pair(int *ret_client, int *ret_server) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof a;
        int lfd, cfd, sfd, one = 1;

        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &a, sizeof a) < 0 || listen(lfd, 1) < 0 ||
            getsockname(lfd, (struct sockaddr *) &a, &alen) < 0)
                die("listen");
        cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cfd < 0 || connect(cfd, (struct sockaddr *) &a, sizeof a) < 0)
                die("connect");
        sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (sfd < 0)
                die("accept");
        close(lfd);
        (void) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        (void) setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        *ret_client = cfd;
        *ret_server = sfd;
}

static int chain(const char *tty, const char *port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int in, out, cfd, sfd, one = 1;
        struct termios raw;
        pid_t relay, forward;

        in = open(tty, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (in < 0)
                die("open tty");
        if (tcgetattr(in, &raw) < 0)
                die("tcgetattr");
        cfmakeraw(&raw);
        if (tcsetattr(in, TCSANOW, &raw) < 0)
                die("tcsetattr");
        a.sin_port = htons((uint16_t) atoi(port));
        out = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (out < 0 || connect(out, (struct sockaddr *) &a, sizeof a) < 0)
                die("connect listener");
        (void) setsockopt(out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        tcp_pair(&cfd, &sfd);

        relay = spawn_pump(in, cfd);
        forward = spawn_pump(sfd, out);
        close(in);
        close(out);
        close(cfd);
        close(sfd);
        printf("ready\n");
        fflush(stdout);
        /* Either end going away ends both. */
        (void) wait(NULL);
        kill(relay, SIGTERM);
        kill(forward, SIGTERM);
        while (wait(NULL) > 0)
                ;
        return 0;
}

int main(int argc, char **argv) {
        double rate = argc > 1 ? atof(argv[1]) : 100.0, seconds = argc > 2 ? atof(argv[2]) : 5.0;
        static const char frame[] = "KBSP v1:\x01\x00\x0d\n";      /* 12 bytes, like a short KBSP frame */
        int master, slave, cfd, sfd, tfd;
        struct termios raw;
        pid_t relay, sink;
        uint64_t c0, c1, c2, frames = 0;

        if (argc == 4 && streq(argv[1], "chain"))
                return chain(argv[2], argv[3]);
        if (rate <= 0 || seconds <= 0)
                return fprintf(stderr, "usage: wakeup-floor RATE SECONDS | chain TTY PORT\n"), 2;
        if (openpty(&master, &slave, NULL, NULL, NULL) < 0)
                die("openpty");
        cfmakeraw(&raw);
        if (tcsetattr(slave, TCSANOW, &raw) < 0)
                die("tcsetattr");

        tcp_pair(&cfd, &sfd);

        relay = spawn_pump(slave, cfd);
        sink = spawn_pump(sfd, -1);

        /* Idle: what the two cost doing nothing, over the same time. */
        sleep_s(0.2);
        c0 = cpu_ns(relay) + cpu_ns(sink);
        sleep_s(seconds);
        c1 = cpu_ns(relay) + cpu_ns(sink);

        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        {
                long period = (long) (1e9 / rate);
                struct itimerspec its = {
                        .it_interval = { .tv_sec = period / 1000000000L, .tv_nsec = period % 1000000000L },
                        .it_value = { .tv_sec = period / 1000000000L, .tv_nsec = period % 1000000000L },
                };
                if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0)
                        die("timerfd");
        }
        for (uint64_t want = (uint64_t) (rate * seconds); frames < want;) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) != sizeof expirations)
                        die("timerfd read");
                if (write(master, frame, sizeof frame - 1) != (ssize_t) (sizeof frame - 1))
                        die("pty write");
                frames++;
        }
        sleep_s(0.1);           /* the last frame through */
        c2 = cpu_ns(relay) + cpu_ns(sink);

        kill(relay, SIGTERM);
        kill(sink, SIGTERM);
        waitpid(relay, NULL, 0);
        waitpid(sink, NULL, 0);
        {
                double busy = (double) (c2 - c1), idle = (double) (c1 - c0) * (seconds + 0.1) / seconds;
                printf("ns_per_frame %.0f frames %llu\n", (busy - idle) / (double) frames,
                       (unsigned long long) frames);
        }
        return 0;
}
