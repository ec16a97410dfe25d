/* kegboard_daemon --start_boards: the boards present are the targets of udev's /dev/kegboard links
 * (src/kegboard/boards.c). What systemd does with the unit names is the boot test's business. */
#include <sys/stat.h>

#include "boards.h"
#include "util-strv.h"
#include "test-util.h"

static char dir[] = "/tmp/test-kegboard-boards-XXXXXX";

static void link_at(const char *target, const char *name) {
        char path[PATH_MAX];

        snprintf(path, sizeof path, "%s/%s", dir, name);
        check(symlink(target, path) == 0);
}

static void test_list(void) {
        char path[PATH_MAX];
        char **l = NULL;

        /* No directory: no board. */
        snprintf(path, sizeof path, "%s/none", dir);
        check(boards_list(path, &l) == 0);
        check(l && strv_length(l) == 0);
        l = strv_free(l);

        /* Links by serial number and by kernel name, as 70-kegboard.rules makes them. */
        link_at("../ttyUSB1", "KB-0000-0000-1A2B3C4D");
        link_at("../ttyACM0", "ttyACM0");
        link_at("/dev/ttyUSB1", "second-link-same-port");
        link_at("../..", "dots");
        link_at("../tty USB9", "space");
        snprintf(path, sizeof path, "%s/plain-file", dir);
        write_file(path, "not a link");
        check(boards_list(dir, &l) == 0);
        check(l && strv_length(l) == 2);
        if (l && strv_length(l) == 2) {
                check_streq(l[0], "ttyACM0");
                check_streq(l[1], "ttyUSB1");
        }
        l = strv_free(l);
        check(boards_list(NULL, &l) == -EINVAL);
}

static void test_unit_name(void) {
        char *u = NULL;

        check(boards_unit_name("ttyUSB0", &u) == 0);
        check_streq(u, "kegboard-daemon@ttyUSB0.service");
        free(u);
        check(boards_unit_name("pts/3", &u) == -EINVAL);
        check(boards_unit_name("", &u) == -EINVAL);
        check(boards_unit_name("..", &u) == -EINVAL);
}

int main(void) {
        check(mkdtemp(dir) != NULL);
        test_run(test_list);
        test_run(test_unit_name);
        test_rm_rf(dir);
        return test_result();
}
