/* A PhidgetRFID 1023 (or, with --evdev, a keyboard-wedge reader) as a FUSE file, for driving the
 * real rfid_daemon without USB (rfid-readers.md section 14.1).
 *
 *   fake-hidraw [--pid=0x31|0x30|0x34] [--tag_interval_ms=50] [--echo_interval_ms=250] [--evdev] <mountpoint>
 *
 * Serves <mountpoint>/hidraw0 (or <mountpoint>/event0 with --evdev). Reads return one queued report
 * (whole evdev records with --evdev), EAGAIN for a non-blocking open when nothing is queued; poll
 * says readable while something is. Writes are printed as "out <hex bytes>". The hidraw and evdev
 * ioctls rfid_daemon uses are answered (FUSE's restricted ioctls: each encodes its size); EVIOCGRAB
 * cannot pass through FUSE and fails with EFAULT in the kernel.
 *
 * Commands on stdin, one a line: "tag <10 hex>" (card on the antenna), "notag", "raw <hex bytes>"
 * (queue a report), "echo on|off" (v2 state echoes), "type <text>" (--evdev: key presses, Shift
 * around capitals, then Enter), "wfail <errno>" / "wfail off" (writes fail with that error, printed
 * as "failed <hex bytes>", until switched off), "sync" (nothing: its "ok" line proves every earlier
 * line was read), "quit". Each command is answered "ok <command>"; prints "ready" once mounted. Killing it (SIGKILL) unmounts
 * through auto_unmount: the daemon sees an unplug. */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <linux/hidraw.h>
#include <linux/input.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_MAX 4096
#define REPORT_MAX 64

/* The descriptor of rfid-readers.md section 2.2: 8-byte input and output reports. */
static const uint8_t descriptor[] = {
        0x06, 0x00, 0xff, 0x09, 0x01, 0xa1, 0x01, 0x15, 0x00, 0x26, 0xff, 0x00, 0x75, 0x08,
        0x95, 0x08, 0x09, 0x01, 0x81, 0x02, 0x95, 0x08, 0x09, 0x01, 0x91, 0x02, 0xc0,
};

typedef struct Item {
        uint8_t data[REPORT_MAX];
        size_t len;
} Item;

static struct {
        pthread_mutex_t lock;
        pthread_cond_t cond;            /* queue not empty, or the emulation's settings changed */
        Item queue[QUEUE_MAX];
        size_t head, count;
        struct fuse_pollhandle *ph;

        unsigned pid;
        bool evdev;
        unsigned tag_interval_ms, echo_interval_ms;
        bool card;
        uint8_t tag[5];
        uint8_t state;                  /* v2: the state byte of the last write */
        bool echo;
        int write_errno;                /* "wfail": writes fail with it */
} fake = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .cond = PTHREAD_COND_INITIALIZER,
        .pid = 0x31,
        .tag_interval_ms = 50,
        .echo_interval_ms = 250,
        .echo = true,
};

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *file_name(void) {
        return fake.evdev ? "/event0" : "/hidraw0";
}

static void say(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *format, ...) {
        va_list ap;

        pthread_mutex_lock(&out_lock);
        va_start(ap, format);
        vprintf(format, ap);
        va_end(ap);
        putchar('\n');
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);
}

/* Called with the lock held. */
static void queue_push(const void *data, size_t len) {
        Item *it;

        if (fake.count == QUEUE_MAX || len > REPORT_MAX)
                return;
        it = &fake.queue[(fake.head + fake.count) % QUEUE_MAX];
        memcpy(it->data, data, len);
        it->len = len;
        fake.count++;
        pthread_cond_broadcast(&fake.cond);
        if (fake.ph) {
                (void) fuse_notify_poll(fake.ph);
                fuse_pollhandle_destroy(fake.ph);
                fake.ph = NULL;
        }
}

