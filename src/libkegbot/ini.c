/* INI reader: Python 2 SafeConfigParser dialect, see ini.h and programs-and-flags.md §13.2. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ini.h"
#include "util-io.h"
#include "util-strbuf.h"
#include "util-string.h"
#include "util-string.h"
#include "util-utf8.h"

/* Python would happily expand "%(b)s%(b)s..." ten levels deep into gigabytes; we refuse instead. */
#define INI_MAX_VALUE_SIZE (1024U * 1024U)
#define INI_MAX_FILE_SIZE (64U * 1024U * 1024U)
#define INI_MAX_REFERENCES 10000U

static const char *ini_name(const Ini *ini) {
        return ini->name ?: "<ini>";
}

static void ascii_lower(char *s) {
        for (; *s; s++)
                if (*s >= 'A' && *s <= 'Z')
                        *s = (char) (*s - 'A' + 'a');
}

static IniSection *section_free(IniSection *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_keys; i++) {
                free(s->keys[i].key);
                free(s->keys[i].value);
        }
        free(s->keys);
        free(s->name);
        free(s);
        return NULL;
}

static IniSection *section_new(const char *name, unsigned line) {
        IniSection *s = calloc(1, sizeof(IniSection));
        if (!s)
                return NULL;
        s->name = strdup(name);
        if (!s->name)
                return section_free(s);
        s->line = line;
        return s;
}

static IniKey *section_find_key(const IniSection *s, const char *lower_key) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_keys; i++)
                if (streq(s->keys[i].key, lower_key))
                        return &s->keys[i];
        return NULL;
}

/* Takes ownership of key (already lower-cased) and value, also on failure. Returns the key's index. */
static int section_put(IniSection *s, char *key, char *value, unsigned line) {
        IniKey *k = section_find_key(s, key);
        if (k) {
                /* Later value wins, earlier position stays (Python's ordered dict). */
                free(key);
                free(k->value);
                k->value = value;
                k->line = line;
                return (int) (k - s->keys);
        }
        if (s->n_keys >= INT32_MAX) {
                free(key);
                free(value);
                return -E2BIG;
        }

        IniKey *n = realloc(s->keys, (s->n_keys + 1) * sizeof(IniKey));
        if (!n) {
                free(key);
                free(value);
                return -ENOMEM;
        }
        s->keys = n;
        s->keys[s->n_keys++] = (IniKey) { .key = key, .value = value, .line = line };
        return (int) (s->n_keys - 1);
}

static int section_put_copy(IniSection *s, const char *key, const char *value) {
        char *k = strdup(key), *v = strdup(value);
        if (!k || !v) {
                free(k);
                free(v);
                return -ENOMEM;
        }
        ascii_lower(k);
        int r = section_put(s, k, v, 0);
        return r < 0 ? r : 0;
}

int ini_new(Ini **ret, const char *name) {
        _cleanup_(ini_freep) Ini *ini = NULL;

        assert_return(ret, -EINVAL);

        ini = calloc(1, sizeof(Ini));
        if (!ini)
                return -ENOMEM;
        if (name) {
                ini->name = strdup(name);
                if (!ini->name)
                        return -ENOMEM;
        }
        ini->defaults = section_new(INI_DEFAULT_SECTION, 0);
        ini->builtin_defaults = section_new(INI_DEFAULT_SECTION, 0);
        ini->variables = section_new("", 0);
        if (!ini->defaults || !ini->builtin_defaults || !ini->variables)
                return -ENOMEM;
        *ret = TAKE_PTR(ini);
        return 0;
}

Ini *ini_free(Ini *ini) {
        if (!ini)
                return NULL;
        for (size_t i = 0; i < ini->n_sections; i++)
                section_free(ini->sections[i]);
        free(ini->sections);
        section_free(ini->defaults);
        section_free(ini->builtin_defaults);
        section_free(ini->variables);
        free(ini->name);
        free(ini);
        return NULL;
}

int ini_set_variable(Ini *ini, const char *name, const char *value) {
        assert_return(ini, -EINVAL);
        assert_return(name, -EINVAL);
        assert_return(value, -EINVAL);
        return section_put_copy(ini->variables, name, value);
}

