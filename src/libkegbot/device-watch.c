/* udev enumeration, monitor and USB identity: see device-watch.h. */
#include <errno.h>
#include <stdio.h>

#include "device-watch.h"
#include "util-escape.h"
#include "util-hex.h"

struct DeviceWatch {
        struct udev *udev;
        struct udev_monitor *monitor;
        sd_event_source *source;
        const char *const *subsystems;
        DeviceWatchCallbacks callbacks;
        void *userdata;
        bool stopped;
};

DeviceAction device_action_from_string(const char *action) {
        if (streq_ptr(action, "add"))
                return DEVICE_ADD;
        if (streq_ptr(action, "change"))
                return DEVICE_CHANGE;
        if (streq_ptr(action, "remove"))
                return DEVICE_REMOVE;
        return DEVICE_OTHER;
}

int device_enumerate(struct udev *udev, const char *const *subsystems,
                     void (*each)(struct udev_device *d, void *userdata), void *userdata) {
        return device_enumerate_property(udev, subsystems, NULL, NULL, each, userdata);
}

int device_enumerate_property(struct udev *udev, const char *const *subsystems, const char *property,
                              const char *value, void (*each)(struct udev_device *d, void *userdata),
                              void *userdata) {
        struct udev_enumerate *e;
        struct udev_list_entry *entry;
        int r;

        assert_return(udev && subsystems && each, -EINVAL);
        assert_return(!property == !value, -EINVAL);

        e = udev_enumerate_new(udev);
        if (!e)
                return -ENOMEM;
        for (const char *const *s = subsystems; *s; s++) {
                r = udev_enumerate_add_match_subsystem(e, *s);
                if (r < 0)
                        goto finish;
        }
        if (property) {
                r = udev_enumerate_add_match_property(e, property, value);
                if (r < 0)
                        goto finish;
        }
        r = udev_enumerate_scan_devices(e);
        if (r < 0)
                goto finish;

        udev_list_entry_foreach(entry, udev_enumerate_get_list_entry(e)) {
                _cleanup_(udev_device_unrefp) struct udev_device *d =
                        udev_device_new_from_syspath(udev, udev_list_entry_get_name(entry));
                /* Gone since the scan: its remove event is on its way. */
                if (d)
                        each(d, userdata);
        }
        r = 0;
finish:
        udev_enumerate_unref(e);
        return r;
}

static void deliver_add(struct udev_device *d, void *userdata) {
        DeviceWatch *w = userdata;

        if (!w->stopped)
                w->callbacks.event(w, DEVICE_ADD, d, w->userdata);
}

int device_watch_enumerate(DeviceWatch *w) {
        assert_return(w, -EINVAL);

        return device_enumerate(w->udev, w->subsystems, deliver_add, w);
}

struct udev *device_watch_udev(DeviceWatch *w) {
        return w ? w->udev : NULL;
}

void device_watch_stop(DeviceWatch *w) {
        if (!w)
                return;
        w->stopped = true;
        (void) sd_event_source_set_enabled(w->source, SD_EVENT_OFF);
}

static int on_monitor(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        DeviceWatch *w = userdata;

        while (!w->stopped) {
                _cleanup_(udev_device_unrefp) struct udev_device *d = NULL;

                errno = 0;
                d = udev_monitor_receive_device(w->monitor);
                if (!d) {
                        if (errno == ENOBUFS) {
                                if (w->callbacks.overflow)
                                        w->callbacks.overflow(w, w->userdata);
                                continue;
                        }
                        /* EAGAIN: drained. Anything else (a message not for us, a malformed one)
                         * is dropped by libudev; try the next one while data is there. */
                        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == 0)
                                return 0;
                        if (errno == EINTR)
                                continue;
                        return 0;
                }
                w->callbacks.event(w, device_action_from_string(udev_device_get_action(d)), d, w->userdata);
        }
        return 0;
}

int device_watch_new(DeviceWatch **ret, sd_event *event, const char *const *subsystems,
                     const DeviceWatchCallbacks *callbacks, void *userdata) {
        _cleanup_(device_watch_freep) DeviceWatch *w = NULL;
        int r;

        assert_return(ret && event && subsystems && callbacks && callbacks->event, -EINVAL);

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->subsystems = subsystems;
        w->callbacks = *callbacks;
        w->userdata = userdata;

        w->udev = udev_new();
        if (!w->udev)
                return errno > 0 ? -errno : -ENOMEM;
        w->monitor = udev_monitor_new_from_netlink(w->udev, "udev");
        if (!w->monitor)
                return errno > 0 ? -errno : -ENOMEM;
        for (const char *const *s = subsystems; *s; s++) {
                r = udev_monitor_filter_add_match_subsystem_devtype(w->monitor, *s, NULL);
                if (r < 0)
                        return r;
        }
        r = udev_monitor_enable_receiving(w->monitor);
        if (r < 0)
                return r;
        r = sd_event_add_io(event, &w->source, udev_monitor_get_fd(w->monitor), EPOLLIN, on_monitor, w);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(w);
        return 0;
}

