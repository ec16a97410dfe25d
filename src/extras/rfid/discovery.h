/* Which devices are RFID readers, and of which kind (rfid-readers.md sections 7.2 and 7.3). Pure:
 * decided on a snapshot of a udev device; discovery-udev.c takes the snapshot and runs the monitor. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "device-watch.h"
#include "macro.h"

typedef enum RfidBackend {
        RFID_BACKEND_AUTO,
        RFID_BACKEND_PHIDGET,
        RFID_BACKEND_ID12,
        RFID_BACKEND_KEYBOARD,
        RFID_BACKEND_PHIDGET22,
        _RFID_BACKEND_MAX,
        _RFID_BACKEND_INVALID = -EINVAL,
} RfidBackend;

const char *rfid_backend_to_string(RfidBackend b);
RfidBackend rfid_backend_from_string(const char *s);

typedef struct RfidDeviceSnapshot {
        DeviceInfo dev;                 /* USB ids: for hidraw, HID_ID of the hid parent as a last resort */
        const char *kegbot_rfid;        /* property KEGBOT_RFID, NULL if unset */
        const char *id_input_keyboard;  /* property ID_INPUT_KEYBOARD */
} RfidDeviceSnapshot;

typedef enum RfidVerdict {
        RFID_CANDIDATE,                 /* *ret_backend says which */
        RFID_NOT_SILENT,                /* not a reader; nothing to say */
        RFID_NOT_DEBUG,                 /* not a reader; the reason is worth a DEBUG line */
        RFID_NOT_INFO,                  /* not a reader; the reason is worth an INFO line */
} RfidVerdict;

/* Discovery mode: is the device a reader? 'only' is --rfid_backend (AUTO: every kind). The reason
 * (static text) is set for every verdict but RFID_CANDIDATE. */
RfidVerdict rfid_candidate(const RfidDeviceSnapshot *d, RfidBackend only, RfidBackend *ret_backend,
                           const char **ret_reason);

/* Instance mode with --rfid_backend=auto: the backend for a node udev knows, from its subsystem
 * (hidraw, tty, input event*), or _RFID_BACKEND_INVALID. */
RfidBackend rfid_backend_for_subsystem(const char *subsystem, const char *sysname);
