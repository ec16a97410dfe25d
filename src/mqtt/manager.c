/* kegbot_mqtt's Manager: see manager.h.
 *
 * Publication rules in one place:
 * - state documents: on change, at most once a second per document (sensors once per 10 s, never
 *   while silent), only when the text differs; all of them at every CONNACK and every
 *   --mqtt_state_interval while the core is on the bus;
 * - discovery configs: at every CONNACK and Home Assistant birth, and when their text changes;
 *   never with states or on a timer;
 * - events: at once, or into the bounded outage queue while not connected;
 * - the ledger (Model.ledger) lists every retained topic published and not yet emptied, so a
 *   config or state topic nothing produces any more is emptied, also after a restart. */
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>

#define LOG_COMPONENT "main"
#include "log.h"

#include "core-watch.h"
#include "daemon.h"
#include "keg.h"
#include "manager.h"
#include "model.h"
#include "state-file.h"
#include "util-escape.h"
#include "util-event.h"
#include "util-io.h"
#include "util-ratelimit.h"
#include "util-string.h"
#include "util-strv.h"
#include "util-utf8.h"

#define FLUSH_INTERVAL_USEC USEC_PER_SEC
#define SENSOR_INTERVAL_USEC (10 * USEC_PER_SEC)
#define SAVE_INTERVAL_USEC (10 * USEC_PER_SEC)
#define STOP_TIMEOUT_USEC (2 * USEC_PER_SEC)
#define EXPIRY_CHECK_USEC (3600 * USEC_PER_SEC)
#define GROUP_EXPIRY_USEC (7 * 24 * 3600 * USEC_PER_SEC)
#define UNKNOWN_COMMAND_LOG_USEC (60 * USEC_PER_SEC)
/* How late the timers may fire: the state flush 10 ms (it paces one message per second), the
 * stop wait 10 ms, the republish, grace and save timers 100 ms, the hourly expiry check 1 min. */
#define FLUSH_ACCURACY_USEC (10 * USEC_PER_MSEC)
#define STOP_ACCURACY_USEC (10 * USEC_PER_MSEC)
#define COARSE_ACCURACY_USEC (100 * USEC_PER_MSEC)
#define EXPIRY_ACCURACY_USEC (60 * USEC_PER_SEC)

typedef struct QueuedEvent {
        char *topic;
        char *payload;
        size_t len;
} QueuedEvent;

struct Manager {
        sd_event *event;
        ManagerConfig cfg;
        const Settings *s;
        Model *model;
        CoreWatch *core;
        Broker *broker;
        KegClient *keg;                 /* NULL without --api_url */
        int state_dir_fd;
        char *state_path;

        char *status_topic;
        char *core_topic;
        char *commands_topic;

        sd_event_source *flush_timer;
        sd_event_source *republish_timer;
        sd_event_source *config_defer;
        sd_event_source *grace_timer;
        sd_event_source *expiry_timer;
        sd_event_source *save_timer;
        sd_event_source *stop_timer;

        QueuedEvent *queue;             /* ring of cfg.queue_limit */
        size_t queue_first, queue_len;
        uint64_t dropped_this_outage;

        bool ready;
        bool grace_waiting;             /* the core appeared with LastSync 0: wait for a sync */
        bool state_dirty;
        bool save_failed;
        uint64_t last_save;
        LogRateLimit unknown_command_log;       /* one line a minute */
        bool stopping;
        int stop_mid;
        int exit_code;
};

static int on_save_timer(sd_event_source *s, uint64_t usec, void *userdata);
static int on_flush_timer(sd_event_source *s, uint64_t usec, void *userdata);
static int on_republish_timer(sd_event_source *s, uint64_t usec, void *userdata);
static int on_grace_timer(sd_event_source *s, uint64_t usec, void *userdata);
static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata);

static uint64_t now_mono(Manager *m) {
        uint64_t t = 0;
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &t);
        return t;
}

static uint64_t now_real(Manager *m) {
        uint64_t t = 0;
        (void) sd_event_now(m->event, CLOCK_REALTIME, &t);
        return t;
}

static bool core_online(Manager *m) {
        return m->model->core.online;
}

static bool connected(Manager *m) {
        return broker_is_connected(m->broker);
}

/* ---- status */

static char *status_text(Manager *m) {
        _cleanup_(freep) char *broker = NULL, *core = NULL;
        unsigned retry;

        if (connected(m))
                broker = strdup_printf("Connected to %s", broker_address(m->broker));
        else if ((retry = broker_retry_in(m->broker)) > 0)
                broker = strdup_printf("Broker unreachable, retry in %u s", retry);
        else
                broker = strdup_printf("Connecting to %s", broker_address(m->broker));
        if (core_online(m)) {
                size_t t = model_count(m->model, GROUP_TAP, true), b = model_count(m->model, GROUP_BOARD, true),
                       s = model_count(m->model, GROUP_SENSOR, true);
                core = strdup_printf("core online; %zu tap%s, %zu board%s, %zu sensor%s", t, t == 1 ? "" : "s",
                                     b, b == 1 ? "" : "s", s, s == 1 ? "" : "s");
        } else
                core = strdup("waiting for the core");
        if (!broker || !core)
                return NULL;
        return strdup_printf("%s; %s", broker, core);
}

