/* kegnet server: see kegnet-server.h. Output is batched per loop iteration through one defer
 * source, so a burst of input costs one write() per peer instead of one per frame; a peer whose
 * socket is full gets EPOLLOUT until its buffer drains, and is dropped past max_unsent. Peers are
 * never freed while the loop may still be inside one of their callbacks: a disconnected peer moves
 * to a graveyard that a second defer source empties.
 *
 * Slots: a peer that has sent nothing yet is "anonymous" (kept in accept order); at capacity a
 * newcomer takes the slot of the oldest anonymous peer past the grace period, else of the least
 * recently active peer that may not produce. Peers that may produce and have spoken (announced
 * producers, listeners that said Hello, pycore producers) keep their slots; when nothing can go
 * the newcomer is refused with a Refused frame (its client can tell that from a lost connection:
 * no Welcome came). So no other user can take a slot from the boards or the core's own listeners. */
#include <inttypes.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#define LOG_COMPONENT "kegnet"
#include "log.h"

#include "kegnet-server.h"
#include "list.h"
#include "util-event.h"
#include "util-peer.h"
#include "util-ratelimit.h"

#define READ_CHUNK (64U * 1024U)
#define ACCEPTS_PER_DISPATCH 32
#define MALFORMED_WARNING_INTERVAL_USEC (60 * USEC_PER_SEC)
#define ACCEPT_PAUSE_USEC (1 * USEC_PER_SEC)
#define ACCEPT_PAUSE_ACCURACY_USEC (50 * USEC_PER_MSEC)
#define ADDRESS_MAX (INET6_ADDRSTRLEN + 16)
#define OUT_KEEP_MAX (64U * 1024U)
#define SESSION_ID_MAX 64
#define HELLO_NAME_MAX 64
#define SESSIONS_MIN 256U
#define MAX_LISTENERS 2

/* Peer-triggered messages, rate-limited per kind (util-ratelimit.h). */
static LogRateLimit rl_connections = LOG_RATELIMIT_TIMED("kegnet connections opened and closed", 10 * USEC_PER_SEC, 100);
static LogRateLimit rl_hello = LOG_RATELIMIT_TIMED("kegnet Hello messages", 10 * USEC_PER_SEC, 50);
static LogRateLimit rl_refused = LOG_RATELIMIT_DEFAULT("kegnet connections refused (no free slot)");
static LogRateLimit rl_evicted = LOG_RATELIMIT_DEFAULT("kegnet connections closed to make room");
static LogRateLimit rl_idle = LOG_RATELIMIT_DEFAULT("idle kegnet connections closed");
static LogRateLimit rl_bad_frames = LOG_RATELIMIT_DEFAULT("bad kegnet frames");
static LogRateLimit rl_not_producer = LOG_RATELIMIT_DEFAULT("kegnet producer messages refused");
static LogRateLimit rl_oversize = LOG_RATELIMIT_DEFAULT("oversized kegnet frames");
static LogRateLimit rl_slow = LOG_RATELIMIT_DEFAULT("slow kegnet clients dropped");
static LogRateLimit rl_ignored = LOG_RATELIMIT_DEFAULT("kegnet events not accepted from clients");
static LogRateLimit rl_accept = LOG_RATELIMIT_DEFAULT("kegnet accept failures");

typedef struct KegnetSession {
        char id[SESSION_ID_MAX + 1];
        uint64_t acked;                 /* every frame up to this one is handled */
        KegnetPeer *peer;               /* the live connection of the session, NULL if none */
        uint64_t last_used;             /* monotonic, for eviction */
} KegnetSession;

struct KegnetPeer {
        KegnetServer *server;
        LIST_FIELDS(KegnetPeer, peers); /* the live peers, then the graveyard */
        LIST_FIELDS(KegnetPeer, anon);  /* the peers that have sent nothing yet, newest first */
        bool anonymous;                 /* in the anonymous list */
        uint64_t id;
        int fd;
        sd_event_source *io;
        char address[ADDRESS_MAX];
        KegnetSplitter splitter;

        char *out;
        size_t out_start, out_end, out_allocated;
        bool out_armed;                 /* EPOLLOUT requested */

        bool dead;
        uint64_t connected_at;          /* monotonic */
        uint64_t last_frame_at;         /* monotonic; connected_at until the first frame */

        bool trusted;                   /* may produce */
        char why_untrusted[128];

        bool hello;                     /* said Hello */
        bool producer;                  /* announced itself as a producer and may produce */
        char *name;                     /* from the Hello */
        unsigned events;                /* the broadcasts it gets (KEGNET_EVENT_BIT()s): every one
                                         * unless its Hello said which */
        KegnetSession *session;
        uint64_t next_seq;              /* number of the next frame of the session */
        uint64_t acked_sent;            /* the last Ack (or Welcome) said this */
        uint64_t acked_at;              /* monotonic time of the last Ack */
        bool ack_due;                   /* frames handled, their Ack held back (ack timer) */

        char malformed_kind[ADDRESS_MAX + 32];
        LogRateLimit malformed_rl;      /* one warning per connection per minute (spec 2) */

