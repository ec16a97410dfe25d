/* Starting the daemons of boards already plugged in: see boards.h. */

#define LOG_COMPONENT "kegboard"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "boards.h"
#include "log.h"
#include "util-strv.h"

/* What udev's %k gives for a tty: a device name, not a path. */
static bool tty_name_ok(const char *s) {
        if (isempty(s) || strlen(s) > 64 || streq(s, ".") || streq(s, ".."))
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '_' || *p == '-' || *p == '.'))
                        return false;
        return true;
}

static int strcmp_ptr(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int boards_list(const char *dir, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        struct dirent *de;
        size_t n = 0;
        DIR *d;
        int r = 0;

        assert_return(dir, -EINVAL);
        assert_return(ret, -EINVAL);

        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT)
                        return -errno;
                *ret = TAKE_PTR(l);
                return 0;
        }
        while ((de = readdir(d))) {
                char target[PATH_MAX];
                const char *tty;
                ssize_t k;

                if (de->d_name[0] == '.')
                        continue;
                k = readlinkat(dirfd(d), de->d_name, target, sizeof target - 1);
                if (k < 0)
                        continue;       /* not a link */
                target[k] = 0;
                tty = strrchr(target, '/');
                tty = tty ? tty + 1 : target;
                if (!tty_name_ok(tty)) {
                        log_debug("%s/%s points to %s: no tty name", dir, de->d_name, target);
                        continue;
                }
                if (strv_contains(l, tty))
                        continue;
                r = strv_extend(&l, &n, tty);
                if (r < 0)
                        break;
        }
        closedir(d);
        if (r < 0)
                return r;
        qsort(l, n, sizeof(char *), strcmp_ptr);
        *ret = TAKE_PTR(l);
        return 0;
}

int boards_unit_name(const char *tty, char **ret) {
        char *s;

        assert_return(ret, -EINVAL);
        if (!tty_name_ok(tty))
                return -EINVAL;
        if (asprintf(&s, "kegboard-daemon@%s.service", tty) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int boards_start(char *const *ttys) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r, ret = 0;

        if (!ttys || !ttys[0]) {
                log_info("No Kegboard is plugged in (%s is empty)", BOARDS_DIR);
                return 0;
        }
        r = sd_bus_open_system(&bus);
        if (r < 0)
                return log_error_errno(r, "Cannot connect to the system bus: %m");

        for (char *const *t = ttys; *t; t++) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(freep) char *unit = NULL;

                r = boards_unit_name(*t, &unit);
                if (r >= 0)
                        /* "replace", and no waiting for the job: this runs inside kegbot.target's start. */
                        r = sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                               "org.freedesktop.systemd1.Manager", "StartUnit", &error, NULL, "ss",
                                               unit, "replace");
                if (r < 0) {
                        log_error_errno(r, "Cannot start %s: %s", unit ?: *t, error.message ?: strerror(-r));
                        if (ret == 0)
                                ret = r;
                        continue;
                }
                log_info("Started %s", unit);
        }
        return ret;
}
