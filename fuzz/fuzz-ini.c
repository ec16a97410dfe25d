/* Fuzz target for the INI reader: parse any bytes, then interpolate and boolean-parse every key of
 * every section (and of [DEFAULT]), with kegbot_master's built-in layers in place so the built-in
 * defaults' references are exercised too. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "ini.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void get_all(const Ini *ini, const char *section) {
        const char **keys = NULL;
        size_t n = 0;

        if (ini_section_keys(ini, section, &keys, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                char *v = NULL, *err = NULL;
                bool b;

                if (ini_get(ini, section, keys[i], &v, &err) < 0) {
                        if (!err)
                                abort();        /* every failure must come with a message */
                } else if (!v)
                        abort();
                free(v);
                free(err);
                err = NULL;
                (void) ini_get_boolean(ini, section, keys[i], &b, &err);
                free(err);
                (void) ini_get_raw(ini, section, keys[i]);
        }
        free(keys);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Ini *ini = NULL;
        char *err = NULL;

        if (ini_new(&ini, "fuzz.ini") < 0)
                return 0;
        (void) ini_set_variable(ini, "_flag_pidfile_dir", "/run/kegbot");
        (void) ini_set_variable(ini, "_flag_logfile_dir", "/var/log/kegbot");
        (void) ini_set_builtin_default(ini, "_pidfile_dir", "%(_flag_pidfile_dir)s");
        (void) ini_set_builtin_default(ini, "_program_name", "%(__name__)s.py");
        (void) ini_set_builtin_default(ini, "pidfile", "%(_pidfile_dir)s/%(__name__)s.pid");

        if (ini_parse_buffer(ini, NULL, (const char *) data, size, &err) < 0 && !err)
                abort();
        free(err);

        /* Even after a syntax error, what was parsed must be consistent. */
        for (size_t i = 0; i < ini->n_sections; i++)
                get_all(ini, ini->sections[i]->name);
        get_all(ini, INI_DEFAULT_SECTION);

        ini_free(ini);
        return 0;
}
