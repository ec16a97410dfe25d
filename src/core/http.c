/* Kegbot Server API client on curl multi + sd-event: see http.h. */
#include <stdarg.h>
#include <sys/epoll.h>

#define LOG_COMPONENT "api-backend"
#include "log.h"

#include "curl-dl.h"
#include "http.h"

#ifndef KEGBOT_VERSION
#define KEGBOT_VERSION "0"
#endif

struct ApiRequest {
        ApiClient *client;
        ApiRequest *prev, *next;
        CURL *easy;
        struct curl_slist *headers;
        char *body;                     /* received */
        size_t body_len;
        bool oversize;
        char errbuf[CURL_ERROR_SIZE];
        ApiCallback cb;
        void *userdata;
};

struct ApiClient {
        sd_event *event;
        sd_event_source *timer;
        CURLM *multi;
        char *base_url;                 /* without trailing slashes */
        char *api_key;
        long timeout_ms;
        ApiRequest *requests;
        size_t n_requests;
};

const char *api_outcome_to_string(ApiOutcome o) {
        switch (o) {
        case API_OK: return "ok";
        case API_NOT_FOUND: return "not_found";
        case API_REJECTED: return "rejected";
        case API_UNAUTHORIZED: return "unauthorized";
        case API_TRANSIENT: return "transient";
        }
        return "unknown";
}

void api_result_done(ApiResult *r) {
        free(r->error_code);
        free(r->error_message);
        free(r->reason);
        json_decref(r->root);
        *r = (ApiResult) {};
}

_printf_(2, 3) static void set_reason(ApiResult *r, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        free(r->reason);
        r->reason = s;
}

/* Logs may print server text: keep it to one reasonably short line. */
static char *sanitize(const char *s) {
        size_t l = strlen(s), max = 512;
        char *o = malloc(MIN(l, max) + 4);
        size_t j = 0;

        if (!o)
                return NULL;
        for (size_t i = 0; i < l && j < max; i++)
                o[j++] = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
        if (l > max) {
                memcpy(o + j, "...", 3);
                j += 3;
        }
        o[j] = 0;
        return o;
}

void api_classify(long status, const char *body, size_t len, const char *curl_error, ApiResult *ret) {
        ApiResult r = { .http_status = status };
        json_t *meta = NULL, *error = NULL;
        bool envelope = false;

        if (curl_error) {
                r.http_status = 0;
                r.outcome = API_TRANSIENT;
                set_reason(&r, "%s", curl_error);
                *ret = r;
                return;
        }

        if (body && len > 0 && len <= API_BODY_MAX)
                r.root = json_loadb(body, len, 0, NULL);
        if (json_is_object(r.root)) {
                meta = json_object_get(r.root, "meta");
                json_t *o = json_object_get(r.root, "object");
                json_t *os = json_object_get(r.root, "objects");
                error = json_object_get(r.root, "error");
                if (json_is_object(meta) && (o || os || json_is_object(error))) {
                        envelope = true;
                        r.object = o;
                        r.objects = os;
                }
        }
        if (envelope && json_is_object(error)) {
                json_t *code = json_object_get(error, "code");
                json_t *msg = json_object_get(error, "message");
                if (json_is_string(code))
                        r.error_code = sanitize(json_string_value(code));
                if (json_is_string(msg))
                        r.error_message = sanitize(json_string_value(msg));
                else if (msg && !json_is_null(msg)) {
                        char *dump = json_dumps(msg, JSON_COMPACT | JSON_SORT_KEYS);
                        if (dump) {
                                r.error_message = sanitize(dump);
                                free(dump);
                        }
                }
        } else
                error = NULL;

        const char *code = r.error_code ?: "?", *msg = r.error_message ?: "";
        if (status == 401) {
                r.outcome = API_UNAUTHORIZED;
                if (error)
                        set_reason(&r, "HTTP 401 %s: %s", code, msg);
                else
                        set_reason(&r, "HTTP 401 (not a Kegbot API answer)");
        } else if (status >= 500 || status == 408 || status == 429) {
                r.outcome = API_TRANSIENT;
                if (error)
                        set_reason(&r, "HTTP %ld %s: %s", status, code, msg);
                else
                        set_reason(&r, "HTTP %ld with a non-JSON answer", status);
        } else if (!envelope) {
                r.outcome = API_TRANSIENT;
                set_reason(&r, "HTTP %ld with a non-JSON or envelope-less answer", status);
        } else if (status >= 200 && status < 300) {
                if (!error && (r.object || r.objects))
                        r.outcome = API_OK;
                else {
                        r.outcome = API_TRANSIENT;
                        set_reason(&r, "HTTP %ld with an error envelope %s: %s", status, code, msg);
                }
        } else if (status >= 400 && status < 500 && error) {
                r.outcome = status == 404 ? API_NOT_FOUND : API_REJECTED;
                set_reason(&r, "HTTP %ld %s: %s", status, code, msg);
        } else {
                r.outcome = API_TRANSIENT;
                set_reason(&r, "unexpected HTTP %ld answer", status);
        }
        if (r.outcome != API_OK && !r.reason)
                r.outcome = API_TRANSIENT;      /* out of memory for the text: treat as transient */
        *ret = r;
}

