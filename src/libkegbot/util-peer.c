/* Peer credentials: see util-peer.h. */
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>

#include "util-peer.h"

bool sockaddr_is_loopback(const struct sockaddr *sa) {
        if (!sa)
                return false;
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        }
        if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
                        return in6->sin6_addr.s6_addr[12] == 127;
                return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
        }
        return false;
}

typedef union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage storage;
} SockAddr;

/* Fill a diag socket id for an address: IPv4 (also IPv4-mapped IPv6, which the kernel looks up in
 * the same table) or IPv6. Returns the family to ask for. */
static int diag_addr(const SockAddr *a, __be16 *ret_port, __be32 ret_addr[4]) {
        memset(ret_addr, 0, 4 * sizeof(__be32));
        if (a->sa.sa_family == AF_INET) {
                *ret_port = a->in.sin_port;
                ret_addr[0] = a->in.sin_addr.s_addr;
                return AF_INET;
        }
        *ret_port = a->in6.sin6_port;
        if (IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr)) {
                memcpy(&ret_addr[0], &a->in6.sin6_addr.s6_addr[12], 4);
                return AF_INET;
        }
        memcpy(ret_addr, &a->in6.sin6_addr, 16);
        return AF_INET6;
}

static int tcp_peer_uid(const SockAddr *local, const SockAddr *remote, uid_t *ret_uid) {
        struct {
                struct nlmsghdr nlh;
                struct inet_diag_req_v2 req;
        } msg = {
                .nlh = {
                        .nlmsg_len = sizeof msg,
                        .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                        .nlmsg_flags = NLM_F_REQUEST,
                        .nlmsg_seq = 1,
                },
                .req = {
                        .sdiag_protocol = IPPROTO_TCP,
                        .idiag_states = ~0U,
                        .id.idiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE },
                },
        };
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        union {
                struct nlmsghdr nlh;
                char buf[8192];
        } reply;
        _cleanup_(closep) int nl = -EBADF;
        ssize_t n;
        int family_peer, family_local;

        /* The peer's socket: its local end is our remote end. */
        family_peer = diag_addr(remote, &msg.req.id.idiag_sport, msg.req.id.idiag_src);
        family_local = diag_addr(local, &msg.req.id.idiag_dport, msg.req.id.idiag_dst);
        if (family_peer != family_local)
                return -EAFNOSUPPORT;
        msg.req.sdiag_family = (__u8) family_peer;

        nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (nl < 0)
                return -errno;
        if (sendto(nl, &msg, sizeof msg, 0, (struct sockaddr *) &kernel, sizeof kernel) < 0)
                return -errno;
        /* The kernel answers an exact lookup while handling the request: the reply is queued by
         * the time sendto() returns. */
        n = recv(nl, &reply, sizeof reply, MSG_DONTWAIT);
        if (n < 0)
                return -errno;

        for (struct nlmsghdr *h = &reply.nlh; NLMSG_OK(h, (size_t) n); h = NLMSG_NEXT(h, n)) {
                if (h->nlmsg_type == NLMSG_ERROR) {
                        const struct nlmsgerr *e = NLMSG_DATA(h);
                        if (h->nlmsg_len < NLMSG_LENGTH(sizeof *e))
                                return -EBADMSG;
                        return e->error < 0 ? e->error : -ENOENT;
                }
                if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY)
                        continue;
                const struct inet_diag_msg *d = NLMSG_DATA(h);
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof *d))
                        return -EBADMSG;
                /* A socket in TIME_WAIT (or a pending request) reports no owner: uid 0 there means
                 * nothing. 6 = TCP_TIME_WAIT, 12 = TCP_NEW_SYN_RECV. */
                if (d->idiag_state == TCP_TIME_WAIT || d->idiag_state == 12)
                        return -ENOENT;
                *ret_uid = (uid_t) d->idiag_uid;
                return 0;
        }
        return -ENOENT;
}

int socket_peer_uid(int fd, uid_t *ret_uid) {
        SockAddr local = {}, remote = {};
        socklen_t l = sizeof local, r = sizeof remote;

        assert_return(fd >= 0, -EBADF);
        assert_return(ret_uid, -EINVAL);

        if (getsockname(fd, &local.sa, &l) < 0)
                return -errno;
        if (local.sa.sa_family == AF_UNIX) {
                struct ucred cred;
                socklen_t cl = sizeof cred;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
                        return -errno;
                *ret_uid = cred.uid;
                return 0;
        }
        if (local.sa.sa_family != AF_INET && local.sa.sa_family != AF_INET6)
                return -EAFNOSUPPORT;
        if (getpeername(fd, &remote.sa, &r) < 0)
                return -errno;
        if (!sockaddr_is_loopback(&remote.sa))
                return -EADDRNOTAVAIL;
        return tcp_peer_uid(&local, &remote, ret_uid);
}
