/* The core's kegnet TCP server (spec/kegnet-protocol.md): the listening socket (systemd socket
 * activation or --kb_core_bind_addr), many peers with their own frame splitter and bounded send
 * buffer, the inbound whitelist, and broadcast of the core's events to every peer. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "kegnet.h"
#include "macro.h"

typedef struct KegnetServer KegnetServer;
/* One accepted connection. Valid from on_connect until on_close returns. */
typedef struct KegnetPeer KegnetPeer;

#define KEGNET_SERVER_MAX_PEERS_DEFAULT 64U
#define KEGNET_SERVER_MAX_UNSENT_DEFAULT (1024U * 1024U)

typedef struct KegnetServerCallbacks {
        void (*on_connect)(KegnetServer *s, KegnetPeer *p, void *userdata);
        /* A whitelisted, well-formed message. The peer may be disconnected from inside (e.g. a
         * broadcast finds it too slow); the server then stops reading from it. */
        void (*on_message)(KegnetServer *s, KegnetPeer *p, const KegnetMessage *m, void *userdata);
        /* The connection is gone (peer closed, error, too slow, oversized frame, shutdown). */
        void (*on_close)(KegnetServer *s, KegnetPeer *p, void *userdata);
        /* After kegnet_server_shutdown(): every peer's output has been written (or dropped). */
        void (*on_drained)(KegnetServer *s, void *userdata);
} KegnetServerCallbacks;

typedef struct KegnetServerOptions {
        unsigned max_peers;             /* beyond it: accept and close at once with a WARNING */
        size_t max_unsent;              /* a peer with more unsent output is dropped */
        bool debug_events;              /* log every message received and sent at DEBUG */
} KegnetServerOptions;

void kegnet_server_options_init(KegnetServerOptions *o);

/* Takes the socket passed by systemd (LISTEN_FDS: exactly one TCP stream socket; bind_addr is then
 * ignored, logged at INFO) or binds bind_addr ("host:port" or "port"; a host name is resolved once,
 * here). Logs "Starting server on <host>:<port>" (logger kegnet). Errors are logged. */
int kegnet_server_new(KegnetServer **ret, sd_event *event, const char *bind_addr,
                      const KegnetServerOptions *options, const KegnetServerCallbacks *callbacks,
                      void *userdata);
/* Closes every connection without calling on_close. */
KegnetServer *kegnet_server_free(KegnetServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(KegnetServer *, kegnet_server_free);

/* Encodes once and queues the frame to every connected peer. Output is written at the next loop
 * iteration (frames produced by one batch of input go out together), never blocking. */
int kegnet_server_broadcast(KegnetServer *s, const KegnetMessage *m);

/* Orderly stop: close the listening socket, stop reading from peers, keep writing what is queued;
 * on_drained is called (from the loop) once nothing is left. The caller bounds the wait. */
void kegnet_server_shutdown(KegnetServer *s);
bool kegnet_server_is_drained(const KegnetServer *s);

size_t kegnet_server_n_peers(const KegnetServer *s);
/* "host:port" of the listening socket, as logged. */
const char *kegnet_server_address(const KegnetServer *s);

/* "<ip>:<port>" of the remote end, as logged. */
const char *kegnet_peer_address(const KegnetPeer *p);
/* Unique per process lifetime (never reused), for registries keyed by connection. */
uint64_t kegnet_peer_id(const KegnetPeer *p);
bool kegnet_peer_is_connected(const KegnetPeer *p);
/* Closes the connection (on_close is called from the loop, not from here). */
void kegnet_peer_disconnect(KegnetPeer *p);
