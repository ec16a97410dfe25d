/* The core's taps on D-Bus: see core-taps.h. The match rules are added before the snapshot is
 * asked for, and the bus daemon handles one connection's messages in order, so no change between
 * the two is missed; a change that arrives before the snapshot's answer is superseded by it.
 * sd-bus has checked every string it hands over as UTF-8. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#define LOG_COMPONENT "lcd"
#include "log.h"

#include "core-taps.h"
#include "util-event.h"
#include "util-strv.h"

#define CORE_NAME "org.kegbot.Core1"
#define CORE_ROOT "/org/kegbot/Core1"
#define TAP_IFACE "org.kegbot.Core1.Tap"
#define SNAPSHOT_TIMEOUT_USEC (25 * USEC_PER_SEC)
#define RECONNECT_MIN_USEC USEC_PER_SEC
#define RECONNECT_MAX_USEC (60 * USEC_PER_SEC)
#define RECONNECT_ACCURACY_USEC USEC_PER_SEC

struct CoreTaps {
        sd_event *event;
        sd_bus *bus;
        bool session_bus;
        sd_bus_slot *snapshot_call;
        sd_event_source *reconnect_timer;
        uint64_t reconnect_delay;
        bool bus_warned;                /* the bus is unreachable and that was said */
        bool waiting_logged;            /* "waiting for the core" was said */

        CoreTapInfo *taps;
        size_t n_taps;

        CoreTapsChanged on_changed;
        void *userdata;
};

static const char *bus_kind(const CoreTaps *c) {
        return c->session_bus ? "session" : "system";
}

static void taps_free(CoreTapInfo *taps, size_t n) {
        for (size_t i = 0; i < n; i++)
                core_tap_info_done(&taps[i]);
        free(taps);
}

static int tap_compare(const void *a, const void *b) {
        const CoreTapInfo *x = a, *y = b;
        return strcmp(x->meter_name ?: "", y->meter_name ?: "");
}

/* The list or a value in it changed: keep the order, tell the screen. */
static void core_taps_changed(CoreTaps *c) {
        if (c->n_taps > 1)
                qsort(c->taps, c->n_taps, sizeof(CoreTapInfo), tap_compare);
        if (c->on_changed)
                c->on_changed(c, c->userdata);
}

static void core_taps_set(CoreTaps *c, CoreTapInfo *taps, size_t n) {
        taps_free(c->taps, c->n_taps);
        c->taps = taps;
        c->n_taps = n;
        core_taps_changed(c);
}

static void core_taps_clear(CoreTaps *c) {
        if (c->n_taps > 0)
                core_taps_set(c, NULL, 0);
}

const CoreTapInfo *core_taps_get(const CoreTaps *c, size_t *ret_n) {
        *ret_n = c->n_taps;
        return c->taps;
}

/* ---- reading properties */

/* Reads a variant holding 'type' ("s" or "d"); anything else is skipped (0). */
static int read_variant(sd_bus_message *m, const char *type, void *ret) {
        const char *contents;
        int r;

        r = sd_bus_message_peek_type(m, NULL, &contents);
        if (r < 0)
                return r;
        if (!streq(contents, type))
                return sd_bus_message_skip(m, "v");
        r = sd_bus_message_enter_container(m, 'v', type);
        if (r < 0)
                return r;
        if (streq(type, "s")) {
                const char *s;
                char *copy;

                r = sd_bus_message_read(m, "s", &s);
                if (r < 0)
                        return r;
                copy = strdup(s);
                if (!copy)
                        return -ENOMEM;
                free(*(char **) ret);
                *(char **) ret = copy;
        } else {
                r = sd_bus_message_read(m, "d", ret);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_exit_container(m);
        return r < 0 ? r : 1;
}

/* Applies an a{sv} of Tap properties; the ones no screen shows are skipped. */
static int tap_apply_properties(CoreTapInfo *t, sd_bus_message *m) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *name;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                if (streq(name, "MeterName"))
                        r = read_variant(m, "s", &t->meter_name);
                else if (streq(name, "Name"))
                        r = read_variant(m, "s", &t->name);
                else if (streq(name, "MlPerTick"))
                        r = read_variant(m, "d", &t->ml_per_tick);
                else if (streq(name, "FlowState"))
                        r = read_variant(m, "s", &t->flow_state);
                else if (streq(name, "FlowVolumeMl"))
                        r = read_variant(m, "d", &t->flow_volume_ml);
                else if (streq(name, "FlowUsername"))
                        r = read_variant(m, "s", &t->flow_username);
                else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static CoreTapInfo *taps_find(CoreTapInfo *taps, size_t n, const char *path) {
        for (size_t i = 0; i < n; i++)
                if (streq(taps[i].path, path))
                        return &taps[i];
        return NULL;
}

/* The tap for 'path' in the array, appended (with every string set, possibly empty) if new. */
static CoreTapInfo *taps_get(CoreTapInfo **taps, size_t *n, const char *path) {
        CoreTapInfo *t = taps_find(*taps, *n, path), *a;

        if (t)
                return t;
        a = realloc(*taps, (*n + 1) * sizeof(CoreTapInfo));
        if (!a)
                return NULL;
        *taps = a;
        t = &a[*n];
        *t = (CoreTapInfo) { .flow_volume_ml = -1 };
        t->path = strdup(path);
        t->meter_name = strdup("");
        t->name = strdup("");
        t->flow_state = strdup("");
        t->flow_username = strdup("");
        if (!t->path || !t->meter_name || !t->name || !t->flow_state || !t->flow_username) {
                core_tap_info_done(t);
                return NULL;
        }
        (*n)++;
        return t;
}

/* Reads one object as GetManagedObjects and InterfacesAdded carry it (an object path and its
 * interfaces with their properties) and, if it has a Tap interface, updates or adds that tap. */
static int taps_read_object(CoreTapInfo **taps, size_t *n, sd_bus_message *m) {
        const char *path;
        int r;

        r = sd_bus_message_read(m, "o", &path);
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "{sa{sv}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sa{sv}")) > 0) {
                const char *iface;

                r = sd_bus_message_read(m, "s", &iface);
                if (r >= 0 && streq(iface, TAP_IFACE)) {
                        CoreTapInfo *t = taps_get(taps, n, path);
                        r = t ? tap_apply_properties(t, m) : -ENOMEM;
                } else if (r >= 0)
                        r = sd_bus_message_skip(m, "a{sv}");
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        return r;
}

