/* Unit tests for the INI reader: every rule of programs-and-flags.md §13.2, the built-in layers
 * kegbot_master uses (§12.1), error messages with file and line, and the safety limits. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ini.h"
#include "test-util.h"

/* Parses 'text' as "t.ini"; on failure returns NULL and stores the message in *err (if given). */
static Ini *parse(const char *text, char **err) {
        Ini *ini = NULL;
        char *e = NULL;
        if (ini_new(&ini, NULL) < 0)
                return NULL;
        int r = ini_parse_buffer(ini, "t.ini", text, strlen(text), &e);
        if (r < 0) {
                if (err)
                        *err = e;
                else {
                        fprintf(stderr, "unexpected parse error: %s\n", e ?: "?");
                        free(e);
                }
                return ini_free(ini);
        }
        check(e == NULL);
        return ini;
}

/* Interpolated value, or NULL (the error, if any, goes to *err). */
static char *get(const Ini *ini, const char *section, const char *key, char **err) {
        char *v = NULL, *e = NULL;
        int r = ini_get(ini, section, key, &v, &e);
        if (r < 0) {
                check(v == NULL);
                check(e != NULL);
                if (err)
                        *err = e;
                else
                        free(e);
                return NULL;
        }
        check(e == NULL);
        return v;
}

static void check_get(const Ini *ini, const char *section, const char *key, const char *expected, int line) {
        char *err = NULL;
        char *v = get(ini, section, key, &err);
        if (!v || strcmp(v, expected) != 0) {
                fprintf(stderr, "%s:%d: [%s] %s: expected '%s', got '%s' (%s)\n", __FILE__, line, section, key,
                        expected, v ?: "(null)", err ?: "");
                failures++;
        }
        free(v);
        free(err);
}
#define CHECK_GET(ini, s, k, e) check_get((ini), (s), (k), (e), __LINE__)

static void check_parse_error(const char *text, const char *expected, int line) {
        char *err = NULL;
        Ini *ini = parse(text, &err);
        if (ini || !err || strcmp(err, expected) != 0) {
                fprintf(stderr, "%s:%d: expected parse error '%s', got '%s'\n", __FILE__, line, expected,
                        err ?: "(success)");
                failures++;
        }
        ini_free(ini);
        free(err);
}
#define CHECK_PARSE_ERROR(t, e) check_parse_error((t), (e), __LINE__)

static void check_get_error(const Ini *ini, const char *section, const char *key, int expected_r,
                            const char *expected, int line) {
        char *v = NULL, *err = NULL;
        int r = ini_get(ini, section, key, &v, &err);
        if (r != expected_r || v || !err || strcmp(err, expected) != 0) {
                fprintf(stderr, "%s:%d: [%s] %s: expected error %d '%s', got %d '%s' value '%s'\n", __FILE__, line,
                        section, key, expected_r, expected, r, err ?: "(none)", v ?: "(null)");
                failures++;
        }
        free(v);
        free(err);
}
#define CHECK_GET_ERROR(ini, s, k, r, e) check_get_error((ini), (s), (k), (r), (e), __LINE__)

