/* kegnet server: see kegnet-server.h. Output is batched per loop iteration through one defer
 * source, so a burst of input costs one write() per peer instead of one per frame; a peer whose
 * socket is full gets EPOLLOUT until its buffer drains, and is dropped past max_unsent. Peers are
 * never freed while the loop may still be inside one of their callbacks: a disconnected peer moves
 * to a graveyard that a second defer source empties. */
#include <inttypes.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#define LOG_COMPONENT "kegnet"
#include "log.h"

#include "kegnet-server.h"
#include "util-escape.h"
#include "util-event.h"

#define READ_CHUNK (64U * 1024U)
#define ACCEPTS_PER_DISPATCH 32
#define MALFORMED_WARNING_INTERVAL_USEC (60 * USEC_PER_SEC)
#define ACCEPT_PAUSE_USEC (1 * USEC_PER_SEC)
#define ACCEPT_PAUSE_ACCURACY_USEC (50 * USEC_PER_MSEC)
#define ADDRESS_MAX (INET6_ADDRSTRLEN + 16)
#define OUT_KEEP_MAX (64U * 1024U)

struct KegnetPeer {
        KegnetServer *server;
        KegnetPeer *prev, *next;
        uint64_t id;
        int fd;
        sd_event_source *io;
        char address[ADDRESS_MAX];
        KegnetSplitter splitter;

        char *out;
        size_t out_start, out_end, out_allocated;
        bool out_armed;                 /* EPOLLOUT requested */

        bool dead;
        uint64_t last_malformed_warning;
        bool warned_malformed;
        unsigned malformed_suppressed;
};

struct KegnetServer {
        sd_event *event;
        KegnetServerOptions options;
        KegnetServerCallbacks callbacks;
        void *userdata;

        int listen_fd;
        sd_event_source *listen_source;
        sd_event_source *accept_pause_source;
        sd_event_source *flush_source;
        sd_event_source *reap_source;
        char address[ADDRESS_MAX];

        KegnetPeer *peers;
        size_t n_peers;
        KegnetPeer *graveyard;
        uint64_t next_peer_id;

        bool shutting_down;
        bool drained_reported;
};

void kegnet_server_options_init(KegnetServerOptions *o) {
        *o = (KegnetServerOptions) {
                .max_peers = KEGNET_SERVER_MAX_PEERS_DEFAULT,
                .max_unsent = KEGNET_SERVER_MAX_UNSENT_DEFAULT,
        };
}

static void format_sockaddr(const struct sockaddr *sa, char buf[static ADDRESS_MAX]) {
        char ip[INET6_ADDRSTRLEN] = "?";

        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
                snprintf(buf, ADDRESS_MAX, "%s:%u", ip, ntohs(in->sin_port));
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
                        inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, sizeof(ip));
                        snprintf(buf, ADDRESS_MAX, "%s:%u", ip, ntohs(in6->sin6_port));
                } else {
                        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
                        snprintf(buf, ADDRESS_MAX, "[%s]:%u", ip, ntohs(in6->sin6_port));
                }
        } else
                snprintf(buf, ADDRESS_MAX, "<family %d>", sa->sa_family);
}