int ini_set_builtin_default(Ini *ini, const char *key, const char *value) {
        assert_return(ini, -EINVAL);
        assert_return(key, -EINVAL);
        assert_return(value, -EINVAL);
        return section_put_copy(ini->builtin_defaults, key, value);
}

void ini_set_unique_sections(Ini *ini, bool unique) {
        assert_return(ini, );
        ini->unique_sections = unique;
}

const IniSection *ini_find_section(const Ini *ini, const char *section) {
        assert_return(ini, NULL);
        if (!section)
                return NULL;
        if (streq(section, INI_DEFAULT_SECTION))
                return ini->defaults;
        for (size_t i = 0; i < ini->n_sections; i++)
                if (streq(ini->sections[i]->name, section))
                        return ini->sections[i];
        return NULL;
}

bool ini_has_section(const Ini *ini, const char *section) {
        return ini_find_section(ini, section) != NULL;
}

static IniSection *ini_get_or_add_section(Ini *ini, const char *name, unsigned line) {
        IniSection *s = (IniSection *) ini_find_section(ini, name);
        if (s)
                return s;

        IniSection **n = realloc(ini->sections, (ini->n_sections + 1) * sizeof(IniSection *));
        if (!n)
                return NULL;
        ini->sections = n;
        s = section_new(name, line);
        if (!s)
                return NULL;
        ini->sections[ini->n_sections++] = s;
        return s;
}

/* The line [line, line+len) without its terminator. *last_key is an index into (*cur)->keys (not a
 * pointer: the array moves as keys are added), -1 when there is no key to continue. */
static int parse_line(Ini *ini, const char *line, size_t len, unsigned lineno,
                      IniSection **cur, int *last_key, char **ret_error) {
        const char *name = ini_name(ini);
        size_t i = 0;

        if (memchr(line, '\0', len))
                return strdup_error(ret_error, -EINVAL, "%s:%u: NUL byte in line", name, lineno);
        /* Text is checked once, here where it enters: no value of an INI file reaches a log line, a
         * kegnet frame or a record on disk unless it is valid UTF-8. */
        if (!utf8_is_valid_n(line, len))
                return strdup_error(ret_error, -EINVAL, "%s:%u: not valid UTF-8", name, lineno);

        while (i < len && char_is_blank(line[i]))
                i++;
        if (i == len)
                return 0;       /* blank: ignored, and the previous key may still be continued */
        if (line[i] == '#' || line[i] == ';')
                return 0;

        if (i > 0) {
                /* Leading whitespace: a continuation of the previous value. */
                if (!*cur || *last_key < 0)
                        return strdup_error(ret_error, -EINVAL,
                                         "%s:%u: continuation line without a preceding key", name, lineno);
                _cleanup_(freep) char *piece = strndup_trim(line + i, len - i);
                if (!piece)
                        return -ENOMEM;
                IniKey *k = &(*cur)->keys[*last_key];
                size_t a = strlen(k->value), b = strlen(piece);
                if (a + 1 + b + 1 > INI_MAX_VALUE_SIZE)
                        return strdup_error(ret_error, -EINVAL, "%s:%u: value too long", name, lineno);
                char *v = realloc(k->value, a + 1 + b + 1);
                if (!v)
                        return -ENOMEM;
                v[a] = '\n';
                memcpy(v + a + 1, piece, b + 1);
                k->value = v;
                return 0;
        }

        if (line[0] == '[') {
                const char *close = memchr(line, ']', len);
                if (!close)
                        return strdup_error(ret_error, -EINVAL, "%s:%u: section header without ']'", name, lineno);
                /* Python ignores whatever follows the ']'. */
                _cleanup_(freep) char *sect = strndup_trim(line + 1, (size_t) (close - line - 1));
                if (!sect)
                        return -ENOMEM;
                if (!*sect)
                        return strdup_error(ret_error, -EINVAL, "%s:%u: empty section name", name, lineno);
                const IniSection *old = ini_find_section(ini, sect);
                if (old && ini->unique_sections)
                        return strdup_error(ret_error, -EINVAL, "%s:%u: section [%s] repeats the one at line %u",
                                            name, lineno, sect, old->line);
                IniSection *s = ini_get_or_add_section(ini, sect, lineno);
                if (!s)
                        return -ENOMEM;
                *cur = s;
                *last_key = -1;
                return 0;
        }

        size_t sep = 0;
        while (sep < len && line[sep] != '=' && line[sep] != ':')
                sep++;
        if (!*cur)
                return strdup_error(ret_error, -EINVAL, "%s:%u: key outside of any [section]", name, lineno);
        if (sep == len)
                return strdup_error(ret_error, -EINVAL, "%s:%u: expected 'key = value' or '[section]'", name, lineno);
        if (sep == 0)
                return strdup_error(ret_error, -EINVAL, "%s:%u: missing key name before '%c'", name, lineno, line[0]);

        /* An inline comment: ';' preceded by whitespace. '#' stays literal. */
        size_t end = len;
        for (size_t j = sep + 1; j < len; j++)
                if (line[j] == ';' && char_is_blank(line[j - 1])) {
                        end = j;
                        break;
                }

        _cleanup_(freep) char *key = strndup_trim(line, sep);
        _cleanup_(freep) char *value = strndup_trim(line + sep + 1, end - sep - 1);
        if (!key || !value)
                return -ENOMEM;
        ascii_lower(key);

        int r = section_put(*cur, TAKE_PTR(key), TAKE_PTR(value), lineno);
        if (r == -E2BIG)
                return strdup_error(ret_error, -EINVAL, "%s:%u: too many keys", name, lineno);
        if (r < 0)
                return r;
        *last_key = r;
        return 0;
}

