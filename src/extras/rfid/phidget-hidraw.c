/* The PhidgetRFID 1023 over Linux hidraw (rfid-readers.md section 2): identity from the node or
 * udev, the output report length from the report descriptor, input reports into the parser and
 * presence module, and the shadow output state sent whole whenever it changes. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/hidraw.h>
#include <linux/input.h>

#include "device-watch.h"
#include "reader-internal.h"
#include "util-escape.h"
#include "util-io.h"

#define SILENCE_USEC (5 * USEC_PER_SEC)
#define RETRY_USEC USEC_PER_SEC
#define DESCRIPTOR_FILE_MAX 4096

/* Section 2.1: the first source that answers. 1 = found, 0 = none, negative = not a USB device. */
static int phidget_ids(Reader *r, struct udev_device *d, const UsbIdentity *usb, uint16_t *ret_vendor,
                       uint16_t *ret_product) {
        struct hidraw_devinfo info = {};
        struct udev_device *hid;

        if (ioctl(r->fd, HIDIOCGRAWINFO, &info) >= 0) {
                if (info.bustype != BUS_USB)
                        return -EPROTOTYPE;
                *ret_vendor = (uint16_t) info.vendor;
                *ret_product = (uint16_t) info.product;
                return 1;
        }
        log_debug_errno(-errno, "%s: HIDIOCGRAWINFO: %m; asking udev", r->node);

        if (usb->has_ids) {
                *ret_vendor = usb->vendor;
                *ret_product = usb->product;
                return 1;
        }
        hid = d ? udev_device_get_parent_with_subsystem_devtype(d, "hid", NULL) : NULL;
        if (hid && phidget_parse_hid_id(udev_device_get_property_value(hid, "HID_ID"), ret_vendor, ret_product) >= 0)
                return 1;
        return 0;
}

/* Section 2.2 step 3: the output report length; 8 when nothing usable is found. */
static size_t phidget_output_length(Reader *r, struct udev_device *d) {
        struct hidraw_report_descriptor desc = {};
        _cleanup_(freep) char *file = NULL, *data = NULL;
        const uint8_t *bytes = NULL;
        size_t n = 0, in = 0, out = 0;
        int size = 0;

        if (ioctl(r->fd, HIDIOCGRDESCSIZE, &size) >= 0 && size > 0 && size <= HID_MAX_DESCRIPTOR_SIZE) {
                desc.size = (uint32_t) size;
                if (ioctl(r->fd, HIDIOCGRDESC, &desc) >= 0) {
                        bytes = desc.value;
                        n = desc.size;
                }
        }
        if (!bytes && d) {
                /* A binary file with NUL bytes in it: read() it, it is no udev string attribute. */
                struct udev_device *hid = udev_device_get_parent_with_subsystem_devtype(d, "hid", NULL);
                if (hid && asprintf(&file, "%s/report_descriptor", udev_device_get_syspath(hid)) >= 0 &&
                    io_read_file(file, DESCRIPTOR_FILE_MAX, &data, &n) >= 0)
                        bytes = (const uint8_t *) data;
        }
        if (!bytes || phidget_descriptor_walk(bytes, n, &in, &out) < 0) {
                log_debug("%s: no usable report descriptor, assuming 8-byte output reports", r->node);
                return PHIDGET_REPORT_DEFAULT;
        }
        log_debug("%s: report descriptor: %zu-byte input, %zu-byte output reports", r->node, in, out);
        return out;
}

static int phidget_write(Reader *r, uint8_t state) {
        uint8_t buf[1 + PHIDGET_REPORT_MAX];
        size_t len = phidget_output_report(state, r->phidget.out_len, buf);
        ssize_t n;

        if (len == 0)
                return 0;
        n = write(r->fd, buf, len);
        if (n < 0)
                return -errno;
        if ((size_t) n != len)
                return -EMSGSIZE;
        return 0;
}

static int phidget_setup(Reader *r, struct udev_device *d, ReaderOpenError *err) {
        PhidgetReader *p = &r->phidget;
        _cleanup_(freep) char *serial = NULL;
        const char *serial_raw = NULL;
        uint16_t vendor = 0, product = 0;
        UsbIdentity usb = {};
        char fw[32] = "";
        int k;

        if (d)
                usb_identity_get(d, &usb);
        k = phidget_ids(r, d, &usb, &vendor, &product);
        if (k <= 0) {
                err->status = READER_UNUSABLE;
                err->error = -ENODEV;
                snprintf(err->reason, sizeof(err->reason), "%s",
                         k < 0 ? "not a USB device" : "cannot tell the USB vendor and product of the device");
                return -ENODEV;
        }
        k = phidget_model_from_ids(vendor, product, &p->model);
        if (k < 0) {
                err->status = READER_UNUSABLE;
                err->error = k;
                if (k == -EOPNOTSUPP)
                        snprintf(err->reason, sizeof(err->reason), "PhidgetRFID 1024 is not supported");
                else
                        snprintf(err->reason, sizeof(err->reason), "not a PhidgetRFID 1023 (USB id %04x:%04x)",
                                 vendor, product);
                return k;
        }

        p->firmware = usb.has_bcd ? phidget_firmware_from_bcd(usb.bcd) : 0;
        serial_raw = usb.serial;
        if (!serial_raw && d) {
                struct udev_device *hid = udev_device_get_parent_with_subsystem_devtype(d, "hid", NULL);
                serial_raw = hid ? udev_device_get_property_value(hid, "HID_UNIQ") : NULL;
                if (isempty(serial_raw))
                        serial_raw = NULL;
        }
        if (serial_raw && !(serial = escape_for_log(serial_raw))) {
                err->status = READER_OPEN_FAILED;
                err->error = -ENOMEM;
                return -ENOMEM;
        }

        p->out_len = phidget_output_length(r, d);
        p->writes = p->model == PHIDGET_MODEL_V2 && p->out_len > 0;
        if (p->model == PHIDGET_MODEL_V2 && p->out_len == 0)
                log_warning("%s: the reader declares no output report; antenna, LED and outputs cannot be switched",
                            r->node);
        if (p->model == PHIDGET_MODEL_V1) {
                if (r->settings.toggle_output)
                        log_debug("%s: PhidgetRFID v1 has no outputs; --toggle_output has no effect", r->node);
                /* Old v1 firmware wants one output report before it reports tags. */
                if (phidget_attach_action(p->model, p->firmware) == PHIDGET_ATTACH_ZERO_REPORT) {
                        k = phidget_write(r, 0);
                        if (k < 0)
                                log_debug_errno(k, "%s: start-up output report failed: %m", r->node);
                }
        }

        if (p->firmware)
                snprintf(fw, sizeof(fw), ", firmware %u", p->firmware);
        reader_set_description(r, "PhidgetRFID 1023 %04x:%04x%s%s%s", vendor, product,
                               serial ? ", serial " : "", serial ?: "", fw);
        if (!r->description) {
                err->status = READER_OPEN_FAILED;
                err->error = -ENOMEM;
                return -ENOMEM;
        }
        return 0;
}