static void update_status(Manager *m) {
        _cleanup_(freep) char *text = NULL;

        if (m->ready && (text = status_text(m)))
                (void) daemon_notify_status("%s", text);
}

/* ---- state file */

static int save_state(Manager *m) {
        _cleanup_(freep) char *text = NULL;
        size_t len = 0;
        int r;

        event_timer_disarm(m->save_timer);
        r = state_file_format(m->model, m->s, &text, &len);
        if (r >= 0)
                r = io_write_file_atomic(m->state_dir_fd, STATE_FILE_NAME, text, len, 0600);
        if (r < 0) {
                /* Once per failure streak: the next change tries again. */
                if (!m->save_failed)
                        log_warning_errno(r, "Cannot write the state file %s: %m", m->state_path);
                m->save_failed = true;
                return r;
        }
        if (m->save_failed)
                log_info("State file %s written again", m->state_path);
        m->save_failed = false;
        m->state_dirty = false;
        m->last_save = now_mono(m);
        return 0;
}

/* urgent: a served total changed (written at once); otherwise at most every 10 s. */
static void persist(Manager *m, bool urgent) {
        uint64_t due;

        m->state_dirty = true;
        if (urgent) {
                (void) save_state(m);
                return;
        }
        if (event_timer_is_armed(m->save_timer))
                return;
        due = m->last_save + SAVE_INTERVAL_USEC;
        if (event_timer_arm(m->event, &m->save_timer, MAX(due, now_mono(m)), COARSE_ACCURACY_USEC, on_save_timer,
                            m) < 0)
                (void) save_state(m);
}

static int on_save_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (m->state_dirty)
                (void) save_state(m);
        return 0;
}

/* ---- publishing */

static int publish(Manager *m, const char *topic, const char *payload, size_t len, bool retain, const char *group) {
        int r;

        r = broker_publish(m->broker, topic, payload, len, retain, NULL);
        if (r < 0) {
                if (r != -ENOTCONN) {
                        _cleanup_(freep) char *e = escape_for_log(topic);
                        log_warning_errno(r, "Cannot publish %s: %m", e ?: "?");
                }
                return r;
        }
        log_debug("Publish %s (%zu bytes, retain %d)", topic, len, retain);
        if (retain && group) {
                bool known = ledger_find(m->model, topic);
                r = ledger_put(m->model, topic, group, NULL);
                if (r < 0)
                        return log_error_errno(r, "Out of memory");
                if (!known)
                        persist(m, false);
        }
        return 0;
}

/* An empty retained payload: the broker forgets the topic. */
static int clear_topic(Manager *m, const char *topic) {
        int r;

        r = broker_publish(m->broker, topic, "", 0, true, NULL);
        if (r < 0)
                return r;
        log_debug("Publish %s (0 bytes, retain 1)", topic);
        ledger_remove(m->model, topic);
        persist(m, false);
        return 0;
}

static void publish_status(Manager *m) {
        const char *v = core_online(m) ? "online" : "offline";

        if (connected(m))
                (void) publish(m, m->status_topic, v, strlen(v), true, NODE_GROUP);
}

static bool group_publishable(const Group *g) {
        return g->live && !(g->kind == GROUP_SENSOR && g->silent);
}

/* Renders and publishes one state document; force: even if the text is the same. */
static void publish_doc(Manager *m, Group *g, bool force) {
        _cleanup_(freep) char *text = NULL, *topic = NULL;
        StateDoc *doc = g ? &g->doc : &m->model->core_doc;
        size_t len = 0;
        int r;

        doc->dirty = false;
        if (g)
                r = doc_group(m->model, g, now_mono(m), now_real(m), &text, &len);
        else
                r = doc_core(m->model, m->s, &text, &len);
        if (r < 0)
                return (void) log_warning_errno(r, "Cannot render the state of %s: %m", g ? g->id : "the core");
        if (!force && streq_ptr(text, doc->text))
                return;
        topic = g ? topic_group(m->s, g) : strdup(m->core_topic);
        if (!topic)
                return (void) log_error("Out of memory");
        if (publish(m, topic, text, len, true, g ? g->id : NODE_GROUP) < 0)
                return;
        free(doc->text);
        doc->text = TAKE_PTR(text);
        doc->published = now_mono(m);
}

static uint64_t doc_interval(const Group *g) {
        return g && g->kind == GROUP_SENSOR ? SENSOR_INTERVAL_USEC : FLUSH_INTERVAL_USEC;
}

/* Every state document at once (CONNACK, the core's appearance, SIGHUP). periodic: the timer's
 * republish, which leaves out a document published within its own interval (just now, by a
 * change): it is as fresh as a republish would make it, and a second copy would break the
 * cadence of one message per second (per 10 s for a sensor). */
static void publish_all_docs(Manager *m, bool periodic) {
        uint64_t now = now_mono(m);

        if (m->model->core.seen && !(periodic && now < m->model->core_doc.published + doc_interval(NULL)))
                publish_doc(m, NULL, true);
        for (size_t i = 0; i < m->model->n_groups; i++) {
                Group *g = m->model->groups[i];
                if (group_publishable(g) && !(periodic && now < g->doc.published + doc_interval(g)))
                        publish_doc(m, g, true);
        }
}

