/* Unit tests of peer credentials (util-peer.h): the owner of a loopback TCP peer (IPv4, IPv6,
 * IPv4-mapped) and of a Unix socket peer, a peer of another user (as root: a child drops to
 * nobody), and a peer that is gone. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "test-util.h"
#include "util-peer.h"

#define NOBODY 65534

/* A listening socket on the loopback of 'family' (AF_INET, AF_INET6, or AF_INET6 dual-stack when
 * 'dual'), with its address in *ret. */
static int listen_loopback(int family, bool dual, struct sockaddr_storage *ret, socklen_t *ret_len) {
        int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        memset(ret, 0, sizeof *ret);
        if (family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *) ret;
                in->sin_family = AF_INET;
                in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                *ret_len = sizeof *in;
        } else {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ret;
                in6->sin6_family = AF_INET6;
                in6->sin6_addr = dual ? in6addr_any : in6addr_loopback;
                *ret_len = sizeof *in6;
                int off = 0;
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        }
        if (bind(fd, (struct sockaddr *) ret, *ret_len) < 0 || listen(fd, 8) < 0 ||
            getsockname(fd, (struct sockaddr *) ret, ret_len) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* Connects a client of 'client_family' to the listener, accepts, and returns the accepted fd. */
static int connect_pair(int lfd, const struct sockaddr_storage *a, int client_family, int *ret_client) {
        struct sockaddr_storage target = *a;
        socklen_t tl = a->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

        if (client_family == AF_INET && a->ss_family == AF_INET6) {
                /* The dual-stack listener, reached over IPv4. */
                struct sockaddr_in *in = (struct sockaddr_in *) &target;
                uint16_t port = ((const struct sockaddr_in6 *) a)->sin6_port;
                memset(&target, 0, sizeof target);
                in->sin_family = AF_INET;
                in->sin_port = port;
                in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                tl = sizeof *in;
        }
        int c = socket(client_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *) &target, tl) < 0)
                return -errno;
        *ret_client = c;
        return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void test_tcp_own(void) {
        static const struct { int family; bool dual; int client; } cases[] = {
                { AF_INET, false, AF_INET },
                { AF_INET6, false, AF_INET6 },
                { AF_INET6, true, AF_INET },    /* the accepted socket sees ::ffff:127.0.0.1 */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct sockaddr_storage a;
                socklen_t l;
                int lfd = listen_loopback(cases[i].family, cases[i].dual, &a, &l);
                if (lfd < 0) {
                        fprintf(stderr, "no loopback for family %d: %s\n", cases[i].family, strerror(-lfd));
                        continue;
                }
                int client = -1;
                int s = connect_pair(lfd, &a, cases[i].client, &client);
                check(s >= 0);
                uid_t uid = 12345;
                check(socket_peer_uid(s, &uid) == 0);
                check(uid == geteuid());
                /* Gone: the peer's socket no longer exists as an owned socket. */
                close(client);
                uid = 12345;
                int r = socket_peer_uid(s, &uid);
                check(r == -ENOENT || (r == 0 && uid == geteuid()));  /* FIN_WAIT: orphaned, still owned */
                close(s);
                close(lfd);
        }
}

static void test_unix(void) {
        int sv[2];
        uid_t uid = 12345;

        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        check(socket_peer_uid(sv[0], &uid) == 0);
        check(uid == geteuid());
        close(sv[0]);
        close(sv[1]);

        /* Not a socket at all. */
        check(socket_peer_uid(STDIN_FILENO, &uid) < 0);
        check(socket_peer_uid(-1, &uid) == -EBADF);
}

/* A peer owned by another user: its uid, not ours. */
static void test_tcp_other_user(void) {
        struct sockaddr_storage a;
        socklen_t l;
        int lfd, p[2];

        if (geteuid() != 0)
                return test_skip("needs root to connect as another user");
        lfd = listen_loopback(AF_INET, false, &a, &l);
        check(lfd >= 0);
        check(pipe2(p, O_CLOEXEC) == 0);
        pid_t pid = fork();
        check(pid >= 0);
        if (pid == 0) {
                char c;
                int fd;
                if (setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0)
                        _exit(2);
                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *) &a, l) < 0)
                        _exit(3);
                /* Stay connected until the parent has asked. */
                close(p[1]);
                if (read(p[0], &c, 1) < 0)
                        _exit(1);
                _exit(0);
        }
        close(p[0]);
        int s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        check(s >= 0);
        uid_t uid = 0;
        check(socket_peer_uid(s, &uid) == 0);
        check(uid == NOBODY);
        close(p[1]);
        int status = 0;
        check(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(s);
        close(lfd);
}

static void test_loopback(void) {
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000105) };
        struct sockaddr_in other = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0xc0a80001) };
        struct sockaddr_in6 six = { .sin6_family = AF_INET6, .sin6_addr = in6addr_loopback };
        struct sockaddr_in6 mapped = { .sin6_family = AF_INET6 };

        check(sockaddr_is_loopback((struct sockaddr *) &in));
        check(!sockaddr_is_loopback((struct sockaddr *) &other));
        check(sockaddr_is_loopback((struct sockaddr *) &six));
        check(inet_pton(AF_INET6, "::ffff:127.0.0.1", &mapped.sin6_addr) == 1);
        check(sockaddr_is_loopback((struct sockaddr *) &mapped));
        check(inet_pton(AF_INET6, "::ffff:10.0.0.1", &mapped.sin6_addr) == 1);
        check(!sockaddr_is_loopback((struct sockaddr *) &mapped));
        check(!sockaddr_is_loopback(NULL));
}

int main(void) {
        test_run(test_loopback);
        test_run(test_tcp_own);
        test_run(test_unix);
        test_run(test_tcp_other_user);
        return test_result();
}