static int on_silence(sd_event_source *s, uint64_t usec, void *userdata) {
        Reader *r = userdata;

        if (!r->phidget.silent) {
                log_warning("%s: reader stopped reporting", r->node);
                r->phidget.silent = true;
        }
        return 0;
}

static void phidget_report_seen(Reader *r) {
        PhidgetReader *p = &r->phidget;

        if (p->silent) {
                log_info("%s: reader reporting again", r->node);
                p->silent = false;
        }
        if (p->echo_seen)
                (void) reader_timer_set(r, &p->silence_timer, r->now + SILENCE_USEC, 100 * USEC_PER_MSEC,
                                        on_silence);
}

static void phidget_handle_echo(Reader *r, uint8_t state) {
        PhidgetReader *p = &r->phidget;

        p->echo_seen = true;
        if (!phidget_echo_trusted(p->model, p->firmware))
                return;
        if (!p->have_echo || p->echo != state)
                log_debug("%s: reader state 0x%02x", r->node, state);
        p->have_echo = true;
        p->echo = state;
}

static int phidget_input(Reader *r) {
        uint8_t buf[PHIDGET_REPORT_MAX];
        PhidgetReport rep;

        /* hidraw keeps report boundaries: one read, one report. */
        for (unsigned i = 0; i < 256 && r->open; i++) {
                ssize_t n = reader_read(r, buf, sizeof(buf));
                if (n <= 0)
                        return (int) n;

                phidget_report_parse(r->phidget.model, buf, (size_t) n, &rep);
                switch (rep.kind) {
                case PHIDGET_REPORT_TAG:
                        reader_token_read(r, rep.tag);
                        break;
                case PHIDGET_REPORT_ECHO:
                        phidget_handle_echo(r, rep.state);
                        break;
                case PHIDGET_REPORT_SHORT:
                        reader_bad(r, READER_BAD_SHORT_REPORT, "short_report: %zd bytes", n);
                        break;
                case PHIDGET_REPORT_UNKNOWN_TYPE:
                        reader_bad(r, READER_BAD_UNKNOWN_TYPE, "unknown_type: packet type 0x%02x", rep.type);
                        break;
                case PHIDGET_REPORT_IGNORED:
                        break;
                }
                phidget_report_seen(r);
        }
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Reader *r = userdata;

        /* Forget what was tried, so that settling writes the shadow state again. */
        r->phidget.have_sent = false;
        reader_after_event(r);
        return 0;
}

static int phidget_settle(Reader *r) {
        PhidgetReader *p = &r->phidget;
        uint8_t wanted;
        int k;

        if (!p->writes)
                return 0;
        wanted = phidget_wanted_state(presence_active(&r->presence), r->settings.toggle_output, p->stopping);
        /* One write per change, all bits combined. Unchanged: written already, or a failed write of it
         * is made again by the retry timer. */
        if (p->have_sent && wanted == p->sent)
                return 0;

        k = phidget_write(r, wanted);
        if (k >= 0) {
                p->sent = wanted;
                p->have_sent = true;
                (void) reader_timer_set(r, &p->retry_timer, 0, 0, on_retry);
                return 0;
        }
        if (p->stopping) {
                log_debug_errno(k, "%s: cannot switch the reader off: %m", r->node);
                return 0;
        }
        if (reader_errno_is_lost(k))
                return k;
        reader_bad(r, READER_BAD_WRITE_ERROR, "cannot write the output report: %s", strerror(-k));
        /* Remember what was wanted: the retry writes it, a change writes at once. */
        p->sent = wanted;
        p->have_sent = true;
        (void) reader_timer_set(r, &p->retry_timer, r->now + RETRY_USEC, 10 * USEC_PER_MSEC, on_retry);
        return 0;
}

const ReaderBackendOps reader_phidget_ops = {
        .open_flags = O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC,
        .setup = phidget_setup,
        .input = phidget_input,
        .settle = phidget_settle,
};
