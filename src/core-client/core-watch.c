/* Following the core on D-Bus: see core-watch.h.
 *
 * Every signal is taken through one filter that accepts only messages from the core's current
 * unique name (learnt from GetNameOwner and NameOwnerChanged), so a previous instance or another
 * peer cannot feed the model. While a snapshot is being read, the core's messages arrive in the
 * order it sent them: a property change that arrives before the reply it concerns is older than
 * that reply and is dropped, one that arrives after it is applied; the Manager's events are held
 * and applied, in order, once the snapshot is complete. */
#include <inttypes.h>

#define LOG_COMPONENT "dbus"
#include "log.h"

#include "core-watch.h"
#include "introspect.h"
#include "util-bus.h"
#include "util-event.h"
#include "util-escape.h"
#include "util-string.h"

#define CORE_NAME "org.kegbot.Core1"
#define CORE_ROOT "/org/kegbot/Core1"
#define MANAGER_IFACE "org.kegbot.Core1.Manager"
#define TAP_IFACE "org.kegbot.Core1.Tap"
#define CONTROLLER_IFACE "org.kegbot.Core1.Controller"
#define SENSOR_IFACE "org.kegbot.Core1.ThermoSensor"
#define PROPERTIES_IFACE "org.freedesktop.DBus.Properties"
#define OBJECT_MANAGER_IFACE "org.freedesktop.DBus.ObjectManager"

#define SIG_DRINK_RECORDED "sxtsstdttt"
#define SIG_GHOST_FLOW "sstdtttss"
#define SIG_POUR_FLAGGED "tsss"
#define SIG_CLEAR_QUARANTINE "s"

#define CALL_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define SNAPSHOT_RETRY_USEC (5 * USEC_PER_SEC)

static const char *const kind_prefix[_GROUP_KIND_MAX] = {
        [GROUP_BOARD] = CORE_ROOT "/controller",
        [GROUP_TAP] = CORE_ROOT "/tap",
        [GROUP_SENSOR] = CORE_ROOT "/sensor",
};

static const char *const kind_iface[_GROUP_KIND_MAX] = {
        [GROUP_BOARD] = CONTROLLER_IFACE,
        [GROUP_TAP] = TAP_IFACE,
        [GROUP_SENSOR] = SENSOR_IFACE,
};

struct CoreWatch {
        sd_event *event;
        sd_bus *bus;
        Model *model;
        CoreWatchCallbacks cb;
        void *userdata;

        sd_bus_slot *filter_slot;
        sd_bus_slot *owner_slot;
        bool ready_sent;

        char *owner;                    /* the core's unique name, NULL = not on the bus */
        bool snapshot_running;
        sd_bus_slot *introspect_slot, *props_slot, *objects_slot;
        bool got_introspect, got_props, got_objects;
        char *manager_xml;
        sd_bus_message **held;          /* the core's events during a snapshot */
        size_t n_held;
        sd_event_source *retry_timer;
};

static uint64_t now_clock(CoreWatch *w, clockid_t c) {
        uint64_t t = 0;
        (void) sd_event_now(w->event, c, &t);
        return t;
}

static void held_clear(CoreWatch *w) {
        for (size_t i = 0; i < w->n_held; i++)
                sd_bus_message_unref(w->held[i]);
        free(w->held);
        w->held = NULL;
        w->n_held = 0;
}

static void snapshot_cancel(CoreWatch *w) {
        w->introspect_slot = sd_bus_slot_unref(w->introspect_slot);
        w->props_slot = sd_bus_slot_unref(w->props_slot);
        w->objects_slot = sd_bus_slot_unref(w->objects_slot);
        w->snapshot_running = false;
        w->got_introspect = w->got_props = w->got_objects = false;
        free(w->manager_xml);
        w->manager_xml = NULL;
        held_clear(w);
        event_timer_disarm(w->retry_timer);
}

static void send_ready(CoreWatch *w) {
        if (w->ready_sent)
                return;
        w->ready_sent = true;
        if (w->cb.ready)
                w->cb.ready(w, w->userdata);
}

/* ---- reading properties */

typedef struct Value {
        char type;                      /* 0: not a basic type this module reads */
        const char *s;
        int b;
        uint32_t u;
        uint64_t t;
        int64_t x;
        double d;
} Value;

/* Reads the value of an entered variant of type 'contents'; it is skipped (type 0) unless it is
 * one of the types used here. */
static int read_value(sd_bus_message *m, const char *contents, Value *v) {
        int r = 0;

        *v = (Value) {};
        if (strlen(contents) != 1 || !strchr("sbutxd", contents[0]))
                return sd_bus_message_skip(m, contents);
        v->type = contents[0];
        switch (v->type) {
        case 's':
                r = sd_bus_message_read_basic(m, 's', &v->s);
                break;
        case 'b':
                r = sd_bus_message_read_basic(m, 'b', &v->b);
                break;
        case 'u':
                r = sd_bus_message_read_basic(m, 'u', &v->u);
                break;
        case 't':
                r = sd_bus_message_read_basic(m, 't', &v->t);
                break;
        case 'x':
                r = sd_bus_message_read_basic(m, 'x', &v->x);
                break;
        case 'd':
                r = sd_bus_message_read_basic(m, 'd', &v->d);
                break;
        }
        return r;
}