        void *userdata;
        void (*userdata_destroy)(void *);
};

typedef struct Listener {
        KegnetServer *server;
        int fd;
        bool is_unix;
        sd_event_source *source;
        char address[ADDRESS_MAX + 108];
} Listener;

struct KegnetServer {
        sd_event *event;
        KegnetServerOptions options;
        KegnetServerCallbacks callbacks;
        void *userdata;

        Listener listeners[MAX_LISTENERS];
        size_t n_listeners;
        sd_event_source *accept_pause_source;
        sd_event_source *flush_source;
        sd_event_source *reap_source;
        sd_event_source *idle_source;
        sd_event_source *ack_source;    /* sends the Acks held back, when their interval is over */
        char address[ADDRESS_MAX];      /* of the TCP listener, "" if none */
        uid_t service_uid;
        StrBuf encoded;                 /* the frame being sent, its memory kept for the next one */

        KegnetPeer *peers;
        size_t n_peers;
        KegnetPeer *anon;
        KegnetPeer *graveyard;
        uint64_t next_peer_id;

        KegnetSession *sessions;
        size_t n_sessions, max_sessions;

        bool shutting_down;
        bool drained_reported;
};

void kegnet_server_options_init(KegnetServerOptions *o) {
        *o = (KegnetServerOptions) {
                .max_peers = KEGNET_SERVER_MAX_PEERS_DEFAULT,
                .max_unsent = KEGNET_SERVER_MAX_UNSENT_DEFAULT,
                .idle_timeout_usec = KEGNET_SERVER_IDLE_TIMEOUT_DEFAULT,
        };
}

