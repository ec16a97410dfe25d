/* Standalone storage: see standalone.h. The drinks log is append-only; a line is complete and
 * fsync'ed before the flow is reported completed, so at start-up only a last line without its
 * newline can be partial, and it was never reported to anyone: cutting it off is safe. */
#include <inttypes.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <sys/stat.h>

#define LOG_COMPONENT "DrinkManager"
#include "log.h"

#include "flow.h"
#include "ini.h"
#include "json-writer.h"
#include "standalone.h"
#include "util-io.h"

#define SCAN_CHUNK 4096
/* A line holds a meter name of up to a kegnet frame (64 KiB), up to 6 bytes per character once
 * escaped, plus a username: a valid line may be far longer than a frame. A valid line misread as
 * invalid would hand out its drink_id a second time. */
#define MAX_LINE (16U * 1024U * 1024U)

typedef struct DrinksLog {
        DrinkSink sink;                 /* first: the sink pointer is the log pointer */
        char *path;
        int fd;
        int64_t next_id;

        /* Drinks whose append failed, oldest first; written by the retry timer. */
        Drink **held;
        size_t n_held;
        sd_event *event;
        sd_event_source *retry;
        uint64_t retry_usec;
} DrinksLog;

int drinks_log_format_line(const Drink *d, int64_t drink_id, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        json_writer_object_begin(&w);
        json_writer_field_int(&w, "drink_id", drink_id);
        json_writer_field_string(&w, "uuid", d->uuid);
        json_writer_field_uint(&w, "flow_id", d->flow_id);
        json_writer_field_string(&w, "meter_name", d->meter_name);
        json_writer_field_uint(&w, "ticks", d->ticks);
        if (d->volume_known)
                json_writer_field_double(&w, "volume_ml", d->volume_ml);
        else
                json_writer_field_null(&w, "volume_ml");
        json_writer_field_string(&w, "username", d->username);
        json_writer_field_timestamp(&w, "start_time", d->start_realtime);
        json_writer_field_timestamp(&w, "pour_time", d->pour_realtime);
        json_writer_field_uint(&w, "duration", d->duration_sec);
        json_writer_object_end(&w);
        return json_writer_finish(&w, ret, NULL);
}

/* ---- drinks log start-up scan ---- */

/* Offset of the last '\n' before 'before', or -1. */
static off_t find_prev_newline(int fd, off_t before) {
        char buf[SCAN_CHUNK];

        while (before > 0) {
                off_t start = before > SCAN_CHUNK ? before - SCAN_CHUNK : 0;
                ssize_t n = pread(fd, buf, (size_t) (before - start), start);
                if (n <= 0)
                        return -1;
                for (ssize_t i = n - 1; i >= 0; i--)
                        if (buf[i] == '\n')
                                return start + i;
                before = start;
        }
        return -1;
}

static bool parse_drink_id(int fd, off_t start, off_t end, int64_t *ret) {
        _cleanup_(freep) char *line = NULL;
        json_t *j, *id;
        bool ok = false;
        size_t len;

        if (end <= start || (size_t) (end - start) > MAX_LINE)
                return false;
        len = (size_t) (end - start);
        line = malloc(len);
        if (!line)
                return false;
        if (pread(fd, line, len, start) != (ssize_t) len)
                return false;

        j = json_loadb(line, len, 0, NULL);
        if (!j)
                return false;
        id = json_object_get(j, "drink_id");
        if (json_is_integer(id) && json_integer_value(id) >= 0 && json_integer_value(id) < INT64_MAX) {
                *ret = json_integer_value(id);
                ok = true;
        }
        json_decref(j);
        return ok;
}

static int drinks_log_scan(DrinksLog *l) {
        struct stat st;
        off_t size, end;
        char last;

        if (fstat(l->fd, &st) < 0)
                return log_error_errno(errno, "Cannot stat %s: %m", l->path);
        size = st.st_size;
        l->next_id = 1;
        if (size == 0)
                return 0;

        if (pread(l->fd, &last, 1, size - 1) != 1)
                return log_error_errno(errno ?: EIO, "Cannot read %s: %m", l->path);
        if (last != '\n') {
                off_t nl = find_prev_newline(l->fd, size);
                off_t keep = nl + 1;    /* 0 if the file holds no complete line */

                log_error("%s: cutting off a torn last line (%jd bytes); that drink was never reported completed",
                          l->path, (intmax_t) (size - keep));
                if (ftruncate(l->fd, keep) < 0)
                        return log_error_errno(errno, "Cannot truncate %s: %m", l->path);
                if (fsync(l->fd) < 0)
                        return log_error_errno(errno, "Cannot fsync %s: %m", l->path);
                size = keep;
        }

        /* Walk back line by line to the last one that parses; normally that is the very last. */
        end = size - 1;                 /* the last line's newline */
        while (end > 0) {
                off_t nl = find_prev_newline(l->fd, end);
                int64_t id;

                if (parse_drink_id(l->fd, nl + 1, end, &id)) {
                        l->next_id = id + 1;
                        return 0;
                }
                log_warning("%s: ignoring an invalid line at offset %jd", l->path, (intmax_t) (nl + 1));
                if (nl < 0)
                        break;
                end = nl;
        }
        return 0;
}

