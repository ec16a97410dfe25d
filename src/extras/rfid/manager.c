/* rfid_daemon's Manager: see manager.h. */
#define LOG_COMPONENT "rfid"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "daemon.h"
#include "device-watch.h"
#include "kegnet-client.h"
#include "log.h"
#include "manager.h"
#include "phidget.h"
#include "util-escape.h"

#define RFID_AUTH_DEVICE "core.rfid"
/* Section 6.3: the kegnet flush on the way out is bounded. */
#define STOP_TIMEOUT_USEC USEC_PER_SEC

struct Manager {
        sd_event *event;
        KegnetClient *kegnet;
        DeviceWatch *watch;             /* discovery mode */
        ManagerConfig config;

        Reader *readers[MANAGER_MAX_READERS];
        size_t n_readers;
        /* Lost readers, freed from the loop once the call that lost them has returned. */
        Reader *dead[MANAGER_MAX_READERS + 1];
        size_t n_dead;
        sd_event_source *reap_defer;

        bool instance;
        bool ready;
        bool stopping;
        int exit_status;
};

static void manager_stop(Manager *m, int exit_status);

/* ---- status ---- */

static void manager_status_text(Manager *m, char *buf, size_t size) {
        if (m->config.backend == RFID_BACKEND_PHIDGET22)
                snprintf(buf, size, "Reading RFID tags through libphidget22");
        else if (m->instance)
                snprintf(buf, size, "Reading %s (%s)", m->config.device,
                         m->n_readers ? rfid_backend_to_string(reader_backend(m->readers[0])) : "gone");
        else if (m->n_readers == 0)
                snprintf(buf, size, "Waiting for an RFID reader");
        else
                snprintf(buf, size, "%zu RFID reader(s)", m->n_readers);
}

static void manager_update_status(Manager *m) {
        char text[512];

        if (!m->ready || m->stopping)
                return;
        manager_status_text(m, text, sizeof(text));
        (void) daemon_notify_status("%s", text);
}

/* ---- tokens ---- */

static void on_reader_token(Reader *r, const PresenceEvent *ev, void *userdata) {
        Manager *m = userdata;
        bool added = ev->change == PRESENCE_ADDED;
        int k;

        if (reader_backend(r) == RFID_BACKEND_PHIDGET22)
                log_info("Tag %s: %s", added ? "seen" : "lost", ev->token);
        else
                log_info("Tag %s: %s (%s)", added ? "seen" : "lost", ev->token, reader_node(r));

        k = kegnet_client_send(m->kegnet, &(KegnetMessage) {
                .kind = KEGNET_TOKEN_AUTH_EVENT,
                .token_auth_event = {
                        .meter_name = m->config.tap_name,
                        .auth_device_name = RFID_AUTH_DEVICE,
                        .token_value = ev->token,
                        .status = added ? KEGNET_TOKEN_ADDED : KEGNET_TOKEN_REMOVED,
                },
        });
        /* After the stop the client takes nothing more; the outbox has been flushed by then. */
        if (k < 0 && k != -ESHUTDOWN)
                log_warning_errno(k, "Cannot send the token %s: %m", ev->token);
}

/* ---- the set of readers ---- */

static int on_reap(sd_event_source *s, void *userdata) {
        Manager *m = userdata;

        for (size_t i = 0; i < m->n_dead; i++)
                reader_free(m->dead[i]);
        m->n_dead = 0;
        return 0;
}

static void manager_forget_reader(Manager *m, Reader *r) {
        size_t i;

        for (i = 0; i < m->n_readers && m->readers[i] != r; i++)
                ;
        if (i == m->n_readers)
                return;
        memmove(&m->readers[i], &m->readers[i + 1], (m->n_readers - i - 1) * sizeof(Reader *));
        m->n_readers--;

        /* The reader may be in the middle of one of its own calls: free it from the loop. */
        if (m->n_dead < ELEMENTSOF(m->dead))
                m->dead[m->n_dead++] = r;
        if (!m->reap_defer && sd_event_add_defer(m->event, &m->reap_defer, on_reap, m) >= 0)
                (void) sd_event_source_set_enabled(m->reap_defer, SD_EVENT_ONESHOT);
        else if (m->reap_defer)
                (void) sd_event_source_set_enabled(m->reap_defer, SD_EVENT_ONESHOT);
}