static bool sockaddr_is_loopback(const struct sockaddr *sa) {
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

static bool peer_has_output(const KegnetPeer *p) {
        return p->out_end > p->out_start;
}

static void server_check_drained(KegnetServer *s) {
        if (!s->shutting_down || s->drained_reported)
                return;
        for (KegnetPeer *p = s->peers; p; p = p->next)
                if (peer_has_output(p))
                        return;
        s->drained_reported = true;
        if (s->callbacks.on_drained)
                s->callbacks.on_drained(s, s->userdata);
}

static void peer_unlink(KegnetPeer *p) {
        KegnetServer *s = p->server;

        if (p->prev)
                p->prev->next = p->next;
        else
                s->peers = p->next;
        if (p->next)
                p->next->prev = p->prev;
        p->prev = p->next = NULL;
        s->n_peers--;
}

static void peer_release(KegnetPeer *p) {
        p->io = sd_event_source_disable_unref(p->io);
        p->fd = safe_close(p->fd);
        kegnet_splitter_done(&p->splitter);
        free(p->out);
        p->out = NULL;
}

static void peer_close(KegnetPeer *p) {
        KegnetServer *s = p->server;

        if (p->dead)
                return;
        p->dead = true;
        log_info("Remote host closed: %s", p->address);
        peer_release(p);
        peer_unlink(p);
        p->next = s->graveyard;
        s->graveyard = p;
        (void) sd_event_source_set_enabled(s->reap_source, SD_EVENT_ONESHOT);
        /* The peer may have been the last one holding output back. */
        if (s->shutting_down)
                (void) sd_event_source_set_enabled(s->flush_source, SD_EVENT_ONESHOT);
}

void kegnet_peer_disconnect(KegnetPeer *p) {
        if (p)
                peer_close(p);
}

static int peer_update_io_events(KegnetPeer *p) {
        uint32_t events = 0;
        int r;

        if (!p->server->shutting_down)
                events |= EPOLLIN;
        if (p->out_armed)
                events |= EPOLLOUT;
        if (events == 0)
                return sd_event_source_set_enabled(p->io, SD_EVENT_OFF);
        r = sd_event_source_set_io_events(p->io, events);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(p->io, SD_EVENT_ON);
}

/* Writes as much as the socket takes. Returns 0, or a negative errno after which the peer is closed. */
static int peer_write(KegnetPeer *p) {
        while (peer_has_output(p)) {
                ssize_t n = send(p->fd, p->out + p->out_start, p->out_end - p->out_start,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        log_debug_errno(errno, "Write to %s failed: %m", p->address);
                        peer_close(p);
                        return -errno;
                }
                p->out_start += (size_t) n;
        }

        bool want_out = peer_has_output(p);
        if (!want_out) {
                p->out_start = p->out_end = 0;
                /* A burst may have grown the buffer to MiBs: give that back once it is written. */
                if (p->out_allocated > OUT_KEEP_MAX) {
                        free(p->out);
                        p->out = NULL;
                        p->out_allocated = 0;
                }
        }
        if (want_out != p->out_armed) {
                p->out_armed = want_out;
                if (peer_update_io_events(p) < 0) {
                        peer_close(p);
                        return -EIO;
                }
        }
        return 0;
}

static int peer_queue(KegnetPeer *p, const char *data, size_t size) {
        KegnetServer *s = p->server;

        if (p->out_end - p->out_start + size > s->options.max_unsent) {
                log_warning("Dropping slow client %s", p->address);
                peer_close(p);
                return 0;
        }

        if (p->out_start > 0 && p->out_end + size > p->out_allocated) {
                memmove(p->out, p->out + p->out_start, p->out_end - p->out_start);
                p->out_end -= p->out_start;
                p->out_start = 0;
        }
        if (p->out_end + size > p->out_allocated) {
                size_t a = MAX(p->out_allocated * 2, p->out_end + size);
                a = MAX(a, (size_t) 4096);
                char *t = realloc(p->out, a);
                if (!t) {
                        log_warning("Out of memory queueing output for %s; closing it", p->address);
                        peer_close(p);
                        return -ENOMEM;
                }
                p->out = t;
                p->out_allocated = a;
        }
        memcpy(p->out + p->out_end, data, size);
        p->out_end += size;
        return sd_event_source_set_enabled(s->flush_source, SD_EVENT_ONESHOT);
}

int kegnet_server_broadcast(KegnetServer *s, const KegnetMessage *m) {
        _cleanup_(freep) char *frame = NULL;
        size_t size;
        int r;

        r = kegnet_message_encode(m, &frame, &size);
        if (r < 0)
                return log_warning_errno(r, "Failed to encode %s: %m", kegnet_kind_to_string(m->kind) ?: "?");

        if (s->options.debug_events && log_get_max_level() >= LOG_DEBUG)
                log_debug("Sending to %zu clients: %.*s", s->n_peers, (int) (size - 2), frame);

        for (KegnetPeer *p = s->peers, *next; p; p = next) {
                next = p->next;
                (void) peer_queue(p, frame, size);
        }
        return 0;
}

static int on_flush(sd_event_source *source, void *userdata) {
        KegnetServer *s = userdata;

        for (KegnetPeer *p = s->peers, *next; p; p = next) {
                next = p->next;
                if (peer_has_output(p) && !p->out_armed)
                        (void) peer_write(p);
        }
        server_check_drained(s);
        return 0;
}

static int on_reap(sd_event_source *source, void *userdata) {
        KegnetServer *s = userdata;

        while (s->graveyard) {
                KegnetPeer *p = s->graveyard;
                s->graveyard = p->next;
                if (s->callbacks.on_close)
                        s->callbacks.on_close(s, p, s->userdata);
                free(p);
        }
        return 0;
}

static void peer_malformed(KegnetPeer *p, const char *why_raw) {
        /* The parser's reason may quote the frame: escaped, it cannot break the log line. */
        _cleanup_(freep) char *why = escape_for_log(why_raw);
        uint64_t now = 0;

        if (!why)
                return;

        (void) sd_event_now(p->server->event, CLOCK_MONOTONIC, &now);
        if (p->warned_malformed && now < p->last_malformed_warning + MALFORMED_WARNING_INTERVAL_USEC) {
                p->malformed_suppressed++;
                log_debug("Dropping bad frame from %s: %s", p->address, why);
                return;
        }
        if (p->malformed_suppressed > 0)
                log_warning("Dropping bad frame from %s: %s (%u more since the last warning)",
                            p->address, why, p->malformed_suppressed);
        else
                log_warning("Dropping bad frame from %s: %s", p->address, why);
        p->warned_malformed = true;
        p->last_malformed_warning = now;
        p->malformed_suppressed = 0;
}

static void peer_handle_frame(KegnetPeer *p, const char *frame, size_t size) {
        KegnetServer *s = p->server;
        KegnetMessage m = KEGNET_MESSAGE_NULL;
        _cleanup_(freep) char *error = NULL;
        int r;

        if (s->options.debug_events && log_get_max_level() >= LOG_DEBUG)
                log_debug("Received from %s: %.*s", p->address, (int) MIN(size, (size_t) 4096), frame);

        r = kegnet_message_parse(frame, size, &m, &error);
        switch (kegnet_inbound_verdict(r, &m)) {
        case KEGNET_INBOUND_ACCEPT:
                if (s->callbacks.on_message)
                        s->callbacks.on_message(s, p, &m, s->userdata);
                break;
        case KEGNET_INBOUND_IGNORE:
                break;
        case KEGNET_INBOUND_DROP_DEBUG:
                log_debug("Ignoring %s from %s: not accepted from clients",
                          m.event_name ?: "?", p->address);
                break;
        case KEGNET_INBOUND_DROP_WARNING:
        default:
                peer_malformed(p, error ?: (r == -ENOMEM ? "out of memory" : "malformed message"));
                break;
        }
        kegnet_message_done(&m);
}

static int peer_read(KegnetPeer *p) {
        char buf[READ_CHUNK];
        ssize_t n;
        int r;

        n = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                log_debug_errno(errno, "Read from %s failed: %m", p->address);
                peer_close(p);
                return 0;
        }
        if (n == 0) {
                peer_close(p);
                return 0;
        }

        r = kegnet_splitter_feed(&p->splitter, buf, (size_t) n);
        for (;;) {
                const char *frame;
                size_t size;

                if (r >= 0)
                        r = kegnet_splitter_next(&p->splitter, &frame, &size);
                if (r == -EMSGSIZE) {
                        log_warning("Frame from %s exceeds %u bytes without a terminator; closing the connection",
                                    p->address, KEGNET_MAX_FRAME);
                        peer_close(p);
                        return 0;
                }
                if (r < 0) {
                        log_warning_errno(r, "Failed to buffer input from %s, closing the connection: %m", p->address);
                        peer_close(p);
                        return 0;
                }
                if (r == 0)
                        return 0;

                peer_handle_frame(p, frame, size);
                /* A handler may have closed this peer, or the server may be stopping. */
                if (p->dead || p->server->shutting_down)
                        return 0;
        }
}

