/* UUIDs: see util-uuid.h. */
#include "util-hex.h"
#include "util-uuid.h"

int uuid_generate(char buf[static UUID_STRING_MAX]) {
        sd_id128_t id;
        int r;

        assert_return(buf, -EINVAL);

        r = sd_id128_randomize(&id);    /* version 4, RFC 4122 variant */
        if (r < 0)
                return r;
        uuid_to_string(id, buf);
        return 0;
}

int uuid_from_string(const char *s, sd_id128_t *ret) {
        sd_id128_t id;

        assert_return(s, -EINVAL);

        /* sd_id128_from_string() takes the plain form too; a UUID argument must have its dashes. */
        if (strlen(s) != UUID_STRING_MAX - 1)
                return -EINVAL;
        for (size_t i = 0; i < UUID_STRING_MAX - 1; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;
                if (dash ? s[i] != '-' : unhexchar(s[i]) < 0)
                        return -EINVAL;
        }
        if (sd_id128_from_string(s, &id) < 0)
                return -EINVAL;
        if (ret)
                *ret = id;
        return 0;
}

char *uuid_to_string(sd_id128_t id, char buf[static UUID_STRING_MAX]) {
        return sd_id128_to_uuid_string(id, buf);
}

int uuid_normalize(const char *s, char buf[static UUID_STRING_MAX]) {
        sd_id128_t id;
        int r;

        assert_return(buf, -EINVAL);

        r = uuid_from_string(s, &id);
        if (r < 0)
                return r;
        uuid_to_string(id, buf);
        return 0;
}

bool uuid_is_canonical(const char *s) {
        char c[UUID_STRING_MAX];

        return s && uuid_normalize(s, c) >= 0 && streq(c, s);
}

int uuid_from_plain_string(const char *s, sd_id128_t *ret) {
        sd_id128_t id;

        assert_return(s, -EINVAL);

        if (!hex_is_valid(s, ID128_STRING_MAX - 1))
                return -EINVAL;
        if (sd_id128_from_string(s, &id) < 0)
                return -EINVAL;
        if (ret)
                *ret = id;
        return 0;
}
