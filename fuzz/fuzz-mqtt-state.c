/* Fuzz target for kegbot_mqtt's state file reader (src/mqtt/state-file.c): any bytes are read into
 * a model or refused with a reason; a document that was accepted is written again, and what is
 * written must read back and write to the very same text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state-file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const Settings settings = {
        .node_id = "kegbot_1f9a33c0",
        .base = "kegbot/kegbot_1f9a33c0",
        .prefix = "homeassistant",
        .discovery = DISCOVERY_COMPONENT,
        .hostname = "fuzz",
        .version = "0.0.0",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Model *m = NULL, *m2 = NULL;
        char *reason = NULL, *text = NULL, *text2 = NULL;
        size_t len = 0, len2 = 0;
        int r;

        if (model_new(&m) < 0)
                return 0;
        r = state_file_parse(m, (const char *) data, size, &reason);
        if (r < 0) {
                if (r != -ENOMEM && !reason)
                        abort();        /* every refusal says why */
                goto out;
        }
        if (state_file_format(m, &settings, &text, &len) < 0)
                goto out;
        if (model_new(&m2) < 0)
                goto out;
        if (state_file_parse(m2, text, len, NULL) < 0)
                abort();
        if (state_file_format(m2, &settings, &text2, &len2) < 0 || len != len2 || memcmp(text, text2, len) != 0)
                abort();
out:
        free(reason);
        free(text);
        free(text2);
        model_free(m);
        model_free(m2);
        return 0;
}