static void push_input_event(uint16_t type, uint16_t code, int32_t value) {
        struct input_event e = { .type = type, .code = code, .value = value };
        struct timeval tv;

        gettimeofday(&tv, NULL);
        e.input_event_sec = tv.tv_sec;
        e.input_event_usec = tv.tv_usec;
        queue_push(&e, sizeof(e));
}

/* ---- FUSE ---- */

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
        memset(st, 0, sizeof(*st));
        if (strcmp(path, "/") == 0) {
                st->st_mode = S_IFDIR | 0755;
                st->st_nlink = 2;
                return 0;
        }
        if (strcmp(path, file_name()) == 0) {
                st->st_mode = S_IFREG | 0666;
                st->st_nlink = 1;
                return 0;
        }
        return -ENOENT;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
        if (strcmp(path, "/") != 0)
                return -ENOENT;
        fill(buf, ".", NULL, 0, 0);
        fill(buf, "..", NULL, 0, 0);
        fill(buf, file_name() + 1, NULL, 0, 0);
        return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi) {
        if (strcmp(path, file_name()) != 0)
                return -ENOENT;
        fi->direct_io = 1;
        fi->nonseekable = 1;
        return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
        size_t n = 0;

        pthread_mutex_lock(&fake.lock);
        while (fake.count == 0) {
                if (fi->flags & O_NONBLOCK) {
                        pthread_mutex_unlock(&fake.lock);
                        return -EAGAIN;
                }
                pthread_cond_wait(&fake.cond, &fake.lock);
        }
        /* hidraw: one report per read. evdev: as many whole records as fit. */
        do {
                Item *it = &fake.queue[fake.head];
                size_t len = it->len < size - n ? it->len : size - n;
                if (fake.evdev && len < it->len)
                        break;
                memcpy(buf + n, it->data, len);
                n += len;
                fake.head = (fake.head + 1) % QUEUE_MAX;
                fake.count--;
        } while (fake.evdev && fake.count > 0 && n < size);
        pthread_mutex_unlock(&fake.lock);
        return (int) n;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
        char line[8 + 3 * 4096];
        size_t len = 0;

        for (size_t i = 0; i < size && len + 4 < sizeof(line); i++)
                len += (size_t) snprintf(line + len, sizeof(line) - len, "%s%02x", i ? " " : "", (uint8_t) buf[i]);
        line[len] = '\0';
        pthread_mutex_lock(&fake.lock);
        if (fake.write_errno) {
                int e = fake.write_errno;

                pthread_mutex_unlock(&fake.lock);
                say("failed %s", line);
                return -e;
        }
        /* Byte 0 is the report number; byte 1 the state (v2 takes it, v1 ignores writes). */
        if (!fake.evdev && fake.pid != 0x30 && size >= 2) {
                fake.state = (uint8_t) buf[1];
                pthread_cond_broadcast(&fake.cond);
        }
        pthread_mutex_unlock(&fake.lock);
        say("out %s", line);
        return (int) size;
}

static int fs_poll(const char *path, struct fuse_file_info *fi, struct fuse_pollhandle *ph, unsigned *reventsp) {
        pthread_mutex_lock(&fake.lock);
        if (ph) {
                if (fake.ph)
                        fuse_pollhandle_destroy(fake.ph);
                fake.ph = ph;
        }
        if (fake.count > 0)
                *reventsp |= POLLIN;
        pthread_mutex_unlock(&fake.lock);
        return 0;
}

static int copy_string(const char *s, void *data, size_t size) {
        size_t n = strlen(s) + 1;

        if (n > size)
                n = size;
        memcpy(data, s, n);
        return (int) n;
}

static void set_bit(uint8_t *bits, size_t size, unsigned bit) {
        if (bit / 8 < size)
                bits[bit / 8] |= (uint8_t) (1u << (bit % 8));
}

