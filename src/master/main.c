/* kegbot_master: start, stop, restart and report a configured set of Kegbot programs as background
 * processes, as pycore 1.0 did (programs-and-flags.md §12). No supervision: that is systemd's job. */
#define LOG_COMPONENT "master"

#include <stdio.h>
#include <stdlib.h>

#include "app.h"
#include "apps.h"
#include "flags.h"
#include "log.h"

static const char *arg_master_config = "/etc/kegbot/kegbot_master.cfg";
static const char *arg_logfile_dir = "/var/log/kegbot";
static const char *arg_pidfile_dir = "/run/kegbot";

static const FlagDef master_flags[] = {
        FLAG_STRING("master_config", &arg_master_config, "Master config file."),
        FLAG_STRING("logfile_dir", &arg_logfile_dir,
                    "Directory for app log files; the config variable _flag_logfile_dir."),
        FLAG_STRING("pidfile_dir", &arg_pidfile_dir,
                    "Directory for app pid files; the config variable _flag_pidfile_dir."),
        FLAG_END,
};

static const AppInfo master_info = {
        .name = "kegbot_master",
        .description = "Starts, stops and reports the status of the Kegbot programs listed in the master "
                       "config file, each as a background process. Commands: start, stop, restart, status, "
                       "configtest.",
        .flags = master_flags,
        .positional_args = true,
};

static const char *const commands[] = { "start", "stop", "restart", "status", "configtest" };

static _noreturn_ void usage(const char *argv0) {
        fprintf(stderr, "Usage: %s <start|stop|restart|status|configtest>\n", argv0);
        exit(EXIT_FAILURE);
}

int main(int argc, char **argv) {
        _cleanup_(strv_freep) char **positional = NULL;
        _cleanup_(master_config_freep) MasterConfig *config = NULL;
        const char *command = NULL;
        int r;

        app_init(argc, argv, &master_info, &positional);

        if (!positional || !positional[0] || positional[1])
                usage(argv[0]);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(positional[0], commands[i]))
                        command = commands[i];
        if (!command)
                usage(argv[0]);

        r = master_config_load(arg_master_config, arg_logfile_dir, arg_pidfile_dir, &config);
        if (r < 0) {
                app_finish();
                return EXIT_FAILURE;
        }

        if (streq(command, "configtest"))
                r = master_configtest(config, stdout);
        else if (streq(command, "status"))
                r = master_status(config, stdout);
        else if (streq(command, "start"))
                r = master_start(config);
        else if (streq(command, "stop"))
                r = master_stop(config);
        else {
                /* restart (new): a failed stop does not prevent the start, but either failing fails. */
                r = master_stop(config);
                int k = master_start(config);
                if (r >= 0)
                        r = k;
        }

        app_finish();
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
