/* Tests for the Kegbot Server API client (src/libkegbot/api.c): the outcome classification of
 * kegbot-server-api.md section 4.3 on canned answers, the text it passes on to logs, the lists the
 * extras read, URL and form encoding, and real requests on an sd-event loop against the stand-in
 * server (every endpoint the core uses, both mounts, trailing slashes, 401, HTML errors, refused
 * connections, a hanging server within --api_timeout, and a loop that keeps ticking while a
 * request hangs). */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "test-util.h"
#include "test-standin.h"

#include "api.h"
#include "log.h"
#include "util-event.h"
#include "util-utf8.h"

#define KEY STANDIN_KEY

static ApiOutcome classify(long status, const char *body) {
        ApiResult r;
        api_classify(status, body, body ? strlen(body) : 0, NULL, &r);
        ApiOutcome o = r.outcome;
        if (o != API_OK)
                check(r.reason != NULL);
        api_result_done(&r);
        return o;
}

static void test_classify(void) {
        ApiResult r;

        check(classify(200, "{\"object\": {\"id\": 1}, \"meta\": {\"result\": \"ok\"}}") == API_OK);
        check(classify(200, "{\"objects\": [], \"meta\": {\"result\": \"ok\"}}") == API_OK);
        check(classify(201, "{\"object\": {}, \"meta\": {}}") == API_OK);
        /* Envelope-less or non-JSON: transient, whatever the status. */
        check(classify(200, "{\"object\": {\"id\": 1}}") == API_TRANSIENT);
        check(classify(200, "<html></html>") == API_TRANSIENT);
        check(classify(200, "") == API_TRANSIENT);
        check(classify(200, "[1,2]") == API_TRANSIENT);
        check(classify(200, "{\"meta\": {}}") == API_TRANSIENT);
        check(classify(302, "") == API_TRANSIENT);
        check(classify(404, "<h1>Not Found</h1>") == API_TRANSIENT);
        check(classify(405, "<h1>Method Not Allowed</h1>") == API_TRANSIENT);
        check(classify(200, "{\"error\": {\"code\": \"X\"}, \"meta\": {}}") == API_TRANSIENT);
        /* JSON errors. */
        check(classify(404, "{\"error\": {\"code\": \"NotFoundError\", \"message\": \"Meter is inactive\"}, \"meta\": {\"result\": \"error\"}}") == API_NOT_FOUND);
        check(classify(400, "{\"error\": {\"code\": \"BadRequestError\", \"message\": \"No active keg at this tap\"}, \"meta\": {}}") == API_REJECTED);
        check(classify(410, "{\"error\": {\"code\": \"GoneError\", \"message\": \"gone\"}, \"meta\": {}}") == API_REJECTED);
        check(classify(403, "{\"error\": {\"code\": \"X\", \"message\": \"y\"}, \"meta\": {}}") == API_REJECTED);
        check(classify(408, "{\"error\": {\"code\": \"X\", \"message\": \"y\"}, \"meta\": {}}") == API_TRANSIENT);
        check(classify(429, "{\"error\": {\"code\": \"X\", \"message\": \"y\"}, \"meta\": {}}") == API_TRANSIENT);
        check(classify(500, "{\"error\": {\"code\": \"ServerError\", \"message\": \"x\"}, \"meta\": {}}") == API_TRANSIENT);
        check(classify(502, "<html>Bad Gateway</html>") == API_TRANSIENT);
        check(classify(401, "{\"error\": {\"code\": \"BadApiKeyError\", \"message\": \"API key does not exist\"}, \"meta\": {}}") == API_UNAUTHORIZED);
        check(classify(401, "{\"detail\": \"Authentication credentials were not provided.\"}") == API_UNAUTHORIZED);
        check(classify(401, NULL) == API_UNAUTHORIZED);

        /* The message as a string or an object. */
        api_classify(400, "{\"error\": {\"code\": \"BadRequestError\", \"message\": {\"name\": [\"Controller with this Name already exists.\"]}}, \"meta\": {}}",
                     strlen("{\"error\": {\"code\": \"BadRequestError\", \"message\": {\"name\": [\"Controller with this Name already exists.\"]}}, \"meta\": {}}"),
                     NULL, &r);
        check(r.outcome == API_REJECTED);
        check_streq(r.error_code, "BadRequestError");
        check_streq(r.error_message, "{\"name\":[\"Controller with this Name already exists.\"]}");
        check(r.http_status == 400);
        api_result_done(&r);

        api_classify(0, NULL, 0, "Couldn't connect to server", &r);
        check(r.outcome == API_TRANSIENT);
        check(r.http_status == 0);
        check_streq(r.reason, "Couldn't connect to server");
        api_result_done(&r);

        /* Over-long bodies are not parsed. */
        size_t big = API_BODY_MAX + 10;
        char *b = malloc(big);
        check(b != NULL);
        if (b) {
                memset(b, ' ', big);
                memcpy(b, "{\"object\":{},\"meta\":{}}", 23);
                api_classify(200, b, big, NULL, &r);
                check(r.outcome == API_TRANSIENT);
                api_result_done(&r);
                free(b);
        }
}