static void test_sections_and_keys(void) {
        Ini *ini = parse("[  first one  ]\n"
                         "a = 1\n"
                         "B: two\n"
                         "MiXed Key   =   spaced value  \n"
                         "[second]\n"
                         "x=y=z\n"
                         "url: http://example.com:80/\n"
                         "empty =\n"
                         "colon:\n"
                         "[third]\n", NULL);
        check(ini);
        if (!ini)
                return;
        check(ini->n_sections == 3);
        check_streq(ini->sections[0]->name, "first one");
        check_streq(ini->sections[1]->name, "second");
        check_streq(ini->sections[2]->name, "third");
        check(ini->sections[0]->line == 1);
        check(ini->sections[2]->n_keys == 0);
        check(ini_has_section(ini, "first one"));
        check(!ini_has_section(ini, "First One"));      /* section names keep their case */

        /* Keys are trimmed and lower-cased, in file order; lookups are case-insensitive. */
        const IniSection *s = ini->sections[0];
        check(s->n_keys == 3);
        check_streq(s->keys[0].key, "a");
        check_streq(s->keys[1].key, "b");
        check_streq(s->keys[2].key, "mixed key");
        check(s->keys[2].line == 4);
        CHECK_GET(ini, "first one", "A", "1");
        CHECK_GET(ini, "first one", "b", "two");
        CHECK_GET(ini, "first one", "Mixed KEY", "spaced value");

        /* Split at the first '=' or ':'. */
        CHECK_GET(ini, "second", "x", "y=z");
        CHECK_GET(ini, "second", "url", "http://example.com:80/");
        CHECK_GET(ini, "second", "empty", "");
        CHECK_GET(ini, "second", "colon", "");
        ini_free(ini);

        ini = parse("[s]\nk:v=w\nj=v:w\n", NULL);
        check(ini);
        CHECK_GET(ini, "s", "k", "v=w");
        CHECK_GET(ini, "s", "j", "v:w");
        ini_free(ini);
}

static void test_comments(void) {
        Ini *ini = parse("# comment\n"
                         "; another\n"
                         "[s]\n"
                         "   # indented comment is still a comment\n"
                         "\t; so is this\n"
                         "a = value ; inline comment\n"
                         "b = value;not a comment\n"
                         "c = value # hash is literal\n"
                         "d = x\t;tab-preceded comment\n"
                         "e = ; only a comment\n"
                         "f = a;b ;c\n"
                         "g = #x\n", NULL);
        check(ini);
        if (!ini)
                return;
        CHECK_GET(ini, "s", "a", "value");
        CHECK_GET(ini, "s", "b", "value;not a comment");
        CHECK_GET(ini, "s", "c", "value # hash is literal");
        CHECK_GET(ini, "s", "d", "x");
        CHECK_GET(ini, "s", "e", "");
        CHECK_GET(ini, "s", "f", "a;b");
        CHECK_GET(ini, "s", "g", "#x");
        check(ini->sections[0]->n_keys == 7);
        ini_free(ini);
}

static void test_continuation(void) {
        Ini *ini = parse("[s]\n"
                         "a = first\n"
                         "   second\n"
                         "\tthird ; not stripped\n"
                         "\n"
                         "  after blank\n"
                         "   # a comment, not a continuation\n"
                         "b=1\n"
                         "\r\n"
                         "c = crlf\r\n"
                         "  more\r\n", NULL);
        check(ini);
        if (!ini)
                return;
        CHECK_GET(ini, "s", "a", "first\nsecond\nthird ; not stripped\nafter blank");
        CHECK_GET(ini, "s", "b", "1");
        CHECK_GET(ini, "s", "c", "crlf\nmore");
        ini_free(ini);

        /* Continuation of an empty value. */
        ini = parse("[s]\nk =\n  v\n", NULL);
        check(ini);
        CHECK_GET(ini, "s", "k", "\nv");
        ini_free(ini);

        CHECK_PARSE_ERROR("[s]\n  orphan\n", "t.ini:2: continuation line without a preceding key");
        CHECK_PARSE_ERROR("  orphan\n", "t.ini:1: continuation line without a preceding key");
        CHECK_PARSE_ERROR("[s]\na=1\n[t]\n  x\n", "t.ini:4: continuation line without a preceding key");
}