/* The flush: every changed document whose last publication is old enough; re-armed for the
 * earliest one still waiting. A pouring tap is looked at every second (its flow rate moves). */
static void flush(Manager *m) {
        uint64_t now = now_mono(m), next = UINT64_MAX;

        /* Not connected: the CONNACK republishes everything. The core not (yet) on the bus: its
         * snapshot is incomplete, and its appearance republishes everything. */
        if (!connected(m) || !core_online(m))
                return;
        if (m->model->core_doc.dirty) {
                if (now >= m->model->core_doc.published + FLUSH_INTERVAL_USEC)
                        publish_doc(m, NULL, false);
                else
                        next = m->model->core_doc.published + FLUSH_INTERVAL_USEC;
        }
        for (size_t i = 0; i < m->model->n_groups; i++) {
                Group *g = m->model->groups[i];
                uint64_t interval = doc_interval(g);
                /* Its flow rate moves even without news from the core. */
                bool moving = g->kind == GROUP_TAP && tap_pouring(g);

                if (!group_publishable(g)) {
                        g->doc.dirty = false;
                        continue;
                }
                if (moving)
                        g->doc.dirty = true;
                if (!g->doc.dirty)
                        continue;
                if (now >= g->doc.published + interval) {
                        publish_doc(m, g, false);
                        if (moving)
                                g->doc.dirty = true;
                }
                if (g->doc.dirty)
                        next = MIN(next, MAX(g->doc.published + interval, now + FLUSH_INTERVAL_USEC / 10));
        }
        if (next == UINT64_MAX)
                return;
        if (event_timer_arm(m->event, &m->flush_timer, next, FLUSH_ACCURACY_USEC, on_flush_timer, m) < 0)
                log_error("Cannot schedule the state flush");
}

static int on_flush_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        flush(userdata);
        return 0;
}

/* A document changed: flushed now if it may be, else when it may. */
static void mark_dirty(Manager *m, StateDoc *doc) {
        doc->dirty = true;
        if (event_timer_is_armed(m->flush_timer)) {
                uint64_t when = 0;
                if (sd_event_source_get_time(m->flush_timer, &when) >= 0 && when <= now_mono(m))
                        return;
        }
        if (event_timer_arm(m->event, &m->flush_timer, now_mono(m), FLUSH_ACCURACY_USEC, on_flush_timer, m) < 0)
                log_error("Cannot schedule the state flush");
}

static void republish_restart(Manager *m) {
        uint64_t interval = (uint64_t) m->cfg.state_interval * USEC_PER_SEC;

        if (!connected(m) || !core_online(m))
                return event_timer_disarm(m->republish_timer);
        if (event_timer_arm_relative(m->event, &m->republish_timer, interval, COARSE_ACCURACY_USEC, on_republish_timer,
                                     m) < 0)
                log_error("Cannot schedule the periodic republish");
}

static int on_republish_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (!connected(m) || !core_online(m))
                return 0;
        (void) event_timer_set(s, usec + (uint64_t) m->cfg.state_interval * USEC_PER_SEC);
        publish_all_docs(m, true);
        return 0;
}

/* ---- discovery */

static bool state_topic_is_current(Manager *m, const LedgerEntry *e) {
        _cleanup_(freep) char *t = NULL;
        Group *g;

        if (streq(e->group, NODE_GROUP))
                return streq(e->topic, m->status_topic) || streq(e->topic, m->core_topic);
        g = model_find_id(m->model, e->group);
        if (!g)
                return false;
        t = topic_group(m->s, g);
        return t && streq(t, e->topic);
}

/* Whether a ledger topic the current configs do not contain must stay: the state topics of groups
 * still known, and the configs of groups whose content is not known yet (loaded from the state
 * file, the core not seen since start) as long as they have the current form. */
static bool ledger_keep(Manager *m, const LedgerEntry *e) {
        const Group *g;

        if (state_topic_is_current(m, e))
                return true;
        if (!discovery_topic_is_current(m->s, e->topic))
                return false;
        if (streq(e->group, NODE_GROUP))
                return !m->model->core.seen;
        g = model_find_id(m->model, e->group);
        return g && !g->live;
}

static void set_components(char ***dst, char **src) {
        char **copy = NULL;
        size_t n = 0;

        STRV_FOREACH(p, src)
                if (strv_extend(&copy, &n, *p) < 0) {
                        strv_free(copy);
                        log_error("Out of memory");
                        return;
                }
        strv_free(*dst);
        *dst = copy;
}

/* Brings the broker's retained configs in line with the model. force: publish every current
 * config (CONNACK, birth, SIGHUP); else only those whose text changed. */
