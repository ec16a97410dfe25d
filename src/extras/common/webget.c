/* curl multi on sd-event: every socket curl wants watched becomes an io source, curl's single
 * timeout becomes one timer source, and finished transfers are reaped after each action. */
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define LOG_COMPONENT "http"
#include "log.h"

#include "webget.h"

typedef struct WebRequest WebRequest;

struct WebRequest {
        WebClient *client;
        CURL *easy;
        struct curl_slist *headers;
        char *url;
        char *body;
        size_t size, allocated, max_body;
        bool too_large;
        char errbuf[CURL_ERROR_SIZE];
        WebCallback callback;
        void *userdata;
        WebRequest *next;
};

struct WebClient {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        char *key_header;
        long timeout_ms;
        WebRequest *requests;
        size_t n_requests;
};

static void web_request_free(WebRequest *q) {
        if (!q)
                return;
        if (q->easy) {
                if (q->client && q->client->multi)
                        (void) curl_multi_remove_handle(q->client->multi, q->easy);
                curl_easy_cleanup(q->easy);
        }
        curl_slist_free_all(q->headers);
        free(q->url);
        free(q->body);
        free(q);
}

static void web_request_unlink(WebClient *c, WebRequest *q) {
        for (WebRequest **p = &c->requests; *p; p = &(*p)->next)
                if (*p == q) {
                        *p = q->next;
                        c->n_requests--;
                        return;
                }
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userdata) {
        WebRequest *q = userdata;
        size_t n = size * nmemb;

        if (n > q->max_body || q->size > q->max_body - n) {
                q->too_large = true;
                return 0;       /* makes curl fail the transfer with CURLE_WRITE_ERROR */
        }
        if (q->size + n + 1 > q->allocated) {
                size_t a = MAX(q->allocated * 2, q->size + n + 1);
                char *b = realloc(q->body, a);
                if (!b)
                        return 0;
                q->body = b;
                q->allocated = a;
        }
        memcpy(q->body + q->size, data, n);
        q->size += n;
        q->body[q->size] = 0;
        return n;
}

static void web_client_reap(WebClient *c) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(c->multi, &left))) {
                WebRequest *q = NULL;
                long status = 0;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                (void) curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &q);
                if (!q)
                        continue;
                CURLcode code = msg->data.result;
                (void) curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);

                const char *error = NULL;
                if (q->too_large)
                        error = "response body too large";
                else if (code != CURLE_OK)
                        error = q->errbuf[0] ? q->errbuf : curl_easy_strerror(code);

                web_request_unlink(c, q);
                (void) curl_multi_remove_handle(c->multi, q->easy);

                WebResponse r = {
                        .url = q->url,
                        .status = error ? 0 : status,
                        .error = error,
                        .body = q->body ? q->body : "",
                        .size = q->size,
                };
                q->callback(c, &r, q->userdata);
                web_request_free(q);
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        WebClient *c = userdata;
        int action = 0, running;

        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;

        (void) curl_multi_socket_action(c->multi, fd, action, &running);
        web_client_reap(c);
        return 0;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        WebClient *c = userp;
        sd_event_source *s = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (s) {
                        sd_event_source_disable_unref(s);
                        (void) curl_multi_assign(c->multi, fd, NULL);
                }
                return 0;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;

        if (s) {
                r = sd_event_source_set_io_events(s, events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(s, SD_EVENT_ON);
        } else {
                r = sd_event_add_io(c->event, &s, fd, events, on_io, c);
                if (r >= 0)
                        (void) curl_multi_assign(c->multi, fd, s);
        }
        if (r < 0) {
                log_error_errno(r, "Cannot watch an HTTP socket: %m");
                return -1;
        }
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        WebClient *c = userdata;
        int running;

        (void) curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        web_client_reap(c);
        return 0;
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp) {
        WebClient *c = userp;
        uint64_t now = 0;
        int r;

        if (timeout_ms < 0)
                return c->timer ? sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0 : 0;

        (void) sd_event_now(c->event, CLOCK_MONOTONIC, &now);
        /* A zero timeout still goes through the loop, never recursing into curl from its callback. */
        uint64_t when = now + (uint64_t) timeout_ms * USEC_PER_MSEC;
        if (!c->timer) {
                r = sd_event_add_time(c->event, &c->timer, CLOCK_MONOTONIC, when, 0, on_timer, c);
                if (r < 0)
                        return -1;
        } else {
                r = sd_event_source_set_time(c->timer, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
                if (r < 0)
                        return -1;
        }
        return 0;
}

int web_client_new(WebClient **ret, sd_event *event, const char *api_key, double timeout_sec) {
        static bool curl_initialised = false;
        _cleanup_(web_client_freep) WebClient *c = NULL;

        if (!curl_initialised) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return log_error_errno(-EIO, "Cannot initialise libcurl.");
                curl_initialised = true;
        }

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(event);
        c->timeout_ms = (long) (timeout_sec * 1000.0);
        if (c->timeout_ms < 1)
                c->timeout_ms = 1;
        if (asprintf(&c->key_header, "X-Kegbot-Api-Key: %s", api_key ? api_key : "") < 0) {
                c->key_header = NULL;
                return -ENOMEM;
        }

        c->multi = curl_multi_init();
        if (!c->multi)
                return -ENOMEM;
        (void) curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        (void) curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        (void) curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
        (void) curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);

        *ret = TAKE_PTR(c);
        return 0;
}