static void test_repeats(void) {
        Ini *ini = parse("[a]\n"
                         "x = 1\n"
                         "y = 2\n"
                         "[b]\n"
                         "z = 3\n"
                         "[a]\n"
                         "X = 10\n"
                         "w = 4\n", NULL);
        check(ini);
        if (!ini)
                return;
        check(ini->n_sections == 2);
        check_streq(ini->sections[0]->name, "a");
        check(ini->sections[0]->n_keys == 3);
        check_streq(ini->sections[0]->keys[0].key, "x");    /* the repeated key keeps its place */
        check(ini->sections[0]->keys[0].line == 7);         /* ... and reports its latest line */
        check_streq(ini->sections[0]->keys[2].key, "w");
        CHECK_GET(ini, "a", "x", "10");
        CHECK_GET(ini, "a", "w", "4");
        CHECK_GET(ini, "b", "z", "3");
        ini_free(ini);
}

static void test_default_section(void) {
        Ini *ini = parse("[DEFAULT]\n"
                         "shared = from default\n"
                         "over = default\n"
                         "[s]\n"
                         "over = own\n"
                         "[t]\n"
                         "[default]\n"
                         "lower = is an ordinary section\n", NULL);
        check(ini);
        if (!ini)
                return;
        check(ini->n_sections == 3);            /* [DEFAULT] is not listed; [default] is */
        check_streq(ini->sections[2]->name, "default");
        CHECK_GET(ini, "s", "shared", "from default");
        CHECK_GET(ini, "t", "shared", "from default");
        CHECK_GET(ini, "s", "over", "own");
        CHECK_GET(ini, "t", "over", "default");
        CHECK_GET_ERROR(ini, "t", "lower", -ENOENT, "t.ini: no key 'lower' in section [t]");
        CHECK_GET_ERROR(ini, "nope", "x", -ENOENT, "t.ini: no section [nope]");
        check_streq(ini_get_raw(ini, "t", "SHARED"), "from default");
        check(ini_get_raw(ini, "t", "lower") == NULL);
        check(ini_get_raw(ini, "nope", "shared") == NULL);

        const char **keys = NULL;
        size_t n = 0;
        check(ini_section_keys(ini, "s", &keys, &n) == 0);
        check(n == 2);
        if (keys && n == 2) {
                check_streq(keys[0], "over");
                check_streq(keys[1], "shared");
                check(keys[2] == NULL);
        }
        free(keys);
        check(ini_section_keys(ini, "nope", &keys, &n) == -ENOENT);
        ini_free(ini);
}

static void test_interpolation(void) {
        Ini *ini = parse("[DEFAULT]\n"
                         "dir = /var/%(sub)s\n"
                         "sub = default-sub\n"
                         "file = %(dir)s/%(__name__)s.log\n"
                         "[app]\n"
                         "sub = app-sub\n"
                         "percent = 100%% sure, %%(not)s\n"
                         "Upper = %(SUB)s\n"
                         "name = %(__name__)s\n"
                         "multi = %(sub)s%(sub)s-%(sub)s\n"
                         "[other]\n"
                         "plain = no percent here\n", NULL);
        check(ini);
        if (!ini)
                return;
        /* Section first, then [DEFAULT]; [DEFAULT] values interpolate in the asking section. */
        CHECK_GET(ini, "app", "file", "/var/app-sub/app.log");
        CHECK_GET(ini, "other", "file", "/var/default-sub/other.log");
        CHECK_GET(ini, "app", "percent", "100% sure, %(not)s");
        CHECK_GET(ini, "app", "upper", "app-sub");
        CHECK_GET(ini, "app", "name", "app");
        CHECK_GET(ini, "app", "multi", "app-subapp-sub-app-sub");
        CHECK_GET(ini, "other", "plain", "no percent here");
        ini_free(ini);
}

