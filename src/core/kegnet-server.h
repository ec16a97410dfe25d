/* The core's kegnet server (spec/kegnet-protocol.md): the listening sockets (systemd socket
 * activation: TCP and the group-restricted Unix socket; or --kb_core_bind_addr), many peers with their
 * own frame splitter and bounded send buffer, the inbound whitelist, broadcast of the core's events to
 * every peer, and the project's connection layer (README, "kegnet: delivery and connection slots"):
 * Hello/Welcome, per-session acknowledgements so that a producer keeps every message until the core
 * has it, connection slots that idle anonymous sockets cannot take from the boards, and who may
 * produce (Unix socket, or a loopback TCP peer owned by root or the service user). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "kegnet.h"
#include "macro.h"

typedef struct KegnetServer KegnetServer;
/* One accepted connection. Valid from on_connect until on_close returns. */
typedef struct KegnetPeer KegnetPeer;

#define KEGNET_SERVER_MAX_PEERS_DEFAULT 64U
#define KEGNET_SERVER_MAX_UNSENT_DEFAULT (1024U * 1024U)
#define KEGNET_SERVER_IDLE_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)
/* A connection this young is never closed to make room: its Hello may still be on its way. */
#define KEGNET_SERVER_GRACE_USEC (1 * USEC_PER_SEC)

typedef struct KegnetServerCallbacks {
        void (*on_connect)(KegnetServer *s, KegnetPeer *p, void *userdata);
        /* A whitelisted, well-formed message from a peer that may produce. The peer may be
         * disconnected from inside (e.g. a broadcast finds it too slow); the server then stops
         * reading from it. */
        void (*on_message)(KegnetServer *s, KegnetPeer *p, const KegnetMessage *m, void *userdata);
        /* The connection is gone (peer closed, error, too slow, oversized frame, idle, evicted, shutdown). */
        void (*on_close)(KegnetServer *s, KegnetPeer *p, void *userdata);
        /* After kegnet_server_shutdown(): every peer's output has been written (or dropped). */
        void (*on_drained)(KegnetServer *s, void *userdata);
} KegnetServerCallbacks;

typedef struct KegnetServerOptions {
        unsigned max_peers;             /* slots; at capacity a newcomer takes the slot of a peer that sent
                                         * nothing or may not produce, or is refused */
        size_t max_unsent;              /* a peer with more unsent output is dropped */
        uint64_t idle_timeout_usec;     /* a connection that sent no frame for this long is closed
                                         * while at least half of the slots are taken */
        bool open_producers;            /* --kegnet_open_producers: any TCP peer may produce */
        bool debug_events;              /* log every message received and sent at DEBUG */
} KegnetServerOptions;

void kegnet_server_options_init(KegnetServerOptions *o);

/* Takes the sockets passed by systemd (LISTEN_FDS: a TCP stream socket, a Unix stream socket, or
 * one of each; bind_addr is then ignored, logged at INFO) or binds bind_addr ("host:port" or "port";
 * a host name is resolved once, here). Logs "Starting server on <addr>" per socket (logger kegnet).
 * Errors are logged. */
int kegnet_server_new(KegnetServer **ret, sd_event *event, const char *bind_addr,
                      const KegnetServerOptions *options, const KegnetServerCallbacks *callbacks,
                      void *userdata);
/* Closes every connection without calling on_close. */
KegnetServer *kegnet_server_free(KegnetServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(KegnetServer *, kegnet_server_free);

/* Encodes once and queues the frame to every connected peer that wants it (every peer, unless its
 * Hello named the events it wants). Output is written at the next loop iteration (frames produced
 * by one batch of input go out together: one send() per peer), never blocking. */
int kegnet_server_broadcast(KegnetServer *s, const KegnetMessage *m);

/* Orderly stop: close the listening sockets, stop reading from peers, keep writing what is queued
 * (the acknowledgements of what was handled among it); on_drained is called (from the loop) once
 * nothing is left. The caller bounds the wait. */
void kegnet_server_shutdown(KegnetServer *s);
bool kegnet_server_is_drained(const KegnetServer *s);

size_t kegnet_server_n_peers(const KegnetServer *s);
/* The listening TCP socket's "host:port" (NULL if there is none). */
const char *kegnet_server_address(const KegnetServer *s);

/* "<ip>:<port>" of the remote end ("unix:pid=<pid>" on the Unix socket), as logged. */
const char *kegnet_peer_address(const KegnetPeer *p);
/* Unique per process lifetime (never reused), for registries keyed by connection. */
uint64_t kegnet_peer_id(const KegnetPeer *p);
bool kegnet_peer_is_connected(const KegnetPeer *p);
/* Whether this peer's producer messages are handled (Unix socket, a trusted uid, or
 * --kegnet_open_producers). */
bool kegnet_peer_may_produce(const KegnetPeer *p);
/* Data the owner of the server keeps per connection (e.g. how many new names it created); 'destroy'
 * (may be NULL) releases it when the peer goes, after on_close or when the server is freed. */
void kegnet_peer_set_userdata(KegnetPeer *p, void *userdata, void (*destroy)(void *));
void *kegnet_peer_get_userdata(const KegnetPeer *p);
/* Closes the connection (on_close is called from the loop, not from here). */
void kegnet_peer_disconnect(KegnetPeer *p);
