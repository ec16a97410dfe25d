/* Starting the daemons of boards and RFID readers already plugged in: see boards.h. */

#define LOG_COMPONENT "kegboard"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "boards.h"
#include "device-watch.h"
#include "log.h"
#include "util-escape.h"
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

/* "rfid-reader@<instance>.service" with an instance that is a device name as udev's %k gives it,
 * with or without the "input-" of an event node. */
static bool reader_unit_ok(const char *unit) {
        const char *instance = startswith(unit, BOARDS_READER_TEMPLATE);
        const char *suffix = ".service";
        char name[65];
        size_t l;

        if (!instance)
                return false;
        l = strlen(instance);
        if (l <= strlen(suffix) || l - strlen(suffix) >= sizeof name || !streq(instance + l - strlen(suffix), suffix))
                return false;
        memcpy(name, instance, l - strlen(suffix));
        name[l - strlen(suffix)] = 0;
        return tty_name_ok(name);
}

typedef struct ReaderScan {
        char ***units;
        size_t *n;
        int error;
} ReaderScan;

static void reader_found(struct udev_device *d, void *userdata) {
        const char *wants = udev_device_get_property_value(d, "SYSTEMD_WANTS");
        _cleanup_(strv_freep) char **l = NULL;
        ReaderScan *scan = userdata;
        int r;

        if (scan->error < 0)
                return;
        if (isempty(wants))
                return;         /* a parent of a reader, or udev not done with it: its add event starts it */
        r = strv_split(wants, " \t\n", &l);
        if (r < 0) {
                scan->error = r;
                return;
        }
        STRV_FOREACH(u, l) {
                if (!startswith(*u, BOARDS_READER_TEMPLATE))
                        continue;
                if (!reader_unit_ok(*u)) {
                        _cleanup_(freep) char *e = escape_for_log(*u);
                        log_debug("%s wants %s: no reader instance", udev_device_get_syspath(d), e ?: "?");
                        continue;
                }
                if (strv_contains(*scan->units, *u))
                        continue;
                r = strv_extend(scan->units, scan->n, *u);
                if (r < 0) {
                        scan->error = r;
                        return;
                }
        }
}

int boards_list_readers(struct udev *udev, char ***units, size_t *n) {
        static const char *const subsystems[] = { "hidraw", "tty", "input", NULL };
        ReaderScan scan = { .units = units, .n = n };
        size_t first;
        int r;

        assert_return(udev, -EINVAL);
        assert_return(units && n, -EINVAL);

        first = *n;
        r = device_enumerate_property(udev, subsystems, "KEGBOT_RFID", "1", reader_found, &scan);
        if (r < 0)
                return r;
        if (scan.error < 0)
                return scan.error;
        if (*n > first)
                qsort(*units + first, *n - first, sizeof(char *), strcmp_ptr);
        return 0;
}

int boards_start(char *const *units) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r, ret = 0;

        if (!units || !units[0])
                return 0;
        r = sd_bus_open_system(&bus);
        if (r < 0)
                return log_error_errno(r, "Cannot connect to the system bus: %m");

        for (char *const *u = units; *u; u++) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;

                /* "replace", and no waiting for the job: this runs inside kegbot.target's start. */
                r = sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                       "org.freedesktop.systemd1.Manager", "StartUnit", &error, NULL, "ss", *u,
                                       "replace");
                if (r < 0 && sd_bus_error_has_name(&error, "org.freedesktop.systemd1.NoSuchUnit")) {
                        /* A stale wish in udev's database (kegbot-extras removed, the reader not
                         * replugged since): trying again would not install it. */
                        log_warning("Not starting %s: no such unit", *u);
                        continue;
                }
                if (r < 0) {
                        log_error_errno(r, "Cannot start %s: %s", *u, error.message ?: strerror(-r));
                        if (ret == 0)
                                ret = r;
                        continue;
                }
                log_info("Started %s", *u);
        }
        return ret;
}