static int on_peer_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        KegnetPeer *p = userdata;

        if (revents & EPOLLOUT) {
                (void) peer_write(p);
                if (p->dead)
                        return 0;
                server_check_drained(p->server);
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (p->server->shutting_down) {
                        if (revents & (EPOLLHUP | EPOLLERR))
                                peer_close(p);
                        return 0;
                }
                (void) peer_read(p);
        }
        return 0;
}

static void server_accept_one(KegnetServer *s, int fd, const struct sockaddr *sa) {
        _cleanup_(closep) int cfd = fd;
        KegnetPeer *p;
        int one = 1;
        int r;

        p = calloc(1, sizeof(KegnetPeer));
        if (!p) {
                log_warning("Out of memory accepting a connection; closing it");
                return;
        }
        p->server = s;
        p->id = ++s->next_peer_id;
        p->fd = -1;
        format_sockaddr(sa, p->address);
        kegnet_splitter_init(&p->splitter);

        (void) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        r = sd_event_add_io(s->event, &p->io, cfd, EPOLLIN, on_peer_io, p);
        if (r < 0) {
                log_warning_errno(r, "Failed to watch connection from %s: %m", p->address);
                kegnet_splitter_done(&p->splitter);
                free(p);
                return;
        }
        (void) sd_event_source_set_description(p->io, "kegnet-peer");
        p->fd = TAKE_FD(cfd);

        p->next = s->peers;
        if (s->peers)
                s->peers->prev = p;
        s->peers = p;
        s->n_peers++;

        log_info("Remote host connected: %s", p->address);
        if (s->callbacks.on_connect)
                s->callbacks.on_connect(s, p, s->userdata);
}