static void manager_readers_changed(Manager *m, bool was_serving) {
        if (!m->instance && m->ready && !m->stopping && was_serving && m->n_readers == 0)
                log_info("Waiting for an RFID reader.");
        manager_update_status(m);
}

/* Closed because it went away, was vetoed, or was lost. */
static void manager_detach(Manager *m, Reader *r) {
        bool was = m->n_readers > 0;

        reader_close(r, false);
        log_info("RFID device detached: %s", reader_node(r));
        manager_forget_reader(m, r);
        manager_readers_changed(m, was);
}

static void on_reader_lost(Reader *r, void *userdata) {
        Manager *m = userdata;

        manager_detach(m, r);
        /* Instance mode: systemd starts a new instance when the reader comes back. */
        if (m->instance)
                manager_stop(m, 0);
}

static const ReaderCallbacks reader_callbacks = {
        .token = on_reader_token,
        .lost = on_reader_lost,
};

static void manager_attached(Manager *m, Reader *r) {
        bool was = m->n_readers > 0;

        m->readers[m->n_readers++] = r;
        if (reader_backend(r) != RFID_BACKEND_PHIDGET22)
                log_info("RFID device attached: %s (%s)", reader_node(r), reader_description(r));
        manager_readers_changed(m, was);
}

/* ---- instance mode ---- */

/* Section 7.2. The udev device of a character device node, if udev knows it. */
static struct udev_device *node_udev_device(struct udev *udev, const struct stat *st) {
        if (!udev || !S_ISCHR(st->st_mode))
                return NULL;
        return udev_device_new_from_devnum(udev, 'c', st->st_rdev);
}

static int manager_start_instance(Manager *m) {
        _cleanup_(udev_unrefp) struct udev *udev = NULL;
        _cleanup_(udev_device_unrefp) struct udev_device *d = NULL;
        _cleanup_(freep) char *path = escape_for_log(m->config.device);
        RfidBackend backend = m->config.backend;
        ReaderOpenError err = {};
        Reader *r = NULL;
        struct stat st;
        int k;

        if (!path) {
                log_error_errno(-ENOMEM, "%m");
                return 1;
        }
        if (stat(m->config.device, &st) < 0) {
                log_error_errno(-errno, "%s: %m", path);
                return 1;
        }
        udev = udev_new();
        d = node_udev_device(udev, &st);
        if (backend == RFID_BACKEND_AUTO) {
                backend = d ? rfid_backend_for_subsystem(udev_device_get_subsystem(d), udev_device_get_sysname(d))
                            : _RFID_BACKEND_INVALID;
                if (backend < 0) {
                        log_error("%s: cannot tell what kind of RFID reader this is; use --rfid_backend", path);
                        return 2;
                }
        }

        k = reader_open(&r, m->event, backend, m->config.device, d, &m->config.settings, &reader_callbacks, m, &err);
        if (k < 0) {
                switch (err.status) {
                case READER_UNUSABLE:
                        log_error("%s: %s", path, err.reason);
                        return 2;
                case READER_IN_USE:
                        log_error("%s: in use by another rfid_daemon", path);
                        return 2;
                default:
                        if (*err.reason)
                                log_error("%s: %s", path, err.reason);
                        else
                                log_error_errno(err.error, "%s: %m", path);
                        return 1;
                }
        }
        manager_attached(m, r);
        return 0;
}

/* ---- discovery mode ---- */

static const char *const all_subsystems[] = { "hidraw", "tty", "input", NULL };
static const char *const hidraw_subsystems[] = { "hidraw", NULL };
static const char *const tty_subsystems[] = { "tty", NULL };
static const char *const input_subsystems[] = { "input", NULL };

static const char *const *discovery_subsystems(RfidBackend only) {
        switch (only) {
        case RFID_BACKEND_PHIDGET:
                return hidraw_subsystems;
        case RFID_BACKEND_ID12:
                return tty_subsystems;
        case RFID_BACKEND_KEYBOARD:
                return input_subsystems;
        default:
                return all_subsystems;
        }
}

