/* Program start-up: see app.h. Owns the common and shared flag groups. */
#include <stdarg.h>

#include "app.h"
#include "log.h"
#include "util-io.h"
#include "util-string.h"

#define DEFAULT_LOGFORMAT "%(asctime)s %(levelname)-8s (%(name)s) %(message)s"

/* Common flags (programs-and-flags.md section 2). */
static bool arg_daemon = false;
static const char *arg_pidfile = "";
static const char *arg_logformat = DEFAULT_LOGFORMAT;
static const char *arg_logfile = "";
static bool arg_log_to_file = false;
static bool arg_rotate_logs = true;
static int arg_maximum_log_files = 7;
static bool arg_log_to_stdout = true;
static bool arg_verbose = false;

static const FlagDef app_flags[] = {
        FLAG_BOOL("daemon", &arg_daemon, "Run as a background daemon."),
        FLAG_STRING("pidfile", &arg_pidfile,
                    "Write the process id to this file; refuse to start if the process named in an "
                    "existing file is alive."),
        FLAG_STRING("logformat", &arg_logformat, "Log line format."),
        FLAG_STRING("logfile", &arg_logfile, "Log file path (with --log_to_file)."),
        FLAG_BOOL("log_to_file", &arg_log_to_file, "Log to --logfile."),
        FLAG_BOOL("rotate_logs", &arg_rotate_logs, "With --log_to_file: rotate the log file at local midnight."),
        FLAG_INT_RANGE("maximum_log_files", &arg_maximum_log_files, 0, 10000,
                     "Number of rotated log files to keep (0 = keep all)."),
        FLAG_BOOL("log_to_stdout", &arg_log_to_stdout,
                  "Log to the console (stderr); off automatically with --daemon."),
        FLAG_BOOL("verbose", &arg_verbose, "Log debugging messages (DEBUG instead of INFO).",
                  .env = "VERBOSE"),
        FLAG_END,
};

/* Command-line clients have only --verbose of the common flags. */
static const FlagDef client_flags[] = {
        FLAG_BOOL("verbose", &arg_verbose, "Log debugging messages (DEBUG lines on stderr).", .env = "VERBOSE"),
        FLAG_END,
};

/* kegnet clients (section 2.1). */
static const char *arg_kb_core_addr = "127.0.0.1:9805";

static const FlagDef kegnet_flags[] = {
        FLAG_STRING("kb_core_addr", &arg_kb_core_addr, "Address of the Kegbot Core, host:port or port."),
        FLAG_END,
};

/* Kegbot Server API. */
static const char *arg_api_url = "";
static const char *arg_api_key = "";
static const char *arg_api_key_file = "";
static double arg_api_timeout = 10.0;
static char *api_key_from_file;

static const FlagDef api_flags[] = {
        FLAG_STRING("api_url", &arg_api_url, "Base URL of the Kegbot Server API; empty = no server.",
                    .env = "KEGBOT_API_URL"),
        FLAG_STRING("api_key", &arg_api_key, "Kegbot Server API key.", .env = "KEGBOT_API_KEY"),
        FLAG_STRING("api_key_file", &arg_api_key_file,
                    "Read the API key from this file (whitespace stripped); wins over --api_key."),
        FLAG_DOUBLE_RANGE("api_timeout", &arg_api_timeout, 0, 3600, "Timeout of a whole API request, in seconds.",
                          .dmin_exclusive = true),
        FLAG_END,
};

/* Kegboard serial port. */
static const char *arg_kegboard_device = "";
static const char *arg_kegboard_device_path = "";
static int arg_kegboard_speed = 115200;

static const FlagDef kegboard_flags[] = {
        FLAG_STRING("kegboard_device", &arg_kegboard_device,
                    "Serial device of the Kegboard; empty = the first port udev nominates as a Kegboard."),
        FLAG_STRING("kegboard_device_path", &arg_kegboard_device_path,
                    "Same as --kegboard_device (pycore 1.1+ name); wins if set."),
        FLAG_INT_RANGE("kegboard_speed", &arg_kegboard_speed, 50, 4000000, "Serial baud rate (1200 is refused)."),
        FLAG_END,
};

static const char *argv0 = "kegbot";
static bool app_initialized;

_noreturn_ static void usage_error(const char *message) {
        fflush(stdout);
        fprintf(stderr, "Usage: %s [flags]\n\nError: %s\n", argv0, message ?: "out of memory");
        fflush(stderr);
        exit(EXIT_FAILURE);
}

void app_flag_error(const char *format, ...) {
        va_list ap;
        char *m;
        va_start(ap, format);
        m = strdup_vprintf(format, ap);
        va_end(ap);
        usage_error(m);
}

static void app_atexit(void) {
        app_finish();
}

