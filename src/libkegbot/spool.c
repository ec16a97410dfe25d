/* Durable drink queue: see spool.h. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>

#define LOG_COMPONENT "DrinkManager"
#include "log.h"

#include "json-writer.h"
#include "spool.h"
#include "util-escape.h"
#include "util-io.h"
#include "util-time.h"
#include "util-utf8.h"
#include "util-uuid.h"

#define SPOOL_WINDOW_DEFAULT 256
#define SEQ_DIGITS 20
/* "<20 digits>-<36>.json" */
#define SPOOL_NAME_LEN (SEQ_DIGITS + 1 + 36 + 5)
#define SPOOL_NAME_MAX (SPOOL_NAME_LEN + 16)

typedef struct SpoolEntry {
        uint64_t seq;
        char uuid[UUID_STRING_MAX];
} SpoolEntry;

struct Spool {
        char *dir;
        int dir_fd;
        int failed_fd;
        uint64_t last_seq;

        /* Durable queued entries. Invariant: every durable queued file with seq <= boundary is in
         * win (sorted); when 'complete', there is none beyond the window at all. */
        SpoolEntry *win;
        size_t n_win, window_max;
        bool complete;
        uint64_t boundary;

        size_t n_disk;          /* durable queued files */
        size_t n_failed;
        size_t n_corrupt;
};

/* ---------------------------------------------------------------- records */

int spool_name_parse(const char *name, uint64_t *ret_seq, char ret_uuid[static UUID_STRING_MAX]) {
        uint64_t seq = 0;

        assert_return(name, -EINVAL);
        assert_return(ret_seq, -EINVAL);
        assert_return(ret_uuid, -EINVAL);

        if (strlen(name) != SPOOL_NAME_LEN || name[SEQ_DIGITS] != '-' ||
            !streq(name + SEQ_DIGITS + 1 + 36, ".json"))
                return -EINVAL;
        for (size_t i = 0; i < SEQ_DIGITS; i++) {
                if (name[i] < '0' || name[i] > '9')
                        return -EINVAL;
                unsigned dgt = (unsigned) (name[i] - '0');
                if (seq > (UINT64_MAX - dgt) / 10)
                        return -EINVAL;
                seq = seq * 10 + dgt;
        }
        char u[UUID_STRING_MAX];
        memcpy(u, name + SEQ_DIGITS + 1, 36);
        u[36] = 0;
        /* Names are matched exactly: the spool only ever creates lowercase ones. */
        if (!uuid_is_canonical(u))
                return -EINVAL;
        *ret_seq = seq;
        memcpy(ret_uuid, u, UUID_STRING_MAX);
        return 0;
}

static void name_format(char buf[static SPOOL_NAME_MAX], uint64_t seq, const char *uuid) {
        snprintf(buf, SPOOL_NAME_MAX, "%020" PRIu64 "-%s.json", seq, uuid);
}

int spool_drink_to_json(const Drink *d, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;
        char boot_id[ID128_STRING_MAX];

        assert_return(d, -EINVAL);
        assert_return(ret, -EINVAL);

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "version", 1);
        json_writer_field_string(&w, "uuid", d->uuid);
        json_writer_field_uint(&w, "seq", d->seq);
        drink_write_pour_json(d, &w);
        json_writer_field_uint(&w, "pour_time_unix", d->pour_realtime / USEC_PER_SEC);
        json_writer_field_uint(&w, "duration", d->duration_sec);
        drink_write_flags_json(d, &w);
        json_writer_field_string(&w, "boot_id", sd_id128_is_null(d->boot_id) ? "" : sd_id128_to_string(d->boot_id, boot_id));
        json_writer_field_uint(&w, "pour_boottime_ns", d->pour_boottime * NSEC_PER_USEC);
        if (d->in_doubt) {
                json_writer_key(&w, "in_doubt");
                json_writer_object_begin(&w);
                json_writer_field_uint(&w, "pour_time", d->sent_pour_time);
                json_writer_object_end(&w);
        }
        if (d->has_failure) {
                json_writer_key(&w, "failure");
                json_writer_object_begin(&w);
                json_writer_field_timestamp(&w, "time", d->failure.time_realtime);
                if (d->failure.http_status > 0)
                        json_writer_field_int(&w, "http_status", d->failure.http_status);
                if (d->failure.code)
                        json_writer_field_string(&w, "code", d->failure.code);
                if (d->failure.message)
                        json_writer_field_string(&w, "message", d->failure.message);
                json_writer_object_end(&w);
        }
        json_writer_object_end(&w);
        /* A record is one object and a newline. */
        return json_writer_finish_with(&w, "\n", ret, NULL);
}

