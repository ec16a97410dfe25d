/* Logging: see log.h. Each line is assembled in memory and written with one write() (O_APPEND for
 * the file), so that concurrent processes sharing a console or log file never interleave. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"
#include "util-escape.h"
#include "util-io.h"
#include "util-strbuf.h"

#define DEFAULT_FORMAT "%(asctime)s %(levelname)-8s (%(name)s) %(message)s"
/* Messages longer than this are cut: a log line is not the place for megabytes. */
#define MESSAGE_MAX (64U * 1024U)
#define WIDTH_MAX 256

typedef enum SegmentType {
        SEG_LITERAL,
        SEG_ASCTIME,
        SEG_LEVELNAME,
        SEG_NAME,
        SEG_MESSAGE,
        SEG_PROCESS,
} SegmentType;

typedef struct Segment {
        SegmentType type;
        bool left;              /* '-' flag */
        int width;
        char *literal;          /* SEG_LITERAL */
} Segment;

typedef struct LogState {
        Segment *segments;
        size_t n_segments;
        bool configured;
        bool console;
        int max_level;
        int journal;            /* -1 unknown, else whether stderr is the journal */

        bool to_file;
        char *logfile;          /* absolute */
        int file_fd;
        bool rotate;
        int max_files;
        char file_day[11];      /* YYYY-MM-DD the open file covers */

        uint64_t fake_now_usec; /* test hook, 0 = real clock */
} LogState;

static LogState state = {
        .console = true,
        .max_level = LOG_INFO,
        .journal = -1,
        .file_fd = -1,
};

static void segments_free(Segment *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(s[i].literal);
        free(s);
}

static int segments_add(Segment **s, size_t *n, Segment seg) {
        Segment *t = realloc(*s, (*n + 1) * sizeof(Segment));
        if (!t) {
                free(seg.literal);
                return -ENOMEM;
        }
        t[(*n)++] = seg;
        *s = t;
        return 0;
}

static int add_literal(Segment **s, size_t *n, const char *p, size_t len) {
        if (len == 0)
                return 0;
        char *l = strndup(p, len);
        if (!l)
                return -ENOMEM;
        return segments_add(s, n, (Segment) { .type = SEG_LITERAL, .literal = l });
}

static int format_error(char **ret_error, const char *format, size_t offset) {
        if (ret_error) {
                char *m = NULL;
                if (asprintf(&m, "invalid --logformat '%s': unsupported directive at offset %zu "
                             "(allowed: %%(asctime)s %%(levelname)s %%(name)s %%(message)s "
                             "%%(process)d, optional '-' and width, %%%%)", format, offset) < 0)
                        m = NULL;
                *ret_error = m;
        }
        return -EINVAL;
}

/* Python logging's %-style subset: %(key)[-][width]conv and %%. */
static int format_compile(const char *format, Segment **ret, size_t *ret_n, char **ret_error) {
        Segment *s = NULL;
        size_t n = 0;
        const char *lit = format;
        int r;

        for (const char *p = format; *p;) {
                if (*p != '%') {
                        p++;
                        continue;
                }
                r = add_literal(&s, &n, lit, (size_t) (p - lit));
                if (r < 0)
                        goto fail;
                if (p[1] == '%') {
                        r = add_literal(&s, &n, "%", 1);
                        if (r < 0)
                                goto fail;
                        p += 2;
                        lit = p;
                        continue;
                }
                size_t at = (size_t) (p - format);
                if (p[1] != '(') {
                        r = format_error(ret_error, format, at);
                        goto fail;
                }
                const char *key = p + 2, *close = strchr(key, ')');
                if (!close) {
                        r = format_error(ret_error, format, at);
                        goto fail;
                }
                size_t keylen = (size_t) (close - key);
                Segment seg = {};
                const char *q = close + 1;
                if (*q == '-') {
                        seg.left = true;
                        q++;
                }
                while (isdigit((unsigned char) *q)) {
                        seg.width = seg.width * 10 + (*q - '0');
                        if (seg.width > WIDTH_MAX) {
                                r = format_error(ret_error, format, at);
                                goto fail;
                        }
                        q++;
                }
                char conv = *q;
                bool ok = true;
                if (keylen == 7 && strncmp(key, "asctime", 7) == 0 && conv == 's')
                        seg.type = SEG_ASCTIME;
                else if (keylen == 9 && strncmp(key, "levelname", 9) == 0 && conv == 's')
                        seg.type = SEG_LEVELNAME;
                else if (keylen == 4 && strncmp(key, "name", 4) == 0 && conv == 's')
                        seg.type = SEG_NAME;
                else if (keylen == 7 && strncmp(key, "message", 7) == 0 && conv == 's')
                        seg.type = SEG_MESSAGE;
                else if (keylen == 7 && strncmp(key, "process", 7) == 0 && (conv == 'd' || conv == 's'))
                        seg.type = SEG_PROCESS;
                else
                        ok = false;
                if (!ok) {
                        r = format_error(ret_error, format, at);
                        goto fail;
                }
                r = segments_add(&s, &n, seg);
                if (r < 0)
                        goto fail;
                p = q + 1;
                lit = p;
        }
        r = add_literal(&s, &n, lit, strlen(lit));
        if (r < 0)
                goto fail;
        *ret = s;
        *ret_n = n;
        return 0;
fail:
        segments_free(s, n);
        if (r == -ENOMEM && ret_error)
                *ret_error = NULL;
        return r;
}

