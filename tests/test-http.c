/* Tests for the HTTP client on sd-event (src/libkegbot/http.c) against the stand-in server: what
 * goes on the wire (method, headers, body), the answer as delivered, the response size limit, the
 * whole-request timeout with a loop that keeps running, refused connections, cancelling (also
 * from a callback), dropping the last reference from a callback, and the preconditions. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "test-util.h"
#include "test-standin.h"

#include "http.h"
#include "log.h"
#include "util-event.h"

typedef struct Got {
        bool done;
        unsigned calls;
        long status;
        char *error, *body;
        size_t size;
        uint64_t when;
        /* Actions taken in the callback. */
        HttpRequest *cancel;
        HttpClient *unref;
} Got;

static void got_reset(Got *g) {
        free(g->error);
        free(g->body);
        *g = (Got) {};
}

static void on_done(HttpClient *c, const HttpResponse *r, void *userdata) {
        Got *g = userdata;

        g->done = true;
        g->calls++;
        g->status = r->status;
        g->error = r->error ? strdup(r->error) : NULL;
        g->body = malloc(r->size + 1);
        if (g->body)
                memcpy(g->body, r->body, r->size + 1);
        g->size = r->size;
        g->when = test_now_usec();
        check(r->url != NULL);
        check(r->body != NULL && r->body[r->size] == 0);
        if (g->cancel)
                http_request_cancel(TAKE_PTR(g->cancel));
        if (g->unref)
                http_client_unref(TAKE_PTR(g->unref));
}

static sd_event *e;
static HttpClient *c;
static char url_buf[256];

static const char *api_url(const char *path) {
        snprintf(url_buf, sizeof url_buf, "http://127.0.0.1:%d/api/%s", standin_api_port, path);
        return url_buf;
}

static void run(HttpClient *client, const HttpRequestSpec *spec, Got *g) {
        got_reset(g);
        check(http_client_start(client, spec, on_done, g, NULL) == 0);
        check(run_until_done(e, &g->done, 15));
}

static void test_preconditions(void) {
        HttpRequestSpec spec = { .url = api_url("status"), .timeout_usec = USEC_PER_SEC };
        Got g = {};

        check_int(http_client_new(NULL, e), -EINVAL);
        check_int(http_client_start(NULL, &spec, on_done, &g, NULL), -EINVAL);
        check_int(http_client_start(c, NULL, on_done, &g, NULL), -EINVAL);
        check_int(http_client_start(c, &spec, NULL, &g, NULL), -EINVAL);
        spec.timeout_usec = 0;
        check_int(http_client_start(c, &spec, on_done, &g, NULL), -EINVAL);
        spec.timeout_usec = USEC_PER_SEC;
        spec.body = "x";
        spec.body_size = 1;
        check_int(http_client_start(c, &spec, on_done, &g, NULL), -EINVAL);     /* a GET with a body */
        spec.method = "POST";
        spec.body = NULL;
        check_int(http_client_start(c, &spec, on_done, &g, NULL), -EINVAL);     /* size without data */
        spec.url = NULL;
        check_int(http_client_start(c, &spec, on_done, &g, NULL), -EINVAL);
        check_int(http_client_n_in_flight(c), 0);
        check(http_client_unref(NULL) == NULL);
        http_request_cancel(NULL);

        check_int(http_timeout_usec(2.5), 2500000);
        check_int(http_timeout_usec(1e-9), 1);
        check_int(http_timeout_usec(0), 1);
        check_int(http_timeout_usec(NAN), 1);
        check_int(http_timeout_usec(1e300), 1000000000000000);
}