static uint64_t server_now(KegnetServer *s) {
        uint64_t now = 0;
        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        return now;
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

static bool peer_has_output(const KegnetPeer *p) {
        return p->out_end > p->out_start;
}

static void server_check_drained(KegnetServer *s) {
        if (!s->shutting_down || s->drained_reported)
                return;
        LIST_FOREACH(peers, p, s->peers)
                if (peer_has_output(p))
                        return;
        s->drained_reported = true;
        if (s->callbacks.on_drained)
                s->callbacks.on_drained(s, s->userdata);
}

/* ---- anonymous peers and the idle timeout ---- */

static void anon_remove(KegnetPeer *p) {
        if (!p->anonymous)
                return;
        LIST_REMOVE(anon, p->server->anon, p);
        p->anonymous = false;
}

static void anon_add(KegnetPeer *p) {
        LIST_PREPEND(anon, p->server->anon, p);
        p->anonymous = true;
}

/* The anonymous peer that connected first (the list holds the newest first). */
static KegnetPeer *anon_oldest(KegnetServer *s) {
        KegnetPeer *oldest = NULL;

        LIST_FOREACH(anon, p, s->anon)
                oldest = p;
        return oldest;
}

static bool server_crowded(const KegnetServer *s) {
        return s->n_peers * 2 >= s->options.max_peers;
}

/* Ack coalescing (peer_ack()). */
#define ACK_INTERVAL (100 * USEC_PER_MSEC)
#define ACK_ACCURACY (50 * USEC_PER_MSEC)     /* an Ack a little later only delays a release */
#define ACK_BATCH_MAX 1024U                    /* a quarter of KEGNET_CLIENT_UNACKED_MAX */

static int on_idle_timer(sd_event_source *source, uint64_t usec, void *userdata);

/* The timer runs only while it can have work: an anonymous peer exists and half the slots are taken. */
static void server_idle_rearm(KegnetServer *s) {
        if (s->shutting_down)
                return;
        KegnetPeer *oldest = anon_oldest(s);
        if (!oldest || !server_crowded(s)) {
                event_timer_disarm(s->idle_source);
                return;
        }
        /* Accuracy 1 s: an idle connection closed a second late costs nothing. */
        if (event_timer_arm(s->event, &s->idle_source, oldest->connected_at + s->options.idle_timeout_usec,
                            USEC_PER_SEC, on_idle_timer, s) >= 0)
                (void) sd_event_source_set_description(s->idle_source, "kegnet-idle");
}

/* ---- sessions ---- */

static void session_detach(KegnetPeer *p) {
        if (p->session && p->session->peer == p)
                p->session->peer = NULL;
        p->session = NULL;
}

/* ---- closing ---- */

static void peer_unlink(KegnetPeer *p) {
        LIST_REMOVE(peers, p->server->peers, p);
        p->server->n_peers--;
}

static void peer_release(KegnetPeer *p) {
        p->io = sd_event_source_disable_unref(p->io);
        p->fd = safe_close(p->fd);
        kegnet_splitter_done(&p->splitter);
        free(p->out);
        p->out = NULL;
}

static void peer_free(KegnetPeer *p) {
        if (p->userdata_destroy)
                p->userdata_destroy(p->userdata);
        log_ratelimit_forget(&p->malformed_rl);
        free(p->name);
        free(p);
}

static void peer_close(KegnetPeer *p) {
        KegnetServer *s = p->server;

        if (p->dead)
                return;
        p->dead = true;
        log_ratelimited(&rl_connections, LOG_INFO, "Remote host closed: %s", p->address);
        anon_remove(p);
        session_detach(p);
        peer_release(p);
        peer_unlink(p);
        LIST_PREPEND(peers, s->graveyard, p);
        (void) sd_event_source_set_enabled(s->reap_source, SD_EVENT_ONESHOT);
        server_idle_rearm(s);
        /* The peer may have been the last one holding output back. */
        if (s->shutting_down)
                (void) sd_event_source_set_enabled(s->flush_source, SD_EVENT_ONESHOT);
}

void kegnet_peer_disconnect(KegnetPeer *p) {
        if (p)
                peer_close(p);
}

/* ---- output ---- */

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

        if (p->dead)
                return 0;
        if (p->out_end - p->out_start + size > s->options.max_unsent) {
                log_ratelimited(&rl_slow, LOG_WARNING, "Dropping slow client %s", p->address);
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

/* A message for this peer only (Welcome, Ack). */
static void peer_send(KegnetPeer *p, const KegnetMessage *m) {
        StrBuf *b = &p->server->encoded;
        int r;

        r = kegnet_message_encode_in(m, b);
        if (r < 0) {
                log_warning_errno(r, "Failed to encode %s: %m", kegnet_kind_to_string(m->kind) ?: "?");
                return;
        }
        if (p->server->options.debug_events && log_get_max_level() >= LOG_DEBUG)
                log_debug("Sending to %s: %.*s", p->address, (int) (b->len - 2), b->buf);
        (void) peer_queue(p, b->buf, b->len);
}

int kegnet_server_broadcast(KegnetServer *s, const KegnetMessage *m) {
        unsigned bit = KEGNET_EVENT_BIT(m->kind);
        StrBuf *b = &s->encoded;
        size_t n = 0;
        int r;

        assert_return(s, -EINVAL);
        assert_return(bit & KEGNET_EVENTS_BROADCAST, -EINVAL);

        /* Nobody asked for it (no listener, only producers): not even encoded. */
        for (KegnetPeer *p = s->peers; p; p = p->peers_next)
                if (p->events & bit)
                        n++;
        if (n == 0)
                return 0;

        r = kegnet_message_encode_in(m, b);
        if (r < 0)
                return log_warning_errno(r, "Failed to encode %s: %m", kegnet_kind_to_string(m->kind) ?: "?");

        if (s->options.debug_events && log_get_max_level() >= LOG_DEBUG)
                log_debug("Sending to %zu clients: %.*s", n, (int) (b->len - 2), b->buf);

        for (KegnetPeer *p = s->peers, *next; p; p = next) {
                next = p->peers_next;
                if (p->events & bit)
                        (void) peer_queue(p, b->buf, b->len);
        }
        return 0;
}

static int on_flush(sd_event_source *source, void *userdata) {
        KegnetServer *s = userdata;

        for (KegnetPeer *p = s->peers, *next; p; p = next) {
                next = p->peers_next;
                if (peer_has_output(p) && !p->out_armed)
                        (void) peer_write(p);
        }
        server_check_drained(s);
        return 0;
}

static int on_reap(sd_event_source *source, void *userdata) {
        KegnetServer *s = userdata;

        while (s->graveyard) {
                KegnetPeer *p = LIST_REMOVE(peers, s->graveyard, s->graveyard);
                if (s->callbacks.on_close)
                        s->callbacks.on_close(s, p, s->userdata);
                peer_free(p);
        }
        return 0;
}

/* ---- input ---- */

static void peer_malformed(KegnetPeer *p, const char *why) {
        /* One per connection per minute (spec 2), and a flood of connections with one bad frame each
         * is limited as a whole. The reason may quote the frame: the log escapes it. */
        if (!log_ratelimit_pass(&p->malformed_rl, LOG_WARNING, LOG_COMPONENT)) {
                log_debug("Dropping bad frame from %s: %s", p->address, why);
                return;
        }
        log_ratelimited(&rl_bad_frames, LOG_WARNING, "Dropping bad frame from %s: %s", p->address, why);
}

static KegnetSession *session_find(KegnetServer *s, const char *id) {
        for (size_t i = 0; i < s->n_sessions; i++)
                if (streq(s->sessions[i].id, id))
                        return &s->sessions[i];
        return NULL;
}

static KegnetSession *session_get(KegnetServer *s, const char *id) {
        KegnetSession *x = session_find(s, id);
        uint64_t now = server_now(s);

        if (x) {
                x->last_used = now;
                return x;
        }
        if (s->n_sessions >= s->max_sessions) {
                /* Forget the session unused the longest among those without a connection: its
                 * producer, should it come back, replays what it still holds. */
                KegnetSession *victim = NULL;
                for (size_t i = 0; i < s->n_sessions; i++)
                        if (!s->sessions[i].peer && (!victim || s->sessions[i].last_used < victim->last_used))
                                victim = &s->sessions[i];
                if (!victim)
                        return NULL;
                x = victim;
        } else {
                if (!s->sessions) {
                        s->sessions = calloc(s->max_sessions, sizeof(KegnetSession));
                        if (!s->sessions)
                                return NULL;
                }
                x = &s->sessions[s->n_sessions++];
        }
        *x = (KegnetSession) { .last_used = now };
        snprintf(x->id, sizeof x->id, "%s", id);
        return x;
}

static bool session_id_is_valid(const char *id) {
        size_t n = 0;

        if (isempty(id))
                return false;
        for (const char *c = id; *c; c++, n++)
                if (n >= SESSION_ID_MAX || !((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
                                             (*c >= 'A' && *c <= 'Z') || *c == '-' || *c == '_'))
                        return false;
        return true;
}

static int peer_read(KegnetPeer *p);

/* A producer came back on a new connection while the server still holds the old one: whatever
 * the old one delivered is handled first, so the Welcome tells the producer exactly what it may
 * forget and nothing is handled twice. */
static void peer_drain_and_close(KegnetPeer *p) {
        while (!p->dead && peer_read(p) > 0)
                ;
        peer_close(p);
}

static void peer_hello(KegnetPeer *p, const KegnetHello *h) {
        KegnetServer *s = p->server;
        KegnetMessage w = { .kind = KEGNET_WELCOME, .welcome = { .role = KEGNET_ROLE_LISTENER } };
        char reason[192];

        if (p->hello) {
                log_ratelimited(&rl_hello, LOG_WARNING, "Ignoring a second Hello from %s", p->address);
                return;
        }
        p->hello = true;
        if (h->has_events)
                p->events = h->events;
        if (h->name) {
                p->name = strndup(h->name, HELLO_NAME_MAX);
                if (!p->name)
                        log_debug("Out of memory keeping the name of %s", p->address);
        }

        if (h->role == KEGNET_ROLE_PRODUCER && !p->trusted) {
                snprintf(reason, sizeof reason, "producer messages are not accepted from this connection: %s",
                         p->why_untrusted);
                w.welcome.reason = reason;
                log_ratelimited(&rl_not_producer, LOG_WARNING,
                                "Refusing producer %s from %s: %s (see --kegnet_open_producers)",
                                p->name ?: "?", p->address, p->why_untrusted);
        } else if (h->role == KEGNET_ROLE_PRODUCER) {
                w.welcome.role = KEGNET_ROLE_PRODUCER;
                p->producer = true;
                if (h->session && session_id_is_valid(h->session)) {
                        KegnetSession *x = session_get(s, h->session);
                        if (x) {
                                if (x->peer && x->peer != p) {
                                        log_info("%s continues the session of %s", p->address, x->peer->address);
                                        peer_drain_and_close(x->peer);
                                }
                                /* What the producer holds starts at seq; anything before is handled. */
                                if (h->has_seq && h->seq > 0 && h->seq - 1 > x->acked)
                                        x->acked = h->seq - 1;
                                x->peer = p;
                                p->session = x;
                                p->next_seq = x->acked + 1;
                                p->acked_sent = x->acked;
                                w.welcome.has_acked = true;
                                w.welcome.acked = x->acked;
                        } else
                                log_warning("No room for the session of %s; its messages are not acknowledged",
                                            p->address);
                } else if (h->session)
                        log_ratelimited(&rl_hello, LOG_WARNING, "Bad session id from %s; its messages are not acknowledged",
                                        p->address);
        } else if (h->role == KEGNET_ROLE_OTHER)
                log_debug("%s announced a role this version does not know; treating it as a listener", p->address);

        log_ratelimited(&rl_hello, LOG_INFO, "Hello from %s: %s (%s%s)", p->address, p->name ?: "unnamed client",
                        p->producer ? "producer" : "listener", p->session ? ", acknowledged" : "");
        peer_send(p, &w);
}

static void peer_handle_frame(KegnetPeer *p, const char *frame, size_t size) {
        KegnetServer *s = p->server;
        KegnetMessage m = KEGNET_MESSAGE_NULL;
        _cleanup_(freep) char *error = NULL;
        uint64_t seq = 0;
        int r;

        p->last_frame_at = server_now(s);
        if (p->anonymous) {
                anon_remove(p);
                server_idle_rearm(s);
        }

        if (p->session) {
                seq = p->next_seq++;
                if (seq <= p->session->acked) {
                        log_debug("Skipping frame %" PRIu64 " from %s: handled before", seq, p->address);
                        return;
                }
        }

        if (s->options.debug_events && log_get_max_level() >= LOG_DEBUG)
                log_debug("Received from %s: %.*s", p->address, (int) size, frame);

        r = kegnet_message_parse(frame, size, &m, &error);
        if (r >= 0 && m.kind == KEGNET_HELLO)
                peer_hello(p, &m.hello);
        else
                switch (kegnet_inbound_verdict(r, &m)) {
                case KEGNET_INBOUND_ACCEPT:
                        if (!p->trusted) {
                                log_ratelimited(&rl_not_producer, LOG_WARNING,
                                                "Refusing %s from %s: %s (see --kegnet_open_producers)",
                                                m.event_name, p->address, p->why_untrusted);
                                break;
                        }
                        if (s->callbacks.on_message)
                                s->callbacks.on_message(s, p, &m, s->userdata);
                        break;
                case KEGNET_INBOUND_IGNORE:
                        break;
                case KEGNET_INBOUND_DROP_DEBUG:
                        log_ratelimited(&rl_ignored, LOG_DEBUG, "Ignoring %s from %s: not accepted from clients",
                                        m.event_name ?: "?", p->address);
                        break;
                case KEGNET_INBOUND_DROP_WARNING:
                default:
                        peer_malformed(p, error ?: (r == -ENOMEM ? "out of memory" : "malformed message"));
                        break;
                }
        kegnet_message_done(&m);

        /* Handled (or deliberately dropped): either way the producer need not send it again. */
        if (seq > 0 && p->session && seq > p->session->acked)
                p->session->acked = seq;
}

static void peer_ack_now(KegnetPeer *p) {
        p->ack_due = false;
        if (p->dead || !p->session || p->session->acked <= p->acked_sent)
                return;
        p->acked_sent = p->session->acked;
        p->acked_at = server_now(p->server);
        peer_send(p, &(KegnetMessage) { .kind = KEGNET_ACK, .ack.acked = p->acked_sent });
}

static int on_ack_timer(sd_event_source *source, uint64_t usec, void *userdata);

/* The ack timer runs only while an Ack is held back. */
static void server_ack_rearm(KegnetServer *s) {
        uint64_t next = UINT64_MAX;

        LIST_FOREACH(peers, p, s->peers)
                if (p->ack_due && p->acked_at + ACK_INTERVAL < next)
                        next = p->acked_at + ACK_INTERVAL;
        if (next == UINT64_MAX) {
                event_timer_disarm(s->ack_source);
                return;
        }
        if (event_timer_arm(s->event, &s->ack_source, next, ACK_ACCURACY, on_ack_timer, s) >= 0)
                (void) sd_event_source_set_description(s->ack_source, "kegnet-ack");
        else    /* without the timer nothing may wait */
                LIST_FOREACH(peers, p, s->peers)
                        if (p->ack_due)
                                peer_ack_now(p);
}

static int on_ack_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        KegnetServer *s = userdata;
        uint64_t now = server_now(s);

        LIST_FOREACH(peers, p, s->peers)
                if (p->ack_due && p->acked_at + ACK_INTERVAL <= now)
                        peer_ack_now(p);
        server_ack_rearm(s);
        return 0;
}

/* After a batch of input: acknowledge what was handled. An Ack goes out at once when the last one
 * is ACK_INTERVAL old or ACK_BATCH_MAX frames are waiting for one, and on shutdown; otherwise it is
 * held back until the interval is over and covers everything handled meanwhile. So a board sending
 * a reading every 10 ms wakes for an Ack ten times a second, not a hundred, and a flood is
 * acknowledged long before the producer's limit of unacknowledged frames. Nothing is lost by the
 * wait: a producer keeps what is not acknowledged, and the next Welcome tells what was handled. */
static void peer_ack(KegnetPeer *p) {
        KegnetServer *s = p->server;

        if (p->dead || !p->session || p->session->acked <= p->acked_sent)
                return;
        if (s->shutting_down || p->session->acked - p->acked_sent >= ACK_BATCH_MAX ||
            server_now(s) >= p->acked_at + ACK_INTERVAL) {
                bool was_due = p->ack_due;

                peer_ack_now(p);
                if (was_due)
                        server_ack_rearm(s);
                return;
        }
        if (!p->ack_due) {
                p->ack_due = true;
                server_ack_rearm(s);
        }
}

/* Reads one chunk and handles its frames. Returns 1 if there may be more to read, 0 if not (or the
 * peer is gone). */
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
                        log_ratelimited(&rl_oversize, LOG_WARNING,
                                        "Frame from %s exceeds %u bytes without a terminator; closing the connection",
                                        p->address, KEGNET_MAX_FRAME);
                        peer_ack_now(p);
                        peer_close(p);
                        return 0;
                }
                if (r < 0) {
                        log_warning_errno(r, "Failed to buffer input from %s, closing the connection: %m", p->address);
                        peer_close(p);
                        return 0;
                }
                if (r == 0)
                        break;

                peer_handle_frame(p, frame, size);
                /* A handler may have closed this peer, or the server may be stopping. */
                if (p->dead)
                        return 0;
                if (p->server->shutting_down)
                        break;
        }
        peer_ack(p);
        return !p->server->shutting_down;
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

