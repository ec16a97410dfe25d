/* sd-bus helpers: see util-bus.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "util-bus.h"

static int read_entry(sd_bus_message *m, BusDictEntryFunc entry, void *userdata) {
        const char *key, *contents;
        int r;

        r = sd_bus_message_read(m, "s", &key);
        if (r < 0)
                return r;
        r = sd_bus_message_peek_type(m, NULL, &contents);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'v', contents);
        if (r < 0)
                return r;
        r = entry(m, key, contents, userdata);
        if (r == 0)
                r = sd_bus_message_skip(m, contents);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int bus_message_read_dict(sd_bus_message *m, BusDictEntryFunc entry, void *userdata) {
        int r;

        assert_return(m && entry, -EINVAL);

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = read_entry(m, entry, userdata);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int bus_message_read_strdup(sd_bus_message *m, char **ret) {
        const char *s;
        char *c;
        int r;

        assert_return(m && ret, -EINVAL);

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        c = strdup(s);
        if (!c)
                return -ENOMEM;
        free(*ret);
        *ret = c;
        return 1;
}
