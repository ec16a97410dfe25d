/* Both drivers share one output path: packets are queued as byte strings and written when the
 * device has room. The CFA-635 sends one packet at a time and waits for its reply (or 250 ms);
 * the Matrix Orbital never answers, so its queue is simply written out. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_COMPONENT "lcd"
#include "log.h"

#include "display.h"
#include "serial.h"

#define DISPLAY_QUEUE_MAX 64U

typedef struct Packet {
        uint8_t bytes[CFA635_PACKET_MAX + 4];
        size_t size;
} Packet;

struct Display {
        sd_event *event;
        DisplayType type;
        char *path;
        int fd;
        sd_event_source *io;
        sd_event_source *reply_timer;

        Packet queue[DISPLAY_QUEUE_MAX];
        size_t queue_head, queue_len;

        uint8_t out[DISPLAY_QUEUE_MAX * sizeof(Packet)];
        size_t out_len;

        bool awaiting_reply;
        uint8_t in[CFA635_PACKET_MAX];
        size_t in_len;

        int backlight;          /* -1 unknown, 0 off, 1 on */
        bool failed;
        DisplayFailHandler on_fail;
        void *userdata;
};

int display_type_from_string(const char *s) {
        if (streq(s, "cfa635"))
                return DISPLAY_CFA635;
        if (streq(s, "mtxorb20x4"))
                return DISPLAY_MTXORB20X4;
        return -EINVAL;
}

uint16_t cfa635_crc(const uint8_t *p, size_t n) {
        uint16_t crc = 0xFFFF;

        for (size_t i = 0; i < n; i++) {
                crc ^= p[i];
                for (int b = 0; b < 8; b++)
                        crc = (crc & 1) ? (uint16_t) ((crc >> 1) ^ 0x8408) : (uint16_t) (crc >> 1);
        }
        return (uint16_t) ~crc;
}

size_t cfa635_encode(uint8_t command, const uint8_t *data, size_t len, uint8_t out[static CFA635_PACKET_MAX]) {
        uint16_t crc;

        if (len > CFA635_DATA_MAX || command > 0x3F)
                return 0;
        out[0] = command;       /* type 0 (host command) in the top two bits */
        out[1] = (uint8_t) len;
        if (len > 0)
                memcpy(out + 2, data, len);
        crc = cfa635_crc(out, 2 + len);
        out[2 + len] = (uint8_t) (crc & 0xFF);
        out[3 + len] = (uint8_t) (crc >> 8);
        return 4 + len;
}

uint8_t cfa635_translate(uint8_t c) {
        switch (c) {
        case '[':  return 0xFA;
        case '\\': return 0xFB;
        case ']':  return 0xFC;
        case '{':  return 0xFD;
        case '|':  return 0xFE;
        case '_':  return 0xC4;
        case '$':  return 0xA2;
        case '^':  return 0x1D;
        default:   return c;
        }
}