/* ---- accepting ---- */

/* Best effort: a frame the client can read before it sees the connection close. */
static void refuse_fd(int fd, const char *reason) {
        _cleanup_(freep) char *frame = NULL;
        size_t size;

        if (kegnet_message_encode(&(KegnetMessage) { .kind = KEGNET_REFUSED, .refused.reason = reason },
                                  &frame, &size) >= 0)
                (void) send(fd, frame, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void) shutdown(fd, SHUT_WR);
}

/* Who gives up its slot for a newcomer, or NULL (see the top of the file). */
static KegnetPeer *server_pick_victim(KegnetServer *s) {
        uint64_t now = server_now(s);
        KegnetPeer *best = NULL;

        KegnetPeer *oldest = anon_oldest(s);
        if (oldest && oldest->connected_at + KEGNET_SERVER_GRACE_USEC <= now)
                return oldest;

        LIST_FOREACH(peers, p, s->peers)
                if (!p->trusted && !p->anonymous && (!best || p->last_frame_at < best->last_frame_at))
                        best = p;
        return best;
}

static void peer_identify(KegnetPeer *p, int fd, bool is_unix) {
        KegnetServer *s = p->server;
        uid_t uid;
        int r;

        if (is_unix) {
                /* The socket's owner and mode decide who may connect to it. */
                p->trusted = true;
                return;
        }
        if (s->options.open_producers) {
                p->trusted = true;
                return;
        }
        r = socket_peer_uid(fd, &uid);
        if (r == -EADDRNOTAVAIL)
                snprintf(p->why_untrusted, sizeof p->why_untrusted, "the peer is not on the loopback");
        else if (r < 0)
                snprintf(p->why_untrusted, sizeof p->why_untrusted, "its owner is unknown (%s)", strerror(-r));
        else if (uid == 0 || uid == s->service_uid)
                p->trusted = true;
        else
                snprintf(p->why_untrusted, sizeof p->why_untrusted, "uid %u is not root or the service user (uid %u)",
                         (unsigned) uid, (unsigned) s->service_uid);
}