/* ---- the snapshot */

static void core_taps_request_snapshot(CoreTaps *c);

static int on_snapshot(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        CoreTaps *c = userdata;
        CoreTapInfo *taps = NULL;
        size_t n = 0;
        int r;

        c->snapshot_call = sd_bus_slot_unref(c->snapshot_call);

        if (sd_bus_message_is_method_error(reply, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(reply);

                if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER)) {
                        if (!c->waiting_logged)
                                log_info("Waiting for kegbot_core on the %s bus: no tap screens until it is there.",
                                         bus_kind(c));
                        c->waiting_logged = true;
                } else
                        log_warning("Cannot list the core's taps: %s", e->message ?: e->name);
                core_taps_clear(c);
                return 0;
        }

        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                r = taps_read_object(&taps, &n, reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r < 0) {
                log_warning_errno(r, "Cannot read the core's objects: %m");
                taps_free(taps, n);
                return 0;
        }

        if (c->waiting_logged || c->n_taps == 0)
                log_info("kegbot_core is on the %s bus: %zu tap screen(s).", bus_kind(c), n);
        c->waiting_logged = false;
        core_taps_set(c, taps, n);
        return 0;
}

static void core_taps_request_snapshot(CoreTaps *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        c->snapshot_call = sd_bus_slot_unref(c->snapshot_call);
        r = sd_bus_message_new_method_call(c->bus, &m, CORE_NAME, CORE_ROOT, "org.freedesktop.DBus.ObjectManager",
                                           "GetManagedObjects");
        if (r >= 0)
                /* A display must not start the core by asking. */
                r = sd_bus_message_set_auto_start(m, false);
        if (r >= 0)
                r = sd_bus_call_async(c->bus, &c->snapshot_call, m, on_snapshot, c, SNAPSHOT_TIMEOUT_USEC);
        if (r < 0)
                log_warning_errno(r, "Cannot ask the core for its taps: %m");
}

/* ---- signals */

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CoreTaps *c = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !streq(name, CORE_NAME))
                return 0;
        if (isempty(new_owner)) {
                log_info("kegbot_core left the %s bus: no tap screens until it is back.", bus_kind(c));
                c->waiting_logged = true;
                c->snapshot_call = sd_bus_slot_unref(c->snapshot_call);
                core_taps_clear(c);
        } else
                core_taps_request_snapshot(c);
        return 0;
}

static int on_interfaces_added(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CoreTaps *c = userdata;
        size_t n = c->n_taps;
        int r;

        r = taps_read_object(&c->taps, &c->n_taps, m);
        if (r < 0)
                log_warning_errno(r, "Cannot read InterfacesAdded: %m");
        if (r >= 0 || c->n_taps != n)
                core_taps_changed(c);
        return 0;
}

static int on_interfaces_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(strv_freep) char **ifaces = NULL;
        CoreTaps *c = userdata;
        const char *path;
        CoreTapInfo *t;
        int r;

        r = sd_bus_message_read(m, "o", &path);
        if (r >= 0)
                r = sd_bus_message_read_strv(m, &ifaces);
        if (r < 0) {
                log_warning_errno(r, "Cannot read InterfacesRemoved: %m");
                return 0;
        }
        t = taps_find(c->taps, c->n_taps, path);
        if (!t || !strv_contains(ifaces, TAP_IFACE))
                return 0;
        core_tap_info_done(t);
        memmove(t, t + 1, (size_t) (c->taps + c->n_taps - (t + 1)) * sizeof(CoreTapInfo));
        c->n_taps--;
        core_taps_changed(c);
        return 0;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(strv_freep) char **invalidated = NULL;
        CoreTaps *c = userdata;
        const char *iface;
        CoreTapInfo *t;
        int r;

        t = taps_find(c->taps, c->n_taps, sd_bus_message_get_path(m));
        r = sd_bus_message_read(m, "s", &iface);
        if (r < 0 || !streq(iface, TAP_IFACE) || !t)
                return 0;
        r = tap_apply_properties(t, m);
        if (r >= 0)
                r = sd_bus_message_read_strv(m, &invalidated);
        if (r < 0) {
                log_warning_errno(r, "Cannot read PropertiesChanged: %m");
                return 0;
        }
        if (strv_length(invalidated) > 0)
                /* The core sends values, but a peer may only name what changed: read them all. */
                core_taps_request_snapshot(c);
        core_taps_changed(c);
        return 0;
}

