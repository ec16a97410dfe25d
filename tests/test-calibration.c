/* kegbot_core's calibration storage (calibration.md sections 4.1 and 4.3): the taps-file edit with the
 * spec's example and the cases of section 9 (2-7, 10), the atomic replacement of the file (symbolic
 * links, a new file, modes, another writer between the read and the rename, a file that keeps
 * changing, an edit that would not load), the registry's check of the edited text and its
 * calibration sources, and calibration.json. */

#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>

#include "calibration-overrides.h"
#include "calibration-units.h"
#include "flow.h"
#include "taps-edit.h"
#include "taps.h"
#include "util-io.h"
#include "test-util.h"

#define PROV "# calibration 2026-11-26T12:00:00Z: 500 mL over 2703 ticks, was 0.185 mL/tick"
#define PROV_SET "# calibration 2026-11-26T12:05:00Z: set, was 0.454545 mL/tick"

#define check_double(a, b) check(fabs((double) (a) - (double) (b)) < 1e-9)

static const char example_before[] =
        "# Taps of the basement kegerator\n"
        "[DEFAULT]\n"
        "pour_start_ml = 8\n"
        "\n"
        "[kegboard.flow0]\n"
        "name = Main Tap\n"
        "ml_per_tick = 0.185   ; SF800\n"
        "relay_name = kegboard.relay0\n"
        "\n"
        "[kegboard.flow1]\n"
        "name = Guest Tap\n"
        "ticks_per_ml = 2.2\n";

static const char example_after[] =
        "# Taps of the basement kegerator\n"
        "[DEFAULT]\n"
        "pour_start_ml = 8\n"
        "\n"
        "[kegboard.flow0]\n"
        "name = Main Tap\n"
        "# calibration 2026-11-26T12:00:00Z: 500 mL over 2703 ticks, was 0.185 mL/tick\n"
        "ml_per_tick = 0.18498   ; SF800\n"
        "relay_name = kegboard.relay0\n"
        "\n"
        "[kegboard.flow1]\n"
        "name = Guest Tap\n"
        "# calibration 2026-11-26T12:05:00Z: set, was 0.454545 mL/tick\n"
        "ticks_per_ml = 2.22222\n";

/* One edit; returns the new text (free it). */
static char *edit(const char *text, const char *meter, double mpt, const char *prov, double *ret_applied,
                  const char **ret_key) {
        char *out = NULL;
        size_t len = 0;

        check_int(taps_edit_calibration(text, strlen(text), meter, mpt, prov, &out, &len, ret_applied, ret_key), 0);
        check(out && strlen(out) == len);
        return out;
}

static void test_example(void) {
        _cleanup_(freep) char *one = NULL, *two = NULL;
        const char *key;
        double applied;

        one = edit(example_before, "kegboard.flow0", calibration_round6(500.0 / 2703), PROV, &applied, &key);
        check_streq(key, "ml_per_tick");
        check(applied == 0.18498);
        two = edit(one, "kegboard.flow1", 0.45, PROV_SET, &applied, &key);
        check_streq(key, "ticks_per_ml");
        check(applied == 1.0 / 2.22222);
        check_streq(two, example_after);
}

static void test_key_choice(void) {
        _cleanup_(freep) char *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        double applied;

        /* Case 2: ticks_per_ml in the section. */
        a = edit("[kegboard.flow0]\nticks_per_ml = 5.4\n", "kegboard.flow0", 0.18498, PROV, &applied, NULL);
        check_streq(a, "[kegboard.flow0]\n" PROV "\nticks_per_ml = 5.40599\n");
        check(applied == 1.0 / 5.40599);

        /* Case 3: inherited from [DEFAULT]: the section gets the same key, [DEFAULT] stays. */
        b = edit("[DEFAULT]\nticks_per_ml = 2.2\n\n[kegboard.flow0]\nname = Main\n\n[kegboard.flow1]\nname = Guest\n",
                 "kegboard.flow0", 0.18498, PROV, &applied, NULL);
        check_streq(b, "[DEFAULT]\nticks_per_ml = 2.2\n\n[kegboard.flow0]\nname = Main\n" PROV
                       "\nticks_per_ml = 5.40599\n\n[kegboard.flow1]\nname = Guest\n");

        /* Inherited ml_per_tick, and a section with no keys: right after the header. */
        c = edit("[DEFAULT]\nml_per_tick = 0.5\n[kegboard.flow0]\n[kegboard.flow1]\n", "kegboard.flow0", 0.25, PROV,
                 &applied, NULL);
        check_streq(c, "[DEFAULT]\nml_per_tick = 0.5\n[kegboard.flow0]\n" PROV "\nml_per_tick = 0.25\n[kegboard.flow1]\n");
        check(applied == 0.25);

        /* Keys are case-insensitive (the parser lower-cases them); the spelling is kept. */
        d = edit("[kegboard.flow0]\nML_Per_Tick=1\n", "kegboard.flow0", 0.5, PROV, &applied, NULL);
        check_streq(d, "[kegboard.flow0]\n" PROV "\nML_Per_Tick=0.5\n");
}