static void sync_discovery(Manager *m, bool force) {
        _cleanup_(config_list_done) ConfigList l = {};
        _cleanup_(strv_freep) char **stale = NULL;
        size_t n_stale = 0;
        int r;

        (void) sd_event_source_set_enabled(m->config_defer, SD_EVENT_OFF);
        if (!connected(m))
                return;
        r = discovery_build(m->model, m->s, &l);
        if (r < 0)
                return (void) log_error_errno(r, "Cannot build the discovery configs: %m");

        /* First empty what is no longer produced (another mode, prefix or node id, gone entities). */
        for (size_t i = 0; i < m->model->n_ledger; i++) {
                const LedgerEntry *e = &m->model->ledger[i];
                bool current = false;

                for (size_t j = 0; j < l.n && !current; j++)
                        current = streq(l.items[j].topic, e->topic);
                if (!current && !ledger_keep(m, e) && strv_extend(&stale, &n_stale, e->topic) < 0)
                        return (void) log_error("Out of memory");
        }
        STRV_FOREACH(t, stale)
                if (clear_topic(m, *t) < 0)
                        return;

        for (size_t i = 0; i < l.n; i++) {
                Config *c = &l.items[i];
                LedgerEntry *e = ledger_find(m->model, c->topic);
                const char *send = c->text_once ?: c->text;

                if (!force && e && streq_ptr(e->text, c->text) && !c->text_once)
                        continue;
                if (publish(m, c->topic, send, strlen(send), true, c->group) < 0)
                        return;
                e = ledger_find(m->model, c->topic);
                if (e && ledger_set_text(e, c->text) < 0)
                        return (void) log_error("Out of memory");
                if (m->s->discovery == DISCOVERY_DEVICE) {
                        Group *g = streq(c->group, NODE_GROUP) ? NULL : model_find_id(m->model, c->group);
                        set_components(g ? &g->components : &m->model->node_components, c->components);
                        persist(m, false);
                }
        }
        /* Component lists only mean something for device discovery. */
        if (m->s->discovery != DISCOVERY_DEVICE) {
                bool had = m->model->node_components;
                m->model->node_components = strv_free(m->model->node_components);
                for (size_t i = 0; i < m->model->n_groups; i++)
                        if (m->model->groups[i]->components) {
                                had = true;
                                m->model->groups[i]->components = strv_free(m->model->groups[i]->components);
                        }
                if (had)
                        persist(m, false);
        }
}

/* Configs may have changed: compared and sent once the current batch of changes is applied. */
static void discovery_changed(Manager *m) {
        if (sd_event_source_set_enabled(m->config_defer, SD_EVENT_ONESHOT) < 0)
                sync_discovery(m, false);
}

static int on_config_defer(sd_event_source *s, void *userdata) {
        sync_discovery(userdata, false);
        return 0;
}

/* ---- events and the outage queue */

static void queue_push(Manager *m, char *topic, char *payload, size_t len) {
        QueuedEvent *slot;

        if (m->queue_len == (size_t) m->cfg.queue_limit) {
                QueuedEvent *old = &m->queue[m->queue_first];
                free(old->topic);
                free(old->payload);
                m->queue_first = (m->queue_first + 1) % (size_t) m->cfg.queue_limit;
                m->queue_len--;
                m->model->events_dropped++;
                m->dropped_this_outage++;
                mark_dirty(m, &m->model->core_doc);
                persist(m, false);
        }
        slot = &m->queue[(m->queue_first + m->queue_len) % (size_t) m->cfg.queue_limit];
        *slot = (QueuedEvent) { topic, payload, len };
        m->queue_len++;
}

static void queue_flush(Manager *m) {
        while (m->queue_len > 0 && connected(m)) {
                QueuedEvent *e = &m->queue[m->queue_first];
                if (publish(m, e->topic, e->payload, e->len, false, NULL) < 0)
                        break;
                free(e->topic);
                free(e->payload);
                m->queue_first = (m->queue_first + 1) % (size_t) m->cfg.queue_limit;
                m->queue_len--;
        }
        if (m->dropped_this_outage > 0) {
                log_warning("Dropped %" PRIu64 " MQTT events while the broker was unreachable", m->dropped_this_outage);
                m->dropped_this_outage = 0;
        }
}

static void send_event(Manager *m, const char *meter, char *payload, size_t len) {
        char *topic = topic_event(m->s, meter);

        if (!topic) {
                free(payload);
                return (void) log_error("Out of memory");
        }
        if (connected(m) && publish(m, topic, payload, len, false, NULL) >= 0) {
                free(topic);
                free(payload);
                return;
        }
        queue_push(m, topic, payload, len);
}

/* ---- group removal */

static void remove_group(Manager *m, Group *g, const char *why) {
        _cleanup_(freep) char *e = escape_for_log(g->name);

        log_info("Removing %s %s from Home Assistant: %s", group_kind_to_string(g->kind), e ?: "?", why);
        model_remove(m->model, g);
        /* Its configs and state topic are no longer produced: the sync empties them. */
        sync_discovery(m, false);
        persist(m, true);
        update_status(m);
}

static int on_grace_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (!core_online(m))
                return 0;
        for (size_t i = m->model->n_groups; i > 0; i--) {
                Group *g = m->model->groups[i - 1];
                if (g->kind == GROUP_TAP && !g->present && !g->auto_created)
                        remove_group(m, g, "no longer configured in the core");
        }
        return 0;
}

