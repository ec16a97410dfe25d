/* Drink records and the sink dispatch: see drinks.h. */
#include <inttypes.h>
#include <systemd/sd-id128.h>

#define LOG_COMPONENT "DrinkManager"
#include "log.h"

#include "drinks.h"
#include "util-uuid.h"

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

        r = uuid_generate(d->uuid);
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
