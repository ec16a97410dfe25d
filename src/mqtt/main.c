/* kegbot_mqtt: publishes what kegbot_core knows to an MQTT broker, laid out for Home Assistant's
 * discovery (mqtt-home-assistant.md). main() checks the flags, derives the node's identity and
 * hands over to the Manager. */
#include <fcntl.h>
#include <limits.h>
#include <systemd/sd-id128.h>
#include <unistd.h>

#define LOG_COMPONENT "main"
#include "log.h"

#include "app.h"
#include "manager.h"
#include "payload.h"
#include "util-escape.h"
#include "util-io.h"
#include "util-string.h"

/* The application id of kegbot_mqtt for sd_id128_get_machine_app_specific(): the raw machine id
 * never leaves the machine. */
#define NODE_APP_ID SD_ID128_MAKE(61, 9c, cc, 57, c6, 77, 45, ba, a5, 80, aa, d2, 70, dc, fc, b4)

/* Configuration that is missing or cannot be read (a password, a TLS file, the machine id): a
 * restart cannot fix it, so the unit does not restart on this status (RestartPreventExitStatus=). */
#define EXIT_CONFIG 2

static const char *arg_mqtt_host = "localhost";
static int arg_mqtt_port = 0;
static const char *arg_mqtt_username = "";
static const char *arg_mqtt_password_file = "";
static bool arg_mqtt_tls = false;
static const char *arg_mqtt_ca_file = "";
static const char *arg_mqtt_ca_path = "";
static const char *arg_mqtt_cert_file = "";
static const char *arg_mqtt_key_file = "";
static const char *arg_mqtt_node_id = "";
static const char *arg_mqtt_client_id = "";
static const char *arg_mqtt_base = "";
static const char *arg_mqtt_discovery_prefix = "homeassistant";
static const char *arg_mqtt_birth_topic = "homeassistant/status";
static const char *arg_mqtt_discovery = "component";
static int arg_mqtt_state_interval = 60;
static int arg_mqtt_keepalive = 30;
static int arg_mqtt_queue_limit = 256;
static int arg_mqtt_removal_grace = 600;
static bool arg_mqtt_commands = false;
static const char *arg_dbus = "system";
static const char *arg_state_dir = "/var/lib/kegbot-mqtt";

static const FlagDef mqtt_flags[] = {
        FLAG_STRING("mqtt_host", &arg_mqtt_host, "Broker host name or address (a numeric address avoids lookups)."),
        FLAG_INT_RANGE("mqtt_port", &arg_mqtt_port, 0, 65535, "Broker port; 0 = 1883, or 8883 with --mqtt_tls."),
        FLAG_STRING("mqtt_username", &arg_mqtt_username, "Broker user name; empty = connect without credentials."),
        FLAG_STRING("mqtt_password_file", &arg_mqtt_password_file,
                    "Read the broker password from this file (whitespace stripped; empty file = none)."),
        FLAG_BOOL("mqtt_tls", &arg_mqtt_tls,
                  "TLS 1.2 or later; the broker's certificate and host name are always verified."),
        FLAG_STRING("mqtt_ca_file", &arg_mqtt_ca_file,
                    "PEM file of trusted CAs (with --mqtt_tls; without it and --mqtt_ca_path: the system's CAs)."),
        FLAG_STRING("mqtt_ca_path", &arg_mqtt_ca_path, "Directory of hashed PEM CA certificates (with --mqtt_tls)."),
        FLAG_STRING("mqtt_cert_file", &arg_mqtt_cert_file, "Client certificate (PEM); needs --mqtt_key_file."),
        FLAG_STRING("mqtt_key_file", &arg_mqtt_key_file, "Client private key (PEM, not encrypted); needs --mqtt_cert_file."),
        FLAG_STRING("mqtt_node_id", &arg_mqtt_node_id,
                    "The node's name on the broker, [A-Za-z0-9_-]{1,64}; empty = kegbot_ + 8 hex digits derived "
                    "from the machine id."),
        FLAG_STRING("mqtt_client_id", &arg_mqtt_client_id, "MQTT client id; empty = the node id."),
        FLAG_STRING("mqtt_base", &arg_mqtt_base, "Base topic; empty = kegbot/<node id>."),
        FLAG_STRING("mqtt_discovery_prefix", &arg_mqtt_discovery_prefix, "Home Assistant's discovery prefix."),
        FLAG_STRING("mqtt_birth_topic", &arg_mqtt_birth_topic,
                    "Where Home Assistant announces online / offline (its birth message)."),
        FLAG_ENUM("mqtt_discovery", &arg_mqtt_discovery, ((const char *const[]) { "component", "device", "off", NULL }),
                  "Discovery layout: component (one config per entity), device (one per device) or off."),
        FLAG_INT_RANGE("mqtt_state_interval", &arg_mqtt_state_interval, 10, 3600,
                       "Seconds between full republishes of every state topic."),
        FLAG_INT_RANGE("mqtt_keepalive", &arg_mqtt_keepalive, 5, 600, "MQTT keepalive in seconds."),
        FLAG_INT_RANGE("mqtt_queue_limit", &arg_mqtt_queue_limit, 1, 100000,
                       "Events held while the broker is unreachable; the oldest beyond this are dropped."),
        FLAG_INT_RANGE("mqtt_removal_grace", &arg_mqtt_removal_grace, 0, 86400,
                       "Seconds a configured tap may be missing after the core appeared before it is removed "
                       "from Home Assistant."),
        FLAG_BOOL("mqtt_commands", &arg_mqtt_commands, "Accept stop_flow (and clear_quarantine) on <base>/tap/<key>/cmd."),
        FLAG_ENUM("dbus", &arg_dbus, ((const char *const[]) { "system", "session", NULL }),
                  "The bus the core is on: system or session."),
        FLAG_STRING("state_dir", &arg_state_dir, "Directory of the state file (state.json).",
                    .env = "STATE_DIRECTORY", .env_mode = FLAG_ENV_FIRST_ENTRY),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "kegbot_mqtt",
        .description = "Publishes Kegbot's taps, pours, boards and temperatures to an MQTT broker with Home "
                       "Assistant discovery. A D-Bus client of kegbot_core (org.kegbot.Core1).",
        .flags = mqtt_flags,
        .groups = APP_GROUP_API,
        .startup_message = "kegbot_mqtt is starting up.",
};