/* What reaches log lines: one line, no control characters, valid UTF-8 even when cut. */
static void test_text(void) {
        ApiResult r;
        char body[2048];
        size_t n;

        /* 300 two-byte characters: the 512-byte cut must not split one. */
        n = (size_t) snprintf(body, sizeof body, "{\"error\": {\"code\": \"X\", \"message\": \"");
        for (int i = 0; i < 300; i++) {
                body[n++] = (char) 0xC3;
                body[n++] = (char) 0xA9;
        }
        n += (size_t) snprintf(body + n, sizeof body - n, "\"}, \"meta\": {}}");
        api_classify(400, body, n, NULL, &r);
        check(r.outcome == API_REJECTED);
        check(r.error_message != NULL);
        if (r.error_message) {
                size_t l = strlen(r.error_message);
                check(l == 512 + 3);
                check(streq(r.error_message + l - 3, "..."));
                check(utf8_is_valid(r.error_message));
        }
        api_result_done(&r);

        /* Control characters (escaped in JSON, real after decoding) are escaped for the log line. */
        const char *ctl = "{\"error\": {\"code\": \"A\\nB\", \"message\": \"line1\\r\\nline2\\u001b[31m\"}, \"meta\": {}}";
        api_classify(404, ctl, strlen(ctl), NULL, &r);
        check(r.outcome == API_NOT_FOUND);
        check_streq(r.error_code, "A\\nB");
        check_streq(r.error_message, "line1\\r\\nline2\\x1b[31m");
        check_streq(r.reason, "HTTP 404 A\\nB: line1\\r\\nline2\\x1b[31m");
        api_result_done(&r);

        /* Invalid UTF-8 in a body is no JSON: transient, and nothing of it is passed on. */
        const char *bad = "{\"error\": {\"code\": \"caf\xe9\", \"message\": \"x\"}, \"meta\": {}}";
        api_classify(400, bad, strlen(bad), NULL, &r);
        check(r.outcome == API_TRANSIENT);
        check(r.error_code == NULL);
        api_result_done(&r);

        api_classify(0, NULL, 0, "Timeout was reached\n", &r);
        check_streq(r.reason, "Timeout was reached\\n");
        api_result_done(&r);
        /* Transport errors are not checked as UTF-8 where they come from: invalid bytes are escaped. */
        api_classify(0, NULL, 0, "host caf\xe9 \xc3\xa9", &r);
        check_streq(r.reason, "host caf\\xe9 \xc3\xa9");
        api_result_done(&r);
}

