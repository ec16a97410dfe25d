/* kegnet message codec: typed messages <-> compact JSON frames ended by "\n\n", the incremental
 * frame splitter with the 64 KiB limit, and the core's inbound whitelist (spec/kegnet-protocol.md),
 * plus the connection messages of this project (Hello, Welcome, Ack, Refused: README, "kegnet:
 * delivery and connection slots"). No sockets, no clock: timestamps travel inside the messages and
 * are supplied by the caller. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util-strbuf.h"

#define KEGNET_DEFAULT_PORT 9805
#define KEGNET_DEFAULT_ADDR "127.0.0.1:9805"
#define KEGNET_MAX_FRAME (64U * 1024U)        /* payload bytes, the "\n\n" terminator not counted */
#define KEGNET_ALL_TAPS "__all_taps__"

typedef enum KegnetKind {
        KEGNET_UNKNOWN = 0,     /* any other event name; KegnetMessage.event_name keeps it */
        /* client -> core (the inbound whitelist) */
        KEGNET_METER_UPDATE,
        KEGNET_THERMO_EVENT,
        KEGNET_TOKEN_AUTH_EVENT,
        KEGNET_FLOW_REQUEST,
        KEGNET_CONTROLLER_CONNECTED_EVENT,
        /* core -> clients */
        KEGNET_FLOW_UPDATE,
        KEGNET_DRINK_CREATED_EVENT,
        KEGNET_SET_RELAY_OUTPUT_EVENT,
        /* connection control: client -> core */
        KEGNET_HELLO,
        /* connection control: core -> one client */
        KEGNET_WELCOME,
        KEGNET_ACK,
        KEGNET_REFUSED,
        _KEGNET_KIND_MAX,
} KegnetKind;

typedef enum KegnetTokenStatus {
        KEGNET_TOKEN_ADDED,
        KEGNET_TOKEN_REMOVED,
        _KEGNET_TOKEN_STATUS_MAX,
} KegnetTokenStatus;

typedef enum KegnetFlowRequestType {
        KEGNET_REQUEST_START_FLOW,
        KEGNET_REQUEST_STOP_FLOW,
        KEGNET_REQUEST_REPORT_STATUS,
        _KEGNET_REQUEST_MAX,
} KegnetFlowRequestType;

typedef enum KegnetFlowState {
        KEGNET_FLOW_ACTIVE,
        KEGNET_FLOW_IDLE,
        KEGNET_FLOW_COMPLETED,
        _KEGNET_FLOW_STATE_MAX,
} KegnetFlowState;

typedef enum KegnetOutputMode {
        KEGNET_OUTPUT_ENABLED,
        KEGNET_OUTPUT_DISABLED,
        _KEGNET_OUTPUT_MODE_MAX,
} KegnetOutputMode;

/* What a client announces in its Hello. A role this version does not know (a later protocol's)
 * parses as KEGNET_ROLE_OTHER, which the core treats as a listener. */
typedef enum KegnetRole {
        KEGNET_ROLE_LISTENER,
        KEGNET_ROLE_PRODUCER,
        KEGNET_ROLE_OTHER,
        _KEGNET_ROLE_MAX,
} KegnetRole;

/* Sequence numbers of a producer's frames (Hello.seq, Welcome.acked, Ack.acked). */
#define KEGNET_SEQ_MAX ((uint64_t) INT64_MAX)

/* Timestamps are wall-clock microseconds since the Unix epoch (CLOCK_REALTIME, as sd-event's
 * now(CLOCK_REALTIME)). Sent as RFC 3339 UTC whole seconds ("2026-11-26T12:00:00Z"), see
 * util-time.h. */
typedef uint64_t kegnet_usec_t;

/* Strings are borrowed: a sender points them at its own storage; in a parsed message they point
 * into the parsed document and live until kegnet_message_done(). NULL encodes as JSON null. */

typedef struct KegnetMeterUpdate {
        const char *meter_name;         /* required */
        uint32_t reading;               /* absolute tick counter */
} KegnetMeterUpdate;