static int get_uint(json_t *o, const char *key, uint64_t *ret) {
        json_t *v = json_object_get(o, key);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return -EBADMSG;
        *ret = (uint64_t) json_integer_value(v);
        return 0;
}

/* A string without embedded NUL, at most 'max' bytes; NULL allowed if 'nullable'. */
static int get_string(json_t *o, const char *key, size_t max, bool nullable, const char **ret) {
        json_t *v = json_object_get(o, key);
        if (!v || json_is_null(v)) {
                if (!nullable)
                        return -EBADMSG;
                *ret = NULL;
                return 0;
        }
        if (!json_is_string(v))
                return -EBADMSG;
        const char *s = json_string_value(v);
        size_t l = json_string_length(v);
        if (strlen(s) != l || l > max)
                return -EBADMSG;
        *ret = s;
        return 0;
}

int spool_drink_from_json(const char *buf, size_t len, Drink **ret) {
        _cleanup_(drink_freep) Drink *d = NULL;
        uint64_t pour_sec, boottime_ns, t;
        json_t *root = NULL;
        const char *s;
        int r = -EBADMSG;

        assert_return(ret, -EINVAL);

        if (!buf || len == 0 || len > SPOOL_FILE_MAX)
                return -EBADMSG;
        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(root))
                goto out;

        d = calloc(1, sizeof(Drink));
        if (!d) {
                r = -ENOMEM;
                goto out;
        }

        json_t *v = json_object_get(root, "version");
        if (!json_is_integer(v) || json_integer_value(v) != 1)
                goto out;
        if (get_string(root, "uuid", 36, false, &s) < 0 || uuid_normalize(s, d->uuid) < 0)
                goto out;
        if (get_uint(root, "seq", &d->seq) < 0 || get_uint(root, "flow_id", &d->flow_id) < 0 ||
            get_uint(root, "ticks", &d->ticks) < 0 || get_uint(root, "pour_time_unix", &pour_sec) < 0 ||
            get_uint(root, "duration", &d->duration_sec) < 0 ||
            get_uint(root, "pour_boottime_ns", &boottime_ns) < 0)
                goto out;
        /* The record's units to the drink's (drink.h): seconds and nanoseconds to microseconds. */
        if (pour_sec > UINT64_MAX / USEC_PER_SEC)
                goto out;
        d->pour_realtime = pour_sec * USEC_PER_SEC;
        d->pour_boottime = boottime_ns / NSEC_PER_USEC;
        if (get_string(root, "meter_name", 255, false, &s) < 0 || !*s)
                goto out;
        if (!(d->meter_name = strdup(s)))
                goto oom;
        if (get_string(root, "username", 255, true, &s) < 0)
                goto out;
        if (s && !(d->username = strdup(s)))
                goto oom;

        v = json_object_get(root, "volume_ml");
        if (!v)
                goto out;
        if (json_is_number(v)) {
                d->volume_ml = json_number_value(v);
                if (!isfinite(d->volume_ml))
                        goto out;
                d->volume_known = true;
        } else if (!json_is_null(v))
                goto out;

        /* pour_time repeats pour_time_unix for people reading the file: checked, not used. */
        if (get_string(root, "start_time", 64, false, &s) < 0 || time_parse_rfc3339(s, &d->start_realtime) < 0)
                goto out;
        if (get_string(root, "pour_time", 64, false, &s) < 0 || time_parse_rfc3339(s, &t) < 0)
                goto out;
        /* What is loaded must be writable again (failed/, re-queueing): times up to year 9999. */
        char tmp[TIME_RFC3339_MAX];
        if (time_format_rfc3339(d->pour_realtime, tmp) < 0)
                goto out;
        if (get_string(root, "boot_id", 32, false, &s) < 0)
                goto out;
        if (isempty(s))
                d->boot_id = SD_ID128_NULL;
        else if (uuid_from_plain_string(s, &d->boot_id) < 0)
                goto out;

        /* Flags (ghost-pours.md section 10): only written when there are some; names this version
         * does not know are kept out rather than making the record unreadable. */
        json_t *fl = json_object_get(root, "flags");
        if (fl) {
                size_t i;
                json_t *name;

                if (!json_is_array(fl) || json_array_size(fl) > 16)
                        goto out;
                json_array_foreach(fl, i, name) {
                        if (!json_is_string(name))
                                goto out;
                        d->flags |= drink_flag_from_string(json_string_value(name));
                }
        }

        json_t *doubt = json_object_get(root, "in_doubt");
        if (doubt) {
                if (!json_is_object(doubt) || get_uint(doubt, "pour_time", &d->sent_pour_time) < 0)
                        goto out;
                d->in_doubt = true;
        }

        json_t *f = json_object_get(root, "failure");
        if (f) {
                if (!json_is_object(f))
                        goto out;
                d->has_failure = true;
                if (get_string(f, "time", 64, false, &s) < 0 || time_parse_rfc3339(s, &d->failure.time_realtime) < 0)
                        goto out;
                v = json_object_get(f, "http_status");
                if (v) {
                        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 999)
                                goto out;
                        d->failure.http_status = (int) json_integer_value(v);
                }
                if (get_string(f, "code", 4096, true, &s) < 0)
                        goto out;
                if (s && !(d->failure.code = strdup(s)))
                        goto oom;
                if (get_string(f, "message", SPOOL_FILE_MAX, true, &s) < 0)
                        goto out;
                if (s && !(d->failure.message = strdup(s)))
                        goto oom;
        }

        *ret = TAKE_PTR(d);
        r = 0;
        goto out;
