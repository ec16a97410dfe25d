/* The picture of the core that the core client (core-watch.h) fills: the Manager's properties, one
 * Group per board, tap and temperature sensor. kegbot_mqtt (mqtt-home-assistant.md section 1) also
 * keeps here what must survive its restarts (served totals, the last pour, ghost volumes, drinks
 * already counted) and what it published; lcd_daemon reads the taps. No I/O and no clock here
 * (times are passed in). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "util-uuid.h"

typedef enum GroupKind {
        GROUP_BOARD,
        GROUP_TAP,
        GROUP_SENSOR,
        _GROUP_KIND_MAX,
} GroupKind;

#define RATE_SAMPLES_MAX 64
#define GHOST_ENTRIES_MAX 1000
#define RECENT_DRINKS_MAX 512
#define RATE_WINDOW_USEC (2 * USEC_PER_SEC)
#define RATE_MIN_SPAN_USEC (500 * USEC_PER_MSEC)
#define GHOST_WINDOW_SEC (24 * 3600)

/* One FlowVolumeMl update of the current flow, stamped with its arrival (monotonic). */
typedef struct RateSample {
        uint64_t t;
        double v;
} RateSample;

/* One GhostFlow of the tap: its end time (Unix seconds) and volume. */
typedef struct GhostEntry {
        uint64_t time;
        double ml;
} GhostEntry;

typedef struct TapLastPour {
        bool set;
        char uuid[UUID_STRING_MAX];
        double volume_ml;
        uint64_t time;                  /* realtime usec */
        char *user;                     /* NULL = guest */
} TapLastPour;

/* Keg data of a tap from Kegbot Server (section 4.5). */
typedef struct KegInfo {
        bool known;                     /* the tap is in the server's answer: keg entities exist */
        bool has_keg;                   /* it has a current keg: the values below are set */
        char *beverage;                 /* NULL = null */
        bool has_keg_id;
        int64_t keg_id;
        double size_ml, remaining_ml, percent;  /* NAN = null */
} KegInfo;

/* The publication state of one retained state topic. */
typedef struct StateDoc {
        char *text;                     /* last published, NULL = not yet */
        uint64_t published;             /* monotonic, 0 = never */
        bool dirty;                     /* the model changed since */
} StateDoc;

typedef struct Group {
        GroupKind kind;
        char *name;                     /* meter, controller or sensor name */
        char *id;                       /* "tap:<name>", "board:<name>", "sensor:<name>" */
        char *key;                      /* topic key (section 3.2) */
        bool live;                      /* its properties are known: seen in the core since start */
        bool present;                   /* in the core's object set (as last seen, kept while it is gone) */
        uint64_t seen;                  /* realtime usec it was last in the core, 0 = never */
        char *path;                     /* D-Bus object path, while live */

        /* tap */
        char *tap_name;
        double ml_per_tick;
        char *relay;                    /* "" = none */
        bool relay_enabled;
        bool auto_created;
        uint64_t flow_id;
        char *flow_state;
        double flow_volume_ml;          /* -1 = unknown */
        char *flow_user;
        bool has_quarantined;           /* the core's Tap has Quarantined */
        bool quarantined;
        RateSample rate[RATE_SAMPLES_MAX];
        size_t rate_first, n_rate;
        uint64_t rate_flow_id;
        double served_total_ml;
        TapLastPour last_pour;
        GhostEntry *ghost;              /* oldest first */
        size_t n_ghost;
        KegInfo keg;

        /* board */
        char *serial;
        uint32_t firmware;
        char *device;
        bool connected;
        uint64_t board_last_seen;       /* Controller.LastSeen, realtime usec */
        char *backend;                  /* NULL: the core lacks Controller.Backend */
        char *event_state;              /* NULL: the core lacks Controller.EventState */

        /* sensor */
        bool has_temp;
        double temp_c;
        uint64_t sensor_time;           /* LastSeen, realtime usec */
        bool silent;

        StateDoc doc;
        /* Device discovery: "<component id>=<platform>" of the entities last published in the device
         * config this group owns (NULL = none published). */
        char **components;
} Group;