static int ioctl_hidraw(unsigned int cmd, void *data) {
        size_t size = _IOC_SIZE(cmd);

        switch (cmd) {
        case HIDIOCGRAWINFO: {
                struct hidraw_devinfo info = { .bustype = BUS_USB, .vendor = 0x06c2, .product = (int16_t) fake.pid };
                memcpy(data, &info, sizeof(info));
                return 0;
        }
        case HIDIOCGRDESCSIZE: {
                int n = (int) sizeof(descriptor);
                memcpy(data, &n, sizeof(n));
                return 0;
        }
        case HIDIOCGRDESC: {
                struct hidraw_report_descriptor *d = data;
                d->size = sizeof(descriptor);
                memcpy(d->value, descriptor, sizeof(descriptor));
                return 0;
        }
        default:
                if (_IOC_TYPE(cmd) == 'H' && _IOC_NR(cmd) == 0x04 && _IOC_DIR(cmd) == _IOC_READ)
                        return copy_string("Phidgets Inc. PhidgetRFID", data, size);
                return -ENOTTY;
        }
}

static const uint16_t wedge_keys[] = {
        KEY_0, KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9, KEY_ENTER, KEY_KPENTER,
        KEY_LEFTSHIFT, KEY_RIGHTSHIFT, KEY_A, KEY_B, KEY_C, KEY_D, KEY_E, KEY_F, KEY_G, KEY_H, KEY_I, KEY_J,
        KEY_K, KEY_L, KEY_M, KEY_N, KEY_O, KEY_P, KEY_Q, KEY_R, KEY_S, KEY_T, KEY_U, KEY_V, KEY_W, KEY_X,
        KEY_Y, KEY_Z,
};

static int ioctl_evdev(unsigned int cmd, void *data) {
        size_t size = _IOC_SIZE(cmd);

        switch (cmd) {
        case EVIOCGVERSION: {
                int v = EV_VERSION;
                memcpy(data, &v, sizeof(v));
                return 0;
        }
        case EVIOCGID: {
                struct input_id id = { .bustype = BUS_USB, .vendor = 0xffff, .product = 0x0035, .version = 0x0110 };
                memcpy(data, &id, sizeof(id));
                return 0;
        }
        case EVIOCGREP: {
                unsigned rep[2] = { 250, 33 };
                memcpy(data, rep, sizeof(rep));
                return 0;
        }
        default:
                break;
        }
        if (_IOC_TYPE(cmd) != 'E' || _IOC_DIR(cmd) != _IOC_READ)
                return -ENOTTY;
        switch (_IOC_NR(cmd)) {
        case 0x06:
                return copy_string("Fake RFID Keyboard Wedge", data, size);
        case 0x07: case 0x08:
                return -ENOENT;
        case 0x09: case 0x18: case 0x19: case 0x1b:
                memset(data, 0, size);
                return (int) size;
        case 0x20:
                memset(data, 0, size);
                set_bit(data, size, EV_SYN);
                set_bit(data, size, EV_KEY);
                return (int) size;
        case 0x20 + EV_KEY:
                memset(data, 0, size);
                for (size_t i = 0; i < sizeof(wedge_keys) / sizeof(wedge_keys[0]); i++)
                        set_bit(data, size, wedge_keys[i]);
                return (int) size;
        default:
                if (_IOC_NR(cmd) > 0x20 && _IOC_NR(cmd) < 0x20 + EV_MAX) {
                        memset(data, 0, size);
                        return (int) size;
                }
                return -ENOTTY;
        }
}

static int fs_ioctl(const char *path, unsigned int cmd, void *arg, struct fuse_file_info *fi, unsigned int flags,
                    void *data) {
        if (flags & FUSE_IOCTL_COMPAT)
                return -ENOSYS;
        return fake.evdev ? ioctl_evdev(cmd, data) : ioctl_hidraw(cmd, data);
}

static void *emulation_thread(void *arg);
static void *command_thread(void *arg);

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
        pthread_t t;

        cfg->direct_io = 1;
        cfg->attr_timeout = 0;
        cfg->entry_timeout = 0;
        if (pthread_create(&t, NULL, emulation_thread, NULL) != 0 || pthread_create(&t, NULL, command_thread, NULL) != 0) {
                fprintf(stderr, "fake-hidraw: cannot start threads\n");
                exit(1);
        }
        say("ready");
        return NULL;
}