int ini_parse_buffer(Ini *ini, const char *name, const char *data, size_t size, char **ret_error) {
        IniSection *cur = NULL;
        int last_key = -1;
        unsigned lineno = 0;
        size_t pos = 0;
        int r;

        assert_return(ini, -EINVAL);
        assert_return(data || size == 0, -EINVAL);

        if (ret_error)
                *ret_error = NULL;
        if (name) {
                char *n = strdup(name);
                if (!n)
                        return -ENOMEM;
                free(ini->name);
                ini->name = n;
        }

        /* Written by some editors; Python would read it as part of the first header. */
        if (size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
                return strdup_error(ret_error, -EINVAL,
                                    "%s:1: the file starts with a UTF-8 byte order mark (U+FEFF); save it without one",
                                    ini_name(ini));

        while (pos < size) {
                const char *nl = memchr(data + pos, '\n', size - pos);
                size_t len = nl ? (size_t) (nl - (data + pos)) : size - pos;

                if (lineno == UINT32_MAX)
                        return strdup_error(ret_error, -EINVAL, "%s: too many lines", ini_name(ini));
                lineno++;
                r = parse_line(ini, data + pos, len, lineno, &cur, &last_key, ret_error);
                if (r == -ENOMEM)
                        return strdup_error(ret_error, r, "%s:%u: out of memory", ini_name(ini), lineno);
                if (r < 0)
                        return r;
                pos += len + (nl ? 1 : 0);
        }
        return 0;
}

int ini_parse_file(Ini *ini, const char *path, char **ret_error) {
        _cleanup_(freep) char *buf = NULL;
        size_t len = 0;
        int r;

        assert_return(ini, -EINVAL);
        assert_return(path, -EINVAL);

        if (ret_error)
                *ret_error = NULL;

        r = io_read_file(path, INI_MAX_FILE_SIZE, &buf, &len);
        if (r == -EFBIG)
                return strdup_error(ret_error, r, "%s: file too large", path);
        if (r == -ENOMEM)
                return strdup_error(ret_error, r, "%s: out of memory", path);
        if (r < 0)
                return strdup_error(ret_error, r, "%s: %s", path, strerror(-r));
        return ini_parse_buffer(ini, path, buf, len, ret_error);
}

int ini_load_file(Ini **ret, const char *path, char **ret_error) {
        _cleanup_(ini_freep) Ini *ini = NULL;
        int r;

        assert_return(ret, -EINVAL);
        assert_return(path, -EINVAL);

        if (ret_error)
                *ret_error = NULL;
        r = ini_new(&ini, path);
        if (r < 0)
                return strdup_error(ret_error, r, "%s: out of memory", path);
        r = ini_parse_file(ini, path, ret_error);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ini);
        return 0;
}