static void server_accept_one(KegnetServer *s, int fd, const struct sockaddr *sa, bool is_unix) {
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
        p->connected_at = p->last_frame_at = server_now(s);
        p->events = KEGNET_EVENTS_BROADCAST;
        if (is_unix) {
                struct ucred cred;
                socklen_t l = sizeof cred;
                if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &l) >= 0)
                        snprintf(p->address, sizeof p->address, "unix:pid=%d", (int) cred.pid);
                else
                        snprintf(p->address, sizeof p->address, "unix:?");
        } else {
                format_sockaddr(sa, p->address);
                (void) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        snprintf(p->malformed_kind, sizeof p->malformed_kind, "bad frames from %s", p->address);
        p->malformed_rl = (LogRateLimit) LOG_RATELIMIT_INIT(p->malformed_kind, MALFORMED_WARNING_INTERVAL_USEC, 1);
        kegnet_splitter_init(&p->splitter);
        peer_identify(p, cfd, is_unix);

        r = sd_event_add_io(s->event, &p->io, cfd, EPOLLIN, on_peer_io, p);
        if (r < 0) {
                log_warning_errno(r, "Failed to watch connection from %s: %m", p->address);
                kegnet_splitter_done(&p->splitter);
                free(p);
                return;
        }
        (void) sd_event_source_set_description(p->io, "kegnet-peer");
        p->fd = TAKE_FD(cfd);

        LIST_PREPEND(peers, s->peers, p);
        s->n_peers++;
        anon_add(p);
        server_idle_rearm(s);

        log_ratelimited(&rl_connections, LOG_INFO, "Remote host connected: %s", p->address);
        if (s->callbacks.on_connect)
                s->callbacks.on_connect(s, p, s->userdata);
}

