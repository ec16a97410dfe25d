/* The Kegboard Event Protocol backend: see backend-event.h. The wire format is kbevent.c's; this file
 * keeps the spools, decides what to send when, and acts on the answers. */
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

#define LOG_COMPONENT "event-backend"
#include "log.h"

#include "backend-event.h"
#include "calibration.h"
#include "command-ledger.h"
#include "drink-sink.h"
#include "grant-table.h"
#include "http.h"
#include "kbevent.h"
#include "util-double.h"
#include "util-escape.h"
#include "util-event.h"
#include "util-io.h"
#include "util-string.h"
#include "util-strv.h"
#include "util-time.h"
#include "util-uuid.h"

#define BACKOFF_MAX_USEC (300 * USEC_PER_SEC)
#define PAIRING_POLL_USEC (5 * USEC_PER_SEC)
#define PAIRING_FAST_SPAN_USEC (60 * USEC_PER_SEC)
#define RESPONSE_MAX (1024U * 1024U)
#define FILE_MAX (64U * 1024U)
#define TIMESYNC_FLAG "/run/systemd/timesync/synchronized"
/* Tests point this at a file of their own: then only that file counts, as under the service's
 * ProtectClock=yes, where the read-only adjtimex() fails (section 4.4). */
#define TIMESYNC_FLAG_ENV "KEGBOT_TIMESYNC_FLAG"
#define UNMAPPED "_unmapped"
/* A spool or state.json write that failed is retried at every later spool operation and at least
 * this often (section 5.0, 9.1). */
#define WRITE_RETRY_USEC (60 * USEC_PER_SEC)

static int oom(void) {
        return log_error_errno(ENOMEM, "Out of memory");
}

static const char *strempty(const char *s) {
        return s ?: "";
}

