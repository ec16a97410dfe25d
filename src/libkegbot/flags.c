/* gflags-compatible flag parsing: see flags.h and programs-and-flags.md section 1.
 *
 * Arguments are read from a stack of sources (argv at the bottom, one entry per flag file being
 * read on top), so a --flagfile's lines are consumed exactly where it appeared and "--name value"
 * may take its value from whatever comes next. */
#include <ctype.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "flags.h"
#include "macro.h"
#include "util-double.h"
#include "util-escape.h"
#include "util-io.h"
#include "util-string.h"
#include "util-utf8.h"

/* A flag file bigger than this is certainly a mistake (e.g. --flagfile=/dev/zero). */
#define FLAGFILE_MAX (1024U * 1024U)
/* Bounds the source stack; the seen-file set alone already makes nesting finite. */
#define FLAGFILE_DEPTH_MAX 64

typedef union FlagValue {
        bool b;
        int i;
        int64_t i64;
        double d;
        const char *s;
} FlagValue;

typedef struct Touched {
        const FlagDef *def;
        FlagValue orig;
        bool given;
} Touched;

typedef struct Snapshot {
        const FlagDef *def;
        char *text;
} Snapshot;

static struct {
        Touched *touched;
        size_t n_touched;
        char **pool;            /* strings handed out as string flag values */
        size_t n_pool;
        Snapshot *defaults;     /* help's "(default: ...)" as of the start of flags_parse() */
        size_t n_defaults;
} st;

static bool gf_help, gf_helpshort;
static const char *gf_flagfile = "", *gf_undefok = "";

static const FlagDef gflags_defs[] = {
        FLAG_STRING("flagfile", &gf_flagfile,
                    "Insert flag definitions from the given file into the command line."),
        FLAG_BOOL("help", &gf_help, "show this help"),
        FLAG_BOOL("helpshort", &gf_helpshort, "show usage only for this module"),
        FLAG_STRING("undefok", &gf_undefok,
                    "comma-separated list of flag names that it is okay to specify on the command "
                    "line even if the program does not define a flag with that name.  IMPORTANT: "
                    "flags in this list that have arguments MUST use the --flag=value format."),
        FLAG_END,
};

static const FlagGroup gflags_group = { "gflags", gflags_defs };

/* ---- small string helpers ---- */

/* Sets *ret_error (if still unset) and returns -EINVAL; -ENOMEM if the message cannot be built. */
static int fail(char **ret_error, const char *format, ...) _printf_(2, 3);
static int fail(char **ret_error, const char *format, ...) {
        va_list ap;
        char *s;
        if (!ret_error || *ret_error)
                return -EINVAL;
        va_start(ap, format);
        s = strdup_vprintf(format, ap);
        va_end(ap);
        if (!s)
                return -ENOMEM;
        *ret_error = s;
        return -EINVAL;
}

/* Python's repr() of a str, which gflags used for "(default: ...)". */
static char *py_repr(const char *s) {
        bool sq = strchr(s, '\''), dq = strchr(s, '"');
        char quote = sq && !dq ? '"' : '\'';
        size_t len = strlen(s);
        char *out = malloc(len * 4 + 3), *p = out;
        if (!out)
                return NULL;
        *p++ = quote;
        for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
                if (*c == '\\' || *c == (unsigned char) quote) {
                        *p++ = '\\';
                        *p++ = (char) *c;
                } else if (*c == '\n') {
                        memcpy(p, "\\n", 2);
                        p += 2;
                } else if (*c == '\r') {
                        memcpy(p, "\\r", 2);
                        p += 2;
                } else if (*c == '\t') {
                        memcpy(p, "\\t", 2);
                        p += 2;
                } else if (*c < 0x20 || *c == 0x7f) {
                        snprintf(p, 5, "\\x%02x", *c);
                        p += 4;
                } else
                        *p++ = (char) *c;
        }
        *p++ = quote;
        *p = '\0';
        return out;
}

/* Bounds are shown the way a person writes them: "[0, 60]", not "[0.0, 60.0]". */
static void format_bound(double d, char out[static 64]) {
        if (isfinite(d) && d == floor(d) && fabs(d) < 1e15)
                snprintf(out, 64, "%.0f", d);
        else
                double_format(d, out);
}

/* ---- flag definitions ---- */

