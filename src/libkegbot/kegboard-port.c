/* Kegboard port candidates: see kegboard-port.h. */
#define LOG_COMPONENT "kegboard"

#include <errno.h>

#include "device-watch.h"
#include "kegboard-port.h"
#include "log.h"
#include "util-escape.h"

/* kegboard-serial-protocol.md section 1; product 0 = any product of the vendor. The udev rules
 * file nominates the same list (tests/integration/systemd/test_udev_rules.py checks both). */
static const struct { uint16_t vendor, product; } known_ids[] = {
        { 0x2341, 0 },          /* Arduino LLC */
        { 0x2a03, 0 },          /* Arduino SRL */
        { 0x0403, 0x6001 },     /* FTDI FT232R */
        { 0x0403, 0x6015 },     /* FTDI FT231X */
        { 0x1a86, 0x7523 },     /* CH340 */
        { 0x10c4, 0xea60 },     /* Silicon Labs CP210x */
        { 0x067b, 0x2303 },     /* Prolific PL2303 */
        { 0x16c0, 0x0483 },     /* Teensyduino */
        { 0x03eb, 0x0436 },     /* Atmel: Kegboard Pro Mini */
};

static bool usb_serial_name(const char *sysname) {
        const char *p = NULL;

        if (!sysname)
                return false;
        if (!(p = startswith(sysname, "ttyUSB")) && !(p = startswith(sysname, "ttyACM")))
                return false;
        /* The rule's KERNEL=="ttyUSB[0-9]*": a digit right after the prefix. */
        return *p >= '0' && *p <= '9';
}

bool kegboard_port_candidate(const KegboardPortInfo *p) {
        assert_return(p, false);

        if (!streq_ptr(p->dev.subsystem, "tty") || isempty(p->dev.devnode))
                return false;
        if (streq_ptr(p->kegbot_rfid, "1"))
                return false;
        if (streq_ptr(p->kegbot_kegboard, "1"))
                return true;
        if (!usb_serial_name(p->dev.sysname) || !p->dev.has_usb_ids)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(known_ids); i++)
                if (p->dev.vendor == known_ids[i].vendor &&
                    (known_ids[i].product == 0 || p->dev.product == known_ids[i].product))
                        return true;
        return false;
}

void kegboard_port_info(struct udev_device *d, KegboardPortInfo *ret) {
        assert_return(d && ret, );

        *ret = (KegboardPortInfo) {
                .kegbot_kegboard = udev_device_get_property_value(d, "KEGBOT_KEGBOARD"),
                .kegbot_rfid = udev_device_get_property_value(d, "KEGBOT_RFID"),
        };
        device_info_get(d, &ret->dev);
}

typedef struct FindState {
        struct udev_device *found;
} FindState;

static void find_each(struct udev_device *d, void *userdata) {
        FindState *s = userdata;
        KegboardPortInfo info;

        if (s->found)
                return;
        kegboard_port_info(d, &info);
        if (kegboard_port_candidate(&info))
                s->found = udev_device_ref(d);
}

int kegboard_port_find(struct udev *udev, char **ret_devnode, struct udev_device **ret_device) {
        static const char *const subsystems[] = { "tty", NULL };
        FindState s = {};
        char *node;
        int r;

        assert_return(udev && ret_devnode, -EINVAL);

        r = device_enumerate(udev, subsystems, find_each, &s);
        if (r < 0) {
                udev_device_unref(s.found);
                return r;
        }
        if (!s.found)
                return -ENOENT;
        node = strdup(udev_device_get_devnode(s.found));
        if (!node) {
                udev_device_unref(s.found);
                return -ENOMEM;
        }
        *ret_devnode = node;
        if (ret_device)
                *ret_device = s.found;
        else
                udev_device_unref(s.found);
        return 0;
}

void kegboard_port_log_identity(struct udev_device *d) {
        _cleanup_(freep) char *node = NULL;
        char text[512];
        UsbIdentity id;

        assert_return(d, );

        usb_identity_get(d, &id);
        node = escape_for_log(udev_device_get_devnode(d) ?: udev_device_get_sysname(d));
        (void) usb_identity_format(&id, text, sizeof text);
        log_info("Kegboard port %s: %s", node ?: "?", *text ? text : "no USB identity (not a USB device)");
}

int kegboard_port_resolve(const char *configured, char **ret) {
        _cleanup_(udev_unrefp) struct udev *udev = NULL;
        _cleanup_(udev_device_unrefp) struct udev_device *d = NULL;
        int r;

        assert_return(ret, -EINVAL);

        if (!isempty(configured)) {
                char *s = strdup(configured);
                if (!s)
                        return log_error_errno(-ENOMEM, "%m");
                *ret = s;
                return 0;
        }

        udev = udev_new();
        if (!udev)
                return log_error_errno(errno > 0 ? -errno : -ENOMEM, "Cannot use udev: %m");
        r = kegboard_port_find(udev, ret, &d);
        if (r == -ENOENT) {
                log_error("No Kegboard found: no serial port matches the Kegboard udev rules "
                          "(known USB ids or KEGBOT_KEGBOARD=1); use --kegboard_device");
                return r;
        }
        if (r < 0)
                return log_error_errno(r, "Cannot enumerate serial ports through udev: %m");
        kegboard_port_log_identity(d);
        return 0;
}