static void test_new_section(void) {
        _cleanup_(freep) char *a = NULL, *b = NULL, *c = NULL;

        /* Case 4: a first-sight tap is appended, after an empty line. */
        a = edit("[kegboard.flow0]\nml_per_tick = 0.185\n", "kegboard.flow3", 0.5, PROV, NULL, NULL);
        check_streq(a, "[kegboard.flow0]\nml_per_tick = 0.185\n\n[kegboard.flow3]\n" PROV "\nml_per_tick = 0.5\n");
        /* A file without a final newline gets one first. */
        b = edit("[kegboard.flow0]\nml_per_tick = 0.185", "kegboard.flow3", 0.5, PROV, NULL, NULL);
        check_streq(b, "[kegboard.flow0]\nml_per_tick = 0.185\n\n[kegboard.flow3]\n" PROV "\nml_per_tick = 0.5\n");
        /* Case 5: no file at all: that one section. */
        c = edit("", "kegboard.flow0", 0.5, PROV, NULL, NULL);
        check_streq(c, "[kegboard.flow0]\n" PROV "\nml_per_tick = 0.5\n");
}

static void test_crlf(void) {
        _cleanup_(freep) char *a = NULL, *b = NULL;

        /* Case 7: new lines are CRLF, old ones untouched (the LF-only last line too). */
        a = edit("[kegboard.flow0]\r\nname = Main\r\nml_per_tick = 0.185 ; c\r\nrelay_name = kegboard.relay0\n",
                 "kegboard.flow0", 0.18498, PROV, NULL, NULL);
        check_streq(a, "[kegboard.flow0]\r\nname = Main\r\n" PROV "\r\nml_per_tick = 0.18498 ; c\r\n"
                       "relay_name = kegboard.relay0\n");
        b = edit("[kegboard.flow0]\r\nname = Main\r\n", "kegboard.flow1", 0.5, PROV, NULL, NULL);
        check_streq(b, "[kegboard.flow0]\r\nname = Main\r\n\r\n[kegboard.flow1]\r\n" PROV "\r\nml_per_tick = 0.5\r\n");
}

static void test_syntax_cases(void) {
        _cleanup_(freep) char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *f = NULL;

        /* Case 10: a value continued over two lines: the continuation goes. */
        a = edit("[kegboard.flow0]\nml_per_tick = 0.1\n  85\nname = x\n", "kegboard.flow0", 0.18498, PROV, NULL, NULL);
        check_streq(a, "[kegboard.flow0]\n" PROV "\nml_per_tick = 0.18498\nname = x\n");
        /* ... also after a blank line and a comment, which stay. */
        b = edit("[kegboard.flow0]\nml_per_tick = 0.1\n\n# note\n  85\n", "kegboard.flow0", 0.2, PROV, NULL, NULL);
        check_streq(b, "[kegboard.flow0]\n" PROV "\nml_per_tick = 0.2\n\n# note\n");
        /* An inline comment after the value stays, with its spacing. */
        c = edit("[kegboard.flow0]\nml_per_tick =\t0.185\t; SF800 meter\n", "kegboard.flow0", 0.2, PROV, NULL, NULL);
        check_streq(c, "[kegboard.flow0]\n" PROV "\nml_per_tick =\t0.2\t; SF800 meter\n");
        /* A second [kegboard.flow0] holding the key: every key line is rewritten. */
        d = edit("[kegboard.flow0]\nml_per_tick = 0.1\n[kegboard.flow1]\nname = g\n[kegboard.flow0]\nml_per_tick = 0.3\n",
                 "kegboard.flow0", 0.2, PROV, NULL, NULL);
        check_streq(d, "[kegboard.flow0]\n" PROV "\nml_per_tick = 0.2\n[kegboard.flow1]\nname = g\n[kegboard.flow0]\n" PROV
                       "\nml_per_tick = 0.2\n");
        /* "key: value" syntax and a header with blanks around the name. */
        e = edit("[ kegboard.flow0 ]\nname: Main\nml_per_tick: 0.185\n", "kegboard.flow0", 0.2, PROV, NULL, NULL);
        check_streq(e, "[ kegboard.flow0 ]\nname: Main\n" PROV "\nml_per_tick: 0.2\n");
        /* New key after the last key line and its continuation lines. */
        f = edit("[kegboard.flow0]\nname = a\n  b\n\n[x.y]\n", "kegboard.flow0", 0.2, PROV, NULL, NULL);
        check_streq(f, "[kegboard.flow0]\nname = a\n  b\n" PROV "\nml_per_tick = 0.2\n\n[x.y]\n");
}