DeviceWatch *device_watch_free(DeviceWatch *w) {
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->source);
        udev_monitor_unref(w->monitor);
        udev_unref(w->udev);
        free(w);
        return NULL;
}

int parse_usb_id(const char *s, uint16_t *ret) {
        unsigned v = 0;
        size_t n;

        assert_return(ret, -EINVAL);
        if (!s)
                return -EINVAL;
        n = strlen(s);
        if (n < 1 || n > 4)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int x = unhexchar(s[i]);
                if (x < 0)
                        return -EINVAL;
                v = v << 4 | (unsigned) x;
        }
        *ret = (uint16_t) v;
        return 0;
}

static const char *nonempty(const char *s) {
        return isempty(s) ? NULL : s;
}

void usb_identity_get(struct udev_device *d, UsbIdentity *ret) {
        struct udev_device *usb;
        uint16_t v, p, bcd;

        assert_return(ret, );
        *ret = (UsbIdentity) {};
        assert_return(d, );

        /* Borrowed: the parent lives as long as the child. */
        usb = udev_device_get_parent_with_subsystem_devtype(d, "usb", "usb_device");
        if (usb) {
                if (parse_usb_id(udev_device_get_sysattr_value(usb, "idVendor"), &v) >= 0 &&
                    parse_usb_id(udev_device_get_sysattr_value(usb, "idProduct"), &p) >= 0) {
                        ret->has_ids = true;
                        ret->vendor = v;
                        ret->product = p;
                }
                if (parse_usb_id(udev_device_get_sysattr_value(usb, "bcdDevice"), &bcd) >= 0) {
                        ret->has_bcd = true;
                        ret->bcd = bcd;
                }
                ret->manufacturer = nonempty(udev_device_get_sysattr_value(usb, "manufacturer"));
                ret->model = nonempty(udev_device_get_sysattr_value(usb, "product"));
                ret->serial = nonempty(udev_device_get_sysattr_value(usb, "serial"));
        }

        if (!ret->has_ids &&
            parse_usb_id(udev_device_get_property_value(d, "ID_VENDOR_ID"), &v) >= 0 &&
            parse_usb_id(udev_device_get_property_value(d, "ID_MODEL_ID"), &p) >= 0) {
                ret->has_ids = true;
                ret->vendor = v;
                ret->product = p;
        }
        if (!ret->has_bcd && parse_usb_id(udev_device_get_property_value(d, "ID_REVISION"), &bcd) >= 0) {
                ret->has_bcd = true;
                ret->bcd = bcd;
        }
        if (!ret->manufacturer)
                ret->manufacturer = nonempty(udev_device_get_property_value(d, "ID_VENDOR"));
        if (!ret->model)
                ret->model = nonempty(udev_device_get_property_value(d, "ID_MODEL"));
        if (!ret->serial)
                ret->serial = nonempty(udev_device_get_property_value(d, "ID_SERIAL_SHORT"));
}

void device_info_get(struct udev_device *d, DeviceInfo *ret) {
        UsbIdentity usb;

        assert_return(d && ret, );

        usb_identity_get(d, &usb);
        *ret = (DeviceInfo) {
                .subsystem = udev_device_get_subsystem(d),
                .sysname = udev_device_get_sysname(d),
                .devnode = udev_device_get_devnode(d),
                .has_usb_ids = usb.has_ids,
                .vendor = usb.vendor,
                .product = usb.product,
        };
}

char *usb_identity_format(const UsbIdentity *id, char *buf, size_t size) {
        _cleanup_(freep) char *manufacturer = NULL, *model = NULL, *serial = NULL;
        size_t len = 0;

        assert_return(id && buf && size > 0, buf);

        buf[0] = '\0';
#define APPEND(...) do {                                                                        \
                int _n = snprintf(buf + len, size - len, __VA_ARGS__);                          \
                if (_n < 0 || (size_t) _n >= size - len)                                        \
                        return buf;                                                             \
                len += (size_t) _n;                                                             \
        } while (false)

        if (id->manufacturer && (manufacturer = escape_for_log(id->manufacturer)))
                APPEND("%s", manufacturer);
        if (id->model && (model = escape_for_log(id->model)))
                APPEND("%s%s", len ? " " : "", model);
        if (id->has_ids)
                APPEND("%s(%04x:%04x)", len ? " " : "", id->vendor, id->product);
        if (id->serial && (serial = escape_for_log(id->serial)))
                APPEND("%sserial %s", len ? ", " : "", serial);
#undef APPEND
        return buf;
}
