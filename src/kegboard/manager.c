/* kegboard_daemon's policy: KBSP messages -> kegnet, relay events -> the board, orderly stop.
 * See manager.h and programs-and-flags.md section 5. */

#define LOG_COMPONENT "kegboard"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>

#include "daemon.h"
#include "device-watch.h"
#include "json-writer.h"
#include "kegboard-port.h"
#include "kegnet-client.h"
#include "log.h"
#include "manager.h"
#include "util-escape.h"
#include "util-event.h"
#include "util-io.h"
#include "util-string.h"
#include "util-utf8.h"

/* Section 5 item 9: the kegnet flush on the way out is bounded. */
#define STOP_TIMEOUT_USEC USEC_PER_SEC
#define NAME_MAX_LEN 512
#define METERS_MAX 8
#define READINGS_FILE_MAX 4096
/* Two estimates of the board's boot moment (now - uptime, on CLOCK_BOOTTIME) this close are the
 * same boot: a board takes longer than this to boot twice. */
#define SAME_BOOT_MS 500

/* The newest reading of one of the board's meters since its last reset. */
typedef struct MeterReading {
        char name[KBSP_STRING_MAX];     /* "flow0" */
        uint32_t reading;
} MeterReading;

struct Manager {
        sd_event *event;
        Board *board;                   /* NULL while waiting for a port */
        BoardConfig board_config;
        DeviceWatch *ports;             /* no --kegboard_device: udev finds the port */
        KegnetClient *kegnet;
        sd_event_source *stop_timer;
        char *tap_name;

        /* From the latest hello. */
        bool identified;
        char *serial;                   /* as sent to the core (valid UTF-8), NULL = none yet */
        uint16_t firmware_version;
        bool has_uptime;
        uint64_t uptime_ms;

        /* A board_reset event was sent but may not have reached the core yet. */
        bool reset_unconfirmed;

        /* Sent again right after every reconnect (kegnet-protocol.md section 6.2): a core that
         * restarted learns the counters at once, not at the next pour. */
        MeterReading readings[METERS_MAX];
        size_t n_readings;

        /* They are also kept in <runtime_dir>/<tty>.readings, with the board's boot moment, so that
         * a restarted daemon knows them too (the board reports a meter only when it changes). */
        int runtime_fd;
        char *readings_file;
        bool has_boot;
        uint64_t boot_ms;               /* CLOCK_BOOTTIME ms of the board's boot, from a hello */

        bool stopping;
        bool kegnet_pending;            /* waiting for the kegnet flush to finish */
        int exit_status;
};

static void manager_update_status(Manager *m) {
        const char *core = kegnet_client_is_connected(m->kegnet) ? "connected" : "disconnected";

        if (!m->board)
                (void) daemon_notify_status("Waiting for a Kegboard to be plugged in; core %s", core);
        else if (m->identified)
                (void) daemon_notify_status("%s (firmware %u) on %s; core %s", board_name(m->board),
                                            (unsigned) m->firmware_version, board_device(m->board), core);
        else
                (void) daemon_notify_status("Waiting for a Kegboard on %s; core %s", board_device(m->board), core);
}

static void manager_send(Manager *m, const KegnetMessage *msg) {
        int r = kegnet_client_send(m->kegnet, msg);
        /* After the stop the client takes nothing more; that is expected, not an error. */
        if (r < 0 && r != -ESHUTDOWN)
                log_warning_errno(r, "Failed to send %s: %m", kegnet_kind_to_string(msg->kind));
}

static void send_controller_connected(Manager *m, bool board_reset) {
        KegnetMessage msg = { .kind = KEGNET_CONTROLLER_CONNECTED_EVENT };
        KegnetControllerConnectedEvent *e = &msg.controller_connected_event;

        e->controller_name = board_name(m->board);
        e->serial_number = m->serial;
        e->has_firmware_version = true;
        e->firmware_version = m->firmware_version;
        e->has_uptime_ms = m->has_uptime;
        e->uptime_ms = m->uptime_ms;
        e->board_reset = board_reset;
        e->device = board_device(m->board);
        if (board_reset)
                m->reset_unconfirmed = true;
        manager_send(m, &msg);
}