static void test_provenance(void) {
        _cleanup_(freep) char *a = NULL, *b = NULL;

        check(taps_edit_is_provenance(PROV, strlen(PROV)));
        check(taps_edit_is_provenance("# calibration 2026-11-26T", 25));
        check(!taps_edit_is_provenance("# calibration 2026-11-26 ", 25));
        check(!taps_edit_is_provenance("# calibration of the tap", 24));
        check(!taps_edit_is_provenance("#calibration 2026-11-26T", 24));

        /* A repeated calibration leaves one comment; other comments above stay. */
        a = edit("[kegboard.flow0]\n# SF800 meter\n" PROV "\nml_per_tick = 0.18498\n", "kegboard.flow0", 0.18499,
                 "# calibration 2026-11-27T08:00:00Z: 1000 mL over 5406 ticks, was 0.18498 mL/tick", NULL, NULL);
        check_streq(a, "[kegboard.flow0]\n# SF800 meter\n# calibration 2026-11-27T08:00:00Z: 1000 mL over 5406 "
                       "ticks, was 0.18498 mL/tick\nml_per_tick = 0.18499\n");
        b = edit(a, "kegboard.flow0", 0.185, PROV_SET, NULL, NULL);
        check_streq(b, "[kegboard.flow0]\n# SF800 meter\n" PROV_SET "\nml_per_tick = 0.185\n");
}

/* ---- the file ---- */

typedef struct Ctx {
        TapRegistry *registry;
        const char *path;
        int writes_left;                /* before_replace: the other writer's edits still to make */
        int calls;
} Ctx;

static int validate(const char *name, const char *text, size_t len, const char *meter, double *ret, char **ret_error,
                    void *userdata) {
        Ctx *c = userdata;
        return tap_registry_check_text(c->registry, name, text, len, meter, ret, ret_error);
}

/* Another writer, between the core's read and its rename. */
static void other_writer(const char *target, void *userdata) {
        Ctx *c = userdata;
        char line[64];
        int fd;

        c->calls++;
        if (c->writes_left <= 0)
                return;
        c->writes_left--;
        fd = open(target, O_WRONLY | O_APPEND | O_CLOEXEC);
        check(fd >= 0);
        snprintf(line, sizeof line, "[other.flow%d]\nname = added\n", c->calls);
        check_int(io_write_all(fd, line, strlen(line)), 0);
        close(fd);
}

static char *read_text(const char *path) {
        char *s = NULL;
        check_int(io_read_file(path, 0, &s, NULL), 0);
        return s;
}

static void write_text(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        check(fd >= 0);
        check_int(io_write_all(fd, text, strlen(text)), 0);
        close(fd);
}

static int store(Ctx *c, const char *path, const char *meter, double mpt, char **ret_target, double *ret_applied,
                 char **ret_reason) {
        return taps_file_store(&(TapsFileStore) {
                .path = path,
                .meter = meter,
                .ml_per_tick = mpt,
                .provenance = PROV,
                .validate = validate,
                .before_replace = other_writer,
                .userdata = c,
        }, ret_target, ret_applied, ret_reason);
}

