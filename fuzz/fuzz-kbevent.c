/* Fuzz target for what a Kegboard Event Protocol receiver (or a damaged spool) can hand the core
 * (kbevent.h): answers with their status (classification, 401 pairing bodies, commands and the
 * validation of authorize and deauthorize) and event files / state.json read back from disk.
 * Input: 2 bytes little-endian; 0 means "the rest is a spool file" (event file, then state.json),
 * anything else is an HTTP status followed by the body. Checks the promises of kbevent.h: valid
 * tokens only, command ids within bounds, sorted unique numbers, a re-formatted file that parses to
 * the same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http-input.h"
#include "kbevent.h"
#include "util-strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_numbers(const unsigned *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (v[i] > KBEVENT_NUMBER_MAX || (i > 0 && v[i] <= v[i - 1]))
                        abort();
}

static void fuzz_file(const char *text, size_t len) {
        KbEvent *e = NULL;
        KbDeviceState s = {};
        char boot[KBEVENT_BOOT_ID_STRING_MAX];

        for (int require = 0; require < 2; require++) {
                if (kbevent_file_parse(text, len, require, &e, boot) < 0)
                        continue;
                char *out = NULL, *out2 = NULL;
                size_t l, l2;
                KbEvent *back = NULL;
                if (!kbevent_type_is_durable(e->type) || (require && (e->id < 1 || e->id > KBEVENT_ID_MAX)))
                        abort();
                /* Written back and read again, it is the same text. */
                if (kbevent_file_format(e, require ? boot : NULL, &out, &l) < 0)
                        abort();
                if (kbevent_file_parse(out, l, require, &back, boot) < 0)
                        abort();
                if (kbevent_file_format(back, require ? boot : NULL, &out2, &l2) < 0 || !streq(out, out2))
                        abort();
                free(out);
                free(out2);
                kbevent_free(back);
                e = kbevent_free(e);
        }
        if (kbevent_state_parse(text, len, &s) >= 0) {
                char *out = NULL;
                size_t l;
                if (!kbevent_device_name_is_valid(s.device) || strlen(s.boot_id) != 16)
                        abort();
                for (size_t i = 1; i < s.n_meters; i++)
                        if (s.meters[i].meter_number < s.meters[i - 1].meter_number)
                                abort();
                if (kbevent_state_format(&s, &out, &l) < 0)
                        abort();
                free(out);
                kbevent_state_done(&s);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KbCommandList l;
        KbPairingState st;
        char *token = NULL;
        FuzzHttpInput in;

        if (!fuzz_http_input(data, size, &in))
                return 0;

        if (in.status == 0) {
                fuzz_file(in.body, in.len);
                return 0;
        }

        KbOutcome o = kbevent_classify(in.status, in.body, in.len);
        if (!kbevent_outcome_to_string(o))
                abort();
        if ((o == KBEVENT_PAIRING) != (in.status == 401) || (o == KBEVENT_TOO_LARGE) != (in.status == 413))
                abort();

        if (kbevent_parse_pairing(in.body, in.len, &st, &token) < 0)
                return 0;
        if ((st == KBEVENT_PAIRING_ALLOWED) != !!token || (token && !kbevent_token_is_valid(token)))
                abort();
        free(token);

        int r = kbevent_parse_commands(in.body, in.len, &l);
        if (r == -EBADMSG && o == KBEVENT_ACCEPTED && in.status >= 200 && in.status < 300)
                abort();        /* a body the classifier accepted must give commands */
        if (r < 0)
                return 0;
        for (size_t i = 0; i < l.n; i++) {
                KbCommand *c = &l.commands[i];
                KbAuthorize a;
                const char *msg;
                bool all;
                char **ids;

                if (!c->id || strlen(c->id) < 1 || strlen(c->id) > KBEVENT_COMMAND_ID_MAX)
                        abort();
                if (kbevent_parse_authorize(c->data, &a, &msg) >= 0) {
                        if (!a.grant_id || a.n_meters < 1 || msg)
                                abort();
                        check_numbers(a.meters, a.n_meters);
                        check_numbers(a.relays, a.n_relays);
                        kbevent_authorize_done(&a);
                } else if (!msg)
                        abort();
                if (kbevent_parse_deauthorize(c->data, &all, &ids, &msg) >= 0) {
                        if (all == !!ids)
                                abort();
                        strv_free(ids);
                } else if (!msg || !streq(msg, "bad grant_ids"))
                        abort();
        }
        kbevent_command_list_done(&l);
        return 0;
}