static int strv_compare_entries(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* A DIR over a copy of dir_fd (the fd stays the caller's), or NULL with errno set. */
static DIR *dir_open_fd(int dir_fd) {
        int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
        DIR *d;

        if (fd < 0)
                return NULL;
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return NULL;
        }
        /* A duplicate shares the offset of every earlier reading: start from the beginning. */
        rewinddir(d);
        return d;
}

static void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

typedef struct Entry {
        KbEvent *event;
        Drink *drink;                   /* pours: what the announcement carries */
        bool unwritten;                 /* durable, but its spool file could not be written: held in
                                         * memory and sent from there (section 5.0) */
} Entry;

typedef struct Device Device;

/* A token on a reader that produced an "attached" event (section 6.4); in memory only. */
typedef struct Presentment {
        char *auth_device, *token;
        uint64_t time;                  /* monotonic */
        bool present;                   /* still on the reader (captive devices) */
        bool decided;                   /* an authorize or deny for it arrived */
        sd_event_source *window_timer;
        Device *device;
} Presentment;

/* A flow in progress on a meter of the device: its pour_id, handed out at the first counted tick
 * so that the live pour_updates and the final pour carry the same one (sections 5.1, 5.3). */
typedef struct LiveFlow {
        uint64_t flow_id;
        unsigned meter;
        char uuid[UUID_STRING_MAX];
        double volume_ml;
        uint64_t duration_ms;
        bool changed;                   /* new ticks since the last update sent */
        uint64_t last_sent;             /* monotonic, 0 = never */
} LiveFlow;

struct Device {
        EventBackend *backend;
        char *name;
        int dir_fd, spool_fd, failed_fd;
        KbDeviceState st;               /* state.json: boot_id, id_limit, events_dropped, meter totals */
        uint64_t next_id;
        Entry *queue;                   /* ascending ids */
        size_t n_queue;
        size_t n_unwritten;             /* entries of the queue held in memory only */
        Entry *waiting;                 /* durable events without an id: state.json cannot be written
                                         * (section 9.1); in creation order, numbered once it can */
        size_t n_waiting;
        sd_event_source *write_timer;   /* retries the writes that failed */
        size_t n_failed, n_failed_pours;
        char *token;                    /* NULL = unpaired */

        EventDeviceState state;
        bool active, boot_status_sent, logged_active;
        unsigned failures;              /* k: transient failures in a row */
        unsigned max_events;
        uint64_t next_attempt;          /* monotonic */
        uint64_t pairing_since;         /* monotonic, entering the pairing state */
        uint64_t last_delivery;         /* realtime */
        bool temperature_refusing;

        HttpRequest *req;
        size_t req_n;                   /* queued events in the request in flight */
        bool req_token;                 /* the request carried a token */
        uint64_t req_start;

        sd_event_source *attempt_timer, *heartbeat_timer;

        CommandLedger *ledger;

        Presentment **presentments;
        size_t n_presentments;
        GrantTable *grants;             /* the grants of authorize commands (section 6.8) */
        sd_event_source *grant_timer;   /* the next lifetime or idle limit of a grant */
        sd_event_source *relay_timer;   /* re-asserts granted relays every second */
        LiveFlow *live;
        size_t n_live;
        sd_event_source *update_timer;  /* --event_pour_update_ms while a flow has ticks */
        sd_event_source *volume_check;  /* ends grants whose volume limit a report reached */
};

typedef struct RouteSink {
        DrinkSink sink;                 /* first: the manager sees a DrinkSink */
        EventBackend *backend;          /* NULL once the backend is gone */
        DrinkSink *legacy;              /* the legacy spool's sink, or NULL */
} RouteSink;

struct EventBackend {
        Manager *manager;
        sd_event *event;
        HttpClient *http;
        EventBackendConfig config;
        char *url, *state_dir;
        int event_fd, unmapped_fd;
        size_t n_unmapped;
        RouteSink *sink;
        Device **devices;
        size_t n_devices;
        bool started, stopping;
        uint64_t start_boottime;        /* usec */
        const char *timesync_flag;      /* the flag file; NULL = TIMESYNC_FLAG, or adjtimex() */
        char **warned;                  /* names already warned about (unmappable sensors) */
        size_t n_warned;
        void (*changed)(void *userdata);
        void *changed_userdata;
        const EventBackendSignals *signals;
        void *signals_userdata;
        Calibrations *calibrations;     /* the taps-file store of event controllers' calibrations */
};

static const ManagerObserver event_observer;
static const GrantTableOps grant_ops;
static void device_schedule(Device *d);
static void presentment_free(Presentment *p);

const char *event_device_state_to_string(EventDeviceState s) {
        switch (s) {
        case EVENT_DEVICE_IDLE: return "idle";
        case EVENT_DEVICE_ONLINE: return "online";
        case EVENT_DEVICE_OFFLINE: return "offline";
        case EVENT_DEVICE_PAIRING: return "pairing";
        case EVENT_DEVICE_DENIED: return "denied";
        }
        return "idle";
}

static void notify_changed(EventBackend *b) {
        if (b->changed)
                b->changed(b->changed_userdata);
        manager_update_status(b->manager);
}

static uint64_t now_mono(EventBackend *b) {
        uint64_t t = 0;
        (void) sd_event_now(b->event, CLOCK_MONOTONIC, &t);
        return t;
}

static uint64_t now_realtime(EventBackend *b) {
        uint64_t t = 0;
        (void) sd_event_now(b->event, CLOCK_REALTIME, &t);
        return t;
}

static bool clock_synced(EventBackend *b) {
        struct timex tx = {};

        if (b->timesync_flag)
                return access(b->timesync_flag, F_OK) >= 0;
        if (access(TIMESYNC_FLAG, F_OK) >= 0)
                return true;
        /* Read-only (modes 0); fails with EPERM under ProtectClock=yes. */
        if (adjtimex(&tx) < 0)
                return false;
        return !(tx.status & STA_UNSYNC);
}

static void clock_now(EventBackend *b, KbEventClock *ret) {
        struct timespec ts;
        uint64_t bt;

        clock_gettime(CLOCK_BOOTTIME, &ts);
        bt = (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
        *ret = (KbEventClock) {
                .boottime_ns = bt,
                .unix_ms = now_realtime(b) / USEC_PER_MSEC,
                .clock_synced = clock_synced(b),
        };
        if (sd_id128_get_boot(&ret->kernel_boot_id) < 0)
                ret->kernel_boot_id = SD_ID128_NULL;
}

static uint64_t uptime_ms(EventBackend *b) {
        struct timespec ts;
        uint64_t bt;

        clock_gettime(CLOCK_BOOTTIME, &ts);
        bt = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
        return bt > b->start_boottime ? (bt - b->start_boottime) / USEC_PER_MSEC : 0;
}

/* ---------------------------------------------------------------- routing (section 1.2) */

bool event_backend_owns_controller(EventBackend *b, const char *controller) {
        return b && !isempty(controller) && manager_route(b->manager, controller, true) == ROUTE_EVENT;
}

/* The controller of a meter, sensor or relay name ("C.<rest>"), or -EINVAL without a dot. */
static int controller_of(const char *name, char ret[static KBEVENT_DEVICE_NAME_MAX + 1], const char **ret_rest) {
        const char *dot = strchr(name, '.');
        if (!dot || dot == name || (size_t) (dot - name) > KBEVENT_DEVICE_NAME_MAX)
                return -EINVAL;
        memcpy(ret, name, (size_t) (dot - name));
        ret[dot - name] = '\0';
        if (ret_rest)
                *ret_rest = dot + 1;
        return 0;
}

/* ---------------------------------------------------------------- device files */

static void entry_done(Entry *e) {
        kbevent_free(e->event);
        drink_free(e->drink);
        *e = (Entry) {};
}

static void event_file_name(const KbEvent *e, char buf[static 64]) {
        snprintf(buf, 64, "%020" PRIu64 "-%s.json", e->id, kbevent_type_to_string(e->type));
}

static int device_write_state(Device *d) {
        _cleanup_(freep) char *text = NULL;
        size_t len;
        int r;

        r = kbevent_state_format(&d->st, &text, &len);
        if (r >= 0)
                r = io_write_file_atomic(d->dir_fd, "state.json", text, len, 0640);
        if (r < 0)
                log_error_errno(r, "Device %s: cannot write state.json: %m", d->name);
        return r;
}

/* The meter totals in state.json plus what this process counted since. */
static uint64_t device_total_ticks(Device *d, unsigned meter, uint64_t engine_total) {
        for (size_t i = 0; i < d->st.n_meters; i++)
                if (d->st.meters[i].meter_number == meter)
                        return d->st.meters[i].total_ticks + engine_total;
        return engine_total;
}

/* state.json's totals brought up to date: the base read at start-up plus the engine's count. */
static int device_state_snapshot(Device *d, KbDeviceState *ret) {
        FlowEngine *engine = manager_get_engine(d->backend->manager);
        KbDeviceState s = d->st;
        size_t n = d->st.n_meters;

        s.meters = calloc(n + flow_engine_n_taps(engine) + 1, sizeof *s.meters);
        if (!s.meters)
                return -ENOMEM;
        if (n > 0)
                memcpy(s.meters, d->st.meters, n * sizeof *s.meters);
        s.n_meters = n;
        for (size_t i = 0; i < flow_engine_n_taps(engine); i++) {
                char dev[KBEVENT_DEVICE_NAME_MAX + 1];
                FlowTapInfo t;
                unsigned num;
                size_t j;

                if (flow_engine_tap_at(engine, i, &t) < 0 || kbevent_parse_port(t.meter_name, "flow", dev, &num) < 0 ||
                    !streq(dev, d->name))
                        continue;
                for (j = 0; j < s.n_meters && s.meters[j].meter_number != num; j++)
                        ;
                if (j == s.n_meters)
                        s.meters[s.n_meters++] = (KbMeterTotal) { .meter_number = num };
                s.meters[j].total_ticks = device_total_ticks(d, num, t.total_ticks);
        }
        /* Ascending, as state.json keeps them. */
        for (size_t i = 1; i < s.n_meters; i++)
                for (size_t j = i; j > 0 && s.meters[j].meter_number < s.meters[j - 1].meter_number; j--) {
                        KbMeterTotal x = s.meters[j];
                        s.meters[j] = s.meters[j - 1];
                        s.meters[j - 1] = x;
                }
        *ret = s;
        return 0;
}

/* Written at every heartbeat and at shutdown, with the totals of this moment. */
static int device_save(Device *d) {
        KbDeviceState s;
        _cleanup_(freep) char *text = NULL;
        size_t len;
        int r;

        r = device_state_snapshot(d, &s);
        if (r < 0)
                return r;
        r = kbevent_state_format(&s, &text, &len);
        free(s.meters);
        if (r >= 0)
                r = io_write_file_atomic(d->dir_fd, "state.json", text, len, 0640);
        if (r < 0)
                log_error_errno(r, "Device %s: cannot write state.json: %m", d->name);
        return r;
}

static int new_boot_id(char ret[static KBEVENT_BOOT_ID_STRING_MAX]) {
        uint8_t bytes[8];
        ssize_t n = getrandom(bytes, sizeof bytes, 0);
        if (n != (ssize_t) sizeof bytes)
                return n < 0 ? -errno : -EIO;
        kbevent_boot_id_format(bytes, ret);
        return 0;
}

/* An id for a new event; state.json first when it would reach id_limit (section 9.1). */
static int device_take_id(Device *d, uint64_t *ret) {
        int r;

        if (d->next_id >= KBEVENT_ID_MAX)
                return -ERANGE;
        if (d->next_id >= d->st.id_limit) {
                uint64_t old = d->st.id_limit;
                d->st.id_limit = d->next_id + KBEVENT_ID_BLOCK;
                r = device_write_state(d);
                if (r < 0) {
                        d->st.id_limit = old;
                        return r;
                }
        }
        *ret = d->next_id++;
        return 0;
}

static int write_event_file(int dir_fd, const KbEvent *e, const char *boot_id, const char *name) {
        _cleanup_(freep) char *text = NULL;
        size_t len;
        int r;

        r = kbevent_file_format(e, boot_id, &text, &len);
        if (r < 0)
                return r;
        return io_write_file_atomic(dir_fd, name, text, len, 0640);
}

static int fsync_dir(int fd) {
        return fsync(fd) < 0 ? -errno : 0;
}

/* A Drink for the announcement of a pour read back from the spool. */
static int drink_from_event(const KbEvent *e, Drink **ret) {
        _cleanup_(json_decrefp) json_t *data = NULL, *drink = NULL;
        _cleanup_(drink_freep) Drink *d = NULL;
        const char *s;

        data = json_loads(e->data, 0, NULL);
        drink = e->drink ? json_loads(e->drink, 0, NULL) : NULL;
        if (!data || !drink)
                return -EBADMSG;
        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        s = json_string_value(json_object_get(data, "pour_id"));
        if (!s || uuid_normalize(s, d->uuid) < 0)
                return -EBADMSG;
        s = json_string_value(json_object_get(drink, "meter_name"));
        if (!s)
                return -EBADMSG;
        d->meter_name = strdup(s);
        if (!d->meter_name)
                return -ENOMEM;
        d->flow_id = (uint64_t) json_integer_value(json_object_get(drink, "flow_id"));
        d->ticks = (uint64_t) json_integer_value(json_object_get(data, "ticks"));
        d->volume_known = true;
        d->volume_ml = json_number_value(json_object_get(data, "volume_ml"));
        d->duration_ms = (uint64_t) json_integer_value(json_object_get(data, "duration_ms"));
        d->duration_sec = d->duration_ms / 1000;
        s = json_string_value(json_object_get(drink, "start_time"));
        if (s)
                (void) time_parse_rfc3339(s, &d->start_realtime);
        s = json_string_value(json_object_get(drink, "pour_time"));
        if (s)
                (void) time_parse_rfc3339(s, &d->pour_realtime);
        d->boot_id = e->created.kernel_boot_id;
        d->pour_boottime = e->created.boottime_ns / 1000;
        *ret = TAKE_PTR(d);
        return 0;
}

static int entry_array_push(Entry **a, size_t *n, Entry e) {
        Entry *x = realloc(*a, (*n + 1) * sizeof *x);
        if (!x)
                return -ENOMEM;
        x[(*n)++] = e;
        *a = x;
        return 0;
}

static void count_failed(Device *d) {
        _cleanup_(closedirp) DIR *dir = NULL;
        struct dirent *de;

        d->n_failed = d->n_failed_pours = 0;
        dir = dir_open_fd(d->failed_fd);
        if (!dir)
                return;
        while ((de = readdir(dir))) {
                const char *dot = strrchr(de->d_name, '.');
                if (de->d_name[0] == '.' || !dot || !streq(dot, ".json"))
                        continue;
                d->n_failed++;
                if (strstr(de->d_name, "-pour.json"))
                        d->n_failed_pours++;
        }
}

/* Names of the files in dir_fd ending in ".json" (not hidden), sorted; hidden *.tmp removed. */
static int list_json(int dir_fd, char ***ret, size_t *ret_n) {
        _cleanup_(closedirp) DIR *dir = NULL;
        _cleanup_(strv_freep) char **l = NULL;
        struct dirent *de;
        size_t n = 0;
        int r;

        dir = dir_open_fd(dir_fd);
        if (!dir)
                return -errno;
        while ((de = readdir(dir))) {
                const char *dot = strrchr(de->d_name, '.');
                if (de->d_name[0] == '.') {
                        if (dot && streq(dot, ".tmp"))
                                (void) unlinkat(dir_fd, de->d_name, 0);
                        continue;
                }
                if (!dot || !streq(dot, ".json") || de->d_type == DT_DIR)
                        continue;
                r = strv_extend(&l, &n, de->d_name);
                if (r < 0)
                        return r;
        }
        if (n > 1)
                qsort(l, n, sizeof *l, strv_compare_entries);
        *ret = TAKE_PTR(l);
        *ret_n = n;
        return 0;
}

static void device_read_token(Device *d) {
        _cleanup_(freep) char *text = NULL;
        size_t len;
        int fd, r;

        fd = openat(d->dir_fd, "token", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                if (errno != ENOENT)
                        log_warning_errno(errno, "Device %s: cannot read its token file; treating it as absent: %m", d->name);
                return;
        }
        r = io_read_all(fd, KBEVENT_TOKEN_MAX + 2, &text, &len);
        safe_close(fd);
        if (r >= 0 && len > 0 && text[len - 1] == '\n')
                text[--len] = '\0';
        if (r < 0 || strlen(text) != len || !kbevent_token_is_valid(text)) {
                log_warning("Device %s: its token file is not a valid token; treating it as absent", d->name);
                return;
        }
        d->token = TAKE_PTR(text);
}

static int device_store_token(Device *d, const char *token) {
        _cleanup_(freep) char *text = strdup_printf("%s\n", token);
        if (!text)
                return -ENOMEM;
        return io_write_file_atomic(d->dir_fd, "token", text, strlen(text), 0600);
}

static void device_drop_token(Device *d) {
        free(d->token);
        d->token = NULL;
        if (unlinkat(d->dir_fd, "token", 0) < 0 && errno != ENOENT)
                log_error_errno(errno, "Device %s: cannot delete its token file: %m", d->name);
        (void) fsync_dir(d->dir_fd);
}

static Device *device_free(Device *d) {
        if (!d)
                return NULL;
        http_request_cancel(d->req);
        sd_event_source_disable_unref(d->attempt_timer);
        sd_event_source_disable_unref(d->heartbeat_timer);
        sd_event_source_disable_unref(d->relay_timer);
        sd_event_source_disable_unref(d->volume_check);
        sd_event_source_disable_unref(d->update_timer);
        sd_event_source_disable_unref(d->write_timer);
        free(d->live);
        sd_event_source_disable_unref(d->grant_timer);
        grant_table_free(d->grants);
        for (size_t i = 0; i < d->n_presentments; i++)
                presentment_free(d->presentments[i]);
        free(d->presentments);
        for (size_t i = 0; i < d->n_queue; i++)
                entry_done(&d->queue[i]);
        free(d->queue);
        for (size_t i = 0; i < d->n_waiting; i++)
                entry_done(&d->waiting[i]);
        free(d->waiting);
        command_ledger_free(d->ledger);
        kbevent_state_done(&d->st);
        safe_close(d->failed_fd);
        safe_close(d->spool_fd);
        safe_close(d->dir_fd);
        if (d->token)
                explicit_bzero(d->token, strlen(d->token));
        free(d->token);
        free(d->name);
        free(d);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Device *, device_free);

/* Start-up recovery of section 2.6. */
static int device_load(Device *d) {
        _cleanup_(strv_freep) char **names = NULL;
        _cleanup_(freep) char *state_text = NULL;
        Entry *loaded = NULL;
        size_t n_names = 0, n_loaded = 0, len;
        bool have_state, consistent = true;
        char boot[KBEVENT_BOOT_ID_STRING_MAX] = "";
        int r;

        r = io_read_file_at(d->dir_fd, "state.json", FILE_MAX, &state_text, &len);
        have_state = r >= 0 && kbevent_state_parse(state_text, len, &d->st) >= 0 && streq(d->st.device, d->name);
        if (!have_state) {
                kbevent_state_done(&d->st);
                d->st = (KbDeviceState) {};
                if (r != -ENOENT)
                        log_error("Device %s: state.json is missing or unreadable", d->name);
        }
        strcpy(d->st.device, d->name);

        r = list_json(d->spool_fd, &names, &n_names);
        if (r < 0)
                return log_error_errno(r, "Device %s: cannot read its spool: %m", d->name);
        for (size_t i = 0; i < n_names; i++) {
                _cleanup_(freep) char *text = NULL;
                _cleanup_(kbevent_freep) KbEvent *e = NULL;
                _cleanup_(drink_freep) Drink *drink = NULL;
                char eboot[KBEVENT_BOOT_ID_STRING_MAX];

                r = io_read_file_at(d->spool_fd, names[i], FILE_MAX, &text, &len);
                if (r >= 0)
                        r = kbevent_file_parse(text, len, true, &e, eboot);
                if (r >= 0 && e->type == KBEVENT_POUR)
                        r = drink_from_event(e, &drink);
                if (r == -ENOMEM)
                        return log_error_errno(r, "Out of memory");
                if (r < 0) {
                        _cleanup_(freep) char *corrupt = strdup_printf("%s.corrupt", names[i]);
                        if (!corrupt)
                                return oom();
                        log_error("Device %s: spool file %s is unreadable; moved to failed/%s", d->name, names[i], corrupt);
                        if (renameat(d->spool_fd, names[i], d->failed_fd, corrupt) < 0)
                                return log_error_errno(errno, "Device %s: cannot move %s: %m", d->name, names[i]);
                        continue;
                }
                if (n_loaded > 0 && e->id <= loaded[n_loaded - 1].event->id)
                        consistent = false;
                if (n_loaded == 0)
                        strcpy(boot, eboot);
                else if (!streq(boot, eboot))
                        consistent = false;
                if (!have_state || !streq(eboot, d->st.boot_id) || e->id >= d->st.id_limit)
                        consistent = false;
                /* The name is what the rewrite below unlinks. */
                free(e->failure);
                e->failure = strdup(names[i]);
                if (!e->failure)
                        return oom();
                r = entry_array_push(&loaded, &n_loaded, (Entry) { .event = e, .drink = drink });
                if (r < 0)
                        return oom();
                TAKE_PTR(e);
                TAKE_PTR(drink);
        }
        (void) fsync_dir(d->failed_fd);

        if (n_loaded == 0) {
                r = new_boot_id(d->st.boot_id);
                if (r < 0)
                        return log_error_errno(r, "Cannot get random bytes: %m");
                d->next_id = 1;
                d->st.id_limit = 1 + KBEVENT_ID_BLOCK;
                log_info("Device %s: new boot_id %s", d->name, d->st.boot_id);
        } else if (consistent) {
                d->next_id = d->st.id_limit;
                d->st.id_limit = d->next_id + KBEVENT_ID_BLOCK;
                log_info("Device %s: keeping boot_id %s, %zu events queued", d->name, d->st.boot_id, n_loaded);
        } else {
                log_error("Device %s: spool and state.json disagree; renumbering %zu events under a new boot_id",
                          d->name, n_loaded);
                r = new_boot_id(d->st.boot_id);
                if (r < 0)
                        return log_error_errno(r, "Cannot get random bytes: %m");
                for (size_t i = 0; i < n_loaded; i++) {
                        KbEvent *e = loaded[i].event;
                        _cleanup_(freep) char *old = TAKE_PTR(e->failure);
                        char name[64];

                        e->id = i + 1;
                        event_file_name(e, name);
                        r = write_event_file(d->spool_fd, e, d->st.boot_id, name);
                        if (r < 0)
                                return log_error_errno(r, "Device %s: cannot rewrite %s: %m", d->name, old);
                        if (!streq(old, name) && unlinkat(d->spool_fd, old, 0) < 0)
                                return log_error_errno(errno, "Device %s: cannot remove %s: %m", d->name, old);
                }
                (void) fsync_dir(d->spool_fd);
                d->next_id = n_loaded + 1;
                d->st.id_limit = d->next_id + KBEVENT_ID_BLOCK;
        }
        for (size_t i = 0; i < n_loaded; i++)
                {
                free(loaded[i].event->failure);
                loaded[i].event->failure = NULL;
        }
        d->queue = loaded;
        d->n_queue = n_loaded;
        r = device_write_state(d);
        if (r < 0)
                return r;
        /* The ledger knows the commands whose acknowledgements are still queued. */
        for (size_t i = 0; i < d->n_queue; i++)
                if (d->queue[i].event->type == KBEVENT_COMMAND_RESULT &&
                    command_ledger_seed(d->ledger, d->queue[i].event->data) < 0)
                        return oom();
        count_failed(d);
        device_read_token(d);
        if (d->n_queue > 0)
                d->active = true;
        return 0;
}

static Device *find_device(EventBackend *b, const char *name) {
        for (size_t i = 0; i < b->n_devices; i++)
                if (streq(b->devices[i]->name, name))
                        return b->devices[i];
        return NULL;
}

static int device_open(EventBackend *b, const char *name, Device **ret) {
        _cleanup_(device_freep) Device *d = NULL;
        Device **n;
        int r;

        d = calloc(1, sizeof *d);
        if (!d)
                return oom();
        d->backend = b;
        d->dir_fd = d->spool_fd = d->failed_fd = -1;
        d->max_events = KBEVENT_BATCH_MAX_EVENTS;
        d->name = strdup(name);
        if (!d->name || command_ledger_new(&d->ledger) < 0 || grant_table_new(&grant_ops, d, &d->grants) < 0)
                return oom();
        d->dir_fd = io_mkdir_open_at(b->event_fd, name, 0750);
        if (d->dir_fd >= 0)
                d->spool_fd = io_mkdir_open_at(d->dir_fd, "spool", 0750);
        if (d->spool_fd >= 0)
                d->failed_fd = io_mkdir_open_at(d->spool_fd, "failed", 0750);
        if (d->failed_fd < 0)
                return log_error_errno(d->failed_fd < 0 ? d->failed_fd : -EIO,
                                       "Device %s: cannot open its directory under %s/event: %m", name, b->state_dir);
        r = device_load(d);
        if (r < 0)
                return r;
        n = realloc(b->devices, (b->n_devices + 1) * sizeof *n);
        if (!n)
                return oom();
        b->devices = n;
        b->devices[b->n_devices++] = d;
        *ret = TAKE_PTR(d);
        return 0;
}

/* The device of controller 'name', opened (and made) on first use. NULL: not a device name, or
 * it could not be opened (logged). */
static Device *get_device(EventBackend *b, const char *name) {
        Device *d = find_device(b, name);
        if (d)
                return d;
        if (!kbevent_device_name_is_valid(name) || streq(name, UNMAPPED))
                return NULL;
        if (device_open(b, name, &d) < 0)
                return NULL;
        return d;
}

/* ---------------------------------------------------------------- the queue */

static size_t device_n_durable(Device *d) {
        size_t n = 0;
        for (size_t i = 0; i < d->n_queue; i++)
                if (kbevent_type_is_durable(d->queue[i].event->type))
                        n++;
        return n;
}

static bool device_degraded(Device *d) {
        return d->n_unwritten > 0 || d->n_waiting > 0;
}

static int on_write_retry(sd_event_source *s, uint64_t usec, void *userdata);

/* Whenever something is held in memory, a retry at least every WRITE_RETRY_USEC. */
static void device_arm_write_retry(Device *d) {
        if (!device_degraded(d)) {
                event_timer_disarm(d->write_timer);
                return;
        }
        if (!event_timer_is_armed(d->write_timer))
                (void) event_timer_arm_relative(d->backend->event, &d->write_timer, WRITE_RETRY_USEC, USEC_PER_SEC,
                                                on_write_retry, d);
}

/* The spool file of a numbered durable event; a failure leaves it held in memory (section 5.0). */
static int device_store_entry(Device *d, Entry *en) {
        char name[64];
        int r;

        event_file_name(en->event, name);
        r = write_event_file(d->spool_fd, en->event, d->st.boot_id, name);
        if (r < 0) {
                if (manager_free_reserve_on(d->backend->manager, r))
                        r = write_event_file(d->spool_fd, en->event, d->st.boot_id, name);
        }
        return r;
}

/* Retries every write that failed: ids for the waiting events (state.json), then the spool files
 * of the events held in memory. Called at every spool operation and by the retry timer. */
static void device_flush(Device *d) {
        size_t before = d->n_unwritten + d->n_waiting;
        size_t n = 0;
        int r;

        while (n < d->n_waiting) {
                Entry *en = &d->waiting[n];
                r = device_take_id(d, &en->event->id);
                if (r < 0)
                        break;
                en->unwritten = true;
                r = entry_array_push(&d->queue, &d->n_queue, *en);
                if (r < 0) {
                        /* The id is gone (a gap); the event waits for another one. */
                        en->event->id = 0;
                        break;
                }
                d->n_unwritten++;
                n++;
        }
        if (n > 0) {
                memmove(d->waiting, d->waiting + n, (d->n_waiting - n) * sizeof *d->waiting);
                d->n_waiting -= n;
                log_info("Device %s: state.json is written again; %zu held events numbered", d->name, n);
        }
        for (size_t i = 0; i < d->n_queue && d->n_unwritten > 0; i++) {
                Entry *en = &d->queue[i];
                if (!en->unwritten)
                        continue;
                r = device_store_entry(d, en);
                if (r < 0)
                        break;
                en->unwritten = false;
                d->n_unwritten--;
                log_info("Device %s: event %" PRIu64 " (%s) is written to the spool now", d->name, en->event->id,
                         kbevent_type_to_string(en->event->type));
        }
        if (n > 0)
                device_schedule(d);
        device_arm_write_retry(d);
        if (before != d->n_unwritten + d->n_waiting)
                notify_changed(d->backend);
}

static int on_write_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;
        device_flush(d);
        return 0;
}

/* Numbers, stores (durable types) and queues an event. A durable event is never refused for a
 * failed write: without an id (state.json cannot be written) it waits, unnumbered, behind the
 * others (section 9.1); without its file it is queued and held in memory (section 5.0). A volatile
 * one that cannot be numbered is refused; on any refusal nothing is queued. */
static int device_add(Device *d, KbEvent *e, Drink *drink) {
        bool durable = kbevent_type_is_durable(e->type);
        Entry en = { .event = e, .drink = drink };
        int r;

        /* Every new event retries what failed before (5.0, 9.1). */
        if (device_degraded(d))
                device_flush(d);
        if (d->n_waiting > 0) {
                if (!durable)
                        return -EAGAIN;
                r = entry_array_push(&d->waiting, &d->n_waiting, en);
                if (r < 0)
                        return r;
                log_error("Device %s: cannot write state.json (an earlier write failed); holding %zu events", d->name,
                          d->n_waiting);
                device_arm_write_retry(d);
                notify_changed(d->backend);
                return 0;
        }
        r = device_take_id(d, &e->id);
        if (r < 0) {
                if (!durable)
                        return r;
                e->id = 0;
                r = entry_array_push(&d->waiting, &d->n_waiting, en);
                if (r < 0)
                        return r;
                log_error("Device %s: cannot write state.json (%s); holding %zu events", d->name, strerror(-r),
                          d->n_waiting);
                device_arm_write_retry(d);
                notify_changed(d->backend);
                return 0;
        }
        if (durable) {
                r = device_store_entry(d, &en);
                if (r < 0) {
                        log_error_errno(r, "Device %s: cannot write event %" PRIu64 " (%s) to the spool: %m; it is held "
                                        "in memory and sent from there, retrying the write", d->name, e->id,
                                        kbevent_type_to_string(e->type));
                        en.unwritten = true;
                }
        }
        r = entry_array_push(&d->queue, &d->n_queue, en);
        if (r < 0) {
                if (durable && !en.unwritten) {
                        char name[64];
                        event_file_name(e, name);
                        (void) unlinkat(d->spool_fd, name, 0);
                }
                return r;
        }
        if (en.unwritten) {
                d->n_unwritten++;
                device_arm_write_retry(d);
                notify_changed(d->backend);
        }
        return 0;
}

static void device_activate(Device *d);

/* A new durable event of 'type' with payload 'data', created now. 'urgent': pour and token events
 * make an attempt at once (section 5.0). */
static int device_add_new(Device *d, KbEventType type, const char *data, Drink *drink, const KbEventClock *created) {
        _cleanup_(kbevent_freep) KbEvent *e = NULL;
        KbEventClock now;
        int r;

        if (!created) {
                clock_now(d->backend, &now);
                created = &now;
        }
        r = kbevent_new(&e, type, created, data);
        if (r < 0)
                return r;
        r = device_add(d, e, drink);
        if (r < 0)
                return r;
        TAKE_PTR(e);
        device_activate(d);
        if (type == KBEVENT_POUR || type == KBEVENT_TOKEN)
                d->next_attempt = 0;
        device_schedule(d);
        notify_changed(d->backend);
        return 0;
}

/* ---------------------------------------------------------------- status (section 5.6) */

static int status_meters(Device *d, KbStatusMeter **ret_m, size_t *ret_nm, unsigned **ret_r, size_t *ret_nr) {
        FlowEngine *engine = manager_get_engine(d->backend->manager);
        size_t nt = flow_engine_n_taps(engine), nm = 0, nr = 0;
        _cleanup_(freep) KbStatusMeter *m = calloc(nt + 1, sizeof *m);
        _cleanup_(freep) unsigned *rl = calloc(nt + 1, sizeof *rl);

        if (!m || !rl)
                return -ENOMEM;
        for (size_t i = 0; i < nt; i++) {
                char dev[KBEVENT_DEVICE_NAME_MAX + 1];
                FlowTapInfo t;
                unsigned num, relay;
                size_t j;

                if (flow_engine_tap_at(engine, i, &t) < 0 || kbevent_parse_port(t.meter_name, "flow", dev, &num) < 0 ||
                    !streq(dev, d->name))
                        continue;
                for (j = 0; j < nm && m[j].meter_number < num; j++)
                        ;
                if (j < nm && m[j].meter_number == num)
                        continue;
                memmove(m + j + 1, m + j, (nm - j) * sizeof *m);
                m[j] = (KbStatusMeter) { .meter_number = num, .total_ticks = device_total_ticks(d, num, t.total_ticks),
                                         .ml_per_tick = t.ml_per_tick };
                nm++;
                if (!isempty(t.relay_name) && kbevent_parse_port(t.relay_name, "relay", dev, &relay) >= 0 &&
                    streq(dev, d->name)) {
                        for (j = 0; j < nr && rl[j] < relay; j++)
                                ;
                        if (j < nr && rl[j] == relay)
                                continue;
                        memmove(rl + j + 1, rl + j, (nr - j) * sizeof *rl);
                        rl[j] = relay;
                        nr++;
                }
        }
        *ret_m = TAKE_PTR(m);
        *ret_nm = nm;
        *ret_r = TAKE_PTR(rl);
        *ret_nr = nr;
        return 0;
}

static void device_queue_status(Device *d) {
        EventBackend *b = d->backend;
        _cleanup_(freep) KbStatusMeter *meters = NULL;
        _cleanup_(freep) unsigned *relays = NULL;
        _cleanup_(freep) char *data = NULL, *fw = NULL;
        _cleanup_(kbevent_freep) KbEvent *e = NULL;
        const Controller *c = manager_find_controller(b->manager, d->name);
        size_t nm = 0, nr = 0;
        bool boot = !d->boot_status_sent;
        KbEventClock now;
        int r;

        /* At most one unsent status: a queued one outside the request in flight is replaced. */
        for (size_t i = d->req ? d->req_n : 0; i < d->n_queue; i++) {
                if (d->queue[i].event->type != KBEVENT_STATUS)
                        continue;
                if (strstr(d->queue[i].event->data, "\"state\":\"boot\""))
                        boot = true;
                entry_done(&d->queue[i]);
                memmove(d->queue + i, d->queue + i + 1, (d->n_queue - i - 1) * sizeof *d->queue);
                d->n_queue--;
                break;
        }
        d->boot_status_sent = true;

        if (c && c->has_firmware_version)
                fw = strdup_printf("kegbot-core/%s fw%" PRIu32, KEGBOT_VERSION, c->firmware_version);
        else
                fw = strdup("kegbot-core/" KEGBOT_VERSION);
        if (!fw || status_meters(d, &meters, &nm, &relays, &nr) < 0) {
                oom();
                return;
        }
        KbStatus s = {
                .boot = boot,
                .fw_version = fw,
                .uptime_ms = uptime_ms(b),
                .events_dropped = d->st.events_dropped,
                .heartbeat_ms = (uint64_t) b->config.heartbeat_interval * 1000,
                .pour_update_ms = b->config.pour_update_ms,
                .queue_capacity = b->config.spool_max,
                .meters = meters, .n_meters = nm,
                .relays = relays, .n_relays = nr,
        };
        r = kbevent_status_data(&s, &data);
        if (r < 0) {
                log_error_errno(r, "Device %s: cannot make a status event: %m", d->name);
                return;
        }
        clock_now(b, &now);
        r = kbevent_new(&e, KBEVENT_STATUS, &now, data);
        if (r >= 0)
                r = device_add(d, e, NULL);
        if (r < 0) {
                log_error_errno(r, "Device %s: cannot queue a status event: %m", d->name);
                return;
        }
        TAKE_PTR(e);
        device_schedule(d);
}

static int on_heartbeat(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;
        EventBackend *b = d->backend;

        (void) device_save(d);
        device_queue_status(d);
        (void) event_timer_arm(b->event, &d->heartbeat_timer, usec + (uint64_t) b->config.heartbeat_interval * USEC_PER_SEC,
                               USEC_PER_SEC, on_heartbeat, d);
        return 0;
}

/* Active devices send a boot status, then heartbeats (section 2.6, last paragraph). */
static void device_activate(Device *d) {
        EventBackend *b = d->backend;

        if (!d->logged_active) {
                d->logged_active = true;
                log_info("Controller %s reports through the Kegboard Event Protocol as device %s", d->name, d->name);
        }
        d->active = true;
        if (!b->started || d->heartbeat_timer)
                return;
        device_queue_status(d);
        (void) event_timer_arm_relative(b->event, &d->heartbeat_timer,
                                        (uint64_t) b->config.heartbeat_interval * USEC_PER_SEC, USEC_PER_SEC,
                                        on_heartbeat, d);
        notify_changed(b);
}

/* ---------------------------------------------------------------- delivery */

static void device_set_state(Device *d, EventDeviceState s) {
        if (d->state == s)
                return;
        log_debug("Device %s: %s -> %s", d->name, event_device_state_to_string(d->state), event_device_state_to_string(s));
        d->state = s;
        notify_changed(d->backend);
}

static uint64_t backoff_usec(EventBackend *b, unsigned k) {
        uint64_t t = (uint64_t) b->config.retry_interval * USEC_PER_SEC;
        for (unsigned i = 1; i < k && t < BACKOFF_MAX_USEC; i++)
                t *= 2;
        return MIN(t, BACKOFF_MAX_USEC);
}

static void device_send(Device *d);

static int on_attempt(sd_event_source *s, uint64_t usec, void *userdata) {
        device_send(userdata);
        return 0;
}

/* Section 10: the last attempt got a 2xx and nothing is paused or split. */
static bool device_healthy(Device *d) {
        return d->failures == 0 && d->state == EVENT_DEVICE_ONLINE && d->max_events == KBEVENT_BATCH_MAX_EVENTS;
}

/* A live flow with ticks not reported for at least --event_pour_update_ms. */
static bool updates_due(Device *d) {
        uint64_t now = now_mono(d->backend), every = (uint64_t) d->backend->config.pour_update_ms * USEC_PER_MSEC;

        if (every == 0 || !device_healthy(d))
                return false;
        for (size_t i = 0; i < d->n_live; i++)
                if (d->live[i].changed &&
                    (d->live[i].last_sent == 0 || now >= d->live[i].last_sent + every))
                        return true;
        return false;
}

static void device_schedule(Device *d) {
        EventBackend *b = d->backend;

        if (!b->started || b->stopping || d->req || d->state == EVENT_DEVICE_DENIED ||
            (d->n_queue == 0 && !updates_due(d)))
                return;
        /* From the loop, never from inside the caller (which may be the flow engine). */
        (void) event_timer_arm(b->event, &d->attempt_timer, MAX(d->next_attempt, 1), USEC_PER_MSEC * 10, on_attempt, d);
}

static void device_retry_in(Device *d, uint64_t usec) {
        d->next_attempt = now_mono(d->backend) + usec;
        device_schedule(d);
}

static void on_age_unknown(const KbEvent *e, uint64_t age_ms, void *userdata) {
        Device *d = userdata;
        log_warning("Device %s: event %" PRIu64 " predates this boot and its time is unknown; reporting it %" PRIu64 " s old",
                    d->name, e->id, age_ms / 1000);
}

static void on_response(HttpClient *c, const HttpResponse *resp, void *userdata);

static void device_send(Device *d) {
        EventBackend *b = d->backend;
        _cleanup_(freep) KbEvent **queue = NULL;
        _cleanup_(freep) char *auth = NULL;
        KbBatch batch = {};
        const char *headers[5];
        size_t nh = 0;
        int r;

        if (!b->started || b->stopping || d->req || d->state == EVENT_DEVICE_DENIED ||
            (d->n_queue == 0 && !updates_due(d)))
                return;
        queue = calloc(d->n_queue + 1, sizeof *queue);
        if (!queue) {
                oom();
                return;
        }
        for (size_t i = 0; i < d->n_queue; i++)
                queue[i] = d->queue[i].event;
        KbBatchContext ctx = {
                .device = d->name,
                .boot_id = d->st.boot_id,
                .sent_uptime_ms = uptime_ms(b),
                .max_events = d->max_events,
        };
        clock_now(b, &ctx.now);
        /* Ephemeral updates: numbered now, above every queued id; sent only if everything queued
         * goes in the same batch (the builder's rule), else skipped, never deferred. */
        KbEvent *extra[16] = {};
        LiveFlow *extra_flow[16] = {};
        size_t n_extra = 0;
        if (updates_due(d)) {
                uint64_t now = now_mono(b), every = (uint64_t) b->config.pour_update_ms * USEC_PER_MSEC;
                for (size_t i = 0; i < d->n_live && n_extra < ELEMENTSOF(extra); i++) {
                        LiveFlow *lf = &d->live[i];
                        _cleanup_(freep) char *data = NULL;
                        if (!lf->changed || (lf->last_sent != 0 && now < lf->last_sent + every))
                                continue;
                        if (kbevent_pour_update_data(lf->meter, lf->uuid, lf->volume_ml, lf->duration_ms, &data) < 0 ||
                            kbevent_new(&extra[n_extra], KBEVENT_POUR_UPDATE, &ctx.now, data) < 0)
                                continue;
                        if (device_take_id(d, &extra[n_extra]->id) < 0) {
                                extra[n_extra] = kbevent_free(extra[n_extra]);
                                break;
                        }
                        extra_flow[n_extra++] = lf;
                }
        }
        r = kbevent_batch_build(&ctx, queue, d->n_queue, extra, n_extra, on_age_unknown, d, &batch);
        for (size_t i = 0; i < n_extra; i++) {
                if (r >= 0 && i < batch.n_extra) {
                        extra_flow[i]->last_sent = now_mono(b);
                        extra_flow[i]->changed = false;
                }
                kbevent_free(extra[i]);
        }
        if (r == -ENODATA)
                return;
        if (r < 0) {
                log_error_errno(r, "Device %s: cannot build a batch: %m", d->name);
                device_retry_in(d, backoff_usec(b, d->failures + 1));
                return;
        }
        headers[nh++] = "Content-Type: application/json";
        headers[nh++] = "Accept: application/json";
        headers[nh++] = "Expect:";
        if (d->token) {
                auth = strdup_printf("Authorization: Bearer %s", d->token);
                if (!auth) {
                        kbevent_batch_done(&batch);
                        oom();
                        return;
                }
                headers[nh++] = auth;
        }
        headers[nh] = NULL;
        HttpRequestSpec spec = {
                .method = "POST",
                .url = b->url,
                .headers = headers,
                .body = batch.body,
                .body_size = batch.size,
                .max_response = RESPONSE_MAX,
                .timeout_usec = http_timeout_usec(b->config.api_timeout),
        };
        if (b->config.debug_events)
                log_debug("Device %s: request %s", d->name, batch.body);
        r = http_client_start(b->http, &spec, on_response, d, &d->req);
        if (auth)
                explicit_bzero(auth, strlen(auth));
        if (r < 0) {
                kbevent_batch_done(&batch);
                log_error_errno(r, "Device %s: cannot start a request: %m", d->name);
                device_retry_in(d, backoff_usec(b, d->failures + 1));
                return;
        }
        d->req_n = batch.n_queued;
        d->req_token = !!d->token;
        d->req_start = now_mono(b);
        log_debug("Device %s: sending %zu events and %zu pour updates (%zu bytes)", d->name, batch.n_queued,
                  batch.n_extra, batch.size);
        kbevent_batch_done(&batch);
}

static void announce_pour(Device *d, Entry *e) {
        char liters[DOUBLE_STRING_MAX];

        if (!e->drink)
                return;
        e->drink->has_drink_id = false;
        double_format(e->drink->volume_ml / 1000.0, liters);
        log_named(LOG_INFO, "DrinkManager", "Delivered pour %s meter=%s liters=%s ticks=%" PRIu64 " device=%s event=%" PRIu64,
                  e->drink->uuid, e->drink->meter_name, liters, e->drink->ticks, d->name, e->event->id);
        if (d->backend->sink)
                drink_sink_notify_accepted(&d->backend->sink->sink, e->drink);
}

/* Removes the first n events of the queue: their files are unlinked, the directory fsync'ed once. */
static void device_remove_head(Device *d, size_t n, bool announce) {
        bool unlinked = false;
        char name[64];

        for (size_t i = 0; i < n; i++) {
                KbEvent *e = d->queue[i].event;
                if (!kbevent_type_is_durable(e->type))
                        continue;
                if (d->queue[i].unwritten) {
                        /* Delivered from memory: there is no file. */
                        d->n_unwritten--;
                        continue;
                }
                event_file_name(e, name);
                if (unlinkat(d->spool_fd, name, 0) < 0 && errno != ENOENT)
                        log_error_errno(errno, "Device %s: cannot remove %s: %m", d->name, name);
                unlinked = true;
        }
        if (unlinked)
                (void) fsync_dir(d->spool_fd);
        /* Out of the queue first: an announcement's observers may look at the queue. */
        Entry done[KBEVENT_BATCH_MAX_EVENTS];
        assert(n <= ELEMENTSOF(done));
        memcpy(done, d->queue, n * sizeof *d->queue);
        memmove(d->queue, d->queue + n, (d->n_queue - n) * sizeof *d->queue);
        d->n_queue -= n;
        for (size_t i = 0; i < n; i++) {
                if (announce && done[i].event->type == KBEVENT_POUR)
                        announce_pour(d, &done[i]);
                entry_done(&done[i]);
        }
        /* A spool operation: what could not be written is tried again. */
        if (device_degraded(d))
                device_flush(d);
        else
                device_arm_write_retry(d);
}

/* A single event the receiver rejected (section 9.4): durable ones to failed/, a status discarded. */
/* A durable event written to failed/ with its "failure" member (the queue still holds it). */
static int device_write_failed(Device *d, KbEvent *e, long status, const char *reason) {
        char name[64];
        int r;

        free(e->failure);
        e->failure = NULL;
        r = kbevent_failure_format(now_realtime(d->backend), status, reason, &e->failure);
        event_file_name(e, name);
        if (r >= 0)
                r = write_event_file(d->failed_fd, e, d->st.boot_id, name);
        if (r >= 0)
                r = fsync_dir(d->failed_fd);
        if (r < 0)
                return log_error_errno(r, "Device %s: cannot move event %" PRIu64 " to failed/: %m", d->name, e->id);
        d->n_failed++;
        if (e->type == KBEVENT_POUR)
                d->n_failed_pours++;
        return 0;
}

static void device_quarantine_head(Device *d, long status, const char *body, size_t len) {
        Entry *en = &d->queue[0];
        KbEvent *e = en->event;
        _cleanup_(freep) char *reason = NULL, *esc = NULL;

        reason = strndup(body ?: "", MIN(len, (size_t) KBEVENT_FAILURE_REASON_MAX));
        esc = escape_for_log(reason ?: "");
        log_error("Device %s: server rejected event %" PRIu64 " (%s): %ld %s; %s", d->name, e->id,
                  kbevent_type_to_string(e->type), status, strempty(esc),
                  kbevent_type_is_durable(e->type) ? "moved to failed/" : "discarded");
        if (kbevent_type_is_durable(e->type) && device_write_failed(d, e, status, reason ?: "") < 0) {
                /* Never lost: it stays queued and is tried again. */
                device_retry_in(d, backoff_usec(d->backend, ++d->failures));
                return;
        }
        d->st.events_dropped++;
        device_remove_head(d, 1, false);
        (void) device_write_state(d);
        notify_changed(d->backend);
}

static void device_transient(Device *d, const char *reason, bool endpoint) {
        EventBackend *b = d->backend;
        uint64_t wait;

        d->failures++;
        wait = backoff_usec(b, d->failures);
        if (endpoint)
                log_error("Device %s: %s answered %s; check --event_url", d->name, b->url, reason);
        if (d->failures == 1)
                log_warning("Device %s: delivery failed (%s); retry in %" PRIu64 " s", d->name, reason, wait / USEC_PER_SEC);
        else
                log_info("Device %s: delivery failed (%s); retry in %" PRIu64 " s", d->name, reason, wait / USEC_PER_SEC);
        device_set_state(d, EVENT_DEVICE_OFFLINE);
        device_retry_in(d, wait);
}

static void device_pairing(Device *d, const char *body, size_t len) {
        EventBackend *b = d->backend;
        _cleanup_(freep) char *token = NULL;
        KbPairingState ps;
        uint64_t now = now_mono(b);
        int r;

        if (d->req_token) {
                log_warning("Device %s: server rejected its token; token deleted, pairing again", d->name);
                device_drop_token(d);
        }
        if (kbevent_parse_pairing(body, len, &ps, &token) < 0) {
                oom();
                ps = KBEVENT_PAIRING_PENDING;
        }
        switch (ps) {
        case KBEVENT_PAIRING_ALLOWED:
                r = device_store_token(d, token);
                if (r < 0)
                        log_error_errno(r, "Device %s: cannot store the token (%m); pairing again after a restart", d->name);
                else
                        log_info("Device %s: paired; token stored", d->name);
                free(d->token);
                d->token = TAKE_PTR(token);
                d->failures = 0;
                device_retry_in(d, 0);
                notify_changed(b);
                return;
        case KBEVENT_PAIRING_DENIED:
                log_warning("Device %s: pairing denied by the server; not sending until restart, SIGHUP, Sync() or "
                            "ResetPairing()", d->name);
                device_set_state(d, EVENT_DEVICE_DENIED);
                event_timer_disarm(d->attempt_timer);
                return;
        case KBEVENT_PAIRING_PENDING:
                if (d->state != EVENT_DEVICE_PAIRING) {
                        d->pairing_since = now;
                        log_info("Device %s: pairing pending; approve device \"%s\" on the Kegbot Server dashboard",
                                 d->name, d->name);
                        device_set_state(d, EVENT_DEVICE_PAIRING);
                } else
                        log_debug("Device %s: pairing still pending", d->name);
                device_retry_in(d, now - d->pairing_since < PAIRING_FAST_SPAN_USEC ? PAIRING_POLL_USEC :
                                   (uint64_t) b->config.heartbeat_interval * USEC_PER_SEC);
                return;
        }
}

/* ---------------------------------------------------------------- grants (sections 6.3-6.8) */

static void presentment_free(Presentment *p) {
        if (!p)
                return;
        sd_event_source_disable_unref(p->window_timer);
        free(p->auth_device);
        free(p->token);
        free(p);
}

static void device_set_relay(Device *d, unsigned relay, bool enabled) {
        _cleanup_(freep) char *name = strdup_printf("%s.relay%u", d->name, relay);
        if (name)
                (void) manager_set_relay(d->backend->manager, name, enabled);
}

static int on_relay_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;
        bool any = false;

        /* The board's watchdog closes a valve 10 s after the last command: every second while granted. */
        for (unsigned r = 0; r <= KBEVENT_NUMBER_MAX; r++)
                if (grant_table_relay_granted(d->grants, r)) {
                        device_set_relay(d, r, true);
                        any = true;
                }
        if (any)
                (void) event_timer_arm(d->backend->event, &d->relay_timer, usec + USEC_PER_SEC, 50 * USEC_PER_MSEC,
                                       on_relay_timer, d);
        return 0;
}

