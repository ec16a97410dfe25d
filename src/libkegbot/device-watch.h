/* Devices as udev sees them, for the programs that find their hardware themselves (kegboard_daemon,
 * the Kegboard tools, rfid_daemon): enumeration of subsystems, a udev monitor on the sd-event loop
 * (hotplug without polling), and the USB identity of a device (ids, firmware, names, serial) from
 * its nearest USB ancestor or its udev properties. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <libudev.h>
#include <systemd/sd-event.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct udev *, udev_unref);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct udev_device *, udev_device_unref);

typedef enum DeviceAction {
        DEVICE_ADD,
        DEVICE_CHANGE,
        DEVICE_REMOVE,
        DEVICE_OTHER,           /* bind, unbind, move, ...: ignored by everyone here */
} DeviceAction;

DeviceAction device_action_from_string(const char *action);

/* Calls each(d) for every device of the given subsystems (NULL-terminated), in udev's order,
 * initialized or not: a device udev has not finished may still lack properties, and the add event
 * that follows gives it a second chance. */
int device_enumerate(struct udev *udev, const char *const *subsystems,
                     void (*each)(struct udev_device *d, void *userdata), void *userdata);
/* The same, only for the devices whose udev property 'property' is 'value' (what a rule set with
 * ENV{property}="value"). */
int device_enumerate_property(struct udev *udev, const char *const *subsystems, const char *property,
                              const char *value, void (*each)(struct udev_device *d, void *userdata),
                              void *userdata);

typedef struct DeviceWatch DeviceWatch;

typedef struct DeviceWatchCallbacks {
        /* A uevent for a device of one of the subsystems. */
        void (*event)(DeviceWatch *w, DeviceAction action, struct udev_device *d, void *userdata);
        /* Events were lost (the monitor's socket overflowed): the owner enumerates again. */
        void (*overflow)(DeviceWatch *w, void *userdata);
} DeviceWatchCallbacks;

/* The udev monitor ("udev" netlink group, i.e. after udev has processed the event) with a filter
 * per subsystem, receiving and watched on 'event'. Create it before enumerating, so that nothing
 * plugged in during the scan is missed. Errors are returned (the caller logs and decides). */
int device_watch_new(DeviceWatch **ret, sd_event *event, const char *const *subsystems,
                     const DeviceWatchCallbacks *callbacks, void *userdata);
DeviceWatch *device_watch_free(DeviceWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(DeviceWatch *, device_watch_free);

struct udev *device_watch_udev(DeviceWatch *w);
/* No more events: the monitor is no longer watched (safe to call from the event callback; the
 * watch is freed later by its owner). */
void device_watch_stop(DeviceWatch *w);
/* device_enumerate() over the watch's subsystems, each device delivered as DEVICE_ADD. */
int device_watch_enumerate(DeviceWatch *w);

/* The part of a udev device that the candidate rules (Kegboard ports, RFID readers) look at.
 * Strings borrowed from the udev device. */
typedef struct DeviceInfo {
        const char *subsystem;
        const char *sysname;            /* e.g. "ttyUSB0" */
        const char *devnode;            /* NULL: no device node */
        bool has_usb_ids;               /* usb_identity_get() */
        uint16_t vendor, product;
} DeviceInfo;

void device_info_get(struct udev_device *d, DeviceInfo *ret);

/* What a device's USB side says about it. The strings are borrowed from the udev device (valid as
 * long as it is referenced) and untrusted: escape them before logging. */
typedef struct UsbIdentity {
        bool has_ids;
        uint16_t vendor, product;
        bool has_bcd;
        uint16_t bcd;                   /* bcdDevice: the firmware/device release */
        const char *manufacturer;       /* NULL = unknown */
        const char *model;
        const char *serial;
} UsbIdentity;

/* From the nearest ancestor with subsystem usb / devtype usb_device (sysattrs idVendor, idProduct,
 * bcdDevice, manufacturer, product, serial), else the properties ID_VENDOR_ID, ID_MODEL_ID,
 * ID_REVISION, ID_VENDOR, ID_MODEL, ID_SERIAL_SHORT. */
void usb_identity_get(struct udev_device *d, UsbIdentity *ret);

/* "<vendor> <model> (vvvv:pppp), serial <s>", with what is known, escaped; "" when nothing is.
 * Returns buf. */
char *usb_identity_format(const UsbIdentity *id, char *buf, size_t size);

/* A 1..4 digit hexadecimal id as udev spells them ("06c2"); -EINVAL otherwise. */
int parse_usb_id(const char *s, uint16_t *ret);
