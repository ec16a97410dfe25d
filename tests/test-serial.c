/* Tests for the Kegboard host serial helpers: speeds (1200 refused),
 * opening a pty (raw 8N1, CLOCAL|CREAD, no flow control, non-blocking) and a regular file, and the
 * monitor line format. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>

#include "kbsp.h"
#include "serial.h"
#include "test-util.h"

static void test_speeds(void) {
        check(serial_speed_supported(115200));
        check(serial_speed_supported(9600));
        check(serial_speed_supported(57600));
        check(!serial_speed_supported(1200));
        check(!serial_speed_supported(0));
        check(!serial_speed_supported(-1));
        check(!serial_speed_supported(12345));

        /* Displays may use 1200; nothing termios cannot set is valid. */
        check(serial_speed_valid(1200));
        check(serial_speed_valid(115200));
        check(!serial_speed_valid(0));
        check(!serial_speed_valid(12345));

        _cleanup_(freep) char *all = NULL, *kegboard = NULL;
        check(serial_speeds_string(true, &all) == 0);
        check(all && startswith(all, "300, 600, 1200, 2400, ") && strstr(all, ", 115200, "));
        check(serial_speeds_string(false, &kegboard) == 0);
        check(kegboard && startswith(kegboard, "300, 600, 2400, ") && !strstr(kegboard, "1200"));
}

static void test_open_tty(void) {
        int master, slave, fd;
        char name[256], path[] = "/tmp/test-serial-tty-XXXXXX";
        struct termios t;

        check(openpty(&master, &slave, name, NULL, NULL) == 0);
        fd = serial_open_tty(name, 1200);
        check(fd >= 0);
        check(tcgetattr(fd, &t) == 0);
        check(cfgetospeed(&t) == B1200);
        check(fcntl(fd, F_GETFL) & O_NONBLOCK);
        safe_close(fd);
        check(serial_open_tty(name, 12345) == -EINVAL);

        check(serial_open_tty("/nonexistent/ttyLCD", 115200) == -ENOENT);
        check(serial_open_tty("/dev/null", 115200) == -ENOTTY);
        fd = mkstemp(path);
        check(fd >= 0);
        safe_close(fd);
        check(serial_open_tty(path, 115200) == -ENOTTY);
        unlink(path);

        close(slave);
        close(master);
}

/* The terminal set-up alone (rfid_daemon's serial readers): any termios speed, 1200 included; a
 * FIFO or pipe is no terminal. */
static void test_setup_tty(void) {
        int master, slave, p[2];
        struct termios t;

        check(openpty(&master, &slave, NULL, NULL, NULL) == 0);
        check(serial_setup_tty(slave, 1200) == 0);
        check(tcgetattr(slave, &t) == 0);
        check(cfgetispeed(&t) == B1200 && cfgetospeed(&t) == B1200);
        check(t.c_cc[VMIN] == 1 && t.c_cc[VTIME] == 0);
        check(serial_setup_tty(slave, 9600) == 0);
        check(tcgetattr(slave, &t) == 0 && cfgetispeed(&t) == B9600);
        check(serial_setup_tty(slave, 12345) == -EINVAL);
        check(pipe(p) == 0);
        check(serial_setup_tty(p[0], 9600) == -ENOTTY);
        close(p[0]);
        close(p[1]);
        close(master);
        close(slave);
}