static bool is_unreserved(unsigned char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
}

char *api_escape(const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        size_t l = strlen(s);
        char *o = malloc(l * 3 + 1), *p = o;

        if (!o)
                return NULL;
        for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
                if (is_unreserved(*c))
                        *p++ = (char) *c;
                else {
                        *p++ = '%';
                        *p++ = hex[*c >> 4];
                        *p++ = hex[*c & 15];
                }
        }
        *p = 0;
        return o;
}

static void form_append(ApiForm *f, const char *s) {
        size_t l = strlen(s);
        if (f->oom)
                return;
        if (f->len + l + 1 > f->cap) {
                size_t cap = MAX(f->cap * 2, f->len + l + 64);
                char *n = realloc(f->buf, cap);
                if (!n) {
                        f->oom = true;
                        return;
                }
                f->buf = n;
                f->cap = cap;
        }
        memcpy(f->buf + f->len, s, l + 1);
        f->len += l;
}

void api_form_add(ApiForm *f, const char *key, const char *value) {
        _cleanup_(freep) char *k = api_escape(key), *v = api_escape(value ?: "");
        if (!k || !v) {
                f->oom = true;
                return;
        }
        if (f->len > 0)
                form_append(f, "&");
        form_append(f, k);
        form_append(f, "=");
        form_append(f, v);
}

void api_form_addf(ApiForm *f, const char *key, const char *format, ...) {
        va_list ap;
        char *v = NULL;

        va_start(ap, format);
        if (vasprintf(&v, format, ap) < 0)
                v = NULL;
        va_end(ap);
        if (!v) {
                f->oom = true;
                return;
        }
        api_form_add(f, key, v);
        free(v);
}

void api_form_done(ApiForm *f) {
        free(f->buf);
        *f = (ApiForm) {};
}

/* ---------------------------------------------------------------- curl <-> sd-event */

static void check_done(ApiClient *c);

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ApiClient *c = userdata;
        int action = 0, running;

        if (revents & EPOLLIN)
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                action |= CURL_CSELECT_ERR;
        (void) curl_multi_socket_action(c->multi, fd, action, &running);
        check_done(c);
        return 0;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        ApiClient *c = userp;
        sd_event_source *src = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (src) {
                        (void) curl_multi_assign(c->multi, fd, NULL);
                        sd_event_source_disable_unref(src);
                }
                return 0;
        }
        if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
                events |= EPOLLIN;
        if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
                events |= EPOLLOUT;

        if (src) {
                r = sd_event_source_set_io_events(src, events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(src, SD_EVENT_ON);
        } else {
                r = sd_event_add_io(c->event, &src, fd, events, on_io, c);
                if (r >= 0) {
                        (void) sd_event_source_set_description(src, "api-socket");
                        (void) curl_multi_assign(c->multi, fd, src);
                }
        }
        if (r < 0) {
                log_error_errno(r, "Failed to watch an HTTP socket: %m");
                return -1;
        }
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ApiClient *c = userdata;
        int running;

        (void) curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(c);
        return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        ApiClient *c = userp;
        uint64_t now;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        if (sd_event_now(c->event, CLOCK_MONOTONIC, &now) < 0)
                return -1;
        if (sd_event_source_set_time(c->timer, now + (uint64_t) timeout_ms * USEC_PER_MSEC) < 0 ||
            sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT) < 0)
                return -1;
        return 0;
}