typedef struct KegnetThermoEvent {
        const char *sensor_name;        /* required */
        double sensor_value;            /* degrees Celsius, finite */
} KegnetThermoEvent;

typedef struct KegnetTokenAuthEvent {
        const char *meter_name;         /* NULL, "" or KEGNET_ALL_TAPS = all taps */
        const char *auth_device_name;   /* required */
        const char *token_value;        /* required */
        KegnetTokenStatus status;
} KegnetTokenAuthEvent;

typedef struct KegnetFlowRequest {
        const char *meter_name;         /* required */
        KegnetFlowRequestType request;
} KegnetFlowRequest;

typedef struct KegnetControllerConnectedEvent {
        const char *controller_name;    /* required */
        const char *serial_number;      /* NULL = null */
        bool has_firmware_version;
        uint32_t firmware_version;      /* 0..INT32_MAX on the wire */
        bool has_uptime_ms;
        uint64_t uptime_ms;             /* 0..INT64_MAX on the wire */
        bool board_reset;               /* null/absent on input = false; always written as a bool */
        const char *device;             /* NULL = null */
} KegnetControllerConnectedEvent;

typedef struct KegnetFlowUpdate {
        int64_t flow_id;                /* >= 0 */
        const char *meter_name;         /* required */
        KegnetFlowState state;
        const char *username;           /* NULL = anonymous */
        kegnet_usec_t start_time;
        kegnet_usec_t last_activity_time;
        uint64_t ticks;                 /* 0..INT64_MAX */
        bool has_volume_ml;             /* false = null (meter without a known tap) */
        double volume_ml;
} KegnetFlowUpdate;

typedef struct KegnetDrinkCreatedEvent {
        int64_t flow_id;                /* >= 0 */
        bool has_drink_id;              /* false = null */
        int64_t drink_id;               /* >= 0 */
        const char *meter_name;         /* required */
        kegnet_usec_t start_time;
        kegnet_usec_t end_time;
        const char *username;           /* NULL = anonymous */
        /* ticks and uuid are required of our senders; pycore 1.0 sent neither, so a receiver
         * takes their absence (has_ticks false, uuid NULL). */
        bool has_ticks;
        uint64_t ticks;                 /* 0..INT64_MAX */
        bool has_volume_ml;             /* false = null */
        double volume_ml;
        const char *uuid;
} KegnetDrinkCreatedEvent;

typedef struct KegnetSetRelayOutputEvent {
        const char *output_name;        /* required, "<controller>.<port>" */
        KegnetOutputMode output_mode;
} KegnetSetRelayOutputEvent;

/* The core -> client broadcasts, one bit per kind, for the "events" a client asks for in its
 * Hello (kegnet subscriptions: README, "kegnet: roles and subscriptions"). */
#define KEGNET_EVENT_BIT(kind) (1U << (kind))
#define KEGNET_EVENTS_BROADCAST                                                 \
        (KEGNET_EVENT_BIT(KEGNET_FLOW_UPDATE) | KEGNET_EVENT_BIT(KEGNET_DRINK_CREATED_EVENT) | \
         KEGNET_EVENT_BIT(KEGNET_SET_RELAY_OUTPUT_EVENT))

/* Client -> core, the first frame of a client of this project. The frames that follow a producer's
 * Welcome are numbered Welcome.acked + 1, + 2, ...; 'seq' is the number of the oldest frame the
 * client still holds (its next one if it holds none). */
typedef struct KegnetHello {
        KegnetRole role;                /* required; written as "listener" / "producer" */
        const char *role_name;          /* KEGNET_ROLE_OTHER: the role as it came on the wire */
        const char *name;               /* the program, for the core's log; NULL = null */
        const char *session;            /* the producer's session (random, per process); NULL = null */
        bool has_seq;
        uint64_t seq;                   /* 0..KEGNET_SEQ_MAX */
        /* "events": the broadcasts the client wants, a list of event names (KEGNET_EVENT_BIT()s
         * of KEGNET_EVENTS_BROADCAST; names this version does not know are ignored). Absent or
         * null (has_events false): every broadcast, as for a client that says no Hello. */
        bool has_events;
        unsigned events;
} KegnetHello;