oom:
        r = -ENOMEM;
out:
        json_decref(root);
        return r;
}

/* ---------------------------------------------------------------- files */

static int fsync_dir(int fd) {
        return fsync(fd) < 0 ? -errno : 0;
}

static int read_entry(int dir_fd, const char *name, Drink **ret) {
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) char *buf = NULL;
        struct stat st;
        size_t n = 0;
        int r;

        fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > (off_t) SPOOL_FILE_MAX)
                return -EBADMSG;
        r = io_read_all(fd, SPOOL_FILE_MAX, &buf, &n);
        if (r == -EFBIG)
                return -EBADMSG;
        if (r < 0)
                return r;
        /* A record is one object and a newline; anything shorter was cut off. */
        if (n == 0 || buf[n - 1] != '\n')
                return -EBADMSG;
        return spool_drink_from_json(buf, n, ret);
}

/* Reads and checks a queued file against its name. */
static int load_entry(int dir_fd, const char *name, uint64_t seq, const char *uuid, Drink **ret) {
        _cleanup_(drink_freep) Drink *d = NULL;
        int r;

        r = read_entry(dir_fd, name, &d);
        if (r < 0)
                return r;
        if (d->seq != seq || !streq(d->uuid, uuid))
                return -EBADMSG;
        *ret = TAKE_PTR(d);
        return 0;
}

/* Moves a bad file out of the queue for good; never deletes it. */
static void quarantine(Spool *s, int from_fd, const char *name, int error) {
        char target[NAME_MAX + 1];

        snprintf(target, sizeof target, "%.*s.corrupt", (int) (sizeof target - 9), name);
        if (renameat(from_fd, name, s->failed_fd, target) < 0) {
                log_error_errno(errno, "Spool file %s/%s is unreadable (%s) and could not be moved to failed/: %m",
                                s->dir, name, strerror(abs(error)));
                return;
        }
        (void) fsync_dir(s->failed_fd);
        (void) fsync_dir(from_fd);
        s->n_corrupt++;
        log_error("Spool file %s/%s is corrupt (%s); moved to failed/%s", s->dir, name,
                  error == -EBADMSG ? "invalid or truncated record" : strerror(abs(error)), target);
}

/* ---------------------------------------------------------------- window */

static int entry_cmp(const void *a, const void *b) {
        const SpoolEntry *x = a, *y = b;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool heap_less(const SpoolEntry *a, const SpoolEntry *b) {
        return a->seq < b->seq;
}

/* Keeps the 'max' smallest seqs seen in a max-heap. */
static void heap_offer(SpoolEntry *h, size_t *n, size_t max, const SpoolEntry *e) {
        size_t i;

        if (*n < max) {
                i = (*n)++;
                h[i] = *e;
                while (i > 0) {
                        size_t p = (i - 1) / 2;
                        if (!heap_less(&h[p], &h[i]))
                                break;
                        SpoolEntry t = h[p]; h[p] = h[i]; h[i] = t;
                        i = p;
                }
                return;
        }
        if (max == 0 || !heap_less(e, &h[0]))
                return;
        h[0] = *e;
        i = 0;
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, big = i;
                if (l < *n && heap_less(&h[big], &h[l]))
                        big = l;
                if (r < *n && heap_less(&h[big], &h[r]))
                        big = r;
                if (big == i)
                        break;
                SpoolEntry t = h[big]; h[big] = h[i]; h[i] = t;
                i = big;
        }
}