static const IniKey *lookup_key(const Ini *ini, const IniSection *s, const char *lower_key) {
        const IniKey *k;

        if (s && s != ini->defaults && (k = section_find_key(s, lower_key)))
                return k;
        if ((k = section_find_key(ini->defaults, lower_key)))
                return k;
        return section_find_key(ini->builtin_defaults, lower_key);
}

int ini_section_keys(const Ini *ini, const char *section, const char ***ret_keys, size_t *ret_n) {
        const IniSection *s;

        assert_return(ini, -EINVAL);
        assert_return(ret_keys, -EINVAL);

        s = ini_find_section(ini, section);
        if (!s)
                return -ENOENT;

        const IniSection *layers[3] = { s, ini->defaults, ini->builtin_defaults };
        size_t max = s->n_keys + ini->defaults->n_keys + ini->builtin_defaults->n_keys;
        const char **keys = calloc(max + 1, sizeof(char *));
        size_t n = 0;
        if (!keys)
                return -ENOMEM;

        for (size_t l = 0; l < ELEMENTSOF(layers); l++) {
                if (l > 0 && layers[l] == s)
                        continue;
                for (size_t i = 0; i < layers[l]->n_keys; i++) {
                        const char *k = layers[l]->keys[i].key;
                        bool seen = false;
                        for (size_t j = 0; j < n && !seen; j++)
                                seen = streq(keys[j], k);
                        if (!seen)
                                keys[n++] = k;
                }
        }
        keys[n] = NULL;
        *ret_keys = keys;
        if (ret_n)
                *ret_n = n;
        return 0;
}

const char *ini_get_raw(const Ini *ini, const char *section, const char *key) {
        const IniSection *s = ini_find_section(ini, section);
        if (!s || !key)
                return NULL;

        _cleanup_(freep) char *lower = strdup(key);
        if (!lower)
                return NULL;
        ascii_lower(lower);
        const IniKey *k = lookup_key(ini, s, lower);
        return k ? k->value : NULL;
}

typedef struct Interp {
        const Ini *ini;
        const IniSection *section;
        const char *top_key;            /* the key asked for, for messages */
        unsigned top_line;
        unsigned references;
        char **ret_error;
} Interp;

/* Errors are reported at the line of the key holding the faulty text when it comes from the file,
 * else at the requested key's line. */
static int interp_error(Interp *in, unsigned line, const char *format, ...) _printf_(3, 4);
static int interp_error(Interp *in, unsigned line, const char *format, ...) {
        if (!in->ret_error)
                return -EINVAL;

        _cleanup_(freep) char *what = NULL;
        va_list ap;
        va_start(ap, format);
        what = strdup_vprintf(format, ap);
        va_end(ap);

        if (line == 0)
                line = in->top_line;
        if (line > 0)
                return strdup_error(in->ret_error, -EINVAL, "%s:%u: [%s] %s: %s", ini_name(in->ini), line,
                                 in->section->name, in->top_key, what ?: "interpolation error");
        return strdup_error(in->ret_error, -EINVAL, "%s: [%s] %s: %s", ini_name(in->ini),
                         in->section->name, in->top_key, what ?: "interpolation error");
}