static void display_fail(Display *d, int error) {
        if (d->failed)
                return;
        d->failed = true;
        (void) sd_event_source_set_enabled(d->io, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(d->reply_timer, SD_EVENT_OFF);
        if (d->on_fail)
                d->on_fail(d, error, d->userdata);
}

static void display_update_io(Display *d) {
        uint32_t events = EPOLLIN | (d->out_len > 0 ? EPOLLOUT : 0);
        int r = sd_event_source_set_io_events(d->io, events);
        if (r < 0)
                display_fail(d, r);
}

static void display_flush(Display *d) {
        while (d->out_len > 0) {
                ssize_t n = write(d->fd, d->out, d->out_len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        log_error_errno(errno, "%s: write failed: %m", d->path);
                        display_fail(d, -errno);
                        return;
                }
                memmove(d->out, d->out + n, d->out_len - (size_t) n);
                d->out_len -= (size_t) n;
        }
        display_update_io(d);
}

/* Moves packets from the queue to the output: all of them for the Matrix Orbital, one per awaited
 * reply for the CFA-635. */
static void display_pump(Display *d) {
        while (!d->failed && d->queue_len > 0 && !d->awaiting_reply) {
                Packet *p = &d->queue[d->queue_head];

                if (d->out_len + p->size > sizeof(d->out))
                        break;
                memcpy(d->out + d->out_len, p->bytes, p->size);
                d->out_len += p->size;
                d->queue_head = (d->queue_head + 1) % DISPLAY_QUEUE_MAX;
                d->queue_len--;

                if (d->type == DISPLAY_CFA635) {
                        uint64_t now = 0;
                        int r;

                        d->awaiting_reply = true;
                        (void) sd_event_now(d->event, CLOCK_MONOTONIC, &now);
                        r = sd_event_source_set_time(d->reply_timer, now + CFA635_REPLY_TIMEOUT_USEC);
                        if (r >= 0)
                                r = sd_event_source_set_enabled(d->reply_timer, SD_EVENT_ONESHOT);
                        if (r < 0) {
                                display_fail(d, r);
                                return;
                        }
                }
        }
        display_flush(d);
}

static int display_queue(Display *d, const uint8_t *bytes, size_t size) {
        if (d->failed)
                return -EIO;
        if (d->queue_len >= DISPLAY_QUEUE_MAX || size > sizeof(d->queue[0].bytes))
                return -ENOBUFS;
        Packet *p = &d->queue[(d->queue_head + d->queue_len) % DISPLAY_QUEUE_MAX];
        memcpy(p->bytes, bytes, size);
        p->size = size;
        d->queue_len++;
        display_pump(d);
        return 0;
}

static int display_queue_cfa(Display *d, uint8_t command, const uint8_t *data, size_t len) {
        uint8_t buf[CFA635_PACKET_MAX];
        size_t n = cfa635_encode(command, data, len, buf);

        if (n == 0)
                return -EINVAL;
        return display_queue(d, buf, n);
}

static void display_got_reply(Display *d, const uint8_t *p, size_t size) {
        unsigned type = p[0] >> 6, code = p[0] & 0x3F;
        uint16_t crc = (uint16_t) (p[size - 2] | (p[size - 1] << 8));

        if (crc != cfa635_crc(p, size - 2))
                log_debug("%s: reply with a bad CRC (type %u, code %u)", d->path, type, code);
        else if (type == 3)
                log_warning("%s: display reported an error for command %u", d->path, code);
        else
                log_debug("%s: reply type %u, code %u, %u data bytes", d->path, type, code, p[1]);

        if (d->awaiting_reply) {
                d->awaiting_reply = false;
                (void) sd_event_source_set_enabled(d->reply_timer, SD_EVENT_OFF);
        }
}

static void display_parse_input(Display *d, const uint8_t *buf, size_t n) {
        for (size_t i = 0; i < n; i++) {
                d->in[d->in_len++] = buf[i];
                if (d->in_len < 2)
                        continue;
                if (d->in[1] > CFA635_DATA_MAX) {
                        log_warning("%s: invalid reply length %u, resynchronising", d->path, d->in[1]);
                        /* Drop the first byte: the next one may be where a real packet starts. */
                        d->in[0] = d->in[1];
                        d->in_len = 1;
                        continue;
                }
                if (d->in_len == (size_t) d->in[1] + 4u) {
                        display_got_reply(d, d->in, d->in_len);
                        d->in_len = 0;
                }
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Display *d = userdata;

        if (revents & EPOLLIN) {
                uint8_t buf[256];
                for (;;) {
                        ssize_t n = read(fd, buf, sizeof(buf));
                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == EAGAIN)
                                        break;
                                log_error_errno(errno, "%s: read failed: %m", d->path);
                                display_fail(d, -errno);
                                return 0;
                        }
                        if (n == 0) {
                                log_error("%s: display disconnected", d->path);
                                display_fail(d, -ENODEV);
                                return 0;
                        }
                        if (d->type == DISPLAY_CFA635)
                                display_parse_input(d, buf, (size_t) n);
                }
        }
        if (revents & (EPOLLHUP | EPOLLERR)) {
                log_error("%s: display disconnected", d->path);
                display_fail(d, -ENODEV);
                return 0;
        }
        if (revents & EPOLLOUT)
                display_flush(d);
        display_pump(d);
        return 0;
}