/* A ".taps.ini.XXXXXX" left beside the file. */
static bool has_temporary(const char *dir) {
        _cleanup_(freep) char *cmd = NULL;

        if (asprintf(&cmd, "ls -A %s | grep -q '^\\.taps.ini\\.'", dir) < 0)
                return true;
        return system(cmd) == 0;
}

/* Frees *p and leaves NULL there. */
static void clear(char **p) {
        free(*p);
        *p = NULL;
}

static void test_store(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        _cleanup_(tap_registry_freep) TapRegistry *reg = NULL;
        char dir[] = "/tmp/test-calibration-XXXXXX";
        _cleanup_(freep) char *path = NULL, *link = NULL, *target = NULL, *reason = NULL, *text = NULL;
        FlowSettings settings;
        struct stat st;
        double applied = 0;
        Ctx c = {};

        flow_settings_init(&settings);
        check_int(flow_engine_new(&e, NULL, NULL, NULL), 0);
        check_int(tap_registry_new(&reg, e, &settings, NULL, NULL), 0);
        c.registry = reg;
        check(mkdtemp(dir) != NULL);
        check(asprintf(&path, "%s/taps.ini", dir) > 0);
        check(asprintf(&link, "%s/link.ini", dir) > 0);

        /* Case 5: no file: created, 0644, with that one section. */
        check_int(store(&c, path, "kegboard.flow0", 0.5, &target, &applied, &reason), 0);
        check_streq(target, path);
        check(applied == 0.5);
        text = read_text(path);
        check_streq(text, "[kegboard.flow0]\n" PROV "\nml_per_tick = 0.5\n");
        check_int(stat(path, &st), 0);
        check_int(st.st_mode & 07777, 0644);
        check(!has_temporary(dir));

        /* An existing file keeps its mode. */
        write_text(path, example_before);
        check_int(chmod(path, 0600), 0);
        clear(&target);
        check_int(store(&c, path, "kegboard.flow0", 0.18498, &target, &applied, &reason), 0);
        check_int(stat(path, &st), 0);
        check_int(st.st_mode & 07777, 0600);
        clear(&text);
        text = read_text(path);
        check(strstr(text, PROV "\nml_per_tick = 0.18498   ; SF800\n"));

        /* Case 6: through a symbolic link: its target is rewritten, the link stays a link. */
        check_int(symlink("taps.ini", link), 0);
        clear(&target);
        check_int(store(&c, link, "kegboard.flow1", 0.45, &target, &applied, &reason), 0);
        check_streq(target, path);
        check(applied == 1.0 / 2.22222);
        check_int(lstat(link, &st), 0);
        check(S_ISLNK(st.st_mode));
        clear(&text);
        text = read_text(path);
        check(strstr(text, "ticks_per_ml = 2.22222\n"));

        /* Case 8: another writer between the read and the rename: done again on its text, both kept. */
        c.writes_left = 1;
        c.calls = 0;
        clear(&target);
        check_int(store(&c, path, "kegboard.flow0", 0.19, &target, &applied, &reason), 0);
        check_int(c.calls, 2);
        clear(&text);
        text = read_text(path);
        check(strstr(text, "[other.flow1]\nname = added\n"));
        check(strstr(text, "\nml_per_tick = 0.19   ; SF800\n"));
        check(!has_temporary(dir));

        /* A file that keeps changing: given up after three attempts, nothing of ours written. */
        c.writes_left = 10;
        c.calls = 0;
        check_int(store(&c, path, "kegboard.flow0", 0.2, &target, &applied, &reason), -EAGAIN);
        check_streq(reason, "the file keeps changing");
        check_int(c.calls, TAPS_FILE_STORE_ATTEMPTS);
        clear(&text);
        text = read_text(path);
        check(!strstr(text, "ml_per_tick = 0.2 "));
        check(!has_temporary(dir));

        /* An edit that would not load is not written (a syntax error elsewhere in the file). */
        c.writes_left = 0;
        write_text(path, "[kegboard.flow0]\nml_per_tick = 0.185\nthis is not ini\n");
        clear(&reason);
        check(store(&c, path, "kegboard.flow0", 0.2, &target, &applied, &reason) < 0);
        check(reason && strstr(reason, "the edited file does not load"));
        clear(&text);
        text = read_text(path);
        check_streq(text, "[kegboard.flow0]\nml_per_tick = 0.185\nthis is not ini\n");
        check(!has_temporary(dir));

        /* A directory that does not exist. */
        clear(&reason);
        check(store(&c, "/nonexistent-dir/taps.ini", "kegboard.flow0", 0.2, &target, &applied, &reason) < 0);
        check(reason && strstr(reason, "No such file or directory"));

        (void) unlink(link);
        (void) unlink(path);
        check_int(rmdir(dir), 0);
}