static void remember_reading(Manager *m, const char *meter, uint32_t reading) {
        size_t i;

        for (i = 0; i < m->n_readings; i++)
                if (streq(m->readings[i].name, meter))
                        break;
        if (i == m->n_readings) {
                if (m->n_readings >= METERS_MAX)
                        return;
                snprintf(m->readings[i].name, sizeof m->readings[i].name, "%s", meter);
                m->n_readings++;
        }
        m->readings[i].reading = reading;
}

/* The counters restarted: what we remember belongs to the old ones. */
static void forget_readings(Manager *m) {
        m->n_readings = 0;
}

static uint64_t boottime_ms(Manager *m) {
        uint64_t t = 0;
        (void) sd_event_now(m->event, CLOCK_BOOTTIME, &t);
        return t / USEC_PER_MSEC;
}

/* The board's boot moment from a hello's uptime. */
static void note_boot(Manager *m, uint64_t uptime_ms) {
        uint64_t now = boottime_ms(m);

        m->has_boot = now >= uptime_ms;
        m->boot_ms = now - MIN(now, uptime_ms);
}

static void save_readings(Manager *m) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *text = NULL;
        size_t len = 0;
        int r;

        if (m->runtime_fd < 0 || !m->has_boot)
                return;
        json_writer_object_begin(&w);
        json_writer_field_string(&w, "serial_number", m->serial);
        json_writer_field_uint(&w, "boot_ms", m->boot_ms);
        json_writer_key(&w, "meters");
        json_writer_object_begin(&w);
        for (size_t i = 0; i < m->n_readings; i++)
                json_writer_field_uint(&w, m->readings[i].name, m->readings[i].reading);
        json_writer_object_end(&w);
        json_writer_object_end(&w);
        r = json_writer_finish_with(&w, "\n", &text, &len);
        if (r >= 0)
                r = io_write_file_atomic(m->runtime_fd, m->readings_file, text, len, 0600);
        if (r < 0)
                log_debug_errno(r, "Cannot write %s: %m", m->readings_file);
}

/* A restarted daemon: the readings an earlier instance saw, if they are of this very boot of the
 * board (its serial number, and the same boot moment). */
static void load_readings(Manager *m) {
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) char *buf = NULL;
        json_t *root, *serial, *boot, *meters, *v;
        const char *key;
        size_t len = 0;

        if (m->runtime_fd < 0 || !m->has_boot)
                return;
        fd = openat(m->runtime_fd, m->readings_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || io_read_all(fd, READINGS_FILE_MAX, &buf, &len) < 0)
                return;
        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
        serial = json_object_get(root, "serial_number");
        boot = json_object_get(root, "boot_ms");
        meters = json_object_get(root, "meters");
        if (json_is_integer(boot) && json_is_object(meters) &&
            (json_is_null(serial) ? !m->serial : json_is_string(serial) && m->serial &&
                                                      streq(json_string_value(serial), m->serial))) {
                uint64_t b = (uint64_t) json_integer_value(boot);
                if ((b > m->boot_ms ? b - m->boot_ms : m->boot_ms - b) <= SAME_BOOT_MS) {
                        json_object_foreach(meters, key, v)
                                if (json_is_integer(v) && json_integer_value(v) >= 0 &&
                                    json_integer_value(v) <= (json_int_t) UINT32_MAX && strlen(key) < KBSP_STRING_MAX)
                                        remember_reading(m, key, (uint32_t) json_integer_value(v));
                        log_info("%s: readings of this boot of the board from before the restart: %zu meters",
                                 board_name(m->board), m->n_readings);
                } else
                        log_debug("%s: %s is of another boot of the board", board_name(m->board), m->readings_file);
        }
        json_decref(root);
}

/* ---- stopping ---- */

static void manager_check_done(Manager *m) {
        if (!m->stopping || m->kegnet_pending || (m->board && !board_commands_drained(m->board)))
                return;
        (void) sd_event_exit(m->event, m->exit_status);
}

static void on_kegnet_drained(KegnetClient *c, bool flushed, void *userdata) {
        Manager *m = userdata;

        m->kegnet_pending = false;
        manager_check_done(m);
}