/* The snapshot the candidate function decides on (strings borrowed from d). */
static void device_snapshot(struct udev_device *d, RfidDeviceSnapshot *ret) {
        *ret = (RfidDeviceSnapshot) {
                .kegbot_rfid = udev_device_get_property_value(d, "KEGBOT_RFID"),
                .id_input_keyboard = udev_device_get_property_value(d, "ID_INPUT_KEYBOARD"),
        };
        device_info_get(d, &ret->dev);
        if (!ret->dev.has_usb_ids && streq_ptr(ret->dev.subsystem, "hidraw")) {
                /* The last source of section 2.1: HID_ID of the hid parent. */
                struct udev_device *hid = udev_device_get_parent_with_subsystem_devtype(d, "hid", NULL);
                if (hid && phidget_parse_hid_id(udev_device_get_property_value(hid, "HID_ID"),
                                                &ret->dev.vendor, &ret->dev.product) >= 0)
                        ret->dev.has_usb_ids = true;
        }
}

static Reader *manager_find_syspath(Manager *m, const char *syspath) {
        for (size_t i = 0; i < m->n_readers; i++)
                if (streq_ptr(reader_syspath(m->readers[i]), syspath))
                        return m->readers[i];
        return NULL;
}

static void manager_try_open(Manager *m, struct udev_device *d, RfidBackend backend, const char *devnode) {
        _cleanup_(freep) char *node = escape_for_log(devnode);
        ReaderOpenError err = {};
        Reader *r = NULL;
        int k;

        if (!node) {
                log_error_errno(-ENOMEM, "%m");
                return;
        }
        if (m->n_readers >= MANAGER_MAX_READERS) {
                log_warning("Ignoring %s: already serving %d readers", node, MANAGER_MAX_READERS);
                return;
        }
        k = reader_open(&r, m->event, backend, devnode, d, &m->config.settings, &reader_callbacks, m, &err);
        if (k >= 0) {
                manager_attached(m, r);
                return;
        }
        /* Tried again at the device's next add or change. */
        switch (err.status) {
        case READER_UNUSABLE:
                log_info("Ignoring %s: %s", node, err.reason);
                break;
        case READER_IN_USE:
                log_warning("%s: in use by another rfid_daemon", node);
                break;
        default:
                if (*err.reason)
                        log_warning("%s: cannot open: %s", node, err.reason);
                else
                        log_warning_errno(err.error, "%s: cannot open: %m", node);
                break;
        }
}

static void on_device_event(DeviceWatch *w, DeviceAction action, struct udev_device *d, void *userdata) {
        Manager *m = userdata;
        Reader *r = manager_find_syspath(m, udev_device_get_syspath(d));
        RfidDeviceSnapshot snap;
        RfidBackend backend = RFID_BACKEND_AUTO;
        RfidVerdict v = RFID_NOT_SILENT;
        const char *reason = NULL;

        if (m->stopping || action == DEVICE_OTHER)
                return;
        if (action == DEVICE_REMOVE) {
                if (r)
                        manager_detach(m, r);
                return;
        }

        device_snapshot(d, &snap);
        v = rfid_candidate(&snap, m->config.backend, &backend, &reason);
        if (r) {
                /* A duplicate add, or a change that keeps it a reader: nothing to do. */
                if (action == DEVICE_CHANGE && v != RFID_CANDIDATE)
                        manager_detach(m, r);
                return;
        }
        if (v == RFID_CANDIDATE) {
                manager_try_open(m, d, backend, snap.dev.devnode);
                return;
        }
        if (v == RFID_NOT_INFO || v == RFID_NOT_DEBUG) {
                _cleanup_(freep) char *name = escape_for_log(snap.dev.devnode ?: udev_device_get_syspath(d));
                log_full(v == RFID_NOT_INFO ? LOG_INFO : LOG_DEBUG, "Ignoring %s: %s", name ?: "?", reason);
        }
}

static void on_device_overflow(DeviceWatch *w, void *userdata) {
        Manager *m = userdata;
        int k;

        log_warning("Missed udev events (monitor overflow); looking at every device again");
        k = device_watch_enumerate(w);
        if (k < 0)
                log_warning_errno(k, "Cannot enumerate devices through udev: %m");
        /* Readers whose device went away during the gap. */
        for (size_t i = m->n_readers; i > 0; i--) {
                Reader *r = m->readers[i - 1];
                _cleanup_(udev_device_unrefp) struct udev_device *d =
                        udev_device_new_from_syspath(device_watch_udev(w), reader_syspath(r));
                if (!d)
                        manager_detach(m, r);
        }
}

