/* kegbot_mqtt's D-Bus side (mqtt-home-assistant.md section 4): follows org.kegbot.Core1 on the
 * system or session bus - waits for it through NameOwnerChanged (never polls, never activates it),
 * takes a snapshot (Manager properties, GetManagedObjects, introspection of the optional members)
 * whenever it gains an owner, then applies InterfacesAdded / InterfacesRemoved / PropertiesChanged
 * and the Manager's signals to the model. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "model.h"
#include "payload.h"

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
        /* The bus connection is gone (fatal). */
        void (*failed)(CoreWatch *w, void *userdata);
} CoreWatchCallbacks;

/* Connects to the bus (system, or session with session_bus); errors are logged. */
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