static void test_wire(void) {
        static const char * const headers[] = {
                "X-Kegbot-Api-Key: " STANDIN_KEY, "Accept: application/json", "X-Empty;", NULL,
        };
        HttpRequestSpec spec = { .url = api_url("status"), .headers = headers, .timeout_usec = 5 * USEC_PER_SEC };
        Got g = {};

        run(c, &spec, &g);
        check_int(g.status, 200);
        check(g.error == NULL);
        check(g.body && strstr(g.body, "\"site_info\""));
        check(g.size == strlen(g.body ?: ""));

        json_t *req = standin_last_request(e, c, "/api/status");
        json_t *h = json_object_get(req, "headers");
        check_streq(json_string_value(json_object_get(req, "method")), "GET");
        check_streq(json_string_value(json_object_get(h, "X-Kegbot-Api-Key")), STANDIN_KEY);
        check_streq(json_string_value(json_object_get(h, "X-Empty")), "");
        check(strncmp(json_string_value(json_object_get(h, "User-Agent")) ?: "", "kegbot-core/", 12) == 0);
        check(json_object_get(h, "Expect") == NULL);
        json_decref(req);

        /* A POST: the body as given, no "Expect: 100-continue" (the body is large enough that curl
         * would ask for it otherwise). */
        static const char * const form[] = { "Content-Type: application/x-www-form-urlencoded", NULL };
        char body[2048];
        memset(body, 'x', sizeof body);
        memcpy(body, "temp_c=4.5&pad=", 15);
        spec = (HttpRequestSpec) {
                .method = "POST", .url = api_url("thermo-sensors/t1"), .headers = form,
                .body = body, .body_size = sizeof body, .timeout_usec = 5 * USEC_PER_SEC,
        };
        run(c, &spec, &g);
        check_int(g.status, 200);
        check(g.body && strstr(g.body, "\"temperature_c\": 4.5"));
        req = standin_last_request(e, c, "/api/thermo-sensors/t1");
        check_streq(json_string_value(json_object_get(req, "method")), "POST");
        check_int(strlen(json_string_value(json_object_get(req, "body")) ?: ""), sizeof body);
        check_streq(json_string_value(json_object_get(json_object_get(req, "form"), "temp_c")), "4.5");
        check(json_object_get(json_object_get(req, "headers"), "Expect") == NULL);
        json_decref(req);

        /* Any other verb, with or without a body; a non-2xx status is an answer, not an error. */
        spec = (HttpRequestSpec) {
                .method = "DELETE", .url = api_url("taps/kegboard.flow0"), .timeout_usec = 5 * USEC_PER_SEC,
        };
        run(c, &spec, &g);
        check(g.error == NULL);
        check(g.status >= 400);
        req = standin_last_request(e, c, "/api/taps/kegboard.flow0");
        check_streq(json_string_value(json_object_get(req, "method")), "DELETE");
        json_decref(req);
        spec.method = "PUT";
        spec.body = "a=1";
        spec.body_size = 3;
        run(c, &spec, &g);
        req = standin_last_request(e, c, "/api/taps/kegboard.flow0");
        check_streq(json_string_value(json_object_get(req, "method")), "PUT");
        check_streq(json_string_value(json_object_get(req, "body")), "a=1");
        json_decref(req);
        got_reset(&g);
}

static void test_limit(void) {
        HttpRequestSpec spec = { .url = api_url("taps"), .max_response = 64, .timeout_usec = 5 * USEC_PER_SEC };
        Got g = {};

        run(c, &spec, &g);
        check_int(g.status, 0);
        check_streq(g.error, "response body larger than 64 bytes");
        check_int(g.size, 0);
        check_streq(g.body, "");

        /* Exactly at the limit is fine. */
        spec.max_response = 0;
        run(c, &spec, &g);
        size_t exact = g.size;
        check(exact > 64);
        spec.max_response = exact;
        run(c, &spec, &g);
        check_int(g.status, 200);
        check_int(g.size, exact);
        spec.max_response = exact - 1;
        run(c, &spec, &g);
        check_int(g.status, 0);
        got_reset(&g);
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        uint64_t *ticks = userdata;
        (*ticks)++;
        (void) event_timer_set(s, usec + 50 * USEC_PER_MSEC);
        return 0;
}

static void test_failures(void) {
        HttpRequestSpec spec = { .url = api_url("taps"), .timeout_usec = 800 * USEC_PER_MSEC };
        sd_event_source *tick = NULL;
        uint64_t ticks = 0;
        Got g = {};

        /* A server that accepts and never answers: the timeout ends it, the loop runs meanwhile. */
        check(event_timer_arm_relative(e, &tick, 50 * USEC_PER_MSEC, USEC_PER_MSEC, on_tick, &ticks) >= 0);
        json_decref(standin_control(e, c, "POST", "fail", "{\"endpoint\": \"taps\", \"mode\": \"hang\", \"delay\": 30}"));
        uint64_t t0 = test_now_usec();
        ticks = 0;
        run(c, &spec, &g);
        check_int(g.status, 0);
        check(g.error && strstr(g.error, "Timeout was reached"));
        check(g.when - t0 >= 750 * USEC_PER_MSEC && g.when - t0 < 3 * USEC_PER_SEC);
        check(ticks >= 10);             /* ~16 expected: the loop was never blocked */
        json_decref(standin_control(e, c, "POST", "clear-failures", NULL));
        sd_event_source_disable_unref(tick);

        /* Refused. */
        json_decref(standin_control(e, c, "POST", "refuse", NULL));
        spec.timeout_usec = 5 * USEC_PER_SEC;
        run(c, &spec, &g);
        check_int(g.status, 0);
        check(g.error && strstr(g.error, "Couldn't connect to server"));
        json_decref(standin_control(e, c, "POST", "accept", NULL));
        run(c, &spec, &g);
        check_int(g.status, 200);

        /* Not a URL curl can use. */
        spec.url = "gopher://127.0.0.1/";
        run(c, &spec, &g);
        check_int(g.status, 0);
        check(g.error != NULL);
        got_reset(&g);
}