static int drinks_log_open(DrinksLog *l) {
        int fd = open(l->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (fd < 0)
                return log_error_errno(errno, "Cannot open %s: %m", l->path);
        safe_close(l->fd);
        l->fd = fd;
        return 0;
}

/* Appends one drink durably (write + fsync) and gives it the next drink_id. */
static int drinks_log_append(DrinksLog *l, Drink *d) {
        _cleanup_(freep) char *line = NULL;
        struct stat st;
        size_t len;
        int r;

        r = drinks_log_format_line(d, l->next_id, &line);
        if (r < 0)
                return log_error_errno(r, "Cannot format drink %s: %m", d->uuid);
        len = strlen(line);
        {
                char *t = realloc(line, len + 3);       /* '\n', NUL, and room for a leading '\n' */
                if (!t)
                        return log_error_errno(-ENOMEM, "Cannot record drink %s: %m", d->uuid);
                line = t;
                line[len++] = '\n';
                line[len] = '\0';
        }

        if (l->fd < 0) {
                r = drinks_log_open(l);
                if (r < 0)
                        return r;
        }
        if (fstat(l->fd, &st) < 0)
                return log_error_errno(errno, "Cannot stat %s: %m", l->path);

        /* A partial line at the end (a failed append whose rollback failed too, or another writer)
         * must not swallow this drink: start it on a line of its own. */
        if (st.st_size > 0) {
                char last = '\n';
                if (pread(l->fd, &last, 1, st.st_size - 1) == 1 && last != '\n') {
                        log_warning("%s does not end with a newline; starting drink %s on a new line", l->path, d->uuid);
                        memmove(line + 1, line, len + 1);
                        line[0] = '\n';
                        len++;
                }
        }

        r = io_write_all(l->fd, line, len);
        if (r >= 0 && fsync(l->fd) < 0)
                r = -errno;
        if (r < 0) {
                /* Leave no partial line behind for the next append. */
                (void) ftruncate(l->fd, st.st_size);
                return log_error_errno(r, "Cannot record drink %s in %s: %m", d->uuid, l->path);
        }

        d->has_drink_id = true;
        d->drink_id = l->next_id++;
        return 0;
}

static int drinks_log_arm_retry(DrinksLog *l);

/* Writes held drinks in order; stops at the first failure. Never called from record(). */
static void drinks_log_flush_held(DrinksLog *l) {
        size_t done = 0;

        while (done < l->n_held) {
                Drink *d = l->held[done];
                if (drinks_log_append(l, d) < 0)
                        break;
                log_info("Drink %s written to %s after an earlier failure", d->uuid, l->path);
                drink_sink_notify_created(&l->sink, d);
                drink_free(d);
                done++;
        }
        memmove(l->held, l->held + done, (l->n_held - done) * sizeof(Drink *));
        l->n_held -= done;
        if (l->n_held > 0)
                (void) drinks_log_arm_retry(l);
}

static int drinks_log_on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        DrinksLog *l = userdata;

        l->retry = sd_event_source_disable_unref(l->retry);
        drinks_log_flush_held(l);
        return 0;
}

static int drinks_log_arm_retry(DrinksLog *l) {
        int r;

        if (l->retry || !l->event)
                return 0;
        r = sd_event_add_time_relative(l->event, &l->retry, CLOCK_MONOTONIC, l->retry_usec, USEC_PER_MSEC,
                                       drinks_log_on_retry, l);
        if (r < 0)
                return log_error_errno(r, "Cannot arm the drinks.log retry timer: %m");
        (void) sd_event_source_set_description(l->retry, "drinks-log-retry");
        return 0;
}

static int drinks_log_hold(DrinksLog *l, const Drink *d) {
        Drink *copy = NULL;
        Drink **n;
        int r;

        r = drink_dup(d, &copy);
        if (r < 0)
                return r;
        n = realloc(l->held, (l->n_held + 1) * sizeof(Drink *));
        if (!n) {
                drink_free(copy);
                return -ENOMEM;
        }
        l->held = n;
        l->held[l->n_held++] = copy;
        log_error("Drink %s (%s, %" PRIu64 " ticks) is held in memory until %s can be written; "
                  "%zu drink(s) waiting, retrying every %" PRIu64 " s",
                  d->uuid, d->meter_name, d->ticks, l->path, l->n_held, l->retry_usec / USEC_PER_SEC);
        return drinks_log_arm_retry(l);
}