int app_init(int argc, char **argv, const AppInfo *info, char ***ret_positional) {
        _cleanup_(strv_freep) char **positional = NULL;
        _cleanup_(freep) char *error = NULL;
        FlagGroup groups[5];
        size_t n = 0;
        int r;

        if (!info || isempty(info->name) || (info->positional_args && !ret_positional)) {
                fprintf(stderr, "app_init() called with an invalid AppInfo\n");
                abort();
        }
        if (app_initialized) {
                fprintf(stderr, "app_init() called twice\n");
                abort();
        }
        app_initialized = true;
        if (argc > 0 && argv && !isempty(argv[0]))
                argv0 = argv[0];

        /* "<program>.log" is the default the help shows; the string lives as long as the process. */
        static char *default_logfile;
        if (asprintf(&default_logfile, "%s.log", info->name) < 0)
                usage_error(NULL);
        arg_logfile = default_logfile;

        groups[n++] = (FlagGroup) { info->name, info->flags };
        if (info->groups & APP_GROUP_KEGNET)
                groups[n++] = (FlagGroup) { "kegnet", kegnet_flags };
        if (info->groups & APP_GROUP_API)
                groups[n++] = (FlagGroup) { "api", api_flags };
        if (info->groups & APP_GROUP_KEGBOARD)
                groups[n++] = (FlagGroup) { "kegboard", kegboard_flags };
        groups[n++] = (FlagGroup) { "app", info->client ? client_flags : app_flags };

        r = flags_apply_env(groups, n, &error);
        if (r < 0)
                usage_error(error);
        if (info->interspersed_flags)
                r = flags_parse_interspersed(groups, n, argc, argv, &positional, &error);
        else
                r = flags_parse(groups, n, argc, argv, &positional, &error);
        if (r < 0)
                usage_error(error);
        if (r == FLAGS_HELP || r == FLAGS_HELPSHORT) {
                flags_print_help(stdout, info->name, info->description, groups, n, r == FLAGS_HELPSHORT);
                exit(EXIT_FAILURE);
        }
        if (!info->positional_args && positional && positional[0])
                app_flag_error("unexpected argument '%s'", positional[0]);
        if ((info->groups & APP_GROUP_KEGBOARD) && arg_kegboard_speed == 1200)
                app_flag_error("flag --kegboard_speed=1200: 1200 baud is refused "
                               "(closing the port would reboot 32u4 boards into their bootloader)");

        LogConfig cfg = {
                .program = info->name,
                .format = arg_logformat,
                .to_console = arg_log_to_stdout,
                .to_file = arg_log_to_file,
                .logfile = arg_logfile,
                .rotate = arg_rotate_logs,
                .max_files = arg_maximum_log_files,
                .verbose = arg_verbose,
        };
        r = log_setup(&cfg, &error);
        if (r == -EINVAL)
                usage_error(error);
        if (r < 0) {
                log_error_errno(r, "Failed to set up logging: %s", error ?: "out of memory");
                exit(EXIT_FAILURE);
        }
        if (atexit(app_atexit) != 0) {
                log_error("Failed to register the exit handler.");
                exit(EXIT_FAILURE);
        }
        if (info->startup_message)
                log_info("%s", info->startup_message);

        /* Checked before going to the background, so a conflict fails the command that was run. */
        if (!isempty(arg_pidfile) && daemon_pidfile_check(arg_pidfile) < 0)
                exit(EXIT_FAILURE);
        if (arg_daemon) {
                if (daemon_daemonize(arg_pidfile) < 0)
                        exit(EXIT_FAILURE);
        } else if (!isempty(arg_pidfile) && daemon_pidfile_write(arg_pidfile) < 0)
                exit(EXIT_FAILURE);

        if ((info->groups & APP_GROUP_API) && !isempty(arg_api_key_file)) {
                r = io_read_secret_file(arg_api_key_file, &api_key_from_file);
                if (r < 0) {
                        log_error_errno(r, "Failed to read --api_key_file %s: %m", arg_api_key_file);
                        exit(EXIT_FAILURE);
                }
        }

        if (ret_positional)
                *ret_positional = TAKE_PTR(positional);
        return 0;
}

void app_finish(void) {
        daemon_pidfile_remove();
}

bool app_verbose(void) {
        return arg_verbose;
}

bool app_daemon(void) {
        return arg_daemon;
}

const char *app_pidfile(void) {
        return arg_pidfile ?: "";
}

const char *app_kb_core_addr(void) {
        return arg_kb_core_addr ?: "";
}

const char *app_api_url(void) {
        return arg_api_url ?: "";
}

const char *app_api_key(void) {
        return api_key_from_file ?: arg_api_key ?: "";
}

double app_api_timeout(void) {
        return arg_api_timeout;
}

const char *app_kegboard_device(void) {
        if (!isempty(arg_kegboard_device_path))
                return arg_kegboard_device_path;
        return arg_kegboard_device ?: "";
}

int app_kegboard_speed(void) {
        return arg_kegboard_speed;
}