static void request_free(ApiRequest *r) {
        ApiClient *c = r->client;

        if (r->prev)
                r->prev->next = r->next;
        else
                c->requests = r->next;
        if (r->next)
                r->next->prev = r->prev;
        c->n_requests--;
        if (r->easy) {
                (void) curl_multi_remove_handle(c->multi, r->easy);
                curl_easy_cleanup(r->easy);
        }
        curl_slist_free_all(r->headers);
        free(r->body);
        free(r);
}

static void check_done(ApiClient *c) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(c->multi, &left))) {
                ApiRequest *r = NULL;
                ApiResult res;
                long status = 0;
                char errtext[CURL_ERROR_SIZE + 64];
                const char *err = NULL;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                (void) curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r);
                if (!r)
                        continue;
                CURLcode code = msg->data.result;
                (void) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
                if (r->oversize)
                        err = "response body over 4 MiB";
                else if (code != CURLE_OK) {
                        snprintf(errtext, sizeof errtext, "%s%s%s", curl_easy_strerror(code),
                                 r->errbuf[0] ? ": " : "", r->errbuf);
                        err = errtext;
                }
                api_classify(status, r->body, r->body_len, err, &res);

                ApiCallback cb = r->cb;
                void *ud = r->userdata;
                request_free(r);
                if (cb)
                        cb(c, &res, ud);
                api_result_done(&res);
        }
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
        ApiRequest *r = userdata;
        size_t n = size * nmemb;

        if (r->body_len + n > API_BODY_MAX) {
                r->oversize = true;
                return 0;
        }
        char *b = realloc(r->body, r->body_len + n + 1);
        if (!b)
                return 0;
        memcpy(b + r->body_len, ptr, n);
        r->body = b;
        r->body_len += n;
        r->body[r->body_len] = 0;
        return n;
}

int api_client_new(ApiClient **ret, sd_event *event, const char *base_url, const char *api_key, double timeout_sec) {
        static bool curl_ready = false;
        _cleanup_(api_client_freep) ApiClient *c = NULL;
        int r;

        if (!curl_ready) {
                r = curl_dlopen();
                if (r < 0)
                        return r;
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return -EIO;
                curl_ready = true;
        }
        c = calloc(1, sizeof(ApiClient));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(event);
        c->base_url = strdup(base_url);
        c->api_key = strdup(api_key ?: "");
        if (!c->base_url || !c->api_key)
                return -ENOMEM;
        size_t l = strlen(c->base_url);
        while (l > 0 && c->base_url[l - 1] == '/')
                c->base_url[--l] = 0;
        c->timeout_ms = (long) (timeout_sec * 1000.0);
        if (c->timeout_ms < 1)
                c->timeout_ms = 1;

        /* Accuracy 1 us: the default 250 ms slack would delay every transfer step curl schedules. */
        r = sd_event_add_time(event, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 1, on_timer, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->timer, "api-timer");

        c->multi = curl_multi_init();
        if (!c->multi)
                return -ENOMEM;
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
        curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);

        *ret = TAKE_PTR(c);
        return 0;
}

ApiClient *api_client_free(ApiClient *c) {
        if (!c)
                return NULL;
        while (c->requests)
                request_free(c->requests);
        if (c->multi)
                curl_multi_cleanup(c->multi);
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c->base_url);
        free(c->api_key);
        free(c);
        return NULL;
}

int api_client_set_key(ApiClient *c, const char *api_key) {
        char *k = strdup(api_key ?: "");
        if (!k)
                return -ENOMEM;
        free(c->api_key);
        c->api_key = k;
        return 0;
}