static int on_accept_resume(sd_event_source *source, uint64_t usec, void *userdata) {
        KegnetServer *s = userdata;

        if (!s->shutting_down)
                (void) sd_event_source_set_enabled(s->listen_source, SD_EVENT_ON);
        return 0;
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        KegnetServer *s = userdata;

        for (int i = 0; i < ACCEPTS_PER_DISPATCH; i++) {
                union {
                        struct sockaddr sa;
                        struct sockaddr_in in;
                        struct sockaddr_in6 in6;
                        struct sockaddr_storage storage;
                } sa = {};
                socklen_t len = sizeof(sa);
                int cfd;

                cfd = accept4(fd, &sa.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        /* Level-triggered: without a pause, EMFILE would spin the loop. */
                        log_warning_errno(errno, "Failed to accept a connection, pausing for 1 s: %m");
                        (void) sd_event_source_set_enabled(s->listen_source, SD_EVENT_OFF);
                        uint64_t now = 0;
                        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now);
                        if (event_timer_arm(s->event, &s->accept_pause_source, now + ACCEPT_PAUSE_USEC,
                                            ACCEPT_PAUSE_ACCURACY_USEC, on_accept_resume, s) < 0)
                                (void) sd_event_source_set_enabled(s->listen_source, SD_EVENT_ON);
                        return 0;
                }

                if (s->n_peers >= s->options.max_peers) {
                        char addr[ADDRESS_MAX];
                        format_sockaddr(&sa.sa, addr);
                        log_warning("Too many clients (%u); refusing connection from %s",
                                    s->options.max_peers, addr);
                        safe_close(cfd);
                        continue;
                }
                server_accept_one(s, cfd, &sa.sa);
        }
        return 0;
}

static int server_open_socket(KegnetServer *s, const char *bind_addr) {
        union {
                struct sockaddr sa;
                struct sockaddr_storage storage;
        } sa = {};
        socklen_t len = sizeof(sa);
        int n, r;

        n = sd_listen_fds(true);
        if (n < 0)
                return log_error_errno(n, "Failed to read the sockets passed by systemd: %m");
        if (n > 1)
                return log_error_errno(-EINVAL,
                                       "Expected exactly one socket from systemd, got %d", n);
        if (n == 1) {
                int fd = SD_LISTEN_FDS_START;

                r = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0);
                if (r < 0)
                        return log_error_errno(r, "Failed to check the socket passed by systemd: %m");
                if (r == 0)
                        return log_error_errno(-EINVAL,
                                               "The socket passed by systemd is not a listening TCP stream socket");
                int flags = fcntl(fd, F_GETFL);
                if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                        return log_error_errno(errno, "Failed to make the passed socket non-blocking: %m");
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
                s->listen_fd = fd;
                log_info("Using the socket passed by systemd; --kb_core_bind_addr=%s is ignored", bind_addr);
        } else {
                _cleanup_(freep) char *host = NULL;
                struct addrinfo hints = {
                        .ai_socktype = SOCK_STREAM,
                        .ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG,
                }, *ai = NULL;
                char port_str[8];
                uint16_t port;
                int one = 1;

                r = kegnet_address_parse(bind_addr, &host, &port);
                if (r < 0)
                        return log_error_errno(r, "Bad --kb_core_bind_addr '%s'", bind_addr);
                snprintf(port_str, sizeof(port_str), "%u", port);

                r = getaddrinfo(host, port_str, &hints, &ai);
                if (r != 0) {
                        hints.ai_flags = AI_NUMERICSERV;   /* AI_ADDRCONFIG hides loopback-only setups */
                        r = getaddrinfo(host, port_str, &hints, &ai);
                }
                if (r != 0)
                        return log_error_errno(-EADDRNOTAVAIL, "Could not resolve '%s': %s",
                                               host, gai_strerror(r));

                int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0) {
                        r = -errno;
                        freeaddrinfo(ai);
                        return log_error_errno(r, "Failed to create the kegnet socket: %m");
                }
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
                        r = -errno;
                        freeaddrinfo(ai);
                        safe_close(fd);
                        return log_error_errno(r, "Failed to listen on %s: %m", bind_addr);
                }
                freeaddrinfo(ai);
                s->listen_fd = fd;
        }

        if (getsockname(s->listen_fd, &sa.sa, &len) < 0)
                return log_error_errno(errno, "Failed to read the kegnet socket's address: %m");
        format_sockaddr(&sa.sa, s->address);
        (void) setsockopt(s->listen_fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));

        log_info("Starting server on %s", s->address);
        if (!sockaddr_is_loopback(&sa.sa))
                log_warning("kegnet is unauthenticated; listening on %s", s->address);
        return 0;
}