/* Core -> the client that said Hello: the connection has a slot. */
typedef struct KegnetWelcome {
        KegnetRole role;                /* the role granted: a producer that may not produce gets "listener" */
        const char *role_name;          /* KEGNET_ROLE_OTHER: the role as it came on the wire */
        bool has_acked;                 /* false (null) unless the role is producer with a session */
        uint64_t acked;                 /* every frame of the session up to this one is handled */
        const char *reason;             /* why the role asked for was not granted; NULL = null */
} KegnetWelcome;

/* Core -> a producer: every frame of its session up to 'acked' is handled. */
typedef struct KegnetAck {
        uint64_t acked;
} KegnetAck;

/* Core -> a connection it closes at once (no slot for it). */
typedef struct KegnetRefused {
        const char *reason;             /* required */
} KegnetRefused;

#define KEGNET_FAST_TEXT_MAX 64

typedef struct KegnetMessage {
        KegnetKind kind;
        /* The wire event name. Set by the parser whenever the frame had a string "event" (also for
         * KEGNET_UNKNOWN and when the data was bad); ignored by the encoder (the kind decides). */
        const char *event_name;
        union {
                KegnetMeterUpdate meter_update;
                KegnetThermoEvent thermo_event;
                KegnetTokenAuthEvent token_auth_event;
                KegnetFlowRequest flow_request;
                KegnetControllerConnectedEvent controller_connected_event;
                KegnetFlowUpdate flow_update;
                KegnetDrinkCreatedEvent drink_created_event;
                KegnetSetRelayOutputEvent set_relay_output_event;
                KegnetHello hello;
                KegnetWelcome welcome;
                KegnetAck ack;
                KegnetRefused refused;
        };
        void *_doc;                     /* parser-owned document; released by kegnet_message_done() */
        /* The parser's own copy of a short string (the meter name of a MeterUpdate as this
         * project's producers write it: decoded without jansson and without allocating). */
        char _text[KEGNET_FAST_TEXT_MAX];
} KegnetMessage;

#define KEGNET_MESSAGE_NULL ((KegnetMessage) { .kind = KEGNET_UNKNOWN })

/* Names on the wire. *_to_string() returns NULL for out-of-range values; *_from_string() returns
 * a negative errno (-EINVAL) for an unknown name (kind: KEGNET_UNKNOWN, never an error). */
const char *kegnet_kind_to_string(KegnetKind k);
KegnetKind kegnet_kind_from_string(const char *s);
const char *kegnet_token_status_to_string(KegnetTokenStatus s);
int kegnet_token_status_from_string(const char *s);
const char *kegnet_flow_request_type_to_string(KegnetFlowRequestType t);
int kegnet_flow_request_type_from_string(const char *s);
const char *kegnet_flow_state_to_string(KegnetFlowState s);
int kegnet_flow_state_from_string(const char *s);
const char *kegnet_output_mode_to_string(KegnetOutputMode m);
int kegnet_output_mode_from_string(const char *s);
/* KEGNET_ROLE_OTHER has no name of its own (NULL); from_string() never fails: unknown -> OTHER. */
const char *kegnet_role_to_string(KegnetRole r);
KegnetRole kegnet_role_from_string(const char *s);

/* Encodes one message as a complete frame (compact JSON, every field in the spec's order, unset
 * ones as null, then "\n\n"). *ret is NUL-terminated and malloc'ed; *ret_size excludes the NUL.
 * -EINVAL: KEGNET_UNKNOWN kind, a required string NULL, a string not valid UTF-8, a non-finite
 * float, an enum, integer or timestamp out of range. -E2BIG: the payload would exceed
 * KEGNET_MAX_FRAME. */
int kegnet_message_encode(const KegnetMessage *m, char **ret, size_t *ret_size);
/* The same into a buffer the caller keeps (its content replaced, its memory reused: no allocation
 * per message once it is big enough); on success buf->buf and buf->len are the frame. On error the
 * buffer is left empty. */
int kegnet_message_encode_in(const KegnetMessage *m, StrBuf *buf);

