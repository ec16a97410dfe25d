/* The Kegboard Event Protocol (kegboard-event-protocol.md), version 1, as kegbot_core speaks it when it
 * acts as a virtual Kegboard v4: event payloads, the event file and state.json formats of a device's
 * spool, batch bodies with their age_ms, and the receiver's answers (status outcome, pairing, commands
 * and their validation). Pure: no I/O, no clock; the caller passes the clocks in. The backend that
 * spools, sends and acts is src/core/backend-event.c. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-id128.h>

#include "macro.h"

#define KBEVENT_VERSION 1
#define KBEVENT_BATCH_MAX_EVENTS 16U
#define KBEVENT_BATCH_MAX_BYTES 16000U
#define KBEVENT_ID_MAX ((UINT64_C(1) << 53) - 1)
#define KBEVENT_ID_BLOCK 1024U                  /* id_limit grows by this much */
#define KBEVENT_BOOT_ID_STRING_MAX 17           /* 16 lowercase hex digits + NUL */
#define KBEVENT_DEVICE_NAME_MAX 64
#define KBEVENT_TOKEN_MAX 512                   /* the bearer token */
#define KBEVENT_COMMAND_ID_MAX 128
#define KBEVENT_FAILURE_REASON_MAX 1024
#define KBEVENT_NUMBER_MAX 255                  /* meter and relay numbers */

typedef enum KbEventType {
        KBEVENT_POUR,
        KBEVENT_POUR_UPDATE,
        KBEVENT_TEMPERATURE,
        KBEVENT_TOKEN,
        KBEVENT_STATUS,
        KBEVENT_COMMAND_RESULT,
        KBEVENT_GRANT_END,
        _KBEVENT_TYPE_MAX,
        _KBEVENT_TYPE_INVALID = -EINVAL,
} KbEventType;

const char *kbevent_type_to_string(KbEventType t);
KbEventType kbevent_type_from_string(const char *s);
/* Durable types live in the spool; status is volatile, pour_update ephemeral (section 5.0). */
bool kbevent_type_is_durable(KbEventType t);

/* 1-64 characters of [A-Za-z0-9_-], the first alphanumeric (section 2.1). */
bool kbevent_device_name_is_valid(const char *s);
/* The bearer token a receiver hands out: 1-512 printable ASCII characters without spaces. */
bool kbevent_token_is_valid(const char *s);
/* "<C>.flow<N>" -> N (0..255, no leading zeros) and C copied to device (a valid device name), or
 * -EINVAL: the meter is unmappable. 'prefix' is "flow" for meters, "relay" for relays. */
int kbevent_parse_port(const char *name, const char *prefix, char device[static KBEVENT_DEVICE_NAME_MAX + 1],
                       unsigned *ret_number);

/* When an event happened (section 2.4): the kernel boot, CLOCK_BOOTTIME, the wall clock, and whether
 * the wall clock was synchronised then. The same struct is "now" when a batch is serialised. */
typedef struct KbEventClock {
        sd_id128_t kernel_boot_id;
        uint64_t boottime_ns;
        uint64_t unix_ms;
        bool clock_synced;
} KbEventClock;

/* age_ms of an event created at 'created', serialised at 'now' (section 4.4). *ret_unknown (optional)
 * is set when the event predates this kernel boot and a clock was not synchronised: the result is the
 * time since this boot, a lower bound. */
uint64_t kbevent_age_ms(const KbEventClock *created, const KbEventClock *now, bool *ret_unknown);

/* One event of a device: its payload ("data") is kept as the compact JSON text that goes on the wire,
 * so that a resent event is byte for byte what was sent before. */
typedef struct KbEvent {
        uint64_t id;                    /* 0 = not numbered yet */
        KbEventType type;
        KbEventClock created;
        char *data;                     /* the payload object, compact JSON */
        char *drink;                    /* pours: the "drink" member (D-Bus and announcements), or NULL */
        char *failure;                  /* quarantined: the "failure" member, or NULL */
} KbEvent;