static void buf_add_padded(StrBuf *b, const char *s, const Segment *seg) {
        size_t n = strlen(s);
        size_t pad = seg->width > 0 && (size_t) seg->width > n ? (size_t) seg->width - n : 0;
        static const char spaces[WIDTH_MAX] = { [0 ... WIDTH_MAX - 1] = ' ' };
        if (!seg->left)
                strbuf_append(b, spaces, pad);
        strbuf_append(b, s, n);
        if (seg->left)
                strbuf_append(b, spaces, pad);
}

static const char *level_name(int level) {
        switch (level & LOG_PRIMASK) {
        case LOG_DEBUG:
                return "DEBUG";
        case LOG_INFO:
        case LOG_NOTICE:
                return "INFO";
        case LOG_WARNING:
                return "WARNING";
        case LOG_ERR:
                return "ERROR";
        default:
                return "CRITICAL";
        }
}

/* The priorities journald is told: one per level name. */
static int level_priority(int level) {
        switch (level & LOG_PRIMASK) {
        case LOG_DEBUG:
                return LOG_DEBUG;
        case LOG_INFO:
        case LOG_NOTICE:
                return LOG_INFO;
        case LOG_WARNING:
                return LOG_WARNING;
        case LOG_ERR:
                return LOG_ERR;
        default:
                return LOG_CRIT;
        }
}

static void now_realtime(struct timespec *ts) {
        if (state.fake_now_usec > 0) {
                ts->tv_sec = (time_t) (state.fake_now_usec / USEC_PER_SEC);
                ts->tv_nsec = (long) (state.fake_now_usec % USEC_PER_SEC * NSEC_PER_USEC);
                return;
        }
        (void) clock_gettime(CLOCK_REALTIME, ts);
}

static void format_day(time_t t, char out[static 11]) {
        struct tm tm;
        if (!localtime_r(&t, &tm) || strftime(out, 11, "%Y-%m-%d", &tm) != 10)
                strcpy(out, "1970-01-01");
}

static void format_asctime(const struct timespec *ts, char out[static 32]) {
        struct tm tm;
        time_t t = ts->tv_sec;
        if (!localtime_r(&t, &tm) || strftime(out, 20, "%Y-%m-%d %H:%M:%S", &tm) != 19)
                strcpy(out, "1970-01-01 00:00:00");
        snprintf(out + 19, 32 - 19, ",%03d", (int) ((ts->tv_nsec / 1000000L) % 1000));
}

static bool detect_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;
        int k = 0;

        if (isempty(e))
                return false;
        if (sscanf(e, "%llu:%llu%n", &dev, &ino, &k) != 2 || e[k] != '\0')
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

