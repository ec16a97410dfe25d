/* Character LCD drivers for lcd_daemon: CrystalFontz CFA-635 packets (CRC-16/X-25, one command at a
 * time, each sent only once the display has answered the one before, character ROM translation)
 * and Matrix Orbital 0xFE commands (programs-and-flags.md sections 8.3 and 8.4), written without
 * blocking from an sd-event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "screens.h"

typedef enum DisplayType {
        DISPLAY_CFA635,
        DISPLAY_MTXORB20X4,
        _DISPLAY_TYPE_MAX,
} DisplayType;

/* -EINVAL for anything but "cfa635" and "mtxorb20x4". */
int display_type_from_string(const char *s);

#define CFA635_DATA_MAX 22
#define CFA635_PACKET_MAX (2 + CFA635_DATA_MAX + 2)
#define CFA635_REPLY_TIMEOUT_USEC (250 * USEC_PER_MSEC)
/* How late the reply timeout may fire: the wait is 250 ms, not 250-500 ms. */
#define CFA635_REPLY_TIMEOUT_ACCURACY_USEC USEC_PER_MSEC

enum {
        CFA635_CMD_CLEAR = 6,
        CFA635_CMD_SET_CURSOR = 11,
        CFA635_CMD_BACKLIGHT = 14,
        CFA635_CMD_WRITE = 31,
};

/* Packet types, the top two bits of the first byte. */
enum {
        CFA635_TYPE_COMMAND = 0,        /* host -> display */
        CFA635_TYPE_RESPONSE = 1,       /* the display's acknowledgement of a command */
        CFA635_TYPE_REPORT = 2,         /* unsolicited: keys, fans, temperatures */
        CFA635_TYPE_ERROR = 3,          /* the display refused a command */
};

/* Report codes (type 2). */
enum {
        CFA635_REPORT_KEY = 0,
        CFA635_REPORT_FAN = 1,
        CFA635_REPORT_TEMPERATURE = 2,
};

/* CRC-16/X-25 (reflected 0x8408, init 0xFFFF, final XOR 0xFFFF): "123456789" -> 0x906E. */
uint16_t cfa635_crc(const uint8_t *p, size_t n);
/* A host packet (type 0) for 'command' with 'len' data bytes: returns its size, or 0 if len is
 * over CFA635_DATA_MAX or command over 63. */
size_t cfa635_encode(uint8_t command, const uint8_t *data, size_t len, uint8_t out[static CFA635_PACKET_MAX]);
/* The display ROM's code for an ASCII byte ('[' -> 0xFA, '_' -> 0xC4, ...). */
uint8_t cfa635_translate(uint8_t c);

/* One packet from the display, CRC checked. */
typedef struct Cfa635Packet {
        uint8_t type;           /* CFA635_TYPE_* */
        uint8_t code;           /* the command answered, or the report code */
        uint8_t len;
        uint8_t data[CFA635_DATA_MAX];
        bool crc_ok;
} Cfa635Packet;

/* Splits the display's byte stream into packets. */
typedef struct Cfa635Parser {
        uint8_t buf[CFA635_PACKET_MAX];
        size_t len;
} Cfa635Parser;

/* Takes one byte: 1 with *ret filled when it completes a packet (whatever its CRC), 0 while more
 * bytes are needed, -EBADMSG when it is a length byte over 22 (the byte before it is dropped, so
 * the parser finds the next packet start). */
int cfa635_parser_feed(Cfa635Parser *p, uint8_t byte, Cfa635Packet *ret);
/* Drops a partial packet. */
void cfa635_parser_reset(Cfa635Parser *p);

typedef struct Display Display;

/* The device failed (hangup, I/O error): 'error' is a negative errno. The display is unusable. */
typedef void (*DisplayFailHandler)(Display *d, int error, void *userdata);
/* Everything queued is written and answered (or given up on): the next screen may go out. Called
 * from the event loop, never from inside a display_*() call. */
typedef void (*DisplayIdleHandler)(Display *d, void *userdata);

/* Opens the serial device raw at 'baud' (1200 included). Logs the reason and returns a negative
 * errno on failure: -EINVAL for an unsupported baud rate, -ENOENT for a missing path, -ENOTTY for
 * a path that is not a terminal. */
int display_open(Display **ret, sd_event *event, const char *path, int baud, DisplayType type,
                 DisplayFailHandler on_fail, DisplayIdleHandler on_idle, void *userdata);
Display *display_free(Display *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Display *, display_free);

int display_clear(Display *d);
/* Sent only when it changes the state last sent. */
int display_set_backlight(Display *d, bool on);
/* All four rows, each as one write at column 0. */
int display_show(Display *d, const LcdScreen *s);
/* Commands queued or a reply still awaited: the UI waits for the idle handler before queuing the
 * next screen. */
bool display_busy(const Display *d);