/* Sets *p to s; true if it changed. */
static bool set_str(char **p, const char *s, bool *oom) {
        char *n;

        if (streq_ptr(*p, s))
                return false;
        n = strdup(s);
        if (!n) {
                *oom = true;
                return false;
        }
        free(*p);
        *p = n;
        return true;
}

static unsigned apply_manager_prop(CoreWatch *w, const char *name, const Value *v, bool *oom) {
        CoreInfo *c = &w->model->core;

        if (streq(name, "Version") && v->type == 's')
                return set_str(&c->version, v->s, oom) ? CHANGE_STATE | CHANGE_CONFIG : 0;
        if (streq(name, "Mode") && v->type == 's')
                return set_str(&c->mode, v->s, oom) ? CHANGE_STATE | CHANGE_CONFIG : 0;
        if (streq(name, "BackendState") && v->type == 's')
                return set_str(&c->backend_state, v->s, oom) ? CHANGE_STATE : 0;
        if (streq(name, "SpoolState") && v->type == 's')
                return set_str(&c->spool_state, v->s, oom) ? CHANGE_STATE : 0;
        if (streq(name, "PendingDrinks") && v->type == 'u') {
                c->pending = v->u;
                return CHANGE_STATE;
        }
        if (streq(name, "FailedDrinks") && v->type == 'u') {
                c->failed = v->u;
                return CHANGE_STATE;
        }
        if (streq(name, "LastSync") && v->type == 't') {
                c->last_sync = v->t;
                return CHANGE_STATE;
        }
        return 0;
}

/* Tap properties; *volume_seen when FlowVolumeMl was among them (its sample needs FlowId first). */
static unsigned apply_tap_prop(Group *g, const char *name, const Value *v, bool *volume_seen, bool *oom) {
        if (streq(name, "Name") && v->type == 's')
                return set_str(&g->tap_name, v->s, oom) ? CHANGE_STATE | CHANGE_CONFIG : 0;
        if (streq(name, "MlPerTick") && v->type == 'd') {
                g->ml_per_tick = v->d;
                return CHANGE_STATE;
        }
        if (streq(name, "RelayName") && v->type == 's')
                return set_str(&g->relay, v->s, oom) ? CHANGE_STATE | CHANGE_CONFIG : 0;
        if (streq(name, "RelayEnabled") && v->type == 'b') {
                g->relay_enabled = v->b;
                return CHANGE_STATE;
        }
        if (streq(name, "AutoCreated") && v->type == 'b') {
                bool changed = g->auto_created != !!v->b;
                g->auto_created = v->b;
                return changed ? CHANGE_PERSIST : 0;
        }
        if (streq(name, "FlowId") && v->type == 't') {
                g->flow_id = v->t;
                return CHANGE_STATE;
        }
        if (streq(name, "FlowState") && v->type == 's') {
                (void) set_str(&g->flow_state, v->s, oom);
                return CHANGE_STATE;
        }
        if (streq(name, "FlowVolumeMl") && v->type == 'd') {
                g->flow_volume_ml = v->d;
                *volume_seen = true;
                return CHANGE_STATE;
        }
        if (streq(name, "FlowUsername") && v->type == 's') {
                (void) set_str(&g->flow_user, v->s, oom);
                return CHANGE_STATE;
        }
        if (streq(name, "Quarantined") && v->type == 'b') {
                g->has_quarantined = true;
                g->quarantined = v->b;
                return CHANGE_STATE;
        }
        return 0;
}

static unsigned apply_controller_prop(Group *g, const char *name, const Value *v, bool *oom) {
        if (streq(name, "SerialNumber") && v->type == 's')
                return set_str(&g->serial, v->s, oom) ? CHANGE_STATE : 0;
        if (streq(name, "FirmwareVersion") && v->type == 'u') {
                bool changed = g->firmware != v->u;
                g->firmware = v->u;
                return changed ? CHANGE_STATE | CHANGE_CONFIG : 0;
        }
        if (streq(name, "Device") && v->type == 's')
                return set_str(&g->device, v->s, oom) ? CHANGE_STATE : 0;
        if (streq(name, "Connected") && v->type == 'b') {
                g->connected = v->b;
                return CHANGE_STATE;
        }
        if (streq(name, "LastSeen") && v->type == 't') {
                g->board_last_seen = v->t;
                return CHANGE_STATE;
        }
        if (streq(name, "Backend") && v->type == 's')
                return set_str(&g->backend, v->s, oom) ? CHANGE_STATE | CHANGE_CONFIG : 0;
        if (streq(name, "EventState") && v->type == 's')
                return set_str(&g->event_state, v->s, oom) ? CHANGE_STATE : 0;
        return 0;
}

