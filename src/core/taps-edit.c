/* Taps-file calibration edit and atomic replacement: see taps-edit.h. Lines are classified with the
 * rules of the project's INI parser (ini.c): a blank line; a comment (first non-blank character '#'
 * or ';'); a continuation (leading whitespace, belongs to the last key); a section header ('[' in
 * the first column, its name the trimmed text up to the first ']'); else a key line, split at the
 * first '=' or ':', whose value ends at an inline comment (a ';' after whitespace). */
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>

#include "calibration-units.h"
#include "taps-edit.h"
#include "util-io.h"
#include "util-strbuf.h"
#include "util-string.h"

/* A taps file larger than this is not one. */
#define TAPS_FILE_MAX (16U * 1024U * 1024U)
#define SYMLINK_MAX_DEPTH 40

typedef enum LineKind {
        LINE_BLANK,
        LINE_COMMENT,
        LINE_CONTINUATION,
        LINE_HEADER,
        LINE_KEY,
        LINE_OTHER,             /* a syntax error: left as it is (validation refuses the result) */
} LineKind;

typedef struct Line {
        const char *p;
        size_t len;             /* without '\n' and a '\r' before it */
        bool cr, nl;            /* the line ended with "\r\n" / "\n" */
        LineKind kind;
        size_t sep;             /* LINE_KEY: index of the separator */
        bool tap_header;        /* LINE_HEADER of a section of the tap */
        bool in_tap;            /* in a section of the tap */
        bool in_default;
        int owner;              /* LINE_CONTINUATION: the key line it continues, -1 = none */
        bool rewrite;           /* a key line of the tap that gets the new value */
        bool drop;              /* removed: a continuation of a rewritten value, an old provenance */
} Line;

