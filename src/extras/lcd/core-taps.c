/* The core's taps on D-Bus: see core-taps.h. The bus side (owner tracking, snapshot, signals) is
 * the core client's; this file turns its model into the list of tap screens and retries a lost
 * bus connection (lcd_daemon keeps running without one, unlike kegbot_mqtt). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LOG_COMPONENT "lcd"
#include "log.h"

#include "core-taps.h"
#include "core-watch.h"
#include "model.h"
#include "util-event.h"

#define RECONNECT_MIN_USEC USEC_PER_SEC
#define RECONNECT_MAX_USEC (60 * USEC_PER_SEC)
#define RECONNECT_ACCURACY_USEC USEC_PER_SEC

struct CoreTaps {
        sd_event *event;
        bool session_bus;
        Model *model;
        CoreWatch *watch;               /* NULL while the bus is unreachable */
        bool bus_lost;                  /* the watch's connection is gone; it is replaced by the timer */
        sd_event_source *reconnect_timer;
        uint64_t reconnect_delay;
        bool bus_warned;                /* the bus is unreachable and that was said */

        CoreTapInfo *taps;              /* views of the model's present taps */
        size_t n_taps;

        CoreTapsChanged on_changed;
        void *userdata;
};

static const char *bus_kind(const CoreTaps *c) {
        return c->session_bus ? "session" : "system";
}

static int tap_compare(const void *a, const void *b) {
        const CoreTapInfo *x = a, *y = b;
        return strcmp(x->meter_name, y->meter_name);
}

/* The screens from the model: every tap the core has now, in meter order. */
static void core_taps_rebuild(CoreTaps *c) {
        CoreTapInfo *taps = NULL;
        size_t n = 0;

        if (c->watch && !c->bus_lost && core_watch_is_online(c->watch)) {
                taps = calloc(MAX(model_count(c->model, GROUP_TAP, true), 1u), sizeof(CoreTapInfo));
                if (!taps)
                        log_error("Out of memory: no tap screens");
                for (size_t i = 0; taps && i < c->model->n_groups; i++) {
                        const Group *g = c->model->groups[i];

                        if (g->kind != GROUP_TAP || !g->live || !g->present)
                                continue;
                        taps[n++] = (CoreTapInfo) {
                                .meter_name = g->name,
                                .name = g->tap_name,
                                .ml_per_tick = g->ml_per_tick,
                                .flow_state = g->flow_state,
                                .flow_volume_ml = g->flow_volume_ml,
                                .flow_username = g->flow_user,
                        };
                }
                if (n > 1)
                        qsort(taps, n, sizeof(CoreTapInfo), tap_compare);
        }
        free(c->taps);
        c->taps = taps;
        c->n_taps = n;
        if (c->on_changed)
                c->on_changed(c, c->userdata);
}

const CoreTapInfo *core_taps_get(const CoreTaps *c, size_t *ret_n) {
        *ret_n = c->n_taps;
        return c->taps;
}

/* ---- the core client's callbacks */

static void on_ready(CoreWatch *w, void *userdata) {
        CoreTaps *c = userdata;

        if (!core_watch_is_online(w))
                log_info("Waiting for kegbot_core on the %s bus: no tap screens until it is there.", bus_kind(c));
}

static void on_appeared(CoreWatch *w, void *userdata) {
        CoreTaps *c = userdata;

        core_taps_rebuild(c);
        log_info("kegbot_core is on the %s bus: %zu tap screen(s).", bus_kind(c), c->n_taps);
}

static void on_left(CoreWatch *w, void *userdata) {
        CoreTaps *c = userdata;

        log_info("kegbot_core left the %s bus: no tap screens until it is back.", bus_kind(c));
        core_taps_rebuild(c);
}

static void on_group_changed(CoreWatch *w, Group *g, unsigned change, void *userdata) {
        /* While a snapshot is read the core is not online yet: on_appeared() shows its result whole. */
        if (g->kind == GROUP_TAP && core_watch_is_online(w))
                core_taps_rebuild(userdata);
}

static void on_tap_removed(CoreWatch *w, Group *g, void *userdata) {
        CoreTaps *c = userdata;

        /* A screen shows what the core has; nothing is kept for a tap it dropped. */
        model_remove(c->model, g);
        core_taps_rebuild(c);
}

static void core_taps_retry_later(CoreTaps *c);

static void on_failed(CoreWatch *w, void *userdata) {
        CoreTaps *c = userdata;

        log_warning("Lost the connection to the %s bus; no tap screens until it is back.", bus_kind(c));
        c->bus_warned = true;
        c->bus_lost = true;
        core_taps_rebuild(c);
        c->reconnect_delay = RECONNECT_MIN_USEC;
        core_taps_retry_later(c);
}

static const CoreWatchCallbacks watch_callbacks = {
        .ready = on_ready,
        .appeared = on_appeared,
        .left = on_left,
        .group_changed = on_group_changed,
        .tap_removed = on_tap_removed,
        .failed = on_failed,
};

/* ---- the connection */

/* A fresh model and client on a new connection: the snapshot tells everything again. */
static int core_taps_connect(CoreTaps *c) {
        _cleanup_(model_freep) Model *model = NULL;
        int r;

        c->watch = core_watch_free(c->watch);
        c->model = model_free(c->model);
        c->bus_lost = false;

        r = model_new(&model);
        if (r < 0)
                return r;
        r = core_watch_new(&c->watch, c->event, model, c->session_bus, &watch_callbacks, c);
        if (r < 0)
                return r;
        c->model = TAKE_PTR(model);
        r = core_watch_start(c->watch);
        if (r < 0) {
                c->watch = core_watch_free(c->watch);
                return r;
        }
        return 0;
}

static int on_reconnect(sd_event_source *s, uint64_t usec, void *userdata) {
        CoreTaps *c = userdata;
        int r;

        r = core_taps_connect(c);
        if (r == -ENOMEM)
                log_error("Out of memory following the core");
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

static void core_taps_retry_later(CoreTaps *c) {
        int r;

        r = event_timer_arm_relative(c->event, &c->reconnect_timer, c->reconnect_delay, RECONNECT_ACCURACY_USEC,
                                     on_reconnect, c);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the bus reconnect timer: %m");
        c->reconnect_delay = MIN(c->reconnect_delay * 2, RECONNECT_MAX_USEC);
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
        core_watch_free(c->watch);
        model_free(c->model);
        sd_event_source_disable_unref(c->reconnect_timer);
        free(c->taps);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}
