/* curl multi on sd-event: see http.h. */
#include <limits.h>
#include <stdio.h>
#include <sys/epoll.h>

#define LOG_COMPONENT "http"
#include "log.h"

#include "curl-dl.h"
#include "http.h"
#include "list.h"
#include "util-event.h"
#include "util-strbuf.h"

struct HttpRequest {
        HttpClient *client;
        LIST_FIELDS(HttpRequest, requests);
        CURL *easy;
        struct curl_slist *headers;
        char *url;
        StrBuf answer;                  /* the body as it arrives, at most max_response bytes */
        char errbuf[CURL_ERROR_SIZE];
        HttpCallback callback;
        void *userdata;
};

struct HttpClient {
        unsigned n_ref;
        sd_event *event;
        sd_event_source *timer;
        CURLM *multi;
        HttpRequest *requests;
        size_t n_requests;
};

static void http_request_unlink(HttpRequest *q) {
        HttpClient *c = q->client;

        if (!c)
                return;
        LIST_REMOVE(requests, c->requests, q);
        c->n_requests--;
        if (q->easy)
                (void) sym_curl_multi_remove_handle(c->multi, q->easy);
        q->client = NULL;
}

static void http_request_free(HttpRequest *q) {
        http_request_unlink(q);
        if (q->easy)
                sym_curl_easy_cleanup(q->easy);
        sym_curl_slist_free_all(q->headers);
        strbuf_done(&q->answer);
        free(q->url);
        free(q);
}

void http_request_cancel(HttpRequest *r) {
        if (r)
                http_request_free(r);
}

static void http_client_reap(HttpClient *c) {
        CURLMsg *msg;
        int left;

        /* A callback may drop the last outside reference: the caller's own one keeps c valid, and
         * then nothing more is reported. */
        while (c->n_ref > 1 && (msg = sym_curl_multi_info_read(c->multi, &left))) {
                HttpRequest *q = NULL;
                char errtext[CURL_ERROR_SIZE + 128];
                const char *error = NULL;
                long status = 0;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                (void) curl_dl_easy_getinfo_pointer(msg->easy_handle, CURLINFO_PRIVATE, (void **) &q);
                if (!q)
                        continue;
                CURLcode code = msg->data.result;
                (void) curl_dl_easy_getinfo_long(q->easy, CURLINFO_RESPONSE_CODE, &status);

                if (q->answer.error == -E2BIG)
                        (void) snprintf(errtext, sizeof errtext, "response body larger than %zu bytes",
                                        q->answer.max);
                else if (q->answer.error < 0)
                        (void) snprintf(errtext, sizeof errtext, "out of memory for the response body");
                else if (code != CURLE_OK)
                        (void) snprintf(errtext, sizeof errtext, "%s%s%s", sym_curl_easy_strerror(code),
                                        q->errbuf[0] ? ": " : "", q->errbuf);
                else
                        errtext[0] = 0;
                if (errtext[0])
                        error = errtext;

                http_request_unlink(q);
                HttpResponse r = {
                        .url = q->url,
                        .status = error ? 0 : status,
                        .error = error,
                        .not_sent = code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST ||
                                    code == CURLE_COULDNT_RESOLVE_PROXY,
                        .body = error ? "" : strbuf_str(&q->answer),
                        .size = error ? 0 : q->answer.len,
                };
                q->callback(c, &r, q->userdata);
                http_request_free(q);
        }
}