/* ---- the registry's sources ---- */

static void test_sources(void) {
        _cleanup_(flow_engine_freep) FlowEngine *e = NULL;
        _cleanup_(tap_registry_freep) TapRegistry *reg = NULL;
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        _cleanup_(freep) char *error = NULL;
        FlowEngineConfig fc;
        FlowSettings settings;
        FlowTapInfo ti;
        double v;

        flow_settings_init(&settings);
        flow_engine_config_init(&fc);
        fc.create_unknown_taps = true;
        check_int(flow_engine_new(&e, &fc, NULL, NULL), 0);
        check_int(tap_registry_new(&reg, e, &settings, NULL, NULL), 0);

        const char *file = "[DEFAULT]\nname = x\n[a.f0]\nml_per_tick = 0.2\n[a.f1]\n";
        const char *good = "[a.f0]\nticks_per_ml = 4\n", *bad = "[a.f0]\nticks_per_ml = 4\nml_per_tick = 1\n";

        check_int(tap_table_load_buffer("taps.ini", file, strlen(file), 0.5, &settings, &t, &error), 0);
        check_int(tap_table_find(t, "a.f0")->source, TAP_CALIBRATION_TAPS_FILE);
        check_int(tap_table_find(t, "a.f1")->source, TAP_CALIBRATION_DEFAULT);
        check(tap_table_find(t, "a.f1")->ml_per_tick == 0.5);
        check_int(tap_registry_replace(reg, t, TAP_SOURCE_FILE), 2);
        check_int(tap_registry_calibration_source(reg, "a.f0"), TAP_CALIBRATION_TAPS_FILE);
        check_int(tap_registry_calibration_source(reg, "a.f1"), TAP_CALIBRATION_DEFAULT);
        check_streq(tap_calibration_source_to_string(TAP_CALIBRATION_LOCAL_OVERRIDE), "local-override");

        /* A calibration applied: its source until a table configures the tap again. */
        check_int(tap_registry_set_calibration(reg, "a.f0", 0.25, TAP_CALIBRATION_MEMORY), 0);
        check_int(tap_registry_calibration_source(reg, "a.f0"), TAP_CALIBRATION_MEMORY);
        check_int(flow_engine_get_tap(e, "a.f0", &ti), 0);
        check(ti.ml_per_tick == 0.25);
        check_int(tap_registry_replace(reg, t, TAP_SOURCE_FILE), 1);       /* a reload: the file's value back */
        check_int(tap_registry_calibration_source(reg, "a.f0"), TAP_CALIBRATION_TAPS_FILE);
        check_int(flow_engine_get_tap(e, "a.f0", &ti), 0);
        check(ti.ml_per_tick == 0.2);

        /* A first-sight tap saved in the file stops being auto-created; one kept in memory does not. */
        check_int(flow_engine_first_sight(e, "a.f2", &(FlowTime) {}), 1);
        check_int(tap_registry_set_calibration(reg, "a.f2", 0.3, TAP_CALIBRATION_MEMORY), 0);
        check_int(flow_engine_get_tap(e, "a.f2", &ti), 0);
        check(ti.auto_created);
        check_int(tap_registry_set_calibration(reg, "a.f2", 0.3, TAP_CALIBRATION_TAPS_FILE), 0);
        check_int(flow_engine_get_tap(e, "a.f2", &ti), 0);
        check(!ti.auto_created);
        check_int(tap_registry_set_calibration(reg, "no.tap", 0.3, TAP_CALIBRATION_MEMORY), -ENOENT);

        /* The check of an edited text. */
        check_int(tap_registry_check_text(reg, "t", good, strlen(good), "a.f0", &v, &error), 0);
        check(v == 0.25);
        check(tap_registry_check_text(reg, "t", bad, strlen(bad), "a.f0", &v, &error) < 0);
        check(error && strstr(error, "both ml_per_tick and ticks_per_ml"));
}

