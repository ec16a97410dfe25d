/* sound_server: plays a sound when a pour crosses a volume threshold (programs-and-flags.md
 * section 10). Listens to kegnet FlowUpdates; sounds come from <sound_dir>/<T>/ and, optionally,
 * from the server's sound events (downloaded once into --cache_dir). They play through ALSA
 * (alsa-player.c) or, with --player, through an external program. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define LOG_COMPONENT "sound"
#include "log.h"

#include "alsa-player.h"
#include "api.h"
#include "app.h"
#include "daemon.h"
#include "flags.h"
#include "kegnet-client.h"
#include "thresholds.h"
#include "util-event.h"
#include "util-strv.h"

#define FLOW_FORGET_USEC (10 * 60 * USEC_PER_SEC)
#define SOUND_FILE_MAX (64U * 1024U * 1024U)
#define THRESHOLD_EVENT "flow.threshold.ounces"

extern char **environ;

static const char *arg_sound_dir = "/etc/kegbot/sounds";
static const char *arg_cache_dir = "/tmp/sound_server_cache";
static const char *arg_player = "";
static const char *arg_alsa_device = "default";
static bool arg_server_sounds = true;

static const FlagDef sound_flags[] = {
        FLAG_STRING("sound_dir", &arg_sound_dir,
                    "Local sounds: <sound_dir>/<T>/* for each threshold T in ounces."),
        FLAG_STRING("cache_dir", &arg_cache_dir, "Where sounds from the server are stored.",
                    .env = "CACHE_DIRECTORY", .env_mode = FLAG_ENV_FIRST_ENTRY, .env_suffix = "/sounds"),
        FLAG_STRING("alsa_device", &arg_alsa_device,
                    "ALSA PCM the sounds play on (WAV, FLAC, Ogg and the other formats libsndfile reads)."),
        FLAG_STRING("player", &arg_player,
                    "External player command instead of ALSA (e.g. 'aplay -q'), split on spaces; the sound "
                    "file is appended as the last argument. Empty: play through ALSA."),
        FLAG_BOOL("server_sounds", &arg_server_sounds,
                  "Also load sound events from the server when --api_url is set."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "sound_server",
        .description = "Plays a sound whenever a pour crosses a volume threshold (1, 8, 12, 16, 24 and "
                       "32 ounces, and at the start of every pour).",
        .flags = sound_flags,
        .groups = APP_GROUP_KEGNET | APP_GROUP_API,
};

typedef struct FlowState {
        int64_t flow_id;
        double last_oz;
        uint64_t last_update;
        struct FlowState *next;
} FlowState;

typedef struct ServerSound {
        int threshold;
        char *url;
        char *path;             /* the cache file */
        bool ready;             /* downloaded (or found in the cache) */
        struct ServerSound *next;
} ServerSound;

typedef struct Player {
        pid_t pid;
        char *file;
        sd_event_source *child;
        bool stopped;           /* we sent the SIGTERM */
        struct Player *next;
} Player;

typedef struct Manager {
        sd_event *event;
        sd_event_source *prune_timer;
        KegnetClient *kegnet;
        HttpClient *http;               /* NULL without server sounds */
        ApiClient *api;
        AlsaPlayer *alsa;       /* without --player */
        char **player_argv;     /* the split --player, with one free slot for the file */
        size_t player_argc;
        FlowState *flows;
        ServerSound *sounds;
        Player *players;
        Player *current;
        bool player_error_logged;
} Manager;

static int on_player_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

static void player_free(Player *p) {
        if (!p)
                return;
        sd_event_source_disable_unref(p->child);
        free(p->file);
        free(p);
}

static void manager_remove_player(Manager *m, Player *p) {
        for (Player **i = &m->players; *i; i = &(*i)->next)
                if (*i == p) {
                        *i = p->next;
                        break;
                }
        if (m->current == p)
                m->current = NULL;
        player_free(p);
}

static Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        while (m->flows) {
                FlowState *f = m->flows;
                m->flows = f->next;
                free(f);
        }
        while (m->sounds) {
                ServerSound *s = m->sounds;
                m->sounds = s->next;
                free(s->url);
                free(s->path);
                free(s);
        }
        while (m->players) {
                Player *p = m->players;
                m->players = p->next;
                /* A sound still playing at exit is stopped: nothing would reap it otherwise. */
                (void) kill(p->pid, SIGTERM);
                (void) waitpid(p->pid, NULL, 0);
                player_free(p);
        }
        sd_event_source_disable_unref(m->prune_timer);
        alsa_player_free(m->alsa);
        api_client_free(m->api);
        http_client_unref(m->http);
        kegnet_client_free(m->kegnet);
        strv_free(m->player_argv);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

static uint64_t manager_now(Manager *m) {
        uint64_t now = 0;
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        return now;
}

static uint64_t random_u64(void) {
        uint64_t v;

        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t) sizeof(v))
                return v;
        return ((uint64_t) (unsigned) rand() << 32) ^ (uint64_t) (unsigned) rand();
}

/* ---- playback */

static void manager_play_external(Manager *m, const char *file) {
        posix_spawnattr_t attr;
        sigset_t empty, all;
        Player *p;
        pid_t pid;
        int r;

        if (m->current && m->current->pid > 0) {
                log_debug("Stopping the sound still playing (pid %d)", (int) m->current->pid);
                (void) kill(m->current->pid, SIGTERM);
                m->current->stopped = true;
                m->current = NULL;
        }

        m->player_argv[m->player_argc] = (char *) file;
        sigemptyset(&empty);
        sigfillset(&all);
        r = posix_spawnattr_init(&attr);
        if (r == 0) {
                /* The loop blocks the signals it handles; the player must get them back. */
                (void) posix_spawnattr_setsigmask(&attr, &empty);
                (void) posix_spawnattr_setsigdefault(&attr, &all);
                (void) posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
                r = posix_spawnp(&pid, m->player_argv[0], NULL, &attr, m->player_argv, environ);
                (void) posix_spawnattr_destroy(&attr);
        }
        m->player_argv[m->player_argc] = NULL;
        if (r != 0) {
                if (!m->player_error_logged)
                        log_error_errno(r, "Cannot run the player '%s': %m", arg_player);
                else
                        log_debug_errno(r, "Cannot run the player '%s': %m", arg_player);
                m->player_error_logged = true;
                return;
        }

        log_info("Playing %s", file);
        p = calloc(1, sizeof(*p));
        if (p)
                p->file = strdup(file);
        if (!p || !p->file) {
                free(p);
                (void) waitpid(pid, NULL, 0);
                return;
        }
        p->pid = pid;
        r = sd_event_add_child(m->event, &p->child, pid, WEXITED, on_player_exit, m);
        if (r < 0) {
                log_error_errno(r, "Cannot watch the player: %m");
                (void) kill(pid, SIGTERM);
                (void) waitpid(pid, NULL, 0);
                player_free(p);
                return;
        }
        p->next = m->players;
        m->players = p;
        m->current = p;
}

static int on_player_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Manager *m = userdata;

        for (Player *p = m->players; p; p = p->next) {
                if (p->child != s)
                        continue;
                if (si->si_code == CLD_EXITED && si->si_status != 0)
                        log_warning("The player '%s' failed on %s: exit status %d", arg_player, p->file,
                                    si->si_status);
                else if (si->si_code == CLD_EXITED)
                        log_debug("Player for %s exited with status 0", p->file);
                else if (p->stopped)
                        log_debug("Player for %s stopped for the next sound (signal %d)", p->file, si->si_status);
                else
                        log_warning("The player '%s' was killed by signal %d playing %s", arg_player,
                                    si->si_status, p->file);
                manager_remove_player(m, p);
                break;
        }
        return 0;
}

static void manager_play(Manager *m, const char *file) {
        if (m->alsa)
                (void) alsa_player_play(m->alsa, file);         /* logs its own failures */
        else
                manager_play_external(m, file);
}