KbEvent *kbevent_free(KbEvent *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(KbEvent *, kbevent_free);
/* A new event owning a copy of 'data'. */
int kbevent_new(KbEvent **ret, KbEventType type, const KbEventClock *created, const char *data);

/* ------------------------------------------------------------------ payloads (section 5) */

typedef struct KbPour {
        unsigned meter_number;
        const char *pour_id;            /* the drink UUID */
        double volume_ml;
        uint64_t duration_ms;
        const char *auth_device;        /* NULL = omitted */
        const char *auth_token;         /* NULL = omitted */
        const char *grant_id;           /* NULL = a guest pour */
        uint64_t ticks;
        double ml_per_tick;
        const char *tick_series;        /* NULL or "" = omitted */
} KbPour;

typedef struct KbStatusMeter {
        unsigned meter_number;
        uint64_t total_ticks;
        double ml_per_tick;
} KbStatusMeter;

typedef struct KbStatus {
        bool boot;
        const char *fw_version;
        uint64_t uptime_ms;
        uint64_t events_dropped;
        uint64_t heartbeat_ms;
        uint64_t pour_update_ms;
        uint64_t queue_capacity;
        const KbStatusMeter *meters;    /* ascending by meter_number */
        size_t n_meters;
        const unsigned *relays;         /* ascending, unique */
        size_t n_relays;
} KbStatus;

typedef enum KbGrantEndReason {
        KBEVENT_END_MAX_VOLUME,
        KBEVENT_END_MAX_DURATION,
        KBEVENT_END_MAX_IDLE,
        KBEVENT_END_DETACH,
        KBEVENT_END_COMMAND,
        KBEVENT_END_REPLACED,
        _KBEVENT_END_MAX,
} KbGrantEndReason;

const char *kbevent_grant_end_reason_to_string(KbGrantEndReason r);

typedef struct KbGrantEnd {
        const unsigned *meter_numbers;  /* ascending, at least one */
        size_t n_meter_numbers;
        KbGrantEndReason reason;
        const char *grant_id;
        double volume_ml;
        uint64_t duration_ms;
        const char *auth_device;        /* NULL = omitted */
        const char *auth_token;
} KbGrantEnd;

/* Each writes the payload as compact JSON (*ret malloc'ed) or fails with -EINVAL when a field breaks
 * a limit of section 4.3 (the event is then not created). Volumes and temperatures are rounded to 3
 * decimals; ml_per_tick is written at full precision. */
int kbevent_pour_data(const KbPour *p, char **ret);
int kbevent_pour_update_data(unsigned meter_number, const char *pour_id, double volume_ml, uint64_t duration_ms,
                             char **ret);
int kbevent_temperature_data(const char *sensor, double temp_c, char **ret);
int kbevent_token_data(const char *auth_device, const char *token, bool attached, char **ret);
int kbevent_status_data(const KbStatus *s, char **ret);
/* 'result' is "ok", "error" or "unsupported"; message NULL or "" = omitted, longer than 256 bytes cut. */
int kbevent_command_result_data(const char *command, const char *result, const char *message, char **ret);
int kbevent_grant_end_data(const KbGrantEnd *g, char **ret);

/* ------------------------------------------------------------------ files (sections 2.3, 2.4) */

typedef struct KbMeterTotal {
        unsigned meter_number;
        uint64_t total_ticks;
} KbMeterTotal;

typedef struct KbDeviceState {
        char device[KBEVENT_DEVICE_NAME_MAX + 1];
        char boot_id[KBEVENT_BOOT_ID_STRING_MAX];
        uint64_t id_limit;
        uint64_t events_dropped;
        KbMeterTotal *meters;           /* ascending, owned */
        size_t n_meters;
} KbDeviceState;

void kbevent_state_done(KbDeviceState *s);
/* One line, with its newline. */
int kbevent_state_format(const KbDeviceState *s, char **ret, size_t *ret_len);
/* -EBADMSG for anything but a well-formed state.json. */
int kbevent_state_parse(const char *text, size_t len, KbDeviceState *ret);
/* 16 lowercase hex digits of the 8 bytes given. */
void kbevent_boot_id_format(const uint8_t bytes[static 8], char ret[static KBEVENT_BOOT_ID_STRING_MAX]);
bool kbevent_boot_id_is_valid(const char *s);

/* The event file of section 2.4, one line with its newline. boot_id NULL and e->id 0 for an unmapped
 * pour. */
int kbevent_file_format(const KbEvent *e, const char *boot_id, char **ret, size_t *ret_len);
/* Parses an event file (ret_boot_id: NULL or KBEVENT_BOOT_ID_STRING_MAX bytes): -EBADMSG when it does not parse or lacks boot_id, id, type, created or data
 * (require_id false: unmapped pours, which have neither boot_id nor id). ret_boot_id may be NULL. */
int kbevent_file_parse(const char *text, size_t len, bool require_id, KbEvent **ret,
                       char *ret_boot_id);
/* The "failure" member of a quarantined event: time (RFC 3339), http_status, reason (cut to 1024
 * bytes, invalid UTF-8 escaped). */
int kbevent_failure_format(uint64_t realtime_usec, long http_status, const char *reason, char **ret);

/* ------------------------------------------------------------------ batches (sections 4, 9.2) */

typedef struct KbBatchContext {
        const char *device;
        const char *boot_id;
        uint64_t sent_uptime_ms;
        KbEventClock now;
        unsigned max_events;            /* 1..16 */
        size_t max_bytes;               /* 0 = KBEVENT_BATCH_MAX_BYTES */
} KbBatchContext;

/* Called for an event whose age is a lower bound (kbevent_age_ms()), to log it. */
typedef void (*KbAgeUnknownFunc)(const KbEvent *e, uint64_t age_ms, void *userdata);

typedef struct KbBatch {
        char *body;
        size_t size;
        size_t n_queued;                /* events taken from the head of the queue, in order */
        size_t n_extra;                 /* ephemeral events taken after them */
} KbBatch;

void kbevent_batch_done(KbBatch *b);

/* Builds the body of the next batch: queue[0..n_queue) (ascending ids, all numbered) from the head
 * without skipping, while fewer than max_events and at most max_bytes; then, only if every queued
 * event was taken, as many of extra[0..n_extra) as still fit (ephemeral events, numbered by the
 * caller above every queued id). -ENODATA when there is nothing to send. A single event always goes,
 * whatever its size (section 9.2, rule 3: the receiver answers 413 if it is too large). */
int kbevent_batch_build(const KbBatchContext *ctx, KbEvent *const *queue, size_t n_queue, KbEvent *const *extra,
                        size_t n_extra, KbAgeUnknownFunc age_unknown, void *userdata, KbBatch *ret);

/* ------------------------------------------------------------------ answers (sections 6-8) */

typedef enum KbOutcome {
        KBEVENT_ACCEPTED,               /* 2xx with an empty body or a JSON object */
        KBEVENT_TRANSIENT,              /* keep, back off */
        KBEVENT_PAIRING,                /* 401 */
        KBEVENT_TOO_LARGE,              /* 413: split */
        KBEVENT_REJECTED,               /* 400, 409, 422, other 4xx: split, then quarantine */
        KBEVENT_ENDPOINT_ERROR,         /* 403, 404, 405, 410, 415, 3xx: keep, back off, ERROR */
} KbOutcome;

const char *kbevent_outcome_to_string(KbOutcome o);
/* status 0 = no answer (transport failure). A 2xx whose body is neither empty nor a JSON object is
 * transient (section 6.1). */
KbOutcome kbevent_classify(long status, const char *body, size_t len);

typedef enum KbPairingState {
        KBEVENT_PAIRING_PENDING,
        KBEVENT_PAIRING_ALLOWED,        /* with a valid token */
        KBEVENT_PAIRING_DENIED,
} KbPairingState;

/* The body of a 401 (section 7): anything unclear is pending; "allowed" without a valid token too.
 * *ret_token (malloc'ed) only for KBEVENT_PAIRING_ALLOWED. Never fails but for -ENOMEM. */
int kbevent_parse_pairing(const char *body, size_t len, KbPairingState *ret_state, char **ret_token);

typedef struct KbCommand {
        char *id;                       /* 1-128 characters */
        char *type;                     /* NULL: missing or not a string (an unknown type) */
        json_t *data;                   /* NULL: absent; else owned (may be any JSON type) */
} KbCommand;

typedef struct KbCommandList {
        KbCommand *commands;
        size_t n;
        unsigned n_skipped;             /* elements that were not objects with a valid id */
        bool not_array;                 /* "commands" was present, not null and not an array */
} KbCommandList;

void kbevent_command_list_done(KbCommandList *l);
/* The commands of an accepted answer (section 6.1), in array order. -EBADMSG when the body is not
 * empty and not a JSON object (the answer is then not accepted at all). */
int kbevent_parse_commands(const char *body, size_t len, KbCommandList *ret);

typedef struct KbAuthorize {
        char *grant_id;
        unsigned meters[KBEVENT_NUMBER_MAX + 1];
        size_t n_meters;
        unsigned relays[KBEVENT_NUMBER_MAX + 1];
        size_t n_relays;
        double max_volume_ml;           /* 0 = none */
        uint64_t max_duration_ms;       /* 0 = none */
        uint64_t max_idle_ms;           /* 0 = none */
        char *auth_device;              /* NULL = absent */
        char *token;                    /* NULL = absent */
} KbAuthorize;

void kbevent_authorize_done(KbAuthorize *a);
/* The syntactic checks of section 6.3 in their order (meters and relays deduplicated and sorted;
 * whether they may be granted and the presentment are the caller's). On failure *ret_message is the
 * result message ("bad grant_id", ...), a static string, and -EINVAL is returned. */
int kbevent_parse_authorize(const json_t *data, KbAuthorize *ret, const char **ret_message);

/* deauthorize (section 6.6): *ret_all for "grant_ids" absent; else the ids (a NULL-terminated strv,
 * malloc'ed). -EINVAL with "bad grant_ids" for any other form. */
int kbevent_parse_deauthorize(const json_t *data, bool *ret_all, char ***ret_ids, const char **ret_message);