static unsigned apply_sensor_prop(Group *g, const char *name, const Value *v) {
        if (streq(name, "TemperatureC") && v->type == 'd') {
                g->has_temp = true;
                g->temp_c = v->d;
                return CHANGE_STATE;
        }
        if (streq(name, "LastSeen") && v->type == 't') {
                g->sensor_time = v->t;
                return CHANGE_STATE;
        }
        if (streq(name, "Silent") && v->type == 'b') {
                g->silent = v->b;
                return CHANGE_STATE;
        }
        return 0;
}

/* What reading one a{sv} of properties collects. */
typedef struct PropsRead {
        CoreWatch *w;
        Group *g;                       /* NULL: the core's Manager */
        unsigned change;
        bool volume_seen, oom;
} PropsRead;

static int read_prop(sd_bus_message *m, const char *name, const char *contents, void *userdata) {
        PropsRead *p = userdata;
        CoreWatch *w = p->w;
        Group *g = p->g;
        Value v;
        int r;

        r = read_value(m, contents, &v);
        if (r < 0)
                return r;
        if (!g)
                p->change |= apply_manager_prop(w, name, &v, &p->oom);
        else if (g->kind == GROUP_TAP) {
                p->change |= apply_tap_prop(g, name, &v, &p->volume_seen, &p->oom);
                /* The optional member, detected from what the core's taps have. */
                if (streq(name, "Quarantined") && v.type == 'b' && !w->model->core.has_quarantined) {
                        w->model->core.has_quarantined = true;
                        p->change |= CHANGE_CONFIG;
                }
        } else if (g->kind == GROUP_BOARD) {
                p->change |= apply_controller_prop(g, name, &v, &p->oom);
                if (streq(name, "Backend") && v.type == 's')
                        w->model->core.has_backend = true;
                if (streq(name, "EventState") && v.type == 's' && !w->model->core.has_event_state) {
                        w->model->core.has_event_state = true;
                        p->change |= CHANGE_CONFIG;
                }
        } else
                p->change |= apply_sensor_prop(g, name, &v);
        return 1;
}

/* Reads an a{sv} into the core's Manager (g == NULL) or the group; returns the change flags. */
static int read_props(CoreWatch *w, sd_bus_message *m, Group *g, unsigned *ret_change) {
        PropsRead p = { .w = w, .g = g };
        int r;

        r = bus_message_read_dict(m, read_prop, &p);
        if (r < 0)
                return r;
        if (p.volume_seen && g)
                tap_rate_add(g, g->flow_id, g->flow_volume_ml, now_clock(w, CLOCK_MONOTONIC));
        if (p.oom)
                return -ENOMEM;
        *ret_change = p.change;
        return 0;
}

/* ---- objects */

static int kind_of_iface(const char *iface) {
        for (GroupKind k = 0; k < _GROUP_KIND_MAX; k++)
                if (streq(iface, kind_iface[k]))
                        return k;
        return -1;
}

static Group *group_by_path(CoreWatch *w, const char *path) {
        for (size_t i = 0; i < w->model->n_groups; i++)
                if (streq_ptr(w->model->groups[i]->path, path))
                        return w->model->groups[i];
        return NULL;
}

/* The group of an object with the interface of 'kind' (created if new): its name is its path's
 * last part, decoded. */
static int group_for_object(CoreWatch *w, GroupKind kind, const char *path, Group **ret) {
        _cleanup_(freep) char *name = NULL;
        Group *g;
        int r;

        r = sd_bus_path_decode(path, kind_prefix[kind], &name);
        if (r < 0)
                return r;
        if (r == 0 || isempty(name))
                return -EBADMSG;
        g = model_find(w->model, kind, name);
        if (!g) {
                r = model_add(w->model, kind, name, &g);
                if (r < 0)
                        return r;
        }
        if (!streq_ptr(g->path, path)) {
                char *p = strdup(path);
                if (!p)
                        return -ENOMEM;
                free(g->path);
                g->path = p;
        }
        *ret = g;
        return 0;
}