static bool has_min(const FlagDef *d) {
        if (!d->has_min)
                return false;
        switch (d->type) {
        case FLAG_TYPE_INT:
                return d->imin > INT_MIN;
        case FLAG_TYPE_INT64:
                return d->imin > INT64_MIN;
        case FLAG_TYPE_DOUBLE:
                return d->dmin > -DBL_MAX;
        default:
                return false;
        }
}

static bool has_max(const FlagDef *d) {
        if (!d->has_max)
                return false;
        switch (d->type) {
        case FLAG_TYPE_INT:
                return d->imax < INT_MAX;
        case FLAG_TYPE_INT64:
                return d->imax < INT64_MAX;
        case FLAG_TYPE_DOUBLE:
                return d->dmax < DBL_MAX;
        default:
                return false;
        }
}

/* gflags' "syntactic help" of numeric flags: the help line and the error text. */
static char *syntactic_help(const FlagDef *d) {
        bool lo = has_min(d), hi = has_max(d);
        if (d->type == FLAG_TYPE_INT || d->type == FLAG_TYPE_INT64) {
                if (lo && hi)
                        return strdup_printf("an integer in the range [%" PRIi64 ", %" PRIi64 "]", d->imin, d->imax);
                if (lo && d->imin == 0)
                        return strdup("a non-negative integer");
                if (lo)
                        return strdup_printf("an integer >= %" PRIi64, d->imin);
                if (hi)
                        return strdup_printf("an integer <= %" PRIi64, d->imax);
                return strdup("an integer");
        }
        if (d->type == FLAG_TYPE_DOUBLE) {
                char a[64], b[64];
                format_bound(d->dmin, a);
                format_bound(d->dmax, b);
                if (lo && hi)
                        return strdup_printf("a number in the range %c%s, %s]", d->dmin_exclusive ? '(' : '[', a, b);
                if (lo && d->dmin == 0)
                        return strdup(d->dmin_exclusive ? "a positive number" : "a non-negative number");
                if (lo)
                        return strdup_printf("a number %s %s", d->dmin_exclusive ? ">" : ">=", a);
                if (hi)
                        return strdup_printf("a number <= %s", b);
                return strdup("a number");
        }
        return NULL;
}

static FlagValue value_get(const FlagDef *d) {
        FlagValue v = {};
        switch (d->type) {
        case FLAG_TYPE_BOOL:
                v.b = *d->v.b;
                break;
        case FLAG_TYPE_INT:
                v.i = *d->v.i;
                break;
        case FLAG_TYPE_INT64:
                v.i64 = *d->v.i64;
                break;
        case FLAG_TYPE_DOUBLE:
                v.d = *d->v.d;
                break;
        case FLAG_TYPE_STRING:
                v.s = *d->v.s;
                break;
        }
        return v;
}

static void value_set(const FlagDef *d, FlagValue v) {
        switch (d->type) {
        case FLAG_TYPE_BOOL:
                *d->v.b = v.b;
                break;
        case FLAG_TYPE_INT:
                *d->v.i = v.i;
                break;
        case FLAG_TYPE_INT64:
                *d->v.i64 = v.i64;
                break;
        case FLAG_TYPE_DOUBLE:
                *d->v.d = v.d;
                break;
        case FLAG_TYPE_STRING:
                *d->v.s = v.s;
                break;
        }
}

static char *value_to_string(const FlagDef *d) {
        char buf[64];
        switch (d->type) {
        case FLAG_TYPE_BOOL:
                return strdup(*d->v.b ? "true" : "false");
        case FLAG_TYPE_INT:
                return strdup_printf("%d", *d->v.i);
        case FLAG_TYPE_INT64:
                return strdup_printf("%" PRIi64, *d->v.i64);
        case FLAG_TYPE_DOUBLE:
                return strdup(double_format(*d->v.d, buf));
        case FLAG_TYPE_STRING:
                return strdup(*d->v.s ?: "");
        }
        return NULL;
}

static Touched *touched_find(const FlagDef *d) {
        for (size_t i = 0; i < st.n_touched; i++)
                if (st.touched[i].def == d)
                        return st.touched + i;
        return NULL;
}

static Touched *touch(const FlagDef *d) {
        Touched *t = touched_find(d);
        if (t)
                return t;
        t = realloc(st.touched, (st.n_touched + 1) * sizeof(Touched));
        if (!t)
                return NULL;
        st.touched = t;
        t += st.n_touched++;
        *t = (Touched) { .def = d, .orig = value_get(d) };
        return t;
}

/* ---- value parsing ---- */