static int file_open(void) {
        struct stat st;
        int fd = open(state.logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0)
                return -errno;
        state.file_fd = fd;
        /* A file that already has content covers the day it was last written. */
        if (fstat(fd, &st) >= 0 && st.st_size > 0)
                format_day(st.st_mtim.tv_sec, state.file_day);
        else {
                struct timespec ts;
                now_realtime(&ts);
                format_day(ts.tv_sec, state.file_day);
        }
        return 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool is_rotated_suffix(const char *s) {
        /* ".YYYY-MM-DD" */
        if (strlen(s) != 11 || s[0] != '.' || s[5] != '-' || s[8] != '-')
                return false;
        for (int i = 1; i < 11; i++)
                if (i != 5 && i != 8 && !isdigit((unsigned char) s[i]))
                        return false;
        return true;
}

static void prune_rotated(void) {
        if (state.max_files <= 0)
                return;

        _cleanup_(freep) char *dir = strdup(state.logfile);
        if (!dir)
                return;
        char *slash = strrchr(dir, '/');
        if (!slash)
                return;
        const char *base = state.logfile + (slash - dir) + 1;
        if (slash == dir)
                slash[1] = '\0';
        else
                *slash = '\0';

        DIR *d = opendir(dir);
        if (!d)
                return;
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        size_t blen = strlen(base);
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, base, blen) != 0 || !is_rotated_suffix(de->d_name + blen))
                        continue;
                char **t = realloc(names, (n + 1) * sizeof(char *));
                if (!t)
                        break;
                names = t;
                names[n] = strdup(de->d_name);
                if (!names[n])
                        break;
                n++;
        }
        closedir(d);
        if (n > 0)
                qsort(names, n, sizeof(char *), cmp_str);
        /* Date suffixes sort chronologically: delete from the oldest end. */
        for (size_t i = 0; i + (size_t) state.max_files < n; i++) {
                _cleanup_(freep) char *p = NULL;
                if (asprintf(&p, "%s/%s", streq(dir, "/") ? "" : dir, names[i]) >= 0)
                        (void) unlink(p);
                else
                        p = NULL;
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

static void maybe_rotate(const struct timespec *now) {
        char today[11];

        if (!state.rotate || state.file_fd < 0)
                return;
        format_day(now->tv_sec, today);
        if (streq(today, state.file_day))
                return;

        _cleanup_(freep) char *target = NULL;
        if (asprintf(&target, "%s.%s", state.logfile, state.file_day) < 0)
                return;
        state.file_fd = safe_close(state.file_fd);
        (void) rename(state.logfile, target);
        if (file_open() < 0)
                return;
        strcpy(state.file_day, today);
        prune_rotated();
}

/* Printable ASCII needs no escaping: the common case costs one scan. */
static bool message_needs_escape(const char *s) {
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p >= 0x7f)
                        return true;
        return false;
}

int log_internal(int level, int error, const char *logger, const char *format, ...) {
        int saved_errno = errno;
        if (error == INT_MIN)
                error = EINVAL;
        int ret = error == 0 ? 0 : -abs(error);
        char stack[1024];
        _cleanup_(freep) char *heap = NULL, *escaped = NULL;
        const char *msg = stack;

        if ((level & LOG_PRIMASK) > state.max_level)
                goto out;

        bool console = state.console;
        if (!console && state.file_fd < 0 && !(state.to_file && state.logfile))
                goto out;

        /* The message, with %m meaning the error passed in. */
        if (!format)
                msg = "(null)";
        else {
                va_list ap, aq;
                va_start(ap, format);
                va_copy(aq, ap);
                errno = error == 0 ? saved_errno : abs(error);
                int n = vsnprintf(stack, sizeof stack, format, ap);
                va_end(ap);
                if (n < 0)
                        strcpy(stack, "(unformattable message)");
                else if ((size_t) n >= sizeof stack) {
                        size_t size = MIN((size_t) n + 1, MESSAGE_MAX);
                        heap = malloc(size);
                        if (heap) {
                                errno = error == 0 ? saved_errno : abs(error);
                                (void) vsnprintf(heap, size, format, aq);
                                msg = heap;
                        }
                }
                va_end(aq);
        }
        if (!logger)
                logger = "main";

        /* Whatever went into the message (a peer's name, a file's line, a server's answer), the
         * line stays one line of valid UTF-8: control characters and invalid bytes come out as
         * escapes, so no input can forge an entry or steer a terminal. */
        if (message_needs_escape(msg)) {
                escaped = escape_for_log_line(msg);
                if (escaped)
                        msg = escaped;
                else
                        msg = "(message dropped: out of memory escaping it)";
        }

        struct timespec now;
        now_realtime(&now);

        if (state.journal < 0)
                state.journal = detect_journal();

        /* A line that cannot be assembled in full is not written at all. */
        if (console && state.journal) {
                StrBuf b = STRBUF_INIT;
                strbuf_printf(&b, "<%d>(%s) %s\n", level_priority(level), logger, msg);
                if (!b.error)
                        (void) io_write_all(STDERR_FILENO, b.buf, b.len);
                strbuf_done(&b);
                console = false;
        }

        if (state.file_fd >= 0)
                maybe_rotate(&now);
        if (!console && state.file_fd < 0)
                goto out;

        StrBuf b = STRBUF_INIT;
        if (!state.segments)
                (void) format_compile(DEFAULT_FORMAT, &state.segments, &state.n_segments, NULL);
        for (size_t i = 0; i < state.n_segments; i++) {
                const Segment *seg = state.segments + i;
                char tmp[32];
                switch (seg->type) {
                case SEG_LITERAL:
                        strbuf_puts(&b, seg->literal);
                        break;
                case SEG_ASCTIME:
                        format_asctime(&now, tmp);
                        buf_add_padded(&b, tmp, seg);
                        break;
                case SEG_LEVELNAME:
                        buf_add_padded(&b, level_name(level), seg);
                        break;
                case SEG_NAME:
                        buf_add_padded(&b, logger, seg);
                        break;
                case SEG_MESSAGE:
                        buf_add_padded(&b, msg, seg);
                        break;
                case SEG_PROCESS:
                        snprintf(tmp, sizeof tmp, "%ld", (long) getpid());
                        buf_add_padded(&b, tmp, seg);
                        break;
                }
        }
        strbuf_putc(&b, '\n');
        if (!b.error) {
                if (console)
                        (void) io_write_all(STDERR_FILENO, b.buf, b.len);
                if (state.file_fd >= 0)
                        (void) io_write_all(state.file_fd, b.buf, b.len);
        }
        strbuf_done(&b);
out:
        errno = saved_errno;
        return ret;
}

