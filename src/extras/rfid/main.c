/* rfid_daemon: a Phidgets RFID reader as a source of auth tokens (programs-and-flags.md section 9).
 * Tag seen / lost become TokenAuthEvents (device core.rfid) sent to the core as a kegnet producer.
 * The Phidget22 library calls back on its own threads; those callbacks only post a record to a
 * pipe, and everything else happens on the one sd-event loop. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define LOG_COMPONENT "rfid"
#include "log.h"

#include "app.h"
#include "daemon.h"
#include "flags.h"
#include "kegnet-client.h"
#include "kegnet.h"

static int arg_phidget_wait_seconds = 0;
static bool arg_toggle_output = false;
static const char *arg_tap_name = KEGNET_ALL_TAPS;

static const FlagDef rfid_flags[] = {
        FLAG_INT_MIN("phidget_wait_seconds", &arg_phidget_wait_seconds, 0,
                     "Seconds to wait for a reader at start-up; 0 = forever."),
        FLAG_BOOL("toggle_output", &arg_toggle_output,
                  "Drive the reader's digital output 1 while a tag is present."),
        FLAG_STRING("tap_name", &arg_tap_name, "meter_name of the TokenAuthEvents."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "rfid_daemon",
        .description = "Reads a Phidgets RFID reader and sends the tags it sees to the Kegbot Core as "
                       "auth tokens (device core.rfid).",
        .flags = rfid_flags,
        .groups = APP_GROUP_KEGNET,
};

#if HAVE_PHIDGET22

#include <unistd.h>

#include "phidget-api.h"
#include "util-event.h"

#define RFID_DEVICE_NAME "core.rfid"
/* DigitalOutput channels of the PhidgetRFID 1023: 0 and 1 are the outputs, 2 the onboard LED. */
#define RFID_OUTPUT_CHANNEL 1
#define RFID_LED_CHANNEL 2

typedef enum ReaderEventType {
        READER_ATTACH,
        READER_DETACH,
        READER_ERROR,
        READER_TAG,
        READER_TAG_LOST,
} ReaderEventType;

/* One record per library callback; written whole (it is smaller than PIPE_BUF, so atomic). */
typedef struct ReaderEvent {
        ReaderEventType type;
        int code;
        char text[200];
} ReaderEvent;

typedef struct Manager {
        sd_event *event;
        sd_event_source *pipe_source;
        sd_event_source *wait_timer;
        KegnetClient *kegnet;
        PhidgetRFIDHandle rfid;
        PhidgetDigitalOutputHandle led;
        PhidgetDigitalOutputHandle output;
        int pipe[2];
        bool attached_once;
} Manager;

/* The callbacks run on library threads: they may only touch the pipe. */
static int callback_pipe = -1;

static void post(ReaderEventType type, int code, const char *text) {
        ReaderEvent ev = { .type = type, .code = code };

        if (text)
                (void) snprintf(ev.text, sizeof(ev.text), "%s", text);
        /* If the loop is hopelessly behind, dropping an event beats blocking the library. */
        (void) !write(callback_pipe, &ev, sizeof(ev));
}

static void on_attach(PhidgetHandle ch, void *ctx) {
        int32_t serial = -1;

        (void) Phidget_getDeviceSerialNumber(ch, &serial);
        post(READER_ATTACH, serial, NULL);
}

static void on_detach(PhidgetHandle ch, void *ctx) {
        int32_t serial = -1;

        (void) Phidget_getDeviceSerialNumber(ch, &serial);
        post(READER_DETACH, serial, NULL);
}

static void on_error(PhidgetHandle ch, void *ctx, Phidget_ErrorEventCode code, const char *description) {
        post(READER_ERROR, (int) code, description);
}

static void on_tag(PhidgetRFIDHandle ch, void *ctx, const char *tag, PhidgetRFID_Protocol protocol) {
        post(READER_TAG, (int) protocol, tag);
}

static void on_tag_lost(PhidgetRFIDHandle ch, void *ctx, const char *tag, PhidgetRFID_Protocol protocol) {
        post(READER_TAG_LOST, (int) protocol, tag);
}

static const char *phidget_strerror(PhidgetReturnCode rc) {
        const char *s = NULL;

        if (Phidget_getErrorDescription(rc, &s) != EPHIDGET_OK || !s)
                return "unknown error";
        return s;
}