/* 'line' is where 'text' came from (0: built-in). 'depth' starts at 1, as in Python. */
static int interpolate(Interp *in, const char *text, unsigned line, unsigned depth, StrBuf *out) {
        const char *p = text;
        int r;

        if (depth > INI_MAX_INTERPOLATION_DEPTH)
                return interp_error(in, line, "interpolation nested deeper than %d levels",
                                    INI_MAX_INTERPOLATION_DEPTH);

        for (;;) {
                const char *pct = strchr(p, '%');
                if (!pct)
                        return strbuf_puts(out, p);
                r = strbuf_append(out, p, (size_t) (pct - p));
                if (r < 0)
                        return r;

                if (pct[1] == '%') {
                        r = strbuf_putc(out, '%');
                        if (r < 0)
                                return r;
                        p = pct + 2;
                        continue;
                }
                if (pct[1] != '(')
                        return interp_error(in, line, "'%%' must be followed by '%%' or '(', found: %s", pct);

                const char *close = strchr(pct + 2, ')');
                if (!close || close == pct + 2 || close[1] != 's')
                        return interp_error(in, line, "bad interpolation variable reference: %s", pct);

                if (++in->references > INI_MAX_REFERENCES)
                        return interp_error(in, line, "too many interpolation references");

                _cleanup_(freep) char *name = strndup(pct + 2, (size_t) (close - pct - 2));
                if (!name)
                        return -ENOMEM;
                ascii_lower(name);

                const char *value;
                unsigned vline = 0;
                if (streq(name, "__name__"))
                        value = in->section->name;
                else {
                        const IniKey *k = lookup_key(in->ini, in->section, name);
                        if (!k)
                                k = section_find_key(in->ini->variables, name);
                        if (!k)
                                return interp_error(in, line, "unknown interpolation name '%s'", name);
                        value = k->value;
                        vline = k->line;
                }

                if (strchr(value, '%'))
                        r = interpolate(in, value, vline, depth + 1, out);
                else
                        r = strbuf_puts(out, value);
                if (r < 0)
                        return r;
                p = close + 2;
        }
}

int ini_get(const Ini *ini, const char *section, const char *key, char **ret_value, char **ret_error) {
        const IniSection *s;
        int r;

        assert_return(ini, -EINVAL);
        assert_return(key, -EINVAL);
        assert_return(ret_value, -EINVAL);

        if (ret_error)
                *ret_error = NULL;

        s = ini_find_section(ini, section);
        if (!s)
                return strdup_error(ret_error, -ENOENT, "%s: no section [%s]", ini_name(ini), section ?: "");

        _cleanup_(freep) char *lower = strdup(key);
        if (!lower)
                return -ENOMEM;
        ascii_lower(lower);

        const IniKey *k = lookup_key(ini, s, lower);
        if (!k)
                return strdup_error(ret_error, -ENOENT, "%s: no key '%s' in section [%s]",
                                 ini_name(ini), lower, s->name);

        Interp in = {
                .ini = ini,
                .section = s,
                .top_key = lower,
                .top_line = k->line,
                .ret_error = ret_error,
        };
        StrBuf out = { .max = INI_MAX_VALUE_SIZE };
        r = interpolate(&in, k->value, k->line, 1, &out);
        if (r == -E2BIG)
                r = interp_error(&in, k->line, "interpolated value longer than %u bytes", INI_MAX_VALUE_SIZE);
        else if (r == -ENOMEM)
                r = strdup_error(ret_error, r, "%s: out of memory", ini_name(ini));
        if (r < 0) {
                strbuf_done(&out);
                return r;
        }
        return strbuf_take(&out, ret_value, NULL);
}

int ini_parse_boolean(const char *s) {
        static const char *const yes[] = { "1", "yes", "true", "on" };
        static const char *const no[] = { "0", "no", "false", "off" };

        assert_return(s, -EINVAL);
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

int ini_get_boolean(const Ini *ini, const char *section, const char *key, bool *ret, char **ret_error) {
        _cleanup_(freep) char *v = NULL;
        int r;

        assert_return(ret, -EINVAL);

        r = ini_get(ini, section, key, &v, ret_error);
        if (r < 0)
                return r;
        r = ini_parse_boolean(v);
        if (r < 0) {
                const IniSection *s = ini_find_section(ini, section);
                _cleanup_(freep) char *lower = strdup(key);
                if (!lower)
                        return -ENOMEM;
                ascii_lower(lower);
                const IniKey *k = lookup_key(ini, s, lower);
                if (k && k->line > 0)
                        return strdup_error(ret_error, -EINVAL, "%s:%u: [%s] %s: not a boolean: '%s'",
                                         ini_name(ini), k->line, s->name, lower, v);
                return strdup_error(ret_error, -EINVAL, "%s: [%s] %s: not a boolean: '%s'",
                                 ini_name(ini), s->name, lower, v);
        }
        *ret = r;
        return 0;
}
