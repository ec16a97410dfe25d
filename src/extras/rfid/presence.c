/* Presentations: see presence.h. */
#include "presence.h"

bool rfid_token_is_valid(const char *s) {
        size_t n = 0;

        if (!s)
                return false;
        for (; s[n]; n++) {
                if (n >= RFID_TOKEN_MAX)
                        return false;
                if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'z')))
                        return false;
        }
        return n > 0;
}

void presence_init(Presence *p, uint64_t hold_usec) {
        assert_return(p, );

        *p = (Presence) { .hold_usec = hold_usec };
}

static size_t emit_removed(Presence *p, PresenceEvent *out) {
        out->change = PRESENCE_REMOVED;
        memcpy(out->token, p->token, sizeof(out->token));
        p->present = false;
        p->token[0] = '\0';
        p->deadline = 0;
        return 1;
}

size_t presence_read(Presence *p, const char *token, uint64_t now, PresenceEvent out[static 2]) {
        size_t n = 0;

        assert_return(p && out, 0);
        if (!rfid_token_is_valid(token))
                return 0;

        if (p->present && streq(p->token, token)) {
                /* A repeated read is a refresh: the debounce. */
                p->deadline = now + p->hold_usec;
                return 0;
        }
        if (p->present)
                n += emit_removed(p, &out[n]);

        p->present = true;
        strcpy(p->token, token);        /* fits: checked by rfid_token_is_valid() */
        p->deadline = now + p->hold_usec;
        out[n].change = PRESENCE_ADDED;
        memcpy(out[n].token, p->token, sizeof(out[n].token));
        return n + 1;
}

size_t presence_expire(Presence *p, uint64_t now, PresenceEvent out[static 1]) {
        assert_return(p && out, 0);

        if (!p->present || p->hold_usec == 0 || now < p->deadline)
                return 0;
        return emit_removed(p, out);
}

size_t presence_close(Presence *p, PresenceEvent out[static 1]) {
        assert_return(p && out, 0);

        if (!p->present)
                return 0;
        return emit_removed(p, out);
}

bool presence_deadline(const Presence *p, uint64_t *ret) {
        assert_return(p && ret, false);

        if (!p->present || p->hold_usec == 0)
                return false;
        *ret = p->deadline;
        return true;
}
