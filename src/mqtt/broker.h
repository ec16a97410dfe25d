/* The MQTT connection of kegbot_mqtt (mqtt-home-assistant.md section 5): libmosquitto driven by the
 * sd-event loop through its external-loop API (mosquitto_loop_read / _write / _misc on an io
 * source and a 1 s timer), with its own connect timeout and reconnect backoff. Never libmosquitto's
 * threaded or blocking loops. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Broker Broker;

typedef struct BrokerConfig {
        const char *host;
        int port;
        const char *client_id;
        const char *username;           /* "" = no credentials */
        const char *password;           /* NULL or "" = none */
        bool tls;
        const char *ca_file, *ca_path;  /* "" = none; neither: the system's CA store */
        const char *cert_file, *key_file;
        int keepalive;                  /* seconds */
        const char *will_topic;         /* "<base>/status": the last will "offline" */
} BrokerConfig;

typedef struct BrokerCallbacks {
        /* A CONNACK accepted the connection. Called outside libmosquitto's callbacks, after the
         * packets libmosquitto held over from an earlier connection were queued again, so what is
         * published now goes out after them. */
        void (*connected)(Broker *b, void *userdata);
        /* A connection that had been accepted ended. */
        void (*disconnected)(Broker *b, void *userdata);
        /* The retry schedule changed (STATUS= lines). */
        void (*state_changed)(Broker *b, void *userdata);
        /* Called from inside libmosquitto: the callee may publish and subscribe (queued), nothing else. */
        void (*message)(Broker *b, const char *topic, const void *payload, size_t len, bool retain, void *userdata);
        /* The PUBACK of a QoS 1 message (after the libmosquitto call that read it). */
        void (*published)(Broker *b, int mid, void *userdata);
} BrokerCallbacks;

/* mosquitto_lib_init(), mosquitto_new() and the set-up of section 5.1. Errors are logged; a
 * negative errno means libmosquitto could not be set up (exit 1). Nothing is connected yet. */
int broker_new(Broker **ret, sd_event *event, const BrokerConfig *config, const BrokerCallbacks *callbacks,
               void *userdata);
/* mosquitto_destroy(), mosquitto_lib_cleanup(). */
Broker *broker_free(Broker *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(Broker *, broker_free);

/* The first connection attempt; later ones follow by themselves. */
int broker_start(Broker *b);

bool broker_is_connected(const Broker *b);
/* Seconds until the next attempt while waiting for one, else 0. */
unsigned broker_retry_in(const Broker *b);
/* "host:port" */
const char *broker_address(const Broker *b);

/* QoS 1. -ENOTCONN while not connected; *ret_mid (optional) identifies the PUBACK. */
int broker_publish(Broker *b, const char *topic, const void *payload, size_t len, bool retain, int *ret_mid);
int broker_subscribe(Broker *b, const char *topic);

/* Orderly end: a clean DISCONNECT (the broker drops the last will), written out at once; no
 * further attempts. */
void broker_disconnect(Broker *b);