/* One object's a{sa{sv}} (GetManagedObjects, InterfacesAdded). */
static int read_object(CoreWatch *w, sd_bus_message *m, const char *path, bool notify) {
        int r;

        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sa{sv}}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sa{sv}")) > 0) {
                const char *iface;
                unsigned change = 0;
                Group *g;
                int kind;

                r = sd_bus_message_read_basic(m, 's', &iface);
                if (r < 0)
                        return r;
                kind = kind_of_iface(iface);
                if (kind < 0) {
                        r = sd_bus_message_skip(m, "a{sv}");
                        if (r < 0)
                                return r;
                } else {
                        r = group_for_object(w, (GroupKind) kind, path, &g);
                        if (r == -EBADMSG) {
                                _cleanup_(freep) char *e = escape_for_log(path);
                                log_warning("Ignoring core object %s: not a %s path", e ?: "?",
                                            group_kind_to_string((GroupKind) kind));
                                r = sd_bus_message_skip(m, "a{sv}");
                                if (r < 0)
                                        return r;
                        } else {
                                bool was_live;
                                if (r < 0)
                                        return r;
                                r = read_props(w, m, g, &change);
                                if (r < 0)
                                        return r;
                                was_live = g->live;
                                g->live = g->present = true;
                                g->seen = now_clock(w, CLOCK_REALTIME);
                                if (notify && w->cb.group_changed)
                                        w->cb.group_changed(w, g, change | CHANGE_PERSIST |
                                                            (was_live ? 0 : CHANGE_STATE | CHANGE_CONFIG), w->userdata);
                        }
                }
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

/* ---- snapshot */

static void apply_message(CoreWatch *w, sd_bus_message *m);

static void log_member(const char *member, const char *sig, const char *expected, const char *feature) {
        if (!sig)
                log_info("Core has no %s; %s disabled", member, feature);
        else
                log_info("Core's %s has signature %s, expected %s; %s disabled", member, sig, expected, feature);
}

/* Optional Manager members from the introspection XML (section 4.2). */
static void detect_manager_members(CoreWatch *w) {
        static const struct {
                const char *kind, *member, *signature, *feature;
                size_t offset;
        } members[] = {
                { "signal", "GhostFlow", SIG_GHOST_FLOW, "ghost_flow events and ghost volumes",
                  offsetof(CoreInfo, has_ghost_flow) },
                { "signal", "PourFlagged", SIG_POUR_FLAGGED, "kicked events", offsetof(CoreInfo, has_pour_flagged) },
                { "method", "ClearQuarantine", SIG_CLEAR_QUARANTINE, "the clear_quarantine command",
                  offsetof(CoreInfo, has_clear_quarantine) },
        };

        for (size_t i = 0; i < ELEMENTSOF(members); i++) {
                _cleanup_(freep) char *sig = NULL, *esig = NULL;
                bool *flag = (bool *) ((char *) &w->model->core + members[i].offset);
                int r = 0;

                if (w->manager_xml)
                        r = introspect_member_signature(w->manager_xml, MANAGER_IFACE, members[i].kind,
                                                        members[i].member, &sig);
                if (r < 0)
                        log_warning("The core's introspection data is malformed; %s disabled", members[i].feature);
                *flag = r > 0 && streq(sig, members[i].signature);
                if (r >= 0 && !*flag) {
                        esig = sig ? escape_for_log(sig) : NULL;
                        log_member(members[i].member, sig ? (esig ?: "?") : NULL, members[i].signature,
                                   members[i].feature);
                }
        }
}

/* Optional properties, from what the objects of the snapshot have (each is announced by every
 * object of its interface). */
static void log_property_members(CoreWatch *w) {
        CoreInfo *c = &w->model->core;

        if (model_count(w->model, GROUP_TAP, true) > 0 && !c->has_quarantined)
                log_member("Quarantined", NULL, "b", "the tap quarantine");
        if (model_count(w->model, GROUP_BOARD, true) > 0) {
                if (!c->has_backend)
                        log_member("Backend", NULL, "s", "the board backend");
                if (!c->has_event_state)
                        log_member("EventState", NULL, "s", "the server link");
        }
}

static size_t count_present(CoreWatch *w, GroupKind kind) {
        size_t n = 0;

        for (size_t i = 0; i < w->model->n_groups; i++)
                if (w->model->groups[i]->kind == kind && w->model->groups[i]->present)
                        n++;
        return n;
}

static void snapshot_complete(CoreWatch *w) {
        CoreInfo *c = &w->model->core;
        _cleanup_(freep) char *v = escape_for_log(c->version ?: ""), *mode = escape_for_log(c->mode ?: "");
        sd_bus_message **held;
        size_t n_held;

        detect_manager_members(w);
        log_property_members(w);
        c->online = c->seen = true;
        w->snapshot_running = false;
        free(w->manager_xml);
        w->manager_xml = NULL;
        log_info("Core is on the bus (version %s, %s): %zu taps, %zu boards, %zu sensors", v ?: "?", mode ?: "?",
                 count_present(w, GROUP_TAP), count_present(w, GROUP_BOARD), count_present(w, GROUP_SENSOR));
        if (w->cb.appeared)
                w->cb.appeared(w, w->userdata);

        held = TAKE_PTR(w->held);
        n_held = w->n_held;
        w->n_held = 0;
        for (size_t i = 0; i < n_held; i++) {
                if (w->owner)
                        apply_message(w, held[i]);
                sd_bus_message_unref(held[i]);
        }
        free(held);
        send_ready(w);
}

static void snapshot_maybe_complete(CoreWatch *w) {
        if (w->snapshot_running && w->got_introspect && w->got_props && w->got_objects)
                snapshot_complete(w);
}