static int drinks_log_record(DrinkSink *sink, Drink *d) {
        DrinksLog *l = (DrinksLog *) sink;
        int r;

        /* Behind drinks already waiting, so that drink_ids follow the order of the pours. */
        if (l->n_held == 0 && drinks_log_append(l, d) >= 0)
                return 1;

        r = drinks_log_hold(l, d);
        if (r < 0)
                return log_error_errno(r, "Drink %s is lost: cannot hold it in memory: %m", d->uuid);
        return 0;
}

static size_t drinks_log_n_pending(DrinkSink *sink) {
        return ((DrinksLog *) sink)->n_held;
}

static int drinks_log_reopen(DrinkSink *sink) {
        return drinks_log_open((DrinksLog *) sink);
}

static void drinks_log_free(DrinkSink *sink) {
        DrinksLog *l = (DrinksLog *) sink;

        /* Last chance for held drinks; what still cannot be written goes to the log in full, so
         * that it can be recovered by hand rather than vanish. */
        for (size_t i = 0; i < l->n_held; i++) {
                Drink *d = l->held[i];
                _cleanup_(freep) char *line = NULL;

                if (drinks_log_append(l, d) >= 0)
                        continue;
                if (drinks_log_format_line(d, -1, &line) >= 0)
                        log_critical("Drink %s could not be written to %s; its record: %s", d->uuid, l->path, line);
                else
                        log_critical("Drink %s could not be written to %s", d->uuid, l->path);
        }
        for (size_t i = 0; i < l->n_held; i++)
                drink_free(l->held[i]);
        free(l->held);
        l->retry = sd_event_source_disable_unref(l->retry);
        sd_event_unref(l->event);
        safe_close(l->fd);
        free(l->path);
        free(l);
}

static const DrinkSinkVTable drinks_log_vtable = {
        .name = "drinks-log",
        .record = drinks_log_record,
        .n_pending = drinks_log_n_pending,
        .reopen = drinks_log_reopen,
        .free = drinks_log_free,
};

