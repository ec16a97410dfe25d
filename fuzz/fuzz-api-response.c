/* Fuzz target for Kegbot Server API answers: the envelope parser and the outcome classifier of
 * api.c (kegbot-server-api.md sections 4.2 and 4.3) on any status and body. Input: the HTTP status
 * as 2 bytes little-endian, then the body; status 0 stands for a transport failure whose text is
 * the body. Checks the promises of api.h: a consistent outcome, and text for logs that is short,
 * valid UTF-8 and without control characters. Seeds: fuzz/capture-api-response-corpus.py. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "http-input.h"
#include "util-utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *s, size_t max) {
        if (!s)
                return;
        size_t l = strlen(s);
        if (l > max || !utf8_is_valid(s))
                abort();
        for (size_t i = 0; i < l; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        ApiResult r;
        FuzzHttpInput in;

        if (!fuzz_http_input(data, size, &in))
                return 0;

        if (in.status == 0) {
                char *text = strndup(in.body, in.len);
                if (!text)
                        return 0;
                api_classify(0, NULL, 0, text, &r);
                free(text);
                if (r.outcome != API_TRANSIENT || r.http_status != 0 || !r.reason || r.root)
                        abort();
                check_text(r.reason, 4 * 512 + 3);
                api_result_done(&r);
                return 0;
        }

        api_classify(in.status, in.body, in.len, NULL, &r);
        if (r.http_status != in.status)
                abort();
        switch (r.outcome) {
        case API_OK:
                if (in.status < 200 || in.status >= 300 || !(r.object || r.objects) || r.error_code || r.reason)
                        abort();
                break;
        case API_NOT_FOUND:
                if (in.status != 404)
                        abort();
                break;
        case API_REJECTED:
                if (in.status < 400 || in.status >= 500 || in.status == 401 || in.status == 404 || in.status == 408 ||
                    in.status == 429)
                        abort();
                break;
        case API_UNAUTHORIZED:
                if (in.status != 401)
                        abort();
                break;
        case API_TRANSIENT:
                break;
        default:
                abort();
        }
        if (r.outcome != API_OK && !r.reason)
                abort();
        if ((r.object || r.objects) && !json_is_object(r.root))
                abort();
        check_text(r.error_code, 4 * 512 + 3);
        check_text(r.error_message, 4 * 512 + 3);
        check_text(r.reason, 3 * (4 * 512 + 3) + 256);

        json_t *list = api_result_list(&r, "events");
        if (list && !json_is_array(list))
                abort();
        list = api_result_list(&r, NULL);
        if (list && r.outcome != API_OK)
                abort();
        if (!api_outcome_to_string(r.outcome))
                abort();
        api_result_done(&r);
        return 0;
}
