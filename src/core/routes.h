/* Which backend reports a controller (kegboard-event-protocol.md section 1.2): the
 * --controller_backends entries first, then the event protocol when --event_url is set, then the
 * legacy API when --api_url is set, else standalone. A meter "C.<port>", a sensor "C.<name>" and a
 * relay "C.relay<N>" belong to controller C (the part before the first '.'); a name without a '.'
 * has no controller and resolves by the last two rules only. */
#pragma once

#include <stdbool.h>

#include "macro.h"

typedef enum RouteBackend {
        ROUTE_STANDALONE,
        ROUTE_LEGACY,
        ROUTE_EVENT,
} RouteBackend;

typedef struct Routes Routes;

/* Parses --controller_backends ("C=event,D=legacy"; whitespace around items ignored). The five flag
 * errors of section 1.1 (malformed item, unknown backend, "legacy" without --api_url, "event"
 * without --event_url, a controller listed twice) return -EINVAL with a message in *ret_error. */
int routes_new(const char *spec, bool legacy, bool event, Routes **ret, char **ret_error);
Routes *routes_free(Routes *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Routes *, routes_free);

/* The backend of the controller of 'name' (a meter, sensor or relay name, or a controller name when
 * 'is_controller'). NULL routes mean standalone. */
RouteBackend routes_lookup(const Routes *r, const char *name, bool is_controller);
/* Both server backends report controllers (some controllers may go to either). */
bool routes_mixed(const Routes *r);