static const struct fuse_operations ops = {
        .getattr = fs_getattr,
        .readdir = fs_readdir,
        .open = fs_open,
        .read = fs_read,
        .write = fs_write,
        .poll = fs_poll,
        .ioctl = fs_ioctl,
        .init = fs_init,
};

/* ---- the reader's behaviour ---- */

static uint64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* v2 (firmware 201 behaviour): tag reports while a card is set and the antenna is on, a state echo
 * every echo interval. v1: tag reports whenever a card is set, no echoes. */
static void *emulation_thread(void *arg) {
        uint64_t next_tag = 0, next_echo = now_ms() + fake.echo_interval_ms;

        pthread_mutex_lock(&fake.lock);
        for (;;) {
                uint64_t now = now_ms(), wake = now + 1000;
                bool v1 = fake.pid == 0x30;
                bool tagging = !fake.evdev && fake.card && (v1 || (fake.state & 0x08));
                bool echoing = !fake.evdev && !v1 && fake.echo;

                if (tagging) {
                        if (now >= next_tag) {
                                uint8_t r[8] = { 0x00 };
                                memcpy(r + 1, fake.tag, 5);
                                queue_push(r, sizeof(r));
                                next_tag = now + fake.tag_interval_ms;
                        }
                        wake = next_tag < wake ? next_tag : wake;
                } else
                        next_tag = 0;
                if (echoing) {
                        if (now >= next_echo) {
                                uint8_t r[8] = { 0x01, fake.state };
                                queue_push(r, sizeof(r));
                                next_echo = now + fake.echo_interval_ms;
                        }
                        wake = next_echo < wake ? next_echo : wake;
                }

                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                uint64_t ms = wake > now ? wake - now : 0;
                ts.tv_sec += (time_t) (ms / 1000);
                ts.tv_nsec += (long) (ms % 1000) * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                (void) pthread_cond_timedwait(&fake.cond, &fake.lock, &ts);
        }
        return NULL;
}

static int parse_hex(const char *s, uint8_t *out, size_t max) {
        size_t n = 0;

        while (*s) {
                unsigned v;
                int used = 0;

                while (*s == ' ')
                        s++;
                if (!*s)
                        break;
                if (n == max || sscanf(s, "%2x%n", &v, &used) != 1 || used == 0)
                        return -1;
                out[n++] = (uint8_t) v;
                s += used;
        }
        return (int) n;
}

static void type_text(const char *text) {
        static const char letters[] = "abcdefghijklmnopqrstuvwxyz";
        static const uint16_t letter_keys[] = {
                KEY_A, KEY_B, KEY_C, KEY_D, KEY_E, KEY_F, KEY_G, KEY_H, KEY_I, KEY_J, KEY_K, KEY_L, KEY_M,
                KEY_N, KEY_O, KEY_P, KEY_Q, KEY_R, KEY_S, KEY_T, KEY_U, KEY_V, KEY_W, KEY_X, KEY_Y, KEY_Z,
        };
        static const uint16_t digit_keys[] = { KEY_0, KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9 };

        for (const char *c = text; ; c++) {
                uint16_t code;
                bool shift = false;

                if (!*c)
                        code = KEY_ENTER;
                else if (*c >= '0' && *c <= '9')
                        code = digit_keys[*c - '0'];
                else if (*c >= 'a' && *c <= 'z')
                        code = letter_keys[strchr(letters, *c) - letters];
                else if (*c >= 'A' && *c <= 'Z') {
                        code = letter_keys[*c - 'A'];
                        shift = true;
                } else if (*c == ' ')
                        code = KEY_SPACE;
                else
                        continue;
                if (shift) {
                        push_input_event(EV_KEY, KEY_LEFTSHIFT, 1);
                        push_input_event(EV_SYN, SYN_REPORT, 0);
                }
                push_input_event(EV_MSC, MSC_SCAN, 0x70000 + code);
                push_input_event(EV_KEY, code, 1);
                push_input_event(EV_SYN, SYN_REPORT, 0);
                push_input_event(EV_KEY, code, 0);
                push_input_event(EV_SYN, SYN_REPORT, 0);
                if (shift) {
                        push_input_event(EV_KEY, KEY_LEFTSHIFT, 0);
                        push_input_event(EV_SYN, SYN_REPORT, 0);
                }
                if (!*c)
                        break;
        }
}