/* ---- the connection */

static int on_reconnect(sd_event_source *s, uint64_t usec, void *userdata);

static void core_taps_retry_later(CoreTaps *c) {
        int r;

        r = event_timer_arm_relative(c->event, &c->reconnect_timer, c->reconnect_delay, RECONNECT_ACCURACY_USEC,
                                     on_reconnect, c);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the bus reconnect timer: %m");
        c->reconnect_delay = MIN(c->reconnect_delay * 2, RECONNECT_MAX_USEC);
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CoreTaps *c = userdata;

        log_warning("Lost the connection to the %s bus; no tap screens until it is back.", bus_kind(c));
        c->bus_warned = true;
        c->snapshot_call = sd_bus_slot_unref(c->snapshot_call);
        core_taps_clear(c);
        c->reconnect_delay = RECONNECT_MIN_USEC;
        core_taps_retry_later(c);
        return 0;
}

static int core_taps_connect(CoreTaps *c) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        static const struct {
                const char *rule;
                sd_bus_message_handler_t handler;
        } matches[] = {
                { "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                  "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" CORE_NAME "'",
                  on_name_owner_changed },
                { "type='signal',sender='" CORE_NAME "',path='" CORE_ROOT "',"
                  "interface='org.freedesktop.DBus.ObjectManager',member='InterfacesAdded'",
                  on_interfaces_added },
                { "type='signal',sender='" CORE_NAME "',path='" CORE_ROOT "',"
                  "interface='org.freedesktop.DBus.ObjectManager',member='InterfacesRemoved'",
                  on_interfaces_removed },
                { "type='signal',sender='" CORE_NAME "',path_namespace='" CORE_ROOT "/tap',"
                  "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',arg0='" TAP_IFACE "'",
                  on_properties_changed },
        };
        int r;

        c->snapshot_call = sd_bus_slot_unref(c->snapshot_call);
        c->bus = sd_bus_flush_close_unref(c->bus);

        r = c->session_bus ? sd_bus_open_user_with_description(&bus, "lcd-taps")
                           : sd_bus_open_system_with_description(&bus, "lcd-taps");
        if (r < 0)
                return r;
        r = sd_bus_attach_event(bus, c->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        r = sd_bus_match_signal_async(bus, NULL, "org.freedesktop.DBus.Local", "/org/freedesktop/DBus/Local",
                                      "org.freedesktop.DBus.Local", "Disconnected", on_disconnected, NULL, c);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(matches); i++)
                r = sd_bus_add_match_async(bus, NULL, matches[i].rule, matches[i].handler, NULL, c);
        if (r < 0)
                return r;

        c->bus = TAKE_PTR(bus);
        core_taps_request_snapshot(c);
        return 0;
}

static int on_reconnect(sd_event_source *s, uint64_t usec, void *userdata) {
        CoreTaps *c = userdata;
        int r;

        r = core_taps_connect(c);
        if (r < 0) {
                log_debug_errno(r, "Cannot connect to the %s bus yet: %m", bus_kind(c));
                core_taps_retry_later(c);
                return 0;
        }
        if (c->bus_warned)
                log_info("Connected to the %s bus again.", bus_kind(c));
        c->bus_warned = false;
        return 0;
}

int core_taps_new(CoreTaps **ret, sd_event *event, bool session_bus, CoreTapsChanged on_changed, void *userdata) {
        _cleanup_(core_taps_freep) CoreTaps *c = NULL;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(event);
        c->session_bus = session_bus;
        c->on_changed = on_changed;
        c->userdata = userdata;
        c->reconnect_delay = RECONNECT_MIN_USEC;

        r = core_taps_connect(c);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_warning_errno(r, "Cannot connect to the %s bus: %m; no tap screens until it can be reached.",
                                  bus_kind(c));
                c->bus_warned = true;
                core_taps_retry_later(c);
        }
        *ret = TAKE_PTR(c);
        return 0;
}

CoreTaps *core_taps_free(CoreTaps *c) {
        if (!c)
                return NULL;
        sd_bus_slot_unref(c->snapshot_call);
        sd_bus_flush_close_unref(c->bus);
        sd_event_source_disable_unref(c->reconnect_timer);
        taps_free(c->taps, c->n_taps);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}
