/* kegboard_daemon: bridges one Kegboard (KBSP over serial) to kegbot_core over kegnet. */

#define LOG_COMPONENT "kegboard"

#include <errno.h>
#include <limits.h>

#include "app.h"
#include "boards.h"
#include "device-watch.h"
#include "kegnet.h"
#include "log.h"
#include "manager.h"
#include "util-strv.h"

static const char *arg_kegboard_name = "";
static const char *arg_tap_name = KEGNET_ALL_TAPS;
static double arg_probe_seconds = 3.0;
static int arg_hello_timeout = 30;
static int arg_required_firmware_version = 0;
static bool arg_show_messages = false;
static bool arg_start_boards = false;
static const char *arg_runtime_dir = "";

static const FlagDef flags[] = {
        FLAG_STRING("kegboard_name", &arg_kegboard_name,
                    "Board name; empty = derive it from the board's serial number."),
        FLAG_STRING("tap_name", &arg_tap_name, "meter_name put into TokenAuthEvents."),
        FLAG_DOUBLE_RANGE("probe_seconds", &arg_probe_seconds, 0, 3600,
                        "Seconds to wait passively for a first KBSP frame before pinging."),
        FLAG_INT_RANGE("hello_timeout", &arg_hello_timeout, 0, 86400,
                     "Seconds without a hello after which a firmware >= 18 board counts as hung (0 = never)."),
        FLAG_INT_RANGE("required_firmware_version", &arg_required_firmware_version, 0, 65535,
                     "Refuse boards reporting a lower firmware version (0 = accept all)."),
        FLAG_BOOL("show_messages", &arg_show_messages, "Log every frame at INFO (otherwise at DEBUG)."),
        FLAG_STRING("runtime_dir", &arg_runtime_dir,
                    "Directory (tmpfs) where the board's newest readings are kept, so that a restarted daemon "
                    "can send them again; empty = they are not kept.",
                    .env = "RUNTIME_DIRECTORY", .env_mode = FLAG_ENV_FIRST_ENTRY),
        FLAG_BOOL("start_boards", &arg_start_boards,
                  "Do not bridge a board: have systemd start kegboard-daemon@<tty>.service for every board "
                  "plugged in (the links udev keeps in " BOARDS_DIR ") and rfid-reader@<node>.service for "
                  "every RFID reader udev nominated (KEGBOT_RFID=1), then exit (kegbot-boards.service)."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "kegboard_daemon",
        .description = "Bridges one Kegboard (flow meters, temperature sensors, auth tokens and relays, "
                       "spoken to over USB serial) to kegbot_core over kegnet.",
        .flags = flags,
        .groups = APP_GROUP_KEGNET | APP_GROUP_KEGBOARD,
};

/* --start_boards: one start request per board and per RFID reader plugged in. What cannot be read
 * is logged and fails the run (the unit tries again), after the starts of what could be. */
static int start_boards(void) {
        _cleanup_(udev_unrefp) struct udev *udev = NULL;
        _cleanup_(strv_freep) char **ttys = NULL, **units = NULL;
        size_t n = 0, n_boards;
        int r, ret = 0;

        r = boards_list(BOARDS_DIR, &ttys);
        if (r < 0)
                ret = log_error_errno(r, "Cannot read %s: %m", BOARDS_DIR);
        STRV_FOREACH(t, ttys) {
                char *unit = NULL;

                r = boards_unit_name(*t, &unit);
                if (r >= 0)
                        r = strv_push(&units, &n, unit);
                if (r < 0)
                        return log_error_errno(r, "%m");
        }
        n_boards = n;
        if (n_boards == 0 && ret == 0)
                log_info("No Kegboard is plugged in (%s is empty)", BOARDS_DIR);

        udev = udev_new();
        r = udev ? boards_list_readers(udev, &units, &n) : -ENOMEM;
        if (r < 0) {
                log_error_errno(r, "Cannot list the RFID readers udev knows: %m");
                if (ret == 0)
                        ret = r;
        } else if (n == n_boards)
                log_info("No RFID reader is plugged in (no device with KEGBOT_RFID=1 wants an "
                         BOARDS_READER_TEMPLATE " unit)");

        r = boards_start(units);
        return ret < 0 ? ret : r;
}

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r, status;

        app_init(argc, argv, &app_info, NULL);

        if (arg_start_boards) {
                r = start_boards();
                app_finish();
                return r < 0 ? 1 : 0;
        }

        const ManagerConfig config = {
                .board = {
                        .speed = app_kegboard_speed(),
                        .name = arg_kegboard_name,
                        .probe_usec = (uint64_t) (arg_probe_seconds * USEC_PER_SEC),
                        .hello_timeout_usec = (uint64_t) arg_hello_timeout * USEC_PER_SEC,
                        .required_firmware_version = (unsigned) arg_required_firmware_version,
                        .show_messages = arg_show_messages,
                },
                .kb_core_addr = app_kb_core_addr(),
                .tap_name = arg_tap_name,
                .runtime_dir = arg_runtime_dir,
        };

        r = manager_new(&m, &config);
        if (r < 0) {
                app_finish();
                return 1;
        }

        status = manager_run(m, app_kegboard_device());
        m = manager_free(m);
        app_finish();
        return status;
}