static int on_accept_resume(sd_event_source *source, uint64_t usec, void *userdata) {
        KegnetServer *s = userdata;

        if (!s->shutting_down)
                for (size_t i = 0; i < s->n_listeners; i++)
                        (void) sd_event_source_set_enabled(s->listeners[i].source, SD_EVENT_ON);
        return 0;
}

static void server_pause_accepting(KegnetServer *s) {
        for (size_t i = 0; i < s->n_listeners; i++)
                (void) sd_event_source_set_enabled(s->listeners[i].source, SD_EVENT_OFF);
        if (event_timer_arm(s->event, &s->accept_pause_source, server_now(s) + ACCEPT_PAUSE_USEC,
                            ACCEPT_PAUSE_ACCURACY_USEC, on_accept_resume, s) < 0)
                (void) on_accept_resume(NULL, 0, s);
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Listener *l = userdata;
        KegnetServer *s = l->server;

        for (int i = 0; i < ACCEPTS_PER_DISPATCH; i++) {
                union {
                        struct sockaddr sa;
                        struct sockaddr_in in;
                        struct sockaddr_in6 in6;
                        struct sockaddr_un un;
                        struct sockaddr_storage storage;
                } sa = {};
                socklen_t len = sizeof(sa);
                int cfd;

                cfd = accept4(fd, &sa.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        /* Level-triggered: without a pause, EMFILE would spin the loop. */
                        log_ratelimited_errno(&rl_accept, LOG_WARNING, errno,
                                              "Failed to accept a connection, pausing for 1 s: %m");
                        server_pause_accepting(s);
                        return 0;
                }

                if (s->n_peers >= s->options.max_peers) {
                        KegnetPeer *victim = server_pick_victim(s);
                        if (!victim) {
                                char addr[ADDRESS_MAX] = "unix";
                                if (!l->is_unix)
                                        format_sockaddr(&sa.sa, addr);
                                log_ratelimited(&rl_refused, LOG_WARNING,
                                                "Too many clients (%u, none idle or untrusted); refusing connection from %s",
                                                s->options.max_peers, addr);
                                refuse_fd(cfd, "too many clients");
                                safe_close(cfd);
                                continue;
                        }
                        log_ratelimited(&rl_evicted, LOG_WARNING,
                                        "Too many clients (%u); closing %s (%s) to make room",
                                        s->options.max_peers, victim->address,
                                        victim->anonymous ? "it sent nothing" : "it may not produce");
                        refuse_fd(victim->fd, "closed to make room for another client");
                        peer_close(victim);
                }
                server_accept_one(s, cfd, &sa.sa, l->is_unix);
        }
        return 0;
}