/* Reloads the window with the oldest durable entries beyond the boundary. */
static int window_refill(Spool *s) {
        _cleanup_(freep) SpoolEntry *heap = NULL;
        size_t n = 0, total = 0;
        int fd;
        DIR *d;
        struct dirent *de;

        heap = malloc(s->window_max * sizeof(SpoolEntry));
        if (!heap)
                return -ENOMEM;
        fd = openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        while ((de = readdir(d))) {
                SpoolEntry e = {};
                if (spool_name_parse(de->d_name, &e.seq, e.uuid) < 0)
                        continue;
                if (e.seq <= s->boundary)
                        continue;
                total++;
                heap_offer(heap, &n, s->window_max, &e);
        }
        closedir(d);

        qsort(heap, n, sizeof(SpoolEntry), entry_cmp);
        free(s->win);
        s->win = TAKE_PTR(heap);
        s->n_win = n;
        s->complete = total <= s->window_max;
        if (n > 0)
                s->boundary = s->win[n - 1].seq;
        /* Files may have appeared or gone behind our back; trust the directory. */
        if (s->complete)
                s->n_disk = n;
        return 0;
}

static int window_add(Spool *s, uint64_t seq, const char *uuid) {
        size_t i;

        if (!s->complete && seq > s->boundary)
                return 0;       /* found by the next refill */
        if (s->n_win >= s->window_max && (s->n_win == 0 || seq > s->win[s->n_win - 1].seq)) {
                s->complete = false;
                s->boundary = s->n_win > 0 ? s->win[s->n_win - 1].seq : 0;
                return 0;
        }
        SpoolEntry *n = realloc(s->win, (s->n_win + 1) * sizeof(SpoolEntry));
        if (!n) {
                /* Not fatal: the entry is on disk; make the next refill find it. */
                if (s->n_win > 0) {
                        s->complete = false;
                        s->boundary = MIN(s->boundary, s->win[s->n_win - 1].seq);
                }
                return -ENOMEM;
        }
        s->win = n;
        for (i = s->n_win; i > 0 && s->win[i - 1].seq > seq; i--)
                s->win[i] = s->win[i - 1];
        s->win[i] = (SpoolEntry) { .seq = seq };
        memcpy(s->win[i].uuid, uuid, UUID_STRING_MAX);
        s->n_win++;
        if (s->n_win > s->window_max) {
                s->n_win--;
                s->complete = false;
                s->boundary = s->win[s->n_win - 1].seq;
        }
        return 0;
}

static void window_remove_at(Spool *s, size_t i) {
        memmove(s->win + i, s->win + i + 1, (s->n_win - i - 1) * sizeof(SpoolEntry));
        s->n_win--;
}

/* Where a queued uuid is: 1 window (index), 3 on disk beyond the window (seq). */
static int find_queued(Spool *s, const char *uuid, size_t *ret_idx, uint64_t *ret_seq) {
        for (size_t i = 0; i < s->n_win; i++)
                if (streq(s->win[i].uuid, uuid)) {
                        *ret_idx = i;
                        *ret_seq = s->win[i].seq;
                        return 1;
                }
        if (s->complete)
                return -ENOENT;

        int fd = openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        struct dirent *de;
        int r = -ENOENT;
        while ((de = readdir(d))) {
                SpoolEntry e = {};
                if (spool_name_parse(de->d_name, &e.seq, e.uuid) < 0 || !streq(e.uuid, uuid))
                        continue;
                *ret_seq = e.seq;
                r = 3;
                break;
        }
        closedir(d);
        return r;
}

/* ---------------------------------------------------------------- public */

static int collect(int dir_fd, const char *only_uuid, SpoolEntry **ret, size_t *ret_n);

static int entry_uuid_cmp(const void *a, const void *b) {
        return strcmp(((const SpoolEntry *) a)->uuid, ((const SpoolEntry *) b)->uuid);
}

/* A drink in both spool/ and failed/ is a move that a crash cut short: spool_fail() writes failed/
 * before it unlinks the queued file (same seq), spool_requeue_failed() writes the queued file (a new,
 * higher seq) before it unlinks the failed one. Finish the move, so that the drink is neither
 * uploaded and then re-queued again, nor uploaded twice. Returns true if the queued file 'name'
 * was removed (the drink is in failed/). */