static void *command_thread(void *arg) {
        char line[1024];

        while (fgets(line, sizeof(line), stdin)) {
                uint8_t bytes[REPORT_MAX];
                int n;

                line[strcspn(line, "\n")] = '\0';
                pthread_mutex_lock(&fake.lock);
                if (strncmp(line, "tag ", 4) == 0 && parse_hex(line + 4, bytes, sizeof(bytes)) == 5) {
                        memcpy(fake.tag, bytes, 5);
                        fake.card = true;
                        pthread_cond_broadcast(&fake.cond);
                } else if (strcmp(line, "notag") == 0) {
                        fake.card = false;
                        pthread_cond_broadcast(&fake.cond);
                } else if (strncmp(line, "raw ", 4) == 0 && (n = parse_hex(line + 4, bytes, sizeof(bytes))) > 0)
                        queue_push(bytes, (size_t) n);
                else if (strcmp(line, "echo on") == 0 || strcmp(line, "echo off") == 0) {
                        fake.echo = strcmp(line, "echo on") == 0;
                        pthread_cond_broadcast(&fake.cond);
                } else if (strncmp(line, "type ", 5) == 0 && fake.evdev)
                        type_text(line + 5);
                else if (strcmp(line, "wfail off") == 0)
                        fake.write_errno = 0;
                else if (strncmp(line, "wfail ", 6) == 0 && atoi(line + 6) > 0)
                        fake.write_errno = atoi(line + 6);
                else if (strcmp(line, "sync") == 0)
                        ;
                else if (strcmp(line, "quit") == 0)
                        _exit(0);
                else {
                        pthread_mutex_unlock(&fake.lock);
                        say("error unknown command: %s", line);
                        continue;
                }
                pthread_mutex_unlock(&fake.lock);
                say("ok %s", line);
        }
        return NULL;
}

int main(int argc, char **argv) {
        const char *mountpoint = NULL;
        char *fargv[8];
        int fargc = 0;

        for (int i = 1; i < argc; i++) {
                if (strncmp(argv[i], "--pid=", 6) == 0)
                        fake.pid = (unsigned) strtoul(argv[i] + 6, NULL, 0);
                else if (strncmp(argv[i], "--tag_interval_ms=", 18) == 0)
                        fake.tag_interval_ms = (unsigned) strtoul(argv[i] + 18, NULL, 10);
                else if (strncmp(argv[i], "--echo_interval_ms=", 19) == 0)
                        fake.echo_interval_ms = (unsigned) strtoul(argv[i] + 19, NULL, 10);
                else if (strcmp(argv[i], "--evdev") == 0)
                        fake.evdev = true;
                else if (argv[i][0] != '-' && !mountpoint)
                        mountpoint = argv[i];
                else {
                        fprintf(stderr, "fake-hidraw: unknown argument %s\n", argv[i]);
                        return 2;
                }
        }
        if (!mountpoint || fake.tag_interval_ms == 0 || fake.echo_interval_ms == 0) {
                fprintf(stderr, "usage: fake-hidraw [--pid=0x31|0x30|0x34] [--tag_interval_ms=50] "
                                "[--echo_interval_ms=250] [--evdev] <mountpoint>\n");
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);

        fargv[fargc++] = argv[0];
        fargv[fargc++] = (char *) "-f";
        fargv[fargc++] = (char *) "-o";
        fargv[fargc++] = (char *) "auto_unmount";
        fargv[fargc++] = (char *) mountpoint;
        fargv[fargc] = NULL;
        return fuse_main(fargc, fargv, &ops, NULL);
}
