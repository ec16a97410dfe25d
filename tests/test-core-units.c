/* Unit tests of kegbot_core's own modules (src/core): the drinks log (line format, drink_id
 * sequence, torn last line), the taps file and the tap registry, thermo
 * throttling and silence deadlines, the standalone tokens file, meters.json, the space reserve
 * and the uploader's poison rule (driven with synthetic time). */
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "backend.h"
#include "disk-reserve.h"
#include "drink-sink.h"
#include "drinks-log.h"
#include "flow.h"
#include "log.h"
#include "meters-state.h"
#include "quarantine.h"
#include "tokens.h"
#include "taps.h"
#include "thermo.h"
#include "test-util.h"

static char tmpdir[256];

static Drink *make_drink(uint64_t ticks, const char *user) {
        Drink fd = {
                .flow_id = 1795694350,
                .meter_name = (char *) "kegboard.flow0",
                .username = (char *) user,
                .ticks = ticks,
                .volume_known = true,
                .volume_ml = (double) ticks / 2.2,
                .start_realtime = UINT64_C(1795694401) * USEC_PER_SEC,
                .pour_realtime = UINT64_C(1795694409) * USEC_PER_SEC + 999999,
                .pour_boottime = 42,
                .duration_sec = 8,
        };
        Drink *d = NULL;
        check(drink_new_from_flow(&fd, &d) == 0);
        return d;
}

static void test_drinks_log(void) {
        _cleanup_(freep) char *state = test_path(tmpdir, "state"), *log = NULL, *text = NULL;
        DrinkSink *s = NULL;
        Drink *d;

        check(asprintf(&log, "%s/drinks.log", state) > 0);

        /* Fresh directory: created, next id 1. */
        check(drinks_log_new(&s, state) == 0);
        check(drinks_log_next_id(s) == 1);

        d = make_drink(1440, NULL);
        check(drink_sink_record(s, d) == 1);
        check(d->has_drink_id && d->drink_id == 1);
        drink_free(d);
        d = make_drink(220, "mikey \"the\" user");
        check(drink_sink_record(s, d) == 1);
        check(d->drink_id == 2);
        {
                char *line = NULL;
                check(drinks_log_format_line(d, 7, &line) == 0);
                check(strstr(line, "{\"drink_id\":7,\"uuid\":\"") == line);
                check(strstr(line, "\"username\":\"mikey \\\"the\\\" user\"") != NULL);
                free(line);
        }
        drink_free(d);
        check(drink_sink_n_pending(s) == 0);
        s = drink_sink_free(s);

        text = read_all(log);
        json_error_t err;
        char *second = strchr(text, '\n');
        check(second && second[1] != '\0');
        json_t *j = json_loadb(text, (size_t) (second - text), 0, &err);
        check(j != NULL);
        if (j) {
                check(json_integer_value(json_object_get(j, "drink_id")) == 1);
                check(json_integer_value(json_object_get(j, "ticks")) == 1440);
                check(json_real_value(json_object_get(j, "volume_ml")) == 1440 / 2.2);
                check(json_is_null(json_object_get(j, "username")));
                check(streq(json_string_value(json_object_get(j, "start_time")), "2026-11-26T12:00:01Z"));
                check(streq(json_string_value(json_object_get(j, "pour_time")), "2026-11-26T12:00:09Z"));
                check(json_integer_value(json_object_get(j, "duration")) == 8);
                check(json_integer_value(json_object_get(j, "flow_id")) == 1795694350);
                json_decref(j);
        }
        check(strncmp(text, "{\"drink_id\":1,\"uuid\":\"", 22) == 0);
        check(strstr(text, "\"meter_name\":\"kegboard.flow0\",\"ticks\":1440,\"volume_ml\":654.5454545454545,"
                           "\"username\":null,\"start_time\":\"2026-11-26T12:00:01Z\",\"pour_time\":"
                           "\"2026-11-26T12:00:09Z\",\"duration\":8}\n") != NULL);

        /* A torn last line is cut off; the id continues after the last complete line. */
        {
                int fd = open(log, O_WRONLY | O_APPEND);
                check(fd >= 0);
                check(write(fd, "{\"drink_id\":3,\"uu", 17) == 17);
                close(fd);
        }
        check(drinks_log_new(&s, state) == 0);
        check(drinks_log_next_id(s) == 3);
        s = drink_sink_free(s);
        free(text);
        text = read_all(log);
        check(text[strlen(text) - 1] == '\n');
        check(strstr(text, "\"drink_id\":3") == NULL);

        /* Invalid complete lines at the end are skipped when looking for the last id. */
        {
                int fd = open(log, O_WRONLY | O_APPEND);
                check(write(fd, "garbage\n{\"no_id\":1}\n", 20) == 20);
                close(fd);
        }
        check(drinks_log_new(&s, state) == 0);
        check(drinks_log_next_id(s) == 3);
        s = drink_sink_free(s);

        /* A partial line appearing while the log is open (a failed append whose rollback failed
         * too) does not swallow the next drink: it starts on a line of its own. */
        check(drinks_log_new(&s, state) == 0);
        {
                int fd = open(log, O_WRONLY | O_APPEND);
                check(fd >= 0);
                check(write(fd, "{\"drink_id\":3,\"uu", 17) == 17);
                close(fd);
        }
        d = make_drink(330, NULL);
        check(drink_sink_record(s, d) == 1);
        check(d->drink_id == 3);
        drink_free(d);
        s = drink_sink_free(s);
        free(text);
        text = read_all(log);
        {
                const char *want = "{\"drink_id\":3,\"uu\n{\"drink_id\":3,\"uuid\":\"";
                const char *at = strstr(text, want);
                check(at != NULL);
                check(at && strstr(at, "\"ticks\":330,") != NULL);
        }
        check(drinks_log_new(&s, state) == 0);
        check(drinks_log_next_id(s) == 4);
        s = drink_sink_free(s);

        /* Only a torn line: the file becomes empty, ids start at 1. */
        write_file(log, "{\"drink_id\":99");
        check(drinks_log_new(&s, state) == 0);
        check(drinks_log_next_id(s) == 1);
        s = drink_sink_free(s);
        free(text);
        text = read_all(log);
        check(text[0] == '\0');

        /* A long line (a 20,000-character meter name of control characters, 6 bytes each once
         * escaped: far more than 64 KiB) is still a valid last line: its drink_id must not be reused. */
        {
                _cleanup_(freep) char *state2 = test_path(tmpdir, "state-long"), *name = malloc(20001);
                Drink fd = {
                        .flow_id = 1, .meter_name = name, .ticks = 100, .volume_known = true,
                        .volume_ml = 50.0, .start_realtime = USEC_PER_SEC, .pour_realtime = USEC_PER_SEC,
                };
                check(name != NULL);
                memset(name, '\x01', 20000);
                name[20000] = '\0';
                check(drinks_log_new(&s, state2) == 0);
                for (int i = 0; i < 2; i++) {
                        Drink *ld = NULL;
                        check(drink_new_from_flow(&fd, &ld) == 0);
                        check(drink_sink_record(s, ld) == 1);
                        drink_free(ld);
                }
                s = drink_sink_free(s);
                check(drinks_log_new(&s, state2) == 0);
                check(drinks_log_next_id(s) == 3);
                s = drink_sink_free(s);
        }

        /* A state directory that cannot be created. */
        {
                _cleanup_(freep) char *blocker = test_path(tmpdir, "blocker"), *bad = NULL;
                write_file(blocker, "x");
                check(asprintf(&bad, "%s/sub", blocker) > 0);
                check(drinks_log_new(&s, bad) < 0);
        }
}