static int on_idle_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        KegnetServer *s = userdata;
        uint64_t now = server_now(s);

        /* Under pressure every connection past the timeout goes, not just enough to relieve it:
         * from the oldest on, until one is younger. */
        KegnetPeer *p = server_crowded(s) ? anon_oldest(s) : NULL;
        while (p && p->connected_at + s->options.idle_timeout_usec <= now) {
                KegnetPeer *newer = p->anon_prev;
                log_ratelimited(&rl_idle, LOG_WARNING, "Closing %s: no frame in %g s while %zu of %u slots are taken",
                                p->address, (double) s->options.idle_timeout_usec / (double) USEC_PER_SEC,
                                s->n_peers, s->options.max_peers);
                refuse_fd(p->fd, "idle: no frame sent");
                peer_close(p);
                p = newer;
        }
        server_idle_rearm(s);
        return 0;
}

/* ---- set-up ---- */

static int server_add_listener(KegnetServer *s, int fd, bool is_unix) {
        Listener *l;
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
                struct sockaddr_storage storage;
        } sa = {};
        socklen_t len = sizeof(sa);

        if (s->n_listeners >= MAX_LISTENERS)
                return log_error_errno(-EINVAL, "Too many kegnet sockets");
        if (getsockname(fd, &sa.sa, &len) < 0)
                return log_error_errno(errno, "Failed to read the kegnet socket's address: %m");
        l = &s->listeners[s->n_listeners++];
        *l = (Listener) { .server = s, .fd = fd, .is_unix = is_unix };
        if (is_unix) {
                size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
                if (n > 0 && sa.un.sun_path[0] == '\0')
                        snprintf(l->address, sizeof l->address, "unix:@%.*s", (int) (n - 1), sa.un.sun_path + 1);
                else
                        snprintf(l->address, sizeof l->address, "unix:%.*s", (int) strnlen(sa.un.sun_path, n),
                                 sa.un.sun_path);
        } else {
                char a[ADDRESS_MAX];
                format_sockaddr(&sa.sa, a);
                snprintf(l->address, sizeof l->address, "%s", a);
                snprintf(s->address, sizeof s->address, "%s", a);
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
        }

        log_info("Starting server on %s", l->address);
        if (!is_unix && !sockaddr_is_loopback(&sa.sa))
                log_warning("kegnet is unauthenticated; listening on %s", l->address);
        return 0;
}

static int server_open_passed(KegnetServer *s, int n, const char *bind_addr) {
        bool have_tcp = false, have_unix = false;
        int r;

        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                bool is_unix;

                r = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0);
                if (r < 0)
                        return log_error_errno(r, "Failed to check the socket passed by systemd: %m");
                is_unix = r == 0;
                if (is_unix) {
                        r = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0);
                        if (r < 0)
                                return log_error_errno(r, "Failed to check the socket passed by systemd: %m");
                        if (r == 0)
                                return log_error_errno(-EINVAL,
                                                       "A socket passed by systemd is neither a listening TCP nor a "
                                                       "listening Unix stream socket");
                }
                if ((is_unix && have_unix) || (!is_unix && have_tcp))
                        return log_error_errno(-EINVAL, "systemd passed two %s sockets; expected at most one of each",
                                               is_unix ? "Unix" : "TCP");
                have_unix = have_unix || is_unix;
                have_tcp = have_tcp || !is_unix;

                int flags = fcntl(fd, F_GETFL);
                if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                        return log_error_errno(errno, "Failed to make the passed socket non-blocking: %m");
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
                r = server_add_listener(s, fd, is_unix);
                if (r < 0)
                        return r;
        }
        log_info("Using the socket%s passed by systemd; --kb_core_bind_addr=%s is ignored", n > 1 ? "s" : "",
                 bind_addr);
        return 0;
}

static int server_bind(KegnetServer *s, const char *bind_addr) {
        _cleanup_(freep) char *host = NULL;
        struct addrinfo hints = {
                .ai_socktype = SOCK_STREAM,
                .ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG,
        }, *ai = NULL;
        char port_str[8];
        uint16_t port;
        int one = 1;
        int r;

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
                return log_error_errno(-EADDRNOTAVAIL, "Could not resolve '%s': %s", host, gai_strerror(r));

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
        r = server_add_listener(s, fd, false);
        if (r < 0)
                safe_close(fd);         /* not in the listener table: nobody else closes it */
        return r;
}