static void grace_start(Manager *m) {
        m->grace_waiting = false;
        if (event_timer_arm_relative(m->event, &m->grace_timer, (uint64_t) m->cfg.removal_grace * USEC_PER_SEC,
                                     COARSE_ACCURACY_USEC, on_grace_timer, m) < 0)
                log_error("Cannot schedule the removal of taps the core no longer has");
}

static void touch_present(Manager *m) {
        uint64_t now = now_real(m);

        for (size_t i = 0; i < m->model->n_groups; i++)
                if (m->model->groups[i]->present)
                        m->model->groups[i]->seen = now;
}

/* Groups the core has not had for 7 days go (boards and sensors may be unplugged for a while). */
static void expire_groups(Manager *m) {
        uint64_t now = now_real(m);

        if (core_online(m))
                touch_present(m);
        for (size_t i = m->model->n_groups; i > 0; i--) {
                Group *g = m->model->groups[i - 1];
                if (!(g->present && core_online(m)) && g->seen > 0 && g->seen + GROUP_EXPIRY_USEC < now)
                        remove_group(m, g, "not seen in the core for 7 days");
        }
}

static int on_expiry_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        (void) event_timer_set(s, usec + EXPIRY_CHECK_USEC);
        expire_groups(m);
        persist(m, false);
        return 0;
}

/* ---- the core */

static void on_core_ready(CoreWatch *w, void *userdata) {
        Manager *m = userdata;

        _cleanup_(freep) char *text = status_text(m);

        m->ready = true;
        (void) daemon_notify_ready("%s", text ?: "Running");
}

static void on_core_appeared(CoreWatch *w, void *userdata) {
        Manager *m = userdata;

        expire_groups(m);
        sync_discovery(m, false);
        /* Every state topic again, as at a CONNACK. */
        if (connected(m))
                publish_all_docs(m, false);
        publish_status(m);
        republish_restart(m);
        if (m->model->core.last_sync > 0)
                grace_start(m);
        else
                m->grace_waiting = true;
        /* The taps may be new to the keg data. */
        keg_client_refresh(m->keg);
        persist(m, false);
        update_status(m);
}

static void on_core_left(CoreWatch *w, void *userdata) {
        Manager *m = userdata;

        publish_status(m);
        republish_restart(m);
        event_timer_disarm(m->grace_timer);
        m->grace_waiting = false;
        touch_present(m);
        persist(m, false);
        update_status(m);
}

static void on_core_changed(CoreWatch *w, unsigned change, void *userdata) {
        Manager *m = userdata;

        if (change & CHANGE_STATE)
                mark_dirty(m, &m->model->core_doc);
        if (change & CHANGE_CONFIG)
                discovery_changed(m);
        if (m->grace_waiting && m->model->core.last_sync > 0)
                grace_start(m);
}

static void on_group_changed(CoreWatch *w, Group *g, unsigned change, void *userdata) {
        Manager *m = userdata;

        if (change & CHANGE_STATE)
                mark_dirty(m, &g->doc);
        if (change & CHANGE_CONFIG) {
                discovery_changed(m);
                update_status(m);
        }
        if (change & CHANGE_PERSIST)
                persist(m, false);
}

static void on_tap_removed(CoreWatch *w, Group *g, void *userdata) {
        remove_group(userdata, g, "the core removed it");
}

static void on_drink(CoreWatch *w, const DrinkInfo *d, void *userdata) {
        Manager *m = userdata;
        _cleanup_(freep) char *payload = NULL, *eu = NULL, *em = NULL;
        Group *g = model_find(m->model, GROUP_TAP, d->meter);
        double volume = d->volume_ml;
        size_t len = 0;
        int r;

        eu = escape_for_log(d->uuid);
        em = escape_for_log(d->meter);
        if (uuid_from_string(d->uuid, NULL) < 0)
                return (void) log_warning("Ignoring drink with a malformed UUID %s", eu ?: "?");
        if (model_drink_seen(m->model, d->uuid))
                return (void) log_info("Drink %s on %s was counted already; not published again", eu ?: "?",
                                       em ?: "?");
        if (volume < 0 && g)
                volume = (double) d->ticks * g->ml_per_tick;
        r = model_drink_remember(m->model, d->uuid);
        if (r < 0)
                return (void) log_error_errno(r, "Out of memory");

        if (g) {
                TapLastPour *lp = &g->last_pour;
                char *user = isempty(d->username) ? NULL : strdup(d->username);

                if (volume >= 0)
                        g->served_total_ml += volume;
                if (volume >= 0 && g->keg.has_keg && !isnan(g->keg.remaining_ml))
                        g->keg.remaining_ml = MAX(0.0, g->keg.remaining_ml - volume);
                free(lp->user);
                lp->user = user;
                lp->set = true;
                (void) uuid_normalize(d->uuid, lp->uuid);
                lp->volume_ml = volume;
                lp->time = d->pour_time;
                mark_dirty(m, &g->doc);
        }
        log_info("Drink %s on %s: %.1f mL", eu ?: "?", em ?: "?", volume);
        persist(m, true);

        r = event_pour(d, volume, &payload, &len);
        if (r < 0)
                return (void) log_warning_errno(r, "Cannot render the pour event of %s: %m", eu ?: "?");
        send_event(m, d->meter, TAKE_PTR(payload), len);
}

