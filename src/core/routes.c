#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "routes.h"
#include "util-string.h"
#include "util-strv.h"

typedef struct Route {
        char *controller;
        RouteBackend backend;
} Route;

struct Routes {
        Route *routes;
        size_t n_routes;
        bool legacy;                    /* --api_url given */
        bool event;                     /* --event_url given */
};

Routes *routes_free(Routes *r) {
        if (!r)
                return NULL;
        for (size_t i = 0; i < r->n_routes; i++)
                free(r->routes[i].controller);
        free(r->routes);
        free(r);
        return NULL;
}

int routes_new(const char *spec, bool legacy, bool event, Routes **ret, char **ret_error) {
        _cleanup_(routes_freep) Routes *r = NULL;
        _cleanup_(strv_freep) char **items = NULL;
        int k;

        assert_return(ret, -EINVAL);

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->legacy = legacy;
        r->event = event;
        k = strv_split(spec ?: "", ",", &items);
        if (k < 0)
                return k;
        for (char **i = items; *i; i++) {
                _cleanup_(freep) char *item = strndup_trim(*i, strlen(*i)), *controller = NULL, *backend = NULL;
                const char *eq;
                RouteBackend b;
                Route *n;

                if (!item)
                        return -ENOMEM;
                if (isempty(item))
                        continue;
                eq = strchr(item, '=');
                if (!eq)
                        return strdup_error(ret_error, -EINVAL, "'%s' is not <controller>=<backend>", item);
                controller = strndup_trim(item, (size_t) (eq - item));
                backend = strndup_trim(eq + 1, strlen(eq + 1));
                if (!controller || !backend)
                        return -ENOMEM;
                if (isempty(controller) || strpbrk(controller, ". \t=") || !string_is_name(controller, 64))
                        return strdup_error(ret_error, -EINVAL, "'%s=%s': not a controller name", controller, backend);
                if (streq(backend, "event"))
                        b = ROUTE_EVENT;
                else if (streq(backend, "legacy"))
                        b = ROUTE_LEGACY;
                else
                        return strdup_error(ret_error, -EINVAL, "'%s=%s': unknown backend (event or legacy)",
                                            controller, backend);
                if (b == ROUTE_LEGACY && !legacy)
                        return strdup_error(ret_error, -EINVAL, "'%s=legacy' needs --api_url", controller);
                if (b == ROUTE_EVENT && !event)
                        return strdup_error(ret_error, -EINVAL, "'%s=event' needs --event_url", controller);
                for (size_t j = 0; j < r->n_routes; j++)
                        if (streq(r->routes[j].controller, controller))
                                return strdup_error(ret_error, -EINVAL, "controller %s listed twice", controller);
                n = reallocarray(r->routes, r->n_routes + 1, sizeof(Route));
                if (!n)
                        return -ENOMEM;
                r->routes = n;
                r->routes[r->n_routes].controller = strdup(controller);
                if (!r->routes[r->n_routes].controller)
                        return -ENOMEM;
                r->routes[r->n_routes++].backend = b;
        }
        *ret = TAKE_PTR(r);
        return 0;
}

RouteBackend routes_lookup(const Routes *r, const char *name, bool is_controller) {
        const char *dot;
        size_t len;

        if (!r || !name)
                return ROUTE_STANDALONE;
        dot = is_controller ? NULL : strchr(name, '.');
        len = dot ? (size_t) (dot - name) : strlen(name);
        if (dot || is_controller) {
                for (size_t i = 0; i < r->n_routes; i++)
                        if (strlen(r->routes[i].controller) == len && strncmp(r->routes[i].controller, name, len) == 0)
                                return r->routes[i].backend;
                if (r->event)
                        return ROUTE_EVENT;
        }
        return r->legacy ? ROUTE_LEGACY : ROUTE_STANDALONE;
}

bool routes_mixed(const Routes *r) {
        return r && r->legacy && r->event;
}