/* Decodes one frame (without its terminator; it need not be NUL-terminated). *ret is always
 * initialised and must be released with kegnet_message_done(), whatever the result. A MeterUpdate
 * or an Ack exactly as kegnet_message_encode() writes it (the hot paths), with a meter name of
 * printable ASCII shorter than KEGNET_FAST_TEXT_MAX, is decoded without allocating (its strings then
 * live in *ret: do not move it before kegnet_message_done()); every other frame goes through
 * jansson, with the same result.
 *   0          ok; ret->kind may be KEGNET_UNKNOWN (ret->event_name says which), data not checked
 *   -ENODATA   empty or whitespace-only frame: ignore silently
 *   -EBADMSG   not JSON, not an object, or no string "event" (ret->event_name NULL)
 *   -EINVAL    known event whose "data" is not an object, or a required field missing/null/of the
 *              wrong type/out of range (ret->kind and ret->event_name are set, fields are not)
 *   -ENOMEM
 * On error, if ret_error is non-NULL it receives a malloc'ed human-readable reason (caller frees). */
int kegnet_message_parse(const void *frame, size_t size, KegnetMessage *ret, char **ret_error);

/* Releases what the parser holds and resets *m to KEGNET_MESSAGE_NULL. Safe on a zeroed or
 * sender-built message (it frees nothing the sender owns). */
void kegnet_message_done(KegnetMessage *m);

/* The core's inbound whitelist: the five client -> core events (the producer messages). Hello is
 * no part of it: the server handles it itself. */
bool kegnet_kind_is_inbound(KegnetKind k);

typedef enum KegnetInboundVerdict {
        KEGNET_INBOUND_ACCEPT,          /* handle the message */
        KEGNET_INBOUND_IGNORE,          /* empty frame: nothing to log */
        KEGNET_INBOUND_DROP_DEBUG,      /* not whitelisted / unknown event: DEBUG log only */
        KEGNET_INBOUND_DROP_WARNING,    /* malformed frame or bad whitelisted message: WARNING */
} KegnetInboundVerdict;

/* What the core does with a frame, given kegnet_message_parse()'s result and message: a
 * non-whitelisted event is dropped quietly even when its data is malformed. */
KegnetInboundVerdict kegnet_inbound_verdict(int parse_result, const KegnetMessage *m);

/* kegnet address syntax: "host:port", "[v6]:port" or just "port" (host "127.0.0.1"). No name
 * resolution. *ret_host is malloc'ed, without brackets. -EINVAL on a bad port or an empty host. Port 0 is
 * accepted (a server may bind an ephemeral port); clients refuse it. */
int kegnet_address_parse(const char *s, char **ret_host, uint16_t *ret_port);

/* Incremental "\n\n" splitter, one per connection. Feed bytes in any chunking, then call
 * kegnet_splitter_next() until it returns 0. */
typedef struct KegnetSplitter {
        char *buf;
        size_t start;           /* first unconsumed byte */
        size_t size;            /* bytes held in buf */
        size_t allocated;
        size_t scanned;         /* bytes from start already known to hold no terminator */
        bool overflow;
} KegnetSplitter;

#define KEGNET_SPLITTER_INIT ((KegnetSplitter) {})

void kegnet_splitter_init(KegnetSplitter *s);
void kegnet_splitter_done(KegnetSplitter *s);
/* Appends bytes. -ENOMEM; -EMSGSIZE once the splitter has overflowed (the data is discarded). */
int kegnet_splitter_feed(KegnetSplitter *s, const void *data, size_t size);
/* 1: a frame: *ret_frame (NUL-terminated, valid until the next feed/next call) and *ret_size
 *    (terminator excluded). Frames that are empty or only JSON whitespace are skipped.
 * 0: no complete frame buffered.
 * -EMSGSIZE: more than KEGNET_MAX_FRAME bytes without a terminator; sticky: close the connection. */
int kegnet_splitter_next(KegnetSplitter *s, const char **ret_frame, size_t *ret_size);
/* Bytes buffered and not yet returned as frames. */
size_t kegnet_splitter_pending(const KegnetSplitter *s);
