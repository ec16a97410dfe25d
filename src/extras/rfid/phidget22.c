/* Backend phidget22 (rfid-readers.md section 5), built only with -Dphidget22=enabled: the vendor's
 * libphidget22 finds the reader itself and calls back on its own threads. Those callbacks only
 * write a fixed-size record to a pipe; the loop reads the pipe like a reader's node. The library's
 * own tag-lost rule ends presentations (no deadline here); DigitalOutput channel 2 is the onboard
 * LED, channel 1 the output of --toggle_output. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>

#include "phidget-api.h"
#include "reader-internal.h"
#include "util-escape.h"

#define CHANNEL_OUTPUT 1
#define CHANNEL_LED 2

typedef enum Phidget22EventType {
        P22_ATTACH,
        P22_DETACH,
        P22_ERROR,
        P22_TAG,
        P22_TAG_LOST,
} Phidget22EventType;

/* Smaller than PIPE_BUF, so each write is atomic. */
typedef struct Phidget22Event {
        Phidget22EventType type;
        int code;
        char text[200];
} Phidget22Event;

typedef struct Phidget22 {
        int pipe_write;
        PhidgetRFIDHandle rfid;
        PhidgetDigitalOutputHandle led, output;
        bool outputs_on;                /* what LED and output were last switched to */
} Phidget22;

/* The callbacks run on library threads and touch nothing but the pipe; ctx carries its fd. */
static void post(void *ctx, Phidget22EventType type, int code, const char *text) {
        Phidget22Event ev = { .type = type, .code = code };

        if (text)
                (void) snprintf(ev.text, sizeof(ev.text), "%s", text);
        /* If the loop is hopelessly behind, dropping an event beats blocking the library. */
        (void) !write((int) (intptr_t) ctx, &ev, sizeof(ev));
}

static void on_attach(PhidgetHandle ch, void *ctx) {
        int32_t serial = -1;

        (void) Phidget_getDeviceSerialNumber(ch, &serial);
        post(ctx, P22_ATTACH, serial, NULL);
}

static void on_detach(PhidgetHandle ch, void *ctx) {
        int32_t serial = -1;

        (void) Phidget_getDeviceSerialNumber(ch, &serial);
        post(ctx, P22_DETACH, serial, NULL);
}

static void on_error(PhidgetHandle ch, void *ctx, Phidget_ErrorEventCode code, const char *description) {
        post(ctx, P22_ERROR, (int) code, description);
}

static void on_tag(PhidgetRFIDHandle ch, void *ctx, const char *tag, PhidgetRFID_Protocol protocol) {
        post(ctx, P22_TAG, (int) protocol, tag);
}

static void on_tag_lost(PhidgetRFIDHandle ch, void *ctx, const char *tag, PhidgetRFID_Protocol protocol) {
        post(ctx, P22_TAG_LOST, (int) protocol, tag);
}

static const char *phidget_strerror(PhidgetReturnCode rc) {
        const char *s = NULL;

        if (Phidget_getErrorDescription(rc, &s) != EPHIDGET_OK || !s)
                return "unknown error";
        return s;
}

static void open_output(Reader *r, PhidgetDigitalOutputHandle *ret, int channel, const char *what) {
        PhidgetDigitalOutputHandle h = NULL;
        PhidgetReturnCode rc;

        rc = PhidgetDigitalOutput_create(&h);
        if (rc == EPHIDGET_OK)
                rc = Phidget_setChannel((PhidgetHandle) h, channel);
        if (rc == EPHIDGET_OK)
                rc = Phidget_open((PhidgetHandle) h);
        if (rc != EPHIDGET_OK) {
                /* The LED and the output are niceties: tokens work without them. */
                log_warning("Cannot open the reader's %s: %s", what, phidget_strerror(rc));
                if (h)
                        (void) PhidgetDigitalOutput_delete(&h);
                return;
        }
        *ret = h;
}

static void phidget22_close(Reader *r, bool stopping) {
        Phidget22 *p = r->phidget22;

        if (!p)
                return;
        /* Closing stops the library's callbacks before the pipe they write to goes away. */
        if (p->output) {
                (void) Phidget_close((PhidgetHandle) p->output);
                (void) PhidgetDigitalOutput_delete(&p->output);
        }
        if (p->led) {
                (void) Phidget_close((PhidgetHandle) p->led);
                (void) PhidgetDigitalOutput_delete(&p->led);
        }
        if (p->rfid) {
                (void) Phidget_close((PhidgetHandle) p->rfid);
                (void) PhidgetRFID_delete(&p->rfid);
        }
        safe_close(p->pipe_write);
        free(p);
        r->phidget22 = NULL;
}