_noreturn_ static void config_error(const char *format, ...) _printf_(1, 2);
static void config_error(const char *format, ...) {
        va_list ap;
        char *msg;

        va_start(ap, format);
        msg = strdup_vprintf(format, ap);
        va_end(ap);
        log_error("%s", msg ?: "Out of memory");
        free(msg);
        app_finish();
        exit(EXIT_CONFIG);
}

static void check_readable(const char *flag, const char *path, bool directory) {
        _cleanup_(freep) char *e = NULL;
        int fd;

        if (isempty(path))
                return;
        fd = open(path, O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
        if (fd >= 0) {
                close(fd);
                return;
        }
        e = escape_for_log(path);
        config_error("Cannot read --%s %s: %s", flag, e ?: "?", strerror(errno));
}

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_(freep) char *password = NULL, *base = NULL;
        char node_id[16], hostname[HOST_NAME_MAX + 1] = "";
        ManagerConfig c = {};
        DiscoveryMode mode;
        int r;

        app_init(argc, argv, &app_info, NULL);

        if (!arg_mqtt_tls && (!isempty(arg_mqtt_ca_file) || !isempty(arg_mqtt_ca_path) || !isempty(arg_mqtt_cert_file) ||
                              !isempty(arg_mqtt_key_file)))
                app_flag_error("--mqtt_ca_file, --mqtt_ca_path, --mqtt_cert_file and --mqtt_key_file need --mqtt_tls");
        if (isempty(arg_mqtt_cert_file) != isempty(arg_mqtt_key_file))
                app_flag_error("--mqtt_cert_file and --mqtt_key_file go together");
        if (isempty(arg_mqtt_host))
                app_flag_error("--mqtt_host is empty");
        if (!isempty(arg_mqtt_node_id) && !node_id_is_valid(arg_mqtt_node_id))
                app_flag_error("--mqtt_node_id must be 1 to 64 of A-Z a-z 0-9 _ -");
        if (!isempty(arg_mqtt_base) && !topic_root_is_valid(arg_mqtt_base))
                app_flag_error("--mqtt_base is not a valid topic root (1..256 bytes of UTF-8, no + # or NUL, "
                               "no leading or trailing /)");
        if (!topic_root_is_valid(arg_mqtt_discovery_prefix))
                app_flag_error("--mqtt_discovery_prefix is not a valid topic root (1..256 bytes of UTF-8, no + # or "
                               "NUL, no leading or trailing /)");
        if (!topic_root_is_valid(arg_mqtt_birth_topic))
                app_flag_error("--mqtt_birth_topic is not a valid topic (1..256 bytes of UTF-8, no + # or NUL, no "
                               "leading or trailing /)");
        if (discovery_mode_from_string(arg_mqtt_discovery, &mode) < 0)
                app_flag_error("unknown --mqtt_discovery %s", arg_mqtt_discovery);
        if (isempty(arg_state_dir))
                app_flag_error("--state_dir is empty");

        check_readable("mqtt_ca_file", arg_mqtt_ca_file, false);
        check_readable("mqtt_ca_path", arg_mqtt_ca_path, true);
        check_readable("mqtt_cert_file", arg_mqtt_cert_file, false);
        check_readable("mqtt_key_file", arg_mqtt_key_file, false);
        if (!isempty(arg_mqtt_password_file)) {
                r = io_read_secret_file(arg_mqtt_password_file, &password);
                if (r < 0) {
                        _cleanup_(freep) char *e = escape_for_log(arg_mqtt_password_file);
                        config_error("Cannot read --mqtt_password_file %s: %s", e ?: "?", strerror(-r));
                }
        }

        if (isempty(arg_mqtt_node_id)) {
                sd_id128_t id;

                r = sd_id128_get_machine_app_specific(NODE_APP_ID, &id);
                if (r < 0)
                        config_error("Error: cannot derive --mqtt_node_id from /etc/machine-id (%s); set --mqtt_node_id",
                                     strerror(-r));
                node_id_from_app_id(id.bytes, node_id);
                arg_mqtt_node_id = node_id;
        }
        if (isempty(arg_mqtt_base)) {
                base = strdup_printf("kegbot/%s", arg_mqtt_node_id);
                if (!base || !topic_root_is_valid(base))
                        config_error("Cannot build the base topic");
                arg_mqtt_base = base;
        }
        if (isempty(arg_mqtt_client_id))
                arg_mqtt_client_id = arg_mqtt_node_id;
        if (arg_mqtt_port == 0)
                arg_mqtt_port = arg_mqtt_tls ? 8883 : 1883;
        if (gethostname(hostname, sizeof hostname - 1) < 0 || isempty(hostname))
                snprintf(hostname, sizeof hostname, "%s", arg_mqtt_node_id);

        c.settings = (Settings) {
                .node_id = arg_mqtt_node_id,
                .base = arg_mqtt_base,
                .prefix = arg_mqtt_discovery_prefix,
                .discovery = mode,
                .commands = arg_mqtt_commands,
                .keg = !isempty(app_api_url()),
                .hostname = hostname,
                .version = KEGBOT_VERSION,
        };
        c.birth_topic = arg_mqtt_birth_topic;
        c.state_interval = arg_mqtt_state_interval;
        c.queue_limit = arg_mqtt_queue_limit;
        c.removal_grace = arg_mqtt_removal_grace;
        c.session_bus = streq(arg_dbus, "session");
        c.state_dir = arg_state_dir;
        c.api_url = app_api_url();
        c.api_key = app_api_key();
        c.api_timeout = app_api_timeout();

        _cleanup_(freep) char *status_topic = topic_status(&c.settings);
        if (!status_topic)
                config_error("Out of memory");
        c.broker = (BrokerConfig) {
                .host = arg_mqtt_host,
                .port = arg_mqtt_port,
                .client_id = arg_mqtt_client_id,
                .username = arg_mqtt_username,
                .password = password,
                .tls = arg_mqtt_tls,
                .ca_file = arg_mqtt_ca_file,
                .ca_path = arg_mqtt_ca_path,
                .cert_file = arg_mqtt_cert_file,
                .key_file = arg_mqtt_key_file,
                .keepalive = arg_mqtt_keepalive,
                .will_topic = status_topic,
        };

        log_info("Node %s: base %s, discovery %s under %s, broker %s:%d%s", arg_mqtt_node_id, arg_mqtt_base,
                 arg_mqtt_discovery, arg_mqtt_discovery_prefix, arg_mqtt_host, arg_mqtt_port,
                 arg_mqtt_tls ? ", TLS" : "");

        r = manager_new(&m, &c);
        if (r >= 0)
                r = manager_run(m);
        m = manager_free(m);
        app_finish();
        return r < 0 ? 1 : 0;
}