int log_setup(const LogConfig *cfg, char **ret_error) {
        Segment *segs = NULL;
        size_t n = 0;
        int r;

        if (ret_error)
                *ret_error = NULL;
        assert_return(cfg, -EINVAL);

        /* Python's logging.Formatter treats an empty format as "%(message)s". */
        r = format_compile(isempty(cfg->format) ? (cfg->format ? "%(message)s" : DEFAULT_FORMAT) : cfg->format,
                           &segs, &n, ret_error);
        if (r < 0)
                return r;

        _cleanup_(freep) char *path = NULL;
        if (cfg->to_file) {
                const char *f = cfg->logfile;
                _cleanup_(freep) char *def = NULL;
                if (isempty(f)) {
                        if (asprintf(&def, "%s.log", cfg->program ?: "kegbot") < 0) {
                                segments_free(segs, n);
                                return -ENOMEM;
                        }
                        f = def;
                }
                if (f[0] == '/')
                        path = strdup(f);
                else {
                        _cleanup_(freep) char *cwd = getcwd(NULL, 0);
                        if (!cwd || asprintf(&path, "%s/%s", cwd, f) < 0)
                                path = NULL;
                }
                if (!path) {
                        segments_free(segs, n);
                        return -ENOMEM;
                }
        }

        log_close();
        state.segments = segs;
        state.n_segments = n;
        state.configured = true;
        state.console = cfg->to_console;
        state.max_level = cfg->verbose ? LOG_DEBUG : LOG_INFO;
        state.journal = detect_journal();
        state.to_file = cfg->to_file;
        state.rotate = cfg->rotate;
        state.max_files = cfg->max_files;
        state.logfile = TAKE_PTR(path);

        if (state.to_file) {
                r = file_open();
                if (r < 0) {
                        if (ret_error && asprintf(ret_error, "cannot open log file %s: %s",
                                                  state.logfile, strerror(-r)) < 0)
                                *ret_error = NULL;
                        return r;
                }
                prune_rotated();
        }
        return 0;
}

int log_reopen(void) {
        if (!state.to_file || !state.logfile)
                return 0;
        state.file_fd = safe_close(state.file_fd);
        return file_open();
}

void log_set_console(bool on) {
        state.console = on;
}

void log_set_max_level(int level) {
        state.max_level = level & LOG_PRIMASK;
}

int log_get_max_level(void) {
        return state.max_level;
}

void log_close(void) {
        state.file_fd = safe_close(state.file_fd);
        free(state.logfile);
        state.logfile = NULL;
        state.to_file = false;
        segments_free(state.segments, state.n_segments);
        state.segments = NULL;
        state.n_segments = 0;
}

void log_set_fake_time(uint64_t realtime_usec) {
        state.fake_now_usec = realtime_usec;
}