static bool is_blank(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

bool taps_edit_is_provenance(const char *line, size_t len) {
        static const char prefix[] = "# calibration ";
        static const char shape[] = "dddd-dd-ddT";
        size_t n = sizeof prefix - 1;

        if (len < n + sizeof shape - 1 || memcmp(line, prefix, n) != 0)
                return false;
        for (size_t i = 0; i < sizeof shape - 1; i++) {
                char c = line[n + i];
                if (shape[i] == 'd' ? !is_digit(c) : c != shape[i])
                        return false;
        }
        return true;
}

/* [p, p+n) trimmed, compared with s (case-sensitive, as section names are). */
static bool trimmed_eq(const char *p, size_t n, const char *s) {
        while (n > 0 && is_blank(*p)) {
                p++;
                n--;
        }
        while (n > 0 && is_blank(p[n - 1]))
                n--;
        return strlen(s) == n && memcmp(p, s, n) == 0;
}

/* The key of a key line, trimmed, compared case-insensitively (the parser lower-cases keys). */
static bool key_is(const Line *l, const char *key) {
        const char *p = l->p;
        size_t n = l->sep;

        while (n > 0 && is_blank(*p)) {
                p++;
                n--;
        }
        while (n > 0 && is_blank(p[n - 1]))
                n--;
        return strlen(key) == n && strncasecmp(p, key, n) == 0;
}

static int split_lines(const char *text, size_t len, Line **ret, size_t *ret_n) {
        Line *lines = NULL;
        size_t n = 0, pos = 0;

        while (pos < len) {
                const char *nl = memchr(text + pos, '\n', len - pos);
                size_t l = nl ? (size_t) (nl - text - pos) : len - pos;
                Line *a = reallocarray(lines, n + 1, sizeof(Line));

                if (!a) {
                        free(lines);
                        return -ENOMEM;
                }
                lines = a;
                lines[n] = (Line) { .p = text + pos, .len = l, .nl = nl != NULL, .owner = -1 };
                if (nl && l > 0 && text[pos + l - 1] == '\r') {
                        lines[n].cr = true;
                        lines[n].len--;
                }
                n++;
                pos += l + (nl ? 1 : 0);
        }
        *ret = lines;
        *ret_n = n;
        return 0;
}

static void classify(Line *lines, size_t n, const char *meter) {
        bool in_tap = false, in_default = false;
        int last_key = -1;

        for (size_t i = 0; i < n; i++) {
                Line *l = &lines[i];
                size_t j = 0;

                while (j < l->len && is_blank(l->p[j]))
                        j++;
                if (j == l->len)
                        l->kind = LINE_BLANK;
                else if (l->p[j] == '#' || l->p[j] == ';')
                        l->kind = LINE_COMMENT;
                else if (j > 0) {
                        l->kind = LINE_CONTINUATION;
                        l->owner = last_key;
                } else if (l->p[0] == '[') {
                        const char *close = memchr(l->p, ']', l->len);

                        if (!close)
                                l->kind = LINE_OTHER;
                        else {
                                l->kind = LINE_HEADER;
                                in_tap = trimmed_eq(l->p + 1, (size_t) (close - l->p - 1), meter);
                                l->tap_header = in_tap;
                                in_default = trimmed_eq(l->p + 1, (size_t) (close - l->p - 1), "DEFAULT");
                                last_key = -1;
                        }
                } else {
                        l->sep = strcspn(l->p, "=:");
                        if (l->sep >= l->len || l->sep == 0)
                                l->kind = LINE_OTHER;
                        else {
                                l->kind = LINE_KEY;
                                last_key = (int) i;
                        }
                }
                l->in_tap = in_tap && l->kind != LINE_HEADER;
                l->in_default = in_default && l->kind != LINE_HEADER;
        }
}

/* The last line that belongs to key line k: the key line or its last continuation. */
static size_t key_end(const Line *lines, size_t n, size_t k) {
        size_t end = k;

        for (size_t i = k + 1; i < n; i++) {
                if (lines[i].kind == LINE_CONTINUATION && lines[i].owner == (int) k)
                        end = i;
                else if (lines[i].kind != LINE_BLANK && lines[i].kind != LINE_COMMENT)
                        break;
        }
        return end;
}

static void put_line(StrBuf *b, const Line *l) {
        strbuf_append(b, l->p, l->len);
        if (l->cr)
                strbuf_putc(b, '\r');
        if (l->nl)
                strbuf_putc(b, '\n');
}

/* A key line with the new value: up to the separator and the blanks after it, then the value, then
 * an inline comment with the blanks before it. */
static void put_rewritten(StrBuf *b, const Line *l, const char *value) {
        size_t start = l->sep + 1, end = l->len, c;

        while (start < l->len && (l->p[start] == ' ' || l->p[start] == '\t'))
                start++;
        for (c = l->sep + 1; c < l->len; c++)
                if (l->p[c] == ';' && is_blank(l->p[c - 1]))
                        break;
        if (c < l->len) {
                end = c;
                while (end > start && is_blank(l->p[end - 1]))
                        end--;
        }
        strbuf_append(b, l->p, start);
        strbuf_puts(b, value);
        /* The comment must stay one: a ';' is one only after whitespace. */
        if (c < l->len && end == c)
                strbuf_putc(b, ' ');
        if (c < l->len)
                strbuf_append(b, l->p + end, l->len - end);
        if (l->cr)
                strbuf_putc(b, '\r');
        if (l->nl)
                strbuf_putc(b, '\n');
}

int taps_edit_calibration(const char *text, size_t len, const char *meter, double ml_per_tick,
                          const char *provenance, char **ret_text, size_t *ret_len, double *ret_applied,
                          const char **ret_key) {
        _cleanup_(freep) Line *lines = NULL;
        StrBuf b = STRBUF_INIT;
        bool own_mpt = false, own_tpm = false, default_mpt = false, default_tpm = false, has_section = false;
        const char *key, *eol;
        char value[32];
        double applied;
        size_t n = 0, insert_after = SIZE_MAX;
        int r;

        assert_return(text || len == 0, -EINVAL);
        assert_return(!isempty(meter), -EINVAL);
        assert_return(provenance, -EINVAL);

        r = split_lines(text ?: "", len, &lines, &n);
        if (r < 0)
                return r;
        classify(lines, n, meter);
        eol = n > 0 && lines[0].cr ? "\r\n" : "\n";

        /* Which key the tap takes its calibration from, and where a new one would go: after the
         * last key line (and its continuations) of the first occurrence of the section. */
        for (size_t i = 0; i < n; i++) {
                const Line *l = &lines[i];

                if (l->kind == LINE_KEY && l->in_tap) {
                        own_mpt = own_mpt || key_is(l, "ml_per_tick");
                        own_tpm = own_tpm || key_is(l, "ticks_per_ml");
                }
                if (l->kind == LINE_KEY && l->in_default) {
                        default_mpt = default_mpt || key_is(l, "ml_per_tick");
                        default_tpm = default_tpm || key_is(l, "ticks_per_ml");
                }
        }
        for (size_t i = 0; i < n; i++) {
                if (!lines[i].tap_header)
                        continue;
                /* A repeated section continues the first: that one takes a new key. */
                has_section = true;
                insert_after = i;
                for (size_t k = i + 1; k < n && lines[k].kind != LINE_HEADER; k++)
                        if (lines[k].kind == LINE_KEY)
                                insert_after = key_end(lines, n, k);
                break;
        }

        if (own_mpt)
                key = "ml_per_tick";
        else if (own_tpm)
                key = "ticks_per_ml";
        else if (default_tpm)
                key = "ticks_per_ml";
        else
                key = "ml_per_tick";
        (void) default_mpt;     /* inherited ml_per_tick, or none: ml_per_tick */

        if (streq(key, "ml_per_tick")) {
                snprintf(value, sizeof value, "%.6g", ml_per_tick);
                applied = strtod(value, NULL);
        } else {
                double t = calibration_round6(1.0 / ml_per_tick);
                snprintf(value, sizeof value, "%.6g", t);
                applied = 1.0 / t;
        }

        /* Key lines to rewrite (only when the section has the key itself), their continuations
         * and an old provenance comment right above each. */
        if (own_mpt || own_tpm)
                for (size_t i = 0; i < n; i++) {
                        Line *l = &lines[i];

                        if (l->kind != LINE_KEY || !l->in_tap || !key_is(l, key))
                                continue;
                        l->rewrite = true;
                        if (i > 0 && lines[i - 1].kind == LINE_COMMENT &&
                            taps_edit_is_provenance(lines[i - 1].p, lines[i - 1].len))
                                lines[i - 1].drop = true;
                        for (size_t k = i + 1; k <= key_end(lines, n, i); k++)
                                if (lines[k].kind == LINE_CONTINUATION)
                                        lines[k].drop = true;
                }

        for (size_t i = 0; i < n; i++) {
                const Line *l = &lines[i];

                if (l->drop)
                        continue;
                if (l->rewrite) {
                        strbuf_printf(&b, "%s%s", provenance, eol);
                        put_rewritten(&b, l, value);
                } else
                        put_line(&b, l);
                if (!own_mpt && !own_tpm && i == insert_after) {
                        if (!l->nl)
                                strbuf_puts(&b, eol);
                        strbuf_printf(&b, "%s%s%s = %s%s", provenance, eol, key, value, l->nl ? eol : "");
                }
        }
        if (!has_section) {
                if (len > 0) {
                        if (text[len - 1] != '\n')
                                strbuf_puts(&b, eol);
                        strbuf_puts(&b, eol);
                }
                strbuf_printf(&b, "[%s]%s%s%s%s = %s%s", meter, eol, provenance, eol, key, value, eol);
        }

        r = strbuf_take(&b, ret_text, ret_len);
        if (r < 0)
                return r;
        if (ret_applied)
                *ret_applied = applied;
        if (ret_key)
                *ret_key = key;
        return 0;
}

/* ---- the file ---- */

/* The file the path names, symbolic links followed to the end; its directory must exist. */
static int resolve_target(const char *path, char **ret, char **ret_reason) {
        _cleanup_(freep) char *p = strdup(path), *dir = NULL, *base = NULL, *canon = NULL;
        char *q;

        if (!p)
                return -ENOMEM;
        for (int depth = 0;; depth++) {
                char link[PATH_MAX];
                struct stat st;
                ssize_t k;

                if (depth >= SYMLINK_MAX_DEPTH)
                        return strdup_error(ret_reason, -ELOOP, "%s", strerror(ELOOP));
                if (lstat(p, &st) < 0) {
                        if (errno == ENOENT)
                                break;
                        return strdup_error(ret_reason, -errno, "%s", strerror(errno));
                }
                if (!S_ISLNK(st.st_mode))
                        break;
                k = readlink(p, link, sizeof link - 1);
                if (k < 0)
                        return strdup_error(ret_reason, -errno, "%s", strerror(errno));
                link[k] = '\0';
                if (link[0] == '/')
                        q = strdup(link);
                else {
                        _cleanup_(freep) char *d = strdup(p);
                        q = d ? strdup_printf("%s/%s", dirname(d), link) : NULL;
                }
                if (!q)
                        return -ENOMEM;
                free(p);
                p = q;
        }

        dir = strdup(p);
        base = strdup(p);
        if (!dir || !base)
                return -ENOMEM;
        canon = realpath(dirname(dir), NULL);
        if (!canon)
                return strdup_error(ret_reason, -errno, "%s (directory of %s)", strerror(errno), p);
        q = basename(base);
        if (isempty(q) || streq(q, ".") || streq(q, "..") || streq(q, "/"))
                return strdup_error(ret_reason, -EISDIR, "%s", strerror(EISDIR));
        *ret = strdup_printf("%s%s%s", canon, streq(canon, "/") ? "" : "/", q);
        return *ret ? 0 : -ENOMEM;
}

/* The file as it is now: its text and identity (existed false: absent, empty text). */
typedef struct Snapshot {
        bool existed;
        struct stat st;
        char *text;
        size_t len;
} Snapshot;

static int snapshot_read(const char *target, Snapshot *ret, char **ret_reason) {
        _cleanup_(closep) int fd = -1;
        int r;

        *ret = (Snapshot) {};
        fd = open(target, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                if (errno != ENOENT)
                        return strdup_error(ret_reason, -errno, "%s", strerror(errno));
                ret->text = strdup("");
                return ret->text ? 0 : -ENOMEM;
        }
        if (fstat(fd, &ret->st) < 0)
                return strdup_error(ret_reason, -errno, "%s", strerror(errno));
        if (!S_ISREG(ret->st.st_mode))
                return strdup_error(ret_reason, -EINVAL, "not a regular file");
        r = io_read_all(fd, TAPS_FILE_MAX, &ret->text, &ret->len);
        if (r < 0)
                return strdup_error(ret_reason, r, "%s", r == -EFBIG ? "file too large" : strerror(-r));
        ret->existed = true;
        return 0;
}

/* Is the file still the one read? */
static bool snapshot_current(const Snapshot *s, const char *target) {
        struct stat st;

        if (stat(target, &st) < 0)
                return errno == ENOENT && !s->existed;
        return s->existed && st.st_dev == s->st.st_dev && st.st_ino == s->st.st_ino && st.st_size == s->st.st_size &&
               st.st_mtim.tv_sec == s->st.st_mtim.tv_sec && st.st_mtim.tv_nsec == s->st.st_mtim.tv_nsec;
}

static char *user_name(uid_t uid) {
        struct passwd *pw = getpwuid(uid);
        return pw ? strdup(pw->pw_name) : strdup_printf("%u", (unsigned) uid);
}

static char *group_name(gid_t gid) {
        struct group *gr = getgrgid(gid);
        return gr ? strdup(gr->gr_name) : strdup_printf("%u", (unsigned) gid);
}

/* Why a file cannot be replaced: the deployment's common case is a file of another owner in a
 * sticky directory (calibration.md section 4.5). */
static int permission_reason(int err, const Snapshot *s, const char *target, char **ret_reason) {
        _cleanup_(freep) char *owner = NULL, *user = NULL, *group = NULL;

        if (err != EPERM && err != EACCES)
                return strdup_error(ret_reason, -err, "%s", strerror(err));
        if (!s->existed || s->st.st_uid == geteuid())
                return strdup_error(ret_reason, -err, "Permission denied");
        owner = user_name(s->st.st_uid);
        user = user_name(geteuid());
        group = group_name(getegid());
        if (!owner || !user || !group)
                return -ENOMEM;
        return strdup_error(ret_reason, -err, "Permission denied (%s belongs to %s; chown %s:%s %s)", target, owner,
                            user, group, target);
}

/* Writes the new text to a temporary file beside the target; returns its path. */
static int write_temporary(const char *target, const Snapshot *s, const char *text, size_t len, char **ret_tmp,
                           char **ret_reason) {
        _cleanup_(freep) char *dir = strdup(target), *base = strdup(target), *tmp = NULL;
        _cleanup_(closep) int fd = -1;
        int r;

        if (!dir || !base)
                return -ENOMEM;
        tmp = strdup_printf("%s/.%s.XXXXXX", dirname(dir), basename(base));
        if (!tmp)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return strdup_error(ret_reason, -errno, "%s (cannot create a file in %s)", strerror(errno), dir);

        if (fchmod(fd, s->existed ? s->st.st_mode & 07777 : 0644) < 0) {
                r = strdup_error(ret_reason, -errno, "%s", strerror(errno));
                goto fail;
        }
        /* The old owner and group where permitted: a core that may not chown keeps its own. */
        if (s->existed && (s->st.st_uid != geteuid() || s->st.st_gid != getegid()) &&
            fchown(fd, s->st.st_uid, s->st.st_gid) < 0 && errno != EPERM) {
                r = strdup_error(ret_reason, -errno, "%s", strerror(errno));
                goto fail;
        }
        r = io_write_all(fd, text, len);
        if (r < 0) {
                r = strdup_error(ret_reason, r, "%s", strerror(-r));
                goto fail;
        }
        if (fsync(fd) < 0 || close(TAKE_FD(fd)) < 0) {
                r = strdup_error(ret_reason, -errno, "%s", strerror(errno));
                goto fail;
        }
        *ret_tmp = TAKE_PTR(tmp);
        return 0;
fail:
        (void) unlink(tmp);
        return r;
}

static void fsync_directory_of(const char *target) {
        _cleanup_(freep) char *dir = strdup(target);
        _cleanup_(closep) int fd = -1;

        if (!dir)
                return;
        fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
                (void) fsync(fd);
}

static void snapshot_done(Snapshot *s) {
        free(s->text);
        *s = (Snapshot) {};
}

int taps_file_store(const TapsFileStore *s, char **ret_target, double *ret_applied, char **ret_reason) {
        _cleanup_(freep) char *target = NULL;
        int r;

        assert_return(s && !isempty(s->path) && !isempty(s->meter) && s->provenance && s->validate, -EINVAL);

        r = resolve_target(s->path, &target, ret_reason);
        if (r < 0)
                return r;

        for (unsigned attempt = 0; attempt < TAPS_FILE_STORE_ATTEMPTS; attempt++) {
                _cleanup_(freep) char *text = NULL, *tmp = NULL, *error = NULL;
                Snapshot snap;
                double applied, loaded;
                size_t len;

                r = snapshot_read(target, &snap, ret_reason);
                if (r < 0)
                        return r;
                r = taps_edit_calibration(snap.text, snap.len, s->meter, s->ml_per_tick, s->provenance, &text, &len,
                                          &applied, NULL);
                if (r < 0) {
                        snapshot_done(&snap);
                        return r;
                }
                r = s->validate(target, text, len, s->meter, &loaded, &error, s->userdata);
                if (r >= 0 && loaded != applied)
                        r = strdup_error(&error, -EINVAL, "the edited file gives %s %g mL/tick, not %g", s->meter,
                                         loaded, applied);
                if (r < 0) {
                        snapshot_done(&snap);
                        return strdup_error(ret_reason, r, "the edited file does not load: %s",
                                            error ?: strerror(-r));
                }

                r = write_temporary(target, &snap, text, len, &tmp, ret_reason);
                if (r < 0) {
                        snapshot_done(&snap);
                        return r;
                }
                if (s->before_replace)
                        s->before_replace(target, s->userdata);
                if (!snapshot_current(&snap, target)) {
                        /* Someone else wrote it meanwhile: their edit is the new base. */
                        (void) unlink(tmp);
                        snapshot_done(&snap);
                        continue;
                }
                if (rename(tmp, target) < 0) {
                        r = permission_reason(errno, &snap, target, ret_reason);
                        (void) unlink(tmp);
                        snapshot_done(&snap);
                        return r;
                }
                snapshot_done(&snap);
                /* Replaced already: a failure here leaves only its durability in doubt. */
                fsync_directory_of(target);
                if (ret_applied)
                        *ret_applied = applied;
                if (ret_target)
                        *ret_target = TAKE_PTR(target);
                return 0;
        }
        return strdup_error(ret_reason, -EAGAIN, "the file keeps changing");
}
