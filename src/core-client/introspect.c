/* The introspection scanner: see introspect.h. */
#include "introspect.h"
#include "util-strbuf.h"

#define SIGNATURE_MAX 255

typedef struct Tag {
        const char *name;               /* not NUL-terminated */
        size_t name_len;
        const char *attrs;              /* the text between the name and '>' */
        size_t attrs_len;
        bool closing;                   /* </x> */
        bool empty;                     /* <x/> */
} Tag;

static bool tag_is(const Tag *t, const char *name) {
        return t->name_len == strlen(name) && strncmp(t->name, name, t->name_len) == 0;
}

/* The value of attribute 'attr' (quoted with ' or "), or NULL; *ret_len its length. */
static const char *tag_attr(const Tag *t, const char *attr, size_t *ret_len) {
        const char *p = t->attrs, *end = t->attrs + t->attrs_len;
        size_t al = strlen(attr);

        while (p < end) {
                const char *n, *v;
                char q;

                while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
                        p++;
                n = p;
                while (p < end && *p != '=' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
                        p++;
                if (p >= end || *p != '=')
                        return NULL;
                if (p + 1 >= end || (p[1] != '"' && p[1] != '\''))
                        return NULL;
                q = p[1];
                v = p + 2;
                p = memchr(v, q, (size_t) (end - v));
                if (!p)
                        return NULL;
                if ((size_t) (v - 2 - n) == al && strncmp(n, attr, al) == 0) {
                        *ret_len = (size_t) (p - v);
                        return v;
                }
                p++;
        }
        return NULL;
}

static bool attr_is(const Tag *t, const char *attr, const char *value) {
        size_t n;
        const char *v = tag_attr(t, attr, &n);

        return v && n == strlen(value) && strncmp(v, value, n) == 0;
}

/* The next tag at or after *p; 0 at the end, -EBADMSG on malformed input. */
static int next_tag(const char **p, Tag *ret) {
        const char *s = *p, *e;

        for (;;) {
                s = strchr(s, '<');
                if (!s) {
                        *p = s;
                        return 0;
                }
                if (strncmp(s, "<!--", 4) == 0) {
                        e = strstr(s + 4, "-->");
                        if (!e)
                                return -EBADMSG;
                        s = e + 3;
                        continue;
                }
                if (s[1] == '?' || s[1] == '!') {
                        e = strchr(s, '>');
                        if (!e)
                                return -EBADMSG;
                        s = e + 1;
                        continue;
                }
                break;
        }
        e = strchr(s, '>');
        if (!e)
                return -EBADMSG;
        *ret = (Tag) {};
        s++;
        if (*s == '/') {
                ret->closing = true;
                s++;
        }
        ret->name = s;
        while (s < e && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '/')
                s++;
        ret->name_len = (size_t) (s - ret->name);
        if (ret->name_len == 0)
                return -EBADMSG;
        ret->attrs = s;
        ret->attrs_len = (size_t) (e - s);
        if (ret->attrs_len > 0 && e[-1] == '/') {
                ret->empty = true;
                ret->attrs_len--;
        }
        *p = e + 1;
        return 1;
}

int introspect_member_signature(const char *xml, const char *iface, const char *kind, const char *member,
                                char **ret_signature) {
        const char *p = xml;
        bool in_iface = false, in_member = false, found = false, is_method;
        StrBuf sig = STRBUF_INIT;
        Tag t;
        int r;

        assert_return(xml && iface && kind && member && ret_signature, -EINVAL);

        is_method = streq(kind, "method");
        sig.max = SIGNATURE_MAX;
        while ((r = next_tag(&p, &t)) > 0) {
                if (tag_is(&t, "interface")) {
                        if (t.closing)
                                in_iface = false;
                        else if (!t.empty)
                                in_iface = attr_is(&t, "name", iface);
                        continue;
                }
                if (!in_iface)
                        continue;
                if (tag_is(&t, kind)) {
                        if (t.closing) {
                                if (in_member)
                                        break;
                        } else if (attr_is(&t, "name", member)) {
                                found = true;
                                if (t.empty)
                                        break;
                                in_member = true;
                        }
                        continue;
                }
                if (in_member && tag_is(&t, "arg") && !t.closing) {
                        const char *type;
                        size_t n;

                        if (is_method && tag_attr(&t, "direction", &n) && !attr_is(&t, "direction", "in"))
                                continue;
                        type = tag_attr(&t, "type", &n);
                        if (!type || n == 0) {
                                strbuf_done(&sig);
                                return -EBADMSG;
                        }
                        strbuf_append(&sig, type, n);
                }
        }
        if (r < 0 || (in_member && r == 0)) {
                strbuf_done(&sig);
                return -EBADMSG;
        }
        if (!found) {
                strbuf_done(&sig);
                return 0;
        }
        r = strbuf_take(&sig, ret_signature, NULL);
        /* Longer than any D-Bus signature may be: not introspection data. */
        if (r == -E2BIG)
                return -EBADMSG;
        return r < 0 ? r : 1;
}