static int on_reply_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Display *d = userdata;

        log_error("No response!");
        d->awaiting_reply = false;
        display_pump(d);
        return 0;
}

int display_open(Display **ret, sd_event *event, const char *path, int baud, DisplayType type,
                 DisplayFailHandler on_fail, void *userdata) {
        _cleanup_(display_freep) Display *d = NULL;
        int r;

        d = calloc(1, sizeof(*d));
        if (!d)
                return log_error_errno(-ENOMEM, "Out of memory.");
        d->fd = -1;
        d->type = type;
        d->backlight = -1;
        d->on_fail = on_fail;
        d->userdata = userdata;
        d->event = sd_event_ref(event);
        d->path = strdup(path);
        if (!d->path)
                return log_error_errno(-ENOMEM, "Out of memory.");

        r = serial_open(path, baud, NULL);
        if (r < 0)
                return log_error_errno(r, "Cannot open display %s: %m", path);
        d->fd = r;

        r = sd_event_add_io(event, &d->io, d->fd, EPOLLIN, on_io, d);
        if (r < 0)
                return log_error_errno(r, "Cannot watch %s: %m", path);
        r = sd_event_add_time(event, &d->reply_timer, CLOCK_MONOTONIC, 0, 0, on_reply_timeout, d);
        if (r < 0)
                return log_error_errno(r, "Cannot create a timer: %m");
        (void) sd_event_source_set_enabled(d->reply_timer, SD_EVENT_OFF);

        *ret = TAKE_PTR(d);
        return 0;
}

Display *display_free(Display *d) {
        if (!d)
                return NULL;
        sd_event_source_disable_unref(d->io);
        sd_event_source_disable_unref(d->reply_timer);
        safe_close(d->fd);
        sd_event_unref(d->event);
        free(d->path);
        free(d);
        return NULL;
}

int display_clear(Display *d) {
        if (d->type == DISPLAY_CFA635)
                return display_queue_cfa(d, CFA635_CMD_CLEAR, NULL, 0);
        return display_queue(d, (const uint8_t[]) { 0xFE, 0x58 }, 2);
}

int display_set_backlight(Display *d, bool on) {
        int r;

        if (d->backlight == (int) on)
                return 0;
        if (d->type == DISPLAY_CFA635)
                r = display_queue_cfa(d, CFA635_CMD_BACKLIGHT, (const uint8_t[]) { on ? 100 : 0 }, 1);
        else if (on)
                r = display_queue(d, (const uint8_t[]) { 0xFE, 0x42, 0x00 }, 3);
        else
                r = display_queue(d, (const uint8_t[]) { 0xFE, 0x46 }, 2);
        if (r >= 0)
                d->backlight = on;
        return r;
}

int display_show(Display *d, const LcdScreen *s) {
        int r;

        for (unsigned row = 0; row < LCD_ROWS; row++) {
                uint8_t buf[2 + LCD_COLS + 4];

                if (d->type == DISPLAY_CFA635) {
                        buf[0] = 0;
                        buf[1] = (uint8_t) row;
                        for (unsigned i = 0; i < LCD_COLS; i++)
                                buf[2 + i] = cfa635_translate((uint8_t) s->rows[row][i]);
                        r = display_queue_cfa(d, CFA635_CMD_WRITE, buf, 2 + LCD_COLS);
                } else {
                        buf[0] = 0xFE;
                        buf[1] = 0x47;
                        buf[2] = 1;
                        buf[3] = (uint8_t) (row + 1);
                        memcpy(buf + 4, s->rows[row], LCD_COLS);
                        r = display_queue(d, buf, 4 + LCD_COLS);
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

bool display_busy(const Display *d) {
        return d->queue_len > 0 || d->awaiting_reply || d->out_len > 0;
}
