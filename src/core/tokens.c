/* The tokens file: see tokens.h. */
#include "flow.h"
#include "ini.h"
#include "tokens.h"
#include "util-string.h"

typedef struct TokenEntry {
        char *device;
        char *value;            /* normalised */
        char *username;
        bool enabled;
} TokenEntry;

struct Tokens {
        TokenEntry *entries;
        size_t n;
};

Tokens *tokens_free(Tokens *db) {
        if (!db)
                return NULL;
        for (size_t i = 0; i < db->n; i++) {
                free(db->entries[i].device);
                free(db->entries[i].value);
                free(db->entries[i].username);
        }
        free(db->entries);
        free(db);
        return NULL;
}

size_t tokens_size(const Tokens *db) {
        return db ? db->n : 0;
}

int tokens_load(const char *path, Tokens **ret, char **ret_error) {
        _cleanup_(ini_freep) Ini *ini = NULL;
        _cleanup_(tokens_freep) Tokens *db = NULL;
        int r;

        assert_return(path, -EINVAL);
        assert_return(ret, -EINVAL);

        r = ini_new(&ini, path);
        if (r < 0)
                return r;
        /* A second [device:token] section would silently replace the first one's user. */
        ini_set_unique_sections(ini, true);
        r = ini_parse_file(ini, path, ret_error);
        if (r < 0)
                return r;

        db = calloc(1, sizeof(Tokens));
        if (!db)
                return -ENOMEM;
        if (ini->n_sections > 0) {
                db->entries = calloc(ini->n_sections, sizeof(TokenEntry));
                if (!db->entries)
                        return -ENOMEM;
        }

        for (size_t i = 0; i < ini->n_sections; i++) {
                const IniSection *sec = ini->sections[i];
                const char *colon = strchr(sec->name, ':');
                _cleanup_(freep) char *err = NULL;
                TokenEntry *e = &db->entries[db->n];
                bool enabled = true;

                if (!colon || colon == sec->name || colon[1] == '\0')
                        return strdup_error(ret_error, -EINVAL,
                                           "%s:%u: section [%s] is not <auth_device>:<token_value>",
                                           path, sec->line, sec->name);

                e->device = strndup(sec->name, (size_t) (colon - sec->name));
                if (!e->device)
                        return -ENOMEM;
                db->n++;
                e->value = flow_token_normalize(e->device, colon + 1);
                if (!e->value)
                        return -ENOMEM;

                r = ini_get(ini, sec->name, "username", &e->username, &err);
                if (r == -ENOENT || (r >= 0 && isempty(e->username)))
                        return strdup_error(ret_error, -EINVAL, "%s:%u: [%s] has no username",
                                           path, sec->line, sec->name);
                if (r < 0)
                        return strdup_error(ret_error, r, "%s", err ?: "bad username");

                if (ini_get_raw(ini, sec->name, "enabled")) {
                        r = ini_get_boolean(ini, sec->name, "enabled", &enabled, &err);
                        if (r < 0)
                                return strdup_error(ret_error, r, "%s", err ?: "bad 'enabled' value");
                }
                e->enabled = enabled;

                for (size_t j = 0; j + 1 < db->n; j++)
                        if (streq(db->entries[j].device, e->device) && streq(db->entries[j].value, e->value))
                                return strdup_error(ret_error, -EINVAL, "%s:%u: token [%s] listed twice",
                                                   path, sec->line, sec->name);
        }

        *ret = TAKE_PTR(db);
        return 0;
}

TokensAnswer tokens_lookup(const Tokens *db, const char *device, const char *value, const char **ret_username) {
        _cleanup_(freep) char *norm = NULL;

        if (!db)
                return TOKENS_NOT_ASSIGNED;
        norm = flow_token_normalize(device, value);
        if (!norm)
                return TOKENS_NOT_ASSIGNED;
        for (size_t i = 0; i < db->n; i++) {
                const TokenEntry *e = &db->entries[i];
                if (!streq(e->device, device) || !streq(e->value, norm))
                        continue;
                if (!e->enabled)
                        return TOKENS_DISABLED;
                if (ret_username)
                        *ret_username = e->username;
                return TOKENS_OK;
        }
        return TOKENS_NOT_ASSIGNED;
}