static void relay_timer_start(Device *d) {
        if (!event_timer_is_armed(d->relay_timer))
                (void) event_timer_arm_relative(d->backend->event, &d->relay_timer, USEC_PER_SEC, 50 * USEC_PER_MSEC,
                                                on_relay_timer, d);
}

/* Whether meter n of this device may be granted: 0..5 or a tap of the controller (section 2.1). */
static bool meter_grantable(Device *d, unsigned n, bool relay) {
        FlowEngine *engine = manager_get_engine(d->backend->manager);

        if (n <= 5)
                return true;
        for (size_t i = 0; i < flow_engine_n_taps(engine); i++) {
                char dev[KBEVENT_DEVICE_NAME_MAX + 1];
                FlowTapInfo t;
                unsigned x;

                if (flow_engine_tap_at(engine, i, &t) < 0)
                        continue;
                if (!relay && kbevent_parse_port(t.meter_name, "flow", dev, &x) >= 0 && streq(dev, d->name) && x == n)
                        return true;
                if (relay && !isempty(t.relay_name) && kbevent_parse_port(t.relay_name, "relay", dev, &x) >= 0 &&
                    streq(dev, d->name) && x == n)
                        return true;
        }
        return false;
}

static void meter_name_of(Device *d, unsigned n, char buf[static KBEVENT_DEVICE_NAME_MAX + 16]) {
        snprintf(buf, KBEVENT_DEVICE_NAME_MAX + 16, "%s.flow%u", d->name, n);
}