/* The Manager object, and which optional members (section 4.2) the core has. */
typedef struct CoreInfo {
        bool seen;                      /* a snapshot completed since start */
        bool online;                    /* on the bus now */
        char *version;
        char *mode;
        char *backend_state;
        char *spool_state;
        uint32_t pending, failed;
        uint64_t last_sync;
        bool has_ghost_flow;
        bool has_pour_flagged;
        bool has_clear_quarantine;
        bool has_quarantined;
        bool has_backend;
        bool has_event_state;
} CoreInfo;

/* A retained topic this node has published and not yet emptied (section 10, "published"): the
 * discovery configs and the state topics, each with the group it belongs to. */
typedef struct LedgerEntry {
        char *topic;
        char *group;                    /* "node" or a group id */
        char *text;                     /* last published text; NULL = unknown (loaded from the file) */
} LedgerEntry;

typedef struct Model {
        CoreInfo core;
        Group **groups;
        size_t n_groups;
        char **node_components;         /* as Group.components, for the node's device config */
        char *recent[RECENT_DRINKS_MAX];/* canonical UUIDs, a ring: recent_first is the oldest */
        size_t recent_first, n_recent;
        uint64_t events_dropped;        /* lifetime, persisted */
        LedgerEntry *ledger;
        size_t n_ledger;
        StateDoc core_doc;
} Model;

const char *group_kind_to_string(GroupKind k);          /* "board", "tap", "sensor" */
/* "tap:kegboard.flow0" -> GROUP_TAP and a pointer to "kegboard.flow0". -EINVAL otherwise. */
int group_id_parse(const char *id, GroupKind *ret_kind, const char **ret_name);

/* Every byte outside [A-Za-z0-9-] becomes '_' and two lowercase hex digits (section 3.2).
 * NULL on allocation failure. */
char *key_encode(const char *name);

int model_new(Model **ret);
Model *model_free(Model *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Model *, model_free);

Group *model_find(const Model *m, GroupKind kind, const char *name);
Group *model_find_id(const Model *m, const char *id);
/* A new, neither live nor present group. -EEXIST if there is one. */
int model_add(Model *m, GroupKind kind, const char *name, Group **ret);
/* Drops the group and everything it remembers. */
void model_remove(Model *m, Group *g);
size_t model_count(const Model *m, GroupKind kind, bool live_only);

/* "active" flow. */
bool tap_pouring(const Group *g);
/* Remembers an update of the pour volume at monotonic time 'now' (a new flow id starts afresh). */
void tap_rate_add(Group *g, uint64_t flow_id, double volume_ml, uint64_t now);
void tap_rate_reset(Group *g);
/* L/min over the samples of the last 2 s (section 4.4); 0 when not pouring, with less than 0.5 s
 * of samples, or when the newest is older than 2 s. */
double tap_flow_rate(const Group *g, uint64_t now);

/* Ghost volumes: an entry (end time in Unix seconds; volume < 0 is skipped), at most 1000 kept;
 * entries older than 24 h before now_sec are dropped. */
int tap_ghost_add(Group *g, uint64_t time_sec, double volume_ml, uint64_t now_sec);
void tap_ghost_expire(Group *g, uint64_t now_sec);
double tap_ghost_sum(const Group *g, uint64_t now_sec);

/* Drinks counted once (section 4.4): the last 512 UUIDs, compared in canonical spelling. */
bool model_drink_seen(const Model *m, const char *uuid);
int model_drink_remember(Model *m, const char *uuid);

void keg_info_clear(KegInfo *k);

LedgerEntry *ledger_find(const Model *m, const char *topic);
/* Adds the topic, or changes its group; the text is left as it was. */
int ledger_put(Model *m, const char *topic, const char *group, LedgerEntry **ret);
/* Sets the last published text (a copy). */
int ledger_set_text(LedgerEntry *e, const char *text);
void ledger_remove(Model *m, const char *topic);
