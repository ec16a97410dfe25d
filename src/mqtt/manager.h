/* kegbot_mqtt's Manager: owns the event loop, the model, the D-Bus side, the broker connection and
 * every timer, and decides what is published when (mqtt-home-assistant.md sections 5.4 to 11). */
#pragma once

#include <stdbool.h>

#include "broker.h"
#include "macro.h"
#include "payload.h"

typedef struct ManagerConfig {
        Settings settings;
        BrokerConfig broker;
        const char *birth_topic;
        int state_interval;             /* seconds */
        int queue_limit;
        int removal_grace;              /* seconds */
        bool session_bus;
        const char *state_dir;
        const char *api_url;            /* "" = no keg data */
        const char *api_key;
        double api_timeout;
} ManagerConfig;

typedef struct Manager Manager;

/* Everything up to the connection attempts. Errors are logged; the exit status is 1. */
int manager_new(Manager **ret, const ManagerConfig *config);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Runs until an orderly stop (0) or a fatal error (negative). */
int manager_run(Manager *m);
