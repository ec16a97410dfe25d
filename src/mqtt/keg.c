/* Keg data from Kegbot Server: see keg.h. */
#include <math.h>

#define LOG_COMPONENT "keg"
#include "log.h"

#include "api.h"
#include "http.h"
#include "keg.h"
#include "util-event.h"
#include "util-escape.h"
#include "util-string.h"

struct KegClient {
        sd_event *event;
        Model *model;
        ApiClient *api;
        ApiRequest *req;
        sd_event_source *timer;
        uint64_t interval;
        char *url;                      /* for log lines, escaped */
        bool failing;                   /* in a failure streak */
        KegChanged changed;
        void *userdata;
};

static double number_at(json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);
        return json_is_number(v) && isfinite(json_number_value(v)) ? json_number_value(v) : NAN;
}

static const char *name_at(json_t *o, const char *key) {
        json_t *v = json_object_get(json_object_get(o, key), "name");
        return json_is_string(v) && *json_string_value(v) ? json_string_value(v) : NULL;
}

static bool same_double(double a, double b) {
        return (isnan(a) && isnan(b)) || a == b;
}

/* The tap's keg from its entry of the answer (NULL: the tap is not in the answer). */
static int keg_from_json(json_t *tap, KegInfo *ret) {
        KegInfo k = {};
        json_t *keg, *id;
        const char *bev;

        keg_info_clear(&k);
        if (!tap) {
                *ret = k;
                return 0;
        }
        k.known = true;
        keg = json_object_get(tap, "current_keg");
        if (json_is_object(keg)) {
                k.has_keg = true;
                bev = name_at(keg, "beverage") ?: name_at(keg, "type");     /* 1.3 also had "type" */
                if (bev && !(k.beverage = strdup(bev)))
                        return -ENOMEM;
                id = json_object_get(tap, "current_keg_id");
                if (json_is_integer(id)) {
                        k.has_keg_id = true;
                        k.keg_id = json_integer_value(id);
                }
                k.size_ml = number_at(keg, "full_volume_ml");
                k.remaining_ml = number_at(keg, "remaining_volume_ml");
                k.percent = number_at(keg, "percent_full");
        }
        *ret = k;
        return 0;
}

static bool keg_equal(const KegInfo *a, const KegInfo *b) {
        return a->known == b->known && a->has_keg == b->has_keg && streq_ptr(a->beverage, b->beverage) &&
               a->has_keg_id == b->has_keg_id && (!a->has_keg_id || a->keg_id == b->keg_id) &&
               same_double(a->size_ml, b->size_ml) && same_double(a->remaining_ml, b->remaining_ml) &&
               same_double(a->percent, b->percent);
}

static json_t *find_tap(json_t *objects, const char *meter) {
        size_t i;
        json_t *t;

        json_array_foreach(objects, i, t) {
                json_t *m = json_object_get(t, "meter_name");
                if (json_is_string(m) && streq(json_string_value(m), meter))
                        return t;
        }
        return NULL;
}

static void on_taps(ApiClient *c, const ApiResult *res, void *userdata) {
        KegClient *k = userdata;
        json_t *objects;

        k->req = NULL;
        objects = res->outcome == API_OK ? api_result_list(res, "taps") : NULL;
        if (!json_is_array(objects)) {
                /* The last values stay. */
                log_debug("Keg data read failed: %s", res->outcome == API_OK ? "no tap list" : res->reason ?: "?");
                if (!k->failing)
                        log_warning("Keg data from %s unavailable: %s", k->url,
                                    res->outcome == API_OK ? "no tap list in the answer" : res->reason ?: "?");
                k->failing = true;
                return;
        }
        if (k->failing)
                log_info("Keg data from %s available again", k->url);
        k->failing = false;

        for (size_t i = 0; i < k->model->n_groups; i++) {
                Group *g = k->model->groups[i];
                KegInfo n = {};
                bool config;

                if (g->kind != GROUP_TAP)
                        continue;
                if (keg_from_json(find_tap(objects, g->name), &n) < 0) {
                        keg_info_clear(&n);
                        return (void) log_error("Out of memory");
                }
                if (keg_equal(&n, &g->keg)) {
                        keg_info_clear(&n);
                        continue;
                }
                config = n.known != g->keg.known;
                keg_info_clear(&g->keg);
                g->keg = n;
                if (k->changed)
                        k->changed(k, g, config, k->userdata);
        }
}

static void keg_read(KegClient *k) {
        int r;

        if (k->req)
                return;
        log_debug("Reading keg data from %s", k->url);
        r = api_client_get(k->api, "taps", on_taps, k, &k->req);
        if (r < 0) {
                k->req = NULL;
                if (!k->failing)
                        log_warning_errno(r, "Keg data from %s unavailable: %m", k->url);
                k->failing = true;
        }
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KegClient *k = userdata;

        (void) event_timer_set(s, usec + k->interval);
        keg_read(k);
        return 0;
}

void keg_client_refresh(KegClient *k) {
        if (!k)
                return;
        /* A second is all the precision an interval of at least 10 s needs. */
        if (event_timer_arm_relative(k->event, &k->timer, k->interval, USEC_PER_SEC, on_timer, k) < 0)
                log_error("Cannot schedule the next keg data read");
        keg_read(k);
}

int keg_client_new(KegClient **ret, sd_event *event, Model *model, const char *api_url, const char *api_key,
                   double timeout_sec, uint64_t interval_usec, KegChanged changed, void *userdata) {
        _cleanup_(keg_client_freep) KegClient *k = NULL;
        _cleanup_(http_client_unrefp) HttpClient *http = NULL;
        _cleanup_(freep) char *url = NULL;
        int r;

        assert_return(ret && event && model && api_url, -EINVAL);

        k = calloc(1, sizeof(KegClient));
        if (!k)
                return log_error_errno(-ENOMEM, "Out of memory");
        k->event = sd_event_ref(event);
        k->model = model;
        k->interval = interval_usec;
        k->changed = changed;
        k->userdata = userdata;

        r = http_client_new(&http, event);
        if (r < 0)
                return r;
        r = api_client_new(&k->api, http, api_url, api_key ?: "", timeout_sec);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the Kegbot Server client: %m");
        url = strdup_printf("%s/taps", api_client_get_base_url(k->api));
        k->url = url ? escape_for_log(url) : NULL;
        if (!k->url)
                return log_error_errno(-ENOMEM, "Out of memory");

        *ret = TAKE_PTR(k);
        return 0;
}

KegClient *keg_client_free(KegClient *k) {
        if (!k)
                return NULL;
        sd_event_source_disable_unref(k->timer);
        api_client_free(k->api);
        sd_event_unref(k->event);
        free(k->url);
        free(k);
        return NULL;
}