/* Ends the flow on a meter now: its pour is recorded while the grant still covers the meter. */
static void stop_flow_on(Device *d, unsigned n) {
        char meter[KBEVENT_DEVICE_NAME_MAX + 16];
        FlowTapInfo t;

        meter_name_of(d, n, meter);
        if (flow_engine_get_tap(manager_get_engine(d->backend->manager), meter, &t) >= 0 && t.has_flow)
                (void) manager_stop_flow(d->backend->manager, meter);
}

/* The flows on the device's taps have the idle limit of the grant covering them (section 6.8):
 * the table of core-behaviour.md section 6.3 for the grant's echoed auth_device. */
static void device_sync_flow_idle(Device *d) {
        FlowEngine *engine = manager_get_engine(d->backend->manager);
        size_t nt = flow_engine_n_taps(engine);
        _cleanup_(strv_freep) char **meters = calloc(nt + 1, sizeof(char *));
        _cleanup_(freep) unsigned *nums = calloc(nt + 1, sizeof(unsigned));
        size_t n = 0;

        if (!meters || !nums)
                return (void) oom();
        /* The names first: each call below may change the engine's tap list snapshot. */
        for (size_t i = 0; i < nt; i++) {
                char dev[KBEVENT_DEVICE_NAME_MAX + 1];
                FlowTapInfo t;
                unsigned num;

                if (flow_engine_tap_at(engine, i, &t) < 0 || kbevent_parse_port(t.meter_name, "flow", dev, &num) < 0 ||
                    !streq(dev, d->name))
                        continue;
                meters[n] = strdup(t.meter_name);
                if (!meters[n])
                        return (void) oom();
                nums[n++] = num;
        }
        for (size_t i = 0; i < n; i++) {
                Grant *g = grant_table_covering(d->grants, nums[i]);
                (void) manager_set_tap_grant(d->backend->manager, meters[i], !!g, g && g->token ? g->auth_device : NULL);
        }
}

