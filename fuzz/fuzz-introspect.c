/* Fuzz target for the D-Bus introspection scanner of kegbot_mqtt (src/mqtt/introspect.c): any text
 * is scanned for the optional members of the core; a member found has a signature made of the
 * arguments' type attributes, nothing else happens. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "introspect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const members[][2] = {
                { "signal", "GhostFlow" }, { "signal", "PourFlagged" }, { "method", "ClearQuarantine" },
        };
        char *xml = malloc(size + 1);

        if (!xml)
                return 0;
        memcpy(xml, data, size);
        xml[size] = '\0';       /* the scanner reads a string: D-Bus strings hold no NUL */
        for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
                char *sig = NULL;
                int r = introspect_member_signature(xml, "org.kegbot.Core1.Manager", members[i][0], members[i][1],
                                                    &sig);
                if (r > 0 ? !sig || strlen(sig) > 255 : sig != NULL)
                        abort();
                if (r < 0 && r != -EBADMSG && r != -ENOMEM)
                        abort();
                free(sig);
        }
        free(xml);
        return 0;
}