const char *api_client_get_base_url(ApiClient *c) {
        return c->base_url;
}

size_t api_client_n_in_flight(ApiClient *c) {
        return c->n_requests;
}

void api_request_cancel(ApiRequest *r) {
        if (r)
                request_free(r);
}

int api_client_request(ApiClient *c, const char *method, const char *url, const char *content_type,
                       const char *body, ApiCallback cb, void *userdata, ApiRequest **ret_req) {
        ApiRequest *r;
        _cleanup_(freep) char *keyhdr = NULL;
        struct curl_slist *h;

        r = calloc(1, sizeof(ApiRequest));
        if (!r)
                return -ENOMEM;
        r->client = c;
        r->cb = cb;
        r->userdata = userdata;
        r->next = c->requests;
        if (c->requests)
                c->requests->prev = r;
        c->requests = r;
        c->n_requests++;

        r->easy = curl_easy_init();
        if (!r->easy)
                goto oom;
        if (asprintf(&keyhdr, "X-Kegbot-Api-Key: %s", c->api_key) < 0) {
                keyhdr = NULL;
                goto oom;
        }
        /* The key goes on every request, also when empty (curl drops "Name:" headers, "Name;" sends it empty). */
        if (isempty(c->api_key)) {
                free(keyhdr);
                keyhdr = strdup("X-Kegbot-Api-Key;");
                if (!keyhdr)
                        goto oom;
        }
        const char *hdrs[] = { keyhdr, "Accept: application/json", "Expect:", NULL };
        for (size_t i = 0; hdrs[i]; i++) {
                h = curl_slist_append(r->headers, hdrs[i]);
                if (!h)
                        goto oom;
                r->headers = h;
        }
        if (content_type) {
                _cleanup_(freep) char *ct = NULL;
                if (asprintf(&ct, "Content-Type: %s", content_type) < 0)
                        goto oom;
                h = curl_slist_append(r->headers, ct);
                if (!h)
                        goto oom;
                r->headers = h;
        }

        curl_easy_setopt(r->easy, CURLOPT_URL, url);
        curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
        curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
        curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "kegbot-core/" KEGBOT_VERSION);
        curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
        curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, c->timeout_ms);
        curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
        curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
        curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
        if (streq(method, "POST")) {
                curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
                curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long) strlen(body ?: ""));
                curl_easy_setopt(r->easy, CURLOPT_COPYPOSTFIELDS, body ?: "");
                /* Never on a reused connection: curl would silently resend a POST whose connection
                 * died, hiding a possible duplicate from our own accounting. */
                curl_easy_setopt(r->easy, CURLOPT_FRESH_CONNECT, 1L);
                curl_easy_setopt(r->easy, CURLOPT_FORBID_REUSE, 1L);
        } else if (!streq(method, "GET"))
                curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, method);

        if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK)
                goto oom;
        if (ret_req)
                *ret_req = r;
        return 0;
oom:
        request_free(r);
        return -ENOMEM;
}

static int api_client_call(ApiClient *c, const char *method, const char *path, const ApiForm *form,
                           ApiCallback cb, void *userdata, ApiRequest **ret_req) {
        _cleanup_(freep) char *url = NULL;

        if (form && form->oom)
                return -ENOMEM;
        if (asprintf(&url, "%s/%s", c->base_url, path) < 0)
                return -ENOMEM;
        return api_client_request(c, method, url, form ? "application/x-www-form-urlencoded" : NULL,
                                  form ? (form->buf ?: "") : NULL, cb, userdata, ret_req);
}

int api_client_get(ApiClient *c, const char *path, ApiCallback cb, void *userdata, ApiRequest **ret_req) {
        return api_client_call(c, "GET", path, NULL, cb, userdata, ret_req);
}

int api_client_post(ApiClient *c, const char *path, const ApiForm *form, ApiCallback cb, void *userdata,
                    ApiRequest **ret_req) {
        static const ApiForm empty = {};
        return api_client_call(c, "POST", path, form ?: &empty, cb, userdata, ret_req);
}