static int on_grant_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* The one timer of the device's grants: at the next lifetime or idle limit, exact to 1 ms. */
static void device_arm_grant_timer(Device *d) {
        uint64_t at = grant_table_next_deadline(d->grants);

        if (at == UINT64_MAX)
                event_timer_disarm(d->grant_timer);
        else
                (void) event_timer_arm(d->backend->event, &d->grant_timer, at, USEC_PER_MSEC, on_grant_timer, d);
}

static int on_grant_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;

        (void) grant_table_expire(d->grants, usec);
        device_arm_grant_timer(d);
        return 0;
}

static void on_grant_stop_flow(unsigned meter, void *userdata) {
        stop_flow_on(userdata, meter);
}

static void on_grant_relay(unsigned relay, bool enabled, void *userdata) {
        device_set_relay(userdata, relay, enabled);
}

/* One ending of a grant, after its flows and relays (section 6.8): the grant_end event. */
static void on_grant_ended(const GrantEnding *e, void *userdata) {
        Device *d = userdata;
        EventBackend *b = d->backend;
        const Grant *g = e->grant;
        _cleanup_(freep) char *data = NULL;
        char vol[DOUBLE_STRING_MAX], list[4 * (KBEVENT_NUMBER_MAX + 1)] = "";
        int r;

        KbGrantEnd ge = {
                .meter_numbers = e->meters, .n_meter_numbers = e->n_meters, .reason = e->reason, .grant_id = g->id,
                .volume_ml = g->poured, .duration_ms = e->duration_usec / USEC_PER_MSEC,
                .auth_device = g->auth_device && g->token ? g->auth_device : NULL,
                .auth_token = g->auth_device && g->token ? g->token : NULL,
        };
        r = kbevent_grant_end_data(&ge, &data);
        if (r >= 0)
                r = device_add_new(d, KBEVENT_GRANT_END, data, NULL, NULL);
        if (r < 0)
                log_error_errno(r, "Device %s: cannot queue the end of grant %s: %m", d->name, g->id);
        double_format(double_round(g->poured, 3), vol);
        for (size_t i = 0; i < e->n_meters; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%u", i ? "," : "", e->meters[i]);
        log_info("Device %s: grant %s ended (%s): %s mL over %" PRIu64 " ms on meters %s", d->name, g->id,
                 kbevent_grant_end_reason_to_string(e->reason), vol, ge.duration_ms, list);
        if (b->signals && b->signals->grant_ended)
                b->signals->grant_ended(d->name, g->id, kbevent_grant_end_reason_to_string(e->reason),
                                        double_round(g->poured, 3), ge.duration_ms, b->signals_userdata);
        device_sync_flow_idle(d);
        if (e->whole)
                notify_changed(b);
}

static const GrantTableOps grant_ops = {
        .stop_flow = on_grant_stop_flow,
        .set_relay = on_grant_relay,
        .ended = on_grant_ended,
};

static Presentment *presentment_find(Device *d, const char *auth_device, const char *token) {
        for (size_t i = 0; i < d->n_presentments; i++)
                if (streq(d->presentments[i]->auth_device, auth_device) && streq(d->presentments[i]->token, token))
                        return d->presentments[i];
        return NULL;
}

/* The presentment check of section 6.4. */
static bool presentment_fresh(Device *d, const char *auth_device, const char *token) {
        Presentment *p = presentment_find(d, auth_device, token);
        uint64_t now = now_mono(d->backend);

        if (!p)
                return false;
        if (now - p->time <= (uint64_t) d->backend->config.auth_window * USEC_PER_SEC)
                return true;
        return !streq(auth_device, "core.rfid") && p->present;
}

static void command_authorize(Device *d, const KbCommand *c, const char **ret_result, char **ret_message) {
        EventBackend *b = d->backend;
        KbAuthorize a = {};
        const char *msg = NULL;
        Grant *g;
        bool is_new;
        uint64_t now = now_mono(b);
        int r;

        *ret_result = "error";
        if (c->data && !json_is_object(c->data)) {
                *ret_message = strdup("bad data");
                return;
        }
        r = kbevent_parse_authorize(c->data, &a, &msg);
        if (r == -ENOMEM) {
                oom();
                return;
        }
        if (r < 0) {
                *ret_message = strdup(msg);
                return;
        }
        for (size_t i = 0; i < a.n_meters; i++)
                if (!meter_grantable(d, a.meters[i], false)) {
                        *ret_message = strdup_printf("unknown meter %u", a.meters[i]);
                        goto done;
                }
        for (size_t i = 0; i < a.n_relays; i++)
                if (!meter_grantable(d, a.relays[i], true)) {
                        *ret_message = strdup_printf("unknown relay %u", a.relays[i]);
                        goto done;
                }
        if (a.auth_device && a.token) {
                Presentment *p = presentment_find(d, a.auth_device, a.token);
                if (p)
                        p->decided = true;
                if (!presentment_fresh(d, a.auth_device, a.token)) {
                        _cleanup_(freep) char *e1 = escape_for_log(a.auth_device), *e2 = escape_for_log(a.token),
                                              *eid = escape_for_log(c->id);
                        log_warning("Device %s: authorize %s for %s/%s ignored: presentment expired", d->name,
                                    strempty(eid), strempty(e1), strempty(e2));
                        *ret_message = strdup("presentment expired");
                        goto done;
                }
        }

        r = grant_table_apply(d->grants, &a, now, (uint64_t) b->config.max_grant_s * USEC_PER_SEC, &g);
        if (r < 0) {
                log_error_errno(r, "Device %s: cannot apply grant: %m", d->name);
                goto done;
        }
        is_new = r > 0;
        device_arm_grant_timer(d);
        if (a.n_relays > 0)
                relay_timer_start(d);
        {
                char ml[4 * (KBEVENT_NUMBER_MAX + 1)] = "", rl[4 * (KBEVENT_NUMBER_MAX + 1)] = "";
                char vol[DOUBLE_STRING_MAX] = "none", idle[32] = "none";
                for (size_t k = 0; k < a.n_meters; k++)
                        snprintf(ml + strlen(ml), sizeof ml - strlen(ml), "%s%u", k ? "," : "", a.meters[k]);
                for (size_t k = 0; k < a.n_relays; k++)
                        snprintf(rl + strlen(rl), sizeof rl - strlen(rl), "%s%u", k ? "," : "", a.relays[k]);
                if (g->max_volume_ml > 0)
                        double_format(g->max_volume_ml, vol);
                if (g->max_idle_usec > 0)
                        snprintf(idle, sizeof idle, "%" PRIu64, g->max_idle_usec / USEC_PER_SEC);
                log_info("Device %s: grant %s applied: meters %s relays %s max_volume_ml=%s lifetime_s=%" PRIu64
                         " max_idle_s=%s", d->name, g->id, ml, rl[0] ? rl : "none", vol,
                         (g->deadline - g->created) / USEC_PER_SEC, idle);
        }
        device_sync_flow_idle(d);
        if (is_new && b->signals && b->signals->grant_started)
                b->signals->grant_started(d->name, g->id, a.meters, a.n_meters, a.relays, a.n_relays,
                                          g->auth_device ?: "", g->token ?: "", b->signals_userdata);
        *ret_result = "ok";
        notify_changed(b);
done:
        kbevent_authorize_done(&a);
}

static void command_deauthorize(Device *d, const KbCommand *c, const char **ret_result, char **ret_message) {
        _cleanup_(strv_freep) char **ids = NULL;
        const char *msg = NULL;
        bool all;
        int r;

        *ret_result = "error";
        if (c->data && !json_is_object(c->data)) {
                *ret_message = strdup("bad data");
                return;
        }
        r = kbevent_parse_deauthorize(c->data, &all, &ids, &msg);
        if (r < 0) {
                *ret_message = msg ? strdup(msg) : NULL;
                return;
        }
        if (all)
                while (grant_table_size(d->grants) > 0)
                        grant_table_end(d->grants, grant_table_at(d->grants, 0), KBEVENT_END_COMMAND, now_mono(d->backend));
        else
                for (char **id = ids; *id; id++) {
                        Grant *g = grant_table_find(d->grants, *id);
                        if (g)
                                grant_table_end(d->grants, g, KBEVENT_END_COMMAND, now_mono(d->backend));
                }
        device_arm_grant_timer(d);
        *ret_result = "ok";
}


/* ---------------------------------------------------------------- pour updates (section 5.3) */

static LiveFlow *live_find(Device *d, uint64_t flow_id) {
        for (size_t i = 0; i < d->n_live; i++)
                if (d->live[i].flow_id == flow_id)
                        return &d->live[i];
        return NULL;
}

static void live_remove(Device *d, LiveFlow *lf) {
        size_t i = (size_t) (lf - d->live);
        memmove(d->live + i, d->live + i + 1, (d->n_live - i - 1) * sizeof *d->live);
        d->n_live--;
}

static int on_update_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;
        if (d->n_live == 0)
                return 0;
        device_schedule(d);
        (void) event_timer_arm(d->backend->event, &d->update_timer,
                               usec + (uint64_t) d->backend->config.pour_update_ms * USEC_PER_MSEC, 10 * USEC_PER_MSEC,
                               on_update_timer, d);
        return 0;
}

static void live_flow_update(Device *d, const FlowInfo *f, unsigned meter) {
        EventBackend *b = d->backend;
        LiveFlow *lf = live_find(d, f->flow_id);

        if (f->state == FLOW_STATE_COMPLETED) {
                /* A recorded flow's UUID was taken by its drink already (on_flow_uuid()); what is
                 * left is a flow that made no drink. */
                if (lf)
                        live_remove(d, lf);
                return;
        }
        if (!f->has_ticks || b->config.pour_update_ms == 0)
                return;
        if (!lf) {
                LiveFlow *n = realloc(d->live, (d->n_live + 1) * sizeof *n);
                if (!n)
                        return (void) oom();
                d->live = n;
                lf = &d->live[d->n_live];
                *lf = (LiveFlow) { .flow_id = f->flow_id, .meter = meter };
                if (uuid_generate(lf->uuid) < 0)
                        return;
                d->n_live++;
        }
        if (f->volume_known)
                lf->volume_ml = f->volume_ml;
        lf->duration_ms = f->last_tick_realtime > f->first_tick_realtime ?
                (f->last_tick_realtime - f->first_tick_realtime) / USEC_PER_MSEC : 0;
        lf->changed = true;
        /* The first at once, then at most one per interval; the timer keeps asking while it flows. */
        if (lf->last_sent == 0)
                device_schedule(d);
        if (!event_timer_is_armed(d->update_timer))
                (void) event_timer_arm_relative(b->event, &d->update_timer,
                                                (uint64_t) b->config.pour_update_ms * USEC_PER_MSEC, 10 * USEC_PER_MSEC,
                                                on_update_timer, d);
}

/* The manager asks for the UUID of a flow's drink: the one its updates carried. */
static const char *on_flow_uuid(Manager *m, uint64_t flow_id, const char *meter, void *userdata) {
        EventBackend *b = userdata;
        static char uuid[UUID_STRING_MAX];
        char dev[KBEVENT_DEVICE_NAME_MAX + 1];
        LiveFlow *lf;
        Device *d;

        if (kbevent_parse_port(meter, "flow", dev, NULL) < 0 || !(d = find_device(b, dev)) ||
            !(lf = live_find(d, flow_id)))
                return NULL;
        memcpy(uuid, lf->uuid, sizeof uuid);
        live_remove(d, lf);
        return uuid;
}

/* The grant accounting of section 6.8: every counted delta on a covered meter. From inside the
 * engine: limits that need a flow ended are acted on from the loop. */
static int on_volume_check(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;

        (void) grant_table_end_full(d->grants, now_mono(d->backend));
        device_arm_grant_timer(d);
        return 0;
}

static void on_flow_updated(Manager *m, const FlowInfo *f, void *userdata) {
        EventBackend *b = userdata;
        char dev[KBEVENT_DEVICE_NAME_MAX + 1];
        unsigned n;
        Device *d;
        Grant *g;
        uint64_t last_tick;

        if (kbevent_parse_port(f->meter_name, "flow", dev, &n) < 0 || !(d = find_device(b, dev)))
                return;
        live_flow_update(d, f, n);
        g = grant_table_covering(d->grants, n);
        last_tick = g ? g->last_tick : 0;
        if (grant_table_flow_update(d->grants, n, f->flow_id, f->volume_known, f->volume_ml, now_mono(b)))
                (void) event_timer_arm(b->event, &d->volume_check, 1, USEC_PER_MSEC, on_volume_check, d);
        /* A counted delta restarted the grant's idle clock. */
        if (g && g->last_tick != last_tick)
                device_arm_grant_timer(d);
}

/* ---------------------------------------------------------------- tokens (section 5.5) */

static int on_presentment_window(sd_event_source *s, uint64_t usec, void *userdata) {
        Presentment *p = userdata;
        if (!p->decided) {
                _cleanup_(freep) char *e1 = escape_for_log(p->auth_device), *e2 = escape_for_log(p->token);
                log_info("Device %s: no decision on %s/%s within %u s; nothing opens", p->device->name, strempty(e1),
                         strempty(e2), p->device->backend->config.auth_window);
        }
        return 0;
}