/* Every line of the file parses as JSON. */
static bool all_lines_json(const char *path, size_t *ret_n) {
        _cleanup_(freep) char *text = read_all(path);
        size_t n = 0;
        bool ok = true;

        for (char *line = text, *nl; *line; line = nl + 1) {
                nl = strchr(line, '\n');
                if (!nl)
                        return false;
                json_t *j = json_loadb(line, (size_t) (nl - line), 0, NULL);
                ok = ok && json_is_integer(json_object_get(j, "drink_id"));
                json_decref(j);
                n++;
        }
        if (ret_n)
                *ret_n = n;
        return ok;
}

static void test_drinks_log_ids_and_text(void) {
        _cleanup_(freep) char *state = test_path(tmpdir, "state-ids"), *log = NULL;
        DrinkSink *s = NULL;
        Drink *d;
        size_t n = 0;

        check(asprintf(&log, "%s/drinks.log", state) > 0);
        check(mkdir(state, 0750) == 0);

        /* What an older version wrote for a Latin-1 username: a line that is not JSON. Its drink_id
         * is still taken, also when an invalid line follows, and after any number of restarts. */
        write_file(log,
                   "{\"drink_id\":1,\"uuid\":\"a\",\"ticks\":1}\n"
                   "{\"drink_id\":2,\"uuid\":\"b\",\"username\":\"caf\xe9\",\"ticks\":1}\n"
                   "garbage\n");
        for (int restart = 0; restart < 2; restart++) {
                check(drinks_log_new(&s, state) == 0);
                check(drinks_log_next_id(s) == 3);
                s = drink_sink_free(s);
        }
        /* The highest id wins, wherever it stands; spaces around ':' are fine; an id inside a
         * string is text, not a member. */
        write_file(log,
                   "{\"drink_id\" : 7,\"uuid\":\"a\"}\n"
                   "{\"drink_id\":5,\"username\":\"x\\\",\\\"drink_id\\\":999,\\\"y\":\"\xff\"}\n"
                   "{\"uuid\":\"drink_id\",\"note\":\"\\\"drink_id\\\":500\"}\n");
        check(drinks_log_new(&s, state) == 0);
        check(drinks_log_next_id(s) == 8);

        /* From here on every line is JSON, whatever the text: quotes, backslashes, control
         * characters, a line separator, non-ASCII letters. */
        write_file(log, "");
        s = drink_sink_free(s);
        check(drinks_log_new(&s, state) == 0);
        static const char *const users[] = {
                NULL, "mikey", "caf\xc3\xa9", "a\"b\\c", "tab\there\nnewline\x01\x1f\x7f",
                "x\",\"drink_id\":999,\"y\":\"", "\xe2\x80\xa8\xf0\x9f\x8d\xba",
        };
        for (size_t i = 0; i < ELEMENTSOF(users); i++) {
                d = make_drink(100 + i, users[i]);
                check(drink_sink_record(s, d) == DRINK_SINK_ACCEPTED);
                check(d->drink_id == (int64_t) i + 1);
                drink_free(d);
        }
        /* Text that is not UTF-8 is never written: the drink is refused, not held. */
        d = make_drink(999, "caf\xe9");
        check(drink_sink_record(s, d) == -EBADMSG);
        check(drink_sink_n_pending(s) == 0);
        drink_free(d);
        s = drink_sink_free(s);
        check(all_lines_json(log, &n));
        check(n == ELEMENTSOF(users));
        check(drinks_log_new(&s, state) == 0);
        check(drinks_log_next_id(s) == (int64_t) ELEMENTSOF(users) + 1);
        s = drink_sink_free(s);
}