static void http_client_action(HttpClient *c, curl_socket_t fd, int action) {
        int running;

        http_client_ref(c);
        (void) sym_curl_multi_socket_action(c->multi, fd, action, &running);
        http_client_reap(c);
        http_client_unref(c);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        int action = 0;

        /* A hang-up is read as such: curl sees the end of the stream. */
        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;
        http_client_action(userdata, fd, action);
        return 0;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        HttpClient *c = userp;
        sd_event_source *s = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (s) {
                        (void) sym_curl_multi_assign(c->multi, fd, NULL);
                        sd_event_source_disable_unref(s);
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
                if (r >= 0) {
                        (void) sd_event_source_set_description(s, "http-socket");
                        (void) sym_curl_multi_assign(c->multi, fd, s);
                }
        }
        if (r < 0) {
                log_error_errno(r, "Cannot watch an HTTP socket: %m");
                return -1;
        }
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        http_client_action(userdata, CURL_SOCKET_TIMEOUT, 0);
        return 0;
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp) {
        HttpClient *c = userp;
        uint64_t now;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        /* Even a zero timeout goes through the loop: never back into curl from its own callback. */
        if (sd_event_now(c->event, CLOCK_MONOTONIC, &now) < 0 ||
            event_timer_set(c->timer, now + (uint64_t) timeout_ms * USEC_PER_MSEC) < 0)
                return -1;
        return 0;
}

