/* The drinks log: see drinks-log.h. The log is append-only; a line is complete and fsync'ed before
 * the flow is reported completed, so at start-up only a last line without its newline can be
 * partial, and it was never reported to anyone: cutting it off is safe. */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#define LOG_COMPONENT "DrinkManager"
#include "log.h"

#include "drinks-log.h"
#include "json-writer.h"
#include "util-io.h"
#include "util-utf8.h"

#define SCAN_CHUNK 4096

typedef struct DrinksLog {
        DrinkSink sink;                 /* first: the sink pointer is the log pointer */
        char *path;
        int fd;
        int64_t next_id;
} DrinksLog;

static int format_record(const Drink *d, int64_t drink_id, const char *terminator, char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "drink_id", drink_id);
        json_writer_field_string(&w, "uuid", d->uuid);
        drink_write_pour_json(d, &w);
        json_writer_field_uint(&w, "duration", d->duration_sec);
        drink_write_flags_json(d, &w);
        json_writer_object_end(&w);
        return json_writer_finish_with(&w, terminator, ret, ret_len);
}

int drinks_log_format_line(const Drink *d, int64_t drink_id, char **ret) {
        assert_return(d, -EINVAL);
        assert_return(ret, -EINVAL);

        return format_record(d, drink_id, "", ret, NULL);
}

/* ---- drinks log start-up scan ---- */

/* Offset of the last '\n' before 'before', or -1. */
static off_t find_prev_newline(int fd, off_t before) {
        char buf[SCAN_CHUNK];

        while (before > 0) {
                off_t start = before > SCAN_CHUNK ? before - SCAN_CHUNK : 0;
                ssize_t n = pread(fd, buf, (size_t) (before - start), start);
                if (n <= 0)
                        return -1;
                for (ssize_t i = n - 1; i >= 0; i--)
                        if (buf[i] == '\n')
                                return start + i;
                before = start;
        }
        return -1;
}

static bool is_json_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The drink_id of one line, read as text. Only a member counts: "drink_id" right after '{' or ','
 * (JSON escapes every '"' inside a string, so the same letters inside a username cannot match),
 * then ':' and a whole non-negative integer. */
static bool line_drink_id(const char *line, size_t len, int64_t *ret) {
        static const char key[] = "\"drink_id\"";
        const char *p = line, *end = line + len;

        while (p < end && (p = memmem(p, (size_t) (end - p), key, sizeof key - 1))) {
                const char *b = p, *q = p + sizeof key - 1;
                int64_t v = 0;
                size_t digits = 0;

                p = q;
                while (b > line && is_json_space(b[-1]))
                        b--;
                if (b == line || (b[-1] != '{' && b[-1] != ','))
                        continue;
                while (q < end && is_json_space(*q))
                        q++;
                if (q == end || *q++ != ':')
                        continue;
                while (q < end && is_json_space(*q))
                        q++;
                for (; q < end && *q >= '0' && *q <= '9'; q++, digits++) {
                        if (v > (INT64_MAX - 9) / 10)
                                return false;           /* no drink_id we could follow */
                        v = v * 10 + (*q - '0');
                }
                if (digits == 0 || (q < end && *q != ',' && *q != '}' && !is_json_space(*q)))
                        continue;
                *ret = v;
                return true;
        }
        return false;
}

/* 1 + the highest drink_id of any complete line. */
static int drinks_log_find_next_id(DrinksLog *l) {
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_(freep) char *line = NULL;
        size_t allocated = 0;
        unsigned lineno = 0;
        int64_t max = 0;
        ssize_t n;

        f = fopen(l->path, "re");
        if (!f)
                return log_error_errno(errno, "Cannot read %s: %m", l->path);
        while ((n = getline(&line, &allocated, f)) > 0) {
                int64_t id;

                lineno++;
                if (!line_drink_id(line, (size_t) n, &id)) {
                        log_warning("%s:%u: no drink_id in this line; ignoring it", l->path, lineno);
                        continue;
                }
                if (!utf8_is_valid_n(line, (size_t) n))
                        log_warning("%s:%u: the line is not valid UTF-8 (written by an older version?); "
                                    "drink_id %" PRIi64 " stays taken", l->path, lineno, id);
                max = MAX(max, id);
        }
        if (ferror(f))
                return log_error_errno(EIO, "Cannot read %s: %m", l->path);
        l->next_id = max + 1;
        return 0;
}

static int drinks_log_scan(DrinksLog *l) {
        struct stat st;
        off_t size;
        char last;

        if (fstat(l->fd, &st) < 0)
                return log_error_errno(errno, "Cannot stat %s: %m", l->path);
        size = st.st_size;
        l->next_id = 1;
        if (size == 0)
                return 0;

        if (pread(l->fd, &last, 1, size - 1) != 1)
                return log_error_errno(errno ?: EIO, "Cannot read %s: %m", l->path);
        if (last != '\n') {
                off_t nl = find_prev_newline(l->fd, size);
                off_t keep = nl + 1;    /* 0 if the file holds no complete line */

                log_error("%s: cutting off a torn last line (%jd bytes); that drink was never reported completed",
                          l->path, (intmax_t) (size - keep));
                if (ftruncate(l->fd, keep) < 0)
                        return log_error_errno(errno, "Cannot truncate %s: %m", l->path);
                if (fsync(l->fd) < 0)
                        return log_error_errno(errno, "Cannot fsync %s: %m", l->path);
        }
        return drinks_log_find_next_id(l);
}

