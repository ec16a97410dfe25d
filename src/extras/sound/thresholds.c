#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "thresholds.h"

const int sound_thresholds[7] = { 32, 24, 16, 12, 8, 1, 0 };

int sound_threshold_crossed(double last_oz, double current_oz) {
        for (size_t i = 0; i < ELEMENTSOF(sound_thresholds); i++) {
                double t = sound_thresholds[i];
                if (last_oz < t && t <= current_oz)
                        return sound_thresholds[i];
        }
        return -1;
}

int sound_url_basename(const char *url, char **ret) {
        const char *rest, *end, *slash;
        char *name;

        rest = startswith(url, "http://");
        if (!rest)
                rest = startswith(url, "https://");
        if (!rest || !*rest)
                return -EINVAL;

        end = rest + strcspn(rest, "?#");
        slash = memrchr(rest, '/', (size_t) (end - rest));
        if (!slash)
                return -EINVAL;         /* only a host: no path, no name */
        name = strndup(slash + 1, (size_t) (end - slash - 1));
        if (!name)
                return -ENOMEM;
        if (isempty(name) || streq(name, ".") || streq(name, "..")) {
                free(name);
                return -EINVAL;
        }
        *ret = name;
        return 0;
}
