/* Topics, documents, events and discovery configs: see payload.h. Every key of a document is
 * always written (null when unknown), in the order of mqtt-home-assistant.md section 6.2. */
#include <math.h>

#include "json-writer.h"
#include "payload.h"
#include "util-double.h"
#include "util-hex.h"
#include "util-string.h"
#include "util-strv.h"
#include "util-utf8.h"

static const char *const discovery_modes[_DISCOVERY_MODE_MAX] = {
        [DISCOVERY_COMPONENT] = "component",
        [DISCOVERY_DEVICE] = "device",
        [DISCOVERY_OFF] = "off",
};

const char *discovery_mode_to_string(DiscoveryMode m) {
        return m >= 0 && m < _DISCOVERY_MODE_MAX ? discovery_modes[m] : NULL;
}

int discovery_mode_from_string(const char *s, DiscoveryMode *ret) {
        for (DiscoveryMode m = 0; m < _DISCOVERY_MODE_MAX; m++)
                if (streq_ptr(s, discovery_modes[m])) {
                        *ret = m;
                        return 0;
                }
        return -EINVAL;
}

bool node_id_is_valid(const char *s) {
        size_t n;

        if (isempty(s))
                return false;
        n = strlen(s);
        return n <= 64 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

bool topic_root_is_valid(const char *s) {
        size_t n;

        if (isempty(s))
                return false;
        n = strlen(s);
        return n <= 256 && utf8_is_valid(s) && !strpbrk(s, "+#") && s[0] != '/' && s[n - 1] != '/';
}

void node_id_from_app_id(const uint8_t id[static 16], char buf[static 16]) {
        memcpy(buf, "kegbot_", 7);
        hex_encode(id, 4, buf + 7);
}

/* ---- topics */

char *topic_status(const Settings *s) {
        return strdup_printf("%s/status", s->base);
}

char *topic_core(const Settings *s) {
        return strdup_printf("%s/core", s->base);
}

char *topic_group(const Settings *s, const Group *g) {
        return strdup_printf("%s/%s/%s", s->base, group_kind_to_string(g->kind), g->key);
}

char *topic_event(const Settings *s, const char *meter) {
        _cleanup_(freep) char *key = key_encode(meter);

        return key ? strdup_printf("%s/tap/%s/event", s->base, key) : NULL;
}

char *topic_commands(const Settings *s) {
        return strdup_printf("%s/tap/+/cmd", s->base);
}

const char *topic_command_key(const Settings *s, const char *topic, size_t *ret_len) {
        const char *p = startswith(topic, s->base), *end;

        if (!p || !(p = startswith(p, "/tap/")))
                return NULL;
        end = strchr(p, '/');
        if (!end || end == p || !streq(end, "/cmd"))
                return NULL;
        *ret_len = (size_t) (end - p);
        return p;
}

/* ---- documents */

static void field_volume(JsonWriter *w, const char *key, double v, bool known) {
        if (known && isfinite(v))
                json_writer_field_double(w, key, double_round(v, 1));
        else
                json_writer_field_null(w, key);
}

static void field_time(JsonWriter *w, const char *key, uint64_t usec) {
        if (usec > 0)
                json_writer_field_timestamp(w, key, usec);
        else
                json_writer_field_null(w, key);
}

static void field_nonempty(JsonWriter *w, const char *key, const char *s) {
        json_writer_field_string(w, key, isempty(s) ? NULL : s);
}

int doc_core(const Model *m, const Settings *s, char **ret, size_t *ret_len) {
        const CoreInfo *c = &m->core;
        JsonWriter w = JSON_WRITER_INIT;

        json_writer_object_begin(&w);
        field_nonempty(&w, "mode", c->mode);
        field_nonempty(&w, "server", c->backend_state);
        field_nonempty(&w, "spool_state", c->spool_state);
        if (c->seen) {
                json_writer_field_uint(&w, "spool", c->pending);
                json_writer_field_uint(&w, "failed", c->failed);
        } else {
                json_writer_field_null(&w, "spool");
                json_writer_field_null(&w, "failed");
        }
        field_time(&w, "last_sync", c->last_sync);
        field_nonempty(&w, "version", c->version);
        json_writer_field_string(&w, "bridge_version", s->version);
        json_writer_field_uint(&w, "mqtt_events_dropped", m->events_dropped);
        json_writer_object_end(&w);
        return json_writer_finish(&w, ret, ret_len);
}

static void doc_board(JsonWriter *w, const Model *m, const Group *g) {
        json_writer_field_string(w, "name", g->name);
        json_writer_field_bool(w, "connected", g->connected);
        field_nonempty(w, "serial", g->serial);
        if (g->firmware > 0)
                json_writer_field_uint(w, "firmware", g->firmware);
        else
                json_writer_field_null(w, "firmware");
        field_nonempty(w, "device", g->device);
        field_time(w, "last_seen", g->board_last_seen);
        json_writer_field_string(w, "backend", m->core.has_backend ? g->backend : NULL);
        json_writer_field_string(w, "event_state",
                                 m->core.has_event_state && streq_ptr(g->backend, "event") ? g->event_state : NULL);
}

static void doc_tap(JsonWriter *w, const Model *m, const Group *g, uint64_t now_mono, uint64_t now_real) {
        bool pouring = tap_pouring(g);

        json_writer_field_string(w, "name", isempty(g->tap_name) ? g->name : g->tap_name);
        json_writer_field_string(w, "meter", g->name);
        json_writer_field_double(w, "ml_per_tick", g->ml_per_tick);
        field_nonempty(w, "relay", g->relay);
        if (isempty(g->relay))
                json_writer_field_null(w, "valve");
        else
                json_writer_field_string(w, "valve", g->relay_enabled ? "open" : "closed");
        json_writer_field_bool(w, "pouring", pouring);
        if (pouring)
                field_volume(w, "pour_ml", g->flow_volume_ml, g->flow_volume_ml >= 0);
        else
                json_writer_field_double(w, "pour_ml", 0.0);
        json_writer_field_double(w, "flow_rate_l_min", double_round(tap_flow_rate(g, now_mono), 2));
        json_writer_field_string(w, "user", pouring && !isempty(g->flow_user) ? g->flow_user : NULL);
        if (g->last_pour.set) {
                field_volume(w, "last_pour_ml", g->last_pour.volume_ml, g->last_pour.volume_ml >= 0);
                field_time(w, "last_pour_time", g->last_pour.time);
                json_writer_field_string(w, "last_pour_user", g->last_pour.user);
        } else {
                json_writer_field_null(w, "last_pour_ml");
                json_writer_field_null(w, "last_pour_time");
                json_writer_field_null(w, "last_pour_user");
        }
        field_volume(w, "served_total_ml", g->served_total_ml, true);
        field_volume(w, "ghost_ml_24h", tap_ghost_sum(g, now_real / USEC_PER_SEC), m->core.has_ghost_flow);
        if (m->core.has_quarantined && g->has_quarantined)
                json_writer_field_bool(w, "quarantined", g->quarantined);
        else
                json_writer_field_null(w, "quarantined");

        const KegInfo *k = &g->keg;
        bool keg = k->known && k->has_keg;
        json_writer_field_string(w, "beverage", keg ? k->beverage : NULL);
        if (keg && k->has_keg_id)
                json_writer_field_int(w, "keg_id", k->keg_id);
        else
                json_writer_field_null(w, "keg_id");
        field_volume(w, "keg_size_ml", k->size_ml, keg);
        field_volume(w, "keg_remaining_ml", k->remaining_ml, keg);
        if (keg && isfinite(k->percent))
                json_writer_field_double(w, "keg_percent", double_round(k->percent, 1));
        else
                json_writer_field_null(w, "keg_percent");
}

static void doc_sensor(JsonWriter *w, const Group *g) {
        json_writer_field_string(w, "name", g->name);
        if (g->has_temp && isfinite(g->temp_c))
                json_writer_field_double(w, "temp_c", double_round(g->temp_c, 2));
        else
                json_writer_field_null(w, "temp_c");
        field_time(w, "time", g->sensor_time);
        json_writer_field_bool(w, "silent", g->silent);
}

int doc_group(const Model *m, const Group *g, uint64_t now_mono, uint64_t now_real, char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;

        assert_return(m && g && ret, -EINVAL);

        json_writer_object_begin(&w);
        switch (g->kind) {
        case GROUP_BOARD:
                doc_board(&w, m, g);
                break;
        case GROUP_TAP:
                doc_tap(&w, m, g, now_mono, now_real);
                break;
        case GROUP_SENSOR:
                doc_sensor(&w, g);
                break;
        default:
                json_writer_set_error(&w, -EINVAL);
        }
        json_writer_object_end(&w);
        return json_writer_finish(&w, ret, ret_len);
}

/* ---- events */

int event_pour(const DrinkInfo *d, double volume_ml, char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;

        json_writer_object_begin(&w);
        json_writer_field_string(&w, "event_type", "pour");
        json_writer_field_string(&w, "uuid", d->uuid);
        json_writer_field_string(&w, "meter", d->meter);
        field_volume(&w, "volume_ml", volume_ml, volume_ml >= 0);
        json_writer_field_uint(&w, "ticks", d->ticks);
        json_writer_field_uint(&w, "duration_s", d->duration);
        field_nonempty(&w, "user", d->username);
        if (d->drink_id >= 0)
                json_writer_field_int(&w, "drink_id", d->drink_id);
        else
                json_writer_field_null(&w, "drink_id");
        field_time(&w, "time", d->pour_time);
        json_writer_object_end(&w);
        return json_writer_finish(&w, ret, ret_len);
}

int event_ghost_flow(const GhostInfo *gi, char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;

        json_writer_object_begin(&w);
        json_writer_field_string(&w, "event_type", "ghost_flow");
        json_writer_field_string(&w, "meter", gi->meter);
        json_writer_field_string(&w, "rule", gi->rule);
        json_writer_field_string(&w, "mode", gi->mode);
        json_writer_field_uint(&w, "ticks", gi->ticks);
        field_volume(&w, "volume_ml", gi->volume_ml, gi->volume_ml >= 0);
        json_writer_field_uint(&w, "duration_s",
                               gi->end_time > gi->start_time ? (gi->end_time - gi->start_time) / USEC_PER_SEC : 0);
        field_time(&w, "time", gi->end_time);
        json_writer_object_end(&w);
        return json_writer_finish(&w, ret, ret_len);
}

int event_kicked(const FlagInfo *f, uint64_t now_real, char **ret, size_t *ret_len) {
        JsonWriter w = JSON_WRITER_INIT;

        json_writer_object_begin(&w);
        json_writer_field_string(&w, "event_type", "kicked");
        json_writer_field_string(&w, "meter", f->meter);
        json_writer_field_uint(&w, "flow_id", f->flow_id);
        json_writer_field_string(&w, "mode", f->mode);
        field_time(&w, "time", now_real);
        json_writer_object_end(&w);
        return json_writer_finish(&w, ret, ret_len);
}

/* ---- discovery */

/* One Home Assistant entity (section 7.4). */
typedef struct Entity {
        char *id;                       /* component id in device mode: the suffix, or temp_<key> */
        const char *platform;
        char *name;
        char *unique_id;
        char *state_topic;
        char *command_topic;
        const char *payload_press;
        const char *value_template;
        bool event_types;
        const char *device_class;
        const char *state_class;
        const char *unit;
        int expire_after;
        const char *entity_category;
        const char *group;              /* the group it describes: "node" or a group id */
} Entity;

typedef struct Device {
        const char *group;              /* NODE_GROUP or the board's / tap's id */
        char *id;                       /* device id */
        const Group *g;                 /* NULL for the node */
        Entity *entities;
        size_t n_entities;
} Device;

typedef struct Builder {
        const Model *m;
        const Settings *s;
        char *status_topic;
        Device *devices;
        size_t n_devices;
        int error;
} Builder;

static void entity_done(Entity *e) {
        free(e->id);
        free(e->name);
        free(e->unique_id);
        free(e->state_topic);
        free(e->command_topic);
}

static void builder_done(Builder *b) {
        for (size_t i = 0; i < b->n_devices; i++) {
                for (size_t j = 0; j < b->devices[i].n_entities; j++)
                        entity_done(&b->devices[i].entities[j]);
                free(b->devices[i].entities);
                free(b->devices[i].id);
        }
        free(b->devices);
        free(b->status_topic);
}

static Device *builder_device(Builder *b, const char *group, const Group *g, char *id) {
        Device *a;

        if (!id) {
                b->error = -ENOMEM;
                return NULL;
        }
        a = realloc(b->devices, (b->n_devices + 1) * sizeof(Device));
        if (!a) {
                free(id);
                b->error = -ENOMEM;
                return NULL;
        }
        b->devices = a;
        a[b->n_devices] = (Device) { .group = group, .id = id, .g = g };
        return &a[b->n_devices++];
}

/* Adds an entity with the common fields; the caller fills in the rest. The unique id is
 * "<device id>_<suffix>" (the device id carries the node id and the group key). */
static Entity *device_entity(Builder *b, Device *d, const char *suffix, const char *platform, const char *name,
                             const char *state_topic, const char *value_template) {
        Entity *a, *e;

        if (!d)
                return NULL;
        a = realloc(d->entities, (d->n_entities + 1) * sizeof(Entity));
        if (!a) {
                b->error = -ENOMEM;
                return NULL;
        }
        d->entities = a;
        e = &a[d->n_entities];
        *e = (Entity) {
                .id = strdup(suffix),
                .platform = platform,
                .name = strdup(name),
                .unique_id = strdup_printf("%s_%s", d->id, suffix),
                .state_topic = state_topic ? strdup(state_topic) : NULL,
                .value_template = value_template,
                .group = d->group,
        };
        if (!e->id || !e->name || !e->unique_id || (state_topic && !e->state_topic)) {
                entity_done(e);
                b->error = -ENOMEM;
                return NULL;
        }
        d->n_entities++;
        return e;
}

static void node_entities(Builder *b, Device *d) {
        const CoreInfo *c = &b->m->core;
        _cleanup_(freep) char *t = topic_core(b->s);
        Entity *e;

        if (!t) {
                b->error = -ENOMEM;
                return;
        }
        if (streq_ptr(c->mode, "server")) {
                e = device_entity(b, d, "server", "binary_sensor", "Server", t,
                                  "{{ 'ON' if value_json.server == 'online' else 'OFF' }}");
                if (e) {
                        e->device_class = "connectivity";
                        e->entity_category = "diagnostic";
                }
                e = device_entity(b, d, "spool", "sensor", "Drinks waiting", t, "{{ value_json.spool }}");
                if (e) {
                        e->state_class = "measurement";
                        e->entity_category = "diagnostic";
                }
                e = device_entity(b, d, "failed", "sensor", "Drinks rejected", t, "{{ value_json.failed }}");
                if (e) {
                        e->state_class = "measurement";
                        e->entity_category = "diagnostic";
                }
        }
        e = device_entity(b, d, "mqtt_dropped", "sensor", "MQTT events dropped", t,
                          "{{ value_json.mqtt_events_dropped }}");
        if (e) {
                e->state_class = "total_increasing";
                e->entity_category = "diagnostic";
        }
}

static void board_entities(Builder *b, Device *d, const Group *g) {
        _cleanup_(freep) char *t = topic_group(b->s, g);
        Entity *e;

        if (!t) {
                b->error = -ENOMEM;
                return;
        }
        e = device_entity(b, d, "connected", "binary_sensor", "Connected", t,
                          "{{ 'ON' if value_json.connected else 'OFF' }}");
        if (e) {
                e->device_class = "connectivity";
                e->entity_category = "diagnostic";
        }
        if (b->m->core.has_event_state && streq_ptr(g->backend, "event")) {
                e = device_entity(b, d, "link", "sensor", "Server link", t, "{{ value_json.event_state }}");
                if (e)
                        e->entity_category = "diagnostic";
        }
}

static void tap_entities(Builder *b, Device *d, const Group *g) {
        const CoreInfo *c = &b->m->core;
        _cleanup_(freep) char *t = topic_group(b->s, g), *ev = topic_event(b->s, g->name), *cmd = NULL;
        Entity *e;

        if (!t || !ev) {
                b->error = -ENOMEM;
                return;
        }
        e = device_entity(b, d, "served", "sensor", "Served", t, "{{ value_json.served_total_ml }}");
        if (e) {
                e->device_class = "volume";
                e->state_class = "total_increasing";
                e->unit = "mL";
        }
        e = device_entity(b, d, "last_pour", "sensor", "Last pour", t, "{{ value_json.last_pour_ml }}");
        if (e) {
                e->device_class = "volume";
                e->unit = "mL";
        }
        e = device_entity(b, d, "flow_rate", "sensor", "Flow rate", t, "{{ value_json.flow_rate_l_min }}");
        if (e) {
                e->device_class = "volume_flow_rate";
                e->state_class = "measurement";
                e->unit = "L/min";
        }
        e = device_entity(b, d, "pouring", "binary_sensor", "Pouring", t,
                          "{{ 'ON' if value_json.pouring else 'OFF' }}");
        if (e)
                e->device_class = "running";
        if (!isempty(g->relay)) {
                e = device_entity(b, d, "valve", "binary_sensor", "Valve", t,
                                  "{{ 'ON' if value_json.valve == 'open' else 'OFF' }}");
                if (e)
                        e->device_class = "opening";
        }
        e = device_entity(b, d, "events", "event", "Pour", ev, NULL);
        if (e)
                e->event_types = true;
        if (b->s->keg && g->keg.known) {
                e = device_entity(b, d, "keg_remaining", "sensor", "Keg remaining", t,
                                  "{{ value_json.keg_remaining_ml }}");
                if (e) {
                        e->device_class = "volume_storage";
                        e->state_class = "measurement";
                        e->unit = "mL";
                }
                e = device_entity(b, d, "keg_level", "sensor", "Keg level", t, "{{ value_json.keg_percent }}");
                if (e) {
                        e->state_class = "measurement";
                        e->unit = "%";
                }
                (void) device_entity(b, d, "beverage", "sensor", "Beverage", t, "{{ value_json.beverage }}");
        }
        e = device_entity(b, d, "ml_per_tick", "sensor", "Calibration", t, "{{ value_json.ml_per_tick }}");
        if (e) {
                e->unit = "mL/tick";
                e->entity_category = "diagnostic";
        }
        if (c->has_ghost_flow) {
                e = device_entity(b, d, "ghost_24h", "sensor", "Ghost volume 24 h", t, "{{ value_json.ghost_ml_24h }}");
                if (e) {
                        e->device_class = "volume";
                        e->unit = "mL";
                        e->entity_category = "diagnostic";
                }
        }
        if (c->has_quarantined) {
                e = device_entity(b, d, "quarantined", "binary_sensor", "Quarantined", t,
                                  "{{ 'ON' if value_json.quarantined else 'OFF' }}");
                if (e) {
                        e->device_class = "problem";
                        e->entity_category = "diagnostic";
                }
        }
        if (b->s->commands) {
                cmd = strdup_printf("%s/tap/%s/cmd", b->s->base, g->key);
                if (!cmd) {
                        b->error = -ENOMEM;
                        return;
                }
                e = device_entity(b, d, "stop", "button", "Stop pour", NULL, NULL);
                if (e) {
                        e->command_topic = strdup(cmd);
                        e->payload_press = "stop_flow";
                        if (!e->command_topic)
                                b->error = -ENOMEM;
                }
                if (c->has_clear_quarantine && c->has_quarantined) {
                        e = device_entity(b, d, "clear_quarantine", "button", "Clear quarantine", NULL, NULL);
                        if (e) {
                                e->command_topic = strdup(cmd);
                                e->payload_press = "clear_quarantine";
                                e->entity_category = "config";
                                if (!e->command_topic)
                                        b->error = -ENOMEM;
                        }
                }
        }
}

/* The board a sensor belongs to: the live board named like the part of the sensor's name before
 * the first dot ("kegboard" of "kegboard.thermo-..."). */
static const Group *sensor_board(const Model *m, const Group *sensor) {
        const char *dot = strchr(sensor->name, '.');

        if (!dot)
                return NULL;
        for (size_t i = 0; i < m->n_groups; i++) {
                const Group *g = m->groups[i];
                if (g->kind == GROUP_BOARD && g->live && strlen(g->name) == (size_t) (dot - sensor->name) &&
                    strncmp(g->name, sensor->name, (size_t) (dot - sensor->name)) == 0)
                        return g;
        }
        return NULL;
}

static void sensor_entity(Builder *b, Device *d, const Group *g) {
        _cleanup_(freep) char *t = topic_group(b->s, g), *name = NULL, *id = NULL;
        const char *dot = strchr(g->name, '.');
        Entity *e;

        name = strdup_printf("Temperature %s", dot ? dot + 1 : g->name);
        id = strdup_printf("temp_%s", g->key);
        if (!t || !name || !id) {
                b->error = -ENOMEM;
                return;
        }
        e = device_entity(b, d, id, "sensor", name, t, "{{ value_json.temp_c }}");
        if (!e)
                return;
        /* Unique id "<node id>_sensor_<key>", whichever device it is on. */
        free(e->unique_id);
        e->unique_id = strdup_printf("%s_sensor_%s", b->s->node_id, g->key);
        if (!e->unique_id)
                b->error = -ENOMEM;
        e->device_class = "temperature";
        e->state_class = "measurement";
        e->unit = "\xc2\xb0" "C";
        e->expire_after = 300;
        e->group = g->id;
}

static void write_device_block(JsonWriter *w, const Builder *b, const Device *d) {
        json_writer_object_begin(w);
        json_writer_key(w, "identifiers");
        json_writer_array_begin(w);
        json_writer_string(w, d->id);
        json_writer_array_end(w);
        if (!d->g) {
                char *name = strdup_printf("Kegbot %s", b->s->hostname);
                if (!name)
                        json_writer_set_error(w, -ENOMEM);
                json_writer_field_string(w, "name", name);
                free(name);
                json_writer_field_string(w, "manufacturer", "Kegbot");
                json_writer_field_string(w, "model", "kegbot-core");
                if (!isempty(b->m->core.version))
                        json_writer_field_string(w, "sw_version", b->m->core.version);
        } else if (d->g->kind == GROUP_BOARD) {
                json_writer_field_string(w, "name", d->g->name);
                json_writer_field_string(w, "manufacturer", "Kegbot");
                json_writer_field_string(w, "model", "Kegboard");
                if (d->g->firmware > 0) {
                        char fw[32];
                        snprintf(fw, sizeof fw, "firmware %u", d->g->firmware);
                        json_writer_field_string(w, "sw_version", fw);
                }
                json_writer_field_string(w, "via_device", b->s->node_id);
        } else {
                json_writer_field_string(w, "name", isempty(d->g->tap_name) ? d->g->name : d->g->tap_name);
                json_writer_field_string(w, "manufacturer", "Kegbot");
                json_writer_field_string(w, "model", "Tap");
                json_writer_field_string(w, "via_device", b->s->node_id);
        }
        json_writer_object_end(w);
}

static void write_origin(JsonWriter *w, const Builder *b) {
        json_writer_object_begin(w);
        json_writer_field_string(w, "name", "kegbot_mqtt");
        json_writer_field_string(w, "sw_version", b->s->version);
        json_writer_object_end(w);
}

/* The entity's own keys, in a fixed order (section 7.3 adds availability, qos, device, origin). */
static void write_entity_keys(JsonWriter *w, const Builder *b, const Entity *e) {
        const CoreInfo *c = &b->m->core;

        json_writer_field_string(w, "name", e->name);
        json_writer_field_string(w, "unique_id", e->unique_id);
        if (e->state_topic)
                json_writer_field_string(w, "state_topic", e->state_topic);
        if (e->command_topic) {
                json_writer_field_string(w, "command_topic", e->command_topic);
                json_writer_field_string(w, "payload_press", e->payload_press);
                json_writer_field_bool(w, "retain", false);
        }
        if (e->value_template)
                json_writer_field_string(w, "value_template", e->value_template);
        if (e->event_types) {
                json_writer_key(w, "event_types");
                json_writer_array_begin(w);
                json_writer_string(w, "pour");
                if (c->has_ghost_flow)
                        json_writer_string(w, "ghost_flow");
                if (c->has_pour_flagged)
                        json_writer_string(w, "kicked");
                json_writer_array_end(w);
        }
        if (e->device_class)
                json_writer_field_string(w, "device_class", e->device_class);
        if (e->state_class)
                json_writer_field_string(w, "state_class", e->state_class);
        if (e->unit)
                json_writer_field_string(w, "unit_of_measurement", e->unit);
        if (e->expire_after > 0)
                json_writer_field_int(w, "expire_after", e->expire_after);
        if (e->entity_category)
                json_writer_field_string(w, "entity_category", e->entity_category);
}

static int config_add(ConfigList *l, char *topic, const char *group, char *text) {
        Config *a;
        char *g = strdup(group);

        if (!topic || !text || !g) {
                free(topic);
                free(text);
                free(g);
                return -ENOMEM;
        }
        a = realloc(l->items, (l->n + 1) * sizeof(Config));
        if (!a) {
                free(topic);
                free(text);
                free(g);
                return -ENOMEM;
        }
        l->items = a;
        a[l->n++] = (Config) { .topic = topic, .group = g, .text = text };
        return 0;
}

static int build_component(Builder *b, ConfigList *l) {
        int r;

        for (size_t i = 0; i < b->n_devices; i++) {
                const Device *d = &b->devices[i];
                for (size_t j = 0; j < d->n_entities; j++) {
                        const Entity *e = &d->entities[j];
                        JsonWriter w = JSON_WRITER_INIT;
                        char *text = NULL;

                        json_writer_object_begin(&w);
                        write_entity_keys(&w, b, e);
                        json_writer_field_string(&w, "availability_topic", b->status_topic);
                        json_writer_field_int(&w, "qos", 1);
                        json_writer_key(&w, "device");
                        write_device_block(&w, b, d);
                        json_writer_key(&w, "origin");
                        write_origin(&w, b);
                        json_writer_object_end(&w);
                        r = json_writer_finish(&w, &text, NULL);
                        if (r < 0)
                                return r;
                        r = config_add(l, strdup_printf("%s/%s/%s/config", b->s->prefix, e->platform, e->unique_id),
                                       e->group, text);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static char **device_previous(const Builder *b, const Device *d) {
        return d->g ? d->g->components : b->m->node_components;
}

static int device_text(Builder *b, const Device *d, char **removed, char **ret) {
        JsonWriter w = JSON_WRITER_INIT;

        json_writer_object_begin(&w);
        json_writer_key(&w, "dev");
        write_device_block(&w, b, d);
        json_writer_key(&w, "o");
        write_origin(&w, b);
        json_writer_field_string(&w, "availability_topic", b->status_topic);
        json_writer_field_int(&w, "qos", 1);
        json_writer_key(&w, "cmps");
        json_writer_object_begin(&w);
        for (size_t j = 0; j < d->n_entities; j++) {
                const Entity *e = &d->entities[j];
                json_writer_key(&w, e->id);
                json_writer_object_begin(&w);
                json_writer_field_string(&w, "p", e->platform);
                write_entity_keys(&w, b, e);
                json_writer_object_end(&w);
        }
        STRV_FOREACH_PAIR(id, platform, removed) {
                json_writer_key(&w, id);
                json_writer_object_begin(&w);
                json_writer_field_string(&w, "p", platform);
                json_writer_object_end(&w);
        }
        json_writer_object_end(&w);
        json_writer_object_end(&w);
        return json_writer_finish(&w, ret, NULL);
}

static int build_device(Builder *b, ConfigList *l) {
        int r;

        for (size_t i = 0; i < b->n_devices; i++) {
                const Device *d = &b->devices[i];
                _cleanup_(strv_freep) char **current = NULL, **removed = NULL;
                size_t nc = 0, nr = 0;
                char *text = NULL;
                Config *cfg;

                for (size_t j = 0; j < d->n_entities; j++) {
                        r = strv_push(&current, &nc,
                                      strdup_printf("%s=%s", d->entities[j].id, d->entities[j].platform));
                        if (r < 0)
                                return r;
                }
                /* Entities published last time and gone now: one entry holding the platform. */
                STRV_FOREACH(p, device_previous(b, d)) {
                        const char *eq = strchr(*p, '=');
                        bool still = false;
                        if (!eq)
                                continue;
                        for (size_t j = 0; j < d->n_entities; j++)
                                if (strlen(d->entities[j].id) == (size_t) (eq - *p) &&
                                    strncmp(d->entities[j].id, *p, (size_t) (eq - *p)) == 0)
                                        still = true;
                        if (still)
                                continue;
                        if ((r = strv_push(&removed, &nr, strndup(*p, (size_t) (eq - *p)))) < 0 ||
                            (r = strv_extend(&removed, &nr, eq + 1)) < 0)
                                return r;
                }

                r = device_text(b, d, NULL, &text);
                if (r < 0)
                        return r;
                r = config_add(l, strdup_printf("%s/device/%s/config", b->s->prefix, d->id), d->group, text);
                if (r < 0)
                        return r;
                cfg = &l->items[l->n - 1];
                cfg->components = TAKE_PTR(current);
                if (removed) {
                        r = device_text(b, d, removed, &cfg->text_once);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int discovery_build(const Model *m, const Settings *s, ConfigList *ret) {
        Builder b = { .m = m, .s = s };
        ConfigList l = {};
        Device *node = NULL;
        int r = 0;

        assert_return(m && s && ret, -EINVAL);

        if (s->discovery == DISCOVERY_OFF) {
                *ret = l;
                return 0;
        }
        b.status_topic = topic_status(s);
        if (!b.status_topic) {
                r = -ENOMEM;
                goto out;
        }

        /* The node's device exists once the core has been seen (its entities depend on the mode). */
        if (m->core.seen) {
                node = builder_device(&b, NODE_GROUP, NULL, strdup(s->node_id));
                node_entities(&b, node);
        }
        for (size_t i = 0; i < m->n_groups; i++) {
                const Group *g = m->groups[i];
                Device *d;

                if (!g->live || g->kind == GROUP_SENSOR)
                        continue;
                d = builder_device(&b, g->id, g, strdup_printf("%s_%s_%s", s->node_id, group_kind_to_string(g->kind),
                                                              g->key));
                if (g->kind == GROUP_BOARD)
                        board_entities(&b, d, g);
                else
                        tap_entities(&b, d, g);
        }
        /* Temperatures go on their board's device, or the node's. Devices are looked up by index
         * after all are added (the array moves while it grows). */
        for (size_t i = 0; i < m->n_groups; i++) {
                const Group *g = m->groups[i], *board;
                Device *d = NULL;

                if (!g->live || g->kind != GROUP_SENSOR)
                        continue;
                board = sensor_board(m, g);
                for (size_t j = 0; j < b.n_devices; j++)
                        if (b.devices[j].g == board && (board || m->core.seen))
                                d = &b.devices[j];
                if (d)
                        sensor_entity(&b, d, g);
        }
        if (b.error < 0) {
                r = b.error;
                goto out;
        }

        r = s->discovery == DISCOVERY_DEVICE ? build_device(&b, &l) : build_component(&b, &l);
out:
        builder_done(&b);
        if (r < 0) {
                config_list_done(&l);
                return r;
        }
        *ret = l;
        return 0;
}

void config_list_done(ConfigList *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].topic);
                free(l->items[i].group);
                free(l->items[i].text);
                free(l->items[i].text_once);
                strv_free(l->items[i].components);
        }
        free(l->items);
        *l = (ConfigList) {};
}

bool discovery_topic_is_current(const Settings *s, const char *topic) {
        static const char *const platforms[] = { "sensor", "binary_sensor", "event", "button" };
        const char *p, *object, *end;

        if (s->discovery == DISCOVERY_OFF)
                return false;
        p = startswith(topic, s->prefix);
        if (!p || *p != '/')
                return false;
        p++;
        if (s->discovery == DISCOVERY_DEVICE) {
                object = startswith(p, "device/");
                if (!object)
                        return false;
        } else {
                object = NULL;
                for (size_t i = 0; i < ELEMENTSOF(platforms) && !object; i++) {
                        const char *q = startswith(p, platforms[i]);
                        if (q && *q == '/')
                                object = q + 1;
                }
                if (!object)
                        return false;
        }
        end = strchr(object, '/');
        if (!end || !streq(end, "/config"))
                return false;
        p = startswith(object, s->node_id);
        return p && (p == end || *p == '_');
}