static void set_output(PhidgetDigitalOutputHandle h, const char *what, bool on) {
        PhidgetReturnCode rc;

        if (!h)
                return;
        rc = PhidgetDigitalOutput_setState(h, on);
        if (rc != EPHIDGET_OK)
                log_debug("Cannot switch the %s %s: %s", what, on ? "on" : "off", phidget_strerror(rc));
}

static void send_token(Manager *m, const char *tag, KegnetTokenStatus status) {
        char token[sizeof(((ReaderEvent *) NULL)->text)];
        size_t i;
        int r;

        for (i = 0; tag[i] && i < sizeof(token) - 1; i++)
                token[i] = (char) ((tag[i] >= 'A' && tag[i] <= 'Z') ? tag[i] - 'A' + 'a' : tag[i]);
        token[i] = 0;
        if (!*token) {
                log_warning("Ignoring an empty tag from the reader");
                return;
        }

        r = kegnet_client_send(m->kegnet, &(KegnetMessage) {
                .kind = KEGNET_TOKEN_AUTH_EVENT,
                .token_auth_event = {
                        .meter_name = arg_tap_name,
                        .auth_device_name = RFID_DEVICE_NAME,
                        .token_value = token,
                        .status = status,
                },
        });
        if (r < 0)
                log_warning_errno(r, "Cannot send the token %s: %m", token);
}

static void handle_event(Manager *m, const ReaderEvent *ev) {
        PhidgetReturnCode rc;

        switch (ev->type) {
        case READER_ATTACH:
                log_info("RFID device attached: %d", ev->code);
                m->attached_once = true;
                (void) sd_event_source_set_enabled(m->wait_timer, SD_EVENT_OFF);
                rc = PhidgetRFID_setAntennaEnabled(m->rfid, 1);
                if (rc != EPHIDGET_OK)
                        log_warning("Cannot switch the antenna on: %s", phidget_strerror(rc));
                (void) daemon_notify_status("RFID reader %d attached", ev->code);
                break;
        case READER_DETACH:
                log_info("RFID device detached: %d", ev->code);
                (void) daemon_notify_status("Waiting for an RFID reader");
                break;
        case READER_ERROR:
                log_warning("Phidget error %d: %s", ev->code, ev->text);
                break;
        case READER_TAG:
                log_info("Tag seen: %s", ev->text);
                set_output(m->led, "LED", true);
                if (arg_toggle_output)
                        set_output(m->output, "output 1", true);
                send_token(m, ev->text, KEGNET_TOKEN_ADDED);
                break;
        case READER_TAG_LOST:
                log_info("Tag lost: %s", ev->text);
                set_output(m->led, "LED", false);
                if (arg_toggle_output)
                        set_output(m->output, "output 1", false);
                send_token(m, ev->text, KEGNET_TOKEN_REMOVED);
                break;
        }
}

static int on_pipe(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        ReaderEvent ev;

        for (;;) {
                ssize_t n = read(fd, &ev, sizeof(ev));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                log_warning_errno(errno, "Cannot read reader events: %m");
                        break;
                }
                if (n != (ssize_t) sizeof(ev))
                        break;
                ev.text[sizeof(ev.text) - 1] = 0;
                handle_event(m, &ev);
        }
        return 0;
}

static int on_wait_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (m->attached_once)
                return 0;
        log_error("No device found after %d seconds!", arg_phidget_wait_seconds);
        return sd_event_exit(m->event, 1);
}

static void on_kegnet_connected(KegnetClient *c, void *userdata) {
        log_debug("Connected to the core at %s", kegnet_client_address(c));
}

static const KegnetClientCallbacks kegnet_callbacks = {
        .connected = on_kegnet_connected,
};

static Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* Closing stops the library's callbacks before the pipe they write to goes away. */
        if (m->output) {
                (void) Phidget_close((PhidgetHandle) m->output);
                (void) PhidgetDigitalOutput_delete(&m->output);
        }
        if (m->led) {
                (void) Phidget_close((PhidgetHandle) m->led);
                (void) PhidgetDigitalOutput_delete(&m->led);
        }
        if (m->rfid) {
                (void) Phidget_close((PhidgetHandle) m->rfid);
                (void) PhidgetRFID_delete(&m->rfid);
        }
        sd_event_source_disable_unref(m->pipe_source);
        sd_event_source_disable_unref(m->wait_timer);
        kegnet_client_free(m->kegnet);
        callback_pipe = -1;
        safe_close(m->pipe[0]);
        safe_close(m->pipe[1]);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

