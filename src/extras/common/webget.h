/* Small non-blocking HTTP GET client for the accessory programs (lcd_daemon, sound_server): libcurl's
 * multi interface driven by an sd-event loop, with the Kegbot Server API conventions the extras need
 * (kegbot-server-api.md sections 3 and 5.8): endpoint URLs, the key header, the JSON envelope. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define WEB_API_BODY_MAX (4U * 1024U * 1024U)

typedef struct WebClient WebClient;

typedef struct WebResponse {
        const char *url;
        long status;            /* HTTP status, 0 when no answer arrived */
        const char *error;      /* transport failure (connect, timeout, too large), or NULL */
        const char *body;       /* NUL-terminated, size bytes */
        size_t size;
} WebResponse;

/* Called exactly once per started request (never after web_client_free()); may start new ones. */
typedef void (*WebCallback)(WebClient *c, const WebResponse *r, void *userdata);

/* api_key: sent as X-Kegbot-Api-Key with requests made for the API (also when empty);
 * timeout_sec: whole-request limit (--api_timeout). */
int web_client_new(WebClient **ret, sd_event *event, const char *api_key, double timeout_sec);
WebClient *web_client_free(WebClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(WebClient *, web_client_free);

/* GET 'url'. api: add the API headers (key, Accept: application/json). A body larger than
 * max_body fails the request with an error. Redirects are not followed. */
int web_client_get(WebClient *c, const char *url, bool api, size_t max_body, WebCallback cb, void *userdata);
size_t web_client_n_in_flight(const WebClient *c);

/* Endpoint URL: base with trailing '/' removed, '/', path (already escaped). */
char *web_api_url(const char *base, const char *path);

/* Reads an API answer: 200 with a JSON object body -> 0 and *ret_root (caller json_decref()s).
 * Otherwise a negative errno and a one-line reason in *ret_reason (caller frees):
 * -ENOENT 404, -EPFNOSUPPORT 410 (the endpoint is gone on Kegbot Server 2.0), -EIO anything else. */
int web_api_parse(const WebResponse *r, json_t **ret_root, char **ret_reason);

/* The envelope's list: "objects", or (very old servers) 'legacy_key' inside "object" or the root;
 * NULL when there is none. Borrowed from root. */
json_t *web_api_objects(json_t *root, const char *legacy_key);