static int phidget22_setup(Reader *r, struct udev_device *d, ReaderOpenError *err) {
        PhidgetReturnCode rc;
        Phidget22 *p;
        void *ctx;
        int fds[2];

        p = calloc(1, sizeof(*p));
        if (!p || pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
                free(p);
                err->status = READER_OPEN_FAILED;
                err->error = p ? -errno : -ENOMEM;
                return err->error;
        }
        r->phidget22 = p;
        r->fd = fds[0];
        p->pipe_write = fds[1];
        ctx = (void *) (intptr_t) p->pipe_write;

        rc = PhidgetRFID_create(&p->rfid);
        if (rc == EPHIDGET_OK)
                rc = Phidget_setOnAttachHandler((PhidgetHandle) p->rfid, on_attach, ctx);
        if (rc == EPHIDGET_OK)
                rc = Phidget_setOnDetachHandler((PhidgetHandle) p->rfid, on_detach, ctx);
        if (rc == EPHIDGET_OK)
                rc = Phidget_setOnErrorHandler((PhidgetHandle) p->rfid, on_error, ctx);
        if (rc == EPHIDGET_OK)
                rc = PhidgetRFID_setOnTagHandler(p->rfid, on_tag, ctx);
        if (rc == EPHIDGET_OK)
                rc = PhidgetRFID_setOnTagLostHandler(p->rfid, on_tag_lost, ctx);
        if (rc == EPHIDGET_OK)
                rc = Phidget_open((PhidgetHandle) p->rfid);
        if (rc != EPHIDGET_OK) {
                err->status = READER_OPEN_FAILED;
                err->error = -EIO;
                snprintf(err->reason, sizeof(err->reason), "libphidget22: %s", phidget_strerror(rc));
                return -EIO;
        }
        open_output(r, &p->led, CHANNEL_LED, "LED");
        if (r->settings.toggle_output)
                open_output(r, &p->output, CHANNEL_OUTPUT, "output 1");

        reader_set_description(r, "libphidget22");
        if (!r->description) {
                err->status = READER_OPEN_FAILED;
                err->error = -ENOMEM;
                return -ENOMEM;
        }
        return 0;
}

static void handle_event(Reader *r, Phidget22Event *ev) {
        Phidget22 *p = r->phidget22;
        _cleanup_(freep) char *text = NULL;
        PhidgetReturnCode rc;

        ev->text[sizeof(ev->text) - 1] = '\0';
        switch (ev->type) {
        case P22_ATTACH:
                log_info("RFID device attached: %d", ev->code);
                rc = PhidgetRFID_setAntennaEnabled(p->rfid, 1);
                if (rc != EPHIDGET_OK)
                        log_warning("Cannot switch the antenna on: %s", phidget_strerror(rc));
                break;
        case P22_DETACH:
                log_info("RFID device detached: %d", ev->code);
                reader_token_gone(r);
                break;
        case P22_ERROR:
                text = escape_for_log(ev->text);
                log_warning("Phidget error %d: %s", ev->code, text ?: "");
                break;
        case P22_TAG:
                for (char *c = ev->text; *c; c++)
                        if (*c >= 'A' && *c <= 'Z')
                                *c = (char) (*c - 'A' + 'a');
                reader_token_read(r, ev->text);
                break;
        case P22_TAG_LOST:
                reader_token_gone(r);
                break;
        }
}

/* One record per wake-up: each is an input of its own, settled (LED, output) before the next, so
 * a tag and its loss read together still blink the LED. The pipe stays readable for the rest. */
static int phidget22_input(Reader *r) {
        Phidget22Event ev;
        ssize_t n;

        do
                n = read(r->fd, &ev, sizeof(ev));
        while (n < 0 && errno == EINTR);
        if (n < 0) {
                if (errno != EAGAIN)
                        log_warning_errno(-errno, "Cannot read the library's events: %m");
                return 0;
        }
        if (n == (ssize_t) sizeof(ev))
                handle_event(r, &ev);
        return 0;
}

static void set_output(PhidgetDigitalOutputHandle h, const char *what, bool on) {
        PhidgetReturnCode rc;

        if (!h)
                return;
        rc = PhidgetDigitalOutput_setState(h, on);
        if (rc != EPHIDGET_OK)
                log_debug("Cannot switch the %s %s: %s", what, on ? "on" : "off", phidget_strerror(rc));
}

static int phidget22_settle(Reader *r) {
        Phidget22 *p = r->phidget22;
        bool on = presence_active(&r->presence);

        if (!p || on == p->outputs_on)
                return 0;
        set_output(p->led, "LED", on);
        set_output(p->output, "output 1", on);
        p->outputs_on = on;
        return 0;
}

const ReaderBackendOps reader_phidget22_ops = {
        .open_flags = 0,
        .setup = phidget22_setup,
        .input = phidget22_input,
        .settle = phidget22_settle,
        .close = phidget22_close,
};