/* The regular, non-hidden files of <sound_dir>/<T>/ appended to *list. A directory that is not
 * there is no sound for T; one that cannot be read is a WARNING. */
static void list_local_sounds(int threshold, char ***list, size_t *n) {
        _cleanup_(freep) char *dir = NULL;
        struct dirent *de;
        DIR *d;

        if (asprintf(&dir, "%s/%d", arg_sound_dir, threshold) < 0) {
                dir = NULL;
                return;
        }
        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT)
                        log_warning_errno(errno, "Cannot read the sound directory %s: %m", dir);
                return;
        }
        while ((de = readdir(d))) {
                struct stat st;
                char *path;

                if (de->d_name[0] == '.')
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode))
                        continue;
                if (asprintf(&path, "%s/%s", dir, de->d_name) < 0)
                        continue;
                (void) strv_push(list, n, path);
        }
        closedir(d);
}

/* Every candidate for threshold T: the local sounds and the downloaded server sounds for T. */
static void manager_fire(Manager *m, int threshold) {
        _cleanup_(strv_freep) char **candidates = NULL;
        size_t n = 0;

        list_local_sounds(threshold, &candidates, &n);
        for (ServerSound *s = m->sounds; s; s = s->next)
                if (s->ready && s->threshold == threshold)
                        (void) strv_push(&candidates, &n, strdup(s->path));

        if (n == 0) {
                log_debug("Threshold %d oz reached; no sound for it", threshold);
                return;
        }
        log_debug("Threshold %d oz reached; %zu sound(s) to pick from", threshold, n);
        manager_play(m, candidates[random_u64() % n]);
}

/* Start-up: a --sound_dir that is missing, unreadable or without a single sound is said at once,
 * not discovered at the first pour. */
static void check_sound_dir(bool server_sounds) {
        const char *fallback = server_sounds ? "only sounds from the server can play" : "no sound will play";
        _cleanup_(strv_freep) char **all = NULL;
        size_t n = 0;
        struct stat st;

        if (stat(arg_sound_dir, &st) < 0) {
                log_warning_errno(errno, "Sound directory %s: %m; %s.", arg_sound_dir, fallback);
                return;
        }
        if (!S_ISDIR(st.st_mode)) {
                log_warning("Sound directory %s is not a directory; %s.", arg_sound_dir, fallback);
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(sound_thresholds); i++)
                list_local_sounds(sound_thresholds[i], &all, &n);
        if (n == 0)
                log_warning("No sounds in %s: put sound files in %s/<ounces>/ (0, 1, 8, 12, 16, 24 or 32); %s.",
                            arg_sound_dir, arg_sound_dir, fallback);
        else
                log_info("%zu local sound(s) in %s", n, arg_sound_dir);
}

/* ---- flows */

static FlowState *manager_flow(Manager *m, int64_t flow_id, bool create) {
        FlowState *f;

        for (f = m->flows; f; f = f->next)
                if (f->flow_id == flow_id)
                        return f;
        if (!create)
                return NULL;
        f = calloc(1, sizeof(*f));
        if (!f)
                return NULL;
        f->flow_id = flow_id;
        f->last_oz = -1;
        f->next = m->flows;
        m->flows = f;
        return f;
}

static int on_prune(sd_event_source *s, uint64_t usec, void *userdata);

/* Flows are forgotten 10 minutes after their last update: one timer at the earliest such moment,
 * armed only while flows are remembered, so an idle sound_server never wakes up. */
static void manager_schedule_prune(Manager *m) {
        uint64_t earliest = UINT64_MAX;
        int r;

        for (FlowState *f = m->flows; f; f = f->next)
                earliest = MIN(earliest, f->last_update);
        if (earliest == UINT64_MAX) {
                event_timer_disarm(m->prune_timer);
                return;
        }
        r = event_timer_arm(m->event, &m->prune_timer, earliest + FLOW_FORGET_USEC, USEC_PER_SEC, on_prune, m);
        if (r < 0)
                log_debug_errno(r, "Cannot arm the flow prune timer: %m");
}

