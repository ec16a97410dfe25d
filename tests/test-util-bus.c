/* Unit tests of the sd-bus helpers (util-bus.h), on messages built and sealed without a bus daemon. */
#include <sys/socket.h>
#include <unistd.h>

#include "test-util.h"
#include "util-bus.h"
#include "util-strv.h"

typedef struct Seen {
        char *name;
        double volume;
        char **flags;
        unsigned skipped;
        int fail_at;            /* 1-based entry whose callback fails, 0: none */
        unsigned calls;
} Seen;

static int entry(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        Seen *s = userdata;

        if (++s->calls == (unsigned) s->fail_at)
                return -EBADMSG;
        if (streq(key, "Name") && streq(contents, "s"))
                return bus_message_read_strdup(m, &s->name);
        if (streq(key, "Volume") && streq(contents, "d"))
                return sd_bus_message_read(m, "d", &s->volume);
        if (streq(key, "Flags") && streq(contents, "as")) {
                int r;

                s->flags = strv_free(s->flags);
                r = sd_bus_message_read_strv(m, &s->flags);
                return r < 0 ? r : 1;
        }
        s->skipped++;
        return 0;
}

/* A sealed signal carrying an a{sv} with the four entries and then the string "after". */
static sd_bus_message *dict_message(sd_bus *bus) {
        sd_bus_message *m = NULL;

        check_int(sd_bus_message_new_signal(bus, &m, "/t", "org.kegbot.Test", "T"), 0);
        check(sd_bus_message_append(m, "a{sv}", 4, "Name", "s", "Main Tap", "Volume", "d", 500.5,
                                    "Other", "(ii)", 1, 2, "Flags", "as", 2, "kicked", "ghost") >= 0);
        check(sd_bus_message_append(m, "s", "after") >= 0);
        check_int(sd_bus_message_seal(m, 1, 0), 0);
        return m;
}

static void test_read_dict(void) {
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        Seen s = {};
        const char *after;
        int fds[2];

        check_int(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        check_int(sd_bus_new(&bus), 0);
        check_int(sd_bus_set_fd(bus, fds[0], fds[0]), 0);
        check_int(sd_bus_start(bus), 0);
        close(fds[1]);

        m = dict_message(bus);
        check_int(bus_message_read_dict(m, entry, &s), 1);
        check_streq(s.name, "Main Tap");
        check(s.volume == 500.5);
        check_int(strv_length(s.flags), 2);
        check_streq(s.flags[1], "ghost");
        check_int(s.skipped, 1);
        /* The message goes on after the dictionary. */
        check_int(sd_bus_message_read(m, "s", &after), 1);
        check_streq(after, "after");

        /* A string read twice replaces the first copy. */
        check_int(sd_bus_message_rewind(m, true), 1);
        check_int(bus_message_read_dict(m, entry, &s), 1);
        check_streq(s.name, "Main Tap");

        /* A failing callback stops the reading with its error. */
        check_int(sd_bus_message_rewind(m, true), 1);
        s.calls = 0;
        s.fail_at = 2;
        check_int(bus_message_read_dict(m, entry, &s), -EBADMSG);
        check_int(s.calls, 2);

        /* Not a dictionary there. */
        check_int(sd_bus_message_rewind(m, true), 1);
        check_int(sd_bus_message_skip(m, "a{sv}"), 1);
        check(bus_message_read_dict(m, entry, &s) < 0);
        check_int(bus_message_read_dict(NULL, entry, &s), -EINVAL);
        check_int(bus_message_read_strdup(m, NULL), -EINVAL);

        free(s.name);
        strv_free(s.flags);
}

int main(void) {
        test_run(test_read_dict);
        return test_result();
}
