/* Character LCD drivers for lcd_daemon: CrystalFontz CFA-635 packets (CRC-16/X-25, one reply awaited
 * per packet, character ROM translation) and Matrix Orbital 0xFE commands (programs-and-flags.md
 * sections 8.3 and 8.4), written without blocking from an sd-event loop. */
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

enum {
        CFA635_CMD_CLEAR = 6,
        CFA635_CMD_SET_CURSOR = 11,
        CFA635_CMD_BACKLIGHT = 14,
        CFA635_CMD_WRITE = 31,
};

/* CRC-16/X-25 (reflected 0x8408, init 0xFFFF, final XOR 0xFFFF): "123456789" -> 0x906E. */
uint16_t cfa635_crc(const uint8_t *p, size_t n);
/* A host packet (type 0) for 'command' with 'len' data bytes: returns its size, or 0 if len is
 * over CFA635_DATA_MAX or command over 63. */
size_t cfa635_encode(uint8_t command, const uint8_t *data, size_t len, uint8_t out[static CFA635_PACKET_MAX]);
/* The display ROM's code for an ASCII byte ('[' -> 0xFA, '_' -> 0xC4, ...). */
uint8_t cfa635_translate(uint8_t c);

typedef struct Display Display;

/* The device failed (hangup, I/O error): 'error' is a negative errno. The display is unusable. */
typedef void (*DisplayFailHandler)(Display *d, int error, void *userdata);

/* Opens the serial device raw at 'baud'; logs and returns a negative errno on failure. */
int display_open(Display **ret, sd_event *event, const char *path, int baud, DisplayType type,
                 DisplayFailHandler on_fail, void *userdata);
Display *display_free(Display *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Display *, display_free);

int display_clear(Display *d);
/* Sent only when it changes the state last sent. */
int display_set_backlight(Display *d, bool on);
/* All four rows, each as one write at column 0. */
int display_show(Display *d, const LcdScreen *s);
/* Commands queued or a reply still awaited: the UI waits before queuing the next screen. */
bool display_busy(const Display *d);