static int drinks_log_open(DrinksLog *l) {
        int fd = open(l->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (fd < 0)
                return log_error_errno(errno, "Cannot open %s: %m", l->path);
        safe_close(l->fd);
        l->fd = fd;
        return 0;
}

/* Appends one drink durably (write + fsync) and gives it the next drink_id. -EBADMSG: the drink
 * cannot be written at all (its text is not UTF-8); other errors are the disk's. */
static int drinks_log_append(DrinksLog *l, Drink *d) {
        _cleanup_(freep) char *line = NULL;
        struct stat st;
        size_t len;
        int r;

        r = format_record(d, l->next_id, "\n", &line, &len);
        if (r == -EINVAL)
                return log_error_errno(EBADMSG, "Drink %s cannot be written to %s: its text is not valid UTF-8",
                                       d->uuid, l->path);
        if (r < 0)
                return log_error_errno(r, "Cannot format drink %s: %m", d->uuid);

        if (l->fd < 0) {
                r = drinks_log_open(l);
                if (r < 0)
                        return r;
        }
        if (fstat(l->fd, &st) < 0)
                return log_error_errno(errno, "Cannot stat %s: %m", l->path);

        /* A partial line at the end (a failed append whose rollback failed too, or another writer)
         * must not swallow this drink: start it on a line of its own. */
        if (st.st_size > 0) {
                char last = '\n';
                if (pread(l->fd, &last, 1, st.st_size - 1) == 1 && last != '\n') {
                        char *t = realloc(line, len + 2);
                        if (!t)
                                return log_error_errno(ENOMEM, "Cannot record drink %s: %m", d->uuid);
                        line = t;
                        log_warning("%s does not end with a newline; starting drink %s on a new line", l->path, d->uuid);
                        memmove(line + 1, line, len + 1);
                        line[0] = '\n';
                        len++;
                }
        }

        r = io_write_all(l->fd, line, len);
        if (r >= 0 && fsync(l->fd) < 0)
                r = -errno;
        if (r < 0) {
                /* Leave no partial line behind for the next append. */
                if (ftruncate(l->fd, st.st_size) < 0)
                        log_warning_errno(-errno, "Cannot cut the partial line off %s: %m", l->path);
                return log_error_errno(r, "Cannot record drink %s in %s: %m", d->uuid, l->path);
        }

        d->has_drink_id = true;
        d->drink_id = l->next_id++;
        return 0;
}

static int drinks_log_record(DrinkSink *sink, Drink *d) {
        int r = drinks_log_append((DrinksLog *) sink, d);
        return r < 0 ? r : DRINK_SINK_ACCEPTED;
}

/* Every drink is accepted as it is written: none is ever pending. */
static size_t drinks_log_n_pending(DrinkSink *sink) {
        return 0;
}

/* Whether a line holds this drink: its "uuid" member, read as text like drink_id (a line that does
 * not parse still counts). The drinks in question are the newest ones: read from the end. */
static int drinks_log_contains(DrinkSink *sink, const char *uuid) {
        DrinksLog *l = (DrinksLog *) sink;
        _cleanup_(freep) char *needle = NULL;
        char buf[SCAN_CHUNK + 128];
        struct stat st;
        off_t end;
        size_t nlen;

        if (asprintf(&needle, "\"uuid\":\"%s\"", uuid) < 0) {
                needle = NULL;
                return -ENOMEM;
        }
        nlen = strlen(needle);
        if (l->fd < 0 || fstat(l->fd, &st) < 0)
                return -EIO;
        /* Overlapping windows, so that a match across a chunk boundary is found. */
        for (end = st.st_size; end > 0;) {
                off_t start = end > SCAN_CHUNK ? end - SCAN_CHUNK : 0;
                size_t want = (size_t) (end - start) + (size_t) MIN((off_t) nlen, st.st_size - end);
                ssize_t n = pread(l->fd, buf, want, start);
                if (n < 0)
                        return -errno;
                if (memmem(buf, (size_t) n, needle, nlen))
                        return 1;
                end = start;
        }
        return 0;
}

static int drinks_log_reopen(DrinkSink *sink) {
        return drinks_log_open((DrinksLog *) sink);
}

static void drinks_log_free(DrinkSink *sink) {
        DrinksLog *l = (DrinksLog *) sink;

        safe_close(l->fd);
        free(l->path);
        free(l);
}

static const DrinkSinkVTable drinks_log_vtable = {
        .name = "drinks-log",
        .record = drinks_log_record,
        .n_pending = drinks_log_n_pending,
        .contains = drinks_log_contains,
        .reopen = drinks_log_reopen,
        .free = drinks_log_free,
};

int drinks_log_new(DrinkSink **ret, const char *state_dir) {
        DrinksLog *l;
        int r;

        assert_return(ret, -EINVAL);
        assert_return(!isempty(state_dir), -EINVAL);

        r = io_mkdir_p(state_dir, 0750);
        if (r < 0)
                return log_error_errno(r, "Cannot create state directory %s: %m", state_dir);

        l = calloc(1, sizeof(DrinksLog));
        if (!l)
                return -ENOMEM;
        l->sink.vtable = &drinks_log_vtable;
        l->fd = -1;
        if (asprintf(&l->path, "%s/drinks.log", state_dir) < 0) {
                free(l);
                return -ENOMEM;
        }

        int rfd = open(l->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (rfd < 0) {
                r = log_error_errno(errno, "Cannot open %s: %m", l->path);
                drinks_log_free(&l->sink);
                return r;
        }
        l->fd = rfd;
        r = drinks_log_scan(l);
        if (r < 0) {
                drinks_log_free(&l->sink);
                return r;
        }
        log_info("Recording drinks in %s (next drink_id %" PRIi64 ")", l->path, l->next_id);
        *ret = &l->sink;
        return 0;
}

int64_t drinks_log_next_id(DrinkSink *s) {
        assert_return(s, -EINVAL);
        return ((DrinksLog *) s)->next_id;
}
