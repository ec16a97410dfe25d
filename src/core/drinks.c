/* Drink records and the sink dispatch: see drinks.h. */
#include <inttypes.h>
#include <math.h>
#include <sys/random.h>
#include <systemd/sd-id128.h>

#define LOG_COMPONENT "DrinkManager"
#include "log.h"

#include "drinks.h"

int drink_uuid_generate(char buf[static DRINK_UUID_STRING_MAX]) {
        uint8_t b[16];
        size_t got = 0;

        while (got < sizeof(b)) {
                ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                got += (size_t) n;
        }
        b[6] = (b[6] & 0x0f) | 0x40;    /* version 4 */
        b[8] = (b[8] & 0x3f) | 0x80;    /* RFC 4122 variant */
        snprintf(buf, DRINK_UUID_STRING_MAX,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                 b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        return 0;
}

Drink *drink_free(Drink *d) {
        if (!d)
                return NULL;
        free(d->meter_name);
        free(d->username);
        free(d);
        return NULL;
}

int drink_new_from_flow(Drink **ret, const FlowDrink *fd) {
        _cleanup_(drink_freep) Drink *d = NULL;
        sd_id128_t boot;
        int r;

        d = calloc(1, sizeof(Drink));
        if (!d)
                return -ENOMEM;
        d->meter_name = strdup(fd->meter_name ?: "");
        if (!d->meter_name)
                return -ENOMEM;
        if (fd->username) {
                d->username = strdup(fd->username);
                if (!d->username)
                        return -ENOMEM;
        }
        d->flow_id = fd->flow_id;
        d->ticks = fd->ticks;
        d->volume_known = fd->volume_known;
        d->volume_ml = fd->volume_ml;
        d->start_realtime = fd->start_realtime;
        d->pour_realtime = fd->pour_realtime;
        d->duration_sec = fd->duration_sec;
        d->pour_boottime = fd->pour_boottime;

        r = drink_uuid_generate(d->uuid);
        if (r < 0)
                return r;
        if (sd_id128_get_boot(&boot) >= 0)
                sd_id128_to_string(boot, d->boot_id);

        *ret = TAKE_PTR(d);
        return 0;
}

int drink_dup(const Drink *d, Drink **ret) {
        _cleanup_(drink_freep) Drink *c = NULL;

        c = malloc(sizeof(Drink));
        if (!c)
                return -ENOMEM;
        *c = *d;
        c->meter_name = NULL;
        c->username = NULL;
        c->meter_name = strdup(d->meter_name ?: "");
        if (!c->meter_name)
                return -ENOMEM;
        if (d->username) {
                c->username = strdup(d->username);
                if (!c->username)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int drink_sink_record(DrinkSink *s, Drink *d) {
        return s->vtable->record(s, d);
}

size_t drink_sink_n_pending(DrinkSink *s) {
        return s->vtable->n_pending ? s->vtable->n_pending(s) : 0;
}

int drink_sink_reopen(DrinkSink *s) {
        return s->vtable->reopen ? s->vtable->reopen(s) : 0;
}

DrinkSink *drink_sink_free(DrinkSink *s) {
        if (s)
                s->vtable->free(s);
        return NULL;
}

void drink_sink_notify_created(DrinkSink *s, const Drink *d) {
        if (s->created)
                s->created(s, d, s->userdata);
}

void drink_format_double(double v, char buf[static 32]) {
        char t[32];
        int prec;

        if (!isfinite(v)) {
                /* JSON has no such numbers; callers only pass finite volumes. */
                memcpy(buf, "0.0", 4);
                return;
        }
        /* Shortest digits that read back exactly, laid out as Python's repr() does: positional
         * for exponents -4..15, scientific otherwise. */
        for (prec = 1; prec < 17; prec++) {
                snprintf(t, sizeof(t), "%.*e", prec - 1, v);
                if (strtod(t, NULL) == v)
                        break;
        }
        snprintf(t, sizeof(t), "%.*e", prec - 1, v);
        const char *e = strchr(t, 'e');
        int exp = e ? atoi(e + 1) : 0;
        if (exp >= -4 && exp < 16) {
                /* At most 16 significant digits with exponent < 16: at most 22 characters. */
                snprintf(t, sizeof(t) - 2, "%.*f", MAX(prec - 1 - exp, 0), v);
                if (!strchr(t, '.'))
                        strcat(t, ".0");
        }
        memcpy(buf, t, sizeof(t));
}
