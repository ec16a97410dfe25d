/* Non-blocking client for Kegbot Server's legacy HTTP API (kegbot-server-api.md): libcurl's multi
 * interface driven by sd-event (sockets -> io sources, curl's timer -> one timer source), the URL,
 * header and form rules of section 3, and the reduction of every answer to an outcome (section 4.3). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define API_BODY_MAX (4U * 1024U * 1024U)

typedef enum ApiOutcome {
        API_OK,
        API_NOT_FOUND,
        API_REJECTED,
        API_UNAUTHORIZED,
        API_TRANSIENT,
} ApiOutcome;

const char *api_outcome_to_string(ApiOutcome o);

typedef struct ApiResult {
        ApiOutcome outcome;
        long http_status;               /* 0 = no HTTP answer */
        json_t *object;                 /* the envelope's "object", or NULL (borrowed) */
        json_t *objects;                /* the envelope's "objects", or NULL (borrowed) */
        char *error_code;               /* "NotFoundError", ...; NULL if none */
        char *error_message;            /* string message, or the compact JSON of an object message */
        char *reason;                   /* one line for logs: what went wrong (NULL for API_OK) */
        json_t *root;                   /* owned */
} ApiResult;

void api_result_done(ApiResult *r);

/* Reduces an HTTP answer to an outcome; 'curl_error' is non-NULL for a transport failure (then
 * status and body are ignored). Never trusts the body. */
void api_classify(long http_status, const char *body, size_t len, const char *curl_error, ApiResult *ret);

/* Every byte outside A-Z a-z 0-9 . _ - as %XX (uppercase hex). */
char *api_escape(const char *s);

/* application/x-www-form-urlencoded body, fields in the order added. */
typedef struct ApiForm {
        char *buf;
        size_t len, cap;
        bool oom;
} ApiForm;

void api_form_add(ApiForm *f, const char *key, const char *value);
void api_form_addf(ApiForm *f, const char *key, const char *format, ...) _printf_(3, 4);
void api_form_done(ApiForm *f);

typedef struct ApiClient ApiClient;
typedef struct ApiRequest ApiRequest;

/* Called exactly once per request that was started, unless it is cancelled first. The result is
 * valid during the call only. The callback may start new requests. */
typedef void (*ApiCallback)(ApiClient *c, const ApiResult *r, void *userdata);

/* base_url: e.g. "http://localhost:8000/api/" (trailing slashes are dropped). timeout_sec: the
 * whole-request limit (--api_timeout). */
int api_client_new(ApiClient **ret, sd_event *event, const char *base_url, const char *api_key, double timeout_sec);
ApiClient *api_client_free(ApiClient *c);       /* cancels everything in flight, no callbacks */
DEFINE_TRIVIAL_CLEANUP_FUNC(ApiClient *, api_client_free);

int api_client_set_key(ApiClient *c, const char *api_key);
const char *api_client_get_base_url(ApiClient *c);

/* path: relative to the base, segments already escaped (api_escape). form: NULL for GET. On success
 * *ret_req (optional) identifies the request for api_request_cancel() until its callback ran. */
int api_client_get(ApiClient *c, const char *path, ApiCallback cb, void *userdata, ApiRequest **ret_req);
int api_client_post(ApiClient *c, const char *path, const ApiForm *form, ApiCallback cb, void *userdata,
                    ApiRequest **ret_req);
/* An absolute URL and any body/content type (tests, control endpoints). */
int api_client_request(ApiClient *c, const char *method, const char *url, const char *content_type,
                       const char *body, ApiCallback cb, void *userdata, ApiRequest **ret_req);

/* Aborts a request in flight; its callback is never called. */
void api_request_cancel(ApiRequest *r);
size_t api_client_n_in_flight(ApiClient *c);