static void on_ghost_flow(CoreWatch *w, const GhostInfo *gi, void *userdata) {
        Manager *m = userdata;
        _cleanup_(freep) char *payload = NULL;
        Group *g = model_find(m->model, GROUP_TAP, gi->meter);
        size_t len = 0;
        int r;

        if (g) {
                r = tap_ghost_add(g, gi->end_time / USEC_PER_SEC, gi->volume_ml, now_real(m) / USEC_PER_SEC);
                if (r < 0)
                        log_error_errno(r, "Out of memory");
                mark_dirty(m, &g->doc);
                persist(m, false);
        }
        r = event_ghost_flow(gi, &payload, &len);
        if (r < 0)
                return (void) log_warning_errno(r, "Cannot render a ghost_flow event: %m");
        send_event(m, gi->meter, TAKE_PTR(payload), len);
}

static void on_pour_flagged(CoreWatch *w, const FlagInfo *f, void *userdata) {
        Manager *m = userdata;
        _cleanup_(freep) char *payload = NULL;
        size_t len = 0;
        int r;

        /* long_pour is not published. */
        if (!streq(f->flag, "kicked"))
                return;
        r = event_kicked(f, now_real(m), &payload, &len);
        if (r < 0)
                return (void) log_warning_errno(r, "Cannot render a kicked event: %m");
        send_event(m, f->meter, TAKE_PTR(payload), len);
}

static void on_core_failed(CoreWatch *w, void *userdata) {
        Manager *m = userdata;

        log_named(LOG_ERR, "dbus", "Lost the connection to the bus");
        m->exit_code = -ENOTCONN;
        (void) sd_event_exit(m->event, 1);
}

static const CoreWatchCallbacks core_callbacks = {
        .ready = on_core_ready,
        .appeared = on_core_appeared,
        .left = on_core_left,
        .core_changed = on_core_changed,
        .group_changed = on_group_changed,
        .tap_removed = on_tap_removed,
        .drink = on_drink,
        .ghost_flow = on_ghost_flow,
        .pour_flagged = on_pour_flagged,
        .failed = on_core_failed,
};

/* ---- keg data */

static void on_keg_changed(KegClient *k, Group *g, bool config, void *userdata) {
        Manager *m = userdata;

        mark_dirty(m, &g->doc);
        if (config)
                discovery_changed(m);
}

/* ---- commands */

typedef struct CommandCall {
        char *cmd;
        char *meter;
} CommandCall;

static void on_command_done(const sd_bus_error *error, void *userdata) {
        CommandCall *c = userdata;
        _cleanup_(freep) char *meter = escape_for_log(c->meter);

        if (!error)
                log_info("Command %s for %s done", c->cmd, meter ?: "?");
        else {
                _cleanup_(freep) char *name = escape_for_log(error->name ?: "?"),
                                      *msg = escape_for_log(error->message ?: "");
                log_warning("Command %s for %s failed: %s: %s", c->cmd, meter ?: "?", name ?: "?", msg ?: "");
        }
        free(c->cmd);
        free(c->meter);
        free(c);
}

static void handle_command(Manager *m, const char *topic, const void *payload, size_t len, bool retain) {
        _cleanup_(freep) char *etopic = escape_for_log(topic), *text = NULL, *key = NULL, *emeter = NULL;
        const char *k, *cmd = NULL, *method = NULL;
        size_t klen = 0;
        Group *tap = NULL;
        CommandCall *c;
        int r;

        if (retain)
                return (void) log_warning("Ignoring retained command on %s", etopic ?: "?");
        k = topic_command_key(m->s, topic, &klen);
        if (!k)
                return;
        key = strndup(k, klen);
        if (!key)
                return (void) log_error("Out of memory");
        for (size_t i = 0; i < m->model->n_groups && !tap; i++)
                if (m->model->groups[i]->kind == GROUP_TAP && m->model->groups[i]->live &&
                    streq(m->model->groups[i]->key, key))
                        tap = m->model->groups[i];
        if (!tap) {
                _cleanup_(freep) char *ekey = escape_for_log(key);
                return (void) log_warning("Command for unknown tap %s ignored", ekey ?: "?");
        }

        /* UTF-8, surrounding whitespace ignored. */
        if (utf8_is_valid_n(payload, len)) {
                const char *a = payload, *b = a + len;
                while (a < b && strchr(" \t\r\n", *a))
                        a++;
                while (b > a && strchr(" \t\r\n", b[-1]))
                        b--;
                text = strndup(a, (size_t) (b - a));
                if (!text)
                        return (void) log_error("Out of memory");
                if (strlen(text) == (size_t) (b - a)) {
                        if (streq(text, "stop_flow")) {
                                cmd = "stop_flow";
                                method = "StopFlow";
                        } else if (streq(text, "clear_quarantine") && m->model->core.has_clear_quarantine) {
                                cmd = "clear_quarantine";
                                method = "ClearQuarantine";
                        }
                }
        }
        if (!cmd) {
                if (log_ratelimit_pass(&m->unknown_command_log, LOG_WARNING, LOG_COMPONENT)) {
                        _cleanup_(freep) char *ep = escape_for_log_n(payload, MIN(len, (size_t) 64));
                        log_warning("Unknown command %s on %s ignored", ep ?: "?", etopic ?: "?");
                }
                return;
        }
        emeter = escape_for_log(tap->name);
        if (!core_online(m))
                return (void) log_warning("Command %s for %s dropped: core not on the bus", cmd, emeter ?: "?");

        c = calloc(1, sizeof(CommandCall));
        if (!c || !(c->cmd = strdup(cmd)) || !(c->meter = strdup(tap->name))) {
                if (c)
                        free(c->cmd);
                free(c);
                return (void) log_error("Out of memory");
        }
        r = core_watch_call_meter(m->core, method, tap->name, on_command_done, c);
        if (r < 0) {
                log_warning_errno(r, "Command %s for %s failed: %m", cmd, emeter ?: "?");
                free(c->cmd);
                free(c->meter);
                free(c);
        }
}