static void manager_forget_flow(Manager *m, FlowState *f) {
        for (FlowState **i = &m->flows; *i; i = &(*i)->next)
                if (*i == f) {
                        *i = f->next;
                        free(f);
                        return;
                }
}

static void on_flow_update(Manager *m, const KegnetFlowUpdate *u) {
        FlowState *f;

        if (u->state == KEGNET_FLOW_COMPLETED) {
                f = manager_flow(m, u->flow_id, false);
                if (f) {
                        manager_forget_flow(m, f);
                        manager_schedule_prune(m);
                }
                return;
        }
        if (!u->has_volume_ml)
                return;
        f = manager_flow(m, u->flow_id, true);
        if (!f)
                return;

        double current = u->volume_ml / SOUND_ML_PER_OUNCE;
        int t = sound_threshold_crossed(f->last_oz, current);
        f->last_oz = current;
        f->last_update = manager_now(m);
        manager_schedule_prune(m);
        if (t >= 0)
                manager_fire(m, t);
}

static int on_prune(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now = manager_now(m);

        for (FlowState **i = &m->flows; *i;) {
                FlowState *f = *i;
                if (now - f->last_update >= FLOW_FORGET_USEC) {
                        log_debug("Forgetting flow %" PRIi64 " (no update for 10 minutes)", f->flow_id);
                        *i = f->next;
                        free(f);
                } else
                        i = &f->next;
        }
        manager_schedule_prune(m);
        return 0;
}

static void on_kegnet_message(KegnetClient *c, const KegnetMessage *msg, void *userdata) {
        if (msg->kind == KEGNET_FLOW_UPDATE)
                on_flow_update(userdata, &msg->flow_update);
}

static void on_kegnet_connected(KegnetClient *c, void *userdata) {
        (void) daemon_notify_status("Connected to the core at %s", kegnet_client_address(c));
}

static void on_kegnet_disconnected(KegnetClient *c, int error, void *userdata) {
        (void) daemon_notify_status("Waiting for the core at %s", kegnet_client_address(c));
}

static const KegnetClientCallbacks kegnet_callbacks = {
        .connected = on_kegnet_connected,
        .disconnected = on_kegnet_disconnected,
        .message = on_kegnet_message,
};

/* ---- server sounds */

static int mkdir_p(const char *path, mode_t mode) {
        _cleanup_(freep) char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; ; s++) {
                if (*s == '/' || *s == 0) {
                        char saved = *s;
                        *s = 0;
                        if (mkdir(p, mode) < 0 && errno != EEXIST)
                                return -errno;
                        *s = saved;
                        if (saved == 0)
                                break;
                }
        }
        return 0;
}