WebClient *web_client_free(WebClient *c) {
        if (!c)
                return NULL;
        while (c->requests) {
                WebRequest *q = c->requests;
                c->requests = q->next;
                web_request_free(q);
        }
        if (c->multi)
                (void) curl_multi_cleanup(c->multi);
        c->multi = NULL;
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c->key_header);
        free(c);
        return NULL;
}

int web_client_get(WebClient *c, const char *url, bool api, size_t max_body, WebCallback cb, void *userdata) {
        WebRequest *q;
        int r = -ENOMEM;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->client = c;
        q->callback = cb;
        q->userdata = userdata;
        q->max_body = max_body;
        q->url = strdup(url);
        q->easy = curl_easy_init();
        if (!q->url || !q->easy)
                goto fail;

        if (api) {
                struct curl_slist *h = curl_slist_append(NULL, c->key_header);
                if (!h)
                        goto fail;
                q->headers = h;
                h = curl_slist_append(q->headers, "Accept: application/json");
                if (!h)
                        goto fail;
                q->headers = h;
        }

        if (curl_easy_setopt(q->easy, CURLOPT_URL, q->url) != CURLE_OK) {
                r = -EINVAL;
                goto fail;
        }
        (void) curl_easy_setopt(q->easy, CURLOPT_PRIVATE, q);
        (void) curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, q->headers);
        (void) curl_easy_setopt(q->easy, CURLOPT_USERAGENT, "kegbot-core/" KEGBOT_VERSION);
        (void) curl_easy_setopt(q->easy, CURLOPT_WRITEFUNCTION, on_write);
        (void) curl_easy_setopt(q->easy, CURLOPT_WRITEDATA, q);
        (void) curl_easy_setopt(q->easy, CURLOPT_ERRORBUFFER, q->errbuf);
        (void) curl_easy_setopt(q->easy, CURLOPT_TIMEOUT_MS, c->timeout_ms);
        (void) curl_easy_setopt(q->easy, CURLOPT_NOSIGNAL, 1L);
        (void) curl_easy_setopt(q->easy, CURLOPT_FOLLOWLOCATION, 0L);
        (void) curl_easy_setopt(q->easy, CURLOPT_PROTOCOLS_STR, "http,https");

        if (curl_multi_add_handle(c->multi, q->easy) != CURLM_OK) {
                r = -EIO;
                goto fail;
        }
        q->next = c->requests;
        c->requests = q;
        c->n_requests++;
        return 0;

fail:
        q->client = NULL;
        web_request_free(q);
        return r;
}

size_t web_client_n_in_flight(const WebClient *c) {
        return c->n_requests;
}

char *web_api_url(const char *base, const char *path) {
        size_t n = strlen(base);
        char *s;

        while (n > 0 && base[n - 1] == '/')
                n--;
        if (asprintf(&s, "%.*s/%s", (int) n, base, path) < 0)
                return NULL;
        return s;
}

static int reason(char **ret_reason, int error, const char *format, ...) _printf_(3, 4);
static int reason(char **ret_reason, int error, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        if (vasprintf(ret_reason, format, ap) < 0)
                *ret_reason = NULL;
        va_end(ap);
        return error;
}

int web_api_parse(const WebResponse *r, json_t **ret_root, char **ret_reason) {
        json_error_t jerr;
        json_t *root;

        *ret_root = NULL;
        *ret_reason = NULL;

        if (r->error)
                return reason(ret_reason, -EIO, "%s", r->error);
        if (r->status == 404)
                return reason(ret_reason, -ENOENT, "HTTP 404 for %s", r->url);
        if (r->status == 410)
                return reason(ret_reason, -EPFNOSUPPORT, "HTTP 410 for %s", r->url);
        if (r->status != 200)
                return reason(ret_reason, -EIO, "HTTP %ld for %s", r->status, r->url);

        root = json_loadb(r->body, r->size, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return reason(ret_reason, -EIO, "invalid JSON from %s: %s", r->url, jerr.text);
        if (!json_is_object(root)) {
                json_decref(root);
                return reason(ret_reason, -EIO, "unexpected answer from %s (not an object)", r->url);
        }
        *ret_root = root;
        return 0;
}

json_t *web_api_objects(json_t *root, const char *legacy_key) {
        json_t *v;

        if (!json_is_object(root))
                return NULL;
        v = json_object_get(root, "objects");
        if (json_is_array(v))
                return v;
        if (!legacy_key)
                return NULL;
        v = json_object_get(root, legacy_key);
        if (json_is_array(v))
                return v;
        v = json_object_get(json_object_get(root, "object"), legacy_key);
        if (json_is_array(v))
                return v;
        return NULL;
}