/* ---- the broker */

static void on_broker_connected(Broker *b, void *userdata) {
        Manager *m = userdata;
        int r;

        republish_restart(m);
        r = broker_subscribe(b, m->cfg.birth_topic);
        if (r >= 0 && m->s->commands)
                r = broker_subscribe(b, m->commands_topic);
        if (r < 0)
                log_warning_errno(r, "Cannot subscribe: %m");
        sync_discovery(m, true);
        publish_all_docs(m, false);
        publish_status(m);
        queue_flush(m);
        update_status(m);
}

static void on_broker_disconnected(Broker *b, void *userdata) {
        Manager *m = userdata;

        republish_restart(m);
        update_status(m);
}

static void on_broker_state(Broker *b, void *userdata) {
        update_status(userdata);
}

static void finish_stop(Manager *m) {
        event_timer_disarm(m->stop_timer);
        broker_disconnect(m->broker);
        (void) sd_event_exit(m->event, 0);
}

static void on_broker_message(Broker *b, const char *topic, const void *payload, size_t len, bool retain,
                              void *userdata) {
        Manager *m = userdata;

        if (m->stopping)
                return;
        if (streq(topic, m->cfg.birth_topic)) {
                /* Home Assistant (re)started: it has forgotten nothing retained, but it re-reads
                 * discovery only from what arrives now. "offline" changes nothing. */
                if (len == 6 && memcmp(payload, "online", 6) == 0) {
                        log_info("Home Assistant is online: announcing every entity again");
                        sync_discovery(m, true);
                }
                return;
        }
        if (m->s->commands)
                handle_command(m, topic, payload, len, retain);
}

static void on_broker_published(Broker *b, int mid, void *userdata) {
        Manager *m = userdata;

        if (m->stopping && mid == m->stop_mid)
                finish_stop(m);
}

static const BrokerCallbacks broker_callbacks = {
        .connected = on_broker_connected,
        .disconnected = on_broker_disconnected,
        .state_changed = on_broker_state,
        .message = on_broker_message,
        .published = on_broker_published,
};

/* ---- signals */

static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        finish_stop(userdata);
        return 0;
}

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        int r;

        if (m->stopping)
                return 0;
        m->stopping = true;
        log_info("Stopping (signal %s)", sigabbrev_np((int) si->ssi_signo) ?: "?");
        (void) daemon_notify_stopping();
        (void) save_state(m);
        /* A clean DISCONNECT makes the broker drop the last will, so "offline" goes out first. */
        r = broker_publish(m->broker, m->status_topic, "offline", 7, true, &m->stop_mid);
        if (r < 0)
                return finish_stop(m), 0;
        if (event_timer_arm_relative(m->event, &m->stop_timer, STOP_TIMEOUT_USEC, STOP_ACCURACY_USEC, on_stop_timeout,
                                     m) < 0)
                finish_stop(m);
        return 0;
}

static int on_hup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        (void) log_reopen();
        log_info("SIGHUP: republishing every config and state");
        if (connected(m)) {
                sync_discovery(m, true);
                publish_all_docs(m, false);
                publish_status(m);
        }
        return 0;
}

/* ---- set-up */