int http_client_new(HttpClient **ret, sd_event *event) {
        _cleanup_(http_client_unrefp) HttpClient *c = NULL;
        int r;

        assert_return(ret, -EINVAL);
        assert_return(event, -EINVAL);

        r = curl_dl_open();
        if (r < 0)
                return r;

        c = calloc(1, sizeof(HttpClient));
        if (!c)
                return -ENOMEM;
        c->n_ref = 1;
        c->event = sd_event_ref(event);

        /* Accuracy 1 us: curl's timeouts pace every step of a transfer; the default 250 ms slack
         * would stretch each of them. */
        r = event_timer_arm(event, &c->timer, UINT64_MAX, 1, on_timer, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->timer, "http-timer");

        c->multi = sym_curl_multi_init();
        if (!c->multi)
                return -ENOMEM;
        if (curl_dl_multi_setopt_socket_cb(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK ||
            curl_dl_multi_setopt_pointer(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
            curl_dl_multi_setopt_timer_cb(c->multi, CURLMOPT_TIMERFUNCTION, on_timer_change) != CURLM_OK ||
            curl_dl_multi_setopt_pointer(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK)
                return -EIO;

        *ret = TAKE_PTR(c);
        return 0;
}

HttpClient *http_client_ref(HttpClient *c) {
        if (c)
                c->n_ref++;
        return c;
}

HttpClient *http_client_unref(HttpClient *c) {
        if (!c || --c->n_ref > 0)
                return NULL;
        while (c->requests)
                http_request_free(c->requests);
        if (c->multi)
                (void) sym_curl_multi_cleanup(c->multi);
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

size_t http_client_n_in_flight(const HttpClient *c) {
        return c ? c->n_requests : 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userdata) {
        HttpRequest *q = userdata;
        size_t n = size * nmemb;

        /* Past the limit (or out of memory) curl fails the transfer (CURLE_WRITE_ERROR). */
        return strbuf_append(&q->answer, data, n) < 0 ? 0 : n;
}

static int http_request_add_headers(HttpRequest *q, const char * const *lines) {
        for (const char * const *l = lines; l && *l; l++) {
                struct curl_slist *h = sym_curl_slist_append(q->headers, *l);
                if (!h)
                        return -ENOMEM;
                q->headers = h;
        }
        return 0;
}

static int http_request_setup(HttpRequest *q, const HttpRequestSpec *spec) {
        const char *method = spec->method ?: "GET";
        bool get = streq(method, "GET");
        CURLcode e = CURLE_OK;
        int r;

        /* Expect: 100-continue would cost a round trip per POST for nothing. */
        static const char * const fixed[] = { "Expect:", NULL };
        r = http_request_add_headers(q, spec->headers);
        if (r >= 0)
                r = http_request_add_headers(q, fixed);
        if (r < 0)
                return r;

        /* Milliseconds, rounded up: a sub-millisecond timeout must not become "no timeout" (0). */
        long timeout_ms = (long) MIN((spec->timeout_usec + USEC_PER_MSEC - 1) / USEC_PER_MSEC, (uint64_t) LONG_MAX);

#define SET(call) if (e == CURLE_OK) e = (call)
        SET(curl_dl_easy_setopt_string(q->easy, CURLOPT_URL, q->url));
        SET(curl_dl_easy_setopt_pointer(q->easy, CURLOPT_PRIVATE, q));
        SET(curl_dl_easy_setopt_slist(q->easy, CURLOPT_HTTPHEADER, q->headers));
        SET(curl_dl_easy_setopt_string(q->easy, CURLOPT_USERAGENT, "kegbot-core/" KEGBOT_VERSION));
        SET(curl_dl_easy_setopt_write_cb(q->easy, CURLOPT_WRITEFUNCTION, on_write));
        SET(curl_dl_easy_setopt_pointer(q->easy, CURLOPT_WRITEDATA, q));
        SET(curl_dl_easy_setopt_pointer(q->easy, CURLOPT_ERRORBUFFER, q->errbuf));
        SET(curl_dl_easy_setopt_long(q->easy, CURLOPT_TIMEOUT_MS, timeout_ms));
        SET(curl_dl_easy_setopt_long(q->easy, CURLOPT_NOSIGNAL, 1L));
        SET(curl_dl_easy_setopt_long(q->easy, CURLOPT_FOLLOWLOCATION, 0L));
        SET(curl_dl_easy_setopt_string(q->easy, CURLOPT_PROTOCOLS_STR, "http,https"));
        if (!get) {
                SET(curl_dl_easy_setopt_long(q->easy, CURLOPT_POST, 1L));
                SET(curl_dl_easy_setopt_long(q->easy, CURLOPT_POSTFIELDSIZE, (long) spec->body_size));
                SET(curl_dl_easy_setopt_pointer(q->easy, CURLOPT_COPYPOSTFIELDS, spec->body ?: ""));
                SET(curl_dl_easy_setopt_long(q->easy, CURLOPT_FRESH_CONNECT, 1L));
                SET(curl_dl_easy_setopt_long(q->easy, CURLOPT_FORBID_REUSE, 1L));
                if (!streq(method, "POST"))
                        SET(curl_dl_easy_setopt_string(q->easy, CURLOPT_CUSTOMREQUEST, method));
        }
#undef SET
        return curl_dl_code_to_errno(e);
}

int http_client_start(HttpClient *c, const HttpRequestSpec *spec, HttpCallback callback, void *userdata,
                      HttpRequest **ret_req) {
        HttpRequest *q;
        int r;

        assert_return(c, -EINVAL);
        assert_return(spec && spec->url && spec->timeout_usec > 0, -EINVAL);
        assert_return(callback, -EINVAL);
        assert_return(spec->body || spec->body_size == 0, -EINVAL);
        assert_return(spec->body_size <= LONG_MAX, -EINVAL);
        assert_return(!spec->body || (spec->method && !streq(spec->method, "GET")), -EINVAL);

        q = calloc(1, sizeof(HttpRequest));
        if (!q)
                return -ENOMEM;
        q->callback = callback;
        q->userdata = userdata;
        q->answer.max = spec->max_response ?: HTTP_RESPONSE_MAX_DEFAULT;
        q->url = strdup(spec->url);
        q->easy = sym_curl_easy_init();
        if (!q->url || !q->easy) {
                http_request_free(q);
                return -ENOMEM;
        }
        r = http_request_setup(q, spec);
        if (r < 0) {
                http_request_free(q);
                return r;
        }

        q->client = c;
        LIST_PREPEND(requests, c->requests, q);
        c->n_requests++;
        if (sym_curl_multi_add_handle(c->multi, q->easy) != CURLM_OK) {
                /* Not added: unlinking must not remove it from the multi handle. */
                CURL *easy = TAKE_PTR(q->easy);
                http_request_free(q);
                sym_curl_easy_cleanup(easy);
                return -ENOMEM;
        }
        if (ret_req)
                *ret_req = q;
        return 0;
}
