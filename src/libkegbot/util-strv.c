/* String arrays: see util-strv.h. */
#include "util-strv.h"

char **strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
        return NULL;
}

size_t strv_length(char *const *l) {
        size_t n = 0;

        if (l)
                while (l[n])
                        n++;
        return n;
}

bool strv_contains(char *const *l, const char *s) {
        if (!l || !s)
                return false;
        for (; *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

int strv_push(char ***l, size_t *n, char *s) {
        size_t len;
        char **t;

        if (!l) {
                free(s);
                return -EINVAL;
        }
        if (!s)
                return -ENOMEM;
        len = n ? *n : strv_length(*l);
        t = realloc(*l, (len + 2) * sizeof(char *));
        if (!t) {
                free(s);
                return -ENOMEM;
        }
        t[len++] = s;
        t[len] = NULL;
        *l = t;
        if (n)
                *n = len;
        return 0;
}

int strv_extend(char ***l, size_t *n, const char *s) {
        assert_return(s, -EINVAL);
        return strv_push(l, n, strdup(s));
}

bool strv_remove(char **l, size_t *n, const char *s) {
        assert_return(n, false);
        for (size_t i = 0; l && i < *n; i++)
                if (streq(l[i], s)) {
                        free(l[i]);
                        memmove(l + i, l + i + 1, (*n - i) * sizeof(char *));  /* the NULL too */
                        (*n)--;
                        return true;
                }
        return false;
}

int strv_split(const char *s, const char *separators, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        size_t n = 0;
        int r;

        assert_return(s, -EINVAL);
        assert_return(separators, -EINVAL);
        assert_return(ret, -EINVAL);

        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        while (*s) {
                size_t len = strcspn(s, separators);
                if (len > 0) {
                        r = strv_push(&l, &n, strndup(s, len));
                        if (r < 0)
                                return r;
                }
                s += len;
                if (*s)
                        s++;
        }
        *ret = TAKE_PTR(l);
        return 0;
}