static void snapshot_start(CoreWatch *w);

static int on_snapshot_retry(sd_event_source *s, uint64_t usec, void *userdata);

static void snapshot_failed(CoreWatch *w, const sd_bus_error *e) {
        _cleanup_(freep) char *name = escape_for_log(e->name ?: "?"), *msg = escape_for_log(e->message ?: "");

        log_warning("Cannot read the core's state: %s: %s; trying again in 5 s", name ?: "?", msg ?: "");
        snapshot_cancel(w);
        if (event_timer_arm_relative(w->event, &w->retry_timer, SNAPSHOT_RETRY_USEC, 100 * USEC_PER_MSEC,
                                     on_snapshot_retry, w) < 0)
                log_error("Cannot schedule the next snapshot");
        /* Readiness does not wait for a core that does not answer. */
        send_ready(w);
}

static int on_snapshot_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        CoreWatch *w = userdata;

        if (w->owner)
                snapshot_start(w);
        return 0;
}

static int on_introspect_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CoreWatch *w = userdata;
        const char *xml;
        int r;

        w->introspect_slot = sd_bus_slot_unref(w->introspect_slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                snapshot_failed(w, sd_bus_message_get_error(m));
                return 0;
        }
        r = sd_bus_message_read(m, "s", &xml);
        if (r < 0 || !(w->manager_xml = strdup(xml)))
                log_warning("The core's introspection data is unreadable; its optional members are not used");
        w->got_introspect = true;
        snapshot_maybe_complete(w);
        return 0;
}

static int on_props_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CoreWatch *w = userdata;
        unsigned change = 0;
        int r;

        w->props_slot = sd_bus_slot_unref(w->props_slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                snapshot_failed(w, sd_bus_message_get_error(m));
                return 0;
        }
        r = read_props(w, m, NULL, &change);
        if (r < 0)
                log_warning_errno(r, "Cannot read the core's Manager properties: %m");
        w->got_props = true;
        if (w->cb.core_changed)
                w->cb.core_changed(w, change | CHANGE_STATE, w->userdata);
        snapshot_maybe_complete(w);
        return 0;
}

static int on_objects_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CoreWatch *w = userdata;
        int r;

        w->objects_slot = sd_bus_slot_unref(w->objects_slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                snapshot_failed(w, sd_bus_message_get_error(m));
                return 0;
        }
        /* What the core has now; whatever it no longer has stays in the model, not present. */
        for (size_t i = 0; i < w->model->n_groups; i++)
                w->model->groups[i]->present = false;

        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{oa{sa{sv}}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "oa{sa{sv}}")) > 0) {
                const char *path;

                r = sd_bus_message_read_basic(m, 'o', &path);
                if (r >= 0)
                        r = read_object(w, m, path, true);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        if (r < 0)
                log_warning_errno(r, "Cannot read the core's objects: %m");
        w->got_objects = true;
        snapshot_maybe_complete(w);
        return 0;
}

static int call_core(CoreWatch *w, sd_bus_slot **slot, const char *path, const char *iface, const char *method,
                     sd_bus_message_handler_t handler, void *userdata, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        va_list ap;
        int r;

        if (!w->owner)
                return -ENOTCONN;
        r = sd_bus_message_new_method_call(w->bus, &m, w->owner, path, iface, method);
        if (r < 0)
                return r;
        /* The core is never started by a call from here (section 4.3). */
        r = sd_bus_message_set_auto_start(m, false);
        if (r < 0)
                return r;
        if (types) {
                va_start(ap, types);
                r = sd_bus_message_appendv(m, types, ap);
                va_end(ap);
                if (r < 0)
                        return r;
        }
        return sd_bus_call_async(w->bus, slot, m, handler, userdata, CALL_TIMEOUT_USEC);
}

static void snapshot_start(CoreWatch *w) {
        int r;

        snapshot_cancel(w);
        w->snapshot_running = true;
        r = call_core(w, &w->introspect_slot, CORE_ROOT, "org.freedesktop.DBus.Introspectable", "Introspect",
                      on_introspect_reply, w, NULL);
        if (r >= 0)
                r = call_core(w, &w->props_slot, CORE_ROOT, PROPERTIES_IFACE, "GetAll", on_props_reply, w, "s",
                              MANAGER_IFACE);
        if (r >= 0)
                r = call_core(w, &w->objects_slot, CORE_ROOT, OBJECT_MANAGER_IFACE, "GetManagedObjects",
                              on_objects_reply, w, NULL);
        if (r < 0) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                (void) sd_bus_error_set_errno(&e, r);
                snapshot_failed(w, &e);
                sd_bus_error_free(&e);
        }
}

/* ---- the core's signals */