static bool resolve_interrupted_move(Spool *s, const SpoolEntry *failed, size_t n_failed, const char *name,
                                     uint64_t seq, const char *uuid) {
        SpoolEntry key = { .seq = seq };
        const SpoolEntry *f;
        char fname[SPOOL_NAME_MAX];

        if (n_failed == 0)
                return false;
        memcpy(key.uuid, uuid, UUID_STRING_MAX);
        f = bsearch(&key, failed, n_failed, sizeof(SpoolEntry), entry_uuid_cmp);
        if (!f)
                return false;
        name_format(fname, f->seq, f->uuid);
        if (f->seq == seq) {
                _cleanup_(drink_freep) Drink *d = NULL;

                /* Only trust the failed/ copy if it is complete; else keep the queued one. */
                if (read_entry(s->failed_fd, fname, &d) < 0 || !streq(d->uuid, uuid))
                        return false;
                if (unlinkat(s->dir_fd, name, 0) < 0)
                        return false;
                log_warning("Drink %s is both queued and in failed/ (a move to failed/ was interrupted); "
                            "removed the queued copy %s/%s", uuid, s->dir, name);
                return true;
        }
        if (f->seq < seq) {
                if (unlinkat(s->failed_fd, fname, 0) < 0)
                        return false;
                (void) fsync_dir(s->failed_fd);
                if (s->n_failed > 0)
                        s->n_failed--;
                log_warning("Drink %s is both queued and in failed/ (a re-queue was interrupted); "
                            "removed failed/%s", uuid, fname);
        }
        return false;
}

static bool is_tmp_name(const char *n) {
        size_t l = strlen(n);
        return n[0] == '.' && l > 5 && streq(n + l - 4, ".tmp");
}

static bool has_suffix(const char *n, const char *suffix) {
        size_t l = strlen(n), k = strlen(suffix);
        return l > k && streq(n + l - k, suffix);
}

static int scan_failed(Spool *s) {
        int fd = openat(s->failed_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        struct dirent *de;
        s->n_failed = s->n_corrupt = 0;
        while ((de = readdir(d))) {
                if (is_tmp_name(de->d_name))
                        (void) unlinkat(s->failed_fd, de->d_name, 0);
                else if (has_suffix(de->d_name, ".corrupt"))
                        s->n_corrupt++;
                else if (has_suffix(de->d_name, ".json"))
                        s->n_failed++;
        }
        closedir(d);
        return 0;
}

int spool_open(Spool **ret, const char *dir) {
        _cleanup_(spool_freep) Spool *s = NULL;
        _cleanup_(freep) SpoolEntry *heap = NULL, *failed = NULL;
        size_t n_heap = 0, n_failed = 0;
        bool changed = false;
        int r, fd;

        assert_return(ret, -EINVAL);
        assert_return(!isempty(dir), -EINVAL);

        s = calloc(1, sizeof(Spool));
        if (!s)
                return log_error_errno(ENOMEM, "Out of memory");
        s->dir_fd = s->failed_fd = -1;
        s->window_max = SPOOL_WINDOW_DEFAULT;
        s->dir = strdup(dir);
        if (!s->dir)
                return log_error_errno(ENOMEM, "Out of memory");

        s->dir_fd = io_mkdir_p_open(dir, 0750);
        if (s->dir_fd < 0)
                return log_error_errno(s->dir_fd, "Failed to open spool directory %s: %m", dir);
        if (mkdirat(s->dir_fd, "failed", 0750) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Failed to create %s/failed: %m", dir);
        s->failed_fd = openat(s->dir_fd, "failed", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->failed_fd < 0)
                return log_error_errno(errno, "Failed to open %s/failed: %m", dir);
        /* Fail early rather than at the first drink. */
        if (faccessat(s->dir_fd, ".", W_OK, AT_EACCESS) < 0 || faccessat(s->failed_fd, ".", W_OK, AT_EACCESS) < 0)
                return log_error_errno(errno, "Spool directory %s is not writable: %m", dir);

        r = scan_failed(s);
        if (r < 0)
                return log_error_errno(r, "Failed to read %s/failed: %m", dir);

        r = collect(s->failed_fd, NULL, &failed, &n_failed);
        if (r < 0)
                return log_error_errno(r, "Failed to read %s/failed: %m", dir);
        if (n_failed > 0)
                qsort(failed, n_failed, sizeof(SpoolEntry), entry_uuid_cmp);

        heap = malloc(s->window_max * sizeof(SpoolEntry));
        if (!heap)
                return log_error_errno(ENOMEM, "Out of memory");

        fd = openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "Failed to open %s: %m", dir);
        DIR *d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return log_error_errno(errno, "Failed to open %s: %m", dir);
        }
        struct dirent *de;
        size_t total = 0;
        while ((de = readdir(d))) {
                const char *n = de->d_name;
                SpoolEntry e = {};

                if (streq(n, ".") || streq(n, "..") || streq(n, "failed"))
                        continue;
                if (is_tmp_name(n)) {
                        /* Never renamed, so never reported completed. */
                        log_info("Removing leftover temporary spool file %s/%s", dir, n);
                        (void) unlinkat(s->dir_fd, n, 0);
                        changed = true;
                        continue;
                }
                if (!has_suffix(n, ".json"))
                        continue;
                if (spool_name_parse(n, &e.seq, e.uuid) < 0) {
                        quarantine(s, s->dir_fd, n, -EBADMSG);
                        continue;
                }
                _cleanup_(drink_freep) Drink *sd = NULL;
                r = load_entry(s->dir_fd, n, e.seq, e.uuid, &sd);
                if (r == -ENOMEM) {
                        closedir(d);
                        return log_error_errno(r, "Out of memory");
                }
                if (r < 0) {
                        quarantine(s, s->dir_fd, n, r);
                        continue;
                }
                s->last_seq = MAX(s->last_seq, e.seq);
                if (resolve_interrupted_move(s, failed, n_failed, n, e.seq, e.uuid)) {
                        changed = true;
                        continue;
                }
                total++;
                heap_offer(heap, &n_heap, s->window_max, &e);
        }
        closedir(d);
        if (changed)
                (void) fsync_dir(s->dir_fd);

        qsort(heap, n_heap, sizeof(SpoolEntry), entry_cmp);
        s->win = TAKE_PTR(heap);
        s->n_win = n_heap;
        s->n_disk = total;
        s->complete = total <= s->window_max;
        s->boundary = n_heap > 0 ? s->win[n_heap - 1].seq : 0;

        log_info("Spool %s: %zu queued drinks, %zu failed", dir, s->n_disk, s->n_failed);
        *ret = TAKE_PTR(s);
        return 0;
}

