/* Both drivers share one output path: packets are queued as byte strings and written when the
 * device has room. The CFA-635 gets one packet at a time: the next one goes out only when the
 * display has acknowledged this one (a response of the same command with a good CRC), refused it,
 * or let 250 ms pass; reports (keys, fans, temperatures) may arrive in between and do not count
 * as an answer. A reply with a bad CRC is not trusted: the command is sent once more. The Matrix
 * Orbital never answers, so its queue is simply written out. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_COMPONENT "lcd"
#include "log.h"

#include "display.h"
#include "serial.h"
#include "util-event.h"
#include "util-ratelimit.h"

#define DISPLAY_QUEUE_MAX 64U
/* Sends of one command: the first, and one more after a reply with a bad CRC. */
#define CFA635_SENDS_MAX 2U
/* A display that never answers would log one line per command: a few per 10 minutes is enough. */
#define NO_ANSWER_LOG_INTERVAL_USEC (10 * 60 * USEC_PER_SEC)
#define NO_ANSWER_LOG_BURST 3

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

        /* CFA-635: the command on the wire and how often it was sent. */
        bool awaiting_reply;
        Packet current;
        unsigned sends;
        Cfa635Parser parser;
        LogRateLimit no_answer_log;

        int backlight;          /* -1 unknown, 0 off, 1 on */
        bool failed;
        DisplayFailHandler on_fail;
        DisplayIdleHandler on_idle;
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

void cfa635_parser_reset(Cfa635Parser *p) {
        p->len = 0;
}

int cfa635_parser_feed(Cfa635Parser *p, uint8_t byte, Cfa635Packet *ret) {
        size_t size;
        uint16_t crc;

        p->buf[p->len++] = byte;
        if (p->len < 2)
                return 0;
        if (p->buf[1] > CFA635_DATA_MAX) {
                /* Drop the first byte: the next one may be where a real packet starts. */
                p->buf[0] = p->buf[1];
                p->len = 1;
                return -EBADMSG;
        }
        size = (size_t) p->buf[1] + 4u;
        if (p->len < size)
                return 0;

        crc = (uint16_t) (p->buf[size - 2] | (p->buf[size - 1] << 8));
        *ret = (Cfa635Packet) {
                .type = p->buf[0] >> 6,
                .code = p->buf[0] & 0x3F,
                .len = p->buf[1],
                .crc_ok = crc == cfa635_crc(p->buf, size - 2),
        };
        memcpy(ret->data, p->buf + 2, ret->len);
        p->len = 0;
        return 1;
}

static void display_fail(Display *d, int error) {
        if (d->failed)
                return;
        d->failed = true;
        (void) sd_event_source_set_enabled(d->io, SD_EVENT_OFF);
        event_timer_disarm(d->reply_timer);
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

static int on_reply_timeout(sd_event_source *s, uint64_t usec, void *userdata);

/* Puts the CFA-635's current command on the wire and starts its 250 ms wait. */
static void display_send_current(Display *d) {
        int r;

        if (d->out_len + d->current.size > sizeof(d->out)) {
                display_fail(d, -ENOBUFS);
                return;
        }
        memcpy(d->out + d->out_len, d->current.bytes, d->current.size);
        d->out_len += d->current.size;
        d->sends++;
        d->awaiting_reply = true;
        r = event_timer_arm_relative(d->event, &d->reply_timer, CFA635_REPLY_TIMEOUT_USEC,
                                     CFA635_REPLY_TIMEOUT_ACCURACY_USEC, on_reply_timeout, d);
        if (r < 0) {
                log_error_errno(r, "Cannot arm the reply timer: %m");
                display_fail(d, r);
        }
}

/* Moves packets from the queue to the output: all of them for the Matrix Orbital, the next one
 * once the last is answered for the CFA-635. */
static void display_pump(Display *d) {
        while (!d->failed && d->queue_len > 0 && !d->awaiting_reply) {
                Packet *p = &d->queue[d->queue_head];

                if (d->type == DISPLAY_CFA635) {
                        d->current = *p;
                        d->sends = 0;
                        display_send_current(d);
                } else {
                        if (d->out_len + p->size > sizeof(d->out))
                                break;
                        memcpy(d->out + d->out_len, p->bytes, p->size);
                        d->out_len += p->size;
                }
                d->queue_head = (d->queue_head + 1) % DISPLAY_QUEUE_MAX;
                d->queue_len--;
        }
        if (!d->failed)
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

static uint8_t display_current_command(const Display *d) {
        return d->current.bytes[0] & 0x3F;
}

static void display_end_wait(Display *d) {
        d->awaiting_reply = false;
        event_timer_disarm(d->reply_timer);
}

static void display_got_packet(Display *d, const Cfa635Packet *p) {
        bool answers = d->awaiting_reply && p->code == display_current_command(d);

        if (!p->crc_ok) {
                if (!d->awaiting_reply) {
                        log_warning("%s: packet with a bad CRC (type %u, code %u) ignored", d->path, p->type, p->code);
                        return;
                }
                /* Perhaps the answer, perhaps a report: either way the command may be lost. */
                if (d->sends < CFA635_SENDS_MAX) {
                        log_warning("%s: packet with a bad CRC (type %u, code %u) while waiting for the answer "
                                    "to command %u; sending the command again", d->path, p->type, p->code,
                                    display_current_command(d));
                        display_send_current(d);
                } else {
                        log_warning("%s: packet with a bad CRC (type %u, code %u) after sending command %u "
                                    "twice; going on with the next command", d->path, p->type, p->code,
                                    display_current_command(d));
                        display_end_wait(d);
                }
                return;
        }

        switch (p->type) {
        case CFA635_TYPE_REPORT:
                if (p->code == CFA635_REPORT_KEY && p->len >= 1)
                        log_debug("%s: key event %u", d->path, p->data[0]);
                else
                        log_debug("%s: report %u with %u data bytes ignored", d->path, p->code, p->len);
                return;
        case CFA635_TYPE_RESPONSE:
        case CFA635_TYPE_ERROR:
                if (!answers) {
                        /* A late answer to a command given up on, or noise. */
                        log_debug("%s: unexpected %s for command %u ignored", d->path,
                                  p->type == CFA635_TYPE_ERROR ? "error" : "response", p->code);
                        return;
                }
                if (p->type == CFA635_TYPE_ERROR)
                        log_warning("%s: the display refused command %u", d->path, p->code);
                display_end_wait(d);
                return;
        default:
                log_debug("%s: host-type packet (code %u) from the display ignored", d->path, p->code);
                return;
        }
}

static void display_parse_input(Display *d, const uint8_t *buf, size_t n) {
        for (size_t i = 0; i < n; i++) {
                Cfa635Packet p;
                int r = cfa635_parser_feed(&d->parser, buf[i], &p);

                if (r == -EBADMSG)
                        log_warning("%s: invalid packet length %u, resynchronising", d->path, buf[i]);
                else if (r > 0)
                        display_got_packet(d, &p);
                if (d->failed)
                        return;
        }
}

/* After an event: if that made the display idle, the UI may send the next screen. */
static void display_after_event(Display *d, bool was_busy) {
        if (d->failed)
                return;
        display_pump(d);
        if (!d->failed && was_busy && !display_busy(d) && d->on_idle)
                d->on_idle(d, d->userdata);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Display *d = userdata;
        bool was_busy = display_busy(d);

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
                        if (d->failed)
                                return 0;
                }
        }
        if (revents & (EPOLLHUP | EPOLLERR)) {
                log_error("%s: display disconnected", d->path);
                display_fail(d, -ENODEV);
                return 0;
        }
        if (revents & EPOLLOUT)
                display_flush(d);
        display_after_event(d, was_busy);
        return 0;
}