static int stop_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (m->kegnet_pending)
                log_debug("kegnet flush not finished in time, exiting anyway");
        (void) sd_event_exit(m->event, m->exit_status);
        return 0;
}

static void manager_stop(Manager *m, int exit_status) {
        uint64_t now = 0;
        int r;

        if (m->stopping) {
                /* A second signal does not wait for anything. */
                (void) sd_event_exit(m->event, m->exit_status);
                return;
        }
        m->stopping = true;
        m->exit_status = exit_status;
        (void) daemon_notify_stopping();

        /* Set before anything below can report "drained" and end the loop too early. */
        m->kegnet_pending = true;
        device_watch_stop(m->ports);
        if (m->board)
                board_relays_off(m->board);

        /* Within the deadline, a connection attempt may still come through (a replay file can be
         * read before the first connect completes): the outbox goes out then. */
        r = kegnet_client_drain(m->kegnet, STOP_TIMEOUT_USEC, on_kegnet_drained, m);
        if (r < 0) {
                log_warning_errno(r, "Failed to flush kegnet: %m");
                m->kegnet_pending = false;
        }

        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        r = event_timer_arm(m->event, &m->stop_timer, now + STOP_TIMEOUT_USEC, USEC_PER_MSEC, stop_timer_handler, m);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the stop timer: %m");
                (void) sd_event_exit(m->event, exit_status);
                return;
        }
        manager_check_done(m);
}

static void on_stop_signal(void *userdata) {
        manager_stop(userdata, 0);
}

/* ---- the board side ---- */

static void on_board_ready(Board *b, void *userdata) {
        (void) daemon_notify_ready("Kegboard protocol seen on %s, waiting for hello", board_device(b));
}

/* kegnet carries UTF-8 only. A serial that is not (an EEPROM never programmed reads 0xFF) travels
 * escaped, so that the board's announcements, and with them its reset notices, still reach the core. */
static char *serial_for_kegnet(const char *raw) {
        return utf8_is_valid(raw) ? strdup(raw) : escape_for_log(raw);
}

static void remember_hello(Manager *m, const KbspHello *h) {
        m->firmware_version = h->firmware_version;
        if (h->has_serial_number) {
                char *s = serial_for_kegnet(h->serial_number);
                if (!s) {
                        log_error("Out of memory keeping the board's serial number");
                        return;
                }
                if (!utf8_is_valid(h->serial_number) && !streq_ptr(m->serial, s))
                        log_warning("%s: the board's serial number is not valid UTF-8; announcing it as '%s'",
                                    board_name(m->board), s);
                free(m->serial);
                m->serial = s;
        }
}

static bool hello_uptime(const KbspHello *h, uint64_t *ret) {
        if (!h->has_uptime_ms)
                return false;
        *ret = (uint64_t) (h->has_uptime_days ? h->uptime_days : 0) * UINT64_C(86400000) + h->uptime_ms;
        return true;
}

static void requeue_readings(Manager *m);

static void on_board_identified(Board *b, const KbspHello *h, void *userdata) {
        Manager *m = userdata;
        uint64_t uptime = 0;

        m->identified = true;
        remember_hello(m, h);
        m->has_uptime = hello_uptime(h, &uptime);
        m->uptime_ms = m->has_uptime ? uptime : 0;
        forget_readings(m);

        /* Section 5.1 (a): the first hello; a boot hello means the counters just restarted. */
        send_controller_connected(m, m->has_uptime && uptime == 0);
        manager_update_status(m);

        if (m->has_uptime) {
                note_boot(m, uptime);
                if (uptime > 0) {
                        load_readings(m);
                        /* The core may have restarted while this daemon was down, too. */
                        requeue_readings(m);
                }
                save_readings(m);
        }
}