static bool parse_bool_word(const char *s, bool *ret) {
        static const char *const yes[] = { "true", "t", "1" }, *const no[] = { "false", "f", "0" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *ret = true;
                        return true;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *ret = false;
                        return true;
                }
        }
        return false;
}

/* Decimal with an optional sign (leading zeros are decimal, as in gflags), or 0x hex. */
static bool parse_integer(const char *s, int64_t *ret) {
        const char *p = s;
        bool neg = false;
        int base = 10;
        uint64_t v = 0, limit;

        if (*p == '+' || *p == '-')
                neg = *p++ == '-';
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && p[2]) {
                base = 16;
                p += 2;
        }
        if (!*p)
                return false;
        limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
        for (; *p; p++) {
                int digit;
                if (*p >= '0' && *p <= '9')
                        digit = *p - '0';
                else if (base == 16 && *p >= 'a' && *p <= 'f')
                        digit = *p - 'a' + 10;
                else if (base == 16 && *p >= 'A' && *p <= 'F')
                        digit = *p - 'A' + 10;
                else
                        return false;
                if (v > (limit - (uint64_t) digit) / (uint64_t) base)
                        return false;
                v = v * (uint64_t) base + (uint64_t) digit;
        }
        if (neg)
                *ret = v == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) v;
        else
                *ret = (int64_t) v;
        return true;
}

/* [sign] digits [. digits] [e [sign] digits], at least one mantissa digit; no hex, inf or nan. */
static bool parse_number(const char *s, double *ret) {
        const char *p = s;
        bool digits = false;

        if (*p == '+' || *p == '-')
                p++;
        while (isdigit((unsigned char) *p)) {
                p++;
                digits = true;
        }
        if (*p == '.') {
                p++;
                while (isdigit((unsigned char) *p)) {
                        p++;
                        digits = true;
                }
        }
        if (!digits)
                return false;
        if (*p == 'e' || *p == 'E') {
                p++;
                if (*p == '+' || *p == '-')
                        p++;
                if (!isdigit((unsigned char) *p))
                        return false;
                while (isdigit((unsigned char) *p))
                        p++;
        }
        if (*p)
                return false;
        errno = 0;
        double d = strtod(s, NULL);
        if (!isfinite(d))
                return false;
        *ret = d;
        return true;
}

static int pool_strdup(const char *s, const char **ret) {
        char **t = realloc(st.pool, (st.n_pool + 1) * sizeof(char *));
        if (!t)
                return -ENOMEM;
        st.pool = t;
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        st.pool[st.n_pool++] = c;
        *ret = c;
        return 0;
}

/* Assign 'value' (NULL: a bare boolean flag) to d. 'given': from the command line / a flag file. */
static int flag_assign(const FlagDef *d, const char *value, bool given, char **ret_error) {
        FlagValue v = {};
        int r;

        switch (d->type) {
        case FLAG_TYPE_BOOL:
                if (!value)
                        v.b = true;
                else if (!parse_bool_word(value, &v.b))
                        return fail(ret_error, "flag --%s=%s: '%s' is not a boolean (true, t, 1, false, f, 0)",
                                    d->name, value, value);
                break;
        case FLAG_TYPE_INT:
        case FLAG_TYPE_INT64: {
                int64_t i;
                _cleanup_(freep) char *sh = syntactic_help(d);
                if (!sh)
                        return -ENOMEM;
                if (!parse_integer(value, &i))
                        return fail(ret_error, "flag --%s=%s: '%s' is not %s", d->name, value, value, sh);
                if ((has_min(d) && i < d->imin) || (has_max(d) && i > d->imax))
                        return fail(ret_error, "flag --%s=%s: %s is not %s", d->name, value, value, sh);
                if (d->type == FLAG_TYPE_INT) {
                        if (i < INT_MIN || i > INT_MAX)
                                return fail(ret_error, "flag --%s=%s: %s is out of range", d->name, value, value);
                        v.i = (int) i;
                } else
                        v.i64 = i;
                break;
        }
        case FLAG_TYPE_DOUBLE: {
                double x;
                _cleanup_(freep) char *sh = syntactic_help(d);
                if (!sh)
                        return -ENOMEM;
                if (!parse_number(value, &x))
                        return fail(ret_error, "flag --%s=%s: '%s' is not %s", d->name, value, value, sh);
                if ((has_min(d) && (d->dmin_exclusive ? x <= d->dmin : x < d->dmin)) ||
                    (has_max(d) && x > d->dmax))
                        return fail(ret_error, "flag --%s=%s: %s is not %s", d->name, value, value, sh);
                v.d = x;
                break;
        }
        case FLAG_TYPE_STRING:
                /* Every source (argument, flag file, environment) ends here: text is checked once. */
                if (!utf8_is_valid(value))
                        return fail(ret_error, "flag --%s: the value is not valid UTF-8", d->name);
                if (d->choices) {
                        bool ok = false;
                        for (const char *const *c = d->choices; *c; c++)
                                ok = ok || streq(*c, value);
                        if (!ok) {
                                size_t len = 3;
                                for (const char *const *c = d->choices; *c; c++)
                                        len += strlen(*c) + 1;
                                _cleanup_(freep) char *list = malloc(len);
                                if (!list)
                                        return -ENOMEM;
                                list[0] = '\0';
                                for (const char *const *c = d->choices; *c; c++) {
                                        if (c != d->choices)
                                                strcat(list, "|");
                                        strcat(list, *c);
                                }
                                return fail(ret_error, "flag --%s=%s: value should be one of <%s>",
                                            d->name, value, list);
                        }
                }
                r = pool_strdup(value, &v.s);
                if (r < 0)
                        return r;
                break;
        }

        Touched *t = touch(d);
        if (!t)
                return -ENOMEM;
        value_set(d, v);
        if (given)
                t->given = true;
        return 0;
}

