/* Keyboard-wedge readers over evdev (rfid-readers.md section 4.1): identity and capability check
 * by ioctl where the node answers, the grab that keeps card numbers off the console, and records
 * (native struct input_event, possibly split over reads on stand-ins) into the decoder. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/input.h>

#include "reader-internal.h"
#include "util-escape.h"

#define KEY_BITS_LONGS ((KEY_MAX + 8 * sizeof(unsigned long)) / (8 * sizeof(unsigned long)))

static bool has_key(unsigned code, void *userdata) {
        const unsigned long *bits = userdata;
        const unsigned w = 8 * sizeof(unsigned long);

        return code <= KEY_MAX && (bits[code / w] >> (code % w)) & 1;
}

static int keyboard_setup(Reader *r, struct udev_device *d, ReaderOpenError *err) {
        unsigned long bits[KEY_BITS_LONGS] = {};
        _cleanup_(freep) char *name_escaped = NULL;
        struct input_id id = {};
        char name[256] = "";
        char ids[16] = "";

        keyboard_decoder_init(&r->keyboard.decoder);

        if (ioctl(r->fd, EVIOCGNAME(sizeof(name) - 1), name) >= 0 && name[0]) {
                name[sizeof(name) - 1] = '\0';
                name_escaped = escape_for_log(name);
        }
        if (ioctl(r->fd, EVIOCGID, &id) >= 0)
                snprintf(ids, sizeof(ids), "%04x:%04x", id.vendor, id.product);

        if (ioctl(r->fd, EVIOCGBIT(EV_KEY, sizeof(bits)), bits) < 0)
                log_debug_errno(-errno, "%s: cannot read the key map (%m); skipping the capability check", r->node);
        else if (!keyboard_capable(has_key, bits)) {
                err->status = READER_UNUSABLE;
                err->error = -ENODEV;
                snprintf(err->reason, sizeof(err->reason), "no Enter or digit keys: not a keyboard-wedge reader");
                return -ENODEV;
        }

        /* While grabbed, this device's keys reach the daemon only: not a console, a getty or a desktop. */
        if (ioctl(r->fd, EVIOCGRAB, (void *) 1) < 0)
                log_warning_errno(-errno, "%s: cannot grab the keyboard: %m; typed card numbers may also reach the console",
                                  r->node);

        reader_set_description(r, "keyboard-wedge reader%s%s%s%s%s", name_escaped ? " '" : "",
                               name_escaped ?: "", name_escaped ? "'" : "", *ids ? " " : "", ids);
        if (!r->description) {
                err->status = READER_OPEN_FAILED;
                err->error = -ENOMEM;
                return -ENOMEM;
        }
        return 0;
}

static void keyboard_record(Reader *r, const struct input_event *e) {
        KeyboardEvent out[2];
        size_t n = keyboard_decoder_feed(&r->keyboard.decoder, e->type, e->code, e->value, r->now, out);

        for (size_t i = 0; i < n; i++)
                switch (out[i].result) {
                case KEYBOARD_READ:
                        reader_token_read(r, out[i].token);
                        break;
                case KEYBOARD_SHIFTED_DIGIT:
                        reader_bad(r, READER_BAD_SHIFTED_DIGIT, "shifted_digit: key %u typed with Shift", out[i].code);
                        break;
                case KEYBOARD_BAD_KEY:
                        reader_bad(r, READER_BAD_KEY, "bad_key: key code %u", out[i].code);
                        break;
                case KEYBOARD_TOO_LONG:
                        reader_bad(r, READER_BAD_TOO_LONG, "too_long: more than %d characters", KEYBOARD_LINE_MAX);
                        break;
                case KEYBOARD_DROPPED:
                        reader_bad(r, READER_BAD_DROPPED, "dropped: the kernel lost input events; line discarded");
                        break;
                case KEYBOARD_STALE:
                        log_debug("%s: stale: a pause in mid-line, the typed part discarded", r->node);
                        break;
                case KEYBOARD_EMPTY_LINE:
                        log_debug("%s: empty line ignored", r->node);
                        break;
                default:
                        break;
                }
}

static int keyboard_input(Reader *r) {
        KeyboardReader *k = &r->keyboard;
        uint8_t buf[64 * sizeof(struct input_event)];

        for (unsigned i = 0; i < 64; i++) {
                size_t have = k->partial_len, off = 0;
                ssize_t n;

                /* A record split over two reads (FIFOs and ptys do that; evdev never) is completed. */
                memcpy(buf, k->partial, have);
                n = reader_read(r, buf + have, sizeof(buf) - have);
                if (n <= 0)
                        return (int) n;
                have += (size_t) n;
                for (; have - off >= sizeof(struct input_event); off += sizeof(struct input_event)) {
                        struct input_event e;
                        memcpy(&e, buf + off, sizeof(e));
                        keyboard_record(r, &e);
                }
                k->partial_len = have - off;
                memcpy(k->partial, buf + off, k->partial_len);
        }
        return 0;
}

const ReaderBackendOps reader_keyboard_ops = {
        .open_flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC,
        .setup = keyboard_setup,
        .input = keyboard_input,
};