static void device_token(Device *d, const char *auth_device, const char *token, bool added) {
        EventBackend *b = d->backend;
        Presentment *p = presentment_find(d, auth_device, token);
        _cleanup_(freep) char *data = NULL;
        int r;

        /* A repeated "added" opens no second grant; a "removed" of nothing present sends nothing. */
        if (added && p && p->present)
                return;
        if (!added && !(p && p->present))
                return;
        r = kbevent_token_data(auth_device, token, added, &data);
        if (r < 0) {
                log_warning("Device %s: token event for %s not created: a field breaks its limit", d->name, auth_device);
                return;
        }
        if (added) {
                if (!p) {
                        Presentment **n = realloc(d->presentments, (d->n_presentments + 1) * sizeof *n);
                        if (!n)
                                return (void) oom();
                        d->presentments = n;
                        p = calloc(1, sizeof *p);
                        if (!p)
                                return (void) oom();
                        p->device = d;
                        p->auth_device = strdup(auth_device);
                        p->token = strdup(token);
                        d->presentments[d->n_presentments++] = p;
                        if (!p->auth_device || !p->token)
                                return (void) oom();
                }
                p->time = now_mono(b);
                p->present = true;
                p->decided = false;
                (void) event_timer_arm_relative(b->event, &p->window_timer,
                                                (uint64_t) b->config.auth_window * USEC_PER_SEC, 100 * USEC_PER_MSEC,
                                                on_presentment_window, p);
        } else
                p->present = false;
        r = device_add_new(d, KBEVENT_TOKEN, data, NULL, NULL);
        if (r < 0) {
                log_error_errno(r, "Device %s: token event not queued: %m", d->name);
                return;
        }
        /* A captive token taken away ends the grants it opened (section 6.8). */
        if (!added && grant_table_token_removed(d->grants, auth_device, token, now_mono(b)) > 0)
                device_arm_grant_timer(d);
}

static void on_token_presented(Manager *m, const char *auth_device, const char *value, const char *meter, bool added,
                               void *userdata) {
        EventBackend *b = userdata;
        FlowEngine *engine = manager_get_engine(m);
        char dev[KBEVENT_DEVICE_NAME_MAX + 1];

        if (!isempty(meter) && !streq(meter, FLOW_ALL_TAPS)) {
                Device *d;
                if (controller_of(meter, dev, NULL) < 0 || !event_backend_owns_controller(b, dev) ||
                    !(d = get_device(b, dev)))
                        return;
                device_token(d, auth_device, value, added);
                return;
        }
        /* Every event device with at least one tap, one event each. */
        for (size_t i = 0; i < flow_engine_n_taps(engine); i++) {
                FlowTapInfo t;
                Device *d;
                bool seen = false;

                if (flow_engine_tap_at(engine, i, &t) < 0 || controller_of(t.meter_name, dev, NULL) < 0 ||
                    !event_backend_owns_controller(b, dev))
                        continue;
                for (size_t j = 0; j < i && !seen; j++) {
                        FlowTapInfo u;
                        char dev2[KBEVENT_DEVICE_NAME_MAX + 1];
                        seen = flow_engine_tap_at(engine, j, &u) >= 0 && controller_of(u.meter_name, dev2, NULL) >= 0 &&
                               streq(dev, dev2);
                }
                if (!seen && (d = get_device(b, dev)))
                        device_token(d, auth_device, value, added);
        }
}

/* ---------------------------------------------------------------- commands (section 6) */

/* A command_result for 'id' is queued or in flight. */
static bool ack_queued(Device *d, const char *id) {
        for (size_t i = 0; i < d->n_queue; i++) {
                _cleanup_(freep) char *acked = NULL;
                if (d->queue[i].event->type != KBEVENT_COMMAND_RESULT)
                        continue;
                acked = command_ledger_ack_id(d->queue[i].event->data);
                if (streq_ptr(acked, id))
                        return true;
        }
        return false;
}

static void queue_ack(Device *d, const char *id, const char *result, const char *message) {
        _cleanup_(freep) char *data = NULL;
        int r;

        r = kbevent_command_result_data(id, result, message, &data);
        if (r >= 0)
                r = device_add_new(d, KBEVENT_COMMAND_RESULT, data, NULL, NULL);
        if (r < 0)
                log_error_errno(r, "Device %s: cannot queue the result of command %s: %m", d->name, id);
}

static void command_deny(Device *d, const json_t *data, const char **ret_result, char **ret_message) {
        const char *dev = json_string_value(json_object_get(data, "auth_device"));
        const char *tok = json_string_value(json_object_get(data, "token"));
        const char *reason = json_string_value(json_object_get(data, "reason"));
        _cleanup_(freep) char *e1 = escape_for_log(dev ?: ""), *e2 = escape_for_log(tok ?: ""),
                              *e3 = escape_for_log(reason ?: "");

        Presentment *p = dev && tok ? presentment_find(d, dev, tok) : NULL;

        if (p)
                p->decided = true;
        log_info("Device %s: server denied %s/%s: %s", d->name, strempty(e1), strempty(e2), strempty(e3));
        /* The signal carries checked text only: the receiver's strings are UTF-8 (jansson). */
        if (d->backend->signals && d->backend->signals->token_denied)
                d->backend->signals->token_denied(d->name, dev ?: "", tok ?: "", reason ?: "",
                                                  d->backend->signals_userdata);
        *ret_result = "ok";
}

static void device_command(Device *d, const KbCommand *c) {
        _cleanup_(freep) char *message = NULL, *eid = NULL, *etype = NULL;
        const char *result = "unsupported";
        const CommandLedgerItem *known = command_ledger_find(d->ledger, c->id);
        int r;

        /* Applied before: acknowledged again unless an ack is on its way (the queue is read only then). */
        switch (command_ledger_decide(d->ledger, c->id, known && ack_queued(d, c->id), NULL)) {
        case COMMAND_LEDGER_REACK:
                queue_ack(d, c->id, known->result, known->message);
                return;
        case COMMAND_LEDGER_SKIP:
                return;
        case COMMAND_LEDGER_APPLY:
                break;
        }
        if (c->type && streq(c->type, "authorize"))
                command_authorize(d, c, &result, &message);
        else if (c->type && streq(c->type, "deauthorize"))
                command_deauthorize(d, c, &result, &message);
        else if (c->type && streq(c->type, "deny")) {
                if (c->data && !json_is_object(c->data)) {
                        result = "error";
                        message = strdup("bad data");
                } else
                        command_deny(d, c->data, &result, &message);
        } else
                message = strdup_printf("unsupported command type %s", c->type ?: "(none)");

        eid = escape_for_log(c->id);
        etype = escape_for_log(c->type ?: "(none)");
        if (message) {
                _cleanup_(freep) char *em = escape_for_log(message);
                log_info("Device %s: command %s (%s) -> %s: %s", d->name, strempty(eid), strempty(etype), result, strempty(em));
        } else
                log_info("Device %s: command %s (%s) -> %s", d->name, strempty(eid), strempty(etype), result);
        r = command_ledger_add(d->ledger, c->id, result, message);
        if (r < 0)
                log_error_errno(r, "Device %s: cannot record command %s in the ledger: %m", d->name, strempty(eid));
        queue_ack(d, c->id, result, message);
}


static void on_response(HttpClient *c, const HttpResponse *resp, void *userdata) {
        Device *d = userdata;
        EventBackend *b = d->backend;
        size_t n = d->req_n;
        uint64_t ms = (now_mono(b) - d->req_start) / USEC_PER_MSEC;
        KbOutcome o = resp->status == 0 ? KBEVENT_TRANSIENT : kbevent_classify(resp->status, resp->body, resp->size);
        KbCommandList cmds = {};

        d->req = NULL;
        d->req_n = 0;
        if (n > 0)
                log_debug("Device %s: sent %zu events (ids %" PRIu64 "..%" PRIu64 ") -> %ld in %" PRIu64 " ms", d->name,
                          n, d->queue[0].event->id, d->queue[n - 1].event->id, resp->status, ms);
        else
                log_debug("Device %s: sent pour updates -> %ld in %" PRIu64 " ms", d->name, resp->status, ms);
        if (b->config.debug_events && resp->size > 0) {
                _cleanup_(freep) char *esc = escape_for_log_n(resp->body, MIN(resp->size, (size_t) 4096));
                log_debug("Device %s: answer %s", d->name, strempty(esc));
        }

        if (o == KBEVENT_ACCEPTED && kbevent_parse_commands(resp->body, resp->size, &cmds) < 0) {
                log_warning("Device %s: 2xx answer is not a JSON object; retrying", d->name);
                o = KBEVENT_TRANSIENT;
        }
        switch (o) {
        case KBEVENT_ACCEPTED:
                if (d->failures > 0)
                        log_info("Device %s: delivering again after %u failed attempts", d->name, d->failures);
                device_remove_head(d, n, true);
                d->failures = 0;
                d->max_events = KBEVENT_BATCH_MAX_EVENTS;
                d->last_delivery = now_realtime(b);
                d->next_attempt = 0;
                device_set_state(d, EVENT_DEVICE_ONLINE);
                if (cmds.not_array)
                        log_warning("Device %s: \"commands\" in the answer is not an array; ignored", d->name);
                if (cmds.n_skipped > 0)
                        log_warning("Device %s: %u commands without a valid id skipped", d->name, cmds.n_skipped);
                for (size_t i = 0; i < cmds.n; i++)
                        device_command(d, &cmds.commands[i]);
                kbevent_command_list_done(&cmds);
                notify_changed(b);
                device_schedule(d);
                return;
        case KBEVENT_PAIRING:
                device_pairing(d, resp->body, resp->size);
                return;
        case KBEVENT_TOO_LARGE:
                if (n > 1) {
                        d->max_events = (unsigned) MAX((size_t) 1, n / 2);
                        log_warning("Device %s: batch of %zu events too large (413); retrying with at most %u", d->name,
                                    n, d->max_events);
                        device_retry_in(d, 0);
                } else {
                        device_quarantine_head(d, resp->status, "413", 3);
                        device_retry_in(d, 0);
                }
                return;
        case KBEVENT_REJECTED:
                if (n > 1) {
                        d->max_events = (unsigned) (n / 2);
                        log_warning("Device %s: batch of %zu events rejected (%ld); retrying with at most %u", d->name,
                                    n, resp->status, d->max_events);
                } else
                        device_quarantine_head(d, resp->status, resp->body, resp->size);
                device_retry_in(d, 0);
                return;
        case KBEVENT_ENDPOINT_ERROR: {
                char s[32];
                snprintf(s, sizeof s, "%ld", resp->status);
                device_transient(d, s, true);
                return;
        }
        case KBEVENT_TRANSIENT: {
                _cleanup_(freep) char *why = resp->status == 0 ? escape_for_log(resp->error ?: "no answer") :
                                                                 strdup_printf("HTTP %ld", resp->status);
                device_transient(d, strempty(why), false);
                return;
        }
        }
}

/* ---------------------------------------------------------------- drinks */

static int unmapped_pour(EventBackend *b, const Drink *drink) {
        _cleanup_(freep) char *data = NULL, *name = NULL, *dj = NULL;
        _cleanup_(kbevent_freep) KbEvent *e = NULL;
        JsonWriter w = JSON_WRITER_INIT;
        KbEventClock created;
        int r;

        clock_now(b, &created);
        r = json_writer_object_begin(&w);
        json_writer_field_string(&w, "meter_name", drink->meter_name);
        json_writer_field_string(&w, "pour_id", drink->uuid);
        json_writer_field_uint(&w, "ticks", drink->ticks);
        json_writer_field_double(&w, "volume_ml", drink->volume_known ? drink->volume_ml : 0);
        json_writer_object_end(&w);
        r = json_writer_finish(&w, &data, NULL);
        if (r >= 0)
                r = kbevent_new(&e, KBEVENT_POUR, &created, data);
        if (r >= 0) {
                json_writer_object_begin(&w);
                drink_write_pour_json(drink, &w);
                json_writer_object_end(&w);
                r = json_writer_finish(&w, &e->drink, NULL);
        }
        if (r >= 0) {
                _cleanup_(freep) char *reason = strdup_printf("unmappable meter %s", drink->meter_name);
                r = reason ? kbevent_failure_format(now_realtime(b), 0, reason, &e->failure) : -ENOMEM;
        }
        name = strdup_printf("%s-pour.json", drink->uuid);
        if (r >= 0 && !name)
                r = -ENOMEM;
        if (r >= 0)
                r = write_event_file(b->unmapped_fd, e, NULL, name);
        if (r < 0)
                return log_error_errno(r, "Drink %s on unmappable meter %s cannot be written: %m", drink->uuid, drink->meter_name);
        b->n_unmapped++;
        log_named(LOG_ERR, "DrinkManager", "Drink %s on unmappable meter %s kept in event/_unmapped/failed/",
                  drink->uuid, drink->meter_name);
        notify_changed(b);
        return DRINK_SINK_QUEUED;
}

static int event_record(EventBackend *b, Drink *drink) {
        _cleanup_(freep) char *data = NULL, *series = NULL;
        _cleanup_(drink_freep) Drink *copy = NULL;
        _cleanup_(kbevent_freep) KbEvent *e = NULL;
        char dev[KBEVENT_DEVICE_NAME_MAX + 1];
        JsonWriter w = JSON_WRITER_INIT;
        FlowTapInfo tap;
        KbEventClock created;
        unsigned meter;
        Device *d;
        int r;

        if (kbevent_parse_port(drink->meter_name, "flow", dev, &meter) < 0 || !(d = get_device(b, dev)))
                return unmapped_pour(b, drink);
        if (flow_engine_get_tap(manager_get_engine(b->manager), drink->meter_name, &tap) < 0 || !drink->volume_known)
                return unmapped_pour(b, drink);

        KbPour p = {
                .meter_number = meter,
                .pour_id = drink->uuid,
                .volume_ml = drink->volume_ml,
                .duration_ms = drink->duration_ms,
                .ticks = drink->ticks,
                .ml_per_tick = tap.ml_per_tick,
                .tick_series = drink->tick_series,
        };
        /* Attribution is decided when the flow ends: the grant covering the meter then (6.8). */
        Grant *g = grant_table_covering(d->grants, meter);
        if (g) {
                p.grant_id = g->id;
                if (g->auth_device && g->token && *g->auth_device && *g->token) {
                        p.auth_device = g->auth_device;
                        p.auth_token = g->token;
                }
        }
        r = kbevent_pour_data(&p, &data);
        if (r < 0)
                return log_error_errno(r, "Drink %s cannot be made a pour event: %m", drink->uuid);

        /* Created at the last counted tick (section 2.4). */
        clock_now(b, &created);
        if (drink->pour_boottime > 0 && !sd_id128_is_null(drink->boot_id)) {
                uint64_t now_rt = now_realtime(b);
                created.kernel_boot_id = drink->boot_id;
                created.boottime_ns = drink->pour_boottime * NSEC_PER_USEC;
                created.unix_ms = drink->pour_realtime / USEC_PER_MSEC;
                if (now_rt < drink->pour_realtime)
                        created.unix_ms = now_rt / USEC_PER_MSEC;
        }
        r = kbevent_new(&e, KBEVENT_POUR, &created, data);
        if (r < 0)
                return r;
        json_writer_object_begin(&w);
        drink_write_pour_json(drink, &w);
        drink_write_flags_json(drink, &w);
        json_writer_object_end(&w);
        r = json_writer_finish(&w, &e->drink, NULL);
        if (r < 0)
                return r;
        r = drink_dup(drink, &copy);
        if (r < 0)
                return r;
        r = device_add(d, e, copy);
        if (r < 0)
                return r;
        TAKE_PTR(e);
        TAKE_PTR(copy);
        log_named(LOG_INFO, "DrinkManager", "Drink %s queued for device %s: meter=%s ticks=%" PRIu64 " (%zu events queued)",
                  drink->uuid, d->name, drink->meter_name, drink->ticks, d->n_queue);
        device_activate(d);
        d->next_attempt = 0;
        device_schedule(d);
        notify_changed(b);
        return DRINK_SINK_QUEUED;
}