static void test_cancel(void) {
        HttpRequestSpec fast = { .url = api_url("taps"), .timeout_usec = 5 * USEC_PER_SEC };
        char slow_url[256];
        snprintf(slow_url, sizeof slow_url, "http://127.0.0.1:%d/api/version", standin_api_port);
        HttpRequestSpec slow = { .url = slow_url, .timeout_usec = 20 * USEC_PER_SEC };
        Got a = {}, b = {}, sentinel = {};
        HttpRequest *req = NULL;

        /* Cancelled before it finished: never called back. */
        check(http_client_start(c, &fast, on_done, &b, &req) == 0);
        check_int(http_client_n_in_flight(c), 1);
        http_request_cancel(req);
        check_int(http_client_n_in_flight(c), 0);
        run(c, &fast, &sentinel);
        check(!b.done);

        /* One request's callback cancels another one still waiting for its answer. */
        json_decref(standin_control(e, c, "POST", "fail", "{\"endpoint\": \"version\", \"mode\": \"hang\", \"delay\": 30}"));
        check(http_client_start(c, &slow, on_done, &b, &a.cancel) == 0);
        check(http_client_start(c, &fast, on_done, &a, NULL) == 0);
        check_int(http_client_n_in_flight(c), 2);
        check(run_until_done(e, &a.done, 10));
        check(a.cancel == NULL);
        check_int(http_client_n_in_flight(c), 0);
        run(c, &fast, &sentinel);
        check(!b.done);
        json_decref(standin_control(e, c, "POST", "clear-failures", NULL));

        /* Many at once. */
        Got many[16] = {};
        for (size_t i = 0; i < ELEMENTSOF(many); i++)
                check(http_client_start(c, &fast, on_done, &many[i], NULL) == 0);
        check_int(http_client_n_in_flight(c), ELEMENTSOF(many));
        for (size_t i = 0; i < ELEMENTSOF(many); i++) {
                check(run_until_done(e, &many[i].done, 10));
                check_int(many[i].status, 200);
                check_int(many[i].calls, 1);
                got_reset(&many[i]);
        }
        check_int(http_client_n_in_flight(c), 0);
        got_reset(&a);
        got_reset(&b);
        got_reset(&sentinel);
}

/* The callback of one request drops the last reference to its client: the client goes away, with
 * no further callback, and another client on the same loop goes on. */
static void test_unref_in_callback(void) {
        HttpClient *other = c;
        HttpRequestSpec fast = { .url = api_url("taps"), .timeout_usec = 5 * USEC_PER_SEC };
        HttpClient *d = NULL;
        Got first = {}, second[8] = {}, sentinel = {};

        check(http_client_new(&d, e) == 0);
        if (!d)
                return;
        first.unref = d;
        for (size_t i = 0; i < ELEMENTSOF(second); i++)
                second[i].unref = d;    /* whichever finishes first drops it */
        check(http_client_start(d, &fast, on_done, &first, NULL) == 0);
        for (size_t i = 0; i < ELEMENTSOF(second); i++)
                check(http_client_start(d, &fast, on_done, &second[i], NULL) == 0);

        bool any = false;
        uint64_t end = test_now_usec() + 10 * USEC_PER_SEC;
        while (!any && test_now_usec() < end) {
                (void) sd_event_run(e, 20 * USEC_PER_MSEC);
                any = first.done;
                for (size_t i = 0; i < ELEMENTSOF(second); i++)
                        any = any || second[i].done;
        }
        check(any);
        run(other, &fast, &sentinel);
        unsigned calls = first.calls;
        for (size_t i = 0; i < ELEMENTSOF(second); i++) {
                calls += second[i].calls;
                got_reset(&second[i]);
        }
        check_int(calls, 1);
        got_reset(&first);
        got_reset(&sentinel);
}

int main(void) {
        int r;

        log_set_max_level(LOG_WARNING);
        r = standin_start();
        if (r < 0) {
                fprintf(stderr, "cannot start the stand-in: %s\n", strerror(-r));
                return 1;
        }
        check(sd_event_default(&e) >= 0);
        check(http_client_new(&c, e) == 0);
        check(http_client_ref(c) == c);
        check(http_client_unref(c) == NULL);
        if (c) {
                test_run(test_preconditions);
                test_run(test_wire);
                test_run(test_limit);
                test_run(test_failures);
                test_run(test_cancel);
                test_run(test_unref_in_callback);
        }
        http_client_unref(c);
        sd_event_unref(e);
        standin_stop();
        return test_result();
}