static const FlagDef *lookup(const FlagGroup *groups, size_t n_groups, const char *name, size_t len) {
        for (size_t g = 0; g <= n_groups; g++) {
                const FlagGroup *grp = g < n_groups ? groups + g : &gflags_group;
                if (!grp->flags)
                        continue;
                for (const FlagDef *d = grp->flags; d->name; d++)
                        if (strlen(d->name) == len && strncmp(d->name, name, len) == 0)
                                return d;
        }
        return NULL;
}

/* ---- environment ---- */

int flags_apply_env(const FlagGroup *groups, size_t n_groups, char **ret_error) {
        assert_return(groups || n_groups == 0, -EINVAL);
        if (ret_error)
                *ret_error = NULL;
        for (size_t g = 0; g < n_groups; g++) {
                if (!groups[g].flags)
                        continue;
                for (const FlagDef *d = groups[g].flags; d->name; d++) {
                        int r;
                        if (!d->env)
                                continue;
                        const char *e = getenv(d->env);
                        if (!e)
                                continue;
                        if (!utf8_is_valid(e))
                                return fail(ret_error, "environment variable %s is not valid UTF-8", d->env);
                        if (d->type == FLAG_TYPE_BOOL) {
                                r = flag_assign(d, NULL, false, ret_error);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        size_t len = d->env_mode == FLAG_ENV_FIRST_ENTRY ? strcspn(e, ":") : strlen(e);
                        if (len == 0)
                                continue;
                        _cleanup_(freep) char *v = strdup_printf("%.*s%s", (int) MIN(len, (size_t) INT_MAX), e,
                                                                 d->env_suffix ?: "");
                        if (!v)
                                return -ENOMEM;
                        _cleanup_(freep) char *err = NULL;
                        r = flag_assign(d, v, false, &err);
                        if (r < 0) {
                                if (err)
                                        return fail(ret_error, "environment variable %s: %s", d->env, err);
                                return r;
                        }
                }
        }
        return 0;
}

/* ---- the parser ---- */

typedef struct Source {
        char **args;            /* NULL-terminated when owned (a flag file's lines) */
        size_t n, i;
        bool owned;
} Source;

typedef struct SeenFile {
        dev_t dev;
        ino_t ino;
} SeenFile;

typedef struct Parser {
        const FlagGroup *groups;
        size_t n_groups;
        Source stack[FLAGFILE_DEPTH_MAX + 1];
        size_t depth;
        SeenFile *seen;
        size_t n_seen;
        char **unknown;         /* "--name" of undefined flags, in order; checked against undefok */
        char **unknown_names;
        size_t n_unknown, n_unknown_names;
        char **undefok;
        size_t n_undefok;
        bool allow_include;
        bool interspersed;      /* flags may follow positional arguments (until "--") */
        bool stop;              /* a positional or "--" was seen */
} Parser;

static void parser_done(Parser *p) {
        for (size_t i = 0; i < p->depth; i++)
                if (p->stack[i].owned)
                        strv_free(p->stack[i].args);
        p->depth = 0;
        free(p->seen);
        strv_free(p->unknown);
        strv_free(p->unknown_names);
        strv_free(p->undefok);
}

/* The next argument, or NULL at the end of everything. */
static const char *parser_next(Parser *p) {
        while (p->depth > 0) {
                Source *s = p->stack + p->depth - 1;
                if (s->i < s->n)
                        return s->args[s->i++];
                if (s->owned)
                        strv_free(s->args);
                p->depth--;
        }
        return NULL;
}

static bool line_is_blank_or_comment(const char *s) {
        return !*s || s[0] == '#' || (s[0] == '/' && s[1] == '/');
}

/* Split a flag file into its argument lines. A line that is not valid UTF-8 is an error naming
 * the file ('name') and the line. */
static int split_lines(const char *name, const char *buf, size_t len, char ***ret, size_t *ret_n,
                       char **ret_error) {
        char **l = NULL;
        size_t n = 0;
        unsigned lineno = 0;
        const char *p = buf, *end = buf + len;
        int r;

        /* Written by some editors; it would glue itself to the first flag and make it unknown. */
        if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
                return fail(ret_error, "%s:1: the file starts with a UTF-8 byte order mark (U+FEFF); save it without one",
                            name);

        while (p < end) {
                lineno++;
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *e = nl ?: end;
                const char *a = p, *b = e;
                /* A NUL would cut the line short without a word. */
                if (memchr(p, '\0', (size_t) (e - p))) {
                        strv_free(l);
                        return fail(ret_error, "%s:%u: the line holds a NUL byte", name, lineno);
                }
                while (a < b && isspace((unsigned char) *a))
                        a++;
                while (b > a && isspace((unsigned char) b[-1]))
                        b--;
                char *line = strndup(a, (size_t) (b - a));
                if (!line) {
                        strv_free(l);
                        return -ENOMEM;
                }
                if (!utf8_is_valid(line)) {
                        free(line);
                        strv_free(l);
                        return fail(ret_error, "%s:%u: not valid UTF-8", name, lineno);
                }
                if (line_is_blank_or_comment(line))
                        free(line);
                else {
                        r = strv_push(&l, &n, line);
                        if (r < 0) {
                                strv_free(l);
                                return r;
                        }
                }
                p = nl ? nl + 1 : end;
        }
        if (!l) {
                l = calloc(1, sizeof(char *));
                if (!l)
                        return -ENOMEM;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

static int parser_push_lines(Parser *p, char **lines, size_t n, char **ret_error) {
        if (p->depth >= ELEMENTSOF(p->stack)) {
                strv_free(lines);
                return fail(ret_error, "flagfiles nested too deeply");
        }
        p->stack[p->depth++] = (Source) { .args = lines, .n = n, .owned = true };
        return 0;
}

static char *expand_tilde(const char *path) {
        if (path[0] != '~')
                return strdup(path);
        const char *rest = path + 1 + strcspn(path + 1, "/");
        const char *home = NULL;
        if (rest == path + 1) {
                home = getenv("HOME");
                if (isempty(home)) {
                        struct passwd *pw = getpwuid(getuid());
                        home = pw ? pw->pw_dir : NULL;
                }
        } else {
                _cleanup_(freep) char *user = strndup(path + 1, (size_t) (rest - path - 1));
                if (!user)
                        return NULL;
                struct passwd *pw = getpwnam(user);
                home = pw ? pw->pw_dir : NULL;
        }
        if (!home)
                return strdup(path);    /* like os.path.expanduser: left alone */
        return strdup_printf("%s%s", home, rest);
}

static int read_file(const char *path, char **ret, size_t *ret_len, struct stat *ret_st) {
        _cleanup_(closep) int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, ret_st) < 0)
                return -errno;
        if (S_ISDIR(ret_st->st_mode))
                return -EISDIR;
        return io_read_all(fd, FLAGFILE_MAX, ret, ret_len);
}

static int parser_include(Parser *p, const char *value, char **ret_error) {
        struct stat sb;
        _cleanup_(freep) char *buf = NULL;
        size_t len = 0, n = 0;
        char **lines = NULL;
        int r;

        if (!p->allow_include)
                return fail(ret_error, "--flagfile is not allowed here");
        if (isempty(value))
                return fail(ret_error, "flag --flagfile requires a file name");
        _cleanup_(freep) char *path = expand_tilde(value);
        if (!path)
                return -ENOMEM;
        r = read_file(path, &buf, &len, &sb);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail(ret_error, "cannot read flagfile %s: %s", path, strerror(-r));
        for (size_t i = 0; i < p->n_seen; i++)
                if (p->seen[i].dev == sb.st_dev && p->seen[i].ino == sb.st_ino) {
                        fprintf(stderr, "Warning: Hit circular flagfile dependency: %s\n", path);
                        return 0;
                }
        SeenFile *t = realloc(p->seen, (p->n_seen + 1) * sizeof(SeenFile));
        if (!t)
                return -ENOMEM;
        p->seen = t;
        p->seen[p->n_seen++] = (SeenFile) { sb.st_dev, sb.st_ino };
        r = split_lines(path, buf, len, &lines, &n, ret_error);
        if (r < 0)
                return r;
        return parser_push_lines(p, lines, n, ret_error);
}

static int parser_add_undefok(Parser *p, const char *list) {
        for (const char *s = list; *s;) {
                size_t l = strcspn(s, ",");
                if (l > 0) {
                        char *name = strndup(s, l);
                        int r = strv_push(&p->undefok, &p->n_undefok, name);
                        if (r < 0)
                                return r;
                }
                s += l;
                if (*s == ',')
                        s++;
        }
        return 0;
}

static bool parser_undefok(const Parser *p, const char *name) {
        for (size_t i = 0; i < p->n_undefok; i++) {
                if (streq(p->undefok[i], name))
                        return true;
                const char *bare = startswith(name, "no");
                if (bare && streq(p->undefok[i], bare))
                        return true;
        }
        return false;
}

/* The first undefined flag not excused by --undefok (given anywhere so far), as an error. */
static int parser_check_unknown(const Parser *p, char **ret_error) {
        for (size_t i = 0; i < p->n_unknown; i++)
                if (!parser_undefok(p, p->unknown_names[i])) {
                        if (ret_error) {
                                free(*ret_error);
                                *ret_error = NULL;
                        }
                        return fail(ret_error, "unknown flag %s", p->unknown[i]);
                }
        return 0;
}

/* One argument that starts with '-'. */
static int parser_flag(Parser *p, const char *arg, char **ret_error) {
        const char *name = arg[1] == '-' ? arg + 2 : arg + 1;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t) (eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : NULL;
        int r;

        if (streq(arg, "-?")) {
                gf_help = true;
                return 0;
        }
        if (len == 0)
                return fail(ret_error, "unknown flag %s", arg);

        const FlagDef *d = lookup(p->groups, p->n_groups, name, len);
        if (!d && len > 2 && strncmp(name, "no", 2) == 0) {
                const FlagDef *b = lookup(p->groups, p->n_groups, name + 2, len - 2);
                if (b && b->type == FLAG_TYPE_BOOL) {
                        if (value)
                                return fail(ret_error, "flag --%.*s does not take a value", (int) len, name);
                        Touched *t = touch(b);
                        if (!t)
                                return -ENOMEM;
                        *b->v.b = false;
                        t->given = true;
                        return 0;
                }
        }
        if (!d) {
                /* Whether it may be ignored is known only once all --undefok have been seen. */
                _cleanup_(freep) char *n = strndup(name, len);
                if (!n)
                        return -ENOMEM;
                r = strv_push(&p->unknown, &p->n_unknown, strdup_printf("--%s", n));
                if (r < 0)
                        return r;
                return strv_push(&p->unknown_names, &p->n_unknown_names, TAKE_PTR(n));
        }

        if (d->type != FLAG_TYPE_BOOL && !value) {
                value = parser_next(p);
                if (!value)
                        return fail(ret_error, "flag --%s requires a value", d->name);
        }
        if (d == &gflags_defs[0])
                return parser_include(p, value, ret_error);
        if (d == &gflags_defs[3]) {
                r = parser_add_undefok(p, value);
                if (r < 0)
                        return r;
        }
        return flag_assign(d, value, true, ret_error);
}

static int fail_not_utf8(const char *arg, char **ret_error) {
        _cleanup_(freep) char *e = escape_for_log(arg);
        if (!e)
                return -ENOMEM;
        return fail(ret_error, "argument '%s' is not valid UTF-8", e);
}

static int parser_run(Parser *p, char ***ret_positional, bool positional_ok, char **ret_error) {
        char **pos = NULL;
        size_t n_pos = 0;
        const char *a;
        int r = 0;

        while ((a = parser_next(p))) {
                if (!utf8_is_valid(a)) {
                        r = fail_not_utf8(a, ret_error);
                        break;
                }
                if (streq(a, "--") || a[0] != '-' || a[1] == '\0') {
                        if (!positional_ok) {
                                r = fail(ret_error, "unexpected argument '%s'", a);
                                break;
                        }
                        if (p->interspersed && !streq(a, "--")) {
                                r = strv_push(&pos, &n_pos, strdup(a));
                                if (r < 0)
                                        break;
                                continue;
                        }
                        if (!streq(a, "--")) {
                                r = strv_push(&pos, &n_pos, strdup(a));
                                if (r < 0)
                                        break;
                        }
                        while ((a = parser_next(p))) {
                                if (!utf8_is_valid(a)) {
                                        r = fail_not_utf8(a, ret_error);
                                        break;
                                }
                                r = strv_push(&pos, &n_pos, strdup(a));
                                if (r < 0)
                                        break;
                        }
                        break;
                }
                r = parser_flag(p, a, ret_error);
                if (r < 0)
                        break;
        }
        if (r != -ENOMEM) {
                /* An undefined flag before the failure point is the first error. */
                int k = parser_check_unknown(p, ret_error);
                if (k < 0)
                        r = k;
        }
        if (r < 0) {
                strv_free(pos);
                return r;
        }
        if (ret_positional) {
                if (!pos) {
                        pos = calloc(1, sizeof(char *));
                        if (!pos)
                                return -ENOMEM;
                }
                *ret_positional = pos;
        } else
                strv_free(pos);
        return 0;
}

static void snapshot_defaults(const FlagGroup *groups, size_t n_groups) {
        for (size_t g = 0; g <= n_groups; g++) {
                const FlagGroup *grp = g < n_groups ? groups + g : &gflags_group;
                if (!grp->flags)
                        continue;
                for (const FlagDef *d = grp->flags; d->name; d++) {
                        char *text = value_to_string(d);
                        if (!text)
                                continue;
                        Snapshot *s = NULL;
                        for (size_t i = 0; i < st.n_defaults; i++)
                                if (st.defaults[i].def == d)
                                        s = st.defaults + i;
                        if (!s) {
                                Snapshot *t = realloc(st.defaults, (st.n_defaults + 1) * sizeof(Snapshot));
                                if (!t) {
                                        free(text);
                                        continue;
                                }
                                st.defaults = t;
                                s = st.defaults + st.n_defaults++;
                                *s = (Snapshot) { .def = d };
                        }
                        free(s->text);
                        s->text = text;
                }
        }
}

int flags_parse(const FlagGroup *groups, size_t n_groups, int argc, char *const *argv,
                char ***ret_positional, char **ret_error) {
        return flags_parse_full(groups, n_groups, argc, argv, true, ret_positional, ret_error);
}

static int parse_args(const FlagGroup *groups, size_t n_groups, int argc, char *const *argv, bool allow_include,
                      bool interspersed, char ***ret_positional, char **ret_error) {
        _cleanup_(freep) char *error = NULL;
        Parser p = { .groups = groups, .n_groups = n_groups, .allow_include = allow_include,
                     .interspersed = interspersed };
        int r;

        assert_return(groups || n_groups == 0, -EINVAL);
        assert_return(argv || argc <= 1, -EINVAL);

        if (ret_error)
                *ret_error = NULL;
        gf_help = gf_helpshort = false;
        snapshot_defaults(groups, n_groups);
        if (argc > 1 && argv)
                p.stack[p.depth++] = (Source) { .args = (char **) argv + 1, .n = (size_t) argc - 1 };
        r = parser_run(&p, ret_positional, true, &error);
        parser_done(&p);
        if (r < 0) {
                if (ret_error)
                        *ret_error = TAKE_PTR(error);
                return r;
        }
        if (gf_help)
                return FLAGS_HELP;
        if (gf_helpshort)
                return FLAGS_HELPSHORT;
        return FLAGS_OK;
}

int flags_parse_full(const FlagGroup *groups, size_t n_groups, int argc, char *const *argv,
                     bool allow_include, char ***ret_positional, char **ret_error) {
        return parse_args(groups, n_groups, argc, argv, allow_include, false, ret_positional, ret_error);
}

int flags_parse_interspersed(const FlagGroup *groups, size_t n_groups, int argc, char *const *argv,
                             char ***ret_positional, char **ret_error) {
        return parse_args(groups, n_groups, argc, argv, true, true, ret_positional, ret_error);
}

int flags_parse_buffer(const FlagGroup *groups, size_t n_groups, const char *buf, size_t len,
                       bool allow_include, char **ret_error) {
        _cleanup_(freep) char *error = NULL;
        Parser p = { .groups = groups, .n_groups = n_groups, .allow_include = allow_include };
        char **lines;
        size_t n;
        int r;

        assert_return(groups || n_groups == 0, -EINVAL);

        if (ret_error)
                *ret_error = NULL;
        r = split_lines("flag file", buf ?: "", buf ? len : 0, &lines, &n, &error);
        if (r < 0) {
                if (ret_error)
                        *ret_error = TAKE_PTR(error);
                return r;
        }
        r = parser_push_lines(&p, lines, n, &error);
        if (r >= 0)
                r = parser_run(&p, NULL, false, &error);
        parser_done(&p);
        if (r < 0 && ret_error)
                *ret_error = TAKE_PTR(error);
        return r;
}

bool flags_given(const char *name) {
        for (size_t i = 0; i < st.n_touched; i++)
                if (st.touched[i].given && streq_ptr(st.touched[i].def->name, name))
                        return true;
        return false;
}

void flags_reset(void) {
        for (size_t i = st.n_touched; i > 0; i--)
                value_set(st.touched[i - 1].def, st.touched[i - 1].orig);
        free(st.touched);
        for (size_t i = 0; i < st.n_pool; i++)
                free(st.pool[i]);
        free(st.pool);
        for (size_t i = 0; i < st.n_defaults; i++)
                free(st.defaults[i].text);
        free(st.defaults);
        memset(&st, 0, sizeof st);
}

/* ---- help ---- */

static int cmp_def(const void *a, const void *b) {
        return strcmp((*(const FlagDef *const *) a)->name, (*(const FlagDef *const *) b)->name);
}

static void print_flag(FILE *f, const FlagDef *d) {
        fprintf(f, "  --%s%s:  ", d->type == FLAG_TYPE_BOOL ? "[no]" : "", d->name);
        if (d->choices) {
                fputc('<', f);
                for (const char *const *c = d->choices; *c; c++)
                        fprintf(f, "%s%s", c == d->choices ? "" : "|", *c);
                fputs(">: ", f);
        }
        fprintf(f, "%s\n", d->help ?: "");

        const char *text = NULL;
        _cleanup_(freep) char *current = NULL;
        for (size_t i = 0; i < st.n_defaults; i++)
                if (st.defaults[i].def == d)
                        text = st.defaults[i].text;
        if (!text)
                text = current = value_to_string(d);
        if (text) {
                _cleanup_(freep) char *q = py_repr(text);
                if (q)
                        fprintf(f, "    (default: %s)\n", q);
        }
        if ((d->type == FLAG_TYPE_INT || d->type == FLAG_TYPE_INT64 || d->type == FLAG_TYPE_DOUBLE) &&
            (has_min(d) || has_max(d))) {
                _cleanup_(freep) char *sh = syntactic_help(d);
                if (sh)
                        fprintf(f, "    (%s)\n", sh);
        }
}

static void print_group(FILE *f, const FlagGroup *g) {
        size_t n = 0;
        if (!g->flags)
                return;
        for (const FlagDef *d = g->flags; d->name; d++)
                n++;
        if (n == 0)
                return;
        _cleanup_(freep) const FlagDef **sorted = calloc(n, sizeof(FlagDef *));
        if (!sorted)
                return;
        for (size_t i = 0; i < n; i++)
                sorted[i] = g->flags + i;
        qsort(sorted, n, sizeof(FlagDef *), cmp_def);
        fprintf(f, "\n%s:\n", g->name);
        for (size_t i = 0; i < n; i++)
                print_flag(f, sorted[i]);
}

void flags_print_help(FILE *f, const char *program, const char *description,
                      const FlagGroup *groups, size_t n_groups, bool short_help) {
        if (!isempty(description))
                fprintf(f, "%s\n\n", description);
        fprintf(f, "USAGE: %s [flags]\n\nflags:\n", program ?: "");
        for (size_t g = 0; g < n_groups; g++) {
                print_group(f, groups + g);
                if (short_help)
                        break;
        }
        if (!short_help)
                print_group(f, &gflags_group);
        fflush(f);
}
