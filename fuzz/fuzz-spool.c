/* Fuzz target: the spool record parser (spool_drink_from_json) and the file name parser. A record
 * that parses must serialise, and that text must parse back and serialise to the same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Drink *d = NULL, *e = NULL;
        char *json = NULL, *json2 = NULL;

        if (spool_drink_from_json((const char *) data, size, &d) == 0) {
                /* A record the spool loaded must be writable again (spool_fail, re-queueing). */
                if (spool_drink_to_json(d, &json) != 0)
                        abort();
                if (spool_drink_from_json(json, strlen(json), &e) != 0)
                        abort();
                if (spool_drink_to_json(e, &json2) != 0 || strcmp(json, json2) != 0)
                        abort();
        }
        free(json);
        free(json2);
        drink_free(d);
        drink_free(e);

        /* The same bytes as a directory entry name. */
        char name[256];
        uint64_t seq;
        char uuid[UUID_STRING_MAX];
        size_t l = size < sizeof name - 1 ? size : sizeof name - 1;
        memcpy(name, data, l);
        name[l] = 0;
        (void) spool_name_parse(name, &seq, uuid);
        return 0;
}
