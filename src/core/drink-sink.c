/* The drink sink dispatch: see drink-sink.h. */
#include "drink-sink.h"

void drink_sink_set_accepted_handler(DrinkSink *s, DrinkAcceptedHandler h, void *userdata) {
        assert_return(s, );
        s->accepted = h;
        s->userdata = userdata;
}

int drink_sink_record(DrinkSink *s, Drink *d) {
        assert_return(s, -EINVAL);
        assert_return(d, -EINVAL);
        return s->vtable->record(s, d);
}

size_t drink_sink_n_pending(DrinkSink *s) {
        assert_return(s, 0);
        return s->vtable->n_pending ? s->vtable->n_pending(s) : 0;
}

int drink_sink_contains(DrinkSink *s, const char *uuid) {
        assert_return(s, -EINVAL);
        assert_return(uuid, -EINVAL);
        return s->vtable->contains ? s->vtable->contains(s, uuid) : -EOPNOTSUPP;
}

int drink_sink_reopen(DrinkSink *s) {
        assert_return(s, -EINVAL);
        return s->vtable->reopen ? s->vtable->reopen(s) : 0;
}

DrinkSink *drink_sink_free(DrinkSink *s) {
        if (s)
                s->vtable->free(s);
        return NULL;
}

void drink_sink_notify_accepted(DrinkSink *s, const Drink *d) {
        assert_return(s, );
        assert_return(d, );
        if (s->accepted)
                s->accepted(s, d, s->userdata);
}
