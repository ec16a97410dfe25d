/* The one client of org.kegbot.Core1, used by kegbot_mqtt (mqtt-home-assistant.md section 4) and
 * lcd_daemon: follows the core on the system or session bus - waits for it through NameOwnerChanged
 * (never polls, never activates it), takes a snapshot (Manager properties, GetManagedObjects, introspection of the optional members)
 * whenever it gains an owner, then applies InterfacesAdded / InterfacesRemoved / PropertiesChanged
 * and the Manager's signals to the model. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "model.h"

/* The Manager's signals, as they are read (the strings live as long as the message). */
typedef struct DrinkInfo {
        const char *uuid;
        int64_t drink_id;               /* -1 = unknown */
        uint64_t flow_id;
        const char *meter;
        const char *username;           /* "" = guest */
        uint64_t ticks;
        double volume_ml;               /* < 0 = unknown */
        uint64_t start_time, pour_time; /* realtime usec */
        uint64_t duration;              /* seconds */
} DrinkInfo;

typedef struct GhostInfo {
        const char *meter;
        const char *rule;
        uint64_t ticks;
        double volume_ml;               /* < 0 = unknown */
        uint64_t start_time, end_time;  /* realtime usec */
        uint64_t flow_id;
        const char *tick_series;
        const char *mode;
} GhostInfo;

typedef struct FlagInfo {
        uint64_t flow_id;
        const char *meter;
        const char *flag;
        const char *mode;
} FlagInfo;

typedef struct CoreWatch CoreWatch;

/* What a change touches. */
enum {
        CHANGE_STATE = 1 << 0,          /* the group's (or the core's) state document */
        CHANGE_CONFIG = 1 << 1,         /* its discovery configs */
        CHANGE_PERSIST = 1 << 2,        /* something the state file keeps */
};

typedef struct CoreWatchCallbacks {
        /* The first GetNameOwner was answered, and if the core was there its snapshot applied. */
        void (*ready)(CoreWatch *w, void *userdata);
        /* A snapshot was applied: the core is on the bus (again). */
        void (*appeared)(CoreWatch *w, void *userdata);
        void (*left)(CoreWatch *w, void *userdata);
        void (*core_changed)(CoreWatch *w, unsigned change, void *userdata);
        void (*group_changed)(CoreWatch *w, Group *g, unsigned change, void *userdata);
        /* The core removed a tap while running (InterfacesRemoved): the callee removes it. */
        void (*tap_removed)(CoreWatch *w, Group *g, void *userdata);
        void (*drink)(CoreWatch *w, const DrinkInfo *d, void *userdata);
        void (*ghost_flow)(CoreWatch *w, const GhostInfo *gi, void *userdata);
        void (*pour_flagged)(CoreWatch *w, const FlagInfo *f, void *userdata);
        /* The bus connection is gone: the CoreWatch is of no further use (free it outside the callback). */
        void (*failed)(CoreWatch *w, void *userdata);
} CoreWatchCallbacks;

/* Connects to the bus (system, or session with session_bus). A bus that cannot be reached is returned
 * unlogged (the caller decides whether that is fatal); other errors are logged. */
int core_watch_new(CoreWatch **ret, sd_event *event, Model *model, bool session_bus, const CoreWatchCallbacks *cb,
                   void *userdata);
CoreWatch *core_watch_free(CoreWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(CoreWatch *, core_watch_free);

/* Installs the match rules and asks for the core's owner. */
int core_watch_start(CoreWatch *w);
bool core_watch_is_online(const CoreWatch *w);

/* A Manager method taking one meter name ("StopFlow", "ClearQuarantine"), asynchronous, 5 s
 * timeout, never activating the core. The callback gets NULL on success, else the error. */
typedef void (*CoreCallDone)(const sd_bus_error *error, void *userdata);
int core_watch_call_meter(CoreWatch *w, const char *method, const char *meter, CoreCallDone done, void *userdata);