Spool *spool_free(Spool *s) {
        if (!s)
                return NULL;
        free(s->win);
        safe_close(s->dir_fd);
        safe_close(s->failed_fd);
        free(s->dir);
        free(s);
        return NULL;
}

void spool_set_window(Spool *s, size_t n) {
        assert_return(s, );
        s->window_max = MAX(n, (size_t) 1);
        if (s->n_win > s->window_max) {
                s->n_win = s->window_max;
                s->complete = false;
                s->boundary = s->win[s->n_win - 1].seq;
        }
}

int spool_put(Spool *s, Drink *d) {
        _cleanup_(freep) char *json = NULL;
        char name[SPOOL_NAME_MAX];
        int r;

        assert_return(s, -EINVAL);
        assert_return(d, -EINVAL);
        if (!uuid_is_canonical(d->uuid) || isempty(d->meter_name))
                return -EINVAL;

        d->seq = s->last_seq + 1;
        r = spool_drink_to_json(d, &json);
        if (r == -EINVAL)
                return log_error_errno(EBADMSG, "Drink %s cannot be spooled: its text is not valid UTF-8", d->uuid);
        if (r < 0)
                return log_error_errno(r, "Cannot spool drink %s: %m", d->uuid);
        name_format(name, d->seq, d->uuid);

        r = io_write_file_atomic(s->dir_fd, name, json, strlen(json), 0640);
        if (r < 0)
                return log_error_errno(r, "Failed to write drink %s to the spool %s: %m", d->uuid, s->dir);
        s->last_seq++;
        s->n_disk++;
        (void) window_add(s, d->seq, d->uuid);
        return 0;
}