static void test_list(void) {
        ApiResult r;
        const char *b;

        b = "{\"objects\": [{\"id\": 1}], \"meta\": {\"result\": \"ok\"}}";
        api_classify(200, b, strlen(b), NULL, &r);
        check(json_array_size(api_result_list(&r, "taps")) == 1);
        check(json_array_size(api_result_list(&r, NULL)) == 1);
        api_result_done(&r);

        /* Servers of the 0.9 era: the list under its own name, in the root or in "object". */
        b = "{\"events\": [{\"id\": 1}, {\"id\": 2}]}";
        api_classify(200, b, strlen(b), NULL, &r);
        check(r.outcome == API_TRANSIENT);
        check(json_array_size(api_result_list(&r, "events")) == 2);
        check(api_result_list(&r, "taps") == NULL);
        check(api_result_list(&r, NULL) == NULL);
        api_result_done(&r);
        b = "{\"object\": {\"taps\": [{\"id\": 1}]}, \"meta\": {}}";
        api_classify(200, b, strlen(b), NULL, &r);
        check(r.outcome == API_OK);
        check(json_array_size(api_result_list(&r, "taps")) == 1);
        api_result_done(&r);

        /* Not from an error answer, nor from a non-list. */
        b = "{\"events\": [{\"id\": 1}]}";
        api_classify(500, b, strlen(b), NULL, &r);
        check(api_result_list(&r, "events") == NULL);
        api_result_done(&r);
        b = "{\"objects\": {\"id\": 1}, \"meta\": {}}";
        api_classify(200, b, strlen(b), NULL, &r);
        check(api_result_list(&r, "taps") == NULL);
        api_result_done(&r);
        api_classify(0, NULL, 0, "Couldn't connect to server", &r);
        check(api_result_list(&r, "taps") == NULL);
        api_result_done(&r);
}

static void test_escape(void) {
        char *e = api_escape("kegboard.flow0");
        check_streq(e, "kegboard.flow0");
        free(e);
        e = api_escape("a b/c+d%é~");
        check_streq(e, "a%20b%2Fc%2Bd%25%C3%A9%7E");
        free(e);

        ApiForm f = {};
        api_form_add(&f, "tap_name", "kegboard.flow0");
        api_form_addf(&f, "ticks", "%d", 1440);
        api_form_add(&f, "username", "a+b c");
        check_streq(api_form_body(&f), "tap_name=kegboard.flow0&ticks=1440&username=a%2Bb%20c");
        api_form_add(&f, "now", "1");
        check_streq(api_form_body(&f), "tap_name=kegboard.flow0&ticks=1440&username=a%2Bb%20c&now=1");
        api_form_done(&f);
        check_streq(api_form_body(&f), "");
        api_form_done(&f);
}

/* ---------------------------------------------------------------- against the stand-in */

typedef struct Got {
        bool done;
        ApiOutcome outcome;
        long status;
        char *code, *message;
        json_t *object, *objects, *root;
        uint64_t when;
} Got;

static void got_reset(Got *g) {
        free(g->code);
        free(g->message);
        json_decref(g->object);
        json_decref(g->objects);
        json_decref(g->root);
        *g = (Got) {};
}

static void on_result(ApiClient *c, const ApiResult *r, void *userdata) {
        Got *g = userdata;
        g->done = true;
        g->outcome = r->outcome;
        g->status = r->http_status;
        g->code = r->error_code ? strdup(r->error_code) : NULL;
        g->message = r->error_message ? strdup(r->error_message) : NULL;
        g->object = json_incref(r->object);
        g->objects = json_incref(r->objects);
        g->root = json_incref(r->root);
        g->when = test_now_usec();
}

static bool run_until(sd_event *e, Got *g, double timeout_sec) {
        return run_until_done(e, &g->done, timeout_sec);
}

static void do_get(sd_event *e, ApiClient *c, const char *path, Got *g) {
        got_reset(g);
        check(api_client_get(c, path, on_result, g, NULL) == 0);
        check(run_until(e, g, 15));
}

static void do_post(sd_event *e, ApiClient *c, const char *path, ApiForm *f, Got *g) {
        got_reset(g);
        check(api_client_post(c, path, f, on_result, g, NULL) == 0);
        check(run_until(e, g, 15));
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        uint64_t *ticks = userdata;
        (*ticks)++;
        (void) event_timer_set(s, usec + 50 * USEC_PER_MSEC);
        return 0;
}