int kegnet_server_new(KegnetServer **ret, sd_event *event, const char *bind_addr,
                      const KegnetServerOptions *options, const KegnetServerCallbacks *callbacks,
                      void *userdata) {
        _cleanup_(kegnet_server_freep) KegnetServer *s = NULL;
        int n, r;

        s = calloc(1, sizeof(KegnetServer));
        if (!s)
                return log_error_errno(-ENOMEM, "Out of memory");
        s->event = sd_event_ref(event);
        if (options)
                s->options = *options;
        else
                kegnet_server_options_init(&s->options);
        if (s->options.max_peers == 0)
                s->options.max_peers = KEGNET_SERVER_MAX_PEERS_DEFAULT;
        if (s->options.max_unsent == 0)
                s->options.max_unsent = KEGNET_SERVER_MAX_UNSENT_DEFAULT;
        if (s->options.idle_timeout_usec == 0)
                s->options.idle_timeout_usec = KEGNET_SERVER_IDLE_TIMEOUT_DEFAULT;
        if (callbacks)
                s->callbacks = *callbacks;
        s->userdata = userdata;
        s->service_uid = geteuid();
        s->max_sessions = MAX(SESSIONS_MIN, 2 * s->options.max_peers);

        n = sd_listen_fds(true);
        if (n < 0)
                return log_error_errno(n, "Failed to read the sockets passed by systemd: %m");
        if (n > MAX_LISTENERS)
                return log_error_errno(-EINVAL, "Expected at most %d sockets from systemd (TCP and Unix), got %d",
                                       MAX_LISTENERS, n);
        r = n > 0 ? server_open_passed(s, n, bind_addr) : server_bind(s, bind_addr);
        if (r < 0)
                return r;

        for (size_t i = 0; i < s->n_listeners; i++) {
                Listener *l = &s->listeners[i];
                r = sd_event_add_io(event, &l->source, l->fd, EPOLLIN, on_accept, l);
                if (r < 0)
                        return log_error_errno(r, "Failed to watch the kegnet socket: %m");
                /* Connections already accepted come first: a board's Hello is read before the next
                 * batch of newcomers can compete for its slot. */
                (void) sd_event_source_set_priority(l->source, SD_EVENT_PRIORITY_NORMAL + 10);
                (void) sd_event_source_set_description(l->source, "kegnet-listen");
        }

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

static void server_close_listeners(KegnetServer *s) {
        for (size_t i = 0; i < s->n_listeners; i++) {
                s->listeners[i].source = sd_event_source_disable_unref(s->listeners[i].source);
                s->listeners[i].fd = safe_close(s->listeners[i].fd);
        }
        s->n_listeners = 0;
        s->accept_pause_source = sd_event_source_disable_unref(s->accept_pause_source);
}

KegnetServer *kegnet_server_free(KegnetServer *s) {
        if (!s)
                return NULL;

        while (s->peers) {
                KegnetPeer *p = s->peers;
                peer_release(p);
                peer_unlink(p);
                peer_free(p);
        }
        while (s->graveyard)
                peer_free(LIST_REMOVE(peers, s->graveyard, s->graveyard));
        server_close_listeners(s);
        s->flush_source = sd_event_source_disable_unref(s->flush_source);
        s->reap_source = sd_event_source_disable_unref(s->reap_source);
        s->idle_source = sd_event_source_disable_unref(s->idle_source);
        s->ack_source = sd_event_source_disable_unref(s->ack_source);
        free(s->sessions);
        strbuf_done(&s->encoded);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

void kegnet_server_shutdown(KegnetServer *s) {
        if (s->shutting_down)
                return;
        s->shutting_down = true;
        server_close_listeners(s);
        event_timer_disarm(s->idle_source);
        event_timer_disarm(s->ack_source);
        for (KegnetPeer *p = s->peers, *next; p; p = next) {
                next = p->peers_next;
                peer_ack_now(p);        /* what was handled is acknowledged before the end */
                if (!p->dead && peer_update_io_events(p) < 0)
                        peer_close(p);
        }
        (void) sd_event_source_set_enabled(s->flush_source, SD_EVENT_ONESHOT);
}

bool kegnet_server_is_drained(const KegnetServer *s) {
        for (const KegnetPeer *p = s->peers; p; p = p->peers_next)
                if (peer_has_output(p))
                        return false;
        return true;
}

size_t kegnet_server_n_peers(const KegnetServer *s) {
        return s->n_peers;
}

const char *kegnet_server_address(const KegnetServer *s) {
        return isempty(s->address) ? NULL : s->address;
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

bool kegnet_peer_may_produce(const KegnetPeer *p) {
        return p->trusted;
}

void kegnet_peer_set_userdata(KegnetPeer *p, void *userdata, void (*destroy)(void *)) {
        p->userdata = userdata;
        p->userdata_destroy = destroy;
}

void *kegnet_peer_get_userdata(const KegnetPeer *p) {
        return p->userdata;
}