static int write_file_atomic(const char *path, const void *data, size_t size) {
        _cleanup_(freep) char *tmp = NULL;
        _cleanup_(closep) int fd = -1;
        const char *p = data;

        if (asprintf(&tmp, "%s.XXXXXX", path) < 0) {
                tmp = NULL;
                return -ENOMEM;
        }
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        while (size > 0) {
                ssize_t n = write(fd, p, size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        int r = -errno;
                        (void) unlink(tmp);
                        return r;
                }
                p += n;
                size -= (size_t) n;
        }
        if (fchmod(fd, 0644) < 0 || rename(tmp, path) < 0) {
                int r = -errno;
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

static void on_sound_downloaded(HttpClient *c, const HttpResponse *resp, void *userdata) {
        ServerSound *s = userdata;
        int r;

        if (resp->error || resp->status != 200) {
                if (resp->error)
                        log_error("Cannot download %s: %s", s->url, resp->error);
                else
                        log_error("Cannot download %s: HTTP %ld", s->url, resp->status);
                return;
        }
        r = write_file_atomic(s->path, resp->body, resp->size);
        if (r < 0) {
                log_error_errno(r, "Cannot write %s: %m", s->path);
                return;
        }
        log_info("Downloaded %s to %s", s->url, s->path);
        s->ready = true;
        /* Other events with the same URL share the file. */
        for (ServerSound *o = s->next; o; o = o->next)
                if (streq(o->path, s->path))
                        o->ready = true;
}

static void manager_add_server_sound(Manager *m, json_t *ev) {
        _cleanup_(freep) char *name = NULL;
        const char *event_name, *predicate, *url;
        ServerSound *s;
        char *end;
        long t;
        int r;

        event_name = json_string_value(json_object_get(ev, "event_name"));
        if (!event_name || !streq(event_name, THRESHOLD_EVENT)) {
                log_debug("Ignoring sound event %s", event_name ? event_name : "(unnamed)");
                return;
        }
        predicate = json_string_value(json_object_get(ev, "event_predicate"));
        url = json_string_value(json_object_get(ev, "sound_url"));
        if (!predicate || !url) {
                log_warning("Ignoring a sound event without event_predicate or sound_url");
                return;
        }

        /* The predicate must equal str(T) exactly, so "16" matches and "16.0" or " 16" do not. */
        errno = 0;
        t = strtol(predicate, &end, 10);
        bool is_threshold = false;
        for (size_t i = 0; i < ELEMENTSOF(sound_thresholds); i++)
                if (t == sound_thresholds[i])
                        is_threshold = true;
        char canonical[16];
        (void) snprintf(canonical, sizeof(canonical), "%ld", t);
        if (errno != 0 || *end || !is_threshold || !streq(canonical, predicate)) {
                log_debug("Sound event predicate '%s' is not a threshold; ignored", predicate);
                return;
        }

        r = sound_url_basename(url, &name);
        if (r < 0) {
                log_error("Bad sound URL (absolute http or https needed): %s", url);
                return;
        }

        s = calloc(1, sizeof(*s));
        if (!s)
                return;
        s->threshold = (int) t;
        s->url = strdup(url);
        if (asprintf(&s->path, "%s/%s", arg_cache_dir, name) < 0)
                s->path = NULL;
        if (!s->url || !s->path) {
                free(s->url);
                free(s->path);
                free(s);
                return;
        }

        /* Append, keeping the server's order. */
        ServerSound **tail = &m->sounds;
        while (*tail)
                tail = &(*tail)->next;
        *tail = s;

        if (access(s->path, R_OK) == 0) {
                log_debug("Using cached %s for %s", s->path, url);
                s->ready = true;
                return;
        }
        for (ServerSound *o = m->sounds; o != s; o = o->next)
                if (streq(o->path, s->path))
                        return;         /* already being downloaded */

        HttpRequestSpec spec = {
                .url = url,
                .max_response = SOUND_FILE_MAX,
                .timeout_usec = http_timeout_usec(app_api_timeout()),
        };
        r = http_client_start(m->http, &spec, on_sound_downloaded, s, NULL);
        if (r < 0)
                log_error_errno(r, "Cannot download %s: %m", url);
}

static void on_sound_events(ApiClient *c, const ApiResult *res, void *userdata) {
        Manager *m = userdata;
        json_t *events, *ev;
        size_t i;
        int r;

        if (res->http_status == 404 || res->http_status == 410) {
                log_info("The server has no sound events (HTTP %ld); local sounds only.", res->http_status);
                return;
        }
        events = api_result_list(res, "events");
        if (!events && res->outcome != API_OK) {
                log_warning("Could not load sound events: %s; local sounds only.", res->reason ?: "error");
                return;
        }
        if (json_array_size(events) == 0) {
                log_info("The server has no sound events; local sounds only.");
                return;
        }

        r = mkdir_p(arg_cache_dir, 0755);
        if (r < 0) {
                log_error_errno(r, "Cannot create %s: %m", arg_cache_dir);
                return;
        }
        json_array_foreach(events, i, ev)
                if (json_is_object(ev))
                        manager_add_server_sound(m, ev);
}

/* ---- set-up */

static int split_player(const char *cmd, char ***ret, size_t *ret_n) {
        _cleanup_(strv_freep) char **argv = NULL;
        size_t n;
        char **t;
        int r;

        r = strv_split(cmd, " ", &argv);
        if (r < 0)
                return r;
        n = strv_length(argv);
        if (n == 0)
                return -EINVAL;
        /* One slot more: argv[n] receives the file name when a sound plays. */
        t = realloc(argv, (n + 2) * sizeof(char *));
        if (!t)
                return -ENOMEM;
        t[n + 1] = NULL;
        argv = NULL;
        *ret = t;
        *ret_n = n;
        return 0;
}

static int manager_new(Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        uint64_t now;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_error_errno(-ENOMEM, "Out of memory.");

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = daemon_setup_event(m->event, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "Cannot set up signals: %m");

        if (!isempty(arg_player)) {
                r = split_player(arg_player, &m->player_argv, &m->player_argc);
                if (r == -EINVAL)
                        app_flag_error("--player must name a program (or be empty: play through ALSA)");
                if (r < 0)
                        return log_error_errno(r, "Out of memory.");
                /* sd-event watches players through SIGCHLD, which must be blocked for that. */
                r = daemon_block_signals((const int[]) { SIGCHLD }, 1);
                if (r < 0)
                        return log_error_errno(r, "Cannot block SIGCHLD: %m");
        } else {
                const char *reason = NULL;

                r = alsa_player_new(&m->alsa, m->event, arg_alsa_device);
                if (r < 0)
                        return log_error_errno(r, "Cannot set up ALSA playback: %m");
                r = alsa_player_probe(arg_alsa_device, &reason);
                if (r < 0)
                        log_warning("ALSA device '%s' cannot be opened: %s; sounds will not play until it can "
                                    "(see --alsa_device).", arg_alsa_device, reason ? reason : "?");
        }

        r = kegnet_client_new(&m->kegnet, m->event, app_kb_core_addr(), &kegnet_callbacks, m);
        if (r < 0)
                return r;
        kegnet_client_set_events(m->kegnet, KEGNET_EVENT_BIT(KEGNET_FLOW_UPDATE));

        now = manager_now(m);
        r = event_timer_arm(m->event, &m->prune_timer, now + FLOW_FORGET_USEC, USEC_PER_SEC, on_prune, m);
        if (r < 0)
                return log_error_errno(r, "Cannot create a timer: %m");
        /* Armed by manager_schedule_prune() once a flow is remembered. */
        event_timer_disarm(m->prune_timer);

        bool server_sounds = !isempty(app_api_url()) && arg_server_sounds;
        check_sound_dir(server_sounds);
        if (server_sounds) {
                r = http_client_new(&m->http, m->event);
                if (r >= 0)
                        r = api_client_new(&m->api, m->http, app_api_url(), app_api_key(), app_api_timeout());
                if (r < 0)
                        return log_error_errno(r, "Cannot create the HTTP client: %m");
                r = api_client_get(m->api, "sound-events", on_sound_events, m, NULL);
                if (r < 0)
                        log_warning_errno(r, "Could not load sound events: %m");
        }

        *ret = TAKE_PTR(m);
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        app_init(argc, argv, &app_info, NULL);

        r = manager_new(&m);
        if (r >= 0) {
                r = kegnet_client_start(m->kegnet);
                if (r < 0)
                        log_error_errno(r, "Cannot start the kegnet client: %m");
        }
        if (r >= 0) {
                (void) daemon_notify_ready("Sounds from %s", arg_sound_dir);
                if (m->alsa)
                        log_info("Sound server ready; sounds in %s, playing on ALSA device '%s'.", arg_sound_dir,
                                 arg_alsa_device);
                else
                        log_info("Sound server ready; sounds in %s, player '%s'.", arg_sound_dir, arg_player);
                r = sd_event_loop(m->event);
                if (r < 0)
                        log_error_errno(r, "Event loop failed: %m");
                (void) daemon_notify_stopping();
        }
        m = manager_free(m);
        app_finish();
        return r == 0 ? 0 : 1;
}
