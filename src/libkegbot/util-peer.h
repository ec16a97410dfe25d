/* Who is at the other end of a local connection: the owner (uid) of a Unix socket peer from
 * SO_PEERCRED, and of a loopback TCP peer from the kernel's socket diagnostics (NETLINK_SOCK_DIAG,
 * inet_diag): the peer's socket lives on this host, so the kernel knows who created it. One
 * request per question, answered within the call; nothing is polled. */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "macro.h"

/* 127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104. */
bool sockaddr_is_loopback(const struct sockaddr *sa);

/* The uid that owns the socket at the other end of the connected stream socket 'fd'.
 *   AF_UNIX: SO_PEERCRED.
 *   AF_INET/AF_INET6 with a loopback peer: inet_diag lookup of the peer's socket by its address.
 * -EADDRNOTAVAIL: a TCP peer that is not on the loopback (its owner cannot be known);
 * -ENOENT: the peer's socket is gone (closed; a socket in TIME_WAIT has no owner any more);
 * -EAFNOSUPPORT: another kind of socket; other negative errnos from the kernel. */
int socket_peer_uid(int fd, uid_t *ret_uid);