static void group_signal_props(CoreWatch *w, sd_bus_message *m, const char *path) {
        const char *iface;
        unsigned change = 0;
        Group *g = NULL;
        int kind, r;

        r = sd_bus_message_read_basic(m, 's', &iface);
        if (r < 0)
                return;
        if (streq(path, CORE_ROOT) && streq(iface, MANAGER_IFACE)) {
                /* Older than the snapshot's GetAll answer while that is outstanding. */
                if (w->snapshot_running && !w->got_props)
                        return;
                r = read_props(w, m, NULL, &change);
                if (r < 0)
                        return (void) log_warning_errno(r, "Bad PropertiesChanged from the core: %m");
                if (change && w->cb.core_changed)
                        w->cb.core_changed(w, change, w->userdata);
                return;
        }
        kind = kind_of_iface(iface);
        if (kind < 0 || (w->snapshot_running && !w->got_objects))
                return;
        g = group_by_path(w, path);
        if (!g || g->kind != (GroupKind) kind)
                return;
        r = read_props(w, m, g, &change);
        if (r < 0)
                return (void) log_warning_errno(r, "Bad PropertiesChanged from the core: %m");
        if (change && w->cb.group_changed)
                w->cb.group_changed(w, g, change, w->userdata);
}

static void interfaces_removed(CoreWatch *w, sd_bus_message *m) {
        const char *path, *iface;
        Group *g;
        int r;

        if (w->snapshot_running && !w->got_objects)
                return;
        r = sd_bus_message_read_basic(m, 'o', &path);
        if (r < 0)
                return;
        g = group_by_path(w, path);
        if (!g)
                return;
        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "s");
        if (r < 0)
                return;
        while (sd_bus_message_read_basic(m, 's', &iface) > 0) {
                if (kind_of_iface(iface) != (int) g->kind)
                        continue;
                g->present = false;
                /* A tap deliberately removed (a sync or reload) leaves Home Assistant; boards and sensors
                 * are physical and may come back (they expire after 7 days unseen). */
                if (g->kind == GROUP_TAP && w->cb.tap_removed)
                        w->cb.tap_removed(w, g, w->userdata);
                else if (w->cb.group_changed)
                        w->cb.group_changed(w, g, CHANGE_PERSIST, w->userdata);
                return;
        }
}

static void drink_recorded(CoreWatch *w, sd_bus_message *m) {
        DrinkInfo d;
        int r;

        r = sd_bus_message_read(m, SIG_DRINK_RECORDED, &d.uuid, &d.drink_id, &d.flow_id, &d.meter, &d.username,
                                &d.ticks, &d.volume_ml, &d.start_time, &d.pour_time, &d.duration);
        if (r < 0)
                return (void) log_warning_errno(r, "Bad DrinkRecorded from the core: %m");
        if (w->cb.drink)
                w->cb.drink(w, &d, w->userdata);
}

static void ghost_flow(CoreWatch *w, sd_bus_message *m) {
        GhostInfo gi;
        int r;

        if (!w->model->core.has_ghost_flow)
                return;
        r = sd_bus_message_read(m, SIG_GHOST_FLOW, &gi.meter, &gi.rule, &gi.ticks, &gi.volume_ml, &gi.start_time,
                                &gi.end_time, &gi.flow_id, &gi.tick_series, &gi.mode);
        if (r < 0)
                return (void) log_warning_errno(r, "Bad GhostFlow from the core: %m");
        if (w->cb.ghost_flow)
                w->cb.ghost_flow(w, &gi, w->userdata);
}

static void pour_flagged(CoreWatch *w, sd_bus_message *m) {
        FlagInfo f;
        int r;

        if (!w->model->core.has_pour_flagged)
                return;
        r = sd_bus_message_read(m, SIG_POUR_FLAGGED, &f.flow_id, &f.meter, &f.flag, &f.mode);
        if (r < 0)
                return (void) log_warning_errno(r, "Bad PourFlagged from the core: %m");
        if (w->cb.pour_flagged)
                w->cb.pour_flagged(w, &f, w->userdata);
}

static bool is_event(sd_bus_message *m) {
        return sd_bus_message_is_signal(m, MANAGER_IFACE, "DrinkRecorded") > 0 ||
               sd_bus_message_is_signal(m, MANAGER_IFACE, "GhostFlow") > 0 ||
               sd_bus_message_is_signal(m, MANAGER_IFACE, "PourFlagged") > 0;
}