static int load_state(Manager *m) {
        _cleanup_(freep) char *text = NULL, *reason = NULL;
        size_t len = 0;
        int r;

        r = mkdir(m->cfg.state_dir, 0750);
        if (r < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create the state directory %s: %m", m->cfg.state_dir);
        m->state_dir_fd = open(m->cfg.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (m->state_dir_fd < 0)
                return log_error_errno(errno, "Cannot open the state directory %s: %m", m->cfg.state_dir);
        if (faccessat(m->state_dir_fd, ".", W_OK, AT_EACCESS) < 0)
                return log_error_errno(errno, "Cannot write to the state directory %s: %m", m->cfg.state_dir);

        r = io_read_file(m->state_path, STATE_FILE_MAX, &text, &len);
        if (r == -ENOENT)
                return 0;
        if (r >= 0)
                r = state_file_parse(m->model, text, len, &reason);
        if (r < 0) {
                _cleanup_(freep) char *e = reason ? escape_for_log(reason) : NULL;
                if (r == -ENOMEM)
                        return log_error_errno(r, "Out of memory");
                if (!e)
                        e = strdup_printf("%s", strerror(-r));
                log_warning("State file %s unusable (%s); starting empty", m->state_path, e ?: "?");
                m->model = model_free(m->model);
                return model_new(&m->model) < 0 ? log_error_errno(-ENOMEM, "Out of memory") : 0;
        }
        for (size_t i = 0; i < m->model->n_groups; i++)
                tap_ghost_expire(m->model->groups[i], now_real(m) / USEC_PER_SEC);
        return 0;
}

int manager_new(Manager **ret, const ManagerConfig *config) {
        static const int exit_signals[] = { SIGTERM, SIGINT, SIGQUIT };
        static const int hup[] = { SIGHUP };
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(Manager));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory");
        m->cfg = *config;
        m->s = &m->cfg.settings;
        m->unknown_command_log = (LogRateLimit) LOG_RATELIMIT_INIT("unknown MQTT commands", UNKNOWN_COMMAND_LOG_USEC, 1);
        m->state_dir_fd = -1;
        m->queue = calloc((size_t) config->queue_limit, sizeof(QueuedEvent));
        m->status_topic = topic_status(m->s);
        m->core_topic = topic_core(m->s);
        m->commands_topic = topic_commands(m->s);
        m->state_path = strdup_printf("%s/%s", config->state_dir, STATE_FILE_NAME);
        if (!m->queue || !m->status_topic || !m->core_topic || !m->commands_topic || !m->state_path)
                return log_error_errno(-ENOMEM, "Out of memory");

        r = model_new(&m->model);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        (void) signal(SIGPIPE, SIG_IGN);
        r = daemon_watch_signals(m->event, exit_signals, ELEMENTSOF(exit_signals), on_exit_signal, m, NULL);
        if (r < 0)
                return r;
        r = daemon_watch_signals(m->event, hup, ELEMENTSOF(hup), on_hup, m, NULL);
        if (r < 0)
                return r;
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return log_error_errno(r, "Cannot enable the watchdog: %m");

        r = load_state(m);
        if (r < 0)
                return r;

        r = sd_event_add_defer(m->event, &m->config_defer, on_config_defer, m);
        if (r < 0)
                return log_error_errno(r, "Cannot create an event source: %m");
        (void) sd_event_source_set_enabled(m->config_defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(m->config_defer, "discovery-sync");
        /* Changes from one D-Bus message are all applied before the configs are compared. */
        (void) sd_event_source_set_priority(m->config_defer, SD_EVENT_PRIORITY_IDLE);
        r = event_timer_arm_relative(m->event, &m->expiry_timer, EXPIRY_CHECK_USEC, EXPIRY_ACCURACY_USEC,
                                     on_expiry_timer, m);
        if (r < 0)
                return log_error_errno(r, "Cannot start the expiry timer: %m");

        r = broker_new(&m->broker, m->event, &config->broker, &broker_callbacks, m);
        if (r < 0)
                return r;
        r = core_watch_new(&m->core, m->event, m->model, config->session_bus, &core_callbacks, m);
        if (r < 0)
                return log_internal(LOG_ERR, r, "dbus", "Cannot connect to the %s bus: %m",
                                    config->session_bus ? "session" : "system");
        if (!isempty(config->api_url)) {
                r = keg_client_new(&m->keg, m->event, m->model, config->api_url, config->api_key, config->api_timeout,
                                   (uint64_t) config->state_interval * USEC_PER_SEC, on_keg_changed, m);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(m);
        return 0;
}

int manager_run(Manager *m) {
        int r;

        /* The broker is tried at once, without waiting for the core; readiness waits for the bus. */
        r = broker_start(m->broker);
        if (r < 0)
                return r;
        r = core_watch_start(m->core);
        if (r < 0)
                return r;
        keg_client_refresh(m->keg);
        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        if (m->exit_code < 0)
                return m->exit_code;
        if (m->state_dirty || !m->stopping)
                (void) save_state(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        keg_client_free(m->keg);
        core_watch_free(m->core);
        broker_free(m->broker);
        sd_event_source_disable_unref(m->flush_timer);
        sd_event_source_disable_unref(m->republish_timer);
        sd_event_source_disable_unref(m->config_defer);
        sd_event_source_disable_unref(m->grace_timer);
        sd_event_source_disable_unref(m->expiry_timer);
        sd_event_source_disable_unref(m->save_timer);
        sd_event_source_disable_unref(m->stop_timer);
        for (size_t i = 0; i < m->queue_len; i++) {
                QueuedEvent *e = &m->queue[(m->queue_first + i) % (size_t) m->cfg.queue_limit];
                free(e->topic);
                free(e->payload);
        }
        free(m->queue);
        model_free(m->model);
        safe_close(m->state_dir_fd);
        sd_event_unref(m->event);
        free(m->status_topic);
        free(m->core_topic);
        free(m->commands_topic);
        free(m->state_path);
        free(m);
        return NULL;
}