static int route_record(DrinkSink *sink, Drink *drink) {
        RouteSink *s = (RouteSink *) sink;
        char ctl[KBEVENT_DEVICE_NAME_MAX + 1];

        if (!s->backend)
                return -ESHUTDOWN;
        if (controller_of(drink->meter_name, ctl, NULL) >= 0 && event_backend_owns_controller(s->backend, ctl))
                return event_record(s->backend, drink);
        if (s->legacy)
                return drink_sink_record(s->legacy, drink);
        return unmapped_pour(s->backend, drink);
}

static size_t route_n_pending(DrinkSink *sink) {
        RouteSink *s = (RouteSink *) sink;
        return (s->legacy ? drink_sink_n_pending(s->legacy) : 0) + event_backend_n_pending_pours(s->backend);
}

static int route_contains(DrinkSink *sink, const char *uuid) {
        RouteSink *s = (RouteSink *) sink;
        char want[UUID_STRING_MAX];

        if (s->legacy) {
                int k = drink_sink_contains(s->legacy, uuid);
                if (k != 0)
                        return k;
        }
        if (!s->backend || uuid_normalize(uuid, want) < 0)
                return 0;
        for (size_t i = 0; i < s->backend->n_devices; i++) {
                Device *d = s->backend->devices[i];
                for (size_t j = 0; j < d->n_queue; j++)
                        if (d->queue[j].drink && streq(d->queue[j].drink->uuid, want))
                                return 1;
                for (size_t j = 0; j < d->n_waiting; j++)
                        if (d->waiting[j].drink && streq(d->waiting[j].drink->uuid, want))
                                return 1;
        }
        return 0;
}

static int route_reopen(DrinkSink *sink) {
        RouteSink *s = (RouteSink *) sink;
        int r = 0;

        if (s->legacy)
                r = drink_sink_reopen(s->legacy);
        event_backend_kick_all(s->backend);
        return r;
}

static void route_free(DrinkSink *sink) {
        RouteSink *s = (RouteSink *) sink;
        if (s->backend)
                s->backend->sink = NULL;
        drink_sink_free(s->legacy);
        free(s);
}

static const DrinkSinkVTable route_sink_vtable = {
        .name = "route",
        .record = route_record,
        .n_pending = route_n_pending,
        .contains = route_contains,
        .reopen = route_reopen,
        .free = route_free,
};

static void on_legacy_accepted(DrinkSink *legacy, const Drink *d, void *userdata) {
        RouteSink *s = userdata;
        drink_sink_notify_accepted(&s->sink, d);
}

/* ---------------------------------------------------------------- observers */

static void device_activate_for(EventBackend *b, const char *name) {
        char ctl[KBEVENT_DEVICE_NAME_MAX + 1];
        Device *d;

        if (controller_of(name, ctl, NULL) < 0 && (strlen(name) > KBEVENT_DEVICE_NAME_MAX || !strcpy(ctl, name)))
                return;
        if (!event_backend_owns_controller(b, ctl) || !kbevent_device_name_is_valid(ctl))
                return;
        d = get_device(b, ctl);
        if (d)
                device_activate(d);
}

static void on_tap_changed(Manager *m, const char *meter, TapChange change, void *userdata) {
        EventBackend *b = userdata;
        if (change != TAP_REMOVED)
                device_activate_for(b, meter);
}

static void on_controller_changed(Manager *m, const Controller *c, void *userdata) {
        EventBackend *b = userdata;
        if (kbevent_device_name_is_valid(c->name))
                device_activate_for(b, c->name);
}

static bool warn_once(EventBackend *b, const char *name) {
        for (size_t i = 0; i < b->n_warned; i++)
                if (streq(b->warned[i], name))
                        return false;
        (void) strv_extend(&b->warned, &b->n_warned, name);
        return true;
}

static void on_thermo_reading(Manager *m, const ThermoSensor *s, bool record, void *userdata) {
        EventBackend *b = userdata;
        _cleanup_(freep) char *data = NULL;
        char ctl[KBEVENT_DEVICE_NAME_MAX + 1];
        const char *rest;
        Device *d;
        int r;

        if (!record || controller_of(s->name, ctl, &rest) < 0 || !event_backend_owns_controller(b, ctl))
                return;
        d = kbevent_device_name_is_valid(ctl) ? get_device(b, ctl) : NULL;
        if (!d || kbevent_temperature_data(rest, s->value, &data) < 0) {
                if (warn_once(b, s->name))
                        log_warning("Temperature sensor %s cannot be reported through the event protocol; its readings "
                                    "are dropped", s->name);
                return;
        }
        if (device_n_durable(d) >= b->config.spool_max) {
                d->st.events_dropped++;
                if (!d->temperature_refusing)
                        log_warning("Device %s: spool holds %zu events; dropping temperature readings", d->name,
                                    device_n_durable(d));
                d->temperature_refusing = true;
                return;
        }
        d->temperature_refusing = false;
        r = device_add_new(d, KBEVENT_TEMPERATURE, data, NULL, NULL);
        if (r < 0)
                log_error_errno(r, "Device %s: temperature of %s not queued: %m", d->name, s->name);
}

static void on_stopping(Manager *m, void *userdata) {
        EventBackend *b = userdata;

        b->stopping = true;
        for (size_t i = 0; i < b->n_devices; i++) {
                Device *d = b->devices[i];
                /* Grants are discarded without grant_end, as when a Kegboard reboots; valves close. */
                grant_table_clear(d->grants);
                event_timer_disarm(d->grant_timer);
                event_timer_disarm(d->relay_timer);
                (void) device_save(d);
                /* A last try; what is still held in memory is not durable and ends with the process. */
                if (device_degraded(d))
                        device_flush(d);
                if (device_degraded(d))
                        log_error("Device %s: %zu events could not be written to the spool and are lost at shutdown",
                                  d->name, d->n_unwritten + d->n_waiting);
        }
}

static const ManagerObserver event_observer = {
        .flow_updated = on_flow_updated,
        .token_presented = on_token_presented,
        .tap_changed = on_tap_changed,
        .controller_changed = on_controller_changed,
        .thermo_reading = on_thermo_reading,
        .stopping = on_stopping,
};

/* ---------------------------------------------------------------- public */

static int open_existing_devices(EventBackend *b) {
        _cleanup_(closedirp) DIR *dir = NULL;
        struct dirent *de;

        dir = dir_open_fd(b->event_fd);
        if (!dir)
                return -errno;
        while ((de = readdir(dir))) {
                Device *d;
                if (de->d_name[0] == '.' || streq(de->d_name, UNMAPPED) || de->d_type != DT_DIR)
                        continue;
                if (!kbevent_device_name_is_valid(de->d_name)) {
                        log_warning("Ignoring %s/event/%s: not a device name", b->state_dir, de->d_name);
                        continue;
                }
                if (find_device(b, de->d_name))
                        continue;
                if (device_open(b, de->d_name, &d) < 0)
                        return -EIO;
        }
        return 0;
}

/* Drinks of the legacy API stay where they are when a board moves to the event protocol (section
 * 1.5): with no --api_url nobody sends them, and the operator should know. */
static void warn_legacy_spool(EventBackend *b, Manager *m) {
        _cleanup_(closedirp) DIR *dir = NULL;
        _cleanup_(freep) char *path = NULL;
        struct dirent *de;
        size_t n = 0;

        if (manager_get_drink_sink(m))
                return;         /* the legacy backend is there and sends them */
        path = strdup_printf("%s/spool", b->state_dir);
        dir = path ? opendir(path) : NULL;
        if (!dir)
                return;
        while ((de = readdir(dir))) {
                const char *dot = strrchr(de->d_name, '.');
                n += de->d_name[0] != '.' && dot && streq(dot, ".json");
        }
        if (n > 0)
                log_warning("%zu drinks queued for the legacy API but --api_url is empty; they stay in spool/", n);
}

static void count_unmapped(EventBackend *b) {
        _cleanup_(strv_freep) char **names = NULL;
        size_t n = 0;

        if (list_json(b->unmapped_fd, &names, &n) >= 0)
                b->n_unmapped = n;
}

int event_backend_new(EventBackend **ret, Manager *m, const EventBackendConfig *config) {
        _cleanup_(event_backend_freep) EventBackend *b = NULL;
        _cleanup_(freep) char *dir = NULL;
        struct timespec ts;
        RouteSink *sink;
        int r;

        assert_return(ret, -EINVAL);
        assert_return(m, -EINVAL);
        assert_return(config && !isempty(config->event_url), -EINVAL);

        b = calloc(1, sizeof *b);
        if (!b)
                return oom();
        b->manager = m;
        b->event = sd_event_ref(manager_get_event(m));
        b->config = *config;
        b->event_fd = b->unmapped_fd = -1;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        b->start_boottime = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
        b->url = strdup(config->event_url);
        b->state_dir = strdup(config->state_dir);
        if (!b->url || !b->state_dir)
                return oom();
        b->config.event_url = b->url;
        b->config.state_dir = b->state_dir;
        b->timesync_flag = getenv(TIMESYNC_FLAG_ENV);
        if (isempty(b->timesync_flag))
                b->timesync_flag = NULL;

        r = http_client_new(&b->http, b->event);
        if (r < 0)
                return r;

        dir = strdup_printf("%s/event", config->state_dir);
        if (!dir)
                return oom();
        b->event_fd = io_mkdir_p_open(dir, 0750);
        if (b->event_fd < 0)
                return log_error_errno(b->event_fd, "Cannot open %s: %m", dir);
        r = io_mkdir_open_at(b->event_fd, UNMAPPED, 0750);
        if (r >= 0) {
                int fd = r;
                r = io_mkdir_open_at(fd, "failed", 0750);
                safe_close(fd);
        }
        if (r < 0)
                return log_error_errno(r, "Cannot open %s/" UNMAPPED "/failed: %m", dir);
        b->unmapped_fd = r;
        count_unmapped(b);

        r = open_existing_devices(b);
        if (r < 0)
                return log_error_errno(r, "Cannot load the event spools under %s: %m", dir);
        warn_legacy_spool(b, m);

        sink = calloc(1, sizeof *sink);
        if (!sink)
                return oom();
        sink->sink.vtable = &route_sink_vtable;
        sink->backend = b;
        sink->legacy = manager_take_drink_sink(m);
        if (sink->legacy)
                drink_sink_set_accepted_handler(sink->legacy, on_legacy_accepted, sink);
        b->sink = sink;
        manager_set_drink_sink(m, &sink->sink);

        r = manager_add_observer(m, &event_observer, b);
        if (r < 0)
                return oom();
        manager_set_flow_uuid(m, on_flow_uuid, b);

        log_named(LOG_INFO, "main", "Kegboard Event Protocol: event_url=%s", b->url);
        *ret = TAKE_PTR(b);
        return 0;
}

EventBackend *event_backend_free(EventBackend *b) {
        if (!b)
                return NULL;
        manager_remove_observer(b->manager, &event_observer, b);
        manager_set_flow_uuid(b->manager, NULL, NULL);
        if (b->sink)
                b->sink->backend = NULL;
        for (size_t i = 0; i < b->n_devices; i++)
                device_free(b->devices[i]);
        free(b->devices);
        strv_free(b->warned);
        http_client_unref(b->http);
        safe_close(b->unmapped_fd);
        safe_close(b->event_fd);
        sd_event_unref(b->event);
        free(b->url);
        free(b->state_dir);
        free(b);
        return NULL;
}

/* ---------------------------------------------------------------- calibrations */

/* Calibration lives in the core for event controllers (calibration.md section 4.4). */
static bool calibration_owns(void *userdata, const char *meter) {
        EventBackend *b = userdata;
        char ctl[KBEVENT_DEVICE_NAME_MAX + 1];

        return controller_of(meter, ctl, NULL) >= 0 && event_backend_owns_controller(b, ctl);
}

typedef struct CalibrationStore {
        CalibrationStoreDone done;
        void *userdata;
} CalibrationStore;

static void calibration_stored(const CalibrationStored *s, void *userdata) {
        const CalibrationStore *w = userdata;
        _cleanup_(freep) char *message = NULL;
        CalibrationStored copy = *s;

        if (s->storage == CALIBRATION_STORAGE_TAPS_FILE) {
                message = strdup_printf("Saved to %s; Kegbot Server takes it from the device's next status event.",
                                        s->location);
                copy.message = message;
        }
        w->done(&copy, w->userdata);
}

static void calibration_store(void *userdata, const CalibrationRequest *req, CalibrationStoreDone done,
                              void *done_userdata, void **ret_handle) {
        EventBackend *b = userdata;
        char ctl[KBEVENT_DEVICE_NAME_MAX + 1];
        Device *d;

        /* The taps file as in standalone mode; 'done' applies the value to the tap before it returns. */
        calibrations_store_taps_file(b->calibrations, req, calibration_stored,
                                     &(CalibrationStore) { .done = done, .userdata = done_userdata });
        *ret_handle = NULL;
        /* The server learns it from the meters of a status now, not at the next heartbeat. */
        if (controller_of(req->meter, ctl, NULL) < 0 || !(d = find_device(b, ctl)) || !d->active || !b->started)
                return;
        log_debug("Device %s: status for the calibration of %s", d->name, req->meter);
        device_queue_status(d);
}

