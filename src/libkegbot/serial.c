/* Serial port helpers for the Kegboard hosts; see serial.h. */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>

#include "serial.h"
#include "macro.h"
#include "util-strbuf.h"

static const struct {
        int speed;
        speed_t constant;
} speed_table[] = {
        { 300, B300 },       { 600, B600 },       { 1200, B1200 },     { 2400, B2400 },     { 4800, B4800 },
        { 9600, B9600 },     { 19200, B19200 },   { 38400, B38400 },   { 57600, B57600 },
        { 115200, B115200 }, { 230400, B230400 }, { 460800, B460800 }, { 500000, B500000 },
        { 576000, B576000 }, { 921600, B921600 }, { 1000000, B1000000 },
        { 2000000, B2000000 },
};

static int speed_lookup(int speed, speed_t *ret) {
        for (size_t i = 0; i < ELEMENTSOF(speed_table); i++)
                if (speed_table[i].speed == speed) {
                        *ret = speed_table[i].constant;
                        return 0;
                }
        return -EINVAL;
}

bool serial_speed_supported(int speed) {
        speed_t s;
        /* 1200 baud is the bootloader-reset signal of 32u4 Kegboards. */
        return speed != 1200 && speed_lookup(speed, &s) >= 0;
}

bool serial_speed_valid(int speed) {
        speed_t s;
        return speed_lookup(speed, &s) >= 0;
}

int serial_speeds_string(bool with_1200, char **ret) {
        StrBuf b = STRBUF_INIT;

        assert_return(ret, -EINVAL);
        for (size_t i = 0; i < ELEMENTSOF(speed_table); i++)
                if (with_1200 || speed_table[i].speed != 1200)
                        (void) strbuf_printf(&b, "%s%d", b.len > 0 ? ", " : "", speed_table[i].speed);
        return strbuf_take(&b, ret, NULL);
}

int serial_setup_tty(int fd, int speed) {
        struct termios t;
        speed_t baud;
        int bits = TIOCM_DTR | TIOCM_RTS;

        assert_return(fd >= 0, -EBADF);

        if (speed_lookup(speed, &baud) < 0)
                return -EINVAL;
        if (tcgetattr(fd, &t) < 0)
                return -errno;

        cfmakeraw(&t);
        t.c_cflag &= ~(CSIZE | PARENB | CSTOPB | CRTSCTS | HUPCL);
        t.c_cflag |= CS8 | CLOCAL | CREAD;
        t.c_iflag &= ~(IXON | IXOFF | IXANY);
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        if (cfsetispeed(&t, baud) < 0 || cfsetospeed(&t, baud) < 0)
                return -errno;
        if (tcsetattr(fd, TCSANOW, &t) < 0)
                return -errno;

        /* Native-USB boards may discard output until DTR is up. Ptys have no modem lines. */
        (void) ioctl(fd, TIOCMBIS, &bits);

        /* Whatever the old session or the bootloader left behind is not ours to parse. */
        (void) tcflush(fd, TCIFLUSH);
        return 0;
}

int serial_open(const char *path, int speed, SerialKind *ret_kind) {
        _cleanup_(closep) int fd = -1;
        struct stat st;
        SerialKind kind;
        int r;

        assert_return(path, -EINVAL);

        if (!serial_speed_supported(speed))
                return -EINVAL;

        if (stat(path, &st) < 0)
                return -errno;

        if (S_ISREG(st.st_mode)) {
                fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
                kind = SERIAL_FILE;
        } else {
                fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
                kind = SERIAL_STREAM;
        }
        if (fd < 0)
                return -errno;

        if (kind == SERIAL_STREAM && isatty(fd)) {
                r = serial_setup_tty(fd, speed);
                if (r < 0)
                        return r;
                kind = SERIAL_TTY;
        }

        if (ret_kind)
                *ret_kind = kind;
        return TAKE_FD(fd);
}

int serial_open_tty(const char *path, int speed) {
        _cleanup_(closep) int fd = -1;
        int r;

        assert_return(path, -EINVAL);

        if (!serial_speed_valid(speed))
                return -EINVAL;
        fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (!isatty(fd))
                return -ENOTTY;
        r = serial_setup_tty(fd, speed);
        if (r < 0)
                return r;
        return TAKE_FD(fd);
}

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

int serial_write_all(int fd, const void *buf, size_t size, int timeout_ms) {
        const uint8_t *p = buf;
        uint64_t deadline = now_ms() + (uint64_t) MAX(timeout_ms, 0);

        assert_return(fd >= 0, -EBADF);
        assert_return(buf || size == 0, -EINVAL);

        while (size > 0) {
                ssize_t n = write(fd, p, size);
                if (n > 0) {
                        p += n;
                        size -= (size_t) n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != EAGAIN)
                        return -errno;

                uint64_t t = now_ms();
                if (t >= deadline)
                        return -ETIMEDOUT;
                struct pollfd pfd = { .fd = fd, .events = POLLOUT };
                if (poll(&pfd, 1, (int) (deadline - t)) < 0 && errno != EINTR)
                        return -errno;
                if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
                        return -EIO;
        }
        return 0;
}

int serial_format_line(const KbspEvent *ev, uint64_t realtime_usec, bool hex, char *buf, size_t size) {
        char text[KBSP_TEXT_MAX];
        time_t sec = (time_t) (realtime_usec / USEC_PER_SEC);
        struct tm tm;
        int n;

        assert_return(ev, -EINVAL);
        assert_return(buf || size == 0, -EINVAL);

        if (!localtime_r(&sec, &tm))
                return -EINVAL;
        (void) kbsp_event_format(ev, text, sizeof text);
        n = snprintf(buf, size, "%02d:%02d:%02d.%03u %s", tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (unsigned) (realtime_usec % USEC_PER_SEC / USEC_PER_MSEC), text);
        if (n < 0)
                return -EINVAL;
        if (hex && ev->type == KBSP_EVENT_FRAME && ev->frame) {
                size_t len = (size_t) n;
                len += (size_t) MAX(snprintf(len < size ? buf + len : NULL, len < size ? size - len : 0, " hex="), 0);
                for (size_t i = 0; i < ev->frame->size; i++)
                        len += (size_t) MAX(snprintf(len < size ? buf + len : NULL, len < size ? size - len : 0,
                                                     "%02x", ev->frame->data[i]), 0);
                n = (int) len;
        }
        return n;
}

void serial_print_event(FILE *f, const KbspEvent *ev, bool hex) {
        char line[SERIAL_LINE_MAX];
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        (void) serial_format_line(ev, (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC,
                                  hex, line, sizeof line);
        fputs(line, f);
        fputc('\n', f);
        fflush(f);
}