static void apply_message(CoreWatch *w, sd_bus_message *m) {
        const char *path = sd_bus_message_get_path(m);

        if (!path)
                return;
        if (log_get_max_level() >= LOG_DEBUG) {
                _cleanup_(freep) char *e = escape_for_log(path);
                log_debug("Signal %s.%s on %s", sd_bus_message_get_interface(m) ?: "?",
                          sd_bus_message_get_member(m) ?: "?", e ?: "?");
        }
        if (sd_bus_message_is_signal(m, PROPERTIES_IFACE, "PropertiesChanged") > 0)
                group_signal_props(w, m, path);
        else if (!streq(path, CORE_ROOT))
                return;
        else if (sd_bus_message_is_signal(m, OBJECT_MANAGER_IFACE, "InterfacesAdded") > 0) {
                const char *opath;
                if (w->snapshot_running && !w->got_objects)
                        return;
                if (sd_bus_message_read_basic(m, 'o', &opath) > 0 && read_object(w, m, opath, true) < 0)
                        log_warning("Bad InterfacesAdded from the core");
        } else if (sd_bus_message_is_signal(m, OBJECT_MANAGER_IFACE, "InterfacesRemoved") > 0)
                interfaces_removed(w, m);
        else if (sd_bus_message_is_signal(m, MANAGER_IFACE, "DrinkRecorded") > 0)
                drink_recorded(w, m);
        else if (sd_bus_message_is_signal(m, MANAGER_IFACE, "GhostFlow") > 0)
                ghost_flow(w, m);
        else if (sd_bus_message_is_signal(m, MANAGER_IFACE, "PourFlagged") > 0)
                pour_flagged(w, m);
}

/* ---- the core's owner */

static void core_left(CoreWatch *w) {
        bool was_online = w->model->core.online;

        snapshot_cancel(w);
        free(w->owner);
        w->owner = NULL;
        w->model->core.online = false;
        if (was_online) {
                log_warning("Core left the bus");
                if (w->cb.left)
                        w->cb.left(w, w->userdata);
        }
}

static int set_owner(CoreWatch *w, const char *owner) {
        char *o;

        if (streq_ptr(w->owner, owner))
                return 0;
        if (w->owner)
                core_left(w);
        if (isempty(owner))
                return 0;
        o = strdup(owner);
        if (!o)
                return log_error_errno(-ENOMEM, "Out of memory");
        w->owner = o;
        snapshot_start(w);
        return 1;
}

static int on_name_owner(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CoreWatch *w = userdata;
        const char *owner = NULL;

        w->owner_slot = sd_bus_slot_unref(w->owner_slot);
        if (!sd_bus_message_is_method_error(m, NULL))
                (void) sd_bus_message_read(m, "s", &owner);
        else if (!sd_bus_message_is_method_error(m, "org.freedesktop.DBus.Error.NameHasNoOwner")) {
                const sd_bus_error *e = sd_bus_message_get_error(m);
                _cleanup_(freep) char *msg = escape_for_log(e->message ?: e->name ?: "?");
                log_warning("GetNameOwner(%s) failed: %s", CORE_NAME, msg ?: "?");
        }
        /* A NameOwnerChanged that came first already told the same or newer news. */
        if (owner && !w->owner)
                (void) set_owner(w, owner);
        if (!w->owner) {
                log_info("Waiting for the core (%s) to appear on the bus", CORE_NAME);
                send_ready(w);
        }
        return 0;
}

static void name_owner_changed(CoreWatch *w, sd_bus_message *m) {
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !streq(name, CORE_NAME))
                return;
        if (!isempty(old_owner) && streq_ptr(w->owner, old_owner))
                core_left(w);
        if (!isempty(new_owner))
                (void) set_owner(w, new_owner);
}

static int on_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CoreWatch *w = userdata;
        const char *sender;

        if (sd_bus_message_is_signal(m, NULL, NULL) <= 0)
                return 0;
        if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.Local", "Disconnected") > 0) {
                if (w->cb.failed)
                        w->cb.failed(w, w->userdata);
                return 0;
        }
        sender = sd_bus_message_get_sender(m);
        if (!sender)
                return 0;
        if (streq(sender, "org.freedesktop.DBus")) {
                if (sd_bus_message_is_signal(m, "org.freedesktop.DBus", "NameOwnerChanged") > 0)
                        name_owner_changed(w, m);
                return 0;
        }
        if (!w->owner || !streq(sender, w->owner))
                return 0;
        if (w->snapshot_running && is_event(m)) {
                sd_bus_message **a = realloc(w->held, (w->n_held + 1) * sizeof(sd_bus_message *));
                if (!a) {
                        log_error("Out of memory holding a signal of the core");
                        return 0;
                }
                w->held = a;
                w->held[w->n_held++] = sd_bus_message_ref(m);
                return 0;
        }
        apply_message(w, m);
        return 0;
}

/* ---- set-up */

static int add_match(CoreWatch *w, const char *rule) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        /* The rule goes to the bus only: the filter does the local matching (by unique name). */
        r = sd_bus_message_new_method_call(w->bus, &m, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                           "org.freedesktop.DBus", "AddMatch");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", rule);
        if (r >= 0)
                r = sd_bus_send(w->bus, m, NULL);
        if (r < 0)
                return log_error_errno(r, "Cannot add the match rule %s: %m", rule);
        return 0;
}