static void test_taps_file(void) {
        _cleanup_(freep) char *p = test_path(tmpdir, "taps.ini");
        _cleanup_(freep) char *err = NULL;
        TapTable *t = NULL;
        FlowSettings flags;

        flow_settings_init(&flags);

        write_file(p,
                   "[DEFAULT]\nrelay_name = kegboard.%(port)s\nport = relay0\n"
                   "[kegboard.flow0]\nname = Main Tap\nml_per_tick = 0.454545\n"
                   "[kegboard.flow1]\nticks_per_ml = 2\nport = relay1\n"
                   "[kegboard.flow2]\ncolour = red\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == 0);
        if (t) {
                check(t->n_taps == 3);
                check(streq(t->taps[0].meter_name, "kegboard.flow0"));
                check(streq(t->taps[0].name, "Main Tap"));
                check(t->taps[0].ml_per_tick == 0.454545);
                check(streq(t->taps[0].relay_name, "kegboard.relay0"));
                check(streq(t->taps[1].name, "kegboard.flow1"));
                check(t->taps[1].ml_per_tick == 0.5);
                check(streq(t->taps[1].relay_name, "kegboard.relay1"));
                check(t->taps[2].ml_per_tick == 0.25);
        }
        t = tap_table_free(t);

        write_file(p, "[kegboard.flow0]\nml_per_tick = 1\nticks_per_ml = 2\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == -EINVAL);
        check(err && strstr(err, "both ml_per_tick and ticks_per_ml"));
        free(TAKE_PTR(err));

        write_file(p, "[kegboard.flow0]\nml_per_tick = 0\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == -EINVAL);
        check(err && strstr(err, ":2:"));
        free(TAKE_PTR(err));

        write_file(p, "[kegboard.flow0]\nticks_per_ml = abc\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == -EINVAL);
        free(TAKE_PTR(err));

        /* Calibration from 0.01 to 100, either way round: 1e308 mL per tick made every volume
         * infinite (FlowUpdates failed to encode, drinks.log recorded 0.0 mL). */
        static const char *const out_of_range[] = {
                "ml_per_tick = 1e308", "ml_per_tick = 100.5", "ml_per_tick = 0.001", "ticks_per_ml = 1e-320",
                "ticks_per_ml = 101", "ml_per_tick = inf", "ml_per_tick = nan", "ml_per_tick = 1e-400",
        };
        for (size_t i = 0; i < ELEMENTSOF(out_of_range); i++) {
                char text[128];
                snprintf(text, sizeof text, "[kegboard.flow0]\nname = x\n%s\n", out_of_range[i]);
                write_file(p, text);
                check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == -EINVAL);
                check(err && strstr(err, ":3: [kegboard.flow0] ") && strstr(err, "must be a number from 0.01 to 100, not '") &&
                      strstr(err, strchr(out_of_range[i], '=') + 2));
                free(TAKE_PTR(err));
        }
        write_file(p, "[a.flow0]\nml_per_tick = 100\n[a.flow1]\nticks_per_ml = 0.01\n[a.flow2]\nml_per_tick = 1e-2\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == 0);
        check(t && t->n_taps == 3 && t->taps[0].ml_per_tick == 100.0 && t->taps[1].ml_per_tick == 100.0 &&
              t->taps[2].ml_per_tick == 0.01);
        t = tap_table_free(t);

        write_file(p, "ml_per_tick = 1\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) < 0);
        free(TAKE_PTR(err));

        {
                _cleanup_(freep) char *missing = test_path(tmpdir, "missing.ini");
                check(tap_table_load_file(missing, 0.25, &flags, false, &t, &err) == -ENOENT);
                free(TAKE_PTR(err));
        }
        check(t == NULL);
}

static int n_added, n_updated, n_removed;

static void on_change(const char *meter, TapChange change, void *userdata) {
        if (change == TAP_ADDED)
                n_added++;
        else if (change == TAP_UPDATED)
                n_updated++;
        else
                n_removed++;
}

static void test_tap_registry(void) {
        FlowEngineConfig c;
        FlowEngine *e = NULL;
        TapRegistry *r = NULL;
        TapTable *t = NULL;
        FlowTapInfo info;
        FlowTime now = { .monotonic = 1000, .realtime = UINT64_C(1795694400) * USEC_PER_SEC, .boottime = 1000 };

        flow_engine_config_init(&c);
        c.create_unknown_taps = true;
        check(flow_engine_new(&e, &c, NULL, NULL) == 0);
        check(tap_registry_new(&r, e, &c.settings, on_change, NULL) == 0);

        check(tap_table_new(&t) == 0);
        check(tap_table_add(t, "m.flow0", "A", 0.5, "m.relay0") == 0);
        check(tap_table_add(t, "m.flow1", NULL, 2.0, NULL) == 0);
        check(tap_table_add(t, "m.flow1", NULL, 2.0, NULL) == -EEXIST);
        check(tap_table_add(t, "m.flow9", NULL, 0.0, NULL) == -ERANGE);
        check(tap_table_add(t, "m.flow9", NULL, 1e308, NULL) == -ERANGE);
        check(tap_table_add(t, "", NULL, 1.0, NULL) == -EINVAL);
        check(tap_registry_replace(r, t, TAP_SOURCE_FILE) == 2);
        check(n_added == 2);
        check(tap_registry_n_taps(r) == 2);
        t = tap_table_free(t);

        /* A first-sight tap. */
        check(flow_engine_meter_update(e, "m.flow5", 10, &now) == 0);
        check(tap_registry_n_taps(r) == 3);

        /* Replace: flow0 changed, flow1 gone, the first-sight tap kept. */
        check(tap_table_new(&t) == 0);
        check(tap_table_add(t, "m.flow0", "A", 0.25, "m.relay0") == 0);
        check(tap_registry_replace(r, t, TAP_SOURCE_SERVER) == 2);
        check(n_updated == 1);
        check(n_removed == 1);
        check(flow_engine_get_tap(e, "m.flow1", &info) == -ENOENT);
        check(flow_engine_get_tap(e, "m.flow5", &info) == 0);
        check(flow_engine_get_tap(e, "m.flow0", &info) == 0 && info.ml_per_tick == 0.25);
        /* Same table again: no change. */
        check(tap_registry_replace(r, t, TAP_SOURCE_SERVER) == 0);
        t = tap_table_free(t);

        /* Load from a file: a syntax error changes nothing. */
        {
                _cleanup_(freep) char *p = test_path(tmpdir, "reg.ini");
                write_file(p, "[m.flow0]\nml_per_tick = -1\n");
                check(tap_registry_load_file(r, p, 0.5) < 0);
                check(flow_engine_get_tap(e, "m.flow0", &info) == 0 && info.ml_per_tick == 0.25);
                write_file(p, "[m.flow3]\n");
                check(tap_registry_load_file(r, p, 0.5) == 2);
                check(flow_engine_get_tap(e, "m.flow0", &info) == -ENOENT);
                check(flow_engine_get_tap(e, "m.flow3", &info) == 0 && info.ml_per_tick == 0.5);
        }

        tap_registry_free(r);
        flow_engine_free(e);
}

/* ghost-pours.md section 4.2: flag < [DEFAULT] < tap section; validation with file and line. */
static void test_taps_file_settings(void) {
        _cleanup_(freep) char *p = test_path(tmpdir, "ghost.ini");
        _cleanup_(freep) char *err = NULL;
        TapTable *t = NULL;
        FlowSettings flags;

        flow_settings_init(&flags);
        flags.pour_start_ml = 5;
        flags.kick_rate_ml_s = 100;
        write_file(p,
                   "[DEFAULT]\n# every tap of this kegerator\npour_start_ml = 8\n"
                   "[kegboard.flow0]\nname = Main Tap\nml_per_tick = 0.185\nrelay_name = kegboard.relay0\n"
                   "[kegboard.flow1]\nname = Guest Tap\nticks_per_ml = 2.2\nvalve_closed_gate = false\n"
                   "ghost_filter = log\npour_start_ml = 4\nmax_pour_s = 0\nquarantine_after_cuts = 0\n"
                   "min_volume_ml = 20\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == 0);
        if (t) {
                check(t->has_defaults);
                check(t->defaults.pour_start_ml == 8);          /* [DEFAULT] over the flag */
                check(t->defaults.kick_rate_ml_s == 100);       /* the flag */
                check(t->taps[0].has_settings);
                check(t->taps[0].settings.pour_start_ml == 8);
                check(t->taps[0].settings.ghost_filter == FLOW_GHOST_ON);
                check(t->taps[0].settings.valve_closed_gate);
                check(t->taps[1].settings.pour_start_ml == 4);  /* the section over [DEFAULT] */
                check(t->taps[1].settings.ghost_filter == FLOW_GHOST_LOG);
                check(!t->taps[1].settings.valve_closed_gate);
                check(t->taps[1].settings.max_pour_s == 0);
                check(t->taps[1].settings.quarantine_after_cuts == 0);
                check(t->taps[1].settings.min_volume_ml == 20);
                check(t->taps[1].settings.kick_rate_ml_s == 100);
        }
        t = tap_table_free(t);

        /* A bad value names the file, the line and the key. */
        write_file(p, "[kegboard.flow0]\nml_per_tick = 0.185\npour_start_window_s = 9\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == -EINVAL);
        check(err && strstr(err, "ghost.ini:3: pour_start_window_s: expected a number from 0.5 to 4, not '9'"));
        free(TAKE_PTR(err));
        write_file(p, "[DEFAULT]\nghost_filter = maybe\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == -EINVAL);
        check(err && strstr(err, ":2: ghost_filter: expected on, log or off"));
        free(TAKE_PTR(err));
        write_file(p, "[kegboard.flow0]\nmax_pour_s = 5\n");
        check(tap_table_load_file(p, 0.25, &flags, false, &t, &err) == -EINVAL);
        free(TAKE_PTR(err));

        /* Server mode: only the filter keys count; a section with others is a WARNING. */
        write_file(p, "[kegboard.flow0]\nname = Ignored\nml_per_tick = 9\nghost_filter = off\n"
                      "[kegboard.flow1]\nkick_rate_ml_s = 0\n");
        log_set_max_level(LOG_WARNING);
        capture_begin_in(tmpdir);
        check(tap_table_load_file(p, 0.25, &flags, true, &t, &err) == 0);
        {
                _cleanup_(freep) char *out = capture_end();
                log_set_max_level(LOG_ERR);
                check(out && strstr(out, "Taps file entry kegboard.flow0 ignored: controller kegboard uses the legacy API"));
                check(out && !strstr(out, "entry kegboard.flow1"));
        }
        if (t) {
                check(t->n_taps == 2);
                check(t->taps[0].settings.ghost_filter == FLOW_GHOST_OFF);
                check(t->taps[0].ml_per_tick == 0);
                check(t->taps[1].settings.kick_rate_ml_s == 0);
        }
        t = tap_table_free(t);
}

/* Settings reach the engine: per tap, defaults, server-mode settings; a bad reload keeps them. */
static void test_tap_registry_settings(void) {
        _cleanup_(freep) char *p = test_path(tmpdir, "reg-ghost.ini");
        FlowEngineConfig c;
        FlowEngine *e = NULL;
        TapRegistry *r = NULL;
        TapTable *t = NULL;

        flow_engine_config_init(&c);
        c.create_unknown_taps = true;
        check(flow_engine_new(&e, &c, NULL, NULL) == 0);
        check(tap_registry_new(&r, e, &c.settings, on_change, NULL) == 0);

        write_file(p, "[DEFAULT]\nghost_filter = log\n[a.flow0]\nghost_filter = off\n[a.flow1]\n");
        check(tap_registry_load_file(r, p, 0.5) == 2);
        check(flow_engine_meter_mode(e, "a.flow0") == FLOW_GHOST_OFF);
        check(flow_engine_meter_mode(e, "a.flow1") == FLOW_GHOST_LOG);
        check(flow_engine_meter_mode(e, "a.flow9") == FLOW_GHOST_LOG);       /* [DEFAULT]: every tap */

        /* A bad value on reload keeps the settings in force. */
        write_file(p, "[a.flow0]\nghost_filter = sometimes\n");
        check(tap_registry_load_file(r, p, 0.5) < 0);
        check(flow_engine_meter_mode(e, "a.flow0") == FLOW_GHOST_OFF);

        /* A reload that changes only a mode reports the tap updated. */
        n_updated = 0;
        write_file(p, "[DEFAULT]\nghost_filter = log\n[a.flow0]\n[a.flow1]\n");
        check(tap_registry_load_file(r, p, 0.5) == 1);
        check(n_updated == 1);
        check(flow_engine_meter_mode(e, "a.flow0") == FLOW_GHOST_LOG);

        /* Server mode: the taps come from the server, their settings from the file. */
        write_file(p, "[s.flow0]\nghost_filter = off\nname = from the file\n");
        check(tap_registry_load_settings(r, p) == 0);
        check(tap_table_new(&t) == 0);
        check(tap_table_add(t, "s.flow0", "Server Tap", 0.5, NULL) == 0);
        check(tap_table_add(t, "s.flow1", NULL, 0.5, NULL) == 0);
        check(tap_registry_replace(r, t, TAP_SOURCE_SERVER) >= 2);
        check(flow_engine_meter_mode(e, "s.flow0") == FLOW_GHOST_OFF);
        check(flow_engine_meter_mode(e, "s.flow1") == FLOW_GHOST_ON);
        t = tap_table_free(t);
        write_file(p, "[s.flow0]\nghost_filter = log\n");
        check(tap_registry_load_settings(r, p) == 0);
        check(flow_engine_meter_mode(e, "s.flow0") == FLOW_GHOST_LOG);
        write_file(p, "[s.flow0]\nghost_filter = 1\n");
        check(tap_registry_load_settings(r, p) < 0);
        check(flow_engine_meter_mode(e, "s.flow0") == FLOW_GHOST_LOG);

        tap_registry_free(r);
        flow_engine_free(e);
}

/* quarantine.json (ghost-pours.md section 9). */
static void test_quarantine_file(void) {
        _cleanup_(freep) char *dir = test_path(tmpdir, "qstate"), *path = NULL, *text = NULL;
        FlowEngine *e = NULL, *f = NULL;
        FlowMeterInfo mi;
        uint64_t since = UINT64_C(1795694400) * USEC_PER_SEC + 2 * USEC_PER_SEC;
        static const char *const bad[] = {
                "{", "[]", "{\"version\":2,\"meters\":{}}", "{\"version\":1}",
                "{\"version\":1,\"meters\":{\"a.flow0\":{\"since\":\"yesterday\",\"cuts\":2,\"max_pour_s\":300}}}",
                "{\"version\":1,\"meters\":{\"a b\":{\"since\":\"2026-11-26T12:00:02Z\",\"cuts\":2,\"max_pour_s\":300}}}",
                "{\"version\":1,\"meters\":{\"a.flow0\":{\"since\":\"2026-11-26T12:00:02Z\",\"cuts\":-1,\"max_pour_s\":300}}}",
        };

        check(mkdir(dir, 0750) == 0);
        path = test_path(dir, QUARANTINE_FILE);
        check(flow_engine_new(&e, NULL, NULL, NULL) == 0);
        check(flow_engine_restore_quarantine(e, "kegboard.flow0", since, 2, 300) == 0);
        check(quarantine_format(e, &text) == 0);
        check_streq(text, "{\"version\":1,\"meters\":{\"kegboard.flow0\":{\"since\":\"2026-11-26T12:00:02Z\","
                          "\"cuts\":2,\"max_pour_s\":300.0}}}\n");
        check(quarantine_save(e, dir) == 0);

        check(flow_engine_new(&f, NULL, NULL, NULL) == 0);
        check(quarantine_load(f, dir) == 1);
        check(flow_engine_get_meter(f, "kegboard.flow0", &mi) == 0);
        check(mi.quarantined && mi.quarantined_since == since && mi.quarantine_cuts == 2);
        f = flow_engine_free(f);

        /* Corrupt, or an entry that is not one: a WARNING and no quarantine. */
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                write_file(path, bad[i]);
                check(flow_engine_new(&f, NULL, NULL, NULL) == 0);
                log_set_max_level(LOG_WARNING);
                capture_begin_in(tmpdir);
                check(quarantine_load(f, dir) == 0);
                {
                        _cleanup_(freep) char *out = capture_end();
                        log_set_max_level(LOG_ERR);
                        check(out && strstr(out, "WARNING") && strstr(out, "no tap is quarantined"));
                }
                check(flow_engine_n_meters(f) == 0);
                f = flow_engine_free(f);
        }
        check(unlink(path) == 0);
        check(flow_engine_new(&f, NULL, NULL, NULL) == 0);
        check(quarantine_load(f, dir) == 0);
        f = flow_engine_free(f);
        flow_engine_free(e);
}

static int n_silent;

static void on_silent(const ThermoSensor *s, void *userdata) {
        n_silent++;
}

static void test_thermo(void) {
        ThermoManager *t = NULL;
        const ThermoSensor *s = NULL;
        uint64_t minute = UINT64_C(1795694400) * USEC_PER_SEC;      /* a whole minute */
        uint64_t mono = 5 * USEC_PER_SEC;

        check(thermo_manager_new(&t) == 0);
        check(thermo_manager_next_deadline(t) == THERMO_NO_DEADLINE);

        check(thermo_manager_reading(t, "kb.thermo-1", 85.0, mono, minute, &s) == THERMO_DROPPED);
        check(thermo_manager_reading(t, "kb.thermo-1", -20.1, mono, minute, &s) == THERMO_DROPPED);
        check(thermo_manager_reading(t, "kb.thermo-1", 80.1, mono, minute, &s) == THERMO_DROPPED);
        check(thermo_manager_reading(t, "kb.thermo-1", NAN, mono, minute, &s) == THERMO_DROPPED);
        check(thermo_manager_n_sensors(t) == 0);

        check(thermo_manager_reading(t, "kb.thermo-1", -20.0, mono, minute + 1, &s) == THERMO_RECORD);
        check(s && s->value == -20.0);
        check(thermo_manager_reading(t, "kb.thermo-1", 80.0, mono + 1, minute + 59 * USEC_PER_SEC, &s) == THERMO_ACCEPTED);
        check(s && s->value == 80.0);
        check(thermo_manager_reading(t, "kb.thermo-1", 4.5, mono + 2, minute + 60 * USEC_PER_SEC, &s) == THERMO_RECORD);
        check(thermo_manager_reading(t, "kb.thermo-2", 4.5, mono + 2, minute + 60 * USEC_PER_SEC, &s) == THERMO_RECORD);
        check(thermo_manager_n_sensors(t) == 2);
        check(thermo_manager_find(t, "kb.thermo-2") != NULL);
        check(thermo_manager_find(t, "nope") == NULL);

        /* Silence: more than 2 minutes after the last reading. */
        check(thermo_manager_next_deadline(t) == mono + 2 + THERMO_SILENCE_USEC + 1);
        check(thermo_manager_process_deadlines(t, mono + 2 + THERMO_SILENCE_USEC, on_silent, NULL) == 0);
        check(thermo_manager_process_deadlines(t, mono + 2 + THERMO_SILENCE_USEC + 1, on_silent, NULL) == 2);
        check(n_silent == 2);
        check(thermo_manager_next_deadline(t) == THERMO_NO_DEADLINE);
        check(thermo_manager_sensor_at(t, 0)->silent);
        check(thermo_manager_sensor_at(t, 5) == NULL);
        /* Warned once; a new reading revives the sensor. */
        check(thermo_manager_process_deadlines(t, mono + 10 * THERMO_SILENCE_USEC, on_silent, NULL) == 0);
        check(thermo_manager_reading(t, "kb.thermo-1", 3.0, mono + 500 * USEC_PER_SEC,
                                     minute + 600 * USEC_PER_SEC, &s) == THERMO_RECORD);
        check(!s->silent);
        check(thermo_manager_next_deadline(t) == mono + 500 * USEC_PER_SEC + THERMO_SILENCE_USEC + 1);

        thermo_manager_free(t);
}

static void test_tokens(void) {
        _cleanup_(freep) char *p = test_path(tmpdir, "tokens.ini");
        _cleanup_(freep) char *err = NULL;
        Tokens *db = NULL;
        const char *user = NULL;

        write_file(p,
                   "[core.rfid:0415AB23CD]\nusername = dave\n"
                   "[core.onewire:aaaa]\nusername = alice\nenabled = no\n"
                   "[my.reader:CaseKept]\nusername = bob\nenabled = yes\n");
        check(tokens_load(p, &db, &err) == 0);
        check(tokens_size(db) == 3);
        check(tokens_lookup(db, "core.rfid", "0415ab23cd", &user) == TOKENS_OK && streq(user, "dave"));
        check(tokens_lookup(db, "core.rfid", "0415AB23CD", &user) == TOKENS_OK);
        check(tokens_lookup(db, "core.onewire", "AAAA", &user) == TOKENS_DISABLED);
        check(tokens_lookup(db, "my.reader", "CaseKept", &user) == TOKENS_OK && streq(user, "bob"));
        check(tokens_lookup(db, "my.reader", "casekept", &user) == TOKENS_NOT_ASSIGNED);
        check(tokens_lookup(db, "core.onewire", "0415ab23cd", &user) == TOKENS_NOT_ASSIGNED);
        check(tokens_lookup(NULL, "core.rfid", "x", &user) == TOKENS_NOT_ASSIGNED);
        db = tokens_free(db);

        const char *bad[] = {
                "[core.rfid]\nusername = x\n",
                "[:abc]\nusername = x\n",
                "[core.rfid:]\nusername = x\n",
                "[core.rfid:ab]\n",
                "[core.rfid:ab]\nusername = x\nenabled = maybe\n",
                "[core.rfid:ab]\nusername = x\n[core.rfid:AB]\nusername = y\n",
                "[core.rfid:ab]\nusername = x\n[core.rfid:ab]\nusername = y\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                write_file(p, bad[i]);
                check(tokens_load(p, &db, &err) < 0);
                check(db == NULL);
                free(TAKE_PTR(err));
        }
        {
                _cleanup_(freep) char *missing = test_path(tmpdir, "none.ini");
                check(tokens_load(missing, &db, &err) == -ENOENT);
                free(TAKE_PTR(err));
        }

        /* The same section twice: an error with both lines (it used to replace the first user). */
        {
                _cleanup_(freep) char *want = NULL;
                write_file(p, "[core.rfid:0415ab23cd]\nusername = alice\n\n[core.rfid:0415ab23cd]\nusername = mallory\n");
                check(tokens_load(p, &db, &err) == -EINVAL);
                check(db == NULL);
                check(asprintf(&want, "%s:4: section [core.rfid:0415ab23cd] repeats the one at line 1", p) > 0);
                check(err && streq(err, want));
                free(TAKE_PTR(err));
        }

        /* A username with a Latin-1 byte: refused, naming the file and the line, not carried on. */
        {
                _cleanup_(freep) char *want = NULL;
                write_file(p, "[core.rfid:0415ab23cd]\nusername = caf\xe9\n");
                check(tokens_load(p, &db, &err) == -EINVAL);
                check(db == NULL);
                check(asprintf(&want, "%s:2: not valid UTF-8", p) > 0);
                check(err && streq(err, want));
                free(TAKE_PTR(err));
        }
}

static void test_drinks_log_contains(void) {
        _cleanup_(freep) char *state = test_path(tmpdir, "contains");
        DrinkSink *s = NULL;
        char uuids[40][UUID_STRING_MAX];

        check(drinks_log_new(&s, state) == 0);
        /* Enough lines that the early ones are several read chunks from the end. */
        for (size_t i = 0; i < ELEMENTSOF(uuids); i++) {
                Drink *d = make_drink(100 + i, "mikey");
                check(drink_sink_record(s, d) == DRINK_SINK_ACCEPTED);
                memcpy(uuids[i], d->uuid, UUID_STRING_MAX);
                drink_free(d);
        }
        for (size_t i = 0; i < ELEMENTSOF(uuids); i++)
                check(drink_sink_contains(s, uuids[i]) == 1);
        check(drink_sink_contains(s, "0b0e2a44-62a5-4e3d-9d6b-3c4c5d6e7f80") == 0);
        s = drink_sink_free(s);
}

static int durable_if_u1(const char *uuid, void *userdata) {
        return streq(uuid, "11111111-1111-4111-8111-111111111111");
}

static void test_meters_state(void) {
        _cleanup_(freep) char *state = test_path(tmpdir, "meters"), *file = NULL, *text = NULL;
        static const char u1[] = "11111111-1111-4111-8111-111111111111", u2[] = "22222222-2222-4222-8222-222222222222";
        MetersState *ms = NULL;
        FlowMeterState st;
        const MetersController *c;

        check(asprintf(&file, "%s/meters.json", state) > 0);
        check(meters_state_new(&ms, state) == 0);
        check(meters_state_load(ms) == 0);              /* missing: empty */
        check(meters_state_n_meters(ms) == 0);
        check(meters_state_set_meter(ms, "kegboard.flow0", &(FlowMeterState) { .accounted = 4294967295u }) == 0);
        check(meters_state_set_meter(ms, "kegboard.flow1", &(FlowMeterState) { .accounted = 7, .carry = 30 }) == 0);
        check(meters_state_set_meter(ms, "", &(FlowMeterState) {}) == -EINVAL);
        check(meters_state_set_meter(ms, "caf\xe9", &(FlowMeterState) {}) == -EINVAL);
        check(meters_state_set_controller(ms, "kegboard", "KB-1", true, 90000) == 0);
        check(meters_state_set_controller(ms, "kegboard-2", NULL, false, 0) == 0);
        check(meters_state_is_dirty(ms));
        check(meters_state_save(ms) == 0);
        check(!meters_state_is_dirty(ms));
        text = read_all(file);
        check_streq(text, "{\"version\":1,\"meters\":{\"kegboard.flow0\":{\"reading\":4294967295,\"carry\":0},"
                    "\"kegboard.flow1\":{\"reading\":7,\"carry\":30}},\"controllers\":{\"kegboard\":"
                    "{\"serial_number\":\"KB-1\",\"uptime_ms\":90000},\"kegboard-2\":{\"serial_number\":null}},"
                    "\"pending\":[]}\n");

        /* Two drinks begun: each pending with the state after it; one ends written, one not. */
        check(meters_state_begin_drink(ms, u1, "kegboard.flow0", &(FlowMeterState) { .accounted = 40 }) == 0);
        check(meters_state_begin_drink(ms, u1, "kegboard.flow0", &(FlowMeterState) {}) == -EEXIST);
        check(meters_state_begin_drink(ms, "nope", "kegboard.flow0", &(FlowMeterState) {}) == -EINVAL);
        check(meters_state_begin_drink(ms, u2, "kegboard.flow1", &(FlowMeterState) { .accounted = 9 }) == 0);
        check(meters_state_n_pending(ms) == 2);
        check(meters_state_save(ms) == 0);
        check(meters_state_end_drink(ms, u2, false) == 0);
        check(meters_state_get_meter(ms, "kegboard.flow1", &st) == 0 && st.accounted == 7 && st.carry == 30);
        check(meters_state_end_drink(ms, u2, true) == -ENOENT);
        ms = meters_state_free(ms);

        /* Read back: the pending drinks are resolved by whether they were written. */
        check(meters_state_new(&ms, state) == 0);
        check(meters_state_load(ms) == 0);
        check(meters_state_n_meters(ms) == 2);
        check(meters_state_n_pending(ms) == 2);
        c = meters_state_get_controller(ms, "kegboard");
        check(c && streq_ptr(c->serial_number, "KB-1") && c->has_uptime && c->uptime_ms == 90000);
        c = meters_state_get_controller(ms, "kegboard-2");
        check(c && !c->serial_number && !c->has_uptime);
        check(meters_state_resolve_pending(ms, durable_if_u1, NULL) == 0);
        check(meters_state_n_pending(ms) == 0);
        check(meters_state_get_meter(ms, "kegboard.flow0", &st) == 0 && st.accounted == 40 && st.carry == 0);
        check(meters_state_get_meter(ms, "kegboard.flow1", &st) == 0 && st.accounted == 7 && st.carry == 30);
        check(meters_state_get_meter(ms, "kegboard.flow7", &st) == -ENOENT);
        ms = meters_state_free(ms);

        /* Anything wrong in the file: ignored as a whole (a WARNING), never an error. */
        static const char *const bad[] = {
                "", "[]", "{\"version\":2,\"meters\":{},\"controllers\":{},\"pending\":[]}",
                "{\"version\":1,\"meters\":{},\"controllers\":{}}",
                "{\"version\":1,\"meters\":{\"m\":{\"reading\":4294967296,\"carry\":0}},\"controllers\":{},\"pending\":[]}",
                "{\"version\":1,\"meters\":{\"m\":{\"reading\":1}},\"controllers\":{},\"pending\":[]}",
                "{\"version\":1,\"meters\":{\"m\":{\"reading\":1,\"carry\":0},\"m\":{\"reading\":2,\"carry\":0}},"
                "\"controllers\":{},\"pending\":[]}",
                "{\"version\":1,\"meters\":{},\"controllers\":{\"k\":{\"serial_number\":5}},\"pending\":[]}",
                "{\"version\":1,\"meters\":{},\"controllers\":{},\"pending\":[{\"uuid\":\"x\",\"meter\":\"m\","
                "\"reading\":1,\"carry\":0}]}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                write_file(file, bad[i]);
                check(meters_state_new(&ms, state) == 0);
                check(meters_state_load(ms) == 0);
                check(meters_state_n_meters(ms) == 0 && meters_state_n_pending(ms) == 0);
                check(!meters_state_get_controller(ms, "k"));
                ms = meters_state_free(ms);
        }
        check(meters_state_format(NULL, &text) == -EINVAL);
}

static void test_disk_reserve(void) {
        _cleanup_(freep) char *state = test_path(tmpdir, "reserve"), *file = NULL;
        DiskReserve *r = NULL;
        struct stat st;

        check(asprintf(&file, "%s/space-reserve", state) > 0);
        check(disk_reserve_new(&r, state) == 0);
        check(disk_reserve_held(r));
        /* Room for 1000 drinks of one block each, and more. */
        check(disk_reserve_size(r) >= 1000 * 4096);
        check(stat(file, &st) == 0 && (uint64_t) st.st_size == disk_reserve_size(r) &&
              (uint64_t) st.st_blocks * 512 >= disk_reserve_size(r));
        /* Only ENOSPC releases it, once. */
        check(!disk_reserve_release_for(r, -EIO));
        check(disk_reserve_held(r));
        check(disk_reserve_release_for(r, -ENOSPC));
        check(!disk_reserve_held(r) && stat(file, &st) < 0 && errno == ENOENT);
        check(!disk_reserve_release_for(r, -ENOSPC));
        check(disk_reserve_refill(r));
        check(disk_reserve_held(r) && stat(file, &st) == 0);
        r = disk_reserve_free(r);
        /* A reserve left by a previous run is kept as it is. */
        check(disk_reserve_new(&r, state) == 0);
        check(disk_reserve_held(r));
        r = disk_reserve_free(r);
        check(!disk_reserve_release_for(NULL, -ENOSPC));
        check(!disk_reserve_refill(NULL));
}

/* core-behaviour.md 10.3: 5 failures spread over at least 10 minutes, on a driven clock. */
static void test_poison_rule(void) {
        static const char a[] = "11111111-1111-4111-8111-111111111111", b[] = "22222222-2222-4222-8222-222222222222";
        const uint64_t min = 60 * USEC_PER_SEC, t0 = 1000 * USEC_PER_SEC;
        PoisonTracker t = {};
        uint64_t now, wait;
        unsigned n = 0;

        /* A burst: five failures within a minute condemn nothing, nor do fifty. */
        for (unsigned i = 0; i < 50; i++)
                check(!poison_tracker_note(&t, a, t0 + i * USEC_PER_SEC));
        /* Once ten minutes have passed since the first, the next failure does. */
        check(!poison_tracker_note(&t, a, t0 + 10 * min - 1));
        check(poison_tracker_note(&t, a, t0 + 10 * min));

        /* The uploader's backoff (10, 20, 40, 80, 160, 300 s): failures at 0, 10, 30, 70, 150, 310
         * and 610 s; the seventh is the first 10 minutes after the first. */
        poison_tracker_reset(&t);
        now = t0;
        wait = 10 * USEC_PER_SEC;
        for (;;) {
                n++;
                if (poison_tracker_note(&t, a, now) || n > 20)
                        break;
                now += wait;
                wait = MIN(wait * 2, 300 * USEC_PER_SEC);
        }
        check(n == 7);
        check(now - t0 == 610 * USEC_PER_SEC);

        /* Another drink starts its own count; four slow failures are not five. */
        check(!poison_tracker_note(&t, b, t0));
        check(!poison_tracker_note(&t, b, t0 + 20 * min));
        check(!poison_tracker_note(&t, b, t0 + 40 * min));
        check(!poison_tracker_note(&t, b, t0 + 60 * min));
        check(poison_tracker_note(&t, b, t0 + 80 * min));
        /* A success (reset) starts over. */
        poison_tracker_reset(&t);
        for (unsigned i = 0; i < 4; i++)
                check(!poison_tracker_note(&t, b, t0 + i * 20 * min));
}

int main(void) {

        snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-core-units-XXXXXX");
        if (!mkdtemp(tmpdir))
                return 1;
        log_set_max_level(LOG_ERR);     /* expected warnings would only clutter the output */

        test_run(test_drinks_log);
        test_run(test_drinks_log_ids_and_text);
        test_run(test_taps_file);
        test_run(test_taps_file_settings);
        test_run(test_tap_registry);
        test_run(test_tap_registry_settings);
        test_run(test_quarantine_file);
        test_run(test_thermo);
        test_run(test_tokens);
        test_run(test_drinks_log_contains);
        test_run(test_meters_state);
        test_run(test_disk_reserve);
        test_run(test_poison_rule);

        test_rm_rf(tmpdir);
        return test_result();
}