static void handle_hello(Manager *m, const KbspHello *h) {
        const char *name = board_name(m->board);
        uint64_t uptime;

        if (h->has_serial_number && m->serial) {
                _cleanup_(freep) char *s = serial_for_kegnet(h->serial_number);
                if (s && !streq(s, m->serial))
                        log_warning("%s: serial number changed from '%s' to '%s'; keeping the name %s",
                                    name, m->serial, s, name);
        }
        remember_hello(m, h);

        if (!hello_uptime(h, &uptime))
                return;

        if (uptime == 0) {
                log_info("%s: board reset (boot hello)", name);
                m->has_uptime = true;
                m->uptime_ms = 0;
                forget_readings(m);
                note_boot(m, 0);
                save_readings(m);
                send_controller_connected(m, true);
                return;
        }
        if (m->has_uptime && uptime < m->uptime_ms) {
                log_warning("Board reset detected (uptime went backwards)");
                forget_readings(m);
                note_boot(m, uptime);
                save_readings(m);
        }
        m->has_uptime = true;
        m->uptime_ms = uptime;
}

/* "relay<N>" with a single digit 0-5, else -1. */
static int output_index(const char *output_name) {
        const char *p = startswith(output_name, "relay");

        if (!p || p[0] < '0' || p[0] >= '0' + KBSP_MAX_OUTPUTS || p[1] != '\0')
                return -1;
        return p[0] - '0';
}

static void handle_output_status(Manager *m, const KbspOutputStatus *o) {
        const char *name = board_name(m->board);
        int id = output_index(o->output_name);

        log_info("%s: %s is now %s", name, o->output_name, o->output_reading ? "on" : "off");
        if (!o->output_reading && id >= 0 && board_relay_wanted_on(m->board, (unsigned) id))
                log_warning("%s: %s was switched off by the board (relay watchdog) while the core still wants it on",
                            name, o->output_name);
}

static void on_board_message(Board *b, const KbspMessage *km, void *userdata) {
        Manager *m = userdata;
        const char *board = board_name(b);
        char port[NAME_MAX_LEN];
        KegnetMessage msg = {};

        switch (km->message_id) {
        case KBSP_MSG_HELLO:
                handle_hello(m, &km->hello);
                return;

        case KBSP_MSG_METER_STATUS:
                if ((size_t) kbsp_port_name(port, sizeof port, board, km->meter_status.meter_name) >= sizeof port) {
                        log_warning("%s: meter name too long, reading dropped", board);
                        return;
                }
                msg.kind = KEGNET_METER_UPDATE;
                msg.meter_update.meter_name = port;
                msg.meter_update.reading = km->meter_status.meter_reading;
                remember_reading(m, km->meter_status.meter_name, km->meter_status.meter_reading);
                save_readings(m);
                break;

        case KBSP_MSG_TEMPERATURE_READING:
                if ((size_t) kbsp_port_name(port, sizeof port, board,
                                            km->temperature_reading.sensor_name) >= sizeof port) {
                        log_warning("%s: sensor name too long, reading dropped", board);
                        return;
                }
                msg.kind = KEGNET_THERMO_EVENT;
                msg.thermo_event.sensor_name = port;
                msg.thermo_event.sensor_value = kbsp_temperature_c(km->temperature_reading.sensor_reading);
                break;

        case KBSP_MSG_AUTH_TOKEN: {
                const KbspAuthToken *t = &km->auth_token;
                char token[2 * KBSP_MAX_PAYLOAD + 1];

                kbsp_token_to_string(t->token, t->token_len, token);
                msg.kind = KEGNET_TOKEN_AUTH_EVENT;
                msg.token_auth_event.meter_name = m->tap_name;
                msg.token_auth_event.auth_device_name = kbsp_auth_device_name(t->device);
                msg.token_auth_event.token_value = token;
                msg.token_auth_event.status = t->status ? KEGNET_TOKEN_ADDED : KEGNET_TOKEN_REMOVED;
                /* The message borrows 'token': send before it goes out of scope. */
                manager_send(m, &msg);
                return;
        }

        case KBSP_MSG_OUTPUT_STATUS:
                handle_output_status(m, &km->output_status);
                return;

        default:
                log_debug("%s: ignoring %s message (id 0x%02x)", board,
                          kbsp_message_name(km->message_id) ?: "unknown", (unsigned) km->message_id);
                return;
        }

        manager_send(m, &msg);
}

static void on_board_finished(Board *b, int exit_status, void *userdata) {
        Manager *m = userdata;

        /* The port failing while we switch relays off on the way out changes nothing. */
        if (m->stopping)
                manager_check_done(m);
        else
                manager_stop(m, exit_status);
}