static int manager_start_discovery(Manager *m) {
        static const DeviceWatchCallbacks callbacks = {
                .event = on_device_event,
                .overflow = on_device_overflow,
        };
        int k;

        /* The monitor first, so that nothing plugged in during the scan is missed. */
        k = device_watch_new(&m->watch, m->event, discovery_subsystems(m->config.backend), &callbacks, m);
        if (k < 0) {
                log_error_errno(k, "Cannot watch devices through udev: %m");
                return 1;
        }
        k = device_watch_enumerate(m->watch);
        if (k < 0) {
                log_error_errno(k, "Cannot enumerate devices through udev: %m");
                return 1;
        }
        if (m->n_readers == 0)
                log_info("Waiting for an RFID reader.");
        return 0;
}

/* ---- the vendor library ---- */

static int manager_start_phidget22(Manager *m) {
        ReaderOpenError err = {};
        Reader *r = NULL;
        int k;

        k = reader_open(&r, m->event, RFID_BACKEND_PHIDGET22, NULL, NULL, &m->config.settings, &reader_callbacks, m,
                        &err);
        if (k < 0) {
                if (*err.reason)
                        log_error("Cannot open the RFID reader: %s", err.reason);
                else
                        log_error_errno(err.error, "Cannot open the RFID reader: %m");
                return 1;
        }
        manager_attached(m, r);
        /* The library finds the reader itself, whenever it is plugged in. */
        log_info("Waiting for an RFID reader.");
        return 0;
}

/* ---- stopping ---- */

static void on_kegnet_drained(KegnetClient *c, bool flushed, void *userdata) {
        Manager *m = userdata;

        (void) sd_event_exit(m->event, m->exit_status);
}

static void manager_stop(Manager *m, int exit_status) {
        int k;

        if (m->stopping) {
                (void) sd_event_exit(m->event, m->exit_status);
                return;
        }
        m->stopping = true;
        m->exit_status = exit_status;
        (void) daemon_notify_stopping();
        device_watch_stop(m->watch);

        /* Every Phidget switched off, every open presentation gets its "removed". */
        for (size_t i = 0; i < m->n_readers; i++)
                reader_close(m->readers[i], true);

        /* Within the deadline, a connection attempt may still come through: the outbox goes out. */
        k = kegnet_client_drain(m->kegnet, STOP_TIMEOUT_USEC, on_kegnet_drained, m);
        if (k < 0) {
                log_warning_errno(k, "Cannot flush kegnet: %m");
                (void) sd_event_exit(m->event, exit_status);
        }
}

static void on_stop_signal(void *userdata) {
        manager_stop(userdata, 0);
}

/* ---- kegnet ---- */

static void on_kegnet_connected(KegnetClient *c, void *userdata) {
        log_debug("Connected to the core at %s", kegnet_client_address(c));
}

/* ---- life cycle ---- */

int manager_new(Manager **ret, const ManagerConfig *config) {
        _cleanup_(manager_freep) Manager *m = NULL;
        static const KegnetClientCallbacks kegnet_callbacks = {
                .connected = on_kegnet_connected,
        };
        int k;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "%m");
        m->config = *config;
        m->instance = !isempty(config->device);

        /* A stop sends the last "removed" events and flushes kegnet first. */
        k = daemon_producer_new(config->kb_core_addr, &kegnet_callbacks, on_stop_signal, m, &m->event, &m->kegnet);
        if (k < 0)
                return k;
        kegnet_client_set_events(m->kegnet, 0);         /* a reader listens to nothing */

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_readers; i++)
                reader_free(m->readers[i]);
        for (size_t i = 0; i < m->n_dead; i++)
                reader_free(m->dead[i]);
        sd_event_source_disable_unref(m->reap_defer);
        device_watch_free(m->watch);
        kegnet_client_free(m->kegnet);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

int manager_run(Manager *m) {
        int status, k;

        if (m->config.backend == RFID_BACKEND_PHIDGET22)
                status = manager_start_phidget22(m);
        else if (m->instance)
                status = manager_start_instance(m);
        else
                status = manager_start_discovery(m);
        if (status != 0)
                return status;

        k = kegnet_client_start(m->kegnet);
        if (k < 0) {
                log_error_errno(k, "Cannot start the kegnet client: %m");
                return 1;
        }

        char text[512];
        manager_status_text(m, text, sizeof(text));
        (void) daemon_notify_ready("%s", text);
        m->ready = true;

        k = sd_event_loop(m->event);
        if (k < 0) {
                log_error_errno(k, "Event loop failed: %m");
                return 1;
        }
        return k;
}
