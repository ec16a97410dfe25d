/* The serial side shared by every Kegboard host (kegboard_daemon, kegboard_monitor, kegboard_tester)
 * and rfid_daemon's serial readers: opening a tty raw 8N1 with DTR/RTS up and stale input flushed, or a
 * regular file read-only for replaying a capture (kegboard-serial-protocol.md section 1), and the
 * line format in which kegboard_monitor and kegboard_tester print what the board sends. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "kbsp.h"

typedef enum SerialKind {
        SERIAL_TTY,             /* a terminal: termios applied */
        SERIAL_FILE,            /* a regular file: replay, read-only, no writes */
        SERIAL_STREAM,          /* anything else readable (fifo, socket, char device): used as is */
} SerialKind;

/* 1 if the speed (baud) is one termios can set, 0 if not. 1200 counts as unsupported: closing a
 * port opened at 1200 baud puts Caterina (32u4) boards into their bootloader. */
bool serial_speed_supported(int speed);

/* Opens 'path' non-blocking, close-on-exec, never as the controlling tty. A regular file is opened
 * read-only; a tty read-write, set raw 8N1 at 'speed' without flow control, CLOCAL|CREAD, DTR and
 * RTS asserted (failures of that last step are ignored: ptys have no modem lines), input flushed.
 * Returns the fd, or a negative errno (-EINVAL: unsupported speed). *ret_kind is optional. */
int serial_open(const char *path, int speed, SerialKind *ret_kind);

/* The terminal part of serial_open() on an open fd: raw 8N1 at 'speed' (any speed termios knows,
 * 1200 included), no flow control, CLOCAL|CREAD, VMIN 1, VTIME 0, DTR and RTS asserted where the
 * port has them, pending input flushed. -EINVAL for a speed termios cannot set, -ENOTTY for an fd
 * that is not a terminal, other negative errnos from termios. */
int serial_setup_tty(int fd, int speed);

/* 1 if termios can set the speed, 1200 included (displays run at 1200; only Kegboards refuse it). */
bool serial_speed_valid(int speed);

/* The speeds termios can set, ascending, as "300, 600, 1200, ..." (1200 left out unless
 * with_1200), for error messages. *ret is malloc'ed. */
int serial_speeds_string(bool with_1200, char **ret);

/* Opens a device that must be a terminal (a serial display): read-write, non-blocking,
 * close-on-exec, never the controlling tty, then serial_setup_tty(). -EINVAL for a speed termios
 * cannot set, -ENOENT for a missing path, -ENOTTY for anything that is not a terminal (a regular
 * file, /dev/null), other negative errnos from open() and termios. */
int serial_open_tty(const char *path, int speed);

/* Writes all of buf to a non-blocking fd, waiting with poll() at most timeout_ms in total for
 * room; for the short command frames of the one-shot tools. Returns 0 or a negative errno
 * (-ETIMEDOUT). */
int serial_write_all(int fd, const void *buf, size_t size, int timeout_ms);

/* kegboard_monitor's line (programs-and-flags.md section 6): local time of 'realtime_usec' as
 * HH:MM:SS.mmm, a space, the event text; with 'hex', frames get " hex=<bytes>" appended. No
 * newline. snprintf() semantics; SERIAL_LINE_MAX always suffices. */
#define SERIAL_LINE_MAX (KBSP_TEXT_MAX + 2 * KBSP_MAX_FRAME + 32)
int serial_format_line(const KbspEvent *ev, uint64_t realtime_usec, bool hex, char *buf, size_t size);
/* Prints one such line, stamped now, with a newline, and flushes 'f' (the tools' stdout may be a pipe). */
void serial_print_event(FILE *f, const KbspEvent *ev, bool hex);