static void on_board_drained(Board *b, void *userdata) {
        manager_check_done(userdata);
}

/* ---- the core side ---- */

static void on_kegnet_connected(KegnetClient *c, void *userdata) {
        Manager *m = userdata;

        /* Section 5.1 (c): announce the board before the outbox goes out. A reset that is still
         * queued travels in the outbox in its place among the readings; repeat it here only if
         * it was lost (dropped from a full outbox). */
        if (m->board && m->identified)
                send_controller_connected(m, m->reset_unconfirmed &&
                                          !kegnet_client_reset_pending(c, board_name(m->board)));
        manager_update_status(m);
}

/* The newest reading of every meter, sent again: when the connection dropped (the core may have
 * gone away before it made the readings durable: they go into the outbox, ahead of what comes
 * later, and out on reconnect; a reading still queued is replaced in place, and readings forgotten
 * at a board reset are not repeated, so the order around a reset stays right), and when a restarted
 * daemon found the readings of this boot of the board (the core may have restarted meanwhile). */
static void requeue_readings(Manager *m) {
        const char *board = m->board ? board_name(m->board) : NULL;
        char port[NAME_MAX_LEN];

        if (!board)
                return;
        for (size_t i = 0; i < m->n_readings; i++) {
                if ((size_t) kbsp_port_name(port, sizeof port, board, m->readings[i].name) >= sizeof port)
                        continue;
                manager_send(m, &(KegnetMessage) {
                        .kind = KEGNET_METER_UPDATE,
                        .meter_update.meter_name = port,
                        .meter_update.reading = m->readings[i].reading,
                });
        }
}

static void on_kegnet_disconnected(KegnetClient *c, int error, void *userdata) {
        Manager *m = userdata;

        if (!m->stopping)
                requeue_readings(m);
        manager_update_status(m);
}

static void on_kegnet_flushed(KegnetClient *c, void *userdata) {
        Manager *m = userdata;

        if (kegnet_client_is_flushed(c))
                m->reset_unconfirmed = false;
}

static void handle_relay_event(Manager *m, const KegnetSetRelayOutputEvent *e) {
        const char *name = m->board ? board_name(m->board) : NULL;
        unsigned id;
        int r;

        if (m->stopping || !name) {
                log_debug("Ignoring SetRelayOutputEvent for %s: %s", e->output_name,
                          m->stopping ? "stopping" : "board not identified yet");
                return;
        }
        r = kbsp_relay_parse(e->output_name, name, &id);
        if (r == 0) {
                log_debug("Ignoring SetRelayOutputEvent for another board's relay %s", e->output_name);
                return;
        }
        if (r < 0) {
                log_error("SetRelayOutputEvent for %s: this board has no such relay (relay0..relay%d); ignored",
                          e->output_name, KBSP_MAX_OUTPUTS - 1);
                return;
        }
        r = board_set_relay(m->board, id, e->output_mode == KEGNET_OUTPUT_ENABLED);
        if (r < 0)
                log_debug_errno(r, "Cannot set %s: %m", e->output_name);
}

static void on_kegnet_message(KegnetClient *c, const KegnetMessage *msg, void *userdata) {
        Manager *m = userdata;

        if (msg->kind == KEGNET_SET_RELAY_OUTPUT_EVENT)
                handle_relay_event(m, &msg->set_relay_output_event);
}

/* ---- the port ---- */

static const BoardCallbacks board_callbacks = {
        .ready = on_board_ready,
        .identified = on_board_identified,
        .message = on_board_message,
        .finished = on_board_finished,
};

