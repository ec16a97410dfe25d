/* What reader.c shares with the backends' I/O wrappers (phidget-hidraw.c, id12-tty.c,
 * keyboard-evdev.c, phidget22.c): the Reader itself and the hooks each backend fills in. */
#pragma once

#include <stdarg.h>

#include "id12.h"
#include "keyboard.h"
#include "phidget.h"
#include "reader.h"

#define LOG_COMPONENT "rfid"
#include "log.h"

/* Bad input (section 10.1) and I/O trouble, each rate-limited per reader. */
typedef enum ReaderBad {
        READER_BAD_SHORT_REPORT,
        READER_BAD_UNKNOWN_TYPE,
        READER_BAD_CHECKSUM,
        READER_BAD_CHARACTER,
        READER_BAD_TRAILER,
        READER_BAD_TRUNCATED,
        READER_BAD_STALE,
        READER_BAD_NOISE,
        READER_BAD_SHIFTED_DIGIT,
        READER_BAD_KEY,
        READER_BAD_TOO_LONG,
        READER_BAD_DROPPED,
        READER_BAD_READ_ERROR,
        READER_BAD_WRITE_ERROR,
        _READER_BAD_MAX,
} ReaderBad;

typedef struct ReaderBadCounter {
        bool window;                    /* a minute is running since the first occurrence */
        uint64_t window_end;
        unsigned count;                 /* occurrences in the window not yet logged */
} ReaderBadCounter;

typedef struct ReaderBackendOps {
        /* Opened with these flags, then locked (section 7.6). 0: the backend has no node (phidget22). */
        int open_flags;
        /* Identity, checks and set-up after open and lock; sets r->description. On failure a negative
         * errno and *err filled. */
        int (*setup)(Reader *r, struct udev_device *d, ReaderOpenError *err);
        /* The fd is readable: read what is there and feed the parser. A negative errno means the
         * device is lost (section 7.5); other trouble is handled inside. */
        int (*input)(Reader *r);
        /* After every handled input, timer and stop: bring the device in line (Phidget outputs). A
         * negative errno means the device is lost. May be NULL. */
        int (*settle)(Reader *r);
        /* Before the fd is closed. May be NULL. */
        void (*close)(Reader *r, bool stopping);
} ReaderBackendOps;

typedef struct PhidgetReader {
        PhidgetModel model;
        unsigned firmware;              /* 0 = unknown */
        size_t out_len;                 /* output report length; 0 = no writes */
        bool writes;                    /* v2 with an output report: the shadow state is written */
        bool have_sent;
        uint8_t sent;                   /* the state last written, or tried (then retry_timer is armed) */
        bool stopping;
        bool echo_seen;                 /* a state echo since attach: the silence rule applies */
        bool silent;
        bool have_echo;
        uint8_t echo;
        sd_event_source *retry_timer;
        sd_event_source *silence_timer;
} PhidgetReader;

typedef struct KeyboardReader {
        KeyboardDecoder decoder;
        uint8_t partial[64];            /* a record split over two reads (FIFOs, ptys) */
        size_t partial_len;
} KeyboardReader;

struct Reader {
        sd_event *event;
        RfidBackend backend;
        const ReaderBackendOps *ops;
        ReaderSettings settings;
        ReaderCallbacks callbacks;
        void *userdata;

        char *path;                     /* as given */
        char *node;                     /* escaped, for log lines */
        char *syspath;
        char *description;

        int fd;
        bool open;
        sd_event_source *io;
        sd_event_source *presence_timer;
        sd_event_source *bad_timer;
        uint64_t now;                   /* the loop's time of the input being handled */

        Presence presence;
        ReaderBadCounter bad[_READER_BAD_MAX];

        PhidgetReader phidget;
        Id12Parser id12;
        KeyboardReader keyboard;
        void *phidget22;                /* phidget22.c's state */
};

extern const ReaderBackendOps reader_phidget_ops;
extern const ReaderBackendOps reader_id12_ops;
extern const ReaderBackendOps reader_keyboard_ops;
#if HAVE_PHIDGET22
extern const ReaderBackendOps reader_phidget22_ops;
#endif

/* A read of 'token' at r->now: presentation changes go to the owner. */
void reader_token_read(Reader *r, const char *token);
/* The library reported the loss of the card (phidget22). */
void reader_token_gone(Reader *r);
/* One occurrence of bad input or trouble. The first of a minute is logged at once as
 * "<node>: <text>" (WARNING), except noise and keyboard staleness, which only ever appear in the
 * summary "<node>: <n> more <kind> in the last minute". */
void reader_bad(Reader *r, ReaderBad kind, const char *format, ...) _printf_(3, 4);
/* One read() of the node, for a backend's input hook: the byte count (> 0); 0 when there is nothing
 * more for now (EAGAIN, or a read error that has been reported: reading goes on); a negative errno
 * when the device is lost (section 7.5; end of file is -ESHUTDOWN). */
ssize_t reader_read(Reader *r, void *buf, size_t size);
/* Errors that mean the device is gone (section 7.5). */
bool reader_errno_is_lost(int error);
/* Arms (or disarms with usec == 0) a one-shot CLOCK_MONOTONIC timer owned by the reader. */
int reader_timer_set(Reader *r, sd_event_source **s, uint64_t usec, uint64_t accuracy,
                     sd_event_time_handler_t handler);
/* A backend timer fired: settle and arm what needs arming, as after input. */
void reader_after_event(Reader *r);
void reader_set_description(Reader *r, const char *format, ...) _printf_(2, 3);
