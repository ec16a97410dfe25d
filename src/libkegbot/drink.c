/* The drink record: see drink.h. */
#include "drink.h"
#include "util-escape.h"
#include "util-utf8.h"

static int strdup_or_null(const char *s, char **ret) {
        if (!s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

/* Text from a server's answer: kept as it is when it is valid UTF-8, escaped otherwise. */
static int text_copy(const char *s, char **ret) {
        if (!s || utf8_is_valid(s))
                return strdup_or_null(s, ret);
        *ret = escape_for_log(s);
        return *ret ? 0 : -ENOMEM;
}

void drink_clear_failure(Drink *d) {
        if (!d)
                return;
        free(d->failure.code);
        free(d->failure.message);
        d->failure = (DrinkFailure) {};
        d->has_failure = false;
}

int drink_set_failure(Drink *d, const DrinkFailure *f) {
        DrinkFailure c;

        assert_return(d, -EINVAL);
        assert_return(f, -EINVAL);

        c = (DrinkFailure) { .time_realtime = f->time_realtime, .http_status = f->http_status };
        if (text_copy(f->code, &c.code) < 0 || text_copy(f->message, &c.message) < 0) {
                free(c.code);
                free(c.message);
                return -ENOMEM;
        }
        drink_clear_failure(d);
        d->failure = c;
        d->has_failure = true;
        return 0;
}

Drink *drink_free(Drink *d) {
        if (!d)
                return NULL;
        free(d->meter_name);
        free(d->username);
        free(d->tick_series);
        drink_clear_failure(d);
        free(d);
        return NULL;
}

int drink_dup(const Drink *d, Drink **ret) {
        _cleanup_(drink_freep) Drink *c = NULL;

        assert_return(d, -EINVAL);
        assert_return(ret, -EINVAL);

        c = malloc(sizeof(Drink));
        if (!c)
                return -ENOMEM;
        *c = *d;
        c->meter_name = c->username = c->tick_series = NULL;
        c->has_failure = false;
        c->failure = (DrinkFailure) {};
        if (strdup_or_null(d->meter_name, &c->meter_name) < 0 ||
            strdup_or_null(d->username, &c->username) < 0 ||
            strdup_or_null(d->tick_series, &c->tick_series) < 0)
                return -ENOMEM;
        if (d->has_failure && drink_set_failure(c, &d->failure) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

void drink_write_pour_json(const Drink *d, JsonWriter *w) {
        assert_return(d, );
        assert_return(w, );

        json_writer_field_uint(w, "flow_id", d->flow_id);
        json_writer_field_string(w, "meter_name", d->meter_name);
        json_writer_field_uint(w, "ticks", d->ticks);
        if (d->volume_known)
                json_writer_field_double(w, "volume_ml", d->volume_ml);
        else
                json_writer_field_null(w, "volume_ml");
        json_writer_field_string(w, "username", d->username);
        json_writer_field_timestamp(w, "start_time", d->start_realtime);
        json_writer_field_timestamp(w, "pour_time", d->pour_realtime);
}

const char *drink_flag_to_string(unsigned flag) {
        switch (flag) {
        case DRINK_FLAG_KICKED:
                return "kicked";
        case DRINK_FLAG_LONG_POUR:
                return "long_pour";
        default:
                return NULL;
        }
}

unsigned drink_flag_from_string(const char *name) {
        for (unsigned bit = 1; bit & DRINK_FLAGS_ALL; bit <<= 1)
                if (streq_ptr(name, drink_flag_to_string(bit)))
                        return bit;
        return 0;
}

void drink_write_flags_json(const Drink *d, JsonWriter *w) {
        assert_return(d, );
        assert_return(w, );

        if ((d->flags & DRINK_FLAGS_ALL) == 0)
                return;
        json_writer_key(w, "flags");
        json_writer_array_begin(w);
        for (unsigned bit = 1; bit & DRINK_FLAGS_ALL; bit <<= 1)
                if (d->flags & bit)
                        json_writer_string(w, drink_flag_to_string(bit));
        json_writer_array_end(w);
}

int drink_new_from_flow(const Drink *flow_drink, Drink **ret) {
        _cleanup_(drink_freep) Drink *d = NULL;
        int r;

        assert_return(flow_drink, -EINVAL);
        assert_return(!isempty(flow_drink->meter_name), -EINVAL);
        assert_return(ret, -EINVAL);

        r = drink_dup(flow_drink, &d);
        if (r < 0)
                return r;
        r = uuid_generate(d->uuid);
        if (r < 0)
                return r;
        if (sd_id128_get_boot(&d->boot_id) < 0)
                d->boot_id = SD_ID128_NULL;
        *ret = TAKE_PTR(d);
        return 0;
}