static void test_interpolation_errors(void) {
        Ini *ini = parse("[s]\n"
                         "lone = 50%\n"
                         "other = %d\n"
                         "unknown = %(nope)s\n"
                         "unclosed = %(abc\n"
                         "nos = %(abc)d\n"
                         "emptyname = %()s\n"
                         "indirect = %(lone)s\n"
                         "selfref = %(selfref)s\n"
                         "ok = fine\n", NULL);
        check(ini);
        if (!ini)
                return;
        CHECK_GET_ERROR(ini, "s", "lone", -EINVAL, "t.ini:2: [s] lone: '%' must be followed by '%' or '(', found: %");
        CHECK_GET_ERROR(ini, "s", "other", -EINVAL, "t.ini:3: [s] other: '%' must be followed by '%' or '(', found: %d");
        CHECK_GET_ERROR(ini, "s", "unknown", -EINVAL, "t.ini:4: [s] unknown: unknown interpolation name 'nope'");
        CHECK_GET_ERROR(ini, "s", "unclosed", -EINVAL, "t.ini:5: [s] unclosed: bad interpolation variable reference: %(abc");
        CHECK_GET_ERROR(ini, "s", "nos", -EINVAL, "t.ini:6: [s] nos: bad interpolation variable reference: %(abc)d");
        CHECK_GET_ERROR(ini, "s", "emptyname", -EINVAL, "t.ini:7: [s] emptyname: bad interpolation variable reference: %()s");
        /* The faulty text is in 'lone' (line 2), although 'indirect' (line 8) was asked for. */
        CHECK_GET_ERROR(ini, "s", "indirect", -EINVAL, "t.ini:2: [s] indirect: '%' must be followed by '%' or '(', found: %");
        CHECK_GET_ERROR(ini, "s", "selfref", -EINVAL, "t.ini:9: [s] selfref: interpolation nested deeper than 10 levels");
        CHECK_GET_ERROR(ini, "s", "missing", -ENOENT, "t.ini: no key 'missing' in section [s]");
        CHECK_GET(ini, "s", "ok", "fine");
        ini_free(ini);
}

/* A chain k0 -> k1 -> ... -> k<n> = "end": n references deep. */
static Ini *chain(unsigned n) {
        char text[4096];
        size_t l = (size_t) snprintf(text, sizeof text, "[s]\n");
        for (unsigned i = 0; i < n; i++)
                l += (size_t) snprintf(text + l, sizeof text - l, "k%u = <%%(k%u)s>\n", i, i + 1);
        snprintf(text + l, sizeof text - l, "k%u = end\n", n);
        return parse(text, NULL);
}

static void test_depth(void) {
        /* Ten nested references resolve (Python's MAX_INTERPOLATION_DEPTH = 10) ... */
        Ini *ini = chain(10);
        check(ini);
        CHECK_GET(ini, "s", "k0", "<<<<<<<<<<end>>>>>>>>>>");
        CHECK_GET(ini, "s", "k1", "<<<<<<<<<end>>>>>>>>>");
        ini_free(ini);

        /* ... eleven do not; the error names the line of the key whose expansion was one too many. */
        ini = chain(11);
        check(ini);
        CHECK_GET_ERROR(ini, "s", "k0", -EINVAL, "t.ini:12: [s] k0: interpolation nested deeper than 10 levels");
        CHECK_GET(ini, "s", "k1", "<<<<<<<<<<end>>>>>>>>>>");
        ini_free(ini);

        /* '%%' in a referenced value costs a level too (Python recurses on any '%'). */
        ini = parse("[s]\na = %(b)s\nb = 100%%\n", NULL);
        check(ini);
        CHECK_GET(ini, "s", "a", "100%");
        ini_free(ini);
}

static void test_limits(void) {
        /* Exponential expansion is refused instead of eating memory. */
        char text[4096];
        size_t l = (size_t) snprintf(text, sizeof text, "[s]\n");
        for (unsigned i = 0; i < 9; i++)
                l += (size_t) snprintf(text + l, sizeof text - l,
                                       "k%u = %%(k%u)s%%(k%u)s%%(k%u)s%%(k%u)s%%(k%u)s%%(k%u)s%%(k%u)s%%(k%u)s\n",
                                       i, i + 1, i + 1, i + 1, i + 1, i + 1, i + 1, i + 1, i + 1);
        snprintf(text + l, sizeof text - l, "k9 = %%%%xxxxxxxxxxxxxxxxxxxx\n");
        Ini *ini = parse(text, NULL);
        check(ini);
        if (!ini)
                return;
        char *err = NULL;
        char *v = get(ini, "s", "k0", &err);
        check(v == NULL);
        check(err && strstr(err, "too many interpolation references"));
        free(err);
        err = NULL;
        /* Two levels: 64 references, fine. */
        v = get(ini, "s", "k7", &err);
        check(v && strlen(v) == 64 * 21);
        free(v);
        free(err);
        ini_free(ini);
}