static void test_open_pty(void) {
        int master, slave, fd;
        char name[256];
        struct termios t;
        SerialKind kind = SERIAL_FILE;
        uint8_t ping[KBSP_MAX_FRAME], got[KBSP_MAX_FRAME];
        int n;

        check(openpty(&master, &slave, name, NULL, NULL) == 0);
        /* Garbage that is waiting before the open must be flushed. */
        check(write(master, "stale", 5) == 5);

        check(serial_open(name, 1200, &kind) == -EINVAL);
        fd = serial_open(name, 57600, &kind);
        check(fd >= 0);
        check(kind == SERIAL_TTY);
        check(fcntl(fd, F_GETFL) & O_NONBLOCK);
        check(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        check(tcgetattr(fd, &t) == 0);
        check(cfgetispeed(&t) == B57600 && cfgetospeed(&t) == B57600);
        check((t.c_cflag & CSIZE) == CS8);
        check(!(t.c_cflag & (PARENB | CSTOPB | CRTSCTS)));
        check((t.c_cflag & (CLOCAL | CREAD)) == (CLOCAL | CREAD));
        check(!(t.c_iflag & (IXON | IXOFF | ICRNL | INLCR)));
        check(!(t.c_lflag & (ICANON | ECHO | ISIG)));
        check(!(t.c_oflag & OPOST));

        uint8_t b;
        check(read(fd, &b, 1) < 0 && errno == EAGAIN);  /* "stale" was flushed */

        /* The old cooked line discipline echoed "stale" to the master; drop that. */
        struct pollfd pfd = { .fd = master, .events = POLLIN };
        while (poll(&pfd, 1, 50) > 0 && read(master, got, sizeof got) > 0)
                ;

        n = kbsp_encode_ping(ping, sizeof ping);
        check(n == 16);
        check(serial_write_all(fd, ping, (size_t) n, 1000) == 0);
        check(poll(&pfd, 1, 1000) == 1);
        check(read(master, got, sizeof got) == n);
        check(memcmp(got, ping, (size_t) n) == 0);

        close(fd);
        close(slave);
        close(master);
}

static void test_open_file(void) {
        char path[] = "/tmp/test-serial-file-XXXXXX";
        SerialKind kind = SERIAL_TTY;
        int fd, tmp;

        tmp = mkstemp(path);
        check(tmp >= 0);
        close(tmp);
        fd = serial_open(path, 115200, &kind);
        check(fd >= 0);
        check(kind == SERIAL_FILE);
        check((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY);   /* replay never writes */
        close(fd);
        unlink(path);

        check(serial_open("/nonexistent/ttyUSB0", 115200, NULL) == -ENOENT);
        fd = serial_open("/dev/null", 115200, &kind);
        check(fd >= 0);
        check(kind == SERIAL_STREAM);
        close(fd);
}

static void test_format_line(void) {
        static const uint8_t hello[] = {
                0x4b, 0x42, 0x53, 0x50, 0x20, 0x76, 0x31, 0x3a, 0x10, 0x00, 0x0d, 0x00, 0x01, 0x05,
                0x66, 0x6c, 0x6f, 0x77, 0x30, 0x02, 0x04, 0x01, 0x00, 0x00, 0x00, 0x17, 0xfb, 0x0d, 0x0a,
        };
        KbspDecoder d;
        KbspEvent ev;
        char line[SERIAL_LINE_MAX], want[64];
        struct tm tm;
        time_t sec = 1700000000;
        int n;

        localtime_r(&sec, &tm);
        snprintf(want, sizeof want, "%02d:%02d:%02d.321 ", tm.tm_hour, tm.tm_min, tm.tm_sec);

        kbsp_decoder_init(&d);
        check(kbsp_decoder_feed(&d, hello, sizeof hello) == 0);
        check(kbsp_decoder_next(&d, &ev) == 1);
        check(ev.type == KBSP_EVENT_FRAME);

        n = serial_format_line(&ev, (uint64_t) sec * 1000000 + 321987, false, line, sizeof line);
        check(n == (int) strlen(line));
        check(strncmp(line, want, strlen(want)) == 0);
        check(streq(line + 13, "meter_status meter_name=flow0 meter_reading=1"));

        n = serial_format_line(&ev, (uint64_t) sec * 1000000 + 321987, true, line, sizeof line);
        check(n == (int) strlen(line));
        check(streq(line + 13, "meter_status meter_name=flow0 meter_reading=1 "
                               "hex=4b4253502076313a10000d000105666c6f7730020401000000" "17fb0d0a"));

        /* Truncation keeps snprintf() semantics. */
        char small[20];
        check(serial_format_line(&ev, (uint64_t) sec * 1000000, true, small, sizeof small) == n);
        check(strlen(small) == sizeof small - 1);
}

int main(void) {
        test_run(test_speeds);
        test_run(test_open_tty);
        test_run(test_setup_tty);
        test_run(test_open_pty);
        test_run(test_open_file);
        test_run(test_format_line);
        return test_result();
}
