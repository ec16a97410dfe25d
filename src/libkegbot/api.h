/* Client side of Kegbot Server's legacy HTTP API (kegbot-server-api.md), on the HTTP client of
 * http.h: endpoint URLs, the key header and form bodies of section 3, the response envelope of
 * section 4, and the reduction of every answer to one outcome (section 4.3). Used by the core's
 * server backend and by the extras that poll the server. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "http.h"
#include "macro.h"
#include "util-strbuf.h"

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
        bool not_sent;                  /* the request never reached the server (HttpResponse.not_sent) */
        json_t *object;                 /* the envelope's "object", or NULL (borrowed from root) */
        json_t *objects;                /* the envelope's "objects", or NULL (borrowed from root) */
        char *error_code;               /* "NotFoundError", ...; NULL if none (escaped, see api_classify()) */
        char *error_message;            /* string message, or the compact JSON of an object message (same) */
        char *reason;                   /* one line for logs: what went wrong (NULL for API_OK) */
        json_t *root;                   /* the parsed body, if it was JSON (owned) */
} ApiResult;

void api_result_done(ApiResult *r);

/* Parses the envelope of an HTTP answer and reduces it to an outcome. 'transport_error' is
 * non-NULL when no complete answer arrived (then status and body are ignored). Never trusts the
 * body: anything is accepted. The texts in *ret (code, message, reason) are cut to a few hundred
 * bytes and escaped for log lines (escape_for_log()): one line of valid UTF-8. */
void api_classify(long http_status, const char *body, size_t len, const char *transport_error, ApiResult *ret);

/* The list an answer carries: "objects" of an ok answer or, from servers of the 0.9 era, an array
 * named 'legacy_key' in the root or in "object" of any 2xx JSON answer. NULL if none. Borrowed. */
json_t *api_result_list(const ApiResult *r, const char *legacy_key);

/* Every byte outside A-Z a-z 0-9 . _ - as %XX (uppercase hex), for path segments and form fields. */
char *api_escape(const char *s);

/* An application/x-www-form-urlencoded body, fields in the order added. Zero-initialise
 * (ApiForm f = {}); an allocation failure is remembered and reported by api_form_body(). */
typedef struct ApiForm {
        StrBuf body;
} ApiForm;

void api_form_add(ApiForm *f, const char *key, const char *value);
void api_form_addf(ApiForm *f, const char *key, const char *format, ...) _printf_(3, 4);
/* The encoded body so far (valid until the next add), or NULL after an allocation failure. */
const char *api_form_body(const ApiForm *f);
void api_form_done(ApiForm *f);

typedef struct ApiClient ApiClient;
typedef struct ApiRequest ApiRequest;

/* Called exactly once per request that was started, unless it is cancelled or its client freed
 * first. The result is valid during the call only. The callback may start new requests. */
typedef void (*ApiCallback)(ApiClient *c, const ApiResult *r, void *userdata);

/* base_url: e.g. "http://localhost:8000/api/" (trailing slashes are dropped); api_key: sent on
 * every request, also when empty; timeout_sec: the whole-request limit (--api_timeout). Takes a
 * reference on 'http'. */
int api_client_new(ApiClient **ret, HttpClient *http, const char *base_url, const char *api_key,
                   double timeout_sec);
ApiClient *api_client_free(ApiClient *c);       /* cancels its requests in flight, no callbacks */
DEFINE_TRIVIAL_CLEANUP_FUNC(ApiClient *, api_client_free);

int api_client_set_key(ApiClient *c, const char *api_key);
const char *api_client_get_base_url(const ApiClient *c);
size_t api_client_n_in_flight(const ApiClient *c);

/* path: relative to the base, segments already escaped (api_escape()). On success *ret_req
 * (optional) identifies the request for api_request_cancel() until its callback runs. */
int api_client_get(ApiClient *c, const char *path, ApiCallback cb, void *userdata, ApiRequest **ret_req);
int api_client_post(ApiClient *c, const char *path, const ApiForm *form, ApiCallback cb, void *userdata,
                    ApiRequest **ret_req);

/* Aborts a request in flight; its callback is never called. NULL is fine. */
void api_request_cancel(ApiRequest *r);
