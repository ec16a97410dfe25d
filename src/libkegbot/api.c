/* Kegbot Server legacy API client: see api.h. */
#include <ctype.h>
#include <stdarg.h>

#include "api.h"
#include "list.h"
#include "util-escape.h"
#include "util-hex.h"
#include "util-string.h"

#define API_TEXT_MAX 512

struct ApiRequest {
        ApiClient *client;
        LIST_FIELDS(ApiRequest, requests);
        HttpRequest *http;
        ApiCallback callback;
        void *userdata;
};

struct ApiClient {
        HttpClient *http;
        char *base_url;                 /* without trailing slashes */
        char *key_header;
        uint64_t timeout_usec;
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

        va_start(ap, fmt);
        free(r->reason);
        r->reason = strdup_vprintf(fmt, ap);
        va_end(ap);
}

/* Server and transport text goes to log lines (and failed drinks' records): at most API_TEXT_MAX
 * bytes, cut at a character boundary, then escaped (escape_for_log()). */
static char *sanitize(const char *s) {
        _cleanup_(freep) char *o = NULL;
        size_t l = strlen(s), n = MIN(l, (size_t) API_TEXT_MAX);

        while (n < l && n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
                n--;
        o = escape_for_log_n(s, n);
        if (!o || n == l)
                return TAKE_PTR(o);
        return strdup_printf("%s...", o);
}

/* The envelope of section 4: a JSON object with "meta" and one of "object", "objects", "error". */
static bool api_envelope_parse(ApiResult *r, const char *body, size_t len, json_t **ret_error) {
        json_t *meta, *object, *objects, *error;

        *ret_error = NULL;
        if (!body || len == 0 || len > API_BODY_MAX)
                return false;
        r->root = json_loadb(body, len, 0, NULL);
        if (!json_is_object(r->root))
                return false;
        meta = json_object_get(r->root, "meta");
        object = json_object_get(r->root, "object");
        objects = json_object_get(r->root, "objects");
        error = json_object_get(r->root, "error");
        if (!json_is_object(meta) || !(object || objects || json_is_object(error)))
                return false;
        r->object = object;
        r->objects = objects;
        if (!json_is_object(error))
                return true;

        json_t *code = json_object_get(error, "code"), *msg = json_object_get(error, "message");
        if (json_is_string(code))
                r->error_code = sanitize(json_string_value(code));
        if (json_is_string(msg))
                r->error_message = sanitize(json_string_value(msg));
        else if (msg && !json_is_null(msg)) {
                _cleanup_(freep) char *dump = json_dumps(msg, JSON_COMPACT | JSON_SORT_KEYS);
                if (dump)
                        r->error_message = sanitize(dump);
        }
        *ret_error = error;
        return true;
}

void api_classify(long status, const char *body, size_t len, const char *transport_error, ApiResult *ret) {
        ApiResult r = { .http_status = status };
        json_t *error;
        bool envelope;

        if (transport_error) {
                _cleanup_(freep) char *t = sanitize(transport_error);
                r.http_status = 0;
                r.outcome = API_TRANSIENT;
                if (t)
                        set_reason(&r, "%s", t);
                *ret = r;
                return;
        }

        envelope = api_envelope_parse(&r, body, len, &error);
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
                if (!error)
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

json_t *api_result_list(const ApiResult *r, const char *legacy_key) {
        json_t *v;

        if (r->outcome == API_OK && json_is_array(r->objects))
                return r->objects;
        if (!legacy_key || r->http_status < 200 || r->http_status >= 300 || !json_is_object(r->root))
                return NULL;
        v = json_object_get(r->root, legacy_key);
        if (json_is_array(v))
                return v;
        v = json_object_get(json_object_get(r->root, "object"), legacy_key);
        return json_is_array(v) ? v : NULL;
}

static bool is_unreserved(unsigned char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
}

char *api_escape(const char *s) {
        char *o, *p;

        if (!s)
                return NULL;
        o = p = malloc(strlen(s) * 3 + 1);
        if (!o)
                return NULL;
        for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
                if (is_unreserved(*c))
                        *p++ = (char) *c;
                else {
                        /* Uppercase digits, as the spec writes them (section 3.1). */
                        *p++ = '%';
                        *p++ = (char) toupper((unsigned char) hexchar(*c >> 4));
                        *p++ = (char) toupper((unsigned char) hexchar(*c));
                }
        }
        *p = 0;
        return o;
}

void api_form_add(ApiForm *f, const char *key, const char *value) {
        _cleanup_(freep) char *k = api_escape(key), *v = api_escape(value ?: "");

        if (!k || !v)
                (void) strbuf_set_error(&f->body, -ENOMEM);
        else
                (void) strbuf_printf(&f->body, "%s%s=%s", f->body.len > 0 ? "&" : "", k, v);
}

void api_form_addf(ApiForm *f, const char *key, const char *format, ...) {
        _cleanup_(freep) char *v = NULL;
        va_list ap;

        va_start(ap, format);
        v = strdup_vprintf(format, ap);
        va_end(ap);
        if (!v)
                (void) strbuf_set_error(&f->body, -ENOMEM);
        else
                api_form_add(f, key, v);
}

const char *api_form_body(const ApiForm *f) {
        return f->body.error < 0 ? NULL : strbuf_str(&f->body);
}

void api_form_done(ApiForm *f) {
        strbuf_done(&f->body);
}

/* ---------------------------------------------------------------- the client */

static void api_request_free(ApiRequest *q) {
        ApiClient *c = q->client;

        LIST_REMOVE(requests, c->requests, q);
        c->n_requests--;
        http_request_cancel(q->http);
        free(q);
}

void api_request_cancel(ApiRequest *r) {
        if (r)
                api_request_free(r);
}

static int api_client_set_key_header(ApiClient *c, const char *api_key) {
        char *h;

        /* curl drops a "Name:" header without a value; "Name;" sends it empty. */
        if (isempty(api_key))
                h = strdup("X-Kegbot-Api-Key;");
        else
                h = strdup_printf("X-Kegbot-Api-Key: %s", api_key);
        if (!h)
                return -ENOMEM;
        free(c->key_header);
        c->key_header = h;
        return 0;
}

int api_client_new(ApiClient **ret, HttpClient *http, const char *base_url, const char *api_key,
                   double timeout_sec) {
        _cleanup_(api_client_freep) ApiClient *c = NULL;
        int r;

        assert_return(ret, -EINVAL);
        assert_return(http, -EINVAL);
        assert_return(base_url, -EINVAL);
        assert_return(timeout_sec > 0, -EINVAL);

        c = calloc(1, sizeof(ApiClient));
        if (!c)
                return -ENOMEM;
        c->http = http_client_ref(http);
        c->base_url = strdup(base_url);
        if (!c->base_url)
                return -ENOMEM;
        size_t l = strlen(c->base_url);
        while (l > 0 && c->base_url[l - 1] == '/')
                c->base_url[--l] = 0;
        r = api_client_set_key_header(c, api_key);
        if (r < 0)
                return r;
        c->timeout_usec = http_timeout_usec(timeout_sec);

        *ret = TAKE_PTR(c);
        return 0;
}

ApiClient *api_client_free(ApiClient *c) {
        if (!c)
                return NULL;
        while (c->requests)
                api_request_free(c->requests);
        http_client_unref(c->http);
        free(c->base_url);
        free(c->key_header);
        free(c);
        return NULL;
}

int api_client_set_key(ApiClient *c, const char *api_key) {
        assert_return(c, -EINVAL);
        return api_client_set_key_header(c, api_key);
}

const char *api_client_get_base_url(const ApiClient *c) {
        return c ? c->base_url : NULL;
}

size_t api_client_n_in_flight(const ApiClient *c) {
        return c ? c->n_requests : 0;
}

static void on_http_done(HttpClient *http, const HttpResponse *resp, void *userdata) {
        ApiRequest *q = userdata;
        ApiClient *c = q->client;
        ApiCallback cb = q->callback;
        void *ud = q->userdata;
        ApiResult res;

        q->http = NULL;                 /* finished: nothing to cancel */
        api_request_free(q);
        api_classify(resp->status, resp->body, resp->size, resp->error, &res);
        res.not_sent = resp->not_sent;
        cb(c, &res, ud);
        api_result_done(&res);
}

static int api_client_call(ApiClient *c, const char *method, const char *path, const char *body,
                           ApiCallback cb, void *userdata, ApiRequest **ret_req) {
        _cleanup_(freep) char *url = NULL;
        ApiRequest *q;
        int r;

        assert_return(c, -EINVAL);
        assert_return(path, -EINVAL);
        assert_return(cb, -EINVAL);
        url = strdup_printf("%s/%s", c->base_url, path);
        if (!url)
                return -ENOMEM;

        const char *headers[] = {
                c->key_header,
                "Accept: application/json",
                body ? "Content-Type: application/x-www-form-urlencoded" : NULL,
                NULL,
        };
        HttpRequestSpec spec = {
                .method = method,
                .url = url,
                .headers = headers,
                .body = body,
                .body_size = body ? strlen(body) : 0,
                .max_response = API_BODY_MAX,
                .timeout_usec = c->timeout_usec,
        };

        q = calloc(1, sizeof(ApiRequest));
        if (!q)
                return -ENOMEM;
        r = http_client_start(c->http, &spec, on_http_done, q, &q->http);
        if (r < 0) {
                free(q);
                return r;
        }
        q->client = c;
        q->callback = cb;
        q->userdata = userdata;
        LIST_PREPEND(requests, c->requests, q);
        c->n_requests++;
        if (ret_req)
                *ret_req = q;
        return 0;
}

int api_client_get(ApiClient *c, const char *path, ApiCallback cb, void *userdata, ApiRequest **ret_req) {
        return api_client_call(c, "GET", path, NULL, cb, userdata, ret_req);
}

int api_client_post(ApiClient *c, const char *path, const ApiForm *form, ApiCallback cb, void *userdata,
                    ApiRequest **ret_req) {
        const char *body = form ? api_form_body(form) : "";

        if (!body)
                return -ENOMEM;
        return api_client_call(c, "POST", path, body, cb, userdata, ret_req);
}