/* ---- calibration.json ---- */

static void test_overrides(void) {
        _cleanup_(calibration_overrides_freep) CalibrationOverrides *o = NULL;
        _cleanup_(tap_table_freep) TapTable *t = NULL;
        _cleanup_(freep) char *path = NULL, *text = NULL, *reason = NULL;
        char dir[] = "/tmp/test-calibration-XXXXXX";

        check(mkdtemp(dir) != NULL);
        check_int(calibration_overrides_new(&o, dir), 0);
        calibration_overrides_load(o);
        check_int(calibration_overrides_size(o), 0);
        check(asprintf(&path, "%s/calibration.json", dir) > 0);
        check_streq(calibration_overrides_path(o), path);

        check_int(calibration_overrides_set(o, "kegboard.flow0", 0.18498, 0.185, UINT64_C(1795694400) * USEC_PER_SEC,
                                            &reason), 0);
        check_int(calibration_overrides_set(o, "kegboard.flow9", 0.3, 0.4, UINT64_C(1795694400) * USEC_PER_SEC,
                                            &reason), 0);
        text = read_text(path);
        check_streq(text, "{\"version\":1,\"overrides\":{\"kegboard.flow0\":{\"ml_per_tick\":0.18498,"
                          "\"server_ml_per_tick\":0.185,\"time\":\"2026-11-26T12:00:00Z\"},\"kegboard.flow9\":"
                          "{\"ml_per_tick\":0.3,\"server_ml_per_tick\":0.4,\"time\":\"2026-11-26T12:00:00Z\"}}}\n");

        /* Read back by another instance (a restart). */
        o = calibration_overrides_free(o);
        check_int(calibration_overrides_new(&o, dir), 0);
        calibration_overrides_load(o);
        check_int(calibration_overrides_size(o), 2);

        /* A sync where the server still says 0.185: the override wins; flow9 is no tap: kept. */
        check_int(tap_table_new(&t), 0);
        check_int(tap_table_add(t, "kegboard.flow0", "Main", 1.0 / (1.0 / 0.185), "kegboard.relay0"), 0);
        check_int(tap_table_add(t, "kegboard.flow1", "Second", 0.5, ""), 0);
        check_int(calibration_overrides_apply(o, t), 1);
        check(tap_table_find(t, "kegboard.flow0")->ml_per_tick == 0.18498);
        check_int(tap_table_find(t, "kegboard.flow0")->source, TAP_CALIBRATION_LOCAL_OVERRIDE);
        check_int(tap_table_find(t, "kegboard.flow1")->source, TAP_CALIBRATION_SERVER);
        check_int(calibration_overrides_size(o), 2);

        /* Someone changed it on the server: dropped, and the file says so. */
        t = tap_table_free(t);
        check_int(tap_table_new(&t), 0);
        check_int(tap_table_add(t, "kegboard.flow0", "Main", 1.0 / 5.5, ""), 0);
        check_int(calibration_overrides_apply(o, t), 0);
        check(tap_table_find(t, "kegboard.flow0")->ml_per_tick == 1.0 / 5.5);
        check_int(calibration_overrides_size(o), 1);
        clear(&text);
        text = read_text(path);
        check(!strstr(text, "kegboard.flow0"));
        check(strstr(text, "kegboard.flow9"));

        /* An invalid file is no overrides (and a WARNING). */
        write_text(path, "{\"version\":1,\"overrides\":{\"a b\":{\"ml_per_tick\":1}}}");
        calibration_overrides_load(o);
        check_int(calibration_overrides_size(o), 0);
        write_text(path, "not json");
        calibration_overrides_load(o);
        check_int(calibration_overrides_size(o), 0);

        (void) unlink(path);
        check_int(rmdir(dir), 0);
}

int main(void) {
        test_run(test_example);
        test_run(test_key_choice);
        test_run(test_new_section);
        test_run(test_crlf);
        test_run(test_syntax_cases);
        test_run(test_provenance);
        test_run(test_store);
        test_run(test_sources);
        test_run(test_overrides);
        return test_result();
}