static void calibration_cancel(void *userdata, void *handle) {
        /* Nothing to abandon: a store is done before calibration_store() returns. */
}

static const CalibrationBackend event_calibration = {
        .owns = calibration_owns,
        .taps_from_server = false,
        .relays_from_grants = true,
        .store = calibration_store,
        .cancel = calibration_cancel,
};

int event_backend_add_calibrations(EventBackend *b, Calibrations *c) {
        assert_return(b && c, -EINVAL);
        b->calibrations = c;
        return calibrations_add_backend(c, &event_calibration, b);
}

int event_backend_start(EventBackend *b) {
        FlowEngine *engine;

        assert_return(b, -EINVAL);
        b->started = true;
        engine = manager_get_engine(b->manager);
        /* Devices with a tap, a controller or a spool are active from the start. */
        for (size_t i = 0; i < flow_engine_n_taps(engine); i++) {
                FlowTapInfo t;
                if (flow_engine_tap_at(engine, i, &t) >= 0)
                        device_activate_for(b, t.meter_name);
        }
        for (size_t i = 0; i < manager_n_controllers(b->manager); i++)
                device_activate_for(b, manager_controller_at(b->manager, i)->name);
        for (size_t i = 0; i < b->n_devices; i++) {
                Device *d = b->devices[i];
                if (d->active || d->n_queue > 0)
                        device_activate(d);
                device_schedule(d);
        }
        return 0;
}

void event_backend_set_signals(EventBackend *b, const EventBackendSignals *signals, void *userdata) {
        assert_return(b, );
        b->signals = signals;
        b->signals_userdata = userdata;
}

void event_backend_set_changed_handler(EventBackend *b, void (*handler)(void *userdata), void *userdata) {
        assert_return(b, );
        b->changed = handler;
        b->changed_userdata = userdata;
}

const char *event_backend_get_url(EventBackend *b) {
        return b ? b->url : "";
}

int event_backend_worst_state(EventBackend *b) {
        int worst = 0;

        for (size_t i = 0; b && i < b->n_devices; i++) {
                EventDeviceState s = b->devices[i]->state;
                int v = s == EVENT_DEVICE_PAIRING || s == EVENT_DEVICE_DENIED ? 2 : s == EVENT_DEVICE_OFFLINE ? 1 : 0;
                worst = MAX(worst, v);
        }
        return worst;
}

size_t event_backend_n_pending_pours(EventBackend *b) {
        size_t n = 0;
        for (size_t i = 0; b && i < b->n_devices; i++) {
                Device *d = b->devices[i];
                for (size_t j = 0; j < d->n_queue; j++)
                        if (d->queue[j].event->type == KBEVENT_POUR)
                                n++;
                for (size_t j = 0; j < d->n_waiting; j++)
                        if (d->waiting[j].event->type == KBEVENT_POUR)
                                n++;
        }
        return n;
}

const char *event_backend_meter_grant(EventBackend *b, const char *meter) {
        char dev[KBEVENT_DEVICE_NAME_MAX + 1];
        unsigned n;
        Device *d;
        Grant *g;

        if (!b || !meter || kbevent_parse_port(meter, "flow", dev, &n) < 0 || !(d = find_device(b, dev)))
                return NULL;
        g = grant_table_covering(d->grants, n);
        return g ? g->id : NULL;
}

size_t event_backend_n_held_events(EventBackend *b) {
        size_t n = 0;
        for (size_t i = 0; b && i < b->n_devices; i++)
                n += b->devices[i]->n_unwritten + b->devices[i]->n_waiting;
        return n;
}

size_t event_backend_n_failed_pours(EventBackend *b) {
        size_t n = b ? b->n_unmapped : 0;
        for (size_t i = 0; b && i < b->n_devices; i++)
                n += b->devices[i]->n_failed_pours;
        return n;
}

size_t event_backend_n_devices(EventBackend *b) {
        return b ? b->n_devices : 0;
}

const char *event_backend_device_name_at(EventBackend *b, size_t i) {
        return b && i < b->n_devices ? b->devices[i]->name : NULL;
}

int event_backend_device_info(EventBackend *b, const char *controller, EventDeviceInfo *ret) {
        Device *d;

        assert_return(b, -EINVAL);
        assert_return(controller, -EINVAL);
        assert_return(ret, -EINVAL);
        d = find_device(b, controller);
        if (!d)
                return -ENOENT;
        *ret = (EventDeviceInfo) {
                .state = d->state,
                .paired = !!d->token,
                .boot_id = d->st.boot_id,
                .pending_events = d->n_queue,
                .failed_events = d->n_failed,
                .last_delivery = d->last_delivery,
                .active_grants = grant_table_size(d->grants),
        };
        return 0;
}

static void device_kick(Device *d) {
        if (d->state == EVENT_DEVICE_DENIED)
                device_set_state(d, EVENT_DEVICE_PAIRING);
        d->next_attempt = 0;
        device_schedule(d);
}

int event_backend_reset_pairing(EventBackend *b, const char *controller) {
        Device *d;

        assert_return(b, -EINVAL);
        d = find_device(b, controller);
        if (!d)
                return -ENOENT;
        log_info("Device %s: pairing reset; its token is deleted", d->name);
        device_drop_token(d);
        device_kick(d);
        notify_changed(b);
        return 0;
}

void event_backend_kick_all(EventBackend *b) {
        for (size_t i = 0; b && i < b->n_devices; i++)
                device_kick(b->devices[i]);
}

/* An event of a failed/ directory, and for a pour its drink (NULL otherwise). */
static int read_failed_event(int dir_fd, const char *name, KbEvent **ret_e, Drink **ret_drink) {
        _cleanup_(freep) char *text = NULL;
        size_t len;
        int r;

        *ret_drink = NULL;
        r = io_read_file_at(dir_fd, name, FILE_MAX, &text, &len);
        if (r < 0)
                return r;
        r = kbevent_file_parse(text, len, true, ret_e, NULL);
        if (r < 0)
                return r;
        return (*ret_e)->type == KBEVENT_POUR ? drink_from_event(*ret_e, ret_drink) : 0;
}

static int device_retry_failed(Device *d, bool pours_only, unsigned *ret_n) {
        EventBackend *b = d->backend;
        _cleanup_(strv_freep) char **names = NULL;
        size_t n_names = 0;
        unsigned n = 0;
        int r;

        r = list_json(d->failed_fd, &names, &n_names);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_names; i++) {
                _cleanup_(kbevent_freep) KbEvent *e = NULL;
                _cleanup_(drink_freep) Drink *drink = NULL;

                if (pours_only && !strstr(names[i], "-pour.json"))
                        continue;
                r = read_failed_event(d->failed_fd, names[i], &e, &drink);
                if (r < 0) {
                        log_warning_errno(r, "Device %s: failed/%s cannot be re-queued: %m", d->name, names[i]);
                        continue;
                }
                /* A new id at the tail; created and data (the pour_id) unchanged. */
                free(e->failure);
                e->failure = NULL;
                r = device_add(d, e, drink);
                if (r < 0)
                        return r;
                TAKE_PTR(e);
                TAKE_PTR(drink);
                if (unlinkat(d->failed_fd, names[i], 0) < 0)
                        log_error_errno(errno, "Device %s: cannot remove failed/%s: %m", d->name, names[i]);
                n++;
        }
        (void) fsync_dir(d->failed_fd);
        count_failed(d);
        if (n > 0) {
                d->next_attempt = 0;
                device_schedule(d);
        }
        notify_changed(b);
        if (ret_n)
                *ret_n = n;
        return 0;
}

int event_backend_retry_failed_events(EventBackend *b, const char *controller, unsigned *ret_n) {
        Device *d;

        assert_return(b, -EINVAL);
        d = find_device(b, controller);
        if (!d)
                return -ENOENT;
        return device_retry_failed(d, false, ret_n);
}

int event_backend_retry_failed_pours(EventBackend *b, unsigned *ret_n) {
        unsigned total = 0;
        int r;

        assert_return(b, -EINVAL);
        for (size_t i = 0; i < b->n_devices; i++) {
                unsigned k = 0;
                r = device_retry_failed(b->devices[i], true, &k);
                if (r < 0)
                        return r;
                total += k;
        }
        if (ret_n)
                *ret_n = total;
        return 0;
}

/* FailDrink() of a queued pour: to failed/ with http_status 0, out of the queue (an id gap the
 * receiver sees, as for a quarantined event; events_dropped counts it). */
static int device_fail_entry(Device *d, size_t j) {
        Entry en = d->queue[j];
        KbEvent *e = en.event;
        char name[64];
        int r;

        if (d->req && j < d->req_n) {
                /* The receiver may still record it (once: the pour_id); the operator asked for it anyway. */
                http_request_cancel(d->req);
                d->req = NULL;
                d->req_n = 0;
        }
        r = device_write_failed(d, e, 0, "moved to failed/ by an operator");
        if (r < 0) {
                device_schedule(d);
                return r;
        }
        if (en.unwritten)
                d->n_unwritten--;
        else {
                event_file_name(e, name);
                if (unlinkat(d->spool_fd, name, 0) < 0 && errno != ENOENT)
                        log_error_errno(errno, "Device %s: cannot remove %s: %m", d->name, name);
                (void) fsync_dir(d->spool_fd);
        }
        log_named(LOG_WARNING, "DrinkManager", "Drink %s (event %" PRIu64 " of device %s) moved to failed/ by an operator",
                  en.drink->uuid, e->id, d->name);
        memmove(d->queue + j, d->queue + j + 1, (d->n_queue - j - 1) * sizeof *d->queue);
        d->n_queue--;
        entry_done(&en);
        d->st.events_dropped++;
        (void) device_write_state(d);
        device_schedule(d);
        notify_changed(d->backend);
        return 0;
}

int event_backend_fail_pour(EventBackend *b, const char *uuid) {
        char want[UUID_STRING_MAX];

        assert_return(b, -EINVAL);
        assert_return(uuid, -EINVAL);
        if (uuid_normalize(uuid, want) < 0)
                return -EINVAL;
        for (size_t i = 0; i < b->n_devices; i++) {
                Device *d = b->devices[i];
                for (size_t j = 0; j < d->n_queue; j++)
                        if (d->queue[j].drink && streq(d->queue[j].drink->uuid, want))
                                return device_fail_entry(d, j);
        }
        return -ENOENT;
}

/* A quarantined event's "failure" member as the drink's failure (kbevent_failure_format()). */
static int drink_failure_from_event(Drink *drink, const KbEvent *e) {
        _cleanup_(json_decrefp) json_t *f = NULL;
        DrinkFailure failure = {};
        const char *s;

        if (!e->failure)
                return 0;
        f = json_loads(e->failure, 0, NULL);
        if (!f)
                return -EBADMSG;
        s = json_string_value(json_object_get(f, "time"));
        if (s)
                (void) time_parse_rfc3339(s, &failure.time_realtime);
        failure.http_status = (int) json_integer_value(json_object_get(f, "http_status"));
        failure.message = (char *) json_string_value(json_object_get(f, "reason"));
        return drink_set_failure(drink, &failure);
}

/* Every pour of failed/ in dir_fd through cb (in name order, which is id order). */
static int list_failed_pours(int dir_fd, const char *dev, const char *controller, EventPourListFunc cb, void *userdata) {
        _cleanup_(strv_freep) char **names = NULL;
        size_t n_names = 0;
        int r;

        r = list_json(dir_fd, &names, &n_names);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_names; i++) {
                _cleanup_(kbevent_freep) KbEvent *e = NULL;
                _cleanup_(drink_freep) Drink *drink = NULL;
                char ctl[KBEVENT_DEVICE_NAME_MAX + 1] = "";

                if (!strstr(names[i], "-pour.json"))
                        continue;
                r = read_failed_event(dir_fd, names[i], &e, &drink);
                if (r >= 0 && drink)
                        r = drink_failure_from_event(drink, e);
                if (r < 0 || !drink) {
                        log_warning_errno(r < 0 ? r : -EBADMSG, "%s: failed/%s cannot be listed: %m", dev, names[i]);
                        continue;
                }
                if (!controller)
                        (void) controller_of(drink->meter_name, ctl, NULL);
                r = cb(drink, controller ?: ctl, e->id, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int event_backend_list_pours(EventBackend *b, bool failed, EventPourListFunc cb, void *userdata) {
        int r;

        assert_return(b, -EINVAL);
        assert_return(cb, -EINVAL);
        for (size_t i = 0; i < b->n_devices; i++) {
                Device *d = b->devices[i];

                if (failed) {
                        _cleanup_(freep) char *dev = strdup_printf("Device %s", d->name);
                        r = list_failed_pours(d->failed_fd, dev ?: d->name, d->name, cb, userdata);
                        if (r < 0)
                                return r;
                        continue;
                }
                for (size_t j = 0; j < d->n_queue; j++)
                        if (d->queue[j].drink) {
                                r = cb(d->queue[j].drink, d->name, d->queue[j].event->id, userdata);
                                if (r < 0)
                                        return r;
                        }
                /* Waiting for an id (section 9.1): 0 until they get one. */
                for (size_t j = 0; j < d->n_waiting; j++)
                        if (d->waiting[j].drink) {
                                r = cb(d->waiting[j].drink, d->name, 0, userdata);
                                if (r < 0)
                                        return r;
                        }
        }
        /* Unmapped pours have no device; their controller is the meter name's, if it has one. */
        return failed ? list_failed_pours(b->unmapped_fd, "Unmapped pours", NULL, cb, userdata) : 0;
}

void event_backend_status_text(EventBackend *b, char *buf, size_t size) {
        size_t used = 0;

        if (size > 0)
                buf[0] = '\0';
        for (size_t i = 0; b && i < b->n_devices && used < size; i++) {
                Device *d = b->devices[i];
                const char *what = d->state == EVENT_DEVICE_PAIRING ? "pairing pending (approve it on the server)" :
                                   d->state == EVENT_DEVICE_DENIED ? "denied" :
                                   d->state == EVENT_DEVICE_OFFLINE ? "offline" : NULL;
                if (!what)
                        continue;
                int k = snprintf(buf + used, size - used, "; %s: %s", d->name, what);
                if (k < 0)
                        break;
                used += (size_t) k;
        }
}