int spool_update(Spool *s, const Drink *d) {
        _cleanup_(freep) char *json = NULL;
        char name[SPOOL_NAME_MAX];
        size_t idx = 0;
        uint64_t seq = 0;
        int r;

        assert_return(s, -EINVAL);
        assert_return(d, -EINVAL);
        if (!uuid_is_canonical(d->uuid))
                return -EINVAL;

        r = find_queued(s, d->uuid, &idx, &seq);
        if (r < 0)
                return r;
        if (seq != d->seq)
                return -EINVAL;
        r = spool_drink_to_json(d, &json);
        if (r < 0)
                return r;
        name_format(name, seq, d->uuid);
        /* Only replace a file that is there: a vanished one must not come back. */
        if (faccessat(s->dir_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        return io_write_file_atomic(s->dir_fd, name, json, strlen(json), 0640);
}

int spool_contains(Spool *s, const char *uuid_arg) {
        _cleanup_(freep) SpoolEntry *v = NULL;
        char uuid[UUID_STRING_MAX];
        size_t idx = 0, n = 0;
        uint64_t seq = 0;
        int r;

        assert_return(s, -EINVAL);
        if (uuid_normalize(uuid_arg, uuid) < 0)
                return -EINVAL;

        r = find_queued(s, uuid, &idx, &seq);
        if (r > 0)
                return 1;
        if (r != -ENOENT)
                return r;
        r = collect(s->failed_fd, uuid, &v, &n);
        if (r < 0)
                return r;
        return n > 0;
}

int spool_peek(Spool *s, Drink **ret) {
        int r;

        assert_return(s, -EINVAL);
        assert_return(ret, -EINVAL);

        for (;;) {
                if (s->n_win == 0 && !s->complete) {
                        r = window_refill(s);
                        if (r < 0)
                                return log_error_errno(r, "Failed to read spool directory %s: %m", s->dir);
                }
                if (s->n_win == 0) {
                        *ret = NULL;
                        return 0;
                }

                SpoolEntry e = s->win[0];
                char name[SPOOL_NAME_MAX];
                name_format(name, e.seq, e.uuid);
                r = load_entry(s->dir_fd, name, e.seq, e.uuid, ret);
                if (r >= 0)
                        return 1;
                if (r == -ENOMEM)
                        return r;
                window_remove_at(s, 0);
                if (s->n_disk > 0)
                        s->n_disk--;
                if (r == -ENOENT)
                        log_error("Spool file %s/%s disappeared; skipping it", s->dir, name);
                else
                        quarantine(s, s->dir_fd, name, r);
        }
}

int spool_remove(Spool *s, const char *uuid_arg) {
        char name[SPOOL_NAME_MAX], uuid[UUID_STRING_MAX];
        size_t idx = 0;
        uint64_t seq = 0;
        int where;

        assert_return(s, -EINVAL);
        if (uuid_normalize(uuid_arg, uuid) < 0)
                return -EINVAL;

        where = find_queued(s, uuid, &idx, &seq);
        if (where < 0)
                return where;
        name_format(name, seq, uuid);
        if (unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to remove %s/%s: %m", s->dir, name);
        (void) fsync_dir(s->dir_fd);
        if (where == 1)
                window_remove_at(s, idx);
        if (s->n_disk > 0)
                s->n_disk--;
        return 0;
}

int spool_fail(Spool *s, const char *uuid_arg, const DrinkFailure *f) {
        _cleanup_(drink_freep) Drink *d = NULL;
        _cleanup_(freep) char *json = NULL;
        char name[SPOOL_NAME_MAX], uuid[UUID_STRING_MAX];
        size_t idx = 0;
        uint64_t seq = 0;
        int where, r;

        assert_return(s, -EINVAL);
        assert_return(f, -EINVAL);
        if (uuid_normalize(uuid_arg, uuid) < 0)
                return -EINVAL;

        where = find_queued(s, uuid, &idx, &seq);
        if (where < 0)
                return where;
        name_format(name, seq, uuid);

        r = load_entry(s->dir_fd, name, seq, uuid, &d);
        if (r < 0 && r != -ENOMEM) {
                if (where == 1)
                        window_remove_at(s, idx);
                if (s->n_disk > 0)
                        s->n_disk--;
                if (r == -ENOENT)
                        return r;
                quarantine(s, s->dir_fd, name, r);
                return 0;
        }
        if (r < 0)
                return r;

        r = drink_set_failure(d, f);
        if (r < 0)
                return r;
        r = spool_drink_to_json(d, &json);
        if (r < 0)
                return r;

        r = io_write_file_atomic(s->failed_fd, name, json, strlen(json), 0640);
        if (r < 0) {
                /* Keep the queue moving and the drink safe: move it without the reason. */
                log_error_errno(r, "Failed to write drink %s to %s/failed: %m; moving the spool file "
                                "there without the reason", uuid, s->dir);
                if (renameat(s->dir_fd, name, s->failed_fd, name) < 0)
                        return log_error_errno(errno, "Failed to move %s/%s to failed/: %m", s->dir, name);
                (void) fsync_dir(s->failed_fd);
                (void) fsync_dir(s->dir_fd);
        } else {
                if (unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT)
                        log_error_errno(errno, "Failed to remove %s/%s after moving it to failed/: %m",
                                        s->dir, name);
                (void) fsync_dir(s->dir_fd);
        }

        if (where == 1)
                window_remove_at(s, idx);
        if (s->n_disk > 0)
                s->n_disk--;
        s->n_failed++;
        return 0;
}

/* (seq, uuid) of the entries of one directory, sorted; uuid filter optional. */
static int collect(int dir_fd, const char *only_uuid, SpoolEntry **ret, size_t *ret_n) {
        _cleanup_(freep) SpoolEntry *v = NULL;
        size_t n = 0, cap = 0;
        int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                SpoolEntry e = {};
                if (spool_name_parse(de->d_name, &e.seq, e.uuid) < 0)
                        continue;
                if (only_uuid && !streq(only_uuid, e.uuid))
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 64;
                        SpoolEntry *nv = realloc(v, cap * sizeof(SpoolEntry));
                        if (!nv) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        v = nv;
                }
                v[n++] = e;
        }
        closedir(d);
        if (n > 0)
                qsort(v, n, sizeof(SpoolEntry), entry_cmp);
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

int spool_requeue_failed(Spool *s, const char *uuid_arg, size_t *ret_n) {
        _cleanup_(freep) SpoolEntry *v = NULL;
        char buf[UUID_STRING_MAX];
        const char *uuid = NULL;
        size_t n = 0, done = 0;
        int r;

        assert_return(s, -EINVAL);
        if (uuid_arg) {
                if (uuid_normalize(uuid_arg, buf) < 0)
                        return -EINVAL;
                uuid = buf;
        }

        r = collect(s->failed_fd, uuid, &v, &n);
        if (r < 0)
                return log_error_errno(r, "Failed to read %s/failed: %m", s->dir);
        if (uuid && n == 0)
                return -ENOENT;

        for (size_t i = 0; i < n; i++) {
                _cleanup_(drink_freep) Drink *d = NULL;
                _cleanup_(freep) char *json = NULL;
                char old[SPOOL_NAME_MAX], name[SPOOL_NAME_MAX];

                name_format(old, v[i].seq, v[i].uuid);
                r = read_entry(s->failed_fd, old, &d);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 || !streq(d->uuid, v[i].uuid)) {
                        if (s->n_failed > 0)
                                s->n_failed--;
                        quarantine(s, s->failed_fd, old, r < 0 ? r : -EBADMSG);
                        continue;
                }
                drink_clear_failure(d);
                d->seq = s->last_seq + 1;
                r = spool_drink_to_json(d, &json);
                if (r < 0)
                        return r;
                name_format(name, d->seq, d->uuid);
                r = io_write_file_atomic(s->dir_fd, name, json, strlen(json), 0640);
                if (r < 0)
                        return log_error_errno(r, "Failed to re-queue drink %s: %m (it stays in failed/)", d->uuid);
                s->last_seq++;
                if (unlinkat(s->failed_fd, old, 0) < 0)
                        log_error_errno(errno, "Failed to remove failed/%s after re-queueing it: %m", old);
                (void) fsync_dir(s->failed_fd);
                if (s->n_failed > 0)
                        s->n_failed--;
                s->n_disk++;
                (void) window_add(s, d->seq, d->uuid);
                log_info("Re-queued drink %s", d->uuid);
                done++;
        }
        if (ret_n)
                *ret_n = done;
        return 0;
}

int spool_list(Spool *s, SpoolArea area, SpoolListFunc cb, void *userdata) {
        _cleanup_(freep) SpoolEntry *v = NULL;
        size_t n = 0;
        int fd, r;

        assert_return(s, -EINVAL);
        assert_return(cb, -EINVAL);

        fd = area == SPOOL_QUEUED ? s->dir_fd : s->failed_fd;
        r = collect(fd, NULL, &v, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                _cleanup_(drink_freep) Drink *d = NULL;
                char name[SPOOL_NAME_MAX];
                name_format(name, v[i].seq, v[i].uuid);
                if (read_entry(fd, name, &d) < 0)
                        continue;
                r = cb(d, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

size_t spool_n_pending(Spool *s) { return s ? s->n_disk : 0; }
size_t spool_n_failed(Spool *s) { return s ? s->n_failed : 0; }
size_t spool_n_corrupt(Spool *s) { return s ? s->n_corrupt : 0; }
uint64_t spool_last_seq(Spool *s) { return s ? s->last_seq : 0; }
