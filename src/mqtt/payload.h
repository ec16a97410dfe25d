/* What kegbot_mqtt publishes (mqtt-home-assistant.md sections 3, 6 and 7): topic names, the state
 * documents, the events and the Home Assistant discovery configs, all rendered from the model with
 * the project's JSON writer. Pure: no I/O, times are passed in. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "core-watch.h"
#include "model.h"

typedef enum DiscoveryMode {
        DISCOVERY_COMPONENT,
        DISCOVERY_DEVICE,
        DISCOVERY_OFF,
        _DISCOVERY_MODE_MAX,
} DiscoveryMode;

const char *discovery_mode_to_string(DiscoveryMode m);
int discovery_mode_from_string(const char *s, DiscoveryMode *ret);

typedef struct Settings {
        const char *node_id;
        const char *base;
        const char *prefix;             /* discovery prefix */
        DiscoveryMode discovery;
        bool commands;                  /* --mqtt_commands */
        bool keg;                       /* --api_url: keg data */
        const char *hostname;
        const char *version;            /* kegbot_mqtt's own */
} Settings;

/* Node id: [A-Za-z0-9_-]{1,64}. */
bool node_id_is_valid(const char *s);
/* A base, discovery prefix or birth topic (section 2): 1..256 bytes of UTF-8, no '+', '#' or NUL,
 * neither starting nor ending with '/'. */
bool topic_root_is_valid(const char *s);

/* The node id derived from an app-specific machine id: "kegbot_" + its first 8 hex digits. */
void node_id_from_app_id(const uint8_t id[static 16], char buf[static 16]);

/* Topics (malloc'ed; NULL on allocation failure). */
char *topic_status(const Settings *s);
char *topic_core(const Settings *s);
char *topic_group(const Settings *s, const Group *g);
char *topic_event(const Settings *s, const char *meter);
char *topic_commands(const Settings *s);                        /* "<base>/tap/+/cmd" */
/* The tap key of "<base>/tap/<key>/cmd", or NULL when the topic is not one. Borrowed from topic;
 * *ret_len is the key's length. */
const char *topic_command_key(const Settings *s, const char *topic, size_t *ret_len);

/* State documents (section 6.2). now_mono: the flow rate; now_real: the ghost window. */
int doc_core(const Model *m, const Settings *s, char **ret, size_t *ret_len);
int doc_group(const Model *m, const Group *g, uint64_t now_mono, uint64_t now_real, char **ret, size_t *ret_len);

/* Events (section 6.3). */
/* volume_ml: the volume counted (already derived from ticks when the drink had none; < 0 = null). */
int event_pour(const DrinkInfo *d, double volume_ml, char **ret, size_t *ret_len);
int event_ghost_flow(const GhostInfo *gi, char **ret, size_t *ret_len);
int event_kicked(const FlagInfo *f, uint64_t now_real, char **ret, size_t *ret_len);

/* Discovery (section 7): every config the model and settings produce now. In device mode, a device
 * whose entities shrank since its last publication (Group.components, Model.node_components) also
 * gets the text with removal entries ({"p": platform}) in text_once: that is what is sent, text is
 * what it is compared with afterwards. */
typedef struct Config {
        char *topic;
        char *group;                    /* "node" or a group id */
        char *text;
        char *text_once;                /* device mode, entities to remove: sent instead of text; else NULL */
        char **components;              /* device mode: "<id>=<platform>" of text's entities */
} Config;

typedef struct ConfigList {
        Config *items;
        size_t n;
} ConfigList;

#define NODE_GROUP "node"

int discovery_build(const Model *m, const Settings *s, ConfigList *ret);
void config_list_done(ConfigList *l);
/* A discovery topic this node would publish under the current settings (prefix, mode, node id):
 * its form only, whatever the entity. */
bool discovery_topic_is_current(const Settings *s, const char *topic);
