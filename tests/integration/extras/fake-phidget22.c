/* A stand-in for libphidget22, just enough of it for rfid_daemon's integration test: one RFID
 * reader and its DigitalOutput channels, steered through a FIFO and reporting through a log file.
 *
 * FAKE_PHIDGET_CONTROL: FIFO with one command per line, acted on from a library-owned thread like
 *   the real library's callbacks: "attach <serial>", "detach", "tag <tag> [protocol]",
 *   "lost <tag> [protocol]", "error <code> <description>".
 * FAKE_PHIDGET_LOG: lines appended for what the program does: "open rfid", "open do<ch>",
 *   "antenna <0|1>", "do<ch> <0|1>", "close rfid". */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phidget-api.h"

#define FAKE_ERR_NOT_ATTACHED ((PhidgetReturnCode) 0x34)
#define FAKE_ERR_INVALID ((PhidgetReturnCode) 0x15)

struct _Phidget {
        int kind;               /* 0 RFID, 1 DigitalOutput */
        int channel;
        Phidget_OnAttachCallback on_attach;
        void *attach_ctx;
        Phidget_OnDetachCallback on_detach;
        void *detach_ctx;
        Phidget_OnErrorCallback on_error;
        void *error_ctx;
        PhidgetRFID_OnTagCallback on_tag;
        void *tag_ctx;
        PhidgetRFID_OnTagLostCallback on_tag_lost;
        void *tag_lost_ctx;
        int open;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct _Phidget *reader;         /* the open RFID channel */
static volatile int attached;
static int32_t serial_number = -1;
static pthread_t thread;
static int thread_started;

static void fake_log(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void fake_log(const char *format, ...) {
        const char *path = getenv("FAKE_PHIDGET_LOG");
        va_list ap;
        FILE *f;

        if (!path)
                return;
        f = fopen(path, "ae");
        if (!f)
                return;
        va_start(ap, format);
        vfprintf(f, format, ap);
        va_end(ap);
        fputc('\n', f);
        fclose(f);
}

static void *control_thread(void *arg) {
        const char *path = getenv("FAKE_PHIDGET_CONTROL");
        char line[512];
        FILE *f;

        if (!path)
                return NULL;
        f = fopen(path, "re");
        if (!f)
                return NULL;
        while (fgets(line, sizeof(line), f)) {
                char word[32] = "", rest[400] = "";
                struct _Phidget *r;

                line[strcspn(line, "\n")] = 0;
                if (sscanf(line, "%31s %399[^\n]", word, rest) < 1)
                        continue;

                /* Held while calling back, so that Phidget_close() cannot free the channel under us. */
                pthread_mutex_lock(&lock);
                r = reader;
                if (!r) {
                        pthread_mutex_unlock(&lock);
                        continue;
                }

                if (strcmp(word, "attach") == 0) {
                        serial_number = atoi(rest);
                        attached = 1;
                        if (r->on_attach)
                                r->on_attach(r, r->attach_ctx);
                } else if (strcmp(word, "detach") == 0) {
                        attached = 0;
                        if (r->on_detach)
                                r->on_detach(r, r->detach_ctx);
                } else if (strcmp(word, "tag") == 0 || strcmp(word, "lost") == 0) {
                        char tag[128] = "";
                        int protocol = PHIDGET_RFID_PROTOCOL_EM4100;
                        (void) sscanf(rest, "%127s %d", tag, &protocol);
                        if (word[0] == 't' && r->on_tag)
                                r->on_tag((PhidgetRFIDHandle) r, r->tag_ctx, tag, (PhidgetRFID_Protocol) protocol);
                        else if (word[0] == 'l' && r->on_tag_lost)
                                r->on_tag_lost((PhidgetRFIDHandle) r, r->tag_lost_ctx, tag,
                                               (PhidgetRFID_Protocol) protocol);
                } else if (strcmp(word, "error") == 0) {
                        int code = 0, n = 0;
                        (void) sscanf(rest, "%d %n", &code, &n);
                        if (r->on_error)
                                r->on_error(r, r->error_ctx, code, rest + n);
                }
                pthread_mutex_unlock(&lock);
        }
        fclose(f);
        return NULL;
}

PhidgetReturnCode Phidget_getErrorDescription(PhidgetReturnCode errorCode, const char **errorString) {
        *errorString = errorCode == FAKE_ERR_NOT_ATTACHED ? "Device not Attached" : "Invalid argument";
        return EPHIDGET_OK;
}

PhidgetReturnCode Phidget_open(PhidgetHandle ch) {
        if (!ch)
                return FAKE_ERR_INVALID;
        ch->open = 1;
        if (ch->kind == 0) {
                fake_log("open rfid");
                pthread_mutex_lock(&lock);
                reader = ch;
                if (!thread_started && pthread_create(&thread, NULL, control_thread, NULL) == 0) {
                        pthread_detach(thread);
                        thread_started = 1;
                }
                pthread_mutex_unlock(&lock);
        } else
                fake_log("open do%d", ch->channel);
        return EPHIDGET_OK;
}

PhidgetReturnCode Phidget_close(PhidgetHandle ch) {
        if (!ch)
                return FAKE_ERR_INVALID;
        ch->open = 0;
        if (ch->kind == 0) {
                pthread_mutex_lock(&lock);
                reader = NULL;
                pthread_mutex_unlock(&lock);
                fake_log("close rfid");
        }
        return EPHIDGET_OK;
}

PhidgetReturnCode Phidget_setChannel(PhidgetHandle ch, int channel) {
        ch->channel = channel;
        return EPHIDGET_OK;
}

PhidgetReturnCode Phidget_getDeviceSerialNumber(PhidgetHandle ch, int32_t *deviceSerialNumber) {
        *deviceSerialNumber = serial_number;
        return EPHIDGET_OK;
}

PhidgetReturnCode Phidget_setOnAttachHandler(PhidgetHandle ch, Phidget_OnAttachCallback fptr, void *ctx) {
        ch->on_attach = fptr;
        ch->attach_ctx = ctx;
        return EPHIDGET_OK;
}

PhidgetReturnCode Phidget_setOnDetachHandler(PhidgetHandle ch, Phidget_OnDetachCallback fptr, void *ctx) {
        ch->on_detach = fptr;
        ch->detach_ctx = ctx;
        return EPHIDGET_OK;
}

PhidgetReturnCode Phidget_setOnErrorHandler(PhidgetHandle ch, Phidget_OnErrorCallback fptr, void *ctx) {
        ch->on_error = fptr;
        ch->error_ctx = ctx;
        return EPHIDGET_OK;
}

PhidgetReturnCode PhidgetRFID_create(PhidgetRFIDHandle *ch) {
        struct _Phidget *p = calloc(1, sizeof(*p));
        if (!p)
                return FAKE_ERR_INVALID;
        *ch = (PhidgetRFIDHandle) p;
        return EPHIDGET_OK;
}

PhidgetReturnCode PhidgetRFID_delete(PhidgetRFIDHandle *ch) {
        free(*ch);
        *ch = NULL;
        return EPHIDGET_OK;
}

PhidgetReturnCode PhidgetRFID_setAntennaEnabled(PhidgetRFIDHandle ch, int antennaEnabled) {
        if (!attached)
                return FAKE_ERR_NOT_ATTACHED;
        fake_log("antenna %d", antennaEnabled);
        return EPHIDGET_OK;
}

PhidgetReturnCode PhidgetRFID_setOnTagHandler(PhidgetRFIDHandle ch, PhidgetRFID_OnTagCallback fptr, void *ctx) {
        struct _Phidget *p = (struct _Phidget *) ch;
        p->on_tag = fptr;
        p->tag_ctx = ctx;
        return EPHIDGET_OK;
}

PhidgetReturnCode PhidgetRFID_setOnTagLostHandler(PhidgetRFIDHandle ch, PhidgetRFID_OnTagLostCallback fptr,
                                                  void *ctx) {
        struct _Phidget *p = (struct _Phidget *) ch;
        p->on_tag_lost = fptr;
        p->tag_lost_ctx = ctx;
        return EPHIDGET_OK;
}

PhidgetReturnCode PhidgetDigitalOutput_create(PhidgetDigitalOutputHandle *ch) {
        struct _Phidget *p = calloc(1, sizeof(*p));
        if (!p)
                return FAKE_ERR_INVALID;
        p->kind = 1;
        *ch = (PhidgetDigitalOutputHandle) p;
        return EPHIDGET_OK;
}

PhidgetReturnCode PhidgetDigitalOutput_delete(PhidgetDigitalOutputHandle *ch) {
        free(*ch);
        *ch = NULL;
        return EPHIDGET_OK;
}

PhidgetReturnCode PhidgetDigitalOutput_setState(PhidgetDigitalOutputHandle ch, int state) {
        struct _Phidget *p = (struct _Phidget *) ch;
        if (!attached || !p->open)
                return FAKE_ERR_NOT_ATTACHED;
        fake_log("do%d %d", p->channel, state);
        return EPHIDGET_OK;
}