static int on_reply_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Display *d = userdata;

        if (log_ratelimit_pass(&d->no_answer_log, LOG_ERR, LOG_COMPONENT))
                log_error("No response! %s did not answer command %u within %u ms (is it a CFA-635, at "
                          "--lcd_baud_rate?)", d->path, display_current_command(d),
                          (unsigned) (CFA635_REPLY_TIMEOUT_USEC / USEC_PER_MSEC));
        /* Whatever partial packet arrived belongs to nothing now. */
        cfa635_parser_reset(&d->parser);
        d->awaiting_reply = false;
        display_after_event(d, true);
        return 0;
}

int display_open(Display **ret, sd_event *event, const char *path, int baud, DisplayType type,
                 DisplayFailHandler on_fail, DisplayIdleHandler on_idle, void *userdata) {
        _cleanup_(display_freep) Display *d = NULL;
        int r;

        d = calloc(1, sizeof(*d));
        if (!d)
                return log_error_errno(-ENOMEM, "Out of memory.");
        d->fd = -1;
        d->type = type;
        d->backlight = -1;
        d->on_fail = on_fail;
        d->on_idle = on_idle;
        d->userdata = userdata;
        d->no_answer_log = (LogRateLimit) LOG_RATELIMIT_INIT("no answer from the display",
                                                             NO_ANSWER_LOG_INTERVAL_USEC, NO_ANSWER_LOG_BURST);
        d->event = sd_event_ref(event);
        d->path = strdup(path);
        if (!d->path)
                return log_error_errno(-ENOMEM, "Out of memory.");

        r = serial_open_tty(path, baud);
        if (r == -EINVAL) {
                _cleanup_(freep) char *speeds = NULL;
                (void) serial_speeds_string(true, &speeds);
                return log_error_errno(r, "Cannot open display %s: unsupported baud rate %d (supported: %s)",
                                       path, baud, speeds ? speeds : "?");
        }
        if (r == -ENOENT)
                return log_error_errno(r, "Cannot open display %s: no such device (is the display plugged in? "
                                       "see --lcd_device_path)", path);
        if (r == -ENOTTY)
                return log_error_errno(r, "Cannot open display %s: not a serial port (not a terminal device); "
                                       "--lcd_device_path must name the display's tty, e.g. /dev/ttyUSB0", path);
        if (r < 0)
                return log_error_errno(r, "Cannot open display %s: %m", path);
        d->fd = r;

        r = sd_event_add_io(event, &d->io, d->fd, EPOLLIN, on_io, d);
        if (r < 0)
                return log_error_errno(r, "Cannot watch %s: %m", path);

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