static int open_output(PhidgetDigitalOutputHandle *ret, int channel, const char *what) {
        PhidgetDigitalOutputHandle h = NULL;
        PhidgetReturnCode rc;

        rc = PhidgetDigitalOutput_create(&h);
        if (rc == EPHIDGET_OK)
                rc = Phidget_setChannel((PhidgetHandle) h, channel);
        if (rc == EPHIDGET_OK)
                rc = Phidget_open((PhidgetHandle) h);
        if (rc != EPHIDGET_OK) {
                /* The LED and the output are niceties: tokens still work without them. */
                log_warning("Cannot open the reader's %s: %s", what, phidget_strerror(rc));
                if (h)
                        (void) PhidgetDigitalOutput_delete(&h);
                return -EIO;
        }
        *ret = h;
        return 0;
}

static int manager_new(Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        PhidgetReturnCode rc;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");
        m->pipe[0] = m->pipe[1] = -1;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = daemon_setup_event(m->event, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "Cannot set up signals: %m");

        if (pipe2(m->pipe, O_CLOEXEC | O_NONBLOCK) < 0)
                return log_error_errno(errno, "Cannot create a pipe: %m");
        callback_pipe = m->pipe[1];
        r = sd_event_add_io(m->event, &m->pipe_source, m->pipe[0], EPOLLIN, on_pipe, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the pipe: %m");

        r = kegnet_client_new(&m->kegnet, m->event, app_kb_core_addr(), &kegnet_callbacks, m);
        if (r < 0)
                return r;
        kegnet_client_set_producer(m->kegnet, true);

        if (arg_phidget_wait_seconds > 0) {
                /* Accuracy 1 s: a wait counted in seconds. */
                r = event_timer_arm_relative(m->event, &m->wait_timer, (uint64_t) arg_phidget_wait_seconds * USEC_PER_SEC,
                                             USEC_PER_SEC, on_wait_timeout, m);
                if (r < 0)
                        return log_error_errno(r, "Cannot create a timer: %m");
        }

        rc = PhidgetRFID_create(&m->rfid);
        if (rc == EPHIDGET_OK)
                rc = Phidget_setOnAttachHandler((PhidgetHandle) m->rfid, on_attach, NULL);
        if (rc == EPHIDGET_OK)
                rc = Phidget_setOnDetachHandler((PhidgetHandle) m->rfid, on_detach, NULL);
        if (rc == EPHIDGET_OK)
                rc = Phidget_setOnErrorHandler((PhidgetHandle) m->rfid, on_error, NULL);
        if (rc == EPHIDGET_OK)
                rc = PhidgetRFID_setOnTagHandler(m->rfid, on_tag, NULL);
        if (rc == EPHIDGET_OK)
                rc = PhidgetRFID_setOnTagLostHandler(m->rfid, on_tag_lost, NULL);
        if (rc == EPHIDGET_OK)
                rc = Phidget_open((PhidgetHandle) m->rfid);
        if (rc != EPHIDGET_OK) {
                log_error("Cannot open the RFID reader: %s", phidget_strerror(rc));
                return -EIO;
        }
        (void) open_output(&m->led, RFID_LED_CHANNEL, "LED");
        if (arg_toggle_output)
                (void) open_output(&m->output, RFID_OUTPUT_CHANNEL, "output 1");

        *ret = TAKE_PTR(m);
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        app_init(argc, argv, &app_info, NULL);

        r = manager_new(&m);
        if (r >= 0) {
                r = kegnet_client_start(m->kegnet);
                if (r < 0)
                        log_error_errno(r, "Cannot start the kegnet client: %m");
        }
        if (r >= 0) {
                (void) daemon_notify_ready("Waiting for an RFID reader");
                log_info("Waiting for an RFID reader.");
                r = sd_event_loop(m->event);
                if (r < 0)
                        log_error_errno(r, "Event loop failed: %m");
                (void) daemon_notify_stopping();
        }
        m = manager_free(m);
        app_finish();
        return r == 0 ? 0 : 1;
}

#else /* !HAVE_PHIDGET22 */

int main(int argc, char **argv) {
        app_init(argc, argv, &app_info, NULL);
        log_error("rfid_daemon was built without Phidget support");
        app_finish();
        return 1;
}

#endif