static int make_state_dir(const char *dir) {
        if (mkdir(dir, 0750) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create state directory %s: %m", dir);
        return 0;
}

int drinks_log_new(DrinkSink **ret, const char *state_dir, sd_event *event, uint64_t retry_usec) {
        DrinksLog *l;
        int r;

        r = make_state_dir(state_dir);
        if (r < 0)
                return r;

        l = calloc(1, sizeof(DrinksLog));
        if (!l)
                return -ENOMEM;
        l->sink.vtable = &drinks_log_vtable;
        l->fd = -1;
        l->event = event ? sd_event_ref(event) : NULL;
        l->retry_usec = MAX(retry_usec, USEC_PER_SEC);
        if (asprintf(&l->path, "%s/drinks.log", state_dir) < 0) {
                free(l);
                return -ENOMEM;
        }

        int rfd = open(l->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (rfd < 0) {
                r = log_error_errno(errno, "Cannot open %s: %m", l->path);
                drinks_log_free(&l->sink);
                return r;
        }
        l->fd = rfd;
        r = drinks_log_scan(l);
        if (r < 0) {
                drinks_log_free(&l->sink);
                return r;
        }
        log_info("Recording drinks in %s (next drink_id %" PRIi64 ")", l->path, l->next_id);
        *ret = &l->sink;
        return 0;
}

int64_t drinks_log_next_id(DrinkSink *s) {
        return ((DrinksLog *) s)->next_id;
}

/* ---- thermo log ---- */

struct ThermoLog {
        char *path;
        int fd;
};

int thermo_log_reopen(ThermoLog *l) {
        int fd = open(l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (fd < 0)
                return log_internal(LOG_ERR, errno, "ThermoManager", "Cannot open %s: %m", l->path);
        safe_close(l->fd);
        l->fd = fd;
        return 0;
}

int thermo_log_new(ThermoLog **ret, const char *state_dir) {
        _cleanup_(thermo_log_freep) ThermoLog *l = NULL;
        int r;

        r = make_state_dir(state_dir);
        if (r < 0)
                return r;
        l = calloc(1, sizeof(ThermoLog));
        if (!l)
                return -ENOMEM;
        l->fd = -1;
        if (asprintf(&l->path, "%s/thermo.log", state_dir) < 0) {
                l->path = NULL;
                return -ENOMEM;
        }
        r = thermo_log_reopen(l);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

ThermoLog *thermo_log_free(ThermoLog *l) {
        if (!l)
                return NULL;
        safe_close(l->fd);
        free(l->path);
        free(l);
        return NULL;
}

int thermo_log_append(ThermoLog *l, const char *sensor, double value_c, uint64_t realtime) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *line = NULL;
        size_t len;
        int r;

        json_writer_object_begin(&w);
        json_writer_field_string(&w, "sensor_name", sensor);
        json_writer_field_double(&w, "temperature_c", value_c);
        json_writer_field_timestamp(&w, "time", realtime);
        json_writer_object_end(&w);
        r = json_writer_finish(&w, &line, &len);
        if (r >= 0) {
                line[len] = '\n';      /* in place of the NUL: io_write_all() takes a length */
                r = l->fd >= 0 ? io_write_all(l->fd, line, len + 1) : -EBADF;
        }
        if (r < 0)
                log_named(LOG_WARNING, "ThermoManager", "Cannot append to %s: %s", l->path, strerror(-r));
        return r;
}

/* ---- tokens file ---- */

typedef struct TokenEntry {
        char *device;
        char *value;            /* normalised */
        char *username;
        bool enabled;
} TokenEntry;

struct TokenDb {
        TokenEntry *entries;
        size_t n;
};

TokenDb *token_db_free(TokenDb *db) {
        if (!db)
                return NULL;
        for (size_t i = 0; i < db->n; i++) {
                free(db->entries[i].device);
                free(db->entries[i].value);
                free(db->entries[i].username);
        }
        free(db->entries);
        free(db);
        return NULL;
}

size_t token_db_size(const TokenDb *db) {
        return db ? db->n : 0;
}

static int token_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int token_error(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r;
}

int token_db_load(const char *path, TokenDb **ret, char **ret_error) {
        _cleanup_(ini_freep) Ini *ini = NULL;
        _cleanup_(token_db_freep) TokenDb *db = NULL;
        int r;

        r = ini_load_file(&ini, path, ret_error);
        if (r < 0)
                return r;

        db = calloc(1, sizeof(TokenDb));
        if (!db)
                return -ENOMEM;
        if (ini->n_sections > 0) {
                db->entries = calloc(ini->n_sections, sizeof(TokenEntry));
                if (!db->entries)
                        return -ENOMEM;
        }

        for (size_t i = 0; i < ini->n_sections; i++) {
                const IniSection *sec = ini->sections[i];
                const char *colon = strchr(sec->name, ':');
                _cleanup_(freep) char *err = NULL;
                TokenEntry *e = &db->entries[db->n];
                bool enabled = true;

                if (!colon || colon == sec->name || colon[1] == '\0')
                        return token_error(ret_error, -EINVAL,
                                           "%s:%u: section [%s] is not <auth_device>:<token_value>",
                                           path, sec->line, sec->name);

                e->device = strndup(sec->name, (size_t) (colon - sec->name));
                if (!e->device)
                        return -ENOMEM;
                db->n++;
                e->value = flow_token_normalize(e->device, colon + 1);
                if (!e->value)
                        return -ENOMEM;

                r = ini_get(ini, sec->name, "username", &e->username, &err);
                if (r == -ENOENT || (r >= 0 && isempty(e->username)))
                        return token_error(ret_error, -EINVAL, "%s:%u: [%s] has no username",
                                           path, sec->line, sec->name);
                if (r < 0)
                        return token_error(ret_error, r, "%s", err ?: "bad username");

                if (ini_get_raw(ini, sec->name, "enabled")) {
                        r = ini_get_boolean(ini, sec->name, "enabled", &enabled, &err);
                        if (r < 0)
                                return token_error(ret_error, r, "%s", err ?: "bad 'enabled' value");
                }
                e->enabled = enabled;

                for (size_t j = 0; j + 1 < db->n; j++)
                        if (streq(db->entries[j].device, e->device) && streq(db->entries[j].value, e->value))
                                return token_error(ret_error, -EINVAL, "%s:%u: token [%s] listed twice",
                                                   path, sec->line, sec->name);
        }

        *ret = TAKE_PTR(db);
        return 0;
}

TokenLookup token_db_lookup(const TokenDb *db, const char *device, const char *value, const char **ret_username) {
        _cleanup_(freep) char *norm = NULL;

        if (!db)
                return TOKEN_NOT_ASSIGNED;
        norm = flow_token_normalize(device, value);
        if (!norm)
                return TOKEN_NOT_ASSIGNED;
        for (size_t i = 0; i < db->n; i++) {
                const TokenEntry *e = &db->entries[i];
                if (!streq(e->device, device) || !streq(e->value, norm))
                        continue;
                if (!e->enabled)
                        return TOKEN_DISABLED;
                if (ret_username)
                        *ret_username = e->username;
                return TOKEN_OK;
        }
        return TOKEN_NOT_ASSIGNED;
}
