/* One open RFID reader (rfid-readers.md sections 2 to 7): its device node, the backend's parser
 * and I/O wrapper, the presentation of the card on it, bad-input accounting, and the signal that
 * the device is gone. The owner (the Manager) turns the presentation changes into TokenAuthEvents. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <libudev.h>
#include <systemd/sd-event.h>

#include "discovery.h"
#include "macro.h"
#include "presence.h"

typedef struct Reader Reader;

typedef struct ReaderSettings {
        bool toggle_output;             /* --toggle_output */
        uint64_t tag_lost_usec;         /* --tag_lost_ms */
        uint64_t token_hold_usec;       /* --token_hold_ms */
        int id12_speed;                 /* --id12_speed */
} ReaderSettings;

typedef struct ReaderCallbacks {
        /* A presentation changed; events come in the order they must go out. */
        void (*token)(Reader *r, const PresenceEvent *ev, void *userdata);
        /* The device is gone (section 7.5). The reader is closed already (an open presentation got
         * its "removed" through token()); the owner frees it, from here if it likes. */
        void (*lost)(Reader *r, void *userdata);
} ReaderCallbacks;

typedef enum ReaderOpenStatus {
        READER_OPEN_FAILED,             /* cannot open or set up: .error */
        READER_UNUSABLE,                /* not a usable reader: .reason */
        READER_IN_USE,                  /* locked by another rfid_daemon */
} ReaderOpenStatus;

typedef struct ReaderOpenError {
        ReaderOpenStatus status;
        int error;                      /* negative errno */
        char reason[160];
} ReaderOpenError;

/* Opens 'node' with 'backend' (not AUTO), takes the lock, sets the reader up (the antenna write of
 * a v2 Phidget, termios, the grab) and starts reading. udev_device (optional) is the node's udev
 * device: USB ids, firmware and serial, the report descriptor's sysfs copy, the syspath that keys
 * it in discovery mode. On failure returns a negative errno and fills *ret_error. */
int reader_open(Reader **ret, sd_event *event, RfidBackend backend, const char *node,
                struct udev_device *udev_device, const ReaderSettings *settings,
                const ReaderCallbacks *callbacks, void *userdata, ReaderOpenError *ret_error);

/* Closes the reader: "removed" for an open presentation (through the token callback), a v2 Phidget
 * switched off when 'stopping' (an orderly stop), pending bad-input counts logged. Idempotent. */
void reader_close(Reader *r, bool stopping);
Reader *reader_free(Reader *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Reader *, reader_free);

const char *reader_node(const Reader *r);          /* as given, escaped for logs */
const char *reader_syspath(const Reader *r);       /* NULL without a udev device */
const char *reader_description(const Reader *r);   /* for the "attached" line */
RfidBackend reader_backend(const Reader *r);
bool reader_is_open(const Reader *r);