static void test_builtins(void) {
        /* kegbot_master's layering (§12.1): variables, built-in [DEFAULT], then the file. */
        Ini *ini = NULL;
        check(ini_new(&ini, "master.cfg") == 0);
        if (!ini)
                return;
        check(ini_set_variable(ini, "_FLAG_pidfile_dir", "/run/kegbot") == 0);
        check(ini_set_variable(ini, "_flag_logfile_dir", "/var/log/kegbot") == 0);
        check(ini_set_builtin_default(ini, "_pidfile_dir", "%(_flag_pidfile_dir)s") == 0);
        check(ini_set_builtin_default(ini, "_logfile_dir", "%(_flag_logfile_dir)s") == 0);
        check(ini_set_builtin_default(ini, "_enabled", "False") == 0);
        check(ini_set_builtin_default(ini, "pidfile", "%(_pidfile_dir)s/%(__name__)s.pid") == 0);
        check(ini_set_builtin_default(ini, "logfile", "%(_logfile_dir)s/%(__name__)s.log") == 0);

        const char *text = "[DEFAULT]\n"
                           "_logfile_dir = /tmp/logs\n"
                           "[app]\n"
                           "_enabled = yes\n"
                           "[other]\n"
                           "_enabled = maybe\n"
                           "pidfile = %(_flag_pidfile_dir)s/custom.pid\n";
        char *err = NULL;
        check(ini_parse_buffer(ini, NULL, text, strlen(text), &err) == 0);
        check(err == NULL);
        free(err);
        CHECK_GET(ini, "app", "pidfile", "/run/kegbot/app.pid");
        CHECK_GET(ini, "app", "logfile", "/tmp/logs/app.log");
        CHECK_GET(ini, "other", "pidfile", "/run/kegbot/custom.pid");
        /* Variables are for interpolation only. */
        CHECK_GET_ERROR(ini, "app", "_flag_pidfile_dir", -ENOENT, "master.cfg: no key '_flag_pidfile_dir' in section [app]");
        /* A later built-in replaces the earlier one. */
        check(ini_set_variable(ini, "_flag_pidfile_dir", "/elsewhere") == 0);
        CHECK_GET(ini, "app", "pidfile", "/elsewhere/app.pid");

        bool b = false;
        err = NULL;
        check(ini_get_boolean(ini, "app", "_enabled", &b, &err) == 0 && b);
        check(err == NULL);
        check(ini_get_boolean(ini, "other", "_enabled", &b, &err) == -EINVAL);
        check_streq(err, "master.cfg:6: [other] _enabled: not a boolean: 'maybe'");
        free(err);
        err = NULL;

        /* The file's keys precede [DEFAULT]'s, which precede the built-ins. */
        const char **keys = NULL;
        size_t n = 0;
        check(ini_section_keys(ini, "app", &keys, &n) == 0);
        check(n == 5);
        if (keys && n == 5) {
                check_streq(keys[0], "_enabled");
                check_streq(keys[1], "_logfile_dir");
                check_streq(keys[2], "_pidfile_dir");
                check_streq(keys[3], "pidfile");
                check_streq(keys[4], "logfile");
        }
        free(keys);

        /* A built-in default that fails to interpolate has no line of its own: the asked key's line
         * is used if it is in the file, else the file name alone. */
        check(ini_set_builtin_default(ini, "broken", "%(nothing)s") == 0);
        CHECK_GET_ERROR(ini, "app", "broken", -EINVAL, "master.cfg: [app] broken: unknown interpolation name 'nothing'");
        ini_free(ini);
}