int kegnet_server_new(KegnetServer **ret, sd_event *event, const char *bind_addr,
                      const KegnetServerOptions *options, const KegnetServerCallbacks *callbacks,
                      void *userdata) {
        _cleanup_(kegnet_server_freep) KegnetServer *s = NULL;
        int r;

        s = calloc(1, sizeof(KegnetServer));
        if (!s)
                return log_error_errno(-ENOMEM, "Out of memory");
        s->event = sd_event_ref(event);
        s->listen_fd = -1;
        if (options)
                s->options = *options;
        else
                kegnet_server_options_init(&s->options);
        if (s->options.max_peers == 0)
                s->options.max_peers = KEGNET_SERVER_MAX_PEERS_DEFAULT;
        if (s->options.max_unsent == 0)
                s->options.max_unsent = KEGNET_SERVER_MAX_UNSENT_DEFAULT;
        if (callbacks)
                s->callbacks = *callbacks;
        s->userdata = userdata;

        r = server_open_socket(s, bind_addr);
        if (r < 0)
                return r;

        r = sd_event_add_io(event, &s->listen_source, s->listen_fd, EPOLLIN, on_accept, s);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the kegnet socket: %m");
        (void) sd_event_source_set_description(s->listen_source, "kegnet-listen");

        r = sd_event_add_defer(event, &s->flush_source, on_flush, s);
        if (r < 0)
                return log_error_errno(r, "Failed to add the kegnet flush source: %m");
        (void) sd_event_source_set_enabled(s->flush_source, SD_EVENT_OFF);
        /* A defer source runs in the iteration after the input that queued output (one read()
         * worth of frames goes out in one write); ranked above I/O so that a producer flooding
         * the core can never starve the writes and push every listener past max_unsent. */
        (void) sd_event_source_set_priority(s->flush_source, SD_EVENT_PRIORITY_NORMAL - 1);
        (void) sd_event_source_set_description(s->flush_source, "kegnet-flush");

        r = sd_event_add_defer(event, &s->reap_source, on_reap, s);
        if (r < 0)
                return log_error_errno(r, "Failed to add the kegnet reap source: %m");
        (void) sd_event_source_set_enabled(s->reap_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(s->reap_source, "kegnet-reap");

        *ret = TAKE_PTR(s);
        return 0;
}

KegnetServer *kegnet_server_free(KegnetServer *s) {
        if (!s)
                return NULL;

        while (s->peers) {
                KegnetPeer *p = s->peers;
                peer_release(p);
                peer_unlink(p);
                free(p);
        }
        while (s->graveyard) {
                KegnetPeer *p = s->graveyard;
                s->graveyard = p->next;
                free(p);
        }
        s->listen_source = sd_event_source_disable_unref(s->listen_source);
        s->accept_pause_source = sd_event_source_disable_unref(s->accept_pause_source);
        s->flush_source = sd_event_source_disable_unref(s->flush_source);
        s->reap_source = sd_event_source_disable_unref(s->reap_source);
        s->listen_fd = safe_close(s->listen_fd);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

void kegnet_server_shutdown(KegnetServer *s) {
        if (s->shutting_down)
                return;
        s->shutting_down = true;
        s->listen_source = sd_event_source_disable_unref(s->listen_source);
        s->accept_pause_source = sd_event_source_disable_unref(s->accept_pause_source);
        s->listen_fd = safe_close(s->listen_fd);
        for (KegnetPeer *p = s->peers, *next; p; p = next) {
                next = p->next;
                if (peer_update_io_events(p) < 0)
                        peer_close(p);
        }
        (void) sd_event_source_set_enabled(s->flush_source, SD_EVENT_ONESHOT);
}

bool kegnet_server_is_drained(const KegnetServer *s) {
        for (const KegnetPeer *p = s->peers; p; p = p->next)
                if (peer_has_output(p))
                        return false;
        return true;
}

size_t kegnet_server_n_peers(const KegnetServer *s) {
        return s->n_peers;
}

const char *kegnet_server_address(const KegnetServer *s) {
        return s->address;
}

const char *kegnet_peer_address(const KegnetPeer *p) {
        return p->address;
}

uint64_t kegnet_peer_id(const KegnetPeer *p) {
        return p->id;
}

bool kegnet_peer_is_connected(const KegnetPeer *p) {
        return !p->dead;
}
