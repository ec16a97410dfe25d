/* kegboard_daemon: bridges one Kegboard (KBSP over serial) to kegbot_core over kegnet. */

#include <limits.h>

#include "app.h"
#include "boards.h"
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
                  "plugged in (the links udev keeps in " BOARDS_DIR "), then exit (kegbot-boards.service)."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "kegboard_daemon",
        .description = "Bridges one Kegboard (flow meters, temperature sensors, auth tokens and relays, "
                       "spoken to over USB serial) to kegbot_core over kegnet.",
        .flags = flags,
        .groups = APP_GROUP_KEGNET | APP_GROUP_KEGBOARD,
};

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r, status;

        app_init(argc, argv, &app_info, NULL);

        if (arg_start_boards) {
                _cleanup_(strv_freep) char **ttys = NULL;

                r = boards_list(BOARDS_DIR, &ttys);
                if (r < 0)
                        log_error_errno(r, "Cannot read %s: %m", BOARDS_DIR);
                else
                        r = boards_start(ttys);
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
