/* The one HTTP client of every program: libcurl's multi interface driven by an sd-event loop. Each
 * socket curl wants watched becomes an io source, curl's one timeout a timer source, and finished
 * transfers are reported through a callback; nothing blocks. libcurl is dlopen()ed by
 * http_client_new() (curl-dl.h), so a process that never creates a client never maps it.
 * What a particular server expects (URLs, headers, answers) is the caller's business (api.h). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define HTTP_RESPONSE_MAX_DEFAULT (4U * 1024U * 1024U)

typedef struct HttpClient HttpClient;
typedef struct HttpRequest HttpRequest;

typedef struct HttpRequestSpec {
        const char *method;                     /* NULL or "GET"; "POST"; any other verb */
        const char *url;                        /* absolute http:// or https:// URL */
        const char * const *headers;            /* NULL-terminated "Name: value" lines ("Name;" sends an
                                                 * empty value), or NULL */
        const char *body;                       /* request body (not with GET); NULL = empty */
        size_t body_size;
        size_t max_response;                    /* larger answers fail the request; 0 = the default */
        uint64_t timeout_usec;                  /* the whole request: connect, send, receive; > 0 */
} HttpRequestSpec;

typedef struct HttpResponse {
        const char *url;
        long status;                            /* HTTP status; 0 when no complete answer arrived */
        const char *error;                      /* why not (connect, DNS, TLS, timeout, too large), or NULL */
        bool not_sent;                          /* the request never reached the server: no connection
                                                 * (refused, unreachable, DNS), so it had no effect there */
        const char *body;                       /* NUL-terminated, size bytes ("" when empty) */
        size_t size;
} HttpResponse;

/* Called exactly once per started request, unless it is cancelled or its client goes away first.
 * The response is valid during the call only. The callback may start new requests and cancel other
 * ones (not its own: it is finished), and may drop the last reference to the client (then no
 * further callback of that client runs). */
typedef void (*HttpCallback)(HttpClient *c, const HttpResponse *r, void *userdata);

/* A timeout given in seconds (--api_timeout) as HttpRequestSpec.timeout_usec: at least 1 us, at most
 * 10^15 us (31 years), so that no value converts out of range. */
static inline uint64_t http_timeout_usec(double sec) {
        double usec = sec * (double) USEC_PER_SEC;
        return !(usec >= 1.0) ? 1 : usec >= 1e15 ? (uint64_t) 1e15 : (uint64_t) usec;
}

/* Loads libcurl on first use: fails with -EOPNOTSUPP (and an error logged) without it. */
int http_client_new(HttpClient **ret, sd_event *event);
HttpClient *http_client_ref(HttpClient *c);
/* The last reference cancels every request in flight, without callbacks. */
HttpClient *http_client_unref(HttpClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpClient *, http_client_unref);

/* Starts a request. Requests other than GET never go out on a reused connection: curl would
 * silently resend one whose connection died, and a POST the server already acted on would then
 * count twice. Redirects are not followed; only http and https are spoken. On success *ret_req
 * (optional) identifies the request for http_request_cancel() until its callback runs. */
int http_client_start(HttpClient *c, const HttpRequestSpec *spec, HttpCallback callback, void *userdata,
                      HttpRequest **ret_req);
size_t http_client_n_in_flight(const HttpClient *c);

/* Aborts a request in flight; its callback is never called. NULL is fine. */
void http_request_cancel(HttpRequest *r);