int core_watch_new(CoreWatch **ret, sd_event *event, Model *model, bool session_bus, const CoreWatchCallbacks *cb,
                   void *userdata) {
        _cleanup_(core_watch_freep) CoreWatch *w = NULL;
        int r;

        assert_return(ret && event && model && cb, -EINVAL);

        w = calloc(1, sizeof(CoreWatch));
        if (!w)
                return log_error_errno(-ENOMEM, "Out of memory");
        w->event = sd_event_ref(event);
        w->model = model;
        w->cb = *cb;
        w->userdata = userdata;

        r = session_bus ? sd_bus_open_user_with_description(&w->bus, "session-bus") :
                          sd_bus_open_system_with_description(&w->bus, "system-bus");
        if (r < 0)
                return r;
        r = sd_bus_attach_event(w->bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Cannot attach the bus to the event loop: %m");
        r = sd_bus_add_filter(w->bus, &w->filter_slot, on_message, w);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the bus: %m");

        *ret = TAKE_PTR(w);
        return 0;
}

int core_watch_start(CoreWatch *w) {
        /* The core's signals this module uses, and no others: FlowUpdated (one per meter report),
         * the flow objects' PropertiesChanged and ThermoReading would triple the messages during a
         * pour and be thrown away here (the taps' properties carry the same, coalesced). */
        static const char *const rules[] = {
                "type='signal',sender='" CORE_NAME "',path_namespace='" CORE_ROOT "',interface='" PROPERTIES_IFACE
                "',member='PropertiesChanged',arg0='" MANAGER_IFACE "'",
                "type='signal',sender='" CORE_NAME "',path_namespace='" CORE_ROOT "',interface='" PROPERTIES_IFACE
                "',member='PropertiesChanged',arg0='" TAP_IFACE "'",
                "type='signal',sender='" CORE_NAME "',path_namespace='" CORE_ROOT "',interface='" PROPERTIES_IFACE
                "',member='PropertiesChanged',arg0='" CONTROLLER_IFACE "'",
                "type='signal',sender='" CORE_NAME "',path_namespace='" CORE_ROOT "',interface='" PROPERTIES_IFACE
                "',member='PropertiesChanged',arg0='" SENSOR_IFACE "'",
                "type='signal',sender='" CORE_NAME "',path='" CORE_ROOT "',interface='" OBJECT_MANAGER_IFACE "'",
                "type='signal',sender='" CORE_NAME "',path='" CORE_ROOT "',interface='" MANAGER_IFACE
                "',member='DrinkRecorded'",
                "type='signal',sender='" CORE_NAME "',path='" CORE_ROOT "',interface='" MANAGER_IFACE
                "',member='GhostFlow'",
                "type='signal',sender='" CORE_NAME "',path='" CORE_ROOT "',interface='" MANAGER_IFACE
                "',member='PourFlagged'",
                "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" CORE_NAME "'",
        };
        int r;

        for (size_t i = 0; i < ELEMENTSOF(rules); i++) {
                r = add_match(w, rules[i]);
                if (r < 0)
                        return r;
        }
        /* Answered after the rules are in place: the bus handles one peer's calls in order. */
        r = sd_bus_call_method_async(w->bus, &w->owner_slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetNameOwner", on_name_owner, w, "s", CORE_NAME);
        if (r < 0)
                return log_error_errno(r, "Cannot ask for the core's owner: %m");
        return 0;
}

CoreWatch *core_watch_free(CoreWatch *w) {
        if (!w)
                return NULL;
        snapshot_cancel(w);
        sd_event_source_disable_unref(w->retry_timer);
        sd_bus_slot_unref(w->owner_slot);
        sd_bus_slot_unref(w->filter_slot);
        if (w->bus) {
                (void) sd_bus_flush(w->bus);
                sd_bus_close_unref(w->bus);
        }
        sd_event_unref(w->event);
        free(w->owner);
        free(w);
        return NULL;
}

bool core_watch_is_online(const CoreWatch *w) {
        return w && w->owner && w->model->core.online;
}

typedef struct CallContext {
        CoreCallDone done;
        void *userdata;
} CallContext;

static int on_call_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        CallContext *c = userdata;

        c->done(sd_bus_message_is_method_error(m, NULL) ? sd_bus_message_get_error(m) : NULL, c->userdata);
        return 0;
}

int core_watch_call_meter(CoreWatch *w, const char *method, const char *meter, CoreCallDone done, void *userdata) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        CallContext *c;
        int r;

        assert_return(w && method && meter && done, -EINVAL);

        c = malloc(sizeof(CallContext));
        if (!c)
                return -ENOMEM;
        *c = (CallContext) { done, userdata };
        r = call_core(w, &slot, CORE_ROOT, MANAGER_IFACE, method, on_call_reply, c, "s", meter);
        if (r < 0) {
                free(c);
                return r;
        }
        /* The slot owns the context and lives until the reply (or the connection) is gone. */
        (void) sd_bus_slot_set_destroy_callback(slot, free);
        return sd_bus_slot_set_floating(slot, true);
}