static void test_live(void) {
        sd_event *e = NULL;
        HttpClient *http = NULL;
        ApiClient *c = NULL, *c2 = NULL;
        char base[128];
        Got g = {};
        int r;

        r = standin_start();
        if (r < 0) {
                fprintf(stderr, "test_live: cannot start the stand-in: %s\n", strerror(-r));
                failures++;
                return;
        }
        check(sd_event_default(&e) >= 0);
        check(http_client_new(&http, e) == 0);
        snprintf(base, sizeof base, "http://127.0.0.1:%d/api/", standin_api_port);
        check(api_client_new(&c, http, base, KEY, 2.0) == 0);
        base[strlen(base) - 1] = 0;
        check_streq(api_client_get_base_url(c), base);

        /* status: taps as seeded. */
        do_get(e, c, "status", &g);
        check(g.outcome == API_OK);
        json_t *taps = json_object_get(g.object, "taps");
        check(json_array_size(taps) == 2);
        check_streq(json_string_value(json_object_get(json_array_get(taps, 0), "meter_name")), "kegboard.flow0");
        check(fabs(json_real_value(json_object_get(json_array_get(taps, 0), "ml_per_tick")) - 1 / 2.2) < 1e-12);

        /* A drink. */
        ApiForm f = {};
        api_form_add(&f, "tap_name", "kegboard.flow0");
        api_form_add(&f, "ticks", "1440");
        api_form_add(&f, "username", "alice");
        api_form_add(&f, "duration", "2");
        api_form_add(&f, "pour_time", "1795696289");
        api_form_add(&f, "now", "1795696410");
        do_post(e, c, "taps/kegboard.flow0", &f, &g);
        check(g.outcome == API_OK);
        check(json_integer_value(json_object_get(g.object, "ticks")) == 1440);
        check(json_real_value(json_object_get(g.object, "volume_ml")) == 1440 / 2.2);
        check_streq(json_string_value(json_object_get(g.object, "user_id")), "alice");

        /* What the server saw: key header, form, content type, URL without a trailing slash. */
        json_t *reqs = standin_control(e, http, "GET", "requests", NULL);
        json_t *last = NULL, *it;
        size_t i;
        json_array_foreach(reqs, i, it)
                if (json_is_string(json_object_get(it, "endpoint")) &&
                    strcmp(json_string_value(json_object_get(it, "endpoint")), "drink") == 0)
                        last = it;
        check(last != NULL);
        if (last) {
                json_t *h = json_object_get(last, "headers");
                check_streq(json_string_value(json_object_get(h, "X-Kegbot-Api-Key")), KEY);
                check_streq(json_string_value(json_object_get(h, "Content-Type")), "application/x-www-form-urlencoded");
                check_streq(json_string_value(json_object_get(h, "Accept")), "application/json");
                check(strncmp(json_string_value(json_object_get(h, "User-Agent")) ?: "", "kegbot-core/", 12) == 0);
                check_streq(json_string_value(json_object_get(last, "path")), "/api/taps/kegboard.flow0");
                check_streq(json_string_value(json_object_get(last, "body")),
                            "tap_name=kegboard.flow0&ticks=1440&username=alice&duration=2&pour_time=1795696289&now=1795696410");
        }
        json_decref(reqs);

        /* Unknown meter -> not_found; unknown path -> HTML 404 -> transient. */
        do_post(e, c, "taps/kegboard.flow7", &f, &g);
        check(g.outcome == API_NOT_FOUND);
        check_streq(g.message, "FlowMeter matching query does not exist.");
        do_get(e, c, "no-such-endpoint", &g);
        check(g.outcome == API_TRANSIENT && g.status == 404);
        api_form_done(&f);

        /* Thermo, token lookups. */
        api_form_add(&f, "temp_c", "4.5");
        do_post(e, c, "thermo-sensors/kegboard.thermo-28aa", &f, &g);
        check(g.outcome == API_OK);
        check(json_real_value(json_object_get(g.object, "temperature_c")) == 4.5);
        api_form_done(&f);
        api_form_add(&f, "temp_c", "85.0");
        do_post(e, c, "thermo-sensors/kegboard.thermo-28aa", &f, &g);
        check(g.outcome == API_REJECTED);
        check_streq(g.message, "Temperature out of bounds");
        api_form_done(&f);
        do_get(e, c, "auth-tokens/core.rfid/deadbeef", &g);
        check(g.outcome == API_OK);
        check_streq(json_string_value(json_object_get(g.object, "username")), "alice");
        do_get(e, c, "auth-tokens/core.rfid/DEADBEEF", &g);
        check(g.outcome == API_NOT_FOUND);

        /* Controllers and flow meters. */
        api_form_add(&f, "name", "kegboard");
        api_form_add(&f, "model_name", "unknown");
        api_form_add(&f, "serial_number", "unknown");
        do_post(e, c, "controllers", &f, &g);
        check(g.outcome == API_REJECTED);
        check_streq(g.message, "{\"name\":[\"Controller with this Name already exists.\"]}");
        api_form_done(&f);
        api_form_add(&f, "name", "kegboard-0a1b2c3d");
        api_form_add(&f, "model_name", "unknown");
        api_form_add(&f, "serial_number", "KB-0a1b2c3d");
        do_post(e, c, "controllers", &f, &g);
        check(g.outcome == API_OK);
        long cid = (long) json_integer_value(json_object_get(g.object, "id"));
        check(cid > 0);
        api_form_done(&f);
        api_form_add(&f, "port_name", "flow0");
        api_form_addf(&f, "controller", "%ld", cid);
        api_form_add(&f, "ticks_per_ml", "2.2");
        do_post(e, c, "flow-meters", &f, &g);
        check(g.outcome == API_OK);
        check_streq(json_string_value(json_object_get(g.object, "name")), "kegboard-0a1b2c3d.flow0");
        do_post(e, c, "flow-meters", &f, &g);
        check(g.outcome == API_REJECTED);
        check_streq(g.message, "The request was incomplete or malformed.");
        api_form_done(&f);

        /* The other mount, with trailing slashes on the base. */
        snprintf(base, sizeof base, "http://127.0.0.1:%d/api/v1//", standin_api_port);
        check(api_client_new(&c2, http, base, KEY, 2.0) == 0);
        do_get(e, c2, "status", &g);
        check(g.outcome == API_OK);
        do_get(e, c2, "status/", &g);
        check(g.outcome == API_OK);

        /* 401: wrong key, and no key at all (header still sent, empty). */
        check(api_client_set_key(c2, "ffffffffffffffffffffffffffffffff") == 0);
        do_get(e, c2, "status", &g);
        check(g.outcome == API_UNAUTHORIZED);
        check_streq(g.code, "BadApiKeyError");
        check(api_client_set_key(c2, "") == 0);
        do_get(e, c2, "status", &g);
        check(g.outcome == API_UNAUTHORIZED);
        check_streq(g.code, "NoAuthTokenError");
        /* But thermo posts need no key on a public site. */
        api_form_add(&f, "temp_c", "5.0");
        do_post(e, c2, "thermo-sensors/t2", &f, &g);
        check(g.outcome == API_OK);
        api_form_done(&f);

        /* Profile 2.0: /api/ is another API (401, not ours); retired paths are 410. */
        json_decref(standin_control(e, http, "POST", "set", "{\"profile\": \"2.0\"}"));
        do_get(e, c, "status", &g);
        check(g.outcome == API_UNAUTHORIZED);
        check(api_client_set_key(c2, KEY) == 0);
        do_get(e, c2, "status", &g);
        check(g.outcome == API_OK);
        do_get(e, c2, "drinks", &g);
        check(g.outcome == API_REJECTED && g.status == 410);
        check_streq(g.code, "GoneError");
        json_decref(standin_control(e, http, "POST", "set", "{\"profile\": \"1.3\"}"));

        /* Injected failures. */
        json_decref(standin_control(e, http, "POST", "fail", "{\"endpoint\": \"status\", \"mode\": \"html500\", \"count\": 1}"));
        do_get(e, c, "status", &g);
        check(g.outcome == API_TRANSIENT && g.status == 500);
        json_decref(standin_control(e, http, "POST", "fail", "{\"endpoint\": \"status\", \"mode\": \"json500\", \"count\": 1}"));
        do_get(e, c, "status", &g);
        check(g.outcome == API_TRANSIENT && g.status == 500);
        check_streq(g.code, "ServerError");
        /* (curl itself retries a GET once when a reused connection turns out dead, so reset them all.) */
        json_decref(standin_control(e, http, "POST", "fail", "{\"endpoint\": \"status\", \"mode\": \"reset\"}"));
        do_get(e, c, "status", &g);
        check(g.outcome == API_TRANSIENT && g.status == 0);
        json_decref(standin_control(e, http, "POST", "clear-failures", NULL));

        /* A hanging server: the 2 s whole-request timeout ends it, and the loop keeps running. */
        sd_event_source *tick = NULL;
        uint64_t ticks = 0;
        check(event_timer_arm_relative(e, &tick, 50 * USEC_PER_MSEC, USEC_PER_MSEC, on_tick, &ticks) >= 0);
        json_decref(standin_control(e, http, "POST", "fail", "{\"endpoint\": \"status\", \"mode\": \"hang\", \"count\": 1, \"delay\": 30}"));
        uint64_t t0 = test_now_usec();
        ticks = 0;
        do_get(e, c, "status", &g);
        uint64_t took = g.when - t0;
        check(g.outcome == API_TRANSIENT && g.status == 0);
        check(took >= 1900 * USEC_PER_MSEC && took < 4 * USEC_PER_SEC);
        check(ticks >= 25);             /* ~40 expected over 2 s: the loop was never blocked */
        json_decref(standin_control(e, http, "POST", "clear-failures", NULL));

        /* Several requests in flight at once. */
        Got many[20] = {};
        for (int k = 0; k < 20; k++)
                check(api_client_get(c, "auth-tokens/core.rfid/deadbeef", on_result, &many[k], NULL) == 0);
        check(api_client_n_in_flight(c) == 20);
        for (int k = 0; k < 20; k++) {
                check(run_until(e, &many[k], 10));
                check(many[k].outcome == API_OK);
                got_reset(&many[k]);
        }
        check(api_client_n_in_flight(c) == 0);

        /* A cancelled request never calls back. */
        ApiRequest *req = NULL;
        Got never = {};
        check(api_client_get(c, "status", on_result, &never, &req) == 0);
        api_request_cancel(req);
        Got g2 = {};
        do_get(e, c, "status", &g2);
        check(!never.done);
        got_reset(&g2);

        /* Refused connections. */
        json_decref(standin_control(e, http, "POST", "refuse", NULL));
        do_get(e, c, "status", &g);
        check(g.outcome == API_TRANSIENT && g.status == 0);
        json_decref(standin_control(e, http, "POST", "accept", NULL));
        do_get(e, c, "status", &g);
        check(g.outcome == API_OK);

        /* Freeing a client with requests in flight: no callback, ever; the transport stays usable. */
        Got orphan = {};
        check(api_client_get(c2, "status", on_result, &orphan, NULL) == 0);
        check(http_client_n_in_flight(http) == 1);
        c2 = api_client_free(c2);
        check(http_client_n_in_flight(http) == 0);
        do_get(e, c, "status", &g);
        check(g.outcome == API_OK);
        check(!orphan.done);

        got_reset(&g);
        sd_event_source_disable_unref(tick);
        api_client_free(c);
        api_client_free(c2);
        http_client_unref(http);
        sd_event_unref(e);
        standin_stop();
}

int main(void) {
        log_set_max_level(LOG_WARNING);
        test_run(test_classify);
        test_run(test_text);
        test_run(test_list);
        test_run(test_escape);
        test_run(test_live);
        return test_result();
}