static int manager_start_board(Manager *m, const char *device) {
        BoardConfig c = m->board_config;
        int r;

        c.device = device;
        if (m->runtime_fd >= 0) {
                const char *base = strrchr(device, '/');

                free(m->readings_file);
                m->readings_file = strdup_printf("%s.readings", base ? base + 1 : device);
                if (!m->readings_file)
                        return log_error_errno(-ENOMEM, "%m");
        }
        r = board_new(&m->board, m->event, &c, &board_callbacks, m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the board: %m");
        board_set_drained_callback(m->board, on_board_drained);
        r = board_start(m->board);
        manager_update_status(m);
        return r;
}

static void on_port_event(DeviceWatch *w, DeviceAction action, struct udev_device *d, void *userdata) {
        Manager *m = userdata;
        KegboardPortInfo info;

        if (m->board || m->stopping || (action != DEVICE_ADD && action != DEVICE_CHANGE))
                return;
        kegboard_port_info(d, &info);
        if (!kegboard_port_candidate(&info))
                return;

        /* The first port wins; this process serves one board and stops looking. */
        device_watch_stop(w);
        kegboard_port_log_identity(d);
        if (manager_start_board(m, info.dev.devnode) < 0)
                manager_stop(m, 1);
}

static void on_port_overflow(DeviceWatch *w, void *userdata) {
        log_warning("Missed udev events (monitor overflow); looking for a Kegboard again");
        if (device_watch_enumerate(w) < 0)
                log_warning("Cannot enumerate serial ports through udev");
}

/* No --kegboard_device: the first tty that 70-kegboard.rules would nominate, now or when one is
 * plugged in (the monitor is created before the scan so that nothing falls in between). */
static int manager_find_port(Manager *m) {
        static const char *const subsystems[] = { "tty", NULL };
        static const DeviceWatchCallbacks callbacks = {
                .event = on_port_event,
                .overflow = on_port_overflow,
        };
        int r;

        r = device_watch_new(&m->ports, m->event, subsystems, &callbacks, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch serial ports through udev: %m");
        r = device_watch_enumerate(m->ports);
        if (r < 0)
                return log_error_errno(r, "Cannot enumerate serial ports through udev: %m");
        if (!m->board && !m->stopping) {
                log_info("Waiting for a Kegboard to be plugged in.");
                manager_update_status(m);
        }
        return 0;
}

/* ---- life cycle ---- */

int manager_new(Manager **ret, const ManagerConfig *config) {
        _cleanup_(manager_freep) Manager *m = NULL;
        static const KegnetClientCallbacks kegnet_callbacks = {
                .connected = on_kegnet_connected,
                .disconnected = on_kegnet_disconnected,
                .message = on_kegnet_message,
                .flushed = on_kegnet_flushed,
        };
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return log_error_errno(-ENOMEM, "%m");
        m->runtime_fd = -1;
        m->tap_name = strdup(config->tap_name ?: KEGNET_ALL_TAPS);
        if (!m->tap_name)
                return log_error_errno(-ENOMEM, "%m");
        if (!isempty(config->runtime_dir)) {
                m->runtime_fd = open(config->runtime_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (m->runtime_fd < 0)
                        log_warning_errno(errno, "Cannot open %s (%m): a restart of the daemon forgets the "
                                          "board's readings", config->runtime_dir);
        }

        m->board_config = config->board;
        m->board_config.device = NULL;

        /* A stop has to switch relays off and flush kegnet before the loop ends. */
        r = daemon_producer_new(config->kb_core_addr, &kegnet_callbacks, on_stop_signal, m, &m->event, &m->kegnet);
        if (r < 0)
                return r;
        /* Only the relay commands: not the FlowUpdate each of our readings causes. */
        kegnet_client_set_events(m->kegnet, KEGNET_EVENT_BIT(KEGNET_SET_RELAY_OUTPUT_EVENT));

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        sd_event_source_disable_unref(m->stop_timer);
        kegnet_client_free(m->kegnet);
        board_free(m->board);
        device_watch_free(m->ports);
        sd_event_unref(m->event);
        safe_close(m->runtime_fd);
        free(m->readings_file);
        free(m->serial);
        free(m->tap_name);
        free(m);
        return NULL;
}

int manager_run(Manager *m, const char *device) {
        int r;

        r = isempty(device) ? manager_find_port(m) : manager_start_board(m, device);
        if (r < 0)
                return 1;

        r = kegnet_client_start(m->kegnet);
        if (r < 0) {
                log_error_errno(r, "Failed to start the kegnet client: %m");
                return 1;
        }

        r = sd_event_loop(m->event);
        if (r < 0) {
                log_error_errno(r, "Event loop failed: %m");
                return 1;
        }
        return r == 0 ? 0 : 1;
}
