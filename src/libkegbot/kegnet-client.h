/* Reconnecting kegnet client on sd-event, shared by kegboard_daemon, rfid_daemon, test_flow,
 * lcd_daemon and sound_server: non-blocking connect with the spec's backoff (TCP, or the core's Unix
 * socket: "unix:/run/kegbot/kegnet.sock"), the Hello/Welcome handshake, parsed messages in, bounded
 * non-blocking sends out, and the producer outbox kept while disconnected (kegnet-protocol.md §6).
 * A producer keeps every message until the core has acknowledged it (README, "kegnet: delivery and
 * connection slots"). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "kegnet.h"
#include "macro.h"

typedef struct KegnetClient KegnetClient;

#define KEGNET_CLIENT_OUTBOX_MAX 256U
#define KEGNET_CLIENT_SEND_BUFFER_MAX (256U * 1024U)
/* Written but unacknowledged messages beyond this: the core is not acknowledging; reconnect. */
#define KEGNET_CLIENT_UNACKED_MAX 4096U

typedef struct KegnetClientCallbacks {
        /* A connection is up: the core answered our Hello with a Welcome. Messages sent from here go
         * out before the producer outbox is flushed (that is where a producer sends its
         * ControllerConnectedEvent). A connection that ends before the Welcome (a full core closes
         * or refuses it) is a failed attempt: connect_failed. */
        void (*connected)(KegnetClient *c, void *userdata);
        /* An established connection is gone (error: negative errno, 0 = closed by the peer or a
         * kegnet_client_finish() that completed). The client reconnects by itself unless reconnect
         * is off or it was finishing. */
        void (*disconnected)(KegnetClient *c, int error, void *userdata);
        /* A connection attempt failed (error: negative errno). With reconnect on, the client has
         * already scheduled the next attempt; with it off, nothing more happens (test_flow exits). */
        void (*connect_failed)(KegnetClient *c, int error, void *userdata);
        /* A well-formed message of a known kind arrived. Unknown events are dropped (DEBUG) and
         * malformed ones dropped with a rate-limited WARNING before this is called. */
        void (*message)(KegnetClient *c, const KegnetMessage *m, void *userdata);
        /* Everything queued while connected has been delivered: acknowledged by the core (or, on a
         * connection without acknowledgements, written to the socket). After a direct write from
         * kegnet_client_send() it comes from the loop; if the connection is lost before that, it
         * comes right before 'disconnected' (never for messages moved back to the outbox). */
        void (*flushed)(KegnetClient *c, void *userdata);
} KegnetClientCallbacks;

/* Parses the address ("host:port", "port" or "unix:/path"), resolving a host name once, here (blocking).
 * -EINVAL bad address, -EADDRNOTAVAIL host did not resolve (both logged). Nothing happens on the
 * loop until kegnet_client_start(). Callbacks must not free the client. */
int kegnet_client_new(KegnetClient **ret, sd_event *event, const char *address,
                      const KegnetClientCallbacks *callbacks, void *userdata);
KegnetClient *kegnet_client_free(KegnetClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(KegnetClient *, kegnet_client_free);

/* Producer mode (default off): while disconnected, kegnet_client_send() keeps MeterUpdate,
 * TokenAuthEvent and board-reset ControllerConnectedEvent in the outbox (§6.2) instead of failing,
 * and messages the core did not acknowledge before a connection ended are sent again. Implies the
 * producer role. */
void kegnet_client_set_producer(KegnetClient *c, bool producer);
/* The role the Hello announces (default listener): a producer without an outbox (test_flow) says
 * producer, so that the core acknowledges its messages and tells it if it may not produce (then
 * the attempt fails: connect_failed with -EPERM). */
void kegnet_client_set_role(KegnetClient *c, KegnetRole role);
/* The broadcasts this client wants (KEGNET_EVENT_BIT()s of KEGNET_EVENTS_BROADCAST), announced in
 * the Hello's "events": the core sends it nothing else, so a producer is not woken for the
 * FlowUpdates its own readings cause. Default: every broadcast ("events": null). */
void kegnet_client_set_events(KegnetClient *c, unsigned events);
/* Reconnect (default on). Off = one attempt only (test_flow); failure -> connect_failed. */
void kegnet_client_set_reconnect(KegnetClient *c, bool reconnect);
/* Log every message sent and received at DEBUG (--debug_events). */
void kegnet_client_set_debug_events(KegnetClient *c, bool on);
/* Scales the §6.1 schedule (5, 5, 10, 10, 20, 20, 60 s; 5 s minimum spacing after a drop) for
 * tests: each nominal second lasts 'unit' µs (default USEC_PER_SEC). Log lines keep nominal seconds.
 * connect_timeout: a connect that has not completed after this long fails (default 10 s, 0 = none). */
void kegnet_client_set_timing(KegnetClient *c, uint64_t unit_usec, uint64_t connect_timeout_usec);

/* First attempt at once (logs "Connecting to <host>:<port>"). -EALREADY if started. */
int kegnet_client_start(KegnetClient *c);

/* Sends one message.
 * Connected: encoded and written without blocking; the rest waits for POLLOUT. If the unsent bytes
 * exceed KEGNET_CLIENT_SEND_BUFFER_MAX the connection is treated as lost (returns 0; producer
 * messages move back to the outbox).
 * Not connected: producer -> queued in the outbox per §6.2 (ThermoEvent and other kinds dropped,
 * returns 0); otherwise -ENOTCONN. Encoding errors (-EINVAL, -E2BIG) are returned as is.
 * After kegnet_client_finish(): -ESHUTDOWN. */
int kegnet_client_send(KegnetClient *c, const KegnetMessage *m);

/* Graceful end (test_flow, daemon stop): accept no more sends, write out what is queued, wait for
 * the core to acknowledge it, then half-close and wait for the peer's EOF; disconnected(c, 0) is called at the end (or with an error
 * if the connection breaks first). Not connected: returns -ENOTCONN and does nothing. */
int kegnet_client_finish(KegnetClient *c);

/* The end of a producer (a daemon's stop): what is queued - and the outbox and what the last
 * connection left unacknowledged too, if a connection comes up within timeout_usec - is delivered
 * and the connection closed gracefully, as kegnet_client_finish() does. drained(c, flushed, userdata) is then called once, from the loop:
 * flushed is true when the peer has everything, false when the deadline passed or the connection
 * was lost first. -EALREADY while a drain is running. */
typedef void (*KegnetClientDrained)(KegnetClient *c, bool flushed, void *userdata);
int kegnet_client_drain(KegnetClient *c, uint64_t timeout_usec, KegnetClientDrained drained, void *userdata);

bool kegnet_client_is_connected(const KegnetClient *c);
/* True when nothing waits to be delivered: send queue, unacknowledged messages and outbox empty. */
bool kegnet_client_is_flushed(const KegnetClient *c);
/* Messages kept while disconnected (the outbox and what the last connection did not get acknowledged). */
size_t kegnet_client_outbox_size(const KegnetClient *c);
/* Messages written on this connection that the core has not acknowledged yet. */
size_t kegnet_client_unacked(const KegnetClient *c);
size_t kegnet_client_send_queue_bytes(const KegnetClient *c);
/* Whether a ControllerConnectedEvent with board_reset true for this controller is still queued
 * (outbox or unsent), so the producer's connect-time announcement must not repeat the reset. */
bool kegnet_client_reset_pending(const KegnetClient *c, const char *controller_name);
/* "host:port" as logged ("[v6]:port" for IPv6). */
const char *kegnet_client_address(const KegnetClient *c);