static void test_booleans(void) {
        static const char *const t[] = { "1", "yes", "true", "on", "YES", "True", "On", "tRuE" };
        static const char *const f[] = { "0", "no", "false", "off", "NO", "False", "OFF" };
        static const char *const bad[] = { "", "2", "y", "n", "t", "f", "enabled", " true", "true ", "10" };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
                check(ini_parse_boolean(t[i]) == 1);
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
                check(ini_parse_boolean(f[i]) == 0);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                check(ini_parse_boolean(bad[i]) == -EINVAL);
        check(ini_parse_boolean(NULL) == -EINVAL);

        Ini *ini = parse("[s]\na = %(v)s\nv = On\n", NULL);
        check(ini);
        bool b = false;
        check(ini && ini_get_boolean(ini, "s", "a", &b, NULL) == 0 && b);
        ini_free(ini);
}

static void test_syntax_errors(void) {
        CHECK_PARSE_ERROR("key = value\n", "t.ini:1: key outside of any [section]");
        CHECK_PARSE_ERROR("# c\n\nkey = value\n[s]\n", "t.ini:3: key outside of any [section]");
        CHECK_PARSE_ERROR("[s]\nnovalue\n", "t.ini:2: expected 'key = value' or '[section]'");
        CHECK_PARSE_ERROR("[s]\n= value\n", "t.ini:2: missing key name before '='");
        CHECK_PARSE_ERROR("[s]\n:value\n", "t.ini:2: missing key name before ':'");
        CHECK_PARSE_ERROR("[s\n", "t.ini:1: section header without ']'");
        CHECK_PARSE_ERROR("[]\n", "t.ini:1: empty section name");
        CHECK_PARSE_ERROR("[ \t ]\n", "t.ini:1: empty section name");

        /* Embedded NUL: parse with an explicit size. */
        Ini *ini = NULL;
        char *err = NULL;
        check(ini_new(&ini, NULL) == 0);
        static const char nul[] = "[s]\nk = a\0b\n";
        check(ini_parse_buffer(ini, "n.ini", nul, sizeof nul - 1, &err) == -EINVAL);
        check_streq(err, "n.ini:2: NUL byte in line");
        free(err);
        ini_free(ini);

        /* A byte order mark: named, not "key outside of any [section]". */
        CHECK_PARSE_ERROR("\xef\xbb\xbf[s]\nk = v\n",
                          "t.ini:1: the file starts with a UTF-8 byte order mark (U+FEFF); save it without one");

        /* Repeated sections continue the first (SafeConfigParser), unless the file wants them unique:
         * then an error with both lines. */
        ini = parse("[s]\na = 1\n[t]\n[s]\nb = 2\n", NULL);
        check(ini);
        CHECK_GET(ini, "s", "a", "1");
        CHECK_GET(ini, "s", "b", "2");
        ini_free(ini);
        check(ini_new(&ini, NULL) == 0);
        ini_set_unique_sections(ini, true);
        static const char twice[] = "[s]\na = 1\n[t]\n\n[s]\nb = 2\n";
        check(ini_parse_buffer(ini, "u.ini", twice, sizeof twice - 1, &err) == -EINVAL);
        check_streq(err, "u.ini:5: section [s] repeats the one at line 1");
        free(err);
        ini_free(ini);

        /* Text that is not UTF-8 (a Latin-1 username, an overlong form, a cut sequence): refused
         * with the file and the line, wherever on the line it is. */
        CHECK_PARSE_ERROR("[core.rfid:0415ab23cd]\nusername = caf\xe9\n", "t.ini:2: not valid UTF-8");
        CHECK_PARSE_ERROR("[s\xc0\xae]\n", "t.ini:1: not valid UTF-8");
        CHECK_PARSE_ERROR("[s]\nk = v\n  continued \xe2\x82\n", "t.ini:3: not valid UTF-8");
        CHECK_PARSE_ERROR("; comment \xff\n[s]\n", "t.ini:1: not valid UTF-8");
        ini = parse("[s]\nk = caf\xc3\xa9 \xf0\x9f\x8d\xba\n", NULL);
        check(ini);
        CHECK_GET(ini, "s", "k", "caf\xc3\xa9 \xf0\x9f\x8d\xba");
        ini_free(ini);

        /* Quotes are not special; trailing text after ']' is ignored, as in Python. */
        ini = parse("[s] trailing\nq = 'quoted'\nd = \"\"\n", NULL);
        check(ini);
        CHECK_GET(ini, "s", "q", "'quoted'");
        CHECK_GET(ini, "s", "d", "\"\"");
        ini_free(ini);

        /* Empty input and no trailing newline. */
        ini = parse("", NULL);
        check(ini && ini->n_sections == 0);
        ini_free(ini);
        ini = parse("[s]\nlast = no newline", NULL);
        check(ini);
        CHECK_GET(ini, "s", "last", "no newline");
        ini_free(ini);
}

