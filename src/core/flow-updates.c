/* Coalesced kegnet FlowUpdates: see flow-updates.h. One entry per flow that has been announced and
 * not completed (a handful: one per pouring meter), found by a linear search; its strings are copied
 * when the flow appears and when its owner changes, so a pour costs no allocation per reading. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LOG_COMPONENT "kegnet"
#include "log.h"

#include "flow-updates.h"
#include "list.h"
#include "util-event.h"

typedef struct Entry Entry;
struct Entry {
        LIST_FIELDS(Entry, entries);
        KegnetFlowUpdate last;          /* the newest snapshot; its strings are the two below */
        char *meter_name, *username;
        bool pending;                   /* 'last' has not been sent */
        uint64_t sent_at;               /* monotonic */
};

struct FlowUpdates {
        sd_event *event;
        KegnetServer *server;
        uint64_t interval;
        Entry *entries;
        sd_event_source *timer;
};

static void entry_free(FlowUpdates *u, Entry *e) {
        LIST_REMOVE(entries, u->entries, e);
        free(e->meter_name);
        free(e->username);
        free(e);
}

static uint64_t updates_now(FlowUpdates *u) {
        uint64_t now = 0;

        (void) sd_event_now(u->event, CLOCK_MONOTONIC, &now);
        return now;
}

static void entry_send(FlowUpdates *u, Entry *e, uint64_t now) {
        (void) kegnet_server_broadcast(u->server, &(KegnetMessage) {
                .kind = KEGNET_FLOW_UPDATE,
                .flow_update = e->last,
        });
        e->pending = false;
        e->sent_at = now;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* The timer fires when the first held snapshot is due (never while none is held). */
static void updates_rearm(FlowUpdates *u) {
        uint64_t next = UINT64_MAX;

        LIST_FOREACH(entries, e, u->entries)
                if (e->pending && e->sent_at + u->interval < next)
                        next = e->sent_at + u->interval;
        if (next == UINT64_MAX) {
                event_timer_disarm(u->timer);
                return;
        }
        if (event_timer_arm(u->event, &u->timer, next, FLOW_UPDATES_ACCURACY, on_timer, u) < 0)
                /* Without the timer, send at once: late coalescing is worse than none. */
                LIST_FOREACH(entries, e, u->entries)
                        if (e->pending)
                                entry_send(u, e, updates_now(u));
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        FlowUpdates *u = userdata;
        uint64_t now = updates_now(u);

        LIST_FOREACH(entries, e, u->entries)
                if (e->pending && e->sent_at + u->interval <= now)
                        entry_send(u, e, now);
        updates_rearm(u);
        return 0;
}

static int copy_string(char **dst, const char *src) {
        char *c = NULL;

        if (src) {
                c = strdup(src);
                if (!c)
                        return -ENOMEM;
        }
        free(*dst);
        *dst = c;
        return 0;
}

void flow_updates_push(FlowUpdates *u, const KegnetFlowUpdate *f) {
        uint64_t now;
        bool at_once;
        Entry *e = NULL;

        assert_return(u && f && f->meter_name, );

        now = updates_now(u);
        LIST_FOREACH(entries, i, u->entries)
                if (i->last.flow_id == f->flow_id) {
                        e = i;
                        break;
                }
        if (!e) {
                e = calloc(1, sizeof *e);
                if (!e || copy_string(&e->meter_name, f->meter_name) < 0 ||
                    copy_string(&e->username, f->username) < 0) {
                        /* No room to hold it back: it goes out as it is. */
                        if (e) {
                                free(e->meter_name);
                                free(e);
                        }
                        log_debug("Out of memory coalescing FlowUpdates; sending at once");
                        (void) kegnet_server_broadcast(u->server, &(KegnetMessage) {
                                .kind = KEGNET_FLOW_UPDATE, .flow_update = *f });
                        return;
                }
                LIST_PREPEND(entries, u->entries, e);
                at_once = true;
        } else {
                at_once = f->state != e->last.state || !streq_ptr(f->username, e->username) ||
                          now >= e->sent_at + u->interval;
                if (!streq_ptr(f->username, e->username) && copy_string(&e->username, f->username) < 0) {
                        log_debug("Out of memory coalescing FlowUpdates; sending at once");
                        (void) kegnet_server_broadcast(u->server, &(KegnetMessage) {
                                .kind = KEGNET_FLOW_UPDATE, .flow_update = *f });
                        entry_free(u, e);
                        updates_rearm(u);
                        return;
                }
        }

        e->last = *f;
        e->last.meter_name = e->meter_name;
        e->last.username = e->username;
        if (at_once) {
                entry_send(u, e, now);
                if (f->state == KEGNET_FLOW_COMPLETED)
                        entry_free(u, e);
                updates_rearm(u);
        } else if (!e->pending) {
                e->pending = true;
                updates_rearm(u);
        }
}

int flow_updates_new(FlowUpdates **ret, sd_event *event, KegnetServer *server, uint64_t interval_usec) {
        FlowUpdates *u;

        assert_return(ret && event && server, -EINVAL);

        u = calloc(1, sizeof *u);
        if (!u)
                return -ENOMEM;
        u->event = sd_event_ref(event);
        u->server = server;
        u->interval = interval_usec;
        *ret = u;
        return 0;
}

FlowUpdates *flow_updates_free(FlowUpdates *u) {
        if (!u)
                return NULL;
        while (u->entries)
                entry_free(u, u->entries);
        u->timer = sd_event_source_disable_unref(u->timer);
        sd_event_unref(u->event);
        free(u);
        return NULL;
}