static void test_files(void) {
        char path[] = "/tmp/test-ini-XXXXXX";
        int fd = mkstemp(path);
        check(fd >= 0);
        if (fd < 0)
                return;
        const char *text = "[a]\nx = 1\n[b]\nbad line\n";
        check(write(fd, text, strlen(text)) == (ssize_t) strlen(text));
        close(fd);

        Ini *ini = NULL;
        char *err = NULL;
        char expected[256];
        check(ini_load_file(&ini, path, &err) == -EINVAL);
        check(ini == NULL);
        snprintf(expected, sizeof expected, "%s:4: expected 'key = value' or '[section]'", path);
        check_streq(err, expected);
        free(err);
        err = NULL;

        fd = open(path, O_WRONLY | O_TRUNC);
        check(fd >= 0);
        text = "[a]\nx = %(y)s\n";
        check(write(fd, text, strlen(text)) == (ssize_t) strlen(text));
        close(fd);
        check(ini_load_file(&ini, path, &err) == 0);
        check(err == NULL);
        char *v = NULL;
        check(ini && ini_get(ini, "a", "x", &v, &err) == -EINVAL);
        snprintf(expected, sizeof expected, "%s:2: [a] x: unknown interpolation name 'y'", path);
        check_streq(err, expected);
        free(err);
        err = NULL;
        ini_free(ini);
        ini = NULL;

        unlink(path);
        check(ini_load_file(&ini, path, &err) == -ENOENT);
        snprintf(expected, sizeof expected, "%s: No such file or directory", path);
        check_streq(err, expected);
        free(err);

        /* The example config of run-daemons.rst parses as pycore read it. */
        err = NULL;
        check(ini_load_file(&ini, test_fixture("kegbot_master.cfg"), &err) == 0);
        check(err == NULL);
        check(ini && ini->n_sections == 7);
        if (ini && ini->n_sections == 7) {
                check_streq(ini->sections[0]->name, "kegbot_core");
                check_streq(ini->sections[4]->name, "second_kegboard");
                check_streq(ini->sections[6]->name, "kegbot_twitter");
        }
        CHECK_GET(ini, "kegbot_core", "api_url", "'http://example.com/api'");
        CHECK_GET(ini, "second_kegboard", "_program_name", "kegboard_daemon.py");
        ini_free(ini);
        free(err);
}

int main(void) {
        test_run(test_sections_and_keys);
        test_run(test_comments);
        test_run(test_continuation);
        test_run(test_repeats);
        test_run(test_default_section);
        test_run(test_interpolation);
        test_run(test_interpolation_errors);
        test_run(test_depth);
        test_run(test_limits);
        test_run(test_builtins);
        test_run(test_booleans);
        test_run(test_syntax_errors);
        test_run(test_files);
        return test_result();
}
